//! `Microsoft.ManagedIdentity/userAssignedIdentities`, served by [`crate::arm_crud`]:
//! create (the server makes the `principalId` and `clientId`, kept across updates), read,
//! list and delete. As in Azure, deleting an identity a scale set still names is allowed;
//! the set's instances then get `IdentityNotFound` when they ask for its token.

use serde_json::{json, Value};
use shoal_model::managed_identity::{UserAssignedIdentity, UAI_PREFIX, UAI_TYPE};
use shoal_model::ArmError;

use crate::arm_crud::{self, Addr, ArmKind};
use crate::state::ApiState;

/// `Microsoft.ManagedIdentity/userAssignedIdentities`, stored under `uai/`.
pub struct UserAssignedIdentities;

impl ArmKind for UserAssignedIdentities {
    type Model = UserAssignedIdentity;
    const TYPE: &'static str = UAI_TYPE;
    const ID_PATH: &'static str = UAI_TYPE;
    const KEY_PREFIX: &'static str = UAI_PREFIX;
    const NOUN: &'static str = "user-assigned identity";
    const MAX_NAME_LEN: usize = 128;
    const PATCH: bool = true;

    async fn admit(
        st: &ApiState,
        uai: &mut UserAssignedIdentity,
        _: &str,
        _: Addr<'_>,
        existing: Option<&UserAssignedIdentity>,
    ) -> Result<(), ArmError> {
        let kept = existing.map(|e| &e.properties);
        let new_id = || uuid::Uuid::new_v4().to_string();
        let p = &mut uai.properties;
        p.principal_id = kept
            .and_then(|k| k.principal_id.clone())
            .or_else(|| Some(new_id()));
        p.client_id = kept
            .and_then(|k| k.client_id.clone())
            .or_else(|| Some(new_id()));
        p.tenant_id = Some(st.tenant_id().await?);
        Ok(())
    }

    async fn view(
        _: &ApiState,
        uai: &UserAssignedIdentity,
        revision: u64,
    ) -> Result<Value, ArmError> {
        let mut v = serde_json::to_value(uai).unwrap_or(Value::Null);
        v["etag"] = json!(arm_crud::etag(revision));
        Ok(v)
    }
}

/// The identity a principal id belongs to, if it is a user-assigned identity's.
pub async fn by_principal(
    st: &ApiState,
    principal_id: &str,
) -> Result<Option<UserAssignedIdentity>, ArmError> {
    Ok(arm_crud::all::<UserAssignedIdentities>(st)
        .await?
        .into_iter()
        .map(|r| r.value)
        .find(|u| {
            u.properties
                .principal_id
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(principal_id))
        }))
}

/// The action Azure checks on each identity a scale set is given.
pub const ASSIGN_ACTION: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";

/// A scale set PUT or PATCH (`body`) may name user-assigned identities only if the
/// caller may also assign each one: otherwise anyone who may write a set could borrow any
/// identity's roles. Azure's 403 `LinkedAuthorizationFailed`. A body that does not parse
/// is left to the handler to refuse.
pub async fn check_assign(
    st: &ApiState,
    caller: &shoal_auth::Principal,
    set_scope: &str,
    body: &[u8],
) -> Result<(), ArmError> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    for id in shoal_model::managed_identity::named_ids(v.get("identity")) {
        let scope = id.trim_end_matches('/');
        if !crate::rbac::allowed(st, caller, ASSIGN_ACTION, scope).await? {
            return Err(ArmError::new(
                403,
                "LinkedAuthorizationFailed",
                format!(
                    "The client '{}' with object id '{}' has permission to perform action \
                     'Microsoft.Compute/virtualMachineScaleSets/write' on scope '{set_scope}'; \
                     however, it does not have permission to perform action(s) '{ASSIGN_ACTION}' \
                     on the linked scope(s) '{scope}' (respectively) or the linked scope(s) are invalid.",
                    caller.appid, caller.oid
                ),
            ));
        }
    }
    Ok(())
}
