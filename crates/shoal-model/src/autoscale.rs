//! `Microsoft.Insights/autoscaleSettings`: the wire shape exactly as Azure defines it
//! (`autoscale_API.json` in azure-rest-api-specs, `azure-mgmt-monitor`'s models), and its
//! validation into a [`Compiled`] setting the evaluator in `shoal-control` runs.
//!
//! A PUT body is parsed into [`AutoscaleSetting`] (field errors name their path), then
//! [`compile`] checks every constraint Azure enforces — with durations widened down to one
//! second — and resolves time zones (IANA or Windows names) and durations once, so the
//! evaluator never re-parses strings. Nothing is stored unless `compile` succeeds.
//!
//! Beyond Azure, `properties.shoal` holds Shoal's extensions: `evaluationInterval`
//! (`PT1S`…`PT1H`, default `PT15S`) and `targetTracking` (`desired = ceil(current × metric
//! / target)` outside a tolerance band, like Kubernetes' HPA).

use std::collections::BTreeMap;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::parse_iso8601;
use crate::ids::VmssRef;
use crate::{arm_enum, ArmError};

/// The resource type as Azure spells it in responses.
pub const AUTOSCALE_TYPE: &str = "Microsoft.Insights/autoscaleSettings";
/// The namespace of the scale-set platform metrics.
pub const VMSS_NAMESPACE: &str = "Microsoft.Compute/virtualMachineScaleSets";
/// Azure's limits.
pub const MAX_PROFILES: usize = 20;
pub const MAX_RULES: usize = 10;
pub const MAX_CAPACITY: i64 = 1000;
/// Default evaluation interval (Shoal's extension): 15 s.
pub const DEFAULT_INTERVAL_SECS: u64 = 15;

/// Platform metrics of a scale set: Azure's four host metrics, then the balancer's
/// request metrics Shoal defines.
pub const PLATFORM_METRICS: &[&str] = &[
    "Percentage CPU",
    "Available Memory Bytes",
    "Network In Total",
    "Network Out Total",
    "Requests Per Second",
    "Active Connections",
    "Http 5xx Per Second",
];

/// The canonical spelling of a platform metric, if `name` is one (case-insensitive).
pub fn platform_metric(name: &str) -> Option<&'static str> {
    PLATFORM_METRICS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(name))
        .copied()
}

/// Whether a metric namespace is the scale set's platform namespace (absent means it is).
pub fn is_platform_namespace(ns: Option<&str>) -> bool {
    ns.is_none_or(|n| n.is_empty() || n.eq_ignore_ascii_case(VMSS_NAMESPACE))
}

arm_enum!(MetricStatistic {
    Average = "Average",
    Min = "Min",
    Max = "Max",
    Sum = "Sum",
    Count = "Count",
});

arm_enum!(TimeAggregation {
    Average = "Average",
    Minimum = "Minimum",
    Maximum = "Maximum",
    Total = "Total",
    Count = "Count",
    Last = "Last",
});

arm_enum!(ComparisonOperator {
    Equals = "Equals",
    NotEquals = "NotEquals",
    GreaterThan = "GreaterThan",
    GreaterThanOrEqual = "GreaterThanOrEqual",
    LessThan = "LessThan",
    LessThanOrEqual = "LessThanOrEqual",
});

impl ComparisonOperator {
    pub fn holds(&self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Equals => value == threshold,
            Self::NotEquals => value != threshold,
            Self::GreaterThan => value > threshold,
            Self::GreaterThanOrEqual => value >= threshold,
            Self::LessThan => value < threshold,
            Self::LessThanOrEqual => value <= threshold,
        }
    }

    pub fn symbol(&self) -> &'static str {
        match self {
            Self::Equals => "==",
            Self::NotEquals => "!=",
            Self::GreaterThan => ">",
            Self::GreaterThanOrEqual => ">=",
            Self::LessThan => "<",
            Self::LessThanOrEqual => "<=",
        }
    }
}

arm_enum!(ScaleDirection {
    None = "None",
    Increase = "Increase",
    Decrease = "Decrease",
});

arm_enum!(ScaleType {
    ChangeCount = "ChangeCount",
    PercentChangeCount = "PercentChangeCount",
    ExactCount = "ExactCount",
    ServiceAllowedNextValue = "ServiceAllowedNextValue",
});

arm_enum!(RecurrenceFrequency {
    None = "None",
    Second = "Second",
    Minute = "Minute",
    Hour = "Hour",
    Day = "Day",
    Week = "Week",
    Month = "Month",
    Year = "Year",
});

arm_enum!(DimensionOperator {
    Equals = "Equals",
    NotEquals = "NotEquals",
});

// ---------------------------------------------------------------------------------------
// Wire shape.

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

// ---------------------------------------------------------------------------------------
// Compiled form: validated, with durations in seconds and time zones resolved.

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

// ---------------------------------------------------------------------------------------
// Validation.

/// Parses a scale-set resource id (`/subscriptions/…/virtualMachineScaleSets/{name}`).
pub fn parse_vmss_id(id: &str) -> Option<VmssRef> {
    let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
    let eq = |i: usize, s: &str| segs.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
    if segs.len() == 8
        && eq(0, "subscriptions")
        && eq(2, "resourceGroups")
        && eq(4, "providers")
        && eq(5, "Microsoft.Compute")
        && eq(6, "virtualMachineScaleSets")
        && segs.iter().all(|s| !s.is_empty())
    {
        Some(VmssRef::new(segs[1], segs[3], segs[7]))
    } else {
        None
    }
}

/// Windows time-zone names (as Azure's recurrences use them) and their IANA zone.
const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("Dateline Standard Time", "Etc/GMT+12"),
    ("UTC", "UTC"),
    ("UTC-11", "Etc/GMT+11"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Mountain Standard Time", "America/Denver"),
    ("Central Standard Time", "America/Chicago"),
    ("Central America Standard Time", "America/Guatemala"),
    ("Canada Central Standard Time", "America/Regina"),
    ("Eastern Standard Time", "America/New_York"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("Argentina Standard Time", "America/Argentina/Buenos_Aires"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("Romance Standard Time", "Europe/Paris"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("Pakistan Standard Time", "Asia/Karachi"),
    ("India Standard Time", "Asia/Kolkata"),
    ("Bangladesh Standard Time", "Asia/Dhaka"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("E. Australia Standard Time", "Australia/Brisbane"),
    ("Cen. Australia Standard Time", "Australia/Adelaide"),
    ("W. Australia Standard Time", "Australia/Perth"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
];

/// Resolves a Windows (`Pacific Standard Time`) or IANA (`America/Los_Angeles`) name.
pub fn resolve_time_zone(name: &str) -> Option<TimeZone> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if let Some((_, iana)) = WINDOWS_ZONES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(name))
    {
        return TimeZone::get(iana).ok();
    }
    TimeZone::get(name).ok()
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    let s = s.trim().to_ascii_lowercase();
    let all = [
        ("monday", Weekday::Monday),
        ("tuesday", Weekday::Tuesday),
        ("wednesday", Weekday::Wednesday),
        ("thursday", Weekday::Thursday),
        ("friday", Weekday::Friday),
        ("saturday", Weekday::Saturday),
        ("sunday", Weekday::Sunday),
    ];
    all.iter()
        .find(|(n, _)| *n == s || (s.len() == 3 && n.starts_with(&s)))
        .map(|(_, d)| *d)
}

/// A point in time: RFC 3339 with an offset, or a civil date-time read in `tz`.
fn parse_instant(s: &str, tz: &TimeZone) -> Option<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let dt: jiff::civil::DateTime = s.trim().parse().ok()?;
    tz.to_zoned(dt).ok().map(|z| z.timestamp())
}

fn duration(target: &str, s: &str, min: u64, max: u64) -> Result<u64, ArmError> {
    let secs = parse_iso8601(s).ok_or_else(|| {
        ArmError::invalid_parameter(
            target,
            format!("'{s}' is not an ISO 8601 duration: write e.g. PT1M, PT30S or PT1H."),
        )
    })?;
    if !(min..=max).contains(&secs) {
        return Err(ArmError::invalid_parameter(
            target,
            format!(
                "{s} is out of range: use {} to {}.",
                crate::duration::format_iso8601(min),
                crate::duration::format_iso8601(max)
            ),
        ));
    }
    Ok(secs)
}

fn capacity_value(target: &str, s: &str) -> Result<i64, ArmError> {
    let v: i64 = s.trim().parse().map_err(|_| {
        ArmError::invalid_parameter(
            target,
            format!("'{s}' is not an integer: capacities are strings of integers, e.g. \"2\"."),
        )
    })?;
    if !(0..=MAX_CAPACITY).contains(&v) {
        return Err(ArmError::invalid_parameter(
            target,
            format!("Capacity {v} is out of range: use 0 to {MAX_CAPACITY}."),
        ));
    }
    Ok(v)
}

/// Resolves a metric reference: a platform metric must exist; a custom one (any other
/// namespace) may be named before anyone pushes it.
fn metric_key(
    target: &str,
    name: &str,
    namespace: Option<&str>,
    resource: &VmssRef,
) -> Result<MetricKey, ArmError> {
    if name.trim().is_empty() {
        return Err(ArmError::invalid_parameter(
            target,
            "The metric name is empty: name a platform metric such as 'Percentage CPU', or a custom metric with its metricNamespace.",
        ));
    }
    if is_platform_namespace(namespace) {
        let canonical = platform_metric(name).ok_or_else(|| {
            ArmError::invalid_parameter(
                target,
                format!(
                    "'{name}' is not a metric of {VMSS_NAMESPACE}: use one of {}, or set metricNamespace (e.g. 'shoal/custom') for a custom metric.",
                    PLATFORM_METRICS.join(", ")
                ),
            )
        })?;
        Ok(MetricKey {
            resource: resource.clone(),
            namespace: None,
            name: canonical.to_string(),
        })
    } else {
        Ok(MetricKey {
            resource: resource.clone(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }
}

fn compile_rule(
    at: &str,
    rule: &ScaleRule,
    target: &VmssRef,
) -> Result<(CompiledRule, Option<VmssRef>), ArmError> {
    let mt = &rule.metric_trigger;
    let resource_target = format!("{at}.metricTrigger.metricResourceUri");
    let resource = match mt.metric_resource_uri.as_deref() {
        None | Some("") => target.clone(),
        Some(uri) => parse_vmss_id(uri).ok_or_else(|| {
            ArmError::invalid_parameter(
                &resource_target,
                format!("'{uri}' is not a scale set id: metrics come from scale sets (/subscriptions/…/providers/Microsoft.Compute/virtualMachineScaleSets/{{name}})."),
            )
        })?,
    };
    let other = (resource != *target).then(|| resource.clone());
    let metric = metric_key(
        &format!("{at}.metricTrigger.metricName"),
        &mt.metric_name,
        mt.metric_namespace.as_deref(),
        &resource,
    )?;
    let grain_secs = duration(
        &format!("{at}.metricTrigger.timeGrain"),
        &mt.time_grain,
        1,
        12 * 3600,
    )?;
    let window_secs = duration(
        &format!("{at}.metricTrigger.timeWindow"),
        &mt.time_window,
        1,
        12 * 3600,
    )?;
    if window_secs < grain_secs {
        return Err(ArmError::invalid_parameter(
            format!("{at}.metricTrigger.timeWindow"),
            format!(
                "The time window {} is shorter than the time grain {}: make it at least one grain.",
                mt.time_window, mt.time_grain
            ),
        ));
    }
    if !mt.threshold.is_finite() {
        return Err(ArmError::invalid_parameter(
            format!("{at}.metricTrigger.threshold"),
            "The threshold must be a finite number.",
        ));
    }
    let mut dimensions = Vec::new();
    for (k, d) in mt.dimensions.iter().flatten().enumerate() {
        let dt = format!("{at}.metricTrigger.dimensions[{k}]");
        if d.dimension_name.trim().is_empty() {
            return Err(ArmError::invalid_parameter(
                format!("{dt}.DimensionName"),
                "The dimension name is empty.",
            ));
        }
        if d.values.is_empty() {
            return Err(ArmError::invalid_parameter(
                format!("{dt}.Values"),
                "List at least one dimension value.",
            ));
        }
        dimensions.push((d.dimension_name.clone(), d.operator, d.values.clone()));
    }
    let sa = &rule.scale_action;
    let direction = match sa.direction {
        ScaleDirection::None => {
            return Err(ArmError::invalid_parameter(
                format!("{at}.scaleAction.direction"),
                "A rule must scale: use Increase or Decrease.",
            ))
        }
        d => d,
    };
    if sa.kind == ScaleType::ServiceAllowedNextValue {
        return Err(ArmError::invalid_parameter(
            format!("{at}.scaleAction.type"),
            "ServiceAllowedNextValue is for services with fixed steps; scale sets use ChangeCount, PercentChangeCount or ExactCount.",
        ));
    }
    let raw = sa.value.as_deref().unwrap_or("1");
    let value: i64 = raw.trim().parse().map_err(|_| {
        ArmError::invalid_parameter(
            format!("{at}.scaleAction.value"),
            format!("'{raw}' is not an integer: the value is a string of an integer, e.g. \"1\"."),
        )
    })?;
    let (lo, hi) = match sa.kind {
        ScaleType::ExactCount => (0, MAX_CAPACITY),
        ScaleType::PercentChangeCount => (1, 10_000),
        _ => (1, MAX_CAPACITY),
    };
    if !(lo..=hi).contains(&value) {
        return Err(ArmError::invalid_parameter(
            format!("{at}.scaleAction.value"),
            format!("{value} is out of range for {}: use {lo} to {hi}.", sa.kind),
        ));
    }
    let cooldown_secs = duration(
        &format!("{at}.scaleAction.cooldown"),
        &sa.cooldown,
        1,
        7 * 86_400,
    )?;
    Ok((
        CompiledRule {
            metric,
            grain_secs,
            statistic: mt.statistic,
            window_secs,
            aggregation: mt.time_aggregation,
            operator: mt.operator,
            threshold: mt.threshold,
            dimensions,
            divide_per_instance: mt.divide_per_instance.unwrap_or(false),
            direction,
            kind: sa.kind,
            value,
            cooldown_secs,
        },
        other,
    ))
}

fn compile_profile(
    at: &str,
    p: &AutoscaleProfile,
    target: &VmssRef,
    others: &mut Vec<VmssRef>,
) -> Result<CompiledProfile, ArmError> {
    if p.name.trim().is_empty() {
        return Err(ArmError::invalid_parameter(
            format!("{at}.name"),
            "A profile needs a name.",
        ));
    }
    let minimum = capacity_value(&format!("{at}.capacity.minimum"), &p.capacity.minimum)?;
    let maximum = capacity_value(&format!("{at}.capacity.maximum"), &p.capacity.maximum)?;
    let default = capacity_value(&format!("{at}.capacity.default"), &p.capacity.default)?;
    if minimum > maximum {
        return Err(ArmError::invalid_parameter(
            format!("{at}.capacity"),
            format!("The minimum {minimum} is above the maximum {maximum}: make minimum ≤ default ≤ maximum."),
        ));
    }
    if !(minimum..=maximum).contains(&default) {
        return Err(ArmError::invalid_parameter(
            format!("{at}.capacity.default"),
            format!("The default {default} is outside {minimum}..{maximum}: make minimum ≤ default ≤ maximum."),
        ));
    }
    if p.rules.len() > MAX_RULES {
        return Err(ArmError::invalid_parameter(
            format!("{at}.rules"),
            format!(
                "A profile has at most {MAX_RULES} rules; this one has {}.",
                p.rules.len()
            ),
        ));
    }
    let mut rules = Vec::new();
    for (j, r) in p.rules.iter().enumerate() {
        let (rule, other) = compile_rule(&format!("{at}.rules[{j}]"), r, target)?;
        others.extend(other);
        rules.push(rule);
    }
    let when = match (&p.fixed_date, &p.recurrence) {
        (Some(_), Some(_)) => {
            return Err(ArmError::invalid_parameter(
                at,
                "A profile has either a fixedDate or a recurrence, not both.",
            ))
        }
        (Some(fd), None) => {
            let tz_name = fd.time_zone.as_deref().unwrap_or("UTC");
            let tz = resolve_time_zone(tz_name)
                .ok_or_else(|| unknown_zone(&format!("{at}.fixedDate.timeZone"), tz_name))?;
            let start = parse_instant(&fd.start, &tz)
                .ok_or_else(|| bad_instant(&format!("{at}.fixedDate.start"), &fd.start))?;
            let end = parse_instant(&fd.end, &tz)
                .ok_or_else(|| bad_instant(&format!("{at}.fixedDate.end"), &fd.end))?;
            if end <= start {
                return Err(ArmError::invalid_parameter(
                    format!("{at}.fixedDate.end"),
                    "The end is not after the start.",
                ));
            }
            ProfileWhen::Fixed { start, end }
        }
        (None, Some(rec)) => {
            if rec.frequency != RecurrenceFrequency::Week {
                return Err(ArmError::invalid_parameter(
                    format!("{at}.recurrence.frequency"),
                    format!(
                        "Recurrences repeat weekly, as in Azure: use Week (not {}).",
                        rec.frequency
                    ),
                ));
            }
            let s = &rec.schedule;
            let tz = resolve_time_zone(&s.time_zone).ok_or_else(|| {
                unknown_zone(&format!("{at}.recurrence.schedule.timeZone"), &s.time_zone)
            })?;
            if s.days.is_empty() || s.hours.is_empty() || s.minutes.is_empty() {
                return Err(ArmError::invalid_parameter(
                    format!("{at}.recurrence.schedule"),
                    "List at least one day, one hour and one minute the profile starts at.",
                ));
            }
            let mut days = Vec::new();
            for (k, d) in s.days.iter().enumerate() {
                days.push(parse_weekday(d).ok_or_else(|| {
                    ArmError::invalid_parameter(
                        format!("{at}.recurrence.schedule.days[{k}]"),
                        format!("'{d}' is not a day of the week: use Monday … Sunday."),
                    )
                })?);
            }
            for (k, h) in s.hours.iter().enumerate() {
                if !(0..=23).contains(h) {
                    return Err(ArmError::invalid_parameter(
                        format!("{at}.recurrence.schedule.hours[{k}]"),
                        format!("Hour {h} is out of range: use 0 to 23."),
                    ));
                }
            }
            for (k, m) in s.minutes.iter().enumerate() {
                if !(0..=59).contains(m) {
                    return Err(ArmError::invalid_parameter(
                        format!("{at}.recurrence.schedule.minutes[{k}]"),
                        format!("Minute {m} is out of range: use 0 to 59."),
                    ));
                }
            }
            let mut times = Vec::new();
            for h in &s.hours {
                for m in &s.minutes {
                    // Both ranges were checked above, so the casts are exact.
                    times.push((*h as i8, *m as i8));
                }
            }
            ProfileWhen::Weekly { tz, days, times }
        }
        (None, None) => ProfileWhen::Default,
    };
    Ok(CompiledProfile {
        name: p.name.clone(),
        minimum,
        maximum,
        default,
        rules,
        when,
    })
}

fn unknown_zone(target: &str, name: &str) -> ArmError {
    ArmError::invalid_parameter(
        target,
        format!("'{name}' is not a known time zone: use an IANA name (Europe/Berlin) or a Windows name (W. Europe Standard Time, Pacific Standard Time, UTC)."),
    )
}

fn bad_instant(target: &str, s: &str) -> ArmError {
    ArmError::invalid_parameter(
        target,
        format!("'{s}' is not a date-time: write e.g. 2026-11-22T09:00:00Z, or 2026-11-22T09:00:00 with fixedDate.timeZone."),
    )
}

/// Validates a setting; on success also returns the other scale sets its rules read
/// metrics from (the caller checks they exist, as it does the target).
pub fn compile(s: &AutoscaleSetting) -> Result<(Compiled, Vec<VmssRef>), ArmError> {
    let p = &s.properties;
    let uri = p.target_resource_uri.as_deref().unwrap_or_default();
    let target = parse_vmss_id(uri).ok_or_else(|| {
        ArmError::invalid_parameter(
            "properties.targetResourceUri",
            format!("'{uri}' is not a scale set id: autoscale targets /subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Compute/virtualMachineScaleSets/{{name}}."),
        )
    })?;
    if p.profiles.is_empty() || p.profiles.len() > MAX_PROFILES {
        return Err(ArmError::invalid_parameter(
            "properties.profiles",
            format!(
                "A setting has 1 to {MAX_PROFILES} profiles; this one has {}.",
                p.profiles.len()
            ),
        ));
    }
    let mut others = Vec::new();
    let mut profiles = Vec::new();
    for (i, prof) in p.profiles.iter().enumerate() {
        profiles.push(compile_profile(
            &format!("properties.profiles[{i}]"),
            prof,
            &target,
            &mut others,
        )?);
    }
    let ext = p.shoal.clone().unwrap_or_default();
    let interval_secs = match ext.evaluation_interval.as_deref() {
        None => DEFAULT_INTERVAL_SECS,
        Some(s) => duration("properties.shoal.evaluationInterval", s, 1, 3600)?,
    };
    let target_tracking = match &ext.target_tracking {
        None => None,
        Some(tt) => {
            let at = "properties.shoal.targetTracking";
            let metric = metric_key(
                &format!("{at}.metricName"),
                &tt.metric_name,
                tt.metric_namespace.as_deref(),
                &target,
            )?;
            if !(tt.target.is_finite() && tt.target > 0.0) {
                return Err(ArmError::invalid_parameter(
                    format!("{at}.target"),
                    "The target must be a number above 0.",
                ));
            }
            let tolerance = tt.tolerance.unwrap_or(0.1);
            if !(0.0..1.0).contains(&tolerance) {
                return Err(ArmError::invalid_parameter(
                    format!("{at}.tolerance"),
                    "The tolerance is a fraction of the target: use 0 to 0.99.",
                ));
            }
            let window_secs = duration(
                &format!("{at}.timeWindow"),
                tt.time_window.as_deref().unwrap_or("PT1M"),
                1,
                12 * 3600,
            )?;
            let cooldown_secs = duration(
                &format!("{at}.cooldown"),
                tt.cooldown.as_deref().unwrap_or("PT1M"),
                1,
                7 * 86_400,
            )?;
            Some(CompiledTargetTracking {
                metric,
                target: tt.target,
                tolerance,
                window_secs,
                cooldown_secs,
            })
        }
    };
    let mut webhooks = Vec::new();
    for (i, n) in p.notifications.iter().flatten().enumerate() {
        if !n.operation.eq_ignore_ascii_case("Scale") {
            return Err(ArmError::invalid_parameter(
                format!("properties.notifications[{i}].operation"),
                format!(
                    "'{}' is not a notification operation: use Scale.",
                    n.operation
                ),
            ));
        }
        for (j, w) in n.webhooks.iter().flatten().enumerate() {
            let uri = w.service_uri.as_deref().unwrap_or_default();
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                return Err(ArmError::invalid_parameter(
                    format!("properties.notifications[{i}].webhooks[{j}].serviceUri"),
                    format!("'{uri}' is not an http(s) URL."),
                ));
            }
            webhooks.push(uri.to_string());
        }
    }
    Ok((
        Compiled {
            enabled: p.enabled.unwrap_or(true),
            target,
            interval_secs,
            profiles,
            target_tracking,
            webhooks,
        },
        others,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SET: &str = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";

    /// A setting as `az monitor autoscale create` + `rule create` send it.
    fn az_body() -> Value {
        json!({
            "location": "local",
            "tags": {},
            "properties": {
                "name": "web-autoscale",
                "enabled": true,
                "targetResourceUri": SET,
                "profiles": [{
                    "name": "default",
                    "capacity": {"minimum": "1", "maximum": "5", "default": "2"},
                    "rules": [{
                        "metricTrigger": {
                            "metricName": "Percentage CPU",
                            "metricNamespace": "microsoft.compute/virtualmachinescalesets",
                            "metricResourceUri": SET,
                            "timeGrain": "PT1M",
                            "statistic": "Average",
                            "timeWindow": "PT5M",
                            "timeAggregation": "Average",
                            "operator": "GreaterThan",
                            "threshold": 70.0,
                            "dimensions": [{"DimensionName": "VMName", "Operator": "Equals", "Values": ["*"]}],
                            "dividePerInstance": false
                        },
                        "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": "2", "cooldown": "PT5M"}
                    }]
                }],
                "notifications": [{"operation": "Scale", "email": {"sendToSubscriptionAdministrator": false, "customEmails": []}, "webhooks": [{"serviceUri": "http://127.0.0.1:9/hook", "properties": {}}]}]
            }
        })
    }

    fn parse(v: &Value) -> Result<Compiled, ArmError> {
        let s: AutoscaleSetting = crate::vmss::parse_typed(v)?;
        compile(&s).map(|(c, _)| c)
    }

    fn err_target(v: &Value) -> String {
        parse(v)
            .err()
            .and_then(|e| {
                assert_eq!(e.status, 400, "{e}");
                e.target
            })
            .unwrap_or_else(|| panic!("accepted: {v}"))
    }

    #[test]
    fn the_az_shape_compiles_and_round_trips() {
        let body = az_body();
        let s: AutoscaleSetting = crate::vmss::parse_typed(&body).unwrap();
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(
            back["properties"]["profiles"],
            body["properties"]["profiles"]
        );
        let c = parse(&body).unwrap();
        assert!(c.enabled);
        assert_eq!(c.target, VmssRef::new("s", "demo", "web"));
        assert_eq!(c.interval_secs, 15);
        let r = &c.profiles[0].rules[0];
        assert_eq!(r.metric.name, "Percentage CPU");
        assert!(r.metric.is_platform());
        assert_eq!(
            (r.grain_secs, r.window_secs, r.cooldown_secs),
            (60, 300, 300)
        );
        assert_eq!(r.value, 2);
        assert_eq!(c.webhooks, vec!["http://127.0.0.1:9/hook".to_string()]);
    }

    #[test]
    fn every_constraint_answers_400_with_its_target() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("/properties/targetResourceUri", json!("/subscriptions/s/resourceGroups/demo/providers/Microsoft.Network/loadBalancers/lb"), "properties.targetResourceUri"),
            ("/properties/profiles/0/capacity/minimum", json!("6"), "properties.profiles[0].capacity"),
            ("/properties/profiles/0/capacity/default", json!("9"), "properties.profiles[0].capacity.default"),
            ("/properties/profiles/0/capacity/maximum", json!("x"), "properties.profiles[0].capacity.maximum"),
            ("/properties/profiles/0/capacity/maximum", json!("1001"), "properties.profiles[0].capacity.maximum"),
            ("/properties/profiles/0/rules/0/metricTrigger/metricName", json!("Percentage CPUU"), "properties.profiles[0].rules[0].metricTrigger.metricName"),
            ("/properties/profiles/0/rules/0/metricTrigger/timeGrain", json!("PT0S"), "properties.profiles[0].rules[0].metricTrigger.timeGrain"),
            ("/properties/profiles/0/rules/0/metricTrigger/timeGrain", json!("PT13H"), "properties.profiles[0].rules[0].metricTrigger.timeGrain"),
            ("/properties/profiles/0/rules/0/metricTrigger/timeWindow", json!("PT30S"), "properties.profiles[0].rules[0].metricTrigger.timeWindow"),
            ("/properties/profiles/0/rules/0/metricTrigger/timeWindow", json!("soon"), "properties.profiles[0].rules[0].metricTrigger.timeWindow"),
            ("/properties/profiles/0/rules/0/metricTrigger/operator", json!("Above"), "properties.profiles[0].rules[0].metricTrigger.operator"),
            ("/properties/profiles/0/rules/0/metricTrigger/statistic", json!("Median"), "properties.profiles[0].rules[0].metricTrigger.statistic"),
            ("/properties/profiles/0/rules/0/metricTrigger/timeAggregation", json!("Mean"), "properties.profiles[0].rules[0].metricTrigger.timeAggregation"),
            ("/properties/profiles/0/rules/0/metricTrigger/metricResourceUri", json!("/nope"), "properties.profiles[0].rules[0].metricTrigger.metricResourceUri"),
            ("/properties/profiles/0/rules/0/scaleAction/cooldown", json!("P8D"), "properties.profiles[0].rules[0].scaleAction.cooldown"),
            ("/properties/profiles/0/rules/0/scaleAction/direction", json!("None"), "properties.profiles[0].rules[0].scaleAction.direction"),
            ("/properties/profiles/0/rules/0/scaleAction/type", json!("ServiceAllowedNextValue"), "properties.profiles[0].rules[0].scaleAction.type"),
            ("/properties/profiles/0/rules/0/scaleAction/value", json!("two"), "properties.profiles[0].rules[0].scaleAction.value"),
            ("/properties/profiles/0/rules/0/scaleAction/value", json!("0"), "properties.profiles[0].rules[0].scaleAction.value"),
            ("/properties/notifications/0/webhooks/0/serviceUri", json!("ftp://x"), "properties.notifications[0].webhooks[0].serviceUri"),
            ("/properties/shoal", json!({"evaluationInterval": "PT0S"}), "properties.shoal.evaluationInterval"),
            ("/properties/shoal", json!({"targetTracking": {"metricName": "Percentage CPU", "target": 0}}), "properties.shoal.targetTracking.target"),
            ("/properties/profiles/0/recurrence", json!({"frequency": "Week", "schedule": {"timeZone": "Mars/Olympus", "days": ["Monday"], "hours": [9], "minutes": [0]}}), "properties.profiles[0].recurrence.schedule.timeZone"),
            ("/properties/profiles/0/recurrence", json!({"frequency": "Week", "schedule": {"timeZone": "UTC", "days": ["Funday"], "hours": [9], "minutes": [0]}}), "properties.profiles[0].recurrence.schedule.days[0]"),
            ("/properties/profiles/0/recurrence", json!({"frequency": "Week", "schedule": {"timeZone": "UTC", "days": ["Monday"], "hours": [24], "minutes": [0]}}), "properties.profiles[0].recurrence.schedule.hours[0]"),
            ("/properties/profiles/0/recurrence", json!({"frequency": "Day", "schedule": {"timeZone": "UTC", "days": ["Monday"], "hours": [1], "minutes": [0]}}), "properties.profiles[0].recurrence.frequency"),
            ("/properties/profiles/0/fixedDate", json!({"timeZone": "UTC", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}), "properties.profiles[0].fixedDate.end"),
            ("/properties/profiles/0/fixedDate", json!({"timeZone": "Nowhere", "start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00"}), "properties.profiles[0].fixedDate.timeZone"),
        ];
        for (ptr, value, target) in cases {
            let mut body = az_body();
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            body.pointer_mut(parent).unwrap()[key] = value.clone();
            assert_eq!(err_target(&body), target, "{ptr} = {value}");
        }
        let mut body = az_body();
        let p = body["properties"]["profiles"][0].clone();
        body["properties"]["profiles"] = json!(vec![p.clone(); 21]);
        assert_eq!(err_target(&body), "properties.profiles");
        body["properties"]["profiles"] = json!([]);
        assert_eq!(err_target(&body), "properties.profiles");
        let mut body = az_body();
        let r = body["properties"]["profiles"][0]["rules"][0].clone();
        body["properties"]["profiles"][0]["rules"] = json!(vec![r; 11]);
        assert_eq!(err_target(&body), "properties.profiles[0].rules");
    }

    #[test]
    fn durations_go_down_to_one_second_and_custom_metrics_are_free() {
        let mut body = az_body();
        let mt = &mut body["properties"]["profiles"][0]["rules"][0]["metricTrigger"];
        mt["timeGrain"] = json!("PT1S");
        mt["timeWindow"] = json!("PT1S");
        mt["metricName"] = json!("queue length");
        mt["metricNamespace"] = json!("shoal/custom");
        body["properties"]["profiles"][0]["rules"][0]["scaleAction"]["cooldown"] = json!("PT1S");
        body["properties"]["shoal"] = json!({"evaluationInterval": "PT1S"});
        let c = parse(&body).unwrap();
        let r = &c.profiles[0].rules[0];
        assert_eq!((r.grain_secs, r.window_secs, r.cooldown_secs), (1, 1, 1));
        assert_eq!(r.metric.namespace.as_deref(), Some("shoal/custom"));
        assert_eq!(c.interval_secs, 1);
        // Platform names are matched case-insensitively and kept canonical.
        let mut body = az_body();
        body["properties"]["profiles"][0]["rules"][0]["metricTrigger"]["metricName"] =
            json!("percentage cpu");
        assert_eq!(
            parse(&body).unwrap().profiles[0].rules[0].metric.name,
            "Percentage CPU"
        );
    }

    #[test]
    fn windows_and_iana_zone_names_resolve() {
        for name in [
            "Pacific Standard Time",
            "W. Europe Standard Time",
            "UTC",
            "utc",
            "Europe/Berlin",
            "America/Los_Angeles",
            "Tokyo Standard Time",
        ] {
            assert!(resolve_time_zone(name).is_some(), "{name}");
        }
        assert!(resolve_time_zone("Pacific Time").is_none());
        assert!(resolve_time_zone("").is_none());
        // A civil fixed date is read in its zone: 09:00 in Berlin in winter is 08:00Z.
        let tz = resolve_time_zone("W. Europe Standard Time").unwrap();
        assert_eq!(
            parse_instant("2026-01-05T09:00:00", &tz).unwrap(),
            "2026-01-05T08:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn parses_vmss_ids_only() {
        assert_eq!(parse_vmss_id(SET), Some(VmssRef::new("s", "demo", "web")));
        assert_eq!(
            parse_vmss_id(&SET.to_ascii_lowercase()),
            Some(VmssRef::new("s", "demo", "web"))
        );
        assert_eq!(parse_vmss_id("/subscriptions/s/resourceGroups/demo"), None);
        assert_eq!(parse_vmss_id(&format!("{SET}/virtualMachines/0")), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_json_never_panics(s in "\\PC{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                if let Ok(set) = crate::vmss::parse_typed::<AutoscaleSetting>(&v) {
                    let _ = compile(&set);
                }
            }
        }

        #[test]
        fn mutated_fields_never_panic(
            ptr in proptest::sample::select(vec![
                "/properties/profiles/0/capacity/minimum",
                "/properties/profiles/0/rules/0/metricTrigger/timeGrain",
                "/properties/profiles/0/rules/0/metricTrigger/threshold",
                "/properties/profiles/0/rules/0/scaleAction/value",
                "/properties/targetResourceUri",
            ]),
            value in proptest::prop_oneof![
                "\\PC{0,20}".prop_map(Value::from),
                proptest::num::f64::ANY.prop_map(|f| json!(f)),
                proptest::num::i64::ANY.prop_map(Value::from),
            ],
        ) {
            let mut body = az_body();
            *body.pointer_mut(ptr).unwrap() = value;
            if let Ok(c) = parse(&body) {
                let p = &c.profiles[0];
                proptest::prop_assert!(p.minimum <= p.default && p.default <= p.maximum);
            }
        }
    }
}
