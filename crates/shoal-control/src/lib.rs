//! Shoal's control plane: controllers that keep observed state equal to desired state.
//!
//! Each controller is a pure planner (input → plan, no I/O, property-tested) plus a thin
//! runner that reads the store, calls the planner and writes the plan back.

pub mod autoscale;
pub mod autoscale_runner;
pub mod clock;
pub mod commands;
pub mod controller;
mod group_gone;
pub mod hosts;
pub mod kv;
pub mod operations;
pub mod planner;
pub mod repair;
pub mod rolling;
mod routes;

pub use clock::{Clock, ManualClock, SystemClock};
pub use controller::Controller;
