//! The follower: keeps a [`Balancer`] in step with a Shoal server, over the same HTTP API
//! agents use, so it runs inside `shoal serve` or alone (`shoal balancer --endpoint URL`,
//! several of them in front of one set).
//!
//! It lists and watches the load balancers, application gateways, scale sets and instance
//! statuses, turns them into a configuration with [`plan::plan`] (layer 4) and
//! [`appgw::plan`] (layer 7), applies it, and reports back what only the
//! data plane knows: each instance's health (`vmHealth`) and, for an instance that is
//! draining, that it no longer receives work (so its agent may stop it).

pub mod appgw;
pub mod metrics;
pub mod plan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use shoal_client::{Event, ServerClient};
use shoal_model::appgw::ApplicationGateway;
use shoal_model::network::LoadBalancer;
use shoal_model::records::{HealthRecord, HealthState as ArmHealth, InstanceStatus, VmssRecord};
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;

use crate::{Balancer, HealthState};

/// Under which name to report.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// This balancer's name (unique among balancers).
    pub name: String,
}

type Cache = Arc<Mutex<BTreeMap<String, Value>>>;

/// Runs until `shutdown`, following the server through `client` and applying every
/// change to `balancer`.
pub async fn run(
    cfg: FollowConfig,
    balancer: Balancer,
    client: ServerClient,
    shutdown: CancellationToken,
) {
    let (changed_tx, mut changed) = watch::channel(0u64);
    let changed_tx = Arc::new(changed_tx);
    let caches: Vec<(&str, Cache)> = ["lb/", "vmss/", "status/", "appgw/"]
        .into_iter()
        .map(|p| (p, Cache::default()))
        .collect();
    for (prefix, cache) in &caches {
        tokio::spawn(inform(
            client.clone(),
            prefix.to_string(),
            cache.clone(),
            changed_tx.clone(),
            shutdown.clone(),
        ));
    }
    let mut health = balancer.health_changes();
    let mut reported: HashMap<String, ArmHealth> = HashMap::new();
    let mut acked: HashSet<(String, String)> = HashSet::new();
    let mut fronts: Vec<String> = Vec::new();
    let mut last_plan = plan::Plan::default();
    let (placed_tx, placed) = watch::channel(Vec::new());
    tokio::spawn(metrics::run(
        client.clone(),
        balancer.clone(),
        placed,
        shutdown.clone(),
    ));
    let mut register = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.changed() => {
                // Let a burst of changes settle into one apply.
                tokio::time::sleep(Duration::from_millis(20)).await;
                changed.borrow_and_update();
                let (world, gateways) = world_of(&caches).await;
                let plan = appgw::merge(
                    appgw::merge(plan::plan(&world), appgw::plan(&gateways, &world)),
                    plan::app_health(&world),
                );
                if plan.config != last_plan.config {
                    if let Err(e) = balancer.apply(plan.config.clone()).await {
                        tracing::warn!(error = %e, "cannot apply the load balancer configuration");
                    }
                }
                let new_fronts: Vec<String> = plan.fronts.iter().cloned().collect();
                if new_fronts != fronts {
                    fronts = new_fronts;
                    register_self(&client, &cfg, &fronts).await;
                }
                placed_tx.send_replace(plan.placements.clone());
                last_plan = plan;
            }
            _ = health.changed() => {}
            _ = register.tick() => register_self(&client, &cfg, &fronts).await,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        report_health(&client, &cfg, &balancer, &last_plan, &mut reported).await;
        acknowledge_drains(&client, &cfg, &balancer, &last_plan, &mut acked).await;
    }
}

async fn world_of(caches: &[(&str, Cache)]) -> (plan::World, Vec<ApplicationGateway>) {
    let mut world = plan::World::default();
    let mut gateways = Vec::new();
    for (prefix, cache) in caches {
        let cache = cache.lock().await;
        for (key, value) in cache.iter() {
            match *prefix {
                "lb/" => {
                    if let Ok(lb) = serde_json::from_value::<LoadBalancer>(value.clone()) {
                        world.balancers.push(lb);
                    }
                }
                "appgw/" => {
                    if let Ok(gw) = serde_json::from_value::<ApplicationGateway>(value.clone()) {
                        gateways.push(gw);
                    }
                }
                "vmss/" => {
                    if let Ok(set) = serde_json::from_value::<VmssRecord>(value.clone()) {
                        world.sets.push(set);
                    }
                }
                _ => {
                    if let Ok(st) = serde_json::from_value::<InstanceStatus>(value.clone()) {
                        world
                            .statuses
                            .insert(key.trim_start_matches("status/").to_string(), st);
                    }
                }
            }
        }
    }
    (world, gateways)
}

/// Keeps `cache` equal to the server's records under `prefix` (list, then watch; list
/// again whenever the watch breaks).
async fn inform(
    client: ServerClient,
    prefix: String,
    cache: Cache,
    changed: Arc<watch::Sender<u64>>,
    shutdown: CancellationToken,
) {
    let bump = || changed.send_modify(|n| *n += 1);
    let value = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let Ok((items, rev)) = client.list(&prefix).await else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        };
        {
            let mut c = cache.lock().await;
            c.clear();
            for kv in items {
                c.insert(kv.key, value(&kv.value));
            }
        }
        bump();
        let Ok(mut events) = client.watch(&prefix, rev).await else {
            continue;
        };
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.next() => ev,
            };
            match ev {
                Some(Ok(Event::Put(kv))) => {
                    cache.lock().await.insert(kv.key, value(&kv.value));
                }
                Some(Ok(Event::Delete { key, .. })) => {
                    cache.lock().await.remove(&key);
                }
                Some(Err(_)) | None => break,
            }
            bump();
        }
    }
}

async fn register_self(client: &ServerClient, cfg: &FollowConfig, fronts: &[String]) {
    if let Err(e) = client.register_balancer(&cfg.name, fronts).await {
        tracing::debug!(error = %e, "balancer registration failed");
    }
}

/// Reports each instance's health when it changes: unhealthy if any of its pools' probes
/// says so, healthy when all that have a verdict say healthy.
async fn report_health(
    client: &ServerClient,
    cfg: &FollowConfig,
    balancer: &Balancer,
    plan: &plan::Plan,
    reported: &mut HashMap<String, ArmHealth>,
) {
    let mut verdict: BTreeMap<String, ArmHealth> = BTreeMap::new();
    for h in balancer.health() {
        if !plan
            .placements
            .iter()
            .any(|p| p.pool == h.pool && p.instance == h.member)
        {
            continue;
        }
        let this = match h.state {
            HealthState::Healthy => ArmHealth::Healthy,
            HealthState::Unhealthy => ArmHealth::Unhealthy,
            _ => ArmHealth::Unknown,
        };
        let v = verdict.entry(h.member.clone()).or_insert(this);
        *v = match (*v, this) {
            (ArmHealth::Unhealthy, _) | (_, ArmHealth::Unhealthy) => ArmHealth::Unhealthy,
            (ArmHealth::Unknown, _) | (_, ArmHealth::Unknown) => ArmHealth::Unknown,
            _ => ArmHealth::Healthy,
        };
    }
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.7fZ")
        .to_string();
    for (instance, state) in verdict {
        if reported.get(&instance) == Some(&state) {
            continue;
        }
        let rec = HealthRecord {
            state,
            since: now.clone(),
            observer: cfg.name.clone(),
            message: None,
        };
        if client.report_health(&instance, &rec).await.is_ok() {
            reported.insert(instance, state);
        }
    }
    reported.retain(|i, _| plan.placements.iter().any(|p| &p.instance == i));
}

/// Acknowledges instances that are draining and have nothing in flight any more.
async fn acknowledge_drains(
    client: &ServerClient,
    cfg: &FollowConfig,
    balancer: &Balancer,
    plan: &plan::Plan,
    acked: &mut HashSet<(String, String)>,
) {
    let mut draining: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
    for p in &plan.placements {
        let e = draining
            .entry(p.instance.as_str())
            .or_insert((p.episode.as_str(), Vec::new()));
        if p.draining {
            e.1.push(p.pool.as_str());
        } else {
            e.1.push("");
        }
    }
    for (instance, (episode, pools)) in draining {
        if pools.iter().any(|p| p.is_empty())
            || acked.contains(&(instance.to_string(), episode.to_string()))
        {
            continue;
        }
        if pools.iter().any(|p| balancer.active(p, instance) > 0) {
            continue;
        }
        if client.ack_drain(instance, &cfg.name, episode).await.is_ok() {
            acked.insert((instance.to_string(), episode.to_string()));
        }
    }
    acked.retain(|(i, _)| plan.placements.iter().any(|p| p.instance == *i));
}
