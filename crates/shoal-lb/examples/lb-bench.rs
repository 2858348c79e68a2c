//! `lb-bench`: a Shoal balancer in front of fixed backends, for `bench/lb/run.sh`.
//!
//! ```text
//! cargo run --release -p shoal-lb --example lb-bench -- \
//!     --mode http|https|tcp --listen 127.0.0.1:9301 [--threads N] \
//!     [--cert FILE --key FILE] BACKEND...
//! ```
//!
//! Applies one listener and one pool (HTTP probe `GET /health` every second, as a real
//! deployment would have) and serves until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use shoal_lb::{
    Balancer, BalancerConfig, HttpSettings, Listener, ListenerKind, Member, Pool, Probe,
    TcpSettings, TlsCertificate, TlsFiles,
};
use tokio_util::sync::CancellationToken;

struct Args {
    mode: String,
    listen: SocketAddr,
    threads: usize,
    /// Certificate chain and key (PEM) for `--mode https`.
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    backends: Vec<SocketAddr>,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        mode: "http".into(),
        listen: "127.0.0.1:9301".parse()?,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cert: None,
        key: None,
        backends: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--mode" => args.mode = value("--mode")?,
            "--listen" => args.listen = value("--listen")?.parse()?,
            "--threads" => args.threads = value("--threads")?.parse()?,
            "--cert" => args.cert = Some(value("--cert")?.into()),
            "--key" => args.key = Some(value("--key")?.into()),
            "-h" | "--help" => {
                println!(
                    "lb-bench --mode http|https|tcp --listen ADDR [--threads N] [--cert F --key F] BACKEND..."
                );
                std::process::exit(0);
            }
            backend => args.backends.push(
                backend
                    .parse()
                    .with_context(|| format!("{backend} is not an address"))?,
            ),
        }
    }
    if args.backends.is_empty() {
        bail!("name at least one backend address");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    // Logs only when asked (`SHOAL_LOG=debug`): they cost time under load.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    // The balancer's own worker threads carry the connections (as in `shoal serve`);
    // this thread only applies the config and probes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), args.threads.max(1))?;
    let kind = match args.mode.as_str() {
        "http" => ListenerKind::Http(HttpSettings::new("backends")),
        "https" => ListenerKind::Https {
            http: HttpSettings::new("backends"),
            tls: TlsCertificate::Files(TlsFiles {
                cert_file: args.cert.clone().context("--mode https needs --cert")?,
                key_file: args.key.clone().context("--mode https needs --key")?,
            }),
        },
        "tcp" => ListenerKind::Tcp(TcpSettings::new("backends")),
        other => bail!("--mode is http, https or tcp, not {other}"),
    };
    lb.apply(BalancerConfig {
        listeners: vec![Listener {
            name: "bench".into(),
            bind: args.listen,
            kind,
        }],
        pools: vec![Pool {
            name: "backends".into(),
            members: args
                .backends
                .iter()
                .enumerate()
                .map(|(i, addr)| Member::new(i.to_string(), *addr))
                .collect(),
            probe: Some(Probe {
                interval: Duration::from_secs(1),
                ..Probe::http("/health")
            }),
        }],
    })
    .await?;
    println!(
        "lb-bench: {} on {} -> {:?} ({} threads)",
        args.mode, args.listen, args.backends, args.threads
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    for s in lb.stats() {
        println!(
            "lb-bench: pool {}: {} requests, {} 5xx, {} bytes in, {} bytes out",
            s.pool, s.requests, s.responses_5xx, s.bytes_in, s.bytes_out
        );
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), lb.closed()).await;
    Ok(())
}
