//! Checks of a VM image version (`properties.shoal.kind = "vm"`) before it is stored:
//! which files it names, and that its uploaded bundle really holds them, so a bundle
//! without a kernel is refused at image creation rather than when instances boot.
//!
//! A VM bundle holds `kernel`, `initrd` and/or `disk` at its top level (what
//! `shoal image create --kind vm` uploads); the agent's QEMU driver boots from those.

use std::path::Path;

use shoal_model::error::ArmError;
use shoal_model::records::ImageVersionShoal;

/// The longest kernel command line x86 Linux takes.
const MAX_CMDLINE: usize = 2048;

/// The fields of a VM image version, before its bundle is looked at.
pub fn check_fields(ext: &ImageVersionShoal) -> Result<(), ArmError> {
    let named = |field: &Option<String>, name: &str| -> Result<bool, ArmError> {
        match field.as_deref() {
            None => Ok(false),
            Some(n) if n == name => Ok(true),
            Some(other) => Err(ArmError::invalid_parameter(
                format!("properties.shoal.{name}"),
                format!(
                    "A VM bundle holds its {name} as `{name}` at its top level, not '{other}': `shoal image create --kind vm --{name} FILE` uploads it so."
                ),
            )),
        }
    };
    let kernel = named(&ext.kernel, "kernel")?;
    let initrd = named(&ext.initrd, "initrd")?;
    let disk = named(&ext.disk, "disk")?;
    if !kernel && !disk {
        return Err(ArmError::invalid_parameter(
            "properties.shoal.kernel",
            "A VM image needs a kernel (with an optional initrd and disk) or a bootable disk: `shoal image create --kind vm --kernel FILE [--initrd FILE] [--disk FILE]` or `--disk FILE`.",
        ));
    }
    if initrd && !kernel {
        return Err(ArmError::invalid_parameter(
            "properties.shoal.initrd",
            "An initrd needs a kernel to boot it with: add --kernel.",
        ));
    }
    if !ext.command.trim().is_empty() {
        return Err(ArmError::invalid_parameter(
            "properties.shoal.command",
            "A VM image runs its own init, not a command: leave command out (extra kernel arguments go in cmdline).",
        ));
    }
    if !ext.cmdline.is_empty() && !kernel {
        return Err(ArmError::invalid_parameter(
            "properties.shoal.cmdline",
            "A kernel command line needs a kernel: a disk-only image boots with its own bootloader's.",
        ));
    }
    if ext.cmdline.len() > MAX_CMDLINE || ext.cmdline.chars().any(char::is_control) {
        return Err(ArmError::invalid_parameter(
            "properties.shoal.cmdline",
            format!("The kernel command line must be one line of at most {MAX_CMDLINE} bytes."),
        ));
    }
    Ok(())
}

/// Looks through the uploaded bundle (a tar) for the files `ext` names.
pub async fn check_bundle(tar_path: &Path, ext: &ImageVersionShoal) -> Result<(), ArmError> {
    let wanted: Vec<String> = [&ext.kernel, &ext.initrd, &ext.disk]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let path = tar_path.to_path_buf();
    let found = tokio::task::spawn_blocking(move || top_level_files(&path))
        .await
        .map_err(|e| ArmError::internal(format!("Reading the bundle stopped: {e}")))?
        .map_err(|e| {
            ArmError::invalid_parameter(
                "properties.shoal.blobId",
                format!("The uploaded bundle is not a readable tar archive ({e}): upload it again with `shoal image create`."),
            )
        })?;
    for name in wanted {
        match found.iter().find(|(n, _)| *n == name) {
            None => {
                return Err(ArmError::invalid_parameter(
                    format!("properties.shoal.{name}"),
                    format!("The uploaded bundle has no `{name}` file: upload the {name} with `shoal image create --kind vm --{name} FILE`."),
                ))
            }
            Some((_, 0)) => {
                return Err(ArmError::invalid_parameter(
                    format!("properties.shoal.{name}"),
                    format!("The bundle's `{name}` is empty: give --{name} the real file."),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// (name, size) of the regular files at the top level of a tar.
fn top_level_files(path: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_string();
        if !name.contains('/') {
            out.push((name, entry.size()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(kernel: bool, initrd: bool, disk: bool) -> ImageVersionShoal {
        ImageVersionShoal {
            kind: "vm".into(),
            command: String::new(),
            port: 8080,
            blob_id: "b".into(),
            size: 0,
            kernel: kernel.then(|| "kernel".into()),
            initrd: initrd.then(|| "initrd".into()),
            disk: disk.then(|| "disk".into()),
            cmdline: String::new(),
        }
    }

    #[test]
    fn a_vm_image_names_a_kernel_or_a_disk_by_the_bundle_names() {
        assert!(check_fields(&vm(true, true, true)).is_ok());
        assert!(check_fields(&vm(false, false, true)).is_ok());
        let e = check_fields(&vm(false, false, false)).expect_err("nothing to boot");
        assert_eq!(e.target.as_deref(), Some("properties.shoal.kernel"));
        let e = check_fields(&vm(false, true, true)).expect_err("initrd alone");
        assert_eq!(e.target.as_deref(), Some("properties.shoal.initrd"));
        let mut odd = vm(true, false, false);
        odd.kernel = Some("vmlinuz".into());
        assert!(check_fields(&odd)
            .expect_err("other name")
            .message
            .contains("as `kernel`"));
        let mut cmd = vm(true, false, false);
        cmd.command = "./run".into();
        assert!(check_fields(&cmd).is_err());
        let mut line = vm(true, false, false);
        line.cmdline = "quiet\nx".into();
        assert!(check_fields(&line).is_err());
    }

    #[tokio::test]
    async fn the_bundle_must_hold_the_named_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "kernel", &b"HdrS"[..])
            .expect("append");
        let mut empty = tar::Header::new_gnu();
        empty.set_size(0);
        empty.set_mode(0o644);
        empty.set_cksum();
        builder
            .append_data(&mut empty, "initrd", &b""[..])
            .expect("append");
        builder.finish().expect("finish");
        drop(builder);

        assert!(check_bundle(&path, &vm(true, false, false)).await.is_ok());
        let e = check_bundle(&path, &vm(true, false, true))
            .await
            .expect_err("no disk");
        assert!(e.message.contains("has no `disk`"), "{}", e.message);
        let e = check_bundle(&path, &vm(true, true, false))
            .await
            .expect_err("empty initrd");
        assert!(e.message.contains("empty"), "{}", e.message);
        std::fs::write(&path, b"not a tar at all, just text").expect("write");
        assert!(check_bundle(&path, &vm(true, false, false)).await.is_err());
    }
}
