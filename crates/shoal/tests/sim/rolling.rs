//! Rolling upgrades through the real API, controller and agents: a new image version
//! rolls out batch by batch, a bad one faults and rolls back, maxSurge keeps the count
//! serving, a cancel stops between batches, and a server crash mid-upgrade resumes.
//!
//! No balancer runs here: a prober task plays one, reporting each running instance
//! healthy — or unhealthy when it runs the version the test calls bad — as balancers do
//! through the health API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::harness::{host, power_state, Sim, SUB};

fn image(version: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/galleries/apps/images/web/versions/{version}")
}

fn rolling(policy: Value) -> Value {
    json!({"properties": {
        "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": policy},
        "virtualMachineProfile": {"extensionProfile": {"extensions": [{"name": "health", "properties": {
            "publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux",
            "typeHandlerVersion": "1.0",
            "settings": {"protocol": "http", "port": 8080, "requestPath": "/health", "intervalInSeconds": 1}
        }}]}},
        "shoal": {"rollingUpgradeHealthTimeout": "PT20S"}
    }})
}

/// Reports health as a balancer would, every simulated second, for the instances the API
/// shows running: unhealthy on a version in `bad`, healthy otherwise.
struct Prober {
    stop: CancellationToken,
    bad: Arc<Mutex<Vec<String>>>,
}

impl Prober {
    fn start(sim: &Arc<Sim>) -> Prober {
        let stop = CancellationToken::new();
        let bad: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, b, token) = (sim.clone(), bad.clone(), stop.clone());
        tokio::spawn(async move {
            let reported: Arc<Mutex<HashMap<String, (String, &str)>>> = Arc::default();
            while !token.is_cancelled() {
                // One round in a task of its own: a round that meets the server down (a
                // crash test) fails alone, and the next round tries again.
                let (s, b, reported) = (s.clone(), b.clone(), reported.clone());
                let _ = tokio::spawn(async move {
                    for i in s.instances("rg", "web").await {
                        let id = i["instanceId"].as_str().unwrap_or_default().to_string();
                        let version = i["properties"]["shoal"]["imageVersion"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        if power_state(&i) != Some("PowerState/running") {
                            continue;
                        }
                        let state = if b
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .contains(&version)
                        {
                            "unhealthy"
                        } else {
                            "healthy"
                        };
                        let seen = reported
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&id)
                            .cloned();
                        if seen != Some((version.clone(), state)) {
                            if let Ok(n) = id.parse() {
                                s.report_health("rg", "web", n, state).await;
                            }
                            reported
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(id, (version, state));
                        }
                    }
                })
                .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Prober { stop, bad }
    }

    fn call_bad(&self, version: &str) {
        self.bad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(version.to_string());
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn latest(sim: &Sim) -> Value {
    sim.ok(
        Method::GET,
        &format!("{}/rollingUpgrades/latest", Sim::set_path("rg", "web")),
        None,
    )
    .await
}

async fn versions(sim: &Sim) -> Vec<String> {
    let mut v: Vec<String> = sim
        .records("rg", "web")
        .await
        .iter()
        .filter(|r| !r.deleting)
        .map(|r| r.launch.image_version.clone())
        .collect();
    v.sort();
    v
}

async fn wait_code(sim: &Sim, code: &str) -> Value {
    sim.wait_until(&format!("the rolling upgrade is {code}"), || async {
        latest_or_null(sim).await["properties"]["runningStatus"]["code"] == code
    })
    .await;
    latest(sim).await
}

async fn latest_or_null(sim: &Sim) -> Value {
    let (status, v) = sim
        .call(
            Method::GET,
            &format!("{}/rollingUpgrades/latest", Sim::set_path("rg", "web")),
            None,
        )
        .await;
    if status.is_success() {
        v
    } else {
        Value::Null
    }
}

async fn ten_behind_a_prober(policy: Value) -> (Arc<Sim>, Prober) {
    let sim = Arc::new(Sim::start(&[host("h1", None, None)]).await);
    sim.group_and_image("rg").await;
    sim.publish_version("rg", "1.0.1").await;
    sim.put_set("rg", "web", 10, rolling(policy)).await;
    sim.wait_running("rg", "web", 10).await;
    let prober = Prober::start(&sim);
    sim.wait_until("the prober reported every instance healthy", || async {
        let prefix =
            shoal_model::keys::health_prefix(&shoal_model::ids::VmssRef::new(SUB, "rg", "web"));
        let (kvs, _) = shoal_store::Store::list(&*sim.store, &prefix)
            .await
            .expect("list");
        kvs.len() == 10
    })
    .await;
    (sim, prober)
}

async fn roll_to(sim: &Sim, version: &str) {
    sim.ok(
        Method::PATCH,
        &Sim::set_path("rg", "web"),
        Some(json!({"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image(version)}}}}})),
    )
    .await;
}

async fn finish(sim: Arc<Sim>, prober: Prober) {
    drop(prober);
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Ok(sim) = Arc::try_unwrap(sim) {
        sim.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_version_rolls_out_in_five_batches() {
    let (sim, prober) = ten_behind_a_prober(json!({"maxBatchInstancePercent": 20})).await;
    roll_to(&sim, "1.0.1").await;
    let done = wait_code(&sim, "Completed").await;
    let p = &done["properties"];
    assert_eq!(p["progress"]["successfulInstanceCount"], 10, "{done}");
    assert_eq!(p["progress"]["failedInstanceCount"], 0);
    assert_eq!(p["progress"]["pendingInstanceCount"], 0);
    assert_eq!(p["runningStatus"]["lastAction"], "Start");
    assert_eq!(p["policy"]["maxBatchInstancePercent"], 20);
    assert_eq!(versions(&sim).await, vec!["1.0.1"; 10]);
    // Five batches of two, each in the activity log.
    let log = activity(&sim).await;
    let batches: Vec<&String> = log
        .iter()
        .filter(|m| m.contains("draining and upgrading"))
        .collect();
    assert_eq!(batches.len(), 5, "{log:#?}");
    assert!(
        batches.iter().all(|m| m.matches(',').count() == 1),
        "{batches:#?}"
    );
    finish(sim, prober).await;
}

/// The set's rolling-upgrade events in the activity log, oldest first.
async fn activity(sim: &Sim) -> Vec<String> {
    let mut out: Vec<String> = sim
        .activity_log()
        .await
        .iter()
        .filter(|e| e["eventName"]["value"] == "RollingUpgrade")
        .map(|e| e["description"].as_str().unwrap_or_default().to_string())
        .collect();
    out.reverse();
    out
}

#[tokio::test(start_paused = true)]
async fn a_version_that_never_becomes_healthy_faults_and_rolls_back() {
    let (sim, prober) =
        ten_behind_a_prober(json!({"rollbackFailedInstancesOnPolicyBreach": true})).await;
    prober.call_bad("1.0.1");
    roll_to(&sim, "1.0.1").await;
    let done = wait_code(&sim, "Faulted").await;
    let p = &done["properties"];
    assert_eq!(
        p["error"]["code"], "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade",
        "{done}"
    );
    assert_eq!(p["progress"]["failedInstanceCount"], 2);
    assert_eq!(p["progress"]["successfulInstanceCount"], 0);
    // The batch went back to 1.0.0 and runs again; the rest were never touched.
    assert_eq!(versions(&sim).await, vec!["1.0.0"; 10]);
    sim.wait_running("rg", "web", 10).await;
    let log = activity(&sim).await;
    assert!(
        log.iter()
            .any(|m| m.contains("back to their previous model")),
        "{log:#?}"
    );
    assert_eq!(
        log.iter()
            .filter(|m| m.contains("draining and upgrading"))
            .count(),
        1
    );
    finish(sim, prober).await;
}

#[tokio::test(start_paused = true)]
async fn max_surge_never_drops_below_the_count() {
    let (sim, prober) = ten_behind_a_prober(json!({"maxSurge": true})).await;
    roll_to(&sim, "1.0.1").await;
    let low = Arc::new(Mutex::new(usize::MAX));
    let (s, l) = (sim.clone(), low.clone());
    let sampler = tokio::spawn(async move {
        loop {
            let serving = s
                .instances("rg", "web")
                .await
                .iter()
                .filter(|i| power_state(i) == Some("PowerState/running"))
                .count();
            {
                let mut low = l.lock().unwrap_or_else(|p| p.into_inner());
                *low = (*low).min(serving);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let done = wait_code(&sim, "Completed").await;
    sampler.abort();
    assert!(
        *low.lock().unwrap_or_else(|p| p.into_inner()) >= 10,
        "only {} running at one point",
        low.lock().unwrap_or_else(|p| p.into_inner())
    );
    assert_eq!(
        done["properties"]["progress"]["successfulInstanceCount"],
        10
    );
    sim.wait_until("the replaced instances are gone", || async {
        sim.records("rg", "web").await.len() == 10
    })
    .await;
    assert_eq!(versions(&sim).await, vec!["1.0.1"; 10]);
    finish(sim, prober).await;
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_between_batches_and_a_later_change_starts_again() {
    let (sim, prober) = ten_behind_a_prober(json!({"pauseTimeBetweenBatches": "PT30S"})).await;
    roll_to(&sim, "1.0.1").await;
    sim.wait_until("the first batch is upgraded", || async {
        versions(&sim)
            .await
            .iter()
            .filter(|v| *v == "1.0.1")
            .count()
            == 2
    })
    .await;
    let (status, headers, _) = sim
        .call_full(
            Method::POST,
            &format!("{}/rollingUpgrades/cancel", Sim::set_path("rg", "web")),
            None,
        )
        .await;
    assert_eq!(status, 202);
    assert!(headers.contains_key("location"));
    let op = sim.wait_operation(&headers).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    let done = latest(&sim).await;
    assert_eq!(done["properties"]["runningStatus"]["code"], "Cancelled");
    assert_eq!(done["properties"]["runningStatus"]["lastAction"], "Cancel");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        versions(&sim)
            .await
            .iter()
            .filter(|v| *v == "1.0.1")
            .count(),
        2,
        "no batch starts after the cancel"
    );
    // A later model change starts a new upgrade, which completes.
    sim.publish_version("rg", "1.0.2").await;
    roll_to(&sim, "1.0.2").await;
    sim.wait_until("a new upgrade runs", || async {
        latest(&sim).await["properties"]["runningStatus"]["code"] == "RollingForward"
    })
    .await;
    wait_code(&sim, "Completed").await;
    assert_eq!(versions(&sim).await, vec!["1.0.2"; 10]);
    finish(sim, prober).await;
}

#[tokio::test(start_paused = true)]
async fn os_rolling_upgrade_is_an_lro_that_ends_with_the_upgrade() {
    let sim = Arc::new(Sim::start(&[host("h1", None, None)]).await);
    sim.group_and_image("rg").await;
    let definition = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/galleries/apps/images/web";
    let mut extra = rolling(json!({"maxBatchInstancePercent": 50}));
    extra["properties"]["virtualMachineProfile"]["storageProfile"] =
        json!({"imageReference": {"id": definition}});
    sim.put_set("rg", "web", 4, extra).await;
    sim.wait_running("rg", "web", 4).await;
    let prober = Prober::start(&sim);
    sim.publish_version("rg", "1.0.1").await;
    let (status, headers, _) = sim
        .call_full(
            Method::POST,
            &format!("{}/osRollingUpgrade", Sim::set_path("rg", "web")),
            None,
        )
        .await;
    assert_eq!(status, 202);
    assert!(headers.contains_key("location") && headers.contains_key("azure-asyncoperation"));
    let op = sim.wait_operation(&headers).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert_eq!(
        latest(&sim).await["properties"]["runningStatus"]["code"],
        "Completed"
    );
    assert_eq!(versions(&sim).await, vec!["1.0.1"; 4]);
    finish(sim, prober).await;
}

#[tokio::test(start_paused = true)]
async fn a_server_crash_mid_upgrade_resumes_and_completes() {
    let (sim, prober) = ten_behind_a_prober(json!({})).await;
    roll_to(&sim, "1.0.1").await;
    sim.wait_until("the second batch is upgraded", || async {
        versions(&sim)
            .await
            .iter()
            .filter(|v| *v == "1.0.1")
            .count()
            >= 4
    })
    .await;
    sim.crash_server_after(3).await;
    sim.wait_until("the server crashed", || async {
        sim.server_crashed().await
    })
    .await;
    sim.restart_server().await;
    let done = wait_code(&sim, "Completed").await;
    assert_eq!(
        done["properties"]["progress"]["successfulInstanceCount"], 10,
        "{done}"
    );
    assert_eq!(versions(&sim).await, vec!["1.0.1"; 10]);
    finish(sim, prober).await;
}

#[tokio::test(start_paused = true)]
async fn a_resize_rolls_out_through_the_same_engine() {
    let (sim, prober) = ten_behind_a_prober(json!({})).await;
    sim.ok(
        Method::PATCH,
        &Sim::set_path("rg", "web"),
        Some(json!({"sku": {"name": "Shoal_2vCPU_2048MB"}})),
    )
    .await;
    let done = wait_code(&sim, "Completed").await;
    assert_eq!(
        done["properties"]["progress"]["successfulInstanceCount"], 10,
        "{done}"
    );
    let sizes: Vec<(u32, u64)> = sim
        .records("rg", "web")
        .await
        .iter()
        .map(|r| (r.launch.vcpus, r.launch.memory_mb))
        .collect();
    assert_eq!(sizes, vec![(2, 2048); 10]);
    let log = activity(&sim).await;
    assert_eq!(
        log.iter()
            .filter(|m| m.contains("draining and upgrading"))
            .count(),
        5,
        "{log:#?}"
    );
    finish(sim, prober).await;
}

#[tokio::test(start_paused = true)]
async fn automatic_os_upgrade_rolls_new_versions_out_and_a_bad_one_back() {
    let sim = Arc::new(Sim::start(&[host("h1", None, None)]).await);
    sim.group_and_image("rg").await;
    let definition = image("1.0.0").replace("/versions/1.0.0", "");
    let mut extra = rolling(json!({}));
    extra["properties"]["upgradePolicy"] = json!({
        "mode": "Manual",
        "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": true}
    });
    extra["properties"]["virtualMachineProfile"]["storageProfile"] =
        json!({"imageReference": {"id": definition}});
    sim.put_set("rg", "web", 5, extra).await;
    sim.wait_running("rg", "web", 5).await;
    let prober = Prober::start(&sim);

    // A new version rolls out with no call.
    sim.publish_version("rg", "1.0.1").await;
    sim.wait_until("every instance runs 1.0.1", || async {
        versions(&sim).await == vec!["1.0.1"; 5]
            && latest_or_null(&sim).await["properties"]["runningStatus"]["code"] == "Completed"
    })
    .await;
    assert_eq!(
        latest(&sim).await["properties"]["shoal"]["startedBy"],
        "Platform"
    );

    // A bad one faults after its first batch and goes back, and is not tried again.
    prober.call_bad("1.0.2");
    sim.publish_version("rg", "1.0.2").await;
    let done = wait_code(&sim, "Faulted").await;
    assert_eq!(
        done["properties"]["error"]["code"],
        "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"
    );
    assert_eq!(versions(&sim).await, vec!["1.0.1"; 5]);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        latest(&sim).await["properties"]["runningStatus"]["code"],
        "Faulted"
    );
    assert_eq!(versions(&sim).await, vec!["1.0.1"; 5]);

    let history = sim
        .ok(
            Method::GET,
            &format!("{}/osUpgradeHistory", Sim::set_path("rg", "web")),
            None,
        )
        .await;
    let entries = history["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 2, "{history}");
    let newest = &entries[0]["properties"];
    assert_eq!(newest["runningStatus"]["code"], "Faulted");
    assert_eq!(newest["startedBy"], "Platform");
    assert_eq!(newest["targetImageReference"]["exactVersion"], "1.0.2");
    assert_eq!(
        newest["rollbackInfo"]["successfullyRolledbackInstanceCount"],
        1
    );
    assert_eq!(
        entries[1]["properties"]["runningStatus"]["code"],
        "Completed"
    );
    finish(sim, prober).await;
}

#[tokio::test(start_paused = true)]
async fn during_an_upgrade_a_scale_out_is_on_the_new_model_and_manual_upgrade_works() {
    let (sim, prober) = ten_behind_a_prober(json!({"pauseTimeBetweenBatches": "PT60S"})).await;
    roll_to(&sim, "1.0.1").await;
    sim.wait_until("the first batch is upgraded", || async {
        versions(&sim)
            .await
            .iter()
            .filter(|v| *v == "1.0.1")
            .count()
            == 2
    })
    .await;
    sim.ok(
        Method::PATCH,
        &Sim::set_path("rg", "web"),
        Some(json!({"sku": {"capacity": 12}})),
    )
    .await;
    let (status, headers, _) = sim
        .call_full(
            Method::POST,
            &format!("{}/manualupgrade", Sim::set_path("rg", "web")),
            Some(json!({"instanceIds": ["9"]})),
        )
        .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(sim.wait_operation(&headers).await["status"], "Succeeded");
    let records = sim.records("rg", "web").await;
    let on = |id: u64| {
        records
            .iter()
            .find(|r| r.instance_id == id)
            .map(|r| r.launch.image_version.clone())
    };
    assert_eq!(
        on(9).as_deref(),
        Some("1.0.1"),
        "manualupgrade of a named instance"
    );
    assert_eq!(
        on(10).as_deref(),
        Some("1.0.1"),
        "a scale-out is on the new model"
    );
    assert_eq!(on(11).as_deref(), Some("1.0.1"));
    assert_eq!(
        latest(&sim).await["properties"]["runningStatus"]["code"],
        "RollingForward"
    );
    wait_code(&sim, "Completed").await;
    assert_eq!(versions(&sim).await, vec!["1.0.1"; 12]);
    finish(sim, prober).await;
}

#[tokio::test(start_paused = true)]
async fn extension_rolling_upgrade_restarts_every_instance_batch_by_batch() {
    let (sim, prober) = ten_behind_a_prober(json!({})).await;
    // New health extension settings, then the extension upgrade that applies them.
    let mut ext = rolling(json!({}))["properties"]["virtualMachineProfile"].clone();
    ext["extensionProfile"]["extensions"][0]["properties"]["settings"]["intervalInSeconds"] =
        json!(2);
    sim.ok(
        Method::PATCH,
        &Sim::set_path("rg", "web"),
        Some(json!({"properties": {"virtualMachineProfile": ext}})),
    )
    .await;
    let (status, headers, _) = sim
        .call_full(
            Method::POST,
            &format!("{}/extensionRollingUpgrade", Sim::set_path("rg", "web")),
            None,
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(sim.wait_operation(&headers).await["status"], "Succeeded");
    let restarts: Vec<u64> = sim
        .records("rg", "web")
        .await
        .iter()
        .map(|r| r.restart_gen)
        .collect();
    assert_eq!(restarts, vec![1; 10]);
    let log = activity(&sim).await;
    assert_eq!(
        log.iter()
            .filter(|m| m.contains("draining and restarting"))
            .count(),
        5,
        "{log:#?}"
    );
    finish(sim, prober).await;
}
