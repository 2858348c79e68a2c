//! Real etcd for tests: [`EtcdCluster::start`] runs one or more `etcd` members on free
//! loopback ports with their data in a temporary directory, waits until the cluster
//! answers `/health`, and kills every member when dropped. Members can be killed and
//! started again (same data, same ports) to test losing quorum.
//!
//! Shared by the store's conformance suite and the end-to-end tests (`#[path]` include).
//! Without an `etcd` binary, [`EtcdCluster::start_or_skip`] prints `SKIPPED: …` and
//! gives `None`, or panics under `SHOAL_REQUIRE_ALL=1`.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// A running etcd cluster owned by a test.
pub struct EtcdCluster {
    members: Vec<MemberProc>,
    cluster: String,
    _dir: tempfile::TempDir,
}

struct MemberProc {
    name: String,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether an `etcd` binary is on PATH.
pub fn etcd_installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl EtcdCluster {
    /// A cluster of `size` members, or `None` (with `SKIPPED:` printed) when `etcd` is not
    /// installed; panics instead under `SHOAL_REQUIRE_ALL=1`.
    pub fn start_or_skip(test: &str, size: usize) -> Option<EtcdCluster> {
        if !etcd_installed() {
            let reason = "etcd is not installed (scripts/install-etcd.sh installs it)";
            if std::env::var("SHOAL_REQUIRE_ALL").is_ok_and(|v| v == "1") {
                panic!("{test} cannot run here: {reason} (SHOAL_REQUIRE_ALL=1 requires every test to run)");
            }
            let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {reason}");
            return None;
        }
        Some(EtcdCluster::start(size))
    }

    /// Starts `size` members and waits until the cluster is healthy. The ports are
    /// picked free but only bound by etcd a moment later: a member that finds its port
    /// taken meanwhile (by another test's connection) exits, and the whole cluster is
    /// started again on new ports, up to three times.
    pub fn start(size: usize) -> EtcdCluster {
        let mut last = String::new();
        for attempt in 1..=3 {
            let mut c = EtcdCluster::launch(size);
            match c.healthy_within(Duration::from_secs(30)) {
                Ok(()) => return c,
                Err(logs) if logs.contains("address already in use") && attempt < 3 => {
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "etcd test cluster: a port was taken before etcd bound it; starting again on new ports"
                    );
                    last = logs;
                }
                Err(logs) => panic!("etcd did not become healthy:\n{logs}"),
            }
        }
        panic!("etcd did not become healthy:\n{last}")
    }

    fn launch(size: usize) -> EtcdCluster {
        // Memory-backed when possible: etcd fsyncs every write.
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::Builder::new()
                .prefix("shoal-etcd-")
                .tempdir_in("/dev/shm"),
            false => tempfile::Builder::new().prefix("shoal-etcd-").tempdir(),
        }
        .expect("temp dir for etcd");
        let members: Vec<MemberProc> = (0..size)
            .map(|i| MemberProc {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            members,
            cluster,
            _dir: dir,
        };
        for i in 0..size {
            c.spawn(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-token", "shoal-test"])
            .args(["--initial-cluster-state", "new"])
            // Fast elections on loopback, so losing a member costs little test time.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        m.child = Some(child);
    }

    /// `host:port` of every member's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `etcd://a,b,c`, as `shoal server --store` takes it.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Kills member `i` (SIGKILL); its data stays for [`EtcdCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its ports with its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Waits until every running member answers `/health` with `true`.
    pub fn wait_healthy(&mut self, deadline: Duration) {
        if let Err(logs) = self.healthy_within(deadline) {
            panic!("etcd did not become healthy:\n{logs}");
        }
    }

    /// Waits until every running member answers `/health` with `true`; the tail of each
    /// member's log when that does not happen within `deadline`, or a member exits.
    fn healthy_within(&mut self, deadline: Duration) -> Result<(), String> {
        let until = Instant::now() + deadline;
        loop {
            let exited = self.members.iter_mut().any(|m| {
                m.child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            });
            let all = self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .all(|m| health(m.client_port));
            if all {
                return Ok(());
            }
            if exited || Instant::now() > until {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| {
                        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        format!("--- {} ---\n{}", m.name, tail.join("\n"))
                    })
                    .collect();
                return Err(logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET /health` on a client port says `"health":"true"`.
fn health(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
