//! `shoal monitor autoscale profile create|list|delete`: a setting's profiles, with az's
//! `--recurrence week sat sun --start 09:00 --end 18:00 --timezone …` or a fixed date.
//! A recurring profile with `--end` adds az's pair: the default profile taking over then.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::autoscale::{capacity, profile_mut, setting_path};
use super::{get, put};
use crate::client::Client;
use crate::output::{Printer, Table};

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

pub(super) fn hh_mm(text: &str) -> anyhow::Result<(u32, u32)> {
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

pub(super) async fn run(
    client: &Client,
    printer: &Printer,
    sub: &str,
    cmd: ProfileCommand,
) -> anyhow::Result<()> {
    match cmd {
        ProfileCommand::Create(a) => {
            let path = setting_path(sub, &a.at.resource_group, &a.at.autoscale_name);
            let mut s = get(client, &path).await?;
            add_profile(&mut s, &a)?;
            let v = put(client, &path, &s).await?;
            printer.print(Table::Generic, &v)?;
        }
        ProfileCommand::List(a) => {
            let s = get(
                client,
                &setting_path(sub, &a.resource_group, &a.autoscale_name),
            )
            .await?;
            printer.print(Table::Generic, &s["properties"]["profiles"])?;
        }
        ProfileCommand::Delete(a) => {
            let path = setting_path(sub, &a.at.resource_group, &a.at.autoscale_name);
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
