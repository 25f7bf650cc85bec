//! One pass of a `ThingShadow`: validate, read, plan, write with the version read,
//! classify 409s, and build the status.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::Utc;
use serde_json::{Map, Value};

use super::{failure, found, record_conflict, rfc3339, truncate, SyncEvent, SyncOptions, Syncer};
use crate::api::validate::validate_thing_shadow;
use crate::api::{
    ConflictPolicy, LastWrite, ManagementPolicy, ShadowDeletionPolicy, ThingShadowSpec,
    ThingShadowStatus,
};
use crate::dataplane::{DataPlaneError, ErrorKind, ShadowDocument, ShadowState};
use crate::planner::conditions::{set_conditions, Health};
use crate::planner::paths::{leaf_paths, lookup};
use crate::planner::shadow::{
    classify_conflict, describe_changes, desired_sha256, mirror, owned_delta_paths, plan_clear,
    plan_shadow, ConflictClass, Ownership, PathChange, ShadowPlan,
};

/// What a pass produced.
#[derive(Clone, Debug)]
pub struct ShadowSyncResult {
    pub status: ThingShadowStatus,
    pub events: Vec<SyncEvent>,
    /// Shadow writes made (0 or 1 unless conflicts forced retries).
    pub writes: u32,
    /// With `dry_run`: the changes a write would make (empty when in sync).
    pub planned: Vec<PathChange>,
    /// Ready=True after this pass.
    pub ready: bool,
}

/// How a pass ended, before it is turned into conditions.
struct Verdict {
    health: Health,
    synced: Option<(bool, &'static str, String)>,
    converged: Option<(bool, &'static str, String)>,
}

impl Verdict {
    fn failed(err: &DataPlaneError) -> Self {
        let (health, synced) = failure(err);
        Verdict {
            health,
            synced,
            converged: None,
        }
    }
}

impl Syncer {
    /// One pass over a `ThingShadow` with the given prior status.
    pub async fn sync_shadow(
        &self,
        spec: &ThingShadowSpec,
        prior: &ThingShadowStatus,
        opts: &SyncOptions,
    ) -> ShadowSyncResult {
        let mut pass = Pass {
            status: prior.clone(),
            events: Vec::new(),
            writes: 0,
            planned: Vec::new(),
        };
        if let Some(at) = &opts.reconcile_requested_at {
            pass.status.last_handled_reconcile_at = Some(at.clone());
        }
        let verdict = match validate_thing_shadow(spec, self.limits()) {
            Err(errors) => {
                let message = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                pass.events
                    .push(SyncEvent::warning("InvalidSpec", message.clone()));
                Verdict {
                    health: Health::Stalled {
                        reason: "InvalidSpec",
                        message: truncate(message, 1024),
                    },
                    synced: None,
                    converged: None,
                }
            }
            Ok(()) => match spec.management_policy {
                ManagementPolicy::Observe => self.observe_shadow(spec, &mut pass).await,
                ManagementPolicy::Manage => self.manage_shadow(spec, prior, opts, &mut pass).await,
            },
        };
        pass.finish(prior, opts, verdict)
    }

    async fn read_shadow(
        &self,
        spec: &ThingShadowSpec,
    ) -> Result<Option<ShadowDocument>, DataPlaneError> {
        found(
            self.dataplane()
                .get_thing_shadow(&spec.thing_name, spec.shadow_name.as_deref())
                .await,
        )
    }

    async fn observe_shadow(&self, spec: &ThingShadowSpec, pass: &mut Pass) -> Verdict {
        pass.status.managed_paths.clear();
        match self.read_shadow(spec).await {
            Ok(Some(doc)) => {
                let view = mirror(&doc);
                let pending = owned_delta_paths(view.delta.as_ref(), &all_paths(&view.desired));
                pass.status.shadow = Some(view);
                Verdict {
                    health: Health::Ready {
                        reason: "Observed",
                        message: format!("observing shadow version {}", doc.version),
                    },
                    synced: Some((true, "Observed", "shadow read".into())),
                    converged: Some(converged(&pending)),
                }
            }
            Ok(None) => {
                pass.status.shadow = None;
                Verdict {
                    health: Health::Failed {
                        reason: "NotFound",
                        message: format!("{} does not exist", target(spec)),
                    },
                    synced: Some((true, "Observed", "shadow read".into())),
                    converged: None,
                }
            }
            Err(err) => Verdict::failed(&err),
        }
    }

    async fn manage_shadow(
        &self,
        spec: &ThingShadowSpec,
        prior: &ThingShadowStatus,
        opts: &SyncOptions,
        pass: &mut Pass,
    ) -> Verdict {
        let desired = spec
            .desired
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let spec_paths = leaf_paths(&desired);
        let sha = desired_sha256(&desired);
        let ownership = Ownership::from_status(prior);
        // Under Preserve an out-of-band edit holds writes back only while the spec is the
        // one last confirmed in the cloud: a spec change is the user's new word.
        let spec_changed = prior.applied_desired_sha256.as_deref() != Some(sha.as_str());
        let mut force = opts.force || spec_changed;
        // Paths whose ownership is not settled until a write or an in-sync read confirms
        // the spec: a failed pass must not forget a key it still has to null.
        let claimed: Vec<String> = union(&prior.managed_paths, &spec_paths);

        let mut before = match self.read_shadow(spec).await {
            Ok(doc) => doc,
            Err(err) => {
                pass.status.managed_paths = claimed;
                return Verdict::failed(&err);
            }
        };
        let mut attempt = 0u32;
        loop {
            let plan = plan_shadow(spec, before.as_ref(), &ownership, force);
            let (update, changes, out_of_band) = match plan {
                ShadowPlan::InSync => {
                    return self.confirmed(pass, before.as_ref(), spec_paths, sha);
                }
                ShadowPlan::Preserve { out_of_band } => {
                    return self.preserved(prior, pass, before.as_ref(), &out_of_band, claimed);
                }
                ShadowPlan::Write {
                    update,
                    changes,
                    out_of_band,
                } => (update, changes, out_of_band),
            };
            // The document limit applies to the merged document: a spec that fits alone can
            // still overflow next to what the device reported. Refuse it here, as an invalid
            // spec, instead of sending a write that can only answer 413.
            if let Some(error) = merged_too_large(before.as_ref(), &update, self.limits()) {
                let message = error.to_string();
                pass.events
                    .push(SyncEvent::warning("InvalidSpec", message.clone()));
                pass.status.managed_paths = claimed;
                pass.status.shadow = before.as_ref().map(mirror);
                return Verdict {
                    health: Health::Stalled {
                        reason: "InvalidSpec",
                        message: truncate(message, 1024),
                    },
                    synced: None,
                    converged: None,
                };
            }
            if opts.dry_run {
                pass.planned = changes;
                pass.status.shadow = before.as_ref().map(mirror);
                return Verdict {
                    health: Health::Progressing {
                        reason: "Pending",
                        message: "changes planned (dry run)".into(),
                    },
                    synced: None,
                    converged: None,
                };
            }
            let now = rfc3339(Utc::now());
            if !out_of_band.is_empty() {
                record_conflict(
                    &mut pass.status.conflicts,
                    "OutOfBandEdit",
                    prior.last_write.as_ref().map(|w| w.version),
                    before.as_ref().map(|d| d.version),
                    &now,
                );
                pass.events.push(SyncEvent::warning(
                    "DriftCorrected",
                    format!(
                        "owned paths changed outside shadowsync were written back: {}",
                        describe_changes(&out_of_band)
                    ),
                ));
            }
            let mut body = update.clone();
            if let (Some(doc), Some(object)) = (&before, body.as_object_mut()) {
                object.insert("version".into(), Value::from(doc.version));
            }
            let payload = Bytes::from(body.to_string());
            let result = self
                .dataplane()
                .update_thing_shadow(&spec.thing_name, spec.shadow_name.as_deref(), payload)
                .await;
            match result {
                Ok(response) => {
                    pass.writes += 1;
                    pass.status.last_write = Some(LastWrite {
                        version: response.version,
                        timestamp: response.timestamp,
                    });
                    let after = written(before.as_ref(), &update, &response);
                    pass.events.push(SyncEvent::normal(
                        "Synced",
                        format!(
                            "wrote {} path(s) to {}; version {}",
                            changes.len(),
                            target(spec),
                            response.version
                        ),
                    ));
                    return self.confirmed(pass, Some(&after), spec_paths, sha);
                }
                Err(err) if err.kind == ErrorKind::Conflict => {
                    attempt += 1;
                    // Back off before the re-read, never between the re-read and the
                    // write: the write carries the version of that read, and a device
                    // that reports every few milliseconds makes any version stale
                    // within one pause.
                    if attempt < self.conflict_attempts {
                        self.conflict_pause(attempt).await;
                    }
                    let after = match self.read_shadow(spec).await {
                        Ok(doc) => doc,
                        Err(err) => {
                            pass.status.managed_paths = claimed;
                            return Verdict::failed(&err);
                        }
                    };
                    let expected = before.as_ref().map(|d| d.version);
                    let actual = after.as_ref().map(|d| d.version);
                    let class =
                        classify_conflict(before.as_ref(), after.as_ref(), &claimed, &spec_paths);
                    match not_our_write(class, &update) {
                        ConflictClass::Benign => record_conflict(
                            &mut pass.status.conflicts,
                            "VersionConflict",
                            expected,
                            actual,
                            &now,
                        ),
                        ConflictClass::OutOfBand(edits) => {
                            record_conflict(
                                &mut pass.status.conflicts,
                                "OutOfBandEdit",
                                expected,
                                actual,
                                &now,
                            );
                            if spec.conflict_policy == ConflictPolicy::Preserve && !force {
                                return self.preserved(
                                    prior,
                                    pass,
                                    after.as_ref(),
                                    &edits,
                                    claimed,
                                );
                            }
                            pass.events.push(SyncEvent::warning(
                                "Conflict",
                                format!(
                                    "owned paths changed while writing; writing ours back: {}",
                                    describe_changes(&edits)
                                ),
                            ));
                            force = true;
                        }
                    }
                    if attempt >= self.conflict_attempts {
                        pass.status.managed_paths = claimed;
                        pass.status.shadow = after.as_ref().map(mirror);
                        let message = format!(
                            "the shadow kept changing: gave up after {attempt} version conflicts; will retry"
                        );
                        return Verdict {
                            health: Health::Progressing {
                                reason: "Conflict",
                                message: message.clone(),
                            },
                            synced: Some((false, "Conflict", message)),
                            converged: None,
                        };
                    }
                    before = after;
                }
                Err(err) => {
                    pass.status.managed_paths = claimed;
                    pass.status.shadow = before.as_ref().map(mirror);
                    return Verdict::failed(&err);
                }
            }
        }
    }

    /// The cloud matches the spec on every owned path.
    fn confirmed(
        &self,
        pass: &mut Pass,
        doc: Option<&ShadowDocument>,
        spec_paths: Vec<String>,
        sha: String,
    ) -> Verdict {
        let view = doc.map(mirror);
        let pending = owned_delta_paths(view.as_ref().and_then(|v| v.delta.as_ref()), &spec_paths);
        let version = view.as_ref().map(|v| v.version);
        pass.status.shadow = view;
        pass.status.managed_paths = spec_paths;
        pass.status.applied_desired_sha256 = Some(sha);
        let message = match version {
            Some(v) => format!("shadow version {v} matches the spec"),
            None => "nothing to write: the spec declares no desired state".into(),
        };
        Verdict {
            health: Health::Ready {
                reason: "InSync",
                message: message.clone(),
            },
            synced: Some((true, "InSync", message)),
            converged: Some(converged(&pending)),
        }
    }

    /// `conflictPolicy: Preserve` met an out-of-band edit: write nothing.
    fn preserved(
        &self,
        prior: &ThingShadowStatus,
        pass: &mut Pass,
        doc: Option<&ShadowDocument>,
        edits: &[PathChange],
        claimed: Vec<String>,
    ) -> Verdict {
        let version = doc.map(|d| d.version);
        // Count a conflict once per cloud version, not on every refresh while stalled.
        let seen = prior.conflicts.as_ref().is_some_and(|c| {
            c.actual_version == version && c.last_reason.as_deref() == Some("OutOfBandEdit")
        });
        let message = truncate(
            format!(
                "owned paths were changed outside shadowsync and conflictPolicy is Preserve; \
                 change the spec or set the reconcile-requested-at annotation to write ours: {}",
                describe_changes(edits)
            ),
            1024,
        );
        if !seen {
            record_conflict(
                &mut pass.status.conflicts,
                "OutOfBandEdit",
                prior.last_write.as_ref().map(|w| w.version),
                version,
                &rfc3339(Utc::now()),
            );
            pass.events
                .push(SyncEvent::warning("Conflict", message.clone()));
        }
        pass.status.shadow = doc.map(mirror);
        pass.status.managed_paths = claimed;
        Verdict {
            health: Health::Stalled {
                reason: "Conflict",
                message: message.clone(),
            },
            synced: Some((false, "Conflict", message)),
            converged: None,
        }
    }

    /// Deletion cleanup by `deletionPolicy`; `Ok` once nothing is left to do (including
    /// a shadow that is already gone). `Observe` resources never write.
    pub async fn cleanup_shadow(
        &self,
        spec: &ThingShadowSpec,
        status: &ThingShadowStatus,
    ) -> Result<Vec<SyncEvent>, DataPlaneError> {
        if spec.management_policy == ManagementPolicy::Observe {
            return Ok(Vec::new());
        }
        let thing = spec.thing_name.as_str();
        let shadow = spec.shadow_name.as_deref();
        match spec.deletion_policy {
            ShadowDeletionPolicy::Retain => Ok(vec![SyncEvent::normal(
                "Retained",
                format!("{} left as it is (deletionPolicy Retain)", target(spec)),
            )]),
            ShadowDeletionPolicy::Delete => {
                match found(self.dataplane().delete_thing_shadow(thing, shadow).await)? {
                    Some(deleted) => Ok(vec![SyncEvent::normal(
                        "Deleted",
                        format!("deleted {} at version {}", target(spec), deleted.version),
                    )]),
                    None => Ok(Vec::new()),
                }
            }
            ShadowDeletionPolicy::ClearDesired => {
                // The spec's own leaves count as owned even if no write ever landed.
                let desired = spec.desired.as_ref().and_then(Value::as_object);
                let owned = union(
                    &status.managed_paths,
                    &desired.map(leaf_paths).unwrap_or_default(),
                );
                let mut attempt = 0;
                loop {
                    let Some(doc) = self.read_shadow(spec).await? else {
                        return Ok(Vec::new());
                    };
                    let Some(mut update) = plan_clear(&owned, Some(&doc)) else {
                        return Ok(Vec::new());
                    };
                    if let Some(object) = update.as_object_mut() {
                        object.insert("version".into(), Value::from(doc.version));
                    }
                    match self
                        .dataplane()
                        .update_thing_shadow(thing, shadow, Bytes::from(update.to_string()))
                        .await
                    {
                        Ok(done) => {
                            return Ok(vec![SyncEvent::normal(
                                "Cleared",
                                format!(
                                    "nulled {} owned path(s) of {}; version {}",
                                    owned.len(),
                                    target(spec),
                                    done.version
                                ),
                            )])
                        }
                        Err(err) if err.kind == ErrorKind::Conflict => {
                            attempt += 1;
                            if attempt >= self.conflict_attempts {
                                return Err(err);
                            }
                            self.conflict_pause(attempt).await;
                        }
                        Err(err) if err.kind == ErrorKind::ResourceNotFound => {
                            return Ok(Vec::new())
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
        }
    }
}

/// Mutable result of a pass.
struct Pass {
    status: ThingShadowStatus,
    events: Vec<SyncEvent>,
    writes: u32,
    planned: Vec<PathChange>,
}

impl Pass {
    fn finish(
        mut self,
        prior: &ThingShadowStatus,
        opts: &SyncOptions,
        verdict: Verdict,
    ) -> ShadowSyncResult {
        let now = rfc3339(Utc::now());
        self.status.observed_generation = opts.generation;
        let ready = matches!(verdict.health, Health::Ready { .. });
        set_conditions(
            &mut self.status.conditions,
            opts.generation,
            &now,
            &verdict.health,
            verdict.synced,
            verdict.converged,
        );
        // lastSyncTime moves only when something changed, so that a refresh that finds
        // everything in sync leaves the status byte-identical (no status write).
        self.status.last_sync_time = prior.last_sync_time.clone();
        if self.writes > 0 || self.status != *prior {
            self.status.last_sync_time = Some(now);
        }
        ShadowSyncResult {
            status: self.status,
            events: self.events,
            writes: self.writes,
            planned: self.planned,
            ready,
        }
    }
}

/// The document after our write, computed from the read before it: the write carried
/// that read's version, so nothing else can have landed in between.
fn written(
    before: Option<&ShadowDocument>,
    update: &Value,
    response: &ShadowDocument,
) -> ShadowDocument {
    let mut desired = before
        .and_then(|d| d.state.desired.clone())
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(patch) = update.pointer("/state/desired") {
        crate::shadow::merge(&mut desired, patch);
    }
    let reported = before.and_then(|d| d.state.reported.clone());
    let delta = match (&desired, &reported) {
        (d, Some(r)) => crate::shadow::delta(d, r),
        (d, None) => crate::shadow::delta(d, &Value::Object(Map::new())),
    };
    let empty = desired.as_object().is_some_and(Map::is_empty);
    ShadowDocument {
        state: ShadowState {
            desired: (!empty).then_some(desired),
            reported,
            delta,
        },
        metadata: before.map(|d| d.metadata.clone()).unwrap_or_default(),
        version: response.version,
        timestamp: response.timestamp,
        client_token: None,
    }
}

fn converged(pending: &[String]) -> (bool, &'static str, String) {
    if pending.is_empty() {
        (
            true,
            "DeviceConverged",
            "the device reported every owned desired value".into(),
        )
    } else {
        (
            false,
            "AwaitingDevice",
            truncate(
                format!("the device has not reported: {}", pending.join(", ")),
                512,
            ),
        )
    }
}

fn all_paths(desired: &Option<Value>) -> Vec<String> {
    desired
        .as_ref()
        .and_then(Value::as_object)
        .map(leaf_paths)
        .unwrap_or_default()
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    a.iter()
        .chain(b)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `classic shadow of kitchen-lamp` / `shadow "config" of kitchen-lamp`.
pub(crate) fn target(spec: &ThingShadowSpec) -> String {
    match &spec.shadow_name {
        Some(name) => format!("shadow {name:?} of {}", spec.thing_name),
        None => format!("classic shadow of {}", spec.thing_name),
    }
}

/// A value for a message or a diff line, cut short.
pub fn show(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".into(),
        Some(v) => truncate(v.to_string(), 80),
    }
}

/// The write `update` would make the shadow larger than the document limit: the error that
/// says so, naming `spec.desired`.
fn merged_too_large(
    before: Option<&ShadowDocument>,
    update: &Value,
    limits: &crate::dataplane::ShadowLimits,
) -> Option<crate::api::validate::FieldError> {
    let section = |value: Option<&Value>| match value {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    let mut desired = Value::Object(section(before.and_then(|d| d.state.desired.as_ref())));
    if let Some(patch) = update.pointer("/state/desired") {
        crate::shadow::merge(&mut desired, patch);
    }
    let desired = section(Some(&desired));
    let reported = section(before.and_then(|d| d.state.reported.as_ref()));
    let size = crate::shadow::document_size(&desired, &reported);
    (size > limits.max_document_bytes).then(|| {
        crate::api::validate::FieldError::new(
            "spec.desired",
            None,
            format!(
                "merged with the shadow's current document (desired and reported) it would be \
                 {size} bytes, more than the shadow document limit of {} bytes; make it smaller \
                 or have the device report less",
                limits.max_document_bytes
            ),
        )
    })
}

/// Drops from an out-of-band verdict the paths that now hold exactly what `update` (our
/// own write, answered 409) sets: that is our write having been applied with its answer
/// lost and the retry refused, not someone else's edit. What remains is foreign.
fn not_our_write(class: ConflictClass, update: &Value) -> ConflictClass {
    let ConflictClass::OutOfBand(edits) = class else {
        return class;
    };
    let written = update.pointer("/state/desired").unwrap_or(&Value::Null);
    let foreign: Vec<_> = edits
        .into_iter()
        .filter(|edit| match lookup(written, &edit.path) {
            Some(Value::Null) => edit.new.is_some(),
            Some(value) => edit.new.as_ref() != Some(value),
            None => true,
        })
        .collect();
    if foreign.is_empty() {
        ConflictClass::Benign
    } else {
        ConflictClass::OutOfBand(foreign)
    }
}

#[cfg(test)]
mod merged_size_tests {
    use super::*;
    use crate::dataplane::{ShadowDocument, ShadowLimits, ShadowState};
    use serde_json::json;

    fn doc(desired: Value, reported: Value) -> ShadowDocument {
        ShadowDocument {
            state: ShadowState {
                desired: Some(desired),
                reported: Some(reported),
                delta: None,
            },
            version: 3,
            ..Default::default()
        }
    }

    fn limits(max_document_bytes: usize) -> ShadowLimits {
        ShadowLimits {
            max_document_bytes,
            ..ShadowLimits::default()
        }
    }

    #[test]
    fn a_write_that_fits_alone_can_overflow_next_to_the_reported_state() {
        let before = doc(json!({}), json!({"log": "r".repeat(60)}));
        let update = json!({"state": {"desired": {"notes": "d".repeat(60)}}});
        assert!(merged_too_large(None, &update, &limits(100)).is_none());
        let error = merged_too_large(Some(&before), &update, &limits(100)).expect("too large");
        assert_eq!(error.field, "spec.desired");
        assert!(error
            .rule
            .contains("more than the shadow document limit of 100 bytes"));
    }

    #[test]
    fn keys_the_write_removes_do_not_count() {
        // The write nulls a large key it owned and sets a small one: the result is small.
        let before = doc(json!({"old": "o".repeat(80)}), json!({}));
        let update = json!({"state": {"desired": {"old": null, "new": 1}}});
        assert!(merged_too_large(Some(&before), &update, &limits(100)).is_none());
        // Exactly at the limit is allowed, one byte more is not.
        let size =
            crate::shadow::document_size(json!({"new": 1}).as_object().unwrap(), &Map::new());
        assert!(merged_too_large(Some(&before), &update, &limits(size)).is_none());
        assert!(merged_too_large(Some(&before), &update, &limits(size - 1)).is_some());
    }
}
