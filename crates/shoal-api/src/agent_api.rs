//! The agent protocol: the same HTTP API everyone uses, with three Shoal endpoints.
//!
//! - `PUT /shoal/v1/hosts/{name}`: an agent registers (and refreshes) its host; a name
//!   another live host holds is 409. Cordon and drain flags are the operator's: kept.
//!   Heartbeats: `POST /shoal/v1/hosts/{name}/heartbeat` (`crate::hosts`).
//! - `GET /shoal/v1/hosts/{name}/instances`: the desired instances on that host and the
//!   store revision (`{"revision", "items"}`); with `?watch=true&after=REV`, a stream of
//!   newline-delimited JSON events after that revision about that host's instances only
//!   (`{"type":"put","revision","key","record"}`, `{"type":"delete","revision","key"}`,
//!   periodic `{"type":"bookmark"}`, and `{"type":"error","code":"Compacted"}` when the
//!   agent must list again).
//! - `PUT /shoal/v1/status/{sub}/{rg}/{vmss}/{id}`: the agent reports what it observed;
//!   only the host the instance is assigned to may (404 for any other: the instance was
//!   placed again elsewhere, and the reporting agent stops its stale copy).
//!   `PUT /shoal/v1/statuses` carries many reports in one request and one store write
//!   (an agent starting a thousand instances sends a few dozen requests, not thousands).

use shoal_model::keys;
use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use futures::StreamExt;
use http::Method;
use serde_json::{json, Value};
use shoal_control::kv;
use shoal_model::records::{
    balancer_key, drain_ack_prefix, health_key, host_key, BalancerRecord, DrainAck, HealthRecord,
    HostRecord, InstanceRecord, InstanceStatus,
};
use shoal_model::ArmError;
use shoal_store::{Event, Expect, KeyValue, StoreError};

use crate::groups::method_not_allowed;
use crate::response::{json, ApiResult, Ctx};
use crate::state::{body_object, internal, txn_error, ApiState};

pub async fn host(st: &ApiState, method: &Method, name: &str, body: &[u8]) -> ApiResult {
    match *method {
        Method::PUT => {
            let v = body_object(body, true)?;
            let mut rec: HostRecord = shoal_model::vmss::parse_typed(&v)?;
            if !rec.name.eq_ignore_ascii_case(name) || name.is_empty() {
                return Err(ArmError::invalid_parameter(
                    "name",
                    "The host name in the body must match the path.",
                ));
            }
            rec.last_seen = st.now();
            crate::hosts::check_name_free(st, &rec).await?;
            crate::hosts::check_network(st, &rec).await?;
            if let Some(old) = st.get::<HostRecord>(&host_key(name)).await? {
                rec.cordoned = old.value.cordoned;
                rec.draining = old.value.draining;
            }
            let beat = shoal_model::records::Heartbeat { at: st.now() };
            st.store
                .txn(vec![
                    kv::put_op(host_key(name), &rec, Expect::Any),
                    kv::put_op(shoal_model::keys::heartbeat_key(name), &beat, Expect::Any),
                ])
                .await
                .map_err(txn_error)?;
            Ok(json(
                200,
                &serde_json::to_value(&rec).unwrap_or(Value::Null),
            ))
        }
        Method::GET => match st.get::<HostRecord>(&host_key(name)).await? {
            Some(h) => Ok(json(
                200,
                &serde_json::to_value(h.value).unwrap_or(Value::Null),
            )),
            None => Err(ArmError::not_found("host", name)),
        },
        _ => Err(method_not_allowed(method)),
    }
}

pub async fn host_instances(st: &ApiState, ctx: &Ctx, method: &Method, name: &str) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let watch = ctx.query("watch").is_some_and(|w| w == "true" || w == "1");
    if !watch {
        let (items, rev) = kv::list_json::<InstanceRecord>(&*st.store, keys::INSTANCE)
            .await
            .map_err(internal)?;
        let mine: Vec<InstanceRecord> = items
            .into_iter()
            .map(|i| i.value)
            .filter(|i| i.host.eq_ignore_ascii_case(name))
            .collect();
        return Ok(json(200, &json!({"revision": rev, "items": mine})));
    }
    let after: u64 = ctx
        .query("after")
        .ok_or_else(|| {
            ArmError::invalid_parameter(
                "after",
                "A watch needs ?after=REVISION (from the list answer).",
            )
        })?
        .parse()
        .map_err(|_| ArmError::invalid_parameter("after", "after must be a revision number."))?;
    // What is on the host now, so removals of other hosts' records can be left out.
    let (current, _) = st.store.list(keys::INSTANCE).await.map_err(internal)?;
    let mut filter = HostFilter::new(name, &current);
    let events = st
        .store
        .watch(keys::INSTANCE, after)
        .await
        .map_err(internal)?;
    let lines = events.filter_map(move |ev| futures::future::ready(filter.line(ev)));
    Ok(ndjson(lines))
}

/// Picks out one host's share of the instance records' changes.
///
/// A put is passed on when its record is on the host; a removal when the key was on the
/// host or is unknown (the record went before the watch saw it: passing it on is
/// harmless, the agent ignores removals of instances it does not run). A record that
/// moves to another host is a removal for this one.
struct HostFilter {
    host: String,
    /// Instance keys seen, and whether each is on the host.
    on_host: HashMap<String, bool>,
}

impl HostFilter {
    fn new(host: &str, current: &[KeyValue]) -> Self {
        let mut filter = HostFilter {
            host: host.to_ascii_lowercase(),
            on_host: HashMap::new(),
        };
        for kv in current {
            if let Ok(rec) = serde_json::from_slice::<InstanceRecord>(&kv.value) {
                let mine = filter.is_mine(&rec);
                filter.on_host.insert(kv.key.clone(), mine);
            }
        }
        filter
    }

    fn is_mine(&self, rec: &InstanceRecord) -> bool {
        rec.host.eq_ignore_ascii_case(&self.host)
    }

    /// The line to send for a store event, if any.
    fn line(&mut self, ev: Result<Event, StoreError>) -> Option<Value> {
        match ev {
            Ok(Event::Put(kv)) => {
                let rec: InstanceRecord = serde_json::from_slice(&kv.value).ok()?;
                let mine = self.is_mine(&rec);
                let was_mine = self.on_host.insert(kv.key.clone(), mine) == Some(true);
                if mine {
                    Some(
                        json!({"type": "put", "revision": kv.mod_revision, "key": kv.key, "record": rec}),
                    )
                } else if was_mine {
                    Some(json!({"type": "delete", "revision": kv.mod_revision, "key": kv.key}))
                } else {
                    None
                }
            }
            Ok(Event::Delete { key, revision }) => match self.on_host.remove(&key) {
                Some(false) => None,
                _ => Some(json!({"type": "delete", "revision": revision, "key": key})),
            },
            Err(StoreError::Compacted { .. }) => {
                Some(json!({"type": "error", "code": "Compacted"}))
            }
            Err(e) => {
                Some(json!({"type": "error", "code": "StoreFailed", "message": e.to_string()}))
            }
        }
    }
}

fn tokio_stream_interval(every: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold((), move |_| async move {
        tokio::time::sleep(every).await;
        Some(((), ()))
    })
}

/// `{sub}/{rg}/{vmss}/{instanceId}` after `route` (for the error's hint): the set and the
/// instance id.
pub fn instance_path(
    path: &str,
    route: &str,
) -> Result<(shoal_model::ids::VmssRef, u64), ArmError> {
    let parts: Vec<&str> = path.split('/').collect();
    let [sub, rg, vmss, id] = parts.as_slice() else {
        return Err(ArmError::invalid_parameter(
            "path",
            format!("Use {route}/{{sub}}/{{rg}}/{{vmss}}/{{instanceId}}."),
        ));
    };
    let id: u64 = id
        .parse()
        .map_err(|_| ArmError::invalid_parameter("instanceId", "Not an instance id."))?;
    Ok((shoal_model::ids::VmssRef::new(sub, rg, vmss), id))
}

pub async fn status(
    st: &ApiState,
    caller: Option<&shoal_auth::Principal>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> ApiResult {
    // A bad path is a 400 whatever the method.
    instance_path(path, "/shoal/v1/status")?;
    if *method != Method::PUT {
        return Err(method_not_allowed(method));
    }
    let (key, status) = checked_report(st, caller, path, &body_object(body, true)?).await?;
    // A status racing the instance's removal is swept by the controller.
    st.store
        .txn(vec![kv::put_op(key, &status, Expect::Any)])
        .await
        .map_err(txn_error)?;
    Ok(json(200, &json!({"ok": true})))
}

/// The most reports one `PUT /shoal/v1/statuses` may carry.
pub const MAX_STATUSES: usize = 1000;

/// `PUT /shoal/v1/statuses`: `{"statuses": [{"instance": "{sub}/{rg}/{vmss}/{id}",
/// "status": {...}}]}`, each checked as `PUT /shoal/v1/status/...` checks one, the
/// accepted ones written together. Answered item by item, in order: `{"results": [{"ok":
/// true} | {"ok": false, "status": 404, "error": {"code", "message"}}]}` (404: not
/// assigned to the caller's host; 400 or 403: a bad or foreign report). Of two reports
/// for one instance the later is written.
pub async fn statuses(
    st: &ApiState,
    caller: Option<&shoal_auth::Principal>,
    method: &Method,
    body: &[u8],
) -> ApiResult {
    if method != Method::PUT {
        return Err(method_not_allowed(method));
    }
    let v = body_object(body, true)?;
    let items = v.get("statuses").and_then(Value::as_array).ok_or_else(|| {
        ArmError::invalid_parameter(
            "statuses",
            "Send {\"statuses\": [{\"instance\": \"{sub}/{rg}/{vmss}/{id}\", \"status\": {...}}]}.",
        )
    })?;
    if items.len() > MAX_STATUSES {
        return Err(ArmError::invalid_parameter(
            "statuses",
            format!("At most {MAX_STATUSES} reports per request; send the rest in another."),
        ));
    }
    let mut writes: HashMap<String, shoal_store::TxnOp> = HashMap::new();
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        match checked_status(st, caller, item).await {
            Ok((key, status)) => {
                let op = kv::put_op(key.clone(), &status, Expect::Any);
                writes.insert(key, op);
                results.push(json!({"ok": true}));
            }
            Err(e) => results.push(json!({
                "ok": false,
                "status": e.status,
                "error": {"code": e.code, "message": e.message},
            })),
        }
    }
    // Within the store's transaction limit (etcd's); statuses race nothing but their
    // instance's removal, which the controller sweeps, so separate writes are fine.
    let ops: Vec<shoal_store::TxnOp> = writes.into_values().collect();
    let chunk = st.store.max_txn_ops().unwrap_or(usize::MAX).max(1);
    for part in ops.chunks(chunk) {
        st.store.txn(part.to_vec()).await.map_err(txn_error)?;
    }
    Ok(json(200, &json!({ "results": results })))
}

/// One report of a batch: its instance path and status, checked as a single report is.
async fn checked_status(
    st: &ApiState,
    caller: Option<&shoal_auth::Principal>,
    item: &Value,
) -> Result<(String, InstanceStatus), ArmError> {
    let path = item
        .get("instance")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ArmError::invalid_parameter(
                "instance",
                "Each report names its instance: \"{sub}/{rg}/{vmss}/{id}\".",
            )
        })?;
    checked_report(st, caller, path, item.get("status").unwrap_or(&Value::Null)).await
}

/// A report of `status` for the instance at `path` (`{sub}/{rg}/{vmss}/{id}`): the key to
/// write it at, if the caller's host may report it and the instance is assigned there
/// (404 otherwise: it was placed again elsewhere, and the reporting agent stops its
/// stale copy).
async fn checked_report(
    st: &ApiState,
    caller: Option<&shoal_auth::Principal>,
    path: &str,
    status: &Value,
) -> Result<(String, InstanceStatus), ArmError> {
    let (vref, id) = instance_path(path, "/shoal/v1/status")?;
    let status: InstanceStatus = shoal_model::vmss::parse_typed(status)?;
    crate::host_auth::status_allowed(caller, &status.host)?;
    let assigned = st
        .get::<InstanceRecord>(&vref.instance_key(id))
        .await?
        .is_some_and(|r| r.value.host.eq_ignore_ascii_case(&status.host));
    if !assigned {
        return Err(ArmError::not_found("instance", &id.to_string()));
    }
    Ok((vref.status_key(id), status))
}

/// Prefixes a balancer may read: what it needs to know pools and members.
const READABLE: &[&str] = &[
    keys::LOAD_BALANCER,
    keys::VMSS,
    keys::INSTANCE,
    keys::STATUS,
    keys::APP_GATEWAY,
];

fn readable_prefix(ctx: &Ctx) -> Result<String, ArmError> {
    let prefix = ctx.query("prefix").unwrap_or_default().to_string();
    if !READABLE.iter().any(|p| prefix.starts_with(p)) {
        return Err(ArmError::invalid_parameter(
            "prefix",
            format!("prefix must start with one of {READABLE:?}"),
        ));
    }
    Ok(prefix)
}

/// `GET /shoal/v1/list?prefix=P`: `{"revision", "items": [{"key", "value"}]}`.
pub async fn store_list(st: &ApiState, ctx: &Ctx, method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let prefix = readable_prefix(ctx)?;
    let (kvs, rev) = st.store.list(&prefix).await.map_err(internal)?;
    let items: Vec<Value> = kvs
        .into_iter()
        .map(|kv| json!({"key": kv.key, "value": serde_json::from_slice::<Value>(&kv.value).unwrap_or(Value::Null)}))
        .collect();
    Ok(json(200, &json!({"revision": rev, "items": items})))
}

/// `GET /shoal/v1/watch?prefix=P&after=REV`: newline-delimited change events.
pub async fn store_watch(st: &ApiState, ctx: &Ctx, method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let prefix = readable_prefix(ctx)?;
    let after: u64 = ctx
        .query("after")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            ArmError::invalid_parameter(
                "after",
                "A watch needs ?after=REVISION (from the list answer).",
            )
        })?;
    let events = st.store.watch(&prefix, after).await.map_err(internal)?;
    let lines = events.map(|ev| match ev {
        Ok(Event::Put(kv)) => json!({
            "type": "put", "key": kv.key, "revision": kv.mod_revision,
            "value": serde_json::from_slice::<Value>(&kv.value).unwrap_or(Value::Null)
        }),
        Ok(Event::Delete { key, revision }) => {
            json!({"type": "delete", "key": key, "revision": revision})
        }
        Err(StoreError::Compacted { .. }) => json!({"type": "error", "code": "Compacted"}),
        Err(e) => json!({"type": "error", "code": "StoreFailed", "message": e.to_string()}),
    });
    Ok(ndjson(lines))
}

/// Streams JSON lines with a bookmark every few seconds; ends after an error line.
fn ndjson(lines: impl futures::Stream<Item = Value> + Send + 'static) -> axum::response::Response {
    let ticks = tokio_stream_interval(Duration::from_secs(5)).map(|_| json!({"type": "bookmark"}));
    let merged = futures::stream::select(lines, ticks)
        .scan(false, |ended, v| {
            if *ended {
                return futures::future::ready(None);
            }
            if v["type"] == "error" {
                *ended = true;
            }
            futures::future::ready(Some(v))
        })
        .map(|v| Ok::<_, std::convert::Infallible>(format!("{v}\n")));
    let mut resp = axum::response::Response::new(Body::from_stream(merged));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// `PUT /shoal/v1/health/{sub}/{rg}/{vmss}/{id}`: a balancer reports what its probes see.
pub async fn health(st: &ApiState, method: &Method, path: &str, body: &[u8]) -> ApiResult {
    if method != Method::PUT {
        return Err(method_not_allowed(method));
    }
    let (vref, id) = instance_path(path, "/shoal/v1/health")?;
    let rec: HealthRecord = shoal_model::vmss::parse_typed(&body_object(body, true)?)?;
    if st
        .store
        .get(&vref.instance_key(id))
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(ArmError::not_found("instance", &id.to_string()));
    }
    let key = health_key(&vref, id);
    if let Some(prev) = st.get::<HealthRecord>(&key).await? {
        if prev.value == rec {
            return Ok(json(200, &json!({"ok": true})));
        }
    }
    st.store
        .txn(vec![kv::put_op(key, &rec, Expect::Any)])
        .await
        .map_err(txn_error)?;
    Ok(json(200, &json!({"ok": true})))
}

/// How long a balancer that stopped reporting is still waited for.
const BALANCER_LIVENESS: i64 = 30;

/// `GET /shoal/v1/drain/{sub}/{rg}/{vmss}/{id}?episode=E`: has every live balancer that
/// fronts the set stopped sending to this instance? `PUT .../{balancer}` acknowledges.
pub async fn drain(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    path: &str,
    balancer: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let (vref, id) = instance_path(path, "/shoal/v1/health")?;
    match (method.clone(), balancer) {
        (Method::PUT, Some(b)) => {
            let ack: DrainAck = shoal_model::vmss::parse_typed(&body_object(body, true)?)?;
            let key = format!("{}{}", drain_ack_prefix(&vref, id), b.to_ascii_lowercase());
            st.store
                .txn(vec![kv::put_op(key, &ack, Expect::Any)])
                .await
                .map_err(txn_error)?;
            Ok(json(200, &json!({"ok": true})))
        }
        (Method::GET, None) => {
            let episode = ctx.query("episode").map(String::from);
            let now = st.clock.now();
            let set_key = vref.key();
            let acks = st.list::<DrainAck>(&drain_ack_prefix(&vref, id)).await?;
            let mut waiting = Vec::new();
            for b in st.list::<BalancerRecord>(keys::BALANCER).await? {
                let alive = b
                    .value
                    .last_seen
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| now.duration_since(t).as_secs() <= BALANCER_LIVENESS);
                if !alive
                    || !b
                        .value
                        .fronts
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(&set_key))
                {
                    continue;
                }
                let acked = acks.iter().any(|a| {
                    a.key
                        .rsplit('/')
                        .next()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&b.value.name))
                        && episode.as_deref().is_none_or(|e| a.value.episode == e)
                });
                if !acked {
                    waiting.push(b.value.name.clone());
                }
            }
            Ok(json(
                200,
                &json!({"drained": waiting.is_empty(), "waitingFor": waiting}),
            ))
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// `PUT /shoal/v1/balancers/{name}`: a balancer registers and says which sets it fronts.
pub async fn balancer(st: &ApiState, method: &Method, name: &str, body: &[u8]) -> ApiResult {
    if method != Method::PUT {
        return Err(method_not_allowed(method));
    }
    let mut rec: BalancerRecord = shoal_model::vmss::parse_typed(&body_object(body, true)?)?;
    if !rec.name.eq_ignore_ascii_case(name) {
        return Err(ArmError::invalid_parameter(
            "name",
            "The balancer name in the body must match the path.",
        ));
    }
    rec.last_seen = st.now();
    st.store
        .txn(vec![kv::put_op(balancer_key(name), &rec, Expect::Any)])
        .await
        .map_err(txn_error)?;
    Ok(json(200, &json!({"ok": true})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: u64, host: &str) -> KeyValue {
        let rec = json!({
            "vmss": {"subscription": "s", "resource_group": "demo", "name": "web"},
            "instance_id": id, "vm_id": "v", "host": host, "zone": null, "fault_domain": 0,
            "launch": {"generation": 1, "image_id": "i", "image_version": "1", "kind": "process", "blob_id": "b",
                "command": "c", "port": 80, "sku": "x", "vcpus": 1, "memory_mb": 512,
                "custom_data": null, "computer_name_prefix": "web"},
            "power": "running", "restart_gen": 0, "reimage_gen": 0, "deleting": false,
            "protection": {}, "time_created": "t"
        });
        KeyValue {
            key: shoal_model::ids::VmssRef::new("s", "demo", "web").instance_key(id),
            value: serde_json::to_vec(&rec).expect("json"),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    fn put(kv: KeyValue) -> Result<Event, StoreError> {
        Ok(Event::Put(kv))
    }

    fn delete(kv: &KeyValue) -> Result<Event, StoreError> {
        Ok(Event::Delete {
            key: kv.key.clone(),
            revision: 9,
        })
    }

    fn kind(line: Option<Value>) -> Option<String> {
        line.map(|l| l["type"].as_str().unwrap_or_default().to_string())
    }

    #[test]
    fn a_host_sees_only_its_own_instances() {
        let (a0, b1) = (instance(0, "A"), instance(1, "b"));
        let mut f = HostFilter::new("a", &[a0.clone(), b1.clone()]);
        // Puts of this host's records (host names match case-insensitively) carry the key.
        let line = f.line(put(a0.clone())).expect("a line");
        assert_eq!(
            (line["type"].as_str(), line["key"].as_str()),
            (Some("put"), Some(a0.key.as_str()))
        );
        assert_eq!(line["record"]["instance_id"], 0);
        assert_eq!(kind(f.line(put(b1.clone()))), None);
        // Removals: this host's pass, another host's do not.
        assert_eq!(kind(f.line(delete(&b1))), None);
        assert_eq!(kind(f.line(delete(&a0))).as_deref(), Some("delete"));
        // A record the filter never saw (removed before the watch reached it) passes.
        let gone = instance(7, "b");
        assert_eq!(kind(f.line(delete(&gone))).as_deref(), Some("delete"));
        // New records are learnt as they come.
        let (a2, b3) = (instance(2, "a"), instance(3, "b"));
        assert_eq!(kind(f.line(put(a2.clone()))).as_deref(), Some("put"));
        assert_eq!(kind(f.line(put(b3.clone()))), None);
        assert_eq!(kind(f.line(delete(&b3))), None);
        // A record moved away is a removal for its old host.
        assert_eq!(
            kind(f.line(put(instance(2, "b")))).as_deref(),
            Some("delete")
        );
        assert_eq!(kind(f.line(delete(&a2))), None);
        // The agent must list again after compaction.
        let compacted = f.line(Err(StoreError::Compacted {
            requested: 1,
            oldest: 5,
        }));
        assert_eq!(
            compacted.map(|l| l["code"].clone()),
            Some(json!("Compacted"))
        );
    }
}
