//! Leader election on etcd, and the fence on a leader's writes.
//!
//! A server's [`Elector`] holds a *session*: an etcd lease (TTL 5 s by default) kept
//! alive every TTL/3, with the server's membership record `<prefix>members/<name>`
//! attached to it. [`Elector::campaign`] creates the election key `<prefix>leader`
//! (holding a [`LeaderRecord`]) with that lease if nobody holds it, else polls until it
//! can; winning gives a [`Term`]: a store whose every transaction also requires the
//! leader key's create revision to be the one this server created (so a deposed
//! leader's write fails in etcd, not only in its own mind), and a token cancelled when
//! the term ends — the lease was not renewed in time, a fenced write was refused, or
//! the server resigned. A server that dies stops renewing; etcd deletes its keys when
//! the lease expires and another campaigner wins within a TTL and one poll.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::txn::Fence;
use super::{header_revision, map_err, EtcdStore};
use crate::{Result, Store, StoreError};

/// How often a campaigner looks whether the leader key is free.
const POLL: Duration = Duration::from_millis(500);

/// Who leads, as stored in the election key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub name: String,
    pub url: String,
    /// When this term began (RFC 3339, from the server's clock).
    pub since: String,
}

/// A server of the install, as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub url: String,
}

/// What `shoal server status` shows about the cluster.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub leader: Option<LeaderRecord>,
    pub members: Vec<Member>,
    pub healthy: bool,
}

/// The fence a term's store carries, and the term's end.
#[derive(Debug)]
pub(crate) struct FenceGuard {
    pub fence: Fence,
    lost: CancellationToken,
}

impl FenceGuard {
    /// A fenced write was refused: this term is over.
    pub fn lost(&self) {
        if !self.lost.is_cancelled() {
            tracing::warn!("A fenced write was refused: this server no longer leads");
        }
        self.lost.cancel();
    }
}

/// One term of leadership.
pub struct Term {
    /// The store the control plane writes through during this term (fenced).
    pub store: Arc<dyn Store>,
    /// Cancelled when the term ends; the control plane must stop at once.
    pub lost: CancellationToken,
    pub record: LeaderRecord,
}

/// A lease kept alive by a task, and the token that says it may have expired.
struct Session {
    lease: i64,
    expired: CancellationToken,
}

/// Campaigns for leadership for one server; see the module docs.
pub struct Elector {
    store: EtcdStore,
    me: Member,
    ttl: Duration,
    session: Mutex<Option<Session>>,
    shutdown: CancellationToken,
}

impl Elector {
    /// An elector for the server `me` with leases of `ttl` (at least 2 s). Its tasks
    /// stop when `shutdown` is cancelled.
    pub fn new(store: EtcdStore, me: Member, ttl: Duration, shutdown: CancellationToken) -> Self {
        Elector {
            store,
            me,
            ttl: ttl.max(Duration::from_secs(2)),
            session: Mutex::new(None),
            shutdown,
        }
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    pub fn store(&self) -> &EtcdStore {
        &self.store
    }

    fn leader_key(&self) -> String {
        format!("{}leader", self.store.prefix())
    }

    fn members_prefix(&self) -> String {
        format!("{}members/", self.store.prefix())
    }

    /// The live session's lease, starting one (and registering this member) if needed.
    async fn session(&self) -> Result<(i64, CancellationToken)> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref().filter(|s| !s.expired.is_cancelled()) {
            return Ok((s.lease, s.expired.clone()));
        }
        let mut client = self.store.client().clone();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(5);
        let lease = client.lease_grant(ttl, None).await.map_err(map_err)?.id();
        let (keeper, answers) = client.lease_keep_alive(lease).await.map_err(map_err)?;
        let record = serde_json::to_vec(&self.me).unwrap_or_default();
        client
            .put(
                format!("{}{}", self.members_prefix(), self.me.name),
                record,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(map_err)?;
        let expired = self.shutdown.child_token();
        tokio::spawn(keep_alive(keeper, answers, self.ttl, expired.clone()));
        tracing::info!(lease, name = %self.me.name, "Joined the servers on etcd");
        *session = Some(Session {
            lease,
            expired: expired.clone(),
        });
        Ok((lease, expired))
    }

    /// Waits until this server leads (or `shutdown` is cancelled: `None`). `since` is
    /// the time to record as the start of the term.
    pub async fn campaign(&self, since: impl Fn() -> String) -> Option<Term> {
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            match self.try_lead(&since).await {
                Ok(Some(term)) => return Some(term),
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "Cannot campaign for leadership now"),
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn try_lead(&self, since: &impl Fn() -> String) -> Result<Option<Term>> {
        let (lease, expired) = self.session().await?;
        let key = self.leader_key();
        let record = LeaderRecord {
            name: self.me.name.clone(),
            url: self.me.url.clone(),
            since: since(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut client = self.store.client().clone();
        let answer = client.txn(txn).await.map_err(map_err)?;
        if !answer.succeeded() {
            return Ok(None);
        }
        let rev = header_revision(answer.header());
        let lost = expired.child_token();
        let guard = FenceGuard {
            fence: Fence {
                key: key.into_bytes(),
                create_revision: i64::try_from(rev).unwrap_or(i64::MAX),
            },
            lost: lost.clone(),
        };
        let mut store = self.store.clone();
        store.fence = Some(Arc::new(guard));
        tracing::info!(name = %self.me.name, revision = rev, "This server leads");
        Ok(Some(Term {
            store: Arc::new(store),
            lost,
            record,
        }))
    }

    /// Gives up leadership of `term` (deleting the election key if it is still ours) so
    /// another server can lead at once, and ends the session.
    pub async fn resign(&self, term: &Term) {
        term.lost.cancel();
        let key = self.leader_key();
        let mut client = self.store.client().clone();
        let session = self.session.lock().await.take();
        if let Some(s) = session {
            s.expired.cancel();
            // Revoking the lease deletes the leader key and the member record.
            if let Err(e) = client.lease_revoke(s.lease).await {
                tracing::warn!(error = %e, "Cannot revoke the leadership lease; it expires on its own");
            }
        }
        tracing::info!(key, "Resigned leadership");
    }

    /// The leader, the registered members and whether etcd answers now.
    pub async fn status(&self) -> ClusterStatus {
        let mut client = self.store.client().clone();
        let serial = || GetOptions::new().with_serializable();
        let leader = client
            .get(self.leader_key(), Some(serial()))
            .await
            .ok()
            .and_then(|r| r.kvs().first().map(|kv| kv.value().to_vec()))
            .and_then(|v| serde_json::from_slice(&v).ok());
        let members = client
            .get(self.members_prefix(), Some(serial().with_prefix()))
            .await
            .map(|r| {
                r.kvs()
                    .iter()
                    .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
                    .collect()
            })
            .unwrap_or_default();
        ClusterStatus {
            leader,
            members,
            healthy: self.store.healthy().await,
        }
    }
}

/// Keeps `lease` alive every TTL/3 until `expired` is cancelled; cancels it itself when
/// a renewal was not confirmed within the TTL less a safety margin (the lease may have
/// expired in etcd, and another server may lead), or etcd says the lease is gone.
async fn keep_alive(
    mut keeper: etcd_client::LeaseKeeper,
    mut answers: etcd_client::LeaseKeepAliveStream,
    ttl: Duration,
    expired: CancellationToken,
) {
    let margin = ttl / 5;
    let mut confirmed = Instant::now();
    loop {
        let sent = Instant::now();
        let renewed = async {
            keeper.keep_alive().await.map_err(map_err)?;
            match answers.message().await.map_err(map_err)? {
                Some(a) if a.ttl() > 0 => Ok(()),
                _ => Err(StoreError::Unavailable("the lease expired".into())),
            }
        };
        let deadline = confirmed + ttl - margin;
        let outcome = tokio::select! {
            () = expired.cancelled() => return,
            r = tokio::time::timeout_at(deadline, renewed) => r,
        };
        match outcome {
            Ok(Ok(())) => confirmed = sent,
            Ok(Err(StoreError::Unavailable(e))) if e.to_string() == "the lease expired" => {
                tracing::warn!("The leadership lease expired");
                expired.cancel();
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Cannot renew the lease");
                // The stream may be broken for good: keep trying until the deadline.
                if Instant::now() >= deadline {
                    expired.cancel();
                    return;
                }
                tokio::select! {
                    () = expired.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200).min(deadline - Instant::now())) => {}
                }
                continue;
            }
            Err(_) => {
                tracing::warn!("The lease was not renewed in time: giving up leadership");
                expired.cancel();
                return;
            }
        }
        tokio::select! {
            () = expired.cancelled() => return,
            () = tokio::time::sleep(ttl / 3) => {}
        }
    }
}
