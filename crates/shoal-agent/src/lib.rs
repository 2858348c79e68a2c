//! Shoal's host agent: runs the instances assigned to this host.
//!
//! Data enters as desired instance records listed and watched from the server's HTTP API
//! (through a [`shoal_client::ServerClient`]) and leaves as status writes to the same
//! API; each instance has a `supervisor` that drives it through a [`driver::Driver`]. The agent also serves
//! instance metadata and console logs (`http`).

pub mod agent;
pub mod applied;
pub mod callers;
pub mod driver;
pub mod events;
pub mod http;
pub mod http_serve;
pub mod identity;
pub mod images;
pub mod metrics;
pub mod reports;
pub mod supervisor;

#[cfg(test)]
mod fixtures;

pub use agent::{run, AgentConfig, AgentError};
