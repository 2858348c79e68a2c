//! Starting an instance's process without forking the server.
//!
//! `fork` of the agent (in `shoal serve`, a process of ~100 MB with dozens of threads)
//! copies its page tables for every instance; at 1000 instances that was most of the
//! scale-out's CPU time. And until the child called `exec` it held a copy of every
//! descriptor of the server, among them the store's locked database file: after a
//! `kill -9` of the server, a child caught between fork and exec kept the lock and an
//! immediate restart was refused.
//!
//! [`launch`] instead uses `clone(CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_PIDFD)`:
//! the child borrows the parent's memory and descriptor table (nothing is copied) and the
//! calling thread waits until the child has called `exec` (or failed). The child's first
//! system call, `close_range(3, ~0, CLOSE_RANGE_UNSHARE)`, gives it a table of its own
//! holding only descriptors 0–2, so no lock outlives the parent by more than a few
//! microseconds, and the cost of a start does not grow with the descriptors the agent
//! holds (a pidfd per running instance: copying and closing a thousand of them in every
//! child made a 0 → 1000 scale-out quadratic). Then it opens what it needs by path (its
//! network namespace, its cgroups' `cgroup.procs`, `/dev/null` and its console log),
//! enters its session, namespace, cgroups and working directory, drops to its user with
//! `NO_NEW_PRIVS`, resets its signal state, and execs. Everything it needs was prepared by
//! the parent beforehand: the child allocates nothing and calls only async-signal-safe
//! system calls.
//!
//! The new process's pidfd comes back with its pid; [`wait`] reaps it through the pidfd
//! and tells how it ended.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Stack for the child until it execs; it runs a few system calls only.
const CHILD_STACK: usize = 64 * 1024;

/// What the new process gets. Files are named by path and opened by the child (as the
/// caller's user, before it drops to `user`).
pub struct Launch<'a> {
    pub program: &'a Path,
    pub args: Vec<&'a OsStr>,
    /// `KEY=value` entries, the whole environment.
    pub env: Vec<(String, std::ffi::OsString)>,
    pub cwd: &'a Path,
    /// Standard output and error: appended to this file, which is made if missing.
    pub console: &'a Path,
    /// A network namespace (e.g. `/run/netns/NAME`) joined with `setns` before exec.
    pub netns: Option<&'a Path>,
    /// `cgroup.procs` files; the child writes "0" to each.
    pub cgroups: Vec<&'a Path>,
    /// Runs as this uid and gid with no supplementary groups and `NO_NEW_PRIVS`.
    pub user: Option<u32>,
}

/// A started process: its pid and the pidfd that pins it.
pub struct Launched {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// Which step of the child failed (reported with its errno).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Step {
    None = 0,
    Descriptors,
    Setsid,
    Netns,
    Cgroup,
    User,
    Chdir,
    Stdio,
    Exec,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::None => "start",
            Step::Descriptors => "leave the agent's descriptors behind",
            Step::Setsid => "start a session",
            Step::Netns => "join its network namespace",
            Step::Cgroup => "join its cgroups",
            Step::User => "drop to its own user",
            Step::Chdir => "enter its disk directory",
            Step::Stdio => "attach its console log",
            Step::Exec => "execute the program",
        }
    }
}

/// Everything the child reads, prepared by the parent; `failed`/`errno` are written by
/// the child (shared memory: `CLONE_VM`) and read after it has exec'd or exited.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    console: *const libc::c_char,
    /// Null when the namespace is not changed.
    netns: *const libc::c_char,
    cgroups: *const *const libc::c_char,
    cgroup_count: usize,
    user: Option<u32>,
    /// The caller's signal mask, restored in the child before exec.
    mask: libc::sigset_t,
    failed: Step,
    errno: i32,
}

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// `program` itself when it names a path, else the first executable of that name on the
/// agent's `PATH`.
fn resolve(program: &Path) -> io::Result<std::path::PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not on PATH", program.display()),
            )
        })
}

/// Starts `spec`'s program. Blocks the calling thread until the child has exec'd (well
/// under a millisecond; the parent's memory is not copied).
pub fn launch(spec: &Launch<'_>) -> io::Result<Launched> {
    let program = resolve(spec.program)?;
    let program = cstring(program.as_os_str().as_bytes(), "the program path")?;
    let args: Vec<CString> = std::iter::once(Ok(program.clone()))
        .chain(
            spec.args
                .iter()
                .map(|a| cstring(a.as_bytes(), "an argument")),
        )
        .collect::<io::Result<_>>()?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            cstring(&entry, "an environment variable")
        })
        .collect::<io::Result<_>>()?;
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let cwd = cstring(spec.cwd.as_os_str().as_bytes(), "the working directory")?;
    let console = cstring(spec.console.as_os_str().as_bytes(), "the console log path")?;
    let netns = match spec.netns {
        Some(path) => Some(cstring(path.as_os_str().as_bytes(), "the namespace path")?),
        None => None,
    };
    let cgroups: Vec<CString> = spec
        .cgroups
        .iter()
        .map(|p| cstring(p.as_os_str().as_bytes(), "a cgroup path"))
        .collect::<io::Result<_>>()?;
    let cgroup_ptrs: Vec<*const libc::c_char> = cgroups.iter().map(|c| c.as_ptr()).collect();

    // SAFETY: an all-zero sigset_t is a valid (empty) set; sigfillset fills it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut args_block = ChildArgs {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        console: console.as_ptr(),
        netns: netns.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
        cgroups: cgroup_ptrs.as_ptr(),
        cgroup_count: cgroup_ptrs.len(),
        user: spec.user,
        // SAFETY: as above, a valid empty set, filled by pthread_sigmask below.
        mask: unsafe { std::mem::zeroed() },
        failed: Step::None,
        errno: 0,
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down: hand clone its 16-byte aligned top.
    let top = {
        let end = stack.as_mut_ptr() as usize + CHILD_STACK;
        (end & !15) as *mut libc::c_void
    };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: sigfillset/pthread_sigmask take valid sigset pointers. No signal handler
    // may run in the child while it shares our memory, so every signal is blocked around
    // the clone (the child restores the old mask just before exec). clone gets a valid
    // stack top, a child function that touches only `args_block` (alive until clone
    // returns: CLONE_VFORK suspends this thread until the child has exec'd or exited) and
    // a valid pointer for the pidfd.
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut args_block.mask);
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM
                | libc::CLONE_VFORK
                | libc::CLONE_FILES
                | libc::CLONE_PIDFD
                | libc::SIGCHLD,
            (&raw mut args_block).cast(),
            &raw mut pidfd,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &args_block.mask, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    // SAFETY: clone with CLONE_PIDFD succeeded, so `pidfd` is a new descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(stack);
    // SAFETY: the child has exec'd or exited, so it no longer writes `args_block`; a
    // volatile read makes sure the compiler reads what it wrote.
    let (failed, errno) = unsafe {
        (
            std::ptr::read_volatile(&raw const args_block.failed),
            std::ptr::read_volatile(&raw const args_block.errno),
        )
    };
    if !matches!(failed, Step::None) {
        // It exited with 127; reap it so no zombie is left.
        let _ = reap(&pidfd);
        let cause = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(
            cause.kind(),
            format!("the new process could not {}: {cause}", failed.describe()),
        ));
    }
    Ok(Launched {
        pid: pid as u32,
        pidfd,
    })
}

/// The child, on its own stack in the parent's memory, before exec.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, valid until this function execs or
    // exits (the parent is suspended meanwhile). Only system calls follow.
    unsafe {
        let a = &mut *arg.cast::<ChildArgs>();
        let fail = |a: &mut ChildArgs, step: Step| -> libc::c_int {
            let errno = *libc::__errno_location();
            std::ptr::write_volatile(&raw mut a.errno, errno);
            std::ptr::write_volatile(&raw mut a.failed, step);
            libc::_exit(127)
        };
        // First: a descriptor table of our own with only 0-2 in it (copied; the
        // server's locked store file is not among them). Until this returns the table is
        // the parent's: nothing may be closed or opened before it. A kernel without
        // CLOSE_RANGE_UNSHARE (< 5.9) fails here, and the child goes without touching
        // the shared table.
        if libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        ) != 0
        {
            return fail(a, Step::Descriptors);
        }
        if libc::setsid() < 0 {
            return fail(a, Step::Setsid);
        }
        if !a.netns.is_null() {
            let fd = libc::open(a.netns, libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return fail(a, Step::Netns);
            }
            libc::close(fd);
        }
        for &path in std::slice::from_raw_parts(a.cgroups, a.cgroup_count) {
            let fd = libc::open(path, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return fail(a, Step::Cgroup);
            }
            libc::close(fd);
        }
        // Standard streams, opened with the caller's rights (the console log's directory
        // need not be open to the instance's user).
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        let console = libc::open(
            a.console,
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        );
        if devnull < 0
            || console < 0
            || libc::dup2(devnull, 0) < 0
            || libc::dup2(console, 1) < 0
            || libc::dup2(console, 2) < 0
        {
            return fail(a, Step::Stdio);
        }
        // (Either may have landed on 0-2 when the server runs without some of them.)
        for fd in [devnull, console] {
            if fd > 2 {
                libc::close(fd);
            }
        }
        // The directory is entered before the user is dropped (as std's Command does):
        // the directories above it need not be open to the instance's user.
        if libc::chdir(a.cwd) < 0 {
            return fail(a, Step::Chdir);
        }
        // Raw system calls, not libc's wrappers: those change the credentials of every
        // thread of the process (signalling each under a lock of libc's), and in this
        // child, which shares the parent's memory, "every thread" reads the parent's
        // threads: wasted signals, and a hang if the lock was held at the clone.
        if let Some(uid) = a.user {
            let (uid, null) = (uid as libc::c_long, std::ptr::null::<libc::gid_t>());
            if libc::syscall(libc::SYS_setgroups, 0 as libc::c_long, null) < 0
                || libc::syscall(libc::SYS_setgid, uid) < 0
                || libc::syscall(libc::SYS_setuid, uid) < 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            {
                return fail(a, Step::User);
            }
        }
        // Handlers are the parent's (e.g. the runtime's SIGCHLD); the program starts
        // with every caught signal at its default, and the caller's mask.
        for sig in 1..libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != libc::SIG_DFL
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &a.mask, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
        fail(a, Step::Exec)
    }
}

/// Reaps the process behind `pidfd` (which must be our child and have ended, or this
/// blocks) and returns how it ended.
fn reap(pidfd: &OwnedFd) -> io::Result<ExitStatus> {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it for the pidfd's process.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pidfd and siginfo pointer.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled a child-exit siginfo, whose si_status is valid.
    let status = unsafe { info.si_status() };
    // Re-encode as a wait(2) status so ExitStatus reads it.
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    };
    Ok(ExitStatus::from_raw(raw))
}

/// Waits (without blocking a thread) until the launched process ends, reaps it and
/// returns how it ended.
pub async fn wait(pidfd: OwnedFd) -> io::Result<ExitStatus> {
    // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and unchanged
    // for its whole life and closes it on drop.
    let afd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE)? };
    let _ready = afd.readable().await?;
    reap(afd.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn spec<'a>(args: Vec<&'a OsStr>, console: &'a Path) -> Launch<'a> {
        Launch {
            program: Path::new("/bin/sh"),
            args,
            env: vec![("GREETING".into(), "hello".into())],
            cwd: Path::new("/tmp"),
            console,
            netns: None,
            cgroups: Vec::new(),
            user: None,
        }
    }

    #[tokio::test]
    async fn runs_the_command_with_its_environment_output_and_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "before\n").unwrap();
        // Descriptors the child must not inherit (as the store's file would be), many of
        // them (as the agent holds a pidfd per instance), and all still the parent's
        // afterwards: the child shares the parent's table until it has one of its own.
        let secret = std::fs::File::create(dir.path().join("secret")).unwrap();
        let many: Vec<std::fs::File> = (0..500)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let script = format!(
            "echo $GREETING; pwd; ls /proc/self/fd | sort -n | tr '\\n' ' '; \
             test -e /proc/self/fd/{} && echo LEAKED; exit 7",
            secret.as_raw_fd()
        );
        let l = launch(&spec(vec!["-c".as_ref(), script.as_ref()], &log)).unwrap();
        let status = wait(l.pidfd).await.unwrap();
        assert_eq!(status.code(), Some(7));
        for f in many.iter().chain([&secret]) {
            // SAFETY: F_GETFD on a descriptor number only reads its flags.
            let open = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) } >= 0;
            assert!(open, "the parent lost descriptor {}", f.as_raw_fd());
        }
        let out = std::fs::read_to_string(&log).unwrap();
        // Appended, not overwritten.
        let out = out
            .strip_prefix("before\n")
            .expect("the log was appended to");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("hello"));
        assert_eq!(lines.next(), Some("/tmp"));
        // Only stdin, stdout, stderr (and ls's own directory descriptor).
        let fds: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert!(fds.len() <= 4, "descriptors in the child: {fds:?}");
        assert!(!out.contains("LEAKED"), "{out}");
        drop(secret);
    }

    #[tokio::test]
    async fn a_signal_ending_the_process_is_reported() {
        let l = launch(&spec(
            vec!["-c".as_ref(), "kill -9 $$".as_ref()],
            Path::new("/dev/null"),
        ))
        .unwrap();
        let status = wait(l.pidfd).await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn the_user_is_dropped_after_entering_a_directory_only_root_can_reach() {
        // SAFETY: geteuid reads the caller's effective uid.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root to run a process as another user");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let disk = top.path().join("disk");
        std::fs::create_dir(&disk).unwrap();
        std::os::unix::fs::chown(&disk, Some(4_242_424), Some(4_242_424)).unwrap();
        // In the directory only root can reach: opened before the user is dropped.
        let out = top.path().join("out");
        let mut s = spec(vec!["-c".as_ref(), "id -u; id -G; pwd".as_ref()], &out);
        s.cwd = &disk;
        s.user = Some(4_242_424);
        let l = launch(&s).unwrap();
        assert_eq!(wait(l.pidfd).await.unwrap().code(), Some(0));
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "4242424", "{text}");
        assert_eq!(lines[1], "4242424", "no supplementary groups: {text}");
        assert_eq!(lines.len(), 3, "{text}");
        // The child shared our memory: the agent itself (every thread) is still root.
        // SAFETY: geteuid reads the caller's effective uid.
        assert_eq!(unsafe { libc::geteuid() }, 0);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        for line in status
            .lines()
            .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
        {
            assert!(
                line.split_whitespace().skip(1).all(|id| id == "0"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_failing_step_is_named() {
        let mut s = spec(vec![], Path::new("/dev/null"));
        s.cwd = Path::new("/nonexistent/dir");
        let err = launch(&s).err().expect("must fail");
        assert!(
            err.to_string().contains("enter its disk directory"),
            "{err}"
        );
        s.cwd = Path::new("/tmp");
        s.program = Path::new("/nonexistent/program");
        let err = launch(&s).err().expect("must fail");
        assert!(err.to_string().contains("execute the program"), "{err}");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        s.program = Path::new("/bin/sh");
        s.console = Path::new("/nonexistent/dir/console.log");
        let err = launch(&s).err().expect("must fail");
        assert!(err.to_string().contains("attach its console log"), "{err}");
        s.console = Path::new("/dev/null");
        let missing = Path::new("/nonexistent/cgroup.procs");
        s.cgroups = vec![missing];
        let err = launch(&s).err().expect("must fail");
        assert!(err.to_string().contains("join its cgroups"), "{err}");
    }
}
