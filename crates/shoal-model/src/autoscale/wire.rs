//! The wire shape of `Microsoft.Insights/autoscaleSettings`, exactly as Azure defines it
//! (`autoscale_API.json`, `azure-mgmt-monitor`'s models), plus Shoal's `properties.shoal`
//! extension. Requests are parsed into these types and responses printed from them;
//! [`super::compile()`] turns them into the [`super::compiled`] form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ComparisonOperator, DimensionOperator, MetricStatistic, RecurrenceFrequency, ScaleDirection,
    ScaleType, TimeAggregation,
};

/// The resource (`AutoscaleSettingResource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AutoscaleSetting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    pub properties: AutoscaleProperties,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscaleProperties {
    pub profiles: Vec<AutoscaleProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<AutoscaleNotification>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictive_autoscale_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource_location: Option<String>,
    /// Shoal's extensions (not in Azure's schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shoal: Option<ShoalExtension>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscaleProfile {
    pub name: String,
    pub capacity: ScaleCapacity,
    pub rules: Vec<ScaleRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_date: Option<FixedDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
}

/// Capacities are strings of integers on the wire, as in Azure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ScaleCapacity {
    pub minimum: String,
    pub maximum: String,
    pub default: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleRule {
    pub metric_trigger: MetricTrigger,
    pub scale_action: ScaleAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricTrigger {
    pub metric_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_resource_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_resource_location: Option<String>,
    pub time_grain: String,
    pub statistic: MetricStatistic,
    pub time_window: String,
    pub time_aggregation: TimeAggregation,
    pub operator: ComparisonOperator,
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Vec<ScaleRuleMetricDimension>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divide_per_instance: Option<bool>,
}

/// Azure spells these three keys with a capital letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRuleMetricDimension {
    #[serde(rename = "DimensionName", alias = "dimensionName")]
    pub dimension_name: String,
    #[serde(rename = "Operator", alias = "operator")]
    pub operator: DimensionOperator,
    #[serde(rename = "Values", alias = "values")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleAction {
    pub direction: ScaleDirection,
    #[serde(rename = "type")]
    pub kind: ScaleType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub cooldown: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedDate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recurrence {
    pub frequency: RecurrenceFrequency,
    pub schedule: RecurrentSchedule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrentSchedule {
    pub time_zone: String,
    pub days: Vec<String>,
    pub hours: Vec<i64>,
    pub minutes: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoscaleNotification {
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<WebhookNotification>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookNotification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

/// `properties.shoal`: what Shoal adds to Azure's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShoalExtension {
    /// How often the setting is evaluated (`PT1S`…`PT1H`; default `PT15S`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tracking: Option<TargetTracking>,
}

/// Keep `metric` (a per-instance average) near `target` by resizing the set to
/// `ceil(current × metric / target)` whenever `|metric / target − 1| > tolerance`,
/// within the active profile's minimum and maximum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetTracking {
    pub metric_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_namespace: Option<String>,
    pub target: f64,
    /// Fraction of `target` within which nothing changes (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Window the metric is averaged over (default `PT1M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_window: Option<String>,
    /// Time to wait after any scale action (default `PT1M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
}
