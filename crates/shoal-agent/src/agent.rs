//! The agent's main loop: register the host, adopt what a previous run left, list and
//! watch the instances assigned here, and keep one supervisor per instance.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shoal_model::records::{HostRecord, InstanceRecord};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::driver::{Driver, Recovered};
use crate::events::EventBoard;
use crate::http::{self, HttpState, Registry};
use crate::images::ImageCache;
use crate::supervisor::{self, AgentContext};
use shoal_client::{Event, ServerClient};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This host's name (unique among agents).
    pub host: String,
    pub zone: Option<String>,
    pub fault_domain: Option<u32>,
    /// The agent's directory: image cache and per-instance notes.
    pub dir: PathBuf,
    /// Where the agent's own endpoint (metadata, logs) listens.
    pub listen: SocketAddr,
    pub stop_grace: Duration,
    pub boot_timeout: Duration,
    /// Instances provisioning or booting at once.
    pub start_concurrency: usize,
    /// Leave instances running when the agent stops cleanly.
    pub keep_instances: bool,
    /// How long in-flight work may take to finish once an instance leaves its pools.
    pub drain_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("Cannot listen on {addr} for the agent endpoint")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("The driver could not list what a previous run left")]
    Recover(#[source] crate::driver::DriverError),
}

/// Runs the agent until `shutdown`, talking to the server through `client`; then stops
/// its instances (unless configured to keep them) and returns once every supervisor has
/// finished.
pub async fn run(
    cfg: AgentConfig,
    driver: Arc<dyn Driver>,
    client: ServerClient,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let agent_url = format!("http://{local}");
    let registry: Registry = Arc::default();
    let events = EventBoard::default();
    let tracker = TaskTracker::new();
    let app = http::router(HttpState {
        registry: registry.clone(),
        driver: driver.clone(),
        events: events.clone(),
    })
    .merge(crate::metrics::router(registry.clone(), client.clone()));
    tracker.spawn(crate::metrics::run(
        registry.clone(),
        driver.clone(),
        client.clone(),
        shutdown.clone(),
    ));
    for ip in driver.metadata_addrs() {
        let addr = SocketAddr::new(ip, local.port());
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                let app = app.clone();
                let token = shutdown.clone();
                tracker.spawn(async move {
                    let _ = axum::serve(l, app)
                        .with_graceful_shutdown(token.cancelled_owned())
                        .await;
                });
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "instances on their own network cannot reach the metadata endpoint")
            }
        }
    }
    {
        let token = shutdown.clone();
        tracker.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
    }

    let ctx = Arc::new(AgentContext {
        host: cfg.host.clone(),
        driver: driver.clone(),
        client: client.clone(),
        images: ImageCache::new(cfg.dir.join("images"), client.clone()),
        agent_url: agent_url.clone(),
        state_dir: cfg.dir.join("applied"),
        stop_grace: cfg.stop_grace,
        boot_timeout: cfg.boot_timeout,
        start_slots: Semaphore::new(cfg.start_concurrency.max(1)),
        capabilities: driver.capabilities(),
        clock: Arc::new(|| {
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S%.7fZ")
                .to_string()
        }),
        keep_instances: cfg.keep_instances,
        events,
        drain_timeout: cfg.drain_timeout,
    });
    let host = HostRecord {
        name: cfg.host.clone(),
        zone: cfg.zone.clone(),
        fault_domain: cfg.fault_domain,
        agent_url,
        driver: driver.kind().to_string(),
        limits: ctx.capabilities.limits.clone(),
        network: ctx.capabilities.network.clone(),
        vcpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_mb: host_memory_mb(),
        last_seen: String::new(),
    };

    let mut recovered: HashMap<String, Recovered> = driver
        .recover()
        .await
        .map_err(AgentError::Recover)?
        .into_iter()
        .map(|r| (r.key.0.clone(), r))
        .collect();
    if !recovered.is_empty() {
        tracing::info!(
            count = recovered.len(),
            "found instances from a previous run"
        );
    }

    let mut sups: HashMap<String, watch::Sender<InstanceRecord>> = HashMap::new();
    let sup_shutdown = CancellationToken::new();
    let mut registered = false;
    let mut first_list = true;
    let mut refresh = tokio::time::interval(Duration::from_secs(15));
    'outer: loop {
        if shutdown.is_cancelled() {
            break;
        }
        if !registered {
            match client.register(&host).await {
                Ok(()) => {
                    registered = true;
                    tracing::info!(host = %cfg.host, server = %client.target(), "agent registered");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register with the server yet; retrying");
                    if sleep_or_stop(&shutdown, Duration::from_millis(500)).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let (items, rev) = match client.host_instances(&cfg.host).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list this host's instances; retrying");
                if sleep_or_stop(&shutdown, Duration::from_millis(500)).await {
                    break;
                }
                continue;
            }
        };
        let listed: HashMap<String, InstanceRecord> = items
            .iter()
            .filter_map(|kv| decode(&kv.key, &kv.value))
            .map(|r| (r.slug(), r))
            .collect();
        // Supervisors whose record vanished while we were not watching.
        sups.retain(|slug, _| listed.contains_key(slug));
        registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|slug, _| listed.contains_key(slug));
        for (slug, rec) in listed {
            apply(
                &ctx,
                &mut sups,
                &registry,
                &mut recovered,
                &tracker,
                &sup_shutdown,
                slug,
                rec,
            );
        }
        if first_list {
            first_list = false;
            for (slug, orphan) in recovered.drain() {
                tracing::info!(instance = %slug, "removing an instance no scale set asks for");
                if let Err(e) = driver.destroy(&orphan.key).await {
                    tracing::warn!(instance = %slug, error = %e, "cannot remove orphan instance");
                }
            }
        }
        let mut events = match client.watch_host_instances(&cfg.host, rev).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch this host's instances; retrying");
                if sleep_or_stop(&shutdown, Duration::from_millis(500)).await {
                    break;
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                _ = refresh.tick() => {
                    if let Err(e) = client.register(&host).await {
                        tracing::warn!(error = %e, "host refresh failed");
                    }
                }
                ev = events.next() => match ev {
                    Some(Ok(Event::Put(kv))) => {
                        if let Some(rec) = decode(&kv.key, &kv.value) {
                            let slug = rec.slug();
                            apply(&ctx, &mut sups, &registry, &mut recovered, &tracker, &sup_shutdown, slug, rec);
                        }
                    }
                    Some(Ok(Event::Delete { key, .. })) => {
                        if let Some(slug) = slug_of_key(&key, &sups) {
                            sups.remove(&slug);
                            registry.write().unwrap_or_else(|p| p.into_inner()).remove(&slug);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "watch ended; listing again");
                        continue 'outer;
                    }
                    None => continue 'outer,
                }
            }
        }
    }
    tracing::info!(
        instances = sups.len(),
        keep = cfg.keep_instances,
        "agent stopping"
    );
    sup_shutdown.cancel();
    drop(sups);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn apply(
    ctx: &Arc<AgentContext>,
    sups: &mut HashMap<String, watch::Sender<InstanceRecord>>,
    registry: &Registry,
    recovered: &mut HashMap<String, Recovered>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    slug: String,
    rec: InstanceRecord,
) {
    registry
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(slug.clone(), rec.clone());
    match sups.get(&slug) {
        Some(tx) => {
            tx.send_if_modified(|cur| {
                if *cur == rec {
                    false
                } else {
                    *cur = rec.clone();
                    true
                }
            });
        }
        None => {
            let tx = supervisor::spawn(
                ctx.clone(),
                rec,
                recovered.remove(&slug),
                tracker,
                shutdown.clone(),
            );
            sups.insert(slug, tx);
        }
    }
}

/// The supervisor slug for a removed record's key (`instance/{sub}/{rg}/{vmss}/{id}`).
fn slug_of_key(key: &str, sups: &HashMap<String, watch::Sender<InstanceRecord>>) -> Option<String> {
    sups.iter()
        .find(|(_, tx)| tx.borrow().key() == key)
        .map(|(slug, _)| slug.clone())
}

fn decode(key: &str, value: &[u8]) -> Option<InstanceRecord> {
    serde_json::from_slice(value)
        .inspect_err(|e| tracing::warn!(%key, error = %e, "skipping an unreadable instance record"))
        .ok()
}

async fn sleep_or_stop(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}
