//! Automatic repairs through the controller: at most one instance under repair at a time
//! in a small set, and a service that suspends itself when repairs keep failing.

use http::Method;
use serde_json::{json, Value};

use crate::harness::{host, Sim};

fn repairs_policy() -> Value {
    json!({"properties": {
        "automaticRepairsPolicy": {"enabled": true, "gracePeriod": "PT1M", "repairAction": "Restart"},
        "virtualMachineProfile": {"extensionProfile": {"extensions": [{"name": "health", "properties": {
            "publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux",
            "typeHandlerVersion": "1.0",
            "settings": {"protocol": "http", "port": 8080, "requestPath": "/health"}
        }}]}}
    }})
}

async fn restarts(sim: &Sim) -> Vec<u64> {
    let mut r: Vec<u64> = sim
        .records("rg", "web")
        .await
        .iter()
        .map(|r| r.restart_gen)
        .collect();
    r.sort_unstable();
    r
}

async fn settle(sim: &Sim, secs: u64) {
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    let _ = sim;
}

#[tokio::test(start_paused = true)]
async fn repairs_take_one_instance_at_a_time_in_a_small_set() {
    let sim = Sim::start(&[host("h1", None, None)]).await;
    sim.group_and_image("rg").await;
    sim.put_set("rg", "web", 10, repairs_policy()).await;
    sim.wait_running("rg", "web", 10).await;
    for id in 0..10 {
        sim.report_health("rg", "web", id, "healthy").await;
    }
    // Three instances turn unhealthy and stay so.
    for id in [2, 5, 7] {
        sim.report_health("rg", "web", id, "unhealthy").await;
    }
    sim.wait_until("the first repair", || async {
        restarts(&sim).await.iter().sum::<u64>() == 1
    })
    .await;
    // Ten simulated minutes later, still only one: the repaired instance has not come
    // back healthy, and a set below 20 instances repairs one at a time.
    settle(&sim, 600).await;
    assert_eq!(restarts(&sim).await.iter().sum::<u64>(), 1);
    let repaired: Vec<u64> = sim
        .records("rg", "web")
        .await
        .iter()
        .filter(|r| r.restart_gen == 1)
        .map(|r| r.instance_id)
        .collect();
    assert_eq!(repaired.len(), 1);
    assert!(
        [2, 5, 7].contains(&repaired[0]),
        "a healthy one was repaired: {repaired:?}"
    );
    // The repair is in the activity log, on the set, naming the instance.
    let log = sim.activity_log().await;
    let repairs: Vec<&Value> = log
        .iter()
        .filter(|e| e["eventName"]["value"] == "AutomaticRepair")
        .collect();
    assert_eq!(repairs.len(), 1, "{log:#?}");
    assert_eq!(
        repairs[0]["properties"]["InstanceId"],
        repaired[0].to_string()
    );
    assert!(repairs[0]["resourceId"]
        .as_str()
        .is_some_and(|r| r.ends_with("/virtualMachineScaleSets/web")));
    // Once it is healthy again, the next one is repaired.
    sim.report_health("rg", "web", repaired[0], "healthy").await;
    sim.wait_until("the second repair", || async {
        restarts(&sim).await.iter().sum::<u64>() == 2
    })
    .await;
    settle(&sim, 300).await;
    assert_eq!(restarts(&sim).await.iter().sum::<u64>(), 2);
    sim.stop().await;
}

#[tokio::test(start_paused = true)]
async fn repairs_that_keep_failing_suspend_the_service() {
    let sim = Sim::start(&[host("h1", None, None)]).await;
    sim.group_and_image("rg").await;
    sim.put_set("rg", "web", 3, repairs_policy()).await;
    sim.wait_running("rg", "web", 3).await;
    for id in 0..3 {
        sim.report_health("rg", "web", id, "healthy").await;
    }
    // Instance 1 comes back after each repair, then fails again.
    for round in 1..=3u64 {
        sim.report_health("rg", "web", 1, "unhealthy").await;
        sim.wait_until(&format!("repair {round}"), || async {
            sim.records("rg", "web").await[1].restart_gen == round
        })
        .await;
        sim.wait_running("rg", "web", 3).await;
        sim.report_health("rg", "web", 1, "healthy").await;
        settle(&sim, 5).await;
    }
    sim.report_health("rg", "web", 1, "unhealthy").await;
    let view_path = format!("{}/instanceView", Sim::set_path("rg", "web"));
    sim.wait_until("automatic repairs are suspended", || async {
        let view = sim.ok(Method::GET, &view_path, None).await;
        view["orchestrationServices"][0]["serviceState"] == "Suspended"
    })
    .await;
    let view = sim.ok(Method::GET, &view_path, None).await;
    let reason = view["orchestrationServices"][0]["reason"].to_string();
    assert!(
        reason.contains("Instance 1"),
        "the reason names the instance: {reason}"
    );
    // Suspended means no more repairs, however long it stays unhealthy.
    settle(&sim, 1200).await;
    assert_eq!(sim.records("rg", "web").await[1].restart_gen, 3);
    sim.stop().await;
}
