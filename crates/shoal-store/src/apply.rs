//! Transaction semantics, written once for every backend.
//!
//! A backend exposes its key space through [`TxnTarget`] (a `BTreeMap`, a redb table
//! inside a write transaction, …) and calls [`apply`] with the revision the transaction
//! would get. `apply` checks every precondition against the state *before* the
//! transaction, then applies the operations in order and returns the events to publish.
//! A transaction whose operations change nothing (it is empty, or only deletes absent
//! keys) produces no events, and the backend does not spend a revision on it.

use crate::{Event, Expect, KeyValue, Revision, Txn, TxnOp};

/// The revisions of a stored key: `(create_revision, mod_revision)`.
pub(crate) type Revisions = (Revision, Revision);

/// A mutable key space a transaction is applied to.
pub(crate) trait TxnTarget {
    type Error;
    /// The revisions of `key`, or `None` when it is absent.
    fn revisions(&mut self, key: &str) -> Result<Option<Revisions>, Self::Error>;
    /// Stores `kv` (insert or overwrite).
    fn put(&mut self, kv: &KeyValue) -> Result<(), Self::Error>;
    /// Removes `key`; says whether it existed.
    fn delete(&mut self, key: &str) -> Result<bool, Self::Error>;
}

/// What applying one transaction did.
#[derive(Debug)]
pub(crate) enum Applied {
    /// The precondition on this key failed; nothing was changed.
    Conflict { key: String },
    /// Every operation was applied; these are its events (empty if nothing changed).
    Done(Vec<Event>),
}

/// Whether `expect` holds for a key whose current `mod_revision` is `current`.
pub(crate) fn holds(expect: Expect, current: Option<Revision>) -> bool {
    match (expect, current) {
        (Expect::Any, _) | (Expect::Absent, None) | (Expect::Present, Some(_)) => true,
        (Expect::ModRevision(wanted), Some(actual)) => wanted == actual,
        (Expect::Absent, Some(_)) | (Expect::Present | Expect::ModRevision(_), None) => false,
    }
}

/// Checks every precondition of `txn`, then applies it at `revision`.
pub(crate) fn apply<T: TxnTarget>(
    target: &mut T,
    txn: Txn,
    revision: Revision,
) -> Result<Applied, T::Error> {
    for op in &txn {
        let (key, expect) = match op {
            TxnOp::Put { key, expect, .. } | TxnOp::Delete { key, expect } => (key, *expect),
        };
        if expect == Expect::Any {
            continue;
        }
        let current = target.revisions(key)?.map(|(_, modified)| modified);
        if !holds(expect, current) {
            return Ok(Applied::Conflict { key: key.clone() });
        }
    }
    let mut events = Vec::with_capacity(txn.len());
    let last: std::collections::HashMap<&str, usize> = txn
        .iter()
        .enumerate()
        .map(|(i, op)| match op {
            TxnOp::Put { key, .. } | TxnOp::Delete { key, .. } => (key.as_str(), i),
        })
        .collect();
    let keep: Vec<bool> = txn
        .iter()
        .enumerate()
        .map(|(i, op)| match op {
            TxnOp::Put { key, .. } | TxnOp::Delete { key, .. } => last[key.as_str()] == i,
        })
        .collect();
    for (op, keep) in txn.into_iter().zip(keep) {
        if !keep {
            continue;
        }
        match op {
            TxnOp::Put { key, value, .. } => {
                let create_revision = match target.revisions(&key)? {
                    Some((created, _)) => created,
                    None => revision,
                };
                let kv = KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: revision,
                };
                target.put(&kv)?;
                events.push(Event::Put(kv));
            }
            TxnOp::Delete { key, .. } => {
                if target.delete(&key)? {
                    events.push(Event::Delete { key, revision });
                }
            }
        }
    }
    Ok(Applied::Done(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations() {
        assert!(holds(Expect::Any, None));
        assert!(holds(Expect::Any, Some(3)));
        assert!(holds(Expect::Absent, None));
        assert!(!holds(Expect::Absent, Some(3)));
        assert!(holds(Expect::Present, Some(3)));
        assert!(!holds(Expect::Present, None));
        assert!(holds(Expect::ModRevision(3), Some(3)));
        assert!(!holds(Expect::ModRevision(3), Some(4)));
        assert!(!holds(Expect::ModRevision(3), None));
    }
}
