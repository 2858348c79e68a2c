//! The scale-set controller: follows the store, reconciles each set whose records
//! changed (or on a timer), and completes the long-running operations waiting on it.
//!
//! Level-triggered: a reconcile reads the set's records, asks [`crate::planner::plan`]
//! what to write, and writes it in one transaction guarded by the revisions it read. A
//! conflict (someone wrote meanwhile) just queues the set again; a crash at any point is
//! repaired by the next reconcile.
//!
//! Data enters through typed caches ([`Reflector`]s over the store) of the prefixes the
//! controller reads — `vmss/`, `instance/`, `status/`, `health/`, `host/`, `heartbeat/`,
//! `hoststate/`, `op/`, `rg/`, `rollingupgrade/` —
//! each record decoded once when it changes. Each change is routed to the set it
//! belongs to by the record's own fields ([`Routes`]); a reconcile reads the caches,
//! never the store. Before a pass every cache catches up, the set records first, so
//! what a reconcile sees of a set's instances is never older than the set itself (as
//! when it read them from the store in that order), and no pass runs while a cache is
//! listing again. Data leaves as store transactions.

use shoal_model::keys::{self, health_prefix};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_model::ids::VmssRef;
use shoal_model::records::{
    operation_key, HealthRecord, Heartbeat, HostRecord, HostStateRecord, InstanceRecord,
    InstanceStatus, OperationRecord, OperationStatus, OperationWait, VmssRecord,
};
use shoal_store::watcher::{Cached, Reader, Reflector, StoreSource, WatchSource};
use shoal_store::{Expect, Store, StoreError, TxnOp};
use tokio_util::sync::CancellationToken;

use crate::clock::{arm_time, Clock};
use crate::commands::{CommandError, Executor, ImageResolver, Limits};
use crate::group_gone;
use crate::hosts::{self, HostTimeouts};
use crate::kv::{self, KvError, Versioned};
use crate::operations::{self, Outcome, SetView};
use crate::planner::{self, SetState};
use crate::repair;
use crate::rolling::{self, runner, RollingUpgrade};
use crate::routes::Routes;

/// Stray records of a set removed per reconcile pass, beside its plan (whose portion
/// leaves room for them within etcd's 128 operations).
const ORPHANS_PER_PASS: usize = 20;

/// How often every set is reconciled even when nothing changed.
const RESYNC: Duration = Duration::from_secs(10);
/// The shortest time between two reconcile passes.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(50);
/// How long a finished operation stays readable.
const OPERATION_RETENTION: Duration = Duration::from_secs(3600);
/// Progress messages of an operation are written at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

pub struct Controller {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The galleries, for automatic OS image upgrades (none: no such upgrades).
    images: Option<Arc<dyn ImageResolver>>,
    /// When hosts become NotReady and Down.
    host_timeouts: HostTimeouts,
}

/// The records the controller reads, each decoded once when it changes.
struct Caches {
    sets: Reflector<VmssRecord>,
    instances: Reflector<InstanceRecord>,
    statuses: Reflector<InstanceStatus>,
    health: Reflector<HealthRecord>,
    hosts: Reflector<HostRecord>,
    heartbeats: Reflector<Heartbeat>,
    host_states: Reflector<HostStateRecord>,
    ops: Reflector<OperationRecord>,
    /// Resource groups: only whether they changed matters (a group deletion waits).
    groups: Reflector<serde_json::Value>,
    rolling: Reflector<RollingUpgrade>,
}

impl Caches {
    fn new(store: Arc<dyn Store>) -> Self {
        let source: Arc<dyn WatchSource> = StoreSource::new(store);
        Caches {
            sets: Reflector::new(source.clone(), keys::VMSS),
            instances: Reflector::new(source.clone(), keys::INSTANCE),
            statuses: Reflector::new(source.clone(), keys::STATUS),
            health: Reflector::new(source.clone(), keys::HEALTH),
            hosts: Reflector::new(source.clone(), keys::HOST),
            heartbeats: Reflector::new(source.clone(), keys::HEARTBEAT),
            host_states: Reflector::new(source.clone(), keys::HOST_STATE),
            ops: Reflector::new(source.clone(), keys::OPERATION),
            groups: Reflector::new(source.clone(), keys::RESOURCE_GROUP),
            rolling: Reflector::new(source, keys::ROLLING_UPGRADE),
        }
    }

    /// Takes in every change already delivered, set records first (see the module docs).
    fn catch_up(&mut self, routes: &mut Routes) {
        routes.sets(&self.sets.catch_up());
        routes.instances(&self.instances.catch_up());
        routes.observed(&self.statuses.catch_up());
        routes.observed(&self.health.catch_up());
        routes.hosts(&self.hosts.catch_up());
        // Heartbeats are judged on the liveness tick; a state change moves every set.
        self.heartbeats.catch_up();
        routes.all |= !self.host_states.catch_up().is_empty();
        routes.ops(&self.ops.catch_up());
        routes.ops(&self.groups.catch_up());
        routes.rolling(&self.rolling.catch_up());
    }

    /// Readers of the caches, for the passes (which hold them across store writes).
    fn views(&self) -> Views {
        Views {
            sets: self.sets.reader(),
            instances: self.instances.reader(),
            statuses: self.statuses.reader(),
            health: self.health.reader(),
            hosts: self.hosts.reader(),
            heartbeats: self.heartbeats.reader(),
            host_states: self.host_states.reader(),
            ops: self.ops.reader(),
            rolling: self.rolling.reader(),
        }
    }

    /// Every cache is listed and following the store.
    fn live(&self) -> bool {
        self.sets.is_live()
            && self.instances.is_live()
            && self.statuses.is_live()
            && self.health.is_live()
            && self.hosts.is_live()
            && self.heartbeats.is_live()
            && self.host_states.is_live()
            && self.ops.is_live()
            && self.groups.is_live()
            && self.rolling.is_live()
    }
}

/// What a pass reads: the caches' contents.
struct Views {
    sets: Reader<VmssRecord>,
    instances: Reader<InstanceRecord>,
    statuses: Reader<InstanceStatus>,
    health: Reader<HealthRecord>,
    hosts: Reader<HostRecord>,
    heartbeats: Reader<Heartbeat>,
    host_states: Reader<HostStateRecord>,
    ops: Reader<OperationRecord>,
    rolling: Reader<RollingUpgrade>,
}

/// The set an operation waits on, if it waits on one.
fn wait_set(wait: &OperationWait) -> Option<&VmssRef> {
    match wait {
        OperationWait::Vmss { vmss, .. }
        | OperationWait::InstancesGone { vmss, .. }
        | OperationWait::VmssGone { vmss }
        | OperationWait::RollingUpgrade { vmss } => Some(vmss),
        OperationWait::GroupGone { .. } => None,
    }
}

/// The instance id of a per-instance key under `prefix` (`.../00000012` is 12).
fn id_after(prefix: &str, key: &str) -> Option<u64> {
    key.strip_prefix(prefix)?.parse().ok()
}

fn versioned<T: Clone>(key: &str, cached: &Cached<T>) -> Versioned<T> {
    Versioned {
        key: key.to_string(),
        value: cached.value.clone(),
        revision: cached.revision,
    }
}

impl Controller {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let images = None;
        Controller {
            store,
            clock,
            images,
            host_timeouts: HostTimeouts::default(),
        }
    }

    /// When hosts become NotReady and Down (defaults: [`HostTimeouts::default`]).
    pub fn with_host_timeouts(self, host_timeouts: HostTimeouts) -> Self {
        Controller {
            host_timeouts,
            ..self
        }
    }

    /// Lets the controller follow the galleries (automatic OS image upgrades).
    pub fn with_images(self, images: Arc<dyn ImageResolver>) -> Self {
        let images = Some(images);
        Controller { images, ..self }
    }

    /// Repairs and rolling upgrades write through the same commands as a user.
    fn executor(&self) -> Executor {
        let ex = Executor::new(self.store.clone(), self.clock.clone(), Limits::default());
        match &self.images {
            Some(images) => ex.with_images(images.clone()),
            None => ex,
        }
    }

    /// Runs until `shutdown`. Store errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut caches = Caches::new(self.store.clone());
        // Kept across restarts, as the caches are (their owners index follows them).
        let mut routes = Routes::default();
        let mut last_progress: HashMap<String, tokio::time::Instant> = HashMap::new();
        // Every host gets one grace period from now (a restart or a new leader).
        let watching_since = self.clock.now();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            // Everything is looked at again after a start or a failure.
            routes.all = true;
            routes.ops = true;
            match self
                .run_once(
                    &mut caches,
                    &mut routes,
                    &shutdown,
                    &mut last_progress,
                    watching_since,
                )
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "controller restarting its passes");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    async fn run_once(
        &self,
        caches: &mut Caches,
        routes: &mut Routes,
        shutdown: &CancellationToken,
        last_progress: &mut HashMap<String, tokio::time::Instant>,
        watching_since: jiff::Timestamp,
    ) -> Result<(), KvError> {
        let views = caches.views();
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        let mut liveness = tokio::time::interval(self.host_timeouts.heartbeat_interval / 2);
        let mut last_pass = tokio::time::Instant::now() - MIN_PASS_INTERVAL;
        // Sets to look at again at a given time (a repair grace period ends).
        let mut wakeups: HashMap<String, (VmssRef, tokio::time::Instant)> = HashMap::new();
        loop {
            // Passes are at least MIN_PASS_INTERVAL apart: a stream of status writes
            // (a thousand instances booting) then costs a few reconciles, not thousands.
            let since = last_pass.elapsed();
            if since < MIN_PASS_INTERVAL && routes.pending() && caches.live() {
                tokio::time::sleep(MIN_PASS_INTERVAL - since).await;
            }
            // Take in what is already here, so a burst of status writes costs one pass.
            caches.catch_up(routes);
            if routes.pending() && caches.live() {
                last_pass = tokio::time::Instant::now();
                self.pass(&views, routes, last_progress, &mut wakeups)
                    .await?;
                if !routes.dirty.is_empty() {
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                c = caches.sets.changed() => routes.sets(&c),
                c = caches.instances.changed() => routes.instances(&c),
                c = caches.statuses.changed() => routes.observed(&c),
                c = caches.health.changed() => routes.observed(&c),
                c = caches.hosts.changed() => routes.hosts(&c),
                _ = caches.heartbeats.changed() => {}
                c = caches.host_states.changed() => routes.all |= !c.is_empty(),
                _ = liveness.tick(), if caches.live() => {
                    let (hosts, beats, states) = (&views.hosts, &views.heartbeats, &views.host_states);
                    let (since, now) = (watching_since, self.clock.now());
                    hosts::judge(&*self.store, hosts, beats, states, since, now, &self.host_timeouts).await?;
                }
                c = caches.ops.changed() => routes.ops(&c),
                c = caches.groups.changed() => routes.ops(&c),
                c = caches.rolling.changed() => routes.rolling(&c),
                _ = sleep_until_earliest(&wakeups) => {
                    let now = tokio::time::Instant::now();
                    wakeups.retain(|_, (set, at)| {
                        if *at <= now {
                            routes.mark(set);
                            false
                        } else {
                            true
                        }
                    });
                }
                _ = resync.tick() => {
                    routes.all = true;
                    routes.ops = true;
                    self.forget_old_operations(&views).await?;
                }
            }
        }
    }

    /// Judges the operations in progress and reconciles every set marked in `routes`;
    /// sets that wrote something (or met a conflict) stay marked for the next pass.
    async fn pass(
        &self,
        caches: &Views,
        routes: &mut Routes,
        last_progress: &mut HashMap<String, tokio::time::Instant>,
        wakeups: &mut HashMap<String, (VmssRef, tokio::time::Instant)>,
    ) -> Result<(), KvError> {
        if std::mem::take(&mut routes.all) {
            for set in caches.sets.snapshot().values() {
                routes.mark(&set.vmss);
            }
        }
        let mut by_set: HashMap<String, Vec<Versioned<OperationRecord>>> = HashMap::new();
        let ops = caches.ops.snapshot();
        for (key, op) in ops.iter() {
            if op.status != OperationStatus::InProgress {
                continue;
            }
            match wait_set(&op.wait) {
                Some(set) => {
                    routes.mark(set);
                    by_set
                        .entry(set.key())
                        .or_default()
                        .push(versioned(key, op));
                }
                None => group_gone::advance(&*self.store, &*self.clock, versioned(key, op)).await?,
            }
        }
        routes.ops = false;
        for (key, set) in std::mem::take(&mut routes.dirty) {
            let ops = by_set.remove(&key).unwrap_or_default();
            match self
                .reconcile_set(caches, &set, ops, last_progress, wakeups)
                .await
            {
                Ok(true) | Err(KvError::Store(StoreError::Conflict { .. })) => {
                    routes.mark(&set);
                }
                Ok(false) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Finished operations are kept for [`OPERATION_RETENTION`] (clients poll them
    /// shortly after they finish), then removed so the store does not grow forever.
    async fn forget_old_operations(&self, caches: &Views) -> Result<(), KvError> {
        let now = self.clock.now();
        let txn: Vec<TxnOp> = caches
            .ops
            .snapshot()
            .iter()
            .filter(|(_, o)| {
                o.end_time
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|end| {
                        now.duration_since(end).as_secs() > OPERATION_RETENTION.as_secs() as i64
                    })
            })
            .map(|(key, o)| kv::delete_op(key.clone(), Expect::ModRevision(o.revision)))
            .collect();
        if !txn.is_empty() {
            match self.store.txn(txn).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reconciles one set and judges the operations waiting on it. Returns whether it
    /// wrote something (so it should be looked at again).
    async fn reconcile_set(
        &self,
        caches: &Views,
        vref: &VmssRef,
        ops: Vec<Versioned<OperationRecord>>,
        last_progress: &mut HashMap<String, tokio::time::Instant>,
        wakeups: &mut HashMap<String, (VmssRef, tokio::time::Instant)>,
    ) -> Result<bool, KvError> {
        let path = vref.key();
        let path = keys::path_of(keys::VMSS, &path);
        let set = caches
            .sets
            .get(&vref.key())
            .map(|s| versioned(&vref.key(), &s));
        // The watch caches fill independently: an operation can be seen before the set
        // written in the same transaction. "The set is gone" fails its operations, so it
        // is believed only when the store agrees; otherwise look again once the set's
        // event has arrived.
        if set.is_none()
            && !ops.is_empty()
            && kv::get_json::<VmssRecord>(&*self.store, &vref.key())
                .await?
                .is_some()
        {
            return Ok(true);
        }
        // One copy of each instance record per pass (the planners take a slice of
        // them), and the revisions beside it: a record is cloned once, not twice.
        let cached = caches.instances.with_prefix(&vref.instance_prefix());
        let records: Vec<InstanceRecord> = cached.iter().map(|(_, i)| i.value.clone()).collect();
        let revisions: HashMap<u64, u64> = cached
            .iter()
            .map(|(_, i)| (i.value.instance_id, i.revision))
            .collect();
        drop(cached);
        // Statuses by instance id, and those whose instance record is gone (a report that
        // raced the removal): one walk of the set's statuses, no key built per instance.
        let ids: HashSet<u64> = records.iter().map(|r| r.instance_id).collect();
        let mut status_by_id: HashMap<u64, InstanceStatus> = HashMap::with_capacity(ids.len());
        let mut orphans: Vec<String> = Vec::new();
        let status_prefix = vref.status_prefix();
        for (key, status) in caches.statuses.with_prefix(&status_prefix) {
            match id_after(&status_prefix, &key) {
                Some(id) if ids.contains(&id) => {
                    status_by_id.insert(id, status.value.clone());
                }
                _ => orphans.push(key),
            }
        }
        let now = arm_time(self.clock.now());
        let upgrade = caches
            .rolling
            .get(&rolling::rolling_key(vref))
            .map(|r| versioned(&rolling::rolling_key(vref), &r));

        let mut wrote = false;
        let mut settled = true;
        let mut blocked = None;
        if let Some(set) = &set {
            let hosts = hosts::current(&caches.hosts, &caches.host_states, &caches.instances);
            // With maxSurge a batch's replacements are held on top of the capacity.
            let surged = runner::with_surge(&set.value, upgrade.as_ref().map(|u| &u.value));
            let plan = planner::plan(
                &SetState {
                    vmss: &surged,
                    instances: &records,
                    statuses: &status_by_id,
                    hosts: &hosts,
                },
                &now,
                &mut || uuid::Uuid::new_v4().to_string(),
            )
            // Within the store's transaction limit (etcd's; the embedded stores have none).
            .portion(
                self.store
                    .max_txn_ops()
                    .map_or(usize::MAX, |_| planner::MAX_PASS_OPS),
            );
            blocked = plan.blocked.clone();
            if !plan.is_empty() || !orphans.is_empty() {
                settled = plan.is_empty();
                let rev_of = |id: u64| revisions.get(&id).copied();
                let mut txn: Vec<TxnOp> = Vec::new();
                for c in &plan.create {
                    txn.push(kv::put_op(c.key(), c, Expect::Absent));
                }
                for u in &plan.update {
                    let expect = rev_of(u.instance_id).map_or(Expect::Absent, Expect::ModRevision);
                    txn.push(kv::put_op(u.key(), u, expect));
                }
                txn.extend(hosts::lost_writes(
                    &plan.lost,
                    &records,
                    &status_by_id,
                    &caches.host_states,
                    &now,
                ));
                // Orphans go a few at a time too (see `MAX_PASS_OPS`).
                for key in orphans.iter().take(ORPHANS_PER_PASS) {
                    txn.push(kv::delete_op(key.clone(), Expect::Any));
                }
                for id in &plan.remove {
                    txn.push(kv::delete_op(set.value.vmss.instance_key(*id), Expect::Any));
                    txn.push(kv::delete_op(set.value.vmss.status_key(*id), Expect::Any));
                }
                if plan.remove_vmss {
                    txn.push(kv::delete_op(
                        set.key.clone(),
                        Expect::ModRevision(set.revision),
                    ));
                    txn.push(kv::delete_op(rolling::rolling_key(vref), Expect::Any));
                } else if let Some(next) = plan.vmss_next_instance_id {
                    let mut changed = set.value.clone();
                    changed.next_instance_id = next;
                    txn.push(kv::put_op(
                        set.key.clone(),
                        &changed,
                        Expect::ModRevision(set.revision),
                    ));
                }
                self.store.txn(txn).await?;
                if !plan.create.is_empty() || !plan.update.is_empty() || !plan.remove.is_empty() {
                    tracing::info!(
                        set = %path,
                        created = plan.create.len(),
                        changed = plan.update.len(),
                        removed = plan.remove.len(),
                        "reconciled"
                    );
                }
                wrote = true;
            }
            if plan.is_empty() {
                let health_prefix = health_prefix(vref);
                let health: HashMap<u64, HealthRecord> = caches
                    .health
                    .with_prefix(&health_prefix)
                    .into_iter()
                    .filter_map(|(key, h)| {
                        let id = id_after(&health_prefix, &key).filter(|id| ids.contains(id))?;
                        Some((id, h.value.clone()))
                    })
                    .collect();
                let advanced = runner::advance(
                    &self.executor(),
                    self.images.as_deref(),
                    &runner::Observed {
                        set: &set.value,
                        records: &records,
                        revisions: &revisions,
                        statuses: &status_by_id,
                        health: &health,
                        record: upgrade.as_ref(),
                        surge_room: Some(runner::surge_room(&hosts, &set.value)),
                    },
                    self.clock.now(),
                )
                .await;
                match advanced {
                    Ok(a) => {
                        wrote |= a.wrote;
                        if let Some(secs) = a.wake_in_secs {
                            wake(wakeups, vref, secs);
                        }
                    }
                    Err(CommandError::Store(e)) => return Err(e.into()),
                    Err(e) => tracing::debug!(set = %path, error = %e, "rolling upgrade step"),
                }
                // Repairs leave the batch of a rolling upgrade alone.
                let busy = runner::in_flight(upgrade.as_ref().map(|u| &u.value));
                let repairable: Cow<[InstanceRecord]> = match busy.is_empty() {
                    true => Cow::Borrowed(&records),
                    false => records
                        .iter()
                        .filter(|r| !busy.contains(&r.instance_id))
                        .cloned()
                        .collect(),
                };
                let repairs = repair::plan_repairs(
                    &set.value,
                    &repairable,
                    &status_by_id,
                    &health,
                    self.clock.now(),
                );
                if let Some(secs) = repairs.wake_in_secs {
                    wake(wakeups, vref, secs);
                }
                if repairs.has_writes(&set.value) {
                    // Repairs go through the same instance-action command as a user's
                    // restart or reimage: one rule for what a repair writes.
                    for (id, action) in &repairs.repairs {
                        tracing::info!(set = %path, instance = id, %action, "automatic repair");
                    }
                    match self.executor().execute(repairs.command(vref)).await {
                        Ok(_) | Err(CommandError::Conflict(_)) => {}
                        Err(CommandError::Store(e)) => return Err(e.into()),
                        Err(e) => {
                            tracing::warn!(set = %path, error = %e, "automatic repair refused")
                        }
                    }
                    wrote = true;
                }
            }
        }

        for op in ops {
            let view = SetView {
                vmss: set.as_ref().map(|s| &s.value),
                instances: &records,
                statuses: &status_by_id,
                settled,
            };
            let outcome = operations::evaluate(&op.value.wait, view);
            self.record_outcome(
                op,
                outcome,
                set.as_ref(),
                blocked.as_deref(),
                &now,
                last_progress,
            )
            .await?;
        }
        Ok(wrote)
    }

    async fn record_outcome(
        &self,
        op: Versioned<OperationRecord>,
        outcome: Outcome,
        set: Option<&Versioned<VmssRecord>>,
        blocked: Option<&str>,
        now: &str,
        last_progress: &mut HashMap<String, tokio::time::Instant>,
    ) -> Result<(), KvError> {
        let mut rec = op.value.clone();
        let final_state = match outcome {
            Outcome::InProgress { message } => {
                let message = match blocked {
                    Some(b) => format!("{message} ({b})"),
                    None => message,
                };
                let due = last_progress
                    .get(&rec.id)
                    .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
                if rec.message.as_deref() == Some(message.as_str()) || !due {
                    return Ok(());
                }
                last_progress.insert(rec.id.clone(), tokio::time::Instant::now());
                rec.message = Some(message);
                None
            }
            Outcome::Succeeded => {
                rec.status = OperationStatus::Succeeded;
                Some("Succeeded")
            }
            Outcome::Failed(err) => {
                rec.status = OperationStatus::Failed;
                rec.message = Some(err.message.clone());
                rec.error = Some(err);
                Some("Failed")
            }
        };
        let mut txn = Vec::new();
        if let Some(state) = final_state {
            last_progress.remove(&rec.id);
            rec.end_time = Some(now.to_string());
            tracing::info!(operation = %rec.name, status = state, "operation finished");
            if let Some(set) = set.filter(|s| s.value.operation.as_deref() == Some(rec.id.as_str()))
            {
                let mut changed = set.value.clone();
                if let Some(p) = changed.model.properties.as_mut() {
                    p.provisioning_state = Some(state.to_string());
                }
                changed.operation = None;
                txn.push(kv::put_op(
                    set.key.clone(),
                    &changed,
                    Expect::ModRevision(set.revision),
                ));
            }
        }
        txn.push(kv::put_op(
            operation_key(&rec.id),
            &rec,
            Expect::ModRevision(op.revision),
        ));
        match self.store.txn(txn).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Look at `set` again in `secs` (or sooner, if asked already).
fn wake(wakeups: &mut HashMap<String, (VmssRef, tokio::time::Instant)>, set: &VmssRef, secs: u64) {
    let at = tokio::time::Instant::now() + Duration::from_secs(secs);
    let entry = wakeups.entry(set.key()).or_insert((set.clone(), at));
    entry.1 = entry.1.min(at);
}

async fn sleep_until_earliest(wakeups: &HashMap<String, (VmssRef, tokio::time::Instant)>) {
    match wakeups.values().map(|(_, at)| at).min() {
        Some(at) => tokio::time::sleep_until(*at).await,
        None => std::future::pending().await,
    }
}
