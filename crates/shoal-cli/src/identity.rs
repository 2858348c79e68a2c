//! `shoal identity …`: user-assigned managed identities
//! (`Microsoft.ManagedIdentity/userAssignedIdentities`), as `az identity`. Give one to a
//! scale set with `shoal vmss create --assign-identity NAME_OR_ID`, and roles to its
//! `principalId`; instances ask for its token with `client_id=<clientId>`.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use crate::client::Client;
use crate::exec::execute;
use crate::group::{parse_tag, tags_object};
use crate::output::{Printer, Table};
use crate::request::{group_path, subscription_path, ApiRequest};

#[derive(Debug, Clone, Subcommand)]
pub enum IdentityCommand {
    /// Create a user-assigned identity (or update its tags).
    #[command(after_help = "Example:\n  shoal identity create -g demo -n web-identity")]
    Create(IdentityCreate),
    /// Show an identity: its principalId (for role assignments) and clientId.
    Show(IdentityName),
    /// List the identities of a group, or of the subscription.
    List(IdentityList),
    /// Delete an identity. Scale sets that name it keep running; their instances can no
    /// longer get its tokens.
    Delete(IdentityName),
}

#[derive(Debug, Clone, Args)]
pub struct IdentityName {
    /// Resource group of the identity.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the identity.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct IdentityCreate {
    #[command(flatten)]
    pub identity: IdentityName,
    /// Location (default: the resource group's).
    #[arg(long, short = 'l', value_name = "LOCATION")]
    pub location: Option<String>,
    /// Space-separated tags: `key=value`, or `key` for an empty value.
    #[arg(long, num_args = 1.., value_name = "KEY[=VALUE]", value_parser = parse_tag)]
    pub tags: Option<Vec<(String, String)>>,
}

#[derive(Debug, Clone, Args)]
pub struct IdentityList {
    /// Only this resource group's identities.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: Option<String>,
}

const PROVIDER: &str = "providers/Microsoft.ManagedIdentity/userAssignedIdentities";

/// The path of the identity `name` in `rg`.
pub fn identity_path(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/{PROVIDER}/{}",
        group_path(sub, rg),
        crate::request::segment(name)
    )
}

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    cmd: IdentityCommand,
) -> anyhow::Result<()> {
    let sub = client.subscription().to_string();
    let req = match cmd {
        IdentityCommand::Create(a) => {
            let n = &a.identity;
            let location = match a.location {
                Some(l) => l,
                None => crate::image::group_location(client, &n.resource_group).await?,
            };
            let mut body = json!({"location": location});
            if let Some(tags) = &a.tags {
                body["tags"] = tags_object(tags);
            }
            ApiRequest::write(
                Method::PUT,
                identity_path(&sub, &n.resource_group, &n.name),
                body,
                false,
                Table::Generic,
            )
        }
        IdentityCommand::Show(n) => ApiRequest::get(
            identity_path(&sub, &n.resource_group, &n.name),
            Table::Generic,
        ),
        IdentityCommand::List(l) => ApiRequest::list(
            match &l.resource_group {
                Some(rg) => format!("{}/{PROVIDER}", group_path(&sub, rg)),
                None => format!("{}/{PROVIDER}", subscription_path(&sub)),
            },
            Table::Generic,
        ),
        IdentityCommand::Delete(n) => ApiRequest::action(
            Method::DELETE,
            identity_path(&sub, &n.resource_group, &n.name),
            None,
            false,
        ),
    };
    execute(client, printer, req).await
}
