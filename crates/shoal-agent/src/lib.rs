//! Shoal's host agent: runs the instances assigned to this host.
//!
//! Data enters as desired instance records watched from the server's HTTP API and leaves
//! as status writes to the same API; instances are driven through a [`driver::Driver`].

pub mod driver;
