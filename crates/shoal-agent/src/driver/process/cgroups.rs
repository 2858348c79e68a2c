//! CPU and memory limits with cgroups, v2 (unified) or v1 (cpu, cpuacct, memory).
//!
//! Each instance gets `<parent>/<key>` (parent `shoal` by default) in every hierarchy it
//! needs, with a CPU quota of `vcpus × period` and a memory limit of `memory_mb`. The
//! child joins it before `exec` by writing `0` ("myself") into its `cgroup.procs` files
//! (see [`Limits::procs_files`] and `driver::launch`), so the workload never runs outside
//! its limits. Usage is read back from the same files.
//!
//! When no hierarchy is writable (no root, read-only `/sys/fs/cgroup`, a v2 tree whose
//! controllers cannot be delegated), [`Cgroups::detect`] says why and the driver reports
//! it in `Capabilities::limits` instead of failing.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CPU_PERIOD_US: u64 = 100_000;

/// Where (and whether) this host lets the driver enforce limits.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// Unified hierarchy; `parent` is e.g. `/sys/fs/cgroup/shoal`.
    V2 { parent: PathBuf },
    /// Legacy hierarchies; each is the parent directory in that controller's mount.
    V1 {
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
    /// Limits are not enforced, with the reason.
    Unavailable { why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("Cannot create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot write {file}")]
    Write {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Per-instance cgroup directories, one per hierarchy in use.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Finds a writable hierarchy and creates `parent` in it.
    pub fn detect(parent: &str) -> Self {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").exists() {
            return detect_v2(root, parent);
        }
        let mounts = match fs::read_to_string("/proc/self/mountinfo") {
            Ok(m) => m,
            Err(e) => {
                return Cgroups::Unavailable {
                    why: format!("not enforced: cannot read /proc/self/mountinfo ({e})"),
                }
            }
        };
        let find = |controller: &str| -> Option<PathBuf> {
            let mount = v1_mount(&mounts, controller)?;
            let dir = mount.join(parent);
            match fs::create_dir_all(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cgroup v1 hierarchy not writable");
                    None
                }
            }
        };
        let (cpu, cpuacct, memory) = (find("cpu"), find("cpuacct"), find("memory"));
        if cpu.is_none() && memory.is_none() {
            return Cgroups::Unavailable {
                why: "not enforced: no writable cgroup hierarchy (cgroup v2 at /sys/fs/cgroup, or v1 cpu/memory); run the agent as root".to_owned(),
            };
        }
        // Where cpu and cpuacct share one mount, one directory serves both.
        let cpuacct = if cpuacct == cpu { None } else { cpuacct };
        Cgroups::V1 {
            cpu,
            cpuacct,
            memory,
        }
    }

    /// The sentence for `Capabilities::limits`.
    pub fn describe(&self) -> String {
        match self {
            Cgroups::V2 { .. } => "cgroup v2".to_owned(),
            Cgroups::V1 { cpu, memory, .. } => match (cpu, memory) {
                (Some(_), Some(_)) => "cgroup v1".to_owned(),
                (Some(_), None) => "cgroup v1 (cpu only: memory hierarchy not writable)".to_owned(),
                _ => "cgroup v1 (memory only: cpu hierarchy not writable)".to_owned(),
            },
            Cgroups::Unavailable { why } => why.clone(),
        }
    }

    pub fn enforced(&self) -> bool {
        !matches!(self, Cgroups::Unavailable { .. })
    }

    /// The instance's directories (whether or not they exist yet).
    pub fn limits_for(&self, key: &str) -> Limits {
        let dirs = match self {
            Cgroups::V2 { parent } => vec![parent.join(key)],
            Cgroups::V1 {
                cpu,
                cpuacct,
                memory,
            } => [cpu, cpuacct, memory]
                .into_iter()
                .flatten()
                .map(|p| p.join(key))
                .collect(),
            Cgroups::Unavailable { .. } => Vec::new(),
        };
        Limits { dirs }
    }

    /// Creates (or updates) the instance's cgroups with the size's limits.
    pub fn apply(&self, key: &str, vcpus: u32, memory_mb: u64) -> Result<Limits, CgroupError> {
        let limits = self.limits_for(key);
        let mut fresh = true;
        for dir in &limits.dirs {
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fresh = false,
                Err(source) => {
                    return Err(CgroupError::Create {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        let quota = (vcpus > 0).then(|| u64::from(vcpus) * CPU_PERIOD_US);
        let mem = (memory_mb > 0).then(|| memory_mb.saturating_mul(1024 * 1024));
        match self {
            Cgroups::V2 { parent } => {
                let dir = parent.join(key);
                let cpu_max = match quota {
                    Some(q) => format!("{q} {CPU_PERIOD_US}"),
                    None => format!("max {CPU_PERIOD_US}"),
                };
                write_file(&dir.join("cpu.max"), &cpu_max)?;
                write_file(
                    &dir.join("memory.max"),
                    &mem.map_or("max".to_owned(), |m| m.to_string()),
                )?;
                // Without swap accounting a memory-capped workload could swap instead.
                let _ = write_file(&dir.join("memory.swap.max"), "0");
            }
            Cgroups::V1 { cpu, memory, .. } => {
                if let Some(cpu) = cpu {
                    let dir = cpu.join(key);
                    // A new cgroup has the kernel's default period, which is ours (each
                    // write of it recomputes the group's bandwidth: not free at 1000).
                    if !fresh {
                        write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    }
                    write_file(
                        &dir.join("cpu.cfs_quota_us"),
                        &quota.map_or("-1".to_owned(), |q| q.to_string()),
                    )?;
                }
                if let Some(memory) = memory {
                    let dir = memory.join(key);
                    write_file(
                        &dir.join("memory.limit_in_bytes"),
                        &mem.map_or("-1".to_owned(), |m| m.to_string()),
                    )?;
                }
            }
            Cgroups::Unavailable { .. } => {}
        }
        Ok(limits)
    }

    /// CPU time (ns) and memory (bytes) of the instance's cgroup, when readable.
    pub fn usage(&self, key: &str) -> Option<(u64, u64)> {
        match self {
            Cgroups::V2 { parent } => {
                let dir = parent.join(key);
                let mut buf = [0u8; 8192];
                let usec = stat_value(&read_text(&dir.join("cpu.stat"), &mut buf)?, "usage_usec")?;
                let current: u64 = read_u64(&dir.join("memory.current"))?;
                let inactive = read_text(&dir.join("memory.stat"), &mut buf)
                    .and_then(|s| stat_value(&s, "inactive_file"))
                    .unwrap_or(0);
                Some((usec.saturating_mul(1000), current.saturating_sub(inactive)))
            }
            Cgroups::V1 {
                cpu,
                cpuacct,
                memory,
            } => {
                let acct = cpuacct.as_ref().or(cpu.as_ref())?;
                let cpu_ns = read_u64(&acct.join(key).join("cpuacct.usage"))?;
                let mem = memory
                    .as_ref()
                    .and_then(|m| {
                        let dir = m.join(key);
                        let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
                        let inactive = read_text(&dir.join("memory.stat"), &mut [0u8; 8192])
                            .and_then(|s| stat_value(&s, "total_inactive_file"))
                            .unwrap_or(0);
                        Some(usage.saturating_sub(inactive))
                    })
                    .unwrap_or(0);
                Some((cpu_ns, mem))
            }
            Cgroups::Unavailable { .. } => None,
        }
    }

    /// The same hierarchies under another parent (e.g. the one an older agent used); its
    /// directories are not created.
    pub fn with_parent(&self, parent: &str) -> Cgroups {
        let swap = |p: &PathBuf| p.with_file_name(parent);
        match self {
            Cgroups::V2 { parent: p } => Cgroups::V2 { parent: swap(p) },
            Cgroups::V1 {
                cpu,
                cpuacct,
                memory,
            } => Cgroups::V1 {
                cpu: cpu.as_ref().map(swap),
                cpuacct: cpuacct.as_ref().map(swap),
                memory: memory.as_ref().map(swap),
            },
            Cgroups::Unavailable { why } => Cgroups::Unavailable { why: why.clone() },
        }
    }

    /// Moves instance `key` out of `old`'s cgroups into its own here (made with the
    /// size's limits) and removes `old`'s directories, so an instance an older agent
    /// started under another parent keeps its limits and is found where this agent
    /// looks. Only when `leader` (the instance's recorded process) is among their
    /// processes: a directory of the same name that holds someone else's is left alone.
    /// Returns how many processes moved.
    pub fn adopt_from(
        &self,
        old: &Cgroups,
        key: &str,
        leader: Option<u32>,
        vcpus: u32,
        memory_mb: u64,
    ) -> Result<usize, CgroupError> {
        let before = old.limits_for(key);
        let found: Vec<&PathBuf> = before.dirs.iter().filter(|d| d.is_dir()).collect();
        if found.is_empty() {
            return Ok(0);
        }
        let pids = before.pids();
        if !pids.is_empty() {
            if !leader.is_some_and(|l| pids.contains(&l)) {
                return Ok(0);
            }
            let limits = self.apply(key, vcpus, memory_mb)?;
            for procs in limits.procs_files() {
                for pid in &pids {
                    match fs::write(&procs, pid.to_string()) {
                        Ok(()) => {}
                        // Gone meanwhile: nothing to move.
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                        Err(source) => {
                            return Err(CgroupError::Write {
                                file: procs,
                                source,
                            })
                        }
                    }
                }
            }
        }
        for dir in found {
            if let Err(e) = fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "Cannot remove an older agent's instance cgroup");
            }
        }
        Ok(pids.len())
    }

    /// Sends SIGKILL to every process still in the instance's cgroups (stragglers that
    /// left the process group), then removes the directories. Missing ones are fine.
    pub async fn remove(&self, key: &str) {
        let limits = self.limits_for(key);
        for dir in &limits.dirs {
            for attempt in 0..50 {
                for pid in pids_in(dir) {
                    let _ = super::procfs::kill_pid(pid, libc::SIGKILL);
                }
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if attempt == 49 => {
                        tracing::warn!(dir = %dir.display(), error = %e, "Cannot remove an instance cgroup");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    }
}

impl Limits {
    /// The `cgroup.procs` file of each of the instance's cgroups, for the child to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Every pid that joined the instance's cgroups, read from the first hierarchy only:
    /// a new process joins them in `dirs` order (see [`Self::procs_files`]), so any live
    /// process of the instance's is in the first. One read instead of three per start.
    pub fn joined_pids(&self) -> Vec<u32> {
        self.dirs.first().map(|d| pids_in(d)).unwrap_or_default()
    }

    /// Every pid in the instance's cgroups.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.dirs.iter().flat_map(|d| pids_in(d)).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

fn pids_in(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn detect_v2(root: &Path, parent: &str) -> Cgroups {
    let dir = root.join(parent);
    let setup = || -> io::Result<()> {
        fs::create_dir_all(&dir)?;
        let want = ["cpu", "memory"];
        let available = fs::read_to_string(root.join("cgroup.controllers"))?;
        for c in want {
            if !available.split_whitespace().any(|a| a == c) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("controller {c} is not available"),
                ));
            }
        }
        for d in [root, dir.as_path()] {
            let enabled = fs::read_to_string(d.join("cgroup.subtree_control"))?;
            for c in want {
                if !enabled.split_whitespace().any(|a| a == c) {
                    fs::OpenOptions::new()
                        .write(true)
                        .open(d.join("cgroup.subtree_control"))?
                        .write_all(format!("+{c}").as_bytes())?;
                }
            }
        }
        Ok(())
    };
    match setup() {
        Ok(()) => Cgroups::V2 { parent: dir },
        Err(e) => Cgroups::Unavailable {
            why: format!(
                "not enforced: cgroup v2 at {} is not usable ({e})",
                dir.display()
            ),
        },
    }
}

/// The mount point of the v1 hierarchy carrying `controller`, from `/proc/self/mountinfo`.
pub fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split_whitespace();
        if r.next()? != "cgroup" {
            return None;
        }
        let super_opts = r.nth(1)?;
        if !super_opts.split(',').any(|o| o == controller) {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(mount_point))
    })
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        file: path.to_owned(),
        source,
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    read_text(path, &mut [0u8; 64])?.trim().parse().ok()
}

/// A cgroup file's text, read with one `read(2)` into `buf` (the kernel generates such a
/// file whole at each read): `fs::read_to_string` also asks the file's size and reads
/// again until it sees the end, and the metrics loop reads three such files of every
/// instance every second (over half of an idle agent's CPU with 1000 instances). A file
/// longer than `buf` is read on to its end.
fn read_text<'a>(path: &Path, buf: &'a mut [u8]) -> Option<std::borrow::Cow<'a, str>> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    let n = file.read(buf).ok()?;
    if n < buf.len() {
        return std::str::from_utf8(&buf[..n])
            .ok()
            .map(std::borrow::Cow::Borrowed);
    }
    let mut bytes = buf.to_vec();
    file.read_to_end(&mut bytes).ok()?;
    String::from_utf8(bytes).ok().map(std::borrow::Cow::Owned)
}

fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_read_whole_whatever_their_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            fs::write(&path, text).expect("write");
            path
        };
        assert_eq!(read_u64(&file("usage", "123456789\n")), Some(123_456_789));
        assert_eq!(read_u64(&file("empty", "")), None);
        // Longer than the buffer, and exactly its length: read on to the end.
        let long: String = (0..200).map(|i| format!("key{i} {i}\n")).collect();
        let path = file("memory.stat", &long);
        for size in [16, long.len(), 8192] {
            let mut buf = vec![0u8; size];
            let text = read_text(&path, &mut buf).expect("read");
            assert_eq!(text, long, "buffer of {size} bytes");
            assert_eq!(stat_value(&text, "key199"), Some(199));
        }
        assert!(read_text(&dir.path().join("missing"), &mut [0u8; 8]).is_none());
    }

    #[test]
    fn finds_v1_mounts_including_shared_ones() {
        let info = "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n\
                    31 25 0:27 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n\
                    32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            v1_mount(info, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            v1_mount(info, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            v1_mount(info, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(v1_mount(info, "pids"), None);
    }

    #[test]
    fn reads_stat_values() {
        assert_eq!(
            stat_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
        assert_eq!(
            stat_value("total_inactive_file 4096\n", "inactive_file"),
            None
        );
    }
}
