//! Instance metrics: every second the agent samples [`Driver::usage`] of each instance it
//! runs and posts Azure's scale-set host metrics to the server (`POST /shoal/v1/metrics`):
//!
//! - `Percentage CPU`: CPU time used over the period as a percent of the instance's
//!   vCPUs (one busy core of a 1-vCPU size is 100 %, as Azure defines it);
//! - `Available Memory Bytes`: the size's memory minus what the instance uses;
//! - `Network In Total` / `Network Out Total`: bytes received / sent during the period.
//!
//! Instances push custom metrics to `POST $SHOAL_METADATA_ENDPOINT/metrics` with
//! `{"name", "value", "namespace"?, "dimensions"?}`; the agent forwards them with the
//! instance's identity (namespace `shoal/custom` unless given).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use shoal_client::ServerClient;
use shoal_model::records::InstanceRecord;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, InstanceKey, Usage};
use crate::http::Registry;

/// How often instances are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long one instance's reading may wait for its slot before it is skipped.
const USAGE_WAIT: Duration = Duration::from_millis(200);
/// Samples per request to the server.
const POST_CHUNK: usize = 2000;

/// The metrics of one instance between two usage readings.
pub fn derive(
    rec: &InstanceRecord,
    prev: &Usage,
    now: &Usage,
    elapsed: Duration,
) -> Vec<(&'static str, f64)> {
    let secs = elapsed.as_secs_f64();
    let mut out = Vec::new();
    if secs > 0.0 {
        let cpu_ns = now.cpu_time_ns.saturating_sub(prev.cpu_time_ns) as f64;
        let vcpus = f64::from(rec.launch.vcpus.max(1));
        let pct = (cpu_ns / (secs * 1e9 * vcpus) * 100.0).clamp(0.0, 100.0);
        out.push(("Percentage CPU", pct));
        out.push((
            "Network In Total",
            now.net_rx_bytes.saturating_sub(prev.net_rx_bytes) as f64,
        ));
        out.push((
            "Network Out Total",
            now.net_tx_bytes.saturating_sub(prev.net_tx_bytes) as f64,
        ));
    }
    let total = rec.launch.memory_mb.saturating_mul(1 << 20);
    out.push((
        "Available Memory Bytes",
        total.saturating_sub(now.memory_bytes) as f64,
    ));
    out
}

/// One sample as `POST /shoal/v1/metrics` takes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Sample<'a> {
    resource_id: &'a str,
    #[serde(serialize_with = "as_string")]
    instance_id: u64,
    namespace: Option<&'a str>,
    name: &'a str,
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<&'a BTreeMap<String, String>>,
}

/// Instance ids go as strings, as Azure names them.
fn as_string<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

impl<'a> Sample<'a> {
    fn new(rec: &InstanceRecord, resource_id: &'a str, name: &'a str, value: f64) -> Self {
        Sample {
            resource_id,
            instance_id: rec.instance_id,
            namespace: None,
            name,
            value,
            dimensions: None,
        }
    }
}

/// Samples every instance in `registry` each second and posts the metrics, until
/// `shutdown`. A failed post is logged and the samples dropped (metrics are best effort).
pub async fn run(
    registry: Registry,
    driver: Arc<dyn Driver>,
    client: ServerClient,
    shutdown: CancellationToken,
) {
    let mut last: HashMap<String, (Instant, Usage)> = HashMap::new();
    let mut trouble = Trouble::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let instances: Vec<(String, InstanceRecord)> = registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Each instance's set id, formatted once for its samples (not once per sample).
        let ids: Vec<String> = instances.iter().map(|(_, rec)| rec.vmss.id()).collect();
        let mut samples = Vec::new();
        let now = Instant::now();
        for ((slug, rec), id) in instances.iter().zip(&ids) {
            // An instance in the middle of a long operation (a stop's grace period holds
            // its slot) is skipped this second, not waited for: the others' metrics, which
            // autoscale acts on, keep coming.
            let usage =
                match tokio::time::timeout(USAGE_WAIT, driver.usage(&InstanceKey(slug.clone())))
                    .await
                {
                    Ok(Ok(Some(usage))) => usage,
                    Ok(_) => {
                        last.remove(slug);
                        continue;
                    }
                    Err(_) => {
                        trouble.note(format_args!("instance {slug} was busy; not sampled"));
                        continue;
                    }
                };
            if let Some((at, prev)) = last.get(slug) {
                for (name, v) in derive(rec, prev, &usage, now.duration_since(*at)) {
                    samples.push(Sample::new(rec, id, name, v));
                }
            }
            last.insert(slug.clone(), (now, usage));
        }
        let live: std::collections::HashSet<&String> = instances.iter().map(|(s, _)| s).collect();
        last.retain(|slug, _| live.contains(slug));
        if samples.is_empty() {
            continue;
        }
        // The server takes at most 5000 samples a request.
        for chunk in samples.chunks(POST_CHUNK) {
            match client.push_metrics(chunk).await {
                Ok(r) if r.status.is_success() => {}
                Ok(r) => trouble.note(format_args!("the server refused them ({})", r.status)),
                Err(e) => trouble.note(format_args!("the server cannot be reached ({e})")),
            }
        }
    }
}

/// Metrics that could not be taken or delivered, said in the log at most once a minute
/// (autoscale rules act on them: a silent gap would look like an idle set).
#[derive(Default)]
struct Trouble {
    since: u64,
    said: Option<Instant>,
}

impl Trouble {
    fn note(&mut self, what: std::fmt::Arguments<'_>) {
        self.since += 1;
        if self
            .said
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        tracing::warn!(
            times = self.since,
            "Instance metrics missed: {what} (autoscale rules see a gap; said at most once a minute)"
        );
        self.since = 0;
        self.said = Some(Instant::now());
    }
}

#[derive(Clone)]
struct PushState {
    registry: Registry,
    client: ServerClient,
}

#[derive(Deserialize)]
struct Push {
    name: String,
    value: f64,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
}

/// `POST /i/{slug}/metrics`: an instance pushes a custom metric through its agent.
pub fn router(registry: Registry, client: ServerClient) -> Router {
    Router::new()
        .route("/i/{slug}/metrics", post(push))
        .with_state(PushState { registry, client })
}

async fn push(
    State(st): State<PushState>,
    Path(slug): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let rec = st
        .registry
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&slug)
        .cloned();
    let Some(rec) = rec else {
        return (StatusCode::NOT_FOUND, "unknown instance\n").into_response();
    };
    let Ok(p) = serde_json::from_slice::<Push>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected {\"name\": \"queue length\", \"value\": 12, \"namespace\": \"shoal/custom\", \"dimensions\": {}}\n",
        )
            .into_response();
    };
    let id = rec.vmss.id();
    let s = Sample {
        namespace: Some(p.namespace.as_deref().unwrap_or("shoal/custom")),
        dimensions: Some(&p.dimensions),
        ..Sample::new(&rec, &id, &p.name, p.value)
    };
    match st.client.push_metrics(&[s]).await {
        Ok(r) => (r.status, r.body).into_response(),
        Err(_) => (StatusCode::BAD_GATEWAY, "the server cannot be reached\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec(vcpus: u32, memory_mb: u64) -> InstanceRecord {
        crate::fixtures::record(3, vcpus, memory_mb)
    }

    #[test]
    fn samples_go_in_the_shape_the_server_takes() {
        let r = rec(1, 512);
        let id = r.vmss.id();
        let s = serde_json::to_value(Sample::new(&r, &id, "Percentage CPU", 12.5)).expect("json");
        assert_eq!(
            s,
            json!({"resourceId": id, "instanceId": "3", "namespace": null, "name": "Percentage CPU", "value": 12.5})
        );
        let dims = BTreeMap::from([("queue".to_owned(), "jobs".to_owned())]);
        let custom = Sample {
            namespace: Some("shoal/custom"),
            dimensions: Some(&dims),
            ..Sample::new(&r, &id, "queue length", 3.0)
        };
        assert_eq!(
            serde_json::to_value(custom).expect("json")["dimensions"],
            json!({"queue": "jobs"})
        );
    }

    #[test]
    fn one_busy_core_of_a_one_vcpu_size_is_100_percent() {
        let prev = Usage::default();
        let now = Usage {
            cpu_time_ns: 2_000_000_000,
            memory_bytes: 100 << 20,
            net_rx_bytes: 500,
            net_tx_bytes: 700,
        };
        let m: HashMap<_, _> = derive(&rec(1, 512), &prev, &now, Duration::from_secs(2))
            .into_iter()
            .collect();
        assert_eq!(m["Percentage CPU"], 100.0);
        assert_eq!(m["Available Memory Bytes"], (412u64 << 20) as f64);
        assert_eq!(
            (m["Network In Total"], m["Network Out Total"]),
            (500.0, 700.0)
        );
        // The same work on a 4-vCPU size is a quarter.
        let m: HashMap<_, _> = derive(&rec(4, 512), &prev, &now, Duration::from_secs(2))
            .into_iter()
            .collect();
        assert_eq!(m["Percentage CPU"], 25.0);
        // Counters that went backwards (a restart) read as zero, not as a huge value.
        let m: HashMap<_, _> = derive(&rec(1, 512), &now, &prev, Duration::from_secs(1))
            .into_iter()
            .collect();
        assert_eq!(m["Percentage CPU"], 0.0);
    }
}
