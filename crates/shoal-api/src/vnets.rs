//! Virtual networks (and their subnets), network security groups and public IP
//! addresses, served by [`crate::arm_crud`]: what differs is here — their checks
//! (`shoal_model::vnet`), what the server fills in (ids, default security rules, a public
//! address from Shoal's public range), and what may not be deleted while a scale set, a
//! subnet or a load balancer still uses it. Subnets are also addressed on their own
//! (`…/virtualNetworks/{v}/subnets[/{s}]`, as `az network vnet subnet` does): [`subnet`].

use std::net::Ipv4Addr;

use http::Method;
use serde_json::{json, Value};
use shoal_model::arm::{SubResource, Tracked};
use shoal_model::cidr::Cidr;
use shoal_model::keys;
use shoal_model::network::LoadBalancer;
use shoal_model::records::VmssRecord;
use shoal_model::vnet::{
    self, NetworkSecurityGroup, PublicIpAddress, Subnet, SubnetProps, VirtualNetwork, NSG_TYPE,
    PIP_TYPE, VNET_TYPE,
};
use shoal_model::{names, vmss, ArmError};

use crate::arm_crud::{self, Addr, ArmKind};
use crate::network::LoadBalancers;
use crate::response::{self, empty, json, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::state::ApiState;

/// Where public IP addresses come from unless `shoal serve --public-ip-range` says
/// otherwise: loopback addresses, so one machine's balancers can listen on them.
pub const DEFAULT_PUBLIC_IP_RANGE: &str = "127.0.1.0/24";

/// [`DEFAULT_PUBLIC_IP_RANGE`] as a range.
pub fn default_public_ip_range() -> Cidr {
    Cidr {
        network: Ipv4Addr::new(127, 0, 1, 0),
        prefix_len: 24,
    }
}

/// `Microsoft.Network/virtualNetworks`, stored under `vnet/`.
pub struct VirtualNetworks;
/// `Microsoft.Network/networkSecurityGroups`, stored under `nsg/`.
pub struct NetworkSecurityGroups;
/// `Microsoft.Network/publicIPAddresses`, stored under `pip/`.
pub struct PublicIpAddresses;

fn with_etag(v: &impl serde::Serialize, revision: u64) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    v["etag"] = json!(arm_crud::etag(revision));
    v
}

fn new_guid() -> Option<String> {
    Some(uuid::Uuid::new_v4().to_string())
}

/// The ids of scale sets whose model makes `uses` true, for in-use errors.
async fn sets_using(
    st: &ApiState,
    uses: impl Fn(&vmss::VirtualMachineScaleSet) -> bool,
) -> Result<Vec<String>, ArmError> {
    Ok(st
        .list::<VmssRecord>(keys::VMSS)
        .await?
        .into_iter()
        .filter(|s| uses(&s.value.model))
        .map(|s| s.value.vmss.id())
        .collect())
}

fn names_id(list: &[String], id: &str) -> bool {
    list.iter().any(|s| s.eq_ignore_ascii_case(id))
}

impl ArmKind for VirtualNetworks {
    type Model = VirtualNetwork;
    const TYPE: &'static str = VNET_TYPE;
    const ID_PATH: &'static str = VNET_TYPE;
    const KEY_PREFIX: &'static str = "vnet";
    const NOUN: &'static str = "virtual network";
    const MAX_NAME_LEN: usize = 64;

    async fn admit(
        st: &ApiState,
        v: &mut VirtualNetwork,
        id: &str,
        at: Addr<'_>,
        existing: Option<&VirtualNetwork>,
    ) -> Result<(), ArmError> {
        vnet::normalize_vnet(v, id);
        vnet::validate_vnet(v, id)?;
        check_security_groups(st, v).await?;
        // A subnet a scale set is in cannot be dropped by replacing the network.
        if let Some(old) = existing {
            for s in &old.properties.subnets {
                let kept = v
                    .properties
                    .subnets
                    .iter()
                    .any(|n| n.name.eq_ignore_ascii_case(&s.name));
                if !kept {
                    refuse_subnet_in_use(st, s, at).await?;
                }
            }
        }
        v.properties.resource_guid = existing
            .and_then(|e| e.properties.resource_guid.clone())
            .or_else(new_guid);
        Ok(())
    }

    async fn check_unused(st: &ApiState, v: &VirtualNetwork, at: Addr<'_>) -> Result<(), ArmError> {
        for s in &v.properties.subnets {
            refuse_subnet_in_use(st, s, at).await?;
        }
        Ok(())
    }

    async fn view(_: &ApiState, v: &VirtualNetwork, revision: u64) -> Result<Value, ArmError> {
        let mut out = with_etag(v, revision);
        if let Some(subnets) = out
            .pointer_mut("/properties/subnets")
            .and_then(Value::as_array_mut)
        {
            for s in subnets {
                s["etag"] = json!(arm_crud::etag(revision));
            }
        }
        Ok(out)
    }
}

/// Every security group a network's subnets name must exist.
async fn check_security_groups(st: &ApiState, v: &VirtualNetwork) -> Result<(), ArmError> {
    for (i, s) in v.properties.subnets.iter().enumerate() {
        if let Some(nsg) = &s.properties.network_security_group {
            let target = format!("properties.subnets[{i}].properties.networkSecurityGroup.id");
            crate::references::require::<NetworkSecurityGroups>(st, &nsg.id, &target).await?;
        }
    }
    Ok(())
}

/// Azure's 400 for deleting a subnet a scale set's instances are in.
async fn refuse_subnet_in_use(st: &ApiState, s: &Subnet, at: Addr<'_>) -> Result<(), ArmError> {
    let id = s.id.clone().unwrap_or_default();
    let users = sets_using(st, |set| names_id(&set.subnet_ids(), &id)).await?;
    match users.first() {
        None => Ok(()),
        Some(set) => Err(ArmError::new(
            400,
            "InUseSubnetCannotBeDeleted",
            format!(
                "Subnet {} is in use by {set}/virtualMachines and cannot be deleted. In order to delete the subnet, delete all the resources within the subnet (or move the scale set to another subnet).",
                s.name
            ),
        )
        .with_target(at.name.to_string())),
    }
}

impl ArmKind for NetworkSecurityGroups {
    type Model = NetworkSecurityGroup;
    const TYPE: &'static str = NSG_TYPE;
    const ID_PATH: &'static str = NSG_TYPE;
    const KEY_PREFIX: &'static str = "nsg";
    const NOUN: &'static str = "network security group";
    const MAX_NAME_LEN: usize = 80;

    async fn admit(
        _: &ApiState,
        g: &mut NetworkSecurityGroup,
        id: &str,
        _: Addr<'_>,
        existing: Option<&NetworkSecurityGroup>,
    ) -> Result<(), ArmError> {
        vnet::normalize_nsg(g, id);
        vnet::validate_nsg(g)?;
        g.properties.resource_guid = existing
            .and_then(|e| e.properties.resource_guid.clone())
            .or_else(new_guid);
        Ok(())
    }

    async fn check_unused(
        st: &ApiState,
        g: &NetworkSecurityGroup,
        at: Addr<'_>,
    ) -> Result<(), ArmError> {
        let id = g.arm_id().unwrap_or_default().to_string();
        let mut users = sets_using(st, |set| names_id(&set.security_group_ids(), &id)).await?;
        for v in arm_crud::all::<VirtualNetworks>(st).await? {
            for s in &v.value.properties.subnets {
                let named = s
                    .properties
                    .network_security_group
                    .as_ref()
                    .is_some_and(|n| n.id.eq_ignore_ascii_case(&id));
                if named {
                    users.push(s.id.clone().unwrap_or_default());
                }
            }
        }
        if users.is_empty() {
            return Ok(());
        }
        Err(ArmError::new(
            400,
            "InUseNetworkSecurityGroupCannotBeDeleted",
            format!(
                "Network security group {id} cannot be deleted because it is in use by the following resources: {}. In order to delete the Network security group, remove the association with the resource(s).",
                users.join(", ")
            ),
        )
        .with_target(at.name.to_string()))
    }

    async fn view(
        _: &ApiState,
        g: &NetworkSecurityGroup,
        revision: u64,
    ) -> Result<Value, ArmError> {
        Ok(with_etag(g, revision))
    }
}

impl ArmKind for PublicIpAddresses {
    type Model = PublicIpAddress;
    const TYPE: &'static str = PIP_TYPE;
    const ID_PATH: &'static str = PIP_TYPE;
    const KEY_PREFIX: &'static str = "pip";
    const NOUN: &'static str = "public IP address";
    const MAX_NAME_LEN: usize = 80;

    async fn admit(
        st: &ApiState,
        p: &mut PublicIpAddress,
        id: &str,
        _: Addr<'_>,
        existing: Option<&PublicIpAddress>,
    ) -> Result<(), ArmError> {
        vnet::validate_pip(p)?;
        let props = &mut p.properties;
        props
            .public_ip_allocation_method
            .get_or_insert_with(|| "Static".into());
        props
            .public_ip_address_version
            .get_or_insert_with(|| "IPv4".into());
        props.provisioning_state = Some("Succeeded".into());
        props.resource_guid = existing
            .and_then(|e| e.properties.resource_guid.clone())
            .or_else(new_guid);
        p.extra
            .sku
            .get_or_insert_with(|| json!({"name": "Standard", "tier": "Regional"}));
        // An address is kept for the resource's life; a new one gets the lowest free.
        p.properties.ip_address = match existing.and_then(|e| e.properties.ip_address.clone()) {
            Some(kept) => Some(kept),
            None => Some(free_public_ip(st, id).await?.to_string()),
        };
        Ok(())
    }

    async fn check_unused(
        st: &ApiState,
        p: &PublicIpAddress,
        at: Addr<'_>,
    ) -> Result<(), ArmError> {
        let id = p.arm_id().unwrap_or_default().to_string();
        for lb in arm_crud::all::<LoadBalancers>(st).await? {
            let lb: &LoadBalancer = &lb.value;
            for fe in &lb.properties.frontend_ip_configurations {
                let uses = fe
                    .properties
                    .public_ip_address
                    .as_ref()
                    .and_then(|v| v["id"].as_str())
                    .is_some_and(|i| i.eq_ignore_ascii_case(&id));
                if uses {
                    return Err(ArmError::new(
                        400,
                        "PublicIPAddressCannotBeDeleted",
                        format!(
                            "Public IP address {id} can not be deleted since it is still allocated to resource {}. In order to delete the public IP, disassociate/detach the Public IP address from the resource.",
                            fe.id.as_deref().unwrap_or_default()
                        ),
                    )
                    .with_target(at.name.to_string()));
                }
            }
        }
        Ok(())
    }

    async fn view(_: &ApiState, p: &PublicIpAddress, revision: u64) -> Result<Value, ArmError> {
        Ok(with_etag(p, revision))
    }
}

/// The address of the public IP `id` names: 400 `InvalidResourceReference` (naming
/// `target`) when there is none.
pub async fn public_ip_of(st: &ApiState, id: &str, target: &str) -> Result<String, ArmError> {
    match crate::references::lookup::<PublicIpAddresses>(st, id).await? {
        Some((p, rest)) if rest.is_empty() => p
            .properties
            .ip_address
            .ok_or_else(|| ArmError::internal(format!("The public IP {id} has no address."))),
        _ => Err(crate::references::invalid_reference(
            id,
            "the public IP address",
            target,
        )),
    }
}

/// The lowest address of the server's public range no other public IP holds (the network
/// and broadcast addresses are never given out).
async fn free_public_ip(st: &ApiState, id: &str) -> Result<Ipv4Addr, ArmError> {
    let range = st.public_ip_range;
    let taken: Vec<Ipv4Addr> = arm_crud::all::<PublicIpAddresses>(st)
        .await?
        .into_iter()
        .filter(|p| {
            !p.value
                .arm_id()
                .unwrap_or_default()
                .eq_ignore_ascii_case(id)
        })
        .filter_map(|p| p.value.properties.ip_address?.parse().ok())
        .collect();
    let first = u32::from(range.network);
    let size = 1u32 << (32 - u32::from(range.prefix_len));
    (1..size.saturating_sub(1))
        .map(|i| Ipv4Addr::from(first + i))
        .find(|a| !taken.contains(a))
        .ok_or_else(|| {
            ArmError::new(
                400,
                "PublicIPCountLimitReached",
                format!("Every address of Shoal's public range {range} is in use: delete a public IP address first, or start the server with a larger --public-ip-range."),
            )
        })
}

/// `…/virtualNetworks/{v}/subnets[/{s}]`: list and read; PUT creates or replaces one
/// subnet (checked with the whole network); DELETE removes one not in use.
#[allow(clippy::too_many_arguments)]
pub async fn subnet(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    child: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let network = arm_crud::read::<VirtualNetworks>(st, sub, rg, name).await?;
    let view = VirtualNetworks::view(st, &network.value, network.revision).await?;
    let items = view["properties"]["subnets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |c: &str| {
        items
            .iter()
            .find(|i| {
                i["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(c))
            })
            .cloned()
    };
    let subnet_type = format!("{VNET_TYPE}/subnets");
    let Some(child) = child else {
        if method != Method::GET {
            return Err(method_not_allowed(method));
        }
        let path = format!("{}/subnets", arm_crud::id::<VirtualNetworks>(sub, rg, name));
        return Ok(response::page(ctx, &path, items, st.page_size));
    };
    names::check_resource_name("subnet", child, 80)?;
    let at = Addr { sub, rg, name };
    let mut v = network.value.clone();
    let existed = find(child).is_some();
    match *method {
        Method::GET => find(child)
            .map(|s| json(200, &s))
            .ok_or_else(|| ArmError::not_found(&subnet_type, child)),
        Method::PUT => {
            let props: SubnetProps = match vmss::parse_body::<Value>(body)?.get("properties") {
                Some(p) => vmss::parse_typed(p)?,
                None => SubnetProps::default(),
            };
            let new = SubResource {
                id: None,
                name: child.to_string(),
                kind: None,
                etag: None,
                properties: props,
            };
            match v
                .properties
                .subnets
                .iter_mut()
                .find(|s| s.name.eq_ignore_ascii_case(child))
            {
                Some(s) => s.properties = new.properties,
                None => v.properties.subnets.push(new),
            }
            let id = v.arm_id().unwrap_or_default().to_string();
            VirtualNetworks::admit(st, &mut v, &id, at, Some(&network.value)).await?;
            let revision =
                arm_crud::replace::<VirtualNetworks>(st, at, &v, network.revision).await?;
            let out = VirtualNetworks::view(st, &v, revision).await?;
            let s = out["properties"]["subnets"]
                .as_array()
                .and_then(|a| {
                    a.iter().find(|i| {
                        i["name"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(child))
                    })
                })
                .cloned()
                .unwrap_or(Value::Null);
            Ok(json(if existed { 200 } else { 201 }, &s))
        }
        Method::DELETE => {
            let Some(pos) = v
                .properties
                .subnets
                .iter()
                .position(|s| s.name.eq_ignore_ascii_case(child))
            else {
                return Ok(empty(204));
            };
            refuse_subnet_in_use(st, &v.properties.subnets[pos], at).await?;
            v.properties.subnets.remove(pos);
            arm_crud::replace::<VirtualNetworks>(st, at, &v, network.revision).await?;
            Ok(empty(200))
        }
        _ => Err(method_not_allowed(method)),
    }
}
