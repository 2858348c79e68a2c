//! The API's https listener: the same router as the plain listener, behind rustls.
//!
//! TCP connections are accepted on one task; each TLS handshake runs on its own task (with
//! a deadline) so a slow or silent client never holds up the others, and finished
//! handshakes are handed to axum through a channel. Requests arriving here carry the
//! [`Scheme`] extension `https`, so the URLs the API writes (`Azure-AsyncOperation`,
//! `nextLink`) point back at this listener. Loading certificates is the binary's job
//! (`tls.rs` there); this module only serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::server::Scheme;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for axum to pick them up.
const BACKLOG: usize = 64;

/// Accepted, handshaken https connections for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; the accept loop and handshakes belong to `tracker` and
    /// stop when `shutdown` is cancelled.
    pub fn start(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = tracker.clone();
        tracker.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tcp.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "https listener cannot accept");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let shutdown = shutdown.clone();
                handshakes.spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let tls = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = handshake => r,
                    };
                    match tls {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop has stopped (shutdown): no connection will come again, and
            // axum's graceful shutdown ends the server without another accept.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The router for the https listener: requests are marked as having come over https.
pub fn https_router(app: axum::Router) -> axum::Router {
    app.layer(axum::Extension(Scheme("https")))
}
