//! How stored records look on the wire: scale sets, their instances and instance views
//! in Azure's JSON shape. Shoal-only facts sit in a `shoal` extension object.
//!
//! An instance is answered in Azure's full scale-set VM shape: what it runs and how it
//! was configured come from the set's model (network interface configurations, OS and
//! data disks in Azure's managed-disk shape, the set's extensions as `resources`), what it
//! is doing from the agent's status.

use std::collections::BTreeMap;

pub use crate::vm_view::{SetView, ShoalExtension, VmView};
pub use crate::vm_view_cache::VmViewCache;
use serde_json::{json, Value};
use shoal_model::records::{
    HealthRecord, InstanceRecord, InstanceState, InstanceStatus, VmssRecord,
};

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
pub(crate) fn with_tenant(v: &mut Value, tenant: &str) {
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
    serde_json::to_value(ShoalExtension::new(rec, status)).unwrap_or(Value::Null)
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

/// One instance in Azure's scale-set VM shape, as a JSON tree (for answers that edit
/// it further; listings serialize [`SetView::vm`] directly).
pub fn vm_json(
    set: &VmssRecord,
    rec: &InstanceRecord,
    status: Option<&InstanceStatus>,
    health: Option<&HealthRecord>,
    expand: bool,
    tenant: &str,
) -> Value {
    SetView::new(set, tenant)
        .vm(rec, status, health, expand)
        .into_value()
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
