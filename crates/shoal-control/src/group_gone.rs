//! Deleting a resource group: its operation waits until no scale set is left in the group
//! (the controller tears the sets down), then the group's record and everything else in
//! it (galleries, autoscale settings, balancers, gateways) leave the store with the
//! operation's end in one transaction.

use shoal_model::keys;
use shoal_model::records::{operation_key, OperationRecord, OperationStatus, OperationWait};
use shoal_store::{Expect, Store, StoreError};

use crate::clock::{arm_time, Clock};
use crate::kv::{self, KvError, Versioned};

/// A resource group is gone once no scale set is left in it: then its record, its
/// galleries and its autoscale settings go too.
pub(crate) async fn advance(
    store: &dyn Store,
    clock: &dyn Clock,
    op: Versioned<OperationRecord>,
) -> Result<(), KvError> {
    let OperationWait::GroupGone {
        subscription,
        resource_group,
    } = &op.value.wait
    else {
        return Ok(());
    };
    let sub = subscription.to_ascii_lowercase();
    let rg = resource_group.to_ascii_lowercase();
    let (sets, _) = store.list(&keys::in_group(keys::VMSS, &sub, &rg)).await?;
    if !sets.is_empty() {
        return Ok(());
    }
    let mut txn = Vec::new();
    for prefix in [
        "gallery",
        "galleryimage",
        "imageversion",
        "autoscale",
        "autoscale-history",
        // Balancers and gateways go with their group, as in Azure (the sets that
        // used them are gone by now).
        "lb",
        "appgw",
    ] {
        let (kvs, _) = store.list(&format!("{prefix}/{sub}/{rg}/")).await?;
        txn.extend(kvs.into_iter().map(|kv| kv::delete_op(kv.key, Expect::Any)));
    }
    txn.push(kv::delete_op(
        shoal_model::ids::rg_key(&sub, &rg),
        Expect::Any,
    ));
    let mut rec = op.value.clone();
    rec.status = OperationStatus::Succeeded;
    rec.end_time = Some(arm_time(clock.now()));
    txn.push(kv::put_op(
        operation_key(&rec.id),
        &rec,
        Expect::ModRevision(op.revision),
    ));
    match store.txn(txn).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
