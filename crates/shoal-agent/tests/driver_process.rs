//! The process driver with real processes: the `examples/web` binary started as
//! instances, reached over HTTP, stopped, reimaged, destroyed and adopted after the
//! driver is dropped. Namespace tests need root: without it they print `SKIPPED: …` and
//! return, or fail under `SHOAL_REQUIRE_ALL=1` (see [`skip_or_fail`]).
//!
//! `cargo test -p shoal-agent --test driver_process -- --ignored --nocapture` also runs
//! the 200-instance timing runs (one per network mode).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use shoal_agent::driver::process::{NetworkMode, ProcessDriver, ProcessDriverConfig, Subnet};
use shoal_agent::driver::{Driver, InstanceKey, InstanceSpec};

const DEADLINE: Duration = Duration::from_secs(20);

/// The built `shoal-web` binary, building it (debug) if no build exists yet.
fn web_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        for profile in ["release", "debug"] {
            let p = target.join(profile).join("shoal-web");
            if p.is_file() {
                return p;
            }
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "shoal-web"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p shoal-web");
        assert!(status.success(), "cargo build -p shoal-web failed");
        target.join("debug").join("shoal-web")
    })
}

/// An image directory holding a copy of the web binary.
fn image(dir: &Path) -> PathBuf {
    let image = dir.join("image");
    std::fs::create_dir_all(&image).expect("mkdir image");
    std::fs::copy(web_binary(), image.join("shoal-web")).expect("copy binary");
    std::fs::write(image.join("README"), "image file\n").expect("write");
    image
}

fn key(name: &str) -> InstanceKey {
    InstanceKey(format!("test-{}-{name}", std::process::id()))
}

fn spec(key: InstanceKey, image: &Path, id: u32) -> InstanceSpec {
    InstanceSpec {
        key,
        vmss: "web".into(),
        instance_id: id.to_string(),
        image_dir: image.to_owned(),
        command: "exec ./shoal-web".into(),
        port: 8080,
        vcpus: 1,
        memory_mb: 256,
        custom_data: Some(format!("custom data of {id}\n").into_bytes()),
        metadata_endpoint: "http://127.0.0.1:7071".into(),
        env: vec![("EXTRA".into(), "1".into())],
    }
}

fn config(root: &Path, network: NetworkMode, subnet: Subnet) -> ProcessDriverConfig {
    let mut c = ProcessDriverConfig::new(root.join("instances"));
    // Outbound NAT is a host-wide nftables table: the multi-host e2e test covers it.
    c.outbound_nat = false;
    c.network = network;
    c.subnet = subnet;
    c.cgroup_parent = "shoal-test".into();
    c.destroy_grace = Duration::from_secs(2);
    c
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// For a test that cannot run on this host: prints `SKIPPED: <test>: <reason>` and the
/// test returns; with `SHOAL_REQUIRE_ALL=1` (CI: root, QEMU installed) it fails instead,
/// so CI proves every path ran. Cargo cannot mark a test skipped at run time.
///
/// The line goes to the process's stderr directly rather than through `eprintln!`, which
/// the test harness captures and shows only for failing tests or with `--nocapture`: a
/// plain `cargo test` shows it too.
fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var("SHOAL_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run here: {reason} (SHOAL_REQUIRE_ALL=1 requires every test to run)");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {reason}");
}

/// For a test that cannot run on some machine classes even as root (so CI on such a
/// machine could never run it): prints `SKIPPED: <test>: <reason> (…)` and the test
/// returns, also under `SHOAL_REQUIRE_ALL=1`. The reasons allowed are the ones its callers
/// name; every other missing prerequisite goes through [`skip_or_fail`].
fn skip_on_this_machine_class(test: &str, reason: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED: {test}: {reason} (cannot run on this machine class, even as root; allowed under SHOAL_REQUIRE_ALL)"
    );
}

/// One HTTP/1.1 GET with `Connection: close`; `None` if the connection fails.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls `GET path` until it answers 200.
async fn wait_http(addr: SocketAddr, path: &str) -> String {
    let start = Instant::now();
    loop {
        let p = path.to_owned();
        if let Ok(Some((200, body))) = tokio::task::spawn_blocking(move || http_get(addr, &p)).await
        {
            return body;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{addr}{path} did not answer within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// True once `/sys/class/net/{name}` is gone. The kernel unlists a deleted link (its name
/// and index are free, which is what the driver waits for) a moment before it removes the
/// sysfs entry, so the entry is given a short while to follow.
async fn link_gone(name: &str) -> bool {
    let path = Path::new("/sys/class/net").join(name);
    let start = Instant::now();
    while path.exists() {
        if start.elapsed() > Duration::from_secs(3) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn wait_gone(pid: u32) {
    let start = Instant::now();
    while pid_alive(pid) {
        assert!(start.elapsed() < DEADLINE, "pid {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cgroup_dirs(key: &InstanceKey) -> Vec<PathBuf> {
    ["cpu", "cpuacct", "memory", "."]
        .iter()
        .map(|h| {
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join("shoal-test")
                .join(&key.0)
        })
        .collect()
}

/// The full life of one instance; shared by both network modes.
async fn lifecycle(driver: &ProcessDriver, image: &Path, name: &str) {
    let k = key(name);
    let s = spec(k.clone(), image, 7);
    driver.provision(&s).await.expect("provision");
    let disk = driver.instance_dir(&k).join("disk");
    assert!(disk.join("shoal-web").is_file());

    let running = driver.start(&s).await.expect("start");
    assert_eq!(wait_http(running.endpoint, "/").await, "instance 7\n");
    assert_eq!(
        wait_http(running.endpoint, "/custom-data").await,
        "custom data of 7\n"
    );
    let env = wait_http(running.endpoint, "/env").await;
    assert!(
        env.contains(&format!("port={}", running.endpoint.port())),
        "{env}"
    );
    assert!(
        env.contains(&format!("private_ip={}", running.endpoint.ip())),
        "{env}"
    );
    assert!(
        driver.start(&s).await.is_err(),
        "a running instance cannot start twice"
    );

    let usage = driver
        .usage(&k)
        .await
        .expect("usage")
        .expect("running instance has usage");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    let log = std::fs::read_to_string(driver.log_path(&k)).expect("console log");
    assert!(log.contains("listening"), "console log: {log:?}");

    // Something the workload writes to its disk survives stop/start.
    std::fs::write(disk.join("written-by-instance"), "state").expect("write into disk");
    let pid = running.pid;
    driver
        .stop(&k, Duration::from_secs(5), false)
        .await
        .expect("stop");
    assert!(!pid_alive(pid), "process gone after stop");
    assert!(
        http_get(running.endpoint, "/").is_none(),
        "port closed after stop"
    );
    assert!(running.exited.await.contains("signal 15"));
    driver
        .stop(&k, Duration::from_secs(1), false)
        .await
        .expect("stop is idempotent");
    assert_eq!(driver.usage(&k).await.expect("usage"), None);

    let again = driver.start(&s).await.expect("start again");
    assert_eq!(again.endpoint, running.endpoint, "stop keeps the address");
    assert_eq!(wait_http(again.endpoint, "/").await, "instance 7\n");
    assert!(
        disk.join("written-by-instance").exists(),
        "same disk after restart"
    );

    driver.reimage(&s).await.expect("reimage");
    wait_gone(again.pid).await;
    assert!(
        !disk.join("written-by-instance").exists(),
        "reimage gives a fresh disk"
    );
    assert!(disk.join("README").exists());

    let third = driver.start(&s).await.expect("start after reimage");
    wait_http(third.endpoint, "/health").await;
    driver.destroy(&k).await.expect("destroy");
    wait_gone(third.pid).await;
    assert!(
        !driver.instance_dir(&k).exists(),
        "instance directory removed"
    );
    for d in cgroup_dirs(&k) {
        assert!(!d.exists(), "cgroup {} removed", d.display());
    }
    driver.destroy(&k).await.expect("destroy is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_lifecycle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let driver = ProcessDriver::new(config(tmp.path(), NetworkMode::HostPorts, Subnet::DEFAULT))
        .expect("driver");
    assert_eq!(driver.network_mode(), NetworkMode::HostPorts);
    assert!(driver.metadata_addrs().is_empty());
    lifecycle(&driver, &image, "hp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_lifecycle() {
    if !is_root() {
        return skip_or_fail("namespaces_lifecycle", "network namespaces need root");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let subnet = Subnet {
        base: Ipv4Addr::new(10, 231, 0, 0),
        prefix_len: 24,
    };
    let driver =
        ProcessDriver::new(config(tmp.path(), NetworkMode::Namespaces, subnet)).expect("driver");
    assert_eq!(
        driver.metadata_addrs(),
        vec![std::net::IpAddr::from(Ipv4Addr::new(10, 231, 0, 1))]
    );
    lifecycle(&driver, &image, "ns").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_instance_has_its_own_address_and_reaches_metadata() {
    if !is_root() {
        return skip_or_fail(
            "namespaced_instance_has_its_own_address_and_reaches_metadata",
            "network namespaces need root",
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let subnet = Subnet {
        base: Ipv4Addr::new(10, 232, 0, 0),
        prefix_len: 24,
    };
    let gateway = Ipv4Addr::new(10, 232, 0, 1);
    let driver =
        ProcessDriver::new(config(tmp.path(), NetworkMode::Namespaces, subnet)).expect("driver");

    // A stand-in metadata service on the gateway address.
    let meta = std::net::TcpListener::bind((gateway, 0)).expect("bind on gateway");
    let meta_port = meta.local_addr().expect("addr").port();

    let (ka, kb) = (key("ns-a"), key("ns-b"));
    let mut sa = spec(ka.clone(), &image, 1);
    sa.metadata_endpoint = format!("http://127.0.0.1:{meta_port}/metadata");
    // The workload reaches the metadata address from inside its namespace.
    sa.command = format!(
        "(exec 3<>/dev/tcp/{gateway}/{meta_port} && echo reached-metadata) ; exec ./shoal-web"
    );
    sa.command = format!("bash -c '{}'", sa.command);
    let sb = spec(kb.clone(), &image, 2);
    let ra = driver.start(&sa).await.expect("start a");
    let rb = driver.start(&sb).await.expect("start b");
    assert_ne!(
        ra.endpoint.ip(),
        rb.endpoint.ip(),
        "each instance has its own address"
    );
    assert_eq!(ra.endpoint.port(), 8080, "the image's port");
    assert_eq!(rb.endpoint.port(), 8080);
    assert_eq!(wait_http(ra.endpoint, "/").await, "instance 1\n");
    assert_eq!(wait_http(rb.endpoint, "/").await, "instance 2\n");
    let env = wait_http(ra.endpoint, "/env").await;
    assert!(
        env.contains(&format!(
            "metadata_endpoint=http://{gateway}:{meta_port}/metadata"
        )),
        "{env}"
    );
    meta.set_nonblocking(false).expect("blocking");
    let (conn, peer) = tokio::task::spawn_blocking(move || meta.accept())
        .await
        .expect("join")
        .expect("accept");
    drop(conn);
    assert_eq!(
        peer.ip(),
        ra.endpoint.ip(),
        "metadata reached from the instance's own address"
    );

    // Network usage is counted in the namespace.
    let usage = driver.usage(&ka).await.expect("usage").expect("running");
    assert!(
        usage.net_rx_bytes > 0 && usage.net_tx_bytes > 0,
        "{usage:?}"
    );

    let host_ifs = |ip: Ipv4Addr| format!("sh{:08x}", u32::from(ip));
    let netns = |ip: Ipv4Addr| {
        PathBuf::from("/run/shoal/netns").join(format!("shoal-{:08x}", u32::from(ip)))
    };
    let (ipa, ipb) = match (ra.endpoint.ip(), rb.endpoint.ip()) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => (a, b),
        _ => panic!("IPv4 expected"),
    };
    assert!(Path::new("/sys/class/net").join(host_ifs(ipa)).exists());
    assert!(netns(ipa).exists());

    // Deallocate releases the address; destroy leaves nothing.
    driver
        .stop(&ka, Duration::from_secs(2), true)
        .await
        .expect("deallocate");
    assert!(
        link_gone(&host_ifs(ipa)).await,
        "veth removed on deallocate"
    );
    assert!(!netns(ipa).exists(), "netns removed on deallocate");
    driver.destroy(&ka).await.expect("destroy a");
    driver.destroy(&kb).await.expect("destroy b");
    wait_gone(rb.pid).await;
    assert!(link_gone(&host_ifs(ipb)).await, "veth removed on destroy");
    assert!(!netns(ipb).exists(), "netns removed on destroy");
    // A freed address is unreachable from the host (and never routed off it).
    assert!(http_get(rb.endpoint, "/").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_adopts_live_process_after_driver_is_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let cfg = config(tmp.path(), NetworkMode::HostPorts, Subnet::DEFAULT);
    let k = key("recover");
    let s = spec(k.clone(), &image, 3);
    let (pid, endpoint) = {
        let driver = ProcessDriver::new(cfg.clone()).expect("driver");
        let r = driver.start(&s).await.expect("start");
        wait_http(r.endpoint, "/").await;
        (r.pid, r.endpoint)
    };
    // The "agent" is gone; the instance is not.
    assert!(pid_alive(pid));
    assert_eq!(wait_http(endpoint, "/").await, "instance 3\n");

    let driver = ProcessDriver::new(cfg).expect("driver after restart");
    let found = driver.recover().await.expect("recover");
    let mine: Vec<_> = found.into_iter().filter(|r| r.key == k).collect();
    assert_eq!(mine.len(), 1);
    let recovered = mine.into_iter().next().expect("one");
    assert_eq!(recovered.spec, s);
    let running = recovered.running.expect("adopted, still running");
    assert_eq!(running.pid, pid, "same process, not restarted");
    assert_eq!(running.endpoint, endpoint);
    assert!(
        driver.start(&s).await.is_err(),
        "an adopted instance counts as running"
    );

    // SAFETY: plain kill(2) on a pid this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let how = tokio::time::timeout(DEADLINE, running.exited)
        .await
        .expect("exited fires");
    assert!(how.contains("exited"), "{how}");

    // Dead now: recover reports it without a process, and start works again.
    let found = driver.recover().await.expect("recover again");
    assert!(found.iter().any(|r| r.key == k && r.running.is_none()));
    let again = driver.start(&s).await.expect("start after exit");
    assert_eq!(wait_http(again.endpoint, "/").await, "instance 3\n");
    driver.destroy(&k).await.expect("destroy");
    wait_gone(again.pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_command_line_runs_the_program_itself_and_a_missing_one_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let driver = ProcessDriver::new(config(tmp.path(), NetworkMode::HostPorts, Subnet::DEFAULT))
        .expect("driver");
    let k = key("plain");
    let mut s = spec(k.clone(), &image, 5);
    s.command = "./shoal-web --unused-flag=1".into();
    let r = driver.start(&s).await.expect("start");
    assert_eq!(wait_http(r.endpoint, "/").await, "instance 5\n");
    assert!(wait_http(r.endpoint, "/env")
        .await
        .contains(&format!("port={}", r.endpoint.port())));
    // The reported pid is the workload (not a shell waiting for it): signals, usage and
    // limits reach it directly.
    let exe = std::fs::read_link(format!("/proc/{}/exe", r.pid)).expect("exe");
    assert!(exe.ends_with("disk/shoal-web"), "{}", exe.display());
    driver
        .stop(&k, Duration::from_secs(5), false)
        .await
        .expect("stop");
    assert!(r.exited.await.contains("signal 15"));

    // A program that is not in the image still goes through the shell, which says why
    // in the console log.
    s.command = "./not-in-the-image".into();
    let r = driver.start(&s).await.expect("start");
    let how = tokio::time::timeout(DEADLINE, r.exited)
        .await
        .expect("exits");
    assert!(how.contains("status 127"), "{how}");
    let log = std::fs::read_to_string(driver.log_path(&k)).expect("console log");
    assert!(log.contains("not-in-the-image: not found"), "{log}");
    driver.destroy(&k).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exited_fires_on_kill_9_with_a_description() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let driver = ProcessDriver::new(config(tmp.path(), NetworkMode::HostPorts, Subnet::DEFAULT))
        .expect("driver");
    let k = key("kill9");
    let s = spec(k.clone(), &image, 4);
    let r = driver.start(&s).await.expect("start");
    wait_http(r.endpoint, "/").await;
    // SAFETY: plain kill(2) on a pid this test started.
    unsafe { libc::kill(r.pid as i32, libc::SIGKILL) };
    let how = tokio::time::timeout(DEADLINE, r.exited)
        .await
        .expect("exited fires");
    assert_eq!(how, "killed by signal 9 (SIGKILL)");
    wait_gone(r.pid).await;

    // A command that fails on its own reports its status.
    let mut bad = spec(key("exit3"), &image, 5);
    bad.command = "echo failing >&2; exit 3".into();
    let r = driver.start(&bad).await.expect("start");
    let how = tokio::time::timeout(DEADLINE, r.exited)
        .await
        .expect("exited fires");
    assert_eq!(how, "exited with status 3");
    let log = std::fs::read_to_string(driver.log_path(&bad.key)).expect("log");
    assert!(
        log.contains("failing"),
        "stderr goes to the console log: {log:?}"
    );
    driver.destroy(&k).await.expect("destroy");
    driver.destroy(&bad.key).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_what_ignores_sigterm_and_its_children() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let driver = ProcessDriver::new(config(tmp.path(), NetworkMode::HostPorts, Subnet::DEFAULT))
        .expect("driver");
    let k = key("stubborn");
    let mut s = spec(k.clone(), &image, 8);
    // The shell ignores SIGTERM (and so does everything it starts); a background child
    // writes its pid so the test can check that it goes too.
    s.command = "trap '' TERM; sleep 1000 & echo $! > child.pid; exec ./shoal-web".into();
    let r = driver.start(&s).await.expect("start");
    wait_http(r.endpoint, "/").await;
    let child_pid: u32 = std::fs::read_to_string(driver.instance_dir(&k).join("disk/child.pid"))
        .expect("child pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(pid_alive(child_pid));
    let t = Instant::now();
    driver
        .stop(&k, Duration::from_millis(300), false)
        .await
        .expect("stop");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "waited for the grace period"
    );
    assert!(
        !pid_alive(r.pid),
        "main process killed after the grace period"
    );
    wait_gone(child_pid).await;
    assert!(r.exited.await.contains("signal 9"));
    driver.destroy(&k).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_applied_when_cgroups_are_writable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let driver = ProcessDriver::new(config(tmp.path(), NetworkMode::HostPorts, Subnet::DEFAULT))
        .expect("driver");
    let caps = driver.capabilities();
    if caps.limits.starts_with("not enforced") {
        let test = "limits_are_applied_when_cgroups_are_writable";
        // Without root, cgroups are rarely writable: CI (root) must run this. As root,
        // only a host whose cgroup file system is read-only (e.g. an unprivileged
        // container) cannot, and no setup script can change that.
        return if is_root() {
            skip_on_this_machine_class(test, &caps.limits)
        } else {
            skip_or_fail(test, &caps.limits)
        };
    }
    let k = key("limits");
    let mut s = spec(k.clone(), &image, 6);
    s.vcpus = 2;
    s.memory_mb = 300;
    let r = driver.start(&s).await.expect("start");
    wait_http(r.endpoint, "/").await;
    let procs = |d: &Path| std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
    let v1_cpu = Path::new("/sys/fs/cgroup/cpu/shoal-test").join(&k.0);
    if v1_cpu.exists() {
        assert_eq!(
            std::fs::read_to_string(v1_cpu.join("cpu.cfs_quota_us"))
                .expect("quota")
                .trim(),
            "200000"
        );
        assert!(
            procs(&v1_cpu)
                .lines()
                .any(|l| l.trim() == r.pid.to_string()),
            "process joined the cpu cgroup"
        );
        let mem = Path::new("/sys/fs/cgroup/memory/shoal-test").join(&k.0);
        assert_eq!(
            std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
                .expect("limit")
                .trim(),
            (300u64 * 1024 * 1024).to_string()
        );
        assert!(
            procs(&mem).lines().any(|l| l.trim() == r.pid.to_string()),
            "process joined the memory cgroup"
        );
    } else {
        let v2 = Path::new("/sys/fs/cgroup/shoal-test").join(&k.0);
        assert_eq!(
            std::fs::read_to_string(v2.join("cpu.max"))
                .expect("cpu.max")
                .trim(),
            "200000 100000"
        );
        assert!(procs(&v2).lines().any(|l| l.trim() == r.pid.to_string()));
    }
    // CPU burnt by the workload shows up in usage. (How much CPU 200 ms of wall-clock
    // burning gets depends on what else the machine runs: only require that it counts.)
    let before = driver.usage(&k).await.expect("usage").expect("running");
    wait_http(r.endpoint, "/work?ms=200").await;
    let usage = driver.usage(&k).await.expect("usage").expect("running");
    assert!(
        usage.cpu_time_ns >= before.cpu_time_ns + 10_000_000,
        "{before:?} -> {usage:?}"
    );
    driver.destroy(&k).await.expect("destroy");
}

/// The cgroups `pid` runs in in the hierarchies the driver uses (v1 cpu, cpuacct and
/// memory, or v2), as `/proc/PID/cgroup` names them.
fn cgroups_of(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            // (On a v1 host, v2's line `0::/` is the unused unified hierarchy.)
            let used = (controllers.is_empty() && path != "/")
                || controllers
                    .split(',')
                    .any(|c| matches!(c, "cpu" | "cpuacct" | "memory"));
            used.then(|| path.to_owned())
        })
        .collect()
}

/// An instance an older agent started under the shared `shoal` parent is moved into the
/// install's own cgroups when a newer agent recovers it, limits and all; and an
/// install's parent name is made once and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_instances_move_from_an_older_agents_cgroups() {
    let test = "recovered_instances_move_from_an_older_agents_cgroups";
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let mut old = config(tmp.path(), NetworkMode::HostPorts, Subnet::DEFAULT);
    old.cgroup_parent = format!("shoal-test-old-{}", std::process::id());
    let probe = ProcessDriver::new(old.clone()).expect("driver");
    if probe.capabilities().limits.starts_with("not enforced") {
        let why = probe.capabilities().limits;
        return if is_root() {
            skip_on_this_machine_class(test, &why)
        } else {
            skip_or_fail(test, &why)
        };
    }
    drop(probe);
    let k = key("moved");
    let mut s = spec(k.clone(), &image, 4);
    s.vcpus = 2;
    s.memory_mb = 200;
    let pid = {
        let driver = ProcessDriver::new(old.clone()).expect("driver");
        let r = driver.start(&s).await.expect("start");
        wait_http(r.endpoint, "/").await;
        r.pid
    };
    let old_suffix = format!("/{}/{}", old.cgroup_parent, k.0);
    assert!(
        cgroups_of(pid).iter().all(|c| c == &old_suffix),
        "{:?}",
        cgroups_of(pid)
    );

    // The newer agent: a parent of the install's own, made once and kept.
    let root = tmp.path().join("instances");
    let parent =
        shoal_agent::driver::process::install_cgroup_parent(&root, "shoal-test").expect("name");
    assert!(parent.starts_with("shoal-test-") && parent.len() == "shoal-test-".len() + 8);
    assert_eq!(
        shoal_agent::driver::process::install_cgroup_parent(&root, "shoal-test").expect("again"),
        parent
    );
    let mut new = old.clone();
    new.cgroup_parent = parent.clone();
    new.legacy_cgroup_parent = Some(old.cgroup_parent.clone());
    let driver = ProcessDriver::new(new).expect("newer driver");
    let found = driver.recover().await.expect("recover");
    assert!(found.iter().any(|r| r.key == k && r.running.is_some()));
    let new_suffix = format!("/{parent}/{}", k.0);
    assert!(
        cgroups_of(pid).iter().all(|c| c == &new_suffix),
        "moved into {new_suffix}: {:?}",
        cgroups_of(pid)
    );
    let v1_cpu = Path::new("/sys/fs/cgroup/cpu").join(&parent).join(&k.0);
    if v1_cpu.exists() {
        assert_eq!(
            std::fs::read_to_string(v1_cpu.join("cpu.cfs_quota_us"))
                .expect("quota")
                .trim(),
            "200000",
            "the size's limits came along"
        );
    }
    for h in ["cpu", "cpuacct", "memory", "."] {
        let d = Path::new("/sys/fs/cgroup")
            .join(h)
            .join(&old.cgroup_parent)
            .join(&k.0);
        assert!(!d.exists(), "{} removed", d.display());
    }
    // Usage is read from where the instance now is.
    assert!(driver.usage(&k).await.expect("usage").is_some());
    driver.destroy(&k).await.expect("destroy");
    wait_gone(pid).await;
    for h in ["cpu", "cpuacct", "memory", "."] {
        for p in [&parent, &old.cgroup_parent] {
            let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(h).join(p));
        }
    }
}

/// How many instances the timing runs start (`SHOAL_MANY`, default 200).
fn many() -> u32 {
    std::env::var("SHOAL_MANY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Provisions and starts `n` instances at once, waits until all answer HTTP, prints
/// the timings, destroys them.
async fn start_many(mode: NetworkMode, subnet: Subnet, n: u32) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = image(tmp.path());
    let mut cfg = config(tmp.path(), mode, subnet);
    cfg.port_range = 10_000..=19_999;
    let driver = ProcessDriver::new(cfg).expect("driver");
    let specs: Vec<InstanceSpec> = (0..n)
        // Keys differ per mode: the two runs share the cgroup parent, and a start kills
        // whatever is left in its key's cgroup.
        .map(|i| spec(key(&format!("many-{mode:?}-{i}")), &image, i))
        .collect();
    let t0 = Instant::now();
    let tasks: Vec<_> = specs
        .iter()
        .cloned()
        .map(|s| {
            let d = driver.clone();
            tokio::spawn(async move {
                d.provision(&s).await.expect("provision");
                d.start(&s).await.expect("start")
            })
        })
        .collect();
    let mut running = Vec::new();
    for t in tasks {
        running.push(t.await.expect("join"));
    }
    let started = t0.elapsed();
    for (i, r) in running.iter().enumerate() {
        assert_eq!(wait_http(r.endpoint, "/").await, format!("instance {i}\n"));
    }
    let answering = t0.elapsed();
    let t1 = Instant::now();
    let tasks: Vec<_> = specs
        .iter()
        .map(|s| {
            let d = driver.clone();
            let k = s.key.clone();
            tokio::spawn(async move { d.destroy(&k).await.expect("destroy") })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    println!(
        "{mode:?}: {n} instances provisioned+started in {started:?} ({:?}/instance), all answering HTTP after {answering:?}; destroyed in {:?}",
        started / n,
        t1.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing run: 200 instances, host ports"]
async fn start_200_host_ports() {
    start_many(NetworkMode::HostPorts, Subnet::DEFAULT, many()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing run: 200 instances, namespaces (root)"]
async fn start_200_namespaces() {
    if !is_root() {
        return skip_or_fail("start_200_namespaces", "network namespaces need root");
    }
    start_many(
        NetworkMode::Namespaces,
        Subnet {
            base: Ipv4Addr::new(10, 233, 0, 0),
            prefix_len: 16,
        },
        many(),
    )
    .await;
}
