//! Placement: where a new instance of a scale set goes. The zone (of the set's zones)
//! with the fewest instances, the least loaded host in that zone, the emptiest fault
//! domain. Pure: [`super::plan`] passes the set, the hosts and the instances it already
//! has, and gets back records to create.

use shoal_model::records::{HostRecord, InstanceRecord, PowerIntent, ProtectionPolicy, VmssRecord};

/// Creates `count` new instance records for `set`, numbered from the set's next instance
/// id, each placed with [`place`] beside `active` and the ones created before it.
/// Returns the records and the set's next instance id after them. `hosts` must not be
/// empty (the caller reports "no host" itself).
pub(crate) fn new_instances(
    set: &VmssRecord,
    hosts: &[HostRecord],
    active: &[&InstanceRecord],
    count: usize,
    now: &str,
    new_vm_id: &mut dyn FnMut() -> String,
) -> (Vec<InstanceRecord>, u64) {
    let mut next = set.next_instance_id;
    let mut created: Vec<InstanceRecord> = Vec::new();
    for _ in 0..count {
        let all: Vec<&InstanceRecord> = active.iter().copied().chain(created.iter()).collect();
        let (host, zone, fd) = place(set, hosts, &all);
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
    (created, next)
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
mod tests {
    use super::super::tests::{converge, host, set};
    use proptest::prelude::*;

    proptest! {
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
