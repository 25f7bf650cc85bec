//! One pass of a `RetainedMessage`: validate, read the retained message, publish only
//! when it differs, and build the status.
//!
//! Every publish reaches every subscriber, so a needless publish is a visible fault on
//! devices: the pass publishes only when GetRetainedMessage shows a different payload,
//! QoS or user properties (or none), or when the spec changed in an attribute AWS does
//! not return (content type, expiry, ...).

use chrono::{TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::{failure, found, record_conflict, rfc3339, truncate, SyncEvent, SyncOptions, Syncer};
use crate::api::validate::validate_retained_message;
use crate::api::{
    ManagementPolicy, RetainedDeletionPolicy, RetainedMessageSpec, RetainedMessageStatus,
};
use crate::dataplane::{DataPlaneError, ErrorKind, PublishRequest, RetainedMessageData};
use crate::planner::conditions::{set_conditions, Health};
use crate::planner::retained::{
    adoptable, message_sha256, payload_fingerprint, plan_retained, publish_request,
    rfc3339_from_millis, RetainedPlan,
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

impl Syncer {
    /// One pass over a `RetainedMessage` with the given prior status.
    pub async fn sync_retained(
        &self,
        spec: &RetainedMessageSpec,
        prior: &RetainedMessageStatus,
        payload: PayloadInput,
        opts: &SyncOptions,
    ) -> RetainedSyncResult {
        let mut status = prior.clone();
        if let Some(at) = &opts.reconcile_requested_at {
            status.last_handled_reconcile_at = Some(at.clone());
        }
        let mut events = Vec::new();
        let mut publishes = 0;
        let mut planned = None;
        let (health, synced) = match self.desired_message(spec, payload) {
            Err(Refused { reason, message }) => {
                events.push(SyncEvent::warning(reason, message.clone()));
                let message = truncate(message, 1024);
                let health = if reason == "PayloadSourceMissing" {
                    Health::Failed { reason, message }
                } else {
                    Health::Stalled { reason, message }
                };
                (health, None)
            }
            Ok(desired) => match spec.management_policy {
                ManagementPolicy::Observe => {
                    match found(self.dataplane().get_retained_message(&spec.topic).await) {
                        Ok(Some(observed)) => {
                            mirror(&mut status, &observed);
                            (
                                Health::Ready {
                                    reason: "Observed",
                                    message: "retained message read".into(),
                                },
                                Some((true, "Observed", "retained message read".into())),
                            )
                        }
                        Ok(None) => {
                            clear_mirror(&mut status);
                            (
                                Health::Failed {
                                    reason: "NotFound",
                                    message: format!("no retained message on {}", spec.topic),
                                },
                                Some((true, "Observed", "retained message read".into())),
                            )
                        }
                        Err(err) => failure(&err),
                    }
                }
                ManagementPolicy::Manage => {
                    let step = self
                        .manage_retained(spec, prior, &desired, opts, &mut status, &mut events)
                        .await;
                    publishes = step.publishes;
                    planned = step.planned;
                    (step.health, step.synced)
                }
            },
        };
        let now = rfc3339(Utc::now());
        status.observed_generation = opts.generation;
        let ready = matches!(health, Health::Ready { .. });
        set_conditions(
            &mut status.conditions,
            opts.generation,
            &now,
            &health,
            synced,
            None,
        );
        status.last_sync_time = prior.last_sync_time.clone();
        if publishes > 0 || status != *prior {
            status.last_sync_time = Some(now);
        }
        RetainedSyncResult {
            status,
            events,
            publishes,
            planned,
            ready,
        }
    }

    fn desired_message(
        &self,
        spec: &RetainedMessageSpec,
        payload: PayloadInput,
    ) -> Result<PublishRequest, Refused> {
        validate_retained_message(spec, self.limits()).map_err(|errors| Refused {
            reason: "InvalidSpec",
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
                    reason: "PayloadSourceMissing",
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
                    reason: "PayloadSourceUnavailable",
                    message: format!(
                        "{field}: needs a cluster to read from; use an inline payload (json, text, base64) with shadowsync apply"
                    ),
                });
            }
        };
        let request = publish_request(spec, referenced.as_deref()).map_err(|message| Refused {
            reason: "InvalidSpec",
            message,
        })?;
        if request.payload.len() > self.limits().max_payload_bytes {
            return Err(Refused {
                reason: "InvalidSpec",
                message: format!(
                    "spec.payload: {} bytes: must be at most {} bytes",
                    request.payload.len(),
                    self.limits().max_payload_bytes
                ),
            });
        }
        Ok(request)
    }

    async fn manage_retained(
        &self,
        spec: &RetainedMessageSpec,
        prior: &RetainedMessageStatus,
        desired: &PublishRequest,
        opts: &SyncOptions,
        status: &mut RetainedMessageStatus,
        events: &mut Vec<SyncEvent>,
    ) -> Step {
        let sha = message_sha256(desired);
        let observed = match found(self.dataplane().get_retained_message(&spec.topic).await) {
            Ok(observed) => observed,
            Err(err) => return Step::from(failure(&err)),
        };
        let force = opts.force || prior.applied_sha256.as_deref() != Some(sha.as_str());
        let now_ms = Utc::now().timestamp_millis();
        if let Some(landed) = observed
            .as_ref()
            .filter(|o| landed_unrecorded(prior, &sha, desired, o))
        {
            // Our publish of this spec landed but its record did not (the answer was
            // lost, the operator was killed before the status write, or the status
            // write failed): publishing again would reach every subscriber twice.
            record_publish(status, desired, &sha, landed.last_modified_time);
            mirror(status, landed);
            let message = "the retained message matches the spec".to_string();
            return Step::from((
                Health::Ready {
                    reason: "InSync",
                    message: message.clone(),
                },
                Some((true, "InSync", message)),
            ));
        }
        let plan = plan_retained(
            desired,
            observed.as_ref(),
            prior,
            spec.conflict_policy,
            force,
            now_ms,
        );
        let (reason, out_of_band) = match plan {
            RetainedPlan::InSync => {
                if let Some(observed) = &observed {
                    mirror(status, observed);
                }
                status.applied_sha256 = Some(sha);
                let message = "the retained message matches the spec".to_string();
                return Step::from((
                    Health::Ready {
                        reason: "InSync",
                        message: message.clone(),
                    },
                    Some((true, "InSync", message)),
                ));
            }
            RetainedPlan::Expired => {
                clear_mirror(status);
                let message = format!(
                    "expired after messageExpiry={}s; change the spec to publish again",
                    desired.message_expiry.unwrap_or_default()
                );
                return Step::from((
                    Health::Ready {
                        reason: "Expired",
                        message: message.clone(),
                    },
                    Some((true, "Expired", message)),
                ));
            }
            RetainedPlan::Preserve { detail } => {
                if let Some(observed) = &observed {
                    mirror(status, observed);
                } else {
                    clear_mirror(status);
                }
                let message = truncate(
                    format!(
                        "the retained message was changed outside shadowsync and conflictPolicy is Preserve; \
                         change the spec or set the reconcile-requested-at annotation to publish ours: {detail}"
                    ),
                    1024,
                );
                let key = observed.as_ref().map(|o| o.last_modified_time as u64);
                let seen = prior.conflicts.as_ref().is_some_and(|c| {
                    c.actual_version == key && c.last_reason.as_deref() == Some("OutOfBandEdit")
                });
                if !seen {
                    record_conflict(
                        &mut status.conflicts,
                        "OutOfBandEdit",
                        None,
                        key,
                        &rfc3339(Utc::now()),
                    );
                    events.push(SyncEvent::warning("Conflict", message.clone()));
                }
                return Step::from((
                    Health::Stalled {
                        reason: "Conflict",
                        message: message.clone(),
                    },
                    Some((false, "Conflict", message)),
                ));
            }
            RetainedPlan::Publish {
                reason,
                out_of_band,
            } => (reason, out_of_band),
        };
        if opts.dry_run {
            return Step {
                health: Health::Progressing {
                    reason: "Pending",
                    message: "publish planned (dry run)".into(),
                },
                synced: None,
                publishes: 0,
                planned: Some(RetainedPlanned {
                    reason: reason.as_str(),
                    changes: describe(observed.as_ref(), desired),
                }),
            };
        }
        if let Some(detail) = &out_of_band {
            record_conflict(
                &mut status.conflicts,
                "OutOfBandEdit",
                None,
                observed.as_ref().map(|o| o.last_modified_time as u64),
                &rfc3339(Utc::now()),
            );
            events.push(SyncEvent::warning(
                "DriftCorrected",
                format!("the retained message was changed outside shadowsync; publishing ours again: {detail}"),
            ));
        }
        if let Err(err) = self.dataplane().publish(desired).await {
            if err.kind != ErrorKind::Transport {
                return Step::from(failure(&err));
            }
            // No answer: the publish may have been applied (the data-plane client does
            // not repeat it, see `Resilient`). Look instead of publishing again.
            match self.publish_landed(desired, observed.as_ref()).await {
                Some(landed) => {
                    record_publish(status, desired, &sha, landed.last_modified_time);
                    mirror(status, &landed);
                }
                // Not (yet) there: fail the pass; the next one reads again first, and
                // a publish that lands late is recognised then (`landed_unrecorded`).
                None => return Step::from(failure(&err)),
            }
        } else {
            let now = Utc::now();
            // Millisecond precision: the planner compares it with AWS's lastModifiedTime.
            record_publish(status, desired, &sha, now.timestamp_millis());
            // AWS's own store time is read back on the next refresh.
            status.last_modified_time = Some(rfc3339(now));
        }
        events.push(SyncEvent::normal(
            "Published",
            format!(
                "published {} bytes to {} (retained, qos {})",
                desired.payload.len(),
                spec.topic,
                desired.qos
            ),
        ));
        let message = "the retained message matches the spec".to_string();
        Step {
            health: Health::Ready {
                reason: "InSync",
                message: message.clone(),
            },
            synced: Some((true, "InSync", message)),
            publishes: 1,
            planned: None,
        }
    }

    /// After a publish whose answer was lost: the retained message as read now, if it is
    /// `desired` and was stored after `before` (the message read before the publish).
    async fn publish_landed(
        &self,
        desired: &PublishRequest,
        before: Option<&RetainedMessageData>,
    ) -> Option<RetainedMessageData> {
        let after = found(self.dataplane().get_retained_message(&desired.topic).await)
            .ok()
            .flatten()?;
        // A new store time, or the desired payload where another one was: AWS (and the
        // local data plane) keep milliseconds, so two publishes can share a store time.
        let stored_since = before.is_none_or(|b| {
            after.last_modified_time != b.last_modified_time || !visible_match(desired, b)
        });
        (visible_match(desired, &after) && stored_since).then_some(after)
    }

    /// Deletion cleanup by `deletionPolicy`. `Delete` publishes an empty retained payload
    /// (which deletes it) only when a retained message exists, because subscribers see
    /// that empty message too.
    pub async fn cleanup_retained(
        &self,
        spec: &RetainedMessageSpec,
    ) -> Result<Vec<SyncEvent>, DataPlaneError> {
        if spec.management_policy == ManagementPolicy::Observe {
            return Ok(Vec::new());
        }
        match spec.deletion_policy {
            RetainedDeletionPolicy::Retain => Ok(vec![SyncEvent::normal(
                "Retained",
                format!(
                    "retained message on {} left as it is (deletionPolicy Retain)",
                    spec.topic
                ),
            )]),
            RetainedDeletionPolicy::Delete => {
                if found(self.dataplane().get_retained_message(&spec.topic).await)?.is_none() {
                    return Ok(Vec::new());
                }
                let request = PublishRequest {
                    topic: spec.topic.clone(),
                    qos: i32::from(spec.qos),
                    retain: true,
                    ..Default::default()
                };
                self.dataplane().publish(&request).await?;
                Ok(vec![SyncEvent::normal(
                    "Deleted",
                    format!("deleted the retained message on {}", spec.topic),
                )])
            }
        }
    }
}

struct Refused {
    reason: &'static str,
    message: String,
}

struct Step {
    health: Health,
    synced: Option<(bool, &'static str, String)>,
    publishes: u32,
    planned: Option<RetainedPlanned>,
}

impl From<(Health, Option<(bool, &'static str, String)>)> for Step {
    fn from((health, synced): (Health, Option<(bool, &'static str, String)>)) -> Self {
        Step {
            health,
            synced,
            publishes: 0,
            planned: None,
        }
    }
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

/// What GetRetainedMessage shows of a message (payload, qos, user properties) is what
/// `desired` declares.
fn visible_match(desired: &PublishRequest, observed: &RetainedMessageData) -> bool {
    observed.payload == desired.payload
        && observed.qos == desired.qos
        && observed.user_properties == desired.user_properties
}

/// The spec changed since the last recorded publish (`sha` is not `appliedSha256`), yet
/// the cloud shows exactly the new spec, and what it shows is not what the status last
/// recorded of the cloud: the content moved, after our record, to precisely our new
/// payload. That is our own publish whose record was lost (a dropped answer, a crash
/// before the status write, a failed status write).
///
/// Only a change of the visible content counts: a spec change in user properties alone
/// cannot be told from the old message, so it is published (at worst once more). As in
/// the planner's adoption of an existing message, a spec that sets attributes
/// GetRetainedMessage cannot show (content type other than JSON's, expiry, response
/// topic, correlation data) is published all the same, so that they are pinned even if
/// someone else put the same content there. A resource never published (no
/// `appliedSha256`) is left to the planner's adoption rule.
fn landed_unrecorded(
    prior: &RetainedMessageStatus,
    sha: &str,
    desired: &PublishRequest,
    observed: &RetainedMessageData,
) -> bool {
    let Some(applied) = prior.applied_sha256.as_deref() else {
        return false;
    };
    if applied == sha || !adoptable(desired) || !visible_match(desired, observed) {
        return false;
    }
    let observed_sha = hex::encode(Sha256::digest(&observed.payload));
    prior.payload_sha256.as_deref() != Some(observed_sha.as_str())
        || prior.qos != u8::try_from(observed.qos).ok()
}

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

/// `field: old -> new` lines for a planned publish; payloads by size and hash only.
fn describe(observed: Option<&RetainedMessageData>, desired: &PublishRequest) -> Vec<String> {
    let digest = payload_fingerprint;
    let Some(observed) = observed else {
        return vec![
            format!("payload: (none) -> {}", digest(&desired.payload)),
            format!("qos: (none) -> {}", desired.qos),
        ];
    };
    let mut lines = Vec::new();
    if observed.payload != desired.payload {
        lines.push(format!(
            "payload: {} -> {}",
            digest(&observed.payload),
            digest(&desired.payload)
        ));
    }
    if observed.qos != desired.qos {
        lines.push(format!("qos: {} -> {}", observed.qos, desired.qos));
    }
    if observed.user_properties != desired.user_properties {
        let show = |props: &[(String, String)]| {
            props
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        lines.push(format!(
            "userProperties: [{}] -> [{}]",
            show(&observed.user_properties),
            show(&desired.user_properties)
        ));
    }
    if lines.is_empty() {
        lines.push("attributes not returned by AWS changed (content type, expiry, response topic or correlation data)".into());
    }
    lines
}
