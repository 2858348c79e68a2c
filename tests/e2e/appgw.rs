//! Issue 3, layer 7: `Microsoft.Network/applicationGateways` through the real binary —
//! listeners, path routing to two sets, no failed GET when an instance is killed, HTTPS
//! with a certificate made here, and bad input refused with the field named.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn gw_id(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/applicationGateways/{name}")
}

fn gw_url(s: &Server, rg: &str, name: &str) -> String {
    format!("{}{}?api-version=2024-05-01", s.endpoint(), gw_id(rg, name))
}

/// PUTs `body` at `url`: (status, parsed answer).
fn put(url: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http_request("PUT", url, Some(&body.to_string())).expect("API answers");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The answers (trimmed bodies of 200s) to `n` GETs of `path` through `frontend`, each on
/// a new connection.
fn answers(frontend: &str, path: &str, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|_| http_get(&format!("http://{frontend}{path}")))
        .filter(|(st, _)| *st == 200)
        .map(|(_, b)| b.trim().to_string())
        .collect()
}

fn answering(frontend: &str, n: usize) -> BTreeSet<String> {
    answers(frontend, "/", n).into_iter().collect()
}

fn vm_health(s: &Server, rg: &str, set: &str, id: u64) -> String {
    let view = s.cli_ok(&[
        "vmss",
        "get-instance-view",
        "-g",
        rg,
        "-n",
        set,
        "--instance-id",
        &id.to_string(),
    ]);
    view["vmHealth"]["status"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `vmss create --app-gateway` for a set of `count` instances of `apps/web:1.0.0`.
fn create_set_behind(s: &Server, rg: &str, gw: &str, port: u16, count: u32) {
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "web",
        "--image",
        "apps/web:1.0.0",
        "--instance-count",
        &count.to_string(),
        "--app-gateway",
        gw,
        "--app-gateway-frontend-port",
        &port.to_string(),
    ]);
}

#[test]
fn three_instances_behind_an_l7_listener_all_answer() {
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("gwbasic");
    let port = free_port();
    create_set_behind(&s, "gwbasic", "gw", port, 3);
    let frontend = format!("127.0.0.1:{port}");
    wait_until(WAIT, "all three answer through the gateway", || {
        answering(&frontend, 30).len() == 3
    });
    assert_eq!(
        answering(&frontend, 30),
        ["instance 0", "instance 1", "instance 2"]
            .map(String::from)
            .into()
    );

    let gw = s.cli_ok(&[
        "network",
        "application-gateway",
        "show",
        "-g",
        "gwbasic",
        "-n",
        "gw",
    ]);
    assert_eq!(gw["properties"]["operationalState"], "Running");
    let members = gw["properties"]["backendAddressPools"][0]["properties"]
        ["backendIPConfigurations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(members.len(), 3, "{gw}");
    let listed = s.cli_ok(&["network", "application-gateway", "list", "-g", "gwbasic"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    // The gateway's probe is the instances' health signal.
    wait_until(WAIT, "instance 2 is reported healthy", || {
        vm_health(&s, "gwbasic", "web", 2) == "HealthState/healthy"
    });

    // Not deleted while the set puts its instances in it.
    let out = s.cli(&[
        "network",
        "application-gateway",
        "delete",
        "-g",
        "gwbasic",
        "-n",
        "gw",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InUseApplicationGatewayCannotBeDeleted"),
        "{out:?}"
    );
    assert_eq!(
        answering(&frontend, 10).len(),
        3,
        "a refused delete changed nothing"
    );
}

#[test]
fn path_rules_route_to_two_sets() {
    let _g = serial();
    let s = Server::start();
    let rg = "gwpaths";
    s.create_group_and_image(rg);
    // A second image: the same workload, naming its instances api-N.
    s.cli_ok(&[
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "apps",
        "--name",
        "api",
        "--version",
        "1.0.0",
        "--dir",
        "examples/web",
        "--command",
        "SHOAL_INSTANCE_ID=api-$SHOAL_INSTANCE_ID exec ./shoal-web",
        "--port",
        "8080",
    ]);
    let port = free_port();
    let id = gw_id(rg, "gw");
    let r = |kind: &str, name: &str| json!({"id": format!("{id}/{kind}/{name}")});
    let body = json!({
        "location": "local",
        "properties": {
            "sku": {"name": "Standard_v2", "tier": "Standard_v2", "capacity": 1},
            "frontendIPConfigurations": [{"name": "fe", "properties": {"privateIPAddress": "127.0.0.1"}}],
            "frontendPorts": [{"name": "http", "properties": {"port": port}}],
            "probes": [{"name": "health", "properties": {"protocol": "Http", "path": "/health", "interval": 1, "timeout": 1, "unhealthyThreshold": 2}}],
            "backendAddressPools": [{"name": "web"}, {"name": "api"}],
            "backendHttpSettingsCollection": [{"name": "s", "properties": {"port": 8080, "protocol": "Http", "requestTimeout": 10, "probe": r("probes", "health")}}],
            "httpListeners": [{"name": "l", "properties": {"frontendIPConfiguration": r("frontendIPConfigurations", "fe"), "frontendPort": r("frontendPorts", "http"), "protocol": "Http"}}],
            "urlPathMaps": [{"name": "paths", "properties": {
                "defaultBackendAddressPool": r("backendAddressPools", "web"),
                "defaultBackendHttpSettings": r("backendHttpSettingsCollection", "s"),
                "pathRules": [{"name": "work", "properties": {"paths": ["/work", "/work/*"], "backendAddressPool": r("backendAddressPools", "api"), "backendHttpSettings": r("backendHttpSettingsCollection", "s")}}]
            }}],
            "requestRoutingRules": [{"name": "rule", "properties": {"ruleType": "PathBasedRouting", "priority": 10, "httpListener": r("httpListeners", "l"), "urlPathMap": r("urlPathMaps", "paths")}}]
        }
    });
    let (status, answer) = put(&gw_url(&s, rg, "gw"), &body);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["properties"]["provisioningState"], "Succeeded");

    for (set, image, pool) in [("web", "web", "web"), ("api", "api", "api")] {
        let set_body = json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2},
            "properties": {"upgradePolicy": {"mode": "Manual"}, "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/{image}/versions/1.0.0")}},
                "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {"primary": true, "ipConfigurations": [{"name": "ip", "properties": {
                    "applicationGatewayBackendAddressPools": [{"id": format!("{id}/backendAddressPools/{pool}")}]
                }}]}}]}
            }}
        });
        let url = format!("{}/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{set}?api-version=2024-07-01", s.endpoint());
        let (status, answer) = put(&url, &set_body);
        assert_eq!(status, 201, "{answer}");
    }
    let frontend = format!("127.0.0.1:{port}");
    wait_until(WAIT, "both web instances answer /", || {
        answering(&frontend, 20).len() == 2
    });
    // "worked 1 ms (N rounds) on instance api-K": who answered is the last word.
    let workers = |n| -> BTreeSet<String> {
        answers(&frontend, "/work?ms=1", n)
            .iter()
            .filter_map(|a| a.rsplit(' ').next().map(String::from))
            .collect()
    };
    wait_until(WAIT, "both api instances answer /work", || {
        workers(20).len() == 2
    });
    assert_eq!(workers(20), ["api-0", "api-1"].map(String::from).into());
    let root = answers(&frontend, "/", 20);
    assert_eq!(root.len(), 20);
    assert!(
        root.iter()
            .all(|a| a.starts_with("instance ") && !a.contains("api-")),
        "{root:?}"
    );
    let work = answers(&frontend, "/work?ms=1", 20);
    assert_eq!(work.len(), 20);
    assert!(
        work.iter().all(|a| a.contains("on instance api-")),
        "{work:?}"
    );
}

#[test]
fn kill_9_of_an_instance_under_load_through_l7_fails_no_get() {
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("gwkill");
    let port = free_port();
    create_set_behind(&s, "gwkill", "gw", port, 3);
    let frontend = format!("127.0.0.1:{port}");
    wait_until(WAIT, "all three answer through the gateway", || {
        answering(&frontend, 30).len() == 3
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, frontend) =
                (stop.clone(), ok.clone(), failed.clone(), frontend.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&format!("http://{frontend}/")) {
                        Some((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            failures.push(other);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                failures
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let victim = processes_under(&s.data_dir())
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "shoal-web")
                && instance_id_of(*pid) == Some(1)
        })
        .expect("instance 1's process");
    // SAFETY: killing one of this test server's instance processes by pid.
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<_> = load
        .into_iter()
        .flat_map(|t| t.join().expect("load thread"))
        .collect();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} GETs failed after kill -9: {failures:?}",
        ok + failed
    );
    // Shoal restarts it, and the gateway sends it traffic again.
    wait_until(WAIT, "instance 1 answers again", || {
        answering(&frontend, 30).contains("instance 1")
    });
}

/// A certificate for `localhost` made now: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    (
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
        certified.cert.der().to_vec(),
    )
}

/// GET `path` over TLS from `addr`, trusting only `root` for `localhost`: (status, body).
fn https_get(addr: &str, root: &[u8], path: &str) -> Option<(u16, String)> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
        .ok()?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = Vec::new();
    // A peer may close without close_notify; what arrived is what counts.
    let _ = tls.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

#[test]
fn an_https_listener_serves_with_a_certificate_made_at_test_time() {
    let _g = serial();
    let s = Server::start();
    let rg = "gwtls";
    s.create_group_and_image(rg);
    let (cert_pem, key_pem, der) = certificate();
    // The server reads certificate files only from its certificate directory.
    let certs = s.data_dir().join("certificates");
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    std::fs::write(&cert, cert_pem).expect("write certificate");
    std::fs::write(&key, key_pem).expect("write key");
    let port = free_port();
    let gw = s.cli_ok(&[
        "network",
        "application-gateway",
        "create",
        "-g",
        rg,
        "-n",
        "tls",
        "--frontend-port",
        &port.to_string(),
        "--http-settings-port",
        "8080",
        "--probe-path",
        "/health",
        "--probe-interval",
        "1",
        "--cert-file",
        &cert.display().to_string(),
        "--key-file",
        &key.display().to_string(),
    ]);
    assert_eq!(
        gw["properties"]["httpListeners"][0]["properties"]["protocol"],
        "Https"
    );
    assert!(
        gw["properties"]["sslCertificates"][0]["properties"]["publicCertData"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{gw}"
    );
    // An existing gateway: the set joins its pool.
    create_set_behind(&s, rg, "tls", port, 2);
    let addr = format!("127.0.0.1:{port}");
    let seen = || -> BTreeSet<String> {
        (0..20)
            .filter_map(|_| https_get(&addr, &der, "/"))
            .filter(|(st, _)| *st == 200)
            .map(|(_, b)| b.trim().to_string())
            .collect()
    };
    wait_until(WAIT, "both instances answer over HTTPS", || {
        seen().len() == 2
    });
    assert_eq!(
        seen(),
        ["instance 0", "instance 1"].map(String::from).into()
    );
    // Plain HTTP on the TLS port gets no answer from an instance.
    assert!(answers(&addr, "/", 3).is_empty());
}

#[test]
fn bad_gateways_are_refused_naming_the_field_and_change_nothing() {
    let _g = serial();
    let s = Server::start();
    let rg = "gwbad";
    s.cli_ok(&["group", "create", "--name", rg, "--location", "local"]);
    let port = free_port();
    let good = s.cli_ok(&[
        "network",
        "application-gateway",
        "create",
        "-g",
        rg,
        "-n",
        "gw",
        "--frontend-port",
        &port.to_string(),
        "--http-settings-port",
        "8080",
    ]);
    let mut body = good.clone();
    body.as_object_mut().expect("object").remove("etag");
    let url = gw_url(&s, rg, "gw");

    // An unreadable certificate, through the CLI: the field is named.
    let out = s.cli(&[
        "network",
        "application-gateway",
        "create",
        "-g",
        rg,
        "-n",
        "tls",
        "--frontend-port",
        &free_port().to_string(),
        "--cert-file",
        "/nonexistent/cert.pem",
        "--key-file",
        "/nonexistent/key.pem",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Target: properties.sslCertificates[0].properties.shoal.certificateFile"),
        "{err}"
    );

    // A rule naming a missing pool; a port out of range; an unknown enum value.
    for (pointer, value, target) in [
        (
            "/properties/requestRoutingRules/0/properties/backendAddressPool/id",
            json!(format!("{}/backendAddressPools/nope", gw_id(rg, "gw"))),
            "properties.requestRoutingRules[0].properties.backendAddressPool.id",
        ),
        (
            "/properties/frontendPorts/0/properties/port",
            json!(70000),
            "properties.frontendPorts[0].properties.port",
        ),
        (
            "/properties/backendHttpSettingsCollection/0/properties/cookieBasedAffinity",
            json!("Sometimes"),
            "properties.backendHttpSettingsCollection[0].properties.cookieBasedAffinity",
        ),
    ] {
        let mut bad = body.clone();
        *bad.pointer_mut(pointer).expect(pointer) = value;
        let (status, answer) = put(&url, &bad);
        assert_eq!(status, 400, "{pointer}: {answer}");
        assert_eq!(answer["error"]["target"], target, "{answer}");
    }

    // A frontend port another program holds.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let held = holder.local_addr().expect("addr").port();
    let mut bad = body.clone();
    bad["properties"]["frontendPorts"][0]["properties"]["port"] = json!(held);
    let (status, answer) = put(&url, &bad);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["error"]["target"],
        "properties.frontendPorts[0].properties.port"
    );

    // A frontend port a load balancer's rule uses.
    let lb_port = free_port().to_string();
    s.cli_ok(&[
        "network",
        "lb",
        "create",
        "-g",
        rg,
        "-n",
        "lb",
        "--backend-pool-name",
        "pool",
    ]);
    s.cli_ok(&[
        "network",
        "lb",
        "rule",
        "create",
        "-g",
        rg,
        "--lb-name",
        "lb",
        "-n",
        "r",
        "--frontend-port",
        &lb_port,
        "--backend-port",
        "8080",
    ]);
    let mut bad = body.clone();
    bad["properties"]["frontendPorts"][0]["properties"]["port"] =
        json!(lb_port.parse::<u16>().expect("port"));
    let (status, answer) = put(&url, &bad);
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("load balancer 'lb'"),
        "{answer}"
    );

    // Nothing was half-applied: the stored gateway is the first one, still serving its port.
    let now = s.cli_ok(&[
        "network",
        "application-gateway",
        "show",
        "-g",
        rg,
        "-n",
        "gw",
    ]);
    assert_eq!(now["properties"], good["properties"]);
    assert!(http_get(&format!("{}/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/applicationGateways/tls", s.endpoint()))
        .is_some_and(|(st, _)| st == 404));
    wait_until(
        WAIT,
        "the gateway's listener answers (503: no members yet)",
        || http_get(&format!("http://127.0.0.1:{port}/")).is_some_and(|(st, _)| st == 503),
    );
    // Re-PUT of the same gateway keeps its own port.
    let (status, answer) = put(&url, &body);
    assert_eq!(status, 200, "{answer}");
}

/// `curl` against `url` with `flags`: (HTTP code, HTTP version) and the body in `out`.
fn curl(url: &str, flags: &[&str], out: &std::path::Path) -> Option<(String, String)> {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(out)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(flags)
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (code, version) = text.split_once(' ')?;
    output
        .status
        .success()
        .then(|| (code.to_string(), version.to_string()))
}

/// One WebSocket message through `frontend` to `/ws` and back: the handshake's accept key
/// must be RFC 6455's for its example key, the echo must be what was sent.
fn websocket_echo(frontend: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut tcp = std::net::TcpStream::connect(frontend).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte)
            .map_err(|e| format!("head: {e}"))?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let accept = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim())
    });
    if !head.starts_with("HTTP/1.1 101") || accept != Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
        return Err(format!("not the expected handshake: {head}"));
    }
    // One masked binary frame.
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).map_err(|e| e.to_string())?;
    let mut h = [0u8; 2];
    tcp.read_exact(&mut h).map_err(|e| format!("frame: {e}"))?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).map_err(|e| e.to_string())?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).map_err(|e| e.to_string())?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    if h[0] != 0x82 {
        return Err(format!("unexpected frame header {h:?}"));
    }
    let mut echo = vec![0u8; len];
    tcp.read_exact(&mut echo).map_err(|e| e.to_string())?;
    Ok(echo)
}

#[test]
fn websocket_http2_large_and_slow_bodies_pass_through_the_gateway() {
    let _g = serial();
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_or_fail(
            "websocket_http2_large_and_slow_bodies_pass_through_the_gateway",
            "curl is not installed (scripts/install-net-deps.sh installs it)",
        );
        return;
    }
    let s = Server::start();
    s.create_group_and_image("gwproto");
    let port = free_port();
    create_set_behind(&s, "gwproto", "gw", port, 2);
    let frontend = format!("127.0.0.1:{port}");
    wait_until(WAIT, "both instances answer through the gateway", || {
        answering(&frontend, 20).len() == 2
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let root = format!("http://{frontend}/");
    let h2 = ["--http2-prior-knowledge"];

    // HTTP/2 is off until the gateway enables it (Azure's default).
    assert_eq!(
        curl(&root, &h2, &out),
        None,
        "h2 refused while enableHttp2 is off"
    );
    let url = gw_url(&s, "gwproto", "gw");
    let (status, text) = http_request("GET", &url, None).expect("API answers");
    assert_eq!(status, 200, "{text}");
    let mut gw: Value = serde_json::from_str(&text).expect("json");
    gw["properties"]["enableHttp2"] = json!(true);
    let (status, answer) = put(&url, &gw);
    assert!(status == 200 || status == 201, "{status} {answer}");
    assert_eq!(answer["properties"]["enableHttp2"], true);
    wait_until(WAIT, "the gateway speaks HTTP/2", || {
        curl(&root, &h2, &out).is_some_and(|(code, v)| code == "200" && v == "2")
    });
    let body = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(body.starts_with("instance "), "{body}");
    // HTTP/1.1 clients are still served.
    assert_eq!(curl(&root, &[], &out), Some(("200".into(), "1.1".into())));

    // Large bodies both ways, over HTTP/1.1 and HTTP/2 (whose upload reaches the
    // instance chunked).
    let upload = dir.path().join("upload");
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&upload, &data).expect("write upload");
    let at = format!("@{}", upload.display());
    for (flags, version) in [(vec![], "1.1"), (vec!["--http2-prior-knowledge"], "2")] {
        let mut args = flags.clone();
        args.extend([
            "--data-binary",
            &at,
            "-H",
            "Content-Type: application/octet-stream",
        ]);
        assert_eq!(
            curl(&format!("http://{frontend}/echo"), &args, &out),
            Some(("200".into(), version.into())),
            "24 MiB echo over HTTP/{version}"
        );
        assert!(
            std::fs::read(&out).expect("echo") == data,
            "the 24 MiB came back unchanged over HTTP/{version}"
        );
        assert_eq!(
            curl(&format!("http://{frontend}/big?mb=32"), &flags, &out),
            Some(("200".into(), version.into()))
        );
        assert_eq!(std::fs::metadata(&out).expect("big").len(), 32 << 20);
    }

    // A client uploading slowly (≈100 KB/s for 300 KB: about three seconds).
    let slow: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    std::fs::write(&upload, &slow).expect("write upload");
    assert_eq!(
        curl(
            &format!("http://{frontend}/echo"),
            &["--limit-rate", "100K", "--data-binary", &at],
            &out
        ),
        Some(("200".into(), "1.1".into()))
    );
    assert!(
        std::fs::read(&out).expect("echo") == slow,
        "slow upload echoed whole"
    );

    // WebSocket: small and large messages through the gateway to an instance and back.
    for size in [5usize, 300_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 13) as u8).collect();
        let echo = websocket_echo(&frontend, &payload).expect("websocket through the gateway");
        assert!(echo == payload, "{size}-byte WebSocket message echoed");
    }
}

#[test]
fn instances_closing_idle_keep_alive_connections_fail_no_request_through_the_gateway() {
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("gwidle");
    let port = free_port();
    // The instances close any kept-alive connection idle for 15 ms: the gateway's pooled
    // connections to them go stale all the time, some just as a request is sent.
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        "gwidle",
        "-n",
        "web",
        "--image",
        "apps/web:1.0.0",
        "--instance-count",
        "2",
        "--custom-data",
        "idle-close-ms=15",
        "--app-gateway",
        "gw",
        "--app-gateway-frontend-port",
        &port.to_string(),
    ]);
    let frontend = format!("127.0.0.1:{port}");
    wait_until(WAIT, "both instances answer through the gateway", || {
        answering(&frontend, 20).len() == 2
    });
    // One keep-alive client connection; GETs and POSTs with pauses around the
    // instances' idle timeout (0-30 ms), so the gateway often reuses a connection the
    // instance is closing.
    let mut tcp = std::net::TcpStream::connect(&frontend).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut failed = Vec::new();
    for i in 0..300u32 {
        let request = if i % 2 == 0 {
            "GET / HTTP/1.1\r\nHost: gw\r\n\r\n".to_string()
        } else {
            "POST /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello".to_string()
        };
        tcp.write_all(request.as_bytes()).expect("send");
        let (status, body) = read_response(&mut tcp);
        let ok = status == 200
            && (if i % 2 == 0 {
                body.starts_with("instance ")
            } else {
                body == "hello"
            });
        if !ok {
            failed.push((i, status, body));
        }
        std::thread::sleep(Duration::from_millis(u64::from(i % 7) * 5));
    }
    assert!(failed.is_empty(), "requests failed: {failed:?}");
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, body).
fn read_response(tcp: &mut std::net::TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read_exact(&mut byte).is_err() {
            return (0, format!("connection ended in the head: {head:?}"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if tcp.read_exact(&mut body).is_err() {
        return (status, "body cut".into());
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}
