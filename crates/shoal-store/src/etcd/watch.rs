//! A store watch as an etcd watch.
//!
//! In: a key prefix and the revision the caller has seen. The etcd watch starts at
//! `after + 1`; one task reads etcd's answers and forwards each event, with the install
//! prefix stripped, into a bounded channel; the caller's stream reads that channel.
//! Out: events in revision order, ended by an error:
//! - `Compacted` when etcd no longer has `after + 1` (it cancels the watch and says how
//!   far it compacted), or when the caller left more than the buffer unread (as the
//!   in-process stores do: list again and watch from there);
//! - `Unavailable` when the connection broke; the caller watches again from the last
//!   revision it saw.
//!
//! Dropping the stream ends the task, which drops the etcd watch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use etcd_client::{EventType, WatchClient, WatchOptions, WatchResponse};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;

use super::{map_err, to_kv};
use crate::{Event, Result, Revision, StoreError};

pub(super) async fn watch(
    mut client: WatchClient,
    data: String,
    prefix: &str,
    after: Revision,
    buffer: usize,
) -> Result<BoxStream<'static, Result<Event>>> {
    let start = i64::try_from(after.saturating_add(1)).unwrap_or(i64::MAX);
    let options = WatchOptions::new().with_prefix().with_start_revision(start);
    let mut etcd = client
        .watch(format!("{data}{prefix}"), Some(options))
        .await
        .map_err(map_err)?;
    // The first answer says whether the watch exists (or was compacted away at once).
    let first = etcd
        .message()
        .await
        .map_err(map_err)?
        .ok_or(StoreError::Unavailable(
            "etcd ended the watch at once".into(),
        ))?;
    if let Some(err) = canceled(&first, after) {
        return Ok(stream::iter([Err(err)]).boxed());
    }

    let (tx, mut rx) = mpsc::channel::<Result<Event>>(buffer);
    let lagged = Arc::new(AtomicBool::new(false));
    // The last revision handed to the caller's channel, for the lag error.
    let seen = Arc::new(AtomicU64::new(after));
    let forwarder = Forwarder {
        data,
        tx,
        lagged: lagged.clone(),
        seen: seen.clone(),
        after,
    };
    tokio::spawn(async move {
        let mut pending = Some(first);
        loop {
            let response = match pending.take() {
                Some(r) => Ok(Some(r)),
                None => tokio::select! {
                    () = forwarder.tx.closed() => return,
                    r = etcd.message() => r,
                },
            };
            let more = match response {
                Ok(Some(r)) => forwarder.forward(r),
                Ok(None) => forwarder.end(StoreError::Unavailable("etcd closed the watch".into())),
                Err(e) => forwarder.end(map_err(e)),
            };
            if !more {
                return;
            }
        }
    });
    Ok(stream::poll_fn(move |cx| {
        if lagged.load(Ordering::Acquire) {
            rx.close();
            lagged.store(false, Ordering::Release);
            let requested = seen.load(Ordering::Acquire);
            // Ends the stream next time: the channel is closed and drained below.
            while rx.try_recv().is_ok() {}
            return std::task::Poll::Ready(Some(Err(StoreError::Compacted {
                requested,
                oldest: requested + 1,
            })));
        }
        rx.poll_recv(cx)
    })
    .boxed())
}

/// The error a canceled watch answer stands for, if it is one.
fn canceled(response: &WatchResponse, after: Revision) -> Option<StoreError> {
    if !response.canceled() {
        return None;
    }
    Some(if response.compact_revision() > 0 {
        StoreError::Compacted {
            requested: after,
            oldest: u64::try_from(response.compact_revision()).unwrap_or(0),
        }
    } else {
        StoreError::Unavailable(
            format!("etcd canceled the watch: {}", response.cancel_reason()).into(),
        )
    })
}

struct Forwarder {
    data: String,
    tx: mpsc::Sender<Result<Event>>,
    lagged: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
    after: Revision,
}

impl Forwarder {
    /// Forwards one answer's events; `false` when the watch is over.
    fn forward(&self, response: WatchResponse) -> bool {
        if let Some(err) = canceled(&response, self.seen.load(Ordering::Acquire).max(self.after)) {
            return self.end(err);
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(kv) = to_kv(&self.data, kv) else {
                continue;
            };
            let revision = kv.mod_revision;
            let event = match event.event_type() {
                EventType::Put => Event::Put(kv),
                EventType::Delete => Event::Delete {
                    key: kv.key,
                    revision,
                },
            };
            match self.tx.try_send(Ok(event)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(
                        after = self.seen.load(Ordering::Acquire),
                        "etcd watcher lagged"
                    );
                    self.lagged.store(true, Ordering::Release);
                    // Wake the reader so it sees the flag.
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
            self.seen.store(revision, Ordering::Release);
        }
        true
    }

    /// Ends the stream with `err` (if the caller still listens and has room).
    fn end(&self, err: StoreError) -> bool {
        let _ = self.tx.try_send(Err(err));
        false
    }
}
