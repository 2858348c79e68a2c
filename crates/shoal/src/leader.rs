//! Which server runs the control plane: [`Leadership`].
//!
//! With the embedded store there is one server and it always leads
//! ([`Leadership::Always`]): the controller and the autoscale runner start at once, on the
//! server's store, as they always did. On etcd ([`Leadership::Elected`]) every server
//! serves the API, but the control plane runs only during a term won through the
//! [`Elector`]: [`run_control_plane`] campaigns, starts the control plane on the term's
//! fenced store with a token that ends with the term, waits for the term to end (lease
//! not renewed, a fenced write refused) or for shutdown, stops the control plane, waits
//! for its tasks, and campaigns again. On shutdown a leader resigns so another server
//! takes over at once. [`Status`] answers `GET /shoal/v1/server/status` from the same
//! pieces.

use std::sync::Arc;

use shoal_api::server_status::{LeaderView, MemberView, ServerStatus, StatusSource, StoreView};
use shoal_control::Clock;
use shoal_store::etcd::Elector;
use shoal_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the control plane of this server is chosen to run.
#[derive(Clone)]
pub enum Leadership {
    /// The only server: always leads.
    Always,
    /// One of several servers on etcd: leads while it holds the election.
    Elected(Arc<Elector>),
}

/// Starts the control plane's tasks on `tracker` with `store`, until `stop` is cancelled.
pub(crate) type StartControl =
    dyn Fn(Arc<dyn Store>, &TaskTracker, CancellationToken) + Send + Sync;

/// Campaigns, runs the control plane for each term won, until `shutdown`.
pub(crate) async fn run_control_plane(
    elector: Arc<Elector>,
    clock: Arc<dyn Clock>,
    start: Arc<StartControl>,
    shutdown: CancellationToken,
) {
    loop {
        let now = || shoal_control::clock::arm_time(clock.now());
        let Some(term) = elector.campaign(now).await else {
            return;
        };
        tracing::info!(name = %term.record.name, since = %term.record.since, "Leading: starting the control plane");
        let stop = term.lost.child_token();
        let tasks = TaskTracker::new();
        start(term.store.clone(), &tasks, stop.clone());
        tokio::select! {
            () = term.lost.cancelled() => {
                tracing::warn!("Leadership lost: stopping the control plane");
            }
            () = shutdown.cancelled() => {}
        }
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        if shutdown.is_cancelled() {
            elector.resign(&term).await;
            return;
        }
    }
}

/// The status endpoint's source for this server.
pub(crate) struct Status {
    pub leadership: Leadership,
    pub name: String,
    pub url: String,
    /// What the embedded store is (`redb:<path>`), for [`Leadership::Always`].
    pub store_label: String,
    /// When this single server started leading.
    pub since: String,
}

#[async_trait::async_trait]
impl StatusSource for Status {
    async fn status(&self) -> ServerStatus {
        match &self.leadership {
            Leadership::Always => {
                let me = MemberView {
                    name: self.name.clone(),
                    url: self.url.clone(),
                    is_leader: true,
                };
                ServerStatus {
                    leader: Some(LeaderView {
                        name: self.name.clone(),
                        url: self.url.clone(),
                        since: self.since.clone(),
                    }),
                    me: me.clone(),
                    store: StoreView {
                        endpoints: vec![self.store_label.clone()],
                        healthy: true,
                    },
                    members: vec![me],
                }
            }
            Leadership::Elected(elector) => {
                let cluster = elector.status().await;
                let leads = |name: &str| cluster.leader.as_ref().is_some_and(|l| l.name == name);
                let me = MemberView {
                    name: self.name.clone(),
                    url: self.url.clone(),
                    is_leader: leads(&self.name),
                };
                ServerStatus {
                    leader: cluster.leader.as_ref().map(|l| LeaderView {
                        name: l.name.clone(),
                        url: l.url.clone(),
                        since: l.since.clone(),
                    }),
                    store: StoreView {
                        endpoints: elector.store().endpoints().to_vec(),
                        healthy: cluster.healthy,
                    },
                    members: cluster
                        .members
                        .iter()
                        .map(|m| MemberView {
                            name: m.name.clone(),
                            url: m.url.clone(),
                            is_leader: leads(&m.name),
                        })
                        .collect(),
                    me,
                }
            }
        }
    }
}
