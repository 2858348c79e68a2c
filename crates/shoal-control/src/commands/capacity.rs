//! The one rule for a scale set's `sku.capacity`, whoever changes it:
//!
//! - a PUT or PATCH ([`super::scale_set::decide`]) may ask for `0..=max_capacity`
//!   ([`check`]); above that it is refused with a 400 naming `sku.capacity`;
//! - deleting instances ([`super::instances::decide`]) lowers it by as many, never below
//!   0 ([`lower_for_deleted`]);
//! - autoscale ([`decide_autoscale`]) gets what it asks for capped at the limit
//!   ([`within_limit`]), and its change is written with an entry in the setting's
//!   activity log ([`super::activity`]).
//!
//! Every change is written with an operation record: the PUT's, PATCH's or delete's own,
//! or, for autoscale, an operation the set's `provisioningState` follows (`Updating` until
//! the new instances run), as a PATCH of the capacity does.

use shoal_model::records::{operation_key, OperationWait, VmssRecord};
use shoal_model::ArmError;
use shoal_store::Expect;

use super::activity::{history_key_of, History};
use super::{follow, require_not_deleting, AutoscaleEvaluation, Env, Limits, Writes};
use crate::autoscale::{Blocked, Decision};
use crate::kv::{self, Versioned};

/// Refuses a capacity a set may not ask for: below 0 or above the server's limit.
pub fn check(capacity: i64, limits: &Limits) -> Result<(), ArmError> {
    if capacity < 0 {
        return Err(ArmError::invalid_parameter(
            "sku.capacity",
            format!(
                "Capacity {capacity} is out of range: use 0 to {}.",
                limits.max_capacity
            ),
        ));
    }
    if capacity > limits.max_capacity {
        return Err(ArmError::invalid_parameter(
            "sku.capacity",
            format!(
                "Capacity {capacity} is above this server's limit of {}.",
                limits.max_capacity
            ),
        ));
    }
    Ok(())
}

/// Writes `capacity` into the set's model.
pub fn set_capacity(rec: &mut VmssRecord, capacity: i64) {
    rec.model.sku.get_or_insert_with(Default::default).capacity = Some(capacity);
}

/// As in Azure, deleting `n` instances lowers the capacity by as many (never below 0).
pub fn lower_for_deleted(rec: &mut VmssRecord, n: usize) {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let lowered = rec.model.capacity().saturating_sub(n).max(0);
    set_capacity(rec, lowered);
}

/// Autoscale's decision kept within the server's limit: a wish above it is capped at
/// the limit, or blocked as at the maximum when the limit leaves no room to move.
pub fn within_limit(mut d: Decision, limits: &Limits) -> Decision {
    let Some(wanted) = d.new_capacity else {
        return d;
    };
    let capped = wanted.clamp(0, limits.max_capacity);
    if capped == wanted {
        return d;
    }
    let limit = limits.max_capacity;
    if capped == d.current || (wanted > d.current && capped < d.current) {
        d.new_capacity = None;
        d.blocked = Some(Blocked::AtMaximum);
        d.reason = format!(
            "{} Capacity {wanted} is above this server's limit of {limit}.",
            d.reason
        );
    } else {
        d.new_capacity = Some(capped);
        d.reason = format!("{} Capped at this server's limit of {limit}.", d.reason);
    }
    d
}

/// What autoscale's command is decided on: the set and the setting's activity log, as
/// read now.
#[derive(Debug, Clone)]
pub struct AutoscaleState {
    pub set: Versioned<VmssRecord>,
    pub history: Option<Versioned<History>>,
}

/// Decides the writes of [`super::Command::Autoscale`]: the decision capped at the limit
/// is appended to the activity log (nothing at all when it only repeats the previous
/// blocked entry); a capacity change is written with its operation record, guarded by
/// the set revision the evaluation read, so a user's write in between wins.
pub fn decide_autoscale(
    eval: &AutoscaleEvaluation,
    state: &AutoscaleState,
    limits: &Limits,
    env: &Env,
) -> Result<Writes, ArmError> {
    let set = &state.set.value;
    require_not_deleting(set)?;
    let decision = within_limit(eval.decision.clone(), limits);
    let mut history = state
        .history
        .as_ref()
        .map(|h| h.value.clone())
        .unwrap_or_default();
    if !history.record(&decision, env.now) {
        return Ok(Writes::default());
    }
    let mut writes = Writes::default();
    if let Some(n) = decision.new_capacity {
        let mut rec = set.clone();
        let op = env.operation(
            &rec.vmss,
            format!(
                "Autoscale scale set {}: capacity {} to {n}",
                rec.vmss.name, decision.current
            ),
            OperationWait::Vmss {
                vmss: rec.vmss.clone(),
                instance_ids: None,
            },
        );
        set_capacity(&mut rec, n);
        follow(&mut rec, &op, "Updating");
        writes.ops.push(kv::put_op(
            state.set.key.clone(),
            &rec,
            Expect::ModRevision(eval.set_revision),
        ));
        writes
            .ops
            .push(kv::put_op(operation_key(&op.id), &op, Expect::Absent));
        writes.set = Some(rec);
        writes.operation = Some(op);
    }
    let expect = state
        .history
        .as_ref()
        .map_or(Expect::Absent, |h| Expect::ModRevision(h.revision));
    writes.ops.push(kv::put_op(
        history_key_of(&eval.setting_key),
        &history,
        expect,
    ));
    writes.recorded = Some(decision);
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::instances::{self, InstancesState};
    use crate::commands::scale_set::{self, SetState};
    use crate::commands::testing::{env, image, instance, set_record};
    use crate::commands::{
        InstanceAction, InstanceChange, InstanceCommand, Preconditions, SetChange, SetCommand,
        Targets,
    };
    use proptest::prelude::*;
    use serde_json::json;
    use shoal_model::ids::VmssRef;
    use shoal_model::records::OperationRecord;
    use shoal_store::TxnOp;

    fn decision(current: i64, new_capacity: Option<i64>) -> Decision {
        Decision {
            profile: Some("default".into()),
            current,
            new_capacity,
            blocked: None,
            reason: "Percentage CPU 95 > 70".into(),
            metrics: vec![],
        }
    }

    /// The set and the operation a decider's writes put.
    fn written(w: &Writes) -> (Option<VmssRecord>, Option<OperationRecord>) {
        let mut set = None;
        let mut op = None;
        for o in &w.ops {
            if let TxnOp::Put { key, value, .. } = o {
                if key.starts_with("vmss/") {
                    set = Some(serde_json::from_slice(value).unwrap());
                } else if key.starts_with("op/") {
                    op = Some(serde_json::from_slice(value).unwrap());
                }
            }
        }
        (set, op)
    }

    #[test]
    fn autoscale_above_the_limit_is_capped_or_blocked() {
        let limits = Limits { max_capacity: 10 };
        let d = within_limit(decision(8, Some(12)), &limits);
        assert_eq!(d.new_capacity, Some(10));
        assert!(d.reason.ends_with("Capped at this server's limit of 10."));
        let d = within_limit(decision(10, Some(12)), &limits);
        assert_eq!(
            (d.new_capacity, d.blocked),
            (None, Some(Blocked::AtMaximum))
        );
        let d = within_limit(decision(8, Some(9)), &limits);
        assert_eq!(d, decision(8, Some(9)), "within the limit: unchanged");
    }

    #[test]
    fn autoscale_writes_capacity_operation_and_activity_in_one_go() {
        let set = set_record(2);
        let state = AutoscaleState {
            set: Versioned {
                key: set.vmss.key(),
                value: set,
                revision: 7,
            },
            history: None,
        };
        let eval = AutoscaleEvaluation {
            setting_key: "autoscale/s/demo/auto".into(),
            vmss: VmssRef::new("s", "demo", "web"),
            set_revision: 7,
            decision: decision(2, Some(3)),
        };
        let w = decide_autoscale(&eval, &state, &Limits::default(), &env()).unwrap();
        let (rec, op) = written(&w);
        let rec = rec.unwrap();
        assert_eq!(rec.model.capacity(), 3);
        assert_eq!(rec.operation, op.as_ref().map(|o| o.id.clone()));
        assert_eq!(
            rec.model.props().provisioning_state.as_deref(),
            Some("Updating")
        );
        assert!(matches!(
            &w.ops[0],
            TxnOp::Put {
                expect: Expect::ModRevision(7),
                ..
            }
        ));
        let history: History = match &w.ops[2] {
            TxnOp::Put { key, value, .. } if key == "autoscale-history/s/demo/auto" => {
                serde_json::from_slice(value).unwrap()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(history.entries[0].outcome, "ScaleOut");
        // The same blocked wish twice: recorded once.
        let blocked = Decision {
            blocked: Some(Blocked::AtMaximum),
            ..decision(2, None)
        };
        let eval = AutoscaleEvaluation {
            decision: blocked,
            ..eval
        };
        let w = decide_autoscale(&eval, &state, &Limits::default(), &env()).unwrap();
        assert_eq!(w.ops.len(), 1, "only the activity log");
        let state = AutoscaleState {
            history: Some(Versioned {
                key: "autoscale-history/s/demo/auto".into(),
                value: {
                    let mut h = History::default();
                    h.record(&eval.decision, env().now);
                    h
                },
                revision: 3,
            }),
            ..state
        };
        let w = decide_autoscale(&eval, &state, &Limits::default(), &env()).unwrap();
        assert!(w.ops.is_empty() && w.recorded.is_none());
    }

    proptest! {
            /// Whichever way capacity changes — a PATCH, deleting instances, autoscale — it
            /// never ends above the limit or below 0, and an operation record is written.
            #[test]
            fn capacity_stays_within_the_limit_and_is_always_tracked(
                limit in 0i64..=20,
                start in 0i64..=20,
                wanted in -5i64..=40,
                deleted in 0usize..=20,
            ) {
                let limits = Limits { max_capacity: limit };
                let start = start.min(limit);
                let set = set_record(start);
                let versioned = Versioned { key: set.vmss.key(), value: set.clone(), revision: 5 };
                let vmss = set.vmss.clone();

                // A PATCH of the capacity.
                let cmd = SetCommand {
                    vmss: vmss.clone(),
                    change: SetChange::Patch(json!({"sku": {"capacity": wanted}})),
                    preconditions: Preconditions::default(),
                };
                let state = SetState {
                    existing: Some(versioned.clone()),
                    image: Some(image()),
                    hosts: Vec::new(),
                    host_zones: Default::default(),
    identities: Default::default(),
                };
                match scale_set::decide(&cmd, &state, &limits, &env()) {
                    Ok(w) => {
                        let (rec, op) = written(&w);
                        let c = rec.unwrap().model.capacity();
                        prop_assert!((0..=limit).contains(&c));
                        prop_assert_eq!(c, wanted);
                        prop_assert!(op.is_some());
                    }
                    Err(e) => {
                        prop_assert!(!(0..=limit).contains(&wanted));
                        prop_assert_eq!(e.target.as_deref(), Some("sku.capacity"));
                    }
                }

                // Deleting instances.
                let count = u64::try_from(start).unwrap();
                let instances: Vec<_> = (0..count)
                    .map(|i| Versioned { key: vmss.instance_key(i), value: instance(i), revision: 1 })
                    .collect();
                let n = u64::try_from(deleted).unwrap().min(count);
                let cmd = InstanceCommand {
                    vmss: vmss.clone(),
                    change: InstanceChange::Action {
                        action: InstanceAction::Delete,
                        targets: Targets::Listed((0..n).collect()),
                    },
                };
                let w = instances::decide(&cmd, &InstancesState { set: versioned.clone(), instances, hosts: Vec::new() }, &env()).unwrap();
                let (rec, op) = written(&w);
                prop_assert!(op.is_some());
                let c = rec.map_or(start, |r| r.model.capacity());
                prop_assert!((0..=limit).contains(&c));
                prop_assert_eq!(c, start - i64::try_from(n).unwrap());

                // Autoscale.
                let eval = AutoscaleEvaluation {
                    setting_key: "autoscale/s/demo/auto".into(),
                    vmss: vmss.clone(),
                    set_revision: 5,
                    decision: decision(start, (wanted != start).then_some(wanted)),
                };
                let state = AutoscaleState { set: versioned, history: None };
                let w = decide_autoscale(&eval, &state, &limits, &env()).unwrap();
                let (rec, op) = written(&w);
                if let Some(rec) = rec {
                    let c = rec.model.capacity();
                    prop_assert!((0..=limit).contains(&c));
                    prop_assert!(op.is_some());
                    prop_assert_eq!(rec.operation, op.map(|o| o.id));
                } else {
                    prop_assert!(op.is_none());
                }
                prop_assert!(w.recorded.is_some() || wanted == start);
            }
        }
}
