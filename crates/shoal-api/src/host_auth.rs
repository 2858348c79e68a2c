//! Who may speak the agent protocol: join tokens, host and balancer credentials, and what
//! each credential may touch.
//!
//! - An operator makes a join token: `POST /providers/Shoal.Infrastructure/joinTokens`
//!   `{"role": "agent"|"balancer", "expiresInMinutes": N}` answers `{"name", "token",
//!   "expiresOn", "role"}` once (the secret is kept only as a salted hash). Tokens can be
//!   used by several machines until they expire (24 h by default, as kubeadm's) or are
//!   deleted (`DELETE …/joinTokens/{name}`).
//! - An agent or balancer trades it for a credential: `POST /shoal/v1/join` `{"token",
//!   "name"}` answers `{"name", "role", "credential", "expiresOn"}`. The credential is an
//!   RS256 JWT from the same authority as user tokens (audience [`HOST_AUDIENCE`], kind
//!   `host` or `balancer`, `appid` the host's name). Only the newest credential of a name
//!   is honoured: joining again, or deleting the host, revokes the previous one.
//! - Every agent-protocol call carries its credential; [`allowed`] decides what it may do:
//!   an agent only its own host record, its own instances and their statuses (and metrics
//!   of its own instances); a balancer only reads of pools and members, writes of health
//!   and drain acknowledgements, and its request metrics.

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_auth::{Principal, PrincipalKind, HOST_AUDIENCE};
use shoal_control::kv;
use shoal_model::keys;
use shoal_model::records::{host_key, InstanceRecord};
use shoal_model::ArmError;
use shoal_store::Expect;

use crate::auth::AuthState;
use crate::groups::method_not_allowed;
use crate::response::{json, ApiResult};
use crate::routes::Route;
use crate::state::{body_object, internal, txn_error, ApiState};
use crate::times::epoch_text;

const JOIN_TOKENS: &str = "auth/joinTokens/";
const CREDENTIALS: &str = "auth/hostCredentials/";
/// How long a join token lasts unless asked otherwise (kubeadm's default).
const DEFAULT_JOIN_MINUTES: i64 = 24 * 60;
/// The longest a join token may last: a week.
const MAX_JOIN_MINUTES: i64 = 7 * 24 * 60;
/// How long a host credential lasts. Revocation (delete the host, join again) does not
/// wait for it; a host older than this must join again.
const CREDENTIAL_LIFETIME_SECS: i64 = 365 * 24 * 3600;
/// What a join token starts with (and the version of its format).
const TOKEN_PREFIX: &str = "shoal1";

/// What a joining machine will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Agent,
    Balancer,
}

impl Role {
    fn kind(self) -> PrincipalKind {
        match self {
            Role::Agent => PrincipalKind::Host,
            Role::Balancer => PrincipalKind::Balancer,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Balancer => "balancer",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinTokenRecord {
    name: String,
    role: Role,
    salt: String,
    sha256: String,
    created_on: i64,
    expires_on: i64,
    /// The application id of the operator who made it.
    created_by: String,
}

/// The newest credential of a host or balancer name: the only one honoured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialRecord {
    id: String,
    name: String,
    role: Role,
    issued_on: i64,
}

fn credential_key(role: Role, name: &str) -> String {
    format!(
        "{CREDENTIALS}{}/{}",
        role.as_str(),
        name.to_ascii_lowercase()
    )
}

/// The key of a host's credential, removed with the host (revoking it).
pub fn host_credential_key(name: &str) -> String {
    credential_key(Role::Agent, name)
}

fn auth_of(st: &ApiState) -> Result<&AuthState, ArmError> {
    st.auth.as_ref().ok_or_else(|| {
        ArmError::new(
            400,
            "OperationNotAllowed",
            "This server does not check credentials: agents and balancers need no join token.",
        )
    })
}

fn view(t: &JoinTokenRecord) -> Value {
    json!({
        "id": format!("/providers/Shoal.Infrastructure/joinTokens/{}", t.name),
        "name": t.name,
        "type": "Shoal.Infrastructure/joinTokens",
        "properties": {
            "role": t.role,
            "createdOn": epoch_text(t.created_on),
            "expiresOn": epoch_text(t.expires_on),
            "createdBy": t.created_by,
        }
    })
}

/// `GET` (list) and `POST` (create) `/providers/Shoal.Infrastructure/joinTokens`.
pub async fn join_tokens(
    st: &ApiState,
    caller: Option<&Principal>,
    method: &Method,
    body: &[u8],
) -> ApiResult {
    match *method {
        Method::GET => {
            let now = st.clock.now().as_second();
            let tokens: Vec<Value> = st
                .list::<JoinTokenRecord>(JOIN_TOKENS)
                .await?
                .into_iter()
                .filter(|t| t.value.expires_on > now)
                .map(|t| view(&t.value))
                .collect();
            Ok(json(200, &json!({ "value": tokens })))
        }
        Method::POST => create_join_token(st, caller, body).await,
        _ => Err(method_not_allowed(method)),
    }
}

async fn create_join_token(st: &ApiState, caller: Option<&Principal>, body: &[u8]) -> ApiResult {
    auth_of(st)?;
    let v = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        body_object(body, true)?
    };
    let role = match v.get("role") {
        None | Some(Value::Null) => Role::Agent,
        Some(r) => serde_json::from_value(r.clone()).map_err(|_| {
            ArmError::invalid_parameter("role", "role must be 'agent' or 'balancer'.")
        })?,
    };
    let minutes = match v.get("expiresInMinutes") {
        None | Some(Value::Null) => DEFAULT_JOIN_MINUTES,
        Some(m) => m
            .as_i64()
            .filter(|m| (1..=MAX_JOIN_MINUTES).contains(m))
            .ok_or_else(|| {
                ArmError::invalid_parameter(
                    "expiresInMinutes",
                    format!(
                        "expiresInMinutes must be a whole number from 1 to {MAX_JOIN_MINUTES}."
                    ),
                )
            })?,
    };
    let now = st.clock.now().as_second();
    let name = shoal_auth::directory::random_text(6).map_err(internal)?;
    let secret = shoal_auth::directory::random_text(24).map_err(internal)?;
    let salt = shoal_auth::directory::random_text(16).map_err(internal)?;
    let record = JoinTokenRecord {
        name: name.clone(),
        role,
        sha256: shoal_auth::directory::hash(&salt, &secret),
        salt,
        created_on: now,
        expires_on: now + minutes * 60,
        created_by: caller.map(|c| c.appid.clone()).unwrap_or_default(),
    };
    st.store
        .txn(vec![kv::put_op(
            format!("{JOIN_TOKENS}{name}"),
            &record,
            Expect::Absent,
        )])
        .await
        .map_err(txn_error)?;
    let mut answer = view(&record);
    // With an https listener the token ends with its certificate's SHA-256, which the
    // joining side pins (as kubeadm's --discovery-token-ca-cert-hash).
    answer["token"] = json!(match &auth_of(st)?.certificate_sha256 {
        Some(pin) => format!("{TOKEN_PREFIX}.{name}.{secret}.{pin}"),
        None => format!("{TOKEN_PREFIX}.{name}.{secret}"),
    });
    answer["expiresOn"] = json!(epoch_text(record.expires_on));
    answer["role"] = json!(role);
    Ok(json(201, &answer))
}

/// `GET` or `DELETE /providers/Shoal.Infrastructure/joinTokens/{name}`.
pub async fn join_token(st: &ApiState, method: &Method, name: &str) -> ApiResult {
    let key = format!("{JOIN_TOKENS}{name}");
    match *method {
        Method::GET => match st.get::<JoinTokenRecord>(&key).await? {
            Some(t) => Ok(json(200, &view(&t.value))),
            None => Err(ArmError::not_found("joinToken", name)),
        },
        Method::DELETE => {
            let existed = st.get::<JoinTokenRecord>(&key).await?.is_some();
            st.store
                .txn(vec![kv::delete_op(key, Expect::Any)])
                .await
                .map_err(txn_error)?;
            Ok(json(if existed { 200 } else { 204 }, &Value::Null))
        }
        _ => Err(method_not_allowed(method)),
    }
}

fn refused(message: impl Into<String>) -> ArmError {
    ArmError::new(401, "AuthenticationFailed", message).with_target("token")
}

/// `POST /shoal/v1/join` `{"token", "name"}`: a join token for a credential.
pub async fn join(st: &ApiState, method: &Method, body: &[u8]) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let a = auth_of(st)?;
    let v = body_object(body, true)?;
    let token = v["token"].as_str().unwrap_or_default();
    let name = v["name"].as_str().unwrap_or_default();
    check_name(name)?;
    // `shoal1.ID.SECRET[.CERTIFICATE-SHA256]`: the pin is for the joining side only.
    let mut parts = token.splitn(4, '.');
    let (Some(TOKEN_PREFIX), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(refused(
            "This is not a join token ('shoal1.…'): make one with `shoal host join-token create` on the server.",
        ));
    };
    if id.is_empty() || id.contains('/') {
        return Err(refused("The join token is unknown or was deleted."));
    }
    let now = st.clock.now().as_second();
    let record = st
        .get::<JoinTokenRecord>(&format!("{JOIN_TOKENS}{id}"))
        .await?
        .map(|r| r.value)
        .filter(|r| shoal_auth::directory::hash(&r.salt, secret) == r.sha256)
        .ok_or_else(|| {
            refused("The join token is unknown or was deleted: make a new one with `shoal host join-token create`.")
        })?;
    if record.expires_on <= now {
        return Err(refused(format!(
            "The join token expired at {}: make a new one with `shoal host join-token create`.",
            epoch_text(record.expires_on)
        )));
    }
    if record.role == Role::Agent {
        check_host_name_free(st, name).await?;
    }
    let (credential, expires_on) = mint(st, a, record.role, name).await?;
    Ok(json(
        200,
        &json!({
            "name": name,
            "role": record.role,
            "credential": credential,
            "expiresOn": epoch_text(expires_on),
        }),
    ))
}

fn check_name(name: &str) -> Result<(), ArmError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ArmError::invalid_parameter(
            "name",
            "A host or balancer name is 1-63 letters, digits, '-', '_' or '.'.",
        ))
    }
}

/// A name whose host is registered and not Down belongs to a live machine: joining under
/// it again would let a second machine take its instances.
async fn check_host_name_free(st: &ApiState, name: &str) -> Result<(), ArmError> {
    let has_credential = st
        .get::<CredentialRecord>(&credential_key(Role::Agent, name))
        .await?
        .is_some();
    let registered = st.get::<Value>(&host_key(name)).await?.is_some();
    if has_credential && registered && !crate::hosts::is_down(st, name).await? {
        return Err(crate::hosts::name_taken(name));
    }
    Ok(())
}

/// A fresh credential for `name` in `role`, revoking any earlier one; and its expiry.
pub async fn mint(
    st: &ApiState,
    a: &AuthState,
    role: Role,
    name: &str,
) -> Result<(String, i64), ArmError> {
    let now = st.clock.now().as_second();
    let tenant = a.directory.tenant().await.map_err(internal)?;
    let id = uuid::Uuid::new_v4().to_string();
    let principal = Principal {
        oid: id.clone(),
        tid: tenant.tenant_id.clone(),
        appid: name.to_string(),
        kind: role.kind(),
    };
    let issuer = format!("shoal://{}", tenant.tenant_id);
    let issued = a
        .authority
        .issue(
            &principal,
            HOST_AUDIENCE,
            &issuer,
            now,
            CREDENTIAL_LIFETIME_SECS,
        )
        .await
        .map_err(internal)?;
    let record = CredentialRecord {
        id,
        name: name.to_string(),
        role,
        issued_on: now,
    };
    st.store
        .txn(vec![kv::put_op(
            credential_key(role, name),
            &record,
            Expect::Any,
        )])
        .await
        .map_err(txn_error)?;
    Ok((issued.token, issued.claims.exp))
}

/// The host or balancer a request of the agent protocol comes from, or a 401.
pub async fn authenticate(
    st: &ApiState,
    a: &AuthState,
    headers: &http::HeaderMap,
) -> Result<Principal, ArmError> {
    let now = st.clock.now().as_second();
    let caller = crate::auth::authenticate_for(a, headers, now, &[HOST_AUDIENCE])
        .await
        .map_err(|mut e| {
            if e.code == "AuthenticationFailed" {
                e.message = "The agent protocol needs a host or balancer credential: start the \
                             agent or balancer with --join-token (from `shoal host join-token \
                             create` on the server)."
                    .into();
            }
            e
        })?;
    let role = match caller.kind {
        PrincipalKind::Host => Role::Agent,
        PrincipalKind::Balancer => Role::Balancer,
        _ => {
            return Err(ArmError::new(
                403,
                "AuthorizationFailed",
                "Only host and balancer credentials may call the agent protocol.",
            ))
        }
    };
    let current = st
        .get::<CredentialRecord>(&credential_key(role, &caller.appid))
        .await?;
    if current.is_none_or(|c| c.value.id != caller.oid) {
        return Err(ArmError::new(
            401,
            "InvalidAuthenticationToken",
            format!(
                "The credential of '{}' was revoked (the host was deleted, or it joined again \
                 elsewhere): remove the saved credential and join again with a new join token.",
                caller.appid
            ),
        ));
    }
    Ok(caller)
}

/// Whether `caller` (a host or balancer) may call `route`; a refusal is 403.
pub fn allowed(caller: &Principal, route: &Route) -> Result<(), ArmError> {
    let me = |name: &str| name.eq_ignore_ascii_case(&caller.appid);
    let ok = match (caller.kind, route) {
        (
            PrincipalKind::Host,
            Route::Host { name } | Route::HostInstances { name } | Route::HostHeartbeat { name },
        ) => me(name),
        // The status and identity handlers check the instance is on this host.
        (
            PrincipalKind::Host,
            Route::Status { .. } | Route::Statuses | Route::InstanceIdentity { .. },
        ) => true,
        (PrincipalKind::Host, Route::Drain { balancer: None, .. }) => true,
        (PrincipalKind::Host, Route::MetricsIngest | Route::Blob { .. }) => true,
        (
            PrincipalKind::Balancer,
            Route::StoreList
            | Route::StoreWatch
            | Route::InstanceHealth { .. }
            | Route::MetricsIngest,
        ) => true,
        (
            PrincipalKind::Balancer,
            Route::Drain {
                balancer: Some(name),
                ..
            }
            | Route::Balancer { name },
        ) => me(name),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ArmError::new(
            403,
            "AuthorizationFailed",
            format!(
                "The {} credential of '{}' does not allow this call (an agent touches only its \
                 own host and instances; a balancer reads pools and reports health).",
                match caller.kind {
                    PrincipalKind::Balancer => "balancer",
                    _ => "host",
                },
                caller.appid
            ),
        ))
    }
}

/// A host may download only the bundles of instances assigned to it: a bundle holds an
/// image's files (and whatever secrets its owner put in them), which other hosts have no
/// reason to read.
pub async fn blob_allowed(st: &ApiState, caller: &Principal, id: &str) -> Result<(), ArmError> {
    let (items, _) = kv::list_json::<InstanceRecord>(&*st.store, keys::INSTANCE)
        .await
        .map_err(crate::state::internal)?;
    let assigned = items
        .iter()
        .any(|i| i.value.host.eq_ignore_ascii_case(&caller.appid) && i.value.launch.blob_id == id);
    if assigned {
        Ok(())
    } else {
        Err(ArmError::new(
            403,
            "AuthorizationFailed",
            format!(
                "Host '{}' runs no instance of bundle '{id}', so it may not download it.",
                caller.appid
            ),
        )
        .with_target("blobId"))
    }
}

/// A host may report statuses only as itself.
pub fn status_allowed(caller: Option<&Principal>, reported_host: &str) -> Result<(), ArmError> {
    match caller {
        Some(c) if !c.appid.eq_ignore_ascii_case(reported_host) => Err(ArmError::new(
            403,
            "AuthorizationFailed",
            format!(
                "Host '{}' may not report statuses of host '{reported_host}'.",
                c.appid
            ),
        )
        .with_target("host")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(kind: PrincipalKind, name: &str) -> Principal {
        Principal {
            oid: "id".into(),
            tid: "t".into(),
            appid: name.into(),
            kind,
        }
    }

    #[test]
    fn a_host_touches_only_itself_and_a_balancer_only_pools() {
        let b = caller(PrincipalKind::Host, "b");
        let host = |name: &str| Route::Host { name: name.into() };
        assert!(allowed(&b, &host("b")).is_ok());
        assert!(allowed(&b, &host("B")).is_ok());
        assert_eq!(allowed(&b, &host("c")).unwrap_err().status, 403);
        let c_instances = Route::HostInstances { name: "c".into() };
        assert_eq!(allowed(&b, &c_instances).unwrap_err().status, 403);
        assert_eq!(allowed(&b, &Route::StoreList).unwrap_err().status, 403);
        let lb = caller(PrincipalKind::Balancer, "lb1");
        assert!(allowed(&lb, &Route::StoreWatch).is_ok());
        assert_eq!(allowed(&lb, &host("lb1")).unwrap_err().status, 403);
        let own = Route::Balancer { name: "lb1".into() };
        let other = Route::Balancer { name: "lb2".into() };
        assert!(allowed(&lb, &own).is_ok());
        assert_eq!(allowed(&lb, &other).unwrap_err().status, 403);
        assert!(status_allowed(Some(&b), "b").is_ok());
        assert_eq!(status_allowed(Some(&b), "c").unwrap_err().status, 403);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("host-a.zone_1").is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(64)] {
            assert_eq!(check_name(bad).unwrap_err().status, 400, "{bad:?}");
        }
    }
}
