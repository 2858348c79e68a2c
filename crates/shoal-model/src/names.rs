//! Name rules Azure enforces, so a name Azure would refuse is refused here too.

use crate::error::ArmError;

/// Resource group names: 1–90 characters of letters, digits, `_`, `-`, `.`, `(`, `)`;
/// not ending with a period.
pub fn check_resource_group(name: &str) -> Result<(), ArmError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_alphanumeric() || "_-.()".contains(c));
    if name.is_empty() || name.len() > 90 || !ok_chars || name.ends_with('.') {
        return Err(ArmError::new(
            400,
            "InvalidResourceGroupName",
            format!(
                "Resource group name '{name}' is invalid: use 1-90 letters, digits, '_', '-', '.', '(' or ')', not ending with '.'."
            ),
        )
        .with_target("resourceGroupName"));
    }
    Ok(())
}

/// Scale set, gallery and image names: 1–`max` characters of letters, digits, `_`, `-`,
/// `.`; starting with a letter, digit or `_`; ending with a letter, digit or `_`.
pub fn check_resource_name(kind: &str, name: &str, max: usize) -> Result<(), ArmError> {
    let valid_edge = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    let first_ok = name.chars().next().is_some_and(valid_edge);
    let last_ok = name.chars().last().is_some_and(valid_edge);
    if name.is_empty() || name.len() > max || !chars_ok || !first_ok || !last_ok {
        return Err(ArmError::new(
            400,
            "InvalidResourceName",
            format!(
                "The {kind} name '{name}' is invalid: use 1-{max} letters, digits, '_', '-' or '.', starting and ending with a letter, digit or '_'."
            ),
        )
        .with_target("name"));
    }
    Ok(())
}

/// Gallery names allow letters, digits, `_` and `.` only (no hyphen), 1–80.
pub fn check_gallery_name(name: &str) -> Result<(), ArmError> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.starts_with('.')
        && !name.ends_with('.');
    if !ok {
        return Err(ArmError::new(
            400,
            "InvalidResourceName",
            format!("The gallery name '{name}' is invalid: use 1-80 letters, digits, '_' or '.', not starting or ending with '.'."),
        )
        .with_target("galleryName"));
    }
    Ok(())
}

/// Image versions are `Major.Minor.Patch` with 32-bit integers, as in Azure Compute Gallery.
pub fn parse_image_version(v: &str) -> Result<(u32, u32, u32), ArmError> {
    let err = || {
        ArmError::invalid_parameter(
            "galleryImageVersionName",
            format!(
                "Image version '{v}' is invalid: use Major.Minor.Patch with integers, e.g. 1.0.0."
            ),
        )
    };
    let mut parts = v.split('.');
    let mut next = || -> Result<u32, ArmError> {
        let p = parts.next().ok_or_else(err)?;
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        p.parse().map_err(|_| err())
    };
    let parsed = (next()?, next()?, next()?);
    if parts.next().is_some() {
        return Err(err());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_azure_accepts_and_refuses() {
        assert!(check_resource_group("demo").is_ok());
        assert!(check_resource_group("my-rg_(1).x").is_ok());
        assert!(check_resource_group("bad.").is_err());
        assert!(check_resource_group("").is_err());
        assert!(check_resource_group(&"a".repeat(91)).is_err());
        assert!(check_resource_name("scale set", "web", 64).is_ok());
        assert!(check_resource_name("scale set", "-web", 64).is_err());
        assert!(check_resource_name("scale set", "web-", 64).is_err());
        assert!(check_resource_name("scale set", "we b", 64).is_err());
        assert!(check_gallery_name("apps").is_ok());
        assert!(check_gallery_name("my-apps").is_err());
        assert_eq!(parse_image_version("1.0.10").unwrap(), (1, 0, 10));
        assert!(parse_image_version("1.0").is_err());
        assert!(parse_image_version("1.0.0.0").is_err());
        assert!(parse_image_version("1.-1.0").is_err());
    }

    proptest::proptest! {
        #[test]
        fn name_checks_never_panic(s in "\\PC{0,100}") {
            let _ = check_resource_group(&s);
            let _ = check_resource_name("x", &s, 64);
            let _ = check_gallery_name(&s);
            let _ = parse_image_version(&s);
        }
    }
}
