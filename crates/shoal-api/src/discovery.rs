//! What clients discover before and while signing in: ARM's `/metadata/endpoints`,
//! `/subscriptions`, `/tenants`, and the token authority's OpenID configuration, JWKS and
//! token endpoint (`/{tenant}/oauth2/v2.0/token`, client credentials with a secret).
//!
//! In: the request and the directory in the store. Out: JSON in the shapes Entra ID and
//! ARM use, so MSAL, azure-identity and `az` read them unchanged.

use http::Method;
use serde_json::{json, Value};
use shoal_auth::{PrincipalKind, ARM_AUDIENCES};
use shoal_model::ArmError;

use crate::auth::AuthState;
use crate::response::{json, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::state::{internal, ApiState};

/// Lifetime of tokens from the token endpoint (Entra ID's default is about an hour).
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

fn auth(st: &ApiState) -> Result<&AuthState, ArmError> {
    st.auth.as_ref().ok_or_else(|| {
        ArmError::new(
            404,
            "NotFound",
            "This server does not issue tokens (authentication is off).",
        )
    })
}

/// `GET /metadata/endpoints`: the cloud description `az cloud register` reads.
pub async fn metadata_endpoints(st: &ApiState, ctx: &Ctx, method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let login = match &st.auth {
        Some(a) => format!("{}/", a.authority_url(&ctx.base_url)),
        None => format!("{}/", ctx.base_url),
    };
    let base = &ctx.base_url;
    let cloud = json!({
        "name": "Shoal",
        "portal": base,
        "resourceManager": format!("{base}/"),
        "authentication": {
            "loginEndpoint": login,
            "audiences": ARM_AUDIENCES,
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "media": base,
        "graphAudience": base,
        "graph": base,
        "microsoftGraphResourceId": format!("{base}/"),
        "batch": base,
        "sqlManagement": base,
        "gallery": base,
        "galleryEndpoint": base,
        "vmImageAliasDoc": format!("{base}/metadata/vm-image-aliases"),
        "suffixes": {
            "acrLoginServer": "shoal.local",
            "keyVaultDns": "vault.shoal.local",
            "sqlServerHostname": "sql.shoal.local",
            "storage": "shoal.local",
        },
    });
    // api-version 2019-05-01 (what `ARM_CLOUD_METADATA_URL` names) answers the list of
    // clouds; 2022-09-01 (what `az cloud register` asks for) and no version, this cloud.
    let v = ctx.query("api-version").unwrap_or_default();
    if ("2019-05-01".."2022-01-01").contains(&v) {
        Ok(json(200, &json!([cloud])))
    } else {
        Ok(json(200, &cloud))
    }
}

fn subscription_view(s: &shoal_auth::directory::Subscription) -> Value {
    json!({
        "id": format!("/subscriptions/{}", s.subscription_id),
        "authorizationSource": "RoleBased",
        "subscriptionId": s.subscription_id,
        "tenantId": s.tenant_id,
        "displayName": s.display_name,
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Internal_2014-09-01",
            "quotaId": "Internal_2014-09-01",
            "spendingLimit": "Off",
        },
        "managedByTenants": [],
    })
}

/// `GET /subscriptions`.
pub async fn subscriptions(st: &ApiState, method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let subs = auth(st)?
        .directory
        .subscriptions()
        .await
        .map_err(internal)?;
    let value: Vec<Value> = subs.iter().map(subscription_view).collect();
    Ok(json(200, &json!({ "value": value })))
}

/// The subscription, or ARM's 404 `SubscriptionNotFound`.
pub async fn require_subscription(st: &ApiState, sub: &str) -> Result<Value, ArmError> {
    let Some(a) = &st.auth else {
        return Ok(json!({
            "id": format!("/subscriptions/{sub}"),
            "subscriptionId": sub,
            "displayName": "Shoal",
            "state": "Enabled",
        }));
    };
    match a.directory.subscription(sub).await.map_err(internal)? {
        Some(s) => Ok(subscription_view(&s)),
        None => Err(ArmError::new(
            404,
            "SubscriptionNotFound",
            format!("The subscription '{sub}' could not be found."),
        )),
    }
}

/// `GET /tenants`.
pub async fn tenants(st: &ApiState, method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let t = auth(st)?.directory.tenant().await.map_err(internal)?;
    Ok(json(
        200,
        &json!({"value": [{
            "id": format!("/tenants/{}", t.tenant_id),
            "tenantId": t.tenant_id,
            "tenantCategory": "Home",
            "displayName": t.display_name,
            "defaultDomain": "shoal.local",
            "domains": ["shoal.local"],
            "tenantType": "AAD",
        }]}),
    ))
}

/// Whether `tenant` (from a path) names this installation's tenant.
async fn check_tenant(a: &AuthState, tenant: &str) -> Result<String, ArmError> {
    let t = a.directory.tenant().await.map_err(internal)?;
    let aliases = ["common", "organizations", "shoal"];
    if t.tenant_id.eq_ignore_ascii_case(tenant)
        || aliases.iter().any(|x| x.eq_ignore_ascii_case(tenant))
    {
        Ok(t.tenant_id)
    } else {
        Err(ArmError::new(
            400,
            "invalid_request",
            format!(
                "AADSTS90002: Tenant '{tenant}' not found. This server's tenant is {}.",
                t.tenant_id
            ),
        ))
    }
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub async fn openid_configuration(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    tenant: &str,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let a = auth(st)?;
    let tid = check_tenant(a, tenant).await?;
    // The URLs name the listener the client used: MSAL checks that they share its host.
    let base = &ctx.base_url;
    Ok(json(
        200,
        &json!({
            "issuer": format!("{base}/{tid}/v2.0"),
            "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
            "device_authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/devicecode"),
            "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": null,
            "cloud_instance_name": "shoal.local",
            "cloud_graph_host_name": "shoal.local",
            "msgraph_host": "shoal.local",
        }),
    ))
}

/// `GET /{tenant}/discovery/v2.0/keys`.
pub async fn jwks(st: &ApiState, method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let a = auth(st)?;
    let keys = a
        .authority
        .jwks(st.clock.now().as_second())
        .await
        .map_err(internal)?;
    Ok(json(200, &keys))
}

/// An OAuth error answer (`{"error", "error_description", "error_codes"}`), as Entra ID's.
pub fn oauth_error(
    status: u16,
    error: &str,
    code: u32,
    description: &str,
) -> axum::response::Response {
    json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": "",
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (crate::server::decode(k), crate::server::decode(v))
        })
        .collect()
}

/// The audience a scope (`https://management.azure.com/.default`) or v1 resource asks for.
fn audience(scope_or_resource: &str) -> Option<String> {
    let first = scope_or_resource
        .split_whitespace()
        .find(|s| s.ends_with("/.default") || s.starts_with("https://"))?;
    let aud = first.strip_suffix("/.default").unwrap_or(first);
    let aud = if aud.ends_with('/') {
        aud.to_string()
    } else {
        format!("{aud}/")
    };
    let trimmed = |a: &str| a.trim_end_matches('/').to_ascii_lowercase();
    ARM_AUDIENCES
        .iter()
        .any(|a| trimmed(a) == trimmed(&aud))
        .then_some(aud)
}

/// `POST /{tenant}/oauth2/v2.0/token` (and v1 `/{tenant}/oauth2/token`): client
/// credentials with a secret, in the body or as HTTP Basic.
pub async fn token(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    tenant: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    let a = auth(st)?;
    let tid = match check_tenant(a, tenant).await {
        Ok(t) => t,
        Err(e) => return Ok(oauth_error(400, "invalid_request", 90002, &e.message)),
    };
    let f = form(body);
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("client_credentials") {
        return Ok(oauth_error(
            400,
            "unsupported_grant_type",
            70003,
            "Only grant_type=client_credentials is supported.",
        ));
    }
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let assertion = get("client_assertion")
        .filter(|_| get("client_assertion_type") == Some(JWT_BEARER))
        .map(str::to_string);
    let (client_id, secret) = match (get("client_id"), get("client_secret"), basic) {
        (Some(id), Some(secret), _) => (id.to_string(), secret.to_string()),
        (_, _, Some((id, secret))) => (id, secret),
        (Some(id), None, None) if assertion.is_some() => (id.to_string(), String::new()),
        _ => return Ok(oauth_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the parameter 'client_assertion' or 'client_secret'.",
        )),
    };
    let Some(aud) = get("scope").or(get("resource")).and_then(audience) else {
        return Ok(oauth_error(
            400,
            "invalid_scope",
            70011,
            "The scope must be https://management.azure.com/.default or https://management.core.windows.net//.default.",
        ));
    };
    let now = st.clock.now().as_second();
    let checked = match &assertion {
        Some(jwt) => a.directory.check_assertion(&client_id, jwt, now).await,
        None => a.directory.check_secret(&client_id, &secret, now).await,
    };
    let record = match checked {
        Ok(r) => r,
        Err(shoal_auth::DirectoryError::BadAssertion(why)) => {
            return Ok(oauth_error(
                401,
                "invalid_client",
                700027,
                &format!("Client assertion failed signature validation or its claims: {why}."),
            ))
        }
        Err(shoal_auth::DirectoryError::NoSuchPrincipal(_)) => {
            return Ok(oauth_error(
                400,
                "unauthorized_client",
                700016,
                &format!("Application with identifier '{client_id}' was not found in the directory '{tid}'."),
            ))
        }
        Err(shoal_auth::DirectoryError::BadSecret) => {
            return Ok(oauth_error(
                401,
                "invalid_client",
                7000215,
                &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
            ))
        }
        Err(e) => return Err(internal(e)),
    };
    if matches!(record.kind, PrincipalKind::Host | PrincipalKind::Balancer) {
        return Ok(oauth_error(
            400,
            "unauthorized_client",
            700016,
            "Host and balancer credentials cannot sign in to ARM.",
        ));
    }
    let issuer = format!("{}/{tid}/v2.0", a.authority_url(&ctx.base_url));
    let issued = a
        .authority
        .issue(&record.principal(), &aud, &issuer, now, TOKEN_LIFETIME_SECS)
        .await
        .map_err(internal)?;
    Ok(json(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "ext_expires_in": TOKEN_LIFETIME_SECS,
            "expires_on": (now + TOKEN_LIFETIME_SECS).to_string(),
            "resource": aud,
            "access_token": issued.token,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_discovery_names_is_readable_without_a_token() {
        use crate::auth::Access;
        for path in ["/metadata/endpoints", "/metadata/vm-image-aliases"] {
            let route = crate::routes::parse(path).expect(path);
            assert!(Access::of(&route) == Access::Public, "{path}");
        }
    }

    #[test]
    fn scopes_name_arm_audiences_only() {
        assert_eq!(
            audience("https://management.azure.com/.default").as_deref(),
            Some("https://management.azure.com/")
        );
        assert_eq!(
            audience("https://management.core.windows.net//.default").as_deref(),
            Some("https://management.core.windows.net/")
        );
        assert_eq!(
            audience("https://management.azure.com").as_deref(),
            Some("https://management.azure.com/")
        );
        assert_eq!(audience("https://vault.azure.net/.default"), None);
        assert_eq!(audience("openid"), None);
    }
}
