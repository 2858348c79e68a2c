//! What a VM's console log (`console.log`: the serial console and QEMU's own messages)
//! tells a user: how QEMU ended, and why a guest that never answered on its port may not
//! have. Data enters as the log file; it leaves as sentences for instance statuses and
//! boot-timeout messages.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

/// The last line QEMU itself wrote to the console log (its errors start with its name).
fn qemu_message(log: &Path) -> Option<String> {
    last_lines(log)
        .into_iter()
        .rev()
        .find(|l| l.starts_with("qemu-system") || l.starts_with("qemu:"))
}

/// The non-empty lines of the last 8 KiB of `log`, without control characters.
pub fn last_lines(log: &Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn describe_exit(status: std::process::ExitStatus, log: &Path) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(0), _) => "the VM powered off (QEMU exited with status 0)".to_string(),
        (Some(code), _) => format!("QEMU exited with status {code}"),
        (None, Some(9)) => "QEMU was killed by signal 9 (SIGKILL)".to_string(),
        (None, Some(sig)) => format!("QEMU was killed by signal {sig}"),
        _ => format!("QEMU ended ({status})"),
    };
    match (status.success(), qemu_message(log)) {
        (false, Some(msg)) => format!("{how}: {msg}"),
        _ => how,
    }
}

/// What to tell a user whose VM never answered on `guest_port`: the forwarding, the last
/// console line, and (under TCG) that a slow boot may need more time.
pub fn boot_hint(
    log: &Path,
    guest_port: u16,
    forwarded_from: Option<(Ipv4Addr, u16)>,
    accel: Option<&str>,
) -> String {
    let forwarded = forwarded_from
        .map(|(ip, p)| format!(" (forwarded from {ip}:{p})"))
        .unwrap_or_default();
    let console = match last_lines(log)
        .into_iter()
        .rev()
        .find(|l| !l.starts_with("--- shoal:"))
    {
        Some(line) => {
            let line: String = line.chars().take(200).collect();
            format!("; its last console line: \"{line}\"")
        }
        None => "; its console stayed empty (does the kernel honour console=ttyS0?)".into(),
    };
    let slow = if accel == Some("tcg") {
        "; VMs run on TCG (no usable KVM) here, so a slow boot may need a larger boot-timeout-seconds"
    } else {
        ""
    };
    format!(
        "the guest never answered on its port {guest_port}{forwarded}: make sure the image starts a server on that port (`--port` of `shoal image create`) and see the console with `shoal vmss logs`{console}{slow}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_names_qemus_own_complaint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("console.log");
        std::fs::write(
            &log,
            "--- shoal: booting ---\nqemu-system-x86_64: -kernel kernel: could not load kernel\n",
        )
        .expect("write");
        let status = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(
            describe_exit(status, &log),
            "QEMU exited with status 1: qemu-system-x86_64: -kernel kernel: could not load kernel"
        );
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(
            describe_exit(killed, &log),
            "QEMU was killed by signal 9 (SIGKILL): qemu-system-x86_64: -kernel kernel: could not load kernel"
        );
    }
}
