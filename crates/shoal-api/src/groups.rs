//! Resource groups: list, create or update (tags), and delete, which deletes everything
//! in the group (scale sets through an operation, then galleries, balancers, gateways and
//! autoscale settings).
//!
//! Galleries, image definitions and versions are in [`crate::galleries`]; uploaded
//! bundles in [`crate::blobs`].

use http::Method;
use serde_json::{json, Value};
use shoal_control::kv;
use shoal_model::ids;
use shoal_model::keys;
use shoal_model::records::{operation_key, OperationWait, VmssRecord};
use shoal_model::{names, ArmError};
use shoal_store::Expect;

use crate::response::{self, empty, json, lro, ApiResult, Ctx};
use crate::state::{body_object, txn_error, ApiState};

// Kept here for the handlers that import them from `groups`: the 405 answer lives with
// the routes, image resolution with the galleries.
pub use crate::galleries::resolve_image;
pub use crate::routes::method_not_allowed;

const GROUP_TYPE: &str = "Microsoft.Resources/resourceGroups";

pub async fn groups(st: &ApiState, ctx: &Ctx, method: &Method, sub: &str) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let groups = st
        .list::<Value>(&keys::in_subscription(keys::RESOURCE_GROUP, sub))
        .await?;
    let items = groups.into_iter().map(|g| g.value).collect();
    Ok(response::page(
        ctx,
        &format!("/subscriptions/{sub}/resourcegroups"),
        items,
        st.page_size,
    ))
}

pub async fn group(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: &str,
    body: &[u8],
) -> ApiResult {
    names::check_resource_group(rg)?;
    let key = ids::rg_key(sub, rg);
    let existing = st.get::<Value>(&key).await?;
    match *method {
        Method::GET => match existing {
            Some(g) => Ok(json(200, &g.value)),
            None => Err(ArmError::resource_group_not_found(rg)),
        },
        Method::HEAD => Ok(empty(if existing.is_some() { 204 } else { 404 })),
        Method::PUT | Method::PATCH => {
            let incoming = body_object(body, *method == Method::PUT)?;
            if let Some(g) = &existing {
                if g.value["properties"]["provisioningState"] == "Deleting" {
                    return Err(ArmError::conflict(format!(
                        "Resource group '{rg}' is being deleted."
                    ))
                    .with_target(rg.to_string()));
                }
            }
            let location = incoming
                .get("location")
                .and_then(Value::as_str)
                .map(String::from)
                .or_else(|| {
                    existing
                        .as_ref()
                        .and_then(|g| g.value["location"].as_str().map(String::from))
                });
            if *method == Method::PATCH && existing.is_none() {
                return Err(ArmError::resource_group_not_found(rg));
            }
            let Some(location) = location.filter(|l| !l.trim().is_empty()) else {
                return Err(ArmError::invalid_parameter(
                    "location",
                    "A location is required (e.g. \"local\").",
                ));
            };
            if let Some(prev) = existing.as_ref().and_then(|g| g.value["location"].as_str()) {
                if !prev.eq_ignore_ascii_case(&location) {
                    return Err(ArmError::invalid_parameter(
                        "location",
                        "The location of a resource group cannot change.",
                    ));
                }
            }
            let tags = match incoming.get("tags") {
                Some(t) => parse_tags(t)?,
                None => existing
                    .as_ref()
                    .map(|g| g.value["tags"].clone())
                    .unwrap_or(json!({})),
            };
            let name = existing
                .as_ref()
                .and_then(|g| g.value["name"].as_str().map(String::from))
                .unwrap_or(rg.to_string());
            let obj = json!({
                "id": ids::rg_id(sub, &name),
                "name": name,
                "type": GROUP_TYPE,
                "location": location,
                "tags": tags,
                "properties": {"provisioningState": "Succeeded"},
            });
            let expect = existing
                .as_ref()
                .map_or(Expect::Absent, |g| Expect::ModRevision(g.revision));
            st.store
                .txn(vec![kv::put_op(key, &obj, expect)])
                .await
                .map_err(txn_error)?;
            Ok(json(if existing.is_some() { 200 } else { 201 }, &obj))
        }
        Method::DELETE => {
            let Some(g) = existing else {
                return Err(ArmError::resource_group_not_found(rg));
            };
            let mut obj = g.value.clone();
            obj["properties"]["provisioningState"] = json!("Deleting");
            let op = st.new_operation(
                sub,
                format!("Delete resource group {rg}"),
                OperationWait::GroupGone {
                    subscription: sub.to_string(),
                    resource_group: rg.to_string(),
                },
            );
            let mut txn = vec![kv::put_op(key, &obj, Expect::ModRevision(g.revision))];
            let sets = st
                .list::<VmssRecord>(&keys::in_group(keys::VMSS, sub, rg))
                .await?;
            for set in sets {
                let mut rec = set.value.clone();
                rec.deleting = true;
                if let Some(p) = rec.model.properties.as_mut() {
                    p.provisioning_state = Some("Deleting".into());
                }
                txn.push(kv::put_op(set.key, &rec, Expect::ModRevision(set.revision)));
            }
            txn.push(kv::put_op(operation_key(&op.id), &op, Expect::Absent));
            st.store.txn(txn).await.map_err(txn_error)?;
            let loc = obj["location"].as_str().unwrap_or("local").to_string();
            Ok(lro(202, None, &ctx.operation_url(sub, &loc, &op.id), true))
        }
        _ => Err(method_not_allowed(method)),
    }
}

fn parse_tags(t: &Value) -> Result<Value, ArmError> {
    match t {
        Value::Object(m) if m.values().all(Value::is_string) && m.len() <= 50 => Ok(t.clone()),
        _ => Err(ArmError::invalid_parameter(
            "tags",
            "Tags must be an object of at most 50 string values.",
        )),
    }
}
