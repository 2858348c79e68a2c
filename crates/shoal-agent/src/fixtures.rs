//! Records for unit tests.

use serde_json::json;
use shoal_model::records::InstanceRecord;

/// Instance `id` of set `web` (process kind) on host `local`, of the given size.
pub fn record(id: u64, vcpus: u32, memory_mb: u64) -> InstanceRecord {
    serde_json::from_value(json!({
        "vmss": {"subscription": "s", "resource_group": "demo", "name": "web"},
        "instance_id": id, "vm_id": "v", "host": "local", "zone": null, "fault_domain": 0,
        "launch": {"generation": 1, "image_id": "i", "image_version": "1", "kind": "process", "blob_id": "b",
            "command": "c", "port": 80, "sku": "x", "vcpus": vcpus, "memory_mb": memory_mb,
            "custom_data": null, "computer_name_prefix": "web"},
        "power": "running", "restart_gen": 0, "reimage_gen": 0, "deleting": false,
        "protection": {}, "time_created": "t"
    }))
    .expect("record")
}
