//! What the agent has applied of each instance's desired record, kept on disk so a
//! restarted agent neither repeats nor forgets an action.
//!
//! One append-only file for all instances, `<dir>/applied.log`: a save appends one line
//! (`{"k":<instance>,"a":<applied>}`), a removal one line without `"a"`; the last line of
//! an instance wins. A save is one `write(2)`: no file or directory per instance, so a
//! 1000-instance scale-out allocates no inodes for its notes (on ext4 without a journal,
//! inode allocation after a scale-in scans the recently freed ones: see `slot.rs`). The
//! file is rewritten with only the live notes once it holds many times more lines than
//! there are instances. A line cut short by a crash is ignored (it was the last one, and
//! its action is repeated or reported again after the restart).
//!
//! Older agents kept a file per instance (`<dir>/<key>.json`, then
//! `<dir>/<key>/applied.json`): read once at start, written into the log, removed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::driver::slot::write_atomic;
use crate::driver::InstanceKey;

/// What was applied to one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub provisioned: bool,
    pub launch_generation: u64,
    pub restart_gen: u64,
    pub reimage_gen: u64,
}

#[derive(Serialize, Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    k: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Applied>,
}

/// The notes of every instance of this agent.
pub struct AppliedLog {
    path: PathBuf,
    state: Mutex<LogState>,
}

struct LogState {
    /// Open for appending; `None` when the file cannot be written (said once).
    file: Option<File>,
    live: HashMap<String, Applied>,
    /// Lines in the file now.
    lines: usize,
}

impl AppliedLog {
    /// Reads `<dir>/applied.log` (and what older agents left in `dir`).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join("applied.log");
        let mut live = HashMap::new();
        let mut lines = 0;
        if let Ok(text) = std::fs::read(&path) {
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                lines += 1;
                match serde_json::from_slice::<Line>(line) {
                    Ok(Line { k, a: Some(a) }) => {
                        live.insert(k.into_owned(), a);
                    }
                    Ok(Line { k, a: None }) => {
                        live.remove(k.as_ref());
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "Ignoring a cut-off line of the agent's notes")
                    }
                }
            }
        }
        let legacy = read_legacy(dir);
        let migrate = !legacy.is_empty();
        for (key, (applied, _)) in &legacy {
            live.entry(key.clone()).or_insert_with(|| applied.clone());
        }
        let log = Self {
            path,
            state: Mutex::new(LogState {
                file: None,
                live,
                lines,
            }),
        };
        {
            let mut st = log.lock();
            if migrate {
                log.compact(&mut st);
                if st.file.is_some() {
                    for (_, (_, leftover)) in legacy {
                        let _ = if leftover.is_dir() {
                            std::fs::remove_dir_all(&leftover)
                        } else {
                            std::fs::remove_file(&leftover)
                        };
                    }
                }
            } else {
                st.file = log.append_handle();
            }
        }
        log
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append_handle(&self) -> Option<File> {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "Cannot write the agent's notes of what it applied; a restarted agent may repeat an action");
                None
            }
        }
    }

    /// The notes of `key`, if any.
    pub fn get(&self, key: &InstanceKey) -> Option<Applied> {
        self.lock().live.get(&key.0).cloned()
    }

    pub fn save(&self, key: &InstanceKey, applied: &Applied) {
        let mut st = self.lock();
        if st.live.get(&key.0) == Some(applied) {
            return;
        }
        st.live.insert(key.0.clone(), applied.clone());
        self.append(&mut st, &key.0, Some(applied));
    }

    pub fn remove(&self, key: &InstanceKey) {
        let mut st = self.lock();
        if st.live.remove(&key.0).is_some() {
            self.append(&mut st, &key.0, None);
        }
    }

    /// Records a change already made to `st.live`.
    fn append(&self, st: &mut LogState, key: &str, applied: Option<&Applied>) {
        if st.lines > 4 * st.live.len() + 1024 {
            // The rewrite holds the change.
            self.compact(st);
            return;
        }
        let mut bytes = serde_json::to_vec(&Line {
            k: key.into(),
            a: applied.cloned(),
        })
        .unwrap_or_default();
        bytes.push(b'\n');
        if let Some(f) = st.file.as_mut() {
            if let Err(e) = f.write_all(&bytes) {
                tracing::warn!(file = %self.path.display(), error = %e, "Cannot write the agent's notes of what it applied");
            }
            st.lines += 1;
        }
    }

    /// Rewrites the file with the live notes only.
    fn compact(&self, st: &mut LogState) {
        let mut bytes = Vec::with_capacity(st.live.len() * 128);
        for (k, a) in &st.live {
            let _ = serde_json::to_writer(
                &mut bytes,
                &Line {
                    k: k.as_str().into(),
                    a: Some(a.clone()),
                },
            );
            bytes.push(b'\n');
        }
        match write_atomic(&self.path, &bytes) {
            Ok(()) => st.lines = st.live.len(),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "Cannot rewrite the agent's notes of what it applied")
            }
        }
        st.file = self.append_handle();
    }
}

/// Notes older agents left, by instance, with the file or directory that held them.
fn read_legacy(dir: &Path) -> HashMap<String, (Applied, PathBuf)> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let (key, file) = if path.is_dir() {
            (name, path.join("applied.json"))
        } else if let Some(key) = name.strip_suffix(".json") {
            (key.to_owned(), path.clone())
        } else {
            continue;
        };
        if let Some(applied) = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Applied>(&b).ok())
        {
            found.insert(key, (applied, path));
        }
    }
    found
}

impl std::fmt::Debug for AppliedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppliedLog")
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(restart_gen: u64) -> Applied {
        Applied {
            provisioned: true,
            launch_generation: 2,
            restart_gen,
            reimage_gen: 0,
        }
    }

    #[test]
    fn notes_survive_a_restart_and_removals_stay_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            InstanceKey("s.rg.web.1".into()),
            InstanceKey("s.rg.web.2".into()),
        );
        {
            let log = AppliedLog::open(dir.path());
            assert_eq!(log.get(&a), None);
            log.save(&a, &note(1));
            log.save(&b, &note(1));
            log.save(&a, &note(7));
            log.remove(&b);
        }
        // A restart (and a line cut short by a crash at the end).
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("applied.log"))
            .expect("log");
        f.write_all(br#"{"k":"s.rg.web.2","a":{"provis"#)
            .expect("torn line");
        let log = AppliedLog::open(dir.path());
        assert_eq!(log.get(&a), Some(note(7)));
        assert_eq!(
            log.get(&b),
            None,
            "removed stays removed; a torn line is ignored"
        );
    }

    #[test]
    fn the_file_is_rewritten_before_it_grows_without_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AppliedLog::open(dir.path());
        let key = InstanceKey("s.rg.web.1".into());
        for i in 0..5000 {
            log.save(&key, &note(i));
        }
        let lines = std::fs::read_to_string(dir.path().join("applied.log"))
            .expect("log")
            .lines()
            .count();
        assert!(lines <= 1030, "{lines} lines for one instance");
        drop(log);
        assert_eq!(AppliedLog::open(dir.path()).get(&key), Some(note(4999)));
    }

    #[test]
    fn an_older_agents_notes_are_moved_into_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            InstanceKey("s.rg.web.1".into()),
            InstanceKey("s.rg.web.2".into()),
        );
        // The first layout: `<key>.json`; the second: `<key>/applied.json`.
        std::fs::write(
            dir.path().join("s.rg.web.1.json"),
            serde_json::to_vec(&note(3)).expect("json"),
        )
        .expect("legacy file");
        std::fs::create_dir(dir.path().join(&b.0)).expect("legacy dir");
        std::fs::write(
            dir.path().join(&b.0).join("applied.json"),
            serde_json::to_vec(&note(4)).expect("json"),
        )
        .expect("legacy file");
        let log = AppliedLog::open(dir.path());
        assert_eq!(log.get(&a), Some(note(3)));
        assert_eq!(log.get(&b), Some(note(4)));
        assert!(!dir.path().join("s.rg.web.1.json").exists());
        assert!(!dir.path().join(&b.0).exists());
        drop(log);
        let log = AppliedLog::open(dir.path());
        assert_eq!(log.get(&a), Some(note(3)), "kept by the log itself now");
        assert_eq!(log.get(&b), Some(note(4)));
    }
}
