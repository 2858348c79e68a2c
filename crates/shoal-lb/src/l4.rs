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
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Distribution;
use crate::http::backend::CONNECT_TIMEOUT;
use crate::pool::{ActiveGuard, PoolRuntime};

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
                    member.eject(format!("{} dropped a connection before answering: {e}", member.addr));
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
