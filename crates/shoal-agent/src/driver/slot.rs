//! The instance-slot runtime both real drivers share (process and QEMU).
//!
//! Each driver keeps what it knows about an instance in a directory of its own,
//! `<root>/<key>/`, whose state file (`state.json`) holds the spec the instance was
//! provisioned with, its main process (pid + start time) and what it holds on the host (an
//! address, a port). Nothing important lives only in memory: after the agent restarts,
//! [`recover`] rebuilds every slot from those files and adopts the processes still alive.
//!
//! This module is that plumbing, once: the table of [`Slot`]s (one async lock per
//! instance, so operations on one instance run one at a time and different instances in
//! parallel), reading and atomically writing state files, watching a main process
//! ([`Proc`]), and the order of every [`Driver`](super::Driver) operation: load the state,
//! refresh it against `/proc`, halt, release, save, remove. What differs per driver (how an
//! instance is provisioned, booted and halted, what its disk is, what it holds beside its
//! process) enters through the [`Machine`] trait. Data enters as the driver's calls and as
//! the state files found on disk; it leaves as state files, [`Running`] handles and
//! [`Recovered`] instances.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex as AsyncMutex};
use tokio::task::JoinHandle;

use super::procfs::{self, WaitEnd};
use super::{DriverError, InstanceKey, InstanceSpec, Recovered, Running, Usage};

/// The state file's name inside an instance directory.
pub const STATE_FILE: &str = "state.json";

/// Identifies a process beyond its pid: a pid is only ours when its start time (field 22
/// of `/proc/<pid>/stat`, in clock ticks since boot) matches too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub start_time: u64,
}

/// What a driver's state file holds, as far as the runtime needs to know.
pub trait SlotState: Clone + Send + Sync + 'static {
    /// A fresh state for a just-provisioned instance.
    fn new(spec: InstanceSpec) -> Self;
    fn spec(&self) -> &InstanceSpec;
    fn set_spec(&mut self, spec: InstanceSpec);
    /// The main process when it was last started (cleared when it is known to be gone).
    fn process(&self) -> Option<ProcessRecord>;
    fn set_process(&mut self, process: Option<ProcessRecord>);
    fn encode(&self) -> io::Result<Vec<u8>>;
    /// Parses and validates a state file found in the directory of `key`.
    fn decode(
        bytes: &[u8],
        key: &InstanceKey,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>>;
}

/// What the driver knows about one instance; its lock serializes operations on it.
pub struct Slot<S> {
    /// Loaded from the state file on first use.
    pub state: Option<S>,
    pub proc_: Option<Proc>,
}

impl<S> Default for Slot<S> {
    fn default() -> Self {
        Slot {
            state: None,
            proc_: None,
        }
    }
}

/// A live main process and the task waiting for it to end.
pub struct Proc {
    pid: u32,
    exited: watch::Receiver<Option<String>>,
    /// Aborted on drop; `None` for a waiter that must outlive us (it reaps a child).
    waiter: Option<JoinHandle<()>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The process itself keeps running (it is in its own session); only our waiter
        // goes. A child's `tokio::process::Child` is then reaped by tokio's orphan queue.
        if let Some(waiter) = &self.waiter {
            waiter.abort();
        }
    }
}

impl Proc {
    /// Watches a child we just started with [`launch`](super::launch); `describe` words
    /// how it ended. Its waiter reaps it even after the `Proc` is dropped (the process
    /// keeps running then, in its own session), so no zombie is left behind.
    pub fn watch_launched(
        key: &InstanceKey,
        pid: u32,
        pidfd: std::os::fd::OwnedFd,
        describe: impl FnOnce(io::Result<ExitStatus>) -> String + Send + 'static,
    ) -> Proc {
        let (tx, rx) = watch::channel(None);
        let instance = key.clone();
        tokio::spawn(async move {
            let how = describe(super::launch::wait(pidfd).await);
            tracing::debug!(%instance, pid, how = %how, "Instance process ended");
            let _ = tx.send(Some(how));
        });
        Proc {
            pid,
            exited: rx,
            waiter: None,
        }
    }

    /// Adopts a live process we did not spawn in this run (or whose waiter was lost).
    fn adopt(rec: ProcessRecord, describe: fn(WaitEnd) -> String) -> Proc {
        let (tx, rx) = watch::channel(None);
        let waiter = tokio::spawn(async move {
            let end = procfs::wait_exit(rec.pid, rec.start_time).await;
            let _ = tx.send(Some(describe(end)));
        });
        Proc {
            pid: rec.pid,
            exited: rx,
            waiter: Some(waiter),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// The [`Running`] handle a caller gets for this process, reached at `endpoint`.
    pub fn running(&self, endpoint: SocketAddr) -> Running {
        Running {
            pid: self.pid,
            endpoint,
            exited: exit_future(self.exited.clone()),
        }
    }

    /// Waits at most `timeout` for the process to end; true when it has.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.exited.clone();
        let _ = tokio::time::timeout(timeout, async {
            while rx.borrow_and_update().is_none() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.has_exited()
    }
}

/// Resolves with how the process ended, once a value is sent on `rx`.
pub fn exit_future(mut rx: watch::Receiver<Option<String>>) -> BoxFuture<'static, String> {
    async move {
        loop {
            if let Some(how) = rx.borrow_and_update().clone() {
                return how;
            }
            if rx.changed().await.is_err() {
                if let Some(how) = rx.borrow().clone() {
                    return how;
                }
                // The driver was dropped before the process ended: nothing was
                // observed, so never claim an exit.
                futures::future::pending::<()>().await;
            }
        }
    }
    .boxed()
}

/// The slots of one driver and the directory their files live in.
pub struct Slots<S> {
    root: PathBuf,
    table: Mutex<HashMap<InstanceKey, Arc<AsyncMutex<Slot<S>>>>>,
}

impl<S: SlotState> Slots<S> {
    pub fn new(root: PathBuf) -> Self {
        Slots {
            root,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The instance directory of `key` (`<root>/<key>`).
    pub fn dir(&self, key: &InstanceKey) -> PathBuf {
        self.root.join(&key.0)
    }

    /// The slot of `key`, made empty on first use.
    pub fn get(&self, key: &InstanceKey) -> Arc<AsyncMutex<Slot<S>>> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.entry(key.clone()).or_default().clone()
    }

    fn forget(&self, key: &InstanceKey) {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The state file of `key`; `None` when there is none.
    fn read(&self, key: &InstanceKey) -> Result<Option<S>, DriverError> {
        match std::fs::read(self.dir(key).join(STATE_FILE)) {
            Ok(bytes) => S::decode(&bytes, key)
                .map(Some)
                .map_err(|e| io_err(key, io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(key, e)),
        }
    }

    /// Writes the state file of `key` atomically: in place when it already exists and
    /// both versions fit in one page ([`rewrite_in_place`]), else through a temporary file.
    pub fn save(&self, key: &InstanceKey, state: &S) -> Result<(), DriverError> {
        let bytes = state.encode().map_err(|e| io_err(key, e))?;
        let path = self.dir(key).join(STATE_FILE);
        match rewrite_in_place(&path, &bytes) {
            Ok(true) => Ok(()),
            Ok(false) => write_atomic(&path, &bytes).map_err(|e| io_err(key, e)),
            Err(e) => Err(io_err(key, e)),
        }
    }

    /// The instance directories under the root whose names `valid` accepts, sorted.
    fn keys_on_disk(
        &self,
        valid: fn(&InstanceKey) -> bool,
    ) -> Result<Vec<InstanceKey>, DriverError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&InstanceKey(self.root.display().to_string()), e)),
        };
        let mut keys: Vec<InstanceKey> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(InstanceKey)
            .filter(valid)
            .collect();
        keys.sort();
        Ok(keys)
    }
}

/// What a driver adds to the runtime: how its instances are provisioned, booted, halted
/// and cleaned up. The runtime holds the slot's lock while it calls these.
#[async_trait]
pub trait Machine: Send + Sync + 'static {
    type State: SlotState;
    /// What an instance is called in log lines ("instance", "VM"; tests look for them).
    const NOUN: &'static str;
    /// How a main process is named in messages ("pid", "QEMU pid").
    const PID_LABEL: &'static str;

    fn slots(&self) -> &Slots<Self::State>;

    /// Whether `key` is usable as an instance directory name.
    fn valid_key(key: &InstanceKey) -> bool;

    /// How long `destroy` and `reimage` let a running instance stop.
    fn destroy_grace(&self) -> Duration;

    /// A state file was read: claim again what it holds (an address, a port).
    fn claim(&self, state: &Self::State);

    /// How the end of an adopted process is told.
    fn adopted_exit(end: WaitEnd) -> String;

    /// The instance's main process is gone: clean up what it may have left behind.
    fn process_gone(&self, _key: &InstanceKey, _process: ProcessRecord) {}

    /// Creates the instance's directory, state file and disk unless they exist, and
    /// records `spec` (see [`Machine::record_spec`]).
    async fn provision(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<Self::State>,
    ) -> Result<(), DriverError>;

    /// Boots the instance in `slot`, known not to be running, and records its process.
    async fn boot(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<Self::State>,
    ) -> Result<Running, DriverError>;

    /// Ends the running process `p` (gently, then by force after `grace`); an error
    /// leaves it in its slot.
    async fn halt(&self, key: &InstanceKey, p: &Proc, grace: Duration) -> Result<(), DriverError>;

    /// Runs after a stop, whether or not anything was running (e.g. removes sockets).
    fn halted(&self, _key: &InstanceKey) -> Result<(), DriverError> {
        Ok(())
    }

    /// Frees the address or port `state` holds (deallocate, destroy); true if it held one.
    async fn release(
        &self,
        key: &InstanceKey,
        state: &mut Self::State,
    ) -> Result<bool, DriverError>;

    /// Removes the instance's disk, so the next provision makes a fresh one.
    async fn remove_disk(&self, key: &InstanceKey) -> Result<(), DriverError>;

    /// Removes what the instance holds outside its directory (e.g. its cgroups).
    async fn remove_outside(&self, _key: &InstanceKey) {}

    /// Where a running instance with `state` is reached from this host.
    fn endpoint(&self, state: &Self::State) -> Option<SocketAddr>;

    /// Resource usage of the running instance whose main process is `pid`.
    fn usage(&self, key: &InstanceKey, state: &Self::State, pid: u32) -> Usage;

    /// Loads the state file into `slot` if not done yet; `Ok(false)` when there is none.
    fn load(&self, key: &InstanceKey, slot: &mut Slot<Self::State>) -> Result<bool, DriverError> {
        if slot.state.is_some() {
            return Ok(true);
        }
        let Some(state) = self.slots().read(key)? else {
            return Ok(false);
        };
        self.claim(&state);
        slot.state = Some(state);
        Ok(true)
    }

    /// Brings `slot.proc_` in line with reality: drops a waiter whose process ended, and
    /// adopts a live process named by the state file (after an agent restart).
    fn refresh(&self, slot: &mut Slot<Self::State>) {
        if slot.proc_.as_ref().is_some_and(Proc::has_exited) {
            slot.proc_ = None;
            if let Some(st) = slot.state.as_mut() {
                if let Some(rec) = st.process() {
                    st.set_process(None);
                    self.process_gone(&st.spec().key, rec);
                }
            }
        }
        if slot.proc_.is_some() {
            return;
        }
        let Some(st) = slot.state.as_mut() else {
            return;
        };
        let Some(rec) = st.process() else { return };
        if procfs::is_same_alive(rec.pid, rec.start_time) {
            slot.proc_ = Some(Proc::adopt(rec, Self::adopted_exit));
        } else {
            st.set_process(None);
            self.process_gone(&st.spec().key, rec);
        }
    }

    /// Creates the instance directory and records `spec` in the state file (first, so a
    /// crash half-way through provisioning leaves an instance [`recover`] knows, and a
    /// later provision finishes).
    fn record_spec(
        &self,
        spec: &InstanceSpec,
        slot: &mut Slot<Self::State>,
    ) -> Result<(), DriverError> {
        let key = &spec.key;
        self.load(key, slot)?;
        std::fs::create_dir_all(self.slots().dir(key)).map_err(|e| io_err(key, e))?;
        if slot.state.as_ref().is_none_or(|st| st.spec() != spec) {
            let mut state = slot
                .state
                .clone()
                .unwrap_or_else(|| Self::State::new(spec.clone()));
            state.set_spec(spec.clone());
            self.slots().save(key, &state)?;
            slot.state = Some(state);
        }
        Ok(())
    }
}

/// [`Driver::provision`](super::Driver::provision).
pub async fn provision<M: Machine>(m: &M, spec: &InstanceSpec) -> Result<(), DriverError> {
    let slot = m.slots().get(&spec.key);
    let mut slot = slot.lock().await;
    m.provision(spec, &mut slot).await
}

/// [`Driver::start`](super::Driver::start): fails if the instance is already running.
pub async fn start<M: Machine>(m: &M, spec: &InstanceSpec) -> Result<Running, DriverError> {
    let key = &spec.key;
    if !M::valid_key(key) {
        return Err(DriverError::Start {
            key: key.clone(),
            reason: "the instance key is not a valid file name".into(),
        });
    }
    let slot = m.slots().get(key);
    let mut slot = slot.lock().await;
    m.load(key, &mut slot)?;
    m.refresh(&mut slot);
    if let Some(p) = &slot.proc_ {
        return Err(DriverError::Start {
            key: key.clone(),
            reason: format!("it is already running ({} {})", M::PID_LABEL, p.pid),
        });
    }
    m.boot(spec, &mut slot).await
}

/// [`Driver::stop`](super::Driver::stop).
pub async fn stop<M: Machine>(
    m: &M,
    key: &InstanceKey,
    grace: Duration,
    release_address: bool,
) -> Result<(), DriverError> {
    if !M::valid_key(key) {
        return Ok(());
    }
    let slot = m.slots().get(key);
    let mut slot = slot.lock().await;
    m.load(key, &mut slot)?;
    stop_locked(m, key, &mut slot, grace, release_address).await
}

/// Stops the instance in `slot` (if running) and, with `release_address`, frees what it
/// holds; the state file then says so.
async fn stop_locked<M: Machine>(
    m: &M,
    key: &InstanceKey,
    slot: &mut Slot<M::State>,
    grace: Duration,
    release_address: bool,
) -> Result<(), DriverError> {
    m.refresh(slot);
    if let Some(p) = slot.proc_.take() {
        if let Err(e) = m.halt(key, &p, grace).await {
            slot.proc_ = Some(p);
            return Err(e);
        }
    }
    m.halted(key)?;
    let Some(state) = slot.state.as_mut() else {
        return Ok(());
    };
    let mut changed = state.process().is_some();
    state.set_process(None);
    if release_address && m.release(key, state).await? {
        changed = true;
    }
    if changed {
        let state = state.clone();
        m.slots().save(key, &state)?;
    }
    Ok(())
}

/// [`Driver::reimage`](super::Driver::reimage): stop, drop the disk, provision afresh.
pub async fn reimage<M: Machine>(m: &M, spec: &InstanceSpec) -> Result<(), DriverError> {
    let key = &spec.key;
    let slot = m.slots().get(key);
    let mut slot = slot.lock().await;
    m.load(key, &mut slot)?;
    stop_locked(m, key, &mut slot, m.destroy_grace(), false).await?;
    // Without a disk, provisioning makes a fresh copy (a crash in between leaves no disk,
    // and the next provision or start makes one again).
    m.remove_disk(key).await?;
    m.provision(spec, &mut slot).await
}

/// [`Driver::destroy`](super::Driver::destroy): stop, release, remove everything.
pub async fn destroy<M: Machine>(m: &M, key: &InstanceKey) -> Result<(), DriverError> {
    if !M::valid_key(key) {
        return Ok(());
    }
    let slot_ref = m.slots().get(key);
    let mut slot = slot_ref.lock().await;
    match m.load(key, &mut slot) {
        Ok(_) => stop_locked(m, key, &mut slot, m.destroy_grace(), true).await?,
        // An unreadable state file names no process or address we could clean up; the
        // directory still goes.
        Err(e) => {
            tracing::warn!(instance = %key, error = %error_chain(&e), "Destroying {} {} whose state is unreadable", article(M::NOUN), M::NOUN)
        }
    }
    m.remove_outside(key).await;
    match tokio::fs::remove_dir_all(m.slots().dir(key)).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(key, e)),
        _ => {}
    }
    slot.state = None;
    drop(slot);
    m.slots().forget(key);
    Ok(())
}

/// [`Driver::recover`](super::Driver::recover): every instance directory with a readable
/// state file, its live process adopted.
pub async fn recover<M: Machine>(m: &M) -> Result<Vec<Recovered>, DriverError> {
    let mut found = Vec::new();
    for key in m.slots().keys_on_disk(M::valid_key)? {
        let slot = m.slots().get(&key);
        let mut slot = slot.lock().await;
        match m.load(&key, &mut slot) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(instance = %key, "{} directory without a state file; leaving it alone", capitalized(M::NOUN));
                continue;
            }
            Err(e) => {
                tracing::warn!(instance = %key, error = %error_chain(&e), "Skipping {} {} with an unreadable state file", article(M::NOUN), M::NOUN);
                continue;
            }
        }
        let had_process = slot.state.as_ref().is_some_and(|s| s.process().is_some());
        m.refresh(&mut slot);
        let Some(state) = slot.state.clone() else {
            continue;
        };
        if had_process && state.process().is_none() {
            m.slots().save(&key, &state)?;
        }
        let running = match (&slot.proc_, m.endpoint(&state)) {
            (Some(p), Some(endpoint)) => Some(p.running(endpoint)),
            _ => None,
        };
        if running.is_some() {
            tracing::info!(instance = %key, "Adopting a running {}", M::NOUN);
        }
        found.push(Recovered {
            key,
            spec: state.spec().clone(),
            running,
        });
    }
    Ok(found)
}

/// [`Driver::usage`](super::Driver::usage): `None` unless the instance is running.
pub async fn usage<M: Machine>(m: &M, key: &InstanceKey) -> Result<Option<Usage>, DriverError> {
    if !M::valid_key(key) {
        return Ok(None);
    }
    let slot = m.slots().get(key);
    let mut slot = slot.lock().await;
    if !m.load(key, &mut slot)? {
        return Ok(None);
    }
    m.refresh(&mut slot);
    match (&slot.proc_, &slot.state) {
        (Some(p), Some(state)) => Ok(Some(m.usage(key, state, p.pid))),
        _ => Ok(None),
    }
}

/// The state of `key` as last loaded or saved (loading it if needed); `None` when there
/// is none or it is unreadable.
pub async fn state_of<M: Machine>(m: &M, key: &InstanceKey) -> Option<M::State> {
    let slot = m.slots().get(key);
    let mut slot = slot.lock().await;
    m.load(key, &mut slot).ok()?;
    slot.state.clone()
}

/// "an" before a vowel, else "a" (log lines name an instance or a VM).
fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn capitalized(noun: &str) -> String {
    let mut c = noun.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

pub fn io_err(key: &InstanceKey, source: io::Error) -> DriverError {
    DriverError::Io {
        key: key.clone(),
        source,
    }
}

/// An error and its sources on one line ("a: b: c"), for log lines and reasons.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The largest file [`rewrite_in_place`] rewrites: one page, which one `write` replaces
/// whole (the kernel checks for a fatal signal only between pages).
const IN_PLACE_MAX: usize = 4096;

/// Replaces the contents of the existing file `path` with `bytes` (JSON) by one `pwrite`
/// at offset 0, padded with spaces to the old length so the file is never short and no
/// old byte is left after the document (JSON ignores trailing whitespace). Returns
/// `Ok(false)`, having written nothing, when the file does not exist or either version is
/// longer than [`IN_PLACE_MAX`]; then the caller uses [`write_atomic`].
///
/// Why not always a temporary file and a rename: each such save allocates an inode and
/// frees one, and on ext4 without a journal every allocation scans the group's recently
/// freed inodes (`recently_deleted`); during a 1000-instance scale-out that scan was the
/// largest item of the server's profile. A process killed mid-save leaves the old or the
/// new document, as with a rename; like the rename (neither is synced), a power loss may
/// leave something else.
pub fn rewrite_in_place(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let old_len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    if old_len.max(bytes.len()) > IN_PLACE_MAX {
        return Ok(false);
    }
    let mut page = bytes.to_vec();
    page.resize(old_len.max(bytes.len()), b' ');
    let written = file.write_at(&page, 0)?;
    if written != page.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write rewriting a state file in place",
        ));
    }
    Ok(true)
}

/// `FS_TOPDIR_FL` of `chattr +T` (not in the `libc` crate).
const FS_TOPDIR_FL: libc::c_long = 0x0002_0000;

/// Asks the file system to spread the directories made in `root` (one per instance) over
/// its block groups, as it does for top-level directories (`chattr +T`, ext2/3/4 only;
/// elsewhere nothing happens).
///
/// Why: otherwise ext4 puts every instance directory, and so every file of every
/// instance, in the block group of `root`. Without a journal, each inode allocation scans
/// its group's recently freed inodes (`recently_deleted`, up to 6 minutes back), so after
/// a scale-in that one group made each new file cost 200-300 µs instead of ~10 µs
/// (measured here, 10 000 files; in a 1000-instance scale-out the scan was the largest
/// item of the server's profile). A failure is only logged: this is a placement hint.
pub fn spread_subdirs(root: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(dir) = std::fs::File::open(root) else {
        return;
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one long through a valid pointer
    // on a descriptor we own.
    let rc = unsafe {
        if libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0 {
            -1
        } else if flags & FS_TOPDIR_FL != 0 {
            0
        } else {
            flags |= FS_TOPDIR_FL;
            libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags)
        }
    };
    if rc != 0 {
        tracing::debug!(root = %root.display(), error = %io::Error::last_os_error(), "Cannot mark a directory to spread its subdirectories (not ext4?)");
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::process::state::InstanceState;
    use std::os::unix::fs::MetadataExt;

    fn spec(key: &InstanceKey, custom_data: usize) -> InstanceSpec {
        InstanceSpec {
            key: key.clone(),
            vmss: "web".into(),
            instance_id: "3".into(),
            image_dir: "/data/images/web".into(),
            command: "./shoal-web".into(),
            port: 8080,
            vcpus: 1,
            memory_mb: 128,
            custom_data: (custom_data > 0).then(|| vec![7; custom_data]),
            metadata_endpoint: "http://127.0.0.1:7071".into(),
            env: Vec::new(),
        }
    }

    #[test]
    fn every_save_reads_back_as_the_last_state_whatever_its_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let slots: Slots<InstanceState> = Slots::new(tmp.path().to_owned());
        let key = InstanceKey("sub.rg.web.3".into());
        std::fs::create_dir(slots.dir(&key)).expect("mkdir");
        let file = slots.dir(&key).join(STATE_FILE);

        let mut state = InstanceState::new(spec(&key, 0));
        slots.save(&key, &state).expect("first save");
        let inode = std::fs::metadata(&file).expect("state file").ino();
        // Longer, then shorter: the shorter one must not keep the longer one's tail.
        for (pid, data) in [(4_000_000, 150), (1, 0), (42, 40), (43, 0)] {
            state.spec = spec(&key, data);
            state.process = Some(ProcessRecord {
                pid,
                start_time: 99,
            });
            slots.save(&key, &state).expect("save");
            assert_eq!(slots.read(&key).expect("read"), Some(state.clone()));
        }
        // Small states were rewritten in place: no inode allocated per save.
        assert_eq!(std::fs::metadata(&file).expect("state").ino(), inode);

        // Too big for one page: written through a temporary file, and read back.
        state.spec = spec(&key, 10_000);
        slots.save(&key, &state).expect("big save");
        assert_eq!(slots.read(&key).expect("read"), Some(state.clone()));
        state.spec = spec(&key, 0);
        slots.save(&key, &state).expect("small again");
        assert_eq!(slots.read(&key).expect("read"), Some(state));
    }

    #[test]
    fn a_directory_spreads_its_subdirectories_where_the_fs_allows() {
        use std::os::fd::AsRawFd;
        let tmp = tempfile::tempdir().expect("tempdir");
        spread_subdirs(tmp.path());
        spread_subdirs(tmp.path()); // Idempotent, and silent on other file systems.
        let dir = std::fs::File::open(tmp.path()).expect("open");
        let mut flags: libc::c_long = 0;
        // SAFETY: FS_IOC_GETFLAGS writes one long through a valid pointer.
        if unsafe { libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
            eprintln!("SKIPPED: the file system of the temporary directory has no inode flags");
            return;
        }
        assert_ne!(flags & FS_TOPDIR_FL, 0, "chattr +T set");
        // Directories and files below it work as before.
        let sub = tmp.path().join("a.b.c.1");
        std::fs::create_dir(&sub).expect("mkdir");
        write_atomic(&sub.join("state.json"), b"{}").expect("write");
        assert_eq!(std::fs::read(sub.join("state.json")).expect("read"), b"{}");
    }
}
