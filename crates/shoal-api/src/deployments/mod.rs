//! `Microsoft.Resources/deployments` at resource-group scope: template deployments.
//!
//! A PUT checks the template statically (every expression parses and calls functions Shoal
//! implements, parameters have values, names and `dependsOn` resolve, no cycle) and answers
//! 400 `InvalidTemplate` naming the problem and its JSON path, or 201 `Accepted` with an
//! `Azure-AsyncOperation` URL; the deployment then runs in the background ([`engine`]),
//! each resource PUT through Shoal's own API as the caller. A failure ends it `Failed` with
//! `DeploymentFailed` and the inner errors in `details`; resources created before it stay.
//! Only `Incremental` mode: `Complete` is a 400. GET, list, DELETE (the record only, as
//! ARM), `validate` and the operations list answer as ARM's.

pub mod engine;
mod scope;

use http::Method;
use serde_json::{json, Map, Value};
use shoal_control::kv;
use shoal_model::ArmError;
use shoal_store::Expect;

use crate::response::{json, lro, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::state::{body_object, txn_error, ApiState};
use engine::{invalid_template, Arm, OpResult};
use scope::Scope;

pub const TYPE: &str = "Microsoft.Resources/deployments";

fn key(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "deploy/{}/{}/{}",
        sub.to_ascii_lowercase(),
        rg.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

fn ops_key(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "deployops/{}/{}/{}",
        sub.to_ascii_lowercase(),
        rg.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

fn id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{TYPE}/{name}")
}

fn not_found(name: &str) -> ArmError {
    ArmError::new(
        404,
        "DeploymentNotFound",
        format!("Deployment '{name}' could not be found."),
    )
    .with_target(name.to_string())
}

/// A deployment request body: JSON, or the JSONC ARM also reads (what `az deployment
/// group create --template-file` sends: the file spliced in after an unquoted `template:`
/// key, its comments and trailing commas kept).
fn deployment_body(body: &[u8]) -> Result<Value, ArmError> {
    match body_object(body, true) {
        Ok(v) => Ok(v),
        Err(plain) => {
            let Ok(text) = std::str::from_utf8(body) else {
                return Err(plain);
            };
            let json = shoal_template::jsonc::to_json(text).map_err(|why| {
                ArmError::new(
                    400,
                    "InvalidRequestContent",
                    format!("The request content could not be read: {why}."),
                )
            })?;
            body_object(json.as_bytes(), true)
        }
    }
}

/// A checked deployment request, ready to run.
pub struct Prepared {
    pub scope: Scope,
    pub planned: Vec<engine::Planned>,
    pub order: Vec<usize>,
    pub outputs: Map<String, Value>,
    pub parameters: Value,
    pub mode: String,
}

/// Checks a deployment body statically (the PUT and `validate`).
pub fn prepare(
    sub: &str,
    rg: &str,
    location: &str,
    tenant: &str,
    body: &Value,
) -> Result<Prepared, ArmError> {
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ArmError::new(
                400,
                "InvalidRequestContent",
                "The request content must have 'properties'.",
            )
            .with_target("properties")
        })?;
    let mode = props
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("Incremental");
    if !mode.eq_ignore_ascii_case("Incremental") {
        return Err(ArmError::new(400, "InvalidDeploymentMode", format!(
            "The deployment mode '{mode}' is not supported by Shoal: only 'Incremental' (Complete mode, which deletes the group's resources the template does not name, is not implemented)."
        )).with_target("properties.mode"));
    }
    if props.get("templateLink").is_some_and(|v| !v.is_null()) {
        return Err(invalid_template("'properties.templateLink' is not supported by Shoal: send the template inline in 'properties.template'.", Some("properties.templateLink".into())));
    }
    if props.get("parametersLink").is_some_and(|v| !v.is_null()) {
        return Err(invalid_template(
            "'properties.parametersLink' is not supported by Shoal: send the parameters inline.",
            Some("properties.parametersLink".into()),
        ));
    }
    let template = props
        .get("template")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            invalid_template(
                "The deployment needs 'properties.template' (an object).",
                Some("properties.template".into()),
            )
        })?;
    if template.get("languageVersion").is_some() {
        return Err(invalid_template("Templates with 'languageVersion' (symbolic resource names) are not supported by Shoal.", Some("languageVersion".into())));
    }
    for part in ["parameters", "variables", "resources", "outputs"] {
        if let Some(v) = template.get(part) {
            shoal_template::check_tree(v, part).map_err(|e| {
                invalid_template(
                    format!("Deployment template validation failed: {e}."),
                    Some(e.path.clone()),
                )
            })?;
        }
    }
    let mut scope = Scope::new(sub, rg, location, tenant);
    scope.variables = template
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let given = props
        .get("parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let declared = template
        .get("parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for k in given.keys() {
        if !declared.keys().any(|d| d.eq_ignore_ascii_case(k)) {
            return Err(invalid_template(format!("Deployment template validation failed: the parameter '{k}' is given but the template does not declare it."), Some(format!("properties.parameters.{k}"))));
        }
    }
    for (name, decl) in &declared {
        let path = format!("parameters.{name}");
        let given_v = given
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v);
        let value = match given_v {
            Some(g) if g.get("reference").is_some() => {
                return Err(invalid_template(format!("The parameter '{name}' is a Key Vault reference, which Shoal does not support."), Some(format!("properties.parameters.{name}"))));
            }
            Some(g) => g.get("value").cloned().unwrap_or(Value::Null),
            None => match decl.get("defaultValue") {
                Some(d) => shoal_template::eval_tree(d, &format!("{path}.defaultValue"), &scope)
                    .map_err(|e| {
                        invalid_template(
                            format!("Deployment template validation failed: {e}."),
                            Some(e.path),
                        )
                    })?,
                None => {
                    return Err(invalid_template(format!("Deployment template validation failed: the value for the template parameter '{name}' is not provided."), Some(path)));
                }
            },
        };
        if let Some(allowed) = decl.get("allowedValues").and_then(Value::as_array) {
            if !allowed.contains(&value) {
                return Err(invalid_template(format!("Deployment template validation failed: the provided value {value} for the template parameter '{name}' is not valid; the allowed values are {}.", Value::Array(allowed.clone())), Some(path)));
            }
        }
        scope.parameters.insert(name.clone(), value);
    }
    let resources = match template.get("resources") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(invalid_template(
                "'resources' must be an array.",
                Some("resources".into()),
            ))
        }
    };
    let planned = engine::plan(&mut scope, &resources)?;
    let order = engine::order(&planned)?;
    let parameters = Value::Object(
        scope
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), json!({"value": v})))
            .collect(),
    );
    Ok(Prepared {
        scope,
        planned,
        order,
        outputs: template
            .get("outputs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        parameters,
        mode: "Incremental".into(),
    })
}

fn record(sub: &str, rg: &str, name: &str, p: &Prepared, state: &str, now: &str) -> Value {
    json!({
        "id": id(sub, rg, name),
        "name": name,
        "type": TYPE,
        "properties": {
            "provisioningState": state,
            "mode": p.mode,
            "timestamp": now,
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "parameters": p.parameters,
            "dependencies": [],
            "providers": [],
            "validatedResources": p.order.iter().map(|&i| json!({"id": p.planned[i].id})).collect::<Vec<_>>(),
        }
    })
}

fn location_of(group: &Value) -> String {
    group["location"].as_str().unwrap_or("local").to_string()
}

async fn tenant_of(st: &ApiState) -> String {
    match &st.auth {
        Some(a) => a
            .directory
            .tenant()
            .await
            .map(|t| t.tenant_id)
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// `…/resourceGroups/{rg}/providers/Microsoft.Resources/deployments[/{name}[/{action}]]`.
#[allow(clippy::too_many_arguments)]
pub async fn deployments(
    st: &ApiState,
    ctx: &Ctx,
    caller: Option<shoal_auth::Principal>,
    method: &Method,
    sub: &str,
    rg: &str,
    name: Option<&str>,
    action: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let group = st.require_group(sub, rg).await?.value;
    let Some(name) = name else {
        if method != Method::GET {
            return Err(method_not_allowed(method));
        }
        let prefix = format!(
            "deploy/{}/{}/",
            sub.to_ascii_lowercase(),
            rg.to_ascii_lowercase()
        );
        let all: Vec<Value> = st
            .list::<Value>(&prefix)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        return Ok(json(200, &json!({"value": all})));
    };
    shoal_model::names::check_resource_name("deployment", name, 64)?;
    let key = key(sub, rg, name);
    match (
        action.map(str::to_ascii_lowercase).as_deref(),
        method.clone(),
    ) {
        (None, Method::GET) => match st.get::<Value>(&key).await? {
            Some(v) => Ok(json(200, &v.value)),
            None => Err(not_found(name)),
        },
        (Some("operationstatuses"), Method::GET) => {
            let rec = st
                .get::<Value>(&key)
                .await?
                .ok_or_else(|| not_found(name))?
                .value;
            let state = rec["properties"]["provisioningState"]
                .as_str()
                .unwrap_or("Running");
            let status = if matches!(state, "Accepted" | "Running") {
                "Running"
            } else {
                state
            };
            let mut b = json!({"status": status});
            if let Some(e) = rec["properties"].get("error") {
                b["error"] = e.clone();
            }
            let mut resp = json(200, &b);
            if status == "Running" {
                resp.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
            }
            Ok(resp)
        }
        (Some("operations"), Method::GET) => {
            let ops = st.get::<Value>(&ops_key(sub, rg, name)).await?;
            if ops.is_none() && st.get::<Value>(&key).await?.is_none() {
                return Err(not_found(name));
            }
            Ok(json(
                200,
                &json!({"value": ops.map(|o| o.value).unwrap_or(json!([]))}),
            ))
        }
        (Some("validate"), Method::POST) => {
            let body = deployment_body(body)?;
            let p = prepare(sub, rg, &location_of(&group), &tenant_of(st).await, &body)?;
            let mut rec = record(sub, rg, name, &p, "Succeeded", &st.now());
            rec["properties"]["outputs"] = json!({});
            Ok(json(200, &rec))
        }
        (None, Method::DELETE) => {
            let Some(cur) = st.get::<Value>(&key).await? else {
                return Ok(crate::response::empty(204));
            };
            if matches!(
                cur.value["properties"]["provisioningState"].as_str(),
                Some("Accepted" | "Running")
            ) {
                return Err(ArmError::new(
                    409,
                    "DeploymentActive",
                    format!(
                        "The deployment '{name}' is still running; it can be deleted when it ends."
                    ),
                ));
            }
            st.store
                .txn(vec![
                    kv::delete_op(key.clone(), Expect::ModRevision(cur.revision)),
                    kv::delete_op(ops_key(sub, rg, name), Expect::Any),
                ])
                .await
                .map_err(txn_error)?;
            Ok(crate::response::empty(200))
        }
        (None, Method::PUT) => {
            let body = deployment_body(body)?;
            let existing = st.get::<Value>(&key).await?;
            if let Some(cur) = &existing {
                if matches!(
                    cur.value["properties"]["provisioningState"].as_str(),
                    Some("Accepted" | "Running")
                ) {
                    return Err(ArmError::new(
                        409,
                        "DeploymentActive",
                        format!("The deployment '{name}' is still running."),
                    ));
                }
            }
            let p = prepare(sub, rg, &location_of(&group), &tenant_of(st).await, &body)?;
            let rec = record(sub, rg, name, &p, "Accepted", &st.now());
            let expect = existing
                .as_ref()
                .map_or(Expect::Absent, |c| Expect::ModRevision(c.revision));
            st.store
                .txn(vec![
                    kv::put_op(key.clone(), &rec, expect),
                    kv::put_op(ops_key(sub, rg, name), &json!([]), Expect::Any),
                ])
                .await
                .map_err(txn_error)?;
            let arm = InProcess {
                st: st.clone(),
                ctx: ctx.clone(),
                caller,
            };
            let (sub_o, rg_o, name_o) = (sub.to_string(), rg.to_string(), name.to_string());
            let started = rec.clone();
            tokio::spawn(async move {
                run(arm, sub_o, rg_o, name_o, p, started).await;
            });
            let url = format!(
                "{}{}/operationStatuses/{}?api-version={}",
                ctx.base_url,
                id(sub, rg, name),
                uuid::Uuid::new_v4(),
                ctx.api_version()
            );
            Ok(lro(
                if existing.is_some() { 200 } else { 201 },
                Some(&rec),
                &url,
                false,
            ))
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// Shoal's API called in-process with the deployment's caller and request context.
struct InProcess {
    st: ApiState,
    ctx: Ctx,
    caller: Option<shoal_auth::Principal>,
}

impl Arm for InProcess {
    fn call(
        &self,
        method: Method,
        path: String,
        api_version: String,
        body: Option<Value>,
    ) -> futures::future::BoxFuture<'_, (u16, Value)> {
        Box::pin(async move {
            let mut ctx = self.ctx.clone();
            ctx.query = vec![("api-version".into(), api_version)];
            ctx.if_match = None;
            ctx.if_none_match = None;
            let bytes = body
                .map(|b| serde_json::to_vec(&b).unwrap_or_default())
                .unwrap_or_default();
            crate::server::dispatch_as(
                &self.st,
                &ctx,
                self.caller.clone(),
                &method,
                &path,
                bytes.into(),
            )
            .await
        })
    }
}

async fn run(
    arm: InProcess,
    sub: String,
    rg: String,
    name: String,
    mut p: Prepared,
    mut rec: Value,
) {
    let st = arm.st.clone();
    let started = tokio::time::Instant::now();
    rec["properties"]["provisioningState"] = json!("Running");
    save(&st, &sub, &rg, &name, &rec, None).await;
    let mut ops: Vec<OpResult> = Vec::new();
    let mut failure: Option<ArmError> = None;
    let mut created = Vec::new();
    for &i in &p.order.clone() {
        let planned = p.planned[i].clone();
        let r = engine::deploy_one(&arm, &mut p.scope, &planned).await;
        let (status, state, error) = match r {
            Ok(_) => (200, "Succeeded", None),
            Err(e) => (e.status, "Failed", Some(e)),
        };
        ops.push(OpResult {
            id: planned.id.clone(),
            type_: planned.type_.clone(),
            name: planned.name.clone(),
            status,
            state,
            error: error.clone(),
            timestamp: st.now(),
        });
        match error {
            None => created.push(json!({"id": planned.id})),
            Some(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let outputs = match &failure {
        None => match engine::outputs(&p.scope, &p.outputs) {
            Ok(o) => Some(o),
            Err(e) => {
                failure = Some(e);
                None
            }
        },
        Some(_) => None,
    };
    let props = &mut rec["properties"];
    props["timestamp"] = json!(st.now());
    props["duration"] = json!(format!("PT{:.3}S", started.elapsed().as_secs_f64()));
    props["outputResources"] = json!(created);
    match failure {
        None => {
            props["provisioningState"] = json!("Succeeded");
            props["outputs"] = outputs.unwrap_or(json!({}));
        }
        Some(inner) => {
            props["provisioningState"] = json!("Failed");
            let err = ArmError {
                status: 400,
                code: "DeploymentFailed".into(),
                message: format!("At least one resource deployment operation failed. Please list deployment operations for details. First failure: {}: {}", inner.code, inner.message),
                target: None,
                details: vec![inner],
            };
            props["error"] = serde_json::to_value(&err).unwrap_or(Value::Null);
        }
    }
    let ops_json: Vec<Value> = ops.iter().map(|o| op_json(&sub, &rg, &name, o)).collect();
    save(&st, &sub, &rg, &name, &rec, Some(json!(ops_json))).await;
}

fn op_json(sub: &str, rg: &str, name: &str, o: &OpResult) -> Value {
    let op_id = format!("{:016X}", {
        let mut h: u64 = 1469598103934665603;
        for b in o.id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
        }
        h
    });
    let mut props = json!({
        "provisioningOperation": "Create",
        "provisioningState": o.state,
        "timestamp": o.timestamp,
        "statusCode": if o.error.is_none() { "OK".to_string() } else { o.status.to_string() },
        "targetResource": {"id": o.id, "resourceType": o.type_, "resourceName": o.name},
    });
    if let Some(e) = &o.error {
        props["statusMessage"] = json!({"error": e});
    }
    json!({"id": format!("{}/operations/{op_id}", id(sub, rg, name)), "operationId": op_id, "properties": props})
}

async fn save(st: &ApiState, sub: &str, rg: &str, name: &str, rec: &Value, ops: Option<Value>) {
    let mut txn = vec![kv::put_op(key(sub, rg, name), rec, Expect::Any)];
    if let Some(o) = ops {
        txn.push(kv::put_op(ops_key(sub, rg, name), &o, Expect::Any));
    }
    if let Err(e) = st.store.txn(txn).await {
        tracing::error!(deployment = name, error = %e, "could not save the deployment's state");
    }
}

/// Parses `…/providers/Microsoft.Resources/deployments…` (segments from `subscriptions`).
pub fn route(segs: &[&str]) -> Option<crate::routes::Route> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let n = segs.len();
    // ARM also lists a deployment's operations without the provider segment
    // (`…/resourcegroups/{rg}/deployments/{name}/operations`, as the SDK's current API does).
    if n == 7
        && eq(segs[2], "resourcegroups")
        && eq(segs[4], "deployments")
        && eq(segs[6], "operations")
    {
        return Some(crate::routes::Route::Deployments {
            sub: segs[1].to_string(),
            rg: segs[3].to_string(),
            name: Some(segs[5].to_string()),
            action: Some("operations".to_string()),
        });
    }
    if !((7..=10).contains(&n)
        && eq(segs[2], "resourcegroups")
        && eq(segs[4], "providers")
        && eq(segs[5], "Microsoft.Resources")
        && eq(segs[6], "deployments"))
    {
        return None;
    }
    let action = match n {
        9 if ["validate", "operations"].iter().any(|a| eq(segs[8], a)) => Some(segs[8].to_string()),
        10 if eq(segs[8], "operationStatuses") => Some("operationStatuses".to_string()),
        7 | 8 => None,
        _ => return None,
    };
    Some(crate::routes::Route::Deployments {
        sub: segs[1].to_string(),
        rg: segs[3].to_string(),
        name: segs.get(7).map(|s| s.to_string()),
        action,
    })
}

#[cfg(test)]
mod tests;
