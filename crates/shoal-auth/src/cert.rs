//! Certificate credentials, as Entra ID takes them: a service principal registers an X.509
//! certificate, and a client proves it holds the private key with a *client assertion*
//! — a JWT signed RS256 by that key, its header naming the certificate by `x5t` (base64url
//! SHA-1 of the DER) or `x5t#S256`, with `iss` = `sub` = the client id, `aud` = the token
//! endpoint, and `exp`/`nbf` (what azure-identity's `CertificateCredential` and
//! `az login --service-principal --certificate` send).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// A registered certificate: what verifying an assertion needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateKey {
    /// base64url SHA-1 of the certificate's DER (`x5t`).
    pub x5t: String,
    /// base64url SHA-256 of the DER (`x5t#S256`).
    pub x5t_s256: String,
    /// The RSA public key, PKCS#1 DER, base64.
    pub public_key: String,
    /// End of validity, epoch seconds.
    pub not_after: i64,
}

/// Reads a certificate given as PEM or as base64 DER (Microsoft Graph's `keyCredentials`
/// take base64 DER); only RSA keys sign RS256.
pub fn certificate_key(text: &str) -> Result<CertificateKey, String> {
    let text = text.trim();
    let der = if text.contains("-----BEGIN CERTIFICATE-----") {
        let body: String = text
            .lines()
            .skip_while(|l| !l.contains("BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.contains("END CERTIFICATE"))
            .collect();
        STANDARD
            .decode(body.trim())
            .map_err(|e| format!("the PEM certificate is not base64 ({e})"))?
    } else {
        STANDARD
            .decode(text.split_whitespace().collect::<String>())
            .map_err(|_| "give the certificate as PEM or as base64 DER".to_string())?
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
        return Err("the certificate's key is not RSA: client assertions are signed RS256".into());
    }
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    let sha256 = ring::digest::digest(&ring::digest::SHA256, &der);
    Ok(CertificateKey {
        x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
        x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
        public_key: STANDARD.encode(spki.subject_public_key.data.as_ref()),
        not_after: cert.validity().not_after.timestamp(),
    })
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: String,
}

/// Checks a client assertion for `client_id` against the principal's certificates at
/// `now`: the certificate it names, its signature, its time, issuer, subject and audience
/// (a token endpoint). The error says which check failed.
pub fn verify_assertion(
    assertion: &str,
    client_id: &str,
    keys: &[CertificateKey],
    now: i64,
) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| format!("the client assertion is not a JWT ({e})"))?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(format!(
            "the client assertion is signed {:?}, not RS256",
            header.alg
        ));
    }
    // MSAL pads its base64url thumbprints with '='; compare without.
    let unpadded = |t: &Option<String>| t.as_deref().map(|t| t.trim_end_matches('=').to_string());
    let (x5t, x5t_s256) = (unpadded(&header.x5t), unpadded(&header.x5t_s256));
    let key = keys
        .iter()
        .find(|k| {
            x5t.as_deref() == Some(k.x5t.as_str())
                || x5t_s256.as_deref() == Some(k.x5t_s256.as_str())
        })
        .ok_or(
            "the certificate the assertion names (x5t) is not registered for this application",
        )?;
    if now > key.not_after {
        return Err("the certificate has expired".into());
    }
    let der = STANDARD
        .decode(&key.public_key)
        .map_err(|_| "a stored certificate is damaged")?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.leeway = 60;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<AssertionClaims>(
        assertion,
        &jsonwebtoken::DecodingKey::from_rsa_der(&der),
        &validation,
    )
    .map_err(|e| format!("the client assertion was refused ({e})"))?;
    let c = data.claims;
    if c.iss != client_id || c.sub != client_id {
        return Err("the client assertion's iss and sub must be the client id".into());
    }
    let aud = c.aud.trim_end_matches('/');
    if !(aud.ends_with("/oauth2/v2.0/token") || aud.ends_with("/oauth2/token")) {
        return Err(format!(
            "the client assertion's aud '{}' is not a token endpoint",
            c.aud
        ));
    }
    Ok(())
}
