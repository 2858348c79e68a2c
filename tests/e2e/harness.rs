//! Runs the real `shoal` binary for end-to-end tests: a server in a temporary data
//! directory on a free port, the CLI against it, and helpers that look at what a user
//! would (HTTP answers, processes on the machine).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Data directories of the servers tests started, by `127.0.0.1:PORT`: where
/// [`http_request`] finds the Owner credential to sign its requests with.
static DATA_DIRS: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
/// Tokens already fetched, by `host:port` and application id.
static TOKENS: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

/// Tells [`http_request`] which data directory the server at `endpoint` keeps its owner
/// credential in (servers started with [`Server`] are registered by themselves).
pub fn register_data_dir(endpoint: &str, data_dir: &Path) {
    let hostport = endpoint.trim_start_matches("http://").to_string();
    let mut dirs = DATA_DIRS.lock().unwrap_or_else(|p| p.into_inner());
    dirs.retain(|(h, _)| h != &hostport);
    dirs.push((hostport, data_dir.to_path_buf()));
}

/// The directory holding `credentials/owner.json` under `data_dir` (a server started
/// as `shoal server` by a test may keep its state one level down, in `server/`): the one
/// written last, which is the running server's.
pub fn credential_dir(data_dir: &Path) -> PathBuf {
    [data_dir.to_path_buf(), data_dir.join("server")]
        .into_iter()
        .filter_map(|d| {
            let modified = std::fs::metadata(d.join("credentials/owner.json"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((modified, d))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, d)| d)
        .unwrap_or_else(|| data_dir.to_path_buf())
}

/// A bearer token of the owner of the server at `hostport`, if a test started it: the
/// owner credential from its data directory exchanged at its token endpoint (cached).
pub fn owner_token(hostport: &str) -> Option<String> {
    let dir = DATA_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(h, _)| h == hostport)
        .map(|(_, d)| d.clone())?;
    let path = credential_dir(&dir).join("credentials/owner.json");
    let cred: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let (tenant, app, secret) = (
        cred["tenant"].as_str()?,
        cred["appId"].as_str()?,
        cred["password"].as_str()?,
    );
    let cached = TOKENS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(h, a, _)| h == hostport && a == app)
        .map(|(_, _, t)| t.clone());
    if cached.is_some() {
        return cached;
    }
    let form = format!(
        "grant_type=client_credentials&client_id={app}&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
        secret.replace('~', "%7E")
    );
    let (status, body) = raw_request(
        "POST",
        &format!("http://{hostport}/{tenant}/oauth2/v2.0/token"),
        Some(&form),
        "application/x-www-form-urlencoded",
        None,
    )?;
    if status != 200 {
        return None;
    }
    let token = serde_json::from_str::<Value>(&body).ok()?["access_token"]
        .as_str()?
        .to_string();
    TOKENS.lock().unwrap_or_else(|p| p.into_inner()).push((
        hostport.to_string(),
        app.to_string(),
        token.clone(),
    ));
    Some(token)
}

/// End-to-end tests share the host's instance network and cgroups: run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `shoal` binary under test: cargo's, or `SHOAL_E2E_BIN` (a release build for the
/// benchmarks that reuse these tests, or an older build to compare with).
pub fn shoal_bin() -> PathBuf {
    std::env::var_os("SHOAL_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shoal")))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// For a test that cannot run on this host: prints `SKIPPED: <test>: <reason>` and the
/// test returns; with `SHOAL_REQUIRE_ALL=1` (CI: root, QEMU installed) it fails instead,
/// so CI proves every path ran. Cargo cannot mark a test skipped at run time.
///
/// The line goes to the process's stderr directly rather than through `eprintln!`, which
/// the test harness captures and shows only for failing tests or with `--nocapture`: a
/// plain `cargo test` shows it too.
pub fn skip_or_fail(test: &str, reason: &str) {
    use std::io::Write;
    if std::env::var("SHOAL_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run here: {reason} (SHOAL_REQUIRE_ALL=1 requires every test to run)");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {reason}");
}

/// Whether the tests run as root; when not, `test` is skipped for `reason` (a failure
/// under `SHOAL_REQUIRE_ALL=1`, see [`skip_or_fail`]) and the answer is false.
pub fn root_or_skip(test: &str, reason: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip_or_fail(test, reason);
    false
}

/// Builds `examples/web` (release, as its symlink expects) once per test run.
pub fn ensure_web_built() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "shoal-web"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo");
        assert!(status.success(), "building examples/web failed");
    });
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    /// The address it listens on (127.0.0.1 unless it runs in a network namespace).
    pub ip: String,
    /// What the command is run under, e.g. `ip netns exec NS`.
    pub prefix: Vec<String>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Server {
        Self::start_under(&[], "127.0.0.1", args)
    }

    /// `shoal serve` run under `prefix` (e.g. `ip netns exec NS`), listening on `ip`.
    pub fn start_under(prefix: &[&str], ip: &str, args: &[&str]) -> Server {
        ensure_web_built();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Server {
            dir,
            port: free_port(),
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            ip: ip.to_string(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .expect("log file");
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(shoal_bin());
                c
            }
            None => Command::new(shoal_bin()),
        };
        let child = cmd
            .arg("serve")
            .arg("--listen")
            .arg(format!("{}:{}", self.ip, self.port))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args)
            .env("SHOAL_STOP_GRACE_SECONDS", "3")
            .env("SHOAL_LOG", crate::harness::log_filter())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn shoal serve");
        self.child = Some(child);
        register_data_dir(&self.endpoint(), &self.data_dir());
        let healthz = format!("{}/healthz", self.endpoint());
        let log = self.dir.path().join("serve.log");
        let child = self.child.as_mut().expect("just spawned");
        wait_until(
            Duration::from_secs(30),
            "the server answers /healthz",
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!(
                        "shoal serve exited ({status}) instead of starting:\n{}",
                        tail(&log, 30)
                    );
                }
                http_get(&healthz).is_some_and(|(s, _)| s == 200)
            },
        );
    }

    /// `kill -9` the server (instances keep running, as after a crash).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `kill -9` and returns at once, as a shell's `kill -9 PID` does: the process
    /// may still be dying (its descriptors, the store's lock among them, not yet closed).
    /// Returns the child to reap later.
    pub fn kill9_no_wait(&mut self) -> Child {
        let c = self.child.take().expect("server running");
        // SAFETY: sending a signal to our own child by pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGKILL);
        }
        c
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        // SAFETY: sending a signal to our own child by pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "shoal serve did not stop within 60 s after SIGTERM\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Runs `shoal ARGS` against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .args(args)
            .env("SHOAL_ENDPOINT", self.endpoint())
            .env("SHOAL_DATA_DIR", credential_dir(&self.data_dir()))
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    /// Runs `shoal ARGS`, asserts success, parses stdout as JSON (Null when empty).
    pub fn cli_ok(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "shoal {} failed:\nstdout: {}\nstderr: {}\nserver log tail:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("shoal {} printed non-JSON ({e}): {text}", args.join(" "))
            })
        }
    }

    pub fn create_group_and_image(&self, rg: &str) {
        self.cli_ok(&["group", "create", "--name", rg, "--location", "local"]);
        self.cli_ok(&image_args(rg, "1.0.0"));
    }

    /// `list-instances --output json` as (instance id, address, power state, pid).
    pub fn instances(&self, rg: &str, name: &str) -> Vec<Inst> {
        let v = self.cli_ok(&[
            "vmss",
            "list-instances",
            "-g",
            rg,
            "-n",
            name,
            "--output",
            "json",
        ]);
        v.as_array()
            .expect("array")
            .iter()
            .map(|i| Inst {
                id: i["instanceId"]
                    .as_str()
                    .expect("instanceId")
                    .parse()
                    .expect("numeric id"),
                address: i["properties"]["shoal"]["address"]
                    .as_str()
                    .map(String::from),
                power: i["properties"]["shoal"]["powerState"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                pid: i["properties"]["shoal"]["pid"].as_u64().map(|p| p as u32),
                protected: i["properties"]["protectionPolicy"]["protectFromScaleIn"]
                    .as_bool()
                    .unwrap_or(false),
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
        }
        clean_up_after(&self.data_dir());
    }
}

/// What a stopped (or killed) server or agent with data directory `data_dir` may have
/// left: its instances' processes, namespaces, disk mounts and cgroups. Whatever a failed
/// test left behind must not leak into the next one.
pub fn clean_up_after(data_dir: &Path) {
    for pid in processes_under(data_dir) {
        // SAFETY: killing a stray test process by pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    remove_namespaces(data_dir);
    unmount_under(data_dir);
    remove_cgroups(data_dir);
}

/// Removes the instance cgroups of the server whose data directory is `data_dir` (its
/// agent names their parent in `instances/.cgroup-parent`), once their processes are
/// gone, so test runs leave no cgroups behind.
fn remove_cgroups(data_dir: &Path) {
    let names = instances_dirs(data_dir).into_iter().filter_map(|d| {
        let name = std::fs::read_to_string(d.join(".cgroup-parent")).ok()?;
        let name = name.trim();
        (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then(|| name.to_owned())
    });
    for name in names {
        for h in ["cpu", "cpuacct", "memory", "."] {
            let parent = Path::new("/sys/fs/cgroup").join(h).join(&name);
            let Ok(children) = std::fs::read_dir(&parent) else {
                continue;
            };
            for c in children
                .flatten()
                .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
            {
                // Killed instances may take a moment to leave.
                for _ in 0..20 {
                    if std::fs::remove_dir(c.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

/// Detaches every mount under `dir` (instance disks of a server that was killed), deepest
/// first, so removing the test's directory neither fails nor deletes through a mount.
pub fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        let Ok(c) = std::ffi::CString::new(m) else {
            continue;
        };
        // SAFETY: detaching a mount this test's server made under its own directory.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

#[derive(Debug, Clone)]
pub struct Inst {
    pub id: u64,
    pub address: Option<String>,
    pub power: String,
    pub pid: Option<u32>,
    pub protected: bool,
}

/// The log filter the real processes of a test run with: `info`, or what
/// `SHOAL_E2E_LOG` says (e.g. `info,shoal_store::etcd=debug` to chase a flaky test).
pub fn log_filter() -> String {
    std::env::var("SHOAL_E2E_LOG").unwrap_or_else(|_| "info".into())
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `cond` until it holds, panicking with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    wait_until_or(timeout, what, cond, String::new);
}

/// [`wait_until`], the panic also telling what `explain` says then (the last answer, logs).
pub fn wait_until_or(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out after {timeout:?} waiting until {what}\n{}",
        explain()
    );
}

/// A minimal HTTP/1.1 GET over a fresh connection, with short timeouts: (status, body).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    http_request("GET", url, None)
}

/// An HTTP/1.1 request over a fresh connection: (status, body). A request to a server a
/// test started carries its owner's bearer token (see [`owner_token`]).
pub fn http_request(method: &str, url: &str, body: Option<&str>) -> Option<(u16, String)> {
    let hostport = url.strip_prefix("http://")?.split('/').next()?;
    let token = owner_token(hostport);
    raw_request(method, url, body, "application/json", token.as_deref())
}

/// [`http_request`] without the owner's token (`bearer: None`) or with the one given.
pub fn raw_request(
    method: &str,
    url: &str,
    body: Option<&str>,
    content_type: &str,
    bearer: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let addr: std::net::SocketAddr = hostport.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies: good enough for JSON answers of the API (one chunk) in tests.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Some((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Pids of processes whose working directory lies under `dir` (instances of a server).
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return vec![];
    };
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) {
                if cwd.starts_with(&dir) {
                    // Zombies keep no cwd; a live process does.
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// The instance id a process belongs to, from its environment.
pub fn instance_id_of(pid: u32) -> Option<u64> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("SHOAL_INSTANCE_ID="))
        .and_then(|v| v.parse().ok())
}

/// Instance ids of the workload processes (not their shells) running under `dir`.
pub fn running_instance_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = processes_under(dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "shoal-web")
                .unwrap_or(false)
        })
        .filter_map(instance_id_of)
        .collect();
    ids.sort_unstable();
    ids
}

/// Waits until no process runs under `dir`; returns what is left (pid, command line).
pub fn wait_for_no_processes(dir: &Path, timeout: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_under(dir);
        if left.is_empty() || Instant::now() > deadline {
            return left
                .into_iter()
                .map(|p| {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    let cwd = std::fs::read_link(format!("/proc/{p}/cwd")).unwrap_or_default();
                    (
                        p,
                        format!(
                            "{} (cwd {})",
                            String::from_utf8_lossy(&cmd).replace('\0', " "),
                            cwd.display()
                        ),
                    )
                })
                .collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stopped instances keep their network namespace (as a stopped VM keeps its address);
/// a test's temporary server or agent is gone for good, so its namespaces go too. Looks
/// in both layouts: `shoal serve`'s (`<data>/agent/instances`) and `shoal agent`'s
/// (`<data>/instances`).
pub fn remove_namespaces(data_dir: &Path) {
    for dir in instances_dirs(data_dir) {
        remove_namespaces_in(&dir);
    }
}

/// Where a server's agent keeps its instances (`shoal serve`'s, or an agent's own).
fn instances_dirs(data_dir: &Path) -> [PathBuf; 2] {
    [data_dir.join("agent/instances"), data_dir.join("instances")]
}

fn remove_namespaces_in(instances: &Path) {
    // A warm pool's namespaces (`--warm-namespaces`) of a server that was killed.
    if let Some(list) = std::fs::read_to_string(instances.join(".warm-namespaces"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        for a in list.as_array().into_iter().flatten() {
            if let Some(ns) = a["netns"].as_str() {
                remove_namespace(ns);
            }
        }
    }
    // Namespaces its agent made (or was making: `?`) and had not removed when it was killed
    // (`.netns-journal`, read as the agent reads it).
    if let Ok(journal) = std::fs::read_to_string(instances.join(".netns-journal")) {
        let mut made = std::collections::BTreeSet::new();
        for line in journal.lines() {
            let Some(address) = line
                .get(1..)
                .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            else {
                continue;
            };
            if line.starts_with('-') {
                made.remove(&address);
            } else {
                made.insert(address);
            }
        }
        for address in made {
            remove_namespace(&format!("shoal-{:08x}", u32::from(address)));
        }
    }
    let Ok(entries) = std::fs::read_dir(instances) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
            continue;
        };
        let Ok(state) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(ns) = state["net"]["netns"].as_str() {
            remove_namespace(ns);
        }
    }
}

fn remove_namespace(ns: &str) {
    let path = format!("/run/shoal/netns/{ns}");
    let Ok(c) = std::ffi::CString::new(path.clone()) else {
        return;
    };
    // SAFETY: detaching a bind mount of a namespace file this test's server made.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
    let _ = std::fs::remove_file(&path);
}

/// `shoal image create` of the example workload as `apps/web:<version>` in `rg`.
pub fn image_args<'a>(rg: &'a str, version: &'a str) -> [&'a str; 16] {
    [
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "apps",
        "--name",
        "web",
        "--version",
        version,
        "--dir",
        "examples/web",
        "--command",
        "./shoal-web",
        "--port",
        "8080",
    ]
}

/// `shoal vmss create` of set `web` in `rg` from `apps/web:1.0.0` with `count` instances.
pub fn vmss_args<'a>(rg: &'a str, count: &'a str) -> [&'a str; 10] {
    [
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "web",
        "--image",
        "apps/web:1.0.0",
        "--instance-count",
        count,
    ]
}

/// A join token of `s` for `role` ("agent" or "balancer"), made with `shoal host
/// join-token create`.
pub fn join_token(s: &Server, role: &str) -> String {
    let made = s.cli_ok(&["host", "join-token", "create", "--role", role]);
    made["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {made}"))
        .to_string()
}

/// The credential of a host named `name` that joined `s` with a fresh agent join token
/// (`POST /shoal/v1/join`), without running an agent.
pub fn host_credential(s: &Server, name: &str) -> String {
    let token = join_token(s, "agent");
    let (status, body) = raw_request(
        "POST",
        &format!("{}/shoal/v1/join", s.endpoint()),
        Some(&format!(r#"{{"token":"{token}","name":"{name}"}}"#)),
        "application/json",
        None,
    )
    .expect("join");
    assert_eq!(status, 200, "join as {name}: {body}");
    serde_json::from_str::<Value>(&body).expect("joined")["credential"]
        .as_str()
        .unwrap_or_else(|| panic!("no credential in {body}"))
        .to_string()
}

/// An empty file that every instance of `s` may append to: instances run as users of
/// their own, and the test's temporary directory is root's alone (its mode becomes 0711,
/// the `shared` directory in it 0777, the file 0666).
pub fn instance_writable(s: &Server, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let shared = s.dir.path().join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir shared");
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the test directory");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777))
        .expect("chmod shared");
    // Made here, writable by all: instances of different users append to the same file.
    let file = shared.join(name);
    std::fs::write(&file, "").expect("create the shared file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
        .expect("chmod the shared file");
    file
}
