//! The client over both transports against a small stand-in for the server's agent
//! protocol: a list, and a watch whose lines arrive split across chunks and then stay
//! open, as a real watch does.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use shoal_client::{ServerClient, ServerSource, ServiceTransport};
use shoal_store::watcher::Reflector;

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Rec {
    n: u32,
}

#[derive(Deserialize)]
struct Params {
    prefix: String,
    after: Option<u64>,
}

fn server() -> Router {
    Router::new()
        .route(
            "/shoal/v1/list",
            get(|Query(p): Query<Params>| async move {
                assert_eq!(p.prefix, "lb/");
                axum::Json(serde_json::json!({
                    "revision": 5,
                    "items": [{"key": "lb/a", "value": {"n": 1}}, {"key": "lb/b", "value": {"n": 2}}]
                }))
            }),
        )
        .route(
            "/shoal/v1/watch",
            get(|Query(p): Query<Params>| async move {
                assert_eq!((p.prefix.as_str(), p.after), ("lb/", Some(5)));
                let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                    Ok(Bytes::from_static(b"{\"type\":\"put\",\"key\":\"lb/c\",\"revision\":6,\"val")),
                    Ok(Bytes::from_static(
                        b"ue\":{\"n\":3}}\n{\"type\":\"bookmark\"}\n{\"type\":\"delete\",\"key\":\"lb/a\",\"revision\":7}\n",
                    )),
                ];
                // The watch stays open after its events, as a real one does.
                let stream = futures::StreamExt::chain(
                    futures::stream::iter(chunks),
                    futures::stream::pending(),
                );
                Body::from_stream(stream)
            }),
        )
        .route(
            "/shoal/v1/metrics",
            axum::routing::post(|body: Bytes| async move {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
                assert_eq!(v["samples"][0]["name"], "x");
                (axum::http::StatusCode::BAD_REQUEST, "refused\n")
            }),
        )
}

async fn follow(client: ServerClient) {
    let mut cache: Reflector<Rec> = Reflector::new(Arc::new(ServerSource::new(client)), "lb/");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        for c in cache.changed().await {
            seen.push((c.key.clone(), c.new.as_ref().map(|r| r.n)));
        }
    }
    assert_eq!(
        seen,
        [
            ("lb/a".to_string(), Some(1)),
            ("lb/b".to_string(), Some(2)),
            ("lb/c".to_string(), Some(3)),
            ("lb/a".to_string(), None),
        ]
    );
    assert!(cache.is_live());
    let snapshot = cache.snapshot();
    assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["lb/b", "lb/c"]);
    assert_eq!(snapshot["lb/c"].revision, 6);
}

#[tokio::test(start_paused = true)]
async fn in_process_the_watch_streams_on_a_paused_clock() {
    let client = ServerClient::new(Arc::new(ServiceTransport::new(server())));
    assert_eq!(client.target(), "in-process");
    // A stream that stays open sets no timer: the paused clock could otherwise jump to
    // a timeout while the watch waits.
    tokio::time::timeout(Duration::from_secs(3600), follow(client.clone()))
        .await
        .expect("followed");
    // An answer that is not a success is handed back as it came.
    let answer = client
        .push_metrics(&[serde_json::json!({"name": "x"})])
        .await
        .expect("answer");
    assert_eq!(
        (answer.status.as_u16(), &answer.body[..]),
        (400, &b"refused\n"[..])
    );
}

#[tokio::test]
async fn over_the_network_the_watch_streams_too() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, server()).await });
    let client = ServerClient::http(&format!("http://{addr}/"));
    tokio::time::timeout(Duration::from_secs(30), follow(client))
        .await
        .expect("followed");
    server.abort();
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_naming_it() {
    // Nothing listens on port 9 of the loopback address.
    let client = ServerClient::http("http://127.0.0.1:9");
    let err = client.list("lb/").await.expect_err("no server");
    assert_eq!(
        err.to_string(),
        "Cannot reach the Shoal server at http://127.0.0.1:9"
    );
    assert!(std::error::Error::source(&err).is_some());
}

fn instance(id: u64) -> shoal_model::records::InstanceRecord {
    serde_json::from_value(serde_json::json!({
        "vmss": {"subscription": "s", "resource_group": "demo", "name": "web"},
        "instance_id": id, "vm_id": "v", "host": "local", "zone": null, "fault_domain": 0,
        "launch": {"generation": 1, "image_id": "i", "image_version": "1", "kind": "process", "blob_id": "b",
            "command": "c", "port": 80, "sku": "x", "vcpus": 1, "memory_mb": 128,
            "custom_data": null, "computer_name_prefix": "web"},
        "power": "running", "restart_gen": 0, "reimage_gen": 0, "deleting": false,
        "protection": {}, "time_created": "t"
    }))
    .expect("record")
}

#[tokio::test]
async fn status_reports_go_in_one_request_and_come_back_report_by_report() {
    let server = Router::new().route(
        "/shoal/v1/statuses",
        axum::routing::put(|body: Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let items = v["statuses"].as_array().expect("statuses");
            assert_eq!(items.len(), 3);
            assert_eq!(items[1]["instance"], "s/demo/web/2");
            assert_eq!(items[0]["status"]["host"], "local");
            axum::Json(serde_json::json!({"results": [
                {"ok": true},
                {"ok": false, "status": 404, "error": {"code": "NotFound", "message": "gone"}},
                {"ok": false, "status": 403, "error": {"code": "AuthorizationFailed", "message": "not yours"}},
            ]}))
        }),
    );
    let client = ServerClient::new(Arc::new(ServiceTransport::new(server)));
    let status: shoal_model::records::InstanceStatus = serde_json::from_value(serde_json::json!({
        "state": "running", "host": "local", "launch_generation": 1, "restart_gen": 0,
        "reimage_gen": 0, "restarts": 0, "since": "t"
    }))
    .expect("status");
    let (a, b, c) = (instance(1), instance(2), instance(3));
    let outcomes = client
        .report_many(&[(&a, &status), (&b, &status), (&c, &status)])
        .await
        .expect("answer");
    // Taken; not this host's instance (the agent stops reporting it); refused.
    assert_eq!(
        outcomes,
        Some(vec![Ok(true), Ok(false), Err("not yours".to_string())])
    );
    // A server from before the batch route: the agent reports one by one instead.
    let older = ServerClient::new(Arc::new(ServiceTransport::new(Router::new())));
    let outcomes = older.report_many(&[(&a, &status)]).await.expect("answer");
    assert_eq!(outcomes, None);
}
