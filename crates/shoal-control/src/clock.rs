//! The clock moved to `shoal_model::clock` so every part (API, agent, balancer) can use
//! it; these re-exports keep the control plane's existing paths working.

pub use shoal_model::clock::*;
