//! Scale-in: which instances leave when a set's capacity drops. Never a protected one;
//! zones kept balanced first, then the fault domains within the zone, then the set's
//! scale-in rule decides (Azure's order). Pure:
//! [`super::plan`] passes the active instances and how many are too many, and gets back
//! the instances to mark for deletion.

use std::collections::BTreeMap;

use shoal_model::records::InstanceRecord;
use shoal_model::vmss::ScaleInRule;

/// Marks `excess` of `active` for deletion (see [`choose_scale_in_victims`]). Returns the
/// changed records and, when protection keeps some above capacity, why.
pub(crate) fn mark_victims(
    active: &[&InstanceRecord],
    excess: usize,
    rule: ScaleInRule,
) -> (Vec<InstanceRecord>, Option<String>) {
    let victims = choose_scale_in_victims(active, excess, rule);
    let blocked = (victims.len() < excess).then(|| {
        format!(
            "{} instance(s) above capacity are protected from scale-in and stay.",
            excess - victims.len()
        )
    });
    let mut marked = Vec::new();
    for id in victims {
        if let Some(inst) = active.iter().find(|i| i.instance_id == id) {
            let mut changed = (*inst).clone();
            changed.deleting = true;
            marked.push(changed);
        }
    }
    (marked, blocked)
}

/// Picks `count` instances to remove, never a protected one. Zones are kept balanced
/// (take from the zone with the most instances first), then the zone's fault domains
/// (from the one with the most); within that the scale-in rule decides: Default and
/// NewestVM take the highest (newest) instance id, OldestVM the lowest. Ids are handed
/// out in creation order, so id order is age order.
pub fn choose_scale_in_victims(
    active: &[&InstanceRecord],
    count: usize,
    rule: ScaleInRule,
) -> Vec<u64> {
    let mut per_zone: BTreeMap<String, Vec<&InstanceRecord>> = BTreeMap::new();
    let mut zone_sizes: BTreeMap<String, usize> = BTreeMap::new();
    let mut fd_sizes: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for inst in active {
        let zone = inst.zone.clone().unwrap_or_default();
        *zone_sizes.entry(zone.clone()).or_default() += 1;
        *fd_sizes
            .entry((zone.clone(), inst.fault_domain))
            .or_default() += 1;
        if !inst.protection.protect_from_scale_in {
            per_zone.entry(zone).or_default().push(inst);
        }
    }
    for list in per_zone.values_mut() {
        match rule {
            ScaleInRule::Default | ScaleInRule::NewestVm => list.sort_by_key(|i| i.instance_id),
            ScaleInRule::OldestVm => list.sort_by_key(|i| std::cmp::Reverse(i.instance_id)),
        }
    }
    let mut victims = Vec::new();
    while victims.len() < count {
        // The zone with the most instances that still has a candidate.
        let Some(zone) = per_zone
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .max_by_key(|(z, _)| {
                (
                    zone_sizes.get(*z).copied().unwrap_or(0),
                    std::cmp::Reverse((*z).clone()),
                )
            })
            .map(|(z, _)| z.clone())
        else {
            break;
        };
        let Some(list) = per_zone.get_mut(&zone) else {
            break;
        };
        // The fault domain with the most instances among those with a candidate; the
        // rule's choice within it (the list is sorted so the choice is last).
        let fd_size = |fd: u32| fd_sizes.get(&(zone.clone(), fd)).copied().unwrap_or(0);
        let Some(largest) = list.iter().map(|i| fd_size(i.fault_domain)).max() else {
            break;
        };
        let Some(pos) = list
            .iter()
            .rposition(|i| fd_size(i.fault_domain) == largest)
        else {
            break;
        };
        let inst = list.remove(pos);
        victims.push(inst.instance_id);
        if let Some(n) = zone_sizes.get_mut(&zone) {
            *n -= 1;
        }
        if let Some(n) = fd_sizes.get_mut(&(zone.clone(), inst.fault_domain)) {
            *n -= 1;
        }
    }
    victims
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shoal_model::ids::VmssRef;
    use shoal_model::records::{PowerIntent, ProtectionPolicy};

    use super::super::tests::{converge, host, launch, set};

    #[test]
    fn oldest_vm_rule_removes_lowest_ids() {
        let hosts = [host("h1", None)];
        let mut s = set(
            4,
            None,
            serde_json::json!({"properties": {"scaleInPolicy": {"rules": ["OldestVM"]}}}),
        );
        let mut inst = Vec::new();
        converge(&mut s, &mut inst, &hosts);
        s.model.sku.as_mut().unwrap().capacity = Some(2);
        converge(&mut s, &mut inst, &hosts);
        assert_eq!(
            inst.iter().map(|i| i.instance_id).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    fn arb_instances() -> impl Strategy<Value = Vec<(u64, Option<u8>, bool)>> {
        proptest::collection::vec(
            (0u64..200, proptest::option::of(1u8..=3), any::<bool>()),
            0..40,
        )
    }

    proptest! {
        #[test]
        fn scale_in_never_picks_protected_and_keeps_zones_balanced(
            raw in arb_instances(), count in 0usize..40, rule in 0u8..3
        ) {
            let mut seen = std::collections::HashSet::new();
            let records: Vec<InstanceRecord> = raw.into_iter().filter(|(id, _, _)| seen.insert(*id)).map(|(id, zone, protected)| {
                InstanceRecord {
                    vmss: VmssRef::new("s", "rg", "web"), instance_id: id, vm_id: String::new(), host: "h".into(),
                    zone: zone.map(|z| z.to_string()), fault_domain: 0, launch: launch(1), power: PowerIntent::Running,
                    restart_gen: 0, reimage_gen: 0, deleting: false,
                    protection: ProtectionPolicy { protect_from_scale_in: protected, protect_from_scale_set_actions: false },
                    time_created: String::new(), epoch: 0, rebalance: false,
                }
            }).collect();
            let refs: Vec<&InstanceRecord> = records.iter().collect();
            let rule = [ScaleInRule::Default, ScaleInRule::NewestVm, ScaleInRule::OldestVm][rule as usize];
            let victims = choose_scale_in_victims(&refs, count, rule);
            let unprotected = records.iter().filter(|r| !r.protection.protect_from_scale_in).count();
            prop_assert_eq!(victims.len(), count.min(unprotected));
            for v in &victims {
                let r = records.iter().find(|r| r.instance_id == *v).unwrap();
                prop_assert!(!r.protection.protect_from_scale_in);
            }
            // Zone balance: a zone that lost an instance was the largest when it did, so
            // at the end it is at most one below the largest zone.
            if records.iter().all(|r| r.zone.is_some()) {
                let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
                for r in &records { *sizes.entry(r.zone.clone().unwrap()).or_default() += 1; }
                let mut lost: BTreeMap<String, usize> = BTreeMap::new();
                for v in &victims {
                    let z = records.iter().find(|r| r.instance_id == *v).unwrap().zone.clone().unwrap();
                    *sizes.get_mut(&z).unwrap() -= 1;
                    *lost.entry(z).or_default() += 1;
                }
                let max = sizes.values().copied().max().unwrap_or(0);
                let all_unprotected = records.iter().all(|r| !r.protection.protect_from_scale_in);
                if all_unprotected {
                    for z in lost.keys() {
                        prop_assert!(sizes[z] + 1 >= max, "zone {} shrank below the others: {:?}", z, sizes);
                    }
                }
            }
        }
    }
}
