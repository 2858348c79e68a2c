//! An in-memory [`Driver`] for tests: no processes, no files, scriptable failures.
//!
//! A [`FakeDriver`] models one host. Tests drive it through the trait like a real
//! driver, then script what a real host does on its own: make the next start of an
//! instance fail ([`FakeDriver::fail_next`]), make a running instance exit
//! ([`FakeDriver::crash`]), or restart the agent ([`FakeDriver::restarted`], after which
//! [`Driver::recover`] adopts the instances still "running"). Every call is recorded
//! ([`FakeDriver::calls`]) so tests can assert what the code under test asked for.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{
    Capabilities, Driver, DriverError, InstanceKey, InstanceSpec, Recovered, Running, Usage,
};

/// The operations whose failure can be scripted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    Provision,
    Start,
    Stop,
    Reimage,
    Destroy,
}

/// A recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Provision(InstanceKey),
    Start(InstanceKey),
    Stop {
        key: InstanceKey,
        release_address: bool,
    },
    Reimage(InstanceKey),
    Destroy(InstanceKey),
    Recover,
}

/// An in-memory driver. Clones share the same host and history.
#[derive(Clone, Default)]
pub struct FakeDriver {
    host: Arc<Mutex<FakeHost>>,
}

#[derive(Default)]
struct FakeHost {
    instances: BTreeMap<InstanceKey, FakeInstance>,
    failures: HashMap<(FakeOp, InstanceKey), (u32, String)>,
    calls: Vec<FakeCall>,
    usage: HashMap<InstanceKey, Usage>,
    next_pid: u32,
    next_port: u16,
}

struct FakeInstance {
    spec: InstanceSpec,
    /// Incremented by every reimage: a fresh disk.
    disk_generation: u32,
    port: Option<u16>,
    running: Option<FakeProc>,
}

struct FakeProc {
    pid: u32,
    exited: watch::Sender<Option<String>>,
}

impl FakeProc {
    fn exited_future(&self) -> BoxFuture<'static, String> {
        super::slot::exit_future(self.exited.subscribe())
    }
}

impl FakeDriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same host seen by a new agent process: instances and their "processes" are
    /// kept, nothing is known to the new handle until it calls `recover`. (The fake has
    /// no per-handle memory, so this is a clone; it exists to make tests read right.)
    pub fn restarted(&self) -> Self {
        self.clone()
    }

    fn host(&self) -> MutexGuard<'_, FakeHost> {
        self.host.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `times` calls of `op` for `key` fail with `reason`.
    pub fn fail_next(&self, op: FakeOp, key: &InstanceKey, times: u32, reason: &str) {
        self.host()
            .failures
            .insert((op, key.clone()), (times, reason.to_owned()));
    }

    /// Makes every call of `op` for `key` fail until [`FakeDriver::clear_failures`].
    pub fn fail_always(&self, op: FakeOp, key: &InstanceKey, reason: &str) {
        self.fail_next(op, key, u32::MAX, reason);
    }

    pub fn clear_failures(&self) {
        self.host().failures.clear();
    }

    /// Makes the running instance `key` exit as described (e.g. "exited with status
    /// 1"); its `exited` futures resolve. False when it was not running.
    pub fn crash(&self, key: &InstanceKey, how: &str) -> bool {
        let mut host = self.host();
        let Some(inst) = host.instances.get_mut(key) else {
            return false;
        };
        match inst.running.take() {
            Some(p) => {
                let _ = p.exited.send(Some(how.to_owned()));
                true
            }
            None => false,
        }
    }

    pub fn is_running(&self, key: &InstanceKey) -> bool {
        self.host()
            .instances
            .get(key)
            .is_some_and(|i| i.running.is_some())
    }

    pub fn is_provisioned(&self, key: &InstanceKey) -> bool {
        self.host().instances.contains_key(key)
    }

    /// Keys of all instances on the host, running or not.
    pub fn instances(&self) -> Vec<InstanceKey> {
        self.host().instances.keys().cloned().collect()
    }

    /// Keys of the running instances.
    pub fn running(&self) -> Vec<InstanceKey> {
        self.host()
            .instances
            .iter()
            .filter(|(_, i)| i.running.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The spec an instance was last provisioned/started with.
    pub fn spec(&self, key: &InstanceKey) -> Option<InstanceSpec> {
        self.host().instances.get(key).map(|i| i.spec.clone())
    }

    /// How many times the instance's disk was replaced by `reimage`.
    pub fn disk_generation(&self, key: &InstanceKey) -> Option<u32> {
        self.host().instances.get(key).map(|i| i.disk_generation)
    }

    /// The pid of a running instance.
    pub fn pid(&self, key: &InstanceKey) -> Option<u32> {
        self.host()
            .instances
            .get(key)
            .and_then(|i| i.running.as_ref().map(|p| p.pid))
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.host().calls.clone()
    }

    /// What `usage` reports for a running instance (default: zeros).
    pub fn set_usage(&self, key: &InstanceKey, usage: Usage) {
        self.host().usage.insert(key.clone(), usage);
    }
}

impl FakeHost {
    /// Consumes one scripted failure of `op` for `key`, if any.
    fn failure(&mut self, op: FakeOp, key: &InstanceKey) -> Option<String> {
        let entry = self.failures.get_mut(&(op, key.clone()))?;
        let reason = entry.1.clone();
        if entry.0 != u32::MAX {
            entry.0 -= 1;
        }
        if entry.0 == 0 {
            self.failures.remove(&(op, key.clone()));
        }
        Some(reason)
    }

    fn provision(&mut self, spec: &InstanceSpec) {
        match self.instances.get_mut(&spec.key) {
            Some(inst) => inst.spec = spec.clone(),
            None => {
                self.instances.insert(
                    spec.key.clone(),
                    FakeInstance {
                        spec: spec.clone(),
                        disk_generation: 0,
                        port: None,
                        running: None,
                    },
                );
            }
        }
    }

    fn stop(&mut self, key: &InstanceKey, release_address: bool) {
        if let Some(inst) = self.instances.get_mut(key) {
            if let Some(p) = inst.running.take() {
                let _ = p
                    .exited
                    .send(Some("killed by signal 15 (SIGTERM)".to_owned()));
            }
            if release_address {
                inst.port = None;
            }
        }
    }
}

fn endpoint(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn io_failure(key: &InstanceKey, reason: String) -> DriverError {
    DriverError::Io {
        key: key.clone(),
        source: io::Error::other(reason),
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn kind(&self) -> &'static str {
        "fake"
    }

    /// A fake instance answers as soon as it runs (nothing listens on its port: a real
    /// connection would fail, and under a paused clock would time out at once).
    async fn ready(&self, key: &InstanceKey, _endpoint: SocketAddr) -> bool {
        self.is_running(key)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            limits: "not enforced: fake driver".to_owned(),
            network: "fake".to_owned(),
        }
    }

    async fn provision(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let mut host = self.host();
        host.calls.push(FakeCall::Provision(spec.key.clone()));
        if let Some(reason) = host.failure(FakeOp::Provision, &spec.key) {
            return Err(DriverError::Image {
                key: spec.key.clone(),
                reason,
            });
        }
        host.provision(spec);
        Ok(())
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Running, DriverError> {
        let mut host = self.host();
        host.calls.push(FakeCall::Start(spec.key.clone()));
        if let Some(reason) = host.failure(FakeOp::Start, &spec.key) {
            return Err(DriverError::Start {
                key: spec.key.clone(),
                reason,
            });
        }
        host.provision(spec);
        host.next_pid += 1;
        let pid = 10_000 + host.next_pid;
        let fresh_port = 40_000u16.wrapping_add(host.next_port);
        let Some(inst) = host.instances.get_mut(&spec.key) else {
            return Err(DriverError::Unknown {
                key: spec.key.clone(),
            });
        };
        if let Some(p) = &inst.running {
            return Err(DriverError::Start {
                key: spec.key.clone(),
                reason: format!("it is already running (pid {})", p.pid),
            });
        }
        let (port, allocated) = match inst.port {
            Some(p) => (p, false),
            None => (fresh_port, true),
        };
        inst.port = Some(port);
        let (tx, _) = watch::channel(None);
        let proc_ = FakeProc { pid, exited: tx };
        let exited = proc_.exited_future();
        inst.running = Some(proc_);
        if allocated {
            host.next_port = host.next_port.wrapping_add(1);
        }
        Ok(Running {
            pid,
            endpoint: endpoint(port),
            exited,
        })
    }

    async fn stop(
        &self,
        key: &InstanceKey,
        _grace: Duration,
        release_address: bool,
    ) -> Result<(), DriverError> {
        let mut host = self.host();
        host.calls.push(FakeCall::Stop {
            key: key.clone(),
            release_address,
        });
        if let Some(reason) = host.failure(FakeOp::Stop, key) {
            return Err(io_failure(key, reason));
        }
        host.stop(key, release_address);
        Ok(())
    }

    async fn reimage(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let mut host = self.host();
        host.calls.push(FakeCall::Reimage(spec.key.clone()));
        if let Some(reason) = host.failure(FakeOp::Reimage, &spec.key) {
            return Err(DriverError::Image {
                key: spec.key.clone(),
                reason,
            });
        }
        host.stop(&spec.key, false);
        host.provision(spec);
        if let Some(inst) = host.instances.get_mut(&spec.key) {
            inst.disk_generation += 1;
        }
        Ok(())
    }

    async fn destroy(&self, key: &InstanceKey) -> Result<(), DriverError> {
        let mut host = self.host();
        host.calls.push(FakeCall::Destroy(key.clone()));
        if let Some(reason) = host.failure(FakeOp::Destroy, key) {
            return Err(io_failure(key, reason));
        }
        host.stop(key, true);
        host.instances.remove(key);
        host.usage.remove(key);
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<Recovered>, DriverError> {
        let mut host = self.host();
        host.calls.push(FakeCall::Recover);
        Ok(host
            .instances
            .iter()
            .map(|(key, inst)| Recovered {
                key: key.clone(),
                spec: inst.spec.clone(),
                running: inst.running.as_ref().map(|p| Running {
                    pid: p.pid,
                    endpoint: endpoint(inst.port.unwrap_or(inst.spec.port)),
                    exited: p.exited_future(),
                }),
            })
            .collect())
    }

    async fn usage(&self, key: &InstanceKey) -> Result<Option<Usage>, DriverError> {
        let host = self.host();
        let running = host.instances.get(key).is_some_and(|i| i.running.is_some());
        Ok(running.then(|| host.usage.get(key).copied().unwrap_or_default()))
    }

    fn log_path(&self, key: &InstanceKey) -> PathBuf {
        PathBuf::from("/dev/null").join(&key.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &str) -> InstanceSpec {
        InstanceSpec {
            key: InstanceKey(key.to_owned()),
            vmss: "web".into(),
            instance_id: "0".into(),
            image_dir: "/nonexistent".into(),
            command: "./shoal-web".into(),
            port: 8080,
            vcpus: 1,
            memory_mb: 512,
            custom_data: None,
            metadata_endpoint: "http://127.0.0.1:7071".into(),
            env: Vec::new(),
        }
    }

    #[tokio::test]
    async fn scripted_failures_crashes_and_restarts() {
        let d = FakeDriver::new();
        let s = spec("a");
        d.fail_next(FakeOp::Start, &s.key, 2, "boom");
        assert!(
            matches!(d.start(&s).await, Err(DriverError::Start { reason, .. }) if reason == "boom")
        );
        assert!(d.start(&s).await.is_err());
        let running = d.start(&s).await.expect("third start works");
        assert!(d.start(&s).await.is_err(), "already running");
        let port = running.endpoint.port();

        assert!(d.crash(&s.key, "exited with status 3"));
        assert_eq!(running.exited.await, "exited with status 3");
        assert!(!d.is_running(&s.key));

        // Stop keeps the port, deallocate frees it.
        let again = d.start(&s).await.expect("restart");
        assert_eq!(again.endpoint.port(), port);
        d.stop(&s.key, Duration::ZERO, true).await.expect("stop");
        assert_eq!(again.exited.await, "killed by signal 15 (SIGTERM)");

        let r = d.start(&s).await.expect("start");
        let after_restart = d.restarted().recover().await.expect("recover");
        assert_eq!(after_restart.len(), 1);
        let adopted = after_restart
            .into_iter()
            .next()
            .and_then(|r| r.running)
            .expect("adopted");
        assert_eq!(adopted.pid, r.pid);
        d.destroy(&s.key).await.expect("destroy");
        assert_eq!(adopted.exited.await, "killed by signal 15 (SIGTERM)");
        assert!(d.instances().is_empty());
        assert!(d.calls().contains(&FakeCall::Destroy(s.key.clone())));
    }

    #[tokio::test]
    async fn reimage_gives_a_fresh_disk_and_stops() {
        let d = FakeDriver::new();
        let s = spec("b");
        d.provision(&s).await.expect("provision");
        let _r = d.start(&s).await.expect("start");
        d.reimage(&s).await.expect("reimage");
        assert!(!d.is_running(&s.key));
        assert_eq!(d.disk_generation(&s.key), Some(1));
        assert_eq!(d.usage(&s.key).await.expect("usage"), None);
    }
}
