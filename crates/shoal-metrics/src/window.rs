//! What autoscale reads from the metrics store: a metric's grains over a time window.
//! The evaluator (`shoal_control::autoscale`) asks through [`MetricWindows`]; the
//! [`crate::MetricsStore`] answers it, and tests answer it with a map.

use jiff::Timestamp;
use shoal_model::autoscale::{DimensionOperator, MetricKey};

/// One time grain of a metric: the value of each instance (its average within the grain),
/// or one value for a metric pushed for the whole set.
#[derive(Debug, Clone, PartialEq)]
pub struct Grain {
    pub start: Timestamp,
    pub per_instance: Vec<f64>,
}

/// What a rule asks the metrics store for.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowQuery<'a> {
    pub metric: &'a MetricKey,
    pub dimensions: &'a [(String, DimensionOperator, Vec<String>)],
    pub grain_secs: u64,
    pub window_secs: u64,
    pub now: Timestamp,
}

/// The metric windows the evaluator reads: grains within `(now − window, now]`, oldest
/// first, empty grains left out. [`crate::MetricsStore`] implements it; tests use a
/// map.
pub trait MetricWindows {
    fn window(&self, q: &WindowQuery<'_>) -> Vec<Grain>;
}
