//! Writes to a set's instances: actions (start, restart, reimage, delete, …), protection
//! policies, automatic repairs.
//!
//! An action is a change of the instance's desired record ([`apply`]: a power intent, a
//! bumped restart or reimage counter, the set's latest launch spec, `deleting`); agents
//! act on it and report, which completes the operation [`decide`] writes with it.

use shoal_model::records::{
    operation_key, InstanceRecord, LaunchSpec, OperationWait, PowerIntent, VmssRecord,
};
use shoal_model::vmss::VMSS_VM_TYPE;
use shoal_model::ArmError;
use shoal_store::Expect;

use super::{
    capacity, require_not_deleting, Env, InstanceAction, InstanceChange, InstanceCommand, Targets,
    Writes,
};
use crate::kv::{self, Versioned};
use crate::planner::placement::{self, HostSlot, Resources};

/// What an instance command is decided on.
#[derive(Debug, Clone)]
pub struct InstancesState {
    pub set: Versioned<VmssRecord>,
    /// Every instance record of the set, those being deleted too.
    pub instances: Vec<Versioned<InstanceRecord>>,
    /// The hosts as placement sees them (read for `redeploy` only; empty otherwise).
    pub hosts: Vec<HostSlot>,
}

/// `redeploy` moves an instance to another host (Azure: "moves the VM to a new node"):
/// the same id in its zone on a host placement allows, with a new epoch (the old host's
/// agent stops its copy, the new one starts fresh from the image). With no other host
/// to go to it restarts in place, as before.
fn redeploy_to(
    set: &VmssRecord,
    rec: &InstanceRecord,
    slots: &mut [HostSlot],
    siblings: &[&InstanceRecord],
) -> Option<placement::Placement> {
    let need = Resources::of(rec);
    let others: Vec<HostSlot> = slots
        .iter()
        .filter(|s| !s.name.eq_ignore_ascii_case(&rec.host))
        .cloned()
        .collect();
    let p = placement::place(set, &others, siblings, &need, Some(rec.zone.as_deref()))?;
    // A zonal instance stays in its zone.
    if rec.zone.is_some() && p.zone != rec.zone {
        return None;
    }
    placement::take(slots, &p.host, &need);
    Some(p)
}

/// Applies `action` to one desired instance record. `set_launch` is the set's latest
/// launch spec for this instance (for upgrades: `placement::launch_for`).
pub fn apply(rec: &mut InstanceRecord, action: InstanceAction, set_launch: &LaunchSpec) {
    match action {
        InstanceAction::Start => rec.power = PowerIntent::Running,
        InstanceAction::PowerOff => rec.power = PowerIntent::Stopped,
        InstanceAction::Deallocate => rec.power = PowerIntent::Deallocated,
        InstanceAction::Restart | InstanceAction::Redeploy | InstanceAction::PerformMaintenance => {
            rec.restart_gen += 1;
            rec.power = PowerIntent::Running;
        }
        InstanceAction::Reimage | InstanceAction::ReimageAll => rec.reimage_gen += 1,
        InstanceAction::ManualUpgrade => rec.launch = set_launch.clone(),
        InstanceAction::Delete | InstanceAction::Replace => rec.deleting = true,
    }
}

/// Decides the writes of an [`InstanceCommand`].
pub fn decide(
    cmd: &InstanceCommand,
    state: &InstancesState,
    env: &Env,
) -> Result<Writes, ArmError> {
    match &cmd.change {
        InstanceChange::Action { action, targets } => act(cmd, *action, targets, state, env),
        InstanceChange::Protect {
            instance_id,
            protect_from_scale_in,
            protect_from_scale_set_actions,
        } => protect(
            cmd,
            *instance_id,
            (*protect_from_scale_in, *protect_from_scale_set_actions),
            state,
            env,
        ),
        InstanceChange::Repair { repairs, state: s } => Ok(repair(repairs, s, state)),
    }
}

fn not_found(cmd: &InstanceCommand, id: u64) -> ArmError {
    ArmError::not_found(VMSS_VM_TYPE, &format!("{}_{id}", cmd.vmss.name))
}

fn act(
    cmd: &InstanceCommand,
    action: InstanceAction,
    targets: &Targets,
    state: &InstancesState,
    env: &Env,
) -> Result<Writes, ArmError> {
    let set = &state.set;
    require_not_deleting(&set.value)?;
    let active: Vec<&Versioned<InstanceRecord>> = state
        .instances
        .iter()
        .filter(|r| !r.value.deleting)
        .collect();
    let chosen: Vec<&Versioned<InstanceRecord>> = match targets {
        Targets::All => active
            .into_iter()
            .filter(|r| !r.value.protection.protect_from_scale_set_actions)
            .collect(),
        Targets::One(id) => vec![active
            .into_iter()
            .find(|r| r.value.instance_id == *id)
            .ok_or_else(|| not_found(cmd, *id))?],
        Targets::Listed(ids) => {
            let mut t = Vec::new();
            for id in ids {
                let Some(r) = active.iter().find(|r| r.value.instance_id == *id) else {
                    return Err(ArmError::invalid_parameter(
                        "instanceIds",
                        format!(
                            "Instance id {id} does not exist in scale set '{}'.",
                            cmd.vmss.name
                        ),
                    ));
                };
                if r.value.protection.protect_from_scale_set_actions {
                    return Err(ArmError::operation_not_allowed(format!(
                        "Instance {id} is protected from scale set actions: act on it directly (virtualMachines/{id}/{}) or lift the protection.",
                        action.name()
                    ))
                    .with_target("instanceIds"));
                }
                t.push(*r);
            }
            t
        }
    };
    let ids: Vec<u64> = chosen.iter().map(|r| r.value.instance_id).collect();
    let wait = if matches!(action, InstanceAction::Delete | InstanceAction::Replace) {
        OperationWait::InstancesGone {
            vmss: set.value.vmss.clone(),
            instance_ids: ids.clone(),
        }
    } else {
        OperationWait::Vmss {
            vmss: set.value.vmss.clone(),
            instance_ids: Some(ids.clone()),
        }
    };
    let what = match targets {
        Targets::One(id) => format!("{} instance {id} of {}", action.name(), cmd.vmss.name),
        _ => format!("{} scale set {}", action.name(), cmd.vmss.name),
    };
    let op = if chosen.is_empty() {
        env.finished_operation(&set.value.vmss, what, wait)
    } else {
        env.operation(&set.value.vmss, what, wait)
    };
    let mut writes = Writes::default();
    let mut slots = state.hosts.clone();
    let siblings: Vec<&InstanceRecord> = state.instances.iter().map(|r| &r.value).collect();
    for t in &chosen {
        let mut rec = t.value.clone();
        let launch = placement::launch_for(&set.value, &rec.launch);
        apply(&mut rec, action, &launch);
        if action == InstanceAction::Redeploy {
            if let Some(p) = redeploy_to(&set.value, &rec, &mut slots, &siblings) {
                rec.host = p.host;
                rec.zone = p.zone;
                rec.fault_domain = p.fault_domain;
                rec.epoch += 1;
            }
        }
        writes.ops.push(kv::put_op(
            t.key.clone(),
            &rec,
            Expect::ModRevision(t.revision),
        ));
        writes.instances.push(rec);
    }
    if action == InstanceAction::Delete && !chosen.is_empty() {
        let mut rec = set.value.clone();
        capacity::lower_for_deleted(&mut rec, chosen.len());
        writes.ops.push(kv::put_op(
            set.key.clone(),
            &rec,
            Expect::ModRevision(set.revision),
        ));
        writes.set = Some(rec);
    }
    writes
        .ops
        .push(kv::put_op(operation_key(&op.id), &op, Expect::Absent));
    writes.operation = Some(op);
    Ok(writes)
}

fn protect(
    cmd: &InstanceCommand,
    id: u64,
    (scale_in, set_actions): (Option<bool>, Option<bool>),
    state: &InstancesState,
    env: &Env,
) -> Result<Writes, ArmError> {
    let Some(current) = state.instances.iter().find(|r| r.value.instance_id == id) else {
        return Err(not_found(cmd, id));
    };
    require_not_deleting(&state.set.value)?;
    if current.value.deleting {
        return Err(ArmError::conflict(format!(
            "Instance {id} is being deleted."
        )));
    }
    let mut rec = current.value.clone();
    if let Some(v) = scale_in {
        rec.protection.protect_from_scale_in = v;
    }
    if let Some(v) = set_actions {
        rec.protection.protect_from_scale_set_actions = v;
    }
    // Protection takes effect at once: the operation is already done.
    let op = env.finished_operation(
        &state.set.value.vmss,
        format!("Update instance {id} of {}", cmd.vmss.name),
        OperationWait::Vmss {
            vmss: state.set.value.vmss.clone(),
            instance_ids: Some(vec![id]),
        },
    );
    Ok(Writes {
        ops: vec![
            kv::put_op(
                current.key.clone(),
                &rec,
                Expect::ModRevision(current.revision),
            ),
            kv::put_op(operation_key(&op.id), &op, Expect::Absent),
        ],
        operation: Some(op),
        instances: vec![rec],
        ..Default::default()
    })
}

/// Automatic repairs: each chosen instance still there and not being deleted gets its
/// repair action; the set keeps the repair service's state in `services.repairs`.
fn repair(
    repairs: &[(u64, shoal_model::vmss::RepairAction)],
    repair_state: &crate::repair::RepairState,
    state: &InstancesState,
) -> Writes {
    let set = &state.set;
    let mut writes = Writes::default();
    for (id, action) in repairs {
        let Some(current) = state
            .instances
            .iter()
            .find(|r| r.value.instance_id == *id && !r.value.deleting)
        else {
            continue;
        };
        let mut rec = current.value.clone();
        let launch = placement::launch_for(&set.value, &rec.launch);
        apply(&mut rec, (*action).into(), &launch);
        writes.ops.push(kv::put_op(
            current.key.clone(),
            &rec,
            Expect::ModRevision(current.revision),
        ));
        writes.instances.push(rec);
    }
    let mut rec = set.value.clone();
    rec.services["repairs"] = serde_json::to_value(repair_state).unwrap_or_default();
    writes.ops.push(kv::put_op(
        set.key.clone(),
        &rec,
        Expect::ModRevision(set.revision),
    ));
    writes.set = Some(rec);
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::testing::{env, instance, set_record};
    use crate::repair::RepairState;
    use shoal_model::ids::VmssRef;
    use shoal_model::vmss::RepairAction;

    fn state(n: u64) -> InstancesState {
        let set = set_record(i64::try_from(n).unwrap());
        InstancesState {
            set: Versioned {
                key: set.vmss.key(),
                value: set,
                revision: 9,
            },
            instances: (0..n)
                .map(|i| Versioned {
                    key: VmssRef::new("s", "demo", "web").instance_key(i),
                    value: instance(i),
                    revision: 100 + i,
                })
                .collect(),
            hosts: Vec::new(),
        }
    }

    fn cmd(change: InstanceChange) -> InstanceCommand {
        InstanceCommand {
            vmss: VmssRef::new("s", "demo", "web"),
            change,
        }
    }

    fn action(action: InstanceAction, targets: Targets) -> InstanceCommand {
        cmd(InstanceChange::Action { action, targets })
    }

    #[test]
    fn set_wide_actions_skip_protected_instances_and_refuse_to_name_one() {
        let mut st = state(3);
        st.instances[1]
            .value
            .protection
            .protect_from_scale_set_actions = true;
        let w = decide(&action(InstanceAction::Restart, Targets::All), &st, &env()).unwrap();
        let ids: Vec<u64> = w.instances.iter().map(|i| i.instance_id).collect();
        assert_eq!(ids, vec![0, 2]);
        assert!(w.instances.iter().all(|i| i.restart_gen == 1));
        let err = decide(
            &action(InstanceAction::Restart, Targets::Listed(vec![1])),
            &st,
            &env(),
        )
        .unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.target.as_deref()),
            ("OperationNotAllowed", Some("instanceIds"))
        );
        // Directly, the protected instance can be acted on.
        let w = decide(
            &action(InstanceAction::Restart, Targets::One(1)),
            &st,
            &env(),
        )
        .unwrap();
        assert_eq!(w.instances[0].instance_id, 1);
    }

    #[test]
    fn unknown_instances_are_400_in_a_list_and_404_on_their_own_route() {
        let st = state(2);
        let err = decide(
            &action(InstanceAction::Start, Targets::Listed(vec![7])),
            &st,
            &env(),
        )
        .unwrap_err();
        assert_eq!(
            (err.status, err.target.as_deref()),
            (400, Some("instanceIds"))
        );
        let err = decide(&action(InstanceAction::Start, Targets::One(7)), &st, &env()).unwrap_err();
        assert_eq!(err.status, 404);
    }

    #[test]
    fn deleting_lowers_capacity_and_nothing_to_do_is_an_operation_already_done() {
        let st = state(3);
        let w = decide(
            &action(InstanceAction::Delete, Targets::Listed(vec![0, 2])),
            &st,
            &env(),
        )
        .unwrap();
        assert_eq!(w.set.unwrap().model.capacity(), 1);
        assert!(w.instances.iter().all(|i| i.deleting));
        let mut st = state(1);
        st.instances[0]
            .value
            .protection
            .protect_from_scale_set_actions = true;
        let w = decide(&action(InstanceAction::PowerOff, Targets::All), &st, &env()).unwrap();
        assert!(w.instances.is_empty());
        assert_eq!(
            w.operation.unwrap().status,
            shoal_model::records::OperationStatus::Succeeded
        );
    }

    #[test]
    fn protection_changes_only_the_flags_given() {
        let st = state(2);
        let w = decide(
            &cmd(InstanceChange::Protect {
                instance_id: 1,
                protect_from_scale_in: Some(true),
                protect_from_scale_set_actions: None,
            }),
            &st,
            &env(),
        )
        .unwrap();
        let p = w.instances[0].protection;
        assert!(p.protect_from_scale_in && !p.protect_from_scale_set_actions);
        let mut st = state(2);
        st.instances[1].value.deleting = true;
        let err = decide(
            &cmd(InstanceChange::Protect {
                instance_id: 1,
                protect_from_scale_in: Some(true),
                protect_from_scale_set_actions: None,
            }),
            &st,
            &env(),
        )
        .unwrap_err();
        assert_eq!(err.status, 409);
    }

    #[test]
    fn repairs_apply_their_action_and_keep_the_capacity() {
        let st = state(3);
        let w = decide(
            &cmd(InstanceChange::Repair {
                repairs: vec![(0, RepairAction::Replace), (1, RepairAction::Reimage)],
                state: RepairState::default(),
            }),
            &st,
            &env(),
        )
        .unwrap();
        assert!(w.instances[0].deleting);
        assert_eq!(w.instances[1].reimage_gen, 1);
        let set = w.set.unwrap();
        assert_eq!(set.model.capacity(), 3);
        assert!(set.services.get("repairs").is_some());
    }
}
