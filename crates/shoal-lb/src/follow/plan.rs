//! From Shoal's resources to a [`BalancerConfig`]: pure, so it is property-tested.
//!
//! Each load-balancing rule of each `Microsoft.Network/loadBalancers` resource becomes a
//! TCP listener on the rule's frontend and a pool of its own (so a rule's backend port
//! and probe apply to its members). A scale set whose network profile names the rule's
//! backend pool contributes its running instances as members; an instance that is
//! draining stays a member marked `draining` until it has been acknowledged.

use shoal_model::keys;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shoal_model::network::{self, LoadBalancer, PoolOwner, ProbeProps, ProbeProtocol as ArmProbe};
use shoal_model::records::{InstanceState, InstanceStatus, VmssRecord};

use crate::{
    BalancerConfig, Distribution, Listener, ListenerKind, Member, Pool, Probe, ProbeProtocol,
    TcpSettings,
};

/// What the follower knows: every balancer, set and instance status.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub balancers: Vec<LoadBalancer>,
    pub sets: Vec<VmssRecord>,
    /// Statuses by `{sub}/{rg}/{vmss}/{id}` (lower case, the id zero-padded as in keys).
    pub statuses: BTreeMap<String, InstanceStatus>,
}

/// One instance's place in one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pool: String,
    /// `{sub}/{rg}/{vmss}/{id}` of the instance (also the member id).
    pub instance: String,
    pub draining: bool,
    /// The `since` of the draining status (the episode a drain acknowledgement names).
    pub episode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub config: BalancerConfig,
    pub placements: Vec<Placement>,
    /// Store keys (`vmss/...`) of the sets with members here.
    pub fronts: BTreeSet<String>,
}

fn probe_of(p: &ProbeProps, image_port: u16) -> Probe {
    let interval = Duration::from_secs(
        u64::try_from(p.interval_in_seconds.unwrap_or(15))
            .unwrap_or(15)
            .max(1),
    );
    let port = p.port.and_then(|x| u16::try_from(x).ok());
    Probe {
        protocol: match p.protocol {
            Some(ArmProbe::Http) => ProbeProtocol::Http,
            Some(ArmProbe::Https) => ProbeProtocol::Https,
            _ => ProbeProtocol::Tcp,
        },
        // The image's port means "wherever this instance listens" (instances sharing
        // the host network each got their own port).
        port: port.filter(|p| *p != image_port),
        path: p.request_path.clone().unwrap_or_else(|| "/".into()),
        interval,
        threshold: u32::try_from(p.probe_threshold.or(p.number_of_probes).unwrap_or(2).max(1))
            .unwrap_or(2),
        timeout: interval.min(Duration::from_secs(5)),
    }
}

/// The running and draining instances of `set` as members of `pool`, reached at `port`
/// (`None` or the image's port: each instance's own port for the image's, since
/// host-network instances each got their own). A load-balancing rule passes `None`: its
/// `backendPort` is forwarded to the image's port, since an image listens on its one port
/// (`az vmss create`'s 80 → 80 against an image on 8080; the rule's view says so); a
/// gateway's backend settings name the port they reach.
pub(crate) fn members_of_set(
    world: &World,
    set: &VmssRecord,
    pool: &str,
    port: Option<u16>,
) -> Vec<(Member, Placement)> {
    let prefix = keys::path_of(keys::STATUS, &set.vmss.status_prefix()).to_string();
    let mut out = Vec::new();
    for (path, status) in world.statuses.range(prefix.clone()..) {
        if !path.starts_with(&prefix) {
            break;
        }
        let draining = match status.state {
            InstanceState::Running => false,
            InstanceState::Draining => true,
            _ => continue,
        };
        let (Some(addr), Some(own_port)) = (status.address.as_deref(), status.port) else {
            continue;
        };
        let Ok(addr) = addr.parse::<IpAddr>() else {
            continue;
        };
        out.push((
            Member {
                id: path.clone(),
                addr: SocketAddr::new(
                    addr,
                    port.filter(|p| *p != set.launch.port).unwrap_or(own_port),
                ),
                draining,
            },
            Placement {
                pool: pool.to_string(),
                instance: path.clone(),
                draining,
                episode: status.since.clone(),
            },
        ));
    }
    out
}

pub fn plan(world: &World) -> Plan {
    let mut out = Plan::default();
    for lb in &world.balancers {
        let Some(lb_id) = lb.id.clone() else { continue };
        for rule in network::resolved_rules(lb, &lb_id) {
            let pool_name =
                format!("{lb_id}/loadBalancingRules/{}", rule.name).to_ascii_lowercase();
            let Ok(ip) = rule.frontend_ip.parse::<IpAddr>() else {
                continue;
            };
            let members_sets: Vec<&VmssRecord> = world
                .sets
                .iter()
                .filter(|s| {
                    !s.deleting && s.model.joins_pool(PoolOwner::LoadBalancer, &rule.pool_id)
                })
                .collect();
            let mut members = Vec::new();
            let mut image_port = rule.backend_port;
            for set in members_sets {
                image_port = set.launch.port;
                for (member, placement) in members_of_set(world, set, &pool_name, None) {
                    members.push(member);
                    out.placements.push(placement);
                    out.fronts.insert(set.vmss.key());
                }
            }
            let mut tcp = TcpSettings::new(pool_name.clone());
            tcp.distribution = match rule.distribution {
                network::LoadDistribution::Default => Distribution::Default,
                network::LoadDistribution::SourceIp => Distribution::SourceIp,
                network::LoadDistribution::SourceIpProtocol => Distribution::SourceIpProtocol,
            };
            tcp.idle_timeout =
                Duration::from_secs(u64::from(rule.idle_timeout_minutes.max(1)) * 60);
            tcp.tcp_reset = rule.tcp_reset;
            out.config.listeners.push(Listener {
                name: pool_name.clone(),
                bind: SocketAddr::new(ip, rule.frontend_port),
                kind: ListenerKind::Tcp(tcp),
            });
            out.config.pools.push(Pool {
                name: pool_name,
                members,
                probe: rule.probe.as_ref().map(|p| probe_of(p, image_port)),
            });
        }
    }
    out
}

/// The Application Health extension (`Microsoft.ManagedServices/ApplicationHealthLinux`
/// or `…Windows`) of a set: its probe, if the set has one.
pub(crate) fn app_health_probe(set: &VmssRecord) -> Option<Probe> {
    let extensions = set
        .model
        .profile()?
        .extension_profile
        .as_ref()?
        .get("extensions")?
        .as_array()?
        .clone();
    let ext = extensions.into_iter().find(|e| {
        e.pointer("/properties/type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| {
                t.eq_ignore_ascii_case("ApplicationHealthLinux")
                    || t.eq_ignore_ascii_case("ApplicationHealthWindows")
            })
    })?;
    let settings = ext
        .pointer("/properties/settings")
        .cloned()
        .unwrap_or_default();
    let protocol = settings["protocol"]
        .as_str()
        .unwrap_or("tcp")
        .to_ascii_lowercase();
    let port = settings["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok());
    let interval = Duration::from_secs(
        settings["intervalInSeconds"]
            .as_u64()
            .unwrap_or(5)
            .clamp(1, 3600),
    );
    Some(Probe {
        protocol: match protocol.as_str() {
            "http" => ProbeProtocol::Http,
            "https" => ProbeProtocol::Https,
            _ => ProbeProtocol::Tcp,
        },
        // The image's port means each instance's own port, as for balancer probes.
        port: port.filter(|p| *p != set.launch.port),
        path: settings["requestPath"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| "/".into()),
        interval,
        threshold: u32::try_from(
            settings["numberOfProbes"]
                .as_u64()
                .unwrap_or(1)
                .clamp(1, 24),
        )
        .unwrap_or(1),
        timeout: interval.min(Duration::from_secs(5)),
    })
}

/// Probe-only pools (no listener) for sets with the Application Health extension, so the
/// extension's verdict reaches `vmHealth` (and automatic repairs) like a balancer probe's.
/// They hold no drains: no traffic goes through them.
pub fn app_health(world: &World) -> Plan {
    let mut out = Plan::default();
    for set in world.sets.iter().filter(|s| !s.deleting) {
        let Some(probe) = app_health_probe(set) else {
            continue;
        };
        let pool_name = format!("apphealth/{}", set.vmss.key());
        // No fronts: nothing flows through this pool, so it holds no drain back.
        let (members, placements): (Vec<Member>, Vec<Placement>) =
            members_of_set(world, set, &pool_name, None)
                .into_iter()
                .unzip();
        out.placements.extend(placements);
        out.config.pools.push(Pool {
            name: pool_name,
            members,
            probe: Some(probe),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shoal_model::ids::VmssRef;
    use shoal_model::records::LaunchSpec;
    use shoal_model::vmss::{normalize, parse_typed, VirtualMachineScaleSet};

    const LB: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb";

    fn lb() -> LoadBalancer {
        let v = json!({
            "location": "local",
            "properties": {
                "frontendIPConfigurations": [{"name": "fe"}],
                "backendAddressPools": [{"name": "pool"}],
                "probes": [{"name": "p", "properties": {"protocol": "Http", "port": 8080, "requestPath": "/health", "intervalInSeconds": 1, "numberOfProbes": 2}}],
                "loadBalancingRules": [{"name": "r", "properties": {
                    "frontendIPConfiguration": {"id": format!("{LB}/frontendIPConfigurations/fe")},
                    "backendAddressPool": {"id": format!("{LB}/backendAddressPools/pool")},
                    "probe": {"id": format!("{LB}/probes/p")},
                    "protocol": "Tcp", "frontendPort": 9000, "backendPort": 8080}}]
            }
        });
        let mut lb: LoadBalancer = parse_typed(&v).unwrap();
        network::normalize_lb(&mut lb, LB);
        lb.id = Some(LB.into());
        lb
    }

    fn set(in_pool: bool) -> VmssRecord {
        let mut body = json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/x"}}}}
        });
        if in_pool {
            body["properties"]["virtualMachineProfile"]["networkProfile"] = json!({"networkInterfaceConfigurations": [{"name": "nic", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"loadBalancerBackendAddressPools": [{"id": format!("{LB}/backendAddressPools/POOL")}]}}]}}]});
        }
        let mut model: VirtualMachineScaleSet = parse_typed(&body).unwrap();
        normalize(&mut model);
        VmssRecord {
            vmss: VmssRef::new("s", "rg", "web"),
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
                computer_name_prefix: "web".into(),
                terminate_notice_secs: None,
            },
            next_instance_id: 2,
            deleting: false,
            operation: None,
            services: serde_json::Value::Null,
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

    #[test]
    fn running_instances_of_sets_in_the_pool_become_members_at_their_own_port() {
        let mut world = World {
            balancers: vec![lb()],
            sets: vec![set(true)],
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
            "s/rg/web/00000002".into(),
            status(InstanceState::Starting, 20003),
        );
        let plan = plan(&world);
        assert_eq!(plan.config.listeners.len(), 1);
        assert_eq!(
            plan.config.listeners[0].bind,
            "127.0.0.1:9000".parse().unwrap()
        );
        let pool = &plan.config.pools[0];
        let members: Vec<(u16, bool)> = pool
            .members
            .iter()
            .map(|m| (m.addr.port(), m.draining))
            .collect();
        assert_eq!(members, vec![(20001, false), (20002, true)]);
        // The probe names the image's port: each member is probed on its own port.
        assert_eq!(pool.probe.as_ref().unwrap().port, None);
        assert_eq!(pool.probe.as_ref().unwrap().threshold, 2);
        assert!(plan.fronts.contains("vmss/s/rg/web"));
    }

    #[test]
    fn sets_outside_the_pool_contribute_nothing() {
        let mut world = World {
            balancers: vec![lb()],
            sets: vec![set(false)],
            statuses: BTreeMap::new(),
        };
        world.statuses.insert(
            "s/rg/web/00000000".into(),
            status(InstanceState::Running, 20001),
        );
        let plan = plan(&world);
        assert!(plan.config.pools[0].members.is_empty());
        assert!(plan.fronts.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn only_running_or_draining_instances_are_members(states in proptest::collection::vec(0u8..9, 0..30)) {
            let all = [InstanceState::Creating, InstanceState::Starting, InstanceState::Running, InstanceState::Stopping,
                InstanceState::Draining, InstanceState::Stopped, InstanceState::Deallocated, InstanceState::Failed, InstanceState::Deleted];
            let mut world = World { balancers: vec![lb()], sets: vec![set(true)], statuses: BTreeMap::new() };
            for (i, s) in states.iter().enumerate() {
                world.statuses.insert(format!("s/rg/web/{i:08}"), status(all[*s as usize], 20000 + i as u16));
            }
            let plan = plan(&world);
            let want = states.iter().filter(|s| matches!(all[**s as usize], InstanceState::Running | InstanceState::Draining)).count();
            proptest::prop_assert_eq!(plan.config.pools[0].members.len(), want);
            for m in &plan.config.pools[0].members {
                let st = &world.statuses[&m.id];
                proptest::prop_assert_eq!(m.draining, st.state == InstanceState::Draining);
            }
        }
    }
}
