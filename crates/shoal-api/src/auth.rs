//! Authentication of ARM requests: the bearer token of a request becomes the caller's
//! [`Principal`], or a 401 in ARM's shape.
//!
//! In: the request's `Authorization` header and the route. Out: the caller, or an
//! [`ArmError`] with the code Azure uses (`AuthenticationFailed` when there is no token,
//! `InvalidAuthenticationToken` for a bad or malformed one, `ExpiredAuthenticationToken`,
//! `InvalidAuthenticationTokenAudience`), answered with `WWW-Authenticate: Bearer
//! authorization_uri="…/{tenant}", error="invalid_token"` (see [`challenge`]).
//!
//! Which routes need a token is decided by [`Access::of`]: discovery, token endpoints,
//! `/healthz`, `/openapi.json` and the join exchange are public; the agent and balancer
//! protocol needs a host or balancer credential ([`crate::host_auth`]); everything else
//! needs a user token.

use std::sync::Arc;

use axum::response::Response;
use http::{HeaderMap, HeaderValue};
use shoal_auth::{Authority, Directory, Principal, VerifyFailure, ARM_AUDIENCES};
use shoal_model::ArmError;

use crate::response::error_response;
use crate::routes::Route;
use crate::state::internal;

/// The token authority and directory of a server that checks tokens.
#[derive(Clone)]
pub struct AuthState {
    pub authority: Arc<Authority>,
    pub directory: Directory,
    /// `https://<tls-listen>` when the server has an https listener: the authority URL
    /// that discovery and 401 challenges name (MSAL accepts only https authorities).
    pub public_url: Option<String>,
    /// Role assignments as last read and when (epoch seconds); see
    /// [`crate::rbac::ASSIGNMENT_CACHE_SECS`].
    pub assignments: Arc<std::sync::Mutex<Option<CachedAssignments>>>,
    /// SHA-256 (hex) of the https listener's certificate: join tokens carry it, so a
    /// joining agent or balancer trusts exactly this server.
    pub certificate_sha256: Option<String>,
}

/// Role assignments and when they were read (epoch seconds).
pub type CachedAssignments = (i64, Vec<crate::rbac::Assignment>);

impl AuthState {
    pub fn new(store: Arc<dyn shoal_store::Store>, public_url: Option<String>) -> AuthState {
        AuthState {
            authority: Arc::new(Authority::new(store.clone())),
            directory: Directory::new(store),
            public_url,
            assignments: Default::default(),
            certificate_sha256: None,
        }
    }

    /// The https listener's certificate fingerprint, for join tokens.
    pub fn with_certificate_sha256(mut self, sha256: Option<String>) -> AuthState {
        self.certificate_sha256 = sha256;
        self
    }

    /// The base URL of the token authority: the https listener's, else the one the
    /// client used.
    pub fn authority_url(&self, base_url: &str) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| base_url.to_string())
            .trim_end_matches('/')
            .to_string()
    }
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: health, the OpenAPI document, discovery and token endpoints.
    Public,
    /// The agent and balancer protocol: a host or balancer credential.
    HostProtocol,
    /// A user token (and, for the action, a role).
    User,
}

impl Access {
    pub fn of(route: &Route) -> Access {
        match route {
            Route::Healthz
            | Route::OpenApi
            | Route::IdentityToken
            | Route::MetadataEndpoints
            | Route::ImageAliases
            | Route::OidcConfig { .. }
            | Route::Jwks { .. }
            | Route::Token { .. }
            | Route::Join => Access::Public,
            Route::Host { .. }
            | Route::HostInstances { .. }
            | Route::HostHeartbeat { .. }
            | Route::InstanceIdentity { .. }
            | Route::Status { .. }
            | Route::Statuses
            | Route::StoreList
            | Route::StoreWatch
            | Route::InstanceHealth { .. }
            | Route::Drain { .. }
            | Route::Balancer { .. }
            | Route::MetricsIngest
            | Route::Blob { .. } => Access::HostProtocol,
            _ => Access::User,
        }
    }
}

/// The caller of a user route: the bearer token's principal.
pub async fn authenticate(
    auth: &AuthState,
    headers: &HeaderMap,
    now: i64,
) -> Result<Principal, ArmError> {
    authenticate_for(auth, headers, now, &ARM_AUDIENCES).await
}

/// The bearer token's principal, if the token is for one of `audiences`.
pub async fn authenticate_for(
    auth: &AuthState,
    headers: &HeaderMap,
    now: i64,
    audiences: &[&str],
) -> Result<Principal, ArmError> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .trim();
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ if header.is_empty() => "",
        _ => {
            return Err(ArmError::new(
                401,
                "InvalidAuthenticationToken",
                "The Authorization header is not a bearer token ('Bearer <access token>').",
            ))
        }
    };
    if token.is_empty() {
        return Err(ArmError::new(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing. Get a token from \
             this server's token endpoint (the local `shoal` CLI uses \
             <data-dir>/credentials/owner.json by itself; the SDKs: ClientSecretCredential \
             with Shoal as the authority).",
        ));
    }
    match auth.authority.verify(token, audiences, now).await {
        Ok(p) => Ok(p),
        Err(VerifyFailure::Token(e)) => {
            let message = match e.arm_code() {
                "ExpiredAuthenticationToken" => format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time. Get a new token.",
                    crate::times::epoch_text(match &e {
                        shoal_auth::VerifyError::Expired { exp } => *exp,
                        _ => 0,
                    })
                ),
                "InvalidAuthenticationTokenAudience" => format!(
                    "{e}. Ask for a token for https://management.azure.com/ or https://management.core.windows.net/."
                ),
                _ => format!("The access token is invalid: {e}."),
            };
            Err(ArmError::new(401, e.arm_code(), message))
        }
        Err(VerifyFailure::Authority(e)) => Err(internal(e)),
    }
}

/// A 401 answer with its `WWW-Authenticate` challenge naming this server's authority.
pub async fn challenge(auth: &AuthState, base_url: &str, err: &ArmError) -> Response {
    let mut resp = error_response(err);
    if err.status == 401 {
        let tenant = auth
            .directory
            .tenant()
            .await
            .map(|t| t.tenant_id)
            .unwrap_or_default();
        let value = format!(
            "Bearer authorization_uri=\"{}/{tenant}\", error=\"invalid_token\", error_description=\"{}\"",
            auth.authority_url(base_url),
            err.code
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}
