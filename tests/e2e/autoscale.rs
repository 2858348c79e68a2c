//! Issue 4: autoscale by CPU, by a custom metric, and by schedule, with the real binary
//! and `examples/web`. Settings evaluate every second with second-long windows, so each
//! test takes seconds, not minutes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);
const SUB: &str = "00000000-0000-0000-0000-000000000000";

/// Two clients keeping instance 0 of set `web` in `rg` busy (one vCPU), until stopped or
/// dropped: a test that fails midway must not leave them running against whatever
/// instance the next test's server gives the same address.
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start(s: &Server, rg: &str) -> Self {
        let addr = s.instances(rg, "web")[0].address.clone().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let (stop, addr) = (stop.clone(), addr.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = http_get(&format!("http://{addr}/work?ms=500"));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `shoal vmss metrics` of set `web` in `rg`: the highest Percentage CPU of each second
/// over the last `offset`.
fn peak_cpu_query<'a>(rg: &'a str, offset: &'a str) -> [&'a str; 14] {
    [
        "vmss",
        "metrics",
        "-g",
        rg,
        "-n",
        "web",
        "--metric",
        "Percentage CPU",
        "--interval",
        "1s",
        "--offset",
        offset,
        "--aggregation",
        "Maximum",
    ]
}

/// What a failed wait shows: the CPU the server holds for the set, the autoscale
/// history and the end of the server's log.
fn explain(s: &Server, rg: &str) -> String {
    let cpu = s.cli(&peak_cpu_query(rg, "30s"));
    format!(
        "Percentage CPU, last 30 s: {}\nautoscale history: {:#?}\nserver log:\n{}",
        String::from_utf8_lossy(&cpu.stdout),
        history(s, rg),
        tail(&s.log(), 60)
    )
}

fn create_set(s: &Server, rg: &str, count: u32) {
    s.create_group_and_image(rg);
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
        "--vm-sku",
        "Shoal_1vCPU_512MB",
    ]);
}

fn running(s: &Server, rg: &str) -> usize {
    s.instances(rg, "web")
        .iter()
        .filter(|i| i.power == "running" && i.address.is_some())
        .count()
}

fn autoscale(s: &Server, rg: &str, min: u32, max: u32, count: u32) {
    s.cli_ok(&[
        "monitor",
        "autoscale",
        "create",
        "-g",
        rg,
        "--resource",
        "web",
        "-n",
        "auto",
        "--min-count",
        &min.to_string(),
        "--max-count",
        &max.to_string(),
        "--count",
        &count.to_string(),
        "--evaluation-interval",
        "1s",
    ]);
}

fn rule(s: &Server, rg: &str, condition: &str, scale: &str, cooldown: &str) {
    let mut args = vec![
        "monitor",
        "autoscale",
        "rule",
        "create",
        "-g",
        rg,
        "--autoscale-name",
        "auto",
        "--condition",
        condition,
        "--cooldown",
        cooldown,
        "--timegrain",
        "avg 1s",
        "--scale",
    ];
    args.extend(scale.split_whitespace());
    s.cli_ok(&args);
}

fn history(s: &Server, rg: &str) -> Vec<Value> {
    s.cli_ok(&["monitor", "autoscale", "history", "-g", rg, "-n", "auto"])["value"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn cpu_rule_scales_out_under_load_and_back_in_after_the_cooldown_explaining_each_step() {
    let _g = serial();
    let s = Server::start();
    create_set(&s, "cpu", 1);
    wait_until(WAIT, "instance 0 runs", || running(&s, "cpu") == 1);
    autoscale(&s, "cpu", 1, 2, 1);
    rule(&s, "cpu", "Percentage CPU > 50 avg 3s", "out 1", "5s");
    rule(&s, "cpu", "Percentage CPU < 15 avg 3s", "in 1", "5s");

    // Two clients keep instance 0's one vCPU busy.
    let load = CpuLoad::start(&s, "cpu");
    wait_until(WAIT, "CPU load scales the set out to 2", || {
        running(&s, "cpu") == 2
    });
    // The metric is queryable the way Azure Monitor answers (the set may scale out on
    // the first second of load, before that second's bucket has closed).
    let peak = || {
        let m = s.cli_ok(&peak_cpu_query("cpu", "2m"));
        let peak = m["value"][0]["timeseries"][0]["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|p| p["maximum"].as_f64())
            .fold(0.0, f64::max);
        (peak, m)
    };
    wait_until_or(
        WAIT,
        "the metric shows the peak",
        || peak().0 > 50.0,
        || {
            format!(
                "{}\nautoscale history: {:#?}\nserver log:\n{}",
                peak().1,
                history(&s, "cpu"),
                tail(&s.log(), 60)
            )
        },
    );
    load.stop();
    wait_until_or(
        WAIT,
        "without load the set scales back in to 1",
        || s.instances("cpu", "web").len() == 1,
        || explain(&s, "cpu"),
    );
    let h = history(&s, "cpu");
    let out = h
        .iter()
        .position(|e| e["outcome"] == "ScaleOut")
        .unwrap_or_else(|| panic!("no ScaleOut in {h:#?}"));
    let back = h
        .iter()
        .position(|e| e["outcome"] == "ScaleIn")
        .unwrap_or_else(|| panic!("no ScaleIn in {h:#?}"));
    assert!(out < back, "{h:#?}");
    assert!(
        h[out]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Percentage CPU") && r.contains("> 50")),
        "{:#}",
        h[out]
    );
    assert!(h[out]["metrics"][0]["value"]
        .as_f64()
        .is_some_and(|v| v > 50.0));
    assert!(
        h[back]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("< 15")),
        "{:#}",
        h[back]
    );
    assert_eq!(
        (
            h[back]["oldCapacity"].as_i64(),
            h[back]["newCapacity"].as_i64()
        ),
        (Some(2), Some(1))
    );
    // Both actions are in the activity log of the set.
    let set = format!(
        "/subscriptions/{SUB}/resourceGroups/cpu/providers/Microsoft.Compute/virtualMachineScaleSets/web"
    );
    let log = s.cli_ok(&[
        "monitor",
        "activity-log",
        "list",
        "--resource-id",
        &set,
        "--offset",
        "1h",
    ]);
    let ops: Vec<&str> = log
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["operationName"]["value"].as_str())
        .collect();
    assert!(
        ops.contains(&"Microsoft.Insights/AutoscaleSettings/Scaleup/Action"),
        "{ops:?}"
    );
    assert!(
        ops.contains(&"Microsoft.Insights/AutoscaleSettings/Scaledown/Action"),
        "{ops:?}"
    );
    // The scale-in waited out the cooldown after the scale-out.
    let t = |e: &Value| e["time"].as_str().unwrap_or_default().to_string();
    assert!(t(&h[back]) > t(&h[out]));
}

#[test]
fn a_custom_metric_pushed_over_http_drives_an_exact_count_rule() {
    let _g = serial();
    let s = Server::start();
    create_set(&s, "queue", 1);
    autoscale(&s, "queue", 1, 3, 1);
    rule(
        &s,
        "queue",
        "['shoal/custom'] queue length >= 100 avg 2s",
        "to 3",
        "1s",
    );
    let set = format!(
        "{}/subscriptions/{SUB}/resourceGroups/queue/providers/Microsoft.Compute/virtualMachineScaleSets/web",
        s.endpoint()
    );
    // A bad push is refused with the field named, and nothing scales.
    let (status, body) = http_request(
        "POST",
        &format!("{set}/metrics"),
        Some(&json!({"data": {"baseData": {"metric": "queue length", "namespace": "Microsoft.Compute/virtualMachineScaleSets", "series": [{"sum": 500}]}}}).to_string()),
    )
    .expect("answer");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("data.baseData.namespace"), "{body}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.instances("queue", "web").len(), 1);

    let push = json!({"data": {"baseData": {"metric": "queue length", "namespace": "shoal/custom",
        "dimNames": ["Queue"], "series": [{"dimValues": ["jobs"], "min": 150, "max": 150, "sum": 150, "count": 1}]}}})
    .to_string();
    wait_until(WAIT, "the queue length scales the set to exactly 3", || {
        let (status, _) =
            http_request("POST", &format!("{set}/metrics"), Some(&push)).expect("answer");
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(300));
        s.instances("queue", "web").len() == 3
    });
    let h = history(&s, "queue");
    let e = h
        .iter()
        .find(|e| e["outcome"] == "ScaleOut")
        .unwrap_or_else(|| panic!("{h:#?}"));
    assert_eq!(
        (e["oldCapacity"].as_i64(), e["newCapacity"].as_i64()),
        (Some(1), Some(3))
    );
    assert!(
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("queue length 150 >= 100")),
        "{e:#}"
    );
    // An instance pushes through its agent at $SHOAL_METADATA_ENDPOINT/metrics; the
    // series carries its instance id.
    let addr = s.instances("queue", "web")[0]
        .address
        .clone()
        .expect("address");
    let (_, env) = http_get(&format!("http://{addr}/env")).expect("env");
    let endpoint = env
        .lines()
        .find_map(|l| l.strip_prefix("metadata_endpoint="))
        .expect("metadata_endpoint")
        .to_string();
    let (status, body) = http_request(
        "POST",
        &format!("{endpoint}/metrics"),
        Some(r#"{"name": "queue length", "value": 7}"#),
    )
    .expect("agent answers");
    assert_eq!(status, 200, "{body}");
    // Prometheus text shows both series.
    let (_, text) = http_get(&format!("{}/metrics", s.endpoint())).expect("metrics");
    assert!(
        text.contains("metric=\"queue length\",instance=\"\""),
        "{text}"
    );
    assert!(
        text.contains("metric=\"queue length\",instance=\"0\"} 7"),
        "{text}"
    );
}

#[test]
fn a_recurrence_profile_switches_capacity_at_its_minute() {
    let _g = serial();
    let s = Server::start();
    create_set(&s, "sched", 1);
    autoscale(&s, "sched", 1, 1, 1);
    // The next whole minute at least 20 s away, in UTC.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let at = (now / 60 + 1) * 60 + if 60 - now % 60 < 20 { 60 } else { 0 };
    let days = [
        "thu", "fri", "sat", "sun", "mon", "tue", "wed", // 1970-01-01 was a Thursday
    ];
    let day = days[((at / 86_400) % 7) as usize];
    let hhmm = format!("{:02}:{:02}", (at % 86_400) / 3600, (at % 3600) / 60);
    // A recurrence lasts until another starts (last week's "rush" would still hold now):
    // `--end` adds az's companion that hands back to the default profile.
    let end = at + 600;
    let end_hhmm = format!("{:02}:{:02}", (end % 86_400) / 3600, (end % 3600) / 60);
    s.cli_ok(&[
        "monitor",
        "autoscale",
        "profile",
        "create",
        "-g",
        "sched",
        "--autoscale-name",
        "auto",
        "-n",
        "rush",
        "--count",
        "2",
        "--recurrence",
        "week",
        day,
        "--start",
        &hhmm,
        "--end",
        &end_hhmm,
        "--timezone",
        "UTC",
    ]);
    // Before the minute: the default profile holds it at 1.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.instances("sched", "web").len(), 1);
    wait_until(
        WAIT + Duration::from_secs(80),
        "the schedule raises capacity to 2",
        || s.instances("sched", "web").len() == 2,
    );
    let switched = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(switched >= at, "switched before {hhmm}");
    let h = history(&s, "sched");
    assert!(
        h.iter()
            .any(|e| e["profile"] == "rush" && e["newCapacity"] == 2),
        "{h:#?}"
    );
}

#[test]
fn the_balancer_reports_requests_per_second_per_instance() {
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("rps");
    let port = free_port().to_string();
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        "rps",
        "-n",
        "web",
        "--image",
        "apps/web:1.0.0",
        "--instance-count",
        "2",
        "--vm-sku",
        "Shoal_1vCPU_512MB",
        "--lb",
        "lb",
        "--lb-frontend-port",
        &port,
    ]);
    let front = format!("http://127.0.0.1:{port}/");
    wait_until(WAIT, "the balancer serves the set", || {
        http_get(&front).is_some_and(|(s, _)| s == 200)
    });
    wait_until(WAIT, "a Requests Per Second point above 0", || {
        for _ in 0..20 {
            let _ = http_get(&front);
        }
        let m = s.cli_ok(&[
            "vmss",
            "metrics",
            "-g",
            "rps",
            "-n",
            "web",
            "--metric",
            "Requests Per Second",
            "--interval",
            "1s",
            "--offset",
            "1m",
            "--aggregation",
            "Maximum",
        ]);
        m["value"][0]["timeseries"][0]["data"]
            .as_array()
            .is_some_and(|d| {
                d.iter()
                    .any(|p| p["maximum"].as_f64().is_some_and(|v| v > 0.0))
            })
    });

    // `Request Count` per instance (Azure Monitor's VMName split): once the counts have
    // arrived, 200 more requests add 200 to the sum of both instances' totals, and the
    // round robin gave each of them some.
    let set = format!(
        "/subscriptions/{SUB}/resourceGroups/rps/providers/Microsoft.Compute/virtualMachineScaleSets/web"
    );
    let per_instance = || -> Vec<(String, f64)> {
        let q = format!(
            "{}{set}/providers/Microsoft.Insights/metrics?metricnames=Request%20Count&aggregation=Total&interval=PT1H&$filter=VMName%20eq%20%27*%27",
            s.endpoint()
        );
        let (status, body) = http_get(&q).expect("metrics query");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        v["value"][0]["timeseries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let total = t["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["total"].as_f64())
                    .sum();
                (
                    t["metadatavalues"][0]["value"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    total,
                )
            })
            .collect()
    };
    let sum = |v: &[(String, f64)]| v.iter().map(|(_, t)| t).sum::<f64>();
    let mut before = per_instance();
    wait_until(WAIT, "the counts settle", || {
        std::thread::sleep(Duration::from_secs(2));
        let now = per_instance();
        let settled = sum(&now) == sum(&before);
        before = now;
        settled
    });
    for _ in 0..200 {
        assert!(http_get(&front).is_some_and(|(s, _)| s == 200));
    }
    wait_until(
        WAIT,
        "200 more requests counted, over both instances",
        || {
            let now = per_instance();
            let ids: Vec<&str> = now.iter().map(|(i, _)| i.as_str()).collect();
            sum(&now) - sum(&before) == 200.0
                && ids == ["0", "1"]
                && now.iter().all(|(_, t)| *t > 0.0)
        },
    );
    // And Prometheus has the latest count of each instance.
    let (_, text) = http_get(&format!("{}/metrics", s.endpoint())).expect("prometheus");
    for id in ["0", "1"] {
        assert!(
            text.lines().any(|l| l.starts_with("shoal_metric{")
                && l.contains("metric=\"request count\"")
                && l.contains(&format!("instance=\"{id}\""))),
            "{text}"
        );
    }
}

#[test]
fn target_tracking_follows_cpu_up_and_down() {
    let _g = serial();
    let s = Server::start();
    create_set(&s, "track", 1);
    wait_until(WAIT, "instance 0 runs", || running(&s, "track") == 1);
    s.cli_ok(&[
        "monitor",
        "autoscale",
        "create",
        "-g",
        "track",
        "--resource",
        "web",
        "-n",
        "auto",
        "--min-count",
        "1",
        "--max-count",
        "3",
        "--evaluation-interval",
        "1s",
        "--target-metric",
        "Percentage CPU",
        "--target-value",
        "40",
        "--target-window",
        "3s",
        "--target-cooldown",
        "3s",
    ]);
    let load = CpuLoad::start(&s, "track");
    // One busy vCPU is 100 % against a target of 40: ceil(1 × 100 / 40) = 3.
    wait_until(WAIT, "target tracking scales out to 3", || {
        s.instances("track", "web").len() == 3
    });
    load.stop();
    wait_until_or(
        WAIT,
        "idle, it comes back to the minimum",
        || s.instances("track", "web").len() == 1,
        || explain(&s, "track"),
    );
    let h = history(&s, "track");
    assert!(
        h.iter().any(|e| e["outcome"] == "ScaleOut"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("above target 40"))),
        "{h:#?}"
    );
    assert!(
        h.iter().any(|e| e["outcome"] == "ScaleIn"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("below target 40"))),
        "{h:#?}"
    );
}
