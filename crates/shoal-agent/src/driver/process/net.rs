//! Instance networking: who gets which address and port, and how it is reached.
//!
//! Two modes (chosen by [`NetworkMode`]):
//! - **Host ports**: instances share the host's network; each gets a distinct free TCP
//!   port from a range (checked free by binding it) and is reached at `127.0.0.1:port`.
//!   `PORT` is that port: the image's port is then only nominal.
//! - **Namespaces** (root): each instance gets its own network namespace and a private
//!   address from a subnet (default `10.200.0.0/16`), reached at `address:image port`
//!   over a routed veth pair (see `netns.rs`). The subnet's first address is the
//!   gateway, assigned to the host's `lo`, where the agent also serves metadata. The
//!   whole subnet gets an `unreachable` route, so traffic for a freed address fails on
//!   the host instead of leaving it.
//!
//! Allocation is in memory, rebuilt from state files on recovery; in namespace mode the
//! kernel names (`<netns_dir>/shoal-<hex address>`, veth `sh<hex address>`) double as a
//! host-wide lock, so two agents with different roots never hand out the same address.
//! Which of those names this agent won is journalled ([`Claims`]), so a namespace made
//! just before a `kill -9` is removed at the next start instead of blocking its address.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use shoal_model::cidr::Cidr;
use shoal_model::records::HostPeer;

use super::claims::{Claim, Claims};
use super::nat;
use super::netlink::{self, Netlink, Route, RT_SCOPE_UNIVERSE};
use super::netns::{self, NetnsError, NetnsPlan};
use super::state::NetAlloc;
use super::warm::Warm;
use crate::driver::slot::error_chain;

/// How instances are networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Namespaces when running as root and a probe succeeds, host ports otherwise.
    #[default]
    Auto,
    HostPorts,
    Namespaces,
}

/// An IPv4 subnet for namespaced instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
}

impl Subnet {
    pub const DEFAULT: Subnet = Subnet {
        base: Ipv4Addr::new(10, 200, 0, 0),
        prefix_len: 16,
    };

    fn network(&self) -> u32 {
        let mask = if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len.min(32)))
        };
        u32::from(self.base) & mask
    }

    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len.min(32)))
    }

    /// The first usable address: the gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network().wrapping_add(1))
    }

    /// Instance addresses: everything after the gateway, before the broadcast address.
    pub fn hosts(&self) -> u32 {
        self.size().saturating_sub(3).min(u64::from(u32::MAX)) as u32
    }

    /// The `i`-th instance address, `i < hosts()`.
    pub fn host(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network().wrapping_add(2).wrapping_add(i))
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let off = u32::from(a).wrapping_sub(self.network());
        u64::from(off) >= 2 && u64::from(off) < self.size() - 1
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let c: Cidr = s.parse()?;
        if !(8..=30).contains(&c.prefix_len) {
            return Err(format!(
                "'{s}' is too {} for instances: use a /8 to /30 range such as 10.200.1.0/24",
                if c.prefix_len < 8 { "wide" } else { "narrow" }
            ));
        }
        Ok(Subnet {
            base: c.network,
            prefix_len: c.prefix_len,
        })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network()), self.prefix_len)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("No free address or port left")]
    Exhausted,
    #[error("Network namespaces are not usable here")]
    Namespaces(#[source] NetnsError),
    #[error("Cannot prepare the instance subnet on the host ({what})")]
    Prepare {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("Cannot remove the network of an instance")]
    Teardown(#[source] io::Error),
}

/// Where an instance is reached and what it is told about itself.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Reachable from the host.
    pub addr: SocketAddr,
    /// Value of `PORT`: the port the workload must listen on.
    pub listen_port: u16,
    /// Value of `SHOAL_PRIVATE_IP`.
    pub private_ip: Ipv4Addr,
    /// Address replacing the host of `SHOAL_METADATA_ENDPOINT`, if any.
    pub metadata_host: Option<Ipv4Addr>,
    /// The namespace the workload must join.
    pub netns: Option<PathBuf>,
}

/// Allocates and sets up instance networks in one mode.
#[derive(Debug)]
pub enum Network {
    HostPorts(PortPool),
    Namespaces(NsPool),
}

impl Network {
    /// Sets up the requested mode. `Auto` probes namespaces when root and falls back to
    /// host ports (with a warning) if that fails; explicit `Namespaces` fails instead.
    pub fn setup(
        mode: NetworkMode,
        port_range: RangeInclusive<u16>,
        subnet: Subnet,
        netns_dir: PathBuf,
        outbound_nat: bool,
        warm: Arc<Warm>,
        claims: Claims,
    ) -> Result<Network, NetError> {
        let ports = || {
            warn_if_ephemeral(&port_range);
            Network::HostPorts(PortPool::new(port_range.clone()))
        };
        match mode {
            NetworkMode::HostPorts => Ok(ports()),
            NetworkMode::Namespaces => Ok(Network::Namespaces(NsPool::prepare(
                subnet,
                netns_dir,
                outbound_nat,
                warm,
                claims,
            )?)),
            NetworkMode::Auto => {
                // SAFETY: geteuid has no arguments and cannot fail.
                if unsafe { libc::geteuid() } != 0 {
                    return Ok(ports());
                }
                match NsPool::prepare(subnet, netns_dir, outbound_nat, warm, claims) {
                    Ok(pool) => Ok(Network::Namespaces(pool)),
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "Network namespaces unavailable; instances share the host network, one port each");
                        Ok(ports())
                    }
                }
            }
        }
    }

    pub fn mode(&self) -> NetworkMode {
        match self {
            Network::HostPorts(_) => NetworkMode::HostPorts,
            Network::Namespaces(_) => NetworkMode::Namespaces,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Network::HostPorts(p) => {
                format!(
                    "host network, own port (127.0.0.1:{}-{})",
                    p.range.start(),
                    p.range.end()
                )
            }
            Network::Namespaces(p) => format!(
                "network namespace ({} via {})",
                p.subnet,
                p.subnet.gateway()
            ),
        }
    }

    pub fn metadata_addrs(&self) -> Vec<std::net::IpAddr> {
        match self {
            Network::HostPorts(_) => Vec::new(),
            Network::Namespaces(p) => vec![p.subnet.gateway().into()],
        }
    }

    /// The instances' range, when they get addresses of their own.
    pub fn subnet(&self) -> Option<Subnet> {
        match self {
            Network::HostPorts(_) => None,
            Network::Namespaces(p) => Some(p.subnet),
        }
    }

    /// Routes to other hosts' instances (namespace mode; host ports need none).
    pub fn route_peers(&self, peers: &[HostPeer]) -> Result<(), String> {
        match self {
            Network::HostPorts(_) => Ok(()),
            Network::Namespaces(p) => p.route_peers(peers),
        }
    }

    /// Marks an allocation found in a state file as used (recovery).
    pub fn adopt(&self, alloc: &NetAlloc) {
        match (self, alloc) {
            (Network::HostPorts(p), NetAlloc::HostPort { port }) => p.mark(*port),
            (Network::Namespaces(p), NetAlloc::Namespace { address, .. }) => p.mark(*address),
            _ => {}
        }
    }

    /// Whether `alloc` was made by this mode (otherwise it is released and replaced).
    pub fn fits(&self, alloc: &NetAlloc) -> bool {
        match (self, alloc) {
            (Network::HostPorts(_), NetAlloc::HostPort { .. }) => true,
            (
                Network::Namespaces(p),
                NetAlloc::Namespace {
                    address, gateway, ..
                },
            ) => p.subnet.contains(*address) && *gateway == p.subnet.gateway(),
            _ => false,
        }
    }

    /// A new allocation, with its namespace set up.
    pub fn allocate(&self) -> Result<NetAlloc, NetError> {
        match self {
            Network::HostPorts(p) => p.allocate().map(|port| NetAlloc::HostPort { port }),
            Network::Namespaces(p) => p.allocate(),
        }
    }

    /// A namespace made ahead of need ([`Warm`]), checked still whole; `None` when the
    /// pool is empty or off (host ports). Cheap: no blocking thread needed.
    pub fn take_warm(&self) -> Option<NetAlloc> {
        let Network::Namespaces(p) = self else {
            return None;
        };
        while let Some(alloc) = p.warm.take() {
            if let NetAlloc::Namespace {
                address,
                netns,
                host_if,
                ..
            } = &alloc
            {
                let path = p.netns_path(netns);
                if netns::exists(&path, host_if) {
                    return Some(alloc);
                }
                tracing::warn!(namespace = %path.display(), "A warm network namespace was removed behind the agent's back; skipping it");
                let _ = p.remove(*address, netns);
                p.unmark(*address);
            }
        }
        None
    }

    /// How many namespaces the warm pool holds now.
    pub fn warm_ready(&self) -> usize {
        match self {
            Network::Namespaces(p) => p.warm.ready(),
            Network::HostPorts(_) => 0,
        }
    }

    /// Starts the warm namespace pool, if configured: adopts the namespaces a previous
    /// run left ready (those no recovered instance claims), removes those an earlier run
    /// made but nothing records ([`NsPool::sweep`]) and starts refilling. Call after
    /// recovery, before any allocation.
    pub fn start_warm_and_sweep(&self) {
        let Network::Namespaces(p) = self else {
            return;
        };
        let target = p.warm.target();
        let (mut adopted, mut dropped) = (0, 0);
        for alloc in p.warm.listed() {
            let NetAlloc::Namespace {
                address,
                netns,
                host_if,
                ..
            } = &alloc
            else {
                continue;
            };
            let path = p.netns_path(netns);
            if !self.fits(&alloc) || p.is_used(*address) || !netns::exists(&path, host_if) {
                continue;
            }
            if adopted < target {
                p.mark(*address);
                p.warm.put(alloc);
                adopted += 1;
            } else {
                // More than the pool may hold now (its size was lowered).
                let _ = p.remove(*address, netns);
                dropped += 1;
            }
        }
        p.sweep();
        if target == 0 {
            p.warm.forget();
            if dropped > 0 {
                tracing::info!(
                    removed = dropped,
                    "Removed the warm network namespaces of an earlier run (the pool is off now)"
                );
            }
            return;
        }
        tracing::info!(
            target,
            adopted,
            removed = dropped,
            "Warm network namespace pool starting"
        );
        p.warm.start(Arc::clone(&p.addrs));
    }

    /// Makes sure an existing allocation is usable (its namespace exists), re-creating
    /// it after a host reboot or a crash half-way.
    pub fn ensure(&self, alloc: &NetAlloc) -> Result<(), NetError> {
        match alloc {
            NetAlloc::HostPort { .. } => Ok(()),
            NetAlloc::Namespace {
                address,
                gateway,
                netns,
                host_if,
            } => {
                let Network::Namespaces(p) = self else {
                    return Ok(());
                };
                let path = p.netns_path(netns);
                if netns::exists(&path, host_if) {
                    return Ok(());
                }
                netns::teardown(&path, host_if).map_err(NetError::Teardown)?;
                let plan = NetnsPlan {
                    netns_path: path,
                    host_if: host_if.clone(),
                    addresses: Some((*address, *gateway)),
                };
                netns::create(&plan).map_err(NetError::Namespaces)
            }
        }
    }

    /// Frees an allocation, removing its namespace and veth. Call once no process is
    /// left in the namespace: then unmounting it lets the kernel destroy it together
    /// with other dying namespaces (one RCU grace period for many, where deleting each
    /// veth costs one each); this waits until the veth is gone, deleting it itself if
    /// that takes too long, and only then hands the address out again.
    pub async fn release(&self, alloc: &NetAlloc) -> Result<(), NetError> {
        match alloc {
            NetAlloc::HostPort { port } => {
                if let Network::HostPorts(p) = self {
                    p.unmark(*port);
                }
                Ok(())
            }
            NetAlloc::Namespace {
                address,
                netns,
                host_if,
                ..
            } => {
                match self {
                    Network::Namespaces(p) => p.remove(*address, netns),
                    Network::HostPorts(_) => {
                        netns::remove_mount(&PathBuf::from(DEFAULT_NETNS_DIR).join(netns))
                    }
                }
                .map_err(NetError::Teardown)?;
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
                while netlink::if_index(host_if) != 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                if netlink::if_index(host_if) != 0 {
                    let name = host_if.clone();
                    tokio::task::spawn_blocking(move || netns::delete_link(&name))
                        .await
                        .map_err(|e| NetError::Teardown(io::Error::other(e)))?
                        .map_err(NetError::Teardown)?;
                }
                if let Network::Namespaces(p) = self {
                    p.unmark(*address);
                }
                Ok(())
            }
        }
    }

    /// How the instance holding `alloc` is reached, for a workload on `image_port`.
    pub fn endpoint(&self, alloc: &NetAlloc, image_port: u16) -> Endpoint {
        match alloc {
            NetAlloc::HostPort { port } => Endpoint {
                addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, *port)),
                listen_port: *port,
                private_ip: Ipv4Addr::LOCALHOST,
                metadata_host: None,
                netns: None,
            },
            NetAlloc::Namespace {
                address,
                gateway,
                netns,
                ..
            } => {
                let dir = match self {
                    Network::Namespaces(p) => p.netns_dir.clone(),
                    Network::HostPorts(_) => PathBuf::from(DEFAULT_NETNS_DIR),
                };
                Endpoint {
                    addr: SocketAddr::V4(SocketAddrV4::new(*address, image_port)),
                    listen_port: image_port,
                    private_ip: *address,
                    metadata_host: Some(*gateway),
                    netns: Some(dir.join(netns)),
                }
            }
        }
    }
}

/// Lets this host (its network namespace) forward packets between its instances and the
/// rest of the network, as any router or container host must.
fn enable_forwarding() -> Result<(), String> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("cannot enable IPv4 forwarding: {e}"))
}

/// Where namespace files live unless configured otherwise.
pub const DEFAULT_NETNS_DIR: &str = "/run/shoal/netns";

/// Free TCP ports of the host.
///
/// A port handed out is not bound until the workload starts, so the set of handed-out
/// ports is shared by every pool of this process (several drivers, as in tests, never
/// hand out the same port); other processes are seen only through the bind check.
#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    cursor: Mutex<u16>,
}

/// Ports handed out by any pool of this process.
static PORTS_IN_USE: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn ports_in_use() -> std::sync::MutexGuard<'static, BTreeSet<u16>> {
    PORTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner())
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let cursor = *range.start();
        Self {
            range,
            cursor: Mutex::new(cursor),
        }
    }

    /// The next port that is neither handed out nor bound by anyone on the host.
    pub fn allocate(&self) -> Result<u16, NetError> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let (lo, hi) = (*self.range.start(), *self.range.end());
        if lo == 0 || hi < lo {
            return Err(NetError::Exhausted);
        }
        let span = u32::from(hi - lo) + 1;
        let start = (*cursor).clamp(lo, hi);
        for i in 0..span {
            let port = lo + ((u32::from(start - lo) + i) % span) as u16;
            if ports_in_use().contains(&port) || !port_is_free(port) {
                continue;
            }
            if !ports_in_use().insert(port) {
                continue;
            }
            *cursor = if port == hi { lo } else { port + 1 };
            return Ok(port);
        }
        Err(NetError::Exhausted)
    }

    fn mark(&self, port: u16) {
        ports_in_use().insert(port);
    }

    fn unmark(&self, port: u16) {
        ports_in_use().remove(&port);
    }
}

/// Ports the kernel hands to outgoing connections can be taken between our bind check
/// and the workload's listen; say so when the range overlaps them.
fn warn_if_ephemeral(range: &RangeInclusive<u16>) {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    let mut it = text
        .split_whitespace()
        .filter_map(|v| v.parse::<u16>().ok());
    if let (Some(lo), Some(hi)) = (it.next(), it.next()) {
        if *range.start() <= hi && lo <= *range.end() {
            tracing::warn!(
                instance_ports = ?range,
                ephemeral_ports = %format!("{lo}-{hi}"),
                "Instance port range overlaps the kernel's ephemeral ports; an instance may find its port taken"
            );
        }
    }
}

/// True when nothing on the host listens on `port` (any address).
fn port_is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// Addresses of a subnet, each with its own namespace (its names and address
/// bookkeeping are [`NsAddrs`], shared with the warm pool's helper thread).
#[derive(Debug)]
pub struct NsPool {
    addrs: Arc<NsAddrs>,
    /// Routes to other hosts' instance subnets, by subnet: the next hop.
    peer_routes: Mutex<BTreeMap<Cidr, Ipv4Addr>>,
    /// Masquerade instances' traffic to anything but instances (see [`nat`]).
    outbound_nat: bool,
    /// Namespaces made ahead of need.
    warm: Arc<Warm>,
}

/// Which addresses of the subnet are in use, and how a namespace for a free one is made.
#[derive(Debug)]
pub struct NsAddrs {
    subnet: Subnet,
    netns_dir: PathBuf,
    state: Mutex<NsState>,
    /// The namespaces this agent made and has not removed.
    claims: Claims,
}

impl std::ops::Deref for NsPool {
    type Target = NsAddrs;

    fn deref(&self) -> &NsAddrs {
        &self.addrs
    }
}

impl Drop for NsPool {
    /// Removes the warm namespaces (the kernel deletes their veth pairs with them).
    fn drop(&mut self) {
        for alloc in self.warm.drain() {
            if let NetAlloc::Namespace { address, netns, .. } = alloc {
                let _ = self.remove(address, &netns);
            }
        }
    }
}

#[derive(Debug, Default)]
struct NsState {
    used: HashSet<Ipv4Addr>,
    cursor: u32,
}

impl NsPool {
    /// Prepares the host (gateway on `lo`, unreachable route for the subnet, neighbour
    /// table size, namespace directory) and proves it works by creating and removing
    /// one namespace with a veth pair.
    pub fn prepare(
        subnet: Subnet,
        netns_dir: PathBuf,
        outbound_nat: bool,
        warm: Arc<Warm>,
        claims: Claims,
    ) -> Result<Self, NetError> {
        if subnet.prefix_len > 30 || subnet.prefix_len < 8 {
            return Err(NetError::Prepare {
                what: "subnet prefix must be /8../30",
                source: io::ErrorKind::InvalidInput.into(),
            });
        }
        std::fs::create_dir_all(&netns_dir).map_err(|source| NetError::Prepare {
            what: "create the namespace directory",
            source,
        })?;
        let mut nl = Netlink::open().map_err(|source| NetError::Prepare {
            what: "open netlink",
            source,
        })?;
        let gateway = subnet.gateway();
        let results = nl.batch(vec![
            netlink::add_addr(1, gateway, 32),
            netlink::add_route(&Route {
                dst: Ipv4Addr::from(subnet.network()),
                prefix_len: subnet.prefix_len,
                oif: None,
                gateway: None,
                prefsrc: None,
                scope: RT_SCOPE_UNIVERSE,
                unreachable: true,
            }),
        ]);
        for (what, r) in [
            "add the gateway address to lo",
            "add the subnet's unreachable route",
        ]
        .into_iter()
        .zip(results)
        {
            match r {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => return Err(NetError::Prepare { what, source }),
            }
        }
        raise_neighbour_limits(subnet.hosts());

        let started = tokio::time::Instant::now();
        static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000;
        let (name, host_if) = probe_names(std::process::id(), n);
        let plan = NetnsPlan {
            netns_path: netns_dir.join(name),
            host_if,
            addresses: None,
        };
        let _ = netns::teardown(&plan.netns_path, &plan.host_if);
        remove_dead_probes(&netns_dir);
        netns::create(&plan).map_err(NetError::Namespaces)?;
        netns::teardown(&plan.netns_path, &plan.host_if).map_err(NetError::Teardown)?;
        tracing::debug!(elapsed = ?started.elapsed(), %subnet, "Network namespace probe succeeded");
        let pool = Self {
            addrs: Arc::new(NsAddrs {
                subnet,
                netns_dir,
                state: Mutex::new(NsState::default()),
                claims,
            }),
            peer_routes: Mutex::default(),
            outbound_nat,
            warm,
        };
        pool.apply_nat(&[]);
        Ok(pool)
    }

    fn own_range(&self) -> Cidr {
        Cidr {
            network: Ipv4Addr::from(self.subnet.network()),
            prefix_len: self.subnet.prefix_len,
        }
    }

    /// Gives instances outbound access through the host (masquerading whatever leaves
    /// for anything but an instance range), when enabled. Without nftables, or when it
    /// fails, instances reach only this host and other hosts' instances: said once.
    fn apply_nat(&self, peers: &[Cidr]) {
        if !self.outbound_nat {
            return;
        }
        let result = enable_forwarding().and_then(|()| nat::apply(self.own_range(), peers));
        if let Err(e) = result {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(error = %e, "instances cannot reach beyond Shoal's hosts (no outbound NAT); install nftables, or start with --outbound-nat false to say this is intended")
            });
        }
    }

    /// Routes each peer's instance subnet through its address, replacing changed routes
    /// and removing those of hosts no longer listed, and lets the host forward between
    /// its instances and the other hosts (`net.ipv4.ip_forward`, as any router or
    /// container host must). A peer whose range overlaps this host's is skipped: the
    /// server refuses such registrations, so it can only be a leftover.
    fn route_peers(&self, peers: &[HostPeer]) -> Result<(), String> {
        let own = self.own_range();
        let mut want = BTreeMap::new();
        for p in peers {
            let (Ok(subnet), Ok(via)) = (p.subnet.parse::<Cidr>(), p.address.parse::<Ipv4Addr>())
            else {
                tracing::warn!(host = %p.name, subnet = %p.subnet, address = %p.address, "ignoring a host whose subnet or address is not IPv4");
                continue;
            };
            if subnet.overlaps(&own) {
                tracing::warn!(host = %p.name, %subnet, "ignoring a host whose instance subnet overlaps this host's");
                continue;
            }
            want.insert(subnet, via);
        }
        let mut have = self.peer_routes.lock().unwrap_or_else(|p| p.into_inner());
        if *have == want {
            return Ok(());
        }
        if !want.is_empty() {
            enable_forwarding()?;
        }
        let route = |c: &Cidr, via: Option<Ipv4Addr>| Route {
            dst: c.network,
            prefix_len: c.prefix_len,
            oif: None,
            gateway: via,
            prefsrc: None,
            scope: RT_SCOPE_UNIVERSE,
            unreachable: false,
        };
        let mut msgs = Vec::new();
        let mut what = Vec::new();
        for (c, via) in &want {
            if have.get(c) != Some(via) {
                msgs.push(netlink::replace_route(&route(c, Some(*via))));
                what.push(format!("route {c} via {via}"));
            }
        }
        for c in have.keys().filter(|c| !want.contains_key(c)) {
            msgs.push(netlink::del_route(&route(c, None)));
            what.push(format!("remove the route to {c}"));
        }
        let mut nl = Netlink::open().map_err(|e| format!("cannot open netlink: {e}"))?;
        let failed: Vec<String> = nl
            .batch(msgs)
            .into_iter()
            .zip(what)
            .filter_map(|(r, what)| match r {
                Ok(()) => None,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
                Err(e) => Some(format!("{what}: {e}")),
            })
            .collect();
        if !failed.is_empty() {
            // Everything is tried again on the next call (replacing is idempotent).
            have.clear();
            return Err(failed.join("; "));
        }
        tracing::info!(routes = ?want, "routes to other hosts' instances updated");
        self.apply_nat(&want.keys().copied().collect::<Vec<_>>());
        *have = want;
        Ok(())
    }
}

impl NsAddrs {
    /// Where namespace `name` is mounted.
    pub fn netns_path(&self, name: &str) -> PathBuf {
        self.netns_dir.join(name)
    }

    /// A free address with its namespace made: the next one not used here and not taken
    /// on this host (by another agent, or a leftover). Blocking (~1–2 ms).
    pub fn allocate(&self) -> Result<NetAlloc, NetError> {
        let gateway = self.subnet.gateway();
        let hosts = self.subnet.hosts();
        for _ in 0..hosts {
            let address = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let mut found = None;
                for _ in 0..hosts {
                    let a = self.subnet.host(st.cursor % hosts);
                    st.cursor = (st.cursor + 1) % hosts;
                    if st.used.insert(a) {
                        found = Some(a);
                        break;
                    }
                }
                found.ok_or(NetError::Exhausted)?
            };
            let (netns, host_if) = names(address);
            let plan = NetnsPlan {
                netns_path: self.netns_dir.join(&netns),
                host_if: host_if.clone(),
                addresses: Some((address, gateway)),
            };
            self.claims.trying(address);
            match netns::claim(&plan.netns_path) {
                Ok(()) => {}
                // Held by another agent (or a leftover): keep it marked and move on.
                Err(NetnsError::Taken(name)) => {
                    self.claims.removed(address);
                    tracing::debug!(%name, "Address taken on this host; trying the next");
                    continue;
                }
                Err(e) => {
                    self.claims.removed(address);
                    self.unmark(address);
                    return Err(NetError::Namespaces(e));
                }
            }
            self.claims.won(address);
            match netns::build(&plan) {
                Ok(()) => {
                    return Ok(NetAlloc::Namespace {
                        address,
                        gateway,
                        netns,
                        host_if,
                    })
                }
                // The host interface is someone else's: the mount point went, the address
                // stays marked.
                Err(NetnsError::Taken(name)) => {
                    self.claims.removed(address);
                    tracing::debug!(%name, "Address taken on this host; trying the next")
                }
                Err(e) => {
                    self.claims.removed(address);
                    self.unmark(address);
                    return Err(NetError::Namespaces(e));
                }
            }
        }
        Err(NetError::Exhausted)
    }

    /// Removes the namespace of `address` (named `netns`) made by this agent: its mount
    /// goes, and the kernel destroys it with its veth pair once no process is left in it.
    pub fn remove(&self, address: Ipv4Addr, netns: &str) -> io::Result<()> {
        netns::remove_mount(&self.netns_path(netns))?;
        self.claims.removed(address);
        Ok(())
    }

    /// Removes every namespace this agent made that nothing marked as used: made just
    /// before a crash, before its instance's state or the warm pool's list named it (and
    /// the empty mount point of a name it won just before one). Call once recovery and the
    /// warm pool have marked theirs, before any allocation.
    pub fn sweep(&self) {
        let mut keep = BTreeMap::new();
        let mut removed = Vec::new();
        for (address, claim) in self.claims.outstanding() {
            if self.is_used(address) {
                keep.insert(address, claim);
                continue;
            }
            let (netns, host_if) = names(address);
            let path = self.netns_path(&netns);
            let result = match claim {
                Claim::Won => {
                    let there = path.exists() || netlink::if_index(&host_if) != 0;
                    netns::teardown(&path, &host_if).map(|()| there)
                }
                // Won or not, nothing was mounted yet: an empty mount point with nothing on
                // it can only be that (another agent's namespace is mounted; left alone).
                Claim::Tried => netns::remove_unmounted(&path),
            };
            match result {
                Ok(true) => removed.push(netns),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(namespace = %netns, error = %e, "Cannot remove a network namespace left by a crash; its address stays unused");
                    self.mark(address);
                    keep.insert(address, claim);
                }
            }
        }
        self.claims.rewrite(keep);
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), namespaces = ?removed, "Removed network namespaces an earlier run made but never recorded (it stopped while making them)");
        }
    }

    fn mark(&self, a: Ipv4Addr) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used
            .insert(a);
    }

    fn is_used(&self, a: Ipv4Addr) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used
            .contains(&a)
    }

    fn unmark(&self, a: Ipv4Addr) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used
            .remove(&a);
    }
}

/// The names of `address`'s namespace and of its host-side veth.
fn names(address: Ipv4Addr) -> (String, String) {
    let hex = u32::from(address);
    (format!("shoal-{hex:08x}"), format!("sh{hex:08x}"))
}

/// The names of agent `pid`'s `n`th start-up probe namespace and of its host-side veth.
fn probe_names(pid: u32, n: u32) -> (String, String) {
    (
        format!("shoal-probe-{pid}-{n}"),
        format!("shp{:x}-{n}", pid & 0xf_ffff),
    )
}

/// Removes the namespaces of start-up probes whose agent is gone (killed during its probe);
/// a live agent's probe is left alone.
fn remove_dead_probes(netns_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(netns_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, n)) = name
            .strip_prefix("shoal-probe-")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| Some((pid.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let (_, host_if) = probe_names(pid, n);
        match netns::teardown(&entry.path(), &host_if) {
            Ok(()) => {
                tracing::info!(namespace = %name, "Removed the probe namespace of an agent that is gone")
            }
            Err(e) => {
                tracing::debug!(namespace = %name, error = %e, "Cannot remove a dead agent's probe namespace")
            }
        }
    }
}

/// The host keeps one neighbour entry per instance; the default table limit (1024)
/// would stop new instances from being reached past ~1000. Raise it, never lower it.
fn raise_neighbour_limits(hosts: u32) {
    let want = u64::from(hosts.clamp(1024, 65_536)) * 2;
    for (name, value) in [
        ("gc_thresh1", want / 8),
        ("gc_thresh2", want / 2),
        ("gc_thresh3", want),
    ] {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{name}");
        let current: u64 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if current < value {
            match std::fs::write(&path, value.to_string()) {
                Ok(()) => {
                    tracing::info!(sysctl = %path, from = current, to = value, "Raised the neighbour table limit for instance networks")
                }
                Err(e) => {
                    tracing::warn!(sysctl = %path, error = %e, "Cannot raise the neighbour table limit; past ~1000 instances some may be unreachable")
                }
            }
        }
    }
}

/// Replaces the host of `url` (`scheme://host[:port]/rest`) with `ip`.
pub fn rewrite_host(url: &str, ip: Ipv4Addr) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let port = if authority.starts_with('[') {
        authority.rsplit_once("]:").map(|(_, p)| p)
    } else {
        authority.rsplit_once(':').map(|(_, p)| p)
    };
    match port {
        Some(p) => format!("{scheme}://{ip}:{p}{path}"),
        None => format!("{scheme}://{ip}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_arithmetic() {
        let s = Subnet::DEFAULT;
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(s.host(0), Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(s.hosts(), 65_533);
        assert_eq!(s.host(s.hosts() - 1), Ipv4Addr::new(10, 200, 255, 254));
        assert!(s.contains(Ipv4Addr::new(10, 200, 3, 4)));
        assert!(!s.contains(s.gateway()));
        assert!(!s.contains(Ipv4Addr::new(10, 200, 255, 255)));
        assert!(!s.contains(Ipv4Addr::new(10, 201, 0, 2)));
        let small = Subnet {
            base: Ipv4Addr::new(10, 9, 8, 77),
            prefix_len: 29,
        };
        assert_eq!(small.to_string(), "10.9.8.72/29");
        assert_eq!(small.hosts(), 5);
    }

    #[test]
    fn ports_are_distinct_free_and_reusable() {
        // A port someone else holds is skipped.
        let held = TcpListener::bind("0.0.0.0:0").expect("bind");
        let busy = held.local_addr().expect("addr").port();
        let pool = PortPool::new(busy..=busy.saturating_add(3));
        let a = pool.allocate().expect("one");
        let b = pool.allocate().expect("two");
        assert_ne!(a, busy);
        assert_ne!(b, busy);
        assert_ne!(a, b);
        pool.unmark(a);
        let mut got = BTreeSet::new();
        while let Ok(p) = pool.allocate() {
            got.insert(p);
        }
        assert!(got.contains(&a), "a released port is handed out again");
        assert!(!got.contains(&b) && !got.contains(&busy));
    }

    #[test]
    fn rewrites_metadata_host() {
        let gw = Ipv4Addr::new(10, 200, 0, 1);
        assert_eq!(
            rewrite_host("http://127.0.0.1:7071", gw),
            "http://10.200.0.1:7071"
        );
        assert_eq!(
            rewrite_host("http://localhost:7071/metadata/x", gw),
            "http://10.200.0.1:7071/metadata/x"
        );
        assert_eq!(
            rewrite_host("http://[::1]:7071/", gw),
            "http://10.200.0.1:7071/"
        );
        assert_eq!(rewrite_host("http://localhost/", gw), "http://10.200.0.1/");
        assert_eq!(rewrite_host("not a url", gw), "not a url");
    }

    /// Per-instance namespace setup and teardown cost (root only):
    /// `cargo test -p shoal-agent --lib namespace_setup_timing -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "timing run, needs root"]
    async fn namespace_setup_timing() {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return crate::driver::skip_or_fail(
                "namespace_setup_timing",
                "network namespaces need root",
            );
        }
        let n: u32 = std::env::var("SHOAL_NS_TIMING_COUNT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let subnet = Subnet {
            base: Ipv4Addr::new(10, 234, 0, 0),
            prefix_len: 16,
        };
        let net = std::sync::Arc::new(
            Network::setup(
                NetworkMode::Namespaces,
                1..=1,
                subnet,
                PathBuf::from(DEFAULT_NETNS_DIR),
                false,
                Warm::new(0, None),
                Claims::open(None),
            )
            .expect("setup"),
        );
        let t0 = tokio::time::Instant::now();
        let mut allocs = Vec::new();
        let mut slowest = std::time::Duration::ZERO;
        for _ in 0..n {
            let t = tokio::time::Instant::now();
            allocs.push(net.allocate().expect("allocate"));
            slowest = slowest.max(t.elapsed());
        }
        let setup = t0.elapsed();
        let t1 = tokio::time::Instant::now();
        let tasks: Vec<_> = allocs
            .into_iter()
            .map(|a| {
                let net = std::sync::Arc::clone(&net);
                tokio::spawn(async move { net.release(&a).await.expect("release") })
            })
            .collect();
        for t in tasks {
            t.await.expect("join");
        }
        println!(
            "namespace setup: {n} in {setup:?} ({:?} each, slowest {slowest:?}), teardown of all (concurrent) {:?}",
            setup / n,
            t1.elapsed()
        );
        // Names are free at once; sysfs entries go a moment later.
        let left = || {
            std::fs::read_dir("/sys/class/net")
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("sh0aea"))
                        .count()
                })
                .unwrap_or(0)
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while left() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let left = left();
        assert_eq!(left, 0, "veths left behind");
    }
}
