//! Where a gateway listens: frontend IP configurations, frontend ports and HTTP
//! listeners (protocol, host names, certificate). Validation makes sure one address and
//! port serves one protocol and one certificate, and that no two listeners on it take the
//! same host name.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    bad_reference, check_range, find_child, invalid, must_find_child, AppGwProperties,
    AppGwProtocol, SUCCEEDED,
};
use crate::arm::IdRef;
use crate::error::ArmError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendIpProps {
    /// The address the gateway listens on (default 127.0.0.1).
    #[serde(
        rename = "privateIPAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_ip_address: Option<String>,
    #[serde(
        rename = "privateIPAllocationMethod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_ip_allocation_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Value>,
    #[serde(
        rename = "publicIPAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ip_address: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendPortProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpListenerProps {
    #[serde(
        rename = "frontendIPConfiguration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub frontend_ip_configuration: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_port: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<AppGwProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_certificate: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_server_name_indication: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// Host names of a listener: exact (`api.example.com`) or a leading wildcard
/// (`*.example.com`), as the data plane matches them.
pub fn check_host_name(host: &str) -> Result<(), String> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !rest.is_empty()
        && rest.len() <= 253
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{host}' is not a host name: letters, digits, '-', '_' and '.', with at most a leading '*.' wildcard."
        ))
    }
}

pub(super) fn normalize(p: &mut AppGwProperties) {
    for fe in &mut p.frontend_ip_configurations {
        let fp = &mut fe.properties;
        fp.private_ip_address
            .get_or_insert_with(|| "127.0.0.1".into());
        fp.private_ip_allocation_method
            .get_or_insert_with(|| "Static".into());
        fp.provisioning_state = Some(SUCCEEDED.into());
    }
    for port in &mut p.frontend_ports {
        port.properties.provisioning_state = Some(SUCCEEDED.into());
    }
    for l in &mut p.http_listeners {
        let lp = &mut l.properties;
        lp.protocol.get_or_insert(AppGwProtocol::Http);
        lp.require_server_name_indication.get_or_insert(false);
        lp.provisioning_state = Some(SUCCEEDED.into());
    }
}

/// Checks the frontend addresses and ports; gives each frontend IP configuration's
/// address by lower-case name, for [`validate_listeners`].
pub(super) fn validate_addresses(
    p: &AppGwProperties,
) -> Result<HashMap<String, std::net::IpAddr>, ArmError> {
    let mut frontend_ips = HashMap::new();
    for (i, fe) in p.frontend_ip_configurations.iter().enumerate() {
        let ip = fe.properties.private_ip_address.as_deref().unwrap_or("");
        match ip.parse::<std::net::IpAddr>() {
            Ok(addr) => {
                frontend_ips.insert(fe.name.to_ascii_lowercase(), addr);
            }
            Err(_) => {
                return Err(invalid(
                    format!("properties.frontendIPConfigurations[{i}].properties.privateIPAddress"),
                    format!("'{ip}' is not an IP address."),
                ))
            }
        }
    }
    let mut port_numbers = HashSet::new();
    for (i, fp) in p.frontend_ports.iter().enumerate() {
        let t = format!("properties.frontendPorts[{i}].properties.port");
        check_range(fp.properties.port, &t, 1..=65535, true)?;
        if !port_numbers.insert(fp.properties.port) {
            return Err(invalid(
                t,
                format!(
                    "Port {} is declared twice: name it once and use it from several listeners.",
                    fp.properties.port.unwrap_or(0)
                ),
            ));
        }
    }
    Ok(frontend_ips)
}

pub(super) fn validate_listeners(
    p: &AppGwProperties,
    gw_id: &str,
    frontend_ips: &HashMap<String, std::net::IpAddr>,
) -> Result<(), ArmError> {
    // Listeners: one frontend (address, port) serves one protocol and one certificate.
    struct Front {
        ip: std::net::IpAddr,
        port: i64,
        protocol: AppGwProtocol,
        /// Lower-case name of the certificate.
        cert: Option<String>,
        /// Host names taken so far (`None`: every host).
        hosts: Vec<Option<String>>,
    }
    let mut fronts: Vec<Front> = Vec::new();
    for (i, l) in p.http_listeners.iter().enumerate() {
        let t = format!("properties.httpListeners[{i}].properties");
        let lp = &l.properties;
        let fe = must_find_child(
            &p.frontend_ip_configurations,
            lp.frontend_ip_configuration.as_ref(),
            gw_id,
            "frontendIPConfigurations",
            format!("{t}.frontendIPConfiguration"),
            "Frontend IP configuration",
        )?;
        let port = must_find_child(
            &p.frontend_ports,
            lp.frontend_port.as_ref(),
            gw_id,
            "frontendPorts",
            format!("{t}.frontendPort"),
            "Frontend port",
        )?;
        let protocol = match lp.protocol {
            Some(proto @ (AppGwProtocol::Http | AppGwProtocol::Https)) => proto,
            _ => {
                return Err(invalid(
                    format!("{t}.protocol"),
                    "A listener's protocol is Http or Https.",
                ))
            }
        };
        let cert = match (protocol, &lp.ssl_certificate) {
            (AppGwProtocol::Https, None) => {
                return Err(invalid(
                    format!("{t}.sslCertificate"),
                    "An Https listener needs an sslCertificate.",
                ))
            }
            (AppGwProtocol::Https, Some(r)) => {
                let c = find_child(&p.ssl_certificates, r, gw_id, "sslCertificates").ok_or_else(
                    || bad_reference(format!("{t}.sslCertificate.id"), "SSL certificate", &r.id),
                )?;
                Some(c.name.to_ascii_lowercase())
            }
            (_, Some(_)) => {
                return Err(invalid(
                    format!("{t}.sslCertificate"),
                    "Only an Https listener takes an sslCertificate.",
                ))
            }
            (_, None) => None,
        };
        let hosts = match (&lp.host_name, &lp.host_names) {
            (Some(h), Some(hs)) if !h.is_empty() && !hs.is_empty() => {
                return Err(invalid(
                    format!("{t}.hostNames"),
                    "Give hostName or hostNames, not both.",
                ))
            }
            (_, Some(hs)) if !hs.is_empty() => {
                if hs.len() > 5 {
                    return Err(invalid(
                        format!("{t}.hostNames"),
                        "A listener takes at most 5 host names.",
                    ));
                }
                for (j, h) in hs.iter().enumerate() {
                    check_host_name(h).map_err(|m| invalid(format!("{t}.hostNames[{j}]"), m))?;
                }
                hs.iter().map(|h| Some(h.to_ascii_lowercase())).collect()
            }
            (Some(h), _) if !h.is_empty() => {
                check_host_name(h).map_err(|m| invalid(format!("{t}.hostName"), m))?;
                vec![Some(h.to_ascii_lowercase())]
            }
            _ => vec![None],
        };
        let ip = frontend_ips
            .get(&fe.name.to_ascii_lowercase())
            .copied()
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let port = port.properties.port.unwrap_or(0);
        let Some(front) = fronts.iter_mut().find(|f| f.ip == ip && f.port == port) else {
            fronts.push(Front {
                ip,
                port,
                protocol,
                cert,
                hosts,
            });
            continue;
        };
        if front.protocol != protocol {
            return Err(invalid(
                format!("{t}.protocol"),
                format!(
                    "Another listener on frontend port {port} uses {}: one port serves one protocol.",
                    front.protocol
                ),
            ));
        }
        if front.cert != cert {
            return Err(invalid(
                format!("{t}.sslCertificate"),
                format!(
                    "Another Https listener on frontend port {port} uses another certificate: Shoal serves one certificate per port."
                ),
            ));
        }
        for h in hosts {
            if front.hosts.contains(&h) {
                return Err(ArmError::conflict(format!(
                    "Another listener on frontend port {port} already takes {}.",
                    h.as_deref()
                        .map_or("every host name".to_string(), |h| format!("host '{h}'"))
                ))
                .with_target(format!("{t}.frontendPort")));
            }
            front.hosts.push(h);
        }
    }
    Ok(())
}
