//! The `Driver` seam: how an agent turns an instance spec into a running instance.
//!
//! The agent's supervisor (`crate::supervisor`) decides *what* should happen to an
//! instance (start it, stop it, reimage it…) and calls a driver to *do* it. A driver knows
//! nothing about scale sets, the store or the API: it gets an [`InstanceSpec`] and works
//! on this host only. Implementations: `process` (default), `qemu` (real VMs), `fake`
//! (tests); `multi` routes each instance to one of them by its image kind. The two real
//! drivers share one runtime for their per-instance slots and state files (`slot`) and
//! one view of `/proc` (`procfs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use shoal_model::records::HostPeer;

pub mod fake;
mod launch;
pub mod multi;
pub mod process;
mod procfs;
pub mod qemu;
pub(crate) mod slot;

/// Identifies one instance on this host; stable for the instance's life, safe as a
/// file name (e.g. `00000000-0000-0000-0000-000000000000.demo.web.3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceKey(pub String);

impl std::fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a driver needs to run one instance. Built by the agent from the desired
/// instance record; a driver must not need anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub key: InstanceKey,
    /// Scale set name and instance id, for the environment (`SHOAL_VMSS`, `SHOAL_INSTANCE_ID`).
    pub vmss: String,
    pub instance_id: String,
    /// Directory holding the unpacked image bundle (read-only: copy, never modify).
    pub image_dir: PathBuf,
    /// Process images: the command line, run by `/bin/sh -c` in the instance's directory
    /// (a plain `./program args` line is exec'd directly, as the shell would have run it).
    pub command: String,
    /// The port the workload listens on (exported as `PORT`).
    pub port: u16,
    /// Size limits from the SKU.
    pub vcpus: u32,
    pub memory_mb: u64,
    /// Decoded `osProfile.customData`, if any (the driver writes it to a file and points
    /// `SHOAL_CUSTOM_DATA` at it).
    pub custom_data: Option<Vec<u8>>,
    /// Base URL of the agent's metadata service as reachable from the host (e.g.
    /// `http://127.0.0.1:7071`). A driver whose instances have their own network rewrites
    /// the host part to an address they can reach (see [`Driver::metadata_addrs`]) before
    /// exporting it as `SHOAL_METADATA_ENDPOINT`.
    pub metadata_endpoint: String,
    /// Extra environment variables. [`IMAGE_KIND_ENV`] among them says what kind of
    /// image this is (see [`InstanceSpec::image_kind`]).
    pub env: Vec<(String, String)>,
}

/// The variable of [`InstanceSpec::env`] naming the image kind ("process" or "vm").
///
/// The kind travels in the environment rather than in a field of its own so that the
/// spec keeps one shape for every driver (and every test that builds one); a process
/// instance simply sees it as `SHOAL_IMAGE_KIND=process`.
pub const IMAGE_KIND_ENV: &str = "SHOAL_IMAGE_KIND";

impl InstanceSpec {
    /// "process" (also when unsaid) or "vm". For a VM image, [`InstanceSpec::command`] is
    /// extra kernel command line and [`InstanceSpec::image_dir`] holds `kernel`, `initrd`
    /// and/or `disk` (see [`qemu`]).
    pub fn image_kind(&self) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == IMAGE_KIND_ENV)
            .map_or("process", |(_, v)| v.as_str())
    }
}

/// A started instance.
pub struct Running {
    pub pid: u32,
    /// Where the workload can be reached from this host (address and port).
    pub endpoint: SocketAddr,
    /// Resolves when the instance's main process exits (for any reason), with a short
    /// description of how it ended (e.g. "exited with status 1", "killed by signal 9").
    pub exited: BoxFuture<'static, String>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("pid", &self.pid)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// An instance found on this host when the agent starts (left by a previous run).
#[derive(Debug)]
pub struct Recovered {
    pub key: InstanceKey,
    /// The spec it was last started or provisioned with.
    pub spec: InstanceSpec,
    /// `Some` when its process is still alive (adopted, not restarted).
    pub running: Option<Running>,
}

/// Resource usage of one instance, sampled now. Counters are cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_time_ns: u64,
    pub memory_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

/// What the host could do for an instance's limits and network, for the instance view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// e.g. "cgroup v1", "cgroup v2", or a sentence saying why limits are not enforced.
    pub limits: String,
    /// e.g. "network namespace" or "host network, own port".
    pub network: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("Image for instance {key} is unusable: {reason}")]
    Image { key: InstanceKey, reason: String },
    #[error("Could not start instance {key}: {reason}")]
    Start { key: InstanceKey, reason: String },
    #[error("No network address left for instance {key}")]
    NoAddress { key: InstanceKey },
    #[error("Instance {key} is unknown to this driver")]
    Unknown { key: InstanceKey },
    #[error("Driver I/O failed for instance {key}")]
    Io {
        key: InstanceKey,
        #[source]
        source: std::io::Error,
    },
}

/// The instance lifecycle on one host. Every method is idempotent: calling it again
/// after it succeeded (or after a crash half-way) converges to the same state.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// "process", "qemu", "fake".
    fn kind(&self) -> &'static str;

    /// What limits/network isolation this host gives instances.
    fn capabilities(&self) -> Capabilities;

    /// Addresses on which the agent must also serve its metadata endpoint (same port as
    /// on loopback) so instances can reach it from their own network, e.g. the gateway
    /// address of namespaced instances. Called once after the driver is set up.
    fn metadata_addrs(&self) -> Vec<std::net::IpAddr> {
        Vec::new()
    }

    /// The address of its own that instance `key` has (namespaced instances), if any: the
    /// agent endpoint lets an instance ask only about itself.
    async fn private_address(&self, _key: &InstanceKey) -> Option<std::net::IpAddr> {
        None
    }

    /// How many instances can have an address (or port) of their own here at once.
    fn max_instances(&self) -> Option<u64> {
        None
    }

    /// The range instances get their own addresses from (`10.200.1.0/24`), recorded
    /// with the host so other hosts route to it; `None` when they share the host's.
    fn subnet(&self) -> Option<String> {
        None
    }

    /// Makes instances on the other hosts `peers` reachable from this host and its
    /// instances (routes through each peer's address). Called with the whole list
    /// whenever the server sends it; what failed comes back in words.
    fn route_peers(&self, _peers: &[HostPeer]) -> Result<(), String> {
        Ok(())
    }

    /// Creates the instance's disk (working directory) from its image, unless one exists.
    async fn provision(&self, spec: &InstanceSpec) -> Result<(), DriverError>;

    /// Boots the provisioned instance (allocating its address if it has none) and
    /// returns once its main process is spawned. Fails if it is already running.
    async fn start(&self, spec: &InstanceSpec) -> Result<Running, DriverError>;

    /// Stops the instance: SIGTERM (or ACPI power-down), then a hard kill after `grace`.
    /// Keeps the disk. With `release_address` (deallocate) the address/port is freed too.
    /// Stopping a stopped instance succeeds.
    async fn stop(
        &self,
        key: &InstanceKey,
        grace: Duration,
        release_address: bool,
    ) -> Result<(), DriverError>;

    /// Replaces the disk with a fresh copy of `spec`'s image. The instance is stopped.
    async fn reimage(&self, spec: &InstanceSpec) -> Result<(), DriverError>;

    /// Stops the instance if needed and removes everything it had on this host (disk,
    /// address, logs, limits). Destroying an unknown instance succeeds.
    async fn destroy(&self, key: &InstanceKey) -> Result<(), DriverError>;

    /// Instances left on this host by a previous run, alive or not.
    async fn recover(&self) -> Result<Vec<Recovered>, DriverError>;

    /// Current resource usage, if the instance is running.
    async fn usage(&self, key: &InstanceKey) -> Result<Option<Usage>, DriverError>;

    /// Whether a started instance accepts connections on `endpoint` yet. The default
    /// connects once; a driver whose forwarding accepts connections before the instance
    /// does (QEMU's user network) checks further.
    async fn ready(&self, _key: &InstanceKey, endpoint: SocketAddr) -> bool {
        matches!(
            tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(endpoint)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// What to tell a user whose instance never listened on its port (appended to the
    /// boot-timeout message), e.g. the guest port and the last console line of a VM.
    async fn boot_hint(&self, _key: &InstanceKey) -> Option<String> {
        None
    }

    /// What limits/network isolation instances of image `kind` get here (for the
    /// instance view). Drivers that run one kind answer [`Driver::capabilities`].
    fn capabilities_for(&self, _kind: &str) -> Capabilities {
        self.capabilities()
    }

    /// The file receiving the instance's console output (stdout and stderr).
    fn log_path(&self, key: &InstanceKey) -> PathBuf;
}

/// For a unit test that cannot run on this host: prints `SKIPPED: <test>: <reason>` and the
/// test returns; with `SHOAL_REQUIRE_ALL=1` (CI: root, QEMU installed) it fails instead,
/// so CI proves every path ran. The line goes to stderr directly (the harness captures
/// `eprintln!` of passing tests), so a plain `cargo test` shows it.
#[cfg(test)]
pub(crate) fn skip_or_fail(test: &str, reason: &str) {
    use std::io::Write;
    if std::env::var("SHOAL_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test} cannot run here: {reason} (SHOAL_REQUIRE_ALL=1 requires every test to run)");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {test}: {reason}");
}
