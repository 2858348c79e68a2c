//! A VM image bundle as the agent's image cache unpacked it: `kernel` (a bzImage or an
//! ELF `vmlinux` with a PVH entry), `initrd`, and/or `disk` (qcow2 or raw) at its top
//! level. [`inspect`] checks what is there before QEMU is asked to boot it, so a missing
//! or corrupt file is reported in words instead of as a guest that never comes up.

use std::io::Read;
use std::path::{Path, PathBuf};

/// File names inside a VM bundle (what `shoal image create --kind vm` uploads).
pub const KERNEL: &str = "kernel";
pub const INITRD: &str = "initrd";
pub const DISK: &str = "disk";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmImage {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub disk: Option<(PathBuf, DiskFormat)>,
}

/// What the first bytes of a kernel file say it is.
pub fn kernel_problem(head: &[u8]) -> Option<&'static str> {
    let bzimage = head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS";
    let elf = head.starts_with(b"\x7fELF");
    if bzimage || elf {
        None
    } else if head.is_empty() {
        Some("is empty")
    } else {
        Some("is neither a Linux bzImage nor an ELF vmlinux")
    }
}

/// The format of a disk from its first bytes (qcow2 by its magic, anything else raw).
pub fn disk_format(head: &[u8]) -> DiskFormat {
    if head.starts_with(b"QFI\xfb") {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    }
}

fn head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)?
        .take(n as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Finds and checks the parts of the bundle in `dir`.
pub fn inspect(dir: &Path) -> Result<VmImage, String> {
    let present = |name: &str| {
        let p = dir.join(name);
        p.is_file().then_some(p)
    };
    let kernel = present(KERNEL);
    let initrd = present(INITRD);
    let disk = present(DISK);
    if kernel.is_none() && disk.is_none() {
        return Err(format!(
            "the image has neither a kernel nor a disk (a VM bundle holds `{KERNEL}`, `{INITRD}` and/or `{DISK}`; create it with `shoal image create --kind vm --kernel FILE [--initrd FILE] [--disk FILE]`)"
        ));
    }
    if initrd.is_some() && kernel.is_none() {
        return Err("the image has an initrd but no kernel to boot it with".into());
    }
    if let Some(k) = &kernel {
        let bytes = head(k, 0x400).map_err(|e| format!("cannot read the kernel: {e}"))?;
        if let Some(problem) = kernel_problem(&bytes) {
            return Err(format!(
                "the image's kernel {problem}: give --kernel a kernel such as /boot/vmlinuz-*"
            ));
        }
    }
    if let Some(i) = &initrd {
        let len = std::fs::metadata(i)
            .map_err(|e| format!("cannot read the initrd: {e}"))?
            .len();
        if len == 0 {
            return Err("the image's initrd is empty".into());
        }
    }
    let disk = match disk {
        Some(d) => {
            let bytes = head(&d, 4).map_err(|e| format!("cannot read the disk: {e}"))?;
            let len = std::fs::metadata(&d).map(|m| m.len()).unwrap_or(0);
            if len == 0 {
                return Err("the image's disk is empty".into());
            }
            let fmt = disk_format(&bytes);
            if fmt == DiskFormat::Raw && len % 512 != 0 {
                return Err(format!(
                    "the image's disk is not qcow2 and, at {len} bytes, not a whole number of 512-byte sectors either: give --disk a qcow2 or raw disk image"
                ));
            }
            Some((d, fmt))
        }
        None => None,
    };
    Ok(VmImage {
        kernel,
        initrd,
        disk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage() -> Vec<u8> {
        let mut k = vec![0u8; 0x400];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k
    }

    #[test]
    fn kernels_are_recognised_by_their_headers() {
        assert_eq!(kernel_problem(&bzimage()), None);
        assert_eq!(kernel_problem(b"\x7fELF\x02\x01\x01"), None);
        assert_eq!(kernel_problem(b""), Some("is empty"));
        assert!(kernel_problem(b"#!/bin/sh\necho not a kernel\n").is_some());
    }

    #[test]
    fn bundles_are_checked_before_booting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = inspect(dir.path()).expect_err("empty bundle");
        assert!(err.contains("neither a kernel nor a disk"), "{err}");

        std::fs::write(dir.path().join(KERNEL), b"garbage that is no kernel").expect("write");
        let err = inspect(dir.path()).expect_err("corrupt kernel");
        assert!(
            err.contains("neither a Linux bzImage nor an ELF vmlinux"),
            "{err}"
        );

        std::fs::write(dir.path().join(KERNEL), bzimage()).expect("write");
        std::fs::write(dir.path().join(INITRD), b"\x1f\x8b").expect("write");
        std::fs::write(dir.path().join(DISK), vec![0u8; 1000]).expect("write");
        let err = inspect(dir.path()).expect_err("odd raw disk");
        assert!(err.contains("512-byte sectors"), "{err}");

        let mut qcow = b"QFI\xfb".to_vec();
        qcow.resize(1000, 0);
        std::fs::write(dir.path().join(DISK), qcow).expect("write");
        let img = inspect(dir.path()).expect("valid bundle");
        assert_eq!(img.disk.map(|(_, f)| f), Some(DiskFormat::Qcow2));
        assert!(img.kernel.is_some() && img.initrd.is_some());
    }
}
