//! The compiled form of an autoscale setting: validated, with durations in seconds and
//! time zones resolved, so the evaluator in `shoal-control` never re-parses strings.
//! Made by [`super::compile()`].

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::{
    ComparisonOperator, DimensionOperator, MetricStatistic, ScaleDirection, ScaleType,
    TimeAggregation,
};
use crate::ids::VmssRef;

/// Which metric a rule reads: the resource it belongs to, its namespace and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricKey {
    /// The scale set the metric is about.
    pub resource: VmssRef,
    /// `None` for platform metrics; custom metrics keep their namespace.
    pub namespace: Option<String>,
    /// The canonical name (platform) or the name as written (custom).
    pub name: String,
}

impl MetricKey {
    pub fn is_platform(&self) -> bool {
        self.namespace.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    pub metric: MetricKey,
    pub grain_secs: u64,
    pub statistic: MetricStatistic,
    pub window_secs: u64,
    pub aggregation: TimeAggregation,
    pub operator: ComparisonOperator,
    pub threshold: f64,
    /// `(name, operator, values)` filters on the metric's dimensions.
    pub dimensions: Vec<(String, DimensionOperator, Vec<String>)>,
    pub divide_per_instance: bool,
    pub direction: ScaleDirection,
    pub kind: ScaleType,
    pub value: i64,
    pub cooldown_secs: u64,
}

/// When a profile applies.
#[derive(Debug, Clone)]
pub enum ProfileWhen {
    Default,
    Fixed {
        start: Timestamp,
        end: Timestamp,
    },
    /// Weekly: starts at each `(hour, minute)` of each listed day in `tz`, and lasts
    /// until another profile starts.
    Weekly {
        tz: TimeZone,
        days: Vec<Weekday>,
        times: Vec<(i8, i8)>,
    },
}

#[derive(Debug, Clone)]
pub struct CompiledProfile {
    pub name: String,
    pub minimum: i64,
    pub maximum: i64,
    pub default: i64,
    pub rules: Vec<CompiledRule>,
    pub when: ProfileWhen,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompiledTargetTracking {
    pub metric: MetricKey,
    pub target: f64,
    pub tolerance: f64,
    pub window_secs: u64,
    pub cooldown_secs: u64,
}

/// A validated setting, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub enabled: bool,
    pub target: VmssRef,
    pub interval_secs: u64,
    pub profiles: Vec<CompiledProfile>,
    pub target_tracking: Option<CompiledTargetTracking>,
    pub webhooks: Vec<String>,
}
