//! Hosts that fail over: three hosts in zones 1, 2, 3; a host that stops calling in is
//! declared Down and its instances run again on the others (same ids, a new epoch);
//! when it comes back its stale copies are stopped; drain and cordon move and hold
//! placements; bad input is refused.

use std::collections::{BTreeMap, BTreeSet};

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{host, Sim};

const HOSTS: &str = "/providers/Shoal.Infrastructure/hosts";

async fn host_view(sim: &Sim, name: &str) -> Value {
    sim.ok(Method::GET, &format!("{HOSTS}/{name}"), None).await
}

/// Instance id → host, from the desired records.
async fn placement(sim: &Sim) -> BTreeMap<u64, String> {
    sim.records("rg", "web")
        .await
        .into_iter()
        .filter(|r| !r.deleting)
        .map(|r| (r.instance_id, r.host))
        .collect()
}

/// No instance runs on two hosts, and `n` run in all.
fn assert_runs_once(sim: &Sim, n: usize) {
    let running = sim.running_on_hosts();
    let keys: BTreeSet<&String> = running.iter().map(|(_, k)| k).collect();
    assert_eq!(
        keys.len(),
        running.len(),
        "an instance runs twice: {running:?}"
    );
    assert_eq!(running.len(), n, "capacity: {running:?}");
}

#[tokio::test(start_paused = true)]
async fn a_down_host_is_replaced_fenced_when_back_and_drain_and_cordon_move_placements() {
    let mut sim = Sim::start(&[
        host("a", Some("1"), Some(0)),
        host("b", Some("2"), Some(0)),
        host("c", Some("3"), Some(0)),
    ])
    .await;
    sim.group_and_image("rg").await;
    sim.put_set("rg", "web", 6, json!({"zones": ["1", "2", "3"]}))
        .await;
    sim.wait_running("rg", "web", 6).await;
    let before = placement(&sim).await;
    assert_eq!(before.values().filter(|h| *h == "b").count(), 2);
    let on_b: Vec<u64> = before
        .iter()
        .filter(|(_, h)| *h == "b")
        .map(|(id, _)| *id)
        .collect();

    // The hosts as an operator sees them.
    let list = sim.ok(Method::GET, HOSTS, None).await;
    let hosts = list["value"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 3);
    for h in hosts {
        assert_eq!(h["type"], "Shoal.Infrastructure/hosts");
        assert_eq!(h["properties"]["state"], "Ready");
        assert_eq!(h["properties"]["allocated"]["instances"], 2);
    }

    // B stops calling in: NotReady, then Down; its two instances run again on A and C
    // with the same ids and a new epoch, while B's copies are still running (cut off).
    sim.cut("b", true);
    sim.wait_until("b is Down", || async {
        host_view(&sim, "b").await["properties"]["state"] == "Down"
    })
    .await;
    sim.wait_until("b's instances are placed again", || async {
        placement(&sim).await.values().all(|h| h != "b")
    })
    .await;
    sim.wait_running("rg", "web", 6).await;
    let after = placement(&sim).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same instance ids"
    );
    for r in sim.records("rg", "web").await {
        let moved = on_b.contains(&r.instance_id);
        assert_eq!(r.epoch, u64::from(moved), "instance {}", r.instance_id);
        if moved {
            let h = sim.hosts.iter().find(|h| h.name == r.host).expect("host");
            assert_eq!(h.zone, r.zone, "the instance's zone is its host's");
        }
    }
    assert_eq!(
        sim.hosts[1].driver.running().len(),
        2,
        "b's copies still run while it is cut off"
    );
    let events = host_view(&sim, "b").await["properties"]["events"].to_string();
    assert!(events.contains("is Down"), "{events}");
    assert!(events.contains("placed again on host"), "{events}");
    // The subscription's activity log says which instances were replaced, on the set.
    let log = sim.activity_log().await;
    let set_id = Sim::set_path("rg", "web");
    let replaced: BTreeSet<u64> = log
        .iter()
        .filter(|e| e["resourceId"] == set_id.as_str())
        .filter_map(|e| {
            let d = e["description"].as_str()?;
            d.contains("placed again on host")
                .then(|| d.strip_prefix("Instance ")?.split(' ').next()?.parse().ok())?
        })
        .collect();
    assert_eq!(
        replaced,
        on_b.iter().copied().collect::<BTreeSet<u64>>(),
        "{log:?}"
    );

    // B comes back: its stale copies stop; nothing runs twice; capacity exactly 6.
    sim.cut("b", false);
    sim.wait_until("b's stale copies are stopped", || async {
        sim.hosts[1].driver.running().is_empty()
    })
    .await;
    sim.wait_until("b is Ready", || async {
        host_view(&sim, "b").await["properties"]["state"] == "Ready"
    })
    .await;
    sim.wait_running("rg", "web", 6).await;
    assert_runs_once(&sim, 6);

    // An agent restart neither stops nor duplicates anything: it adopts what runs.
    let on_a = sim.hosts[0].driver.running();
    sim.stop_agent("a").await;
    assert_eq!(
        sim.hosts[0].driver.running(),
        on_a,
        "the data plane outlives"
    );
    sim.start_agent("a");
    sim.wait_running("rg", "web", 6).await;
    assert_eq!(sim.hosts[0].driver.running(), on_a);

    // Drain C: its instances are replaced elsewhere first, then leave C.
    sim.ok(Method::POST, &format!("{HOSTS}/c/drain"), None)
        .await;
    sim.wait_until("c is empty", || async {
        placement(&sim).await.values().all(|h| h != "c") && sim.hosts[2].driver.running().is_empty()
    })
    .await;
    sim.wait_running("rg", "web", 6).await;
    assert_runs_once(&sim, 6);
    assert_eq!(host_view(&sim, "c").await["properties"]["cordoned"], true);

    // A cordoned host gets nothing new: with C back and A cordoned, a scale-out skips
    // zone 1 (best effort: one unavailable zone).
    sim.ok(Method::POST, &format!("{HOSTS}/c/uncordon"), None)
        .await;
    sim.ok(Method::POST, &format!("{HOSTS}/a/cordon"), None)
        .await;
    let a_before = placement(&sim).await.values().filter(|h| *h == "a").count();
    sim.put_set("rg", "web", 8, json!({"zones": ["1", "2", "3"]}))
        .await;
    sim.wait_running("rg", "web", 8).await;
    let now = placement(&sim).await;
    assert_eq!(now.values().filter(|h| *h == "a").count(), a_before);

    // Bad input: a drain with nowhere to go (zones 1 and 2 would both be unavailable), a name another live host holds, an
    // unknown action.
    let (status, body) = sim
        .call(Method::POST, &format!("{HOSTS}/b/drain"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["target"], "hostName", "{body}");
    let mut impostor = sim.ok(Method::GET, "/shoal/v1/hosts/b", None).await;
    impostor["host_id"] = json!("someone-else");
    let (status, body) = sim
        .call(Method::PUT, "/shoal/v1/hosts/b", Some(impostor))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = sim
        .call(Method::POST, &format!("{HOSTS}/b/explode"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing changed: still 8 running, none twice.
    sim.wait_running("rg", "web", 8).await;
    assert_runs_once(&sim, 8);
    sim.stop().await;
}

#[tokio::test(start_paused = true)]
async fn redeploy_moves_an_instance_to_another_host_in_its_zone() {
    let sim = Sim::start(&[
        host("a", Some("1"), Some(0)),
        host("b", Some("1"), Some(1)),
        host("c", Some("2"), Some(0)),
    ])
    .await;
    sim.group_and_image("rg").await;
    sim.put_set("rg", "web", 2, json!({"zones": ["1", "2"]}))
        .await;
    sim.wait_running("rg", "web", 2).await;
    let before = placement(&sim).await;
    let (&id, from) = before
        .iter()
        .find(|(_, h)| *h == "a" || *h == "b")
        .expect("an instance in zone 1");
    let from = from.clone();
    let path = format!(
        "{}/virtualMachines/{id}/redeploy",
        Sim::set_path("rg", "web")
    );
    let (status, _, _) = sim.call_full(Method::POST, &path, None).await;
    assert!(status.is_success(), "{status}");
    let to = if from == "a" { "b" } else { "a" };
    sim.wait_until("the instance runs on the other zone-1 host", || async {
        placement(&sim).await.get(&id).map(String::as_str) == Some(to)
            && sim
                .running_on_hosts()
                .iter()
                .any(|(h, k)| h == to && k.ends_with(&format!(".{id}")))
    })
    .await;
    sim.wait_until("the old copy is gone", || async {
        sim.running_on_hosts().len() == 2
    })
    .await;
    assert_runs_once(&sim, 2);
    // The instance in zone 2 has no other host in its zone: it restarts where it is.
    let (&other, on) = placement(&sim)
        .await
        .iter()
        .find(|(_, h)| *h == "c")
        .map(|(i, h)| (i, h.clone()))
        .expect("an instance in zone 2");
    let path = format!(
        "{}/virtualMachines/{other}/redeploy",
        Sim::set_path("rg", "web")
    );
    let (status, _, _) = sim.call_full(Method::POST, &path, None).await;
    assert!(status.is_success(), "{status}");
    sim.wait_running("rg", "web", 2).await;
    assert_eq!(placement(&sim).await.get(&other), Some(&on));
}
