//! The store's keyspace, in one place: every prefix and every key Shoal writes.
//!
//! Keys are `{kind}/{path}` with the path's names lower-cased (ARM names match
//! case-insensitively), so a prefix lists one kind, optionally narrowed to a subscription,
//! a resource group or a set. Who writes what:
//!
//! | prefix | record | written by |
//! |---|---|---|
//! | `rg/{sub}/{rg}` | resource group (ARM JSON) | API |
//! | `gallery/…`, `galleryimage/…`, `imageversion/…` | gallery, image, version | API |
//! | `blob/{id}` | uploaded bundle's metadata | API |
//! | `vmss/{sub}/{rg}/{set}` | `VmssRecord` (model + bookkeeping) | API, controller |
//! | `instance/{sub}/{rg}/{set}/{id:08}` | `InstanceRecord` (desired) | controller, API actions |
//! | `status/{sub}/{rg}/{set}/{id:08}` | `InstanceStatus` (observed) | the instance's agent |
//! | `health/{sub}/{rg}/{set}/{id:08}` | `HealthRecord` | balancers, health extension |
//! | `drainack/{sub}/{rg}/{set}/{id:08}/{balancer}` | `DrainAck` | balancers |
//! | `op/{id}` | `OperationRecord` | API, controller |
//! | `host/{name}` | `HostRecord` | agents (registration), API (cordon, drain) |
//! | `heartbeat/{name}` | `Heartbeat` (when the host's agent last called) | API |
//! | `hoststate/{name}` | `HostStateRecord` (Ready, NotReady, Down) | controller |
//! | `balancer/{name}` | `BalancerRecord` | balancers |
//! | `lb/…`, `appgw/…` | load balancers, application gateways | API |
//! | `autoscale/…`, `autoscale-history/…` | autoscale settings, their history | API, autoscale |
//! | `rollingupgrade/{sub}/{rg}/{set}` | the latest rolling upgrade | API, controller |

use crate::ids::VmssRef;

pub const RESOURCE_GROUP: &str = "rg/";
pub const GALLERY: &str = "gallery/";
pub const GALLERY_IMAGE: &str = "galleryimage/";
pub const IMAGE_VERSION: &str = "imageversion/";
pub const BLOB: &str = "blob/";
pub const VMSS: &str = "vmss/";
pub const INSTANCE: &str = "instance/";
pub const STATUS: &str = "status/";
pub const HEALTH: &str = "health/";
pub const DRAIN_ACK: &str = "drainack/";
pub const OPERATION: &str = "op/";
pub const HOST: &str = "host/";
pub const HEARTBEAT: &str = "heartbeat/";
pub const HOST_STATE: &str = "hoststate/";
pub const BALANCER: &str = "balancer/";
pub const LOAD_BALANCER: &str = "lb/";
pub const APP_GATEWAY: &str = "appgw/";
pub const AUTOSCALE: &str = "autoscale/";
pub const AUTOSCALE_HISTORY: &str = "autoscale-history/";
pub const ROLLING_UPGRADE: &str = "rollingupgrade/";

fn lower(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("/")
}

/// `{kind}{sub}/` — everything of one kind in a subscription.
pub fn in_subscription(kind: &str, sub: &str) -> String {
    format!("{kind}{}/", sub.to_ascii_lowercase())
}

/// `{kind}{sub}/{rg}/` — everything of one kind in a resource group.
pub fn in_group(kind: &str, sub: &str, rg: &str) -> String {
    format!("{kind}{}/", lower(&[sub, rg]))
}

/// `{kind}{sub}/{rg}/{name}` — one resource of a kind in a group.
pub fn resource(kind: &str, sub: &str, rg: &str, name: &str) -> String {
    format!("{kind}{}", lower(&[sub, rg, name]))
}

/// The part of a key after its kind (`vmss/s/rg/web` → `s/rg/web`).
pub fn path_of<'a>(kind: &str, key: &'a str) -> &'a str {
    key.strip_prefix(kind).unwrap_or(key)
}

pub fn rg_key(sub: &str, rg: &str) -> String {
    format!("{RESOURCE_GROUP}{}", lower(&[sub, rg]))
}

pub fn gallery_key(sub: &str, rg: &str, g: &str) -> String {
    resource(GALLERY, sub, rg, g)
}

pub fn image_key(sub: &str, rg: &str, g: &str, i: &str) -> String {
    format!("{GALLERY_IMAGE}{}", lower(&[sub, rg, g, i]))
}

pub fn image_version_prefix(sub: &str, rg: &str, g: &str, i: &str) -> String {
    format!("{IMAGE_VERSION}{}/", lower(&[sub, rg, g, i]))
}

pub fn image_version_key(sub: &str, rg: &str, g: &str, i: &str, v: &str) -> String {
    format!(
        "{}{}",
        image_version_prefix(sub, rg, g, i),
        v.to_ascii_lowercase()
    )
}

/// `{sub}/{rg}/{set}` of a set, lower-cased: the path every per-set key shares.
fn set_path(vmss: &VmssRef) -> String {
    lower(&[&vmss.subscription, &vmss.resource_group, &vmss.name])
}

pub fn vmss_key(vmss: &VmssRef) -> String {
    format!("{VMSS}{}", set_path(vmss))
}

pub fn instance_prefix(vmss: &VmssRef) -> String {
    format!("{INSTANCE}{}/", set_path(vmss))
}

pub fn instance_key(vmss: &VmssRef, id: u64) -> String {
    format!("{INSTANCE}{}/{id:08}", set_path(vmss))
}

pub fn status_prefix(vmss: &VmssRef) -> String {
    format!("{STATUS}{}/", set_path(vmss))
}

pub fn status_key(vmss: &VmssRef, id: u64) -> String {
    format!("{STATUS}{}/{id:08}", set_path(vmss))
}

pub fn health_prefix(vmss: &VmssRef) -> String {
    format!("{HEALTH}{}/", set_path(vmss))
}

pub fn health_key(vmss: &VmssRef, id: u64) -> String {
    format!("{HEALTH}{}/{id:08}", set_path(vmss))
}

pub fn drain_ack_prefix(vmss: &VmssRef, id: u64) -> String {
    format!("{DRAIN_ACK}{}/{id:08}/", set_path(vmss))
}

pub fn rolling_upgrade_key(vmss: &VmssRef) -> String {
    format!("{ROLLING_UPGRADE}{}", set_path(vmss))
}

pub fn operation_key(id: &str) -> String {
    format!("{OPERATION}{id}")
}

pub fn host_key(name: &str) -> String {
    format!("{HOST}{}", name.to_ascii_lowercase())
}

pub fn heartbeat_key(name: &str) -> String {
    format!("{HEARTBEAT}{}", name.to_ascii_lowercase())
}

pub fn host_state_key(name: &str) -> String {
    format!("{HOST_STATE}{}", name.to_ascii_lowercase())
}

pub fn balancer_key(name: &str) -> String {
    format!("{BALANCER}{}", name.to_ascii_lowercase())
}

pub fn blob_key(id: &str) -> String {
    format!("{BLOB}{id}")
}

/// The history key of an autoscale setting stored at `setting_key`.
pub fn autoscale_history_key(setting_key: &str) -> String {
    format!("{AUTOSCALE_HISTORY}{}", path_of(AUTOSCALE, setting_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_set_share_its_path_and_sort_by_instance_id() {
        let web = VmssRef::new("S", "Rg", "Web");
        assert_eq!(vmss_key(&web), "vmss/s/rg/web");
        assert_eq!(instance_key(&web, 3), "instance/s/rg/web/00000003");
        assert!(instance_key(&web, 3).starts_with(&instance_prefix(&web)));
        assert!(instance_key(&web, 9) < instance_key(&web, 10));
        assert_eq!(status_key(&web, 3), "status/s/rg/web/00000003");
        assert_eq!(health_key(&web, 3), "health/s/rg/web/00000003");
        assert!(health_key(&web, 3).starts_with(&health_prefix(&web)));
        assert_eq!(drain_ack_prefix(&web, 3), "drainack/s/rg/web/00000003/");
        assert_eq!(rolling_upgrade_key(&web), "rollingupgrade/s/rg/web");
        assert_eq!(in_group(VMSS, "S", "Rg"), "vmss/s/rg/");
        assert!(vmss_key(&web).starts_with(&in_subscription(VMSS, "s")));
        assert_eq!(
            autoscale_history_key("autoscale/s/rg/auto"),
            "autoscale-history/s/rg/auto"
        );
        assert_eq!(
            image_version_key("S", "R", "G", "I", "1.0.0"),
            "imageversion/s/r/g/i/1.0.0"
        );
    }
}
