//! How `shoal agent` and `shoal balancer` connect to the server: with the credential saved
//! in their data directory, else one traded for a join token at the server
//! (`POST /shoal/v1/join`) and then saved there, readable by its owner only. A saved
//! credential wins over `--join-token`, so a restart with the same command line works
//! after the token has expired.
//!
//! A token made by a server with an https listener ends with that listener's certificate
//! SHA-256 (`shoal1.ID.SECRET.SHA256`): https connections then trust exactly that
//! certificate (pinned, whatever its names or issuer), and the pin is saved with the
//! credential for later starts.

use std::path::Path;

use anyhow::{bail, Context};
use shoal_client::{Joined, ServerClient};

/// A client of `servers` carrying the credential of `name` in `role` ("agent" or
/// "balancer").
pub async fn connect(
    servers: &str,
    dir: &Path,
    role: &str,
    name: &str,
    join_token: Option<&str>,
) -> anyhow::Result<ServerClient> {
    let path = dir.join(format!("{role}-credential.json"));
    if let Ok(text) = std::fs::read_to_string(&path) {
        let saved: Joined = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a saved credential: delete it and join again with --join-token",
                path.display()
            )
        })?;
        if !saved.name.eq_ignore_ascii_case(name) {
            bail!(
                "{} holds the credential of '{}', not of '{name}': start with that name, or \
                 delete the file and join again with --join-token",
                path.display(),
                saved.name
            );
        }
        let pin = saved
            .server_certificate_sha256
            .as_deref()
            .map(|p| {
                shoal_client::parse_pin(p).with_context(|| {
                    format!("{} holds a malformed certificate pin", path.display())
                })
            })
            .transpose()?;
        check_scheme(servers, pin.is_some())?;
        return Ok(ServerClient::http_pinned(servers, pin).with_credential(&saved.credential));
    }
    let Some(token) = join_token.map(str::trim).filter(|t| !t.is_empty()) else {
        bail!(
            "This {role} has no credential yet: make a join token on the server \
             (`shoal host join-token create --role {role}`) and start with --join-token TOKEN \
             (or SHOAL_JOIN_TOKEN)"
        );
    };
    let pin_text = token.splitn(4, '.').nth(3);
    let pin = pin_text
        .map(|p| {
            shoal_client::parse_pin(p).context(
                "the join token's certificate fingerprint is malformed: copy the whole token \
                 as `shoal host join-token create` printed it",
            )
        })
        .transpose()?;
    check_scheme(servers, pin.is_some())?;
    let client = ServerClient::http_pinned(servers, pin);
    eprintln!("joining {} as {role} '{name}'…", client.target());
    let mut joined = client.join(token, name).await.with_context(|| {
        format!(
            "the server {} refused to let '{name}' join",
            client.target()
        )
    })?;
    if joined.role != role {
        bail!(
            "the join token is for a {}, not for a {role}: make one with \
             `shoal host join-token create --role {role}`",
            joined.role
        );
    }
    joined.server_certificate_sha256 = pin_text.map(str::to_ascii_lowercase);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let text = serde_json::to_vec_pretty(&joined).unwrap_or_default();
    crate::serve::write_private(&path, &text)?;
    eprintln!(
        "joined as {role} '{name}'; credential saved in {} (expires {})",
        path.display(),
        joined.expires_on
    );
    Ok(client.with_credential(&joined.credential))
}

/// An https server can only be trusted through a pin (its certificate is self-signed or
/// from a private authority); plain http with a pin works but sends the credential in
/// the clear, which deserves a warning.
fn check_scheme(servers: &str, pinned: bool) -> anyhow::Result<()> {
    let https = servers
        .split(',')
        .any(|s| s.trim().to_ascii_lowercase().starts_with("https://"));
    if https && !pinned {
        bail!(
            "{servers} is https, but no certificate fingerprint is known to trust it: join with \
             a token made by a server with --tls-listen (it ends with the certificate's \
             SHA-256), or use the server's http:// address"
        );
    }
    if pinned && !https {
        tracing::warn!(
            servers,
            "the server has an https listener, but --servers is http: credentials cross the \
             network unencrypted; use the https:// address"
        );
    }
    Ok(())
}
