//! `Microsoft.Compute/virtualMachineScaleSets` in Azure's JSON shape.
//!
//! A PUT body is parsed once into [`VirtualMachineScaleSet`] ([`parse_body`]: a wrong
//! type is a 400 naming the field) and replaces the stored model, keeping only what
//! [`keep_on_put`] lists; a PATCH body is merged over the stored model as JSON
//! ([`patch_json`]) and then parsed ([`parse_typed`]). Either result is given Azure's
//! defaults by [`normalize`] and checked by [`validate`] (which also refuses a change of
//! an immutable property). Fields Shoal does not act on are kept as raw JSON so they
//! round-trip.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ArmError;
use crate::upgrade_policy::{AutomaticOsUpgradePolicy, RollingUpgradePolicy, ShoalSetProperties};
use crate::{arm_enum, duration, sku};

pub const VMSS_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets";
pub const VMSS_VM_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines";
pub const MAX_CAPACITY: i64 = 1000;

arm_enum!(UpgradeMode { Automatic = "Automatic", Manual = "Manual", Rolling = "Rolling" });
arm_enum!(RepairAction { Replace = "Replace", Restart = "Restart", Reimage = "Reimage" });
arm_enum!(ScaleInRule { Default = "Default", NewestVm = "NewestVM", OldestVm = "OldestVM" });
arm_enum!(OrchestrationMode { Uniform = "Uniform", Flexible = "Flexible" });

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineScaleSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_location: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<VmssProperties>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmssProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_policy: Option<UpgradePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_repairs_policy: Option<AutomaticRepairsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_profile: Option<VmProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overprovision: Option<bool>,
    #[serde(
        rename = "doNotRunExtensionsOnOverprovisionedVMs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub do_not_run_extensions_on_overprovisioned_vms: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_placement_group: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_balance: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_fault_domain_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_policy: Option<ScaleInPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestration_mode: Option<OrchestrationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_capabilities: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proximity_placement_group: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_restore_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_mix_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resiliency_policy: Option<Value>,
    #[serde(flatten)]
    pub stored: crate::vmss_stored::StoredSetProperties,
    /// Shoal's extension properties (`properties.shoal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shoal: Option<ShoalSetProperties>,
    /// Read-only, set by Shoal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Read-only, set by Shoal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    /// Read-only, set by Shoal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_created: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<UpgradeMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_upgrade_policy: Option<RollingUpgradePolicy>,
    #[serde(
        rename = "automaticOSUpgradePolicy",
        alias = "automaticOsUpgradePolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub automatic_os_upgrade_policy: Option<AutomaticOsUpgradePolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutomaticRepairsPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_action: Option<RepairAction>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleInPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<ScaleInRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_deletion: Option<bool>,
    #[serde(flatten)]
    pub stored: crate::vmss_stored::StoredScaleIn,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_profile: Option<OsProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_profile: Option<StorageProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_profile: Option<NetworkProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_events_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(flatten)]
    pub stored: crate::vmss_stored::StoredVmProfile,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer_name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_username: Option<String>,
    /// Accepted, never stored in what GET returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<String>,
    /// Base64; reaches the instance as a file (`SHOAL_CUSTOM_DATA`). Not returned by GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_extension_operations: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_reference: Option<ImageReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_disk: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_disks: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_controller_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Read-only: the version an `id` without a version resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_probe: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_configurations: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_api_version: Option<String>,
}

/// Deep-merges `incoming` over `base`: objects merge key by key, anything else
/// (including arrays) replaces; `null` in `incoming` leaves the stored value alone.
pub fn merge_json(base: &mut Value, incoming: &Value) {
    match (base, incoming) {
        (Value::Object(b), Value::Object(i)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                match b.get_mut(k) {
                    Some(existing) => merge_json(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, i) if !i.is_null() => *b = i.clone(),
        _ => {}
    }
}

/// ARM PATCH: deep-merges `incoming` over `base` as [`merge_json`] does, except that
/// `tags`, when given, replace the stored tags whole (as ARM's PATCH does).
pub fn patch_json(base: &mut Value, incoming: &Value) {
    if let (Some(b), Some(tags)) = (
        base.as_object_mut(),
        incoming.get("tags").filter(|t| !t.is_null()),
    ) {
        b.insert("tags".into(), tags.clone());
    }
    merge_json(base, incoming);
}

/// ARM PUT: the request's model replaces the stored one, except for what a PUT may omit
/// and keep: `sku.capacity`; the immutable `orchestrationMode` and
/// `platformFaultDomainCount` (a *different* value is refused by [`validate`]); the
/// read-only `provisioningState`, `uniqueId` and `timeCreated`; and the write-only
/// `osProfile.adminPassword` and `customData`, which GET never shows, so that a
/// GET-change-PUT round trip keeps them. Everything else the request omits is removed.
///
/// A PUT with no `properties` at all changes only what it names (the set's sku, location,
/// zones) and keeps the model and tags, as Azure's compute provider does: `az vmss scale`
/// sends exactly `{location, sku}`.
pub fn keep_on_put(model: &mut VirtualMachineScaleSet, previous: &VirtualMachineScaleSet) {
    if model.properties.is_none() {
        model.properties.clone_from(&previous.properties);
        if model.tags.is_none() {
            model.tags.clone_from(&previous.tags);
        }
    }
    if model.sku.as_ref().and_then(|s| s.capacity).is_none() {
        if let Some(c) = previous.sku.as_ref().and_then(|s| s.capacity) {
            model.sku.get_or_insert_with(Sku::default).capacity = Some(c);
        }
    }
    let prev = previous.props();
    let p = model.properties.get_or_insert_with(VmssProperties::default);
    p.orchestration_mode = p.orchestration_mode.or(prev.orchestration_mode);
    p.platform_fault_domain_count = p
        .platform_fault_domain_count
        .or(prev.platform_fault_domain_count);
    for (field, kept) in [
        (&mut p.provisioning_state, &prev.provisioning_state),
        (&mut p.unique_id, &prev.unique_id),
        (&mut p.time_created, &prev.time_created),
    ] {
        if field.is_none() {
            field.clone_from(kept);
        }
    }
    let Some(prev_os) = previous.profile().and_then(|p| p.os_profile.as_ref()) else {
        return;
    };
    if prev_os.admin_password.is_none() && prev_os.custom_data.is_none() {
        return;
    }
    let os = p
        .virtual_machine_profile
        .get_or_insert_with(VmProfile::default)
        .os_profile
        .get_or_insert_with(OsProfile::default);
    if os.admin_password.is_none() {
        os.admin_password.clone_from(&prev_os.admin_password);
    }
    if os.custom_data.is_none() {
        os.custom_data.clone_from(&prev_os.custom_data);
    }
}

/// The 400 for a field of the wrong type (`path` as serde_path_to_error spells it).
fn invalid_field(path: String, inner: &serde_json::Error) -> ArmError {
    let inner = inner.to_string();
    // serde_json appends " at line 1 column N": meaningless for the caller.
    let inner = inner.split(" at line ").next().unwrap_or(&inner);
    ArmError::invalid_parameter(
        path.clone(),
        format!("Property '{path}' is invalid: {inner}."),
    )
}

/// Parses a JSON value into a typed resource, naming the offending field on error.
pub fn parse_typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, ArmError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        invalid_field(path, e.inner())
    })
}

/// Parses a request body straight into a typed resource (no intermediate JSON value):
/// an empty body, one that is not JSON or not a JSON object is `InvalidRequestContent`;
/// a field of the wrong type is `InvalidParameter` naming it.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ArmError> {
    let not_json = |e: &dyn std::fmt::Display| {
        ArmError::invalid_request_content(format!(
            "The request body is not valid JSON ({e}). Send a JSON object."
        ))
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ArmError::invalid_request_content(
                "The request body is empty: send a JSON object.",
            ))
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(match serde_json::from_slice::<Value>(body) {
                Err(e) => not_json(&e),
                Ok(_) => {
                    ArmError::invalid_request_content("The request body must be a JSON object.")
                }
            })
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed =
        serde_path_to_error::deserialize(&mut de).map_err(|e| match e.inner().classify() {
            serde_json::error::Category::Data => {
                let path = e.path().to_string();
                invalid_field(path, e.inner())
            }
            _ => not_json(e.inner()),
        })?;
    de.end().map_err(|e| not_json(&e))?;
    Ok(parsed)
}

impl VirtualMachineScaleSet {
    pub fn props(&self) -> &VmssProperties {
        static EMPTY: std::sync::OnceLock<VmssProperties> = std::sync::OnceLock::new();
        self.properties
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(VmssProperties::default))
    }

    pub fn capacity(&self) -> i64 {
        self.sku.as_ref().and_then(|s| s.capacity).unwrap_or(0)
    }

    /// The size the set's model runs with: `sku.name`, or for an instance mix
    /// (`sku.name: "Mix"`) the size its strategy tries first ([`Self::mix_sizes`]); each
    /// instance of a mix gets the first size in that order that a host has room for.
    pub fn sku_name(&self) -> &str {
        let name = self
            .sku
            .as_ref()
            .and_then(|s| s.name.as_deref())
            .unwrap_or("");
        if !name.eq_ignore_ascii_case(MIX) {
            return name;
        }
        self.mix_sizes().first().map_or(name, |(n, _)| n)
    }

    /// An instance mix's sizes as `(name, rank)`, in the order a new instance tries them:
    /// `Prioritized` by `rank`, `LowestPrice` (the default) cheapest first
    /// ([`sku::Size::price`]), `CapacityOptimized` as listed (the placement then prefers
    /// the size most instances still fit for).
    pub fn mix_sizes(&self) -> Vec<(&str, i64)> {
        let Some(profile) = self.props().stored.sku_profile.as_ref() else {
            return Vec::new();
        };
        let mut sizes: Vec<(&str, i64)> = profile["vmSizes"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| {
                Some((s["name"].as_str()?, s["rank"].as_i64().unwrap_or(i as i64)))
            })
            .collect();
        let strategy = profile["allocationStrategy"]
            .as_str()
            .unwrap_or("LowestPrice");
        if strategy.eq_ignore_ascii_case("Prioritized") {
            sizes.sort_by_key(|(_, rank)| *rank);
        } else if strategy.eq_ignore_ascii_case("LowestPrice") {
            let price = |n: &str| sku::lookup(n).map_or(f64::MAX, |s| s.price());
            sizes.sort_by(|a, b| price(a.0).total_cmp(&price(b.0)));
        }
        sizes
    }

    /// Whether new instances choose among several sizes (an instance mix's
    /// `CapacityOptimized` strategy picks by room, the others in [`Self::mix_sizes`]' order).
    pub fn capacity_optimized(&self) -> bool {
        self.props()
            .stored
            .sku_profile
            .as_ref()
            .and_then(|p| p["allocationStrategy"].as_str())
            .is_some_and(|a| a.eq_ignore_ascii_case("CapacityOptimized"))
    }

    pub fn profile(&self) -> Option<&VmProfile> {
        self.props().virtual_machine_profile.as_ref()
    }

    /// What the model's image reference names, as the image resolver takes it: the
    /// gallery `id`, or `urn:publisher:offer:sku:version` for a platform image (version
    /// `latest` when none is given).
    pub fn image_id(&self) -> Option<String> {
        let r = self
            .profile()?
            .storage_profile
            .as_ref()?
            .image_reference
            .as_ref()?;
        if let Some(id) = r.id.as_deref().filter(|i| !i.trim().is_empty()) {
            return Some(id.to_string());
        }
        match (&r.publisher, &r.offer, &r.sku) {
            (Some(p), Some(o), Some(s)) => Some(format!(
                "urn:{p}:{o}:{s}:{}",
                r.version.as_deref().unwrap_or("latest")
            )),
            _ => None,
        }
    }

    pub fn custom_data(&self) -> Option<&str> {
        self.profile()?.os_profile.as_ref()?.custom_data.as_deref()
    }

    pub fn upgrade_mode(&self) -> UpgradeMode {
        self.props()
            .upgrade_policy
            .as_ref()
            .and_then(|u| u.mode)
            .unwrap_or(UpgradeMode::Manual)
    }

    /// `resiliencyPolicy.automaticZoneRebalancingPolicy.enabled`: instances are moved
    /// (a new one first, then the old one) until the set's zones are even again.
    pub fn zone_rebalancing(&self) -> bool {
        self.props()
            .resiliency_policy
            .as_ref()
            .is_some_and(|r| r["automaticZoneRebalancingPolicy"]["enabled"] == Value::Bool(true))
    }

    pub fn scale_in_rule(&self) -> ScaleInRule {
        self.props()
            .scale_in_policy
            .as_ref()
            .and_then(|p| p.rules.as_ref())
            .and_then(|r| r.first().copied())
            .unwrap_or(ScaleInRule::Default)
    }

    pub fn orchestration_mode(&self) -> OrchestrationMode {
        self.props()
            .orchestration_mode
            .unwrap_or(OrchestrationMode::Uniform)
    }

    pub fn computer_name_prefix(&self) -> Option<&str> {
        self.profile()?
            .os_profile
            .as_ref()?
            .computer_name_prefix
            .as_deref()
    }

    /// The model as GET shows it: secrets (admin password, custom data) removed.
    pub fn public_view(&self) -> VirtualMachineScaleSet {
        let mut v = self.clone();
        if let Some(os) = v
            .properties
            .as_mut()
            .and_then(|p| p.virtual_machine_profile.as_mut())
            .and_then(|p| p.os_profile.as_mut())
        {
            os.admin_password = None;
            os.custom_data = None;
        }
        v
    }
}

/// Seconds of notice before deletion from `scheduledEventsProfile`, if enabled.
/// Azure allows PT5M to PT15M for `notBeforeTimeout`; Shoal allows PT1S to PT15M.
pub fn terminate_notice(profile: &Value) -> Result<Option<u64>, ArmError> {
    const TARGET: &str =
        "properties.virtualMachineProfile.scheduledEventsProfile.terminateNotificationProfile";
    let Some(t) = profile
        .get("terminateNotificationProfile")
        .filter(|t| !t.is_null())
    else {
        return Ok(None);
    };
    let enabled = match t.get("enable") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ArmError::invalid_parameter(
                format!("{TARGET}.enable"),
                "enable must be true or false.",
            ))
        }
    };
    if !enabled {
        return Ok(None);
    }
    let timeout = t
        .get("notBeforeTimeout")
        .and_then(Value::as_str)
        .unwrap_or("PT5M");
    match duration::parse_iso8601(timeout) {
        Some(secs) if (1..=15 * 60).contains(&secs) => Ok(Some(secs)),
        _ => Err(ArmError::invalid_parameter(
            format!("{TARGET}.notBeforeTimeout"),
            format!("notBeforeTimeout '{timeout}' is invalid: use an ISO 8601 duration from PT1S to PT15M."),
        )),
    }
}

impl VirtualMachineScaleSet {
    /// Seconds of terminate notice (validated models only).
    pub fn terminate_notice_secs(&self) -> Option<u64> {
        self.profile()?
            .scheduled_events_profile
            .as_ref()
            .and_then(|p| terminate_notice(p).ok().flatten())
    }
}

/// Fills in Azure's defaults for everything a create may omit.
pub fn normalize(v: &mut VirtualMachineScaleSet) {
    let sku = v.sku.get_or_insert_with(Sku::default);
    if sku.capacity.is_none() {
        sku.capacity = Some(2);
    }
    if sku.tier.is_none() {
        sku.tier = Some("Standard".into());
    }
    if let Some(name) = sku.name.as_deref().and_then(sku::lookup) {
        sku.name = Some(name.name);
    }
    let p = v.properties.get_or_insert_with(VmssProperties::default);
    let mode = *p
        .orchestration_mode
        .get_or_insert(OrchestrationMode::Uniform);
    p.upgrade_policy
        .get_or_insert_with(UpgradePolicy::default)
        .mode
        .get_or_insert(UpgradeMode::Manual);
    p.overprovision
        .get_or_insert(mode == OrchestrationMode::Uniform);
    p.single_placement_group.get_or_insert(true);
    p.platform_fault_domain_count.get_or_insert(1);
    p.scale_in_policy
        .get_or_insert_with(ScaleInPolicy::default)
        .rules
        .get_or_insert_with(|| vec![ScaleInRule::Default]);
    if let Some(r) = p.automatic_repairs_policy.as_mut() {
        r.enabled.get_or_insert(false);
        r.grace_period.get_or_insert("PT10M".into());
        r.repair_action.get_or_insert(RepairAction::Replace);
    }
}

/// Whether the set has a system-assigned managed identity.
/// `sku.name` of an instance mix.
pub const MIX: &str = "Mix";

pub fn system_identity(m: &VirtualMachineScaleSet) -> Option<&str> {
    let id = m.identity.as_ref()?;
    if system_assigned(id) {
        id["principalId"].as_str()
    } else {
        None
    }
}

/// Whether `identity.type` includes `SystemAssigned` (`"SystemAssigned, UserAssigned"`).
fn system_assigned(identity: &Value) -> bool {
    identity["type"].as_str().is_some_and(|t| {
        t.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("SystemAssigned"))
    })
}

/// Fills what Azure answers for `identity`: a system-assigned identity's `principalId`
/// (the set's `uniqueId`: one per set, kept across updates, new when the set is made
/// again, so role assignments never carry over to a namesake). `None` clears it.
pub fn settle_identity(m: &mut VirtualMachineScaleSet) {
    let unique = m.props().unique_id.clone();
    let system = m.identity.as_ref().is_some_and(system_assigned);
    let Some(id) = m.identity.as_mut().and_then(Value::as_object_mut) else {
        return;
    };
    match unique.filter(|_| system) {
        Some(u) => {
            id.insert("principalId".into(), Value::String(u));
        }
        None => {
            id.remove("principalId");
        }
    }
}

/// `identity.type`: one of Azure's four.
fn validate_identity(id: &Value) -> Result<(), ArmError> {
    if id.is_null() {
        return Ok(());
    }
    let ty = id["type"].as_str().unwrap_or("");
    let mut parts: Vec<String> = ty
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    parts.sort();
    let known = matches!(
        parts
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["none"] | ["systemassigned"] | ["userassigned"] | ["systemassigned", "userassigned"]
    );
    if !id.is_object() || !known {
        return Err(ArmError::invalid_parameter(
            "identity.type",
            format!(
                "identity.type '{ty}' is not one of SystemAssigned, UserAssigned, \
                 'SystemAssigned, UserAssigned' or None."
            ),
        ));
    }
    Ok(())
}

/// `resiliencyPolicy`: an object of sub-policies whose `enabled` are booleans; automatic
/// zone rebalancing takes only Azure's one strategy and behaviour, and (as in Azure)
/// works only without strict `zoneBalance` (on a set with fewer than two zones, Azure
/// accepts it and there is nothing to rebalance).
fn validate_resiliency(r: &Value, zone_balance: Option<bool>) -> Result<(), ArmError> {
    const AT: &str = "properties.resiliencyPolicy";
    let Some(policies) = r.as_object() else {
        return Err(ArmError::invalid_parameter(
            AT,
            "resiliencyPolicy must be an object.",
        ));
    };
    for (name, policy) in policies {
        let target = format!("{AT}.{name}");
        if !policy.is_object() && !policy.is_null() {
            return Err(ArmError::invalid_parameter(
                target,
                format!("{name} must be an object such as {{\"enabled\": true}}."),
            ));
        }
        if let Some(e) = policy
            .get("enabled")
            .filter(|e| !e.is_null() && !e.is_boolean())
        {
            return Err(ArmError::invalid_parameter(
                format!("{target}.enabled"),
                format!("{name}.enabled must be true or false, not {e}."),
            ));
        }
    }
    let z = &r["automaticZoneRebalancingPolicy"];
    for (field, only) in [
        ("rebalanceStrategy", "Recreate"),
        ("rebalanceBehavior", "CreateBeforeDelete"),
    ] {
        if let Some(v) = z.get(field).filter(|v| !v.is_null()) {
            if v.as_str().is_none_or(|s| !s.eq_ignore_ascii_case(only)) {
                return Err(ArmError::invalid_parameter(
                    format!("{AT}.automaticZoneRebalancingPolicy.{field}"),
                    format!("{field} {v} is not supported: the only value is {only}."),
                ));
            }
        }
    }
    if z["enabled"] == Value::Bool(true) && zone_balance == Some(true) {
        return Err(ArmError::invalid_parameter(
            format!("{AT}.automaticZoneRebalancingPolicy.enabled"),
            "Automatic zone rebalancing works only with zoneBalance false (strict zone \
             balance never lets the zones drift apart).",
        ));
    }
    Ok(())
}

/// Checks a normalized model (and, for an update, what may not change).
pub fn validate(
    v: &VirtualMachineScaleSet,
    previous: Option<&VirtualMachineScaleSet>,
) -> Result<(), ArmError> {
    if v.location.as_deref().is_none_or(|l| l.trim().is_empty()) {
        return Err(ArmError::invalid_parameter(
            "location",
            "A location is required (e.g. \"local\").",
        ));
    }
    let sku = v.sku.as_ref();
    let Some(sku_name) = sku.and_then(|s| s.name.as_deref()) else {
        return Err(ArmError::invalid_parameter(
            "sku.name",
            format!("A size is required in sku.name, e.g. {}.", sku::examples()),
        ));
    };
    if sku_name.eq_ignore_ascii_case(MIX) {
        let sizes = v.mix_sizes();
        if sizes.is_empty() {
            return Err(ArmError::invalid_parameter(
                "properties.skuProfile.vmSizes",
                "An instance mix (sku.name 'Mix') lists its sizes in properties.skuProfile.vmSizes.",
            ));
        }
        if let Some((bad, _)) = sizes.iter().find(|(n, _)| sku::lookup(n).is_none()) {
            return Err(ArmError::invalid_parameter(
                "properties.skuProfile.vmSizes",
                format!("The size '{bad}' is not known; `shoal vmss list-skus` lists them."),
            ));
        }
    } else if sku::lookup(sku_name).is_none() {
        return Err(ArmError::invalid_parameter(
            "sku.name",
            format!(
                "The size '{sku_name}' is not known. Use Shoal_<N>vCPU_<M>MB or an Azure size such as {}; `shoal vmss list-skus` lists them.",
                sku::examples()
            ),
        ));
    }
    let capacity = v.capacity();
    if !(0..=MAX_CAPACITY).contains(&capacity) {
        return Err(ArmError::invalid_parameter(
            "sku.capacity",
            format!("Capacity {capacity} is out of range: use 0 to {MAX_CAPACITY}."),
        ));
    }
    if v.image_id().is_none_or(|id| id.trim().is_empty()) {
        return Err(ArmError::invalid_parameter(
            "properties.virtualMachineProfile.storageProfile.imageReference.id",
            "An image is required: the id of a gallery image version (or of an image definition, meaning its latest version), or a published platform image's publisher, offer, sku (and version).",
        ));
    }
    if let Some(zones) = &v.zones {
        for z in zones {
            if !["1", "2", "3"].contains(&z.as_str()) {
                return Err(ArmError::invalid_parameter(
                    "zones",
                    format!("Zone '{z}' is invalid: use \"1\", \"2\" or \"3\"."),
                ));
            }
        }
    }
    if let Some(id) = &v.identity {
        validate_identity(id)?;
    }
    let p = v.props();
    if let Some(fd) = p.platform_fault_domain_count {
        if !(1..=5).contains(&fd) {
            return Err(ArmError::invalid_parameter(
                "properties.platformFaultDomainCount",
                format!("platformFaultDomainCount {fd} is out of range: use 1 to 5."),
            ));
        }
    }
    if let Some(r) = &p.resiliency_policy {
        validate_resiliency(r, p.zone_balance)?;
    }
    if let Some(rules) = p.scale_in_policy.as_ref().and_then(|s| s.rules.as_ref()) {
        if rules.len() > 1 {
            return Err(ArmError::invalid_parameter(
                "properties.scaleInPolicy.rules",
                "Give one scale-in rule: Default, NewestVM or OldestVM.",
            ));
        }
    }
    if let Some(r) = &p.automatic_repairs_policy {
        if let Some(g) = &r.grace_period {
            match duration::parse_iso8601(g) {
                Some(secs) if (1..=90 * 60).contains(&secs) => {}
                _ => {
                    return Err(ArmError::invalid_parameter(
                        "properties.automaticRepairsPolicy.gracePeriod",
                        format!("gracePeriod '{g}' is invalid: use an ISO 8601 duration from PT1S to PT90M."),
                    ))
                }
            }
        }
    }
    if let Some(p) = v
        .profile()
        .and_then(|p| p.scheduled_events_profile.as_ref())
    {
        terminate_notice(p)?;
    }
    if let Some(cd) = v.custom_data() {
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(cd) {
            Ok(bytes) if bytes.len() <= 65_535 => {}
            Ok(_) => {
                return Err(ArmError::invalid_parameter(
                    "properties.virtualMachineProfile.osProfile.customData",
                    "customData is larger than 64 KiB once decoded.",
                ))
            }
            Err(_) => {
                return Err(ArmError::invalid_parameter(
                    "properties.virtualMachineProfile.osProfile.customData",
                    "customData must be base64-encoded.",
                ))
            }
        }
    }
    crate::upgrade_policy::validate(v)?;
    if let Some(prev) = previous {
        let immutable = |target: &str, what: &str| {
            Err(ArmError::new(
                409,
                "PropertyChangeNotAllowed",
                format!(
                    "Changing property '{what}' is not allowed after the scale set is created."
                ),
            )
            .with_target(target.to_string()))
        };
        if prev.orchestration_mode() != v.orchestration_mode() {
            return immutable("properties.orchestrationMode", "orchestrationMode");
        }
        let now: Vec<&String> = v.zones.iter().flatten().collect();
        if let Some(gone) = prev.zones.iter().flatten().find(|z| !now.contains(z)) {
            return Err(ArmError::new(
                409,
                "OperationNotAllowed",
                format!(
                    "Zone '{gone}' cannot be removed from the scale set: zones can only be added \
                     (as in Azure). Make a new set to leave a zone."
                ),
            )
            .with_target("zones"));
        }
        if prev.props().platform_fault_domain_count != p.platform_fault_domain_count {
            return immutable(
                "properties.platformFaultDomainCount",
                "platformFaultDomainCount",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 3},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/x"}}}}
        })
    }

    #[test]
    fn minimal_create_gets_azure_defaults() {
        let mut v: VirtualMachineScaleSet = parse_typed(&minimal()).unwrap();
        normalize(&mut v);
        validate(&v, None).unwrap();
        assert_eq!(v.upgrade_mode(), UpgradeMode::Manual);
        assert_eq!(v.orchestration_mode(), OrchestrationMode::Uniform);
        assert_eq!(v.scale_in_rule(), ScaleInRule::Default);
        assert_eq!(v.capacity(), 3);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let mut body = minimal();
        body["sku"]["capacity"] = json!("three");
        let err = parse_typed::<VirtualMachineScaleSet>(&body).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.target.as_deref(), Some("sku.capacity"));
        let mut body = minimal();
        body["properties"]["upgradePolicy"] = json!({"mode": "Sometimes"});
        let err = parse_typed::<VirtualMachineScaleSet>(&body).unwrap_err();
        assert_eq!(err.target.as_deref(), Some("properties.upgradePolicy.mode"));
    }

    #[test]
    fn enums_are_case_insensitive_and_unknown_fields_ignored() {
        let mut body = minimal();
        body["properties"]["upgradePolicy"] = json!({"mode": "automatic"});
        body["properties"]["somethingNew"] = json!({"a": 1});
        let v: VirtualMachineScaleSet = parse_typed(&body).unwrap();
        assert_eq!(v.upgrade_mode(), UpgradeMode::Automatic);
    }

    #[test]
    fn zones_are_checked_and_only_added() {
        let with = |zones: Value| {
            let mut body = minimal();
            body["zones"] = zones;
            let mut v: VirtualMachineScaleSet = parse_typed(&body).unwrap();
            normalize(&mut v);
            v
        };
        let err = validate(&with(json!(["4"])), None).unwrap_err();
        assert_eq!((err.status, err.target.as_deref()), (400, Some("zones")));
        let before = with(json!(["1", "2"]));
        validate(&with(json!(["1", "2", "3"])), Some(&before)).unwrap();
        let err = validate(&with(json!(["1"])), Some(&before)).unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (409, "OperationNotAllowed")
        );
        assert_eq!(err.target.as_deref(), Some("zones"));
    }

    #[test]
    fn an_instance_mix_runs_its_first_size() {
        let with = |profile: Value| {
            let mut body = minimal();
            body["sku"]["name"] = json!("Mix");
            body["properties"]["skuProfile"] = profile;
            let mut v: VirtualMachineScaleSet = parse_typed(&body).unwrap();
            normalize(&mut v);
            validate(&v, None).map(|()| v.sku_name().to_string())
        };
        let sizes =
            json!([{"name": "Standard_D8s_v5", "rank": 2}, {"name": "Standard_D2s_v5", "rank": 0}]);
        assert_eq!(
            with(json!({"vmSizes": sizes, "allocationStrategy": "Prioritized"})).unwrap(),
            "Standard_D2s_v5",
            "Prioritized: the lowest rank"
        );
        assert_eq!(
            with(json!({"vmSizes": sizes, "allocationStrategy": "CapacityOptimized"})).unwrap(),
            "Standard_D8s_v5",
            "otherwise the first listed"
        );
        for bad in [json!({}), json!({"vmSizes": [{"name": "Huge_1"}]})] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.target.as_deref(), Some("properties.skuProfile.vmSizes"));
        }
    }

    #[test]
    fn resiliency_policy_is_checked_and_zone_rebalancing_read() {
        let with = |policy: Value, zones: Value, zone_balance: Value| {
            let mut body = minimal();
            body["zones"] = zones;
            body["properties"]["zoneBalance"] = zone_balance;
            body["properties"]["resiliencyPolicy"] = policy;
            let mut v: VirtualMachineScaleSet = parse_typed(&body).unwrap();
            normalize(&mut v);
            validate(&v, None).map(|()| v.zone_rebalancing())
        };
        let on = json!({"automaticZoneRebalancingPolicy": {"enabled": true,
            "rebalanceStrategy": "Recreate", "rebalanceBehavior": "CreateBeforeDelete"},
            "resilientVMCreationPolicy": {"enabled": false}});
        assert_eq!(with(on.clone(), json!(["1", "2"]), Value::Null), Ok(true));
        assert_eq!(
            with(
                json!({"resilientVMDeletionPolicy": {"enabled": true}}),
                Value::Null,
                Value::Null
            ),
            Ok(false)
        );
        // One zone (or none): accepted, as Azure's own example does; nothing to rebalance.
        assert!(with(on.clone(), json!(["1"]), Value::Null).is_ok());
        for (policy, zones, zone_balance, target) in [
            (
                on.clone(),
                json!(["1", "2"]),
                json!(true),
                "automaticZoneRebalancingPolicy.enabled",
            ),
            (
                json!({"automaticZoneRebalancingPolicy": {"rebalanceStrategy": "Shuffle"}}),
                Value::Null,
                Value::Null,
                "automaticZoneRebalancingPolicy.rebalanceStrategy",
            ),
            (
                json!({"automaticZoneRebalancingPolicy": {"enabled": "yes"}}),
                Value::Null,
                Value::Null,
                "automaticZoneRebalancingPolicy.enabled",
            ),
            (json!(["x"]), Value::Null, Value::Null, ""),
        ] {
            let err = with(policy, zones, zone_balance).unwrap_err();
            assert_eq!(err.status, 400);
            let want = format!("properties.resiliencyPolicy.{target}");
            assert_eq!(
                err.target.as_deref(),
                Some(want.trim_end_matches('.')),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn required_fields_and_ranges() {
        for (path, value, target) in [
            ("/location", Value::Null, "location"),
            ("/sku/name", json!("Huge_1"), "sku.name"),
            ("/sku/capacity", json!(1001), "sku.capacity"),
            ("/sku/capacity", json!(-1), "sku.capacity"),
        ] {
            let mut body = minimal();
            *body.pointer_mut(path).unwrap() = value;
            let mut v: VirtualMachineScaleSet = parse_typed(&body).unwrap();
            normalize(&mut v);
            let err = validate(&v, None).unwrap_err();
            assert_eq!(err.target.as_deref(), Some(target), "{path}");
        }
    }

    #[test]
    fn orchestration_mode_cannot_change() {
        let mut a: VirtualMachineScaleSet = parse_typed(&minimal()).unwrap();
        normalize(&mut a);
        let mut b = a.clone();
        b.properties.as_mut().unwrap().orchestration_mode = Some(OrchestrationMode::Flexible);
        assert_eq!(
            validate(&b, Some(&a)).unwrap_err().code,
            "PropertyChangeNotAllowed"
        );
    }

    #[test]
    fn merge_keeps_omitted_values() {
        let mut base = minimal();
        merge_json(
            &mut base,
            &json!({"sku": {"capacity": 10}, "tags": {"a": "b"}}),
        );
        assert_eq!(base["sku"]["name"], "Shoal_1vCPU_512MB");
        assert_eq!(base["sku"]["capacity"], 10);
        assert_eq!(base["tags"]["a"], "b");
    }

    #[test]
    fn patch_replaces_tags_whole_and_merges_the_rest() {
        let mut base = minimal();
        base["tags"] = json!({"a": "1", "b": "2"});
        patch_json(
            &mut base,
            &json!({"tags": {"c": "3"}, "sku": {"capacity": 4}}),
        );
        assert_eq!(base["tags"], json!({"c": "3"}));
        assert_eq!(base["sku"]["name"], "Shoal_1vCPU_512MB");
        assert_eq!(base["sku"]["capacity"], 4);
    }

    #[test]
    fn put_keeps_only_what_it_may_omit() {
        let mut prev: VirtualMachineScaleSet = parse_typed(&minimal()).unwrap();
        let p = prev.properties.as_mut().unwrap();
        p.orchestration_mode = Some(OrchestrationMode::Flexible);
        p.platform_fault_domain_count = Some(3);
        p.unique_id = Some("u".into());
        p.automatic_repairs_policy = Some(AutomaticRepairsPolicy::default());
        let profile = p.virtual_machine_profile.as_mut().unwrap();
        profile.extension_profile = Some(json!({"extensions": []}));
        profile.os_profile = Some(OsProfile {
            custom_data: Some("aGk=".into()),
            admin_username: Some("azureuser".into()),
            ..Default::default()
        });
        let mut body = minimal();
        body["sku"]["capacity"] = Value::Null;
        let mut m: VirtualMachineScaleSet = parse_typed(&body).unwrap();
        keep_on_put(&mut m, &prev);
        assert_eq!(m.capacity(), 3);
        assert_eq!(m.orchestration_mode(), OrchestrationMode::Flexible);
        assert_eq!(m.props().platform_fault_domain_count, Some(3));
        assert_eq!(m.props().unique_id.as_deref(), Some("u"));
        assert!(m.props().automatic_repairs_policy.is_none());
        let os = m.profile().unwrap().os_profile.as_ref().unwrap();
        assert_eq!(os.custom_data.as_deref(), Some("aGk="));
        assert!(os.admin_username.is_none(), "not write-only: removed");
        assert!(m.profile().unwrap().extension_profile.is_none());
    }

    #[test]
    fn a_put_with_no_properties_changes_only_the_sku_as_az_vmss_scale_sends_it() {
        let mut prev: VirtualMachineScaleSet = parse_typed(&minimal()).unwrap();
        prev.tags = Some([("team".to_string(), "api".to_string())].into());
        let mut m: VirtualMachineScaleSet = parse_typed(&json!({
            "location": "local", "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 5}
        }))
        .unwrap();
        keep_on_put(&mut m, &prev);
        assert_eq!(m.capacity(), 5);
        assert_eq!(m.image_id(), prev.image_id());
        assert!(m.image_id().is_some());
        assert_eq!(m.tags, prev.tags);
    }

    #[test]
    fn a_body_is_parsed_once_with_arms_errors() {
        let m: VirtualMachineScaleSet = parse_body(minimal().to_string().as_bytes()).unwrap();
        assert_eq!(m.capacity(), 3);
        for (body, code, target) in [
            ("", "InvalidRequestContent", None),
            ("  [1]", "InvalidRequestContent", None),
            ("{\"sku\": ", "InvalidRequestContent", None),
            ("{} x", "InvalidRequestContent", None),
            (
                "{\"sku\": {\"capacity\": \"three\"}}",
                "InvalidParameter",
                Some("sku.capacity"),
            ),
        ] {
            let err = parse_body::<VirtualMachineScaleSet>(body.as_bytes()).unwrap_err();
            assert_eq!(
                (err.code.as_str(), err.target.as_deref()),
                (code, target),
                "{body}"
            );
            assert!(!err.message.contains(" at line ") || code != "InvalidParameter");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(s in "\\{\\PC{0,200}") {
            if let Ok(mut m) = parse_body::<VirtualMachineScaleSet>(s.as_bytes()) {
                normalize(&mut m);
                let _ = validate(&m, None);
            }
        }

        #[test]
        fn arbitrary_json_never_panics(s in "\\PC{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                if let Ok(mut m) = parse_typed::<VirtualMachineScaleSet>(&v) {
                    normalize(&mut m);
                    let _ = validate(&m, None);
                }
            }
        }
    }
}
