//! Scale sets: list, get, create/replace (PUT), update (PATCH), delete, the set's
//! instance view and sizes, and the operations their writes start.
//!
//! Handlers parse the request into a [`Command`] (a PUT body straight into the typed
//! model; a PATCH body into the JSON it merges) and answer what the
//! [`shoal_control::commands::Executor`] wrote: the rules live there. Instances of a set
//! are in [`crate::instances`].

use shoal_model::keys;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::Method;
use serde_json::{json, Value};
use shoal_control::commands::{
    Command, ImageResolver, Preconditions, ResolvedImage, SetChange, SetCommand,
};
use shoal_control::kv::Versioned;
use shoal_model::ids::VmssRef;
use shoal_model::records::{
    operation_key, InstanceRecord, InstanceStatus, OperationRecord, OperationStatus, VmssRecord,
};
use shoal_model::vmss::{self as model, VMSS_TYPE};
use shoal_model::{names, sku, ArmError};

use crate::galleries::resolve_image;
use crate::groups::method_not_allowed;
use crate::instances::instances_of;
use crate::response::{self, empty, json, lro, ApiResult, Ctx};
use crate::state::{body_object, command_error, ApiState};
use crate::views;

/// The store prefix of the scale sets of a group (which must exist) or, with no group, of
/// a subscription.
pub async fn sets_prefix(st: &ApiState, sub: &str, rg: Option<&str>) -> Result<String, ArmError> {
    Ok(match rg {
        Some(rg) => {
            st.require_group(sub, rg).await?;
            keys::in_group(keys::VMSS, sub, rg)
        }
        None => keys::in_subscription(keys::VMSS, sub),
    })
}

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
    let prefix = sets_prefix(st, sub, rg).await?;
    let tenant = st.tenant_id().await?;
    let items = st
        .list::<VmssRecord>(&prefix)
        .await?
        .iter()
        .map(|s| views::vmss_json(&s.value, s.revision, &tenant))
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

/// The `If-Match` / `If-None-Match` of the request.
pub fn preconditions(ctx: &Ctx) -> Preconditions {
    Preconditions {
        if_match: ctx.if_match.clone(),
        if_none_match: ctx.if_none_match.clone(),
    }
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
            let tenant = st.tenant_id().await?;
            Ok(json(
                200,
                &views::vmss_json(&set.value, set.revision, &tenant),
            ))
        }
        Method::PUT | Method::PATCH => {
            st.require_group(&vmss.subscription, &vmss.resource_group)
                .await?;
            names::check_resource_name("scale set", &vmss.name, 64)?;
            let patch = *method == Method::PATCH;
            let change = if patch {
                let incoming = body_object(body, true)?;
                // The references of the set the patch makes are checked as a PUT's.
                if let Some(current) = st.get::<VmssRecord>(&vmss.key()).await? {
                    let mut merged = serde_json::to_value(&current.value.model)
                        .map_err(|e| ArmError::internal(e.to_string()))?;
                    model::merge_json(&mut merged, &incoming);
                    if let Ok(set) = model::parse_typed::<model::VirtualMachineScaleSet>(&merged) {
                        crate::references::check_pools(st, &set, &vmss.id()).await?;
                        crate::references::check_others(st, &set, &vmss.id()).await?;
                    }
                }
                SetChange::Patch(incoming)
            } else {
                let set = model::parse_body(body)?;
                crate::references::check_pools(st, &set, &vmss.id()).await?;
                crate::references::check_others(st, &set, &vmss.id()).await?;
                SetChange::Put(Box::new(set))
            };
            let done = execute_set(st, ctx, vmss, change).await?;
            let (Some(rec), Some(op), Some(rev)) =
                (&done.writes.set, &done.writes.operation, done.revision)
            else {
                return Err(ArmError::internal("The scale set was not written."));
            };
            let status = if done.writes.created && !patch {
                201
            } else {
                200
            };
            let url = ctx.operation_url(&vmss.subscription, location(rec), &op.id);
            let view = views::vmss_json(rec, rev, &st.tenant_id().await?);
            Ok(lro(status, Some(&view), &url, false))
        }
        Method::DELETE => {
            st.require_group(&vmss.subscription, &vmss.resource_group)
                .await?;
            let done = execute_set(st, ctx, vmss, SetChange::Delete).await?;
            match (&done.writes.set, &done.writes.operation) {
                (Some(rec), Some(op)) => Ok(lro(
                    202,
                    None,
                    &ctx.operation_url(&vmss.subscription, location(rec), &op.id),
                    true,
                )),
                _ => Ok(empty(204)),
            }
        }
        _ => Err(method_not_allowed(method)),
    }
}

async fn execute_set(
    st: &ApiState,
    ctx: &Ctx,
    vmss: &VmssRef,
    change: SetChange,
) -> Result<shoal_control::commands::Executed, ArmError> {
    let preconditions = match change {
        // A delete answers 204 or 202 whatever the etag, as before.
        SetChange::Delete => Preconditions::default(),
        _ => preconditions(ctx),
    };
    st.commands()
        .execute(Command::ScaleSet(SetCommand {
            vmss: vmss.clone(),
            change,
            preconditions,
        }))
        .await
        .map_err(command_error)
}

/// The location in a set's operation URLs.
pub fn location(rec: &VmssRecord) -> &str {
    rec.model.location.as_deref().unwrap_or("local")
}

/// Resolves the images a set's model names in the galleries ([`resolve_image`]).
pub struct Galleries(pub ApiState);

impl ImageResolver for Galleries {
    fn resolve<'a>(&'a self, image_id: &'a str) -> BoxFuture<'a, Result<ResolvedImage, ArmError>> {
        Box::pin(async move {
            // A platform image (`urn:…`) is the gallery version published under it.
            let target = if image_id.starts_with(crate::platform_images::URN) {
                crate::platform_images::resolve(&self.0, image_id).await?
            } else {
                image_id.to_string()
            };
            let (id, version, shoal) = resolve_image(&self.0, &target).await?;
            Ok(ResolvedImage {
                requested: image_id.to_string(),
                id,
                version,
                shoal,
            })
        })
    }
}

impl Galleries {
    pub fn of(st: &ApiState) -> Arc<dyn ImageResolver> {
        Arc::new(Galleries(st.clone()))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{body_bytes, request};
    use shoal_control::kv;
    use shoal_model::ids;
    use shoal_store::Expect;
    use tower::ServiceExt as _;

    const RG: &str = "/subscriptions/s/resourceGroups/demo";
    const SET: &str =
        "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";
    const IMAGE: &str = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0";

    async fn state() -> ApiState {
        let st =
            crate::arm_crud::testing::empty_state("2026-11-22T10:00:00Z".parse().expect("time"));
        assert_eq!(
            call(&st, Method::PUT, RG, json!({"location": "local"}))
                .await
                .0,
            201
        );
        let version = json!({"id": IMAGE, "name": "1.0.0", "properties": {"shoal": {
            "kind": "process", "command": "./web", "port": 8080, "blobId": "b"}}});
        st.store
            .txn(vec![kv::put_op(
                ids::image_version_key("s", "demo", "apps", "web", "1.0.0"),
                &version,
                Expect::Absent,
            )])
            .await
            .expect("store");
        st
    }

    use crate::arm_crud::testing::call;

    fn model() -> Value {
        json!({
            "location": "local",
            "tags": {"team": "web"},
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2},
            "properties": {
                "automaticRepairsPolicy": {"enabled": true},
                "virtualMachineProfile": {
                    "storageProfile": {"imageReference": {"id": IMAGE}},
                    "extensionProfile": {"extensions": [{"name": "noop"}]}
                }
            }
        })
    }

    #[tokio::test]
    async fn named_subnets_groups_and_placement_must_exist_and_stay_while_used() {
        let st = state().await;
        let net = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Network";
        let compute = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute";
        let subnet = format!("{net}/virtualNetworks/v/subnets/a");
        let nsg = format!("{net}/networkSecurityGroups/g");
        let ppg = format!("{compute}/proximityPlacementGroups/near");
        let hg = format!("{compute}/hostGroups/dedicated");
        let mut set = model();
        set["properties"]["proximityPlacementGroup"] = json!({"id": ppg});
        set["properties"]["hostGroup"] = json!({"id": hg});
        set["properties"]["virtualMachineProfile"]["networkProfile"] = json!({"networkInterfaceConfigurations": [
            {"name": "nic", "properties": {"networkSecurityGroup": {"id": nsg}, "ipConfigurations": [
                {"name": "ip", "properties": {"subnet": {"id": subnet}}}]}}]});
        let refused = |body: Value| {
            let st = &st;
            async move {
                let (status, err) = call(st, Method::PUT, SET, body).await;
                (
                    status,
                    err["error"]["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    err["error"]["target"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            }
        };
        let (status, code, target) = refused(set.clone()).await;
        assert_eq!((status, code.as_str()), (400, "InvalidResourceReference"));
        assert!(target.ends_with("subnet.id"), "{target}");
        let vnet = json!({"location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "a", "properties": {"addressPrefix": "10.0.0.0/24"}}]}});
        assert_eq!(
            call(&st, Method::PUT, &format!("{net}/virtualNetworks/v"), vnet)
                .await
                .0,
            201
        );
        let (_, code, target) = refused(set.clone()).await;
        assert_eq!(code, "InvalidResourceReference");
        assert!(target.ends_with("networkSecurityGroup.id"), "{target}");
        assert_eq!(
            call(&st, Method::PUT, &nsg, json!({"location": "local"}))
                .await
                .0,
            201
        );
        let (status, code, target) = refused(set.clone()).await;
        assert_eq!(
            (status, code.as_str(), target.as_str()),
            (
                404,
                "ResourceNotFound",
                "properties.proximityPlacementGroup.id"
            )
        );
        assert_eq!(
            call(&st, Method::PUT, &ppg, json!({"location": "local"}))
                .await
                .0,
            201
        );
        let (status, code, target) = refused(set.clone()).await;
        assert_eq!(
            (status, code.as_str(), target.as_str()),
            (404, "ResourceNotFound", "properties.hostGroup.id")
        );
        assert_eq!(
            call(
                &st,
                Method::PUT,
                &hg,
                json!({"location": "local", "properties": {"platformFaultDomainCount": 1}})
            )
            .await
            .0,
            201
        );
        // A health probe must be a probe of a load balancer that exists.
        let mut probed = model();
        probed["properties"]["virtualMachineProfile"]["networkProfile"] =
            json!({"healthProbe": {"id": format!("{net}/loadBalancers/lb/probes/http")}});
        let (status, code, target) = refused(probed).await;
        assert_eq!((status, code.as_str()), (400, "InvalidResourceReference"));
        assert!(target.ends_with("healthProbe.id"), "{target}");
        // Nothing was written by the refusals; now every reference resolves.
        assert_eq!(call(&st, Method::GET, SET, Value::Null).await.0, 404);
        let (status, created) = call(&st, Method::PUT, SET, set).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["properties"]["hostGroup"]["id"], json!(hg));
        // What the set uses cannot be deleted; the group shows the set in it.
        let (status, err) = call(&st, Method::DELETE, &subnet, Value::Null).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("InUseSubnetCannotBeDeleted"))
        );
        let (status, err) = call(&st, Method::DELETE, &nsg, Value::Null).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("InUseNetworkSecurityGroupCannotBeDeleted"))
        );
        assert_eq!(call(&st, Method::DELETE, &ppg, Value::Null).await.0, 409);
        let (_, group) = call(&st, Method::GET, &ppg, Value::Null).await;
        assert_eq!(
            group["properties"]["virtualMachineScaleSets"][0]["id"]
                .as_str()
                .map(str::to_ascii_lowercase),
            Some(SET.to_ascii_lowercase())
        );
        // A subnet added on its own is checked with its network.
        let (status, err) = call(
            &st,
            Method::PUT,
            &format!("{net}/virtualNetworks/v/subnets/b"),
            json!({"properties": {"addressPrefix": "10.0.0.128/25"}}),
        )
        .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("NetcfgSubnetRangesOverlap"))
        );
        let (status, b) = call(
            &st,
            Method::PUT,
            &format!("{net}/virtualNetworks/v/subnets/b"),
            json!({"properties": {"addressPrefix": "10.0.1.0/24"}}),
        )
        .await;
        assert_eq!(status, 201, "{b}");
        assert!(
            b["id"]
                .as_str()
                .is_some_and(|i| i.ends_with("/virtualNetworks/v/subnets/b")),
            "{b}"
        );
        let (_, list) = call(
            &st,
            Method::GET,
            &format!("{net}/virtualNetworks/v/subnets"),
            Value::Null,
        )
        .await;
        assert_eq!(list["value"].as_array().map(Vec::len), Some(2));
    }

    #[tokio::test]
    async fn put_replaces_and_patch_merges() {
        let st = state().await;
        let (status, created) = call(&st, Method::PUT, SET, model()).await;
        assert_eq!(status, 201, "{created}");
        // PATCH without extensionProfile keeps it; its tags replace the old ones.
        let (status, patched) =
            call(&st, Method::PATCH, SET, json!({"tags": {"tier": "front"}})).await;
        assert_eq!(status, 200, "{patched}");
        assert!(patched["properties"]["virtualMachineProfile"]["extensionProfile"].is_object());
        assert_eq!(patched["tags"], json!({"tier": "front"}));
        // PUT of the model as GET shows it, minus extensionProfile and repairs: both go;
        // capacity, uniqueId and timeCreated stay.
        let (_, mut got) = call(&st, Method::GET, SET, Value::Null).await;
        got["properties"]["virtualMachineProfile"]
            .as_object_mut()
            .unwrap()
            .remove("extensionProfile");
        got["properties"]
            .as_object_mut()
            .unwrap()
            .remove("automaticRepairsPolicy");
        got["sku"].as_object_mut().unwrap().remove("capacity");
        let (status, put) = call(&st, Method::PUT, SET, got).await;
        assert_eq!(status, 200, "{put}");
        assert!(put["properties"]["virtualMachineProfile"]
            .get("extensionProfile")
            .is_none());
        assert!(put["properties"].get("automaticRepairsPolicy").is_none());
        assert_eq!(put["sku"]["capacity"], 2);
        assert_eq!(
            put["properties"]["uniqueId"],
            created["properties"]["uniqueId"]
        );
        assert_eq!(
            put["properties"]["timeCreated"],
            created["properties"]["timeCreated"]
        );
    }

    #[tokio::test]
    async fn immutable_properties_and_the_capacity_limit_are_refused_naming_the_field() {
        let st = state().await;
        assert_eq!(call(&st, Method::PUT, SET, model()).await.0, 201);
        let mut flexible = model();
        flexible["properties"]["orchestrationMode"] = json!("Flexible");
        let (status, err) = call(&st, Method::PUT, SET, flexible).await;
        assert_eq!(status, 409);
        assert_eq!(err["error"]["code"], "PropertyChangeNotAllowed");
        assert_eq!(err["error"]["target"], "properties.orchestrationMode");
        let (status, err) = call(&st, Method::PATCH, SET, json!({"sku": {"capacity": 11}})).await;
        assert_eq!(status, 400);
        assert_eq!(err["error"]["target"], "sku.capacity");
        let (_, got) = call(&st, Method::GET, SET, Value::Null).await;
        assert_eq!(got["sku"]["capacity"], 2, "nothing changed");
    }

    #[tokio::test]
    async fn a_put_body_that_is_not_a_model_is_refused() {
        let st = state().await;
        for (body, code) in [
            ("", "InvalidRequestContent"),
            ("[]", "InvalidRequestContent"),
            ("{\"sku\": {\"capacity\": \"two\"}}", "InvalidParameter"),
        ] {
            let resp = crate::router(st.clone())
                .oneshot(request(Method::PUT, SET, body.to_string()))
                .await
                .expect("response");
            assert_eq!(resp.status().as_u16(), 400, "{body}");
            let err: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
            assert_eq!(err["error"]["code"], code, "{body}");
        }
        assert_eq!(call(&st, Method::GET, SET, Value::Null).await.0, 404);
    }
}
