//! How agents and balancers talk to a Shoal server.
//!
//! [`ServerClient`] makes every call of the agent protocol (`shoal_api::agent_api`):
//! requests go out through a [`Transport`] — the network ([`HttpTransport`]) or, in
//! tests and the simulation harness, the API's router called in process
//! ([`ServiceTransport`]) — and answers come back as Shoal's records, or for watches
//! as streams of store events whose JSON values the caller decodes once.
//! [`ServerSource`] and [`HostSource`] make the server a `shoal_store::watcher`
//! source, so agents and balancers follow it with the same watcher and typed cache as
//! the controller follows the store.

mod client;
mod source;
pub mod transport;

pub use client::{Answer, ClientError, Joined, ServerClient};
pub use shoal_store::{Event, KeyValue, Revision};
pub use source::{HostSource, ServerSource, WrongPrefix};
pub use transport::{
    parse_pin, sha256_hex, Body, BoxError, Deadline, HttpTransport, ServiceTransport, Transport,
    TransportError,
};
