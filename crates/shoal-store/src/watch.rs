//! The in-process watch hub every backend shares.
//!
//! A backend calls [`WatchHub::publish`] once per committed transaction, in revision
//! order, with the events of that transaction. The hub keeps a bounded ring of the most
//! recent events (the *history*) and fans each transaction out to live watchers over a
//! tokio broadcast channel. [`WatchHub::watch`] hands out a `'static` stream that first
//! replays the kept history after the requested revision, then follows live changes,
//! without gaps or duplicates: it subscribes and reads the ring under the same lock that
//! `publish` holds, and drops any live transaction it has already replayed.
//!
//! History is lost in two ways, and both end the stream with
//! [`StoreError::Compacted`]: the ring dropped a transaction the watcher still needed
//! (it asked for a revision that is too old), or the watcher read so slowly that the
//! broadcast channel overwrote transactions it had not read yet (it lagged). Either
//! way the watcher must `list` again and watch from the revision that returned.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast;

use crate::{Event, Result, Revision, StoreError};

/// How much change history a store keeps for watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// How many events (not transactions) the history ring keeps. A watch from a
    /// revision older than the oldest kept transaction gets `Compacted`.
    pub history: usize,
    /// How many transactions a live watcher may fall behind before its stream ends
    /// with `Compacted`.
    pub live_buffer: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            history: 100_000,
            live_buffer: 16_384,
        }
    }
}

/// The events of one committed transaction; all share `revision`.
#[derive(Debug)]
struct Batch {
    revision: Revision,
    events: Vec<Event>,
}

/// Fans committed changes out to watchers; cheap to clone (all clones share one ring).
///
/// Watch streams hold only a weak reference: when the last clone of the hub is dropped
/// (the store closed), every open stream ends with `Err(StoreError::Closed)`.
#[derive(Debug, Clone)]
pub struct WatchHub {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    /// Kept transactions, oldest first, strictly increasing revisions.
    ring: VecDeque<Arc<Batch>>,
    /// Number of events in `ring`.
    kept_events: usize,
    /// Maximum of `kept_events`.
    history: usize,
    /// Every transaction at or below this revision may be missing from the ring.
    compacted_through: Revision,
    /// The revision of the last published transaction.
    last_published: Revision,
    live: broadcast::Sender<Arc<Batch>>,
}

impl HubState {
    fn compacted(&self, requested: Revision) -> StoreError {
        StoreError::Compacted {
            requested,
            oldest: self.compacted_through + 1,
        }
    }
}

fn lock(state: &Mutex<HubState>) -> MutexGuard<'_, HubState> {
    // The state is consistent after every statement that can panic, so a poisoned
    // lock (a panic elsewhere while holding it) leaves nothing half-done.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WatchHub {
    /// A hub for a store currently at `revision`. History up to and including it is
    /// not available (a store that just opened has none), so watching from an older
    /// revision gives `Compacted`; watching from `revision` or later waits for changes.
    pub fn new(config: WatchConfig, revision: Revision) -> Self {
        let (live, _) = broadcast::channel(config.live_buffer.max(1));
        WatchHub {
            shared: Arc::new(Shared {
                state: Mutex::new(HubState {
                    ring: VecDeque::new(),
                    kept_events: 0,
                    history: config.history,
                    compacted_through: revision,
                    last_published: revision,
                    live,
                }),
            }),
        }
    }

    /// Records the events of the transaction committed at `revision` and wakes watchers.
    ///
    /// Callers publish in strictly increasing revision order; a transaction that changed
    /// nothing is not published. Anything at or below the last published revision is
    /// ignored (and is a bug in the caller).
    pub fn publish(&self, revision: Revision, events: Vec<Event>) {
        let mut state = lock(&self.shared.state);
        if revision <= state.last_published {
            debug_assert!(false, "revision {revision} published out of order");
            tracing::error!(revision, "Watch hub got a revision out of order; ignored");
            return;
        }
        state.last_published = revision;
        let batch = Arc::new(Batch { revision, events });
        state.kept_events += batch.events.len();
        state.ring.push_back(batch.clone());
        while state.kept_events > state.history {
            let Some(dropped) = state.ring.pop_front() else {
                break;
            };
            state.kept_events -= dropped.events.len();
            state.compacted_through = dropped.revision;
        }
        // Sent under the lock so the broadcast order is the ring order. An error only
        // means nobody is watching right now.
        let _ = state.live.send(batch);
    }

    /// The changes to keys starting with `prefix` with a revision greater than `after`:
    /// first the kept history, then live changes. See the module docs for how it ends.
    pub fn watch(&self, prefix: &str, after: Revision) -> BoxStream<'static, Result<Event>> {
        let state = lock(&self.shared.state);
        if after < state.compacted_through {
            let err = state.compacted(after);
            return stream::iter([Err(err)]).boxed();
        }
        // Subscribing under the lock: every transaction is either in the ring now or
        // arrives on `live`, and possibly both only for ones at or below `last`.
        let live = state.live.subscribe();
        let start = state.ring.partition_point(|batch| batch.revision <= after);
        let replay: Vec<Result<Event>> = state
            .ring
            .range(start..)
            .flat_map(|batch| batch.events.iter())
            .filter(|event| event.key().starts_with(prefix))
            .cloned()
            .map(Ok)
            .collect();
        let last = state.last_published.max(after);
        drop(state);

        let follower = Follower {
            live,
            prefix: prefix.to_owned(),
            last,
            hub: Arc::downgrade(&self.shared),
        };
        stream::iter(replay)
            .chain(stream::unfold(Some(follower), Follower::next).flatten())
            .boxed()
    }
}

/// The live half of one watch stream.
struct Follower {
    live: broadcast::Receiver<Arc<Batch>>,
    prefix: String,
    /// The highest revision this watcher has seen (or skipped); later ones only.
    last: Revision,
    hub: Weak<Shared>,
}

type Chunk = stream::Iter<std::vec::IntoIter<Result<Event>>>;

impl Follower {
    /// The next non-empty chunk of events, or a final error; `None` state ends it.
    async fn next(this: Option<Follower>) -> Option<(Chunk, Option<Follower>)> {
        let mut this = this?;
        loop {
            match this.live.recv().await {
                Ok(batch) => {
                    if batch.revision <= this.last {
                        continue;
                    }
                    this.last = batch.revision;
                    let events: Vec<Result<Event>> = batch
                        .events
                        .iter()
                        .filter(|event| event.key().starts_with(&this.prefix))
                        .cloned()
                        .map(Ok)
                        .collect();
                    if !events.is_empty() {
                        return Some((stream::iter(events), Some(this)));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, after = this.last, "Watcher lagged");
                    let err = match this.hub.upgrade() {
                        Some(shared) => lock(&shared.state).compacted(this.last),
                        None => StoreError::Compacted {
                            requested: this.last,
                            oldest: this.last + 1,
                        },
                    };
                    return Some((stream::iter(vec![Err(err)]), None));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Some((stream::iter(vec![Err(StoreError::Closed)]), None));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyValue;

    fn put(key: &str, revision: Revision) -> Event {
        Event::Put(KeyValue {
            key: key.to_owned(),
            value: revision.to_string().into_bytes(),
            create_revision: revision,
            mod_revision: revision,
        })
    }

    fn revisions(events: &[Result<Event>]) -> Vec<Revision> {
        events
            .iter()
            .map(|e| e.as_ref().map(Event::revision).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn replays_then_follows_without_duplicates() {
        let hub = WatchHub::new(WatchConfig::default(), 0);
        hub.publish(1, vec![put("a/1", 1)]);
        hub.publish(2, vec![put("b/1", 2), put("a/2", 2)]);
        let mut watch = hub.watch("a/", 0);
        hub.publish(3, vec![put("a/3", 3)]);
        let got: Vec<_> = (&mut watch).take(3).collect().await;
        assert_eq!(revisions(&got), vec![1, 2, 3]);
        assert_eq!(got[1].as_ref().unwrap().key(), "a/2");
    }

    #[tokio::test]
    async fn ring_keeps_whole_transactions_and_reports_what_it_dropped() {
        let config = WatchConfig {
            history: 3,
            live_buffer: 16,
        };
        let hub = WatchHub::new(config, 0);
        for rev in 1..=5 {
            hub.publish(rev, vec![put("k", rev)]);
        }
        // Revisions 3, 4, 5 are kept: watching after 2 works, after 1 does not.
        let got: Vec<_> = hub.watch("", 2).take(3).collect().await;
        assert_eq!(revisions(&got), vec![3, 4, 5]);
        let first = hub.watch("", 1).next().await;
        assert!(matches!(
            first,
            Some(Err(StoreError::Compacted {
                requested: 1,
                oldest: 3
            }))
        ));
    }

    #[tokio::test]
    async fn dropping_the_hub_closes_streams() {
        let hub = WatchHub::new(WatchConfig::default(), 7);
        let mut watch = hub.watch("", 7);
        drop(hub);
        assert!(matches!(watch.next().await, Some(Err(StoreError::Closed))));
        assert!(watch.next().await.is_none());
    }
}
