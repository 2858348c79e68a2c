//! Typed commands: every write to a scale set or its instances, whoever asks for it.
//!
//! Requests enter as a [`Command`] — the HTTP handlers parse ARM requests into one, the
//! autoscale runner issues one per notable evaluation, automatic repairs turn their plan
//! into one ([`crate::repair::RepairPlan::command`]), the rolling-upgrade runner applies
//! its steps as one ([`rolling::RollingChange::Apply`]) — and leave as store writes. An
//! [`Executor`] reads the records the command concerns, hands them to the pure decider
//! of the resource ([`scale_set::decide`], [`instances::decide`],
//! [`capacity::decide_autoscale`], [`rolling::decide`]), and applies the [`Writes`] it
//! answers in one store transaction, each write guarded by the revision the decider saw.
//! A lost race is a [`CommandError::Conflict`]; nothing is half-applied.
//!
//! `sku.capacity` has one rule wherever the change comes from ([`capacity`]): within
//! `0..=`[`Limits::max_capacity`], always with an operation record, and with an entry in
//! the setting's activity log ([`activity`]) when autoscale changes it.

pub mod activity;
pub mod capacity;
mod executor;
pub mod instances;
pub mod rolling;
pub mod scale_set;
#[cfg(test)]
pub(crate) mod testing;

use jiff::Timestamp;
use serde_json::Value;
use shoal_model::ids::VmssRef;
use shoal_model::records::{
    ImageVersionShoal, InstanceRecord, OperationRecord, OperationStatus, OperationWait, VmssRecord,
};
use shoal_model::vmss::{RepairAction, VirtualMachineScaleSet, MAX_CAPACITY};
use shoal_model::ArmError;
use shoal_store::{Revision, TxnOp};

use crate::autoscale::Decision;
use crate::repair::RepairState;

pub use executor::{Executor, ImageResolver};
pub use rolling::{RollingChange, RollingCommand};

/// One write a client, autoscale or repair asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Create, replace, update or delete a scale set ([`scale_set::decide`]).
    ScaleSet(SetCommand),
    /// Autoscale's verdict on a set: set the capacity it chose and record why in the
    /// setting's activity log ([`capacity::decide_autoscale`]). Legal while the set exists,
    /// is not being deleted and has not changed since the evaluation read it; an
    /// evaluation that only repeats the previous blocked one writes nothing.
    Autoscale(AutoscaleEvaluation),
    /// Act on a set's instances ([`instances::decide`]).
    Instances(InstanceCommand),
    /// Start, cancel or advance a set's rolling upgrade ([`rolling::decide`]).
    Rolling(rolling::RollingCommand),
}

/// A write to a scale set's model.
#[derive(Debug, Clone)]
pub struct SetCommand {
    pub vmss: VmssRef,
    pub change: SetChange,
    /// `If-Match` / `If-None-Match` as the client sent them.
    pub preconditions: Preconditions,
}

#[derive(Debug, Clone)]
pub enum SetChange {
    /// ARM PUT: create the set, or replace its model ([`shoal_model::vmss::keep_on_put`]
    /// says what an omitted property keeps). Legal when the set does not exist or is not
    /// being deleted; `orchestrationMode` and `platformFaultDomainCount` cannot change.
    Put(Box<VirtualMachineScaleSet>),
    /// ARM PATCH: merge these properties into the model (`tags` replace the old tags
    /// whole). Legal when the set exists and is not being deleted.
    Patch(Value),
    /// ARM DELETE: tear the instances down, then the set. Legal at any time; a set that
    /// does not exist is nothing to do.
    Delete,
}

/// A write to a set's instances.
#[derive(Debug, Clone)]
pub struct InstanceCommand {
    pub vmss: VmssRef,
    pub change: InstanceChange,
}

#[derive(Debug, Clone)]
pub enum InstanceChange {
    /// A set-wide or per-instance action (`POST .../restart`, `DELETE .../virtualMachines/3`,
    /// …). Legal while the set exists and is not being deleted, on instances that exist
    /// and are not being deleted; a set-wide action skips instances protected from
    /// scale-set actions and refuses to name one.
    Action {
        action: InstanceAction,
        targets: Targets,
    },
    /// Change one instance's protection policy (`None`: leave that flag). Legal while
    /// the set is not being deleted and the instance exists and is not being deleted.
    Protect {
        instance_id: u64,
        protect_from_scale_in: Option<bool>,
        protect_from_scale_set_actions: Option<bool>,
    },
    /// Automatic repairs chose these instances ([`crate::repair::plan_repairs`]): apply
    /// each repair action and store the repair service's state. Legal while the set
    /// exists; instances gone since the plan are skipped.
    Repair {
        repairs: Vec<(u64, RepairAction)>,
        state: RepairState,
    },
}

/// Which instances an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every instance not protected from scale-set actions.
    All,
    /// These instances (set-wide route with `instanceIds`).
    Listed(Vec<u64>),
    /// The instance of a per-instance route (`virtualMachines/{id}/…`).
    One(u64),
}

/// What an action does to an instance's desired record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    Start,
    PowerOff,
    Deallocate,
    Restart,
    Redeploy,
    PerformMaintenance,
    Reimage,
    ReimageAll,
    /// Move the instance to the set's latest model.
    ManualUpgrade,
    /// Delete the instance and lower the set's capacity by one (Azure's `delete`).
    Delete,
    /// Delete the instance and let the set create another (automatic repairs' `Replace`;
    /// the capacity stays). Not an ARM action.
    Replace,
}

impl InstanceAction {
    /// The action's name in ARM paths and messages.
    pub fn name(self) -> &'static str {
        match self {
            InstanceAction::Start => "start",
            InstanceAction::PowerOff => "powerOff",
            InstanceAction::Restart => "restart",
            InstanceAction::Deallocate => "deallocate",
            InstanceAction::Reimage => "reimage",
            InstanceAction::ReimageAll => "reimageAll",
            InstanceAction::ManualUpgrade => "manualUpgrade",
            InstanceAction::Delete => "delete",
            InstanceAction::Redeploy => "redeploy",
            InstanceAction::PerformMaintenance => "performMaintenance",
            InstanceAction::Replace => "replace",
        }
    }
}

impl From<RepairAction> for InstanceAction {
    fn from(a: RepairAction) -> Self {
        match a {
            RepairAction::Replace => InstanceAction::Replace,
            RepairAction::Restart => InstanceAction::Restart,
            RepairAction::Reimage => InstanceAction::Reimage,
        }
    }
}

/// One autoscale evaluation that changed capacity or wanted to and could not.
#[derive(Debug, Clone)]
pub struct AutoscaleEvaluation {
    /// Store key of the autoscale setting (`autoscale/…`).
    pub setting_key: String,
    pub vmss: VmssRef,
    /// The set's revision the evaluation read its capacity from.
    pub set_revision: Revision,
    pub decision: Decision,
}

/// `If-Match` / `If-None-Match`: ARM's optimistic concurrency on etags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
}

impl Preconditions {
    /// Checks the headers against the resource's current etag (`None` when it does not
    /// exist): `412 PreconditionFailed` when they do not hold, as ARM answers.
    pub fn check(&self, current: Option<&str>) -> Result<(), ArmError> {
        let matches = |header: &str| {
            header
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || current.is_some_and(|c| t.trim_start_matches("W/") == c))
        };
        if let Some(h) = &self.if_match {
            if current.is_none() || !matches(h) {
                return Err(ArmError::precondition_failed(format!(
                    "If-Match {h} does not match the resource's current etag{}: read it again and retry.",
                    current.map(|c| format!(" {c}")).unwrap_or_else(|| " (it does not exist)".into())
                )));
            }
        }
        if let Some(h) = &self.if_none_match {
            if current.is_some() && matches(h) {
                return Err(ArmError::precondition_failed(format!(
                    "If-None-Match {h} matches the existing resource: it was not changed."
                )));
            }
        }
        Ok(())
    }
}

/// Server-wide limits every command obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest capacity a scale set may have (Azure's 1000 unless configured lower).
    pub max_capacity: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_capacity: MAX_CAPACITY,
        }
    }
}

/// What a decider may not invent itself: the time and fresh ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub now: Timestamp,
    /// The id of the operation record the command starts, if it starts one.
    pub operation_id: String,
    /// A new set's `uniqueId`.
    pub unique_id: String,
}

impl Env {
    /// `now` as ARM prints times.
    pub fn now_text(&self) -> String {
        crate::clock::arm_time(self.now)
    }

    /// A new operation record, in progress since now.
    pub fn operation(&self, vmss: &VmssRef, name: String, wait: OperationWait) -> OperationRecord {
        OperationRecord {
            id: self.operation_id.clone(),
            name,
            subscription: vmss.subscription.clone(),
            status: OperationStatus::InProgress,
            start_time: self.now_text(),
            end_time: None,
            error: None,
            wait,
            message: None,
        }
    }

    /// A new operation record that is already done (its effect was immediate).
    pub fn finished_operation(
        &self,
        vmss: &VmssRef,
        name: String,
        wait: OperationWait,
    ) -> OperationRecord {
        OperationRecord {
            status: OperationStatus::Succeeded,
            end_time: Some(self.now_text()),
            ..self.operation(vmss, name, wait)
        }
    }
}

/// The image version a model's `imageReference.id` names, as the galleries resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The `imageReference.id` this resolves (a version, a definition, or `latest`).
    pub requested: String,
    /// The version's own id.
    pub id: String,
    pub version: String,
    pub shoal: ImageVersionShoal,
}

/// What a decider wants written, and what it means.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// Applied in one transaction, each guarded by the revision the decider saw.
    pub ops: Vec<TxnOp>,
    /// The long-running operation the command starts (its record is among `ops`).
    pub operation: Option<OperationRecord>,
    /// The set as written, when the command changes it.
    pub set: Option<VmssRecord>,
    /// Instance records as written.
    pub instances: Vec<InstanceRecord>,
    /// A `Put` that creates the set (rather than replacing it).
    pub created: bool,
    /// Autoscale: the evaluation as recorded in the activity log, when it was recorded.
    pub recorded: Option<Decision>,
}

/// What executing a command did.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The store revision of the transaction; `None` when there was nothing to write.
    pub revision: Option<Revision>,
    /// What was written (its `ops` went into the transaction and are empty here).
    pub writes: Writes,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command is not legal now, or names something that does not exist or is
    /// invalid: the caller's error, in ARM's shape.
    #[error("The command was refused")]
    Rejected(#[source] ArmError),
    /// A record changed between the read and the write; nothing was written. The caller
    /// may retry (a client) or look again later (autoscale, repair).
    #[error("A record changed while the command was applied")]
    Conflict(#[source] shoal_store::StoreError),
    #[error("The state store failed")]
    Store(#[source] shoal_store::StoreError),
    #[error("A stored record could not be read")]
    Decode(#[source] crate::kv::KvError),
}

impl From<ArmError> for CommandError {
    fn from(e: ArmError) -> Self {
        CommandError::Rejected(e)
    }
}

impl From<crate::kv::KvError> for CommandError {
    fn from(e: crate::kv::KvError) -> Self {
        match e {
            crate::kv::KvError::Store(s) => CommandError::Store(s),
            other => CommandError::Decode(other),
        }
    }
}

/// `409 Conflict` when the set is being deleted.
pub(crate) fn require_not_deleting(set: &VmssRecord) -> Result<(), ArmError> {
    if set.deleting {
        return Err(
            ArmError::conflict(format!("Scale set '{}' is being deleted.", set.vmss.name))
                .with_target(set.vmss.name.clone()),
        );
    }
    Ok(())
}

/// Makes `op` the operation the set's `provisioningState` follows: `state` (`Creating`,
/// `Updating`, `Deleting`) until the controller finishes it.
pub(crate) fn follow(rec: &mut VmssRecord, op: &OperationRecord, state: &str) {
    rec.operation = Some(op.id.clone());
    if let Some(p) = rec.model.properties.as_mut() {
        p.provisioning_state = Some(state.to_string());
    }
}

/// The etag ARM shows for a record at `revision`.
pub fn etag(revision: Revision) -> String {
    format!("\"{revision}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_follow_http_semantics() {
        let p = |m: Option<&str>, n: Option<&str>| Preconditions {
            if_match: m.map(String::from),
            if_none_match: n.map(String::from),
        };
        let cur = Some("\"7\"");
        assert!(p(None, None).check(cur).is_ok());
        assert!(p(Some("\"7\""), None).check(cur).is_ok());
        assert!(p(Some("W/\"7\""), None).check(cur).is_ok());
        assert!(p(Some("\"6\", \"7\""), None).check(cur).is_ok());
        assert_eq!(p(Some("\"6\""), None).check(cur).unwrap_err().status, 412);
        assert!(p(Some("*"), None).check(None).is_err());
        assert!(p(None, Some("*")).check(None).is_ok());
        assert!(p(None, Some("*")).check(cur).is_err());
        assert!(p(None, Some("\"6\"")).check(cur).is_ok());
    }
}
