//! `shoal ad sp …`: service principals, as `az ad sp` makes and manages them: an identity
//! with a secret, and roles (Azure RBAC) at scopes.
//!
//! `create-for-rbac` prints `appId`, `displayName`, `password` and `tenant` as `az` does;
//! the secret is shown this once (the server keeps only its hash).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{Printer, Table};

const PRINCIPALS: &str = "/providers/Shoal.Directory/servicePrincipals";

#[derive(Debug, Clone, Subcommand)]
pub enum AdCommand {
    /// Service principals: identities for programs and other machines.
    #[command(subcommand)]
    Sp(SpCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum SpCommand {
    /// Create a service principal and give it a role at one or more scopes.
    #[command(
        after_help = "Example:\n  shoal ad sp create-for-rbac --name deployer --role Contributor \\\n      --scopes /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/demo"
    )]
    CreateForRbac(CreateForRbac),
    /// List service principals.
    List,
    /// Show one service principal.
    Show(SpId),
    /// Delete a service principal and its role assignments.
    Delete(SpId),
    /// Manage a service principal's secret.
    #[command(subcommand)]
    Credential(CredentialCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum CredentialCommand {
    /// Replace the secret with a new one (printed once).
    Reset(SpId),
}

#[derive(Debug, Clone, Args)]
pub struct CreateForRbac {
    /// Display name of the new service principal.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
    /// A built-in role (Owner, Contributor, Reader, Virtual Machine Contributor, …); none
    /// without it, as `az` since 2.37.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Scopes of the role: a subscription, group or resource id (space-separated).
    #[arg(long, num_args = 1.., value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A PEM certificate whose key may sign in (azure-identity's `CertificateCredential`,
    /// `az login --service-principal --certificate`).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SpId {
    /// The application (client) id.
    #[arg(long, value_name = "APP_ID")]
    pub id: String,
}

pub async fn run(client: &Client, printer: &Printer, cmd: AdCommand) -> anyhow::Result<()> {
    let AdCommand::Sp(cmd) = cmd;
    match cmd {
        SpCommand::CreateForRbac(c) => create_for_rbac(client, printer, c).await,
        SpCommand::List => {
            let items = client.list(PRINCIPALS).await?;
            printer.print(Table::Generic, &Value::Array(items))?;
            Ok(())
        }
        SpCommand::Show(id) => {
            let sp = client.get_json(&format!("{PRINCIPALS}/{}", id.id)).await?;
            printer.print(Table::Generic, &sp)?;
            Ok(())
        }
        SpCommand::Delete(id) => {
            client
                .call(Method::DELETE, &format!("{PRINCIPALS}/{}", id.id), None)
                .await?;
            Ok(())
        }
        SpCommand::Credential(CredentialCommand::Reset(id)) => {
            let reply = client
                .call(
                    Method::POST,
                    &format!("{PRINCIPALS}/{}/resetCredentials", id.id),
                    None,
                )
                .await?;
            printer.print(
                Table::Generic,
                &secret_view(&reply.body.unwrap_or_default()),
            )?;
            Ok(())
        }
    }
}

/// What `az ad sp create-for-rbac` and `credential reset` print.
fn secret_view(sp: &Value) -> Value {
    json!({
        "appId": sp["appId"],
        "displayName": sp["displayName"],
        "password": sp["password"],
        "tenant": sp["tenant"],
    })
}

async fn create_for_rbac(
    client: &Client,
    printer: &Printer,
    c: CreateForRbac,
) -> anyhow::Result<()> {
    if c.role.is_some() && c.scopes.is_empty() {
        anyhow::bail!(
            "--role needs --scopes: name the subscription, group or resource it applies at"
        );
    }
    // Find the role first, so a wrong name makes nothing.
    let mut assignments = Vec::new();
    if let Some(role) = &c.role {
        for scope in &c.scopes {
            let scope = scope.trim_end_matches('/');
            let filter = format!("roleName eq '{}'", role.replace('\'', "''"));
            let path = format!(
                "{scope}/providers/Microsoft.Authorization/roleDefinitions?$filter={}",
                urlencode(&filter)
            );
            let found = client.list(&path).await?;
            let Some(definition) = found.first().and_then(|d| d["id"].as_str()) else {
                anyhow::bail!(
                    "there is no role '{role}' at {scope}: `Owner`, `Contributor`, `Reader`, `Virtual Machine Contributor`, `Network Contributor`, `Monitoring Reader` and `Monitoring Contributor` are built in"
                );
            };
            assignments.push((scope.to_string(), definition.to_string()));
        }
    }
    let mut body = json!({"displayName": c.name});
    if let Some(path) = &c.cert {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the certificate {}: {e}", path.display()))?;
        body["certificate"] = json!(pem);
    }
    let created = client
        .call(Method::POST, PRINCIPALS, Some(&body))
        .await?
        .body
        .unwrap_or_default();
    for (scope, definition) in assignments {
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
            uuid::Uuid::new_v4()
        );
        let body =
            json!({"properties": {"roleDefinitionId": definition, "principalId": created["id"]}});
        client.call(Method::PUT, &path, Some(&body)).await?;
    }
    printer.print(Table::Generic, &secret_view(&created))?;
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_filters_are_url_encoded() {
        assert_eq!(
            urlencode("roleName eq 'Reader'"),
            "roleName%20eq%20%27Reader%27"
        );
    }
}
