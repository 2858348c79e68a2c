//! The local host's instance drivers: processes always, VMs when QEMU is installed.
//!
//! Without QEMU the agent still starts: VM instances then fail with the reason instead of
//! the whole agent.

use std::path::Path;
use std::sync::Arc;

use shoal_agent::driver::multi::MultiDriver;
use shoal_agent::driver::process::{NetworkMode, ProcessDriver, ProcessDriverConfig, Subnet};
use shoal_agent::driver::qemu::{AccelMode, QemuDriver, QemuDriverConfig, QemuDriverError};
use shoal_agent::driver::Driver;

#[derive(Debug, thiserror::Error)]
pub enum DriversError {
    #[error("Cannot set up the process driver")]
    Process(#[source] shoal_agent::driver::process::ProcessDriverError),
    #[error("Cannot set up the QEMU driver")]
    Qemu(#[source] QemuDriverError),
    #[error("Cannot read or make this install's cgroup name in {path} (check the data directory is writable)")]
    CgroupParent {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How this host runs instances.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    pub network: NetworkMode,
    /// The namespaced instances' range [default: 10.200.0.0/16].
    pub subnet: Option<Subnet>,
    /// The host's name: part of its cgroup names, so several agents on one machine (as
    /// namespace hosts in tests) never share an instance's cgroup.
    pub host_name: String,
    /// Masquerade what namespaced instances send beyond the instance ranges.
    pub outbound_nat: bool,
    /// Network namespaces kept ready ahead of need (namespace mode).
    pub warm_namespaces: usize,
    /// The address other hosts reach this one at: VMs' forwarded ports listen there.
    pub address: Option<std::net::Ipv4Addr>,
    pub accel: AccelMode,
}

fn process_driver(dir: &Path, settings: &DriverSettings) -> Result<Arc<dyn Driver>, DriversError> {
    let mut cfg = ProcessDriverConfig::new(dir.join("instances"));
    cfg.network = settings.network;
    cfg.outbound_nat = settings.outbound_nat;
    cfg.warm_namespaces = settings.warm_namespaces;
    if let Some(subnet) = settings.subnet {
        cfg.subnet = subnet;
    }
    // Instance cgroups go under a parent of this install's own (`shoal-1a2b3c4d`, kept in
    // `instances/.cgroup-parent`); older agents used `shoal` (`shoal-<host>` beside
    // others), from which running instances are moved on start.
    let legacy = match settings.host_name.as_str() {
        "local" => "shoal".to_owned(),
        host => format!("shoal-{host}"),
    };
    cfg.cgroup_parent = shoal_agent::driver::process::install_cgroup_parent(&cfg.root, &legacy)
        .map_err(|source| DriversError::CgroupParent {
            path: cfg.root.join(".cgroup-parent"),
            source,
        })?;
    cfg.legacy_cgroup_parent = Some(legacy);
    let driver = ProcessDriver::new(cfg).map_err(DriversError::Process)?;
    let caps = driver.capabilities();
    tracing::info!(network = %caps.network, limits = %caps.limits, "process driver ready");
    Ok(Arc::new(driver))
}

/// The agent's driver for instances kept under `dir`: process instances, plus VMs when
/// QEMU is installed.
pub fn local(dir: &Path, settings: &DriverSettings) -> Result<Arc<dyn Driver>, DriversError> {
    let process = process_driver(dir, settings)?;
    let accel = settings.accel;
    let vm = QemuDriverConfig::new(dir.join("vms")).and_then(|mut cfg| {
        cfg.accel = accel;
        if let Some(address) = settings.address {
            cfg.host_ip = address;
        }
        QemuDriver::new(cfg)
    });
    let vm: Result<Arc<dyn Driver>, String> = match vm {
        Ok(d) => {
            tracing::info!(accel = ?accel, "QEMU driver ready (VM images)");
            Ok(Arc::new(d))
        }
        Err(e @ QemuDriverError::NotInstalled { .. }) => {
            tracing::info!("{e}; VM images cannot run here");
            Err(e.to_string())
        }
        Err(e) => return Err(DriversError::Qemu(e)),
    };
    Ok(Arc::new(MultiDriver::new(process, vm)))
}
