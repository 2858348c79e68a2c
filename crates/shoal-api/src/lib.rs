//! shoal-api
