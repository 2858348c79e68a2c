//! The agent's supervisor: a crashing instance is restarted with growing backoff, and
//! one that keeps failing is reported failed with the reason, so waiting operations fail
//! instead of hanging.

use http::Method;
use serde_json::json;
use shoal_agent::driver::fake::{FakeCall, FakeOp};
use shoal_agent::driver::InstanceKey;

use crate::harness::{host, provisioning_state, Sim};

#[tokio::test(start_paused = true)]
async fn a_crashing_instance_is_restarted_with_backoff_then_reported_failed() {
    let sim = Sim::start(&[host("h1", None, None)]).await;
    sim.group_and_image("rg").await;
    sim.put_set("rg", "web", 1, json!({})).await;
    sim.wait_running("rg", "web", 1).await;
    let driver = &sim.hosts[0].driver;
    let key: InstanceKey = driver.running().pop().expect("one running instance");
    let starts = |d: &shoal_agent::driver::fake::FakeDriver| {
        d.calls()
            .iter()
            .filter(|c| matches!(c, FakeCall::Start(k) if *k == key))
            .count()
    };
    assert_eq!(starts(driver), 1);

    // One crash: restarted in place, the instance answers again.
    assert!(driver.crash(&key, "exit status 1"));
    sim.wait_until("the crashed instance runs again", || async {
        driver.is_running(&key)
    })
    .await;
    assert_eq!(starts(driver), 2, "one restart for one crash");
    // A minute of running counts as stable: the next crash starts a fresh count.
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;

    // From now on every start fails: restarts back off, then the agent gives up.
    driver.fail_always(FakeOp::Start, &key, "exec format error");
    let crashed_at = tokio::time::Instant::now();
    assert!(driver.crash(&key, "exit status 1"));
    sim.wait_until("the instance is reported failed", || async {
        let inst = sim.instances("rg", "web").await;
        inst.first().and_then(provisioning_state) == Some("ProvisioningState/failed")
    })
    .await;
    let gave_up_after = crashed_at.elapsed();
    // The crash is the first failure; four failed starts make MAX_FAILED_STARTS (5).
    let attempts = starts(driver) - 2;
    assert_eq!(
        attempts as u32,
        shoal_agent::supervisor::MAX_FAILED_STARTS - 1,
        "restart attempts before giving up"
    );
    // Backoff doubles from 500 ms: 0.5 + 1 + 2 + 4 s at least between the attempts.
    assert!(
        gave_up_after.as_secs_f64() >= 7.0,
        "gave up after {gave_up_after:?}: the restarts did not back off"
    );
    let inst = &sim.instances("rg", "web").await[0];
    let message = inst.to_string();
    assert!(
        message.contains("exec format error"),
        "the instance view says why: {inst}"
    );

    // An operation that waits on the failed instance fails with the reason, not hangs.
    let (status, headers, _) = sim
        .call_full(
            Method::POST,
            &format!("{}/restart", Sim::set_path("rg", "web")),
            Some(json!({"instanceIds": ["0"]})),
        )
        .await;
    assert_eq!(status, 202);
    let op = sim.wait_operation(&headers).await;
    assert_eq!(op["status"], "Failed", "{op}");
    assert!(
        op["error"].to_string().contains("exec format error"),
        "the operation's error says why: {op}"
    );
    sim.stop().await;
}
