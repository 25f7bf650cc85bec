//! The two kinds, each described once for every front end.
//!
//! [`Kind`] is everything `shadowsync apply`/`diff` and `shadowsync run` need to know
//! about a kind that does not depend on where the resource comes from: its target key
//! (two resources with the same key must not both write), how the target reads in
//! messages, the status accessors, the duplicate-target refusal, the refresh interval,
//! and the sync pass and deletion cleanup through [`Syncer`]. The operator adds only
//! what needs a cluster (`operator::kinds::Managed`: reading Secrets and ConfigMaps, the
//! kube `Resource` bound); the CLI adds only what needs its state file
//! (`cli::state::Stored`).

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::validate::{
    duplicate_shadow, duplicate_topic, parse_duration, shadow_target, FieldError,
    MIN_REFRESH_INTERVAL,
};
use crate::api::{
    Condition, ConflictStatus, ManagementPolicy, RetainedMessage, RetainedMessageStatus,
    ThingShadow, ThingShadowStatus,
};
use crate::dataplane::DataPlaneError;
use crate::planner::tenancy::Target;
use crate::sync::{PayloadInput, SyncEvent, SyncOptions, Syncer};

/// The result of one sync pass, whatever the kind.
#[derive(Debug)]
pub struct Synced<S> {
    pub status: S,
    pub events: Vec<SyncEvent>,
    pub ready: bool,
    /// The pass wrote or published.
    pub wrote: bool,
    /// A dry run (`diff`): one line per change a write would make (`+`, `-` or `~`,
    /// then the path or field). Empty when the pass was not a dry run.
    pub changes: Vec<String>,
}

/// A kind shadowsync manages.
pub trait Kind:
    Clone + Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    /// The Kubernetes kind.
    const KIND: &'static str;
    type Status: Serialize
        + DeserializeOwned
        + Clone
        + Default
        + PartialEq
        + std::fmt::Debug
        + Send
        + Sync;

    fn status(&self) -> Option<&Self::Status>;
    fn management_policy(&self) -> ManagementPolicy;
    /// The thing/shadow (or topic) the resource writes to: two resources of the kind
    /// with the same key must not both write. A NUL cannot occur in a thing or shadow
    /// name, so it separates them.
    fn target_key(&self) -> String;
    /// The target as a sentence names it ("the classic shadow of thing lamp").
    fn target_display(&self) -> String;
    /// The target in a table column ("lamp (classic)", "lamp/config", a topic).
    fn target_column(&self) -> String;
    /// The thing or topic, as the namespace allow-lists see it.
    fn tenancy_target(&self) -> Target<'_>;
    /// The same, from a [`Kind::target_key`].
    fn tenancy_target_of_key(key: &str) -> Target<'_>;
    /// Why this resource makes no call: `owner` (`namespace/name`) owns its target.
    fn duplicate_of(&self, owner: &str) -> FieldError;
    /// The spec fields that name the target, as `(field path, value)`; immutable once
    /// the resource exists.
    fn target_fields(&self) -> Vec<(&'static str, String)>;
    /// The payload comes from a Secret or ConfigMap, which only a cluster can read.
    fn references_payload(&self) -> bool;
    fn refresh_interval(&self) -> &str;
    fn conditions(status: &Self::Status) -> &[Condition];
    fn conditions_mut(status: &mut Self::Status) -> &mut Vec<Condition>;
    fn conflicts(status: &Self::Status) -> Option<&ConflictStatus>;
    fn last_handled_reconcile_at(status: &Self::Status) -> Option<&str>;
    fn set_observed_generation(status: &mut Self::Status, generation: Option<i64>);

    /// One sync pass against the data plane. `payload` is what the front end could read
    /// of a referenced payload ([`PayloadInput::Inline`] when there is no reference).
    fn sync(
        &self,
        syncer: &Syncer,
        prior: Self::Status,
        payload: PayloadInput,
        opts: &SyncOptions,
    ) -> impl Future<Output = Synced<Self::Status>> + Send;

    /// Deletion cleanup by `deletionPolicy`.
    fn cleanup(
        &self,
        syncer: &Syncer,
    ) -> impl Future<Output = Result<Vec<SyncEvent>, DataPlaneError>> + Send;

    /// The refresh period; `0s` or an invalid value (unparseable, or below the 1 s floor;
    /// already reported as InvalidSpec) means "only on change", so that an invalid spec
    /// such as `500ms` cannot make the operator spin on the resource.
    fn refresh(&self) -> Option<Duration> {
        parse_duration(self.refresh_interval())
            .ok()
            .filter(|d| *d >= MIN_REFRESH_INTERVAL)
    }
}

/// [`Kind::target_fields`] of a `ThingShadow` naming `thing` and `shadow`.
pub fn shadow_target_fields(thing: &str, shadow: Option<&str>) -> Vec<(&'static str, String)> {
    vec![
        ("spec.thingName", thing.to_string()),
        ("spec.shadowName", shadow.unwrap_or("(classic)").to_string()),
    ]
}

impl Kind for ThingShadow {
    const KIND: &'static str = "ThingShadow";
    type Status = ThingShadowStatus;

    fn status(&self) -> Option<&ThingShadowStatus> {
        self.status.as_ref()
    }
    fn management_policy(&self) -> ManagementPolicy {
        self.spec.management_policy
    }
    fn target_key(&self) -> String {
        match &self.spec.shadow_name {
            Some(shadow) => format!("{}\0{shadow}", self.spec.thing_name),
            None => self.spec.thing_name.clone(),
        }
    }
    fn target_display(&self) -> String {
        shadow_target(&self.spec.thing_name, self.spec.shadow_name.as_deref())
    }
    fn target_column(&self) -> String {
        match &self.spec.shadow_name {
            Some(name) => format!("{}/{}", self.spec.thing_name, name),
            None => format!("{} (classic)", self.spec.thing_name),
        }
    }
    fn tenancy_target(&self) -> Target<'_> {
        Target::Thing(&self.spec.thing_name)
    }
    fn tenancy_target_of_key(key: &str) -> Target<'_> {
        Target::Thing(key.split('\0').next().unwrap_or(key))
    }
    fn duplicate_of(&self, owner: &str) -> FieldError {
        duplicate_shadow(&self.spec, Self::KIND, owner)
    }
    fn target_fields(&self) -> Vec<(&'static str, String)> {
        shadow_target_fields(&self.spec.thing_name, self.spec.shadow_name.as_deref())
    }
    fn references_payload(&self) -> bool {
        false
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
        syncer: &Syncer,
        prior: ThingShadowStatus,
        _payload: PayloadInput,
        opts: &SyncOptions,
    ) -> Synced<ThingShadowStatus> {
        let result = syncer.sync_shadow(&self.spec, &prior, opts).await;
        let changes = if opts.dry_run {
            result
                .planned
                .iter()
                .map(|c| {
                    let old = crate::sync::show(c.old.as_ref());
                    match &c.new {
                        None => format!("- {}: {old} -> (removed)", c.path),
                        Some(new) if c.old.is_none() => format!("+ {}: {}", c.path, new),
                        Some(new) => format!("~ {}: {old} -> {new}", c.path),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Synced {
            status: result.status,
            events: result.events,
            ready: result.ready,
            wrote: result.writes > 0,
            changes,
        }
    }

    async fn cleanup(&self, syncer: &Syncer) -> Result<Vec<SyncEvent>, DataPlaneError> {
        let status = self.status.clone().unwrap_or_default();
        syncer.cleanup_shadow(&self.spec, &status).await
    }
}

impl Kind for RetainedMessage {
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
    fn target_column(&self) -> String {
        self.spec.topic.clone()
    }
    fn tenancy_target(&self) -> Target<'_> {
        Target::Topic(&self.spec.topic)
    }
    fn tenancy_target_of_key(key: &str) -> Target<'_> {
        Target::Topic(key)
    }
    fn duplicate_of(&self, owner: &str) -> FieldError {
        duplicate_topic(&self.spec, Self::KIND, owner)
    }
    fn target_fields(&self) -> Vec<(&'static str, String)> {
        vec![("spec.topic", self.spec.topic.clone())]
    }
    fn references_payload(&self) -> bool {
        self.spec.payload.secret_key_ref.is_some() || self.spec.payload.config_map_key_ref.is_some()
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
        syncer: &Syncer,
        prior: RetainedMessageStatus,
        payload: PayloadInput,
        opts: &SyncOptions,
    ) -> Synced<RetainedMessageStatus> {
        let result = syncer
            .sync_retained(&self.spec, &prior, payload, opts)
            .await;
        let changes = if opts.dry_run {
            result
                .planned
                .iter()
                .flat_map(|p| p.changes.iter().map(|c| format!("~ {c}")))
                .collect()
        } else {
            Vec::new()
        };
        Synced {
            status: result.status,
            events: result.events,
            ready: result.ready,
            wrote: result.publishes > 0,
            changes,
        }
    }

    async fn cleanup(&self, syncer: &Syncer) -> Result<Vec<SyncEvent>, DataPlaneError> {
        syncer.cleanup_retained(&self.spec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(thing: &str, shadow: Option<&str>) -> ThingShadow {
        let mut spec = serde_json::json!({"thingName": thing, "desired": {}});
        if let Some(name) = shadow {
            spec["shadowName"] = name.into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "ThingShadow",
            "metadata": {"name": "x", "namespace": "ns"}, "spec": spec,
        }))
        .expect("a ThingShadow")
    }

    #[test]
    fn shadow_keys_tell_the_classic_shadow_from_named_ones_and_back() {
        let classic = shadow("lamp", None);
        let named = shadow("lamp", Some("config"));
        assert_ne!(classic.target_key(), named.target_key());
        for r in [&classic, &named] {
            assert_eq!(
                ThingShadow::tenancy_target_of_key(&r.target_key()),
                r.tenancy_target()
            );
        }
        assert_eq!(classic.target_column(), "lamp (classic)");
        assert_eq!(named.target_column(), "lamp/config");
    }
}
