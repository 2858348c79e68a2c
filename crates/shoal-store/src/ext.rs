//! [`StoreExt`]: one-operation shorthands over [`Store::txn`].
//!
//! Implemented for every `Store`, including `dyn Store` (so `Arc<dyn Store>` and
//! `&dyn Store` get it through deref). Each method builds a one-operation [`Txn`] and
//! returns what `txn` returns: the new revision, or `Conflict` when the condition fails.

use std::future::Future;

use crate::{Expect, Result, Revision, Store, Txn, TxnOp};

/// Shorthands for single-key writes.
pub trait StoreExt: Store {
    /// Sets `key` to `value` unconditionally.
    fn put(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> impl Future<Output = Result<Revision>> + Send {
        self.put_if(key, value, Expect::Any)
    }

    /// Creates `key`; `Conflict` if it already exists.
    fn create(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> impl Future<Output = Result<Revision>> + Send {
        self.put_if(key, value, Expect::Absent)
    }

    /// Sets `key` to `value` if `expect` holds, else `Conflict`.
    fn put_if(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        expect: Expect,
    ) -> impl Future<Output = Result<Revision>> + Send {
        let txn: Txn = vec![TxnOp::Put {
            key: key.into(),
            value: value.into(),
            expect,
        }];
        self.txn(txn)
    }

    /// Deletes `key` if it exists. Deleting an absent key changes nothing and returns
    /// the current revision.
    fn delete(&self, key: impl Into<String>) -> impl Future<Output = Result<Revision>> + Send {
        let txn: Txn = vec![TxnOp::Delete {
            key: key.into(),
            expect: Expect::Any,
        }];
        self.txn(txn)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
