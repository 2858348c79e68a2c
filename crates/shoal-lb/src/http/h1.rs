//! The lean HTTP/1.1 proxy: what every HTTP/1.x client connection goes through.
//!
//! One task per client connection does everything in turn: read a request head, parse
//! it once ([`wire::request`], which also writes the member's head), pick a member, send
//! the head (and the body) on a pooled keep-alive connection, read the response head,
//! write the client's, and copy the body across, with one read buffer per side reused
//! for every request of the connection. No header map, no channel between tasks, no
//! per-request allocation on the common path: the hyper path (kept for HTTP/2) spends
//! most of its time on exactly those.
//!
//! Behaviour is the hyper path's: routing, affinity, `X-Forwarded-*`, retries (a refused
//! connection → the next member, whatever the request; a kept-alive connection the
//! member closed under the request → once more on a new connection to the same member
//! when the body is held; an idempotent request whose member failed → once more on
//! another), ejection of members whose fresh connections fail, draining (a member that
//! stops being routable gets no pooled connections back), the request timeout (for the
//! response head, and for any stall in a body), `Expect: 100-continue`, and `Upgrade`
//! (WebSocket…) pass-through. A client that starts with the HTTP/2 preface on a
//! listener with HTTP/2 on is handed to hyper.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::http::wire::{self, Chunked, ClientSide, Framing, Reject, Response};
use crate::http::{
    backend, pick_member, ConnInfo, HttpMode, HEADER_READ_TIMEOUT, MAX_BUF, MAX_REPLAY_BODY,
};
use crate::pool::{lock, ActiveGuard, Member, PoolCounters, PoolRuntime};

/// How much a read asks for at once.
const READ_CHUNK: usize = 16 * 1024;
/// How long, and how much, a closing connection reads from a client that is still
/// sending.
const LINGER: Duration = Duration::from_millis(250);
const LINGER_BYTES: usize = 256 * 1024;
/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An idle keep-alive connection to a member.
pub(crate) struct IdleStream {
    stream: TcpStream,
    since: Instant,
}

/// What reading a request head found.
enum Head {
    /// A complete head ends at this offset of the buffer.
    Complete(usize),
    /// The client sent the HTTP/2 preface.
    Http2,
    /// The connection ended (or was asked to) between requests.
    Closed,
    /// The head is too large, or did not arrive in time.
    Refused(u16, &'static str),
}

/// One client connection and its buffers.
struct Client<IO> {
    io: IO,
    /// What the client sent that is not handled yet.
    buf: BytesMut,
    /// What a member sent that is not passed on yet.
    member_buf: BytesMut,
    /// The member's request head (and a held body).
    member_head: Vec<u8>,
    /// The client's response head (and the first body bytes).
    out: Vec<u8>,
    info: Arc<ConnInfo>,
}

/// Serves one HTTP/1.x client connection until it ends, or until `close` asks it to
/// stop (after the request in flight, if any).
pub(crate) async fn serve<IO, M>(
    io: IO,
    info: Arc<ConnInfo>,
    mode: Arc<M>,
    close: CancellationToken,
    http2: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    M: Fn() -> Arc<HttpMode> + Send + Sync + 'static,
{
    let mut client = Client {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        member_buf: BytesMut::new(),
        member_head: Vec::new(),
        out: Vec::new(),
        info,
    };
    let mut first = true;
    loop {
        let end = match client.read_head(&close, first && http2).await {
            Head::Complete(end) => end,
            Head::Closed => break,
            Head::Http2 => {
                let Client { io, buf, info, .. } = client;
                let io = Rewind::new(buf, io);
                return crate::http::serve_h2(io, info, mode, close).await;
            }
            Head::Refused(status, text) => {
                client.answer(status, text, false).await;
                break;
            }
        };
        first = false;
        let head = client.buf.split_to(end).freeze();
        let keep_alive = client.exchange(&mode(), &head).await;
        if !keep_alive || close.is_cancelled() {
            break;
        }
    }
    client.linger().await;
}

/// Why an exchange with a member failed before its response head arrived.
enum Failure {
    /// The connection was closed or reset by the member before anything came back.
    Closed(io::Error),
    /// Nothing in time.
    Timeout,
    /// The client's own body failed (it went away, stalled or sent a bad chunk).
    ClientBody(&'static str),
    /// The member's response cannot be passed on.
    BadResponse(&'static str),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Client<IO> {
    /// Reads until the buffer holds a whole request head.
    async fn read_head(&mut self, close: &CancellationToken, http2: bool) -> Head {
        let mut searched = 0;
        loop {
            if searched == 0 {
                let empty = wire::leading_empty_lines(&self.buf);
                self.buf.advance(empty);
            }
            if http2 {
                let n = self.buf.len().min(H2_PREFACE.len());
                if self.buf[..n] != H2_PREFACE[..n] {
                    // Not HTTP/2: HTTP/1 from here on.
                } else if n == H2_PREFACE.len() {
                    return Head::Http2;
                }
            }
            if let Some(end) = wire::head_end(&self.buf, searched) {
                return Head::Complete(end);
            }
            if self.buf.len() >= MAX_BUF {
                return Head::Refused(431, "The request head is too large\n");
            }
            searched = self.buf.len();
            self.buf.reserve(READ_CHUNK);
            let read = tokio::time::timeout(HEADER_READ_TIMEOUT, self.io.read_buf(&mut self.buf));
            let read = tokio::select! {
                biased;
                read = read => read,
                _ = close.cancelled() => return Head::Closed,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
                Ok(Ok(_)) => {}
                Err(_) if self.buf.is_empty() => return Head::Closed,
                Err(_) => return Head::Refused(408, "The request head did not arrive in time\n"),
            }
        }
    }

    /// Handles one request end to end; returns whether the client connection stays open.
    async fn exchange(&mut self, mode: &HttpMode, head: &[u8]) -> bool {
        self.member_head.clear();
        let request = match wire::request(head, &self.info, mode.affinity, &mut self.member_head) {
            Ok(request) => request,
            Err(reject) => {
                let (status, text) = match reject {
                    Reject::Bad(why) => (400, why),
                    Reject::TooManyHeaders => (431, "The request has too many header lines"),
                    Reject::NotImplemented(why) => (501, why),
                };
                self.answer(status, &why_line(text), false).await;
                return false;
            }
        };
        let pool = mode.routes.select(request.host, request.path).clone();
        pool.counters.requests.fetch_add(1, Ordering::Relaxed);

        // A small body is held (after the head) so the request can be sent again.
        let held = match request.body {
            Framing::Empty => true,
            Framing::Length(n) if n <= MAX_REPLAY_BODY => {
                let n = n as usize;
                if self.buf.len() < n && request.expect_continue && !continue_(&mut self.io).await {
                    return false;
                }
                if let Err(why) = self.read_at_least(n, mode.request_timeout).await {
                    return self.local(&pool, 400, &why_line(why), false).await;
                }
                self.member_head.extend_from_slice(&self.buf[..n]);
                self.buf.advance(n);
                pool.counters
                    .bytes_in
                    .fetch_add(n as u64, Ordering::Relaxed);
                true
            }
            _ => false,
        };
        if request.upgrade {
            if !held {
                let why = "An upgrade request's body must be at most 64 KiB\n";
                return self.local(&pool, 400, why, false).await;
            }
            return self.upgrade(mode, &pool, &request).await;
        }
        let mut sent_retry_left = held && request.idempotent();
        let mut stale_retry_left = held;
        let mut last: Option<Arc<Member>> = None;
        // Set when the next try goes to the same member on a new connection.
        let mut again: Option<Arc<Member>> = None;
        for _attempt in 0..4 {
            let reuse = again.is_none();
            let member = again
                .take()
                .filter(|m| m.routable())
                .or_else(|| pick_member(&pool, request.affinity.as_deref(), last.as_ref()));
            let Some(member) = member else {
                let keep = held && request.keep_alive;
                return if last.is_some() {
                    self.local(&pool, 502, "No other healthy member to retry on\n", keep)
                        .await
                } else {
                    self.local(&pool, 503, "No healthy member\n", keep).await
                };
            };
            let guard = ActiveGuard::new(member.clone());
            let pooled = if reuse {
                checkout(&member, !held)
            } else {
                None
            };
            let (mut stream, fresh) = match pooled {
                Some(stream) => (stream, false),
                None => match backend::connect_tcp(&member).await {
                    Ok(stream) => (stream, true),
                    Err(error) => {
                        member.eject(format!("Cannot connect to {}: {error}", member.addr));
                        last = Some(member);
                        continue;
                    }
                },
            };
            match self
                .attempt(&mut stream, &request, held, &member, mode)
                .await
            {
                Ok(Outcome::Done {
                    member_reusable,
                    client_keep_alive,
                }) => {
                    if member_reusable {
                        checkin(&member, stream);
                    }
                    self.member_buf.clear();
                    return self.send_out().await && client_keep_alive;
                }
                Ok(Outcome::Switching) => return false,
                Err(Failure::BadResponse(why)) => {
                    tracing::debug!(pool = %pool.name, member = %member.id, why, "member sent an invalid response");
                    return self.failed(&pool, Failure::BadResponse(why)).await;
                }
                Err(failure @ (Failure::Timeout | Failure::ClientBody(_))) => {
                    return self.failed(&pool, failure).await;
                }
                Err(Failure::Closed(error)) => {
                    tracing::debug!(pool = %pool.name, member = %member.id, %error, fresh, "request to member failed");
                    if !fresh && stale_retry_left {
                        stale_retry_left = false;
                        again = Some(member);
                        continue;
                    }
                    if fresh {
                        member.eject(format!("Connection to {} failed: {error}", member.addr));
                    }
                    if !sent_retry_left {
                        return self.failed(&pool, Failure::Closed(error)).await;
                    }
                    sent_retry_left = false;
                }
            }
            drop(guard);
            last = Some(member);
        }
        self.local(&pool, 502, "No member could take the request\n", false)
            .await
    }

    /// Sends the request on `stream` and passes the answer back. An error means the
    /// client got nothing yet (so the request may be tried again).
    async fn attempt(
        &mut self,
        stream: &mut TcpStream,
        request: &wire::Request<'_>,
        held: bool,
        member: &Member,
        mode: &HttpMode,
    ) -> Result<Outcome, Failure> {
        let stall = mode.request_timeout;
        // The request head leaves with the other heads of this turn of the event loop,
        // in one system call (`batch`): one preemption of the worker per turn by the
        // members it wakes, not one per request. Without a ring the task yields first,
        // so the turn's writes at least follow each other (bench/RESULTS, sessions
        // 20–21). What was not sent whole is written here, waiting for the socket.
        match super::batch::send(std::os::fd::AsRawFd::as_raw_fd(&*stream), &self.member_head).await
        {
            None => {
                tokio::task::yield_now().await;
                write_within(stream, &self.member_head, stall).await?;
            }
            Some(Ok(sent)) => {
                if sent < self.member_head.len() {
                    write_within(stream, &self.member_head[sent..], stall).await?;
                }
            }
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                write_within(stream, &self.member_head, stall).await?;
            }
            Some(Err(e)) => return Err(Failure::Closed(e)),
        }
        let cookie = (mode.affinity && request.affinity.as_deref() != Some(&*member.id))
            .then(|| crate::affinity::set_cookie(&member.id, self.info.tls));
        let side = ClientSide {
            head_request: request.method == "HEAD",
            upgrade: request.upgrade,
            http10: request.http10,
            keep_alive: request.keep_alive,
            set_cookie: cookie.as_ref().map(|c| c.as_bytes()),
        };
        let counters = &member.counters;
        let Client {
            io,
            buf,
            member_buf,
            out,
            ..
        } = self;
        if held {
            let deadline = Instant::now() + stall;
            let response = response_head(stream, member_buf, out, &side, Some(deadline)).await?;
            let outcome = pass_on(
                stream, io, member_buf, out, response, true, false, counters, stall,
            );
            return Ok(outcome.await);
        }

        // A streamed body goes up while the answer comes down: a member may answer (and
        // echo) before it has all of the body.
        if request.expect_continue && !continue_(io).await {
            return Err(Failure::ClientBody("The client went away"));
        }
        let (mut client_read, mut client_write) = tokio::io::split(io);
        let (mut member_read, mut member_write) = stream.split();
        let head_arrived = AtomicBool::new(false);
        let up = upload(
            &mut client_read,
            &mut member_write,
            buf,
            request.body,
            counters,
            stall,
        );
        let down = async {
            let response = response_head(&mut member_read, member_buf, out, &side, None).await?;
            head_arrived.store(true, Ordering::Relaxed);
            Ok::<_, Failure>(
                pass_on(
                    &mut member_read,
                    &mut client_write,
                    member_buf,
                    out,
                    response,
                    true,
                    true,
                    counters,
                    stall,
                )
                .await,
            )
        };
        let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
        // The member has the request timeout to answer once the body is all there.
        let mut answer_by = std::pin::pin!(tokio::time::sleep(Duration::from_secs(86400)));
        // Whether the whole body went up, once the upload has ended.
        let mut uploaded: Option<bool> = None;
        loop {
            tokio::select! {
                done = &mut up, if uploaded.is_none() => {
                    match done {
                        Ok(()) => uploaded = Some(true),
                        // The client's body failed before any answer: it gets a 400.
                        Err(e @ Failure::ClientBody(_)) if !head_arrived.load(Ordering::Relaxed) => {
                            return Err(e)
                        }
                        // The member stopped reading (its answer or close may follow),
                        // or the client went away while the answer streams.
                        Err(_) => uploaded = Some(false),
                    }
                    answer_by.as_mut().reset(Instant::now() + stall);
                }
                outcome = &mut down => {
                    let outcome = outcome?;
                    if uploaded.is_none() {
                        // The answer may have ended with the upload's last write.
                        if let Some(done) = futures::FutureExt::now_or_never(&mut up) {
                            uploaded = Some(done.is_ok());
                        }
                    }
                    return Ok(match uploaded {
                        Some(true) => outcome,
                        // The member answered without taking all of the body: neither
                        // connection can carry another request.
                        _ => Outcome::Done { member_reusable: false, client_keep_alive: false },
                    });
                }
                _ = &mut answer_by, if uploaded.is_some() && !head_arrived.load(Ordering::Relaxed) => {
                    return Err(Failure::Timeout);
                }
            }
        }
    }

    /// An upgrade request (WebSocket and any protocol a client and member agree on): it
    /// goes to one member (affinity cookie, else round robin; one that refuses the
    /// connection is ejected and the next tried) on a connection of its own. On `101`
    /// the client gets the answer and the two connections are spliced byte for byte
    /// until either closes (the member counts as in flight meanwhile); any other answer
    /// is passed back as a normal response.
    async fn upgrade(
        &mut self,
        mode: &HttpMode,
        pool: &Arc<PoolRuntime>,
        request: &wire::Request<'_>,
    ) -> bool {
        let mut last: Option<Arc<Member>> = None;
        for _attempt in 0..4 {
            let Some(member) = pick_member(pool, request.affinity.as_deref(), last.as_ref()) else {
                break;
            };
            let mut stream = match backend::connect_tcp(&member).await {
                Ok(stream) => stream,
                Err(error) => {
                    member.eject(format!("Cannot connect to {}: {error}", member.addr));
                    last = Some(member);
                    continue;
                }
            };
            let _in_flight = ActiveGuard::new(member.clone());
            return match self
                .attempt(&mut stream, request, true, &member, mode)
                .await
            {
                Ok(Outcome::Switching) => {
                    self.splice(stream, pool).await;
                    false
                }
                // Declined: the answer went back as a normal response.
                Ok(Outcome::Done {
                    client_keep_alive, ..
                }) => {
                    self.member_buf.clear();
                    self.send_out().await && client_keep_alive
                }
                Err(failure) => self.failed(pool, failure).await,
            };
        }
        self.local(pool, 503, "No healthy member\n", false).await
    }

    /// After a `101`: the head (in `out`) and anything either side sent early go across,
    /// then bytes flow both ways until either side closes.
    async fn splice(&mut self, mut stream: TcpStream, pool: &PoolRuntime) {
        self.out.extend_from_slice(&self.member_buf);
        let early = self.buf.split();
        let result = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
            stream.write_all(&early).await?;
            tokio::io::copy_bidirectional(&mut self.io, &mut stream).await
        }
        .await;
        if let Ok((up, down)) = result {
            pool.counters.bytes_in.fetch_add(up, Ordering::Relaxed);
            pool.counters.bytes_out.fetch_add(down, Ordering::Relaxed);
        }
    }

    /// Sends what is left in `out`; false when the client is gone.
    async fn send_out(&mut self) -> bool {
        if !self.out.is_empty() {
            let sent = self.io.write_all(&self.out).await;
            self.out.clear();
            if sent.is_err() {
                return false;
            }
        }
        self.io.flush().await.is_ok()
    }

    /// Closes the connection. What the client may still be sending (a body nobody
    /// read) is read and dropped for a moment first: closing with unread bytes would
    /// reset the connection and could take the last answer with it.
    async fn linger(&mut self) {
        if self.io.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut dropped = 0;
            while dropped < LINGER_BYTES {
                self.buf.clear();
                self.buf.reserve(READ_CHUNK);
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Reads until the buffer holds `n` bytes, each read within `stall`.
    async fn read_at_least(&mut self, n: usize, stall: Duration) -> Result<(), &'static str> {
        while self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
            match tokio::time::timeout(stall, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err("The request body could not be read"),
                Ok(Ok(_)) => {}
                Err(_) => return Err("The request body did not arrive in time"),
            }
        }
        Ok(())
    }

    /// The client's answer to an exchange that failed before any response byte.
    async fn failed(&mut self, pool: &PoolRuntime, failure: Failure) -> bool {
        let (status, text) = match failure {
            Failure::Timeout => (504, "The member did not answer in time"),
            Failure::ClientBody(why) => (400, why),
            Failure::BadResponse(_) => (502, "The member sent an invalid response"),
            Failure::Closed(_) => (502, "The member closed the connection before answering"),
        };
        self.local(pool, status, &why_line(text), false).await
    }

    /// The balancer's own answer to a request routed to `pool` (counted there when it is
    /// a 5xx). Returns whether the connection stays open.
    async fn local(
        &mut self,
        pool: &PoolRuntime,
        status: u16,
        text: &str,
        keep_alive: bool,
    ) -> bool {
        if status >= 500 {
            pool.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
        }
        self.answer(status, text, keep_alive).await
    }

    /// The balancer's own answer. Returns whether the connection stays open.
    async fn answer(&mut self, status: u16, text: &str, keep_alive: bool) -> bool {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let connection = if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        };
        let answer = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\n{connection}\r\n{text}",
            text.len()
        );
        let sent = self.io.write_all(answer.as_bytes()).await;
        sent.is_ok() && self.io.flush().await.is_ok() && keep_alive
    }
}

/// How an exchange ended once the client had an answer.
enum Outcome {
    Done {
        /// The member connection can carry another request.
        member_reusable: bool,
        /// The client connection stays open.
        client_keep_alive: bool,
    },
    /// The member accepted an upgrade; the client's `101` head is in `out`.
    Switching,
}

/// Writes to a member that must take the bytes within `stall`.
async fn write_within<W: AsyncWrite + Unpin>(
    member: &mut W,
    bytes: &[u8],
    stall: Duration,
) -> Result<(), Failure> {
    match tokio::time::timeout(stall, member.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::Closed(e)),
        Err(_) => Err(Failure::Timeout),
    }
}

/// Sends `100 Continue`; false when the client is gone.
async fn continue_<W: AsyncWrite + Unpin>(client: &mut W) -> bool {
    let sent = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    sent.is_ok() && client.flush().await.is_ok()
}

/// Streams the rest of a request body to the member: what `buf` holds, then what the
/// client sends, each read and write within `stall`.
async fn upload<R, W>(
    client: &mut R,
    member: &mut W,
    buf: &mut BytesMut,
    body: Framing,
    counters: &PoolCounters,
    stall: Duration,
) -> Result<(), Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = match body {
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
        Framing::Empty | Framing::UntilClose => return Ok(()),
    };
    let mut chunked = Chunked::default();
    loop {
        let take = match left {
            Some(n) => (buf.len() as u64).min(n) as usize,
            None => chunked
                .advance(buf, |_| {})
                .map_err(|e| Failure::ClientBody(e.0))?,
        };
        if take > 0 {
            write_within(member, &buf[..take], stall).await?;
            buf.advance(take);
            counters.bytes_in.fetch_add(take as u64, Ordering::Relaxed);
            if let Some(n) = left.as_mut() {
                *n -= take as u64;
            }
        }
        if left == Some(0) || chunked.done() {
            return Ok(());
        }
        buf.reserve(READ_CHUNK);
        match tokio::time::timeout(stall, client.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Err(Failure::ClientBody(
                    "The client went away in the middle of its body",
                ))
            }
            Ok(Ok(_)) => {}
            Err(_) => {
                return Err(Failure::ClientBody(
                    "The request body did not arrive in time",
                ))
            }
        }
    }
}

/// Reads a member's response head (skipping `1xx`) and writes the client's into `out`.
/// Without a deadline, the caller bounds the wait.
async fn response_head<R: AsyncRead + Unpin>(
    member: &mut R,
    member_buf: &mut BytesMut,
    out: &mut Vec<u8>,
    side: &ClientSide<'_>,
    deadline: Option<Instant>,
) -> Result<Response, Failure> {
    let mut searched = 0;
    loop {
        if let Some(end) = wire::head_end(member_buf, searched) {
            let head = member_buf.split_to(end);
            out.clear();
            match wire::response(&head, side, out) {
                Ok(Response::Informational) => {
                    searched = 0;
                    continue;
                }
                Ok(response) => return Ok(response),
                Err(bad) => return Err(Failure::BadResponse(bad.0)),
            }
        }
        if member_buf.len() >= MAX_BUF {
            return Err(Failure::BadResponse("response head too large"));
        }
        searched = member_buf.len();
        member_buf.reserve(READ_CHUNK);
        let read = member.read_buf(member_buf);
        let read = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
                Ok(read) => read,
                Err(_) => return Err(Failure::Timeout),
            },
            None => read.await,
        };
        match read {
            Ok(0) if member_buf.is_empty() => {
                return Err(Failure::Closed(io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(0) => return Err(Failure::BadResponse("connection closed inside the head")),
            Ok(_) => {}
            Err(e) if member_buf.is_empty() => return Err(Failure::Closed(e)),
            Err(_) => return Err(Failure::BadResponse("connection reset inside the head")),
        }
    }
}

/// Passes a response on: its head (in `out`), then its body (see [`copy_body`] for
/// `write_last`).
#[allow(clippy::too_many_arguments)]
async fn pass_on<R, W>(
    member: &mut R,
    client: &mut W,
    member_buf: &mut BytesMut,
    out: &mut Vec<u8>,
    response: Response,
    request_complete: bool,
    write_last: bool,
    counters: &PoolCounters,
    stall: Duration,
) -> Outcome
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Response::Final {
        status,
        body,
        member_keep_alive,
        client_keep_alive,
        dechunk,
    } = response
    else {
        return Outcome::Switching;
    };
    if status >= 500 {
        counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let copied = copy_body(
        member, client, member_buf, out, body, dechunk, write_last, counters, stall,
    )
    .await;
    match copied {
        Ok(()) => Outcome::Done {
            member_reusable: member_keep_alive && request_complete && member_buf.is_empty(),
            client_keep_alive: client_keep_alive && request_complete,
        },
        Err(error) => {
            tracing::debug!(%error, "response cut");
            out.clear();
            Outcome::Done {
                member_reusable: false,
                client_keep_alive: false,
            }
        }
    }
}

/// Writes `out` and then the body as it comes from the member, each read within
/// `stall`. Without `write_last`, the last bytes are left in `out` for the caller to
/// send (after it has put the member's connection back in the pool, so that the
/// client's next request finds it there).
#[allow(clippy::too_many_arguments)]
async fn copy_body<R, W>(
    member: &mut R,
    client: &mut W,
    member_buf: &mut BytesMut,
    out: &mut Vec<u8>,
    body: Framing,
    dechunk: bool,
    write_last: bool,
    counters: &PoolCounters,
    stall: Duration,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = match body {
        Framing::Empty => 0,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut chunked = Chunked::default();
    loop {
        // What is buffered, as far as the body goes, follows `out`.
        let (take, done) = match body {
            Framing::Chunked => {
                let n = chunked
                    .advance(member_buf, |d| {
                        if dechunk {
                            out.extend_from_slice(d)
                        }
                    })
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                (n, chunked.done())
            }
            _ => {
                let n = (member_buf.len() as u64).min(left) as usize;
                left -= n as u64;
                (n, left == 0)
            }
        };
        let passed = &member_buf[..take];
        if dechunk {
            // `out` has the data already.
        } else if (write_last || !done) && out.is_empty() {
            client.write_all(passed).await?;
        } else {
            // The head and the first body bytes in one write.
            out.extend_from_slice(passed);
        }
        member_buf.advance(take);
        counters.bytes_out.fetch_add(take as u64, Ordering::Relaxed);
        if done && !write_last {
            return Ok(());
        }
        if !out.is_empty() {
            client.write_all(out).await?;
            out.clear();
        }
        client.flush().await?;
        if done {
            return Ok(());
        }
        member_buf.reserve(READ_CHUNK);
        match tokio::time::timeout(stall, member.read_buf(member_buf)).await {
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("The member sent nothing for {stall:?} in the middle of a response"),
                ))
            }
            Ok(Ok(0)) if body == Framing::UntilClose => return Ok(()),
            Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

fn why_line(why: &str) -> String {
    format!("{why}\n")
}

/// A pooled connection to `member`, most recently used first. With `check`, one that
/// the member has closed (or that has unexpected bytes) is skipped: for requests that
/// cannot be sent twice.
fn checkout(member: &Member, check: bool) -> Option<TcpStream> {
    let mut idle = lock(&member.idle_h1);
    while let Some(IdleStream { stream, since }) = idle.pop() {
        if since.elapsed() > backend::IDLE_TIMEOUT {
            // The rest are older still.
            idle.clear();
            return None;
        }
        if !check {
            return Some(stream);
        }
        let mut probe = [0u8; 1];
        match stream.try_read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(stream),
            _ => continue,
        }
    }
    None
}

/// Returns a connection to its member's idle pool, if the member still takes requests.
fn checkin(member: &Member, stream: TcpStream) {
    if !member.routable() {
        return;
    }
    let mut idle = lock(&member.idle_h1);
    if idle.len() >= backend::MAX_IDLE {
        // The oldest goes.
        idle.remove(0);
    }
    idle.push(IdleStream {
        stream,
        since: Instant::now(),
    });
}

/// An IO that first yields bytes already read from it.
pub(crate) struct Rewind<IO> {
    early: BytesMut,
    io: IO,
}

impl<IO> Rewind<IO> {
    fn new(early: BytesMut, io: IO) -> Self {
        Self { early, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
