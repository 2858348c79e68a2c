//! [`RedbStore`]: the embedded, durable backend (one redb file), and the default.
//!
//! Layout: table `kv` maps a key to `(create_revision, mod_revision, value)`; table
//! `meta` holds the current revision under `"revision"`, so a reopened store continues
//! where it stopped. Watch history lives only in memory (a [`WatchHub`]): after a
//! restart it starts empty, and a watch from an older revision gets `Compacted`.
//!
//! Writes go through one writer thread that does *group commit*: callers send their
//! transactions over a channel; the writer takes every transaction queued so far,
//! applies each in order in ONE redb write transaction (each with its own precondition
//! check and its own revision, so a conflict fails only that caller), commits durably
//! (one fsync for the whole group), publishes the events, then answers every caller.
//! While it waits on the disk the next group queues up, so throughput grows with the
//! number of concurrent writers instead of being capped at one fsync per transaction.
//!
//! Reads open a redb read transaction (a consistent snapshot) on tokio's blocking pool,
//! so they never stall the async runtime and never wait for the writer.

// redb's own functions return its 160-byte `redb::Error` unboxed; this module passes it
// on the same way on the (cold) error path rather than boxing at every `?`.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use redb::{Database, DatabaseError, Durability, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::apply::{self, Applied, Revisions, TxnTarget};
use crate::watch::{WatchConfig, WatchHub};
use crate::{Event, KeyValue, Result, Revision, Store, StoreError, Txn};

/// Key -> (create_revision, mod_revision, value).
const KV: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("kv");
/// Store-wide metadata; today only [`REVISION_KEY`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// The most transactions one group commit takes; later ones wait for the next group.
const MAX_GROUP: usize = 4096;
/// How many transactions may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 8192;

/// How long opening waits for a locked database file before giving up. A shoal that
/// was just `kill -9`ed holds its lock until the kernel has finished tearing the process
/// down (milliseconds for a large one), so a restart right after the kill waits for it
/// rather than failing; a shoal that is really running keeps it and is reported.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// What can go wrong in the redb backend; reaches callers inside
/// [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum RedbStoreError {
    #[error(
        "Database {path} is locked: another shoal may be using this data directory; stop it \
         or choose another data directory"
    )]
    Locked {
        path: PathBuf,
        #[source]
        source: DatabaseError,
    },
    #[error("Cannot open database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: DatabaseError,
    },
    #[error("Cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot start the store writer thread")]
    SpawnWriter(#[source] std::io::Error),
    #[error("Cannot read the database")]
    Read(#[source] redb::Error),
    #[error("Cannot initialize the database")]
    Init(#[source] redb::Error),
    /// Shared by every transaction of the failed group, hence the `Arc`.
    #[error("Cannot commit to the database")]
    Commit(#[source] Arc<redb::Error>),
    #[error("Store reader task failed")]
    Reader(#[source] tokio::task::JoinError),
}

impl From<RedbStoreError> for StoreError {
    fn from(err: RedbStoreError) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

/// Opens or creates the database at `path`, retrying for up to `wait` while another
/// process holds its lock.
fn create_waiting(path: &Path, wait: Duration) -> std::result::Result<Database, DatabaseError> {
    const PAUSE: Duration = Duration::from_millis(20);
    let mut tries_left = wait.as_millis() / PAUSE.as_millis();
    loop {
        match Database::create(path) {
            Err(DatabaseError::DatabaseAlreadyOpen) if tries_left > 0 => {
                if tries_left == wait.as_millis() / PAUSE.as_millis() {
                    tracing::warn!(
                        path = %path.display(),
                        wait_seconds = wait.as_secs(),
                        "The database is locked; waiting in case the shoal that held it is still exiting"
                    );
                }
                tries_left -= 1;
                std::thread::sleep(PAUSE);
            }
            result => return result,
        }
    }
}

/// A durable [`Store`] in one redb file, with group commit.
///
/// Dropping it stops the writer thread after it has committed every transaction already
/// queued, and waits for that (at most one group commit) so the file is unlocked when
/// the drop returns; [`RedbStore::close`] does the same without blocking the runtime.
#[derive(Debug)]
pub struct RedbStore {
    db: Arc<Database>,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// The revision of the last committed transaction, set before callers are answered.
    revision: Arc<AtomicU64>,
    hub: WatchHub,
}

struct Request {
    txn: Txn,
    reply: oneshot::Sender<Result<Revision>>,
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`, creating missing parent
    /// directories, with the default watch history. Blocks on disk I/O (and on crash
    /// recovery if the last run did not close cleanly): call it at startup.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, WatchConfig::default())
    }

    /// Like [`RedbStore::open`], keeping the watch history `config` asks for.
    pub fn open_with(path: impl AsRef<Path>, config: WatchConfig) -> Result<Self> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| RedbStoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        let db = create_waiting(path, LOCK_WAIT).map_err(|source| match source {
            DatabaseError::DatabaseAlreadyOpen => RedbStoreError::Locked {
                path: path.to_owned(),
                source,
            },
            source => RedbStoreError::Open {
                path: path.to_owned(),
                source,
            },
        })?;
        let revision = init(&db).map_err(RedbStoreError::Init)?;
        let db = Arc::new(db);
        let hub = WatchHub::new(config, revision);
        let shared_revision = Arc::new(AtomicU64::new(revision));
        let (requests, queue) = mpsc::channel(QUEUE);
        let writer = Writer {
            db: db.clone(),
            queue,
            hub: hub.clone(),
            revision,
            shared_revision: shared_revision.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("shoal-store-writer".into())
            .spawn(move || writer.run())
            .map_err(RedbStoreError::SpawnWriter)?;
        tracing::debug!(path = %path.display(), revision, "Opened redb store");
        Ok(RedbStore {
            db,
            requests: Some(requests),
            writer: Some(writer),
            revision: shared_revision,
            hub,
        })
    }

    /// Commits what is queued, stops the writer and releases the file lock, without
    /// blocking the async runtime.
    pub async fn close(self) {
        // Dropping joins the writer thread; do it where blocking is allowed.
        if let Err(err) = tokio::task::spawn_blocking(move || drop(self)).await {
            tracing::error!(error = %err, "Closing the redb store failed");
        }
    }

    /// Runs `read` against a snapshot on the blocking pool.
    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || read(&db))
            .await
            .map_err(RedbStoreError::Reader)?;
        Ok(result.map_err(RedbStoreError::Read)?)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish the queue and exit.
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("The redb store writer thread panicked");
            }
        }
    }
}

/// Creates the tables if needed and returns the stored revision.
fn init(db: &Database) -> Result<Revision, redb::Error> {
    let txn = db.begin_write()?;
    let revision = {
        txn.open_table(KV)?;
        let meta = txn.open_table(META)?;
        let revision = meta.get(REVISION_KEY)?.map(|guard| guard.value());
        revision.unwrap_or(0)
    };
    txn.commit()?;
    Ok(revision)
}

fn to_kv(key: &str, (create_revision, mod_revision, value): (u64, u64, &[u8])) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |db| {
            let txn = db.begin_read()?;
            let kv = txn.open_table(KV)?;
            let found = kv.get(key.as_str())?;
            Ok(found.map(|guard| to_kv(&key, guard.value())))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_owned();
        self.read(move |db| {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let revision = meta.get(REVISION_KEY)?.map_or(0, |guard| guard.value());
            let kv = txn.open_table(KV)?;
            let mut kvs = Vec::new();
            for entry in kv.range::<&str>(prefix.as_str()..)? {
                let (key, value) = entry?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                kvs.push(to_kv(key, value.value()));
            }
            Ok((kvs, revision))
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<Revision> {
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        requests
            .send(Request { txn, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event>>> {
        Ok(self.hub.watch(prefix, after))
    }

    async fn revision(&self) -> Result<Revision> {
        Ok(self.revision.load(Ordering::Acquire))
    }
}

/// The single writer: owns every change to the file.
struct Writer {
    db: Arc<Database>,
    queue: mpsc::Receiver<Request>,
    hub: WatchHub,
    /// The last committed revision.
    revision: Revision,
    shared_revision: Arc<AtomicU64>,
}

impl TxnTarget for redb::Table<'_, &str, (u64, u64, &[u8])> {
    type Error = redb::Error;

    fn revisions(&mut self, key: &str) -> Result<Option<Revisions>, redb::Error> {
        Ok(self.get(key)?.map(|guard| {
            let (created, modified, _) = guard.value();
            (created, modified)
        }))
    }

    fn put(&mut self, kv: &KeyValue) -> Result<(), redb::Error> {
        let record = (kv.create_revision, kv.mod_revision, kv.value.as_slice());
        self.insert(kv.key.as_str(), record)?;
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<bool, redb::Error> {
        Ok(self.remove(key)?.is_some())
    }
}

/// The result of one transaction inside a group, before the group is committed.
enum Outcome {
    Conflict {
        key: String,
    },
    /// Nothing changed; the latest revision at that point in the group.
    Unchanged {
        revision: Revision,
    },
    Changed {
        revision: Revision,
        events: Vec<Event>,
    },
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.queue.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match self.queue.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        tracing::debug!(revision = self.revision, "Store writer stopped");
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let (txns, replies): (Vec<Txn>, Vec<_>) =
            group.into_iter().map(|r| (r.txn, r.reply)).unzip();
        let count = txns.len();
        match self.apply_group(txns) {
            Ok(outcomes) => {
                self.shared_revision.store(self.revision, Ordering::Release);
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    let answer = match outcome {
                        Outcome::Conflict { key } => Err(StoreError::Conflict { key }),
                        Outcome::Unchanged { revision } => Ok(revision),
                        Outcome::Changed { revision, events } => {
                            self.hub.publish(revision, events);
                            Ok(revision)
                        }
                    };
                    // The caller may have given up waiting; the change is committed anyway.
                    let _ = reply.send(answer);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, transactions = count, "Group commit failed");
                let err = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(RedbStoreError::Commit(err.clone()).into()));
                }
            }
        }
    }

    /// Applies `txns` in order in one write transaction and commits it; on success
    /// `self.revision` is the revision of the last change.
    fn apply_group(&mut self, txns: Vec<Txn>) -> Result<Vec<Outcome>, redb::Error> {
        let mut write = self.db.begin_write()?;
        // The default, spelled out: callers are answered only once the group is on disk.
        write.set_durability(Durability::Immediate);
        let mut revision = self.revision;
        let mut outcomes = Vec::with_capacity(txns.len());
        {
            let mut kv = write.open_table(KV)?;
            for txn in txns {
                let outcome = match apply::apply(&mut kv, txn, revision + 1)? {
                    Applied::Conflict { key } => Outcome::Conflict { key },
                    Applied::Done(events) if events.is_empty() => Outcome::Unchanged { revision },
                    Applied::Done(events) => {
                        revision += 1;
                        Outcome::Changed { revision, events }
                    }
                };
                outcomes.push(outcome);
            }
            if revision != self.revision {
                write.open_table(META)?.insert(REVISION_KEY, revision)?;
            }
        }
        if revision == self.revision {
            // Nothing changed (only conflicts and no-ops): skip the fsync.
            write.abort()?;
        } else {
            write.commit()?;
            self.revision = revision;
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn opening_waits_for_a_lock_being_released_and_reports_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let held = Database::create(&path).unwrap();
        // Kept for longer than the wait: reported as locked.
        let Err(err) = create_waiting(&path, Duration::from_millis(100)) else {
            panic!("a held lock is reported");
        };
        assert!(matches!(err, DatabaseError::DatabaseAlreadyOpen), "{err}");
        // Released while waiting (as by a process that is still exiting): opened.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        create_waiting(&path, Duration::from_secs(5)).expect("opened once released");
        release.join().unwrap();
    }
}
