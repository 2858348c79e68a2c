//! `Microsoft.Network/loadBalancers`: create/replace, read, list, delete, and the lists of
//! their sub-resources. A balancer process (inside `shoal serve` or `shoal balancer`)
//! follows these resources through the store watch and serves them.

use http::Method;
use serde_json::{json, Value};
use shoal_control::kv;
use shoal_model::network::{self, LoadBalancer, LB_TYPE};
use shoal_model::records::VmssRecord;
use shoal_model::{names, vmss, ArmError};
use shoal_store::Expect;

use crate::groups::method_not_allowed;
use crate::response::{self, empty, json, ApiResult, Ctx};
use crate::state::{body_object, txn_error, ApiState};

pub fn lb_key(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "lb/{}/{}/{}",
        sub.to_ascii_lowercase(),
        rg.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

pub fn lb_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/{name}"
    )
}

pub async fn list(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: Option<&str>,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let (prefix, path) = match rg {
        Some(rg) => {
            st.require_group(sub, rg).await?;
            (
                format!("lb/{}/{}/", sub.to_ascii_lowercase(), rg.to_ascii_lowercase()),
                format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers"),
            )
        }
        None => (
            format!("lb/{}/", sub.to_ascii_lowercase()),
            format!("/subscriptions/{sub}/providers/Microsoft.Network/loadBalancers"),
        ),
    };
    let mut items = Vec::new();
    for lb in st.list::<LoadBalancer>(&prefix).await? {
        items.push(view(st, &lb.value, lb.revision).await?);
    }
    Ok(response::page(ctx, &path, items, st.page_size))
}

/// The balancer as GET shows it, with each pool's members filled in.
async fn view(st: &ApiState, lb: &LoadBalancer, revision: u64) -> Result<Value, ArmError> {
    let mut v = serde_json::to_value(lb).unwrap_or(Value::Null);
    v["etag"] = json!(format!("W/\"{revision}\""));
    let sets = st.list::<VmssRecord>("vmss/").await?;
    if let Some(pools) = v
        .pointer_mut("/properties/backendAddressPools")
        .and_then(Value::as_array_mut)
    {
        for pool in pools {
            let pool_id = pool["id"].as_str().unwrap_or_default().to_string();
            let mut members = Vec::new();
            for set in &sets {
                if members_of(&set.value)
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&pool_id))
                {
                    for inst in st
                        .list::<shoal_model::records::InstanceRecord>(
                            &set.value.vmss.instance_prefix(),
                        )
                        .await?
                    {
                        members.push(json!({"id": format!("{}/virtualMachines/{}/networkInterfaces/nic/ipConfigurations/ipconfig", set.value.vmss.id(), inst.value.instance_id)}));
                    }
                }
            }
            pool["properties"]["backendIPConfigurations"] = json!(members);
        }
    }
    Ok(v)
}

/// Pool ids a scale set's model puts its instances in.
pub fn members_of(set: &VmssRecord) -> Vec<String> {
    set.model.backend_pools(shoal_model::network::PoolOwner::LoadBalancer)
}

pub async fn load_balancer(
    st: &ApiState,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    body: &[u8],
) -> ApiResult {
    st.require_group(sub, rg).await?;
    names::check_resource_name("load balancer", name, 80)?;
    let key = lb_key(sub, rg, name);
    let existing = st.get::<LoadBalancer>(&key).await?;
    match *method {
        Method::GET => match existing {
            Some(lb) => Ok(json(200, &view(st, &lb.value, lb.revision).await?)),
            None => Err(ArmError::not_found(LB_TYPE, name)),
        },
        Method::PUT => {
            let incoming = body_object(body, true)?;
            let mut lb: LoadBalancer = vmss::parse_typed(&incoming)?;
            let id = lb_id(
                sub,
                existing
                    .as_ref()
                    .and_then(|e| e.value.id.as_deref())
                    .map(|_| rg)
                    .unwrap_or(rg),
                name,
            );
            network::normalize_lb(&mut lb, &id);
            network::validate_lb(&lb, &id)?;
            check_ports_free(st, &lb, &id).await?;
            lb.id = Some(id);
            lb.name = Some(
                existing
                    .as_ref()
                    .and_then(|e| e.value.name.clone())
                    .unwrap_or_else(|| name.to_string()),
            );
            lb.kind = Some(LB_TYPE.to_string());
            lb.etag = None;
            lb.extra.sku
                .get_or_insert_with(|| json!({"name": "Standard", "tier": "Regional"}));
            lb.properties.provisioning_state = Some("Succeeded".into());
            lb.properties.resource_guid = existing
                .as_ref()
                .and_then(|e| e.value.properties.resource_guid.clone())
                .or_else(|| Some(uuid::Uuid::new_v4().to_string()));
            let expect = existing
                .as_ref()
                .map_or(Expect::Absent, |e| Expect::ModRevision(e.revision));
            let rev = st
                .store
                .txn(vec![kv::put_op(key, &lb, expect)])
                .await
                .map_err(txn_error)?;
            Ok(json(
                if existing.is_some() { 200 } else { 201 },
                &view(st, &lb, rev).await?,
            ))
        }
        Method::DELETE => {
            let Some(e) = existing else {
                return Ok(empty(204));
            };
            let id = e.value.id.clone().unwrap_or_default();
            // Azure refuses to delete a balancer whose pools a scale set still uses.
            for set in st.list::<VmssRecord>("vmss/").await? {
                if members_of(&set.value).iter().any(|p| {
                    p.to_ascii_lowercase()
                        .starts_with(&format!("{}/", id.to_ascii_lowercase()))
                }) {
                    return Err(ArmError::new(
                        400,
                        "InUseLoadBalancerCannotBeDeleted",
                        format!("Load balancer '{name}' is used by scale set '{}': remove it from the set's network profile first.", set.value.vmss.name),
                    )
                    .with_target(name.to_string()));
                }
            }
            st.store
                .txn(vec![kv::delete_op(key, Expect::ModRevision(e.revision))])
                .await
                .map_err(txn_error)?;
            Ok(empty(200))
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// A frontend port another program holds (not one of our own balancers) is refused now,
/// rather than failing later in the data plane.
async fn check_ports_free(st: &ApiState, lb: &LoadBalancer, id: &str) -> Result<(), ArmError> {
    // Frontends our balancers already serve, with the balancer that holds each: this
    // balancer's own need no check (they are bound by our data plane), another's are taken.
    let held: Vec<(String, u16, String)> = st
        .list::<LoadBalancer>("lb/")
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

pub async fn child(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    kind: &str,
    child: Option<&str>,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    st.require_group(sub, rg).await?;
    let Some(lb) = st.get::<LoadBalancer>(&lb_key(sub, rg, name)).await? else {
        return Err(ArmError::not_found(LB_TYPE, name));
    };
    let v = view(st, &lb.value, lb.revision).await?;
    let items: Vec<Value> = v["properties"][kind]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match child {
        None => Ok(response::page(
            ctx,
            &format!("{}/{kind}", lb_id(sub, rg, name)),
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
