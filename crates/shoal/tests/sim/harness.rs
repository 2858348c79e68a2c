//! The simulation harness: the whole server stack in one test process, on tokio's paused
//! clock, with no sockets between the parts.
//!
//! - The API and the control plane are a real [`shoal::Core`] on an in-memory store.
//! - Each simulated host runs the real agent (`shoal_agent::run`) with a [`FakeDriver`],
//!   talking to the API through [`SimTransport`], which calls the core's router in
//!   process. Hosts have zones and fault domains like real ones.
//! - [`Sim::crash_server_after`] makes the server "die" after its next N store writes
//!   (every later call fails as a dead process would), and [`Sim::restart_server`]
//!   starts a fresh core on the same store, as `kill -9` and a restart of `shoal serve`
//!   would; agents keep running and reconnect, as the data plane does.
//! - [`Sim::cut`] cuts one host off the server (its calls fail and its open watches
//!   end, as a pulled cable would) and heals it again; the host's instances keep
//!   running meanwhile. [`Sim::stop_agent`] and [`Sim::start_agent`] stop and start one
//!   host's agent alone (its instances stay, as after a `kill -9` of the agent).
//!
//! Time is tokio's paused clock: whenever every task waits, time jumps to the next timer,
//! so minutes of simulated time (backoffs, grace periods, resyncs) take milliseconds, and
//! a run is the same every time. The control plane's `Clock` follows the same clock.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use shoal::{Core, CoreConfig};
use shoal_agent::driver::fake::FakeDriver;
use shoal_agent::AgentConfig;
use shoal_client::{Body, ServerClient, Transport, TransportError};
use shoal_control::Clock;
use shoal_model::ids::VmssRef;
use shoal_model::records::InstanceRecord;
use shoal_store::{Event, KeyValue, MemoryStore, Revision, Store, StoreError, Txn};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub const SUB: &str = "00000000-0000-0000-0000-000000000001";
const API: &str = "api-version=2024-07-01";

/// The control plane's clock, following tokio's (paused) clock from a fixed start.
pub struct SimClock {
    start: tokio::time::Instant,
    base: jiff::Timestamp,
}

impl Clock for SimClock {
    fn now(&self) -> jiff::Timestamp {
        let elapsed = jiff::SignedDuration::try_from(self.start.elapsed()).unwrap_or_default();
        self.base.saturating_add(elapsed).unwrap_or(self.base)
    }
}

/// The server's view of the store: passes everything through until it "crashes", then
/// fails every call, as a dead process would.
pub struct Gate {
    inner: Arc<MemoryStore>,
    /// Writes left before the crash; negative means no crash planned.
    writes_left: AtomicI64,
    crashed: AtomicBool,
    /// Writes that went through.
    writes: AtomicU64,
}

impl Gate {
    fn new(inner: Arc<MemoryStore>) -> Self {
        Gate {
            inner,
            writes_left: AtomicI64::new(-1),
            crashed: AtomicBool::new(false),
            writes: AtomicU64::new(0),
        }
    }

    fn dead(&self) -> StoreError {
        StoreError::Backend("the simulated server has crashed".into())
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(self.dead());
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Gate {
    async fn get(&self, key: &str) -> shoal_store::Result<Option<KeyValue>> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> shoal_store::Result<(Vec<KeyValue>, Revision)> {
        self.check()?;
        self.inner.list(prefix).await
    }
    async fn list_part(
        &self,
        prefix: &str,
        from: &str,
        skip: usize,
        limit: usize,
    ) -> shoal_store::Result<(Vec<KeyValue>, usize, Revision)> {
        self.check()?;
        self.inner.list_part(prefix, from, skip, limit).await
    }
    async fn txn(&self, txn: Txn) -> shoal_store::Result<Revision> {
        self.check()?;
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(self.dead());
        }
        if left > 0 {
            self.writes_left.fetch_sub(1, Ordering::SeqCst);
        }
        let rev = self.inner.txn(txn).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(rev)
    }
    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> shoal_store::Result<BoxStream<'static, shoal_store::Result<Event>>> {
        self.check()?;
        self.inner.watch(prefix, after).await
    }
    async fn revision(&self) -> shoal_store::Result<Revision> {
        self.check()?;
        self.inner.revision().await
    }
}

/// One generation of the server: a core, its store gate and the tasks it owns.
struct ServerGen {
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// The agents' way to the server: the current generation's router, in process. While the
/// server is down, calls fail as a refused connection would.
#[derive(Clone)]
pub struct SimTransport {
    router: Arc<RwLock<Option<axum::Router>>>,
    /// The host's link is cut: calls fail, open bodies end with an error.
    cut: Arc<AtomicBool>,
}

#[async_trait]
impl Transport for SimTransport {
    async fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Body>, TransportError> {
        let router = self
            .router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(router) = router else {
            return Err(TransportError {
                target: "simulated server".into(),
                source: "connection refused (the simulated server is down)".into(),
            });
        };
        if self.cut.load(Ordering::SeqCst) {
            return Err(TransportError {
                target: "simulated server".into(),
                source: "connection timed out (the simulated host is cut off)".into(),
            });
        }
        let resp = router
            .oneshot(req.map(Body::from))
            .await
            .map_err(|e| TransportError {
                target: "simulated server".into(),
                source: Box::new(e),
            })?;
        let cut = self.cut.clone();
        Ok(resp.map(|body| {
            let frames = body.into_data_stream().map(move |chunk| {
                if cut.load(Ordering::SeqCst) {
                    Err(axum::Error::new("the simulated host is cut off"))
                } else {
                    chunk
                }
            });
            Body::from_stream(frames)
        }))
    }

    fn target(&self) -> &str {
        "simulated server"
    }
}

/// A simulated host: a real agent with a fake driver.
pub struct SimHost {
    pub name: String,
    pub zone: Option<String>,
    pub fault_domain: Option<u32>,
    pub driver: FakeDriver,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    dir: tempfile::TempDir,
    cut: Arc<AtomicBool>,
}

/// A host to simulate: name, zone, fault domain.
pub struct HostSpec {
    pub name: &'static str,
    pub zone: Option<&'static str>,
    pub fault_domain: Option<u32>,
}

pub fn host(name: &'static str, zone: Option<&'static str>, fault_domain: Option<u32>) -> HostSpec {
    HostSpec {
        name,
        zone,
        fault_domain,
    }
}

pub struct Sim {
    pub store: Arc<MemoryStore>,
    clock: Arc<SimClock>,
    server: tokio::sync::Mutex<Option<ServerGen>>,
    router: Arc<RwLock<Option<axum::Router>>>,
    pub hosts: Vec<SimHost>,
    blob_dir: tempfile::TempDir,
}

impl Sim {
    /// A server and one agent per host, all started; returns once every host registered.
    pub async fn start(hosts: &[HostSpec]) -> Sim {
        if let Ok(filter) = std::env::var("SIM_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(SimClock {
            start: tokio::time::Instant::now(),
            base: "2026-01-01T00:00:00Z".parse().expect("timestamp"),
        });
        let mut sim = Sim {
            store,
            clock,
            server: tokio::sync::Mutex::new(None),
            router: Arc::new(RwLock::new(None)),
            hosts: Vec::new(),
            blob_dir: tempfile::tempdir().expect("tempdir"),
        };
        sim.start_server().await;
        for h in hosts {
            let host = sim.start_host(h, FakeDriver::new(), None);
            sim.hosts.push(host);
        }
        let names: Vec<&str> = hosts.iter().map(|h| h.name).collect();
        sim.wait_until("every host registered", || async {
            let (hosts, _) = sim.store.list("host/").await.expect("list hosts");
            names
                .iter()
                .all(|n| hosts.iter().any(|h| h.key == format!("host/{n}")))
        })
        .await;
        sim
    }

    async fn start_server(&self) {
        let gate = Arc::new(Gate::new(self.store.clone()));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let core = Core::start(
            CoreConfig {
                store: gate.clone(),
                clock: self.clock.clone(),
                blob_dir: self.blob_dir.path().to_path_buf(),
                certificate_dir: self.blob_dir.path().join("certificates"),
                host_timeouts: Default::default(),
                bundles: Default::default(),
                max_capacity: 1000,
                public_ip_range: shoal_api::vnets::default_public_ip_range(),
                identity_header: None,
                page_size: 200,
                // The simulation calls the router in process as the operator: tokens and
                // roles are tested by the unit, e2e and SDK suites.
                authenticate: false,
                authority_url: None,
                tls_certificate_sha256: None,
            },
            &tracker,
            &shutdown,
        );
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = Some(core.router());
        *self.server.lock().await = Some(ServerGen {
            gate,
            shutdown,
            tracker,
        });
    }

    fn start_host(
        &self,
        spec: &HostSpec,
        driver: FakeDriver,
        dir: Option<tempfile::TempDir>,
    ) -> SimHost {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let cut = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let cfg = AgentConfig {
            host: spec.name.to_string(),
            zone: spec.zone.map(String::from),
            fault_domain: spec.fault_domain,
            dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("address"),
            stop_grace: Duration::from_secs(10),
            boot_timeout: Duration::from_secs(60),
            start_concurrency: 32,
            keep_instances: true,
            drain_timeout: Duration::from_secs(5),
            clock: self.clock.clone(),
            heartbeat_interval: Duration::from_secs(2),
            address: None,
            capacity_vcpus: None,
            capacity_memory_mb: None,
        };
        let client = ServerClient::new(Arc::new(SimTransport {
            router: self.router.clone(),
            cut: cut.clone(),
        }));
        let name = spec.name.to_string();
        tracker.spawn(shoal_agent::run(
            cfg,
            Arc::new(driver.clone()),
            client,
            shutdown.clone(),
        ));
        tracker.close();
        let _ = name;
        SimHost {
            name: spec.name.to_string(),
            zone: spec.zone.map(String::from),
            fault_domain: spec.fault_domain,
            driver,
            shutdown,
            tracker,
            dir,
            cut,
        }
    }

    fn host_index(&self, name: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h.name == name)
            .unwrap_or_else(|| panic!("no simulated host {name}"))
    }

    /// Cuts host `name` off the server (`true`) or heals it (`false`).
    pub fn cut(&self, name: &str, cut: bool) {
        self.hosts[self.host_index(name)]
            .cut
            .store(cut, Ordering::SeqCst);
    }

    /// Stops host `name`'s agent alone; its instances keep running.
    pub async fn stop_agent(&self, name: &str) {
        let h = &self.hosts[self.host_index(name)];
        h.shutdown.cancel();
        h.tracker.wait().await;
    }

    /// Starts host `name`'s agent again (same directory and driver: it adopts what runs).
    pub fn start_agent(&mut self, name: &str) {
        let i = self.host_index(name);
        let old = self.hosts.remove(i);
        let spec = HostSpec {
            name: Box::leak(old.name.clone().into_boxed_str()),
            zone: old
                .zone
                .as_deref()
                .map(|z| &*Box::leak(z.to_string().into_boxed_str())),
            fault_domain: old.fault_domain,
        };
        let host = self.start_host(&spec, old.driver.clone(), Some(old.dir));
        self.hosts.insert(i, host);
    }

    /// The server dies after `writes` more store writes (the next one fails, and so does
    /// every later call), like a `kill -9` at that point.
    pub async fn crash_server_after(&self, writes: i64) {
        if let Some(s) = self.server.lock().await.as_ref() {
            s.gate.writes_left.store(writes, Ordering::SeqCst);
        }
    }

    /// Store writes the current server generation has made so far.
    pub async fn server_writes(&self) -> u64 {
        self.server
            .lock()
            .await
            .as_ref()
            .map_or(0, |s| s.gate.writes.load(Ordering::SeqCst))
    }

    /// Whether the planned crash has happened.
    pub async fn server_crashed(&self) -> bool {
        self.server
            .lock()
            .await
            .as_ref()
            .is_some_and(|s| s.gate.crashed.load(Ordering::SeqCst))
    }

    /// Stops the current server (its tasks end) and starts a fresh one on the same store.
    pub async fn restart_server(&self) {
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(old) = self.server.lock().await.take() {
            old.gate.crashed.store(true, Ordering::SeqCst);
            old.shutdown.cancel();
            old.tracker.close();
            old.tracker.wait().await;
        }
        self.start_server().await;
    }

    /// Stops every agent (instances are kept, as `--keep-instances`) and the server.
    pub async fn stop(self) {
        for h in &self.hosts {
            h.shutdown.cancel();
        }
        for h in &self.hosts {
            h.tracker.wait().await;
        }
        if let Some(old) = self.server.lock().await.take() {
            old.shutdown.cancel();
            old.tracker.close();
            old.tracker.wait().await;
        }
    }

    /// Calls the API in process as a client would; answers (status, JSON body or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, v) = self.call_full(method, path, body).await;
        (status, v)
    }

    /// [`Sim::call`] with the answer's headers.
    pub async fn call_full(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let router = self
            .router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .expect("the server is up");
        let sep = if path.contains('?') { '&' } else { '?' };
        let uri = format!("{path}{sep}{API}");
        let mut req = http::Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).expect("json"))
            }
            None => Body::empty(),
        };
        let resp = router
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("router is infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, value)
    }

    /// Follows a long-running operation's `Azure-AsyncOperation` URL until it ends;
    /// answers the final operation body.
    pub async fn wait_operation(&self, headers: &http::HeaderMap) -> Value {
        let url = headers
            .get("azure-asyncoperation")
            .and_then(|v| v.to_str().ok())
            .expect("Azure-AsyncOperation header")
            .to_string();
        let path = url
            .find("/subscriptions/")
            .map(|i| url[i..].to_string())
            .expect("operation path");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1800);
        loop {
            let last = self.call(Method::GET, &path, None).await.1;
            if last["status"] != "InProgress" {
                return last;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out (30 simulated minutes) waiting for the operation: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The desired instance records of a set, straight from the store.
    pub async fn records(&self, rg: &str, name: &str) -> Vec<InstanceRecord> {
        let prefix = VmssRef::new(SUB, rg, name).instance_prefix();
        let (kvs, _) = self.store.list(&prefix).await.expect("list");
        kvs.iter()
            .map(|kv| serde_json::from_slice(&kv.value).expect("instance record"))
            .collect()
    }

    /// Reports an instance's health as a balancer's probes would.
    pub async fn report_health(&self, rg: &str, name: &str, id: u64, state: &str) {
        let since = shoal_control::clock::arm_time(self.clock.now());
        self.ok(
            Method::PUT,
            &format!("/shoal/v1/health/{SUB}/{rg}/{name}/{id}"),
            Some(json!({"state": state, "since": since, "observer": "sim"})),
        )
        .await;
    }

    /// The subscription's activity log, newest first.
    pub async fn activity_log(&self) -> Vec<Value> {
        let v = self
            .ok(
                Method::GET,
                &format!(
                    "/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values"
                ),
                None,
            )
            .await;
        v["value"].as_array().cloned().unwrap_or_default()
    }

    /// Like [`Sim::call`], but the call must succeed (2xx).
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!(
            status.is_success(),
            "{method} {path} answered {status}: {v}"
        );
        v
    }

    /// Waits (in simulated time, at most 30 simulated minutes) until `cond` holds.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1800);
        loop {
            if cond().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out (30 simulated minutes) waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A resource group `rg` and a process image `apps/web:1.0.0` in it.
    pub async fn group_and_image(&self, rg: &str) {
        self.ok(
            Method::PUT,
            &format!("/subscriptions/{SUB}/resourcegroups/{rg}"),
            Some(json!({"location": "local"})),
        )
        .await;
        let blob = self.upload_bundle().await;
        let base = format!(
            "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps"
        );
        self.ok(
            Method::PUT,
            &base,
            Some(json!({"location": "local", "properties": {}})),
        )
        .await;
        self.ok(
            Method::PUT,
            &format!("{base}/images/web"),
            Some(json!({"location": "local", "properties": {"osType": "Linux", "osState": "Generalized",
                "identifier": {"publisher": "shoal", "offer": "apps", "sku": "web"}}})),
        )
        .await;
        self.ok(
            Method::PUT,
            &format!("{base}/images/web/versions/1.0.0"),
            Some(json!({"location": "local", "properties": {"shoal": {
                "kind": "process", "port": 8080, "blobId": blob, "command": "./web"}}})),
        )
        .await;
    }

    /// Publishes version `version` of `apps/web` in `rg` (the same bundle).
    pub async fn publish_version(&self, rg: &str, version: &str) {
        let blob = self.upload_bundle().await;
        self.ok(
            Method::PUT,
            &format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/{version}"),
            Some(json!({"location": "local", "properties": {"shoal": {
                "kind": "process", "port": 8080, "blobId": blob, "command": "./web"}}})),
        )
        .await;
    }

    async fn upload_bundle(&self) -> String {
        let mut tar = tar::Builder::new(Vec::new());
        let data = b"#!/bin/sh\nexit 0\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(&mut header, "web", &data[..])
            .expect("tar entry");
        let bytes = tar.into_inner().expect("tar");
        let router = self
            .router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .expect("server up");
        let req = http::Request::builder()
            .method(Method::POST)
            .uri("/shoal/v1/blobs")
            .header("content-type", "application/x-tar")
            .body(Body::from(bytes))
            .expect("request");
        let resp = router.oneshot(req).await.expect("infallible");
        assert!(resp.status().is_success(), "blob upload: {}", resp.status());
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        v["blobId"].as_str().expect("blobId").to_string()
    }

    pub fn set_path(rg: &str, name: &str) -> String {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
        )
    }

    /// Creates (or replaces) a scale set of `capacity` instances of `apps/web:1.0.0`, with
    /// `extra` merged into the request body (objects merge, everything else replaces).
    pub async fn put_set(&self, rg: &str, name: &str, capacity: u32, extra: Value) -> Value {
        let image = format!(
            "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions/1.0.0"
        );
        let mut body = json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": capacity},
            "properties": {
                "upgradePolicy": {"mode": "Manual"},
                "virtualMachineProfile": {
                    "storageProfile": {"imageReference": {"id": image}},
                    "osProfile": {"computerNamePrefix": name}
                }
            }
        });
        merge(&mut body, &extra);
        self.ok(Method::PUT, &Self::set_path(rg, name), Some(body))
            .await
    }

    /// The set's instances as the API lists them (with instance views).
    pub async fn instances(&self, rg: &str, name: &str) -> Vec<Value> {
        let v = self
            .ok(
                Method::GET,
                &format!(
                    "{}/virtualMachines?$expand=instanceView",
                    Self::set_path(rg, name)
                ),
                None,
            )
            .await;
        v["value"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the set's operation-facing state has settled: `provisioningState`
    /// Succeeded and `n` running instances.
    pub async fn wait_running(&self, rg: &str, name: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1800);
        loop {
            let set = self
                .call(Method::GET, &Self::set_path(rg, name), None)
                .await
                .1;
            let instances = self.instances(rg, name).await;
            let running = instances
                .iter()
                .filter(|i| power_state(i) == Some("PowerState/running"))
                .count();
            if set["properties"]["provisioningState"] == "Succeeded"
                && running == n
                && instances.len() == n
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out (30 simulated minutes) waiting until {name} has {n} running instances.\nset: {set}\ninstances: {}",
                serde_json::to_string_pretty(&instances).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Instances the fake drivers of all hosts run right now, by host.
    pub fn running_on_hosts(&self) -> Vec<(String, String)> {
        self.hosts
            .iter()
            .flat_map(|h| {
                h.driver
                    .running()
                    .into_iter()
                    .map(|k| (h.name.clone(), k.0))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

pub fn power_state(instance: &Value) -> Option<&str> {
    instance["properties"]["instanceView"]["statuses"]
        .as_array()?
        .iter()
        .filter_map(|s| s["code"].as_str())
        .find(|c| c.starts_with("PowerState/"))
}

pub fn provisioning_state(instance: &Value) -> Option<&str> {
    instance["properties"]["instanceView"]["statuses"]
        .as_array()?
        .iter()
        .filter_map(|s| s["code"].as_str())
        .find(|c| c.starts_with("ProvisioningState/"))
}

/// Merges `extra` into `into`: objects key by key, anything else replaces.
pub fn merge(into: &mut Value, extra: &Value) {
    match (into, extra) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}
