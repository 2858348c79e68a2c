//! `shoal vmss …`: virtual machine scale sets and their instances, as `az vmss`.
//!
//! Each command becomes one [`ApiRequest`] through [`request_for`] (pure); `vmss create`
//! first reads the resource group's location when `--location` is not given. The set's
//! own commands are here; `create` and `update` build their bodies in [`create`] and
//! [`update`]; the commands on instances (actions, instance lists, logs) are in
//! [`instances`].

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use crate::client::Client;
use crate::exec::execute;
use crate::output::{Printer, Table};
use crate::request::{compute_path, instance_path, subscription_path, vmss_path, ApiRequest};

pub mod create;
pub mod instances;
pub mod rolling_upgrade;
pub mod update;

pub use create::{
    create_body, parse_custom_data, CustomData, OrchestrationMode, ScaleInPolicy,
    UpgradePolicyMode, VmssCreate,
};
pub use instances::{instance_ids_body, VmssAction, VmssInstances, VmssLogs};
pub use update::{parse_set, update_body, VmssUpdate};

#[derive(Debug, Clone, Subcommand)]
pub enum VmssCommand {
    /// Create a scale set from a gallery image and wait until its instances run.
    #[command(
        after_help = "Example:\n  shoal vmss create -g demo -n web --image apps/web:1.0.0 \\\n      --instance-count 3 --vm-sku Shoal_1vCPU_512MB"
    )]
    Create(Box<VmssCreate>),
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
    /// Move instances to another host in their zone (same ids, a fresh copy there);
    /// restart in place when no other host can take them.
    Redeploy(VmssAction),
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
    /// Start, cancel or follow a rolling upgrade (Rolling mode, or an OS upgrade).
    #[command(subcommand)]
    RollingUpgrade(rolling_upgrade::RollingUpgradeCommand),
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
        VmssCommand::Redeploy(args) => action(args, "redeploy"),
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
        VmssCommand::Logs(args) => instances::logs_request(sub, args),
        VmssCommand::RollingUpgrade(c) => rolling_upgrade::request_for(sub, c),
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
    if let VmssCommand::RollingUpgrade(c) = cmd {
        return rolling_upgrade::run(client, printer, c).await;
    }
    if let VmssCommand::Create(args) = &mut cmd {
        create::resolve(client, args).await?;
    }
    let request = request_for(client.subscription(), &cmd)?;
    execute(client, printer, request).await
}
