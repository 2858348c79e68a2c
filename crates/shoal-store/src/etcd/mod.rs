//! [`EtcdStore`]: the [`Store`] on an etcd cluster, for several servers at once.
//!
//! Every key of an install lives under `<prefix>kv/` (default prefix `/shoal/`, so one
//! etcd can hold several installs); store revisions are etcd's revisions, so they are
//! strictly increasing but not consecutive when something else writes to the same etcd.
//! A transaction is one etcd transaction ([`txn`]): preconditions are compares on
//! `version`/`mod_revision`; one over etcd's limits is refused with
//! [`StoreError::TooLarge`]. A watch is an etcd watch from `after + 1` ([`watch`]); a
//! compacted start revision ends it with [`StoreError::Compacted`]. Reads are
//! linearizable; when etcd cannot answer one (no quorum), a member answers it from its
//! own copy (a serializable read), so reads go on while writes fail with
//! [`StoreError::Unavailable`]. After one such read the store remembers that etcd has
//! no quorum: reads go straight to a member's copy (not one timeout each) until a
//! probe in the background sees a linearizable read answered again.
//!
//! Beside the data: [`Elector`] (a lease, the election key `<prefix>leader`, server
//! membership under `<prefix>members/`) and [`EtcdStore::fenced`], the store a leader's
//! control plane writes through (every transaction also compares the leader key's create
//! revision, so a deposed leader's write fails in etcd). [`Compactor`] drops old history
//! on a schedule, safely from several servers (a compare-and-swap on `<prefix>compact`,
//! as the Kubernetes apiserver does).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, WatchClient};
use futures::stream::BoxStream;

use crate::{Event, KeyValue, Result, Revision, Store, StoreError, Txn};

mod compact;
mod leader;
pub mod txn;
mod watch;

pub use compact::Compactor;
pub use leader::{ClusterStatus, Elector, LeaderRecord, Member, Term};

/// How long one etcd call may take before it counts as "unavailable".
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer (a list) the client accepts.
const MAX_MESSAGE: usize = 1 << 30;

/// Where the etcd cluster is and how to talk to it.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `host:port` (or full `http(s)://host:port`) of each member.
    pub endpoints: Vec<String>,
    /// Every key of this install starts with it (default `/shoal/`).
    pub prefix: String,
    /// Client TLS; endpoints become `https://` when set.
    pub tls: Option<EtcdTls>,
    /// Per-call timeout (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// How many events a watcher may leave unread before its stream ends with
    /// `Compacted` (it must list again), as the in-process stores do.
    pub watch_buffer: usize,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "/shoal/".into(),
            tls: None,
            timeout: DEFAULT_TIMEOUT,
            watch_buffer: 16_384,
        }
    }

    /// Parses `etcd://host:port[,host:port…]`; `None` when `spec` is not an etcd URL.
    pub fn parse_url(spec: &str) -> Option<Result<Self, String>> {
        let rest = spec.strip_prefix("etcd://")?;
        let endpoints: Vec<String> = rest
            .split(',')
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .collect();
        if let Some(bad) = endpoints
            .iter()
            .find(|e| e.is_empty() || e.contains('/') || !e.contains(':'))
        {
            return Some(Err(format!(
                "'{bad}' in '{spec}' is not a HOST:PORT (write etcd://10.0.0.1:2379,10.0.0.2:2379)"
            )));
        }
        Some(Ok(EtcdConfig::new(endpoints)))
    }
}

/// PEM material for etcd client TLS (`--store-ca`, `--store-cert`, `--store-key`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, together.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// What can go wrong connecting to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(
        "Cannot reach etcd at {endpoints} (is it running, with a quorum, and are the \
         addresses right?)"
    )]
    Unreachable {
        endpoints: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("The etcd endpoints {endpoints} are not valid")]
    Endpoints {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
}

/// A [`Store`] on etcd. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// One client per member: key-value calls go to the member that answered last, and
    /// move to the next one when a member refuses connections (a request that never
    /// reached etcd is safe to send elsewhere).
    members: Arc<[KvClient]>,
    preferred: Arc<AtomicUsize>,
    /// Whether etcd was last seen without a quorum (see [`Quorum`]).
    quorum: Arc<Quorum>,
    /// The per-call timeout.
    timeout: Duration,
    watch: WatchClient,
    /// `<prefix>kv/`: what every store key is stored under.
    data: String,
    /// The install's prefix (`/shoal/`).
    prefix: String,
    endpoints: Vec<String>,
    watch_buffer: usize,
    fence: Option<Arc<leader::FenceGuard>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("fenced", &self.fence.is_some())
            .finish()
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers a linearizable read (so it has a quorum)
    /// within the timeout; an error names the endpoints.
    pub async fn connect(config: EtcdConfig) -> Result<Self, EtcdError> {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let urls: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        let listed = config.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &config.tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        let invalid = |source| EtcdError::Endpoints {
            endpoints: listed.clone(),
            source,
        };
        let client = Client::connect(&urls, Some(options.clone()))
            .await
            .map_err(invalid)?;
        let mut members = Vec::new();
        for url in &urls {
            let one = Client::connect([url], Some(options.clone()))
                .await
                .map_err(invalid)?;
            members.push(
                one.kv_client()
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            );
        }
        let store = EtcdStore {
            members: members.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            quorum: Arc::default(),
            timeout: config.timeout,
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            client,
            data: format!("{}kv/", config.prefix),
            prefix: config.prefix,
            endpoints: config.endpoints,
            watch_buffer: config.watch_buffer.max(1),
            fence: None,
        };
        let probe = || GetOptions::new().with_count_only();
        let data = store.data.clone();
        let answer = tokio::time::timeout(
            config.timeout,
            store.on_member(|mut kv| {
                let data = data.clone();
                async move { kv.get(data, Some(probe())).await }
            }),
        );
        match answer.await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(e)) => Err(EtcdError::Unreachable {
                endpoints: listed,
                source: Box::new(e),
            }),
            Err(elapsed) => Err(EtcdError::Unreachable {
                endpoints: listed,
                source: Box::new(elapsed),
            }),
        }
    }

    /// The member addresses this store was given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Whether etcd answers a linearizable read now (it has a quorum).
    pub async fn healthy(&self) -> bool {
        let data = self.data.clone();
        let probe = self.on_member(|mut kv| {
            let data = data.clone();
            async move {
                kv.get(data, Some(GetOptions::new().with_count_only()))
                    .await
            }
        });
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(_))
        )
    }

    /// Runs `call` on the preferred member, moving on to the next ones while members
    /// refuse connections.
    async fn on_member<T, F, Fut>(&self, call: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.on_members(call, not_sent).await
    }

    /// Runs `call` on the preferred member, moving on to the next ones while an error
    /// says `move_on` (and then preferring the member that answered).
    async fn on_members<T, F, Fut>(
        &self,
        call: F,
        move_on: fn(&etcd_client::Error) -> bool,
    ) -> Result<T, etcd_client::Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.members.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            match call(self.members[at].clone()).await {
                Err(e) if move_on(&e) => {
                    tracing::debug!(member = %self.endpoints[at], error = %e, "An etcd member did not answer; trying the next");
                    last = Some(e)
                }
                answer => {
                    if i > 0 {
                        self.preferred.store(at, Ordering::Relaxed);
                    }
                    return answer;
                }
            }
        }
        Err(last.unwrap_or_else(|| etcd_client::Error::InvalidArgs("no etcd endpoints".into())))
    }

    /// Drops every revision of history before `revision` (etcd-wide). Watches from
    /// earlier revisions then end with `Compacted`.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        let rev = i64::try_from(revision).unwrap_or(i64::MAX);
        match self
            .on_member(|mut kv| async move { kv.compact(rev, None).await })
            .await
        {
            Ok(_) => Ok(()),
            // Already compacted at or after it: the history is gone, as asked.
            Err(e) if is_compacted(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.data).into_bytes()
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
        to_kv(&self.data, kv)
    }

    /// A linearizable range read; when etcd cannot answer one, a member's own copy.
    async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<(Vec<etcd_client::KeyValue>, Revision)> {
        let get = |options: GetOptions, move_on: fn(&etcd_client::Error) -> bool| {
            let key = key.clone();
            self.on_members(
                move |mut kv| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { kv.get(key, Some(options)).await }
                },
                move_on,
            )
        };
        if !self.quorum.lost.load(Ordering::Relaxed) {
            match get(options.clone(), not_sent).await {
                Ok(mut answer) => {
                    let rev = header_revision(answer.header());
                    return Ok((answer.take_kvs(), rev));
                }
                Err(e) => match map_err(e) {
                    StoreError::Unavailable(cause) => {
                        tracing::debug!(error = %cause, "etcd cannot answer a linearizable read; reading a member's copy");
                        self.quorum_lost();
                    }
                    other => return Err(other),
                },
            }
        }
        // Any member's copy will do: one that is down or cut off is passed over, and a
        // connection broken a moment ago (its next call fails while it reconnects) is
        // tried again until the call's timeout.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(20);
        let mut answer = loop {
            match get(options.clone().with_serializable(), is_unavailable).await {
                Err(e) if is_unavailable(&e) && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(error = %e, "No etcd member answered from its copy; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                answer => break answer.map_err(map_err)?,
            }
        };
        let rev = header_revision(answer.header());
        Ok((answer.take_kvs(), rev))
    }

    /// Remembers that etcd cannot answer linearizable reads, and starts the probe that
    /// notices when it can again (one at a time).
    fn quorum_lost(&self) {
        self.quorum.lost.store(true, Ordering::Relaxed);
        if self.quorum.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(probe_quorum(
            Arc::downgrade(&self.quorum),
            self.members.clone(),
            self.data.clone(),
            self.timeout,
        ));
    }
}

/// Whether etcd was last seen unable to answer a linearizable read (no quorum, or no
/// member reachable). Shared by a store's clones.
#[derive(Debug, Default)]
struct Quorum {
    lost: AtomicBool,
    /// Whether a [`probe_quorum`] task runs.
    probing: AtomicBool,
}

/// Every [`PROBE_EVERY`], a linearizable read on each member in turn, until one answers
/// (then reads are linearizable again) or every clone of the store is gone.
async fn probe_quorum(
    quorum: Weak<Quorum>,
    members: Arc<[KvClient]>,
    data: String,
    timeout: Duration,
) {
    let mut at = 0;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(q) = quorum.upgrade() else { return };
        let mut kv = members[at % members.len()].clone();
        let read = kv.get(data.clone(), Some(GetOptions::new().with_count_only()));
        if let Ok(Ok(_)) = tokio::time::timeout(timeout.min(PROBE_TIMEOUT), read).await {
            tracing::info!("etcd answers linearizable reads again");
            q.lost.store(false, Ordering::Relaxed);
            q.probing.store(false, Ordering::Release);
            return;
        }
        at += 1;
    }
}

/// How often a store that saw etcd without a quorum checks whether it has one again,
/// and how long it waits for the answer (without a quorum etcd answers only when the
/// call times out).
const PROBE_EVERY: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a write waits while etcd is known to have no quorum.
const LOST_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn to_kv(data: &str, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
    let key = std::str::from_utf8(kv.key()).ok()?.strip_prefix(data)?;
    Some(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: u64::try_from(kv.create_revision()).unwrap_or(0),
        mod_revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
    })
}

pub(crate) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

/// Whether the request surely never reached etcd (the connection was refused), so it is
/// safe to send it to another member.
fn not_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect")
        }
        _ => false,
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::OutOfRange && s.message().contains("compacted"))
}

/// Maps an etcd client error: no quorum, a timeout or a broken connection is
/// [`StoreError::Unavailable`]; a request over etcd's limits is
/// [`StoreError::TooLarge`]; the rest is [`StoreError::Backend`].
pub(crate) fn map_err(e: etcd_client::Error) -> StoreError {
    use tonic::Code;
    if is_unavailable(&e) {
        return StoreError::Unavailable(Box::new(e));
    }
    match &e {
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::ResourceExhausted => StoreError::TooLarge {
                what: "the request".into(),
                limit: "etcd's request size limit".into(),
            },
            Code::InvalidArgument if s.message().contains("too many operations") => {
                StoreError::TooLarge {
                    what: "operations".into(),
                    limit: "128 operations".into(),
                }
            }
            Code::InvalidArgument if s.message().contains("too large") => StoreError::TooLarge {
                what: "the request".into(),
                limit: "1.5 MiB per request".into(),
            },
            _ => StoreError::Backend(Box::new(e)),
        },
        _ => StoreError::Backend(Box::new(e)),
    }
}

/// No quorum, a timeout or a broken connection: says nothing about the request itself.
fn is_unavailable(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::Unknown
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn max_txn_ops(&self) -> Option<usize> {
        Some(txn::MAX_TXN_OPS)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (kvs, _) = self.range(self.key(key), GetOptions::new()).await?;
        Ok(kvs.first().and_then(|kv| self.to_kv(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let (kvs, rev) = self
            .range(self.key(prefix), GetOptions::new().with_prefix())
            .await?;
        Ok((kvs.iter().filter_map(|kv| self.to_kv(kv)).collect(), rev))
    }

    async fn txn(&self, ops: Txn) -> Result<Revision> {
        let fence = self.fence.as_ref().map(|f| &f.fence);
        let plan = txn::plan(&self.data, ops, fence)?;
        let call = self.on_member(|mut kv| {
            let txn = plan.txn.clone();
            async move { kv.txn(txn).await }
        });
        // Known without a quorum: a write fails within a second rather than the whole
        // call timeout (one that lands once the quorum is back is answered in time).
        let answer = if self.quorum.lost.load(Ordering::Relaxed) {
            match tokio::time::timeout(LOST_WRITE_TIMEOUT.min(self.timeout), call).await {
                Ok(answer) => answer,
                Err(elapsed) => return Err(StoreError::Unavailable(Box::new(elapsed))),
            }
        } else {
            call.await
        }
        .map_err(map_err)?;
        // A transaction answered, even a failed compare, went through etcd's quorum.
        self.quorum.lost.store(false, Ordering::Relaxed);
        if answer.succeeded() {
            return Ok(header_revision(answer.header()));
        }
        let err = plan.failure(&answer.op_responses());
        if let (StoreError::NotLeader, Some(f)) = (&err, &self.fence) {
            f.lost();
        }
        Err(err)
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<BoxStream<'static, Result<Event>>> {
        watch::watch(
            self.watch.clone(),
            self.data.clone(),
            prefix,
            after,
            self.watch_buffer,
        )
        .await
    }

    async fn revision(&self) -> Result<Revision> {
        let (_, rev) = self
            .range(
                self.data.clone().into_bytes(),
                GetOptions::new().with_count_only(),
            )
            .await?;
        Ok(rev)
    }
}
