//! Choosing the accelerator: KVM when `/dev/kvm` is usable **and a probe boot shows that
//! guests really run** (on some nested hosts `/dev/kvm` exists but guests hang during
//! boot), else TCG (QEMU's emulator: slower, always works).
//!
//! The probe boots the host's own kernel (`/boot/vmlinuz-*`) under KVM with no root
//! disk: a working KVM reaches the kernel's "cannot mount root" panic within a second or
//! two, and `panic=-1` with `-no-reboot` makes QEMU exit; a hanging KVM prints nothing
//! and is killed at [`PROBE_TIMEOUT`]. Without a host kernel the probe runs a few
//! instructions from the reset vector, which catches a KVM that runs nothing at all but
//! not one that hangs later in boot (the log says so).
//!
//! The verdict is cached for the host's boot (keyed by `/proc/sys/kernel/random/boot_id`
//! and the QEMU binary), so restarts of Shoal do not pay for the probe again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// How long a probe boot may take before KVM is judged not to work.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `accel` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelMode {
    /// KVM if a probe boot works, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for AccelMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AccelMode::Auto),
            "kvm" => Ok(AccelMode::Kvm),
            "tcg" => Ok(AccelMode::Tcg),
            other => Err(format!("accel '{other}' is not one of auto, kvm, tcg")),
        }
    }
}

/// The accelerator VMs use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accel {
    pub kvm: bool,
    /// e.g. "KVM (a probe boot worked)", "TCG (KVM hung in a probe boot)".
    pub why: String,
}

impl Accel {
    pub fn name(&self) -> &'static str {
        if self.kvm {
            "kvm"
        } else {
            "tcg"
        }
    }

    fn tcg(why: impl Into<String>) -> Self {
        Accel {
            kvm: false,
            why: why.into(),
        }
    }
}

/// Why `/dev/kvm` cannot be used, if it cannot.
pub fn kvm_device_problem() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no /dev/kvm".into()),
        Err(e) => Some(format!("cannot open /dev/kvm: {e}")),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    boot_id: String,
    qemu: PathBuf,
    accel: Accel,
}

/// Settles the accelerator for `mode`. `cache` is where a probe's verdict is kept.
pub async fn detect(mode: AccelMode, qemu: &Path, cache: &[PathBuf]) -> Accel {
    match mode {
        AccelMode::Tcg => return Accel::tcg("TCG (accel = tcg)"),
        AccelMode::Kvm => {
            return Accel {
                kvm: true,
                why: "KVM (accel = kvm)".into(),
            }
        }
        AccelMode::Auto => {}
    }
    if let Some(problem) = kvm_device_problem() {
        return Accel::tcg(format!("TCG ({problem})"));
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    for path in cache {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        if let Ok(c) = serde_json::from_slice::<Cached>(&bytes) {
            if !boot_id.is_empty() && c.boot_id == boot_id && c.qemu == qemu {
                tracing::info!(accel = c.accel.name(), why = %c.accel.why, cache = %path.display(), "Accelerator from an earlier probe of this boot (delete the file to probe again)");
                return c.accel;
            }
        }
    }
    let accel = probe(qemu).await;
    let record = Cached {
        boot_id,
        qemu: qemu.to_path_buf(),
        accel: accel.clone(),
    };
    for path in cache {
        let saved = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(path, serde_json::to_vec(&record).unwrap_or_default()));
        if saved.is_ok() {
            break;
        }
    }
    accel
}

/// The newest `/boot/vmlinuz-*`, if any.
fn host_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .filter(|p| std::fs::File::open(p).is_ok())
        .collect();
    kernels.sort();
    kernels.pop()
}

/// Code at the reset vector: `mov al, 1; out 0xf4, al; hlt`. With `isa-debug-exit` on
/// port 0xf4, QEMU exits with status (1 << 1) | 1 = 3.
fn reset_vector_firmware() -> Vec<u8> {
    let code = [0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
    let mut fw = vec![0u8; 65536];
    fw[65536 - 16..65536 - 16 + code.len()].copy_from_slice(&code);
    fw
}

async fn probe(qemu: &Path) -> Accel {
    let started = tokio::time::Instant::now();
    let kernel = host_kernel();
    let mut cmd = tokio::process::Command::new(qemu);
    cmd.args([
        "-machine",
        "q35,accel=kvm",
        "-cpu",
        "host",
        "-m",
        "128",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    let firmware = std::env::temp_dir().join(format!("shoal-kvm-probe-{}.bin", std::process::id()));
    match &kernel {
        Some(k) => {
            cmd.arg("-kernel").arg(k).args([
                "-append",
                "console=ttyS0 panic=-1 root=/dev/shoal-probe-none",
                "-serial",
                "stdio",
            ]);
        }
        None => {
            if let Err(e) = std::fs::write(&firmware, reset_vector_firmware()) {
                return Accel::tcg(format!("TCG (cannot prepare the KVM probe: {e})"));
            }
            cmd.arg("-bios").arg(&firmware).args([
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-serial",
                "none",
            ]);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Accel::tcg(format!("TCG (cannot run {}: {e})", qemu.display())),
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let collect = async {
        let mut o = Vec::new();
        let mut e = Vec::new();
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_end(&mut o).await;
        }
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_end(&mut e).await;
        }
        let status = child.wait().await;
        (status, o, e)
    };
    let verdict = match tokio::time::timeout(PROBE_TIMEOUT, collect).await {
        Err(_) => Accel::tcg(format!(
            "TCG (/dev/kvm exists but a KVM probe boot hung for {} s)",
            PROBE_TIMEOUT.as_secs()
        )),
        Ok((status, stdout, stderr)) => {
            let stdout = String::from_utf8_lossy(&stdout);
            let stderr = String::from_utf8_lossy(&stderr);
            let worked = match &kernel {
                Some(_) => stdout.contains("Kernel panic") || stdout.contains("VFS:"),
                None => status.as_ref().is_ok_and(|s| s.code() == Some(3)),
            };
            if worked {
                let depth = if kernel.is_some() {
                    "a probe boot of the host kernel worked"
                } else {
                    "probe code ran; no host kernel for a full probe boot"
                };
                Accel {
                    kvm: true,
                    why: format!("KVM ({depth})"),
                }
            } else {
                let reason = stderr
                    .lines()
                    .rfind(|l| !l.trim().is_empty() && !l.contains("warning"))
                    .unwrap_or("the probe guest did not run");
                Accel::tcg(format!("TCG (KVM probe failed: {})", reason.trim()))
            }
        }
    };
    let _ = std::fs::remove_file(&firmware);
    tracing::info!(accel = verdict.name(), why = %verdict.why, took_ms = started.elapsed().as_millis() as u64, "KVM probe done");
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_say_what_is_allowed() {
        assert_eq!("auto".parse(), Ok(AccelMode::Auto));
        assert_eq!("kvm".parse(), Ok(AccelMode::Kvm));
        assert_eq!("tcg".parse(), Ok(AccelMode::Tcg));
        assert_eq!(
            "hvf".parse::<AccelMode>(),
            Err("accel 'hvf' is not one of auto, kvm, tcg".to_string())
        );
    }

    #[test]
    fn the_probe_firmware_ends_in_the_reset_vector() {
        let fw = reset_vector_firmware();
        assert_eq!(fw.len(), 65536);
        assert_eq!(&fw[65520..65524], &[0xB0, 0x01, 0xE6, 0xF4]);
    }

    #[tokio::test]
    async fn configured_modes_need_no_probe() {
        let q = Path::new("/nonexistent/qemu");
        assert!(!detect(AccelMode::Tcg, q, &[]).await.kvm);
        assert!(detect(AccelMode::Kvm, q, &[]).await.kvm);
    }
}
