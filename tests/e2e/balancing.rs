//! Issue 3: load balancing, health, automatic repair, draining.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
const SUB: &str = "00000000-0000-0000-0000-000000000000";

/// A balancer `lb` in `rg` with an HTTP probe (1 s, 2 failures) and a TCP rule from a
/// free frontend port to the image's port 8080. Returns the frontend address.
pub(crate) fn create_balancer(s: &Server, rg: &str) -> String {
    create_balancer_with(|args| s.cli_ok(args), rg)
}

/// [`create_balancer`] through any `shoal` runner (a server the harness did not start).
pub(crate) fn create_balancer_with(cli: impl Fn(&[&str]) -> Value, rg: &str) -> String {
    let s = Cli(cli);
    let port = free_port().to_string();
    s.cli_ok(&[
        "network",
        "lb",
        "create",
        "-g",
        rg,
        "-n",
        "lb",
        "--backend-pool-name",
        "pool",
    ]);
    s.cli_ok(&[
        "network",
        "lb",
        "probe",
        "create",
        "-g",
        rg,
        "--lb-name",
        "lb",
        "-n",
        "http",
        "--protocol",
        "Http",
        "--port",
        "8080",
        "--path",
        "/health",
        "--interval",
        "1",
        "--threshold",
        "2",
    ]);
    s.cli_ok(&[
        "network",
        "lb",
        "rule",
        "create",
        "-g",
        rg,
        "--lb-name",
        "lb",
        "-n",
        "web",
        "--protocol",
        "Tcp",
        "--frontend-port",
        &port,
        "--backend-port",
        "8080",
        "--probe-name",
        "http",
    ]);
    format!("127.0.0.1:{port}")
}

/// A `shoal` runner as a value with the harness's method name.
struct Cli<F>(F);

impl<F: Fn(&[&str]) -> Value> Cli<F> {
    fn cli_ok(&self, args: &[&str]) -> Value {
        (self.0)(args)
    }
}

/// PUTs a scale set in `lb`'s pool with extra model properties.
pub(crate) fn create_set(s: &Server, rg: &str, capacity: u32, extra: Value) {
    put_set_in_pool(&s.endpoint(), rg, capacity, extra);
    wait_until(WAIT, "every instance runs", || {
        let insts = s.instances(rg, "web");
        insts.len() == capacity as usize
            && insts
                .iter()
                .all(|i| i.power == "running" && i.address.is_some())
    });
}

/// PUTs scale set `web` in `lb`'s pool (probe `http`) at the server `endpoint`.
pub(crate) fn put_set_in_pool(endpoint: &str, rg: &str, capacity: u32, extra: Value) {
    let lb = format!(
        "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/lb"
    );
    let mut body = json!({
        "location": "local",
        "sku": {"name": "Shoal_1vCPU_512MB", "capacity": capacity},
        "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0")}},
                "networkProfile": {
                    "healthProbe": {"id": format!("{lb}/probes/http")},
                    "networkInterfaceConfigurations": [{"name": "nic", "properties": {"primary": true, "ipConfigurations": [{"name": "ip", "properties": {"loadBalancerBackendAddressPools": [{"id": format!("{lb}/backendAddressPools/pool")}]}}]}}]
                }
            }
        }
    });
    merge(&mut body, &extra);
    let path = format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/web?api-version=2024-07-01");
    let (status, text) = http_request("PUT", &format!("{endpoint}{path}"), Some(&body.to_string()))
        .expect("API answers");
    assert_eq!(status, 201, "create: {text}");
}

fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

/// Which instances answer through the frontend, over `n` requests on new connections.
pub(crate) fn answering(frontend: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| http_get(&format!("http://{frontend}/")))
        .filter(|(st, _)| *st == 200)
        .map(|(_, b)| b.trim().to_string())
        .collect()
}

/// Four clients send GETs through `frontend` on a new connection each, for a second
/// before `during`, while it runs, and a second after: (succeeded, failed).
pub(crate) fn steady_load(frontend: &str, during: impl FnOnce()) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, frontend) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                frontend.to_string(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&format!("http://{frontend}/")) {
                        Some((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    during();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

fn vm_health(s: &Server, rg: &str, id: u64) -> String {
    let view = s.cli_ok(&[
        "vmss",
        "get-instance-view",
        "-g",
        rg,
        "-n",
        "web",
        "--instance-id",
        &id.to_string(),
    ]);
    view["vmHealth"]["status"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_unhealthy_instance_gets_no_traffic_and_is_replaced() {
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("lbrepair");
    let frontend = create_balancer(&s, "lbrepair");
    create_set(
        &s,
        "lbrepair",
        3,
        json!({"properties": {"automaticRepairsPolicy": {"enabled": true, "gracePeriod": "PT6S", "repairAction": "Replace"}}}),
    );
    wait_until(WAIT, "all three answer through the balancer", || {
        answering(&frontend, 30).len() == 3
    });
    wait_until(WAIT, "instance 1 is reported healthy", || {
        vm_health(&s, "lbrepair", 1) == "HealthState/healthy"
    });

    let one = s
        .instances("lbrepair", "web")
        .into_iter()
        .find(|i| i.id == 1)
        .expect("instance 1");
    let addr = one.address.expect("address");
    let (status, _) =
        http_request("POST", &format!("http://{addr}/fail"), Some("")).expect("instance 1 answers");
    assert_eq!(status, 200);
    // numberOfProbes x intervalInSeconds + 1 s: after that it receives nothing.
    std::thread::sleep(Duration::from_secs(3));
    let seen = answering(&frontend, 30);
    assert!(
        !seen.contains("instance 1"),
        "an unhealthy instance still gets traffic: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(vm_health(&s, "lbrepair", 1), "HealthState/unhealthy");
    // After the grace period it is replaced, and traffic returns to three.
    wait_until(WAIT, "instance 1 is replaced", || {
        let ids: Vec<u64> = s
            .instances("lbrepair", "web")
            .iter()
            .map(|i| i.id)
            .collect();
        !ids.contains(&1) && ids.len() == 3
    });
    wait_until(WAIT, "three instances answer again", || {
        answering(&frontend, 30).len() == 3
    });
    let view = s.cli_ok(&["vmss", "get-instance-view", "-g", "lbrepair", "-n", "web"]);
    assert_eq!(
        view["orchestrationServices"][0]["serviceName"],
        "AutomaticRepairs"
    );
    assert_eq!(view["orchestrationServices"][0]["serviceState"], "Running");
}

#[test]
fn scale_in_under_load_fails_no_request_and_warns_instances_first() {
    let _g = serial();
    let s = Server::start_with(&["--drain-timeout-seconds", "10"]);
    s.create_group_and_image("lbdrain");
    let frontend = create_balancer(&s, "lbdrain");
    let events = instance_writable(&s, "terminate.log");
    use base64::Engine;
    let custom = base64::engine::general_purpose::STANDARD
        .encode(format!("terminate-log={}\n", events.display()));
    create_set(
        &s,
        "lbdrain",
        6,
        json!({"properties": {"virtualMachineProfile": {
            "osProfile": {"customData": custom},
            "scheduledEventsProfile": {"terminateNotificationProfile": {"enable": true, "notBeforeTimeout": "PT5S"}}
        }}}),
    );
    wait_until(WAIT, "all six answer through the balancer", || {
        answering(&frontend, 60).len() == 6
    });

    // Steady load: a new connection per request, counting every failure.
    let (ok, failed) = steady_load(&frontend, || {
        s.cli_ok(&[
            "vmss",
            "scale",
            "-g",
            "lbdrain",
            "-n",
            "web",
            "--new-capacity",
            "3",
        ]);
    });
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during scale-in",
        ok + failed
    );
    assert_eq!(
        answering(&frontend, 30),
        ["instance 0", "instance 1", "instance 2"]
            .map(String::from)
            .into()
    );
    let log = std::fs::read_to_string(&events).unwrap_or_default();
    for id in 3..6 {
        assert!(
            log.contains(&format!("instance {id} saw Terminate")),
            "instance {id} was not warned: {log:?}"
        );
    }
    for id in 0..3 {
        assert!(
            !log.contains(&format!("instance {id} saw")),
            "instance {id} was warned but stays: {log:?}"
        );
    }
}

#[test]
fn kill_9_of_an_instance_under_load_fails_only_what_was_in_flight() {
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("lbkill");
    let frontend = create_balancer(&s, "lbkill");
    create_set(&s, "lbkill", 3, json!({}));
    wait_until(WAIT, "all three answer through the balancer", || {
        answering(&frontend, 30).len() == 3
    });

    let stop = Arc::new(AtomicBool::new(false));
    let killed_at = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let ok = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures, frontend) =
                (stop.clone(), ok.clone(), failures.clone(), frontend.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&format!("http://{frontend}/")) {
                        Some((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => failures
                            .lock()
                            .expect("lock")
                            .push(std::time::Instant::now()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let victim = s
        .instances("lbkill", "web")
        .into_iter()
        .find(|i| i.id == 1)
        .expect("instance 1");
    let pids: Vec<u32> = processes_under(&s.data_dir())
        .into_iter()
        .filter(|p| instance_id_of(*p) == Some(1))
        .collect();
    assert!(!pids.is_empty(), "instance 1 has processes");
    *killed_at.lock().expect("lock") = Some(std::time::Instant::now());
    for p in pids {
        // SAFETY: killing a test instance's process, as a crash would.
        unsafe {
            libc::kill(p as i32, libc::SIGKILL);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    let killed = killed_at.lock().expect("lock").expect("killed");
    let failures = failures.lock().expect("lock").clone();
    // Only connections in flight at the kill may fail: at most one per client, right then.
    let late: Vec<_> = failures
        .iter()
        .filter(|t| t.duration_since(killed) > Duration::from_millis(500))
        .collect();
    assert!(
        late.is_empty(),
        "{} requests failed after the kill was noticed (victim {:?})",
        late.len(),
        victim.address
    );
    assert!(
        failures.len() <= 4,
        "{} requests failed; only the 4 in flight may",
        failures.len()
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load ran");
    // The instance runs again on its own and rejoins.
    wait_until(WAIT, "all three answer again", || {
        answering(&frontend, 30).len() == 3
    });
}

#[test]
fn scale_in_under_load_through_an_application_gateway_fails_no_request() {
    let _g = serial();
    let s = Server::start_with(&["--drain-timeout-seconds", "10"]);
    s.create_group_and_image("gwdrain");
    let port = free_port().to_string();
    let events = instance_writable(&s, "terminate.log");
    std::fs::write(
        s.dir.path().join("custom-data"),
        format!("terminate-log={}\n", events.display()),
    )
    .expect("write");
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        "gwdrain",
        "-n",
        "web",
        "--image",
        "apps/web:1.0.0",
        "--instance-count",
        "6",
        "--app-gateway",
        "gw",
        "--app-gateway-frontend-port",
        &port,
        "--custom-data",
        &s.dir.path().join("custom-data").display().to_string(),
    ]);
    s.cli_ok(&[
        "vmss", "update", "-g", "gwdrain", "-n", "web", "--set",
        r#"properties.virtualMachineProfile.scheduledEventsProfile={"terminateNotificationProfile":{"enable":true,"notBeforeTimeout":"PT5S"}}"#,
    ]);
    s.cli_ok(&[
        "vmss",
        "update-instances",
        "-g",
        "gwdrain",
        "-n",
        "web",
        "--instance-ids",
        "*",
    ]);
    let frontend = format!("127.0.0.1:{port}");
    wait_until(WAIT, "all six answer through the gateway", || {
        answering(&frontend, 60).len() == 6
    });

    let (ok, failed) = steady_load(&frontend, || {
        s.cli_ok(&[
            "vmss",
            "scale",
            "-g",
            "gwdrain",
            "-n",
            "web",
            "--new-capacity",
            "3",
        ]);
    });
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during scale-in through L7",
        ok + failed
    );
    let log = std::fs::read_to_string(&events).unwrap_or_default();
    for id in 3..6 {
        assert!(
            log.contains(&format!("instance {id} saw Terminate")),
            "instance {id} was not warned: {log:?}"
        );
    }
}

#[test]
fn the_application_health_extension_reports_vm_health_without_a_balancer() {
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("apphealth");
    let image = format!(
        "/subscriptions/{SUB}/resourceGroups/apphealth/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0"
    );
    let body = json!({
        "location": "local",
        "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2},
        "properties": {"virtualMachineProfile": {
            "storageProfile": {"imageReference": {"id": image}},
            "extensionProfile": {"extensions": [{"name": "health", "properties": {
                "publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux", "typeHandlerVersion": "1.0",
                "settings": {"protocol": "http", "port": 8080, "requestPath": "/health", "intervalInSeconds": 1, "numberOfProbes": 2}
            }}]}
        }}
    });
    let path = format!("/subscriptions/{SUB}/resourceGroups/apphealth/providers/Microsoft.Compute/virtualMachineScaleSets/web?api-version=2024-07-01");
    let (status, text) = http_request(
        "PUT",
        &format!("{}{path}", s.endpoint()),
        Some(&body.to_string()),
    )
    .expect("API answers");
    assert_eq!(status, 201, "{text}");
    wait_until(WAIT, "both instances run", || {
        let insts = s.instances("apphealth", "web");
        insts.len() == 2 && insts.iter().all(|i| i.power == "running")
    });
    wait_until(WAIT, "both instances are reported healthy", || {
        vm_health(&s, "apphealth", 0) == "HealthState/healthy"
            && vm_health(&s, "apphealth", 1) == "HealthState/healthy"
    });
    let one = s
        .instances("apphealth", "web")
        .into_iter()
        .find(|i| i.id == 1)
        .expect("instance 1");
    let addr = one.address.expect("address");
    http_request("POST", &format!("http://{addr}/fail"), Some("")).expect("instance 1 answers");
    wait_until(
        Duration::from_secs(10),
        "instance 1 is reported unhealthy",
        || vm_health(&s, "apphealth", 1) == "HealthState/unhealthy",
    );
    assert_eq!(vm_health(&s, "apphealth", 0), "HealthState/healthy");
}
