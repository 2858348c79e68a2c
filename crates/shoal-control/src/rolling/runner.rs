//! The thin runner the controller calls for each set it reconciles: plan the upgrade's
//! next step from the controller's caches ([`super::next_step`]) and apply it through the
//! command layer ([`crate::commands::RollingChange::Apply`]), guarded by the revisions
//! the caches held. A lost race writes nothing; the next reconcile plans again.

use std::borrow::Cow;
use std::collections::HashMap;

use jiff::Timestamp;
use shoal_model::records::{HealthRecord, InstanceRecord, InstanceStatus, VmssRecord};
use shoal_store::Store;

use super::{auto_os, next_step, Input, RollingUpgrade};
use crate::commands::{
    Command, CommandError, Executor, ImageResolver, RollingChange, RollingCommand,
};
use crate::kv::Versioned;
use crate::planner::{HostSlot, Resources};

/// What the controller's caches hold of one set.
pub struct Observed<'a> {
    pub set: &'a VmssRecord,
    pub records: &'a [InstanceRecord],
    /// The store revision each of `records` was read at, by instance id: the step is
    /// applied only if none has moved since.
    pub revisions: &'a HashMap<u64, u64>,
    pub statuses: &'a HashMap<u64, InstanceStatus>,
    pub health: &'a HashMap<u64, HealthRecord>,
    pub record: Option<&'a Versioned<RollingUpgrade>>,
    /// How many more instances of the set's size the hosts can take ([`surge_room`]).
    pub surge_room: Option<usize>,
}

/// The set as the placement planner must see it: with `maxSurge`, a batch's replacements
/// are held on top of the capacity until the instances they replace are deleted.
pub fn with_surge<'a>(set: &'a VmssRecord, record: Option<&RollingUpgrade>) -> Cow<'a, VmssRecord> {
    let extra = record
        .filter(|r| r.unique_id == set.model.props().unique_id)
        .map_or(0, RollingUpgrade::surge_extra);
    if extra == 0 {
        return Cow::Borrowed(set);
    }
    let mut s = set.clone();
    if let Some(sku) = s.model.sku.as_mut() {
        sku.capacity = Some(sku.capacity.unwrap_or(0) + extra as i64);
    }
    Cow::Owned(s)
}

/// How many more instances of `set`'s size the schedulable hosts can take.
pub fn surge_room(hosts: &[HostSlot], set: &VmssRecord) -> usize {
    let need = Resources::instance(set.launch.vcpus.max(1), set.launch.memory_mb.max(1));
    hosts
        .iter()
        .filter(|h| h.schedulable())
        .map(|h| {
            (h.free.vcpus / need.vcpus)
                .min(h.free.memory_mb / need.memory_mb)
                .min(h.free.instances)
        })
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .fold(0, usize::saturating_add)
}

/// Instances repairs must leave alone: the batch in flight.
pub fn in_flight(record: Option<&RollingUpgrade>) -> Vec<u64> {
    record
        .filter(|r| r.is_running())
        .map(RollingUpgrade::in_flight)
        .unwrap_or_default()
}

/// What one call did.
#[derive(Debug, Default)]
pub struct Advanced {
    pub wrote: bool,
    /// Look at the set again after this many seconds.
    pub wake_in_secs: Option<u64>,
}

/// Plans the set's next upgrade step and applies it; with nothing to do, starts an
/// automatic OS upgrade when the set wants one ([`super::auto_os`], which needs `images`).
pub async fn advance(
    executor: &Executor,
    images: Option<&dyn ImageResolver>,
    observed: &Observed<'_>,
    now: Timestamp,
) -> Result<Advanced, CommandError> {
    let in_flight = observed
        .record
        .is_some_and(|r| r.value.is_running() && r.value.batch.is_some());
    let probe_grace = match in_flight {
        true => probe_grace(executor.store(), observed.set).await,
        false => None,
    };
    let step = next_step(&Input {
        set: observed.set,
        instances: observed.records,
        statuses: observed.statuses,
        health: observed.health,
        record: observed.record.map(|r| &r.value),
        now,
        probe_grace,
        surge_room: observed.surge_room,
    });
    let wake_in_secs = step.wake_in_secs;
    if step.is_empty() {
        let record = observed.record.map(|r| &r.value);
        let wrote = match images {
            Some(images) => auto_os::check(executor, images, observed.set, record).await?,
            None => false,
        };
        return Ok(Advanced {
            wrote,
            wake_in_secs,
        });
    }
    let cmd = Command::Rolling(RollingCommand {
        vmss: observed.set.vmss.clone(),
        change: RollingChange::Apply {
            step: Box::new(step),
            record_revision: observed.record.map(|r| r.revision),
            instances: observed
                .records
                .iter()
                .filter_map(|r| {
                    Some(Versioned {
                        key: r.key(),
                        value: r.clone(),
                        revision: *observed.revisions.get(&r.instance_id)?,
                    })
                })
                .collect(),
        },
    });
    executor.execute(cmd).await?;
    Ok(Advanced {
        wrote: true,
        wake_in_secs,
    })
}

/// How long the set's load-balancer probe takes to see a broken instance:
/// `intervalInSeconds × numberOfProbes` (or `probeThreshold`) of the probe
/// `healthProbe.id` names, read from the balancer's record. `None` when the set names no
/// probe or it cannot be read.
async fn probe_grace(store: &dyn Store, set: &VmssRecord) -> Option<u64> {
    let id = set
        .model
        .profile()?
        .network_profile
        .as_ref()?
        .health_probe
        .as_ref()?
        .get("id")?
        .as_str()?
        .to_string();
    let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
    let (sub, rg, lb, probe) = match segs.as_slice() {
        [_, sub, _, rg, _, _, _, lb, _, probe] => (*sub, *rg, *lb, *probe),
        _ => return None,
    };
    let key = shoal_model::keys::resource(shoal_model::keys::LOAD_BALANCER, sub, rg, lb);
    let kv = store.get(&key).await.ok()??;
    let lb: serde_json::Value = serde_json::from_slice(&kv.value).ok()?;
    let p = lb["properties"]["probes"]
        .as_array()?
        .iter()
        .find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(probe))
        })?
        .get("properties")?
        .clone();
    let interval = p["intervalInSeconds"].as_u64().unwrap_or(5);
    let probes = p["numberOfProbes"]
        .as_u64()
        .or_else(|| p["probeThreshold"].as_u64())
        .unwrap_or(2);
    Some((interval * probes).max(1))
}
