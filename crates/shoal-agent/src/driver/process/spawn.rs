//! Booting a process instance: its network (a kept or new allocation, namespace
//! re-created if needed), its limits (cgroups), and `/bin/sh -c <command>` (or the
//! program of a plain command line itself) spawned in its own session, inside its
//! namespace and cgroups, as its own user ([`users`]), with a clean environment.
//!
//! Data enters as the spec and the instance's slot (locked by the caller, known not to be
//! running); it leaves as the [`Running`] handle and the state file naming the new
//! process and its network allocation.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::state::{InstanceState, NetAlloc};
use super::{
    blocking, cgroups, net, net_err, nsthread, procfs, start_err, users, Inner, NetworkMode,
};
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
        for pid in self.cgroups.limits_for(&key.0).joined_pids() {
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
                nsthread::run_async(move || net.ensure(&a))
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
                _ => match self.network.take_warm() {
                    Some(alloc) => Ok(alloc),
                    // Made on the namespace thread, in turn with the other starts'.
                    None => {
                        let net = Arc::clone(&self.network);
                        nsthread::run_async(move || net.allocate())
                            .await
                            .map_err(|e| io_err(key, e))?
                    }
                },
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

        // The cgroups with the size's limits, made here on the runtime's thread: made on
        // the blocking threads with the launches, many at once contended for the kernel's
        // cgroup lock (more CPU, no faster; bench/RESULTS, session 20).
        let limits = if self.cgroups.enforced() {
            self.cgroups
                .apply(&key.0, spec.vcpus, spec.memory_mb)
                .map_err(|e| start_err(key, &e))?
        } else {
            cgroups::Limits::default()
        };
        let cgroup_procs = limits.procs_files();

        // Its own user, when the agent may hand one out: the disk and custom data are its.
        let user = self.owner(key);
        let custom_data = match user {
            Some(uid) => {
                let (top, disk, data) = (dir.dir.clone(), dir.disk(), dir.custom_data());
                let owned = self.layers.owns(&disk);
                blocking(move || users::hand_over(&top, &disk, &data, uid, owned))
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
        // As the shell would export it (an instance started directly gets no shell).
        env.set("PWD", disk.clone().into());
        let (program, args): (&Path, Vec<&OsStr>) = match plain_command(&spec.command, &disk) {
            Some(words) => (
                Path::new(words[0]),
                words[1..].iter().map(|&w| OsStr::new(w)).collect(),
            ),
            None => (
                Path::new("/bin/sh"),
                vec![OsStr::new("-c"), OsStr::new(&spec.command)],
            ),
        };
        // The user is dropped last: joining the namespace and cgroups needs root.
        //
        // On a blocking thread: the calling thread waits until the child has exec'd, and
        // the child's first write to a cgroup v1 `cgroup.procs` can wait for an RCU grace
        // period (the kernel's lock of every thread group's cgroup membership). On the
        // runtime's two workers those waits took half of a 1000-instance scale-out:
        // supervisors, probes and status reports queued behind them.
        let (program, args) = (
            program.to_path_buf(),
            args.into_iter()
                .map(OsStr::to_os_string)
                .collect::<Vec<_>>(),
        );
        let (console, netns) = (dir.console_log(), endpoint.netns.clone());
        let env = env.0;
        let launched = blocking(move || {
            launch::launch(&launch::Launch {
                program: &program,
                args: args.iter().map(|a| a.as_os_str()).collect(),
                env,
                cwd: &disk,
                console: &console,
                netns: netns.as_deref(),
                cgroups: cgroup_procs.iter().map(PathBuf::as_path).collect(),
                user,
            })
        })
        .await
        .map_err(|e| io_err(key, e))?
        .map_err(|e| start_err(key, &e))?;
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

/// The words of `command` when it is a plain command line that can be exec'd without
/// `/bin/sh -c`: words of characters the shell gives no meaning to, the first a path
/// (it has a `/`, so no builtin or `PATH` search is involved) to an executable file in
/// the instance's disk `cwd` (an ELF binary or a `#!` script). `None` for anything else,
/// which the shell runs as before (and reports, e.g. "not found", in the console log).
///
/// Why: dash forks for a `-c` command instead of exec'ing it, so every instance cost a
/// second process (a fork, an exec and a dynamic loader start of the shell) that stayed
/// around as the instance's main process: ~8 % of the CPU of a 1000-instance scale-out.
fn plain_command<'a>(command: &'a str, cwd: &Path) -> Option<Vec<&'a str>> {
    let ordinary = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c);
    let words: Vec<&str> = command
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect();
    let first = words.first()?;
    if !command
        .chars()
        .all(|c| ordinary(c) || c == ' ' || c == '\t')
        || !first.contains('/')
        || first.contains('=')
    {
        return None;
    }
    executable_file(&cwd.join(first)).then_some(words)
}

/// Whether `path` is a file `execve` would run: executable bits, and an ELF or `#!`
/// header (a script without one is run by the shell only).
fn executable_file(path: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let executable = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let mut head = [0u8; 4];
    executable
        && file.read_exact(&mut head).is_ok()
        && (head == *b"\x7fELF" || head.starts_with(b"#!"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_plain_command_lines_skip_the_shell() {
        let disk = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, body: &[u8], mode: u32| {
            let path = disk.path().join(name);
            std::fs::write(&path, body).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        file("server", b"\x7fELF rest", 0o755);
        file("run.sh", b"#!/bin/sh\necho hi\n", 0o755);
        file("bare.sh", b"echo no interpreter line\n", 0o755);
        file("data", b"\x7fELF but not executable", 0o644);

        let plain = |cmd: &'static str| plain_command(cmd, disk.path());
        assert_eq!(plain("./server"), Some(vec!["./server"]));
        assert_eq!(
            plain("./server  --port=8080\t-v"),
            Some(vec!["./server", "--port=8080", "-v"])
        );
        assert_eq!(plain("./run.sh a:b"), Some(vec!["./run.sh", "a:b"]));
        for shell_needed in [
            "exec ./server",
            "server",
            "FOO=1 ./server",
            "./server $HOME",
            "./server; echo done",
            "./server > out.log",
            "./server 'two words'",
            "./server *",
            "./server ~",
            "./server &",
            "./missing",
            "./bare.sh",
            "./data",
            "",
        ] {
            assert_eq!(plain(shell_needed), None, "{shell_needed:?}");
        }
    }
}
