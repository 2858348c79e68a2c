//! The desired configuration of a [`Balancer`](crate::Balancer): listeners, pools,
//! members and probes.
//!
//! The control plane builds a [`BalancerConfig`] from its resources (Azure's
//! `loadBalancers` and `applicationGateways`) and hands the whole of it to
//! [`Balancer::apply`](crate::Balancer::apply). Nothing here does I/O; [`validate`] checks
//! the parts that can be checked without touching the network or the disk, so a config
//! it refuses changes nothing.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::LbError;
use crate::route::{HostPattern, PathPrefix};

/// Everything a balancer should serve. [`Balancer::apply`](crate::Balancer::apply) makes
/// the running balancer match it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalancerConfig {
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
}

/// A frontend: one address and port the balancer accepts connections on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique within the config; errors and logs name listeners by it.
    pub name: String,
    /// Where to listen. Port 0 picks a free port
    /// ([`Balancer::local_addr`](crate::Balancer::local_addr) tells which).
    pub bind: SocketAddr,
    pub kind: ListenerKind,
}

/// What a listener does with the connections it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    /// Layer 4: each connection is spliced to one member (Azure's load-balancing rule).
    Tcp(TcpSettings),
    /// Layer 7 over plain HTTP (HTTP/1.1, and h2 with prior knowledge).
    Http(HttpSettings),
    /// Layer 7 over TLS (HTTP/1.1 and h2 by ALPN).
    Https {
        http: HttpSettings,
        tls: TlsCertificate,
    },
}

/// A layer-4 rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSettings {
    pub pool: String,
    pub distribution: Distribution,
    /// A connection with no bytes either way for this long is closed (Azure's
    /// `idleTimeoutInMinutes`, default 4 minutes).
    pub idle_timeout: Duration,
    /// On idle timeout, send a TCP RST to both sides instead of a FIN (Azure's
    /// `enableTcpReset`).
    pub tcp_reset: bool,
}

impl TcpSettings {
    /// Azure's defaults: `Default` distribution, 4 minutes idle, no reset.
    pub fn new(pool: impl Into<String>) -> Self {
        Self {
            pool: pool.into(),
            distribution: Distribution::Default,
            idle_timeout: Duration::from_secs(4 * 60),
            tcp_reset: false,
        }
    }
}

/// How a layer-4 rule picks a member for a new connection (Azure's `loadDistribution`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Round robin over the routable members. (Azure hashes the 5-tuple; with one
    /// client and ephemeral ports that spreads the same way, and round robin keeps the
    /// spread even for few connections.)
    #[default]
    Default,
    /// The same client IP goes to the same member while the member set is unchanged;
    /// rendezvous hashing moves only the clients of a member that left or joined.
    SourceIp,
    /// Client IP and protocol. Only TCP exists here, so this behaves as `SourceIp`
    /// (with a different hash, so the two spread clients differently).
    SourceIpProtocol,
}

/// A layer-7 listener's routing and backend settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Tried in order; the first route whose host and path both match wins.
    pub routes: Vec<HttpRoute>,
    /// Where requests that match no route go.
    pub default_pool: String,
    /// How long to wait for a backend's response head (connect, retry included), and
    /// the longest pause allowed while its body streams. Past it: 504, or a cut body.
    /// Azure's default is 20 s.
    pub request_timeout: Duration,
    /// Pin a client to a member with the [`AFFINITY_COOKIE`](crate::AFFINITY_COOKIE)
    /// cookie.
    pub cookie_affinity: bool,
    /// Clients may speak HTTP/2 (ALPN `h2` over TLS, prior knowledge in the clear);
    /// members always get HTTP/1.1. Off: HTTP/1.1 only.
    pub http2: bool,
}

impl HttpSettings {
    /// No routes, 20 s request timeout, no affinity, HTTP/2 from clients allowed.
    pub fn new(default_pool: impl Into<String>) -> Self {
        Self {
            routes: Vec::new(),
            default_pool: default_pool.into(),
            request_timeout: Duration::from_secs(20),
            cookie_affinity: false,
            http2: true,
        }
    }
}

/// One routing rule of a layer-7 listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    /// `None` matches any host; `"api.example.com"` matches that host exactly (case
    /// does not matter, a port in `Host` is ignored); `"*.example.com"` matches any host
    /// ending in `.example.com` with at least one character before it.
    pub host: Option<String>,
    /// `None` matches any path; `"/api"` matches `/api`, `/api/` and `/api/…` but not
    /// `/apis`; a prefix ending in `/` matches every path that starts with it.
    pub path_prefix: Option<String>,
    pub pool: String,
}

/// The certificate of an HTTPS listener: PEM files on this machine, or PEM text carried
/// in the configuration (a gateway certificate uploaded as PFX data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCertificate {
    Files(TlsFiles),
    Pem {
        /// The certificate chain, leaf first.
        chain: String,
        /// The private key.
        key: String,
    },
}

impl From<TlsFiles> for TlsCertificate {
    fn from(files: TlsFiles) -> Self {
        TlsCertificate::Files(files)
    }
}

/// PEM files of an HTTPS listener. Read on every [`apply`](crate::Balancer::apply), so a
/// renewed certificate takes effect with the next apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A backend pool: the members traffic may go to, and how their health is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Unique within the config.
    pub name: String,
    pub members: Vec<Member>,
    /// Without a probe members count as up until a connection to them is refused
    /// (passive ejection); an ejected member is tried again after
    /// [`PASSIVE_BACKOFF`](crate::PASSIVE_BACKOFF).
    pub probe: Option<Probe>,
}

/// One backend instance in a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique within its pool (an instance id). Health, affinity cookies and
    /// [`Balancer::active`](crate::Balancer::active) name members by it.
    pub id: String,
    pub addr: SocketAddr,
    /// No new connections or requests; the ones in flight finish.
    pub draining: bool,
}

impl Member {
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            id: id.into(),
            addr,
            draining: false,
        }
    }
}

/// An active health probe, run against every member of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub protocol: ProbeProtocol,
    /// `None` probes the member's own port.
    pub port: Option<u16>,
    /// Request path of HTTP(S) probes; ignored by TCP probes.
    pub path: String,
    /// Time between the starts of two probes of one member. The API allows down to
    /// 1 s; the data plane takes any non-zero value (tests use less).
    pub interval: Duration,
    /// Consecutive failures that mark a member unhealthy; one success brings it back
    /// (Azure's `probeThreshold` / `numberOfProbes`).
    pub threshold: u32,
    /// How long one probe may take before it counts as failed.
    pub timeout: Duration,
}

impl Probe {
    /// A TCP connect probe: 5 s interval, threshold 2, 5 s timeout.
    pub fn tcp() -> Self {
        Self {
            protocol: ProbeProtocol::Tcp,
            port: None,
            path: "/".to_owned(),
            interval: Duration::from_secs(5),
            threshold: 2,
            timeout: Duration::from_secs(5),
        }
    }

    /// An HTTP `GET path` probe, healthy on 200 only; otherwise as [`Probe::tcp`].
    pub fn http(path: impl Into<String>) -> Self {
        Self {
            protocol: ProbeProtocol::Http,
            path: path.into(),
            ..Self::tcp()
        }
    }
}

/// How a probe talks to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeProtocol {
    /// Healthy when a TCP connection is accepted.
    Tcp,
    /// Healthy when `GET path` answers 200.
    Http,
    /// As `Http`, over TLS; the member's certificate is not verified (Azure's load
    /// balancer does not verify it either).
    Https,
}

/// Checks what can be checked without I/O. An `Err` names the offending field in its
/// `target` (e.g. `listeners[web].routes[1].host`).
pub fn validate(cfg: &BalancerConfig) -> Result<(), LbError> {
    let mut pools = HashSet::new();
    for pool in &cfg.pools {
        let at = format!("pools[{}]", pool.name);
        if pool.name.is_empty() {
            return Err(invalid("pools[]", "A pool needs a name"));
        }
        if !pools.insert(pool.name.as_str()) {
            return Err(invalid(at, "Two pools have this name"));
        }
        let mut ids = HashSet::new();
        for member in &pool.members {
            if member.id.is_empty() {
                return Err(invalid(format!("{at}.members[]"), "A member needs an id"));
            }
            if !ids.insert(member.id.as_str()) {
                return Err(invalid(
                    format!("{at}.members[{}]", member.id),
                    "Two members of this pool have this id",
                ));
            }
            if member.addr.port() == 0 {
                return Err(invalid(
                    format!("{at}.members[{}].addr", member.id),
                    "A member's port must not be 0",
                ));
            }
        }
        if let Some(probe) = &pool.probe {
            let at = format!("{at}.probe");
            if probe.interval.is_zero() {
                return Err(invalid(format!("{at}.interval"), "Must be more than 0"));
            }
            if probe.timeout.is_zero() {
                return Err(invalid(format!("{at}.timeout"), "Must be more than 0"));
            }
            if probe.threshold == 0 {
                return Err(invalid(format!("{at}.threshold"), "Must be at least 1"));
            }
            if probe.port == Some(0) {
                return Err(invalid(format!("{at}.port"), "Must not be 0"));
            }
            if probe.protocol != ProbeProtocol::Tcp && !probe.path.starts_with('/') {
                return Err(invalid(format!("{at}.path"), "Must start with '/'"));
            }
        }
    }

    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    let pool_ref = |at: String, pool: &str| {
        if pools.contains(pool) {
            Ok(())
        } else {
            Err(invalid(at, format!("No pool is named '{pool}'")))
        }
    };
    for listener in &cfg.listeners {
        let at = format!("listeners[{}]", listener.name);
        if listener.name.is_empty() {
            return Err(invalid("listeners[]", "A listener needs a name"));
        }
        if !names.insert(listener.name.as_str()) {
            return Err(invalid(at, "Two listeners have this name"));
        }
        if listener.bind.port() != 0 && !binds.insert(listener.bind) {
            return Err(invalid(
                format!("{at}.bind"),
                format!("Another listener also binds {}", listener.bind),
            ));
        }
        let http = match &listener.kind {
            ListenerKind::Tcp(tcp) => {
                pool_ref(format!("{at}.pool"), &tcp.pool)?;
                if tcp.idle_timeout.is_zero() {
                    return Err(invalid(format!("{at}.idle_timeout"), "Must be more than 0"));
                }
                continue;
            }
            ListenerKind::Http(http) | ListenerKind::Https { http, .. } => http,
        };
        pool_ref(format!("{at}.default_pool"), &http.default_pool)?;
        if http.request_timeout.is_zero() {
            return Err(invalid(
                format!("{at}.request_timeout"),
                "Must be more than 0",
            ));
        }
        for (i, route) in http.routes.iter().enumerate() {
            let at = format!("{at}.routes[{i}]");
            pool_ref(format!("{at}.pool"), &route.pool)?;
            if let Some(host) = &route.host {
                HostPattern::parse(host).map_err(|why| invalid(format!("{at}.host"), why))?;
            }
            if let Some(path) = &route.path_prefix {
                PathPrefix::parse(path).map_err(|why| invalid(format!("{at}.path_prefix"), why))?;
            }
        }
    }
    Ok(())
}

fn invalid(target: impl Into<String>, message: impl Into<String>) -> LbError {
    LbError::InvalidConfig {
        target: target.into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn base() -> BalancerConfig {
        BalancerConfig {
            listeners: vec![Listener {
                name: "web".into(),
                bind: addr(8080),
                kind: ListenerKind::Http(HttpSettings {
                    routes: vec![HttpRoute {
                        host: Some("*.example.com".into()),
                        path_prefix: Some("/api".into()),
                        pool: "api".into(),
                    }],
                    ..HttpSettings::new("web")
                }),
            }],
            pools: vec![
                Pool {
                    name: "web".into(),
                    members: vec![Member::new("0", addr(9000)), Member::new("1", addr(9001))],
                    probe: Some(Probe::http("/health")),
                },
                Pool {
                    name: "api".into(),
                    members: vec![],
                    probe: None,
                },
            ],
        }
    }

    fn target_of(cfg: &BalancerConfig) -> String {
        match validate(cfg) {
            Err(LbError::InvalidConfig { target, .. }) => target,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn a_sound_config_passes() {
        validate(&base()).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut cfg = base();
        cfg.pools[1].name = "web".into();
        assert_eq!(target_of(&cfg), "pools[web]");

        let mut cfg = base();
        cfg.pools[0].members[1].id = "0".into();
        assert_eq!(target_of(&cfg), "pools[web].members[0]");

        let mut cfg = base();
        cfg.pools[0].probe.as_mut().unwrap().threshold = 0;
        assert_eq!(target_of(&cfg), "pools[web].probe.threshold");

        let mut cfg = base();
        let ListenerKind::Http(http) = &mut cfg.listeners[0].kind else {
            unreachable!()
        };
        http.routes[0].pool = "nope".into();
        assert_eq!(target_of(&cfg), "listeners[web].routes[0].pool");

        let mut cfg = base();
        let ListenerKind::Http(http) = &mut cfg.listeners[0].kind else {
            unreachable!()
        };
        http.routes[0].host = Some("a.*.com".into());
        assert_eq!(target_of(&cfg), "listeners[web].routes[0].host");

        let mut cfg = base();
        let mut second = cfg.listeners[0].clone();
        second.name = "other".into();
        cfg.listeners.push(second);
        assert_eq!(target_of(&cfg), "listeners[other].bind");
    }

    #[test]
    fn port_zero_binds_may_repeat() {
        let mut cfg = base();
        cfg.listeners[0].bind = addr(0);
        let mut second = cfg.listeners[0].clone();
        second.name = "other".into();
        cfg.listeners.push(second);
        validate(&cfg).unwrap();
    }
}
