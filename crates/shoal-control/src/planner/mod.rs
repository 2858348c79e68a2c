//! The scale-set planner: given one set's desired and observed state, decide what to
//! write. Pure: no I/O, no clock (the caller passes `now` and fresh ids).
//!
//! Decide, then do: [`plan`] returns a [`Plan`], and `crate::controller` applies it in
//! one store transaction guarded by the revisions it read. [`plan`] combines these
//! decisions, each in its own module:
//! - [`placement`]: where new instances go (zone, host, fault domain), and where an
//!   instance whose host went Down is placed again (same id, next epoch);
//! - [`scale_in`]: which instances leave when capacity drops;
//! - [`rebalance`]: automatic zone rebalancing (`resiliencyPolicy`), create before delete;
//! - [`upgrade`]: which instances take the set's new model in `Automatic` upgrade mode.

use std::collections::HashMap;

use shoal_model::records::{HostState, InstanceRecord, InstanceState, InstanceStatus, VmssRecord};
use shoal_model::vmss::UpgradeMode;

pub mod placement;
pub mod rebalance;
pub mod scale_in;
pub mod upgrade;

pub use placement::{place, HostSlot, Resources};
pub use scale_in::choose_scale_in_victims;

/// Everything the planner looks at for one scale set.
#[derive(Debug, Clone)]
pub struct SetState<'a> {
    pub vmss: &'a VmssRecord,
    pub instances: &'a [InstanceRecord],
    pub statuses: &'a HashMap<u64, InstanceStatus>,
    /// Every host, with its state and the room left on it.
    pub hosts: &'a [HostSlot],
}

/// An instance whose host is Down (or gone): it is lost, and placed again elsewhere
/// when a host may take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub instance_id: u64,
    /// The host it was lost with.
    pub host: String,
    /// Where it runs again (same id, next epoch), if anywhere.
    pub moved_to: Option<String>,
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
    /// Instances on Down hosts (their moves are among `update`).
    pub lost: Vec<Lost>,
}

/// The most store operations one reconcile pass writes on a store with a transaction
/// limit. etcd takes at most 128 in one transaction: a larger plan (a scale-out of 1000)
/// is written over several passes, each whole and consistent on its own — the next pass
/// plans again from what is stored. The embedded stores take a plan in one pass.
pub const MAX_PASS_OPS: usize = 100;

impl Plan {
    /// The part of this plan that fits in about `budget` store operations, consistent on
    /// its own: the lowest new instance ids (the set's next id follows the last one kept),
    /// then updates with the lost-instance notes that go with them, then removals (two
    /// operations each). The set's own removal only when everything else fits.
    pub fn portion(mut self, budget: usize) -> Plan {
        let mut left = budget;
        self.create.sort_by_key(|c| c.instance_id);
        if self.create.len() > left {
            self.create.truncate(left);
            self.vmss_next_instance_id = self.create.last().map(|c| c.instance_id + 1);
        }
        left -= self.create.len();
        // A lost instance's note is a status write (and an event): two more operations,
        // kept with its move when the move is kept.
        const NOTE: usize = 2;
        let moved: std::collections::HashSet<u64> = self
            .lost
            .iter()
            .filter(|l| l.moved_to.is_some())
            .map(|l| l.instance_id)
            .collect();
        let wanted = self.update.len();
        let mut kept = 0;
        for u in &self.update {
            let cost = 1 + if moved.contains(&u.instance_id) {
                NOTE
            } else {
                0
            };
            if cost > left {
                break;
            }
            left -= cost;
            kept += 1;
        }
        self.update.truncate(kept);
        let trimmed = kept < wanted;
        let kept_ids: std::collections::HashSet<u64> =
            self.update.iter().map(|u| u.instance_id).collect();
        self.lost.retain(|l| {
            if l.moved_to.is_some() {
                return kept_ids.contains(&l.instance_id);
            }
            if NOTE <= left {
                left -= NOTE;
                return true;
            }
            false
        });
        let removals = self.remove.len();
        self.remove.truncate(left / 2);
        if trimmed || self.remove.len() < removals {
            self.remove_vmss = false;
        }
        self
    }

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
    // A host that is Down or no longer registered: what it runs is lost.
    let gone = |host: &str| {
        state
            .hosts
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(host))
            .is_none_or(|h| h.state == HostState::Down)
    };

    // Finished teardowns leave the store; so do teardowns on a host that is gone (its
    // agent stops them if it ever comes back: their records are gone).
    for inst in state.instances.iter().filter(|i| i.deleting) {
        let done = state
            .statuses
            .get(&inst.instance_id)
            .is_some_and(|s| s.state == InstanceState::Deleted);
        if done || gone(&inst.host) {
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

    let mut slots: Vec<HostSlot> = state.hosts.to_vec();
    // Lost instances are placed again first, each keeping its id (a new epoch).
    let mut current: Vec<InstanceRecord> = state
        .instances
        .iter()
        .filter(|i| !i.deleting)
        .cloned()
        .collect();
    for idx in 0..current.len() {
        if !gone(&current[idx].host) {
            continue;
        }
        let need = Resources::of(&current[idx]);
        let refs: Vec<&InstanceRecord> = current.iter().collect();
        let from = current[idx].zone.clone();
        let to = placement::place(set, &slots, &refs, &need, Some(from.as_deref()));
        let inst = &mut current[idx];
        out.lost.push(Lost {
            instance_id: inst.instance_id,
            host: inst.host.clone(),
            moved_to: to.as_ref().map(|p| p.host.clone()),
        });
        if let Some(p) = to {
            placement::take(&mut slots, &p.host, &need);
            inst.host = p.host;
            inst.zone = p.zone;
            inst.fault_domain = p.fault_domain;
            inst.epoch += 1;
            out.update.push(inst.clone());
        } else {
            out.blocked = Some(placement::no_room(set));
        }
    }

    // Instances on a draining host are replaced first, then removed (with draining).
    let draining = |host: &str| {
        state
            .hosts
            .iter()
            .any(|h| h.draining && h.name.eq_ignore_ascii_case(host))
    };
    let staying: Vec<&InstanceRecord> = current.iter().filter(|i| !draining(&i.host)).collect();
    let leaving: Vec<&InstanceRecord> = current.iter().filter(|i| draining(&i.host)).collect();
    let capacity = usize::try_from(set.model.capacity().max(0)).unwrap_or(0);

    if staying.len() < capacity {
        let all: Vec<&InstanceRecord> = current.iter().collect();
        let wanted = capacity - staying.len();
        // A replacement for a draining instance is one more than the set has.
        let (created, next) =
            placement::new_instances(set, &mut slots, &all, wanted, now, new_vm_id);
        if created.len() < wanted {
            out.blocked = Some(if state.hosts.is_empty() {
                "No host is available: start an agent (shoal serve runs one).".into()
            } else {
                placement::no_room(set)
            });
        }
        if !created.is_empty() {
            out.vmss_next_instance_id = Some(next);
            out.create = created;
        }
    } else if staying.len() > capacity {
        match rebalance::pending(&staying, state.statuses) {
            // Create before delete: the zone rebalance's new instance runs first.
            rebalance::Pending::Starting => {}
            // It never ran: it goes, not a healthy one (Azure keeps the healthy one).
            rebalance::Pending::Failed(inst) => {
                let mut changed = inst.clone();
                changed.deleting = true;
                out.update.push(changed);
            }
            rebalance::Pending::None => {
                let (victims, blocked) = scale_in::mark_victims(
                    &staying,
                    staying.len() - capacity,
                    set.model.scale_in_rule(),
                );
                out.update.extend(victims);
                out.blocked = blocked;
            }
        }
    }
    // The replacements run: the draining host's instances go.
    let replaced =
        staying.len() >= capacity && staying.iter().all(|i| rebalance::runs(i, state.statuses));
    // Zones drifted apart (a host came back after its instances moved): one instance
    // more in the emptiest zone; once it runs, the scale-in above takes one from the
    // fullest. One at a time, only when nothing else is under way.
    if out.is_empty()
        && out.lost.is_empty()
        && leaving.is_empty()
        && staying.len() == capacity
        && replaced
    {
        if let Some((created, next)) =
            rebalance::one_more(set, &mut slots, &staying, now, new_vm_id)
        {
            out.create.push(created);
            out.vmss_next_instance_id = Some(next);
        }
    }
    if replaced {
        for inst in &leaving {
            let mut changed = (*inst).clone();
            changed.deleting = true;
            out.update.push(changed);
        }
    }

    if set.model.upgrade_mode() == UpgradeMode::Automatic {
        let active: Vec<&InstanceRecord> = current.iter().filter(|i| !draining(&i.host)).collect();
        let upgrades = upgrade::automatic_upgrades(set, &active, &out.update);
        out.update.extend(upgrades);
    }
    // One write per instance: a later decision about it (a move, then a scale-in)
    // was made on the earlier one's result.
    let mut seen = std::collections::HashSet::new();
    let mut merged: Vec<InstanceRecord> = out
        .update
        .into_iter()
        .rev()
        .filter(|u| seen.insert(u.instance_id))
        .collect();
    merged.reverse();
    out.update = merged;
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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

    /// A Ready host with room for 1000 small instances.
    pub(crate) fn slot(name: &str, zone: Option<&str>) -> HostSlot {
        HostSlot {
            name: name.into(),
            zone: zone.map(String::from),
            fault_domain: 0,
            state: HostState::Ready,
            cordoned: false,
            draining: false,
            free: Resources {
                vcpus: 1000,
                memory_mb: 512_000,
                instances: u64::MAX,
            },
        }
    }

    pub(crate) fn host(name: &str, zone: Option<&str>) -> HostSlot {
        slot(name, zone)
    }

    /// A scale-out of 250 and a scale-in to 0, written in portions of at most
    /// `MAX_PASS_OPS` operations: every pass fits etcd's limit, ids stay unique and
    /// contiguous, and the set gets there.
    #[test]
    fn large_plans_are_written_in_portions_that_fit_etcd() {
        let mut vmss = set(250, None, serde_json::json!({}));
        let hosts = [slot("h1", None), slot("h2", None)];
        let mut instances: Vec<InstanceRecord> = Vec::new();
        let check = |p: &Plan| {
            let ops = p.create.len() + p.update.len() + 2 * p.remove.len() + 1;
            assert!(ops <= 128, "a pass of {ops} operations");
        };
        converge_in(&mut vmss, &mut instances, &hosts, MAX_PASS_OPS, 50, &check);
        let mut ids: Vec<u64> = instances.iter().map(|i| i.instance_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..250).collect::<Vec<u64>>());
        assert_eq!(vmss.next_instance_id, 250);
        vmss.model.sku.as_mut().expect("sku").capacity = Some(0);
        converge_in(&mut vmss, &mut instances, &hosts, MAX_PASS_OPS, 50, &check);
        assert!(instances.is_empty(), "{} left", instances.len());
    }

    /// Applies plans until nothing changes, with every teardown finishing at once.
    pub(crate) fn converge(
        set: &mut VmssRecord,
        instances: &mut Vec<InstanceRecord>,
        hosts: &[HostSlot],
    ) {
        converge_in(set, instances, hosts, usize::MAX, 10, &|_| {});
    }

    /// [`converge`] writing portions of at most `budget` operations, in at most `passes`
    /// passes, each plan shown to `check` first.
    pub(crate) fn converge_in(
        set: &mut VmssRecord,
        instances: &mut Vec<InstanceRecord>,
        hosts: &[HostSlot],
        budget: usize,
        passes: usize,
        check: &dyn Fn(&Plan),
    ) {
        let mut n = 0;
        for _ in 0..passes {
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
            )
            .portion(budget);
            if p.is_empty() {
                return;
            }
            check(&p);
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

    pub(crate) fn deleted_status() -> InstanceStatus {
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
    fn a_host_takes_no_more_instances_than_it_has_addresses() {
        let mut small = host("h1", None);
        small.free.instances = 2;
        let s = set(3, None, serde_json::json!({}));
        let p = plan(
            &SetState {
                vmss: &s,
                instances: &[],
                statuses: &HashMap::new(),
                hosts: &[small],
            },
            "now",
            &mut || "x".into(),
        );
        assert_eq!(p.create.len(), 2);
        assert!(p.blocked.is_some(), "{p:?}");
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
}
