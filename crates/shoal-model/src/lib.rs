//! shoal-model
