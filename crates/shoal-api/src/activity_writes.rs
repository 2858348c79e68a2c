//! Who changed what: every write a caller sends to a subscription's resources (PUT, PATCH,
//! DELETE, POST actions) is kept as an activity-log event of Azure's `Administrative`
//! category, with the caller (the application id of the token), the action
//! (`Microsoft.Compute/virtualMachineScaleSets/write`), the resource, and whether it
//! succeeded (`Succeeded`, or `Failed` with the status code of the refusal).
//!
//! Records live under `activity/{sub}/{ms}-{id}`, so a subscription's events list in time
//! order. Each subscription keeps at most [`KEEP_EVENTS`] events and none older than 90
//! days (Azure's retention); older ones are pruned every [`PRUNE_EVERY`] writes.

use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_control::kv;
use shoal_store::Expect;

use crate::activity_log::Event;
use crate::routes::Route;
use crate::state::ApiState;

const PREFIX: &str = "activity/";
/// Events kept per subscription.
const KEEP_EVENTS: usize = 10_000;
/// Azure keeps activity-log events for 90 days.
const KEEP_SECS: i64 = 90 * 24 * 3600;
/// Prune once in this many recorded writes.
const PRUNE_EVERY: u64 = 512;
/// Deletes per store transaction (etcd allows 128 operations).
const DELETE_BATCH: usize = 100;

static WRITES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteRecord {
    time: String,
    caller: String,
    action: String,
    resource_id: String,
    status_code: u16,
    correlation_id: String,
}

/// The subscription of a write worth recording: a change (not a read) to a resource of a
/// subscription. Custom metrics are data, not changes, and are left out.
pub fn recorded(method: &Method, route: &Route, path: &str) -> Option<String> {
    if !matches!(
        *method,
        Method::PUT | Method::PATCH | Method::DELETE | Method::POST
    ) || matches!(route, Route::CustomMetrics(_))
        || crate::auth::Access::of(route) != crate::auth::Access::User
    {
        return None;
    }
    let mut segs = path.trim_matches('/').split('/');
    match (segs.next(), segs.next()) {
        (Some(s), Some(sub)) if s.eq_ignore_ascii_case("subscriptions") && !sub.is_empty() => {
            Some(sub.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Keeps one write of `caller` to `path` that was answered `status`. Best effort: a
/// failure to record is logged, never the request's failure.
pub async fn record(
    st: &ApiState,
    sub: &str,
    caller: Option<&shoal_auth::Principal>,
    method: &Method,
    path: &str,
    status: u16,
) {
    let path = path.trim_end_matches('/');
    // A POST names an action of the resource before it.
    let resource_id = match *method {
        Method::POST => path.rsplit_once('/').map_or(path, |(r, _)| r),
        _ => path,
    };
    let caller = caller.map(|c| c.appid.clone()).unwrap_or_default();
    let action = crate::rbac::action_of(method, path);
    if write(st, &*st.store, sub, &caller, &action, resource_id, status).await
        && WRITES.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1
    {
        prune(st, sub, st.clock.now().as_second()).await;
    }
}

/// The action a server's term of leadership is recorded as.
pub const LEAD_ACTION: &str = "Shoal.Infrastructure/servers/lead/action";

/// Records that server `name` began to lead, in the default subscription, written
/// through `store` — the term's fenced store, so only a server that really leads can.
pub async fn record_leadership(st: &ApiState, store: &dyn shoal_store::Store, name: &str) {
    let Ok(sub) = st.default_subscription().await else {
        return;
    };
    let resource = format!("/subscriptions/{sub}/providers/Shoal.Infrastructure/servers/{name}");
    write(st, store, &sub, name, LEAD_ACTION, &resource, 200).await;
}

/// Writes one event; whether it was kept.
async fn write(
    st: &ApiState,
    store: &dyn shoal_store::Store,
    sub: &str,
    caller: &str,
    action: &str,
    resource_id: &str,
    status: u16,
) -> bool {
    let now = st.clock.now();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let record = WriteRecord {
        time: shoal_control::clock::arm_time(now),
        caller: caller.to_string(),
        action: action.to_string(),
        resource_id: resource_id.to_string(),
        status_code: status,
        correlation_id: id.clone(),
    };
    let key = format!(
        "{}{:016}-{}",
        shoal_model::keys::in_subscription(PREFIX, &sub.to_ascii_lowercase()),
        now.as_millisecond().max(0),
        &id[..8]
    );
    match store
        .txn(vec![kv::put_op(key, &record, Expect::Absent)])
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot record an event in the activity log");
            false
        }
    }
}

/// Deletes a subscription's events past [`KEEP_EVENTS`] or older than [`KEEP_SECS`].
async fn prune(st: &ApiState, sub: &str, now: i64) {
    let prefix = shoal_model::keys::in_subscription(PREFIX, sub);
    let Ok((kvs, _)) = st.store.list(&prefix).await else {
        return;
    };
    let cutoff_ms = (now - KEEP_SECS).saturating_mul(1000);
    let excess = kvs.len().saturating_sub(KEEP_EVENTS);
    let old: Vec<String> = kvs
        .iter()
        .enumerate()
        .filter(|(i, kv)| {
            let ms = kv.key[prefix.len()..]
                .split('-')
                .next()
                .and_then(|m| m.parse::<i64>().ok())
                .unwrap_or(0);
            *i < excess || ms < cutoff_ms
        })
        .map(|(_, kv)| kv.key.clone())
        .collect();
    for batch in old.chunks(DELETE_BATCH) {
        let ops = batch
            .iter()
            .map(|k| kv::delete_op(k.clone(), Expect::Any))
            .collect();
        if let Err(e) = st.store.txn(ops).await {
            tracing::warn!(error = %e, "cannot prune the activity log");
            return;
        }
    }
}

/// The recorded writes of `sub` the query's `scope` covers, as `(time, event)`.
pub async fn events(
    st: &ApiState,
    sub: &str,
    scope: crate::activity_log::Scope<'_>,
) -> Result<Vec<(Timestamp, Value)>, shoal_model::ArmError> {
    let prefix = shoal_model::keys::in_subscription(PREFIX, sub);
    let mut out = Vec::new();
    for r in st.list::<WriteRecord>(&prefix).await? {
        let w = r.value;
        let Ok(at) = w.time.parse::<Timestamp>() else {
            continue;
        };
        let rg = w.resource_id.split('/').nth(4).unwrap_or_default();
        if !scope.within(at) || !scope.covers(&w.resource_id, rg) {
            continue;
        }
        let failed = w.status_code >= 400;
        let (provider, resource_type) = match w.action.rsplit_once('/') {
            Some((t, _)) => (t.split('/').next().unwrap_or(t), t),
            None => (w.action.as_str(), w.action.as_str()),
        };
        let status = if failed { "Failed" } else { "Succeeded" };
        let reason = http::StatusCode::from_u16(w.status_code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
            .replace(' ', "");
        let event = Event {
            subscription: sub,
            resource_group: rg,
            resource_id: &w.resource_id,
            resource: (provider, resource_type),
            event_id: &w.correlation_id,
            time: &w.time,
            at,
            operation: (&w.action, &w.action),
            caller: &w.caller,
            channels: "Operation",
            event_name: ("EndRequest", "End request"),
            category: ("Administrative", "Administrative"),
            level: if failed { "Error" } else { "Informational" },
            status,
            description: "",
            properties: json!({"statusCode": reason, "serviceRequestId": w.correlation_id}),
        };
        out.push((at, event.to_json()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity_log::Scope;

    #[tokio::test]
    async fn a_write_and_a_refused_write_are_events_with_their_caller() {
        let t0: Timestamp = "2026-12-05T10:00:00Z".parse().expect("time");
        let st = crate::arm_crud::testing::empty_state(t0);
        let set = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web";
        let who = shoal_auth::Principal {
            oid: "o".into(),
            tid: "t".into(),
            appid: "app-1".into(),
            kind: shoal_auth::PrincipalKind::ServicePrincipal,
        };
        record(&st, "s1", Some(&who), &Method::PUT, set, 201).await;
        let restart = format!("{set}/restart");
        record(&st, "s1", Some(&who), &Method::POST, &restart, 409).await;
        let all = events(&st, "s1", Scope::default()).await.expect("events");
        assert_eq!(all.len(), 2);
        // Both at the same instant: found by their status, not their order.
        let find = |status: &str| {
            all.iter()
                .map(|(_, e)| e)
                .find(|e| e["status"]["value"] == status)
                .expect("event")
        };
        let put = find("Succeeded");
        assert_eq!(put["caller"], "app-1");
        assert_eq!(
            put["operationName"]["value"],
            "Microsoft.Compute/virtualMachineScaleSets/write"
        );
        assert_eq!(put["status"]["value"], "Succeeded");
        assert_eq!(put["category"]["value"], "Administrative");
        assert_eq!(put["properties"]["statusCode"], "Created");
        let post = find("Failed");
        assert_eq!(
            post["resourceId"], set,
            "a POST's resource is the one before the action"
        );
        assert_eq!(post["status"]["value"], "Failed");
        assert_eq!(post["level"], "Error");
        // Filters: another group, or a time before both, find nothing.
        let other = events(
            &st,
            "s1",
            Scope {
                group: Some("other"),
                ..Scope::default()
            },
        )
        .await
        .expect("events");
        assert!(other.is_empty());
        let before = t0
            .checked_sub(jiff::SignedDuration::from_secs(60))
            .expect("time");
        let early = events(
            &st,
            "s1",
            Scope {
                until: Some(before),
                ..Scope::default()
            },
        )
        .await
        .expect("events");
        assert!(early.is_empty());
    }

    #[test]
    fn only_changes_to_a_subscriptions_resources_are_recorded() {
        let set = "/subscriptions/S1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web";
        let route = crate::routes::parse(set).expect("route");
        assert_eq!(recorded(&Method::PUT, &route, set).as_deref(), Some("s1"));
        assert_eq!(recorded(&Method::GET, &route, set), None);
        let metrics = format!("{set}/metrics");
        let custom = crate::routes::parse(&metrics).expect("route");
        assert_eq!(recorded(&Method::POST, &custom, &metrics), None);
        let hosts = "/providers/Shoal.Infrastructure/hosts/h1/cordon";
        let host = crate::routes::parse(hosts).expect("route");
        assert_eq!(recorded(&Method::POST, &host, hosts), None);
    }
}
