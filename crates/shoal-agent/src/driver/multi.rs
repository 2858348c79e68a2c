//! Routes each instance to the driver of its image kind: process images to the process
//! driver, VM images to the QEMU driver. This is the driver `shoal serve` and
//! `shoal agent` hand to the agent.
//!
//! Calls that carry a spec route by [`InstanceSpec::image_kind`]; calls that carry only a
//! key go to the driver that last provisioned, started or recovered that key. When a
//! scale set moves an instance to an image of the other kind, the old driver's disk is
//! destroyed before the new driver provisions one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_model::records::HostPeer;

use super::{
    Capabilities, Driver, DriverError, InstanceKey, InstanceSpec, Recovered, Running, Usage,
};

/// The image kind of VM images.
pub const VM: &str = "vm";

pub struct MultiDriver {
    process: Arc<dyn Driver>,
    /// The QEMU driver, or why this host has none (said when a VM instance is asked for).
    vm: Result<Arc<dyn Driver>, String>,
    /// Which driver holds each known instance: true for the VM driver.
    owners: Mutex<HashMap<InstanceKey, bool>>,
}

impl MultiDriver {
    pub fn new(process: Arc<dyn Driver>, vm: Result<Arc<dyn Driver>, String>) -> Self {
        MultiDriver {
            process,
            vm,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, bool>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn vm_driver(&self, key: &InstanceKey) -> Result<&Arc<dyn Driver>, DriverError> {
        self.vm.as_ref().map_err(|why| DriverError::Image {
            key: key.clone(),
            reason: format!("this host cannot run VM images: {why}"),
        })
    }

    /// The driver for `spec`, after removing the instance from the other driver if it
    /// moved between kinds.
    async fn route(&self, spec: &InstanceSpec) -> Result<&Arc<dyn Driver>, DriverError> {
        let wants_vm = spec.image_kind() == VM;
        let target = if wants_vm {
            self.vm_driver(&spec.key)?
        } else {
            &self.process
        };
        let previous = self.owners().get(&spec.key).copied();
        if let Some(was_vm) = previous.filter(|was| *was != wants_vm) {
            let old = if was_vm {
                self.vm_driver(&spec.key)?
            } else {
                &self.process
            };
            tracing::info!(instance = %spec.key, to = spec.image_kind(), "Instance changes image kind; removing its old disk");
            old.destroy(&spec.key).await?;
        }
        self.owners().insert(spec.key.clone(), wants_vm);
        Ok(target)
    }

    /// The driver holding `key` (the process driver when unknown).
    fn holder(&self, key: &InstanceKey) -> &Arc<dyn Driver> {
        match (self.owners().get(key).copied(), &self.vm) {
            (Some(true), Ok(vm)) => vm,
            _ => &self.process,
        }
    }

    fn holds_vm(&self, key: &InstanceKey) -> bool {
        self.owners().get(key).copied().unwrap_or(false) && self.vm.is_ok()
    }
}

#[async_trait]
impl Driver for MultiDriver {
    fn kind(&self) -> &'static str {
        if self.vm.is_ok() {
            "process+qemu"
        } else {
            "process"
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.process.capabilities()
    }

    fn capabilities_for(&self, kind: &str) -> Capabilities {
        match (&self.vm, kind == VM) {
            (Ok(vm), true) => vm.capabilities(),
            (Err(why), true) => Capabilities {
                limits: format!("no VMs on this host: {why}"),
                network: String::new(),
            },
            _ => self.process.capabilities(),
        }
    }

    fn subnet(&self) -> Option<String> {
        self.process.subnet()
    }

    fn max_instances(&self) -> Option<u64> {
        self.process.max_instances()
    }

    async fn private_address(&self, key: &InstanceKey) -> Option<std::net::IpAddr> {
        self.process.private_address(key).await
    }

    fn route_peers(&self, peers: &[HostPeer]) -> Result<(), String> {
        self.process.route_peers(peers)
    }

    fn metadata_addrs(&self) -> Vec<std::net::IpAddr> {
        let mut addrs = self.process.metadata_addrs();
        if let Ok(vm) = &self.vm {
            addrs.extend(vm.metadata_addrs());
        }
        addrs
    }

    async fn provision(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        self.route(spec).await?.provision(spec).await
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Running, DriverError> {
        self.route(spec).await?.start(spec).await
    }

    async fn stop(
        &self,
        key: &InstanceKey,
        grace: Duration,
        release_address: bool,
    ) -> Result<(), DriverError> {
        self.holder(key).stop(key, grace, release_address).await
    }

    async fn reimage(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        self.route(spec).await?.reimage(spec).await
    }

    async fn destroy(&self, key: &InstanceKey) -> Result<(), DriverError> {
        // Unknown keys (an orphan found by neither recover) go to both; destroying an
        // unknown instance succeeds.
        let owner = self.owners().get(key).copied();
        match owner {
            Some(true) => self.vm_driver(key)?.destroy(key).await?,
            Some(false) => self.process.destroy(key).await?,
            None => {
                self.process.destroy(key).await?;
                if let Ok(vm) = &self.vm {
                    vm.destroy(key).await?;
                }
            }
        }
        self.owners().remove(key);
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<Recovered>, DriverError> {
        let mut found = self.process.recover().await?;
        {
            let mut owners = self.owners();
            for r in &found {
                owners.insert(r.key.clone(), false);
            }
        }
        if let Ok(vm) = &self.vm {
            let vms = vm.recover().await?;
            let mut owners = self.owners();
            for r in &vms {
                owners.insert(r.key.clone(), true);
            }
            found.extend(vms);
        }
        Ok(found)
    }

    async fn usage(&self, key: &InstanceKey) -> Result<Option<Usage>, DriverError> {
        self.holder(key).usage(key).await
    }

    async fn ready(&self, key: &InstanceKey, endpoint: SocketAddr) -> bool {
        self.holder(key).ready(key, endpoint).await
    }

    async fn boot_hint(&self, key: &InstanceKey) -> Option<String> {
        self.holder(key).boot_hint(key).await
    }

    fn log_path(&self, key: &InstanceKey) -> PathBuf {
        if self.holds_vm(key) {
            return self.holder(key).log_path(key);
        }
        // Not seen yet in this run (e.g. logs asked for before the supervisor started):
        // whichever driver has a log for it.
        let process_log = self.process.log_path(key);
        match &self.vm {
            Ok(vm) if !process_log.exists() && vm.log_path(key).exists() => vm.log_path(key),
            _ => process_log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::fake::FakeDriver;
    use crate::driver::IMAGE_KIND_ENV;

    fn spec(key: &str, kind: &str) -> InstanceSpec {
        InstanceSpec {
            key: InstanceKey(key.into()),
            vmss: "web".into(),
            instance_id: "0".into(),
            image_dir: PathBuf::from("/img"),
            command: "./run".into(),
            port: 8080,
            vcpus: 1,
            memory_mb: 512,
            custom_data: None,
            metadata_endpoint: "http://127.0.0.1:1".into(),
            env: vec![(IMAGE_KIND_ENV.into(), kind.into())],
        }
    }

    #[tokio::test]
    async fn instances_go_to_the_driver_of_their_kind_and_move_between_them() {
        let process = Arc::new(FakeDriver::new());
        let vm = Arc::new(FakeDriver::new());
        let multi = MultiDriver::new(process.clone(), Ok(vm.clone()));
        multi
            .provision(&spec("a", "process"))
            .await
            .expect("process");
        multi.provision(&spec("b", VM)).await.expect("vm");
        assert_eq!(process.recover().await.expect("recover").len(), 1);
        assert_eq!(vm.recover().await.expect("recover").len(), 1);

        // Instance a moves to a VM image: its process disk goes, a VM disk comes.
        multi.reimage(&spec("a", VM)).await.expect("reimage");
        assert!(process.recover().await.expect("recover").is_empty());
        assert_eq!(vm.recover().await.expect("recover").len(), 2);
        multi
            .destroy(&InstanceKey("a".into()))
            .await
            .expect("destroy");
        assert_eq!(vm.recover().await.expect("recover").len(), 1);
    }

    #[tokio::test]
    async fn a_vm_on_a_host_without_qemu_fails_with_the_reason() {
        let multi = MultiDriver::new(
            Arc::new(FakeDriver::new()),
            Err("QEMU is not installed".into()),
        );
        let err = multi.provision(&spec("v", VM)).await.expect_err("no QEMU");
        assert_eq!(
            err.to_string(),
            "Image for instance v is unusable: this host cannot run VM images: QEMU is not installed"
        );
        multi
            .provision(&spec("p", "process"))
            .await
            .expect("process still works");
    }
}
