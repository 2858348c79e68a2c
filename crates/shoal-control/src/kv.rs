//! Typed JSON access to the store, shared by the API and the controllers.

use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_store::{Expect, KeyValue, Revision, Store, StoreError, TxnOp};

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Stored record {key} is not valid JSON for its type")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A decoded record with the revision it was read at (for compare-and-swap writes).
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub key: String,
    pub value: T,
    pub revision: Revision,
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<Versioned<T>, KvError> {
    let value = serde_json::from_slice(&kv.value).map_err(|source| KvError::Decode {
        key: kv.key.clone(),
        source,
    })?;
    Ok(Versioned {
        key: kv.key.clone(),
        value,
        revision: kv.mod_revision,
    })
}

pub async fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<Versioned<T>>, KvError> {
    match store.get(key).await? {
        Some(kv) => Ok(Some(decode(&kv)?)),
        None => Ok(None),
    }
}

/// Every record under `prefix`; records that do not decode are skipped with a warning
/// (one bad record must not stop the control plane).
pub async fn list_json<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<(Vec<Versioned<T>>, Revision), KvError> {
    let (kvs, rev) = store.list(prefix).await?;
    let mut out = Vec::with_capacity(kvs.len());
    for kv in &kvs {
        match decode(kv) {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping undecodable record"),
        }
    }
    Ok((out, rev))
}

pub fn put_op<T: Serialize>(key: impl Into<String>, value: &T, expect: Expect) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        // Serializing our own record types cannot fail (no maps with non-string keys).
        value: serde_json::to_vec(value).unwrap_or_default(),
        expect,
    }
}

pub fn delete_op(key: impl Into<String>, expect: Expect) -> TxnOp {
    TxnOp::Delete {
        key: key.into(),
        expect,
    }
}
