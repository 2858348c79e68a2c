//! The two mount questions the process driver asks: what file system a path is on (a
//! namespace file, an overlay disk), and detaching a mount.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// True when `path` is on a file system of type `magic` (`statfs`'s `f_type`).
pub fn is_type(path: &Path, magic: i64) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
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
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path; MNT_DETACH unmounts lazily.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(e);
        }
    }
    Ok(())
}
