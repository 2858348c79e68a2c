//! The autoscale evaluator: `(setting, metric windows, capacity, last action, now) →
//! Decision`. Pure — the runner (`crate::autoscale_runner`) reads the store and the
//! metrics, calls [`evaluate`], and writes the decision back.
//!
//! Azure's documented semantics:
//! - the profile is chosen by fixed date first, then the recurrence that started most
//!   recently (a recurrence lasts until another one starts), then the default profile;
//! - a capacity outside the profile's minimum/maximum is brought inside at once, and
//!   one below the profile's default is raised to it when no rule has metric data;
//! - scale out when **any** out-rule fires, taking the largest result; scale in only when
//!   **all** in-rules fire, taking the largest (most conservative) result;
//! - no rule acts until its cooldown has passed since the last scale action;
//! - the flapping check: never scale in to a count at which an out-rule would fire (the
//!   per-instance metric projected as `value × current / new`); scale in by fewer
//!   instances if that avoids it, or not at all;
//! - results are clamped to the profile's minimum and maximum; `enabled: false` leaves
//!   capacity alone.
//!
//! Shoal's target tracking (`properties.shoal.targetTracking`) adds
//! `ceil(current × metric / target)` outside the tolerance band: it may raise a scale
//! out, and may scale in only when no out-rule fires.
//!
//! Which profile applies when is in [`schedule`]; one rule's metric value and the capacity
//! its action asks for are in [`rule`]; this module combines them into a [`Decision`].

use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};
use shoal_model::autoscale::{
    Compiled, CompiledRule, MetricStatistic, ScaleDirection, TimeAggregation,
};

pub mod rule;
pub mod schedule;

use rule::{aggregate, combine_instances, per_instance};
pub use rule::{apply_action, rule_value};
pub use schedule::{last_weekly_start, select_profile};
/// The evaluator reads metrics through the metrics store's window interface.
pub use shoal_metrics::{Grain, MetricWindows, WindowQuery};

/// What autoscale did last, as the runner remembers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastAction {
    pub at: Option<Timestamp>,
}

/// Why an evaluation that wanted to change capacity did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Blocked {
    /// A rule fired but its cooldown since the last action has not passed.
    Cooldown {
        /// RFC 3339.
        until: String,
    },
    /// Scale out wanted, the profile's maximum is reached.
    AtMaximum,
    /// Scale in wanted, the profile's minimum is reached.
    AtMinimum,
    /// Scaling in would at once trigger a scale out.
    Flapping,
}

/// One metric the evaluation looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSeen {
    /// `profiles[i].rules[j]` or `targetTracking`.
    pub source: String,
    pub metric: String,
    /// `None`: no data in the window (the rule does not fire).
    pub value: Option<f64>,
    /// `> 70`, `target 50 ± 10%`.
    pub condition: String,
    pub fired: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The profile in effect (`None` when none applies).
    pub profile: Option<String>,
    pub current: i64,
    /// The capacity to set, when it changes.
    pub new_capacity: Option<i64>,
    pub blocked: Option<Blocked>,
    pub reason: String,
    pub metrics: Vec<MetricSeen>,
}

impl Decision {
    /// Whether the history should record this evaluation (it changed capacity or wanted
    /// to and could not).
    pub fn is_notable(&self) -> bool {
        self.new_capacity.is_some() || self.blocked.is_some()
    }

    fn none(
        profile: Option<String>,
        current: i64,
        reason: String,
        metrics: Vec<MetricSeen>,
    ) -> Self {
        Decision {
            profile,
            current,
            new_capacity: None,
            blocked: None,
            reason,
            metrics,
        }
    }
}

struct Evaluated<'a> {
    rule: &'a CompiledRule,
    value: Option<f64>,
    fired: bool,
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Evaluates one setting. `current` is the set's capacity.
pub fn evaluate(
    setting: &Compiled,
    metrics: &dyn MetricWindows,
    current: i64,
    last: LastAction,
    now: Timestamp,
) -> Decision {
    if !setting.enabled {
        return Decision::none(
            None,
            current,
            "Autoscale is disabled; capacity is left alone.".into(),
            vec![],
        );
    }
    let Some((pi, profile)) = select_profile(setting, now).and_then(|p| {
        setting
            .profiles
            .iter()
            .position(|q| std::ptr::eq(q, p))
            .map(|i| (i, p))
    }) else {
        return Decision::none(
            None,
            current,
            "No profile applies now (only fixed dates, none current).".into(),
            vec![],
        );
    };
    let pname = Some(profile.name.clone());
    let (min, max) = (profile.minimum, profile.maximum);

    // Every rule's metric, for the decision and the history.
    let evaluated: Vec<Evaluated> = profile
        .rules
        .iter()
        .map(|rule| {
            let value = rule_value(rule, metrics, current, now);
            let fired = value.is_some_and(|v| rule.operator.holds(v, rule.threshold));
            Evaluated { rule, value, fired }
        })
        .collect();
    let mut seen: Vec<MetricSeen> = evaluated
        .iter()
        .enumerate()
        .map(|(j, e)| MetricSeen {
            source: format!("profiles[{pi}].rules[{j}]"),
            metric: e.rule.metric.name.clone(),
            value: e.value,
            condition: format!(
                "{} {} {} {}",
                e.rule.operator.symbol(),
                fmt_value(e.rule.threshold),
                e.rule.direction,
                e.rule.value
            ),
            fired: e.fired,
        })
        .collect();
    let tt = setting.target_tracking.as_ref().map(|tt| {
        let grains = metrics.window(&WindowQuery {
            metric: &tt.metric,
            dimensions: &[],
            grain_secs: tt.window_secs,
            window_secs: tt.window_secs,
            now,
        });
        let per: Vec<f64> = grains
            .iter()
            .filter_map(|g| combine_instances(MetricStatistic::Average, &g.per_instance))
            .collect();
        let value = aggregate(TimeAggregation::Average, &per);
        let desired = value.and_then(|m| {
            let ratio = m / tt.target;
            ((ratio - 1.0).abs() > tt.tolerance).then(|| (current as f64 * ratio).ceil() as i64)
        });
        seen.push(MetricSeen {
            source: "targetTracking".into(),
            metric: tt.metric.name.clone(),
            value,
            condition: format!(
                "target {} ± {:.0}%",
                fmt_value(tt.target),
                tt.tolerance * 100.0
            ),
            fired: desired.is_some_and(|d| d != current),
        });
        (tt, value, desired)
    });

    if current < min || current > max {
        let to = current.clamp(min, max);
        return Decision {
            profile: pname,
            current,
            new_capacity: Some(to),
            blocked: None,
            reason: format!(
                "Capacity {current} is outside profile '{}' ({min}..{max}): set to {to}.",
                profile.name
            ),
            metrics: seen,
        };
    }
    // Azure: when the rules' metrics cannot be read and the capacity is below the
    // profile's default, scale out to the default (never in).
    if !evaluated.is_empty()
        && evaluated.iter().all(|e| e.value.is_none())
        && current < profile.default
    {
        return Decision {
            profile: pname,
            current,
            new_capacity: Some(profile.default),
            blocked: None,
            reason: format!(
                "No metric data for the rules of profile '{}': capacity {current} raised to its default {}.",
                profile.name, profile.default
            ),
            metrics: seen,
        };
    }
    let ready = |cooldown: u64| -> Result<(), Timestamp> {
        match last.at {
            Some(at) => {
                let until = at.saturating_add((cooldown as i64).seconds()).unwrap_or(at);
                if now < until {
                    Err(until)
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    };
    let blocked = |b: Blocked, reason: String, seen: Vec<MetricSeen>| Decision {
        profile: pname.clone(),
        current,
        new_capacity: None,
        blocked: Some(b),
        reason,
        metrics: seen,
    };

    // Scale out: any out-rule (or target tracking above the band).
    let out_fired: Vec<&Evaluated> = evaluated
        .iter()
        .filter(|e| e.fired && e.rule.direction == ScaleDirection::Increase)
        .collect();
    let tt_out = tt
        .as_ref()
        .and_then(|(tt, _, d)| d.filter(|d| *d > current).map(|d| (*tt, d)));
    if !out_fired.is_empty() || tt_out.is_some() {
        if current >= max {
            return blocked(
                Blocked::AtMaximum,
                format!(
                    "Scale out wanted, but profile '{}' is at its maximum {max}.",
                    profile.name
                ),
                seen,
            );
        }
        let mut want: Option<i64> = None;
        let mut earliest_until: Option<Timestamp> = None;
        let mut why = Vec::new();
        let mut consider = |cooldown: u64, asks: i64, what: String| match ready(cooldown) {
            Ok(()) => {
                if asks > current {
                    want = Some(want.map_or(asks, |w: i64| w.max(asks)));
                    why.push(what);
                }
            }
            Err(until) => {
                earliest_until = Some(earliest_until.map_or(until, |e: Timestamp| e.min(until)));
            }
        };
        for e in &out_fired {
            let asks = apply_action(e.rule, current);
            consider(
                e.rule.cooldown_secs,
                asks,
                format!(
                    "{} {} {} {}",
                    e.rule.metric.name,
                    fmt_value(e.value.unwrap_or_default()),
                    e.rule.operator.symbol(),
                    fmt_value(e.rule.threshold)
                ),
            );
        }
        if let Some((tt, d)) = tt_out {
            consider(
                tt.cooldown_secs,
                d,
                format!("{} above target {}", tt.metric.name, fmt_value(tt.target)),
            );
        }
        return match want {
            Some(w) => {
                let to = w.min(max);
                Decision {
                    profile: pname,
                    current,
                    new_capacity: Some(to),
                    blocked: None,
                    reason: format!("Scale out {current} → {to}: {}.", why.join("; ")),
                    metrics: seen,
                }
            }
            None => match earliest_until {
                Some(until) => blocked(
                    Blocked::Cooldown {
                        until: until.to_string(),
                    },
                    format!("Scale out wanted, but the cooldown runs until {until}."),
                    seen,
                ),
                None => Decision::none(
                    pname,
                    current,
                    "Out-rules fired but ask for no more than the current capacity.".into(),
                    seen,
                ),
            },
        };
    }

    // Scale in: all in-rules (at least one), or target tracking below the band.
    let in_rules: Vec<&Evaluated> = evaluated
        .iter()
        .filter(|e| e.rule.direction == ScaleDirection::Decrease)
        .collect();
    let rules_in = !in_rules.is_empty() && in_rules.iter().all(|e| e.fired);
    let tt_in = tt
        .as_ref()
        .and_then(|(tt, _, d)| d.filter(|d| *d < current).map(|d| (*tt, d)));
    if !rules_in && tt_in.is_none() {
        return Decision::none(pname, current, "No rule fired.".into(), seen);
    }
    if current <= min {
        return blocked(
            Blocked::AtMinimum,
            format!(
                "Scale in wanted, but profile '{}' is at its minimum {min}.",
                profile.name
            ),
            seen,
        );
    }
    let mut want: Option<i64> = None;
    let mut earliest_until: Option<Timestamp> = None;
    let mut why = Vec::new();
    if rules_in {
        let mut all_ready = true;
        for e in &in_rules {
            if let Err(until) = ready(e.rule.cooldown_secs) {
                all_ready = false;
                earliest_until = Some(earliest_until.map_or(until, |x: Timestamp| x.min(until)));
            }
        }
        if all_ready {
            // The most conservative of the in-rules: the largest resulting count.
            want = in_rules.iter().map(|e| apply_action(e.rule, current)).max();
            why.extend(in_rules.iter().map(|e| {
                format!(
                    "{} {} {} {}",
                    e.rule.metric.name,
                    fmt_value(e.value.unwrap_or_default()),
                    e.rule.operator.symbol(),
                    fmt_value(e.rule.threshold)
                )
            }));
        }
    }
    if let Some((tt, d)) = tt_in {
        match ready(tt.cooldown_secs) {
            Ok(()) => {
                want = Some(want.map_or(d, |w| w.max(d)));
                why.push(format!(
                    "{} below target {}",
                    tt.metric.name,
                    fmt_value(tt.target)
                ));
            }
            Err(until) => earliest_until = Some(earliest_until.map_or(until, |x| x.min(until))),
        }
    }
    let Some(want) = want else {
        let until = earliest_until.unwrap_or(now);
        return blocked(
            Blocked::Cooldown {
                until: until.to_string(),
            },
            format!("Scale in wanted, but the cooldown runs until {until}."),
            seen,
        );
    };
    if want >= current {
        return Decision::none(
            pname,
            current,
            "In-rules fired but ask for no fewer than the current capacity.".into(),
            seen,
        );
    }
    let floor = want.max(min);
    // The flapping check: the smallest count from `floor` up at which no out-rule (nor
    // target tracking) would fire on the projected per-instance metric.
    let would_scale_out = |n: i64| -> bool {
        let scale = current as f64 / n.max(1) as f64;
        let rules = evaluated.iter().any(|e| {
            e.rule.direction == ScaleDirection::Increase
                && per_instance(e.rule)
                && e.value
                    .is_some_and(|v| e.rule.operator.holds(v * scale, e.rule.threshold))
        });
        let tracking = tt.as_ref().is_some_and(|(tt, v, _)| {
            tt.metric.is_platform()
                && v.is_some_and(|m| (m * scale / tt.target - 1.0) > tt.tolerance)
        });
        rules || tracking
    };
    match (floor..current).find(|n| !would_scale_out(*n)) {
        Some(to) => Decision {
            profile: pname,
            current,
            new_capacity: Some(to),
            blocked: None,
            reason: if to > floor {
                format!("Scale in {current} → {to} (not {floor}: fewer would scale out again): {}.", why.join("; "))
            } else {
                format!("Scale in {current} → {to}: {}.", why.join("; "))
            },
            metrics: seen,
        },
        None => blocked(
            Blocked::Flapping,
            format!(
                "Scale in wanted ({}), but any smaller count would at once trigger a scale out (flapping); staying at {current}.",
                why.join("; ")
            ),
            seen,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use shoal_model::autoscale::{compile, AutoscaleSetting};
    use std::collections::HashMap;

    const SET: &str = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";

    /// Metric values by name, the same in every grain of any window.
    #[derive(Default)]
    pub(super) struct Fake(HashMap<String, Vec<f64>>);

    impl Fake {
        pub(super) fn with(pairs: &[(&str, &[f64])]) -> Self {
            Fake(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect(),
            )
        }
    }

    impl MetricWindows for Fake {
        fn window(&self, q: &WindowQuery<'_>) -> Vec<Grain> {
            match self.0.get(&q.metric.name) {
                Some(v) => vec![Grain {
                    start: q.now,
                    per_instance: v.clone(),
                }],
                None => vec![],
            }
        }
    }

    pub(super) fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub(super) fn rule(
        metric: &str,
        op: &str,
        threshold: f64,
        dir: &str,
        kind: &str,
        value: &str,
        cooldown: &str,
    ) -> Value {
        let ns = if shoal_model::autoscale::platform_metric(metric).is_some() {
            Value::Null
        } else {
            json!("shoal/custom")
        };
        json!({
            "metricTrigger": {
                "metricName": metric, "metricNamespace": ns, "metricResourceUri": SET,
                "timeGrain": "PT1M", "statistic": "Average", "timeWindow": "PT5M",
                "timeAggregation": "Average", "operator": op, "threshold": threshold
            },
            "scaleAction": {"direction": dir, "type": kind, "value": value, "cooldown": cooldown}
        })
    }

    pub(super) fn setting(profiles: Value) -> Compiled {
        let body = json!({"location": "local", "properties": {"enabled": true, "targetResourceUri": SET, "profiles": profiles}});
        let s: AutoscaleSetting = shoal_model::vmss::parse_typed(&body).unwrap();
        compile(&s).unwrap().0
    }

    pub(super) fn cpu_profile(min: i64, max: i64) -> Value {
        json!([{
            "name": "default",
            "capacity": {"minimum": min.to_string(), "maximum": max.to_string(), "default": min.to_string()},
            "rules": [
                rule("Percentage CPU", "GreaterThan", 70.0, "Increase", "ChangeCount", "2", "PT5M"),
                rule("Percentage CPU", "LessThan", 30.0, "Decrease", "ChangeCount", "1", "PT5M"),
            ]
        }])
    }

    pub(super) const NOW: &str = "2026-11-22T10:00:00Z";

    #[test]
    fn any_out_rule_scales_out_taking_the_largest() {
        let mut p = cpu_profile(1, 10);
        p[0]["rules"].as_array_mut().unwrap().push(rule(
            "queue",
            "GreaterThan",
            100.0,
            "Increase",
            "ExactCount",
            "8",
            "PT1M",
        ));
        let s = setting(p);
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[90.0, 80.0]), ("queue", &[5.0])]),
            2,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!(d.new_capacity, Some(4), "{d:?}");
        assert!(d.reason.contains("Percentage CPU 85 > 70"), "{}", d.reason);
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[90.0]), ("queue", &[500.0])]),
            2,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!(d.new_capacity, Some(8));
        // An out-rule firing blocks every in-rule.
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[10.0]), ("queue", &[500.0])]),
            2,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!(d.new_capacity, Some(8));
    }

    #[test]
    fn scale_in_needs_every_in_rule() {
        let mut p = cpu_profile(1, 10);
        p[0]["rules"].as_array_mut().unwrap().push(rule(
            "queue",
            "LessThan",
            10.0,
            "Decrease",
            "ChangeCount",
            "2",
            "PT1M",
        ));
        let s = setting(p);
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[10.0]), ("queue", &[50.0])]),
            5,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!(d.new_capacity, None);
        assert_eq!(d.blocked, None);
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[10.0]), ("queue", &[5.0])]),
            5,
            LastAction::default(),
            ts(NOW),
        );
        // Both fire: the more conservative (−1) wins.
        assert_eq!(d.new_capacity, Some(4), "{d:?}");
        // No data is not a firing rule.
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[10.0])]),
            5,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!(d.new_capacity, None);
    }

    #[test]
    fn cooldown_blocks_and_then_lets_go() {
        let s = setting(cpu_profile(1, 10));
        let hot = Fake::with(&[("Percentage CPU", &[95.0])]);
        let last = LastAction {
            at: Some(ts("2026-11-22T09:57:00Z")),
        };
        let d = evaluate(&s, &hot, 3, last, ts(NOW));
        assert_eq!(d.new_capacity, None);
        assert_eq!(
            d.blocked,
            Some(Blocked::Cooldown {
                until: "2026-11-22T10:02:00Z".into()
            })
        );
        assert!(d.is_notable());
        let d = evaluate(&s, &hot, 3, last, ts("2026-11-22T10:02:00Z"));
        assert_eq!(d.new_capacity, Some(5));
    }

    #[test]
    fn clamps_to_the_profile_and_reports_limits() {
        let s = setting(cpu_profile(2, 4));
        let hot = Fake::with(&[("Percentage CPU", &[95.0])]);
        assert_eq!(
            evaluate(&s, &hot, 3, LastAction::default(), ts(NOW)).new_capacity,
            Some(4)
        );
        let d = evaluate(&s, &hot, 4, LastAction::default(), ts(NOW));
        assert_eq!(
            (d.new_capacity, d.blocked),
            (None, Some(Blocked::AtMaximum))
        );
        let cold = Fake::with(&[("Percentage CPU", &[5.0])]);
        let d = evaluate(&s, &cold, 2, LastAction::default(), ts(NOW));
        assert_eq!(
            (d.new_capacity, d.blocked),
            (None, Some(Blocked::AtMinimum))
        );
        // Outside the range: brought inside at once, cooldown or not.
        let recent = LastAction { at: Some(ts(NOW)) };
        assert_eq!(
            evaluate(&s, &cold, 9, recent, ts(NOW)).new_capacity,
            Some(4)
        );
        assert_eq!(
            evaluate(&s, &cold, 0, recent, ts(NOW)).new_capacity,
            Some(2)
        );
    }

    #[test]
    fn without_metric_data_capacity_rises_to_the_default_but_never_falls() {
        let s = setting(json!([{
            "name": "default",
            "capacity": {"minimum": "1", "maximum": "10", "default": "3"},
            "rules": [rule("Percentage CPU", "GreaterThan", 70.0, "Increase", "ChangeCount", "1", "PT1M")]
        }]));
        let none = Fake::default();
        let d = evaluate(&s, &none, 1, LastAction::default(), ts(NOW));
        assert_eq!(d.new_capacity, Some(3));
        assert!(d.reason.contains("No metric data"), "{}", d.reason);
        assert_eq!(
            evaluate(&s, &none, 5, LastAction::default(), ts(NOW)).new_capacity,
            None
        );
        // With data, the rules decide.
        let cold = Fake::with(&[("Percentage CPU", &[5.0])]);
        assert_eq!(
            evaluate(&s, &cold, 1, LastAction::default(), ts(NOW)).new_capacity,
            None
        );
    }

    #[test]
    fn disabled_leaves_capacity_alone() {
        let mut s = setting(cpu_profile(2, 4));
        s.enabled = false;
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[95.0])]),
            9,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!(d.new_capacity, None);
        assert!(!d.is_notable());
    }

    #[test]
    fn flapping_check_scales_in_less_or_not_at_all() {
        // Out at > 70, in at < 40 by 3. At 4 instances and 35 %: 3 → 46.7, 2 → 70 (not
        // > 70), 1 → 140. So 4 → 2, not 1.
        let s = setting(json!([{
            "name": "default",
            "capacity": {"minimum": "1", "maximum": "10", "default": "1"},
            "rules": [
                rule("Percentage CPU", "GreaterThan", 70.0, "Increase", "ChangeCount", "1", "PT1M"),
                rule("Percentage CPU", "LessThan", 40.0, "Decrease", "ChangeCount", "3", "PT1M"),
            ]
        }]));
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[35.0])]),
            4,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!(d.new_capacity, Some(2), "{d:?}");
        assert!(d.reason.contains("not 1"), "{}", d.reason);
        // At 2 instances and 39 %: 1 → 78 > 70: no scale in at all.
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[39.0])]),
            2,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!((d.new_capacity, d.blocked), (None, Some(Blocked::Flapping)));
    }

    #[test]
    fn exact_count_from_a_custom_metric() {
        let s = setting(
            json!([{"name": "p", "capacity": {"minimum": "1", "maximum": "10", "default": "1"},
            "rules": [rule("queue length", "GreaterThanOrEqual", 100.0, "Increase", "ExactCount", "6", "PT1S")]}]),
        );
        let d = evaluate(
            &s,
            &Fake::with(&[("queue length", &[120.0])]),
            1,
            LastAction::default(),
            ts(NOW),
        );
        assert_eq!(d.new_capacity, Some(6));
        assert_eq!(d.metrics[0].value, Some(120.0));
        assert!(d.metrics[0].fired);
    }

    #[test]
    fn target_tracking_within_profile_limits() {
        let body = json!({"location": "local", "properties": {"targetResourceUri": SET,
            "profiles": [{"name": "p", "capacity": {"minimum": "1", "maximum": "6", "default": "1"}, "rules": []}],
            "shoal": {"targetTracking": {"metricName": "Percentage CPU", "target": 50, "tolerance": 0.1, "cooldown": "PT10S"}}}});
        let s = compile(&shoal_model::vmss::parse_typed::<AutoscaleSetting>(&body).unwrap())
            .unwrap()
            .0;
        let at = |cpu: f64, cap: i64| {
            evaluate(
                &s,
                &Fake::with(&[("Percentage CPU", &[cpu])]),
                cap,
                LastAction::default(),
                ts(NOW),
            )
            .new_capacity
        };
        assert_eq!(at(90.0, 2), Some(4)); // ceil(2 × 1.8)
        assert_eq!(at(54.0, 2), None); // within 10 %
        assert_eq!(at(20.0, 4), Some(2)); // ceil(4 × 0.4)
        assert_eq!(at(100.0, 5), Some(6)); // clamped
        let d = evaluate(
            &s,
            &Fake::with(&[("Percentage CPU", &[90.0])]),
            2,
            LastAction {
                at: Some(ts("2026-11-22T09:59:55Z")),
            },
            ts(NOW),
        );
        assert!(matches!(d.blocked, Some(Blocked::Cooldown { .. })), "{d:?}");
    }

    fn arb_rule(dir: &'static str) -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec![
                "GreaterThan",
                "GreaterThanOrEqual",
                "LessThan",
                "LessThanOrEqual",
                "Equals",
                "NotEquals",
            ]),
            0.0f64..100.0,
            prop::sample::select(vec!["ChangeCount", "PercentChangeCount", "ExactCount"]),
            1i64..20,
            prop::bool::ANY,
        )
            .prop_map(move |(op, th, kind, v, custom)| {
                let metric = if custom { "queue" } else { "Percentage CPU" };
                rule(metric, op, th.round(), dir, kind, &v.to_string(), "PT1M")
            })
    }

    proptest! {
        #[test]
        fn result_within_limits_and_never_in_while_out(
            outs in prop::collection::vec(arb_rule("Increase"), 0..4),
            ins in prop::collection::vec(arb_rule("Decrease"), 0..4),
            min in 0i64..5,
            span in 0i64..10,
            current in 0i64..20,
            cpu in prop::collection::vec(0.0f64..100.0, 1..4),
            queue in 0.0f64..100.0,
            since in prop::option::of(0i64..120),
        ) {
            let mut rules = outs.clone();
            rules.extend(ins);
            let max = min + span;
            let s = setting(json!([{"name": "p", "capacity": {"minimum": min.to_string(), "maximum": max.to_string(), "default": min.to_string()}, "rules": rules}]));
            let m = Fake::with(&[("Percentage CPU", &cpu), ("queue", &[queue])]);
            let now = ts(NOW);
            let last = LastAction { at: since.map(|s| now.checked_sub(s.seconds()).unwrap()) };
            let d = evaluate(&s, &m, current, last, now);
            if let Some(n) = d.new_capacity {
                prop_assert!((min..=max).contains(&n), "{n} outside {min}..{max}: {d:?}");
                prop_assert!(n != current);
                prop_assert!(d.blocked.is_none());
            }
            let out_would_fire = s.profiles[0].rules.iter().any(|r| {
                r.direction == ScaleDirection::Increase
                    && rule_value(r, &m, current, now).is_some_and(|v| r.operator.holds(v, r.threshold))
            });
            if out_would_fire && (min..=max).contains(&current) {
                prop_assert!(d.new_capacity.is_none_or(|n| n > current), "scaled in while an out-rule fires: {d:?}");
            }
            // After a scale in, no per-instance out-rule fires on the projected metric. (Not
            // for a scale in to 0: no instance is left to report a per-instance metric, so
            // none can fire; as in Azure, a set at a minimum of 0 stays there until another
            // rule or a profile raises it.)
            if let Some(n) = d.new_capacity.filter(|n| *n > 0 && *n < current && (min..=max).contains(&current)) {
                for r in &s.profiles[0].rules {
                    if r.direction == ScaleDirection::Increase && r.metric.is_platform() {
                        let v = rule_value(r, &m, current, now).unwrap() * current as f64 / n as f64;
                        prop_assert!(!r.operator.holds(v, r.threshold), "flaps: {d:?}");
                    }
                }
            }
        }
    }
}
