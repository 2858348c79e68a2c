//! Shoal's HTTP API: Azure Resource Manager's wire format for resource groups, gallery
//! images, scale sets, their instances and operations, plus the endpoints agents use.
//!
//! Requests enter through [`server::router`], are parsed into a [`routes::Route`] and
//! handled by the module of their resource, which validates and writes desired state to
//! the store. Nothing here runs instances: controllers and agents do.

pub mod activity_log;
pub mod activity_writes;
pub mod agent_api;
pub mod appgw;
pub mod arm_crud;
pub mod auth;
pub mod autoscale;
pub mod blobs;
pub mod bundle_gc;
pub mod cluster;
pub mod compute_locations;
pub mod deployments;
pub mod discovery;
pub mod extensions;
pub mod galleries;
pub mod groups;
pub mod host_auth;
pub mod hosts;
pub mod identity;
pub mod instances;
pub mod logs;
pub mod managed_identities;
pub mod metrics;
pub mod network;
pub mod openapi;
pub mod pfx;
pub mod placement_groups;
pub mod platform_images;
pub mod principals;
pub mod rbac;
pub mod references;
pub mod response;
pub mod rolling_upgrades;
pub mod routes;
pub mod scalesets;
pub mod server;
pub mod server_status;
pub mod set_operations;
pub mod state;
pub mod times;
pub mod ui;
pub mod views;
pub mod virtual_machines;
pub mod vm_image;
pub mod vm_view;
pub mod vm_view_cache;
pub mod vnets;

pub use server::router;
pub use state::ApiState;
