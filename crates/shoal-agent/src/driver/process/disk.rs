//! An instance's directory on the host and its "disk".
//!
//! ```text
//! <root>/<key>/
//!   disk/          working directory: the image bundle as the instance's own disk
//!   overlay/       (overlay disks) upper/ and work/ of the overlay mount at disk/
//!   console.log    stdout + stderr, appended across starts
//!   custom-data    decoded osProfile.customData (absent when there is none)
//!   state.json     see `state.rs`, written atomically by `driver/slot.rs`
//! ```
//!
//! Instance directories are spread over the file system's block groups
//! ([`spread_subdirs`]). The image directory is only read. A disk is one of two kinds:
//!
//! - **Overlay** (the default where the agent may mount: root, overlayfs with
//!   `metacopy`): `disk` is an overlay mount with the image directory as its read-only
//!   lower layer and `overlay/upper` (what the instance changed) above it, so a disk
//!   costs one mount instead of a copy of the image, every instance shares the image's
//!   pages in memory, and a write copies only the file written (a `chown` only its
//!   metadata). `overlay/` is root's alone (0700): the instance sees its disk only
//!   through the mount. The mount is made again after a host restart (the upper layer
//!   survives) and taken down before the directory goes. The layers are handed to the
//!   kernel as descriptors into detached copies of their mounts ([`Layers`]), where the
//!   kernel can take them (Linux 6.13+), so a mount's cost does not grow with the mounts
//!   already there.
//! - **Copy**: `disk` is a real copy (no hard links, so an instance can never change the
//!   image or another instance) that keeps permission bits (executables stay executable)
//!   and never follows a symbolic link: links are recreated only when they point inside
//!   the bundle, others are skipped with a warning.
//!
//! Either way an instance can never change the image or another instance's disk.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use super::mounts::{self, FdMountError};

use crate::driver::slot::write_atomic;
use crate::driver::InstanceKey;

pub const DISK_DIR: &str = "disk";
pub const CONSOLE_LOG: &str = "console.log";
pub const CUSTOM_DATA: &str = "custom-data";
pub const OVERLAY_DIR: &str = "overlay";

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
    pub fn overlay(&self) -> PathBuf {
        self.dir.join(OVERLAY_DIR)
    }
    /// The overlay's upper layer: what the instance changed.
    pub fn upper(&self) -> PathBuf {
        self.overlay().join("upper")
    }
    /// The overlay's work directory.
    pub fn work(&self) -> PathBuf {
        self.overlay().join("work")
    }
}

/// True when `key` is usable as a single directory name.
pub fn is_valid_key(key: &InstanceKey) -> bool {
    let k = &key.0;
    !k.is_empty() && k.len() <= 200 && !k.starts_with('.') && !k.contains('/') && !k.contains('\0')
}

/// How this host makes instance disks (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    Overlay,
    Copy,
}

impl DiskKind {
    /// Overlay disks when an overlay with `metacopy` mounts under `root` (root, overlayfs
    /// in the kernel), copies otherwise; `SHOAL_INSTANCE_DISKS=copy` asks for copies.
    pub fn detect(root: &Path) -> (DiskKind, String) {
        if std::env::var("SHOAL_INSTANCE_DISKS").is_ok_and(|v| v == "copy") {
            return (DiskKind::Copy, "copies (SHOAL_INSTANCE_DISKS=copy)".into());
        }
        let probe = InstanceDir {
            dir: root.join(".disk-probe"),
        };
        let result = (|| {
            remove_disk(&probe)?;
            let image = probe.dir.join("image");
            fs::create_dir_all(&image)?;
            let data = vec![7u8; 256 * 1024];
            fs::write(image.join("file"), &data)?;
            mount_overlay(&probe, &image, &Layers::new(root), None)?;
            // metacopy: an ownership change must not copy the file's data up (without
            // it, giving an instance its disk would copy the whole image).
            std::os::unix::fs::lchown(probe.disk().join("file"), Some(65534), Some(65534))?;
            let upper = fs::metadata(probe.overlay().join("upper/file"))?;
            if std::os::unix::fs::MetadataExt::blocks(&upper) * 512 >= data.len() as u64 {
                return Err(io::Error::other(
                    "overlayfs copies data on chown (no metacopy)",
                ));
            }
            if fs::read(probe.disk().join("file"))? != data {
                return Err(io::Error::other("overlay does not show its lower layer"));
            }
            Ok(())
        })();
        let _ = remove_disk(&probe).and_then(|()| remove_if_exists(&probe.dir));
        match result {
            Ok(()) => (DiskKind::Overlay, "overlay on the image".into()),
            Err(e) => (DiskKind::Copy, format!("copies (no overlay: {e})")),
        }
    }
}

/// Makes `<dir>/disk` a fresh disk of `image`: an overlay mount (`kind` Overlay and an
/// image path overlayfs can name) or a copy, built beside it and renamed into place so
/// a crash mid-copy never leaves a half disk under the real name. An overlay disk of an
/// instance that runs as `owner` shows it as the owner of everything where the kernel
/// can ([`Layers::owns`]).
pub fn create_disk(
    dir: &InstanceDir,
    image: &Path,
    kind: DiskKind,
    layers: &Layers,
    owner: Option<u32>,
) -> io::Result<()> {
    let meta = fs::metadata(image)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "image is not a directory",
        ));
    }
    remove_disk(dir)?;
    if kind == DiskKind::Overlay {
        match mount_overlay(dir, image, layers, owner) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(disk = %dir.disk().display(), error = %e, "Cannot mount an overlay disk; copying the image instead");
                remove_disk(dir)?;
            }
        }
    }
    let staging = dir.dir.join("disk.new");
    remove_if_exists(&staging)?;
    copy_tree(image, &staging, image)?;
    fs::rename(&staging, dir.disk())
}

/// Whether the instance has a disk to run from, mounting an overlay disk again where the
/// mount is gone (the host restarted) but its upper layer is there.
pub fn disk_ready(
    dir: &InstanceDir,
    image: &Path,
    layers: &Layers,
    owner: Option<u32>,
) -> io::Result<bool> {
    if dir.upper().is_dir() {
        if !is_overlay(&dir.disk()) {
            mount_overlay(dir, image, layers, owner)?;
        }
        return Ok(true);
    }
    Ok(dir.disk().is_dir())
}

/// Removes the disk of either kind (unmounting an overlay first); a missing disk is fine.
pub fn remove_disk(dir: &InstanceDir) -> io::Result<()> {
    unmount(&dir.disk())?;
    remove_if_exists(&dir.disk())?;
    remove_if_exists(&dir.overlay())
}

/// Takes down the overlay mount at `disk`, if there is one.
pub fn unmount(disk: &Path) -> io::Result<()> {
    if !is_overlay(disk) {
        return Ok(());
    }
    super::mounts::detach(disk)
}

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

fn is_overlay(path: &Path) -> bool {
    super::mounts::is_type(path, OVERLAYFS_SUPER_MAGIC)
}

/// Where overlay disks' layers are taken from: detached copies (`open_tree`) of the mount
/// of the instances' root and of each image's, made once and kept.
///
/// Why: at each mount overlayfs clones each layer's mount, and first walks every mount
/// under it (`has_locked_children`). Named by path, a layer's mount is the one all the
/// instances' disks are mounted on, so each new disk walked all the others: O(N²) for N
/// disks (the kernel's `is_subdir` was the largest kernel item of the agent in a
/// 1000-instance scale-out; a mount cost 90-100 µs from 0 to 1000 disks and ~540 µs with
/// 6000 mounts, against ~50-60 µs whatever the count through a detached copy, which has
/// no mounts under it). A kernel that takes no layers as descriptors gets paths.
///
/// The disk of an instance that runs as a user of its own shows that user as the owner
/// of the image's files through an idmapped copy of the image's mount (root's files
/// appear as the instance's), where the kernel has idmapped mounts: giving the instance
/// its disk then costs one mount attribute instead of a `chown` of every file of the
/// image, each copied up into the instance's layer (41 ms an instance for an image of
/// 2000 files, 0.2 ms idmapped, measured here). Elsewhere the files are `chown`ed.
#[derive(Debug)]
pub struct Layers {
    root: PathBuf,
    state: Mutex<LayerState>,
}

#[derive(Debug, Default)]
struct LayerState {
    /// The kernel takes no layers as descriptors: name them by path.
    by_path: bool,
    /// The kernel has no idmapped mounts (or refused one): `chown` instead.
    no_idmaps: bool,
    /// The disks mounted idmapped for their instance's user (no `chown` needed).
    owned: std::collections::HashSet<PathBuf>,
    root: Option<OwnedFd>,
    /// By image directory: the detached copy and the directory's (device, inode), checked
    /// at each use (an image removed and made again under the same name is another).
    images: HashMap<PathBuf, (OwnedFd, (u64, u64))>,
}

/// Images whose detached copies are kept (removed images' go once there are more).
const MAX_IMAGES: usize = 64;

impl Layers {
    /// Layers of instance directories under `root`.
    pub fn new(root: &Path) -> Layers {
        Layers {
            root: root.to_owned(),
            state: Mutex::default(),
        }
    }

    /// Whether the disk at `disk` shows its instance's user as the owner of all its files
    /// (mounted idmapped by this agent): no `chown` needed.
    pub fn owns(&self, disk: &Path) -> bool {
        self.lock().owned.contains(disk)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LayerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mounts `<dir>/disk` from descriptors, idmapped for `owner` where the kernel can;
    /// `None` when the kernel cannot (or `dir` is not under the root): the caller names
    /// the layers by path. The lock is held only to find (or make) the detached copies:
    /// disks of several instances are mounted at once.
    fn mount(&self, dir: &InstanceDir, image: &Path, owner: Option<u32>) -> Option<io::Result<()>> {
        let (upper, work) = (dir.upper(), dir.work());
        let upper_rel = upper.strip_prefix(&self.root).ok()?;
        let work_rel = work.strip_prefix(&self.root).ok()?;
        let (root, lower, idmaps) = match self.copies(image) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let mut no_idmaps = false;
        let result = (|| -> Result<bool, FdMountError> {
            let failed = FdMountError::Failed;
            let open = |p: &Path| mounts::open_dir_at(root.as_fd(), p).map_err(failed);
            let (upper_fd, work_fd) = (open(upper_rel)?, open(work_rel)?);
            let mapped = match owner.filter(|_| idmaps) {
                Some(uid) => match mounts::user_namespace(uid)
                    .and_then(|ns| mounts::idmapped_copy(lower.as_fd(), ns.as_fd()))
                {
                    Ok(copy) => {
                        // The disk's top directory is the upper layer's: the owner's too.
                        std::os::unix::fs::lchown(&upper, Some(uid), Some(uid)).map_err(failed)?;
                        Some(copy)
                    }
                    // This disk is given file by file; for good only where the kernel
                    // refuses idmapped mounts, not after a passing shortage.
                    Err(e) => {
                        no_idmaps = refused(&e);
                        tracing::info!(error = %e, for_good = no_idmaps, "Cannot mount an instance's disk idmapped; it is given to its user file by file (chown)");
                        None
                    }
                },
                None => None,
            };
            let lower = mapped.as_ref().map_or(lower.as_fd(), |m| m.as_fd());
            mounts::mount_overlay_fds(lower, upper_fd.as_fd(), work_fd.as_fd(), &dir.disk())?;
            Ok(mapped.is_some())
        })();
        let mut st = self.lock();
        st.no_idmaps |= no_idmaps;
        match result {
            Ok(idmapped) => {
                if idmapped {
                    st.owned.insert(dir.disk());
                }
                Some(Ok(()))
            }
            Err(FdMountError::Failed(e)) => Some(Err(e)),
            Err(FdMountError::Unsupported(e)) if refused(&e) => {
                st.paths_from_now_on(&e);
                None
            }
            Err(FdMountError::Unsupported(e)) => Some(Err(e)),
        }
    }

    /// Descriptors of the detached copies of the root and of `image` (made on first use,
    /// the image's checked by device and inode), and whether idmapped mounts are worth
    /// trying; `None` once the kernel has refused layers as descriptors.
    fn copies(&self, image: &Path) -> io::Result<Option<(OwnedFd, OwnedFd, bool)>> {
        let mut st = self.lock();
        if st.by_path {
            return Ok(None);
        }
        let unsupported = |st: &mut LayerState, e: io::Error| {
            if refused(&e) {
                st.paths_from_now_on(&e);
                Ok(None)
            } else {
                Err(e)
            }
        };
        if st.root.is_none() {
            match mounts::detached_tree(&self.root) {
                Ok(fd) => st.root = Some(fd),
                Err(e) => return unsupported(&mut st, e),
            }
        }
        let id = fs::metadata(image).map(|m| (m.dev(), m.ino()))?;
        if st.images.get(image).is_none_or(|(_, known)| *known != id) {
            if st.images.len() >= MAX_IMAGES {
                st.images.clear();
            }
            match mounts::detached_tree(image) {
                Ok(fd) => {
                    st.images.insert(image.to_owned(), (fd, id));
                }
                Err(e) => return unsupported(&mut st, e),
            }
        }
        let (Some(root), Some((lower, _))) = (&st.root, st.images.get(image)) else {
            return Err(io::Error::other("layer descriptors missing"));
        };
        Ok(Some((root.try_clone()?, lower.try_clone()?, !st.no_idmaps)))
    }
}

impl LayerState {
    /// The kernel refused layers as descriptors (`e`): name them by path from now on.
    fn paths_from_now_on(&mut self, e: &io::Error) {
        tracing::info!(error = %e, "Overlay layers cannot be given as descriptors here; naming them by path (each mount then walks the mounts beside it)");
        self.by_path = true;
    }
}

/// Whether `e` says the kernel does not do this at all (rather than failing this once).
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOSYS
                | libc::EINVAL
                | libc::EOPNOTSUPP
                | libc::EPERM
                | libc::ENODEV
                | libc::ENOSPC
        )
    )
}

/// Mounts `image` (read-only lower layer) under `<dir>/overlay/upper` at `<dir>/disk`.
fn mount_overlay(
    dir: &InstanceDir,
    image: &Path,
    layers: &Layers,
    owner: Option<u32>,
) -> io::Result<()> {
    let (overlay, disk) = (dir.overlay(), dir.disk());
    let named = |p: &Path| {
        let s = p
            .to_str()
            .filter(|s| !s.contains([',', ':', '\\']) && p.is_absolute());
        s.map(str::to_owned).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} cannot be named in overlay options", p.display()),
            )
        })
    };
    let image = image.canonicalize()?;
    let lower = named(&image)?;
    let (upper, work) = (dir.upper(), dir.work());
    for d in [&overlay, &upper, &work, &disk] {
        match fs::create_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    fs::set_permissions(
        &overlay,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    // Until it is mounted idmapped again, this disk is not known to be its user's (a
    // mount that fails ends in a copy, which is `chown`ed).
    layers.lock().owned.remove(&disk);
    if let Some(result) = layers.mount(dir, &image, owner) {
        return result;
    }
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={},metacopy=on",
        named(&upper)?,
        named(&work)?
    );
    super::mounts::mount(
        Path::new("overlay"),
        Path::new(&named(&disk)?),
        Some("overlay"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&options),
    )
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
    use std::os::unix::process::CommandExt;

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
        let layers = Layers::new(tmp.path());
        create_disk(&dir, &image, DiskKind::Copy, &layers, None).expect("copy");
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
        create_disk(&dir, &image, DiskKind::Copy, &layers, None).expect("copy again");
        assert!(!dir.disk().join("junk").exists());
    }

    /// Overlay disks, their layers given as descriptors and by path: the instance sees the
    /// image, its writes and ownership changes stay in its own layer (the image and a
    /// second instance's disk are untouched), a fresh disk forgets them, a lost mount
    /// comes back with the instance's changes, and removing the disk unmounts it first.
    #[test]
    fn overlay_disks_keep_the_image_and_other_instances_untouched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (kind, why) = DiskKind::detect(tmp.path());
        if kind != DiskKind::Overlay {
            crate::driver::skip_or_fail(
                "overlay_disks_keep_the_image_and_other_instances_untouched",
                &why,
            );
            return;
        }
        let by_fd = tmp.path().join("fds");
        fs::create_dir(&by_fd).expect("mkdir");
        overlay_disks_behave(&by_fd, &Layers::new(&by_fd));
        let by_path = tmp.path().join("paths");
        fs::create_dir(&by_path).expect("mkdir");
        // (Instance directories outside a Layers' root get their layers by path.)
        overlay_disks_behave(&by_path, &Layers::new(Path::new("/nonexistent")));
    }

    /// The options the kernel shows for the mount at `target` (`/proc/self/mountinfo`).
    fn mount_options(target: &Path) -> String {
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let target = target.to_str().expect("utf-8");
        info.lines()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    fn overlay_disks_behave(root: &Path, layers: &Layers) {
        let descriptors = layers.root == root;
        let image = root.join("image");
        fs::create_dir_all(image.join("sub")).expect("mkdir");
        fs::write(image.join("sub/data"), "x").expect("write");
        let instance = |name: &str| {
            let dir = InstanceDir {
                dir: root.join(name),
            };
            fs::create_dir(&dir.dir).expect("mkdir");
            create_disk(&dir, &image, DiskKind::Overlay, layers, None).expect("overlay disk");
            assert!(is_overlay(&dir.disk()), "an overlay mount");
            let options = mount_options(&dir.disk());
            let by_path = layers.state.lock().expect("layers").by_path;
            if descriptors && !by_path {
                assert!(options.contains("lowerdir+=/,"), "{options}");
            } else {
                assert!(
                    options.contains(&format!("lowerdir={}", image.display())),
                    "{options}"
                );
            }
            dir
        };
        let (a, b) = (instance("a"), instance("b"));
        let data =
            |dir: &InstanceDir| fs::read_to_string(dir.disk().join("sub/data")).expect("read");
        fs::write(a.disk().join("sub/data"), "changed").expect("write");
        fs::write(a.disk().join("new"), "n").expect("write");
        std::os::unix::fs::lchown(a.disk().join("sub"), Some(4242), Some(4242)).expect("chown");
        assert_eq!(data(&a), "changed");
        assert_eq!(
            fs::read_to_string(image.join("sub/data")).expect("read"),
            "x"
        );
        assert_eq!(data(&b), "x");
        assert!(!b.disk().join("new").exists());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(image.join("sub")).expect("meta").uid(), 0);

        // The mount is gone (a host restart): the disk comes back with a's changes.
        unmount(&a.disk()).expect("unmount");
        assert!(disk_ready(&a, &image, layers, None).expect("ready"));
        assert_eq!(data(&a), "changed");

        // A fresh disk (reimage) is the image again.
        create_disk(&a, &image, DiskKind::Overlay, layers, None).expect("fresh");
        assert_eq!(data(&a), "x");
        assert!(!a.disk().join("new").exists());

        // Removing unmounts and leaves the image alone.
        remove_disk(&a).expect("remove");
        assert!(!a.disk().exists() && !a.overlay().exists());
        assert!(!disk_ready(&a, &image, layers, None).expect("no disk"));
        remove_disk(&b).expect("remove");
        fs::remove_dir_all(&b.dir).expect("then it goes");
        assert_eq!(
            fs::read_to_string(image.join("sub/data")).expect("read"),
            "x"
        );
    }

    /// An overlay disk for an instance that runs as its own user shows that user as the
    /// owner of every file of the image (idmapped, no `chown`): it can change them and add
    /// files anywhere, what it writes is its own in its layer, and the image still
    /// belongs to root, unchanged.
    #[test]
    fn an_instance_owns_its_overlay_disk_without_a_chown() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (kind, why) = DiskKind::detect(tmp.path());
        if kind != DiskKind::Overlay {
            crate::driver::skip_or_fail("an_instance_owns_its_overlay_disk_without_a_chown", &why);
            return;
        }
        let image = tmp.path().join("image");
        fs::create_dir_all(image.join("sub")).expect("mkdir");
        fs::write(image.join("sub/data"), "x").expect("write");
        fs::set_permissions(&image, fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = InstanceDir {
            dir: tmp.path().join("inst"),
        };
        fs::create_dir(&dir.dir).expect("mkdir");
        // The instance directory's parents must let the instance's user reach its disk.
        for p in [tmp.path(), &dir.dir] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o711)).expect("chmod");
        }
        let layers = Layers::new(tmp.path());
        let uid = 4242;
        create_disk(&dir, &image, DiskKind::Overlay, &layers, Some(uid)).expect("disk");
        if !layers.owns(&dir.disk()) {
            crate::driver::skip_or_fail(
                "an_instance_owns_its_overlay_disk_without_a_chown",
                "this kernel has no idmapped mounts or no overlay layers as descriptors",
            );
            return;
        }
        use std::os::unix::fs::MetadataExt;
        for p in ["", "sub", "sub/data"] {
            let m = fs::metadata(dir.disk().join(p)).expect("meta");
            assert_eq!((m.uid(), m.gid()), (uid, uid), "{p} on the disk");
        }
        let out = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "echo more >> sub/data && mkdir sub/new && echo n > sub/new/file",
            ])
            .current_dir(dir.disk())
            .uid(uid)
            .gid(uid)
            .output()
            .expect("run as the instance's user");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read_to_string(dir.disk().join("sub/data")).expect("read"),
            "xmore\n"
        );
        let made = fs::metadata(dir.overlay().join("upper/sub/new/file")).expect("in its layer");
        assert_eq!(made.uid(), uid, "what it makes is its own in its layer");
        assert_eq!(
            fs::read_to_string(image.join("sub/data")).expect("read"),
            "x"
        );
        assert_eq!(fs::metadata(image.join("sub/data")).expect("meta").uid(), 0);
        assert!(!image.join("sub/new").exists());

        // Mounted again after a host restart: still its own.
        unmount(&dir.disk()).expect("unmount");
        assert!(disk_ready(&dir, &image, &layers, Some(uid)).expect("ready"));
        assert!(layers.owns(&dir.disk()));
        assert_eq!(
            fs::metadata(dir.disk().join("sub")).expect("meta").uid(),
            uid
        );
        remove_disk(&dir).expect("remove");
    }

    #[test]
    fn keys_must_be_single_names() {
        assert!(is_valid_key(&InstanceKey("0000.rg.web.3".into())));
        for bad in ["", ".", "..", "a/b", ".hidden"] {
            assert!(!is_valid_key(&InstanceKey(bad.into())), "{bad}");
        }
    }
}
