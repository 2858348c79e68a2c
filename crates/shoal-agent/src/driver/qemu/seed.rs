//! The NoCloud seed of a disk-only VM: a tiny ISO 9660 image labelled `cidata` holding
//! `meta-data` (`instance-id`, `local-hostname`) and `user-data` (the decoded
//! `osProfile.customData`), which cloud-init in a cloud image finds and applies, as it
//! does with Azure's own provisioning data.
//!
//! Written by hand (a few sectors, no tool needed): sectors 0–15 empty, 16 the primary
//! volume descriptor, 17 the terminator, 18/19 the path tables (little/big endian), 20 the
//! root directory, then the two files. Names are ISO 9660 level 1 (`META-DATA.;1`); Linux
//! shows them as `meta-data` and `user-data`.

const SECTOR: usize = 2048;
const ROOT_DIR_SECTOR: u32 = 20;

fn both_u32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

fn both_u16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

/// A directory record; `name` is the identifier (`[0]` for ".", `[1]` for "..").
fn dir_record(name: &[u8], extent: u32, len: u32, dir: bool) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    r[2..10].copy_from_slice(&both_u32(extent));
    r[10..18].copy_from_slice(&both_u32(len));
    // 2000-01-01 00:00:00 UTC: years since 1900, month, day, hour, minute, second, tz.
    r[18..25].copy_from_slice(&[100, 1, 1, 0, 0, 0, 0]);
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both_u16(1));
    r[32] = name.len() as u8;
    r.extend_from_slice(name);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut b: Vec<u8> = text.bytes().take(len).collect();
    b.resize(len, b' ');
    b
}

/// The seed image for an instance.
pub fn nocloud_iso(instance_id: &str, hostname: &str, user_data: &[u8]) -> Vec<u8> {
    let meta = format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n").into_bytes();
    let sectors = |n: usize| n.div_ceil(SECTOR).max(1) as u32;
    let meta_sector = ROOT_DIR_SECTOR + 1;
    let user_sector = meta_sector + sectors(meta.len());
    let total = user_sector + sectors(user_data.len());
    let mut iso = vec![0u8; total as usize * SECTOR];

    let root = dir_record(&[0], ROOT_DIR_SECTOR, SECTOR as u32, true);

    // Primary volume descriptor.
    let pvd = &mut iso[16 * SECTOR..17 * SECTOR];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[8..40].copy_from_slice(&padded("LINUX", 32));
    pvd[40..72].copy_from_slice(&padded("cidata", 32));
    pvd[80..88].copy_from_slice(&both_u32(total));
    pvd[120..124].copy_from_slice(&both_u16(1));
    pvd[124..128].copy_from_slice(&both_u16(1));
    pvd[128..132].copy_from_slice(&both_u16(SECTOR as u16));
    pvd[132..140].copy_from_slice(&both_u32(10));
    pvd[140..144].copy_from_slice(&18u32.to_le_bytes());
    pvd[148..152].copy_from_slice(&19u32.to_be_bytes());
    pvd[156..190].copy_from_slice(&root);
    for (start, len) in [
        (190, 128),
        (318, 128),
        (446, 128),
        (574, 128),
        (702, 37),
        (739, 37),
        (776, 37),
    ] {
        pvd[start..start + len].copy_from_slice(&padded("", len));
    }
    for start in [813, 830, 847, 864] {
        pvd[start..start + 16].copy_from_slice(b"0000000000000000");
    }
    pvd[881] = 1;

    // Terminator.
    let term = &mut iso[17 * SECTOR..18 * SECTOR];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;

    // Path tables: the root only.
    let mut l = [0u8; 10];
    l[0] = 1;
    l[2..6].copy_from_slice(&ROOT_DIR_SECTOR.to_le_bytes());
    l[6..8].copy_from_slice(&1u16.to_le_bytes());
    iso[18 * SECTOR..18 * SECTOR + 10].copy_from_slice(&l);
    let mut m = [0u8; 10];
    m[0] = 1;
    m[2..6].copy_from_slice(&ROOT_DIR_SECTOR.to_be_bytes());
    m[6..8].copy_from_slice(&1u16.to_be_bytes());
    iso[19 * SECTOR..19 * SECTOR + 10].copy_from_slice(&m);

    // Root directory: ".", "..", then the files in name order.
    let mut dir = root.clone();
    dir.extend(dir_record(&[1], ROOT_DIR_SECTOR, SECTOR as u32, true));
    dir.extend(dir_record(
        b"META-DATA.;1",
        meta_sector,
        meta.len() as u32,
        false,
    ));
    dir.extend(dir_record(
        b"USER-DATA.;1",
        user_sector,
        user_data.len() as u32,
        false,
    ));
    let at = ROOT_DIR_SECTOR as usize * SECTOR;
    iso[at..at + dir.len()].copy_from_slice(&dir);

    let at = meta_sector as usize * SECTOR;
    iso[at..at + meta.len()].copy_from_slice(&meta);
    let at = user_sector as usize * SECTOR;
    iso[at..at + user_data.len()].copy_from_slice(user_data);
    iso
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finds a file in the root directory the way a reader of ISO 9660 does.
    fn read_file(iso: &[u8], name: &[u8]) -> Option<Vec<u8>> {
        let pvd = &iso[16 * SECTOR..];
        let root_extent = u32::from_le_bytes(pvd[158..162].try_into().ok()?) as usize;
        let mut dir = &iso[root_extent * SECTOR..(root_extent + 1) * SECTOR];
        while dir.first().is_some_and(|len| *len > 0) {
            let len = dir[0] as usize;
            let rec = &dir[..len];
            let id = &rec[33..33 + rec[32] as usize];
            if id == name {
                let extent = u32::from_le_bytes(rec[2..6].try_into().ok()?) as usize;
                let size = u32::from_le_bytes(rec[10..14].try_into().ok()?) as usize;
                return Some(iso[extent * SECTOR..extent * SECTOR + size].to_vec());
            }
            dir = &dir[len..];
        }
        None
    }

    #[test]
    fn the_seed_is_an_iso_labelled_cidata_with_both_files() {
        let user = b"#cloud-config\nruncmd:\n  - echo hi\n".repeat(100);
        let iso = nocloud_iso("vm-7", "web000007", &user);
        assert_eq!(iso.len() % SECTOR, 0);
        assert_eq!(&iso[16 * SECTOR + 1..16 * SECTOR + 6], b"CD001");
        assert_eq!(&iso[16 * SECTOR + 40..16 * SECTOR + 46], b"cidata");
        let total = u32::from_le_bytes(
            iso[16 * SECTOR + 80..16 * SECTOR + 84]
                .try_into()
                .unwrap_or_default(),
        );
        assert_eq!(total as usize * SECTOR, iso.len());
        assert_eq!(iso[17 * SECTOR], 255, "terminator");
        assert_eq!(
            read_file(&iso, b"META-DATA.;1").as_deref(),
            Some(&b"instance-id: vm-7\nlocal-hostname: web000007\n"[..])
        );
        assert_eq!(read_file(&iso, b"USER-DATA.;1"), Some(user));
        assert_eq!(
            read_file(&nocloud_iso("a", "b", b""), b"USER-DATA.;1"),
            Some(vec![])
        );
    }
}
