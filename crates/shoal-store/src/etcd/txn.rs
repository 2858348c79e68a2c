//! A [`Txn`] turned into one etcd transaction, and etcd's answer turned back.
//!
//! In: the store's operations (each with its precondition), the install's key prefix and
//! an optional leadership fence. Out: a [`Plan`] holding the etcd `Txn` (every
//! precondition and the fence as a compare, the operations in the success branch, a get
//! of every checked key in the failure branch) and, once etcd answered, which
//! precondition failed ([`Plan::failure`]).
//!
//! etcd refuses a transaction that names one key twice, so the operations on each key are
//! folded into their net effect first (the last one wins, as applying them in order
//! would). One difference remains that etcd cannot express: a key deleted and put again
//! in one transaction keeps its old `create_revision`. Transactions over etcd's limits
//! (128 operations or compares per branch, 1.5 MiB per request) are refused with
//! [`StoreError::TooLarge`] naming the largest value or "operations": splitting them
//! would give up the atomicity every `Txn` promises.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, Txn as EtcdTxn, TxnOp as EtcdOp, TxnOpResponse};

use crate::apply::holds;
use crate::{Expect, Revision, StoreError, Txn, TxnOp};

/// etcd's `--max-txn-ops` default: operations (and compares) per branch.
pub const MAX_TXN_OPS: usize = 128;
/// etcd's `--max-request-bytes` default (1.5 MiB), less room for the request's framing.
pub const MAX_REQUEST_BYTES: usize = 1_572_864 - 16 * 1024;

/// A leadership fence: the leader key must still have the create revision it had when
/// this server won the election.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

/// One store transaction as etcd will run it.
pub(crate) struct Plan {
    pub txn: EtcdTxn,
    /// The preconditions in operation order (store keys), checked locally on failure.
    checks: Vec<(String, Expect)>,
    /// Distinct checked keys, in the order of the failure branch's gets.
    fetched: Vec<String>,
    fenced: bool,
}

fn too_large(what: impl Into<String>, limit: &str) -> StoreError {
    StoreError::TooLarge {
        what: what.into(),
        limit: limit.into(),
    }
}

/// The compare for `expect` on the etcd key `key`; `None` for [`Expect::Any`].
fn compare(key: Vec<u8>, expect: Expect) -> Option<Compare> {
    Some(match expect {
        Expect::Any => return None,
        // etcd compares a missing key's version and revisions as 0.
        Expect::Absent => Compare::version(key, CompareOp::Equal, 0),
        Expect::Present => Compare::version(key, CompareOp::Greater, 0),
        // No key has mod revision 0, and a missing one would compare equal to it: make
        // the compare one that never holds.
        Expect::ModRevision(0) => Compare::mod_revision(key, CompareOp::Less, 0),
        Expect::ModRevision(rev) => Compare::mod_revision(
            key,
            CompareOp::Equal,
            i64::try_from(rev).unwrap_or(i64::MAX),
        ),
    })
}

/// Plans `txn` for keys under `prefix`, fenced by `fence` when given.
pub(crate) fn plan(prefix: &str, txn: Txn, fence: Option<&Fence>) -> Result<Plan, StoreError> {
    let full = |key: &str| format!("{prefix}{key}").into_bytes();
    let mut checks = Vec::new();
    let mut compares = Vec::new();
    // Net effect per key, in order of first appearance: Some(value) puts, None deletes.
    let mut order: Vec<String> = Vec::new();
    let mut effect: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    for op in txn {
        let (key, expect, value) = match op {
            TxnOp::Put { key, value, expect } => (key, expect, Some(value)),
            TxnOp::Delete { key, expect } => (key, expect, None),
        };
        if let Some(c) = compare(full(&key), expect) {
            compares.push(c);
            checks.push((key.clone(), expect));
        }
        if !effect.contains_key(&key) {
            order.push(key.clone());
        }
        effect.insert(key, value);
    }
    if let Some(f) = fence {
        compares.push(Compare::create_revision(
            f.key.clone(),
            CompareOp::Equal,
            f.create_revision,
        ));
    }
    let mut fetched: Vec<String> = Vec::new();
    for (key, _) in &checks {
        if !fetched.contains(key) {
            fetched.push(key.clone());
        }
    }
    let gets = fetched.len() + usize::from(fence.is_some());
    if order.len() > MAX_TXN_OPS {
        return Err(too_large(
            format!("{} operations", order.len()),
            "128 operations",
        ));
    }
    if compares.len() > MAX_TXN_OPS || gets > MAX_TXN_OPS {
        return Err(too_large(
            format!("{} preconditions", compares.len()),
            "128 preconditions",
        ));
    }
    let mut bytes = 0;
    let mut largest: Option<(&str, usize)> = None;
    for key in &order {
        let size = prefix.len() + key.len() + effect[key].as_ref().map_or(0, Vec::len);
        bytes += size + 16;
        if largest.is_none_or(|(_, s)| size > s) {
            largest = Some((key, size));
        }
    }
    if bytes > MAX_REQUEST_BYTES {
        let what = match largest {
            Some((key, size)) if size > MAX_REQUEST_BYTES / 2 => format!("the value of {key}"),
            _ => format!("{bytes} bytes of changes"),
        };
        return Err(too_large(what, "1.5 MiB per request"));
    }
    let ops: Vec<EtcdOp> = order
        .iter()
        .map(|key| match effect.remove(key).flatten() {
            Some(value) => EtcdOp::put(full(key), value, None),
            None => EtcdOp::delete(full(key), None),
        })
        .collect();
    let mut otherwise: Vec<EtcdOp> = fetched
        .iter()
        .map(|key| EtcdOp::get(full(key), Some(GetOptions::new().with_keys_only())))
        .collect();
    if let Some(f) = fence {
        otherwise.push(EtcdOp::get(
            f.key.clone(),
            Some(GetOptions::new().with_keys_only()),
        ));
    }
    Ok(Plan {
        txn: EtcdTxn::new()
            .when(compares)
            .and_then(ops)
            .or_else(otherwise),
        checks,
        fetched,
        fenced: fence.is_some(),
    })
}

impl Plan {
    /// Why a transaction whose compares failed was refused, from the failure branch's
    /// answers: the first precondition (in operation order) that does not hold, else the
    /// fence.
    pub fn failure(&self, responses: &[TxnOpResponse]) -> StoreError {
        let mut current: HashMap<&str, Option<Revision>> = HashMap::new();
        for (key, response) in self.fetched.iter().zip(responses) {
            let rev = match response {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| u64::try_from(kv.mod_revision()).unwrap_or(0)),
                _ => None,
            };
            current.insert(key, rev);
        }
        for (key, expect) in &self.checks {
            let now = current.get(key.as_str()).copied().flatten();
            if !holds(*expect, now) {
                return StoreError::Conflict { key: key.clone() };
            }
        }
        if self.fenced {
            StoreError::NotLeader
        } else {
            // Every precondition held when etcd looked: cannot happen (the compares and
            // the gets see one revision); say so rather than guess a key.
            StoreError::Backend("etcd refused a transaction whose preconditions held".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &[u8], expect: Expect) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: value.to_vec(),
            expect,
        }
    }

    #[test]
    fn over_the_operation_limit_is_refused_not_split() {
        let txn: Txn = (0..=MAX_TXN_OPS)
            .map(|i| put(&format!("k{i}"), b"v", Expect::Any))
            .collect();
        let err = plan("/p/", txn, None).err().expect("refused");
        assert!(
            matches!(&err, StoreError::TooLarge { what, .. } if what == "129 operations"),
            "{err:?}"
        );
        // The same key many times is one operation.
        let txn: Txn = (0..500).map(|_| put("k", b"v", Expect::Any)).collect();
        assert!(plan("/p/", txn, None).is_ok());
    }

    #[test]
    fn a_huge_value_is_named() {
        let big = vec![b'x'; 2 << 20];
        let err = plan("/p/", vec![put("instance/7", &big, Expect::Any)], None)
            .err()
            .expect("refused");
        assert!(
            matches!(&err, StoreError::TooLarge { what, .. } if what == "the value of instance/7"),
            "{err:?}"
        );
    }

    #[test]
    fn failure_names_the_first_failing_precondition_then_the_fence() {
        let fence = Fence {
            key: b"/p/leader".to_vec(),
            create_revision: 5,
        };
        let txn = vec![
            put("a", b"1", Expect::ModRevision(3)),
            put("b", b"1", Expect::Absent),
        ];
        let p = plan("/p/", txn, Some(&fence)).expect("plan");
        assert_eq!(p.fetched, ["a", "b"]);
        // No answers at all: both keys look absent; "a" expected revision 3.
        assert!(matches!(p.failure(&[]), StoreError::Conflict { key } if key == "a"));
        let p = plan("/p/", vec![put("b", b"1", Expect::Absent)], Some(&fence)).expect("plan");
        assert!(matches!(p.failure(&[]), StoreError::NotLeader));
    }
}
