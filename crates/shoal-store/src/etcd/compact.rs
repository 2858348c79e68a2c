//! [`Compactor`]: drops etcd history older than one interval, from any number of servers.
//!
//! Each server runs one. Every `interval` it notes etcd's current revision; at the next
//! tick it compacts up to the revision it noted one interval ago (so at least one
//! interval of history is kept, as the Kubernetes apiserver keeps 5 minutes). Servers
//! agree through a compare-and-swap on `<prefix>compact`: a server compacts only if the
//! key's version is the one it saw last time, so after one server compacts, the others
//! see a new version, adopt it and try again an interval later. Nothing is compacted at
//! start-up.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio_util::sync::CancellationToken;

use super::{header_revision, map_err, EtcdStore};
use crate::{Result, Revision};

/// Compacts the history of one etcd on a schedule.
pub struct Compactor {
    store: EtcdStore,
    interval: Duration,
}

impl Compactor {
    /// Compaction every `interval` (Shoal's default: 5 minutes), keeping one interval.
    pub fn new(store: EtcdStore, interval: Duration) -> Self {
        Compactor { store, interval }
    }

    /// Runs until `shutdown` is cancelled. Failures are logged and retried next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut version = 0;
        let mut noted: Revision = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            match self.tick(version, noted).await {
                Ok((v, now)) => (version, noted) = (v, now),
                Err(err) => tracing::warn!(error = %err, "etcd compaction failed; retrying later"),
            }
        }
    }

    /// One tick: compacts to `noted` if this server wins the CAS on the compact key at
    /// `version`; returns the key's version now and the revision to compact next time.
    async fn tick(&self, version: i64, noted: Revision) -> Result<(i64, Revision)> {
        let key = format!("{}compact", self.store.prefix());
        let rev = i64::try_from(noted).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, version)])
            .and_then([TxnOp::put(key.clone(), rev.to_string(), None)])
            .or_else([TxnOp::get(key, None)]);
        let mut client = self.store.client().clone();
        let answer = client.txn(txn).await.map_err(map_err)?;
        let now = header_revision(answer.header());
        if !answer.succeeded() {
            // Another server compacted: adopt its version, try again next interval.
            let seen = answer.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.version()),
                _ => None,
            });
            return Ok((seen.unwrap_or(0), now));
        }
        if noted > 0 {
            self.store.compact(noted).await?;
            tracing::info!(revision = noted, "Compacted etcd history");
        }
        Ok((version + 1, now))
    }
}
