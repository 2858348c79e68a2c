//! The portal at `/ui`: static pages embedded in the binary, a sign-in that exchanges a
//! credential at this server's own token endpoint, and `/ui/api/...`, which forwards a
//! request to the ARM API with the session's bearer token so access control applies to
//! the page exactly as to the CLI.
//!
//! No build step: the files under `ui/static/` are plain HTML, CSS and ES modules,
//! included with `include_str!`. Every answer carries a Content-Security-Policy that
//! allows nothing but this server.

mod session;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, HeaderValue, Method, StatusCode};

use crate::response::error_response;
use crate::state::ApiState;
use shoal_model::ArmError;

/// Whether `path` belongs to the portal.
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The embedded files: (name under /ui/static/, content type, body).
const FILES: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("static/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("static/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("static/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("static/dom.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("static/chart.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("static/charts.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("static/overview.js"),
    ),
    (
        "scaleset.js",
        "text/javascript; charset=utf-8",
        include_str!("static/scaleset.js"),
    ),
    (
        "autoscale.js",
        "text/javascript; charset=utf-8",
        include_str!("static/autoscale.js"),
    ),
    (
        "instance.js",
        "text/javascript; charset=utf-8",
        include_str!("static/instance.js"),
    ),
    (
        "create.js",
        "text/javascript; charset=utf-8",
        include_str!("static/create.js"),
    ),
    (
        "network.js",
        "text/javascript; charset=utf-8",
        include_str!("static/network.js"),
    ),
    (
        "activity.js",
        "text/javascript; charset=utf-8",
        include_str!("static/activity.js"),
    ),
    (
        "access.js",
        "text/javascript; charset=utf-8",
        include_str!("static/access.js"),
    ),
];

const INDEX: &str = include_str!("static/index.html");

/// Only this server: scripts, styles, images and fetches from the same origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub async fn handle(st: ApiState, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.trim_start_matches("/ui").trim_start_matches('/');
    let method = req.method().clone();
    if rest == "session" {
        return session::session(&st, req).await;
    }
    if let Some(api) = rest.strip_prefix("api/") {
        let api = format!("/{api}");
        return session::proxy(st, req, api).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return error_response(&crate::routes::method_not_allowed(&method));
    }
    if let Some(name) = rest.strip_prefix("static/") {
        return match FILES.iter().find(|(n, _, _)| *n == name) {
            Some((name, ctype, body)) => match from_dev_dir(name) {
                Some(body) => page(ctype, body, "no-store"),
                None => page(ctype, *body, "max-age=0, must-revalidate"),
            },
            None => error_response(&ArmError::new(
                404,
                "NotFound",
                format!("The portal has no file '{name}'."),
            )),
        };
    }
    // Every other /ui path is a page of the single-page app (its router reads the path).
    match from_dev_dir("index.html") {
        Some(body) => page("text/html; charset=utf-8", body, "no-store"),
        None => page("text/html; charset=utf-8", INDEX, "no-store"),
    }
}

/// For portal development: with `SHOAL_UI_DIR` set (to `crates/shoal-api/src/ui/static`),
/// the embedded files are read from there on every request, so a page change needs a
/// reload, not a rebuild. Only the embedded names are read.
fn from_dev_dir(name: &str) -> Option<String> {
    let dir = std::env::var_os("SHOAL_UI_DIR")?;
    std::fs::read_to_string(std::path::Path::new(&dir).join(name)).ok()
}

fn page(ctype: &str, body: impl Into<Body>, cache: &'static str) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(ctype).expect("static"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secure_headers(h);
    resp
}

/// Headers every portal answer carries.
fn secure_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}
