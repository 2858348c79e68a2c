//! The `Clock` seam: logic asks it for "now" instead of reading the wall clock, so tests
//! can drive time by hand.
//!
//! It lives in the model crate, which every part depends on, so the API, the
//! controllers, the agent and the balancer can all take an `Arc<dyn Clock>`: the server
//! passes [`SystemClock`], tests and the simulation pass a [`ManualClock`] and move it
//! with [`ManualClock::advance`]. [`arm_time`] prints a timestamp as ARM does.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// Where logic reads the current time from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let span = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
        *t = t.saturating_add(span).unwrap_or(*t);
    }

    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// RFC 3339 with seven fractional digits, as ARM prints times.
pub fn arm_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.7fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_prints_as_arm_does() {
        let start: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(std::time::Duration::from_millis(1500));
        assert_eq!(arm_time(clock.now()), "2026-11-22T10:00:01.5000000Z");
        clock.set(start);
        assert_eq!(arm_time(clock.now()), "2026-11-22T10:00:00.0000000Z");
    }
}
