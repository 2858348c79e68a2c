//! Uploaded bundles: `POST /shoal/v1/blobs?subscription=S` stores a tar (streamed to disk,
//! hashed, checked to stay inside itself, then recorded under `blob/{id}` with its SHA-256,
//! the subscription whose quota it counts against — the default one when none is named —
//! and the servers holding it) and answers its id; image versions name it, and agents
//! fetch it with `GET /shoal/v1/blobs/{id}`.
//!
//! With several servers, no bundle lives on one machine only: an upload is copied to
//! another server that is up (`PUT /shoal/v1/blobs/{id}/replica`, with the uploader's own
//! token) before it is acknowledged, and a server asked for a bundle it lacks fetches it
//! from a server that holds it (with the asking agent's own credential), checks its
//! SHA-256, keeps it and adds itself to the holders. Requests between servers carry
//! [`FORWARDED`](crate::cluster::FORWARDED), so they are never passed on again.

use std::path::PathBuf;

use axum::body::Body;
use futures::StreamExt;
use serde_json::json;
use shoal_control::kv;
use shoal_model::records::{blob_key, BlobRecord};
use shoal_model::ArmError;
use shoal_store::{Expect, StoreError};
use tokio::io::AsyncWriteExt;

use crate::cluster::FORWARDED;
use crate::response::{json, ApiResult, Ctx};
use crate::state::{internal, ApiState};

/// Largest accepted bundle upload.
pub const MAX_BLOB_BYTES: u64 = 2 << 30;

/// The subscription an upload counts against: `?subscription=`, else the default one.
pub async fn upload_subscription(st: &ApiState, ctx: &Ctx) -> Result<String, ArmError> {
    if let Some(sub) = ctx.query("subscription").filter(|s| !s.is_empty()) {
        return Ok(sub.to_string());
    }
    st.default_subscription().await
}

/// `POST /shoal/v1/blobs`: stores a bundle (tar) and answers its id.
pub async fn upload_blob(
    st: &ApiState,
    ctx: &Ctx,
    headers: &http::HeaderMap,
    body: Body,
) -> ApiResult {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let subscription = upload_subscription(st, ctx).await?;
    crate::discovery::require_subscription(st, &subscription).await?;
    tokio::fs::create_dir_all(&st.blob_dir)
        .await
        .map_err(|e| ArmError::internal(format!("Cannot create the blob directory: {e}")))?;
    let used = crate::bundle_gc::used_bytes(st, &subscription).await?;
    let quota = st.bundles.quota_bytes;
    let over_quota = |size: u64| {
        ArmError::new(
            409,
            "QuotaExceeded",
            format!(
                "This upload ({size} bytes so far) would take the bundles of subscription {subscription} past their quota of {quota} bytes ({used} in use): delete image versions no longer needed (their bundles are collected), or raise --bundle-quota-mb."
            ),
        )
    };
    if used >= quota {
        return Err(over_quota(0));
    }
    let tmp = st.blob_dir.join(format!("{id}.part"));
    let path = blob_path(st, &id);
    // Within the quota and the size limit, whichever is nearer.
    let max = (quota - used).min(MAX_BLOB_BYTES);
    let (size, sha256) = match spool(&tmp, body.into_data_stream(), max).await {
        Ok(done) => done,
        Err(SpoolError::Read(e)) => {
            return Err(ArmError::new(
                400,
                "InvalidRequestContent",
                format!("The upload was interrupted: {e}"),
            ))
        }
        Err(SpoolError::TooLarge(size)) if used + size > quota => return Err(over_quota(size)),
        Err(SpoolError::TooLarge(_)) => {
            return Err(ArmError::new(
                413,
                "RequestEntityTooLarge",
                "Bundles are limited to 2 GiB.",
            ))
        }
        Err(SpoolError::Write(e)) => {
            return Err(ArmError::internal(format!("Cannot store the upload: {e}")))
        }
    };
    if let Err(reason) = check_tar(&tmp).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(ArmError::new(
            400,
            "InvalidRequestContent",
            format!("The upload is not a usable tar archive: {reason}"),
        ));
    }
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| ArmError::internal(format!("Cannot store the upload: {e}")))?;
    let rec = BlobRecord {
        id: id.clone(),
        size,
        sha256,
        time_created: st.now(),
        subscription: Some(subscription.clone()),
        holders: vec![st.cluster.name.clone()],
    };
    st.store
        .txn(vec![kv::put_op(blob_key(&id), &rec, Expect::Absent)])
        .await
        .map_err(|e: StoreError| internal(e))?;
    if let Err(e) = replicate(st, &rec, headers).await {
        let _ = st
            .store
            .txn(vec![shoal_store::TxnOp::Delete {
                key: blob_key(&id),
                expect: Expect::Any,
            }])
            .await;
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    Ok(json(201, &json!({"blobId": id, "size": size})))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long copying one bundle to or from another server may take.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Copies a new upload to one other server that is up, so that losing this one loses no
/// bundle; an error when other servers exist and none took it.
async fn replicate(
    st: &ApiState,
    rec: &BlobRecord,
    headers: &http::HeaderMap,
) -> Result<(), ArmError> {
    let peers = st.cluster.peers().await;
    if peers.is_empty() {
        return Ok(());
    }
    let mut tried = Vec::new();
    for (name, url) in peers {
        let file = tokio::fs::File::open(blob_path(st, &rec.id))
            .await
            .map_err(|e| ArmError::internal(format!("Cannot read the upload back: {e}")))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let sub = rec.subscription.as_deref().unwrap_or_default();
        let req = crate::cluster::to_peer(
            st,
            http::Method::PUT,
            format!("{url}/shoal/v1/blobs/{}/replica?subscription={sub}", rec.id),
            headers,
        )
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .timeout(COPY_TIMEOUT)
        .body(body);
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(bundle = %rec.id, to = %name, "bundle copied to another server");
                return Ok(());
            }
            Ok(r) => tried.push(format!("{name} answered {}", r.status())),
            Err(e) => tried.push(format!("{name}: {e}")),
        }
    }
    Err(ArmError::new(
        503,
        "ServiceUnavailable",
        format!(
            "The bundle could not be copied to another server ({}), so it was not kept: try again.",
            tried.join("; ")
        ),
    ))
}

/// `PUT /shoal/v1/blobs/{id}/replica`: another server's copy of a bundle it just took.
/// The record must exist and the bytes must match its size and SHA-256.
pub async fn receive_replica(st: &ApiState, id: &str, body: Body) -> ApiResult {
    let rec = known_blob(st, id).await?;
    if blob_path(st, id).exists() {
        add_holder(st, id).await?;
        return Ok(json(200, &json!({"blobId": id})));
    }
    store_copy(st, &rec, body.into_data_stream())
        .await
        .map_err(|why| {
            ArmError::new(
                400,
                "InvalidRequestContent",
                format!("The copy of bundle {id} is not the bundle: {why}"),
            )
        })?;
    add_holder(st, id).await?;
    Ok(json(201, &json!({"blobId": id})))
}

/// The record of bundle `id`, or a 404.
async fn known_blob(st: &ApiState, id: &str) -> Result<BlobRecord, ArmError> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ArmError::not_found("blob", id));
    }
    st.get::<BlobRecord>(&blob_key(id))
        .await?
        .map(|r| r.value)
        .ok_or_else(|| ArmError::not_found("blob", id))
}

/// Writes `stream` as the file of `rec` if it is exactly that bundle (size and SHA-256);
/// otherwise keeps nothing and says why.
async fn store_copy<S, E>(st: &ApiState, rec: &BlobRecord, stream: S) -> Result<(), String>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    tokio::fs::create_dir_all(&st.blob_dir)
        .await
        .map_err(|e| format!("cannot create the blob directory: {e}"))?;
    let tmp = st
        .blob_dir
        .join(format!("{}.{}.part", rec.id, uuid::Uuid::new_v4().simple()));
    let (size, sha) = spool(&tmp, stream, rec.size).await.map_err(|e| match e {
        SpoolError::Read(e) => format!("the transfer broke off: {e}"),
        SpoolError::TooLarge(_) => format!("more than its {} bytes", rec.size),
        SpoolError::Write(e) => format!("cannot store it: {e}"),
    })?;
    let result = if size != rec.size || (!rec.sha256.is_empty() && sha != rec.sha256) {
        Err(format!(
            "{size} bytes with SHA-256 {sha}, not {} bytes with {}",
            rec.size, rec.sha256
        ))
    } else {
        tokio::fs::rename(&tmp, blob_path(st, &rec.id))
            .await
            .map_err(|e| format!("cannot store it: {e}"))
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Why [`spool`] kept nothing.
enum SpoolError {
    /// The stream failed.
    Read(String),
    /// More than the limit came (the bytes so far).
    TooLarge(u64),
    Write(std::io::Error),
}

/// Writes `stream` to a new file at `path` (synced), hashing it, and refuses more than
/// `max` bytes: its size and SHA-256 (hex). On failure the file is removed.
async fn spool<S, E>(
    path: &std::path::Path,
    mut stream: S,
    max: u64,
) -> Result<(u64, String), SpoolError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let result = async {
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(SpoolError::Write)?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| SpoolError::Read(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(SpoolError::TooLarge(size));
            }
            digest.update(&chunk);
            file.write_all(&chunk).await.map_err(SpoolError::Write)?;
        }
        file.sync_all().await.map_err(SpoolError::Write)?;
        Ok((size, hex(digest.finish().as_ref())))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

/// Adds this server to the holders of bundle `id` (compare-and-swap, retried).
async fn add_holder(st: &ApiState, id: &str) -> Result<(), ArmError> {
    for _ in 0..10 {
        let Some(rec) = st.get::<BlobRecord>(&blob_key(id)).await? else {
            return Ok(());
        };
        if rec.value.holders.contains(&st.cluster.name) {
            return Ok(());
        }
        let mut value = rec.value.clone();
        value.holders.push(st.cluster.name.clone());
        let put = kv::put_op(blob_key(id), &value, Expect::ModRevision(rec.revision));
        match st.store.txn(vec![put]).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ArmError::new(
        409,
        "Conflict",
        format!("Bundle {id} kept changing; try again."),
    ))
}

/// Fetches bundle `rec` from a server that holds it, with the caller's credential.
async fn fetch_from_peer(
    st: &ApiState,
    rec: &BlobRecord,
    headers: &http::HeaderMap,
) -> Result<(), ArmError> {
    let peers = st.cluster.peers().await;
    let mut tried = Vec::new();
    for holder in rec.holders.iter().filter(|h| **h != st.cluster.name) {
        let Some((_, url)) = peers.iter().find(|(name, _)| name == holder) else {
            tried.push(format!("{holder} is not up"));
            continue;
        };
        let req = crate::cluster::to_peer(
            st,
            http::Method::GET,
            format!("{url}/shoal/v1/blobs/{}", rec.id),
            headers,
        )
        .timeout(COPY_TIMEOUT);
        let answer = match req.send().await {
            Ok(a) if a.status().is_success() => a,
            Ok(a) => {
                tried.push(format!("{holder} answered {}", a.status()));
                continue;
            }
            Err(e) => {
                tried.push(format!("{holder}: {e}"));
                continue;
            }
        };
        let stream = answer
            .bytes_stream()
            .map(|c| c.map_err(std::io::Error::other));
        match store_copy(st, rec, stream).await {
            Ok(()) => {
                add_holder(st, &rec.id).await?;
                tracing::info!(bundle = %rec.id, from = %holder, "bundle fetched from another server");
                return Ok(());
            }
            Err(why) => tried.push(format!("{holder}: {why}")),
        }
    }
    Err(ArmError::new(
        503,
        "ServiceUnavailable",
        format!(
            "Bundle {} is not on this server and no server holding it could give it ({}).",
            rec.id,
            if tried.is_empty() {
                "none is known".to_string()
            } else {
                tried.join("; ")
            }
        ),
    ))
}

/// Why an uploaded file is not a usable bundle. Its text follows "The upload is not a
/// usable tar archive: ".
#[derive(Debug, thiserror::Error)]
enum BundleError {
    /// Reading the archive failed (not a tar, truncated…).
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error("entry '{0}' points outside the bundle")]
    Escapes(String),
    /// The check itself did not finish.
    #[error(transparent)]
    Check(#[from] tokio::task::JoinError),
}

/// A bundle must be a tar whose entries stay inside the bundle (no absolute paths, no `..`).
async fn check_tar(path: &std::path::Path) -> Result<(), BundleError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries()? {
            let entry = entry?;
            let p = entry.path()?;
            if p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(BundleError::Escapes(p.display().to_string()));
            }
        }
        Ok(())
    })
    .await?
}

pub fn blob_path(st: &ApiState, id: &str) -> PathBuf {
    st.blob_dir.join(format!("{id}.tar"))
}

/// `GET /shoal/v1/blobs/{id}`: streams a bundle to an agent (fetching it from another
/// server first when this one lacks it).
pub async fn download_blob(st: &ApiState, id: &str, headers: &http::HeaderMap) -> ApiResult {
    let rec = known_blob(st, id).await?;
    if !blob_path(st, id).exists() && !headers.contains_key(FORWARDED) {
        fetch_from_peer(st, &rec, headers).await?;
    }
    let file = tokio::fs::File::open(blob_path(st, id))
        .await
        .map_err(|e| ArmError::internal(format!("Bundle {id} is missing on disk: {e}")))?;
    let stream = tokio_util::io::ReaderStream::new(file);
    let mut resp = axum::response::Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}
