//! An instance's directory on the host and its "disk".
//!
//! ```text
//! <root>/<key>/
//!   disk/          working directory: a private copy of the image bundle
//!   console.log    stdout + stderr, appended across starts
//!   custom-data    decoded osProfile.customData (absent when there is none)
//!   state.json     see `state.rs`, written atomically by `driver/slot.rs`
//! ```
//!
//! Instance directories are spread over the file system's block groups
//! ([`spread_subdirs`]). The image directory is only read. Copies are real copies
//! (no hard links, so an instance can never change the image or another instance), keep
//! permission bits (so executables stay executable) and never follow a symbolic link:
//! links are recreated only when they point inside the bundle, others are skipped with a
//! warning.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::driver::slot::write_atomic;
use crate::driver::InstanceKey;

pub const DISK_DIR: &str = "disk";
pub const CONSOLE_LOG: &str = "console.log";
pub const CUSTOM_DATA: &str = "custom-data";

/// Paths of one instance's files.
#[derive(Debug, Clone)]
pub struct InstanceDir {
    pub dir: PathBuf,
}

impl InstanceDir {
    pub fn new(root: &Path, key: &InstanceKey) -> Self {
        Self {
            dir: root.join(&key.0),
        }
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK_DIR)
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join(CONSOLE_LOG)
    }
    pub fn custom_data(&self) -> PathBuf {
        self.dir.join(CUSTOM_DATA)
    }
}

/// True when `key` is usable as a single directory name.
pub fn is_valid_key(key: &InstanceKey) -> bool {
    let k = &key.0;
    !k.is_empty() && k.len() <= 200 && !k.starts_with('.') && !k.contains('/') && !k.contains('\0')
}

/// Makes `<dir>/disk` a fresh copy of `image`. The copy is built beside it and renamed
/// into place, so a crash mid-copy never leaves a half disk under the real name.
pub fn create_disk(dir: &InstanceDir, image: &Path) -> io::Result<()> {
    let meta = fs::metadata(image)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "image is not a directory",
        ));
    }
    let disk = dir.disk();
    let staging = dir.dir.join("disk.new");
    remove_if_exists(&staging)?;
    copy_tree(image, &staging, image)?;
    remove_if_exists(&disk)?;
    fs::rename(&staging, &disk)
}

/// Removes a file or directory tree; a missing path is fine.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes (or removes, for `None`) the custom-data file.
pub fn write_custom_data(dir: &InstanceDir, data: Option<&[u8]>) -> io::Result<()> {
    match data {
        // Unchanged data is not rewritten (a start after a stop is the common case).
        Some(bytes) if fs::read(dir.custom_data()).is_ok_and(|old| old == bytes) => Ok(()),
        Some(bytes) => write_atomic(&dir.custom_data(), bytes),
        None => remove_if_exists(&dir.custom_data()),
    }
}

fn copy_tree(src: &Path, dst: &Path, top: &Path) -> io::Result<()> {
    fs::create_dir(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ty = entry.file_type()?;
        if ty.is_dir() {
            copy_tree(&from, &to, top)?;
        } else if ty.is_file() {
            // std::fs::copy keeps the permission bits and uses copy_file_range (a reflink
            // where the file system can), never a hard link.
            fs::copy(&from, &to)?;
        } else if ty.is_symlink() {
            let target = fs::read_link(&from)?;
            if link_stays_inside(&from, &target, top) {
                std::os::unix::fs::symlink(&target, &to)?;
            } else {
                tracing::warn!(link = %from.display(), target = %target.display(), "Skipping a symbolic link that leaves the image");
            }
        } else {
            tracing::warn!(path = %from.display(), "Skipping a special file in the image");
        }
    }
    // Directory permissions last, so a read-only directory can still be filled.
    fs::set_permissions(dst, fs::metadata(src)?.permissions())
}

/// Whether a link at `link` (inside `top`) pointing to `target` resolves, lexically,
/// to a path inside `top`.
fn link_stays_inside(link: &Path, target: &Path, top: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let Ok(rel) = link.parent().unwrap_or(top).strip_prefix(top) else {
        return false;
    };
    let mut depth: Vec<&std::ffi::OsStr> = rel.iter().collect();
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_files_keeps_exec_bits_and_contains_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let image = tmp.path().join("image");
        fs::create_dir_all(image.join("sub")).expect("mkdir");
        fs::write(image.join("run.sh"), "#!/bin/sh\n").expect("write");
        fs::set_permissions(image.join("run.sh"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        fs::write(image.join("sub/data"), "x").expect("write");
        std::os::unix::fs::symlink("../run.sh", image.join("sub/inside")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", image.join("outside")).expect("link");
        std::os::unix::fs::symlink("../../x", image.join("sub/escape")).expect("link");

        let dir = InstanceDir {
            dir: tmp.path().join("inst"),
        };
        fs::create_dir(&dir.dir).expect("mkdir");
        create_disk(&dir, &image).expect("copy");
        let disk = dir.disk();
        let mode = fs::metadata(disk.join("run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_to_string(disk.join("sub/data")).expect("read"),
            "x"
        );
        assert_eq!(
            fs::read_link(disk.join("sub/inside")).expect("link"),
            Path::new("../run.sh")
        );
        assert!(fs::symlink_metadata(disk.join("outside")).is_err());
        assert!(fs::symlink_metadata(disk.join("sub/escape")).is_err());

        // Not a hard link: writing the copy leaves the image alone.
        fs::write(disk.join("sub/data"), "changed").expect("write");
        assert_eq!(
            fs::read_to_string(image.join("sub/data")).expect("read"),
            "x"
        );

        // A second create replaces the disk with a fresh copy.
        fs::write(disk.join("junk"), "j").expect("write");
        create_disk(&dir, &image).expect("copy again");
        assert!(!dir.disk().join("junk").exists());
    }

    #[test]
    fn keys_must_be_single_names() {
        assert!(is_valid_key(&InstanceKey("0000.rg.web.3".into())));
        for bad in ["", ".", "..", "a/b", ".hidden"] {
            assert!(!is_valid_key(&InstanceKey(bad.into())), "{bad}");
        }
    }
}
