//! `vmss create`: its arguments, the option values it takes (upgrade policy, scale-in
//! policy, orchestration mode, custom data), the body it PUTs ([`create_body`], pure), and
//! [`resolve`], which reads what the body needs from the server first.

use base64::Engine;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::VmssName;
use crate::client::Client;
use crate::group::{parse_tag, tags_object};
use crate::image::group_location;
use crate::image_ref::ImageRef;

/// `--upgrade-policy-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpgradePolicyMode {
    /// Instances move to a new model only with `vmss update-instances`.
    #[value(name = "Manual")]
    Manual,
    /// All instances move to a new model at once.
    #[value(name = "Automatic")]
    Automatic,
    /// Instances move to a new model in batches.
    #[value(name = "Rolling")]
    Rolling,
}

impl UpgradePolicyMode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            UpgradePolicyMode::Manual => "Manual",
            UpgradePolicyMode::Automatic => "Automatic",
            UpgradePolicyMode::Rolling => "Rolling",
        }
    }
}

/// `--scale-in-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScaleInPolicy {
    /// Remove the highest instance ids first, keeping zones balanced.
    #[value(name = "Default")]
    Default,
    /// Remove the most recently created instances first.
    #[value(name = "NewestVM")]
    NewestVm,
    /// Remove the oldest instances first.
    #[value(name = "OldestVM")]
    OldestVm,
}

impl ScaleInPolicy {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ScaleInPolicy::Default => "Default",
            ScaleInPolicy::NewestVm => "NewestVM",
            ScaleInPolicy::OldestVm => "OldestVM",
        }
    }
}

/// `--orchestration-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrchestrationMode {
    /// Identical instances managed as a set.
    #[value(name = "Uniform")]
    Uniform,
    /// Instances managed as individual machines.
    #[value(name = "Flexible")]
    Flexible,
}

impl OrchestrationMode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            OrchestrationMode::Uniform => "Uniform",
            OrchestrationMode::Flexible => "Flexible",
        }
    }
}

/// `--custom-data`: the content of a file, or the text itself when no such file exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomData(pub Vec<u8>);

impl CustomData {
    /// Base64, as `osProfile.customData` carries it.
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }
}

/// Reads `--custom-data` as `az` does: a path to an existing file, else literal text.
pub fn parse_custom_data(text: &str) -> Result<CustomData, String> {
    let path = std::path::Path::new(text);
    if path.is_file() {
        std::fs::read(path)
            .map(CustomData)
            .map_err(|e| format!("cannot read {text}: {e}"))
    } else {
        Ok(CustomData(text.as_bytes().to_vec()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct VmssCreate {
    #[command(flatten)]
    pub set: VmssName,
    /// Image: GALLERY/IMAGE[:VERSION] in the same resource group (no version or :latest
    /// means the newest version), or a full gallery image resource id.
    #[arg(long, value_name = "IMAGE")]
    pub image: ImageRef,
    /// Number of instances.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub instance_count: u32,
    /// Size of each instance: Shoal_{N}vCPU_{M}MB or an Azure name such as Standard_B1s
    /// (`vmss list-skus` lists them).
    #[arg(long, default_value = "Shoal_1vCPU_512MB", value_name = "SKU")]
    pub vm_sku: String,
    /// Location (default: the resource group's location).
    #[arg(long, short = 'l', value_name = "LOCATION")]
    pub location: Option<String>,
    /// How instances move to a new model.
    #[arg(long, value_enum, ignore_case = true, default_value_t = UpgradePolicyMode::Manual, value_name = "MODE")]
    pub upgrade_policy_mode: UpgradePolicyMode,
    /// Custom data for every instance: a file path, or the text itself. Instances read it
    /// from the file named by SHOAL_CUSTOM_DATA.
    #[arg(long, value_parser = parse_custom_data, value_name = "FILE_OR_TEXT")]
    pub custom_data: Option<CustomData>,
    /// Give the set managed identities, as `az`: `[system]` (alone, or with no value) for a
    /// system-assigned one, and user-assigned ones by name (in the set's group) or id. Its
    /// instances get tokens from IDENTITY_ENDPOINT (a user-assigned one with
    /// `client_id=`); grant roles with role assignments naming each `principalId`.
    #[arg(
        long,
        num_args = 0..,
        default_missing_value = "[system]",
        value_name = "[system] | IDENTITY"
    )]
    pub assign_identity: Option<Vec<String>>,
    /// Availability zones to spread instances over, space-separated (e.g. 1 2 3).
    #[arg(long, num_args = 1.., value_name = "ZONE")]
    pub zones: Option<Vec<String>>,
    /// Which instances go first when the set scales in.
    #[arg(long, value_enum, ignore_case = true, value_name = "POLICY")]
    pub scale_in_policy: Option<ScaleInPolicy>,
    /// Orchestration mode; cannot change after create.
    #[arg(long, value_enum, ignore_case = true, default_value_t = OrchestrationMode::Uniform, value_name = "MODE")]
    pub orchestration_mode: OrchestrationMode,
    /// Number of fault domains per zone; cannot change after create.
    #[arg(long, value_name = "N")]
    pub platform_fault_domain_count: Option<u32>,
    /// Space-separated tags: `key=value`, or `key` for an empty value.
    #[arg(long, num_args = 1.., value_name = "KEY[=VALUE]", value_parser = parse_tag)]
    pub tags: Option<Vec<(String, String)>>,
    /// Put the instances behind this load balancer; it is created when missing (a
    /// frontend on 127.0.0.1, a backend pool, a TCP probe on the image's port and a
    /// rule from --lb-frontend-port to it).
    #[arg(long, value_name = "NAME")]
    pub lb: Option<String>,
    /// The backend pool of --lb to join [default: the only one, or <lb>bepool].
    #[arg(long, value_name = "NAME", requires = "lb")]
    pub backend_pool_name: Option<String>,
    /// Frontend port of the rule a new --lb gets.
    #[arg(long, default_value_t = 80, value_name = "PORT", requires = "lb")]
    pub lb_frontend_port: u16,
    /// Put the instances behind this application gateway; it is created when missing
    /// (an HTTP listener on 127.0.0.1:--app-gateway-frontend-port, a probe of `/`, and
    /// backend settings on the image's port).
    #[arg(long, value_name = "NAME")]
    pub app_gateway: Option<String>,
    /// Frontend port of the listener a new --app-gateway gets.
    #[arg(
        long,
        default_value_t = 80,
        value_name = "PORT",
        requires = "app_gateway"
    )]
    pub app_gateway_frontend_port: u16,
    /// Do not wait for the instances; print the accepted scale set at once.
    #[arg(long)]
    pub no_wait: bool,
    /// Filled in by `run` once --lb is resolved.
    #[arg(skip)]
    pub lb_wiring: Option<crate::network::LbWiring>,
    /// Filled in by `run` once --app-gateway is resolved: the backend pool to join.
    #[arg(skip)]
    pub app_gateway_pool: Option<String>,
}

/// The JSON body of `vmss create`.
pub fn create_body(sub: &str, args: &VmssCreate, location: &str) -> Value {
    let rg = &args.set.resource_group;
    let mut os_profile = json!({ "computerNamePrefix": args.set.name });
    if let Some(data) = &args.custom_data {
        os_profile["customData"] = Value::String(data.base64());
    }
    let mut properties = json!({
        "orchestrationMode": args.orchestration_mode.as_str(),
        "upgradePolicy": { "mode": args.upgrade_policy_mode.as_str() },
        "virtualMachineProfile": {
            "osProfile": os_profile,
            "storageProfile": {
                "imageReference": { "id": args.image.resource_id(sub, rg) },
            },
        },
    });
    if let Some(policy) = args.scale_in_policy {
        properties["scaleInPolicy"] = json!({ "rules": [policy.as_str()] });
    }
    if let Some(count) = args.platform_fault_domain_count {
        properties["platformFaultDomainCount"] = json!(count);
    }
    if let Some(wiring) = &args.lb_wiring {
        properties["virtualMachineProfile"]["networkProfile"] =
            crate::network::network_profile(&args.set.name, wiring);
    }
    if let Some(pool) = &args.app_gateway_pool {
        crate::appgw::join_pool(&mut properties, &args.set.name, pool);
    }
    let mut body = json!({
        "location": location,
        "sku": { "name": args.vm_sku, "capacity": args.instance_count },
        "properties": properties,
    });
    if let Some(zones) = &args.zones {
        body["zones"] = json!(zones);
    }
    if let Some(given) = &args.assign_identity {
        body["identity"] = identity_body(sub, &args.set.resource_group, given);
    }
    if let Some(tags) = &args.tags {
        body["tags"] = tags_object(tags);
    }
    body
}

/// Fills in what `vmss create` reads from the server before its request: the resource
/// group's location when `--location` is absent, and the `--lb` / `--app-gateway` wiring
/// (created when missing, on the image's port).
pub(super) async fn resolve(client: &Client, args: &mut VmssCreate) -> anyhow::Result<()> {
    if args.location.is_none() {
        args.location = Some(group_location(client, &args.set.resource_group).await?);
    }
    if let Some(lb) = args.lb.clone() {
        let port = image_port(client, &args.image, &args.set.resource_group).await?;
        let location = args.location.clone().unwrap_or_default();
        let wiring = crate::network::ensure_for_vmss(
            client,
            &args.set.resource_group,
            &lb,
            args.backend_pool_name.as_deref(),
            args.lb_frontend_port,
            port,
            &location,
        )
        .await?;
        args.lb_wiring = Some(wiring);
    }
    if let Some(gw) = args.app_gateway.clone() {
        let port = image_port(client, &args.image, &args.set.resource_group).await?;
        let location = args.location.clone().unwrap_or_default();
        args.app_gateway_pool = Some(
            crate::appgw::ensure_for_vmss(
                client,
                &args.set.resource_group,
                &gw,
                args.app_gateway_frontend_port,
                port,
                &location,
            )
            .await?,
        );
    }
    Ok(())
}

/// The port an image's instances listen on (`properties.shoal.port` of the version the
/// reference resolves to).
async fn image_port(client: &Client, image: &ImageRef, rg: &str) -> anyhow::Result<u16> {
    let id = image.resource_id(client.subscription(), rg);
    let path = match id.to_ascii_lowercase().contains("/versions/") {
        true => id.clone(),
        false => format!("{id}/versions"),
    };
    let reply = client.call(reqwest::Method::GET, &path, None).await?;
    let body = reply.body.unwrap_or(Value::Null);
    let version = match body.get("value").and_then(Value::as_array) {
        Some(list) => list.last().cloned().unwrap_or(Value::Null),
        None => body,
    };
    Ok(version["properties"]["shoal"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(8080))
}

/// `identity` for `--assign-identity`: `[system]` (or nothing) is the system-assigned
/// identity, anything else a user-assigned one by id, or by name in `rg`.
fn identity_body(sub: &str, rg: &str, given: &[String]) -> Value {
    let system = given.is_empty() || given.iter().any(|g| g.eq_ignore_ascii_case("[system]"));
    let users: serde_json::Map<String, Value> = given
        .iter()
        .filter(|g| !g.eq_ignore_ascii_case("[system]"))
        .map(|g| {
            let id = if g.starts_with('/') {
                g.clone()
            } else {
                format!(
                    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{g}"
                )
            };
            (id, json!({}))
        })
        .collect();
    match (system, users.is_empty()) {
        (_, true) => json!({"type": "SystemAssigned"}),
        (true, false) => {
            json!({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": users})
        }
        (false, false) => json!({"type": "UserAssigned", "userAssignedIdentities": users}),
    }
}
