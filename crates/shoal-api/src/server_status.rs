//! `GET /shoal/v1/server/status`: which server leads, since when, the store's health and
//! the servers of the install (`shoal server status` prints it).
//!
//! In: a [`StatusSource`] the server process provides (it knows its own name and URL,
//! the store's endpoints and, on etcd, the election). Out: the JSON
//! `{leader: {name, url, since}, self: {name, url, isLeader}, store: {endpoints,
//! healthy}, members: [{name, url, isLeader}]}`; `leader` is `null` while nobody leads.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use serde::Serialize;

/// Who leads (as recorded by the election).
#[derive(Debug, Clone, Serialize)]
pub struct LeaderView {
    pub name: String,
    pub url: String,
    pub since: String,
}

/// A server of the install.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub name: String,
    pub url: String,
    pub is_leader: bool,
}

/// The store the servers share.
#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    /// `redb:<path>` for the embedded store, else the etcd endpoints.
    pub endpoints: Vec<String>,
    pub healthy: bool,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub leader: Option<LeaderView>,
    #[serde(rename = "self")]
    pub me: MemberView,
    pub store: StoreView,
    pub members: Vec<MemberView>,
}

/// Where the status comes from (the server process implements it).
#[async_trait::async_trait]
pub trait StatusSource: Send + Sync + 'static {
    async fn status(&self) -> ServerStatus;
}

/// The endpoint, to merge into the API's router.
pub fn router(source: Arc<dyn StatusSource>) -> Router {
    Router::new().route(
        "/shoal/v1/server/status",
        get(move || {
            let source = source.clone();
            async move { axum::Json(source.status().await) }
        }),
    )
}
