//! `shoal monitor metrics` (and `shoal vmss metrics`): a scale set's metrics from Azure
//! Monitor's query, printed as `TIME  VALUE` lines under a sparkline.

use clap::Args;
use serde_json::Value;

use super::{duration, get, print, rfc3339, shoal_duration_secs, unix_now, VMSS_TYPE};
use crate::client::Client;
use crate::output::Printer;
use crate::request::{segment, subscription_path};

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// The scale set.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
    /// The metric to show (a platform metric, or a custom one with --namespace).
    #[arg(long, default_value = "Percentage CPU", value_name = "NAME")]
    pub metric: String,
    /// Namespace of a custom metric.
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Bucket size (1s, 1m, PT5M, …).
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    pub interval: String,
    /// How far back to look (e.g. 10m, 1h).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub offset: String,
    /// Average, Minimum, Maximum, Total or Count.
    #[arg(long, default_value = "Average", value_name = "AGG")]
    pub aggregation: String,
}

/// The metrics query of `args` without a timespan (the server's default: the last hour).
pub fn metrics_path(sub: &str, a: &MetricsArgs) -> String {
    let mut path = format!(
        "{}/resourceGroups/{}/providers/{VMSS_TYPE}/{}/providers/Microsoft.Insights/metrics?metricnames={}&interval={}&aggregation={}",
        subscription_path(sub),
        segment(&a.resource_group),
        segment(&a.name),
        segment(&a.metric),
        duration(&a.interval, 'm').unwrap_or_else(|_| a.interval.clone()),
        segment(&a.aggregation)
    );
    if let Some(ns) = &a.namespace {
        path.push_str(&format!("&metricnamespace={}", segment(ns)));
    }
    path
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The metrics answer as `TIME  VALUE` lines and a sparkline.
pub fn metrics_table(answer: &Value, aggregation: &str) -> String {
    let key = aggregation.to_ascii_lowercase();
    let data = answer["value"][0]["timeseries"][0]["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let values: Vec<Option<f64>> = data.iter().map(|p| p[key.as_str()].as_f64()).collect();
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let (lo, hi) = present
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let spark: String = values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(v) if hi > lo => SPARKS[(((v - lo) / (hi - lo)) * 7.0).round() as usize],
            Some(_) => SPARKS[3],
        })
        .collect();
    let name = answer["value"][0]["name"]["value"].as_str().unwrap_or("");
    let unit = answer["value"][0]["unit"].as_str().unwrap_or("");
    let mut out =
        format!("{name} ({aggregation}, {unit})\n{spark}\n\nTimestamp                     Value\n");
    for (p, v) in data.iter().zip(&values) {
        let t = p["timeStamp"].as_str().unwrap_or("");
        match v {
            Some(v) => out.push_str(&format!("{t:<30}{v:.2}\n")),
            None => out.push_str(&format!("{t:<30}-\n")),
        }
    }
    out
}

pub(super) async fn run(
    client: &Client,
    printer: &Printer,
    sub: &str,
    a: MetricsArgs,
) -> anyhow::Result<()> {
    duration(&a.interval, 'm')?;
    let mut path = metrics_path(sub, &a);
    let offset = shoal_duration_secs(&duration(&a.offset, 'm')?)?;
    let now = unix_now();
    path.push_str(&format!(
        "&timespan={}/{}",
        rfc3339(now.saturating_sub(offset)),
        rfc3339(now)
    ));
    let answer = get(client, &path).await?;
    print(printer, &answer, |v| metrics_table(v, &a.aggregation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_table_with_a_sparkline() {
        let answer = json!({"value": [{"name": {"value": "Percentage CPU"}, "unit": "Percent", "timeseries": [{"data": [
            {"timeStamp": "t0", "average": 0.0}, {"timeStamp": "t1"}, {"timeStamp": "t2", "average": 100.0}]}]}]});
        let text = metrics_table(&answer, "Average");
        assert!(text.contains("▁ █"), "{text}");
        assert!(
            text.contains("t2                            100.00"),
            "{text}"
        );
    }
}
