//! `shoal monitor autoscale …` in the shape of `az monitor autoscale …`: settings
//! (`create|show|list|update|delete|history`), rules (`rule create|list|delete` with az's
//! `--condition "Percentage CPU > 70 avg 5m"` and `--scale out 2`), profiles
//! (`profile create|list|delete` with `--recurrence week sat sun --start 09:00 --end
//! 18:00 --timezone "Pacific Standard Time"`), and `shoal monitor metrics` for a scale
//! set's metrics as a table with a sparkline.
//!
//! Parsing az's mini-languages and building bodies are pure functions (tested below);
//! `run` reads the setting, changes it and PUTs it back, as az does.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{OutputFormat, Printer, Table};
use crate::request::{segment, subscription_path};

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

#[derive(Debug, Clone, Subcommand)]
pub enum ActivityLogCommand {
    /// List events, newest first.
    #[command(
        after_help = "Example:\n  shoal monitor activity-log list --resource-id /subscriptions/…/virtualMachineScaleSets/web --offset 1h"
    )]
    List(ActivityLogArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ActivityLogArgs {
    /// Only events about this resource (a scale set or an autoscale setting id).
    #[arg(long, value_name = "ID")]
    pub resource_id: Option<String>,
    /// Only events in this resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: Option<String>,
    /// How far back to look (e.g. 10m, 6h, 1d).
    #[arg(long, default_value = "6h", value_name = "DURATION")]
    pub offset: String,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AutoscaleCommand {
    /// Create an autoscale setting with a default profile (add rules with `rule create`).
    #[command(
        after_help = "Examples:\n  shoal monitor autoscale create -g demo --resource web -n web-auto --min-count 1 --max-count 5 --count 2\n  \
                      shoal monitor autoscale create -g demo --resource web -n web-auto --min-count 1 --max-count 5 --count 1 --evaluation-interval 1s"
    )]
    Create(CreateArgs),
    /// Show a setting as its ARM JSON object.
    Show(SettingName),
    /// List the settings of a group (or of the subscription).
    List(ListArgs),
    /// Change the default profile's counts, or enable / disable the setting.
    Update(UpdateArgs),
    /// Delete a setting (capacity stays where it is).
    Delete(SettingName),
    /// What autoscale changed, or wanted to and could not, and why.
    History(SettingName),
    /// Rules of a profile.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Profiles (schedules) of a setting.
    #[command(subcommand)]
    Profile(ProfileCommand),
}

#[derive(Debug, Clone, Args)]
pub struct SettingName {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the autoscale setting.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Name of the resource group (default: every group).
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub setting: SettingName,
    /// The scale set: a name in the group, or a full resource id.
    #[arg(long, value_name = "NAME_OR_ID")]
    pub resource: String,
    /// Only Microsoft.Compute/virtualMachineScaleSets is served.
    #[arg(long, default_value = VMSS_TYPE, value_name = "TYPE")]
    pub resource_type: String,
    /// The fewest instances the default profile allows.
    #[arg(long, value_name = "N")]
    pub min_count: u32,
    /// The most instances the default profile allows.
    #[arg(long, value_name = "N")]
    pub max_count: u32,
    /// The default count [default: --min-count].
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
    /// How often it is evaluated (Shoal's extension; 1s to 1h, e.g. 1s, 15s, 1m).
    #[arg(long, value_name = "DURATION")]
    pub evaluation_interval: Option<String>,
    /// Webhooks to POST Azure's notification to on each scale action.
    #[arg(long, num_args = 1.., value_name = "URL")]
    pub webhooks: Option<Vec<String>>,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

/// Shoal's target tracking (`properties.shoal.targetTracking`).
#[derive(Debug, Clone, Args, Default)]
pub struct TrackingArgs {
    /// Keep this metric (a per-instance average) near --target-value.
    #[arg(long, value_name = "METRIC", requires = "target_value")]
    pub target_metric: Option<String>,
    /// The value to keep the metric at: capacity becomes ceil(current × metric / value).
    #[arg(long, value_name = "N", requires = "target_metric")]
    pub target_value: Option<f64>,
    /// Fraction of the target within which nothing changes [default: 0.1].
    #[arg(long, value_name = "F", requires = "target_metric")]
    pub target_tolerance: Option<f64>,
    /// Window the metric is averaged over [default: 1m].
    #[arg(long, value_name = "DURATION", requires = "target_metric")]
    pub target_window: Option<String>,
    /// Wait after any scale action [default: 1m].
    #[arg(long, value_name = "DURATION", requires = "target_metric")]
    pub target_cooldown: Option<String>,
}

impl TrackingArgs {
    /// The `targetTracking` object, if asked for.
    pub fn body(&self) -> anyhow::Result<Option<Value>> {
        let (Some(metric), Some(value)) = (&self.target_metric, self.target_value) else {
            return Ok(None);
        };
        let mut t = json!({"metricName": metric, "target": value});
        if let Some(tol) = self.target_tolerance {
            t["tolerance"] = json!(tol);
        }
        if let Some(w) = &self.target_window {
            t["timeWindow"] = json!(duration(w, 's')?);
        }
        if let Some(c) = &self.target_cooldown {
            t["cooldown"] = json!(duration(c, 's')?);
        }
        Ok(Some(t))
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub setting: SettingName,
    /// The fewest instances (default profile; for a new profile, default: --count).
    #[arg(long, value_name = "N")]
    pub min_count: Option<u32>,
    /// The most instances (default profile; for a new profile, default: --count).
    #[arg(long, value_name = "N")]
    pub max_count: Option<u32>,
    /// The default instance count.
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,
    /// true or false.
    #[arg(long, value_name = "BOOL")]
    pub enabled: Option<bool>,
    /// How often it is evaluated (Shoal's extension; 1s to 1h).
    #[arg(long, value_name = "DURATION")]
    pub evaluation_interval: Option<String>,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RuleCommand {
    /// Add a rule to a profile.
    #[command(
        after_help = "Examples:\n  shoal monitor autoscale rule create -g demo --autoscale-name web-auto --condition \"Percentage CPU > 70 avg 1m\" --scale out 2\n  \
                      shoal monitor autoscale rule create -g demo --autoscale-name web-auto --condition \"Percentage CPU < 30 avg 5m\" --scale in 1 --cooldown 5\n  \
                      shoal monitor autoscale rule create -g demo --autoscale-name web-auto --condition \"['shoal/custom'] queue length >= 100 avg 10s\" --scale to 6 --cooldown 10s --timegrain \"avg 1s\""
    )]
    Create(RuleCreateArgs),
    /// List a profile's rules.
    List(RuleListArgs),
    /// Delete rules by index (as `rule list` numbers them), or all with `*`.
    Delete(RuleDeleteArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RuleListArgs {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the autoscale setting.
    #[arg(long, value_name = "NAME")]
    pub autoscale_name: String,
    /// The profile the rules belong to.
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub profile_name: String,
}

#[derive(Debug, Clone, Args)]
pub struct RuleCreateArgs {
    #[command(flatten)]
    pub at: RuleListArgs,
    /// `[['NAMESPACE']] METRIC {==,!=,>,>=,<,<=} THRESHOLD {avg,min,max,total,count,last} PERIOD`.
    #[arg(long, value_name = "CONDITION")]
    pub condition: String,
    /// `out N`, `in N`, `out N%`, `in N%` or `to N`.
    #[arg(long, num_args = 1..=2, value_name = "ACTION")]
    pub scale: Vec<String>,
    /// Minutes (az's unit), or a duration with a unit (30s, 5m, 1h).
    #[arg(long, default_value = "5", value_name = "DURATION")]
    pub cooldown: String,
    /// `[{avg,min,max,sum,count}] PERIOD`: how instances are combined, per grain.
    #[arg(long, default_value = "avg 1m", value_name = "GRAIN")]
    pub timegrain: String,
    /// The scale set whose metric is read [default: the setting's target].
    #[arg(long, value_name = "ID")]
    pub resource: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RuleDeleteArgs {
    #[command(flatten)]
    pub at: RuleListArgs,
    /// Indexes of the rules to delete (as `rule list` numbers them from 0), or `*`.
    #[arg(long, num_args = 1.., value_name = "INDEX")]
    pub index: Vec<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProfileCommand {
    /// Add a profile: a recurring schedule (`--recurrence week mon tue --start 09:00`) or a
    /// fixed date (`--start 2026-12-24T00:00 --end 2026-12-26T00:00`).
    #[command(
        after_help = "Examples:\n  shoal monitor autoscale profile create -g demo --autoscale-name web-auto -n workdays --min-count 3 --max-count 10 --count 3 \\\n      \
                      --recurrence week mon tue wed thu fri --start 09:00 --end 18:00 --timezone \"W. Europe Standard Time\" --copy-rules default\n  \
                      shoal monitor autoscale profile create -g demo --autoscale-name web-auto -n launch --count 8 --start 2026-12-24T00:00 --end 2026-12-26T00:00 --timezone UTC"
    )]
    Create(ProfileCreateArgs),
    /// List a setting's profiles.
    List(ProfileListArgs),
    /// Delete a profile (and the default-profile switch az adds at its end).
    Delete(ProfileDeleteArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ProfileListArgs {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the autoscale setting.
    #[arg(long, value_name = "NAME")]
    pub autoscale_name: String,
}

#[derive(Debug, Clone, Args)]
pub struct ProfileDeleteArgs {
    #[command(flatten)]
    pub at: ProfileListArgs,
    /// Name of the profile.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct ProfileCreateArgs {
    #[command(flatten)]
    pub at: ProfileListArgs,
    /// Name of the profile.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
    /// The fewest instances (default profile; for a new profile, default: --count).
    #[arg(long, value_name = "N")]
    pub min_count: Option<u32>,
    /// The most instances (default profile; for a new profile, default: --count).
    #[arg(long, value_name = "N")]
    pub max_count: Option<u32>,
    /// The instance count of the profile.
    #[arg(long, value_name = "N")]
    pub count: u32,
    /// `week DAY [DAY …]` (az's form).
    #[arg(long, num_args = 1.., value_name = "SCHEDULE")]
    pub recurrence: Option<Vec<String>>,
    /// `HH:MM` with --recurrence, else a date-time.
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
    /// `HH:MM` with --recurrence (the default profile takes over then), else a date-time.
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,
    /// IANA or Windows name.
    #[arg(long, default_value = "UTC", value_name = "ZONE")]
    pub timezone: String,
    /// Copy the rules of this profile.
    #[arg(long, value_name = "PROFILE")]
    pub copy_rules: Option<String>,
}

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

// ---------------------------------------------------------------------------------------
// Pure parts.

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

/// az's `--condition`: returns the `metricTrigger` without resource, grain or statistic.
pub fn parse_condition(text: &str) -> anyhow::Result<Value> {
    let mut rest = text.trim();
    let mut namespace = None;
    if let Some(r) = rest.strip_prefix('[') {
        let Some((ns, after)) = r.split_once(']') else {
            bail!("--condition: the namespace needs a closing ']'");
        };
        namespace = Some(ns.trim().trim_matches(['\'', '"']).to_string());
        rest = after.trim();
    }
    let mut dimensions = Vec::new();
    if let Some((head, filters)) = rest.split_once(" where ") {
        rest = head.trim();
        for clause in filters.split(" and ") {
            let (name, op, values) = if let Some((n, v)) = clause.split_once("!=") {
                (n, "NotEquals", v)
            } else if let Some((n, v)) = clause.split_once("==") {
                (n, "Equals", v)
            } else {
                bail!("--condition: expected 'where DIMENSION == VALUE [or VALUE …] [and …]', got '{clause}'");
            };
            let values: Vec<String> = values
                .split(" or ")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if name.trim().is_empty() || values.is_empty() {
                bail!("--condition: expected 'where DIMENSION == VALUE [or VALUE …] [and …]', got '{clause}'");
            }
            dimensions
                .push(json!({"DimensionName": name.trim(), "Operator": op, "Values": values}));
        }
    }
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let ops = [
        ("==", "Equals"),
        ("!=", "NotEquals"),
        (">=", "GreaterThanOrEqual"),
        ("<=", "LessThanOrEqual"),
        (">", "GreaterThan"),
        ("<", "LessThan"),
    ];
    let Some(pos) = tokens.iter().position(|t| ops.iter().any(|(s, _)| s == t)) else {
        bail!("--condition: expected 'METRIC OPERATOR THRESHOLD AGGREGATION PERIOD', e.g. \"Percentage CPU > 70 avg 5m\"");
    };
    if pos == 0 || tokens.len() != pos + 4 {
        bail!("--condition: expected 'METRIC OPERATOR THRESHOLD AGGREGATION PERIOD', e.g. \"Percentage CPU > 70 avg 5m\"");
    }
    let operator = ops
        .iter()
        .find(|(s, _)| *s == tokens[pos])
        .map(|(_, n)| *n)
        .unwrap_or("GreaterThan");
    let threshold: f64 = tokens[pos + 1]
        .parse()
        .with_context(|| format!("--condition: '{}' is not a number", tokens[pos + 1]))?;
    let aggregation = match tokens[pos + 2].to_ascii_lowercase().as_str() {
        "avg" | "average" => "Average",
        "min" | "minimum" => "Minimum",
        "max" | "maximum" => "Maximum",
        "total" | "sum" => "Total",
        "count" => "Count",
        "last" => "Last",
        other => bail!(
            "--condition: '{other}' is not an aggregation: use avg, min, max, total, count or last"
        ),
    };
    let window = duration(tokens[pos + 3], 'm')?;
    let mut trigger = json!({
        "metricName": tokens[..pos].join(" "),
        "operator": operator,
        "threshold": threshold,
        "timeAggregation": aggregation,
        "timeWindow": window,
    });
    if let Some(ns) = namespace {
        trigger["metricNamespace"] = json!(ns);
    }
    if !dimensions.is_empty() {
        trigger["dimensions"] = json!(dimensions);
    }
    Ok(trigger)
}

/// az's `--timegrain`: `(statistic, grain)`.
pub fn parse_timegrain(text: &str) -> anyhow::Result<(&'static str, String)> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let (stat, period) = match tokens.as_slice() {
        [p] => ("Average", *p),
        [s, p] => (
            match s.to_ascii_lowercase().as_str() {
                "avg" | "average" => "Average",
                "min" => "Min",
                "max" => "Max",
                "sum" | "total" => "Sum",
                "count" => "Count",
                other => bail!(
                    "--timegrain: '{other}' is not a statistic: use avg, min, max, sum or count"
                ),
            },
            *p,
        ),
        _ => bail!("--timegrain: expected '[STATISTIC] PERIOD', e.g. \"avg 1m\""),
    };
    Ok((stat, duration(period, 'm')?))
}

/// az's `--scale`: the `scaleAction` without cooldown.
pub fn parse_scale(words: &[String]) -> anyhow::Result<Value> {
    let text = words.join(" ");
    let t: Vec<&str> = text.split_whitespace().collect();
    let [dir, amount] = t.as_slice() else {
        bail!("--scale: expected 'out N', 'in N', 'out N%', 'in N%' or 'to N'");
    };
    let (kind, value) = match amount.strip_suffix('%') {
        Some(p) => ("PercentChangeCount", p),
        None => ("ChangeCount", *amount),
    };
    let value: u32 = value
        .parse()
        .with_context(|| format!("--scale: '{amount}' is not a count"))?;
    let (direction, kind) = match dir.to_ascii_lowercase().as_str() {
        "out" => ("Increase", kind),
        "in" => ("Decrease", kind),
        "to" if kind == "ChangeCount" => ("Increase", "ExactCount"),
        _ => bail!("--scale: expected 'out N', 'in N', 'out N%', 'in N%' or 'to N'"),
    };
    Ok(json!({"direction": direction, "type": kind, "value": value.to_string()}))
}

/// az's `--recurrence week DAY …`: the days, capitalized.
pub fn parse_recurrence(words: &[String]) -> anyhow::Result<Vec<String>> {
    let Some((first, days)) = words.split_first() else {
        bail!("--recurrence: expected 'week DAY [DAY …]'");
    };
    if !first.eq_ignore_ascii_case("week") || days.is_empty() {
        bail!("--recurrence: expected 'week DAY [DAY …]' (recurrences repeat weekly, as in Azure)");
    }
    let names = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    days.iter()
        .map(|d| {
            let l = d.to_ascii_lowercase();
            names
                .iter()
                .find(|n| {
                    n.to_ascii_lowercase() == l
                        || (l.len() >= 3 && n.to_ascii_lowercase().starts_with(&l))
                })
                .map(|n| n.to_string())
                .with_context(|| format!("--recurrence: '{d}' is not a day"))
        })
        .collect()
}

fn hh_mm(text: &str) -> anyhow::Result<(u32, u32)> {
    let (h, m) = text
        .split_once(':')
        .with_context(|| format!("'{text}' is not HH:MM"))?;
    let (h, m): (u32, u32) = (
        h.parse()
            .with_context(|| format!("'{text}' is not HH:MM"))?,
        m.parse()
            .with_context(|| format!("'{text}' is not HH:MM"))?,
    );
    if h > 23 || m > 59 {
        bail!("'{text}' is not a time of day");
    }
    Ok((h, m))
}

fn capacity(min: u32, max: u32, default: u32) -> Value {
    json!({"minimum": min.to_string(), "maximum": max.to_string(), "default": default.to_string()})
}

pub fn vmss_id(sub: &str, rg: &str, name_or_id: &str) -> String {
    if name_or_id.starts_with('/') {
        name_or_id.to_string()
    } else {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{VMSS_TYPE}/{name_or_id}")
    }
}

pub fn create_body(sub: &str, args: &CreateArgs, location: &str) -> anyhow::Result<Value> {
    if !args.resource_type.eq_ignore_ascii_case(VMSS_TYPE) {
        bail!("--resource-type: only {VMSS_TYPE} can be autoscaled here");
    }
    let target = vmss_id(sub, &args.setting.resource_group, &args.resource);
    let count = args.count.unwrap_or(args.min_count);
    let mut props = json!({
        "name": args.setting.name,
        "enabled": !args.disabled,
        "targetResourceUri": target,
        "profiles": [{"name": "default", "capacity": capacity(args.min_count, args.max_count, count), "rules": []}],
        "notifications": [],
    });
    if let Some(hooks) = &args.webhooks {
        props["notifications"] = json!([{"operation": "Scale", "email": {"sendToSubscriptionAdministrator": false, "sendToSubscriptionCoAdministrators": false, "customEmails": []},
            "webhooks": hooks.iter().map(|h| json!({"serviceUri": h, "properties": {}})).collect::<Vec<_>>()}]);
    }
    if let Some(i) = &args.evaluation_interval {
        props["shoal"]["evaluationInterval"] = json!(duration(i, 's')?);
    }
    if let Some(t) = args.tracking.body()? {
        props["shoal"]["targetTracking"] = t;
    }
    Ok(json!({"location": location, "tags": {}, "properties": props}))
}

fn profile_mut<'a>(setting: &'a mut Value, name: &str) -> anyhow::Result<&'a mut Value> {
    let profiles = setting["properties"]["profiles"]
        .as_array_mut()
        .context("the setting has no profiles")?;
    let names: Vec<String> = profiles
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    profiles
        .iter_mut()
        .find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .with_context(|| format!("no profile named '{name}' (profiles: {})", names.join(", ")))
}

pub fn add_rule(setting: &mut Value, args: &RuleCreateArgs) -> anyhow::Result<()> {
    let target = setting["properties"]["targetResourceUri"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut trigger = parse_condition(&args.condition)?;
    let (statistic, grain) = parse_timegrain(&args.timegrain)?;
    trigger["statistic"] = json!(statistic);
    trigger["timeGrain"] = json!(grain);
    trigger["metricResourceUri"] = json!(args.resource.clone().unwrap_or(target));
    let mut action = parse_scale(&args.scale)?;
    action["cooldown"] = json!(duration(&args.cooldown, 'm')?);
    let profile = profile_mut(setting, &args.at.profile_name)?;
    let rules = profile["rules"]
        .as_array_mut()
        .context("profile without rules")?;
    rules.push(json!({"metricTrigger": trigger, "scaleAction": action}));
    Ok(())
}

pub fn add_profile(setting: &mut Value, args: &ProfileCreateArgs) -> anyhow::Result<()> {
    let default = setting["properties"]["profiles"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("recurrence").is_none() && p.get("fixedDate").is_none())
                .or(ps.first())
        })
        .cloned()
        .context("the setting has no profiles")?;
    let rules = match &args.copy_rules {
        Some(from) => profile_mut(setting, from)?["rules"].clone(),
        None => json!([]),
    };
    let min = args.min_count.unwrap_or(args.count);
    let max = args.max_count.unwrap_or(args.count);
    let mut profile =
        json!({"name": args.name, "capacity": capacity(min, max, args.count), "rules": rules});
    let mut extra = None;
    match &args.recurrence {
        Some(rec) => {
            let days = parse_recurrence(rec)?;
            let (h, m) = hh_mm(args.start.as_deref().unwrap_or("00:00"))?;
            profile["recurrence"] = json!({"frequency": "Week", "schedule": {"timeZone": args.timezone, "days": days, "hours": [h], "minutes": [m]}});
            if let Some(end) = &args.end {
                // As az: the default profile takes over at the end, named for the pair.
                let (h, m) = hh_mm(end)?;
                let mut back = default.clone();
                back["name"] =
                    json!(json!({"name": default["name"], "for": args.name}).to_string());
                back["recurrence"] = json!({"frequency": "Week", "schedule": {"timeZone": args.timezone, "days": days, "hours": [h], "minutes": [m]}});
                extra = Some(back);
            }
        }
        None => {
            let (Some(start), Some(end)) = (&args.start, &args.end) else {
                bail!("a profile needs --recurrence (with --start) or a fixed date (--start and --end)");
            };
            profile["fixedDate"] = json!({"timeZone": args.timezone, "start": start, "end": end});
        }
    }
    let profiles = setting["properties"]["profiles"]
        .as_array_mut()
        .context("the setting has no profiles")?;
    profiles.push(profile);
    profiles.extend(extra);
    Ok(())
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

/// The history as lines: time, outcome, old → new, reason.
pub fn history_table(h: &Value) -> String {
    let mut out = String::from("Time                          Outcome   Capacity  Reason\n");
    for e in h["value"].as_array().into_iter().flatten() {
        let cap = match e["newCapacity"].as_i64() {
            Some(n) => format!("{} → {n}", e["oldCapacity"]),
            None => format!("{}", e["oldCapacity"]),
        };
        out.push_str(&format!(
            "{:<30}{:<10}{:<10}{}\n",
            e["time"].as_str().unwrap_or(""),
            e["outcome"].as_str().unwrap_or(""),
            cap,
            e["reason"].as_str().unwrap_or("")
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// I/O.

pub fn setting_path(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/resourceGroups/{}/providers/Microsoft.Insights/autoscalesettings/{}",
        subscription_path(sub),
        segment(rg),
        segment(name)
    )
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

async fn get(client: &Client, path: &str) -> anyhow::Result<Value> {
    Ok(client.get_json(path).await?)
}

async fn put(client: &Client, path: &str, body: &Value) -> anyhow::Result<Value> {
    let reply = client.call(Method::PUT, path, Some(body)).await?;
    Ok(reply.body.unwrap_or(Value::Null))
}

fn print(
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

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    cmd: MonitorCommand,
) -> anyhow::Result<()> {
    let sub = client.subscription().to_string();
    let cmd = match cmd {
        MonitorCommand::Metrics(a) => {
            duration(&a.interval, 'm')?;
            let mut path = metrics_path(&sub, &a);
            let offset = shoal_duration_secs(&duration(&a.offset, 'm')?)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            path.push_str(&format!(
                "&timespan={}/{}",
                rfc3339(now.saturating_sub(offset)),
                rfc3339(now)
            ));
            let answer = get(client, &path).await?;
            return print(printer, &answer, |v| metrics_table(v, &a.aggregation));
        }
        MonitorCommand::ActivityLog(ActivityLogCommand::List(a)) => {
            let offset = shoal_duration_secs(&duration(&a.offset, 'h')?)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut filter = format!(
                "eventTimestamp ge '{}'",
                rfc3339(now.saturating_sub(offset))
            );
            if let Some(id) = &a.resource_id {
                filter.push_str(&format!(" and resourceUri eq '{id}'"));
            }
            if let Some(rg) = &a.resource_group {
                filter.push_str(&format!(" and resourceGroupName eq '{rg}'"));
            }
            let path = format!(
                "{}/providers/Microsoft.Insights/eventtypes/management/values?$filter={}",
                subscription_path(&sub),
                segment(&filter)
            );
            let items = client.list(&path).await?;
            printer.print(Table::Generic, &Value::Array(items))?;
            return Ok(());
        }
        MonitorCommand::Autoscale(c) => c,
    };
    match cmd {
        AutoscaleCommand::Create(a) => {
            let location = crate::image::group_location(client, &a.setting.resource_group).await?;
            let body = create_body(&sub, &a, &location)?;
            let v = put(
                client,
                &setting_path(&sub, &a.setting.resource_group, &a.setting.name),
                &body,
            )
            .await?;
            printer.print(Table::Generic, &v)?;
        }
        AutoscaleCommand::Show(a) => {
            let v = get(client, &setting_path(&sub, &a.resource_group, &a.name)).await?;
            printer.print(Table::Generic, &v)?;
        }
        AutoscaleCommand::List(a) => {
            let path = match &a.resource_group {
                Some(rg) => format!(
                    "{}/resourceGroups/{}/providers/Microsoft.Insights/autoscalesettings",
                    subscription_path(&sub),
                    segment(rg)
                ),
                None => format!(
                    "{}/providers/Microsoft.Insights/autoscalesettings",
                    subscription_path(&sub)
                ),
            };
            let items = client.list(&path).await?;
            printer.print(Table::Generic, &Value::Array(items))?;
        }
        AutoscaleCommand::Update(a) => {
            let path = setting_path(&sub, &a.setting.resource_group, &a.setting.name);
            let mut s = get(client, &path).await?;
            if let Some(e) = a.enabled {
                s["properties"]["enabled"] = json!(e);
            }
            if let Some(i) = &a.evaluation_interval {
                s["properties"]["shoal"]["evaluationInterval"] = json!(duration(i, 's')?);
            }
            if let Some(t) = a.tracking.body()? {
                s["properties"]["shoal"]["targetTracking"] = t;
            }
            if let Ok(p) = profile_mut(&mut s, "default") {
                for (field, v) in [
                    ("minimum", a.min_count),
                    ("maximum", a.max_count),
                    ("default", a.count),
                ] {
                    if let Some(v) = v {
                        p["capacity"][field] = json!(v.to_string());
                    }
                }
            }
            printer.print(Table::Generic, &put(client, &path, &s).await?)?;
        }
        AutoscaleCommand::Delete(a) => {
            client
                .call(
                    Method::DELETE,
                    &setting_path(&sub, &a.resource_group, &a.name),
                    None,
                )
                .await?;
        }
        AutoscaleCommand::History(a) => {
            let v = get(
                client,
                &format!("{}/history", setting_path(&sub, &a.resource_group, &a.name)),
            )
            .await?;
            print(printer, &v, history_table)?;
        }
        AutoscaleCommand::Rule(RuleCommand::Create(a)) => {
            let path = setting_path(&sub, &a.at.resource_group, &a.at.autoscale_name);
            let mut s = get(client, &path).await?;
            add_rule(&mut s, &a)?;
            let v = put(client, &path, &s).await?;
            let rules = profile_mut(&mut v.clone(), &a.at.profile_name)?["rules"].clone();
            printer.print(
                Table::Generic,
                &rules
                    .as_array()
                    .and_then(|r| r.last())
                    .cloned()
                    .unwrap_or(Value::Null),
            )?;
        }
        AutoscaleCommand::Rule(RuleCommand::List(a)) => {
            let mut s = get(
                client,
                &setting_path(&sub, &a.resource_group, &a.autoscale_name),
            )
            .await?;
            let rules = profile_mut(&mut s, &a.profile_name)?["rules"].clone();
            printer.print(Table::Generic, &rules)?;
        }
        AutoscaleCommand::Rule(RuleCommand::Delete(a)) => {
            let path = setting_path(&sub, &a.at.resource_group, &a.at.autoscale_name);
            let mut s = get(client, &path).await?;
            let p = profile_mut(&mut s, &a.at.profile_name)?;
            let rules = p["rules"].as_array().cloned().unwrap_or_default();
            let keep: Vec<Value> = if a.index.iter().any(|i| i == "*") {
                vec![]
            } else {
                let drop: Vec<usize> = a
                    .index
                    .iter()
                    .map(|i| {
                        i.parse()
                            .with_context(|| format!("--index: '{i}' is not a number"))
                    })
                    .collect::<anyhow::Result<_>>()?;
                rules
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, r)| r)
                    .collect()
            };
            p["rules"] = json!(keep);
            put(client, &path, &s).await?;
        }
        AutoscaleCommand::Profile(ProfileCommand::Create(a)) => {
            let path = setting_path(&sub, &a.at.resource_group, &a.at.autoscale_name);
            let mut s = get(client, &path).await?;
            add_profile(&mut s, &a)?;
            let v = put(client, &path, &s).await?;
            printer.print(Table::Generic, &v)?;
        }
        AutoscaleCommand::Profile(ProfileCommand::List(a)) => {
            let s = get(
                client,
                &setting_path(&sub, &a.resource_group, &a.autoscale_name),
            )
            .await?;
            printer.print(Table::Generic, &s["properties"]["profiles"])?;
        }
        AutoscaleCommand::Profile(ProfileCommand::Delete(a)) => {
            let path = setting_path(&sub, &a.at.resource_group, &a.at.autoscale_name);
            let mut s = get(client, &path).await?;
            if let Some(ps) = s["properties"]["profiles"].as_array_mut() {
                let pair = |p: &Value| {
                    p["name"]
                        .as_str()
                        .and_then(|n| serde_json::from_str::<Value>(n).ok())
                        .is_some_and(|j| j["for"].as_str() == Some(a.name.as_str()))
                };
                ps.retain(|p| p["name"].as_str() != Some(a.name.as_str()) && !pair(p));
            }
            put(client, &path, &s).await?;
        }
    }
    Ok(())
}

fn shoal_duration_secs(iso: &str) -> anyhow::Result<u64> {
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
fn rfc3339(secs: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn conditions_in_azs_grammar() {
        let t = parse_condition("Percentage CPU > 70 avg 5m").unwrap();
        assert_eq!(t["metricName"], "Percentage CPU");
        assert_eq!(t["operator"], "GreaterThan");
        assert_eq!(t["threshold"], 70.0);
        assert_eq!(t["timeAggregation"], "Average");
        assert_eq!(t["timeWindow"], "PT5M");
        let t = parse_condition("['shoal/custom'] queue length <= 3.5 max 10s").unwrap();
        assert_eq!(
            (t["metricName"].as_str(), t["metricNamespace"].as_str()),
            (Some("queue length"), Some("shoal/custom"))
        );
        assert_eq!(
            (t["operator"].as_str(), t["timeWindow"].as_str()),
            (Some("LessThanOrEqual"), Some("PT10S"))
        );
        let t = parse_condition("Percentage CPU > 70 avg 5m where VMName == 0 or 1 and Zone != 2")
            .unwrap();
        assert_eq!(t["metricName"], "Percentage CPU");
        assert_eq!(
            t["dimensions"],
            json!([{"DimensionName": "VMName", "Operator": "Equals", "Values": ["0", "1"]},
                   {"DimensionName": "Zone", "Operator": "NotEquals", "Values": ["2"]}])
        );
        assert!(parse_condition("Percentage CPU > 70 avg 5m where VMName").is_err());
        for bad in [
            "Percentage CPU 70 avg 5m",
            "> 70 avg 5m",
            "Percentage CPU > x avg 5m",
            "Percentage CPU > 70 mean 5m",
            "Percentage CPU > 70 avg",
            "Percentage CPU > 70 avg 5 parsecs",
        ] {
            assert!(parse_condition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scale_actions_and_durations() {
        assert_eq!(
            parse_scale(&words("out 2")).unwrap(),
            json!({"direction": "Increase", "type": "ChangeCount", "value": "2"})
        );
        assert_eq!(
            parse_scale(&words("in 10%")).unwrap(),
            json!({"direction": "Decrease", "type": "PercentChangeCount", "value": "10"})
        );
        assert_eq!(parse_scale(&words("to 6")).unwrap()["type"], "ExactCount");
        assert!(parse_scale(&words("up 2")).is_err());
        assert!(parse_scale(&words("to 5%")).is_err());
        assert_eq!(duration("5", 'm').unwrap(), "PT5M");
        assert_eq!(duration("30s", 'm').unwrap(), "PT30S");
        assert_eq!(duration("PT1S", 'm').unwrap(), "PT1S");
        assert!(duration("soon", 'm').is_err());
        assert_eq!(
            parse_timegrain("avg 1s").unwrap(),
            ("Average", "PT1S".to_string())
        );
        assert_eq!(shoal_duration_secs("PT1H30M").unwrap(), 5400);
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn bodies_as_az_builds_them() {
        let args = CreateArgs {
            setting: SettingName {
                resource_group: "demo".into(),
                name: "auto".into(),
            },
            resource: "web".into(),
            resource_type: VMSS_TYPE.into(),
            min_count: 1,
            max_count: 5,
            count: None,
            disabled: false,
            evaluation_interval: Some("1s".into()),
            webhooks: None,
            tracking: TrackingArgs {
                target_metric: Some("Percentage CPU".into()),
                target_value: Some(50.0),
                target_tolerance: None,
                target_window: Some("30s".into()),
                target_cooldown: None,
            },
        };
        let mut s = create_body("s", &args, "local").unwrap();
        assert_eq!(s["properties"]["targetResourceUri"], "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web");
        assert_eq!(
            s["properties"]["profiles"][0]["capacity"],
            json!({"minimum": "1", "maximum": "5", "default": "1"})
        );
        assert_eq!(s["properties"]["shoal"]["evaluationInterval"], "PT1S");
        assert_eq!(
            s["properties"]["shoal"]["targetTracking"],
            json!({"metricName": "Percentage CPU", "target": 50.0, "timeWindow": "PT30S"})
        );
        let at = RuleListArgs {
            resource_group: "demo".into(),
            autoscale_name: "auto".into(),
            profile_name: "default".into(),
        };
        add_rule(
            &mut s,
            &RuleCreateArgs {
                at: at.clone(),
                condition: "Percentage CPU > 70 avg 1m".into(),
                scale: words("out 2"),
                cooldown: "5".into(),
                timegrain: "avg 1m".into(),
                resource: None,
            },
        )
        .unwrap();
        let r = &s["properties"]["profiles"][0]["rules"][0];
        assert_eq!(
            r["scaleAction"],
            json!({"direction": "Increase", "type": "ChangeCount", "value": "2", "cooldown": "PT5M"})
        );
        assert_eq!(
            r["metricTrigger"]["metricResourceUri"],
            s["properties"]["targetResourceUri"]
        );
        assert_eq!(r["metricTrigger"]["statistic"], "Average");
        add_profile(
            &mut s,
            &ProfileCreateArgs {
                at: ProfileListArgs {
                    resource_group: "demo".into(),
                    autoscale_name: "auto".into(),
                },
                name: "workdays".into(),
                min_count: Some(3),
                max_count: Some(10),
                count: 3,
                recurrence: Some(words("week mon tue wed thu fri")),
                start: Some("09:00".into()),
                end: Some("18:30".into()),
                timezone: "W. Europe Standard Time".into(),
                copy_rules: Some("default".into()),
            },
        )
        .unwrap();
        let ps = s["properties"]["profiles"].as_array().unwrap();
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[1]["recurrence"]["schedule"]["days"][4], "Friday");
        assert_eq!(ps[1]["rules"].as_array().unwrap().len(), 1);
        assert_eq!(ps[2]["recurrence"]["schedule"]["hours"], json!([18]));
        assert_eq!(ps[2]["recurrence"]["schedule"]["minutes"], json!([30]));
        assert_eq!(ps[2]["capacity"], ps[0]["capacity"]);
        assert_eq!(
            serde_json::from_str::<Value>(ps[2]["name"].as_str().unwrap()).unwrap()["for"],
            "workdays"
        );
    }

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

    proptest::proptest! {
        #[test]
        fn az_mini_languages_never_panic(text in "\\PC{0,60}") {
            let _ = parse_condition(&text);
            let _ = parse_timegrain(&text);
            let _ = parse_scale(&words(&text));
            let _ = parse_recurrence(&words(&text));
            let _ = duration(&text, 'm');
            let _ = hh_mm(&text);
        }
    }
}
