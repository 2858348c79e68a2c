//! Uploaded bundles do not pile up: a bundle no image version, scale set or instance names
//! is deleted (its record and its file) once it is older than
//! [`BundlePolicy::unreferenced_after`], checked every [`BundlePolicy::collect_every`];
//! and the bundles kept may not exceed [`BundlePolicy::quota_bytes`] in all (an upload
//! past it is a 409 `QuotaExceeded`, and nothing is stored).
//!
//! A reference is the bundle's id anywhere in an image version, set or instance record
//! (ids are 32 random hex digits). Each server collects the bundles whose files it holds.

use std::time::Duration;

use shoal_model::keys;
use shoal_model::records::BlobRecord;
use shoal_store::{Expect, TxnOp};
use tokio_util::sync::CancellationToken;

use crate::state::ApiState;

/// When bundles are collected, and how much may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundlePolicy {
    pub collect_every: Duration,
    pub unreferenced_after: Duration,
    pub quota_bytes: u64,
}

impl Default for BundlePolicy {
    fn default() -> Self {
        BundlePolicy {
            collect_every: Duration::from_secs(600),
            unreferenced_after: Duration::from_secs(3600),
            quota_bytes: 20 << 30,
        }
    }
}

/// Bytes of the bundles kept now that count against `subscription`.
pub async fn used_bytes(st: &ApiState, subscription: &str) -> Result<u64, shoal_model::ArmError> {
    let default = st.default_subscription().await?;
    Ok(st
        .list::<BlobRecord>(keys::BLOB)
        .await?
        .iter()
        .filter(|b| {
            b.value
                .subscription
                .as_deref()
                .unwrap_or(&default)
                .eq_ignore_ascii_case(subscription)
        })
        .map(|b| b.value.size)
        .sum())
}

/// One pass: deletes the old, unreferenced bundles this server holds. Returns how many.
pub async fn collect(st: &ApiState) -> Result<usize, shoal_store::StoreError> {
    let (blobs, _) = st.store.list(keys::BLOB).await?;
    let mut refs: Vec<Vec<u8>> = Vec::new();
    for prefix in [keys::IMAGE_VERSION, keys::VMSS, keys::INSTANCE] {
        let (kvs, _) = st.store.list(prefix).await?;
        refs.extend(kvs.into_iter().map(|kv| kv.value));
    }
    let referenced = |id: &str| {
        refs.iter()
            .any(|v| v.windows(id.len()).any(|w| w == id.as_bytes()))
    };
    let now = st.clock.now();
    let min_age = jiff::SignedDuration::try_from(st.bundles.unreferenced_after).unwrap_or_default();
    let mut removed = 0;
    let mut recorded = std::collections::HashSet::new();
    for kv in blobs {
        let Ok(rec) = serde_json::from_slice::<BlobRecord>(&kv.value) else {
            continue;
        };
        recorded.insert(rec.id.clone());
        let old = rec
            .time_created
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| now.duration_since(t) >= min_age);
        let path = crate::blobs::blob_path(st, &rec.id);
        if !old || referenced(&rec.id) || !path.exists() {
            continue;
        }
        // Guarded by the revision read: a bundle named meanwhile is not touched.
        let txn = vec![TxnOp::Delete {
            key: kv.key.clone(),
            expect: Expect::ModRevision(kv.mod_revision),
        }];
        if st.store.txn(txn).await.is_ok() {
            let _ = tokio::fs::remove_file(&path).await;
            tracing::info!(bundle = %rec.id, size = rec.size, "collected an unreferenced bundle");
            removed += 1;
        }
    }
    removed += collect_orphans(st, &recorded, min_age).await;
    Ok(removed)
}

/// Deletes files of this server's blob directory that no record names any more (a
/// bundle another server collected, an upload cut off by a crash), once old enough.
async fn collect_orphans(
    st: &ApiState,
    recorded: &std::collections::HashSet<String>,
    min_age: jiff::SignedDuration,
) -> usize {
    let Ok(mut dir) = tokio::fs::read_dir(&st.blob_dir).await else {
        return 0;
    };
    let min_age = min_age.unsigned_abs();
    let mut removed = 0;
    while let Ok(Some(entry)) = dir.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let id = name.split('.').next().unwrap_or_default().to_string();
        if !(name.ends_with(".tar") || name.ends_with(".part")) || recorded.contains(&id) {
            continue;
        }
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
            tracing::info!(file = %name, "collected a bundle file no record names");
            removed += 1;
        }
    }
    removed
}

/// Collects every [`BundlePolicy::collect_every`] until `shutdown`.
pub async fn run(st: ApiState, shutdown: CancellationToken) {
    let every = st.bundles.collect_every.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = collect(&st).await {
            tracing::warn!(error = %e, "bundle collection failed; trying again later");
        }
    }
}
