//! The scale-set and instance operations Azure has beyond power and image actions:
//!
//! - `setOrchestrationServiceState` suspends or resumes automatic repairs (the repair
//!   service's own state, which the controller honours);
//! - `scaleOut` sets a larger capacity (with `properties.zone`, only a zone of the set);
//! - `convertToSinglePlacementGroup` sets `singlePlacementGroup` (stored: Shoal has no
//!   placement groups);
//! - `reapply` is accepted with nothing to do (the controller applies the model
//!   continuously); `approveRollingUpgrade` moves the named instances (or all) to the
//!   latest model, as `manualUpgrade` — nothing is ever deferred waiting for approval;
//! - `forceRecoveryServiceFabricPlatformUpdateDomainWalk` is for Service Fabric sets,
//!   which Shoal does not run: 409;
//! - on one instance, `simulateEviction` evicts a Spot instance as its set's
//!   `evictionPolicy` says (deallocate, or delete), `retrieveBootDiagnosticsData` answers
//!   where its serial log is (Shoal's logs endpoint), and `attachDetachDataDisks` names
//!   managed disks, which Shoal does not have: a disk id is a 404 as Azure's for a
//!   missing disk.

use http::Method;
use serde_json::{json, Value};
use shoal_control::commands::{
    Command, InstanceAction, InstanceChange, InstanceCommand, SetChange, SetCommand, Targets,
};
use shoal_model::ids::VmssRef;
use shoal_model::records::InstanceRecord;
use shoal_model::vmss::VMSS_VM_TYPE;
use shoal_model::ArmError;

use crate::instances::{parse_instance_ids, parse_vm_id};
use crate::response::{empty, json, lro, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::scalesets::{location, require_set};
use crate::state::{body_object, command_error, ApiState};

/// An operation of this module, by its path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Reapply,
    ApproveRollingUpgrade,
    ConvertToSinglePlacementGroup,
    SetOrchestrationServiceState,
    ForceRecoveryServiceFabricPlatformUpdateDomainWalk,
    ScaleOut,
    SimulateEviction,
    RetrieveBootDiagnosticsData,
    AttachDetachDataDisks,
}

impl SetOp {
    /// The operation named `s` on a set (`instance: false`) or one instance.
    pub fn parse(s: &str, instance: bool) -> Option<SetOp> {
        let op = match s.to_ascii_lowercase().as_str() {
            "reapply" => SetOp::Reapply,
            "approverollingupgrade" => SetOp::ApproveRollingUpgrade,
            "converttosingleplacementgroup" if !instance => SetOp::ConvertToSinglePlacementGroup,
            "setorchestrationservicestate" if !instance => SetOp::SetOrchestrationServiceState,
            "forcerecoveryservicefabricplatformupdatedomainwalk" if !instance => {
                SetOp::ForceRecoveryServiceFabricPlatformUpdateDomainWalk
            }
            "scaleout" if !instance => SetOp::ScaleOut,
            "simulateeviction" if instance => SetOp::SimulateEviction,
            "retrievebootdiagnosticsdata" if instance => SetOp::RetrieveBootDiagnosticsData,
            "attachdetachdatadisks" if instance => SetOp::AttachDetachDataDisks,
            _ => return None,
        };
        Some(op)
    }

    pub fn name(&self) -> &'static str {
        match self {
            SetOp::Reapply => "reapply",
            SetOp::ApproveRollingUpgrade => "approveRollingUpgrade",
            SetOp::ConvertToSinglePlacementGroup => "convertToSinglePlacementGroup",
            SetOp::SetOrchestrationServiceState => "setOrchestrationServiceState",
            SetOp::ForceRecoveryServiceFabricPlatformUpdateDomainWalk => {
                "forceRecoveryServiceFabricPlatformUpdateDomainWalk"
            }
            SetOp::ScaleOut => "scaleOut",
            SetOp::SimulateEviction => "simulateEviction",
            SetOp::RetrieveBootDiagnosticsData => "retrieveBootDiagnosticsData",
            SetOp::AttachDetachDataDisks => "attachDetachDataDisks",
        }
    }
}

fn str_field<'a>(body: &'a Value, key: &str, target: &str) -> Result<&'a str, ArmError> {
    body.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ArmError::invalid_parameter(target, format!("Give {target} (a string).")))
}

/// `POST {set}/{op}` or `POST {set}/virtualMachines/{id}/{op}`.
pub async fn handle(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
    op: SetOp,
    instance: Option<&str>,
    body: &[u8],
) -> ApiResult {
    if *method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    let body = body_object(body, false)?;
    let instance = match instance {
        Some(id) => Some(parse_vm_id(vmss, id)?),
        None => None,
    };
    // Named instances must exist, whatever the operation does with them.
    let known = st.list::<InstanceRecord>(&vmss.instance_prefix()).await?;
    let exists = |id: u64| {
        known
            .iter()
            .any(|r| r.value.instance_id == id && !r.value.deleting)
    };
    let missing = |id: u64| ArmError::not_found(VMSS_VM_TYPE, &format!("{}_{id}", vmss.name));
    if let Some(id) = instance.filter(|id| !exists(*id)) {
        return Err(missing(id));
    }
    if let Some(ids) = parse_instance_ids(&body)? {
        if let Some(id) = ids.into_iter().find(|id| !exists(*id)) {
            return Err(missing(id));
        }
    }
    let patch = |p: Value| async move {
        st.commands()
            .execute(Command::ScaleSet(SetCommand {
                vmss: vmss.clone(),
                change: SetChange::Patch(p),
                preconditions: Default::default(),
            }))
            .await
            .map_err(command_error)
    };
    match op {
        SetOp::Reapply => Ok(empty(200)),
        SetOp::ApproveRollingUpgrade => {
            // Nothing is ever deferred; approving lets the named instances (or all) take
            // the latest model now, which is what an approval leads to.
            let targets = match (instance, parse_instance_ids(&body)?) {
                (Some(id), _) => Targets::One(id),
                (None, Some(ids)) => Targets::Listed(ids),
                (None, None) => Targets::All,
            };
            crate::instances::start_action(st, ctx, vmss, &set.value, InstanceAction::ManualUpgrade, targets)
                .await
        }
        SetOp::ConvertToSinglePlacementGroup => {
            if let Some(g) = body.get("activePlacementGroupId") {
                if !g.is_string() {
                    return Err(ArmError::invalid_parameter(
                        "activePlacementGroupId",
                        "activePlacementGroupId is a string.",
                    ));
                }
            }
            patch(json!({"properties": {"singlePlacementGroup": true}})).await?;
            Ok(empty(200))
        }
        SetOp::SetOrchestrationServiceState => {
            let service = str_field(&body, "serviceName", "serviceName")?;
            if !service.eq_ignore_ascii_case("AutomaticRepairs") {
                return Err(ArmError::invalid_parameter(
                    "serviceName",
                    format!("'{service}' is not an orchestration service: the one there is is AutomaticRepairs."),
                ));
            }
            let action = str_field(&body, "action", "action")?;
            let suspend = match action.to_ascii_lowercase().as_str() {
                "suspend" => true,
                "resume" => false,
                _ => {
                    return Err(ArmError::invalid_parameter(
                        "action",
                        format!("'{action}' is not an action: use Suspend or Resume."),
                    ))
                }
            };
            if !shoal_control::repair::repairs_enabled(&set.value) {
                return Err(ArmError::new(
                    409,
                    "OperationNotAllowed",
                    "Automatic repairs are not enabled on this scale set: enable automaticRepairsPolicy first.",
                ));
            }
            let mut state = shoal_control::repair::state_of(&set.value);
            state.suspended = suspend.then(|| "Suspended with setOrchestrationServiceState.".to_string());
            state.last_change = Some(shoal_control::clock::arm_time(st.clock.now()));
            st.commands()
                .execute(Command::Instances(InstanceCommand {
                    vmss: vmss.clone(),
                    change: InstanceChange::Repair {
                        repairs: Vec::new(),
                        state,
                    },
                }))
                .await
                .map_err(command_error)?;
            Ok(empty(200))
        }
        SetOp::ForceRecoveryServiceFabricPlatformUpdateDomainWalk => Err(ArmError::new(
            409,
            "OperationNotAllowed",
            "A platform update domain walk is for Service Fabric scale sets; this one is not (Shoal runs no Service Fabric).",
        )),
        SetOp::ScaleOut => {
            let capacity = body
                .get("capacity")
                .and_then(Value::as_i64)
                .ok_or_else(|| ArmError::invalid_parameter("capacity", "Give capacity: the number of instances after the scale-out."))?;
            if capacity <= set.value.model.capacity() {
                return Err(ArmError::invalid_parameter(
                    "capacity",
                    format!("A scale-out needs a capacity above the current {}.", set.value.model.capacity()),
                ));
            }
            if let Some(zone) = body.pointer("/properties/zone") {
                let zone = zone.as_str().unwrap_or_default();
                let zones = set.value.model.zones.clone().unwrap_or_default();
                if !zones.iter().any(|z| z == zone) {
                    return Err(ArmError::invalid_parameter(
                        "properties.zone",
                        format!("Zone '{zone}' is not one of the scale set's zones ({}).", if zones.is_empty() { "it has none".to_string() } else { zones.join(", ") }),
                    ));
                }
            }
            let done = patch(json!({"sku": {"capacity": capacity}})).await?;
            let url = done
                .writes
                .operation
                .as_ref()
                .map(|o| ctx.operation_url(&vmss.subscription, location(&set.value), &o.id));
            match url {
                Some(u) => Ok(lro(202, None, &u, true)),
                None => Ok(empty(200)),
            }
        }
        SetOp::SimulateEviction => {
            let id = instance.unwrap_or_default();
            let props = set.value.model.profile().cloned().unwrap_or_default();
            let spot = props
                .priority
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case("Spot") || p.eq_ignore_ascii_case("Low"));
            if !spot {
                return Err(ArmError::new(
                    409,
                    "OperationNotAllowed",
                    "Eviction can be simulated only for Spot instances: this set's priority is not Spot.",
                ));
            }
            let delete = props
                .eviction_policy
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case("Delete"));
            st.commands()
                .execute(Command::Instances(InstanceCommand {
                    vmss: vmss.clone(),
                    change: InstanceChange::Action {
                        action: if delete { InstanceAction::Delete } else { InstanceAction::Deallocate },
                        targets: Targets::One(id),
                    },
                }))
                .await
                .map_err(command_error)?;
            Ok(empty(204))
        }
        SetOp::RetrieveBootDiagnosticsData => {
            let id = instance.unwrap_or_default();
            let logs = format!(
                "{}{}/virtualMachines/{id}/shoal/logs?api-version=2024-07-01",
                ctx.base_url,
                vmss.id()
            );
            Ok(json(200, &json!({"serialConsoleLogBlobUri": logs})))
        }
        SetOp::AttachDetachDataDisks => {
            let disks = ["dataDisksToAttach", "dataDisksToDetach"]
                .iter()
                .flat_map(|k| body.get(*k).and_then(Value::as_array).cloned().unwrap_or_default())
                .collect::<Vec<_>>();
            let first = disks
                .iter()
                .find_map(|d| d.get("diskId").and_then(Value::as_str))
                .ok_or_else(|| ArmError::invalid_parameter("dataDisksToAttach", "Name the disks to attach or detach by diskId."))?;
            Err(ArmError::new(
                404,
                "NotFound",
                format!("The disk '{first}' was not found: Shoal has no managed disks (an instance's disk is its copy of the image)."),
            )
            .with_target("diskId".to_string()))
        }
    }
}
