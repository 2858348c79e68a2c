//! Hosts as the control plane judges them: Ready, NotReady or Down from their heartbeats,
//! their capacity and what is placed on them.
//!
//! Data enters as the host records agents register (`host/`), their heartbeats
//! (`heartbeat/`, written by the API when an agent calls in) and the instance records;
//! it leaves as [`HostSlot`]s for the placement planner, and as the state the
//! controller records for each host (`hoststate/`, [`HostStateRecord`]) so the API and
//! every server show the same state.
//!
//! Timeouts follow Nomad's defaults (a heartbeat every few seconds, a node down after
//! about 20–30 s without one) and Azure's service healing (a VM restarted elsewhere
//! within minutes): a heartbeat every 2 s, NotReady after 10 s (five missed), Down after
//! 30 s. A host is judged from the later of its last heartbeat and the moment this
//! controller started watching, so after a server restart or a leader change every
//! host gets one fresh grace period before any is declared Down (Nomad's
//! `failover_heartbeat_ttl`).

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use shoal_model::keys;
use shoal_model::records::{
    health_key, host_state_key, Heartbeat, HostEvent, HostRecord, HostState, HostStateRecord,
    InstanceRecord, InstanceState, InstanceStatus,
};
use shoal_store::watcher::Reader;
use shoal_store::{Expect, Store, TxnOp};

use crate::clock::arm_time;
use crate::kv::{self, KvError};
use crate::planner::{HostSlot, Lost, Resources};

/// Events kept per host.
const EVENTS_KEPT: usize = 50;

/// vCPUs a host offers per core it has, unless configured (instances mostly idle).
pub const CPU_OVERCOMMIT: u64 = 16;
/// Memory a host offers per MB it has, unless configured.
pub const MEMORY_OVERCOMMIT: u64 = 4;

/// How often agents call in and when silence makes a host NotReady, then Down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTimeouts {
    pub heartbeat_interval: Duration,
    pub not_ready_after: Duration,
    pub down_after: Duration,
}

impl Default for HostTimeouts {
    fn default() -> Self {
        HostTimeouts {
            heartbeat_interval: Duration::from_secs(2),
            not_ready_after: Duration::from_secs(10),
            down_after: Duration::from_secs(30),
        }
    }
}

/// A host's state: `last_heartbeat` (none: never seen) judged from `watching_since`
/// at the earliest (one grace period after the controller started).
pub fn state_of(
    last_heartbeat: Option<Timestamp>,
    watching_since: Timestamp,
    now: Timestamp,
    t: &HostTimeouts,
) -> HostState {
    let from = last_heartbeat.map_or(watching_since, |h| h.max(watching_since));
    let silent = now.duration_since(from);
    let silent = Duration::try_from(silent).unwrap_or_default();
    if silent >= t.down_after {
        HostState::Down
    } else if silent >= t.not_ready_after {
        HostState::NotReady
    } else {
        HostState::Ready
    }
}

/// What may be placed on a host: its configured capacity, or the overcommitted default.
pub fn capacity(h: &HostRecord) -> Resources {
    Resources {
        vcpus: h
            .capacity_vcpus
            .map_or(u64::from(h.vcpus.max(1)) * CPU_OVERCOMMIT, u64::from),
        memory_mb: h
            .capacity_memory_mb
            .unwrap_or(h.memory_mb.max(512) * MEMORY_OVERCOMMIT),
        instances: h.max_instances.unwrap_or(u64::MAX),
    }
}

/// What the instance records place on each host (by lower-case host name), deleting
/// ones included until they are gone.
pub fn allocated<'a>(
    instances: impl IntoIterator<Item = &'a InstanceRecord>,
) -> HashMap<String, Resources> {
    let mut out: HashMap<String, Resources> = HashMap::new();
    for i in instances {
        let a = out.entry(i.host.to_ascii_lowercase()).or_default();
        a.vcpus += u64::from(i.launch.vcpus);
        a.memory_mb += i.launch.memory_mb;
        a.instances += 1;
    }
    out
}

/// The hosts as placement sees them.
pub fn slots(
    hosts: &[HostRecord],
    states: &HashMap<String, HostState>,
    allocated: &HashMap<String, Resources>,
) -> Vec<HostSlot> {
    hosts
        .iter()
        .map(|h| {
            let key = h.name.to_ascii_lowercase();
            let cap = capacity(h);
            let used = allocated.get(&key).copied().unwrap_or_default();
            let mut free = cap;
            free.take(&used);
            HostSlot {
                name: h.name.clone(),
                zone: h.zone.clone(),
                fault_domain: h.fault_domain.unwrap_or(0),
                state: states.get(&key).copied().unwrap_or(HostState::Ready),
                cordoned: h.cordoned || h.draining,
                draining: h.draining,
                free,
            }
        })
        .collect()
}

/// Host states by host name, from `hoststate/…` records and their keys.
pub(crate) fn states_by_host<'a>(
    records: impl IntoIterator<Item = (&'a str, &'a HostStateRecord)>,
) -> HashMap<String, HostState> {
    records
        .into_iter()
        .map(|(key, s)| (keys::path_of(keys::HOST_STATE, key).to_string(), s.state))
        .collect()
}

/// The hosts with their recorded states and the room the instances of every set leave.
pub(crate) fn current(
    hosts: &Reader<HostRecord>,
    states: &Reader<HostStateRecord>,
    instances: &Reader<InstanceRecord>,
) -> Vec<HostSlot> {
    let records: Vec<HostRecord> = hosts.snapshot().values().map(|h| h.value.clone()).collect();
    let states = states.snapshot();
    let states = states_by_host(states.iter().map(|(key, s)| (key.as_str(), &s.value)));
    let instances = instances.snapshot();
    slots(
        &records,
        &states,
        &allocated(instances.values().map(|i| &i.value)),
    )
}

/// Judges every host from its heartbeats and records the states that changed (with an
/// event each). A host recorded Down stays Down until it calls in again, whatever the
/// grace period. Returns whether anything was written.
pub(crate) async fn judge(
    store: &dyn Store,
    hosts: &Reader<HostRecord>,
    heartbeats: &Reader<Heartbeat>,
    states: &Reader<HostStateRecord>,
    watching_since: Timestamp,
    now: Timestamp,
    t: &HostTimeouts,
) -> Result<bool, KvError> {
    let mut txn = Vec::new();
    for (_, h) in hosts.snapshot().iter() {
        let name = &h.value.name;
        let last = heartbeats
            .get(&keys::heartbeat_key(name))
            .and_then(|b| b.value.at.parse::<Timestamp>().ok());
        let key = host_state_key(name);
        let stored = states.get(&key);
        let mut state = state_of(last, watching_since, now, t);
        if let Some(s) = &stored {
            let since = s.value.since.parse::<Timestamp>().ok();
            let silent_since_down = last.is_none_or(|l| since.is_some_and(|d| l <= d));
            if s.value.state == HostState::Down && silent_since_down {
                state = HostState::Down;
            }
            if s.value.state == state {
                continue;
            }
        }
        let message = match state {
            HostState::Ready => format!("Host {name} is Ready."),
            HostState::NotReady => format!(
                "Host {name} is NotReady: no heartbeat for {} s.",
                t.not_ready_after.as_secs()
            ),
            HostState::Down => format!(
                "Host {name} is Down: no heartbeat for {} s; its instances are replaced on other hosts.",
                t.down_after.as_secs()
            ),
        };
        tracing::info!(host = %name, state = %state, "host state");
        let mut rec = stored.as_ref().map_or_else(
            || HostStateRecord {
                state,
                since: String::new(),
                events: Vec::new(),
            },
            |s| s.value.clone(),
        );
        rec.state = state;
        rec.since = arm_time(now);
        push_event(&mut rec, arm_time(now), message, None);
        let expect = stored.map_or(Expect::Absent, |s| Expect::ModRevision(s.revision));
        txn.push(kv::put_op(key, &rec, expect));
    }
    if txn.is_empty() {
        return Ok(false);
    }
    match store.txn(txn).await {
        Ok(_) | Err(shoal_store::StoreError::Conflict { .. }) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

fn push_event(
    rec: &mut HostStateRecord,
    time: String,
    message: String,
    resource_id: Option<String>,
) {
    rec.events.push(HostEvent {
        time,
        message,
        resource_id,
    });
    if rec.events.len() > EVENTS_KEPT {
        let extra = rec.events.len() - EVENTS_KEPT;
        rec.events.drain(..extra);
    }
}

/// The writes that make lost instances visible: each one's status says `lost` (so
/// balancers drop it at once and the instance view shows it), its health is forgotten,
/// and the host it was lost with records where it went.
pub(crate) fn lost_writes(
    lost: &[Lost],
    records: &[InstanceRecord],
    statuses: &HashMap<u64, InstanceStatus>,
    states: &Reader<HostStateRecord>,
    now: &str,
) -> Vec<TxnOp> {
    let mut txn = Vec::new();
    let mut events: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for l in lost {
        let Some(rec) = records.iter().find(|r| r.instance_id == l.instance_id) else {
            continue;
        };
        let already = statuses
            .get(&l.instance_id)
            .is_some_and(|s| s.state == InstanceState::Lost);
        if already && l.moved_to.is_none() {
            continue;
        }
        let message = match &l.moved_to {
            Some(to) => format!(
                "Lost with host {} (Down); placed again on host {to} (epoch {}).",
                l.host,
                rec.epoch + 1
            ),
            None => format!(
                "Lost with host {} (Down); no other host can take it yet.",
                l.host
            ),
        };
        let status = InstanceStatus {
            state: InstanceState::Lost,
            host: l.host.clone(),
            launch_generation: rec.launch.generation,
            restart_gen: rec.restart_gen,
            reimage_gen: rec.reimage_gen,
            address: None,
            port: None,
            pid: None,
            message: Some(message.clone()),
            restarts: 0,
            since: now.to_string(),
            limits: None,
            network: None,
        };
        txn.push(kv::put_op(rec.status_key(), &status, Expect::Any));
        txn.push(kv::delete_op(
            health_key(&rec.vmss, rec.instance_id),
            Expect::Any,
        ));
        events.entry(l.host.clone()).or_default().push((
            format!(
                "Instance {} of {}: {message}",
                rec.instance_id, rec.vmss.name
            ),
            rec.vmss.id(),
        ));
    }
    for (host, messages) in events {
        let key = host_state_key(&host);
        let Some(s) = states.get(&key) else { continue };
        let mut rec = s.value.clone();
        for (m, id) in messages {
            push_event(&mut rec, now.to_string(), m, Some(id));
        }
        txn.push(kv::put_op(key, &rec, Expect::ModRevision(s.revision)));
    }
    txn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    #[test]
    fn silence_makes_a_host_not_ready_then_down_after_one_grace_period() {
        let t = HostTimeouts::default();
        assert_eq!(state_of(Some(at(0)), at(0), at(9), &t), HostState::Ready);
        assert_eq!(
            state_of(Some(at(0)), at(0), at(10), &t),
            HostState::NotReady
        );
        assert_eq!(state_of(Some(at(0)), at(0), at(30), &t), HostState::Down);
        // A controller that started at 100 gives every host until 130.
        assert_eq!(
            state_of(Some(at(0)), at(100), at(129), &t),
            HostState::NotReady
        );
        assert_eq!(state_of(None, at(100), at(105), &t), HostState::Ready);
        assert_eq!(state_of(None, at(100), at(130), &t), HostState::Down);
    }
}
