//! End-to-end tests: the real `shoal` binary, real processes, real HTTP.
//! They run one at a time (they share the host's instance network).

mod balancing;
mod foundation;
mod harness;
