//! Automatic OS image upgrades: a set with `automaticOSUpgradePolicy.enableAutomaticOSUpgrade`
//! whose image reference names an image definition (no version, or `latest`) takes each
//! newer published version on its own — its model is brought to that version (a generic
//! model update, as `osRollingUpgrade` does) and an upgrade started by the `Platform`
//! rolls it out under the set's rolling policy, with automatic rollback unless
//! `disableAutomaticRollback`. A version that was rolled back is not tried again.
//!
//! [`wants`] is the pure decision; [`check`] asks the galleries for the newest version and
//! applies the decision through the command layer. The controller calls [`check`] for a
//! set with nothing else to do.

use serde_json::json;
use shoal_model::names::parse_image_version;
use shoal_model::records::VmssRecord;

use super::RollingUpgrade;
use crate::commands::{
    Command, CommandError, Executor, ImageResolver, Preconditions, RollingChange, RollingCommand,
    SetChange, SetCommand,
};

/// Whether `set` should move to image version `newest` now.
pub fn wants(set: &VmssRecord, newest: &str, record: Option<&RollingUpgrade>) -> bool {
    // An image definition, or a platform image asked for as `latest`, follows new versions.
    let follows_definition = set.model.image_id().is_some_and(|id| {
        id.strip_prefix("urn:").map_or_else(
            || shoal_model::ids::parse_image_id(&id).is_some_and(|r| r.version.is_none()),
            |urn| urn.to_ascii_lowercase().ends_with(":latest"),
        )
    });
    let newer = match (
        parse_image_version(newest),
        parse_image_version(&set.launch.image_version),
    ) {
        (Ok(n), Ok(c)) => n > c,
        _ => false,
    };
    let ours = record.filter(|r| r.unique_id == set.model.props().unique_id);
    set.model.automatic_os_upgrade().is_some()
        && !set.deleting
        && follows_definition
        && newer
        && !ours.is_some_and(|r| r.is_running() || r.bad_versions.iter().any(|b| b == newest))
}

/// Starts an automatic OS upgrade of `set` when a newer version of its image is
/// published. Returns whether it wrote something.
pub async fn check(
    executor: &Executor,
    images: &dyn ImageResolver,
    set: &VmssRecord,
    record: Option<&RollingUpgrade>,
) -> Result<bool, CommandError> {
    if set.model.automatic_os_upgrade().is_none() {
        return Ok(false);
    }
    let Some(image_id) = set.model.image_id() else {
        return Ok(false);
    };
    let newest = images.resolve(&image_id).await?;
    if !wants(set, &newest.version, record) {
        return Ok(false);
    }
    tracing::info!(set = %set.vmss.name, version = %newest.version, "automatic OS upgrade");
    executor
        .execute(Command::ScaleSet(SetCommand {
            vmss: set.vmss.clone(),
            change: SetChange::Patch(json!({})),
            preconditions: Preconditions::default(),
        }))
        .await?;
    executor
        .execute(Command::Rolling(RollingCommand {
            vmss: set.vmss.clone(),
            change: RollingChange::Start { platform: true },
        }))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::tests::set;

    fn auto_set(image: &str) -> VmssRecord {
        let mut s = set(
            2,
            None,
            json!({"properties": {
                "upgradePolicy": {"automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": true}},
                "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}
            }}),
        );
        s.launch.image_version = "1.0.0".into();
        s
    }

    const DEF: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/apps/images/web";

    #[test]
    fn only_a_newer_version_of_a_followed_definition_that_did_not_fail() {
        let s = auto_set(DEF);
        assert!(wants(&s, "1.0.1", None));
        assert!(!wants(&s, "1.0.0", None));
        assert!(wants(
            &auto_set(&format!("{DEF}/versions/latest")),
            "1.0.1",
            None
        ));
        assert!(!wants(
            &auto_set(&format!("{DEF}/versions/1.0.0")),
            "1.0.1",
            None
        ));
        let mut r =
            crate::rolling::plan::started(&s, &[], None, "Platform", jiff::Timestamp::now());
        assert!(r.automatic_rollback);
        assert!(!wants(&s, "1.0.1", Some(&r)), "one is running");
        r.code = shoal_model::upgrade_policy::RollingStatusCode::Faulted;
        r.bad_versions.push("1.0.1".into());
        assert!(!wants(&s, "1.0.1", Some(&r)));
        assert!(wants(&s, "1.0.2", Some(&r)));
        let mut off = s.clone();
        off.model.properties.as_mut().unwrap().upgrade_policy = None;
        assert!(!wants(&off, "1.0.1", None));
    }
}
