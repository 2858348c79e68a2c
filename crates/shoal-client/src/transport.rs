//! The seam between [`crate::ServerClient`] and the server: one request in, one response
//! out, whose body may stream for as long as the server keeps it open (a watch).
//!
//! Two implementations: [`HttpTransport`] over the network (what `shoal agent` and
//! `shoal balancer` use), and [`ServiceTransport`], which calls a `tower::Service` (the
//! API's `axum::Router`) in process. The in-process one opens no socket and sets no
//! timer, so a test on tokio's paused clock runs agents and balancers against a real API
//! without any timeout firing while a call waits.
//!
//! Requests carry a path and query only (`/shoal/v1/...`); the transport decides where
//! they go. A [`Deadline`] request extension says how long a call may take in all.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tower::ServiceExt;

pub use axum::body::Body;

/// Any error, boxed; what a transport's failure wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a whole call (sending, the answer and its body) may take over the network.
/// Set as a request extension; without one, calls get [`DEFAULT_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    After(Duration),
    /// A long-lived answer (a watch, a large download): no total limit, TCP keepalive
    /// notices a dead peer.
    Unbounded,
}

/// The total timeout of ordinary calls over the network.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The server could not be reached, or the connection broke while reading its answer.
#[derive(Debug, thiserror::Error)]
#[error("Cannot reach the Shoal server at {target}")]
pub struct TransportError {
    /// Where the transport sends requests (a URL, or "in-process").
    pub target: String,
    #[source]
    pub source: BoxError,
}

/// Sends one request to the server and returns its answer, whatever the status.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn send(&self, req: http::Request<Bytes>)
        -> Result<http::Response<Body>, TransportError>;

    /// Where requests go, for logs and errors.
    fn target(&self) -> &str;
}

/// The real network: requests go to `base` (e.g. `http://127.0.0.1:7070`), or to the
/// first of several servers (`http://a:7070,http://b:7070`) that can be reached: a
/// server that refuses the connection (killed, restarted) is skipped for the next, and
/// the next stays in use. Only a failed connection moves on — the request was never sent,
/// so trying it elsewhere cannot do it twice.
pub struct HttpTransport {
    bases: Vec<String>,
    label: String,
    current: std::sync::atomic::AtomicUsize,
    http: reqwest::Client,
}

impl HttpTransport {
    pub fn new(base: &str) -> Self {
        Self::pinned(base, None)
    }

    /// A transport whose https connections trust exactly the certificate whose SHA-256
    /// is `pin` (from a join token), whatever its names or issuer; without a pin, https
    /// has no trusted root and fails.
    pub fn pinned(base: &str, pin: Option<[u8; 32]>) -> Self {
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_keepalive(Duration::from_secs(10))
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(pin) = pin {
            match pinning::client_config(pin) {
                Ok(tls) => builder = builder.use_preconfigured_tls(tls),
                // Without it https trusts nothing: refused, never unchecked.
                Err(e) => tracing::error!(error = %e, "cannot set up TLS pinning"),
            }
        }
        let http = builder.build().unwrap_or_default();
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        HttpTransport {
            label: bases.join(","),
            bases,
            current: Default::default(),
            http,
        }
    }

    fn unreachable(&self, source: impl Into<BoxError>) -> TransportError {
        TransportError {
            target: self.label.clone(),
            source: source.into(),
        }
    }
}

/// How long connecting to one server may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[async_trait]
impl Transport for HttpTransport {
    async fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Body>, TransportError> {
        use std::sync::atomic::Ordering;
        let deadline = req.extensions().get::<Deadline>().copied();
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let n = self.bases.len().max(1);
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for attempt in 0..n {
            let i = (first + attempt) % n;
            let Some(base) = self.bases.get(i) else { break };
            let mut out = self
                .http
                .request(parts.method.clone(), format!("{base}{path}"))
                .headers(parts.headers.clone())
                .body(body.clone());
            match deadline {
                Some(Deadline::Unbounded) => {}
                Some(Deadline::After(d)) => out = out.timeout(d),
                None => out = out.timeout(DEFAULT_TIMEOUT),
            }
            match out.send().await {
                Ok(resp) => {
                    if i != first {
                        self.current.store(i, Ordering::Relaxed);
                        tracing::info!(server = %base, "switched to the next server");
                    }
                    let resp: http::Response<reqwest::Body> = resp.into();
                    return Ok(resp.map(Body::new));
                }
                Err(e) if e.is_connect() => {
                    tracing::debug!(server = %base, error = %e, "server unreachable, trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(self.unreachable(e)),
            }
        }
        Err(match last {
            Some(e) => self.unreachable(e),
            None => self.unreachable("no server URL given"),
        })
    }

    fn target(&self) -> &str {
        &self.label
    }
}

/// Calls a `tower::Service` in process (an `axum::Router` serving the Shoal API).
#[derive(Clone)]
pub struct ServiceTransport<S> {
    service: S,
}

impl<S> ServiceTransport<S> {
    pub fn new(service: S) -> Self {
        ServiceTransport { service }
    }
}

#[async_trait]
impl<S, B> Transport for ServiceTransport<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Body>, TransportError> {
        let resp = self
            .service
            .clone()
            .oneshot(req.map(Body::from))
            .await
            .map_err(|e| TransportError {
                target: self.target().to_string(),
                source: e.into(),
            })?;
        Ok(resp.map(Body::new))
    }

    fn target(&self) -> &str {
        "in-process"
    }
}

/// TLS that trusts one certificate, named by its SHA-256: how an agent or balancer that
/// joined with a token trusts exactly the server that made it (as kubeadm's
/// `--discovery-token-ca-cert-hash`). The handshake's signatures are still checked, so
/// only the holder of that certificate's key passes.
mod pinning {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    struct Pinned {
        sha256: [u8; 32],
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            let seen = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
            if seen.as_ref() == self.sha256 {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(Error::General(format!(
                    "the server's certificate (SHA-256 {}) is not the one the join token names \
                     ({}): this is another server, or its certificate changed; make a new join \
                     token on the server",
                    super::hex(seen.as_ref()),
                    super::hex(&self.sha256)
                )))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    pub(super) fn client_config(sha256: [u8; 32]) -> Result<ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Pinned {
            sha256,
            provider: provider.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `parts` one after the other, in lowercase hex: a certificate's pin as
/// join tokens carry it (of its DER bytes), or a secret derived from a key.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    hex(ctx.finish().as_ref())
}

/// A certificate pin as written in a join token: 64 hex digits.
pub fn parse_pin(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
