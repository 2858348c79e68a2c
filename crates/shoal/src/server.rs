//! [`Core`] (API + control plane) and [`run`] (a core served on listeners, with the local
//! agent and balancer of `shoal serve`).
//!
//! Every task started here belongs to a `TaskTracker` that [`run`] (or the owner of a
//! [`Core`]) closes and waits for after the shutdown token is cancelled, so nothing
//! outlives the call.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use shoal_agent::driver::Driver;
use shoal_agent::AgentConfig;
use shoal_api::ApiState;
use shoal_control::{Clock, Controller};
use shoal_store::Store;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::https;
use crate::leader::{self, Leadership, StartControl};

/// How often etcd's history is compacted (keeping as much), as the Kubernetes apiserver.
const COMPACTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// How this server names itself to the others and in `shoal server status`.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    pub name: String,
    /// The API URL other servers and clients reach this one at.
    pub url: String,
    /// What the store is, for the status of a single server (`redb:<path>`).
    pub store_label: String,
}

/// What the API and the control plane need.
#[derive(Clone)]
pub struct CoreConfig {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Where uploaded bundles are kept.
    pub blob_dir: PathBuf,
    /// The only directory `sslCertificates[].properties.shoal` files may name
    /// (`<data-dir>/certificates` for `shoal serve`).
    pub certificate_dir: PathBuf,
    /// When silent hosts become NotReady and Down.
    pub host_timeouts: shoal_control::hosts::HostTimeouts,
    /// When unreferenced bundles are collected, and the quota of bundles kept.
    pub bundles: shoal_api::bundle_gc::BundlePolicy,
    /// Largest capacity a scale set may ask for (1000, as Azure).
    pub max_capacity: i64,
    /// Where public IP addresses are given from.
    pub public_ip_range: shoal_model::cidr::Cidr,
    /// The secret managed-identity token requests must carry; `None` turns the endpoint off.
    pub identity_header: Option<String>,
    /// Items per page of list answers.
    pub page_size: usize,
    /// Check bearer tokens and roles on every user route (`shoal serve`, `shoal server`);
    /// off only for in-process simulations that call the router directly.
    pub authenticate: bool,
    /// The token authority's public URL (`https://<tls-listen>`), named by discovery and
    /// 401 challenges; `None`: the URL each client used.
    pub authority_url: Option<String>,
    /// SHA-256 (hex) of the https listener's certificate, which join tokens carry.
    pub tls_certificate_sha256: Option<String>,
}

/// A running API and control plane: the router to serve, and the tasks of the controller
/// and the autoscale runner (owned by the tracker given to [`Core::start`]).
#[derive(Clone)]
pub struct Core {
    api: ApiState,
    router: axum::Router,
}

impl Core {
    /// Builds the API and starts the control plane's tasks on `tracker`; they stop when
    /// `shutdown` is cancelled. Binds nothing. The only server: it always leads.
    pub fn start(config: CoreConfig, tracker: &TaskTracker, shutdown: &CancellationToken) -> Core {
        let me = ServerIdentity {
            name: "local".into(),
            url: String::new(),
            store_label: String::new(),
        };
        Core::start_with(config, Leadership::Always, me, tracker, shutdown)
    }

    /// [`Core::start`] for one server among several: the control plane runs only while
    /// `leadership` says this server leads (see [`crate::leader`]); the API, including
    /// `GET /shoal/v1/server/status`, is served either way.
    pub fn start_with(
        config: CoreConfig,
        leadership: Leadership,
        me: ServerIdentity,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Core {
        let metrics = Arc::new(shoal_metrics::MetricsStore::new());
        // The only server answers the API's reads from memory (read-your-writes; see
        // `CachedStore`); servers sharing an etcd read etcd, which other servers write.
        let api_store: Arc<dyn Store> = match &leadership {
            Leadership::Always => shoal_store::CachedStore::new(config.store.clone(), shutdown),
            Leadership::Elected(_) => config.store.clone(),
        };
        let api = ApiState {
            vm_views: Default::default(),
            metrics: metrics.clone(),
            store: api_store.clone(),
            clock: config.clock.clone(),
            blob_dir: config.blob_dir,
            certificate_dir: config.certificate_dir,
            bundles: config.bundles,
            http: reqwest::Client::new(),
            page_size: config.page_size,
            max_capacity: config.max_capacity,
            public_ip_range: config.public_ip_range,
            identity_header: config.identity_header,
            auth: config.authenticate.then(|| {
                shoal_api::auth::AuthState::new(api_store.clone(), config.authority_url.clone())
                    .with_certificate_sha256(config.tls_certificate_sha256.clone())
            }),
            cluster: Arc::new(match leadership {
                Leadership::Always => shoal_api::cluster::Cluster::standalone(&me.name),
                Leadership::Elected(_) => shoal_api::cluster::Cluster::new(&me.name),
            }),
        };
        let (clock, max_capacity) = (config.clock.clone(), config.max_capacity);
        let host_timeouts = config.host_timeouts;
        // The controller reads the galleries for automatic OS image upgrades.
        let images = shoal_api::scalesets::Galleries::of(&api);
        let lead_api = api.clone();
        let start_control: Arc<StartControl> = Arc::new(
            move |store: Arc<dyn Store>, tasks: &TaskTracker, stop: CancellationToken| {
                // The term, in this server's metrics and in the activity log (written
                // through the term's fenced store).
                let (api, term_store, term_end) = (lead_api.clone(), store.clone(), stop.clone());
                tasks.spawn(async move {
                    api.cluster.set_leading(true);
                    let name = api.cluster.name.clone();
                    shoal_api::activity_writes::record_leadership(&api, &*term_store, &name).await;
                    term_end.cancelled().await;
                    api.cluster.set_leading(false);
                });
                #[cfg(debug_assertions)]
                if let Some(every) = std::env::var("SHOAL_DEBUG_FENCE_PROBE_MS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    let name = lead_api.cluster.name.clone();
                    tasks.spawn(fence_probe(store.clone(), name, every, stop.clone()));
                }
                let controller = Controller::new(store.clone(), clock.clone())
                    .with_images(images.clone())
                    .with_host_timeouts(host_timeouts);
                tasks.spawn(controller.run(stop.clone()));
                let autoscale = shoal_control::autoscale_runner::AutoscaleRunner::new(
                    store,
                    clock.clone(),
                    metrics.clone(),
                )
                .with_limits(shoal_control::commands::Limits { max_capacity });
                tasks.spawn(autoscale.run(stop));
            },
        );
        match &leadership {
            Leadership::Always => start_control(config.store.clone(), tracker, shutdown.clone()),
            Leadership::Elected(elector) => {
                tracker.spawn(leader::run_control_plane(
                    elector.clone(),
                    config.clock.clone(),
                    start_control,
                    shutdown.clone(),
                ));
                let compactor =
                    shoal_store::etcd::Compactor::new(elector.store().clone(), COMPACTION_INTERVAL);
                tracker.spawn(compactor.run(shutdown.clone()));
            }
        }
        let status = Arc::new(leader::Status {
            leadership,
            name: me.name,
            url: me.url,
            store_label: me.store_label,
            since: api.now(),
        });
        api.cluster.set_status(status.clone());
        let router = shoal_api::server_status::router(status).merge(shoal_api::router(api.clone()));
        // Every server collects the unreferenced bundles whose files it holds.
        tracker.spawn(shoal_api::bundle_gc::run(api.clone(), shutdown.clone()));
        Core { api, router }
    }

    /// The API as a `tower::Service`: serve it on a listener, or call it in process.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The API's shared state (the store, the clock, the metrics).
    pub fn api(&self) -> &ApiState {
        &self.api
    }

    /// A credential for this server's own agent or balancer (made directly, no join token);
    /// `None` when the server checks no credentials.
    pub async fn local_credential(
        &self,
        role: shoal_api::host_auth::Role,
        name: &str,
    ) -> Result<Option<String>, RunError> {
        let Some(a) = &self.api.auth else {
            return Ok(None);
        };
        shoal_api::host_auth::mint(&self.api, a, role, name)
            .await
            .map(|(token, _)| Some(token))
            .map_err(|e| RunError::Credential(e.message))
    }
}

/// The sockets the API is served on, bound by the caller (so a bad address is refused
/// before anything starts, and tests can bind port 0).
pub struct Listeners {
    pub http: TcpListener,
    pub https: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
}

/// An agent for this machine, run inside the server process (`shoal serve`).
pub struct LocalAgent {
    pub config: AgentConfig,
    pub driver: Arc<dyn Driver>,
}

/// Everything [`run`] starts.
pub struct ServerConfig {
    pub core: CoreConfig,
    /// Where `endpoint` (the API's URL, read by the CLI) is written; `None` writes nothing.
    pub data_dir: Option<PathBuf>,
    /// `shoal serve`: a local agent…
    pub agent: Option<LocalAgent>,
    /// …and a local balancer with this name.
    pub balancer: Option<String>,
    /// Whether this server always runs the control plane or is elected to.
    pub leadership: Leadership,
    /// This server's name (`--name`) and advertised URL (`None`: its http listener's).
    pub name: String,
    pub url: Option<String>,
    pub store_label: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("Cannot read the address of the API listener")]
    LocalAddr(#[source] std::io::Error),
    #[error("The agent failed")]
    Agent(#[source] shoal_agent::AgentError),
    #[error("Cannot start the agent's runtime")]
    AgentRuntime(#[source] std::io::Error),
    #[error("The agent's thread ended without a result (it panicked; see the log above)")]
    AgentThread,
    #[error("Cannot make the owner credential")]
    Owner(#[source] OwnerError),
    #[error("Cannot make the local agent's or balancer's credential: {0}")]
    Credential(String),
}

/// Why the first-start owner credential could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("The directory refused: {0}")]
    Directory(String),
    #[error("Cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a server keeps the Owner credential it made at first start.
pub fn owner_credential_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("credentials").join("owner.json")
}

/// Reads the owner credential a server wrote to `data_dir`, if any.
pub fn read_owner_credential(
    data_dir: &std::path::Path,
) -> Option<shoal_api::principals::OwnerCredential> {
    let text = std::fs::read_to_string(owner_credential_path(data_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Makes sure `<data-dir>/credentials/owner.json` holds a working Owner credential of
/// this server's tenant: kept if it still signs in, else a new principal with Owner on
/// the default subscription, written readable by its owner only.
async fn ensure_owner_credential(
    api: &ApiState,
    data_dir: &std::path::Path,
) -> Result<(), OwnerError> {
    let existing = read_owner_credential(data_dir);
    let made = shoal_api::principals::ensure_owner(api, existing.as_ref())
        .await
        .map_err(|e| OwnerError::Directory(e.message))?;
    let Some(cred) = made else {
        return Ok(());
    };
    let path = owner_credential_path(data_dir);
    let write = |path: &std::path::Path| -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let text = serde_json::to_string_pretty(&cred).unwrap_or_default();
        f.write_all(text.as_bytes())
    };
    write(&path).map_err(|source| OwnerError::Write {
        path: path.clone(),
        source,
    })?;
    tracing::info!(path = %path.display(), app_id = %cred.app_id, tenant = %cred.tenant, subscription = %cred.subscription, "made an Owner credential");
    Ok(())
}

/// Runs the server until `shutdown` is cancelled (or the local agent fails), then waits for
/// every task it started.
pub async fn run(
    config: ServerConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let tracker = TaskTracker::new();
    let local = listeners.http.local_addr().map_err(RunError::LocalAddr)?;
    let me = ServerIdentity {
        name: config.name.clone(),
        url: config
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{}", connect_addr(local))),
        store_label: config.store_label.clone(),
    };
    let core = Core::start_with(config.core, config.leadership, me, &tracker, &shutdown);
    // Before anything listens, so a client that finds the server up finds the credential.
    if let (Some(dir), true) = (&config.data_dir, core.api().auth.is_some()) {
        if let Err(e) = ensure_owner_credential(core.api(), dir).await {
            shutdown.cancel();
            tracker.close();
            tracker.wait().await;
            return Err(RunError::Owner(e));
        }
    }
    if let Some((tcp, tls)) = listeners.https {
        let tls_local = tcp.local_addr().map_err(RunError::LocalAddr)?;
        let listener = https::TlsListener::start(tcp, tls, &tracker, shutdown.clone())
            .map_err(RunError::LocalAddr)?;
        let app = https::https_router(core.router());
        tracker.spawn(shoal_agent::http_serve::serve(
            listener,
            app,
            shutdown.clone(),
            tracker.clone(),
            false,
            tag_peer,
        ));
        tracing::info!("Shoal API listening on https://{}", connect_addr(tls_local));
    }
    tracker.spawn(shoal_agent::http_serve::serve(
        listeners.http,
        core.router(),
        shutdown.clone(),
        tracker.clone(),
        false,
        tag_peer,
    ));
    let endpoint = format!("http://{}", connect_addr(local));
    if let Some(dir) = &config.data_dir {
        let _ = std::fs::write(dir.join("endpoint"), &endpoint);
        tracing::info!(data_dir = %dir.display(), "Shoal API listening on {endpoint}");
    }

    if let Some(name) = config.balancer {
        let credential = core
            .local_credential(shoal_api::host_auth::Role::Balancer, &name)
            .await?;
        let mut client = shoal_client::ServerClient::http(&endpoint);
        if let Some(c) = credential.as_deref() {
            client = client.with_credential(c);
        }
        start_balancer(client, &name, &tracker, &shutdown);
    }
    let mut result = Ok(());
    if let Some(agent) = config.agent {
        let cfg = agent.config;
        let mut client = shoal_client::ServerClient::http(&endpoint);
        if let Some(c) = core
            .local_credential(shoal_api::host_auth::Role::Agent, &cfg.host)
            .await?
        {
            client = client.with_credential(&c);
        }
        result = run_agent_apart(cfg, agent.driver, client, shutdown.clone()).await;
        shutdown.cancel();
    } else {
        shutdown.cancelled().await;
    }
    tracker.close();
    tracker.wait().await;
    result
}

/// Runs the embedded agent on a runtime of its own, on threads of its own, until it ends.
///
/// Starting a thousand instances is mostly blocking file-system work (instance
/// directories, disks, state files, cgroups) that the agent's tasks do on their worker
/// threads; on the server's runtime that queued the API's requests behind it (a GET
/// waited 10-30 ms at the median during a 1000-instance scale-out). On threads of their
/// own, the kernel shares the CPU between the two fairly.
async fn run_agent_apart(
    cfg: shoal_agent::AgentConfig,
    driver: Arc<dyn shoal_agent::driver::Driver>,
    client: shoal_client::ServerClient,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let (done, result) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("shoal-agent".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("shoal-agent")
                .enable_all()
                .build();
            let outcome = match runtime {
                Ok(rt) => rt
                    .block_on(shoal_agent::run(cfg, driver, client, shutdown))
                    .map_err(RunError::Agent),
                Err(e) => Err(RunError::AgentRuntime(e)),
            };
            let _ = done.send(outcome);
        })
        .map_err(RunError::AgentRuntime)?;
    let outcome = result.await.unwrap_or(Err(RunError::AgentThread));
    // The thread ends right after it answered (its runtime is dropped there).
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    outcome
}

/// Runs a load balancer data plane that follows the server at `endpoint` with its
/// `credential`; its tasks belong to `tracker`.
pub fn start_balancer(
    client: shoal_client::ServerClient,
    name: &str,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> shoal_lb::Balancer {
    // One data-plane worker per core, away from the API and the controller.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let balancer = shoal_lb::Balancer::with_workers(shutdown.clone(), workers)
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "no worker threads for the balancer: it serves on the server's runtime");
            shoal_lb::Balancer::new(shutdown.clone())
        });
    let cfg = shoal_lb::follow::FollowConfig {
        name: name.to_string(),
    };
    let (b, token) = (balancer.clone(), shutdown.clone());
    tracker.spawn(async move {
        shoal_lb::follow::run(cfg, b.clone(), client, token).await;
        b.closed().await;
    });
    balancer
}

/// The address to connect to for a listen address (0.0.0.0 means loopback works).
pub fn connect_addr(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
    } else {
        a
    }
}

/// The portal offers the local owner sign-in only to loopback callers: each API request
/// carries its connection's peer address.
fn tag_peer(peer: std::net::SocketAddr, ext: &mut axum::http::Extensions) {
    ext.insert(shoal_api::server::PeerAddr(peer));
}

/// Debug builds only (`SHOAL_DEBUG_FENCE_PROBE_MS=N`): while this server leads, write a
/// marker `debug/fence/<name>/<n>` through the term's store every N ms, writing first and
/// looking whether the term ended after — so a server resumed after a pause attempts a
/// write at once, and the fencing test can show from the store's history that no write
/// of a deposed leader lands after its successor's first.
#[cfg(debug_assertions)]
async fn fence_probe(store: Arc<dyn Store>, name: String, every_ms: u64, stop: CancellationToken) {
    let mut n = 0u64;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(every_ms)).await;
        n += 1;
        let put = shoal_control::kv::put_op(
            format!("debug/fence/{name}/{n:08}"),
            &serde_json::json!({}),
            shoal_store::Expect::Any,
        );
        if let Err(e) = store.txn(vec![put]).await {
            tracing::warn!(error = %e, marker = n, "fence probe: the write was refused");
        }
        if stop.is_cancelled() {
            return;
        }
    }
}
