//! Watch fan-out (issue 13): how long a 1000-instance change takes to reach the agents and
//! balancers that follow the store. One server core (authentication off) on the in-memory
//! store or on etcd, served over HTTP on loopback; three simulated hosts registered and
//! heartbeating; three agent-like followers watching their host's instances
//! (`/shoal/v1/hosts/{h}/instances?watch=true`, as `shoal agent` does) and two
//! balancer-like followers watching every instance record (`/shoal/v1/watch?prefix=instance/`,
//! as `shoal balancer` does), each over its own HTTP connection. Then one scale set of N
//! instances is created. Measured from the PUT: when the store holds all N placed records,
//! when each follower has seen its share, and the lag between the two (the fan-out).
//! `cargo run -p shoal --release --example watch_fanout [-- N [etcd://host:port,…]]`
//! (default 1000 instances on the in-memory store).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::Method;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "support/mod.rs"]
mod support;

use shoal_model::keys;
use shoal_store::{MemoryStore, Store};

/// One follower: a watch over HTTP counting the distinct instance records it was told of.
struct Follower {
    name: String,
    seen: Arc<AtomicUsize>,
    /// When it had seen `want` records (seconds after the PUT), once it has.
    done: tokio::task::JoinHandle<Option<f64>>,
}

/// Lists `list_url` for the revision, then watches `watch_url` from it, counting distinct
/// keys of put events until `want` (or `stop`).
fn follow(
    name: String,
    list_url: String,
    watch_url: String,
    want: Arc<AtomicUsize>,
    t0: Arc<std::sync::OnceLock<Instant>>,
    stop: CancellationToken,
) -> Follower {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let done = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let listed: Value = http.get(&list_url).send().await.ok()?.json().await.ok()?;
        let rev = listed["revision"].as_u64()?;
        let resp = http
            .get(format!("{watch_url}&after={rev}"))
            .send()
            .await
            .ok()?;
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut keys = HashSet::new();
        // A share becomes known only once placement is done, maybe after its last line:
        // look at the target on a short tick too, not only when a line arrives.
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        loop {
            let target = want.load(Ordering::Relaxed);
            if target > 0 && keys.len() >= target {
                return t0.get().map(|t| t.elapsed().as_secs_f64());
            }
            let chunk = tokio::select! {
                _ = stop.cancelled() => return None,
                c = body.next() => c?.ok()?,
                _ = tick.tick() => continue,
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let ev: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                // The store watch carries the record as `value`, the host's as `record`.
                let record = if ev["record"].is_object() {
                    &ev["record"]
                } else {
                    &ev["value"]
                };
                let placed = record["host"].as_str().is_some_and(|h| !h.is_empty());
                if ev["type"] == "put" && placed {
                    if let Some(k) = ev["key"].as_str() {
                        keys.insert(k.to_string());
                    }
                }
                counter.store(keys.len(), Ordering::Relaxed);
            }
        }
    });
    Follower { name, seen, done }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let store_url = args.next();
    let dir = tempfile::tempdir().expect("tempdir");
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let (store, label): (Arc<dyn Store>, String) = match &store_url {
        Some(url) => {
            let config = shoal_store::etcd::EtcdConfig::parse_url(url)
                .expect("an etcd://host:port,… URL")
                .expect("a valid etcd URL");
            let members = config.endpoints.len();
            let etcd = shoal_store::etcd::EtcdStore::connect(config)
                .await
                .expect("connect to etcd");
            (Arc::new(etcd), format!("etcd, {members} member(s)"))
        }
        None => (Arc::new(MemoryStore::default()), "in-memory".into()),
    };
    let (router, base) = support::serve(store.clone(), dir.path(), &tracker, &shutdown).await;
    let hosts: Vec<String> = (1..=3).map(|i| format!("h{i}")).collect();
    support::register_hosts(&router, &hosts, shutdown.clone()).await;
    let image = support::create_image(&router).await;

    // Agents each wait for their own share, which is known only once placement is done;
    // balancers for all N.
    let t0 = Arc::new(std::sync::OnceLock::new());
    let stop = CancellationToken::new();
    let all = Arc::new(AtomicUsize::new(n));
    let shares: Vec<Arc<AtomicUsize>> = hosts
        .iter()
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let mut followers = Vec::new();
    for (h, share) in hosts.iter().zip(&shares) {
        let url = format!("{base}/shoal/v1/hosts/{h}/instances");
        followers.push(follow(
            format!("agent {h}"),
            url.clone(),
            format!("{url}?watch=true"),
            share.clone(),
            t0.clone(),
            stop.clone(),
        ));
    }
    for b in 1..=2 {
        followers.push(follow(
            format!("balancer {b}"),
            format!("{base}/shoal/v1/list?prefix={}", keys::INSTANCE),
            format!("{base}/shoal/v1/watch?prefix={}", keys::INSTANCE),
            all.clone(),
            t0.clone(),
            stop.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("creating a set of {n} instances over 3 hosts ({label})…");
    let _ = t0.set(Instant::now());
    support::call(
        &router,
        Method::PUT,
        &format!("{}?api-version=2024-11-01", support::set_path("fan")),
        support::set_body(&image, n),
    )
    .await;
    let stored = loop {
        let (items, _) = store.list(keys::INSTANCE).await.expect("list");
        let placed: Vec<Value> = items
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap_or(Value::Null))
            .filter(|v: &Value| v["host"].as_str().is_some_and(|h| !h.is_empty()))
            .collect();
        if placed.len() >= n {
            for (h, share) in hosts.iter().zip(&shares) {
                let mine = placed.iter().filter(|v| v["host"] == h.as_str()).count();
                share.store(mine, Ordering::Relaxed);
            }
            break t0.get().expect("started").elapsed().as_secs_f64();
        }
        if t0.get().expect("started").elapsed() > Duration::from_secs(300) {
            panic!("only {} of {n} placed after 300 s", placed.len());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut arrivals = serde_json::Map::new();
    let mut last: f64 = 0.0;
    for f in followers {
        let at = tokio::time::timeout(Duration::from_secs(120), f.done)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        match at {
            Some(secs) => {
                last = last.max(secs);
                arrivals.insert(f.name, json!((secs * 1000.0).round()));
            }
            None => {
                arrivals.insert(
                    f.name,
                    json!(format!(
                        "incomplete: {} seen",
                        f.seen.load(Ordering::Relaxed)
                    )),
                );
            }
        }
    }
    stop.cancel();
    println!(
        "{}",
        json!({
            "store": label, "instances": n,
            "stored_ms": (stored * 1000.0).round(),
            "followers_done_ms": arrivals,
            "fanout_lag_ms": ((last - stored).max(0.0) * 1000.0).round(),
        })
    );
    shutdown.cancel();
    tracker.close();
}
