//! Backend pools at run time: members, their health and counters, and member choice.
//!
//! A [`PoolRuntime`] lives as long as a pool of that name is configured; `apply` swaps
//! its member list. A [`Member`] lives as long as a member with that id *and address* is
//! configured, plus as long as anything in flight still holds it: a removed member's
//! requests and connections finish against it, and its idle backend connections close
//! when it is dropped.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Probe};
use crate::health::{HealthState, MemberHealth};
use crate::http::backend::IdleConn;

/// Things every part of a balancer shares.
pub(crate) struct Shared {
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) health_tx: watch::Sender<u64>,
    /// The threads connections run on.
    pub(crate) workers: crate::workers::Workers,
    /// Whether layer-4 connections may be handed to the kernel (see [`crate::sockmap`]).
    pub(crate) kernel_forwarding: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn health_changed(&self) {
        self.health_tx.send_modify(|n| *n = n.wrapping_add(1));
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters of one pool; see [`PoolStats`].
#[derive(Default)]
pub(crate) struct PoolCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) responses_5xx: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) kernel_forwarded: AtomicU64,
}

/// Traffic counters of one pool, from [`Balancer::stats`](crate::Balancer::stats).
/// Totals count since the pool was first configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub pool: String,
    /// HTTP requests (L7) plus TCP connections (L4) routed to this pool.
    pub requests: u64,
    /// HTTP responses with a 5xx status, the balancer's own 502/503/504 included.
    pub responses_5xx: u64,
    /// TCP connections open and HTTP requests in flight right now.
    pub active: u64,
    /// Bytes from clients to members (HTTP bodies; everything for L4).
    pub bytes_in: u64,
    /// Bytes from members to clients.
    pub bytes_out: u64,
    /// TCP connections (L4) whose bytes the kernel forwarded (sockmap) instead of the
    /// balancer copying them.
    pub kernel_forwarded: u64,
    /// Members that may take new traffic right now.
    pub routable_members: usize,
    pub members: usize,
}

struct HealthRecord {
    state: HealthState,
    since: Instant,
    last_error: Option<String>,
    failures: u32,
    /// Whether an `Unknown` member takes traffic (see [`HealthState::Unknown`]).
    admitted: bool,
    probed: bool,
    /// Bumped by every passive ejection, so a stale re-admission timer does nothing.
    ejections: u64,
}

/// One member of one pool.
pub(crate) struct Member {
    pub(crate) pool: Arc<str>,
    pub(crate) id: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) counters: Arc<PoolCounters>,
    draining: AtomicBool,
    routable: AtomicBool,
    active: AtomicUsize,
    /// Connections (L4) and requests (L7) sent to this member, ever.
    served: AtomicU64,
    health: Mutex<HealthRecord>,
    /// Idle keep-alive connections for the L7 proxy, most recently used at the back.
    pub(crate) idle: Mutex<std::collections::VecDeque<IdleConn>>,
    /// The same for the lean HTTP/1.1 proxy ([`crate::http::h1`]).
    pub(crate) idle_h1: Mutex<Vec<crate::http::h1::IdleStream>>,
    shared: Arc<Shared>,
    /// Cancelled when the member leaves its pool; its prober stops.
    retired: CancellationToken,
    prober: Mutex<Option<(Probe, CancellationToken)>>,
}

impl Member {
    fn new(pool: &PoolRuntime, cfg: &config::Member, probed: bool, shared: &Arc<Shared>) -> Self {
        Self {
            pool: pool.name.clone(),
            id: cfg.id.as_str().into(),
            addr: cfg.addr,
            counters: pool.counters.clone(),
            draining: AtomicBool::new(cfg.draining),
            routable: AtomicBool::new(!cfg.draining && !probed),
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            health: Mutex::new(HealthRecord {
                state: HealthState::Unknown,
                since: Instant::now(),
                last_error: None,
                failures: 0,
                admitted: !probed,
                probed,
                ejections: 0,
            }),
            idle: Mutex::default(),
            idle_h1: Mutex::default(),
            shared: shared.clone(),
            retired: shared.shutdown.child_token(),
            prober: Mutex::new(None),
        }
    }

    /// May new connections and requests go here?
    #[inline]
    pub(crate) fn routable(&self) -> bool {
        self.routable.load(Ordering::Relaxed)
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    fn update_routable(&self, h: &HealthRecord) {
        let up = match h.state {
            HealthState::Healthy => true,
            HealthState::Unknown => h.admitted,
            HealthState::Unhealthy => false,
        };
        let routable = up && !self.draining.load(Ordering::Relaxed);
        self.routable.store(routable, Ordering::Relaxed);
    }

    fn set_state(&self, h: &mut HealthRecord, state: HealthState) -> bool {
        if h.state == state {
            return false;
        }
        h.state = state;
        h.since = Instant::now();
        self.update_routable(h);
        true
    }

    pub(crate) fn record_probe(&self, probe: &Probe, outcome: Result<(), String>) {
        let changed = {
            let mut h = lock(&self.health);
            match outcome {
                Ok(()) => {
                    h.failures = 0;
                    self.set_state(&mut h, HealthState::Healthy)
                }
                Err(error) => {
                    h.failures = h.failures.saturating_add(1);
                    let changed_error = h.last_error.as_deref() != Some(error.as_str());
                    if changed_error {
                        tracing::debug!(pool = %self.pool, member = %self.id, %error, "probe failed");
                    }
                    h.last_error = Some(error);
                    let flipped = h.failures >= probe.threshold
                        && self.set_state(&mut h, HealthState::Unhealthy);
                    flipped || changed_error
                }
            }
        };
        if changed {
            self.shared.health_changed();
        }
    }

    /// Passive health: a connection to this member was refused or reset. It takes no
    /// traffic until its probe succeeds, or, in a pool without a probe, until
    /// [`PASSIVE_BACKOFF`](crate::PASSIVE_BACKOFF) has passed.
    pub(crate) fn eject(self: &Arc<Self>, error: String) {
        // Lock order everywhere: prober, then health.
        let threshold = lock(&self.prober).as_ref().map(|(p, _)| p.threshold);
        let (changed, readmit) = {
            let mut h = lock(&self.health);
            h.ejections += 1;
            h.last_error = Some(error);
            if let Some(threshold) = threshold {
                h.failures = h.failures.max(threshold);
            }
            let changed = self.set_state(&mut h, HealthState::Unhealthy);
            (changed, (!h.probed).then_some(h.ejections))
        };
        if changed {
            tracing::info!(pool = %self.pool, member = %self.id, addr = %self.addr, "member ejected");
            self.shared.health_changed();
        }
        self.close_idle();
        if let Some(ejection) = readmit {
            let member = self.clone();
            self.shared.tracker.spawn(async move {
                tokio::select! {
                    _ = member.retired.cancelled() => {}
                    _ = tokio::time::sleep(crate::PASSIVE_BACKOFF) => member.readmit(ejection),
                }
            });
        }
    }

    fn readmit(&self, ejection: u64) {
        let changed = {
            let mut h = lock(&self.health);
            if h.ejections != ejection || h.probed {
                return;
            }
            h.admitted = true;
            self.set_state(&mut h, HealthState::Unknown)
        };
        if changed {
            self.shared.health_changed();
        }
    }

    fn set_draining(&self, draining: bool) -> bool {
        if self.draining.swap(draining, Ordering::Relaxed) == draining {
            return false;
        }
        if draining {
            // Nothing new goes there; idle connections would only hold its sockets.
            self.close_idle();
        }
        let h = lock(&self.health);
        self.update_routable(&h);
        true
    }

    /// Starts, restarts or stops the prober to match `probe`.
    fn set_probe(self: &Arc<Self>, probe: Option<&Probe>) {
        let mut current = lock(&self.prober);
        if current.as_ref().map(|(p, _)| p) == probe {
            return;
        }
        if let Some((_, stop)) = current.take() {
            stop.cancel();
        }
        {
            let mut h = lock(&self.health);
            h.probed = probe.is_some();
            if !h.probed && h.state == HealthState::Unknown {
                h.admitted = true;
            }
            h.failures = 0;
            self.update_routable(&h);
        }
        if let Some(probe) = probe {
            let stop = self.retired.child_token();
            *current = Some((probe.clone(), stop.clone()));
            let member = self.clone();
            let probe = probe.clone();
            self.shared
                .tracker
                .spawn(crate::health::run_prober(member, probe, stop));
        }
    }

    /// The member left its pool: stop probing, close idle connections. In-flight work
    /// holds the `Arc` and finishes.
    /// Closes the idle keep-alive connections to this member.
    fn close_idle(&self) {
        lock(&self.idle).clear();
        lock(&self.idle_h1).clear();
    }

    fn retire(&self) {
        self.retired.cancel();
        self.routable.store(false, Ordering::Relaxed);
        self.close_idle();
    }

    fn snapshot(&self) -> MemberHealth {
        let h = lock(&self.health);
        MemberHealth {
            pool: self.pool.to_string(),
            member: self.id.to_string(),
            addr: self.addr,
            state: h.state,
            since: h.since,
            last_error: h.last_error.clone(),
            draining: self.draining.load(Ordering::Relaxed),
            routable: self.routable(),
            served: self.served.load(Ordering::Relaxed),
        }
    }
}

/// Counts one connection or request against a member (and its pool) while alive.
pub(crate) struct ActiveGuard(pub(crate) Arc<Member>);

impl ActiveGuard {
    pub(crate) fn new(member: Arc<Member>) -> Self {
        member.active.fetch_add(1, Ordering::Relaxed);
        member.served.fetch_add(1, Ordering::Relaxed);
        member.counters.active.fetch_add(1, Ordering::Relaxed);
        Self(member)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One pool at run time.
pub(crate) struct PoolRuntime {
    pub(crate) name: Arc<str>,
    members: RwLock<Arc<[Arc<Member>]>>,
    /// Members removed from the pool, while anything still holds them.
    retired: Mutex<Vec<std::sync::Weak<Member>>>,
    next: AtomicUsize,
    pub(crate) counters: Arc<PoolCounters>,
}

impl PoolRuntime {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            members: RwLock::new(Arc::from(Vec::new())),
            retired: Mutex::default(),
            next: AtomicUsize::new(0),
            counters: Arc::default(),
        }
    }

    pub(crate) fn members(&self) -> Arc<[Arc<Member>]> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes the member set match `cfg`. Members with the same id and address keep their
    /// health, counters and connections. Returns whether anything changed.
    pub(crate) fn update(&self, cfg: &config::Pool, shared: &Arc<Shared>) -> bool {
        let old = self.members();
        let probed = cfg.probe.is_some();
        let mut changed = false;
        let mut next = Vec::with_capacity(cfg.members.len());
        for m in &cfg.members {
            let existing = old
                .iter()
                .find(|o| *o.id == *m.id && o.addr == m.addr)
                .cloned();
            let member = match existing {
                Some(member) => {
                    changed |= member.set_draining(m.draining);
                    member
                }
                None => {
                    changed = true;
                    Arc::new(Member::new(self, m, probed, shared))
                }
            };
            member.set_probe(cfg.probe.as_ref());
            next.push(member);
        }
        {
            let mut retired = lock(&self.retired);
            retired.retain(|w| w.strong_count() > 0);
            for o in old.iter() {
                if !next.iter().any(|n| Arc::ptr_eq(n, o)) {
                    changed = true;
                    o.retire();
                    retired.push(Arc::downgrade(o));
                }
            }
        }
        *self.members.write().unwrap_or_else(PoisonError::into_inner) = Arc::from(next);
        changed
    }

    /// The pool is no longer configured.
    pub(crate) fn retire(&self) {
        for m in self.members().iter() {
            m.retire();
        }
    }

    /// Round robin over routable members, skipping `exclude`.
    pub(crate) fn pick_round_robin(&self, exclude: Option<&Arc<Member>>) -> Option<Arc<Member>> {
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        let n = members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &members[start.wrapping_add(i) % n])
            .find(|m| m.routable() && !exclude.is_some_and(|e| Arc::ptr_eq(e, m)))
            .cloned()
    }

    /// Rendezvous hashing: the routable member with the highest hash of (`key`, id).
    pub(crate) fn pick_hashed(
        &self,
        key: u64,
        exclude: Option<&Arc<Member>>,
    ) -> Option<Arc<Member>> {
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        members
            .iter()
            .filter(|m| m.routable() && !exclude.is_some_and(|e| Arc::ptr_eq(e, m)))
            .max_by_key(|m| {
                let mut h = std::hash::DefaultHasher::new();
                key.hash(&mut h);
                m.id.hash(&mut h);
                h.finish()
            })
            .cloned()
    }

    /// Current and removed-but-busy members with this id.
    pub(crate) fn all_members_named(&self, id: &str) -> Vec<Arc<Member>> {
        let mut all: Vec<Arc<Member>> = self
            .members()
            .iter()
            .filter(|m| *m.id == *id)
            .cloned()
            .collect();
        all.extend(
            lock(&self.retired)
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .filter(|m| *m.id == *id),
        );
        all
    }

    /// The member with this id, routable or not.
    pub(crate) fn find(&self, id: &str) -> Option<Arc<Member>> {
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        members.iter().find(|m| *m.id == *id).cloned()
    }

    pub(crate) fn health(&self) -> impl Iterator<Item = MemberHealth> {
        let members = self.members();
        (0..members.len()).map(move |i| members[i].snapshot())
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let c = &self.counters;
        let members = self.members();
        PoolStats {
            pool: self.name.to_string(),
            requests: c.requests.load(Ordering::Relaxed),
            responses_5xx: c.responses_5xx.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            kernel_forwarded: c.kernel_forwarded.load(Ordering::Relaxed),
            routable_members: members.iter().filter(|m| m.routable()).count(),
            members: members.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            health_tx: watch::channel(0).0,
            workers: Default::default(),
            kernel_forwarding: Default::default(),
        })
    }

    fn pool_cfg(ids: &[&str]) -> config::Pool {
        config::Pool {
            name: "p".into(),
            members: ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    config::Member::new(*id, SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)))
                })
                .collect(),
            probe: None,
        }
    }

    #[tokio::test]
    async fn round_robin_visits_every_routable_member() {
        let shared = shared();
        let pool = PoolRuntime::new("p");
        pool.update(&pool_cfg(&["a", "b", "c"]), &shared);
        let mut seen = HashMap::new();
        for _ in 0..30 {
            let m = pool.pick_round_robin(None).unwrap();
            *seen.entry(m.id.to_string()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|&n| n == 10));

        let mut cfg = pool_cfg(&["a", "b", "c"]);
        cfg.members[1].draining = true;
        pool.update(&cfg, &shared);
        for _ in 0..10 {
            assert_ne!(&*pool.pick_round_robin(None).unwrap().id, "b");
        }
    }

    #[tokio::test]
    async fn rendezvous_moves_only_the_clients_of_a_leaving_member() {
        let shared = shared();
        let pool = PoolRuntime::new("p");
        pool.update(&pool_cfg(&["a", "b", "c", "d"]), &shared);
        let before: Vec<_> = (0..200u64)
            .map(|k| pool.pick_hashed(k, None).unwrap().id.clone())
            .collect();
        assert_eq!(
            before
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            4
        );
        pool.update(&pool_cfg(&["a", "b", "c"]), &shared);
        for (k, was) in before.iter().enumerate() {
            let now = pool.pick_hashed(k as u64, None).unwrap().id.clone();
            if &**was != "d" {
                assert_eq!(&now, was, "client {k} moved although its member stayed");
            }
        }
    }

    #[tokio::test]
    async fn members_keep_their_state_across_updates_with_the_same_address() {
        let shared = shared();
        let pool = PoolRuntime::new("p");
        pool.update(&pool_cfg(&["a", "b"]), &shared);
        let a = pool.find("a").unwrap();
        a.eject("refused".into());
        assert!(!a.routable());
        pool.update(&pool_cfg(&["a", "b", "c"]), &shared);
        assert!(Arc::ptr_eq(&a, &pool.find("a").unwrap()));
        assert!(!pool.find("a").unwrap().routable());
        pool.update(&pool_cfg(&["b"]), &shared);
        assert!(pool.find("a").is_none());
        assert!(a.retired.is_cancelled());
    }
}
