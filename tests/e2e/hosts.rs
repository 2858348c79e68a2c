//! Issue 10 through the real binary: `shoal host` shows the hosts and cordons, drains and
//! deletes them; the server's host timeouts are flags, checked before anything starts.

use std::process::{Command, Stdio};

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
