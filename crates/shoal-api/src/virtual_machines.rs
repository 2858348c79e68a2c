//! `Microsoft.Compute/virtualMachines`: the instances of Flexible scale sets as Azure shows
//! them, virtual machines of their own (`az vm list`, `az vm show`, `az vm start|stop|
//! restart|deallocate|delete`). A Uniform set's instances are only scale-set VMs, as in
//! Azure.
//!
//! A VM is named `{set}_{instanceId}` and is its instance: GET answers the instance's
//! scale-set VM view re-addressed (`id`, `type`, `properties.virtualMachineScaleSet`), an
//! action is the instance's action, DELETE deletes the instance (the set's capacity goes
//! down by one, as Azure does for a Flexible VM). Each VM has a network interface,
//! `Microsoft.Network/networkInterfaces/{vm}-nic` (read-only: its private address, its
//! subnet, its VM), as `az vm list -d` reads them.

use http::Method;
use serde_json::{json, Value};
use shoal_model::ids::VmssRef;
use shoal_model::records::{InstanceRecord, InstanceStatus, VmssRecord};
use shoal_model::vmss::OrchestrationMode;
use shoal_model::ArmError;

use crate::instances::{self, health_of, instances_of};
use crate::response::{self, json, ApiResult, Ctx};
use crate::routes::{method_not_allowed, Action};
use crate::state::ApiState;
use crate::views;

pub const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
pub const NIC_TYPE: &str = "Microsoft.Network/networkInterfaces";

/// The id of the network interface of a Flexible set's VM.
fn nic_id(vmss: &VmssRef, instance_id: u64) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{NIC_TYPE}/{}_{instance_id}-nic",
        vmss.subscription, vmss.resource_group, vmss.name
    )
}

/// The id of the virtual machine of instance `instance_id` of a Flexible set.
pub fn vm_id(vmss: &VmssRef, instance_id: u64) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{VM_TYPE}/{}_{instance_id}",
        vmss.subscription, vmss.resource_group, vmss.name
    )
}

fn flexible(set: &VmssRecord) -> bool {
    set.model.orchestration_mode() == OrchestrationMode::Flexible
}

/// The scale-set VM view of an instance, as its virtual machine.
fn as_vm(mut v: Value, set: &VmssRecord, instance_id: u64) -> Value {
    v["id"] = json!(vm_id(&set.vmss, instance_id));
    v["type"] = json!(VM_TYPE);
    if let Some(o) = v.as_object_mut() {
        o.remove("instanceId");
        o.remove("sku");
        o.remove("virtualMachineResourceId");
    }
    v["properties"]["virtualMachineScaleSet"] = json!({ "id": set.vmss.id() });
    v["properties"]["networkProfile"]["networkInterfaces"] =
        json!([{"id": nic_id(&set.vmss, instance_id), "properties": {"primary": true}}]);
    if let Some(p) = v["properties"].as_object_mut() {
        p.remove("latestModelApplied");
        p.remove("modelDefinitionApplied");
        p.remove("networkProfileConfiguration");
    }
    v
}

/// The views of every instance of the Flexible sets under `prefix`, as virtual machines.
async fn vms_under(st: &ApiState, ctx: &Ctx, prefix: &str) -> Result<Vec<Value>, ArmError> {
    let mut out = Vec::new();
    for set in st.list::<VmssRecord>(prefix).await? {
        if flexible(&set.value) {
            out.extend(vms_of(st, ctx, &set.value, None).await?);
        }
    }
    Ok(out)
}

/// The VM views of a set's instances (`only` one of them), `$expand=instanceView` as asked.
async fn vms_of(
    st: &ApiState,
    ctx: &Ctx,
    set: &VmssRecord,
    only: Option<u64>,
) -> Result<Vec<Value>, ArmError> {
    let tenant = st.tenant_id().await?;
    let expand = instances::expands(ctx, "instanceView");
    let health = health_of(st, set).await?;
    Ok(instances_of(st, &set.vmss)
        .await?
        .into_iter()
        .filter(|(rec, _)| only.is_none_or(|n| rec.value.instance_id == n))
        .map(|(rec, status)| {
            let n = rec.value.instance_id;
            let view = views::vm_json(
                set,
                &rec.value,
                status.as_ref(),
                health.get(&n),
                expand,
                &tenant,
            );
            as_vm(view, set, n)
        })
        .collect())
}

/// The URL path of a list of `kind` in a group or, with no group, a subscription.
fn list_path(sub: &str, rg: Option<&str>, kind: &str) -> String {
    match rg {
        Some(rg) => format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{kind}"),
        None => format!("/subscriptions/{sub}/providers/{kind}"),
    }
}

/// The network interface of a Flexible set's VM, as Azure shows one.
fn nic_view(set: &VmssRecord, rec: &InstanceRecord, status: Option<&InstanceStatus>) -> Value {
    let n = rec.instance_id;
    let subnet = set.model.subnet_ids().into_iter().next();
    let mut ip = json!({
        "name": "ipconfig1",
        "id": format!("{}/ipConfigurations/ipconfig1", nic_id(&set.vmss, n)),
        "properties": {
            "privateIPAddress": status.and_then(|s| s.address.clone()),
            "privateIPAllocationMethod": "Dynamic",
            "privateIPAddressVersion": "IPv4",
            "primary": true,
            "provisioningState": "Succeeded",
        },
    });
    if let Some(subnet) = subnet {
        ip["properties"]["subnet"] = json!({ "id": subnet });
    }
    json!({
        "id": nic_id(&set.vmss, n),
        "name": format!("{}_{n}-nic", set.vmss.name),
        "type": NIC_TYPE,
        "location": set.model.location,
        "properties": {
            "ipConfigurations": [ip],
            "virtualMachine": {"id": vm_id(&set.vmss, n)},
            "primary": true,
            "provisioningState": "Succeeded",
            "nicType": "Standard",
        },
    })
}

/// The network interfaces of the Flexible sets' VMs under `prefix`.
async fn nics_under(st: &ApiState, prefix: &str) -> Result<Vec<Value>, ArmError> {
    let mut out = Vec::new();
    for set in st.list::<VmssRecord>(prefix).await? {
        let set = set.value;
        if !flexible(&set) {
            continue;
        }
        for (rec, status) in instances_of(st, &set.vmss).await? {
            out.push(nic_view(&set, &rec.value, status.as_ref()));
        }
    }
    Ok(out)
}

/// `GET` of `Microsoft.Network/networkInterfaces` (a subscription's or group's, or one):
/// the interfaces of Flexible sets' VMs.
pub async fn network_interfaces(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: Option<&str>,
    name: Option<&str>,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let prefix = crate::scalesets::sets_prefix(st, sub, rg).await?;
    let all = nics_under(st, &prefix).await?;
    match (rg, name) {
        (Some(rg), Some(name)) => all
            .into_iter()
            .find(|n| n["name"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(name)))
            .map(|n| json(200, &n))
            .ok_or_else(|| {
                ArmError::new(
                    404,
                    "ResourceNotFound",
                    format!("The Resource '{NIC_TYPE}/{name}' under resource group '{rg}' was not found."),
                )
                .with_target(name.to_string())
            }),
        (rg, _) => Ok(response::page(ctx, &list_path(sub, rg, NIC_TYPE), all, st.page_size)),
    }
}

/// `GET …/providers/Microsoft.Compute/virtualMachines` of a subscription or group.
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
    let prefix = crate::scalesets::sets_prefix(st, sub, rg).await?;
    let items = vms_under(st, ctx, &prefix).await?;
    Ok(response::page(
        ctx,
        &list_path(sub, rg, VM_TYPE),
        items,
        st.page_size,
    ))
}

/// The Flexible set and instance a VM name (`{set}_{instanceId}`) names, or Azure's 404.
async fn resolve(
    st: &ApiState,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<(VmssRecord, u64), ArmError> {
    let missing = || {
        ArmError::new(
            404,
            "ResourceNotFound",
            format!("The Resource '{VM_TYPE}/{name}' under resource group '{rg}' was not found."),
        )
        .with_target(name.to_string())
    };
    st.require_group(sub, rg).await?;
    let (set_name, n) = name.rsplit_once('_').ok_or_else(missing)?;
    let n: u64 = n.parse().map_err(|_| missing())?;
    let vmss = VmssRef::new(sub, rg, set_name);
    let set = st
        .get::<VmssRecord>(&vmss.key())
        .await?
        .map(|s| s.value)
        .filter(flexible)
        .ok_or_else(missing)?;
    let exists = st
        .get::<shoal_model::records::InstanceRecord>(&vmss.instance_key(n))
        .await?
        .is_some();
    if !exists {
        return Err(missing());
    }
    Ok((set, n))
}

/// GET, DELETE or a POST action of one virtual machine.
#[allow(clippy::too_many_arguments)]
pub async fn one(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    action: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let (set, n) = resolve(st, sub, rg, name).await?;
    let id = n.to_string();
    let vmss = set.vmss.clone();
    match (action, method) {
        (None, &Method::GET) => vms_of(st, ctx, &set, Some(n))
            .await?
            .pop()
            .map(|vm| json(200, &vm))
            .ok_or_else(|| ArmError::not_found(VM_TYPE, name)),
        (None, &Method::DELETE) => {
            instances::action(
                st,
                ctx,
                method,
                &vmss,
                Action::DeleteInstances,
                Some(&id),
                body,
            )
            .await
        }
        (Some(a), &Method::POST) => {
            let action = Action::parse(a)
                .filter(|a| *a != Action::DeleteInstances && *a != Action::ManualUpgrade)
                .ok_or_else(|| {
                    ArmError::new(
                        404,
                        "NotFound",
                        format!("A virtual machine has no action '{a}': use start, powerOff, restart, deallocate, reimage, redeploy or performMaintenance."),
                    )
                })?;
            instances::action(st, ctx, method, &vmss, action, Some(&id), body).await
        }
        _ => Err(method_not_allowed(method)),
    }
}
