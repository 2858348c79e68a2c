//! Portal sessions: `POST /ui/session` exchanges a credential at this server's token
//! endpoint and keeps the token server-side, named by an HttpOnly, SameSite=Strict
//! cookie; `/ui/api/...` forwards to the ARM API with that token. Every state-changing
//! request carries the session's CSRF token in `X-CSRF-Token`, equal to the readable
//! `shoal_csrf` cookie (double submit) and to the session's own copy.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{header, HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use shoal_model::ArmError;

use crate::response::{error_response, json as json_resp};
use crate::server::PeerAddr;
use crate::state::ApiState;

const SESSION_COOKIE: &str = "shoal_session";
const CSRF_COOKIE: &str = "shoal_csrf";
const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Clone)]
struct Session {
    token: String,
    /// Epoch seconds; the session ends with its token.
    expires: i64,
    csrf: String,
    app_id: String,
}

/// The sessions of every server in this process, by random id.
fn sessions() -> &'static Mutex<HashMap<String, Session>> {
    static S: OnceLock<Mutex<HashMap<String, Session>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

fn random_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn current(st: &ApiState, headers: &HeaderMap) -> Option<Session> {
    let id = cookie(headers, SESSION_COOKIE)?;
    let now = st.clock.now().as_second();
    let mut map = sessions().lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|_, s| s.expires > now);
    map.get(id).cloned()
}

fn is_loopback(req: &Request) -> bool {
    req.extensions()
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback())
}

fn csrf_ok(headers: &HeaderMap, s: &Session) -> bool {
    let header = headers.get(CSRF_HEADER).and_then(|h| h.to_str().ok());
    header == Some(s.csrf.as_str()) && cookie(headers, CSRF_COOKIE) == Some(s.csrf.as_str())
}

fn csrf_error() -> ArmError {
    ArmError::new(
        403,
        "InvalidCsrfToken",
        "The request has no valid X-CSRF-Token header for this session; reload the page.",
    )
}

fn signed_out() -> ArmError {
    ArmError::new(
        401,
        "AuthenticationFailed",
        "The portal session is missing or has expired. Sign in again.",
    )
}

/// The owner credential's path: `<data-dir>/credentials/owner.json`, beside the
/// server's certificate directory (`<data-dir>/certificates`).
fn owner_credential(st: &ApiState) -> Option<crate::principals::OwnerCredential> {
    let dir = st.certificate_dir.parent()?;
    let text = std::fs::read_to_string(dir.join("credentials").join("owner.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn boxed(st: ApiState, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send>> {
    Box::pin(crate::server::handle(State(st), req))
}

/// `GET`, `POST` and `DELETE /ui/session`.
pub async fn session(st: &ApiState, req: Request) -> Response {
    let headers = req.headers().clone();
    let loopback = is_loopback(&req);
    match req.method().clone() {
        Method::GET => {
            let tenant = match &st.auth {
                Some(a) => a.directory.tenant().await.ok(),
                None => None,
            };
            let s = current(st, &headers);
            json_resp(
                200,
                &json!({
                    "signedIn": s.is_some(),
                    "appId": s.as_ref().map(|s| s.app_id.clone()),
                    "ownerSignIn": loopback && owner_credential(st).is_some(),
                    "tenantId": tenant.as_ref().map(|t| t.tenant_id.clone()),
                    "subscriptionId": tenant.as_ref().map(|t| t.default_subscription.clone()),
                }),
            )
        }
        Method::POST => sign_in(st, req, loopback).await,
        Method::DELETE => {
            let Some(s) = current(st, &headers) else {
                return error_response(&signed_out());
            };
            if !csrf_ok(&headers, &s) {
                return error_response(&csrf_error());
            }
            if let Some(id) = cookie(&headers, SESSION_COOKIE) {
                sessions()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
            }
            let mut resp = json_resp(200, &json!({"signedIn": false}));
            set_cookies(&mut resp, "", "", 0);
            resp
        }
        m => error_response(&crate::routes::method_not_allowed(&m)),
    }
}

async fn sign_in(st: &ApiState, req: Request, loopback: bool) -> Response {
    // A JSON body cannot be sent across origins without a CORS preflight this server
    // never grants: that is the sign-in's CSRF protection.
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !is_json {
        return error_response(&ArmError::new(
            415,
            "UnsupportedMediaType",
            "Sign in with a JSON body (Content-Type: application/json).",
        ));
    }
    let host = req.headers().get(header::HOST).cloned();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 10).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ArmError::new(413, "RequestEntityTooLarge", "Too large."))
        }
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let (tenant, client_id, secret) = if v.get("owner").and_then(Value::as_bool) == Some(true) {
        match (loopback, owner_credential(st)) {
            (true, Some(c)) => (c.tenant, c.app_id, c.password),
            _ => {
                return error_response(&ArmError::new(
                    403,
                    "AuthorizationFailed",
                    "The local owner sign-in is offered only on the server's own machine.",
                ))
            }
        }
    } else {
        for (k, label) in [
            ("tenant", "Directory (tenant) ID"),
            ("clientId", "Application (client) ID"),
            ("clientSecret", "Client secret"),
        ] {
            if field(k).is_empty() {
                return error_response(
                    &ArmError::new(400, "InvalidParameter", format!("{label} is required."))
                        .with_target(k),
                );
            }
        }
        (field("tenant"), field("clientId"), field("clientSecret"))
    };
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
        encode(&client_id),
        encode(&secret),
        encode("https://management.azure.com/.default")
    );
    let mut token_req = Request::new(Body::from(form));
    *token_req.method_mut() = Method::POST;
    *token_req.uri_mut() = match format!("/{}/oauth2/v2.0/token", encode(&tenant)).parse() {
        Ok(u) => u,
        Err(_) => {
            return error_response(
                &ArmError::new(
                    400,
                    "InvalidParameter",
                    "Directory (tenant) ID is not valid.",
                )
                .with_target("tenant"),
            )
        }
    };
    let h = token_req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    if let Some(host) = host {
        h.insert(header::HOST, host);
    }
    let resp = boxed(st.clone(), token_req).await;
    let status = resp.status();
    let answer: Value =
        serde_json::from_slice(&crate::server::body_bytes(resp).await).unwrap_or(Value::Null);
    let Some(token) = answer.get("access_token").and_then(Value::as_str) else {
        let why = answer
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("The token endpoint refused the credential.");
        let code = if status.as_u16() == 400 { 400 } else { 401 };
        return error_response(&ArmError::new(code, "AuthenticationFailed", why));
    };
    let expires_in = answer
        .get("expires_in")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let session = Session {
        token: token.to_string(),
        expires: st.clock.now().as_second() + expires_in,
        csrf: random_id(),
        app_id: client_id.clone(),
    };
    let id = random_id();
    let csrf = session.csrf.clone();
    sessions()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), session);
    let mut resp = json_resp(200, &json!({"signedIn": true, "appId": client_id}));
    set_cookies(&mut resp, &id, &csrf, expires_in);
    resp
}

fn set_cookies(resp: &mut Response, id: &str, csrf: &str, max_age: i64) {
    let h = resp.headers_mut();
    for c in [
        format!("{SESSION_COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}"),
        format!("{CSRF_COOKIE}={csrf}; Path=/ui; SameSite=Strict; Max-Age={max_age}"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
}

/// `/ui/api/{path}`: the ARM request `path` with the session's bearer token.
pub async fn proxy(st: ApiState, req: Request, path: String) -> Response {
    let Some(s) = current(&st, req.headers()) else {
        return error_response(&signed_out());
    };
    let m = req.method().clone();
    if m != Method::GET && m != Method::HEAD && !csrf_ok(req.headers(), &s) {
        return error_response(&csrf_error());
    }
    let uri = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let (parts, body) = req.into_parts();
    let mut inner = Request::new(body);
    *inner.method_mut() = m;
    *inner.uri_mut() = match uri.parse() {
        Ok(u) => u,
        Err(_) => return error_response(&ArmError::new(400, "InvalidUri", "Bad path.")),
    };
    for name in [
        header::HOST,
        header::CONTENT_TYPE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            inner.headers_mut().insert(name, v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", s.token)) {
        inner.headers_mut().insert(header::AUTHORIZATION, v);
    }
    boxed(st, inner).await
}

/// Percent-encodes a form value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
