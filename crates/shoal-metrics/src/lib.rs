//! Shoal's metrics: an in-memory time-series store for the samples agents report (per
//! instance) and the custom metrics clients push over HTTP (per set or per instance).
//!
//! Data enters through [`MetricsStore::record`] / [`MetricsStore::record_value`] (the API's
//! ingest and custom-metric handlers) and leaves as autoscale windows
//! ([`MetricWindows`], read by the evaluator in `shoal_control::autoscale`), Azure Monitor
//! query answers ([`MetricsStore::query`]) and the latest values for Prometheus text
//! ([`MetricsStore::latest`]). Retention and memory are bounded; see [`store`].

pub mod store;
pub mod window;

pub use store::{
    Agg, Bucket, MetricsStats, MetricsStore, SeriesKey, MAX_SERIES, MINUTE_BUCKETS, MINUTE_BUDGET,
    RAW_BUDGET, RAW_SECS,
};
pub use window::{Grain, MetricWindows, WindowQuery};
