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
use std::process::Stdio;
use std::sync::Arc;

use super::state::{InstanceState, NetAlloc};
use super::{blocking, cgroups, net, net_err, netns, procfs, start_err, users, Inner, NetworkMode};
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
        let log_err = log.try_clone().map_err(|e| io_err(key, e))?;

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
            .env("SHOAL_CUSTOM_DATA", custom_data)
            .env("SHOAL_METADATA_ENDPOINT", &metadata)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(false);
        if spec.env.iter().any(|(k, _)| k == "IDENTITY_HEADER") {
            // As on App Service: IDENTITY_ENDPOINT + IDENTITY_HEADER.
            cmd.env(
                "IDENTITY_ENDPOINT",
                format!("{metadata}{}", crate::identity::TOKEN_PATH),
            );
        }
        let ns_raw = netns_fd.as_ref().map(AsRawFd::as_raw_fd);
        let cg_raw: Vec<i32> = cgroup_fds.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: the hook runs in the forked child before exec and only makes
        // async-signal-safe system calls (setsid, setns, write, setgroups, setgid, setuid,
        // prctl) on descriptors that stay open in the parent until `spawn` returns; it
        // allocates nothing. The user is dropped last: joining needs root.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = ns_raw {
                    netns::join_in_child(fd)?;
                }
                cgroups::join_in_child(&cg_raw)?;
                match user {
                    Some(uid) => users::become_user_in_child(uid),
                    None => Ok(()),
                }
            });
        }
        let child = cmd.spawn().map_err(|e| start_err(key, &e))?;
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
        let p = Proc::watch_child(key, pid, child, |status| match status {
            Ok(status) => describe_exit(status),
            Err(e) => format!("exit status unknown ({e})"),
        });
        let running = p.running(endpoint.addr);
        slot.proc_ = Some(p);
        self.slots.save(key, &snapshot)?;
        Ok(running)
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
