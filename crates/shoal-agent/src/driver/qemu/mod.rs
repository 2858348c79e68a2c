//! The QEMU driver: every instance is a real virtual machine, one `qemu-system-x86_64`
//! process per running instance.
//!
//! Data enters as [`InstanceSpec`]s whose image is a VM bundle (`image.rs`: `kernel`,
//! `initrd`, `disk`) and lives on disk under `<root>/<key>/`:
//!
//! - `state.json` (`state.rs`): the spec, the forwarded host port, the QEMU process
//!   (pid + start time) and its accelerator, so a restarted agent re-adopts running VMs
//!   ([`Driver::recover`]) instead of booting duplicates;
//! - `disk.qcow2`: the instance's copy-on-write overlay of the image's disk
//!   (`qemu-img create -f qcow2 -b IMAGE -F FORMAT`); kept by stop, replaced by reimage;
//! - `console.log`: the serial console and QEMU's own messages (`shoal vmss logs`);
//! - `qmp.sock`: QMP, the VM's control socket (`qmp.rs`);
//! - `custom_data`: `osProfile.customData`, handed to the guest through fw_cfg.
//!
//! The command line is built in `args.rs`; the accelerator (KVM if a probe boot shows it
//! works, else TCG) is settled once in the background by `accel.rs`. Networking is
//! QEMU's user network with one host port forwarded to the guest's port, so a VM is
//! reached like a host-port process instance. Stop is an ACPI power-down over QMP, then
//! `quit`, then SIGKILL; the overlay and (unless deallocated) the port stay.

mod accel;
mod args;
pub mod image;
mod proc;
mod qmp;
mod seed;
mod state;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Mutex as AsyncMutex, OnceCell};
use tokio::task::JoinHandle;

use super::{
    Capabilities, Driver, DriverError, InstanceKey, InstanceSpec, Recovered, Running, Usage,
};
pub use accel::{kvm_device_problem, Accel, AccelMode, PROBE_TIMEOUT};
use args::{Boot, CUSTOM_DATA, OVERLAY, QMP_SOCKET, SEED};
use state::{ProcessRecord, VmState};

const STATE_FILE: &str = "state.json";
const CONSOLE_LOG: &str = "console.log";
/// How long QMP commands may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(2);

/// How the QEMU driver runs VMs on this host.
#[derive(Debug, Clone)]
pub struct QemuDriverConfig {
    /// Where instance directories live, e.g. `<data-dir>/agent/vms`.
    pub root: PathBuf,
    pub qemu: PathBuf,
    pub qemu_img: PathBuf,
    pub accel: AccelMode,
    /// Host ports forwarded to guests (below Linux's ephemeral range, above the process
    /// driver's 20000–29999).
    pub port_range: RangeInclusive<u16>,
    /// The host address forwarded ports listen on.
    pub host_ip: Ipv4Addr,
    /// How long `destroy` and `reimage` wait for a running VM to power off.
    pub destroy_grace: Duration,
    /// Where a KVM probe's verdict is cached (the first writable one is used).
    pub probe_cache: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum QemuDriverError {
    #[error("QEMU is not installed: {what} is not on PATH (install the Debian packages qemu-system-x86 and qemu-utils, e.g. with scripts/install-vm-deps.sh)")]
    NotInstalled { what: &'static str },
    #[error("Cannot create the VM directory {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("accel = kvm, but {0}: use accel = auto or tcg")]
    NoKvm(String),
}

impl QemuDriverConfig {
    /// Defaults, with QEMU found on `PATH`: automatic accelerator, ports 30000–32767 on
    /// 127.0.0.1, 5 s grace.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, QemuDriverError> {
        let root = root.into();
        let qemu = which("qemu-system-x86_64").ok_or(QemuDriverError::NotInstalled {
            what: "qemu-system-x86_64",
        })?;
        let qemu_img =
            which("qemu-img").ok_or(QemuDriverError::NotInstalled { what: "qemu-img" })?;
        Ok(QemuDriverConfig {
            probe_cache: vec![
                PathBuf::from("/run/shoal/kvm-probe.json"),
                root.join("kvm-probe.json"),
            ],
            root,
            qemu,
            qemu_img,
            accel: AccelMode::Auto,
            port_range: 30_000..=32_767,
            host_ip: Ipv4Addr::LOCALHOST,
            destroy_grace: Duration::from_secs(5),
        })
    }
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs VMs. Cheap to share: clones are handles to one driver.
#[derive(Clone)]
pub struct QemuDriver {
    inner: Arc<Inner>,
}

struct Inner {
    config: QemuDriverConfig,
    accel: OnceCell<Accel>,
    slots: Mutex<HashMap<InstanceKey, Arc<AsyncMutex<Slot>>>>,
    ports: Mutex<BTreeSet<u16>>,
    host_cpus: u32,
    host_memory_mb: u64,
}

#[derive(Default)]
struct Slot {
    state: Option<VmState>,
    proc_: Option<Proc>,
}

/// A live QEMU process and the task waiting for it to end.
struct Proc {
    pid: u32,
    exited: watch::Receiver<Option<String>>,
    waiter: JoinHandle<()>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // QEMU keeps running (own session); only our waiter goes.
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
                    // The driver went away before QEMU ended: claim nothing.
                    futures::future::pending::<()>().await;
                }
            }
        }
        .boxed()
    }

    /// Waits at most `timeout` for QEMU to end; true when it has.
    async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.exited.clone();
        let _ = tokio::time::timeout(timeout, async {
            while rx.borrow_and_update().is_none() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.has_exited()
    }
}

fn io_err(key: &InstanceKey, source: io::Error) -> DriverError {
    DriverError::Io {
        key: key.clone(),
        source,
    }
}

fn image_err(key: &InstanceKey, reason: impl Into<String>) -> DriverError {
    DriverError::Image {
        key: key.clone(),
        reason: reason.into(),
    }
}

fn start_err(key: &InstanceKey, reason: impl Into<String>) -> DriverError {
    DriverError::Start {
        key: key.clone(),
        reason: reason.into(),
    }
}

/// Instance keys become directory names: no separators, no leading dot.
fn is_valid_key(key: &InstanceKey) -> bool {
    let k = &key.0;
    !k.is_empty()
        && k.len() <= 200
        && !k.starts_with('.')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The last line QEMU itself wrote to the console log (its errors start with its name).
fn qemu_message(log: &Path) -> Option<String> {
    last_lines(log)
        .into_iter()
        .rev()
        .find(|l| l.starts_with("qemu-system") || l.starts_with("qemu:"))
}

/// The non-empty lines of the last 8 KiB of `log`, without control characters.
fn last_lines(log: &Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

fn describe_exit(status: std::process::ExitStatus, log: &Path) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(0), _) => "the VM powered off (QEMU exited with status 0)".to_string(),
        (Some(code), _) => format!("QEMU exited with status {code}"),
        (None, Some(9)) => "QEMU was killed by signal 9 (SIGKILL)".to_string(),
        (None, Some(sig)) => format!("QEMU was killed by signal {sig}"),
        _ => format!("QEMU ended ({status})"),
    };
    match (status.success(), qemu_message(log)) {
        (false, Some(msg)) => format!("{how}: {msg}"),
        _ => how,
    }
}

/// The guest's host name: the instance's computer name (e.g. `web000003`).
fn hostname_of(spec: &InstanceSpec) -> String {
    args::option_safe(
        spec.env
            .iter()
            .find(|(k, _)| k == "SHOAL_COMPUTER_NAME")
            .map_or(spec.instance_id.as_str(), |(_, v)| v.as_str()),
    )
}

fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

impl QemuDriver {
    /// Sets up the driver and starts settling the accelerator in the background (a KVM
    /// probe boot may take up to [`PROBE_TIMEOUT`]; the first VM start waits for it).
    pub fn new(config: QemuDriverConfig) -> Result<Self, QemuDriverError> {
        if config.accel == AccelMode::Kvm {
            if let Some(problem) = kvm_device_problem() {
                return Err(QemuDriverError::NoKvm(problem));
            }
        }
        std::fs::create_dir_all(&config.root).map_err(|source| QemuDriverError::Root {
            path: config.root.clone(),
            source,
        })?;
        let driver = QemuDriver {
            inner: Arc::new(Inner {
                config,
                accel: OnceCell::new(),
                slots: Mutex::new(HashMap::new()),
                ports: Mutex::new(BTreeSet::new()),
                host_cpus: std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1),
                host_memory_mb: host_memory_mb(),
            }),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&driver.inner);
            rt.spawn(async move {
                inner.accel().await;
            });
        }
        Ok(driver)
    }

    /// The accelerator VMs use (waits for the probe if it is still running).
    pub async fn accel(&self) -> Accel {
        self.inner.accel().await
    }

    /// The instance directory of `key`.
    pub fn instance_dir(&self, key: &InstanceKey) -> PathBuf {
        self.inner.dir(key)
    }
}

impl Inner {
    async fn accel(&self) -> Accel {
        self.accel
            .get_or_init(|| {
                accel::detect(
                    self.config.accel,
                    &self.config.qemu,
                    &self.config.probe_cache,
                )
            })
            .await
            .clone()
    }

    fn dir(&self, key: &InstanceKey) -> PathBuf {
        self.config.root.join(&key.0)
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

    /// A free host port from the range, checked by binding it.
    fn allocate_port(&self, key: &InstanceKey) -> Result<u16, DriverError> {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        for port in self.config.port_range.clone() {
            if !ports.contains(&port) && self.bindable(port) {
                ports.insert(port);
                return Ok(port);
            }
        }
        Err(DriverError::NoAddress { key: key.clone() })
    }

    fn bindable(&self, port: u16) -> bool {
        std::net::TcpListener::bind(SocketAddrV4::new(self.config.host_ip, port)).is_ok()
    }

    fn release_port(&self, port: u16) {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
    }

    /// Loads the state file into `slot` unless done; `Ok(false)` when there is none.
    fn load(&self, key: &InstanceKey, slot: &mut Slot) -> Result<bool, DriverError> {
        if slot.state.is_some() {
            return Ok(true);
        }
        match std::fs::read(self.dir(key).join(STATE_FILE)) {
            Ok(bytes) => {
                let state: VmState = serde_json::from_slice(&bytes)
                    .map_err(|e| io_err(key, io::Error::new(io::ErrorKind::InvalidData, e)))?;
                if let Some(port) = state.host_port {
                    self.ports
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(port);
                }
                slot.state = Some(state);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(key, e)),
        }
    }

    fn save(&self, key: &InstanceKey, state: &VmState) -> Result<(), DriverError> {
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| io_err(key, io::Error::new(io::ErrorKind::InvalidData, e)))?;
        write_atomic(&self.dir(key).join(STATE_FILE), &bytes).map_err(|e| io_err(key, e))
    }

    /// Drops a waiter whose QEMU ended; adopts a live QEMU named by the state file.
    fn refresh(&self, slot: &mut Slot) {
        if slot.proc_.as_ref().is_some_and(Proc::has_exited) {
            slot.proc_ = None;
            if let Some(st) = slot.state.as_mut() {
                st.process = None;
            }
        }
        if slot.proc_.is_some() {
            return;
        }
        let Some(st) = slot.state.as_mut() else {
            return;
        };
        let Some(rec) = st.process else { return };
        if proc::is_same_alive(rec.pid, rec.start_time) {
            let (tx, rx) = watch::channel(None);
            let waiter = tokio::spawn(async move {
                let how = proc::wait_exit(rec.pid, rec.start_time).await;
                let _ = tx.send(Some(format!("QEMU {how}")));
            });
            slot.proc_ = Some(Proc {
                pid: rec.pid,
                exited: rx,
                waiter,
            });
        } else {
            st.process = None;
        }
    }

    fn check_size(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let cpus_ok = spec.vcpus <= self.host_cpus;
        let mem_ok = self.host_memory_mb == 0 || spec.memory_mb < self.host_memory_mb;
        if cpus_ok && mem_ok {
            return Ok(());
        }
        Err(image_err(
            &spec.key,
            format!(
                "the size asks for {} vCPUs and {} MB, but this host has {} CPUs and {} MB: choose a smaller size (`shoal vmss list-skus`)",
                spec.vcpus, spec.memory_mb, self.host_cpus, self.host_memory_mb
            ),
        ))
    }

    /// Creates the directory, state file and overlay disk unless they exist.
    async fn provision_locked(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot,
    ) -> Result<image::VmImage, DriverError> {
        let key = &spec.key;
        if !is_valid_key(key) {
            return Err(image_err(key, "the instance key is not a valid file name"));
        }
        let image = image::inspect(&spec.image_dir).map_err(|reason| image_err(key, reason))?;
        self.check_size(spec)?;
        self.load(key, slot)?;
        let dir = self.dir(key);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(key, e))?;
        // The state file comes first, so a crash half-way leaves an instance `recover`
        // knows (and the next provision finishes).
        if slot.state.as_ref().is_none_or(|st| st.spec != *spec) {
            let mut state = slot
                .state
                .clone()
                .unwrap_or_else(|| VmState::new(spec.clone()));
            state.spec = spec.clone();
            self.save(key, &state)?;
            slot.state = Some(state);
        }
        let overlay = dir.join(OVERLAY);
        if let Some((base, format)) = &image.disk {
            if !overlay.exists() {
                self.create_overlay(key, base, *format, &overlay).await?;
            }
        }
        let custom = dir.join(CUSTOM_DATA);
        match &spec.custom_data {
            Some(data) => std::fs::write(&custom, data),
            None => remove_file_if_exists(&custom),
        }
        .map_err(|e| io_err(key, e))?;
        // A disk-only image boots its own OS: cloud-init there reads a NoCloud seed.
        let seed = dir.join(SEED);
        match image.kernel {
            None => write_atomic(
                &seed,
                &seed::nocloud_iso(
                    &key.0,
                    &hostname_of(spec),
                    spec.custom_data.as_deref().unwrap_or_default(),
                ),
            ),
            Some(_) => remove_file_if_exists(&seed),
        }
        .map_err(|e| io_err(key, e))?;
        Ok(image)
    }

    async fn create_overlay(
        &self,
        key: &InstanceKey,
        base: &Path,
        format: image::DiskFormat,
        overlay: &Path,
    ) -> Result<(), DriverError> {
        let base = std::fs::canonicalize(base).map_err(|e| io_err(key, e))?;
        let tmp = overlay.with_extension("qcow2.part");
        let out = tokio::process::Command::new(&self.config.qemu_img)
            .arg("create")
            .arg("-q")
            .args(["-f", "qcow2", "-F", format.as_str(), "-b"])
            .arg(&base)
            .arg(&tmp)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| start_err(key, format!("cannot run qemu-img: {e}")))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(image_err(
                key,
                format!(
                    "the image's disk cannot back an instance disk: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        std::fs::rename(&tmp, overlay).map_err(|e| io_err(key, e))
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
            return Err(start_err(
                key,
                format!("it is already running (QEMU pid {})", p.pid),
            ));
        }
        let image = self.provision_locked(spec, slot).await?;
        let accel = self.accel().await;
        let dir = self.dir(key);
        let Some(state) = slot.state.as_mut() else {
            return Err(io_err(
                key,
                io::Error::other("state vanished after provisioning"),
            ));
        };
        // Keep the port across stop/start unless something else took it meanwhile.
        let port = match state.host_port {
            Some(p) if self.bindable(p) => p,
            other => {
                if let Some(p) = other {
                    tracing::info!(instance = %key, port = p, "Host port of a stopped VM is taken; choosing another");
                    self.release_port(p);
                }
                self.allocate_port(key)?
            }
        };
        state.host_port = Some(port);
        remove_file_if_exists(&dir.join(QMP_SOCKET)).map_err(|e| io_err(key, e))?;

        let hostname = hostname_of(spec);
        let metadata = args::option_safe(&args::guest_metadata_endpoint(&spec.metadata_endpoint));
        let overlay = image.disk.as_ref().map(|_| dir.join(OVERLAY));
        let boot = Boot {
            image: &image,
            kvm: accel.kvm,
            vcpus: spec.vcpus,
            memory_mb: spec.memory_mb,
            overlay,
            instance_id: &spec.instance_id,
            hostname: &hostname,
            guest_port: spec.port,
            host_ip: self.config.host_ip,
            host_port: port,
            cmdline: &spec.command,
            metadata_endpoint: &metadata,
            has_custom_data: spec.custom_data.is_some(),
            seed: image.kernel.is_none(),
        };
        let argv = args::args(&boot);

        let log_path = dir.join(CONSOLE_LOG);
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .await
            .map_err(|e| io_err(key, e))?;
        let banner = format!(
            "--- shoal: booting instance {} on QEMU ({}), port {} forwarded from {}:{} ---\n",
            spec.instance_id, accel.why, spec.port, self.config.host_ip, port
        );
        log.write_all(banner.as_bytes())
            .await
            .map_err(|e| io_err(key, e))?;
        let log = log.into_std().await;
        let log_err = log.try_clone().map_err(|e| io_err(key, e))?;

        let mut cmd = tokio::process::Command::new(&self.config.qemu);
        cmd.args(&argv)
            .current_dir(&dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(false);
        // SAFETY: the hook runs in the forked child before exec and only calls setsid,
        // which is async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            start_err(
                key,
                format!("cannot run {}: {e}", self.config.qemu.display()),
            )
        })?;
        let Some(pid) = child.id() else {
            return Err(start_err(key, "QEMU ended before it could be observed"));
        };
        let start_time = proc::start_time(pid).unwrap_or(0);
        state.process = Some(ProcessRecord { pid, start_time });
        state.accel = Some(accel.name().to_string());
        let snapshot = state.clone();
        let (tx, rx) = watch::channel(None);
        let instance = key.clone();
        let waiter = tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => describe_exit(status, &log_path),
                Err(e) => format!("QEMU's exit status is unknown ({e})"),
            };
            tracing::debug!(%instance, pid, how = %how, "QEMU ended");
            let _ = tx.send(Some(how));
        });
        let p = Proc {
            pid,
            exited: rx,
            waiter,
        };
        let running = Running {
            pid,
            endpoint: SocketAddr::V4(SocketAddrV4::new(self.config.host_ip, port)),
            exited: p.exited_future(),
        };
        slot.proc_ = Some(p);
        self.save(key, &snapshot)?;
        tracing::info!(instance = %key, pid, accel = accel.name(), port, "VM booting");
        Ok(running)
    }

    /// Powers the VM off (ACPI, then QMP `quit`, then SIGKILL) and optionally frees its port.
    async fn stop_locked(
        &self,
        key: &InstanceKey,
        slot: &mut Slot,
        grace: Duration,
        release_port: bool,
    ) -> Result<(), DriverError> {
        self.refresh(slot);
        let sock = self.dir(key).join(QMP_SOCKET);
        if let Some(p) = slot.proc_.take() {
            let asked = qmp::execute(&sock, "system_powerdown", None, QMP_TIMEOUT).await;
            let off = match &asked {
                Ok(_) => p.wait(grace).await,
                Err(e) => {
                    tracing::info!(instance = %key, error = %e, "No ACPI power-down over QMP");
                    false
                }
            };
            if !off {
                tracing::info!(instance = %key, pid = p.pid, ?grace, "VM did not power off; quitting QEMU");
                let _ = qmp::execute(&sock, "quit", None, QMP_TIMEOUT).await;
                if !p.wait(Duration::from_secs(3)).await {
                    proc::kill(p.pid, libc::SIGKILL).map_err(|e| io_err(key, e))?;
                    if !p.wait(Duration::from_secs(10)).await {
                        slot.proc_ = Some(p);
                        return Err(io_err(
                            key,
                            io::Error::new(
                                io::ErrorKind::TimedOut,
                                "QEMU survived SIGKILL for 10 s",
                            ),
                        ));
                    }
                }
            }
        }
        remove_file_if_exists(&sock).map_err(|e| io_err(key, e))?;
        let Some(state) = slot.state.as_mut() else {
            return Ok(());
        };
        let mut changed = state.process.take().is_some();
        if release_port {
            if let Some(port) = state.host_port.take() {
                self.release_port(port);
                changed = true;
            }
        }
        if changed {
            let state = state.clone();
            self.save(key, &state)?;
        }
        Ok(())
    }

    /// (guest port, host port, accelerator) of `key`, if known.
    async fn ports_of(&self, key: &InstanceKey) -> Option<(u16, Option<u16>, Option<String>)> {
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        self.load(key, &mut slot).ok()?;
        let st = slot.state.as_ref()?;
        Some((st.spec.port, st.host_port, st.accel.clone()))
    }
}

#[async_trait]
impl Driver for QemuDriver {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn capabilities(&self) -> Capabilities {
        let accel = match self.inner.accel.get() {
            Some(a) => a.why.clone(),
            None => "accelerator being probed".to_string(),
        };
        Capabilities {
            limits: format!("QEMU VM: the size's vCPUs and memory (-smp/-m); {accel}"),
            network: format!(
                "QEMU user network: guest port forwarded from a host port on {}",
                self.inner.config.host_ip
            ),
        }
    }

    async fn provision(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let slot = self.inner.slot(&spec.key);
        let mut slot = slot.lock().await;
        self.inner
            .provision_locked(spec, &mut slot)
            .await
            .map(|_| ())
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Running, DriverError> {
        if !is_valid_key(&spec.key) {
            return Err(start_err(
                &spec.key,
                "the instance key is not a valid file name",
            ));
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
        if !is_valid_key(key) {
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
        remove_file_if_exists(&self.inner.dir(key).join(OVERLAY)).map_err(|e| io_err(key, e))?;
        self.inner
            .provision_locked(spec, &mut slot)
            .await
            .map(|_| ())
    }

    async fn destroy(&self, key: &InstanceKey) -> Result<(), DriverError> {
        if !is_valid_key(key) {
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
            Err(e) => {
                tracing::warn!(instance = %key, error = %e, "Destroying a VM whose state is unreadable")
            }
        }
        let dir = self.inner.dir(key);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(key, e)),
            _ => {}
        }
        slot.state = None;
        drop(slot);
        self.inner.forget(key);
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<Recovered>, DriverError> {
        let root = &self.inner.config.root;
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&InstanceKey(root.display().to_string()), e)),
        };
        let mut keys: Vec<InstanceKey> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(InstanceKey)
            .filter(is_valid_key)
            .collect();
        keys.sort();
        let mut found = Vec::new();
        for key in keys {
            let slot = self.inner.slot(&key);
            let mut slot = slot.lock().await;
            match self.inner.load(&key, &mut slot) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(instance = %key, error = %e, "Skipping a VM with an unreadable state file");
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
            let running = match (&slot.proc_, state.host_port) {
                (Some(p), Some(port)) => Some(Running {
                    pid: p.pid,
                    endpoint: SocketAddr::V4(SocketAddrV4::new(self.inner.config.host_ip, port)),
                    exited: p.exited_future(),
                }),
                _ => None,
            };
            if running.is_some() {
                tracing::info!(instance = %key, "Adopting a running VM");
            }
            found.push(Recovered {
                key,
                spec: state.spec,
                running,
            });
        }
        Ok(found)
    }

    async fn usage(&self, key: &InstanceKey) -> Result<Option<Usage>, DriverError> {
        if !is_valid_key(key) {
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
        Ok(Some(Usage {
            cpu_time_ns: proc::cpu_ns(p.pid).unwrap_or(0),
            memory_bytes: proc::rss_bytes(p.pid).unwrap_or(0),
            net_rx_bytes: 0,
            net_tx_bytes: 0,
        }))
    }

    /// QEMU accepts a forwarded connection on the host as soon as it starts, whether or
    /// not the guest listens: the guest is ready once such a connection is established
    /// inside QEMU's user network too (`info usernet`).
    async fn ready(&self, key: &InstanceKey, endpoint: SocketAddr) -> bool {
        let Some((guest_port, _, _)) = self.inner.ports_of(key).await else {
            return false;
        };
        let Ok(Ok(conn)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(endpoint),
        )
        .await
        else {
            return false;
        };
        let sock = self.inner.dir(key).join(QMP_SOCKET);
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            match qmp::hmp(&sock, "info usernet", QMP_TIMEOUT).await {
                Ok(info) if qmp::usernet_has_established(&info, guest_port) => {
                    drop(conn);
                    return true;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        false
    }

    async fn boot_hint(&self, key: &InstanceKey) -> Option<String> {
        let (guest_port, host_port, accel) = self.inner.ports_of(key).await?;
        let forwarded = host_port
            .map(|p| format!(" (forwarded from {}:{p})", self.inner.config.host_ip))
            .unwrap_or_default();
        let console = match last_lines(&self.inner.dir(key).join(CONSOLE_LOG))
            .into_iter()
            .rev()
            .find(|l| !l.starts_with("--- shoal:"))
        {
            Some(line) => {
                let line: String = line.chars().take(200).collect();
                format!("; its last console line: \"{line}\"")
            }
            None => "; its console stayed empty (does the kernel honour console=ttyS0?)".into(),
        };
        let slow = if accel.as_deref() == Some("tcg") {
            "; VMs run on TCG (no usable KVM) here, so a slow boot may need a larger boot-timeout-seconds"
        } else {
            ""
        };
        Some(format!(
            "the guest never answered on its port {guest_port}{forwarded}: make sure the image starts a server on that port (`--port` of `shoal image create`) and see the console with `shoal vmss logs`{console}{slow}"
        ))
    }

    fn log_path(&self, key: &InstanceKey) -> PathBuf {
        self.inner.dir(key).join(CONSOLE_LOG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_file_names() {
        assert!(is_valid_key(&InstanceKey(
            "00000000-0000-0000-0000-000000000000.demo.web.3".into()
        )));
        for bad in ["", ".hidden", "a/b", "../x", "a b"] {
            assert!(!is_valid_key(&InstanceKey(bad.into())), "{bad}");
        }
    }

    #[test]
    fn an_exit_names_qemus_own_complaint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("console.log");
        std::fs::write(
            &log,
            "--- shoal: booting ---\nqemu-system-x86_64: -kernel kernel: could not load kernel\n",
        )
        .expect("write");
        let status = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(
            describe_exit(status, &log),
            "QEMU exited with status 1: qemu-system-x86_64: -kernel kernel: could not load kernel"
        );
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(
            describe_exit(killed, &log),
            "QEMU was killed by signal 9 (SIGKILL): qemu-system-x86_64: -kernel kernel: could not load kernel"
        );
    }
}
