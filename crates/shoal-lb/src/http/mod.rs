//! The layer-7 proxy: HTTP/1.1 and h2 from clients, HTTP/1.1 with keep-alive to members.
//!
//! HTTP/1.x client connections go through the lean proxy in [`h1`]; HTTP/2 ones (ALPN
//! `h2`, or the h2c preface when the listener has HTTP/2 on) through hyper and
//! [`proxy`] here. Both do the same to a request: it is routed to a pool by host and
//! path, gets `X-Forwarded-*` headers and loses hop-by-hop ones, goes to one member
//! (affinity cookie, else round robin over routable members), and its response streams
//! back. A failure before any response byte is retried on another member: always when
//! nothing was sent (connection refused), once when the method is idempotent and its
//! body could be replayed. Refused connections, and fresh connections that are reset,
//! eject the member at once.

pub(crate) mod backend;
pub(crate) mod batch;
pub(crate) mod body;
pub(crate) mod h1;
pub(crate) mod wire;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::affinity;
use crate::http::backend::SendError;
use crate::http::body::{BackendBody, RequestBody, ResponseBody};
use crate::pool::{ActiveGuard, Member, PoolRuntime};
use crate::route::RouteTable;

/// Largest request or response head, and the read buffer of a connection.
pub(crate) const MAX_BUF: usize = 64 * 1024;
/// Request bodies up to this size are held so the request can be retried (idempotent
/// ones after a failure, any after a kept-alive connection closed under it).
pub(crate) const MAX_REPLAY_BODY: u64 = 64 * 1024;
/// A client must send a complete request head within this time.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A layer-7 listener's routing and settings, as resolved at apply time.
pub(crate) struct HttpMode {
    pub(crate) routes: RouteTable<Arc<PoolRuntime>>,
    pub(crate) request_timeout: Duration,
    pub(crate) affinity: bool,
    /// HTTP/2 from clients allowed (else HTTP/1.1 only).
    pub(crate) http2: bool,
}

/// Where a client connection came from and arrived, with the header values that say
/// so (made once per connection, not per request).
pub(crate) struct ConnInfo {
    client: SocketAddr,
    tls: bool,
    client_ip: HeaderValue,
    local_port: HeaderValue,
}

impl ConnInfo {
    pub(crate) fn new(client: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            client,
            tls,
            client_ip,
            local_port: HeaderValue::from(local.port()),
        }
    }
}

/// Serves one client connection until it ends, or until `close` asks it to finish its
/// in-flight requests and stop. `mode` gives the listener's current settings per request;
/// `alpn_h2` says TLS negotiated HTTP/2.
pub(crate) async fn serve<IO, M>(
    io: IO,
    info: ConnInfo,
    mode: M,
    close: CancellationToken,
    alpn_h2: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    M: Fn() -> Arc<HttpMode> + Send + Sync + 'static,
{
    let http2 = mode().http2;
    let (mode, info) = (Arc::new(mode), Arc::new(info));
    if alpn_h2 && http2 {
        serve_h2(io, info, mode, close).await
    } else {
        h1::serve(io, info, mode, close, http2).await
    }
}

/// The connection server for HTTP/2.
fn h2_server() -> &'static http2::Builder<TokioExecutor> {
    static SERVER: std::sync::OnceLock<http2::Builder<TokioExecutor>> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(MAX_BUF as u32);
        builder
    })
}

/// Serves an HTTP/2 client connection with hyper, each request through [`proxy`].
pub(crate) async fn serve_h2<IO, M>(
    io: IO,
    info: Arc<ConnInfo>,
    mode: Arc<M>,
    close: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    M: Fn() -> Arc<HttpMode> + Send + Sync + 'static,
{
    let client = info.client;
    let service = service_fn(move |request| {
        let mode = mode();
        let info = info.clone();
        async move { Ok::<_, Infallible>(proxy(&mode, &info, request).await) }
    });
    let mut conn = std::pin::pin!(h2_server().serve_connection(TokioIo::new(io), service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = close.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %client, error = %crate::error_chain(&e), "client connection ended with an error");
    }
}

/// Handles one request end to end; never fails (errors become 5xx answers).
async fn proxy(
    mode: &HttpMode,
    info: &ConnInfo,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let deadline = Instant::now() + mode.request_timeout;
    let host = request_host(request.uri(), request.headers());
    let pool = mode
        .routes
        .select(
            host.as_ref().and_then(|h| h.to_str().ok()),
            request.uri().path(),
        )
        .clone();
    pool.counters.requests.fetch_add(1, Ordering::Relaxed);
    let affinity_member = if mode.affinity {
        let cookies = request.headers().get_all(header::COOKIE);
        affinity::find(cookies.iter().map(HeaderValue::as_bytes))
    } else {
        None
    };
    let (mut parts, body) = request.into_parts();

    if let Some(host) = &host {
        if !parts.headers.contains_key(header::HOST) {
            // h2 carries the host in `:authority`; HTTP/1.1 members need `Host`.
            parts.headers.insert(header::HOST, host.clone());
        }
    }
    prepare_headers(&mut parts.headers, info, host);
    let uri = origin_form(&parts.uri);
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );

    // A body we may need to send twice is held in memory; anything else streams once.
    let mut replay: Option<Option<Bytes>> = None;
    let mut stream = None;
    if body.is_end_stream() {
        replay = Some(None);
    } else if body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_REPLAY_BODY)
    {
        match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(collected)) => {
                let bytes = collected.to_bytes();
                pool.counters
                    .bytes_in
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                replay = Some(Some(bytes));
            }
            Ok(Err(_)) => {
                return local(
                    &pool,
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read\n",
                )
            }
            Err(_) => {
                return local(
                    &pool,
                    StatusCode::REQUEST_TIMEOUT,
                    "The request body did not arrive in time\n",
                )
            }
        }
    } else {
        stream = Some(RequestBody::Stream {
            inner: body,
            counters: pool.counters.clone(),
        });
    }
    // Once sent, a request cannot be had back: keep a copy of the head only when a
    // failure after sending may be retried.
    let mut sent_retry_left = replay.is_some() && idempotent;
    // A kept-alive connection the member closed as the request went out (its keep-alive
    // timeout) got a request the member never read: one more try on a new connection to
    // the same member, whatever the method, when the body can be sent again. (Browsers
    // do the same for a reused connection that ends before any response byte.)
    let mut stale_retry_left = replay.is_some();
    let first_headers = if sent_retry_left || stale_retry_left {
        parts.headers.clone()
    } else {
        std::mem::take(&mut parts.headers)
    };
    let build = |body: RequestBody, headers: HeaderMap| {
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        request
    };
    let first_body = match (&replay, stream) {
        (Some(bytes), _) => RequestBody::Full(bytes.clone()),
        (None, Some(stream)) => stream,
        (None, None) => RequestBody::Full(None),
    };
    let mut pending = Some(build(first_body, first_headers));

    let mut last: Option<Arc<Member>> = None;
    // Set when the next try goes to the same member on a new connection.
    let mut again: Option<Arc<Member>> = None;
    // Refused connections are retried on other members whatever the method: nothing
    // was sent. Bounded so a pool of dead members answers quickly.
    for _attempt in 0..4 {
        let Some(request) = pending.take() else { break };
        let reuse = again.is_none();
        let member = again
            .take()
            .filter(|m| m.routable())
            .or_else(|| pick_member(&pool, affinity_member.as_deref(), last.as_ref()));
        let Some(member) = member else {
            return if last.is_some() {
                local(
                    &pool,
                    StatusCode::BAD_GATEWAY,
                    "No other healthy member to retry on\n",
                )
            } else {
                local(
                    &pool,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No healthy member\n",
                )
            };
        };
        let guard = ActiveGuard::new(member.clone());
        let outcome =
            tokio::time::timeout_at(deadline, backend::send(&member, request, reuse)).await;
        match outcome {
            Err(_) => {
                return local(
                    &pool,
                    StatusCode::GATEWAY_TIMEOUT,
                    "The member did not answer in time\n",
                )
            }
            Ok(Ok((response, conn))) => {
                return forward(
                    mode,
                    &pool,
                    info,
                    response,
                    conn,
                    guard,
                    affinity_member.as_deref(),
                );
            }
            Ok(Err(SendError::Connect(error, back))) => {
                member.eject(format!("Cannot connect to {}: {error}", member.addr));
                pending = Some(back);
            }
            Ok(Err(SendError::NotSent(error, back))) => {
                member.eject(format!(
                    "Connection to {} closed at once: {}",
                    member.addr,
                    crate::error_chain(&error)
                ));
                pending = Some(back);
            }
            Ok(Err(SendError::Failed { error, fresh })) => {
                tracing::debug!(pool = %pool.name, member = %member.id, error = %crate::error_chain(&error), "request to member failed");
                if error.is_parse() || error.is_parse_status() {
                    return local(
                        &pool,
                        StatusCode::BAD_GATEWAY,
                        "The member sent an invalid response\n",
                    );
                }
                if error.is_user() {
                    // The client's own body failed (it went away mid-upload): not the
                    // member's fault, and nothing to retry.
                    return local(
                        &pool,
                        StatusCode::BAD_REQUEST,
                        "The request body could not be read\n",
                    );
                }
                if !fresh && stale_retry_left && closed_under_us(&error) {
                    stale_retry_left = false;
                    pending = replay.as_ref().map(|bytes| {
                        build(RequestBody::Full(bytes.clone()), parts.headers.clone())
                    });
                    again = Some(member);
                    continue;
                }
                if fresh {
                    member.eject(format!(
                        "Connection to {} failed: {}",
                        member.addr,
                        crate::error_chain(&error)
                    ));
                }
                if !sent_retry_left {
                    return local(
                        &pool,
                        StatusCode::BAD_GATEWAY,
                        "The member closed the connection before answering\n",
                    );
                }
                sent_retry_left = false;
                pending = replay
                    .as_ref()
                    .map(|bytes| build(RequestBody::Full(bytes.clone()), parts.headers.clone()));
            }
        }
        last = Some(member);
    }
    local(
        &pool,
        StatusCode::BAD_GATEWAY,
        "No member could take the request\n",
    )
}

/// Turns a member's response into the client's.
fn forward(
    mode: &HttpMode,
    pool: &PoolRuntime,
    info: &ConnInfo,
    response: Response<Incoming>,
    conn: backend::BackendConn,
    guard: ActiveGuard,
    affinity_member: Option<&str>,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    if parts.status.is_server_error() {
        pool.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }
    strip_hop_by_hop(&mut parts.headers);
    if mode.affinity && affinity_member != Some(&*guard.0.id) {
        parts.headers.append(
            header::SET_COOKIE,
            affinity::set_cookie(&guard.0.id, info.tls),
        );
    }
    let body = BackendBody::new(body, conn, guard, mode.request_timeout);
    Response::from_parts(parts, ResponseBody::Backend(body))
}

/// The member for the next try: the affinity cookie's on the first try (when it is
/// routable), else the next in round robin after `last`.
pub(crate) fn pick_member(
    pool: &PoolRuntime,
    affinity: Option<&str>,
    last: Option<&Arc<Member>>,
) -> Option<Arc<Member>> {
    match (affinity, last) {
        (Some(id), None) => pool.find(id).filter(|m| m.routable()),
        _ => None,
    }
    .or_else(|| pool.pick_round_robin(last))
}

/// The request target a member gets: the path and query only (`/` when there is none).
pub(crate) fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// Whether a request failed because its (kept-alive) connection was closed or reset by
/// the member rather than answered: the member never took the request.
fn closed_under_us(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        source = e.source();
    }
    false
}

/// The balancer's own answer.
pub(crate) fn local(
    pool: &PoolRuntime,
    status: StatusCode,
    text: &'static str,
) -> Response<ResponseBody> {
    if status.is_server_error() {
        pool.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let mut response = Response::new(ResponseBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The host a request is for: the h2 `:authority` or the `Host` header.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Drops hop-by-hop headers and adds `X-Forwarded-For` (appended to the client's),
/// `-Proto`, `-Host` and `-Port` (replacing the client's: the balancer is the edge).
pub(crate) fn prepare_headers(headers: &mut HeaderMap, info: &ConnInfo, host: Option<HeaderValue>) {
    strip_hop_by_hop(headers);
    headers.remove(header::EXPECT);
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        None => info.client_ip.clone(),
        Some(_) => {
            let mut all = Vec::new();
            for v in headers.get_all(&X_FORWARDED_FOR) {
                all.extend_from_slice(v.as_bytes());
                all.extend_from_slice(b", ");
            }
            all.extend_from_slice(info.client_ip.as_bytes());
            HeaderValue::from_bytes(&all).unwrap_or_else(|_| info.client_ip.clone())
        }
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    let proto = if info.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match host {
        Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    headers.insert(X_FORWARDED_PORT.clone(), info.local_port.clone());
}

/// Removes the headers that describe one connection rather than the message.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass to find out whether there is anything to do: most messages have none of
    // these, and a lookup per name costs more than a look at each header.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    for name in wire::HOP_BY_HOP {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    wire::HOP_BY_HOP.contains(&name.as_str())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A connection from 10.1.2.3 to port 8443.
    pub(crate) fn info(tls: bool) -> ConnInfo {
        ConnInfo::new(
            "10.1.2.3:5555".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
            tls,
        )
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        prepare_headers(
            &mut h,
            &info(true),
            Some(HeaderValue::from_static("example.com:8443")),
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "example.com:8443");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(h["x-kept"], "yes");
        for gone in ["connection", "x-secret", "keep-alive", "transfer-encoding"] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
    }

    #[test]
    fn host_from_authority_or_header() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        assert_eq!(
            request_host(&Uri::from_static("/x"), &h).unwrap(),
            "a.example"
        );
        assert_eq!(
            request_host(&Uri::from_static("https://b.example/x"), &h).unwrap(),
            "b.example"
        );
        assert_eq!(
            request_host(&Uri::from_static("/x"), &HeaderMap::new()),
            None
        );
    }
}
