//! Issue 12: a rolling upgrade behind the balancer, under steady client traffic, with the
//! real binary and the real workload.

use std::time::Duration;

use serde_json::{json, Value};

use crate::balancing::{answering, create_balancer, create_set, steady_load};
use crate::harness::*;

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn set_url(s: &Server, rg: &str) -> String {
    format!(
        "{}/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/web",
        s.endpoint()
    )
}

fn latest(s: &Server, rg: &str) -> Value {
    http_get(&format!(
        "{}/rollingUpgrades/latest?api-version=2024-07-01",
        set_url(s, rg)
    ))
    .and_then(|(_, body)| serde_json::from_str(&body).ok())
    .unwrap_or(Value::Null)
}

#[test]
fn a_new_image_version_rolls_out_in_batches_with_no_failed_request() {
    let _g = serial();
    let s = Server::start_with(&["--drain-timeout-seconds", "10"]);
    let rg = "rolling";
    s.create_group_and_image(rg);
    publish(&s, rg, "1.0.1");
    let frontend = create_balancer(&s, rg);
    create_set(
        &s,
        rg,
        10,
        json!({"properties": {
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {"maxBatchInstancePercent": 20}},
            "shoal": {"rollingUpgradeHealthTimeout": "PT30S"}
        }}),
    );
    wait_until(
        Duration::from_secs(60),
        "all ten answer through the balancer",
        || answering(&frontend, 100).len() == 10,
    );

    let image = format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.1");
    let (ok, failed) = steady_load(&frontend, || {
        let body = json!({"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}});
        let (status, text) = http_request(
            "PATCH",
            &format!("{}?api-version=2024-07-01", set_url(&s, rg)),
            Some(&body.to_string()),
        )
        .expect("API answers");
        assert!(status == 200 || status == 202, "PATCH: {status} {text}");
        wait_until(
            Duration::from_secs(150),
            "the rolling upgrade completes",
            || latest(&s, rg)["properties"]["runningStatus"]["code"] == "Completed",
        );
    });
    let done = latest(&s, rg);
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the rolling upgrade",
        ok + failed
    );
    let progress = &done["properties"]["progress"];
    assert_eq!(progress["successfulInstanceCount"], 10, "{done}");
    assert_eq!(progress["failedInstanceCount"], 0, "{done}");
    // In five batches of two, each recorded in the activity log.
    let events = http_get(&format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01",
        s.endpoint()
    ))
    .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
    .unwrap_or(Value::Null);
    let batches: Vec<&str> = events["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["eventName"]["value"] == "RollingUpgrade")
        .filter_map(|e| e["description"].as_str())
        .filter(|d| d.contains("draining and upgrading"))
        .collect();
    assert_eq!(batches.len(), 5, "{batches:#?}");
    assert!(
        batches.iter().all(|m| m.matches(',').count() == 1),
        "two instances per batch: {batches:#?}"
    );
    let listed = s.cli_ok(&[
        "vmss",
        "list-instances",
        "-g",
        rg,
        "-n",
        "web",
        "--output",
        "json",
    ]);
    let versions: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            i["properties"]["shoal"]["imageVersion"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(versions, vec!["1.0.1"; 10], "{listed}");
    assert_eq!(answering(&frontend, 100).len(), 10);
    // The CLI shows the same record.
    let cli = s.cli_ok(&[
        "vmss",
        "rolling-upgrade",
        "get-latest",
        "-g",
        rg,
        "-n",
        "web",
    ]);
    assert_eq!(
        cli["properties"]["runningStatus"]["code"], "Completed",
        "{cli}"
    );

    // Cancel mid-upgrade, on the same set and under the same load: no batch starts after
    // the cancel, the upgrade ends Cancelled, and a later model change rolls out anew.
    publish(&s, rg, "1.0.2");
    let (ok, failed) = steady_load(&frontend, || {
        patch_model(&s, rg, "1.0.2", "PT8S");
        wait_until(
            Duration::from_secs(60),
            "the first batch of the 1.0.2 upgrade is done",
            || on_version(&s, rg, "1.0.2") >= 2,
        );
        let (status, text) = http_request(
            "POST",
            &format!(
                "{}/rollingUpgrades/cancel?api-version=2024-07-01",
                set_url(&s, rg)
            ),
            None,
        )
        .expect("API answers");
        assert!(status == 200 || status == 202, "cancel: {status} {text}");
        wait_until(Duration::from_secs(30), "the upgrade is Cancelled", || {
            latest(&s, rg)["properties"]["runningStatus"]["code"] == "Cancelled"
        });
        let upgraded = on_version(&s, rg, "1.0.2");
        // Longer than the pause between batches: a batch would have started by now.
        std::thread::sleep(Duration::from_secs(12));
        assert_eq!(
            on_version(&s, rg, "1.0.2"),
            upgraded,
            "no batch starts after the cancel"
        );
        assert!(upgraded < 10, "the cancel came too late to show anything");
        // A later model change (back to the first version) starts an upgrade that completes.
        patch_model(&s, rg, "1.0.0", "PT0S");
        wait_until(
            Duration::from_secs(150),
            "the new upgrade completes",
            || {
                let l = latest(&s, rg);
                l["properties"]["runningStatus"]["code"] == "Completed"
                    && on_version(&s, rg, "1.0.0") == 10
            },
        );
    });
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed around the cancel",
        ok + failed
    );
}

/// Publishes `apps/web:<version>` of the example workload in `rg`.
fn publish(s: &Server, rg: &str, version: &str) {
    s.cli_ok(&image_args(rg, version));
}

/// PATCHes the set onto image `version` with `pause` between batches.
fn patch_model(s: &Server, rg: &str, version: &str, pause: &str) {
    let image = format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/{version}");
    let body = json!({"properties": {
        "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {
            "maxBatchInstancePercent": 20, "pauseTimeBetweenBatches": pause}},
        "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}});
    let (status, text) = http_request(
        "PATCH",
        &format!("{}?api-version=2024-07-01", set_url(s, rg)),
        Some(&body.to_string()),
    )
    .expect("API answers");
    assert!(status == 200 || status == 202, "PATCH: {status} {text}");
}

/// `shoal server`, `shoal agent` and `shoal balancer` as separate processes, so the
/// server alone can be `kill -9`ed (`shoal serve` holds the balancer too). The agent's
/// data lives under the server's data directory, so [`Server`]'s drop also stops any
/// instance left behind.
struct Split {
    s: Server,
    others: Vec<std::process::Child>,
}

impl Split {
    fn start() -> Split {
        ensure_web_built();
        let mut s = Server {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            child: None,
            extra_args: Vec::new(),
            ip: "127.0.0.1".into(),
            prefix: Vec::new(),
        };
        spawn_server(&mut s);
        let agent_token = join_token(&s, "agent");
        let agent = spawn(
            &s,
            &[
                "agent",
                "--host-name",
                "h1",
                "--drain-timeout-seconds",
                "10",
                "--join-token",
                &agent_token,
                "--data-dir",
            ],
            Some(s.data_dir().join("agent")),
            "agent.log",
        );
        let balancer_token = join_token(&s, "balancer");
        let balancer = spawn(
            &s,
            &[
                "balancer",
                "--name",
                "lb1",
                "--join-token",
                &balancer_token,
                "--data-dir",
            ],
            Some(s.data_dir().join("balancer")),
            "balancer.log",
        );
        Split {
            s,
            others: vec![agent, balancer],
        }
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        for c in &mut self.others {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn log_file(s: &Server, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.path().join(name))
        .expect("log file")
}

/// `shoal server` on the server's port and data directory; waits for `/healthz`.
fn spawn_server(s: &mut Server) {
    let child = std::process::Command::new(shoal_bin())
        .arg("server")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", s.port))
        .arg("--data-dir")
        .arg(s.data_dir().join("server"))
        .env("SHOAL_LOG", crate::harness::log_filter())
        .stdin(std::process::Stdio::null())
        .stdout(log_file(s, "serve.log"))
        .stderr(log_file(s, "serve.log"))
        .spawn()
        .expect("spawn shoal server");
    s.child = Some(child);
    crate::harness::register_data_dir(&s.endpoint(), &s.data_dir());
    wait_until(
        Duration::from_secs(30),
        "the server answers /healthz",
        || http_get(&format!("{}/healthz", s.endpoint())).is_some_and(|(st, _)| st == 200),
    );
}

fn spawn(
    s: &Server,
    args: &[&str],
    dir: Option<std::path::PathBuf>,
    log: &str,
) -> std::process::Child {
    let mut cmd = std::process::Command::new(shoal_bin());
    cmd.args(args);
    if let Some(d) = dir {
        cmd.arg(d);
    }
    cmd.env("SHOAL_ENDPOINT", s.endpoint())
        .env("SHOAL_STOP_GRACE_SECONDS", "3")
        .env("SHOAL_LOG", crate::harness::log_filter())
        .stdin(std::process::Stdio::null())
        .stdout(log_file(s, log))
        .stderr(log_file(s, log))
        .spawn()
        .expect("spawn shoal")
}

fn on_version(s: &Server, rg: &str, version: &str) -> usize {
    let listed = s.cli_ok(&[
        "vmss",
        "list-instances",
        "-g",
        rg,
        "-n",
        "web",
        "--output",
        "json",
    ]);
    listed
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["properties"]["shoal"]["imageVersion"] == version)
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_of_the_server_mid_upgrade_resumes_with_no_failed_request() {
    let _g = serial();
    let mut split = Split::start();
    let rg = "rollcrash";
    let s = &split.s;
    s.create_group_and_image(rg);
    s.cli_ok(&image_args(rg, "1.0.1"));
    let frontend = create_balancer(s, rg);
    create_set(
        s,
        rg,
        10,
        json!({"properties": {
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {"maxBatchInstancePercent": 20}},
            "shoal": {"rollingUpgradeHealthTimeout": "PT30S"}
        }}),
    );
    wait_until(
        Duration::from_secs(60),
        "all ten answer through the balancer",
        || answering(&frontend, 100).len() == 10,
    );
    let image = format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.1");
    let (ok, failed) = steady_load(&frontend, || {
        let body = json!({"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}});
        let (status, text) = http_request(
            "PATCH",
            &format!("{}?api-version=2024-07-01", set_url(&split.s, rg)),
            Some(&body.to_string()),
        )
        .expect("API answers");
        assert!(status == 200 || status == 202, "PATCH: {status} {text}");
        wait_until(Duration::from_secs(90), "two batches are upgraded", || {
            on_version(&split.s, rg, "1.0.1") >= 4
        });
        split.s.kill9();
        std::thread::sleep(Duration::from_secs(2));
        spawn_server(&mut split.s);
        wait_until(
            Duration::from_secs(150),
            "the rolling upgrade completes",
            || latest(&split.s, rg)["properties"]["runningStatus"]["code"] == "Completed",
        );
    });
    let s = &split.s;
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across the crash",
        ok + failed
    );
    let done = latest(s, rg);
    assert_eq!(
        done["properties"]["progress"]["successfulInstanceCount"], 10,
        "{done}"
    );
    assert_eq!(on_version(s, rg, "1.0.1"), 10);
}

#[test]
fn a_version_that_never_runs_faults_after_one_batch_and_rolls_back() {
    let _g = serial();
    let s = Server::start_with(&["--drain-timeout-seconds", "10"]);
    let rg = "rollbad";
    s.create_group_and_image(rg);
    // 1.0.2 exits at once: its instances never become healthy.
    s.cli_ok(&[
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "apps",
        "--name",
        "web",
        "--version",
        "1.0.2",
        "--dir",
        "examples/web",
        "--command",
        "exit 3",
        "--port",
        "8080",
    ]);
    let frontend = create_balancer(&s, rg);
    create_set(
        &s,
        rg,
        10,
        json!({"properties": {
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {
                "maxBatchInstancePercent": 20, "rollbackFailedInstancesOnPolicyBreach": true}},
            "shoal": {"rollingUpgradeHealthTimeout": "PT30S"}
        }}),
    );
    wait_until(
        Duration::from_secs(60),
        "all ten answer through the balancer",
        || answering(&frontend, 100).len() == 10,
    );
    let image = format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.2");
    let (ok, failed) = steady_load(&frontend, || {
        let body = json!({"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}});
        let (status, text) = http_request(
            "PATCH",
            &format!("{}?api-version=2024-07-01", set_url(&s, rg)),
            Some(&body.to_string()),
        )
        .expect("API answers");
        assert!(status == 200 || status == 202, "PATCH: {status} {text}");
        wait_until(
            Duration::from_secs(120),
            "the rolling upgrade faults",
            || latest(&s, rg)["properties"]["runningStatus"]["code"] == "Faulted",
        );
        wait_until(Duration::from_secs(60), "the batch serves again", || {
            answering(&frontend, 100).len() == 10
        });
    });
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    let done = latest(&s, rg);
    assert_eq!(
        done["properties"]["error"]["code"],
        "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade",
        "{done}"
    );
    assert_eq!(
        done["properties"]["progress"]["failedInstanceCount"], 2,
        "{done}"
    );
    let listed = s.cli_ok(&[
        "vmss",
        "list-instances",
        "-g",
        rg,
        "-n",
        "web",
        "--output",
        "json",
    ]);
    let versions: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            i["properties"]["shoal"]["imageVersion"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        versions,
        vec!["1.0.0"; 10],
        "the batch went back, the rest were never touched"
    );
}

/// Instances running and reported healthy, as the API lists them.
fn healthy_serving(s: &Server, rg: &str) -> usize {
    let url = format!(
        "{}/virtualMachines?$expand=instanceView&api-version=2024-07-01",
        set_url(s, rg)
    );
    let Some((200, body)) = http_get(&url) else {
        return 0;
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["value"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| {
                    i["properties"]["shoal"]["powerState"] == "running"
                        && i["properties"]["instanceView"]["vmHealth"]["status"]["code"]
                            == "HealthState/healthy"
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_resize_with_max_surge_never_drops_below_the_count() {
    let _g = serial();
    let s = Server::start_with(&["--drain-timeout-seconds", "10"]);
    let rg = "rollsurge";
    s.create_group_and_image(rg);
    let frontend = create_balancer(&s, rg);
    create_set(
        &s,
        rg,
        10,
        json!({"properties": {
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {
                "maxBatchInstancePercent": 20, "maxSurge": true}},
            "shoal": {"rollingUpgradeHealthTimeout": "PT30S"}
        }}),
    );
    wait_until(Duration::from_secs(60), "all ten are healthy", || {
        healthy_serving(&s, rg) == 10 && answering(&frontend, 100).len() == 10
    });
    let mut lowest = usize::MAX;
    let (ok, failed) = steady_load(&frontend, || {
        let body = json!({"sku": {"name": "Shoal_2vCPU_2048MB"}});
        let (status, text) = http_request(
            "PATCH",
            &format!("{}?api-version=2024-07-01", set_url(&s, rg)),
            Some(&body.to_string()),
        )
        .expect("API answers");
        assert!(status == 200 || status == 202, "PATCH: {status} {text}");
        // Sampled every 100 ms until the upgrade ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(150);
        loop {
            lowest = lowest.min(healthy_serving(&s, rg));
            if latest(&s, rg)["properties"]["runningStatus"]["code"] == "Completed" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the upgrade did not complete: {}",
                latest(&s, rg)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(
        lowest >= 10,
        "only {lowest} healthy instances served at one point"
    );
    wait_until(
        Duration::from_secs(60),
        "the replaced instances are gone",
        || s.instances(rg, "web").len() == 10,
    );
    let listed = s.cli_ok(&[
        "vmss",
        "list-instances",
        "-g",
        rg,
        "-n",
        "web",
        "--output",
        "json",
    ]);
    let sizes: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            i["properties"]["hardwareProfile"]["vmSize"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(sizes, vec!["Shoal_2vCPU_2048MB"; 10], "{listed}");
    // Each running process has the new size's limits, not only the new label.
    for inst in s.instances(rg, "web") {
        let pid = inst.pid.expect("a running instance has a pid");
        match cgroup_limits(pid) {
            Some((cpu_quota_us, memory_bytes)) => {
                assert_eq!(cpu_quota_us, 200_000, "instance {} CPU quota", inst.id);
                assert_eq!(memory_bytes, 2048 << 20, "instance {} memory limit", inst.id);
            }
            None => {
                return skip_or_fail(
                    "a_resize_with_max_surge_never_drops_below_the_count (limits)",
                    "instances run without cgroup limits here (needs root and a writable cgroup file system)",
                )
            }
        }
    }
}

/// The CPU quota (µs per 100 ms period) and memory limit (bytes) of the cgroups `pid`
/// runs in (v1 or v2), or `None` when it runs in no limited cgroup.
fn cgroup_limits(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path_of = |controller: &str| {
        text.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
            names
                .split(',')
                .any(|n| n == controller)
                .then(|| path.to_string())
        })
    };
    let read = |p: String| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if let (Some(cpu), Some(mem)) = (path_of("cpu"), path_of("memory")) {
        let quota = read(format!("/sys/fs/cgroup/cpu{cpu}/cpu.cfs_quota_us"))?;
        let limit = read(format!("/sys/fs/cgroup/memory{mem}/memory.limit_in_bytes"))?;
        return Some((quota.parse().ok()?, limit.parse().ok()?));
    }
    let unified = path_of("")?;
    let cpu_max = read(format!("/sys/fs/cgroup{unified}/cpu.max"))?;
    let limit = read(format!("/sys/fs/cgroup{unified}/memory.max"))?;
    let quota = cpu_max.split_whitespace().next()?.parse().ok()?;
    Some((quota, limit.parse().ok()?))
}

#[test]
fn automatic_os_upgrade_rolls_a_published_version_out_and_a_bad_one_back() {
    let _g = serial();
    let s = Server::start_with(&["--drain-timeout-seconds", "10"]);
    let rg = "rollauto";
    s.create_group_and_image(rg);
    let frontend = create_balancer(&s, rg);
    let definition = format!(
        "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web"
    );
    create_set(
        &s,
        rg,
        5,
        json!({"properties": {
            "upgradePolicy": {"mode": "Manual",
                "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": true}},
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": definition}}},
            "shoal": {"rollingUpgradeHealthTimeout": "PT30S"}
        }}),
    );
    wait_until(
        Duration::from_secs(60),
        "all five answer through the balancer",
        || answering(&frontend, 50).len() == 5,
    );
    let publish = |version: &str, command: &str| {
        s.cli_ok(&[
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
            command,
            "--port",
            "8080",
        ]);
    };
    let (ok, failed) = steady_load(&frontend, || {
        // Published, then rolled out with no call.
        publish("1.0.1", "./shoal-web");
        wait_until(Duration::from_secs(90), "1.0.1 runs everywhere", || {
            on_version(&s, rg, "1.0.1") == 5
                && latest(&s, rg)["properties"]["runningStatus"]["code"] == "Completed"
        });
        // A version whose instances never run: rolled back on its own.
        publish("1.0.2", "exit 3");
        wait_until(Duration::from_secs(90), "the 1.0.2 upgrade faults", || {
            latest(&s, rg)["properties"]["runningStatus"]["code"] == "Faulted"
        });
        wait_until(
            Duration::from_secs(60),
            "every instance serves 1.0.1 again",
            || on_version(&s, rg, "1.0.1") == 5 && answering(&frontend, 50).len() == 5,
        );
        // The rollback put the set itself back on 1.0.1: a scale-out does not bring the
        // bad version back.
        s.cli_ok(&[
            "vmss",
            "scale",
            "-g",
            rg,
            "-n",
            "web",
            "--new-capacity",
            "6",
        ]);
        wait_until(
            Duration::from_secs(60),
            "the sixth instance serves 1.0.1",
            || on_version(&s, rg, "1.0.1") == 6 && answering(&frontend, 50).len() == 6,
        );
    });
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    let history = http_get(&format!(
        "{}/osUpgradeHistory?api-version=2024-07-01",
        set_url(&s, rg)
    ))
    .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
    .unwrap_or(Value::Null);
    let entries = history["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 2, "{history}");
    assert_eq!(entries[0]["properties"]["startedBy"], "Platform");
    assert_eq!(entries[0]["properties"]["runningStatus"]["code"], "Faulted");
    assert_eq!(
        entries[1]["properties"]["runningStatus"]["code"],
        "Completed"
    );
}
