//! `vmss update`: a PATCH of the set's model (image, size, custom data, upgrade policy,
//! any property with `--set PATH=VALUE`), or a PUT of one instance's protection policy
//! with `--instance-id`. [`update_body`] builds the body (pure).

use clap::{ArgAction, Args};
use serde_json::{json, Map, Value};

use super::create::{parse_custom_data, CustomData, UpgradePolicyMode};
use super::{VmssArgsError, VmssName};
use crate::image_ref::ImageRef;

#[derive(Debug, Clone, Args)]
pub struct VmssUpdate {
    #[command(flatten)]
    pub set: VmssName,
    /// Set a property by its JSON path, e.g. properties.upgradePolicy.mode=Automatic or
    /// sku.capacity=5. VALUE is read as JSON when it parses (numbers, true, lists), else as
    /// a string. Repeatable; sent as one PATCH.
    #[arg(long = "set", num_args = 1.., value_name = "PATH=VALUE", value_parser = parse_set)]
    pub sets: Vec<(Vec<String>, Value)>,
    /// New image: GALLERY/IMAGE[:VERSION] or a full gallery image resource id.
    #[arg(long, value_name = "IMAGE", conflicts_with = "instance_id")]
    pub image: Option<ImageRef>,
    /// New size of the instances.
    #[arg(long, value_name = "SKU", conflicts_with = "instance_id")]
    pub vm_sku: Option<String>,
    /// New custom data: a file path, or the text itself.
    #[arg(long, value_parser = parse_custom_data, value_name = "FILE_OR_TEXT", conflicts_with = "instance_id")]
    pub custom_data: Option<CustomData>,
    /// New upgrade policy mode.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_name = "MODE",
        conflicts_with = "instance_id"
    )]
    pub upgrade_policy_mode: Option<UpgradePolicyMode>,
    /// Update this instance (its protection policy) instead of the scale set.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Keep the instance when the set scales in (needs --instance-id).
    #[arg(long, value_name = "true|false", action = ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), requires = "instance_id")]
    pub protect_from_scale_in: Option<bool>,
    /// Keep set-wide actions (stop, restart, reimage, upgrades) off the instance (needs
    /// --instance-id).
    #[arg(long, value_name = "true|false", action = ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), requires = "instance_id")]
    pub protect_from_scale_set_actions: Option<bool>,
    /// Do not wait for the change to reach the instances.
    #[arg(long)]
    pub no_wait: bool,
}

/// Parses one `--set PATH=VALUE`.
pub fn parse_set(text: &str) -> Result<(Vec<String>, Value), String> {
    let Some((path, value)) = text.split_once('=') else {
        return Err(format!("'{text}' is not PATH=VALUE"));
    };
    if path.contains('[') {
        return Err(format!(
            "'{path}': --set cannot index into lists; set the whole list as JSON, e.g. zones='[\"1\",\"2\"]'"
        ));
    }
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        return Err(format!(
            "'{path}' is not a property path like properties.upgradePolicy.mode"
        ));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((parts, value))
}

/// Puts `value` at `path` inside `target`, creating objects on the way.
fn set_path(target: &mut Value, path: &[String], value: Value) -> Result<(), VmssArgsError> {
    let conflict = || VmssArgsError::SetConflict {
        path: path.join("."),
    };
    let Some((last, parents)) = path.split_last() else {
        return Err(conflict());
    };
    let mut node = target;
    for key in parents {
        let map = node.as_object_mut().ok_or_else(conflict)?;
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let map = node.as_object_mut().ok_or_else(conflict)?;
    map.insert(last.clone(), value);
    Ok(())
}

fn path_of(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

/// The PATCH body of `vmss update` on the set, or the PUT body on one instance.
pub fn update_body(sub: &str, args: &VmssUpdate) -> Result<Value, VmssArgsError> {
    let mut body = json!({});
    let mut changes: Vec<(Vec<String>, Value)> = Vec::new();
    if let Some(id) = &args.instance_id {
        if let Some(protect) = args.protect_from_scale_in {
            changes.push((
                path_of(&["properties", "protectionPolicy", "protectFromScaleIn"]),
                json!(protect),
            ));
        }
        if let Some(protect) = args.protect_from_scale_set_actions {
            changes.push((
                path_of(&[
                    "properties",
                    "protectionPolicy",
                    "protectFromScaleSetActions",
                ]),
                json!(protect),
            ));
        }
        if changes.is_empty() && args.sets.is_empty() {
            return Err(VmssArgsError::NothingToUpdateOnInstance(id.clone()));
        }
    } else {
        if let Some(image) = &args.image {
            changes.push((
                path_of(&[
                    "properties",
                    "virtualMachineProfile",
                    "storageProfile",
                    "imageReference",
                    "id",
                ]),
                json!(image.resource_id(sub, &args.set.resource_group)),
            ));
        }
        if let Some(sku) = &args.vm_sku {
            changes.push((path_of(&["sku", "name"]), json!(sku)));
        }
        if let Some(data) = &args.custom_data {
            changes.push((
                path_of(&[
                    "properties",
                    "virtualMachineProfile",
                    "osProfile",
                    "customData",
                ]),
                json!(data.base64()),
            ));
        }
        if let Some(mode) = args.upgrade_policy_mode {
            changes.push((
                path_of(&["properties", "upgradePolicy", "mode"]),
                json!(mode.as_str()),
            ));
        }
        if changes.is_empty() && args.sets.is_empty() {
            return Err(VmssArgsError::NothingToUpdate);
        }
    }
    changes.extend(args.sets.iter().cloned());
    for (path, value) in changes {
        set_path(&mut body, &path, value)?;
    }
    Ok(body)
}
