//! Request metrics for autoscale: every second the follower turns the balancer's pool
//! counters ([`Balancer::stats`]) into the scale-set metrics Shoal defines —
//! `Requests Per Second`, `Active Connections` and `Http 5xx Per Second` — and posts them
//! to the server (`POST /shoal/v1/metrics`) as values about each set.
//!
//! Each value is per instance: the traffic of every pool a set's instances are in,
//! divided by the set's members in those pools, so the `Average` statistic and the
//! flapping check's projection (value × current / new) mean what they do for
//! `Percentage CPU`. A pool shared by two sets counts for both.
//!
//! `Request Count` is about each instance (Azure Monitor's `VMName` dimension): the
//! requests (L7) and connections (L4) this balancer sent it in the last second, so the
//! `Total` statistic over an interval is the number of requests, per instance or, summed,
//! per set.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use shoal_client::ServerClient;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::Placement;
use crate::health::MemberHealth;
use crate::Balancer;
use crate::PoolStats;

/// Remembers the previous counters to turn totals into rates.
#[derive(Debug, Default)]
pub struct RequestMeter {
    last: HashMap<String, (Instant, u64, u64)>,
    /// Served totals by (pool, member).
    served: HashMap<(String, String), u64>,
}

/// One instance's requests since the last reading.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceCount {
    /// `sub/rg/name` of its set.
    pub set: String,
    pub instance: String,
    pub requests: u64,
}

impl RequestMeter {
    /// `(set "sub/rg/name", metric, value)` for every set with members in a pool.
    pub fn samples(
        &mut self,
        stats: &[PoolStats],
        placements: &[Placement],
        now: Instant,
    ) -> Vec<(String, &'static str, f64)> {
        // Rates of each pool since the last call (none the first time a pool is seen).
        let mut rates: HashMap<&str, (f64, f64, f64)> = HashMap::new();
        for s in stats {
            let prev = self
                .last
                .insert(s.pool.clone(), (now, s.requests, s.responses_5xx));
            if let Some((at, req, err)) = prev {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    rates.insert(
                        s.pool.as_str(),
                        (
                            s.requests.saturating_sub(req) as f64 / secs,
                            s.responses_5xx.saturating_sub(err) as f64 / secs,
                            s.active as f64,
                        ),
                    );
                }
            }
        }
        self.last
            .retain(|pool, _| stats.iter().any(|s| &s.pool == pool));
        // Sets, their pools and their member count.
        let mut sets: BTreeMap<String, (Vec<&str>, usize)> = BTreeMap::new();
        for p in placements.iter().filter(|p| !p.draining) {
            let set = p
                .instance
                .rsplit_once('/')
                .map_or("", |(s, _)| s)
                .to_string();
            let e = sets.entry(set).or_default();
            if !e.0.contains(&p.pool.as_str()) {
                e.0.push(p.pool.as_str());
            }
            e.1 += 1;
        }
        let mut out = Vec::new();
        for (set, (pools, members)) in sets {
            let (mut rps, mut e5xx, mut active, mut seen) = (0.0, 0.0, 0.0, false);
            for pool in pools {
                if let Some((r, e, a)) = rates.get(pool) {
                    rps += r;
                    e5xx += e;
                    active += a;
                    seen = true;
                }
            }
            if !seen || members == 0 {
                continue;
            }
            let n = members as f64;
            out.push((set.clone(), "Requests Per Second", rps / n));
            out.push((set.clone(), "Http 5xx Per Second", e5xx / n));
            out.push((set, "Active Connections", active / n));
        }
        out
    }

    /// Requests each member was sent since the last call (a member seen for the first
    /// time only sets its baseline), summed over the pools it is in.
    pub fn instance_counts(&mut self, members: &[MemberHealth]) -> Vec<InstanceCount> {
        let mut by_instance: BTreeMap<&str, u64> = BTreeMap::new();
        let mut seen = HashMap::with_capacity(members.len());
        for m in members {
            let key = (m.pool.clone(), m.member.clone());
            if let Some(prev) = self.served.get(&key) {
                // A member that left and came back starts again from 0.
                let delta = m.served.checked_sub(*prev).unwrap_or(m.served);
                *by_instance.entry(m.member.as_str()).or_default() += delta;
            }
            seen.insert(key, m.served);
        }
        self.served = seen;
        by_instance
            .into_iter()
            .filter_map(|(member, requests)| {
                // Member ids pad the instance id (`…/web/00000003`); metrics name it `3`.
                let (set, instance) = member.rsplit_once('/')?;
                Some(InstanceCount {
                    set: set.to_string(),
                    instance: instance.parse::<u64>().ok()?.to_string(),
                    requests,
                })
            })
            .collect()
    }
}

fn resource_id(set: &str) -> Option<String> {
    let mut parts = set.split('/');
    let (sub, rg, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
    ))
}

/// Posts the request metrics every second until `shutdown`. Best effort: a failed post
/// is logged and dropped.
pub async fn run(
    client: ServerClient,
    balancer: Balancer,
    placements: watch::Receiver<Vec<Placement>>,
    shutdown: CancellationToken,
) {
    let mut meter = RequestMeter::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let placed = placements.borrow().clone();
        let mut samples: Vec<Value> = meter
            .samples(&balancer.stats(), &placed, Instant::now())
            .into_iter()
            .filter_map(|(set, name, value)| {
                Some(json!({"resourceId": resource_id(&set)?, "name": name, "value": value}))
            })
            .collect();
        samples.extend(
            meter
                .instance_counts(&balancer.health())
                .into_iter()
                .filter_map(|c| {
                    Some(
                        json!({"resourceId": resource_id(&c.set)?, "instanceId": c.instance,
                        "name": "Request Count", "value": c.requests as f64}),
                    )
                }),
        );
        if samples.is_empty() {
            continue;
        }
        match client.push_metrics(&samples).await {
            Ok(r) if r.status.is_success() => {}
            Ok(r) => tracing::debug!(status = %r.status, "request metrics refused"),
            Err(e) => tracing::debug!(error = %e, "cannot post request metrics"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pool: &str, requests: u64, e5xx: u64, active: u64) -> PoolStats {
        PoolStats {
            pool: pool.into(),
            requests,
            responses_5xx: e5xx,
            active,
            bytes_in: 0,
            bytes_out: 0,
            kernel_forwarded: 0,
            routable_members: 2,
            members: 2,
        }
    }

    fn placed(pool: &str, instance: &str, draining: bool) -> Placement {
        Placement {
            pool: pool.into(),
            instance: instance.into(),
            draining,
            episode: String::new(),
        }
    }

    fn member(pool: &str, id: &str, served: u64) -> MemberHealth {
        MemberHealth {
            pool: pool.into(),
            member: id.into(),
            addr: "127.0.0.1:1".parse().expect("addr"),
            state: crate::HealthState::Healthy,
            since: Instant::now(),
            last_error: None,
            draining: false,
            routable: true,
            served,
        }
    }

    #[test]
    fn request_counts_per_instance_over_its_pools() {
        let mut m = RequestMeter::default();
        let first = [member("p", "s/rg/web/0", 10), member("q", "s/rg/web/0", 5)];
        assert!(
            m.instance_counts(&first).iter().all(|c| c.requests == 0),
            "the first reading is a baseline"
        );
        let next = [
            member("p", "s/rg/web/0", 17),
            member("q", "s/rg/web/0", 8),
            member("p", "s/rg/web/00000001", 4),
        ];
        let got = m.instance_counts(&next);
        assert_eq!(
            got,
            vec![InstanceCount {
                set: "s/rg/web".into(),
                instance: "0".into(),
                requests: 10
            }],
            "7 in p and 3 in q; instance 1 only sets its baseline"
        );
        // A member that came back (its counter restarted) counts from 0.
        let got = m.instance_counts(&[member("p", "s/rg/web/00000001", 2)]);
        assert_eq!((got[0].instance.as_str(), got[0].requests), ("1", 2));
    }

    #[test]
    fn rates_per_instance_of_each_set() {
        let mut m = RequestMeter::default();
        let t0 = Instant::now();
        let places = vec![
            placed("p", "s/rg/web/0", false),
            placed("p", "s/rg/web/1", false),
            placed("p", "s/rg/web/2", true),
        ];
        // The first reading only sets the baseline.
        assert!(m.samples(&[stats("p", 100, 0, 0)], &places, t0).is_empty());
        let got = m.samples(
            &[stats("p", 500, 20, 6)],
            &places,
            t0 + Duration::from_secs(2),
        );
        let v: HashMap<&str, f64> = got.iter().map(|(_, n, v)| (*n, *v)).collect();
        assert!(got.iter().all(|(s, _, _)| s == "s/rg/web"));
        // 400 requests in 2 s over the 2 members not draining.
        assert_eq!(v["Requests Per Second"], 100.0);
        assert_eq!(v["Http 5xx Per Second"], 5.0);
        assert_eq!(v["Active Connections"], 3.0);
        assert_eq!(
            resource_id("s/rg/web").as_deref(),
            Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web")
        );
    }
}
