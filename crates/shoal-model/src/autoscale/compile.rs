//! Validation of a whole setting: [`compile`] checks the target, the profiles (each in
//! `profile.rs`), Shoal's extension (evaluation interval, target tracking) and the
//! notifications, and answers the first violation as a 400 naming its field.

use crate::duration::parse_iso8601;
use crate::ids::VmssRef;
use crate::ArmError;

use super::profile::compile_profile;
use super::rule::metric_key;
use super::{
    AutoscaleSetting, Compiled, CompiledTargetTracking, DEFAULT_INTERVAL_SECS, MAX_PROFILES,
};

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

pub(super) fn duration(target: &str, s: &str, min: u64, max: u64) -> Result<u64, ArmError> {
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
    use super::super::tests::SET;
    use super::*;

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
}
