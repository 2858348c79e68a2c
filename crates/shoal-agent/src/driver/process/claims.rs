//! The network namespaces this agent made, in a journal that outlives a `kill -9`.
//!
//! An instance's namespace is recorded in its state file only after it is made, and a
//! warm one in the pool's list only after the helper saves it. An agent killed between
//! the two left a namespace that nothing named: the next start found its name taken and
//! skipped that address for good, so every crash shrank the subnet. Now an address is
//! journalled `?<address>` before the agent tries to win the namespace's name (the `O_EXCL`
//! mount point), `+<address>` once it has won it (before anything is mounted) and
//! `-<address>` once its mount is gone (or the name was another's). At start, after
//! recovery and the warm pool have marked what they hold, the driver removes every
//! journalled namespace nothing marked ([`super::net::NsAddrs::sweep`]): those it won, and
//! for those it only tried, an empty mount point nothing is mounted on (a kill right after
//! winning the name); never another agent's namespace on the same host.
//!
//! One short append per namespace made or removed; the journal is rewritten with only what
//! is outstanding at each start and whenever it grows past four times that.

use std::collections::BTreeMap;
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
    outstanding: BTreeMap<Ipv4Addr, Claim>,
    lines: usize,
}

/// How far the agent got with an address's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It was about to try for the name (`?`).
    Tried,
    /// It won the name (`+`): the namespace, whole or not, is this agent's.
    Won,
}

impl Claim {
    fn mark(self) -> char {
        match self {
            Claim::Tried => '?',
            Claim::Won => '+',
        }
    }
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
                        Some((b'?', a)) => {
                            journal.outstanding.insert(a, Claim::Tried);
                        }
                        Some((b'+', a)) => {
                            journal.outstanding.insert(a, Claim::Won);
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

    /// What the journal says this agent tried for or won, and has not removed.
    pub fn outstanding(&self) -> BTreeMap<Ipv4Addr, Claim> {
        self.lock().outstanding.clone()
    }

    /// The agent is about to try for the name of `address`'s namespace.
    pub fn trying(&self, address: Ipv4Addr) {
        self.append(Some(Claim::Tried), address);
    }

    /// The namespace of `address` is this agent's (its name was just won).
    pub fn won(&self, address: Ipv4Addr) {
        self.append(Some(Claim::Won), address);
    }

    /// The namespace of `address` is gone (its mount removed), or its name was another's.
    pub fn removed(&self, address: Ipv4Addr) {
        self.append(None, address);
    }

    /// Rewrites the journal with `keep` as all that is outstanding.
    pub fn rewrite(&self, keep: BTreeMap<Ipv4Addr, Claim>) {
        let mut j = self.lock();
        j.outstanding = keep;
        self.compact(&mut j);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, claim: Option<Claim>, address: Ipv4Addr) {
        let Some(path) = &self.path else {
            return;
        };
        let mut j = self.lock();
        let op = match claim {
            Some(c) => {
                j.outstanding.insert(address, c);
                c.mark()
            }
            None => {
                j.outstanding.remove(&address);
                '-'
            }
        };
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
        let text: String = j
            .outstanding
            .iter()
            .map(|(a, c)| format!("{}{a}\n", c.mark()))
            .collect();
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
        for last in [2, 3, 4, 6] {
            claims.trying(a(last));
            claims.won(a(last));
        }
        claims.removed(a(3));
        claims.trying(a(5));
        claims.removed(a(6));
        drop(claims);
        // A crash cut the last line short.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"+10.9.0").expect("write");
        drop(f);

        let again = Claims::open(Some(path.clone()));
        assert_eq!(
            again.outstanding(),
            [(a(2), Claim::Won), (a(4), Claim::Won), (a(5), Claim::Tried)]
                .into_iter()
                .collect()
        );
        again.rewrite(
            [(a(4), Claim::Won), (a(5), Claim::Tried)]
                .into_iter()
                .collect(),
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "+10.9.0.4\n?10.9.0.5\n"
        );
        again.won(a(5));
        assert_eq!(
            Claims::open(Some(path)).outstanding(),
            [(a(4), Claim::Won), (a(5), Claim::Won)]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn the_journal_is_rewritten_when_it_grows_and_stays_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".netns-journal");
        let claims = Claims::open(Some(path.clone()));
        for round in 0..3_000u32 {
            let address = Ipv4Addr::from(0x0a09_0000 + (round % 500) + 2);
            claims.trying(address);
            claims.won(address);
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
        claims.won(a(2));
        assert!(claims.outstanding().is_empty());
    }
}
