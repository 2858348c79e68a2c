//! A gateway's TLS certificates: `sslCertificates[]`, given as Azure takes them — `data`,
//! a base-64 PFX, with its `password` — or as PEM files named in Shoal's extension
//! `properties.shoal {certificateFile, keyFile}` (Key Vault ids are refused). The API
//! decodes a PFX into [`SslCertificateProps::pem`] (kept with the gateway, so a balancer
//! on any machine has it; never shown: GET shows `publicCertData` only, as Azure) and
//! reads the files from the list [`certificate_files`] gives; validation here checks
//! shapes only.

use serde::{Deserialize, Serialize};

use super::{invalid, AppGwProperties, ApplicationGateway, SUCCEEDED};
use crate::error::ArmError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SslCertificateProps {
    /// Azure's base-64 PFX (write-only: the API decodes it into `pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Read-only: the base-64 DER of the certificate's leaf, filled in by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_cert_data: Option<String>,
    /// Key Vault: not supported (use `shoal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_secret_id: Option<String>,
    /// Shoal's extension: where the PEM files are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shoal: Option<CertificateFiles>,
    /// Server-owned: the certificate chain and key of a PFX `data` upload, as PEM. Stored
    /// for the balancers; never answered to a client.
    #[serde(default, rename = "shoalPem", skip_serializing_if = "Option::is_none")]
    pub pem: Option<PemCertificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// `properties.shoal` of an SSL certificate: absolute paths of PEM files the balancer
/// reads (on every configuration change, so a renewed certificate is picked up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateFiles {
    #[serde(default)]
    pub certificate_file: String,
    #[serde(default)]
    pub key_file: String,
}

/// A certificate chain (leaf first) and its private key, as PEM text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PemCertificate {
    pub chain: String,
    pub key: String,
}

/// Where an HTTPS listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    Files(CertificateFiles),
    Pem(PemCertificate),
}

impl SslCertificateProps {
    /// The certificate a listener serves, once the API has admitted it.
    pub fn source(&self) -> Option<TlsSource> {
        match (&self.pem, &self.shoal) {
            (Some(pem), _) => Some(TlsSource::Pem(pem.clone())),
            (None, Some(files)) => Some(TlsSource::Files(files.clone())),
            (None, None) => None,
        }
    }
}

pub(super) fn normalize(p: &mut AppGwProperties) {
    for c in &mut p.ssl_certificates {
        // Never echo a PFX password back.
        c.properties.password = None;
        c.properties.provisioning_state = Some(SUCCEEDED.into());
    }
}

pub(super) fn validate(p: &AppGwProperties) -> Result<(), ArmError> {
    for (i, c) in p.ssl_certificates.iter().enumerate() {
        let t = format!("properties.sslCertificates[{i}].properties");
        let cp = &c.properties;
        if cp.key_vault_secret_id.is_some() {
            return Err(invalid(
                format!("{t}.keyVaultSecretId"),
                "Key Vault certificates are not supported: give the certificate as data (a base-64 PFX, with password) or as PEM files in properties.shoal {certificateFile, keyFile}.",
            ));
        }
        if cp.data.is_some() && cp.shoal.is_some() {
            return Err(invalid(
                format!("{t}.data"),
                "Give the certificate once: PFX data (with password) or properties.shoal files, not both.",
            ));
        }
        if cp.data.is_some() || cp.pem.is_some() {
            continue;
        }
        let Some(files) = &cp.shoal else {
            return Err(invalid(
                format!("{t}.data"),
                "A certificate needs data (a base-64 PFX, with password) or properties.shoal {certificateFile, keyFile}: absolute paths of PEM files.",
            ));
        };
        for (field, path) in [
            ("certificateFile", &files.certificate_file),
            ("keyFile", &files.key_file),
        ] {
            if !path.starts_with('/') {
                return Err(invalid(
                    format!("{t}.shoal.{field}"),
                    format!("'{path}' is not an absolute path: the balancer may run in another directory or on another host."),
                ));
            }
        }
    }
    Ok(())
}

/// `(target, path)` of every certificate and key file a valid gateway names, for the API
/// to check that they can be read.
pub fn certificate_files(gw: &ApplicationGateway) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, c) in gw.properties.ssl_certificates.iter().enumerate() {
        if let Some(files) = &c.properties.shoal {
            let t = format!("properties.sslCertificates[{i}].properties.shoal");
            out.push((
                format!("{t}.certificateFile"),
                files.certificate_file.clone(),
            ));
            out.push((format!("{t}.keyFile"), files.key_file.clone()));
        }
    }
    out
}
