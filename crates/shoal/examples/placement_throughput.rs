//! Placement throughput (issue 10): how fast the control plane places instances over many
//! hosts. One server core (in-memory store, authentication off, no agents: placement is
//! what is measured, not starting processes) with H simulated hosts registered through the
//! agent protocol and heartbeating every 2 s, spread over zones 1–3 and five fault
//! domains; then S scale sets of 1000 instances each over zones 1, 2, 3 are created at
//! once. Measured: the time until every instance record is placed on a host, placements
//! per second, and the p50/p99 of `GET` on a scale set over HTTP meanwhile (one keep-alive
//! client, sequential).
//! `cargo run -p shoal --release --example placement_throughput [-- HOSTS SETS]`
//! (defaults: 1000 hosts, 100 sets = 100 000 instances).

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "support/mod.rs"]
mod support;

use shoal_model::keys;
use shoal_store::{MemoryStore, Store};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let sets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let store = Arc::new(MemoryStore::default());
    let (router, base) = support::serve(store.clone(), dir.path(), &tracker, &shutdown).await;

    eprintln!("registering {hosts} hosts…");
    let names: Vec<String> = (0..hosts).map(|i| format!("sim{i:04}")).collect();
    support::register_hosts(&router, &names, shutdown.clone()).await;

    let image = support::create_image(&router).await;

    let set_path = |i: usize| support::set_path(&format!("set{i:03}"));
    // The API's latency while the control plane works, over HTTP.
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let probe = {
        let (latencies, stop, url) = (
            latencies.clone(),
            CancellationToken::new(),
            format!("{base}{}?api-version=2024-11-01", set_path(0)),
        );
        let handle_stop = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.is_cancelled() {
                let t = Instant::now();
                let _ = http
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        (handle_stop, task)
    };

    let want = sets * 1000;
    eprintln!("creating {sets} sets of 1000 instances ({want} instances) over {hosts} hosts…");
    let t0 = Instant::now();
    for i in 0..sets {
        support::call(
            &router,
            Method::PUT,
            &format!("{}?api-version=2024-11-01", set_path(i)),
            support::set_body(&image, 1000),
        )
        .await;
    }
    let mut last = 0.0;
    let placed = loop {
        let (items, _) = store.list(keys::INSTANCE).await.expect("list");
        let placed = items.len();
        let secs = t0.elapsed().as_secs_f64();
        if secs - last >= 2.0 {
            eprintln!("{secs:6.1}s {placed}/{want} placed");
            last = secs;
        }
        if placed >= want || secs > 600.0 {
            break placed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = t0.elapsed().as_secs_f64();
    probe.0.cancel();
    let _ = probe.1.await;
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    // How evenly the hosts were used.
    let (items, _) = store.list(keys::INSTANCE).await.expect("list");
    let mut per_host: std::collections::HashMap<String, usize> = Default::default();
    for kv in &items {
        let v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        *per_host
            .entry(v["host"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let (min, max) = (
        per_host.values().min().copied().unwrap_or(0),
        per_host.values().max().copied().unwrap_or(0),
    );
    println!(
        "{}",
        json!({
            "hosts": hosts, "sets": sets, "instances_placed": placed,
            "seconds": (elapsed * 100.0).round() / 100.0,
            "placements_per_second": (placed as f64 / elapsed).round(),
            "instances_per_host_min_max": [min, max],
            "api_get_p50_ms": (pct(0.5) * 10.0).round() / 10.0,
            "api_get_p99_ms": (pct(0.99) * 10.0).round() / 10.0,
            "api_get_samples": lat.len(),
        })
    );
    shutdown.cancel();
    tracker.close();
}
