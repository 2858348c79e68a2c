//! `shoal monitor activity-log list`: what autoscale did (and wanted to and could not),
//! from the activity log, newest first (`az monitor activity-log list`).

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{duration, rfc3339, shoal_duration_secs, unix_now};
use crate::client::Client;
use crate::output::{Printer, Table};
use crate::request::{segment, subscription_path};

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

pub(super) async fn run(
    client: &Client,
    printer: &Printer,
    sub: &str,
    cmd: ActivityLogCommand,
) -> anyhow::Result<()> {
    let ActivityLogCommand::List(a) = cmd;
    let offset = shoal_duration_secs(&duration(&a.offset, 'h')?)?;
    let now = unix_now();
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
        subscription_path(sub),
        segment(&filter)
    );
    let items = client.list(&path).await?;
    printer.print(Table::Generic, &Value::Array(items))?;
    Ok(())
}
