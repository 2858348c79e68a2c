//! `shoal network application-gateway …`: layer-7 gateways
//! (`Microsoft.Network/applicationGateways`), as `az network application-gateway`.
//!
//! `create` builds the same one-of-each gateway `az` builds (a frontend, a port, a
//! backend pool, backend HTTP settings, a listener and a Basic rule named like az's), as
//! a pure [`create_body`]; `vmss create --app-gateway NAME` goes through
//! [`ensure_for_vmss`]. A certificate is two PEM files named in Shoal's extension
//! `properties.shoal {certificateFile, keyFile}` (az takes a PFX; Key Vault is out of
//! scope); their paths are made absolute here because the server reads them.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, ClientError};
use crate::exec::execute;
use crate::output::{Printer, Table};
use crate::request::{segment, subscription_path, ApiRequest};

pub const FRONTEND_IP: &str = "appGatewayFrontendIP";
pub const FRONTEND_PORT: &str = "appGatewayFrontendPort";
pub const BACKEND_POOL: &str = "appGatewayBackendPool";
pub const HTTP_SETTINGS: &str = "appGatewayBackendHttpSettings";
pub const LISTENER: &str = "appGatewayHttpListener";
pub const RULE: &str = "rule1";
pub const PROBE: &str = "appGatewayProbe";

#[derive(Debug, Clone, Subcommand)]
pub enum AppGwCommand {
    /// Create (or replace) an application gateway: one frontend, one backend pool, one
    /// listener and one rule.
    #[command(
        after_help = "Examples:\n  shoal network application-gateway create -g demo -n web-gw --frontend-port 8000 --http-settings-port 8080\n  \
                      shoal network application-gateway create -g demo -n tls-gw --frontend-port 8443 --http-settings-port 8080 \\\n      \
                      --cert-file cert.pem --key-file key.pem"
    )]
    Create(Box<AppGwCreate>),
    /// Show an application gateway as its ARM JSON object.
    Show(AppGwName),
    /// List the application gateways of a resource group (or of the subscription).
    List(AppGwList),
    /// Delete an application gateway (refused while a scale set uses its pools).
    Delete(AppGwName),
}

#[derive(Debug, Clone, Args)]
pub struct AppGwName {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the application gateway.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct AppGwList {
    /// Name of the resource group (default: every group).
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AppGwCreate {
    #[command(flatten)]
    pub gw: AppGwName,
    /// Location (default: the resource group's location).
    #[arg(long, short = 'l', value_name = "LOCATION")]
    pub location: Option<String>,
    /// SKU name (Standard_v2, WAF_v2, …; all are served alike).
    #[arg(long, default_value = "Standard_v2", value_name = "SKU")]
    pub sku: String,
    /// Instance count of the gateway (kept, not used: one balancer process serves it).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub capacity: u32,
    /// The address the gateway listens on.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub private_ip_address: String,
    /// The port clients connect to [default: 80, or 443 with --cert-file].
    #[arg(long, value_name = "PORT")]
    pub frontend_port: Option<u16>,
    /// Host names the listener answers for (default: every host).
    #[arg(long, num_args = 1.., value_name = "HOST")]
    pub host_names: Option<Vec<String>>,
    /// The port instances listen on (the image's port means each instance's own port).
    #[arg(long, default_value_t = 80, value_name = "PORT")]
    pub http_settings_port: u16,
    /// Protocol to the backends (only Http).
    #[arg(long, default_value = "Http", value_name = "PROTOCOL")]
    pub http_settings_protocol: String,
    /// Pin a client to one instance with a cookie: Enabled or Disabled.
    #[arg(long, default_value = "Disabled", value_name = "STATE")]
    pub http_settings_cookie_based_affinity: String,
    /// Seconds to wait for a backend's answer.
    #[arg(long, default_value_t = 20, value_name = "S")]
    pub http_settings_timeout: u32,
    /// Seconds a removed instance may finish its requests (0: draining off).
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub connection_draining_timeout: u32,
    /// Fixed backends by IP address, besides the scale sets that join the pool.
    #[arg(long, num_args = 1.., value_name = "IP")]
    pub servers: Option<Vec<String>>,
    /// Priority of the rule (1-20000).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub priority: u32,
    /// Health probe path; without it no probe is made (members leave on refused
    /// connections only).
    #[arg(long, value_name = "PATH")]
    pub probe_path: Option<String>,
    /// Seconds between probes (down to 1).
    #[arg(long, default_value_t = 5, value_name = "S", requires = "probe_path")]
    pub probe_interval: u32,
    /// Failed probes in a row that take an instance out.
    #[arg(long, default_value_t = 2, value_name = "N", requires = "probe_path")]
    pub probe_threshold: u32,
    /// PEM certificate chain: makes the listener Https (Shoal's form of az's --cert-file).
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Let clients speak HTTP/2 to the gateway (instances still get HTTP/1.1):
    /// Enabled or Disabled.
    #[arg(long, default_value = "Disabled", value_name = "STATE", value_parser = ["Enabled", "Disabled"])]
    pub http2: String,
    /// Do not wait; print the accepted gateway at once.
    #[arg(long)]
    pub no_wait: bool,
}

pub fn appgw_path(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/resourceGroups/{}/providers/Microsoft.Network/applicationGateways/{}",
        subscription_path(sub),
        segment(rg),
        segment(name)
    )
}

/// The ARM id of a gateway (what sub-resource references start with).
pub fn appgw_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/applicationGateways/{name}"
    )
}

/// `path` made absolute against `cwd` (the server may run elsewhere).
fn absolute(path: &Path, cwd: &Path) -> String {
    if path.is_absolute() {
        path.display().to_string()
    } else {
        cwd.join(path).display().to_string()
    }
}

/// The body `application-gateway create` sends; relative certificate paths are taken
/// from `cwd`.
pub fn create_body(sub: &str, args: &AppGwCreate, location: &str, cwd: &Path) -> Value {
    let id = appgw_id(sub, &args.gw.resource_group, &args.gw.name);
    let r = |kind: &str, name: &str| json!({"id": format!("{id}/{kind}/{name}")});
    let tls = args.cert_file.as_ref().zip(args.key_file.as_ref());
    let port = args
        .frontend_port
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let mut settings = json!({
        "port": args.http_settings_port,
        "protocol": args.http_settings_protocol,
        "cookieBasedAffinity": args.http_settings_cookie_based_affinity,
        "requestTimeout": args.http_settings_timeout,
        "connectionDraining": {
            "enabled": args.connection_draining_timeout > 0,
            "drainTimeoutInSec": args.connection_draining_timeout.max(1),
        },
    });
    let mut properties = json!({
        "sku": {"name": args.sku, "tier": tier_of(&args.sku), "capacity": args.capacity},
        "frontendIPConfigurations": [{"name": FRONTEND_IP, "properties": {"privateIPAddress": args.private_ip_address, "privateIPAllocationMethod": "Static"}}],
        "frontendPorts": [{"name": FRONTEND_PORT, "properties": {"port": port}}],
        "backendAddressPools": [{"name": BACKEND_POOL, "properties": {"backendAddresses":
            args.servers.iter().flatten().map(|ip| json!({"ipAddress": ip})).collect::<Vec<_>>()}}],
        "httpListeners": [{"name": LISTENER, "properties": {
            "frontendIPConfiguration": r("frontendIPConfigurations", FRONTEND_IP),
            "frontendPort": r("frontendPorts", FRONTEND_PORT),
            "protocol": if tls.is_some() { "Https" } else { "Http" },
        }}],
        "requestRoutingRules": [{"name": RULE, "properties": {
            "ruleType": "Basic",
            "priority": args.priority,
            "httpListener": r("httpListeners", LISTENER),
            "backendAddressPool": r("backendAddressPools", BACKEND_POOL),
            "backendHttpSettings": r("backendHttpSettingsCollection", HTTP_SETTINGS),
        }}],
    });
    if let Some(path) = &args.probe_path {
        properties["probes"] = json!([{"name": PROBE, "properties": {
            "protocol": "Http", "path": path, "interval": args.probe_interval,
            "timeout": args.probe_interval, "unhealthyThreshold": args.probe_threshold,
        }}]);
        settings["probe"] = r("probes", PROBE);
    }
    properties["backendHttpSettingsCollection"] =
        json!([{"name": HTTP_SETTINGS, "properties": settings}]);
    if args.http2 == "Enabled" {
        properties["enableHttp2"] = json!(true);
    }
    if let Some(hosts) = &args.host_names {
        properties["httpListeners"][0]["properties"]["hostNames"] = json!(hosts);
    }
    if let Some((cert, key)) = tls {
        let cert_name = format!("{}SslCert", args.gw.name);
        properties["sslCertificates"] = json!([{"name": cert_name, "properties": {"shoal": {
            "certificateFile": absolute(cert, cwd),
            "keyFile": absolute(key, cwd),
        }}}]);
        properties["httpListeners"][0]["properties"]["sslCertificate"] =
            r("sslCertificates", &cert_name);
    }
    json!({"location": location, "properties": properties})
}

fn tier_of(sku: &str) -> &str {
    match sku {
        "Standard_Small" | "Standard_Medium" | "Standard_Large" => "Standard",
        "WAF_Medium" | "WAF_Large" => "WAF",
        other => other,
    }
}

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    cmd: AppGwCommand,
) -> anyhow::Result<()> {
    let sub = client.subscription().to_string();
    let request = match cmd {
        AppGwCommand::Create(args) => {
            let location = match &args.location {
                Some(l) => l.clone(),
                None => crate::image::group_location(client, &args.gw.resource_group).await?,
            };
            let cwd = std::env::current_dir()?;
            ApiRequest::write(
                Method::PUT,
                appgw_path(&sub, &args.gw.resource_group, &args.gw.name),
                create_body(&sub, &args, &location, &cwd),
                args.no_wait,
                Table::Generic,
            )
        }
        AppGwCommand::Show(args) => ApiRequest::get(
            appgw_path(&sub, &args.resource_group, &args.name),
            Table::Generic,
        ),
        AppGwCommand::List(args) => ApiRequest::list(
            match &args.resource_group {
                Some(rg) => format!(
                    "{}/resourceGroups/{}/providers/Microsoft.Network/applicationGateways",
                    subscription_path(&sub),
                    segment(rg)
                ),
                None => format!(
                    "{}/providers/Microsoft.Network/applicationGateways",
                    subscription_path(&sub)
                ),
            },
            Table::Generic,
        ),
        AppGwCommand::Delete(args) => ApiRequest::action(
            Method::DELETE,
            appgw_path(&sub, &args.resource_group, &args.name),
            None,
            false,
        ),
    };
    execute(client, printer, request).await
}

/// Makes sure gateway `name` exists for a set whose image listens on `port`: creates it
/// (a frontend on 127.0.0.1:`frontend_port`, an HTTP probe of `/`, settings on the
/// image's port, one Basic rule) when missing, and returns the id of the backend pool
/// the set must join (an existing gateway's only pool, or `appGatewayBackendPool`).
pub async fn ensure_for_vmss(
    client: &Client,
    rg: &str,
    name: &str,
    frontend_port: u16,
    port: u16,
    location: &str,
) -> anyhow::Result<String> {
    let sub = client.subscription().to_string();
    let id = appgw_id(&sub, rg, name);
    let path = appgw_path(&sub, rg, name);
    let existing = match client.call(Method::GET, &path, None).await {
        Ok(reply) => reply.body,
        Err(ClientError::Api(e)) if e.code == "ResourceNotFound" || e.code == "NotFound" => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(gw) = existing {
        let pools: Vec<&str> = gw["properties"]["backendAddressPools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        return match pools.as_slice() {
            [one] => Ok(format!("{id}/backendAddressPools/{one}")),
            [] => anyhow::bail!("application gateway '{name}' has no backend pool"),
            _ if pools.contains(&BACKEND_POOL) => Ok(format!("{id}/backendAddressPools/{BACKEND_POOL}")),
            _ => anyhow::bail!(
                "application gateway '{name}' has several backend pools ({}): put the set in one with --set or the API",
                pools.join(", ")
            ),
        };
    }
    let args = AppGwCreate {
        gw: AppGwName {
            resource_group: rg.to_string(),
            name: name.to_string(),
        },
        location: Some(location.to_string()),
        sku: "Standard_v2".into(),
        capacity: 2,
        private_ip_address: "127.0.0.1".into(),
        frontend_port: Some(frontend_port),
        host_names: None,
        http_settings_port: port,
        http_settings_protocol: "Http".into(),
        http_settings_cookie_based_affinity: "Disabled".into(),
        http_settings_timeout: 20,
        connection_draining_timeout: 0,
        servers: None,
        priority: 100,
        probe_path: Some("/".into()),
        probe_interval: 5,
        probe_threshold: 2,
        cert_file: None,
        key_file: None,
        http2: "Disabled".into(),
        no_wait: false,
    };
    let body = create_body(&sub, &args, location, Path::new("/"));
    client.call(Method::PUT, &path, Some(&body)).await?;
    eprintln!(
        "Created application gateway '{name}': http://127.0.0.1:{frontend_port} -> instance port {port}"
    );
    Ok(format!("{id}/backendAddressPools/{BACKEND_POOL}"))
}

/// Puts a set's instances in gateway pool `pool_id`: adds it to the first IP
/// configuration of `virtualMachineProfile.networkProfile` (made when missing) in a
/// scale set's `properties`.
pub fn join_pool(properties: &mut Value, set_name: &str, pool_id: &str) {
    let profile = &mut properties["virtualMachineProfile"]["networkProfile"];
    if profile
        .pointer("/networkInterfaceConfigurations/0/properties/ipConfigurations/0")
        .is_none()
    {
        profile["networkInterfaceConfigurations"] = json!([{
            "name": format!("{set_name}Nic"),
            "properties": {"primary": true, "ipConfigurations": [{
                "name": format!("{set_name}IPConfig"), "properties": {}
            }]}
        }]);
    }
    let Some(ipc) =
        profile.pointer_mut("/networkInterfaceConfigurations/0/properties/ipConfigurations/0")
    else {
        return;
    };
    let pools = &mut ipc["properties"]["applicationGatewayBackendAddressPools"];
    match pools.as_array_mut() {
        Some(list) => list.push(json!({"id": pool_id})),
        None => *pools = json!([{"id": pool_id}]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AppGwCommand,
    }

    fn create(args: &[&str]) -> AppGwCreate {
        let mut argv = vec!["x", "create", "-g", "rg", "-n", "gw"];
        argv.extend_from_slice(args);
        match Cli::parse_from(argv).cmd {
            AppGwCommand::Create(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_builds_azs_one_of_each_gateway() {
        let body = create_body(
            "s",
            &create(&[
                "--frontend-port",
                "8000",
                "--http-settings-port",
                "8080",
                "--probe-path",
                "/health",
            ]),
            "local",
            Path::new("/work"),
        );
        let p = &body["properties"];
        assert_eq!(p["frontendPorts"][0]["properties"]["port"], 8000);
        assert_eq!(p["httpListeners"][0]["properties"]["protocol"], "Http");
        assert_eq!(
            p["backendHttpSettingsCollection"][0]["properties"]["port"],
            8080
        );
        assert!(
            p["backendHttpSettingsCollection"][0]["properties"]["probe"]["id"]
                .as_str()
                .unwrap()
                .ends_with("/applicationGateways/gw/probes/appGatewayProbe")
        );
        assert_eq!(
            p["requestRoutingRules"][0]["properties"]["ruleType"],
            "Basic"
        );
        assert!(p.get("sslCertificates").is_none());
    }

    #[test]
    fn a_certificate_makes_the_listener_https_with_absolute_paths() {
        let body = create_body(
            "s",
            &create(&["--cert-file", "tls/cert.pem", "--key-file", "/etc/key.pem"]),
            "local",
            Path::new("/work"),
        );
        let p = &body["properties"];
        assert_eq!(p["frontendPorts"][0]["properties"]["port"], 443);
        assert_eq!(p["httpListeners"][0]["properties"]["protocol"], "Https");
        let files = &p["sslCertificates"][0]["properties"]["shoal"];
        assert_eq!(files["certificateFile"], "/work/tls/cert.pem");
        assert_eq!(files["keyFile"], "/etc/key.pem");
    }

    #[test]
    fn joining_a_pool_keeps_load_balancer_pools() {
        let mut props = json!({"virtualMachineProfile": {"networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"loadBalancerBackendAddressPools": [{"id": "/lb/p"}]}}]}}]}}});
        join_pool(&mut props, "web", "/gw/p");
        let ipc = &props["virtualMachineProfile"]["networkProfile"]
            ["networkInterfaceConfigurations"][0]["properties"]["ipConfigurations"][0]
            ["properties"];
        assert_eq!(ipc["loadBalancerBackendAddressPools"][0]["id"], "/lb/p");
        assert_eq!(
            ipc["applicationGatewayBackendAddressPools"][0]["id"],
            "/gw/p"
        );
        let mut empty = json!({"virtualMachineProfile": {}});
        join_pool(&mut empty, "web", "/gw/p");
        assert_eq!(
            empty["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
                ["properties"]["ipConfigurations"][0]["properties"]
                ["applicationGatewayBackendAddressPools"][0]["id"],
            "/gw/p"
        );
    }
}
