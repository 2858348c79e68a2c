//! Simulation tests: the real API, controller and agents in one process on an in-memory
//! store, fake drivers and tokio's paused clock (see `harness.rs`). Minutes of simulated
//! time take milliseconds, and every run is the same.

mod controller;
mod harness;
mod hosts;
mod repair;
mod rolling;
mod supervisor;
mod zones;
