//! `Microsoft.Insights/autoscaleSettings`: the wire shape exactly as Azure defines it
//! (`autoscale_API.json` in azure-rest-api-specs, `azure-mgmt-monitor`'s models), and its
//! validation into a [`Compiled`] setting the evaluator in `shoal-control` runs.
//!
//! A PUT body is parsed into [`AutoscaleSetting`] (field errors name their path), then
//! [`compile()`] checks every constraint Azure enforces — with durations widened down to one
//! second — and resolves time zones (IANA or Windows names) and durations once, so the
//! evaluator never re-parses strings. Nothing is stored unless `compile` succeeds.
//!
//! Beyond Azure, `properties.shoal` holds Shoal's extensions: `evaluationInterval`
//! (`PT1S`…`PT1H`, default `PT15S`) and `targetTracking` (`desired = ceil(current × metric
//! / target)` outside a tolerance band, like Kubernetes' HPA).
//!
//! The parts: [`wire`] is the JSON shape; [`compile()`] (in `compile.rs`) validates a
//! setting, with one profile's checks in `profile.rs`, one rule's in `rule.rs` and a
//! profile's fixed date or weekly recurrence (time zones included) in `schedule.rs`; the
//! result is the [`compiled`] form.

use crate::arm_enum;

mod compile;
pub mod compiled;
mod profile;
mod rule;
mod schedule;
pub mod wire;

pub use compile::{compile, parse_vmss_id};
pub use compiled::{
    Compiled, CompiledProfile, CompiledRule, CompiledTargetTracking, MetricKey, ProfileWhen,
};
pub use schedule::resolve_time_zone;
pub use wire::{
    AutoscaleNotification, AutoscaleProfile, AutoscaleProperties, AutoscaleSetting, FixedDate,
    MetricTrigger, Recurrence, RecurrentSchedule, ScaleAction, ScaleCapacity, ScaleRule,
    ScaleRuleMetricDimension, ShoalExtension, TargetTracking, WebhookNotification,
};

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
    "Request Count",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::VmssRef;
    use crate::ArmError;
    use proptest::prelude::*;
    use serde_json::json;
    use serde_json::Value;

    pub(super) const SET: &str = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";

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
