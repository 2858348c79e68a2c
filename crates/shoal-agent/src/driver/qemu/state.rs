//! What the QEMU driver keeps on disk per instance (`<root>/<key>/state.json`): the spec
//! it was provisioned with, its forwarded host port, and the QEMU process (pid + start
//! time) with the accelerator it runs on. [`QemuDriver::recover`](super::QemuDriver)
//! rebuilds everything from these files after the agent restarts.

use serde::{Deserialize, Serialize};

use crate::driver::InstanceSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: with the pid, names one process for the host's life.
    pub start_time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    pub spec: InstanceSpec,
    /// The host port forwarded to the guest's port; kept while stopped, freed by
    /// deallocate.
    #[serde(default)]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub process: Option<ProcessRecord>,
    /// "kvm" or "tcg": what the running QEMU was started with.
    #[serde(default)]
    pub accel: Option<String>,
}

impl VmState {
    pub fn new(spec: InstanceSpec) -> Self {
        VmState {
            spec,
            host_port: None,
            process: None,
            accel: None,
        }
    }
}
