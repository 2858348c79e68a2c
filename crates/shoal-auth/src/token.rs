//! Access tokens: the claims Shoal signs, the [`Principal`] a verified token stands for,
//! and why a token is refused ([`VerifyError`], each with the ARM code a 401 carries).
//!
//! Tokens are RS256 JWTs with a `kid` header, in Entra ID's v1 access-token shape (the
//! `az` CLI and the SDKs decode them to read `tid`, `oid` and `appid`). Minting and
//! checking are pure: the key and `now` come from the caller ([`crate::Authority`]).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::SigningKey;

/// The audiences Azure Resource Manager accepts; a token for either works on every ARM
/// route (`az` asks for the first, the SDKs for the second).
pub const ARM_AUDIENCES: [&str; 2] = [
    "https://management.core.windows.net/",
    "https://management.azure.com/",
];

/// The audience of host and balancer credentials (`shoal agent`, `shoal balancer`): the
/// agent protocol accepts only these, and user routes never do.
pub const HOST_AUDIENCE: &str = "shoal://hosts";

/// How far clocks of different servers may disagree when `exp` and `nbf` are checked.
const LEEWAY_SECS: i64 = 30;

/// What kind of caller a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PrincipalKind {
    /// An application signing in with its own credential (`az ad sp`, the owner credential).
    ServicePrincipal,
    /// A managed identity (the operator's `/msi/token`, a scale set's identity).
    ManagedIdentity,
    /// A host agent (its credential comes from joining; see the hosts issue).
    Host,
    /// A load balancer follower.
    Balancer,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's object id: what role assignments name.
    pub oid: String,
    /// The tenant that issued the token.
    pub tid: String,
    /// The application (client) id.
    pub appid: String,
    pub kind: PrincipalKind,
}

/// The claims of a Shoal access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub oid: String,
    pub sub: String,
    pub appid: String,
    pub azp: String,
    /// `app` for applications and managed identities, as Entra ID says.
    pub idtyp: String,
    /// A unique id of this token.
    pub uti: String,
    pub ver: String,
    /// Shoal's own claim: the [`PrincipalKind`].
    #[serde(rename = "xms_shoal_kind")]
    pub kind: PrincipalKind,
}

impl Claims {
    /// The claims of a token for `principal` and `audience`, good from `now` (epoch
    /// seconds) for `lifetime_secs`.
    pub fn new(
        principal: &Principal,
        audience: &str,
        issuer: &str,
        now: i64,
        lifetime_secs: i64,
    ) -> Claims {
        Claims {
            aud: audience.to_string(),
            iss: issuer.to_string(),
            iat: now,
            nbf: now,
            exp: now + lifetime_secs,
            tid: principal.tid.clone(),
            oid: principal.oid.clone(),
            sub: principal.oid.clone(),
            appid: principal.appid.clone(),
            azp: principal.appid.clone(),
            idtyp: "app".into(),
            uti: uuid::Uuid::new_v4().simple().to_string(),
            ver: "1.0".into(),
            kind: principal.kind,
        }
    }

    pub fn principal(&self) -> Principal {
        Principal {
            oid: self.oid.clone(),
            tid: self.tid.clone(),
            appid: self.appid.clone(),
            kind: self.kind,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("The access token is not a well-formed JWT")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("The access token's signature is invalid")]
    BadSignature(#[source] jsonwebtoken::errors::Error),
    #[error("The access token was signed with a key this authority does not have (kid '{kid}')")]
    UnknownKey { kid: String },
    #[error("The access token expired at {exp} (epoch seconds)")]
    Expired { exp: i64 },
    #[error("The access token is not valid before {nbf} (epoch seconds)")]
    NotYetValid { nbf: i64 },
    #[error("The access token's audience '{aud}' is not one this server accepts")]
    WrongAudience { aud: String },
}

impl VerifyError {
    /// The ARM error code of the 401 answering this refusal.
    pub fn arm_code(&self) -> &'static str {
        match self {
            VerifyError::Expired { .. } => "ExpiredAuthenticationToken",
            VerifyError::WrongAudience { .. } => "InvalidAuthenticationTokenAudience",
            _ => "InvalidAuthenticationToken",
        }
    }
}

/// The `kid` header of a token, without checking anything else.
pub fn key_id(token: &str) -> Result<String, VerifyError> {
    let header = jsonwebtoken::decode_header(token).map_err(VerifyError::Malformed)?;
    header
        .kid
        .ok_or_else(|| VerifyError::UnknownKey { kid: String::new() })
}

/// Signs `claims` with `key` (RS256, `kid` = the key's id).
pub fn sign(claims: &Claims, key: &SigningKey) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    let encoding = EncodingKey::from_rsa_der(&key.private_pkcs1);
    jsonwebtoken::encode(&header, claims, &encoding)
}

/// Checks `token`'s signature with `key`, then its lifetime against `now` (epoch
/// seconds) and its audience against `audiences` (a trailing `/` does not matter).
pub fn verify(
    token: &str,
    key: &SigningKey,
    audiences: &[&str],
    now: i64,
) -> Result<Claims, VerifyError> {
    let decoding = DecodingKey::from_rsa_raw_components(&key.n, &key.e);
    let mut validation = Validation::new(Algorithm::RS256);
    // Time and audience are checked below, against the injected clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(token, &decoding, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                VerifyError::BadSignature(e)
            }
            _ => VerifyError::Malformed(e),
        }
    })?;
    let claims = data.claims;
    if claims.exp + LEEWAY_SECS <= now {
        return Err(VerifyError::Expired { exp: claims.exp });
    }
    if claims.nbf - LEEWAY_SECS > now {
        return Err(VerifyError::NotYetValid { nbf: claims.nbf });
    }
    let trim = |a: &str| a.trim_end_matches('/').to_ascii_lowercase();
    if !audiences.iter().any(|a| trim(a) == trim(&claims.aud)) {
        return Err(VerifyError::WrongAudience { aud: claims.aud });
    }
    Ok(claims)
}
