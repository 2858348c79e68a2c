//! `shoal store copy --from DATA_DIR --to etcd://…`: moves an install from the embedded
//! store to etcd. Every key and value is copied (revisions start afresh, as in any new
//! etcd cluster); the target must be empty, so nothing of another install is overwritten;
//! the source must not be in use (a running server holds its lock). Progress goes to
//! stderr; the copy is checked key by key at the end.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use shoal_store::{Expect, RedbStore, Store, TxnOp};

/// Keys written per transaction (etcd allows 128 operations).
const BATCH: usize = 64;

#[derive(Debug, Clone, Args)]
pub struct StoreCopyArgs {
    /// The stopped server's data directory (its `state.redb`), or the redb file itself.
    #[arg(long, value_name = "DATA_DIR")]
    pub from: PathBuf,
    /// The etcd cluster to copy into: `etcd://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, value_name = "etcd://HOST:PORT,…")]
    pub to: String,
    /// PEM CA certificate to verify etcd's members with.
    #[arg(long, value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// PEM client certificate for etcd.
    #[arg(long, value_name = "FILE", requires = "store_key")]
    pub store_cert: Option<PathBuf>,
    /// PEM private key of --store-cert.
    #[arg(long, value_name = "FILE", requires = "store_cert")]
    pub store_key: Option<PathBuf>,
}

pub async fn run(args: StoreCopyArgs) -> anyhow::Result<()> {
    let file = if args.from.is_dir() {
        args.from.join("state.redb")
    } else {
        args.from.clone()
    };
    if !file.is_file() {
        bail!(
            "{} is not a Shoal data directory or state.redb file: name the stopped server's --data-dir",
            args.from.display()
        );
    }
    let source = RedbStore::open(&file).with_context(|| {
        format!(
            "cannot open {} (stop the server that uses it first)",
            file.display()
        )
    })?;
    let target = crate::setup::connect_etcd(
        &args.to,
        args.store_ca.as_ref(),
        args.store_cert.as_ref(),
        args.store_key.as_ref(),
    )
    .await?;
    let copied = copy(&source, &target, |done, total| {
        eprintln!("copied {done}/{total} keys");
    })
    .await?;
    eprintln!(
        "Copied {copied} keys from {} to {}: start the servers with --store {}",
        file.display(),
        args.to,
        args.to
    );
    Ok(())
}

/// Copies every key of `source` into the empty `target`, reporting progress; then checks
/// that `target` holds exactly what `source` held.
pub async fn copy(
    source: &dyn Store,
    target: &dyn Store,
    progress: impl Fn(usize, usize),
) -> anyhow::Result<usize> {
    let (existing, _) = target
        .list("")
        .await
        .context("cannot list the target store")?;
    if !existing.is_empty() {
        bail!(
            "the target store already holds {} keys: copy into an empty etcd (or another prefix)",
            existing.len()
        );
    }
    let (kvs, _) = source
        .list("")
        .await
        .context("cannot list the source store")?;
    let total = kvs.len();
    let mut done = 0;
    for batch in kvs.chunks(BATCH) {
        let txn: Vec<TxnOp> = batch
            .iter()
            .map(|kv| TxnOp::Put {
                key: kv.key.clone(),
                value: kv.value.clone(),
                expect: Expect::Absent,
            })
            .collect();
        target.txn(txn).await.with_context(|| {
            format!(
                "cannot write keys {done}..{} to the target",
                done + batch.len()
            )
        })?;
        done += batch.len();
        progress(done, total);
    }
    let (written, _) = target.list("").await.context("cannot read the copy back")?;
    let same = written.len() == total
        && written
            .iter()
            .zip(&kvs)
            .all(|(w, k)| w.key == k.key && w.value == k.value);
    if !same {
        bail!(
            "the copy does not match: {} keys read back of {total}; nothing else writes to the target?",
            written.len()
        );
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::{MemoryStore, StoreExt};

    #[tokio::test]
    async fn every_key_is_copied_once_and_a_used_target_is_refused() {
        let source = MemoryStore::default();
        for i in 0..150 {
            source
                .put(&format!("k/{i:03}"), format!("v{i}"))
                .await
                .unwrap();
        }
        let target = MemoryStore::default();
        let seen = std::sync::Mutex::new(Vec::new());
        let n = copy(&source, &target, |d, t| seen.lock().unwrap().push((d, t)))
            .await
            .unwrap();
        assert_eq!(n, 150);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(64, 150), (128, 150), (150, 150)]
        );
        assert_eq!(target.get("k/149").await.unwrap().unwrap().value, b"v149");
        let again = copy(&source, &target, |_, _| {}).await.unwrap_err();
        assert!(
            again.to_string().contains("already holds 150 keys"),
            "{again}"
        );
    }
}
