//! The network namespaces this agent made, in a journal that outlives a `kill -9`.
//!
//! An instance's namespace is recorded in its state file only after it is made, and a
//! warm one in the pool's list only after the helper saves it. An agent killed between
//! the two left a namespace that nothing named: the next start found its name taken and
//! skipped that address for good, so every crash shrank the subnet. Now an address is
//! journalled (`+<address>`) as soon as the namespace's name is won (the `O_EXCL` mount
//! point, before anything is mounted), and `-<address>` once its mount is gone. At start,
//! after recovery and the warm pool have marked what they hold, the driver removes every
//! journalled namespace nothing marked ([`super::net::NsPool::sweep`]): only names this
//! agent won, never another agent's on the same host.
//!
//! One short append per namespace made or removed; the journal is rewritten with only what
//! is outstanding at each start and whenever it grows past four times that.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::driver::slot::write_atomic;

/// Rewrite once the journal holds this many lines more than four times what is outstanding.
const SLACK: usize = 1024;

/// The journal of one namespace network (`<root>/.netns-journal`); without a path (tests
/// of other parts), nothing is kept.
#[derive(Debug)]
pub struct Claims {
    path: Option<PathBuf>,
    state: Mutex<Journal>,
}

#[derive(Debug, Default)]
struct Journal {
    file: Option<File>,
    outstanding: BTreeSet<Ipv4Addr>,
    lines: usize,
}

impl Claims {
    /// Reads what an earlier run left outstanding; an unreadable line is skipped with a
    /// warning (it can only be the last, cut short by a crash).
    pub fn open(path: Option<PathBuf>) -> Claims {
        let mut journal = Journal::default();
        if let Some(p) = &path {
            if let Ok(text) = std::fs::read_to_string(p) {
                for line in text.lines() {
                    journal.lines += 1;
                    let parsed = line
                        .get(1..)
                        .and_then(|a| a.parse::<Ipv4Addr>().ok())
                        .map(|a| (line.as_bytes()[0], a));
                    match parsed {
                        Some((b'+', a)) => {
                            journal.outstanding.insert(a);
                        }
                        Some((b'-', a)) => {
                            journal.outstanding.remove(&a);
                        }
                        _ => {
                            tracing::warn!(file = %p.display(), %line, "Skipping an unreadable line of the network namespace journal")
                        }
                    }
                }
            }
        }
        Claims {
            path,
            state: Mutex::new(journal),
        }
    }

    /// What the journal says this agent made and has not removed.
    pub fn outstanding(&self) -> BTreeSet<Ipv4Addr> {
        self.lock().outstanding.clone()
    }

    /// The namespace of `address` is this agent's (its name was just won).
    pub fn made(&self, address: Ipv4Addr) {
        self.append('+', address);
    }

    /// The namespace of `address` is gone (its mount removed).
    pub fn removed(&self, address: Ipv4Addr) {
        self.append('-', address);
    }

    /// Rewrites the journal with `keep` as all that is outstanding.
    pub fn rewrite(&self, keep: BTreeSet<Ipv4Addr>) {
        let mut j = self.lock();
        j.outstanding = keep;
        self.compact(&mut j);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, op: char, address: Ipv4Addr) {
        let Some(path) = &self.path else {
            return;
        };
        let mut j = self.lock();
        if op == '+' {
            j.outstanding.insert(address);
        } else {
            j.outstanding.remove(&address);
        }
        if j.lines > 4 * j.outstanding.len() + SLACK {
            return self.compact(&mut j);
        }
        if j.file.is_none() {
            j.file = OpenOptions::new().create(true).append(true).open(path).ok();
        }
        // One write: a line is whole or absent after a crash (at worst cut short, which
        // the next start skips).
        let line = format!("{op}{address}\n");
        let written = j.file.as_mut().map(|f| f.write_all(line.as_bytes()));
        match written {
            Some(Ok(())) => j.lines += 1,
            Some(Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "Cannot journal a network namespace; a crash now would leave it behind")
            }
            None => {
                tracing::warn!(file = %path.display(), "Cannot open the network namespace journal; a crash now would leave namespaces behind")
            }
        }
    }

    fn compact(&self, j: &mut Journal) {
        let Some(path) = &self.path else {
            return;
        };
        let text: String = j.outstanding.iter().map(|a| format!("+{a}\n")).collect();
        j.file = None;
        match write_atomic(path, text.as_bytes()) {
            Ok(()) => j.lines = j.outstanding.len(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "Cannot rewrite the network namespace journal")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 9, 0, last)
    }

    #[test]
    fn what_was_made_and_not_removed_is_outstanding_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".netns-journal");
        let claims = Claims::open(Some(path.clone()));
        claims.made(a(2));
        claims.made(a(3));
        claims.made(a(4));
        claims.removed(a(3));
        drop(claims);
        // A crash cut the last line short.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"+10.9.0").expect("write");
        drop(f);

        let again = Claims::open(Some(path.clone()));
        assert_eq!(again.outstanding(), [a(2), a(4)].into_iter().collect());
        again.rewrite([a(4)].into_iter().collect());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "+10.9.0.4\n");
        again.made(a(5));
        assert_eq!(
            Claims::open(Some(path)).outstanding(),
            [a(4), a(5)].into_iter().collect()
        );
    }

    #[test]
    fn the_journal_is_rewritten_when_it_grows_and_stays_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".netns-journal");
        let claims = Claims::open(Some(path.clone()));
        for round in 0..3_000u32 {
            let address = Ipv4Addr::from(0x0a09_0000 + (round % 500) + 2);
            claims.made(address);
            if round % 3 != 0 {
                claims.removed(address);
            }
        }
        let lines = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count();
        assert!(
            lines <= 4 * claims.outstanding().len() + SLACK + 1,
            "{lines} lines"
        );
        assert_eq!(
            Claims::open(Some(path)).outstanding(),
            claims.outstanding(),
            "a restart reads what the running agent holds"
        );
    }

    #[test]
    fn without_a_path_nothing_is_written() {
        let claims = Claims::open(None);
        claims.made(a(2));
        assert!(claims.outstanding().is_empty());
    }
}
