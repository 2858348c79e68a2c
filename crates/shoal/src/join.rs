//! How `shoal agent` and `shoal balancer` get their credential for the agent protocol: the
//! one saved in their data directory, else one traded for a join token at the server
//! (`POST /shoal/v1/join`) and then saved there, readable by its owner only. A saved
//! credential wins over `--join-token`, so a restart with the same command line works
//! after the token has expired.

use std::path::Path;

use anyhow::{bail, Context};
use shoal_client::{Joined, ServerClient};

/// The credential of `name` in `role` ("agent" or "balancer").
pub async fn credential(
    client: &ServerClient,
    dir: &Path,
    role: &str,
    name: &str,
    join_token: Option<&str>,
) -> anyhow::Result<String> {
    let path = dir.join(format!("{role}-credential.json"));
    if let Ok(text) = std::fs::read_to_string(&path) {
        let saved: Joined = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a saved credential: delete it and join again with --join-token",
                path.display()
            )
        })?;
        if saved.name.eq_ignore_ascii_case(name) {
            return Ok(saved.credential);
        }
        bail!(
            "{} holds the credential of '{}', not of '{name}': start with that name, or delete \
             the file and join again with --join-token",
            path.display(),
            saved.name
        );
    }
    let Some(token) = join_token.filter(|t| !t.trim().is_empty()) else {
        bail!(
            "This {role} has no credential yet: make a join token on the server \
             (`shoal host join-token create --role {role}`) and start with --join-token TOKEN \
             (or SHOAL_JOIN_TOKEN)"
        );
    };
    eprintln!("joining {} as {role} '{name}'…", client.target());
    let joined = client.join(token.trim(), name).await.with_context(|| {
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
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let text = serde_json::to_vec_pretty(&joined).unwrap_or_default();
    crate::serve::write_private(&path, &text)?;
    eprintln!(
        "joined as {role} '{name}'; credential saved in {} (expires {})",
        path.display(),
        joined.expires_on
    );
    Ok(joined.credential)
}
