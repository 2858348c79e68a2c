//! Galleries, image definitions and image versions (`Microsoft.Compute/galleries/…`), and
//! [`resolve_image`], which turns a scale set's `imageReference.id` into the stored
//! version it names.
//!
//! Image versions are immutable: a version's bundle (a tar uploaded to
//! `/shoal/v1/blobs`, see [`crate::blobs`]) and its `properties.shoal` launch settings
//! never change.

use http::Method;
use serde_json::{json, Value};
use shoal_control::kv;
use shoal_model::ids;
use shoal_model::keys;
use shoal_model::records::{blob_key, BlobRecord, ImageVersionShoal, VmssRecord};
use shoal_model::{names, ArmError};
use shoal_store::Expect;

use crate::blobs::blob_path;
use crate::response::{self, empty, json, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::state::{body_object, internal, txn_error, ApiState};

pub async fn galleries(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: Option<&str>,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let prefix = match rg {
        Some(rg) => {
            st.require_group(sub, rg).await?;
            keys::in_group(keys::GALLERY, sub, rg)
        }
        None => keys::in_subscription(keys::GALLERY, sub),
    };
    let items = st
        .list::<Value>(&prefix)
        .await?
        .into_iter()
        .map(|g| g.value)
        .collect();
    let path = match rg {
        Some(rg) => format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries"
        ),
        None => format!("/subscriptions/{sub}/providers/Microsoft.Compute/galleries"),
    };
    Ok(response::page(ctx, &path, items, st.page_size))
}

/// Galleries and image definitions: plain resources with no runtime behind them.
pub async fn gallery_or_image(
    st: &ApiState,
    method: &Method,
    sub: &str,
    rg: &str,
    gallery: &str,
    image: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let group = st.require_group(sub, rg).await?;
    names::check_gallery_name(gallery)?;
    if let Some(i) = image {
        names::check_resource_name("image definition", i, 80)?;
    }
    let (key, id, kind, name) = match image {
        None => (
            ids::gallery_key(sub, rg, gallery),
            ids::gallery_id(sub, rg, gallery),
            "Microsoft.Compute/galleries",
            gallery.to_string(),
        ),
        Some(i) => (
            ids::image_key(sub, rg, gallery, i),
            format!("{}/images/{i}", ids::gallery_id(sub, rg, gallery)),
            "Microsoft.Compute/galleries/images",
            i.to_string(),
        ),
    };
    let existing = st.get::<Value>(&key).await?;
    match *method {
        Method::GET => existing
            .map(|e| json(200, &e.value))
            .ok_or_else(|| ArmError::not_found(kind, &name)),
        Method::PATCH if existing.is_none() => Err(ArmError::not_found(kind, &name)),
        Method::PUT | Method::PATCH => {
            if image.is_some()
                && st
                    .get::<Value>(&ids::gallery_key(sub, rg, gallery))
                    .await?
                    .is_none()
            {
                return Err(ArmError::not_found("Microsoft.Compute/galleries", gallery)
                    .with_target("galleryName"));
            }
            let incoming = body_object(body, *method == Method::PUT)?;
            let mut obj = existing
                .as_ref()
                .map(|e| e.value.clone())
                .unwrap_or(json!({}));
            shoal_model::vmss::merge_json(&mut obj, &incoming);
            let location = obj["location"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| {
                    group.value["location"]
                        .as_str()
                        .unwrap_or("local")
                        .to_string()
                });
            if !obj["properties"].is_object() && !obj["properties"].is_null() {
                return Err(ArmError::invalid_parameter(
                    "properties",
                    "properties must be an object.",
                ));
            }
            obj["id"] = json!(id);
            obj["name"] = json!(existing
                .as_ref()
                .and_then(|e| e.value["name"].as_str().map(String::from))
                .unwrap_or(name));
            obj["type"] = json!(kind);
            obj["location"] = json!(location);
            obj["properties"]["provisioningState"] = json!("Succeeded");
            if image.is_none() && obj["properties"]["identifier"].is_null() {
                obj["properties"]["identifier"] =
                    json!({"uniqueName": format!("{sub}-{}", gallery.to_ascii_uppercase())});
            }
            let expect = existing
                .as_ref()
                .map_or(Expect::Absent, |e| Expect::ModRevision(e.revision));
            st.store
                .txn(vec![kv::put_op(key, &obj, expect)])
                .await
                .map_err(txn_error)?;
            Ok(json(if existing.is_some() { 200 } else { 201 }, &obj))
        }
        Method::DELETE => {
            let Some(e) = existing else {
                return Ok(empty(204));
            };
            let child_prefix = match image {
                None => format!("{}/", keys::resource(keys::GALLERY_IMAGE, sub, rg, gallery)),
                Some(i) => ids::image_version_prefix(sub, rg, gallery, i),
            };
            let (children, _) = st.store.list(&child_prefix).await.map_err(internal)?;
            if !children.is_empty() {
                return Err(ArmError::conflict(format!(
                    "'{name}' still has {} child resource(s): delete them first.",
                    children.len()
                )));
            }
            st.store
                .txn(vec![kv::delete_op(key, Expect::ModRevision(e.revision))])
                .await
                .map_err(txn_error)?;
            Ok(empty(200))
        }
        _ => Err(method_not_allowed(method)),
    }
}

pub async fn images(st: &ApiState, ctx: &Ctx, sub: &str, rg: &str, gallery: &str) -> ApiResult {
    st.require_group(sub, rg).await?;
    let prefix = format!("{}/", keys::resource(keys::GALLERY_IMAGE, sub, rg, gallery));
    let items = st
        .list::<Value>(&prefix)
        .await?
        .into_iter()
        .map(|g| g.value)
        .collect();
    Ok(response::page(
        ctx,
        &format!("{}/images", ids::gallery_id(sub, rg, gallery)),
        items,
        st.page_size,
    ))
}

pub async fn versions(
    st: &ApiState,
    ctx: &Ctx,
    sub: &str,
    rg: &str,
    gallery: &str,
    image: &str,
) -> ApiResult {
    st.require_group(sub, rg).await?;
    if st
        .get::<Value>(&ids::image_key(sub, rg, gallery, image))
        .await?
        .is_none()
    {
        return Err(ArmError::not_found(
            "Microsoft.Compute/galleries/images",
            image,
        ));
    }
    let mut items: Vec<Value> = st
        .list::<Value>(&ids::image_version_prefix(sub, rg, gallery, image))
        .await?
        .into_iter()
        .map(|g| g.value)
        .collect();
    items.sort_by_key(|v| {
        v["name"]
            .as_str()
            .and_then(|n| names::parse_image_version(n).ok())
    });
    Ok(response::page(
        ctx,
        &format!(
            "{}/images/{image}/versions",
            ids::gallery_id(sub, rg, gallery)
        ),
        items,
        st.page_size,
    ))
}

#[allow(clippy::too_many_arguments)]
pub async fn version(
    st: &ApiState,
    method: &Method,
    sub: &str,
    rg: &str,
    gallery: &str,
    image: &str,
    version: &str,
    body: &[u8],
) -> ApiResult {
    let group = st.require_group(sub, rg).await?;
    let key = ids::image_version_key(sub, rg, gallery, image, version);
    let existing = st.get::<Value>(&key).await?;
    match *method {
        Method::GET => existing.map(|e| json(200, &e.value)).ok_or_else(|| {
            ArmError::not_found("Microsoft.Compute/galleries/images/versions", version)
        }),
        Method::PUT => {
            names::parse_image_version(version)?;
            let Some(def) = st
                .get::<Value>(&ids::image_key(sub, rg, gallery, image))
                .await?
            else {
                return Err(
                    ArmError::not_found("Microsoft.Compute/galleries/images", image)
                        .with_target("galleryImageName"),
                );
            };
            let incoming = body_object(body, true)?;
            let shoal_json = incoming
                .pointer("/properties/shoal")
                .cloned()
                .unwrap_or(Value::Null);
            if shoal_json.is_null() {
                return Err(ArmError::invalid_parameter(
                    "properties.shoal",
                    "A Shoal image version needs properties.shoal {kind, command, port, blobId}: create it with `shoal image create`, which uploads the bundle.",
                ));
            }
            let mut ext: ImageVersionShoal =
                shoal_model::vmss::parse_typed(&shoal_json).map_err(|e| ArmError {
                    target: e.target.map(|t| format!("properties.shoal.{t}")),
                    ..e
                })?;
            match ext.kind.as_str() {
                "process" => {
                    if ext.command.trim().is_empty() {
                        return Err(ArmError::invalid_parameter(
                            "properties.shoal.command",
                            "A process image needs a command (e.g. ./server).",
                        ));
                    }
                }
                "vm" => crate::vm_image::check_fields(&ext)?,
                other => {
                    return Err(ArmError::invalid_parameter(
                        "properties.shoal.kind",
                        format!("Image kind '{other}' is not one of \"process\", \"vm\"."),
                    ))
                }
            }
            if ext.port == 0 {
                return Err(ArmError::invalid_parameter(
                    "properties.shoal.port",
                    "The port must be 1-65535.",
                ));
            }
            let Some(blob) = st.get::<BlobRecord>(&blob_key(&ext.blob_id)).await? else {
                return Err(ArmError::invalid_parameter(
                    "properties.shoal.blobId",
                    format!(
                        "No uploaded bundle has id '{}': upload it first (POST /shoal/v1/blobs).",
                        ext.blob_id
                    ),
                ));
            };
            ext.size = blob.value.size;
            if ext.kind == "vm" {
                crate::vm_image::check_bundle(&blob_path(st, &ext.blob_id), &ext).await?;
            }
            if let Some(e) = existing {
                let same = e
                    .value
                    .pointer("/properties/shoal")
                    .and_then(|v| serde_json::from_value::<ImageVersionShoal>(v.clone()).ok())
                    == Some(ext.clone());
                if same {
                    return Ok(json(200, &e.value));
                }
                return Err(ArmError::conflict(format!(
                    "Image version {version} already exists and versions are immutable: create a new version."
                ))
                .with_target("galleryImageVersionName"));
            }
            let location = def.value["location"]
                .as_str()
                .or(group.value["location"].as_str())
                .unwrap_or("local")
                .to_string();
            let now = st.now();
            let obj = json!({
                "id": format!("{}/images/{image}/versions/{version}", ids::gallery_id(sub, rg, gallery)),
                "name": version,
                "type": "Microsoft.Compute/galleries/images/versions",
                "location": location,
                "tags": incoming.get("tags").cloned().unwrap_or(json!({})),
                "properties": {
                    "provisioningState": "Succeeded",
                    "publishingProfile": {
                        "publishedDate": now,
                        "excludeFromLatest": false,
                        "targetRegions": [{"name": location, "regionalReplicaCount": 1}],
                        "replicaCount": 1
                    },
                    "storageProfile": {"source": {}},
                    "shoal": ext,
                }
            });
            st.store
                .txn(vec![kv::put_op(key, &obj, Expect::Absent)])
                .await
                .map_err(txn_error)?;
            Ok(json(201, &obj))
        }
        Method::DELETE => {
            let Some(e) = existing else {
                return Ok(empty(204));
            };
            let image_id = e.value["id"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let in_use = st
                .list::<VmssRecord>(keys::VMSS)
                .await?
                .into_iter()
                .find(|s| s.value.launch.image_id.to_ascii_lowercase() == image_id);
            if let Some(s) = in_use {
                return Err(ArmError::conflict(format!(
                    "Image version {version} is used by scale set '{}': move it to another version first.",
                    s.value.vmss.name
                )));
            }
            st.store
                .txn(vec![kv::delete_op(key, Expect::ModRevision(e.revision))])
                .await
                .map_err(txn_error)?;
            Ok(empty(200))
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// Resolves an `imageReference.id` to the stored version it names (the newest version
/// when it names an image definition or `latest`).
pub async fn resolve_image(
    st: &ApiState,
    image_id: &str,
) -> Result<(String, String, ImageVersionShoal), ArmError> {
    const TARGET: &str = "properties.virtualMachineProfile.storageProfile.imageReference.id";
    let Some(r) = ids::parse_image_id(image_id) else {
        return Err(ArmError::invalid_parameter(
            TARGET,
            format!("'{image_id}' is not a gallery image id: use /subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Compute/galleries/{{gallery}}/images/{{image}}[/versions/{{version}}]."),
        ));
    };
    let versions = st
        .list::<Value>(&ids::image_version_prefix(
            &r.subscription,
            &r.resource_group,
            &r.gallery,
            &r.image,
        ))
        .await?;
    let chosen = match &r.version {
        Some(v) => versions.into_iter().find(|x| {
            x.value["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(v))
        }),
        None => versions.into_iter().max_by_key(|x| {
            x.value["name"]
                .as_str()
                .and_then(|n| names::parse_image_version(n).ok())
        }),
    };
    let Some(chosen) = chosen else {
        return Err(ArmError::invalid_parameter(
            TARGET,
            format!("The image '{image_id}' does not exist: create it with `shoal image create` (and check the version)."),
        ));
    };
    let ext: ImageVersionShoal =
        serde_json::from_value(chosen.value["properties"]["shoal"].clone())
            .map_err(|e| ArmError::internal(format!("Stored image version is damaged: {e}")))?;
    let id = chosen.value["id"].as_str().unwrap_or_default().to_string();
    let name = chosen.value["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((id, name, ext))
}
