//! Several `shoal server` processes on a real etcd cluster (three members on loopback
//! ports, started by the test; see `crates/shoal-store/tests/support/etcd_cluster.rs`).
//!
//! - The leader is `kill -9`ed during a scale-out: another server leads within 15 s and
//!   the set converges with no duplicate instance and no stray process.
//! - etcd loses one member: writes go on; two: writes answer 503 with `Retry-After` in
//!   bounded time while reads answer; the members come back: writes resume, no restart.
//!
//! Without `etcd` installed they print `SKIPPED:` (or fail under `SHOAL_REQUIRE_ALL=1`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    ensure_web_built, free_port, http_get, image_args, repo_root, running_instance_ids, serial,
    shoal_bin, tail, vmss_args, wait_until, wait_until_or,
};

#[path = "../../crates/shoal-store/tests/support/etcd_cluster.rs"]
mod etcd_cluster;
use etcd_cluster::EtcdCluster;

const SUB: &str = "00000000-0000-0000-0000-000000000000";

/// A `shoal server` or `shoal agent` process with its own directory and log.
struct Proc {
    name: String,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Proc {
    /// `shoal server --name NAME --store URL` on a free port; waits for `/healthz`.
    fn server(name: &str, store: &str) -> Proc {
        Proc::server_with_env(name, store, &[])
    }

    /// [`Proc::server`] with extra environment variables.
    fn server_with_env(name: &str, store: &str, env: &[(&str, &str)]) -> Proc {
        Proc::server_with(name, store, env, &[])
    }

    /// [`Proc::server`] with extra environment variables and arguments.
    fn server_with(name: &str, store: &str, env: &[(&str, &str)], args: &[&str]) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(shoal_bin())
            .envs(env.iter().copied())
            .args(["server", "--name", name, "--store", store])
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("SHOAL_LOG", crate::harness::log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(dir.path()))
            .spawn()
            .expect("spawn shoal server");
        let p = Proc {
            name: name.into(),
            dir,
            port,
            child: Some(child),
        };
        crate::harness::register_data_dir(&p.endpoint(), &p.data_dir());
        wait_until(
            Duration::from_secs(30),
            "the server answers /healthz",
            || http_get(&format!("{}/healthz", p.endpoint())).is_some_and(|(s, _)| s == 200),
        );
        p
    }

    /// `shoal agent` (`what` "agent") or `shoal balancer` ("balancer") given the server
    /// URLs `servers` (`http://a,http://b`), joined with a join token made through `via`.
    fn follower(what: &str, servers: &str, via: &Proc) -> Proc {
        Proc::follower_named(what, "h1", servers, via)
    }

    /// [`Proc::follower`] with the host (or balancer) name `name`.
    fn follower_named(what: &str, name: &str, servers: &str, via: &Proc) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = via.cli_ok(&["host", "join-token", "create", "--role", what])["token"]
            .as_str()
            .expect("a join token")
            .to_string();
        let mut cmd = Command::new(shoal_bin());
        match what {
            "agent" => cmd.args(["agent", "--host-name", name]),
            _ => cmd.args(["balancer", "--name", name]),
        };
        let child = cmd
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--join-token", &token])
            .args(["--servers", servers])
            .env("SHOAL_STOP_GRACE_SECONDS", "3")
            .env("SHOAL_LOG", crate::harness::log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(dir.path()))
            .spawn()
            .expect("spawn a follower");
        Proc {
            name: what.into(),
            dir,
            port: 0,
            child: Some(child),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the process.
    fn signal(&self, signal: i32) {
        if let Some(c) = self.child.as_ref() {
            // SAFETY: a signal to our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `shoal ARGS` against this server; asserts success; stdout as JSON.
    fn cli_ok(&self, args: &[&str]) -> Value {
        let out = Command::new(shoal_bin())
            .args(args)
            .env("SHOAL_ENDPOINT", self.endpoint())
            .env("SHOAL_DATA_DIR", self.data_dir())
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .expect("run shoal");
        assert!(
            out.status.success(),
            "shoal {} failed:\nstdout: {}\nstderr: {}\n{} log:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.name,
            tail(&self.log(), 30)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Runs `shoal ARGS` against this server; whether it succeeded.
    fn try_cli(&self, args: &[&str]) -> bool {
        Command::new(shoal_bin())
            .args(args)
            .env("SHOAL_ENDPOINT", self.endpoint())
            .env("SHOAL_DATA_DIR", self.data_dir())
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn status(&self) -> Value {
        self.cli_ok(&["server", "status", "-o", "json"])
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // SAFETY: a signal to our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill9();
        crate::harness::clean_up_after(&self.data_dir());
    }
}

fn log_file(dir: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .expect("log file")
}

/// One raw HTTP/1.0 request: (status, whole answer with headers).
fn raw(method: &str, url: &str, body: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_at(rest.find('/')?);
    let auth = crate::harness::owner_token(host)
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, answer))
}

fn group_url(server: &Proc, rg: &str) -> String {
    format!(
        "{}/subscriptions/{SUB}/resourcegroups/{rg}?api-version=2021-04-01",
        server.endpoint()
    )
}

fn put_group(server: &Proc, rg: &str) -> Option<(u16, String)> {
    raw("PUT", &group_url(server, rg), r#"{"location":"local"}"#)
}

/// Three servers on three etcd members, a set of 6 behind a balancer under steady
/// traffic: `kill -9` of the leading server during a scale-out 6 → 12. Another server
/// leads within 15 s, the set converges to 12 with no duplicate instance and no orphan,
/// what was acknowledged before the kill is there, and the client saw no failed request.
#[test]
fn killing_the_leader_during_a_scale_out_hands_over_and_the_set_converges() {
    let _serial = serial();
    let test = "etcd::killing_the_leader_during_a_scale_out";
    let Some(cluster) = EtcdCluster::start_or_skip(test, 3) else {
        return;
    };
    ensure_web_built();
    let url = cluster.url();
    let mut s1 = Proc::server("s1", &url);
    wait_until(Duration::from_secs(15), "s1 leads", || {
        s1.status()["leader"]["name"] == "s1"
    });
    let s2 = Proc::server("s2", &url);
    let s3 = Proc::server("s3", &url);
    let status = s2.status();
    assert_eq!(status["leader"]["name"], "s1", "{status}");
    assert_eq!(status["self"]["name"], "s2");
    assert_eq!(status["self"]["isLeader"], false);
    assert_eq!(status["store"]["healthy"], true);
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(status["leader"]["url"], s1.endpoint());

    // Writes go through s2; the agent and the balancer follow s2, then s3.
    let followers = format!("{},{}", s2.endpoint(), s3.endpoint());
    let agent = Proc::follower("agent", &followers, &s2);
    let _balancer = Proc::follower_named("balancer", "lb1", &followers, &s2);
    s2.cli_ok(&["group", "create", "--name", "ha", "--location", "local"]);
    s2.cli_ok(&image_args("ha", "1.0.0"));
    let frontend = crate::balancing::create_balancer_with(|a| s2.cli_ok(a), "ha");
    crate::balancing::put_set_in_pool(&s2.endpoint(), "ha", 6, serde_json::json!({}));
    wait_until(
        Duration::from_secs(90),
        "six answer through the balancer",
        || crate::balancing::answering(&frontend, 60).len() == 6,
    );

    let mut failover = Duration::ZERO;
    let (ok, failed) = crate::balancing::steady_load(&frontend, || {
        s2.cli_ok(&[
            "vmss",
            "scale",
            "-g",
            "ha",
            "-n",
            "web",
            "--new-capacity",
            "12",
            "--no-wait",
        ]);
        s1.kill9();
        let killed = Instant::now();
        wait_until(
            Duration::from_secs(15),
            "another server leads after the kill",
            || {
                let leader = s2.status()["leader"]["name"].clone();
                leader == "s2" || leader == "s3"
            },
        );
        failover = killed.elapsed();
        wait_until(Duration::from_secs(120), "12 instances run", || {
            running_instance_ids(&agent.data_dir()) == (0..12).collect::<Vec<u64>>()
        });
    });
    eprintln!("failover took {failover:?}");
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across the failover",
        ok + failed
    );
    let set = s3.cli_ok(&["vmss", "show", "-g", "ha", "-n", "web"]);
    assert_eq!(set["sku"]["capacity"], 12, "{set}");
    let instances = s3.cli_ok(&["vmss", "list-instances", "-g", "ha", "-n", "web"]);
    let mut ids: Vec<u64> = instances
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["instanceId"].as_str().and_then(|v| v.parse().ok()))
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..12).collect::<Vec<u64>>(),
        "no duplicate, no orphan"
    );
    // Writes acknowledged before the kill are all there.
    let group = http_get(&group_url(&s3, "ha"));
    assert_eq!(group.map(|(s, _)| s), Some(200));
    after_the_failover(&s1, &s2, &s3);
    wait_until(
        Duration::from_secs(60),
        "all 12 answer through the balancer",
        || crate::balancing::answering(&frontend, 120).len() == 12,
    );
    drop(agent);
}

/// After `s1` died and `s2` or `s3` leads: the CLI given every server's URL goes on with
/// the next; both terms are in the activity log and the leader's Prometheus gauge; a
/// custom metric pushed to the server that does not lead reaches the leader, which runs
/// autoscale.
fn after_the_failover(s1: &Proc, s2: &Proc, s3: &Proc) {
    let leader_name = s2.status()["leader"]["name"]
        .as_str()
        .expect("a leader")
        .to_string();
    let (leader, other) = if leader_name == "s2" {
        (s2, s3)
    } else {
        (s3, s2)
    };

    let out = Command::new(shoal_bin())
        .args(["vmss", "show", "-g", "ha", "-n", "web"])
        .env(
            "SHOAL_ENDPOINT",
            format!("{},{}", s1.endpoint(), other.endpoint()),
        )
        .env("SHOAL_DATA_DIR", other.data_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run shoal");
    assert!(
        out.status.success(),
        "the CLI did not go on to the next server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not answer"),
        "it says it moved on: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let events = other.cli_ok(&["monitor", "activity-log", "list", "--offset", "1h"]);
    let leaders: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["operationName"]["value"] == "Shoal.Infrastructure/servers/lead/action")
        .filter_map(|e| e["caller"].as_str())
        .collect();
    assert!(
        leaders.contains(&"s1") && leaders.contains(&leader_name.as_str()),
        "both terms are in the activity log: {leaders:?}"
    );
    let gauge = |p: &Proc| {
        raw("GET", &format!("{}/metrics", p.endpoint()), "")
            .map(|(_, text)| text)
            .unwrap_or_default()
    };
    assert!(
        gauge(leader).contains(&format!("shoal_leader{{server=\"{leader_name}\"}} 1")),
        "{}",
        gauge(leader)
    );
    assert!(
        gauge(other).contains(&format!("shoal_leader{{server=\"{}\"}} 0", other.name)),
        "{}",
        gauge(other)
    );

    let set = format!(
        "{}/subscriptions/{SUB}/resourceGroups/ha/providers/Microsoft.Compute/virtualMachineScaleSets/web",
        other.endpoint()
    );
    let push = r#"{"data": {"baseData": {"metric": "queue length", "namespace": "shoal/custom", "series": [{"min": 150, "max": 150, "sum": 150, "count": 1}]}}}"#;
    let push_once = || {
        let (status, answer) = raw("POST", &format!("{set}/metrics"), push).expect("push");
        assert_eq!(status, 200, "{answer}");
    };
    push_once();
    // (A query's timespan ends before the current second: ask until that has passed.)
    // (A deadline, not a speed check: under a loaded CI machine the forward can take a
    // while after the failover. Custom metrics are samples sent again and again, as an
    // application would; only pushes to the server that does not lead, so the leader
    // holds one only if it was forwarded.)
    let mut polls = 0;
    wait_until_or(
        Duration::from_secs(30),
        "the leader holds the metric pushed to the other server",
        || {
            polls += 1;
            if polls % 10 == 0 {
                push_once();
            }
            leader
                .cli_ok(&[
                    "vmss",
                    "metrics",
                    "-g",
                    "ha",
                    "-n",
                    "web",
                    "--metric",
                    "queue length",
                    "--namespace",
                    "shoal/custom",
                    "--aggregation",
                    "Maximum",
                    "--interval",
                    "1s",
                    "--offset",
                    "2m",
                ])
                .to_string()
                .contains("\"maximum\":150")
        },
        || {
            format!(
                "leader {}:\n{}\nother {}:\n{}",
                leader.name,
                tail(&leader.log(), 30),
                other.name,
                tail(&other.log(), 30)
            )
        },
    );
}

/// etcd quorum: one member down changes nothing for the API; two down make writes 503
/// with `Retry-After` (not a hang, not a 500) while reads answer; the members back make
/// writes work again without restarting the server.
#[test]
fn losing_etcd_quorum_makes_writes_503_reads_answer_and_writes_resume() {
    let _serial = serial();
    let test = "etcd::losing_etcd_quorum";
    let Some(mut cluster) = EtcdCluster::start_or_skip(test, 3) else {
        return;
    };
    let s = Proc::server("s1", &cluster.url());
    let put_eventually = |rg: &str| {
        wait_until(Duration::from_secs(30), "the write succeeds", || {
            matches!(put_group(&s, rg), Some((200 | 201, _)))
        })
    };
    put_eventually("before");

    cluster.kill(2);
    put_eventually("one-member-down");

    cluster.kill(1);
    let started = Instant::now();
    let (status, answer) = put_group(&s, "no-quorum").expect("an answer");
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    assert!(answer.contains("\"ServiceUnavailable\""), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered, not hung"
    );
    let (status, body) = raw("GET", &group_url(&s, "before"), "").expect("an answer");
    assert_eq!(
        status,
        200,
        "reads answer without quorum: {body}\nafter {:?} without quorum; server log:\n{}",
        started.elapsed(),
        tail(&s.log(), 40)
    );

    cluster.restart(1);
    cluster.restart(2);
    put_eventually("after");
    let (status, _) = raw("GET", &group_url(&s, "after"), "").expect("an answer");
    assert_eq!(status, 200);
    assert!(!s.log().contains("panicked"), "{}", tail(&s.log(), 30));
}

/// `shoal store copy` moves a populated embedded store to etcd; a server on etcd then
/// serves the same resources and runs the same instances; a second copy is refused.
#[test]
fn store_copy_moves_an_install_from_redb_to_etcd() {
    let _g = serial();
    let Some(cluster) =
        EtcdCluster::start_or_skip("store_copy_moves_an_install_from_redb_to_etcd", 1)
    else {
        return;
    };
    let url = format!("etcd://{}", cluster.endpoints().join(","));
    let mut s = crate::harness::Server::start();
    let rg = "copyrg";
    s.create_group_and_image(rg);
    s.cli_ok(&vmss_args(rg, "2"));
    let before = s.cli_ok(&["vmss", "show", "-g", rg, "-n", "web"]);
    assert!(s.stop().success());

    let copy = |from: &std::path::Path| {
        Command::new(shoal_bin())
            .args(["store", "copy", "--from"])
            .arg(from)
            .args(["--to", &url])
            .stdin(Stdio::null())
            .output()
            .expect("run shoal store copy")
    };
    let out = copy(&s.data_dir());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Copied") && err.contains("keys"), "{err}");

    // The embedded store is set aside, so only etcd can answer what follows.
    std::fs::rename(
        s.data_dir().join("state.redb"),
        s.dir.path().join("state.redb.copied"),
    )
    .expect("set the redb file aside");
    // The same data directory (bundles, owner credential), the state now in etcd, named
    // by the config file's `store` key.
    let config = s.dir.path().join("shoal.toml");
    std::fs::write(&config, format!("store = \"{url}\"\n")).expect("write config");
    s.extra_args = vec!["--config".into(), config.display().to_string()];
    s.restart();
    let after = s.cli_ok(&["vmss", "show", "-g", rg, "-n", "web"]);
    assert_eq!(after["id"], before["id"]);
    assert_eq!(
        after["properties"]["uniqueId"],
        before["properties"]["uniqueId"]
    );
    assert_eq!(after["sku"]["capacity"], 2);
    wait_until(
        Duration::from_secs(60),
        "both instances run again from etcd",
        || {
            let insts = s.instances(rg, "web");
            insts.len() == 2 && insts.iter().all(|i| i.pid.is_some())
        },
    );
    assert!(s.stop().success());

    // etcd now holds an install: a second copy would overwrite it, so it is refused.
    let again = copy(&s.dir.path().join("state.redb.copied"));
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds"), "{err}");
}

/// An agent given three servers' URLs keeps its instances converged when the server it
/// uses is killed: it moves to the next one and takes the next change from there.
#[test]
fn an_agent_pointed_at_several_servers_follows_the_next_when_one_dies() {
    let _g = serial();
    let Some(cluster) = EtcdCluster::start_or_skip(
        "an_agent_pointed_at_several_servers_follows_the_next_when_one_dies",
        1,
    ) else {
        return;
    };
    ensure_web_built();
    let url = format!("etcd://{}", cluster.endpoints().join(","));
    let mut s1 = Proc::server("s1", &url);
    let s2 = Proc::server("s2", &url);
    let agent = Proc::follower(
        "agent",
        &format!("{},{}", s1.endpoint(), s2.endpoint()),
        &s1,
    );
    let agent_data = agent.data_dir();

    // Made through s1, which the agent uses first (the bundle is downloaded from it); the
    // upload is acknowledged only once s2 holds a copy too.
    let rg = "multi";
    s1.cli_ok(&["group", "create", "--name", rg, "--location", "local"]);
    s1.cli_ok(&image_args(rg, "1.0.0"));
    s1.cli_ok(&[
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "web",
        "--image",
        "apps/web:1.0.0",
        "--instance-count",
        "2",
        "--no-wait",
    ]);
    wait_until(
        Duration::from_secs(60),
        "two instances run on the agent",
        || running_instance_ids(&agent_data).len() == 2,
    );

    s1.kill9();
    // The change goes in through another server; the agent must find it there.
    wait_until(Duration::from_secs(30), "s2 takes writes", || {
        s2.try_cli(&[
            "vmss",
            "scale",
            "-g",
            rg,
            "-n",
            "web",
            "--new-capacity",
            "3",
            "--no-wait",
        ])
    });
    wait_until(Duration::from_secs(60), "the third instance runs", || {
        running_instance_ids(&agent_data).len() == 3
    });
    let log = agent.log();
    assert!(
        log.contains("switched to the next server"),
        "{}",
        tail(&log, 30)
    );
    assert!(
        s1.log().contains("bundle copied to another server"),
        "{}",
        tail(&s1.log(), 30)
    );

    // A server that joins later, and a new host that follows only it: s3 lacks the bundle
    // (its uploader is gone) and fetches it from s2 for the new host's instances.
    let s3 = Proc::server("s3", &url);
    let h2 = Proc::follower_named("agent", "h2", &s3.endpoint(), &s3);
    // New instances go to h2 only: h1 takes no more.
    wait_until(Duration::from_secs(30), "h2 is ready", || {
        s3.cli_ok(&["host", "list"])
            .as_array()
            .is_some_and(|hosts| {
                hosts
                    .iter()
                    .any(|h| h["name"] == "h2" && h["properties"]["state"] == "Ready")
            })
    });
    s3.cli_ok(&["host", "cordon", "-n", "h1"]);
    wait_until(Duration::from_secs(30), "s3 takes writes", || {
        s3.try_cli(&[
            "vmss",
            "scale",
            "-g",
            rg,
            "-n",
            "web",
            "--new-capacity",
            "5",
            "--no-wait",
        ])
    });
    wait_until_or(
        Duration::from_secs(90),
        "the new host runs instances from the bundle s3 fetched",
        || !running_instance_ids(&h2.data_dir()).is_empty(),
        || format!("s3:\n{}\nh2:\n{}", tail(&s3.log(), 20), tail(&h2.log(), 20)),
    );
    assert!(
        s3.log().contains("bundle fetched from another server"),
        "{}",
        tail(&s3.log(), 30)
    );
}

/// The markers a server's fence probe wrote (`debug/fence/<server>/<n>`, see
/// `SHOAL_DEBUG_FENCE_PROBE_MS`), as etcd's history has them: their mod revisions.
fn fence_markers(cluster: &EtcdCluster, server: &str) -> Vec<i64> {
    use base64::Engine;
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints().join(",")))
        .args([
            "get",
            "--prefix",
            &format!("/shoal/kv/debug/fence/{server}/"),
            "-w",
            "json",
        ])
        .output()
        .expect("run etcdctl");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .filter(|kv| {
                    kv["key"].as_str().is_some_and(|k| {
                        base64::engine::general_purpose::STANDARD
                            .decode(k)
                            .is_ok_and(|k| k.starts_with(b"/shoal/kv/debug/fence/"))
                    })
                })
                .filter_map(|kv| kv["mod_revision"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

/// The fence, shown by the store's history: the leader is paused (SIGSTOP) past its
/// lease while it writes (a debug probe writes a marker every 50 ms through the term's
/// store), another server takes over and writes, then the old one resumes and at once
/// tries to write again: that write is refused, and none of its markers comes after the
/// new leader's first.
#[test]
fn a_paused_leader_that_resumes_after_another_took_over_writes_nothing() {
    let _serial = serial();
    let test = "etcd::a_paused_leader_that_resumes_after_another_took_over_writes_nothing";
    let Some(cluster) = EtcdCluster::start_or_skip(test, 1) else {
        return;
    };
    let url = cluster.url();
    let probe = [("SHOAL_DEBUG_FENCE_PROBE_MS", "50")];
    let s1 = Proc::server_with_env("s1", &url, &probe);
    wait_until(Duration::from_secs(15), "s1 leads", || {
        s1.status()["leader"]["name"] == "s1"
    });
    let s2 = Proc::server_with_env("s2", &url, &probe);
    wait_until(Duration::from_secs(10), "s1 writes markers", || {
        !fence_markers(&cluster, "s1").is_empty()
    });

    s1.signal(libc::SIGSTOP);
    wait_until(
        Duration::from_secs(30),
        "s2 leads while s1 is paused",
        || s2.status()["leader"]["name"] == "s2",
    );
    wait_until(Duration::from_secs(10), "s2 writes markers", || {
        !fence_markers(&cluster, "s2").is_empty()
    });
    let before_resume = fence_markers(&cluster, "s1").len();
    s1.signal(libc::SIGCONT);
    wait_until(
        Duration::from_secs(15),
        "the resumed s1 tries a write and is refused",
        || s1.log().contains("fence probe: the write was refused"),
    );
    std::thread::sleep(Duration::from_secs(1));

    let old = fence_markers(&cluster, "s1");
    let new = fence_markers(&cluster, "s2");
    assert_eq!(
        old.len(),
        before_resume,
        "s1 wrote markers after it resumed: {}",
        tail(&s1.log(), 20)
    );
    let (last_old, first_new) = (
        old.iter().max().copied().unwrap_or_default(),
        new.iter().min().copied().unwrap_or_default(),
    );
    assert!(
        last_old < first_new,
        "a write of the deposed leader (revision {last_old}) landed after the new leader's first ({first_new})"
    );
    assert_eq!(s1.status()["leader"]["name"], "s2");
}

/// Servers on etcd serve one https certificate (made by the first, kept in the store), so
/// the fingerprint a join token pins holds on every server: agents and balancers joined
/// through one server can move to another.
#[test]
fn the_servers_of_an_install_share_one_https_certificate() {
    let _serial = serial();
    let test = "etcd::the_servers_of_an_install_share_one_https_certificate";
    let Some(cluster) = EtcdCluster::start_or_skip(test, 1) else {
        return;
    };
    let url = cluster.url();
    let tls = |p: u16| format!("127.0.0.1:{p}");
    let (p1, p2) = (free_port(), free_port());
    let s1 = Proc::server_with("s1", &url, &[], &["--tls-listen", &tls(p1)]);
    let s2 = Proc::server_with("s2", &url, &[], &["--tls-listen", &tls(p2)]);
    let pin = |p: &Proc| {
        p.cli_ok(&["host", "join-token", "create"])["token"]
            .as_str()
            .and_then(|t| t.rsplit('.').next())
            .expect("a token ending with the certificate's SHA-256")
            .to_string()
    };
    let (a, b) = (pin(&s1), pin(&s2));
    assert_eq!(a.len(), 64, "{a}");
    assert_eq!(a, b, "the two servers' tokens pin different certificates");
    let cert = |p: &Proc| std::fs::read(p.data_dir().join("tls/cert.pem")).expect("cert.pem");
    assert_eq!(cert(&s1), cert(&s2));
}
