//! The QEMU process seen from `/proc`: its identity (pid + start time, so a recycled pid
//! is never mistaken for our VM after the agent restarts), CPU time and memory, and
//! waiting for a process that is not our child (a VM adopted after a restart).
//!
//! The process driver has the same facts in its private `procfs` module; this one keeps
//! only what a VM needs, so the two drivers stay independent.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Fields of `/proc/<pid>/stat`: state, CPU ticks (utime + stime), start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub cpu_ticks: u64,
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`; the command (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        state: fields.first()?.chars().next()?,
        cpu_ticks: field(14)? + field(15)?,
        start_time: field(22)?,
    })
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// True when `pid` is alive (not a zombie) and is the process that started at `start_time`.
pub fn is_same_alive(pid: u32, start_time: u64) -> bool {
    matches!(stat(pid), Some(s) if s.start_time == start_time && s.state != 'Z' && s.state != 'X')
}

/// CPU time used by `pid`, in nanoseconds.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    // SAFETY: sysconf reads a constant of the C library; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    stat(pid).map(|s| s.cpu_ticks.saturating_mul(1_000_000_000) / hz)
}

/// Resident memory of `pid` (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn kill(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes a pid and a signal number; no memory is shared.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Waits until `pid` (started at `start_time`) is gone; it need not be our child.
pub async fn wait_exit(pid: u32, start_time: u64) -> String {
    if !is_same_alive(pid, start_time) {
        return "ended while the agent was away".into();
    }
    if let Ok(fd) = pidfd_open(pid) {
        // The pid could have been recycled between the check and the open: the pidfd
        // now pins one process, so checking again settles it.
        if !is_same_alive(pid, start_time) {
            return "ended while the agent was away".into();
        }
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and unchanged
        // for its whole life and closes it on drop.
        if let Ok(afd) = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            if afd.readable().await.is_ok() {
                return "ended (it was adopted, so its exit status is unknown)".into();
            }
        }
    }
    // No pidfd (Linux before 5.3): poll.
    while is_same_alive(pid, start_time) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    "ended (it was adopted, so its exit status is unknown)".into()
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
    // memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so `fd` is a fresh descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                cpu_ticks: 300,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let start = start_time(me).expect("own start time");
        assert!(is_same_alive(me, start));
        assert!(!is_same_alive(me, start + 1));
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
    }
}
