//! From `Microsoft.Network/applicationGateways` to the data plane's layer-7 listeners:
//! pure, beside [`plan::plan`](super::plan::plan) (layer 4), so it is property-tested.
//!
//! Each frontend (address and port) of a gateway becomes one HTTP or HTTPS listener whose
//! routes are the gateway's host/path routes in the order Azure tries them
//! ([`resolved_frontends`]). Each (backend pool, backend HTTP settings) pair a route
//! names becomes a pool of its own, because the settings decide the port requests go to
//! and the probe that judges members. A scale set whose network profile names the
//! gateway's backend pool contributes its running instances as members (draining ones
//! stay, marked, until their drain is acknowledged), at their own port when the settings'
//! port is the image's port.
//!
//! The data plane has one request timeout and one affinity switch per listener, not per
//! route: a frontend takes the longest `requestTimeout` of the settings its routes use,
//! and cookie affinity when any of them enables it. Requests that match no route are
//! answered 503 by an empty pool.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_model::appgw::{
    self, ApplicationGateway, BackendTarget, GatewayFrontend, ResolvedProbe, TlsSource,
};
use shoal_model::network::PoolOwner;

use super::plan::{Plan, World};
use crate::{
    HttpRoute, HttpSettings, Listener, ListenerKind, Member, Pool, Probe, ProbeProtocol,
    TlsCertificate, TlsFiles,
};

/// The data plane's name of the pool for one (backend pool, settings) pair.
fn pool_name(target: &BackendTarget) -> String {
    let settings = target.settings.id.rsplit('/').next().unwrap_or_default();
    format!("{}/settings/{settings}", target.pool_id).to_ascii_lowercase()
}

fn listener_name(gw_id: &str, front: &GatewayFrontend) -> String {
    format!(
        "{gw_id}/frontends/{}",
        SocketAddr::new(front.ip, front.port)
    )
    .to_ascii_lowercase()
}

fn probe_of(p: &ResolvedProbe, settings_port: u16) -> Probe {
    let interval = Duration::from_secs(u64::from(p.interval_secs.max(1)));
    Probe {
        protocol: if p.https {
            ProbeProtocol::Https
        } else {
            ProbeProtocol::Http
        },
        // No port, or the settings' port: wherever the member takes requests (its own
        // port when instances share the host network).
        port: p.port.filter(|port| *port != settings_port),
        path: p.path.clone(),
        interval,
        threshold: p.unhealthy_threshold.max(1),
        timeout: Duration::from_secs(u64::from(p.timeout_secs.max(1))).min(interval),
    }
}

/// The members of the pool for `target`, and their placements.
fn members_of(world: &World, target: &BackendTarget, pool: &str, out: &mut Plan) -> Vec<Member> {
    let mut members = Vec::new();
    let port = target.settings.port;
    for set in world.sets.iter().filter(|s| {
        !s.deleting
            && s.model
                .joins_pool(PoolOwner::ApplicationGateway, &target.pool_id)
    }) {
        for (member, placement) in super::plan::members_of_set(world, set, pool, Some(port)) {
            members.push(member);
            out.placements.push(placement);
            out.fronts.insert(set.vmss.key());
        }
    }
    for ip in &target.addresses {
        let id = format!("address/{ip}");
        if !members.iter().any(|m| m.id == id) {
            members.push(Member::new(id, SocketAddr::new(*ip, port)));
        }
    }
    members
}

/// The layer-7 part of the balancer's configuration.
pub fn plan(gateways: &[ApplicationGateway], world: &World) -> Plan {
    let mut out = Plan::default();
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    for gw in gateways {
        let Some(gw_id) = gw.id.clone() else { continue };
        for front in appgw::resolved_frontends(gw, &gw_id) {
            let name = listener_name(&gw_id, &front);
            let mut routes = Vec::new();
            let mut default_pool = None;
            let mut request_timeout = Duration::ZERO;
            let mut cookie_affinity = false;
            for route in &front.routes {
                let pool = pool_name(&route.target);
                let settings = &route.target.settings;
                request_timeout = request_timeout.max(Duration::from_secs(u64::from(
                    settings.request_timeout_secs,
                )));
                cookie_affinity |= settings.cookie_affinity;
                if !pools.contains_key(&pool) {
                    let members = members_of(world, &route.target, &pool, &mut out);
                    pools.insert(
                        pool.clone(),
                        Pool {
                            name: pool.clone(),
                            members,
                            probe: settings.probe.as_ref().map(|p| probe_of(p, settings.port)),
                        },
                    );
                }
                if route.host.is_none() && route.path.is_none() {
                    // A catch-all: everything after it is unreachable.
                    default_pool = Some(pool);
                    break;
                }
                routes.push(HttpRoute {
                    host: route.host.clone(),
                    path_prefix: route.path.clone(),
                    pool,
                });
            }
            let default_pool = default_pool.unwrap_or_else(|| {
                let empty = format!("{name}/unmatched");
                pools.entry(empty.clone()).or_insert_with(|| Pool {
                    name: empty.clone(),
                    members: Vec::new(),
                    probe: None,
                });
                empty
            });
            let http = HttpSettings {
                routes,
                default_pool,
                request_timeout: if request_timeout.is_zero() {
                    Duration::from_secs(appgw::DEFAULT_REQUEST_TIMEOUT.unsigned_abs())
                } else {
                    request_timeout
                },
                cookie_affinity,
                http2: gw.properties.enable_http2 == Some(true),
            };
            let kind = match &front.tls {
                Some(source) => ListenerKind::Https {
                    http,
                    tls: match source {
                        TlsSource::Files(files) => TlsCertificate::Files(TlsFiles {
                            cert_file: PathBuf::from(&files.certificate_file),
                            key_file: PathBuf::from(&files.key_file),
                        }),
                        TlsSource::Pem(pem) => TlsCertificate::Pem {
                            chain: pem.chain.clone(),
                            key: pem.key.clone(),
                        },
                    },
                },
                None => ListenerKind::Http(http),
            };
            out.config.listeners.push(Listener {
                name,
                bind: SocketAddr::new(front.ip, front.port),
                kind,
            });
        }
    }
    out.config.pools = pools.into_values().collect();
    out
}

/// The layer-4 plan with the layer-7 one added. A gateway listener on an address a
/// load-balancing rule (or an earlier gateway) already binds is left out, so one
/// misconfiguration cannot make the whole configuration invalid; the API refuses such
/// ports, so this only happens when resources were written behind its back.
pub fn merge(mut l4: Plan, l7: Plan) -> Plan {
    let mut binds: HashSet<SocketAddr> = l4.config.listeners.iter().map(|l| l.bind).collect();
    for listener in l7.config.listeners {
        if binds.insert(listener.bind) {
            l4.config.listeners.push(listener);
        }
    }
    l4.config.pools.extend(l7.config.pools);
    l4.placements.extend(l7.placements);
    l4.fronts.extend(l7.fronts);
    l4
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use shoal_model::ids::VmssRef;
    use shoal_model::records::{InstanceState, InstanceStatus, LaunchSpec, VmssRecord};
    use shoal_model::vmss::{normalize, parse_typed, VirtualMachineScaleSet};

    const GW: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/applicationGateways/gw";

    fn r(gw: &str, kind: &str, name: &str) -> Value {
        json!({"id": format!("{gw}/{kind}/{name}")})
    }

    fn gateway(port: u16, https: bool) -> ApplicationGateway {
        gateway_with(GW, port, https)
    }

    /// `/api/*` → pool `api` (settings on port 9000), everything else → pool `web` (the
    /// image's port 8080, so each instance's own port), with an HTTP probe.
    fn gateway_with(id: &str, port: u16, https: bool) -> ApplicationGateway {
        let r = |kind: &str, name: &str| r(id, kind, name);
        let mut v = json!({
            "location": "local",
            "properties": {
                "frontendIPConfigurations": [{"name": "fe"}],
                "frontendPorts": [{"name": "p", "properties": {"port": port}}],
                "probes": [{"name": "health", "properties": {"protocol": "Http", "path": "/health", "interval": 1, "timeout": 5, "unhealthyThreshold": 2}}],
                "backendAddressPools": [{"name": "web"}, {"name": "api"}],
                "backendHttpSettingsCollection": [
                    {"name": "web", "properties": {"port": 8080, "protocol": "Http", "requestTimeout": 7, "probe": r("probes", "health")}},
                    {"name": "api", "properties": {"port": 9000, "protocol": "Http", "requestTimeout": 3, "cookieBasedAffinity": "Enabled"}}
                ],
                "httpListeners": [{"name": "l", "properties": {"frontendIPConfiguration": r("frontendIPConfigurations", "fe"), "frontendPort": r("frontendPorts", "p"), "protocol": "Http"}}],
                "urlPathMaps": [{"name": "map", "properties": {
                    "defaultBackendAddressPool": r("backendAddressPools", "web"),
                    "defaultBackendHttpSettings": r("backendHttpSettingsCollection", "web"),
                    "pathRules": [{"name": "api", "properties": {"paths": ["/api/*"], "backendAddressPool": r("backendAddressPools", "api"), "backendHttpSettings": r("backendHttpSettingsCollection", "api")}}]
                }}],
                "requestRoutingRules": [{"name": "rule", "properties": {"ruleType": "PathBasedRouting", "priority": 10, "httpListener": r("httpListeners", "l"), "urlPathMap": r("urlPathMaps", "map")}}]
            }
        });
        if https {
            v["properties"]["sslCertificates"] = json!([{"name": "c", "properties": {"shoal": {"certificateFile": "/c.pem", "keyFile": "/k.pem"}}}]);
            v["properties"]["httpListeners"][0]["properties"]["protocol"] = json!("Https");
            v["properties"]["httpListeners"][0]["properties"]["sslCertificate"] =
                r("sslCertificates", "c");
        }
        let mut gw: ApplicationGateway = parse_typed(&v).unwrap();
        appgw::normalize_appgw(&mut gw, id);
        appgw::validate_appgw(&gw, id).unwrap();
        gw.id = Some(id.into());
        gw
    }

    fn set(name: &str, pool: Option<&str>) -> VmssRecord {
        let mut body = json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/x"}}}}
        });
        if let Some(pool) = pool {
            body["properties"]["virtualMachineProfile"]["networkProfile"] = json!({"networkInterfaceConfigurations": [{"name": "nic", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"applicationGatewayBackendAddressPools": [{"id": format!("{GW}/backendAddressPools/{}", pool.to_uppercase())}]}}]}}]});
        }
        let mut model: VirtualMachineScaleSet = parse_typed(&body).unwrap();
        normalize(&mut model);
        VmssRecord {
            vmss: VmssRef::new("s", "rg", name),
            model,
            launch: LaunchSpec {
                generation: 1,
                image_id: String::new(),
                image_version: String::new(),
                kind: "process".into(),
                blob_id: String::new(),
                command: String::new(),
                port: 8080,
                sku: String::new(),
                vcpus: 1,
                memory_mb: 512,
                custom_data: None,
                computer_name_prefix: name.into(),
                terminate_notice_secs: None,
            },
            next_instance_id: 2,
            deleting: false,
            operation: None,
            services: Value::Null,
        }
    }

    fn status(state: InstanceState, port: u16) -> InstanceStatus {
        InstanceStatus {
            state,
            host: "local".into(),
            launch_generation: 1,
            restart_gen: 0,
            reimage_gen: 0,
            address: Some("127.0.0.1".into()),
            port: Some(port),
            pid: Some(1),
            message: None,
            restarts: 0,
            since: "t".into(),
            limits: None,
            network: None,
        }
    }

    fn world() -> World {
        let mut world = World {
            balancers: vec![],
            sets: vec![
                set("web", Some("web")),
                set("api", Some("api")),
                set("other", None),
            ],
            statuses: BTreeMap::new(),
        };
        world.statuses.insert(
            "s/rg/web/00000000".into(),
            status(InstanceState::Running, 20001),
        );
        world.statuses.insert(
            "s/rg/web/00000001".into(),
            status(InstanceState::Draining, 20002),
        );
        world.statuses.insert(
            "s/rg/api/00000000".into(),
            status(InstanceState::Running, 20003),
        );
        world.statuses.insert(
            "s/rg/other/00000000".into(),
            status(InstanceState::Running, 20004),
        );
        world
    }

    #[test]
    fn a_path_map_becomes_one_listener_with_a_route_per_path_and_a_pool_per_settings() {
        let plan = plan(&[gateway(9100, false)], &world());
        crate::validate(&plan.config).unwrap();
        assert_eq!(plan.config.listeners.len(), 1);
        let l = &plan.config.listeners[0];
        assert_eq!(l.bind, "127.0.0.1:9100".parse().unwrap());
        let ListenerKind::Http(http) = &l.kind else {
            panic!("an Http listener: {l:?}")
        };
        assert_eq!(http.routes.len(), 1);
        assert_eq!(http.routes[0].path_prefix.as_deref(), Some("/api"));
        assert!(http.routes[0]
            .pool
            .ends_with("/backendaddresspools/api/settings/api"));
        assert!(http
            .default_pool
            .ends_with("/backendaddresspools/web/settings/web"));
        // The longest timeout of the settings in use; affinity because one enables it.
        assert_eq!(http.request_timeout, Duration::from_secs(7));
        assert!(http.cookie_affinity);

        let pool = |suffix: &str| {
            plan.config
                .pools
                .iter()
                .find(|p| p.name.ends_with(suffix))
                .unwrap()
        };
        let web = pool("/web/settings/web");
        // The image's port: each instance at its own port; draining stays, marked.
        let members: Vec<(u16, bool)> = web
            .members
            .iter()
            .map(|m| (m.addr.port(), m.draining))
            .collect();
        assert_eq!(members, vec![(20001, false), (20002, true)]);
        let probe = web.probe.as_ref().unwrap();
        assert_eq!(
            (probe.port, probe.threshold, probe.interval),
            (None, 2, Duration::from_secs(1))
        );
        assert_eq!(
            probe.timeout,
            Duration::from_secs(1),
            "a probe never outlasts its interval"
        );
        // Another port than the image's: that port on every instance.
        let api = pool("/api/settings/api");
        assert_eq!(api.members.len(), 1);
        assert_eq!(api.members[0].addr.port(), 9000);
        assert!(api.probe.is_none());

        assert_eq!(plan.placements.len(), 3);
        assert!(plan.fronts.contains("vmss/s/rg/web"));
        assert!(plan.fronts.contains("vmss/s/rg/api"));
        assert!(!plan.fronts.contains("vmss/s/rg/other"));
    }

    #[test]
    fn an_https_frontend_serves_the_certificate_files() {
        let plan = plan(&[gateway(9443, true)], &world());
        let ListenerKind::Https { tls, .. } = &plan.config.listeners[0].kind else {
            panic!("an Https listener")
        };
        assert_eq!(
            tls,
            &TlsCertificate::Files(TlsFiles {
                cert_file: PathBuf::from("/c.pem"),
                key_file: PathBuf::from("/k.pem"),
            })
        );
    }

    #[test]
    fn a_frontend_without_a_catch_all_answers_unmatched_requests_from_an_empty_pool() {
        let mut gw = gateway(9100, false);
        gw.properties.http_listeners[0].properties.host_name = Some("api.example.com".into());
        let plan = plan(&[gw], &world());
        crate::validate(&plan.config).unwrap();
        let ListenerKind::Http(http) = &plan.config.listeners[0].kind else {
            panic!()
        };
        assert_eq!(http.routes.len(), 2);
        assert!(http
            .routes
            .iter()
            .all(|r| r.host.as_deref() == Some("api.example.com")));
        let unmatched = plan
            .config
            .pools
            .iter()
            .find(|p| p.name == http.default_pool)
            .unwrap();
        assert!(unmatched.members.is_empty());
    }

    #[test]
    fn a_listener_on_an_address_already_bound_is_left_out_not_fatal() {
        let l4 = plan(&[gateway(9100, false)], &world());
        let other = plan(&[gateway_with(&format!("{GW}2"), 9100, false)], &world());
        let merged = merge(l4, other);
        crate::validate(&merged.config).unwrap();
        assert_eq!(merged.config.listeners.len(), 1);
    }

    proptest::proptest! {
        /// Whatever the instances' states and the gateways' ports, the plan is a valid
        /// data-plane configuration, members are exactly the running and draining
        /// instances of sets in the pool, and every member has a placement.
        #[test]
        fn plans_are_valid_and_members_are_running_or_draining(
            states in proptest::collection::vec((0u8..9, 0u8..3), 0..30),
            ports in proptest::collection::vec(9000u16..9004, 1..4),
        ) {
            let all = [InstanceState::Creating, InstanceState::Starting, InstanceState::Running, InstanceState::Stopping,
                InstanceState::Draining, InstanceState::Stopped, InstanceState::Deallocated, InstanceState::Failed, InstanceState::Deleted];
            let names = ["web", "api", "other"];
            let mut world = world();
            world.statuses.clear();
            for (i, (s, set)) in states.iter().enumerate() {
                world.statuses.insert(format!("s/rg/{}/{i:08}", names[*set as usize]), status(all[*s as usize], 20000 + i as u16));
            }
            let gateways: Vec<ApplicationGateway> = ports.iter().enumerate().map(|(i, port)| {
                let id = if i == 0 { GW.to_string() } else { format!("{GW}x{i}") };
                gateway_with(&id, *port, i % 2 == 1)
            }).collect();
            let plan = merge(Plan::default(), plan(&gateways, &world));
            proptest::prop_assert!(crate::validate(&plan.config).is_ok(), "{:?}", crate::validate(&plan.config));
            for pool in &plan.config.pools {
                for m in &pool.members {
                    let st = &world.statuses[&m.id];
                    proptest::prop_assert!(matches!(st.state, InstanceState::Running | InstanceState::Draining));
                    proptest::prop_assert_eq!(m.draining, st.state == InstanceState::Draining);
                    proptest::prop_assert!(!m.id.starts_with("s/rg/other/"));
                    proptest::prop_assert!(plan.placements.iter().any(|p| p.pool == pool.name && p.instance == m.id));
                }
            }
            let running_web = states.iter().filter(|(s, set)| *set == 0 && matches!(all[*s as usize], InstanceState::Running | InstanceState::Draining)).count();
            let name = format!("{GW}/backendAddressPools/web/settings/web").to_ascii_lowercase();
            let web = plan.config.pools.iter().find(|p| p.name == name);
            proptest::prop_assert_eq!(web.map_or(0, |p| p.members.len()), running_web);
        }
    }
}
