//! End-to-end tests: the real `shoal` binary, real processes, real HTTP.
//! They run one at a time (they share the host's instance network).

// These tests watch real processes over real time: std's clock is the right one here.
#![allow(clippy::disallowed_types)]

mod appgw;
mod autoscale;
mod balancing;
mod etcd;
mod flexible;
mod foundation;
mod hardening;
mod harness;
mod hosts;
mod identity;
mod multihost;
mod portal;
mod restart;
mod rolling;
mod vm;
