//! The planner against a small simulated world: agents apply launch specs at once,
//! health is whatever the test says, the placement planner's surge is played by hand.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;
use shoal_model::records::{
    HealthRecord, HealthState, InstanceRecord, InstanceState, InstanceStatus, PowerIntent,
    ProtectionPolicy, VmssRecord,
};
use shoal_model::upgrade_policy::RollingStatusCode;

use super::*;
use crate::clock::arm_time;
use crate::planner::tests::{launch, set as base_set};

fn rolling_set(capacity: i64, zones: Option<Vec<&str>>, policy: serde_json::Value) -> VmssRecord {
    let mut s = base_set(
        capacity,
        zones,
        json!({"properties": {
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": policy},
            "virtualMachineProfile": {"networkProfile": {"healthProbe": {"id": "/lb/probes/p"}}},
            "shoal": {"rollingUpgradeHealthTimeout": "PT60S"}
        }}),
    );
    s.next_instance_id = capacity as u64;
    s
}

fn instance(id: u64, zone: Option<&str>, fd: u32) -> InstanceRecord {
    InstanceRecord {
        vmss: shoal_model::ids::VmssRef::new("s", "rg", "web"),
        instance_id: id,
        vm_id: format!("vm-{id}"),
        host: "h".into(),
        zone: zone.map(String::from),
        fault_domain: fd,
        launch: launch(1),
        power: PowerIntent::Running,
        restart_gen: 0,
        reimage_gen: 0,
        deleting: false,
        protection: ProtectionPolicy::default(),
        time_created: String::new(),
        epoch: 0,
        rebalance: false,
    }
}

/// A world of one set: the records, what agents and balancers report, and the clock.
struct World {
    set: VmssRecord,
    instances: Vec<InstanceRecord>,
    statuses: HashMap<u64, InstanceStatus>,
    health: HashMap<u64, HealthRecord>,
    record: Option<RollingUpgrade>,
    now: Timestamp,
    /// Instances on the new model never become healthy.
    bad_version: bool,
    surge_room: Option<usize>,
}

impl World {
    fn new(set: VmssRecord, instances: Vec<InstanceRecord>) -> World {
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut w = World {
            set,
            instances,
            statuses: HashMap::new(),
            health: HashMap::new(),
            record: None,
            now,
            bad_version: false,
            surge_room: None,
        };
        w.agents();
        w
    }

    fn status(rec: &InstanceRecord, since: &str) -> InstanceStatus {
        InstanceStatus {
            state: if rec.deleting {
                InstanceState::Deleted
            } else {
                InstanceState::Running
            },
            host: "h".into(),
            launch_generation: rec.launch.generation,
            restart_gen: 0,
            reimage_gen: 0,
            address: None,
            port: None,
            pid: None,
            message: None,
            restarts: 0,
            since: since.into(),
            limits: None,
            network: None,
        }
    }

    /// Agents catch up with the records; balancers report health.
    fn agents(&mut self) {
        let now = arm_time(self.now);
        self.instances.retain(|i| !i.deleting);
        for i in &self.instances {
            let fresh = self
                .statuses
                .get(&i.instance_id)
                .is_none_or(|s| s.launch_generation != i.launch.generation);
            if fresh {
                self.statuses.insert(i.instance_id, Self::status(i, &now));
                let bad = self.bad_version && i.launch.generation == self.set.launch.generation;
                let state = if bad {
                    HealthState::Unhealthy
                } else {
                    HealthState::Healthy
                };
                self.health.insert(
                    i.instance_id,
                    HealthRecord {
                        state,
                        since: now.clone(),
                        observer: "lb".into(),
                        message: None,
                    },
                );
            }
        }
    }

    /// The placement planner: the set holds its capacity plus the surge.
    fn placement(&mut self) {
        let extra = self.record.as_ref().map_or(0, RollingUpgrade::surge_extra);
        let want = self.set.model.capacity() as u64 + extra;
        while (self.instances.len() as u64) < want {
            let mut i = instance(self.set.next_instance_id, None, 0);
            i.launch = self.set.launch.clone();
            self.instances.push(i);
            self.set.next_instance_id += 1;
        }
    }

    fn step(&mut self) -> Step {
        let step = next_step(&Input {
            set: &self.set,
            instances: &self.instances,
            statuses: &self.statuses,
            health: &self.health,
            record: self.record.as_ref(),
            now: self.now,
            probe_grace: None,
            surge_room: self.surge_room,
        });
        for (id, l) in &step.launches {
            if let Some(i) = self.instances.iter_mut().find(|i| i.instance_id == *id) {
                i.launch = l.clone();
            }
        }
        for id in &step.delete {
            if let Some(i) = self.instances.iter_mut().find(|i| i.instance_id == *id) {
                i.deleting = true;
            }
        }
        if let Some(r) = &step.record {
            self.record = Some(r.clone());
        }
        if let Some(l) = &step.set_launch {
            self.set.launch = l.clone();
        }
        step
    }

    fn tick(&mut self, secs: i64) {
        self.now += SignedDuration::from_secs(secs);
    }

    fn code(&self) -> Option<RollingStatusCode> {
        self.record.as_ref().map(|r| r.code)
    }

    /// Runs until the upgrade ends, checking `each` after every step.
    fn run(&mut self, each: &mut dyn FnMut(&World, &Step)) {
        for _ in 0..2000 {
            let step = self.step();
            each(self, &step);
            if self.record.as_ref().is_some_and(|r| !r.is_running()) {
                return;
            }
            self.placement();
            self.tick(3);
            self.agents();
        }
        panic!("the upgrade did not end: {:?}", self.record);
    }
}

fn new_model(w: &mut World) {
    w.set.launch = launch(2);
    w.set.launch.image_version = "1.0.1".into();
}

#[test]
fn ten_instances_in_five_batches_of_two() {
    let set = rolling_set(10, None, json!({}));
    let mut w = World::new(set, (0..10).map(|i| instance(i, None, 0)).collect());
    assert!(w.step().is_empty(), "nothing to upgrade yet");
    new_model(&mut w);
    let mut batches = Vec::new();
    w.run(&mut |_, s| {
        if !s.launches.is_empty() {
            batches.push(s.launches.len());
        }
    });
    assert_eq!(batches, vec![2; 5]);
    let r = w.record.unwrap();
    assert_eq!(r.code, RollingStatusCode::Completed);
    assert_eq!((r.upgraded.len(), r.failed.len(), r.pending), (10, 0, 0));
    assert!(w.instances.iter().all(|i| i.launch.generation == 2));
}

#[test]
fn a_version_that_never_becomes_healthy_faults_after_the_first_batch_and_rolls_back() {
    let set = rolling_set(
        10,
        None,
        json!({"rollbackFailedInstancesOnPolicyBreach": true}),
    );
    let mut w = World::new(set, (0..10).map(|i| instance(i, None, 0)).collect());
    w.bad_version = true;
    new_model(&mut w);
    let mut codes = Vec::new();
    w.run(&mut |w, _| codes.push(w.code()));
    let r = w.record.clone().unwrap();
    assert_eq!(r.code, RollingStatusCode::Faulted);
    assert!(codes.contains(&Some(RollingStatusCode::RollingBack)));
    assert_eq!(
        r.error.unwrap().code,
        "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"
    );
    assert_eq!(r.batches_done, 1);
    assert_eq!(r.rolled_back.len(), 2);
    assert!(
        w.instances.iter().all(|i| i.launch.generation == 1),
        "the batch went back, the rest were never touched"
    );
    // The same model does not start another upgrade; a newer one does.
    w.agents();
    assert!(w.step().is_empty());
    w.set.launch = launch(3);
    assert_eq!(
        w.step().record.unwrap().code,
        RollingStatusCode::RollingForward
    );
}

#[test]
fn an_automatic_upgrade_rolled_back_puts_the_set_back_on_the_last_good_version() {
    let set = rolling_set(10, None, json!({}));
    let mut w = World::new(set, (0..10).map(|i| instance(i, None, 0)).collect());
    w.bad_version = true;
    let good = w.set.launch.clone();
    new_model(&mut w);
    w.step();
    // As an automatic OS upgrade starts it (`Platform`, rollback on).
    w.record.as_mut().unwrap().automatic_rollback = true;
    w.run(&mut |_, _| {});
    let r = w.record.clone().unwrap();
    assert_eq!(r.code, RollingStatusCode::Faulted);
    assert_eq!(r.bad_versions, vec!["1.0.1".to_string()]);
    assert_eq!(
        w.set.launch, good,
        "a later scale-out takes the good version"
    );
    assert!(w.instances.iter().all(|i| i.launch.generation == 1));
}

#[test]
fn a_users_upgrade_rolled_back_keeps_the_users_model() {
    let set = rolling_set(
        10,
        None,
        json!({"rollbackFailedInstancesOnPolicyBreach": true}),
    );
    let mut w = World::new(set, (0..10).map(|i| instance(i, None, 0)).collect());
    w.bad_version = true;
    new_model(&mut w);
    w.run(&mut |_, s| assert!(s.set_launch.is_none()));
    assert_eq!(w.set.launch.image_version, "1.0.1");
}

#[test]
fn too_many_unhealthy_before_the_first_batch() {
    let set = rolling_set(10, None, json!({}));
    let mut w = World::new(set, (0..10).map(|i| instance(i, None, 0)).collect());
    for id in [1, 2, 3] {
        w.health.get_mut(&id).unwrap().state = HealthState::Unhealthy;
    }
    new_model(&mut w);
    w.step();
    w.step();
    let r = w.record.unwrap();
    assert_eq!(r.code, RollingStatusCode::Faulted);
    assert_eq!(
        r.error.unwrap().code,
        "MaxUnhealthyInstancePercentExceededBeforeRollingUpgrade"
    );
}

#[test]
fn cancel_lets_the_batch_finish_and_starts_no_other() {
    let set = rolling_set(10, None, json!({}));
    let mut w = World::new(set, (0..10).map(|i| instance(i, None, 0)).collect());
    new_model(&mut w);
    w.step();
    let s = w.step();
    assert_eq!(s.launches.len(), 2);
    w.record.as_mut().unwrap().cancel_requested = true;
    let mut launched = 0;
    w.run(&mut |_, s| launched += s.launches.len());
    assert_eq!(launched, 0);
    assert_eq!(w.code(), Some(RollingStatusCode::Cancelled));
    assert_eq!(w.record.as_ref().unwrap().upgraded.len(), 2);
}

#[test]
fn unhealthy_first_and_batches_spread_over_fault_domains() {
    let policy = RollingPolicy {
        prioritize_unhealthy_instances: true,
        ..RollingPolicy::default()
    };
    let recs: Vec<InstanceRecord> = (0..6).map(|i| instance(i, None, (i % 2) as u32)).collect();
    let refs: Vec<&InstanceRecord> = recs.iter().collect();
    let batch = choose_batch(&refs, &policy, 2, &|i: &InstanceRecord| i.instance_id == 4);
    let ids: Vec<u64> = batch.iter().map(|i| i.instance_id).collect();
    assert_eq!(ids, vec![4, 1]);
    let policy = RollingPolicy::default();
    let batch = choose_batch(&refs, &policy, 4, &|_: &InstanceRecord| false);
    let fds: Vec<u32> = batch.iter().map(|i| i.fault_domain).collect();
    assert_eq!(fds, vec![0, 1, 0, 1]);
    assert_eq!(batch_size(10, 20), 2);
    assert_eq!(batch_size(4, 20), 1);
    assert_eq!(batch_size(100, 5), 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn batches_obey_the_policy(
        n in 1usize..25,
        pct in 5u32..=100,
        zoned in any::<bool>(),
        cross_zone in any::<bool>(),
        surge in any::<bool>(),
        protected in proptest::collection::vec(any::<bool>(), 25),
        fds in proptest::collection::vec(0u32..3, 25),
    ) {
        let zones = zoned.then(|| vec!["1", "2", "3"]);
        let set = rolling_set(n as i64, zones, json!({
            "maxBatchInstancePercent": pct,
            "enableCrossZoneUpgrade": cross_zone,
            "maxSurge": surge,
        }));
        let names = ["1", "2", "3"];
        let mut recs: Vec<InstanceRecord> = (0..n as u64)
            .map(|i| instance(i, zoned.then(|| names[i as usize % 3]), fds[i as usize]))
            .collect();
        for (i, r) in recs.iter_mut().enumerate() {
            r.protection.protect_from_scale_set_actions = protected[i];
        }
        let protected_ids: Vec<u64> =
            recs.iter().filter(|r| r.protection.protect_from_scale_set_actions).map(|r| r.instance_id).collect();
        let zone_of: HashMap<u64, Option<String>> =
            recs.iter().map(|r| (r.instance_id, r.zone.clone())).collect();
        let size = batch_size(n, pct);
        if recs.iter().all(|r| r.protection.protect_from_scale_set_actions) {
            return Ok(());
        }
        let mut w = World::new(set, recs);
        new_model(&mut w);
        let mut check = |w: &World, s: &Step| {
            // Never more than one batch down: instances not yet running healthy on
            // their record are all of the batch in flight, at most a batch's worth.
            let down: Vec<u64> = w.instances.iter().filter(|i| {
                !i.deleting && w.statuses.get(&i.instance_id).is_none_or(|st| !st.satisfies(i))
            }).map(|i| i.instance_id).collect();
            assert!(down.len() <= size, "{} down with batches of {size}", down.len());
            if let Some(b) = w.record.as_ref().and_then(|r| r.batch.as_ref()) {
                assert!(b.members.len() <= size);
                if !cross_zone {
                    let zones: std::collections::HashSet<_> =
                        b.members.iter().map(|m| zone_of[&m.instance_id].clone()).collect();
                    assert!(zones.len() <= 1, "a batch spans zones: {zones:?}");
                }
            }
            // Protected instances are never touched.
            for (id, _) in &s.launches {
                assert!(!protected_ids.contains(id));
            }
            for id in &s.delete {
                assert!(!protected_ids.contains(id));
            }
            // With maxSurge, the set never has fewer than its count serving.
            if surge {
                let serving = w.instances.iter().filter(|i| {
                    !i.deleting && w.statuses.get(&i.instance_id).is_some_and(|st| st.satisfies(i))
                }).count();
                assert!(serving >= n, "{serving} serving of {n}");
            }
        };
        w.run(&mut check);
        assert_eq!(w.code(), Some(RollingStatusCode::Completed));
        for i in &w.instances {
            if protected_ids.contains(&i.instance_id) {
                assert_eq!(i.launch.generation, 1);
            } else {
                assert_eq!(i.launch.generation, 2);
            }
        }
    }
}

#[test]
fn a_member_scaled_in_during_its_batch_is_not_a_failure() {
    let set = rolling_set(10, None, json!({}));
    let mut w = World::new(set, (0..10).map(|i| instance(i, None, 0)).collect());
    new_model(&mut w);
    w.step();
    let s = w.step();
    let gone = s.launches[0].0;
    w.instances.retain(|i| i.instance_id != gone);
    w.set.model.sku.as_mut().unwrap().capacity = Some(9);
    w.run(&mut |_, _| {});
    let r = w.record.unwrap();
    assert_eq!(r.code, RollingStatusCode::Completed);
    assert_eq!((r.upgraded.len(), r.failed.len()), (9, 0));
}

#[test]
fn max_surge_without_room_on_the_hosts_upgrades_the_batch_in_place() {
    let set = rolling_set(10, None, json!({"maxSurge": true}));
    let mut w = World::new(set, (0..10).map(|i| instance(i, None, 0)).collect());
    w.surge_room = Some(1);
    new_model(&mut w);
    w.step();
    let s = w.step();
    assert_eq!(s.launches.len(), 2, "in place");
    let r = w.record.as_ref().unwrap();
    assert!(r.batch.as_ref().unwrap().surge.is_none());
    assert!(r
        .log
        .iter()
        .any(|e| e.message.contains("falls back to an in-place upgrade")));
    w.surge_room = Some(2);
    w.run(&mut |_, _| {});
    assert_eq!(w.code(), Some(RollingStatusCode::Completed));
}
