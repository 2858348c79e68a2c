//! The bundle of a VM image: the kernel, initrd and/or disk files the user names, under
//! the fixed names the agent boots from (`kernel`, `initrd`, `disk` at the bundle's top
//! level). Each file is checked first, so a missing or corrupt kernel is reported before
//! any byte is uploaded.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::bundle::{Bundle, BundleError, Entry, EntryKind};

pub const KERNEL: &str = "kernel";
pub const INITRD: &str = "initrd";
pub const DISK: &str = "disk";

/// The files given to `image create --kind vm`.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub disk: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmFileError {
    #[error(transparent)]
    Read(#[from] BundleError),
    #[error("--kernel {}: {problem}", .path.display())]
    Kernel { path: PathBuf, problem: String },
    #[error("--{what} {}: {problem}", .path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
}

fn head(path: &Path, n: u64) -> Result<(Vec<u8>, u64), BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(BundleError::Unsupported {
            path: path.to_owned(),
        });
    }
    let mut buf = Vec::new();
    fs::File::open(path)
        .map_err(io)?
        .take(n)
        .read_to_end(&mut buf)
        .map_err(io)?;
    Ok((buf, meta.len()))
}

/// What is wrong with a kernel, judged by its first bytes: a bzImage has "HdrS" at
/// 0x202, a vmlinux is an ELF file.
pub fn kernel_problem(head: &[u8]) -> Option<&'static str> {
    if (head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS") || head.starts_with(b"\x7fELF") {
        None
    } else if head.is_empty() {
        Some("is empty")
    } else {
        Some("is not a Linux kernel (neither a bzImage such as /boot/vmlinuz-* nor an ELF vmlinux)")
    }
}

/// Checks the files and lists them as a bundle.
pub fn bundle(files: &Files) -> Result<Bundle, VmFileError> {
    let mut entries = Vec::new();
    if let Some(path) = &files.kernel {
        let (bytes, size) = head(path, 0x400)?;
        if let Some(problem) = kernel_problem(&bytes) {
            return Err(VmFileError::Kernel {
                path: path.clone(),
                problem: problem.into(),
            });
        }
        entries.push(entry(KERNEL, path, size));
    }
    if let Some(path) = &files.initrd {
        let (_, size) = head(path, 0)?;
        if size == 0 {
            return Err(VmFileError::File {
                what: INITRD,
                path: path.clone(),
                problem: "is empty".into(),
            });
        }
        entries.push(entry(INITRD, path, size));
    }
    if let Some(path) = &files.disk {
        let (bytes, size) = head(path, 4)?;
        let qcow2 = bytes.starts_with(b"QFI\xfb");
        if size == 0 || (!qcow2 && size % 512 != 0) {
            return Err(VmFileError::File {
                what: DISK,
                path: path.clone(),
                problem: format!(
                    "is neither qcow2 nor a raw disk (a raw disk is whole 512-byte sectors; this is {size} bytes)"
                ),
            });
        }
        entries.push(entry(DISK, path, size));
    }
    let root = [&files.kernel, &files.disk]
        .into_iter()
        .flatten()
        .next()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(Bundle { root, entries })
}

fn entry(name: &str, path: &Path, size: u64) -> Entry {
    Entry {
        name: name.into(),
        source: path.to_owned(),
        kind: EntryKind::File { size },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_and_renamed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinuz-6.1");
        let mut k = vec![0u8; 0x300];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        fs::write(&kernel, &k).expect("write");
        let initrd = dir.path().join("initrd.img");
        fs::write(&initrd, b"\x1f\x8bcpio").expect("write");
        let disk = dir.path().join("disk.img");
        fs::write(&disk, vec![0u8; 1024]).expect("write");
        let b = bundle(&Files {
            kernel: Some(kernel.clone()),
            initrd: Some(initrd),
            disk: Some(disk.clone()),
        })
        .expect("bundle");
        let names: Vec<&str> = b.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["kernel", "initrd", "disk"]);
        let tar = b.write_tar(Vec::new()).expect("tar");
        assert_eq!(tar.len() as u64, b.estimated_tar_size());

        fs::write(&kernel, b"#!/bin/sh\n").expect("write");
        let err = bundle(&Files {
            kernel: Some(kernel),
            ..Files::default()
        })
        .expect_err("not a kernel")
        .to_string();
        assert!(err.contains("is not a Linux kernel"), "{err}");

        fs::write(&disk, vec![0u8; 1000]).expect("write");
        let err = bundle(&Files {
            disk: Some(disk),
            ..Files::default()
        })
        .expect_err("odd disk")
        .to_string();
        assert!(err.contains("neither qcow2 nor a raw disk"), "{err}");

        let err = bundle(&Files {
            kernel: Some(dir.path().join("missing")),
            ..Files::default()
        })
        .expect_err("missing")
        .to_string();
        assert!(err.starts_with("Cannot read"), "{err}");
    }
}
