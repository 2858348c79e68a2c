//! `--image` values: `GALLERY/IMAGE[:VERSION]` (`apps/web:1.0.0`; `:latest` or no version
//! means the newest version) or a full gallery image resource id, turned into the
//! `imageReference.id` a scale set carries.

use std::fmt;
use std::str::FromStr;

use crate::request::{image_path, version_path};

/// A parsed `--image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An image in a gallery of the scale set's resource group; `version: None` is latest.
    Gallery {
        gallery: String,
        image: String,
        version: Option<String>,
    },
    /// A full resource id, used as given.
    Id(String),
}

/// Why an `--image` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Invalid image '{input}': {reason}. Expected GALLERY/IMAGE[:VERSION] (e.g. apps/web:1.0.0 \
     or apps/web:latest) or a full id \
     (/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/galleries/G/images/I[/versions/V])"
)]
pub struct ImageRefError {
    pub input: String,
    pub reason: String,
}

impl ImageRef {
    /// The `imageReference.id` for a scale set in resource group `rg`: a version id, or the
    /// image definition's id (which means its latest version).
    pub fn resource_id(&self, sub: &str, rg: &str) -> String {
        match self {
            ImageRef::Id(id) => id.clone(),
            ImageRef::Gallery {
                gallery,
                image,
                version: Some(version),
            } => version_path(sub, rg, gallery, image, version),
            ImageRef::Gallery {
                gallery,
                image,
                version: None,
            } => image_path(sub, rg, gallery, image),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Id(id) => f.write_str(id),
            ImageRef::Gallery {
                gallery,
                image,
                version,
            } => write!(
                f,
                "{gallery}/{image}:{}",
                version.as_deref().unwrap_or("latest")
            ),
        }
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| ImageRefError {
            input: input.to_owned(),
            reason,
        };
        let text = input.trim();
        if text.is_empty() {
            return Err(fail("it is empty".into()));
        }
        if text.starts_with('/') {
            return parse_id(text).map_err(fail);
        }
        let (path, version) = match text.split_once(':') {
            Some((path, version)) => (path, Some(version)),
            None => (text, None),
        };
        let Some((gallery, image)) = path.split_once('/') else {
            return Err(fail("it names no gallery".into()));
        };
        if image.contains('/') {
            return Err(fail("it has more than one '/'".into()));
        }
        check_name("gallery", gallery).map_err(fail)?;
        check_name("image", image).map_err(fail)?;
        let version = match version {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("latest") => None,
            Some(v) => {
                check_name("version", v).map_err(fail)?;
                Some(v.to_owned())
            }
        };
        Ok(ImageRef::Gallery {
            gallery: gallery.to_owned(),
            image: image.to_owned(),
            version,
        })
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} name is empty"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "the {what} name '{name}' contains '{bad}' (use letters, digits, '.', '_' and '-')"
        ));
    }
    Ok(())
}

/// Checks a full id has the gallery image shape (keywords case-insensitive, as ARM).
fn parse_id(id: &str) -> Result<ImageRef, String> {
    const SHAPE: [&str; 10] = [
        "subscriptions",
        "",
        "resourceGroups",
        "",
        "providers",
        "Microsoft.Compute",
        "galleries",
        "",
        "images",
        "",
    ];
    let parts: Vec<&str> = id.trim_end_matches('/').split('/').skip(1).collect();
    let shaped = |parts: &[&str]| {
        parts.iter().zip(SHAPE).all(|(part, keyword)| {
            !part.is_empty() && (keyword.is_empty() || part.eq_ignore_ascii_case(keyword))
        })
    };
    let ok = match parts.len() {
        10 => shaped(&parts),
        12 => {
            shaped(&parts[..10])
                && parts[10].eq_ignore_ascii_case("versions")
                && !parts[11].is_empty()
        }
        _ => false,
    };
    if ok {
        Ok(ImageRef::Id(id.to_owned()))
    } else {
        Err("it is not a gallery image id".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gallery(g: &str, i: &str, v: Option<&str>) -> ImageRef {
        ImageRef::Gallery {
            gallery: g.into(),
            image: i.into(),
            version: v.map(str::to_owned),
        }
    }

    #[test]
    fn short_forms_parse() {
        assert_eq!(
            "apps/web:1.0.0".parse(),
            Ok(gallery("apps", "web", Some("1.0.0")))
        );
        assert_eq!("apps/web".parse(), Ok(gallery("apps", "web", None)));
        assert_eq!("apps/web:latest".parse(), Ok(gallery("apps", "web", None)));
        assert_eq!("apps/web:LATEST".parse(), Ok(gallery("apps", "web", None)));
    }

    #[test]
    fn ids_name_a_version_or_the_latest() {
        let image: ImageRef = "apps/web:1.0.0".parse().unwrap();
        assert_eq!(
            image.resource_id("sub", "demo"),
            "/subscriptions/sub/resourceGroups/demo/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0"
        );
        let latest: ImageRef = "apps/web".parse().unwrap();
        assert_eq!(
            latest.resource_id("sub", "demo"),
            "/subscriptions/sub/resourceGroups/demo/providers/Microsoft.Compute/galleries/apps/images/web"
        );
    }

    #[test]
    fn full_ids_pass_through() {
        let id = "/subscriptions/s/resourcegroups/other/providers/microsoft.compute/galleries/apps/images/web/versions/2.0.0";
        let image: ImageRef = id.parse().unwrap();
        assert_eq!(image.resource_id("ignored", "ignored"), id);
        let latest =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i";
        assert_eq!(latest.parse(), Ok(ImageRef::Id(latest.into())));
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        let cases = [
            ("", "it is empty"),
            ("web", "it names no gallery"),
            ("web:1.0.0", "it names no gallery"),
            ("a/b/c", "more than one '/'"),
            ("/a/b", "not a gallery image id"),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/x",
                "not a gallery image id",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i/versions/",
                "not a gallery image id",
            ),
            ("apps/:1", "the image name is empty"),
            ("/web", "not a gallery image id"),
            ("apps/web:", "the version name is empty"),
            ("my apps/web", "contains ' '"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<ImageRef>().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(reason), "{input:?}: {text}");
            assert!(text.contains("Expected GALLERY/IMAGE[:VERSION]"), "{text}");
        }
    }
}
