//! Uploaded bundles: `POST /shoal/v1/blobs?subscription=S` stores a tar (streamed to disk,
//! checked to stay inside itself, then recorded under `blob/{id}` with the subscription
//! whose quota it counts against — the default subscription when none is named) and
//! answers its id; image versions name it, and agents fetch it with
//! `GET /shoal/v1/blobs/{id}`.

use std::path::PathBuf;

use axum::body::Body;
use futures::StreamExt;
use serde_json::json;
use shoal_control::kv;
use shoal_model::records::{blob_key, BlobRecord};
use shoal_model::ArmError;
use shoal_store::{Expect, StoreError};
use tokio::io::AsyncWriteExt;

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
pub async fn upload_blob(st: &ApiState, ctx: &Ctx, body: Body) -> ApiResult {
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
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| ArmError::internal(format!("Cannot store the upload: {e}")))?;
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(ArmError::new(
                    400,
                    "InvalidRequestContent",
                    format!("The upload was interrupted: {e}"),
                ));
            }
        };
        size += chunk.len() as u64;
        if used + size > quota {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(over_quota(size));
        }
        if size > MAX_BLOB_BYTES {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ArmError::new(
                413,
                "RequestEntityTooLarge",
                "Bundles are limited to 2 GiB.",
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ArmError::internal(format!("Cannot store the upload: {e}")))?;
    }
    file.sync_all()
        .await
        .map_err(|e| ArmError::internal(format!("Cannot store the upload: {e}")))?;
    drop(file);
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
        sha256: String::new(),
        time_created: st.now(),
        subscription: Some(subscription.clone()),
    };
    st.store
        .txn(vec![kv::put_op(blob_key(&id), &rec, Expect::Absent)])
        .await
        .map_err(|e: StoreError| internal(e))?;
    Ok(json(201, &json!({"blobId": id, "size": size})))
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

/// `GET /shoal/v1/blobs/{id}`: streams a bundle to an agent.
pub async fn download_blob(st: &ApiState, id: &str) -> ApiResult {
    if !id.chars().all(|c| c.is_ascii_alphanumeric())
        || st.get::<BlobRecord>(&blob_key(id)).await?.is_none()
    {
        return Err(ArmError::not_found("blob", id));
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
