//! The thin executor: reads what a command concerns, asks its decider, writes the answer
//! in one transaction.

use shoal_model::keys;
use shoal_model::managed_identity;
use shoal_model::records::HostRecord;
use std::sync::Arc;

use futures::future::BoxFuture;
use shoal_model::records::{InstanceRecord, VmssRecord};
use shoal_model::vmss::VMSS_TYPE;
use shoal_model::ArmError;
use shoal_store::{Store, StoreError};

use super::activity::{history_key_of, History};
use super::capacity::{self, AutoscaleState};
use super::instances::{self, InstancesState};
use super::rolling;
use super::scale_set::{self, SetState};
use super::{
    Command, CommandError, Env, Executed, InstanceCommand, Limits, ResolvedImage, SetChange,
    SetCommand, Writes,
};
use crate::kv;
use crate::Clock;

/// Resolves a model's `imageReference.id` to a stored gallery image version (the
/// newest, when it names a definition). The API implements it over the galleries.
pub trait ImageResolver: Send + Sync {
    fn resolve<'a>(&'a self, image_id: &'a str) -> BoxFuture<'a, Result<ResolvedImage, ArmError>>;
}

/// Executes [`Command`]s against the store.
#[derive(Clone)]
pub struct Executor {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    images: Option<Arc<dyn ImageResolver>>,
}

impl Executor {
    /// An executor that cannot write a set's model (no image resolver): enough for
    /// autoscale and repairs.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, limits: Limits) -> Self {
        Executor {
            store,
            clock,
            limits,
            images: None,
        }
    }

    /// Lets the executor resolve the images PUT and PATCH name.
    pub fn with_images(mut self, images: Arc<dyn ImageResolver>) -> Self {
        self.images = Some(images);
        self
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The store the executor writes (runners read a few records of their own from it).
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Reads, decides, writes. Nothing is written when the decider refuses or a record
    /// changed in between (`Conflict`).
    pub async fn execute(&self, cmd: Command) -> Result<Executed, CommandError> {
        let env = Env {
            now: self.clock.now(),
            operation_id: uuid::Uuid::new_v4().to_string(),
            unique_id: uuid::Uuid::new_v4().to_string(),
        };
        let writes = match &cmd {
            Command::ScaleSet(c) => self.scale_set(c, &env).await?,
            Command::Autoscale(eval) => {
                let set = self.require_set(&eval.vmss).await?;
                let history =
                    kv::get_json::<History>(&*self.store, &history_key_of(&eval.setting_key))
                        .await?;
                capacity::decide_autoscale(
                    eval,
                    &AutoscaleState { set, history },
                    &self.limits,
                    &env,
                )?
            }
            Command::Instances(c) => self.instances(c, &env).await?,
            Command::Rolling(c) => self.rolling(c, &env).await?,
        };
        self.apply(writes).await
    }

    async fn scale_set(&self, cmd: &SetCommand, env: &Env) -> Result<Writes, CommandError> {
        let existing = kv::get_json::<VmssRecord>(&*self.store, &cmd.vmss.key()).await?;
        let mut identities = std::collections::BTreeMap::new();
        let image = match cmd.change {
            SetChange::Delete => None,
            SetChange::Put(_) | SetChange::Patch(_) => {
                // The decider works the model out again from the same inputs: cheap, and
                // it keeps the decider pure (the image is the one input it cannot read).
                let model = scale_set::desired_model(cmd, existing.as_ref(), &self.limits)?;
                for (_, key, uai) in
                    scale_set::user_identities(&*self.store, model.identity.as_ref()).await?
                {
                    let p = uai.properties;
                    identities.insert(
                        key,
                        managed_identity::IdentityIds {
                            principal_id: p.principal_id.unwrap_or_default(),
                            client_id: p.client_id.unwrap_or_default(),
                        },
                    );
                }
                let resolver = self
                    .images
                    .as_ref()
                    .ok_or_else(|| ArmError::internal("This executor cannot resolve images."))?;
                let id = model.image_id().unwrap_or_default();
                let newest = resolver.resolve(&id).await?;
                Some(
                    self.skip_rolled_back(cmd, existing.as_ref(), newest)
                        .await?,
                )
            }
        };
        let (hosts, _) = kv::list_json::<HostRecord>(&*self.store, keys::HOST).await?;
        let host_zones = hosts
            .iter()
            .filter(|h| !h.value.cordoned && !h.value.draining)
            .filter_map(|h| h.value.zone.clone())
            .collect();
        let hosts = hosts
            .iter()
            .map(|h| crate::hosts::capacity(&h.value))
            .collect();
        let state = SetState {
            existing,
            image,
            hosts,
            host_zones,
            identities,
        };
        Ok(scale_set::decide(cmd, &state, &self.limits, env)?)
    }

    /// A set that follows an image definition keeps its current version when the newest
    /// one is a version an automatic OS upgrade rolled back (a PATCH of the capacity must
    /// not bring it back); a newer version, or one named explicitly, is taken as asked.
    async fn skip_rolled_back(
        &self,
        cmd: &SetCommand,
        existing: Option<&kv::Versioned<VmssRecord>>,
        newest: ResolvedImage,
    ) -> Result<ResolvedImage, CommandError> {
        let Some(set) = existing.map(|e| &e.value) else {
            return Ok(newest);
        };
        let follows_definition = shoal_model::ids::parse_image_id(&newest.requested)
            .is_some_and(|r| r.version.is_none());
        if !follows_definition || set.launch.image_version == newest.version {
            return Ok(newest);
        }
        let record = kv::get_json::<crate::rolling::RollingUpgrade>(
            &*self.store,
            &super::rolling::record_key(&cmd.vmss),
        )
        .await?;
        let rolled_back = record
            .filter(|r| r.value.unique_id == set.model.props().unique_id)
            .is_some_and(|r| r.value.bad_versions.contains(&newest.version));
        if !rolled_back {
            return Ok(newest);
        }
        let Some(resolver) = self.images.as_ref() else {
            return Ok(newest);
        };
        let mut kept = resolver.resolve(&set.launch.image_id).await?;
        kept.requested = newest.requested;
        Ok(kept)
    }

    async fn instances(&self, cmd: &InstanceCommand, env: &Env) -> Result<Writes, CommandError> {
        let set = self.require_set(&cmd.vmss).await?;
        let (instances, _) =
            kv::list_json::<InstanceRecord>(&*self.store, &cmd.vmss.instance_prefix()).await?;
        let redeploy = matches!(
            cmd.change,
            super::InstanceChange::Action {
                action: super::InstanceAction::Redeploy,
                ..
            }
        );
        let hosts = if redeploy {
            self.host_slots().await?
        } else {
            Vec::new()
        };
        Ok(instances::decide(
            cmd,
            &InstancesState {
                set,
                instances,
                hosts,
            },
            env,
        )?)
    }

    /// The hosts as placement sees them, read from the store.
    async fn host_slots(&self) -> Result<Vec<crate::planner::HostSlot>, CommandError> {
        let (hosts, _) = kv::list_json::<HostRecord>(&*self.store, keys::HOST).await?;
        let (states, _) =
            kv::list_json::<shoal_model::records::HostStateRecord>(&*self.store, keys::HOST_STATE)
                .await?;
        let (all, _) = kv::list_json::<InstanceRecord>(&*self.store, keys::INSTANCE).await?;
        let states =
            crate::hosts::states_by_host(states.iter().map(|s| (s.key.as_str(), &s.value)));
        let records: Vec<HostRecord> = hosts.into_iter().map(|h| h.value).collect();
        Ok(crate::hosts::slots(
            &records,
            &states,
            &crate::hosts::allocated(all.iter().map(|i| &i.value)),
        ))
    }

    async fn rolling(
        &self,
        cmd: &super::RollingCommand,
        env: &Env,
    ) -> Result<Writes, CommandError> {
        let set = self.require_set(&cmd.vmss).await?;
        let (instances, _) =
            kv::list_json::<InstanceRecord>(&*self.store, &cmd.vmss.instance_prefix()).await?;
        let record = kv::get_json::<crate::rolling::RollingUpgrade>(
            &*self.store,
            &rolling::record_key(&cmd.vmss),
        )
        .await?;
        let mut operations = Vec::new();
        if let super::RollingChange::Apply { step, .. } = &cmd.change {
            for id in step.record.iter().flat_map(|r| r.operations.iter()) {
                let key = shoal_model::records::operation_key(id);
                if let Some(op) = kv::get_json(&*self.store, &key).await? {
                    operations.push(op);
                }
            }
        }
        let state = rolling::RollingState {
            set,
            instances: instances.into_iter().map(|i| i.value).collect(),
            record,
            operations,
        };
        Ok(rolling::decide(cmd, &state, env)?)
    }

    async fn require_set(
        &self,
        vmss: &shoal_model::ids::VmssRef,
    ) -> Result<kv::Versioned<VmssRecord>, CommandError> {
        kv::get_json::<VmssRecord>(&*self.store, &vmss.key())
            .await?
            .ok_or_else(|| CommandError::Rejected(ArmError::not_found(VMSS_TYPE, &vmss.name)))
    }

    async fn apply(&self, mut writes: Writes) -> Result<Executed, CommandError> {
        let ops = std::mem::take(&mut writes.ops);
        if ops.is_empty() {
            return Ok(Executed {
                revision: None,
                writes,
            });
        }
        match self.store.txn(ops).await {
            Ok(revision) => Ok(Executed {
                revision: Some(revision),
                writes,
            }),
            Err(e @ StoreError::Conflict { .. }) => match writes.set.as_ref() {
                Some(set) if writes.created => Err(CommandError::Rejected(
                    ArmError::conflict(format!(
                        "Scale set '{}' was created by another request at the same time.",
                        set.vmss.name
                    ))
                    .with_target(set.vmss.name.clone()),
                )),
                _ => Err(CommandError::Conflict(e)),
            },
            Err(e) => Err(CommandError::Store(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::testing::{image, IMAGE};
    use crate::commands::{AutoscaleEvaluation, Preconditions};
    use crate::ManualClock;
    use serde_json::json;
    use shoal_model::ids::VmssRef;
    use shoal_store::MemoryStore;

    struct OneImage;

    impl ImageResolver for OneImage {
        fn resolve<'a>(
            &'a self,
            image_id: &'a str,
        ) -> BoxFuture<'a, Result<ResolvedImage, ArmError>> {
            Box::pin(async move {
                if image_id == IMAGE {
                    Ok(image())
                } else {
                    Err(ArmError::invalid_parameter("image", "No such image."))
                }
            })
        }
    }

    fn executor(store: Arc<dyn Store>, max_capacity: i64) -> Executor {
        let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
        Executor::new(store, Arc::new(clock), Limits { max_capacity })
            .with_images(Arc::new(OneImage))
    }

    fn put(capacity: i64) -> Command {
        let body = json!({
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_512MB", "capacity": capacity},
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": IMAGE}}}}
        });
        Command::ScaleSet(SetCommand {
            vmss: VmssRef::new("s", "demo", "web"),
            change: SetChange::Put(Box::new(shoal_model::vmss::parse_typed(&body).unwrap())),
            preconditions: Preconditions::default(),
        })
    }

    #[tokio::test]
    async fn a_put_writes_the_set_and_its_operation_in_one_transaction() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ex = executor(store.clone(), 10);
        let done = ex.execute(put(3)).await.unwrap();
        assert!(done.writes.created);
        let op = done.writes.operation.unwrap();
        let set = kv::get_json::<VmssRecord>(&*store, "vmss/s/demo/web")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Some(set.revision), done.revision);
        assert_eq!(set.value.operation.as_deref(), Some(op.id.as_str()));
        assert!(store
            .get(&shoal_model::records::operation_key(&op.id))
            .await
            .unwrap()
            .is_some());
        // Above this server's limit: refused, nothing written.
        let err = ex.execute(put(11)).await.unwrap_err();
        let CommandError::Rejected(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(e.target.as_deref(), Some("sku.capacity"));
    }

    #[tokio::test]
    async fn autoscale_loses_to_a_write_it_did_not_see() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ex = executor(store.clone(), 10);
        let first = ex.execute(put(2)).await.unwrap().revision.unwrap();
        ex.execute(put(4)).await.unwrap();
        let eval = AutoscaleEvaluation {
            setting_key: "autoscale/s/demo/auto".into(),
            vmss: VmssRef::new("s", "demo", "web"),
            set_revision: first,
            decision: crate::autoscale::Decision {
                profile: None,
                current: 2,
                new_capacity: Some(3),
                blocked: None,
                reason: "r".into(),
                metrics: vec![],
            },
        };
        let err = ex.execute(Command::Autoscale(eval)).await.unwrap_err();
        assert!(matches!(err, CommandError::Conflict(_)), "{err:?}");
        let set = kv::get_json::<VmssRecord>(&*store, "vmss/s/demo/web")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(set.value.model.capacity(), 4);
        assert!(
            kv::get_json::<History>(&*store, "autoscale-history/s/demo/auto")
                .await
                .unwrap()
                .is_none()
        );
    }
}
