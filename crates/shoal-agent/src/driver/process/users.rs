//! Instances run as users of their own, not as root: an agent running as root gives each
//! instance a uid (and gid) of its own from [`FIRST_UID`] on, derived from the instance's
//! key so it stays the same across restarts, hands the instance its disk and its custom
//! data, and drops to that user in the child before `exec` ([`crate::driver::launch`]) (supplementary groups cleared,
//! `PR_SET_NO_NEW_PRIVS` set, so no setuid binary can raise it again).
//!
//! The instance reaches its custom data through `/proc/self/cwd/../custom-data`: its
//! working directory is its disk, and the instance directory above it may be traversed
//! (mode 0711) but not listed, so no directory above the agent's data directory has to be
//! opened to other users.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The first uid handed to instances; [`UID_COUNT`] follow.
pub const FIRST_UID: u32 = 200_000;
/// How many uids instances draw from (two instances share one only on a hash collision).
pub const UID_COUNT: u32 = 1_000_000;

/// What `SHOAL_CUSTOM_DATA` names for an instance that runs as its own user.
pub const CUSTOM_DATA_FROM_DISK: &str = "/proc/self/cwd/../custom-data";

/// The uid (and gid) of the instance with `key`: FNV-1a of the key, in the range.
pub fn instance_uid(key: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    FIRST_UID + (h % u64::from(UID_COUNT)) as u32
}

/// Gives the instance in `dir` (disk `disk`, custom data `custom_data`) to `uid`: the disk
/// and everything in it (unless `disk_owned`: an idmapped disk shows `uid` as the owner
/// already), the custom data (readable by it only); the instance directory may be
/// traversed by it, not listed or written.
pub fn hand_over(
    dir: &Path,
    disk: &Path,
    custom_data: &Path,
    uid: u32,
    disk_owned: bool,
) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o711))?;
    if !disk_owned {
        chown_tree(disk, uid)?;
    }
    match fs::symlink_metadata(custom_data) {
        Ok(_) => {
            std::os::unix::fs::lchown(custom_data, Some(uid), Some(uid))?;
            fs::set_permissions(custom_data, fs::Permissions::from_mode(0o400))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `chown -R uid:uid path`, never following a symbolic link; what `uid` owns already is
/// left alone (on an overlay disk a `chown` copies the entry up, even to the same owner).
fn chown_tree(path: &Path, uid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path)?;
    if meta.uid() != uid || meta.gid() != uid {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_in_range_and_differ_between_instances() {
        let a = instance_uid("sub-rg-web-0");
        assert_eq!(a, instance_uid("sub-rg-web-0"));
        assert!((FIRST_UID..FIRST_UID + UID_COUNT).contains(&a));
        let distinct: std::collections::HashSet<u32> = (0..1000)
            .map(|i| instance_uid(&format!("sub-rg-web-{i}")))
            .collect();
        assert!(distinct.len() > 990, "{}", distinct.len());
    }
}
