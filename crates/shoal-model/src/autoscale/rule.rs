//! Validation of one autoscale rule: the metric it reads (a platform metric that exists,
//! or any custom one), its time grain and window, threshold, dimensions and scale action.

use crate::ids::VmssRef;
use crate::ArmError;

use super::compile::{duration, parse_vmss_id};
use super::{
    is_platform_namespace, platform_metric, CompiledRule, MetricKey, ScaleDirection, ScaleRule,
    ScaleType, MAX_CAPACITY, PLATFORM_METRICS, VMSS_NAMESPACE,
};

/// Resolves a metric reference: a platform metric must exist; a custom one (any other
/// namespace) may be named before anyone pushes it.
pub(super) fn metric_key(
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

pub(super) fn compile_rule(
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
