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
use tower::ServiceExt;

use shoal::{Core, CoreConfig};
use shoal_model::keys;
use shoal_store::{MemoryStore, Store};

const SUB: &str = "00000000-0000-0000-0000-000000000000";

async fn call(router: &axum::Router, method: Method, path: &str, body: Value) -> Value {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

async fn upload_bundle(router: &axum::Router) -> String {
    let mut tar = tar::Builder::new(Vec::new());
    let data = b"#!/bin/sh\nexit 0\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "web", &data[..])
        .expect("tar entry");
    let req = http::Request::builder()
        .method(Method::POST)
        .uri("/shoal/v1/blobs")
        .header("content-type", "application/x-tar")
        .body(axum::body::Body::from(tar.into_inner().expect("tar")))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    v["blobId"].as_str().expect("blobId").to_string()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let sets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let store = Arc::new(MemoryStore::default());
    let core = Core::start(
        CoreConfig {
            store: store.clone(),
            clock: Arc::new(shoal_model::clock::SystemClock),
            blob_dir: dir.path().to_path_buf(),
            certificate_dir: dir.path().join("certificates"),
            host_timeouts: Default::default(),
            bundles: Default::default(),
            max_capacity: 1000,
            identity_header: None,
            page_size: 200,
            authenticate: false,
            authority_url: None,
            tls_certificate_sha256: None,
        },
        &tracker,
        &shutdown,
    );
    let router = core.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    {
        let router = router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
    }

    eprintln!("registering {hosts} hosts…");
    let names: Vec<String> = (0..hosts).map(|i| format!("sim{i:04}")).collect();
    for (i, name) in names.iter().enumerate() {
        call(
            &router,
            Method::PUT,
            &format!("/shoal/v1/hosts/{name}"),
            json!({"name": name, "zone": ((i % 3) + 1).to_string(), "fault_domain": (i / 3) % 5,
                   "agent_url": "http://127.0.0.1:1", "driver": "sim", "limits": "", "network": "",
                   "vcpus": 2, "memory_mb": 16384, "last_seen": "", "host_id": name,
                   "capacity_vcpus": 1000, "capacity_memory_mb": 1_000_000}),
        )
        .await;
    }
    // Every host heartbeats every 2 s, as agents do (part of the load being measured).
    {
        let (router, names, stop) = (router.clone(), names.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            while !stop.is_cancelled() {
                tick.tick().await;
                for name in &names {
                    call(
                        &router,
                        Method::POST,
                        &format!("/shoal/v1/hosts/{name}/heartbeat"),
                        Value::Null,
                    )
                    .await;
                }
            }
        });
    }

    call(
        &router,
        Method::PUT,
        &format!("/subscriptions/{SUB}/resourcegroups/rg?api-version=2021-04-01"),
        json!({"location": "local"}),
    )
    .await;
    let blob = upload_bundle(&router).await;
    let gallery = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/galleries/apps"
    );
    call(
        &router,
        Method::PUT,
        &format!("{gallery}?api-version=2024-03-03"),
        json!({"location": "local", "properties": {}}),
    )
    .await;
    call(
        &router,
        Method::PUT,
        &format!("{gallery}/images/web?api-version=2024-03-03"),
        json!({"location": "local", "properties": {"osType": "Linux", "osState": "Generalized",
            "identifier": {"publisher": "shoal", "offer": "apps", "sku": "web"}}}),
    )
    .await;
    call(
        &router,
        Method::PUT,
        &format!("{gallery}/images/web/versions/1.0.0?api-version=2024-03-03"),
        json!({"location": "local", "properties": {"shoal": {
            "kind": "process", "port": 8080, "blobId": blob, "command": "./web"}}}),
    )
    .await;

    let set_path = |i: usize| {
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/set{i:03}")
    };
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
    let image = format!("{gallery}/images/web/versions/1.0.0");
    let t0 = Instant::now();
    for i in 0..sets {
        call(
            &router,
            Method::PUT,
            &format!("{}?api-version=2024-11-01", set_path(i)),
            json!({"location": "local", "zones": ["1", "2", "3"],
                   "sku": {"name": "Shoal_1vCPU_128MB", "capacity": 1000},
                   "properties": {"upgradePolicy": {"mode": "Manual"},
                     "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}}),
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
