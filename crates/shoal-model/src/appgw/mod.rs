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
//!
//! This module holds the gateway itself, its normalization and the order of validation;
//! each part lives with its types, defaults and checks: `frontends` (addresses, ports,
//! listeners), `backends` (pools, HTTP settings, probes), `routing` (rules, URL path
//! maps), `ssl` (certificates) and `resolve` (what the data plane serves).

use std::collections::BTreeMap;

use serde::de::MapAccess;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::arm::{
    check_child_names, find_child, name_children, Extras, IdRef, Resource, SubResource,
};
use crate::arm_enum;
use crate::error::ArmError;

mod backends;
mod frontends;
mod resolve;
mod routing;
mod ssl;

pub use backends::{
    AppGwProbeProps, BackendAddress, BackendPoolProps, ConnectionDraining, CookieAffinity,
    HttpSettingsProps,
};
pub use frontends::{check_host_name, FrontendIpProps, FrontendPortProps, HttpListenerProps};
pub use resolve::{
    resolved_frontends, BackendTarget, GatewayFrontend, GatewayRoute, ResolvedProbe,
    ResolvedSettings,
};
pub use routing::{
    check_path_pattern, path_prefix, PathRuleProps, RoutingRuleProps, RuleType, UrlPathMapProps,
};
pub use ssl::{
    certificate_files, CertificateFiles, PemCertificate, SslCertificateProps, TlsSource,
};

pub const APPGW_TYPE: &str = "Microsoft.Network/applicationGateways";

/// `requestTimeout` when none is given (Azure's default).
pub const DEFAULT_REQUEST_TIMEOUT: i64 = 20;

arm_enum!(AppGwProtocol { Http = "Http", Https = "Https", Tcp = "Tcp", Tls = "Tls" });

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

/// An application gateway: the ARM envelope around [`AppGwProperties`], with its `zones`
/// and `identity`.
pub type ApplicationGateway = Resource<AppGwProperties, AppGwExtras>;

/// An application gateway's own top-level fields (kept, not acted on).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppGwExtras {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
}

impl Extras for AppGwExtras {
    fn read_field<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "zones" => self.zones = map.next_value()?,
            "identity" => self.identity = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
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
    /// Whether clients may speak HTTP/2 to the gateway (TLS ALPN `h2`, or prior
    /// knowledge on plain HTTP); members always get HTTP/1.1. Azure's default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_http2: Option<bool>,
    /// Everything else Azure has (WAF configuration, autoscale…): kept so
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

const SUCCEEDED: &str = "Succeeded";

/// Fills in sub-resource ids and types, Azure's defaults and provisioning states.
pub fn normalize_appgw(gw: &mut ApplicationGateway, id: &str) {
    let p = &mut gw.properties;
    let t = APPGW_TYPE;
    name_children(
        &mut p.gateway_ip_configurations,
        id,
        t,
        "gatewayIPConfigurations",
    );
    name_children(&mut p.ssl_certificates, id, t, "sslCertificates");
    name_children(
        &mut p.frontend_ip_configurations,
        id,
        t,
        "frontendIPConfigurations",
    );
    name_children(&mut p.frontend_ports, id, t, "frontendPorts");
    name_children(&mut p.probes, id, t, "probes");
    name_children(&mut p.backend_address_pools, id, t, "backendAddressPools");
    name_children(
        &mut p.backend_http_settings_collection,
        id,
        t,
        "backendHttpSettingsCollection",
    );
    name_children(&mut p.http_listeners, id, t, "httpListeners");
    name_children(&mut p.url_path_maps, id, t, "urlPathMaps");
    name_children(&mut p.request_routing_rules, id, t, "requestRoutingRules");
    for c in &mut p.gateway_ip_configurations {
        c.properties
            .insert("provisioningState".into(), Value::from(SUCCEEDED));
    }
    ssl::normalize(p);
    frontends::normalize(p);
    backends::normalize(p);
    routing::normalize(p);
    p.operational_state = Some("Running".into());
    p.provisioning_state = Some(SUCCEEDED.into());
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
fn must_find_child<'a, P>(
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
    find_child(list, r, gw_id, kind)
        .ok_or_else(|| bad_reference(format!("{target}.id"), what, &r.id))
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
    crate::arm::require_location(gw)?;
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
    check_child_names(
        &p.gateway_ip_configurations,
        "properties.gatewayIPConfigurations",
        true,
    )?;
    check_child_names(&p.ssl_certificates, "properties.sslCertificates", true)?;
    check_child_names(
        &p.frontend_ip_configurations,
        "properties.frontendIPConfigurations",
        true,
    )?;
    check_child_names(&p.frontend_ports, "properties.frontendPorts", true)?;
    check_child_names(&p.probes, "properties.probes", true)?;
    check_child_names(
        &p.backend_address_pools,
        "properties.backendAddressPools",
        true,
    )?;
    check_child_names(
        &p.backend_http_settings_collection,
        "properties.backendHttpSettingsCollection",
        true,
    )?;
    check_child_names(&p.http_listeners, "properties.httpListeners", true)?;
    check_child_names(&p.url_path_maps, "properties.urlPathMaps", true)?;
    check_child_names(
        &p.request_routing_rules,
        "properties.requestRoutingRules",
        true,
    )?;

    ssl::validate(p)?;
    let frontend_ips = frontends::validate_addresses(p)?;
    backends::validate(p, gw_id)?;
    frontends::validate_listeners(p, gw_id, &frontend_ips)?;
    routing::validate(p, gw_id)
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
        let Some(TlsSource::Files(files)) = &tls.tls else {
            panic!("certificate files: {:?}", tls.tls)
        };
        assert_eq!(files.certificate_file, "/tmp/c.pem");
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
