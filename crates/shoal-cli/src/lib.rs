//! shoal-cli
