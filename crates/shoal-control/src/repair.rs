//! Automatic repairs (`automaticRepairsPolicy`): which unhealthy instances to repair now.
//! Pure: the controller passes the set, its instances, their statuses and health, and
//! the time.
//!
//! As Azure documents it: an instance is repaired when it is running but unhealthy and
//! has been for the grace period (which also runs from its last state change); at most
//! 5 % of the set (one instance below 20) is under repair at once; instances protected
//! from scale-set actions are left alone; and when repairs keep failing the service
//! suspends itself, visible in `orchestrationServices` with the reason.
//!
//! A plan is applied as an instance command ([`RepairPlan::command`]): each repair is
//! the instance action of its kind (`Replace` deletes without lowering the capacity).

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_model::duration::parse_iso8601;
use shoal_model::ids::VmssRef;
use shoal_model::records::{
    HealthRecord, HealthState, InstanceRecord, InstanceState, InstanceStatus, PowerIntent,
    VmssRecord,
};
use shoal_model::vmss::RepairAction;

use crate::commands::{instances, Command, InstanceChange, InstanceCommand};

/// Repairs of one instance within this window count toward suspension.
const FAILURE_WINDOW_SECS: i64 = 3600;
/// Repairs of the same instance within the window after which the service suspends.
const MAX_REPAIRS_PER_INSTANCE: usize = 3;

/// What the controller keeps about repairs in the set's `services` value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairState {
    /// Recent repairs: (instance id, time, action).
    #[serde(default)]
    pub history: Vec<RepairEvent>,
    /// Why the service is suspended, if it is.
    #[serde(default)]
    pub suspended: Option<String>,
    #[serde(default)]
    pub last_change: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairEvent {
    pub instance_id: u64,
    /// The instance that replaced it (Replace) or the same id.
    pub time: String,
    pub action: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairPlan {
    /// The instances to repair now, and how.
    pub repairs: Vec<(u64, RepairAction)>,
    /// The same repairs applied to the records the plan was made from (deleting, or a
    /// bumped restart/reimage counter), by the instance-action rule
    /// ([`crate::commands::instances::apply`]).
    pub update: Vec<InstanceRecord>,
    pub state: RepairState,
    /// When to look again (a grace period is running out).
    pub wake_in_secs: Option<u64>,
}

impl RepairPlan {
    /// Whether the plan changes anything stored: repairs, or the service's state.
    pub fn has_writes(&self, set: &VmssRecord) -> bool {
        !self.repairs.is_empty() || self.state != state_of(set)
    }

    /// The plan as the instance command that applies it.
    pub fn command(&self, vmss: &VmssRef) -> Command {
        Command::Instances(InstanceCommand {
            vmss: vmss.clone(),
            change: InstanceChange::Repair {
                repairs: self.repairs.clone(),
                state: self.state.clone(),
            },
        })
    }
}

pub fn state_of(set: &VmssRecord) -> RepairState {
    serde_json::from_value(set.services.get("repairs").cloned().unwrap_or(Value::Null))
        .unwrap_or_default()
}

fn secs_since(now: Timestamp, t: &str) -> Option<i64> {
    t.parse::<Timestamp>()
        .ok()
        .map(|t| now.duration_since(t).as_secs())
}

/// Whether the RFC 3339 time `t` is later than `than`.
fn changed_after(t: &str, than: &str) -> bool {
    match (t.parse::<Timestamp>(), than.parse::<Timestamp>()) {
        (Ok(t), Ok(than)) => t > than,
        _ => false,
    }
}

pub fn plan_repairs(
    set: &VmssRecord,
    instances: &[InstanceRecord],
    statuses: &HashMap<u64, InstanceStatus>,
    health: &HashMap<u64, HealthRecord>,
    now: Timestamp,
) -> RepairPlan {
    let mut state = state_of(set);
    let now_text = crate::clock::arm_time(now);
    state
        .history
        .retain(|e| secs_since(now, &e.time).is_some_and(|s| s <= FAILURE_WINDOW_SECS));
    let Some(policy) = set
        .model
        .props()
        .automatic_repairs_policy
        .as_ref()
        .filter(|p| p.enabled == Some(true))
    else {
        // Turning the policy off (or never on) clears a suspension.
        if state.suspended.is_some() {
            state.suspended = None;
            state.last_change = Some(now_text);
        }
        return RepairPlan {
            state,
            ..Default::default()
        };
    };
    if state.suspended.is_some() || set.deleting {
        return RepairPlan {
            state,
            ..Default::default()
        };
    }
    let grace = policy
        .grace_period
        .as_deref()
        .and_then(parse_iso8601)
        .unwrap_or(600) as i64;
    let action = policy.repair_action.unwrap_or(RepairAction::Replace);
    let active: Vec<&InstanceRecord> = instances.iter().filter(|i| !i.deleting).collect();
    let budget = (active.len() / 20).max(1);
    // Repairs still in progress: repaired instances whose health has not changed since
    // their latest repair (one that came back healthy and failed again is a new case,
    // not a repair still running).
    let mut latest: HashMap<u64, &str> = HashMap::new();
    for e in &state.history {
        latest.insert(e.instance_id, e.time.as_str());
    }
    let in_flight = latest
        .iter()
        .filter(
            |(id, repaired_at)| match instances.iter().find(|i| i.instance_id == **id) {
                None => false,
                Some(i) if i.deleting => true,
                Some(i) => match health.get(&i.instance_id) {
                    Some(h) if h.state == HealthState::Healthy => false,
                    Some(h) => !changed_after(&h.since, repaired_at),
                    None => true,
                },
            },
        )
        .count()
        + instances.iter().filter(|i| i.deleting).count().min(budget);
    let mut slots = budget.saturating_sub(in_flight);
    let mut plan = RepairPlan::default();
    for inst in active {
        let (Some(status), Some(h)) = (
            statuses.get(&inst.instance_id),
            health.get(&inst.instance_id),
        ) else {
            continue;
        };
        if status.state != InstanceState::Running
            || inst.power != PowerIntent::Running
            || h.state != HealthState::Unhealthy
            || inst.protection.protect_from_scale_set_actions
        {
            continue;
        }
        let unhealthy_for = secs_since(now, &h.since).unwrap_or(0);
        let running_for = secs_since(now, &status.since).unwrap_or(0);
        let waited = unhealthy_for.min(running_for);
        if waited < grace {
            let left = u64::try_from(grace - waited).unwrap_or(1).max(1);
            plan.wake_in_secs = Some(plan.wake_in_secs.map_or(left, |w| w.min(left)));
            continue;
        }
        let repairs = state
            .history
            .iter()
            .filter(|e| e.instance_id == inst.instance_id)
            .count();
        if repairs >= MAX_REPAIRS_PER_INSTANCE {
            state.suspended = Some(format!(
                "Instance {} is still unhealthy after {repairs} repairs within an hour; automatic repairs are suspended. Fix the cause, then update automaticRepairsPolicy to resume.",
                inst.instance_id
            ));
            state.last_change = Some(now_text.clone());
            plan.update.clear();
            plan.repairs.clear();
            break;
        }
        if slots == 0 {
            plan.wake_in_secs = Some(1);
            continue;
        }
        slots -= 1;
        let mut changed = inst.clone();
        instances::apply(&mut changed, action.into(), &set.launch);
        plan.repairs.push((inst.instance_id, action));
        state.history.push(RepairEvent {
            instance_id: inst.instance_id,
            time: now_text.clone(),
            action: action.to_string(),
        });
        plan.update.push(changed);
    }
    if state.last_change.is_none() {
        state.last_change = Some(now_text);
    }
    plan.state = state;
    plan
}

/// Azure's `orchestrationServices` entry for the instance view.
/// Whether the set's `automaticRepairsPolicy` is on.
pub fn repairs_enabled(set: &VmssRecord) -> bool {
    set.model
        .props()
        .automatic_repairs_policy
        .as_ref()
        .is_some_and(|p| p.enabled == Some(true))
}

pub fn orchestration_services(set: &VmssRecord) -> Value {
    if !repairs_enabled(set) {
        return json!([]);
    }
    let state = state_of(set);
    let mut svc = json!({
        "serviceName": "AutomaticRepairs",
        "serviceState": if state.suspended.is_some() { "Suspended" } else { "Running" },
    });
    if let Some(t) = &state.last_change {
        svc["lastStatusChangeTime"] = json!(t);
    }
    if let Some(r) = &state.suspended {
        svc["reason"] = json!(r);
    }
    json!([svc])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::tests::{launch, set as make_set};
    use shoal_model::ids::VmssRef;
    use shoal_model::records::{PowerIntent, ProtectionPolicy};

    fn inst(id: u64) -> InstanceRecord {
        InstanceRecord {
            vmss: VmssRef::new("s", "rg", "web"),
            instance_id: id,
            vm_id: String::new(),
            host: "h".into(),
            zone: None,
            fault_domain: 0,
            launch: launch(1),
            power: PowerIntent::Running,
            restart_gen: 0,
            reimage_gen: 0,
            deleting: false,
            protection: ProtectionPolicy::default(),
            time_created: String::new(),
            epoch: 0,
            rebalance: false,
        }
    }

    fn running(since: &str) -> InstanceStatus {
        InstanceStatus {
            state: InstanceState::Running,
            host: "h".into(),
            launch_generation: 1,
            restart_gen: 0,
            reimage_gen: 0,
            address: None,
            port: None,
            pid: None,
            message: None,
            restarts: 0,
            since: since.into(),
            limits: None,
            network: None,
        }
    }

    fn health(state: HealthState, since: &str) -> HealthRecord {
        HealthRecord {
            state,
            since: since.into(),
            observer: "lb".into(),
            message: None,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn policy(action: &str) -> VmssRecord {
        make_set(
            3,
            None,
            json!({"properties": {"automaticRepairsPolicy": {"enabled": true, "gracePeriod": "PT10S", "repairAction": action}}}),
        )
    }

    #[test]
    fn repairs_an_instance_unhealthy_past_its_grace_period_only() {
        let set = policy("Replace");
        let insts = vec![inst(0), inst(1), inst(2)];
        let statuses: HashMap<_, _> = (0..3)
            .map(|i| (i, running("2026-01-01T00:00:00Z")))
            .collect();
        let mut h: HashMap<_, _> = (0..3)
            .map(|i| (i, health(HealthState::Healthy, "2026-01-01T00:00:00Z")))
            .collect();
        h.insert(1, health(HealthState::Unhealthy, "2026-01-01T00:01:00Z"));
        let early = plan_repairs(&set, &insts, &statuses, &h, t("2026-01-01T00:01:05Z"));
        assert!(early.update.is_empty());
        assert_eq!(early.wake_in_secs, Some(5));
        let late = plan_repairs(&set, &insts, &statuses, &h, t("2026-01-01T00:01:11Z"));
        assert_eq!(late.update.len(), 1);
        assert!(late.update[0].deleting && late.update[0].instance_id == 1);
    }

    #[test]
    fn restart_and_reimage_bump_their_counters_and_protection_is_honoured() {
        for (action, restart, reimage) in [("Restart", 1, 0), ("Reimage", 0, 1)] {
            let set = policy(action);
            let insts = vec![inst(0)];
            let statuses: HashMap<_, _> = [(0, running("2026-01-01T00:00:00Z"))].into();
            let h: HashMap<_, _> =
                [(0, health(HealthState::Unhealthy, "2026-01-01T00:00:00Z"))].into();
            let p = plan_repairs(&set, &insts, &statuses, &h, t("2026-01-01T01:00:00Z"));
            assert_eq!(
                (p.update[0].restart_gen, p.update[0].reimage_gen),
                (restart, reimage)
            );
            let mut protected = inst(0);
            protected.protection.protect_from_scale_set_actions = true;
            assert!(
                plan_repairs(&set, &[protected], &statuses, &h, t("2026-01-01T01:00:00Z"))
                    .update
                    .is_empty()
            );
        }
    }

    #[test]
    fn one_repair_at_a_time_below_twenty_and_suspension_after_repeated_failures() {
        let mut set = policy("Restart");
        let insts: Vec<_> = (0..5).map(inst).collect();
        let statuses: HashMap<_, _> = (0..5)
            .map(|i| (i, running("2026-01-01T00:00:00Z")))
            .collect();
        let h: HashMap<_, _> = (0..5)
            .map(|i| (i, health(HealthState::Unhealthy, "2026-01-01T00:00:00Z")))
            .collect();
        let p = plan_repairs(&set, &insts, &statuses, &h, t("2026-01-01T00:10:00Z"));
        assert_eq!(p.update.len(), 1, "rate limited to one");
        // Three repairs of instance 0 that did not help: the service suspends.
        let mut state = p.state.clone();
        state.history = (0..3)
            .map(|_| RepairEvent {
                instance_id: 0,
                time: "2026-01-01T00:10:00Z".into(),
                action: "Restart".into(),
            })
            .collect();
        set.services = json!({"repairs": state});
        let p = plan_repairs(&set, &insts, &statuses, &h, t("2026-01-01T00:20:00Z"));
        assert!(p.state.suspended.is_some());
        assert!(p.update.is_empty());
        set.services = json!({"repairs": p.state});
        assert_eq!(orchestration_services(&set)[0]["serviceState"], "Suspended");
    }
}
