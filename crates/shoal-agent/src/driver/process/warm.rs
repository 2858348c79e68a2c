//! Network namespaces made ahead of need: a warm pool.
//!
//! Making a namespace with its veth pair, addresses and routes costs the kernel ~1–2 ms,
//! one at a time (its rtnl lock serializes them), so a burst of 1000 instances waits
//! ≥ 1.5 s for namespaces alone. With `warm_namespaces = N`, the driver keeps up to N
//! complete namespaces ready (each ~190 KB of kernel memory), and an instance takes one
//! in microseconds; a helper thread refills the pool once allocations have paused (it
//! never competes with a burst it is meant to serve). Like AWS Auto Scaling's warm pools,
//! it is off unless configured.
//!
//! Warm namespaces outlive a crash of the agent: their allocations are listed in
//! `<root>/.warm-namespaces` (rewritten by the helper after it adds some, and after takes),
//! and the next start adopts those no instance claims (recovery runs first). A clean
//! shutdown removes them.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::net::NsAddrs;
use super::state::NetAlloc;
use crate::driver::slot::{error_chain, write_atomic};

/// The helper refills only after allocations have paused this long.
const QUIET: Duration = Duration::from_millis(300);
/// After a failed setup, the helper waits this long before trying again.
const BACKOFF: Duration = Duration::from_secs(5);

/// The pool of one namespace network ([`super::net::NsPool`]).
#[derive(Debug)]
pub struct Warm {
    target: usize,
    file: Option<PathBuf>,
    state: Mutex<WarmState>,
    wake: Condvar,
    helper: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct WarmState {
    ready: VecDeque<NetAlloc>,
    last_take: Option<Instant>,
    /// The file no longer lists what `ready` holds.
    dirty: bool,
    started: bool,
    stop: bool,
}

impl Warm {
    pub fn new(target: usize, file: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            target,
            file,
            state: Mutex::default(),
            wake: Condvar::new(),
            helper: Mutex::default(),
        })
    }

    pub fn target(&self) -> usize {
        self.target
    }

    fn lock(&self) -> MutexGuard<'_, WarmState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready namespace, if the pool has one.
    pub fn take(&self) -> Option<NetAlloc> {
        let mut st = self.lock();
        st.last_take = Some(Instant::now());
        let alloc = st.ready.pop_front()?;
        st.dirty = true;
        self.wake.notify_all();
        Some(alloc)
    }

    /// How many namespaces are ready now.
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    /// Allocations listed by a previous run of this agent (its file), to adopt or drop.
    pub fn listed(&self) -> Vec<NetAlloc> {
        let Some(file) = &self.file else {
            return Vec::new();
        };
        match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "Ignoring an unreadable list of warm network namespaces");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    /// Adds an adopted or freshly made namespace to the pool.
    pub fn put(&self, alloc: NetAlloc) {
        let mut st = self.lock();
        st.ready.push_back(alloc);
        st.dirty = true;
    }

    /// Removes the list (the pool is off, and what it held is gone).
    pub fn forget(&self) {
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Stops the helper and hands back what the pool held (for the caller to remove);
    /// the list goes too.
    pub fn drain(&self) -> Vec<NetAlloc> {
        self.lock().stop = true;
        self.wake.notify_all();
        // It finishes (and removes) at most the one namespace it is making.
        let helper = self.helper.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(helper) = helper {
            let _ = helper.join();
        }
        let mut st = self.lock();
        let left: Vec<NetAlloc> = st.ready.drain(..).collect();
        // A pool that never started (no recovery ran) has not read its list yet: the
        // namespaces it names are for the next start to adopt.
        if st.started {
            self.forget();
        }
        st.dirty = false;
        left
    }

    /// Starts the helper thread once (after recovery: adopted allocations must be
    /// marked before the pool adopts or makes any).
    pub fn start(self: &Arc<Self>, addrs: Arc<NsAddrs>) {
        if self.target == 0 {
            return;
        }
        {
            let mut st = self.lock();
            if st.started || st.stop {
                return;
            }
            st.started = true;
        }
        let warm = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("shoal-netns-warm".into())
            .spawn(move || warm.fill(&addrs));
        match spawned {
            Ok(helper) => *self.helper.lock().unwrap_or_else(|p| p.into_inner()) = Some(helper),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot start the warm namespace pool; namespaces are made as instances start")
            }
        }
    }

    /// The helper: refill whenever the pool is short and allocations have paused.
    fn fill(&self, addrs: &NsAddrs) {
        // Made since the pool was last full (announced once it is full again), and since
        // the file was last written.
        let mut made = 0usize;
        let mut unsaved = 0usize;
        loop {
            {
                let mut st = self.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    let quiet = st.last_take.is_none_or(|t| t.elapsed() >= QUIET);
                    let full = st.ready.len() >= self.target;
                    // Never during a burst of takes: the file is rewritten once it is over,
                    // outside the lock (a take must not wait for the disk).
                    if st.dirty && quiet && (full || unsaved == 0 || unsaved >= 64) {
                        let list = self.snapshot(&mut st);
                        unsaved = 0;
                        drop(st);
                        self.save(list);
                        st = self.lock();
                        continue;
                    }
                    if full && made > 0 {
                        tracing::info!(count = st.ready.len(), "Warm network namespaces ready");
                        made = 0;
                    }
                    if !full && quiet {
                        break;
                    }
                    st = self
                        .wake
                        .wait_timeout(st, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            match addrs.allocate() {
                Ok(alloc) => {
                    let mut st = self.lock();
                    if st.stop {
                        // Stopped while making it: it is nobody's.
                        if let NetAlloc::Namespace { address, netns, .. } = &alloc {
                            let _ = addrs.remove(*address, netns);
                        }
                        return;
                    }
                    st.ready.push_back(alloc);
                    st.dirty = true;
                    made += 1;
                    unsaved += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "Cannot make a warm network namespace; trying again in 5 s");
                    let st = self.lock();
                    let _ = self.wake.wait_timeout(st, BACKOFF);
                }
            }
        }
    }

    /// What the file should say now (`None` without a file); `st` counts as saved.
    fn snapshot(&self, st: &mut WarmState) -> Option<Vec<u8>> {
        st.dirty = false;
        self.file.as_ref()?;
        let list: Vec<&NetAlloc> = st.ready.iter().collect();
        serde_json::to_vec(&list).ok()
    }

    fn save(&self, list: Option<Vec<u8>>) {
        let (Some(file), Some(bytes)) = (&self.file, list) else {
            return;
        };
        if let Err(e) = write_atomic(file, &bytes) {
            tracing::warn!(file = %file.display(), error = %e, "Cannot record the warm network namespaces; a crash would leave them behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::driver::process::net::{NetworkMode, Subnet, DEFAULT_NETNS_DIR};
    use crate::driver::process::netns;

    fn names(allocs: &[NetAlloc]) -> Vec<String> {
        let mut v: Vec<String> = allocs
            .iter()
            .filter_map(|a| match a {
                NetAlloc::Namespace { netns, .. } => Some(netns.clone()),
                NetAlloc::HostPort { .. } => None,
            })
            .collect();
        v.sort();
        v
    }

    fn setup(
        file: &std::path::Path,
        target: usize,
    ) -> (Arc<Warm>, Arc<super::super::net::Network>) {
        let warm = Warm::new(target, Some(file.to_owned()));
        let journal = file.with_file_name(".netns-journal");
        let net = super::super::net::Network::setup(
            NetworkMode::Namespaces,
            1..=1,
            Subnet {
                base: Ipv4Addr::new(10, 235, 0, 0),
                prefix_len: 24,
            },
            PathBuf::from(DEFAULT_NETNS_DIR),
            false,
            Arc::clone(&warm),
            super::super::claims::Claims::open(Some(journal)),
        )
        .expect("namespace network");
        (warm, Arc::new(net))
    }

    fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn mounted(name: &str) -> bool {
        netns::exists(
            &PathBuf::from(DEFAULT_NETNS_DIR).join(name),
            &format!("sh{}", name.trim_start_matches("shoal-")),
        )
    }

    /// The pool fills, hands out whole namespaces and refills; after a crash the next
    /// run adopts what was ready (not what an instance took, not more than its size) and
    /// removes what it had made but nobody recorded; a clean stop removes the pool's.
    #[test]
    fn warm_namespaces_are_handed_out_refilled_and_survive_a_crash() {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return crate::driver::skip_or_fail(
                "warm_namespaces_are_handed_out_refilled_and_survive_a_crash",
                "network namespaces need root",
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(".warm-namespaces");

        let (warm, net) = setup(&file, 3);
        net.start_warm_and_sweep();
        wait_for("3 warm namespaces", || warm.ready() == 3);
        let taken = net.take_warm().expect("a warm namespace");
        let NetAlloc::Namespace {
            netns: taken_name, ..
        } = &taken
        else {
            panic!("not a namespace: {taken:?}");
        };
        assert!(mounted(taken_name), "the namespace handed out exists");
        wait_for("the pool refilled and recorded", || {
            warm.ready() == 3
                && names(&warm.listed())
                    == names(&warm.lock().ready.iter().cloned().collect::<Vec<_>>())
        });
        let ready_before = names(&warm.listed());
        assert!(
            !ready_before.contains(taken_name),
            "the taken one is no longer listed"
        );

        // One made for an instance whose state was never saved: the agent dies first.
        let orphan = net.allocate().expect("a namespace");
        let NetAlloc::Namespace {
            netns: orphan_name, ..
        } = &orphan
        else {
            panic!("not a namespace: {orphan:?}");
        };
        assert!(mounted(orphan_name));

        // Killed right after winning a name, before mounting anything on it: the journal
        // says it tried, an empty mount point is left. And a name it tried for that
        // another agent holds (mounted): not its to remove.
        let journal = file.with_file_name(".netns-journal");
        let mut j = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .expect("journal");
        std::io::Write::write_all(&mut j, b"?10.235.0.250\n?10.235.0.251\n").expect("write");
        let empty = PathBuf::from(DEFAULT_NETNS_DIR).join("shoal-0aeb00fa");
        std::fs::write(&empty, b"").expect("empty mount point");
        let others = netns::NetnsPlan {
            netns_path: PathBuf::from(DEFAULT_NETNS_DIR).join("shoal-0aeb00fb"),
            host_if: "sh0aeb00fb".into(),
            addresses: None,
        };
        netns::create(&others).expect("another agent's namespace");

        // A crash: the helper stops, nothing is cleaned up.
        warm.lock().stop = true;
        warm.wake.notify_all();
        std::mem::forget(net);

        // The next run adopts what was ready, up to its own (here lowered) pool size.
        let (warm2, net2) = setup(&file, 2);
        // (Recovery: the instance's state names the one it took.)
        net2.adopt(&taken);
        net2.start_warm_and_sweep();
        assert!(
            !mounted(orphan_name),
            "the namespace nothing recorded is removed at the next start"
        );
        assert!(!empty.exists(), "the empty mount point is removed");
        assert!(
            mounted("shoal-0aeb00fb"),
            "another agent's namespace is left alone"
        );
        netns::teardown(&others.netns_path, &others.host_if).expect("clean up");
        let adopted = names(&warm2.lock().ready.iter().cloned().collect::<Vec<_>>());
        assert_eq!(adopted.len(), 2);
        assert!(
            adopted.iter().all(|n| ready_before.contains(n)),
            "{adopted:?} from {ready_before:?}"
        );
        let extra: Vec<&String> = ready_before
            .iter()
            .filter(|n| !adopted.contains(n))
            .collect();
        assert!(
            !mounted(extra[0]),
            "the one beyond the pool's size is removed"
        );
        drop(net2);
        for name in &ready_before {
            assert!(!mounted(name), "{name} removed on a clean stop");
        }
        assert!(!file.exists(), "the list goes with them");
        assert!(
            mounted(taken_name),
            "the instance's namespace is not the pool's to remove"
        );
        netns::remove_mount(&PathBuf::from(DEFAULT_NETNS_DIR).join(taken_name)).expect("clean up");
    }
}
