//! The ARM CRUD sequence, once, for resource types stored as one record each: list (by
//! subscription or resource group, paged), GET, PUT (create or replace) and DELETE.
//!
//! A resource type describes itself with [`ArmKind`]: where its records live, its ARM
//! type and id path, and the hooks where types differ — [`ArmKind::admit`] (checks and
//! completes a parsed PUT body, may read the store or files), [`ArmKind::check_unused`]
//! (refuses a DELETE while something uses the resource), [`ArmKind::also_delete`]
//! (records that go with it) and [`ArmKind::view`] (what GET and PUT answers show).
//!
//! Requests come from `server::dispatch` as (method, subscription, group, name, body).
//! A PUT body is parsed straight into the typed model, once (a wrong type is a 400 naming
//! the field); a PATCH, for kinds that take one, merges the body over the stored resource
//! first. `If-Match` / `If-None-Match` are checked against the stored revision (the
//! resource's etag); the write leaves as one compare-and-swap transaction (`Absent` to
//! create, the revision read to replace or delete), so of two racing writers one gets a
//! 409 and nothing is half-written. Create answers 201, replace 200; DELETE answers 200,
//! or 204 when there was nothing to delete.

use std::future::Future;

use http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use shoal_control::kv::{self, Versioned};
use shoal_model::arm::Tracked;
use shoal_model::{names, vmss, ArmError};
use shoal_store::{Expect, TxnOp};

use crate::response::{self, empty, json, ApiResult, Ctx};
use crate::routes::method_not_allowed;
use crate::state::{body_object, txn_error, ApiState};

/// The resource a request addresses, spelled as in the request.
#[derive(Debug, Clone, Copy)]
pub struct Addr<'a> {
    pub sub: &'a str,
    pub rg: &'a str,
    pub name: &'a str,
}

/// One resource type served by this module.
pub trait ArmKind {
    /// The stored record: the resource as ARM shows it, without its etag.
    type Model: Tracked + Serialize + DeserializeOwned + Send + Sync;
    /// The ARM type (`Microsoft.Network/loadBalancers`): the `type` field and what a 404
    /// names.
    const TYPE: &'static str;
    /// The provider path in ids and list URLs (`Microsoft.Network/loadBalancers`).
    const ID_PATH: &'static str;
    /// The first segment of store keys: records live at `{prefix}/{sub}/{rg}/{name}`,
    /// lower case.
    const KEY_PREFIX: &'static str;
    /// What a name error calls the resource ("load balancer"), and its longest name.
    const NOUN: &'static str;
    const MAX_NAME_LEN: usize;
    /// Whether PATCH merges the body over the stored resource (otherwise it is a 405).
    const PATCH: bool = false;

    /// Checks a PUT body (already parsed, with `id`, `name` and `type` set; `id` as
    /// stored) and fills in what the server owns: defaults, read-only properties.
    /// `existing` is the stored resource being replaced. An error here leaves the store
    /// untouched.
    fn admit(
        st: &ApiState,
        model: &mut Self::Model,
        id: &str,
        at: Addr<'_>,
        existing: Option<&Self::Model>,
    ) -> impl Future<Output = Result<(), ArmError>> + Send;

    /// Refuses to delete the resource while something still uses it.
    fn check_unused(
        st: &ApiState,
        model: &Self::Model,
        at: Addr<'_>,
    ) -> impl Future<Output = Result<(), ArmError>> + Send {
        let _ = (st, model, at);
        async { Ok(()) }
    }

    /// Store operations deleting records that go with the resource (e.g. its history).
    fn also_delete(
        st: &ApiState,
        at: Addr<'_>,
    ) -> impl Future<Output = Result<Vec<TxnOp>, ArmError>> + Send {
        let _ = (st, at);
        async { Ok(Vec::new()) }
    }

    /// The resource as GET and PUT answers show it. `revision` is its store revision.
    fn view(
        st: &ApiState,
        model: &Self::Model,
        revision: u64,
    ) -> impl Future<Output = Result<Value, ArmError>> + Send;
}

/// The store key of a resource.
pub fn key<K: ArmKind>(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/{}/{}/{}",
        K::KEY_PREFIX,
        sub.to_ascii_lowercase(),
        rg.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

/// The ARM id of a resource, spelled as given.
pub fn id<K: ArmKind>(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}/{name}",
        K::ID_PATH
    )
}

/// The weak etag ARM shows for a store revision (`W/"7"`); `If-Match` takes it with or
/// without the `W/`.
pub fn etag(revision: u64) -> String {
    format!("W/\"{revision}\"")
}

/// Every stored resource of the kind, in every subscription and group.
pub async fn all<K: ArmKind>(st: &ApiState) -> Result<Vec<Versioned<K::Model>>, ArmError> {
    st.list::<K::Model>(&format!("{}/", K::KEY_PREFIX)).await
}

/// `GET` of the resources of a subscription (`rg` `None`) or of one resource group, one
/// page at a time.
pub async fn list<K: ArmKind>(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: Option<&str>,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let (prefix, path) = match rg {
        Some(rg) => {
            st.require_group(sub, rg).await?;
            (
                format!(
                    "{}/{}/{}/",
                    K::KEY_PREFIX,
                    sub.to_ascii_lowercase(),
                    rg.to_ascii_lowercase()
                ),
                format!(
                    "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}",
                    K::ID_PATH
                ),
            )
        }
        None => (
            format!("{}/{}/", K::KEY_PREFIX, sub.to_ascii_lowercase()),
            format!("/subscriptions/{sub}/providers/{}", K::ID_PATH),
        ),
    };
    let mut items = Vec::new();
    for r in st.list::<K::Model>(&prefix).await? {
        items.push(K::view(st, &r.value, r.revision).await?);
    }
    Ok(response::page(ctx, &path, items, st.page_size))
}

/// The stored resource, or a 404 naming it (for the handlers of its children).
pub async fn read<K: ArmKind>(
    st: &ApiState,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<Versioned<K::Model>, ArmError> {
    st.require_group(sub, rg).await?;
    st.get::<K::Model>(&key::<K>(sub, rg, name))
        .await?
        .ok_or_else(|| ArmError::not_found(K::TYPE, name))
}

/// Replaces the stored resource with `model` if it is still at `revision` (a racing write
/// makes this a 409), for handlers that change part of one (a child); answers the new
/// revision.
pub async fn replace<K: ArmKind>(
    st: &ApiState,
    at: Addr<'_>,
    model: &K::Model,
    revision: u64,
) -> Result<u64, ArmError> {
    st.store
        .txn(vec![kv::put_op(
            key::<K>(at.sub, at.rg, at.name),
            model,
            Expect::ModRevision(revision),
        )])
        .await
        .map_err(txn_error)
}

/// `GET`, `PUT`, `PATCH` (when the kind allows it) and `DELETE` of one resource.
pub async fn resource<K: ArmKind>(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    body: &[u8],
) -> ApiResult {
    st.require_group(sub, rg).await?;
    names::check_resource_name(K::NOUN, name, K::MAX_NAME_LEN)?;
    let at = Addr { sub, rg, name };
    let key = key::<K>(sub, rg, name);
    let existing = st.get::<K::Model>(&key).await?;
    match *method {
        Method::GET => match existing {
            Some(r) => Ok(json(200, &K::view(st, &r.value, r.revision).await?)),
            None => Err(ArmError::not_found(K::TYPE, name)),
        },
        Method::PUT => put::<K>(st, ctx, at, existing, body, false).await,
        Method::PATCH if K::PATCH => put::<K>(st, ctx, at, existing, body, true).await,
        Method::DELETE => {
            let Some(e) = existing else {
                return Ok(empty(204));
            };
            K::check_unused(st, &e.value, at).await?;
            let mut ops = vec![kv::delete_op(key, Expect::ModRevision(e.revision))];
            ops.extend(K::also_delete(st, at).await?);
            st.store.txn(ops).await.map_err(txn_error)?;
            Ok(empty(200))
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// Create or replace: the body parsed straight into the model (`patch`: merged over the
/// stored resource first).
async fn put<K: ArmKind>(
    st: &ApiState,
    ctx: &Ctx,
    at: Addr<'_>,
    existing: Option<Versioned<K::Model>>,
    body: &[u8],
    patch: bool,
) -> ApiResult {
    let mut model: K::Model = if patch {
        let incoming = body_object(body, true)?;
        let Some(e) = &existing else {
            return Err(ArmError::not_found(K::TYPE, at.name));
        };
        let mut merged =
            serde_json::to_value(&e.value).map_err(|e| ArmError::internal(e.to_string()))?;
        vmss::merge_json(&mut merged, &incoming);
        vmss::parse_typed(&merged)?
    } else {
        vmss::parse_body(body)?
    };
    ctx.check_preconditions(
        existing
            .as_ref()
            .map(|e| format!("\"{}\"", e.revision))
            .as_deref(),
    )?;
    let stored = existing.as_ref().map(|e| &e.value);
    // The stored id and name keep the spelling of the first PUT.
    let id = stored
        .and_then(|e| e.arm_id())
        .map_or_else(|| id::<K>(at.sub, at.rg, at.name), String::from);
    let stored_name = stored
        .and_then(|e| e.arm_name())
        .map_or_else(|| at.name.to_string(), String::from);
    model.stamp(id.clone(), stored_name, K::TYPE);
    K::admit(st, &mut model, &id, at, stored).await?;
    let expect = existing
        .as_ref()
        .map_or(Expect::Absent, |e| Expect::ModRevision(e.revision));
    let revision = st
        .store
        .txn(vec![kv::put_op(
            key::<K>(at.sub, at.rg, at.name),
            &model,
            expect,
        )])
        .await
        .map_err(txn_error)?;
    Ok(json(
        if existing.is_some() { 200 } else { 201 },
        &K::view(st, &model, revision).await?,
    ))
}

/// What the API's unit tests share: a server state on an in-memory store, and a request
/// through the whole router.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use http::Method;
    use serde_json::{json, Value};
    use shoal_control::kv;
    use shoal_store::Expect;
    use tower::ServiceExt;

    use crate::server::{body_bytes, request};
    use crate::state::ApiState;

    /// A server state on an empty in-memory store, its clock stopped at `at`: 200 items a
    /// page, capacity up to 10, no token checks, temporary directories.
    pub(crate) fn empty_state(at: jiff::Timestamp) -> ApiState {
        ApiState {
            vm_views: Default::default(),
            store: Arc::new(shoal_store::MemoryStore::new()),
            clock: Arc::new(shoal_control::ManualClock::new(at)),
            blob_dir: std::env::temp_dir(),
            certificate_dir: std::env::temp_dir(),
            bundles: Default::default(),
            http: reqwest::Client::new(),
            page_size: 200,
            max_capacity: 10,
            public_ip_range: crate::vnets::default_public_ip_range(),
            identity_header: None,
            metrics: Default::default(),
            auth: None,
            cluster: Arc::new(crate::cluster::Cluster::standalone("local")),
        }
    }

    /// A state with resource group `demo` in subscription `s`, listing `page_size` items a
    /// page.
    pub(crate) async fn state(page_size: usize) -> ApiState {
        let st = ApiState {
            vm_views: Default::default(),
            page_size,
            ..empty_state(jiff::Timestamp::from_second(1_800_000_000).expect("timestamp"))
        };
        let group = json!({"id": "/subscriptions/s/resourceGroups/demo", "name": "demo",
            "location": "local", "properties": {"provisioningState": "Succeeded"}});
        st.store
            .txn(vec![kv::put_op(
                shoal_model::ids::rg_key("s", "demo"),
                &group,
                Expect::Absent,
            )])
            .await
            .expect("store");
        st
    }

    /// Status and JSON body (`Null` when empty) of one request through the router.
    pub(crate) async fn call(
        st: &ApiState,
        method: Method,
        uri: &str,
        body: Value,
    ) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let resp = crate::router(st.clone())
            .oneshot(request(method, uri, body))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let bytes = body_bytes(resp).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shoal_model::arm::Resource;

    use super::testing::state;
    use super::*;

    /// A resource type with hooks a test can steer: `properties.refuse` makes `admit`
    /// fail, a tag `busy` makes `check_unused` fail, and a record at `{key}/companion`
    /// goes with the resource.
    struct Things;

    impl ArmKind for Things {
        type Model = Resource<Value>;
        const TYPE: &'static str = "Test.Things/things";
        const ID_PATH: &'static str = "Test.Things/things";
        const KEY_PREFIX: &'static str = "thing";
        const NOUN: &'static str = "thing";
        const MAX_NAME_LEN: usize = 10;
        const PATCH: bool = true;

        async fn admit(
            _: &ApiState,
            model: &mut Self::Model,
            _: &str,
            _: Addr<'_>,
            existing: Option<&Self::Model>,
        ) -> Result<(), ArmError> {
            if model.properties["refuse"] == true {
                return Err(ArmError::invalid_parameter("properties.refuse", "Refused."));
            }
            model.properties["replaced"] = json!(existing.is_some());
            Ok(())
        }

        async fn check_unused(
            _: &ApiState,
            model: &Self::Model,
            at: Addr<'_>,
        ) -> Result<(), ArmError> {
            match model.tags.as_ref().is_some_and(|t| t.contains_key("busy")) {
                true => Err(ArmError::conflict(format!("'{}' is busy.", at.name))),
                false => Ok(()),
            }
        }

        async fn also_delete(st: &ApiState, at: Addr<'_>) -> Result<Vec<TxnOp>, ArmError> {
            let companion = format!("{}/companion", key::<Things>(at.sub, at.rg, at.name));
            Ok(match st.get::<Value>(&companion).await? {
                Some(c) => vec![kv::delete_op(companion, Expect::ModRevision(c.revision))],
                None => vec![],
            })
        }

        async fn view(_: &ApiState, model: &Self::Model, revision: u64) -> Result<Value, ArmError> {
            let mut v = serde_json::to_value(model).unwrap_or(Value::Null);
            v["etag"] = json!(etag(revision));
            Ok(v)
        }
    }

    fn ctx(if_match: Option<&str>, if_none_match: Option<&str>) -> Ctx {
        Ctx {
            base_url: "http://x".into(),
            query: vec![],
            if_match: if_match.map(String::from),
            if_none_match: if_none_match.map(String::from),
        }
    }

    /// Status and JSON body (`Null` when empty) of one call, or the error's status and code.
    async fn call(
        st: &ApiState,
        ctx: &Ctx,
        method: Method,
        name: &str,
        body: Value,
    ) -> (u16, Value) {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        match resource::<Things>(st, ctx, &method, "s", "demo", name, &body).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let bytes = crate::server::body_bytes(resp).await;
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                )
            }
            Err(e) => (e.status, json!(e.code)),
        }
    }

    #[tokio::test]
    async fn put_creates_then_replaces_and_the_revision_is_the_etag() {
        let st = state(1).await;
        let none = ctx(None, None);
        let (status, created) = call(
            &st,
            &none,
            Method::PUT,
            "One",
            json!({"location": "local", "tags": {"a": "b"}}),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(
            created["id"],
            "/subscriptions/s/resourceGroups/demo/providers/Test.Things/things/One"
        );
        assert_eq!(
            (&created["type"], &created["properties"]["replaced"]),
            (&json!("Test.Things/things"), &json!(false))
        );
        // A replace keeps the first spelling of id and name, and drops what it omits.
        let (status, replaced) =
            call(&st, &none, Method::PUT, "ONE", json!({"location": "local"})).await;
        assert_eq!(status, 200, "{replaced}");
        assert_eq!(
            (&replaced["name"], &replaced["id"]),
            (&created["name"], &created["id"])
        );
        assert_eq!(replaced["properties"]["replaced"], true);
        assert!(replaced.get("tags").is_none());
        assert_ne!(replaced["etag"], created["etag"]);
        assert_eq!(
            call(&st, &none, Method::GET, "one", Value::Null).await,
            (200, replaced)
        );
    }

    #[tokio::test]
    async fn preconditions_and_refused_bodies_change_nothing() {
        let st = state(1).await;
        let body = json!({"location": "local"});
        assert_eq!(
            call(&st, &ctx(Some("*"), None), Method::PUT, "t", body.clone())
                .await
                .0,
            412
        );
        let (_, first) = call(&st, &ctx(None, Some("*")), Method::PUT, "t", body.clone()).await;
        let etag = first["etag"].as_str().expect("etag").to_string();
        for (c, want) in [
            (ctx(None, Some("*")), 412),
            (ctx(Some("\"999\""), None), 412),
            (ctx(None, None), 400),
        ] {
            let refused = json!({"location": "local", "properties": {"refuse": true}});
            let bad = if want == 400 { refused } else { body.clone() };
            assert_eq!(call(&st, &c, Method::PUT, "t", bad).await.0, want);
        }
        assert_eq!(
            call(&st, &ctx(None, None), Method::PUT, "t", json!({"id": 5}))
                .await
                .0,
            400
        );
        assert_eq!(
            call(&st, &ctx(None, None), Method::GET, "t", Value::Null).await,
            (200, first)
        );
        assert_eq!(
            call(&st, &ctx(Some(&etag), None), Method::PUT, "t", body)
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn patch_merges_over_the_stored_resource() {
        let st = state(1).await;
        let none = ctx(None, None);
        assert_eq!(
            call(&st, &none, Method::PATCH, "t", json!({"tags": {}})).await,
            (404, json!("ResourceNotFound"))
        );
        call(
            &st,
            &none,
            Method::PUT,
            "t",
            json!({"location": "local", "tags": {"a": "b"}, "properties": {"keep": 1}}),
        )
        .await;
        let (status, patched) = call(
            &st,
            &none,
            Method::PATCH,
            "t",
            json!({"properties": {"more": 2}}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (
                &patched["tags"]["a"],
                &patched["properties"]["keep"],
                &patched["properties"]["more"]
            ),
            (&json!("b"), &json!(1), &json!(2))
        );
    }

    #[tokio::test]
    async fn delete_waits_until_unused_and_takes_its_companions() {
        let st = state(1).await;
        let none = ctx(None, None);
        call(
            &st,
            &none,
            Method::PUT,
            "t",
            json!({"location": "local", "tags": {"busy": ""}}),
        )
        .await;
        let companion = format!("{}/companion", key::<Things>("s", "demo", "t"));
        st.store
            .txn(vec![kv::put_op(
                companion.clone(),
                &json!({}),
                Expect::Absent,
            )])
            .await
            .expect("store");
        assert_eq!(
            call(&st, &none, Method::DELETE, "t", Value::Null).await,
            (409, json!("Conflict"))
        );
        assert_eq!(call(&st, &none, Method::GET, "t", Value::Null).await.0, 200);
        call(&st, &none, Method::PUT, "t", json!({"location": "local"})).await;
        assert_eq!(
            call(&st, &none, Method::DELETE, "t", Value::Null).await.0,
            200
        );
        assert!(st.get::<Value>(&companion).await.expect("store").is_none());
        assert_eq!(
            call(&st, &none, Method::DELETE, "t", Value::Null).await.0,
            204
        );
        assert_eq!(call(&st, &none, Method::GET, "t", Value::Null).await.0, 404);
        assert_eq!(
            call(&st, &none, Method::POST, "t", Value::Null).await.0,
            405
        );
        assert_eq!(
            call(&st, &none, Method::GET, "much-too-long", Value::Null)
                .await
                .0,
            400
        );
    }

    #[tokio::test]
    async fn lists_page_through_a_group_or_the_subscription() {
        let st = state(1).await;
        let none = ctx(None, None);
        for name in ["a", "b"] {
            call(&st, &none, Method::PUT, name, json!({"location": "local"})).await;
        }
        for rg in [Some("demo"), None] {
            let resp = list::<Things>(&st, &none, &Method::GET, "s", rg)
                .await
                .expect("list");
            let page: Value =
                serde_json::from_slice(&crate::server::body_bytes(resp).await).expect("json");
            assert_eq!(page["value"][0]["name"], "a");
            assert!(page["nextLink"]
                .as_str()
                .expect("nextLink")
                .ends_with("/providers/Test.Things/things?api-version=2024-07-01&$skiptoken=1"));
        }
        let missing = list::<Things>(&st, &none, &Method::GET, "s", Some("nope"))
            .await
            .map(|_| ())
            .expect_err("404");
        assert_eq!(missing.code, "ResourceGroupNotFound");
        assert_eq!(
            list::<Things>(&st, &none, &Method::PUT, "s", None)
                .await
                .map(|_| ())
                .expect_err("405")
                .status,
            405
        );
    }
}
