//! When is a long-running operation done? Pure evaluation of an [`OperationWait`]
//! against the current records of the set it concerns.

use std::collections::HashMap;

use shoal_model::error::ArmError;
use shoal_model::records::{InstanceRecord, InstanceStatus, OperationWait, VmssRecord};

/// The verdict on one operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    InProgress { message: String },
    Succeeded,
    Failed(ArmError),
}

/// The records an operation on a scale set is judged by.
#[derive(Debug, Clone, Copy)]
pub struct SetView<'a> {
    pub vmss: Option<&'a VmssRecord>,
    pub instances: &'a [InstanceRecord],
    pub statuses: &'a HashMap<u64, InstanceStatus>,
    /// The planner has nothing left to do for the set.
    pub settled: bool,
}

pub fn evaluate(wait: &OperationWait, view: SetView<'_>) -> Outcome {
    match wait {
        OperationWait::VmssGone { .. } => match view.vmss {
            None => Outcome::Succeeded,
            Some(_) => {
                let left = view.instances.len();
                Outcome::InProgress {
                    message: format!("deleting: {left} instance(s) left"),
                }
            }
        },
        OperationWait::InstancesGone { instance_ids, .. } => {
            let left = view
                .instances
                .iter()
                .filter(|i| instance_ids.contains(&i.instance_id))
                .count();
            if left == 0 {
                Outcome::Succeeded
            } else {
                Outcome::InProgress {
                    message: format!("deleting: {left} instance(s) left"),
                }
            }
        }
        // The rolling-upgrade runner ends these; a set deleted meanwhile ends them here.
        OperationWait::RollingUpgrade { .. } if view.vmss.is_none() => {
            Outcome::Failed(ArmError::new(
                409,
                "OperationPreempted",
                "The scale set was deleted before its rolling upgrade finished.",
            ))
        }
        OperationWait::RollingUpgrade { .. } => Outcome::InProgress {
            message: "rolling upgrade in progress".into(),
        },
        OperationWait::GroupGone { .. } => Outcome::InProgress {
            message: "deleting the resource group".into(),
        },
        OperationWait::Vmss { instance_ids, .. } => {
            let Some(set) = view.vmss else {
                return Outcome::Failed(ArmError::new(
                    409,
                    "OperationPreempted",
                    "The scale set was deleted before this operation finished.",
                ));
            };
            let relevant: Vec<&InstanceRecord> = view
                .instances
                .iter()
                .filter(|i| !i.deleting)
                .filter(|i| {
                    instance_ids
                        .as_ref()
                        .is_none_or(|ids| ids.contains(&i.instance_id))
                })
                .collect();
            let removing = if instance_ids.is_none() {
                view.instances.iter().filter(|i| i.deleting).count()
            } else {
                0
            };
            let mut ready = 0;
            let mut failed: Vec<String> = Vec::new();
            for inst in &relevant {
                match view.statuses.get(&inst.instance_id) {
                    Some(s) if s.satisfies(inst) => ready += 1,
                    Some(s) if s.failed_for(inst) => failed.push(format!(
                        "instance {}: {}",
                        inst.instance_id,
                        s.message.clone().unwrap_or_else(|| "failed".into())
                    )),
                    _ => {}
                }
            }
            let target = if instance_ids.is_none() {
                usize::try_from(set.model.capacity().max(0))
                    .unwrap_or(0)
                    .max(relevant.len())
            } else {
                relevant.len()
            };
            let pending = target.saturating_sub(ready + failed.len());
            if pending == 0 && removing == 0 && (instance_ids.is_some() || view.settled) {
                if failed.is_empty() {
                    return Outcome::Succeeded;
                }
                return Outcome::Failed(ArmError::new(
                    200,
                    "VMStartFailed",
                    format!("{} instance(s) failed: {}", failed.len(), failed.join("; ")),
                ));
            }
            let mut message = format!("{ready}/{target} instances ready");
            if removing > 0 {
                message.push_str(&format!(", {removing} being removed"));
            }
            if !failed.is_empty() {
                message.push_str(&format!(", {} failed", failed.len()));
            }
            Outcome::InProgress { message }
        }
    }
}
