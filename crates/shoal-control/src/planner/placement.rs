//! Placement: where a new (or lost) instance of a scale set goes.
//!
//! An instance's zone is its host's zone and its fault domain its host's fault domain.
//! The zone is the set's zone with the fewest instances (Azure's balance: zones differ
//! by at most one); `zoneBalance: true` refuses a placement that would unbalance,
//! best effort skips one unavailable zone. Within the zone, the host is the one whose
//! fault domain has the fewest of the set's instances, then the one with the fewest of
//! them, then the least allocated. Only Ready hosts that are neither cordoned nor
//! draining and have room for the size (vCPUs and memory) are considered.
//!
//! Pure: [`super::plan`] passes the set, the hosts as [`HostSlot`]s (state and free
//! room worked out by `crate::hosts`) and the instances the set already has, and gets
//! back where each goes, or nothing when no host may take it.

use std::collections::BTreeMap;

use shoal_model::records::{
    HostState, InstanceRecord, LaunchSpec, PowerIntent, ProtectionPolicy, VmssRecord,
};

/// vCPUs and memory: a host's capacity, what is allocated, what is free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub vcpus: u64,
    pub memory_mb: u64,
    /// Instances: one per instance needed; a host's room is how many more addresses (or
    /// ports) it can hand out.
    pub instances: u64,
}

impl Resources {
    /// What one instance of `vcpus` and `memory_mb` needs.
    pub fn instance(vcpus: u32, memory_mb: u64) -> Resources {
        Resources {
            vcpus: u64::from(vcpus),
            memory_mb,
            instances: 1,
        }
    }

    pub fn fits(&self, need: &Resources) -> bool {
        self.vcpus >= need.vcpus
            && self.memory_mb >= need.memory_mb
            && self.instances >= need.instances
    }

    pub fn take(&mut self, need: &Resources) {
        self.vcpus = self.vcpus.saturating_sub(need.vcpus);
        self.memory_mb = self.memory_mb.saturating_sub(need.memory_mb);
        self.instances = self.instances.saturating_sub(need.instances);
    }

    /// What one instance of `rec` needs.
    pub fn of(rec: &InstanceRecord) -> Resources {
        Resources::instance(rec.launch.vcpus, rec.launch.memory_mb)
    }
}

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSlot {
    pub name: String,
    pub zone: Option<String>,
    pub fault_domain: u32,
    pub state: HostState,
    pub cordoned: bool,
    pub draining: bool,
    /// Room left (capacity minus what is placed there).
    pub free: Resources,
}

impl HostSlot {
    /// May take new instances.
    pub fn schedulable(&self) -> bool {
        self.state == HostState::Ready && !self.cordoned && !self.draining
    }

    /// May take one more instance needing `need` now.
    pub fn takes(&self, need: &Resources) -> bool {
        self.schedulable() && self.free.fits(need)
    }
}

/// Where an instance goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub host: String,
    pub zone: Option<String>,
    pub fault_domain: u32,
}

/// Why nothing could be placed, in words for the operation's progress message.
pub(crate) fn no_room(set: &VmssRecord) -> String {
    if set.model.props().zone_balance == Some(true) {
        "No host can take another instance without unbalancing the zones (zoneBalance is on): \
         add a host in the zone that is short, or uncordon one."
            .into()
    } else {
        "No Ready host with room can take another instance: start an agent, uncordon a host or \
         free capacity."
            .into()
    }
}

/// The launches a new instance of `set` may get, in the order it tries them: the set's
/// own, or one per size of an instance mix ([`shoal_model::vmss::VirtualMachineScaleSet::mix_sizes`]).
pub fn launch_options(set: &VmssRecord) -> Vec<LaunchSpec> {
    if !set
        .model
        .sku
        .as_ref()
        .and_then(|s| s.name.as_deref())
        .is_some_and(|n| n.eq_ignore_ascii_case(shoal_model::vmss::MIX))
    {
        return vec![set.launch.clone()];
    }
    let options: Vec<LaunchSpec> = set
        .model
        .mix_sizes()
        .into_iter()
        .filter_map(|(name, _)| shoal_model::sku::lookup(name))
        .map(|size| LaunchSpec {
            sku: size.name,
            vcpus: size.vcpus,
            memory_mb: size.memory_mb,
            ..set.launch.clone()
        })
        .collect();
    if options.is_empty() {
        vec![set.launch.clone()]
    } else {
        options
    }
}

/// The set's new launch for an instance now running `current`: the set's, keeping the
/// instance's own size when it is one of the set's instance mix (an upgrade changes the
/// image and model, not the size the mix gave the instance).
pub fn launch_for(set: &VmssRecord, current: &LaunchSpec) -> LaunchSpec {
    let mut launch = set.launch.clone();
    let kept = launch_options(set)
        .into_iter()
        .find(|o| o.sku.eq_ignore_ascii_case(&current.sku));
    if let Some(size) = kept {
        launch.sku = size.sku;
        launch.vcpus = size.vcpus;
        launch.memory_mb = size.memory_mb;
    }
    launch
}

/// How many more instances needing `need` the hosts have room for.
fn room_for(slots: &[HostSlot], need: &Resources) -> u64 {
    let per = |free: u64, each: u64| free.checked_div(each).unwrap_or(u64::MAX);
    slots
        .iter()
        .filter(|s| s.takes(need))
        .map(|s| {
            per(s.free.vcpus, need.vcpus)
                .min(per(s.free.memory_mb, need.memory_mb))
                .min(per(s.free.instances, need.instances))
        })
        .fold(0u64, u64::saturating_add)
}

/// Creates up to `count` new instance records for `set`, numbered from the set's next
/// instance id, each placed with [`place`] beside `existing` and the ones created before
/// it; the chosen hosts' room shrinks in `slots`. An instance of an instance mix gets the
/// first size (in the strategy's order; `CapacityOptimized`: the size the most instances
/// still fit for) a host has room for. Returns the records (fewer when no host may take
/// more) and the set's next instance id after them.
pub(crate) fn new_instances(
    set: &VmssRecord,
    slots: &mut [HostSlot],
    existing: &[&InstanceRecord],
    count: usize,
    now: &str,
    new_vm_id: &mut dyn FnMut() -> String,
) -> (Vec<InstanceRecord>, u64) {
    let mut next = set.next_instance_id;
    let mut created: Vec<InstanceRecord> = Vec::new();
    for _ in 0..count {
        let all: Vec<&InstanceRecord> = existing.iter().copied().chain(created.iter()).collect();
        let need_of = |l: &LaunchSpec| Resources::instance(l.vcpus, l.memory_mb);
        let mut options = launch_options(set);
        if set.model.capacity_optimized() {
            options.sort_by_key(|l| std::cmp::Reverse(room_for(slots, &need_of(l))));
        }
        let chosen = options.into_iter().find_map(|l| {
            let need = need_of(&l);
            place(set, slots, &all, &need, None).map(|p| (l, p, need))
        });
        let Some((launch, p, need)) = chosen else {
            break;
        };
        take(slots, &p.host, &need);
        created.push(InstanceRecord {
            vmss: set.vmss.clone(),
            instance_id: next,
            vm_id: new_vm_id(),
            host: p.host,
            zone: p.zone,
            fault_domain: p.fault_domain,
            launch,
            power: PowerIntent::Running,
            restart_gen: 0,
            reimage_gen: 0,
            deleting: false,
            protection: ProtectionPolicy::default(),
            time_created: now.to_string(),
            epoch: 0,
            rebalance: false,
        });
        next += 1;
    }
    (created, next)
}

/// Whether some host of `zone` takes one more instance needing `need`.
pub(crate) fn zone_has_room(slots: &[HostSlot], zone: &str, need: &Resources) -> bool {
    slots
        .iter()
        .any(|s| s.takes(need) && s.zone.as_deref() == Some(zone))
}

/// Takes `need` out of the named host's room.
pub(crate) fn take(slots: &mut [HostSlot], host: &str, need: &Resources) {
    if let Some(s) = slots.iter_mut().find(|s| s.name == host) {
        s.free.take(need);
    }
}

/// Chooses where an instance of `set` needing `need` goes, given the instances the set
/// has (`existing`, which may include the instance being moved). `moving_from`: the
/// zone of a lost instance being placed again (its own zone is tried first). `None` when
/// no host may take it.
pub fn place(
    set: &VmssRecord,
    slots: &[HostSlot],
    existing: &[&InstanceRecord],
    need: &Resources,
    moving_from: Option<Option<&str>>,
) -> Option<Placement> {
    let fits = |s: &&HostSlot| s.takes(need);
    let zones: Vec<String> = set.model.zones.clone().unwrap_or_default();
    let zone = if zones.is_empty() {
        None
    } else {
        Some(choose_zone(
            set,
            &zones,
            slots,
            existing,
            need,
            moving_from,
        )?)
    };
    let candidates: Vec<&HostSlot> = slots
        .iter()
        .filter(fits)
        .filter(|s| zone.is_none() || s.zone == zone)
        .collect();
    let in_zone = |i: &&&InstanceRecord| zone.is_none() || i.zone == zone;
    let best = candidates.into_iter().min_by_key(|s| {
        let in_fd = existing
            .iter()
            .filter(in_zone)
            .filter(|i| i.fault_domain == s.fault_domain && !i.deleting)
            .count();
        let on_host = existing.iter().filter(|i| i.host == s.name).count();
        (
            in_fd,
            on_host,
            std::cmp::Reverse(s.free.vcpus),
            s.name.clone(),
        )
    })?;
    Some(Placement {
        host: best.name.clone(),
        zone,
        fault_domain: best.fault_domain,
    })
}

/// The zone of the set's `zones` a new instance goes to (see the module docs).
fn choose_zone(
    set: &VmssRecord,
    zones: &[String],
    slots: &[HostSlot],
    existing: &[&InstanceRecord],
    need: &Resources,
    moving_from: Option<Option<&str>>,
) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = zones.iter().map(|z| (z.as_str(), 0)).collect();
    for i in existing.iter().filter(|i| !i.deleting) {
        if let Some(n) = i.zone.as_deref().and_then(|z| counts.get_mut(z)) {
            *n += 1;
        }
    }
    let from = moving_from.flatten();
    if let Some(n) = from.and_then(|z| counts.get_mut(z)) {
        *n = n.saturating_sub(1);
    }
    let available = |z: &str| zone_has_room(slots, z, need);
    // A lost instance stays in its zone when it can.
    if let Some(z) = from.filter(|z| available(z) && counts.contains_key(z)) {
        return Some(z.to_string());
    }
    let strict = set.model.props().zone_balance == Some(true);
    let min = counts.values().copied().min().unwrap_or(0);
    if strict {
        // The new instance must not leave a zone more than one above the smallest.
        let target = counts
            .iter()
            .filter(|(_, n)| **n == min)
            .map(|(z, _)| *z)
            .find(|z| available(z))?;
        return Some(target.to_string());
    }
    let unavailable = counts.keys().filter(|z| !available(z)).count();
    if unavailable > 1 && counts.len() > 1 {
        // Azure: "If two or more zones are unavailable, the scale set can't proceed".
        return None;
    }
    counts
        .iter()
        .filter(|(z, _)| available(z))
        .min_by_key(|(z, n)| (**n, **z))
        .map(|(z, _)| z.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{converge, host, set, slot};
    use super::*;
    use proptest::prelude::*;

    fn arb_slot() -> impl Strategy<Value = HostSlot> {
        (
            0u8..6,
            proptest::option::of(1u8..=3),
            0u32..3,
            0u8..3,
            any::<bool>(),
            0u64..8,
        )
            .prop_map(|(n, zone, fd, state, cordoned, vcpus)| HostSlot {
                name: format!("h{n}"),
                zone: zone.map(|z| z.to_string()),
                fault_domain: fd,
                state: [HostState::Ready, HostState::NotReady, HostState::Down][state as usize],
                cordoned,
                draining: false,
                free: Resources {
                    vcpus,
                    memory_mb: vcpus * 512,
                    instances: u64::MAX,
                },
            })
    }

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

        /// Whatever the hosts: never on a cordoned, NotReady or Down host, never over a
        /// host's room, the zone and fault domain are the host's, and a strictly
        /// balanced set stays balanced.
        #[test]
        fn never_on_an_unusable_host_nor_over_capacity(
            raw in proptest::collection::vec(arb_slot(), 0..8),
            capacity in 0i64..30,
            strict in any::<bool>(),
        ) {
            let mut seen = std::collections::HashSet::new();
            let slots: Vec<HostSlot> = raw.into_iter().filter(|s| seen.insert(s.name.clone())).collect();
            let s = set(capacity, Some(vec!["1", "2", "3"]), serde_json::json!({"properties": {"zoneBalance": strict}}));
            let mut room = slots.clone();
            let usize_cap = usize::try_from(capacity).unwrap();
            let (created, _) = new_instances(&s, &mut room, &[], usize_cap, "now", &mut || "v".into());
            prop_assert!(created.len() <= usize_cap);
            for i in &created {
                let h = slots.iter().find(|h| h.name == i.host).unwrap();
                prop_assert!(h.schedulable(), "placed on {:?}", h);
                prop_assert_eq!(&h.zone, &i.zone);
                prop_assert_eq!(h.fault_domain, i.fault_domain);
            }
            for h in &slots {
                let used = created.iter().filter(|i| i.host == h.name).count() as u64;
                prop_assert!(used <= h.free.vcpus, "host {} over capacity", h.name);
            }
            if strict {
                let count = |z: &str| created.iter().filter(|i| i.zone.as_deref() == Some(z)).count();
                let counts = [count("1"), count("2"), count("3")];
                prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn fault_domains_of_a_zone_are_spread_and_each_instance_shows_its_hosts() {
        let mut a = slot("a", Some("1"));
        a.fault_domain = 0;
        let mut b = slot("b", Some("1"));
        b.fault_domain = 1;
        let mut slots = vec![a, b];
        let s = set(4, Some(vec!["1"]), serde_json::json!({}));
        let (created, _) = new_instances(&s, &mut slots, &[], 4, "now", &mut || "v".into());
        let fds: Vec<u32> = created.iter().map(|i| i.fault_domain).collect();
        assert_eq!(fds, vec![0, 1, 0, 1]);
        assert!(created
            .iter()
            .all(|i| (i.host == "a") == (i.fault_domain == 0)));
    }

    #[test]
    fn best_effort_skips_one_unavailable_zone_strict_refuses() {
        let mut slots = vec![
            slot("a", Some("1")),
            slot("b", Some("2")),
            slot("c", Some("3")),
        ];
        slots[1].state = HostState::Down;
        let s = set(3, Some(vec!["1", "2", "3"]), serde_json::json!({}));
        let (created, _) = new_instances(&s, &mut slots.clone(), &[], 3, "now", &mut || "v".into());
        assert_eq!(created.len(), 3);
        assert!(created.iter().all(|i| i.host != "b"));
        let strict = set(
            3,
            Some(vec!["1", "2", "3"]),
            serde_json::json!({"properties": {"zoneBalance": true}}),
        );
        let (created, _) = new_instances(&strict, &mut slots, &[], 3, "now", &mut || "v".into());
        assert_eq!(
            created.len(),
            2,
            "zone 2 is short: the third would unbalance"
        );
    }
}
