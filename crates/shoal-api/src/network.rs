//! `Microsoft.Network/loadBalancers`: what differs from other resources in their
//! create/replace, read, list and delete, which [`crate::arm_crud`] serves through
//! [`LoadBalancers`], and the lists of their sub-resources. A balancer process (inside
//! `shoal serve` or `shoal balancer`) follows these resources through the store watch and
//! serves them.
//!
//! A PUT is normalized and validated by `shoal_model::network`, then its frontends are
//! checked to be free. A balancer a scale set still joins cannot be deleted. GET shows
//! each backend pool's members; [`with_pool_members`] and [`refuse_while_joined`] serve
//! application gateways the same way.

use http::Method;
use serde_json::{json, Value};
use shoal_model::keys;
use shoal_model::network::{self, LoadBalancer, PoolOwner, LB_TYPE};
use shoal_model::records::{InstanceRecord, VmssRecord};
use shoal_model::ArmError;

use crate::arm_crud::{self, Addr, ArmKind};
use crate::response::{self, json, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::state::ApiState;

/// `Microsoft.Network/loadBalancers` for [`arm_crud`], stored under `lb/`.
pub struct LoadBalancers;

impl ArmKind for LoadBalancers {
    type Model = LoadBalancer;
    const TYPE: &'static str = LB_TYPE;
    const ID_PATH: &'static str = LB_TYPE;
    const KEY_PREFIX: &'static str = "lb";
    const NOUN: &'static str = "load balancer";
    const MAX_NAME_LEN: usize = 80;

    async fn admit(
        st: &ApiState,
        lb: &mut LoadBalancer,
        id: &str,
        _: Addr<'_>,
        existing: Option<&LoadBalancer>,
    ) -> Result<(), ArmError> {
        // A frontend on a public IP listens on the address Shoal gave that public IP.
        for (i, fe) in lb
            .properties
            .frontend_ip_configurations
            .iter_mut()
            .enumerate()
        {
            let named = fe.properties.public_ip_address.as_ref();
            let Some(pip) = named.and_then(|v| v["id"].as_str()).map(String::from) else {
                continue;
            };
            let target =
                format!("properties.frontendIPConfigurations[{i}].properties.publicIPAddress.id");
            let address = crate::vnets::public_ip_of(st, &pip, &target).await?;
            fe.properties.private_ip_address.get_or_insert(address);
        }
        network::normalize_lb(lb, id);
        network::validate_lb(lb, id)?;
        check_ports_free(st, lb, id).await?;
        lb.extra
            .sku
            .get_or_insert_with(|| json!({"name": "Standard", "tier": "Regional"}));
        lb.properties.provisioning_state = Some("Succeeded".into());
        lb.properties.resource_guid = existing
            .and_then(|e| e.properties.resource_guid.clone())
            .or_else(|| Some(uuid::Uuid::new_v4().to_string()));
        Ok(())
    }

    async fn check_unused(st: &ApiState, lb: &LoadBalancer, at: Addr<'_>) -> Result<(), ArmError> {
        // Azure refuses to delete a balancer whose pools a scale set still uses.
        refuse_while_joined(
            st,
            PoolOwner::LoadBalancer,
            lb.id.as_deref().unwrap_or_default(),
            "InUseLoadBalancerCannotBeDeleted",
            &format!("Load balancer '{}'", at.name),
            at.name,
        )
        .await
    }

    async fn view(st: &ApiState, lb: &LoadBalancer, revision: u64) -> Result<Value, ArmError> {
        let mut v = with_pool_members(st, lb, revision, PoolOwner::LoadBalancer).await?;
        note_forwarded_ports(st, lb, &mut v).await?;
        Ok(v)
    }
}

/// A load balancer or gateway as GET shows it: with its etag, and each backend pool's
/// members (the instances of the sets that join it) filled in.
pub(crate) async fn with_pool_members(
    st: &ApiState,
    resource: &impl serde::Serialize,
    revision: u64,
    owner: PoolOwner,
) -> Result<Value, ArmError> {
    let mut v = serde_json::to_value(resource).unwrap_or(Value::Null);
    v["etag"] = json!(arm_crud::etag(revision));
    let sets = st.list::<VmssRecord>(keys::VMSS).await?;
    if let Some(pools) = v
        .pointer_mut("/properties/backendAddressPools")
        .and_then(Value::as_array_mut)
    {
        for pool in pools {
            let pool_id = pool["id"].as_str().unwrap_or_default().to_string();
            let mut members = Vec::new();
            for set in &sets {
                if !set.value.model.joins_pool(owner, &pool_id) {
                    continue;
                }
                for inst in st
                    .list::<InstanceRecord>(&set.value.vmss.instance_prefix())
                    .await?
                {
                    members.push(json!({"id": format!(
                        "{}/virtualMachines/{}/networkInterfaces/nic/ipConfigurations/ipconfig",
                        set.value.vmss.id(),
                        inst.value.instance_id
                    )}));
                }
            }
            pool["properties"]["backendIPConfigurations"] = json!(members);
        }
    }
    Ok(v)
}

/// A rule whose `backendPort` is not the image port of a set in its pool is forwarded to
/// the image's port (an image listens on one port): `properties.shoal.forwardedTo` says
/// where, per set.
async fn note_forwarded_ports(
    st: &ApiState,
    lb: &LoadBalancer,
    v: &mut Value,
) -> Result<(), ArmError> {
    let lb_id = lb.id.clone().unwrap_or_default();
    let sets = st.list::<VmssRecord>(keys::VMSS).await?;
    let Some(rules) = v
        .pointer_mut("/properties/loadBalancingRules")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for resolved in network::resolved_rules(lb, &lb_id) {
        let forwarded: Vec<Value> = sets
            .iter()
            .filter(|s| s.value.model.joins_pool(PoolOwner::LoadBalancer, &resolved.pool_id))
            .filter(|s| s.value.launch.port != resolved.backend_port)
            .map(|s| json!({"scaleSet": s.value.vmss.id(), "port": s.value.launch.port,
                "reason": format!("the image listens on {}, not on backendPort {}", s.value.launch.port, resolved.backend_port)}))
            .collect();
        let rule = rules.iter_mut().find(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(&resolved.name))
        });
        if let (Some(rule), false) = (rule, forwarded.is_empty()) {
            rule["properties"]["shoal"] = json!({ "forwardedTo": forwarded });
        }
    }
    Ok(())
}

/// A 400 `code` while a scale set still puts instances in a pool of `resource_id`:
/// "`what` is used by scale set '…'", with `name` as the target.
pub(crate) async fn refuse_while_joined(
    st: &ApiState,
    owner: PoolOwner,
    resource_id: &str,
    code: &str,
    what: &str,
    name: &str,
) -> Result<(), ArmError> {
    for set in st.list::<VmssRecord>(keys::VMSS).await? {
        if set.value.model.joins_pool_of(owner, resource_id) {
            return Err(ArmError::new(
                400,
                code,
                format!(
                    "{what} is used by scale set '{}': remove it from the set's network profile first.",
                    set.value.vmss.name
                ),
            )
            .with_target(name.to_string()));
        }
    }
    Ok(())
}

/// A frontend port another program holds (not one of our own balancers) is refused now,
/// rather than failing later in the data plane.
async fn check_ports_free(st: &ApiState, lb: &LoadBalancer, id: &str) -> Result<(), ArmError> {
    // Frontends our balancers already serve, with the balancer that holds each: this
    // balancer's own need no check (they are bound by our data plane), another's are taken.
    let held: Vec<(String, u16, String)> = arm_crud::all::<LoadBalancers>(st)
        .await?
        .into_iter()
        .flat_map(|other| {
            let oid = other.value.id.clone().unwrap_or_default();
            network::resolved_rules(&other.value, &oid)
                .into_iter()
                .map(|r| (r.frontend_ip, r.frontend_port, oid.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, rule) in network::resolved_rules(lb, id).iter().enumerate() {
        let target = format!("properties.loadBalancingRules[{i}].properties.frontendPort");
        let holder = held
            .iter()
            .find(|(ip, port, _)| *ip == rule.frontend_ip && *port == rule.frontend_port);
        if let Some((_, _, owner)) = holder {
            if owner.eq_ignore_ascii_case(id) {
                continue;
            }
            return Err(ArmError::conflict(format!(
                "Frontend {}:{} is already used by another load balancer.",
                rule.frontend_ip, rule.frontend_port
            ))
            .with_target(target));
        }
        let addr = format!("{}:{}", rule.frontend_ip, rule.frontend_port);
        let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
            return Err(ArmError::invalid_parameter(
                target,
                format!("'{addr}' is not a usable address."),
            ));
        };
        if let Err(e) = std::net::TcpListener::bind(sock) {
            return Err(ArmError::conflict(format!(
                "Frontend {addr} cannot be used: {e}. Choose another frontendPort."
            ))
            .with_target(target));
        }
    }
    Ok(())
}

/// `GET` of a balancer's sub-resources of one kind (`backendAddressPools`, `probes`, …),
/// as a page, or of one of them by name, as the balancer's GET shows them.
#[allow(clippy::too_many_arguments)]
pub async fn child(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    kind: &str,
    child: Option<&str>,
    body: &[u8],
) -> ApiResult {
    if let (Some(c), "inboundNatRules", true) = (child, kind, *method != Method::GET) {
        return nat_rule(st, method, sub, rg, name, c, body).await;
    }
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let lb = arm_crud::read::<LoadBalancers>(st, sub, rg, name).await?;
    let v = LoadBalancers::view(st, &lb.value, lb.revision).await?;
    let items: Vec<Value> = v["properties"][kind]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match child {
        None => Ok(response::page(
            ctx,
            &format!("{}/{kind}", arm_crud::id::<LoadBalancers>(sub, rg, name)),
            items,
            st.page_size,
        )),
        Some(c) => items
            .into_iter()
            .find(|i| {
                i["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(c))
            })
            .map(|i| json(200, &i))
            .ok_or_else(|| ArmError::not_found(&format!("{LB_TYPE}/{kind}"), c)),
    }
}

/// PUT or DELETE of one inbound NAT rule (`…/inboundNatRules/{rule}`, as `az vmss create`'s
/// template sends it): checked against the balancer (its frontend and pool exist, ports
/// in range) and stored in the balancer's `inboundNatRules`. Shoal shows NAT rules; it
/// does not forward them (the README says so).
async fn nat_rule(
    st: &ApiState,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    rule: &str,
    body: &[u8],
) -> ApiResult {
    shoal_model::names::check_resource_name("inbound NAT rule", rule, 80)?;
    let lb = arm_crud::read::<LoadBalancers>(st, sub, rg, name).await?;
    let mut model = lb.value.clone();
    let lb_id = model.id.clone().unwrap_or_default();
    let mut rules: Vec<Value> = model
        .properties
        .inbound_nat_rules
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pos = rules.iter().position(|r| {
        r["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(rule))
    });
    // What the answer shows: the rule as stored, or nothing for a delete.
    let answer = match *method {
        Method::PUT => {
            let incoming = shoal_model::vmss::parse_body::<Value>(body)?;
            let props = incoming
                .get("properties")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let checked = network::check_nat_rule(&model, &lb_id, rule, &props)?;
            let status = if pos.is_some() { 200 } else { 201 };
            match pos {
                Some(i) => rules[i] = checked.clone(),
                None => rules.push(checked.clone()),
            }
            json(status, &checked)
        }
        Method::DELETE => match pos {
            Some(i) => {
                rules.remove(i);
                response::empty(200)
            }
            None => return Ok(response::empty(204)),
        },
        _ => return Err(method_not_allowed(method)),
    };
    model.properties.inbound_nat_rules = Some(json!(rules));
    arm_crud::replace::<LoadBalancers>(st, Addr { sub, rg, name }, &model, lb.revision).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use shoal_control::kv;
    use shoal_model::ids::VmssRef;
    use shoal_store::Expect;

    use super::*;
    use crate::arm_crud::testing::{call, state};

    const RG: &str = "/subscriptions/s/resourceGroups/demo";

    /// A scale set `web` with one instance, whose NIC joins `pool` (or nothing).
    async fn put_set(st: &ApiState, pool: Option<&str>) {
        let pools = pool.map_or(json!([]), |p| json!([{"id": p}]));
        let launch = json!({"generation": 1, "image_id": "i", "image_version": "1", "kind": "process",
            "blob_id": "b", "command": "c", "port": 80, "sku": "Shoal_1vCPU_512MB", "vcpus": 1,
            "memory_mb": 512, "custom_data": null, "computer_name_prefix": "web"});
        let set = json!({
            "vmss": {"subscription": "s", "resource_group": "demo", "name": "web"},
            "model": {"location": "local", "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 1},
                "properties": {"virtualMachineProfile": {"networkProfile": {"networkInterfaceConfigurations": [
                    {"name": "nic", "properties": {"ipConfigurations": [
                        {"name": "ip", "properties": {"loadBalancerBackendAddressPools": pools}}]}}]}}}},
            "launch": launch.clone(),
            "next_instance_id": 1
        });
        let instance = json!({"vmss": set["vmss"], "instance_id": 0, "vm_id": "v", "host": "local",
            "zone": null, "fault_domain": 0, "launch": launch, "power": "running", "restart_gen": 0,
            "reimage_gen": 0, "deleting": false, "protection": {}, "time_created": "t"});
        let r = VmssRef::new("s", "demo", "web");
        st.store
            .txn(vec![
                kv::put_op(r.key(), &set, Expect::Any),
                kv::put_op(r.instance_key(0), &instance, Expect::Any),
            ])
            .await
            .expect("store");
    }

    #[tokio::test]
    async fn a_balancer_shows_the_instances_of_the_sets_that_join_it_and_stays_while_they_do() {
        let st = state(10).await;
        let lb = format!("{RG}/providers/Microsoft.Network/loadBalancers/lb");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let body = json!({"location": "local", "properties": {
            "frontendIPConfigurations": [{"name": "fe"}],
            "backendAddressPools": [{"name": "pool"}],
            "loadBalancingRules": [{"name": "r", "properties": {
                "frontendIPConfiguration": {"id": "fe"}, "backendAddressPool": {"id": "pool"},
                "protocol": "Tcp", "frontendPort": port, "backendPort": 8080}}]}});
        let (status, created) = call(&st, Method::PUT, &lb, body).await;
        assert_eq!(status, 201, "{created}");
        put_set(&st, Some(&format!("{lb}/BACKENDADDRESSPOOLS/pool"))).await;

        let (_, got) = call(&st, Method::GET, &lb, Value::Null).await;
        let members =
            &got["properties"]["backendAddressPools"][0]["properties"]["backendIPConfigurations"];
        assert_eq!(
            members[0]["id"],
            format!("{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/0/networkInterfaces/nic/ipConfigurations/ipconfig")
        );
        assert_eq!(got["etag"], created["etag"]);
        let (status, err) = call(&st, Method::DELETE, &lb, Value::Null).await;
        assert_eq!(
            (
                status,
                err["error"]["code"].as_str(),
                err["error"]["target"].as_str()
            ),
            (400, Some("InUseLoadBalancerCannotBeDeleted"), Some("lb"))
        );

        put_set(&st, None).await;
        let (_, got) = call(
            &st,
            Method::GET,
            &format!("{lb}/backendAddressPools/pool"),
            Value::Null,
        )
        .await;
        assert_eq!(got["properties"]["backendIPConfigurations"], json!([]));
        assert_eq!(call(&st, Method::DELETE, &lb, Value::Null).await.0, 200);
        assert_eq!(call(&st, Method::DELETE, &lb, Value::Null).await.0, 204);
    }
}
