//! [`Reflector`]: a typed cache of one prefix, fed by a [`Watcher`].
//!
//! Each record is decoded from JSON once, when it changes, and kept by store key as an
//! `Arc<`[`Cached<T>`]`>` (the record and the revision that wrote it, for
//! compare-and-swap writes; it derefs to the record). [`Reflector::changed`] waits for the next changes, applies them and says
//! which keys changed (with the record before and after; a write that leaves a record
//! as it was is no change), so a controller can route
//! each change by the record's own fields; a fresh list is compared with what was known,
//! so records that vanished while nobody watched come out as removals. Readers
//! ([`Reader`]) take a snapshot: a cheap `Arc` of the whole map that later changes do
//! not disturb.
//!
//! A record that does not decode is logged and treated as absent (one bad record must
//! not stop whoever follows the prefix).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;

use super::{WatchSource, Watcher, WatcherEvent};
use crate::{KeyValue, Revision};

/// The most watcher events one [`Reflector::changed`] takes in (so a source that never
/// pauses still lets its follower act).
const MAX_BURST: usize = 4096;

/// A decoded record and the revision that last wrote it (0 when the source does not
/// say, as the server's list answers do not). Derefs to the record.
#[derive(Debug)]
pub struct Cached<T> {
    pub value: T,
    pub revision: Revision,
}

impl<T> std::ops::Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The records of one prefix by store key.
pub type Snapshot<T> = Arc<BTreeMap<String, Arc<Cached<T>>>>;

/// One key whose record changed: `old` is what the cache held, `new` what it holds now
/// (`None`: absent).
#[derive(Debug)]
pub struct Change<T> {
    pub key: String,
    pub old: Option<Arc<Cached<T>>>,
    pub new: Option<Arc<Cached<T>>>,
}

impl<T> Change<T> {
    /// The record after the change, else the one before (a removal).
    pub fn latest(&self) -> Option<&Arc<Cached<T>>> {
        self.new.as_ref().or(self.old.as_ref())
    }
}

/// Reads a reflector's cache from anywhere; cheap to clone.
pub struct Reader<T> {
    map: Arc<RwLock<Snapshot<T>>>,
}

impl<T> Clone for Reader<T> {
    fn clone(&self) -> Self {
        Reader {
            map: self.map.clone(),
        }
    }
}

impl<T> Reader<T> {
    /// Every record as of now.
    pub fn snapshot(&self) -> Snapshot<T> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self, key: &str) -> Option<Arc<Cached<T>>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// The records whose keys start with `prefix`, in key order.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, Arc<Cached<T>>)> {
        let map = self.snapshot();
        map.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A typed cache of one prefix; see the module docs.
pub struct Reflector<T> {
    watcher: Watcher,
    map: Arc<RwLock<Snapshot<T>>>,
    /// The revision of the last list or change applied.
    revision: Revision,
    /// Whether a list has been applied yet.
    listed: bool,
}

impl<T> Reflector<T> {
    pub fn reader(&self) -> Reader<T> {
        Reader {
            map: self.map.clone(),
        }
    }

    /// Every record as of now.
    pub fn snapshot(&self) -> Snapshot<T> {
        self.reader().snapshot()
    }

    /// Whether the cache holds a complete list (it may still lag the source).
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// Whether the cache follows its source right now: listed, and its watch open (not
    /// listing again after the watch broke). A live cache that has
    /// [caught up](Reflector::catch_up) holds every change its source has delivered.
    pub fn is_live(&self) -> bool {
        self.listed && self.watcher.is_watching()
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }
}

impl<T> Reflector<T>
where
    T: DeserializeOwned + PartialEq + Send + Sync + 'static,
{
    /// A cache of `prefix` in `source`, empty until the first [`Reflector::changed`].
    pub fn new(source: Arc<dyn WatchSource>, prefix: impl Into<String>) -> Self {
        Reflector {
            watcher: Watcher::new(source, prefix),
            map: Arc::default(),
            revision: 0,
            listed: false,
        }
    }

    /// Waits for the next changes (a burst already arrived counts as one), applies them
    /// and returns the keys whose records changed, in the order they changed. A list
    /// that changes nothing returns an empty batch. Cancel-safe.
    pub async fn changed(&mut self) -> Vec<Change<T>> {
        let first = self.watcher.next().await;
        let mut changes = Vec::new();
        self.apply(first, &mut changes);
        self.take_ready(MAX_BURST - 1, &mut changes);
        changes
    }

    /// Applies every change the source has already delivered, without waiting, and
    /// returns them. A controller calls it on each cache before a pass, so that what it
    /// reads is as new as the source.
    pub fn catch_up(&mut self) -> Vec<Change<T>> {
        let mut changes = Vec::new();
        self.take_ready(usize::MAX, &mut changes);
        changes
    }

    fn take_ready(&mut self, at_most: usize, changes: &mut Vec<Change<T>>) {
        for _ in 0..at_most {
            // Unconstrained: tokio's cooperative budget must not make an event that is
            // there look absent.
            let next = tokio::task::unconstrained(self.watcher.next());
            match futures::FutureExt::now_or_never(next) {
                Some(ev) => self.apply(ev, changes),
                None => break,
            }
        }
    }

    fn apply(&mut self, ev: WatcherEvent, changes: &mut Vec<Change<T>>) {
        let mut guard = self.map.write().unwrap_or_else(|p| p.into_inner());
        // Copies the map only while a reader holds a snapshot of it.
        let map = Arc::make_mut(&mut guard);
        match ev {
            WatcherEvent::Listed { items, revision } => {
                let mut fresh = BTreeMap::new();
                for kv in items {
                    if let Some(v) = decode::<T>(&kv) {
                        fresh.insert(kv.key, v);
                    }
                }
                for (key, old) in map.iter() {
                    if !fresh.contains_key(key) {
                        changes.push(Change {
                            key: key.clone(),
                            old: Some(old.clone()),
                            new: None,
                        });
                    }
                }
                for (key, new) in &fresh {
                    let old = map.get(key);
                    if old.is_none_or(|o| o.value != new.value) {
                        changes.push(Change {
                            key: key.clone(),
                            old: old.cloned(),
                            new: Some(new.clone()),
                        });
                    }
                }
                *map = fresh;
                self.revision = revision;
                self.listed = true;
            }
            WatcherEvent::Apply(kv) => {
                self.revision = self.revision.max(kv.mod_revision);
                let new = decode::<T>(&kv);
                let old = match &new {
                    Some(v) => map.insert(kv.key.clone(), v.clone()),
                    None => map.remove(&kv.key),
                };
                let same = match (&old, &new) {
                    (Some(o), Some(n)) => o.value == n.value,
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    changes.push(Change {
                        key: kv.key,
                        old,
                        new,
                    });
                }
            }
            WatcherEvent::Delete { key, revision } => {
                self.revision = self.revision.max(revision);
                if let Some(old) = map.remove(&key) {
                    changes.push(Change {
                        key,
                        old: Some(old),
                        new: None,
                    });
                }
            }
        }
    }
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<Arc<Cached<T>>> {
    match serde_json::from_slice(&kv.value) {
        Ok(value) => Some(Arc::new(Cached {
            value,
            revision: kv.mod_revision,
        })),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "skipping an undecodable record");
            None
        }
    }
}
