//! Autoscale settings over HTTP: `Microsoft.Insights/autoscaleSettings` CRUD and lists
//! (stored under `autoscale/`, served by [`crate::arm_crud`] through
//! [`AutoscaleSettings`]), and `…/autoscalesettings/{name}/history`, what the runner did
//! and why (Shoal's).
//!
//! A body is parsed and compiled by `shoal_model::autoscale`, and the scale sets it names
//! are checked to exist before anything is stored, so a bad setting is a 400 naming its
//! field and changes nothing. The runner (`shoal_control::autoscale_runner`) reads what is
//! stored here. Metrics in and out are in [`crate::metrics`]; autoscale's entries in the
//! activity log in [`crate::activity_log`].

use shoal_model::keys;
use std::collections::BTreeMap;

use http::Method;
use serde_json::{json, Value};
use shoal_control::autoscale_runner::{history_key, setting_key, History};
use shoal_control::kv;
use shoal_model::autoscale::{self as model, AutoscaleSetting, AUTOSCALE_TYPE};
use shoal_model::ids::VmssRef;
use shoal_model::records::VmssRecord;
use shoal_model::ArmError;
use shoal_store::{Expect, TxnOp};

use crate::arm_crud::{Addr, ArmKind};
use crate::response::{json, ApiResult};
use crate::routes::method_not_allowed;
use crate::state::ApiState;

/// The scale set a setting names, which must exist and not be being deleted.
pub(crate) async fn require_set(st: &ApiState, r: &VmssRef, target: &str) -> Result<(), ArmError> {
    match st.get::<VmssRecord>(&r.key()).await? {
        Some(s) if !s.value.deleting => Ok(()),
        _ => Err(ArmError::invalid_parameter(
            target,
            format!(
                "Scale set '{}' in resource group '{}' does not exist: create it first, or fix the id.",
                r.name, r.resource_group
            ),
        )),
    }
}

/// `Microsoft.Insights/autoscaleSettings` for [`arm_crud`], stored under `autoscale/`;
/// PATCH merges over the stored setting.
pub struct AutoscaleSettings;

impl ArmKind for AutoscaleSettings {
    type Model = AutoscaleSetting;
    const TYPE: &'static str = AUTOSCALE_TYPE;
    const ID_PATH: &'static str = "Microsoft.Insights/autoscalesettings";
    const KEY_PREFIX: &'static str = "autoscale";
    const NOUN: &'static str = "autoscale setting";
    const MAX_NAME_LEN: usize = 260;
    const PATCH: bool = true;

    async fn admit(
        st: &ApiState,
        s: &mut AutoscaleSetting,
        _: &str,
        at: Addr<'_>,
        _: Option<&AutoscaleSetting>,
    ) -> Result<(), ArmError> {
        let (compiled, others) = model::compile(s)?;
        require_set(st, &compiled.target, "properties.targetResourceUri").await?;
        // One setting per scale set: two would fight over its capacity.
        let key = setting_key(at.sub, at.rg, at.name);
        let target_key = compiled.target.key();
        for other in st.list::<Value>(keys::AUTOSCALE).await? {
            let same = other.value["properties"]["targetResourceUri"]
                .as_str()
                .and_then(model::parse_vmss_id)
                .is_some_and(|t| t.key() == target_key);
            if same && other.key != key {
                return Err(ArmError::conflict(format!(
                    "Scale set '{}' already has an autoscale setting ('{}'): change that one, or delete it first.",
                    compiled.target.name,
                    other.value["name"].as_str().unwrap_or_default()
                ))
                .with_target("properties.targetResourceUri"));
            }
        }
        for o in others {
            require_set(
                st,
                &o,
                "properties.profiles.rules.metricTrigger.metricResourceUri",
            )
            .await?;
        }
        s.location.get_or_insert_with(|| "local".to_string());
        s.tags.get_or_insert_with(BTreeMap::new);
        s.properties.name.get_or_insert_with(|| at.name.to_string());
        s.properties.enabled.get_or_insert(true);
        s.properties
            .target_resource_location
            .get_or_insert_with(|| "local".to_string());
        s.properties.notifications.get_or_insert_with(Vec::new);
        Ok(())
    }

    /// The runner's history of the setting goes with it.
    async fn also_delete(st: &ApiState, at: Addr<'_>) -> Result<Vec<TxnOp>, ArmError> {
        let hkey = history_key(at.sub, at.rg, at.name);
        Ok(match st.get::<Value>(&hkey).await? {
            Some(h) => vec![kv::delete_op(hkey, Expect::ModRevision(h.revision))],
            None => Vec::new(),
        })
    }

    /// As stored: settings show no etag.
    async fn view(_: &ApiState, s: &AutoscaleSetting, _: u64) -> Result<Value, ArmError> {
        Ok(serde_json::to_value(s).unwrap_or(Value::Null))
    }
}

pub async fn history(st: &ApiState, method: &Method, sub: &str, rg: &str, name: &str) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    st.require_group(sub, rg).await?;
    if st
        .get::<Value>(&setting_key(sub, rg, name))
        .await?
        .is_none()
    {
        return Err(ArmError::not_found(AUTOSCALE_TYPE, name));
    }
    let h = st
        .get::<History>(&history_key(sub, rg, name))
        .await?
        .map(|h| h.value)
        .unwrap_or_default();
    Ok(json(
        200,
        &json!({"value": h.entries, "lastAction": h.last_action}),
    ))
}

#[cfg(test)]
pub(crate) mod tests {

    use jiff::Timestamp;

    use tower::ServiceExt;

    use proptest::prelude::Strategy as _;

    use super::*;
    use crate::server::request;
    use crate::state::ApiState;

    pub(crate) const RG: &str = "/subscriptions/s/resourceGroups/demo";
    pub(crate) const SET: &str = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";
    pub(crate) const AS: &str =
        "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Insights/autoscalesettings/auto";
    pub(crate) const T0: i64 = 1_800_000_000;

    pub(crate) async fn state() -> ApiState {
        let st =
            crate::arm_crud::testing::empty_state(Timestamp::from_second(T0).expect("timestamp"));
        let (status, _) = call(&st, Method::PUT, RG, json!({"location": "local"})).await;
        assert_eq!(status, 201);
        let rec = json!({
            "vmss": {"subscription": "s", "resource_group": "demo", "name": "web"},
            "model": {"location": "local", "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 2}},
            "launch": {"generation": 1, "image_id": "i", "image_version": "1", "kind": "process", "blob_id": "b",
                "command": "c", "port": 80, "sku": "Shoal_1vCPU_512MB", "vcpus": 1, "memory_mb": 512,
                "custom_data": null, "computer_name_prefix": "web"},
            "next_instance_id": 0
        });
        st.store
            .txn(vec![kv::put_op(
                VmssRef::new("s", "demo", "web").key(),
                &rec,
                Expect::Absent,
            )])
            .await
            .expect("store");
        st
    }

    pub(crate) use crate::arm_crud::testing::call;

    fn setting(target: &str) -> Value {
        json!({"location": "local", "properties": {
            "enabled": true, "targetResourceUri": target,
            "profiles": [{"name": "default", "capacity": {"minimum": "1", "maximum": "5", "default": "2"},
                "rules": [{
                    "metricTrigger": {"metricName": "Percentage CPU", "metricResourceUri": target, "timeGrain": "PT1M",
                        "statistic": "Average", "timeWindow": "PT5M", "timeAggregation": "Average",
                        "operator": "GreaterThan", "threshold": 70},
                    "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": "1", "cooldown": "PT5M"}}]}]}})
    }

    #[tokio::test]
    async fn settings_round_trip_and_bad_ones_change_nothing() {
        let st = state().await;
        let missing = SET.replace("/web", "/nope");
        let (status, body) = call(&st, Method::PUT, AS, setting(&missing)).await;
        assert_eq!(
            (status, body["error"]["target"].as_str()),
            (400, Some("properties.targetResourceUri")),
            "{body}"
        );
        assert_eq!(call(&st, Method::GET, AS, Value::Null).await.0, 404);

        let (status, body) = call(&st, Method::PUT, AS, setting(SET)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["type"], AUTOSCALE_TYPE);
        assert_eq!(body["id"], AS);
        assert_eq!(
            body["properties"]["profiles"][0]["capacity"]["maximum"],
            "5"
        );
        let (status, got) = call(&st, Method::GET, &AS.to_ascii_lowercase(), Value::Null).await;
        assert_eq!((status, &got), (200, &body));

        // A PATCH that breaks a constraint is refused and leaves the setting as it was.
        let bad = json!({"properties": {"profiles": [{"name": "default", "capacity": {"minimum": "4", "maximum": "3", "default": "3"}, "rules": []}]}});
        let (status, err) = call(&st, Method::PATCH, AS, bad).await;
        assert_eq!(
            (status, err["error"]["target"].as_str()),
            (400, Some("properties.profiles[0].capacity")),
            "{err}"
        );
        assert_eq!(call(&st, Method::GET, AS, Value::Null).await.1, body);
        let (status, patched) = call(
            &st,
            Method::PATCH,
            AS,
            json!({"properties": {"enabled": false}}),
        )
        .await;
        assert_eq!(
            (status, patched["properties"]["enabled"].as_bool()),
            (200, Some(false))
        );

        for list in [
            format!("{RG}/providers/Microsoft.Insights/autoscalesettings"),
            "/subscriptions/s/providers/Microsoft.Insights/autoscalesettings".to_string(),
        ] {
            let (status, l) = call(&st, Method::GET, &list, Value::Null).await;
            assert_eq!(
                (status, l["value"][0]["name"].as_str()),
                (200, Some("auto"))
            );
        }
        // A second setting for the same set is refused.
        let (status, err) = call(&st, Method::PUT, &format!("{AS}2"), setting(SET)).await;
        assert_eq!(
            (status, err["error"]["target"].as_str()),
            (409, Some("properties.targetResourceUri")),
            "{err}"
        );
        // The activity log shows autoscale's actions, filtered by the set's id.
        let mut hist = History::default();
        hist.record(
            &shoal_control::autoscale::Decision {
                profile: Some("default".into()),
                current: 2,
                new_capacity: Some(3),
                blocked: None,
                reason: "Scale out 2 → 3: Percentage CPU 90 > 70.".into(),
                metrics: vec![],
            },
            Timestamp::from_second(T0).expect("t"),
        );
        st.store
            .txn(vec![kv::put_op(
                history_key("s", "demo", "auto"),
                &hist,
                Expect::Absent,
            )])
            .await
            .expect("store");
        let log = |filter: &str| {
            format!(
                "/subscriptions/s/providers/Microsoft.Insights/eventtypes/management/values?$filter={}",
                filter.replace(' ', "%20").replace('\'', "%27")
            )
        };
        let (status, l) = call(
            &st,
            Method::GET,
            &log(&format!(
                "eventTimestamp ge '2020-01-01T00:00:00Z' and resourceUri eq '{SET}'"
            )),
            Value::Null,
        )
        .await;
        assert_eq!(status, 200, "{l}");
        let e = &l["value"][0];
        assert_eq!(
            e["operationName"]["value"],
            "Microsoft.Insights/AutoscaleSettings/Scaleup/Action"
        );
        assert_eq!(
            (
                e["properties"]["OldInstancesCount"].as_str(),
                e["properties"]["NewInstancesCount"].as_str()
            ),
            (Some("2"), Some("3"))
        );
        let (_, l) = call(
            &st,
            Method::GET,
            &log("eventTimestamp ge '2099-01-01T00:00:00Z'"),
            Value::Null,
        )
        .await;
        assert_eq!(l["value"].as_array().map(Vec::len), Some(0));
        let (status, err) = call(&st, Method::GET, &log("banana split"), Value::Null).await;
        assert_eq!(
            (status, err["error"]["target"].as_str()),
            (400, Some("$filter"))
        );
        let (status, h) = call(&st, Method::GET, &format!("{AS}/history"), Value::Null).await;
        assert_eq!(
            (status, h["value"].as_array().map(Vec::len)),
            (200, Some(1))
        );
        assert_eq!(call(&st, Method::DELETE, AS, Value::Null).await.0, 200);
        assert_eq!(call(&st, Method::DELETE, AS, Value::Null).await.0, 204);
        assert_eq!(
            call(&st, Method::GET, &format!("{AS}/history"), Value::Null)
                .await
                .0,
            404
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever a client sends to the autoscale and metrics endpoints, the answer is
        /// never a 5xx.
        #[test]
        fn untrusted_bodies_never_get_a_5xx(
            target in proptest::sample::select(vec![
                "AS", "/shoal/v1/metrics", "CUSTOM",
            ]),
            body in proptest::prop_oneof![
                "\\PC{0,80}".prop_map(|s| s),
                proptest::collection::vec(("[a-zA-Z]{1,12}", "\\PC{0,12}"), 0..4).prop_map(|kv| {
                    let m: serde_json::Map<String, Value> = kv.into_iter().map(|(k, v)| (k, json!(v))).collect();
                    json!({"properties": m, "samples": [m.clone()], "data": {"baseData": m}}).to_string()
                }),
                proptest::num::f64::ANY.prop_map(|f| json!({"samples": [{"resourceId": SET, "name": "Percentage CPU", "value": f, "time": "x"}],
                    "data": {"baseData": {"metric": "m", "namespace": "n", "series": [{"sum": f, "count": 0}]}}}).to_string()),
            ],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let status = rt.block_on(async {
                let st = state().await;
                let (method, uri) = match target {
                    "AS" => (Method::PUT, AS.to_string()),
                    "CUSTOM" => (Method::POST, format!("{SET}/metrics")),
                    t => (Method::POST, t.to_string()),
                };
                let resp = crate::router(st).oneshot(request(method, &uri, body.clone())).await.expect("response");
                resp.status().as_u16()
            });
            proptest::prop_assert!(status < 500, "{status} for {target} {body}");
        }
    }
}
