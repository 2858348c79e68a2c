//! A scale set's instances: list, get, instance views, protection policy (PUT/PATCH),
//! and the actions on them (set-wide with `instanceIds`, or per instance).
//!
//! Handlers parse the request into a [`Command`] and answer what the executor wrote;
//! which instances an action reaches, and what it does to them, is decided in
//! [`shoal_control::commands::instances`].

use shoal_model::keys;
use std::collections::HashMap;

use http::Method;
use serde_json::Value;
use shoal_control::commands::{Command, InstanceAction, InstanceChange, InstanceCommand, Targets};
use shoal_control::kv::Versioned;
use shoal_model::ids::VmssRef;
use shoal_model::records::{HealthRecord, InstanceRecord, InstanceStatus, VmssRecord};
use shoal_model::vmss as model;
use shoal_model::ArmError;

use crate::groups::method_not_allowed;
use crate::response::{self, json, lro, ApiResult, Ctx};
use crate::routes::Action;
use crate::scalesets::{location, require_set};
use crate::state::{body_object, command_error, ApiState};
use crate::views;
use crate::vm_view_cache::{Expand, RenderedView, ViewStamp};

/// The command's name for a route's action.
fn instance_action(action: Action) -> InstanceAction {
    match action {
        Action::Start => InstanceAction::Start,
        Action::PowerOff => InstanceAction::PowerOff,
        Action::Restart => InstanceAction::Restart,
        Action::Deallocate => InstanceAction::Deallocate,
        Action::Reimage => InstanceAction::Reimage,
        Action::ReimageAll => InstanceAction::ReimageAll,
        Action::ManualUpgrade => InstanceAction::ManualUpgrade,
        Action::DeleteInstances => InstanceAction::Delete,
        Action::Redeploy => InstanceAction::Redeploy,
        Action::PerformMaintenance => InstanceAction::PerformMaintenance,
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
    let wrong_method = if only.is_some() && action == Action::DeleteInstances {
        *method != Method::DELETE
    } else {
        *method != Method::POST
    };
    if wrong_method {
        return Err(method_not_allowed(method));
    }
    let set = require_set(st, vmss).await?;
    let body = body_object(body, false)?;
    let targets = match only {
        Some(id) => Targets::One(parse_vm_id(vmss, id)?),
        None => match parse_instance_ids(&body)? {
            Some(ids) => Targets::Listed(ids),
            None if action == Action::DeleteInstances && body.get("instanceIds").is_none() => {
                return Err(ArmError::invalid_parameter(
                    "instanceIds",
                    "List the instances to delete in instanceIds (or [\"*\"] for all).",
                ))
            }
            None => Targets::All,
        },
    };
    start_action(st, ctx, vmss, &set.value, instance_action(action), targets).await
}

/// Runs an instance action through the command layer and answers 202 with the
/// operation to poll.
pub async fn start_action(
    st: &ApiState,
    ctx: &Ctx,
    vmss: &VmssRef,
    set: &VmssRecord,
    action: InstanceAction,
    targets: Targets,
) -> ApiResult {
    let done = st
        .commands()
        .execute(Command::Instances(InstanceCommand {
            vmss: vmss.clone(),
            change: InstanceChange::Action { action, targets },
        }))
        .await
        .map_err(command_error)?;
    let op = done
        .writes
        .operation
        .ok_or_else(|| ArmError::internal("The action started no operation."))?;
    Ok(lro(
        202,
        None,
        &ctx.operation_url(&vmss.subscription, location(set), &op.id),
        true,
    ))
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
    match *method {
        Method::GET => {
            let all = instances_of(st, vmss).await?;
            let Some((rec, status)) = all.into_iter().find(|(r, _)| r.value.instance_id == n)
            else {
                return Err(ArmError::not_found(
                    model::VMSS_VM_TYPE,
                    &format!("{}_{id}", vmss.name),
                ));
            };
            let expand = expands(ctx, "instanceView");
            let health = health_of(st, &set.value).await?;
            let shape = views::SetView::new(&set.value, &st.tenant_id().await?);
            let mut vm = shape.vm(&rec.value, status.as_ref(), health.get(&n), expand);
            if expands(ctx, "userData") {
                vm = vm.with_user_data(&shape);
            }
            Ok(json(200, &vm))
        }
        Method::PUT | Method::PATCH => {
            let body = body_object(body, true)?;
            let incoming: ProtectionPolicyPatch = match body.pointer("/properties/protectionPolicy")
            {
                Some(p) => model::parse_typed(p).map_err(|e| ArmError {
                    target: e.target.map(|t| format!("properties.protectionPolicy.{t}")),
                    ..e
                })?,
                None => ProtectionPolicyPatch::default(),
            };
            let done = st
                .commands()
                .execute(Command::Instances(InstanceCommand {
                    vmss: vmss.clone(),
                    change: InstanceChange::Protect {
                        instance_id: n,
                        protect_from_scale_in: incoming.protect_from_scale_in,
                        protect_from_scale_set_actions: incoming.protect_from_scale_set_actions,
                    },
                }))
                .await
                .map_err(command_error)?;
            let (Some(updated), Some(op)) = (done.writes.instances.first(), &done.writes.operation)
            else {
                return Err(ArmError::internal("The instance was not written."));
            };
            let status = st
                .get::<InstanceStatus>(&vmss.status_key(n))
                .await?
                .map(|s| s.value);
            let tenant = st.tenant_id().await?;
            let body = views::vm_json(&set.value, updated, status.as_ref(), None, false, &tenant);
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

/// An instance id as a number: `3`, or a Flexible VM's name `{set}_3`.
pub fn parse_vm_id(vmss: &VmssRef, id: &str) -> Result<u64, ArmError> {
    let bare = match id.rsplit_once('_') {
        Some((set, n)) if set.eq_ignore_ascii_case(&vmss.name) => n,
        _ => id,
    };
    bare.parse::<u64>()
        .map_err(|_| ArmError::not_found(model::VMSS_VM_TYPE, &format!("{}_{id}", vmss.name)))
}

/// Whether `$expand` (a comma-separated list, any case) asks for `what`.
pub fn expands(ctx: &Ctx, what: &str) -> bool {
    ctx.query("$expand")
        .is_some_and(|e| e.split(',').any(|x| x.trim().eq_ignore_ascii_case(what)))
}

/// `GET .../virtualMachines` (`$expand=instanceView` adds each instance view,
/// `userData` the set's user data). Only the page's records are decoded: a client
/// polling a thousand instances page by page decodes each once per walk.
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
    let expand = expands(ctx, "instanceView");
    let user_data = expands(ctx, "userData");
    let tenant = st.tenant_id().await?;
    // The page's records, then the statuses and health records of its id range (keys
    // sort as ids do, one per id, so `last - first + 1` from the first covers each that
    // exists): a page of a long list without copying the rest.
    let part = |prefix: String, from: String, skip: usize, limit: usize| async move {
        st.store
            .list_part(&prefix, &from, skip, limit)
            .await
            .map_err(crate::state::internal)
    };
    let skip = response::page_start(ctx);
    let (records, total, _) =
        part(vmss.instance_prefix(), String::new(), skip, st.page_size).await?;
    /// The instance id an instance record's key ends with.
    fn key_id(kv: &shoal_store::KeyValue) -> Option<u64> {
        kv.key.rsplit('/').next()?.parse::<u64>().ok()
    }
    let id_of = |kv: Option<&shoal_store::KeyValue>| kv.and_then(key_id).unwrap_or(0);
    let (first, last) = (id_of(records.first()), id_of(records.last()));
    let span = usize::try_from(last.saturating_sub(first))
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let (statuses, ..) = part(vmss.status_prefix(), vmss.status_key(first), 0, span).await?;
    let (health, ..) = part(
        keys::health_prefix(vmss),
        keys::health_key(vmss, first),
        0,
        span,
    )
    .await?;
    fn find<'a>(kvs: &'a [shoal_store::KeyValue], key: &str) -> Option<&'a shoal_store::KeyValue> {
        let at = kvs.binary_search_by(|kv| kv.key.as_str().cmp(key)).ok()?;
        Some(&kvs[at])
    }
    fn decoded<T: serde::de::DeserializeOwned>(kv: Option<&shoal_store::KeyValue>) -> Option<T> {
        serde_json::from_slice(&kv?.value).ok()
    }
    // Each instance's view is rendered again only when a record it comes from changed
    // since the last listing (see `vm_view_cache`).
    let shape = views::SetView::new(&set.value, &tenant);
    let options = Expand {
        instance_view: expand,
        user_data,
    };
    let tenant_hash = ViewStamp::tenant_hash(&tenant);
    let mut items: Vec<RenderedView> = Vec::with_capacity(records.len());
    let mut reused = 0usize;
    for raw in &records {
        let id = key_id(raw);
        let (status_kv, health_kv) = match id {
            Some(id) => (
                find(&statuses, &vmss.status_key(id)),
                find(&health, &keys::health_key(vmss, id)),
            ),
            None => (None, None),
        };
        // Only views whose records are found by the key's id are kept.
        let stamp = id.map(|_| ViewStamp {
            record: raw.mod_revision,
            status: status_kv.map(|kv| kv.mod_revision),
            health: health_kv.map(|kv| kv.mod_revision),
            set: set.revision,
            tenant: tenant_hash,
        });
        if let Some(view) = stamp.and_then(|s| st.vm_views.get(&raw.key, options, &s)) {
            items.push(view);
            reused += 1;
            continue;
        }
        let rec = match shoal_control::kv::decode::<InstanceRecord>(raw) {
            Ok(r) => r.value,
            Err(e) => {
                tracing::warn!(key = %raw.key, error = %e, "skipping undecodable record");
                continue;
            }
        };
        // Found by the key's id above; the record's own keys when the key had none.
        let (status, health) = match id {
            Some(_) => (
                decoded::<InstanceStatus>(status_kv),
                decoded::<HealthRecord>(health_kv),
            ),
            None => (
                decoded(find(&statuses, &rec.status_key())),
                decoded(find(&health, &keys::health_key(vmss, rec.instance_id))),
            ),
        };
        let vm = shape.vm(&rec, status.as_ref(), health.as_ref(), expand);
        let vm = if user_data {
            vm.with_user_data(&shape)
        } else {
            vm
        };
        let view = RenderedView::render(&vm).map_err(crate::state::internal)?;
        if let Some(stamp) = stamp {
            st.vm_views.put(&raw.key, options, stamp, view.clone());
        }
        items.push(view);
    }
    tracing::debug!(set = %vmss.name, views = items.len(), reused, "instance list page");
    Ok(response::page_answer(
        ctx,
        &format!("{}/virtualMachines", set.value.vmss.id()),
        total,
        items,
        st.page_size,
    ))
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
    let set = require_set(st, vmss).await?;
    let n = parse_vm_id(vmss, id)?;
    let all = instances_of(st, vmss).await?;
    let Some((rec, status)) = all.into_iter().find(|(r, _)| r.value.instance_id == n) else {
        return Err(ArmError::not_found(
            model::VMSS_VM_TYPE,
            &format!("{}_{id}", vmss.name),
        ));
    };
    Ok(json(
        200,
        &views::vm_instance_view(
            &set.value,
            &rec.value,
            status.as_ref(),
            health_of(st, &set.value).await?.get(&n),
            health_configured(&set.value),
        ),
    ))
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
    let prefix = keys::health_prefix(&set.vmss);
    Ok(st
        .list::<HealthRecord>(&prefix)
        .await?
        .into_iter()
        .filter_map(|h| Some((h.key.rsplit('/').next()?.parse().ok()?, h.value)))
        .collect())
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;
    use shoal_control::kv;
    use shoal_model::records::{InstanceState, VmssRecord};
    use shoal_store::{Expect, TxnOp};

    use crate::arm_crud::testing::{call, state};
    use crate::vm_view::testing::{inst, set, status};

    /// A set of `capacity` from an image, and the store operations putting it and its
    /// instances `ids` (no statuses).
    fn set_with_instances(capacity: u64, ids: &[u64]) -> (VmssRecord, Vec<TxnOp>) {
        let set = set(json!({"location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": capacity},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/i"}}}}}));
        let mut ops = vec![kv::put_op(set.vmss.key(), &set, Expect::Any)];
        for &id in ids {
            let rec = inst(id, None, 3);
            ops.push(kv::put_op(rec.key(), &rec, Expect::Any));
        }
        (set, ops)
    }

    /// Paging through a set's instances shows each once, in order, with its own status,
    /// also where ids have gaps and statuses of deleted instances are still stored.
    #[tokio::test]
    async fn pages_show_every_instance_once_with_its_own_status() {
        let st = state(3).await;
        let ids = [0, 1, 2, 4, 7, 9, 10];
        let (set, mut ops) = set_with_instances(7, &ids);
        // Statuses: none for 10, and leftovers of deleted 3, 5, 6 and 8 (the second page,
        // 4, 7 and 9, has three of them in its range).
        for id in [0u64, 1, 2, 3, 4, 5, 6, 7, 8, 9] {
            let state = if id.is_multiple_of(2) {
                InstanceState::Running
            } else {
                InstanceState::Stopped
            };
            let mut s = status(state, 3);
            s.pid = Some(1000 + id as u32);
            ops.push(kv::put_op(set.vmss.status_key(id), &s, Expect::Any));
        }
        st.store.txn(ops).await.expect("store");

        let mut seen = Vec::new();
        let mut uri = format!("{}/virtualMachines?api-version=2024-07-01", set.vmss.id());
        loop {
            let (code, page) = call(&st, Method::GET, &uri, serde_json::Value::Null).await;
            assert_eq!(code, 200, "{page}");
            let items = page["value"].as_array().expect("value");
            assert!(items.len() <= 3, "page size");
            for vm in items {
                let id: u64 = vm["instanceId"]
                    .as_str()
                    .expect("id")
                    .parse()
                    .expect("number");
                let pid = &vm["properties"]["shoal"]["pid"];
                if id == 10 {
                    assert!(pid.is_null(), "no status stored for 10: {vm}");
                } else {
                    assert_eq!(pid, 1000 + id, "instance {id} shows its own status");
                }
                seen.push(id);
            }
            match page["nextLink"].as_str() {
                Some(next) => {
                    uri = next
                        .split_once("localhost")
                        .map_or(next, |(_, p)| p)
                        .to_owned()
                }
                None => break,
            }
        }
        assert_eq!(seen, ids);
    }

    /// Views are kept between listings (`vm_view_cache`), but a listing always shows what
    /// the store holds now: a changed status, instance record, set or `$expand`.
    #[tokio::test]
    async fn a_listing_after_a_change_shows_the_change() {
        let st = state(100).await;
        let (set, mut ops) = set_with_instances(2, &[0, 1]);
        for id in [0u64, 1] {
            let mut s = status(InstanceState::Running, 3);
            s.pid = Some(100 + id as u32);
            ops.push(kv::put_op(set.vmss.status_key(id), &s, Expect::Any));
        }
        st.store.txn(ops).await.expect("store");
        let uri = format!("{}/virtualMachines?api-version=2024-07-01", set.vmss.id());
        let list = |uri: String| {
            let st = &st;
            async move {
                let (code, page) = call(st, Method::GET, &uri, serde_json::Value::Null).await;
                assert_eq!(code, 200, "{page}");
                page["value"].as_array().expect("value").clone()
            }
        };
        let first = list(uri.clone()).await;
        assert_eq!(
            first,
            list(uri.clone()).await,
            "nothing changed, same answer"
        );
        assert_eq!(first[1]["properties"]["shoal"]["pid"], 101);

        // A status changes: that instance's view follows, the other stays.
        let mut s = status(InstanceState::Stopped, 3);
        s.pid = Some(999);
        st.store
            .txn(vec![kv::put_op(set.vmss.status_key(1), &s, Expect::Any)])
            .await
            .expect("store");
        let after = list(uri.clone()).await;
        assert_eq!(after[1]["properties"]["shoal"]["pid"], 999);
        assert_eq!(after[0], first[0]);

        // The instance record changes (protection from scale-in).
        let mut rec = inst(0, None, 3);
        rec.protection.protect_from_scale_in = true;
        st.store
            .txn(vec![kv::put_op(rec.key(), &rec, Expect::Any)])
            .await
            .expect("store");
        let after = list(uri.clone()).await;
        assert_eq!(
            after[0]["properties"]["protectionPolicy"]["protectFromScaleIn"], true,
            "{}",
            after[0]
        );

        // `$expand=instanceView` is another view of the same revisions.
        let expanded = list(format!("{uri}&$expand=instanceView")).await;
        assert!(
            expanded[0]["properties"]["instanceView"].is_object(),
            "{}",
            expanded[0]
        );
        assert!(list(uri.clone()).await[0]["properties"]["instanceView"].is_null());
    }
}
