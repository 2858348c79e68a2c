//! Extensions as child resources, as Azure serves them:
//!
//! - `{set}/extensions[/{name}]`: the set's model extensions
//!   (`virtualMachineProfile.extensionProfile.extensions`). PUT, PATCH and DELETE change
//!   the model through the same command as a PATCH of the set, so they validate, bump the
//!   model and roll out (per the upgrade policy) exactly as that would.
//! - `{set}/virtualMachines/{id}/extensions[/{name}]`: one instance's extensions — the
//!   model's, plus any put on that instance alone (stored with the instance; Shoal runs
//!   only the Application Health extension, the rest are recorded and shown).
//!
//! `protectedSettings` are kept and never answered.

use http::Method;
use serde_json::{json, Map, Value};
use shoal_control::commands::{Command, SetChange, SetCommand};
use shoal_model::ids::VmssRef;
use shoal_model::{names, ArmError};
use shoal_store::{Expect, StoreExt};

use crate::response::{empty, json, lro, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::scalesets::{location, preconditions, require_set};
use crate::state::{body_object, command_error, internal, txn_error, ApiState};
use crate::views::model_extensions;

const SET_EXT_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets/extensions";
const VM_EXT_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/extensions";

fn name_of(e: &Value) -> &str {
    e.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// An extension as GET answers it: no protected settings, a provisioning state.
fn view(id: String, kind: &str, e: &Value) -> Value {
    let mut props = e.get("properties").cloned().unwrap_or_else(|| json!({}));
    if let Some(p) = props.as_object_mut() {
        p.remove("protectedSettings");
        p.remove("protectedSettingsFromKeyVault");
        p.entry("provisioningState").or_insert(json!("Succeeded"));
    }
    json!({"id": id, "name": name_of(e), "type": kind, "properties": props})
}

/// The items of a `GET` of an extension collection: each as [`view`] shows it.
fn list_items(
    method: &Method,
    list: &[Value],
    id: impl Fn(&str) -> String,
    kind: &str,
) -> Result<Vec<Value>, ArmError> {
    if *method != Method::GET {
        return Err(method_not_allowed(method));
    }
    Ok(list.iter().map(|e| view(id(name_of(e)), kind, e)).collect())
}

fn not_found(kind: &str, name: &str, rg: &str) -> ArmError {
    ArmError::new(
        404,
        "NotFound",
        format!("The Resource '{kind}/{name}' under resource group '{rg}' was not found."),
    )
    .with_target(name.to_string())
}

/// Checks an extension body's types: `publisher`, `type` and `typeHandlerVersion` are
/// strings and settings objects where given (Azure checks that they name a real handler
/// only when it provisions one; Shoal runs only the Application Health extension).
fn check(body: &Value) -> Result<(), ArmError> {
    let Some(props) = body.get("properties") else {
        return Ok(());
    };
    let props = props.as_object().ok_or_else(|| {
        ArmError::invalid_parameter("properties", "An extension's properties are a JSON object.")
    })?;
    for key in ["publisher", "type", "typeHandlerVersion", "forceUpdateTag"] {
        if props
            .get(key)
            .is_some_and(|s| !s.is_string() && !s.is_null())
        {
            return Err(ArmError::invalid_parameter(
                format!("properties.{key}"),
                format!("properties.{key} must be a string."),
            ));
        }
    }
    for key in ["settings", "protectedSettings"] {
        if props
            .get(key)
            .is_some_and(|s| !s.is_object() && !s.is_null())
        {
            return Err(ArmError::invalid_parameter(
                format!("properties.{key}"),
                format!("properties.{key} must be a JSON object."),
            ));
        }
    }
    Ok(())
}

/// The extension a PUT or PATCH makes of `body` over `old`.
fn merged(name: &str, old: Option<&Value>, body: &Value, patch: bool) -> Value {
    let mut props: Map<String, Value> = match (patch, old) {
        (true, Some(o)) => o
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        _ => Map::new(),
    };
    if let Some(p) = body.get("properties").and_then(Value::as_object) {
        for (k, v) in p {
            if k != "provisioningState" {
                props.insert(k.clone(), v.clone());
            }
        }
    }
    json!({"name": name, "properties": props})
}

/// `{set}/extensions[/{name}]`.
pub async fn set_extensions(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
    name: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let set = require_set(st, vmss).await?;
    let list = model_extensions(&set.value);
    let id = |n: &str| format!("{}/extensions/{n}", vmss.id());
    let find = |n: &str| list.iter().find(|e| name_of(e).eq_ignore_ascii_case(n));
    let Some(name) = name else {
        // Azure pages a set's extensions (nextLink), not an instance's.
        let items = list_items(method, &list, id, SET_EXT_TYPE)?;
        let path = format!("{}/extensions", vmss.id());
        return Ok(crate::response::page(ctx, &path, items, st.page_size));
    };
    let missing = || not_found(SET_EXT_TYPE, name, &vmss.resource_group);
    let new_list: Vec<Value> = match *method {
        Method::GET => {
            let e = find(name).ok_or_else(missing)?;
            return Ok(json(200, &view(id(name_of(e)), SET_EXT_TYPE, e)));
        }
        Method::PUT | Method::PATCH => {
            names::check_resource_name("extension", name, 64)?;
            let patch = *method == Method::PATCH;
            let old = find(name);
            if patch && old.is_none() {
                return Err(missing());
            }
            let body = body_object(body, true)?;
            let ext = merged(name, old, &body, patch);
            check(&ext)?;
            let mut out: Vec<Value> = list
                .iter()
                .filter(|e| !name_of(e).eq_ignore_ascii_case(name))
                .cloned()
                .collect();
            out.push(ext);
            out
        }
        Method::DELETE => {
            if find(name).is_none() {
                return Ok(empty(204));
            }
            list.iter()
                .filter(|e| !name_of(e).eq_ignore_ascii_case(name))
                .cloned()
                .collect()
        }
        _ => return Err(method_not_allowed(method)),
    };
    let created = find(name).is_none();
    let patch = json!({"properties": {"virtualMachineProfile": {"extensionProfile": {"extensions": new_list}}}});
    let done = st
        .commands()
        .execute(Command::ScaleSet(SetCommand {
            vmss: vmss.clone(),
            change: SetChange::Patch(patch),
            preconditions: preconditions(ctx),
        }))
        .await
        .map_err(command_error)?;
    let (Some(rec), Some(op)) = (&done.writes.set, &done.writes.operation) else {
        return Err(ArmError::internal("The scale set was not written."));
    };
    let url = ctx.operation_url(&vmss.subscription, location(rec), &op.id);
    if *method == Method::DELETE {
        return Ok(lro(202, None, &url, true));
    }
    let ext = model_extensions(rec)
        .into_iter()
        .find(|e| name_of(e).eq_ignore_ascii_case(name))
        .ok_or_else(|| ArmError::internal("The extension was not written."))?;
    let status = if created { 201 } else { 200 };
    Ok(lro(
        status,
        Some(&view(id(name), SET_EXT_TYPE, &ext)),
        &url,
        false,
    ))
}

/// Where an instance's own extensions live: under the set's `uniqueId`, so a set made
/// again under the same name (whose ids start again at 0) does not inherit them.
fn vm_ext_prefix(set_unique_id: &str, instance: u64) -> String {
    format!("vmext/{}/{instance}/", set_unique_id.to_ascii_lowercase())
}

/// `{set}/virtualMachines/{id}/extensions[/{name}]`.
pub async fn vm_extensions(
    st: &ApiState,
    method: &Method,
    vmss: &VmssRef,
    instance: &str,
    name: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let set = require_set(st, vmss).await?;
    let id: u64 = instance.parse().map_err(|_| {
        not_found(
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
            instance,
            &vmss.resource_group,
        )
    })?;
    if st
        .get::<shoal_model::records::InstanceRecord>(&vmss.instance_key(id))
        .await?
        .is_none()
    {
        return Err(not_found(
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
            &format!("{}/{id}", vmss.name),
            &vmss.resource_group,
        ));
    }
    let unique = set
        .value
        .model
        .props()
        .unique_id
        .clone()
        .unwrap_or_default();
    let prefix = vm_ext_prefix(&unique, id);
    let own: Vec<Value> = st
        .list::<Value>(&prefix)
        .await?
        .into_iter()
        .map(|r| r.value)
        .collect();
    // The instance's own extensions win over the model's of the same name.
    let mut all: Vec<Value> = model_extensions(&set.value)
        .into_iter()
        .filter(|e| {
            !own.iter()
                .any(|o| name_of(o).eq_ignore_ascii_case(name_of(e)))
        })
        .collect();
    all.extend(own.iter().cloned());
    let ext_id = |n: &str| format!("{}/virtualMachines/{id}/extensions/{n}", vmss.id());
    let Some(name) = name else {
        let value = list_items(method, &all, ext_id, VM_EXT_TYPE)?;
        return Ok(json(200, &json!({ "value": value })));
    };
    let key = format!("{prefix}{}", name.to_ascii_lowercase());
    let current = all.iter().find(|e| name_of(e).eq_ignore_ascii_case(name));
    match *method {
        Method::GET => {
            let e = current.ok_or_else(|| not_found(VM_EXT_TYPE, name, &vmss.resource_group))?;
            Ok(json(200, &view(ext_id(name_of(e)), VM_EXT_TYPE, e)))
        }
        Method::PUT | Method::PATCH => {
            names::check_resource_name("extension", name, 64)?;
            let patch = *method == Method::PATCH;
            if patch && current.is_none() {
                return Err(not_found(VM_EXT_TYPE, name, &vmss.resource_group));
            }
            let body = body_object(body, true)?;
            let ext = merged(name, current, &body, patch);
            check(&ext)?;
            let bytes = serde_json::to_vec(&ext).map_err(internal)?;
            st.store
                .put_if(key, bytes, Expect::Any)
                .await
                .map_err(txn_error)?;
            let status = if current.is_some() { 200 } else { 201 };
            Ok(json(status, &view(ext_id(name), VM_EXT_TYPE, &ext)))
        }
        Method::DELETE => {
            if own.iter().any(|o| name_of(o).eq_ignore_ascii_case(name)) {
                st.store.delete(key).await.map_err(txn_error)?;
                return Ok(empty(200));
            }
            if current.is_some() {
                return Err(ArmError::new(
                    409,
                    "OperationNotAllowed",
                    format!("Extension '{name}' comes from the scale set's model: delete it from the set ({}/extensions/{name}).", vmss.id()),
                ));
            }
            Ok(empty(204))
        }
        _ => Err(method_not_allowed(method)),
    }
}
