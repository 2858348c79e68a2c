//! How the rolling-upgrade planner judges an instance's health: a batch member's
//! [`verdict`] (healthy, unhealthy, still waiting) and whether an instance counts as
//! healthy for `maxUnhealthyInstancePercent`. Pure: the planner's [`Input`] in, a verdict
//! out.

use jiff::Timestamp;
use shoal_model::records::{HealthState, InstanceRecord, VmssRecord};
use shoal_model::upgrade_policy::health_sources;

use super::plan::Input;

/// How one upgraded instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy,
    Waiting,
}

/// Seconds after an upgraded instance runs before its health source's word counts: the
/// Application Health extension's `gracePeriod` (default `intervalInSeconds ×
/// numberOfProbes`), or the load balancer probe's `intervalInSeconds × numberOfProbes`
/// (`probe_grace`, ten seconds when unknown). A Healthy report older than
/// the instance's restart is believed only after this too (the balancer has had time to
/// see the new process).
pub fn grace_secs(set: &VmssRecord, probe_grace: Option<u64>) -> u64 {
    let ext = set
        .model
        .profile()
        .and_then(|p| p.extension_profile.as_ref())
        .and_then(|e| e.get("extensions"))
        .and_then(|e| e.as_array())
        .and_then(|exts| {
            exts.iter().find(|e| {
                e.pointer("/properties/type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.to_ascii_lowercase().starts_with("applicationhealth"))
            })
        })
        .and_then(|e| e.pointer("/properties/settings"))
        .cloned();
    match ext {
        Some(s) => s["gracePeriod"].as_u64().unwrap_or_else(|| {
            s["intervalInSeconds"].as_u64().unwrap_or(5) * s["numberOfProbes"].as_u64().unwrap_or(1)
        }),
        None => probe_grace.unwrap_or(10),
    }
    .clamp(1, 14_400)
}

pub(crate) fn secs_since(t: &str, now: Timestamp) -> i64 {
    t.parse::<Timestamp>()
        .map(|t| now.duration_since(t).as_secs())
        .unwrap_or(i64::MAX)
}

/// How an instance stands on its desired record (`since`: when its batch started).
pub fn verdict(
    input: &Input<'_>,
    rec: &InstanceRecord,
    batch_started: &str,
    grace: u64,
) -> Verdict {
    let Some(status) = input.statuses.get(&rec.instance_id) else {
        return Verdict::Waiting;
    };
    if status.failed_for(rec) {
        return Verdict::Unhealthy;
    }
    if !status.satisfies(rec) {
        return Verdict::Waiting;
    }
    let (probe, extension) = health_sources(&input.set.model);
    if !probe && !extension {
        return Verdict::Healthy;
    }
    let running_for = secs_since(&status.since, input.now);
    let settled = running_for >= grace as i64;
    match input.health.get(&rec.instance_id) {
        Some(h) if h.state == HealthState::Healthy => {
            // A report from before the batch started speaks of the old process.
            let fresh = match (
                h.since.parse::<Timestamp>(),
                batch_started.parse::<Timestamp>(),
            ) {
                (Ok(seen), Ok(started)) => seen >= started,
                _ => false,
            };
            if fresh || settled {
                Verdict::Healthy
            } else {
                Verdict::Waiting
            }
        }
        Some(h) if h.state == HealthState::Unhealthy && settled => Verdict::Unhealthy,
        _ => Verdict::Waiting,
    }
}

/// Whether an instance counts as healthy for `maxUnhealthyInstancePercent` (Unknown and
/// no report count as unhealthy, as Azure counts them).
pub(crate) fn healthy_now(input: &Input<'_>, rec: &InstanceRecord) -> bool {
    let running = input
        .statuses
        .get(&rec.instance_id)
        .is_some_and(|s| s.satisfies(rec));
    let (probe, extension) = health_sources(&input.set.model);
    if !probe && !extension {
        return running;
    }
    input
        .health
        .get(&rec.instance_id)
        .is_some_and(|h| h.state == HealthState::Healthy)
}
