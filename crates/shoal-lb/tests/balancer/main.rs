//! Integration tests of the data plane: real TCP and HTTP backends on 127.0.0.1 behind a
//! real `Balancer`. No test times anything; each waits for its condition with a generous
//! deadline. `SHOAL_LOG=shoal_lb=debug` shows the balancer's logs.

// All of this crate is test code, but clippy's `allow-unwrap-in-tests` only covers
// `#[test]` functions, not the helpers they call.
#![allow(clippy::unwrap_used)]

mod bad_backends;
mod hostile;
mod l4;
mod l7;
mod lifecycle;
mod protocols;
mod support;
mod tls;
mod workers;
