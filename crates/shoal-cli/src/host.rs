//! `shoal host …`: the machines instances run on (`Shoal.Infrastructure/hosts`): their
//! zone, fault domain, state (Ready, NotReady, Down), capacity and what is placed on them;
//! cordon (no new instances), drain (move every instance off, with draining) and delete;
//! and the join tokens new agents and balancers trade for their credentials.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use crate::client::Client;
use crate::output::{OutputFormat, Printer, Table};

const HOSTS: &str = "/providers/Shoal.Infrastructure/hosts";
const JOIN_TOKENS: &str = "/providers/Shoal.Infrastructure/joinTokens";

#[derive(Debug, Clone, Subcommand)]
pub enum HostCommand {
    /// List the hosts with their zone, fault domain, state and load.
    List,
    /// Show one host.
    Show(HostName),
    /// Place no new instances on the host (those on it keep running).
    Cordon(HostName),
    /// Undo a cordon or a drain.
    Uncordon(HostName),
    /// Move every instance off the host (each drained first), then keep it cordoned.
    #[command(after_help = "Example:\n  shoal host drain --name host-c")]
    Drain(HostName),
    /// Forget a host that is Down or gone, and revoke its credential (it must join again).
    Delete(HostName),
    /// Join tokens: what a new agent or balancer trades for its credential.
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum JoinTokenCommand {
    /// Make a join token; it is shown only now. Pass it to `shoal agent --join-token` or
    /// `shoal balancer --join-token` on the new machine.
    #[command(
        after_help = "Example:\n  shoal host join-token create --role agent --expires-in-minutes 60"
    )]
    Create {
        /// What the joining machine runs.
        #[arg(long, value_parser = ["agent", "balancer"], default_value = "agent")]
        role: String,
        /// Minutes the token may be used, up to a week [default: 1440].
        #[arg(long, value_name = "MINUTES")]
        expires_in_minutes: Option<i64>,
    },
    /// The join tokens that have not expired (without their secrets).
    List,
    /// Revoke a join token (machines that already joined keep their credential).
    Delete {
        /// The token's name (the part after `shoal1.`).
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct HostName {
    /// Name of the host (as `shoal agent --host-name` registered it).
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
}

pub async fn run(client: &Client, printer: &Printer, cmd: HostCommand) -> anyhow::Result<()> {
    let one = |n: &HostName| format!("{HOSTS}/{}", n.name);
    let shown = match cmd {
        HostCommand::List => Value::Array(client.list(HOSTS).await?),
        HostCommand::Show(n) => client.get_json(&one(&n)).await?,
        HostCommand::Cordon(n) => action(client, &one(&n), "cordon").await?,
        HostCommand::Uncordon(n) => action(client, &one(&n), "uncordon").await?,
        HostCommand::Drain(n) => action(client, &one(&n), "drain").await?,
        HostCommand::Delete(n) => {
            client.call(Method::DELETE, &one(&n), None).await?;
            return Ok(());
        }
        HostCommand::JoinToken(cmd) => return join_token(client, printer, cmd).await,
    };
    match printer.format() {
        OutputFormat::Table => printer.write_raw(table(&shown).as_bytes())?,
        _ => printer.print(Table::Generic, &shown)?,
    }
    Ok(())
}

async fn join_token(
    client: &Client,
    printer: &Printer,
    cmd: JoinTokenCommand,
) -> anyhow::Result<()> {
    let shown = match cmd {
        JoinTokenCommand::Create {
            role,
            expires_in_minutes,
        } => {
            let mut body = serde_json::json!({ "role": role });
            if let Some(m) = expires_in_minutes {
                body["expiresInMinutes"] = m.into();
            }
            let reply = client.call(Method::POST, JOIN_TOKENS, Some(&body)).await?;
            let made = reply.body.unwrap_or(Value::Null);
            serde_json::json!({
                "name": made["name"],
                "role": made["role"],
                "token": made["token"],
                "expiresOn": made["expiresOn"],
            })
        }
        JoinTokenCommand::List => Value::Array(client.list(JOIN_TOKENS).await?),
        JoinTokenCommand::Delete { name } => {
            client
                .call(Method::DELETE, &format!("{JOIN_TOKENS}/{name}"), None)
                .await?;
            return Ok(());
        }
    };
    printer.print(Table::Generic, &shown)?;
    Ok(())
}

async fn action(client: &Client, host: &str, verb: &str) -> anyhow::Result<Value> {
    let reply = client
        .call(Method::POST, &format!("{host}/{verb}"), None)
        .await?;
    Ok(reply.body.unwrap_or(Value::Null))
}

/// One line per host: name, zone, fault domain, state, cordoned, instances, vCPUs used.
fn table(v: &Value) -> String {
    let hosts: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = format!(
        "{:<20} {:<6} {:<3} {:<9} {:<9} {:>9} {:>11}\n",
        "Name", "Zone", "FD", "State", "Cordoned", "Instances", "vCPUs"
    );
    for h in hosts {
        let p = &h["properties"];
        out.push_str(&format!(
            "{:<20} {:<6} {:<3} {:<9} {:<9} {:>9} {:>11}\n",
            h["name"].as_str().unwrap_or("-"),
            p["zone"].as_str().unwrap_or("-"),
            p["faultDomain"].as_u64().unwrap_or(0),
            p["state"].as_str().unwrap_or("-"),
            p["cordoned"].as_bool().unwrap_or(false),
            p["allocated"]["instances"].as_u64().unwrap_or(0),
            format!(
                "{}/{}",
                p["allocated"]["vCPUs"].as_u64().unwrap_or(0),
                p["capacity"]["vCPUs"].as_u64().unwrap_or(0)
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_shows_state_and_load() {
        let t = table(
            &json!([{"name": "a", "properties": {"zone": "1", "faultDomain": 2,
            "state": "Ready", "cordoned": true, "allocated": {"instances": 3, "vCPUs": 3},
            "capacity": {"vCPUs": 32}}}]),
        );
        let line = t.lines().nth(1).unwrap();
        for part in ["a", "1", "2", "Ready", "true", "3", "3/32"] {
            assert!(
                line.split_whitespace().any(|w| w == part),
                "{part} in {line}"
            );
        }
    }
}
