//! Azure RBAC: built-in role definitions, `Microsoft.Authorization/roleAssignments` at any
//! scope (inherited by everything below it), and the check every user route passes.
//!
//! In: the request's method and path (from which [`action_of`] derives the ARM action,
//! e.g. `Microsoft.Compute/virtualMachineScaleSets/write`) and the caller. Out: nothing,
//! or a 403 `AuthorizationFailed` in Azure's words. Assignments are records under
//! `auth/roleassignment/{name}`.

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_auth::Principal;
use shoal_model::ArmError;
use shoal_store::{Expect, StoreExt};

use crate::response::{json, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::state::{body_object, internal, ApiState};

/// Prefix of role assignment records.
pub const ASSIGNMENT_PREFIX: &str = "auth/roleassignment/";

/// A built-in role: its id, name and permissions, as Azure defines them.
pub struct Role {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub actions: &'static [&'static str],
    pub not_actions: &'static [&'static str],
}

/// The built-in roles Shoal knows, with Azure's ids and action patterns (actions of
/// services Shoal does not have are left out where they can never match).
pub const ROLES: &[Role] = &[
    Role {
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
    },
    Role {
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ],
    },
    Role {
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
    },
    Role {
        id: "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
        name: "Virtual Machine Contributor",
        description: "Lets you manage virtual machines, but not access to them, and not the virtual network or storage account they're connected to.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Compute/availabilitySets/*",
            "Microsoft.Compute/locations/*",
            "Microsoft.Compute/virtualMachines/*",
            "Microsoft.Compute/virtualMachineScaleSets/*",
            "Microsoft.Compute/disks/write",
            "Microsoft.Compute/disks/read",
            "Microsoft.Compute/disks/delete",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
            "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
            "Microsoft.Network/loadBalancers/probes/join/action",
            "Microsoft.Network/loadBalancers/read",
            "Microsoft.Network/locations/*",
            "Microsoft.Network/networkInterfaces/*",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
        not_actions: &[],
    },
    Role {
        id: "4d97b98b-1d4f-4787-a291-c67834d212e7",
        name: "Network Contributor",
        description: "Lets you manage networks, but not access to them.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Network/*",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
    },
    Role {
        id: "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
        name: "Managed Identity Contributor",
        description: "Create, Read, Update, and Delete User Assigned Identity",
        actions: &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
    },
    Role {
        id: "f1a07417-d97a-45cb-824c-7a7467783830",
        name: "Managed Identity Operator",
        description: "Read and Assign User Assigned Identity",
        actions: &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
    },
    Role {
        id: "43d0d8ad-25c7-4714-9337-8ba259a9fe05",
        name: "Monitoring Reader",
        description: "Can read all monitoring data (metrics, logs, etc.).",
        actions: &["*/read", "Microsoft.Support/*"],
        not_actions: &[],
    },
    Role {
        id: "749f88d5-cbae-40b8-bcfc-e573ddc772fa",
        name: "Monitoring Contributor",
        description: "Can read all monitoring data and update monitoring settings.",
        actions: &[
            "*/read",
            "Microsoft.AlertsManagement/alerts/*",
            "Microsoft.Insights/ActionGroups/*",
            "Microsoft.Insights/ActivityLogAlerts/*",
            "Microsoft.Insights/AlertRules/*",
            "Microsoft.Insights/components/*",
            "Microsoft.Insights/DiagnosticSettings/*",
            "Microsoft.Insights/eventtypes/*",
            "Microsoft.Insights/LogDefinitions/*",
            "Microsoft.Insights/metricalerts/*",
            "Microsoft.Insights/MetricDefinitions/*",
            "Microsoft.Insights/Metrics/*",
            "Microsoft.Insights/Register/Action",
            "Microsoft.Insights/scheduledqueryrules/*",
            "Microsoft.Insights/webtests/*",
            "Microsoft.Insights/workbooks/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
    },
];

/// The built-in role named `name` or with id `id` (case-insensitively; a full
/// `…/roleDefinitions/{id}` works too).
pub fn role(name_or_id: &str) -> Option<&'static Role> {
    let last = name_or_id.rsplit('/').next().unwrap_or(name_or_id);
    ROLES
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name_or_id) || r.id.eq_ignore_ascii_case(last))
}

/// `*` matches any run of characters, and `/*/` no segment at all too (Managed Identity
/// Operator's `userAssignedIdentities/*/assign/action` grants
/// `userAssignedIdentities/assign/action`); comparison is case-insensitive.
fn matches(pattern: &str, action: &str) -> bool {
    if pattern.contains("/*/") && matches(&pattern.replacen("/*/", "/", 1), action) {
        return true;
    }
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Role {
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|p| matches(p, action))
            && !self.not_actions.iter().any(|p| matches(p, action))
    }

    pub fn definition(&self, scope: &str) -> Value {
        json!({
            "id": format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{}", self.id),
            "name": self.id,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [{
                    "actions": self.actions,
                    "notActions": self.not_actions,
                    "dataActions": [],
                    "notDataActions": [],
                }],
            },
        })
    }
}

/// A stored role assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub name: String,
    pub scope: String,
    pub role_definition_id: String,
    pub principal_id: String,
    pub principal_type: String,
    pub created_on: String,
}

impl Assignment {
    pub fn view(&self) -> Value {
        json!({
            "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", self.scope.trim_end_matches('/'), self.name),
            "name": self.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": self.role_definition_id,
                "principalId": self.principal_id,
                "principalType": self.principal_type,
                "scope": self.scope,
                "createdOn": self.created_on,
                "updatedOn": self.created_on,
            },
        })
    }

    /// Whether this assignment's scope is `scope` or above it.
    pub fn covers(&self, scope: &str) -> bool {
        let mine = self.scope.trim_end_matches('/').to_ascii_lowercase();
        let theirs = scope.trim_end_matches('/').to_ascii_lowercase();
        mine.is_empty() || theirs == mine || theirs.starts_with(&format!("{mine}/"))
    }
}

/// The ARM action of `method` on `path`, derived as Azure names operations:
/// `{namespace}/{type}[/{childType}…]/{read|write|delete}` or `…/{action}/action`.
pub fn action_of(method: &Method, path: &str) -> String {
    // Shoal's own instance logs need what Azure's boot diagnostics need.
    if path
        .trim_end_matches('/')
        .to_ascii_lowercase()
        .ends_with("/shoal/logs")
    {
        return "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/retrieveBootDiagnosticsData/action".into();
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut namespace = "Microsoft.Resources".to_string();
    let mut types: Vec<String> = Vec::new();
    let mut i = 0;
    // Alternating type / name segments; `providers/{ns}` starts a new namespace.
    let mut tail: Option<String> = None;
    while i < segs.len() {
        if segs[i].eq_ignore_ascii_case("providers") && i + 1 < segs.len() {
            namespace = segs[i + 1].to_string();
            types.clear();
            i += 2;
            continue;
        }
        if i + 1 < segs.len() {
            types.push(segs[i].to_string());
            i += 2;
        } else {
            tail = Some(segs[i].to_string());
            i += 1;
        }
    }
    let verb = match (method.as_str(), &tail) {
        ("POST", Some(action)) => {
            types.push(action.clone());
            "action"
        }
        (_, Some(collection)) => {
            types.push(collection.clone());
            verb_of(method)
        }
        _ => verb_of(method),
    };
    format!("{namespace}/{}/{verb}", types.join("/"))
}

fn verb_of(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        Method::POST => "action",
        _ => "write",
    }
}

/// How long role assignments read from the store are reused for checks. Azure too lets
/// an assignment take effect with a delay; writes through this server apply at once, and
/// another server's within this time.
pub const ASSIGNMENT_CACHE_SECS: i64 = 10;

/// Every assignment (cached for [`ASSIGNMENT_CACHE_SECS`]).
pub async fn assignments(st: &ApiState) -> Result<Vec<Assignment>, ArmError> {
    let now = st.clock.now().as_second();
    let cache = st.auth.as_ref().map(|a| a.assignments.clone());
    if let Some(cache) = &cache {
        if let Ok(c) = cache.lock() {
            if let Some((at, list)) = c.as_ref() {
                if (0..ASSIGNMENT_CACHE_SECS).contains(&(now - at)) {
                    return Ok(list.clone());
                }
            }
        }
    }
    let list: Vec<Assignment> = st
        .list::<Assignment>(ASSIGNMENT_PREFIX)
        .await?
        .into_iter()
        .map(|v| v.value)
        .collect();
    if let Some(cache) = cache {
        if let Ok(mut c) = cache.lock() {
            *c = Some((now, list.clone()));
        }
    }
    Ok(list)
}

/// Forgets the cached assignments (after this server changed one).
pub fn forget_assignments(st: &ApiState) {
    if let Some(a) = &st.auth {
        if let Ok(mut c) = a.assignments.lock() {
            *c = None;
        }
    }
}

/// Whether `caller` holds `action` at `scope` (through any assignment at or above it).
pub async fn allowed(
    st: &ApiState,
    caller: &Principal,
    action: &str,
    scope: &str,
) -> Result<bool, ArmError> {
    Ok(assignments(st).await?.iter().any(|a| {
        a.principal_id.eq_ignore_ascii_case(&caller.oid)
            && a.covers(scope)
            && role(&a.role_definition_id).is_some_and(|r| r.allows(action))
    }))
}

/// Whether `caller` holds `action` at some scope of subscription `sub` (or above it).
pub async fn allowed_within(
    st: &ApiState,
    caller: &Principal,
    action: &str,
    sub: &str,
) -> Result<bool, ArmError> {
    Ok(assignments(st).await?.iter().any(|a| {
        a.principal_id.eq_ignore_ascii_case(&caller.oid)
            && (a.scope == "/"
                || subscription_of(&a.scope).is_some_and(|s| s.eq_ignore_ascii_case(sub)))
            && role(&a.role_definition_id).is_some_and(|r| r.allows(action))
    }))
}

/// Azure's 403.
pub fn forbidden(caller: &Principal, action: &str, scope: &str) -> ArmError {
    ArmError::new(
        403,
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            caller.appid, caller.oid
        ),
    )
}

/// Stores an assignment (used at first start for the owner, and by the API).
pub async fn put_assignment(st: &ApiState, a: &Assignment) -> Result<(), ArmError> {
    let bytes = serde_json::to_vec(a).map_err(internal)?;
    st.store
        .put_if(
            format!("{ASSIGNMENT_PREFIX}{}", a.name.to_ascii_lowercase()),
            bytes,
            Expect::Any,
        )
        .await
        .map(|_| ())
        .map_err(internal)?;
    forget_assignments(st);
    Ok(())
}

/// `{scope}/providers/Microsoft.Authorization/roleDefinitions[/{id}]`.
pub async fn role_definitions(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    scope: &str,
    id: Option<&str>,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let _ = st;
    match id {
        Some(id) => match role(id) {
            Some(r) => Ok(json(200, &r.definition(scope))),
            None => Err(ArmError::new(
                404,
                "RoleDefinitionDoesNotExist",
                format!("The specified role definition with ID '{id}' does not exist."),
            )),
        },
        None => {
            // `$filter=roleName eq 'Reader'` as az sends it.
            let wanted = ctx
                .query("$filter")
                .and_then(|f| f.split_once("roleName eq "))
                .map(|(_, v)| v.trim().trim_matches('\'').to_string());
            let value: Vec<Value> = ROLES
                .iter()
                .filter(|r| {
                    wanted
                        .as_deref()
                        .is_none_or(|w| r.name.eq_ignore_ascii_case(w))
                })
                .map(|r| r.definition(scope))
                .collect();
            Ok(json(200, &json!({ "value": value })))
        }
    }
}

/// `GET {scope}/providers/Microsoft.Authorization/permissions`: one entry per role the
/// caller holds at or above `scope`, as Azure answers. Without authentication (a server
/// started with it off) the caller may do everything.
pub async fn permissions(
    st: &ApiState,
    caller: Option<&Principal>,
    method: &Method,
    scope: &str,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let entry = |actions: &[&str], not_actions: &[&str]| json!({"actions": actions, "notActions": not_actions, "dataActions": [], "notDataActions": []});
    let value: Vec<Value> = match caller {
        None => vec![entry(&["*"], &[])],
        Some(caller) => assignments(st)
            .await?
            .iter()
            .filter(|a| a.principal_id.eq_ignore_ascii_case(&caller.oid) && a.covers(scope))
            .filter_map(|a| role(&a.role_definition_id))
            .map(|r| entry(r.actions, r.not_actions))
            .collect(),
    };
    Ok(json(200, &json!({ "value": value })))
}

/// `{scope}/providers/Microsoft.Authorization/roleAssignments[/{name}]`.
pub async fn role_assignments(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    scope: &str,
    name: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let Some(name) = name else {
        if method != Method::GET {
            return Err(method_not_allowed(method));
        }
        // At this scope, above it (inherited) and below it, as Azure lists them.
        let scope_l = scope.trim_end_matches('/').to_ascii_lowercase();
        let value: Vec<Value> = assignments(st)
            .await?
            .iter()
            .filter(|a| {
                a.covers(scope)
                    || a.scope
                        .to_ascii_lowercase()
                        .starts_with(&format!("{scope_l}/"))
            })
            .map(Assignment::view)
            .collect();
        let path = format!(
            "{}/providers/Microsoft.Authorization/roleAssignments",
            scope.trim_end_matches('/')
        );
        return Ok(crate::response::page(ctx, &path, value, st.page_size));
    };
    let key = format!("{ASSIGNMENT_PREFIX}{}", name.to_ascii_lowercase());
    let existing = st.get::<Assignment>(&key).await?;
    let not_found = || {
        ArmError::new(
            404,
            "RoleAssignmentNotFound",
            format!("The role assignment '{name}' is not found."),
        )
    };
    match *method {
        Method::GET => existing
            .map(|a| json(200, &a.value.view()))
            .ok_or_else(not_found),
        Method::DELETE => match existing {
            Some(a) => {
                st.store.delete(key).await.map_err(internal)?;
                forget_assignments(st);
                Ok(json(200, &a.value.view()))
            }
            None => Ok(crate::response::empty(204)),
        },
        Method::PUT => {
            let body = body_object(body, true)?;
            let props = &body["properties"];
            let role_id = props["roleDefinitionId"].as_str().unwrap_or_default();
            if role(role_id).is_none() {
                return Err(ArmError::new(
                    400,
                    "RoleDefinitionDoesNotExist",
                    format!("The specified role definition with ID '{role_id}' does not exist."),
                )
                .with_target("properties.roleDefinitionId"));
            }
            let principal_id = props["principalId"].as_str().unwrap_or_default();
            let auth = st.auth.as_ref();
            let known = match auth {
                Some(a) => {
                    a.directory
                        .find_principal(principal_id)
                        .await
                        .map_err(internal)?
                        .is_some()
                        || crate::identity::is_set_identity(st, principal_id).await?
                }
                None => !principal_id.is_empty(),
            };
            if !known {
                return Err(ArmError::new(
                    400,
                    "PrincipalNotFound",
                    format!("Principal {principal_id} does not exist in the directory."),
                )
                .with_target("properties.principalId"));
            }
            if uuid::Uuid::parse_str(name).is_err() {
                return Err(ArmError::invalid_parameter(
                    "name",
                    "A role assignment's name is a GUID.",
                ));
            }
            let a = Assignment {
                name: name.to_string(),
                scope: scope.trim_end_matches('/').to_string(),
                role_definition_id: format!(
                    "{}/providers/Microsoft.Authorization/roleDefinitions/{}",
                    subscription_of(scope)
                        .map(|s| format!("/subscriptions/{s}"))
                        .unwrap_or_default(),
                    role(role_id).map(|r| r.id).unwrap_or_default()
                ),
                principal_id: principal_id.to_string(),
                principal_type: props["principalType"]
                    .as_str()
                    .unwrap_or("ServicePrincipal")
                    .to_string(),
                created_on: st.now(),
            };
            put_assignment(st, &a).await?;
            Ok(json(if existing.is_some() { 200 } else { 201 }, &a.view()))
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// The subscription id of a scope (`/subscriptions/{id}/…`).
pub fn subscription_of(scope: &str) -> Option<&str> {
    let mut segs = scope.trim_matches('/').split('/');
    match (segs.next(), segs.next()) {
        (Some(s), Some(id)) if s.eq_ignore_ascii_case("subscriptions") && !id.is_empty() => {
            Some(id)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn role_assignments_are_listed_a_page_at_a_time() {
        use crate::arm_crud::testing::{call, state};
        let st = state(1).await;
        let at = "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments";
        for n in [
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000002",
        ] {
            let body =
                serde_json::json!({"properties": {"roleDefinitionId": "Reader", "principalId": n}});
            assert_eq!(
                call(&st, Method::PUT, &format!("{at}/{n}"), body).await.0,
                201
            );
        }
        let (_, first) = call(&st, Method::GET, at, Value::Null).await;
        assert_eq!(first["value"].as_array().map(Vec::len), Some(1), "{first}");
        let next = first["nextLink"].as_str().expect("nextLink");
        let rest = &next[next.find("/subscriptions/").expect("path")..];
        let (_, second) = call(&st, Method::GET, rest, Value::Null).await;
        assert_eq!(
            second["value"].as_array().map(Vec::len),
            Some(1),
            "{second}"
        );
        assert_ne!(first["value"][0]["name"], second["value"][0]["name"]);
        assert!(second.get("nextLink").is_none(), "{second}");
    }

    #[test]
    fn actions_are_named_as_azure_names_them() {
        let set = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";
        assert_eq!(
            action_of(&Method::PUT, set),
            "Microsoft.Compute/virtualMachineScaleSets/write"
        );
        assert_eq!(
            action_of(&Method::GET, set),
            "Microsoft.Compute/virtualMachineScaleSets/read"
        );
        assert_eq!(
            action_of(&Method::DELETE, set),
            "Microsoft.Compute/virtualMachineScaleSets/delete"
        );
        assert_eq!(
            action_of(&Method::POST, &format!("{set}/virtualMachines/3/restart")),
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/restart/action"
        );
        assert_eq!(
            action_of(&Method::GET, &format!("{set}/instanceView")),
            "Microsoft.Compute/virtualMachineScaleSets/instanceView/read"
        );
        assert_eq!(
            action_of(&Method::GET, &format!("{set}/virtualMachines/0/shoal/logs")),
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/retrieveBootDiagnosticsData/action"
        );
        assert_eq!(
            action_of(
                &Method::GET,
                &format!("{set}/providers/Microsoft.Insights/metrics")
            ),
            "Microsoft.Insights/metrics/read"
        );
        assert_eq!(
            action_of(&Method::GET, "/subscriptions/s/resourcegroups"),
            "Microsoft.Resources/subscriptions/resourcegroups/read"
        );
        assert_eq!(
            action_of(&Method::PUT, "/subscriptions/s/resourceGroups/demo"),
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        );
        assert_eq!(
            action_of(&Method::GET, "/subscriptions/s"),
            "Microsoft.Resources/subscriptions/read"
        );
        assert_eq!(
            action_of(
                &Method::PUT,
                "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/x"
            ),
            "Microsoft.Authorization/roleAssignments/write"
        );
    }

    #[test]
    fn roles_allow_what_azure_allows() {
        let reader = role("Reader").expect("reader");
        assert!(reader.allows("Microsoft.Compute/virtualMachineScaleSets/read"));
        assert!(!reader.allows("Microsoft.Compute/virtualMachineScaleSets/write"));
        assert!(!reader.allows("Microsoft.Compute/virtualMachineScaleSets/virtualMachines/retrieveBootDiagnosticsData/action"));
        let contributor = role("b24988ac-6180-42a0-ab88-20f7382dd24c").expect("contributor");
        assert!(contributor.allows("Microsoft.Compute/virtualMachineScaleSets/write"));
        assert!(!contributor.allows("Microsoft.Authorization/roleAssignments/write"));
        let vm = role("virtual machine contributor").expect("vmc");
        assert!(
            vm.allows("Microsoft.Compute/virtualMachineScaleSets/virtualMachines/restart/action")
        );
        assert!(!vm.allows("Microsoft.Network/loadBalancers/write"));
        assert!(role("Network Contributor")
            .expect("nc")
            .allows("Microsoft.Network/loadBalancers/write"));
        assert!(role("Owner")
            .expect("owner")
            .allows("Microsoft.Authorization/roleAssignments/write"));
        let assign = crate::managed_identities::ASSIGN_ACTION;
        assert!(role("Managed Identity Operator")
            .expect("mio")
            .allows(assign));
        assert!(
            !vm.allows(assign),
            "a VM Contributor may not lend identities"
        );
        assert!(contributor.allows(assign));
        assert!(!role("Managed Identity Contributor")
            .expect("mic")
            .allows(assign));
    }

    #[test]
    fn assignments_cover_their_scope_and_below() {
        let a = Assignment {
            name: "n".into(),
            scope: "/subscriptions/s/resourceGroups/A".into(),
            role_definition_id: String::new(),
            principal_id: String::new(),
            principal_type: String::new(),
            created_on: String::new(),
        };
        assert!(a.covers("/subscriptions/s/resourcegroups/a"));
        assert!(a.covers("/subscriptions/s/resourceGroups/A/providers/Microsoft.Compute/virtualMachineScaleSets/web"));
        assert!(!a.covers("/subscriptions/s/resourceGroups/AB"));
        assert!(!a.covers("/subscriptions/s"));
    }
}
