//! `shoal serve` / `shoal server` / `shoal agent` / `shoal balancer`: flags, `SHOAL_*`
//! variables and the config file turned into the library's configs (see `shoal::run`),
//! checked before any port is bound or any file opened.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use shoal::drivers::DriverSettings;
use shoal::{CoreConfig, Listeners, LocalAgent, ServerConfig};
use shoal_agent::driver::process::{NetworkMode, Subnet};
use shoal_agent::driver::qemu::AccelMode;
use shoal_agent::AgentConfig;
use shoal_control::SystemClock;
use shoal_store::{RedbStore, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, FileConfig};
use crate::tls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    All,
    ServerOnly,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML config file (keys: listen, data-dir, log-format, keep-instances, max-capacity,
    /// tls-listen, tls-cert, tls-key, identity-header, host-not-ready-after,
    /// host-down-after, bundle-collect-every, bundle-unreferenced-after, bundle-quota-mb,
    /// store, store-ca, store-cert, store-key, name, advertise-url;
    /// [agent] host-name, zone, fault-domain, network, stop-grace-seconds,
    /// boot-timeout-seconds, start-concurrency, drain-timeout-seconds, accel,
    /// heartbeat-interval). Flags and SHOAL_* variables override it.
    #[arg(long, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port of the API [default: 127.0.0.1:7070].
    #[arg(long, env = "SHOAL_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Where state, bundles and instance disks live [default: ./.shoal].
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log lines as human-readable text or JSON [default: text].
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,
    /// Leave instances running when shoal stops cleanly (they are adopted on the next start).
    #[arg(long, env = "SHOAL_KEEP_INSTANCES")]
    pub keep_instances: bool,
    /// Largest capacity a scale set may ask for [default: 1000, as Azure].
    #[arg(long, env = "SHOAL_MAX_CAPACITY", value_name = "N")]
    pub max_capacity: Option<i64>,
    /// Where public IP addresses (`az network public-ip create`, `az vmss create`'s load
    /// balancer) get their address from: an IPv4 range this machine can listen on
    /// [default: 127.0.1.0/24].
    #[arg(long, env = "SHOAL_PUBLIC_IP_RANGE", value_name = "CIDR")]
    pub public_ip_range: Option<String>,
    /// Also serve the API over https on this address (e.g. 127.0.0.1:7443). Without
    /// --tls-cert/--tls-key a self-signed certificate for localhost, 127.0.0.1 and ::1 is
    /// made once and kept in DATA_DIR/tls/{cert,key}.pem (tell clients to trust cert.pem).
    #[arg(long, env = "SHOAL_TLS_LISTEN", value_name = "ADDR:PORT")]
    pub tls_listen: Option<String>,
    /// PEM certificate chain for the https listener.
    #[arg(
        long,
        env = "SHOAL_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "SHOAL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The secret managed-identity token requests must carry (clients set IDENTITY_HEADER
    /// to it and IDENTITY_ENDPOINT to http://ADDR:PORT/msi/token) [default: a random
    /// secret made once and kept in DATA_DIR/identity-header].
    #[arg(
        long,
        env = "SHOAL_IDENTITY_HEADER",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub identity_header: Option<String>,
    /// Where the state lives: the embedded store in the data directory (default), or
    /// an etcd cluster, `etcd://HOST:PORT[,HOST:PORT…]`, shared by several servers (one
    /// of them, elected, runs the controllers).
    #[arg(long, env = "SHOAL_STORE", value_name = "etcd://HOST:PORT,…")]
    pub store: Option<String>,
    /// PEM CA certificate to verify etcd's members with (makes the endpoints https).
    #[arg(long, env = "SHOAL_STORE_CA", value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// PEM client certificate for etcd.
    #[arg(
        long,
        env = "SHOAL_STORE_CERT",
        value_name = "FILE",
        requires = "store_key"
    )]
    pub store_cert: Option<PathBuf>,
    /// PEM private key of --store-cert.
    #[arg(
        long,
        env = "SHOAL_STORE_KEY",
        value_name = "FILE",
        requires = "store_cert"
    )]
    pub store_key: Option<PathBuf>,
    /// This server's name among the servers of an install [default: the host name].
    #[arg(long, env = "SHOAL_SERVER_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// The API URL other servers and clients reach this server at [default:
    /// http://LISTEN].
    #[arg(long, env = "SHOAL_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Seconds without a heartbeat before a host is NotReady (no new instances) [default: 10].
    #[arg(long, env = "SHOAL_HOST_NOT_READY_AFTER", value_name = "SECS")]
    pub host_not_ready_after: Option<u64>,
    /// Seconds without a heartbeat before a host is Down: its instances are placed again
    /// on other hosts [default: 30].
    #[arg(long, env = "SHOAL_HOST_DOWN_AFTER", value_name = "SECS")]
    pub host_down_after: Option<u64>,
    /// Seconds between collections of unreferenced bundles [default: 600].
    #[arg(long, env = "SHOAL_BUNDLE_COLLECT_EVERY", value_name = "SECS")]
    pub bundle_collect_every: Option<u64>,
    /// Age in seconds after which a bundle no image version, set or instance names is
    /// deleted [default: 3600].
    #[arg(long, env = "SHOAL_BUNDLE_UNREFERENCED_AFTER", value_name = "SECS")]
    pub bundle_unreferenced_after: Option<u64>,
    /// Most MiB of bundles kept in all; an upload past it is refused [default: 20480].
    #[arg(long, env = "SHOAL_BUNDLE_QUOTA_MB", value_name = "MIB")]
    pub bundle_quota_mb: Option<u64>,
    #[command(flatten)]
    pub agent: AgentFlags,
}

/// Lease TTL of the leader election (a dead leader is replaced within about twice it).
const LEADER_TTL: Duration = Duration::from_secs(5);

/// The store `--store` names, connected; etcd's TLS files read. An unreachable etcd is
/// an error naming its endpoints.
async fn etcd_store(args: &ServeArgs, spec: &str) -> anyhow::Result<shoal_store::etcd::EtcdStore> {
    crate::setup::connect_etcd(
        spec,
        args.store_ca.as_ref(),
        args.store_cert.as_ref(),
        args.store_key.as_ref(),
    )
    .await
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "server".into())
}

#[derive(Debug, Clone, Args)]
pub struct AgentFlags {
    /// This host's name among agents [default: local].
    #[arg(long, env = "SHOAL_HOST_NAME", value_name = "NAME")]
    pub host_name: Option<String>,
    /// The availability zone this host is in (1, 2 or 3).
    #[arg(long, env = "SHOAL_ZONE", value_name = "ZONE")]
    pub zone: Option<String>,
    /// This host's fault domain.
    #[arg(long, env = "SHOAL_FAULT_DOMAIN", value_name = "N")]
    pub fault_domain: Option<u32>,
    /// Instance networking: own network namespace per instance (needs root), a distinct
    /// host port per instance, or auto (namespaces when root and they work) [default: auto].
    #[arg(long, env = "SHOAL_NETWORK", value_name = "auto|namespaces|host-ports")]
    pub network: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when stopping an instance [default: 10].
    #[arg(long, env = "SHOAL_STOP_GRACE_SECONDS", value_name = "S")]
    pub stop_grace_seconds: Option<u64>,
    /// Seconds an instance may take to listen on its port [default: 60].
    #[arg(long, env = "SHOAL_BOOT_TIMEOUT_SECONDS", value_name = "S")]
    pub boot_timeout_seconds: Option<u64>,
    /// Instances provisioning or starting at once [default: 32].
    #[arg(long, env = "SHOAL_START_CONCURRENCY", value_name = "N")]
    pub start_concurrency: Option<usize>,
    /// Seconds in-flight requests may take to finish once an instance leaves its load
    /// balancer pools, before it is stopped [default: 30].
    #[arg(long, env = "SHOAL_DRAIN_TIMEOUT_SECONDS", value_name = "S")]
    pub drain_timeout_seconds: Option<u64>,
    /// Accelerator of VM instances: kvm, tcg (QEMU's emulator), or auto (KVM when
    /// /dev/kvm exists and a probe boot works) [default: auto].
    #[arg(long, env = "SHOAL_ACCEL", value_name = "auto|kvm|tcg")]
    pub accel: Option<String>,
    /// Seconds between the agent's heartbeats (keep well under the server's
    /// --host-not-ready-after) [default: 2].
    #[arg(long, env = "SHOAL_HEARTBEAT_INTERVAL", value_name = "SECS")]
    pub heartbeat_interval: Option<u64>,
    /// The IPv4 address other hosts reach this one at: the agent's endpoint listens
    /// there, and other hosts route this host's instance subnet through it. Give it on
    /// every host of a multi-host cluster.
    #[arg(long, env = "SHOAL_ADDRESS", value_name = "IP")]
    pub address: Option<String>,
    /// The range this host's namespaced instances get addresses from; on several
    /// hosts, each its own (10.200.1.0/24, 10.200.2.0/24, …) [default: 10.200.0.0/16].
    #[arg(long, env = "SHOAL_INSTANCE_SUBNET", value_name = "CIDR")]
    pub instance_subnet: Option<String>,
    /// Namespaced instances reach beyond Shoal's hosts through this host's address
    /// (masquerading, with nftables) [default: true].
    #[arg(long, env = "SHOAL_OUTBOUND_NAT", value_name = "true|false")]
    pub outbound_nat: Option<bool>,
    /// Network namespaces kept ready for new instances (namespace mode): a burst of
    /// that many starts without waiting ~1–2 ms per namespace; each costs ~190 KB of
    /// kernel memory while it waits [default: 0, none].
    #[arg(long, env = "SHOAL_WARM_NAMESPACES", value_name = "N")]
    pub warm_namespaces: Option<usize>,
    /// vCPUs of instance sizes this host takes [default: 16× its cores].
    #[arg(long, env = "SHOAL_CAPACITY_VCPUS", value_name = "N")]
    pub capacity_vcpus: Option<u32>,
    /// Memory (MB) of instance sizes this host takes [default: 4× its memory].
    #[arg(long, env = "SHOAL_CAPACITY_MEMORY_MB", value_name = "MB")]
    pub capacity_memory_mb: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The servers to follow, in order (`http://a:7070,http://b:7070,…`): when the one in
    /// use cannot be reached the next is used [default: --endpoint].
    #[arg(long, alias = "server", env = "SHOAL_SERVERS", value_name = "URL,URL…")]
    pub servers: Option<String>,
    /// TOML config file (see `shoal serve --help`).
    #[arg(long, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where bundles and instance disks live [default: ./.shoal-agent].
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the agent's own endpoint (metadata, logs) [default: 127.0.0.1:0].
    #[arg(long, env = "SHOAL_AGENT_LISTEN", value_name = "ADDR:PORT")]
    pub agent_listen: Option<String>,
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,
    #[arg(long, env = "SHOAL_KEEP_INSTANCES")]
    pub keep_instances: bool,
    /// A join token from the server (`shoal host join-token create`), traded on first start
    /// for this host's credential, which is then kept in the data directory.
    #[arg(long, env = "SHOAL_JOIN_TOKEN", value_name = "TOKEN")]
    pub join_token: Option<String>,
    #[command(flatten)]
    pub agent: AgentFlags,
}

/// Everything settled and checked before anything is bound or opened.
struct Settings {
    listen: SocketAddr,
    data_dir: PathBuf,
    keep_instances: bool,
    max_capacity: i64,
    public_ip_range: shoal_model::cidr::Cidr,
    tls: Option<TlsSettings>,
    identity_header: Option<String>,
    host_timeouts: shoal_control::hosts::HostTimeouts,
    bundles: shoal_api::bundle_gc::BundlePolicy,
    agent: AgentSettings,
}

struct TlsSettings {
    listen: SocketAddr,
    /// Certificate and key files; `None` means the generated self-signed pair.
    files: Option<(PathBuf, PathBuf)>,
}

fn tls_settings(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Option<TlsSettings>> {
    let listen = args.tls_listen.clone().or(file.tls_listen.clone());
    let cert = args.tls_cert.clone().or(file.tls_cert.clone());
    let key = args.tls_key.clone().or(file.tls_key.clone());
    let files = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!(
            "tls-cert and tls-key go together: give both, or neither for a self-signed certificate"
        ),
    };
    match listen {
        Some(l) => Ok(Some(TlsSettings {
            listen: config::parse_listen(&l, "tls-listen")?,
            files,
        })),
        None if files.is_some() => {
            bail!("tls-cert and tls-key need tls-listen (the address of the https listener)")
        }
        None => Ok(None),
    }
}

struct AgentSettings {
    host_name: String,
    zone: Option<String>,
    fault_domain: Option<u32>,
    network: NetworkMode,
    stop_grace: Duration,
    boot_timeout: Duration,
    start_concurrency: usize,
    drain_timeout: Duration,
    accel: AccelMode,
    heartbeat_interval: Duration,
    address: Option<Ipv4Addr>,
    instance_subnet: Option<Subnet>,
    outbound_nat: bool,
    warm_namespaces: usize,
    capacity_vcpus: Option<u32>,
    capacity_memory_mb: Option<u64>,
}

impl AgentSettings {
    fn drivers(&self) -> DriverSettings {
        DriverSettings {
            network: self.network,
            subnet: self.instance_subnet,
            host_name: self.host_name.clone(),
            outbound_nat: self.outbound_nat,
            warm_namespaces: self.warm_namespaces,
            address: self.address,
            accel: self.accel,
        }
    }

    /// Where the agent's endpoint listens unless told: this host's address when it has
    /// one (other hosts' servers fetch logs there), loopback otherwise.
    fn default_listen(&self) -> SocketAddr {
        SocketAddr::from((self.address.unwrap_or(Ipv4Addr::LOCALHOST), 0))
    }
}

fn agent_settings(flags: &AgentFlags, file: &FileConfig) -> anyhow::Result<AgentSettings> {
    let f = &file.agent;
    let network = match flags
        .network
        .clone()
        .or(f.network.clone())
        .as_deref()
        .unwrap_or("auto")
    {
        "auto" => NetworkMode::Auto,
        "namespaces" => NetworkMode::Namespaces,
        "host-ports" => NetworkMode::HostPorts,
        other => bail!("network '{other}' is not one of auto, namespaces, host-ports"),
    };
    let zone = flags.zone.clone().or(f.zone.clone());
    if let Some(z) = &zone {
        if !["1", "2", "3"].contains(&z.as_str()) {
            bail!("zone '{z}' is not one of 1, 2, 3");
        }
    }
    let host_name = flags
        .host_name
        .clone()
        .or(f.host_name.clone())
        .unwrap_or_else(|| "local".into());
    if host_name.is_empty()
        || !host_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        bail!("host name '{host_name}' may only use letters, digits, '-', '_' and '.'");
    }
    let start_concurrency = flags
        .start_concurrency
        .or(f.start_concurrency)
        .unwrap_or(32);
    if start_concurrency == 0 {
        bail!("start-concurrency must be at least 1");
    }
    let accel: AccelMode = flags
        .accel
        .clone()
        .or(f.accel.clone())
        .as_deref()
        .unwrap_or("auto")
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    Ok(AgentSettings {
        host_name,
        zone,
        fault_domain: flags.fault_domain.or(f.fault_domain),
        network,
        stop_grace: config::secs(
            flags
                .stop_grace_seconds
                .or(f.stop_grace_seconds)
                .unwrap_or(10),
            "stop-grace-seconds",
            3600,
        )?,
        boot_timeout: config::secs(
            flags
                .boot_timeout_seconds
                .or(f.boot_timeout_seconds)
                .unwrap_or(60),
            "boot-timeout-seconds",
            3600,
        )?,
        start_concurrency,
        drain_timeout: config::secs(
            flags
                .drain_timeout_seconds
                .or(f.drain_timeout_seconds)
                .unwrap_or(30),
            "drain-timeout-seconds",
            3600,
        )?,
        accel,
        heartbeat_interval: match flags.heartbeat_interval.or(f.heartbeat_interval) {
            Some(0) => bail!("heartbeat-interval must be at least 1 second"),
            Some(v) => config::secs(v, "heartbeat-interval", 600)?,
            None => shoal_control::hosts::HostTimeouts::default().heartbeat_interval,
        },
        address: match flags.address.clone().or(f.address.clone()) {
            Some(a) => Some(a.parse().map_err(|_| {
                anyhow::anyhow!("address '{a}' is not an IPv4 address such as 192.168.1.12")
            })?),
            None => None,
        },
        instance_subnet: match flags.instance_subnet.clone().or(f.instance_subnet.clone()) {
            Some(s) => Some(
                s.parse()
                    .map_err(|e: String| anyhow::anyhow!("instance-subnet: {e}"))?,
            ),
            None => None,
        },
        outbound_nat: flags.outbound_nat.or(f.outbound_nat).unwrap_or(true),
        warm_namespaces: match flags.warm_namespaces.or(f.warm_namespaces) {
            Some(n) if n > 65_536 => bail!("warm-namespaces must be at most 65536 (each holds ~190 KB of kernel memory); give the burst you expect, e.g. 1000"),
            n => n.unwrap_or(0),
        },
        capacity_vcpus: match flags.capacity_vcpus.or(f.capacity_vcpus) {
            Some(0) => bail!("capacity-vcpus must be at least 1"),
            c => c,
        },
        capacity_memory_mb: match flags.capacity_memory_mb.or(f.capacity_memory_mb) {
            Some(m) if m < 128 => bail!("capacity-memory-mb must be at least 128"),
            c => c,
        },
    })
}

fn settings(args: &ServeArgs) -> anyhow::Result<(Settings, Option<String>)> {
    let file = config::load_file(args.config.as_ref())?;
    let listen = args
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:7070".into());
    let listen = config::parse_listen(&listen, "listen")?;
    let max_capacity = args.max_capacity.or(file.max_capacity).unwrap_or(1000);
    if !(0..=1000).contains(&max_capacity) {
        bail!("max-capacity must be between 0 and 1000, not {max_capacity}");
    }
    let public_ip_range = match args
        .public_ip_range
        .clone()
        .or(file.public_ip_range.clone())
    {
        None => shoal_api::vnets::default_public_ip_range(),
        Some(r) => r
            .parse::<shoal_model::cidr::Cidr>()
            .map_err(|e| anyhow::anyhow!("public-ip-range: {e}"))?,
    };
    if public_ip_range.prefix_len > 30 {
        bail!(
            "public-ip-range {public_ip_range} is too small: give at least a /30 (two addresses)"
        );
    }
    let log_format = args.log_format.clone().or(file.log_format.clone());
    Ok((
        Settings {
            listen,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from(".shoal")),
            keep_instances: args.keep_instances || file.keep_instances.unwrap_or(false),
            max_capacity,
            public_ip_range,
            tls: tls_settings(args, &file)?,
            identity_header: args
                .identity_header
                .clone()
                .or(file.identity_header.clone())
                .filter(|h| !h.is_empty()),
            host_timeouts: config::host_timeouts(
                args.host_not_ready_after.or(file.host_not_ready_after),
                args.host_down_after.or(file.host_down_after),
            )?,
            bundles: config::bundle_policy(
                args.bundle_collect_every.or(file.bundle_collect_every),
                args.bundle_unreferenced_after
                    .or(file.bundle_unreferenced_after),
                args.bundle_quota_mb.or(file.bundle_quota_mb),
            )?,
            agent: agent_settings(&args.agent, &file)?,
        },
        log_format,
    ))
}

pub fn init_logging(format: Option<&str>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a terminal: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format.unwrap_or("text") {
        "text" => builder.try_init().map_err(|e| anyhow::anyhow!("{e}")),
        "json" => builder
            .json()
            .try_init()
            .map_err(|e| anyhow::anyhow!("{e}")),
        other => bail!("log-format '{other}' is not one of text, json"),
    }
}

fn shutdown_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}

pub async fn serve(mut args: ServeArgs, mode: Mode) -> anyhow::Result<()> {
    let (s, log_format) = settings(&args)?;
    // The store and cluster keys of the file, where no flag or variable gave them.
    let file = config::load_file(args.config.as_ref())?;
    args.store = args.store.or(file.store);
    args.store_ca = args.store_ca.or(file.store_ca);
    args.store_cert = args.store_cert.or(file.store_cert);
    args.store_key = args.store_key.or(file.store_key);
    args.name = args.name.or(file.name);
    args.advertise_url = args.advertise_url.or(file.advertise_url);
    init_logging(log_format.as_deref())?;
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create the data directory {}", s.data_dir.display()))?;
    crate::setup::certificate_dir(&s.data_dir)?;
    crate::setup::raise_open_file_limit();
    let etcd = match args.store.as_deref().filter(|s| !s.is_empty()) {
        Some(spec) => Some(etcd_store(&args, spec).await?),
        None => None,
    };
    let redb_path = s.data_dir.join("state.redb");
    let store: Arc<dyn Store> = match &etcd {
        Some(etcd) => Arc::new(etcd.clone()),
        None => Arc::new(RedbStore::open(&redb_path).context("cannot open the state store")?),
    };
    let identity_header = identity_secret(&s)?;
    let mut authority_url = None;
    let mut certificate_sha256 = None;
    let https = match &s.tls {
        Some(t) => {
            if etcd.is_some() && t.files.is_none() {
                shared_self_signed(&store, &s.data_dir, t.listen).await?;
            }
            let (config, pin) = tls_server_config(&s.data_dir, t)?;
            tracing::info!(sha256 = %pin, "https certificate (join tokens carry this fingerprint; agents and balancers pin it)");
            certificate_sha256 = Some(pin);
            let tcp = tokio::net::TcpListener::bind(t.listen)
                .await
                .with_context(|| format!("cannot listen on {} (tls-listen)", t.listen))?;
            authority_url = Some(format!(
                "https://{}",
                shoal::connect_addr(tcp.local_addr().unwrap_or(t.listen))
            ));
            Some((tcp, config))
        }
        None => None,
    };
    let http = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another shoal running? use --listen)",
                s.listen
            )
        })?;
    let agent = match mode {
        Mode::All => {
            let dir = s.data_dir.join("agent");
            let driver = shoal::drivers::local(&dir, &s.agent.drivers())?;
            Some(LocalAgent {
                config: agent_config(&s.agent, dir, s.keep_instances),
                driver,
            })
        }
        Mode::ServerOnly => None,
    };
    let shutdown = CancellationToken::new();
    let name = args.name.clone().unwrap_or_else(host_name);
    let url = args.advertise_url.clone().unwrap_or_else(|| {
        format!(
            "http://{}",
            shoal::connect_addr(http.local_addr().unwrap_or(s.listen))
        )
    });
    let leadership = match &etcd {
        Some(etcd) => shoal::Leadership::Elected(Arc::new(shoal_store::etcd::Elector::new(
            etcd.clone(),
            shoal_store::etcd::Member {
                name: name.clone(),
                url: url.clone(),
            },
            LEADER_TTL,
            shutdown.clone(),
        ))),
        None => shoal::Leadership::Always,
    };
    let config = ServerConfig {
        leadership,
        name,
        url: Some(url),
        store_label: format!("redb:{}", redb_path.display()),
        core: CoreConfig {
            store,
            clock: Arc::new(SystemClock),
            blob_dir: s.data_dir.join("blobs"),
            certificate_dir: s.data_dir.join("certificates"),
            host_timeouts: s.host_timeouts,
            bundles: s.bundles,
            max_capacity: s.max_capacity,
            public_ip_range: s.public_ip_range,
            identity_header: Some(identity_header),
            page_size: 200,
            authenticate: true,
            authority_url,
            tls_certificate_sha256: certificate_sha256,
        },
        data_dir: Some(s.data_dir.clone()),
        balancer: (mode == Mode::All).then(|| "local".to_string()),
        agent,
    };
    shutdown_on_signal(shutdown.clone());
    Ok(shoal::run(config, Listeners { http, https }, shutdown).await?)
}

/// The agent's settings (the caller hands the agent a client of the server).
fn agent_config(a: &AgentSettings, dir: PathBuf, keep_instances: bool) -> AgentConfig {
    AgentConfig {
        host: a.host_name.clone(),
        zone: a.zone.clone(),
        fault_domain: a.fault_domain,
        dir,
        listen: a.default_listen(),
        stop_grace: a.stop_grace,
        boot_timeout: a.boot_timeout,
        start_concurrency: a.start_concurrency,
        keep_instances,
        drain_timeout: a.drain_timeout,
        clock: Arc::new(SystemClock),
        heartbeat_interval: a.heartbeat_interval,
        address: a.address,
        capacity_vcpus: a.capacity_vcpus,
        capacity_memory_mb: a.capacity_memory_mb,
    }
}

/// The secret of the managed-identity token endpoint: the configured one, else the one
/// kept in the data directory, else a new one written there (readable by its owner only).
fn identity_secret(s: &Settings) -> anyhow::Result<String> {
    if let Some(h) = &s.identity_header {
        return Ok(h.clone());
    }
    let path = s.data_dir.join("identity-header");
    match std::fs::read_to_string(&path) {
        Ok(h) if !h.trim().is_empty() => return Ok(h.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let secret = shoal_api::identity::new_secret();
    write_private(&path, secret.as_bytes())?;
    Ok(secret)
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The store key of the self-signed https pair the servers of an install share.
const SHARED_TLS_KEY: &str = "cluster/tls";

/// Servers on etcd share one self-signed https certificate (made by the first, kept in the
/// store, which only servers read), so the fingerprint a join token pins holds on every
/// server and agents and balancers can move between them. It is written to
/// DATA_DIR/tls, where [`tls_server_config`] reads it.
async fn shared_self_signed(
    store: &Arc<dyn Store>,
    data_dir: &std::path::Path,
    listen: std::net::SocketAddr,
) -> anyhow::Result<()> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Pair {
        cert_pem: String,
        key_pem: String,
    }
    let pair = loop {
        if let Some(found) = shoal_control::kv::get_json::<Pair>(&**store, SHARED_TLS_KEY)
            .await
            .context("cannot read the shared https certificate from the store")?
        {
            break found.value;
        }
        let made = tls::self_signed(listen)?;
        let pair = Pair {
            cert_pem: made.cert_pem,
            key_pem: made.key_pem,
        };
        let put = shoal_control::kv::put_op(SHARED_TLS_KEY, &pair, shoal_store::Expect::Absent);
        match store.txn(vec![put]).await {
            Ok(_) => {
                tracing::info!("made the https certificate the servers of this install share");
                break pair;
            }
            // Another server made it first: use theirs.
            Err(shoal_store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e).context("cannot keep the shared https certificate"),
        }
    };
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_private(&dir.join("key.pem"), pair.key_pem.as_bytes())?;
    std::fs::write(dir.join("cert.pem"), pair.cert_pem.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join("cert.pem").display()))?;
    Ok(())
}

/// The https listener's certificate: the configured files, else a self-signed pair kept in
/// DATA_DIR/tls (made on first use).
fn tls_server_config(
    data_dir: &std::path::Path,
    t: &TlsSettings,
) -> anyhow::Result<(Arc<tokio_rustls::rustls::ServerConfig>, String)> {
    let (cert, key) = match &t.files {
        Some((c, k)) => (c.clone(), k.clone()),
        None => {
            let dir = data_dir.join("tls");
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !cert.exists() || !key.exists() {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let pair = tls::self_signed(t.listen)?;
                write_private(&key, pair.key_pem.as_bytes())?;
                std::fs::write(&cert, pair.cert_pem.as_bytes())
                    .with_context(|| format!("cannot write {}", cert.display()))?;
                tracing::info!(cert = %cert.display(), "made a self-signed certificate for the https listener");
            }
            (cert, key)
        }
    };
    let pin = tls::certificate_sha256(&cert)?;
    Ok((tls::server_config(&cert, &key)?, pin))
}

pub async fn agent(args: AgentArgs, client: shoal_cli::ClientOptions) -> anyhow::Result<()> {
    let file = config::load_file(args.config.as_ref())?;
    let a = agent_settings(&args.agent, &file)?;
    let listen = match &args.agent_listen {
        Some(l) => config::parse_listen(l, "agent-listen")?,
        None => a.default_listen(),
    };
    init_logging(args.log_format.as_deref().or(file.log_format.as_deref()))?;
    let dir = args
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(".shoal-agent"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let driver = shoal::drivers::local(&dir, &a.drivers())?;
    let shutdown = CancellationToken::new();
    shutdown_on_signal(shutdown.clone());
    let mut cfg = agent_config(
        &a,
        dir,
        args.keep_instances || file.keep_instances.unwrap_or(false),
    );
    cfg.listen = listen;
    let servers = args
        .servers
        .clone()
        .unwrap_or_else(|| client.endpoint.to_string());
    let server = crate::join::connect(
        &servers,
        &cfg.dir,
        "agent",
        &cfg.host,
        args.join_token.as_deref(),
    )
    .await?;
    shoal_agent::run(cfg, driver, server, shutdown)
        .await
        .context("the agent failed")
}

#[derive(Debug, Clone, Args)]
pub struct BalancerArgs {
    /// The servers to follow, in order (`http://a:7070,http://b:7070,…`): when the one in
    /// use cannot be reached the next is used [default: --endpoint].
    #[arg(long, alias = "server", env = "SHOAL_SERVERS", value_name = "URL,URL…")]
    pub servers: Option<String>,
    /// This balancer's name among balancers [default: the host name].
    #[arg(long, env = "SHOAL_BALANCER_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// A join token from the server (`shoal host join-token create --role balancer`),
    /// traded on first start for this balancer's credential (kept in --data-dir).
    #[arg(long, env = "SHOAL_JOIN_TOKEN", value_name = "TOKEN")]
    pub join_token: Option<String>,
    /// Where the balancer keeps its credential [default: ./.shoal-balancer].
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,
}

/// `shoal balancer`: a data plane on its own, following a server.
pub async fn balancer(args: BalancerArgs, client: shoal_cli::ClientOptions) -> anyhow::Result<()> {
    init_logging(args.log_format.as_deref())?;
    let name = args.name.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "balancer".into())
    });
    let shutdown = CancellationToken::new();
    shutdown_on_signal(shutdown.clone());
    let tracker = TaskTracker::new();
    let endpoint = args
        .servers
        .clone()
        .unwrap_or_else(|| client.endpoint.as_str().trim_end_matches('/').to_string());
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".shoal-balancer"));
    let client = crate::join::connect(
        &endpoint,
        &dir,
        "balancer",
        &name,
        args.join_token.as_deref(),
    )
    .await?;
    tracing::info!(%name, server = %endpoint, "balancer following the server");
    shoal::start_balancer(client, &name, &tracker, &shutdown);
    shutdown.cancelled().await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}
