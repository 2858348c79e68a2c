//! One scale-set instance in Azure's VM shape, serialized straight from the records.
//!
//! Most of what an instance shows is its set's model (network interface configurations,
//! OS profile, disks, extensions, identity, tags). [`SetView`] works those parts out once
//! per answer; [`VmView`] borrows them and adds what belongs to the instance. Nothing is
//! built as a `serde_json::Value` tree per instance: a listing of a thousand instances
//! used to spend ~60 µs on each building, cloning, serializing and dropping such trees
//! (`bench/list1000.py`).
//!
//! Field order: every struct declares its fields in the byte order of their JSON names,
//! so the output is exactly what a sorted `Value` map gave (the API's earlier answers);
//! `same_bytes_as_the_value_tree` in the tests holds that.

use serde::Serialize;
use serde_json::{json, Value};
use shoal_model::records::{
    HealthRecord, InstanceRecord, InstanceState, InstanceStatus, ProtectionPolicy, VmssRecord,
};
use shoal_model::vmss::{OrchestrationMode, VMSS_VM_TYPE};

use crate::views;

/// What every instance of one set shows of the set's model.
pub struct SetView<'a> {
    set: &'a VmssRecord,
    /// The set's resource id (instance ids are `{set_id}/virtualMachines/{n}`).
    set_id: String,
    location: Option<&'a str>,
    identity: Option<Value>,
    tags: Option<&'a std::collections::BTreeMap<String, String>>,
    plan: Option<&'a Value>,
    nics: &'a [Value],
    network_api_version: Option<&'a str>,
    diagnostics: Value,
    vm_size_properties: Option<&'a Value>,
    security_profile: Option<&'a Value>,
    license_type: Option<&'a str>,
    additional_capabilities: Option<&'a Value>,
    resilient: &'static str,
    os: OsShape<'a>,
    disk: DiskShape<'a>,
    /// The set's extensions: name and properties as an instance shows them.
    extensions: Vec<(String, Value)>,
    user_data: Option<&'a str>,
    flexible: bool,
    health_configured: bool,
    latest_generation: u64,
}

struct OsShape<'a> {
    admin_username: Option<&'a str>,
    allow_extension_operations: bool,
    linux_configuration: Value,
    secrets: Value,
}

struct DiskShape<'a> {
    caching: String,
    storage_account_type: String,
    disk_size_gb: Option<Value>,
    data_disks: Value,
    disk_controller_type: Option<&'a str>,
}

impl<'a> SetView<'a> {
    pub fn new(set: &'a VmssRecord, tenant: &str) -> Self {
        let model = &set.model;
        let profile = model.profile();
        let network = profile.and_then(|p| p.network_profile.as_ref());
        let os = profile.and_then(|p| p.os_profile.as_ref());
        let storage = profile.and_then(|p| p.storage_profile.as_ref());
        let model_disk = storage
            .and_then(|s| s.os_disk.clone())
            .unwrap_or_else(|| json!({}));
        let identity = model
            .identity
            .as_ref()
            .filter(|i| !i.is_null())
            .map(|identity| {
                let mut v = json!({ "identity": identity });
                views::with_tenant(&mut v, tenant);
                v["identity"].take()
            });
        let extensions = views::model_extensions(set)
            .into_iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap_or("extension").to_owned();
                let mut props = e["properties"].clone();
                if let Some(o) = props.as_object_mut() {
                    o.insert("provisioningState".into(), json!("Succeeded"));
                    o.remove("protectedSettings");
                }
                (name, props)
            })
            .collect();
        let resilient = model
            .props()
            .resiliency_policy
            .as_ref()
            .and_then(|r| r.pointer("/resilientVMDeletionPolicy/enabled"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        SetView {
            set,
            set_id: set.vmss.id(),
            location: model.location.as_deref(),
            identity,
            tags: model.tags.as_ref(),
            plan: model.plan.as_ref(),
            nics: network
                .and_then(|n| n.network_interface_configurations.as_deref())
                .unwrap_or_default(),
            network_api_version: network.and_then(|n| n.network_api_version.as_deref()),
            diagnostics: profile
                .and_then(|p| p.diagnostics_profile.clone())
                .unwrap_or_else(|| json!({"bootDiagnostics": {"enabled": false}})),
            vm_size_properties: profile
                .and_then(|p| p.hardware_profile.as_ref())
                .and_then(|h| h.get("vmSizeProperties"))
                .filter(|p| p.is_object()),
            security_profile: profile.and_then(|p| p.security_profile.as_ref()),
            license_type: profile.and_then(|p| p.license_type.as_deref()),
            additional_capabilities: model.props().additional_capabilities.as_ref(),
            resilient: if resilient { "Enabled" } else { "Disabled" },
            os: OsShape {
                admin_username: os.and_then(|o| o.admin_username.as_deref()),
                allow_extension_operations: os
                    .and_then(|o| o.allow_extension_operations)
                    .unwrap_or(true),
                linux_configuration: os
                    .and_then(|o| o.linux_configuration.clone())
                    .unwrap_or_else(
                        || json!({"disablePasswordAuthentication": false, "provisionVMAgent": true}),
                    ),
                secrets: os
                    .and_then(|o| o.secrets.clone())
                    .unwrap_or_else(|| json!([])),
            },
            disk: DiskShape {
                caching: model_disk["caching"]
                    .as_str()
                    .unwrap_or("ReadWrite")
                    .to_owned(),
                storage_account_type: model_disk["managedDisk"]["storageAccountType"]
                    .as_str()
                    .unwrap_or("Standard_LRS")
                    .to_owned(),
                disk_size_gb: model_disk.get("diskSizeGB").cloned(),
                data_disks: storage
                    .and_then(|s| s.data_disks.clone())
                    .unwrap_or_else(|| json!([])),
                disk_controller_type: storage.and_then(|s| s.disk_controller_type.as_deref()),
            },
            extensions,
            user_data: profile.and_then(|p| p.user_data.as_deref()),
            flexible: model.orchestration_mode() == OrchestrationMode::Flexible,
            health_configured: crate::instances::health_configured(set),
            latest_generation: set.launch.generation,
        }
    }

    /// `rec` as Azure shows a scale-set VM; with `expand`, its `instanceView` too.
    pub fn vm(
        &'a self,
        rec: &'a InstanceRecord,
        status: Option<&'a InstanceStatus>,
        health: Option<&'a HealthRecord>,
        expand: bool,
    ) -> VmView<'a> {
        let id = format!("{}/virtualMachines/{}", self.set_id, rec.instance_id);
        let disk_name = format!(
            "{0}_{0}_{1}_OsDisk_1_{2}",
            self.set.vmss.name,
            rec.instance_id,
            rec.vm_id.replace('-', "")
        );
        let vmss = &self.set.vmss;
        let disk_id = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{disk_name}",
            vmss.subscription, vmss.resource_group
        );
        let nic_ids = self
            .nics
            .iter()
            .map(|n| NicRef {
                id: format!(
                    "{id}/networkInterfaces/{}",
                    n["name"].as_str().unwrap_or("nic")
                ),
            })
            .collect();
        let resources = self
            .extensions
            .iter()
            .map(|(name, properties)| ExtensionResource {
                id: format!("{id}/extensions/{name}"),
                location: self.location,
                name,
                properties,
                kind: "Microsoft.Compute/virtualMachines/extensions",
            })
            .collect();
        let properties = VmProperties {
            additional_capabilities: self.additional_capabilities,
            diagnostics_profile: &self.diagnostics,
            hardware_profile: HardwareProfile {
                vm_size: &rec.launch.sku,
                vm_size_properties: self.vm_size_properties,
            },
            instance_view: expand.then(|| {
                views::vm_instance_view(self.set, rec, status, health, self.health_configured)
            }),
            latest_model_applied: rec.launch.generation >= self.latest_generation,
            license_type: self.license_type,
            model_definition_applied: "VirtualMachineScaleSet",
            network_profile: NetworkProfile {
                network_api_version: self.network_api_version,
                network_interface_configurations: self.network_api_version.map(|_| self.nics),
                network_interfaces: nic_ids,
            },
            network_profile_configuration: NicConfigurations {
                network_interface_configurations: self.nics,
            },
            os_profile: OsProfile {
                admin_username: self.os.admin_username,
                allow_extension_operations: self.os.allow_extension_operations,
                computer_name: rec.computer_name(),
                linux_configuration: &self.os.linux_configuration,
                require_guest_provision_signal: true,
                secrets: &self.os.secrets,
            },
            protection_policy: &rec.protection,
            provisioning_state: views::vm_provisioning_state(rec, status),
            resilient_vm_deletion_status: self.resilient,
            security_profile: self.security_profile,
            shoal: ShoalExtension::new(rec, status),
            storage_profile: StorageProfile {
                data_disks: &self.disk.data_disks,
                disk_controller_type: self.disk.disk_controller_type,
                image_reference: ImageReference {
                    exact_version: &rec.launch.image_version,
                    id: &rec.launch.image_id,
                },
                os_disk: OsDisk {
                    caching: &self.disk.caching,
                    create_option: "FromImage",
                    disk_size_gb: self.disk.disk_size_gb.as_ref(),
                    managed_disk: ManagedDisk {
                        id: disk_id,
                        storage_account_type: &self.disk.storage_account_type,
                    },
                    name: disk_name,
                    os_type: "Linux",
                },
            },
            time_created: &rec.time_created,
            user_data: None,
            vm_id: &rec.vm_id,
        };
        VmView {
            etag: format!("\"{}\"", rec.launch.generation),
            identity: self.identity.as_ref(),
            instance_id: rec.instance_id.to_string(),
            location: self.location,
            name: format!("{}_{}", vmss.name, rec.instance_id),
            plan: self.plan,
            properties,
            resources,
            sku: Sku {
                name: &rec.launch.sku,
                tier: "Standard",
            },
            tags: self.tags,
            kind: VMSS_VM_TYPE,
            virtual_machine_resource_id: self
                .flexible
                .then(|| crate::virtual_machines::vm_id(vmss, rec.instance_id)),
            zones: rec.zone.as_deref().map(|z| [z]),
            id,
        }
    }
}

/// One instance, ready to serialize.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmView<'a> {
    etag: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a Value>,
    instance_id: String,
    location: Option<&'a str>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a Value>,
    properties: VmProperties<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<ExtensionResource<'a>>,
    sku: Sku<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a std::collections::BTreeMap<String, String>>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_machine_resource_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zones: Option<[&'a str; 1]>,
}

impl VmView<'_> {
    /// `$expand=userData`: the set's `userData`, which Azure returns only then.
    pub fn with_user_data(mut self, set: &SetView<'_>) -> Self {
        self.properties.user_data = set.user_data.map(str::to_owned);
        self
    }

    /// The instance as a JSON tree, for answers that edit it further.
    pub fn into_value(self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VmProperties<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_capabilities: Option<&'a Value>,
    diagnostics_profile: &'a Value,
    hardware_profile: HardwareProfile<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_view: Option<Value>,
    latest_model_applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    license_type: Option<&'a str>,
    model_definition_applied: &'static str,
    network_profile: NetworkProfile<'a>,
    network_profile_configuration: NicConfigurations<'a>,
    os_profile: OsProfile<'a>,
    protection_policy: &'a ProtectionPolicy,
    provisioning_state: &'static str,
    #[serde(rename = "resilientVMDeletionStatus")]
    resilient_vm_deletion_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_profile: Option<&'a Value>,
    shoal: ShoalExtension<'a>,
    storage_profile: StorageProfile<'a>,
    time_created: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_data: Option<String>,
    vm_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HardwareProfile<'a> {
    vm_size: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    vm_size_properties: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NetworkProfile<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    network_api_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network_interface_configurations: Option<&'a [Value]>,
    network_interfaces: Vec<NicRef>,
}

#[derive(Serialize)]
struct NicRef {
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NicConfigurations<'a> {
    network_interface_configurations: &'a [Value],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OsProfile<'a> {
    admin_username: Option<&'a str>,
    allow_extension_operations: bool,
    computer_name: String,
    linux_configuration: &'a Value,
    require_guest_provision_signal: bool,
    secrets: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StorageProfile<'a> {
    data_disks: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_controller_type: Option<&'a str>,
    image_reference: ImageReference<'a>,
    os_disk: OsDisk<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageReference<'a> {
    exact_version: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OsDisk<'a> {
    caching: &'a str,
    create_option: &'static str,
    #[serde(rename = "diskSizeGB", skip_serializing_if = "Option::is_none")]
    disk_size_gb: Option<&'a Value>,
    managed_disk: ManagedDisk<'a>,
    name: String,
    os_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManagedDisk<'a> {
    id: String,
    storage_account_type: &'a str,
}

#[derive(Serialize)]
struct ExtensionResource<'a> {
    id: String,
    location: Option<&'a str>,
    name: &'a str,
    properties: &'a Value,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Sku<'a> {
    name: &'a str,
    tier: &'static str,
}

/// Shoal's own facts about an instance (`properties.shoal`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShoalExtension<'a> {
    address: Option<String>,
    host: &'a str,
    image_version: &'a str,
    limits: Option<&'a str>,
    message: Option<&'a str>,
    network: Option<&'a str>,
    pid: Option<u32>,
    port: Option<u16>,
    power_state: &'static str,
    private_ip_address: Option<&'a str>,
    restarts: u32,
    state: Option<&'static str>,
}

impl<'a> ShoalExtension<'a> {
    pub fn new(rec: &'a InstanceRecord, status: Option<&'a InstanceStatus>) -> Self {
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
        ShoalExtension {
            address,
            host: &rec.host,
            image_version: &rec.launch.image_version,
            limits: status.and_then(|s| s.limits.as_deref()),
            message: status.and_then(|s| s.message.as_deref()),
            network: status.and_then(|s| s.network.as_deref()),
            pid: status.and_then(|s| s.pid),
            port: status.and_then(|s| s.port),
            power_state: views::power_state(status),
            private_ip_address: status.and_then(|s| s.address.as_deref()),
            restarts: status.map(|s| s.restarts).unwrap_or(0),
            state: status.map(|s| s.state.as_str()),
        }
    }
}

/// Records for tests of instance views.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use shoal_model::ids::VmssRef;
    use shoal_model::records::InstanceState;
    use shoal_model::records::{LaunchSpec, PowerIntent};

    pub(crate) fn set(body: Value) -> VmssRecord {
        let mut model = shoal_model::vmss::parse_typed(&body).expect("model");
        shoal_model::vmss::normalize(&mut model);
        VmssRecord {
            vmss: VmssRef::new("s", "demo", "web"),
            model,
            launch: launch(3),
            next_instance_id: 9,
            deleting: false,
            operation: None,
            services: Value::Null,
        }
    }
    fn launch(generation: u64) -> LaunchSpec {
        LaunchSpec {
            generation,
            image_id: "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/galleries/g/images/web/versions/1.0.0".into(),
            image_version: "1.0.0".into(),
            kind: "process".into(),
            blob_id: "b".into(),
            command: "./web".into(),
            port: 8080,
            sku: "Shoal_1vCPU_512MB".into(),
            vcpus: 1,
            memory_mb: 512,
            custom_data: None,
            computer_name_prefix: "web".into(),
            terminate_notice_secs: None,
        }
    }
    pub(crate) fn inst(id: u64, zone: Option<&str>, generation: u64) -> InstanceRecord {
        InstanceRecord {
            vmss: VmssRef::new("s", "demo", "web"),
            instance_id: id,
            vm_id: "1234-5678-abcd".into(),
            host: if id.is_multiple_of(2) {
                "h1".into()
            } else {
                String::new()
            },
            zone: zone.map(Into::into),
            fault_domain: 1,
            launch: launch(generation),
            power: PowerIntent::Running,
            restart_gen: 0,
            reimage_gen: 0,
            deleting: id == 5,
            protection: ProtectionPolicy {
                protect_from_scale_in: id == 2,
                protect_from_scale_set_actions: false,
            },
            time_created: "2026-01-01T00:00:00Z".into(),
            epoch: 0,
            rebalance: false,
        }
    }
    pub(crate) fn status(state: InstanceState, gen: u64) -> InstanceStatus {
        InstanceStatus {
            state,
            host: "h1".into(),
            launch_generation: gen,
            restart_gen: 0,
            reimage_gen: 0,
            address: Some("10.0.0.2".into()),
            port: Some(8080),
            pid: Some(42),
            message: Some("why \"quoted\"".into()),
            restarts: 2,
            since: "2026-01-01T00:00:01Z".into(),
            limits: Some("cgroup v1".into()),
            network: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use shoal_model::records::InstanceState;

    /// The output is what a sorted JSON map gives (every struct's fields in the byte
    /// order of their names): byte for byte the answers of the earlier `Value` trees.
    #[test]
    fn same_bytes_as_the_value_tree() {
        let img = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/galleries/g/images/web/versions/1.0.0";
        let minimal = json!({"location": "local", "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": img}}}}});
        let rich = json!({"location": "local", "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2},
        "tags": {"b": "2", "a": "1"}, "zones": ["1", "2"],
        "plan": {"name": "p", "publisher": "x", "product": "y"},
        "identity": {"type": "SystemAssigned", "principalId": "pp"},
        "properties": {
            "orchestrationMode": "Flexible",
            "platformFaultDomainCount": 1,
            "additionalCapabilities": {"ultraSSDEnabled": false},
            "resiliencyPolicy": {"resilientVMDeletionPolicy": {"enabled": true}},
            "virtualMachineProfile": {
                "userData": "dXNlcg==",
                "licenseType": "RHEL_BYOS",
                "securityProfile": {"encryptionAtHost": false},
                "hardwareProfile": {"vmSizeProperties": {"vCPUsAvailable": 1}},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": true}},
                "osProfile": {"computerNamePrefix": "web", "adminUsername": "azure", "adminPassword": "Secret123!x",
                    "linuxConfiguration": {"disablePasswordAuthentication": true}, "secrets": [], "allowExtensionOperations": false},
                "storageProfile": {"imageReference": {"id": img}, "diskControllerType": "NVMe",
                    "osDisk": {"createOption": "FromImage", "caching": "ReadOnly", "diskSizeGB": 64, "managedDisk": {"storageAccountType": "Premium_LRS"}},
                    "dataDisks": [{"lun": 0, "createOption": "Empty", "diskSizeGB": 8}]},
                "networkProfile": {"networkApiVersion": "2020-11-01", "networkInterfaceConfigurations": [
                    {"name": "nic1", "properties": {"primary": true, "ipConfigurations": [{"name": "ip", "properties": {}}]}}]},
                "extensionProfile": {"extensions": [
                    {"name": "health", "properties": {"publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux", "typeHandlerVersion": "1.0", "settings": {"port": 80}, "protectedSettings": {"k": "v"}}}]}
            }}});
        for body in [minimal, rich.clone()] {
            let s = set(body);
            let shape = SetView::new(&s, "tenant-1");
            for (i, zone) in [(1, Some("2")), (2, None), (5, None)] {
                for st in [
                    None,
                    Some(status(InstanceState::Running, 3)),
                    Some(status(InstanceState::Failed, 2)),
                ] {
                    let rec = inst(i, zone, 3);
                    for expand in [false, true] {
                        let text = serde_json::to_string(
                            &shape
                                .vm(&rec, st.as_ref(), None, expand)
                                .with_user_data(&shape),
                        )
                        .expect("serializes");
                        let tree: Value = serde_json::from_str(&text).expect("JSON");
                        assert_eq!(text, tree.to_string(), "keys out of order");
                    }
                }
            }
        }
        // What the rich model puts on each instance, secrets left out.
        let s = set(rich);
        let shape = SetView::new(&s, "tenant-1");
        let vm = shape
            .vm(&inst(1, Some("2"), 3), None, None, false)
            .into_value();
        assert_eq!(vm["identity"]["tenantId"], "tenant-1");
        assert_eq!(vm["zones"], json!(["2"]));
        assert_eq!(
            vm["resources"][0]["properties"]["provisioningState"],
            "Succeeded"
        );
        assert!(vm["resources"][0]["properties"]
            .get("protectedSettings")
            .is_none());
        assert_eq!(
            vm["properties"]["storageProfile"]["osDisk"]["diskSizeGB"],
            64
        );
        assert_eq!(vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"],
            "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/1/networkInterfaces/nic1");
        assert!(
            vm["virtualMachineResourceId"].is_string(),
            "a Flexible set's instance is a VM of its own"
        );
        assert!(!vm.to_string().contains("Secret123"));
    }
}
