//! What the controller's next pass must look at: each change the caches report is
//! routed to the set it belongs to by the record's own fields (an instance names its
//! set; a status or health record is known by its instance's keys). Data enters as
//! [`Change`]s from the controller's caches and leaves as the sets to reconcile.

use std::collections::{BTreeMap, HashMap};

use shoal_model::ids::VmssRef;
use shoal_model::records::{health_key, HostRecord, InstanceRecord, VmssRecord};
use shoal_store::watcher::Change;

use crate::rolling::RollingUpgrade;

/// What the next pass must look at, worked out from the changes seen.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Sets to reconcile, by set key (`vmss/{sub}/{rg}/{name}`, lower case).
    pub(crate) dirty: BTreeMap<String, VmssRef>,
    /// Every set must be reconciled (hosts changed, or a resync).
    pub(crate) all: bool,
    /// Operations must be looked at again.
    pub(crate) ops: bool,
    /// The set an instance's status and health records belong to, by their keys
    /// (learnt from the instance records, which name their set).
    pub(crate) owners: HashMap<String, VmssRef>,
}

impl Routes {
    pub(crate) fn mark(&mut self, vmss: &VmssRef) {
        self.dirty.insert(vmss.key(), vmss.clone());
    }

    pub(crate) fn pending(&self) -> bool {
        !self.dirty.is_empty() || self.all || self.ops
    }

    pub(crate) fn sets(&mut self, changes: &[Change<VmssRecord>]) {
        for set in changes.iter().filter_map(Change::latest) {
            self.mark(&set.vmss);
        }
    }

    pub(crate) fn instances(&mut self, changes: &[Change<InstanceRecord>]) {
        for c in changes {
            let Some(rec) = c.latest() else { continue };
            self.mark(&rec.vmss);
            let observed = [rec.status_key(), health_key(&rec.vmss, rec.instance_id)];
            for key in observed {
                if c.new.is_some() {
                    self.owners.insert(key, rec.vmss.clone());
                } else {
                    self.owners.remove(&key);
                }
            }
        }
    }

    /// Statuses and health. One whose instance is unknown (a report that raced the
    /// instance's removal) waits for the next resync, which sweeps it.
    pub(crate) fn observed<T>(&mut self, changes: &[Change<T>]) {
        for c in changes {
            if let Some(set) = self.owners.get(&c.key).cloned() {
                self.mark(&set);
            }
        }
    }

    pub(crate) fn rolling(&mut self, changes: &[Change<RollingUpgrade>]) {
        for r in changes.iter().filter_map(Change::latest) {
            self.mark(&r.vmss);
        }
    }

    pub(crate) fn hosts(&mut self, changes: &[Change<HostRecord>]) {
        self.all |= !changes.is_empty();
    }

    pub(crate) fn ops<T>(&mut self, changes: &[Change<T>]) {
        self.ops |= !changes.is_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::records::{HealthRecord, InstanceStatus, OperationRecord};
    use shoal_store::watcher::Cached;
    use std::sync::Arc;

    fn instance(set: &VmssRef, id: u64) -> Arc<Cached<InstanceRecord>> {
        let rec: InstanceRecord = serde_json::from_value(serde_json::json!({
            "vmss": set, "instance_id": id, "vm_id": "v", "host": "local", "zone": null,
            "fault_domain": 0,
            "launch": {"generation": 1, "image_id": "i", "image_version": "1", "kind": "process",
                "blob_id": "b", "command": "c", "port": 80, "sku": "x", "vcpus": 1, "memory_mb": 512,
                "custom_data": null, "computer_name_prefix": "web"},
            "power": "running", "restart_gen": 0, "reimage_gen": 0, "deleting": false,
            "protection": {}, "time_created": "t"
        }))
        .expect("record");
        Arc::new(Cached {
            value: rec,
            revision: 1,
        })
    }

    fn change<T>(key: &str, old: Option<Arc<Cached<T>>>, new: Option<Arc<Cached<T>>>) -> Change<T> {
        Change {
            key: key.into(),
            old,
            new,
        }
    }

    #[test]
    fn changes_route_to_the_set_their_records_belong_to() {
        let web = VmssRef::new("S", "Rg", "Web");
        let mut routes = Routes::default();
        let rec = instance(&web, 3);
        routes.instances(&[change(&rec.key(), None, Some(rec.clone()))]);
        assert_eq!(routes.dirty.keys().collect::<Vec<_>>(), ["vmss/s/rg/web"]);
        routes.dirty.clear();

        // The instance's status and health go to its set; an unknown one goes nowhere.
        let status: Change<InstanceStatus> = change(&rec.status_key(), None, None);
        let health: Change<HealthRecord> = change(&health_key(&web, 3), None, None);
        routes.observed(&[status]);
        routes.observed(&[health]);
        assert_eq!(routes.dirty.keys().collect::<Vec<_>>(), ["vmss/s/rg/web"]);
        routes.dirty.clear();
        routes.observed::<InstanceStatus>(&[change(&web.status_key(4), None, None)]);
        assert!(routes.dirty.is_empty());

        // Once the instance is gone its observations are no longer routed (the removal
        // itself marks the set).
        routes.instances(&[change(&rec.key(), Some(rec.clone()), None)]);
        assert_eq!(routes.dirty.len(), 1);
        routes.dirty.clear();
        routes.observed::<InstanceStatus>(&[change(&rec.status_key(), None, None)]);
        assert!(routes.dirty.is_empty() && routes.owners.is_empty());

        // Operations and groups ask for the operations pass; hosts for every set.
        assert!(!routes.pending());
        routes.ops::<OperationRecord>(&[change("op/1", None, None)]);
        assert!(routes.ops && !routes.all);
        routes.hosts(&[change("host/local", None, None)]);
        assert!(routes.all);
    }
}
