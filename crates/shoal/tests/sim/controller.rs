//! The controller converges after the server dies at any point of a scale-out: for every
//! N, the server is killed after its N-th store write during a scale-out from 2 to 5 and
//! started again on the same store. Each time the set must end with exactly 5 running
//! instances, ids 0..4 each running once, and the operation settled.

use std::collections::BTreeSet;

use http::Method;
use serde_json::json;

use crate::harness::{host, Sim};

/// Scales `web` from 2 to 5, with the server crashing after `crash_after` writes (None:
/// no crash). Answers how many writes the server made during the scale-out.
async fn scale_out_with_crash(crash_after: Option<i64>) -> u64 {
    let sim = Sim::start(&[host("h1", None, None)]).await;
    sim.group_and_image("rg").await;
    sim.put_set("rg", "web", 2, json!({})).await;
    sim.wait_running("rg", "web", 2).await;
    let before = sim.server_writes().await;
    if let Some(n) = crash_after {
        sim.crash_server_after(n).await;
    }
    let scale = json!({"sku": {"capacity": 5}});
    let path = Sim::set_path("rg", "web");
    let (status, _) = sim.call(Method::PATCH, &path, Some(scale.clone())).await;
    let accepted = status.is_success();
    let writes = match crash_after {
        None => {
            sim.wait_running("rg", "web", 5).await;
            sim.server_writes().await - before
        }
        Some(n) => {
            sim.wait_until(&format!("the server dies after {n} writes"), || async {
                sim.server_crashed().await
            })
            .await;
            sim.restart_server().await;
            if !accepted {
                // The server died before it stored the request: the client retries.
                sim.ok(Method::PATCH, &path, Some(scale)).await;
            }
            sim.wait_running("rg", "web", 5).await;
            0
        }
    };
    let records = sim.records("rg", "web").await;
    let ids: BTreeSet<u64> = records.iter().map(|r| r.instance_id).collect();
    assert_eq!(
        ids,
        (0..5).collect(),
        "crash after {crash_after:?} writes: ids {ids:?} (no duplicate, none missing)"
    );
    let running = sim.running_on_hosts();
    let distinct: BTreeSet<&String> = running.iter().map(|(_, k)| k).collect();
    assert_eq!(
        running.len(),
        5,
        "crash after {crash_after:?} writes: the host runs {running:?}"
    );
    assert_eq!(distinct.len(), 5, "no instance runs twice: {running:?}");
    sim.stop().await;
    writes
}

#[tokio::test(start_paused = true)]
async fn a_scale_out_converges_whatever_write_the_server_dies_after() {
    let total = scale_out_with_crash(None).await;
    assert!(total > 0, "a scale-out writes to the store");
    eprintln!("a scale-out from 2 to 5 makes {total} store writes; crashing after each");
    for n in 0..total {
        scale_out_with_crash(Some(n as i64)).await;
    }
}
