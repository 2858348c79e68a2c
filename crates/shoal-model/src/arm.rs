//! The ARM envelope, once: what every tracked resource and every child resource carries
//! around its own properties, and the helpers that work on children by name and id.
//!
//! A resource type declares only its `properties` (and, through [`Extras`], the few
//! top-level fields of its own, such as a load balancer's `sku`); [`Resource`] adds `id`,
//! `name`, `type`, `location`, `tags` and `etag`. Children (a balancer's probes, a
//! gateway's listeners) are [`SubResource`]s, named by their parent's id plus
//! `/{kind}/{name}` ([`name_children`]), and referenced by `{"id": …}` ([`IdRef`],
//! resolved by [`find_child`]). Bodies enter through `vmss::parse_typed` (a wrong type is a
//! 400 naming the field, extras included) and leave through serde in the same field order.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ArmError;

/// A tracked ARM resource: the envelope around `properties` (`P`) and the resource's own
/// top-level fields (`X`, serialized between `tags` and `etag`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<P, X = NoExtras> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: X,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub properties: P,
}

/// A resource type's own top-level fields. Serialized flattened into the envelope;
/// deserialized field by field ([`Extras::read_field`]) rather than through
/// `#[serde(flatten)]`, which would lose the name of a field with a wrong type.
pub trait Extras: Default + Serialize {
    /// Reads the value of `key` from `map` if it is one of these fields (`true`), or
    /// leaves it (`false`: the envelope skips it, as serde skips unknown fields).
    fn read_field<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error>;
}

/// No top-level fields beyond the envelope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NoExtras {}

impl Extras for NoExtras {
    fn read_field<'de, A: MapAccess<'de>>(&mut self, _: &str, _: &mut A) -> Result<bool, A::Error> {
        Ok(false)
    }
}

impl<'de, P, X> Deserialize<'de> for Resource<P, X>
where
    P: DeserializeOwned + Default,
    X: Extras,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Envelope<P, X>(PhantomData<(P, X)>);
        impl<'de, P: DeserializeOwned + Default, X: Extras> Visitor<'de> for Envelope<P, X> {
            type Value = Resource<P, X>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ARM resource object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut r = Resource {
                    id: None,
                    name: None,
                    kind: None,
                    location: None,
                    tags: None,
                    extra: X::default(),
                    etag: None,
                    properties: P::default(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "id" => r.id = map.next_value()?,
                        "name" => r.name = map.next_value()?,
                        "type" => r.kind = map.next_value()?,
                        "location" => r.location = map.next_value()?,
                        "tags" => r.tags = map.next_value()?,
                        "etag" => r.etag = map.next_value()?,
                        "properties" => r.properties = map.next_value()?,
                        other => {
                            if !r.extra.read_field(other, &mut map)? {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_map(Envelope(PhantomData))
    }
}

/// What code generic over resource types (the API's CRUD) reads and sets of an envelope.
pub trait Tracked {
    fn arm_id(&self) -> Option<&str>;
    fn arm_name(&self) -> Option<&str>;
    /// Sets what the server owns: `id`, `name` and `type`. A stored resource has no
    /// `etag` of its own: its store revision is its etag, which views show.
    fn stamp(&mut self, id: String, name: String, kind: &str);
}

impl<P, X> Tracked for Resource<P, X> {
    fn arm_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn arm_name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn stamp(&mut self, id: String, name: String, kind: &str) {
        self.id = Some(id);
        self.name = Some(name);
        self.kind = Some(kind.to_string());
        self.etag = None;
    }
}

/// Autoscale settings predate [`Resource`] and keep their own struct (`properties` is
/// required there); they share the envelope's rules all the same.
impl Tracked for crate::autoscale::AutoscaleSetting {
    fn arm_id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn arm_name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn stamp(&mut self, id: String, name: String, kind: &str) {
        self.id = Some(id);
        self.name = Some(name);
        self.kind = Some(kind.to_string());
    }
}

/// A named child of a resource: `{"name", "id", "etag", "type", "properties"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubResource<P> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default)]
    pub properties: P,
}

/// A reference to another resource: `{"id": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRef {
    #[serde(default)]
    pub id: String,
}

/// A resource type's own top-level fields when they are only `zones` (placement groups,
/// host groups).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Zoned {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
}

impl Extras for Zoned {
    fn read_field<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "zones" => self.zones = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Every stored resource has a location: a 400 naming `location` otherwise.
pub fn require_location<P, X>(r: &Resource<P, X>) -> Result<(), ArmError> {
    if r.location.as_deref().is_none_or(|l| l.trim().is_empty()) {
        return Err(ArmError::invalid_parameter(
            "location",
            "A location is required (e.g. \"local\").",
        ));
    }
    Ok(())
}

/// Gives every child of `list` its id (`{parent_id}/{kind}/{name}`) and its type
/// (`{parent_type}/{kind}`).
pub fn name_children<P>(
    list: &mut [SubResource<P>],
    parent_id: &str,
    parent_type: &str,
    kind: &str,
) {
    for s in list.iter_mut() {
        s.id = Some(format!("{parent_id}/{kind}/{}", s.name));
        s.kind = Some(format!("{parent_type}/{kind}"));
    }
}

/// The child a reference names: by its full id under `parent_id`, or by its bare name
/// (names compare without regard to case, as ARM's do).
pub fn find_child<'a, P>(
    list: &'a [SubResource<P>],
    r: &IdRef,
    parent_id: &str,
    kind: &str,
) -> Option<&'a SubResource<P>> {
    let want = r.id.trim_end_matches('/');
    let prefix = format!("{parent_id}/{kind}/");
    let name = match want.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(&prefix) => &want[prefix.len()..],
        _ if want.contains('/') => return None,
        _ => want,
    };
    list.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// Checks that every child of `list` has a name, used once (without regard to case);
/// with `forbid_slash`, also that no name holds a '/'. `target` is the list's field path.
pub fn check_child_names<P>(
    list: &[SubResource<P>],
    target: &str,
    forbid_slash: bool,
) -> Result<(), ArmError> {
    let mut seen = HashSet::new();
    for (i, s) in list.iter().enumerate() {
        let field = || format!("{target}[{i}].name");
        if s.name.is_empty() {
            return Err(ArmError::invalid_parameter(
                field(),
                "Every item needs a name.",
            ));
        }
        if forbid_slash && s.name.contains('/') {
            return Err(ArmError::invalid_parameter(
                field(),
                format!("The name '{}' must not contain '/'.", s.name),
            ));
        }
        if !seen.insert(s.name.to_ascii_lowercase()) {
            return Err(ArmError::invalid_parameter(
                field(),
                format!("The name '{}' is used twice.", s.name),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmss::parse_typed;
    use serde_json::{json, Value};

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Props {
        #[serde(default)]
        port: Option<i64>,
    }

    #[test]
    fn the_envelope_round_trips_in_arm_order_and_drops_unknown_fields() {
        let body = json!({"properties": {"port": 1}, "etag": "e", "zones": ["1"], "tags": {"a": "b"},
            "location": "local", "type": "T", "name": "n", "id": "/i", "unknown": [1]});
        let r: Resource<Props, Zoned> = parse_typed(&body).unwrap();
        assert_eq!(r.extra.zones.as_deref(), Some(&["1".to_string()][..]));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"id":"/i","name":"n","type":"T","location":"local","tags":{"a":"b"},"zones":["1"],"etag":"e","properties":{"port":1}}"#
        );
        let plain: Resource<Props> = parse_typed(&body).unwrap();
        assert!(!serde_json::to_string(&plain).unwrap().contains("zones"));
    }

    #[test]
    fn a_wrong_type_names_its_field_even_among_the_extras() {
        for (body, target) in [
            (json!({"zones": "1"}), "zones"),
            (json!({"tags": {"a": 1}}), "tags.a"),
            (json!({"properties": {"port": "x"}}), "properties.port"),
            (json!({"properties": null}), "properties"),
            (json!({"id": 5}), "id"),
        ] {
            let err = parse_typed::<Resource<Props, Zoned>>(&body).unwrap_err();
            assert_eq!(err.target.as_deref(), Some(target), "{body}");
        }
    }

    #[test]
    fn children_are_named_found_and_checked() {
        let mut list: Vec<SubResource<Value>> = vec![
            SubResource {
                name: "a".into(),
                ..Default::default()
            },
            SubResource {
                name: "B".into(),
                ..Default::default()
            },
        ];
        name_children(&mut list, "/p", "T", "things");
        assert_eq!(list[1].id.as_deref(), Some("/p/things/B"));
        assert_eq!(list[1].kind.as_deref(), Some("T/things"));
        let found = |id: &str| find_child(&list, &IdRef { id: id.into() }, "/p", "things");
        assert_eq!(found("/P/THINGS/b").map(|s| s.name.as_str()), Some("B"));
        assert_eq!(found("a").map(|s| s.name.as_str()), Some("a"));
        assert!(found("/q/things/a").is_none());
        assert!(check_child_names(&list, "t", true).is_ok());
        list[1].name = "A".into();
        let err = check_child_names(&list, "t", false).unwrap_err();
        assert_eq!(err.target.as_deref(), Some("t[1].name"));
        list[0].name = "x/y".into();
        assert!(check_child_names(&list[..1], "t", false).is_ok());
        assert!(check_child_names(&list[..1], "t", true).is_err());
    }
}
