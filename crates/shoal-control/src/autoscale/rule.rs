//! One autoscale rule on its own: its metric value over the window (per grain the
//! statistic across instances, then the time aggregation across grains) and the capacity
//! its scale action asks for. Pure: the evaluator passes the rule, the metric windows and
//! the current capacity.

use jiff::Timestamp;
use shoal_model::autoscale::{
    CompiledRule, MetricStatistic, ScaleDirection, ScaleType, TimeAggregation,
};

use super::{MetricWindows, WindowQuery};

pub(super) fn combine_instances(stat: MetricStatistic, values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(match stat {
        MetricStatistic::Average => values.iter().sum::<f64>() / values.len() as f64,
        MetricStatistic::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        MetricStatistic::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        MetricStatistic::Sum => values.iter().sum(),
        MetricStatistic::Count => values.len() as f64,
    })
}

pub(super) fn aggregate(agg: TimeAggregation, values: &[f64]) -> Option<f64> {
    let last = values.last().copied()?;
    Some(match agg {
        TimeAggregation::Average => values.iter().sum::<f64>() / values.len() as f64,
        TimeAggregation::Minimum => values.iter().copied().fold(f64::INFINITY, f64::min),
        TimeAggregation::Maximum => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        TimeAggregation::Total => values.iter().sum(),
        TimeAggregation::Count => values.len() as f64,
        TimeAggregation::Last => last,
    })
}

/// A rule's metric value over its window: per grain the statistic across instances, then
/// the time aggregation across grains; `None` without data.
pub fn rule_value(
    rule: &CompiledRule,
    metrics: &dyn MetricWindows,
    capacity: i64,
    now: Timestamp,
) -> Option<f64> {
    let grains = metrics.window(&WindowQuery {
        metric: &rule.metric,
        dimensions: &rule.dimensions,
        grain_secs: rule.grain_secs,
        window_secs: rule.window_secs,
        now,
    });
    let per_grain: Vec<f64> = grains
        .iter()
        .filter_map(|g| combine_instances(rule.statistic, &g.per_instance))
        .collect();
    let v = aggregate(rule.aggregation, &per_grain)?;
    if rule.divide_per_instance {
        Some(v / capacity.max(1) as f64)
    } else {
        Some(v)
    }
}

/// The capacity a rule asks for from `current` (before clamping).
pub fn apply_action(rule: &CompiledRule, current: i64) -> i64 {
    let step = |pct: i64, round_up: bool| {
        let exact = current as f64 * pct as f64 / 100.0;
        let d = if round_up {
            exact.ceil()
        } else {
            exact.floor()
        };
        (d as i64).max(1)
    };
    match (rule.kind, rule.direction) {
        (ScaleType::ExactCount, _) => rule.value,
        (ScaleType::ChangeCount, ScaleDirection::Decrease) => current - rule.value,
        (ScaleType::ChangeCount, _) => current + rule.value,
        // A percent step moves at least one instance; out rounds up, in rounds down.
        (ScaleType::PercentChangeCount, ScaleDirection::Decrease) => {
            current - step(rule.value, false)
        }
        (ScaleType::PercentChangeCount, _) => current + step(rule.value, true),
        (ScaleType::ServiceAllowedNextValue, _) => current,
    }
}

/// Whether a metric scales with the number of instances (so the flapping check may
/// project it): platform metrics are per-instance averages; a custom metric only when
/// the rule divides it per instance.
pub(super) fn per_instance(rule: &CompiledRule) -> bool {
    rule.metric.is_platform() || rule.divide_per_instance
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::super::tests::{rule, setting, ts, NOW};
    use super::super::Grain;

    #[test]
    fn scale_types() {
        let r = |kind: &str, dir: &str, value: &str| {
            let s = setting(
                json!([{"name": "p", "capacity": {"minimum": "0", "maximum": "1000", "default": "1"},
                "rules": [rule("Percentage CPU", "GreaterThan", 1.0, dir, kind, value, "PT1M")]}]),
            );
            s.profiles[0].rules[0].clone()
        };
        assert_eq!(apply_action(&r("ChangeCount", "Increase", "3"), 10), 13);
        assert_eq!(apply_action(&r("ChangeCount", "Decrease", "3"), 10), 7);
        assert_eq!(
            apply_action(&r("PercentChangeCount", "Increase", "50"), 10),
            15
        );
        assert_eq!(
            apply_action(&r("PercentChangeCount", "Increase", "10"), 3),
            4
        );
        assert_eq!(
            apply_action(&r("PercentChangeCount", "Decrease", "10"), 3),
            2
        );
        assert_eq!(
            apply_action(&r("PercentChangeCount", "Decrease", "50"), 5),
            3
        );
        assert_eq!(apply_action(&r("ExactCount", "Increase", "7"), 2), 7);
    }

    #[test]
    fn statistics_and_time_aggregations() {
        struct Grains;
        impl MetricWindows for Grains {
            fn window(&self, q: &WindowQuery<'_>) -> Vec<Grain> {
                vec![
                    Grain {
                        start: q.now,
                        per_instance: vec![10.0, 30.0],
                    },
                    Grain {
                        start: q.now,
                        per_instance: vec![50.0, 70.0],
                    },
                ]
            }
        }
        let mk = |stat: &str, agg: &str| {
            let mut r = rule(
                "Percentage CPU",
                "GreaterThan",
                1.0,
                "Increase",
                "ChangeCount",
                "1",
                "PT1M",
            );
            r["metricTrigger"]["statistic"] = json!(stat);
            r["metricTrigger"]["timeAggregation"] = json!(agg);
            let s = setting(
                json!([{"name": "p", "capacity": {"minimum": "0", "maximum": "9", "default": "1"}, "rules": [r]}]),
            );
            rule_value(&s.profiles[0].rules[0], &Grains, 2, ts(NOW))
        };
        assert_eq!(mk("Average", "Average"), Some(40.0));
        assert_eq!(mk("Max", "Average"), Some(50.0));
        assert_eq!(mk("Min", "Maximum"), Some(50.0));
        assert_eq!(mk("Sum", "Total"), Some(160.0));
        assert_eq!(mk("Average", "Last"), Some(60.0));
        assert_eq!(mk("Count", "Total"), Some(4.0));
        assert_eq!(mk("Average", "Count"), Some(2.0));
    }
}
