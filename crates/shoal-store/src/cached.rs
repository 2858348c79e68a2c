//! [`CachedStore`]: a [`Store`] whose reads are answered from memory.
//!
//! A [`Watcher`] follows the whole key space of the inner store into a map; `get` and
//! `list` read the map instead of the store (no blocking-pool hop, no disk read), writes
//! and watches go to the inner store. Reads see every write committed before they began
//! (read-your-writes, and more): a read first takes the inner store's current revision
//! (an atomic load for the embedded stores) and waits until the map has applied it (a
//! watch event is typically there within a millisecond); if it has not within
//! [`CATCH_UP`], or while the first list is not in yet, the read goes to the inner store,
//! so a read never answers older data than a write acknowledged before it.
//!
//! A transaction's changes share one revision and arrive together; every change the
//! watch has ready is applied under one lock before the map's revision moves, so a read
//! never sees half a transaction.
//!
//! Meant for a store one server owns (the embedded one): another server's writes to a
//! shared store would reach the map only as fast as the watch carries them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::FutureExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::watcher::{StoreSource, Watcher, WatcherEvent};
use crate::{Event, KeyValue, Result, Revision, Store, Txn};

/// The longest a read waits for the map to reach the caller's last write.
pub const CATCH_UP: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Map {
    items: BTreeMap<String, KeyValue>,
    /// False until the first list is in.
    ready: bool,
}

/// A [`Store`] that answers reads from an in-memory copy kept by a watch.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    map: Arc<RwLock<Map>>,
    /// The revision the map has fully applied.
    reached: watch::Receiver<Revision>,
    /// Reads answered from memory, and from the inner store.
    from_memory: AtomicU64,
    from_store: AtomicU64,
    stop: CancellationToken,
}

impl Drop for CachedStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl CachedStore {
    /// Starts following `inner` (a task on the current runtime, ended when this is
    /// dropped or `shutdown` fires).
    pub fn new(inner: Arc<dyn Store>, shutdown: &CancellationToken) -> Arc<Self> {
        let map = Arc::new(RwLock::new(Map::default()));
        let (tx, reached) = watch::channel(0);
        let stop = shutdown.child_token();
        tokio::spawn(follow(
            Watcher::new(StoreSource::new(inner.clone()), ""),
            map.clone(),
            tx,
            stop.clone(),
        ));
        Arc::new(Self {
            inner,
            map,
            reached,
            from_memory: AtomicU64::new(0),
            from_store: AtomicU64::new(0),
            stop,
        })
    }

    /// How many reads were answered from memory, and how many from the inner store.
    pub fn reads(&self) -> (u64, u64) {
        (
            self.from_memory.load(Ordering::Relaxed),
            self.from_store.load(Ordering::Relaxed),
        )
    }

    /// Waits until the map holds every write committed to the inner store so far; false
    /// when it is not ready or did not catch up in time (read the inner store then).
    async fn caught_up(&self) -> bool {
        if !self.map.read().map(|m| m.ready).unwrap_or(false) {
            return false;
        }
        // Every write committed before this read began, by any handle of the store (the
        // controller, the directory, this API): the inner store's revision is an atomic
        // read for the embedded stores.
        let want = self.inner.revision().await.unwrap_or(u64::MAX);
        let mut reached = self.reached.clone();
        if *reached.borrow() >= want {
            return true;
        }
        let caught = tokio::time::timeout(CATCH_UP, async {
            reached.wait_for(|r| *r >= want).await.is_ok()
        })
        .await;
        caught.unwrap_or(false)
    }
}

/// The most changes applied under one lock.
const MAX_BATCH: usize = 4096;

/// Applies the watcher's events to `map` in batches: whatever is ready at once (a
/// transaction's changes arrive together) goes in under one lock, then the batch's last
/// revision is published, so no read sees half a transaction.
async fn follow(
    mut watcher: Watcher,
    map: Arc<RwLock<Map>>,
    reached: watch::Sender<Revision>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            event = watcher.next() => event,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match watcher.next().now_or_never() {
                Some(event) => batch.push(event),
                None => break,
            }
        }
        let Ok(mut m) = map.write() else { return };
        let mut revision = *reached.borrow();
        for event in batch {
            revision = revision.max(match event {
                WatcherEvent::Listed { items, revision } => {
                    m.items = items.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
                    m.ready = true;
                    revision
                }
                WatcherEvent::Apply(kv) => {
                    let revision = kv.mod_revision;
                    m.items.insert(kv.key.clone(), kv);
                    revision
                }
                WatcherEvent::Delete { key, revision } => {
                    m.items.remove(&key);
                    revision
                }
            });
        }
        drop(m);
        reached.send_replace(revision);
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        if self.caught_up().await {
            if let Ok(m) = self.map.read() {
                self.from_memory.fetch_add(1, Ordering::Relaxed);
                return Ok(m.items.get(key).cloned());
            }
        }
        self.from_store.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        if self.caught_up().await {
            let revision = *self.reached.borrow();
            if let Ok(m) = self.map.read() {
                let items = m
                    .items
                    .range::<str, _>((
                        std::ops::Bound::Included(prefix),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, kv)| kv.clone())
                    .collect();
                self.from_memory.fetch_add(1, Ordering::Relaxed);
                return Ok((items, revision));
            }
        }
        self.from_store.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }

    async fn list_part(
        &self,
        prefix: &str,
        from: &str,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, usize, Revision)> {
        if self.caught_up().await {
            let revision = *self.reached.borrow();
            if let Ok(m) = self.map.read() {
                let under = || {
                    m.items
                        .range::<str, _>((
                            std::ops::Bound::Included(prefix),
                            std::ops::Bound::Unbounded,
                        ))
                        .take_while(|(k, _)| k.starts_with(prefix))
                };
                let total = under().count();
                let start = if from > prefix { from } else { prefix };
                let part = m
                    .items
                    .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .skip(skip)
                    .take(limit)
                    .map(|(_, kv)| kv.clone())
                    .collect();
                self.from_memory.fetch_add(1, Ordering::Relaxed);
                return Ok((part, total, revision));
            }
        }
        self.from_store.fetch_add(1, Ordering::Relaxed);
        self.inner.list_part(prefix, from, skip, limit).await
    }

    async fn txn(&self, txn: Txn) -> Result<Revision> {
        self.inner.txn(txn).await
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event>>> {
        self.inner.watch(prefix, after).await
    }

    async fn revision(&self) -> Result<Revision> {
        self.inner.revision().await
    }

    fn max_txn_ops(&self) -> Option<usize> {
        self.inner.max_txn_ops()
    }
}
