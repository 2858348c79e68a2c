//! The directory: the tenant, its subscriptions, and the principals that sign in with a
//! secret (service principals, host and balancer credentials), all kept in the store.
//!
//! Secrets are never stored: a principal keeps a random salt and the SHA-256 of salt and
//! secret per credential (secrets are 256-bit random strings, so a fast hash suffices, as
//! for API tokens). [`Directory::check_secret`] answers the [`Principal`] a correct secret
//! stands for.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use shoal_store::{Expect, Store, StoreError, StoreExt};
use std::sync::Arc;

use crate::token::{Principal, PrincipalKind};

/// The store key of the [`Tenant`].
pub const TENANT_KEY: &str = "auth/tenant";
/// Prefix of subscriptions: `auth/subscription/{id}`.
pub const SUBSCRIPTION_PREFIX: &str = "auth/subscription/";
/// Prefix of principals with credentials: `auth/principal/{appId}`.
pub const PRINCIPAL_PREFIX: &str = "auth/principal/";
/// The subscription every server has (the all-zero id scripts have always used).
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";

/// The one tenant of a Shoal installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub tenant_id: String,
    pub default_subscription: String,
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub subscription_id: String,
    pub tenant_id: String,
    pub display_name: String,
}

/// One secret of a principal, hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSecret {
    pub key_id: String,
    /// The first three characters, shown in lists as Entra ID does.
    pub hint: String,
    pub salt: String,
    pub sha256: String,
    /// Epoch seconds.
    pub start: i64,
    pub end: i64,
}

/// A principal that signs in with a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalRecord {
    pub app_id: String,
    pub object_id: String,
    pub display_name: String,
    pub tenant_id: String,
    pub kind: PrincipalKind,
    pub created: i64,
    pub secrets: Vec<StoredSecret>,
    /// Certificates whose keys may sign client assertions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<crate::cert::CertificateKey>,
}

impl PrincipalRecord {
    pub fn principal(&self) -> Principal {
        Principal {
            oid: self.object_id.clone(),
            tid: self.tenant_id.clone(),
            appid: self.app_id.clone(),
            kind: self.kind,
        }
    }
}

/// A principal just made (or given a new secret), with the secret shown once.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub record: PrincipalRecord,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("The store failed")]
    Store(#[source] StoreError),
    #[error("A stored directory record is not valid JSON ({key})")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("No principal with application id '{0}'")]
    NoSuchPrincipal(String),
    #[error("The client secret is wrong or expired")]
    BadSecret,
    #[error("The client assertion is not valid: {0}")]
    BadAssertion(String),
    #[error("The certificate cannot be used: {0}")]
    BadCertificate(String),
    #[error("The system has no randomness")]
    Random,
}

/// Secrets last this long unless told otherwise (Entra ID's default for `az ad sp`).
pub const SECRET_LIFETIME_SECS: i64 = 365 * 24 * 3600;

/// The tenant, subscriptions and principals in a store. The tenant and its subscriptions
/// never change once made, so they are read once and kept (every request asks).
#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn Store>,
    tenant: Arc<std::sync::OnceLock<Tenant>>,
    subscriptions: Arc<std::sync::OnceLock<Vec<Subscription>>>,
}

impl Directory {
    pub fn new(store: Arc<dyn Store>) -> Directory {
        Directory {
            store,
            tenant: Default::default(),
            subscriptions: Default::default(),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, DirectoryError> {
        match self.store.get(key).await.map_err(DirectoryError::Store)? {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(Some)
                .map_err(|source| DirectoryError::Decode {
                    key: key.to_string(),
                    source,
                }),
        }
    }

    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, DirectoryError> {
        let (kvs, _) = self
            .store
            .list(prefix)
            .await
            .map_err(DirectoryError::Store)?;
        kvs.iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value).map_err(|source| DirectoryError::Decode {
                    key: kv.key.clone(),
                    source,
                })
            })
            .collect()
    }

    async fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> Result<(), DirectoryError> {
        let bytes = serde_json::to_vec(value).map_err(|source| DirectoryError::Decode {
            key: key.to_string(),
            source,
        })?;
        self.store
            .put_if(key, bytes, expect)
            .await
            .map(|_| ())
            .map_err(DirectoryError::Store)
    }

    /// The tenant, made with the default subscription on first use (by whichever server
    /// gets there first).
    pub async fn tenant(&self) -> Result<Tenant, DirectoryError> {
        if let Some(t) = self.tenant.get() {
            return Ok(t.clone());
        }
        if let Some(t) = self.get::<Tenant>(TENANT_KEY).await? {
            return Ok(self.tenant.get_or_init(|| t).clone());
        }
        let tenant = Tenant {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            default_subscription: DEFAULT_SUBSCRIPTION.into(),
            display_name: "Shoal".into(),
        };
        match self.put(TENANT_KEY, &tenant, Expect::Absent).await {
            Ok(()) | Err(DirectoryError::Store(StoreError::Conflict { .. })) => {}
            Err(e) => return Err(e),
        }
        let tenant = self
            .get::<Tenant>(TENANT_KEY)
            .await?
            .unwrap_or(tenant.clone());
        let sub = Subscription {
            subscription_id: tenant.default_subscription.clone(),
            tenant_id: tenant.tenant_id.clone(),
            display_name: "Shoal".into(),
        };
        let key = format!("{SUBSCRIPTION_PREFIX}{}", sub.subscription_id);
        match self.put(&key, &sub, Expect::Absent).await {
            Ok(()) | Err(DirectoryError::Store(StoreError::Conflict { .. })) => Ok(tenant),
            Err(e) => Err(e),
        }
    }

    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, DirectoryError> {
        if let Some(s) = self.subscriptions.get() {
            return Ok(s.clone());
        }
        self.tenant().await?;
        let subs: Vec<Subscription> = self.list(SUBSCRIPTION_PREFIX).await?;
        if subs.is_empty() {
            return Ok(subs);
        }
        Ok(self.subscriptions.get_or_init(|| subs).clone())
    }

    /// The subscription with this id (case-insensitively), if it exists.
    pub async fn subscription(&self, id: &str) -> Result<Option<Subscription>, DirectoryError> {
        Ok(self
            .subscriptions()
            .await?
            .into_iter()
            .find(|s| s.subscription_id.eq_ignore_ascii_case(id)))
    }

    /// A new principal of `kind` named `display_name` with one secret, good from `now`
    /// (epoch seconds) for [`SECRET_LIFETIME_SECS`].
    pub async fn create_principal(
        &self,
        display_name: &str,
        kind: PrincipalKind,
        now: i64,
    ) -> Result<NewCredential, DirectoryError> {
        let tenant = self.tenant().await?;
        let (stored, secret) = new_secret(now)?;
        let record = PrincipalRecord {
            app_id: uuid::Uuid::new_v4().to_string(),
            object_id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.to_string(),
            tenant_id: tenant.tenant_id,
            kind,
            created: now,
            secrets: vec![stored],
            certificates: Vec::new(),
        };
        self.put(&principal_key(&record.app_id), &record, Expect::Absent)
            .await?;
        Ok(NewCredential { record, secret })
    }

    /// Replaces every secret of a principal by one new secret (`az ad sp credential reset`).
    pub async fn reset_secret(
        &self,
        app_id: &str,
        now: i64,
    ) -> Result<NewCredential, DirectoryError> {
        let mut record = self
            .principal(app_id)
            .await?
            .ok_or_else(|| DirectoryError::NoSuchPrincipal(app_id.into()))?;
        let (stored, secret) = new_secret(now)?;
        record.secrets = vec![stored];
        self.put(&principal_key(app_id), &record, Expect::Present)
            .await?;
        Ok(NewCredential { record, secret })
    }

    pub async fn principal(&self, app_id: &str) -> Result<Option<PrincipalRecord>, DirectoryError> {
        self.get(&principal_key(app_id)).await
    }

    /// The principal whose application id or object id is `id`.
    pub async fn find_principal(
        &self,
        id: &str,
    ) -> Result<Option<PrincipalRecord>, DirectoryError> {
        if let Some(p) = self.principal(id).await? {
            return Ok(Some(p));
        }
        Ok(self
            .principals()
            .await?
            .into_iter()
            .find(|p| p.object_id.eq_ignore_ascii_case(id)))
    }

    pub async fn principals(&self) -> Result<Vec<PrincipalRecord>, DirectoryError> {
        self.list(PRINCIPAL_PREFIX).await
    }

    /// Deletes a principal; `false` if there was none.
    pub async fn delete_principal(&self, app_id: &str) -> Result<bool, DirectoryError> {
        let existed = self.principal(app_id).await?.is_some();
        self.store
            .delete(principal_key(app_id))
            .await
            .map_err(DirectoryError::Store)?;
        Ok(existed)
    }

    /// Registers a certificate (PEM or base64 DER) for client assertions of `app_id`.
    pub async fn add_certificate(
        &self,
        app_id: &str,
        certificate: &str,
    ) -> Result<PrincipalRecord, DirectoryError> {
        let key =
            crate::cert::certificate_key(certificate).map_err(DirectoryError::BadCertificate)?;
        let mut record = self
            .principal(app_id)
            .await?
            .ok_or_else(|| DirectoryError::NoSuchPrincipal(app_id.into()))?;
        record.certificates.retain(|c| c.x5t != key.x5t);
        record.certificates.push(key);
        self.put(&principal_key(app_id), &record, Expect::Present)
            .await?;
        Ok(record)
    }

    /// The principal `app_id` if `assertion` is a client assertion signed by one of its
    /// certificates ([`crate::cert::verify_assertion`]).
    pub async fn check_assertion(
        &self,
        app_id: &str,
        assertion: &str,
        now: i64,
    ) -> Result<PrincipalRecord, DirectoryError> {
        let record = self
            .principal(app_id)
            .await?
            .ok_or_else(|| DirectoryError::NoSuchPrincipal(app_id.into()))?;
        crate::cert::verify_assertion(assertion, &record.app_id, &record.certificates, now)
            .map_err(DirectoryError::BadAssertion)?;
        Ok(record)
    }

    /// The principal `app_id` if `secret` is one of its unexpired secrets at `now`.
    pub async fn check_secret(
        &self,
        app_id: &str,
        secret: &str,
        now: i64,
    ) -> Result<PrincipalRecord, DirectoryError> {
        let record = self
            .principal(app_id)
            .await?
            .ok_or_else(|| DirectoryError::NoSuchPrincipal(app_id.into()))?;
        let ok = record
            .secrets
            .iter()
            .any(|s| s.start <= now && now < s.end && s.sha256 == hash(&s.salt, secret));
        if ok {
            Ok(record)
        } else {
            Err(DirectoryError::BadSecret)
        }
    }
}

fn principal_key(app_id: &str) -> String {
    format!("{PRINCIPAL_PREFIX}{}", app_id.to_ascii_lowercase())
}

/// SHA-256 of `salt` then `secret`, base64url: how secrets are kept.
pub fn hash(salt: &str, secret: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt.as_bytes());
    ctx.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(ctx.finish().as_ref())
}

/// `n` random bytes, base64url.
pub fn random_text(n: usize) -> Result<String, DirectoryError> {
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| DirectoryError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new secret (shaped like Entra ID's: three characters, `~`, the rest) and its record.
fn new_secret(now: i64) -> Result<(StoredSecret, String), DirectoryError> {
    let body = random_text(30)?;
    // A leading '-' would read as a flag on a command line (`-p -x…`): never start so.
    let first = match body.as_bytes()[0] {
        b'-' => "A",
        _ => &body[..1],
    };
    let secret = format!("{first}{}~{}", &body[1..3], &body[3..]);
    let salt = random_text(16)?;
    Ok((
        StoredSecret {
            key_id: uuid::Uuid::new_v4().to_string(),
            hint: secret[..3].to_string(),
            sha256: hash(&salt, &secret),
            salt,
            start: now,
            end: now + SECRET_LIFETIME_SECS,
        },
        secret,
    ))
}

#[cfg(test)]
mod secret_tests {
    #[test]
    fn secrets_never_start_like_a_flag() {
        for _ in 0..2000 {
            let (_, secret) = super::new_secret(0).expect("secret");
            assert!(!secret.starts_with('-'), "{secret}");
            assert_eq!(secret.as_bytes()[3], b'~', "{secret}");
        }
    }
}
