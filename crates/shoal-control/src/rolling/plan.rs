//! The rolling-upgrade planner: one set's state in, the next step out. Pure (no I/O, no
//! clock: `now` comes in).
//!
//! How a step is chosen ([`next_step`]):
//! - No upgrade running: in `Rolling` mode, a set whose launch generation is newer than
//!   the last upgrade's target, with unprotected instances behind it, starts one.
//! - A batch in flight is judged member by member ([`verdict`]): healthy (running on the
//!   new model, its health source says Healthy), failed (the agent gave up, or its health
//!   source says Unhealthy after the grace period, or the health timeout ran out), or
//!   still waiting (Initializing, Unknown, no report yet). With `maxSurge` the batch's
//!   new instances are judged instead, and the members are deleted once all are healthy.
//!   When every member is decided the batch ends, and `maxUnhealthyUpgradedInstancePercent`
//!   is checked over every instance upgraded so far (a breach is strictly more): on a
//!   breach the upgrade is `Faulted` — after rolling the failed instances back to their
//!   previous model when `rollbackFailedInstancesOnPolicyBreach`.
//! - No batch in flight: a cancel ends the upgrade `Cancelled`; nothing left to do ends it
//!   `Completed`; otherwise, after `pauseTimeBetweenBatches`, `maxUnhealthyInstancePercent`
//!   is checked over the whole set and the next batch starts: `max(1, floor(N × pct /
//!   100))` instances, unhealthy ones first when `prioritizeUnhealthyInstances`, from one
//!   zone unless `enableCrossZoneUpgrade`, spread over fault domains, never an instance
//!   protected from scale-set actions. In place, the members take the new launch spec (the
//!   agent drains each from the balancers before it stops it); with `maxSurge`, the set
//!   holds `count` instances more (created on the new model by the placement planner).

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use shoal_model::records::{HealthRecord, InstanceRecord, InstanceStatus, LaunchSpec, VmssRecord};
use shoal_model::upgrade_policy::{RollingPolicy, RollingStatusCode};
use shoal_model::vmss::UpgradeMode;
use shoal_model::ArmError;

use super::health::{grace_secs, healthy_now, secs_since, verdict, Verdict};
use super::{Batch, Member, RollingUpgrade, Surge};
use crate::clock::arm_time;
use crate::planner::placement::launch_for;

/// Everything the planner looks at for one set.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub set: &'a VmssRecord,
    pub instances: &'a [InstanceRecord],
    pub statuses: &'a HashMap<u64, InstanceStatus>,
    pub health: &'a HashMap<u64, HealthRecord>,
    pub record: Option<&'a RollingUpgrade>,
    pub now: Timestamp,
    /// The set's load-balancer probe: `intervalInSeconds × numberOfProbes`, if known.
    pub probe_grace: Option<u64>,
    /// How many more instances of the set's size the hosts can take (`None`: no limit
    /// known). With `maxSurge`, a batch whose replacements do not fit is upgraded in place.
    pub surge_room: Option<usize>,
}

/// What to write next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// The upgrade record as it should be (`None`: unchanged).
    pub record: Option<RollingUpgrade>,
    /// Instances to move to these launch specs (a batch, or a rollback).
    pub launches: Vec<(u64, LaunchSpec)>,
    /// Instances to delete (`maxSurge`: the members a batch replaced).
    pub delete: Vec<u64>,
    /// Instances to restart (an extension upgrade's batch).
    pub restarts: Vec<u64>,
    /// The set's own launch spec goes back to this: an automatic OS upgrade was rolled
    /// back, so instances created later (a scale-out, a repair) take the last good
    /// version, not the one that failed.
    pub set_launch: Option<LaunchSpec>,
    /// Look again after this many seconds even if nothing changes (a timeout or a pause
    /// runs out).
    pub wake_in_secs: Option<u64>,
}

impl Step {
    pub fn is_empty(&self) -> bool {
        self.record.is_none()
            && self.launches.is_empty()
            && self.delete.is_empty()
            && self.restarts.is_empty()
            && self.set_launch.is_none()
    }

    fn wait(secs: u64) -> Step {
        Step {
            wake_in_secs: Some(secs.max(1)),
            ..Step::default()
        }
    }
}

/// `max(1, floor(n × pct / 100))`.
pub fn batch_size(n: usize, pct: u32) -> usize {
    (n * pct as usize / 100).max(1)
}

/// The next batch from `pending`: unhealthy first when the policy says so, one zone
/// unless cross-zone, spread over fault domains, at most `size`.
pub fn choose_batch<'a>(
    pending: &[&'a InstanceRecord],
    policy: &RollingPolicy,
    size: usize,
    unhealthy: &dyn Fn(&InstanceRecord) -> bool,
) -> Vec<&'a InstanceRecord> {
    let first = |i: &InstanceRecord| policy.prioritize_unhealthy_instances && unhealthy(i);
    let mut order: Vec<&InstanceRecord> = pending.to_vec();
    order.sort_by_key(|i| (!first(i), i.zone.clone(), i.instance_id));
    let Some(lead) = order.first() else {
        return Vec::new();
    };
    if !policy.enable_cross_zone_upgrade {
        let zone = lead.zone.clone();
        order.retain(|i| i.zone == zone);
    }
    // Round-robin over fault domains: the k-th instance of each domain before the
    // (k+1)-th of any.
    let mut rank: BTreeMap<u32, usize> = BTreeMap::new();
    let mut keyed: Vec<(bool, usize, u32, u64, &InstanceRecord)> = order
        .into_iter()
        .map(|i| {
            let r = rank.entry(i.fault_domain).or_default();
            *r += 1;
            (!first(i), *r, i.fault_domain, i.instance_id, i)
        })
        .collect();
    keyed.sort_by_key(|k| (k.0, k.1, k.2, k.3));
    keyed.into_iter().take(size).map(|k| k.4).collect()
}

fn breach(code: &str, message: String) -> ArmError {
    ArmError::new(409, code, message)
}

/// Plans the next step of `input.set`'s rolling upgrade.
pub fn next_step(input: &Input<'_>) -> Step {
    let set = input.set;
    let now = arm_time(input.now);
    if set.deleting {
        return Step::default();
    }
    let active: Vec<&InstanceRecord> = input.instances.iter().filter(|i| !i.deleting).collect();
    let behind = |i: &&InstanceRecord| {
        i.launch.generation < set.launch.generation && !i.protection.protect_from_scale_set_actions
    };
    let ours = |r: &&RollingUpgrade| r.unique_id == set.model.props().unique_id;
    let record = input.record.filter(ours);

    let Some(rec) = record.filter(|r| r.is_running()) else {
        let newer = record.is_none_or(|r| set.launch.generation > r.target_generation);
        if set.model.upgrade_mode() == UpgradeMode::Rolling && newer && active.iter().any(behind) {
            return Step {
                record: Some(start(set, &active, "User", &now, record)),
                ..Step::default()
            };
        }
        return Step::default();
    };
    let mut r = rec.clone();
    r.target_generation = r.target_generation.max(set.launch.generation);
    r.target_image_version = set.launch.image_version.clone();

    if r.code == RollingStatusCode::RollingBack {
        return rolling_back(input, r, &now);
    }
    if let Some(batch) = rec.batch.clone() {
        return judge_batch(input, r, batch, &now);
    }

    // An extension upgrade restarts every unprotected instance once; a model upgrade
    // moves those behind the model.
    let restart_all = |i: &&InstanceRecord| {
        !i.protection.protect_from_scale_set_actions && !r.upgraded.contains(&i.instance_id)
    };
    let pending: Vec<&InstanceRecord> = active
        .iter()
        .copied()
        .filter(|i| {
            if r.extensions {
                restart_all(i)
            } else {
                behind(i)
            }
        })
        .filter(|i| !r.failed.contains(&i.instance_id))
        .collect();
    r.pending = pending.len() as u64;
    if r.cancel_requested {
        r.code = RollingStatusCode::Cancelled;
        r.end_time = Some(now.clone());
        r.remember(&now);
        r.note(
            &now,
            format!(
                "Cancelled after {} batch(es): no new batch starts",
                r.batches_done
            ),
        );
        return Step {
            record: Some(r),
            ..Step::default()
        };
    }
    if pending.is_empty() {
        r.code = RollingStatusCode::Completed;
        r.end_time = Some(now.clone());
        r.remember(&now);
        r.note(
            &now,
            format!(
                "Completed: {} instance(s) upgraded, {} failed",
                r.upgraded.len(),
                r.failed.len()
            ),
        );
        return Step {
            record: Some(r),
            ..Step::default()
        };
    }
    if let Some(at) = &r.next_batch_at {
        let left = -secs_since(at, input.now);
        if left > 0 {
            return Step::wait(left as u64);
        }
    }
    // Before each batch: the whole set's health.
    let n = active.len();
    let unhealthy: Vec<u64> = active
        .iter()
        .filter(|i| !healthy_now(input, i))
        .map(|i| i.instance_id)
        .collect();
    if unhealthy.len() * 100 > r.policy.max_unhealthy_instance_percent as usize * n {
        let code = if r.batches_done == 0 {
            "MaxUnhealthyInstancePercentExceededBeforeRollingUpgrade"
        } else {
            "MaxUnhealthyInstancePercentExceededInRollingUpgrade"
        };
        let message = format!(
            "{} of {n} instances are unhealthy, more than maxUnhealthyInstancePercent ({}%): the rolling upgrade stopped before batch {}. Unhealthy: {:?}.",
            unhealthy.len(),
            r.policy.max_unhealthy_instance_percent,
            r.batches_done + 1,
            unhealthy
        );
        return fault(r, breach(code, message), &now);
    }
    let size = batch_size(n, r.policy.max_batch_instance_percent);
    let is_unhealthy = |i: &InstanceRecord| unhealthy.contains(&i.instance_id);
    let chosen = choose_batch(&pending, &r.policy, size, &is_unhealthy);
    let number = r.batches_done + 1;
    r.total_batches = r.total_batches.max(number);
    let members: Vec<Member> = chosen
        .iter()
        .map(|i| Member {
            instance_id: i.instance_id,
            previous: i.launch.clone(),
        })
        .collect();
    let ids: Vec<u64> = members.iter().map(|m| m.instance_id).collect();
    let mut step = Step::default();
    let surge_wanted = r.policy.max_surge && !r.extensions;
    let room = input.surge_room.is_none_or(|room| room >= ids.len());
    let surge = (surge_wanted && room).then_some(Surge {
        first_new_id: set.next_instance_id,
        count: ids.len() as u64,
    });
    if surge_wanted && !room {
        // Azure's quota fallback: the batch is upgraded in place instead.
        r.note(
            &now,
            format!(
                "Batch {number}: the hosts have no room for {} new instance(s), so maxSurge falls back to an in-place upgrade",
                ids.len()
            ),
        );
    }
    if surge.is_some() {
        r.note(
            &now,
            format!(
                "Batch {number} of {}: creating {} instance(s) on the new model to replace {ids:?}",
                r.total_batches,
                ids.len()
            ),
        );
    } else if r.extensions {
        r.note(
            &now,
            format!(
                "Batch {number} of {}: draining and restarting instances {ids:?} with the new extensions",
                r.total_batches
            ),
        );
        step.restarts = ids.clone();
    } else {
        r.note(
            &now,
            format!(
                "Batch {number} of {}: draining and upgrading instances {ids:?}",
                r.total_batches
            ),
        );
        step.launches = members
            .iter()
            .map(|m| (m.instance_id, launch_for(set, &m.previous)))
            .collect();
    }
    r.pending = r.pending.saturating_sub(ids.len() as u64);
    r.batch = Some(Batch {
        number,
        started: now.clone(),
        members,
        surge,
    });
    r.next_batch_at = None;
    step.record = Some(r);
    step
}

fn start(
    set: &VmssRecord,
    active: &[&InstanceRecord],
    started_by: &str,
    now: &str,
    previous: Option<&RollingUpgrade>,
) -> RollingUpgrade {
    let policy = set.model.rolling_policy();
    let pending = active
        .iter()
        .filter(|i| {
            i.launch.generation < set.launch.generation
                && !i.protection.protect_from_scale_set_actions
        })
        .count();
    let size = batch_size(active.len(), policy.max_batch_instance_percent);
    let mut r = RollingUpgrade {
        vmss: set.vmss.clone(),
        unique_id: set.model.props().unique_id.clone(),
        policy,
        code: RollingStatusCode::RollingForward,
        start_time: now.to_string(),
        last_action: "Start".into(),
        last_action_time: now.to_string(),
        end_time: None,
        started_by: started_by.into(),
        target_generation: set.launch.generation,
        target_image_version: set.launch.image_version.clone(),
        cancel_requested: false,
        total_batches: pending.div_ceil(size) as u32,
        batches_done: 0,
        batch: None,
        upgraded: Vec::new(),
        failed: Vec::new(),
        rolled_back: Vec::new(),
        pending: pending as u64,
        next_batch_at: None,
        error: None,
        operations: Vec::new(),
        log: Vec::new(),
        automatic_rollback: false,
        extensions: false,
        bad_versions: previous.map(|p| p.bad_versions.clone()).unwrap_or_default(),
        history: previous.map(|p| p.history.clone()).unwrap_or_default(),
    };
    r.note(
        now,
        format!(
            "Started: {pending} instance(s) to move to image version {} (model generation {}) in batches of {size}",
            set.launch.image_version, set.launch.generation
        ),
    );
    r
}

/// A new upgrade record for `set` as `extensionRollingUpgrade` starts it: every
/// unprotected instance is restarted once, batch by batch, so it takes the set's current
/// `extensionProfile`.
pub fn started_extensions(
    set: &VmssRecord,
    instances: &[InstanceRecord],
    previous: Option<&RollingUpgrade>,
    now: Timestamp,
) -> RollingUpgrade {
    let active: Vec<&InstanceRecord> = instances.iter().filter(|i| !i.deleting).collect();
    let previous = previous.filter(|p| p.unique_id == set.model.props().unique_id);
    let now = arm_time(now);
    let mut r = start(set, &active, "User", &now, previous);
    let pending = active
        .iter()
        .filter(|i| !i.protection.protect_from_scale_set_actions)
        .count();
    let size = batch_size(active.len(), r.policy.max_batch_instance_percent);
    r.extensions = true;
    r.pending = pending as u64;
    r.total_batches = pending.div_ceil(size) as u32;
    r.note(
        &now,
        format!("Extension upgrade: {pending} instance(s) to restart with the set's extensions"),
    );
    r
}

/// A new upgrade record for `set` as `osRollingUpgrade` (`started_by` `User`) or an
/// automatic OS upgrade (`Platform`) starts it, whatever the mode. `previous` is the
/// set's last record (its history and bad versions carry over).
pub fn started(
    set: &VmssRecord,
    instances: &[InstanceRecord],
    previous: Option<&RollingUpgrade>,
    started_by: &str,
    now: Timestamp,
) -> RollingUpgrade {
    let active: Vec<&InstanceRecord> = instances.iter().filter(|i| !i.deleting).collect();
    let previous = previous.filter(|p| p.unique_id == set.model.props().unique_id);
    let mut r = start(set, &active, started_by, &arm_time(now), previous);
    if started_by == "Platform" {
        r.automatic_rollback = set
            .model
            .automatic_os_upgrade()
            .is_some_and(|p| p.disable_automatic_rollback != Some(true));
    }
    r
}

fn fault(mut r: RollingUpgrade, error: ArmError, now: &str) -> Step {
    r.note(now, format!("Faulted: {}", error.message));
    r.code = RollingStatusCode::Faulted;
    r.end_time = Some(now.to_string());
    r.error = Some(error);
    r.batch = None;
    if r.automatic_rollback && !r.rolled_back.is_empty() {
        // Not tried again until a newer version appears.
        r.bad_versions.push(r.target_image_version.clone());
    }
    r.remember(now);
    Step {
        record: Some(r),
        ..Step::default()
    }
}

fn judge_batch(input: &Input<'_>, mut r: RollingUpgrade, batch: Batch, now: &str) -> Step {
    let set = input.set;
    let grace = grace_secs(set, input.probe_grace);
    let timeout = set.model.rolling_health_timeout_secs();
    let elapsed = secs_since(&batch.started, input.now).max(0) as u64;
    let timed_out = elapsed >= timeout;
    let by_id = |id: u64| input.instances.iter().find(|i| i.instance_id == id);

    // Who is judged: the members in place, or the surge's new instances.
    let judged: Vec<u64> = match &batch.surge {
        Some(s) => (s.first_new_id..s.first_new_id + s.count).collect(),
        None => batch.members.iter().map(|m| m.instance_id).collect(),
    };
    let mut healthy = Vec::new();
    let mut failed = Vec::new();
    let mut waiting = false;
    for id in &judged {
        let v = match (by_id(*id), batch.surge.is_some()) {
            (Some(i), _) if !i.deleting => verdict(input, i, &batch.started, grace),
            // A replacement deleted meanwhile failed; one not created yet is awaited.
            (Some(_), true) => Verdict::Unhealthy,
            (None, true) => Verdict::Waiting,
            // A member deleted meanwhile (a scale-in) is no longer the upgrade's concern.
            (_, false) => continue,
        };
        match v {
            Verdict::Healthy => healthy.push(*id),
            Verdict::Unhealthy => failed.push(*id),
            Verdict::Waiting if timed_out => failed.push(*id),
            Verdict::Waiting => waiting = true,
        }
    }
    if waiting {
        return Step::wait(timeout.saturating_sub(elapsed).min(grace));
    }
    let mut step = Step::default();
    let member_ids: Vec<u64> = batch.members.iter().map(|m| m.instance_id).collect();
    if batch.surge.is_some() {
        if failed.is_empty() {
            // The replacements serve: the old instances go (drained by their agents).
            step.delete = member_ids.clone();
            r.upgraded.extend(healthy.iter().copied());
            r.note(
                now,
                format!(
                    "Batch {}: new instances {healthy:?} are healthy; deleting {member_ids:?}",
                    batch.number
                ),
            );
        } else {
            // The old instances stay; the unhealthy replacements go.
            step.delete = judged.clone();
            r.upgraded.extend(healthy.iter().copied());
            r.failed.extend(failed.iter().copied());
            r.note(
                now,
                format!(
                    "Batch {}: new instances {failed:?} did not become healthy within {timeout} s; they are deleted and {member_ids:?} stay",
                    batch.number
                ),
            );
        }
    } else {
        r.upgraded.extend(healthy.iter().copied());
        r.failed.extend(failed.iter().copied());
        r.note(
            now,
            format!(
                "Batch {} done: {} healthy, {} unhealthy{}",
                batch.number,
                healthy.len(),
                failed.len(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" {failed:?}")
                }
            ),
        );
    }
    r.batch = None;
    r.batches_done += 1;
    let done = r.upgraded.len() + r.failed.len();
    if r.failed.len() * 100 > r.policy.max_unhealthy_upgraded_instance_percent as usize * done {
        let error = breach(
            "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade",
            format!(
                "{} of {done} upgraded instances are unhealthy, more than maxUnhealthyUpgradedInstancePercent ({}%): the rolling upgrade stopped after batch {}.",
                r.failed.len(),
                r.policy.max_unhealthy_upgraded_instance_percent,
                batch.number
            ),
        );
        let back: Vec<&Member> = batch
            .members
            .iter()
            .filter(|m| failed.contains(&m.instance_id))
            .collect();
        if (r.policy.rollback_failed_instances_on_policy_breach || r.automatic_rollback)
            && batch.surge.is_none()
            && !back.is_empty()
        {
            r.note(
                now,
                format!(
                    "{} Rolling instances {:?} back to their previous model",
                    error.message,
                    back.iter().map(|m| m.instance_id).collect::<Vec<_>>()
                ),
            );
            step.launches = back
                .iter()
                .map(|m| (m.instance_id, m.previous.clone()))
                .collect();
            r.rolled_back = back.iter().map(|m| m.instance_id).collect();
            r.code = RollingStatusCode::RollingBack;
            r.error = Some(error);
            // The rollback is waited on as a batch of its own.
            r.batch = Some(Batch {
                number: batch.number,
                started: now.to_string(),
                members: back.into_iter().cloned().collect(),
                surge: None,
            });
            step.record = Some(r);
            return step;
        }
        let mut s = fault(r, error, now);
        s.delete = step.delete;
        return s;
    }
    let pause = r.policy.pause_secs();
    if pause > 0 {
        r.next_batch_at = Some(arm_time(
            input.now + jiff::SignedDuration::from_secs(pause as i64),
        ));
        step.wake_in_secs = Some(pause);
    }
    step.record = Some(r);
    step
}

/// The rollback of a faulted batch: done when its instances run their previous model
/// again (or the health timeout runs out); then the upgrade is `Faulted`.
fn rolling_back(input: &Input<'_>, r: RollingUpgrade, now: &str) -> Step {
    let Some(batch) = r.batch.clone() else {
        let error = r
            .error
            .clone()
            .unwrap_or_else(|| breach("RollbackFailed", "Rolled back.".into()));
        return fault(r, error, now);
    };
    let timeout = input.set.model.rolling_health_timeout_secs();
    let elapsed = secs_since(&batch.started, input.now).max(0) as u64;
    let back = batch.members.iter().all(|m| {
        input
            .instances
            .iter()
            .find(|i| i.instance_id == m.instance_id)
            .is_none_or(|i| {
                i.deleting
                    || input
                        .statuses
                        .get(&i.instance_id)
                        .is_some_and(|s| s.satisfies(i) || s.failed_for(i))
            })
    });
    if !back && elapsed < timeout {
        return Step::wait(timeout - elapsed);
    }
    let mut r = r;
    r.note(
        now,
        format!(
            "Rollback of {:?} done",
            batch
                .members
                .iter()
                .map(|m| m.instance_id)
                .collect::<Vec<_>>()
        ),
    );
    let error = r
        .error
        .clone()
        .unwrap_or_else(|| breach("RollbackFailed", "Rolled back.".into()));
    let automatic = r.automatic_rollback;
    let mut step = fault(r, error, now);
    // An automatic upgrade changed the set's model on its own: the rollback undoes that
    // too. (A user's model change stays: the user asked for it.)
    if automatic {
        step.set_launch = batch.members.first().map(|m| m.previous.clone());
    }
    step
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
