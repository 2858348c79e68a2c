//! `shoal network lb …`: load balancers (`Microsoft.Network/loadBalancers`), as
//! `az network lb`. Sub-resource commands (`probe create`, `rule create`) read the
//! balancer, change it, and PUT it back, which is what `az` does too.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, ClientError};
use crate::exec::execute;
use crate::output::{Printer, Table};
use crate::request::{segment, subscription_path, ApiRequest};

#[derive(Debug, Clone, Subcommand)]
pub enum NetworkCommand {
    /// Manage layer-4 load balancers.
    #[command(subcommand)]
    Lb(LbCommand),
    /// Manage layer-7 application gateways.
    #[command(subcommand, name = "application-gateway")]
    ApplicationGateway(crate::appgw::AppGwCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum LbCommand {
    /// Create a load balancer with one frontend and one backend pool.
    #[command(
        after_help = "Example:\n  shoal network lb create -g demo -n web-lb --frontend-ip-address 127.0.0.1"
    )]
    Create(LbCreate),
    /// Show a load balancer as its ARM JSON object.
    Show(LbName),
    /// List the load balancers of a resource group (or of the subscription).
    List(LbList),
    /// Delete a load balancer (refused while a scale set uses its pools).
    Delete(LbName),
    /// Manage health probes.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Manage load-balancing rules.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Manage backend address pools.
    #[command(subcommand, name = "address-pool")]
    AddressPool(PoolCommand),
}

#[derive(Debug, Clone, Args)]
pub struct LbName {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the load balancer.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct LbList {
    /// Name of the resource group (default: every group).
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct LbCreate {
    #[command(flatten)]
    pub lb: LbName,
    /// Location (default: the resource group's location).
    #[arg(long, short = 'l', value_name = "LOCATION")]
    pub location: Option<String>,
    /// Name of the frontend IP configuration.
    #[arg(long, default_value = "LoadBalancerFrontEnd", value_name = "NAME")]
    pub frontend_ip_name: String,
    /// The address the balancer listens on.
    #[arg(
        long,
        alias = "private-ip-address",
        default_value = "127.0.0.1",
        value_name = "IP"
    )]
    pub frontend_ip_address: String,
    /// Name of the backend pool [default: <name>bepool].
    #[arg(long, value_name = "NAME")]
    pub backend_pool_name: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProbeCommand {
    /// Add (or replace) a health probe.
    #[command(
        after_help = "Example:\n  shoal network lb probe create -g demo --lb-name web-lb -n http --protocol Http --port 8080 --path /health --interval 1 --threshold 2"
    )]
    Create(ProbeCreate),
}

#[derive(Debug, Clone, Args)]
pub struct ProbeCreate {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the load balancer.
    #[arg(long, value_name = "NAME")]
    pub lb_name: String,
    /// Name of the probe.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
    /// Tcp, Http or Https.
    #[arg(long, default_value = "Tcp", value_name = "PROTOCOL")]
    pub protocol: String,
    /// The port probed (the image's port means each instance's own port).
    #[arg(long, value_name = "PORT")]
    pub port: u16,
    /// Request path of Http(s) probes.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Seconds between probes (down to 1).
    #[arg(long, default_value_t = 5, value_name = "S")]
    pub interval: u32,
    /// Consecutive failures that mark an instance unhealthy.
    #[arg(
        long,
        alias = "number-of-probes",
        default_value_t = 2,
        value_name = "N"
    )]
    pub threshold: u32,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RuleCommand {
    /// Add (or replace) a load-balancing rule.
    #[command(
        after_help = "Example:\n  shoal network lb rule create -g demo --lb-name web-lb -n http --protocol Tcp --frontend-port 8000 --backend-port 8080 --probe-name http"
    )]
    Create(RuleCreate),
}

#[derive(Debug, Clone, Args)]
pub struct RuleCreate {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the load balancer.
    #[arg(long, value_name = "NAME")]
    pub lb_name: String,
    /// Name of the rule.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
    /// Only Tcp.
    #[arg(long, default_value = "Tcp", value_name = "PROTOCOL")]
    pub protocol: String,
    /// The port clients connect to on the frontend.
    #[arg(long, value_name = "PORT")]
    pub frontend_port: u16,
    /// The port instances listen on (the image's port).
    #[arg(long, value_name = "PORT")]
    pub backend_port: u16,
    /// Frontend IP configuration [default: the only one].
    #[arg(long, value_name = "NAME")]
    pub frontend_ip_name: Option<String>,
    /// Backend pool [default: the only one].
    #[arg(long, value_name = "NAME")]
    pub backend_pool_name: Option<String>,
    /// Health probe deciding which instances get traffic.
    #[arg(long, value_name = "NAME")]
    pub probe_name: Option<String>,
    /// Default, SourceIP or SourceIPProtocol.
    #[arg(long, default_value = "Default", value_name = "MODE")]
    pub load_distribution: String,
    /// Minutes of idleness after which a connection is closed.
    #[arg(long, default_value_t = 4, value_name = "MIN")]
    pub idle_timeout: u32,
    /// Reset (RST) idle connections instead of closing them quietly.
    #[arg(long)]
    pub enable_tcp_reset: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PoolCommand {
    /// List the backend pools of a load balancer.
    List(PoolList),
}

#[derive(Debug, Clone, Args)]
pub struct PoolList {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the load balancer.
    #[arg(long, value_name = "NAME")]
    pub lb_name: String,
}

pub fn lb_path(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/resourceGroups/{}/providers/Microsoft.Network/loadBalancers/{}",
        subscription_path(sub),
        segment(rg),
        segment(name)
    )
}

/// The ARM id of a load balancer (what sub-resource references start with).
pub fn lb_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/{name}"
    )
}

/// The body `network lb create` sends.
pub fn create_body(sub: &str, args: &LbCreate, location: &str) -> Value {
    let _ = sub;
    let pool = args
        .backend_pool_name
        .clone()
        .unwrap_or_else(|| format!("{}bepool", args.lb.name));
    json!({
        "location": location,
        "sku": {"name": "Standard"},
        "properties": {
            "frontendIPConfigurations": [{"name": args.frontend_ip_name, "properties": {"privateIPAddress": args.frontend_ip_address, "privateIPAllocationMethod": "Static"}}],
            "backendAddressPools": [{"name": pool}],
        }
    })
}

/// Adds or replaces the named item of a sub-resource list in a balancer's JSON.
fn upsert(lb: &mut Value, list: &str, item: Value) {
    let name = item["name"].as_str().unwrap_or_default().to_string();
    let arr = lb["properties"][list].as_array_mut();
    match arr {
        Some(items) => {
            items.retain(|i| {
                !i["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&name))
            });
            items.push(item);
        }
        None => lb["properties"][list] = json!([item]),
    }
}

/// The balancer as a PUT body: read-only parts dropped.
fn writable(mut lb: Value) -> Value {
    if let Some(o) = lb.as_object_mut() {
        o.remove("etag");
    }
    lb
}

fn only_name(lb: &Value, list: &str, given: &Option<String>, what: &str) -> anyhow::Result<String> {
    if let Some(g) = given {
        return Ok(g.clone());
    }
    let names: Vec<String> = lb["properties"][list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("the load balancer has no {what}: create one first"),
        _ => anyhow::bail!(
            "the load balancer has several {what}s ({}): name one",
            names.join(", ")
        ),
    }
}

/// A probe item as the API takes it.
pub fn probe_item(args: &ProbeCreate) -> Value {
    let mut props = json!({
        "protocol": args.protocol,
        "port": args.port,
        "intervalInSeconds": args.interval,
        "numberOfProbes": args.threshold,
        "probeThreshold": args.threshold,
    });
    if let Some(p) = &args.path {
        props["requestPath"] = json!(p);
    }
    json!({"name": args.name, "properties": props})
}

/// A rule item as the API takes it, with references completed from `lb`.
pub fn rule_item(sub: &str, args: &RuleCreate, lb: &Value) -> anyhow::Result<Value> {
    let id = lb_id(sub, &args.resource_group, &args.lb_name);
    let fe = only_name(
        lb,
        "frontendIPConfigurations",
        &args.frontend_ip_name,
        "frontend IP configuration",
    )?;
    let pool = only_name(
        lb,
        "backendAddressPools",
        &args.backend_pool_name,
        "backend pool",
    )?;
    let mut props = json!({
        "protocol": args.protocol,
        "frontendPort": args.frontend_port,
        "backendPort": args.backend_port,
        "frontendIPConfiguration": {"id": format!("{id}/frontendIPConfigurations/{fe}")},
        "backendAddressPool": {"id": format!("{id}/backendAddressPools/{pool}")},
        "loadDistribution": args.load_distribution,
        "idleTimeoutInMinutes": args.idle_timeout,
        "enableTcpReset": args.enable_tcp_reset,
    });
    if let Some(p) = &args.probe_name {
        props["probe"] = json!({"id": format!("{id}/probes/{p}")});
    }
    Ok(json!({"name": args.name, "properties": props}))
}

async fn get_lb(client: &Client, rg: &str, name: &str) -> anyhow::Result<Value> {
    let reply = client
        .call(Method::GET, &lb_path(client.subscription(), rg, name), None)
        .await?;
    Ok(reply.body.unwrap_or(Value::Null))
}

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    cmd: NetworkCommand,
) -> anyhow::Result<()> {
    let sub = client.subscription().to_string();
    let cmd = match cmd {
        NetworkCommand::Lb(cmd) => cmd,
        NetworkCommand::ApplicationGateway(cmd) => {
            return crate::appgw::run(client, printer, cmd).await
        }
    };
    let request = match cmd {
        LbCommand::Create(args) => {
            let location = match &args.location {
                Some(l) => l.clone(),
                None => crate::image::group_location(client, &args.lb.resource_group).await?,
            };
            ApiRequest::write(
                Method::PUT,
                lb_path(&sub, &args.lb.resource_group, &args.lb.name),
                create_body(&sub, &args, &location),
                false,
                Table::Generic,
            )
        }
        LbCommand::Show(args) => ApiRequest::get(
            lb_path(&sub, &args.resource_group, &args.name),
            Table::Generic,
        ),
        LbCommand::List(args) => ApiRequest::list(
            match &args.resource_group {
                Some(rg) => format!(
                    "{}/resourceGroups/{}/providers/Microsoft.Network/loadBalancers",
                    subscription_path(&sub),
                    segment(rg)
                ),
                None => format!(
                    "{}/providers/Microsoft.Network/loadBalancers",
                    subscription_path(&sub)
                ),
            },
            Table::Generic,
        ),
        LbCommand::Delete(args) => ApiRequest::action(
            Method::DELETE,
            lb_path(&sub, &args.resource_group, &args.name),
            None,
            false,
        ),
        LbCommand::Probe(ProbeCommand::Create(args)) => {
            let mut lb = get_lb(client, &args.resource_group, &args.lb_name).await?;
            upsert(&mut lb, "probes", probe_item(&args));
            ApiRequest::write(
                Method::PUT,
                lb_path(&sub, &args.resource_group, &args.lb_name),
                writable(lb),
                false,
                Table::Generic,
            )
        }
        LbCommand::Rule(RuleCommand::Create(args)) => {
            let mut lb = get_lb(client, &args.resource_group, &args.lb_name).await?;
            let item = rule_item(&sub, &args, &lb)?;
            upsert(&mut lb, "loadBalancingRules", item);
            ApiRequest::write(
                Method::PUT,
                lb_path(&sub, &args.resource_group, &args.lb_name),
                writable(lb),
                false,
                Table::Generic,
            )
        }
        LbCommand::AddressPool(PoolCommand::List(args)) => ApiRequest::list(
            format!(
                "{}/backendAddressPools",
                lb_path(&sub, &args.resource_group, &args.lb_name)
            ),
            Table::Generic,
        ),
    };
    execute(client, printer, request).await
}

/// What `vmss create --lb NAME` wires: the pool to join and the probe to report health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbWiring {
    pub pool_id: String,
    pub probe_id: Option<String>,
}

/// Makes sure balancer `name` exists for a set whose image listens on `port`: creates it
/// (frontend on 127.0.0.1, pool, TCP probe on the image port, rule `frontend_port` →
/// `port`) when missing, and returns what the set must reference.
pub async fn ensure_for_vmss(
    client: &Client,
    rg: &str,
    name: &str,
    pool: Option<&str>,
    frontend_port: u16,
    port: u16,
    location: &str,
) -> anyhow::Result<LbWiring> {
    let sub = client.subscription().to_string();
    let id = lb_id(&sub, rg, name);
    let existing = match client
        .call(Method::GET, &lb_path(&sub, rg, name), None)
        .await
    {
        Ok(reply) => reply.body,
        Err(ClientError::Api(e)) if e.code == "ResourceNotFound" || e.code == "NotFound" => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(lb) = existing {
        let pool = only_name(
            &lb,
            "backendAddressPools",
            &pool.map(String::from),
            "backend pool",
        )?;
        let probe = lb["properties"]["probes"]
            .as_array()
            .and_then(|p| p.first())
            .and_then(|p| p["name"].as_str())
            .map(String::from);
        return Ok(LbWiring {
            pool_id: format!("{id}/backendAddressPools/{pool}"),
            probe_id: probe.map(|p| format!("{id}/probes/{p}")),
        });
    }
    let pool = pool
        .map(String::from)
        .unwrap_or_else(|| format!("{name}bepool"));
    let body = json!({
        "location": location,
        "sku": {"name": "Standard"},
        "properties": {
            "frontendIPConfigurations": [{"name": "LoadBalancerFrontEnd", "properties": {"privateIPAddress": "127.0.0.1"}}],
            "backendAddressPools": [{"name": pool}],
            "probes": [{"name": format!("{name}probe"), "properties": {"protocol": "Tcp", "port": port, "intervalInSeconds": 5, "numberOfProbes": 2}}],
            "loadBalancingRules": [{"name": format!("{name}rule"), "properties": {
                "protocol": "Tcp", "frontendPort": frontend_port, "backendPort": port,
                "frontendIPConfiguration": {"id": format!("{id}/frontendIPConfigurations/LoadBalancerFrontEnd")},
                "backendAddressPool": {"id": format!("{id}/backendAddressPools/{pool}")},
                "probe": {"id": format!("{id}/probes/{name}probe")}
            }}]
        }
    });
    client
        .call(Method::PUT, &lb_path(&sub, rg, name), Some(&body))
        .await?;
    eprintln!("Created load balancer '{name}': frontend 127.0.0.1:{frontend_port} -> instance port {port}");
    Ok(LbWiring {
        pool_id: format!("{id}/backendAddressPools/{pool}"),
        probe_id: Some(format!("{id}/probes/{name}probe")),
    })
}

/// The `networkProfile` that puts a set's instances in `wiring`'s pool.
pub fn network_profile(set_name: &str, wiring: &LbWiring) -> Value {
    let mut profile = json!({
        "networkInterfaceConfigurations": [{
            "name": format!("{set_name}Nic"),
            "properties": {"primary": true, "ipConfigurations": [{
                "name": format!("{set_name}IPConfig"),
                "properties": {"loadBalancerBackendAddressPools": [{"id": wiring.pool_id}]}
            }]}
        }]
    });
    if let Some(p) = &wiring.probe_id {
        profile["healthProbe"] = json!({"id": p});
    }
    profile
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_references_are_completed_from_the_balancer() {
        let lb = json!({"properties": {
            "frontendIPConfigurations": [{"name": "fe"}],
            "backendAddressPools": [{"name": "pool"}],
        }});
        let args = RuleCreate {
            resource_group: "rg".into(),
            lb_name: "lb".into(),
            name: "r".into(),
            protocol: "Tcp".into(),
            frontend_port: 8000,
            backend_port: 8080,
            frontend_ip_name: None,
            backend_pool_name: None,
            probe_name: Some("p".into()),
            load_distribution: "Default".into(),
            idle_timeout: 4,
            enable_tcp_reset: false,
        };
        let item = rule_item("s", &args, &lb).unwrap();
        assert!(item["properties"]["backendAddressPool"]["id"]
            .as_str()
            .unwrap()
            .ends_with("/loadBalancers/lb/backendAddressPools/pool"));
        assert!(item["properties"]["probe"]["id"]
            .as_str()
            .unwrap()
            .ends_with("/probes/p"));
        let two = json!({"properties": {"frontendIPConfigurations": [{"name": "a"}, {"name": "b"}], "backendAddressPools": [{"name": "pool"}]}});
        assert!(rule_item("s", &args, &two).is_err());
    }

    #[test]
    fn upsert_replaces_by_name() {
        let mut lb = json!({"properties": {"probes": [{"name": "p", "properties": {"port": 1}}]}});
        upsert(
            &mut lb,
            "probes",
            json!({"name": "P", "properties": {"port": 2}}),
        );
        assert_eq!(lb["properties"]["probes"].as_array().unwrap().len(), 1);
        assert_eq!(lb["properties"]["probes"][0]["properties"]["port"], 2);
    }
}
