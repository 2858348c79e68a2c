//! `virtualMachineScaleSetRollingUpgrades`: start an OS rolling upgrade, read the latest
//! one, cancel it. Handlers only parse and answer; the upgrade itself is the controller's
//! (`shoal_control::rolling`), and its state is one record per set
//! (`rollingupgrade/{sub}/{rg}/{set}`).
//!
//! - `POST .../osRollingUpgrade`: the set's model is brought to the newest version of the
//!   image it names (when it names a definition or `latest`), then a rolling upgrade
//!   starts (`RollingChange::Start`) — or the one running is followed. `202` with
//!   `Location` and `Azure-AsyncOperation`; the operation ends when the upgrade is
//!   Completed (Succeeded), Cancelled (Succeeded) or Faulted (Failed, with Azure's code).
//! - `GET .../rollingUpgrades/latest`: that record as Azure shows it; `404 NotFound`
//!   before any upgrade (as Azure answers).
//! - `POST .../extensionRollingUpgrade`: every unprotected instance restarts once, batch
//!   by batch under the rolling policy, taking the set's current `extensionProfile`.
//! - `GET .../osUpgradeHistory`: the set's past upgrades, newest first.
//! - `POST .../rollingUpgrades/cancel`: the batch in flight finishes, no new batch starts,
//!   the upgrade ends `Cancelled`. `409 OperationNotAllowed` when nothing rolls forward.
//!
//! Note the spelling: a rolling upgrade's own status code is `Cancelled` (Azure's
//! `RollingUpgradeStatusCode`), while an operation's status is `Canceled`.

use http::Method;
use jiff::Timestamp;
use serde_json::{json, Value};
use shoal_control::commands::{
    Command, CommandError, Executed, RollingChange, RollingCommand, SetChange,
};
use shoal_control::rolling::{rolling_key, RollingUpgrade};
use shoal_model::ids::VmssRef;
use shoal_model::ArmError;

use crate::galleries::resolve_image;
use crate::groups::method_not_allowed;
use crate::response::{json, lro, ApiResult, Ctx};
use crate::scalesets::require_set;
use crate::state::{command_error, ApiState};

const TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades";

/// Runs a rolling command, again when the controller wrote the record meanwhile.
async fn execute(
    st: &ApiState,
    vmss: &VmssRef,
    change: RollingChange,
) -> Result<Executed, ArmError> {
    let mut tries = 0;
    loop {
        let cmd = Command::Rolling(RollingCommand {
            vmss: vmss.clone(),
            change: change.clone(),
        });
        match st.commands().execute(cmd).await {
            Err(CommandError::Conflict(_)) if tries < 5 => tries += 1,
            other => return other.map_err(command_error),
        }
    }
}

fn accepted(ctx: &Ctx, vmss: &VmssRef, location: &str, done: &Executed) -> ApiResult {
    let op = done
        .writes
        .operation
        .as_ref()
        .ok_or_else(|| ArmError::internal("The command started no operation."))?;
    Ok(lro(
        202,
        None,
        &ctx.operation_url(&vmss.subscription, location, &op.id),
        true,
    ))
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
    let location = set
        .value
        .model
        .location
        .clone()
        .unwrap_or_else(|| "local".into());
    let image_id = set.value.model.image_id().unwrap_or_default().to_string();
    let (_, newest, _) = resolve_image(st, &image_id).await?;
    if newest != set.value.launch.image_version {
        // A generic model update: the model takes the image's newest version.
        st.commands()
            .execute(Command::ScaleSet(shoal_control::commands::SetCommand {
                vmss: vmss.clone(),
                change: SetChange::Patch(json!({})),
                preconditions: Default::default(),
            }))
            .await
            .map_err(command_error)?;
    }
    let done = execute(st, vmss, RollingChange::Start { platform: false }).await?;
    accepted(ctx, vmss, &location, &done)
}

/// `POST .../extensionRollingUpgrade`: every instance restarts once, batch by batch, and
/// takes the set's current `extensionProfile`.
pub async fn start_extension_upgrade(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    let location = set
        .value
        .model
        .location
        .clone()
        .unwrap_or_else(|| "local".into());
    let done = execute(st, vmss, RollingChange::StartExtensions).await?;
    accepted(ctx, vmss, &location, &done)
}

/// The latest rolling upgrade of the set (of this incarnation of it), if any.
async fn latest(st: &ApiState, vmss: &VmssRef) -> Result<Option<Value>, ArmError> {
    let set = require_set(st, vmss).await?;
    let Some(rec) = st.get::<Value>(&rolling_key(vmss)).await? else {
        return Ok(None);
    };
    // A record of an older shape, or of a deleted set of the same name, is no upgrade of
    // this set.
    let Ok(rec) = serde_json::from_value::<RollingUpgrade>(rec.value) else {
        return Ok(None);
    };
    if rec.unique_id != set.value.model.props().unique_id {
        return Ok(None);
    }
    let mut v = json!({
        "id": format!("{}/rollingUpgrades/latest", set.value.vmss.id()),
        "name": "latest",
        "type": TYPE,
        "location": set.value.model.location,
        "properties": rec.properties(),
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

/// `GET .../osUpgradeHistory`: the set's past upgrades, newest first, in Azure's
/// `UpgradeOperationHistoricalStatusInfo` shape.
pub async fn os_upgrade_history(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    let record = st
        .get::<Value>(&rolling_key(vmss))
        .await?
        .and_then(|r| serde_json::from_value::<RollingUpgrade>(r.value).ok())
        .filter(|r| r.unique_id == set.value.model.props().unique_id);
    let image = set.value.model.image_id().unwrap_or_default().to_string();
    let items: Vec<Value> = record
        .map(|r| r.history)
        .unwrap_or_default()
        .iter()
        .rev()
        .map(|h| {
            let mut p = json!({
                "runningStatus": {"code": h.code, "startTime": h.start_time, "completedTime": h.completed_time},
                "progress": {
                    "successfulInstanceCount": h.successful,
                    "failedInstanceCount": h.failed,
                    "inProgressInstanceCount": 0,
                    "pendingInstanceCount": 0,
                },
                "startedBy": h.started_by,
                "targetImageReference": {"id": image, "exactVersion": h.target_image_version},
                "rollbackInfo": {
                    "successfullyRolledbackInstanceCount": h.rolled_back,
                    "failedRolledbackInstanceCount": 0,
                },
            });
            if let Some(e) = &h.error {
                p["error"] = json!(e);
            }
            json!({"properties": p, "type": "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades", "location": set.value.model.location})
        })
        .collect();
    let path = format!("{}/osUpgradeHistory", vmss.id());
    Ok(crate::response::page(ctx, &path, items, st.page_size))
}

/// `POST .../rollingUpgrades/cancel`.
pub async fn cancel(st: &ApiState, ctx: &Ctx, method: &Method, vmss: &VmssRef) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    let location = set
        .value
        .model
        .location
        .clone()
        .unwrap_or_else(|| "local".into());
    let done = execute(st, vmss, RollingChange::Cancel).await?;
    accepted(ctx, vmss, &location, &done)
}

/// Every batch and decision of the rolling upgrades in `sub` as activity-log events
/// (`Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades/action`), within `window`
/// and, when given, of one resource or group (`scope`).
pub async fn activity_events(
    st: &ApiState,
    sub: &str,
    scope: crate::activity_log::Scope<'_>,
) -> Result<Vec<(Timestamp, Value)>, ArmError> {
    let prefix = shoal_model::keys::in_subscription(shoal_model::keys::ROLLING_UPGRADE, sub);
    let mut events = Vec::new();
    for rec in st.list::<Value>(&prefix).await? {
        let Ok(r) = serde_json::from_value::<RollingUpgrade>(rec.value) else {
            continue;
        };
        let id = r.vmss.id();
        let rg = r.vmss.resource_group.clone();
        if !scope.covers(&id, &rg) {
            continue;
        }
        let operation = "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades/action";
        for (i, e) in r.log.iter().enumerate() {
            let Ok(t) = e.time.parse::<Timestamp>() else {
                continue;
            };
            if !scope.within(t) {
                continue;
            }
            let event_id = format!("{}-{}-{i}", rec.key.replace('/', "-"), r.start_time);
            let level = if e.message.starts_with("Faulted") {
                "Error"
            } else {
                "Informational"
            };
            let event = crate::activity_log::Event {
                subscription: sub,
                resource_group: &rg,
                resource_id: &id,
                resource: ("Microsoft.Compute", shoal_model::vmss::VMSS_TYPE),
                event_id: &event_id,
                time: &e.time,
                at: t,
                operation: (operation, "Rolling upgrade"),
                caller: "Microsoft.Compute/virtualMachineScaleSets",
                channels: "Operation",
                event_name: ("RollingUpgrade", "Rolling upgrade"),
                category: ("Administrative", "Administrative"),
                level,
                status: r.code.as_str(),
                description: &e.message,
                properties: json!({"Description": e.message}),
            };
            events.push((t, event.to_json()));
        }
    }
    Ok(events)
}
