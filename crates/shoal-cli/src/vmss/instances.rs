//! The `vmss` commands on instances: power actions (`start`, `stop`, `restart`,
//! `deallocate`, `reimage`) on some or all instances, `update-instances`,
//! `delete-instances`, and `logs` (an instance's output, streamed).

use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

use super::VmssName;
use crate::request::{instance_path, ApiRequest, Kind};

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

/// `{"instanceIds": [...]}`, or no body at all (meaning every instance) when `ids` is empty.
pub fn instance_ids_body(ids: &[String]) -> Option<Value> {
    (!ids.is_empty()).then(|| json!({ "instanceIds": ids }))
}

/// `vmss logs`: a streamed GET of the instance's output.
pub(super) fn logs_request(sub: &str, args: &VmssLogs) -> ApiRequest {
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
