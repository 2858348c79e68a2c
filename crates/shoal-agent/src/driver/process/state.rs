//! The per-instance state file (`<root>/<key>/state.json`): what the process driver must
//! remember about an instance across agent restarts.
//!
//! Pure format code: [`InstanceState::encode`] turns a state into bytes and
//! [`InstanceState::decode`] parses and validates them. Writing the bytes atomically
//! (temporary file + rename) is done by the shared slot runtime (`driver/slot.rs`), so a
//! crash never leaves a torn file.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use crate::driver::slot::ProcessRecord;
use crate::driver::slot::SlotState;
use crate::driver::{InstanceKey, InstanceSpec};

/// Version written into new files; files of a newer version are refused.
pub const STATE_VERSION: u32 = 1;

/// Everything the driver persists about one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    pub version: u32,
    /// The spec the instance was last provisioned, reimaged or started with.
    pub spec: InstanceSpec,
    /// The instance's main process when it was last started (cleared on a clean stop).
    pub process: Option<ProcessRecord>,
    /// The network address/port held by the instance (kept across stop, released by
    /// deallocate and destroy).
    pub net: Option<NetAlloc>,
}

/// The network identity allocated to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum NetAlloc {
    /// Host network: the workload listens on this port of the host.
    HostPort { port: u16 },
    /// Own network namespace (bind-mounted as `netns`) reached over veth `host_if`.
    Namespace {
        address: Ipv4Addr,
        gateway: Ipv4Addr,
        netns: String,
        host_if: String,
    },
}

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("State file is not valid JSON for this driver")]
    Parse(#[source] serde_json::Error),
    #[error("State file has version {0}, newer than this agent understands ({STATE_VERSION})")]
    Version(u32),
    #[error("State file names instance {found:?}, but lives in the directory of {expected:?}")]
    KeyMismatch { expected: String, found: String },
    #[error("State file holds an unusable value: {0}")]
    Invalid(&'static str),
}

impl InstanceState {
    /// A fresh state for a just-provisioned instance.
    pub fn new(spec: InstanceSpec) -> Self {
        Self {
            version: STATE_VERSION,
            spec,
            process: None,
            net: None,
        }
    }

    /// Serializes the state (pretty JSON, so an operator can read it).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no
        // custom serializers. Fall back to compact output if it somehow did.
        serde_json::to_vec_pretty(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Parses and validates a state file found in the directory of `expected_key`.
    pub fn decode(bytes: &[u8], expected_key: &str) -> Result<Self, StateError> {
        let state: InstanceState = serde_json::from_slice(bytes).map_err(StateError::Parse)?;
        if state.version > STATE_VERSION {
            return Err(StateError::Version(state.version));
        }
        if state.spec.key.0 != expected_key {
            return Err(StateError::KeyMismatch {
                expected: expected_key.to_owned(),
                found: state.spec.key.0,
            });
        }
        if let Some(p) = state.process {
            if p.pid == 0 || p.pid > i32::MAX as u32 {
                return Err(StateError::Invalid("process pid out of range"));
            }
        }
        match &state.net {
            Some(NetAlloc::HostPort { port: 0 }) => return Err(StateError::Invalid("port 0")),
            Some(NetAlloc::Namespace { netns, host_if, .. })
                if !is_safe_name(netns) || !is_safe_name(host_if) || host_if.len() > 15 =>
            {
                return Err(StateError::Invalid("network namespace or interface name"));
            }
            _ => {}
        }
        Ok(state)
    }
}

impl SlotState for InstanceState {
    fn new(spec: InstanceSpec) -> Self {
        InstanceState::new(spec)
    }
    fn spec(&self) -> &InstanceSpec {
        &self.spec
    }
    fn set_spec(&mut self, spec: InstanceSpec) {
        self.spec = spec;
    }
    fn process(&self) -> Option<ProcessRecord> {
        self.process
    }
    fn set_process(&mut self, process: Option<ProcessRecord>) {
        self.process = process;
    }
    fn encode(&self) -> std::io::Result<Vec<u8>> {
        Ok(InstanceState::encode(self))
    }
    fn decode(
        bytes: &[u8],
        key: &InstanceKey,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(InstanceState::decode(bytes, &key.0)?)
    }
}

/// Names we put on the file system or give the kernel: short, no path separators.
fn is_safe_name(name: &str) -> bool {
    is_plain_name(name, 64)
}

/// A single file name of at most `max` bytes: letters, digits, `-`, `_`, `.`, not
/// starting with `.`.
pub(super) fn is_plain_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(key: &str) -> InstanceSpec {
        InstanceSpec {
            key: InstanceKey(key.to_owned()),
            vmss: "web".into(),
            instance_id: "3".into(),
            image_dir: "/data/images/web/1.0.0".into(),
            command: "./shoal-web --flag 'x y'".into(),
            port: 8080,
            vcpus: 1,
            memory_mb: 512,
            custom_data: Some(b"hello\0\xff".to_vec()),
            metadata_endpoint: "http://127.0.0.1:7071".into(),
            env: vec![("A".into(), "b=c".into())],
        }
    }

    #[test]
    fn round_trips_every_network_kind() {
        for net in [
            None,
            Some(NetAlloc::HostPort { port: 20001 }),
            Some(NetAlloc::Namespace {
                address: Ipv4Addr::new(10, 200, 0, 7),
                gateway: Ipv4Addr::new(10, 200, 0, 1),
                netns: "shoal-0ac80007".into(),
                host_if: "sh0ac80007".into(),
            }),
        ] {
            let state = InstanceState {
                version: STATE_VERSION,
                spec: spec("sub.rg.web.3"),
                process: Some(ProcessRecord {
                    pid: 42,
                    start_time: 123_456,
                }),
                net,
            };
            let decoded = InstanceState::decode(&state.encode(), "sub.rg.web.3").expect("decodes");
            assert_eq!(decoded, state);
        }
    }

    #[test]
    fn refuses_foreign_or_future_or_hostile_files() {
        let mut state = InstanceState::new(spec("a"));
        assert!(matches!(
            InstanceState::decode(&state.encode(), "b"),
            Err(StateError::KeyMismatch { .. })
        ));
        state.version = STATE_VERSION + 1;
        assert!(matches!(
            InstanceState::decode(&state.encode(), "a"),
            Err(StateError::Version(_))
        ));
        state.version = STATE_VERSION;
        state.net = Some(NetAlloc::Namespace {
            address: Ipv4Addr::new(10, 200, 0, 7),
            gateway: Ipv4Addr::new(10, 200, 0, 1),
            netns: "../../etc".into(),
            host_if: "sh0".into(),
        });
        assert!(matches!(
            InstanceState::decode(&state.encode(), "a"),
            Err(StateError::Invalid(_))
        ));
        assert!(matches!(
            InstanceState::decode(b"{\"version\":1", "a"),
            Err(StateError::Parse(_))
        ));
        assert!(matches!(
            InstanceState::decode(b"", "a"),
            Err(StateError::Parse(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = InstanceState::decode(&bytes, "a");
        }

        #[test]
        fn round_trips_arbitrary_values(
            pid in 1u32..=i32::MAX as u32,
            start in any::<u64>(),
            port in 1u16..,
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            cmd in ".{0,40}",
            env in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
        ) {
            let mut s = spec("k");
            s.custom_data = data;
            s.command = cmd;
            s.env = env;
            let state = InstanceState {
                version: STATE_VERSION,
                spec: s,
                process: Some(ProcessRecord { pid, start_time: start }),
                net: Some(NetAlloc::HostPort { port }),
            };
            prop_assert_eq!(InstanceState::decode(&state.encode(), "k").expect("decodes"), state);
        }
    }
}
