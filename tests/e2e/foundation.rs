//! Issue 2: scale sets that really run.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

fn create_set(s: &Server, rg: &str, count: u32) {
    s.create_group_and_image(rg);
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "web",
        "--image",
        "apps/web:1.0.0",
        "--instance-count",
        &count.to_string(),
        "--vm-sku",
        "Shoal_1vCPU_512MB",
    ]);
}

/// Every listed instance answers `instance N` at its own address.
fn assert_answering(s: &Server, rg: &str, ids: &[u64]) {
    let insts = s.instances(rg, "web");
    let mut listed: Vec<u64> = insts.iter().map(|i| i.id).collect();
    listed.sort_unstable();
    assert_eq!(listed, ids, "instances listed");
    for i in &insts {
        assert_eq!(i.power, "running", "instance {} power state", i.id);
        let addr = i
            .address
            .clone()
            .unwrap_or_else(|| panic!("instance {} has no address: {i:?}", i.id));
        let (status, body) = http_get(&format!("http://{addr}/"))
            .unwrap_or_else(|| panic!("instance {} at {addr} does not answer", i.id));
        assert_eq!(
            (status, body.trim()),
            (200, format!("instance {}", i.id).as_str())
        );
    }
}

#[test]
fn quickstart_runs_as_a_script() {
    let _g = serial();
    let s = Server::start();
    let bin_dir = shoal_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("tests/e2e/quickstart.sh"))
        .env("PATH", path)
        .env("SHOAL_ENDPOINT", s.endpoint())
        .env("SHOAL_DATA_DIR", s.data_dir())
        .output()
        .expect("run quickstart.sh");
    assert!(
        out.status.success(),
        "quickstart failed\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&s.log(), 40)
    );
    // `vmss delete` leaves no instance process behind.
    wait_until(WAIT, "no instance process is left", || {
        processes_under(&s.data_dir()).is_empty()
    });
}

#[test]
fn scale_out_and_in_keeps_exactly_the_right_instances_and_honours_protection() {
    let _g = serial();
    let s = Server::start();
    create_set(&s, "scale", 3);
    assert_answering(&s, "scale", &[0, 1, 2]);

    s.cli_ok(&[
        "vmss",
        "scale",
        "-g",
        "scale",
        "-n",
        "web",
        "--new-capacity",
        "10",
    ]);
    assert_answering(&s, "scale", &(0..10).collect::<Vec<_>>());
    assert_eq!(
        running_instance_ids(&s.data_dir()),
        (0..10).collect::<Vec<_>>()
    );

    // Protect instance 7: Default scale-in would take the highest ids (9, 8, 7, …).
    s.cli_ok(&[
        "vmss",
        "update",
        "-g",
        "scale",
        "-n",
        "web",
        "--instance-id",
        "7",
        "--protect-from-scale-in",
        "true",
    ]);
    let before = s.instances("scale", "web");
    s.cli_ok(&[
        "vmss",
        "scale",
        "-g",
        "scale",
        "-n",
        "web",
        "--new-capacity",
        "2",
    ]);
    assert_answering(&s, "scale", &[0, 7]);
    assert!(
        s.instances("scale", "web")
            .iter()
            .find(|i| i.id == 7)
            .expect("7")
            .protected
    );
    // The removed ones are gone: no process, and their addresses no longer answer.
    wait_until(WAIT, "only instances 0 and 7 have processes", || {
        running_instance_ids(&s.data_dir()) == vec![0, 7]
    });
    for i in before.iter().filter(|i| i.id != 0 && i.id != 7) {
        let addr = i.address.clone().expect("address");
        assert!(
            http_get(&format!("http://{addr}/")).is_none(),
            "removed instance {} still answers at {addr}",
            i.id
        );
    }
    // New ids are never reused.
    s.cli_ok(&[
        "vmss",
        "scale",
        "-g",
        "scale",
        "-n",
        "web",
        "--new-capacity",
        "3",
    ]);
    assert_answering(&s, "scale", &[0, 7, 10]);
}

#[test]
fn kill_9_mid_scale_then_restart_converges_without_duplicates_or_orphans() {
    let _g = serial();
    let mut s = Server::start();
    create_set(&s, "crash", 2);
    s.cli_ok(&[
        "vmss",
        "scale",
        "-g",
        "crash",
        "-n",
        "web",
        "--new-capacity",
        "12",
        "--no-wait",
    ]);
    // Let the scale-out get going, then crash the whole control plane.
    wait_until(WAIT, "some new instances run", || {
        running_instance_ids(&s.data_dir()).len() >= 4
    });
    s.kill9();
    let survivors = running_instance_ids(&s.data_dir());
    assert!(
        !survivors.is_empty(),
        "instances survive a crash of shoal serve"
    );
    s.restart();
    wait_until(WAIT, "all 12 instances answer", || {
        let insts = s.instances("crash", "web");
        insts.len() == 12
            && insts.iter().all(|i| {
                i.address.as_ref().is_some_and(|a| {
                    http_get(&format!("http://{a}/")).is_some_and(|(st, b)| {
                        st == 200 && b.trim() == format!("instance {}", i.id)
                    })
                })
            })
    });
    // Exactly one process per instance: nothing duplicated, survivors adopted.
    let ids = running_instance_ids(&s.data_dir());
    assert_eq!(
        ids,
        (0..12).collect::<Vec<_>>(),
        "one workload process per instance"
    );
    // A clean stop leaves no orphan process.
    let status = s.stop();
    assert!(status.success(), "clean stop exits 0");
    let left = wait_for_no_processes(&s.data_dir(), Duration::from_secs(20));
    assert!(
        left.is_empty(),
        "processes left after a clean stop: {left:?}\n{}",
        tail(&s.log(), 60)
    );
}

#[test]
fn an_instance_whose_process_exits_runs_again_on_its_own() {
    let _g = serial();
    let s = Server::start();
    create_set(&s, "crashy", 1);
    let first = s.instances("crashy", "web").remove(0);
    let pid = first.pid.expect("pid");
    // Kill the workload itself (and whatever it runs under), as a crash would.
    for p in processes_under(&s.data_dir()) {
        // SAFETY: killing a test instance's process by pid.
        unsafe {
            libc::kill(p as i32, libc::SIGKILL);
        }
    }
    wait_until(WAIT, "instance 0 answers again from a new process", || {
        let i = s.instances("crashy", "web").remove(0);
        i.pid.is_some_and(|p| p != pid)
            && i.address
                .as_ref()
                .is_some_and(|a| http_get(&format!("http://{a}/")).is_some_and(|(st, _)| st == 200))
    });
    let view = s.cli_ok(&[
        "vmss",
        "get-instance-view",
        "-g",
        "crashy",
        "-n",
        "web",
        "--instance-id",
        "0",
    ]);
    assert!(
        view["shoal"]["restarts"].as_u64().unwrap_or(0) >= 1,
        "the instance view counts the restart: {view}"
    );
}

fn arm(s: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let url = format!(
        "{}{path}{}api-version=2024-07-01",
        s.endpoint(),
        if path.contains('?') { "&" } else { "?" }
    );
    let (status, text) = http_request(method, &url, body).expect("API answers");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn bad_input_gets_a_4xx_naming_the_field_and_changes_nothing() {
    let _g = serial();
    let s = Server::start();
    create_set(&s, "bad", 1);
    let sub = "00000000-0000-0000-0000-000000000000";
    let set = format!("/subscriptions/{sub}/resourceGroups/bad/providers/Microsoft.Compute/virtualMachineScaleSets/web");
    let (_, before) = arm(&s, "GET", &set, None);
    let image = format!("/subscriptions/{sub}/resourceGroups/bad/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0");
    let good = json!({
        "location": "local",
        "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 1},
        "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}
    });
    let with = |pointer: &str, v: Value| {
        let mut b = good.clone();
        *b.pointer_mut(pointer).expect("pointer") = v;
        b.to_string()
    };
    // (what, path, body, status, code, target)
    type Case<'a> = (&'a str, String, String, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            set.clone(),
            "{\"location\": ".into(),
            400,
            "InvalidRequestContent",
            None,
        ),
        (
            "wrong type",
            set.clone(),
            with("/sku/capacity", json!("ten")),
            400,
            "InvalidParameter",
            Some("sku.capacity"),
        ),
        (
            "capacity below 0",
            set.clone(),
            with("/sku/capacity", json!(-1)),
            400,
            "InvalidParameter",
            Some("sku.capacity"),
        ),
        (
            "capacity above 1000",
            set.clone(),
            with("/sku/capacity", json!(1001)),
            400,
            "InvalidParameter",
            Some("sku.capacity"),
        ),
        (
            "unknown size",
            set.clone(),
            with("/sku/name", json!("Huge_9000")),
            400,
            "InvalidParameter",
            Some("sku.name"),
        ),
        (
            "missing image",
            set.clone(),
            with(
                "/properties/virtualMachineProfile/storageProfile/imageReference/id",
                json!(image.replace("1.0.0", "9.9.9")),
            ),
            400,
            "InvalidParameter",
            Some("properties.virtualMachineProfile.storageProfile.imageReference.id"),
        ),
        (
            "wrong enum",
            set.clone(),
            {
                let mut b = good.clone();
                b["properties"]["upgradePolicy"] = json!({"mode": "Sometimes"});
                b.to_string()
            },
            400,
            "InvalidParameter",
            Some("properties.upgradePolicy.mode"),
        ),
        (
            "name Azure refuses",
            set.replace("/web", "/-web-"),
            good.to_string(),
            400,
            "InvalidResourceName",
            Some("name"),
        ),
        (
            "missing resource group",
            set.replace("/bad/", "/nowhere/"),
            good.to_string(),
            404,
            "ResourceGroupNotFound",
            Some("nowhere"),
        ),
    ];
    for (what, path, body, status, code, target) in cases {
        let (got, err) = arm(&s, "PUT", &path, Some(&body));
        assert_eq!(got, status, "{what}: {err}");
        assert_eq!(err["error"]["code"], code, "{what}: {err}");
        if let Some(t) = target {
            assert_eq!(err["error"]["target"], t, "{what}: {err}");
        }
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: a message says what to do"
        );
    }
    // Instance ids that do not exist.
    let (got, err) = arm(&s, "GET", &format!("{set}/virtualMachines/99"), None);
    assert_eq!(
        (got, err["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (got, err) = arm(
        &s,
        "POST",
        &format!("{set}/restart"),
        Some(r#"{"instanceIds": ["99"]}"#),
    );
    assert_eq!(
        (got, err["error"]["target"].as_str()),
        (400, Some("instanceIds"))
    );
    let (got, _) = arm(
        &s,
        "POST",
        &format!("{set}/restart"),
        Some(r#"{"instanceIds": "zero"}"#),
    );
    assert_eq!(got, 400);
    // Nothing changed, and the server still serves.
    let (status, after) = arm(&s, "GET", &set, None);
    assert_eq!(status, 200);
    assert_eq!(after["sku"], before["sku"]);
    assert_eq!(
        after["properties"]["upgradePolicy"],
        before["properties"]["upgradePolicy"]
    );
    assert_eq!(s.instances("bad", "web").len(), 1);
    // The CLI shows the error az-style.
    let out = s.cli(&[
        "vmss",
        "scale",
        "-g",
        "bad",
        "-n",
        "web",
        "--new-capacity",
        "5000",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidParameter") && err.contains("sku.capacity"),
        "{err}"
    );
}

fn latest_model(s: &Server, rg: &str) -> Vec<(u64, bool)> {
    let v = s.cli_ok(&[
        "vmss",
        "list-instances",
        "-g",
        rg,
        "-n",
        "web",
        "--output",
        "json",
    ]);
    v.as_array()
        .expect("array")
        .iter()
        .map(|i| {
            (
                i["instanceId"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or(0),
                i["properties"]["latestModelApplied"]
                    .as_bool()
                    .unwrap_or(false),
            )
        })
        .collect()
}

fn custom_data_of(s: &Server, rg: &str, id: u64) -> String {
    let i = s
        .instances(rg, "web")
        .into_iter()
        .find(|i| i.id == id)
        .expect("instance");
    let addr = i.address.expect("address");
    http_get(&format!("http://{addr}/custom-data"))
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[test]
fn model_changes_wait_for_update_instances_in_manual_mode_and_apply_at_once_in_automatic() {
    let _g = serial();
    let s = Server::start();
    s.create_group_and_image("model");
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        "model",
        "-n",
        "web",
        "--image",
        "apps/web:1.0.0",
        "--instance-count",
        "2",
        "--custom-data",
        "v1",
    ]);
    assert_eq!(custom_data_of(&s, "model", 0), "v1");
    // Manual: the new model waits.
    s.cli_ok(&[
        "vmss",
        "update",
        "-g",
        "model",
        "-n",
        "web",
        "--custom-data",
        "v2",
    ]);
    assert_eq!(latest_model(&s, "model"), vec![(0, false), (1, false)]);
    assert_eq!(custom_data_of(&s, "model", 0), "v1");
    s.cli_ok(&[
        "vmss",
        "update-instances",
        "-g",
        "model",
        "-n",
        "web",
        "--instance-ids",
        "0",
    ]);
    assert_eq!(latest_model(&s, "model"), vec![(0, true), (1, false)]);
    assert_eq!(custom_data_of(&s, "model", 0), "v2");
    assert_eq!(custom_data_of(&s, "model", 1), "v1");
    // Automatic: every instance moves as soon as the model changes.
    s.cli_ok(&[
        "vmss",
        "update",
        "-g",
        "model",
        "-n",
        "web",
        "--upgrade-policy-mode",
        "Automatic",
        "--custom-data",
        "v3",
    ]);
    wait_until(WAIT, "both instances run the new model", || {
        latest_model(&s, "model") == vec![(0, true), (1, true)]
            && custom_data_of(&s, "model", 0) == "v3"
            && custom_data_of(&s, "model", 1) == "v3"
    });
    // The log of an instance is readable through the API.
    let out = s.cli(&[
        "vmss",
        "logs",
        "-g",
        "model",
        "-n",
        "web",
        "--instance-id",
        "1",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("instance 1 listening"),
        "{out:?}"
    );
}
