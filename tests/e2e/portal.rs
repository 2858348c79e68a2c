//! The portal's session layer (issue 16) against the real binary: the owner signs in from
//! loopback, ARM calls go through /ui/api with the session's token, a state-changing call
//! without the CSRF header is refused and changes nothing, a wrong secret is refused.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::harness::*;

/// One HTTP/1.1 request with extra headers; (status, headers, body).
fn call(
    hostport: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("portal test");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("portal test");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("portal test");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .expect("portal test")
        .parse()
        .expect("portal test");
    (status, head.to_string(), body.to_string())
}

fn set_cookie(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().expect("portal test").to_string())
        .unwrap_or_else(|| panic!("no {name} cookie in {head}"))
}

#[test]
fn portal_session_signs_in_and_guards_actions() {
    let _g = serial();
    let server = Server::start();
    let hp = server.endpoint().trim_start_matches("http://").to_string();
    let (status, head, page) = call(&hp, "GET", "/ui/", "", "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/ui/static/app.js"));
    assert!(head.contains("content-security-policy: default-src 'none'"));
    // Without a session the proxy is a 401, not the API's answer.
    let (status, _, _) = call(
        &hp,
        "GET",
        "/ui/api/subscriptions?api-version=2022-12-01",
        "",
        "",
    );
    assert_eq!(status, 401);
    // A wrong secret is refused with the token endpoint's reason.
    let (_, _, info) = call(&hp, "GET", "/ui/session", "", "");
    let info: serde_json::Value = serde_json::from_str(&info).expect("portal test");
    assert_eq!(
        info["ownerSignIn"], true,
        "loopback caller is offered the owner sign-in"
    );
    let tenant = info["tenantId"].as_str().expect("portal test");
    let sub = info["subscriptionId"].as_str().expect("portal test");
    let bad = format!(r#"{{"tenant":"{tenant}","clientId":"nobody","clientSecret":"x"}}"#);
    let (status, _, body) = call(
        &hp,
        "POST",
        "/ui/session",
        "Content-Type: application/json\r\n",
        &bad,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nobody"), "{body}");
    // The owner signs in: an HttpOnly SameSite=Strict session cookie and a CSRF cookie.
    let (status, head, body) = call(
        &hp,
        "POST",
        "/ui/session",
        "Content-Type: application/json\r\n",
        r#"{"owner":true}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("HttpOnly; SameSite=Strict"), "{head}");
    let cookies = format!(
        "Cookie: {}; {}\r\n",
        set_cookie(&head, "shoal_session"),
        set_cookie(&head, "shoal_csrf")
    );
    let csrf = set_cookie(&head, "shoal_csrf")
        .split_once('=')
        .expect("portal test")
        .1
        .to_string();
    let group =
        format!("/ui/api/subscriptions/{sub}/resourcegroups/portal-rg?api-version=2022-09-01");
    let json = "Content-Type: application/json\r\n";
    // A PUT without the CSRF header is refused and makes nothing.
    let (status, _, body) = call(
        &hp,
        "PUT",
        &group,
        &format!("{cookies}{json}"),
        r#"{"location":"local"}"#,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("InvalidCsrfToken"));
    let (status, _, _) = call(&hp, "GET", &group, &cookies, "");
    assert_eq!(status, 404, "the refused PUT made no group");
    // With it, the same PUT goes through the ARM API as the owner.
    let with = format!("{cookies}{json}X-CSRF-Token: {csrf}\r\n");
    let (status, _, body) = call(&hp, "PUT", &group, &with, r#"{"location":"local"}"#);
    assert!(status == 200 || status == 201, "{body}");
    let (status, _, body) = call(&hp, "GET", &group, &cookies, "");
    assert_eq!(status, 200, "{body}");
    // Signed out, the cookie no longer works.
    let (status, _, _) = call(&hp, "DELETE", "/ui/session", &with, "");
    assert_eq!(status, 200);
    let (status, _, _) = call(&hp, "GET", &group, &cookies, "");
    assert_eq!(status, 401);
}

/// The portal in a real browser (issue 16's "done means"): `tests/browser/portal.mjs`
/// drives Debian's Chromium with Playwright against this server — sign in, create a
/// scale set from an image, scale 2 → 5 and watch the grid, a CPU load and the autoscale
/// action on the chart, restart an instance, an ARM error, a Reader's disabled actions,
/// axe-core at laptop and phone width, no console error, no request to another host.
/// Screenshots go to `target/portal-screenshots/`.
#[test]
fn the_portal_in_a_real_browser() {
    let root = repo_root();
    let browser_dir = root.join("tests/browser");
    if !Path::new("/usr/bin/chromium").exists()
        || !browser_dir.join("node_modules/playwright-core").exists()
    {
        skip_or_fail(
            "the_portal_in_a_real_browser",
            "needs /usr/bin/chromium and tests/browser/node_modules (run scripts/install-browser-deps.sh)",
        );
        return;
    }
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("portal-rg");
    let sp = s.cli_ok(&[
        "ad",
        "sp",
        "create-for-rbac",
        "--name",
        "portal-reader",
        "--role",
        "Reader",
        "--scopes",
        "/subscriptions/00000000-0000-0000-0000-000000000000",
    ]);
    let shots = root.join("target/portal-screenshots");
    let out = std::process::Command::new("node")
        .arg("portal.mjs")
        .current_dir(&browser_dir)
        .env("SHOAL_URL", s.endpoint())
        .env("SHOAL_RG", "portal-rg")
        .env("SCREENSHOTS", &shots)
        .env("READER_TENANT", sp["tenant"].as_str().expect("tenant"))
        .env("READER_APP_ID", sp["appId"].as_str().expect("appId"))
        .env("READER_SECRET", sp["password"].as_str().expect("password"))
        .output()
        .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser test failed:\n{text}\nserver log:\n{}",
        tail(&s.log(), 40)
    );
    assert!(text.contains("all portal checks passed"), "{text}");
    for name in [
        "overview-laptop",
        "scaleset-laptop",
        "scaleset-phone",
        "create-phone",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "no screenshot {name}"
        );
    }
}
