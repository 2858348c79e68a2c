//! Hosts as ARM-style resources under Shoal's provider namespace:
//! `/providers/Shoal.Infrastructure/hosts[/{name}]` (GET list and one, DELETE), and the
//! POST actions `cordon`, `uncordon`, `drain`; plus the agents' heartbeat
//! (`POST /shoal/v1/hosts/{name}/heartbeat`).
//!
//! Data enters as the host records agents register, the states the controller derives
//! (`hoststate/`) and the instance records (what each host holds); it leaves as ARM
//! JSON, and as host-record changes (cordon, drain) and heartbeat records that the
//! controller acts on. A drain that would leave an instance nowhere to go is refused
//! with 409 naming `hostName`.

use http::Method;
use serde_json::{json, Value};
use shoal_control::hosts;
use shoal_control::kv;
use shoal_control::planner::{self, HostSlot, Resources};
use shoal_model::cidr::Cidr;
use shoal_model::keys;
use shoal_model::records::{
    heartbeat_key, host_key, host_state_key, Heartbeat, HostPeer, HostRecord, HostState,
    HostStateRecord, InstanceRecord, VmssRecord,
};
use shoal_model::ArmError;
use shoal_store::Expect;

use crate::groups::method_not_allowed;
use crate::response::{json, ApiResult};
use crate::state::{txn_error, ApiState};

pub const HOST_TYPE: &str = "Shoal.Infrastructure/hosts";

/// What the handlers read: every host, its state, and every instance.
struct World {
    hosts: Vec<(HostRecord, u64)>,
    states: Vec<(String, HostStateRecord)>,
    instances: Vec<InstanceRecord>,
}

async fn world(st: &ApiState) -> Result<World, ArmError> {
    let hosts = st
        .list::<HostRecord>(keys::HOST)
        .await?
        .into_iter()
        .map(|h| (h.value, h.revision))
        .collect();
    let states = st
        .list::<HostStateRecord>(keys::HOST_STATE)
        .await?
        .into_iter()
        .map(|s| (keys::path_of(keys::HOST_STATE, &s.key).to_string(), s.value))
        .collect();
    let instances = st
        .list::<InstanceRecord>(keys::INSTANCE)
        .await?
        .into_iter()
        .map(|i| i.value)
        .collect();
    Ok(World {
        hosts,
        states,
        instances,
    })
}

impl World {
    fn state(&self, name: &str) -> Option<&HostStateRecord> {
        self.states
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, s)| s)
    }

    fn find(&self, name: &str) -> Result<&(HostRecord, u64), ArmError> {
        self.hosts
            .iter()
            .find(|(h, _)| h.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| ArmError::not_found(HOST_TYPE, name))
    }

    fn slots(&self) -> Vec<HostSlot> {
        let records: Vec<HostRecord> = self.hosts.iter().map(|(h, _)| h.clone()).collect();
        let states = self
            .states
            .iter()
            .map(|(n, s)| (n.to_ascii_lowercase(), s.state))
            .collect();
        hosts::slots(&records, &states, &hosts::allocated(&self.instances))
    }

    fn view(&self, h: &HostRecord) -> Value {
        let state = self.state(&h.name);
        let cap = hosts::capacity(h);
        let used = hosts::allocated(
            self.instances
                .iter()
                .filter(|i| i.host.eq_ignore_ascii_case(&h.name)),
        );
        let used = used.values().next().copied().unwrap_or_default();
        let count = self
            .instances
            .iter()
            .filter(|i| i.host.eq_ignore_ascii_case(&h.name))
            .count();
        json!({
            "id": format!("/providers/{HOST_TYPE}/{}", h.name),
            "name": h.name,
            "type": HOST_TYPE,
            "properties": {
                "zone": h.zone,
                "faultDomain": h.fault_domain.unwrap_or(0),
                "state": state.map_or(HostState::Ready, |s| s.state).as_str(),
                "stateSince": state.map(|s| s.since.clone()),
                "cordoned": h.cordoned || h.draining,
                "draining": h.draining,
                "address": h.address,
                "agentUrl": h.agent_url,
                "subnet": h.subnet,
                "driver": h.driver,
                "capacity": {"vCPUs": cap.vcpus, "memoryMB": cap.memory_mb, "instances": h.max_instances},
                "allocated": {"vCPUs": used.vcpus, "memoryMB": used.memory_mb, "instances": count},
                "events": state.map(|s| s.events.clone()).unwrap_or_default(),
            }
        })
    }
}

/// `GET /providers/Shoal.Infrastructure/hosts`.
pub async fn list(st: &ApiState, method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let w = world(st).await?;
    let value: Vec<Value> = w.hosts.iter().map(|(h, _)| w.view(h)).collect();
    Ok(json(200, &json!({ "value": value })))
}

/// `GET` or `DELETE /providers/Shoal.Infrastructure/hosts/{name}`. Deleting a host
/// forgets it: what it ran is placed again elsewhere, as for a Down host (an agent
/// still running under that name registers it again).
pub async fn one(st: &ApiState, method: &Method, name: &str) -> ApiResult {
    let w = world(st).await?;
    match *method {
        Method::GET => Ok(json(200, &w.view(&w.find(name)?.0))),
        Method::DELETE => {
            let Ok((h, rev)) = w.find(name) else {
                return Ok(json(204, &Value::Null));
            };
            st.store
                .txn(vec![
                    kv::delete_op(host_key(&h.name), Expect::ModRevision(*rev)),
                    kv::delete_op(heartbeat_key(&h.name), Expect::Any),
                    kv::delete_op(host_state_key(&h.name), Expect::Any),
                    kv::delete_op(crate::host_auth::host_credential_key(&h.name), Expect::Any),
                ])
                .await
                .map_err(txn_error)?;
            Ok(json(200, &Value::Null))
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// `POST /providers/Shoal.Infrastructure/hosts/{name}/{cordon|uncordon|drain}`.
pub async fn action(st: &ApiState, method: &Method, name: &str, action: &str) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let w = world(st).await?;
    let (h, rev) = w.find(name)?;
    let mut changed = h.clone();
    match action.to_ascii_lowercase().as_str() {
        "cordon" => changed.cordoned = true,
        "uncordon" => {
            changed.cordoned = false;
            changed.draining = false;
        }
        "drain" => {
            check_drain(st, &w, h).await?;
            changed.cordoned = true;
            changed.draining = true;
        }
        _ => {
            return Err(ArmError::invalid_parameter(
                "action",
                format!("Unknown host action '{action}': use cordon, uncordon or drain."),
            ))
        }
    }
    st.store
        .txn(vec![kv::put_op(
            host_key(&h.name),
            &changed,
            Expect::ModRevision(*rev),
        )])
        .await
        .map_err(txn_error)?;
    Ok(json(200, &w.view(&changed)))
}

/// Every active instance on `h` must have another host to go to.
async fn check_drain(st: &ApiState, w: &World, h: &HostRecord) -> Result<(), ArmError> {
    let mut slots = w.slots();
    for s in slots
        .iter_mut()
        .filter(|s| s.name.eq_ignore_ascii_case(&h.name))
    {
        s.draining = true;
    }
    for inst in w
        .instances
        .iter()
        .filter(|i| i.host.eq_ignore_ascii_case(&h.name) && !i.deleting)
    {
        let Some(set) = st.get::<VmssRecord>(&inst.vmss.key()).await? else {
            continue;
        };
        let siblings: Vec<&InstanceRecord> =
            w.instances.iter().filter(|i| i.vmss == inst.vmss).collect();
        let need = Resources::of(inst);
        let Some(p) = planner::place(&set.value, &slots, &siblings, &need, None) else {
            return Err(ArmError::conflict(format!(
                "Host {} cannot be drained: instance {} of scale set {} has no other host to go to \
                 (in its zones, Ready, not cordoned, with room). Add or uncordon a host first.",
                h.name, inst.instance_id, inst.vmss.name
            ))
            .with_target("hostName"));
        };
        if let Some(s) = slots.iter_mut().find(|s| s.name == p.host) {
            s.free.take(&need);
        }
    }
    Ok(())
}

/// `POST /shoal/v1/hosts/{name}/heartbeat`: the host's agent is alive. 404 when the host
/// is not registered (the agent registers again).
pub async fn heartbeat(st: &ApiState, method: &Method, name: &str) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    // One read of every host: whether this one is registered, and its peers.
    let hosts = st.list::<HostRecord>(keys::HOST).await?;
    let me = host_key(name);
    if !hosts.iter().any(|h| h.key == me) {
        return Err(ArmError::not_found(HOST_TYPE, name));
    }
    let beat = Heartbeat { at: st.now() };
    st.store
        .txn(vec![kv::put_op(heartbeat_key(name), &beat, Expect::Any)])
        .await
        .map_err(txn_error)?;
    Ok(json(200, &json!({"ok": true, "peers": peers(hosts, &me)})))
}

/// The other hosts (all but the one at key `me`) whose instance subnets that host routes
/// to: those that said where they are reached.
fn peers(hosts: Vec<kv::Versioned<HostRecord>>, me: &str) -> Vec<HostPeer> {
    let mut peers: Vec<HostPeer> = hosts
        .into_iter()
        .filter(|h| h.key != me)
        .filter_map(|h| {
            Some(HostPeer {
                name: h.value.name,
                address: h.value.address?,
                subnet: h.value.subnet?,
            })
        })
        .collect();
    peers.sort();
    peers
}

/// Refuses a registration whose address is not an IPv4 address, or whose instance
/// subnet is not a range or, when both hosts are routed to (they gave `--address`),
/// shares addresses with another host's: routes could not tell the hosts apart. Agents
/// on one machine without an address may share a range (its namespace names are the
/// lock).
pub async fn check_network(st: &ApiState, rec: &HostRecord) -> Result<(), ArmError> {
    if let Some(a) = &rec.address {
        if a.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(ArmError::invalid_parameter(
                "address",
                format!("The host address '{a}' is not an IPv4 address such as 192.168.1.12."),
            ));
        }
    }
    let Some(subnet) = &rec.subnet else {
        return Ok(());
    };
    let mine: Cidr = subnet
        .parse()
        .map_err(|e: String| ArmError::invalid_parameter("subnet", e))?;
    if rec.address.is_none() {
        return Ok(());
    }
    for other in st.list::<HostRecord>(keys::HOST).await? {
        let other = other.value;
        if other.name.eq_ignore_ascii_case(&rec.name) || other.address.is_none() {
            continue;
        }
        let Some(theirs) = other.subnet.as_deref().and_then(|s| s.parse::<Cidr>().ok()) else {
            continue;
        };
        if mine.overlaps(&theirs) {
            return Err(ArmError::conflict(format!(
                "The instance subnet {mine} of host {} overlaps {theirs} of host {}: give each \
                 host its own range with --instance-subnet (e.g. 10.200.1.0/24, \
                 10.200.2.0/24, …), or delete the other host first.",
                rec.name, other.name
            ))
            .with_target("subnet"));
        }
    }
    Ok(())
}

/// Refuses a registration that would take the name of another live host (a different
/// `hostId`, not Down).
pub async fn check_name_free(st: &ApiState, rec: &HostRecord) -> Result<(), ArmError> {
    let Some(existing) = st.get::<HostRecord>(&host_key(&rec.name)).await? else {
        return Ok(());
    };
    let other = !existing.value.host_id.is_empty()
        && !rec.host_id.is_empty()
        && existing.value.host_id != rec.host_id;
    if !other {
        return Ok(());
    }
    if is_down(st, &rec.name).await? {
        return Ok(());
    }
    Err(name_taken(&rec.name))
}

/// Whether the host `name` has been declared Down (its name may be taken again).
pub async fn is_down(st: &ApiState, name: &str) -> Result<bool, ArmError> {
    Ok(st
        .get::<HostStateRecord>(&host_state_key(name))
        .await?
        .is_some_and(|s| s.value.state == HostState::Down))
}

/// The 409 for a name another live host holds.
pub fn name_taken(name: &str) -> ArmError {
    ArmError::conflict(format!(
        "Host name '{name}' is taken by another live host: choose another --host-name, or \
         delete that host first (shoal host delete --name {name})."
    ))
    .with_target("name")
}

/// The activity-log events of instances lost with a Down host and placed again elsewhere
/// (Azure's service healing shows there as a `Microsoft.Compute/virtualMachineScaleSets`
/// event): one per host event that names a set of `sub`, filtered as the request asks.
pub async fn activity_events(
    st: &ApiState,
    sub: &str,
    scope: crate::activity_log::Scope<'_>,
) -> Result<Vec<(jiff::Timestamp, Value)>, ArmError> {
    let prefix = format!("/subscriptions/{}/", sub.to_ascii_lowercase());
    let operation = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/redeploy/action";
    let mut events = Vec::new();
    for rec in st.list::<HostStateRecord>(keys::HOST_STATE).await? {
        let host = keys::path_of(keys::HOST_STATE, &rec.key);
        for (i, e) in rec.value.events.iter().enumerate() {
            let Some(id) = e.resource_id.as_deref() else {
                continue;
            };
            let rg = id.split('/').nth(4).unwrap_or_default();
            if !id.to_ascii_lowercase().starts_with(&prefix) || !scope.covers(id, rg) {
                continue;
            }
            let Ok(t) = e.time.parse::<jiff::Timestamp>() else {
                continue;
            };
            if !scope.within(t) {
                continue;
            }
            let event_id = format!("host-{host}-{}-{i}", t.as_millisecond());
            let level = if e.message.contains("no other host") {
                "Warning"
            } else {
                "Informational"
            };
            let event = crate::activity_log::Event {
                subscription: sub,
                resource_group: rg,
                resource_id: id,
                resource: ("Microsoft.Compute", shoal_model::vmss::VMSS_TYPE),
                event_id: &event_id,
                time: &e.time,
                at: t,
                operation: (operation, "Instance placed again after its host went down"),
                caller: "Shoal.Infrastructure/hosts",
                channels: "Operation",
                event_name: ("HostDown", "Host down: instance placed again"),
                category: ("ResourceHealth", "Resource Health"),
                level,
                status: "Succeeded",
                description: &e.message,
                properties: json!({"Description": e.message, "hostName": host}),
            };
            events.push((t, event.to_json()));
        }
    }
    Ok(events)
}
