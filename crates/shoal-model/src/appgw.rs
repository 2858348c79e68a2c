//! `Microsoft.Network/applicationGateways` (a small subset) in Azure's JSON shape, its
//! validation, and its routing resolved for the balancer.
//!
//! A PUT body is parsed into [`ApplicationGateway`] (a wrong type is a 400 naming the
//! field), given ids and Azure's defaults by [`normalize_appgw`] and checked by
//! [`validate_appgw`]: every reference must resolve inside the same gateway, every port
//! and enum must be in range, and features Shoal does not serve (redirects, rewrites,
//! Key Vault certificates, HTTPS to backends…) are refused rather than silently ignored.
//! [`resolved_frontends`] turns a valid gateway into what the data plane serves: one
//! frontend per address and port, with host/path routes to (pool, settings) targets in
//! the order they are tried.
//!
//! TLS certificates come from files named in a Shoal extension,
//! `sslCertificates[].properties.shoal {certificateFile, keyFile}` (PEM). Reading them is
//! I/O, so the API checks them ([`certificate_files`] lists what to read).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::arm_enum;
use crate::error::ArmError;
use crate::network::{IdRef, SubResource};

pub const APPGW_TYPE: &str = "Microsoft.Network/applicationGateways";

/// `requestTimeout` when none is given (Azure's default).
pub const DEFAULT_REQUEST_TIMEOUT: i64 = 20;

arm_enum!(AppGwProtocol { Http = "Http", Https = "Https", Tcp = "Tcp", Tls = "Tls" });
arm_enum!(CookieAffinity { Enabled = "Enabled", Disabled = "Disabled" });
arm_enum!(RuleType { Basic = "Basic", PathBasedRouting = "PathBasedRouting" });

/// SKU names and tiers Azure knows; Shoal serves them all the same way.
pub const SKU_NAMES: &[&str] = &[
    "Standard_Small",
    "Standard_Medium",
    "Standard_Large",
    "WAF_Medium",
    "WAF_Large",
    "Standard_v2",
    "WAF_v2",
    "Basic",
];
pub const SKU_TIERS: &[&str] = &["Standard", "WAF", "Standard_v2", "WAF_v2", "Basic"];

/// Top-level properties whose features Shoal does not serve: refused when non-empty.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("redirectConfigurations", "Redirects are not supported."),
    ("rewriteRuleSets", "Rewrite rules are not supported."),
    (
        "listeners",
        "TCP/TLS listeners are not supported: use httpListeners (or a load balancer for TCP).",
    ),
    (
        "routingRules",
        "TCP/TLS routing rules are not supported: use requestRoutingRules.",
    ),
    (
        "backendSettingsCollection",
        "TCP/TLS backend settings are not supported: use backendHttpSettingsCollection.",
    ),
    ("sslProfiles", "SSL profiles are not supported."),
    (
        "trustedClientCertificates",
        "Mutual TLS (trustedClientCertificates) is not supported.",
    ),
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationGateway {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default)]
    pub properties: AppGwProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppGwProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<AppGwSku>,
    /// Subnets in Azure; accepted and kept, nothing to do here.
    #[serde(rename = "gatewayIPConfigurations", default)]
    pub gateway_ip_configurations: Vec<SubResource<Extra>>,
    #[serde(default)]
    pub ssl_certificates: Vec<SubResource<SslCertificateProps>>,
    #[serde(rename = "frontendIPConfigurations", default)]
    pub frontend_ip_configurations: Vec<SubResource<FrontendIpProps>>,
    #[serde(default)]
    pub frontend_ports: Vec<SubResource<FrontendPortProps>>,
    #[serde(default)]
    pub probes: Vec<SubResource<AppGwProbeProps>>,
    #[serde(default)]
    pub backend_address_pools: Vec<SubResource<BackendPoolProps>>,
    #[serde(default)]
    pub backend_http_settings_collection: Vec<SubResource<HttpSettingsProps>>,
    #[serde(default)]
    pub http_listeners: Vec<SubResource<HttpListenerProps>>,
    #[serde(default)]
    pub url_path_maps: Vec<SubResource<UrlPathMapProps>>,
    #[serde(default)]
    pub request_routing_rules: Vec<SubResource<RoutingRuleProps>>,
    /// Read-only: always `Running` (the data plane serves what is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operational_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_guid: Option<String>,
    /// Everything else Azure has (WAF configuration, `enableHttp2`, autoscale…): kept so
    /// it round-trips, not acted on; the features in `UNSUPPORTED` are refused.
    #[serde(flatten)]
    pub other: Extra,
}

/// Properties kept as they came.
pub type Extra = BTreeMap<String, Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppGwSku {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SslCertificateProps {
    /// Azure's base-64 PFX: not supported (use `shoal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Read-only: the base-64 DER of the certificate's leaf, filled in by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_cert_data: Option<String>,
    /// Key Vault: not supported (use `shoal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_secret_id: Option<String>,
    /// Shoal's extension: where the PEM files are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shoal: Option<CertificateFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// `properties.shoal` of an SSL certificate: absolute paths of PEM files the balancer
/// reads (on every configuration change, so a renewed certificate is picked up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateFiles {
    #[serde(default)]
    pub certificate_file: String,
    #[serde(default)]
    pub key_file: String,
}

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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlPathMapProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend_address_pool: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend_http_settings: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_redirect_configuration: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rewrite_rule_set: Option<IdRef>,
    #[serde(default)]
    pub path_rules: Vec<SubResource<PathRuleProps>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathRuleProps {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_address_pool: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_http_settings: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_configuration: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_rule_set: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingRuleProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_type: Option<RuleType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listener: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_address_pool: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_http_settings: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_path_map: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_configuration: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_rule_set: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

fn set_ids<P>(list: &mut [SubResource<P>], parent: &str, kind: &str) {
    for s in list.iter_mut() {
        s.id = Some(format!("{parent}/{kind}/{}", s.name));
        s.kind = Some(format!("{APPGW_TYPE}/{kind}"));
    }
}

const SUCCEEDED: &str = "Succeeded";

/// Fills in sub-resource ids and types, Azure's defaults and provisioning states.
pub fn normalize_appgw(gw: &mut ApplicationGateway, id: &str) {
    let p = &mut gw.properties;
    set_ids(
        &mut p.gateway_ip_configurations,
        id,
        "gatewayIPConfigurations",
    );
    set_ids(&mut p.ssl_certificates, id, "sslCertificates");
    set_ids(
        &mut p.frontend_ip_configurations,
        id,
        "frontendIPConfigurations",
    );
    set_ids(&mut p.frontend_ports, id, "frontendPorts");
    set_ids(&mut p.probes, id, "probes");
    set_ids(&mut p.backend_address_pools, id, "backendAddressPools");
    set_ids(
        &mut p.backend_http_settings_collection,
        id,
        "backendHttpSettingsCollection",
    );
    set_ids(&mut p.http_listeners, id, "httpListeners");
    set_ids(&mut p.url_path_maps, id, "urlPathMaps");
    set_ids(&mut p.request_routing_rules, id, "requestRoutingRules");
    for map in &mut p.url_path_maps {
        let map_id = map.id.clone().unwrap_or_default();
        set_ids(&mut map.properties.path_rules, &map_id, "pathRules");
        for rule in &mut map.properties.path_rules {
            rule.kind = Some(format!("{APPGW_TYPE}/urlPathMaps/pathRules"));
            rule.properties.provisioning_state = Some(SUCCEEDED.into());
        }
        map.properties.provisioning_state = Some(SUCCEEDED.into());
    }
    for c in &mut p.gateway_ip_configurations {
        c.properties
            .insert("provisioningState".into(), Value::from(SUCCEEDED));
    }
    for c in &mut p.ssl_certificates {
        // Never echo a PFX password back.
        c.properties.password = None;
        c.properties.provisioning_state = Some(SUCCEEDED.into());
    }
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
    for l in &mut p.http_listeners {
        let lp = &mut l.properties;
        lp.protocol.get_or_insert(AppGwProtocol::Http);
        lp.require_server_name_indication.get_or_insert(false);
        lp.provisioning_state = Some(SUCCEEDED.into());
    }
    for r in &mut p.request_routing_rules {
        r.properties.rule_type.get_or_insert(RuleType::Basic);
        r.properties.provisioning_state = Some(SUCCEEDED.into());
    }
    p.operational_state = Some("Running".into());
    p.provisioning_state = Some(SUCCEEDED.into());
}

/// Finds the sub-resource a reference names: by full id within `parent` or by bare name.
fn resolve<'a, P>(
    list: &'a [SubResource<P>],
    r: &IdRef,
    parent: &str,
    kind: &str,
) -> Option<&'a SubResource<P>> {
    let want = r.id.trim_end_matches('/');
    let prefix = format!("{parent}/{kind}/");
    let name = match want.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(&prefix) => &want[prefix.len()..],
        _ if want.contains('/') => return None,
        _ => want,
    };
    list.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

fn invalid(target: impl Into<String>, message: impl Into<String>) -> ArmError {
    ArmError::invalid_parameter(target, message)
}

fn bad_reference(target: String, what: &str, id: &str) -> ArmError {
    ArmError::new(
        400,
        "InvalidResourceReference",
        format!("{what} '{id}' is not part of this application gateway."),
    )
    .with_target(target)
}

fn check_range(
    v: Option<i64>,
    target: &str,
    range: std::ops::RangeInclusive<i64>,
    required: bool,
) -> Result<(), ArmError> {
    match v {
        None if !required => Ok(()),
        Some(x) if range.contains(&x) => Ok(()),
        None => Err(invalid(
            target,
            format!("A value is required ({}-{}).", range.start(), range.end()),
        )),
        Some(x) => Err(invalid(
            target,
            format!(
                "{x} is out of range: use {}-{}.",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// A required reference that must resolve in `list`.
fn must_resolve<'a, P>(
    list: &'a [SubResource<P>],
    r: Option<&IdRef>,
    gw_id: &str,
    kind: &str,
    target: String,
    what: &str,
) -> Result<&'a SubResource<P>, ArmError> {
    let Some(r) = r else {
        return Err(invalid(target, format!("A {what} reference is required.")));
    };
    resolve(list, r, gw_id, kind).ok_or_else(|| bad_reference(format!("{target}.id"), what, &r.id))
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

/// A path of a path rule: starts with '/', and '*' only as the last character right
/// after a '/' (`/api/*`).
pub fn check_path_pattern(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("'{path}' must start with '/'."));
    }
    if path.contains(['?', '#']) || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "'{path}' must not hold a query, a fragment, spaces or control characters."
        ));
    }
    match path.find('*') {
        None => Ok(()),
        Some(i) if i == path.len() - 1 && path[..i].ends_with('/') => Ok(()),
        Some(_) => Err(format!(
            "'{path}': '*' is only allowed at the end, after a '/' (e.g. '/api/*')."
        )),
    }
}

/// The data plane's prefix for a valid path pattern: `None` for `/*` (everything),
/// `/api` for `/api/*` and for `/api` (whole segments: `/api`, `/api/…`, not `/apis`).
pub fn path_prefix(pattern: &str) -> Option<String> {
    let p = pattern.strip_suffix('*').unwrap_or(pattern);
    let p = p.trim_end_matches('/');
    (!p.is_empty()).then(|| p.to_string())
}

fn unique<P>(list: &[SubResource<P>], target: &str) -> Result<(), ArmError> {
    let mut seen = HashSet::new();
    for (i, s) in list.iter().enumerate() {
        if s.name.is_empty() {
            return Err(invalid(
                format!("{target}[{i}].name"),
                "Every item needs a name.",
            ));
        }
        if s.name.contains('/') {
            return Err(invalid(
                format!("{target}[{i}].name"),
                format!("The name '{}' must not contain '/'.", s.name),
            ));
        }
        if !seen.insert(s.name.to_ascii_lowercase()) {
            return Err(invalid(
                format!("{target}[{i}].name"),
                format!("The name '{}' is used twice.", s.name),
            ));
        }
    }
    Ok(())
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// Checks a normalized gateway whose own id is `gw_id`. Certificate files are not read
/// here (see [`certificate_files`]).
pub fn validate_appgw(gw: &ApplicationGateway, gw_id: &str) -> Result<(), ArmError> {
    if gw.location.as_deref().is_none_or(|l| l.trim().is_empty()) {
        return Err(invalid(
            "location",
            "A location is required (e.g. \"local\").",
        ));
    }
    let p = &gw.properties;
    for (key, why) in UNSUPPORTED {
        if p.other.get(*key).is_some_and(present) {
            return Err(invalid(format!("properties.{key}"), *why));
        }
    }
    if let Some(sku) = &p.sku {
        if let Some(n) = &sku.name {
            if !SKU_NAMES.iter().any(|s| s.eq_ignore_ascii_case(n)) {
                return Err(invalid(
                    "properties.sku.name",
                    format!("'{n}' is not one of: {}.", SKU_NAMES.join(", ")),
                ));
            }
        }
        if let Some(t) = &sku.tier {
            if !SKU_TIERS.iter().any(|s| s.eq_ignore_ascii_case(t)) {
                return Err(invalid(
                    "properties.sku.tier",
                    format!("'{t}' is not one of: {}.", SKU_TIERS.join(", ")),
                ));
            }
        }
        check_range(sku.capacity, "properties.sku.capacity", 0..=125, false)?;
    }
    unique(
        &p.gateway_ip_configurations,
        "properties.gatewayIPConfigurations",
    )?;
    unique(&p.ssl_certificates, "properties.sslCertificates")?;
    unique(
        &p.frontend_ip_configurations,
        "properties.frontendIPConfigurations",
    )?;
    unique(&p.frontend_ports, "properties.frontendPorts")?;
    unique(&p.probes, "properties.probes")?;
    unique(&p.backend_address_pools, "properties.backendAddressPools")?;
    unique(
        &p.backend_http_settings_collection,
        "properties.backendHttpSettingsCollection",
    )?;
    unique(&p.http_listeners, "properties.httpListeners")?;
    unique(&p.url_path_maps, "properties.urlPathMaps")?;
    unique(&p.request_routing_rules, "properties.requestRoutingRules")?;

    for (i, c) in p.ssl_certificates.iter().enumerate() {
        let t = format!("properties.sslCertificates[{i}].properties");
        let cp = &c.properties;
        if cp.key_vault_secret_id.is_some() {
            return Err(invalid(
                format!("{t}.keyVaultSecretId"),
                "Key Vault certificates are not supported: give PEM files in properties.shoal {certificateFile, keyFile}.",
            ));
        }
        if cp.data.is_some() {
            return Err(invalid(
                format!("{t}.data"),
                "PFX certificate data is not supported: give PEM files in properties.shoal {certificateFile, keyFile}.",
            ));
        }
        let Some(files) = &cp.shoal else {
            return Err(invalid(
                format!("{t}.shoal"),
                "A certificate needs properties.shoal {certificateFile, keyFile}: absolute paths of PEM files.",
            ));
        };
        for (field, path) in [
            ("certificateFile", &files.certificate_file),
            ("keyFile", &files.key_file),
        ] {
            if !path.starts_with('/') {
                return Err(invalid(
                    format!("{t}.shoal.{field}"),
                    format!("'{path}' is not an absolute path: the balancer may run in another directory or on another host."),
                ));
            }
        }
    }

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
            if resolve(&p.probes, probe, gw_id, "probes").is_none() {
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
        let fe = must_resolve(
            &p.frontend_ip_configurations,
            lp.frontend_ip_configuration.as_ref(),
            gw_id,
            "frontendIPConfigurations",
            format!("{t}.frontendIPConfiguration"),
            "Frontend IP configuration",
        )?;
        let port = must_resolve(
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
                let c =
                    resolve(&p.ssl_certificates, r, gw_id, "sslCertificates").ok_or_else(|| {
                        bad_reference(format!("{t}.sslCertificate.id"), "SSL certificate", &r.id)
                    })?;
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

    let check_target = |pool: Option<&IdRef>,
                        settings: Option<&IdRef>,
                        t: &str,
                        pool_field: &str,
                        settings_field: &str|
     -> Result<(), ArmError> {
        must_resolve(
            &p.backend_address_pools,
            pool,
            gw_id,
            "backendAddressPools",
            format!("{t}.{pool_field}"),
            "Backend address pool",
        )?;
        must_resolve(
            &p.backend_http_settings_collection,
            settings,
            gw_id,
            "backendHttpSettingsCollection",
            format!("{t}.{settings_field}"),
            "Backend HTTP settings",
        )?;
        Ok(())
    };
    for (i, m) in p.url_path_maps.iter().enumerate() {
        let t = format!("properties.urlPathMaps[{i}].properties");
        let mp = &m.properties;
        for (field, v) in [
            (
                "defaultRedirectConfiguration",
                &mp.default_redirect_configuration,
            ),
            ("defaultRewriteRuleSet", &mp.default_rewrite_rule_set),
        ] {
            if v.is_some() {
                return Err(invalid(
                    format!("{t}.{field}"),
                    "Redirects and rewrites are not supported.",
                ));
            }
        }
        check_target(
            mp.default_backend_address_pool.as_ref(),
            mp.default_backend_http_settings.as_ref(),
            &t,
            "defaultBackendAddressPool",
            "defaultBackendHttpSettings",
        )?;
        unique(&mp.path_rules, &format!("{t}.pathRules"))?;
        for (j, r) in mp.path_rules.iter().enumerate() {
            let t = format!("{t}.pathRules[{j}].properties");
            let rp = &r.properties;
            for (field, v) in [
                ("redirectConfiguration", &rp.redirect_configuration),
                ("rewriteRuleSet", &rp.rewrite_rule_set),
            ] {
                if v.is_some() {
                    return Err(invalid(
                        format!("{t}.{field}"),
                        "Redirects and rewrites are not supported.",
                    ));
                }
            }
            if rp.paths.is_empty() {
                return Err(invalid(
                    format!("{t}.paths"),
                    "A path rule needs at least one path (e.g. \"/api/*\").",
                ));
            }
            for (k, path) in rp.paths.iter().enumerate() {
                check_path_pattern(path).map_err(|m| invalid(format!("{t}.paths[{k}]"), m))?;
            }
            check_target(
                rp.backend_address_pool.as_ref(),
                rp.backend_http_settings.as_ref(),
                &t,
                "backendAddressPool",
                "backendHttpSettings",
            )?;
        }
    }

    let mut listeners_used = HashSet::new();
    let mut priorities = HashSet::new();
    let any_priority = p
        .request_routing_rules
        .iter()
        .any(|r| r.properties.priority.is_some());
    for (i, r) in p.request_routing_rules.iter().enumerate() {
        let t = format!("properties.requestRoutingRules[{i}].properties");
        let rp = &r.properties;
        for (field, v) in [
            ("redirectConfiguration", &rp.redirect_configuration),
            ("rewriteRuleSet", &rp.rewrite_rule_set),
        ] {
            if v.is_some() {
                return Err(invalid(
                    format!("{t}.{field}"),
                    "Redirects and rewrites are not supported.",
                ));
            }
        }
        if any_priority && rp.priority.is_none() {
            return Err(invalid(
                format!("{t}.priority"),
                "Give every rule a priority (1-20000) once one rule has one.",
            ));
        }
        check_range(rp.priority, &format!("{t}.priority"), 1..=20000, false)?;
        if let Some(prio) = rp.priority {
            if !priorities.insert(prio) {
                return Err(invalid(
                    format!("{t}.priority"),
                    format!("Priority {prio} is used by two rules: priorities are unique."),
                ));
            }
        }
        let listener = must_resolve(
            &p.http_listeners,
            rp.http_listener.as_ref(),
            gw_id,
            "httpListeners",
            format!("{t}.httpListener"),
            "HTTP listener",
        )?;
        if !listeners_used.insert(listener.name.to_ascii_lowercase()) {
            return Err(invalid(
                format!("{t}.httpListener.id"),
                format!(
                    "Listener '{}' is used by two rules: a listener belongs to one rule.",
                    listener.name
                ),
            ));
        }
        match rp.rule_type.unwrap_or(RuleType::Basic) {
            RuleType::Basic => {
                if rp.url_path_map.is_some() {
                    return Err(invalid(
                        format!("{t}.urlPathMap"),
                        "A Basic rule takes no urlPathMap: use ruleType PathBasedRouting.",
                    ));
                }
                check_target(
                    rp.backend_address_pool.as_ref(),
                    rp.backend_http_settings.as_ref(),
                    &t,
                    "backendAddressPool",
                    "backendHttpSettings",
                )?;
            }
            RuleType::PathBasedRouting => {
                must_resolve(
                    &p.url_path_maps,
                    rp.url_path_map.as_ref(),
                    gw_id,
                    "urlPathMaps",
                    format!("{t}.urlPathMap"),
                    "URL path map",
                )?;
            }
        }
    }
    Ok(())
}

/// `(target, path)` of every certificate and key file a valid gateway names, for the API
/// to check that they can be read.
pub fn certificate_files(gw: &ApplicationGateway) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, c) in gw.properties.ssl_certificates.iter().enumerate() {
        if let Some(files) = &c.properties.shoal {
            let t = format!("properties.sslCertificates[{i}].properties.shoal");
            out.push((
                format!("{t}.certificateFile"),
                files.certificate_file.clone(),
            ));
            out.push((format!("{t}.keyFile"), files.key_file.clone()));
        }
    }
    out
}

/// A probe of a valid gateway, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProbe {
    pub https: bool,
    pub path: String,
    pub interval_secs: u32,
    pub timeout_secs: u32,
    pub unhealthy_threshold: u32,
    /// `None`: the settings' port.
    pub port: Option<u16>,
}

/// Backend HTTP settings of a valid gateway, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSettings {
    /// Full id of the settings.
    pub id: String,
    pub port: u16,
    pub cookie_affinity: bool,
    pub request_timeout_secs: u32,
    pub probe: Option<ResolvedProbe>,
    /// `connectionDraining.drainTimeoutInSec` when draining is enabled.
    pub drain_timeout_secs: Option<u32>,
}

/// Where a route sends requests: a backend pool, with the settings to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTarget {
    /// Full id of the backend address pool.
    pub pool_id: String,
    /// Fixed `backendAddresses` of the pool.
    pub addresses: Vec<std::net::IpAddr>,
    pub settings: ResolvedSettings,
}

/// One host/path route of a frontend. `None` matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRoute {
    /// Lower case; exact or `*.domain`.
    pub host: Option<String>,
    /// A whole-segment prefix (see [`path_prefix`]).
    pub path: Option<String>,
    pub target: BackendTarget,
}

/// One address and port the gateway listens on, and the routes its listeners bring, in
/// the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayFrontend {
    pub ip: std::net::IpAddr,
    pub port: u16,
    /// The certificate files of an Https frontend.
    pub tls: Option<CertificateFiles>,
    pub routes: Vec<GatewayRoute>,
}

fn resolved_settings(
    p: &AppGwProperties,
    s: &SubResource<HttpSettingsProps>,
    gw_id: &str,
) -> Option<ResolvedSettings> {
    let sp = &s.properties;
    let probe = sp
        .probe
        .as_ref()
        .and_then(|r| resolve(&p.probes, r, gw_id, "probes"))
        .map(|pr| {
            let pp = &pr.properties;
            let secs = |v: Option<i64>, d: u32| v.and_then(|x| u32::try_from(x).ok()).unwrap_or(d);
            ResolvedProbe {
                https: pp.protocol == Some(AppGwProtocol::Https),
                path: pp.path.clone().unwrap_or_else(|| "/".into()),
                interval_secs: secs(pp.interval, 30).max(1),
                timeout_secs: secs(pp.timeout, 30).max(1),
                unhealthy_threshold: secs(pp.unhealthy_threshold, 3).max(1),
                port: pp.port.and_then(|x| u16::try_from(x).ok()),
            }
        });
    Some(ResolvedSettings {
        id: s.id.clone()?,
        port: u16::try_from(sp.port?).ok()?,
        cookie_affinity: sp.cookie_based_affinity == Some(CookieAffinity::Enabled),
        request_timeout_secs: u32::try_from(sp.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT))
            .unwrap_or(20)
            .max(1),
        probe,
        drain_timeout_secs: sp
            .connection_draining
            .as_ref()
            .filter(|d| d.enabled)
            .and_then(|d| d.drain_timeout_in_sec)
            .and_then(|x| u32::try_from(x).ok()),
    })
}

fn target_of(
    p: &AppGwProperties,
    pool: Option<&IdRef>,
    settings: Option<&IdRef>,
    gw_id: &str,
) -> Option<BackendTarget> {
    let pool = resolve(
        &p.backend_address_pools,
        pool?,
        gw_id,
        "backendAddressPools",
    )?;
    let settings = resolve(
        &p.backend_http_settings_collection,
        settings?,
        gw_id,
        "backendHttpSettingsCollection",
    )?;
    Some(BackendTarget {
        pool_id: pool.id.clone()?,
        addresses: pool
            .properties
            .backend_addresses
            .iter()
            .flatten()
            .filter_map(|a| a.ip_address.as_deref()?.parse().ok())
            .collect(),
        settings: resolved_settings(p, settings, gw_id)?,
    })
}

/// The frontends of a valid, normalized gateway with their routes in the order they are
/// tried: rules by `priority` (without priorities, rules whose listener names hosts come
/// before catch-all ones, then in the order given); within a path-based rule, the
/// longest path first, then the map's default.
pub fn resolved_frontends(gw: &ApplicationGateway, gw_id: &str) -> Vec<GatewayFrontend> {
    let p = &gw.properties;
    let mut out: Vec<GatewayFrontend> = Vec::new();
    // Every listener's frontend exists even when no rule uses it yet.
    let mut listener_front: HashMap<String, usize> = HashMap::new();
    for l in &p.http_listeners {
        let lp = &l.properties;
        let Some(fe) = lp.frontend_ip_configuration.as_ref().and_then(|r| {
            resolve(
                &p.frontend_ip_configurations,
                r,
                gw_id,
                "frontendIPConfigurations",
            )
        }) else {
            continue;
        };
        let Some(port) = lp
            .frontend_port
            .as_ref()
            .and_then(|r| resolve(&p.frontend_ports, r, gw_id, "frontendPorts"))
            .and_then(|fp| u16::try_from(fp.properties.port?).ok())
        else {
            continue;
        };
        let Some(ip) = fe
            .properties
            .private_ip_address
            .as_deref()
            .and_then(|ip| ip.parse().ok())
        else {
            continue;
        };
        let tls = match lp.protocol {
            Some(AppGwProtocol::Https) => lp
                .ssl_certificate
                .as_ref()
                .and_then(|r| resolve(&p.ssl_certificates, r, gw_id, "sslCertificates"))
                .and_then(|c| c.properties.shoal.clone()),
            _ => None,
        };
        let idx = match out.iter().position(|f| f.ip == ip && f.port == port) {
            Some(idx) => idx,
            None => {
                out.push(GatewayFrontend {
                    ip,
                    port,
                    tls,
                    routes: Vec::new(),
                });
                out.len() - 1
            }
        };
        listener_front.insert(l.name.to_ascii_lowercase(), idx);
    }

    let mut rules: Vec<(usize, &SubResource<RoutingRuleProps>)> =
        p.request_routing_rules.iter().enumerate().collect();
    let listener_of = |r: &SubResource<RoutingRuleProps>| {
        r.properties
            .http_listener
            .as_ref()
            .and_then(|l| resolve(&p.http_listeners, l, gw_id, "httpListeners"))
    };
    let hosts_of = |l: &SubResource<HttpListenerProps>| -> Vec<Option<String>> {
        let lp = &l.properties;
        match (&lp.host_names, &lp.host_name) {
            (Some(hs), _) if !hs.is_empty() => {
                hs.iter().map(|h| Some(h.to_ascii_lowercase())).collect()
            }
            (_, Some(h)) if !h.is_empty() => vec![Some(h.to_ascii_lowercase())],
            _ => vec![None],
        }
    };
    rules.sort_by_key(|(i, r)| {
        let catch_all = listener_of(r).is_none_or(|l| hosts_of(l) == vec![None]);
        (r.properties.priority.unwrap_or(i64::MAX), catch_all, *i)
    });
    for (_, r) in rules {
        let Some(listener) = listener_of(r) else {
            continue;
        };
        let Some(&front) = listener_front.get(&listener.name.to_ascii_lowercase()) else {
            continue;
        };
        let rp = &r.properties;
        let mut targets: Vec<(Option<String>, BackendTarget)> = Vec::new();
        match rp.rule_type.unwrap_or(RuleType::Basic) {
            RuleType::Basic => {
                if let Some(t) = target_of(
                    p,
                    rp.backend_address_pool.as_ref(),
                    rp.backend_http_settings.as_ref(),
                    gw_id,
                ) {
                    targets.push((None, t));
                }
            }
            RuleType::PathBasedRouting => {
                let Some(map) = rp
                    .url_path_map
                    .as_ref()
                    .and_then(|m| resolve(&p.url_path_maps, m, gw_id, "urlPathMaps"))
                else {
                    continue;
                };
                let mut paths: Vec<(String, BackendTarget)> = Vec::new();
                let mut any: Option<BackendTarget> = None;
                for pr in &map.properties.path_rules {
                    let Some(t) = target_of(
                        p,
                        pr.properties.backend_address_pool.as_ref(),
                        pr.properties.backend_http_settings.as_ref(),
                        gw_id,
                    ) else {
                        continue;
                    };
                    for path in &pr.properties.paths {
                        match path_prefix(path) {
                            Some(prefix) => {
                                if !paths.iter().any(|(p, _)| *p == prefix) {
                                    paths.push((prefix, t.clone()));
                                }
                            }
                            None => {
                                any.get_or_insert_with(|| t.clone());
                            }
                        }
                    }
                }
                // Longest first; the sort is stable, so equal lengths keep their order.
                paths.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
                targets.extend(paths.into_iter().map(|(p, t)| (Some(p), t)));
                let default = any.or_else(|| {
                    target_of(
                        p,
                        map.properties.default_backend_address_pool.as_ref(),
                        map.properties.default_backend_http_settings.as_ref(),
                        gw_id,
                    )
                });
                if let Some(t) = default {
                    targets.push((None, t));
                }
            }
        }
        for host in hosts_of(listener) {
            for (path, target) in &targets {
                out[front].routes.push(GatewayRoute {
                    host: host.clone(),
                    path: path.clone(),
                    target: target.clone(),
                });
            }
        }
    }
    out
}

/// Application gateway backend pool ids a scale set's network profile puts its
/// instances in (`…ipConfigurations[].properties.applicationGatewayBackendAddressPools`).
pub fn vmss_appgw_pool_ids(profile_nics: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for nic in profile_nics {
        let Some(ipcs) = nic
            .pointer("/properties/ipConfigurations")
            .and_then(Value::as_array)
        else {
            continue;
        };
        for ipc in ipcs {
            let Some(pools) = ipc
                .pointer("/properties/applicationGatewayBackendAddressPools")
                .and_then(Value::as_array)
            else {
                continue;
            };
            for pool in pools {
                if let Some(id) = pool.get("id").and_then(Value::as_str) {
                    out.push(id.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmss::parse_typed;
    use serde_json::json;

    const ID: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/applicationGateways/gw";

    fn r(kind: &str, name: &str) -> Value {
        json!({"id": format!("{ID}/{kind}/{name}")})
    }

    /// Two pools, a path map (`/api/*` → api) behind a multi-site listener, and a basic
    /// catch-all listener on the same port, plus an Https listener.
    fn gw() -> Value {
        json!({
            "location": "local",
            "properties": {
                "sku": {"name": "Standard_v2", "tier": "Standard_v2", "capacity": 1},
                "gatewayIPConfigurations": [{"name": "ipc", "properties": {"subnet": {"id": "/x"}}}],
                "sslCertificates": [{"name": "cert", "properties": {"shoal": {"certificateFile": "/tmp/c.pem", "keyFile": "/tmp/k.pem"}}}],
                "frontendIPConfigurations": [{"name": "fe"}],
                "frontendPorts": [{"name": "p80", "properties": {"port": 8000}}, {"name": "p443", "properties": {"port": 8443}}],
                "probes": [{"name": "health", "properties": {"protocol": "Http", "path": "/health", "interval": 1, "timeout": 1, "unhealthyThreshold": 2}}],
                "backendAddressPools": [{"name": "web"}, {"name": "api", "properties": {"backendAddresses": [{"ipAddress": "10.0.0.9"}]}}],
                "backendHttpSettingsCollection": [
                    {"name": "s8080", "properties": {"port": 8080, "protocol": "Http", "cookieBasedAffinity": "Enabled", "requestTimeout": 5, "probe": r("probes", "health")}},
                    {"name": "s9090", "properties": {"port": 9090, "protocol": "Http", "requestTimeout": 30, "connectionDraining": {"enabled": true, "drainTimeoutInSec": 10}}}
                ],
                "httpListeners": [
                    {"name": "site", "properties": {"frontendIPConfiguration": r("frontendIPConfigurations", "fe"), "frontendPort": r("frontendPorts", "p80"), "protocol": "Http", "hostNames": ["api.example.com", "*.api.example.com"]}},
                    {"name": "any", "properties": {"frontendIPConfiguration": r("frontendIPConfigurations", "fe"), "frontendPort": r("frontendPorts", "p80"), "protocol": "Http"}},
                    {"name": "tls", "properties": {"frontendIPConfiguration": r("frontendIPConfigurations", "fe"), "frontendPort": r("frontendPorts", "p443"), "protocol": "Https", "sslCertificate": r("sslCertificates", "cert")}}
                ],
                "urlPathMaps": [{"name": "map", "properties": {
                    "defaultBackendAddressPool": r("backendAddressPools", "web"),
                    "defaultBackendHttpSettings": r("backendHttpSettingsCollection", "s8080"),
                    "pathRules": [
                        {"name": "api", "properties": {"paths": ["/api/*"], "backendAddressPool": r("backendAddressPools", "api"), "backendHttpSettings": r("backendHttpSettingsCollection", "s9090")}},
                        {"name": "v2", "properties": {"paths": ["/api/v2/*"], "backendAddressPool": r("backendAddressPools", "web"), "backendHttpSettings": r("backendHttpSettingsCollection", "s8080")}}
                    ]
                }}],
                "requestRoutingRules": [
                    {"name": "catchall", "properties": {"ruleType": "Basic", "httpListener": r("httpListeners", "any"), "backendAddressPool": r("backendAddressPools", "web"), "backendHttpSettings": r("backendHttpSettingsCollection", "s8080")}},
                    {"name": "paths", "properties": {"ruleType": "PathBasedRouting", "httpListener": r("httpListeners", "site"), "urlPathMap": r("urlPathMaps", "map")}},
                    {"name": "secure", "properties": {"httpListener": {"id": "tls"}, "backendAddressPool": {"id": "web"}, "backendHttpSettings": {"id": "s8080"}}}
                ]
            }
        })
    }

    fn parsed(v: &Value) -> Result<ApplicationGateway, ArmError> {
        let mut gw: ApplicationGateway = parse_typed(v)?;
        normalize_appgw(&mut gw, ID);
        validate_appgw(&gw, ID)?;
        Ok(gw)
    }

    /// Sets `value` at a JSON pointer, creating the last key when missing.
    fn set(v: &mut Value, pointer: &str, value: Value) {
        match v.pointer_mut(pointer) {
            Some(slot) => *slot = value,
            None => {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                v.pointer_mut(parent).unwrap()[key] = value;
            }
        }
    }

    #[test]
    fn a_valid_gateway_resolves_its_frontends_and_routes_in_order() {
        let gw = parsed(&gw()).unwrap();
        let fronts = resolved_frontends(&gw, ID);
        assert_eq!(fronts.len(), 2);
        let http = &fronts[0];
        assert_eq!(http.port, 8000);
        assert!(http.tls.is_none());
        let routes: Vec<(Option<&str>, Option<&str>, &str)> = http
            .routes
            .iter()
            .map(|r| {
                (
                    r.host.as_deref(),
                    r.path.as_deref(),
                    r.target.pool_id.rsplit('/').next().unwrap(),
                )
            })
            .collect();
        // Without priorities the multi-site rule goes first; longest path first in it;
        // the catch-all listener's rule last.
        assert_eq!(
            routes,
            vec![
                (Some("api.example.com"), Some("/api/v2"), "web"),
                (Some("api.example.com"), Some("/api"), "api"),
                (Some("api.example.com"), None, "web"),
                (Some("*.api.example.com"), Some("/api/v2"), "web"),
                (Some("*.api.example.com"), Some("/api"), "api"),
                (Some("*.api.example.com"), None, "web"),
                (None, None, "web"),
            ]
        );
        let api = &http.routes[1].target;
        assert_eq!(
            api.addresses,
            vec!["10.0.0.9".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(api.settings.port, 9090);
        assert_eq!(api.settings.drain_timeout_secs, Some(10));
        let web = &http.routes[0].target.settings;
        assert!(web.cookie_affinity);
        assert_eq!(web.request_timeout_secs, 5);
        assert_eq!(web.probe.as_ref().unwrap().unhealthy_threshold, 2);
        let tls = &fronts[1];
        assert_eq!(tls.port, 8443);
        assert_eq!(tls.tls.as_ref().unwrap().certificate_file, "/tmp/c.pem");
        assert_eq!(tls.routes.len(), 1);
        assert_eq!(gw.properties.operational_state.as_deref(), Some("Running"));
        assert_eq!(
            gw.properties.url_path_maps[0].properties.path_rules[0]
                .id
                .as_deref(),
            Some(format!("{ID}/urlPathMaps/map/pathRules/api").as_str())
        );
    }

    #[test]
    fn priorities_order_rules() {
        let mut v = gw();
        set(
            &mut v,
            "/properties/requestRoutingRules/0/properties/priority",
            json!(10),
        );
        set(
            &mut v,
            "/properties/requestRoutingRules/1/properties/priority",
            json!(20),
        );
        set(
            &mut v,
            "/properties/requestRoutingRules/2/properties/priority",
            json!(30),
        );
        let gw = parsed(&v).unwrap();
        let fronts = resolved_frontends(&gw, ID);
        // The catch-all now comes first: nothing reaches the multi-site rule (as in Azure).
        assert_eq!(fronts[0].routes[0].host, None);
        assert_eq!(fronts[0].routes[0].path, None);
    }

    #[test]
    fn bad_input_names_the_field() {
        let rules = "/properties/requestRoutingRules";
        let listeners = "/properties/httpListeners";
        let settings = "/properties/backendHttpSettingsCollection";
        for (pointer, value, target, status) in [
            (format!("{rules}/0/properties/backendAddressPool"), json!({"id": format!("{ID}/backendAddressPools/nope")}),
             "properties.requestRoutingRules[0].properties.backendAddressPool.id", 400),
            (format!("{rules}/0/properties/backendHttpSettings"), json!(null),
             "properties.requestRoutingRules[0].properties.backendHttpSettings", 400),
            (format!("{rules}/1/properties/urlPathMap"), json!({"id": "/elsewhere/urlPathMaps/map"}),
             "properties.requestRoutingRules[1].properties.urlPathMap.id", 400),
            (format!("{rules}/1/properties/httpListener"), json!({"id": "any"}),
             "properties.requestRoutingRules[1].properties.httpListener.id", 400),
            (format!("{rules}/0/properties/ruleType"), json!("Redirect"),
             "properties.requestRoutingRules[0].properties.ruleType", 400),
            (format!("{rules}/0/properties/priority"), json!(1),
             "properties.requestRoutingRules[1].properties.priority", 400),
            (format!("{listeners}/0/properties/frontendPort"), json!({"id": "p1"}),
             "properties.httpListeners[0].properties.frontendPort.id", 400),
            (format!("{listeners}/0/properties/protocol"), json!("Https"),
             "properties.httpListeners[0].properties.sslCertificate", 400),
            (format!("{listeners}/0/properties/hostNames"), json!(["a b"]),
             "properties.httpListeners[0].properties.hostNames[0]", 400),
            (format!("{listeners}/0/properties/hostNames"), json!([]),
             "properties.httpListeners[1].properties.frontendPort", 409),
            (format!("{listeners}/2/properties/frontendPort"), json!({"id": "p80"}),
             "properties.httpListeners[2].properties.protocol", 400),
            (format!("{listeners}/1/properties/protocol"), json!("Tcp"),
             "properties.httpListeners[1].properties.protocol", 400),
            (format!("{settings}/0/properties/port"), json!(70000),
             "properties.backendHttpSettingsCollection[0].properties.port", 400),
            (format!("{settings}/0/properties/protocol"), json!("Https"),
             "properties.backendHttpSettingsCollection[0].properties.protocol", 400),
            (format!("{settings}/0/properties/cookieBasedAffinity"), json!("Sometimes"),
             "properties.backendHttpSettingsCollection[0].properties.cookieBasedAffinity", 400),
            (format!("{settings}/0/properties/requestTimeout"), json!(0),
             "properties.backendHttpSettingsCollection[0].properties.requestTimeout", 400),
            (format!("{settings}/0/properties/probe"), json!({"id": "nope"}),
             "properties.backendHttpSettingsCollection[0].properties.probe.id", 400),
            (format!("{settings}/1/properties/connectionDraining/drainTimeoutInSec"), json!(0),
             "properties.backendHttpSettingsCollection[1].properties.connectionDraining.drainTimeoutInSec", 400),
            ("/properties/probes/0/properties/interval".into(), json!(0),
             "properties.probes[0].properties.interval", 400),
            ("/properties/probes/0/properties/protocol".into(), json!("Tcp"),
             "properties.probes[0].properties.protocol", 400),
            ("/properties/probes/0/properties/unhealthyThreshold".into(), json!(21),
             "properties.probes[0].properties.unhealthyThreshold", 400),
            ("/properties/frontendPorts/0/properties/port".into(), json!(0),
             "properties.frontendPorts[0].properties.port", 400),
            ("/properties/frontendPorts/1/properties/port".into(), json!(8000),
             "properties.frontendPorts[1].properties.port", 400),
            ("/properties/frontendIPConfigurations/0/properties".into(), json!({"privateIPAddress": "nope"}),
             "properties.frontendIPConfigurations[0].properties.privateIPAddress", 400),
            ("/properties/sslCertificates/0/properties/shoal/keyFile".into(), json!("relative.pem"),
             "properties.sslCertificates[0].properties.shoal.keyFile", 400),
            ("/properties/sslCertificates/0/properties/keyVaultSecretId".into(), json!("https://vault/x"),
             "properties.sslCertificates[0].properties.keyVaultSecretId", 400),
            ("/properties/urlPathMaps/0/properties/pathRules/0/properties/paths".into(), json!(["/api*"]),
             "properties.urlPathMaps[0].properties.pathRules[0].properties.paths[0]", 400),
            ("/properties/backendAddressPools/1/properties/backendAddresses".into(), json!([{"fqdn": "x.example.com"}]),
             "properties.backendAddressPools[1].properties.backendAddresses[0].fqdn", 400),
            ("/properties/redirectConfigurations".into(), json!([{"name": "r"}]),
             "properties.redirectConfigurations", 400),
            ("/properties/sku/name".into(), json!("Premium"), "properties.sku.name", 400),
            ("/location".into(), json!(""), "location", 400),
        ] {
            let mut v = gw();
            set(&mut v, &pointer, value);
            let err = parsed(&v).expect_err(&pointer);
            assert_eq!(err.target.as_deref(), Some(target), "{pointer}: {err:?}");
            assert_eq!(err.status, status, "{pointer}: {err:?}");
        }
    }

    #[test]
    fn path_patterns() {
        assert_eq!(path_prefix("/api/*"), Some("/api".into()));
        assert_eq!(path_prefix("/api"), Some("/api".into()));
        assert_eq!(path_prefix("/*"), None);
        assert_eq!(path_prefix("/"), None);
        assert!(check_path_pattern("/api/*").is_ok());
        assert!(check_path_pattern("/a*b").is_err());
        assert!(check_path_pattern("api/*").is_err());
        assert!(check_path_pattern("/api/*/x").is_err());
    }

    #[test]
    fn pools_of_a_scale_set_profile() {
        let nics = vec![
            json!({"name": "nic", "properties": {"ipConfigurations": [{"name": "ip", "properties": {
                "loadBalancerBackendAddressPools": [{"id": "/lb/backendAddressPools/p"}],
                "applicationGatewayBackendAddressPools": [{"id": "/gw/backendAddressPools/web"}]
            }}]}}),
        ];
        assert_eq!(
            vmss_appgw_pool_ids(&nics),
            vec!["/gw/backendAddressPools/web".to_string()]
        );
    }

    #[test]
    fn the_gateway_round_trips_unknown_properties() {
        let mut v = gw();
        set(&mut v, "/properties/enableHttp2", json!(true));
        let gw = parsed(&v).unwrap();
        let back = serde_json::to_value(&gw).unwrap();
        assert_eq!(back["properties"]["enableHttp2"], true);
        assert_eq!(back["properties"]["sku"]["name"], "Standard_v2");
    }

    proptest::proptest! {
        #[test]
        fn any_path_or_host_is_checked_without_panic(s in "\\PC{0,40}") {
            let _ = check_path_pattern(&s);
            let _ = path_prefix(&s);
            let _ = check_host_name(&s);
        }

        /// Whatever is put in the path rule's paths, either validation refuses it (naming a
        /// path) or every route of the frontend is one the data plane can take.
        #[test]
        fn valid_path_rules_give_usable_routes(paths in proptest::collection::vec("(/[a-z*]{0,4}){1,3}\\*?", 1..5)) {
            let mut v = gw();
            set(&mut v, "/properties/urlPathMaps/0/properties/pathRules/0/properties/paths", json!(paths));
            match parsed(&v) {
                Err(e) => {
                    let target = e.target.unwrap_or_default();
                    proptest::prop_assert!(target.contains(".paths["), "{}", target);
                }
                Ok(gw) => {
                    for front in resolved_frontends(&gw, ID) {
                        for route in front.routes {
                            if let Some(p) = route.path {
                                proptest::prop_assert!(p.starts_with('/') && !p.contains('*') && !p.ends_with('/'), "{}", p);
                            }
                        }
                    }
                }
            }
        }

        /// Arbitrary JSON in a gateway never panics the parser, normalizer or validator.
        #[test]
        fn arbitrary_rule_bodies_never_panic(name in "[a-z]{0,3}", prio in proptest::option::of(-5i64..30000), port in -5i64..70000) {
            let mut v = gw();
            set(&mut v, "/properties/requestRoutingRules/0/name", json!(name));
            set(&mut v, "/properties/requestRoutingRules/0/properties/priority", json!(prio));
            set(&mut v, "/properties/frontendPorts/0/properties/port", json!(port));
            if let Ok(gw) = parsed(&v) {
                let _ = resolved_frontends(&gw, ID);
            }
        }
    }
}
