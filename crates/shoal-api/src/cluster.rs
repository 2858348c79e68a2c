//! This server among the servers of an install: whether it leads, and the way to the one
//! that does.
//!
//! Autoscale runs on the leader and reads the metrics it holds in memory, so metrics sent
//! to any other server (agents' reports, users' custom metrics) are forwarded to the
//! leader, and metric queries are answered by the leader too ([`forward_to_leader`]): with
//! the caller's own `Authorization` (tokens are valid on every server of an install) and a
//! marker header, so a request is forwarded at most once. A server that cannot reach the
//! leader asks the election once more (the leader may have just changed), then answers from
//! what it holds itself. A single server always leads.
//!
//! Prometheus shows `shoal_leader` (1 on the leader) and `shoal_leader_terms_total`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::server_status::StatusSource;

/// Marks a request one server forwarded to another.
pub const FORWARDED: &str = "x-shoal-forwarded";
/// How long the leader's URL is reused before the election is asked again.
const LEADER_CACHE: Duration = Duration::from_secs(2);
/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// What this server knows of leadership.
pub struct Cluster {
    /// This server's name (`--name`).
    pub name: String,
    leading: AtomicBool,
    terms: AtomicU64,
    status: OnceLock<Arc<dyn StatusSource>>,
    cache: Mutex<Option<(Instant, Option<String>)>>,
}

impl Cluster {
    /// A server that always leads (the single server of an embedded store; tests).
    pub fn standalone(name: &str) -> Cluster {
        let c = Cluster::new(name);
        c.set_leading(true);
        c
    }

    /// A server that leads only once it wins a term ([`Cluster::set_leading`]).
    pub fn new(name: &str) -> Cluster {
        Cluster {
            name: name.to_string(),
            leading: AtomicBool::new(false),
            terms: AtomicU64::new(0),
            status: OnceLock::new(),
            cache: Mutex::new(None),
        }
    }

    /// Where the leader is found (the election's status).
    pub fn set_status(&self, status: Arc<dyn StatusSource>) {
        let _ = self.status.set(status);
    }

    /// A term begins (`true`) or ends.
    pub fn set_leading(&self, leading: bool) {
        if leading && !self.leading.swap(true, Ordering::SeqCst) {
            self.terms.fetch_add(1, Ordering::Relaxed);
        } else if !leading {
            self.leading.store(false, Ordering::SeqCst);
        }
        self.forget_leader();
    }

    /// Drops the kept leader URL: the next [`Cluster::leader_url`] asks the election.
    pub fn forget_leader(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Terms this server has led since it started.
    pub fn terms(&self) -> u64 {
        self.terms.load(Ordering::Relaxed)
    }

    /// The URL of the leader when it is another server (`None` when this one leads or
    /// nobody does).
    pub async fn leader_url(&self) -> Option<String> {
        if self.is_leading() {
            return None;
        }
        if let Some((at, url)) = &*self.cache.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < LEADER_CACHE {
                return url.clone();
            }
        }
        let status = self.status.get()?.status().await;
        let url = status
            .leader
            .filter(|l| l.name != self.name && !l.url.is_empty())
            .map(|l| l.url.trim_end_matches('/').to_string());
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), url.clone()));
        url
    }

    /// The other servers of the install that are up: `(name, url)`.
    pub async fn peers(&self) -> Vec<(String, String)> {
        let Some(status) = self.status.get() else {
            return Vec::new();
        };
        status
            .status()
            .await
            .members
            .into_iter()
            .filter(|m| m.name != self.name && !m.url.is_empty())
            .map(|m| (m.name, m.url.trim_end_matches('/').to_string()))
            .collect()
    }
}

/// A request from this server to another, on behalf of the caller of `headers`: marked
/// [`FORWARDED`] (the other passes it on to nobody) and carrying the caller's own
/// `Authorization` (tokens are valid on every server of an install).
pub fn to_peer(
    st: &crate::state::ApiState,
    method: Method,
    url: String,
    headers: &HeaderMap,
) -> reqwest::RequestBuilder {
    let req = st
        .http
        .request(method, url)
        .header(FORWARDED, st.cluster.name.as_str());
    match headers.get(http::header::AUTHORIZATION) {
        Some(auth) => req.header(http::header::AUTHORIZATION, auth.clone()),
        None => req,
    }
}

/// The leader's answer to this request, when this server does not lead, the request was
/// not forwarded already and the leader answered; `None` means "answer it here".
pub async fn forward_to_leader(
    st: &crate::state::ApiState,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    if headers.contains_key(FORWARDED) {
        return None;
    }
    let send = |leader: &str| {
        let mut req = to_peer(
            st,
            method.clone(),
            format!("{leader}{path_and_query}"),
            headers,
        )
        .timeout(FORWARD_TIMEOUT)
        .body(body.clone());
        if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
            req = req.header(http::header::CONTENT_TYPE, ct.clone());
        }
        req.send()
    };
    let leader = st.cluster.leader_url().await?;
    let answer = match send(&leader).await {
        Ok(a) => a,
        Err(e) => {
            // The leader known a moment ago may have died since: ask the election again
            // and try the one it names now, once.
            st.cluster.forget_leader();
            let Some(next) = st.cluster.leader_url().await else {
                tracing::warn!(%leader, error = %e, "cannot forward to the leader; answering here");
                return None;
            };
            match send(&next).await {
                Ok(a) => a,
                Err(again) => {
                    tracing::warn!(first = %leader, %next, error = %e, %again, "cannot forward to the leader; answering here");
                    return None;
                }
            }
        }
    };
    tracing::debug!(%method, path = %path_and_query, "forwarded to the leader");
    let status = answer.status();
    let content_type = answer.headers().get(http::header::CONTENT_TYPE).cloned();
    let bytes = answer.bytes().await.ok()?;
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    Some(resp)
}

/// The Prometheus lines of leadership.
pub fn prometheus(c: &Cluster) -> String {
    let server = crate::metrics::label(&c.name);
    format!(
        "# HELP shoal_leader Whether this server leads (runs the controllers and autoscale).\n\
         # TYPE shoal_leader gauge\nshoal_leader{{server=\"{server}\"}} {}\n\
         # HELP shoal_leader_terms_total Terms this server has led since it started.\n\
         # TYPE shoal_leader_terms_total counter\nshoal_leader_terms_total{{server=\"{server}\"}} {}\n",
        u8::from(c.is_leading()),
        c.terms()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_standalone_server_leads_and_forwards_nothing() {
        let c = Cluster::standalone("s1");
        assert!(c.is_leading());
        assert_eq!(c.terms(), 1);
        assert_eq!(c.leader_url().await, None);
        let text = prometheus(&c);
        assert!(text.contains("shoal_leader{server=\"s1\"} 1"), "{text}");
        c.set_leading(false);
        c.set_leading(true);
        assert_eq!(c.terms(), 2);
    }
}
