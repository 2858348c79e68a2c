//! API latency with and without authentication: the same server core (in-memory store) is
//! served over HTTP on 127.0.0.1 twice, once checking bearer tokens and roles as
//! `shoal serve` does, once with authentication off (`CoreConfig::authenticate`, which only
//! in-process harnesses use; `shoal serve` has no such switch). One keep-alive client sends
//! N sequential requests of each kind; p50/p99 are printed per mode.
//! `cargo run -p shoal --release --example api_auth_latency [-- N]`.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use shoal::{Core, CoreConfig};
use shoal_store::MemoryStore;

const SUB: &str = "00000000-0000-0000-0000-000000000000";

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    for authenticate in [false, true] {
        run(authenticate, n).await;
    }
}

async fn run(authenticate: bool, n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let core = Core::start(
        CoreConfig {
            store: Arc::new(MemoryStore::default()),
            clock: Arc::new(shoal_model::clock::SystemClock),
            blob_dir: dir.path().to_path_buf(),
            certificate_dir: dir.path().join("certificates"),
            host_timeouts: Default::default(),
            bundles: Default::default(),
            max_capacity: 1000,
            public_ip_range: shoal_api::vnets::default_public_ip_range(),
            identity_header: None,
            page_size: 200,
            authenticate,
            authority_url: None,
            tls_certificate_sha256: None,
        },
        &tracker,
        &shutdown,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = core.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    // With authentication: the Owner credential a first start makes, exchanged for a token
    // at the token endpoint, as every client does.
    let token = if authenticate {
        let owner = shoal_api::principals::ensure_owner(core.api(), None)
            .await
            .expect("owner")
            .expect("a new owner");
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
            owner.app_id, owner.password
        );
        let answer: serde_json::Value = http
            .post(format!("{base}/{}/oauth2/v2.0/token", owner.tenant))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token json");
        Some(
            answer["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
        )
    } else {
        None
    };
    let req = |m: reqwest::Method, path: &str| {
        let r = http.request(
            m,
            format!("{base}/subscriptions/{SUB}/{path}?api-version=2024-07-01"),
        );
        match &token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    };
    let put = req(reqwest::Method::PUT, "resourcegroups/bench")
        .json(&serde_json::json!({"location": "local"}))
        .send()
        .await
        .expect("put group");
    assert!(put.status().is_success(), "PUT group: {}", put.status());
    let label = if authenticate {
        "with auth"
    } else {
        "without auth"
    };
    for (what, path) in [
        ("GET group", "resourcegroups/bench"),
        ("list groups", "resourcegroups"),
    ] {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let t = Instant::now();
            let r = req(reqwest::Method::GET, path).send().await.expect("send");
            let ok = r.status().is_success();
            r.bytes().await.expect("body");
            assert!(ok, "{what} failed");
            if i >= n / 10 {
                samples.push(t.elapsed().as_nanos() as u64); // the first 10% warm up
            }
        }
        samples.sort_unstable();
        let pct = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1000.0;
        println!(
            "{label:>12}  {what:<11}  n={n}  mean {mean:.0} µs  p50 {:.0} µs  p99 {:.0} µs",
            pct(0.5),
            pct(0.99)
        );
    }
    shutdown.cancel();
    tracker.close();
}
