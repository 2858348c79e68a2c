//! `shoal login` / `shoal logout`: a service principal's credential for a remote server,
//! kept for later commands as `az login` keeps its own.
//!
//! The credential is checked at the server's token endpoint first, then written to
//! `login.json` in the CLI's configuration directory (`$SHOAL_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/shoal`, else `~/.config/shoal`), readable by its owner only. Later
//! commands against the same `--endpoint` sign in with it (see
//! [`crate::client::Credential::discover`]); `shoal logout` deletes it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::{Client, Credential};
use crate::output::{Printer, Table};
use crate::ClientOptions;

/// `shoal login --service-principal -u APP_ID -p SECRET --tenant TENANT`.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Sign in as a service principal (the only kind Shoal has; kept for `az`'s spelling).
    #[arg(long)]
    pub service_principal: bool,
    /// The service principal's application (client) id.
    #[arg(long, short = 'u', value_name = "APP_ID")]
    pub username: String,
    /// Its secret (`shoal ad sp create-for-rbac` printed it).
    #[arg(
        long,
        short = 'p',
        value_name = "SECRET",
        env = "SHOAL_LOGIN_SECRET",
        hide_env_values = true
    )]
    pub password: String,
    /// The directory (tenant) id.
    #[arg(long, value_name = "TENANT")]
    pub tenant: String,
}

/// What `login.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRecord {
    pub endpoint: String,
    pub tenant: String,
    pub app_id: String,
    pub password: String,
}

/// The CLI's configuration directory.
pub fn config_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("SHOAL_CONFIG_DIR")
        .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("shoal")))
        .or_else(|| var("HOME").map(|h| h.join(".config").join("shoal")))
}

fn login_file() -> Option<PathBuf> {
    config_dir().map(|d| d.join("login.json"))
}

/// Whether two `--endpoint` values (each one URL or several, comma-separated) name a
/// server in common: a login kept for `a,b` serves `b` alone too.
fn same_endpoint(a: &str, b: &str) -> bool {
    let urls = |s: &str| -> Vec<String> {
        s.split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect()
    };
    let b = urls(b);
    urls(a).iter().any(|u| b.contains(u))
}

/// The credential `shoal login` stored for `endpoint`, if any.
pub fn credential_for(endpoint: &crate::client::Endpoints) -> Option<Credential> {
    let text = std::fs::read_to_string(login_file()?).ok()?;
    let record: LoginRecord = serde_json::from_str(&text).ok()?;
    same_endpoint(&record.endpoint, &endpoint.to_string()).then_some(Credential::ClientSecret {
        tenant: record.tenant,
        client_id: record.app_id,
        secret: record.password,
    })
}

/// Checks the credential at the server, then keeps it.
pub async fn login(opts: &ClientOptions, args: LoginArgs, printer: &Printer) -> anyhow::Result<()> {
    let credential = Credential::ClientSecret {
        tenant: args.tenant.clone(),
        client_id: args.username.clone(),
        secret: args.password.clone(),
    };
    let client = Client::new(opts)?
        .reachable()
        .await
        .with_credential(credential);
    client.sign_in().await?;
    let subscriptions = client.list("/subscriptions").await?;
    let path = login_file().context(
        "no configuration directory: set SHOAL_CONFIG_DIR (or HOME) to where `shoal login` may keep the credential",
    )?;
    let record = LoginRecord {
        endpoint: opts.endpoint.to_string(),
        tenant: args.tenant,
        app_id: args.username,
        password: args.password,
    };
    write_private(&path, &serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "Signed in to {} as {}; later commands with --endpoint {} use it (`shoal logout` forgets it).",
        record.endpoint, record.app_id, record.endpoint
    );
    let accounts: Vec<_> = subscriptions
        .iter()
        .map(|s| {
            json!({
                "cloudName": "Shoal",
                "id": s["subscriptionId"],
                "name": s["displayName"],
                "tenantId": s["tenantId"],
                "state": s["state"],
                "user": {"name": record.app_id, "type": "servicePrincipal"},
            })
        })
        .collect();
    printer.print(Table::Generic, &json!(accounts))?;
    Ok(())
}

/// Forgets the stored credential.
pub fn logout() -> anyhow::Result<()> {
    match login_file() {
        Some(path) if path.exists() => {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            eprintln!("Signed out ({} removed).", path.display());
        }
        _ => eprintln!("Not signed in: nothing to forget."),
    }
    Ok(())
}

/// Writes `bytes` to `path` (creating its directory), readable and writable by the owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::same_endpoint;

    #[test]
    fn a_login_serves_every_list_naming_one_of_its_servers() {
        assert!(same_endpoint("http://a:1/", "http://a:1"));
        assert!(same_endpoint("http://a:1,http://b:1", "http://b:1"));
        assert!(same_endpoint("http://b:1", "http://c:1, http://b:1/"));
        assert!(!same_endpoint("http://a:1,http://b:1", "http://c:1"));
    }
}
