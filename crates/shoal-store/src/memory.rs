//! [`MemoryStore`]: the in-memory backend, for tests and throwaway runs.
//!
//! The key space is a `BTreeMap` behind a mutex; a transaction takes the lock, applies
//! itself with the shared [`apply`](crate::apply) rules, publishes its events to the
//! [`WatchHub`] and releases the lock, so revisions and watch order always agree.
//! Nothing survives the process.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::apply::{self, Applied, Revisions, TxnTarget};
use crate::watch::{WatchConfig, WatchHub};
use crate::{Event, KeyValue, Result, Revision, Store, StoreError, Txn};

/// An in-memory [`Store`]. Cheap to create; every instance is independent.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    hub: WatchHub,
}

#[derive(Debug, Default)]
struct State {
    map: BTreeMap<String, Entry>,
    revision: Revision,
}

#[derive(Debug)]
struct Entry {
    create_revision: Revision,
    mod_revision: Revision,
    value: Vec<u8>,
}

impl Entry {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

impl TxnTarget for BTreeMap<String, Entry> {
    type Error = Infallible;

    fn revisions(&mut self, key: &str) -> Result<Option<Revisions>, Infallible> {
        Ok(self
            .get(key)
            .map(|entry| (entry.create_revision, entry.mod_revision)))
    }

    fn put(&mut self, kv: &KeyValue) -> Result<(), Infallible> {
        let entry = Entry {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            value: kv.value.clone(),
        };
        self.insert(kv.key.clone(), entry);
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<bool, Infallible> {
        Ok(self.remove(key).is_some())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0 with the default watch history.
    pub fn new() -> Self {
        Self::with_watch_config(WatchConfig::default())
    }

    /// An empty store at revision 0 keeping the watch history `config` asks for.
    pub fn with_watch_config(config: WatchConfig) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            hub: WatchHub::new(config, 0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the map consistent before anything can panic
        // (apply checks all preconditions before changing anything, and cannot fail).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().map.get(key).map(|entry| entry.to_kv(key)))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let state = self.lock();
        let kvs = state
            .map
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| entry.to_kv(key))
            .collect();
        Ok((kvs, state.revision))
    }

    async fn txn(&self, txn: Txn) -> Result<Revision> {
        let mut state = self.lock();
        let revision = state.revision + 1;
        let applied = match apply::apply(&mut state.map, txn, revision) {
            Ok(applied) => applied,
            Err(never) => match never {},
        };
        match applied {
            Applied::Conflict { key } => Err(StoreError::Conflict { key }),
            Applied::Done(events) if events.is_empty() => Ok(state.revision),
            Applied::Done(events) => {
                state.revision = revision;
                // Published under the store lock so the hub sees revisions in order.
                self.hub.publish(revision, events);
                Ok(revision)
            }
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event>>> {
        Ok(self.hub.watch(prefix, after))
    }

    async fn revision(&self) -> Result<Revision> {
        Ok(self.lock().revision)
    }
}
