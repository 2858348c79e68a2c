//! Network namespaces for instances: create one with its veth pair and addresses,
//! check that one still exists, tear one down.
//!
//! A namespace is made on the namespace thread ([`super::nsthread`]), which moves into a
//! new one (`unshare(CLONE_NEWNET)`), bind-mounts `/proc/thread-self/ns/net` onto
//! `<netns_dir>/<name>` so the namespace outlives the thread and the agent, configures
//! the inside over a netlink socket opened there, and moves back to the host's:
//!
//! ```text
//!  host                                   namespace <name>
//!  lo: <gateway>/32                        lo up
//!  <host_if> ──────── veth ──────────────  eth0: <address>/32
//!  route <address>/32 dev <host_if>        route <gateway>/32 dev eth0 scope link
//!        src <gateway>                     route default via <gateway>
//! ```
//!
//! Routed veth pairs without a bridge: nothing limits the count to a bridge's 1024 ports.
//! The instance's process joins the namespace with `setns` before exec (see
//! [`crate::driver::launch`]).

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::netlink::{self, Netlink, Route, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE};
use super::nsthread;

const NSFS_MAGIC: i64 = 0x6e73_6673;
/// The interface name inside every namespace.
pub const INSIDE_IF: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file or the host interface already exists: another owner (or a
    /// leftover) holds this name; the caller picks another address.
    #[error("Network namespace or interface {0} already exists")]
    Taken(String),
    #[error("Cannot {what} for network namespace {name}")]
    Setup {
        what: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
}

/// What to create: names and addresses of one instance's network.
#[derive(Debug, Clone)]
pub struct NetnsPlan {
    pub netns_path: PathBuf,
    pub host_if: String,
    /// `(address, gateway)`; `None` creates the links only (the startup probe).
    pub addresses: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// Creates the namespace, its veth pair, addresses and routes. On failure, whatever was
/// created is removed again. Blocking (a few syscalls and netlink round trips).
pub fn create(plan: &NetnsPlan) -> Result<(), NetnsError> {
    claim(&plan.netns_path)?;
    build(plan)
}

/// Wins the namespace's name: creates its mount point with `O_EXCL`, the lock on the name
/// among all agents of the host. [`NetnsError::Taken`] when another holds it.
pub fn claim(netns_path: &Path) -> Result<(), NetnsError> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(netns_path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(NetnsError::Taken(netns_path.display().to_string()))
        }
        Err(source) => Err(NetnsError::Setup {
            what: "create the mount point",
            name: netns_path.display().to_string(),
            source,
        }),
    }
}

/// [`create`] after [`claim`] won the name: on failure the mount point goes too. Runs on
/// the namespace thread (waiting for it when called elsewhere).
pub fn build(plan: &NetnsPlan) -> Result<(), NetnsError> {
    if !nsthread::on_it() {
        let owned = plan.clone();
        return nsthread::run(move || build(&owned))
            .unwrap_or_else(|e| Err(failed(plan, "run the namespace thread")(e)));
    }
    let setup = |what| failed(plan, what);
    let result = create_inside(plan).and_then(|()| {
        if let Some((address, gateway)) = plan.addresses {
            let index = netlink::if_index(&plan.host_if);
            if index == 0 {
                return Err(setup("find the host interface")(io::Error::from(
                    io::ErrorKind::NotFound,
                )));
            }
            disable_ipv6(&plan.host_if);
            let mut nl = Netlink::open().map_err(setup("open netlink"))?;
            let route = netlink::add_route(&Route {
                dst: address,
                prefix_len: 32,
                oif: Some(index),
                gateway: None,
                prefsrc: Some(gateway),
                scope: RT_SCOPE_LINK,
                unreachable: false,
            });
            let mut results = nl
                .batch(vec![
                    netlink::no_ipv6_addresses(index),
                    netlink::link_up(index),
                    route,
                ])
                .into_iter();
            if let Some(Err(e)) = results.next() {
                tracing::debug!(error = %e, "Cannot turn off IPv6 addresses on a host veth");
            }
            for r in results {
                r.map_err(setup("bring up the host side and add its route"))?;
            }
        }
        Ok(())
    });
    match &result {
        Ok(()) => {}
        // The host interface name belongs to someone else: leave it, drop our mount.
        Err(NetnsError::Taken(_)) => {
            let _ = remove_mount(&plan.netns_path);
        }
        Err(e) => {
            tracing::debug!(error = %e, "Rolling back a half-made network namespace");
            let _ = teardown(&plan.netns_path, &plan.host_if);
        }
    }
    result
}

/// Turns IPv6 off on the host end `host_if` before it comes up (instances speak IPv4).
///
/// Why: even without addresses, an IPv6 link that comes up gets a multicast route
/// (`ff00::/8`) in the host's table, and bringing a link up walks every IPv6 route of the
/// host (`fib6_ifup`), so each new veth cost more than the last. Turned off first, the
/// link adds no route and the walk is over the host's own few (1000 namespaces made one
/// after another: 1.17-1.19 s with IPv6 on the host ends, 0.93-1.13 s without). A host
/// without IPv6 has no such file: nothing to do.
fn disable_ipv6(host_if: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6");
    if let Err(e) = fs::write(&path, b"1") {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::debug!(%path, error = %e, "Cannot turn IPv6 off on a host veth");
        }
    }
}

/// The part that runs inside the new namespace: the namespace thread moves into it,
/// makes the veth pair with its host end in the host's namespace, configures the inside,
/// and moves back whatever happened.
fn create_inside(plan: &NetnsPlan) -> Result<(), NetnsError> {
    let host_ns = nsthread::host_netns().map_err(failed(plan, "find the host namespace"))?;
    nsthread::enter_new().map_err(failed(plan, "unshare"))?;
    let result = configure_inside(plan, host_ns);
    nsthread::back_to_host().map_err(failed(plan, "return to the host namespace"))?;
    result
}

/// `NetnsError::Setup` of `plan`'s namespace, for `map_err`.
fn failed<'a>(
    plan: &'a NetnsPlan,
    what: &'static str,
) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Setup {
        what,
        name: plan.netns_path.display().to_string(),
        source,
    }
}

fn configure_inside(plan: &NetnsPlan, host_ns: RawFd) -> Result<(), NetnsError> {
    let setup = |what| failed(plan, what);
    bind_mount(Path::new("/proc/thread-self/ns/net"), &plan.netns_path)
        .map_err(setup("bind-mount"))?;
    let mut nl = Netlink::open().map_err(setup("open netlink inside"))?;
    match nl.request(netlink::new_veth(INSIDE_IF, &plan.host_if, Some(host_ns))) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            return Err(NetnsError::Taken(plan.host_if.clone()))
        }
        Err(e) => return Err(setup("create the veth pair")(e)),
    }
    let inside = netlink::if_index(INSIDE_IF);
    // lo is always index 1 in a new namespace.
    let mut msgs = vec![
        netlink::no_ipv6_addresses(inside),
        netlink::link_up(1),
        netlink::link_up(inside),
    ];
    if let Some((address, gateway)) = plan.addresses {
        msgs.push(netlink::add_addr(inside, address, 32));
        msgs.push(netlink::add_route(&Route {
            dst: gateway,
            prefix_len: 32,
            oif: Some(inside),
            gateway: None,
            prefsrc: None,
            scope: RT_SCOPE_LINK,
            unreachable: false,
        }));
        msgs.push(netlink::add_route(&Route {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            oif: Some(inside),
            gateway: Some(gateway),
            prefsrc: None,
            scope: RT_SCOPE_UNIVERSE,
            unreachable: false,
        }));
    }
    let mut results = nl.batch(msgs).into_iter();
    if let Some(Err(e)) = results.next() {
        tracing::debug!(error = %e, "Cannot turn off IPv6 addresses inside a namespace");
    }
    for r in results {
        r.map_err(setup("configure the inside"))?;
    }
    Ok(())
}

/// Removes the veth pair (deleting the host end deletes both) and the namespace mount,
/// synchronously. Missing pieces are fine. Deleting a link waits for an RCU grace period
/// (~10-20 ms); [`remove_mount`] alone lets the kernel delete it in a batch instead.
pub fn teardown(netns_path: &Path, host_if: &str) -> io::Result<()> {
    delete_link(host_if)?;
    remove_mount(netns_path)
}

/// Deletes the link `host_if` (and its veth peer); a missing link is fine.
pub fn delete_link(host_if: &str) -> io::Result<()> {
    let mut nl = Netlink::open()?;
    match nl.request(netlink::del_link(host_if)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unmounts and removes a namespace file; missing is fine. Once no process is left in
/// it, the kernel destroys the namespace and with it the veth pair (asynchronously,
/// batched with other dying namespaces).
pub fn remove_mount(netns_path: &Path) -> io::Result<()> {
    super::mounts::detach(netns_path)?;
    match fs::remove_file(netns_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the mount point `netns_path` when nothing is mounted on it (a name won just
/// before a crash); `Ok(true)` when it did.
pub fn remove_unmounted(netns_path: &Path) -> io::Result<bool> {
    if is_nsfs(netns_path) {
        return Ok(false);
    }
    match fs::remove_file(netns_path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// True when `path` is a mounted network namespace and `host_if` exists on the host.
pub fn exists(netns_path: &Path, host_if: &str) -> bool {
    is_nsfs(netns_path) && netlink::if_index(host_if) != 0
}

fn is_nsfs(path: &Path) -> bool {
    super::mounts::is_type(path, NSFS_MAGIC)
}

fn bind_mount(src: &Path, dst: &Path) -> io::Result<()> {
    super::mounts::mount(src, dst, None, libc::MS_BIND, None)
}
