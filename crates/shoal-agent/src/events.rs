//! Scheduled events, in the shape of Azure's (`/metadata/scheduledevents`): the agent
//! tells an instance it is about to be terminated, and the instance may acknowledge
//! (`StartRequests`) to let the agent go ahead before `NotBefore`.

use shoal_model::clock::{Clock, SystemClock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

/// One event as instances see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduledEvent {
    pub event_id: String,
    pub event_type: String,
    pub resource_type: String,
    pub resources: Vec<String>,
    pub event_status: String,
    /// RFC 1123, as Azure writes it (`Mon, 19 Sep 2016 18:29:47 GMT`).
    pub not_before: String,
    pub description: String,
    pub event_source: String,
    pub duration_in_seconds: i64,
}

#[derive(Default)]
struct Board {
    incarnation: u64,
    events: HashMap<String, Vec<ScheduledEvent>>,
    acked: HashMap<String, bool>,
}

/// Pending events per instance (by slug), shared by supervisors and the HTTP endpoint.
#[derive(Clone)]
pub struct EventBoard {
    board: Arc<Mutex<Board>>,
    acks: Arc<Notify>,
    clock: Arc<dyn Clock>,
}

impl Default for EventBoard {
    fn default() -> Self {
        EventBoard::new(Arc::new(SystemClock))
    }
}

impl EventBoard {
    /// A board whose `NotBefore` times come from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        EventBoard {
            board: Arc::default(),
            acks: Arc::default(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Posts a `Terminate` event for `slug`, due in `notice`; returns its id.
    pub fn schedule_terminate(&self, slug: &str, computer_name: &str, notice: Duration) -> String {
        let id = uuid_like();
        let due = self.clock.now()
            + jiff::SignedDuration::try_from(notice).unwrap_or(jiff::SignedDuration::ZERO);
        let event = ScheduledEvent {
            event_id: id.clone(),
            event_type: "Terminate".into(),
            resource_type: "VirtualMachine".into(),
            resources: vec![computer_name.to_string()],
            event_status: "Scheduled".into(),
            not_before: due.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            description: "The instance is being deleted by its scale set.".into(),
            event_source: "Platform".into(),
            duration_in_seconds: -1,
        };
        let mut b = self.lock();
        b.incarnation += 1;
        b.events.entry(slug.to_string()).or_default().push(event);
        id
    }

    /// `{"DocumentIncarnation", "Events"}` for one instance.
    pub fn document(&self, slug: &str) -> serde_json::Value {
        let b = self.lock();
        serde_json::json!({
            "DocumentIncarnation": b.incarnation,
            "Events": b.events.get(slug).cloned().unwrap_or_default(),
        })
    }

    /// An instance approves events (`StartRequests`); unknown ids are ignored.
    /// Returns how many of its events it approved.
    pub fn approve(&self, slug: &str, ids: &[String]) -> usize {
        let mut b = self.lock();
        let mut approved = 0;
        let known: Vec<String> = b
            .events
            .get(slug)
            .map(|e| e.iter().map(|e| e.event_id.clone()).collect())
            .unwrap_or_default();
        for id in ids.iter().filter(|id| known.contains(id)) {
            b.acked.insert(id.clone(), true);
            approved += 1;
        }
        if let Some(events) = b.events.get_mut(slug) {
            for e in events.iter_mut().filter(|e| ids.contains(&e.event_id)) {
                e.event_status = "Started".into();
            }
        }
        if approved > 0 {
            b.incarnation += 1;
            drop(b);
            self.acks.notify_waiters();
        }
        approved
    }

    /// Waits until the event is approved or `notice` has passed. True when approved.
    pub async fn wait(&self, id: &str, notice: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + notice;
        loop {
            let notified = self.acks.notified();
            if self.lock().acked.contains_key(id) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Forgets every event of an instance (it is gone).
    pub fn clear(&self, slug: &str) {
        let mut b = self.lock();
        if let Some(events) = b.events.remove(slug) {
            for e in events {
                b.acked.remove(&e.event_id);
            }
            b.incarnation += 1;
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:08X}-{:04X}-4000-8000-{:012X}",
        (nanos >> 32) as u32,
        (nanos & 0xffff) as u16,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_approved_event_releases_the_waiter_early() {
        let board = EventBoard::default();
        let id = board.schedule_terminate("i", "web000001", Duration::from_secs(60));
        let doc = board.document("i");
        assert_eq!(doc["Events"][0]["EventType"], "Terminate");
        assert_eq!(doc["Events"][0]["Resources"][0], "web000001");
        let b2 = board.clone();
        let id2 = id.clone();
        let waiter = tokio::spawn(async move { b2.wait(&id2, Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        assert_eq!(board.approve("i", &[id]), 1);
        assert!(waiter.await.unwrap());
        assert_eq!(board.approve("other", &["nope".into()]), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_event_times_out() {
        let board = EventBoard::default();
        let id = board.schedule_terminate("i", "web", Duration::from_secs(5));
        assert!(!board.wait(&id, Duration::from_secs(5)).await);
    }
}
