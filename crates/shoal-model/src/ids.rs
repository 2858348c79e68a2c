//! Resource ids (`/subscriptions/{sub}/resourceGroups/{rg}/providers/...`).
//!
//! Azure matches names case-insensitively, so store keys (built in [`crate::keys`]) use
//! lower-cased names while the resources keep the spelling they were created with.

use crate::keys;
pub use crate::keys::{gallery_key, image_key, image_version_key, image_version_prefix, rg_key};

/// Identifies a scale set.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct VmssRef {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

impl VmssRef {
    pub fn new(sub: &str, rg: &str, name: &str) -> Self {
        VmssRef {
            subscription: sub.to_string(),
            resource_group: rg.to_string(),
            name: name.to_string(),
        }
    }

    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// `vmss/{sub}/{rg}/{name}`, lower-cased (see [`crate::keys`]).
    pub fn key(&self) -> String {
        keys::vmss_key(self)
    }

    /// Prefix of the desired-instance records of this set.
    pub fn instance_prefix(&self) -> String {
        keys::instance_prefix(self)
    }

    /// Prefix of the observed-status records of this set.
    pub fn status_prefix(&self) -> String {
        keys::status_prefix(self)
    }

    pub fn instance_key(&self, id: u64) -> String {
        keys::instance_key(self, id)
    }

    pub fn status_key(&self, id: u64) -> String {
        keys::status_key(self, id)
    }

    /// A file-name-safe identity of one instance, used by agents and drivers.
    pub fn instance_slug(&self, id: u64) -> String {
        let clean = |s: &str| {
            s.to_ascii_lowercase()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        format!(
            "{}.{}.{}.{id}",
            clean(&self.subscription),
            clean(&self.resource_group),
            clean(&self.name)
        )
    }
}

pub fn rg_id(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

pub fn gallery_id(sub: &str, rg: &str, g: &str) -> String {
    format!(
        "{}/providers/Microsoft.Compute/galleries/{g}",
        rg_id(sub, rg)
    )
}

/// A reference to a gallery image parsed from an `imageReference.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub subscription: String,
    pub resource_group: String,
    pub gallery: String,
    pub image: String,
    /// `None` (or `latest`) means the newest version.
    pub version: Option<String>,
}

/// Parses `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/{g}/images/{i}[/versions/{v}]`,
/// case-insensitively.
pub fn parse_image_id(id: &str) -> Option<ImageRef> {
    let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if segs.len() != 10 && segs.len() != 12 {
        return None;
    }
    let fixed = [
        (0, "subscriptions"),
        (2, "resourceGroups"),
        (4, "providers"),
        (5, "Microsoft.Compute"),
        (6, "galleries"),
        (8, "images"),
    ];
    if !fixed.iter().all(|(i, s)| eq(segs[*i], s)) {
        return None;
    }
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let version = if segs.len() == 12 {
        if !eq(segs[10], "versions") {
            return None;
        }
        Some(segs[11].to_string()).filter(|v| !v.eq_ignore_ascii_case("latest"))
    } else {
        None
    };
    Some(ImageRef {
        subscription: segs[1].to_string(),
        resource_group: segs[3].to_string(),
        gallery: segs[7].to_string(),
        image: segs[9].to_string(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids() {
        let r = parse_image_id("/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0").unwrap();
        assert_eq!(
            (r.gallery.as_str(), r.image.as_str(), r.version.as_deref()),
            ("apps", "web", Some("1.0.0"))
        );
        let r = parse_image_id("/subscriptions/s/resourcegroups/demo/providers/microsoft.compute/galleries/apps/images/web").unwrap();
        assert_eq!(r.version, None);
        assert!(parse_image_id("/subscriptions/s/resourceGroups/demo").is_none());
        assert!(parse_image_id("").is_none());
    }

    #[test]
    fn keys_are_case_insensitive_and_sorted_numerically() {
        let a = VmssRef::new("S", "Demo", "Web");
        let b = VmssRef::new("s", "demo", "web");
        assert_eq!(a.key(), b.key());
        assert!(a.instance_key(9) < a.instance_key(10));
    }
}
