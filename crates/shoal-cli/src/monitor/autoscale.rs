//! `shoal monitor autoscale create|show|list|update|delete|history`: autoscale settings
//! themselves. Rules and profiles of a setting are in [`super::rules`] and
//! [`super::profiles`]; `create` builds the body with [`create_body`] (pure).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::profiles::{self, ProfileCommand};
use super::rules::{self, RuleCommand};
use super::{duration, get, print, put, VMSS_TYPE};
use crate::client::Client;
use crate::output::{Printer, Table};
use crate::request::{segment, subscription_path};

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

pub(super) fn capacity(min: u32, max: u32, default: u32) -> Value {
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

pub(super) fn profile_mut<'a>(setting: &'a mut Value, name: &str) -> anyhow::Result<&'a mut Value> {
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

pub fn setting_path(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/resourceGroups/{}/providers/Microsoft.Insights/autoscalesettings/{}",
        subscription_path(sub),
        segment(rg),
        segment(name)
    )
}

pub(super) async fn run(
    client: &Client,
    printer: &Printer,
    sub: &str,
    cmd: AutoscaleCommand,
) -> anyhow::Result<()> {
    match cmd {
        AutoscaleCommand::Create(a) => {
            let location = crate::image::group_location(client, &a.setting.resource_group).await?;
            let body = create_body(sub, &a, &location)?;
            let v = put(
                client,
                &setting_path(sub, &a.setting.resource_group, &a.setting.name),
                &body,
            )
            .await?;
            printer.print(Table::Generic, &v)?;
        }
        AutoscaleCommand::Show(a) => {
            let v = get(client, &setting_path(sub, &a.resource_group, &a.name)).await?;
            printer.print(Table::Generic, &v)?;
        }
        AutoscaleCommand::List(a) => {
            let path = match &a.resource_group {
                Some(rg) => format!(
                    "{}/resourceGroups/{}/providers/Microsoft.Insights/autoscalesettings",
                    subscription_path(sub),
                    segment(rg)
                ),
                None => format!(
                    "{}/providers/Microsoft.Insights/autoscalesettings",
                    subscription_path(sub)
                ),
            };
            let items = client.list(&path).await?;
            printer.print(Table::Generic, &Value::Array(items))?;
        }
        AutoscaleCommand::Update(a) => {
            let path = setting_path(sub, &a.setting.resource_group, &a.setting.name);
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
                    &setting_path(sub, &a.resource_group, &a.name),
                    None,
                )
                .await?;
        }
        AutoscaleCommand::History(a) => {
            let v = get(
                client,
                &format!("{}/history", setting_path(sub, &a.resource_group, &a.name)),
            )
            .await?;
            print(printer, &v, history_table)?;
        }
        AutoscaleCommand::Rule(c) => rules::run(client, printer, sub, c).await?,
        AutoscaleCommand::Profile(c) => profiles::run(client, printer, sub, c).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::profiles::{add_profile, ProfileCreateArgs, ProfileListArgs};
    use crate::monitor::rules::{add_rule, RuleCreateArgs, RuleListArgs};
    use crate::monitor::tests::words;

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
}
