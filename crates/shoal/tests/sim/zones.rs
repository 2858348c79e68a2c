//! Placement over several hosts: a zonal set spreads evenly over the zones, and every
//! instance runs on a host of its zone.

use std::collections::BTreeMap;

use serde_json::json;

use crate::harness::{host, Sim};

#[tokio::test(start_paused = true)]
async fn a_scale_out_spreads_over_three_hosts_in_three_zones() {
    let sim = Sim::start(&[
        host("a", Some("1"), Some(0)),
        host("b", Some("2"), Some(0)),
        host("c", Some("3"), Some(0)),
    ])
    .await;
    sim.group_and_image("rg").await;
    sim.put_set("rg", "web", 3, json!({"zones": ["1", "2", "3"]}))
        .await;
    sim.wait_running("rg", "web", 3).await;
    sim.put_set("rg", "web", 6, json!({"zones": ["1", "2", "3"]}))
        .await;
    sim.wait_running("rg", "web", 6).await;

    let zone_of_host: BTreeMap<&str, &str> = sim
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.zone.as_deref().expect("zonal host")))
        .collect();
    assert!(sim.hosts.iter().all(|h| h.fault_domain == Some(0)));
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for inst in sim.instances("rg", "web").await {
        let zone = inst["zones"][0]
            .as_str()
            .expect("a zonal instance")
            .to_string();
        let host = inst["properties"]["shoal"]["host"]
            .as_str()
            .expect("the instance names its host");
        assert_eq!(
            zone_of_host[host], zone,
            "instance {} is labelled zone {zone} but runs on host {host}",
            inst["instanceId"]
        );
        *per_zone.entry(zone).or_default() += 1;
    }
    assert_eq!(
        per_zone,
        BTreeMap::from([("1".into(), 2), ("2".into(), 2), ("3".into(), 2)]),
        "two instances per zone"
    );
    // And the hosts really run them: two each.
    for h in &sim.hosts {
        assert_eq!(h.driver.running().len(), 2, "host {} runs two", h.name);
    }
    sim.stop().await;
}
