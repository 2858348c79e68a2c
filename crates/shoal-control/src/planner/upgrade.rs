//! Automatic upgrade: in `Automatic` upgrade mode, every instance on an older model than
//! its set takes the set's model at once. Pure: [`super::plan`] passes the active
//! instances and the changes it already decided, and gets back the upgraded records.

use shoal_model::records::{InstanceRecord, VmssRecord};

/// The instances of `active` to move to `set`'s launch spec: those on an older
/// generation, except ones already changed (scale-in victims in `decided`) and ones
/// protected from scale-set actions.
pub(crate) fn automatic_upgrades(
    set: &VmssRecord,
    active: &[&InstanceRecord],
    decided: &[InstanceRecord],
) -> Vec<InstanceRecord> {
    let mut upgraded = Vec::new();
    for inst in active {
        let is_victim = decided.iter().any(|u| u.instance_id == inst.instance_id);
        if !is_victim
            && inst.launch.generation < set.launch.generation
            && !inst.protection.protect_from_scale_set_actions
        {
            let mut changed = (*inst).clone();
            changed.launch = super::placement::launch_for(set, &inst.launch);
            upgraded.push(changed);
        }
    }
    upgraded
}

#[cfg(test)]
mod tests {
    use super::super::tests::{converge, host, launch, set};

    #[test]
    fn automatic_mode_upgrades_but_not_protected_from_set_actions() {
        let hosts = [host("h1", None)];
        let mut s = set(
            2,
            None,
            serde_json::json!({"properties": {"upgradePolicy": {"mode": "Automatic"}}}),
        );
        let mut inst = Vec::new();
        converge(&mut s, &mut inst, &hosts);
        inst[1].protection.protect_from_scale_set_actions = true;
        s.launch = launch(2);
        converge(&mut s, &mut inst, &hosts);
        assert_eq!(inst[0].launch.generation, 2);
        assert_eq!(inst[1].launch.generation, 1);
    }
}
