//! Platform images by URN (`publisher:offer:sku:version`): an operator publishes a gallery
//! image version under a marketplace URN (`PUT /providers/Shoal.Infrastructure/
//! platformImages/{urn}` with `properties.imageId`, or `shoal image publish`), and then:
//!
//! - the VM image endpoints `az vm image` and `az vmss create --image URN` call answer for
//!   it (`…/locations/{l}/publishers[/{p}/artifacttypes/vmimage/offers[/{o}/skus[/{s}/
//!   versions[/{v}]]]]`); anything else is the 404 `az` expects;
//! - `imageReference {publisher, offer, sku, version}` in a scale set names it like a
//!   gallery id (`version: latest` is the highest published version);
//! - the alias document (`/metadata/vm-image-aliases`) maps Azure's aliases (`Ubuntu2204`,
//!   …) to their URNs, so `--image Ubuntu2204` finds an image published under its URN.

use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_control::kv;
use shoal_model::{names, ArmError};
use shoal_store::Expect;

use crate::response::{empty, json, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::state::{body_object, txn_error, ApiState};

const PREFIX: &str = "platformimage/";
/// What a model's image key starts with when it names a URN (see
/// `VirtualMachineScaleSet::image_id`).
pub const URN: &str = "urn:";

/// Azure's aliases (`az vm create --image Ubuntu2204`) and the URNs they stand for.
pub const ALIASES: &[(&str, &str)] = &[
    (
        "Ubuntu2204",
        "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest",
    ),
    ("Ubuntu2404", "Canonical:ubuntu-24_04-lts:server:latest"),
    ("Debian11", "Debian:debian-11:11-backports-gen2:latest"),
    ("Debian12", "Debian:debian-12:12-gen2:latest"),
    ("RHELRaw8LVMGen2", "RedHat:RHEL:8-lvm-gen2:latest"),
    ("CentOS85Gen2", "OpenLogic:CentOS:8_5-gen2:latest"),
    (
        "FlatcarLinuxFreeGen2",
        "kinvolk:flatcar-container-linux-free:stable-gen2:latest",
    ),
    ("OpenSuseLeap154Gen2", "SUSE:openSUSE-leap-15-4:gen2:latest"),
    ("SuseSles15SP5", "SUSE:sles-15-sp5:gen2:latest"),
];

/// One published URN and the gallery image version it stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformImage {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
    pub image_id: String,
}

impl PlatformImage {
    fn urn(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.publisher, self.offer, self.sku, self.version
        )
    }

    fn view(&self) -> Value {
        json!({
            "id": format!("/providers/Shoal.Infrastructure/platformImages/{}", self.urn()),
            "name": self.urn(),
            "type": "Shoal.Infrastructure/platformImages",
            "properties": {"publisher": self.publisher, "offer": self.offer, "sku": self.sku,
                "version": self.version, "imageId": self.image_id},
        })
    }
}

/// A URN's four parts; `None` when it is not `publisher:offer:sku:version` with each part
/// a plain name.
pub fn parse_urn(urn: &str) -> Option<[String; 4]> {
    let parts: Vec<&str> = urn.split(':').collect();
    let ok = |p: &&str| {
        !p.is_empty()
            && p.len() <= 128
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if parts.len() != 4 || !parts.iter().all(ok) {
        return None;
    }
    Some([0, 1, 2, 3].map(|i| parts[i].to_string()))
}

fn key(parts: &[&str]) -> String {
    let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    format!("{PREFIX}{}", lower.join("/"))
}

async fn all(st: &ApiState) -> Result<Vec<PlatformImage>, ArmError> {
    Ok(st
        .list::<PlatformImage>(PREFIX)
        .await?
        .into_iter()
        .map(|r| r.value)
        .collect())
}

/// `/providers/Shoal.Infrastructure/platformImages[/{urn}]`: list, publish (PUT with
/// `properties.imageId`, a gallery image version that exists), show, withdraw.
pub async fn publish(st: &ApiState, method: &Method, urn: Option<&str>, body: &[u8]) -> ApiResult {
    let Some(urn) = urn else {
        if method != Method::GET {
            return Err(method_not_allowed(method));
        }
        let value: Vec<Value> = all(st).await?.iter().map(PlatformImage::view).collect();
        return Ok(json(200, &json!({ "value": value })));
    };
    let [publisher, offer, sku, version] = parse_urn(urn).ok_or_else(|| {
        ArmError::invalid_parameter(
            "urn",
            format!("'{urn}' is not a URN publisher:offer:sku:version (letters, digits, '-', '_', '.')."),
        )
    })?;
    if version.eq_ignore_ascii_case("latest") || names::parse_image_version(&version).is_err() {
        return Err(ArmError::invalid_parameter(
            "urn",
            format!("The version of '{urn}' must be a version such as 1.0.0 ('latest' is what clients ask for, not what is published)."),
        ));
    }
    let k = key(&[&publisher, &offer, &sku, &version]);
    let existing = st.get::<PlatformImage>(&k).await?;
    match *method {
        Method::GET => existing
            .map(|r| json(200, &r.value.view()))
            .ok_or_else(|| ArmError::not_found("platform image", urn)),
        Method::PUT => {
            let body = body_object(body, true)?;
            let image_id = body
                .pointer("/properties/imageId")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ArmError::invalid_parameter(
                        "properties.imageId",
                        "Name the gallery image version to publish (properties.imageId).",
                    )
                })?;
            // The version must exist now (its id, exactly).
            let (id, _, _) = crate::galleries::resolve_image(st, image_id).await?;
            let rec = PlatformImage {
                publisher,
                offer,
                sku,
                version,
                image_id: id,
            };
            let expect = existing
                .as_ref()
                .map_or(Expect::Absent, |e| Expect::ModRevision(e.revision));
            st.store
                .txn(vec![kv::put_op(k, &rec, expect)])
                .await
                .map_err(txn_error)?;
            Ok(json(
                if existing.is_some() { 200 } else { 201 },
                &rec.view(),
            ))
        }
        Method::DELETE => match existing {
            None => Ok(empty(204)),
            Some(e) => {
                st.store
                    .txn(vec![kv::delete_op(k, Expect::ModRevision(e.revision))])
                    .await
                    .map_err(txn_error)?;
                Ok(empty(200))
            }
        },
        _ => Err(method_not_allowed(method)),
    }
}

/// The gallery image version a URN (`urn:publisher:offer:sku:version`, version `latest`
/// allowed) stands for, or Azure's 404 for a platform image that is not there.
pub async fn resolve(st: &ApiState, urn: &str) -> Result<String, ArmError> {
    let bare = urn.strip_prefix(URN).unwrap_or(urn);
    let missing = || {
        ArmError::new(
            404,
            "PlatformImageNotFound",
            format!("The platform image '{bare}' is not available. Verify that all fields in the storage profile are correct (an operator publishes images with `shoal image publish`)."),
        )
        .with_target("properties.virtualMachineProfile.storageProfile.imageReference")
    };
    let [publisher, offer, sku, version] = parse_urn(bare).ok_or_else(missing)?;
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let found = all(st)
        .await?
        .into_iter()
        .filter(|p| same(&p.publisher, &publisher) && same(&p.offer, &offer) && same(&p.sku, &sku))
        .filter(|p| version.eq_ignore_ascii_case("latest") || same(&p.version, &version))
        .max_by_key(|p| names::parse_image_version(&p.version).ok());
    found.map(|p| p.image_id).ok_or_else(missing)
}

/// `/subscriptions/{s}/providers/Microsoft.Compute/locations/{l}/publishers/…`, the VM
/// image catalogue of what is published. `rest` is the path after `publishers`.
pub async fn catalogue(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    location: &str,
    rest: &[String],
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let published = all(st).await?;
    let base =
        format!("/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/{location}/Publishers");
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let not_found = || {
        ArmError::new(
            404,
            "NotFound",
            "Artifact: VMImage was not found (no image is published under that name: `shoal image publish`).",
        )
    };
    let names_of = |items: Vec<String>, prefix: &str| -> Value {
        let mut items = items;
        items.sort_by_key(|s| s.to_ascii_lowercase());
        items.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        json!(items
            .iter()
            .map(|n| json!({"name": n, "location": location, "id": format!("{prefix}/{n}")}))
            .collect::<Vec<_>>())
    };
    let w: Vec<&str> = rest.iter().map(String::as_str).collect();
    // publishers/{p}/artifacttypes/vmimage/offers/{o}/skus/{s}/versions/{v}
    let fixed = [
        (1, "artifacttypes"),
        (2, "vmimage"),
        (3, "offers"),
        (5, "skus"),
        (7, "versions"),
    ];
    if !fixed
        .iter()
        .all(|(i, word)| w.get(*i).is_none_or(|x| same(x, word)))
    {
        return Err(not_found());
    }
    let at = |i: usize| w.get(i).copied().unwrap_or_default();
    let (p, o, s) = (at(0), at(4), at(6));
    let images = format!("{base}/{p}/ArtifactTypes/VMImage/Offers");
    let matching = |depth: usize| -> Vec<&PlatformImage> {
        published
            .iter()
            .filter(|x| same(&x.publisher, p))
            .filter(|x| depth < 2 || same(&x.offer, o))
            .filter(|x| depth < 3 || same(&x.sku, s))
            .collect()
    };
    let answer = |found: Vec<String>, prefix: String| {
        if found.is_empty() {
            Err(not_found())
        } else {
            Ok(json(200, &names_of(found, &prefix)))
        }
    };
    match w.len() {
        0 => Ok(json(
            200,
            &names_of(
                published.iter().map(|x| x.publisher.clone()).collect(),
                &base,
            ),
        )),
        4 => answer(
            matching(1).iter().map(|x| x.offer.clone()).collect(),
            images,
        ),
        6 => answer(
            matching(2).iter().map(|x| x.sku.clone()).collect(),
            format!("{images}/{o}/Skus"),
        ),
        8 => {
            let mut found = matching(3);
            if found.is_empty() {
                return Err(not_found());
            }
            // `$orderby=name desc&$top=1`, as `az` asks for the latest.
            found.sort_by_key(|x| names::parse_image_version(&x.version).ok());
            if ctx
                .query("$orderby")
                .is_some_and(|o| o.to_ascii_lowercase().contains("desc"))
            {
                found.reverse();
            }
            if let Some(top) = ctx.query("$top").and_then(|t| t.parse::<usize>().ok()) {
                found.truncate(top);
            }
            let prefix = format!("{images}/{o}/Skus/{s}/Versions");
            Ok(json(200, &json!(found.iter().map(|x| json!({"name": x.version, "location": location, "id": format!("{prefix}/{}", x.version)})).collect::<Vec<_>>())))
        }
        9 => {
            let v = at(8);
            let x = matching(3)
                .into_iter()
                .filter(|x| same(&x.version, v) || same(v, "latest"))
                .max_by_key(|x| names::parse_image_version(&x.version).ok())
                .ok_or_else(not_found)?;
            Ok(json(
                200,
                &json!({
                    "name": x.version,
                    "location": location,
                    "id": format!("{images}/{o}/Skus/{s}/Versions/{}", x.version),
                    "properties": {
                        "osImage": {"operatingSystem": "Linux"},
                        "dataDiskImages": [],
                        "hyperVGeneration": "V2",
                        "architecture": "x64",
                        "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": false},
                        "imageDeprecationStatus": {"imageState": "Active"},
                        "disallowed": {"vmDiskType": "None"},
                        "features": [],
                    },
                }),
            ))
        }
        _ => Err(not_found()),
    }
}

/// The alias document: Azure's aliases for the URNs they stand for.
pub fn aliases() -> Value {
    let linux: serde_json::Map<String, Value> = ALIASES
        .iter()
        .filter_map(|(alias, urn)| {
            let [publisher, offer, sku, version] = parse_urn(urn)?;
            Some((
                alias.to_string(),
                json!({"publisher": publisher, "offer": offer, "sku": sku, "version": version, "architecture": "x64"}),
            ))
        })
        .collect();
    json!({"$schema": "http://schema.management.azure.com/schemas/2015-01-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "outputs": {"aliases": {"type": "object", "value": {"Linux": linux, "Windows": {}}}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urns_are_four_plain_names() {
        assert!(
            parse_urn("Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest").is_some()
        );
        for bad in ["a:b:c", "a:b:c:d:e", "a::c:d", "a:b/c:d:1", ""] {
            assert!(parse_urn(bad).is_none(), "{bad}");
        }
        assert!(ALIASES.iter().all(|(_, u)| parse_urn(u).is_some()));
    }

    proptest::proptest! {
        #[test]
        fn any_urn_text_is_answered_without_panic(s in "\\PC{0,80}") {
            let _ = parse_urn(&s);
        }
    }
}
