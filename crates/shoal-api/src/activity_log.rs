//! Autoscale in Azure's activity log: `GET /subscriptions/{sub}/providers/
//! Microsoft.Insights/eventtypes/management/values` reads the runner's history of each
//! setting in the subscription (`autoscale-history/…`) and answers its scale actions, and
//! blocked wishes as warnings, in the activity log's event shape, newest first, filtered
//! by the request's `$filter`. Rolling upgrades, instances placed again after their host
//! went Down, and every caller's writes ([`crate::activity_writes`]) are listed too.

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
    let scope = Scope {
        since,
        until,
        resource: resource.as_deref(),
        group: group.as_deref(),
    };
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
        // A setting's events are about the setting and about the set it scales.
        if !scope.covers(&id, &rg) && !scope.covers(&target, &rg) {
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
            if !scope.within(t) {
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
            let event = Event {
                subscription: sub,
                resource_group: &rg,
                resource_id: &id,
                resource: ("Microsoft.Insights", "Microsoft.Insights/AutoscaleSettings"),
                event_id: &event_id,
                time: &e.time,
                at: t,
                operation: (&operation, text),
                caller: "Microsoft.Insights/autoscaleSettings",
                channels: "Admin, Operation",
                event_name: ("Autoscale", "Autoscale"),
                category: ("Autoscale", "Autoscale"),
                level,
                status: "Succeeded",
                description: &e.reason,
                properties: props,
            };
            events.push((t, event.to_json()));
        }
    }
    // The other producers answer the same scope in the same shape.
    events.extend(crate::rolling_upgrades::activity_events(st, sub, scope).await?);
    events.extend(crate::hosts::activity_events(st, sub, scope).await?);
    events.extend(repair_events(st, sub, scope).await?);
    events.extend(crate::activity_writes::events(st, sub, scope).await?);
    // Newest first, as Azure lists them.
    events.sort_by_key(|e| std::cmp::Reverse(e.0));
    let items = events.into_iter().map(|(_, e)| e).collect();
    let path =
        format!("/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values");
    Ok(response::page(ctx, &path, items, st.page_size))
}

/// Automatic repairs (`automaticRepairsPolicy`) the controller made, from each set's
/// repair history: one event per repaired instance, about the set.
async fn repair_events(
    st: &ApiState,
    sub: &str,
    scope: crate::activity_log::Scope<'_>,
) -> Result<Vec<(Timestamp, Value)>, ArmError> {
    let prefix = keys::in_subscription(keys::VMSS, sub);
    let operation = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/repair/action";
    let mut events = Vec::new();
    for rec in st.list::<shoal_model::records::VmssRecord>(&prefix).await? {
        let set = &rec.value;
        let id = set.vmss.id();
        let rg = set.vmss.resource_group.clone();
        if !scope.covers(&id, &rg) {
            continue;
        }
        for e in shoal_control::repair::state_of(set).history {
            let Ok(t) = e.time.parse::<Timestamp>() else {
                continue;
            };
            if !scope.within(t) {
                continue;
            }
            let event_id = format!(
                "repair-{}-{}-{}",
                rec.key.replace('/', "-"),
                e.instance_id,
                t.as_millisecond()
            );
            let description = format!(
                "Automatic repair: instance {} was unhealthy past the grace period ({}).",
                e.instance_id, e.action
            );
            let event = Event {
                subscription: sub,
                resource_group: &rg,
                resource_id: &id,
                resource: ("Microsoft.Compute", shoal_model::vmss::VMSS_TYPE),
                event_id: &event_id,
                time: &e.time,
                at: t,
                operation: (operation, "Repair an unhealthy instance"),
                caller: "Microsoft.Compute/automaticRepairs",
                channels: "Operation",
                event_name: ("AutomaticRepair", "Automatic repair"),
                category: ("Administrative", "Administrative"),
                level: "Informational",
                status: "Succeeded",
                description: &description,
                properties: json!({"Description": description, "InstanceId": e.instance_id.to_string(), "RepairAction": e.action}),
            };
            events.push((t, event.to_json()));
        }
    }
    Ok(events)
}

/// What a query asks for: a time window, and one resource or one resource group.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub resource: Option<&'a str>,
    pub group: Option<&'a str>,
}

impl Scope<'_> {
    /// Whether an event at `t` is in the window.
    pub fn within(&self, t: Timestamp) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    /// Whether events about resource `id` in group `rg` are asked for (any case).
    pub fn covers(&self, id: &str, rg: &str) -> bool {
        self.resource.is_none_or(|r| id.eq_ignore_ascii_case(r))
            && self.group.is_none_or(|g| rg.eq_ignore_ascii_case(g))
    }
}

/// One event of the activity log in Azure's shape: what autoscale, rolling upgrades and
/// host failover each record about a resource.
pub struct Event<'a> {
    pub subscription: &'a str,
    pub resource_group: &'a str,
    pub resource_id: &'a str,
    /// `(provider, resource type)`, e.g. `("Microsoft.Compute", VMSS_TYPE)`.
    pub resource: (&'a str, &'a str),
    pub event_id: &'a str,
    /// When it happened: the text as recorded, and parsed.
    pub time: &'a str,
    pub at: Timestamp,
    /// `(action, localized text)`.
    pub operation: (&'a str, &'a str),
    pub caller: &'a str,
    pub channels: &'a str,
    /// `(value, localized)` pairs.
    pub event_name: (&'a str, &'a str),
    pub category: (&'a str, &'a str),
    pub level: &'a str,
    pub status: &'a str,
    pub description: &'a str,
    pub properties: Value,
}

impl Event<'_> {
    pub fn to_json(&self) -> Value {
        let pair = |(value, text): (&str, &str)| json!({"value": value, "localizedValue": text});
        let (id, event_id) = (self.resource_id, self.event_id);
        json!({
            "authorization": {"action": self.operation.0, "scope": id},
            "caller": self.caller,
            "channels": self.channels,
            "correlationId": event_id,
            "description": self.description,
            "eventDataId": event_id,
            "eventName": pair(self.event_name),
            "category": pair(self.category),
            "id": format!("{id}/events/{event_id}/ticks/{}", self.at.as_millisecond()),
            "level": self.level,
            "operationId": event_id,
            "operationName": pair(self.operation),
            "resourceGroupName": self.resource_group,
            "resourceProviderName": pair((self.resource.0, self.resource.0)),
            "resourceType": pair((self.resource.1, self.resource.1)),
            "resourceId": id,
            "status": pair((self.status, self.status)),
            "subStatus": pair(("", "")),
            "eventTimestamp": self.time,
            "submissionTimestamp": self.time,
            "subscriptionId": self.subscription,
            "properties": self.properties,
        })
    }
}
