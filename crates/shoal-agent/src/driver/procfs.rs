//! Facts about processes read from `/proc`, and waiting for a process we did not spawn.
//! Both drivers use it: the process driver for an instance's process tree, the QEMU
//! driver for the `qemu-system-x86_64` process of a VM.
//!
//! A pid alone is not an identity: after the agent restarts, the pid in a state file may
//! belong to an unrelated process. [`start_time`] reads field 22 of `/proc/<pid>/stat`
//! (clock ticks since boot); together with the pid it names one process for the life of
//! the host. [`wait_exit`] waits for such an adopted process with a pidfd (or, on kernels
//! without `pidfd_open`, by polling `/proc`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The fields of `/proc/<pid>/stat` the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub pgrp: i32,
    /// utime + stime + cutime + cstime, in clock ticks.
    pub cpu_ticks: u64,
    pub start_time: u64,
}

/// Parses the contents of `/proc/<pid>/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    let num = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    let ticks = |n: usize| num(n).map(|v| v.max(0) as u64);
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: i32::try_from(num(5)?).ok()?,
        cpu_ticks: ticks(14)? + ticks(15)? + ticks(16)? + ticks(17)?,
        start_time: ticks(22)?,
    })
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The start time of `pid`, if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// True when `pid` is alive (not a zombie) and started at `start_time`.
pub fn is_same_alive(pid: u32, start_time: u64) -> bool {
    matches!(stat(pid), Some(s) if s.start_time == start_time && s.state != 'Z' && s.state != 'X')
}

/// SIGKILLs what is left of an instance's process group once its leader died: every
/// process in group `pgid` that started no earlier than the leader (`not_before`), so a
/// group id reused by an unrelated, older process is never touched. Returns how many.
pub fn kill_leftovers(pgid: u32, not_before: u64) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let ours = stat(pid).is_some_and(|st| {
            st.pgrp == pgid as i32 && st.start_time >= not_before && st.state != 'Z'
        });
        if ours && kill_pid(pid, libc::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Resident memory of `pid` (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Received and transmitted bytes over all interfaces but `lo` of the network namespace
/// `pid` lives in (`/proc/<pid>/net/dev`).
pub fn net_bytes(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    Some(parse_net_dev(&text))
}

/// Sums `/proc/net/dev` counters over all interfaces but `lo`.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let c: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if c.len() >= 9 {
            rx = rx.saturating_add(c[0]);
            tx = tx.saturating_add(c[8]);
        }
    }
    (rx, tx)
}

/// CPU time used by `pid` and its waited-for children, in nanoseconds.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.cpu_ticks.saturating_mul(1_000_000_000) / clock_ticks_per_second())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Opens a pidfd for `pid` (Linux 5.3+).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1;
    // no memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall succeeded, so `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// How the wait for an adopted process ended (its exit status is never known: it is not
/// our child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// It was already gone when the wait began (it ended while the agent was away).
    AlreadyGone,
    /// It ended while we waited.
    Ended,
}

/// Waits until the process `pid` (started at `start_time`) is gone. The process need not
/// be our child: a pidfd becomes readable when it exits.
pub async fn wait_exit(pid: u32, start_time: u64) -> WaitEnd {
    if !is_same_alive(pid, start_time) {
        return WaitEnd::AlreadyGone;
    }
    match pidfd_open(pid) {
        Ok(fd) => {
            // The pid might have been recycled between the check and the open: the
            // pidfd now pins one process, so checking again settles it.
            if !is_same_alive(pid, start_time) {
                return WaitEnd::AlreadyGone;
            }
            // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and
            // unchanged for its whole life and closes it on drop.
            match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                Ok(afd) => match afd.readable().await {
                    Ok(_guard) => return WaitEnd::Ended,
                    Err(e) => {
                        tracing::warn!(pid, error = %e, "Waiting on a pidfd failed; polling /proc instead")
                    }
                },
                Err(e) => {
                    tracing::warn!(pid, error = %e, "Cannot register a pidfd; polling /proc instead")
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return WaitEnd::AlreadyGone,
        Err(e) => tracing::debug!(pid, error = %e, "pidfd_open unavailable; polling /proc"),
    }
    while is_same_alive(pid, start_time) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    WaitEnd::Ended
}

/// Sends `signal` to the process group `pgid`. A group that no longer exists is not an
/// error.
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    kill_raw(-(pgid as i32), signal)
}

/// Sends `signal` to one process; a missing process is not an error.
pub fn kill_pid(pid: u32, signal: i32) -> io::Result<()> {
    kill_raw(pid as i32, signal)
}

fn kill_raw(target: i32, signal: i32) -> io::Result<()> {
    if target == 0 || target == -1 || target == 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pid 0, 1 or -1",
        ));
    }
    // SAFETY: kill takes plain integers; the target was checked not to be "everyone".
    let rc = unsafe { libc::kill(target, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (we) ird (name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 98765 1000 200 18446744073709551615";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.cpu_ticks, 7 + 3 + 2 + 1);
        assert_eq!(s.start_time, 98765);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                pgrp: 4242,
                cpu_ticks: 300,
                start_time: 987654
            })
        );
    }

    #[tokio::test]
    async fn a_process_that_is_gone_is_reported_as_gone() {
        let me = std::process::id();
        let st = start_time(me).expect("own stat");
        assert_eq!(wait_exit(me, st + 1).await, WaitEnd::AlreadyGone);
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let st = start_time(me).expect("own stat");
        assert!(is_same_alive(me, st));
        assert!(!is_same_alive(me, st + 1));
        assert!(rss_bytes(me).expect("own rss") > 0);
    }

    #[test]
    fn sums_net_dev_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text), (1000, 2000));
    }

    #[test]
    fn refuses_to_signal_everyone() {
        assert!(kill_pid(0, 0).is_err());
        assert!(kill_group(1, 0).is_err());
    }
}
