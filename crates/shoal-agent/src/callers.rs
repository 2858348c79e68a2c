//! Who may call the agent's own endpoint, which listens on the host's network address
//! when the agent has one (`--address`, so the server can fetch logs from another
//! machine). Instance routes (metadata, scheduled events, custom metrics) answer only
//! callers on this host: loopback, the host's own addresses and its instances' range, and
//! a caller at an instance's own address only about that instance. Console logs answer
//! the host itself (not its instances) and the servers the agent follows (the server
//! proxies `shoal vmss logs`). Anyone else gets `403`, so neither another machine nor
//! another instance can read an instance's metadata or logs, push its metrics or approve
//! its scheduled events.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_model::cidr::Cidr;

#[derive(Clone, Default)]
pub struct Callers {
    /// Tells which address an instance has, so an instance asks only about itself.
    driver: Option<std::sync::Arc<dyn crate::driver::Driver>>,
    /// This host's own addresses (besides loopback).
    local: Vec<IpAddr>,
    /// The instances' range, when they have addresses of their own.
    instances: Option<Cidr>,
    /// The servers' addresses.
    servers: Vec<IpAddr>,
}

impl Callers {
    /// `local`: this host's addresses; `instances`: its instance range (`10.200.1.0/24`);
    /// `servers`: the server URLs the agent follows (`http://a:7070,https://b:7443`),
    /// resolved now.
    pub async fn new(local: Vec<IpAddr>, instances: Option<&str>, servers: &str) -> Callers {
        let mut resolved = Vec::new();
        for url in servers.split(',') {
            let Some((host, port)) = host_port(url.trim()) else {
                continue;
            };
            match tokio::net::lookup_host(format!("{host}:{port}")).await {
                Ok(addrs) => resolved.extend(addrs.map(|a| a.ip())),
                Err(e) => {
                    tracing::warn!(server = %url, error = %e, "cannot resolve the server's address: its log requests will be refused")
                }
            }
        }
        Callers {
            driver: None,
            local,
            instances: instances.and_then(|s| s.parse().ok()),
            servers: resolved,
        }
    }

    /// Instance routes (`/i/{slug}/…`) called from an instance's own address answer only
    /// that instance.
    pub fn with_driver(mut self, driver: std::sync::Arc<dyn crate::driver::Driver>) -> Callers {
        self.driver = Some(driver);
        self
    }

    /// For a caller at an instance address (not loopback or the host's own), whether it is
    /// the instance the `/i/{slug}/…` path names.
    async fn is_the_instance(&self, path: &str, ip: IpAddr) -> bool {
        let Some(slug) = path.strip_prefix("/i/").and_then(|r| r.split('/').next()) else {
            return true;
        };
        let from_an_instance = !ip.is_loopback() && !self.local.contains(&ip);
        match (&self.driver, from_an_instance) {
            (Some(driver), true) => {
                let key = crate::driver::InstanceKey(slug.to_string());
                driver.private_address(&key).await == Some(ip)
            }
            _ => true,
        }
    }

    fn on_this_host(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || self.local.contains(&ip)
            || match (ip, self.instances) {
                (IpAddr::V4(v4), Some(range)) => range.contains(v4),
                _ => false,
            }
    }

    /// Whether a caller at `ip` may ask for `path`.
    pub fn may(&self, path: &str, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        if path.starts_with("/logs/") {
            // Logs are for operators (through the server), not for instances: one
            // instance must not read another's console.
            ip.is_loopback() || self.local.contains(&ip) || self.servers.contains(&ip)
        } else {
            self.on_this_host(ip)
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `scheme://host[:port][/…]` → (host, port).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default);
        return Some((format!("[{host}]"), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

/// The middleware: refuses callers [`Callers::may`] does not allow.
pub async fn guard(
    State(callers): State<std::sync::Arc<Callers>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let ip = unmapped(peer.ip());
    if callers.may(req.uri().path(), ip) && callers.is_the_instance(req.uri().path(), ip).await {
        next.run(req).await
    } else {
        tracing::debug!(%peer, path = %req.uri().path(), "refused a caller from another machine");
        (
            StatusCode::FORBIDDEN,
            "this agent endpoint answers only this host's instances (each about itself) and its servers\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_this_host_and_its_servers_get_in() {
        let c = Callers::new(
            vec!["192.168.1.2".parse().expect("ip")],
            Some("10.200.2.0/24"),
            "http://192.168.1.1:7070,https://[::1]:7443",
        )
        .await;
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for (path, from, ok) in [
            ("/i/x/metadata/instance", "127.0.0.1", true),
            ("/i/x/metadata/instance", "10.200.2.7", true),
            ("/i/x/metadata/instance", "192.168.1.2", true),
            ("/i/x/metadata/instance", "192.168.1.1", false),
            ("/i/x/metadata/instance", "10.200.3.7", false),
            ("/i/x/metrics", "192.168.1.9", false),
            ("/logs/x", "192.168.1.1", true),
            ("/logs/x", "192.168.1.9", false),
            ("/logs/x", "::ffff:192.168.1.1", true),
            ("/logs/x", "10.200.2.7", false),
            ("/logs/x", "127.0.0.1", true),
        ] {
            assert_eq!(c.may(path, ip(from)), ok, "{path} from {from}");
        }
    }

    #[test]
    fn server_urls_give_host_and_port() {
        assert_eq!(host_port("http://a:7070"), Some(("a".into(), 7070)));
        assert_eq!(host_port("https://a/x"), Some(("a".into(), 443)));
        assert_eq!(host_port("http://[::1]:9/"), Some(("[::1]".into(), 9)));
        assert_eq!(host_port("nonsense"), None);
    }
}
