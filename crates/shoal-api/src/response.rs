//! What handlers return, and how ARM responses are shaped (errors, long-running
//! operations, paging).

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde_json::Value;
use shoal_model::ArmError;

/// The per-request facts handlers need to build absolute URLs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `http://host:port` as the client addressed us.
    pub base_url: String,
    pub query: Vec<(String, String)>,
    /// `If-Match` / `If-None-Match` as sent (the SDKs' `etag` + `match_condition`).
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
}

impl Ctx {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Checks `If-Match` / `If-None-Match` against the resource's current etag (`None` when
    /// it does not exist): `412 PreconditionFailed` when they do not hold, as ARM answers.
    pub fn check_preconditions(&self, current: Option<&str>) -> Result<(), ArmError> {
        shoal_control::commands::Preconditions {
            if_match: self.if_match.clone(),
            if_none_match: self.if_none_match.clone(),
        }
        .check(current)
    }

    pub fn api_version(&self) -> &str {
        self.query("api-version").unwrap_or("2024-07-01")
    }

    /// The `Azure-AsyncOperation` URL of an operation.
    pub fn operation_url(&self, sub: &str, location: &str, id: &str) -> String {
        format!(
            "{}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/operations/{id}?api-version={}",
            self.base_url,
            self.api_version()
        )
    }
}

pub type ApiResult = Result<Response, ArmError>;

pub fn json(status: u16, body: &impl serde::Serialize) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        axum::Json(body),
    )
        .into_response();
    resp.headers_mut().insert("x-ms-request-id", request_id());
    resp
}

pub fn empty(status: u16) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp
}

/// A long-running operation's first answer: `Azure-AsyncOperation` (and `Location` for
/// POST/DELETE) with `Retry-After: 1` — never 0, which the SDKs treat as absent.
pub fn lro(status: u16, body: Option<&Value>, op_url: &str, with_location: bool) -> Response {
    let mut resp = match body {
        Some(b) => json(status, b),
        None => empty(status),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(op_url) {
        h.insert("azure-asyncoperation", v.clone());
        if with_location {
            h.insert(http::header::LOCATION, v);
        }
    }
    h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// An ARM error body. Never carries `Retry-After` on a 4xx (the SDKs would retry it);
/// a 503 (the store is unavailable for now) says when to retry.
pub fn error_response(err: &ArmError) -> Response {
    let status = if (400..600).contains(&err.status) {
        err.status
    } else {
        500
    };
    let mut resp = json(
        status,
        &serde_json::to_value(err.envelope()).unwrap_or(Value::Null),
    );
    if status == 503 {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

fn request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .unwrap_or(HeaderValue::from_static("-"))
}

/// One page of a list: `{"value": [...], "nextLink": "...&$skiptoken=N"}`.
pub fn page(ctx: &Ctx, path: &str, items: Vec<Value>, page_size: usize) -> Response {
    let total = items.len();
    let value = items
        .into_iter()
        .skip(page_start(ctx))
        .take(page_size)
        .collect();
    page_answer(ctx, path, total, value, page_size)
}

/// Where the page asked for starts in the list (`$skiptoken`, 0 without one).
pub fn page_start(ctx: &Ctx) -> usize {
    ctx.query("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The answer for the page at [`page_start`] of a list of `total` items: its `value`
/// and, when items follow, the `nextLink` to them.
pub fn page_answer<T: serde::Serialize>(
    ctx: &Ctx,
    path: &str,
    total: usize,
    value: Vec<T>,
    page_size: usize,
) -> Response {
    /// Fields in the byte order of their names, as a sorted JSON map has them.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Page<T> {
        #[serde(skip_serializing_if = "Option::is_none")]
        next_link: Option<String>,
        value: Vec<T>,
    }
    let skip = page_start(ctx);
    let next_link = (skip.saturating_add(page_size) < total).then(|| {
        let mut extra = String::new();
        for (k, v) in &ctx.query {
            if !k.eq_ignore_ascii_case("$skiptoken") && !k.eq_ignore_ascii_case("api-version") {
                extra.push_str(&format!("&{}={}", encode(k), encode(v)));
            }
        }
        format!(
            "{}{}?api-version={}{}&$skiptoken={}",
            ctx.base_url,
            path,
            ctx.api_version(),
            extra,
            skip + page_size
        )
    });
    json(200, &Page { next_link, value })
}

/// Percent-encodes a query component.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(if_match: Option<&str>, if_none_match: Option<&str>) -> Ctx {
        Ctx {
            base_url: "http://x".into(),
            query: vec![],
            if_match: if_match.map(String::from),
            if_none_match: if_none_match.map(String::from),
        }
    }

    #[test]
    fn preconditions_follow_http_semantics() {
        let cur = Some("\"7\"");
        assert!(ctx(None, None).check_preconditions(cur).is_ok());
        assert!(ctx(Some("\"7\""), None).check_preconditions(cur).is_ok());
        assert!(ctx(Some("W/\"7\""), None).check_preconditions(cur).is_ok());
        assert!(ctx(Some("\"6\", \"7\""), None)
            .check_preconditions(cur)
            .is_ok());
        assert!(ctx(Some("*"), None).check_preconditions(cur).is_ok());
        let stale = ctx(Some("\"6\""), None)
            .check_preconditions(cur)
            .unwrap_err();
        assert_eq!(
            (stale.status, stale.code.as_str()),
            (412, "PreconditionFailed")
        );
        assert!(ctx(Some("*"), None).check_preconditions(None).is_err());
        assert!(ctx(None, Some("*")).check_preconditions(None).is_ok());
        assert!(ctx(None, Some("*")).check_preconditions(cur).is_err());
        assert!(ctx(None, Some("\"6\"")).check_preconditions(cur).is_ok());
    }
}
