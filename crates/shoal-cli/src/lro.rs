//! Waiting for long-running operations the ARM way: poll the `Azure-AsyncOperation` URL,
//! honouring `Retry-After` (1 s when absent), until its `status` is `Succeeded`, `Failed`
//! or `Canceled`, showing one progress line on stderr meanwhile.
//!
//! The operation body may carry Shoal's `"shoal": {"message": "3/10 instances ready"}`,
//! which the progress line shows.

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{ArmError, Client, ClientError};
use crate::progress::StatusLine;

/// Wait between polls when the server gives no `Retry-After`.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// Shortest wait between polls, even if the server asks for `Retry-After: 0`.
const MIN_POLL: Duration = Duration::from_millis(50);
/// Consecutive failures to reach the server (it may be restarting) before giving up.
const MAX_UNREACHABLE_POLLS: u32 = 30;

/// Where an operation ended, other than success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminal {
    Succeeded,
    Failed,
    Canceled,
}

fn terminal_status(status: &str) -> Option<Terminal> {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Some(Terminal::Succeeded),
        "failed" => Some(Terminal::Failed),
        "canceled" | "cancelled" => Some(Terminal::Canceled),
        _ => None,
    }
}

/// The progress line for an operation still running: `Running ... 3/10 ready (12s)`.
pub fn progress_text(message: Option<&str>, elapsed: Duration) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(message) => format!("Running ... {message} ({}s)", elapsed.as_secs()),
        None => format!("Running ... ({}s)", elapsed.as_secs()),
    }
}

/// Shoal's progress message in an operation body, if any.
fn shoal_message(body: &Value) -> Option<&str> {
    body.pointer("/shoal/message").and_then(Value::as_str)
}

/// Polls `operation` until it ends. Returns its final body when it succeeded; a failed or
/// canceled operation becomes [`ClientError::Api`] with the operation's error.
pub async fn wait(
    client: &Client,
    operation: Url,
    first_delay: Option<Duration>,
    line: &mut StatusLine,
) -> Result<Value, ClientError> {
    let start = Instant::now();
    let mut delay = first_delay.unwrap_or(DEFAULT_POLL);
    let mut unreachable = 0;
    line.update(&progress_text(None, Duration::ZERO), "InProgress|");
    loop {
        tokio::time::sleep(delay.max(MIN_POLL)).await;
        let reply = match client.send(Method::GET, operation.clone(), None).await {
            Ok(reply) => reply,
            Err(err @ (ClientError::Unreachable { .. } | ClientError::Transport { .. })) => {
                unreachable += 1;
                if unreachable >= MAX_UNREACHABLE_POLLS {
                    return Err(err);
                }
                delay = DEFAULT_POLL;
                continue;
            }
            Err(err) => return Err(err),
        };
        unreachable = 0;
        let body = reply.body.unwrap_or(Value::Null);
        let Some(status) = body.get("status").and_then(Value::as_str) else {
            return Err(ClientError::Api(ArmError {
                code: "InvalidOperationStatus".into(),
                message: format!("The operation status at {operation} has no \"status\""),
                target: None,
            }));
        };
        match terminal_status(status) {
            Some(Terminal::Succeeded) => {
                line.clear();
                return Ok(body);
            }
            Some(Terminal::Failed) => {
                line.clear();
                let error = body
                    .get("error")
                    .and_then(|error| ArmError::from_body(&serde_json::json!({ "error": error })))
                    .unwrap_or_else(|| ArmError {
                        code: "OperationFailed".into(),
                        message: "The operation failed without saying why".into(),
                        target: None,
                    });
                return Err(ClientError::Api(error));
            }
            Some(Terminal::Canceled) => {
                line.clear();
                return Err(ClientError::Api(ArmError {
                    code: "OperationCanceled".into(),
                    message: "The operation was canceled".into(),
                    target: None,
                }));
            }
            None => {
                let message = shoal_message(&body);
                let key = format!("{status}|{}", message.unwrap_or_default());
                line.update(&progress_text(message, start.elapsed()), &key);
            }
        }
        delay = reply.retry_after.unwrap_or(DEFAULT_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_reads_like_az() {
        assert_eq!(
            progress_text(Some("3/10 instances ready"), Duration::from_secs(12)),
            "Running ... 3/10 instances ready (12s)"
        );
        assert_eq!(
            progress_text(None, Duration::from_millis(900)),
            "Running ... (0s)"
        );
        assert_eq!(
            progress_text(Some(""), Duration::from_secs(2)),
            "Running ... (2s)"
        );
    }

    #[test]
    fn terminal_statuses_ignore_case() {
        assert_eq!(terminal_status("Succeeded"), Some(Terminal::Succeeded));
        assert_eq!(terminal_status("failed"), Some(Terminal::Failed));
        assert_eq!(terminal_status("Canceled"), Some(Terminal::Canceled));
        assert_eq!(terminal_status("InProgress"), None);
    }
}
