//! Where a gateway sends requests: backend address pools (scale sets join them through
//! their network profile; fixed `backendAddresses` by IP), backend HTTP settings (port,
//! timeout, affinity, draining) and the health probes the settings name.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    bad_reference, check_range, find_child, invalid, AppGwProperties, AppGwProtocol,
    DEFAULT_REQUEST_TIMEOUT, SUCCEEDED,
};
use crate::arm::IdRef;
use crate::arm_enum;
use crate::error::ArmError;

arm_enum!(CookieAffinity { Enabled = "Enabled", Disabled = "Disabled" });

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppGwProbeProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<AppGwProtocol>,
    /// Host header of the probe; kept, not used (probes go to the member's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds between probes (Azure's minimum is 1 too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<i64>,
    /// Defaults to the backend settings' port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick_host_name_from_backend_http_settings: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_servers: Option<i64>,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendPoolProps {
    /// Read-only: the instances' IP configurations in this pool (filled in on GET).
    #[serde(
        rename = "backendIPConfigurations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_ip_configurations: Option<Vec<IdRef>>,
    /// Fixed backends by `ipAddress` (an `fqdn` is refused: nothing resolves names here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_addresses: Option<Vec<BackendAddress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettingsProps {
    /// The port instances listen on; the image's port means each instance's own port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<AppGwProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_based_affinity: Option<CookieAffinity>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_draining: Option<ConnectionDraining>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick_host_name_from_backend_address: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_cookie_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_certificates: Option<Vec<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_root_certificates: Option<Vec<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionDraining {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_in_sec: Option<i64>,
}

pub(super) fn normalize(p: &mut AppGwProperties) {
    for pr in &mut p.probes {
        let pp = &mut pr.properties;
        pp.interval.get_or_insert(30);
        pp.timeout.get_or_insert(30);
        pp.unhealthy_threshold.get_or_insert(3);
        pp.pick_host_name_from_backend_http_settings
            .get_or_insert(false);
        pp.min_servers.get_or_insert(0);
        pp.provisioning_state = Some(SUCCEEDED.into());
    }
    for pool in &mut p.backend_address_pools {
        pool.properties.provisioning_state = Some(SUCCEEDED.into());
    }
    for s in &mut p.backend_http_settings_collection {
        let sp = &mut s.properties;
        sp.protocol.get_or_insert(AppGwProtocol::Http);
        sp.cookie_based_affinity
            .get_or_insert(CookieAffinity::Disabled);
        sp.request_timeout.get_or_insert(DEFAULT_REQUEST_TIMEOUT);
        sp.pick_host_name_from_backend_address.get_or_insert(false);
        sp.connection_draining.get_or_insert(ConnectionDraining {
            enabled: false,
            drain_timeout_in_sec: Some(1),
        });
        sp.provisioning_state = Some(SUCCEEDED.into());
    }
}

/// Checks probes, backend pools and backend HTTP settings.
pub(super) fn validate(p: &AppGwProperties, gw_id: &str) -> Result<(), ArmError> {
    for (i, pr) in p.probes.iter().enumerate() {
        let t = format!("properties.probes[{i}].properties");
        let pp = &pr.properties;
        match pp.protocol {
            Some(AppGwProtocol::Http | AppGwProtocol::Https) => {}
            _ => {
                return Err(invalid(
                    format!("{t}.protocol"),
                    "A probe needs a protocol: Http or Https.",
                ))
            }
        }
        match &pp.path {
            Some(path) if path.starts_with('/') => {}
            _ => {
                return Err(invalid(
                    format!("{t}.path"),
                    "A probe needs a path starting with '/'.",
                ))
            }
        }
        check_range(pp.interval, &format!("{t}.interval"), 1..=86400, true)?;
        check_range(pp.timeout, &format!("{t}.timeout"), 1..=86400, true)?;
        check_range(
            pp.unhealthy_threshold,
            &format!("{t}.unhealthyThreshold"),
            1..=20,
            true,
        )?;
        check_range(pp.port, &format!("{t}.port"), 1..=65535, false)?;
    }
    for (i, pool) in p.backend_address_pools.iter().enumerate() {
        for (j, a) in pool
            .properties
            .backend_addresses
            .iter()
            .flatten()
            .enumerate()
        {
            let t = format!("properties.backendAddressPools[{i}].properties.backendAddresses[{j}]");
            if a.fqdn.as_deref().is_some_and(|f| !f.is_empty()) {
                return Err(invalid(
                    format!("{t}.fqdn"),
                    "Backends by name are not supported: give an ipAddress, or put a scale set in the pool.",
                ));
            }
            match a.ip_address.as_deref().map(str::parse::<std::net::IpAddr>) {
                Some(Ok(_)) => {}
                _ => {
                    return Err(invalid(
                        format!("{t}.ipAddress"),
                        "A backend address needs an ipAddress.",
                    ))
                }
            }
        }
    }
    for (i, s) in p.backend_http_settings_collection.iter().enumerate() {
        let t = format!("properties.backendHttpSettingsCollection[{i}].properties");
        let sp = &s.properties;
        check_range(sp.port, &format!("{t}.port"), 1..=65535, true)?;
        if sp.protocol != Some(AppGwProtocol::Http) {
            return Err(invalid(
                format!("{t}.protocol"),
                "Only Http to the backends is supported.",
            ));
        }
        check_range(
            sp.request_timeout,
            &format!("{t}.requestTimeout"),
            1..=86400,
            true,
        )?;
        if let Some(probe) = &sp.probe {
            if find_child(&p.probes, probe, gw_id, "probes").is_none() {
                return Err(bad_reference(format!("{t}.probe.id"), "Probe", &probe.id));
            }
        }
        if let Some(d) = &sp.connection_draining {
            check_range(
                d.drain_timeout_in_sec,
                &format!("{t}.connectionDraining.drainTimeoutInSec"),
                1..=3600,
                d.enabled,
            )?;
        }
        if sp.host_name.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(invalid(
                format!("{t}.hostName"),
                "Overriding the Host header is not supported: backends get the client's Host.",
            ));
        }
        if sp.pick_host_name_from_backend_address == Some(true) {
            return Err(invalid(
                format!("{t}.pickHostNameFromBackendAddress"),
                "Overriding the Host header is not supported: backends get the client's Host.",
            ));
        }
        if sp.path.as_deref().is_some_and(|x| !x.is_empty()) {
            return Err(invalid(
                format!("{t}.path"),
                "Rewriting the path to backends is not supported.",
            ));
        }
    }
    Ok(())
}
