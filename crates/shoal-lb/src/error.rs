//! Errors of [`Balancer::apply`](crate::Balancer::apply).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a configuration was not (fully) applied.
///
/// `InvalidConfig` means nothing was applied. `Bind` and `Certificate` mean that one
/// listener was left as it was (absent if it is new) while the rest of the config was
/// applied; `Listeners` carries several of those.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("Invalid balancer configuration at {target}: {message}")]
    InvalidConfig { target: String, message: String },

    #[error("Listener '{listener}' cannot listen on {addr}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("Listener '{listener}' cannot use the TLS file {}", file.display())]
    Certificate {
        listener: String,
        file: PathBuf,
        #[source]
        source: CertificateError,
    },

    #[error("{} listeners could not be applied", .0.len())]
    Listeners(Vec<LbError>),

    #[error("The balancer is shutting down")]
    ShuttingDown,
}

impl LbError {
    /// The listener an error is about, if it is about one.
    pub fn listener(&self) -> Option<&str> {
        match self {
            LbError::Bind { listener, .. } | LbError::Certificate { listener, .. } => {
                Some(listener)
            }
            LbError::InvalidConfig { target, .. } => target
                .strip_prefix("listeners[")
                .and_then(|rest| rest.split_once(']'))
                .map(|(name, _)| name),
            LbError::Listeners(_) | LbError::ShuttingDown => None,
        }
    }

    /// The errors this one stands for: itself, or the members of `Listeners`.
    pub fn flatten(&self) -> Vec<&LbError> {
        match self {
            LbError::Listeners(all) => all.iter().flat_map(LbError::flatten).collect(),
            other => vec![other],
        }
    }
}

/// What is wrong with a certificate or key file.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("Cannot read the PEM file")]
    Pem(#[source] rustls_pki_types::pem::Error),
    #[error("The file holds no certificate")]
    NoCertificate,
    #[error("The certificate and key are not usable together")]
    Tls(#[source] rustls::Error),
}
