//! Managed identity for instances, the way App Service hands it out (which an unchanged
//! `ManagedIdentityCredential` / `DefaultAzureCredential` inside the instance uses): each
//! process instance gets `IDENTITY_ENDPOINT` (its own metadata path
//! `…/i/{slug}/metadata/identity/oauth2/token`) and `IDENTITY_HEADER`, a secret of its own.
//! A request must carry that secret in `X-IDENTITY-HEADER`; the agent then asks the server
//! for a token of the scale set's identity for that instance (`POST
//! /shoal/v1/identity/…`, as this host) and passes the answer on.
//!
//! The secret is SHA-256(agent key ‖ slug), the agent key being 32 random bytes kept in
//! the agent's data directory, so it survives agent restarts (instances keep their
//! environment) and one instance's secret says nothing about another's. Instances run as
//! users of their own, so none reads another's environment.

use std::path::Path;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shoal_client::ServerClient;

use crate::http::Registry;

/// The header `IDENTITY_HEADER` must be sent in.
pub const SECRET_HEADER: &str = "x-identity-header";
/// The path under an instance's metadata endpoint.
pub const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

#[derive(Clone)]
pub struct Identity {
    key: [u8; 32],
    client: ServerClient,
    registry: Registry,
    driver: std::sync::Arc<dyn crate::driver::Driver>,
}

impl Identity {
    /// The agent's key from `dir/identity-key`, made on first start (mode 0600).
    pub fn load(
        dir: &Path,
        client: ServerClient,
        registry: Registry,
        driver: std::sync::Arc<dyn crate::driver::Driver>,
    ) -> std::io::Result<Identity> {
        let path = dir.join("identity-key");
        let key = match std::fs::read(&path) {
            Ok(k) if k.len() == 32 => k,
            _ => {
                let mut k = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
                    .map_err(|_| std::io::Error::other("no randomness"))?;
                std::fs::create_dir_all(dir)?;
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?
                    .write_all(&k)?;
                k
            }
        };
        let mut fixed = [0u8; 32];
        fixed.copy_from_slice(&key);
        Ok(Identity {
            key: fixed,
            client,
            registry,
            driver,
        })
    }

    /// The `IDENTITY_HEADER` of the instance `slug`.
    pub fn secret(&self, slug: &str) -> String {
        shoal_client::sha256_hex(&[&self.key, slug.as_bytes()])
    }
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"statusCode": status.as_u16(), "message": message,
            "error": {"code": "IdentityRequestRefused", "message": message}})),
    )
        .into_response()
}

/// `GET /i/{slug}/metadata/identity/oauth2/token?resource=…` with `X-IDENTITY-HEADER`
/// (App Service's way), or with `Metadata: true` (Azure IMDS's way) from the instance's
/// own address — which only a namespaced instance has; host-port instances all call from
/// the host's addresses, so they must send their secret.
pub async fn token(
    State(id): State<Identity>,
    UrlPath(slug): UrlPath<String>,
    Query(query): Query<Vec<(String, String)>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let given = headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let want = id.secret(&slug);
    let same = given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    let imds = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let from_itself = imds
        && id
            .driver
            .private_address(&crate::driver::InstanceKey(slug.clone()))
            .await
            == Some(peer.ip());
    if !same && !from_itself {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "X-IDENTITY-HEADER is missing or not this instance's: send the value of IDENTITY_HEADER \
             (or, from the instance's own address, the header Metadata: true)",
        );
    }
    let rec = id
        .registry
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&slug)
        .cloned();
    let Some(rec) = rec else {
        return refusal(StatusCode::NOT_FOUND, "unknown instance");
    };
    // The audience and the parameters that pick an identity, passed on as asked: the
    // server reads the ones it knows.
    match id.client.instance_token(&rec, &query).await {
        Ok((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the Shoal server could not be asked for a token: {e}"),
        ),
    }
}
