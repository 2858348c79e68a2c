//! The scale-set planner: given one set's desired and observed state, decide what to
//! write. Pure: no I/O, no clock (the caller passes `now` and fresh ids).
//!
//! Decide, then do: [`plan`] returns a [`Plan`], and `crate::controller` applies it in
//! one store transaction guarded by the revisions it read. [`plan`] combines three
//! decisions, each in its own module:
//! - [`placement`]: where new instances go (zone, host, fault domain);
//! - [`scale_in`]: which instances leave when capacity drops;
//! - [`upgrade`]: which instances take the set's new model in `Automatic` upgrade mode.

use std::collections::HashMap;

use shoal_model::records::{HostRecord, InstanceRecord, InstanceState, InstanceStatus, VmssRecord};
use shoal_model::vmss::UpgradeMode;

pub mod placement;
pub mod scale_in;
pub mod upgrade;

pub use placement::place;
pub use scale_in::choose_scale_in_victims;

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
            let (created, next) = placement::new_instances(
                set,
                state.hosts,
                &active,
                capacity - active.len(),
                now,
                new_vm_id,
            );
            out.vmss_next_instance_id = Some(next);
            out.create = created;
        }
    } else if active.len() > capacity {
        let (victims, blocked) =
            scale_in::mark_victims(&active, active.len() - capacity, set.model.scale_in_rule());
        out.update = victims;
        out.blocked = blocked;
    }

    if set.model.upgrade_mode() == UpgradeMode::Automatic {
        let upgrades = upgrade::automatic_upgrades(set, &active, &out.update);
        out.update.extend(upgrades);
    }
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
    pub(crate) fn converge(
        set: &mut VmssRecord,
        instances: &mut Vec<InstanceRecord>,
        hosts: &[HostRecord],
    ) {
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
