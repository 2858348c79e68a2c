//! What `shoal serve` and `shoal server` prepare before anything listens: the etcd
//! connection (`--store`), the owner-only certificate directory, and a raised open-file
//! limit.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// An etcd store from `etcd://HOST:PORT,…` and the optional TLS files.
pub async fn connect_etcd(
    spec: &str,
    store_ca: Option<&PathBuf>,
    store_cert: Option<&PathBuf>,
    store_key: Option<&PathBuf>,
) -> anyhow::Result<shoal_store::etcd::EtcdStore> {
    use shoal_store::etcd::{EtcdConfig, EtcdStore, EtcdTls};
    let mut config = match EtcdConfig::parse_url(spec) {
        Some(parsed) => parsed.map_err(|e| anyhow::anyhow!("store: {e}"))?,
        None => bail!(
            "store '{spec}' is not etcd://HOST:PORT[,HOST:PORT…] (leave it out for the embedded store)"
        ),
    };
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
    };
    if store_ca.is_some() || store_cert.is_some() {
        config.tls = Some(EtcdTls {
            ca: store_ca.map(|p| read(p, "store-ca")).transpose()?,
            identity: match (store_cert, store_key) {
                (Some(c), Some(k)) => Some((read(c, "store-cert")?, read(k, "store-key")?)),
                _ => None,
            },
        });
    }
    Ok(EtcdStore::connect(config).await?)
}

/// `<data-dir>/certificates`, owner-only: the one place application-gateway certificate
/// files may be read from.
pub fn certificate_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = data_dir.join("certificates");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the certificate directory {}", dir.display()))
}

/// Raises this process's open-file limit to its hard limit: every API connection, instance
/// log and store file is a descriptor, and the common soft limit of 1024 let about 1100 idle
/// connections make the server unanswerable.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && limit.rlim_cur < limit.rlim_max
            && {
                let from = limit.rlim_cur;
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 && {
                    tracing::info!(from, to = limit.rlim_cur, "raised the open-file limit");
                    true
                }
            }
    };
    if !raised {
        tracing::debug!(limit = limit.rlim_cur, "open-file limit kept");
    }
}
