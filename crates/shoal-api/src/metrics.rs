//! Metrics over HTTP, in and out of the server's metrics store (`shoal_metrics`):
//!
//! - in: `POST /shoal/v1/metrics` (agents: per-instance samples, and custom metrics
//!   instances push to their agent) and `POST {scaleSetId}/metrics` (Azure's
//!   custom-metrics shape, for users); a batch is recorded only when every sample in it
//!   is valid;
//! - out: `GET {scaleSetId}/providers/Microsoft.Insights/metrics` (Azure Monitor's query
//!   shape), `…/metricDefinitions`, and Prometheus text on `/metrics`.

use std::collections::{BTreeMap, HashMap};

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Method};
use jiff::{Timestamp, ToSpan};
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_control::clock::arm_time;
use shoal_metrics::{Agg, SeriesKey};
use shoal_model::autoscale::{
    self as model, platform_metric, MetricKey, PLATFORM_METRICS, VMSS_NAMESPACE,
};
use shoal_model::duration::{format_iso8601, parse_iso8601};
use shoal_model::ids::VmssRef;
use shoal_model::{vmss, ArmError};

use crate::autoscale::require_set;
use crate::groups::method_not_allowed;
use crate::response::{json, ApiResult, Ctx};
use crate::state::{body_object, ApiState};

/// Samples accepted in one ingestion request.
const MAX_SAMPLES: usize = 5000;
/// Buckets one metrics query may return per metric.
const MAX_POINTS: i64 = 10_000;

// ---------------------------------------------------------------------------------------
// Metrics in.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sample {
    resource_id: String,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    value: f64,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Samples {
    samples: Vec<Sample>,
}

fn check_name(target: &str, name: &str) -> Result<(), ArmError> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ArmError::invalid_parameter(
            target,
            "A metric name has 1 to 256 printable characters.",
        ));
    }
    Ok(())
}

fn sample_time(st: &ApiState, target: &str, time: Option<&str>) -> Result<Timestamp, ArmError> {
    let now = st.clock.now();
    let Some(t) = time else { return Ok(now) };
    let t: Timestamp = t.parse().map_err(|_| {
        ArmError::invalid_parameter(
            target,
            format!("'{t}' is not an RFC 3339 time (2026-11-22T09:00:00Z)."),
        )
    })?;
    // As Azure's custom metrics: up to 20 minutes old, up to 5 minutes ahead.
    let lo = now.checked_sub(20.minutes()).unwrap_or(now);
    let hi = now.checked_add(5.minutes()).unwrap_or(now);
    if t < lo || t > hi {
        return Err(ArmError::invalid_parameter(
            target,
            "The time is more than 20 minutes in the past or 5 minutes in the future.",
        ));
    }
    Ok(t)
}

/// `POST /shoal/v1/metrics`: samples from agents and balancers. An agent's samples of
/// instances it does not run (gone, moved, or never its own) are skipped.
pub async fn ingest(
    st: &ApiState,
    caller: Option<&shoal_auth::Principal>,
    method: &Method,
    body: &[u8],
) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    // Straight into the typed batch: agents post thousands of samples a second.
    let batch: Samples = vmss::parse_body(body)?;
    if batch.samples.len() > MAX_SAMPLES {
        return Err(ArmError::invalid_parameter(
            "samples",
            format!("At most {MAX_SAMPLES} samples per request; send the rest in another."),
        ));
    }
    let mut parsed = Vec::new();
    // Agents and balancers race with deletions: samples about a set that is gone (or
    // going) are skipped and counted, not a reason to refuse the rest.
    let mut known: HashMap<String, bool> = HashMap::new();
    let mut skipped = 0usize;
    // The host of each instance sampled, by its record key.
    let mut hosts: HashMap<String, Option<String>> = HashMap::new();
    for (i, s) in batch.samples.iter().enumerate() {
        let r = model::parse_vmss_id(&s.resource_id).ok_or_else(|| {
            ArmError::invalid_parameter(format!("samples[{i}].resourceId"), "Not a scale set id.")
        })?;
        let exists = match known.get(&r.key()) {
            Some(e) => *e,
            None => {
                let e = require_set(st, &r, "").await.is_ok();
                known.insert(r.key(), e);
                e
            }
        };
        if !exists || !runs_on(st, caller, &r, s.instance_id.as_deref(), &mut hosts).await? {
            skipped += 1;
            continue;
        }
        check_name(&format!("samples[{i}].name"), &s.name)?;
        if !s.value.is_finite() {
            return Err(ArmError::invalid_parameter(
                format!("samples[{i}].value"),
                "The value must be a finite number.",
            ));
        }
        let platform = model::is_platform_namespace(s.namespace.as_deref());
        if platform && platform_metric(&s.name).is_none() {
            return Err(ArmError::invalid_parameter(
                format!("samples[{i}].name"),
                format!(
                    "'{}' is not a platform metric: set a namespace for custom metrics.",
                    s.name
                ),
            ));
        }
        let at = sample_time(st, &format!("samples[{i}].time"), s.time.as_deref())?;
        let key = SeriesKey::new(
            &r,
            s.namespace.as_deref(),
            &s.name,
            s.instance_id.as_deref(),
            s.dimensions.clone(),
        );
        parsed.push((key, at, s.value));
    }
    // Only a wholly valid batch is recorded.
    let n = parsed.len();
    for (key, at, value) in parsed {
        st.metrics.record_value(key, at, value);
    }
    Ok(json(200, &json!({"accepted": n, "skipped": skipped})))
}

/// Whether the caller may report the sample: an agent only of an instance it runs.
async fn runs_on(
    st: &ApiState,
    caller: Option<&shoal_auth::Principal>,
    set: &shoal_model::ids::VmssRef,
    instance: Option<&str>,
    hosts: &mut HashMap<String, Option<String>>,
) -> Result<bool, ArmError> {
    // Balancers report request metrics of whole sets; agents, of the instances they run.
    let Some(c) = caller.filter(|c| c.kind == shoal_auth::PrincipalKind::Host) else {
        return Ok(true);
    };
    let Some(id) = instance.and_then(|i| i.parse::<u64>().ok()) else {
        return Ok(false);
    };
    /// The one field of an instance record this check needs (agents post a sample batch
    /// every second: no need to decode whole records for it).
    #[derive(Deserialize)]
    struct HostOf {
        host: String,
    }
    let key = set.instance_key(id);
    if !hosts.contains_key(&key) {
        let host = st.get::<HostOf>(&key).await?.map(|r| r.value.host);
        hosts.insert(key.clone(), host);
    }
    Ok(hosts[&key]
        .as_deref()
        .is_some_and(|h| h.eq_ignore_ascii_case(&c.appid)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomSeries {
    #[serde(default)]
    dim_values: Vec<String>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    sum: f64,
    #[serde(default)]
    count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomBase {
    metric: String,
    namespace: String,
    #[serde(default)]
    dim_names: Vec<String>,
    series: Vec<CustomSeries>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomData {
    base_data: CustomBase,
}

#[derive(Debug, Deserialize)]
struct CustomMetric {
    #[serde(default)]
    time: Option<String>,
    data: CustomData,
}

/// `POST {scaleSetId}/metrics`: a custom metric in Azure Monitor's shape
/// (`{"time", "data": {"baseData": {"metric", "namespace", "dimNames", "series": [{"dimValues", "min", "max", "sum", "count"}]}}}`).
pub async fn custom(st: &ApiState, method: &Method, v: &VmssRef, body: &[u8]) -> ApiResult {
    if method != Method::POST {
        return Err(method_not_allowed(method));
    }
    require_set(st, v, "resourceId")
        .await
        .map_err(|_| ArmError::not_found("scale set", &v.name))?;
    let m: CustomMetric = vmss::parse_typed(&body_object(body, true)?)?;
    let b = &m.data.base_data;
    check_name("data.baseData.metric", &b.metric)?;
    check_name("data.baseData.namespace", &b.namespace)?;
    if model::is_platform_namespace(Some(&b.namespace)) {
        return Err(ArmError::invalid_parameter(
            "data.baseData.namespace",
            "Custom metrics need their own namespace (e.g. 'shoal/custom'), not the platform's.",
        ));
    }
    if b.series.len() > MAX_SAMPLES {
        return Err(ArmError::invalid_parameter(
            "data.baseData.series",
            format!("At most {MAX_SAMPLES} series per request."),
        ));
    }
    let at = sample_time(st, "time", m.time.as_deref())?;
    let mut parsed = Vec::new();
    for (i, s) in b.series.iter().enumerate() {
        if s.dim_values.len() != b.dim_names.len() {
            return Err(ArmError::invalid_parameter(
                format!("data.baseData.series[{i}].dimValues"),
                "Give one value per name in dimNames.",
            ));
        }
        let count = s.count.unwrap_or(1);
        let avg = s.sum / count.max(1) as f64;
        let (min, max) = (s.min.unwrap_or(avg), s.max.unwrap_or(avg));
        if ![s.sum, min, max].iter().all(|x| x.is_finite()) || !(1..=1_000_000_000).contains(&count)
        {
            return Err(ArmError::invalid_parameter(
                format!("data.baseData.series[{i}]"),
                "sum, min and max must be finite and count 1 to 1000000000.",
            ));
        }
        let dims: BTreeMap<String, String> = b
            .dim_names
            .iter()
            .cloned()
            .zip(s.dim_values.iter().cloned())
            .collect();
        // A `VMName` dimension makes it an instance's metric.
        let instance = dims
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("VMName"))
            .map(|(_, v)| v.clone());
        let dims = dims
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("VMName"))
            .collect();
        let key = SeriesKey::new(v, Some(&b.namespace), &b.metric, instance.as_deref(), dims);
        parsed.push((key, Agg::of(s.sum, count, min, max)));
    }
    for (key, agg) in parsed {
        st.metrics.record(key, at, agg);
    }
    Ok(json(200, &json!({})))
}

// ---------------------------------------------------------------------------------------
// Metrics out.

fn unit(name: &str) -> &'static str {
    match platform_metric(name) {
        Some("Percentage CPU") => "Percent",
        Some("Available Memory Bytes") | Some("Network In Total") | Some("Network Out Total") => {
            "Bytes"
        }
        Some("Requests Per Second") | Some("Http 5xx Per Second") => "CountPerSecond",
        Some("Active Connections") | Some("Request Count") => "Count",
        _ => "Unspecified",
    }
}

fn parse_timespan(s: &str, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
    let s = crate::times::decode_again(s);
    let (a, b) = s.split_once('/')?;
    let start = crate::times::parse_utc(a)?;
    let end = match crate::times::parse_utc(b) {
        Some(t) => t,
        None => start
            .checked_add((parse_iso8601(b)? as i64).seconds())
            .ok()?,
    };
    let _ = now;
    (end > start).then_some((start, end))
}

/// A metrics query's `$filter`: `VMName eq '3'`, `VMName eq '3' or VMName eq '4'`,
/// `VMName eq '*'` (one series per instance), clauses on other dimensions joined by `and`.
#[derive(Debug, Default, PartialEq)]
struct Filter {
    clauses: Vec<(String, model::DimensionOperator, Vec<String>)>,
    split: bool,
}

fn parse_filter(f: &str) -> Result<Filter, ArmError> {
    let bad = |why: &str| {
        ArmError::invalid_parameter(
            "$filter",
            format!("'{f}' {why}: write clauses like VMName eq '3' (or '*' for one series per instance), joined by 'and' or 'or'."),
        )
    };
    let mut out = Filter::default();
    for conj in split_words(f, "and") {
        let mut name: Option<String> = None;
        let mut op = None;
        let mut values = Vec::new();
        for clause in split_words(conj, "or") {
            let words: Vec<&str> = clause.trim().splitn(3, ' ').collect();
            let [n, o, v] = words[..] else {
                return Err(bad("is not a filter"));
            };
            let o = match o.to_ascii_lowercase().as_str() {
                "eq" => model::DimensionOperator::Equals,
                "ne" => model::DimensionOperator::NotEquals,
                _ => return Err(bad(&format!("uses '{o}'"))),
            };
            let v = v.trim();
            let Some(v) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) else {
                return Err(bad("has a value without quotes"));
            };
            if name.as_deref().is_some_and(|m| !m.eq_ignore_ascii_case(n))
                || op.is_some_and(|p| p != o)
            {
                return Err(bad("mixes dimensions or operators inside an 'or'"));
            }
            name = Some(n.to_string());
            op = Some(o);
            values.push(v.to_string());
        }
        let (Some(name), Some(op)) = (name, op) else {
            return Err(bad("is empty"));
        };
        if name.eq_ignore_ascii_case("VMName") && values.iter().any(|v| v == "*") {
            out.split = true;
        }
        out.clauses.push((name, op, values));
    }
    Ok(out)
}

/// `s` split at the word `word` (any case) with spaces around it.
fn split_words<'a>(s: &'a str, word: &str) -> Vec<&'a str> {
    let lower = s.to_ascii_lowercase();
    let sep = format!(" {word} ");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find(&sep) {
        out.push(&s[from..from + at]);
        from += at + sep.len();
    }
    out.push(&s[from..]);
    out
}

/// The points of one series from `start` to `end`, a point per interval.
fn points(
    by_start: &BTreeMap<i64, Agg>,
    aggs: &[String],
    start: Timestamp,
    end: Timestamp,
    interval: u64,
) -> Vec<Value> {
    let mut data = Vec::new();
    let mut t = start;
    while t < end {
        let mut point = json!({"timeStamp": arm_time(t)});
        if let Some(a) = by_start.get(&t.as_second()) {
            for agg in aggs {
                let v = match agg.as_str() {
                    "average" => a.average(),
                    "minimum" => a.min,
                    "maximum" => a.max,
                    "total" => a.sum,
                    _ => a.count as f64,
                };
                point[agg.as_str()] = json!(v);
            }
        }
        data.push(point);
        t = match t.checked_add((interval as i64).seconds()) {
            Ok(n) => n,
            Err(_) => break,
        };
    }
    data
}

/// `GET {scaleSetId}/providers/Microsoft.Insights/metrics`.
pub async fn query(st: &ApiState, ctx: &Ctx, method: &Method, v: &VmssRef) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    require_set(st, v, "resourceId")
        .await
        .map_err(|_| ArmError::not_found("scale set", &v.name))?;
    let now = st.clock.now();
    let names: Vec<String> = ctx
        .query("metricnames")
        .unwrap_or("Percentage CPU")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.len() > 20 {
        return Err(ArmError::invalid_parameter(
            "metricnames",
            "At most 20 metrics per query (as Azure Monitor): split the query.",
        ));
    }
    let namespace = ctx.query("metricnamespace").filter(|n| !n.is_empty());
    let interval = match ctx.query("interval") {
        None => 60,
        Some(i) => parse_iso8601(i).filter(|s| *s >= 1).ok_or_else(|| {
            ArmError::invalid_parameter(
                "interval",
                format!("'{i}' is not an ISO 8601 duration of at least PT1S (e.g. PT1M)."),
            )
        })?,
    };
    let (start, end) = match ctx.query("timespan") {
        None => (now.checked_sub(1.hour()).unwrap_or(now), now),
        Some(t) => parse_timespan(t, now).ok_or_else(|| {
            ArmError::invalid_parameter("timespan", format!("'{t}' is not start/end (2026-11-22T09:00:00Z/2026-11-22T10:00:00Z) or start/duration."))
        })?,
    };
    if (end.as_second() - start.as_second()) / interval as i64 > MAX_POINTS {
        return Err(ArmError::invalid_parameter(
            "interval",
            format!("That is more than {MAX_POINTS} points per metric: use a larger interval or a shorter timespan."),
        ));
    }
    let aggs: Vec<String> = ctx
        .query("aggregation")
        .unwrap_or("Average")
        .split(',')
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .collect();
    for a in &aggs {
        if !["average", "minimum", "maximum", "total", "count"].contains(&a.as_str()) {
            return Err(ArmError::invalid_parameter(
                "aggregation",
                format!(
                    "'{a}' is not an aggregation: use Average, Minimum, Maximum, Total or Count."
                ),
            ));
        }
    }
    let filter = match ctx.query("$filter") {
        Some(f) => parse_filter(&crate::times::decode_again(f))?,
        None => Filter::default(),
    };
    let mut value = Vec::new();
    for name in &names {
        let metric = if model::is_platform_namespace(namespace) {
            let canonical = platform_metric(name).ok_or_else(|| {
                ArmError::invalid_parameter(
                    "metricnames",
                    format!("'{name}' is not a metric of {VMSS_NAMESPACE}: use one of {}, or metricnamespace for custom metrics.", PLATFORM_METRICS.join(", ")),
                )
            })?;
            MetricKey {
                resource: v.clone(),
                namespace: None,
                name: canonical.to_string(),
            }
        } else {
            MetricKey {
                resource: v.clone(),
                namespace: namespace.map(String::from),
                name: name.clone(),
            }
        };
        let buckets = st
            .metrics
            .query(&metric, &filter.clauses, start, end, interval);
        // One series, or one per instance when the filter splits by `VMName eq '*'`.
        let mut by_series: BTreeMap<Option<String>, BTreeMap<i64, Agg>> = BTreeMap::new();
        for b in buckets {
            for (key, a) in b.per_series {
                let series = filter
                    .split
                    .then(|| key.instance.clone().unwrap_or_default());
                let slot = by_series.entry(series).or_default();
                match slot.get_mut(&b.start.as_second()) {
                    Some(t) => {
                        t.sum += a.sum;
                        t.count += a.count;
                        t.min = t.min.min(a.min);
                        t.max = t.max.max(a.max);
                    }
                    None => {
                        slot.insert(b.start.as_second(), a);
                    }
                }
            }
        }
        if by_series.is_empty() && !filter.split {
            by_series.insert(None, BTreeMap::new());
        }
        let timeseries: Vec<Value> = by_series
            .iter()
            .map(|(instance, by_start)| {
                let metadata = match instance {
                    Some(i) => json!([{"name": {"value": "vmname", "localizedValue": "vmname"}, "value": i}]),
                    None => json!([]),
                };
                json!({"metadatavalues": metadata, "data": points(by_start, &aggs, start, end, interval)})
            })
            .collect();
        value.push(json!({
            "id": format!("{}/providers/Microsoft.Insights/metrics/{}", v.id(), metric.name),
            "type": "Microsoft.Insights/metrics",
            "name": {"value": metric.name, "localizedValue": metric.name},
            "displayDescription": "",
            "unit": unit(&metric.name),
            "errorCode": "Success",
            "timeseries": timeseries,
        }));
    }
    Ok(json(
        200,
        &json!({
            "cost": 0,
            "timespan": format!("{}/{}", arm_time(start), arm_time(end)),
            "interval": format_iso8601(interval),
            "namespace": namespace.unwrap_or(VMSS_NAMESPACE),
            "resourceregion": "local",
            "value": value,
        }),
    ))
}

/// `GET {scaleSetId}/providers/Microsoft.Insights/metricDefinitions`.
pub async fn definitions(st: &ApiState, method: &Method, v: &VmssRef) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    require_set(st, v, "resourceId")
        .await
        .map_err(|_| ArmError::not_found("scale set", &v.name))?;
    let value: Vec<Value> = PLATFORM_METRICS
        .iter()
        .map(|m| {
            json!({
                "id": format!("{}/providers/microsoft.insights/metricdefinitions/{m}", v.id()),
                "resourceId": v.id(),
                "namespace": VMSS_NAMESPACE,
                "name": {"value": m, "localizedValue": m},
                "isDimensionRequired": false,
                "unit": unit(m),
                "primaryAggregationType": "Average",
                "supportedAggregationTypes": ["None", "Average", "Minimum", "Maximum", "Total", "Count"],
                "metricAvailabilities": [{"timeGrain": "PT1M", "retention": "P1D"}],
                "dimensions": [{"value": "VMName", "localizedValue": "VMName"}],
            })
        })
        .collect();
    Ok(json(200, &json!({"value": value})))
}

pub(crate) fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: Prometheus text.
pub fn prometheus(st: &ApiState, method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let mut out = String::new();
    out.push_str("# HELP shoal_metric Latest value of each metric series Shoal keeps.\n# TYPE shoal_metric gauge\n");
    for (k, v, _) in st.metrics.latest() {
        let mut labels = format!(
            "resource=\"{}\",namespace=\"{}\",metric=\"{}\",instance=\"{}\"",
            label(&k.resource),
            label(k.namespace.as_deref().unwrap_or("")),
            label(&k.name),
            label(k.instance.as_deref().unwrap_or(""))
        );
        for (dk, dv) in &k.dimensions {
            let clean: String = dk
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            labels.push_str(&format!(",dim_{clean}=\"{}\"", label(dv)));
        }
        out.push_str(&format!("shoal_metric{{{labels}}} {v}\n"));
    }
    out.push_str(&crate::cluster::prometheus(&st.cluster));
    let s = st.metrics.stats();
    out.push_str(&format!(
        "# HELP shoal_metrics_series Series kept in memory.\n# TYPE shoal_metrics_series gauge\nshoal_metrics_series {}\n\
         # HELP shoal_metrics_accepted_total Samples accepted.\n# TYPE shoal_metrics_accepted_total counter\nshoal_metrics_accepted_total {}\n\
         # HELP shoal_metrics_dropped_points_total Samples dropped to bound memory (oldest first).\n# TYPE shoal_metrics_dropped_points_total counter\nshoal_metrics_dropped_points_total {}\n\
         # HELP shoal_metrics_dropped_series_total Series dropped to bound memory.\n# TYPE shoal_metrics_dropped_series_total counter\nshoal_metrics_dropped_series_total {}\n",
        s.series, s.accepted, s.dropped_points, s.dropped_series
    ));
    let mut resp = Response::new(Body::from(out));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::autoscale::tests::{call, state, SET, T0};
    use crate::server::{body_bytes, request};

    #[tokio::test]
    async fn metrics_in_and_out_in_azure_monitor_shape() {
        let st = state().await;
        let at = |s: i64| arm_time(Timestamp::from_second(T0 - 120 + s).expect("t"));
        let samples: Vec<Value> = (0..60)
            .flat_map(|s| {
                [("0", 80.0), ("1", 40.0)].map(|(i, v)| json!({"resourceId": SET, "instanceId": i, "name": "Percentage CPU", "value": v, "time": at(s)}))
            })
            .collect();
        let (status, body) = call(
            &st,
            Method::POST,
            "/shoal/v1/metrics",
            json!({"samples": samples}),
        )
        .await;
        assert_eq!(
            (status, body["accepted"].as_u64()),
            (200, Some(120)),
            "{body}"
        );

        // A batch with one bad sample records nothing.
        let bad = json!({"samples": [
            {"resourceId": SET, "instanceId": "0", "name": "Percentage CPU", "value": 1.0},
            {"resourceId": SET, "instanceId": "0", "name": "Percentage CPUU", "value": 1.0}]});
        let (status, err) = call(&st, Method::POST, "/shoal/v1/metrics", bad).await;
        assert_eq!(
            (status, err["error"]["target"].as_str()),
            (400, Some("samples[1].name"))
        );
        // A sample about a set that is gone is skipped, not fatal to the batch.
        let gone = json!({"samples": [{"resourceId": SET.replace("/web", "/gone"), "instanceId": "0", "name": "Percentage CPU", "value": 1.0}]});
        let (status, body) = call(&st, Method::POST, "/shoal/v1/metrics", gone).await;
        assert_eq!((status, body["skipped"].as_u64()), (200, Some(1)), "{body}");

        let q = format!(
            "{SET}/providers/Microsoft.Insights/metrics?metricnames=Percentage%20CPU&aggregation=Average,Maximum,Count&interval=PT1M&timespan={}/{}",
            at(0), at(120)
        );
        let (status, body) = call(&st, Method::GET, &q, Value::Null).await;
        assert_eq!(status, 200, "{body}");
        let m = &body["value"][0];
        assert_eq!(m["name"]["value"], "Percentage CPU");
        assert_eq!(m["unit"], "Percent");
        let data = m["timeseries"][0]["data"].as_array().expect("data");
        assert_eq!(data.len(), 2);
        assert_eq!(
            (
                data[0]["average"].as_f64(),
                data[0]["maximum"].as_f64(),
                data[0]["count"].as_f64()
            ),
            (Some(60.0), Some(80.0), Some(120.0))
        );
        assert!(
            data[1].get("average").is_none(),
            "an empty interval has only its timestamp"
        );

        // One instance, then one series per instance, as Azure's `VMName` dimension.
        let q = format!(
            "{SET}/providers/Microsoft.Insights/metrics?metricnames=Percentage%20CPU&interval=PT2M&timespan={}/{}",
            at(0), at(120)
        );
        let (_, body) = call(
            &st,
            Method::GET,
            &format!("{q}&$filter=VMName%20eq%20%271%27"),
            Value::Null,
        )
        .await;
        assert_eq!(
            body["value"][0]["timeseries"][0]["data"][0]["average"].as_f64(),
            Some(40.0),
            "{body}"
        );
        let (_, body) = call(
            &st,
            Method::GET,
            &format!("{q}&$filter=VMName%20eq%20%27*%27"),
            Value::Null,
        )
        .await;
        let series: Vec<(String, Option<f64>)> = body["value"][0]["timeseries"]
            .as_array()
            .expect("series")
            .iter()
            .map(|t| {
                (
                    t["metadatavalues"][0]["value"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    t["data"][0]["average"].as_f64(),
                )
            })
            .collect();
        assert_eq!(
            series,
            vec![("0".to_string(), Some(80.0)), ("1".to_string(), Some(40.0))],
            "{body}"
        );

        // A custom metric in Azure's shape, then queried with its namespace.
        let custom = json!({"time": at(119), "data": {"baseData": {"metric": "QueueDepth", "namespace": "shoal/custom",
            "dimNames": ["QueueName"], "series": [{"dimValues": ["jobs"], "min": 10, "max": 30, "sum": 40, "count": 2}]}}});
        let (status, body) = call(&st, Method::POST, &format!("{SET}/metrics"), custom).await;
        assert_eq!(status, 200, "{body}");
        let q = format!("{SET}/providers/Microsoft.Insights/metrics?metricnames=QueueDepth&metricnamespace=shoal/custom&interval=PT2M&timespan={}/{}&aggregation=Average", at(0), at(120));
        let (_, body) = call(&st, Method::GET, &q, Value::Null).await;
        assert_eq!(
            body["value"][0]["timeseries"][0]["data"][0]["average"].as_f64(),
            Some(20.0),
            "{body}"
        );

        for (q, target) in [
            (
                format!("{SET}/providers/Microsoft.Insights/metrics?metricnames=Nope"),
                "metricnames",
            ),
            (
                format!("{SET}/providers/Microsoft.Insights/metrics?interval=soon"),
                "interval",
            ),
            (
                format!("{SET}/providers/Microsoft.Insights/metrics?timespan=yesterday"),
                "timespan",
            ),
            (
                format!("{SET}/providers/Microsoft.Insights/metrics?$filter=VMName%20gt%201"),
                "$filter",
            ),
            (
                format!(
                    "{SET}/providers/Microsoft.Insights/metrics?metricnames={}",
                    vec!["Percentage%20CPU"; 21].join(",")
                ),
                "metricnames",
            ),
            (
                format!("{SET}/providers/Microsoft.Insights/metrics?aggregation=Median"),
                "aggregation",
            ),
            (
                format!(
                    "{SET}/providers/Microsoft.Insights/metrics?interval=PT1S&timespan={}/{}",
                    at(0),
                    at(100_000)
                ),
                "interval",
            ),
        ] {
            let (status, err) = call(&st, Method::GET, &q, Value::Null).await;
            assert_eq!(
                (status, err["error"]["target"].as_str()),
                (400, Some(target)),
                "{q}"
            );
        }

        let resp = crate::router(st.clone())
            .oneshot(request(Method::GET, "/metrics", ""))
            .await
            .expect("response");
        let text = String::from_utf8_lossy(&body_bytes(resp).await).to_string();
        assert!(text.contains("shoal_metric{resource=\"s/demo/web\",namespace=\"\",metric=\"percentage cpu\",instance=\"0\"} 80"), "{text}");
        assert!(text.contains("shoal_metrics_dropped_points_total 0"));
    }

    #[test]
    fn filters_as_azure_monitor_writes_them() {
        let f = parse_filter("VMName eq '3' or VMName eq '4' and Pool eq 'web'").expect("filter");
        assert_eq!(f.clauses.len(), 2);
        assert_eq!(f.clauses[0].2, vec!["3", "4"]);
        assert!(!f.split);
        assert!(parse_filter("vmname EQ '*'").expect("filter").split);
        for bad in [
            "",
            "VMName",
            "VMName eq 3",
            "VMName gt '3'",
            "VMName eq '3' or Pool eq '4'",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_filter_is_parsed_or_refused_never_a_panic(f in ".{0,80}") {
            let _ = parse_filter(&f);
        }
    }
}
