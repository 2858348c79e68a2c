//! What the QEMU driver keeps on disk per instance (`<root>/<key>/state.json`): the spec
//! it was provisioned with, its forwarded host port, and the QEMU process (pid + start
//! time) with the accelerator it runs on. The shared slot runtime (`driver/slot.rs`)
//! reads and writes these files and rebuilds everything from them after the agent
//! restarts.

use serde::{Deserialize, Serialize};

use crate::driver::slot::{ProcessRecord, SlotState};
use crate::driver::{InstanceKey, InstanceSpec};

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

impl SlotState for VmState {
    fn new(spec: InstanceSpec) -> Self {
        VmState {
            spec,
            host_port: None,
            process: None,
            accel: None,
        }
    }
    fn spec(&self) -> &InstanceSpec {
        &self.spec
    }
    fn set_spec(&mut self, spec: InstanceSpec) {
        self.spec = spec;
    }
    fn process(&self) -> Option<ProcessRecord> {
        self.process
    }
    fn set_process(&mut self, process: Option<ProcessRecord>) {
        self.process = process;
    }
    fn encode(&self) -> std::io::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
    fn decode(
        bytes: &[u8],
        _key: &InstanceKey,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(serde_json::from_slice(bytes)?)
    }
}
