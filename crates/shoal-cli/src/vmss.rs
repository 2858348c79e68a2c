//! `shoal vmss …`: virtual machine scale sets and their instances, as `az vmss`.
//!
//! Each command becomes one [`ApiRequest`] through [`request_for`] (pure); `vmss create`
//! first reads the resource group's location when `--location` is not given.

use base64::Engine;
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::Client;
use crate::exec::execute;
use crate::group::{parse_tag, tags_object};
use crate::image::group_location;
use crate::image_ref::ImageRef;
use crate::output::{Printer, Table};
use crate::request::{compute_path, instance_path, subscription_path, vmss_path, ApiRequest, Kind};

#[derive(Debug, Clone, Subcommand)]
pub enum VmssCommand {
    /// Create a scale set from a gallery image and wait until its instances run.
    #[command(
        after_help = "Example:\n  shoal vmss create -g demo -n web --image apps/web:1.0.0 \\\n      --instance-count 3 --vm-sku Shoal_1vCPU_512MB"
    )]
    Create(VmssCreate),
    /// List the scale sets of a resource group (or of the whole subscription).
    List(VmssList),
    /// Show a scale set (or, with --instance-id, one of its instances).
    Show(VmssShow),
    /// Delete a scale set and all its instances.
    Delete(VmssDelete),
    /// Change the number of instances.
    #[command(after_help = "Example:\n  shoal vmss scale -g demo -n web --new-capacity 10")]
    Scale(VmssScale),
    /// Update a scale set's model (image, size, custom data, upgrade policy, any property
    /// with --set), or one instance's protection policy with --instance-id.
    #[command(
        after_help = "Examples:\n  shoal vmss update -g demo -n web --image apps/web:1.1.0\n  \
                            shoal vmss update -g demo -n web --set properties.upgradePolicy.mode=Automatic\n  \
                            shoal vmss update -g demo -n web --instance-id 3 --protect-from-scale-in true"
    )]
    Update(VmssUpdate),
    /// Start instances that are stopped or deallocated.
    Start(VmssAction),
    /// Power off instances (SIGTERM, then SIGKILL after a grace period); they keep their
    /// address and disk.
    Stop(VmssAction),
    /// Restart instances (stop, then start).
    Restart(VmssAction),
    /// Stop instances and release their address and port; their disk is kept.
    Deallocate(VmssAction),
    /// Start instances again from a fresh copy of their image.
    Reimage(VmssAction),
    /// Bring instances up to the scale set's latest model (Manual upgrade policy).
    UpdateInstances(VmssInstances),
    /// Delete some instances; the capacity shrinks by as many.
    DeleteInstances(VmssInstances),
    /// List the instances of a scale set with their state and address.
    #[command(after_help = "Example:\n  shoal vmss list-instances -g demo -n web --output table")]
    ListInstances(VmssName),
    /// Show the instance view of a scale set (or, with --instance-id, of one instance).
    GetInstanceView(VmssShow),
    /// List the sizes (SKUs) a scale set can use.
    ListSkus(VmssName),
    /// Print an instance's output (stdout and stderr of its process).
    #[command(
        after_help = "Example:\n  shoal vmss logs -g demo -n web --instance-id 0 --follow --tail 20"
    )]
    Logs(VmssLogs),
    /// A scale set's metrics as a table with a sparkline (-o table) or Azure Monitor's JSON.
    #[command(
        after_help = "Example:\n  shoal vmss metrics -g demo -n web --metric \"Percentage CPU\" --interval 10s --offset 5m -o table"
    )]
    Metrics(crate::monitor::MetricsArgs),
}

/// `--resource-group` and `--name` of a scale set.
#[derive(Debug, Clone, Args)]
pub struct VmssName {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the scale set.
    #[arg(long = "name", short = 'n', value_name = "NAME")]
    pub name: String,
}

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
    fn as_str(self) -> &'static str {
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
    fn as_str(self) -> &'static str {
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
    fn as_str(self) -> &'static str {
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

#[derive(Debug, Clone, Args)]
pub struct VmssList {
    /// Name of the resource group (default: every group in the subscription).
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct VmssShow {
    #[command(flatten)]
    pub set: VmssName,
    /// One instance instead of the whole set.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct VmssDelete {
    #[command(flatten)]
    pub set: VmssName,
    /// Do not wait for the instances to be gone.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VmssScale {
    #[command(flatten)]
    pub set: VmssName,
    /// Number of instances to have.
    #[arg(long, value_name = "N")]
    pub new_capacity: u32,
    /// Do not wait for the instances to be created or removed.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VmssUpdate {
    #[command(flatten)]
    pub set: VmssName,
    /// Set a property by its JSON path, e.g. properties.upgradePolicy.mode=Automatic or
    /// sku.capacity=5. VALUE is read as JSON when it parses (numbers, true, lists), else as
    /// a string. Repeatable; sent as one PATCH.
    #[arg(long = "set", num_args = 1.., value_name = "PATH=VALUE", value_parser = parse_set)]
    pub sets: Vec<(Vec<String>, Value)>,
    /// New image: GALLERY/IMAGE[:VERSION] or a full gallery image resource id.
    #[arg(long, value_name = "IMAGE", conflicts_with = "instance_id")]
    pub image: Option<ImageRef>,
    /// New size of the instances.
    #[arg(long, value_name = "SKU", conflicts_with = "instance_id")]
    pub vm_sku: Option<String>,
    /// New custom data: a file path, or the text itself.
    #[arg(long, value_parser = parse_custom_data, value_name = "FILE_OR_TEXT", conflicts_with = "instance_id")]
    pub custom_data: Option<CustomData>,
    /// New upgrade policy mode.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_name = "MODE",
        conflicts_with = "instance_id"
    )]
    pub upgrade_policy_mode: Option<UpgradePolicyMode>,
    /// Update this instance (its protection policy) instead of the scale set.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Keep the instance when the set scales in (needs --instance-id).
    #[arg(long, value_name = "true|false", action = ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), requires = "instance_id")]
    pub protect_from_scale_in: Option<bool>,
    /// Keep set-wide actions (stop, restart, reimage, upgrades) off the instance (needs
    /// --instance-id).
    #[arg(long, value_name = "true|false", action = ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), requires = "instance_id")]
    pub protect_from_scale_set_actions: Option<bool>,
    /// Do not wait for the change to reach the instances.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VmssAction {
    #[command(flatten)]
    pub set: VmssName,
    /// Instances to act on, space-separated (default: all instances).
    #[arg(long, num_args = 1.., value_name = "ID")]
    pub instance_ids: Vec<String>,
    /// Do not wait for the action to finish.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VmssInstances {
    #[command(flatten)]
    pub set: VmssName,
    /// Instances, space-separated; '*' means all.
    #[arg(long, num_args = 1.., required = true, value_name = "ID")]
    pub instance_ids: Vec<String>,
    /// Do not wait for the operation to finish.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct VmssLogs {
    #[command(flatten)]
    pub set: VmssName,
    /// Instance whose output to print.
    #[arg(long, value_name = "ID")]
    pub instance_id: String,
    /// Keep printing new output as it is written (until Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start with only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
}

/// Why a command's arguments cannot make a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmssArgsError {
    #[error(
        "Nothing to update: pass --set, --image, --vm-sku, --custom-data or --upgrade-policy-mode"
    )]
    NothingToUpdate,
    #[error("Nothing to update on instance {0}: pass --protect-from-scale-in, --protect-from-scale-set-actions or --set")]
    NothingToUpdateOnInstance(String),
    #[error("--set {path} conflicts with another change to {path}")]
    SetConflict { path: String },
    #[error("vmss create needs a location: pass --location")]
    NoLocation,
}

/// Parses one `--set PATH=VALUE`.
pub fn parse_set(text: &str) -> Result<(Vec<String>, Value), String> {
    let Some((path, value)) = text.split_once('=') else {
        return Err(format!("'{text}' is not PATH=VALUE"));
    };
    if path.contains('[') {
        return Err(format!(
            "'{path}': --set cannot index into lists; set the whole list as JSON, e.g. zones='[\"1\",\"2\"]'"
        ));
    }
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        return Err(format!(
            "'{path}' is not a property path like properties.upgradePolicy.mode"
        ));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((parts, value))
}

/// Puts `value` at `path` inside `target`, creating objects on the way.
fn set_path(target: &mut Value, path: &[String], value: Value) -> Result<(), VmssArgsError> {
    let conflict = || VmssArgsError::SetConflict {
        path: path.join("."),
    };
    let Some((last, parents)) = path.split_last() else {
        return Err(conflict());
    };
    let mut node = target;
    for key in parents {
        let map = node.as_object_mut().ok_or_else(conflict)?;
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let map = node.as_object_mut().ok_or_else(conflict)?;
    map.insert(last.clone(), value);
    Ok(())
}

fn path_of(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
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
    if let Some(tags) = &args.tags {
        body["tags"] = tags_object(tags);
    }
    body
}

/// The PATCH body of `vmss update` on the set, or the PUT body on one instance.
pub fn update_body(sub: &str, args: &VmssUpdate) -> Result<Value, VmssArgsError> {
    let mut body = json!({});
    let mut changes: Vec<(Vec<String>, Value)> = Vec::new();
    if let Some(id) = &args.instance_id {
        if let Some(protect) = args.protect_from_scale_in {
            changes.push((
                path_of(&["properties", "protectionPolicy", "protectFromScaleIn"]),
                json!(protect),
            ));
        }
        if let Some(protect) = args.protect_from_scale_set_actions {
            changes.push((
                path_of(&[
                    "properties",
                    "protectionPolicy",
                    "protectFromScaleSetActions",
                ]),
                json!(protect),
            ));
        }
        if changes.is_empty() && args.sets.is_empty() {
            return Err(VmssArgsError::NothingToUpdateOnInstance(id.clone()));
        }
    } else {
        if let Some(image) = &args.image {
            changes.push((
                path_of(&[
                    "properties",
                    "virtualMachineProfile",
                    "storageProfile",
                    "imageReference",
                    "id",
                ]),
                json!(image.resource_id(sub, &args.set.resource_group)),
            ));
        }
        if let Some(sku) = &args.vm_sku {
            changes.push((path_of(&["sku", "name"]), json!(sku)));
        }
        if let Some(data) = &args.custom_data {
            changes.push((
                path_of(&[
                    "properties",
                    "virtualMachineProfile",
                    "osProfile",
                    "customData",
                ]),
                json!(data.base64()),
            ));
        }
        if let Some(mode) = args.upgrade_policy_mode {
            changes.push((
                path_of(&["properties", "upgradePolicy", "mode"]),
                json!(mode.as_str()),
            ));
        }
        if changes.is_empty() && args.sets.is_empty() {
            return Err(VmssArgsError::NothingToUpdate);
        }
    }
    changes.extend(args.sets.iter().cloned());
    for (path, value) in changes {
        set_path(&mut body, &path, value)?;
    }
    Ok(body)
}

/// `{"instanceIds": [...]}`, or no body at all (meaning every instance) when `ids` is empty.
pub fn instance_ids_body(ids: &[String]) -> Option<Value> {
    (!ids.is_empty()).then(|| json!({ "instanceIds": ids }))
}

/// The request a scale-set command sends. `vmss create` needs its `--location` filled in
/// (run() reads the resource group's when absent).
pub fn request_for(sub: &str, cmd: &VmssCommand) -> Result<ApiRequest, VmssArgsError> {
    let set = |name: &VmssName| vmss_path(sub, &name.resource_group, &name.name);
    let action = |args: &VmssAction, verb: &str| {
        ApiRequest::action(
            Method::POST,
            format!("{}/{verb}", set(&args.set)),
            instance_ids_body(&args.instance_ids),
            args.no_wait,
        )
    };
    Ok(match cmd {
        VmssCommand::Create(args) => {
            let location = args.location.as_deref().ok_or(VmssArgsError::NoLocation)?;
            ApiRequest::write(
                Method::PUT,
                set(&args.set),
                create_body(sub, args, location),
                args.no_wait,
                Table::ScaleSet,
            )
        }
        VmssCommand::List(args) => {
            let path = match &args.resource_group {
                Some(rg) => format!("{}/virtualMachineScaleSets", compute_path(sub, rg)),
                None => format!(
                    "{}/providers/Microsoft.Compute/virtualMachineScaleSets",
                    subscription_path(sub)
                ),
            };
            ApiRequest::list(path, Table::ScaleSet)
        }
        VmssCommand::Show(args) => match &args.instance_id {
            Some(id) => ApiRequest::get(
                instance_path(sub, &args.set.resource_group, &args.set.name, id),
                Table::Instances,
            ),
            None => ApiRequest::get(set(&args.set), Table::ScaleSet),
        },
        VmssCommand::Delete(args) => {
            ApiRequest::action(Method::DELETE, set(&args.set), None, args.no_wait)
        }
        VmssCommand::Scale(args) => ApiRequest::write(
            Method::PATCH,
            set(&args.set),
            json!({ "sku": { "capacity": args.new_capacity } }),
            args.no_wait,
            Table::ScaleSet,
        ),
        VmssCommand::Update(args) => {
            let body = update_body(sub, args)?;
            match &args.instance_id {
                // Azure updates a scale-set VM with PUT; Shoal's PUT keeps what it omits.
                Some(id) => ApiRequest::write(
                    Method::PUT,
                    instance_path(sub, &args.set.resource_group, &args.set.name, id),
                    body,
                    args.no_wait,
                    Table::Instances,
                ),
                None => ApiRequest::write(
                    Method::PATCH,
                    set(&args.set),
                    body,
                    args.no_wait,
                    Table::ScaleSet,
                ),
            }
        }
        VmssCommand::Start(args) => action(args, "start"),
        VmssCommand::Stop(args) => action(args, "powerOff"),
        VmssCommand::Restart(args) => action(args, "restart"),
        VmssCommand::Deallocate(args) => action(args, "deallocate"),
        VmssCommand::Reimage(args) => action(args, "reimage"),
        VmssCommand::UpdateInstances(args) => ApiRequest::action(
            Method::POST,
            format!("{}/manualupgrade", set(&args.set)),
            Some(json!({ "instanceIds": args.instance_ids })),
            args.no_wait,
        ),
        VmssCommand::DeleteInstances(args) => ApiRequest::action(
            Method::POST,
            format!("{}/delete", set(&args.set)),
            Some(json!({ "instanceIds": args.instance_ids })),
            args.no_wait,
        ),
        VmssCommand::ListInstances(args) => ApiRequest::list(
            format!("{}/virtualMachines?$expand=instanceView", set(args)),
            Table::Instances,
        ),
        VmssCommand::GetInstanceView(args) => {
            let base = match &args.instance_id {
                Some(id) => instance_path(sub, &args.set.resource_group, &args.set.name, id),
                None => set(&args.set),
            };
            ApiRequest::get(format!("{base}/instanceView"), Table::InstanceView)
        }
        VmssCommand::ListSkus(args) => ApiRequest::list(format!("{}/skus", set(args)), Table::Skus),
        // `run` hands this to `crate::monitor` (timespan and table); as one request it
        // is the last hour's query.
        VmssCommand::Metrics(args) => {
            ApiRequest::get(crate::monitor::metrics_path(sub, args), Table::Generic)
        }
        VmssCommand::Logs(args) => {
            let mut query = Vec::new();
            if args.follow {
                query.push("follow=true".to_owned());
            }
            if let Some(tail) = args.tail {
                query.push(format!("tail={tail}"));
            }
            let mut path = format!(
                "{}/shoal/logs",
                instance_path(
                    sub,
                    &args.set.resource_group,
                    &args.set.name,
                    &args.instance_id
                )
            );
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            ApiRequest {
                method: Method::GET,
                path,
                body: None,
                kind: Kind::Stream,
            }
        }
    })
}

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    mut cmd: VmssCommand,
) -> anyhow::Result<()> {
    if let VmssCommand::Metrics(args) = cmd {
        let cmd = crate::monitor::MonitorCommand::Metrics(args);
        return crate::monitor::run(client, printer, cmd).await;
    }
    if let VmssCommand::Create(args) = &mut cmd {
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
    }
    let request = request_for(client.subscription(), &cmd)?;
    execute(client, printer, request).await
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
