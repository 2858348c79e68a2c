//! The mount calls of the process driver: mounting (a namespace file's bind mount, an
//! overlay disk, by path or from layers given as descriptors), detached copies of a mount,
//! what file system a path is on, and detaching a mount.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)
}

/// `mount(2)` of `source` at `target`; `fstype` and `data` only where the kind of mount
/// takes them (a bind mount takes neither).
pub fn mount(
    source: &Path,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let (source, target) = (c_path(source)?, c_path(target)?);
    let c = |s: Option<&str>| s.map(CString::new).transpose().map_err(io::Error::other);
    let (fstype, data) = (c(fstype)?, c(data)?);
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null
    // where the mount takes none.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when `path` is on a file system of type `magic` (`statfs`'s `f_type`).
pub fn is_type(path: &Path, magic: i64) -> bool {
    let Ok(c) = c_path(path) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == magic
    }
}

/// Detaches the mount at `path` (lazily: users still inside keep it until they leave);
/// nothing mounted there, or no such path, is fine.
pub fn detach(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; MNT_DETACH unmounts lazily.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(e);
        }
    }
    Ok(())
}

// The new mount API (`linux/mount.h`; not all in the `libc` crate).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn fd_result(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the system call returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`), rooted at
/// `path`, without the mounts under it.
pub fn detached_tree(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; the flags ask for a new descriptor.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })
}

/// An `O_PATH` descriptor of the directory `rel` under `dir` (on `dir`'s mount).
pub fn open_dir_at(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let c = c_path(rel)?;
    // SAFETY: `dir` is an open descriptor and `c` a valid NUL-terminated relative path.
    let rc = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    fd_result(libc::c_long::from(rc))
}

/// Why [`mount_overlay_fds`] failed: the kernel takes no layers as descriptors (before
/// Linux 6.13: name them by path instead), or the mount itself failed.
#[derive(Debug)]
pub enum FdMountError {
    Unsupported(io::Error),
    Failed(io::Error),
}

/// Mounts an overlay at `target` from layers given as descriptors (`lower`, `upper`,
/// `work`: directories, e.g. `O_PATH` ones), with `metacopy=on`, `nosuid`, `nodev`.
pub fn mount_overlay_fds(
    lower: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    work: BorrowedFd<'_>,
    target: &Path,
) -> Result<(), FdMountError> {
    let failed = |_: ()| FdMountError::Failed(io::Error::last_os_error());
    let target = c_path(target).map_err(FdMountError::Failed)?;
    // SAFETY: every call gets descriptors we hold open, NUL-terminated key and value
    // strings that outlive it, or null where the command takes none.
    unsafe {
        let fs = fd_result(libc::syscall(
            libc::SYS_fsopen,
            c"overlay".as_ptr(),
            FSOPEN_CLOEXEC,
        ))
        .map_err(FdMountError::Unsupported)?;
        let config = |cmd: libc::c_uint,
                      key: Option<&std::ffi::CStr>,
                      value: *const libc::c_void,
                      aux: libc::c_int| {
            let key = key.map_or(std::ptr::null(), |k| k.as_ptr());
            if libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key, value, aux) < 0 {
                Err(())
            } else {
                Ok(())
            }
        };
        // An older overlayfs does not know `lowerdir+`, or layers as descriptors.
        for (key, fd) in [(c"lowerdir+", lower), (c"upperdir", upper)] {
            config(FSCONFIG_SET_FD, Some(key), std::ptr::null(), fd.as_raw_fd())
                .map_err(|()| FdMountError::Unsupported(io::Error::last_os_error()))?;
        }
        config(
            FSCONFIG_SET_FD,
            Some(c"workdir"),
            std::ptr::null(),
            work.as_raw_fd(),
        )
        .map_err(failed)?;
        config(
            FSCONFIG_SET_STRING,
            Some(c"source"),
            c"overlay".as_ptr().cast(),
            0,
        )
        .map_err(failed)?;
        config(
            FSCONFIG_SET_STRING,
            Some(c"metacopy"),
            c"on".as_ptr().cast(),
            0,
        )
        .map_err(failed)?;
        config(FSCONFIG_CMD_CREATE, None, std::ptr::null(), 0).map_err(failed)?;
        let mnt = fd_result(libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        ))
        .map_err(FdMountError::Failed)?;
        if libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) < 0
        {
            return Err(FdMountError::Failed(io::Error::last_os_error()));
        }
    }
    Ok(())
}

const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the detached mount `tree` whose files appear owned as `userns`
/// maps them (an idmapped mount): with the map `0 <uid> 1`, what root owns appears owned
/// by `uid`, and what `uid` creates through it is stored as root's.
pub fn idmapped_copy(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: `tree` is an open descriptor; the empty path with AT_EMPTY_PATH names it.
    let copy = fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            tree.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH | OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `copy` is an open descriptor, `attr` a valid struct of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            copy.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(copy)
}

/// A user namespace mapping uid and gid 0 to `id` (one each), for [`idmapped_copy`].
///
/// A user namespace's maps are written from outside by a process in it, so a child is
/// cloned into a new one (sharing our memory, on a small stack of its own, doing nothing
/// but wait), its maps written, its namespace opened, and the child killed and reaped.
/// It sends no `SIGCHLD` (reaped here with `__WALL`). See [`UserNsChild`] for why it
/// holds none of our descriptors.
pub fn user_namespace(id: u32) -> io::Result<OwnedFd> {
    let child = UserNsChild::start()?;
    let map = format!("0 {id} 1");
    std::fs::write(format!("/proc/{}/uid_map", child.pid), &map)?;
    std::fs::write(format!("/proc/{}/gid_map", child.pid), &map)?;
    Ok(std::fs::File::open(format!("/proc/{}/ns/user", child.pid))?.into())
}

/// The child [`user_namespace`] makes its namespace with, killed and reaped when dropped.
///
/// Its first act is to drop its share of our descriptor table (keeping none of it) and
/// to ask for `SIGKILL` when we die: a child holding copies of our descriptors would keep
/// the state store's lock after a `kill -9` of the agent and make the next `shoal serve`
/// wait for it and fail (seen once in the kill-and-restart e2e loop).
struct UserNsChild {
    pid: libc::pid_t,
    /// The child's stack, freed only once the child is reaped.
    _stack: Vec<u8>,
}

impl UserNsChild {
    fn start() -> io::Result<Self> {
        extern "C" fn wait_forever(parent: *mut libc::c_void) -> libc::c_int {
            // SAFETY: plain system calls with integer arguments; nothing here touches
            // memory (the child shares ours).
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    0u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_UNSHARE,
                );
                libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // We died before the request took: nobody will kill this child.
                if libc::syscall(libc::SYS_getppid) != parent as libc::c_long {
                    libc::syscall(libc::SYS_exit, 0);
                }
                loop {
                    libc::syscall(libc::SYS_pause);
                }
            }
        }
        let mut stack = vec![0u8; 16 * 1024];
        // SAFETY: the top of a live, writable buffer (stacks grow down; 16-byte aligned
        // by rounding down) that `Self` keeps until the child is reaped; the child makes
        // system calls only. Every signal is blocked around the clone (the child keeps
        // that mask for good: only SIGKILL, which cannot be blocked, ends it), so none of
        // our handlers ever runs in it on memory it shares with us.
        let (pid, clone_error) = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let top = stack.as_mut_ptr().add(stack.len()) as usize & !0xf;
            let pid = libc::clone(
                wait_forever,
                top as *mut libc::c_void,
                libc::CLONE_NEWUSER | libc::CLONE_VM | libc::CLONE_FILES,
                libc::getpid() as usize as *mut libc::c_void,
            );
            let clone_error = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            (pid, clone_error)
        };
        if pid < 0 {
            return Err(clone_error);
        }
        Ok(Self { pid, _stack: stack })
    }
}

impl Drop for UserNsChild {
    fn drop(&mut self) {
        // SAFETY: our own child by pid; waiting for it with __WALL (no exit signal).
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.pid, &mut status, libc::__WALL) < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child that makes a user namespace keeps none of the agent's descriptors (the
    /// state store's lock is one): were the agent killed while the child lives, the next
    /// start would find the store locked.
    #[test]
    fn the_user_namespace_child_holds_none_of_our_descriptors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let _held = std::fs::File::create(tmp.path().join("store")).expect("create");
        let child = match UserNsChild::start() {
            Ok(child) => child,
            Err(e) => {
                let why = format!("cannot clone into a new user namespace: {e}");
                crate::driver::skip_or_fail(
                    "the_user_namespace_child_holds_none_of_our_descriptors",
                    &why,
                );
                return;
            }
        };
        let open = || std::fs::read_dir(format!("/proc/{}/fd", child.pid)).map(Iterator::count);
        // Up to 5 s for the child to run its first system call.
        for _ in 0..5000 {
            if open().expect("the child's descriptors") == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(
            open().expect("the child's descriptors"),
            0,
            "the child still holds descriptors"
        );
        // And the namespace is still usable.
        let map = format!("0 {} 1", 4242);
        std::fs::write(format!("/proc/{}/uid_map", child.pid), map).expect("uid_map");
    }
}
