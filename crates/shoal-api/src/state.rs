//! Shared state of the API handlers and small helpers they all use.

use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use shoal_control::commands::{CommandError, Executor, Limits};
use shoal_control::kv::{self, Versioned};
use shoal_control::Clock;
use shoal_model::records::{OperationRecord, OperationStatus, OperationWait};
use shoal_model::{ids, ArmError};
use shoal_store::{Store, StoreError};

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Where uploaded bundles are kept (`<data-dir>/blobs`).
    pub blob_dir: PathBuf,
    /// The only directory application-gateway certificate files may be read from.
    pub certificate_dir: PathBuf,
    /// When unreferenced bundles are collected, and how much may be kept.
    pub bundles: crate::bundle_gc::BundlePolicy,
    /// Client for proxying to agents (logs).
    pub http: reqwest::Client,
    /// Items per page of list answers.
    pub page_size: usize,
    /// Largest capacity a scale set may ask for (1000, as Azure; tests may lower it).
    pub max_capacity: i64,
    /// Where public IP addresses are given from (`--public-ip-range`, default
    /// [`crate::vnets::DEFAULT_PUBLIC_IP_RANGE`]).
    pub public_ip_range: shoal_model::cidr::Cidr,
    /// The secret a managed-identity token request must carry (`IDENTITY_HEADER`); `None`
    /// turns the token endpoint off.
    pub identity_header: Option<String>,
    /// Metrics from agents and users, read by autoscale and the metrics API.
    pub metrics: Arc<shoal_metrics::MetricsStore>,
    /// The token authority and directory; `None` lets every request through unchecked
    /// (unit tests of one handler, the in-process simulation).
    pub auth: Option<crate::auth::AuthState>,
    /// This server among the install's servers: whether it leads, where the leader is.
    pub cluster: Arc<crate::cluster::Cluster>,
    /// Instance views as the instance list last rendered them (see
    /// [`crate::views::VmViewCache`]).
    pub vm_views: Arc<crate::views::VmViewCache>,
}

impl ApiState {
    pub fn now(&self) -> String {
        shoal_control::clock::arm_time(self.clock.now())
    }

    /// The install's tenant (the all-zero id without sign-in).
    pub async fn tenant_id(&self) -> Result<String, ArmError> {
        match &self.auth {
            Some(a) => Ok(a.directory.tenant().await.map_err(internal)?.tenant_id),
            None => Ok(uuid::Uuid::nil().to_string()),
        }
    }

    /// The install's default subscription (the all-zero id without sign-in).
    pub async fn default_subscription(&self) -> Result<String, ArmError> {
        match &self.auth {
            Some(a) => Ok(a
                .directory
                .tenant()
                .await
                .map_err(internal)?
                .default_subscription),
            None => Ok(uuid::Uuid::nil().to_string()),
        }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, ArmError> {
        kv::get_json(&*self.store, key).await.map_err(internal)
    }

    pub async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Versioned<T>>, ArmError> {
        kv::list_json(&*self.store, prefix)
            .await
            .map(|(v, _)| v)
            .map_err(internal)
    }

    /// The resource group's stored ARM object, or `ResourceGroupNotFound`.
    pub async fn require_group(&self, sub: &str, rg: &str) -> Result<Versioned<Value>, ArmError> {
        shoal_model::names::check_resource_group(rg)?;
        match self.get::<Value>(&ids::rg_key(sub, rg)).await? {
            Some(g) if g.value["properties"]["provisioningState"] == "Deleting" => Err(
                ArmError::conflict(format!("Resource group '{rg}' is being deleted."))
                    .with_target(rg.to_string()),
            ),
            Some(g) => Ok(g),
            None => Err(ArmError::resource_group_not_found(rg)),
        }
    }

    /// The command executor over this state: the server's limits, the galleries for
    /// images.
    pub fn commands(&self) -> Executor {
        Executor::new(
            self.store.clone(),
            self.clock.clone(),
            Limits {
                max_capacity: self.max_capacity,
            },
        )
        .with_images(crate::scalesets::Galleries::of(self))
    }

    /// A new operation record (not yet stored).
    pub fn new_operation(&self, sub: &str, name: String, wait: OperationWait) -> OperationRecord {
        OperationRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            subscription: sub.to_string(),
            status: OperationStatus::InProgress,
            start_time: self.now(),
            end_time: None,
            error: None,
            wait,
            message: None,
        }
    }
}

/// A store failure the client cannot fix: 503 `ServiceUnavailable` (answered with
/// `Retry-After`) when the store is unavailable for now (etcd without quorum, a timeout),
/// 413 naming the value when a write is over the store's size limit, else 500.
pub fn internal<E: std::error::Error + 'static>(e: E) -> ArmError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        // `KvError::Store` is transparent: its `source()` skips the store error itself.
        let store = c
            .downcast_ref::<StoreError>()
            .or(match c.downcast_ref::<kv::KvError>() {
                Some(kv::KvError::Store(e)) => Some(e),
                _ => None,
            });
        match store {
            Some(StoreError::Unavailable(_)) => {
                return ArmError::new(
                    503,
                    "ServiceUnavailable",
                    "The state store cannot take this request now (it may have lost its \
                     quorum). Retry after the time in Retry-After.",
                )
            }
            Some(StoreError::TooLarge { what, limit }) => {
                return ArmError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("The request is too large to store: {what} is over {limit}."),
                )
                .with_target(
                    what.strip_prefix("the value of ")
                        .unwrap_or(what)
                        .to_string(),
                )
            }
            _ => cause = c.source(),
        }
    }
    ArmError::internal(format!(
        "The state store failed: {e}. Retry; if it persists, check the server's log."
    ))
}

/// Maps a transaction error: a lost race is a 409 the client may retry.
pub fn txn_error(e: StoreError) -> ArmError {
    match e {
        StoreError::Conflict { .. } => ArmError::conflict(
            "The resource changed while this request was applied. Retry the request.",
        ),
        other => internal(other),
    }
}

/// Parses a request body as a JSON object (empty: `{}` unless `required`).
pub fn body_object(body: &[u8], required: bool) -> Result<Value, ArmError> {
    if !required && body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Object(Default::default()));
    }
    shoal_model::vmss::parse_body::<serde_json::Map<String, Value>>(body).map(Value::Object)
}

/// Maps a command's failure: the refusal as it is, a lost race as a 409 the client may
/// retry, a store failure as a 500.
pub fn command_error(e: CommandError) -> ArmError {
    match e {
        CommandError::Rejected(e) => e,
        CommandError::Conflict(e) => txn_error(e),
        CommandError::Store(e) => internal(e),
        CommandError::Decode(e) => internal(e),
    }
}
