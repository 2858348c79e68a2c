//! shoal-control
