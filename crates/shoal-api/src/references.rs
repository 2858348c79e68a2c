//! References a scale-set model makes to other resources, checked before the set is
//! written, as Azure's network provider checks them: every load-balancer and
//! application-gateway backend pool a network interface configuration names must exist.
//!
//! Called by [`crate::scalesets`] with the parsed PUT model; reads load balancers and
//! gateways from the store; answers nothing, or Azure's 400 `InvalidResourceReference`
//! naming the missing resource (with the field in `target`).

use shoal_model::appgw::ApplicationGateway;
use shoal_model::network::{LoadBalancer, PoolOwner};
use shoal_model::vmss::VirtualMachineScaleSet;
use shoal_model::ArmError;

use crate::appgw::ApplicationGateways;
use crate::arm_crud;
use crate::network::LoadBalancers;
use crate::state::ApiState;

/// A pool id's parts: subscription, group, parent resource, pool.
fn parts(id: &str) -> Option<(String, String, String, String)> {
    let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
    let after = |name: &str| {
        segs.iter()
            .position(|s| s.eq_ignore_ascii_case(name))
            .and_then(|i| segs.get(i + 1))
            .map(|s| s.to_string())
    };
    if segs.len() != 10 || !segs[8].eq_ignore_ascii_case("backendAddressPools") {
        return None;
    }
    Some((
        after("subscriptions")?,
        after("resourceGroups")?,
        segs[7].to_string(),
        segs[9].to_string(),
    ))
}

/// Azure's answer to a reference that does not resolve.
fn missing(id: &str, owner: &str, field: &str) -> ArmError {
    ArmError::new(
        400,
        "InvalidResourceReference",
        format!(
            "Resource {id} referenced by resource {owner} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."
        ),
    )
    .with_target(format!(
        "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations.ipConfigurations.{field}"
    ))
}

/// Checks every backend pool the network profile of `set` (whose id is `owner`) names.
pub async fn check_pools(
    st: &ApiState,
    set: &VirtualMachineScaleSet,
    owner: &str,
) -> Result<(), ArmError> {
    for id in set.backend_pools(PoolOwner::LoadBalancer) {
        let field = "loadBalancerBackendAddressPools";
        let (sub, rg, name, pool) = parts(&id).ok_or_else(|| missing(&id, owner, field))?;
        let lb = st
            .get::<LoadBalancer>(&arm_crud::key::<LoadBalancers>(&sub, &rg, &name))
            .await?
            .ok_or_else(|| missing(&id, owner, field))?;
        let pools = &lb.value.properties.backend_address_pools;
        if !pools.iter().any(|p| p.name.eq_ignore_ascii_case(&pool)) {
            return Err(missing(&id, owner, field));
        }
    }
    for id in set.backend_pools(PoolOwner::ApplicationGateway) {
        let field = "applicationGatewayBackendAddressPools";
        let (sub, rg, name, pool) = parts(&id).ok_or_else(|| missing(&id, owner, field))?;
        let gw = st
            .get::<ApplicationGateway>(&arm_crud::key::<ApplicationGateways>(&sub, &rg, &name))
            .await?
            .ok_or_else(|| missing(&id, owner, field))?;
        let pools = &gw.value.properties.backend_address_pools;
        if !pools.iter().any(|p| p.name.eq_ignore_ascii_case(&pool)) {
            return Err(missing(&id, owner, field));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_are_read_as_arm_ids() {
        let id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/loadBalancers/lb/backendAddressPools/web";
        assert_eq!(
            parts(id),
            Some(("s".into(), "g".into(), "lb".into(), "web".into()))
        );
        assert_eq!(parts("/subscriptions/s/resourceGroups/g"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_pool_id_is_read_without_panic(id in "\\PC{0,120}") { let _ = parts(&id); }
    }
}
