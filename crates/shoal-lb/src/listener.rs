//! Listeners at run time: one accept loop per bound socket, one task per connection.
//!
//! A listener's settings (its [`Mode`]) can be swapped by `apply` without rebinding;
//! connections already open keep going (an HTTP connection picks up new routes with its
//! next request). Closing a listener stops accepting at once, lets HTTP connections
//! finish their in-flight requests, and leaves TCP connections running until they end.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{ConnInfo, HttpMode};
use crate::l4::TcpMode;
use crate::pool::Shared;

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener does with a connection, as resolved at apply time.
pub(crate) enum Mode {
    Tcp(Arc<TcpMode>),
    Http {
        http: Arc<HttpMode>,
        tls: Option<TlsAcceptor>,
    },
}

pub(crate) struct ListenerRuntime {
    /// The address as configured (port 0 stays 0).
    pub(crate) bind: SocketAddr,
    /// The address actually bound.
    pub(crate) local: SocketAddr,
    mode: RwLock<Arc<Mode>>,
    close: CancellationToken,
    /// The accept loops (one per socket); each ends once its socket is closed.
    loops: TaskTracker,
}

impl ListenerRuntime {
    /// Starts accepting on `sockets` (bound to the same address), the `i`th on the
    /// `i`th worker.
    pub(crate) fn start(
        name: &str,
        bind: SocketAddr,
        sockets: Vec<std::net::TcpListener>,
        mode: Mode,
        shared: &Arc<Shared>,
    ) -> Arc<Self> {
        let local = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(bind);
        let runtime = Arc::new(Self {
            bind,
            local,
            mode: RwLock::new(Arc::new(mode)),
            close: shared.shutdown.child_token(),
            loops: TaskTracker::new(),
        });
        tracing::info!(listener = name, addr = %local, sockets = sockets.len(), "listening");
        for (i, socket) in sockets.into_iter().enumerate() {
            let accepting = accept_loop(runtime.clone(), socket, shared.clone(), name.to_owned());
            let accepting = runtime.loops.track_future(accepting);
            shared.workers.spawn(i, &shared.tracker, accepting);
        }
        runtime.loops.close();
        runtime
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.mode.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(mode);
    }

    fn mode(&self) -> Arc<Mode> {
        self.mode
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops accepting and returns once the port is free; open connections finish (see
    /// the module docs).
    pub(crate) async fn close(&self) {
        self.close.cancel();
        self.loops.wait().await;
    }
}

async fn accept_loop(
    runtime: Arc<ListenerRuntime>,
    socket: std::net::TcpListener,
    shared: Arc<Shared>,
    name: String,
) {
    // Registered with the runtime this loop runs on, as are the connections it accepts.
    let socket = match TcpListener::from_std(socket) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(listener = %name, error = %e, "cannot accept on a bound socket");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = runtime.close.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared
                    .tracker
                    .spawn(connection(runtime.clone(), stream, peer, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(socket);
    tracing::debug!(listener = %name, addr = %runtime.local, "accepting socket closed");
}

async fn connection(
    runtime: Arc<ListenerRuntime>,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let current = runtime.mode();
    match &*current {
        Mode::Tcp(tcp) => {
            let kernel = shared.kernel_forwarding.load(Ordering::Relaxed);
            crate::l4::proxy(stream, peer, tcp.clone(), shared.shutdown.clone(), kernel).await
        }
        Mode::Http { http, tls } => {
            let _ = stream.set_nodelay(true);
            let info = ConnInfo::new(peer, runtime.local, tls.is_some());
            let fallback = http.clone();
            let mode = {
                let runtime = runtime.clone();
                move || match &*runtime.mode() {
                    Mode::Http { http, .. } => http.clone(),
                    // The listener became a TCP one; this connection keeps its routes.
                    Mode::Tcp(_) => fallback.clone(),
                }
            };
            let close = runtime.close.clone();
            match tls {
                None => crate::http::serve(stream, info, mode, close, false).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let tls_stream = tokio::select! {
                        _ = close.cancelled() => return,
                        done = handshake => match done {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        },
                    };
                    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    crate::http::serve(tls_stream, info, mode, close, h2).await
                }
            }
        }
    }
}
