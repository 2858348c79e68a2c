//! The process driver: every instance is a process tree on this host, started from a
//! private copy of its image bundle.
//!
//! Data enters as [`InstanceSpec`]s through the [`Driver`] methods and lives on disk
//! under `<root>/<key>/` (see `disk.rs`): the instance's working directory, its console
//! log, its custom data and a state file (`state.rs`) naming its process (pid + start
//! time) and network allocation. Nothing important lives only in memory: after the agent
//! restarts, [`Driver::recover`] rebuilds everything from those files and adopts the
//! processes still alive.
//!
//! A started instance is `/bin/sh -c <command>` in its own session (so it outlives the
//! agent), with a clean environment, limits from cgroups (`cgroups.rs`) and either its
//! own network namespace or a host port (`net.rs`, `netns.rs`, `netlink.rs`). Stopping
//! signals the whole process group: SIGTERM, then SIGKILL after the grace period.

mod cgroups;
mod disk;
mod net;
mod netlink;
mod netns;
mod procfs;
pub mod state;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{watch, Mutex as AsyncMutex};
use tokio::task::JoinHandle;

use super::{
    Capabilities, Driver, DriverError, InstanceKey, InstanceSpec, Recovered, Running, Usage,
};
use cgroups::Cgroups;
use disk::InstanceDir;
use net::{error_chain, NetError, Network};
pub use net::{NetworkMode, Subnet, DEFAULT_NETNS_DIR};
use state::{InstanceState, NetAlloc, ProcessRecord};

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
    /// The cgroup (in every hierarchy) under which instance cgroups are made.
    pub cgroup_parent: String,
    /// Grace period before SIGKILL when `destroy` or `reimage` stops a running instance.
    pub destroy_grace: Duration,
}

impl ProcessDriverConfig {
    /// Defaults: automatic networking, ports 20000–29999, subnet 10.200.0.0/16,
    /// namespaces under `/run/shoal/netns`, cgroup parent `shoal`, 5 s grace.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            network: NetworkMode::Auto,
            port_range: 20_000..=29_999,
            subnet: Subnet::DEFAULT,
            netns_dir: PathBuf::from(DEFAULT_NETNS_DIR),
            cgroup_parent: "shoal".to_owned(),
            destroy_grace: Duration::from_secs(5),
        }
    }
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
    slots: Mutex<HashMap<InstanceKey, Arc<AsyncMutex<Slot>>>>,
    /// Namespace setups run one at a time: the kernel serializes them on its rtnl lock
    /// anyway, and many at once only add contention (measured: 1000 concurrent setups
    /// took ~10 ms each, one at a time ~2 ms).
    netns_setup: tokio::sync::Semaphore,
}

/// What the driver knows about one instance; its lock serializes operations on it.
#[derive(Default)]
struct Slot {
    /// Loaded from the state file on first use.
    state: Option<InstanceState>,
    proc_: Option<Proc>,
}

/// A live main process and the task waiting for it to exit.
struct Proc {
    pid: u32,
    exited: watch::Receiver<Option<String>>,
    waiter: JoinHandle<()>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The process itself keeps running (it is in its own session); only our waiter
        // goes. A child's `tokio::process::Child` is then reaped by tokio's orphan queue.
        self.waiter.abort();
    }
}

impl Proc {
    fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    fn exited_future(&self) -> BoxFuture<'static, String> {
        let mut rx = self.exited.clone();
        async move {
            loop {
                if let Some(how) = rx.borrow_and_update().clone() {
                    return how;
                }
                if rx.changed().await.is_err() {
                    if let Some(how) = rx.borrow().clone() {
                        return how;
                    }
                    // The driver was dropped before the process ended: nothing was
                    // observed, so never claim an exit.
                    futures::future::pending::<()>().await;
                }
            }
        }
        .boxed()
    }

    /// Waits until the process has exited, at most `timeout`; true when it has.
    async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.exited.clone();
        let done = tokio::time::timeout(timeout, async {
            loop {
                if rx.borrow_and_update().is_some() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        done.is_ok() && self.has_exited()
    }
}

impl ProcessDriver {
    /// Sets up the driver: the instances directory, cgroups and networking (which may
    /// probe network namespaces; that takes a few milliseconds).
    pub fn new(config: ProcessDriverConfig) -> Result<Self, ProcessDriverError> {
        std::fs::create_dir_all(&config.root).map_err(|source| ProcessDriverError::Root {
            path: config.root.clone(),
            source,
        })?;
        let network = Network::setup(
            config.network,
            config.port_range.clone(),
            config.subnet,
            config.netns_dir.clone(),
        )
        .map_err(ProcessDriverError::Network)?;
        let cgroups = Cgroups::detect(&config.cgroup_parent);
        if !cgroups.enforced() {
            tracing::warn!(reason = %cgroups.describe(), "CPU and memory limits of instance sizes are not enforced");
        }
        tracing::info!(network = %network.describe(), limits = %cgroups.describe(), root = %config.root.display(), "Process driver ready");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                network: Arc::new(network),
                cgroups,
                slots: Mutex::new(HashMap::new()),
                netns_setup: tokio::sync::Semaphore::new(1),
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

fn io_err(key: &InstanceKey, source: io::Error) -> DriverError {
    DriverError::Io {
        key: key.clone(),
        source,
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

/// "exited with status 1", "killed by signal 9 (SIGKILL)".
fn describe_exit(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            format!("killed by signal {sig}{name}")
        }
        None => format!("ended ({status})"),
    }
}

impl Inner {
    fn dir(&self, key: &InstanceKey) -> InstanceDir {
        InstanceDir::new(&self.config.root, key)
    }

    fn slot(&self, key: &InstanceKey) -> Arc<AsyncMutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.clone()).or_default().clone()
    }

    fn forget(&self, key: &InstanceKey) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Loads the state file into `slot` if not done yet; `Ok(false)` when there is none.
    fn load(&self, key: &InstanceKey, slot: &mut Slot) -> Result<bool, DriverError> {
        if slot.state.is_some() {
            return Ok(true);
        }
        let path = self.dir(key).state_file();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state = InstanceState::decode(&bytes, &key.0)
                    .map_err(|e| io_err(key, io::Error::new(io::ErrorKind::InvalidData, e)))?;
                if let Some(alloc) = &state.net {
                    self.network.adopt(alloc);
                }
                slot.state = Some(state);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(key, e)),
        }
    }

    fn save(&self, key: &InstanceKey, state: &InstanceState) -> Result<(), DriverError> {
        disk::write_atomic(&self.dir(key).state_file(), &state.encode()).map_err(|e| io_err(key, e))
    }

    /// Brings `slot.proc_` in line with reality: drops a waiter whose process ended, and
    /// adopts a live process named by the state file (after an agent restart).
    fn refresh(&self, slot: &mut Slot) {
        if slot.proc_.as_ref().is_some_and(Proc::has_exited) {
            slot.proc_ = None;
            if let Some(st) = slot.state.as_mut() {
                if let Some(rec) = st.process.take() {
                    self.kill_leftovers(&st.spec.key, rec);
                }
            }
        }
        if slot.proc_.is_some() {
            return;
        }
        let Some(st) = slot.state.as_mut() else {
            return;
        };
        let Some(rec) = st.process else { return };
        if procfs::is_same_alive(rec.pid, rec.start_time) {
            slot.proc_ = Some(adopt(rec));
        } else {
            st.process = None;
            self.kill_leftovers(&st.spec.key, rec);
        }
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

    /// Creates the directory, state file and disk unless they exist; updates the spec.
    async fn provision_locked(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot,
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
        self.load(key, slot)?;
        let dir = self.dir(key);
        std::fs::create_dir_all(&dir.dir).map_err(|e| io_err(key, e))?;
        // The state file comes first, so a crash mid-copy leaves an instance that
        // `recover` knows (and a later provision finishes).
        if slot.state.as_ref().is_none_or(|st| st.spec != *spec) {
            let mut state = slot
                .state
                .clone()
                .unwrap_or_else(|| InstanceState::new(spec.clone()));
            state.spec = spec.clone();
            self.save(key, &state)?;
            slot.state = Some(state);
        }
        if !dir.disk().is_dir() {
            self.copy_image(spec, &dir).await?;
        }
        disk::write_custom_data(&dir, spec.custom_data.as_deref()).map_err(|e| io_err(key, e))
    }

    async fn copy_image(&self, spec: &InstanceSpec, dir: &InstanceDir) -> Result<(), DriverError> {
        let (d, image) = (dir.clone(), spec.image_dir.clone());
        let result = blocking(move || disk::create_disk(&d, &image))
            .await
            .and_then(|r| r);
        result.map_err(|e| DriverError::Image {
            key: spec.key.clone(),
            reason: format!(
                "cannot copy {} into the instance's disk: {e}",
                spec.image_dir.display()
            ),
        })
    }

    /// Stops the instance in `slot` (if running) and optionally releases its network.
    async fn stop_locked(
        &self,
        key: &InstanceKey,
        slot: &mut Slot,
        grace: Duration,
        release_address: bool,
    ) -> Result<(), DriverError> {
        self.refresh(slot);
        if let Some(p) = slot.proc_.take() {
            let pgid = p.pid;
            let limits = self.cgroups.limits_for(&key.0);
            procfs::kill_group(pgid, libc::SIGTERM).map_err(|e| io_err(key, e))?;
            if !p.wait(grace).await {
                tracing::info!(instance = %key, pid = p.pid, ?grace, "Instance ignored SIGTERM; killing it");
            }
            // Also after a clean exit: children that stayed behind go with their leader.
            procfs::kill_group(pgid, libc::SIGKILL).map_err(|e| io_err(key, e))?;
            for pid in limits.pids() {
                let _ = procfs::kill_pid(pid, libc::SIGKILL);
            }
            if !p.wait(Duration::from_secs(10)).await {
                slot.proc_ = Some(p);
                return Err(io_err(
                    key,
                    io::Error::new(io::ErrorKind::TimedOut, "process survived SIGKILL for 10 s"),
                ));
            }
        }
        let Some(state) = slot.state.as_mut() else {
            return Ok(());
        };
        let mut changed = state.process.take().is_some();
        if release_address {
            if let Some(alloc) = state.net.clone() {
                self.network
                    .release(&alloc)
                    .await
                    .map_err(|e| start_err(key, &e))?;
                state.net = None;
                changed = true;
            }
        }
        if changed {
            let state = state.clone();
            self.save(key, &state)?;
        }
        Ok(())
    }

    fn endpoint_of(&self, state: &InstanceState) -> SocketAddr {
        match &state.net {
            Some(alloc) => self.network.endpoint(alloc, state.spec.port).addr,
            None => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, state.spec.port)),
        }
    }

    async fn start_locked(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot,
    ) -> Result<Running, DriverError> {
        let key = &spec.key;
        self.load(key, slot)?;
        self.refresh(slot);
        if let Some(p) = &slot.proc_ {
            return Err(DriverError::Start {
                key: key.clone(),
                reason: format!("it is already running (pid {})", p.pid),
            });
        }
        // Nothing of a previous life may survive into this one (e.g. a process started
        // just before the agent was killed, whose pid never reached the state file).
        for pid in self.cgroups.limits_for(&key.0).pids() {
            let _ = procfs::kill_pid(pid, libc::SIGKILL);
        }
        self.provision_locked(spec, slot).await?;
        let dir = self.dir(key);
        let Some(state) = slot.state.as_mut() else {
            return Err(io_err(
                key,
                io::Error::other("state vanished after provisioning"),
            ));
        };

        // Network: keep the instance's allocation (stop keeps it), re-creating its
        // namespace if needed; allocate one if it has none or one of another mode.
        if let Some(alloc) = state.net.clone() {
            if self.network.fits(&alloc) {
                let net = Arc::clone(&self.network);
                let a = alloc.clone();
                let _permit = self.netns_setup.acquire().await;
                blocking(move || net.ensure(&a))
                    .await
                    .map_err(|e| io_err(key, e))?
                    .map_err(|e| net_err(key, e))?;
            } else {
                self.network
                    .release(&alloc)
                    .await
                    .map_err(|e| start_err(key, &e))?;
                state.net = None;
            }
        }
        if state.net.is_none() {
            let alloc = match self.network.mode() {
                // A bind check: no need for a blocking thread.
                NetworkMode::HostPorts => self.network.allocate(),
                _ => {
                    let net = Arc::clone(&self.network);
                    let _permit = self.netns_setup.acquire().await;
                    blocking(move || net.allocate())
                        .await
                        .map_err(|e| io_err(key, e))?
                }
            }
            .map_err(|e| net_err(key, e))?;
            // A namespace outlives a crash of the agent: record it before anything else
            // can fail, so it is found and removed later. A port needs no such care.
            let record_now = matches!(alloc, NetAlloc::Namespace { .. });
            state.net = Some(alloc);
            if record_now {
                let snapshot = state.clone();
                self.save(key, &snapshot)?;
            }
        }
        let Some(alloc) = state.net.clone() else {
            return Err(io_err(key, io::Error::other("network allocation vanished")));
        };
        let endpoint = self.network.endpoint(&alloc, spec.port);

        let limits = if self.cgroups.enforced() {
            self.cgroups
                .apply(&key.0, spec.vcpus, spec.memory_mb)
                .map_err(|e| start_err(key, &e))?
        } else {
            cgroups::Limits::default()
        };
        let cgroup_fds: Vec<OwnedFd> = limits.open_procs().map_err(|e| start_err(key, &e))?;
        let netns_fd: Option<OwnedFd> = match &endpoint.netns {
            Some(path) => Some(
                std::fs::File::open(path)
                    .map(OwnedFd::from)
                    .map_err(|e| start_err(key, &e))?,
            ),
            None => None,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.console_log())
            .map_err(|e| io_err(key, e))?;
        let log_err = log.try_clone().map_err(|e| io_err(key, e))?;

        let metadata = match endpoint.metadata_host {
            Some(ip) => net::rewrite_host(&spec.metadata_endpoint, ip),
            None => spec.metadata_endpoint.clone(),
        };
        let path_var = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&spec.command)
            .current_dir(dir.disk())
            .env_clear()
            .env("PATH", path_var)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PORT", endpoint.listen_port.to_string())
            .env("SHOAL_PRIVATE_IP", endpoint.private_ip.to_string())
            .env("SHOAL_INSTANCE_ID", &spec.instance_id)
            .env("SHOAL_VMSS", &spec.vmss)
            .env("SHOAL_CUSTOM_DATA", dir.custom_data())
            .env("SHOAL_METADATA_ENDPOINT", metadata)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(false);
        let ns_raw = netns_fd.as_ref().map(AsRawFd::as_raw_fd);
        let cg_raw: Vec<i32> = cgroup_fds.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: the hook runs in the forked child before exec and only makes
        // async-signal-safe system calls (setsid, setns, write) on descriptors that stay
        // open in the parent until `spawn` returns; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = ns_raw {
                    netns::join_in_child(fd)?;
                }
                cgroups::join_in_child(&cg_raw)
            });
        }
        let mut child = cmd.spawn().map_err(|e| start_err(key, &e))?;
        drop((netns_fd, cgroup_fds));
        let Some(pid) = child.id() else {
            return Err(DriverError::Start {
                key: key.clone(),
                reason: "the process ended before it could be observed".into(),
            });
        };
        // Our child cannot be reaped before `wait`, so its /proc entry is there.
        let start_time = procfs::start_time(pid).unwrap_or_else(|| {
            tracing::warn!(instance = %key, pid, "Cannot read the start time of a new process");
            0
        });
        state.process = Some(ProcessRecord { pid, start_time });
        let snapshot = state.clone();
        let (tx, rx) = watch::channel(None);
        let instance = key.clone();
        let waiter = tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("exit status unknown ({e})"),
            };
            tracing::debug!(%instance, pid, how = %how, "Instance process ended");
            let _ = tx.send(Some(how));
        });
        let p = Proc {
            pid,
            exited: rx,
            waiter,
        };
        let running = Running {
            pid,
            endpoint: endpoint.addr,
            exited: p.exited_future(),
        };
        slot.proc_ = Some(p);
        self.save(key, &snapshot)?;
        Ok(running)
    }
}

/// Adopts a live process we did not spawn in this run (or whose waiter was lost).
fn adopt(rec: ProcessRecord) -> Proc {
    let (tx, rx) = watch::channel(None);
    let waiter = tokio::spawn(async move {
        let how = procfs::wait_exit(rec.pid, rec.start_time).await;
        let _ = tx.send(Some(how));
    });
    Proc {
        pid: rec.pid,
        exited: rx,
        waiter,
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

    async fn provision(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let slot = self.inner.slot(&spec.key);
        let mut slot = slot.lock().await;
        self.inner.provision_locked(spec, &mut slot).await
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Running, DriverError> {
        if !disk::is_valid_key(&spec.key) {
            return Err(DriverError::Start {
                key: spec.key.clone(),
                reason: "instance key is not a valid file name".into(),
            });
        }
        let slot = self.inner.slot(&spec.key);
        let mut slot = slot.lock().await;
        self.inner.start_locked(spec, &mut slot).await
    }

    async fn stop(
        &self,
        key: &InstanceKey,
        grace: Duration,
        release_address: bool,
    ) -> Result<(), DriverError> {
        if !disk::is_valid_key(key) {
            return Ok(());
        }
        let slot = self.inner.slot(key);
        let mut slot = slot.lock().await;
        self.inner.load(key, &mut slot)?;
        self.inner
            .stop_locked(key, &mut slot, grace, release_address)
            .await
    }

    async fn reimage(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let key = &spec.key;
        let slot = self.inner.slot(key);
        let mut slot = slot.lock().await;
        self.inner.load(key, &mut slot)?;
        self.inner
            .stop_locked(key, &mut slot, self.inner.config.destroy_grace, false)
            .await?;
        // Without a disk, provisioning makes a fresh copy (a crash in between leaves no
        // disk, and the next provision or start copies again).
        let disk = self.inner.dir(key).disk();
        blocking(move || disk::remove_if_exists(&disk))
            .await
            .and_then(|r| r)
            .map_err(|e| io_err(key, e))?;
        self.inner.provision_locked(spec, &mut slot).await
    }

    async fn destroy(&self, key: &InstanceKey) -> Result<(), DriverError> {
        if !disk::is_valid_key(key) {
            return Ok(());
        }
        let slot_ref = self.inner.slot(key);
        let mut slot = slot_ref.lock().await;
        match self.inner.load(key, &mut slot) {
            Ok(_) => {
                self.inner
                    .stop_locked(key, &mut slot, self.inner.config.destroy_grace, true)
                    .await?
            }
            // An unreadable state file names no process or address we could clean up;
            // the directory still goes.
            Err(e) => {
                tracing::warn!(instance = %key, error = %error_chain(&e), "Destroying an instance whose state is unreadable")
            }
        }
        self.inner.cgroups.remove(&key.0).await;
        let dir = self.inner.dir(key).dir;
        blocking(move || disk::remove_if_exists(&dir))
            .await
            .and_then(|r| r)
            .map_err(|e| io_err(key, e))?;
        slot.state = None;
        drop(slot);
        self.inner.forget(key);
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<Recovered>, DriverError> {
        let root = self.inner.config.root.clone();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&InstanceKey(root.display().to_string()), e)),
        };
        let mut keys: Vec<InstanceKey> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(InstanceKey)
            .filter(disk::is_valid_key)
            .collect();
        keys.sort();
        let mut found = Vec::new();
        for key in keys {
            let slot = self.inner.slot(&key);
            let mut slot = slot.lock().await;
            match self.inner.load(&key, &mut slot) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(instance = %key, "Instance directory without a state file; leaving it alone");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(instance = %key, error = %error_chain(&e), "Skipping an instance with an unreadable state file");
                    continue;
                }
            }
            let had_process = slot.state.as_ref().is_some_and(|s| s.process.is_some());
            self.inner.refresh(&mut slot);
            let Some(state) = slot.state.clone() else {
                continue;
            };
            if had_process && state.process.is_none() {
                self.inner.save(&key, &state)?;
            }
            let running = slot.proc_.as_ref().map(|p| Running {
                pid: p.pid,
                endpoint: self.inner.endpoint_of(&state),
                exited: p.exited_future(),
            });
            found.push(Recovered {
                key,
                spec: state.spec,
                running,
            });
        }
        Ok(found)
    }

    async fn usage(&self, key: &InstanceKey) -> Result<Option<Usage>, DriverError> {
        if !disk::is_valid_key(key) {
            return Ok(None);
        }
        let slot = self.inner.slot(key);
        let mut slot = slot.lock().await;
        if !self.inner.load(key, &mut slot)? {
            return Ok(None);
        }
        self.inner.refresh(&mut slot);
        let Some(p) = &slot.proc_ else {
            return Ok(None);
        };
        let (cpu_time_ns, memory_bytes) = match self.inner.cgroups.usage(&key.0) {
            Some(u) => u,
            None => {
                let cpu = procfs::stat(p.pid).map_or(0, |s| {
                    s.cpu_ticks.saturating_mul(1_000_000_000) / procfs::clock_ticks_per_second()
                });
                (cpu, procfs::rss_bytes(p.pid).unwrap_or(0))
            }
        };
        let namespaced = slot
            .state
            .as_ref()
            .is_some_and(|s| matches!(s.net, Some(NetAlloc::Namespace { .. })));
        let (net_rx_bytes, net_tx_bytes) = if namespaced {
            procfs::net_bytes(p.pid).unwrap_or((0, 0))
        } else {
            (0, 0)
        };
        Ok(Some(Usage {
            cpu_time_ns,
            memory_bytes,
            net_rx_bytes,
            net_tx_bytes,
        }))
    }

    fn log_path(&self, key: &InstanceKey) -> PathBuf {
        self.inner.dir(key).console_log()
    }
}
