//! Proximity placement groups and dedicated host groups, served by [`crate::arm_crud`]:
//! stored and checked (`shoal_model::placement`), shown with the scale sets in them, and
//! not deletable while a set is (Azure refuses both). Shoal does not place by them: the
//! README's compatibility table says why.

use serde_json::{json, Value};
use shoal_model::arm::Tracked;
use shoal_model::keys;
use shoal_model::placement::{self, HostGroup, ProximityPlacementGroup, HOST_GROUP_TYPE, PPG_TYPE};
use shoal_model::records::VmssRecord;
use shoal_model::vmss::VirtualMachineScaleSet;
use shoal_model::ArmError;

use crate::arm_crud::{self, Addr, ArmKind};
use crate::state::ApiState;

/// `Microsoft.Compute/proximityPlacementGroups`, stored under `ppg/`.
pub struct ProximityPlacementGroups;
/// `Microsoft.Compute/hostGroups`, stored under `hostgroup/`.
pub struct HostGroups;

/// Which placement resource a set names, by kind.
fn named_by(set: &VirtualMachineScaleSet, kind: &str) -> Option<String> {
    let props = set.props();
    let r = if kind == PPG_TYPE {
        props.proximity_placement_group.as_ref()
    } else {
        props.stored.host_group.as_ref()
    };
    Some(r?.get("id")?.as_str()?.to_string())
}

/// The ids of the scale sets that name the resource `id` of `kind`.
async fn sets_in(st: &ApiState, kind: &str, id: &str) -> Result<Vec<String>, ArmError> {
    Ok(st
        .list::<VmssRecord>(keys::VMSS)
        .await?
        .into_iter()
        .filter(|s| named_by(&s.value.model, kind).is_some_and(|n| n.eq_ignore_ascii_case(id)))
        .map(|s| s.value.vmss.id())
        .collect())
}

/// The resource as Azure shows it: with its etag and the sets in it (`list_key`).
async fn view_with_sets(
    st: &ApiState,
    r: &(impl serde::Serialize + Tracked),
    revision: u64,
    kind: &str,
    list_key: &str,
) -> Result<Value, ArmError> {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["etag"] = json!(arm_crud::etag(revision));
    let sets: Vec<Value> = sets_in(st, kind, r.arm_id().unwrap_or_default())
        .await?
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    v["properties"][list_key] = json!(sets);
    Ok(v)
}

/// Azure's refusal to delete a placement resource a set is still in.
async fn refuse_while_used(
    st: &ApiState,
    kind: &str,
    id: &str,
    at: Addr<'_>,
) -> Result<(), ArmError> {
    match sets_in(st, kind, id).await?.first() {
        None => Ok(()),
        Some(set) => Err(ArmError::new(
            409,
            "OperationNotAllowed",
            format!(
                "'{}' cannot be deleted while the scale set {set} is in it: delete the set or move it out first.",
                at.name
            ),
        )
        .with_target(at.name.to_string())),
    }
}

impl ArmKind for ProximityPlacementGroups {
    type Model = ProximityPlacementGroup;
    const TYPE: &'static str = PPG_TYPE;
    const ID_PATH: &'static str = PPG_TYPE;
    const KEY_PREFIX: &'static str = "ppg";
    const NOUN: &'static str = "proximity placement group";
    const MAX_NAME_LEN: usize = 80;
    const PATCH: bool = true;

    async fn admit(
        _: &ApiState,
        g: &mut ProximityPlacementGroup,
        _: &str,
        _: Addr<'_>,
        _: Option<&ProximityPlacementGroup>,
    ) -> Result<(), ArmError> {
        placement::admit_ppg(g)
    }

    async fn check_unused(
        st: &ApiState,
        g: &ProximityPlacementGroup,
        at: Addr<'_>,
    ) -> Result<(), ArmError> {
        refuse_while_used(st, PPG_TYPE, g.arm_id().unwrap_or_default(), at).await
    }

    async fn view(
        st: &ApiState,
        g: &ProximityPlacementGroup,
        revision: u64,
    ) -> Result<Value, ArmError> {
        view_with_sets(st, g, revision, PPG_TYPE, "virtualMachineScaleSets").await
    }
}

impl ArmKind for HostGroups {
    type Model = HostGroup;
    const TYPE: &'static str = HOST_GROUP_TYPE;
    const ID_PATH: &'static str = HOST_GROUP_TYPE;
    const KEY_PREFIX: &'static str = "hostgroup";
    const NOUN: &'static str = "host group";
    const MAX_NAME_LEN: usize = 80;
    const PATCH: bool = true;

    async fn admit(
        _: &ApiState,
        g: &mut HostGroup,
        _: &str,
        _: Addr<'_>,
        _: Option<&HostGroup>,
    ) -> Result<(), ArmError> {
        placement::admit_host_group(g)
    }

    async fn check_unused(st: &ApiState, g: &HostGroup, at: Addr<'_>) -> Result<(), ArmError> {
        refuse_while_used(st, HOST_GROUP_TYPE, g.arm_id().unwrap_or_default(), at).await
    }

    async fn view(st: &ApiState, g: &HostGroup, revision: u64) -> Result<Value, ArmError> {
        let _ = st;
        let mut v = serde_json::to_value(g).unwrap_or(Value::Null);
        v["etag"] = json!(arm_crud::etag(revision));
        // A Shoal host group holds no dedicated hosts of its own (Shoal's hosts are the
        // operator's machines, listed under Shoal.Infrastructure/hosts).
        v["properties"]["hosts"] = json!([]);
        Ok(v)
    }
}
