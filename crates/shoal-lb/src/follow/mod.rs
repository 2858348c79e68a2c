//! The follower: keeps a [`Balancer`] in step with a Shoal server, over the same HTTP API
//! agents use, so it runs inside `shoal serve` or alone (`shoal balancer --endpoint URL`,
//! several of them in front of one set).
//!
//! It follows the load balancers, application gateways, scale sets and instance statuses
//! (typed caches over the server's list and watch, so each record is decoded once when
//! it changes), turns them into a configuration with [`plan::plan`] (layer 4) and
//! [`appgw::plan`] (layer 7), applies it, and reports back what only the
//! data plane knows: each instance's health (`vmHealth`) and, for an instance that is
//! draining, that it no longer receives work (so its agent may stop it).

pub mod appgw;
pub mod metrics;
pub mod plan;

use shoal_model::keys;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_client::{ServerClient, ServerSource};
use shoal_model::appgw::ApplicationGateway;
use shoal_model::network::LoadBalancer;
use shoal_model::records::{HealthRecord, HealthState as ArmHealth, InstanceStatus, VmssRecord};
use shoal_store::watcher::{Reflector, WatchSource};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Balancer, HealthState};

/// Under which name to report.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// This balancer's name (unique among balancers).
    pub name: String,
}

/// How long a burst of changes may settle before the configuration is worked out.
const SETTLE: Duration = Duration::from_millis(20);

/// What the follower follows: typed caches of the server's records.
struct Followed {
    balancers: Reflector<LoadBalancer>,
    sets: Reflector<VmssRecord>,
    statuses: Reflector<InstanceStatus>,
    gateways: Reflector<ApplicationGateway>,
}

impl Followed {
    fn new(client: &ServerClient) -> Self {
        let source: Arc<dyn WatchSource> = Arc::new(ServerSource::new(client.clone()));
        Followed {
            balancers: Reflector::new(source.clone(), keys::LOAD_BALANCER),
            sets: Reflector::new(source.clone(), keys::VMSS),
            statuses: Reflector::new(source.clone(), keys::STATUS),
            gateways: Reflector::new(source, keys::APP_GATEWAY),
        }
    }

    /// The records as [`plan::plan`] and [`appgw::plan`] take them.
    fn world(&self) -> (plan::World, Vec<ApplicationGateway>) {
        let balancers = values(&self.balancers);
        let sets = values(&self.sets);
        let gateways = values(&self.gateways);
        // Statuses are read only for the members of pools: with no balancer, no gateway
        // and no application-health probe there are none, and a thousand booting
        // instances are not copied on every change.
        let pools = !balancers.is_empty()
            || !gateways.is_empty()
            || sets.iter().any(|s| plan::app_health_probe(s).is_some());
        let statuses = match pools {
            false => BTreeMap::new(),
            true => self
                .statuses
                .snapshot()
                .iter()
                .map(|(key, st)| {
                    let id = keys::path_of(keys::STATUS, key);
                    (id.to_string(), InstanceStatus::clone(st))
                })
                .collect(),
        };
        let world = plan::World {
            balancers,
            sets,
            statuses,
        };
        (world, gateways)
    }
}

fn values<T: Clone>(cache: &Reflector<T>) -> Vec<T> {
    cache.snapshot().values().map(|v| T::clone(v)).collect()
}

/// Runs until `shutdown`, following the server through `client` and applying every
/// change to `balancer`.
pub async fn run(
    cfg: FollowConfig,
    balancer: Balancer,
    client: ServerClient,
    shutdown: CancellationToken,
) {
    let mut followed = Followed::new(&client);
    // When the changes seen so far are worked out (a burst settles into one apply).
    let mut settle: Option<Instant> = None;
    let mut health = balancer.health_changes();
    let mut reported: HashMap<String, ArmHealth> = HashMap::new();
    let mut acked: HashSet<(String, String)> = HashSet::new();
    let mut fronts: Vec<String> = Vec::new();
    let mut last_plan = plan::Plan::default();
    let (placed_tx, placed) = watch::channel(Vec::new());
    // The metrics reporter is owned here and waited for before `run` returns.
    let reporter = tokio::spawn(metrics::run(
        client.clone(),
        balancer.clone(),
        placed,
        shutdown.clone(),
    ));
    let mut register = tokio::time::interval(Duration::from_secs(10));
    loop {
        let mut changed = false;
        let settle_at = settle;
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = reporter.await;
                return;
            }
            c = followed.balancers.changed() => changed = !c.is_empty(),
            c = followed.sets.changed() => changed = !c.is_empty(),
            c = followed.statuses.changed() => changed = !c.is_empty(),
            c = followed.gateways.changed() => changed = !c.is_empty(),
            _ = sleep_until(settle_at) => {
                settle = None;
                let (world, gateways) = followed.world();
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
        if changed && settle.is_none() {
            settle = Some(Instant::now() + SETTLE);
        }
        report_health(&client, &cfg, &balancer, &last_plan, &mut reported).await;
        acknowledge_drains(&client, &cfg, &balancer, &last_plan, &mut acked).await;
    }
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
