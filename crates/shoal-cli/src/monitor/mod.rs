//! `shoal monitor …` in the shape of `az monitor …`: autoscale settings with their rules
//! and profiles ([`autoscale`], [`rules`], [`profiles`]), a scale set's metrics as a table
//! with a sparkline ([`metrics`]), and what autoscale did in the activity log
//! ([`activity_log`]).
//!
//! Parsing az's mini-languages and building bodies are pure functions (tested beside
//! them); each `run` reads the setting, changes it and PUTs it back, as az does.

use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::output::{OutputFormat, Printer, Table};

pub mod activity_log;
pub mod autoscale;
pub mod metrics;
pub mod profiles;
pub mod rules;

pub use activity_log::{ActivityLogArgs, ActivityLogCommand};
pub use autoscale::AutoscaleCommand;
pub use metrics::{metrics_path, MetricsArgs};

pub const VMSS_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets";

#[derive(Debug, Clone, Subcommand)]
pub enum MonitorCommand {
    /// Autoscale settings of scale sets.
    #[command(subcommand)]
    Autoscale(AutoscaleCommand),
    /// A scale set's metrics (Azure Monitor's metrics query).
    Metrics(MetricsArgs),
    /// The activity log: what autoscale did (az monitor activity-log).
    #[command(subcommand)]
    ActivityLog(ActivityLogCommand),
}

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    cmd: MonitorCommand,
) -> anyhow::Result<()> {
    let sub = client.subscription().to_string();
    match cmd {
        MonitorCommand::Metrics(a) => metrics::run(client, printer, &sub, a).await,
        MonitorCommand::ActivityLog(c) => activity_log::run(client, printer, &sub, c).await,
        MonitorCommand::Autoscale(c) => autoscale::run(client, printer, &sub, c).await,
    }
}

/// `5` (minutes, az's unit), `30s`, `5m`, `1h`, `1d`, or an ISO 8601 duration, as ISO.
pub fn duration(text: &str, bare_unit: char) -> anyhow::Result<String> {
    let t = text.trim();
    if t.starts_with(['P', 'p']) {
        return Ok(t.to_ascii_uppercase());
    }
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].trim().to_ascii_lowercase()),
        None => (t, bare_unit.to_string()),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("'{text}' is not a duration: write e.g. 30s, 5m or 1h"))?;
    Ok(match unit.as_str() {
        "s" => format!("PT{n}S"),
        "m" => format!("PT{n}M"),
        "h" => format!("PT{n}H"),
        "d" => format!("P{n}D"),
        _ => bail!("'{text}' is not a duration: write e.g. 30s, 5m or 1h"),
    })
}

pub(super) fn shoal_duration_secs(iso: &str) -> anyhow::Result<u64> {
    let body = iso.trim_start_matches('P');
    let (days, time) = match body.split_once('T') {
        Some((d, t)) => (d, t),
        None => (body, ""),
    };
    let mut secs = 0u64;
    if let Some(d) = days.strip_suffix('D') {
        secs += d.parse::<u64>().context("bad duration")? * 86_400;
    }
    let mut num = String::new();
    for c in time.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: u64 = num.parse().context("bad duration")?;
            num.clear();
            secs += n * match c {
                'H' => 3600,
                'M' => 60,
                _ => 1,
            };
        }
    }
    Ok(secs)
}

/// Unix seconds as RFC 3339 UTC (civil-from-days, so no time crate is needed).
pub(super) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch, by the wall clock (the CLI asks for "the last hour").
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) async fn get(client: &Client, path: &str) -> anyhow::Result<Value> {
    Ok(client.get_json(path).await?)
}

pub(super) async fn put(client: &Client, path: &str, body: &Value) -> anyhow::Result<Value> {
    let reply = client.call(Method::PUT, path, Some(body)).await?;
    Ok(reply.body.unwrap_or(Value::Null))
}

pub(super) fn print(
    printer: &Printer,
    value: &Value,
    table: impl FnOnce(&Value) -> String,
) -> anyhow::Result<()> {
    match printer.format() {
        OutputFormat::Table => printer.write_raw(table(value).as_bytes())?,
        _ => printer.print(Table::Generic, value)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5", 'm').unwrap(), "PT5M");
        assert_eq!(duration("30s", 'm').unwrap(), "PT30S");
        assert_eq!(duration("PT1S", 'm').unwrap(), "PT1S");
        assert!(duration("soon", 'm').is_err());
        assert_eq!(shoal_duration_secs("PT1H30M").unwrap(), 5400);
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
    }

    proptest::proptest! {
        #[test]
        fn az_mini_languages_never_panic(text in "\\PC{0,60}") {
            let _ = rules::parse_condition(&text);
            let _ = rules::parse_timegrain(&text);
            let _ = rules::parse_scale(&words(&text));
            let _ = profiles::parse_recurrence(&words(&text));
            let _ = duration(&text, 'm');
            let _ = profiles::hh_mm(&text);
        }
    }
}
