//! Autoscale's activity log: each autoscale setting keeps the history of its notable
//! evaluations (`autoscale-history/…`, newest last, bounded) — the ones that changed
//! capacity, and the ones that wanted to and could not, each blocked reason recorded
//! once rather than every second.
//!
//! Entries are appended by [`super::capacity::decide_autoscale`] in the same transaction
//! as the capacity change they describe; the API reads them back as the setting's
//! `history` and as Azure's activity-log events.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use shoal_model::keys;

use crate::autoscale::{Blocked, Decision, LastAction, MetricSeen};
use crate::clock::arm_time;

/// History entries kept per setting.
pub const HISTORY_LIMIT: usize = 200;

/// Store key of a setting's history.
pub fn history_key(sub: &str, rg: &str, name: &str) -> String {
    keys::resource(keys::AUTOSCALE_HISTORY, sub, rg, name)
}

/// `autoscale/{sub}/{rg}/{name}` → `autoscale-history/{sub}/{rg}/{name}`: the history
/// sits beside its setting (whose group may differ from the set's).
pub fn history_key_of(setting_key: &str) -> String {
    keys::autoscale_history_key(setting_key)
}

/// One notable evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub time: String,
    pub profile: Option<String>,
    pub old_capacity: i64,
    /// Set when capacity changed.
    pub new_capacity: Option<i64>,
    /// `ScaleOut`, `ScaleIn`, or `Blocked`.
    pub outcome: String,
    pub blocked: Option<Blocked>,
    pub reason: String,
    pub metrics: Vec<MetricSeen>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// When autoscale last changed capacity (RFC 3339).
    #[serde(default)]
    pub last_action: Option<String>,
    #[serde(default)]
    pub entries: Vec<HistoryEntry>,
}

impl History {
    pub fn last_action(&self) -> LastAction {
        LastAction {
            at: self.last_action.as_deref().and_then(|t| t.parse().ok()),
        }
    }

    /// Appends a notable decision; returns false (and appends nothing) when it only
    /// repeats the previous blocked entry.
    pub fn record(&mut self, d: &Decision, now: Timestamp) -> bool {
        if !d.is_notable() {
            return false;
        }
        if d.new_capacity.is_none() {
            if let Some(prev) = self.entries.last() {
                let same_kind = |a: &Option<Blocked>, b: &Option<Blocked>| match (a, b) {
                    (Some(x), Some(y)) => std::mem::discriminant(x) == std::mem::discriminant(y),
                    _ => false,
                };
                if prev.new_capacity.is_none()
                    && same_kind(&prev.blocked, &d.blocked)
                    && prev.old_capacity == d.current
                {
                    return false;
                }
            }
        }
        let outcome = match d.new_capacity {
            Some(n) if n > d.current => "ScaleOut",
            Some(_) => "ScaleIn",
            None => "Blocked",
        };
        if d.new_capacity.is_some() {
            self.last_action = Some(arm_time(now));
        }
        self.entries.push(HistoryEntry {
            time: arm_time(now),
            profile: d.profile.clone(),
            old_capacity: d.current,
            new_capacity: d.new_capacity,
            outcome: outcome.into(),
            blocked: d.blocked.clone(),
            reason: d.reason.clone(),
            metrics: d.metrics.clone(),
        });
        if self.entries.len() > HISTORY_LIMIT {
            let extra = self.entries.len() - HISTORY_LIMIT;
            self.entries.drain(..extra);
        }
        true
    }
}
