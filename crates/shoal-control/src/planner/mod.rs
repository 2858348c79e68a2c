//! The scale-set planner: given one set's desired and observed state, decide what to
//! write. Pure: no I/O, no clock (the caller passes `now` and fresh ids).
//!
//! Decide, then do: [`plan`] returns a [`Plan`], and `crate::controller` applies it in
//! one store transaction guarded by the revisions it read.

use std::collections::{BTreeMap, HashMap};

use shoal_model::records::{
    HostRecord, InstanceRecord, InstanceState, InstanceStatus, PowerIntent, ProtectionPolicy,
    VmssRecord,
};
use shoal_model::vmss::{ScaleInRule, UpgradeMode};

/// Everything the planner looks at for one scale set.
#[derive(Debug, Clone)]
pub struct SetState<'a> {
    pub vmss: &'a VmssRecord,
    pub instances: &'a [InstanceRecord],
    pub statuses: &'a HashMap<u64, InstanceStatus>,
    pub hosts: &'a [HostRecord],
}

/// What to write for one scale set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// New instance records.
    pub create: Vec<InstanceRecord>,
    /// Changed instance records (marked for deletion, upgraded…).
    pub update: Vec<InstanceRecord>,
    /// Instances whose teardown is done: remove their desired and status records.
    pub remove: Vec<u64>,
    /// The set's record changed (next instance id).
    pub vmss_next_instance_id: Option<u64>,
    /// The set is deleted and empty: remove its record.
    pub remove_vmss: bool,
    /// Why the plan could not do everything it wanted (e.g. no host, protected instances).
    pub blocked: Option<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.update.is_empty()
            && self.remove.is_empty()
            && self.vmss_next_instance_id.is_none()
            && !self.remove_vmss
    }
}

/// Plans one reconcile. `now` stamps created instances; `new_vm_id` gives a fresh UUID.
pub fn plan(state: &SetState<'_>, now: &str, new_vm_id: &mut dyn FnMut() -> String) -> Plan {
    let mut out = Plan::default();
    let set = state.vmss;

    // Finished teardowns leave the store.
    for inst in state.instances.iter().filter(|i| i.deleting) {
        if state
            .statuses
            .get(&inst.instance_id)
            .is_some_and(|s| s.state == InstanceState::Deleted)
        {
            out.remove.push(inst.instance_id);
        }
    }

    if set.deleting {
        for inst in state.instances.iter().filter(|i| !i.deleting) {
            let mut changed = inst.clone();
            changed.deleting = true;
            out.update.push(changed);
        }
        out.remove_vmss = state.instances.len() == out.remove.len();
        return out;
    }

    let active: Vec<&InstanceRecord> = state.instances.iter().filter(|i| !i.deleting).collect();
    let capacity = usize::try_from(set.model.capacity().max(0)).unwrap_or(0);

    if active.len() < capacity {
        if state.hosts.is_empty() {
            out.blocked =
                Some("No host is available: start an agent (shoal serve runs one).".into());
        } else {
            let mut next = set.next_instance_id;
            let mut placed: Vec<&InstanceRecord> = active.clone();
            let mut created: Vec<InstanceRecord> = Vec::new();
            for _ in active.len()..capacity {
                let all: Vec<&InstanceRecord> =
                    placed.iter().copied().chain(created.iter()).collect();
                let (host, zone, fd) = place(set, state.hosts, &all);
                created.push(InstanceRecord {
                    vmss: set.vmss.clone(),
                    instance_id: next,
                    vm_id: new_vm_id(),
                    host,
                    zone,
                    fault_domain: fd,
                    launch: set.launch.clone(),
                    power: PowerIntent::Running,
                    restart_gen: 0,
                    reimage_gen: 0,
                    deleting: false,
                    protection: ProtectionPolicy::default(),
                    time_created: now.to_string(),
                });
                next += 1;
            }
            placed.clear();
            out.vmss_next_instance_id = Some(next);
            out.create = created;
        }
    } else if active.len() > capacity {
        let victims =
            choose_scale_in_victims(&active, active.len() - capacity, set.model.scale_in_rule());
        if victims.len() < active.len() - capacity {
            out.blocked = Some(format!(
                "{} instance(s) above capacity are protected from scale-in and stay.",
                active.len() - capacity - victims.len()
            ));
        }
        for id in victims {
            if let Some(inst) = active.iter().find(|i| i.instance_id == id) {
                let mut changed = (*inst).clone();
                changed.deleting = true;
                out.update.push(changed);
            }
        }
    }

    if set.model.upgrade_mode() == UpgradeMode::Automatic {
        for inst in &active {
            let is_victim = out.update.iter().any(|u| u.instance_id == inst.instance_id);
            if !is_victim
                && inst.launch.generation < set.launch.generation
                && !inst.protection.protect_from_scale_set_actions
            {
                let mut changed = (*inst).clone();
                changed.launch = set.launch.clone();
                out.update.push(changed);
            }
        }
    }
    out
}

/// Picks `count` instances to remove, never a protected one. Zones are kept balanced
/// (take from the zone with the most instances first); within a zone the scale-in rule
/// decides: Default and NewestVM take the highest (newest) instance id, OldestVM the
/// lowest. Ids are handed out in creation order, so id order is age order.
pub fn choose_scale_in_victims(
    active: &[&InstanceRecord],
    count: usize,
    rule: ScaleInRule,
) -> Vec<u64> {
    let mut per_zone: BTreeMap<String, Vec<&InstanceRecord>> = BTreeMap::new();
    let mut zone_sizes: BTreeMap<String, usize> = BTreeMap::new();
    for inst in active {
        let zone = inst.zone.clone().unwrap_or_default();
        *zone_sizes.entry(zone.clone()).or_default() += 1;
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
        if let Some(inst) = per_zone.get_mut(&zone).and_then(|l| l.pop()) {
            victims.push(inst.instance_id);
            if let Some(n) = zone_sizes.get_mut(&zone) {
                *n -= 1;
            }
        }
    }
    victims
}

/// Chooses host, zone and fault domain for a new instance of `set`, given the instances
/// it already has: the zone (of the set's zones) with the fewest instances, a host in
/// that zone (any host when none is), the least loaded one, and the emptiest fault domain.
pub fn place(
    set: &VmssRecord,
    hosts: &[HostRecord],
    existing: &[&InstanceRecord],
) -> (String, Option<String>, u32) {
    let zones: Vec<String> = set.model.zones.clone().unwrap_or_default();
    let zone = if zones.is_empty() {
        None
    } else {
        zones
            .iter()
            .min_by_key(|z| {
                existing
                    .iter()
                    .filter(|i| i.zone.as_deref() == Some(z.as_str()))
                    .count()
            })
            .cloned()
    };
    let count_on = |h: &HostRecord| existing.iter().filter(|i| i.host == h.name).count();
    let in_zone: Vec<&HostRecord> = match &zone {
        Some(z) => hosts
            .iter()
            .filter(|h| h.zone.as_deref() == Some(z.as_str()))
            .collect(),
        None => Vec::new(),
    };
    let candidates: Vec<&HostRecord> = if in_zone.is_empty() {
        hosts.iter().collect()
    } else {
        in_zone
    };
    let host = candidates
        .iter()
        .min_by_key(|h| (count_on(h), h.name.clone()))
        .map(|h| h.name.clone())
        .unwrap_or_default();
    let fd_count = u32::try_from(
        set.model
            .props()
            .platform_fault_domain_count
            .unwrap_or(1)
            .clamp(1, 5),
    )
    .unwrap_or(1);
    let fd = (0..fd_count)
        .min_by_key(|fd| {
            existing
                .iter()
                .filter(|i| i.fault_domain == *fd && i.zone == zone)
                .count()
        })
        .unwrap_or(0);
    (host, zone, fd)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use shoal_model::ids::VmssRef;
    use shoal_model::records::LaunchSpec;
    use shoal_model::vmss::{normalize, parse_typed, VirtualMachineScaleSet};

    pub(crate) fn launch(generation: u64) -> LaunchSpec {
        LaunchSpec {
            generation,
            image_id: "img".into(),
            image_version: "1.0.0".into(),
            kind: "process".into(),
            blob_id: "b".into(),
            command: "./web".into(),
            port: 8080,
            sku: "Shoal_1vCPU_512MB".into(),
            vcpus: 1,
            memory_mb: 512,
            custom_data: None,
            computer_name_prefix: "web".into(),
            terminate_notice_secs: None,
        }
    }

    pub(crate) fn set(
        capacity: i64,
        zones: Option<Vec<&str>>,
        extra: serde_json::Value,
    ) -> VmssRecord {
        let mut body = serde_json::json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": capacity},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/x"}}}}
        });
        shoal_model::vmss::merge_json(&mut body, &extra);
        if let Some(z) = zones {
            body["zones"] = serde_json::json!(z);
        }
        let mut model: VirtualMachineScaleSet = parse_typed(&body).unwrap();
        normalize(&mut model);
        VmssRecord {
            vmss: VmssRef::new("s", "rg", "web"),
            model,
            launch: launch(1),
            next_instance_id: 0,
            deleting: false,
            operation: None,
            services: serde_json::Value::Null,
        }
    }

    pub(crate) fn host(name: &str, zone: Option<&str>) -> HostRecord {
        HostRecord {
            name: name.into(),
            zone: zone.map(String::from),
            fault_domain: None,
            agent_url: String::new(),
            driver: "fake".into(),
            limits: String::new(),
            network: String::new(),
            vcpus: 2,
            memory_mb: 1024,
            last_seen: String::new(),
        }
    }

    /// Applies plans until nothing changes, with every teardown finishing at once.
    fn converge(set: &mut VmssRecord, instances: &mut Vec<InstanceRecord>, hosts: &[HostRecord]) {
        let mut n = 0;
        for _ in 0..10 {
            let statuses: HashMap<u64, InstanceStatus> = instances
                .iter()
                .filter(|i| i.deleting)
                .map(|i| (i.instance_id, deleted_status()))
                .collect();
            let p = plan(
                &SetState {
                    vmss: set,
                    instances,
                    statuses: &statuses,
                    hosts,
                },
                "now",
                &mut || {
                    n += 1;
                    format!("vm-{n}")
                },
            );
            if p.is_empty() {
                return;
            }
            instances.retain(|i| !p.remove.contains(&i.instance_id));
            for u in p.update {
                if let Some(i) = instances
                    .iter_mut()
                    .find(|i| i.instance_id == u.instance_id)
                {
                    *i = u;
                }
            }
            instances.extend(p.create);
            if let Some(next) = p.vmss_next_instance_id {
                set.next_instance_id = next;
            }
        }
        panic!("did not converge");
    }

    fn deleted_status() -> InstanceStatus {
        InstanceStatus {
            state: InstanceState::Deleted,
            host: "h".into(),
            launch_generation: 0,
            restart_gen: 0,
            reimage_gen: 0,
            address: None,
            port: None,
            pid: None,
            message: None,
            restarts: 0,
            since: String::new(),
            limits: None,
            network: None,
        }
    }

    #[test]
    fn scales_out_then_in_removing_highest_ids_and_never_reusing_ids() {
        let hosts = [host("h1", None)];
        let mut s = set(3, None, serde_json::json!({}));
        let mut inst = Vec::new();
        converge(&mut s, &mut inst, &hosts);
        assert_eq!(
            inst.iter().map(|i| i.instance_id).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        s.model.sku.as_mut().unwrap().capacity = Some(1);
        converge(&mut s, &mut inst, &hosts);
        assert_eq!(
            inst.iter().map(|i| i.instance_id).collect::<Vec<_>>(),
            vec![0]
        );
        s.model.sku.as_mut().unwrap().capacity = Some(2);
        converge(&mut s, &mut inst, &hosts);
        assert_eq!(
            inst.iter().map(|i| i.instance_id).collect::<Vec<_>>(),
            vec![0, 3]
        );
    }

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

    #[test]
    fn no_host_blocks_with_a_reason() {
        let s = set(2, None, serde_json::json!({}));
        let p = plan(
            &SetState {
                vmss: &s,
                instances: &[],
                statuses: &HashMap::new(),
                hosts: &[],
            },
            "now",
            &mut || "x".into(),
        );
        assert!(p.create.is_empty());
        assert!(p.blocked.unwrap().contains("No host"));
    }

    #[test]
    fn deleting_set_tears_down_every_instance_then_itself() {
        let hosts = [host("h1", None)];
        let mut s = set(3, None, serde_json::json!({}));
        let mut inst = Vec::new();
        converge(&mut s, &mut inst, &hosts);
        s.deleting = true;
        let p = plan(
            &SetState {
                vmss: &s,
                instances: &inst,
                statuses: &HashMap::new(),
                hosts: &hosts,
            },
            "now",
            &mut || "x".into(),
        );
        assert_eq!(p.update.len(), 3);
        assert!(p.update.iter().all(|u| u.deleting));
        assert!(!p.remove_vmss);
        let deleted: Vec<InstanceRecord> = p.update;
        let statuses = deleted
            .iter()
            .map(|i| (i.instance_id, deleted_status()))
            .collect();
        let p = plan(
            &SetState {
                vmss: &s,
                instances: &deleted,
                statuses: &statuses,
                hosts: &hosts,
            },
            "now",
            &mut || "x".into(),
        );
        assert!(p.remove_vmss);
        assert_eq!(p.remove.len(), 3);
    }

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
                    time_created: String::new(),
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

        #[test]
        fn placement_spreads_zones_evenly(capacity in 0i64..60) {
            let hosts = [host("h1", Some("1")), host("h2", Some("2")), host("h3", Some("3"))];
            let mut s = set(capacity, Some(vec!["1", "2", "3"]), serde_json::json!({}));
            let mut inst = Vec::new();
            converge(&mut s, &mut inst, &hosts);
            prop_assert_eq!(inst.len() as i64, capacity);
            let count = |z: &str| inst.iter().filter(|i| i.zone.as_deref() == Some(z)).count();
            let counts = [count("1"), count("2"), count("3")];
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            for i in &inst {
                let h = hosts.iter().find(|h| h.name == i.host).unwrap();
                prop_assert_eq!(&h.zone, &i.zone);
            }
        }
    }
}
