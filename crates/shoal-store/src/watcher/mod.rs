//! One list-then-watch loop for everything that follows the store: the controller (over
//! the store itself), agents and balancers (over the server's HTTP API).
//!
//! A [`Watcher`] follows one key prefix of a [`WatchSource`]. It is an explicit state
//! machine, after kube-rs' `watcher`: it lists the prefix, opens a watch from the list's
//! revision, then hands the whole list out as one [`WatcherEvent::Listed`] and each
//! change after it; when the history it needs is gone (`Compacted`) or the watch ends it
//! lists again, and when the source fails it waits (doubling from [`BACKOFF_MIN`] up to
//! [`BACKOFF_MAX`]) and lists again. It never fails: callers only see events. A list is
//! answered in one piece by every source, so there is no paging (kube's `InitApply`).
//!
//! The list is handed out only once the watch after it is open, so a watcher that
//! [`is_watching`](Watcher::is_watching) has given out everything up to the list and
//! every change since then that its source has delivered.
//!
//! [`Watcher::next`] is cancel-safe and loses no progress when given up on: every wait
//! (a request under way, the backoff) is kept in the state the next call resumes, so it
//! can sit in a `tokio::select!` beside timers and shutdown.
//!
//! [`Reflector`] is the typed cache on top.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

use crate::{Event, KeyValue, Revision, Store, StoreError};

mod reflector;

pub use reflector::{Cached, Change, Reader, Reflector, Snapshot};

/// The first wait after a failure; each further failure doubles it.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest wait between two tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where changes come from: a prefix can be listed (with the revision it was read at)
/// and watched from a revision.
#[async_trait]
pub trait WatchSource: Send + Sync + 'static {
    /// Every record under `prefix` and the revision they were read at.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), SourceError>;

    /// Changes under `prefix` after `after`, in revision order. The stream ends (or ends
    /// with an error) when the source can no longer follow; `Compacted` asks for a list.
    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event, SourceError>>, SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The history the watch needs is gone: list again.
    #[error("The watched history is compacted; list again")]
    Compacted,
    #[error("The source of changes failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for SourceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { .. } => SourceError::Compacted,
            e => SourceError::Failed(Box::new(e)),
        }
    }
}

/// A [`Store`] as a source (the controller's, in the server process).
pub struct StoreSource {
    store: Arc<dyn Store>,
}

impl StoreSource {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(StoreSource { store })
    }
}

#[async_trait]
impl WatchSource for StoreSource {
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), SourceError> {
        Ok(self.store.list(prefix).await?)
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event, SourceError>>, SourceError> {
        let events = self.store.watch(prefix, after).await?;
        Ok(events.map(|e| e.map_err(SourceError::from)).boxed())
    }
}

/// What a [`Watcher`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatcherEvent {
    /// A fresh list: these records are everything under the prefix at `revision`; any
    /// record known before and absent here is gone.
    Listed {
        items: Vec<KeyValue>,
        revision: Revision,
    },
    /// A record was created or changed.
    Apply(KeyValue),
    /// A record was removed.
    Delete { key: String, revision: Revision },
}

type Listing = BoxFuture<'static, Result<(Vec<KeyValue>, Revision), SourceError>>;
type Opening =
    BoxFuture<'static, Result<BoxStream<'static, Result<Event, SourceError>>, SourceError>>;

enum State {
    /// Nothing listed yet, or the last list is stale: list next.
    Empty,
    /// A list is under way.
    Listing(Listing),
    /// Listed: the watch from the list's revision is being opened; the list waits.
    Opening {
        items: Vec<KeyValue>,
        revision: Revision,
        opening: Opening,
    },
    /// Following changes.
    Watching(BoxStream<'static, Result<Event, SourceError>>),
    /// Something failed: list again once `until` has passed.
    Backoff { until: Instant },
}

/// Follows one prefix of a source; see the module docs.
pub struct Watcher {
    source: Arc<dyn WatchSource>,
    prefix: String,
    state: State,
    /// The wait before the next try after a failure.
    backoff: Duration,
}

impl Watcher {
    pub fn new(source: Arc<dyn WatchSource>, prefix: impl Into<String>) -> Self {
        Watcher {
            source,
            prefix: prefix.into(),
            state: State::Empty,
            backoff: BACKOFF_MIN,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the watch is open (everything listed has been handed out, and changes
    /// follow as the source delivers them).
    pub fn is_watching(&self) -> bool {
        matches!(self.state, State::Watching(_))
    }

    /// The next event. Waits through failures (they are logged), so it never fails.
    ///
    /// Cancel-safe, and a call given up on loses no progress: a list or watch request
    /// under way is kept in the state and the next call goes on waiting for it.
    pub async fn next(&mut self) -> WatcherEvent {
        loop {
            if let Some(ev) = self.step().await {
                return ev;
            }
        }
    }

    /// One transition of the state machine; an event when the transition makes one.
    async fn step(&mut self) -> Option<WatcherEvent> {
        match &mut self.state {
            State::Empty => {
                let (source, prefix) = (self.source.clone(), self.prefix.clone());
                self.state = State::Listing(Box::pin(async move { source.list(&prefix).await }));
                None
            }
            State::Listing(listing) => {
                match listing.as_mut().await {
                    Ok((items, revision)) => {
                        let (source, prefix) = (self.source.clone(), self.prefix.clone());
                        self.state = State::Opening {
                            items,
                            revision,
                            opening: Box::pin(async move { source.watch(&prefix, revision).await }),
                        };
                    }
                    Err(e) => {
                        tracing::warn!(prefix = %self.prefix, error = %e, "cannot list; retrying");
                        self.fail();
                    }
                }
                None
            }
            State::Opening { opening, .. } => match opening.as_mut().await {
                Ok(stream) => {
                    // Listing and watching both work: the source is healthy again.
                    self.backoff = BACKOFF_MIN;
                    let State::Opening {
                        items, revision, ..
                    } = std::mem::replace(&mut self.state, State::Watching(stream))
                    else {
                        unreachable!("the state was just matched as Opening")
                    };
                    Some(WatcherEvent::Listed { items, revision })
                }
                Err(SourceError::Compacted) => {
                    self.state = State::Empty;
                    None
                }
                Err(e) => {
                    tracing::warn!(prefix = %self.prefix, error = %e, "cannot watch; retrying");
                    self.fail();
                    None
                }
            },
            State::Watching(stream) => match stream.next().await {
                Some(Ok(Event::Put(kv))) => Some(WatcherEvent::Apply(kv)),
                Some(Ok(Event::Delete { key, revision })) => {
                    Some(WatcherEvent::Delete { key, revision })
                }
                Some(Err(SourceError::Compacted)) | None => {
                    tracing::debug!(prefix = %self.prefix, "watch ended; listing again");
                    self.state = State::Empty;
                    None
                }
                Some(Err(e)) => {
                    tracing::debug!(prefix = %self.prefix, error = %e, "watch broke; listing again");
                    self.fail();
                    None
                }
            },
            State::Backoff { until } => {
                tokio::time::sleep_until(*until).await;
                self.state = State::Empty;
                None
            }
        }
    }

    fn fail(&mut self) {
        self.state = State::Backoff {
            until: Instant::now() + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::{MemoryStore, StoreExt};

    #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
    struct Rec {
        n: u32,
    }

    fn kv(key: &str, n: u32) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: format!("{{\"n\":{n}}}").into_bytes(),
            create_revision: 0,
            mod_revision: 0,
        }
    }

    /// What a scripted source answers, in order.
    enum Answer {
        List(Vec<KeyValue>, Revision),
        Fail,
        Watch(Vec<Result<Event, SourceError>>),
    }

    #[derive(Default)]
    struct Scripted {
        /// How long a list takes to answer.
        list_takes: Duration,
        answers: Mutex<VecDeque<Answer>>,
        /// Every call, as "list" or "watch@REV".
        calls: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(answers: Vec<Answer>) -> Arc<Self> {
            Arc::new(Scripted {
                list_takes: Duration::ZERO,
                answers: Mutex::new(answers.into()),
                calls: Mutex::default(),
            })
        }
        fn next(&self, call: String) -> Answer {
            self.calls.lock().expect("lock").push(call);
            self.answers
                .lock()
                .expect("lock")
                .pop_front()
                // Out of script: a source that never answers.
                .unwrap_or(Answer::Watch(Vec::new()))
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl WatchSource for Scripted {
        async fn list(&self, _prefix: &str) -> Result<(Vec<KeyValue>, Revision), SourceError> {
            let answer = self.next("list".into());
            tokio::time::sleep(self.list_takes).await;
            match answer {
                Answer::List(items, rev) => Ok((items, rev)),
                Answer::Fail => Err(SourceError::Failed("down".into())),
                Answer::Watch(_) => std::future::pending().await,
            }
        }
        async fn watch(
            &self,
            _prefix: &str,
            after: Revision,
        ) -> Result<BoxStream<'static, Result<Event, SourceError>>, SourceError> {
            match self.next(format!("watch@{after}")) {
                Answer::Watch(events) => Ok(futures::stream::iter(events).boxed()),
                Answer::Fail => Err(SourceError::Failed("down".into())),
                Answer::List(..) => Err(SourceError::Compacted),
            }
        }
    }

    fn summary(changes: &[Change<Rec>]) -> Vec<(String, Option<u32>)> {
        changes
            .iter()
            .map(|c| (c.key.clone(), c.new.as_ref().map(|r| r.n)))
            .collect()
    }

    #[tokio::test]
    async fn follows_a_store_from_its_list() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store.put("a/1", &b"{\"n\":1}"[..]).await.expect("put");
        store.put("b/1", &b"{\"n\":9}"[..]).await.expect("put");
        let mut cache: Reflector<Rec> = Reflector::new(StoreSource::new(store.clone()), "a/");
        assert_eq!(summary(&cache.changed().await), [("a/1".into(), Some(1))]);
        assert!(cache.is_listed());
        let reader = cache.reader();
        let before = reader.snapshot();

        store.put("a/2", &b"{\"n\":2}"[..]).await.expect("put");
        assert_eq!(summary(&cache.changed().await), [("a/2".into(), Some(2))]);
        // Rewriting a record as it was is no change; a removal carries the old record.
        store.put("a/2", &b"{\"n\":2}"[..]).await.expect("put");
        store.delete("a/1").await.expect("delete");
        let changes = cache.changed().await;
        assert_eq!(summary(&changes), [("a/1".into(), None)]);
        assert_eq!(
            changes[0].old.as_ref().map(|c| &c.value),
            Some(&Rec { n: 1 })
        );
        assert_eq!(reader.with_prefix("a/").len(), 1);
        let a2 = reader.get("a/2").expect("a/2 is cached");
        // The record and the revision that wrote it (a/2 was written twice, then a/1 removed).
        assert_eq!((&a2.value, a2.revision), (&Rec { n: 2 }, 4));
        assert!(cache.is_live());
        // A snapshot taken earlier does not move.
        assert_eq!(before.len(), 1);
        assert!(before.contains_key("a/1"));
    }

    #[tokio::test]
    async fn an_undecodable_record_is_absent() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut cache: Reflector<Rec> = Reflector::new(StoreSource::new(store.clone()), "a/");
        assert!(cache.changed().await.is_empty());
        store.put("a/1", &b"{\"n\":1}"[..]).await.expect("put");
        cache.changed().await;
        store.put("a/1", &b"not json"[..]).await.expect("put");
        assert_eq!(summary(&cache.changed().await), [("a/1".into(), None)]);
        assert!(cache.snapshot().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn compaction_and_a_closed_watch_list_again_and_report_what_vanished() {
        let source = Scripted::new(vec![
            Answer::List(vec![kv("a/1", 1), kv("a/2", 2)], 10),
            Answer::Watch(vec![
                Ok(Event::Put(kv("a/3", 3))),
                Err(SourceError::Compacted),
            ]),
            // While nobody watched, a/1 went and a/2 changed.
            Answer::List(vec![kv("a/2", 20), kv("a/3", 3)], 15),
            Answer::Watch(Vec::new()),
            Answer::List(vec![kv("a/2", 20), kv("a/3", 3)], 16),
        ]);
        let mut cache: Reflector<Rec> = Reflector::new(source.clone(), "a/");
        let start = Instant::now();
        // The source answers at once, so it all arrives as one burst.
        assert_eq!(
            summary(&cache.changed().await),
            [
                ("a/1".into(), Some(1)),
                ("a/2".into(), Some(2)),
                ("a/3".into(), Some(3)),
                ("a/1".into(), None),
                ("a/2".into(), Some(20)),
            ]
        );
        assert_eq!(cache.revision(), 16);
        // The empty watch ends at once: the list after it changes nothing.
        assert_eq!(
            source.calls(),
            ["list", "watch@10", "list", "watch@15", "list", "watch@16", "list"]
        );
        // No failure, so no waiting.
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_a_healthy_source_resets_the_wait() {
        let source = Scripted::new(vec![
            Answer::Fail,
            Answer::Fail,
            Answer::List(vec![kv("a/1", 1)], 4),
            Answer::Fail,
            Answer::List(vec![kv("a/1", 1)], 5),
            Answer::Watch(vec![Err(SourceError::Failed("reset".into()))]),
            Answer::List(vec![kv("a/1", 1)], 6),
        ]);
        let mut w = Watcher::new(source.clone(), "a/");
        let start = Instant::now();
        // Two failed lists (200 ms, then 400 ms) and a list whose watch fails to open
        // (800 ms): a list is only handed out once a watch after it is open.
        assert!(matches!(
            w.next().await,
            WatcherEvent::Listed { revision: 5, .. }
        ));
        assert!(w.is_watching());
        assert_eq!(start.elapsed(), Duration::from_millis(1400));
        // The watch broke after opening: the wait starts over from the minimum.
        assert!(matches!(
            w.next().await,
            WatcherEvent::Listed { revision: 6, .. }
        ));
        assert_eq!(start.elapsed(), Duration::from_millis(1600));
        assert_eq!(
            source.calls(),
            ["list", "list", "list", "watch@4", "list", "watch@5", "list", "watch@6"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn next_is_cancel_safe_while_backing_off() {
        let source = Scripted::new(vec![Answer::Fail, Answer::List(vec![kv("a/1", 1)], 1)]);
        let mut w = Watcher::new(source.clone(), "a/");
        let start = Instant::now();
        // Give up on `next` in the middle of its wait, twice.
        for _ in 0..2 {
            let r = tokio::time::timeout(Duration::from_millis(50), w.next()).await;
            assert!(r.is_err());
        }
        assert!(matches!(w.next().await, WatcherEvent::Listed { .. }));
        // The wait was not restarted by the cancelled calls.
        assert_eq!(start.elapsed(), BACKOFF_MIN);
        assert_eq!(source.calls(), ["list", "list", "watch@1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_list_given_up_on_is_not_started_again() {
        let source = Arc::new(Scripted {
            list_takes: Duration::from_millis(300),
            answers: Mutex::new(vec![Answer::List(vec![kv("a/1", 1)], 1)].into()),
            calls: Mutex::default(),
        });
        let mut w = Watcher::new(source.clone(), "a/");
        let start = Instant::now();
        // A caller that gives up every 100 ms (a busy select loop) still gets the list.
        let ev = loop {
            if let Ok(ev) = tokio::time::timeout(Duration::from_millis(100), w.next()).await {
                break ev;
            }
        };
        assert!(matches!(ev, WatcherEvent::Listed { revision: 1, .. }));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(source.calls(), ["list", "watch@1"]);
    }
}
