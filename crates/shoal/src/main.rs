//! The one `shoal` binary: the server processes (`serve`, `server`, `agent`) and the
//! `az`-shaped client verbs (`group`, `image`, `vmss`). `main` only parses arguments and
//! hands over to the library crates.

mod config;
mod join;
mod serve;
mod setup;
mod store_copy;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Virtual machine scale sets on your own machines",
    long_about = "Virtual machine scale sets on your own machines.\n\n\
                  `shoal serve` runs the API, the controllers and a local agent in one process. \
                  The other commands are a client that speaks Azure ARM's wire format and mirrors `az`."
)]
struct Cli {
    #[command(flatten)]
    options: shoal_cli::ClientOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: API, controllers, embedded store and a local agent.
    Serve(Box<serve::ServeArgs>),
    /// Run the API and controllers only (agents connect over HTTP); `server status`
    /// shows which server leads.
    Server(Box<ServerArgs>),
    /// Run a host agent that takes instances from a server.
    Agent(Box<serve::AgentArgs>),
    /// Run a load balancer that follows a server (several may front one set).
    Balancer(Box<serve::BalancerArgs>),
    /// The state store: copy an install from the embedded store to etcd.
    #[command(subcommand)]
    Store(StoreVerb),
    #[command(flatten)]
    Client(shoal_cli::ClientCommand),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ServerArgs {
    #[command(subcommand)]
    verb: Option<ServerVerb>,
    #[command(flatten)]
    serve: serve::ServeArgs,
}

#[derive(Debug, Subcommand)]
enum StoreVerb {
    /// Copy every key of a stopped server's embedded store into an empty etcd.
    #[command(
        after_help = "Example:\n  shoal store copy --from .shoal --to etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379"
    )]
    Copy(store_copy::StoreCopyArgs),
}

#[derive(Debug, Subcommand)]
enum ServerVerb {
    /// Which server leads and since when, the store's health, and the servers.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => report(runtime.block_on(serve::serve(*args, serve::Mode::All))),
        Command::Server(args) => match args.verb {
            Some(ServerVerb::Status) => {
                match runtime.block_on(shoal_cli::server_status::run(&cli.options)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        shoal_cli::report_error(&e);
                        ExitCode::FAILURE
                    }
                }
            }
            None => report(runtime.block_on(serve::serve(args.serve, serve::Mode::ServerOnly))),
        },
        Command::Agent(args) => report(runtime.block_on(serve::agent(*args, cli.options))),
        Command::Balancer(args) => report(runtime.block_on(serve::balancer(*args, cli.options))),
        Command::Store(StoreVerb::Copy(args)) => report(runtime.block_on(store_copy::run(args))),
        Command::Client(cmd) => runtime.block_on(shoal_cli::run_and_report(cli.options, cmd)),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}
