//! Writes to a scale set's model: create or replace (PUT), update (PATCH), delete.
//!
//! [`desired_model`] turns the command and the stored set into the model the client asks
//! for (replaced or merged, given Azure's defaults, validated, capacity checked);
//! the executor resolves the image that model names; [`decide`] then answers the
//! records to write: the set with its launch spec (whose generation moves when what
//! instances run changes) and the operation the request's `Azure-AsyncOperation` polls.

use crate::planner::Resources;
use serde_json::Value;
use shoal_model::managed_identity::{self, IdentityIds};
use shoal_model::records::{operation_key, LaunchSpec, OperationWait, VmssRecord};
use shoal_model::vmss::{self as model, VirtualMachineScaleSet, VMSS_TYPE};
use shoal_model::{ids::VmssRef, sku, ArmError};
use shoal_store::Expect;

use super::{
    capacity, etag, follow, require_not_deleting, Env, Limits, ResolvedImage, SetChange,
    SetCommand, Writes,
};
use crate::kv::{self, Versioned};

/// What a scale-set command is decided on.
#[derive(Debug, Clone)]
pub struct SetState {
    /// The stored set, if any.
    pub existing: Option<Versioned<VmssRecord>>,
    /// The image the new model names, resolved (PUT and PATCH).
    pub image: Option<ResolvedImage>,
    /// What each registered host can hold in all ([`crate::hosts::capacity`]): a size no
    /// host can ever hold is refused at once instead of waiting for room for ever.
    pub hosts: Vec<Resources>,
    /// Zones with a registered host that takes placements (not cordoned or draining).
    pub host_zones: std::collections::BTreeSet<String>,
    /// The user-assigned identities the new model names that exist, by store key.
    pub identities: std::collections::BTreeMap<String, IdentityIds>,
}

/// The user-assigned identities `identity` (a set's) names that exist: each with the id
/// as written, its store key and the stored identity.
pub async fn user_identities(
    store: &dyn shoal_store::Store,
    identity: Option<&Value>,
) -> Result<Vec<(String, String, managed_identity::UserAssignedIdentity)>, kv::KvError> {
    let mut found = Vec::new();
    for id in managed_identity::named_ids(identity) {
        let Some(key) = managed_identity::key_of_id(&id) else {
            continue;
        };
        if let Some(uai) = kv::get_json(store, &key).await? {
            found.push((id, key, uai.value));
        }
    }
    Ok(found)
}

/// Properties Shoal sets itself; a client that echoes them back changes nothing.
const READ_ONLY: [&str; 3] = ["provisioningState", "uniqueId", "timeCreated"];

/// The model a PUT or PATCH asks for, once checked: the set may be written now, the
/// preconditions hold, the body replaces or merges into the stored model, and the
/// result (with Azure's defaults) is valid and within the capacity limit.
pub fn desired_model(
    cmd: &SetCommand,
    existing: Option<&Versioned<VmssRecord>>,
    limits: &Limits,
) -> Result<VirtualMachineScaleSet, ArmError> {
    let previous = existing.map(|e| &e.value.model);
    let mut m = match (&cmd.change, existing) {
        (SetChange::Delete, _) => {
            return Err(ArmError::internal("A delete has no model."));
        }
        (SetChange::Patch(_), None) => {
            return Err(ArmError::not_found(VMSS_TYPE, &cmd.vmss.name));
        }
        (SetChange::Put(m), _) => {
            check_writable(cmd, existing)?;
            let mut m = (**m).clone();
            if let Some(prev) = previous {
                model::keep_on_put(&mut m, prev);
            }
            m
        }
        (SetChange::Patch(patch), Some(e)) => {
            check_writable(cmd, existing)?;
            let mut merged = serde_json::to_value(&e.value.model)
                .map_err(|e| ArmError::internal(e.to_string()))?;
            let mut patch = patch.clone();
            if let Some(p) = patch.get_mut("properties").and_then(Value::as_object_mut) {
                for ro in READ_ONLY {
                    p.remove(ro);
                }
            }
            model::patch_json(&mut merged, &patch);
            model::parse_typed(&merged)?
        }
    };
    model::normalize(&mut m);
    model::validate(&m, previous)?;
    capacity::check(m.capacity(), limits)?;
    Ok(m)
}

fn check_writable(
    cmd: &SetCommand,
    existing: Option<&Versioned<VmssRecord>>,
) -> Result<(), ArmError> {
    if let Some(e) = existing {
        require_not_deleting(&e.value)?;
    }
    cmd.preconditions
        .check(existing.map(|e| etag(e.revision)).as_deref())
}

/// Decides the writes of a [`SetCommand`].
pub fn decide(
    cmd: &SetCommand,
    state: &SetState,
    limits: &Limits,
    env: &Env,
) -> Result<Writes, ArmError> {
    match cmd.change {
        SetChange::Delete => Ok(delete(cmd, state, env)),
        SetChange::Put(_) | SetChange::Patch(_) => write(cmd, state, limits, env),
    }
}

/// Strict `zoneBalance` that cannot be met now is Azure's 409 `OperationNotAllowed`, at
/// once: the set's instances need as many of its zones as they can fill (up to one per
/// instance), and some of those zones have no host taking placements. (No hosts at all:
/// nothing to judge by, the placement waits for one.)
fn check_strict_zones(
    m: &VirtualMachineScaleSet,
    host_zones: &std::collections::BTreeSet<String>,
) -> Result<(), ArmError> {
    let zones = m.zones.clone().unwrap_or_default();
    if m.props().zone_balance != Some(true) || zones.is_empty() || host_zones.is_empty() {
        return Ok(());
    }
    let needed = usize::try_from(m.capacity().max(0))
        .unwrap_or(0)
        .min(zones.len());
    let usable: Vec<&String> = zones.iter().filter(|z| host_zones.contains(*z)).collect();
    if usable.len() >= needed {
        return Ok(());
    }
    let missing: Vec<&String> = zones.iter().filter(|z| !host_zones.contains(*z)).collect();
    Err(ArmError::new(
        409,
        "OperationNotAllowed",
        format!(
            "zoneBalance is true, but zone(s) {} have no host that takes instances, so {} \
             instance(s) cannot be spread evenly over zones {}. Add or uncordon a host there, \
             or set zoneBalance to false (best effort).",
            missing
                .iter()
                .map(|z| z.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            m.capacity(),
            zones.join(", ")
        ),
    )
    .with_target("properties.zoneBalance"))
}

/// A size larger than every host is Azure's 409 `SkuNotAvailable`, at once (no hosts
/// registered yet: nothing to judge by, the placement waits for one).
fn check_fits_a_host(size: &sku::Size, hosts: &[Resources]) -> Result<(), ArmError> {
    let need = Resources::instance(size.vcpus, size.memory_mb);
    if hosts.is_empty() || hosts.iter().any(|h| h.fits(&need)) {
        return Ok(());
    }
    let largest_cpu = hosts.iter().map(|h| h.vcpus).max().unwrap_or(0);
    let largest_mem = hosts.iter().map(|h| h.memory_mb).max().unwrap_or(0);
    Err(ArmError::new(
        409,
        "SkuNotAvailable",
        format!(
            "The requested size '{}' asks for {} vCPUs and {} MB, more than any host offers \
             (at most {largest_cpu} vCPUs and {largest_mem} MB): choose a smaller size, or \
             add a host that can hold it.",
            size.name, size.vcpus, size.memory_mb
        ),
    )
    .with_target("sku.name"))
}

fn write(
    cmd: &SetCommand,
    state: &SetState,
    limits: &Limits,
    env: &Env,
) -> Result<Writes, ArmError> {
    let existing = state.existing.as_ref();
    let mut m = desired_model(cmd, existing, limits)?;
    let image = state
        .image
        .as_ref()
        .filter(|i| Some(i.requested.as_str()) == m.image_id().as_deref())
        .ok_or_else(|| ArmError::internal("The image of the new model was not resolved."))?;
    let size = sku::lookup(m.sku_name())
        .ok_or_else(|| ArmError::invalid_parameter("sku.name", "Unknown size."))?;
    check_fits_a_host(&size, &state.hosts)?;
    check_strict_zones(&m, &state.host_zones)?;

    let mut launch = LaunchSpec {
        generation: 1,
        image_id: image.id.clone(),
        image_version: image.version.clone(),
        kind: image.shoal.kind.clone(),
        blob_id: image.shoal.blob_id.clone(),
        command: image.shoal.launch_command().to_string(),
        port: image.shoal.port,
        sku: size.name.clone(),
        vcpus: size.vcpus,
        memory_mb: size.memory_mb,
        custom_data: m.custom_data().map(String::from),
        computer_name_prefix: m
            .computer_name_prefix()
            .map(String::from)
            .unwrap_or_else(|| cmd.vmss.name.clone()),
        terminate_notice_secs: m.terminate_notice_secs(),
    };
    if let Some(prev) = existing.map(|e| &e.value.launch) {
        let same = LaunchSpec {
            generation: prev.generation,
            ..launch.clone()
        } == *prev;
        launch.generation = if same {
            prev.generation
        } else {
            prev.generation + 1
        };
    }

    // The set keeps the spelling it was created with.
    let vref = match existing {
        Some(e) => VmssRef::new(
            &cmd.vmss.subscription,
            &e.value.vmss.resource_group,
            &e.value.vmss.name,
        ),
        None => cmd.vmss.clone(),
    };
    let name = vref.name.clone();
    m.id = Some(vref.id());
    m.name = Some(name.clone());
    m.kind = Some(VMSS_TYPE.to_string());
    m.etag = None;
    let prev_props = existing.map(|e| e.value.model.props());
    let props = m.properties.get_or_insert_with(Default::default);
    props.unique_id = Some(
        prev_props
            .and_then(|p| p.unique_id.clone())
            .unwrap_or_else(|| env.unique_id.clone()),
    );
    props.time_created = Some(
        prev_props
            .and_then(|p| p.time_created.clone())
            .unwrap_or_else(|| env.now_text()),
    );
    model::settle_identity(&mut m);
    managed_identity::settle_user_identities(m.identity.as_mut(), &state.identities)?;

    let created = existing.is_none();
    let op = env.operation(
        &vref,
        format!(
            "{} scale set {name}",
            if created { "Create" } else { "Update" }
        ),
        OperationWait::Vmss {
            vmss: vref.clone(),
            instance_ids: None,
        },
    );
    let mut rec = VmssRecord {
        vmss: vref,
        model: m,
        launch,
        next_instance_id: existing.map_or(0, |e| e.value.next_instance_id),
        deleting: false,
        operation: None,
        services: existing
            .map(|e| e.value.services.clone())
            .unwrap_or(Value::Null),
    };
    follow(&mut rec, &op, if created { "Creating" } else { "Updating" });
    let expect = existing.map_or(Expect::Absent, |e| Expect::ModRevision(e.revision));
    Ok(Writes {
        ops: vec![
            kv::put_op(cmd.vmss.key(), &rec, expect),
            kv::put_op(operation_key(&op.id), &op, Expect::Absent),
        ],
        operation: Some(op),
        set: Some(rec),
        created,
        ..Default::default()
    })
}

/// Marks the set as deleting (the controller tears its instances down, then removes
/// it); a set that does not exist is nothing to do.
fn delete(cmd: &SetCommand, state: &SetState, env: &Env) -> Writes {
    let Some(set) = &state.existing else {
        return Writes::default();
    };
    let mut rec = set.value.clone();
    let op = env.operation(
        &rec.vmss,
        format!("Delete scale set {}", cmd.vmss.name),
        OperationWait::VmssGone {
            vmss: rec.vmss.clone(),
        },
    );
    rec.deleting = true;
    follow(&mut rec, &op, "Deleting");
    Writes {
        ops: vec![
            kv::put_op(set.key.clone(), &rec, Expect::ModRevision(set.revision)),
            kv::put_op(operation_key(&op.id), &op, Expect::Absent),
        ],
        operation: Some(op),
        set: Some(rec),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::testing::{env, image, set_record, IMAGE};
    use crate::commands::Preconditions;
    use serde_json::json;

    fn state_of(set: VmssRecord) -> SetState {
        SetState {
            existing: Some(Versioned {
                key: set.vmss.key(),
                value: set,
                revision: 4,
            }),
            image: Some(image()),
            hosts: Vec::new(),
            host_zones: Default::default(),
            identities: Default::default(),
        }
    }

    fn with_extras() -> VmssRecord {
        let mut set = set_record(2);
        let body = json!({
            "tags": {"team": "web", "tier": "front"},
            "properties": {
                "automaticRepairsPolicy": {"enabled": true, "gracePeriod": "PT10M"},
                "virtualMachineProfile": {
                    "osProfile": {"customData": "aGk=", "adminPassword": "secret"},
                    "extensionProfile": {"extensions": [{"name": "health"}]}
                }
            }
        });
        let mut v = serde_json::to_value(&set.model).unwrap();
        model::merge_json(&mut v, &body);
        set.model = model::parse_typed(&v).unwrap();
        model::normalize(&mut set.model);
        set
    }

    fn put(body: serde_json::Value) -> SetCommand {
        SetCommand {
            vmss: shoal_model::ids::VmssRef::new("s", "demo", "web"),
            change: SetChange::Put(Box::new(model::parse_typed(&body).unwrap())),
            preconditions: Preconditions::default(),
        }
    }

    fn patch(body: serde_json::Value) -> SetCommand {
        SetCommand {
            change: SetChange::Patch(body),
            ..put(json!({}))
        }
    }

    fn minimal_body() -> serde_json::Value {
        json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB"},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": IMAGE}}}}
        })
    }

    fn model_of(w: &Writes) -> &VirtualMachineScaleSet {
        &w.set.as_ref().unwrap().model
    }

    #[test]
    fn put_replaces_but_keeps_capacity_immutables_read_only_and_secrets() {
        let before = with_extras();
        let unique = before.model.props().unique_id.clone();
        let w = decide(
            &put(minimal_body()),
            &state_of(before),
            &Limits::default(),
            &env(),
        )
        .unwrap();
        let m = model_of(&w);
        let profile = m.profile().unwrap();
        assert!(profile.extension_profile.is_none(), "omitted: removed");
        assert!(m.props().automatic_repairs_policy.is_none());
        assert!(m.tags.is_none());
        assert_eq!(m.capacity(), 2, "capacity kept");
        assert_eq!(m.props().unique_id, unique);
        let os = profile.os_profile.as_ref().unwrap();
        assert_eq!(os.custom_data.as_deref(), Some("aGk="));
        assert_eq!(os.admin_password.as_deref(), Some("secret"));
        assert!(!w.created);
        assert_eq!(m.props().provisioning_state.as_deref(), Some("Updating"));
    }

    #[test]
    fn patch_merges_and_replaces_tags_whole() {
        let w = decide(
            &patch(json!({"tags": {"team": "api"}, "sku": {"capacity": 5}})),
            &state_of(with_extras()),
            &Limits::default(),
            &env(),
        )
        .unwrap();
        let m = model_of(&w);
        assert!(m.profile().unwrap().extension_profile.is_some());
        assert!(m.props().automatic_repairs_policy.is_some());
        assert_eq!(m.capacity(), 5);
        assert_eq!(
            m.tags.as_ref().unwrap().keys().collect::<Vec<_>>(),
            vec!["team"]
        );
    }

    #[test]
    fn immutable_properties_cannot_change_and_patch_needs_the_set() {
        let mut body = minimal_body();
        body["properties"]["platformFaultDomainCount"] = json!(3);
        let err = decide(
            &put(body),
            &state_of(set_record(2)),
            &Limits::default(),
            &env(),
        )
        .unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (409, "PropertyChangeNotAllowed")
        );
        assert_eq!(
            err.target.as_deref(),
            Some("properties.platformFaultDomainCount")
        );
        let missing = SetState {
            existing: None,
            image: Some(image()),
            hosts: Vec::new(),
            host_zones: Default::default(),
            identities: Default::default(),
        };
        let err = decide(&patch(json!({})), &missing, &Limits::default(), &env()).unwrap_err();
        assert_eq!(err.status, 404);
        let w = decide(&put(minimal_body()), &missing, &Limits::default(), &env()).unwrap();
        assert!(w.created);
        assert_eq!(model_of(&w).capacity(), 2, "Azure's default");
    }

    #[test]
    fn a_deleting_set_or_a_stale_etag_is_refused() {
        let mut set = set_record(2);
        set.deleting = true;
        let err = decide(
            &patch(json!({})),
            &state_of(set),
            &Limits::default(),
            &env(),
        )
        .unwrap_err();
        assert_eq!(err.status, 409);
        let mut cmd = patch(json!({}));
        cmd.preconditions.if_match = Some("\"3\"".into());
        let err = decide(&cmd, &state_of(set_record(2)), &Limits::default(), &env()).unwrap_err();
        assert_eq!(err.status, 412);
    }

    #[test]
    fn the_launch_generation_moves_only_when_what_runs_changes() {
        let before = set_record(2);
        let w = decide(
            &patch(json!({"tags": {"a": "b"}})),
            &state_of(before.clone()),
            &Limits::default(),
            &env(),
        )
        .unwrap();
        assert_eq!(w.set.unwrap().launch.generation, before.launch.generation);
        let w = decide(
            &patch(json!({"sku": {"name": "Shoal_2vCPU_1024MB"}})),
            &state_of(before.clone()),
            &Limits::default(),
            &env(),
        )
        .unwrap();
        assert_eq!(
            w.set.unwrap().launch.generation,
            before.launch.generation + 1
        );
    }

    #[test]
    fn delete_marks_the_set_and_a_missing_set_is_nothing_to_do() {
        let del = SetCommand {
            change: SetChange::Delete,
            ..patch(json!({}))
        };
        let w = decide(&del, &state_of(set_record(2)), &Limits::default(), &env()).unwrap();
        let rec = w.set.unwrap();
        assert!(rec.deleting);
        assert_eq!(rec.operation, w.operation.map(|o| o.id));
        let none = SetState {
            existing: None,
            image: None,
            hosts: Vec::new(),
            host_zones: Default::default(),
            identities: Default::default(),
        };
        assert!(decide(&del, &none, &Limits::default(), &env())
            .unwrap()
            .ops
            .is_empty());
    }

    #[test]
    fn a_size_no_host_can_hold_is_refused_at_once() {
        let size = sku::lookup("Shoal_64vCPU_262144MB").expect("size");
        let small = Resources {
            vcpus: 32,
            memory_mb: 98_304,
            instances: 1000,
        };
        let err = check_fits_a_host(&size, &[small]).expect_err("refused");
        assert_eq!((err.status, err.code.as_str()), (409, "SkuNotAvailable"));
        assert_eq!(err.target.as_deref(), Some("sku.name"));
        assert!(err.message.contains("asks for 64 vCPUs"), "{}", err.message);
        // No host yet: nothing to judge by, the placement waits for one.
        assert!(check_fits_a_host(&size, &[]).is_ok());
        let big = Resources {
            vcpus: 64,
            memory_mb: 262_144,
            instances: 1000,
        };
        assert!(check_fits_a_host(&size, &[small, big]).is_ok());
    }
}

#[cfg(test)]
mod strict_zone_tests {
    use super::*;
    use serde_json::json;

    fn model(capacity: i64, zones: &[&str], strict: bool) -> VirtualMachineScaleSet {
        let mut m: VirtualMachineScaleSet = model::parse_typed(&json!({
            "location": "local", "zones": zones,
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": capacity},
            "properties": {"zoneBalance": strict,
                "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "/x"}}}}
        }))
        .expect("model");
        model::normalize(&mut m);
        m
    }

    #[test]
    fn strict_zone_balance_that_cannot_be_met_is_refused_at_once() {
        let hosts: std::collections::BTreeSet<String> = ["1".into(), "2".into()].into();
        let err = check_strict_zones(&model(3, &["1", "2", "3"], true), &hosts).unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (409, "OperationNotAllowed")
        );
        assert_eq!(err.target.as_deref(), Some("properties.zoneBalance"));
        assert!(err.message.contains("zone(s) 3"), "{}", err.message);
        // Best effort, few enough instances, or no hosts yet: accepted.
        assert!(check_strict_zones(&model(3, &["1", "2", "3"], false), &hosts).is_ok());
        assert!(check_strict_zones(&model(2, &["1", "2", "3"], true), &hosts).is_ok());
        assert!(check_strict_zones(&model(3, &["1", "2", "3"], true), &Default::default()).is_ok());
    }
}
