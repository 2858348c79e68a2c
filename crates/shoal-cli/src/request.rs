//! What a command sends, described without doing it: [`ApiRequest`] values built by pure
//! functions, plus the ARM resource paths they address.
//!
//! Every path here is relative to the endpoint, with its segments percent-encoded; the
//! [`crate::client`] adds `api-version` when it sends one.

use reqwest::Method;
use serde_json::Value;

use crate::output::Table;

/// One HTTP request a command makes, and what to do with the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: Method,
    /// Path below the endpoint, percent-encoded, with any query except `api-version`.
    pub path: String,
    /// JSON body, if the request has one.
    pub body: Option<Value>,
    pub kind: Kind,
}

/// How a command treats the answer to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Print the response body.
    Show(Table),
    /// Follow `nextLink` pages and print every item of `value` as one JSON array.
    List(Table),
    /// Create or change a resource: wait for its operation, then GET `path` again and print
    /// it (as `az` prints the final resource). With `no_wait`, print the first answer.
    Write { no_wait: bool, table: Table },
    /// An action or a delete: wait for its operation and print nothing. With `no_wait`,
    /// print the first answer's body, if any.
    Action { no_wait: bool },
    /// Copy the response body to stdout as it arrives (logs).
    Stream,
}

impl ApiRequest {
    pub fn get(path: String, table: Table) -> Self {
        ApiRequest {
            method: Method::GET,
            path,
            body: None,
            kind: Kind::Show(table),
        }
    }

    pub fn list(path: String, table: Table) -> Self {
        ApiRequest {
            method: Method::GET,
            path,
            body: None,
            kind: Kind::List(table),
        }
    }

    pub fn write(method: Method, path: String, body: Value, no_wait: bool, table: Table) -> Self {
        ApiRequest {
            method,
            path,
            body: Some(body),
            kind: Kind::Write { no_wait, table },
        }
    }

    pub fn action(method: Method, path: String, body: Option<Value>, no_wait: bool) -> Self {
        ApiRequest {
            method,
            path,
            body,
            kind: Kind::Action { no_wait },
        }
    }
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved characters).
pub fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `/subscriptions/{sub}`.
pub fn subscription_path(sub: &str) -> String {
    format!("/subscriptions/{}", segment(sub))
}

/// `/subscriptions/{sub}/resourcegroups/{rg}`: the resource group itself, spelled as the
/// Azure SDKs spell it for resource-group operations.
pub fn group_path(sub: &str, rg: &str) -> String {
    format!("{}/resourcegroups/{}", subscription_path(sub), segment(rg))
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute`.
pub fn compute_path(sub: &str, rg: &str) -> String {
    format!(
        "{}/resourceGroups/{}/providers/Microsoft.Compute",
        subscription_path(sub),
        segment(rg)
    )
}

/// `…/Microsoft.Compute/galleries/{gallery}`.
pub fn gallery_path(sub: &str, rg: &str, gallery: &str) -> String {
    format!("{}/galleries/{}", compute_path(sub, rg), segment(gallery))
}

/// `…/galleries/{gallery}/images/{image}`.
pub fn image_path(sub: &str, rg: &str, gallery: &str, image: &str) -> String {
    format!(
        "{}/images/{}",
        gallery_path(sub, rg, gallery),
        segment(image)
    )
}

/// `…/galleries/{gallery}/images/{image}/versions/{version}`.
pub fn version_path(sub: &str, rg: &str, gallery: &str, image: &str, version: &str) -> String {
    format!(
        "{}/versions/{}",
        image_path(sub, rg, gallery, image),
        segment(version)
    )
}

/// `…/Microsoft.Compute/virtualMachineScaleSets/{name}`.
pub fn vmss_path(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/virtualMachineScaleSets/{}",
        compute_path(sub, rg),
        segment(name)
    )
}

/// `…/virtualMachineScaleSets/{name}/virtualMachines/{instance_id}`.
pub fn instance_path(sub: &str, rg: &str, name: &str, instance_id: &str) -> String {
    format!(
        "{}/virtualMachines/{}",
        vmss_path(sub, rg, name),
        segment(instance_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("web-1.0_x~"), "web-1.0_x~");
        assert_eq!(segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn paths_have_arm_shape() {
        let sub = "s";
        assert_eq!(
            group_path(sub, "demo"),
            "/subscriptions/s/resourcegroups/demo"
        );
        assert_eq!(
            version_path(sub, "demo", "apps", "web", "1.0.0"),
            "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0"
        );
        assert_eq!(
            instance_path(sub, "demo", "web", "3"),
            "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3"
        );
    }
}
