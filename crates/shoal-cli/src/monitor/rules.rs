//! `shoal monitor autoscale rule create|list|delete`: the rules of a profile, written in
//! az's mini-languages (`--condition "Percentage CPU > 70 avg 5m"`, `--scale out 2`,
//! `--timegrain "avg 1m"`), parsed here into the ARM rule body (pure).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::autoscale::{profile_mut, setting_path};
use super::{duration, get, put};
use crate::client::Client;
use crate::output::{Printer, Table};

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

pub(super) async fn run(
    client: &Client,
    printer: &Printer,
    sub: &str,
    cmd: RuleCommand,
) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::Create(a) => {
            let path = setting_path(sub, &a.at.resource_group, &a.at.autoscale_name);
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
        RuleCommand::List(a) => {
            let mut s = get(
                client,
                &setting_path(sub, &a.resource_group, &a.autoscale_name),
            )
            .await?;
            let rules = profile_mut(&mut s, &a.profile_name)?["rules"].clone();
            printer.print(Table::Generic, &rules)?;
        }
        RuleCommand::Delete(a) => {
            let path = setting_path(sub, &a.at.resource_group, &a.at.autoscale_name);
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::tests::words;

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
    fn scale_actions_and_time_grains() {
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
        assert_eq!(
            parse_timegrain("avg 1s").unwrap(),
            ("Average", "PT1S".to_string())
        );
    }
}
