//! Keep-alive connections from the layer-7 proxy to members: a small idle pool per member.
//!
//! A request takes the most recently used idle connection of its member, or opens a new
//! one. When the response body is complete the connection goes back (see
//! [`BackendBody`](super::body::BackendBody)); a connection whose response was cut, or
//! whose member is draining, ejected or gone, is closed instead. Connections that have
//! been idle for [`IDLE_TIMEOUT`] are not reused.

use std::io;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http::body::RequestBody;
use crate::pool::{lock, Member, Shared};

pub(crate) type Sender = http1::SendRequest<RequestBody>;

/// The most idle connections kept per member.
const MAX_IDLE: usize = 128;
/// Idle connections older than this are closed rather than reused (members commonly
/// close theirs after 60 s or more).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a TCP connection to a member.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a pooled connection may take to become ready for its next request.
const READY_WAIT: Duration = Duration::from_millis(20);

pub(crate) struct IdleConn {
    sender: Sender,
    since: Instant,
}

/// Returns a connection to its member's idle pool, if it is worth keeping.
pub(crate) fn checkin(member: &Member, sender: Sender) {
    if sender.is_closed() || !member.routable() {
        return;
    }
    let mut idle = lock(&member.idle);
    if idle.len() < MAX_IDLE {
        idle.push(IdleConn {
            sender,
            since: Instant::now(),
        });
    }
}

/// A ready pooled connection to `member`, if there is one.
async fn checkout(member: &Member) -> Option<Sender> {
    loop {
        let IdleConn { mut sender, since } = lock(&member.idle).pop()?;
        if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT {
            continue;
        }
        if sender.is_ready() {
            return Some(sender);
        }
        // The previous response just ended and hyper has not yet noticed; this is
        // normally a matter of microseconds.
        if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
            return Some(sender);
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

/// Sends `request` to `member` on a pooled or new connection. A pooled connection that
/// turns out to be closed before the request was written is skipped silently.
pub(crate) async fn send(
    member: &Member,
    shared: &Shared,
    mut request: hyper::Request<RequestBody>,
) -> Result<(Response<Incoming>, Sender), SendError> {
    loop {
        let (mut sender, fresh) = match checkout(member).await {
            Some(sender) => (sender, false),
            None => match connect(member, shared).await {
                Ok(sender) => (sender, true),
                Err(e) => return Err(SendError::Connect(e, request)),
            },
        };
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, sender)),
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

async fn connect(member: &Member, shared: &Shared) -> io::Result<Sender> {
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
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(crate::http::MAX_BUF)
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(io::Error::other)?;
    shared.tracker.spawn(async move {
        // Ends when the member closes, or once the sender is dropped and idle.
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "backend connection ended");
        }
    });
    Ok(sender)
}
