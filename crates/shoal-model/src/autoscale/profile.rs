//! Validation of one autoscale profile: its name, its capacity limits (minimum ≤ default ≤
//! maximum, each within Azure's range), its rules (each in `rule.rs`) and when it
//! applies (`schedule.rs`).

use crate::ids::VmssRef;
use crate::ArmError;

use super::rule::compile_rule;
use super::schedule::profile_when;
use super::{AutoscaleProfile, CompiledProfile, MAX_CAPACITY, MAX_RULES};

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

pub(super) fn compile_profile(
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
    let when = profile_when(at, p)?;
    Ok(CompiledProfile {
        name: p.name.clone(),
        minimum,
        maximum,
        default,
        rules,
        when,
    })
}
