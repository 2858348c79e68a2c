//! Booting a process instance: its network (a kept or new allocation, namespace
//! re-created if needed), its limits (cgroups), and `/bin/sh -c <command>` spawned in its
//! own session, inside its namespace and cgroups, as its own user ([`users`]), with a
//! clean environment.
//!
//! Data enters as the spec and the instance's slot (locked by the caller, known not to be
//! running); it leaves as the [`Running`] handle and the state file naming the new
//! process and its network allocation.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;

use super::state::{InstanceState, NetAlloc};
use super::{blocking, cgroups, net, net_err, procfs, start_err, users, Inner, NetworkMode};
use crate::driver::launch;
use crate::driver::slot::{io_err, Machine, Proc, ProcessRecord, Slot};
use crate::driver::{DriverError, InstanceSpec, Running};

impl Inner {
    /// Boots the provisioned (or not yet provisioned) instance in `slot`.
    pub(super) async fn spawn(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<InstanceState>,
    ) -> Result<Running, DriverError> {
        let key = &spec.key;
        // Nothing of a previous life may survive into this one (e.g. a process started
        // just before the agent was killed, whose pid never reached the state file).
        for pid in self.cgroups.limits_for(&key.0).pids() {
            let _ = procfs::kill_pid(pid, libc::SIGKILL);
        }
        self.provision(spec, slot).await?;
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
                self.slots.save(key, &snapshot)?;
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

        // Its own user, when the agent may hand one out: the disk and custom data are its.
        let user = self
            .config
            .instance_users
            .then(|| users::instance_uid(&key.0));
        let custom_data = match user {
            Some(uid) => {
                let (top, disk, data) = (dir.dir.clone(), dir.disk(), dir.custom_data());
                blocking(move || users::hand_over(&top, &disk, &data, uid))
                    .await
                    .map_err(|e| io_err(key, e))?
                    .map_err(|e| start_err(key, &e))?;
                std::path::PathBuf::from(users::CUSTOM_DATA_FROM_DISK)
            }
            None => dir.custom_data(),
        };
        let metadata = match endpoint.metadata_host {
            Some(ip) => net::rewrite_host(&spec.metadata_endpoint, ip),
            None => spec.metadata_endpoint.clone(),
        };
        let path_var = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        // A clean environment: PATH, the spec's variables, then Shoal's (which win).
        let mut env = Environment::default();
        env.set("PATH", path_var);
        for (k, v) in &spec.env {
            env.set(k, v.into());
        }
        env.set("PORT", endpoint.listen_port.to_string().into());
        env.set("SHOAL_PRIVATE_IP", endpoint.private_ip.to_string().into());
        env.set("SHOAL_INSTANCE_ID", spec.instance_id.clone().into());
        env.set("SHOAL_VMSS", spec.vmss.clone().into());
        env.set("SHOAL_CUSTOM_DATA", custom_data.into());
        env.set("SHOAL_METADATA_ENDPOINT", metadata.clone().into());
        if spec.env.iter().any(|(k, _)| k == "IDENTITY_HEADER") {
            // As on App Service: IDENTITY_ENDPOINT + IDENTITY_HEADER.
            env.set(
                "IDENTITY_ENDPOINT",
                format!("{metadata}{}", crate::identity::TOKEN_PATH).into(),
            );
        }
        let disk = dir.disk();
        // The user is dropped last: joining the namespace and cgroups needs root.
        let launched = launch::launch(&launch::Launch {
            program: Path::new("/bin/sh"),
            args: vec!["-c".as_ref(), spec.command.as_ref()],
            env: env.0,
            cwd: &disk,
            stdout: log.as_raw_fd(),
            stderr: log.as_raw_fd(),
            netns: netns_fd.as_ref().map(AsRawFd::as_raw_fd),
            cgroups: cgroup_fds.iter().map(AsRawFd::as_raw_fd).collect(),
            user,
        })
        .map_err(|e| start_err(key, &e))?;
        drop((netns_fd, cgroup_fds, log));
        let pid = launched.pid;
        // Our child cannot be reaped before `wait`, so its /proc entry is there.
        let start_time = procfs::start_time(pid).unwrap_or_else(|| {
            tracing::warn!(instance = %key, pid, "Cannot read the start time of a new process");
            0
        });
        state.process = Some(ProcessRecord { pid, start_time });
        let snapshot = state.clone();
        let p = Proc::watch_launched(key, pid, launched.pidfd, |status| match status {
            Ok(status) => describe_exit(status),
            Err(e) => format!("exit status unknown ({e})"),
        });
        let running = p.running(endpoint.addr);
        slot.proc_ = Some(p);
        self.slots.save(key, &snapshot)?;
        Ok(running)
    }
}

/// An environment built in order, a later value of a name replacing the earlier one.
#[derive(Default)]
struct Environment(Vec<(String, std::ffi::OsString)>);

impl Environment {
    fn set(&mut self, name: &str, value: std::ffi::OsString) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }
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
