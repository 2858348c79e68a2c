//! The `qemu-system-x86_64` command line of one instance, built from plain values (no
//! I/O), so what a VM gets is readable and unit-tested in one place.
//!
//! - Machine `q35` with direct kernel boot when the image has a kernel (firmware is then
//!   only a few milliseconds), or the disk's own bootloader otherwise. `microvm` boots a
//!   little faster but, without a reference clock, the Debian kernel intermittently hangs
//!   calibrating its TSC under TCG, so it is not used.
//! - `-smp`/`-m` from the size; `-cpu host` under KVM.
//! - The serial console on stdout (the instance log); no display, no default devices.
//! - Virtio disk (a qcow2 overlay of the image's disk) and virtio network on QEMU's user
//!   network with one forwarded host port.
//! - Identity for the guest: `shoal.instance_id=N shoal.port=P` on the kernel command
//!   line, and fw_cfg files `opt/shoal/{instance_id,hostname,metadata_endpoint,custom_data}`;
//!   when the agent hands out managed identities also `opt/shoal/identity_endpoint` and
//!   `opt/shoal/identity_header` (the IDENTITY_ENDPOINT / IDENTITY_HEADER a process
//!   instance gets in its environment; the secret from a 0600 file, never on the command
//!   line, which every local user can read).
//! - QMP on a unix socket (relative to QEMU's working directory, the instance directory,
//!   so a deep data directory cannot exceed the 108-byte socket path limit).

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::image::{DiskFormat, VmImage};

/// The QMP socket and custom data file, relative to the instance directory.
pub const QMP_SOCKET: &str = "qmp.sock";
pub const CUSTOM_DATA: &str = "custom_data";
/// The instance's identity secret, relative to the instance directory.
pub const IDENTITY_HEADER: &str = "identity_header";
/// The overlay disk of an instance, relative to the instance directory.
pub const OVERLAY: &str = "disk.qcow2";
/// The NoCloud seed of a disk-only instance, relative to the instance directory.
pub const SEED: &str = "seed.iso";

/// Everything one boot needs.
#[derive(Debug, Clone)]
pub struct Boot<'a> {
    pub image: &'a VmImage,
    pub kvm: bool,
    pub vcpus: u32,
    pub memory_mb: u64,
    /// The instance's overlay of the image's disk, if the image has a disk.
    pub overlay: Option<PathBuf>,
    pub instance_id: &'a str,
    pub hostname: &'a str,
    /// The port the guest listens on, and the host port forwarded to it.
    pub guest_port: u16,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    /// Extra kernel command line from the image.
    pub cmdline: &'a str,
    pub metadata_endpoint: &'a str,
    pub has_custom_data: bool,
    /// The set has a managed identity: pass its endpoint and [`IDENTITY_HEADER`].
    pub has_identity: bool,
    /// Attach the NoCloud seed ([`SEED`]) as a second disk (disk-only images).
    pub seed: bool,
}

/// The kernel command line for a direct kernel boot.
pub fn kernel_cmdline(b: &Boot<'_>) -> String {
    let mut parts = vec![
        "console=ttyS0".to_string(),
        format!("shoal.instance_id={}", b.instance_id),
        format!("shoal.port={}", b.guest_port),
    ];
    if b.overlay.is_some() && b.image.initrd.is_none() {
        parts.push("root=/dev/vda".into());
        parts.push("rw".into());
    }
    let extra = b.cmdline.trim();
    if !extra.is_empty() {
        parts.push(extra.to_string());
    }
    parts.join(" ")
}

/// The arguments after `qemu-system-x86_64`.
pub fn args(b: &Boot<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    let accel = if b.kvm { "kvm" } else { "tcg" };
    push("-machine");
    push(&format!("q35,accel={accel}"));
    if b.kvm {
        push("-cpu");
        push("host");
    }
    push("-smp");
    push(&b.vcpus.max(1).to_string());
    push("-m");
    push(&format!("{}M", b.memory_mb.max(64)));
    for s in [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-qmp",
    ] {
        push(s);
    }
    push(&format!("unix:{QMP_SOCKET},server=on,wait=off"));
    if let Some(kernel) = &b.image.kernel {
        push("-kernel");
        a.push(kernel.clone().into_os_string());
        if let Some(initrd) = &b.image.initrd {
            a.push("-initrd".into());
            a.push(initrd.clone().into_os_string());
        }
        a.push("-append".into());
        a.push(kernel_cmdline(b).into());
    }
    let mut push = |s: &str| a.push(s.into());
    if let Some(overlay) = &b.overlay {
        push("-drive");
        push(&format!(
            "file={},if=none,id=disk0,format={},discard=unmap",
            overlay.display(),
            DiskFormat::Qcow2.as_str()
        ));
        push("-device");
        push(if b.image.kernel.is_some() {
            "virtio-blk-pci,drive=disk0"
        } else {
            "virtio-blk-pci,drive=disk0,bootindex=0"
        });
    }
    if b.seed {
        push("-drive");
        push(&format!(
            "file={SEED},if=none,id=seed,format=raw,readonly=on"
        ));
        push("-device");
        push("virtio-blk-pci,drive=seed");
    }
    push("-netdev");
    push(&format!(
        "user,id=net0,hostname={},hostfwd=tcp:{}:{}-:{}",
        b.hostname, b.host_ip, b.host_port, b.guest_port
    ));
    push("-device");
    push("virtio-net-pci,netdev=net0");
    push("-fw_cfg");
    push(&format!(
        "name=opt/shoal/instance_id,string={}",
        b.instance_id
    ));
    push("-fw_cfg");
    push(&format!("name=opt/shoal/hostname,string={}", b.hostname));
    push("-fw_cfg");
    push(&format!(
        "name=opt/shoal/metadata_endpoint,string={}",
        b.metadata_endpoint
    ));
    if b.has_custom_data {
        push("-fw_cfg");
        push(&format!("name=opt/shoal/custom_data,file={CUSTOM_DATA}"));
    }
    if b.has_identity {
        push("-fw_cfg");
        push(&format!(
            "name=opt/shoal/identity_endpoint,string={}{}",
            b.metadata_endpoint,
            crate::identity::TOKEN_PATH
        ));
        push("-fw_cfg");
        push(&format!(
            "name=opt/shoal/identity_header,file={IDENTITY_HEADER}"
        ));
    }
    a
}

/// The metadata endpoint as a guest on QEMU's user network reaches it: the host's
/// loopback is 10.0.2.2 there.
pub fn guest_metadata_endpoint(host_url: &str) -> String {
    for lo in ["127.0.0.1", "localhost", "[::1]"] {
        if let Some(rest) = host_url.strip_prefix(&format!("http://{lo}")) {
            return format!("http://10.0.2.2{rest}");
        }
    }
    host_url.to_string()
}

/// A fw_cfg `string=` value or hostname may not hold a comma (QEMU's option separator).
pub fn option_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:/".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(kernel: bool, initrd: bool, disk: bool) -> VmImage {
        VmImage {
            kernel: kernel.then(|| PathBuf::from("/img/kernel")),
            initrd: initrd.then(|| PathBuf::from("/img/initrd")),
            disk: disk.then(|| (PathBuf::from("/img/disk"), DiskFormat::Raw)),
        }
    }

    fn boot(img: &VmImage, overlay: bool) -> Boot<'_> {
        Boot {
            image: img,
            kvm: false,
            vcpus: 2,
            memory_mb: 512,
            overlay: overlay.then(|| PathBuf::from("/vms/k/disk.qcow2")),
            instance_id: "3",
            hostname: "web000003",
            guest_port: 8080,
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 30001,
            cmdline: " quiet ",
            metadata_endpoint: "http://10.0.2.2:7071/i/k",
            has_custom_data: true,
            has_identity: true,
            seed: false,
        }
    }

    fn joined(a: &[OsString]) -> String {
        a.iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_direct_boot_carries_identity_size_network_and_control() {
        let img = image(true, true, true);
        let a = joined(&args(&boot(&img, true)));
        for want in [
            "-machine q35,accel=tcg",
            "-smp 2 -m 512M",
            "-serial stdio",
            "-qmp unix:qmp.sock,server=on,wait=off",
            "-kernel /img/kernel -initrd /img/initrd",
            "-append console=ttyS0 shoal.instance_id=3 shoal.port=8080 quiet",
            "file=/vms/k/disk.qcow2,if=none,id=disk0,format=qcow2",
            "hostfwd=tcp:127.0.0.1:30001-:8080",
            "name=opt/shoal/instance_id,string=3",
            "name=opt/shoal/custom_data,file=custom_data",
            "name=opt/shoal/identity_endpoint,string=http://10.0.2.2:7071/i/k/metadata/identity/oauth2/token",
            "name=opt/shoal/identity_header,file=identity_header",
        ] {
            assert!(a.contains(want), "{want} missing in: {a}");
        }
        assert!(!a.contains("-cpu host"), "TCG has no host CPU model");
        assert!(
            !a.contains("bootindex"),
            "a direct boot does not boot the disk"
        );
    }

    #[test]
    fn kvm_a_bare_kernel_and_a_disk_only_image() {
        let img = image(true, false, true);
        let mut b = boot(&img, true);
        b.kvm = true;
        let a = joined(&args(&b));
        assert!(a.contains("q35,accel=kvm -cpu host"), "{a}");
        assert!(kernel_cmdline(&b).contains("root=/dev/vda rw"));

        let img = image(false, false, true);
        let mut b = boot(&img, true);
        b.seed = true;
        let a = joined(&args(&b));
        assert!(!a.contains("-kernel") && !a.contains("-append"), "{a}");
        assert!(a.contains("bootindex=0"), "{a}");
        assert!(
            a.contains("file=seed.iso,if=none,id=seed,format=raw,readonly=on"),
            "{a}"
        );
    }

    #[test]
    fn the_guest_reaches_the_host_loopback_through_the_user_network() {
        assert_eq!(
            guest_metadata_endpoint("http://127.0.0.1:7071/i/x"),
            "http://10.0.2.2:7071/i/x"
        );
        assert_eq!(
            guest_metadata_endpoint("http://10.1.2.3:7071/i/x"),
            "http://10.1.2.3:7071/i/x"
        );
        assert_eq!(option_safe("web,0 1"), "web-0-1");
    }
}
