//! `virtualMachineScaleSetRollingUpgrades`: start an OS rolling upgrade, read the latest
//! one, cancel it — answered honestly for what Shoal does today.
//!
//! An OS rolling upgrade moves instances to the newest version of the image the set
//! names (Azure: the newest platform or gallery image version). Shoal has no rolling
//! upgrade engine yet, so:
//!
//! - `POST .../osRollingUpgrade` when every instance already runs the newest version (the
//!   set pins a version, or names the image and runs its newest version): a rolling
//!   upgrade with nothing to do, recorded as Azure records one — `runningStatus.code`
//!   `Completed`, all progress counts 0 — answered `202` with an operation that has
//!   already `Succeeded`. When some instance would change: `409 OperationNotAllowed`
//!   saying so, rather than pretending.
//! - `GET .../rollingUpgrades/latest`: that record; before any upgrade, `404 NotFound`
//!   (Azure answers 404 too when a set has never had one).
//! - `POST .../rollingUpgrades/cancel`: nothing is ever in progress, so Azure's answer
//!   when no upgrade runs: `409 OperationNotAllowed`, "There is no ongoing Rolling
//!   Upgrade to cancel."
//!
//! Note the spelling: a rolling upgrade's own status code is `Cancelled` (Azure's
//! `RollingUpgradeStatusCode`), while an operation's status is `Canceled`.

use http::Method;
use serde_json::{json, Value};
use shoal_control::kv;
use shoal_model::ids::VmssRef;
use shoal_model::records::{operation_key, OperationStatus, OperationWait};
use shoal_model::ArmError;
use shoal_store::Expect;

use crate::galleries::resolve_image;
use crate::groups::method_not_allowed;
use crate::instances::instances_of;
use crate::response::{json, lro, ApiResult, Ctx};
use crate::scalesets::require_set;
use crate::state::{txn_error, ApiState};

const TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades";

fn key(vmss: &VmssRef) -> String {
    format!(
        "rollingupgrade/{}/{}/{}",
        vmss.subscription.to_ascii_lowercase(),
        vmss.resource_group.to_ascii_lowercase(),
        vmss.name.to_ascii_lowercase()
    )
}

/// Azure's defaults for a rolling upgrade policy the set does not spell out.
fn policy(set_policy: Option<&shoal_model::upgrade_policy::RollingUpgradePolicy>) -> Value {
    json!(shoal_model::upgrade_policy::RollingPolicy::from_set(set_policy))
}

/// `POST .../osRollingUpgrade`.
pub async fn start_os_upgrade(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    if set.value.deleting {
        return Err(ArmError::conflict(format!(
            "Scale set '{}' is being deleted.",
            set.value.vmss.name
        )));
    }
    let image_id = set.value.model.image_id().unwrap_or_default().to_string();
    let (_, newest, _) = resolve_image(st, &image_id).await?;
    let behind = instances_of(st, vmss)
        .await?
        .iter()
        .filter(|(r, _)| !r.value.deleting && r.value.launch.image_version != newest)
        .count();
    if behind > 0 || set.value.launch.image_version != newest {
        return Err(ArmError::operation_not_allowed(format!(
            "Image version {newest} is newer than what {behind} instance(s) of '{}' run, and Shoal cannot roll it out in batches yet. Update the scale set's model to it, then run manualupgrade (shoal vmss update-instances).",
            set.value.vmss.name
        )));
    }

    let now = st.now();
    let unique_id = set.value.model.props().unique_id.clone();
    let status = json!({
        "uniqueId": unique_id,
        "properties": {
            "policy": policy(
                set.value
                    .model
                    .props()
                    .upgrade_policy
                    .as_ref()
                    .and_then(|u| u.rolling_upgrade_policy.as_ref()),
            ),
            "runningStatus": {
                "code": "Completed",
                "startTime": now,
                "lastAction": "Start",
                "lastActionTime": now,
            },
            "progress": {
                "successfulInstanceCount": 0,
                "failedInstanceCount": 0,
                "inProgressInstanceCount": 0,
                "pendingInstanceCount": 0,
            },
        },
    });
    let mut op = st.new_operation(
        &vmss.subscription,
        format!(
            "OS rolling upgrade of {} (nothing to upgrade)",
            set.value.vmss.name
        ),
        OperationWait::Vmss {
            vmss: set.value.vmss.clone(),
            instance_ids: Some(vec![]),
        },
    );
    op.status = OperationStatus::Succeeded;
    op.end_time = Some(now);
    let existing = st.get::<Value>(&key(vmss)).await?;
    let expect = existing
        .as_ref()
        .map_or(Expect::Absent, |e| Expect::ModRevision(e.revision));
    st.store
        .txn(vec![
            kv::put_op(key(vmss), &status, expect),
            kv::put_op(operation_key(&op.id), &op, Expect::Absent),
        ])
        .await
        .map_err(txn_error)?;
    let location = set.value.model.location.as_deref().unwrap_or("local");
    Ok(lro(
        202,
        None,
        &ctx.operation_url(&vmss.subscription, location, &op.id),
        true,
    ))
}

/// The latest rolling upgrade of the set (of this incarnation of it), if any.
async fn latest(st: &ApiState, vmss: &VmssRef) -> Result<Option<Value>, ArmError> {
    let set = require_set(st, vmss).await?;
    let Some(rec) = st.get::<Value>(&key(vmss)).await? else {
        return Ok(None);
    };
    let unique_id = set.value.model.props().unique_id.clone();
    if rec.value["uniqueId"] != json!(unique_id) {
        // Left over from a deleted set of the same name.
        return Ok(None);
    }
    let mut v = json!({
        "id": format!("{}/rollingUpgrades/latest", set.value.vmss.id()),
        "name": "latest",
        "type": TYPE,
        "location": set.value.model.location,
        "properties": rec.value["properties"],
    });
    if let Some(tags) = &set.value.model.tags {
        v["tags"] = json!(tags);
    }
    Ok(Some(v))
}

/// `GET .../rollingUpgrades/latest`.
pub async fn get_latest(st: &ApiState, method: &Method, vmss: &VmssRef) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    match latest(st, vmss).await? {
        Some(v) => Ok(json(200, &v)),
        None => Err(ArmError::new(
            404,
            "NotFound",
            format!(
                "No rolling upgrade has run on scale set '{}'. Start one with osRollingUpgrade.",
                vmss.name
            ),
        )
        .with_target(vmss.name.clone())),
    }
}

/// `POST .../rollingUpgrades/cancel`.
pub async fn cancel(st: &ApiState, method: &Method, vmss: &VmssRef) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let running = latest(st, vmss)
        .await?
        .is_some_and(|v| v["properties"]["runningStatus"]["code"] == "RollingForward");
    if !running {
        return Err(ArmError::operation_not_allowed(
            "There is no ongoing Rolling Upgrade to cancel.",
        ));
    }
    // Unreachable until rolling upgrades run for real (nothing records RollingForward).
    Err(ArmError::operation_not_allowed(
        "Cancelling a running rolling upgrade is not supported yet.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults_are_azures_and_the_set_overrides_them() {
        let p = policy(None);
        assert_eq!(p["maxBatchInstancePercent"], 20);
        assert_eq!(p["pauseTimeBetweenBatches"], "PT0S");
        let p = policy(Some(&shoal_model::upgrade_policy::RollingUpgradePolicy {
            max_batch_instance_percent: Some(50),
            ..Default::default()
        }));
        assert_eq!(p["maxBatchInstancePercent"], 50);
        assert_eq!(p["maxUnhealthyInstancePercent"], 20);
    }
}
