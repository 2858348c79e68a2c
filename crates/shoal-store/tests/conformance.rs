//! The conformance suite every `Store` backend must pass.
//!
//! Each check is written once, as an async function taking a [`Factory`]; the
//! `conformance!` macro instantiates it as a test per backend (`memory::*`, `redb::*`,
//! `etcd::*`: each etcd test starts its own one-member etcd, see `support/etcd_cluster.rs`;
//! without `etcd` installed they print `SKIPPED:`, or fail under `SHOAL_REQUIRE_ALL=1`).
//! Revisions are checked relative to where a fresh store starts (0 for the embedded
//! stores, etcd's current revision for etcd). Backend-specific behaviour (redb durability
//! and locking, etcd limits, quorum loss and fencing) follows at the end, and a property
//! test compares each backend with a plain `BTreeMap` model.

// All of this file is test code, but clippy's `allow-unwrap-in-tests` only covers
// `#[test]` functions, not the shared checks they call.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use proptest::prelude::*;
use shoal_store::etcd::{EtcdConfig, EtcdStore};
use shoal_store::{
    Event, Expect, KeyValue, MemoryStore, RedbStore, Revision, Store, StoreError, StoreExt, Txn,
    TxnOp, WatchConfig,
};
use tempfile::TempDir;

#[path = "support/etcd_cluster.rs"]
mod etcd_cluster;
use etcd_cluster::EtcdCluster;

/// A fresh, empty store and whatever must live as long as it.
struct Fixture {
    store: Arc<dyn Store>,
    /// The revision the empty store is at (0 for the embedded stores).
    base: Revision,
    /// etcd only: the store to compact explicitly (the embedded stores bound their
    /// history by `WatchConfig` instead).
    etcd: Option<EtcdStore>,
    _dir: Option<TempDir>,
    _cluster: Option<EtcdCluster>,
}

impl Fixture {
    /// Makes history before `revision` unavailable where the backend does not do it by
    /// itself (etcd); the embedded stores were configured small enough already.
    async fn compact_before(&self, revision: Revision) {
        if let Some(etcd) = &self.etcd {
            etcd.compact(revision).await.unwrap();
        }
    }
}

type Factory = fn(WatchConfig) -> Fixture;

fn memory(config: WatchConfig) -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::with_watch_config(config)),
        base: 0,
        etcd: None,
        _dir: None,
        _cluster: None,
    }
}

/// The API's read cache over an in-memory store: it must behave as the store itself.
fn cached(config: WatchConfig) -> Fixture {
    let inner = Arc::new(MemoryStore::with_watch_config(config));
    Fixture {
        store: shoal_store::CachedStore::new(inner, &tokio_util::sync::CancellationToken::new()),
        base: 0,
        etcd: None,
        _dir: None,
        _cluster: None,
    }
}

fn redb(config: WatchConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open_with(dir.path().join("state.redb"), config).expect("open redb");
    Fixture {
        store: Arc::new(store),
        base: 0,
        etcd: None,
        _dir: Some(dir),
        _cluster: None,
    }
}

/// A store under `prefix` on the etcd at `endpoints`, from inside a multi-thread runtime.
fn connect_etcd(endpoints: Vec<String>, prefix: String, config: WatchConfig) -> EtcdStore {
    let mut etcd = EtcdConfig::new(endpoints);
    etcd.prefix = prefix;
    etcd.watch_buffer = config.live_buffer;
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(EtcdStore::connect(etcd))
    })
    .expect("connect to the test etcd")
}

/// A one-member etcd of its own (the caller checked that etcd is installed).
fn etcd(config: WatchConfig) -> Fixture {
    let cluster = EtcdCluster::start(1);
    let store = connect_etcd(cluster.endpoints(), "/shoal-test/".into(), config);
    etcd_fixture(store, Some(cluster))
}

fn etcd_fixture(store: EtcdStore, cluster: Option<EtcdCluster>) -> Fixture {
    let base = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(store.revision())
    })
    .unwrap();
    Fixture {
        store: Arc::new(store.clone()),
        base,
        etcd: Some(store),
        _dir: None,
        _cluster: cluster,
    }
}

fn default_store(factory: impl Fn(WatchConfig) -> Fixture) -> Fixture {
    factory(WatchConfig::default())
}

/// A generous deadline: tests wait for outcomes, they do not measure speed.
const DEADLINE: Duration = Duration::from_secs(20);

async fn next(watch: &mut BoxStream<'static, Result<Event, StoreError>>) -> Event {
    tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("an event before the deadline")
        .expect("the stream to go on")
        .expect("an event, not an error")
}

async fn next_err(watch: &mut BoxStream<'static, Result<Event, StoreError>>) -> StoreError {
    match tokio::time::timeout(DEADLINE, watch.next()).await {
        Ok(Some(Err(err))) => err,
        other => panic!("expected an error from the watch, got {other:?}"),
    }
}

fn put_op(key: &str, value: &str, expect: Expect) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.into(),
        expect,
    }
}

fn delete_op(key: &str, expect: Expect) -> TxnOp {
    TxnOp::Delete {
        key: key.into(),
        expect,
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

fn is_conflict(result: Result<Revision, StoreError>, on: &str) -> bool {
    matches!(result, Err(StoreError::Conflict { key }) if key == on)
}

async fn get_list_and_prefix_isolation(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    assert_eq!(s.get("a/1").await.unwrap(), None);
    assert_eq!(s.list("").await.unwrap(), (vec![], f.base));

    for key in ["b/1", "a/2", "ab", "a/1", "a"] {
        s.put(key, format!("value of {key}")).await.unwrap();
    }
    let a1 = s.get("a/1").await.unwrap().expect("a/1 exists");
    assert_eq!(a1.value, b"value of a/1");
    assert_eq!(s.get("a/3").await.unwrap(), None);

    let (kvs, at) = s.list("a/").await.unwrap();
    assert_eq!(keys(&kvs), ["a/1", "a/2"], "a/ must not see a or ab");
    assert_eq!(at, s.revision().await.unwrap());
    let (kvs, _) = s.list("a").await.unwrap();
    assert_eq!(keys(&kvs), ["a", "a/1", "a/2", "ab"]);
    let (kvs, _) = s.list("").await.unwrap();
    assert_eq!(keys(&kvs), ["a", "a/1", "a/2", "ab", "b/1"]);
    let (kvs, _) = s.list("c").await.unwrap();
    assert!(kvs.is_empty());
    // Values come back exactly, including non-UTF-8 bytes.
    s.put("bin", vec![0u8, 255, 10]).await.unwrap();
    assert_eq!(s.get("bin").await.unwrap().unwrap().value, [0u8, 255, 10]);
}

async fn list_part_pages_through_a_prefix(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    for key in ["a", "a/01", "a/02", "a/03", "a/05", "ab", "b/01"] {
        s.put(key, format!("value of {key}")).await.unwrap();
    }
    let part = |from: &'static str, skip, limit| async move {
        let (kvs, total, at) = s.list_part("a/", from, skip, limit).await.unwrap();
        (
            keys(&kvs)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
            total,
            at,
        )
    };
    let (page, total, at) = part("", 1, 2).await;
    assert_eq!(
        (page, total),
        (vec!["a/02".to_owned(), "a/03".to_owned()], 4)
    );
    assert_eq!(at, s.revision().await.unwrap());
    assert_eq!(part("", 3, 10).await.0, ["a/05"]);
    assert!(part("", 4, 10).await.0.is_empty(), "past the end");
    // From a key on: the ones at or after it, whether or not it exists.
    assert_eq!(part("a/03", 0, 10).await.0, ["a/03", "a/05"]);
    assert_eq!(part("a/04", 0, 1).await.0, ["a/05"]);
    assert!(
        part("a/06", 0, 10).await.0.is_empty(),
        "never past the prefix"
    );
    assert_eq!(
        part("0", 0, 1).await.0,
        ["a/01"],
        "a start before the prefix"
    );
    let (kvs, total, _) = s.list_part("a/02", "", 0, 5).await.unwrap();
    assert_eq!((keys(&kvs), total), (vec!["a/02"], 1));
    assert_eq!(kvs[0].value, b"value of a/02");
}

async fn revisions_strictly_increase(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    assert_eq!(s.revision().await.unwrap(), f.base);
    let mut last = f.base;
    for i in 0..20 {
        let rev = s.put(format!("k{}", i % 3), "v").await.unwrap();
        assert!(rev > last, "revision {rev} after {last}");
        assert_eq!(s.revision().await.unwrap(), rev);
        let (_, listed_at) = s.list("k").await.unwrap();
        assert_eq!(listed_at, rev);
        last = rev;
    }
    // A multi-operation transaction takes one revision for all its operations.
    let rev = s
        .txn(vec![
            put_op("m/1", "x", Expect::Any),
            put_op("m/2", "y", Expect::Any),
        ])
        .await
        .unwrap();
    assert!(rev > last);
    let (kvs, _) = s.list("m/").await.unwrap();
    assert!(kvs.iter().all(|kv| kv.mod_revision == rev));
}

async fn create_revision_and_mod_revision(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    let created = s.create("k", "1").await.unwrap();
    let updated = s.put("k", "2").await.unwrap();
    let kv = s.get("k").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.value.as_slice()),
        (created, updated, b"2".as_slice())
    );
    s.delete("k").await.unwrap();
    let recreated = s.create("k", "3").await.unwrap();
    let kv = s.get("k").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (recreated, recreated)
    );
    assert!(recreated > updated);
}

async fn every_expectation(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    let created = s.create("k", "1").await.unwrap();
    assert!(is_conflict(s.create("k", "again").await, "k"));
    assert!(is_conflict(
        s.put_if("missing", "v", Expect::Present).await,
        "missing"
    ));
    assert!(is_conflict(
        s.put_if("missing", "v", Expect::ModRevision(created)).await,
        "missing"
    ));
    assert!(is_conflict(
        s.put_if("k", "v", Expect::ModRevision(created + 100)).await,
        "k"
    ));
    assert_eq!(
        s.revision().await.unwrap(),
        created,
        "conflicts take no revision"
    );
    assert_eq!(s.get("k").await.unwrap().unwrap().value, b"1");
    assert_eq!(s.get("missing").await.unwrap(), None);

    let r2 = s
        .put_if("k", "2", Expect::ModRevision(created))
        .await
        .unwrap();
    let r3 = s.put_if("k", "3", Expect::Present).await.unwrap();
    let r4 = s.put_if("k", "4", Expect::Any).await.unwrap();
    assert!(created < r2 && r2 < r3 && r3 < r4);
    assert!(is_conflict(
        s.txn(vec![delete_op("k", Expect::ModRevision(r3))]).await,
        "k"
    ));
    assert!(is_conflict(
        s.txn(vec![delete_op("k", Expect::Absent)]).await,
        "k"
    ));
    s.txn(vec![delete_op("k", Expect::ModRevision(r4))])
        .await
        .unwrap();
    assert_eq!(s.get("k").await.unwrap(), None);
}

async fn conflict_is_atomic(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    let x = s.put("x", "old").await.unwrap();
    s.put("y", "old").await.unwrap();
    let before = s.list("").await.unwrap();
    let mut watch = s.watch("", before.1).await.unwrap();

    // The failing precondition is last: nothing before it may be applied either.
    let result = s
        .txn(vec![
            put_op("x", "new", Expect::ModRevision(x)),
            delete_op("y", Expect::Present),
            put_op("z", "new", Expect::Absent),
            put_op("y", "new", Expect::Absent),
        ])
        .await;
    assert!(is_conflict(result, "y"));
    assert_eq!(
        s.list("").await.unwrap(),
        before,
        "a failed txn changes nothing"
    );

    // The next event a watcher sees is the next successful write, not a partial txn.
    let rev = s.put("w", "after").await.unwrap();
    let event = next(&mut watch).await;
    assert_eq!((event.key(), event.revision()), ("w", rev));
    assert_eq!(rev, before.1 + 1, "the conflicting txn took no revision");
}

async fn delete_semantics(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    s.put("d/1", "v").await.unwrap();
    let last = s.put("d/2", "v").await.unwrap();

    // Deleting an absent key changes nothing and takes no revision.
    assert_eq!(s.delete("d/none").await.unwrap(), last);
    assert_eq!(
        s.txn(vec![]).await.unwrap(),
        last,
        "an empty txn is a no-op"
    );
    assert!(is_conflict(
        s.txn(vec![delete_op("d/none", Expect::Present)]).await,
        "d/none"
    ));

    let mut watch = s.watch("d/", last).await.unwrap();
    let deleted = s.delete("d/1").await.unwrap();
    assert!(deleted > last);
    assert_eq!(s.get("d/1").await.unwrap(), None);
    let (kvs, at) = s.list("d/").await.unwrap();
    assert_eq!((keys(&kvs), at), (vec!["d/2"], deleted));
    assert_eq!(
        next(&mut watch).await,
        Event::Delete {
            key: "d/1".into(),
            revision: deleted
        }
    );

    // The last operation on a key wins: put then delete of one key leaves it absent, and
    // delete then put is an overwrite (the key keeps its create revision), as on etcd.
    let rev = s
        .txn(vec![
            put_op("d/3", "v", Expect::Absent),
            delete_op("d/3", Expect::Absent),
            delete_op("d/2", Expect::Present),
            put_op("d/2", "again", Expect::Present),
        ])
        .await
        .unwrap();
    assert_eq!(s.get("d/3").await.unwrap(), None);
    let d2 = s.get("d/2").await.unwrap().unwrap();
    assert_eq!(d2.mod_revision, rev);
    assert!(d2.create_revision < rev);
    assert_eq!(d2.value, b"again");
}

async fn watch_replays_then_follows(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    let r1 = s.put("w/a", "1").await.unwrap();
    let r2 = s.put("w/b", "2").await.unwrap();
    let r3 = s.delete("w/a").await.unwrap();

    let mut watch = s.watch("w/", r1).await.unwrap();
    let e2 = next(&mut watch).await;
    let Event::Put(kv) = &e2 else {
        panic!("expected a put, got {e2:?}")
    };
    assert_eq!(
        (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision),
        ("w/b", b"2".as_slice(), r2)
    );
    assert_eq!(
        next(&mut watch).await,
        Event::Delete {
            key: "w/a".into(),
            revision: r3
        }
    );

    // Live changes follow in revision order, each exactly once.
    let mut written = Vec::new();
    for i in 0..50 {
        written.push(s.put(format!("w/{}", i % 7), i.to_string()).await.unwrap());
    }
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen.push(next(&mut watch).await.revision());
    }
    assert_eq!(seen, written);
    let quiet = tokio::time::timeout(Duration::from_millis(100), watch.next()).await;
    assert!(quiet.is_err(), "no duplicates after the last event");

    // Several watchers from different revisions see consistent suffixes.
    let mut from_r2 = s.watch("w/", r2).await.unwrap();
    assert_eq!(next(&mut from_r2).await.revision(), r3);
}

async fn watch_filters_by_prefix(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    let start = s.revision().await.unwrap();
    let mut watch = s.watch("vm/1/", start).await.unwrap();
    s.put("vm/10/status", "x").await.unwrap();
    let rev = s
        .txn(vec![
            put_op("vm/2/status", "x", Expect::Any),
            put_op("vm/1/status", "running", Expect::Any),
            put_op("vm/1/health", "ok", Expect::Any),
        ])
        .await
        .unwrap();
    s.put("other", "x").await.unwrap();
    let last = s.delete("vm/1/health").await.unwrap();

    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(next(&mut watch).await);
    }
    let seen: Vec<_> = events.iter().map(|e| (e.key(), e.revision())).collect();
    assert_eq!(
        seen,
        [
            ("vm/1/status", rev),
            ("vm/1/health", rev),
            ("vm/1/health", last)
        ]
    );
}

async fn watch_from_now_waits_for_changes(factory: Factory) {
    let f = default_store(factory);
    let s = &f.store;
    // Both on an empty store and after some writes.
    for round in 0..2 {
        let now = s.revision().await.unwrap();
        let mut watch = s.watch("", now).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(100), watch.next()).await;
        assert!(quiet.is_err(), "round {round}: nothing happened yet");
        let rev = s.put("k", "v").await.unwrap();
        assert_eq!(next(&mut watch).await.revision(), rev);
    }
}

async fn watch_too_old_revision_is_compacted(factory: Factory) {
    let f = factory(WatchConfig {
        history: 4,
        live_buffer: 64,
    });
    let s = &f.store;
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(s.put(format!("k{i}"), "v").await.unwrap());
    }
    // The last four transactions are kept.
    f.compact_before(revs[6]).await;
    let mut watch = s.watch("", revs[5]).await.unwrap();
    for &rev in &revs[6..] {
        assert_eq!(next(&mut watch).await.revision(), rev);
    }
    let mut watch = s.watch("", revs[2]).await.unwrap();
    let err = next_err(&mut watch).await;
    assert!(
        matches!(err, StoreError::Compacted { requested, .. } if requested == revs[2]),
        "{err:?}"
    );
    assert!(
        watch.next().await.is_none(),
        "the stream ends after Compacted"
    );
    let mut watch = s.watch("", 0).await.unwrap();
    assert!(matches!(
        next_err(&mut watch).await,
        StoreError::Compacted { .. }
    ));
}

async fn lagging_watcher_is_compacted(factory: Factory) {
    let f = factory(WatchConfig {
        history: 1000,
        live_buffer: 4,
    });
    let s = &f.store;
    let now = s.revision().await.unwrap();
    let mut watch = s.watch("", now).await.unwrap();
    for i in 0..20 {
        s.put(format!("k{i}"), "v").await.unwrap();
    }
    let err = next_err(&mut watch).await;
    assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");
    assert!(watch.next().await.is_none());
    // Listing again and watching from there works.
    let (_, at) = s.list("").await.unwrap();
    let mut watch = s.watch("", at).await.unwrap();
    let rev = s.put("again", "v").await.unwrap();
    assert_eq!(next(&mut watch).await.revision(), rev);
}

async fn concurrent_writers_lose_nothing(factory: Factory) {
    const TASKS: usize = 8;
    const TXNS: usize = 200;
    let f = default_store(factory);
    let start = f.store.revision().await.unwrap();
    let mut watch = f.store.watch("c/", start).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..TXNS {
                revs.push(store.put(format!("c/{t}/{i:03}"), "v").await.unwrap());
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let revs = task.await.unwrap();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "each writer sees order"
        );
        all.extend(revs);
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(unique.len(), TASKS * TXNS, "every txn has its own revision");
    let (kvs, at) = f.store.list("c/").await.unwrap();
    assert_eq!(kvs.len(), TASKS * TXNS);
    assert_eq!(at, start + (TASKS * TXNS) as Revision);
    let mut seen = Vec::new();
    for _ in 0..TASKS * TXNS {
        seen.push(next(&mut watch).await.revision());
    }
    all.sort_unstable();
    assert_eq!(
        seen, all,
        "the watch sees every write once, in revision order"
    );
}

async fn concurrent_compare_and_swap_counts_exactly(factory: Factory) {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 20;
    let f = default_store(factory);
    f.store.create("counter", "0").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let kv = store.get("counter").await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    let next = (n + 1).to_string();
                    match store
                        .put_if("counter", next, Expect::ModRevision(kv.mod_revision))
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(err) => panic!("unexpected error {err}"),
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kv = f.store.get("counter").await.unwrap().unwrap();
    assert_eq!(kv.value, (TASKS * INCREMENTS).to_string().as_bytes());
}

async fn ext_works_on_dyn_and_refs(factory: Factory) {
    let f = default_store(factory);
    let by_ref: &dyn Store = f.store.as_ref();
    let rev = by_ref.put("e", b"1".as_slice()).await.unwrap();
    let arc: Arc<dyn Store> = f.store.clone();
    assert!(arc.create(String::from("e"), "2").await.is_err());
    assert_eq!(f.store.get("e").await.unwrap().unwrap().mod_revision, rev);
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if !super::etcd_or_skip(concat!("etcd::", stringify!($check))) {
                        return;
                    }
                    super::$check(super::etcd).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::memory).await;
                }
            )*
        }
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::redb).await;
                }
            )*
        }
        mod cached {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::cached).await;
                }
            )*
        }
    };
}

conformance!(
    get_list_and_prefix_isolation,
    list_part_pages_through_a_prefix,
    revisions_strictly_increase,
    create_revision_and_mod_revision,
    every_expectation,
    conflict_is_atomic,
    delete_semantics,
    watch_replays_then_follows,
    watch_filters_by_prefix,
    watch_from_now_waits_for_changes,
    watch_too_old_revision_is_compacted,
    lagging_watcher_is_compacted,
    concurrent_writers_lose_nothing,
    concurrent_compare_and_swap_counts_exactly,
    ext_works_on_dyn_and_refs,
);

// ---- the read cache ----------------------------------------------------------------

/// Every write acknowledged through the cache is seen by the next read, at once, from
/// any task; and what is read is a whole transaction or none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_see_every_acknowledged_write_and_whole_transactions() {
    let inner = Arc::new(MemoryStore::new());
    let cache = shoal_store::CachedStore::new(inner, &tokio_util::sync::CancellationToken::new());
    let store: Arc<dyn Store> = cache.clone();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let (a, b) = (format!("pair/{t}/{i}/a"), format!("pair/{t}/{i}/b"));
                let value = format!("{t}-{i}");
                store
                    .txn(vec![
                        TxnOp::Put {
                            key: a.clone(),
                            value: value.clone().into_bytes(),
                            expect: Expect::Any,
                        },
                        TxnOp::Put {
                            key: b.clone(),
                            value: value.clone().into_bytes(),
                            expect: Expect::Any,
                        },
                    ])
                    .await
                    .unwrap();
                // Read-your-writes, with no pause at all.
                let got = store.get(&a).await.unwrap().expect("own write visible");
                assert_eq!(got.value, value.as_bytes());
                // Whole transactions: every listed pair is complete.
                let (items, _) = store.list("pair/").await.unwrap();
                let keys: std::collections::BTreeSet<_> =
                    items.iter().map(|kv| kv.key.clone()).collect();
                for k in &keys {
                    if let Some(stem) = k.strip_suffix("/a") {
                        assert!(
                            keys.contains(&format!("{stem}/b")),
                            "half a transaction: {k}"
                        );
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.list("pair/").await.unwrap().0.len(), 4 * 200 * 2);
    // And they were answered from memory, not by falling back to the store.
    let (memory, fallback) = cache.reads();
    assert!(
        memory >= 1500 && fallback <= 10,
        "from memory {memory}, from the store {fallback}"
    );
}

// ---- redb only -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_records_and_revision_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("state.redb");
    let store = RedbStore::open(&path).unwrap();
    let created = store.create("vm/1", "creating").await.unwrap();
    let updated = store.put("vm/1", "running").await.unwrap();
    store.put("vm/2", "running").await.unwrap();
    let last = store.delete("vm/2").await.unwrap();
    // No clean close: the store is simply dropped, as on a crash of the process
    // (every answered write must already be on disk).
    drop(store);

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), last);
    let kv = store.get("vm/1").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (b"running".as_slice(), created, updated)
    );
    assert_eq!(store.get("vm/2").await.unwrap(), None);
    assert_eq!(store.list("").await.unwrap().1, last);

    // Watch history starts empty: older revisions are compacted, now waits.
    let mut old = store.watch("", created).await.unwrap();
    assert!(matches!(
        next_err(&mut old).await,
        StoreError::Compacted { .. }
    ));
    let mut watch = store.watch("", last).await.unwrap();
    let next_rev = store.put("vm/3", "creating").await.unwrap();
    assert_eq!(next_rev, last + 1, "revisions continue after a restart");
    assert_eq!(next(&mut watch).await.revision(), next_rev);
    store.close().await;

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), next_rev);
    assert_eq!(store.list("vm/").await.unwrap().0.len(), 2);
}

/// Set in the child process of [`redb_acknowledged_writes_survive_abort`].
const CRASH_CHILD: &str = "SHOAL_STORE_CRASH_CHILD";
const CRASH_WRITES: u64 = 200;

/// A harder crash than a drop: a child process writes, then aborts (no destructors,
/// no clean close of the database). Every write it saw acknowledged must be there.
#[test]
fn redb_acknowledged_writes_survive_abort() {
    if let Ok(path) = std::env::var(CRASH_CHILD) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = Arc::new(RedbStore::open(&path).unwrap());
            let mut tasks = Vec::new();
            for w in 0..4 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..CRASH_WRITES / 4 {
                        store.put(format!("k/{w}/{i}"), "v").await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        std::process::abort();
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "redb_acknowledged_writes_survive_abort",
            "--exact",
            "--nocapture",
        ])
        .env(CRASH_CHILD, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = RedbStore::open(&path).expect("reopens after a crash");
        assert_eq!(store.revision().await.unwrap(), CRASH_WRITES);
        let (kvs, at) = store.list("k/").await.unwrap();
        assert_eq!((kvs.len() as u64, at), (CRASH_WRITES, CRASH_WRITES));
        assert_eq!(store.put("after", "v").await.unwrap(), CRASH_WRITES + 1);
    });
}

#[tokio::test]
async fn redb_refuses_a_locked_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let first = RedbStore::open(&path).unwrap();
    let err = RedbStore::open(&path).expect_err("the file is locked");
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let mut messages = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = cause {
        messages.push(e.to_string());
        cause = e.source();
    }
    let all = messages.join(": ");
    assert!(
        all.contains("another shoal may be using this data directory"),
        "{all}"
    );
    first.close().await;
    RedbStore::open(&path).expect("unlocked after close");
}

// ---- model-based property test ---------------------------------------------------

const KEYS: [&str; 5] = ["a", "a/1", "a/2", "ab", "b/1"];

#[derive(Debug, Clone)]
enum OpSpec {
    Put {
        key: usize,
        value: u8,
        expect: ExpectSpec,
    },
    Delete {
        key: usize,
        expect: ExpectSpec,
    },
}

#[derive(Debug, Clone, Copy)]
enum ExpectSpec {
    Any,
    Absent,
    Present,
    /// The key's actual mod revision (if it has one), else this one.
    Current(Revision),
    Exactly(Revision),
}

fn expect_spec() -> impl Strategy<Value = ExpectSpec> {
    prop_oneof![
        Just(ExpectSpec::Any),
        Just(ExpectSpec::Absent),
        Just(ExpectSpec::Present),
        (0..30u64).prop_map(ExpectSpec::Current),
        (0..30u64).prop_map(ExpectSpec::Exactly),
    ]
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        3 => (0..KEYS.len(), any::<u8>(), expect_spec())
            .prop_map(|(key, value, expect)| OpSpec::Put { key, value, expect }),
        1 => (0..KEYS.len(), expect_spec()).prop_map(|(key, expect)| OpSpec::Delete { key, expect }),
    ]
}

fn txns_spec() -> impl Strategy<Value = Vec<Vec<OpSpec>>> {
    prop::collection::vec(prop::collection::vec(op_spec(), 0..4), 1..25)
}

/// The specification: a map and a counter.
#[derive(Debug, Default)]
struct Model {
    map: BTreeMap<String, KeyValue>,
    revision: Revision,
    /// Where the store started (revisions in the specs are relative to it).
    base: Revision,
}

impl Model {
    fn expect(&self, key: &str, spec: ExpectSpec) -> Expect {
        match spec {
            ExpectSpec::Any => Expect::Any,
            ExpectSpec::Absent => Expect::Absent,
            ExpectSpec::Present => Expect::Present,
            ExpectSpec::Current(fallback) => Expect::ModRevision(
                self.map
                    .get(key)
                    .map_or(self.base + fallback, |kv| kv.mod_revision),
            ),
            ExpectSpec::Exactly(rev) => Expect::ModRevision(self.base + rev),
        }
    }

    fn txn(&self, specs: &[OpSpec]) -> Txn {
        specs
            .iter()
            .map(|spec| match *spec {
                OpSpec::Put { key, value, expect } => TxnOp::Put {
                    key: KEYS[key].into(),
                    value: vec![value],
                    expect: self.expect(KEYS[key], expect),
                },
                OpSpec::Delete { key, expect } => TxnOp::Delete {
                    key: KEYS[key].into(),
                    expect: self.expect(KEYS[key], expect),
                },
            })
            .collect()
    }

    fn apply(&mut self, txn: &Txn) -> Result<Revision, String> {
        for op in txn {
            let (key, expect) = match op {
                TxnOp::Put { key, expect, .. } | TxnOp::Delete { key, expect } => (key, *expect),
            };
            let current = self.map.get(key).map(|kv| kv.mod_revision);
            let ok = match expect {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::Present => current.is_some(),
                Expect::ModRevision(rev) => current == Some(rev),
            };
            if !ok {
                return Err(key.clone());
            }
        }
        let rev = self.revision + 1;
        let mut changed = false;
        // Only the last operation on a key takes effect (as etcd, which refuses a key twice).
        let last = |i: usize, key: &String| {
            !txn[i + 1..].iter().any(|later| match later {
                TxnOp::Put { key: k, .. } | TxnOp::Delete { key: k, .. } => k == key,
            })
        };
        for (i, op) in txn.iter().enumerate() {
            let (TxnOp::Put { key, .. } | TxnOp::Delete { key, .. }) = op;
            if !last(i, key) {
                continue;
            }
            match op {
                TxnOp::Put { key, value, .. } => {
                    let create_revision = self.map.get(key).map_or(rev, |kv| kv.create_revision);
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: rev,
                    };
                    self.map.insert(key.clone(), kv);
                    changed = true;
                }
                TxnOp::Delete { key, .. } => changed |= self.map.remove(key).is_some(),
            }
        }
        if changed {
            self.revision = rev;
        }
        Ok(self.revision)
    }

    fn list(&self, prefix: &str) -> Vec<KeyValue> {
        self.map
            .values()
            .filter(|kv| kv.key.starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn matches_model(
    factory: impl Fn(WatchConfig) -> Fixture,
    specs: Vec<Vec<OpSpec>>,
) -> Result<(), TestCaseError> {
    let f = default_store(factory);
    let s = &f.store;
    let mut watch = s.watch("", f.base).await.unwrap();
    let mut model = Model {
        revision: f.base,
        base: f.base,
        ..Model::default()
    };
    for spec in &specs {
        let txn = model.txn(spec);
        let expected = model.apply(&txn);
        let got = s.txn(txn.clone()).await;
        match (&expected, got) {
            (Ok(want), Ok(got)) => prop_assert_eq!(*want, got, "txn {:?}", txn),
            (Err(want), Err(StoreError::Conflict { key })) => prop_assert_eq!(want, &key),
            (want, got) => prop_assert!(false, "txn {:?}: want {:?}, got {:?}", txn, want, got),
        }
        for prefix in ["", "a", "a/", "b", "c"] {
            let (kvs, at) = s.list(prefix).await.unwrap();
            prop_assert_eq!(&kvs, &model.list(prefix));
            prop_assert_eq!(at, model.revision);
        }
        for key in KEYS {
            prop_assert_eq!(s.get(key).await.unwrap(), model.map.get(key).cloned());
        }
    }
    // Replaying the watch from the beginning rebuilds the same state. A marker write
    // (outside the model's keys) shows where the history ends.
    s.put("zz/end", "").await.unwrap();
    let mut replayed = BTreeMap::new();
    loop {
        match next(&mut watch).await {
            Event::Put(kv) if kv.key == "zz/end" => break,
            Event::Put(kv) => {
                replayed.insert(kv.key.clone(), kv);
            }
            Event::Delete { key, .. } => {
                replayed.remove(&key);
            }
        }
    }
    prop_assert_eq!(replayed, model.map);
    Ok(())
}

fn run_model(
    factory: impl Fn(WatchConfig) -> Fixture,
    specs: Vec<Vec<OpSpec>>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(matches_model(factory, specs))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Integration tests have no lib.rs beside them to persist failures next to.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_matches_model(specs in txns_spec()) {
        run_model(memory, specs)?;
    }

    #[test]
    fn redb_matches_model(specs in txns_spec()) {
        run_model(redb, specs)?;
    }
}

/// One etcd for every case, each case under a prefix of its own.
#[test]
fn etcd_matches_model() {
    let Some(cluster) = EtcdCluster::start_or_skip("etcd_matches_model", 1) else {
        return;
    };
    let endpoints = cluster.endpoints();
    let case = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&txns_spec(), |specs| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let factory = |config: WatchConfig| {
            let store = connect_etcd(endpoints.clone(), format!("/model-{n}/"), config);
            etcd_fixture(store, None)
        };
        run_model(factory, specs)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---- etcd only -------------------------------------------------------------------

/// Whether the etcd tests can run; prints `SKIPPED:` (or panics under
/// `SHOAL_REQUIRE_ALL=1`) when they cannot.
fn etcd_or_skip(test: &str) -> bool {
    if etcd_cluster::etcd_installed() {
        return true;
    }
    EtcdCluster::start_or_skip(test, 1).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_refuses_what_is_over_its_limits_naming_it() {
    if !etcd_or_skip("etcd_refuses_what_is_over_its_limits_naming_it") {
        return;
    }
    let f = etcd(WatchConfig::default());
    let s = &f.store;
    let big = vec![b'x'; 2 << 20];
    let err = s.put("instance/big", big).await.expect_err("over 1.5 MiB");
    assert!(
        matches!(&err, StoreError::TooLarge { what, .. } if what.contains("instance/big")),
        "{err:?}"
    );
    let many: Txn = (0..200)
        .map(|i| put_op(&format!("m/{i}"), "v", Expect::Absent))
        .collect();
    let err = s.txn(many).await.expect_err("over 128 operations");
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert_eq!(s.list("").await.unwrap().0, vec![], "nothing was applied");
    // Exactly at the limit works, atomically.
    let at_limit: Txn = (0..128)
        .map(|i| put_op(&format!("m/{i:03}"), "v", Expect::Absent))
        .collect();
    let rev = s.txn(at_limit).await.unwrap();
    let (kvs, _) = s.list("m/").await.unwrap();
    assert_eq!(kvs.len(), 128);
    assert!(kvs.iter().all(|kv| kv.mod_revision == rev));
}

/// Three members: losing one changes nothing; losing two makes writes `Unavailable`
/// (in bounded time, not a hang) while reads still answer; bringing them back makes
/// writes work again on the same client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_quorum_loss_fails_writes_keeps_reads_and_recovers() {
    let Some(mut cluster) = EtcdCluster::start_or_skip("etcd_quorum_loss", 3) else {
        return;
    };
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(config).await.unwrap();
    store.put("k", "1").await.unwrap();

    cluster.kill(2);
    // A write in flight while the etcd leader changes may time out once; then writes go on.
    put_eventually(&store, "2").await;

    cluster.kill(1);
    let started = tokio::time::Instant::now();
    let err = store.put("k", "3").await.expect_err("no quorum: no write");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed, not hung"
    );
    let read = tokio::time::timeout(DEADLINE, store.get("k"))
        .await
        .unwrap();
    assert_eq!(read.unwrap().unwrap().value, b"2", "reads still answer");
    // The store now knows etcd has no quorum: reads go to a member's copy at once, not
    // one timeout each (ten reads took ten timeouts, 20 s, before it remembered).
    let burst = tokio::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(store.get("k").await.unwrap().unwrap().value, b"2");
    }
    assert!(
        burst.elapsed() < Duration::from_secs(4),
        "ten reads without quorum took {:?}",
        burst.elapsed()
    );
    assert!(!store.healthy().await);

    cluster.restart(1);
    cluster.restart(2);
    put_eventually(&store, "4").await;
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"4");
}

/// Puts `k` = `value`, retrying `Unavailable` until the deadline.
async fn put_eventually(store: &EtcdStore, value: &str) {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match store.put("k", value).await {
            Ok(_) => return,
            Err(StoreError::Unavailable(e)) if tokio::time::Instant::now() < until => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the write of {value} did not succeed: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_at_start_names_the_endpoints() {
    let mut config = EtcdConfig::new(vec!["127.0.0.1:1".into(), "127.0.0.1:9".into()]);
    config.timeout = Duration::from_secs(2);
    let err = EtcdStore::connect(config)
        .await
        .expect_err("nothing listens");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1,127.0.0.1:9"), "{text}");
}

/// A deposed leader's write fails in etcd: A leads and writes; its lease is revoked
/// behind its back (as if it had stalled past the TTL); B leads; A's next fenced write is
/// refused with `NotLeader` and ends A's term, and the history holds no write of A's
/// after B's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_fencing_refuses_a_deposed_leaders_writes() {
    use shoal_store::etcd::{Elector, Member};
    use tokio_util::sync::CancellationToken;
    let Some(cluster) = EtcdCluster::start_or_skip("etcd_fencing", 1) else {
        return;
    };
    let connect = || EtcdStore::connect(EtcdConfig::new(cluster.endpoints()));
    let shutdown = CancellationToken::new();
    let member = |name: &str| Member {
        name: name.into(),
        url: format!("http://{name}"),
    };
    let ttl = Duration::from_secs(2);
    let a = Elector::new(connect().await.unwrap(), member("a"), ttl, shutdown.clone());
    let b = Elector::new(connect().await.unwrap(), member("b"), ttl, shutdown.clone());
    let now = || "2026-01-01T00:00:00Z".to_string();
    let term_a = a.campaign(now).await.expect("a leads");
    term_a
        .store
        .put("plan", "a1")
        .await
        .expect("the leader writes");

    let b_task = tokio::spawn(async move {
        let term = b.campaign(now).await.expect("b leads");
        let rev = term.store.put("plan", "b1").await.unwrap();
        (b, term, rev)
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!b_task.is_finished(), "only one leads at a time");
    // Depose A behind its back: drop the leader key (as its lease's expiry would).
    let plain = connect().await.unwrap();
    let mut raw = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    raw.delete("/shoal/leader", None).await.unwrap();
    let (b, term_b, b_first) = tokio::time::timeout(DEADLINE, b_task)
        .await
        .unwrap()
        .unwrap();

    let err = term_a.store.put("plan", "a2").await.expect_err("fenced");
    assert!(matches!(err, StoreError::NotLeader), "{err:?}");
    assert!(term_a.lost.is_cancelled(), "a refused write ends the term");
    let plan = plain.get("plan").await.unwrap().unwrap();
    assert_eq!(
        (plan.value.as_slice(), plan.mod_revision),
        (b"b1".as_slice(), b_first)
    );
    // B's status shows B.
    let status = b.status().await;
    assert_eq!(status.leader.map(|l| l.name).as_deref(), Some("b"));
    assert!(status.healthy);
    b.resign(&term_b).await;
    shutdown.cancel();
}
