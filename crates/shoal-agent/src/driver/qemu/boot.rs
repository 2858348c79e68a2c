//! Provisioning and booting a VM: the instance directory with its state file, overlay
//! disk (`qemu-img create -f qcow2 -b IMAGE`), custom data and NoCloud seed; then the
//! host port, the command line (`args.rs`) and `qemu-system-x86_64` spawned in its own
//! session with its console appended to `console.log`.
//!
//! Data enters as the spec and the instance's slot (locked by the caller, known not to be
//! running); it leaves as files in the instance directory, the [`Running`] handle and the
//! state file naming the QEMU process, its port and accelerator.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::args::{self, Boot, CUSTOM_DATA, IDENTITY_HEADER, OVERLAY, QMP_SOCKET, SEED};
use super::console::describe_exit;
use super::state::VmState;
use super::{
    hostname_of, image, image_err, is_valid_key, remove_file_if_exists, seed, start_err, Inner,
    CONSOLE_LOG,
};
use crate::driver::slot::{io_err, write_atomic, Machine, Proc, ProcessRecord, Slot};
use crate::driver::{launch, procfs};
use crate::driver::{DriverError, InstanceKey, InstanceSpec, Running};

impl Inner {
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

    /// Creates the directory, state file and overlay disk unless they exist; returns what
    /// the image holds.
    pub(super) async fn provision_vm(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<VmState>,
    ) -> Result<image::VmImage, DriverError> {
        let key = &spec.key;
        if !is_valid_key(key) {
            return Err(image_err(key, "the instance key is not a valid file name"));
        }
        let image = image::inspect(&spec.image_dir).map_err(|reason| image_err(key, reason))?;
        self.check_size(spec)?;
        self.record_spec(spec, slot)?;
        let dir = self.dir(key);
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
        let secret = dir.join(IDENTITY_HEADER);
        match identity_secret(spec) {
            Some(s) => write_private(&secret, s.as_bytes()),
            None => remove_file_if_exists(&secret),
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

    /// Boots the instance in `slot`, provisioning it first if needed.
    pub(super) async fn spawn(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<VmState>,
    ) -> Result<Running, DriverError> {
        let key = &spec.key;
        let image = self.provision_vm(spec, slot).await?;
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
            has_identity: identity_secret(spec).is_some(),
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
        // tokio writes on a blocking thread: wait for it, so the banner comes before
        // anything QEMU writes (the child opens the log again by path, appending).
        log.flush().await.map_err(|e| io_err(key, e))?;
        drop(log);

        // Started without forking the agent (see `launch`), in its own session.
        let launched = launch::launch(&launch::Launch {
            program: &self.config.qemu,
            args: argv.iter().map(AsRef::as_ref).collect(),
            env: Vec::new(),
            cwd: &dir,
            console: &log_path,
            netns: None,
            cgroups: Vec::new(),
            user: None,
        })
        .map_err(|e| {
            start_err(
                key,
                format!("cannot run {}: {e}", self.config.qemu.display()),
            )
        })?;
        let pid = launched.pid;
        let start_time = procfs::start_time(pid).unwrap_or(0);
        state.process = Some(ProcessRecord { pid, start_time });
        state.accel = Some(accel.name().to_string());
        let snapshot = state.clone();
        let p = Proc::watch_launched(key, pid, launched.pidfd, move |status| match status {
            Ok(status) => describe_exit(status, &log_path),
            Err(e) => format!("QEMU's exit status is unknown ({e})"),
        });
        let running = p.running(SocketAddr::V4(SocketAddrV4::new(self.config.host_ip, port)));
        slot.proc_ = Some(p);
        self.slots.save(key, &snapshot)?;
        tracing::info!(instance = %key, pid, accel = accel.name(), port, "VM booting");
        Ok(running)
    }
}

/// The instance's `IDENTITY_HEADER`, when its set has a managed identity.
fn identity_secret(spec: &InstanceSpec) -> Option<&str> {
    spec.env
        .iter()
        .find(|(k, _)| k == "IDENTITY_HEADER")
        .map(|(_, v)| v.as_str())
}

/// Writes `bytes` to `path` readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}
