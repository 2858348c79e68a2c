//! Issue 11's hardening of the API listener, through the real binary: connections that
//! send nothing or send their headers slowly are closed, and the server raises its own
//! open-file limit, so idle connections cannot make it unanswerable.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// Whether the peer closed `conn` within `within` (a read that ends, rather than one
/// that times out with the connection still open).
fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    conn.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408 before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn idle_and_slow_connections_do_not_stop_the_api() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    // Started with the common soft limit of 1024 open files: 2000 connections only fit
    // if the server raises it.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 1024 && exec \"$0\" \"$@\"")
        .arg(shoal_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env("SHOAL_LOG", crate::harness::log_filter())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn shoal serve");
    let endpoint = format!("http://127.0.0.1:{port}");
    register_data_dir(&endpoint, &data);
    wait_until(Duration::from_secs(30), "the server answers", || {
        http_get(&format!("{endpoint}/healthz")).is_some_and(|(s, _)| s == 200)
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

    let mut idle: Vec<TcpStream> = (0..2000)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    // One more, sending its request head a piece at a time and never finishing it.
    let mut slow = TcpStream::connect(addr).expect("slow connection");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: shoal\r\n")
        .expect("half a request");

    // A normal, authenticated request still answers.
    let (status, body) = http_request(
        "GET",
        &format!("{endpoint}/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups?api-version=2024-07-01"),
        None,
    )
    .expect("the API answers beside 2000 idle connections");
    assert_eq!(status, 200, "{body}");

    // Neither the silent connections nor the slow one are kept.
    assert!(
        closed_by_server(&mut slow, Duration::from_secs(30)),
        "a connection that never finishes its headers is closed"
    );
    assert!(
        closed_by_server(&mut idle[0], Duration::from_secs(30)),
        "a connection that sends nothing is closed"
    );
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        log.contains("raised the open-file limit"),
        "the server raised its limit:\n{}",
        tail(&log, 20)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The `.tar` bundles a server keeps in its data directory.
fn bundle_files(s: &Server) -> Vec<String> {
    std::fs::read_dir(s.data_dir().join("blobs"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".tar"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn unreferenced_bundles_are_collected_and_uploads_past_the_quota_are_refused() {
    let _g = serial();
    let s = Server::start_with(&[
        "--bundle-collect-every",
        "1",
        "--bundle-unreferenced-after",
        "2",
    ]);
    // A bundle an image version names, and one nothing names.
    s.create_group_and_image("gcrg");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "run.sh", &b"exit 0"[..])
        .expect("tar");
    let bytes = tar.into_inner().expect("tar");
    let body = String::from_utf8(bytes).expect("an ASCII tar");
    let (status, answer) = raw_request(
        "POST",
        &format!("{}/shoal/v1/blobs", s.endpoint()),
        Some(&body),
        "application/x-tar",
        owner_token(s.endpoint().trim_start_matches("http://")).as_deref(),
    )
    .expect("upload");
    assert_eq!(status, 201, "{answer}");
    assert_eq!(bundle_files(&s).len(), 2);
    wait_until(
        Duration::from_secs(30),
        "the unreferenced bundle is collected",
        || bundle_files(&s).len() == 1,
    );
    // The one the image names is kept, and still makes instances.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bundle_files(&s).len(), 1, "the named bundle is kept");
    s.cli_ok(&vmss_args("gcrg", "1"));

    // A quota of 1 MiB holds the example's bundle (about 0.6 MiB) once, not twice: the
    // second upload is refused and leaves nothing behind.
    let q = Server::start_with(&["--bundle-quota-mb", "1"]);
    q.create_group_and_image("quota");
    let out = q.cli(&image_args("quota", "1.0.1"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("QuotaExceeded"), "{err}");
    assert!(
        err.contains("00000000-0000-0000-0000-000000000000"),
        "the quota named is the subscription's: {err}"
    );
    assert_eq!(bundle_files(&q).len(), 1);
    // An upload counts against a subscription that exists, and only there.
    let (status, answer) = raw_request(
        "POST",
        &format!(
            "{}/shoal/v1/blobs?subscription=11111111-1111-1111-1111-111111111111",
            q.endpoint()
        ),
        Some("x"),
        "application/x-tar",
        owner_token(q.endpoint().trim_start_matches("http://")).as_deref(),
    )
    .expect("upload");
    assert_eq!(status, 404, "{answer}");
    assert!(answer.contains("SubscriptionNotFound"), "{answer}");
    assert_eq!(bundle_files(&q).len(), 1);
}

/// A line of `/proc/<pid>/status`, e.g. `Uid` → `200123\t200123\t200123\t200123`.
fn proc_status(pid: u32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
}

#[test]
fn instances_run_as_users_of_their_own_without_privileges() {
    if !root_or_skip(
        "instances_run_as_users_of_their_own_without_privileges",
        "only an agent running as root hands instances users of their own",
    ) {
        return;
    }
    let _g = serial();
    let s = Server::start();
    let rg = "usersrg";
    s.create_group_and_image(rg);
    let mut create = vmss_args(rg, "2").to_vec();
    create.extend(["--custom-data", "only-for-me"]);
    s.cli_ok(&create);
    wait_until(Duration::from_secs(60), "both instances answer", || {
        let i = s.instances(rg, "web");
        i.len() == 2
            && i.iter().all(|i| {
                i.address
                    .as_ref()
                    .is_some_and(|a| http_get(&format!("http://{a}/")).is_some())
            })
    });
    let mut uids = Vec::new();
    for i in s.instances(rg, "web") {
        let pid = i.pid.expect("pid");
        let uid = proc_status(pid, "Uid").expect("uid");
        let real = uid.split_whitespace().next().unwrap_or("0").to_string();
        assert_ne!(real, "0", "instance {} runs as root: {uid}", i.id);
        assert!(
            uid.split_whitespace().all(|u| u == real),
            "every uid dropped: {uid}"
        );
        assert_eq!(proc_status(pid, "NoNewPrivs").as_deref(), Some("1"));
        assert_eq!(
            proc_status(pid, "Groups").as_deref(),
            Some(""),
            "no supplementary groups"
        );
        // It owns its disk: the image's files, seen from its working directory.
        for file in ["", "shoal-web", "src/main.rs"] {
            let owner = std::fs::metadata(format!("/proc/{pid}/cwd/{file}"))
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m).to_string());
            assert_eq!(
                owner.as_deref().ok(),
                Some(real.as_str()),
                "instance {}: its disk's {file:?} is not its own",
                i.id
            );
        }
        uids.push(real);
        // It still reads its own custom data.
        let addr = i.address.expect("address");
        let (status, body) = http_get(&format!("http://{addr}/custom-data")).expect("answer");
        assert_eq!((status, body.trim()), (200, "only-for-me"));
    }
    assert_ne!(uids[0], uids[1], "each instance is a user of its own");
}
