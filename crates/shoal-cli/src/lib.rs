//! `shoal-cli`: the `az`-shaped command-line client of Shoal.
//!
//! The binary `shoal` parses its arguments with clap, flattening [`ClientOptions`] into its
//! root parser and [`ClientCommand`] into its subcommand enum, then calls [`run`] (or
//! [`run_and_report`], which also prints errors the way `az` does and yields an exit code).
//!
//! Data flow: a parsed command becomes one or more [`ApiRequest`]s (pure functions, no I/O:
//! `group::request_for`, `vmss::request_for`, `image::create_requests`, …); [`client`] sends
//! them to the ARM-shaped REST API, [`lro`] waits for long-running operations, and
//! [`output`] prints the result as JSON or a table on stdout. Progress goes to stderr.

pub mod ad;
pub mod appgw;
pub mod bundle;
pub mod client;
pub mod group;
pub mod host;
pub mod identity;
pub mod image;
pub mod image_ref;
pub mod login;
pub mod lro;
pub mod monitor;
pub mod network;
pub mod output;
pub mod progress;
pub mod request;
pub mod server_status;
pub mod vm_bundle;
pub mod vmss;

mod exec;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use client::{ArmError, Client, ClientError};
pub use output::{OutputFormat, Table};
pub use request::{ApiRequest, Kind};

/// The subscription used when neither `--subscription` nor `SHOAL_SUBSCRIPTION` is set.
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// The API listens here unless told otherwise.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7070";
/// Sent as `api-version` on every request; the server accepts any.
pub const API_VERSION: &str = "2024-07-01";

/// Options every client command takes. They are `global`, so they may be written before or
/// after the subcommand (`shoal vmss list -g demo -o table`).
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// Base URL of the Shoal API (`shoal serve` listens on http://127.0.0.1:7070); several,
    /// comma-separated, for an install of several servers: the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "SHOAL_ENDPOINT",
        help_heading = "Global Options",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL[,URL…]"
    )]
    pub endpoint: client::Endpoints,

    /// Subscription id that every resource id and path is scoped to.
    #[arg(
        long,
        global = true,
        env = "SHOAL_SUBSCRIPTION",
        help_heading = "Global Options",
        default_value = DEFAULT_SUBSCRIPTION,
        value_name = "ID"
    )]
    pub subscription: String,

    /// Output format: pretty JSON (as `az`), a table, or nothing.
    #[arg(
        long,
        short = 'o',
        global = true,
        help_heading = "Global Options",
        value_enum,
        default_value_t = OutputFormat::Json,
        value_name = "FORMAT"
    )]
    pub output: OutputFormat,

    /// An access token to send as it is, instead of signing in with a credential found in
    /// the environment or the data directory.
    #[arg(
        long,
        global = true,
        env = "SHOAL_ACCESS_TOKEN",
        hide = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub access_token: Option<String>,
}

impl ClientOptions {
    /// Options pointing at `endpoint` with the default subscription and JSON output.
    pub fn new(endpoint: reqwest::Url) -> Self {
        ClientOptions {
            endpoint: endpoint.into(),
            subscription: DEFAULT_SUBSCRIPTION.to_owned(),
            output: OutputFormat::Json,
            access_token: None,
        }
    }
}

/// The client verbs of `shoal`, named as `az` names them.
///
/// The large command families are boxed so that an enum embedding this one (the binary's
/// top-level subcommands) stays small.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Manage resource groups: the folders every other resource lives in.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Upload process images into galleries and manage their versions.
    #[command(subcommand)]
    Image(Box<image::ImageCommand>),
    /// Manage virtual machine scale sets and their instances.
    #[command(subcommand)]
    Vmss(Box<vmss::VmssCommand>),
    /// Manage load balancers and application gateways.
    #[command(subcommand)]
    Network(Box<network::NetworkCommand>),
    /// Autoscale settings and metrics, as `az monitor`.
    #[command(subcommand)]
    Monitor(Box<monitor::MonitorCommand>),
    /// The hosts instances run on: state, zones, load; cordon and drain.
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Identities: service principals and their roles, as `az ad`.
    #[command(subcommand)]
    Ad(ad::AdCommand),
    /// User-assigned managed identities for scale sets, as `az identity`.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Sign in to a server with a service principal; later commands against the same
    /// --endpoint use it.
    #[command(
        after_help = "Example:\n  shoal login --endpoint http://10.0.0.5:7070 --service-principal -u APP_ID -p SECRET --tenant TENANT"
    )]
    Login(login::LoginArgs),
    /// Forget the credential `shoal login` kept.
    Logout,
}

/// A complete client-only parser (`shoal-cli`'s own tests use it; the `shoal` binary builds
/// its own root with the same two pieces plus its server subcommands).
#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    about = "Virtual machine scale sets on your own machines",
    long_about = "Virtual machine scale sets on your own machines.\n\n\
                  The client commands speak Azure ARM's wire format to a Shoal server \
                  and mirror `az group`, `az sig` and `az vmss`."
)]
pub struct Cli {
    #[command(flatten)]
    pub options: ClientOptions,
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// Runs one client command against the server named in `opts`.
///
/// Results go to stdout in the chosen format, progress to stderr. Errors come back to the
/// caller; print them with [`report_error`] (or call [`run_and_report`]).
pub async fn run(opts: ClientOptions, cmd: ClientCommand) -> anyhow::Result<()> {
    let printer = output::Printer::stdout(opts.output);
    run_with(&opts, cmd, &printer).await
}

/// [`run`], printing results through `printer` (tests pass [`output::Printer::buffer`]).
pub async fn run_with(
    opts: &ClientOptions,
    cmd: ClientCommand,
    printer: &output::Printer,
) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Login(args) => return login::login(opts, args, printer).await,
        ClientCommand::Logout => return login::logout(),
        _ => {}
    }
    let client = Client::new(opts)?.reachable().await;
    client.sign_in().await?;
    match cmd {
        ClientCommand::Login(_) | ClientCommand::Logout => Ok(()),
        ClientCommand::Ad(cmd) => ad::run(&client, printer, cmd).await,
        ClientCommand::Identity(cmd) => identity::run(&client, printer, cmd).await,
        ClientCommand::Host(cmd) => host::run(&client, printer, cmd).await,
        ClientCommand::Group(cmd) => group::run(&client, printer, cmd).await,
        ClientCommand::Image(cmd) => image::run(&client, printer, *cmd).await,
        ClientCommand::Vmss(cmd) => vmss::run(&client, printer, *cmd).await,
        ClientCommand::Network(cmd) => network::run(&client, printer, *cmd).await,
        ClientCommand::Monitor(cmd) => monitor::run(&client, printer, *cmd).await,
    }
}

/// [`run`], then on error prints it to stderr as `az` does (`ERROR: (Code) message`,
/// `Target: field`) and returns exit code 1.
pub async fn run_and_report(opts: ClientOptions, cmd: ClientCommand) -> ExitCode {
    match run(opts, cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err);
            ExitCode::FAILURE
        }
    }
}

/// Prints `err` to stderr in `az`'s shape.
pub fn report_error(err: &anyhow::Error) {
    eprint!("{}", error_text(err));
}

/// The text [`report_error`] prints, ending in a newline.
pub fn error_text(err: &anyhow::Error) -> String {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Api(arm)) => {
            let mut text = format!("ERROR: ({}) {}\n", arm.code, arm.message);
            if let Some(target) = arm.target.as_deref().filter(|t| !t.is_empty()) {
                text.push_str(&format!("Target: {target}\n"));
            }
            text
        }
        // The cause of an unreachable server is noise ("tcp connect error: Connection
        // refused"): the message already says what to do.
        Some(unreachable @ ClientError::Unreachable { .. }) => format!("ERROR: {unreachable}\n"),
        _ => format!("ERROR: {err:#}\n"),
    }
}
