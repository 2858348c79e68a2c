//! Running a template: expand `copy` loops, order resources by `dependsOn`, and for each,
//! evaluate it and PUT it through Shoal's own API (the same handlers and validation as a
//! direct PUT), waiting for a long-running create to end before its dependents start.
//! The first failure stops the deployment; what was created before it stays, as in ARM.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use shoal_model::ArmError;
use shoal_template::{eval_string, eval_tree};

use super::scope::Scope;

/// Most resources one deployment may create (ARM: 800).
pub const MAX_RESOURCES: usize = 800;
/// Longest a resource may take to finish provisioning.
const RESOURCE_TIMEOUT: Duration = Duration::from_secs(1200);

/// Shoal's API, called in-process as the deployment's caller.
pub trait Arm: Send + Sync {
    /// `(status, body)` of `method path?api-version=…`.
    fn call(
        &self,
        method: http::Method,
        path: String,
        api_version: String,
        body: Option<Value>,
    ) -> BoxFuture<'_, (u16, Value)>;
}

/// One resource instance to deploy (a copy loop gives one per iteration).
#[derive(Debug, Clone)]
pub struct Planned {
    pub raw: Value,
    pub path: String,
    pub copy: Option<(String, i64)>,
    pub id: String,
    pub type_: String,
    pub name: String,
    pub api_version: String,
    /// The copy loop name or symbolic name others may list in `dependsOn`.
    pub loop_name: Option<String>,
    pub depends: Vec<String>,
}

/// One entry of the deployment's operations list.
#[derive(Debug, Clone)]
pub struct OpResult {
    pub id: String,
    pub type_: String,
    pub name: String,
    pub status: u16,
    pub state: &'static str,
    pub error: Option<ArmError>,
    pub timestamp: String,
}

pub fn invalid_template(msg: impl Into<String>, target: Option<String>) -> ArmError {
    let e = ArmError::new(400, "InvalidTemplate", msg);
    match target {
        Some(t) => e.with_target(t),
        None => e,
    }
}

fn ev_str(scope: &Scope, v: &Value, path: &str) -> Result<String, ArmError> {
    let out = match v {
        Value::String(s) => eval_string(s, scope).map_err(|e| {
            invalid_template(
                format!("Deployment template validation failed: {e} (at '{path}')."),
                Some(path.into()),
            )
        })?,
        other => other.clone(),
    };
    match out {
        Value::String(s) => Ok(s),
        Value::Null => Ok(String::new()),
        other => Ok(other.to_string()),
    }
}

fn tree(scope: &Scope, v: &Value, path: &str) -> Result<Value, ArmError> {
    eval_tree(v, path, scope).map_err(|e| {
        invalid_template(
            format!("Deployment template validation failed: {e}."),
            Some(e.path),
        )
    })
}

/// The resource id of `type`/`name` in the group (`a/b` child types interleave names).
pub fn resource_id(scope: &Scope, type_: &str, name: &str) -> Result<String, String> {
    let mut segs = type_.split('/');
    let ns = segs.next().unwrap_or_default();
    let types: Vec<&str> = segs.collect();
    let names: Vec<&str> = name.split('/').collect();
    if types.is_empty() || types.len() != names.len() || names.iter().any(|n| n.is_empty()) {
        return Err(format!("The resource type '{type_}' and name '{name}' do not match: a type with {} segment(s) after the namespace needs as many name segments.", types.len()));
    }
    let mut id = format!("{}/providers/{ns}", scope.rg_id());
    for (t, n) in types.iter().zip(names) {
        id.push_str(&format!("/{t}/{n}"));
    }
    Ok(id)
}

/// Expands copy loops and evaluates each instance's name, type, condition and dependsOn.
pub fn plan(scope: &mut Scope, resources: &[Value]) -> Result<Vec<Planned>, ArmError> {
    let mut out = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let path = format!("resources[{i}]");
        let Some(obj) = r.as_object() else {
            return Err(invalid_template(
                format!("'{path}' is not an object."),
                Some(path),
            ));
        };
        let copy = obj.get("copy");
        let (loop_name, count) = match copy {
            None => (None, None),
            Some(c) => {
                let name = c.get("name").and_then(Value::as_str).ok_or_else(|| {
                    invalid_template(
                        format!("'{path}.copy' needs a 'name'."),
                        Some(format!("{path}.copy.name")),
                    )
                })?;
                let count = match c.get("count") {
                    Some(Value::String(s)) => eval_string(s, scope).map_err(|e| {
                        invalid_template(format!("Deployment template validation failed: {e} (at '{path}.copy.count')."), Some(format!("{path}.copy.count")))
                    })?,
                    Some(v) => v.clone(),
                    None => Value::Null,
                };
                let count = count.as_i64().filter(|n| (0..=MAX_RESOURCES as i64).contains(n)).ok_or_else(|| {
                    invalid_template(format!("'{path}.copy.count' must be an integer from 0 to {MAX_RESOURCES}, got {count}."), Some(format!("{path}.copy.count")))
                })?;
                (Some(name.to_string()), Some(count))
            }
        };
        let iterations: Vec<Option<(String, i64)>> = match (&loop_name, count) {
            (Some(l), Some(n)) => (0..n).map(|k| Some((l.clone(), k))).collect(),
            _ => vec![None],
        };
        for it in iterations {
            scope.copy = it.iter().cloned().collect();
            if let Some(c) = obj.get("condition") {
                let keep = match c {
                    Value::String(s) => eval_string(s, scope).map_err(|e| {
                        invalid_template(format!("Deployment template validation failed: {e} (at '{path}.condition')."), Some(format!("{path}.condition")))
                    })?,
                    v => v.clone(),
                };
                if keep == Value::Bool(false) || keep == json!("false") {
                    continue;
                }
            }
            let type_ = ev_str(
                scope,
                obj.get("type").unwrap_or(&Value::Null),
                &format!("{path}.type"),
            )?;
            let name = ev_str(
                scope,
                obj.get("name").unwrap_or(&Value::Null),
                &format!("{path}.name"),
            )?;
            let api_version = ev_str(
                scope,
                obj.get("apiVersion").unwrap_or(&Value::Null),
                &format!("{path}.apiVersion"),
            )?;
            if type_.is_empty() || name.is_empty() || api_version.is_empty() {
                return Err(invalid_template(
                    format!("'{path}' needs 'type', 'name' and 'apiVersion'."),
                    Some(path.clone()),
                ));
            }
            if type_.eq_ignore_ascii_case("Microsoft.Resources/deployments") {
                return Err(invalid_template(format!("'{path}': nested deployments (Microsoft.Resources/deployments) are not supported by Shoal."), Some(format!("{path}.type"))));
            }
            let id = resource_id(scope, &type_, &name)
                .map_err(|m| invalid_template(m, Some(format!("{path}.name"))))?;
            let depends = match obj.get("dependsOn") {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(k, d)| ev_str(scope, d, &format!("{path}.dependsOn[{k}]")))
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(invalid_template(
                        format!("'{path}.dependsOn' must be an array."),
                        Some(format!("{path}.dependsOn")),
                    ))
                }
            };
            out.push(Planned {
                raw: r.clone(),
                path: path.clone(),
                copy: scope.copy.last().cloned(),
                id,
                type_,
                name,
                api_version,
                loop_name: loop_name.clone(),
                depends,
            });
            if out.len() > MAX_RESOURCES {
                return Err(invalid_template(
                    format!("A template may deploy at most {MAX_RESOURCES} resources."),
                    None,
                ));
            }
        }
    }
    scope.copy.clear();
    Ok(out)
}

/// Does `dep` (an id, `type/name`, a name or a copy loop's name) name `p`?
fn names(dep: &str, p: &Planned) -> bool {
    let d = dep.trim_end_matches('/');
    d.eq_ignore_ascii_case(&p.id)
        || d.eq_ignore_ascii_case(&p.name)
        || p.loop_name
            .as_deref()
            .is_some_and(|l| d.eq_ignore_ascii_case(l))
        || d.eq_ignore_ascii_case(&format!("{}/{}", p.type_, p.name))
        || p.id
            .to_ascii_lowercase()
            .ends_with(&format!("/{}", d.to_ascii_lowercase()))
}

/// The order to deploy in (each after what it depends on); a cycle or a dependency on
/// nothing in the template is an `InvalidTemplate`.
pub fn order(planned: &[Planned]) -> Result<Vec<usize>, ArmError> {
    let mut deps: Vec<HashSet<usize>> = Vec::with_capacity(planned.len());
    for (i, p) in planned.iter().enumerate() {
        let mut set = HashSet::new();
        for (k, d) in p.depends.iter().enumerate() {
            let hits: Vec<usize> = planned
                .iter()
                .enumerate()
                .filter(|(j, q)| *j != i && names(d, q))
                .map(|(j, _)| j)
                .collect();
            if hits.is_empty() {
                return Err(invalid_template(
                    format!("Deployment template validation failed: the resource '{}' depends on '{d}', which is not defined in the template.", p.id),
                    Some(format!("{}.dependsOn[{k}]", p.path)),
                ));
            }
            set.extend(hits);
        }
        deps.push(set);
    }
    let mut done = vec![false; planned.len()];
    let mut out = Vec::with_capacity(planned.len());
    while out.len() < planned.len() {
        let next = (0..planned.len()).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        match next {
            Some(i) => {
                done[i] = true;
                out.push(i);
            }
            None => {
                let left: Vec<&str> = (0..planned.len())
                    .filter(|&i| !done[i])
                    .map(|i| planned[i].id.as_str())
                    .collect();
                return Err(invalid_template(
                    format!(
                        "Deployment template validation failed: circular dependency among {}.",
                        left.join(", ")
                    ),
                    None,
                ));
            }
        }
    }
    Ok(out)
}

const TEMPLATE_ONLY: &[&str] = &[
    "apiVersion",
    "dependsOn",
    "copy",
    "condition",
    "comments",
    "type",
    "name",
    "scope",
    "metadata",
];

async fn read(arm: &dyn Arm, id: &str, api: &str) -> Option<Value> {
    let (status, body) = arm
        .call(http::Method::GET, id.to_string(), api.to_string(), None)
        .await;
    (status == 200).then_some(body)
}

fn error_of(status: u16, body: &Value, target: &str) -> ArmError {
    let mut e = body
        .get("error")
        .and_then(|e| serde_json::from_value::<ArmError>(e.clone()).ok())
        .unwrap_or_else(|| {
            ArmError::new(
                status,
                "ResourceDeploymentFailure",
                format!("The resource '{target}' answered {status}."),
            )
        });
    e.status = status;
    e
}

/// Evaluates and deploys one resource; `Ok` holds its final GET body.
pub async fn deploy_one(arm: &dyn Arm, scope: &mut Scope, p: &Planned) -> Result<Value, ArmError> {
    scope.copy = p.copy.iter().cloned().collect();
    let mut body = Value::Null;
    for _ in 0..16 {
        scope.missing.borrow_mut().clear();
        let mut obj = Map::new();
        let raw = p.raw.as_object().cloned().unwrap_or_default();
        let mut failed = None;
        for (k, v) in raw {
            if TEMPLATE_ONLY.iter().any(|t| t.eq_ignore_ascii_case(&k)) {
                continue;
            }
            match tree(scope, &v, &format!("{}.{k}", p.path)) {
                Ok(v) => {
                    obj.insert(k, v);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let missing: Vec<String> = scope.missing.borrow().clone();
        match failed {
            None => {
                body = Value::Object(obj);
                break;
            }
            Some(e) if missing.is_empty() => return Err(e),
            Some(e) => {
                for id in missing {
                    match read(arm, &id, &p.api_version).await {
                        Some(b) => {
                            scope.resources.insert(id.to_ascii_lowercase(), b);
                        }
                        None => {
                            return Err(ArmError::new(
                                404,
                                "ResourceNotFound",
                                format!("reference('{id}'): the resource was not found."),
                            )
                            .with_target(e.target.unwrap_or_default()))
                        }
                    }
                }
            }
        }
    }
    scope.copy.clear();
    if body.is_null() {
        return Err(invalid_template(
            format!("'{}': reference() chains too long.", p.path),
            Some(p.path.clone()),
        ));
    }
    let (status, answer) = arm
        .call(
            http::Method::PUT,
            p.id.clone(),
            p.api_version.clone(),
            Some(body),
        )
        .await;
    if !(200..300).contains(&status) {
        return Err(error_of(status, &answer, &p.id));
    }
    let deadline = tokio::time::Instant::now() + RESOURCE_TIMEOUT;
    let mut last = answer;
    loop {
        let state = last["properties"]["provisioningState"]
            .as_str()
            .unwrap_or("Succeeded")
            .to_string();
        match state.to_ascii_lowercase().as_str() {
            "succeeded" => break,
            "failed" | "canceled" => {
                let msg = format!(
                    "The resource '{}' ended provisioning in state '{state}'.",
                    p.id
                );
                return Err(
                    ArmError::new(409, "ResourceDeploymentFailure", msg).with_target(p.id.clone())
                );
            }
            _ if tokio::time::Instant::now() > deadline => {
                return Err(ArmError::new(
                    409,
                    "ResourceDeploymentFailure",
                    format!(
                        "The resource '{}' was still '{state}' after {} s.",
                        p.id,
                        RESOURCE_TIMEOUT.as_secs()
                    ),
                )
                .with_target(p.id.clone()));
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (status, b) = arm
                    .call(http::Method::GET, p.id.clone(), p.api_version.clone(), None)
                    .await;
                if status != 200 {
                    return Err(error_of(status, &b, &p.id));
                }
                last = b;
            }
        }
    }
    scope
        .resources
        .insert(p.id.to_ascii_lowercase(), last.clone());
    Ok(last)
}

/// Evaluates the template's outputs.
pub fn outputs(scope: &Scope, outputs: &Map<String, Value>) -> Result<Value, ArmError> {
    let mut out = Map::new();
    for (name, o) in outputs {
        let path = format!("outputs.{name}");
        if let Some(c) = o.get("condition") {
            let keep = tree(scope, c, &format!("{path}.condition"))?;
            if keep == Value::Bool(false) {
                continue;
            }
        }
        let value = tree(
            scope,
            o.get("value").unwrap_or(&Value::Null),
            &format!("{path}.value"),
        )?;
        let type_ = o.get("type").and_then(Value::as_str).unwrap_or("Object");
        out.insert(name.clone(), json!({"type": type_, "value": value}));
    }
    Ok(Value::Object(out))
}
