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
