//! The agent's own HTTP endpoint: instance metadata (what an instance reaches through
//! `$SHOAL_METADATA_ENDPOINT`, shaped like Azure's instance metadata service) and console
//! logs (which the server proxies for `shoal vmss logs`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use shoal_model::records::InstanceRecord;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::driver::{Driver, InstanceKey};
use crate::events::EventBoard;

/// Instances this agent runs, by slug, for the metadata endpoint.
pub type Registry = Arc<RwLock<HashMap<String, InstanceRecord>>>;

#[derive(Clone)]
pub struct HttpState {
    pub registry: Registry,
    pub driver: Arc<dyn Driver>,
    pub events: EventBoard,
}

pub fn router(state: HttpState, identity: crate::identity::Identity) -> Router {
    Router::new()
        .route(
            &format!("/i/{{slug}}{}", crate::identity::TOKEN_PATH),
            get(crate::identity::token).with_state(identity),
        )
        .route("/logs/{slug}", get(logs))
        .route("/i/{slug}/metadata/instance", get(metadata))
        .route("/i/{slug}/metadata/instance/compute", get(metadata_compute))
        .route(
            "/i/{slug}/metadata/scheduledevents",
            get(scheduled_events).post(approve_events),
        )
        .with_state(state)
}

fn compute(rec: &InstanceRecord) -> serde_json::Value {
    json!({
        "name": rec.computer_name(),
        "vmId": rec.vm_id,
        "vmScaleSetName": rec.vmss.name,
        "resourceGroupName": rec.vmss.resource_group,
        "subscriptionId": rec.vmss.subscription,
        "resourceId": format!("{}/virtualMachines/{}", rec.vmss.id(), rec.instance_id),
        "location": "local",
        "zone": rec.zone.clone().unwrap_or_default(),
        "platformFaultDomain": rec.fault_domain.to_string(),
        "platformUpdateDomain": rec.fault_domain.to_string(),
        "vmSize": rec.launch.sku,
        "osType": "Linux",
        "provider": "Shoal",
        "instanceId": rec.instance_id.to_string(),
        "imageVersion": rec.launch.image_version,
    })
}

async fn metadata(State(st): State<HttpState>, Path(slug): Path<String>) -> Response {
    let reg = st.registry.read().unwrap_or_else(|p| p.into_inner());
    match reg.get(&slug) {
        Some(rec) => {
            Json(json!({"compute": compute(rec), "network": {"interface": []}})).into_response()
        }
        None => (StatusCode::NOT_FOUND, "unknown instance\n").into_response(),
    }
}

async fn metadata_compute(State(st): State<HttpState>, Path(slug): Path<String>) -> Response {
    let reg = st.registry.read().unwrap_or_else(|p| p.into_inner());
    match reg.get(&slug) {
        Some(rec) => Json(compute(rec)).into_response(),
        None => (StatusCode::NOT_FOUND, "unknown instance\n").into_response(),
    }
}

async fn scheduled_events(State(st): State<HttpState>, Path(slug): Path<String>) -> Response {
    Json(st.events.document(&slug)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequests {
    #[serde(default)]
    start_requests: Vec<StartRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartRequest {
    event_id: String,
}

/// `POST .../scheduledevents {"StartRequests": [{"EventId": "..."}]}`: the instance is
/// ready; the agent may go ahead before `NotBefore`.
async fn approve_events(
    State(st): State<HttpState>,
    Path(slug): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<StartRequests>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected {\"StartRequests\": [{\"EventId\": \"...\"}]}\n",
        )
            .into_response();
    };
    let ids: Vec<String> = req.start_requests.into_iter().map(|r| r.event_id).collect();
    st.events.approve(&slug, &ids);
    StatusCode::OK.into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    follow: Option<bool>,
    tail: Option<usize>,
}

/// The instance's console log; `tail=N` starts N lines from the end, `follow=true`
/// keeps streaming what is appended.
async fn logs(
    State(st): State<HttpState>,
    Path(slug): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    if slug.contains('/') || slug.contains("..") {
        return (StatusCode::BAD_REQUEST, "bad instance\n").into_response();
    }
    let path = st.driver.log_path(&InstanceKey(slug));
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return (StatusCode::NOT_FOUND, "no log yet\n").into_response();
    };
    let start = match q.tail {
        Some(n) => tail_offset(&mut file, n).await.unwrap_or(0),
        None => 0,
    };
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the log\n").into_response();
    }
    let follow = q.follow.unwrap_or(false);
    let stream = futures::stream::unfold(file, move |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) if follow => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    buf.truncate(n);
                    return Some((Ok::<_, std::io::Error>(buf), file));
                }
            }
        }
    });
    Response::new(Body::from_stream(stream))
}

/// Offset of the start of the last `n` lines.
async fn tail_offset(file: &mut tokio::fs::File, n: usize) -> std::io::Result<u64> {
    let len = file.metadata().await?.len();
    let window = len.min(1 << 20);
    file.seek(std::io::SeekFrom::Start(len - window)).await?;
    let mut buf = Vec::with_capacity(window as usize);
    file.read_to_end(&mut buf).await?;
    let mut seen = 0;
    let body = if buf.last() == Some(&b'\n') {
        &buf[..buf.len() - 1]
    } else {
        &buf[..]
    };
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return Ok(len - window + i as u64 + 1);
            }
        }
    }
    Ok(len - window)
}
