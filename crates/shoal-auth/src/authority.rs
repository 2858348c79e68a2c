//! [`Authority`]: signs and verifies access tokens with the [`KeyRing`] kept in the store.
//!
//! The ring is read (or made, by whichever server gets there first) on first use and
//! cached; a token signed with a key the cache lacks (another server rotated) makes it
//! read the ring again, at most once per [`RELOAD_INTERVAL_SECS`].

use std::sync::{Arc, Mutex};

use shoal_store::{Expect, Store, StoreError, StoreExt};

use crate::keys::{KeyError, KeyRing, SigningKey, KEY_RING_KEY};
use crate::token::{self, Claims, Principal, VerifyError};

/// Least time between two reads of the ring caused by unknown `kid`s.
pub const RELOAD_INTERVAL_SECS: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("The store failed")]
    Store(#[source] StoreError),
    #[error("The stored signing keys are not valid")]
    Decode(#[source] serde_json::Error),
    #[error("Cannot make a signing key")]
    Key(#[source] KeyError),
    #[error("Cannot sign the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// A token just issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
}

struct Cache {
    ring: Option<Arc<KeyRing>>,
    /// When the ring was last read because of an unknown key (epoch seconds).
    last_reload: i64,
}

/// The token authority of one server (cheap to share: wrap it in an `Arc`).
pub struct Authority {
    store: Arc<dyn Store>,
    cache: Mutex<Cache>,
}

impl Authority {
    /// An authority over the keys in `store`. Reads nothing until first used.
    pub fn new(store: Arc<dyn Store>) -> Authority {
        Authority {
            store,
            cache: Mutex::new(Cache {
                ring: None,
                last_reload: i64::MIN,
            }),
        }
    }

    fn cached(&self) -> Option<Arc<KeyRing>> {
        self.cache.lock().ok().and_then(|c| c.ring.clone())
    }

    fn remember(&self, ring: Arc<KeyRing>) {
        if let Ok(mut c) = self.cache.lock() {
            c.ring = Some(ring);
        }
    }

    async fn read(&self) -> Result<Option<(KeyRing, u64)>, AuthorityError> {
        match self
            .store
            .get(KEY_RING_KEY)
            .await
            .map_err(AuthorityError::Store)?
        {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(|r| Some((r, kv.mod_revision)))
                .map_err(AuthorityError::Decode),
        }
    }

    /// The key ring: cached, else read, else made and stored.
    pub async fn ring(&self, now: i64) -> Result<Arc<KeyRing>, AuthorityError> {
        if let Some(r) = self.cached() {
            return Ok(r);
        }
        let ring = match self.read().await? {
            Some((r, _)) if r.current().is_some() => r,
            _ => {
                let ring = KeyRing {
                    keys: vec![SigningKey::generate(now).map_err(AuthorityError::Key)?],
                };
                let bytes = serde_json::to_vec(&ring).map_err(AuthorityError::Decode)?;
                match self.store.put_if(KEY_RING_KEY, bytes, Expect::Absent).await {
                    Ok(_) => ring,
                    // Another server made one first: use theirs.
                    Err(StoreError::Conflict { .. }) => match self.read().await? {
                        Some((r, _)) => r,
                        None => ring,
                    },
                    Err(e) => return Err(AuthorityError::Store(e)),
                }
            }
        };
        let ring = Arc::new(ring);
        self.remember(ring.clone());
        Ok(ring)
    }

    /// Signs a token for `principal` and `audience`, issued by `issuer`, good from `now`
    /// (epoch seconds) for `lifetime_secs`.
    pub async fn issue(
        &self,
        principal: &Principal,
        audience: &str,
        issuer: &str,
        now: i64,
        lifetime_secs: i64,
    ) -> Result<IssuedToken, AuthorityError> {
        let ring = self.ring(now).await?;
        let claims = Claims::new(principal, audience, issuer, now, lifetime_secs);
        let key = ring.current().ok_or_else(|| {
            AuthorityError::Decode(serde::de::Error::custom("the key ring is empty"))
        })?;
        let token = token::sign(&claims, key).map_err(AuthorityError::Sign)?;
        Ok(IssuedToken { token, claims })
    }

    /// The principal `token` speaks for, if it is signed by one of the ring's keys, valid
    /// at `now` and for one of `audiences`.
    pub async fn verify(
        &self,
        token: &str,
        audiences: &[&str],
        now: i64,
    ) -> Result<Principal, VerifyFailure> {
        let kid = token::key_id(token).map_err(VerifyFailure::Token)?;
        let ring = self.ring(now).await.map_err(VerifyFailure::Authority)?;
        let ring = match ring.find(&kid) {
            Some(_) => ring,
            None => self
                .reload_for_unknown_key(now)
                .await
                .map_err(VerifyFailure::Authority)?,
        };
        let key = ring
            .find(&kid)
            .ok_or(VerifyFailure::Token(VerifyError::UnknownKey { kid }))?;
        token::verify(token, key, audiences, now)
            .map(|c| c.principal())
            .map_err(VerifyFailure::Token)
    }

    async fn reload_for_unknown_key(&self, now: i64) -> Result<Arc<KeyRing>, AuthorityError> {
        let due = match self.cache.lock() {
            Ok(mut c) if now.saturating_sub(c.last_reload) >= RELOAD_INTERVAL_SECS => {
                c.last_reload = now;
                true
            }
            _ => false,
        };
        if due {
            if let Some((r, _)) = self.read().await? {
                let r = Arc::new(r);
                self.remember(r.clone());
                return Ok(r);
            }
        }
        self.ring(now).await
    }

    /// Makes a new signing key; the current one keeps verifying (and stays in the JWKS)
    /// until the next rotation. Safe against a concurrent rotation by another server.
    pub async fn rotate(&self, now: i64) -> Result<Arc<KeyRing>, AuthorityError> {
        let key = SigningKey::generate(now).map_err(AuthorityError::Key)?;
        loop {
            self.ring(now).await?;
            let (ring, rev) = match self.read().await? {
                Some(x) => x,
                None => continue,
            };
            let next = ring.rotated(key.clone());
            let bytes = serde_json::to_vec(&next).map_err(AuthorityError::Decode)?;
            match self
                .store
                .put_if(KEY_RING_KEY, bytes, Expect::ModRevision(rev))
                .await
            {
                Ok(_) => {
                    let next = Arc::new(next);
                    self.remember(next.clone());
                    return Ok(next);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(AuthorityError::Store(e)),
            }
        }
    }

    /// The JSON Web Key Set (every key that verifies).
    pub async fn jwks(&self, now: i64) -> Result<serde_json::Value, AuthorityError> {
        Ok(self.ring(now).await?.jwks())
    }
}

/// Why [`Authority::verify`] refused: the token (a 401), or the authority itself (a 5xx).
#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    #[error(transparent)]
    Token(VerifyError),
    #[error("The token authority failed")]
    Authority(#[source] AuthorityError),
}
