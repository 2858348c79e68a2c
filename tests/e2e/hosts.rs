//! Issue 10 through the real binary: `shoal host` shows the hosts and cordons, drains and
//! deletes them; the server's host timeouts are flags, checked before anything starts.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

#[test]
fn host_timeouts_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(shoal_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--host-not-ready-after", "5", "--host-down-after", "3"])
        .stdin(Stdio::null())
        .output()
        .expect("run shoal serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host-down-after") && err.contains("host-not-ready-after"),
        "{err}"
    );
}

#[test]
fn shoal_host_lists_cordons_and_refuses_a_drain_with_nowhere_to_go() {
    let _g = serial();
    let s = Server::start_with(&[
        "--host-name",
        "h1",
        "--zone",
        "2",
        "--heartbeat-interval",
        "1",
        "--host-not-ready-after",
        "3",
        "--host-down-after",
        "6",
    ]);
    // The local agent registers just after the API answers.
    wait_until(
        Duration::from_secs(30),
        "the local agent registers h1",
        || {
            s.cli_ok(&["host", "list"])
                .as_array()
                .is_some_and(|h| !h.is_empty())
        },
    );
    let hosts = s.cli_ok(&["host", "list"]);
    let h = &hosts.as_array().expect("array")[0];
    assert_eq!(h["name"], "h1", "{hosts}");
    assert_eq!(h["properties"]["zone"], "2");
    assert_eq!(h["properties"]["state"], "Ready");

    let cordoned = s.cli_ok(&["host", "cordon", "-n", "h1"]);
    assert_eq!(cordoned["properties"]["cordoned"], true, "{cordoned}");
    let shown = s.cli_ok(&["host", "show", "-n", "h1"]);
    assert_eq!(shown["properties"]["cordoned"], true);
    let back = s.cli_ok(&["host", "uncordon", "-n", "h1"]);
    assert_eq!(back["properties"]["cordoned"], false);

    // With one instance and no other host, a drain has nowhere to go: refused, unchanged.
    let rg = "hostrg";
    s.create_group_and_image(rg);
    s.cli_ok(&vmss_args(rg, "1"));
    let drain = s.cli(&["host", "drain", "-n", "h1"]);
    assert!(!drain.status.success());
    let err = String::from_utf8_lossy(&drain.stderr);
    assert!(err.contains("hostName") || err.contains("nowhere"), "{err}");
    assert_eq!(
        s.cli_ok(&["host", "show", "-n", "h1"])["properties"]["draining"],
        false
    );

    let table = s.cli(&["host", "list", "-o", "table"]);
    let text = String::from_utf8_lossy(&table.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("h1"))
        .expect("h1 in the table");
    assert!(line.contains("Ready") && line.contains(" 1 "), "{text}");
}

/// What a caller of the agent protocol gets: the status code and the ARM error code.
fn agent_call(
    s: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    bearer: Option<&str>,
) -> (u16, String) {
    let url = format!("{}{path}", s.endpoint());
    let (status, body) =
        raw_request(method, &url, body, "application/json", bearer).expect("server answers");
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(String::from))
        .unwrap_or_default();
    (status, code)
}

#[test]
fn the_agent_protocol_refuses_callers_without_the_right_host_credential() {
    let _g = serial();
    let s = Server::start_with(&["--host-name", "a", "--heartbeat-interval", "1"]);
    let rg = "hostauthrg";
    s.create_group_and_image(rg);
    s.cli_ok(&vmss_args(rg, "1"));
    wait_until(
        Duration::from_secs(60),
        "the instance runs on host a",
        || {
            s.instances(rg, "web")
                .iter()
                .any(|i| i.power == "running" && i.address.is_some())
        },
    );
    let before = s.instances(rg, "web");
    let sub = s.cli_ok(&["vmss", "show", "-g", rg, "-n", "web"])["id"]
        .as_str()
        .expect("id")
        .split('/')
        .nth(2)
        .expect("subscription")
        .to_string();
    let status_path = format!("/shoal/v1/status/{sub}/{rg}/web/{}", before[0].id);
    let forged = |host: &str| {
        format!(
            r#"{{"state":"running","host":"{host}","launch_generation":1,"restart_gen":0,"reimage_gen":0,"address":"10.9.9.9:1","port":1,"restarts":0,"since":"2026-01-01T00:00:00Z"}}"#
        )
    };
    let evil_host = r#"{"name":"evil","agent_url":"http://127.0.0.1:1","driver":"process","limits":"","network":"","vcpus":64,"memory_mb":65536,"last_seen":"","host_id":"x"}"#;
    let owner = owner_token(s.endpoint().trim_start_matches("http://")).expect("owner token");

    let batch = |host: &str| {
        format!(
            r#"{{"statuses":[{{"instance":"{sub}/{rg}/web/{}","status":{}}}]}}"#,
            before[0].id,
            forged(host)
        )
    };

    // No credential, and a user's token (made for ARM, not for hosts): 401, nothing written.
    let calls: [(&str, &str, Option<String>); 6] = [
        ("GET", "/shoal/v1/hosts/a/instances", None),
        ("PUT", "/shoal/v1/hosts/evil", Some(evil_host.to_string())),
        ("PUT", &status_path, Some(forged("a"))),
        ("PUT", "/shoal/v1/statuses", Some(batch("a"))),
        ("GET", "/shoal/v1/list?prefix=/vmss", None),
        ("POST", "/shoal/v1/hosts/a/heartbeat", None),
    ];
    for (method, path, body) in &calls {
        for bearer in [None, Some(owner.as_str())] {
            let (status, code) = agent_call(&s, method, path, body.as_deref(), bearer);
            assert_eq!(status, 401, "{method} {path} with {bearer:?}: {code}");
        }
    }

    // Join tokens: a made-up or malformed one is refused; a real one lets host b join.
    for bad in ["shoal1.nosuch.secret", "not-a-token"] {
        let body = format!(r#"{{"token":"{bad}","name":"b"}}"#);
        let (status, code) = agent_call(&s, "POST", "/shoal/v1/join", Some(&body), None);
        assert_eq!((status, code.as_str()), (401, "AuthenticationFailed"));
    }
    let token = join_token(&s, "agent");
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Command::new(shoal_bin())
        .args(["agent", "--servers", &s.endpoint(), "--host-name", "b"])
        .args(["--network", "host-ports", "--heartbeat-interval", "1"])
        .arg("--data-dir")
        .arg(agent_dir.path())
        .args(["--join-token", &token])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shoal agent");
    wait_until(Duration::from_secs(30), "host b is Ready", || {
        s.cli_ok(&["host", "list"]).as_array().is_some_and(|h| {
            h.iter()
                .any(|h| h["name"] == "b" && h["properties"]["state"] == "Ready")
        })
    });
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agent_dir.path().join("agent-credential.json"))
            .expect("the agent saved its credential"),
    )
    .expect("json");
    let b = saved["credential"]
        .as_str()
        .expect("credential")
        .to_string();

    // The bundle host a's instance runs: host b runs none of it.
    let version = http_request(
        "GET",
        &format!("{}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0?api-version=2024-03-03", s.endpoint()),
        None,
    )
    .expect("image version");
    let blob = serde_json::from_str::<serde_json::Value>(&version.1).expect("json")["properties"]
        ["shoal"]["blobId"]
        .as_str()
        .unwrap_or_else(|| panic!("blobId in {}", version.1))
        .to_string();
    let blob_path = format!("/shoal/v1/blobs/{blob}");

    // Host b's credential: nothing of host a's, and nothing a balancer does.
    let refused: [(&str, &str, Option<String>, u16); 6] = [
        ("GET", &blob_path, None, 403),
        ("GET", "/shoal/v1/hosts/a/instances", None, 403),
        (
            "PUT",
            "/shoal/v1/hosts/a",
            Some(evil_host.replace("evil", "a")),
            403,
        ),
        ("PUT", &status_path, Some(forged("a")), 403),
        ("PUT", &status_path, Some(forged("b")), 404),
        ("GET", "/shoal/v1/list?prefix=/vmss", None, 403),
    ];
    for (method, path, body, want) in &refused {
        let (status, code) = agent_call(&s, method, path, body.as_deref(), Some(&b));
        assert_eq!(status, *want, "{method} {path} as host b: {code}");
    }
    // In a batch, each report is refused on its own: host a's (403), and one for an
    // instance not on host b (404); a batch that is no batch is a 400.
    let url = format!("{}/shoal/v1/statuses", s.endpoint());
    for (host, want) in [("a", 403), ("b", 404)] {
        let (status, body) = raw_request(
            "PUT",
            &url,
            Some(&batch(host)),
            "application/json",
            Some(&b),
        )
        .expect("answer");
        assert_eq!(status, 200, "{body}");
        let results: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(results["results"][0]["ok"], false, "{body}");
        assert_eq!(results["results"][0]["status"], want, "{body}");
    }
    let (status, code) = agent_call(&s, "PUT", "/shoal/v1/statuses", Some("{}"), Some(&b));
    assert_eq!((status, code.as_str()), (400, "InvalidParameter"));
    let (status, _) = agent_call(&s, "GET", "/shoal/v1/hosts/b/instances", None, Some(&b));
    assert_eq!(status, 200, "host b reads its own instances");
    // A host credential is no user: every user route refuses it.
    let set_url = format!("{}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/web?api-version=2024-07-01", s.endpoint());
    for method in ["GET", "DELETE"] {
        let (status, _) =
            raw_request(method, &set_url, None, "application/json", Some(&b)).expect("answer");
        assert!(
            status == 401 || status == 403,
            "{method} of the set as host b: {status}"
        );
    }
    // Metrics of host a's instance sent by host b are not recorded.
    let set_id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/web");
    let sample = format!(
        r#"{{"samples":[{{"resourceId":"{set_id}","instanceId":"{}","name":"Percentage CPU","value":99}}]}}"#,
        before[0].id
    );
    let url = format!("{}/shoal/v1/metrics", s.endpoint());
    let (status, body) =
        raw_request("POST", &url, Some(&sample), "application/json", Some(&b)).expect("answer");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""accepted":0"#) && body.contains(r#""skipped":1"#),
        "{body}"
    );

    // A second machine cannot join under the live name b.
    let again = format!(r#"{{"token":"{}","name":"b"}}"#, join_token(&s, "agent"));
    let (status, _) = agent_call(&s, "POST", "/shoal/v1/join", Some(&again), None);
    assert_eq!(status, 409, "the name of a live host is taken");

    // Nothing the refused calls carried was written.
    let after = s.instances(rg, "web");
    assert_eq!(
        after[0].address, before[0].address,
        "the forged address was not taken"
    );
    let names: Vec<String> = s
        .cli_ok(&["host", "list"])
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!names.contains(&"evil".to_string()), "{names:?}");

    // Deleting host b revokes its credential.
    let _ = agent.kill();
    let _ = agent.wait();
    s.cli(&["host", "delete", "-n", "b"]);
    let (status, code) = agent_call(&s, "POST", "/shoal/v1/hosts/b/heartbeat", None, Some(&b));
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"));
}
