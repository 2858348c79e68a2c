//! Scale sets and their instances: create/replace/update/delete, actions, views.
//!
//! Handlers validate, then write desired state (and an operation record) in one store
//! transaction and answer at once; the controller and agents do the work, and the
//! operation completes when observed state matches.

use std::collections::HashMap;

use http::Method;
use serde_json::{json, Value};
use shoal_control::kv::{self, Versioned};
use shoal_model::ids::VmssRef;
use shoal_model::records::{
    operation_key, HealthRecord, InstanceRecord, InstanceStatus, LaunchSpec, OperationRecord,
    OperationStatus, OperationWait, PowerIntent, VmssRecord,
};
use shoal_model::vmss::{self as model, VirtualMachineScaleSet, VMSS_TYPE};
use shoal_model::{names, sku, ArmError};
use shoal_store::{Expect, TxnOp};

use crate::groups::{method_not_allowed, resolve_image};
use crate::response::{self, empty, json, lro, ApiResult, Ctx};
use crate::routes::Action;
use crate::state::{body_object, txn_error, ApiState};
use crate::views;

pub async fn list(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: Option<&str>,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let prefix = match rg {
        Some(rg) => {
            st.require_group(sub, rg).await?;
            format!(
                "vmss/{}/{}/",
                sub.to_ascii_lowercase(),
                rg.to_ascii_lowercase()
            )
        }
        None => format!("vmss/{}/", sub.to_ascii_lowercase()),
    };
    let items = st
        .list::<VmssRecord>(&prefix)
        .await?
        .iter()
        .map(|s| views::vmss_json(&s.value, s.revision))
        .collect();
    let path = match rg {
        Some(rg) => format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets"),
        None => format!("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachineScaleSets"),
    };
    Ok(response::page(ctx, &path, items, st.page_size))
}

/// The set's record, or 404 (`ResourceGroupNotFound` when the group is missing).
pub async fn require_set(st: &ApiState, vmss: &VmssRef) -> Result<Versioned<VmssRecord>, ArmError> {
    st.require_group(&vmss.subscription, &vmss.resource_group)
        .await?;
    st.get::<VmssRecord>(&vmss.key())
        .await?
        .ok_or_else(|| ArmError::not_found(VMSS_TYPE, &vmss.name))
}

fn require_not_deleting(set: &VmssRecord) -> Result<(), ArmError> {
    if set.deleting {
        return Err(
            ArmError::conflict(format!("Scale set '{}' is being deleted.", set.vmss.name))
                .with_target(set.vmss.name.clone()),
        );
    }
    Ok(())
}

pub async fn scale_set(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
    body: &[u8],
) -> ApiResult {
    match *method {
        Method::GET => {
            let set = require_set(st, vmss).await?;
            Ok(json(200, &views::vmss_json(&set.value, set.revision)))
        }
        Method::PUT | Method::PATCH => {
            put_or_patch(st, ctx, *method == Method::PATCH, vmss, body).await
        }
        Method::DELETE => {
            st.require_group(&vmss.subscription, &vmss.resource_group)
                .await?;
            let Some(set) = st.get::<VmssRecord>(&vmss.key()).await? else {
                return Ok(empty(204));
            };
            let mut rec = set.value.clone();
            let op = st.new_operation(
                &vmss.subscription,
                format!("Delete scale set {}", vmss.name),
                OperationWait::VmssGone {
                    vmss: rec.vmss.clone(),
                },
            );
            rec.deleting = true;
            rec.operation = Some(op.id.clone());
            if let Some(p) = rec.model.properties.as_mut() {
                p.provisioning_state = Some("Deleting".into());
            }
            st.store
                .txn(vec![
                    kv::put_op(set.key.clone(), &rec, Expect::ModRevision(set.revision)),
                    kv::put_op(operation_key(&op.id), &op, Expect::Absent),
                ])
                .await
                .map_err(txn_error)?;
            Ok(lro(
                202,
                None,
                &ctx.operation_url(&vmss.subscription, location(&rec), &op.id),
                true,
            ))
        }
        _ => Err(method_not_allowed(method)),
    }
}

fn location(rec: &VmssRecord) -> &str {
    rec.model.location.as_deref().unwrap_or("local")
}

async fn put_or_patch(
    st: &ApiState,
    ctx: &Ctx,
    patch: bool,
    vmss: &VmssRef,
    body: &[u8],
) -> ApiResult {
    st.require_group(&vmss.subscription, &vmss.resource_group)
        .await?;
    names::check_resource_name("scale set", &vmss.name, 64)?;
    let incoming = body_object(body, true)?;
    let existing = st.get::<VmssRecord>(&vmss.key()).await?;
    if patch && existing.is_none() {
        return Err(ArmError::not_found(VMSS_TYPE, &vmss.name));
    }
    if let Some(e) = &existing {
        require_not_deleting(&e.value)?;
    }
    ctx.check_preconditions(
        existing
            .as_ref()
            .map(|e| format!("\"{}\"", e.revision))
            .as_deref(),
    )?;
    // PUT and PATCH both keep what the request omits.
    let mut merged = match &existing {
        Some(e) => {
            serde_json::to_value(&e.value.model).map_err(|e| ArmError::internal(e.to_string()))?
        }
        None => json!({}),
    };
    // Read-only fields a client echoes back must not override Shoal's own.
    let mut incoming = incoming;
    if let Some(p) = incoming
        .get_mut("properties")
        .and_then(Value::as_object_mut)
    {
        for ro in ["provisioningState", "uniqueId", "timeCreated"] {
            p.remove(ro);
        }
    }
    model::merge_json(&mut merged, &incoming);
    let mut m: VirtualMachineScaleSet = model::parse_typed(&merged)?;
    model::normalize(&mut m);
    model::validate(&m, existing.as_ref().map(|e| &e.value.model))?;
    if m.capacity() > st.max_capacity {
        return Err(ArmError::invalid_parameter(
            "sku.capacity",
            format!(
                "Capacity {} is above this server's limit of {}.",
                m.capacity(),
                st.max_capacity
            ),
        ));
    }
    let image_id = m.image_id().unwrap_or_default().to_string();
    let (resolved_id, version, ext) = resolve_image(st, &image_id).await?;
    let size = sku::lookup(m.sku_name())
        .ok_or_else(|| ArmError::invalid_parameter("sku.name", "Unknown size."))?;

    let prev_launch = existing.as_ref().map(|e| &e.value.launch);
    let mut launch = LaunchSpec {
        generation: 1,
        image_id: resolved_id,
        image_version: version,
        kind: ext.kind.clone(),
        blob_id: ext.blob_id.clone(),
        command: ext.launch_command().to_string(),
        port: ext.port,
        sku: size.name.clone(),
        vcpus: size.vcpus,
        memory_mb: size.memory_mb,
        custom_data: m.custom_data().map(String::from),
        computer_name_prefix: m
            .computer_name_prefix()
            .map(String::from)
            .unwrap_or_else(|| vmss.name.clone()),
        terminate_notice_secs: m.terminate_notice_secs(),
    };
    if let Some(prev) = prev_launch {
        let same = LaunchSpec {
            generation: prev.generation,
            ..launch.clone()
        } == *prev;
        launch.generation = if same {
            prev.generation
        } else {
            prev.generation + 1
        };
    }

    let now = st.now();
    let name = existing
        .as_ref()
        .map(|e| e.value.vmss.name.clone())
        .unwrap_or_else(|| vmss.name.clone());
    let vref = VmssRef::new(
        &vmss.subscription,
        &existing
            .as_ref()
            .map(|e| e.value.vmss.resource_group.clone())
            .unwrap_or(vmss.resource_group.clone()),
        &name,
    );
    m.id = Some(vref.id());
    m.name = Some(name.clone());
    m.kind = Some(VMSS_TYPE.to_string());
    m.etag = None;
    let props = m.properties.get_or_insert_with(Default::default);
    let prev_props = existing.as_ref().map(|e| e.value.model.props().clone());
    props.unique_id = prev_props
        .as_ref()
        .and_then(|p| p.unique_id.clone())
        .or_else(|| Some(uuid::Uuid::new_v4().to_string()));
    props.time_created = prev_props
        .as_ref()
        .and_then(|p| p.time_created.clone())
        .or_else(|| Some(now.clone()));
    props.provisioning_state = Some(
        if existing.is_some() {
            "Updating"
        } else {
            "Creating"
        }
        .to_string(),
    );

    let op = st.new_operation(
        &vmss.subscription,
        format!(
            "{} scale set {name}",
            if existing.is_some() {
                "Update"
            } else {
                "Create"
            }
        ),
        OperationWait::Vmss {
            vmss: vref.clone(),
            instance_ids: None,
        },
    );
    let rec = VmssRecord {
        vmss: vref,
        model: m,
        launch,
        next_instance_id: existing.as_ref().map_or(0, |e| e.value.next_instance_id),
        deleting: false,
        operation: Some(op.id.clone()),
        services: existing
            .as_ref()
            .map(|e| e.value.services.clone())
            .unwrap_or(Value::Null),
    };
    let expect = existing
        .as_ref()
        .map_or(Expect::Absent, |e| Expect::ModRevision(e.revision));
    let rev = st
        .store
        .txn(vec![
            kv::put_op(vmss.key(), &rec, expect),
            kv::put_op(operation_key(&op.id), &op, Expect::Absent),
        ])
        .await
        .map_err(|e| match (e, existing.is_none()) {
            (shoal_store::StoreError::Conflict { .. }, true) => ArmError::conflict(format!(
                "Scale set '{name}' was created by another request at the same time."
            ))
            .with_target(name.clone()),
            (e, _) => txn_error(e),
        })?;
    let status = if existing.is_some() || patch {
        200
    } else {
        201
    };
    let url = ctx.operation_url(&vmss.subscription, location(&rec), &op.id);
    Ok(lro(status, Some(&views::vmss_json(&rec, rev)), &url, false))
}

/// Instance records of a set with their statuses, by id.
pub async fn instances_of(
    st: &ApiState,
    vmss: &VmssRef,
) -> Result<Vec<(Versioned<InstanceRecord>, Option<InstanceStatus>)>, ArmError> {
    let recs = st.list::<InstanceRecord>(&vmss.instance_prefix()).await?;
    let statuses: HashMap<String, InstanceStatus> = st
        .list::<InstanceStatus>(&vmss.status_prefix())
        .await?
        .into_iter()
        .filter_map(|s| Some((s.key.rsplit('/').next()?.to_string(), s.value)))
        .collect();
    Ok(recs
        .into_iter()
        .map(|r| {
            let id = format!("{:08}", r.value.instance_id);
            let s = statuses.get(&id).cloned();
            (r, s)
        })
        .collect())
}

/// Reads `{"instanceIds": ["0", "3"]}` (numbers accepted too; `"*"` means all).
pub fn parse_instance_ids(body: &Value) -> Result<Option<Vec<u64>>, ArmError> {
    let Some(ids) = body.get("instanceIds") else {
        return Ok(None);
    };
    if ids.is_null() {
        return Ok(None);
    }
    let arr = ids.as_array().ok_or_else(|| {
        ArmError::invalid_parameter(
            "instanceIds",
            "instanceIds must be an array of instance id strings.",
        )
    })?;
    let mut out = Vec::new();
    for v in arr {
        let parsed = match v {
            Value::String(s) if s == "*" => return Ok(None),
            Value::String(s) => s.parse::<u64>().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        match parsed {
            Some(id) => out.push(id),
            None => {
                return Err(ArmError::invalid_parameter(
                    "instanceIds",
                    format!("'{v}' is not an instance id."),
                ))
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

/// Applies `action` to one desired instance record. `set_launch` is the set's latest
/// launch spec (for upgrades).
fn apply_action(rec: &mut InstanceRecord, action: Action, set_launch: &LaunchSpec) {
    match action {
        Action::Start => rec.power = PowerIntent::Running,
        Action::PowerOff => rec.power = PowerIntent::Stopped,
        Action::Deallocate => rec.power = PowerIntent::Deallocated,
        Action::Restart | Action::Redeploy | Action::PerformMaintenance => {
            rec.restart_gen += 1;
            rec.power = PowerIntent::Running;
        }
        Action::Reimage | Action::ReimageAll => rec.reimage_gen += 1,
        Action::ManualUpgrade => rec.launch = set_launch.clone(),
        Action::DeleteInstances => rec.deleting = true,
    }
}

/// POST actions on a set (`instanceIds` optional) or on one instance (`only`).
pub async fn action(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
    action: Action,
    only: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let per_instance = only.is_some();
    let wrong_method = if per_instance && action == Action::DeleteInstances {
        *method != Method::DELETE
    } else {
        *method != Method::POST
    };
    if wrong_method {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    require_not_deleting(&set.value)?;
    let body = body_object(body, false)?;
    let ids = match only {
        Some(id) => Some(vec![parse_vm_id(vmss, id)?]),
        None => parse_instance_ids(&body)?,
    };
    if action == Action::DeleteInstances
        && ids.is_none()
        && !per_instance
        && body.get("instanceIds").is_none()
    {
        return Err(ArmError::invalid_parameter(
            "instanceIds",
            "List the instances to delete in instanceIds (or [\"*\"] for all).",
        ));
    }
    let all = instances_of(st, vmss).await?;
    let active: Vec<&Versioned<InstanceRecord>> = all
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !r.value.deleting)
        .collect();
    let targets: Vec<&Versioned<InstanceRecord>> = match &ids {
        Some(ids) => {
            let mut t = Vec::new();
            for id in ids {
                let Some(r) = active.iter().find(|r| r.value.instance_id == *id) else {
                    return Err(if per_instance {
                        ArmError::not_found(
                            shoal_model::vmss::VMSS_VM_TYPE,
                            &format!("{}_{id}", vmss.name),
                        )
                    } else {
                        ArmError::invalid_parameter(
                            "instanceIds",
                            format!(
                                "Instance id {id} does not exist in scale set '{}'.",
                                vmss.name
                            ),
                        )
                    });
                };
                if !per_instance && r.value.protection.protect_from_scale_set_actions {
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
        None => active
            .into_iter()
            .filter(|r| !r.value.protection.protect_from_scale_set_actions)
            .collect(),
    };
    let target_ids: Vec<u64> = targets.iter().map(|r| r.value.instance_id).collect();
    let wait = if action == Action::DeleteInstances {
        OperationWait::InstancesGone {
            vmss: set.value.vmss.clone(),
            instance_ids: target_ids.clone(),
        }
    } else {
        OperationWait::Vmss {
            vmss: set.value.vmss.clone(),
            instance_ids: Some(target_ids.clone()),
        }
    };
    let what = match only {
        Some(id) => format!("{} instance {id} of {}", action.name(), vmss.name),
        None => format!("{} scale set {}", action.name(), vmss.name),
    };
    let mut op = st.new_operation(&vmss.subscription, what, wait);
    if targets.is_empty() {
        op.status = OperationStatus::Succeeded;
        op.end_time = Some(st.now());
    }
    let mut txn: Vec<TxnOp> = Vec::new();
    for t in &targets {
        let mut rec = t.value.clone();
        apply_action(&mut rec, action, &set.value.launch);
        txn.push(kv::put_op(
            t.key.clone(),
            &rec,
            Expect::ModRevision(t.revision),
        ));
    }
    if action == Action::DeleteInstances && !targets.is_empty() {
        // As in Azure, deleting instances lowers the capacity by as many.
        let mut rec = set.value.clone();
        let sku = rec.model.sku.get_or_insert_with(Default::default);
        sku.capacity = Some((sku.capacity.unwrap_or(0) - targets.len() as i64).max(0));
        txn.push(kv::put_op(
            set.key.clone(),
            &rec,
            Expect::ModRevision(set.revision),
        ));
    }
    txn.push(kv::put_op(operation_key(&op.id), &op, Expect::Absent));
    st.store.txn(txn).await.map_err(txn_error)?;
    Ok(lro(
        202,
        None,
        &ctx.operation_url(&vmss.subscription, location(&set.value), &op.id),
        true,
    ))
}

pub fn parse_vm_id(vmss: &VmssRef, id: &str) -> Result<u64, ArmError> {
    id.parse::<u64>().map_err(|_| {
        ArmError::not_found(
            shoal_model::vmss::VMSS_VM_TYPE,
            &format!("{}_{id}", vmss.name),
        )
    })
}

pub async fn instance_view(st: &ApiState, method: &Method, vmss: &VmssRef) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    let all: Vec<(InstanceRecord, Option<InstanceStatus>)> = instances_of(st, vmss)
        .await?
        .into_iter()
        .map(|(r, s)| (r.value, s))
        .collect();
    Ok(json(200, &views::vmss_instance_view(&set.value, &all)))
}

pub async fn skus(st: &ApiState, method: &Method, vmss: &VmssRef) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    require_set(st, vmss).await?;
    Ok(json(200, &sku::vmss_skus_json()))
}

/// `GET .../virtualMachines` (`$expand=instanceView` adds each instance view).
pub async fn list_instances(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    let expand = ctx
        .query("$expand")
        .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
    let health = health_of(st, &set.value).await?;
    let items: Vec<Value> = instances_of(st, vmss)
        .await?
        .iter()
        .map(|(r, s)| {
            views::vm_json(
                &set.value,
                &r.value,
                s.as_ref(),
                health.get(&r.value.instance_id),
                expand,
            )
        })
        .collect();
    Ok(response::page(
        ctx,
        &format!("{}/virtualMachines", set.value.vmss.id()),
        items,
        st.page_size,
    ))
}

/// One instance: GET, PUT/PATCH (protection policy), DELETE.
pub async fn instance(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
    id: &str,
    body: &[u8],
) -> ApiResult {
    if *method == Method::DELETE {
        return action(
            st,
            ctx,
            method,
            vmss,
            Action::DeleteInstances,
            Some(id),
            body,
        )
        .await;
    }
    let set = require_set(st, vmss).await?;
    let n = parse_vm_id(vmss, id)?;
    let all = instances_of(st, vmss).await?;
    let Some((rec, status)) = all.into_iter().find(|(r, _)| r.value.instance_id == n) else {
        return Err(ArmError::not_found(
            shoal_model::vmss::VMSS_VM_TYPE,
            &format!("{}_{id}", vmss.name),
        ));
    };
    match *method {
        Method::GET => {
            let expand = ctx
                .query("$expand")
                .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"));
            Ok(json(
                200,
                &views::vm_json(
                    &set.value,
                    &rec.value,
                    status.as_ref(),
                    health_of(st, &set.value).await?.get(&n),
                    expand,
                ),
            ))
        }
        Method::PUT | Method::PATCH => {
            require_not_deleting(&set.value)?;
            let body = body_object(body, true)?;
            let mut updated = rec.value.clone();
            if let Some(p) = body.pointer("/properties/protectionPolicy") {
                let incoming: ProtectionPolicyPatch =
                    model::parse_typed(p).map_err(|e| ArmError {
                        target: e.target.map(|t| format!("properties.protectionPolicy.{t}")),
                        ..e
                    })?;
                if let Some(v) = incoming.protect_from_scale_in {
                    updated.protection.protect_from_scale_in = v;
                }
                if let Some(v) = incoming.protect_from_scale_set_actions {
                    updated.protection.protect_from_scale_set_actions = v;
                }
            }
            if updated.deleting {
                return Err(ArmError::conflict(format!(
                    "Instance {id} is being deleted."
                )));
            }
            let rev_txn = vec![kv::put_op(
                rec.key.clone(),
                &updated,
                Expect::ModRevision(rec.revision),
            )];
            st.store.txn(rev_txn).await.map_err(txn_error)?;
            let body = views::vm_json(&set.value, &updated, status.as_ref(), None, false);
            // Protection changes take effect at once: the operation is already done.
            let mut op = st.new_operation(
                &vmss.subscription,
                format!("Update instance {id} of {}", vmss.name),
                OperationWait::Vmss {
                    vmss: set.value.vmss.clone(),
                    instance_ids: Some(vec![n]),
                },
            );
            op.status = OperationStatus::Succeeded;
            op.end_time = Some(st.now());
            st.store
                .txn(vec![kv::put_op(operation_key(&op.id), &op, Expect::Absent)])
                .await
                .map_err(txn_error)?;
            Ok(lro(
                200,
                Some(&body),
                &ctx.operation_url(&vmss.subscription, location(&set.value), &op.id),
                false,
            ))
        }
        _ => Err(method_not_allowed(method)),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProtectionPolicyPatch {
    protect_from_scale_in: Option<bool>,
    protect_from_scale_set_actions: Option<bool>,
}

pub async fn vm_instance_view(
    st: &ApiState,
    method: &Method,
    vmss: &VmssRef,
    id: &str,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    require_set(st, vmss).await?;
    let n = parse_vm_id(vmss, id)?;
    let all = instances_of(st, vmss).await?;
    let Some((rec, status)) = all.into_iter().find(|(r, _)| r.value.instance_id == n) else {
        return Err(ArmError::not_found(
            shoal_model::vmss::VMSS_VM_TYPE,
            &format!("{}_{id}", vmss.name),
        ));
    };
    Ok(json(
        200,
        &views::vm_instance_view(
            &rec.value,
            status.as_ref(),
            health_of(st, &require_set(st, vmss).await?.value)
                .await?
                .get(&n),
            health_configured(&require_set(st, vmss).await?.value),
        ),
    ))
}

/// `GET .../operations/{id}`.
pub async fn operation(st: &ApiState, method: &Method, id: &str) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let Some(op) = st.get::<OperationRecord>(&operation_key(id)).await? else {
        return Err(ArmError::not_found("operation", id));
    };
    let op = op.value;
    let mut body = json!({
        "name": op.id,
        "status": op.status.as_str(),
        "startTime": op.start_time,
    });
    if let Some(t) = &op.end_time {
        body["endTime"] = json!(t);
    }
    if let Some(e) = &op.error {
        body["error"] = serde_json::to_value(e).unwrap_or(Value::Null);
    }
    body["shoal"] = json!({"operation": op.name, "message": op.message});
    let mut resp = json(200, &body);
    if op.status == OperationStatus::InProgress {
        // The SDKs take the wait before the next poll from the latest poll's answer;
        // without Retry-After (or with 0) they wait their default of 30 s.
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    Ok(resp)
}

/// Whether the set's instances have a health signal (a load balancer probe named in its
/// network profile, or the Application Health extension).
pub fn health_configured(set: &VmssRecord) -> bool {
    let profile = set.model.profile();
    let probe = profile
        .and_then(|p| p.network_profile.as_ref())
        .and_then(|n| n.health_probe.as_ref())
        .is_some_and(|h| !h.is_null());
    let extension = profile
        .and_then(|p| p.extension_profile.as_ref())
        .is_some_and(|e| e.to_string().contains("ApplicationHealth"));
    probe || extension
}

/// Health records of a set's instances, by instance id.
pub async fn health_of(
    st: &ApiState,
    set: &VmssRecord,
) -> Result<HashMap<u64, HealthRecord>, ArmError> {
    let prefix = format!(
        "health/{}",
        set.vmss.status_prefix().trim_start_matches("status/")
    );
    Ok(st
        .list::<HealthRecord>(&prefix)
        .await?
        .into_iter()
        .filter_map(|h| Some((h.key.rsplit('/').next()?.parse().ok()?, h.value)))
        .collect())
}
