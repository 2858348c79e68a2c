//! Rolling upgrades: move a scale set's instances to its latest model batch by batch,
//! each batch drained, upgraded and waited on until healthy, under the set's
//! `rollingUpgradePolicy` (Azure's `virtualMachineScaleSetRollingUpgrades`).
//!
//! Decide, then do. The state of a set's upgrade is one record in the store,
//! [`RollingUpgrade`] at `rollingupgrade/{sub}/{rg}/{set}`; [`plan::next_step`] is pure —
//! the set, its instances, their statuses and health, that record and `now` in, a
//! [`plan::Step`] out (the record as it should be next, instance launch specs to change,
//! instances to delete). The controller applies a step through the command layer
//! ([`crate::commands::RollingChange::Apply`]) in one transaction guarded by the revisions
//! the step was planned from, so a crash at any point leaves either the step or nothing,
//! and the next reconcile plans again from what is stored: the upgrade resumes.
//!
//! The API writes the record too ([`crate::commands::RollingChange::Start`] for
//! `osRollingUpgrade`, [`crate::commands::RollingChange::Cancel`]) and renders it as
//! `rollingUpgrades/latest`. Every batch and decision is appended to the record's `log`,
//! which the activity log shows.

pub mod auto_os;
pub mod health;
pub mod plan;
pub mod runner;

use serde::{Deserialize, Serialize};
use shoal_model::ids::VmssRef;
use shoal_model::records::LaunchSpec;
use shoal_model::upgrade_policy::{RollingPolicy, RollingStatusCode};
use shoal_model::ArmError;

pub use plan::{next_step, Input, Step};

/// The store key of a set's upgrade record.
pub fn rolling_key(vmss: &VmssRef) -> String {
    shoal_model::keys::rolling_upgrade_key(vmss)
}

/// Log entries kept per upgrade.
pub const LOG_LIMIT: usize = 200;

/// One rolling upgrade of a set: the latest, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpgrade {
    pub vmss: VmssRef,
    /// The `uniqueId` of the set it belongs to (a set of the same name created later is
    /// another set).
    pub unique_id: Option<String>,
    pub policy: RollingPolicy,
    pub code: RollingStatusCode,
    pub start_time: String,
    /// `Start` or `Cancel`.
    pub last_action: String,
    pub last_action_time: String,
    #[serde(default)]
    pub end_time: Option<String>,
    /// `User` (a model change or `osRollingUpgrade`) or `Platform`.
    pub started_by: String,
    /// The set's launch generation the upgrade moves instances to.
    pub target_generation: u64,
    /// The image version of that generation.
    pub target_image_version: String,
    /// A cancel was asked for: the batch in flight finishes, no new one starts.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Batches of the upgrade as planned when it started (for "batch k of n").
    pub total_batches: u32,
    pub batches_done: u32,
    #[serde(default)]
    pub batch: Option<Batch>,
    /// Instances upgraded and found healthy.
    #[serde(default)]
    pub upgraded: Vec<u64>,
    /// Instances upgraded and found unhealthy (or not healthy in time).
    #[serde(default)]
    pub failed: Vec<u64>,
    /// Failed instances returned to their previous model.
    #[serde(default)]
    pub rolled_back: Vec<u64>,
    /// Instances still to upgrade, as of the last step.
    #[serde(default)]
    pub pending: u64,
    /// No batch starts before this time (`pauseTimeBetweenBatches`).
    #[serde(default)]
    pub next_batch_at: Option<String>,
    #[serde(default)]
    pub error: Option<ArmError>,
    /// Long-running operations (`osRollingUpgrade`) that end when the upgrade does.
    #[serde(default)]
    pub operations: Vec<String>,
    #[serde(default)]
    pub log: Vec<LogEntry>,
    /// Automatic OS upgrade: failed instances go back to their previous model on a
    /// breach, whatever `rollbackFailedInstancesOnPolicyBreach` says.
    #[serde(default)]
    pub automatic_rollback: bool,
    /// An extension upgrade (`extensionRollingUpgrade`): batches restart instances
    /// rather than move them to a new model.
    #[serde(default)]
    pub extensions: bool,
    /// Image versions an automatic OS upgrade rolled back: not tried again (carried from
    /// one upgrade record to the next).
    #[serde(default)]
    pub bad_versions: Vec<String>,
    /// Past upgrades, newest last (`osUpgradeHistory`; carried over, bounded).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// One finished upgrade, as `osUpgradeHistory` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub code: RollingStatusCode,
    pub start_time: String,
    pub completed_time: String,
    pub started_by: String,
    pub target_image_version: String,
    pub successful: u64,
    pub failed: u64,
    pub rolled_back: u64,
    #[serde(default)]
    pub error: Option<ArmError>,
}

/// Past upgrades kept per set.
pub const HISTORY_LIMIT: usize = 10;

/// The batch in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// 1-based.
    pub number: u32,
    pub started: String,
    pub members: Vec<Member>,
    /// With `maxSurge`: the batch's replacements, created before the members go.
    #[serde(default)]
    pub surge: Option<Surge>,
}

/// An instance of the batch and the model it ran before (for a rollback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub instance_id: u64,
    pub previous: LaunchSpec,
}

/// `maxSurge`: `count` new instances (ids from `first_new_id`) on the new model, which the
/// set holds on top of its capacity until they are healthy and the members are deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Surge {
    pub first_new_id: u64,
    pub count: u64,
}

/// One batch or decision, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub time: String,
    pub message: String,
}

impl RollingUpgrade {
    /// Still moving (forward or back).
    pub fn is_running(&self) -> bool {
        matches!(
            self.code,
            RollingStatusCode::RollingForward | RollingStatusCode::RollingBack
        )
    }

    /// Instances the set holds above its capacity right now (`maxSurge`).
    pub fn surge_extra(&self) -> u64 {
        match (&self.batch, self.is_running()) {
            (Some(b), true) => b.surge.as_ref().map_or(0, |s| s.count),
            _ => 0,
        }
    }

    /// Instances of the batch in flight (which repairs leave alone).
    pub fn in_flight(&self) -> Vec<u64> {
        let Some(b) = &self.batch else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = b.members.iter().map(|m| m.instance_id).collect();
        if let Some(s) = &b.surge {
            ids.extend(s.first_new_id..s.first_new_id + s.count);
        }
        ids
    }

    /// Records the upgrade, now ended, in its history.
    pub fn remember(&mut self, now: &str) {
        self.history.push(HistoryEntry {
            code: self.code,
            start_time: self.start_time.clone(),
            completed_time: now.to_string(),
            started_by: self.started_by.clone(),
            target_image_version: self.target_image_version.clone(),
            successful: self.upgraded.len() as u64,
            failed: self.failed.len() as u64,
            rolled_back: self.rolled_back.len() as u64,
            error: self.error.clone(),
        });
        if self.history.len() > HISTORY_LIMIT {
            let extra = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..extra);
        }
    }

    pub fn note(&mut self, time: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(set = %self.vmss.name, %message, "rolling upgrade");
        self.log.push(LogEntry {
            time: time.to_string(),
            message,
        });
        if self.log.len() > LOG_LIMIT {
            let extra = self.log.len() - LOG_LIMIT;
            self.log.drain(..extra);
        }
    }

    /// `progress` as Azure shows it.
    pub fn progress(&self) -> serde_json::Value {
        serde_json::json!({
            "successfulInstanceCount": self.upgraded.len(),
            "failedInstanceCount": self.failed.len(),
            "inProgressInstanceCount": self.batch.as_ref().map_or(0, |b| b.members.len()),
            "pendingInstanceCount": self.pending,
        })
    }

    /// `properties` of `rollingUpgrades/latest`.
    pub fn properties(&self) -> serde_json::Value {
        let mut running = serde_json::json!({
            "code": self.code,
            "startTime": self.start_time,
            "lastAction": self.last_action,
            "lastActionTime": self.last_action_time,
        });
        if let Some(end) = &self.end_time {
            running["endTime"] = serde_json::json!(end);
        }
        let mut p = serde_json::json!({
            "policy": self.policy,
            "runningStatus": running,
            "progress": self.progress(),
            // Shoal's extension: where the upgrade is, for progress displays.
            "shoal": {
                "currentBatch": self.batch.as_ref().map(|b| b.number),
                "batchesDone": self.batches_done,
                "totalBatches": self.total_batches,
                "targetImageVersion": self.target_image_version,
                "startedBy": self.started_by,
            },
        });
        if let Some(e) = &self.error {
            p["error"] = serde_json::json!(e);
        }
        p
    }
}
