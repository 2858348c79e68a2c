//! Signing keys: RSA-2048 pairs named by a `kid`, kept together as a [`KeyRing`] under one
//! store key (so every server on a shared store signs and verifies with the same keys).
//!
//! The ring's first key signs; the others (the previous key after a rotation) still
//! verify, and all are published in the JWKS.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The store key of the [`KeyRing`].
pub const KEY_RING_KEY: &str = "auth/signing-keys";
/// How many keys a ring keeps: the current one and the one before it.
pub const KEYS_KEPT: usize = 2;

/// One RSA key pair.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// When it was made (epoch seconds).
    pub created: i64,
    /// The private key, PKCS#1 DER.
    #[serde(with = "b64")]
    pub private_pkcs1: Vec<u8>,
    /// The public modulus and exponent, big-endian.
    #[serde(with = "b64")]
    pub n: Vec<u8>,
    #[serde(with = "b64")]
    pub e: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("Cannot generate an RSA key")]
    Generate(#[source] rsa::Error),
    #[error("Cannot encode the RSA key")]
    Encode(#[source] rsa::pkcs1::Error),
}

impl SigningKey {
    /// A new RSA-2048 key made at `now` (epoch seconds). Takes a few hundred milliseconds.
    pub fn generate(now: i64) -> Result<SigningKey, KeyError> {
        let mut rng = rsa::rand_core::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(KeyError::Generate)?;
        let der = private.to_pkcs1_der().map_err(KeyError::Encode)?;
        let n = private.n().to_bytes_be();
        let e = private.e().to_bytes_be();
        // The kid is a thumbprint of the public key, as Entra ID's are.
        let digest = ring::digest::digest(&ring::digest::SHA256, &n);
        Ok(SigningKey {
            kid: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]),
            created: now,
            private_pkcs1: der.as_bytes().to_vec(),
            n,
            e,
        })
    }

    /// The public half as a JSON Web Key.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }
}

/// The keys of the authority, newest (signing) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRing {
    pub keys: Vec<SigningKey>,
}

impl KeyRing {
    /// The key that signs new tokens.
    pub fn current(&self) -> Option<&SigningKey> {
        self.keys.first()
    }

    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// This ring with `key` as the new signing key; the oldest beyond [`KEYS_KEPT`] go.
    pub fn rotated(&self, key: SigningKey) -> KeyRing {
        let mut keys = vec![key];
        keys.extend(self.keys.iter().take(KEYS_KEPT - 1).cloned());
        KeyRing { keys }
    }

    /// `{"keys": [...]}`: the JSON Web Key Set.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(SigningKey::jwk).collect::<Vec<_>>()})
    }
}

mod b64 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
