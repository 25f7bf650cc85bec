//! What differs between the two kinds, behind one trait, so that the controller loop
//! (finalizers, pausing, ownership, status writes, events, requeues) is written once.

use std::future::Future;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Context;
use crate::api::validate::{parse_duration, MIN_REFRESH_INTERVAL};
use crate::api::{
    Condition, ConflictStatus, ManagementPolicy, RetainedMessage, RetainedMessageStatus,
    ThingShadow, ThingShadowStatus,
};
use crate::dataplane::DataPlaneError;
use crate::planner::tenancy::Target;
use crate::sync::{PayloadInput, SyncEvent, SyncOptions};

/// The result of one sync pass, whatever the kind.
pub struct Synced<S> {
    pub status: S,
    pub events: Vec<SyncEvent>,
    pub ready: bool,
    /// The pass wrote or published.
    pub wrote: bool,
}

/// A kind the operator manages.
pub trait Managed:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    type Status: Serialize + DeserializeOwned + Clone + Default + PartialEq + Send + Sync;

    fn status(&self) -> Option<&Self::Status>;
    fn management_policy(&self) -> ManagementPolicy;
    /// The thing/shadow (or topic) the resource writes to: two resources with the same
    /// key must not both write.
    fn target_key(&self) -> String;
    /// A short human form of the target, for messages.
    fn target_display(&self) -> String;
    /// The thing or topic, as the namespace allow-lists see it.
    fn tenancy_target(&self) -> Target<'_>;
    /// The same, from a [`Managed::target_key`].
    fn tenancy_target_of_key(key: &str) -> Target<'_>;
    /// Why this resource makes no call: `owner` (`namespace/name`) owns its target.
    fn duplicate_of(&self, owner: &str) -> crate::api::validate::FieldError;
    fn refresh_interval(&self) -> &str;
    fn conditions(status: &Self::Status) -> &[Condition];
    fn conditions_mut(status: &mut Self::Status) -> &mut Vec<Condition>;
    fn conflicts(status: &Self::Status) -> Option<&ConflictStatus>;
    fn last_handled_reconcile_at(status: &Self::Status) -> Option<&str>;
    fn set_observed_generation(status: &mut Self::Status, generation: Option<i64>);

    /// One sync pass against the data plane.
    fn sync(
        &self,
        ctx: &Context,
        prior: Self::Status,
        opts: SyncOptions,
    ) -> impl Future<Output = Synced<Self::Status>> + Send;

    /// Deletion cleanup by `deletionPolicy`.
    fn cleanup(
        &self,
        ctx: &Context,
    ) -> impl Future<Output = Result<Vec<SyncEvent>, DataPlaneError>> + Send;

    /// The refresh period; `0s` or an invalid value (unparseable, or below the 1 s floor;
    /// already reported as InvalidSpec) means "only on change", so that an invalid spec
    /// such as `500ms` cannot make the operator spin on the resource.
    fn refresh(&self) -> Option<std::time::Duration> {
        parse_duration(self.refresh_interval())
            .ok()
            .filter(|d| *d >= MIN_REFRESH_INTERVAL)
    }
}

impl Managed for ThingShadow {
    const KIND: &'static str = "ThingShadow";
    type Status = ThingShadowStatus;

    fn status(&self) -> Option<&ThingShadowStatus> {
        self.status.as_ref()
    }
    fn management_policy(&self) -> ManagementPolicy {
        self.spec.management_policy
    }
    fn target_key(&self) -> String {
        // A NUL cannot occur in a thing or shadow name.
        match &self.spec.shadow_name {
            Some(shadow) => format!("{}\0{shadow}", self.spec.thing_name),
            None => self.spec.thing_name.clone(),
        }
    }
    fn target_display(&self) -> String {
        crate::api::validate::shadow_target(&self.spec.thing_name, self.spec.shadow_name.as_deref())
    }
    fn duplicate_of(&self, owner: &str) -> crate::api::validate::FieldError {
        crate::api::validate::duplicate_shadow(&self.spec, Self::KIND, owner)
    }
    fn tenancy_target(&self) -> Target<'_> {
        Target::Thing(&self.spec.thing_name)
    }
    fn tenancy_target_of_key(key: &str) -> Target<'_> {
        Target::Thing(key.split('\0').next().unwrap_or(key))
    }
    fn refresh_interval(&self) -> &str {
        &self.spec.refresh_interval
    }
    fn conditions(status: &ThingShadowStatus) -> &[Condition] {
        &status.conditions
    }
    fn conditions_mut(status: &mut ThingShadowStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn conflicts(status: &ThingShadowStatus) -> Option<&ConflictStatus> {
        status.conflicts.as_ref()
    }
    fn last_handled_reconcile_at(status: &ThingShadowStatus) -> Option<&str> {
        status.last_handled_reconcile_at.as_deref()
    }
    fn set_observed_generation(status: &mut ThingShadowStatus, generation: Option<i64>) {
        status.observed_generation = generation;
    }

    async fn sync(
        &self,
        ctx: &Context,
        prior: ThingShadowStatus,
        opts: SyncOptions,
    ) -> Synced<ThingShadowStatus> {
        let result = ctx.syncer.sync_shadow(&self.spec, &prior, &opts).await;
        Synced {
            status: result.status,
            events: result.events,
            ready: result.ready,
            wrote: result.writes > 0,
        }
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<SyncEvent>, DataPlaneError> {
        let status = self.status.clone().unwrap_or_default();
        ctx.syncer.cleanup_shadow(&self.spec, &status).await
    }
}

impl Managed for RetainedMessage {
    const KIND: &'static str = "RetainedMessage";
    type Status = RetainedMessageStatus;

    fn status(&self) -> Option<&RetainedMessageStatus> {
        self.status.as_ref()
    }
    fn management_policy(&self) -> ManagementPolicy {
        self.spec.management_policy
    }
    fn target_key(&self) -> String {
        self.spec.topic.clone()
    }
    fn target_display(&self) -> String {
        format!("topic {}", self.spec.topic)
    }
    fn tenancy_target(&self) -> Target<'_> {
        Target::Topic(&self.spec.topic)
    }
    fn tenancy_target_of_key(key: &str) -> Target<'_> {
        Target::Topic(key)
    }
    fn duplicate_of(&self, owner: &str) -> crate::api::validate::FieldError {
        crate::api::validate::duplicate_topic(&self.spec, Self::KIND, owner)
    }
    fn refresh_interval(&self) -> &str {
        &self.spec.refresh_interval
    }
    fn conditions(status: &RetainedMessageStatus) -> &[Condition] {
        &status.conditions
    }
    fn conditions_mut(status: &mut RetainedMessageStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
    fn conflicts(status: &RetainedMessageStatus) -> Option<&ConflictStatus> {
        status.conflicts.as_ref()
    }
    fn last_handled_reconcile_at(status: &RetainedMessageStatus) -> Option<&str> {
        status.last_handled_reconcile_at.as_deref()
    }
    fn set_observed_generation(status: &mut RetainedMessageStatus, generation: Option<i64>) {
        status.observed_generation = generation;
    }

    async fn sync(
        &self,
        ctx: &Context,
        prior: RetainedMessageStatus,
        opts: SyncOptions,
    ) -> Synced<RetainedMessageStatus> {
        let payload = referenced_payload(self, ctx).await;
        let result = ctx
            .syncer
            .sync_retained(&self.spec, &prior, payload, &opts)
            .await;
        Synced {
            status: result.status,
            events: result.events,
            ready: result.ready,
            wrote: result.publishes > 0,
        }
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<SyncEvent>, DataPlaneError> {
        ctx.syncer.cleanup_retained(&self.spec).await
    }
}

/// Reads a `secretKeyRef`/`configMapKeyRef` payload from the resource's namespace. The
/// bytes go straight into the publish; they are never logged or put in status.
async fn referenced_payload(resource: &RetainedMessage, ctx: &Context) -> PayloadInput {
    let namespace = resource.namespace().unwrap_or_else(|| "default".into());
    let source = &resource.spec.payload;
    if let Some(key_ref) = &source.secret_key_ref {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let found = api.get_opt(&key_ref.name).await;
        PayloadInput::Referenced(match found {
            Ok(Some(secret)) => secret
                .data
                .and_then(|mut data| data.remove(&key_ref.key))
                .map(|bytes| bytes.0)
                .or_else(|| {
                    secret
                        .string_data
                        .and_then(|mut data| data.remove(&key_ref.key))
                        .map(String::into_bytes)
                })
                .ok_or_else(|| {
                    format!(
                        "spec.payload.secretKeyRef: Secret {namespace}/{} has no key {:?}",
                        key_ref.name, key_ref.key
                    )
                }),
            Ok(None) => Err(format!(
                "spec.payload.secretKeyRef: Secret {namespace}/{} not found",
                key_ref.name
            )),
            Err(err) => Err(format!(
                "spec.payload.secretKeyRef: cannot read Secret {namespace}/{}: {}",
                key_ref.name,
                kube_reason(&err)
            )),
        })
    } else if let Some(key_ref) = &source.config_map_key_ref {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
        let found = api.get_opt(&key_ref.name).await;
        PayloadInput::Referenced(match found {
            Ok(Some(map)) => map
                .data
                .and_then(|mut data| data.remove(&key_ref.key))
                .map(String::into_bytes)
                .or_else(|| {
                    map.binary_data
                        .and_then(|mut data| data.remove(&key_ref.key))
                        .map(|bytes| bytes.0)
                })
                .ok_or_else(|| {
                    format!(
                        "spec.payload.configMapKeyRef: ConfigMap {namespace}/{} has no key {:?}",
                        key_ref.name, key_ref.key
                    )
                }),
            Ok(None) => Err(format!(
                "spec.payload.configMapKeyRef: ConfigMap {namespace}/{} not found",
                key_ref.name
            )),
            Err(err) => Err(format!(
                "spec.payload.configMapKeyRef: cannot read ConfigMap {namespace}/{}: {}",
                key_ref.name,
                kube_reason(&err)
            )),
        })
    } else {
        PayloadInput::Inline
    }
}

/// A Kubernetes error without request details.
fn kube_reason(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        _ => "the API server did not answer".into(),
    }
}
