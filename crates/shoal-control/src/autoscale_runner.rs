//! The autoscale runner: every second it looks at each stored autoscale setting
//! (`autoscale/…`), and when the setting's evaluation interval has passed, evaluates it
//! ([`crate::autoscale::evaluate`]) against the metrics store and issues the verdict as
//! a [`Command::Autoscale`]: the capacity rule of [`crate::commands::capacity`] (the
//! server's limit, an operation record, an entry in the setting's activity log) applies
//! as to every other capacity change, and the write is guarded by the set's revision the
//! evaluation read, so a concurrent user PATCH wins and the next evaluation sees it.
//!
//! Webhooks of the setting get Azure's notification payload on each change.

use shoal_model::keys;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use shoal_metrics::MetricsStore;
use shoal_model::autoscale::{compile, AutoscaleSetting};
use shoal_model::records::VmssRecord;
use shoal_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::autoscale::{evaluate, Decision};
use crate::clock::arm_time;
use crate::commands::activity::history_key_of;
use crate::commands::{AutoscaleEvaluation, Command, CommandError, Executor, Limits};
use crate::kv;
use crate::Clock;

// The activity log moved to `commands::activity`; these paths stay for its readers.
pub use crate::commands::activity::{history_key, History, HistoryEntry, HISTORY_LIMIT};

/// Store key of a setting: `autoscale/{sub}/{rg}/{name}`, lower-cased.
pub fn setting_key(sub: &str, rg: &str, name: &str) -> String {
    keys::resource(keys::AUTOSCALE, sub, rg, name)
}

pub struct AutoscaleRunner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Where the verdicts go (the same commands as the API's).
    commands: Executor,
    metrics: Arc<MetricsStore>,
    http: reqwest::Client,
    /// Webhook posts in flight (waited for at shutdown).
    hooks: TaskTracker,
    /// When each setting (by key) was last evaluated.
    last_eval: HashMap<String, Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("The state store failed")]
    Store(#[source] shoal_store::StoreError),
    #[error("A stored record could not be read")]
    Decode(#[source] kv::KvError),
}

impl AutoscaleRunner {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, metrics: Arc<MetricsStore>) -> Self {
        AutoscaleRunner {
            commands: Executor::new(store.clone(), clock.clone(), Limits::default()),
            store,
            clock,
            metrics,
            http: reqwest::Client::new(),
            hooks: TaskTracker::new(),
            last_eval: HashMap::new(),
        }
    }

    /// The server's limits (its `max_capacity`) instead of Azure's defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.commands = Executor::new(self.store.clone(), self.clock.clone(), limits);
        self
    }

    /// Ticks every second until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.hooks.close();
                    self.hooks.wait().await;
                    return;
                }
                _ = tick.tick() => {}
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "autoscale pass failed; retrying next tick");
            }
        }
    }

    /// Evaluates every setting that is due. Returns the decisions applied or recorded.
    pub async fn pass(&mut self) -> Result<Vec<(String, Decision)>, RunnerError> {
        let now = self.clock.now();
        let (settings, _) = kv::list_json::<AutoscaleSetting>(&*self.store, "autoscale/")
            .await
            .map_err(RunnerError::Decode)?;
        let mut out = Vec::new();
        let mut live = std::collections::HashSet::new();
        for s in settings {
            live.insert(s.key.clone());
            // Stored settings passed validation; one that no longer compiles (a newer
            // rule) is skipped, not fatal.
            let Ok((compiled, _)) = compile(&s.value) else {
                continue;
            };
            if !compiled.enabled {
                continue;
            }
            let due = self
                .last_eval
                .get(&s.key)
                .is_none_or(|t| now.duration_since(*t).as_secs() >= compiled.interval_secs as i64);
            if !due {
                continue;
            }
            self.last_eval.insert(s.key.clone(), now);
            let Some(set) = kv::get_json::<VmssRecord>(&*self.store, &compiled.target.key())
                .await
                .map_err(RunnerError::Decode)?
            else {
                continue;
            };
            if set.value.deleting {
                continue;
            }
            let history = kv::get_json::<History>(&*self.store, &history_key_of(&s.key))
                .await
                .map_err(RunnerError::Decode)?
                .map(|h| h.value)
                .unwrap_or_default();
            let current = set.value.model.capacity();
            let decision = evaluate(
                &compiled,
                &*self.metrics,
                current,
                history.last_action(),
                now,
            );
            if !decision.is_notable() {
                continue;
            }
            let verdict = Command::Autoscale(AutoscaleEvaluation {
                setting_key: s.key.clone(),
                vmss: compiled.target.clone(),
                set_revision: set.revision,
                decision,
            });
            match self.commands.execute(verdict).await {
                Ok(done) => {
                    let Some(decision) = done.writes.recorded else {
                        continue;
                    };
                    if let Some(n) = decision.new_capacity {
                        tracing::info!(setting = %s.key, from = current, to = n, reason = %decision.reason, "autoscale");
                        self.notify(&s.value, &compiled.webhooks, &decision, now);
                    }
                    out.push((s.key.clone(), decision));
                }
                // Someone else changed the set (or deleted it): look again next tick.
                Err(CommandError::Conflict(_) | CommandError::Rejected(_)) => {
                    self.last_eval.remove(&s.key);
                }
                Err(CommandError::Store(e)) => return Err(RunnerError::Store(e)),
                Err(CommandError::Decode(e)) => return Err(RunnerError::Decode(e)),
            }
        }
        self.last_eval.retain(|k, _| live.contains(k));
        Ok(out)
    }

    /// Posts Azure's autoscale notification payload to each webhook, without waiting.
    fn notify(&self, setting: &AutoscaleSetting, hooks: &[String], d: &Decision, now: Timestamp) {
        let Some(new) = d.new_capacity else { return };
        let target = setting
            .properties
            .target_resource_uri
            .clone()
            .unwrap_or_default();
        let props = setting
            .properties
            .notifications
            .iter()
            .flatten()
            .flat_map(|n| n.webhooks.iter().flatten())
            .find_map(|w| w.properties.clone())
            .unwrap_or_default();
        let body = json!({
            "version": "1.0",
            "status": "Activated",
            "operation": if new > d.current { "Scale Out" } else { "Scale In" },
            "context": {
                "timestamp": arm_time(now),
                "id": setting.id,
                "name": setting.name,
                "details": d.reason,
                "subscriptionId": target.split('/').nth(2).unwrap_or_default(),
                "resourceGroupName": target.split('/').nth(4).unwrap_or_default(),
                "resourceName": target.rsplit('/').next().unwrap_or_default(),
                "resourceType": "microsoft.compute/virtualmachinescalesets",
                "resourceId": target,
                "portalLink": "",
                "resourceRegion": setting.location.clone().unwrap_or_else(|| "local".into()),
                "oldCapacity": d.current.to_string(),
                "newCapacity": new.to_string(),
            },
            "properties": props,
        });
        for url in hooks {
            let req = self
                .http
                .post(url)
                .json(&body)
                .timeout(Duration::from_secs(10));
            let url = url.clone();
            self.hooks.spawn(async move {
                if let Err(e) = req.send().await {
                    tracing::warn!(%url, error = %e, "autoscale webhook failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::Blocked;
    use crate::ManualClock;
    use serde_json::Value;
    use shoal_model::autoscale::VMSS_NAMESPACE;
    use shoal_model::ids::VmssRef;
    use shoal_store::Expect;
    use shoal_store::MemoryStore;
    use std::collections::BTreeMap;

    const SET: &str = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";

    fn set_record(capacity: i64) -> Value {
        json!({
            "vmss": {"subscription": "s", "resource_group": "demo", "name": "web"},
            "model": {"location": "local", "sku": {"name": "Shoal_1vCPU_512MB", "capacity": capacity}},
            "launch": {"generation": 1, "image_id": "i", "image_version": "1", "kind": "process", "blob_id": "b",
                "command": "c", "port": 80, "sku": "Shoal_1vCPU_512MB", "vcpus": 1, "memory_mb": 512,
                "custom_data": null, "computer_name_prefix": "web"},
            "next_instance_id": 0
        })
    }

    fn setting() -> Value {
        let rule = |op: &str, th: f64, dir: &str| {
            json!({
                "metricTrigger": {"metricName": "Percentage CPU", "metricNamespace": VMSS_NAMESPACE, "metricResourceUri": SET,
                    "timeGrain": "PT1S", "statistic": "Average", "timeWindow": "PT5S", "timeAggregation": "Average",
                    "operator": op, "threshold": th},
                "scaleAction": {"direction": dir, "type": "ChangeCount", "value": "1", "cooldown": "PT10S"}
            })
        };
        json!({"location": "local", "name": "auto", "properties": {
            "targetResourceUri": SET, "enabled": true,
            "shoal": {"evaluationInterval": "PT1S"},
            "profiles": [{"name": "default", "capacity": {"minimum": "1", "maximum": "3", "default": "1"},
                "rules": [rule("GreaterThan", 70.0, "Increase"), rule("LessThan", 20.0, "Decrease")]}]}})
    }

    #[tokio::test]
    async fn scales_out_then_waits_for_the_cooldown_then_back_in_and_records_why() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let clock = ManualClock::new(t0);
        let metrics = Arc::new(MetricsStore::new());
        let vref = VmssRef::new("s", "demo", "web");
        store
            .txn(vec![
                kv::put_op(vref.key(), &set_record(1), Expect::Absent),
                kv::put_op(setting_key("s", "demo", "auto"), &setting(), Expect::Absent),
            ])
            .await
            .unwrap();
        let mut runner =
            AutoscaleRunner::new(store.clone(), Arc::new(clock.clone()), metrics.clone());
        let cpu = |v: f64, at: Timestamp| {
            metrics.record_value(
                shoal_metrics::SeriesKey::new(
                    &vref,
                    None,
                    "Percentage CPU",
                    Some("0"),
                    BTreeMap::new(),
                ),
                at,
                v,
            )
        };
        let capacity = || async {
            kv::get_json::<VmssRecord>(&*store, &vref.key())
                .await
                .unwrap()
                .unwrap()
                .value
                .model
                .capacity()
        };
        cpu(95.0, t0);
        let d = runner.pass().await.unwrap();
        assert_eq!(d[0].1.new_capacity, Some(2));
        assert_eq!(capacity().await, 2);
        // Still hot, but the cooldown holds it; recorded once, not every second.
        for _ in 1..5 {
            clock.advance(Duration::from_secs(1));
            cpu(95.0, clock.now());
            runner.pass().await.unwrap();
        }
        assert_eq!(capacity().await, 2);
        // Load gone; after the 10 s cooldown it scales in.
        for _ in 5..16 {
            clock.advance(Duration::from_secs(1));
            cpu(5.0, clock.now());
            runner.pass().await.unwrap();
        }
        assert_eq!(capacity().await, 1);
        let h = kv::get_json::<History>(&*store, &history_key("s", "demo", "auto"))
            .await
            .unwrap()
            .unwrap()
            .value;
        let outcomes: Vec<&str> = h.entries.iter().map(|e| e.outcome.as_str()).collect();
        // The last: still cold at the minimum, recorded once.
        assert_eq!(
            outcomes,
            vec!["ScaleOut", "Blocked", "ScaleIn", "Blocked"],
            "{h:#?}"
        );
        assert_eq!(h.entries[3].blocked, Some(Blocked::AtMinimum));
        assert!(
            h.entries[0].reason.contains("Percentage CPU 95 > 70"),
            "{}",
            h.entries[0].reason
        );
        assert_eq!(h.entries[0].metrics[0].value, Some(95.0));
        assert!(matches!(
            h.entries[1].blocked,
            Some(Blocked::Cooldown { .. })
        ));
        assert_eq!(
            (h.entries[2].old_capacity, h.entries[2].new_capacity),
            (2, Some(1))
        );
    }

    /// Accepts one HTTP request and hands back its body.
    async fn one_request(listener: tokio::net::TcpListener) -> Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len || n == 0 {
                    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    return serde_json::from_str(body).unwrap();
                }
            }
        }
    }

    #[tokio::test]
    async fn webhooks_get_azures_notification_payload() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = tokio::spawn(one_request(listener));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
        let vref = VmssRef::new("s", "demo", "web");
        let mut body = setting();
        body["id"] = json!(format!("{SET}/../autoscalesettings/auto"));
        body["properties"]["notifications"] = json!([{"operation": "Scale",
            "webhooks": [{"serviceUri": hook, "properties": {"team": "web"}}]}]);
        store
            .txn(vec![
                kv::put_op(vref.key(), &set_record(7), Expect::Absent),
                kv::put_op(setting_key("s", "demo", "auto"), &body, Expect::Absent),
            ])
            .await
            .unwrap();
        let mut runner =
            AutoscaleRunner::new(store, Arc::new(clock), Arc::new(MetricsStore::new()));
        runner.pass().await.unwrap();
        let payload = tokio::time::timeout(Duration::from_secs(10), got)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(payload["operation"], "Scale In");
        assert_eq!(payload["status"], "Activated");
        assert_eq!(payload["context"]["oldCapacity"], "7");
        assert_eq!(payload["context"]["newCapacity"], "3");
        assert_eq!(payload["context"]["resourceName"], "web");
        assert_eq!(payload["context"]["resourceGroupName"], "demo");
        assert_eq!(payload["properties"]["team"], "web");
    }

    #[tokio::test]
    async fn the_history_sits_beside_a_setting_in_another_group() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
        let vref = VmssRef::new("s", "demo", "web");
        store
            .txn(vec![
                kv::put_op(vref.key(), &set_record(7), Expect::Absent),
                kv::put_op(setting_key("s", "Ops", "auto"), &setting(), Expect::Absent),
            ])
            .await
            .unwrap();
        let mut runner = AutoscaleRunner::new(
            store.clone(),
            Arc::new(clock),
            Arc::new(MetricsStore::new()),
        );
        runner.pass().await.unwrap();
        let h = kv::get_json::<History>(&*store, &history_key("s", "ops", "auto"))
            .await
            .unwrap();
        assert_eq!(h.unwrap().value.entries[0].new_capacity, Some(3));
    }

    #[tokio::test]
    async fn a_capacity_outside_the_profile_is_clamped_at_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
        let vref = VmssRef::new("s", "demo", "web");
        store
            .txn(vec![
                kv::put_op(vref.key(), &set_record(7), Expect::Absent),
                kv::put_op(setting_key("s", "demo", "auto"), &setting(), Expect::Absent),
            ])
            .await
            .unwrap();
        // Capacity 7 is above the maximum 3: clamped at once, no metrics needed.
        let mut runner = AutoscaleRunner::new(
            store.clone(),
            Arc::new(clock),
            Arc::new(MetricsStore::new()),
        );
        let d = runner.pass().await.unwrap();
        assert_eq!(d[0].1.new_capacity, Some(3));
    }
}
