//! `shoal vmss rolling-upgrade start|cancel|get-latest`, as `az vmss rolling-upgrade`.
//!
//! `start` POSTs `osRollingUpgrade` and, unless `--no-wait`, follows
//! `rollingUpgrades/latest` until the upgrade ends, with a progress line on stderr
//! ("batch 2 of 5: 4 upgraded, 0 failed, 6 pending"); a Faulted upgrade is an error
//! carrying Azure's code. `cancel` is an action that waits for its operation;
//! `get-latest` prints the record.

use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::VmssName;
use crate::client::{ArmError, Client, ClientError};
use crate::exec::execute;
use crate::output::{Printer, Table};
use crate::progress::StatusLine;
use crate::request::{vmss_path, ApiRequest};

#[derive(Debug, Clone, Subcommand)]
pub enum RollingUpgradeCommand {
    /// Roll the set's instances to the newest version of its image, batch by batch.
    #[command(after_help = "Example:\n  shoal vmss rolling-upgrade start -g demo -n web")]
    Start(RollingArgs),
    /// Cancel the running upgrade: the batch in flight finishes, no new one starts.
    Cancel(RollingArgs),
    /// Show the latest rolling upgrade: status, progress, error.
    GetLatest(VmssName),
}

#[derive(Debug, Clone, Args)]
pub struct RollingArgs {
    #[command(flatten)]
    pub set: VmssName,
    /// Do not wait for the upgrade (or the cancel) to finish.
    #[arg(long)]
    pub no_wait: bool,
}

fn latest_path(sub: &str, set: &VmssName) -> String {
    format!(
        "{}/rollingUpgrades/latest",
        vmss_path(sub, &set.resource_group, &set.name)
    )
}

/// The progress line for a rolling upgrade's `latest` body.
pub fn progress_text(latest: &Value) -> String {
    let p = &latest["properties"];
    let code = p["runningStatus"]["code"].as_str().unwrap_or("Unknown");
    let count = |k: &str| p["progress"][k].as_u64().unwrap_or(0);
    let total = p["shoal"]["totalBatches"].as_u64().unwrap_or(0);
    let batch = p["shoal"]["currentBatch"]
        .as_u64()
        .unwrap_or_else(|| p["shoal"]["batchesDone"].as_u64().unwrap_or(0));
    format!(
        "{code}: batch {batch} of {total}: {} upgraded, {} failed, {} in progress, {} pending",
        count("successfulInstanceCount"),
        count("failedInstanceCount"),
        count("inProgressInstanceCount"),
        count("pendingInstanceCount"),
    )
}

/// The request of the commands that need no following.
pub fn request_for(sub: &str, cmd: &RollingUpgradeCommand) -> ApiRequest {
    match cmd {
        RollingUpgradeCommand::Start(a) => ApiRequest::action(
            Method::POST,
            format!(
                "{}/osRollingUpgrade",
                vmss_path(sub, &a.set.resource_group, &a.set.name)
            ),
            None,
            true,
        ),
        RollingUpgradeCommand::Cancel(a) => ApiRequest::action(
            Method::POST,
            format!(
                "{}/rollingUpgrades/cancel",
                vmss_path(sub, &a.set.resource_group, &a.set.name)
            ),
            None,
            a.no_wait,
        ),
        RollingUpgradeCommand::GetLatest(set) => {
            ApiRequest::get(latest_path(sub, set), Table::Generic)
        }
    }
}

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    cmd: RollingUpgradeCommand,
) -> anyhow::Result<()> {
    let request = request_for(client.subscription(), &cmd);
    let RollingUpgradeCommand::Start(args) = &cmd else {
        return execute(client, printer, request).await;
    };
    client
        .call(request.method, &request.path, request.body.as_ref())
        .await?;
    let path = latest_path(client.subscription(), &args.set);
    if args.no_wait {
        return execute(client, printer, ApiRequest::get(path, Table::Generic)).await;
    }
    let mut line = StatusLine::stderr();
    loop {
        let latest = client.get_json(&path).await?;
        let code = latest["properties"]["runningStatus"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let text = progress_text(&latest);
        line.update(&text, &text);
        match code.as_str() {
            "RollingForward" | "RollingBack" => {}
            "Faulted" => {
                line.clear();
                let e = &latest["properties"]["error"];
                return Err(ClientError::Api(ArmError {
                    code: e["code"].as_str().unwrap_or("Faulted").to_string(),
                    message: e["message"]
                        .as_str()
                        .unwrap_or("The rolling upgrade faulted")
                        .to_string(),
                    target: None,
                })
                .into());
            }
            _ => {
                line.clear();
                printer.print(Table::Generic, &latest)?;
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_says_which_batch_and_how_many() {
        let latest = json!({"properties": {
            "runningStatus": {"code": "RollingForward"},
            "progress": {"successfulInstanceCount": 4, "failedInstanceCount": 0,
                "inProgressInstanceCount": 2, "pendingInstanceCount": 4},
            "shoal": {"currentBatch": 3, "batchesDone": 2, "totalBatches": 5}
        }});
        assert_eq!(
            progress_text(&latest),
            "RollingForward: batch 3 of 5: 4 upgraded, 0 failed, 2 in progress, 4 pending"
        );
        let r = request_for(
            "s",
            &RollingUpgradeCommand::GetLatest(VmssName {
                resource_group: "demo".into(),
                name: "web".into(),
            }),
        );
        assert!(r
            .path
            .ends_with("/virtualMachineScaleSets/web/rollingUpgrades/latest"));
    }
}
