//! One pass of a `RetainedMessage`: validate, read the retained message, publish only
//! when it differs, and the status, conditions and events that come out of it.
//!
//! Every publish reaches every subscriber, so a needless publish is a visible fault on
//! devices: the pass publishes only when GetRetainedMessage shows a different payload,
//! QoS or user properties (or none), or when the spec changed in an attribute AWS does
//! not return (content type, expiry, ...). Besides the module invariants in [`super`]:
//! - at most one publish per pass, and never after a publish whose answer was lost: the
//!   message is read back instead ([`RetainedStep::Read`] after a transport failure),
//!   and a publish that landed unrecorded is adopted on the next pass, not repeated;
//! - a payload, inline or from a Secret, goes only into the publish: the status and the
//!   events carry its size and SHA-256, never its bytes;
//! - under `Preserve` an out-of-band edit is counted once per store time.

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::{
    begin, conclude, edit_already_counted, record_conflict, rfc3339, truncate, SyncEvent,
    SyncOptions, Verdict,
};
use crate::api::validate::validate_retained_message;
use crate::api::{ManagementPolicy, RetainedMessageSpec, RetainedMessageStatus};
use crate::dataplane::{
    DataPlaneError, ErrorKind, PublishRequest, RetainedMessageData, ShadowLimits,
};
use crate::planner::conditions::{ConditionState, Health, Reason};
use crate::planner::retained::{
    describe_publish, landed_unrecorded, message_sha256, plan_retained, publish_landed,
    publish_request, rfc3339_from_millis, RetainedPlan,
};

/// Where the payload of a `secretKeyRef`/`configMapKeyRef` comes from.
#[derive(Clone, Debug)]
pub enum PayloadInput {
    /// The spec carries the payload inline (json, text, base64).
    Inline,
    /// The caller read the referenced key: its bytes, or why it could not.
    Referenced(Result<Vec<u8>, String>),
    /// No cluster to read Secrets and ConfigMaps from (the offline CLI).
    Unavailable,
}

/// What a publish would change (for `diff`). Never holds payload bytes: a payload may
/// come from a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedPlanned {
    pub reason: &'static str,
    /// `field: old -> new` lines.
    pub changes: Vec<String>,
}

/// What a pass produced.
#[derive(Clone, Debug)]
pub struct RetainedSyncResult {
    pub status: RetainedMessageStatus,
    pub events: Vec<SyncEvent>,
    /// Publishes made (0 or 1).
    pub publishes: u32,
    /// With `dry_run`: the publish that would be made.
    pub planned: Option<RetainedPlanned>,
    pub ready: bool,
}

/// The next data-plane call of a pass.
#[derive(Clone, Debug, PartialEq)]
pub enum RetainedStep {
    /// GetRetainedMessage of the spec's topic (a 404 is `Ok(None)`), answered with
    /// [`RetainedPass::read`].
    Read,
    /// Publish this request, answered with [`RetainedPass::published`].
    Publish(Box<PublishRequest>),
    /// No more calls: [`RetainedPass::finish`] gives the result.
    Done,
}

/// One pass over a `RetainedMessage` with a given prior status.
pub struct RetainedPass<'a> {
    spec: &'a RetainedMessageSpec,
    prior: &'a RetainedMessageStatus,
    opts: &'a SyncOptions,
    limits: &'a ShadowLimits,
    status: RetainedMessageStatus,
    events: Vec<SyncEvent>,
    publishes: u32,
    planned: Option<RetainedPlanned>,
    stage: Stage,
}

enum Stage {
    Start,
    /// `Observe`: waiting for the one read.
    Observing,
    /// `Manage`: waiting for the read of the retained message.
    Reading(Desired),
    /// Waiting for the answer to the publish of `desired`.
    Publishing {
        desired: Desired,
        /// The message read before the publish.
        before: Option<RetainedMessageData>,
    },
    /// The publish got no answer (`lost`): waiting for the read that shows whether it
    /// landed.
    ReadingBack {
        desired: Desired,
        before: Option<RetainedMessageData>,
        lost: DataPlaneError,
    },
    Done(Verdict),
}

/// The publish the spec declares, and its [`message_sha256`].
struct Desired {
    request: PublishRequest,
    sha: String,
}

/// Why a pass makes no call at all.
struct Refused {
    reason: Reason,
    message: String,
}

impl<'a> RetainedPass<'a> {
    pub fn new(
        spec: &'a RetainedMessageSpec,
        prior: &'a RetainedMessageStatus,
        opts: &'a SyncOptions,
        limits: &'a ShadowLimits,
    ) -> Self {
        Self {
            spec,
            prior,
            opts,
            limits,
            status: begin(prior, opts),
            events: Vec::new(),
            publishes: 0,
            planned: None,
            stage: Stage::Start,
        }
    }

    /// The first step. A spec that fails validation, or whose referenced payload could
    /// not be read, gets no call at all.
    pub fn start(&mut self, payload: PayloadInput) -> RetainedStep {
        debug_assert!(matches!(self.stage, Stage::Start), "start called twice");
        self.stage = match desired_message(self.spec, payload, self.limits) {
            Err(Refused { reason, message }) => {
                self.events
                    .push(SyncEvent::warning(reason, message.clone()));
                let message = truncate(message, 1024);
                let health = if reason == Reason::PayloadSourceMissing {
                    Health::Failed { reason, message }
                } else {
                    Health::Stalled { reason, message }
                };
                Stage::Done(Verdict::new(health, None))
            }
            Ok(request) => match self.spec.management_policy {
                ManagementPolicy::Observe => Stage::Observing,
                ManagementPolicy::Manage => Stage::Reading(Desired {
                    sha: message_sha256(&request),
                    request,
                }),
            },
        };
        self.step()
    }

    /// The answer to [`RetainedStep::Read`], at `now`.
    pub fn read(
        &mut self,
        answer: Result<Option<RetainedMessageData>, DataPlaneError>,
        now: DateTime<Utc>,
    ) -> RetainedStep {
        self.stage = match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::Observing => Stage::Done(self.observed(answer)),
            Stage::Reading(desired) => match answer {
                Ok(observed) => self.plan(desired, observed, now),
                Err(err) => Stage::Done(Verdict::failed(&err)),
            },
            Stage::ReadingBack {
                desired,
                before,
                lost,
            } => {
                // A read that fails tells nothing: the publish counts as not landed.
                let after = answer.ok().flatten();
                match after.filter(|a| publish_landed(&desired.request, before.as_ref(), a)) {
                    Some(landed) => {
                        record_publish(
                            &mut self.status,
                            &desired.request,
                            &desired.sha,
                            landed.last_modified_time,
                        );
                        mirror(&mut self.status, &landed);
                        Stage::Done(self.published_once(&desired.request))
                    }
                    // Not (yet) there: fail the pass; the next one reads again first,
                    // and a publish that lands late is recognised then
                    // (`landed_unrecorded`).
                    None => Stage::Done(Verdict::failed(&lost)),
                }
            }
            Stage::Start | Stage::Publishing { .. } | Stage::Done(_) => {
                unreachable!("read answered without a Read step")
            }
        };
        self.step()
    }

    /// The answer to [`RetainedStep::Publish`], at `now`.
    pub fn published(
        &mut self,
        answer: Result<(), DataPlaneError>,
        now: DateTime<Utc>,
    ) -> RetainedStep {
        let Stage::Publishing { desired, before } =
            std::mem::replace(&mut self.stage, Stage::Start)
        else {
            unreachable!("published answered without a Publish step");
        };
        self.stage = match answer {
            Ok(()) => {
                // Millisecond precision: the planner compares it with AWS's
                // lastModifiedTime.
                record_publish(
                    &mut self.status,
                    &desired.request,
                    &desired.sha,
                    now.timestamp_millis(),
                );
                // AWS's own store time is read back on the next refresh.
                self.status.last_modified_time = Some(rfc3339(now));
                Stage::Done(self.published_once(&desired.request))
            }
            // No answer: the publish may have been applied (the data-plane client does
            // not repeat it). Look instead of publishing again.
            Err(err) if err.kind == ErrorKind::Transport => Stage::ReadingBack {
                desired,
                before,
                lost: err,
            },
            Err(err) => Stage::Done(Verdict::failed(&err)),
        };
        self.step()
    }

    /// The result, once a step was [`RetainedStep::Done`]: conditions and
    /// `lastSyncTime` at `now`.
    pub fn finish(mut self, now: DateTime<Utc>) -> RetainedSyncResult {
        let Stage::Done(verdict) = std::mem::replace(&mut self.stage, Stage::Start) else {
            unreachable!("finish before the pass was done");
        };
        let ready = conclude(
            &mut self.status,
            self.prior,
            self.opts,
            verdict,
            self.publishes,
            now,
        );
        RetainedSyncResult {
            status: self.status,
            events: self.events,
            publishes: self.publishes,
            planned: self.planned,
            ready,
        }
    }

    /// The step the current stage waits for.
    fn step(&self) -> RetainedStep {
        match &self.stage {
            Stage::Observing | Stage::Reading(_) | Stage::ReadingBack { .. } => RetainedStep::Read,
            Stage::Publishing { desired, .. } => {
                RetainedStep::Publish(Box::new(desired.request.clone()))
            }
            Stage::Done(_) => RetainedStep::Done,
            Stage::Start => unreachable!("a pass never waits in Start"),
        }
    }

    /// `Observe`: mirror the retained message.
    fn observed(&mut self, answer: Result<Option<RetainedMessageData>, DataPlaneError>) -> Verdict {
        match answer {
            Ok(Some(observed)) => {
                mirror(&mut self.status, &observed);
                Verdict::new(
                    Health::Ready {
                        reason: Reason::Observed,
                        message: "retained message read".into(),
                    },
                    Some(ConditionState::holds(
                        Reason::Observed,
                        "retained message read",
                    )),
                )
            }
            Ok(None) => {
                clear_mirror(&mut self.status);
                Verdict::new(
                    Health::Failed {
                        reason: Reason::NotFound,
                        message: format!("no retained message on {}", self.spec.topic),
                    },
                    Some(ConditionState::holds(
                        Reason::Observed,
                        "retained message read",
                    )),
                )
            }
            Err(err) => Verdict::failed(&err),
        }
    }

    /// `Manage`, after the read: adopt, stay, stall, or publish.
    fn plan(
        &mut self,
        desired: Desired,
        observed: Option<RetainedMessageData>,
        now: DateTime<Utc>,
    ) -> Stage {
        let prior = self.prior;
        let force =
            self.opts.force || prior.applied_sha256.as_deref() != Some(desired.sha.as_str());
        if let Some(landed) = observed
            .as_ref()
            .filter(|o| landed_unrecorded(prior, &desired.sha, &desired.request, o))
        {
            // Our publish of this spec landed but its record did not (the answer was
            // lost, the operator was killed before the status write, or the status
            // write failed): publishing again would reach every subscriber twice.
            record_publish(
                &mut self.status,
                &desired.request,
                &desired.sha,
                landed.last_modified_time,
            );
            mirror(&mut self.status, landed);
            return Stage::Done(in_sync());
        }
        let plan = plan_retained(
            &desired.request,
            observed.as_ref(),
            prior,
            self.spec.conflict_policy,
            force,
            now.timestamp_millis(),
        );
        let (reason, out_of_band) = match plan {
            RetainedPlan::InSync => {
                if let Some(observed) = &observed {
                    mirror(&mut self.status, observed);
                }
                self.status.applied_sha256 = Some(desired.sha);
                return Stage::Done(in_sync());
            }
            RetainedPlan::Expired => {
                clear_mirror(&mut self.status);
                let message = format!(
                    "expired after messageExpiry={}s; change the spec to publish again",
                    desired.request.message_expiry.unwrap_or_default()
                );
                return Stage::Done(Verdict::new(
                    Health::Ready {
                        reason: Reason::Expired,
                        message: message.clone(),
                    },
                    Some(ConditionState::holds(Reason::Expired, message)),
                ));
            }
            RetainedPlan::Preserve { detail } => {
                return Stage::Done(self.preserved(observed.as_ref(), &detail, now));
            }
            RetainedPlan::Publish {
                reason,
                out_of_band,
            } => (reason, out_of_band),
        };
        if self.opts.dry_run {
            self.planned = Some(RetainedPlanned {
                reason: reason.as_str(),
                changes: describe_publish(observed.as_ref(), &desired.request),
            });
            return Stage::Done(Verdict::new(
                Health::Progressing {
                    reason: Reason::Pending,
                    message: "publish planned (dry run)".into(),
                },
                None,
            ));
        }
        if let Some(detail) = &out_of_band {
            record_conflict(
                &mut self.status.conflicts,
                Reason::OutOfBandEdit,
                None,
                store_time(observed.as_ref()),
                &rfc3339(now),
            );
            self.events.push(SyncEvent::warning(
                Reason::DriftCorrected,
                format!("the retained message was changed outside shadowsync; publishing ours again: {detail}"),
            ));
        }
        Stage::Publishing {
            desired,
            before: observed,
        }
    }

    /// `conflictPolicy: Preserve` met someone else's message: publish nothing, and count
    /// the edit once per store time.
    fn preserved(
        &mut self,
        observed: Option<&RetainedMessageData>,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Verdict {
        match observed {
            Some(observed) => mirror(&mut self.status, observed),
            None => clear_mirror(&mut self.status),
        }
        let message = truncate(
            format!(
                "the retained message was changed outside shadowsync and conflictPolicy is Preserve; \
                 change the spec or set the reconcile-requested-at annotation to publish ours: {detail}"
            ),
            1024,
        );
        let key = store_time(observed);
        if !edit_already_counted(self.prior.conflicts.as_ref(), key) {
            record_conflict(
                &mut self.status.conflicts,
                Reason::OutOfBandEdit,
                None,
                key,
                &rfc3339(now),
            );
            self.events
                .push(SyncEvent::warning(Reason::Conflict, message.clone()));
        }
        Verdict::new(
            Health::Stalled {
                reason: Reason::Conflict,
                message: message.clone(),
            },
            Some(ConditionState::fails(Reason::Conflict, message)),
        )
    }

    /// The one publish of this pass is in the cloud.
    fn published_once(&mut self, request: &PublishRequest) -> Verdict {
        self.publishes = 1;
        self.events.push(SyncEvent::normal(
            Reason::Published,
            format!(
                "published {} bytes to {} (retained, qos {})",
                request.payload.len(),
                self.spec.topic,
                request.qos
            ),
        ));
        in_sync()
    }
}

fn in_sync() -> Verdict {
    let message = "the retained message matches the spec".to_string();
    Verdict::new(
        Health::Ready {
            reason: Reason::InSync,
            message: message.clone(),
        },
        Some(ConditionState::holds(Reason::InSync, message)),
    )
}

/// The publish the spec declares, or why there is none to make: invalid spec, payload
/// source missing or unavailable, payload over the limit.
fn desired_message(
    spec: &RetainedMessageSpec,
    payload: PayloadInput,
    limits: &ShadowLimits,
) -> Result<PublishRequest, Refused> {
    validate_retained_message(spec, limits).map_err(|errors| Refused {
        reason: Reason::InvalidSpec,
        message: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    let referenced = match payload {
        PayloadInput::Inline => None,
        PayloadInput::Referenced(Ok(bytes)) => Some(bytes),
        PayloadInput::Referenced(Err(message)) => {
            return Err(Refused {
                reason: Reason::PayloadSourceMissing,
                message,
            })
        }
        PayloadInput::Unavailable => {
            let field = if spec.payload.secret_key_ref.is_some() {
                "spec.payload.secretKeyRef"
            } else {
                "spec.payload.configMapKeyRef"
            };
            return Err(Refused {
                reason: Reason::PayloadSourceUnavailable,
                message: format!(
                    "{field}: needs a cluster to read from; use an inline payload (json, text, base64) with shadowsync apply"
                ),
            });
        }
    };
    let request = publish_request(spec, referenced.as_deref()).map_err(|message| Refused {
        reason: Reason::InvalidSpec,
        message,
    })?;
    if request.payload.len() > limits.max_payload_bytes {
        return Err(Refused {
            reason: Reason::InvalidSpec,
            message: format!(
                "spec.payload: {} bytes: must be at most {} bytes",
                request.payload.len(),
                limits.max_payload_bytes
            ),
        });
    }
    Ok(request)
}

/// The store time of a retained message, as the conflict block keeps it.
fn store_time(observed: Option<&RetainedMessageData>) -> Option<u64> {
    observed.map(|o| o.last_modified_time as u64)
}

/// Records a publish of `desired` (hash `sha`) stored at `stored_ms` (epoch ms).
fn record_publish(
    status: &mut RetainedMessageStatus,
    desired: &PublishRequest,
    sha: &str,
    stored_ms: i64,
) {
    status.publish_count += 1;
    status.last_publish_time = rfc3339_from_millis(stored_ms);
    status.applied_sha256 = Some(sha.to_string());
    status.payload_sha256 = Some(hex::encode(Sha256::digest(&desired.payload)));
    status.payload_size = Some(desired.payload.len() as u64);
    status.qos = u8::try_from(desired.qos).ok();
}

/// The status' view of the retained message: size and hash of the payload, qos, store
/// time.
fn mirror(status: &mut RetainedMessageStatus, observed: &RetainedMessageData) {
    status.payload_sha256 = Some(hex::encode(Sha256::digest(&observed.payload)));
    status.payload_size = Some(observed.payload.len() as u64);
    status.qos = u8::try_from(observed.qos).ok();
    status.last_modified_time = Utc
        .timestamp_millis_opt(observed.last_modified_time)
        .single()
        .map(rfc3339);
}

fn clear_mirror(status: &mut RetainedMessageStatus) {
    status.payload_sha256 = None;
    status.payload_size = None;
    status.qos = None;
    status.last_modified_time = None;
}

/// The events of a deletion cleanup.
pub mod cleanup {
    use super::{Reason, SyncEvent};
    use crate::api::RetainedMessageSpec;

    /// `deletionPolicy: Retain`: nothing published.
    pub fn retained(spec: &RetainedMessageSpec) -> SyncEvent {
        SyncEvent::normal(
            Reason::Retained,
            format!(
                "retained message on {} left as it is (deletionPolicy Retain)",
                spec.topic
            ),
        )
    }

    /// `deletionPolicy: Delete`: an empty retained publish deleted the message.
    pub fn deleted(spec: &RetainedMessageSpec) -> SyncEvent {
        SyncEvent::normal(
            Reason::Deleted,
            format!("deleted the retained message on {}", spec.topic),
        )
    }
}
