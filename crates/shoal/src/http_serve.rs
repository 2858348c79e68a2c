//! The API's HTTP/1 server loop (instead of `axum::serve`, which has no timeouts): a
//! connection must send a request's headers within [`HEADER_TIMEOUT`] — whether it is new
//! or idle between requests — or it is closed, so connections that send nothing, or
//! headers a byte at a time, cannot pile up until the server runs out of descriptors.

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
/// the middle of a request finishes it. Connections belong to `tracker`.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = listener.accept() => c,
        };
        // The portal offers the local owner sign-in only to loopback callers: each request
        // carries its connection's peer address (the router itself is shared, not rebuilt).
        let app = tower::util::MapRequest::new(
            app.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(shoal_api::server::PeerAddr(peer));
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
