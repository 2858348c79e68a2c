//! The process driver: every instance is a process tree on this host, started from a
//! private copy of its image bundle.
//!
//! Data enters as [`InstanceSpec`]s through the [`Driver`] methods and lives on disk
//! under `<root>/<key>/` (see `disk.rs`): the instance's working directory, its console
//! log, its custom data and a state file (`state.rs`) naming its process (pid + start
//! time) and network allocation. Nothing important lives only in memory: after the agent
//! restarts, [`Driver::recover`] rebuilds everything from those files and adopts the
//! processes still alive. The slot plumbing (state files, locks, adoption, the order of
//! each operation) is the runtime both real drivers share (`driver/slot.rs`); this module
//! adds what is particular to processes.
//!
//! A started instance is `/bin/sh -c <command>` (or, for a plain `./program args` line,
//! the program itself) in its own session (so it outlives the agent), with a clean environment, limits from cgroups (`cgroups.rs`) and either its
//! own network namespace or a host port (`net.rs`, `netns.rs`, `netlink.rs`); `spawn.rs`
//! boots it. Stopping signals the whole process group: SIGTERM, then SIGKILL after the
//! grace period.

mod cgroups;
mod claims;
mod disk;
mod mounts;
mod nat;
mod net;
mod netlink;
mod netns;
mod nsthread;
mod spawn;
pub mod state;
pub mod users;
mod warm;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal_model::records::HostPeer;

use super::procfs::{self, WaitEnd};
use super::slot::{self, error_chain, io_err, Machine, Proc, ProcessRecord, Slot, Slots};
use super::{
    Capabilities, Driver, DriverError, InstanceKey, InstanceSpec, Recovered, Running, Usage,
};
use cgroups::Cgroups;
use disk::{DiskKind, InstanceDir};
use net::{NetError, Network};
pub use net::{NetworkMode, Subnet, DEFAULT_NETNS_DIR};
use state::{InstanceState, NetAlloc};
use warm::Warm;

/// How the process driver runs instances on this host.
#[derive(Debug, Clone)]
pub struct ProcessDriverConfig {
    /// Where instance directories live, e.g. `<data-dir>/agent/instances`.
    pub root: PathBuf,
    /// Host ports, namespaces, or the best this host allows.
    pub network: NetworkMode,
    /// Host-port mode: the ports handed to instances.
    pub port_range: RangeInclusive<u16>,
    /// Namespace mode: the instances' addresses (the first one is the gateway).
    pub subnet: Subnet,
    /// Namespace mode: where namespaces are bind-mounted.
    pub netns_dir: PathBuf,
    /// The cgroup (in every hierarchy) under which instance cgroups are made. Each
    /// install needs its own ([`install_cgroup_parent`]): an instance's cgroup is named
    /// by its key alone, and whatever runs in it is killed before the instance starts.
    pub cgroup_parent: String,
    /// The parent an older agent made instance cgroups under: instances recovered
    /// running there are moved into `cgroup_parent` (see [`Cgroups::adopt_from`]).
    pub legacy_cgroup_parent: Option<String>,
    /// Grace period before SIGKILL when `destroy` or `reimage` stops a running instance.
    pub destroy_grace: Duration,
    /// Run each instance as a user of its own ([`users`]); possible only when the agent
    /// runs as root, and then the default.
    pub instance_users: bool,
    /// Namespace mode: instances reach beyond Shoal's hosts through this host's address
    /// (`nat`; needs nftables). On by default.
    pub outbound_nat: bool,
    /// Namespace mode: network namespaces kept ready ahead of need (`warm.rs`); 0 = none.
    pub warm_namespaces: usize,
}

impl ProcessDriverConfig {
    /// Defaults: automatic networking, ports 20000–29999, subnet 10.200.0.0/16,
    /// namespaces under `/run/shoal/netns`, cgroup parent `shoal`, 5 s grace, instances
    /// as users of their own when the agent is root.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            network: NetworkMode::Auto,
            port_range: 20_000..=29_999,
            subnet: Subnet::DEFAULT,
            netns_dir: PathBuf::from(DEFAULT_NETNS_DIR),
            cgroup_parent: "shoal".to_owned(),
            legacy_cgroup_parent: None,
            destroy_grace: Duration::from_secs(5),
            // SAFETY: geteuid has no preconditions.
            instance_users: unsafe { libc::geteuid() } == 0,
            outbound_nat: true,
            warm_namespaces: 0,
        }
    }
}

/// The cgroup parent of the install whose instances live under `root`: read from
/// `<root>/.cgroup-parent`, or made once as `<base>-<8 random hex digits>` and written
/// there. Two installs on one host (two data directories, or test servers side by side)
/// would otherwise share `<base>/<key>` for instances of the same names, and starting
/// one instance kills whatever the other runs in that cgroup.
pub fn install_cgroup_parent(root: &Path, base: &str) -> io::Result<String> {
    let file = root.join(".cgroup-parent");
    match std::fs::read_to_string(&file) {
        Ok(name) if is_cgroup_name(name.trim()) => return Ok(name.trim().to_owned()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a cgroup name (letters, digits, '-', '_', '.'); remove it to make a new one",
                    file.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))?;
    let name = format!("{base}-{:08x}", u32::from_be_bytes(bytes));
    std::fs::create_dir_all(root)?;
    crate::driver::slot::write_atomic(&file, format!("{name}\n").as_bytes())?;
    Ok(name)
}

fn is_cgroup_name(name: &str) -> bool {
    state::is_plain_name(name, 255)
}

/// Why the driver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProcessDriverError {
    #[error("Cannot create the instances directory {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot set up instance networking")]
    Network(#[source] NetError),
}

/// The default driver. Cheap to share: clones are handles to one driver.
#[derive(Clone)]
pub struct ProcessDriver {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProcessDriverConfig,
    /// Shared with blocking tasks (netlink, mounts).
    network: Arc<Network>,
    cgroups: Cgroups,
    slots: Slots<InstanceState>,
    /// Overlay mounts or copies of the image (see `disk.rs`).
    disks: DiskKind,
    /// Where overlay disks' layers come from.
    layers: Arc<disk::Layers>,
}

impl ProcessDriver {
    /// How many network namespaces the warm pool holds ready now (0 when off).
    pub fn warm_namespaces_ready(&self) -> usize {
        self.inner.network.warm_ready()
    }

    /// Sets up the driver: the instances directory, cgroups and networking (which may
    /// probe network namespaces; that takes a few milliseconds).
    pub fn new(config: ProcessDriverConfig) -> Result<Self, ProcessDriverError> {
        std::fs::create_dir_all(&config.root).map_err(|source| ProcessDriverError::Root {
            path: config.root.clone(),
            source,
        })?;
        crate::driver::slot::spread_subdirs(&config.root);
        let network = Network::setup(
            config.network,
            config.port_range.clone(),
            config.subnet,
            config.netns_dir.clone(),
            config.outbound_nat,
            Warm::new(
                config.warm_namespaces,
                Some(config.root.join(".warm-namespaces")),
            ),
            claims::Claims::open(Some(config.root.join(".netns-journal"))),
        )
        .map_err(ProcessDriverError::Network)?;
        let cgroups = Cgroups::detect(&config.cgroup_parent);
        let (disks, disks_why) = DiskKind::detect(&config.root);
        let layers = Arc::new(disk::Layers::new(&config.root));
        if !cgroups.enforced() {
            tracing::warn!(reason = %cgroups.describe(), "CPU and memory limits of instance sizes are not enforced");
        }
        tracing::info!(network = %network.describe(), limits = %cgroups.describe(), disks = %disks_why, root = %config.root.display(), "Process driver ready");
        Ok(Self {
            inner: Arc::new(Inner {
                slots: Slots::new(config.root.clone()),
                config,
                network: Arc::new(network),
                cgroups,
                disks,
                layers,
            }),
        })
    }

    /// The network mode in effect (`Auto` resolved).
    pub fn network_mode(&self) -> NetworkMode {
        self.inner.network.mode()
    }

    /// The instance directory of `key` (`<root>/<key>`).
    pub fn instance_dir(&self, key: &InstanceKey) -> PathBuf {
        InstanceDir::new(&self.inner.config.root, key).dir
    }
}

fn start_err(key: &InstanceKey, e: &dyn std::error::Error) -> DriverError {
    DriverError::Start {
        key: key.clone(),
        reason: error_chain(e),
    }
}

fn net_err(key: &InstanceKey, e: NetError) -> DriverError {
    match e {
        NetError::Exhausted => DriverError::NoAddress { key: key.clone() },
        other => start_err(key, &other),
    }
}

/// Runs blocking work (copies, netlink, mounts) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)
}

impl Inner {
    fn dir(&self, key: &InstanceKey) -> InstanceDir {
        InstanceDir::new(&self.config.root, key)
    }

    /// The user the instance `key` runs as, when it runs as one of its own.
    fn owner(&self, key: &InstanceKey) -> Option<u32> {
        self.config
            .instance_users
            .then(|| users::instance_uid(&key.0))
    }

    /// When an instance's main process is gone, whatever it started goes too (as when a
    /// VM dies): its process group and its cgroup. Otherwise a child that outlived a
    /// killed shell would keep the port and break every restart.
    fn kill_leftovers(&self, key: &InstanceKey, leader: ProcessRecord) {
        let mut killed = procfs::kill_leftovers(leader.pid, leader.start_time);
        for pid in self.cgroups.limits_for(&key.0).pids() {
            if procfs::kill_pid(pid, libc::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        if killed > 0 {
            tracing::info!(instance = %key, killed, "killed processes left behind by the instance's main process");
        }
    }

    /// Moves recovered instances out of the cgroups an older agent made under `legacy`.
    fn adopt_cgroups(&self, legacy: &str, found: &[Recovered]) {
        if legacy == self.config.cgroup_parent || !self.cgroups.enforced() {
            return;
        }
        let old = self.cgroups.with_parent(legacy);
        for r in found {
            let leader = r.running.as_ref().map(|run| run.pid);
            match self
                .cgroups
                .adopt_from(&old, &r.key.0, leader, r.spec.vcpus, r.spec.memory_mb)
            {
                Ok(0) => {}
                Ok(moved) => {
                    tracing::info!(instance = %r.key, moved, from = legacy, to = %self.config.cgroup_parent, "Moved an instance's processes into this install's cgroups")
                }
                Err(e) => {
                    tracing::warn!(instance = %r.key, error = %error_chain(&e), "Cannot move an instance out of an older agent's cgroups; its limits stay where they were")
                }
            }
        }
    }

    async fn make_disk(&self, spec: &InstanceSpec, dir: &InstanceDir) -> Result<(), DriverError> {
        let (d, image, kind) = (dir.clone(), spec.image_dir.clone(), self.disks);
        let layers = Arc::clone(&self.layers);
        let owner = self.owner(&spec.key);
        let result = blocking(move || disk::create_disk(&d, &image, kind, &layers, owner))
            .await
            .and_then(|r| r);
        result.map_err(|e| DriverError::Image {
            key: spec.key.clone(),
            reason: format!(
                "cannot make the instance's disk from {}: {e}",
                spec.image_dir.display()
            ),
        })
    }
}

#[async_trait]
impl Machine for Inner {
    type State = InstanceState;
    const NOUN: &'static str = "instance";
    const PID_LABEL: &'static str = "pid";

    fn slots(&self) -> &Slots<InstanceState> {
        &self.slots
    }

    fn valid_key(key: &InstanceKey) -> bool {
        disk::is_valid_key(key)
    }

    fn destroy_grace(&self) -> Duration {
        self.config.destroy_grace
    }

    fn claim(&self, state: &InstanceState) {
        if let Some(alloc) = &state.net {
            self.network.adopt(alloc);
        }
    }

    fn adopted_exit(_: WaitEnd) -> String {
        "exited (status unknown: adopted process)".to_owned()
    }

    fn process_gone(&self, key: &InstanceKey, process: ProcessRecord) {
        self.kill_leftovers(key, process);
    }

    /// Creates the directory, state file and disk unless they exist; updates the spec.
    async fn provision(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<InstanceState>,
    ) -> Result<(), DriverError> {
        let key = &spec.key;
        if !disk::is_valid_key(key) {
            return Err(io_err(
                key,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "instance key is not a valid file name",
                ),
            ));
        }
        self.record_spec(spec, slot)?;
        let dir = self.dir(key);
        let ready = disk::disk_ready(&dir, &spec.image_dir, &self.layers, self.owner(key));
        if !ready.map_err(|e| io_err(key, e))? {
            self.make_disk(spec, &dir).await?;
        }
        disk::write_custom_data(&dir, spec.custom_data.as_deref()).map_err(|e| io_err(key, e))
    }

    async fn boot(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<InstanceState>,
    ) -> Result<Running, DriverError> {
        self.spawn(spec, slot).await
    }

    /// SIGTERM to the process group, SIGKILL after `grace`, and to whatever is left in
    /// the instance's cgroup.
    async fn halt(&self, key: &InstanceKey, p: &Proc, grace: Duration) -> Result<(), DriverError> {
        let pgid = p.pid();
        let limits = self.cgroups.limits_for(&key.0);
        procfs::kill_group(pgid, libc::SIGTERM).map_err(|e| io_err(key, e))?;
        if !p.wait(grace).await {
            tracing::info!(instance = %key, pid = pgid, ?grace, "Instance ignored SIGTERM; killing it");
        }
        // Also after a clean exit: children that stayed behind go with their leader.
        procfs::kill_group(pgid, libc::SIGKILL).map_err(|e| io_err(key, e))?;
        for pid in limits.pids() {
            let _ = procfs::kill_pid(pid, libc::SIGKILL);
        }
        if !p.wait(Duration::from_secs(10)).await {
            return Err(io_err(
                key,
                io::Error::new(io::ErrorKind::TimedOut, "process survived SIGKILL for 10 s"),
            ));
        }
        // An overlay disk is mounted only while its instance runs (the next start mounts
        // it again over the same upper layer): a stopped agent leaves no mounts behind.
        if let Err(e) = disk::unmount(&self.dir(key).disk()) {
            tracing::warn!(instance = %key, error = %e, "Cannot unmount the instance's disk");
        }
        Ok(())
    }

    async fn release(
        &self,
        key: &InstanceKey,
        state: &mut InstanceState,
    ) -> Result<bool, DriverError> {
        let Some(alloc) = state.net.clone() else {
            return Ok(false);
        };
        self.network
            .release(&alloc)
            .await
            .map_err(|e| start_err(key, &e))?;
        state.net = None;
        Ok(true)
    }

    async fn remove_disk(&self, key: &InstanceKey) -> Result<(), DriverError> {
        let dir = self.dir(key);
        blocking(move || disk::remove_disk(&dir))
            .await
            .and_then(|r| r)
            .map_err(|e| io_err(key, e))
    }

    async fn remove_outside(&self, key: &InstanceKey) {
        self.cgroups.remove(&key.0).await;
        // The directory goes next: an overlay disk is unmounted first, or removing it
        // would delete through the mount.
        if let Err(e) = disk::unmount(&self.dir(key).disk()) {
            tracing::warn!(instance = %key, error = %e, "Cannot unmount the instance's disk");
        }
    }

    fn endpoint(&self, state: &InstanceState) -> Option<SocketAddr> {
        Some(match &state.net {
            Some(alloc) => self.network.endpoint(alloc, state.spec.port).addr,
            None => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, state.spec.port)),
        })
    }

    fn usage(&self, key: &InstanceKey, state: &InstanceState, pid: u32) -> Usage {
        let (cpu_time_ns, memory_bytes) = match self.cgroups.usage(&key.0) {
            Some(u) => u,
            None => (
                procfs::cpu_ns(pid).unwrap_or(0),
                procfs::rss_bytes(pid).unwrap_or(0),
            ),
        };
        let namespaced = matches!(state.net, Some(NetAlloc::Namespace { .. }));
        let (net_rx_bytes, net_tx_bytes) = if namespaced {
            procfs::net_bytes(pid).unwrap_or((0, 0))
        } else {
            (0, 0)
        };
        Usage {
            cpu_time_ns,
            memory_bytes,
            net_rx_bytes,
            net_tx_bytes,
        }
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            limits: self.inner.cgroups.describe(),
            network: self.inner.network.describe(),
        }
    }

    fn metadata_addrs(&self) -> Vec<std::net::IpAddr> {
        self.inner.network.metadata_addrs()
    }

    fn subnet(&self) -> Option<String> {
        self.inner.network.subnet().map(|s| s.to_string())
    }

    fn max_instances(&self) -> Option<u64> {
        Some(match self.inner.network.subnet() {
            Some(subnet) => u64::from(subnet.hosts()),
            None => {
                let r = &self.inner.config.port_range;
                u64::from(r.end().saturating_sub(*r.start())) + 1
            }
        })
    }

    async fn private_address(&self, key: &InstanceKey) -> Option<std::net::IpAddr> {
        match slot::state_of(&*self.inner, key).await?.net? {
            NetAlloc::Namespace { address, .. } => Some(address.into()),
            NetAlloc::HostPort { .. } => None,
        }
    }

    fn route_peers(&self, peers: &[HostPeer]) -> Result<(), String> {
        self.inner.network.route_peers(peers)
    }

    async fn provision(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        slot::provision(&*self.inner, spec).await
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Running, DriverError> {
        slot::start(&*self.inner, spec).await
    }

    async fn stop(
        &self,
        key: &InstanceKey,
        grace: Duration,
        release_address: bool,
    ) -> Result<(), DriverError> {
        slot::stop(&*self.inner, key, grace, release_address).await
    }

    async fn reimage(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        slot::reimage(&*self.inner, spec).await
    }

    async fn destroy(&self, key: &InstanceKey) -> Result<(), DriverError> {
        slot::destroy(&*self.inner, key).await
    }

    async fn recover(&self) -> Result<Vec<Recovered>, DriverError> {
        let found = slot::recover(&*self.inner).await?;
        if let Some(legacy) = &self.inner.config.legacy_cgroup_parent {
            self.inner.adopt_cgroups(legacy, &found);
        }
        // Recovered instances have marked their addresses: the pool may adopt the rest.
        self.inner.network.start_warm_and_sweep();
        Ok(found)
    }

    async fn usage(&self, key: &InstanceKey) -> Result<Option<Usage>, DriverError> {
        slot::usage(&*self.inner, key).await
    }

    fn log_path(&self, key: &InstanceKey) -> PathBuf {
        self.inner.dir(key).console_log()
    }
}
