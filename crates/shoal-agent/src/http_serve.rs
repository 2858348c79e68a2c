//! The HTTP/1 server loop of the API and of the agent endpoint (instead of `axum::serve`,
//! which has no timeouts): a connection must send a request's headers within
//! [`HEADER_TIMEOUT`] — whether it is new or idle between requests — or it is closed, so
//! connections that send nothing, or headers a byte at a time, cannot pile up until the
//! server runs out of descriptors. With `half_close` (the agent endpoint), a client that
//! half-closes after its request (`nc`, simple scripts in a guest) still gets the answer;
//! without it (the API), a client's FIN ends the connection at once, so a watch stream
//! to a client that went away does not hold a shutdown until its next bookmark.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest a client may take to send a request's headers, and longest a kept-alive
/// connection may sit idle.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on every connection `listener` accepts until `shutdown`; a connection in
/// the middle of a request finishes it. Connections belong to `tracker`. Each request
/// carries its connection's peer address as axum's `ConnectInfo`, and whatever else `tag`
/// puts in its extensions.
pub async fn serve<L, T>(
    mut listener: L,
    app: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    half_close: bool,
    tag: T,
) where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    T: Fn(std::net::SocketAddr, &mut axum::http::Extensions) + Clone + Send + Sync + 'static,
{
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = listener.accept() => c,
        };
        // The router itself is shared, not rebuilt, per connection.
        let tag = tag.clone();
        let app = tower::util::MapRequest::new(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                let ext = req.extensions_mut();
                ext.insert(axum::extract::ConnectInfo(peer));
                tag(peer, ext);
                req
            },
        );
        let service = TowerToHyperService::new(app);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .half_close(half_close)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "API connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
