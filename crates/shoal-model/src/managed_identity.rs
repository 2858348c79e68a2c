//! User-assigned managed identities (`Microsoft.ManagedIdentity/userAssignedIdentities`):
//! a principal of its own that lives in a resource group, outlives the scale sets that
//! use it and can be shared by several. Its `principalId` (what role assignments name)
//! and `clientId` (what an instance names when it asks for its token) are made by the
//! server when it is created and kept across updates.
//!
//! A scale set names the ones it uses as the keys of
//! `identity.userAssignedIdentities`; [`settle_user_identities`] checks that each exists
//! and fills in its `principalId` and `clientId`, as Azure answers them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::arm::Resource;
use crate::error::ArmError;

/// The ARM type, the id path and the start of list URLs.
pub const UAI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";
/// The first segment of the store keys of identities (`uai/{sub}/{rg}/{name}`).
pub const UAI_PREFIX: &str = "uai";

/// `properties` of an identity: all read-only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UaiProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

pub type UserAssignedIdentity = Resource<UaiProperties>;

/// What a scale set needs to know of an identity it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityIds {
    pub principal_id: String,
    pub client_id: String,
}

/// The store key of the identity an ARM id names, or `None` when the id is not a
/// user-assigned identity's.
pub fn key_of_id(id: &str) -> Option<String> {
    let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
    let [subs, sub, groups, rg, providers, ns, ty, name] = segs.as_slice() else {
        return None;
    };
    let ok = subs.eq_ignore_ascii_case("subscriptions")
        && groups.eq_ignore_ascii_case("resourceGroups")
        && providers.eq_ignore_ascii_case("providers")
        && ns.eq_ignore_ascii_case("Microsoft.ManagedIdentity")
        && ty.eq_ignore_ascii_case("userAssignedIdentities")
        && [sub, rg, name].iter().all(|s| !s.is_empty());
    ok.then(|| {
        format!(
            "{UAI_PREFIX}/{}/{}/{}",
            sub.to_ascii_lowercase(),
            rg.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        )
    })
}

/// The ids a set's `identity.userAssignedIdentities` names (as written).
pub fn named_ids(identity: Option<&Value>) -> Vec<String> {
    identity
        .and_then(|i| i.get("userAssignedIdentities"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether `identity.type` names `UserAssigned`.
fn user_assigned(identity: &Value) -> bool {
    identity["type"].as_str().is_some_and(|t| {
        t.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("UserAssigned"))
    })
}

/// Checks a set's `identity` against the identities that exist (`known`, by store key)
/// and fills each named one's `principalId` and `clientId`. The type and the map must
/// agree: `UserAssigned` names at least one identity, and only then may any be named.
pub fn settle_user_identities(
    identity: Option<&mut Value>,
    known: &BTreeMap<String, IdentityIds>,
) -> Result<(), ArmError> {
    let Some(identity) = identity.filter(|i| i.is_object()) else {
        return Ok(());
    };
    const AT: &str = "identity.userAssignedIdentities";
    let wants = user_assigned(identity);
    let map = match identity.get_mut("userAssignedIdentities") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            return Err(ArmError::invalid_parameter(
                AT,
                "userAssignedIdentities must be an object whose keys are identity ids.",
            ))
        }
    };
    let named = map.as_ref().map_or(0, |m| m.len());
    if wants && named == 0 {
        return Err(ArmError::invalid_parameter(
            AT,
            "identity.type UserAssigned needs at least one identity in userAssignedIdentities \
             (its id as the key, {} as the value).",
        ));
    }
    let Some(map) = map else { return Ok(()) };
    if !wants && named > 0 {
        return Err(ArmError::invalid_parameter(
            "identity.type",
            "userAssignedIdentities is given but identity.type is not UserAssigned or \
             'SystemAssigned, UserAssigned'.",
        ));
    }
    for (id, value) in map.iter_mut() {
        let Some(key) = key_of_id(id) else {
            return Err(ArmError::invalid_parameter(
                AT,
                format!(
                    "'{id}' is not the id of a user-assigned identity \
                     (/subscriptions/…/resourceGroups/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)."
                ),
            ));
        };
        let Some(ids) = known.get(&key) else {
            return Err(ArmError::new(
                400,
                "FailedIdentityOperation",
                format!(
                    "Identity operation failed: the user-assigned identity '{id}' was not found. \
                     Create it first (shoal identity create) or remove it from userAssignedIdentities."
                ),
            )
            .with_target(AT));
        };
        if !value.is_object() && !value.is_null() {
            return Err(ArmError::invalid_parameter(
                format!("{AT}['{id}']"),
                "Each identity's value must be an object ({}).",
            ));
        }
        *value = json!({"principalId": ids.principal_id, "clientId": ids.client_id});
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/Web";

    fn known() -> BTreeMap<String, IdentityIds> {
        BTreeMap::from([(
            "uai/s/rg/web".to_string(),
            IdentityIds {
                principal_id: "p".into(),
                client_id: "c".into(),
            },
        )])
    }

    #[test]
    fn ids_map_to_store_keys_case_insensitively() {
        assert_eq!(key_of_id(ID).as_deref(), Some("uai/s/rg/web"));
        assert_eq!(
            key_of_id(&ID.to_ascii_lowercase()).as_deref(),
            Some("uai/s/rg/web")
        );
        assert_eq!(key_of_id("/subscriptions/S/resourceGroups/RG"), None);
        assert_eq!(
            key_of_id(
                "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/x"
            ),
            None
        );
    }

    #[test]
    fn named_identities_are_filled_in_and_unknown_ones_refused() {
        let mut id =
            json!({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {ID: {}}});
        settle_user_identities(Some(&mut id), &known()).unwrap();
        assert_eq!(
            id["userAssignedIdentities"][ID],
            json!({"principalId": "p", "clientId": "c"})
        );

        let mut other = json!({"type": "UserAssigned", "userAssignedIdentities": {ID.replace("Web", "db"): {}}});
        let err = settle_user_identities(Some(&mut other), &known()).unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (400, "FailedIdentityOperation")
        );

        for bad in [
            json!({"type": "UserAssigned"}),
            json!({"type": "UserAssigned", "userAssignedIdentities": {}}),
            json!({"type": "SystemAssigned", "userAssignedIdentities": {ID: {}}}),
            json!({"type": "UserAssigned", "userAssignedIdentities": ["x"]}),
            json!({"type": "UserAssigned", "userAssignedIdentities": {"/subscriptions/S": {}}}),
            json!({"type": "UserAssigned", "userAssignedIdentities": {ID: 3}}),
        ] {
            let mut v = bad.clone();
            let err = settle_user_identities(Some(&mut v), &known()).unwrap_err();
            assert_eq!(err.status, 400, "{bad}");
        }
        let mut none = json!({"type": "None"});
        settle_user_identities(Some(&mut none), &known()).unwrap();
    }
}
