//! The agent's image cache: bundles fetched from the server once per host and unpacked
//! into `<agent-dir>/images/<blob-id>/`, which drivers copy instance disks from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use shoal_client::ServerClient;

#[derive(Clone)]
pub struct ImageCache {
    dir: PathBuf,
    client: ServerClient,
    cells: Arc<Mutex<HashMap<String, Arc<OnceCell<PathBuf>>>>>,
}

impl ImageCache {
    pub fn new(dir: PathBuf, client: ServerClient) -> Self {
        ImageCache {
            dir,
            client,
            cells: Arc::default(),
        }
    }

    /// The unpacked bundle's directory, fetching it first if this host lacks it.
    /// Concurrent callers for the same bundle share one download.
    pub async fn get(&self, blob_id: &str) -> Result<PathBuf, String> {
        if blob_id.is_empty() || !blob_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("bundle id '{blob_id}' is invalid"));
        }
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            cells.entry(blob_id.to_string()).or_default().clone()
        };
        let result = cell.get_or_try_init(|| self.fetch(blob_id)).await.cloned();
        if result.is_err() {
            // Let a later call try again.
            self.cells
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(blob_id);
        }
        result
    }

    async fn fetch(&self, blob_id: &str) -> Result<PathBuf, String> {
        let target = self.dir.join(blob_id);
        if tokio::fs::metadata(&target).await.is_ok() {
            return Ok(target);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let tar_path = self.dir.join(format!("{blob_id}.tar.part"));
        let mut body = self
            .client
            .blob(blob_id)
            .await
            .map_err(|e| format!("cannot download bundle {blob_id}: {e}"))?;
        let mut file = tokio::fs::File::create(&tar_path)
            .await
            .map_err(|e| format!("cannot write {}: {e}", tar_path.display()))?;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| format!("download of bundle {blob_id} broke off: {e}"))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", tar_path.display()))?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        drop(file);
        let staging = self.dir.join(format!("{blob_id}.unpacking"));
        let (tp, sp, tg) = (tar_path.clone(), staging.clone(), target.clone());
        tokio::task::spawn_blocking(move || unpack(&tp, &sp, &tg))
            .await
            .map_err(|e| format!("unpacking bundle {blob_id} failed: {e}"))??;
        let _ = tokio::fs::remove_file(&tar_path).await;
        tracing::info!(bundle = blob_id, dir = %target.display(), "image bundle ready");
        Ok(target)
    }
}

fn unpack(tar_path: &Path, staging: &Path, target: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let file = std::fs::File::open(tar_path)
        .map_err(|e| format!("cannot open {}: {e}", tar_path.display()))?;
    let mut archive = tar::Archive::new(file);
    archive.set_preserve_permissions(true);
    // `unpack` refuses entries that would land outside `staging`.
    archive
        .unpack(staging)
        .map_err(|e| format!("bundle is not a usable tar archive: {e}"))?;
    std::fs::rename(staging, target)
        .map_err(|e| format!("cannot move the bundle into place: {e}"))?;
    Ok(())
}
