//! The client commands alone, wired the way the `shoal` binary wires them:
//! `cargo run -p shoal-cli --example shoal-client -- vmss list -g demo -o table`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = shoal_cli::Cli::parse();
    shoal_cli::run_and_report(cli.options, cli.command).await
}
