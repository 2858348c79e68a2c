//! What the benchmark examples share: a server core on a given store, served over HTTP on
//! loopback with authentication off, and the requests that set up an image to scale.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use shoal::{Core, CoreConfig};
use shoal_store::Store;

pub const SUB: &str = "00000000-0000-0000-0000-000000000000";

/// A core on `store` (authentication off), served on 127.0.0.1: its router and base URL.
pub async fn serve(
    store: Arc<dyn Store>,
    dir: &std::path::Path,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> (axum::Router, String) {
    let core = Core::start(
        CoreConfig {
            store,
            clock: Arc::new(shoal_model::clock::SystemClock),
            blob_dir: dir.to_path_buf(),
            certificate_dir: dir.join("certificates"),
            host_timeouts: Default::default(),
            bundles: Default::default(),
            max_capacity: 1000,
            public_ip_range: shoal_api::vnets::default_public_ip_range(),
            identity_header: None,
            page_size: 200,
            authenticate: false,
            authority_url: None,
            tls_certificate_sha256: None,
        },
        tracker,
        shutdown,
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
    (router, base)
}

pub async fn call(router: &axum::Router, method: Method, path: &str, body: Value) -> Value {
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

pub async fn upload_bundle(router: &axum::Router) -> String {
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

/// Registers `names` as hosts (zones 1–3, five fault domains, room for 1000 vCPUs each)
/// and heartbeats for them every 2 s until `stop`, as agents do.
pub async fn register_hosts(router: &axum::Router, names: &[String], stop: CancellationToken) {
    for (i, name) in names.iter().enumerate() {
        call(
            router,
            Method::PUT,
            &format!("/shoal/v1/hosts/{name}"),
            json!({"name": name, "zone": ((i % 3) + 1).to_string(), "fault_domain": (i / 3) % 5,
                   "agent_url": "http://127.0.0.1:1", "driver": "sim", "limits": "", "network": "",
                   "vcpus": 2, "memory_mb": 16384, "last_seen": "", "host_id": name,
                   "capacity_vcpus": 1000, "capacity_memory_mb": 1_000_000}),
        )
        .await;
    }
    let (router, names) = (router.clone(), names.to_vec());
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

/// Group `rg`, gallery `apps` and image version `web/1.0.0` (a tiny bundle): the image id.
pub async fn create_image(router: &axum::Router) -> String {
    call(
        router,
        Method::PUT,
        &format!("/subscriptions/{SUB}/resourcegroups/rg?api-version=2021-04-01"),
        json!({"location": "local"}),
    )
    .await;
    let blob = upload_bundle(router).await;
    let gallery = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/galleries/apps"
    );
    call(
        router,
        Method::PUT,
        &format!("{gallery}?api-version=2024-03-03"),
        json!({"location": "local", "properties": {}}),
    )
    .await;
    call(
        router,
        Method::PUT,
        &format!("{gallery}/images/web?api-version=2024-03-03"),
        json!({"location": "local", "properties": {"osType": "Linux", "osState": "Generalized",
            "identifier": {"publisher": "shoal", "offer": "apps", "sku": "web"}}}),
    )
    .await;
    call(
        router,
        Method::PUT,
        &format!("{gallery}/images/web/versions/1.0.0?api-version=2024-03-03"),
        json!({"location": "local", "properties": {"shoal": {
            "kind": "process", "port": 8080, "blobId": blob, "command": "./web"}}}),
    )
    .await;
    format!("{gallery}/images/web/versions/1.0.0")
}

/// The path of scale set `name` in group `rg`.
pub fn set_path(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/{name}")
}

/// A set of `capacity` instances of `image` over zones 1–3.
pub fn set_body(image: &str, capacity: usize) -> Value {
    json!({"location": "local", "zones": ["1", "2", "3"],
           "sku": {"name": "Shoal_1vCPU_128MB", "capacity": capacity},
           "properties": {"upgradePolicy": {"mode": "Manual"},
             "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}})
}
