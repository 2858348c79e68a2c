//! Keep-alive connections from the layer-7 proxy to members: a small idle pool per member.
//!
//! A request takes the most recently used idle connection of its member, or opens a new
//! one. When the response body is complete the connection goes back (see
//! [`BackendBody`](super::body::BackendBody)); a connection whose response was cut, or
//! whose member is draining, ejected or gone, is closed instead. Connections that have
//! been idle for [`IDLE_TIMEOUT`] are not reused.
//!
//! A connection is not a task of its own: the request using it drives it (hyper's
//! connection future is polled by the same task that waits for the response and streams
//! its body). That keeps a proxied request on one task and one thread, with no wake-ups
//! handed between tasks. An idle connection is polled once when it is taken from the
//! pool, which is when a close by the member is noticed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http::body::RequestBody;
use crate::pool::{lock, Member};

type Sender = http1::SendRequest<RequestBody>;
type Connection = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// The most idle connections kept per member (in this pool and in the lean proxy's).
pub(crate) const MAX_IDLE: usize = 128;
/// Idle connections older than this are closed rather than reused (members commonly
/// close theirs after 60 s or more).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a TCP connection to a member before trying another. Short: a
/// member on a host whose link is cut drops the SYN instead of refusing it, and a client
/// waits this long once per such member (then it is ejected); a member that is up
/// answers a SYN within a round trip, even a busy one within milliseconds.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One HTTP/1.1 connection to a member.
pub(crate) struct BackendConn {
    sender: Sender,
    /// `None` once the connection has ended. Dropping it also fails a request still
    /// waiting on it, instead of leaving it pending.
    conn: Option<Pin<Box<Connection>>>,
}

impl BackendConn {
    /// Lets the connection make progress (write the request, read the response).
    /// Returns whether it has ended.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = self.conn.as_mut() {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "backend connection ended");
                }
                self.conn = None;
            }
        }
        self.conn.is_none()
    }
}

pub(crate) struct IdleConn {
    conn: BackendConn,
    since: Instant,
}

/// Returns a connection to its member's idle pool, if it is worth keeping.
pub(crate) fn checkin(member: &Member, conn: BackendConn) {
    if conn.conn.is_none() || conn.sender.is_closed() || !member.routable() {
        return;
    }
    let now = Instant::now();
    let mut idle = lock(&member.idle);
    // The least recently used ones are at the front; close those past their time.
    while idle
        .front()
        .is_some_and(|c| now.duration_since(c.since) > IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
    if idle.len() < MAX_IDLE {
        idle.push_back(IdleConn { conn, since: now });
    }
}

/// A pooled connection to `member` that is ready for a request, if there is one.
async fn checkout(member: &Member) -> Option<BackendConn> {
    loop {
        let IdleConn { mut conn, since } = lock(&member.idle).pop_back()?;
        if since.elapsed() > IDLE_TIMEOUT {
            continue;
        }
        // One poll: finishes the previous exchange, notices a close by the member.
        let ended = std::future::poll_fn(|cx| Poll::Ready(conn.drive(cx))).await;
        if !ended && conn.sender.is_ready() {
            return Some(conn);
        }
    }
}

/// Why sending a request to a member failed.
pub(crate) enum SendError {
    /// No connection could be made. The request was not sent and comes back.
    Connect(io::Error, hyper::Request<RequestBody>),
    /// A fresh connection took nothing: the request was not sent and comes back.
    NotSent(hyper::Error, hyper::Request<RequestBody>),
    /// The request was (maybe partly) sent, and no response head came back.
    Failed { error: hyper::Error, fresh: bool },
}

/// Sends `request` to `member` on a pooled (when `reuse`) or new connection and waits
/// for the response head. A pooled connection that turns out to be closed before the
/// request was written is skipped silently.
pub(crate) async fn send(
    member: &Member,
    mut request: hyper::Request<RequestBody>,
    reuse: bool,
) -> Result<(Response<Incoming>, BackendConn), SendError> {
    loop {
        let pooled = if reuse { checkout(member).await } else { None };
        let (mut conn, fresh) = match pooled {
            Some(conn) => (conn, false),
            None => match connect(member).await {
                Ok(conn) => (conn, true),
                Err(e) => return Err(SendError::Connect(e, request)),
            },
        };
        let result = {
            let mut response = std::pin::pin!(conn.sender.try_send_request(request));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = response.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                // Drive the connection, then look again: it may have just answered (or
                // ended, which fails the request).
                conn.drive(cx);
                response.as_mut().poll(cx)
            })
            .await
        };
        match result {
            Ok(response) => return Ok((response, conn)),
            Err(mut e) => match e.take_message() {
                Some(back) if !fresh => request = back,
                Some(back) => return Err(SendError::NotSent(e.into_error(), back)),
                None => {
                    return Err(SendError::Failed {
                        error: e.into_error(),
                        fresh,
                    })
                }
            },
        }
    }
}

async fn connect(member: &Member) -> io::Result<BackendConn> {
    let tcp = connect_tcp(member).await?;
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .max_buf_size(crate::http::MAX_BUF)
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(io::Error::other)?;
    Ok(BackendConn {
        sender,
        conn: Some(Box::pin(conn)),
    })
}

/// A new TCP connection to `member` (no delay), within [`CONNECT_TIMEOUT`].
pub(crate) async fn connect_tcp(member: &Member) -> io::Result<TcpStream> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(member.addr)).await {
        Ok(tcp) => tcp?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {CONNECT_TIMEOUT:?}"),
            ))
        }
    };
    tcp.set_nodelay(true)?;
    Ok(tcp)
}
