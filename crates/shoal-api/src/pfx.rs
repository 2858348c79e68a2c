//! Azure's way of giving a gateway its certificate: `sslCertificates[].properties.data`,
//! a base-64 PKCS#12 (PFX) file, with its `password`. [`admit`] turns each into PEM kept
//! with the gateway (`shoalPem`, never answered) and `publicCertData`, and drops the
//! data and the password; a GET-modify-PUT, which sends neither back, keeps the stored
//! certificate of the same name.
//!
//! The PFX comes from the network, so it is bounded before anything reads it: at most
//! [`MAX_PFX_DATA`] of base-64, decoded off the async workers (its key derivation is
//! CPU work by design), scrypt-protected files (whose parameters may ask for a GiB of
//! memory) refused outright.

use base64::Engine;
use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use shoal_model::appgw::{ApplicationGateway, PemCertificate};
use shoal_model::ArmError;

/// Largest `data` accepted, in base-64 characters (a chain with its key is a few KiB).
pub const MAX_PFX_DATA: usize = 128 * 1024;

/// The DER of the scrypt OID (1.3.6.1.4.1.11591.4.11).
const SCRYPT_OID: &[u8] = &[
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x04, 0x0b,
];

/// Decodes every certificate given as PFX data; carries over the stored certificate of
/// one given by name only. Runs before the gateway is normalized (which forgets
/// passwords).
pub async fn admit(
    gw: &mut ApplicationGateway,
    existing: Option<&ApplicationGateway>,
) -> Result<(), ArmError> {
    for (i, c) in gw.properties.ssl_certificates.iter_mut().enumerate() {
        let target = format!("properties.sslCertificates[{i}].properties.data");
        let cp = &mut c.properties;
        // Server-owned: whatever a client sends there is replaced.
        cp.pem = None;
        let Some(data) = cp.data.take() else {
            if cp.shoal.is_none() && cp.key_vault_secret_id.is_none() {
                let kept = existing.and_then(|e| {
                    e.properties
                        .ssl_certificates
                        .iter()
                        .find(|o| o.name.eq_ignore_ascii_case(&c.name))
                });
                if let Some(old) = kept.filter(|o| o.properties.pem.is_some()) {
                    cp.pem.clone_from(&old.properties.pem);
                    cp.public_cert_data
                        .clone_from(&old.properties.public_cert_data);
                }
            }
            continue;
        };
        let password = cp.password.take().unwrap_or_default();
        let decoded = tokio::task::spawn_blocking(move || to_pem(&data, &password))
            .await
            .map_err(|e| ArmError::internal(format!("The PFX decoder stopped: {e}")))?;
        let (pem, leaf) = decoded.map_err(|why| ArmError::invalid_parameter(target, why))?;
        cp.pem = Some(pem);
        cp.public_cert_data = Some(leaf);
    }
    Ok(())
}

/// The chain and key of a base-64 PFX, as PEM, and its leaf certificate as base-64 DER.
pub fn to_pem(data: &str, password: &str) -> Result<(PemCertificate, String), String> {
    if data.len() > MAX_PFX_DATA {
        return Err(format!(
            "The certificate data is {} characters; at most {MAX_PFX_DATA} are accepted.",
            data.len()
        ));
    }
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| {
            "The certificate data is not base-64: give the PFX file base-64 encoded \
             (base64 -w0 cert.pfx)."
                .to_string()
        })?;
    if der.windows(SCRYPT_OID.len()).any(|w| w == SCRYPT_OID) {
        return Err(
            "PFX files protected with scrypt are not accepted: export with AES-256 \
             (openssl pkcs12 -export) or 3DES."
                .into(),
        );
    }
    let store = KeyStore::from_pkcs12(&der, password, Pkcs12ImportPolicy::Relaxed).map_err(|e| {
        format!("The certificate data is not a PFX this password opens ({e}): check the file and the password.")
    })?;
    let Some((_, chain)) = store.private_key_chain() else {
        return Err("The PFX holds no private key: export the certificate with its key.".into());
    };
    let Some(leaf) = chain.certs().first() else {
        return Err("The PFX holds a private key but no certificate for it.".into());
    };
    let pem = PemCertificate {
        chain: chain
            .certs()
            .iter()
            .map(|c| pem_encode("CERTIFICATE", c.as_der()))
            .collect(),
        key: pem_encode("PRIVATE KEY", chain.key().as_der()),
    };
    Ok((
        pem,
        base64::engine::general_purpose::STANDARD.encode(leaf.as_der()),
    ))
}

/// `der` as one PEM block of `label`, 64 characters per line.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_what_is_not_a_pfx_with_the_reason() {
        let err = to_pem("not base64!", "").unwrap_err();
        assert!(err.contains("not base-64"), "{err}");
        let err = to_pem("aGVsbG8=", "").unwrap_err();
        assert!(err.contains("not a PFX"), "{err}");
        let err = to_pem(&"A".repeat(MAX_PFX_DATA + 1), "").unwrap_err();
        assert!(err.contains("at most"), "{err}");
    }

    #[test]
    fn pem_blocks_wrap_at_64_columns() {
        let text = pem_encode("CERTIFICATE", &[7u8; 100]);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text
            .lines()
            .all(|l| l.len() <= 64 || l.starts_with("-----")));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
    }

    proptest! {
        #[test]
        fn arbitrary_data_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), password in "\\PC{0,12}") {
            let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let _ = to_pem(&data, &password);
        }
    }
}
