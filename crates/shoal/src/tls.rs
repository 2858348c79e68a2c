//! Certificates for the API's https listener: loading a PEM pair, or making the
//! self-signed one `shoal serve` keeps in its data directory. Serving over TLS is the
//! library's [`shoal::https`] module.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Reads a PEM certificate chain and its private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("the TLS certificate {} is not valid PEM", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "the TLS certificate file {} holds no certificate",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS library refused its default protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match, or the key type is unsupported")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The SHA-256 of the first certificate in the PEM file `cert` (lowercase hex): what a
/// join token carries for agents and balancers to pin.
pub fn certificate_sha256(cert: &Path) -> anyhow::Result<String> {
    let first = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .next()
        .with_context(|| format!("{} holds no certificate", cert.display()))?
        .with_context(|| format!("the TLS certificate {} is not valid PEM", cert.display()))?;
    Ok(shoal_client::sha256_hex(&[first.as_ref()]))
}

/// A generated certificate and its key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate for localhost, 127.0.0.1 and ::1 (and the listen address
/// when it names one host).
pub fn self_signed(listen: SocketAddr) -> anyhow::Result<SelfSigned> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let pair = rcgen::generate_simple_self_signed(names)
        .context("cannot make a self-signed certificate")?;
    Ok(SelfSigned {
        cert_pem: pair.cert.pem(),
        key_pem: pair.signing_key.serialize_pem(),
    })
}

/// A listener for `axum::serve` that yields connections whose TLS handshake succeeded.
#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let pair = self_signed("127.0.0.1:0".parse().expect("address")).expect("certificate");
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, pair.cert_pem).expect("write cert");
        std::fs::write(&key, pair.key_pem).expect("write key");
        (cert, key)
    }

    #[test]
    fn loads_a_generated_pair_and_refuses_a_mismatched_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_a, key_a) = write_pair(dir.path(), "a");
        let (_, key_b) = write_pair(dir.path(), "b");
        assert!(server_config(&cert_a, &key_a).is_ok());
        assert!(server_config(&cert_a, &key_b).is_err());
        assert!(
            server_config(&key_a, &key_a).is_err(),
            "a key is not a certificate"
        );
        assert!(server_config(&dir.path().join("missing"), &key_a).is_err());
    }
}
