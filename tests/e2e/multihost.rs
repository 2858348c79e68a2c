//! Three hosts that really fail over: network namespaces joined by a bridge, made by the
//! test, each running its own Shoal (`shoal serve` on host a, `shoal agent` on b and c),
//! with instances in zones 1, 2 and 3 behind a balancer on host a. The test cuts host
//! b's link, heals it, kills b's agent and drains host c, and counts what a steady client
//! of the balancer saw throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
/// The hosts' network: the bridge has .254, host i has .i.
const NET: &str = "172.31.250";
const FRONT_PORT: u16 = 8000;
/// Host a's https listener, which agents join and follow (pinning its certificate).
const TLS_PORT: u16 = 7443;

fn https_url() -> String {
    format!("https://{NET}.1:{TLS_PORT}")
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Three network namespaces with an address each on one bridge (the root namespace
/// holds the bridge and reaches every host through it). Removed on drop.
struct Fabric {
    tag: String,
}

impl Fabric {
    fn new() -> Result<Fabric, String> {
        let tag = format!("{:04x}", std::process::id() & 0xffff);
        let f = Fabric { tag };
        let br = f.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{NET}.254/24"), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 1..=3 {
            let ns = f.netns(i);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link",
                "add",
                &f.link(i),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ])?;
            ip(&["link", "set", &f.link(i), "master", &br, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{NET}.{i}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(f)
    }

    fn bridge(&self) -> String {
        format!("shbr{}", self.tag)
    }

    fn netns(&self, i: usize) -> String {
        format!("shoal-host-{}-{i}", self.tag)
    }

    /// The bridge's end of host `i`'s cable.
    fn link(&self, i: usize) -> String {
        format!("shh{}{i}", self.tag)
    }

    fn cut(&self, i: usize) {
        ip(&["link", "set", &self.link(i), "down"]).expect("cut the link");
    }

    fn heal(&self, i: usize) {
        ip(&["link", "set", &self.link(i), "up"]).expect("heal the link");
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for i in 1..=3 {
            let _ = ip(&["link", "del", &self.link(i)]);
            let _ = ip(&["netns", "del", &self.netns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// `shoal agent` of host `name` (number `i` on the fabric) in its namespace.
struct Agent {
    i: usize,
    name: &'static str,
    zone: &'static str,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Agent {
    fn start(f: &Fabric, s: &Server, i: usize, name: &'static str, zone: &'static str) -> Agent {
        let mut a = Agent {
            i,
            name,
            zone,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        a.spawn(f, &join_token(s, "agent"));
        a
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self, f: &Fabric, token: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &f.netns(self.i)])
            .arg(shoal_bin())
            .args(["agent", "--servers", &https_url(), "--join-token", token])
            .args(["--host-name", self.name, "--zone", self.zone])
            .args(["--fault-domain", "0", "--heartbeat-interval", "1"])
            .args(["--address", &format!("{NET}.{}", self.i)])
            .args(["--instance-subnet", &format!("10.200.{}.0/24", self.i)])
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("SHOAL_STOP_GRACE_SECONDS", "3")
            .env("SHOAL_LOG", crate::harness::log_filter())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start shoal agent");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = wait_for_no_processes(&self.data_dir(), Duration::from_secs(20));
        }
        self.kill9();
        crate::harness::clean_up_after(&self.data_dir());
    }
}

/// What a client of the balancer saw: when each request started and whether it got an
/// instance's answer.
#[derive(Default)]
struct Seen {
    requests: Vec<(Instant, Result<u64, String>)>,
}

impl Seen {
    fn failed_after(&self, t: Instant) -> Vec<String> {
        self.requests
            .iter()
            .filter(|(at, _)| *at >= t)
            .filter_map(|(_, r)| r.clone().err())
            .collect()
    }
}

/// A client that asks the balancer on host a over a new connection per request, until
/// dropped.
struct Client {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start() -> Client {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let r = ask();
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .requests
                        .push((at, r));
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Client {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One request through the balancer: the answering instance's id.
fn ask() -> Result<u64, String> {
    match raw_request(
        "GET",
        &format!("http://{NET}.1:{FRONT_PORT}/"),
        None,
        "text/plain",
        None,
    ) {
        Some((200, body)) => body
            .trim()
            .strip_prefix("instance ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("not an instance's answer: {body}")),
        Some((status, body)) => Err(format!("{status}: {body}")),
        None => Err("no answer".into()),
    }
}

/// Waits until all 6 instances answer through the balancer again, stops `client`, and
/// asserts that nothing it sent since `started` failed.
fn all_answer_and_nothing_failed(client: Client, started: Instant, what: &str) {
    wait_until(
        Duration::from_secs(30),
        &format!("all 6 answer after {what}"),
        || answering().len() == 6,
    );
    let seen = client.finish();
    let failed = seen.failed_after(started);
    assert!(
        failed.is_empty(),
        "requests failed during {what}: {failed:?}"
    );
    eprintln!(
        "{what}: {} requests, none failed, in {:?}",
        seen.requests.len(),
        started.elapsed()
    );
}

/// The instances answering through the balancer, from enough requests to reach each.
fn answering() -> BTreeSet<u64> {
    (0..60).filter_map(|_| ask().ok()).collect()
}

/// `list-instances` as instance id → (host, zone, power state).
fn placement(s: &Server, rg: &str) -> BTreeMap<u64, (String, String, String)> {
    let v = s.cli_ok(&["vmss", "list-instances", "-g", rg, "-n", "web"]);
    v.as_array()
        .expect("array")
        .iter()
        .map(|i| {
            (
                i["instanceId"]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .expect("instanceId"),
                (
                    i["properties"]["shoal"]["host"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    i["zones"][0].as_str().unwrap_or_default().to_string(),
                    i["properties"]["shoal"]["powerState"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            )
        })
        .collect()
}

fn running_on(s: &Server, rg: &str, hosts: &[&str]) -> usize {
    placement(s, rg)
        .values()
        .filter(|(h, _, p)| p == "running" && hosts.contains(&h.as_str()))
        .count()
}

/// Instance ids of workload processes on each host, from the processes themselves.
fn processes(dirs: &[&Path]) -> Vec<u64> {
    let mut all: Vec<u64> = dirs.iter().flat_map(|d| running_instance_ids(d)).collect();
    all.sort_unstable();
    all
}

fn host_state(s: &Server, name: &str) -> String {
    s.cli_ok(&["host", "show", "-n", name])["properties"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An instance on host b reaches a listener outside every instance range (the bridge's
/// address in the root namespace, which has no route back to b's instances): only with
/// outbound NAT, and then with host b's address as its source. It reports what b's agent
/// endpoint answers it about itself and about its sibling.
fn outbound_goes_through_the_host_address(s: &Server, rg: &str) {
    let listener = std::net::TcpListener::bind(format!("{NET}.254:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let image = s.dir.path().join("dial");
    std::fs::create_dir_all(&image).expect("mkdir");
    std::fs::write(
        image.join("dial.py"),
        format!(
            r#"import http.server, os, socket, threading, time, urllib.error, urllib.request
# Also says what the agent endpoint answers this instance about itself and its sibling.
mine = os.environ["SHOAL_METADATA_ENDPOINT"]
base, me = mine.rsplit(".", 1)
sibling = base + "." + str(1 - int(me))
def status(url, headers={{}}):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0
def dial():
    while True:
        try:
            c = socket.create_connection(("{NET}.254", {port}), timeout=2)
            token = "/metadata/identity/oauth2/token?resource=https://management.azure.com/"
            said = "own=%d sibling=%d logs=%d imds=%d sibling-imds=%d bare=%d\n" % (
                status(mine + "/metadata/instance"),
                status(sibling + "/metadata/instance"),
                status(sibling.replace("/i/", "/logs/")),
                status(mine + token, {{"Metadata": "true"}}),
                status(sibling + token, {{"Metadata": "true"}}),
                status(mine + token))
            c.sendall(said.encode())
            c.close()
        except OSError:
            pass
        time.sleep(0.5)
threading.Thread(target=dial, daemon=True).start()
http.server.HTTPServer(("", int(os.environ["PORT"])), http.server.BaseHTTPRequestHandler).serve_forever()
"#
        ),
    )
    .expect("write dial.py");
    let dir = image.to_str().expect("utf-8 path");
    s.cli_ok(&[
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "apps",
        "--name",
        "dial",
        "--version",
        "1.0.0",
        "--dir",
        dir,
        "--command",
        "python3 dial.py",
        "--port",
        "8080",
    ]);
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "dial",
        "--image",
        "apps/dial:1.0.0",
        "--instance-count",
        "2",
        "--zones",
        "2",
    ]);
    listener.set_nonblocking(true).expect("nonblocking");
    let mut heard = None;
    wait_until(WAIT, "an instance on b connects out", || {
        if let Ok((mut conn, peer)) = listener.accept() {
            use std::io::Read;
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut said = String::new();
            let _ = conn.read_to_string(&mut said);
            heard = Some((peer.ip().to_string(), said));
        }
        heard.is_some()
    });
    let (from, said) = heard.expect("heard");
    assert_eq!(
        from,
        format!("{NET}.2"),
        "outbound traffic leaves with host b's address"
    );
    // An instance reads its own metadata, never its sibling's (same host, same range), nor
    // any console log.
    // Its identity (IMDS's way, `Metadata: true` from its own address) reaches the server,
    // which says the set has none (400); a sibling's is refused (403), and without the
    // header or the secret the agent refuses (401).
    assert_eq!(
        said.trim(),
        "own=200 sibling=403 logs=403 imds=400 sibling-imds=403 bare=401",
        "{said}"
    );
    s.cli_ok(&["vmss", "delete", "-g", rg, "-n", "dial"]);
}

/// A VM instance on host c answers at c's address: its forwarded port listens on
/// `--address`, so the test (another machine on the bridge) reaches it.
fn a_vm_on_c_is_reached_from_another_machine(s: &Server, rg: &str) {
    let img = match crate::vm::tiny_vm() {
        Ok(img) => img,
        Err(why) => return skip_or_fail("multihost: a VM on another host", why),
    };
    crate::vm::create_image(s, rg, img, "1.0.0", &["--port", "8080"]);
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "vm",
        "--image",
        "vms/tiny:1.0.0",
        "--instance-count",
        "1",
        "--vm-sku",
        "Shoal_1vCPU_512MB",
        "--zones",
        "3",
    ]);
    let addr = crate::vm::wait_answering(s, rg, 0);
    assert!(
        addr.starts_with(&format!("{NET}.3:")),
        "the VM on c is reached at c's address, not {addr}"
    );
    s.cli_ok(&["vmss", "delete", "-g", rg, "-n", "vm"]);
}

#[test]
fn three_hosts_in_three_zones_fail_over_heal_and_drain_with_no_failed_request() {
    const TEST: &str = "three_hosts_in_three_zones_fail_over_heal_and_drain_with_no_failed_request";
    if !root_or_skip(TEST, "network-namespace hosts need root") {
        return;
    }
    if !Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return skip_or_fail(
            TEST,
            "nftables (nft) is not installed; scripts/install-net-deps.sh installs it",
        );
    }
    let _g = serial();
    let fabric = match Fabric::new() {
        Ok(f) => f,
        Err(why) => return skip_or_fail(TEST, &why),
    };
    let a_ns = fabric.netns(1);
    let s = Server::start_under(
        &["ip", "netns", "exec", &a_ns],
        &format!("{NET}.1"),
        &[
            "--tls-listen",
            &format!("{NET}.1:{TLS_PORT}"),
            "--host-name",
            "a",
            "--zone",
            "1",
            "--fault-domain",
            "0",
            "--address",
            &format!("{NET}.1"),
            "--instance-subnet",
            "10.200.1.0/24",
            "--heartbeat-interval",
            "1",
            "--host-not-ready-after",
            "3",
            "--host-down-after",
            "6",
        ],
    );
    // The token names the https listener's certificate: an agent given a token whose
    // fingerprint is another certificate's refuses the server before sending anything.
    let token = join_token(&s, "agent");
    assert_eq!(
        token.split('.').count(),
        4,
        "the token carries a pin: {token}"
    );
    let forged = format!("{}{}", &token[..token.len() - 4], "0000");
    let stranger = tempfile::tempdir().expect("tempdir");
    let out = Command::new("ip")
        .args(["netns", "exec", &fabric.netns(2)])
        .arg(shoal_bin())
        .args(["agent", "--servers", &https_url(), "--join-token", &forged])
        .args(["--host-name", "x", "--network", "host-ports"])
        .arg("--data-dir")
        .arg(stranger.path())
        .stdin(Stdio::null())
        .output()
        .expect("run shoal agent");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("not the one the join token names"),
        "an agent trusted a certificate its token does not name: {said}"
    );
    assert!(
        !stranger.path().join("agent-credential.json").exists(),
        "nothing was saved"
    );

    let mut b = Agent::start(&fabric, &s, 2, "b", "2");
    let c = Agent::start(&fabric, &s, 3, "c", "3");
    wait_until(WAIT, "hosts a, b and c are Ready", || {
        let hosts = s.cli_ok(&["host", "list"]);
        let ready: BTreeSet<&str> = hosts
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["properties"]["state"] == "Ready")
            .filter_map(|h| h["name"].as_str())
            .collect();
        ready == BTreeSet::from(["a", "b", "c"])
    });
    let saved = std::fs::read_to_string(b.data_dir().join("agent-credential.json"))
        .expect("b's saved credential");
    assert!(
        saved.contains(&token.split('.').nth(3).expect("pin").to_string()),
        "b keeps the server's certificate pin with its credential: {saved}"
    );
    // A host whose instance range overlaps a routed host's is refused (409, subnet).
    let credential = host_credential(&s, "x");
    let overlapping = json!({"name": "x", "agent_url": "http://127.0.0.1:1", "driver": "process",
        "limits": "", "network": "", "vcpus": 1, "memory_mb": 1024, "last_seen": "", "host_id": "x",
        "address": format!("{NET}.9"), "subnet": "10.200.2.128/25"});
    let (status, body) = raw_request(
        "PUT",
        &format!("{}/shoal/v1/hosts/x", s.endpoint()),
        Some(&overlapping.to_string()),
        "application/json",
        Some(&credential),
    )
    .expect("register");
    assert!(
        status == 409 && body.contains("\"target\":\"subnet\"") && body.contains("overlaps"),
        "{status}: {body}"
    );
    let hosts = s.cli_ok(&["host", "list"]);
    assert_eq!(
        hosts.as_array().map(Vec::len),
        Some(3),
        "x was not registered"
    );
    for h in hosts.as_array().expect("hosts") {
        let i = match h["name"].as_str() {
            Some("a") => 1,
            Some("b") => 2,
            _ => 3,
        };
        assert_eq!(h["properties"]["address"], format!("{NET}.{i}"), "{h}");
        assert_eq!(h["properties"]["subnet"], format!("10.200.{i}.0/24"), "{h}");
        assert_eq!(h["properties"]["zone"], i.to_string(), "{h}");
    }

    // A set over zones 1, 2, 3 behind a balancer on host a's address.
    let rg = "zonesrg";
    s.create_group_and_image(rg);
    outbound_goes_through_the_host_address(&s, rg);
    a_vm_on_c_is_reached_from_another_machine(&s, rg);
    let sub = s.cli_ok(&["group", "show", "-n", rg])["id"]
        .as_str()
        .and_then(|id| id.split('/').nth(2))
        .expect("subscription")
        .to_string();
    let lb_id = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/web-lb"
    );
    let lb = json!({
        "location": "local",
        "properties": {
            "frontendIPConfigurations": [{"name": "fe", "properties": {"privateIPAddress": format!("{NET}.1")}}],
            "backendAddressPools": [{"name": "pool"}],
            "probes": [{"name": "probe", "properties": {"protocol": "Tcp", "port": 8080, "intervalInSeconds": 1, "numberOfProbes": 2}}],
            "loadBalancingRules": [{"name": "rule", "properties": {
                "protocol": "Tcp", "frontendPort": FRONT_PORT, "backendPort": 8080,
                "frontendIPConfiguration": {"id": format!("{lb_id}/frontendIPConfigurations/fe")},
                "backendAddressPool": {"id": format!("{lb_id}/backendAddressPools/pool")},
                "probe": {"id": format!("{lb_id}/probes/probe")}
            }}]
        }
    });
    let (status, body) = http_request(
        "PUT",
        &format!("{}{lb_id}?api-version=2024-05-01", s.endpoint()),
        Some(&lb.to_string()),
    )
    .expect("lb put");
    assert!(status == 200 || status == 201, "{status}: {body}");
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
        "6",
        "--zones",
        "1",
        "2",
        "3",
        "--lb",
        "web-lb",
    ]);
    wait_until(WAIT, "6 instances run", || {
        running_on(&s, rg, &["a", "b", "c"]) == 6
    });
    let placed = placement(&s, rg);
    let zone_of_host = BTreeMap::from([("a", "1"), ("b", "2"), ("c", "3")]);
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for (id, (host, zone, _)) in &placed {
        assert_eq!(
            zone_of_host.get(host.as_str()).copied(),
            Some(zone.as_str()),
            "instance {id} is labelled zone {zone} but runs on host {host}: {placed:?}"
        );
        *per_zone.entry(zone.clone()).or_default() += 1;
    }
    assert_eq!(
        per_zone,
        BTreeMap::from([("1".into(), 2), ("2".into(), 2), ("3".into(), 2)]),
        "{placed:?}"
    );
    let all: BTreeSet<u64> = placed.keys().copied().collect();
    wait_until(
        WAIT,
        "all 6 instances answer through the balancer on a",
        || answering() == all,
    );

    // Remote agents are usable: the server fetches the log of an instance on b from b's
    // agent; another machine (the test, on the bridge) is refused by that endpoint.
    let on_b = placed
        .iter()
        .find(|(_, (h, _, _))| h == "b")
        .map(|(id, _)| id.to_string())
        .expect("an instance on b");
    let out = s.cli(&[
        "vmss",
        "logs",
        "-g",
        rg,
        "-n",
        "web",
        "--instance-id",
        &on_b,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("instance {on_b} listening")),
        "the log of instance {on_b} on host b: {out:?}"
    );
    let agent_url = s.cli_ok(&["host", "show", "-n", "b"])["properties"]["agentUrl"]
        .as_str()
        .expect("agentUrl")
        .to_string();
    assert!(
        agent_url.starts_with(&format!("http://{NET}.2:")),
        "{agent_url}"
    );
    for path in ["/i/any/metadata/instance", "/logs/any", "/i/any/metrics"] {
        let (status, _) = raw_request(
            "GET",
            &format!("{agent_url}{path}"),
            None,
            "text/plain",
            None,
        )
        .expect("b's agent answers");
        assert_eq!(status, 403, "{path} of b's agent from another machine");
    }

    // kill -9 of b's agent: its instances keep answering; the restarted agent adopts them.
    let b_ids: BTreeSet<u64> = placed
        .iter()
        .filter(|(_, (h, _, _))| h == "b")
        .map(|(id, _)| *id)
        .collect();
    let b_pids = processes_under(&b.data_dir());
    b.kill9();
    assert_eq!(
        answering(),
        all,
        "with b's agent dead every instance still answers"
    );
    b.spawn(&fabric, "shoal1.spent.token");
    std::thread::sleep(Duration::from_secs(3));
    wait_until(WAIT, "b's restarted agent reports Ready", || {
        host_state(&s, "b") == "Ready"
    });
    assert_eq!(
        processes_under(&b.data_dir()),
        b_pids,
        "the restarted agent adopted b's instances instead of restarting them\n{}",
        tail(&b.log(), 20)
    );
    assert_eq!(processes(&[&b.data_dir()]), Vec::from_iter(b_ids.clone()));

    // Cut b's link: its instances are placed again on a and c, and a steady client
    // sees no failure once the balancer has noticed.
    let client = Client::start();
    std::thread::sleep(Duration::from_secs(1));
    let cut = Instant::now();
    fabric.cut(2);
    wait_until(
        Duration::from_secs(45),
        "6 instances run on a and c",
        || running_on(&s, rg, &["a", "c"]) == 6,
    );
    wait_until(Duration::from_secs(30), "all 6 answer again", || {
        answering().len() == 6
    });
    let restored = cut.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let seen = client.finish();
    let late = seen.failed_after(cut + Duration::from_secs(15));
    assert!(
        late.is_empty(),
        "requests started more than 15 s after the cut failed: {late:?}"
    );
    let failed_total = seen.failed_after(cut).len();
    eprintln!(
        "cut of host b: capacity restored and answering after {restored:?}; {failed_total} of {} requests failed (all within 15 s of the cut)",
        seen.requests.len()
    );
    assert_eq!(host_state(&s, "b"), "Down");
    let (_, log) = http_request(
        "GET",
        &format!(
            "{}/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01",
            s.endpoint()
        ),
        None,
    )
    .expect("activity log");
    let replaced: BTreeSet<u64> = serde_json::from_str::<Value>(&log).expect("activity log json")
        ["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let d = e["description"].as_str()?;
            d.contains("placed again on host")
                .then(|| d.strip_prefix("Instance ")?.split(' ').next()?.parse().ok())?
        })
        .collect();
    assert_eq!(
        replaced, b_ids,
        "the activity log names b's instances: {log}"
    );

    // Heal b: its agent stops the copies that were replaced; each id runs exactly once.
    fabric.heal(2);
    wait_until(WAIT, "b is Ready again", || host_state(&s, "b") == "Ready");
    let dirs = [s.data_dir(), b.data_dir(), c.data_dir()];
    let dirs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();
    wait_until(WAIT, "b's replaced copies are stopped", || {
        running_instance_ids(&b.data_dir()).is_empty()
    });
    assert_eq!(
        processes(&dirs),
        Vec::from_iter(all.clone()),
        "each instance id runs exactly once"
    );
    assert_eq!(running_on(&s, rg, &["a", "b", "c"]), 6);

    // Without a resiliency policy nothing moves back to b; with automatic zone
    // rebalancing on, the set evens out one instance at a time (a new one in zone 2
    // first, then one of a full zone leaves), and the steady client sees no failure.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        running_on(&s, rg, &["b"]),
        0,
        "instances moved on their own"
    );
    let client = Client::start();
    let set_url = format!(
        "{}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/web?api-version=2024-11-01",
        s.endpoint()
    );
    let (status, body) = http_request(
        "PATCH",
        &set_url,
        Some(r#"{"properties": {"resiliencyPolicy": {"automaticZoneRebalancingPolicy": {"enabled": true, "rebalanceStrategy": "Recreate", "rebalanceBehavior": "CreateBeforeDelete"}}}}"#),
    )
    .expect("patch");
    assert!(status == 200 || status == 202, "{status}: {body}");
    let rebalance_started = Instant::now();
    wait_until(WAIT, "the zones are even again (2, 2, 2)", || {
        let now = placement(&s, rg);
        let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
        for (_, z, p) in now.values() {
            if p == "running" {
                *per_zone.entry(z.clone()).or_default() += 1;
            }
        }
        now.len() == 6
            && per_zone == BTreeMap::from([("1".into(), 2), ("2".into(), 2), ("3".into(), 2)])
    });
    all_answer_and_nothing_failed(client, rebalance_started, "the zone rebalance");

    // Drain c with a steady client: its instances move with draining, nothing fails.
    let client = Client::start();
    std::thread::sleep(Duration::from_secs(1));
    let drain_started = Instant::now();
    s.cli_ok(&["host", "drain", "-n", "c"]);
    wait_until(WAIT, "no instance is left on c", || {
        let now = placement(&s, rg);
        now.len() == 6 && now.values().all(|(h, _, p)| h != "c" && p == "running")
    });
    wait_until(Duration::from_secs(30), "nothing runs on c", || {
        running_instance_ids(&c.data_dir()).is_empty()
    });
    all_answer_and_nothing_failed(client, drain_started, "the drain of host c");
    // A drain replaces (new ids, as Azure's scale-out then scale-in), so compare with
    // what the set has now: each of its 6 instances runs exactly once, none on c.
    let now = placement(&s, rg);
    assert!(now.values().all(|(h, _, _)| h != "c"), "{now:?}");
    assert_eq!(processes(&dirs), Vec::from_iter(now.keys().copied()));
    assert_eq!(now.len(), 6);
}
