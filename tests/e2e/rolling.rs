//! Issue 12: a rolling upgrade behind the balancer, under steady client traffic, with the
//! real binary and the real workload.

use std::time::Duration;

use serde_json::{json, Value};

use crate::balancing::{answering, create_balancer, create_set, steady_load};
use crate::harness::*;

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn set_url(s: &Server, rg: &str) -> String {
    format!(
        "{}/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/web",
        s.endpoint()
    )
}

fn latest(s: &Server, rg: &str) -> Value {
    http_get(&format!(
        "{}/rollingUpgrades/latest?api-version=2024-07-01",
        set_url(s, rg)
    ))
    .and_then(|(_, body)| serde_json::from_str(&body).ok())
    .unwrap_or(Value::Null)
}

#[test]
fn a_new_image_version_rolls_out_in_batches_with_no_failed_request() {
    let _g = serial();
    let s = Server::start_with(&["--drain-timeout-seconds", "10"]);
    let rg = "rolling";
    s.create_group_and_image(rg);
    s.cli_ok(&[
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "apps",
        "--name",
        "web",
        "--version",
        "1.0.1",
        "--dir",
        "examples/web",
        "--command",
        "./shoal-web",
        "--port",
        "8080",
    ]);
    let frontend = create_balancer(&s, rg);
    create_set(
        &s,
        rg,
        10,
        json!({"properties": {
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {"maxBatchInstancePercent": 20}},
            "shoal": {"rollingUpgradeHealthTimeout": "PT30S"}
        }}),
    );
    wait_until(
        Duration::from_secs(60),
        "all ten answer through the balancer",
        || answering(&frontend, 100).len() == 10,
    );

    let image = format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.1");
    let (ok, failed) = steady_load(&frontend, || {
        let body = json!({"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}});
        let (status, text) = http_request(
            "PATCH",
            &format!("{}?api-version=2024-07-01", set_url(&s, rg)),
            Some(&body.to_string()),
        )
        .expect("API answers");
        assert!(status == 200 || status == 202, "PATCH: {status} {text}");
        wait_until(
            Duration::from_secs(150),
            "the rolling upgrade completes",
            || latest(&s, rg)["properties"]["runningStatus"]["code"] == "Completed",
        );
    });
    let done = latest(&s, rg);
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the rolling upgrade",
        ok + failed
    );
    let progress = &done["properties"]["progress"];
    assert_eq!(progress["successfulInstanceCount"], 10, "{done}");
    assert_eq!(progress["failedInstanceCount"], 0, "{done}");
    let listed = s.cli_ok(&[
        "vmss",
        "list-instances",
        "-g",
        rg,
        "-n",
        "web",
        "--output",
        "json",
    ]);
    let versions: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            i["properties"]["shoal"]["imageVersion"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(versions, vec!["1.0.1"; 10], "{listed}");
    assert_eq!(answering(&frontend, 100).len(), 10);
    // The CLI shows the same record.
    let cli = s.cli_ok(&[
        "vmss",
        "rolling-upgrade",
        "get-latest",
        "-g",
        rg,
        "-n",
        "web",
    ]);
    assert_eq!(
        cli["properties"]["runningStatus"]["code"], "Completed",
        "{cli}"
    );
}
