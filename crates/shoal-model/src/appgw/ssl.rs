//! A gateway's TLS certificates: `sslCertificates[]`, whose PEM files are named in Shoal's
//! extension `properties.shoal {certificateFile, keyFile}` (Azure's PFX `data` and Key
//! Vault ids are refused). Validation checks the paths' shape only; reading the files is
//! I/O, so the API does it, from the list [`certificate_files`] gives.

use serde::{Deserialize, Serialize};

use super::{invalid, AppGwProperties, ApplicationGateway, SUCCEEDED};
use crate::error::ArmError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SslCertificateProps {
    /// Azure's base-64 PFX: not supported (use `shoal`).
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
                "Key Vault certificates are not supported: give PEM files in properties.shoal {certificateFile, keyFile}.",
            ));
        }
        if cp.data.is_some() {
            return Err(invalid(
                format!("{t}.data"),
                "PFX certificate data is not supported: give PEM files in properties.shoal {certificateFile, keyFile}.",
            ));
        }
        let Some(files) = &cp.shoal else {
            return Err(invalid(
                format!("{t}.shoal"),
                "A certificate needs properties.shoal {certificateFile, keyFile}: absolute paths of PEM files.",
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
