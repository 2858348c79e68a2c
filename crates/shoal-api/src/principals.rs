//! Service principals (`shoal ad sp …`, Shoal's stand-in for Microsoft Graph's
//! applications) and the principals the server makes for itself: the first-start Owner
//! credential and the operator's managed identity behind `/msi/token`.
//!
//! Routes: `GET|POST /providers/Shoal.Directory/servicePrincipals`, `GET|DELETE
//! …/servicePrincipals/{appId}`, `POST …/{appId}/resetCredentials`. A new secret is in
//! the answer once (as `password`, with `appId` and `tenant`, as `az ad sp
//! create-for-rbac` prints); the store keeps only its hash.

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_auth::{PrincipalKind, PrincipalRecord};
use shoal_model::ArmError;

use crate::rbac::{self, Assignment};
use crate::response::{json, ApiResult};
use crate::routes::method_not_allowed;
use crate::state::{body_object, internal, ApiState};

/// The Owner credential a server writes to `<data-dir>/credentials/owner.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerCredential {
    pub tenant: String,
    pub subscription: String,
    pub app_id: String,
    pub password: String,
}

/// Display name of the operator's managed identity (`/msi/token`).
pub const OPERATOR_IDENTITY: &str = "shoal-operator";
/// Display name of first-start Owner credentials.
pub const OWNER_NAME: &str = "shoal-owner";

fn auth(st: &ApiState) -> Result<&crate::auth::AuthState, ArmError> {
    st.auth
        .as_ref()
        .ok_or_else(|| ArmError::new(404, "NotFound", "Authentication is off on this server."))
}

async fn assign_owner(st: &ApiState, record: &PrincipalRecord, sub: &str) -> Result<(), ArmError> {
    let owner = rbac::role("Owner").map(|r| r.id).unwrap_or_default();
    rbac::put_assignment(
        st,
        &Assignment {
            name: uuid::Uuid::new_v4().to_string(),
            scope: format!("/subscriptions/{sub}"),
            role_definition_id: format!(
                "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{owner}"
            ),
            principal_id: record.object_id.clone(),
            principal_type: "ServicePrincipal".into(),
            created_on: st.now(),
        },
    )
    .await
}

/// Keeps `existing` if it still signs in; else makes a new principal with Owner on the
/// default subscription and returns its credential (for the caller to write down).
pub async fn ensure_owner(
    st: &ApiState,
    existing: Option<&OwnerCredential>,
) -> Result<Option<OwnerCredential>, ArmError> {
    let a = auth(st)?;
    let tenant = a.directory.tenant().await.map_err(internal)?;
    let now = st.clock.now().as_second();
    if let Some(c) = existing {
        if a.directory
            .check_secret(&c.app_id, &c.password, now)
            .await
            .is_ok()
        {
            return Ok(None);
        }
    }
    let cred = a
        .directory
        .create_principal(OWNER_NAME, PrincipalKind::ServicePrincipal, now)
        .await
        .map_err(internal)?;
    assign_owner(st, &cred.record, &tenant.default_subscription).await?;
    Ok(Some(OwnerCredential {
        tenant: tenant.tenant_id,
        subscription: tenant.default_subscription,
        app_id: cred.record.app_id,
        password: cred.secret,
    }))
}

/// The operator's managed identity (made with Owner on the default subscription on
/// first use).
pub async fn operator_identity(st: &ApiState) -> Result<PrincipalRecord, ArmError> {
    let a = auth(st)?;
    let found = a
        .directory
        .principals()
        .await
        .map_err(internal)?
        .into_iter()
        .find(|p| p.kind == PrincipalKind::ManagedIdentity && p.display_name == OPERATOR_IDENTITY);
    if let Some(p) = found {
        return Ok(p);
    }
    let tenant = a.directory.tenant().await.map_err(internal)?;
    let cred = a
        .directory
        .create_principal(
            OPERATOR_IDENTITY,
            PrincipalKind::ManagedIdentity,
            st.clock.now().as_second(),
        )
        .await
        .map_err(internal)?;
    assign_owner(st, &cred.record, &tenant.default_subscription).await?;
    Ok(cred.record)
}

fn view(p: &PrincipalRecord) -> Value {
    json!({
        "appId": p.app_id,
        "id": p.object_id,
        "displayName": p.display_name,
        "appOwnerOrganizationId": p.tenant_id,
        "servicePrincipalType": match p.kind {
            PrincipalKind::ManagedIdentity => "ManagedIdentity",
            _ => "Application",
        },
        "keyCredentials": p.certificates.iter().map(|c| json!({
            "customKeyIdentifier": c.x5t,
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
            "endDateTime": crate::times::epoch_text(c.not_after),
        })).collect::<Vec<_>>(),
        "passwordCredentials": p.secrets.iter().map(|s| json!({
            "keyId": s.key_id,
            "hint": s.hint,
            "startDateTime": crate::times::epoch_text(s.start),
            "endDateTime": crate::times::epoch_text(s.end),
        })).collect::<Vec<_>>(),
    })
}

fn not_found(id: &str) -> ArmError {
    ArmError::new(
        404,
        "ServicePrincipalNotFound",
        format!("No service principal with appId '{id}'. `shoal ad sp list` lists them."),
    )
}

/// `…/servicePrincipals[/{appId}[/resetCredentials]]`.
pub async fn service_principals(
    st: &ApiState,
    method: &Method,
    app_id: Option<&str>,
    action: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let a = auth(st)?;
    let now = st.clock.now().as_second();
    match (app_id, action) {
        (None, _) => match *method {
            Method::GET => {
                let all = a.directory.principals().await.map_err(internal)?;
                let value: Vec<Value> = all
                    .iter()
                    .filter(|p| p.kind == PrincipalKind::ServicePrincipal)
                    .map(view)
                    .collect();
                Ok(json(200, &json!({ "value": value })))
            }
            Method::POST => {
                let body = body_object(body, false)?;
                let name = body["displayName"]
                    .as_str()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if name.is_empty() || name.len() > 120 {
                    return Err(ArmError::invalid_parameter(
                        "displayName",
                        "Give the service principal a displayName of 1 to 120 characters.",
                    ));
                }
                // A certificate, if given, is checked before anything is made.
                let certificate = body["certificate"].as_str().map(str::to_string);
                if let Some(c) = &certificate {
                    shoal_auth::cert::certificate_key(c)
                        .map_err(|why| ArmError::invalid_parameter("certificate", why))?;
                }
                let mut cred = a
                    .directory
                    .create_principal(&name, PrincipalKind::ServicePrincipal, now)
                    .await
                    .map_err(internal)?;
                if let Some(c) = &certificate {
                    cred.record = a
                        .directory
                        .add_certificate(&cred.record.app_id, c)
                        .await
                        .map_err(internal)?;
                }
                let mut v = view(&cred.record);
                v["password"] = json!(cred.secret);
                v["tenant"] = json!(cred.record.tenant_id);
                Ok(json(201, &v))
            }
            _ => Err(method_not_allowed(method)),
        },
        (Some(id), None) => {
            let found = a.directory.find_principal(id).await.map_err(internal)?;
            match (method.clone(), found) {
                (Method::GET, Some(p)) => Ok(json(200, &view(&p))),
                (Method::DELETE, Some(p)) => {
                    a.directory
                        .delete_principal(&p.app_id)
                        .await
                        .map_err(internal)?;
                    // Its role assignments go with it.
                    for asg in rbac::assignments(st).await? {
                        if asg.principal_id.eq_ignore_ascii_case(&p.object_id) {
                            use shoal_store::StoreExt;
                            st.store
                                .delete(format!(
                                    "{}{}",
                                    rbac::ASSIGNMENT_PREFIX,
                                    asg.name.to_ascii_lowercase()
                                ))
                                .await
                                .map_err(internal)?;
                        }
                    }
                    rbac::forget_assignments(st);
                    Ok(crate::response::empty(204))
                }
                (Method::GET, None) => Err(not_found(id)),
                (Method::DELETE, None) => Ok(crate::response::empty(204)),
                (m, _) => Err(method_not_allowed(&m)),
            }
        }
        (Some(id), Some(action)) if action.eq_ignore_ascii_case("resetCredentials") => {
            if method != Method::POST {
                return Err(method_not_allowed(method));
            }
            let p = a
                .directory
                .find_principal(id)
                .await
                .map_err(internal)?
                .ok_or_else(|| not_found(id))?;
            let cred = a
                .directory
                .reset_secret(&p.app_id, now)
                .await
                .map_err(internal)?;
            let mut v = view(&cred.record);
            v["password"] = json!(cred.secret);
            v["tenant"] = json!(cred.record.tenant_id);
            Ok(json(200, &v))
        }
        (Some(_), Some(_)) => Err(ArmError::new(404, "NotFound", "No such action.")),
    }
}
