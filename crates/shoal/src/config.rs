//! Configuration of the server processes: one TOML file, every key overridable by a flag
//! and by a `SHOAL_*` environment variable (flags win, then the environment, then the
//! file). An invalid config is refused before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The file's shape. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    pub keep_instances: Option<bool>,
    pub max_capacity: Option<i64>,
    pub public_ip_range: Option<String>,
    pub tls_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub identity_header: Option<String>,
    pub host_not_ready_after: Option<u64>,
    pub host_down_after: Option<u64>,
    pub bundle_collect_every: Option<u64>,
    pub bundle_unreferenced_after: Option<u64>,
    pub bundle_quota_mb: Option<u64>,
    pub store: Option<String>,
    pub store_ca: Option<PathBuf>,
    pub store_cert: Option<PathBuf>,
    pub store_key: Option<PathBuf>,
    pub name: Option<String>,
    pub advertise_url: Option<String>,
    #[serde(default)]
    pub agent: AgentFileConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentFileConfig {
    pub host_name: Option<String>,
    pub zone: Option<String>,
    pub fault_domain: Option<u32>,
    pub network: Option<String>,
    pub stop_grace_seconds: Option<u64>,
    pub boot_timeout_seconds: Option<u64>,
    pub start_concurrency: Option<usize>,
    pub drain_timeout_seconds: Option<u64>,
    /// VM accelerator: auto, kvm or tcg.
    pub accel: Option<String>,
    pub heartbeat_interval: Option<u64>,
    pub address: Option<String>,
    pub instance_subnet: Option<String>,
    pub outbound_nat: Option<bool>,
    pub warm_namespaces: Option<usize>,
    pub capacity_vcpus: Option<u32>,
    pub capacity_memory_mb: Option<u64>,
}

pub fn load_file(path: Option<&PathBuf>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("the config file {} is invalid", path.display()))
}

pub fn parse_listen(s: &str, what: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .with_context(|| format!("{what} '{s}' is not an ADDRESS:PORT such as 127.0.0.1:7070"))
}

pub fn secs(v: u64, what: &str, max: u64) -> anyhow::Result<Duration> {
    if v > max {
        bail!("{what} must be at most {max} seconds, not {v}");
    }
    Ok(Duration::from_secs(v))
}

/// When a silent host becomes NotReady and then Down (its instances placed again
/// elsewhere), from `--host-not-ready-after`/`--host-down-after` or the file; checked so
/// that Down comes after NotReady.
pub fn host_timeouts(
    not_ready: Option<u64>,
    down: Option<u64>,
) -> anyhow::Result<shoal_control::hosts::HostTimeouts> {
    let d = shoal_control::hosts::HostTimeouts::default();
    let not_ready = match not_ready {
        Some(v) => secs(v, "host-not-ready-after", 3600)?,
        None => d.not_ready_after,
    };
    let down = match down {
        Some(v) => secs(v, "host-down-after", 86_400)?,
        None => d.down_after.max(not_ready * 2),
    };
    if not_ready.is_zero() || down <= not_ready {
        bail!(
            "host-down-after ({} s) must be longer than host-not-ready-after ({} s), which must be at least 1 s",
            down.as_secs(),
            not_ready.as_secs()
        );
    }
    Ok(shoal_control::hosts::HostTimeouts {
        not_ready_after: not_ready,
        down_after: down,
        ..d
    })
}

/// When unreferenced bundles are collected and how much may be kept, from the flags or
/// the file.
pub fn bundle_policy(
    every: Option<u64>,
    after: Option<u64>,
    quota_mb: Option<u64>,
) -> anyhow::Result<shoal_api::bundle_gc::BundlePolicy> {
    let d = shoal_api::bundle_gc::BundlePolicy::default();
    Ok(shoal_api::bundle_gc::BundlePolicy {
        collect_every: match every {
            Some(0) => bail!("bundle-collect-every must be at least 1 second"),
            Some(v) => secs(v, "bundle-collect-every", 86_400)?,
            None => d.collect_every,
        },
        unreferenced_after: match after {
            Some(v) => secs(v, "bundle-unreferenced-after", 30 * 86_400)?,
            None => d.unreferenced_after,
        },
        quota_bytes: match quota_mb {
            Some(mb) => mb.saturating_mul(1 << 20),
            None => d.quota_bytes,
        },
    })
}
