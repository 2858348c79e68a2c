//! Issue 14: `kill -9` of `shoal serve` in the middle of a scale-out, restarted at once,
//! again and again: every restart must start (no child of the dead server may still hold
//! the store's lock) and converge to exactly one process per instance.
//!
//! CI runs 20 rounds of 50 instances; `bench/kill_restart.sh` runs the full 20 × 200
//! (`SHOAL_KILL_LOOP_INSTANCES`, `SHOAL_KILL_LOOP_ROUNDS`).

use std::time::{Duration, Instant};

use crate::harness::*;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `shoal vmss scale` of the loop's set to `capacity`, without waiting.
fn scale_to(s: &Server, capacity: u32) {
    let c = capacity.to_string();
    s.cli_ok(&[
        "vmss",
        "scale",
        "-g",
        "loop",
        "-n",
        "web",
        "--new-capacity",
        &c,
        "--no-wait",
    ]);
}

#[test]
fn kill_9_during_scale_out_then_immediate_restart_always_starts_and_converges() {
    let _g = serial();
    let count = env_or("SHOAL_KILL_LOOP_INSTANCES", 50);
    let rounds = env_or("SHOAL_KILL_LOOP_ROUNDS", 20);
    let wait = Duration::from_secs(60 + u64::from(count) / 5);
    // Room for every instance whatever this machine's size (they are tiny processes);
    // a subnet of its own (as root, each instance has a namespace), to tell its namespaces.
    let mut s = Server::start_with(&[
        "--capacity-vcpus",
        "4096",
        "--capacity-memory-mb",
        "4194304",
        "--instance-subnet",
        LOOP_SUBNET,
    ]);
    s.create_group_and_image("loop");
    s.cli_ok(&vmss_args("loop", "0"));
    for round in 1..=rounds {
        let started = Instant::now();
        scale_to(&s, count);
        // Crash it while instances are being started: some run, not all yet.
        let some = (count / 5).max(1) as usize;
        wait_until(wait, "the scale-out is under way", || {
            running_instance_ids(&s.data_dir()).len() >= some
        });
        let at_kill = running_instance_ids(&s.data_dir()).len();
        // At once, as `kill -9 PID; shoal serve …` in a shell: the old process may still
        // be dying, and children it forked may not have exec'd yet.
        let mut dying = s.kill9_no_wait();
        s.restart();
        let _ = dying.wait();
        wait_until_or(
            wait,
            &format!("round {round}: {count} instances run, one process each"),
            || {
                let insts = s.instances("loop", "web");
                let ids = running_instance_ids(&s.data_dir());
                let mut listed: Vec<u64> = insts.iter().map(|i| i.id).collect();
                listed.sort_unstable();
                insts.len() == count as usize
                    && insts.iter().all(|i| i.address.is_some())
                    && ids == listed
            },
            || {
                let ids = running_instance_ids(&s.data_dir());
                format!("processes by instance id: {ids:?}\n{}", tail(&s.log(), 40))
            },
        );
        // No duplicate: every instance has exactly one workload process, and it answers.
        let ids = running_instance_ids(&s.data_dir());
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(ids, unique, "round {round}: an instance runs twice");
        for inst in s.instances("loop", "web") {
            let addr = inst.address.expect("address");
            let answer = http_get(&format!("http://{addr}/"));
            assert!(
                answer.as_ref().is_some_and(
                    |(st, b)| *st == 200 && b.trim() == format!("instance {}", inst.id)
                ),
                "round {round}: instance {} at {addr} answered {answer:?}",
                inst.id
            );
        }
        eprintln!(
            "round {round}: killed with {at_kill}/{count} running, restarted and converged in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        scale_to(&s, 0);
        wait_until(wait, "the set is scaled in to 0", || {
            running_instance_ids(&s.data_dir()).is_empty()
        });
    }
    let status = s.stop();
    assert!(status.success(), "clean stop exits 0");
    // A namespace made just before a kill, before its instance's state named it, is
    // removed by the next start: twenty crashes leave none behind.
    let left: Vec<String> = std::fs::read_dir("/run/shoal/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(LOOP_NETNS_PREFIX))
        .collect();
    assert!(
        left.is_empty(),
        "namespaces of the loop's subnet left after the last stop: {left:?}"
    );
}

/// The kill loop's instance subnet, and the prefix of its namespaces' names
/// (`shoal-<hex address>`).
const LOOP_SUBNET: &str = "10.236.0.0/16";
const LOOP_NETNS_PREFIX: &str = "shoal-0aec";

/// The names of the namespaces a server's warm pool lists (`.warm-namespaces`).
fn warm_listed(s: &Server) -> Vec<(String, String)> {
    let file = s.data_dir().join("agent/instances/.warm-namespaces");
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let list: serde_json::Value = serde_json::from_str(&text).expect("warm list is JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|a| {
            (
                a["netns"].as_str().expect("netns").to_string(),
                a["address"].as_str().expect("address").to_string(),
            )
        })
        .collect()
}

/// `--warm-namespaces`: new instances start in namespaces made ahead of need, the pool
/// survives a `kill -9` of the server (the next start adopts it), and a clean stop
/// removes it.
#[test]
fn a_warm_namespace_pool_serves_new_instances_and_survives_kill_9() {
    if !root_or_skip(
        "a_warm_namespace_pool_serves_new_instances_and_survives_kill_9",
        "network namespaces need root",
    ) {
        return;
    }
    let _g = serial();
    let mut s = Server::start_with(&["--network", "namespaces", "--warm-namespaces", "3"]);
    wait_until(
        Duration::from_secs(30),
        "3 warm namespaces recorded",
        || s.log().contains("Warm network namespaces ready") && warm_listed(&s).len() == 3,
    );
    let warm: Vec<String> = warm_listed(&s).into_iter().map(|(_, a)| a).collect();

    s.create_group_and_image("warm");
    s.cli_ok(&vmss_args("warm", "2"));
    wait_until(Duration::from_secs(60), "both instances answer", || {
        let i = s.instances("warm", "web");
        i.len() == 2
            && i.iter().all(|i| {
                i.address
                    .as_ref()
                    .is_some_and(|a| http_get(&format!("http://{a}/")).is_some())
            })
    });
    for i in s.instances("warm", "web") {
        let address = i.address.expect("address");
        let ip = address.split(':').next().expect("ip").to_string();
        assert!(
            warm.contains(&ip),
            "instance {} at {ip} did not get a warm namespace ({warm:?})",
            i.id
        );
    }
    // The pool refills behind them, and its list no longer names theirs.
    let taken: Vec<String> = s
        .instances("warm", "web")
        .iter()
        .filter_map(|i| i.address.as_ref()?.split(':').next().map(String::from))
        .collect();
    wait_until(Duration::from_secs(30), "the pool refilled", || {
        let listed = warm_listed(&s);
        listed.len() == 3 && listed.iter().all(|(_, a)| !taken.contains(a))
    });
    let before = warm_listed(&s);

    s.kill9();
    s.restart();
    wait_until(
        Duration::from_secs(30),
        "the pool adopted after a restart",
        || s.log().contains("adopted=3"),
    );
    wait_until(
        Duration::from_secs(60),
        "the instances still answer",
        || {
            s.instances("warm", "web").iter().all(|i| {
                i.address
                    .as_ref()
                    .is_some_and(|a| http_get(&format!("http://{a}/")).is_some())
            })
        },
    );
    assert_eq!(
        warm_listed(&s)
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<std::collections::BTreeSet<_>>(),
        before.iter().map(|(n, _)| n.clone()).collect(),
        "the same namespaces, adopted rather than made again"
    );

    s.stop();
    for (netns, _) in &before {
        assert!(
            !std::path::Path::new("/run/shoal/netns")
                .join(netns)
                .exists(),
            "{netns} removed with a clean stop"
        );
    }
    assert!(warm_listed(&s).is_empty(), "the list goes too");
}
