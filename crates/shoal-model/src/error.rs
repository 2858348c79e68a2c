//! ARM error bodies: every error a client can see, with a stable code and a target.
//!
//! Handlers and the engine return [`ArmError`]; the HTTP layer turns it into
//! `{"error":{"code","message","target","details"}}` with its status code.

use serde::{Deserialize, Serialize};

/// An error in Azure Resource Manager's shape, with the HTTP status it is sent with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ArmError {
    #[serde(skip)]
    pub status: u16,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ArmError>,
}

/// The wire envelope `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ArmError,
}

impl ArmError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ArmError {
            status,
            code: code.to_string(),
            message: message.into(),
            target: None,
            details: vec![],
        }
    }

    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// 400: a field has a value Shoal cannot accept. `target` names the field.
    pub fn invalid_parameter(target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameter", message).with_target(target)
    }

    /// 400: the body is not JSON, or not an object.
    pub fn invalid_request_content(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequestContent", message)
    }

    /// 404: the resource does not exist.
    pub fn not_found(kind: &str, name: &str) -> Self {
        Self::new(
            404,
            "ResourceNotFound",
            format!("The {kind} '{name}' was not found."),
        )
        .with_target(name.to_string())
    }

    /// 404: the resource group does not exist.
    pub fn resource_group_not_found(name: &str) -> Self {
        Self::new(
            404,
            "ResourceGroupNotFound",
            format!("Resource group '{name}' could not be found. Create it first (shoal group create --name {name} --location local)."),
        )
        .with_target(name.to_string())
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// 409: the operation is not allowed in the resource's current state.
    pub fn operation_not_allowed(message: impl Into<String>) -> Self {
        Self::new(409, "OperationNotAllowed", message)
    }

    /// 412: an `If-Match` etag did not match.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(412, "PreconditionFailed", message)
    }

    /// 500: something went wrong inside Shoal (never caused by input).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalServerError", message)
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: self.clone(),
        }
    }
}

pub type ArmResult<T> = Result<T, ArmError>;
