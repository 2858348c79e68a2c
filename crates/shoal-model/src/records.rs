//! Records the control plane stores and agents exchange (Shoal's own, not ARM shapes).
//!
//! The control plane writes the *desired* state of each instance ([`InstanceRecord`]);
//! the agent of the instance's host writes what it *observed* ([`InstanceStatus`]) under
//! a separate key, so the two writers never contend. An action (restart, reimage, a new
//! model) is a counter or generation bumped in the desired record; the agent reports the
//! values it has applied, which makes every action level-triggered and idempotent.

pub use crate::keys::{
    balancer_key, blob_key, drain_ack_prefix, health_key, heartbeat_key, host_key, host_state_key,
    operation_key,
};
use serde::{Deserialize, Serialize};

use crate::arm_enum;
use crate::error::ArmError;
use crate::ids::VmssRef;
use crate::vmss::VirtualMachineScaleSet;

/// A stored scale set: the ARM model plus the control plane's bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmssRecord {
    pub vmss: VmssRef,
    /// The normalized model, including secrets (stripped when shown).
    pub model: VirtualMachineScaleSet,
    /// What instances on the latest model run; its `generation` bumps when it changes.
    pub launch: LaunchSpec,
    /// The next instance id to hand out; ids are never reused.
    pub next_instance_id: u64,
    /// Set by DELETE: instances are torn down, then the record goes.
    #[serde(default)]
    pub deleting: bool,
    /// The operation that currently decides `provisioningState`.
    #[serde(default)]
    pub operation: Option<String>,
    /// Repairs, orchestration services and other service state (later issues).
    #[serde(default)]
    pub services: serde_json::Value,
}

/// What an instance runs: the image resolved to a concrete version and the size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub generation: u64,
    /// The resolved image version id.
    pub image_id: String,
    pub image_version: String,
    /// "process" or "vm".
    pub kind: String,
    pub blob_id: String,
    pub command: String,
    pub port: u16,
    pub sku: String,
    pub vcpus: u32,
    pub memory_mb: u64,
    /// Base64, as in `osProfile.customData`.
    pub custom_data: Option<String>,
    pub computer_name_prefix: String,
    /// `scheduledEventsProfile.terminateNotificationProfile`: when set, an instance about
    /// to be deleted gets a `Terminate` scheduled event this many seconds ahead.
    #[serde(default)]
    pub terminate_notice_secs: Option<u64>,
}

arm_enum!(PowerIntent { Running = "running", Stopped = "stopped", Deallocated = "deallocated" });

/// How an instance is shielded from scale-in and set-wide actions (Azure's shape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionPolicy {
    #[serde(default)]
    pub protect_from_scale_in: bool,
    #[serde(default)]
    pub protect_from_scale_set_actions: bool,
}

/// The desired state of one instance, written by the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub vmss: VmssRef,
    pub instance_id: u64,
    /// A UUID, as Azure's `vmId`.
    pub vm_id: String,
    pub host: String,
    pub zone: Option<String>,
    pub fault_domain: u32,
    pub launch: LaunchSpec,
    pub power: PowerIntent,
    pub restart_gen: u64,
    pub reimage_gen: u64,
    pub deleting: bool,
    pub protection: ProtectionPolicy,
    pub time_created: String,
    /// Bumped each time the instance is placed again on another host (its host went
    /// Down): the same instance id, a fresh copy on the new host. An agent runs only
    /// the epoch its host is assigned; the API takes statuses only from that host.
    #[serde(default)]
    pub epoch: u64,
    /// Created by automatic zone rebalancing: the set is one over capacity until it runs,
    /// and only then does an instance of the most crowded zone leave.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebalance: bool,
}

impl InstanceRecord {
    pub fn key(&self) -> String {
        self.vmss.instance_key(self.instance_id)
    }
    pub fn status_key(&self) -> String {
        self.vmss.status_key(self.instance_id)
    }
    pub fn slug(&self) -> String {
        self.vmss.instance_slug(self.instance_id)
    }
    pub fn computer_name(&self) -> String {
        format!(
            "{}{:06}",
            self.launch.computer_name_prefix, self.instance_id
        )
    }
}

arm_enum!(InstanceState {
    Creating = "creating",
    Starting = "starting",
    Running = "running",
    Stopping = "stopping",
    Draining = "draining",
    Stopped = "stopped",
    Deallocated = "deallocated",
    Failed = "failed",
    Deleting = "deleting",
    Deleted = "deleted",
    Lost = "lost",
});

/// What an agent observed of one instance, written by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub state: InstanceState,
    pub host: String,
    /// The values of the desired record this status reflects.
    pub launch_generation: u64,
    pub restart_gen: u64,
    pub reimage_gen: u64,
    /// Where the workload answers, from the host (`address:port`).
    pub address: Option<String>,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    /// Why it is in this state, in words (e.g. the last exit, what failed).
    pub message: Option<String>,
    /// Restarts after the workload exited on its own.
    pub restarts: u32,
    /// When `state` last changed (RFC 3339).
    pub since: String,
    /// How limits and networking are enforced on this host.
    #[serde(default)]
    pub limits: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
}

impl InstanceStatus {
    /// The state the desired record asks for has been reached.
    pub fn satisfies(&self, rec: &InstanceRecord) -> bool {
        if rec.deleting {
            return self.state == InstanceState::Deleted;
        }
        let state_ok = match rec.power {
            PowerIntent::Running => self.state == InstanceState::Running,
            PowerIntent::Stopped => self.state == InstanceState::Stopped,
            PowerIntent::Deallocated => self.state == InstanceState::Deallocated,
        };
        state_ok
            && self.launch_generation == rec.launch.generation
            && self.restart_gen == rec.restart_gen
            && self.reimage_gen == rec.reimage_gen
    }

    /// The agent gave up on the instance as it is asked to be (failed starts etc.).
    pub fn failed_for(&self, rec: &InstanceRecord) -> bool {
        self.state == InstanceState::Failed
            && self.launch_generation == rec.launch.generation
            && self.restart_gen == rec.restart_gen
            && self.reimage_gen == rec.reimage_gen
    }
}

arm_enum!(OperationStatus { InProgress = "InProgress", Succeeded = "Succeeded", Failed = "Failed", Canceled = "Canceled" });

/// What an operation waits for before it completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum OperationWait {
    /// The set has `capacity` instances and every instance (or those listed) is in its
    /// desired state; sets `provisioningState` when done.
    Vmss {
        vmss: VmssRef,
        instance_ids: Option<Vec<u64>>,
    },
    /// The listed instances are gone.
    InstancesGone {
        vmss: VmssRef,
        instance_ids: Vec<u64>,
    },
    /// The set and all its instances are gone.
    VmssGone { vmss: VmssRef },
    /// The set's rolling upgrade has ended (Completed, Faulted or Cancelled): the rolling
    /// upgrade runner finishes the operation itself.
    RollingUpgrade { vmss: VmssRef },
    /// The resource group and everything in it are gone.
    GroupGone {
        subscription: String,
        resource_group: String,
    },
}

/// A long-running operation, polled through `Azure-AsyncOperation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub status: OperationStatus,
    pub start_time: String,
    pub end_time: Option<String>,
    pub error: Option<ArmError>,
    pub wait: OperationWait,
    /// Progress in words, e.g. "3 of 10 instances running".
    pub message: Option<String>,
}

/// A host an agent runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub zone: Option<String>,
    pub fault_domain: Option<u32>,
    /// Base URL of the agent's own HTTP endpoint (logs, metadata), as the server reaches it.
    pub agent_url: String,
    pub driver: String,
    pub limits: String,
    pub network: String,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub last_seen: String,
    /// Identifies the agent that registered the name (it keeps it across restarts): a
    /// second agent may not take a live host's name.
    #[serde(default)]
    pub host_id: String,
    /// No new placements (`shoal host cordon`).
    #[serde(default)]
    pub cordoned: bool,
    /// Every instance moves off (`shoal host drain`); implies cordoned.
    #[serde(default)]
    pub draining: bool,
    /// What may be placed here; `None`: the overcommitted defaults (16× the vCPUs, 4×
    /// the memory).
    #[serde(default)]
    pub capacity_vcpus: Option<u32>,
    #[serde(default)]
    pub capacity_memory_mb: Option<u64>,
    /// The host's instance subnet, when its network gives instances their own addresses.
    #[serde(default)]
    pub subnet: Option<String>,
    /// The address other hosts reach this host at (`--address`): the next hop of their
    /// routes to [`HostRecord::subnet`].
    #[serde(default)]
    pub address: Option<String>,
    /// How many instances the host can give an address (or port) of their own: the size
    /// of its instance subnet or port range. `None`: no limit known.
    #[serde(default)]
    pub max_instances: Option<u64>,
}

/// Another host whose instances this host routes to: its instance subnet through its
/// address (the heartbeat answer lists them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPeer {
    pub name: String,
    pub address: String,
    pub subnet: String,
}

/// When a host's agent last called in (the server's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub at: String,
}

arm_enum!(HostState { Ready = "Ready", NotReady = "NotReady", Down = "Down" });

/// A host's state as the controller derives it from its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStateRecord {
    pub state: HostState,
    /// When `state` last changed (RFC 3339).
    pub since: String,
    /// What happened to the host and its instances, newest last (bounded).
    #[serde(default)]
    pub events: Vec<HostEvent>,
}

/// One entry of a host's activity: a state change, instances replaced elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvent {
    pub time: String,
    pub message: String,
    /// The scale set an instance event is about (its ARM id), so the activity log of
    /// that set's subscription lists it; absent for the host's own state changes.
    #[serde(
        default,
        rename = "resourceId",
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_id: Option<String>,
}

/// Shoal's extension object of a gallery image version: `properties.shoal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVersionShoal {
    /// "process" (default) or "vm".
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Process images: the command (VM images have none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub blob_id: String,
    /// Read-only: bundle size in bytes.
    #[serde(default)]
    pub size: u64,
    /// VM images: the bundle's files the VM boots from. A VM bundle holds them at its top
    /// level under exactly these names (`kernel`, `initrd`, `disk`), as
    /// `shoal image create --kind vm` uploads them; at least a kernel or a disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// VM images with a kernel: extra kernel command line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
}

impl ImageVersionShoal {
    /// What an instance of this image runs: the command of a process image, the extra
    /// kernel command line of a VM image (`LaunchSpec::command`).
    pub fn launch_command(&self) -> &str {
        if self.kind == "vm" {
            &self.cmdline
        } else {
            &self.command
        }
    }
}

fn default_kind() -> String {
    "process".into()
}

fn default_port() -> u16 {
    8080
}

/// An uploaded bundle, stored on the server's disk under its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub id: String,
    pub size: u64,
    pub sha256: String,
    pub time_created: String,
    /// The subscription the upload counts against (its quota); bundles uploaded before
    /// subscriptions were recorded count against the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// The servers (by name) that hold the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
}

arm_enum!(HealthState { Unknown = "unknown", Initializing = "initializing", Healthy = "healthy", Unhealthy = "unhealthy" });

/// An instance's health as a balancer's probes (or the health extension) see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    pub state: HealthState,
    /// When `state` last changed (RFC 3339).
    pub since: String,
    /// Who observed it (a balancer's name, or "agent").
    pub observer: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// A balancer that fronts scale sets; agents wait for its drain acknowledgements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BalancerRecord {
    pub name: String,
    /// Store keys (`vmss/...`) of the sets it has members of.
    pub fronts: Vec<String>,
    pub last_seen: String,
}

/// A balancer's word that it sends nothing more to an instance draining since `episode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainAck {
    pub episode: String,
}
