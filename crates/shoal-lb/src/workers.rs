//! The threads that carry the data plane: one single-threaded tokio runtime each, as
//! HAProxy's `nbthread` and Envoy's workers. Every listener has one accepting socket per
//! worker (`SO_REUSEPORT`: the kernel spreads new connections over them), and a
//! connection lives on the worker that accepted it, so a request never hops between
//! threads and the data plane does not queue behind whatever else shares the process
//! (the API, the controller). Health probes and `apply` stay on the caller's runtime.
//!
//! Member choice does not depend on the worker: round robin, `SourceIP` hashing and the
//! affinity cookie read state shared by every worker.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handles on the worker runtimes (none: tasks run on the caller's runtime).
#[derive(Default)]
pub(crate) struct Workers(Vec<Handle>);

impl Workers {
    /// Starts `n` worker threads. Each runs until `shutdown` is cancelled and every task
    /// in `tracker` has ended (a connection on a worker needs its worker to finish).
    pub(crate) fn start(
        n: usize,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> io::Result<Self> {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let (shutdown, tracker) = (shutdown.clone(), tracker.clone());
            std::thread::Builder::new()
                .name(format!("shoal-lb-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    crate::http::batch::start_on_this_thread();
                    let _ = tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async {
                        shutdown.cancelled().await;
                        tracker.close();
                        tracker.wait().await;
                    });
                })?;
            let handle = rx
                .recv()
                .map_err(|_| io::Error::other("a balancer worker thread ended at start"))??;
            handles.push(handle);
        }
        Ok(Self(handles))
    }

    /// How many accepting sockets a listener gets.
    pub(crate) fn sockets(&self) -> usize {
        self.0.len().max(1)
    }

    /// Runs `task` (a listener's `i`th accept loop) on worker `i`, or on the caller's
    /// runtime when there are no workers.
    pub(crate) fn spawn<F>(&self, i: usize, tracker: &TaskTracker, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self.0.get(i) {
            Some(handle) => {
                tracker.spawn_on(task, handle);
            }
            None => {
                tracker.spawn(task);
            }
        }
    }
}

/// Binds `n` listening sockets to `addr` (the same port for all, the kernel's choice when
/// `addr` has port 0). A port that anything else holds is refused, even a socket that
/// would share it (`SO_REUSEPORT` by the same user): a balancer must not silently split
/// a port's connections with another program.
pub(crate) fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if n <= 1 {
        return Ok(vec![listener(addr, false)?]);
    }
    if addr.port() != 0 {
        // Fails when the port is taken, shared or not; closed again at once.
        drop(listener(addr, false)?);
    }
    let first = listener(addr, true)?;
    let port = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(listener(port, true)?);
    }
    Ok(all)
}

fn listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As tokio's and std's bind: a port whose old connections linger in TIME_WAIT can
    // be listened on again at once.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
