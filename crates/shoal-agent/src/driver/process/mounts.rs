//! The mount calls of the process driver: mounting (a namespace file's bind mount, an
//! overlay disk), what file system a path is on, and detaching a mount.

use std::ffi::CString;
use std::io;
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
