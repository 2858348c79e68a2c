//! The instance list's rendered views, kept between listings.
//!
//! Listing a thousand instances decoded three records an instance and rendered its view:
//! ~18 ms of server CPU a listing. A client that polls the list (a dashboard, `az vmss
//! list-instances` in a loop, a script waiting for addresses) asks for much the same
//! answer again and again. An instance's view depends only on its record, its status
//! and health records, the set's record, the tenant and the `$expand` options, so it is
//! kept with the store revisions it was rendered from and rendered again only when one
//! of them changed. The records themselves are still read from the store on every
//! listing, so reads stay read-your-writes; only decoding and rendering are saved.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use shoal_store::Revision;

/// Past this many kept views all are dropped at once: a bound on memory (~3 KB a view,
/// so ~60 MB; twenty sets of Azure's largest capacity, 1000), not an eviction policy.
/// Views of deleted instances stay until then.
const MAX_VIEWS: usize = 20_000;

/// What a view was rendered from; a kept view is used only when all of it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewStamp {
    pub record: Revision,
    pub status: Option<Revision>,
    pub health: Option<Revision>,
    pub set: Revision,
    /// A hash of the tenant id the view names.
    pub tenant: u64,
}

impl ViewStamp {
    pub fn tenant_hash(tenant: &str) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tenant.hash(&mut h);
        h.finish()
    }
}

/// One instance's JSON, rendered once and shared by every listing that shows it.
#[derive(Clone, Debug)]
pub struct RenderedView(Arc<RawValue>);

impl RenderedView {
    pub fn render<T: Serialize>(view: &T) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(view).map(|raw| RenderedView(Arc::from(raw)))
    }

    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl Serialize for RenderedView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// The views, by instance record key and `$expand` options.
#[derive(Default)]
pub struct VmViewCache {
    views: Mutex<HashMap<(String, Expand), (ViewStamp, RenderedView)>>,
}

/// Which optional parts a view has (`$expand=instanceView`, `$expand=userData`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Expand {
    pub instance_view: bool,
    pub user_data: bool,
}

impl VmViewCache {
    /// The view of `key` if it was rendered from exactly `stamp`.
    pub fn get(&self, key: &str, expand: Expand, stamp: &ViewStamp) -> Option<RenderedView> {
        let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        match views.get(&(key.to_owned(), expand)) {
            Some((kept, view)) if kept == stamp => Some(view.clone()),
            _ => None,
        }
    }

    pub fn put(&self, key: &str, expand: Expand, stamp: ViewStamp, view: RenderedView) {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        let k = (key.to_owned(), expand);
        if views.len() >= MAX_VIEWS && !views.contains_key(&k) {
            views.clear();
        }
        views.insert(k, (stamp, view));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(record: Revision, status: Option<Revision>) -> ViewStamp {
        ViewStamp {
            record,
            status,
            health: None,
            set: 3,
            tenant: ViewStamp::tenant_hash("t"),
        }
    }

    #[test]
    fn a_view_is_reused_only_for_the_revisions_and_options_it_was_rendered_from() {
        let cache = VmViewCache::default();
        let plain = Expand {
            instance_view: false,
            user_data: false,
        };
        let expanded = Expand {
            instance_view: true,
            ..plain
        };
        let view = RenderedView::render(&serde_json::json!({"name": "web_0"})).unwrap();
        cache.put("k/0", plain, stamp(5, Some(7)), view);
        assert_eq!(
            cache.get("k/0", plain, &stamp(5, Some(7))).unwrap().json(),
            r#"{"name":"web_0"}"#
        );
        // Any revision that moved, another option, another key: rendered again.
        assert!(cache.get("k/0", plain, &stamp(6, Some(7))).is_none());
        assert!(cache.get("k/0", plain, &stamp(5, Some(8))).is_none());
        assert!(cache.get("k/0", plain, &stamp(5, None)).is_none());
        assert!(cache.get("k/0", expanded, &stamp(5, Some(7))).is_none());
        assert!(cache.get("k/1", plain, &stamp(5, Some(7))).is_none());
        let mut other_tenant = stamp(5, Some(7));
        other_tenant.tenant = ViewStamp::tenant_hash("u");
        assert!(cache.get("k/0", plain, &other_tenant).is_none());
        // Serialized as the JSON it holds, not as a string.
        let page =
            serde_json::to_string(&vec![cache.get("k/0", plain, &stamp(5, Some(7))).unwrap()])
                .unwrap();
        assert_eq!(page, r#"[{"name":"web_0"}]"#);
    }
}
