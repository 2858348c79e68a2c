//! References a scale-set model makes to other resources, checked before the set is
//! written, as Azure checks them: every load-balancer and application-gateway backend
//! pool, subnet and network security group a network interface configuration names, and
//! the load-balancer probe `networkProfile.healthProbe` names, must exist (else the network provider's 400 `InvalidResourceReference`), and so must the
//! proximity placement group and dedicated host group the set names (else ARM's 404
//! `ResourceNotFound`). The error names the field in `target`.
//!
//! Called by [`crate::scalesets`] with the parsed PUT model, and by other resources'
//! handlers through [`require`].

use shoal_model::appgw::ApplicationGateway;
use shoal_model::network::{LoadBalancer, PoolOwner};
use shoal_model::vmss::VirtualMachineScaleSet;
use shoal_model::ArmError;

use crate::appgw::ApplicationGateways;
use crate::arm_crud::{self, ArmKind};
use crate::network::LoadBalancers;
use crate::placement_groups::{HostGroups, ProximityPlacementGroups};
use crate::state::ApiState;
use crate::vnets::{NetworkSecurityGroups, VirtualNetworks};
use shoal_model::vnet::VirtualNetwork;

const NIC: &str = "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations";

/// A resource id's subscription, group and name when it is an id of `K`
/// (`/subscriptions/{s}/resourceGroups/{g}/providers/{K::ID_PATH}/{name}`, any case), and
/// what follows the name.
fn resource_parts<K: ArmKind>(id: &str) -> Option<(String, String, String, Vec<String>)> {
    let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
    let kind: Vec<&str> = K::ID_PATH.split('/').collect();
    let fixed = segs.len() >= 8
        && segs[0].eq_ignore_ascii_case("subscriptions")
        && segs[2].eq_ignore_ascii_case("resourceGroups")
        && segs[4].eq_ignore_ascii_case("providers")
        && segs[5].eq_ignore_ascii_case(kind[0])
        && segs[6].eq_ignore_ascii_case(kind[1]);
    if kind.len() != 2 || !fixed || segs[1].is_empty() || segs[3].is_empty() || segs[7].is_empty() {
        return None;
    }
    let rest = segs[8..].iter().map(|s| s.to_string()).collect();
    Some((segs[1].into(), segs[3].into(), segs[7].into(), rest))
}

/// The stored resource `id` names, if it is an id of `K` and exists.
pub(crate) async fn lookup<K: ArmKind>(
    st: &ApiState,
    id: &str,
) -> Result<Option<(K::Model, Vec<String>)>, ArmError> {
    let Some((sub, rg, name, rest)) = resource_parts::<K>(id) else {
        return Ok(None);
    };
    Ok(st
        .get::<K::Model>(&arm_crud::key::<K>(&sub, &rg, &name))
        .await?
        .map(|r| (r.value, rest)))
}

/// Whether `id` names an existing resource of `K` (nothing after its name).
async fn exists<K: ArmKind>(st: &ApiState, id: &str) -> Result<bool, ArmError> {
    Ok(matches!(lookup::<K>(st, id).await?, Some((_, rest)) if rest.is_empty()))
}

/// Whether `id` names a child `{id of a K}/{kind}/{name}` that `has(parent, name)` finds.
async fn child_exists<K: ArmKind>(
    st: &ApiState,
    id: &str,
    kind: &str,
    has: impl Fn(&K::Model, &str) -> bool,
) -> Result<bool, ArmError> {
    Ok(match lookup::<K>(st, id).await? {
        Some((parent, rest)) if rest.len() == 2 && rest[0].eq_ignore_ascii_case(kind) => {
            has(&parent, &rest[1])
        }
        _ => false,
    })
}

/// `id` must name an existing resource of `K` (nothing after its name): otherwise the
/// network provider's 400 `InvalidResourceReference` with `target`.
pub async fn require<K: ArmKind>(st: &ApiState, id: &str, target: &str) -> Result<(), ArmError> {
    if exists::<K>(st, id).await? {
        Ok(())
    } else {
        Err(invalid_reference(id, &format!("the {}", K::NOUN), target))
    }
}

/// The network provider's 400 for a reference (from `owner`, in field `target`) to a
/// resource that is not there.
pub(crate) fn invalid_reference(id: &str, owner: &str, target: &str) -> ArmError {
    ArmError::new(
        400,
        "InvalidResourceReference",
        format!(
            "Resource {id} referenced by resource {owner} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."
        ),
    )
    .with_target(target.to_string())
}

/// ARM's 404 for a compute resource a set names that does not exist.
fn compute_not_found<K: ArmKind>(id: &str, target: &str) -> ArmError {
    let (rg, name) = resource_parts::<K>(id)
        .map(|(_, rg, name, _)| (rg, name))
        .unwrap_or_else(|| (String::new(), id.to_string()));
    ArmError::new(
        404,
        "ResourceNotFound",
        format!(
            "The Resource '{}/{name}' under resource group '{rg}' was not found. Create it first, or name one that exists.",
            K::ID_PATH
        ),
    )
    .with_target(target.to_string())
}

/// Checks the subnets, security groups, proximity placement group and host group the
/// model of `set` (whose id is `owner`) names.
pub async fn check_others(
    st: &ApiState,
    set: &VirtualMachineScaleSet,
    owner: &str,
) -> Result<(), ArmError> {
    for id in set.subnet_ids() {
        let in_network = |v: &VirtualNetwork, n: &str| {
            v.properties
                .subnets
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(n))
        };
        if !child_exists::<VirtualNetworks>(st, &id, "subnets", in_network).await? {
            let target = format!("{NIC}.ipConfigurations.subnet.id");
            return Err(invalid_reference(&id, owner, &target));
        }
    }
    for id in set.security_group_ids() {
        if !exists::<NetworkSecurityGroups>(st, &id).await? {
            let target = format!("{NIC}.networkSecurityGroup.id");
            return Err(invalid_reference(&id, owner, &target));
        }
    }
    let probe = set
        .profile()
        .and_then(|p| p.network_profile.as_ref())
        .and_then(|n| n.health_probe.as_ref())
        .and_then(|h| h.get("id")?.as_str().map(String::from));
    if let Some(id) = probe {
        let in_balancer = |lb: &LoadBalancer, n: &str| {
            lb.properties
                .probes
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case(n))
        };
        if !child_exists::<LoadBalancers>(st, &id, "probes", in_balancer).await? {
            let target = "properties.virtualMachineProfile.networkProfile.healthProbe.id";
            return Err(invalid_reference(&id, owner, target));
        }
    }
    let props = set.props();
    let named =
        |v: Option<&serde_json::Value>| v.and_then(|r| r.get("id")?.as_str().map(String::from));
    if let Some(id) = named(props.proximity_placement_group.as_ref()) {
        if !exists::<ProximityPlacementGroups>(st, &id).await? {
            let target = "properties.proximityPlacementGroup.id";
            return Err(compute_not_found::<ProximityPlacementGroups>(&id, target));
        }
    }
    if let Some(id) = named(props.stored.host_group.as_ref()) {
        if !exists::<HostGroups>(st, &id).await? {
            return Err(compute_not_found::<HostGroups>(
                &id,
                "properties.hostGroup.id",
            ));
        }
    }
    Ok(())
}

/// Checks every backend pool the network profile of `set` (whose id is `owner`) names.
pub async fn check_pools(
    st: &ApiState,
    set: &VirtualMachineScaleSet,
    owner: &str,
) -> Result<(), ArmError> {
    let pools = "backendAddressPools";
    let target = |field: &str| format!("{NIC}.ipConfigurations.{field}");
    for id in set.backend_pools(PoolOwner::LoadBalancer) {
        let has = |lb: &LoadBalancer, n: &str| {
            let pools = &lb.properties.backend_address_pools;
            pools.iter().any(|p| p.name.eq_ignore_ascii_case(n))
        };
        if !child_exists::<LoadBalancers>(st, &id, pools, has).await? {
            return Err(invalid_reference(
                &id,
                owner,
                &target("loadBalancerBackendAddressPools"),
            ));
        }
    }
    for id in set.backend_pools(PoolOwner::ApplicationGateway) {
        let has = |gw: &ApplicationGateway, n: &str| {
            let pools = &gw.properties.backend_address_pools;
            pools.iter().any(|p| p.name.eq_ignore_ascii_case(n))
        };
        if !child_exists::<ApplicationGateways>(st, &id, pools, has).await? {
            let field = "applicationGatewayBackendAddressPools";
            return Err(invalid_reference(&id, owner, &target(field)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_are_read_by_kind() {
        let id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/a";
        assert_eq!(
            resource_parts::<VirtualNetworks>(id),
            Some((
                "s".into(),
                "g".into(),
                "v".into(),
                vec!["subnets".into(), "a".into()]
            ))
        );
        assert_eq!(resource_parts::<NetworkSecurityGroups>(id), None);
        assert_eq!(
            resource_parts::<VirtualNetworks>(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/"
            ),
            None
        );
    }

    #[test]
    fn pool_ids_are_read_as_arm_ids() {
        let id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/loadBalancers/lb/backendAddressPools/web";
        assert_eq!(
            resource_parts::<LoadBalancers>(id),
            Some((
                "s".into(),
                "g".into(),
                "lb".into(),
                vec!["backendAddressPools".into(), "web".into()]
            ))
        );
        assert_eq!(
            resource_parts::<LoadBalancers>("/subscriptions/s/resourceGroups/g"),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn any_pool_id_is_read_without_panic(id in "\\PC{0,120}") {
            let _ = resource_parts::<LoadBalancers>(&id);
            let _ = resource_parts::<VirtualNetworks>(&id);
        }
    }
}
