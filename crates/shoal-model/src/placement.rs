//! Placement resources a scale set may name: proximity placement groups and dedicated
//! host groups (`Microsoft.Compute/proximityPlacementGroups`, `…/hostGroups`), in Azure's
//! JSON shape, and their checks.
//!
//! Shoal stores them and checks that a set naming one names one that exists; it does not
//! place by them (its hosts are the operator's machines: every host is "dedicated", and
//! instances are spread by zone and fault domain) — the README's compatibility table says
//! so. What a client sends beyond the checked fields is kept (`rest`) and answered back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::arm::{require_location, Resource, Zoned};
use crate::error::ArmError;

pub const PPG_TYPE: &str = "Microsoft.Compute/proximityPlacementGroups";
pub const HOST_GROUP_TYPE: &str = "Microsoft.Compute/hostGroups";

/// A placement resource's own top-level fields: its zones.
pub type ProximityPlacementGroup = Resource<PpgProperties, Zoned>;
pub type HostGroup = Resource<HostGroupProperties, Zoned>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PpgProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proximity_placement_group_type: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostGroupProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_fault_domain_count: Option<Value>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Checks a proximity placement group and fills its type (`Standard` by default).
pub fn admit_ppg(g: &mut ProximityPlacementGroup) -> Result<(), ArmError> {
    require_location(g)?;
    let t = g
        .properties
        .proximity_placement_group_type
        .get_or_insert_with(|| "Standard".into());
    match ["Standard", "Ultra"]
        .iter()
        .find(|a| a.eq_ignore_ascii_case(t))
    {
        Some(canonical) => *t = canonical.to_string(),
        None => {
            return Err(ArmError::invalid_parameter(
                "properties.proximityPlacementGroupType",
                format!("'{t}' is not one of: Standard, Ultra."),
            ))
        }
    }
    Ok(())
}

/// Checks a host group: `platformFaultDomainCount` is required, 1 to 5 (a number, or a
/// number in a string as ARM templates may send it).
pub fn admit_host_group(g: &mut HostGroup) -> Result<(), ArmError> {
    require_location(g)?;
    let field = "properties.platformFaultDomainCount";
    let count = match &g.properties.platform_fault_domain_count {
        None | Some(Value::Null) => {
            return Err(ArmError::invalid_parameter(
                field,
                "Required parameter 'platformFaultDomainCount' is missing (null).",
            ))
        }
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    match count {
        Some(n) if (1..=5).contains(&n) => {
            g.properties.platform_fault_domain_count = Some(Value::from(n));
            Ok(())
        }
        _ => Err(ArmError::invalid_parameter(
            field,
            "The value of parameter platformFaultDomainCount is invalid: use 1 to 5.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placement_groups_are_checked_and_kept() {
        let mut p: ProximityPlacementGroup = crate::vmss::parse_typed(
            &json!({"location": "local", "zones": ["1"], "properties": {"proximityPlacementGroupType": "ultra", "intent": {"vmSizes": ["Standard_D2s_v3"]}}}),
        )
        .expect("parse");
        admit_ppg(&mut p).expect("valid");
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["properties"]["proximityPlacementGroupType"], "Ultra");
        assert_eq!(v["properties"]["intent"]["vmSizes"][0], "Standard_D2s_v3");
        assert_eq!(v["zones"], json!(["1"]));
        let mut bad: ProximityPlacementGroup = crate::vmss::parse_typed(
            &json!({"location": "local", "properties": {"proximityPlacementGroupType": "Near"}}),
        )
        .expect("parse");
        assert!(admit_ppg(&mut bad).is_err());
    }

    #[test]
    fn a_host_group_needs_its_fault_domain_count() {
        let admit = |props: Value| {
            let mut g: HostGroup =
                crate::vmss::parse_typed(&json!({"location": "local", "properties": props}))
                    .expect("parse");
            admit_host_group(&mut g).map(|()| g)
        };
        let g = admit(json!({"platformFaultDomainCount": "3", "supportAutomaticPlacement": true}))
            .expect("valid");
        assert_eq!(g.properties.platform_fault_domain_count, Some(json!(3)));
        assert_eq!(g.properties.rest["supportAutomaticPlacement"], json!(true));
        for bad in [
            json!({}),
            json!({"platformFaultDomainCount": 0}),
            json!({"platformFaultDomainCount": "x"}),
        ] {
            assert_eq!(admit(bad).expect_err("refused").code, "InvalidParameter");
        }
    }
}
