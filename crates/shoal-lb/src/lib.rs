//! `shoal-lb`: Shoal's load-balancer data plane.
//!
//! A [`Balancer`] serves layer-4 TCP listeners (Azure's load-balancing rules) and
//! layer-7 HTTP(S) listeners (a subset of Azure's application gateways) in front of
//! backend pools, probes the pools' members, and ejects members whose connections are
//! refused. It is built on tokio and hyper; there is no proxy product underneath.
//!
//! Data enters through [`Balancer::apply`]: the control plane (or a test) hands it the
//! whole desired [`BalancerConfig`] every time something changes, and the balancer binds,
//! rebinds, closes listeners and swaps pool members to match, without dropping
//! established connections. It leaves through [`Balancer::health`] (plus
//! [`Balancer::health_changes`] to wait for changes), [`Balancer::active`] (in-flight
//! work per member, for draining) and [`Balancer::stats`] (per-pool counters).
//!
//! Layout: `config` (the desired state, validation), `pool` (members, health state,
//! member choice), `health` (probes), `l4` (TCP splicing), `http` (the L7 proxy, its
//! bodies and backend connection pools), `route` (host/path patterns), `affinity` (the
//! cookie), `tls` (certificates), `listener` (accept loops), and `follow` (the control
//! plane's side: keeps a balancer in step with a Shoal server).

mod affinity;
mod config;
mod error;
pub mod follow;
mod health;
mod http;
mod l4;
mod listener;
mod pool;
mod route;
mod sockmap;
mod tls;
mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::affinity::AFFINITY_COOKIE;
pub use crate::config::{
    validate, BalancerConfig, Distribution, HttpRoute, HttpSettings, Listener, ListenerKind,
    Member, Pool, Probe, ProbeProtocol, TcpSettings, TlsCertificate, TlsFiles,
};
pub use crate::error::{CertificateError, LbError};
pub use crate::health::{HealthState, MemberHealth};
pub use crate::pool::PoolStats;
pub use crate::sockmap::ENV as KERNEL_FORWARDING_ENV;

use crate::http::HttpMode;
use crate::l4::TcpMode;
use crate::listener::{ListenerRuntime, Mode};
use crate::pool::{PoolRuntime, Shared};
use crate::route::{HostPattern, PathPrefix, RouteTable};
use crate::workers::Workers;

/// How long a member of a pool *without* a probe stays out after a passive ejection.
pub const PASSIVE_BACKOFF: Duration = Duration::from_secs(10);

/// The data plane. Cheap to clone: every clone is a handle on the same listeners, pools
/// and probers.
///
/// It runs until the `shutdown` token given to [`Balancer::new`] is cancelled; dropping
/// the handles does not stop it. After cancelling, [`Balancer::closed`] waits until
/// in-flight HTTP requests have finished and every task has ended.
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    pools: RwLock<HashMap<String, Arc<PoolRuntime>>>,
    /// Pools removed from the config whose members may still have work in flight.
    retired_pools: RwLock<Vec<Arc<PoolRuntime>>>,
    /// Held for the whole of an `apply`, so applies never interleave.
    listeners: tokio::sync::Mutex<HashMap<String, Arc<ListenerRuntime>>>,
    addrs: RwLock<HashMap<String, SocketAddr>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Balancer {
    /// An empty balancer: no listeners, no pools, connections served on the caller's
    /// runtime. Must be called inside a tokio runtime.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self::build(shutdown, TaskTracker::new(), Workers::default())
    }

    /// An empty balancer whose connections are served by `workers` threads of its own,
    /// each a single-threaded runtime with its own accepting socket per listener
    /// (`SO_REUSEPORT`); a connection stays on the worker that accepted it. Probes and
    /// `apply` run on the caller's runtime.
    pub fn with_workers(shutdown: CancellationToken, workers: usize) -> std::io::Result<Self> {
        let tracker = TaskTracker::new();
        let workers = Workers::start(workers, &shutdown, &tracker)?;
        Ok(Self::build(shutdown, tracker, workers))
    }

    fn build(shutdown: CancellationToken, tracker: TaskTracker, workers: Workers) -> Self {
        let shared = Arc::new(Shared {
            shutdown,
            tracker,
            health_tx: watch::channel(0).0,
            workers,
            kernel_forwarding: std::sync::atomic::AtomicBool::new(crate::sockmap::wanted()),
        });
        let inner = Arc::new(Inner {
            shared: shared.clone(),
            pools: RwLock::default(),
            retired_pools: RwLock::default(),
            listeners: tokio::sync::Mutex::default(),
            addrs: RwLock::default(),
        });
        // On shutdown: stop probers, close idle backend connections.
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let token = shared.shutdown.clone();
        shared.tracker.spawn(async move {
            token.cancelled().await;
            if let Some(inner) = weak.upgrade() {
                for pool in read(&inner.pools).values() {
                    pool.retire();
                }
            }
        });
        Self { inner }
    }

    /// Makes the balancer serve `cfg`.
    ///
    /// - An invalid config ([`validate`]) changes nothing and returns
    ///   [`LbError::InvalidConfig`].
    /// - Pools are updated in place: members with the same id and address keep their
    ///   health, connections and in-flight work; removed members stop taking new work
    ///   and finish what they have; `draining` members likewise.
    /// - Listeners are matched by name. A changed listener on the same address keeps its
    ///   socket and open connections. A new address is bound; if that fails (port taken)
    ///   or an HTTPS listener's certificate cannot be read, that listener stays as it was
    ///   (or absent) and the error names it, while the rest of `cfg` is applied. Removed
    ///   listeners stop accepting at once (the port is free when `apply` returns) and
    ///   finish their in-flight requests.
    pub async fn apply(&self, cfg: BalancerConfig) -> Result<(), LbError> {
        config::validate(&cfg)?;
        let shared = &self.inner.shared;
        let mut listeners = self.inner.listeners.lock().await;
        if shared.shutdown.is_cancelled() {
            return Err(LbError::ShuttingDown);
        }

        let old_pools = read(&self.inner.pools).clone();
        let mut pools = HashMap::with_capacity(cfg.pools.len());
        let mut changed = false;
        for p in &cfg.pools {
            let runtime = old_pools.get(&p.name).cloned().unwrap_or_else(|| {
                changed = true;
                Arc::new(PoolRuntime::new(&p.name))
            });
            changed |= runtime.update(p, shared);
            pools.insert(p.name.clone(), runtime);
        }

        let mut old = std::mem::take(&mut *listeners);
        let mut errors = Vec::new();
        for l in &cfg.listeners {
            let mode = match build_mode(l, &pools) {
                Ok(mode) => mode,
                Err(e) => {
                    errors.push(e);
                    if let Some(kept) = old.remove(&l.name) {
                        listeners.insert(l.name.clone(), kept);
                    }
                    continue;
                }
            };
            if let Some(same) = old.get(&l.name).filter(|rt| rt.bind == l.bind) {
                same.set_mode(mode);
                if let Some(rt) = old.remove(&l.name) {
                    listeners.insert(l.name.clone(), rt);
                }
                continue;
            }
            // A renamed listener on the same address takes over the old socket.
            let takeover = (l.bind.port() != 0)
                .then(|| {
                    old.iter()
                        .find(|(name, rt)| {
                            rt.bind == l.bind && !cfg.listeners.iter().any(|d| &d.name == *name)
                        })
                        .map(|(name, _)| name.clone())
                })
                .flatten();
            if let Some(rt) = takeover.and_then(|name| old.remove(&name)) {
                rt.set_mode(mode);
                listeners.insert(l.name.clone(), rt);
                continue;
            }
            match workers::bind(l.bind, shared.workers.sockets()) {
                Ok(sockets) => {
                    let rt = ListenerRuntime::start(&l.name, l.bind, sockets, mode, shared);
                    if let Some(previous) = old.remove(&l.name) {
                        previous.close().await;
                    }
                    listeners.insert(l.name.clone(), rt);
                }
                Err(source) => {
                    errors.push(LbError::Bind {
                        listener: l.name.clone(),
                        addr: l.bind,
                        source,
                    });
                    if let Some(kept) = old.remove(&l.name) {
                        listeners.insert(l.name.clone(), kept);
                    }
                }
            }
        }
        for (name, rt) in old {
            tracing::info!(listener = %name, "closing removed listener");
            rt.close().await;
        }
        *write(&self.inner.addrs) = listeners
            .iter()
            .map(|(name, rt)| (name.clone(), rt.local))
            .collect();

        {
            let mut retired = write(&self.inner.retired_pools);
            retired.retain(|p| p.members().iter().any(|m| m.active() > 0));
            for (name, p) in &old_pools {
                if !pools.contains_key(name) {
                    changed = true;
                    p.retire();
                    retired.push(p.clone());
                }
            }
        }
        *write(&self.inner.pools) = pools;
        if changed {
            shared.health_changed();
        }
        drop(listeners);

        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(LbError::Listeners(errors)),
        }
    }

    /// Every configured member's health, pools in name order, members in config order.
    pub fn health(&self) -> Vec<MemberHealth> {
        let pools = read(&self.inner.pools);
        let mut names: Vec<&String> = pools.keys().collect();
        names.sort();
        names
            .into_iter()
            .flat_map(|name| pools[name].health())
            .collect()
    }

    /// A counter bumped on every health change (and member-set change); `changed()` on
    /// the receiver wakes when there is something new in [`Balancer::health`].
    pub fn health_changes(&self) -> watch::Receiver<u64> {
        self.inner.shared.health_tx.subscribe()
    }

    /// TCP connections and HTTP requests in flight to a member, including those still
    /// finishing after it was removed from its pool. Drain by setting `draining`,
    /// waiting for this to reach 0, then removing the member.
    pub fn active(&self, pool: &str, member: &str) -> usize {
        let in_pool = |p: &PoolRuntime| -> usize {
            p.all_members_named(member).iter().map(|m| m.active()).sum()
        };
        let current = read(&self.inner.pools).get(pool).map_or(0, |p| in_pool(p));
        let retired: usize = read(&self.inner.retired_pools)
            .iter()
            .filter(|p| &*p.name == pool)
            .map(|p| in_pool(p))
            .sum();
        current + retired
    }

    /// Whether this balancer hands layer-4 connections to the kernel (after their first
    /// exchange): on by default (off with `SHOAL_LB_KERNEL_FORWARDING=off` or
    /// `set_kernel_forwarding(false)`), and only where the process can load the eBPF
    /// program (root, a kernel with `CONFIG_BPF_STREAM_PARSER`); otherwise they are
    /// copied in user space. Connections already forwarded stay so.
    pub fn kernel_forwarding(&self) -> bool {
        self.inner
            .shared
            .kernel_forwarding
            .load(std::sync::atomic::Ordering::Relaxed)
            && crate::sockmap::shared().is_some()
    }

    /// Turns kernel forwarding of new layer-4 connections on or off (see
    /// [`Balancer::kernel_forwarding`]).
    pub fn set_kernel_forwarding(&self, on: bool) {
        self.inner
            .shared
            .kernel_forwarding
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counters per configured pool, in name order.
    pub fn stats(&self) -> Vec<PoolStats> {
        let pools = read(&self.inner.pools);
        let mut stats: Vec<PoolStats> = pools.values().map(|p| p.stats()).collect();
        stats.sort_by(|a, b| a.pool.cmp(&b.pool));
        stats
    }

    /// The address a listener is bound to (the real port when it was configured as 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        read(&self.inner.addrs).get(listener).copied()
    }

    /// Waits for the shutdown token, then for in-flight HTTP requests to finish, TCP
    /// connections to close and every task of the balancer to end.
    pub async fn closed(&self) {
        let shared = &self.inner.shared;
        shared.shutdown.cancelled().await;
        shared.tracker.close();
        shared.tracker.wait().await;
    }
}

fn build_mode(l: &Listener, pools: &HashMap<String, Arc<PoolRuntime>>) -> Result<Mode, LbError> {
    let pool = |name: &str, target: &str| {
        pools
            .get(name)
            .cloned()
            .ok_or_else(|| LbError::InvalidConfig {
                target: format!("listeners[{}].{target}", l.name),
                message: format!("No pool is named '{name}'"),
            })
    };
    let http_mode = |h: &HttpSettings| -> Result<HttpMode, LbError> {
        let mut routes = RouteTable::new(pool(&h.default_pool, "default_pool")?);
        for (i, r) in h.routes.iter().enumerate() {
            let invalid = |field: &str, message: String| LbError::InvalidConfig {
                target: format!("listeners[{}].routes[{i}].{field}", l.name),
                message,
            };
            let host = r
                .host
                .as_deref()
                .map(HostPattern::parse)
                .transpose()
                .map_err(|m| invalid("host", m))?;
            let path = r
                .path_prefix
                .as_deref()
                .map(PathPrefix::parse)
                .transpose()
                .map_err(|m| invalid("path_prefix", m))?;
            routes.push(host, path, pool(&r.pool, &format!("routes[{i}].pool"))?);
        }
        Ok(HttpMode {
            routes,
            request_timeout: h.request_timeout,
            affinity: h.cookie_affinity,
            http2: h.http2,
        })
    };
    Ok(match &l.kind {
        ListenerKind::Tcp(t) => Mode::Tcp(Arc::new(TcpMode {
            pool: pool(&t.pool, "pool")?,
            distribution: t.distribution,
            idle_timeout: t.idle_timeout,
            tcp_reset: t.tcp_reset,
        })),
        ListenerKind::Http(h) => Mode::Http {
            http: Arc::new(http_mode(h)?),
            tls: None,
        },
        ListenerKind::Https { http, tls } => {
            let acceptor = tls::acceptor(&l.name, tls, http.http2)?;
            Mode::Http {
                http: Arc::new(http_mode(http)?),
                tls: Some(acceptor),
            }
        }
    })
}

/// An error and its sources, on one line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
