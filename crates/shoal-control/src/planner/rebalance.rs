//! Automatic zone rebalancing (`resiliencyPolicy.automaticZoneRebalancingPolicy`, Azure's
//! `Recreate` strategy with `CreateBeforeDelete` behaviour): when a set's zones differ by
//! two or more (its instances moved away from a zone that was down, and the zone is
//! back), one new instance is created in the emptiest zone that has room; once it runs,
//! the ordinary scale-in (zones first) removes one from the fullest. One at a time, and
//! only when the set is otherwise settled. Protected instances never move: a zone whose
//! instances are all protected does not count as the fullest.
//!
//! Azure also waits 60 minutes after the last write to the set and rebalances at most
//! once every 12 hours; Shoal rebalances as soon as the set is settled, because its
//! instances start in seconds.

use std::collections::{BTreeMap, HashMap};

use shoal_model::records::{InstanceRecord, InstanceState, InstanceStatus, VmssRecord};

use super::placement::{self, HostSlot, Resources};

/// Whether `inst` runs as its record asks, on its host.
pub fn runs(inst: &InstanceRecord, statuses: &HashMap<u64, InstanceStatus>) -> bool {
    statuses
        .get(&inst.instance_id)
        .is_some_and(|s| s.satisfies(inst) && s.host.eq_ignore_ascii_case(&inst.host))
}

/// A rebalance's new instance, while the set is one over capacity.
pub enum Pending<'a> {
    /// None is under way: an excess is an ordinary scale-in.
    None,
    /// The new instance does not run yet: nothing leaves until it does.
    Starting,
    /// The new instance failed: it is the one to remove.
    Failed(&'a InstanceRecord),
}

pub fn pending<'a>(
    staying: &[&'a InstanceRecord],
    statuses: &HashMap<u64, InstanceStatus>,
) -> Pending<'a> {
    let Some(new) = staying
        .iter()
        .copied()
        .find(|i| i.rebalance && !runs(i, statuses))
    else {
        return Pending::None;
    };
    match statuses.get(&new.instance_id) {
        Some(s) if s.state == InstanceState::Failed => Pending::Failed(new),
        _ => Pending::Starting,
    }
}

/// The instance to create for a rebalance, if the set wants one, and the set's next id.
pub fn one_more(
    set: &VmssRecord,
    slots: &mut [HostSlot],
    staying: &[&InstanceRecord],
    now: &str,
    new_vm_id: &mut dyn FnMut() -> String,
) -> Option<(InstanceRecord, u64)> {
    if !set.model.zone_rebalancing() {
        return None;
    }
    let zones = set.model.zones.clone().unwrap_or_default();
    if zones.len() < 2 {
        return None;
    }
    let need = Resources::instance(set.launch.vcpus, set.launch.memory_mb);
    let mut counts: BTreeMap<&str, (usize, bool)> =
        zones.iter().map(|z| (z.as_str(), (0, false))).collect();
    for i in staying {
        if let Some((n, movable)) = i.zone.as_deref().and_then(|z| counts.get_mut(z)) {
            *n += 1;
            *movable |= !i.protection.protect_from_scale_in;
        }
    }
    let room = |z: &str| placement::zone_has_room(slots, z, &need);
    let emptiest = counts
        .iter()
        .filter(|(z, _)| room(z))
        .map(|(_, (n, _))| *n)
        .min()?;
    let fullest = counts
        .values()
        .filter(|(_, movable)| *movable)
        .map(|(n, _)| *n)
        .max()?;
    if fullest < emptiest + 2 {
        return None;
    }
    let (mut created, next) = placement::new_instances(set, slots, staying, 1, now, new_vm_id);
    let mut inst = created.pop()?;
    inst.rebalance = true;
    Some((inst, next))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use shoal_model::records::{InstanceRecord, InstanceState, InstanceStatus};

    use crate::planner::tests::{deleted_status, host, set};
    use crate::planner::{plan, SetState};

    fn status(inst: &InstanceRecord, state: InstanceState) -> InstanceStatus {
        InstanceStatus {
            state,
            host: inst.host.clone(),
            launch_generation: inst.launch.generation,
            restart_gen: inst.restart_gen,
            reimage_gen: inst.reimage_gen,
            ..deleted_status()
        }
    }

    fn zones(instances: &[InstanceRecord]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for i in instances.iter().filter(|i| !i.deleting) {
            *out.entry(i.zone.clone().unwrap_or_default()).or_insert(0) += 1;
        }
        out
    }

    /// Plans for a set with zones 1, 2, 3 whose zone-2 host was away: three instances in
    /// zone 1, none in 2, three in 3, all running. Statuses come from `state_of`.
    fn step(
        s: &mut shoal_model::records::VmssRecord,
        instances: &mut Vec<InstanceRecord>,
        state_of: &dyn Fn(&InstanceRecord) -> InstanceState,
    ) -> crate::planner::Plan {
        let hosts = [
            host("a", Some("1")),
            host("b", Some("2")),
            host("c", Some("3")),
        ];
        let statuses: HashMap<u64, InstanceStatus> = instances
            .iter()
            .map(|i| {
                let st = if i.deleting {
                    deleted_status()
                } else {
                    status(i, state_of(i))
                };
                (i.instance_id, st)
            })
            .collect();
        let p = plan(
            &SetState {
                vmss: s,
                instances,
                statuses: &statuses,
                hosts: &hosts,
            },
            "now",
            &mut || "vm".into(),
        );
        instances.retain(|i| !p.remove.contains(&i.instance_id));
        for u in &p.update {
            if let Some(i) = instances
                .iter_mut()
                .find(|i| i.instance_id == u.instance_id)
            {
                *i = u.clone();
            }
        }
        instances.extend(p.create.clone());
        if let Some(next) = p.vmss_next_instance_id {
            s.next_instance_id = next;
        }
        p
    }

    fn drifted(enabled: bool) -> (shoal_model::records::VmssRecord, Vec<InstanceRecord>) {
        let mut s = set(
            6,
            Some(vec!["1", "2", "3"]),
            serde_json::json!({"properties": {"resiliencyPolicy": {
                "automaticZoneRebalancingPolicy": {"enabled": enabled}
            }}}),
        );
        let mut instances: Vec<InstanceRecord> = (0..6)
            .map(|id| {
                let mut i = crate::commands::testing::instance(id);
                let (h, z) = if id < 3 { ("a", "1") } else { ("c", "3") };
                i.vmss = s.vmss.clone();
                i.host = h.into();
                i.zone = Some(z.into());
                i.launch = s.launch.clone();
                i
            })
            .collect();
        s.next_instance_id = 6;
        instances.sort_by_key(|i| i.instance_id);
        (s, instances)
    }

    #[test]
    fn a_drifted_set_moves_one_instance_at_a_time_creating_before_deleting() {
        let (mut s, mut inst) = drifted(true);
        let running = |_: &InstanceRecord| InstanceState::Running;

        let p = step(&mut s, &mut inst, &running);
        assert_eq!(p.create.len(), 1, "{p:?}");
        assert_eq!(p.create[0].zone.as_deref(), Some("2"));
        assert!(p.create[0].rebalance);
        assert!(p.update.is_empty());

        // While the new one starts, nothing leaves.
        let new = p.create[0].instance_id;
        let p = step(&mut s, &mut inst, &|i| {
            if i.instance_id == new {
                InstanceState::Starting
            } else {
                InstanceState::Running
            }
        });
        assert!(p.is_empty(), "{p:?}");

        // Once it runs, one instance of a full zone goes; repeated, the zones even out.
        for _ in 0..12 {
            step(&mut s, &mut inst, &running);
        }
        assert_eq!(
            zones(&inst),
            BTreeMap::from([("1".into(), 2), ("2".into(), 2), ("3".into(), 2)]),
            "{inst:?}"
        );
        assert_eq!(inst.len(), 6);
        assert!(step(&mut s, &mut inst, &running).is_empty());
    }

    #[test]
    fn without_the_policy_or_with_protected_instances_nothing_moves() {
        let (mut s, mut inst) = drifted(false);
        let running = |_: &InstanceRecord| InstanceState::Running;
        assert!(step(&mut s, &mut inst, &running).is_empty());

        let (mut s, mut inst) = drifted(true);
        for i in &mut inst {
            i.protection.protect_from_scale_in = true;
        }
        assert!(step(&mut s, &mut inst, &running).is_empty());
    }

    #[test]
    fn a_new_instance_that_fails_is_the_one_removed() {
        let (mut s, mut inst) = drifted(true);
        let p = step(&mut s, &mut inst, &|_| InstanceState::Running);
        let new = p.create[0].instance_id;
        let p = step(&mut s, &mut inst, &|i| {
            if i.instance_id == new {
                InstanceState::Failed
            } else {
                InstanceState::Running
            }
        });
        assert_eq!(p.update.len(), 1, "{p:?}");
        assert_eq!(p.update[0].instance_id, new);
        assert!(p.update[0].deleting);
    }
}
