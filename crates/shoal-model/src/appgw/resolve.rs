//! A valid gateway as the data plane serves it: one [`GatewayFrontend`] per address and
//! port, with its host/path routes to (pool, settings) targets in the order Azure tries
//! them ([`resolved_frontends`]). Pure; the balancer's follower calls it.

use std::collections::HashMap;

use super::routing::path_prefix;
use super::{
    find_child, AppGwProperties, AppGwProtocol, ApplicationGateway, CookieAffinity,
    HttpListenerProps, HttpSettingsProps, RoutingRuleProps, RuleType, TlsSource,
    DEFAULT_REQUEST_TIMEOUT,
};
use crate::arm::{IdRef, SubResource};

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
    /// The certificate of an Https frontend.
    pub tls: Option<TlsSource>,
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
        .and_then(|r| find_child(&p.probes, r, gw_id, "probes"))
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
    let pool = find_child(
        &p.backend_address_pools,
        pool?,
        gw_id,
        "backendAddressPools",
    )?;
    let settings = find_child(
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
            find_child(
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
            .and_then(|r| find_child(&p.frontend_ports, r, gw_id, "frontendPorts"))
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
                .and_then(|r| find_child(&p.ssl_certificates, r, gw_id, "sslCertificates"))
                .and_then(|c| c.properties.source()),
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
            .and_then(|l| find_child(&p.http_listeners, l, gw_id, "httpListeners"))
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
                    .and_then(|m| find_child(&p.url_path_maps, m, gw_id, "urlPathMaps"))
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
