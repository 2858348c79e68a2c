//! One supervisor task per instance: drives the instance toward its desired record
//! through the [`Driver`], watches its process, restarts it after a crash (with backoff,
//! giving up after [`MAX_FAILED_STARTS`] quick failures), and reports what it observes.
//!
//! The desired record arrives on a `watch` channel (latest wins); statuses leave through
//! a reporter task that always sends the newest one, retrying until the server has it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use shoal_model::records::{InstanceRecord, InstanceState, InstanceStatus, PowerIntent};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::applied::{Applied, AppliedLog};
use crate::driver::{
    Capabilities, Driver, InstanceKey, InstanceSpec, Recovered, Running, IMAGE_KIND_ENV,
};
use crate::events::EventBoard;
use crate::images::ImageCache;
use shoal_client::ServerClient;

/// Quick failures in a row after which an instance is `failed` until asked again.
pub const MAX_FAILED_STARTS: u32 = 5;
/// A run shorter than this counts as a failed start.
const QUICK_EXIT: Duration = Duration::from_secs(10);

/// What every supervisor shares.
pub struct AgentContext {
    pub host: String,
    pub driver: Arc<dyn Driver>,
    pub client: ServerClient,
    /// Where supervisors send their status reports (batched).
    pub reports: crate::reports::Reports,
    pub images: ImageCache,
    /// Base URL of the agent's own endpoint (metadata, logs) as seen from the host.
    pub agent_url: String,
    /// What the agent has applied per instance.
    pub applied: AppliedLog,
    pub stop_grace: Duration,
    pub boot_timeout: Duration,
    /// Bounds how many instances provision or boot at once.
    pub start_slots: Semaphore,
    pub capabilities: Capabilities,
    pub clock: Arc<dyn Fn() -> String + Send + Sync>,
    /// Leave instances running when the agent stops cleanly.
    pub keep_instances: bool,
    /// Scheduled events shown to instances.
    pub events: EventBoard,
    /// How long in-flight work may take to finish once an instance leaves its pools.
    pub drain_timeout: Duration,
    /// Hands instances their identity secret (`IDENTITY_HEADER`).
    pub identity: Option<crate::identity::Identity>,
}

struct Proc {
    pid: u32,
    endpoint: std::net::SocketAddr,
    exited: BoxFuture<'static, String>,
    started: Instant,
    ready: bool,
    /// Time until the next readiness probe: 10 ms, doubling to 250 ms, so a thousand
    /// booting instances do not flood the host with connection attempts.
    probe_delay: Duration,
}

impl From<Running> for Proc {
    fn from(r: Running) -> Self {
        Proc {
            pid: r.pid,
            endpoint: r.endpoint,
            exited: r.exited,
            started: Instant::now(),
            ready: false,
            probe_delay: Duration::from_millis(10),
        }
    }
}

pub fn instance_key(rec: &InstanceRecord) -> InstanceKey {
    InstanceKey(rec.slug())
}

/// Starts supervising `rec`; returns the sender that updates its desired record.
pub fn spawn(
    ctx: Arc<AgentContext>,
    rec: InstanceRecord,
    recovered: Option<Recovered>,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) -> watch::Sender<InstanceRecord> {
    // The status reporter belongs to the same tracker: it ends once the supervisor has
    // dropped its sender and the last status is sent (or cannot be).
    let (reporter, reports) = watch::channel(None);
    tracker.spawn(report_loop(ctx.reports.clone(), rec.clone(), reports));
    let (tx, rx) = watch::channel(rec);
    tracker.spawn(async move {
        let mut sup = Supervisor::new(ctx, rx, recovered, reporter, shutdown);
        sup.run().await;
    });
    tx
}

struct Supervisor {
    ctx: Arc<AgentContext>,
    desired: watch::Receiver<InstanceRecord>,
    key: InstanceKey,
    applied: Applied,
    proc: Option<Proc>,
    power_applied: Option<PowerIntent>,
    failures: u32,
    restarts: u32,
    failed: Option<String>,
    last_exit: Option<String>,
    backoff_until: Option<Instant>,
    reporter: watch::Sender<Option<InstanceStatus>>,
    shutdown: CancellationToken,
}

impl Supervisor {
    fn new(
        ctx: Arc<AgentContext>,
        desired: watch::Receiver<InstanceRecord>,
        recovered: Option<Recovered>,
        reporter: watch::Sender<Option<InstanceStatus>>,
        shutdown: CancellationToken,
    ) -> Self {
        let rec = desired.borrow().clone();
        let key = instance_key(&rec);
        let saved = ctx.applied.get(&key);
        let applied = match (&recovered, saved) {
            (Some(_), Some(a)) => a,
            // A disk without our notes: assume it is what is asked for.
            (Some(_), None) => Applied {
                provisioned: true,
                launch_generation: rec.launch.generation,
                restart_gen: rec.restart_gen,
                reimage_gen: rec.reimage_gen,
            },
            (None, _) => Applied::default(),
        };
        let proc = recovered.and_then(|r| r.running).map(Proc::from);
        Supervisor {
            ctx,
            desired,
            key,
            applied,
            power_applied: if proc.is_some() {
                Some(PowerIntent::Running)
            } else {
                None
            },
            proc,
            failures: 0,
            restarts: 0,
            failed: None,
            last_exit: None,
            backoff_until: None,
            reporter,
            shutdown,
        }
    }

    fn report(&self, state: InstanceState, message: Option<String>) {
        let rec = self.desired.borrow();
        let (address, port) = match &self.proc {
            Some(p) => (Some(p.endpoint.ip().to_string()), Some(p.endpoint.port())),
            None => (None, None),
        };
        let prev = self.reporter.borrow().clone();
        let since = match &prev {
            Some(p) if p.state == state => p.since.clone(),
            _ => (self.ctx.clock)(),
        };
        // Other image kinds (VMs) run on another driver, with its own limits and network.
        let kind_caps = (rec.launch.kind != "process")
            .then(|| self.ctx.driver.capabilities_for(&rec.launch.kind));
        let caps = kind_caps.as_ref().unwrap_or(&self.ctx.capabilities);
        // A failure is the verdict on the record as asked, also when it came before the
        // disk was (re)made (e.g. an image the driver refused): it carries the desired
        // generations, or a waiting operation would never see it.
        let (launch_generation, restart_gen, reimage_gen) = if state == InstanceState::Failed {
            (rec.launch.generation, rec.restart_gen, rec.reimage_gen)
        } else {
            (
                self.applied.launch_generation,
                self.applied.restart_gen,
                self.applied.reimage_gen,
            )
        };
        let status = InstanceStatus {
            state,
            host: self.ctx.host.clone(),
            launch_generation,
            restart_gen,
            reimage_gen,
            address,
            port,
            pid: self.proc.as_ref().map(|p| p.pid),
            message,
            restarts: self.restarts,
            since,
            limits: Some(caps.limits.clone()),
            network: Some(caps.network.clone()),
        };
        drop(rec);
        if prev.as_ref() != Some(&status) {
            self.reporter.send_replace(Some(status));
        }
    }

    fn save(&self) {
        self.ctx.applied.save(&self.key, &self.applied);
    }

    async fn spec(&mut self, rec: &InstanceRecord) -> Result<InstanceSpec, String> {
        let image_dir = self.ctx.images.get(&rec.launch.blob_id).await?;
        let custom_data = match &rec.launch.custom_data {
            Some(b64) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("customData is not base64: {e}"))?,
            ),
            None => None,
        };
        Ok(InstanceSpec {
            key: self.key.clone(),
            vmss: rec.vmss.name.clone(),
            instance_id: rec.instance_id.to_string(),
            image_dir,
            command: rec.launch.command.clone(),
            port: rec.launch.port,
            vcpus: rec.launch.vcpus,
            memory_mb: rec.launch.memory_mb,
            custom_data,
            metadata_endpoint: format!("{}/i/{}", self.ctx.agent_url, self.key),
            env: {
                let mut env = vec![
                    ("SHOAL_COMPUTER_NAME".into(), rec.computer_name()),
                    (IMAGE_KIND_ENV.into(), rec.launch.kind.clone()),
                ];
                // The driver adds IDENTITY_ENDPOINT from the metadata address it exports.
                if let Some(id) = &self.ctx.identity {
                    env.push(("IDENTITY_HEADER".into(), id.secret(&self.key.0)));
                }
                env
            },
        })
    }

    async fn stop(&mut self, release: bool) {
        if let Err(e) = self
            .ctx
            .driver
            .stop(&self.key, self.ctx.stop_grace, release)
            .await
        {
            tracing::warn!(instance = %self.key, error = %e, "stop failed");
        }
        self.proc = None;
    }

    async fn run(&mut self) {
        loop {
            if self.shutdown.is_cancelled() {
                if !self.ctx.keep_instances {
                    self.stop(false).await;
                }
                return;
            }
            let rec = self.desired.borrow_and_update().clone();
            if rec.deleting {
                self.drain_before_stop(&rec, "being deleted", true).await;
                self.report(InstanceState::Deleting, None);
                if let Err(e) = self.ctx.driver.destroy(&self.key).await {
                    tracing::warn!(instance = %self.key, error = %e, "destroy failed; retrying");
                    self.report(
                        InstanceState::Deleting,
                        Some(format!("teardown failed: {e}")),
                    );
                    if self
                        .wait(Some(Instant::now() + Duration::from_secs(1)))
                        .await
                    {
                        return;
                    }
                    continue;
                }
                self.proc = None;
                self.ctx.events.clear(&self.key.0);
                self.ctx.applied.remove(&self.key);
                self.report(InstanceState::Deleted, None);
                // Done once the server removes the record (the agent drops our sender).
                loop {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        changed = self.desired.changed() => if changed.is_err() { return },
                    }
                }
            }
            if let Err(message) = self.converge(&rec).await {
                self.failed = Some(message.clone());
                self.report(InstanceState::Failed, Some(message));
            }
            let deadline = self.backoff_until;
            if self.wait(deadline).await {
                return;
            }
        }
    }

    /// One step toward `rec`. Errors are reasons the instance cannot run as asked.
    async fn converge(&mut self, rec: &InstanceRecord) -> Result<(), String> {
        let ctx = self.ctx.clone();
        // A start slot taken to provision is kept for the start that follows, so an
        // instance boots as soon as its disk is ready instead of queueing behind every
        // other instance's provisioning (its address then comes early, and the booting
        // workloads' CPU spreads over the scale-out instead of piling up at its end).
        let mut slot = None;
        let fresh_disk = !self.applied.provisioned
            || self.applied.launch_generation != rec.launch.generation
            || self.applied.reimage_gen != rec.reimage_gen;
        if fresh_disk {
            let first = !self.applied.provisioned;
            self.report(
                if first {
                    InstanceState::Creating
                } else {
                    InstanceState::Starting
                },
                None,
            );
            if self.proc.is_some() {
                let why = if self.applied.reimage_gen != rec.reimage_gen {
                    "reimaging"
                } else {
                    "moving to the latest model"
                };
                self.drain_before_stop(rec, why, false).await;
                self.stop(false).await;
            }
            let spec = self.spec(rec).await?;
            let permit = ctx.start_slots.acquire().await.map_err(|e| e.to_string())?;
            let result = if first {
                ctx.driver.provision(&spec).await
            } else {
                ctx.driver.reimage(&spec).await
            };
            result.map_err(|e| e.to_string())?;
            slot = Some(permit);
            self.applied = Applied {
                provisioned: true,
                launch_generation: rec.launch.generation,
                restart_gen: rec.restart_gen,
                reimage_gen: rec.reimage_gen,
            };
            self.save();
            self.clear_failures();
            self.power_applied = None;
        }
        if self.applied.restart_gen != rec.restart_gen {
            if self.proc.is_some() {
                self.drain_before_stop(rec, "restarting", false).await;
                self.report(InstanceState::Stopping, Some("restarting".into()));
                self.stop(false).await;
            }
            self.applied.restart_gen = rec.restart_gen;
            self.save();
            self.clear_failures();
            self.power_applied = None;
        }
        match rec.power {
            PowerIntent::Running => {
                if self.failed.is_some() {
                    return Ok(());
                }
                if self.proc.is_none() {
                    if self.backoff_until.is_some_and(|t| t > Instant::now()) {
                        return Ok(());
                    }
                    self.backoff_until = None;
                    let spec = self.spec(rec).await?;
                    self.report(InstanceState::Starting, self.last_exit.clone());
                    let started = {
                        let _slot = match slot.take() {
                            Some(permit) => permit,
                            None => ctx.start_slots.acquire().await.map_err(|e| e.to_string())?,
                        };
                        ctx.driver.start(&spec).await
                    };
                    match started {
                        Ok(r) => {
                            self.proc = Some(Proc::from(r));
                            self.power_applied = Some(PowerIntent::Running);
                            self.report(InstanceState::Starting, self.last_exit.clone());
                        }
                        Err(e) => self.note_failure(format!("start failed: {e}")),
                    }
                } else if self.proc.as_ref().is_some_and(|p| p.ready) {
                    self.report(InstanceState::Running, None);
                }
            }
            PowerIntent::Stopped | PowerIntent::Deallocated => {
                let release = rec.power == PowerIntent::Deallocated;
                if self.proc.is_some() || self.power_applied != Some(rec.power) {
                    self.drain_before_stop(rec, "stopping", false).await;
                    self.report(InstanceState::Stopping, None);
                    self.stop(release).await;
                    self.power_applied = Some(rec.power);
                }
                self.clear_failures();
                self.report(
                    if release {
                        InstanceState::Deallocated
                    } else {
                        InstanceState::Stopped
                    },
                    None,
                );
            }
        }
        Ok(())
    }

    /// Before a running instance is stopped on purpose: tell it (a `Terminate` scheduled
    /// event, when it is going away and its set asks for notice), then take it out of
    /// every balancer and let in-flight work finish, up to the drain timeout.
    async fn drain_before_stop(&mut self, rec: &InstanceRecord, why: &str, terminating: bool) {
        if self.proc.is_none() {
            return;
        }
        if let (true, Some(secs)) = (terminating, rec.launch.terminate_notice_secs) {
            self.report(
                InstanceState::Draining,
                Some(format!("{why}: Terminate event scheduled; waiting up to {secs} s for the instance to approve it")),
            );
            let id = self.ctx.events.schedule_terminate(
                &self.key.0,
                &rec.computer_name(),
                Duration::from_secs(secs),
            );
            let approved = self.ctx.events.wait(&id, Duration::from_secs(secs)).await;
            tracing::info!(instance = %self.key, approved, "terminate notice over");
        }
        if !self.proc.as_ref().is_some_and(|p| p.ready) {
            // It never answered, so no balancer sends it anything.
            return;
        }
        self.report(
            InstanceState::Draining,
            Some(format!("{why}: draining connections")),
        );
        let episode = self
            .reporter
            .borrow()
            .as_ref()
            .map(|s| s.since.clone())
            .unwrap_or_default();
        let deadline = Instant::now() + self.ctx.drain_timeout;
        loop {
            if let Ok(true) = self.ctx.client.drained(rec, &episode).await {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(instance = %self.key, timeout = ?self.ctx.drain_timeout, "drain timed out; stopping anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn clear_failures(&mut self) {
        self.failures = 0;
        self.failed = None;
        self.backoff_until = None;
        self.last_exit = None;
    }

    /// Counts a failed start; schedules a retry or gives up.
    fn note_failure(&mut self, what: String) {
        self.failures += 1;
        self.last_exit = Some(what.clone());
        if self.failures >= MAX_FAILED_STARTS {
            let msg = format!(
                "{what}; gave up after {} failed starts in a row (see `shoal vmss logs`; restart or reimage the instance to try again)",
                self.failures
            );
            tracing::warn!(instance = %self.key, "{msg}");
            self.failed = Some(msg.clone());
            self.report(InstanceState::Failed, Some(msg));
        } else {
            let backoff = Duration::from_millis(250 * (1 << self.failures.min(6)));
            self.backoff_until = Some(Instant::now() + backoff.min(Duration::from_secs(10)));
            self.report(
                InstanceState::Starting,
                Some(format!("{what}; restarting in {} ms", backoff.as_millis())),
            );
        }
    }

    /// Waits for a change worth acting on. Returns true when the supervisor must end.
    async fn wait(&mut self, deadline: Option<Instant>) -> bool {
        let probe_due = self
            .proc
            .as_ref()
            .filter(|p| !p.ready)
            .map(|p| p.probe_delay);
        let sleep_until = match (deadline, probe_due) {
            (Some(d), Some(delay)) => Some(d.min(Instant::now() + delay)),
            (Some(d), None) => Some(d),
            (None, Some(delay)) => Some(Instant::now() + delay),
            (None, None) => None,
        };
        let woke = {
            let exited = match self.proc.as_mut() {
                Some(p) => futures::future::Either::Left(&mut p.exited),
                None => futures::future::Either::Right(std::future::pending::<String>()),
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => Woke::Shutdown,
                changed = self.desired.changed() => Woke::Changed(changed.is_ok()),
                how = exited => Woke::Exited(how),
                _ = sleep_opt(sleep_until) => Woke::Timer,
            }
        };
        match woke {
            Woke::Shutdown => {
                if !self.ctx.keep_instances {
                    self.stop(false).await;
                }
                return true;
            }
            Woke::Changed(false) => {
                if self.shutdown.is_cancelled() {
                    // The agent is stopping and dropped its senders first.
                    if !self.ctx.keep_instances {
                        self.stop(false).await;
                    }
                } else {
                    // The record is gone without our seeing its deletion: nothing asks
                    // for this instance any more.
                    if let Err(e) = self.ctx.driver.destroy(&self.key).await {
                        tracing::warn!(instance = %self.key, error = %e, "cannot remove an instance whose record is gone");
                    }
                    self.ctx.events.clear(&self.key.0);
                    self.ctx.applied.remove(&self.key);
                }
                return true;
            }
            Woke::Changed(true) => {}
            Woke::Exited(how) => {
                let uptime = self
                    .proc
                    .as_ref()
                    .map(|p| p.started.elapsed())
                    .unwrap_or_default();
                self.proc = None;
                self.restarts += 1;
                tracing::info!(instance = %self.key, %how, "instance process ended on its own");
                if uptime >= QUICK_EXIT {
                    self.failures = 0;
                }
                self.note_failure(how);
            }
            Woke::Timer => self.probe().await,
        }
        false
    }

    /// Checks whether a booting instance answers on its port yet.
    async fn probe(&mut self) {
        let Some(endpoint) = self.proc.as_ref().filter(|p| !p.ready).map(|p| p.endpoint) else {
            return;
        };
        let ready = self.ctx.driver.ready(&self.key, endpoint).await;
        let Some(p) = self.proc.as_mut() else { return };
        if ready {
            p.ready = true;
            if p.started.elapsed() >= QUICK_EXIT {
                self.failures = 0;
            }
            self.last_exit = None;
            self.report(InstanceState::Running, None);
            return;
        }
        p.probe_delay = (p.probe_delay * 2).min(Duration::from_millis(250));
        if p.started.elapsed() > self.ctx.boot_timeout {
            let port = p.endpoint.port();
            let mut what = format!(
                "did not listen on port {port} within {} s",
                self.ctx.boot_timeout.as_secs()
            );
            if let Some(hint) = self.ctx.driver.boot_hint(&self.key).await {
                what = format!("{what}: {hint}");
            }
            self.stop(false).await;
            self.failures = MAX_FAILED_STARTS - 1;
            self.note_failure(what);
        }
    }
}

enum Woke {
    Shutdown,
    Changed(bool),
    Exited(String),
    Timer,
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Sends the newest status, retrying until the server takes it.
async fn report_loop(
    reports: crate::reports::Reports,
    rec: InstanceRecord,
    mut rx: watch::Receiver<Option<InstanceStatus>>,
) {
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        loop {
            let Some(status) = rx.borrow_and_update().clone() else {
                break;
            };
            match reports.report(&rec, &status).await {
                Ok(_) => break,
                Err(e) => {
                    if rx.has_changed().is_err() {
                        // The supervisor is gone (the agent stops) and the server does not
                        // answer: the next agent reports afresh.
                        return;
                    }
                    tracing::debug!(instance = rec.instance_id, error = %e, "status report failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
