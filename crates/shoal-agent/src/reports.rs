//! The agent's status reports, sent in batches: every supervisor's report loop hands its
//! newest status to one [`Reports`] task, which sends whatever is waiting in one
//! `PUT /shoal/v1/statuses` (one request, one authentication, one store write) and
//! answers each loop with its own result. Batches leave at most every [`MIN_INTERVAL`]
//! and while one is on the wire the next fills up, so a thousand instances booting at
//! once cost about a hundred requests instead of four thousand, and a lone report after a
//! quiet spell still leaves at once.
//!
//! A server from before the batch route answers 404; then reports go one by one
//! (`PUT /shoal/v1/status/...`, several at a time), as they did.

use futures::future::join_all;
use shoal_client::ServerClient;
use shoal_model::records::{InstanceRecord, InstanceStatus};
use tokio::sync::{mpsc, oneshot};

/// The most reports one request carries (the server takes up to
/// `shoal_api::agent_api::MAX_STATUSES`).
const MAX_BATCH: usize = 500;

/// The shortest time between two batches. Each costs the server a request, an
/// authentication and a store write; with a thousand instances booting, reports sent as
/// soon as they came were hundreds of batches of one or two. The controller looks at
/// statuses at most every 50 ms anyway; a lone report after a quiet spell leaves at once.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// What a report came to: `Ok(true)` taken, `Ok(false)` the instance is not this host's
/// (any more), `Err` not taken (the reason; the caller retries).
pub type Outcome = Result<bool, String>;

struct Pending {
    rec: InstanceRecord,
    status: InstanceStatus,
    answer: oneshot::Sender<Outcome>,
}

/// A handle on the batching task; it ends once every handle is dropped.
#[derive(Clone)]
pub struct Reports {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Reports {
    /// Starts the task on the current runtime.
    pub fn start(client: ServerClient) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, rx));
        Self { tx }
    }

    /// Sends `status` of `rec`'s instance with the next batch and waits for its outcome.
    pub async fn report(&self, rec: &InstanceRecord, status: &InstanceStatus) -> Outcome {
        let (answer, outcome) = oneshot::channel();
        let pending = Pending {
            rec: rec.clone(),
            status: status.clone(),
            answer,
        };
        let stopping = || "the agent is stopping".to_string();
        self.tx.send(pending).map_err(|_| stopping())?;
        outcome.await.map_err(|_| stopping())?
    }
}

async fn run(client: ServerClient, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut one_by_one = false;
    let mut last_sent: Option<tokio::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        // Batches leave at most every MIN_INTERVAL: what arrives meanwhile rides along.
        if let Some(at) = last_sent {
            tokio::time::sleep_until(at + MIN_INTERVAL).await;
        }
        last_sent = Some(tokio::time::Instant::now());
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if !one_by_one {
            let reports: Vec<_> = batch.iter().map(|p| (&p.rec, &p.status)).collect();
            let sent = tokio::time::Instant::now();
            let answered = client.report_many(&reports).await;
            tracing::debug!(reports = reports.len(), elapsed = ?sent.elapsed(), "Status batch answered");
            match answered {
                Ok(Some(outcomes)) => {
                    for (p, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = p.answer.send(outcome);
                    }
                    continue;
                }
                Ok(None) => {
                    tracing::info!("the server takes status reports one by one (an older server)");
                    one_by_one = true;
                }
                Err(e) => {
                    let why = e.to_string();
                    for p in batch {
                        let _ = p.answer.send(Err(why.clone()));
                    }
                    continue;
                }
            }
        }
        join_all(batch.into_iter().map(|p| {
            let client = client.clone();
            async move {
                let outcome = client
                    .report(&p.rec, &p.status)
                    .await
                    .map_err(|e| e.to_string());
                let _ = p.answer.send(outcome);
            }
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use axum::http;
    use bytes::Bytes;
    use serde_json::json;
    use shoal_client::{Body, Transport, TransportError};
    use tokio::time::Instant;

    use super::*;

    /// A server that takes every report, and notes when each batch came and its size.
    #[derive(Default)]
    struct Server {
        batches: Mutex<Vec<(Instant, usize)>>,
    }

    struct Fake(Arc<Server>);

    #[async_trait]
    impl Transport for Fake {
        async fn send(
            &self,
            req: http::Request<Bytes>,
        ) -> Result<http::Response<Body>, TransportError> {
            let body: serde_json::Value = serde_json::from_slice(req.body()).expect("json body");
            let n = body["statuses"].as_array().expect("statuses").len();
            self.0.batches.lock().unwrap().push((Instant::now(), n));
            let results: Vec<_> = (0..n).map(|_| json!({"ok": true})).collect();
            let answer = serde_json::to_vec(&json!({ "results": results })).expect("json");
            Ok(http::Response::new(Body::from(answer)))
        }
        fn target(&self) -> &str {
            "test"
        }
    }

    fn rec(id: u64) -> InstanceRecord {
        crate::fixtures::record(id, 1, 512)
    }

    fn running() -> InstanceStatus {
        serde_json::from_value(json!({
            "state": "running", "host": "local", "launch_generation": 1, "restart_gen": 0,
            "reimage_gen": 0, "address": "127.0.0.1:20000", "port": 20000, "pid": 7,
            "message": null, "restarts": 0, "since": "t"
        }))
        .expect("status")
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_reports_rides_in_few_batches_and_a_lone_one_leaves_at_once() {
        let server = Arc::new(Server::default());
        let reports = Reports::start(ServerClient::new(Arc::new(Fake(server.clone()))));
        let status = running();

        // A lone report is taken without waiting.
        let t0 = Instant::now();
        assert_eq!(reports.report(&rec(0), &status).await, Ok(true));
        assert_eq!(t0.elapsed(), Duration::ZERO);

        // A hundred reports, one every millisecond (instances booting): each is taken,
        // in batches no closer than MIN_INTERVAL apart.
        let mut waiting = Vec::new();
        for id in 1..=100 {
            let (reports, rec, status) = (reports.clone(), rec(id), status.clone());
            waiting.push(tokio::spawn(
                async move { reports.report(&rec, &status).await },
            ));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for w in waiting {
            assert_eq!(w.await.expect("report task"), Ok(true));
        }
        let batches = server.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().map(|b| b.1).sum::<usize>(), 101);
        assert!(
            batches.len() <= 8,
            "{} batches for 101 reports",
            batches.len()
        );
        for pair in batches.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= MIN_INTERVAL,
                "batches {pair:?} too close"
            );
        }

        // After a quiet spell the next report leaves at once again.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        assert_eq!(reports.report(&rec(1), &status).await, Ok(true));
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }
}
