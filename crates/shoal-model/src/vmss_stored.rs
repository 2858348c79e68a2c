//! Scale-set properties Azure defines that Shoal stores and returns as the client sent
//! them, without acting on them (the README's compatibility table says "stored only").
//!
//! They enter with the PUT body (flattened into [`crate::vmss`]'s structs, so the wire
//! shape is Azure's) and leave in every GET; nothing else reads them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Under `properties`: dedicated hosts, SKU mixes, scheduled events, placement knobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSetProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_group: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_events_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constrained_maximum_capacity: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zonal_platform_fault_domain_align_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_speed_interconnect_placement: Option<String>,
}

/// Under `properties.scaleInPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredScaleIn {
    #[serde(
        rename = "prioritizeUnhealthyVMs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prioritize_unhealthy_vms: Option<bool>,
}

/// Under `properties.virtualMachineProfile`: gallery applications, capacity
/// reservations, security postures, service artifacts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredVmProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_reservation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_posture_reference: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_artifact_reference: Option<Value>,
}

#[cfg(test)]
mod tests {
    use crate::vmss::VirtualMachineScaleSet;
    use serde_json::json;

    #[test]
    fn stored_properties_come_back_as_sent() {
        let body = json!({
            "location": "local",
            "properties": {
                "hostGroup": {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/hostGroups/h"},
                "scheduledEventsPolicy": {"scheduledEventsAdditionalPublishingTargets": {"eventGridAndResourceGraph": {"enable": true}}},
                "scaleInPolicy": {"rules": ["OldestVM"], "prioritizeUnhealthyVMs": true},
                "virtualMachineProfile": {"applicationProfile": {"galleryApplications": [{"packageReferenceId": "x"}]}}
            }
        });
        let set: VirtualMachineScaleSet = serde_json::from_value(body.clone()).unwrap();
        let back = serde_json::to_value(&set).unwrap();
        for key in [
            "hostGroup",
            "scheduledEventsPolicy",
            "virtualMachineProfile",
        ] {
            assert_eq!(back["properties"][key], body["properties"][key], "{key}");
        }
        assert_eq!(
            back["properties"]["scaleInPolicy"]["prioritizeUnhealthyVMs"],
            true
        );
        // Unknown properties are ignored, as Azure ignores them.
        let unknown: VirtualMachineScaleSet =
            serde_json::from_value(json!({"properties": {"noSuchThing": 1}})).unwrap();
        assert!(serde_json::to_value(&unknown).unwrap()["properties"]
            .get("noSuchThing")
            .is_none());
    }
}
