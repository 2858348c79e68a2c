//! `Upgrade` pass-through (WebSocket and any other protocol a client and member agree
//! on with HTTP/1.1's `Connection: upgrade`).
//!
//! The request goes to one member (affinity cookie, else round robin; a member that
//! refuses the connection is ejected and the next one tried) on a connection of its own,
//! with its `Upgrade` and `Connection` headers kept. When the member answers
//! `101 Switching Protocols`, the client gets that answer and, once both sides have
//! switched, the two connections are spliced byte for byte until either closes; the
//! member counts as in flight (so draining waits for it, up to its timeout) meanwhile.
//! Any other answer is passed back as a normal response.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::http::body::{RequestBody, ResponseBody};
use crate::http::{
    backend, local, origin_form, pick_member, prepare_headers, strip_hop_by_hop, ConnInfo, HttpMode,
};
use crate::pool::{ActiveGuard, Member, PoolRuntime};

/// The protocol a request asks to switch to, if it is an HTTP/1.1 upgrade request
/// (`Connection: upgrade` and an `Upgrade` header).
pub(crate) fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    let asks = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    asks.then(|| upgrade.clone())
}

/// Proxies an upgrade request (see the module documentation).
pub(crate) async fn proxy(
    mode: &HttpMode,
    info: &ConnInfo,
    pool: Arc<PoolRuntime>,
    protocol: HeaderValue,
    mut request: Request<Incoming>,
    host: Option<HeaderValue>,
    affinity_member: Option<String>,
) -> Response<ResponseBody> {
    let client_upgrade = hyper::upgrade::on(&mut request);
    let (mut parts, body) = request.into_parts();
    prepare_headers(&mut parts.headers, info, host);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, protocol);
    let uri = origin_form(&parts.uri);
    let deadline = tokio::time::Instant::now() + mode.request_timeout;
    // The body (WebSocket's handshake has none) streams once: no retry after sending.
    let mut body = Some(RequestBody::Stream {
        inner: body,
        counters: pool.counters.clone(),
    });
    let mut last: Option<Arc<Member>> = None;
    for _attempt in 0..4 {
        let Some(member) = pick_member(&pool, affinity_member.as_deref(), last.as_ref()) else {
            break;
        };
        let stream = match backend::connect_tcp(&member).await {
            Ok(stream) => stream,
            Err(error) => {
                member.eject(format!("Cannot connect to {}: {error}", member.addr));
                last = Some(member);
                continue;
            }
        };
        let guard = ActiveGuard::new(member.clone());
        let mut upstream = Request::new(body.take().unwrap_or(RequestBody::Full(None)));
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri.clone();
        *upstream.headers_mut() = parts.headers.clone();
        let exchange = async {
            let (mut sender, conn) = backend::client().handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upgraded member connection ended");
                }
            });
            sender.send_request(upstream).await
        };
        let response = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                tracing::debug!(pool = %pool.name, member = %member.id, error = %crate::error_chain(&error), "upgrade request to member failed");
                return local(
                    &pool,
                    StatusCode::BAD_GATEWAY,
                    "The member closed the connection before answering\n",
                );
            }
            Err(_) => {
                return local(
                    &pool,
                    StatusCode::GATEWAY_TIMEOUT,
                    "The member did not answer in time\n",
                )
            }
        };
        return switch(&pool, response, client_upgrade, guard);
    }
    local(
        &pool,
        StatusCode::SERVICE_UNAVAILABLE,
        "No healthy member\n",
    )
}

/// Passes the member's answer back; on 101, splices the two connections once both have
/// switched.
fn switch(
    pool: &PoolRuntime,
    mut response: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    guard: ActiveGuard,
) -> Response<ResponseBody> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        if response.status().is_server_error() {
            pool.counters.responses_5xx.fetch_add(1, Ordering::Relaxed);
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(
            parts,
            ResponseBody::Plain {
                body,
                _in_flight: guard,
            },
        );
    }
    let member_upgrade = hyper::upgrade::on(&mut response);
    let counters = pool.counters.clone();
    tokio::spawn(async move {
        let _in_flight = guard;
        let (client, member) = match tokio::join!(client_upgrade, member_upgrade) {
            (Ok(client), Ok(member)) => (client, member),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "an upgrade did not complete");
                return;
            }
        };
        let (mut client, mut member) = (TokioIo::new(client), TokioIo::new(member));
        if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut member).await {
            counters.bytes_in.fetch_add(up, Ordering::Relaxed);
            counters.bytes_out.fetch_add(down, Ordering::Relaxed);
        }
    });
    // The 101 keeps its Upgrade and Connection headers: they are the answer.
    let (parts, _empty) = response.into_parts();
    Response::from_parts(parts, ResponseBody::Local(None))
}
