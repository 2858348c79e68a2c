//! Issue 15: a Flexible scale set with an instance mix, on the real binary. The host has
//! room for 3 vCPUs; the mix prefers a 2-vCPU size, so the first instance gets it and the
//! second, with 1 vCPU left, the 1-vCPU size ("as capacity allows", as Azure's
//! Prioritized strategy). Each instance serves, is a virtual machine of its own showing
//! its own size, and runs under its own size's CPU and memory limits.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);
const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn get_json(url: &str) -> Value {
    let (status, body) = http_get(url).unwrap_or_else(|| panic!("no answer from {url}"));
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// `key=value` lines of an instance's `/env`.
fn env_value(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_flexible_set_with_two_sizes_serves_each_instance_with_its_own_size_and_limits() {
    let _g = serial();
    let s = Server::start_with(&["--capacity-vcpus", "3", "--capacity-memory-mb", "4096"]);
    s.create_group_and_image("flex");
    let rg = format!("{}/subscriptions/{SUB}/resourceGroups/flex", s.endpoint());
    let image = format!("/subscriptions/{SUB}/resourceGroups/flex/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0");
    let body = json!({
        "location": "local",
        "sku": {"name": "Mix", "capacity": 2},
        "properties": {
            "orchestrationMode": "Flexible",
            "platformFaultDomainCount": 1,
            "skuProfile": {
                "vmSizes": [{"name": "Shoal_2vCPU_1024MB", "rank": 0}, {"name": "Shoal_1vCPU_512MB", "rank": 1}],
                "allocationStrategy": "Prioritized"
            },
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}
        }
    });
    let set_url = format!(
        "{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/mix?api-version=2024-07-01"
    );
    let (status, answer) =
        http_request("PUT", &set_url, Some(&body.to_string())).expect("an answer");
    assert!(status == 200 || status == 201, "{status}: {answer}");

    wait_until(WAIT, "both instances of the mix answer", || {
        let all = s.instances("flex", "mix");
        all.len() == 2
            && all.iter().all(|i| {
                i.address
                    .as_deref()
                    .and_then(|a| http_get(&format!("http://{a}/")))
                    .is_some_and(|(code, text)| code == 200 && text.starts_with("instance "))
            })
    });

    // Each instance is a virtual machine showing its own size.
    let vms = get_json(&format!(
        "{rg}/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01"
    ));
    let mut sizes: Vec<(String, String)> = vms["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v["properties"]["hardwareProfile"]["vmSize"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![
            ("mix_0".to_string(), "Shoal_2vCPU_1024MB".to_string()),
            ("mix_1".to_string(), "Shoal_1vCPU_512MB".to_string())
        ],
        "{vms:#}"
    );
    for (name, _) in &sizes {
        let vm = get_json(&format!(
            "{rg}/providers/Microsoft.Compute/virtualMachines/{name}?api-version=2024-07-01"
        ));
        assert!(
            vm["properties"]["virtualMachineScaleSet"]["id"]
                .as_str()
                .is_some_and(|id| id.ends_with("/virtualMachineScaleSets/mix")),
            "{vm:#}"
        );
    }

    // And runs under its own size's limits, as the workload itself reads them.
    let limits: Vec<(String, String)> = s
        .instances("flex", "mix")
        .iter()
        .map(|i| {
            let env = http_get(&format!(
                "http://{}/env",
                i.address.as_deref().expect("address")
            ))
            .expect("env")
            .1;
            (
                env_value(&env, "cpu_limit"),
                env_value(&env, "memory_limit_bytes"),
            )
        })
        .collect();
    assert_eq!(
        limits,
        vec![
            ("2".to_string(), (1024u64 << 20).to_string()),
            ("1".to_string(), (512u64 << 20).to_string())
        ]
    );
}
