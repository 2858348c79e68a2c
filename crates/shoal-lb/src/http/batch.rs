//! The request heads a worker sends to members in one turn of its event loop, sent in
//! one system call (io_uring, one `IORING_OP_SEND` each).
//!
//! Each write to a member wakes the member's thread, which the kernel puts on the
//! worker's core (a sync wakeup) and which then preempts the worker when it returns to
//! user space: one preemption per member write. In one `io_uring_enter` the kernel makes
//! every send of the turn before it returns, so the worker is preempted once per turn.
//!
//! The first request task of a turn to send leads: it queues its head, yields (every
//! other ready task then queues its own), and sends the whole queue; the others wait for
//! their result. Sends are non-blocking (`MSG_DONTWAIT`: a full socket answers `EAGAIN`
//! at once, never a wait inside the kernel); a task whose head was not sent whole writes
//! the rest itself. A queued head is a copy, and a task dropped before the send is taken
//! out of it (all of this on the worker's one thread), so no send reaches a socket its
//! task closed. Workers without a ring (io_uring unavailable or disabled) write as before.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use io_uring::{opcode, types, IoUring};

/// Submission entries per ring: a turn with more heads sends them in several calls.
const RING_ENTRIES: u32 = 256;

thread_local! {
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

struct Batch {
    ring: IoUring,
    queue: Vec<Queued>,
    /// Whether a task leads the queue (it sends it after its yield).
    led: bool,
}

struct Queued {
    fd: RawFd,
    head: Vec<u8>,
    slot: Arc<Slot>,
}

/// A queued head's result, shared by its task and the leader.
#[derive(Default)]
struct Slot(Mutex<SlotState>);

#[derive(Default)]
struct SlotState {
    /// Bytes sent, or the error (negative errno).
    result: Option<i32>,
    waker: Option<Waker>,
    /// The task was dropped: its socket may be closed, its head is not sent.
    gone: bool,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        crate::pool::lock(&self.0)
    }

    fn finish(&self, result: i32) {
        let waker = {
            let mut s = self.state();
            s.result = Some(result);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Gives this thread (a balancer worker) its ring; without one, [`send`] declines.
pub(crate) fn start_on_this_thread() {
    if std::env::var("SHOAL_LB_BATCH").is_ok_and(|v| v == "off" || v == "0") {
        return;
    }
    match IoUring::new(RING_ENTRIES) {
        Ok(ring) => BATCH.with(|b| {
            *b.borrow_mut() = Some(Batch {
                ring,
                queue: Vec::new(),
                led: false,
            })
        }),
        Err(e) => {
            tracing::debug!(error = %e, "no io_uring: member writes go one system call each")
        }
    }
}

/// Sends `head` on the socket `fd` with the other heads of this turn. `None`: this
/// thread has no ring (the caller writes itself). `Some(Ok(n))`: the first `n` bytes were
/// sent (the caller writes the rest, if any); `Some(Err(_))`: nothing was sent and the
/// socket failed; `WouldBlock` means it is full (the caller waits and writes itself).
pub(crate) async fn send(fd: RawFd, head: &[u8]) -> Option<io::Result<usize>> {
    let slot = Arc::new(Slot::default());
    let leads = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        let b = b.as_mut()?;
        b.queue.push(Queued {
            fd,
            head: head.to_vec(),
            slot: slot.clone(),
        });
        let leads = !b.led;
        b.led = true;
        Some(leads)
    })?;
    let mut waiting = Waiting {
        slot: &slot,
        leads,
        done: false,
    };
    if leads {
        tokio::task::yield_now().await;
        waiting.leads = false;
        flush();
    }
    let result = poll_fn(|cx| {
        let mut s = slot.state();
        match s.result {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    waiting.done = true;
    Some(if result >= 0 {
        Ok(result as usize)
    } else {
        Err(io::Error::from_raw_os_error(-result))
    })
}

/// A queued head's task, until its result is in: dropped before, it takes its head out
/// of the queue, and a leader sends the others' heads on its way out.
struct Waiting<'a> {
    slot: &'a Slot,
    leads: bool,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.slot.state().gone = true;
        if self.leads {
            flush();
        }
    }
}

/// Sends every queued head (this thread's), a ring's worth per system call, and hands
/// each task its result.
fn flush() {
    let _ = BATCH.try_with(|cell| {
        let mut cell = cell.borrow_mut();
        let Some(b) = cell.as_mut() else { return };
        b.led = false;
        let queue = std::mem::take(&mut b.queue);
        let mut chunks = queue.chunks(RING_ENTRIES as usize);
        if chunks.by_ref().all(|chunk| send_chunk(&mut b.ring, chunk)) {
            return;
        }
        // The ring failed with sends in flight: heads not yet submitted are written by
        // their tasks; the kernel may still read the others, so neither they nor the
        // ring are ever freed, and this worker writes one call at a time from now on.
        for q in chunks.flatten() {
            q.slot.finish(-libc::EAGAIN);
        }
        std::mem::forget(queue);
        if let Some(b) = cell.take() {
            std::mem::forget(b.ring);
        }
    });
}

/// False when the kernel may still hold some head (they must not be freed).
fn send_chunk(ring: &mut IoUring, chunk: &[Queued]) -> bool {
    let mut pushed = 0;
    {
        let mut sq = ring.submission();
        for (i, q) in chunk.iter().enumerate() {
            if q.slot.state().gone {
                continue;
            }
            let len = u32::try_from(q.head.len()).unwrap_or(u32::MAX);
            let sqe = opcode::Send::new(types::Fd(q.fd), q.head.as_ptr(), len)
                .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                .build()
                .user_data(i as u64);
            // SAFETY: the head's buffer lives in `chunk` until every completion is
            // reaped below (the sends are non-blocking: each completes inside the
            // submitting call), and the queue holds at most the ring's size.
            if unsafe { sq.push(&sqe) }.is_ok() {
                pushed += 1;
            }
        }
    }
    let mut answered = vec![false; chunk.len()];
    let mut reaped = 0;
    while reaped < pushed {
        match ring.submit_and_wait(pushed - reaped) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "io_uring failed; member writes go one system call each from now on");
                for (q, answered) in chunk.iter().zip(&answered) {
                    if !answered {
                        q.slot.finish(-libc::EIO);
                    }
                }
                return false;
            }
        }
        for cqe in ring.completion() {
            let i = cqe.user_data() as usize;
            if let Some(q) = chunk.get(i) {
                answered[i] = true;
                reaped += 1;
                q.slot.finish(cqe.result());
            }
        }
    }
    // Not sent (a task gone, or the ring refused): the task writes itself, if still there.
    for (q, answered) in chunk.iter().zip(answered) {
        if !answered {
            q.slot.finish(-libc::EAGAIN);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair on loopback: (the end we send on, the end that reads).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn with_ring() -> bool {
        start_on_this_thread();
        let has = BATCH.with(|b| b.borrow().is_some());
        if !has {
            eprintln!("SKIPPED: io_uring is not available here");
        }
        has
    }

    /// Heads queued in one turn each reach their own socket once, whole; a task dropped
    /// before the turn's send sends nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn every_head_of_a_turn_reaches_its_socket_and_a_dropped_one_does_not() {
        if !with_ring() {
            return;
        }
        let mut senders = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..5 {
            let (s, r) = pair().await;
            senders.push(s);
            readers.push(r);
        }
        let heads: Vec<String> = (0..5)
            .map(|i| format!("GET /{i} HTTP/1.1\r\n\r\n"))
            .collect();
        let mut sends: Vec<_> = senders
            .iter()
            .zip(&heads)
            .map(|(s, head)| Some(Box::pin(send(s.as_raw_fd(), head.as_bytes()))))
            .collect();
        // Each queues its head (the first leads and yields), then the fourth is dropped.
        for f in sends.iter_mut().flatten() {
            assert!(futures::poll!(f.as_mut()).is_pending());
        }
        sends[3] = None;
        for (i, f) in sends.into_iter().enumerate() {
            if let Some(f) = f {
                let sent = f.await.expect("a ring").expect("sent");
                assert_eq!(sent, heads[i].len());
            }
        }
        for (i, r) in readers.iter_mut().enumerate() {
            let mut got = vec![0; 64];
            let read = tokio::time::timeout(Duration::from_millis(200), r.read(&mut got)).await;
            if i == 3 {
                assert!(read.is_err(), "the dropped task's head was not sent");
            } else {
                let n = read.expect("an answer in time").unwrap();
                assert_eq!(&got[..n], format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes());
            }
        }
    }

    /// A socket whose buffers are full answers `WouldBlock` at once (the caller then
    /// waits for it as before); the worker is never held up inside the kernel.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_socket_answers_would_block_at_once() {
        if !with_ring() {
            return;
        }
        let (s, _r) = pair().await;
        let chunk = vec![b'x'; 1 << 16];
        let mut total = 0usize;
        let err = loop {
            match send(s.as_raw_fd(), &chunk).await.expect("a ring") {
                Ok(n) => total += n,
                Err(e) => break e,
            }
            assert!(total < 1 << 30, "a socket nobody reads took 1 GiB");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert!(total > 0);
    }

    /// Without a ring (not a worker thread, or io_uring unavailable) the caller writes.
    #[test]
    fn a_thread_without_a_ring_declines() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let declined = std::thread::spawn(move || rt.block_on(send(0, b"x")).is_none());
        assert!(declined.join().unwrap());
    }
}
