//! How stored records look on the wire: scale sets, their instances and instance views
//! in Azure's JSON shape. Shoal-only facts sit in a `shoal` extension object.
//!
//! An instance is answered in Azure's full scale-set VM shape: what it runs and how it
//! was configured come from the set's model (network interface configurations, OS and
//! data disks in Azure's managed-disk shape, the set's extensions as `resources`), what it
//! is doing from the agent's status.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use shoal_model::records::{
    HealthRecord, InstanceRecord, InstanceState, InstanceStatus, VmssRecord,
};
use shoal_model::vmss::VMSS_VM_TYPE;

pub fn vmss_json(rec: &VmssRecord, revision: u64, tenant: &str) -> Value {
    let mut v = serde_json::to_value(rec.model.public_view()).unwrap_or(Value::Null);
    with_tenant(&mut v, tenant);
    let services = shoal_control::repair::orchestration_services(rec);
    if services.as_array().is_some_and(|a| !a.is_empty()) {
        v["properties"]["shoal"] = json!({"orchestrationServices": services});
    }
    // Azure shows zoneBalance (false unless set) on a set with zones.
    if rec.model.zones.as_ref().is_some_and(|z| !z.is_empty())
        && v.pointer("/properties/zoneBalance")
            .is_none_or(Value::is_null)
    {
        v["properties"]["zoneBalance"] = json!(false);
    }
    if let (Some(profile), Some(t)) = (
        v.pointer_mut("/properties/virtualMachineProfile")
            .and_then(Value::as_object_mut),
        rec.model.props().time_created.clone(),
    ) {
        // Azure's `virtualMachineProfile.timeCreated` (2023-09-01 on).
        profile.insert("timeCreated".into(), json!(t));
    }
    v["etag"] = json!(format!("\"{revision}\""));
    v
}

/// Azure shows a system-assigned identity's tenant beside its `principalId`: the tenant
/// of this install's directory.
fn with_tenant(v: &mut Value, tenant: &str) {
    if let Some(id) = v.get_mut("identity").and_then(Value::as_object_mut) {
        if id.contains_key("principalId") {
            id.insert("tenantId".into(), json!(tenant));
        }
    }
}

/// The extensions of a set's model (`name` and `properties` each).
pub fn model_extensions(set: &VmssRecord) -> Vec<Value> {
    set.model
        .profile()
        .and_then(|p| p.extension_profile.as_ref())
        .and_then(|e| e["extensions"].as_array())
        .cloned()
        .unwrap_or_default()
}

/// Azure's `provisioningState` of one instance.
pub fn vm_provisioning_state(
    rec: &InstanceRecord,
    status: Option<&InstanceStatus>,
) -> &'static str {
    if rec.deleting {
        return "Deleting";
    }
    match status {
        None => "Creating",
        Some(s) if s.satisfies(rec) => "Succeeded",
        Some(s) if s.failed_for(rec) => "Failed",
        Some(s) if s.state == InstanceState::Creating => "Creating",
        Some(_) => "Updating",
    }
}

/// Azure's power state words (`PowerState/{word}`).
pub fn power_state(status: Option<&InstanceStatus>) -> &'static str {
    match status.map(|s| s.state) {
        None | Some(InstanceState::Creating) | Some(InstanceState::Starting) => "starting",
        Some(InstanceState::Running) | Some(InstanceState::Draining) => "running",
        Some(InstanceState::Stopping) | Some(InstanceState::Deleting) => "stopping",
        Some(InstanceState::Stopped) | Some(InstanceState::Failed) => "stopped",
        Some(InstanceState::Deallocated) | Some(InstanceState::Deleted) => "deallocated",
        Some(InstanceState::Lost) => "unknown",
    }
}

fn display_power(word: &str) -> String {
    format!("VM {word}")
}

pub fn shoal_extension(rec: &InstanceRecord, status: Option<&InstanceStatus>) -> Value {
    let address = status.and_then(|s| match (&s.address, s.port) {
        (Some(a), Some(p))
            if matches!(
                s.state,
                InstanceState::Running | InstanceState::Starting | InstanceState::Draining
            ) =>
        {
            Some(format!("{a}:{p}"))
        }
        _ => None,
    });
    json!({
        "host": rec.host,
        "powerState": power_state(status),
        "state": status.map(|s| s.state.as_str()),
        "address": address,
        "privateIpAddress": status.and_then(|s| s.address.clone()),
        "port": status.and_then(|s| s.port),
        "pid": status.and_then(|s| s.pid),
        "restarts": status.map(|s| s.restarts).unwrap_or(0),
        "message": status.and_then(|s| s.message.clone()),
        "imageVersion": rec.launch.image_version,
        "limits": status.and_then(|s| s.limits.clone()),
        "network": status.and_then(|s| s.network.clone()),
    })
}

/// Azure's `vmHealth`: what the set's health signal says of the instance.
pub fn vm_health(health: Option<&HealthRecord>, configured: bool) -> Option<Value> {
    let (state, time) = match health {
        Some(h) => (h.state.as_str(), Some(h.since.clone())),
        None if configured => ("initializing", None),
        None => return None,
    };
    let display = match state {
        "healthy" => "The VM is reporting healthy",
        "unhealthy" => "The VM is reporting unhealthy",
        "initializing" => "The VM health is initializing",
        _ => "The VM health is unknown",
    };
    let mut status =
        json!({"code": format!("HealthState/{state}"), "level": "Info", "displayStatus": display});
    if let Some(t) = time {
        status["time"] = json!(t);
    }
    Some(json!({"status": status}))
}

pub fn vm_instance_view(
    set: &VmssRecord,
    rec: &InstanceRecord,
    status: Option<&InstanceStatus>,
    health: Option<&HealthRecord>,
    health_configured: bool,
) -> Value {
    let prov = vm_provisioning_state(rec, status);
    let time = status
        .map(|s| s.since.clone())
        .unwrap_or_else(|| rec.time_created.clone());
    let mut prov_status = json!({
        "code": format!("ProvisioningState/{}", prov.to_ascii_lowercase()),
        "level": if prov == "Failed" { "Error" } else { "Info" },
        "displayStatus": format!("Provisioning {}", prov.to_ascii_lowercase()),
        "time": time,
    });
    if prov == "Failed" {
        if let Some(m) = status.and_then(|s| s.message.clone()) {
            prov_status["message"] = json!(m);
        }
    }
    let word = power_state(status);
    let ready = matches!(
        status.map(|s| s.state),
        Some(InstanceState::Running) | Some(InstanceState::Draining)
    );
    let mut view = json!({
        "vmAgent": {
            "vmAgentVersion": concat!("shoal-agent/", env!("CARGO_PKG_VERSION")),
            "statuses": [{
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": if ready { "Ready" } else { "Not Ready" },
                "time": time,
            }],
        },
        "disks": [{
            "name": format!("{}_OsDisk", rec.computer_name()),
            "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": rec.time_created}],
        }],
        "platformUpdateDomain": rec.fault_domain,
        "platformFaultDomain": rec.fault_domain,
        "computerName": rec.computer_name(),
        "osName": "Linux",
        "statuses": [prov_status, {"code": format!("PowerState/{word}"), "level": "Info", "displayStatus": display_power(word)}],
        "shoal": shoal_extension(rec, status),
    });
    // The model's extensions, as the agent reports them in Azure (Shoal runs the
    // Application Health one and records the others as provisioned).
    let extensions = model_extensions(set);
    view["extensions"] = json!([]);
    view["vmAgent"]["extensionHandlers"] = json!([]);
    if !extensions.is_empty() {
        let kind = |e: &Value| {
            format!(
                "{}.{}",
                e["properties"]["publisher"].as_str().unwrap_or_default(),
                e["properties"]["type"].as_str().unwrap_or_default()
            )
        };
        let version = |e: &Value| e["properties"]["typeHandlerVersion"].clone();
        view["extensions"] = json!(extensions
            .iter()
            .map(|e| json!({
                "name": e["name"], "type": kind(e), "typeHandlerVersion": version(e),
                "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"}],
            }))
            .collect::<Vec<_>>());
        view["vmAgent"]["extensionHandlers"] = json!(extensions
            .iter()
            .map(|e| json!({
                "type": kind(e), "typeHandlerVersion": version(e),
                "status": {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready"},
            }))
            .collect::<Vec<_>>());
    }
    // The machine it runs on, as Azure names a VM's dedicated host.
    if !rec.host.is_empty() {
        view["assignedHost"] = json!(format!(
            "/providers/Shoal.Infrastructure/hosts/{}",
            rec.host
        ));
    }
    if let Some(h) = vm_health(health, health_configured) {
        view["vmHealth"] = h;
    }
    view
}

/// An instance's hardware profile: its size, and the model's `vmSizeProperties` (vCPUs
/// available and per core) as the client set them, the way Azure shows them on each VM.
fn vm_hardware_profile(model: Option<&Value>, sku: &str) -> Value {
    let mut hw = json!({"vmSize": sku});
    if let Some(props) = model
        .and_then(|m| m.get("vmSizeProperties"))
        .filter(|p| p.is_object())
    {
        hw["vmSizeProperties"] = props.clone();
    }
    hw
}

#[allow(clippy::too_many_arguments)]
pub fn vm_json(
    set: &VmssRecord,
    rec: &InstanceRecord,
    status: Option<&InstanceStatus>,
    health: Option<&HealthRecord>,
    expand: bool,
    tenant: &str,
) -> Value {
    let id = format!("{}/virtualMachines/{}", set.vmss.id(), rec.instance_id);
    let profile = set.model.profile();
    let nics = profile
        .and_then(|p| p.network_profile.as_ref())
        .and_then(|n| n.network_interface_configurations.clone())
        .unwrap_or_default();
    let mut props = json!({
        "latestModelApplied": rec.launch.generation >= set.launch.generation,
        "modelDefinitionApplied": "VirtualMachineScaleSet",
        "vmId": rec.vm_id,
        "provisioningState": vm_provisioning_state(rec, status),
        "protectionPolicy": rec.protection,
        "timeCreated": rec.time_created,
        "hardwareProfile": vm_hardware_profile(profile.and_then(|p| p.hardware_profile.as_ref()), &rec.launch.sku),
        "osProfile": vm_os_profile(set, rec),
        "storageProfile": vm_storage_profile(set, rec),
        "networkProfile": {"networkInterfaces": nics.iter().map(|n| json!({
            "id": format!("{id}/networkInterfaces/{}", n["name"].as_str().unwrap_or("nic")),
        })).collect::<Vec<_>>()},
        "networkProfileConfiguration": {"networkInterfaceConfigurations": nics},
        "diagnosticsProfile": profile
            .and_then(|p| p.diagnostics_profile.clone())
            .unwrap_or_else(|| json!({"bootDiagnostics": {"enabled": false}})),
        "shoal": shoal_extension(rec, status),
    });
    // A model whose NICs are made from configurations (`networkApiVersion`, as every
    // Flexible set's) shows them on each VM too, as Azure does.
    if let Some(api) = profile
        .and_then(|p| p.network_profile.as_ref())
        .and_then(|n| n.network_api_version.clone())
    {
        props["networkProfile"]["networkApiVersion"] = json!(api);
        props["networkProfile"]["networkInterfaceConfigurations"] = json!(nics);
    }
    // What the model says of every instance, shown on each as Azure does.
    if let Some(sp) = profile.and_then(|p| p.security_profile.clone()) {
        props["securityProfile"] = sp;
    }
    if let Some(lt) = profile.and_then(|p| p.license_type.clone()) {
        props["licenseType"] = json!(lt);
    }
    if let Some(ac) = set.model.props().additional_capabilities.clone() {
        props["additionalCapabilities"] = ac;
    }
    let resilient = set
        .model
        .props()
        .resiliency_policy
        .as_ref()
        .and_then(|r| r.pointer("/resilientVMDeletionPolicy/enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    props["resilientVMDeletionStatus"] = json!(if resilient { "Enabled" } else { "Disabled" });
    if expand {
        let configured = crate::instances::health_configured(set);
        props["instanceView"] = vm_instance_view(set, rec, status, health, configured);
    }
    let mut v = json!({
        "id": id,
        "name": format!("{}_{}", set.vmss.name, rec.instance_id),
        "type": VMSS_VM_TYPE,
        "location": set.model.location,
        "instanceId": rec.instance_id.to_string(),
        "sku": {"name": rec.launch.sku, "tier": "Standard"},
        "etag": format!("\"{}\"", rec.launch.generation),
        "properties": props,
    });
    if let Some(tags) = &set.model.tags {
        v["tags"] = json!(tags);
    }
    if let Some(plan) = &set.model.plan {
        v["plan"] = plan.clone();
    }
    // An instance has its set's identities, as Azure shows them on each VM.
    if let Some(identity) = set.model.identity.as_ref().filter(|i| !i.is_null()) {
        v["identity"] = identity.clone();
        with_tenant(&mut v, tenant);
    }
    let extensions = vm_extensions(set, &id);
    if !extensions.is_empty() {
        v["resources"] = json!(extensions);
    }
    if let Some(z) = &rec.zone {
        v["zones"] = json!([z]);
    }
    // A Flexible set's instance is also a virtual machine of its own.
    if set.model.orchestration_mode() == shoal_model::vmss::OrchestrationMode::Flexible {
        v["virtualMachineResourceId"] =
            json!(crate::virtual_machines::vm_id(&set.vmss, rec.instance_id));
    }
    v
}

/// `$expand=userData` on an instance: the set's `userData`, as Azure returns it only then.
pub fn add_user_data(vm: &mut Value, set: &VmssRecord) {
    if let Some(data) = set.model.profile().and_then(|p| p.user_data.clone()) {
        vm["properties"]["userData"] = json!(data);
    }
}

/// The OS disk's name, as Azure names a scale-set instance's disk.
fn os_disk_name(set: &VmssRecord, rec: &InstanceRecord) -> String {
    format!(
        "{0}_{0}_{1}_OsDisk_1_{2}",
        set.vmss.name,
        rec.instance_id,
        rec.vm_id.replace('-', "")
    )
}

/// An instance's `osProfile`: the set's, as Azure fills it for a Linux instance.
fn vm_os_profile(set: &VmssRecord, rec: &InstanceRecord) -> Value {
    let os = set.model.profile().and_then(|p| p.os_profile.as_ref());
    json!({
        "computerName": rec.computer_name(),
        "adminUsername": os.and_then(|o| o.admin_username.clone()),
        "linuxConfiguration": os
            .and_then(|o| o.linux_configuration.clone())
            .unwrap_or_else(|| json!({"disablePasswordAuthentication": false, "provisionVMAgent": true})),
        "secrets": os.and_then(|o| o.secrets.clone()).unwrap_or_else(|| json!([])),
        "allowExtensionOperations": os.and_then(|o| o.allow_extension_operations).unwrap_or(true),
        "requireGuestProvisionSignal": true,
    })
}

/// An instance's `storageProfile`: the image it runs, its OS disk (the image's directory,
/// in Azure's managed-disk shape) and the set's data disks.
fn vm_storage_profile(set: &VmssRecord, rec: &InstanceRecord) -> Value {
    let storage = set.model.profile().and_then(|p| p.storage_profile.as_ref());
    let model_disk = storage
        .and_then(|s| s.os_disk.clone())
        .unwrap_or_else(|| json!({}));
    let name = os_disk_name(set, rec);
    let disk_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{name}",
        set.vmss.subscription, set.vmss.resource_group
    );
    let account = model_disk["managedDisk"]["storageAccountType"]
        .as_str()
        .unwrap_or("Standard_LRS")
        .to_string();
    let mut os_disk = json!({
        "osType": "Linux",
        "name": name,
        "createOption": "FromImage",
        "caching": model_disk["caching"].as_str().unwrap_or("ReadWrite"),
        "managedDisk": {"storageAccountType": account, "id": disk_id},
    });
    if let Some(size) = model_disk.get("diskSizeGB") {
        os_disk["diskSizeGB"] = size.clone();
    }
    let mut out = json!({
        "imageReference": {"id": rec.launch.image_id, "exactVersion": rec.launch.image_version},
        "osDisk": os_disk,
        "dataDisks": storage.and_then(|s| s.data_disks.clone()).unwrap_or_else(|| json!([])),
    });
    let model = storage
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    if let Some(t) = model.get("diskControllerType").filter(|t| !t.is_null()) {
        out["diskControllerType"] = t.clone();
    }
    out
}

/// The set's extensions as the instance's extension resources (`resources`).
fn vm_extensions(set: &VmssRecord, vm_id: &str) -> Vec<Value> {
    model_extensions(set)
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or("extension");
            let mut props = e["properties"].clone();
            if props.is_object() {
                props["provisioningState"] = json!("Succeeded");
                if let Some(o) = props.as_object_mut() {
                    o.remove("protectedSettings");
                }
            }
            json!({
                "name": name,
                "id": format!("{vm_id}/extensions/{name}"),
                "type": "Microsoft.Compute/virtualMachines/extensions",
                "location": set.model.location,
                "properties": props,
            })
        })
        .collect()
}

pub fn vmss_instance_view(
    set: &VmssRecord,
    instances: &[(InstanceRecord, Option<InstanceStatus>)],
) -> Value {
    let mut prov: BTreeMap<String, u64> = BTreeMap::new();
    let mut power: BTreeMap<String, u64> = BTreeMap::new();
    for (rec, status) in instances {
        *prov
            .entry(format!(
                "ProvisioningState/{}",
                vm_provisioning_state(rec, status.as_ref()).to_ascii_lowercase()
            ))
            .or_default() += 1;
        *power
            .entry(format!("PowerState/{}", power_state(status.as_ref())))
            .or_default() += 1;
    }
    let summary: Vec<Value> = prov
        .iter()
        .chain(power.iter())
        .map(|(code, count)| json!({"code": code, "count": count}))
        .collect();
    let state = set
        .model
        .props()
        .provisioning_state
        .clone()
        .unwrap_or_else(|| "Succeeded".into());
    // Each model extension, provisioned on every instance the set has.
    let extensions: Vec<Value> = model_extensions(set)
        .iter()
        .map(|e| json!({"name": e["name"], "statusesSummary": [{"code": "ProvisioningState/succeeded", "count": instances.len()}]}))
        .collect();
    let mut status = json!({
        "code": format!("ProvisioningState/{}", state.to_ascii_lowercase()),
        "level": if state == "Failed" { "Error" } else { "Info" },
        "displayStatus": format!("Provisioning {}", state.to_ascii_lowercase()),
    });
    if let Some(t) = set.model.props().time_created.clone() {
        status["time"] = json!(t);
    }
    json!({
        "virtualMachine": {"statusesSummary": summary},
        "extensions": extensions,
        "statuses": [status],
        "orchestrationServices": shoal_control::repair::orchestration_services(set),
    })
}
