//! The scale-set controller: watches the store, reconciles each set whose records
//! changed (or on a timer), and completes the long-running operations waiting on it.
//!
//! Level-triggered: a reconcile reads the set's records, asks [`crate::planner::plan`]
//! what to write, and writes it in one transaction guarded by the revisions it read. A
//! conflict (someone wrote meanwhile) just queues the set again; a crash at any point is
//! repaired by the next reconcile.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shoal_model::records::{
    operation_key, HealthRecord, HostRecord, InstanceRecord, InstanceStatus, OperationRecord,
    OperationStatus, OperationWait, VmssRecord,
};
use shoal_store::{Expect, Store, StoreError, TxnOp};
use tokio_util::sync::CancellationToken;

use crate::clock::{arm_time, Clock};
use crate::kv::{self, KvError, Versioned};
use crate::operations::{self, Outcome, SetView};
use crate::planner::{self, SetState};
use crate::repair;

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
}

/// `{sub}/{rg}/{name}` (lower-cased) of the set a key belongs to.
fn set_path_of(key: &str) -> Option<String> {
    let (kind, rest) = key.split_once('/')?;
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    match kind {
        "vmss" if parts.len() == 3 => Some(rest.to_string()),
        "instance" | "status" | "health" if parts.len() == 4 => Some(parts[..3].join("/")),
        _ => None,
    }
}

fn wait_set_path(wait: &OperationWait) -> Option<String> {
    match wait {
        OperationWait::Vmss { vmss, .. }
        | OperationWait::InstancesGone { vmss, .. }
        | OperationWait::VmssGone { vmss } => {
            Some(vmss.key().trim_start_matches("vmss/").to_string())
        }
        OperationWait::GroupGone { .. } => None,
    }
}

impl Controller {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Controller { store, clock }
    }

    /// Runs until `shutdown`. Store errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_progress: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.run_once(&shutdown, &mut last_progress).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "controller restarting its watch");
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
        shutdown: &CancellationToken,
        last_progress: &mut HashMap<String, tokio::time::Instant>,
    ) -> Result<(), KvError> {
        let rev = self.store.revision().await?;
        let mut events = self.store.watch("", rev).await?;
        let mut dirty: BTreeSet<String> = self.all_set_paths().await?;
        let mut ops_dirty = true;
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        let mut last_pass = tokio::time::Instant::now() - MIN_PASS_INTERVAL;
        // Sets to look at again at a given time (a repair grace period ends).
        let mut wakeups: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            // Passes are at least MIN_PASS_INTERVAL apart: a stream of status writes
            // (a thousand instances booting) then costs a few reconciles, not thousands.
            let since = last_pass.elapsed();
            if since < MIN_PASS_INTERVAL && (!dirty.is_empty() || ops_dirty) {
                tokio::time::sleep(MIN_PASS_INTERVAL - since).await;
            }
            // Drain what is already queued, so a burst of status writes costs one reconcile.
            while let Some(Some(ev)) = futures::FutureExt::now_or_never(events.next()) {
                let ev = ev?;
                self.route(ev.key(), &mut dirty, &mut ops_dirty).await?;
            }
            if !dirty.is_empty() || ops_dirty {
                last_pass = tokio::time::Instant::now();
                let ops = self.in_progress_ops().await?;
                let mut by_set: HashMap<String, Vec<Versioned<OperationRecord>>> = HashMap::new();
                for op in ops {
                    match wait_set_path(&op.value.wait) {
                        Some(p) => {
                            dirty.insert(p.clone());
                            by_set.entry(p).or_default().push(op);
                        }
                        None => self.advance_group_op(op).await?,
                    }
                }
                ops_dirty = false;
                let paths: Vec<String> = std::mem::take(&mut dirty).into_iter().collect();
                for path in paths {
                    let ops = by_set.remove(&path).unwrap_or_default();
                    match self
                        .reconcile_set(&path, ops, last_progress, &mut wakeups)
                        .await
                    {
                        Ok(true) => {
                            dirty.insert(path);
                        }
                        Ok(false) => {}
                        Err(KvError::Store(StoreError::Conflict { .. })) => {
                            dirty.insert(path);
                        }
                        Err(e) => return Err(e),
                    }
                }
                if !dirty.is_empty() {
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ev = events.next() => match ev {
                    Some(ev) => {
                        let ev = ev?;
                        self.route(ev.key(), &mut dirty, &mut ops_dirty).await?;
                    }
                    None => return Err(KvError::Store(StoreError::Closed)),
                },
                _ = sleep_until_earliest(&wakeups) => {
                    let now = tokio::time::Instant::now();
                    wakeups.retain(|path, at| {
                        if *at <= now {
                            dirty.insert(path.clone());
                            false
                        } else {
                            true
                        }
                    });
                }
                _ = resync.tick() => {
                    dirty.extend(self.all_set_paths().await?);
                    ops_dirty = true;
                    self.forget_old_operations().await?;
                }
            }
        }
    }

    async fn route(
        &self,
        key: &str,
        dirty: &mut BTreeSet<String>,
        ops_dirty: &mut bool,
    ) -> Result<(), KvError> {
        if let Some(path) = set_path_of(key) {
            dirty.insert(path);
        } else if key.starts_with("op/") || key.starts_with("rg/") {
            *ops_dirty = true;
        } else if key.starts_with("host/") {
            dirty.extend(self.all_set_paths().await?);
        }
        Ok(())
    }

    async fn all_set_paths(&self) -> Result<BTreeSet<String>, KvError> {
        let (kvs, _) = self.store.list("vmss/").await?;
        Ok(kvs.iter().filter_map(|kv| set_path_of(&kv.key)).collect())
    }

    async fn in_progress_ops(&self) -> Result<Vec<Versioned<OperationRecord>>, KvError> {
        let (ops, _) = kv::list_json::<OperationRecord>(&*self.store, "op/").await?;
        Ok(ops
            .into_iter()
            .filter(|o| o.value.status == OperationStatus::InProgress)
            .collect())
    }

    /// Finished operations are kept for [`OPERATION_RETENTION`] (clients poll them
    /// shortly after they finish), then removed so the store does not grow forever.
    async fn forget_old_operations(&self) -> Result<(), KvError> {
        let (ops, _) = kv::list_json::<OperationRecord>(&*self.store, "op/").await?;
        let now = self.clock.now();
        let txn: Vec<TxnOp> = ops
            .into_iter()
            .filter(|o| {
                o.value
                    .end_time
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|end| {
                        now.duration_since(end).as_secs() > OPERATION_RETENTION.as_secs() as i64
                    })
            })
            .map(|o| kv::delete_op(o.key, Expect::ModRevision(o.revision)))
            .collect();
        if !txn.is_empty() {
            match self.store.txn(txn).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Health records of a set's instances, by id.
    async fn health_of(&self, path: &str) -> Result<HashMap<u64, HealthRecord>, KvError> {
        let (health, _) =
            kv::list_json::<HealthRecord>(&*self.store, &format!("health/{path}/")).await?;
        Ok(health
            .into_iter()
            .filter_map(|h| Some((h.key.rsplit('/').next()?.parse().ok()?, h.value)))
            .collect())
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, KvError> {
        let (hosts, _) = kv::list_json::<HostRecord>(&*self.store, "host/").await?;
        Ok(hosts.into_iter().map(|h| h.value).collect())
    }

    /// Reconciles one set and judges the operations waiting on it. Returns whether it
    /// wrote something (so it should be looked at again).
    async fn reconcile_set(
        &self,
        path: &str,
        ops: Vec<Versioned<OperationRecord>>,
        last_progress: &mut HashMap<String, tokio::time::Instant>,
        wakeups: &mut HashMap<String, tokio::time::Instant>,
    ) -> Result<bool, KvError> {
        let set = kv::get_json::<VmssRecord>(&*self.store, &format!("vmss/{path}")).await?;
        let (instances, _) =
            kv::list_json::<InstanceRecord>(&*self.store, &format!("instance/{path}/")).await?;
        let (statuses, _) =
            kv::list_json::<InstanceStatus>(&*self.store, &format!("status/{path}/")).await?;
        let status_by_id: HashMap<u64, InstanceStatus> = statuses
            .into_iter()
            .filter_map(|s| {
                let id = s.key.rsplit('/').next()?.parse().ok()?;
                Some((id, s.value))
            })
            .collect();
        let records: Vec<InstanceRecord> = instances.iter().map(|i| i.value.clone()).collect();
        let now = arm_time(self.clock.now());

        let mut wrote = false;
        let mut settled = true;
        let mut blocked = None;
        if let Some(set) = &set {
            let hosts = self.hosts().await?;
            let plan = planner::plan(
                &SetState {
                    vmss: &set.value,
                    instances: &records,
                    statuses: &status_by_id,
                    hosts: &hosts,
                },
                &now,
                &mut || uuid::Uuid::new_v4().to_string(),
            );
            blocked = plan.blocked.clone();
            if !plan.is_empty() || !orphan_statuses(&records, &status_by_id).is_empty() {
                settled = plan.is_empty();
                let rev_of = |id: u64| {
                    instances
                        .iter()
                        .find(|i| i.value.instance_id == id)
                        .map(|i| i.revision)
                };
                let mut txn: Vec<TxnOp> = Vec::new();
                for c in &plan.create {
                    txn.push(kv::put_op(c.key(), c, Expect::Absent));
                }
                for u in &plan.update {
                    let expect = rev_of(u.instance_id).map_or(Expect::Absent, Expect::ModRevision);
                    txn.push(kv::put_op(u.key(), u, expect));
                }
                for id in orphan_statuses(&records, &status_by_id) {
                    txn.push(kv::delete_op(set.value.vmss.status_key(id), Expect::Any));
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
                let health = self.health_of(path).await?;
                let repairs = repair::plan_repairs(
                    &set.value,
                    &records,
                    &status_by_id,
                    &health,
                    self.clock.now(),
                );
                if let Some(secs) = repairs.wake_in_secs {
                    wakeups.insert(
                        path.to_string(),
                        tokio::time::Instant::now() + Duration::from_secs(secs),
                    );
                }
                if !repairs.update.is_empty() || repairs.state != repair::state_of(&set.value) {
                    let mut txn: Vec<TxnOp> = Vec::new();
                    for u in &repairs.update {
                        let rev = instances
                            .iter()
                            .find(|i| i.value.instance_id == u.instance_id)
                            .map(|i| i.revision);
                        txn.push(kv::put_op(
                            u.key(),
                            u,
                            rev.map_or(Expect::Absent, Expect::ModRevision),
                        ));
                        tracing::info!(set = %path, instance = u.instance_id, "automatic repair");
                    }
                    let mut changed = set.value.clone();
                    changed.services["repairs"] =
                        serde_json::to_value(&repairs.state).unwrap_or_default();
                    txn.push(kv::put_op(
                        set.key.clone(),
                        &changed,
                        Expect::ModRevision(set.revision),
                    ));
                    self.store.txn(txn).await?;
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

    /// A resource group is gone once no scale set is left in it: then its record, its
    /// galleries and its autoscale settings go too.
    async fn advance_group_op(&self, op: Versioned<OperationRecord>) -> Result<(), KvError> {
        let OperationWait::GroupGone {
            subscription,
            resource_group,
        } = &op.value.wait
        else {
            return Ok(());
        };
        let sub = subscription.to_ascii_lowercase();
        let rg = resource_group.to_ascii_lowercase();
        let (sets, _) = self.store.list(&format!("vmss/{sub}/{rg}/")).await?;
        if !sets.is_empty() {
            return Ok(());
        }
        let mut txn = Vec::new();
        for prefix in [
            "gallery",
            "galleryimage",
            "imageversion",
            "autoscale",
            "autoscale-history",
            // Balancers and gateways go with their group, as in Azure (the sets that
            // used them are gone by now).
            "lb",
            "appgw",
        ] {
            let (kvs, _) = self.store.list(&format!("{prefix}/{sub}/{rg}/")).await?;
            txn.extend(kvs.into_iter().map(|kv| kv::delete_op(kv.key, Expect::Any)));
        }
        txn.push(kv::delete_op(
            shoal_model::ids::rg_key(&sub, &rg),
            Expect::Any,
        ));
        let mut rec = op.value.clone();
        rec.status = OperationStatus::Succeeded;
        rec.end_time = Some(arm_time(self.clock.now()));
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

async fn sleep_until_earliest(wakeups: &HashMap<String, tokio::time::Instant>) {
    match wakeups.values().min() {
        Some(at) => tokio::time::sleep_until(*at).await,
        None => std::future::pending().await,
    }
}

/// Statuses whose instance record is gone (a report that raced the removal).
fn orphan_statuses(
    records: &[InstanceRecord],
    statuses: &HashMap<u64, InstanceStatus>,
) -> Vec<u64> {
    statuses
        .keys()
        .filter(|id| !records.iter().any(|r| r.instance_id == **id))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_set() {
        assert_eq!(set_path_of("vmss/s/rg/web").as_deref(), Some("s/rg/web"));
        assert_eq!(
            set_path_of("instance/s/rg/web/00000003").as_deref(),
            Some("s/rg/web")
        );
        assert_eq!(
            set_path_of("status/s/rg/web/00000003").as_deref(),
            Some("s/rg/web")
        );
        assert_eq!(set_path_of("op/123"), None);
        assert_eq!(set_path_of("host/local"), None);
    }
}
