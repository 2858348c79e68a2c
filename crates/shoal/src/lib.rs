//! The Shoal server as a library: everything `shoal serve` and `shoal server` run, started
//! by one function, [`run`], from a [`ServerConfig`], the [`Listeners`] to serve on and a
//! shutdown token (the shape of mini-redis' `server::run`).
//!
//! The binary (`main.rs`) only turns flags, `SHOAL_*` variables and the config file into a
//! `ServerConfig`, binds the listeners and calls [`run`]. Tests call the same [`run`] with
//! `127.0.0.1:0` listeners, or [`Core::start`] directly with an in-memory store, a fake
//! driver and no sockets at all (the simulation harness in `tests/sim`).
//!
//! Parts and who owns them:
//! - [`Core`]: the API router and the control plane (controller, autoscale runner), their
//!   tasks owned by one `TaskTracker`.
//! - [`run`]: a `Core`, the API served on the listeners, and optionally a local agent and
//!   a local balancer that follow the core like remote ones do.
//! - [`drivers`]: the local host's instance drivers (processes, and VMs when QEMU is
//!   installed).
//! - [`https`]: the TLS listener.
//! - [`leader`]: whether this server runs the control plane (always, or while elected
//!   among several servers on etcd), and the `GET /shoal/v1/server/status` answer.

pub mod drivers;
pub mod https;
pub mod leader;
mod server;

pub use leader::Leadership;
pub use server::{
    connect_addr, owner_credential_path, read_owner_credential, run, start_balancer, Core,
    CoreConfig, Listeners, LocalAgent, OwnerError, RunError, ServerConfig, ServerIdentity,
};
