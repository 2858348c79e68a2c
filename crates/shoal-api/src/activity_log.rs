//! Autoscale in Azure's activity log: `GET /subscriptions/{sub}/providers/
//! Microsoft.Insights/eventtypes/management/values` reads the runner's history of each
//! setting in the subscription (`autoscale-history/…`) and answers its scale actions, and
//! blocked wishes as warnings, in the activity log's event shape, newest first, filtered
//! by the request's `$filter`. Rolling upgrades and instances placed again after their
//! host went Down are listed too.

use http::Method;
use jiff::Timestamp;
use serde_json::{json, Value};
use shoal_control::autoscale::Blocked;
use shoal_control::autoscale_runner::History;
use shoal_model::keys;
use shoal_model::ArmError;

use crate::groups::method_not_allowed;
use crate::response::{self, ApiResult, Ctx};
use crate::state::ApiState;

/// The clauses of an activity-log `$filter`: `field op 'value'` joined by `and`.
fn filter_clauses(filter: &str) -> Result<Vec<(String, String, String)>, ArmError> {
    let bad = |c: &str| {
        ArmError::invalid_parameter(
            "$filter",
            format!("'{c}' is not a filter clause: write e.g. eventTimestamp ge '2026-11-22T09:00:00Z' and resourceUri eq '/subscriptions/…'."),
        )
    };
    let lower = filter.to_ascii_lowercase();
    let mut parts = Vec::new();
    let mut start = 0;
    while let Some(i) = lower[start..].find(" and ") {
        parts.push(&filter[start..start + i]);
        start += i + 5;
    }
    parts.push(&filter[start..]);
    let mut out = Vec::new();
    for c in parts.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        let mut it = c.splitn(3, ' ');
        let (Some(field), Some(op), Some(value)) = (it.next(), it.next(), it.next()) else {
            return Err(bad(c));
        };
        let value = value.trim().trim_matches('\'').to_string();
        out.push((field.to_ascii_lowercase(), op.to_ascii_lowercase(), value));
    }
    Ok(out)
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values`:
/// autoscale's actions (and blocked wishes, as warnings) in the activity log's shape.
pub async fn list(st: &ApiState, ctx: &Ctx, method: &Method, sub: &str) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let clauses = filter_clauses(ctx.query("$filter").unwrap_or(""))?;
    let (mut since, mut until): (Option<Timestamp>, Option<Timestamp>) = (None, None);
    let (mut resource, mut group): (Option<String>, Option<String>) = (None, None);
    for (field, op, value) in &clauses {
        let time = || {
            crate::times::parse_utc(value).ok_or_else(|| {
                ArmError::invalid_parameter(
                    "$filter",
                    format!("'{value}' is not an RFC 3339 time."),
                )
            })
        };
        match (field.as_str(), op.as_str()) {
            ("eventtimestamp", "ge") => since = Some(time()?),
            ("eventtimestamp", "le") => until = Some(time()?),
            ("resourceuri" | "resourceid", "eq") => resource = Some(value.to_ascii_lowercase()),
            ("resourcegroupname", "eq") => group = Some(value.to_ascii_lowercase()),
            ("resourceprovider" | "correlationid" | "caller" | "status" | "levels", _) => {}
            _ => {
                return Err(ArmError::invalid_parameter(
                    "$filter",
                    format!("'{field} {op}' is not supported: filter on eventTimestamp ge|le, resourceUri eq or resourceGroupName eq."),
                ))
            }
        }
    }
    let mut events = Vec::new();
    for setting in st
        .list::<Value>(&keys::in_subscription(keys::AUTOSCALE, sub))
        .await?
    {
        let v = &setting.value;
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let target = v["properties"]["targetResourceUri"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let rg = id.split('/').nth(4).unwrap_or_default().to_string();
        let named = |r: &String| *r == id.to_ascii_lowercase() || *r == target.to_ascii_lowercase();
        if resource.as_ref().is_some_and(|r| !named(r))
            || group
                .as_ref()
                .is_some_and(|g| *g != rg.to_ascii_lowercase())
        {
            continue;
        }
        let hkey = keys::autoscale_history_key(&setting.key);
        let Some(h) = st.get::<History>(&hkey).await? else {
            continue;
        };
        for (i, e) in h.value.entries.iter().enumerate() {
            let Ok(t) = e.time.parse::<Timestamp>() else {
                continue;
            };
            if since.is_some_and(|s| t < s) || until.is_some_and(|u| t > u) {
                continue;
            }
            let (action, text, level) = match e.outcome.as_str() {
                "ScaleOut" => ("Scaleup", "Autoscale scale up completed", "Informational"),
                "ScaleIn" => (
                    "Scaledown",
                    "Autoscale scale down completed",
                    "Informational",
                ),
                _ if matches!(e.blocked, Some(Blocked::Flapping)) => {
                    ("Flapping", "Autoscale flapping occurred", "Warning")
                }
                _ => (
                    "ScaleBlocked",
                    "Autoscale could not scale (Shoal)",
                    "Warning",
                ),
            };
            let operation = format!("Microsoft.Insights/AutoscaleSettings/{action}/Action");
            let event_id = format!("{}-{i}", setting.key.replace('/', "-"));
            let mut props = json!({
                "Description": e.reason,
                "ResourceName": target,
                "OldInstancesCount": e.old_capacity.to_string(),
                "ActiveAutoscaleProfile": e.profile,
            });
            if let Some(n) = e.new_capacity {
                props["NewInstancesCount"] = json!(n.to_string());
                props["LastScaleActionTime"] = json!(e.time);
            }
            events.push((
                t,
                json!({
                    "authorization": {"action": operation, "scope": id},
                    "caller": "Microsoft.Insights/autoscaleSettings",
                    "channels": "Admin, Operation",
                    "correlationId": event_id,
                    "description": e.reason,
                    "eventDataId": event_id,
                    "eventName": {"value": "Autoscale", "localizedValue": "Autoscale"},
                    "category": {"value": "Autoscale", "localizedValue": "Autoscale"},
                    "id": format!("{id}/events/{event_id}/ticks/{}", t.as_millisecond()),
                    "level": level,
                    "operationId": event_id,
                    "operationName": {"value": operation, "localizedValue": text},
                    "resourceGroupName": rg,
                    "resourceProviderName": {"value": "Microsoft.Insights", "localizedValue": "Microsoft.Insights"},
                    "resourceType": {"value": "Microsoft.Insights/AutoscaleSettings", "localizedValue": "Microsoft.Insights/AutoscaleSettings"},
                    "resourceId": id,
                    "status": {"value": "Succeeded", "localizedValue": "Succeeded"},
                    "subStatus": {"value": "", "localizedValue": ""},
                    "eventTimestamp": e.time,
                    "submissionTimestamp": e.time,
                    "subscriptionId": sub,
                    "properties": props,
                }),
            ));
        }
    }
    events.extend(
        crate::rolling_upgrades::activity_events(
            st,
            sub,
            (since, until),
            resource.as_deref(),
            group.as_deref(),
        )
        .await?,
    );
    events.extend(
        crate::hosts::activity_events(
            st,
            sub,
            (since, until),
            resource.as_deref(),
            group.as_deref(),
        )
        .await?,
    );
    // Newest first, as Azure lists them.
    events.sort_by_key(|e| std::cmp::Reverse(e.0));
    let items = events.into_iter().map(|(_, e)| e).collect();
    let path =
        format!("/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values");
    Ok(response::page(ctx, &path, items, st.page_size))
}
