//! The bodies the layer-7 proxy streams: client → member and member → client.
//!
//! Both stream frame by frame (hyper polls the next frame only when the other side has
//! taken the last one, which is the backpressure), count bytes into the pool's counters,
//! and never buffer more than one frame. [`BackendBody`] also returns its keep-alive
//! connection to the member's idle pool once the response is complete, keeps the member's
//! in-flight count up while the response streams, and cuts a response whose member stalls
//! for longer than the request timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::http::backend::BackendConn;
use crate::pool::{ActiveGuard, PoolCounters};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way to a member.
pub(crate) enum RequestBody {
    /// A body held in memory (empty, or small and collected so it can be replayed).
    Full(Option<Bytes>),
    /// The client's body, streamed through.
    Stream {
        inner: Incoming,
        counters: Arc<PoolCounters>,
    },
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Stream { inner, counters } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    let n = data.map_or(0, Bytes::len) as u64;
                    counters.bytes_in.fetch_add(n, Ordering::Relaxed);
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Full(data) => data.is_none(),
            RequestBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// A response body on its way to the client.
pub(crate) enum ResponseBody {
    /// The balancer's own answer (503, 502, 504…).
    Local(Option<Bytes>),
    Backend(BackendBody),
}

impl ResponseBody {
    pub(crate) fn text(text: &'static str) -> Self {
        ResponseBody::Local(Some(Bytes::from_static(text.as_bytes())))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ResponseBody::Backend(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local(data) => data.is_none(),
            ResponseBody::Backend(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseBody::Backend(body) => body.inner.size_hint(),
        }
    }
}

/// A member's response body, streamed to the client.
pub(crate) struct BackendBody {
    inner: Incoming,
    /// The connection it comes on: driven while the body streams, back to the idle pool
    /// when the body is complete.
    conn: Option<BackendConn>,
    /// The member stays "in flight" until the body is done or dropped.
    guard: ActiveGuard,
    stall_limit: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("The member sent nothing for {0:?} in the middle of a response")]
struct Stalled(Duration);

impl BackendBody {
    pub(crate) fn new(
        inner: Incoming,
        conn: BackendConn,
        guard: ActiveGuard,
        stall_limit: Duration,
    ) -> Self {
        Self {
            inner,
            conn: Some(conn),
            guard,
            stall_limit,
            stall: None,
            progressed: false,
        }
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            crate::http::backend::checkin(&self.guard.0, conn);
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut poll = Pin::new(&mut self.inner).poll_frame(cx);
        if poll.is_pending() {
            // Nothing buffered: let the connection read more, then look again.
            if let Some(conn) = self.conn.as_mut() {
                conn.drive(cx);
                poll = Pin::new(&mut self.inner).poll_frame(cx);
            }
        }
        match poll {
            Poll::Ready(Some(Ok(frame))) => {
                self.progressed = true;
                if let Some(data) = frame.data_ref() {
                    let counters = &self.guard.0.counters;
                    counters
                        .bytes_out
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.conn = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let limit = self.stall_limit;
                let stall = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if self.progressed {
                    self.progressed = false;
                    stall.as_mut().reset(Instant::now() + limit);
                }
                ready!(stall.as_mut().poll(cx));
                self.conn = None;
                Poll::Ready(Some(Err(Box::new(Stalled(limit)))))
            }
        }
    }
}

impl Drop for BackendBody {
    fn drop(&mut self) {
        // hyper does not poll a body that says it is empty (HEAD, 204, 304, length 0).
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}
