//! The agent's main loop: register the host, adopt what a previous run left, follow the
//! instances assigned here (a [`Reflector`] over the server's per-host watch, so each
//! record is decoded once), keep one supervisor per instance, and send a heartbeat every
//! [`AgentConfig::heartbeat_interval`] (the server declares a silent host Down and
//! places its instances again elsewhere).
//!
//! Fencing: an instance placed again on another host leaves this host's watch (or its
//! next list, after a cut), so its supervisor here stops it before anything else; the
//! server also refuses this host's statuses for it. An agent that is killed or restarted
//! leaves its instances running and adopts them (the data plane outlives it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_client::{HostSource, ServerClient};
use shoal_model::clock::Clock;
use shoal_model::records::{HostRecord, InstanceRecord};
use shoal_store::watcher::Reflector;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::driver::{Driver, Recovered};
use crate::events::EventBoard;
use crate::http::{self, HttpState, Registry};
use crate::images::ImageCache;
use crate::supervisor::{self, AgentContext};

#[derive(Clone)]
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
    /// Where the agent reads "now" (status times, scheduled events' `NotBefore`).
    pub clock: Arc<dyn Clock>,
    /// How often the agent tells the server it is alive (2 s by default).
    pub heartbeat_interval: Duration,
    /// The address other hosts reach this one at (next hop of their routes to this
    /// host's instances); `None` on a host nobody routes to.
    pub address: Option<std::net::Ipv4Addr>,
    /// What may be placed here; `None`: the server's overcommitted defaults.
    pub capacity_vcpus: Option<u32>,
    pub capacity_memory_mb: Option<u64>,
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
    #[error("Cannot read or make the instance identity key in the agent's directory")]
    IdentityKey(#[source] std::io::Error),
    #[error("The server refused to register this host ({status}): {message}")]
    Refused { status: u16, message: String },
}

/// A registration the server refused for good (bad record, taken name or range, revoked
/// credential): retrying cannot help, so the agent stops and says why.
fn refused_for_good(e: &shoal_client::ClientError) -> Option<AgentError> {
    let shoal_client::ClientError::Refused { status, body, .. } = e else {
        return None;
    };
    if !matches!(status, 400 | 401 | 403 | 409) {
        return None;
    }
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| body.clone());
    let message = if *status == 401 {
        format!("{message} (the saved credential was revoked or belongs to another server: delete agent-credential.json and join again with a new --join-token)")
    } else {
        message
    };
    Some(AgentError::Refused {
        status: *status,
        message,
    })
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
    let events = EventBoard::new(cfg.clock.clone());
    let tracker = TaskTracker::new();
    let identity =
        crate::identity::Identity::load(&cfg.dir, client.clone(), registry.clone(), driver.clone())
            .map_err(AgentError::IdentityKey)?;
    let app = http::router(
        HttpState {
            registry: registry.clone(),
            driver: driver.clone(),
            events: events.clone(),
        },
        identity.clone(),
    )
    .merge(crate::metrics::router(registry.clone(), client.clone()));
    let mut this_host: Vec<std::net::IpAddr> = vec![local.ip()];
    this_host.extend(cfg.address.map(std::net::IpAddr::V4));
    this_host.extend(driver.metadata_addrs());
    let callers =
        crate::callers::Callers::new(this_host, driver.subnet().as_deref(), client.target())
            .await
            .with_driver(driver.clone());
    let app = app.layer(axum::middleware::from_fn_with_state(
        Arc::new(callers),
        crate::callers::guard,
    ));
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
                tracker.spawn(crate::http_serve::serve(
                    l,
                    app,
                    token,
                    tracker.clone(),
                    true,
                    |_, _| {},
                ));
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "instances on their own network cannot reach the metadata endpoint")
            }
        }
    }
    {
        let token = shutdown.clone();
        tracker.spawn(crate::http_serve::serve(
            listener,
            app,
            token,
            tracker.clone(),
            true,
            |_, _| {},
        ));
    }

    let state_dir = cfg.dir.join("applied");
    if let Err(e) = std::fs::create_dir_all(&state_dir) {
        tracing::warn!(dir = %state_dir.display(), error = %e, "Cannot create the directory of the agent's notes");
    }
    let ctx = Arc::new(AgentContext {
        host: cfg.host.clone(),
        driver: driver.clone(),
        client: client.clone(),
        reports: crate::reports::Reports::start(client.clone()),
        images: ImageCache::new(cfg.dir.join("images"), client.clone()),
        agent_url: agent_url.clone(),
        applied: crate::applied::AppliedLog::open(&state_dir),
        stop_grace: cfg.stop_grace,
        boot_timeout: cfg.boot_timeout,
        start_slots: Semaphore::new(cfg.start_concurrency.max(1)),
        capabilities: driver.capabilities(),
        clock: {
            let clock = cfg.clock.clone();
            Arc::new(move || shoal_model::clock::arm_time(clock.now()))
        },
        keep_instances: cfg.keep_instances,
        events,
        drain_timeout: cfg.drain_timeout,
        identity: Some(identity),
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
        host_id: host_id(&cfg.dir),
        cordoned: false,
        draining: false,
        capacity_vcpus: cfg.capacity_vcpus,
        capacity_memory_mb: cfg.capacity_memory_mb,
        subnet: driver.subnet(),
        address: cfg.address.map(|a| a.to_string()),
        max_instances: driver.max_instances(),
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
    let mut instances: Reflector<InstanceRecord> = Reflector::new(
        Arc::new(HostSource::new(client.clone(), &cfg.host)),
        HostSource::PREFIX,
    );
    let mut orphans_removed = false;
    let mut refresh = tokio::time::interval(Duration::from_secs(15));
    let mut heartbeat =
        tokio::time::interval(cfg.heartbeat_interval.max(Duration::from_millis(100)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match client.register(&host).await {
            Ok(()) => {
                tracing::info!(host = %cfg.host, server = %client.target(), "agent registered");
                break;
            }
            Err(e) => {
                if let Some(fatal) = refused_for_good(&e) {
                    sup_shutdown.cancel();
                    shutdown.cancel();
                    tracker.close();
                    tracker.wait().await;
                    return Err(fatal);
                }
                tracing::warn!(error = %e, "cannot register with the server yet; retrying");
                if sleep_or_stop(&shutdown, Duration::from_millis(500)).await {
                    break;
                }
            }
        }
    }
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = refresh.tick() => {
                if let Err(e) = client.register(&host).await {
                    tracing::warn!(error = %e, "host refresh failed");
                }
            }
            _ = heartbeat.tick() => {
                match client.heartbeat(&cfg.host).await {
                    Ok(Some(peers)) => {
                        if let Err(e) = driver.route_peers(&peers) {
                            tracing::warn!(error = %e, "cannot route to other hosts' instances");
                        }
                    }
                    // The server forgot the host (deleted): register again.
                    Ok(None) => {
                        if let Err(e) = client.register(&host).await {
                            tracing::warn!(error = %e, "host registration failed");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
                }
            }
            changes = instances.changed() => {
                for change in changes {
                    match (change.new, change.old) {
                        (Some(rec), _) => {
                            let slug = rec.slug();
                            let rec = InstanceRecord::clone(&rec);
                            apply(&ctx, &mut sups, &registry, &mut recovered, &tracker, &sup_shutdown, slug, rec);
                        }
                        // Its supervisor stops (and removes the instance) when dropped.
                        (None, Some(old)) => {
                            let slug = old.slug();
                            sups.remove(&slug);
                            registry.write().unwrap_or_else(|p| p.into_inner()).remove(&slug);
                        }
                        (None, None) => {}
                    }
                }
                if instances.is_listed() && !orphans_removed {
                    orphans_removed = true;
                    for (slug, orphan) in recovered.drain() {
                        tracing::info!(instance = %slug, "removing an instance no scale set asks for");
                        if let Err(e) = driver.destroy(&orphan.key).await {
                            tracing::warn!(instance = %slug, error = %e, "cannot remove orphan instance");
                        }
                    }
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

async fn sleep_or_stop(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// This agent's identity, kept in its directory across restarts (a second agent with
/// the same host name has another).
fn host_id(dir: &std::path::Path) -> String {
    let path = dir.join("host-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let _ = std::fs::create_dir_all(dir);
    if let Err(e) = std::fs::write(&path, &id) {
        tracing::warn!(error = %e, "cannot keep the host id; a restart gets a new one");
    }
    id
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
