//! `GET .../virtualMachines/{id}/shoal/logs`: an instance's console log, fetched from the
//! agent of its host (which may be another machine) and streamed through.

use axum::body::Body;
use futures::TryStreamExt;
use http::Method;
use shoal_model::ids::VmssRef;
use shoal_model::records::{host_key, HostRecord, InstanceRecord};
use shoal_model::ArmError;

use crate::groups::method_not_allowed;
use crate::instances::parse_vm_id;
use crate::response::{ApiResult, Ctx};
use crate::scalesets::require_set;
use crate::state::ApiState;

pub async fn proxy(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    vmss: &VmssRef,
    id: &str,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    require_set(st, vmss).await?;
    let n = parse_vm_id(vmss, id)?;
    let Some(rec) = st.get::<InstanceRecord>(&vmss.instance_key(n)).await? else {
        return Err(ArmError::not_found(
            shoal_model::vmss::VMSS_VM_TYPE,
            &format!("{}_{id}", vmss.name),
        ));
    };
    let Some(host) = st.get::<HostRecord>(&host_key(&rec.value.host)).await? else {
        return Err(ArmError::new(
            409,
            "HostUnavailable",
            format!(
                "Host '{}' of instance {id} is not registered.",
                rec.value.host
            ),
        ));
    };
    let follow = ctx.query("follow").is_some_and(|f| f == "true" || f == "1");
    let tail = ctx.query("tail").and_then(|t| t.parse::<u64>().ok());
    let mut url = format!(
        "{}/logs/{}?follow={follow}",
        host.value.agent_url.trim_end_matches('/'),
        rec.value.slug()
    );
    if let Some(t) = tail {
        url.push_str(&format!("&tail={t}"));
    }
    let resp = st.http.get(&url).send().await.map_err(|e| {
        ArmError::new(
            409,
            "HostUnavailable",
            format!(
                "The agent of host '{}' did not answer: {e}",
                host.value.name
            ),
        )
    })?;
    if !resp.status().is_success() {
        return Err(ArmError::new(
            404,
            "ResourceNotFound",
            format!(
                "Instance {id} has no log yet on host '{}'.",
                host.value.name
            ),
        ));
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    let mut out = axum::response::Response::new(Body::from_stream(stream));
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(out)
}
