//! Fixtures for the deciders' tests: a set made by the PUT decider itself, its
//! instances, the image it names, a fixed time.

use serde_json::json;
use shoal_model::ids::VmssRef;
use shoal_model::records::{
    ImageVersionShoal, InstanceRecord, PowerIntent, ProtectionPolicy, VmssRecord,
};

use super::scale_set::{self, SetState};
use super::{Env, Limits, Preconditions, ResolvedImage, SetChange, SetCommand};

pub const IMAGE: &str =
    "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0";

pub fn env() -> Env {
    Env {
        now: "2026-11-22T10:00:00Z".parse().expect("time"),
        operation_id: "op-1".into(),
        unique_id: "unique-1".into(),
    }
}

pub fn image() -> ResolvedImage {
    ResolvedImage {
        requested: IMAGE.into(),
        id: IMAGE.into(),
        version: "1.0.0".into(),
        shoal: ImageVersionShoal {
            kind: "process".into(),
            command: "./web".into(),
            port: 8080,
            blob_id: "b".into(),
            size: 1,
            kernel: None,
            initrd: None,
            disk: None,
            cmdline: String::new(),
        },
    }
}

/// The set `s/demo/web` as a PUT of `capacity` instances creates it.
pub fn set_record(capacity: i64) -> VmssRecord {
    let body = json!({
        "location": "local",
        "sku": {"name": "Shoal_1vCPU_512MB", "capacity": capacity},
        "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": IMAGE}}}}
    });
    let cmd = SetCommand {
        vmss: VmssRef::new("s", "demo", "web"),
        change: SetChange::Put(Box::new(
            shoal_model::vmss::parse_typed(&body).expect("model"),
        )),
        preconditions: Preconditions::default(),
    };
    let state = SetState {
        existing: None,
        image: Some(image()),
        hosts: Vec::new(),
        host_zones: Default::default(),
        identities: Default::default(),
    };
    let limits = Limits {
        max_capacity: capacity.max(Limits::default().max_capacity),
    };
    let mut set = scale_set::decide(&cmd, &state, &limits, &env())
        .expect("a valid set")
        .set
        .expect("the set");
    set.model
        .properties
        .as_mut()
        .expect("properties")
        .provisioning_state = Some("Succeeded".into());
    set.operation = None;
    set
}

pub fn instance(id: u64) -> InstanceRecord {
    InstanceRecord {
        vmss: VmssRef::new("s", "demo", "web"),
        instance_id: id,
        vm_id: format!("vm-{id}"),
        host: "local".into(),
        zone: None,
        fault_domain: 0,
        launch: set_record(1).launch,
        power: PowerIntent::Running,
        restart_gen: 0,
        reimage_gen: 0,
        deleting: false,
        protection: ProtectionPolicy::default(),
        time_created: "2026-11-22T09:00:00Z".into(),
        epoch: 0,
        rebalance: false,
    }
}
