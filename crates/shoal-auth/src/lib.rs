//! Shoal's token authority: Entra-ID-shaped RS256 access tokens, signed with keys kept in
//! the store (so every server on a shared store issues and accepts the same tokens), and
//! the directory of the tenant, its subscriptions and the principals that sign in.
//!
//! The API, in a few calls:
//!
//! - [`Authority::issue`]`(principal, audience, issuer, now, lifetime)` signs a token
//!   (claims `tid, oid, appid, azp, aud, iss, iat, nbf, exp` and Shoal's
//!   `xms_shoal_kind`) with the current key; `kid` names the key.
//! - [`Authority::verify`]`(token, audiences, now)` answers the [`Principal`]
//!   `{oid, tid, appid, kind}` or why not ([`VerifyError::arm_code`] is the 401's ARM code).
//! - [`Authority::rotate`] adds a new signing key; the previous one still verifies and
//!   stays in [`Authority::jwks`].
//! - [`Directory`] keeps the [`Tenant`] (made on first use with the all-zero default
//!   subscription) and principals with hashed secrets: [`Directory::create_principal`]
//!   returns the secret once, [`Directory::check_secret`] checks one.
//!
//! Nothing here reads the clock: `now` (epoch seconds) comes from the caller. Keys live
//! under `auth/` in the store, which the agent protocol's store reads never expose.

mod authority;
pub mod cert;
pub mod directory;
pub mod keys;
pub mod token;

pub use authority::{Authority, AuthorityError, IssuedToken, VerifyFailure};
pub use directory::{Directory, DirectoryError, NewCredential, PrincipalRecord, Tenant};
pub use token::{Claims, Principal, PrincipalKind, VerifyError, ARM_AUDIENCES, HOST_AUDIENCE};

#[cfg(test)]
mod tests;
