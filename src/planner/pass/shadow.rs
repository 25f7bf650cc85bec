//! One pass of a `ThingShadow`: validate, read, plan, write with the version read,
//! classify 409s, and the status, conditions and events that come out of it.
//!
//! [`ShadowPass`] holds the pass; the caller performs each [`ShadowStep`] and hands the
//! answer back. Besides the module invariants in [`super`]:
//! - `managedPaths` after a pass holds only paths that the prior `managedPaths` or the
//!   spec's leaves hold: exactly the spec's leaves once the cloud is confirmed to match
//!   them (Ready), the union of both after a failed read or write, so that a failed pass
//!   never forgets a key it still has to null. `Observe` owns nothing;
//! - Ready=True under `Manage` only when the cloud matches the spec on every owned path;
//!   Converged is evaluated only then (and under `Observe`), and is True exactly when no
//!   owned path is in `delta`;
//! - an out-of-band edit is counted in `conflicts` when a write undoes it or a 409 shows
//!   it, and under `Preserve` once per cloud version; our own write, even one whose
//!   answer was lost, is never counted as one.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    begin, conclude, edit_already_counted, record_conflict, rfc3339, truncate, Check, SyncEvent,
    SyncOptions, Verdict,
};
use crate::api::validate::validate_thing_shadow;
use crate::api::{ConflictPolicy, LastWrite, ManagementPolicy, ThingShadowSpec, ThingShadowStatus};
use crate::dataplane::{DataPlaneError, ErrorKind, ShadowDocument, ShadowLimits};
use crate::planner::conditions::{ConditionState, Health, Reason};
use crate::planner::paths::leaf_paths;
use crate::planner::shadow::{
    after_write, classify_conflict, describe_changes, desired_sha256, merged_too_large, mirror,
    not_our_write, owned_delta_paths, plan_shadow, ConflictClass, Ownership, PathChange,
    ShadowPlan,
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

/// The next data-plane call of a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowStep {
    /// GetThingShadow (a 404 is `Ok(None)`), answered with [`ShadowPass::read`].
    ///
    /// `pause`: a write just answered 409, and another may follow this re-read; wait the
    /// backoff of conflict attempt `pause` (1-based) first. The backoff goes before the
    /// re-read, never between a read and the write based on it: the write carries the
    /// version of that read, and a device that reports every few milliseconds makes any
    /// version stale within one pause.
    Read { pause: Option<u32> },
    /// UpdateThingShadow with this body, answered with [`ShadowPass::wrote`].
    Write(Bytes),
    /// No more calls: [`ShadowPass::finish`] gives the result.
    Done,
}

/// One pass over a `ThingShadow` with a given prior status.
pub struct ShadowPass<'a> {
    spec: &'a ThingShadowSpec,
    prior: &'a ThingShadowStatus,
    opts: &'a SyncOptions,
    limits: &'a ShadowLimits,
    /// Write attempts before a pass gives up on a shadow that keeps moving (at least 1).
    max_attempts: u32,
    status: ThingShadowStatus,
    events: Vec<SyncEvent>,
    writes: u32,
    planned: Vec<PathChange>,
    stage: Stage,
}

enum Stage {
    Start,
    /// `Observe`: waiting for the one read.
    Observing,
    /// `Manage`: reading, or waiting for a write's answer.
    Managing(Box<Manage>),
    Done(Verdict),
}

/// What a `Manage` pass carries from one call to the next.
struct Manage {
    /// The spec's leaf paths.
    spec_paths: Vec<String>,
    /// [`desired_sha256`] of the spec.
    sha: String,
    ownership: Ownership,
    /// Write over out-of-band edits even under `Preserve`.
    force: bool,
    /// Paths whose ownership is not settled until a write or an in-sync read confirms the
    /// spec: the prior `managedPaths` and the spec's leaves.
    claimed: Vec<String>,
    /// The read the next write is based on (`None`: no shadow).
    before: Option<ShadowDocument>,
    /// Writes answered 409 so far.
    conflicts: u32,
    /// The write sent, while its answer or the re-read after its 409 is awaited.
    sent: Option<Sent>,
}

struct Sent {
    update: Value,
    changes: Vec<PathChange>,
    /// When it was planned: conflicts it runs into are recorded at this time.
    at: String,
}

/// Where a transition leads: another call, or the end of the pass.
enum Flow {
    Call(ShadowStep),
    End(Verdict),
}

impl<'a> ShadowPass<'a> {
    /// `max_attempts` bounds the writes of one pass under version conflicts (at least 1).
    pub fn new(
        spec: &'a ThingShadowSpec,
        prior: &'a ThingShadowStatus,
        opts: &'a SyncOptions,
        limits: &'a ShadowLimits,
        max_attempts: u32,
    ) -> Self {
        Self {
            spec,
            prior,
            opts,
            limits,
            max_attempts: max_attempts.max(1),
            status: begin(prior, opts),
            events: Vec::new(),
            writes: 0,
            planned: Vec::new(),
            stage: Stage::Start,
        }
    }

    /// The first step: a spec that fails validation gets no call at all.
    pub fn start(&mut self) -> ShadowStep {
        debug_assert!(matches!(self.stage, Stage::Start), "start called twice");
        let flow = match validate_thing_shadow(self.spec, self.limits) {
            Err(errors) => {
                let message = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                Flow::End(self.invalid_spec(message))
            }
            Ok(()) => match self.spec.management_policy {
                ManagementPolicy::Observe => {
                    self.status.managed_paths.clear();
                    self.stage = Stage::Observing;
                    Flow::Call(ShadowStep::Read { pause: None })
                }
                ManagementPolicy::Manage => {
                    self.stage =
                        Stage::Managing(Box::new(Manage::new(self.spec, self.prior, self.opts)));
                    Flow::Call(ShadowStep::Read { pause: None })
                }
            },
        };
        self.settle(flow)
    }

    /// The answer to [`ShadowStep::Read`], at `now`.
    pub fn read(
        &mut self,
        answer: Result<Option<ShadowDocument>, DataPlaneError>,
        now: DateTime<Utc>,
    ) -> ShadowStep {
        let flow = match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::Observing => Flow::End(self.observed(answer)),
            Stage::Managing(mut manage) => {
                let flow = match manage.sent.take() {
                    None => self.first_read(&mut manage, answer, now),
                    Some(sent) => self.reread(&mut manage, sent, answer, now),
                };
                self.stage = Stage::Managing(manage);
                flow
            }
            Stage::Start | Stage::Done(_) => unreachable!("read answered without a Read step"),
        };
        self.settle(flow)
    }

    /// The answer to [`ShadowStep::Write`].
    pub fn wrote(&mut self, answer: Result<ShadowDocument, DataPlaneError>) -> ShadowStep {
        let Stage::Managing(manage) = &mut self.stage else {
            unreachable!("wrote answered without a Write step");
        };
        let sent = manage
            .sent
            .take()
            .expect("wrote answered without a Write step");
        let flow = match answer {
            Ok(response) => {
                self.writes += 1;
                self.status.last_write = Some(LastWrite {
                    version: response.version,
                    timestamp: response.timestamp,
                });
                let after = after_write(manage.before.as_ref(), &sent.update, &response);
                self.events.push(SyncEvent::normal(
                    Reason::Synced,
                    format!(
                        "wrote {} path(s) to {}; version {}",
                        sent.changes.len(),
                        target(self.spec),
                        response.version
                    ),
                ));
                let (spec_paths, sha) = (manage.spec_paths.clone(), manage.sha.clone());
                Flow::End(confirmed(&mut self.status, Some(&after), spec_paths, sha))
            }
            Err(err) if err.kind == ErrorKind::Conflict => {
                manage.conflicts += 1;
                let attempt = manage.conflicts;
                manage.sent = Some(sent);
                Flow::Call(ShadowStep::Read {
                    pause: (attempt < self.max_attempts).then_some(attempt),
                })
            }
            Err(err) => {
                self.status.managed_paths = manage.claimed.clone();
                self.status.shadow = manage.before.as_ref().map(mirror);
                Flow::End(Verdict::failed(&err))
            }
        };
        self.settle(flow)
    }

    /// The result, once a step was [`ShadowStep::Done`]: conditions and `lastSyncTime`
    /// at `now`.
    pub fn finish(mut self, now: DateTime<Utc>) -> ShadowSyncResult {
        let verdict = match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::Done(verdict) => verdict,
            _ => unreachable!("finish before the pass was done"),
        };
        let ready = conclude(
            &mut self.status,
            self.prior,
            self.opts,
            verdict,
            self.writes,
            now,
        );
        ShadowSyncResult {
            status: self.status,
            events: self.events,
            writes: self.writes,
            planned: self.planned,
            ready,
        }
    }

    fn settle(&mut self, flow: Flow) -> ShadowStep {
        match flow {
            Flow::Call(step) => step,
            Flow::End(verdict) => {
                self.stage = Stage::Done(verdict);
                ShadowStep::Done
            }
        }
    }

    fn invalid_spec(&mut self, message: String) -> Verdict {
        self.events
            .push(SyncEvent::warning(Reason::InvalidSpec, message.clone()));
        Verdict::new(
            Health::Stalled {
                reason: Reason::InvalidSpec,
                message: truncate(message, 1024),
            },
            None,
        )
    }

    /// `Observe`: mirror the shadow; Converged over every desired path.
    fn observed(&mut self, answer: Result<Option<ShadowDocument>, DataPlaneError>) -> Verdict {
        match answer {
            Ok(Some(doc)) => {
                let view = mirror(&doc);
                let pending = owned_delta_paths(view.delta.as_ref(), &all_paths(&view.desired));
                self.status.shadow = Some(view);
                Verdict {
                    health: Health::Ready {
                        reason: Reason::Observed,
                        message: format!("observing shadow version {}", doc.version),
                    },
                    synced: Some(ConditionState::holds(Reason::Observed, "shadow read")),
                    converged: Some(converged(&pending)),
                }
            }
            Ok(None) => {
                self.status.shadow = None;
                Verdict::new(
                    Health::Failed {
                        reason: Reason::NotFound,
                        message: format!("{} does not exist", target(self.spec)),
                    },
                    Some(ConditionState::holds(Reason::Observed, "shadow read")),
                )
            }
            Err(err) => Verdict::failed(&err),
        }
    }

    fn first_read(
        &mut self,
        manage: &mut Manage,
        answer: Result<Option<ShadowDocument>, DataPlaneError>,
        now: DateTime<Utc>,
    ) -> Flow {
        match answer {
            Ok(doc) => {
                manage.before = doc;
                self.plan(manage, now)
            }
            Err(err) => {
                self.status.managed_paths = manage.claimed.clone();
                Flow::End(Verdict::failed(&err))
            }
        }
    }

    /// Plans against `manage.before`: the end of the pass, or the write to send.
    fn plan(&mut self, manage: &mut Manage, now: DateTime<Utc>) -> Flow {
        let before = manage.before.as_ref();
        let (update, changes, out_of_band) =
            match plan_shadow(self.spec, before, &manage.ownership, manage.force) {
                ShadowPlan::InSync => {
                    let (spec_paths, sha) = (manage.spec_paths.clone(), manage.sha.clone());
                    return Flow::End(confirmed(&mut self.status, before, spec_paths, sha));
                }
                ShadowPlan::Preserve { out_of_band } => {
                    let claimed = manage.claimed.clone();
                    return Flow::End(self.preserved(before, &out_of_band, claimed, now));
                }
                ShadowPlan::Write {
                    update,
                    changes,
                    out_of_band,
                } => (update, changes, out_of_band),
            };
        if let Some(error) = merged_too_large(before, &update, self.limits) {
            self.status.managed_paths = manage.claimed.clone();
            self.status.shadow = before.map(mirror);
            return Flow::End(self.invalid_spec(error.to_string()));
        }
        if self.opts.dry_run {
            self.planned = changes;
            self.status.shadow = before.map(mirror);
            return Flow::End(Verdict::new(
                Health::Progressing {
                    reason: Reason::Pending,
                    message: "changes planned (dry run)".into(),
                },
                None,
            ));
        }
        let at = rfc3339(now);
        if !out_of_band.is_empty() {
            record_conflict(
                &mut self.status.conflicts,
                Reason::OutOfBandEdit,
                self.prior.last_write.as_ref().map(|w| w.version),
                before.map(|d| d.version),
                &at,
            );
            self.events.push(SyncEvent::warning(
                Reason::DriftCorrected,
                format!(
                    "owned paths changed outside shadowsync were written back: {}",
                    describe_changes(&out_of_band)
                ),
            ));
        }
        let mut body = update.clone();
        if let (Some(doc), Some(object)) = (before, body.as_object_mut()) {
            object.insert("version".into(), Value::from(doc.version));
        }
        manage.sent = Some(Sent {
            update,
            changes,
            at,
        });
        Flow::Call(ShadowStep::Write(Bytes::from(body.to_string())))
    }

    /// The re-read after a 409: classify what moved, then give up, stall or plan again.
    fn reread(
        &mut self,
        manage: &mut Manage,
        sent: Sent,
        answer: Result<Option<ShadowDocument>, DataPlaneError>,
        now: DateTime<Utc>,
    ) -> Flow {
        let after = match answer {
            Ok(doc) => doc,
            Err(err) => {
                self.status.managed_paths = manage.claimed.clone();
                return Flow::End(Verdict::failed(&err));
            }
        };
        let expected = manage.before.as_ref().map(|d| d.version);
        let actual = after.as_ref().map(|d| d.version);
        let class = classify_conflict(
            manage.before.as_ref(),
            after.as_ref(),
            &manage.claimed,
            &manage.spec_paths,
        );
        match not_our_write(class, &sent.update) {
            ConflictClass::Benign => record_conflict(
                &mut self.status.conflicts,
                Reason::VersionConflict,
                expected,
                actual,
                &sent.at,
            ),
            ConflictClass::OutOfBand(edits) => {
                record_conflict(
                    &mut self.status.conflicts,
                    Reason::OutOfBandEdit,
                    expected,
                    actual,
                    &sent.at,
                );
                if self.spec.conflict_policy == ConflictPolicy::Preserve && !manage.force {
                    let claimed = manage.claimed.clone();
                    return Flow::End(self.preserved(after.as_ref(), &edits, claimed, now));
                }
                self.events.push(SyncEvent::warning(
                    Reason::Conflict,
                    format!(
                        "owned paths changed while writing; writing ours back: {}",
                        describe_changes(&edits)
                    ),
                ));
                manage.force = true;
            }
        }
        if manage.conflicts >= self.max_attempts {
            self.status.managed_paths = manage.claimed.clone();
            self.status.shadow = after.as_ref().map(mirror);
            let message = format!(
                "the shadow kept changing: gave up after {} version conflicts; will retry",
                manage.conflicts
            );
            return Flow::End(Verdict::new(
                Health::Progressing {
                    reason: Reason::Conflict,
                    message: message.clone(),
                },
                Some(ConditionState::fails(Reason::Conflict, message)),
            ));
        }
        manage.before = after;
        self.plan(manage, now)
    }

    /// `conflictPolicy: Preserve` met an out-of-band edit: write nothing, and count the
    /// edit once per cloud version, not on every refresh while stalled.
    fn preserved(
        &mut self,
        doc: Option<&ShadowDocument>,
        edits: &[PathChange],
        claimed: Vec<String>,
        now: DateTime<Utc>,
    ) -> Verdict {
        let version = doc.map(|d| d.version);
        let message = truncate(
            format!(
                "owned paths were changed outside shadowsync and conflictPolicy is Preserve; \
                 change the spec or set the reconcile-requested-at annotation to write ours: {}",
                describe_changes(edits)
            ),
            1024,
        );
        if !edit_already_counted(self.prior.conflicts.as_ref(), version) {
            record_conflict(
                &mut self.status.conflicts,
                Reason::OutOfBandEdit,
                self.prior.last_write.as_ref().map(|w| w.version),
                version,
                &rfc3339(now),
            );
            self.events
                .push(SyncEvent::warning(Reason::Conflict, message.clone()));
        }
        self.status.shadow = doc.map(mirror);
        self.status.managed_paths = claimed;
        Verdict::new(
            Health::Stalled {
                reason: Reason::Conflict,
                message: message.clone(),
            },
            Some(ConditionState::fails(Reason::Conflict, message)),
        )
    }
}

impl Manage {
    fn new(spec: &ThingShadowSpec, prior: &ThingShadowStatus, opts: &SyncOptions) -> Self {
        let desired = spec
            .desired
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let spec_paths = leaf_paths(&desired);
        let sha = desired_sha256(&desired);
        // Under Preserve an out-of-band edit holds writes back only while the spec is the
        // one last confirmed in the cloud: a spec change is the user's new word.
        let spec_changed = prior.applied_desired_sha256.as_deref() != Some(sha.as_str());
        Manage {
            claimed: union(&prior.managed_paths, &spec_paths),
            spec_paths,
            sha,
            ownership: Ownership::from_status(prior),
            force: opts.force || spec_changed,
            before: None,
            conflicts: 0,
            sent: None,
        }
    }
}

/// The cloud (`doc`, as read or as predicted after our write) matches the spec on every
/// owned path: the spec's leaves become the owned paths and its hash the applied one.
fn confirmed(
    status: &mut ThingShadowStatus,
    doc: Option<&ShadowDocument>,
    spec_paths: Vec<String>,
    sha: String,
) -> Verdict {
    let view = doc.map(mirror);
    let pending = owned_delta_paths(view.as_ref().and_then(|v| v.delta.as_ref()), &spec_paths);
    let version = view.as_ref().map(|v| v.version);
    status.shadow = view;
    status.managed_paths = spec_paths;
    status.applied_desired_sha256 = Some(sha);
    let message = match version {
        Some(v) => format!("shadow version {v} matches the spec"),
        None => "nothing to write: the spec declares no desired state".into(),
    };
    Verdict {
        health: Health::Ready {
            reason: Reason::InSync,
            message: message.clone(),
        },
        synced: Some(ConditionState::holds(Reason::InSync, message)),
        converged: Some(converged(&pending)),
    }
}

/// Converged: True exactly when no owned path is `pending` (still in `delta`).
fn converged(pending: &[String]) -> Check {
    if pending.is_empty() {
        ConditionState::holds(
            Reason::DeviceConverged,
            "the device reported every owned desired value",
        )
    } else {
        ConditionState::fails(
            Reason::AwaitingDevice,
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

/// Sorted, without duplicates.
fn union(a: &[String], b: &[String]) -> Vec<String> {
    a.iter()
        .chain(b)
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `classic shadow of kitchen-lamp` / `shadow "config" of kitchen-lamp`.
pub fn target(spec: &ThingShadowSpec) -> String {
    match &spec.shadow_name {
        Some(name) => format!("shadow {name:?} of {}", spec.thing_name),
        None => format!("classic shadow of {}", spec.thing_name),
    }
}

/// The paths `deletionPolicy: ClearDesired` nulls: those the status owns, and the spec's
/// own leaves even if no write of them ever landed.
pub fn cleared_paths(spec: &ThingShadowSpec, status: &ThingShadowStatus) -> Vec<String> {
    let desired = spec.desired.as_ref().and_then(Value::as_object);
    union(
        &status.managed_paths,
        &desired.map(leaf_paths).unwrap_or_default(),
    )
}

/// The events of a deletion cleanup.
pub mod cleanup {
    use super::{target, Reason, SyncEvent};
    use crate::api::ThingShadowSpec;

    /// `deletionPolicy: Retain`: nothing written.
    pub fn retained(spec: &ThingShadowSpec) -> SyncEvent {
        SyncEvent::normal(
            Reason::Retained,
            format!("{} left as it is (deletionPolicy Retain)", target(spec)),
        )
    }

    /// `deletionPolicy: Delete`: the shadow was deleted at `version`.
    pub fn deleted(spec: &ThingShadowSpec, version: u64) -> SyncEvent {
        SyncEvent::normal(
            Reason::Deleted,
            format!("deleted {} at version {version}", target(spec)),
        )
    }

    /// `deletionPolicy: ClearDesired`: `paths` were nulled, giving `version`.
    pub fn cleared(spec: &ThingShadowSpec, paths: &[String], version: u64) -> SyncEvent {
        SyncEvent::normal(
            Reason::Cleared,
            format!(
                "nulled {} owned path(s) of {}; version {version}",
                paths.len(),
                target(spec)
            ),
        )
    }
}
