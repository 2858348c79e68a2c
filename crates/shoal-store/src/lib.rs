//! Shoal's state store: desired and observed state as a revisioned key-value map.
//!
//! Every write happens in a [`Txn`] and gets the next store-wide [`Revision`]; readers
//! `list` a prefix (getting the revision it was read at) and then `watch` the prefix
//! from that revision, as a Kubernetes informer does with etcd. Values are opaque bytes
//! (the callers store JSON). Backends: [`MemoryStore`] (tests), [`RedbStore`]
//! (embedded, durable, the default) and [`EtcdStore`](etcd::EtcdStore) (several servers
//! on one etcd cluster; [`etcd::Elector`] elects the one that runs the control plane and
//! fences its writes).

use async_trait::async_trait;
use futures::stream::BoxStream;

mod apply;
mod cached;
pub mod etcd;
mod ext;
mod memory;
mod redb_store;
pub mod watch;
pub mod watcher;

pub use cached::CachedStore;
pub use ext::StoreExt;
pub use memory::MemoryStore;
pub use redb_store::{RedbStore, RedbStoreError};
pub use watch::{WatchConfig, WatchHub};

/// A store-wide, strictly increasing write counter. Revision 0 means "before anything".
pub type Revision = u64;

/// One stored key with its value and the revisions that created and last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// A condition a transaction checks on a key before it applies anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No condition.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist (any revision).
    Present,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(Revision),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        key: String,
        expect: Expect,
    },
}

/// A batch of operations applied atomically: either every precondition holds and every
/// operation is applied at one new revision, or nothing changes.
pub type Txn = Vec<TxnOp>;

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, revision: Revision },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A transaction's precondition did not hold; nothing was applied.
    #[error("Precondition failed on key {key}")]
    Conflict { key: String },
    /// A watch asked for history the store no longer keeps (or the watcher fell too far
    /// behind). The caller must `list` again and watch from the new revision.
    #[error("Revision {requested} is compacted; list again (oldest kept is {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("Store backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store cannot answer now (etcd lost quorum, or the call timed out); nothing
    /// may be assumed about a write that got this. Retry later.
    #[error("Store is unavailable; retry later")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The transaction is over the backend's limit (etcd: 128 operations, 1.5 MiB per
    /// request) and cannot be split without losing its atomicity; nothing was applied.
    /// `what` names the largest offender (a key, or "operations").
    #[error("Transaction too large: {what} is over the store's limit of {limit}")]
    TooLarge { what: String, limit: String },
    /// A fenced write (the control plane's, on a store shared by several servers) was
    /// refused because the leadership it was made under has ended; nothing was applied.
    #[error("This server no longer leads; its write was refused")]
    NotLeader,
    #[error("Store is closed")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The seam every backend implements. One conformance suite (`tests/conformance.rs`)
/// runs against each.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One key, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order, and the revision they were read at.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)>;

    /// Part of [`Store::list`]: of the keys under `prefix` that are `>= from` (every key
    /// under it when `from` is empty), the `limit` after the first `skip`; with the
    /// number of all keys under `prefix` and the revision they were read at. A page of
    /// a long listing without copying the rest (the cache answers it from memory).
    async fn list_part(
        &self,
        prefix: &str,
        from: &str,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, usize, Revision)> {
        let (all, revision) = self.list(prefix).await?;
        let total = all.len();
        let part = all
            .into_iter()
            .filter(|kv| kv.key.as_str() >= from)
            .skip(skip)
            .take(limit)
            .collect();
        Ok((part, total, revision))
    }

    /// Applies `txn` atomically and returns the new revision. Every precondition is
    /// checked against the state before the transaction; then the operations apply in
    /// order. A transaction that changes nothing (empty, or deleting only absent keys)
    /// takes no new revision and returns the current one.
    async fn txn(&self, txn: Txn) -> Result<Revision>;

    /// Changes to keys under `prefix` with a revision strictly greater than `after`, in
    /// revision order, first the kept history then live changes. Ends with
    /// `Err(Compacted)` when the history needed is gone or the watcher lagged.
    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event>>>;

    /// The revision of the latest write.
    async fn revision(&self) -> Result<Revision>;

    /// The most operations one transaction may hold, when the backend has a limit (etcd:
    /// 128); writers with more to write split it into consistent parts.
    fn max_txn_ops(&self) -> Option<usize> {
        None
    }
}
