//! `properties.upgradePolicy.rollingUpgradePolicy` and `automaticOSUpgradePolicy` of a
//! scale set, and the rules that tie them to a health source.
//!
//! The policies are parsed with the set's model ([`crate::vmss`]) — booleans also as the
//! strings `"true"`/`"false"` and `MaxSurge` with a capital, as Azure's own examples write
//! them — and checked by [`validate`] (Azure's ranges; Rolling mode and automatic OS
//! upgrades need exactly the health sources Azure asks for). [`RollingPolicy`] is the
//! policy with Azure's defaults filled in, which the rolling-upgrade engine reads.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::ArmError;
use crate::vmss::{OrchestrationMode, UpgradeMode, VirtualMachineScaleSet};
use crate::{arm_enum, duration};

/// The wait for an upgraded batch to become healthy when the set does not say
/// (`properties.shoal.rollingUpgradeHealthTimeout`): Azure's five minutes.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 300;

/// A boolean as Azure accepts it: `true`, or the string `"true"` (any case).
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "'{other}' is not true or false"
        ))),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpgradePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_instance_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unhealthy_instance_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unhealthy_upgraded_instance_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_time_between_batches: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_cross_zone_upgrade: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub prioritize_unhealthy_instances: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub rollback_failed_instances_on_policy_breach: Option<bool>,
    #[serde(
        default,
        alias = "MaxSurge",
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_surge: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutomaticOsUpgradePolicy {
    #[serde(
        rename = "enableAutomaticOSUpgrade",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_automatic_os_upgrade: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_automatic_rollback: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub use_rolling_upgrade_policy: Option<bool>,
    #[serde(
        rename = "osRollingUpgradeDeferral",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_rolling_upgrade_deferral: Option<bool>,
}

/// Shoal's own extension properties of a set (`properties.shoal`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShoalSetProperties {
    /// How long a rolling-upgrade batch waits for health (ISO 8601, default PT5M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_upgrade_health_timeout: Option<String>,
}

arm_enum!(RollingStatusCode {
    RollingForward = "RollingForward",
    Cancelled = "Cancelled",
    Completed = "Completed",
    Faulted = "Faulted",
    RollingBack = "RollingBack",
});

/// A rolling upgrade policy with Azure's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingPolicy {
    pub max_batch_instance_percent: u32,
    pub max_unhealthy_instance_percent: u32,
    pub max_unhealthy_upgraded_instance_percent: u32,
    pub pause_time_between_batches: String,
    pub enable_cross_zone_upgrade: bool,
    pub prioritize_unhealthy_instances: bool,
    pub rollback_failed_instances_on_policy_breach: bool,
    pub max_surge: bool,
}

impl Default for RollingPolicy {
    fn default() -> Self {
        RollingPolicy {
            max_batch_instance_percent: 20,
            max_unhealthy_instance_percent: 20,
            max_unhealthy_upgraded_instance_percent: 20,
            pause_time_between_batches: "PT0S".into(),
            enable_cross_zone_upgrade: false,
            prioritize_unhealthy_instances: false,
            rollback_failed_instances_on_policy_breach: false,
            max_surge: false,
        }
    }
}

impl RollingPolicy {
    /// The policy `given` asks for, Azure's defaults for what it omits (validated input).
    pub fn from_set(given: Option<&RollingUpgradePolicy>) -> Self {
        let d = RollingPolicy::default();
        let Some(g) = given else { return d };
        let pct = |v: Option<i64>, dflt: u32| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(dflt);
        RollingPolicy {
            max_batch_instance_percent: pct(
                g.max_batch_instance_percent,
                d.max_batch_instance_percent,
            ),
            max_unhealthy_instance_percent: pct(
                g.max_unhealthy_instance_percent,
                d.max_unhealthy_instance_percent,
            ),
            max_unhealthy_upgraded_instance_percent: pct(
                g.max_unhealthy_upgraded_instance_percent,
                d.max_unhealthy_upgraded_instance_percent,
            ),
            pause_time_between_batches: g
                .pause_time_between_batches
                .clone()
                .unwrap_or(d.pause_time_between_batches),
            enable_cross_zone_upgrade: g.enable_cross_zone_upgrade.unwrap_or(false),
            prioritize_unhealthy_instances: g.prioritize_unhealthy_instances.unwrap_or(false),
            rollback_failed_instances_on_policy_breach: g
                .rollback_failed_instances_on_policy_breach
                .unwrap_or(false),
            max_surge: g.max_surge.unwrap_or(false),
        }
    }

    /// Seconds between batches.
    pub fn pause_secs(&self) -> u64 {
        duration::parse_iso8601(&self.pause_time_between_batches).unwrap_or(0)
    }
}

/// Which health sources a set names: `(probe, application health extension)`.
pub fn health_sources(v: &VirtualMachineScaleSet) -> (bool, bool) {
    let profile = v.profile();
    let probe = profile
        .and_then(|p| p.network_profile.as_ref())
        .and_then(|n| n.health_probe.as_ref())
        .and_then(|h| h.get("id"))
        .and_then(Value::as_str)
        .is_some_and(|id| !id.trim().is_empty());
    let extension = profile
        .and_then(|p| p.extension_profile.as_ref())
        .and_then(|e| e.get("extensions"))
        .and_then(Value::as_array)
        .is_some_and(|exts| {
            exts.iter().any(|e| {
                e.pointer("/properties/type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| {
                        t.eq_ignore_ascii_case("ApplicationHealthLinux")
                            || t.eq_ignore_ascii_case("ApplicationHealthWindows")
                    })
            })
        });
    (probe, extension)
}

impl VirtualMachineScaleSet {
    /// The set's rolling upgrade policy with Azure's defaults.
    pub fn rolling_policy(&self) -> RollingPolicy {
        RollingPolicy::from_set(
            self.props()
                .upgrade_policy
                .as_ref()
                .and_then(|u| u.rolling_upgrade_policy.as_ref()),
        )
    }

    pub fn automatic_os_upgrade(&self) -> Option<&AutomaticOsUpgradePolicy> {
        self.props()
            .upgrade_policy
            .as_ref()?
            .automatic_os_upgrade_policy
            .as_ref()
            .filter(|p| p.enable_automatic_os_upgrade == Some(true))
    }

    /// Seconds a rolling-upgrade batch waits for health.
    pub fn rolling_health_timeout_secs(&self) -> u64 {
        self.props()
            .shoal
            .as_ref()
            .and_then(|s| s.rolling_upgrade_health_timeout.as_deref())
            .and_then(duration::parse_iso8601)
            .unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECS)
    }
}

fn percent(target: &str, value: Option<i64>, min: i64) -> Result<(), ArmError> {
    match value {
        Some(v) if !(min..=100).contains(&v) => Err(ArmError::invalid_parameter(
            format!("properties.upgradePolicy.rollingUpgradePolicy.{target}"),
            format!("{target} {v} is out of range: use {min} to 100."),
        )),
        _ => Ok(()),
    }
}

/// What Azure refuses for Flexible sets: Rolling mode without the Application Health
/// extension (a probe is not enough), `rollbackFailedInstancesOnPolicyBreach` (Uniform
/// only), and `maxSurge` together with automatic OS upgrades.
fn flexible_rules(v: &VirtualMachineScaleSet, extension: bool) -> Result<(), ArmError> {
    let bad = |target: &str, message: &str| {
        Err(ArmError::new(400, "BadRequest", message).with_target(target.to_string()))
    };
    let given = v
        .props()
        .upgrade_policy
        .as_ref()
        .and_then(|u| u.rolling_upgrade_policy.as_ref());
    if v.upgrade_mode() == UpgradeMode::Rolling && !extension {
        return bad(
            "properties.upgradePolicy.mode",
            "Rolling Upgrade mode is not supported for this Virtual Machine Scale Set because a health extension was not provided: Flexible scale sets need the Application Health extension.",
        );
    }
    if given.and_then(|g| g.rollback_failed_instances_on_policy_breach) == Some(true) {
        return bad(
            "properties.upgradePolicy.rollingUpgradePolicy.rollbackFailedInstancesOnPolicyBreach",
            "rollbackFailedInstancesOnPolicyBreach is supported for Uniform orchestration only.",
        );
    }
    if given.and_then(|g| g.max_surge) == Some(true) && v.automatic_os_upgrade().is_some() {
        return bad(
            "properties.upgradePolicy.rollingUpgradePolicy.maxSurge",
            "Enabling automatic OS image upgrades and maxSurge together is not supported for Flexible orchestration.",
        );
    }
    Ok(())
}

/// Azure's ranges for the policies, and the health source Rolling mode and automatic
/// OS upgrades need (400 `BadRequest` with Azure's messages).
pub fn validate(v: &VirtualMachineScaleSet) -> Result<(), ArmError> {
    let p = v.props();
    let up = p.upgrade_policy.as_ref();
    if let Some(r) = up.and_then(|u| u.rolling_upgrade_policy.as_ref()) {
        percent("maxBatchInstancePercent", r.max_batch_instance_percent, 5)?;
        percent(
            "maxUnhealthyInstancePercent",
            r.max_unhealthy_instance_percent,
            5,
        )?;
        percent(
            "maxUnhealthyUpgradedInstancePercent",
            r.max_unhealthy_upgraded_instance_percent,
            0,
        )?;
        if let Some(pause) = &r.pause_time_between_batches {
            if duration::parse_iso8601(pause).is_none() && pause.trim() != "PT0S" {
                return Err(ArmError::invalid_parameter(
                    "properties.upgradePolicy.rollingUpgradePolicy.pauseTimeBetweenBatches",
                    format!("pauseTimeBetweenBatches '{pause}' is not an ISO 8601 duration (e.g. PT0S, PT2S, PT1M)."),
                ));
            }
        }
    }
    if let Some(t) = p
        .shoal
        .as_ref()
        .and_then(|s| s.rolling_upgrade_health_timeout.as_deref())
    {
        if duration::parse_iso8601(t).is_none_or(|s| s < 1) {
            return Err(ArmError::invalid_parameter(
                "properties.shoal.rollingUpgradeHealthTimeout",
                format!("rollingUpgradeHealthTimeout '{t}' is not an ISO 8601 duration of at least one second (e.g. PT20S, PT5M)."),
            ));
        }
    }
    let (probe, extension) = health_sources(v);
    if v.orchestration_mode() == OrchestrationMode::Flexible {
        flexible_rules(v, extension)?;
    }
    if v.upgrade_mode() == UpgradeMode::Rolling && !probe && !extension {
        return Err(ArmError::new(
            400,
            "BadRequest",
            "Rolling Upgrade mode is not supported for this Virtual Machine Scale Set because a health probe or health extension was not provided.",
        )
        .with_target("properties.upgradePolicy.mode"));
    }
    if v.automatic_os_upgrade().is_some() {
        if !probe && !extension {
            return Err(ArmError::new(
                400,
                "BadRequest",
                "Automatic OS Upgrade is not supported for this Virtual Machine Scale Set because a health probe or health extension was not specified.",
            )
            .with_target("properties.upgradePolicy.automaticOSUpgradePolicy"));
        }
        if probe && extension {
            return Err(ArmError::new(
                400,
                "BadRequest",
                "Automatic OS Upgrade is not supported for this Virtual Machine Scale Set because both a health probe and a health extension were provided. Remove the health probe or health extension prior to enabling automatic OS upgrade.",
            )
            .with_target("properties.upgradePolicy.automaticOSUpgradePolicy"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmss::{normalize, parse_typed};
    use serde_json::json;

    fn set(extra: Value) -> VirtualMachineScaleSet {
        let mut body = json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 3},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/x"}}}}
        });
        crate::vmss::merge_json(&mut body, &extra);
        let mut v: VirtualMachineScaleSet = parse_typed(&body).unwrap();
        normalize(&mut v);
        v
    }

    fn probe() -> Value {
        json!({"properties": {"virtualMachineProfile": {"networkProfile": {"healthProbe": {"id": "/lb/probes/p"}}}}})
    }

    fn extension() -> Value {
        json!({"properties": {"virtualMachineProfile": {"extensionProfile": {"extensions": [
            {"name": "h", "properties": {"publisher": "Microsoft.ManagedServices", "type": "applicationhealthlinux"}}
        ]}}}})
    }

    fn with(mut a: Value, b: Value) -> Value {
        crate::vmss::merge_json(&mut a, &b);
        a
    }

    #[test]
    fn rolling_needs_a_health_source_with_azures_message() {
        let rolling = json!({"properties": {"upgradePolicy": {"mode": "rolling"}}});
        let err = validate(&set(rolling.clone())).unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (400, "BadRequest"));
        assert!(err
            .message
            .contains("health probe or health extension was not provided"));
        validate(&set(with(rolling.clone(), probe()))).unwrap();
        validate(&set(with(rolling, extension()))).unwrap();
    }

    #[test]
    fn automatic_os_upgrade_needs_exactly_one_health_source() {
        let auto = json!({"properties": {"upgradePolicy": {"automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": true}}}});
        let err = validate(&set(auto.clone())).unwrap_err();
        assert!(err.message.contains("was not specified"), "{}", err.message);
        let err = validate(&set(with(with(auto.clone(), probe()), extension()))).unwrap_err();
        assert!(err
            .message
            .contains("both a health probe and a health extension"));
        validate(&set(with(auto, probe()))).unwrap();
    }

    #[test]
    fn flexible_sets_follow_azures_narrower_rules() {
        let flex = |extra: Value| {
            set(with(
                json!({"properties": {"orchestrationMode": "Flexible"}}),
                extra,
            ))
        };
        let rolling = json!({"properties": {"upgradePolicy": {"mode": "Rolling"}}});
        let err = validate(&flex(with(rolling.clone(), probe()))).unwrap_err();
        assert!(err.message.contains("Application Health extension"));
        validate(&flex(with(rolling, extension()))).unwrap();
        let rollback = json!({"properties": {"upgradePolicy": {"rollingUpgradePolicy": {"rollbackFailedInstancesOnPolicyBreach": true}}}});
        assert!(validate(&flex(rollback.clone())).is_err());
        validate(&set(rollback)).unwrap();
        let both = with(
            extension(),
            json!({"properties": {"upgradePolicy": {
                "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": true},
                "rollingUpgradePolicy": {"maxSurge": true}}}}),
        );
        assert!(validate(&flex(both.clone())).is_err());
        validate(&set(both)).unwrap();
    }

    #[test]
    fn policy_defaults_ranges_and_lenient_spellings() {
        let v = set(with(
            probe(),
            json!({"properties": {"upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {
                "maxBatchInstancePercent": 50, "MaxSurge": "true", "pauseTimeBetweenBatches": "PT2S"}}}}),
        ));
        validate(&v).unwrap();
        let p = v.rolling_policy();
        assert_eq!(p.max_batch_instance_percent, 50);
        assert_eq!(p.max_unhealthy_instance_percent, 20);
        assert!(p.max_surge);
        assert_eq!(p.pause_secs(), 2);
        assert_eq!(v.rolling_health_timeout_secs(), 300);
        for (field, value) in [
            ("maxBatchInstancePercent", 4),
            ("maxBatchInstancePercent", 101),
            ("maxUnhealthyInstancePercent", 4),
            ("maxUnhealthyUpgradedInstancePercent", -1),
        ] {
            let v = set(
                json!({"properties": {"upgradePolicy": {"rollingUpgradePolicy": {field: value}}}}),
            );
            let err = validate(&v).unwrap_err();
            assert_eq!(
                err.target.as_deref(),
                Some(format!("properties.upgradePolicy.rollingUpgradePolicy.{field}").as_str())
            );
        }
        let v = set(
            json!({"properties": {"upgradePolicy": {"rollingUpgradePolicy": {"maxUnhealthyUpgradedInstancePercent": 0}}}}),
        );
        validate(&v).unwrap();
        let v = set(json!({"properties": {"shoal": {"rollingUpgradeHealthTimeout": "PT20S"}}}));
        assert_eq!(v.rolling_health_timeout_secs(), 20);
        let v = set(json!({"properties": {"shoal": {"rollingUpgradeHealthTimeout": "soon"}}}));
        assert!(validate(&v).is_err());
        let err = parse_typed::<VirtualMachineScaleSet>(&json!({"properties": {"upgradePolicy": {"rollingUpgradePolicy": {"maxSurge": "maybe"}}}})).unwrap_err();
        assert_eq!(
            err.target.as_deref(),
            Some("properties.upgradePolicy.rollingUpgradePolicy.maxSurge")
        );
    }
}
