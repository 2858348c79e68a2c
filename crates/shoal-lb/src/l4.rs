//! The layer-4 proxy: each accepted TCP connection is spliced to one member.
//!
//! The member is chosen per connection ([`Distribution`]); a member that refuses the
//! connection (or does not accept it within the connect timeout) is ejected and the next
//! one is tried, so a dead member costs new connections nothing; one that drops a
//! connection before sending a byte (it died with the connection open) is ejected too. Bytes are copied both
//! ways with fixed 16 KiB buffers (backpressure: nothing is read while the other side is
//! not writable), half-closes are passed on, and a connection quiet for the idle timeout
//! is closed — with an RST both ways when the rule asks for TCP reset.

use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Distribution;
use crate::http::backend::CONNECT_TIMEOUT;
use crate::pool::{ActiveGuard, Member, PoolRuntime};
use crate::sockmap::{
    self, bytes_unread, bytes_written, tcp_info, Key, LinkError, Side, Sockmap, TcpInfo, Watch,
};

const BUFFER: usize = 16 * 1024;
/// Members tried for one connection before giving up on it.
const MAX_ATTEMPTS: usize = 3;

/// A layer-4 rule as resolved at apply time.
pub(crate) struct TcpMode {
    pub(crate) pool: Arc<PoolRuntime>,
    pub(crate) distribution: Distribution,
    pub(crate) idle_timeout: Duration,
    pub(crate) tcp_reset: bool,
}

/// Proxies one client connection until either side is done, the connection idles out,
/// or `shutdown` (the balancer's) fires.
pub(crate) async fn proxy(
    client: TcpStream,
    peer: SocketAddr,
    mode: Arc<TcpMode>,
    shutdown: CancellationToken,
    kernel: bool,
) {
    let pool = &mode.pool;
    pool.counters.requests.fetch_add(1, Ordering::Relaxed);
    let key = match mode.distribution {
        Distribution::Default => None,
        Distribution::SourceIp => Some(hash(&peer.ip())),
        Distribution::SourceIpProtocol => Some(hash(&(peer.ip(), "tcp"))),
    };
    let mut tried = None;
    let mut connected = None;
    for _ in 0..MAX_ATTEMPTS {
        let member = match key {
            None => pool.pick_round_robin(tried.as_ref()),
            Some(key) => pool.pick_hashed(key, tried.as_ref()),
        };
        let Some(member) = member else { break };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(member.addr)).await {
            Ok(Ok(backend)) => {
                connected = Some((backend, member));
                break;
            }
            Ok(Err(e)) => member.eject(format!("Cannot connect to {}: {e}", member.addr)),
            Err(_) => member.eject(format!(
                "No connection to {} within {CONNECT_TIMEOUT:?}",
                member.addr
            )),
        }
        tried = Some(member);
    }
    let Some((backend, member)) = connected else {
        tracing::debug!(pool = %pool.name, client = %peer, "no member for a TCP connection");
        if mode.tcp_reset {
            let _ = client.set_zero_linger();
        }
        return;
    };
    let _guard = ActiveGuard::new(member.clone());
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let (mut client, mut backend) = (client, backend);
    if let Some(map) = kernel.then(sockmap::shared).flatten() {
        // One exchange in user space first, so that a connection carrying one request
        // and its answer never pays for linking (~10 system calls).
        let exchange = tokio::select! {
            exchange = first_exchange(&mut client, &mut backend, &member, mode.idle_timeout) => exchange,
            _ = shutdown.cancelled() => return,
        };
        match exchange {
            Exchange::Both(read) => {
                match in_kernel(map, client, backend, read, &member, &mode, &shutdown).await {
                    Some(pair) => (client, backend) = pair,
                    None => return,
                }
            }
            // A side ended: copying sees its end again and passes it on.
            Exchange::Ended => {}
            Exchange::Failed => return,
            Exchange::Idle => {
                if mode.tcp_reset {
                    let _ = client.set_zero_linger();
                    let _ = backend.set_zero_linger();
                }
                return;
            }
        }
    }

    // Reads bump `activity`; a watchdog looks at it four times per idle timeout, so no
    // clock is read per packet, and a quiet connection closes between 1 and 1.25 idle
    // timeouts after its last byte.
    let activity = AtomicU64::new(0);
    let counters = &member.counters;
    let mut client = Metered::new(client, &counters.bytes_in, &activity);
    let mut backend = Metered::new(backend, &counters.bytes_out, &activity);
    let idle = async {
        let tick = (mode.idle_timeout / 4).max(Duration::from_millis(1));
        let mut seen = activity.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let now = activity.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= mode.idle_timeout {
                return;
            }
        }
    };
    let idled = tokio::select! {
        result = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, BUFFER, BUFFER) => {
            if let Err(e) = result {
                tracing::trace!(pool = %pool.name, member = %member.id, error = %e, "TCP connection ended with an error");
                // A member that drops a connection before it says anything has most
                // likely died with it (kill -9, OOM): the next clients must not find it
                // before its probe does.
                if backend.failed && backend.read == 0 {
                    eject_unanswered(&member, &e);
                }
            }
            false
        }
        _ = idle => true,
        _ = shutdown.cancelled() => false,
    };
    if idled && mode.tcp_reset {
        let _ = client.io.set_zero_linger();
        let _ = backend.io.set_zero_linger();
    }
}

/// How [`first_exchange`] ended.
enum Exchange {
    /// Both sides sent bytes (or one side a lot), all of them passed on: the pair can
    /// be linked. Bytes read from each side.
    Both([u64; 2]),
    /// A side ended its stream, or never paused long enough to link: the pair is
    /// copied (nothing is held back).
    Ended,
    /// A side failed; the connection is over.
    Failed,
    /// Nothing happened for the idle timeout.
    Idle,
}

/// Bytes one side may send before the pair is linked even if the other side has said
/// nothing (a download or an upload worth handing to the kernel).
const LINK_AFTER: u64 = 64 << 10;

/// Copies in user space until each side has sent something or one side a lot (all of
/// it passed on), one side ends its stream, one fails, or nothing moves for `idle`.
async fn first_exchange(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    member: &Arc<Member>,
    idle: Duration,
) -> Exchange {
    let counters = &member.counters;
    let mut up = vec![0u8; BUFFER];
    let mut down = vec![0u8; BUFFER];
    let mut read = [0u64; 2];
    loop {
        // `read` is cancel-safe: the branch that loses the race has read nothing.
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                n = client.read(&mut up) => {
                    pass_on(n, &up, backend, &mut read[0], &counters.bytes_in).await
                }
                n = backend.read(&mut down) => {
                    if let (Err(e), 0) = (&n, read[1]) {
                        eject_unanswered(member, e);
                    }
                    pass_on(n, &down, client, &mut read[1], &counters.bytes_out).await
                }
            }
        })
        .await;
        match step {
            Err(_elapsed) => return Exchange::Idle,
            Ok(Ok(0)) => return Exchange::Ended,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::trace!(member = %member.id, error = %e, "TCP connection ended with an error");
                return Exchange::Failed;
            }
        }
        if (read[0] > 0 && read[1] > 0) || read[0].max(read[1]) >= LINK_AFTER {
            // The kernel forwards whole queued segments, even one a read has taken a
            // part of: empty both queues first (segments that arrive after that arrive
            // whole). No await between the last empty read and the linking.
            return match drain(client, backend, &mut read, counters).await {
                Ok(true) => Exchange::Both(read),
                Ok(false) => Exchange::Ended,
                Err(e) => {
                    tracing::trace!(member = %member.id, error = %e, "TCP connection ended with an error");
                    Exchange::Failed
                }
            };
        }
    }
}

/// Reads both sides until, for each, its last read left its receive queue empty (a
/// read shorter than the buffer, or nothing to read), passing everything on; what
/// arrives after that arrives as whole segments. Returns false if a side ended its
/// stream meanwhile or a stream never paused long enough (it stays copied).
async fn drain(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    read: &mut [u64; 2],
    counters: &crate::pool::PoolCounters,
) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    for _ in 0..DRAIN_ROUNDS {
        let mut emptied = [false; 2];
        for i in 0..2 {
            let (from, to) = match i {
                0 => (&mut *client, &mut *backend),
                _ => (&mut *backend, &mut *client),
            };
            let counter = [&counters.bytes_in, &counters.bytes_out][i];
            match from.try_read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => emptied[i] = true,
                // Writing awaits, but reads nothing more from `from`.
                n => match pass_on(n, &buf, to, &mut read[i], counter).await? {
                    0 => return Ok(false),
                    n => emptied[i] = n < buf.len(),
                },
            }
        }
        if emptied == [true; 2] {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes what a read of `n` bytes into `buf` got to `to`, counting it; gives `n` (0 at
/// the end of the stream).
async fn pass_on(
    n: io::Result<usize>,
    buf: &[u8],
    to: &mut TcpStream,
    read: &mut u64,
    counter: &AtomicU64,
) -> io::Result<usize> {
    let n = n?;
    if n > 0 {
        *read += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
    }
    Ok(n)
}

/// Reads of a full buffer in a row after which a pair is left to copying.
const DRAIN_ROUNDS: usize = 64;

/// Hands the pair to the kernel ([`sockmap`]) and watches it until it ends. Gives the
/// pair back when it could not be linked, to be copied in user space.
async fn in_kernel(
    map: &Sockmap,
    client: TcpStream,
    backend: TcpStream,
    read_before: [u64; 2],
    member: &Arc<Member>,
    mode: &TcpMode,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, TcpStream)> {
    let pool = &mode.pool;
    let (client, backend) = match (client.into_std(), backend.into_std()) {
        (Ok(c), Ok(b)) => (c, b),
        // Deregistering from the runtime failed: nothing sensible to fall back to.
        _ => return None,
    };
    let back = |client, backend| match (TcpStream::from_std(client), TcpStream::from_std(backend)) {
        (Ok(c), Ok(b)) => Some((c, b)),
        _ => None,
    };
    let linked = (|| {
        let watch = Watch::new(client.as_fd(), backend.as_fd())?;
        // Where each side's stream stood before the kernel forwards anything into it.
        let base = [bytes_written(&client)?, bytes_written(&backend)?];
        Ok::<_, io::Error>((watch, base))
    })();
    let (watch, base) = match linked {
        Ok(ready) => ready,
        Err(e) => {
            tracing::debug!(pool = %pool.name, error = %e, "copying a TCP connection in user space");
            return back(client, backend);
        }
    };
    let (backend_joined, keys) = match map.link(&client, &backend) {
        Ok(linked) => linked,
        Err(LinkError::Unlinked(e)) => {
            tracing::debug!(pool = %pool.name, error = %e, "copying a TCP connection in user space");
            return back(client, backend);
        }
        Err(LinkError::Half(e)) => {
            tracing::debug!(pool = %pool.name, member = %member.id, error = %e, "TCP connection lost while linking it");
            return None;
        }
    };
    pool.counters
        .kernel_forwarded
        .fetch_add(1, Ordering::Relaxed);
    let pair = KernelPair {
        sockets: [client, backend],
        keys,
        base,
        ended: [false; 2],
        passed_on: [false; 2],
        read_before,
        metered: read_before,
        // A member that could not join is closing: its bytes wait, to be copied.
        paused: [false, !backend_joined],
        last_received: [0; 2],
    };
    pair.watch(map, &watch, member, mode, shutdown).await;
    None
}

/// A pair the kernel forwards: what the balancer still does for it.
struct KernelPair {
    /// Indexed by [`Side`].
    sockets: [std::net::TcpStream; 2],
    /// Their keys in the sockmap (taken while both were connected: a socket that is
    /// reset or closed has no peer address to make one from).
    keys: [Key; 2],
    /// [`bytes_written`] of each socket before linking.
    base: [u64; 2],
    /// The side's peer has sent its end of stream.
    ended: [bool; 2],
    /// ... and it was passed on to the other side.
    passed_on: [bool; 2],
    /// Bytes the balancer read from each side (and passed on) before linking.
    read_before: [u64; 2],
    /// Bytes received on each side already added to the pool's counters.
    metered: [u64; 2],
    /// The kernel takes no bytes from this side (too many wait for the other side).
    paused: [bool; 2],
    /// `bytes_received` of each side at the last flow check.
    last_received: [u64; 2],
}

/// Bytes taken from one side and not yet in the other side's stream (the kernel holds
/// them, uncounted by either socket's buffers) above which the kernel stops taking more
/// from that side, and at or under which it starts again.
const IN_FLIGHT_HIGH: u64 = 2 << 20;
const IN_FLIGHT_LOW: u64 = 512 << 10;
/// How often a pair's bytes in flight are looked at: every 10 ms while bytes move,
/// backing off to once a second while they do not.
const FLOW_CHECK_MIN: Duration = Duration::from_millis(10);
const FLOW_CHECK_MAX: Duration = Duration::from_secs(1);

impl KernelPair {
    async fn watch(
        mut self,
        map: &Sockmap,
        watch: &Watch,
        member: &Arc<Member>,
        mode: &TcpMode,
        shutdown: &CancellationToken,
    ) {
        let idle_tick = (mode.idle_timeout / 4).max(Duration::from_millis(1));
        let mut idle_check = Instant::now() + idle_tick;
        let mut flush_wait = Duration::from_micros(200);
        let mut flow_every = FLOW_CHECK_MIN;
        // A side that starts paused (a member that could not join) is seen to at once.
        let mut flow_check = match self.paused.contains(&true) {
            true => Instant::now(),
            false => Instant::now() + flow_every,
        };
        let idled = loop {
            let flushing = (0..2).any(|i| self.ended[i] && !self.passed_on[i]);
            let mut deadline = idle_check.min(flow_check);
            if flushing {
                deadline = deadline.min(Instant::now() + flush_wait);
            }
            tokio::select! {
                events = watch.next() => {
                    let Ok(mut events) = events else { break false };
                    // Ends of stream first: the kernel reports EPIPE on a socket when
                    // it forwards the other side's end of stream to it.
                    events.sort_by_key(|e| !e.hangup);
                    let mut failed = false;
                    for event in events {
                        let i = event.side as usize;
                        let broken = event.error && self.failed(event.side, member);
                        if broken && self.bytes_received(i) == 0 {
                            // Nothing of this side's to deliver: the pair is over.
                            failed = true;
                        } else if broken {
                            // What the side sent before it broke is still delivered (a
                            // member that answers, closes and then resets the
                            // balancer's FIN), then its end passed on; nothing more
                            // goes to it.
                            self.passed_on[1 - i] = true;
                        }
                        if (broken || event.hangup) && !self.ended[i] {
                            self.ended[i] = true;
                            watch.forget(self.sockets[i].as_fd());
                            flush_wait = Duration::from_micros(200);
                        }
                    }
                    if failed {
                        break false;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    flush_wait = (flush_wait * 2).min(Duration::from_millis(20));
                    if Instant::now() >= flow_check {
                        match self.flow(map, member, shutdown).await {
                            Ok(true) => flow_every = FLOW_CHECK_MIN,
                            Ok(false) => flow_every = (flow_every * 2).min(FLOW_CHECK_MAX),
                            Err(e) => {
                                tracing::trace!(member = %member.id, error = %e, "TCP connection lost");
                                break false;
                            }
                        }
                        flow_check = Instant::now() + flow_every;
                    }
                    if Instant::now() >= idle_check {
                        idle_check = Instant::now() + idle_tick;
                        self.meter(member);
                        if self.idle_for(mode.idle_timeout) {
                            break true;
                        }
                    }
                }
                _ = shutdown.cancelled() => break false,
            }
            if !self.pass_on_ends() {
                break false;
            }
            if self.passed_on == [true; 2] {
                break false;
            }
        };
        self.meter(member);
        if idled && mode.tcp_reset {
            for socket in &self.sockets {
                let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
            }
        }
    }

    /// Flow control, which the kernel's forwarding lacks: it takes every byte a side
    /// receives (so TCP never closes that side's window) however slowly the other side
    /// drains them. A side with more than [`IN_FLIGHT_HIGH`] bytes in flight is paused
    /// (its bytes wait in its receive queue, its window closes, its sender waits), and
    /// resumed at [`IN_FLIGHT_LOW`]. Returns whether bytes moved or a side is paused.
    async fn flow(
        &mut self,
        map: &Sockmap,
        member: &Arc<Member>,
        shutdown: &CancellationToken,
    ) -> io::Result<bool> {
        let info = [tcp_info(&self.sockets[0])?, tcp_info(&self.sockets[1])?];
        let received = [info[0].bytes_received, info[1].bytes_received];
        let moved = received != self.last_received;
        self.last_received = received;
        if moved {
            self.count(&info, member);
        }
        if !moved && self.paused == [false; 2] {
            return Ok(false);
        }
        for i in 0..2 {
            if self.passed_on[i] {
                continue;
            }
            let other = 1 - i;
            // Unpaused, the kernel takes every byte as it arrives: none wait unread.
            let unread = match self.paused[i] {
                true => bytes_unread(&self.sockets[i])?,
                false => 0,
            };
            let fin = self.ended[i] || fin_received(info[i].state);
            let taken = received[i]
                .saturating_sub(u64::from(fin))
                .saturating_sub(unread)
                .saturating_sub(self.read_before[i]);
            let delivered = bytes_written(&self.sockets[other])? - self.base[other];
            let in_flight = taken.saturating_sub(delivered);
            if !self.paused[i] && !self.ended[i] && in_flight > IN_FLIGHT_HIGH {
                map.pause(&self.sockets[i], &self.keys[i])?;
                self.paused[i] = true;
            } else if self.paused[i] && in_flight <= IN_FLIGHT_LOW {
                // A socket whose peer has ended its stream cannot rejoin the map (only
                // established ones can; the end may be in before its event is): the
                // rest of its bytes, all in its receive queue now, are copied once the
                // kernel has delivered everything it took.
                let rejoined = !self.ended[i]
                    && match map.resume(&self.sockets[i], &self.keys[i]) {
                        Ok(()) => true,
                        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => false,
                        Err(e) => return Err(e),
                    };
                if rejoined {
                    self.paused[i] = false;
                } else if in_flight == 0 {
                    self.copy_rest(i, shutdown).await?;
                }
            }
        }
        Ok(moved || self.paused.contains(&true))
    }

    /// Copies what is left in side `i`'s receive queue to the other side in user space
    /// and passes its end of stream on.
    async fn copy_rest(&mut self, i: usize, shutdown: &CancellationToken) -> io::Result<()> {
        tracing::trace!(
            side = i,
            "copying the rest of an ended stream in user space"
        );
        // Paused, the socket was told not to wake readers before a quarter of its
        // buffer is in.
        sockmap::set_rcvlowat(&self.sockets[i], 1)?;
        let mut from = TcpStream::from_std(self.sockets[i].try_clone()?)?;
        let mut to = TcpStream::from_std(self.sockets[1 - i].try_clone()?)?;
        tokio::select! {
            copied = tokio::io::copy(&mut from, &mut to) => { copied?; }
            _ = shutdown.cancelled() => return Err(io::ErrorKind::Interrupted.into()),
        }
        let _ = self.sockets[1 - i].shutdown(std::net::Shutdown::Write);
        self.passed_on[i] = true;
        self.paused[i] = false;
        Ok(())
    }

    fn bytes_received(&self, i: usize) -> u64 {
        tcp_info(&self.sockets[i]).map_or(0, |t| t.bytes_received)
    }

    /// An error on `side`. Returns whether it is one (not the kernel's note about a FIN).
    fn failed(&mut self, side: Side, member: &Arc<Member>) -> bool {
        let i = side as usize;
        let Some(error) = self.sockets[i].take_error().ok().flatten() else {
            return false;
        };
        let other = 1 - i;
        let other_ended = self.ended[other]
            || tcp_info(&self.sockets[other]).is_ok_and(|t| fin_received(t.state));
        if error.raw_os_error() == Some(libc::EPIPE) && other_ended {
            // The kernel's note that it passed the other side's FIN segment on.
            return false;
        }
        if side == Side::Backend && self.bytes_received(i) == 0 {
            eject_unanswered(member, &error);
        }
        tracing::trace!(member = %member.id, error = %error, "TCP connection ended with an error");
        true
    }

    /// Passes each ended side's end of stream on once all its bytes reached the other
    /// side's stream. Returns false when a socket is gone.
    fn pass_on_ends(&mut self) -> bool {
        for i in 0..2 {
            if !self.ended[i] || self.passed_on[i] {
                continue;
            }
            let other = 1 - i;
            let (Ok(from), Ok(written)) = (
                tcp_info(&self.sockets[i]),
                bytes_written(&self.sockets[other]),
            ) else {
                return false;
            };
            // `bytes_received` counts the FIN segment as one byte.
            if written - self.base[other] + 1 + self.read_before[i] >= from.bytes_received {
                let _ = self.sockets[other].shutdown(std::net::Shutdown::Write);
                self.passed_on[i] = true;
            }
        }
        true
    }

    fn idle_for(&self, timeout: Duration) -> bool {
        let quiet =
            |s: &std::net::TcpStream| tcp_info(s).map_or(0, |t| u128::from(t.last_data_recv_ms));
        let quietest = quiet(&self.sockets[0]).min(quiet(&self.sockets[1]));
        quietest >= timeout.as_millis()
    }

    /// Adds what arrived since the last reading to the pool's byte counters.
    fn meter(&mut self, member: &Arc<Member>) {
        if let (Ok(client), Ok(backend)) = (tcp_info(&self.sockets[0]), tcp_info(&self.sockets[1]))
        {
            self.count(&[client, backend], member);
        }
    }

    /// [`KernelPair::meter`] with readings already taken.
    fn count(&mut self, info: &[TcpInfo; 2], member: &Arc<Member>) {
        let counters = [&member.counters.bytes_in, &member.counters.bytes_out];
        for (i, counter) in counters.into_iter().enumerate() {
            let fin = self.ended[i] || fin_received(info[i].state);
            let bytes = info[i].bytes_received.saturating_sub(u64::from(fin));
            counter.fetch_add(bytes.saturating_sub(self.metered[i]), Ordering::Relaxed);
            self.metered[i] = self.metered[i].max(bytes);
        }
    }
}

/// Whether a socket in this TCP state has its peer's FIN (counted as a byte in
/// `bytes_received`). A socket open in user space that reaches TIME_WAIT shows as CLOSE.
fn fin_received(state: u8) -> bool {
    matches!(
        state,
        TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_TIME_WAIT | TCP_CLOSE
    )
}

const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;

/// Ejects a member that dropped a connection before it sent a byte: it has most likely
/// died with the connection open (kill -9, OOM), and the next clients must not find it
/// before its probe does.
fn eject_unanswered(member: &Arc<Member>, error: &io::Error) {
    member.eject(format!(
        "{} dropped a connection before answering: {error}",
        member.addr
    ));
}

fn hash(value: &impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A stream that counts the bytes read from it, and its reads in `activity`.
struct Metered<'a> {
    io: TcpStream,
    bytes: &'a AtomicU64,
    activity: &'a AtomicU64,
    /// Bytes read from this stream on this connection.
    read: u64,
    /// A read or write on this stream failed (so the error is this side's).
    failed: bool,
}

impl<'a> Metered<'a> {
    fn new(io: TcpStream, bytes: &'a AtomicU64, activity: &'a AtomicU64) -> Self {
        Self {
            io,
            bytes,
            activity,
            read: 0,
            failed: false,
        }
    }

    fn note<T>(&mut self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &poll {
            self.failed = true;
        }
        poll
    }
}

impl AsyncRead for Metered<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            this.bytes.fetch_add(n as u64, Ordering::Relaxed);
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        this.note(poll)
    }
}

impl AsyncWrite for Metered<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.note(poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.note(poll)
    }
}
