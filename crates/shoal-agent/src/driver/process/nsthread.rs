//! The namespace thread: one long-lived thread of the agent makes every network
//! namespace, one after another.
//!
//! A namespace is made by a thread that moves into a new one (`unshare(CLONE_NEWNET)`),
//! configures it from inside, and moves back (`setns` to the host's). The kernel
//! serializes that work on its rtnl lock whoever does it, so one thread loses nothing
//! (measured earlier: two threads were no faster, 1000 at once took ~10 ms each), and it
//! is kept: made by a new thread each, behind a semaphore, every namespace of a
//! burst also paid a thread's start and end and two hand-offs at normal priority (the
//! semaphore's next waiter on the runtime, then a blocking-pool thread) on cores busy
//! with the instances being started. In a 1000-instance scale-out with a namespace each
//! they came 3.8 ms apart while each needed ~1 ms of work, and the scale-out waited for
//! them. Here the next job is already queued when one ends, and the thread runs at
//! nice -10 (when the agent may raise it), ahead of the workloads it is starting.
//!
//! Jobs are closures ([`run`] blocks for the result, [`run_async`] awaits it); a job that
//! runs on the thread already ([`on_it`]) calls on inline. A job that panics, or a thread
//! that cannot get back into the host's namespace, ends the thread; the next job starts
//! a new one.

use std::cell::{Cell, OnceCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// The queue of the running thread (`None` before the first job, or after it ended).
static QUEUE: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// The nice value of the thread: ahead of the instances whose start waits for it.
const NICE: libc::c_int = -10;

thread_local! {
    /// The host's network namespace, on the namespace thread.
    static HOST: OnceCell<OwnedFd> = const { OnceCell::new() };
    /// The namespace thread has left the host's namespace (see [`enter_new`]).
    static AWAY: Cell<bool> = const { Cell::new(false) };
}

/// True on the namespace thread.
pub fn on_it() -> bool {
    HOST.with(|h| h.get().is_some())
}

/// Runs `f` on the namespace thread and waits for what it returns (inline when called
/// there). Blocking.
pub fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    if on_it() {
        return Ok(f());
    }
    let (tx, rx) = mpsc::sync_channel(1);
    submit(Box::new(move || {
        let _ = tx.send(f());
    }))?;
    rx.recv().map_err(|_| ended())
}

/// [`run`], awaited: the caller's runtime thread is not held while the job waits its turn.
pub async fn run_async<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(Box::new(move || {
        let _ = tx.send(f());
    }))?;
    rx.await.map_err(|_| ended())
}

fn ended() -> io::Error {
    io::Error::other("the namespace thread ended during the job (it panicked)")
}

/// The host's network namespace (a descriptor the namespace thread keeps open for its
/// life), on the namespace thread.
pub fn host_netns() -> io::Result<RawFd> {
    HOST.with(|h| h.get().map(AsRawFd::as_raw_fd))
        .ok_or_else(|| {
            io::Error::other("the host's namespace is known only on the namespace thread")
        })
}

/// Moves the namespace thread into a new network namespace of its own. Call
/// [`back_to_host`] once done in it, whatever happened there.
pub fn enter_new() -> io::Result<()> {
    if !on_it() {
        return Err(io::Error::other(
            "a new network namespace is entered only on the namespace thread",
        ));
    }
    // SAFETY: unshare changes only this thread's namespaces; this thread runs nothing but
    // namespace jobs, and comes back to the host's after each (`back_to_host`).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    AWAY.with(|a| a.set(true));
    Ok(())
}

/// Moves the namespace thread back into the host's network namespace. On failure the
/// thread ends after its job (it could only make namespaces inside another one).
pub fn back_to_host() -> io::Result<()> {
    if !AWAY.with(Cell::get) {
        return Ok(());
    }
    let rc = HOST.with(|h| match h.get() {
        // SAFETY: setns with a namespace descriptor we hold changes only this thread.
        Some(fd) => unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
        None => -1,
    });
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    AWAY.with(|a| a.set(false));
    Ok(())
}

fn submit(job: Job) -> io::Result<()> {
    let mut queue = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    let job = match queue.as_ref() {
        Some(tx) => match tx.send(job) {
            Ok(()) => return Ok(()),
            // The thread ended: start another below.
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || serve(rx))?;
    tx.send(job)
        .map_err(|_| io::Error::other("the namespace thread ended at once"))?;
    *queue = Some(tx);
    Ok(())
}

/// The thread: jobs in order until the queue closes, a job panics, or the thread cannot
/// get back into the host's namespace.
fn serve(rx: mpsc::Receiver<Job>) {
    let host = match std::fs::File::open("/proc/thread-self/ns/net") {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            tracing::warn!(error = %e, "The namespace thread cannot open the host's network namespace");
            return;
        }
    };
    HOST.with(|h| h.set(host)).ok();
    // SAFETY: with `who` 0, setpriority acts on the calling thread only (Linux keeps a
    // nice value per thread). Not allowed (not root): it runs at the agent's.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
    }
    while let Ok(job) = rx.recv() {
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(job)).is_err();
        let back = back_to_host();
        if let Err(e) = &back {
            tracing::error!(error = %e, "The namespace thread cannot return to the host's network namespace; starting another");
        }
        if panicked || back.is_err() {
            let mut queue = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
            *queue = None;
            drop(queue);
            // Jobs queued behind this one go to the next thread.
            for job in rx.try_iter() {
                if submit(job).is_err() {
                    tracing::error!(
                        "Cannot start another namespace thread; a namespace job is dropped"
                    );
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netns_id() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net")
            .expect("own netns")
            .ino()
    }

    #[test]
    fn jobs_run_on_one_thread_that_comes_back_to_the_host_namespace() {
        let host = netns_id();
        let first = run(|| (std::thread::current().id(), netns_id())).expect("job");
        assert_eq!(first.1, host, "a job starts in the host's namespace");
        let moved = run(|| {
            let entered = enter_new().map(|()| netns_id());
            (entered, back_to_host().map(|()| netns_id()))
        })
        .expect("job");
        match moved {
            (Ok(inside), Ok(after)) => {
                assert_ne!(inside, host, "enter_new moves into another namespace");
                assert_eq!(after, host, "back_to_host comes back");
            }
            (Err(e), _) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped the namespace part: not allowed to unshare here ({e})")
            }
            (entered, back) => panic!("unexpected: {entered:?} {back:?}"),
        }
        let again = run(|| std::thread::current().id()).expect("job");
        assert_eq!(again, first.0, "the same thread serves every job");
        assert!(!on_it(), "the caller is not the namespace thread");
        assert!(enter_new().is_err(), "only the namespace thread moves");
    }

    #[test]
    fn a_panicking_job_ends_its_thread_and_the_next_job_gets_another() {
        let err = run(|| -> u32 { panic!("boom (expected by this test)") })
            .expect_err("a panicking job reports an error");
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(run(|| 7).expect("next job runs"), 7);
    }

    #[tokio::test]
    async fn awaited_jobs_run_in_order() {
        let a = run_async(|| 1);
        let b = run_async(|| 2);
        assert_eq!((a.await.expect("a"), b.await.expect("b")), (1, 2));
    }
}
