//! `shoal group …`: resource groups (`Microsoft.Resources/resourceGroups`), as `az group`.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::Client;
use crate::exec::execute;
use crate::output::{Printer, Table};
use crate::request::{group_path, subscription_path, ApiRequest};

#[derive(Debug, Clone, Subcommand)]
pub enum GroupCommand {
    /// Create a resource group, or update the location and tags of an existing one.
    #[command(after_help = "Example:\n  shoal group create --name demo --location local")]
    Create(GroupCreate),
    /// Show a resource group as its ARM JSON object.
    Show(GroupName),
    /// List the resource groups of the subscription.
    List,
    /// Delete a resource group and every resource in it.
    #[command(after_help = "Example:\n  shoal group delete --name demo --yes")]
    Delete(GroupDelete),
}

/// `--name`, accepted also as `--resource-group`/`-g` as `az` does.
#[derive(Debug, Clone, Args)]
pub struct GroupName {
    /// Name of the resource group.
    #[arg(
        long = "name",
        short = 'n',
        alias = "resource-group",
        short_alias = 'g',
        value_name = "NAME"
    )]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct GroupCreate {
    #[command(flatten)]
    pub group: GroupName,
    /// Location of the group; scale sets created in it default to this location.
    #[arg(long, short = 'l', value_name = "LOCATION")]
    pub location: String,
    /// Space-separated tags: `key=value`, or `key` for an empty value.
    #[arg(long, num_args = 1.., value_name = "KEY[=VALUE]", value_parser = parse_tag)]
    pub tags: Option<Vec<(String, String)>>,
}

#[derive(Debug, Clone, Args)]
pub struct GroupDelete {
    #[command(flatten)]
    pub group: GroupName,
    /// Do not prompt for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Do not wait for the deletion to finish.
    #[arg(long)]
    pub no_wait: bool,
}

/// Parses one `--tags` item.
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        return Err(format!("tag '{text}' has no key (expected key=value)"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `{"k": "v", …}` from `--tags`.
pub fn tags_object(tags: &[(String, String)]) -> Value {
    let map: Map<String, Value> = tags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Value::Object(map)
}

/// The request a group command sends.
pub fn request_for(sub: &str, cmd: &GroupCommand) -> ApiRequest {
    match cmd {
        GroupCommand::Create(args) => {
            let mut body = json!({ "location": args.location });
            if let Some(tags) = &args.tags {
                body["tags"] = tags_object(tags);
            }
            ApiRequest::write(
                Method::PUT,
                group_path(sub, &args.group.name),
                body,
                false,
                Table::Generic,
            )
        }
        GroupCommand::Show(args) => ApiRequest::get(group_path(sub, &args.name), Table::Generic),
        GroupCommand::List => ApiRequest::list(
            format!("{}/resourcegroups", subscription_path(sub)),
            Table::Generic,
        ),
        GroupCommand::Delete(args) => ApiRequest::action(
            Method::DELETE,
            group_path(sub, &args.group.name),
            None,
            args.no_wait,
        ),
    }
}

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    cmd: GroupCommand,
) -> anyhow::Result<()> {
    if let GroupCommand::Delete(args) = &cmd {
        if !args.yes && !confirm(&args.group.name)? {
            return Ok(());
        }
    }
    execute(client, printer, request_for(client.subscription(), &cmd)).await
}

/// Asks on the terminal, as `az group delete` does.
fn confirm(name: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "Deleting resource group '{name}' needs confirmation, and stdin is not a terminal: pass --yes"
        );
    }
    eprint!("Are you sure you want to perform this operation? (y/n): ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
