//! TLS: the server side of HTTPS listeners (certificate and key from PEM files or PEM
//! text), and the
//! client side of HTTPS probes.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsCertificate;
use crate::error::{CertificateError, LbError};

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(ring::default_provider()))
        .clone()
}

/// Reads the certificate of an HTTPS listener and builds its acceptor (ALPN h2, http/1.1).
pub(crate) fn acceptor(
    listener: &str,
    source: &TlsCertificate,
    http2: bool,
) -> Result<TlsAcceptor, LbError> {
    let cert_err = |file: &Path, source| LbError::Certificate {
        listener: listener.to_owned(),
        file: file.to_owned(),
        source,
    };
    // Inline PEM is named like a file in errors, so they read the same.
    let inline = Path::new("(certificate data)");
    let (cert_at, key_at, certs, key) = match source {
        TlsCertificate::Files(files) => (
            files.cert_file.as_path(),
            files.key_file.as_path(),
            CertificateDer::pem_file_iter(&files.cert_file).and_then(|iter| iter.collect()),
            PrivateKeyDer::from_pem_file(&files.key_file),
        ),
        TlsCertificate::Pem { chain, key } => (
            inline,
            inline,
            CertificateDer::pem_slice_iter(chain.as_bytes()).collect(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()),
        ),
    };
    let certs: Vec<CertificateDer<'static>> =
        certs.map_err(|e| cert_err(cert_at, CertificateError::Pem(e)))?;
    if certs.is_empty() {
        return Err(cert_err(cert_at, CertificateError::NoCertificate));
    }
    let key = key.map_err(|e| cert_err(key_at, CertificateError::Pem(e)))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| cert_err(cert_at, CertificateError::Tls(e)))?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connector HTTPS probes use. It does not verify the member's certificate: members
/// are addressed by IP and commonly serve self-signed certificates (Azure's probes do
/// not verify either). The handshake signatures are still checked.
pub(crate) fn probe_connector() -> TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let verifier = Arc::new(AnyCertificate(provider()));
            let config = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(verifier)
                        .with_no_client_auth()
                });
            match config {
                Ok(config) => TlsConnector::from(Arc::new(config)),
                // The ring provider supports the default versions; this cannot happen.
                Err(e) => panic!("ring cannot do TLS 1.2/1.3: {e}"),
            }
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
