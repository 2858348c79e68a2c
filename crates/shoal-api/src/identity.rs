//! A managed-identity token endpoint in Azure App Service's shape, so code that uses an
//! unchanged `DefaultAzureCredential()` (Python, .NET, Go, Java, JS SDKs) gets a token
//! from Shoal.
//!
//! The client finds it through two environment variables, exactly as on App Service:
//! `IDENTITY_ENDPOINT=http://HOST:PORT/msi/token` and `IDENTITY_HEADER=<secret>`. It asks
//! `GET /msi/token?api-version=2019-08-01&resource=https://management.azure.com` with the
//! secret in `X-IDENTITY-HEADER`, and gets `{"access_token", "expires_on", "resource",
//! "token_type"}`. A request without the right secret is refused, so only processes the
//! secret was given to can get tokens. The token is the same RS256 JWT the token endpoint
//! issues, for the operator's managed identity (Owner of the default subscription, made on
//! first use); its lifetime is a day. A server that does not check tokens (tests) hands
//! out an opaque string instead.

use http::{HeaderMap, Method};
use serde_json::{json, Value};
use shoal_model::ArmError;

use crate::response::{json, ApiResult, Ctx};
use crate::state::ApiState;

/// The path `IDENTITY_ENDPOINT` names.
pub const TOKEN_PATH: &str = "/msi/token";
/// The header carrying the secret (`IDENTITY_HEADER`).
pub const SECRET_HEADER: &str = "x-identity-header";
/// How long an issued token is good for.
const TOKEN_LIFETIME_SECS: i64 = 24 * 3600;

/// `GET /msi/token`.
pub async fn token(st: &ApiState, ctx: &Ctx, method: &Method, headers: &HeaderMap) -> ApiResult {
    if method != Method::GET {
        return Err(crate::groups::method_not_allowed(method));
    }
    let Some(secret) = st.identity_header.as_deref() else {
        return Err(ArmError::new(
            404,
            "NotFound",
            "The managed identity endpoint is off on this server.",
        ));
    };
    let given = headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), secret.as_bytes()) {
        return Err(ArmError::new(
            401,
            "Unauthorized",
            "The X-IDENTITY-HEADER header is missing or wrong: set IDENTITY_HEADER to the secret in the server's data directory (file identity-header).",
        ));
    }
    let resource = resource_of(ctx)?;
    let identity = match &st.auth {
        Some(_) => Some(crate::principals::operator_identity(st).await?.principal()),
        None => None,
    };
    managed_token(st, ctx, identity, &resource, TOKEN_LIFETIME_SECS).await
}

/// The audience a token request names (`?resource=`).
fn resource_of(ctx: &Ctx) -> Result<String, ArmError> {
    let resource = ctx.query("resource").unwrap_or("").trim().to_string();
    if resource.is_empty() {
        return Err(ArmError::new(
            400,
            "InvalidParameter",
            "Name the audience in the resource parameter, e.g. resource=https://management.azure.com.",
        )
        .with_target("resource"));
    }
    Ok(resource)
}

/// A managed identity's token for `resource` (Azure Resource Manager only), in App
/// Service's answer shape; without authentication (tests), an opaque string.
async fn managed_token(
    st: &ApiState,
    ctx: &Ctx,
    identity: Option<shoal_auth::Principal>,
    resource: &str,
    lifetime: i64,
) -> ApiResult {
    let resource = resource.to_string();
    let now = st.clock.now().as_second();
    let expires_on = now + lifetime;
    let (access_token, client_id) = match (&st.auth, identity) {
        (Some(a), Some(mut identity)) => {
            let aud = if resource.ends_with('/') {
                resource.clone()
            } else {
                format!("{resource}/")
            };
            let trim = |x: &str| x.trim_end_matches('/').to_ascii_lowercase();
            if !shoal_auth::ARM_AUDIENCES
                .iter()
                .any(|x| trim(x) == trim(&aud))
            {
                return Err(ArmError::new(
                    400,
                    "InvalidParameter",
                    "Shoal issues tokens for Azure Resource Manager only: resource=https://management.azure.com.",
                )
                .with_target("resource"));
            }
            let tenant = a.directory.tenant().await.map_err(crate::state::internal)?;
            identity.tid.clone_from(&tenant.tenant_id);
            let issuer = format!(
                "{}/{}/v2.0",
                a.authority_url(&ctx.base_url),
                tenant.tenant_id
            );
            let issued = a
                .authority
                .issue(&identity, &aud, &issuer, now, lifetime)
                .await
                .map_err(crate::state::internal)?;
            (issued.token, identity.appid)
        }
        _ => (
            format!("shoal.{}", uuid::Uuid::new_v4().simple()),
            "00000000-0000-0000-0000-000000000000".to_string(),
        ),
    };
    Ok(json(
        200,
        &json!({
            "access_token": access_token,
            // App Service sends epoch seconds as a string; the SDKs accept both.
            "expires_on": expires_on.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }),
    ))
}

/// The body of a refusal from this endpoint, in a shape both readers understand: MSAL
/// reads App Service's `statusCode` and `message`, everything else the ARM `error` object.
pub fn error_body(err: &ArmError) -> Value {
    json!({
        "statusCode": err.status,
        "message": err.message,
        "error": err,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random secret for `IDENTITY_HEADER`.
pub fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// How long an instance's identity token is good for (Azure IMDS: about a day; an hour
/// keeps a leaked one short-lived, and the SDKs refresh on their own).
const INSTANCE_TOKEN_LIFETIME_SECS: i64 = 3600;

/// `POST /shoal/v1/identity/{sub}/{rg}/{vmss}/{id}?resource=…`: the token of one of the
/// set's managed identities, for the agent of the host the instance is on (which hands
/// it to the instance through its metadata endpoint). Another host's credential gets
/// 403; a set without the identity asked for 400, as Azure's IMDS ("Identity not found").
pub async fn instance_token(
    st: &ApiState,
    ctx: &Ctx,
    caller: Option<&shoal_auth::Principal>,
    method: &Method,
    path: &str,
) -> ApiResult {
    if method != Method::POST {
        return Err(crate::groups::method_not_allowed(method));
    }
    let (vref, id) = crate::agent_api::instance_path(path, "/shoal/v1/identity")?;
    let vmss = vref.name.as_str();
    let inst = st
        .get::<shoal_model::records::InstanceRecord>(&vref.instance_key(id))
        .await?
        .ok_or_else(|| ArmError::not_found("instance", &id.to_string()))?;
    if let Some(c) = caller {
        if !inst.value.host.eq_ignore_ascii_case(&c.appid) {
            return Err(ArmError::new(
                403,
                "AuthorizationFailed",
                format!(
                    "Instance {id} does not run on host '{}': only its own host asks for its identity.",
                    c.appid
                ),
            ));
        }
    }
    let set = st
        .get::<shoal_model::records::VmssRecord>(&vref.key())
        .await?
        .ok_or_else(|| ArmError::not_found(shoal_model::vmss::VMSS_TYPE, vmss))?;
    let identity = choose_identity(st, ctx, vmss, &set.value.model).await?;
    let resource = resource_of(ctx)?;
    managed_token(
        st,
        ctx,
        Some(identity),
        &resource,
        INSTANCE_TOKEN_LIFETIME_SECS,
    )
    .await
}

/// The query parameters that pick a user-assigned identity, as the SDKs send them
/// (App Service: `client_id`, `principal_id`, `mi_res_id`; IMDS: `client_id`,
/// `object_id`, `msi_res_id`).
const SELECTORS: [(&str, Selector); 5] = [
    ("client_id", Selector::Client),
    ("object_id", Selector::Principal),
    ("principal_id", Selector::Principal),
    ("mi_res_id", Selector::ResourceId),
    ("msi_res_id", Selector::ResourceId),
];

#[derive(Clone, Copy, PartialEq)]
enum Selector {
    Client,
    Principal,
    ResourceId,
}

fn identity_not_found(message: String) -> ArmError {
    ArmError::new(400, "IdentityNotFound", message).with_target("identity")
}

/// Which of the set's identities a token request means, as Azure IMDS decides: the one
/// a selector names; without one, the system-assigned identity, or the only
/// user-assigned one (several and no selector: 400, name one).
async fn choose_identity(
    st: &ApiState,
    ctx: &Ctx,
    vmss: &str,
    model: &shoal_model::vmss::VirtualMachineScaleSet,
) -> Result<shoal_auth::Principal, ArmError> {
    use shoal_model::managed_identity::UserAssignedIdentity;
    let managed = |oid: &str, appid: &str| shoal_auth::Principal {
        tid: String::new(),
        oid: oid.to_string(),
        appid: appid.to_string(),
        kind: shoal_auth::PrincipalKind::ManagedIdentity,
    };
    let selector = SELECTORS.iter().find_map(|(name, kind)| {
        ctx.query(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*kind, v.trim().to_string()))
    });
    // The user-assigned identities the set names that still exist, with their ids.
    let users: Vec<(String, UserAssignedIdentity)> =
        shoal_control::commands::scale_set::user_identities(&*st.store, model.identity.as_ref())
            .await
            .map_err(crate::state::internal)?
            .into_iter()
            .map(|(id, _, uai)| (id, uai))
            .collect();
    let principal_of = |u: &UserAssignedIdentity| {
        managed(
            u.properties.principal_id.as_deref().unwrap_or_default(),
            u.properties.client_id.as_deref().unwrap_or_default(),
        )
    };
    if let Some((kind, value)) = selector {
        let found = users.iter().find(|(id, u)| {
            let p = &u.properties;
            match kind {
                Selector::Client => p
                    .client_id
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(&value)),
                Selector::Principal => p
                    .principal_id
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(&value)),
                Selector::ResourceId => id
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(value.trim_end_matches('/')),
            }
        });
        return match found {
            Some((_, u)) => Ok(principal_of(u)),
            None => Err(identity_not_found(format!(
                "Identity not found: scale set {vmss} has no user-assigned identity '{value}'."
            ))),
        };
    }
    if let Some(principal_id) = shoal_model::vmss::system_identity(model) {
        return Ok(managed(principal_id, principal_id));
    }
    match users.as_slice() {
        [(_, only)] => Ok(principal_of(only)),
        [] => Err(identity_not_found(format!(
            "Identity not found: scale set {vmss} has no managed identity (set identity.type \
             to SystemAssigned, or name a user-assigned identity)."
        ))),
        _ => Err(identity_not_found(format!(
            "Multiple user assigned identities exist on scale set {vmss}: name one with \
             client_id, object_id or mi_res_id in the token request."
        ))),
    }
}

/// Whether `principal_id` is a managed identity — a scale set's system-assigned one or a
/// user-assigned one — so role assignments may name it.
pub async fn is_set_identity(st: &ApiState, principal_id: &str) -> Result<bool, ArmError> {
    let sets = st
        .list::<shoal_model::records::VmssRecord>(shoal_model::keys::VMSS)
        .await?;
    if sets.iter().any(|s| {
        shoal_model::vmss::system_identity(&s.value.model)
            .is_some_and(|p| p.eq_ignore_ascii_case(principal_id))
    }) {
        return Ok(true);
    }
    Ok(crate::managed_identities::by_principal(st, principal_id)
        .await?
        .is_some())
}

#[cfg(test)]
mod tests {

    use tower::ServiceExt;

    use super::*;
    use crate::server::{body_bytes, request};

    fn state(secret: Option<&str>) -> ApiState {
        ApiState {
            vm_views: Default::default(),
            identity_header: secret.map(String::from),
            ..crate::arm_crud::testing::empty_state(
                jiff::Timestamp::from_second(1_700_000_000).expect("timestamp"),
            )
        }
    }

    async fn ask(st: ApiState, secret: Option<&str>, query: &str) -> (u16, Value) {
        let mut req = request(Method::GET, &format!("{TOKEN_PATH}{query}"), "");
        if let Some(s) = secret {
            req.headers_mut()
                .insert(SECRET_HEADER, s.parse().expect("header"));
        }
        let resp = crate::router(st).oneshot(req).await.expect("response");
        let status = resp.status().as_u16();
        assert!(resp.headers().get(http::header::RETRY_AFTER).is_none());
        let body = serde_json::from_slice(&body_bytes(resp).await).expect("json");
        (status, body)
    }

    #[tokio::test]
    async fn issues_tokens_in_app_service_shape_to_holders_of_the_secret() {
        let q = "?api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com";
        let (status, body) = ask(state(Some("s3cret")), Some("s3cret"), q).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["resource"], "https://management.azure.com");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_on"], (1_700_000_000 + 24 * 3600).to_string());
        assert!(body["access_token"].as_str().is_some_and(|t| t.len() > 20));

        let (status, body) = ask(state(Some("s3cret")), Some("wrong"), q).await;
        assert_eq!((status, body["statusCode"].clone()), (401, json!(401)));
        assert_eq!(body["error"]["code"], "Unauthorized");
        let (status, _) = ask(state(Some("s3cret")), None, q).await;
        assert_eq!(status, 401);
        let (status, body) = ask(state(Some("s3cret")), Some("s3cret"), "").await;
        assert_eq!(
            (status, body["error"]["target"].clone()),
            (400, json!("resource"))
        );
        let (status, _) = ask(state(None), Some("s3cret"), q).await;
        assert_eq!(status, 404);
    }

    #[test]
    fn compares_secrets_fully() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
