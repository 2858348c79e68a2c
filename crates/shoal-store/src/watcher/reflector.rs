//! [`Reflector`]: a typed cache of one prefix, fed by a [`Watcher`].
//!
//! Each record is decoded from JSON once, when it changes, and kept by store key as an
//! `Arc<T>`. [`Reflector::changed`] waits for the next changes, applies them and says
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

/// The records of one prefix by store key.
pub type Snapshot<T> = Arc<BTreeMap<String, Arc<T>>>;

/// One key whose record changed: `old` is what the cache held, `new` what it holds now
/// (`None`: absent).
#[derive(Debug)]
pub struct Change<T> {
    pub key: String,
    pub old: Option<Arc<T>>,
    pub new: Option<Arc<T>>,
}

impl<T> Change<T> {
    /// The record after the change, else the one before (a removal).
    pub fn latest(&self) -> Option<&Arc<T>> {
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

    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// The records whose keys start with `prefix`, in key order.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, Arc<T>)> {
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

    /// The revision the cache reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Waits for the next changes (a burst already arrived counts as one), applies them
    /// and returns the keys whose records changed, in the order they changed. A list
    /// that changes nothing returns an empty batch. Cancel-safe.
    pub async fn changed(&mut self) -> Vec<Change<T>> {
        let first = self.watcher.next().await;
        let mut changes = Vec::new();
        self.apply(first, &mut changes);
        for _ in 1..MAX_BURST {
            match futures::FutureExt::now_or_never(self.watcher.next()) {
                Some(ev) => self.apply(ev, &mut changes),
                None => break,
            }
        }
        changes
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
                        fresh.insert(kv.key, Arc::new(v));
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
                    if old.is_none_or(|o| **o != **new) {
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
                let new = decode::<T>(&kv).map(Arc::new);
                let old = match &new {
                    Some(v) => map.insert(kv.key.clone(), v.clone()),
                    None => map.remove(&kv.key),
                };
                let same = match (&old, &new) {
                    (Some(o), Some(n)) => **o == **n,
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

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    serde_json::from_slice(&kv.value)
        .inspect_err(
            |e| tracing::warn!(key = %kv.key, error = %e, "skipping an undecodable record"),
        )
        .ok()
}
