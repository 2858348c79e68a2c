//! Writes to a set's rolling upgrade: start one (`osRollingUpgrade`), cancel it, and
//! apply the step the rolling-upgrade planner chose ([`crate::rolling::next_step`]).
//!
//! [`decide`] is pure: the command and the records it concerns in, the writes out — the
//! upgrade record (`rollingupgrade/…`), instance records (a batch's new launch spec, a
//! rollback, a replaced instance marked for deletion) and the operations that end with
//! the upgrade — each guarded by the revision the decision was made on.

use shoal_model::ids::VmssRef;
use shoal_model::records::{
    operation_key, InstanceRecord, OperationRecord, OperationStatus, OperationWait, VmssRecord,
};
use shoal_model::upgrade_policy::RollingStatusCode;
use shoal_model::ArmError;
use shoal_store::{Expect, Revision};

use super::{require_not_deleting, Env, Writes};
use crate::kv::{self, Versioned};
use crate::rolling::{self, RollingUpgrade, Step};

/// A write to a set's rolling upgrade.
#[derive(Debug, Clone)]
pub struct RollingCommand {
    pub vmss: VmssRef,
    pub change: RollingChange,
}

#[derive(Debug, Clone)]
pub enum RollingChange {
    /// `POST …/osRollingUpgrade` (`platform: false`), or an automatic OS upgrade
    /// (`platform: true`, with automatic rollback unless the set disables it): start an
    /// upgrade to the set's current model (a running one is followed instead); its
    /// operation ends when the upgrade does. Legal while the set exists and is not being
    /// deleted.
    Start { platform: bool },
    /// `POST …/extensionRollingUpgrade`: restart every unprotected instance once, batch by
    /// batch, so each takes the set's current `extensionProfile`. Legal while the set
    /// exists, is not being deleted and no upgrade is running.
    StartExtensions,
    /// `POST …/rollingUpgrades/cancel`: the batch in flight finishes, no new batch starts.
    /// Legal while an upgrade rolls forward.
    Cancel,
    /// The controller's next step, planned from `record` (its revision, `None` when there
    /// was none) and `instances` as they were. Legal while none of them changed.
    Apply {
        step: Box<Step>,
        record_revision: Option<Revision>,
        instances: Vec<Versioned<InstanceRecord>>,
    },
}

/// What a rolling command is decided on.
#[derive(Debug, Clone)]
pub struct RollingState {
    pub set: Versioned<VmssRecord>,
    pub instances: Vec<InstanceRecord>,
    pub record: Option<Versioned<RollingUpgrade>>,
    /// The operations the step's record names (read for `Apply` only).
    pub operations: Vec<Versioned<OperationRecord>>,
}

/// The store key of a set's rolling upgrade record.
pub fn record_key(vmss: &VmssRef) -> String {
    shoal_model::keys::rolling_upgrade_key(vmss)
}

fn guard(record: Option<&Versioned<RollingUpgrade>>) -> Expect {
    record.map_or(Expect::Absent, |r| Expect::ModRevision(r.revision))
}

/// Decides the writes of a [`RollingCommand`].
pub fn decide(cmd: &RollingCommand, state: &RollingState, env: &Env) -> Result<Writes, ArmError> {
    let set = &state.set.value;
    let ours = state
        .record
        .as_ref()
        .filter(|r| r.value.unique_id == set.model.props().unique_id);
    let key = record_key(&cmd.vmss);
    let mut w = Writes::default();
    match &cmd.change {
        RollingChange::Start { platform } => {
            require_not_deleting(set)?;
            let op = env.operation(
                &set.vmss,
                format!("OS rolling upgrade of {}", set.vmss.name),
                OperationWait::RollingUpgrade {
                    vmss: set.vmss.clone(),
                },
            );
            let mut record = match ours.filter(|r| r.value.is_running()) {
                Some(r) => r.value.clone(),
                None => rolling::plan::started(
                    set,
                    &state.instances,
                    ours.map(|r| &r.value),
                    if *platform { "Platform" } else { "User" },
                    env.now,
                ),
            };
            record.operations.push(op.id.clone());
            w.ops
                .push(kv::put_op(key, &record, guard(state.record.as_ref())));
            w.ops
                .push(kv::put_op(operation_key(&op.id), &op, Expect::Absent));
            w.operation = Some(op);
        }
        RollingChange::StartExtensions => {
            require_not_deleting(set)?;
            if ours.is_some_and(|r| r.value.is_running()) {
                return Err(ArmError::operation_not_allowed(
                    "A rolling upgrade is in progress: wait for it to end or cancel it (rollingUpgrades/cancel).",
                ));
            }
            let op = env.operation(
                &set.vmss,
                format!("Extension rolling upgrade of {}", set.vmss.name),
                OperationWait::RollingUpgrade {
                    vmss: set.vmss.clone(),
                },
            );
            let mut record = rolling::plan::started_extensions(
                set,
                &state.instances,
                ours.map(|r| &r.value),
                env.now,
            );
            record.operations.push(op.id.clone());
            w.ops
                .push(kv::put_op(key, &record, guard(state.record.as_ref())));
            w.ops
                .push(kv::put_op(operation_key(&op.id), &op, Expect::Absent));
            w.operation = Some(op);
        }
        RollingChange::Cancel => {
            let Some(r) = ours.filter(|r| r.value.code == RollingStatusCode::RollingForward) else {
                return Err(ArmError::operation_not_allowed(
                    "There is no ongoing Rolling Upgrade to cancel.",
                ));
            };
            let op = env.operation(
                &set.vmss,
                format!("Cancel the rolling upgrade of {}", set.vmss.name),
                OperationWait::RollingUpgrade {
                    vmss: set.vmss.clone(),
                },
            );
            let mut record = r.value.clone();
            record.cancel_requested = true;
            record.last_action = "Cancel".into();
            record.last_action_time = env.now_text();
            record.note(
                &env.now_text(),
                "Cancel requested: the batch in flight finishes, no new batch starts",
            );
            record.operations.push(op.id.clone());
            w.ops.push(kv::put_op(key, &record, guard(Some(r))));
            w.ops
                .push(kv::put_op(operation_key(&op.id), &op, Expect::Absent));
            w.operation = Some(op);
        }
        RollingChange::Apply {
            step,
            record_revision,
            instances,
        } => apply(&key, step, *record_revision, instances, state, env, &mut w),
    }
    Ok(w)
}

fn apply(
    key: &str,
    step: &Step,
    record_revision: Option<Revision>,
    instances: &[Versioned<InstanceRecord>],
    state: &RollingState,
    env: &Env,
    w: &mut Writes,
) {
    let find = |id: u64| instances.iter().find(|i| i.value.instance_id == id);
    for (id, launch) in &step.launches {
        if let Some(i) = find(*id) {
            let mut rec = i.value.clone();
            rec.launch = launch.clone();
            w.ops.push(kv::put_op(
                i.key.clone(),
                &rec,
                Expect::ModRevision(i.revision),
            ));
            w.instances.push(rec);
        }
    }
    for id in &step.restarts {
        if let Some(i) = find(*id).filter(|i| !i.value.deleting) {
            let mut rec = i.value.clone();
            let launch = rec.launch.clone();
            super::instances::apply(&mut rec, super::InstanceAction::Restart, &launch);
            w.ops.push(kv::put_op(
                i.key.clone(),
                &rec,
                Expect::ModRevision(i.revision),
            ));
            w.instances.push(rec);
        }
    }
    for id in &step.delete {
        if let Some(i) = find(*id).filter(|i| !i.value.deleting) {
            let mut rec = i.value.clone();
            rec.deleting = true;
            w.ops.push(kv::put_op(
                i.key.clone(),
                &rec,
                Expect::ModRevision(i.revision),
            ));
            w.instances.push(rec);
        }
    }
    if let Some(launch) = &step.set_launch {
        let mut set = state.set.value.clone();
        set.launch = launch.clone();
        w.ops.push(kv::put_op(
            state.set.key.clone(),
            &set,
            Expect::ModRevision(state.set.revision),
        ));
        w.set = Some(set);
    }
    let Some(record) = &step.record else { return };
    let expect = record_revision.map_or(Expect::Absent, Expect::ModRevision);
    w.ops.push(kv::put_op(key.to_string(), record, expect));
    if record.is_running() {
        return;
    }
    // The upgrade ended: so do the operations waiting on it.
    for op in &state.operations {
        if op.value.status != OperationStatus::InProgress
            || !record.operations.contains(&op.value.id)
        {
            continue;
        }
        let mut done = op.value.clone();
        done.end_time = Some(env.now_text());
        match (&record.error, record.code) {
            (Some(e), RollingStatusCode::Faulted) => {
                done.status = OperationStatus::Failed;
                done.message = Some(e.message.clone());
                done.error = Some(e.clone());
            }
            _ => {
                done.status = OperationStatus::Succeeded;
                done.message = Some(format!("Rolling upgrade {}", record.code));
            }
        }
        w.ops.push(kv::put_op(
            op.key.clone(),
            &done,
            Expect::ModRevision(op.revision),
        ));
    }
}
