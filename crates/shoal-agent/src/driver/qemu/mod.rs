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
//! The slot plumbing (state files, locks, adoption after a restart, the order of each
//! operation) is the runtime both real drivers share (`driver/slot.rs`); this module adds
//! what is particular to VMs. `boot.rs` provisions and boots, with the command line built
//! in `args.rs`; `console.rs` reads the console log for users; the accelerator (KVM if a
//! probe boot shows it works, else TCG) is settled once in the background by `accel.rs`. Networking is
//! QEMU's user network with one host port forwarded to the guest's port, so a VM is
//! reached like a host-port process instance. Stop is an ACPI power-down over QMP, then
//! `quit`, then SIGKILL; the overlay and (unless deallocated) the port stay.

mod accel;
mod args;
mod boot;
mod console;
pub mod image;
mod qmp;
mod seed;
mod state;

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::procfs::{self, WaitEnd};
use super::slot::{self, io_err, Machine, Proc, Slot, Slots};
use super::{
    Capabilities, Driver, DriverError, InstanceKey, InstanceSpec, Recovered, Running, Usage,
};
pub use accel::{kvm_device_problem, Accel, AccelMode, PROBE_TIMEOUT};
use args::{OVERLAY, QMP_SOCKET};
use state::VmState;

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
    slots: Slots<VmState>,
    ports: Mutex<BTreeSet<u16>>,
    host_cpus: u32,
    host_memory_mb: u64,
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

fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
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
                slots: Slots::new(config.root.clone()),
                config,
                accel: OnceCell::new(),
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
        self.slots.dir(key)
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

    /// (guest port, host port, accelerator) of `key`, if known.
    async fn ports_of(&self, key: &InstanceKey) -> Option<(u16, Option<u16>, Option<String>)> {
        let st = slot::state_of(self, key).await?;
        Some((st.spec.port, st.host_port, st.accel))
    }
}

#[async_trait]
impl Machine for Inner {
    type State = VmState;
    const NOUN: &'static str = "VM";
    const PID_LABEL: &'static str = "QEMU pid";

    fn slots(&self) -> &Slots<VmState> {
        &self.slots
    }

    fn valid_key(key: &InstanceKey) -> bool {
        is_valid_key(key)
    }

    fn destroy_grace(&self) -> Duration {
        self.config.destroy_grace
    }

    fn claim(&self, state: &VmState) {
        if let Some(port) = state.host_port {
            self.ports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(port);
        }
    }

    fn adopted_exit(end: WaitEnd) -> String {
        match end {
            WaitEnd::AlreadyGone => "QEMU ended while the agent was away".into(),
            WaitEnd::Ended => "QEMU ended (it was adopted, so its exit status is unknown)".into(),
        }
    }

    async fn provision(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<VmState>,
    ) -> Result<(), DriverError> {
        self.provision_vm(spec, slot).await.map(|_| ())
    }

    async fn boot(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<VmState>,
    ) -> Result<Running, DriverError> {
        self.spawn(spec, slot).await
    }

    /// Powers the VM off: ACPI over QMP, then QMP `quit`, then SIGKILL.
    async fn halt(&self, key: &InstanceKey, p: &Proc, grace: Duration) -> Result<(), DriverError> {
        let sock = self.dir(key).join(QMP_SOCKET);
        let asked = qmp::execute(&sock, "system_powerdown", None, QMP_TIMEOUT).await;
        let off = match &asked {
            Ok(_) => p.wait(grace).await,
            Err(e) => {
                tracing::info!(instance = %key, error = %e, "No ACPI power-down over QMP");
                false
            }
        };
        if !off {
            tracing::info!(instance = %key, pid = p.pid(), ?grace, "VM did not power off; quitting QEMU");
            let _ = qmp::execute(&sock, "quit", None, QMP_TIMEOUT).await;
            if !p.wait(Duration::from_secs(3)).await {
                procfs::kill_pid(p.pid(), libc::SIGKILL).map_err(|e| io_err(key, e))?;
                if !p.wait(Duration::from_secs(10)).await {
                    return Err(io_err(
                        key,
                        io::Error::new(io::ErrorKind::TimedOut, "QEMU survived SIGKILL for 10 s"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn halted(&self, key: &InstanceKey) -> Result<(), DriverError> {
        remove_file_if_exists(&self.dir(key).join(QMP_SOCKET)).map_err(|e| io_err(key, e))
    }

    async fn release(&self, _key: &InstanceKey, state: &mut VmState) -> Result<bool, DriverError> {
        let Some(port) = state.host_port.take() else {
            return Ok(false);
        };
        self.release_port(port);
        Ok(true)
    }

    async fn remove_disk(&self, key: &InstanceKey) -> Result<(), DriverError> {
        remove_file_if_exists(&self.dir(key).join(OVERLAY)).map_err(|e| io_err(key, e))
    }

    fn endpoint(&self, state: &VmState) -> Option<SocketAddr> {
        let port = state.host_port?;
        Some(SocketAddr::V4(SocketAddrV4::new(self.config.host_ip, port)))
    }

    fn usage(&self, _key: &InstanceKey, _state: &VmState, pid: u32) -> Usage {
        Usage {
            cpu_time_ns: procfs::cpu_ns(pid).unwrap_or(0),
            memory_bytes: procfs::rss_bytes(pid).unwrap_or(0),
            net_rx_bytes: 0,
            net_tx_bytes: 0,
        }
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
        slot::recover(&*self.inner).await
    }

    async fn usage(&self, key: &InstanceKey) -> Result<Option<Usage>, DriverError> {
        slot::usage(&*self.inner, key).await
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
        Some(console::boot_hint(
            &self.inner.dir(key).join(CONSOLE_LOG),
            guest_port,
            host_port.map(|p| (self.inner.config.host_ip, p)),
            accel.as_deref(),
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
}
