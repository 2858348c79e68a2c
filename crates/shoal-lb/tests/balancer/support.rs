//! Test backends, clients and config builders.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use shoal_lb::{
    Balancer, BalancerConfig, HttpSettings, Listener, ListenerKind, Member, Pool, Probe,
    TcpSettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Size of the `/big` answer after its first line.
pub const BIG: usize = 16 << 20;

/// Generous: tests wait for conditions, they do not time them.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `fut` with [`DEADLINE`], panicking when it takes longer.
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A tiny HTTP/1.1 backend on 127.0.0.1.
///
/// `GET /health` answers 200 or 503 (`healthy`); `/hold` waits for [`Backend::release`];
/// `/slow` waits 2 ms; `/echo` answers with the request head; `/big` with [`BIG`] more
/// bytes; `/count` with the length of the request body; anything else with the backend's
/// name. Every answer's body starts with the name. `/ws` with `Upgrade` switches
/// protocols (101, `x-seen-key` echoing `Sec-WebSocket-Key`) and then echoes every byte;
/// without `Upgrade` it answers normally.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub healthy: Arc<AtomicBool>,
    /// Requests other than `/health`.
    pub hits: Arc<AtomicUsize>,
    /// Requests waiting in `/hold` right now.
    pub holding: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    kill: CancellationToken,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, None).await
    }

    /// A backend that speaks HTTPS with `tls`.
    pub async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Backend {
            name: name.to_owned(),
            addr,
            healthy: Arc::new(AtomicBool::new(true)),
            hits: Arc::default(),
            holding: Arc::default(),
            connections: Arc::default(),
            release: watch::channel(false).0,
            kill: CancellationToken::new(),
        };
        let state = Arc::new(State {
            name: name.to_owned(),
            healthy: backend.healthy.clone(),
            hits: backend.hits.clone(),
            holding: backend.holding.clone(),
            release: backend.release.subscribe(),
        });
        let kill = backend.kill.clone();
        let connections = backend.connections.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = kill.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let kill = kill.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_backend(stream, state, kill).await,
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve_backend(stream, state, kill).await;
                            }
                        }
                    }
                });
            }
        });
        backend
    }

    pub fn member(&self) -> Member {
        Member::new(&self.name, self.addr)
    }

    /// Lets every `/hold` request (now and later) answer.
    pub fn release(&self) {
        self.release.send_replace(true);
    }

    /// Like `kill -9`: the listening socket and every connection close at once.
    pub async fn kill(&self) {
        self.kill.cancel();
        let addr = self.addr;
        bounded("the killed backend's port to close", async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve_backend<IO>(io: IO, state: Arc<State>, kill: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(state.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::select! {
        _ = kill.cancelled() => {}
        _ = conn => {}
    }
}

struct State {
    name: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    holding: Arc<AtomicUsize>,
    release: watch::Receiver<bool>,
}

async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/ws" {
        if let Some(protocol) = req.headers().get(http::header::UPGRADE).cloned() {
            state.hits.fetch_add(1, Ordering::SeqCst);
            let key = req.headers().get("sec-websocket-key").cloned();
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut r = Response::new(Full::default());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert(http::header::UPGRADE, protocol);
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            if let Some(key) = key {
                r.headers_mut().insert("x-seen-key", key);
            }
            return Ok(r);
        }
    }
    if path == "/health" {
        let ok = state.healthy.load(Ordering::SeqCst);
        let mut r = Response::new(Full::from(if ok { "ok" } else { "failing" }));
        if !ok {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        return Ok(r);
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let mut body = state.name.clone();
    match path.as_str() {
        "/hold" => {
            state.holding.fetch_add(1, Ordering::SeqCst);
            let mut release = state.release.clone();
            let _ = release.wait_for(|r| *r).await;
            state.holding.fetch_sub(1, Ordering::SeqCst);
        }
        "/slow" => tokio::time::sleep(Duration::from_millis(2)).await,
        "/big" => body.push_str(&format!("\n{}", "x".repeat(BIG))),
        "/count" => {
            // Reads the body frame by frame and answers with its length.
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    n += data.map_or(0, |d| d.len());
                }
            }
            return Ok(Response::new(Full::from(format!("{}\n{n}", state.name))));
        }
        "/echo" => {
            body.push('\n');
            body.push_str(&format!("{} {}\n", req.method(), req.uri()));
            for (k, v) in req.headers() {
                body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            let content = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            body.push_str(&format!("body: {}\n", String::from_utf8_lossy(&content)));
        }
        _ => {}
    }
    Ok(Response::new(Full::from(body)))
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The backend name the body starts with.
    pub fn backend(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }
}

/// One request on a new connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let response = sender.send_request(req).await?;
    read_reply(response).await
}

pub async fn read_reply(response: Response<Incoming>) -> anyhow::Result<Reply> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub fn get_request(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "test.local")
        .body(Full::default())
        .unwrap()
}

pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    send(addr, get_request(path)).await
}

/// A keep-alive client: one connection, reopened after an error.
pub struct KeepAlive {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        let result = self.try_get(path).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_get(&mut self, path: &str) -> anyhow::Result<Reply> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = TcpStream::connect(self.addr).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            anyhow::bail!("no connection");
        };
        sender.ready().await?;
        let response = sender.send_request(get_request(path)).await?;
        read_reply(response).await
    }
}

/// One HTTP/1.1 request over a new raw TCP connection (`Connection: close`), for L4
/// listeners: the body, read to EOF.
pub async fn raw_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut all = Vec::new();
    tcp.read_to_end(&mut all).await?;
    let text = String::from_utf8_lossy(&all).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => anyhow::bail!("not a 200 response: {text:?}"),
    }
}

pub fn probe() -> Probe {
    Probe {
        interval: Duration::from_millis(200),
        threshold: 2,
        timeout: Duration::from_millis(500),
        ..Probe::http("/health")
    }
}

pub fn pool(name: &str, backends: &[&Backend], probe: Option<Probe>) -> Pool {
    Pool {
        name: name.to_owned(),
        members: backends.iter().map(|b| b.member()).collect(),
        probe,
    }
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn http_listener(name: &str, settings: HttpSettings) -> Listener {
    Listener {
        name: name.to_owned(),
        bind: local(),
        kind: ListenerKind::Http(settings),
    }
}

pub fn tcp_listener(name: &str, settings: TcpSettings) -> Listener {
    Listener {
        name: name.to_owned(),
        bind: local(),
        kind: ListenerKind::Tcp(settings),
    }
}

/// A balancer with an L7 listener "web" and an L4 listener "tcp" in front of one probed
/// pool "p" of `backends`, once every member is healthy.
pub async fn front(backends: &[&Backend]) -> (Balancer, CancellationToken, SocketAddr, SocketAddr) {
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    lb.apply(BalancerConfig {
        listeners: vec![
            http_listener("web", HttpSettings::new("p")),
            tcp_listener("tcp", TcpSettings::new("p")),
        ],
        pools: vec![pool("p", backends, Some(probe()))],
    })
    .await
    .unwrap();
    wait_healthy(&lb, backends.len()).await;
    let web = lb.local_addr("web").unwrap();
    let tcp = lb.local_addr("tcp").unwrap();
    (lb, shutdown, web, tcp)
}

pub async fn wait_healthy(lb: &Balancer, n: usize) {
    wait_for("members to be healthy", || {
        lb.health()
            .iter()
            .filter(|h| h.state == shoal_lb::HealthState::Healthy)
            .count()
            == n
    })
    .await;
}

pub fn state_of(lb: &Balancer, member: &str) -> shoal_lb::HealthState {
    lb.health()
        .into_iter()
        .find(|h| h.member == member)
        .map(|h| h.state)
        .unwrap_or_else(|| panic!("no member {member}"))
}
