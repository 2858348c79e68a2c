//! Member health: active probes, passive ejection, and what the control plane reads.
//!
//! Each member of a pool with a probe has one prober task. It probes at once, then every
//! `interval`; `threshold` consecutive failures mark the member unhealthy and one success
//! marks it healthy (Azure's semantics). The proxies eject a member at once when a
//! connection to it is refused or reset ([`Member::eject`](crate::pool::Member::eject));
//! the next successful probe brings it back. Every state change bumps the balancer's
//! [`health_changes`](crate::Balancer::health_changes) counter.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{Probe, ProbeProtocol};
use crate::pool::Member;

/// Health of one member as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// No verdict yet: a probed member before its first probe result, or a member of a
    /// pool without a probe that has not been ejected. Members of a probed pool take
    /// traffic only once `Healthy` (except those that were already taking traffic when a
    /// probe was added to their pool).
    Unknown,
    Healthy,
    /// Failed `threshold` probes in a row, or ejected after a refused or reset connection.
    Unhealthy,
}

/// One member's health, from [`Balancer::health`](crate::Balancer::health).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    pub pool: String,
    pub member: String,
    pub addr: SocketAddr,
    pub state: HealthState,
    /// When `state` last changed (or the member joined).
    pub since: Instant,
    /// The most recent failure (probe or passive), kept after recovery for diagnosis.
    pub last_error: Option<String>,
    pub draining: bool,
    /// Whether new connections and requests may go to it right now.
    pub routable: bool,
    /// Connections (L4) and requests (L7) sent to it since it joined the pool.
    pub served: u64,
}

/// The prober of one member: runs until `stop` is cancelled.
pub(crate) async fn run_prober(member: Arc<Member>, probe: Probe, stop: CancellationToken) {
    let port = probe.port.unwrap_or(member.addr.port());
    let target = SocketAddr::new(member.addr.ip(), port);
    // Spread members' probes over the interval so a pool is not probed in bursts.
    let phase = probe.interval.mul_f64(spread(&member.id));
    let mut ticks =
        tokio::time::interval_at(Instant::now() + phase.min(probe.interval), probe.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first probe goes out at once: a new member should not wait for its verdict.
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
        }
        first = false;
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = tokio::time::timeout(probe.timeout, probe_once(&probe, target)) => outcome,
        };
        let outcome = match outcome {
            Ok(result) => result,
            Err(_) => Err(format!("Probe timed out after {:?}", probe.timeout)),
        };
        member.record_probe(&probe, outcome);
    }
}

/// A number in [0, 1) from a member id, stable across runs.
fn spread(id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    (h % 1000) as f64 / 1000.0
}

async fn probe_once(probe: &Probe, target: SocketAddr) -> Result<(), String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("Probe cannot connect to {target}: {e}"))?;
    match probe.protocol {
        ProbeProtocol::Tcp => Ok(()),
        ProbeProtocol::Http => http_get(tcp, target, &probe.path).await,
        ProbeProtocol::Https => {
            let tls = crate::tls::probe_connector()
                .connect(
                    rustls_pki_types::ServerName::IpAddress(target.ip().into()),
                    tcp,
                )
                .await
                .map_err(|e| format!("Probe TLS handshake with {target} failed: {e}"))?;
            http_get(tls, target, &probe.path).await
        }
    }
}

async fn http_get<IO>(io: IO, target: SocketAddr, path: &str) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("Probe of {target} failed: {}", crate::error_chain(&e)))?;
    let request = Request::get(path)
        .header(HOST, target.to_string())
        .header(USER_AGENT, "shoal-lb-probe")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("Probe path {path:?} is not a valid request target: {e}"))?;
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        response = &mut send => response,
        // With `Connection: close` the connection may end first; its answer is ready.
        _ = &mut conn => send.await,
    }
    .map_err(|e| format!("Probe of {target} failed: {}", crate::error_chain(&e)))?;
    match response.status() {
        StatusCode::OK => Ok(()),
        status => Err(format!("Probe {path} answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spread_stays_in_range() {
        for id in [
            "",
            "0",
            "vm_17",
            "a-very-long-instance-id-with-many-characters",
        ] {
            let s = super::spread(id);
            assert!((0.0..1.0).contains(&s));
        }
    }
}
