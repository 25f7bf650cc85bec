//! Retained-message planning: what to publish and when (README.md, "What it does, step by step").
//!
//! Every publish reaches every subscriber, so the bar for publishing is high: only a
//! spec change, a missing message, or a message that differs in what GetRetainedMessage
//! shows (payload, qos, user properties).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat};
use sha2::{Digest, Sha256};

use super::json::canonical_json;
use crate::api::{ConflictPolicy, RetainedMessageSpec, RetainedMessageStatus};
use crate::dataplane::{PayloadFormat, PublishRequest, RetainedMessageData};

/// Slack allowed between our clock (`status.lastPublishTime`, possibly written with
/// second precision) and the broker's `lastModifiedTime`, so that our own publish is
/// never mistaken for someone else's, nor a message a moment short of its expiry for a
/// deleted one.
pub const CLOCK_SKEW_ALLOWANCE_MS: i64 = 2_000;

/// The Publish request a spec declares (`retain: true`).
///
/// Payload sources:
/// - `json`: compact JSON with object keys sorted, so that the bytes do not depend on
///   whether the spec came from a manifest file or back from the apiserver (which
///   re-orders keys); `UTF8_DATA`, content type `application/json` unless set;
/// - `text`: its UTF-8 bytes, `UTF8_DATA`;
/// - `base64`: the decoded bytes (whitespace ignored), `UNSPECIFIED_BYTES`;
/// - `secretKeyRef` / `configMapKeyRef`: `referenced`, the bytes the caller read from the
///   Secret or ConfigMap; `UTF8_DATA` when they are valid UTF-8 (ConfigMap values and
///   most secrets are text, and MQTT 5 receivers may then treat them as strings),
///   `UNSPECIFIED_BYTES` otherwise.
///
/// Errors (never quoting the payload): not exactly one source, an unresolved reference,
/// bad base64, an empty payload (an empty retained publish deletes the retained
/// message), qos other than 0 or 1, an expiry out of range.
pub fn publish_request(
    spec: &RetainedMessageSpec,
    referenced: Option<&[u8]>,
) -> Result<PublishRequest, String> {
    let source = &spec.payload;
    let sources = [
        source.json.is_some(),
        source.text.is_some(),
        source.base64.is_some(),
        source.secret_key_ref.is_some(),
        source.config_map_key_ref.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    if sources != 1 {
        return Err(format!(
            "payload: exactly one of json, text, base64, secretKeyRef, configMapKeyRef \
             must be set, found {sources}"
        ));
    }

    let mut content_type = spec.content_type.clone();
    let (payload, format) = if let Some(value) = &source.json {
        content_type.get_or_insert_with(|| "application/json".to_string());
        (canonical_json(value).into_bytes(), PayloadFormat::Utf8Data)
    } else if let Some(text) = &source.text {
        (text.as_bytes().to_vec(), PayloadFormat::Utf8Data)
    } else if let Some(encoded) = &source.base64 {
        let bytes = decode_base64(encoded)
            .map_err(|e| format!("payload.base64 is not valid base64: {e}"))?;
        (bytes, PayloadFormat::UnspecifiedBytes)
    } else {
        let field = if source.secret_key_ref.is_some() {
            "payload.secretKeyRef"
        } else {
            "payload.configMapKeyRef"
        };
        let bytes = referenced
            .ok_or_else(|| format!("{field}: the referenced value was not resolved"))?
            .to_vec();
        let format = if std::str::from_utf8(&bytes).is_ok() {
            PayloadFormat::Utf8Data
        } else {
            PayloadFormat::UnspecifiedBytes
        };
        (bytes, format)
    };
    if payload.is_empty() {
        return Err(
            "payload is empty: an empty retained publish would delete the topic's retained message"
                .to_string(),
        );
    }
    if spec.qos > 1 {
        return Err(format!("qos must be 0 or 1, found {}", spec.qos));
    }
    let correlation_data = match &spec.correlation_data {
        Some(encoded) => {
            let cleaned: String = encoded.split_ascii_whitespace().collect();
            STANDARD
                .decode(&cleaned)
                .map_err(|e| format!("correlationData is not valid base64: {e}"))?;
            Some(cleaned)
        }
        None => None,
    };
    let message_expiry = spec
        .message_expiry
        .map(i64::try_from)
        .transpose()
        .map_err(|_| "messageExpiry is out of range".to_string())?;

    Ok(PublishRequest {
        topic: spec.topic.clone(),
        payload: Bytes::from(payload),
        qos: i32::from(spec.qos),
        retain: true,
        content_type,
        response_topic: spec.response_topic.clone(),
        message_expiry,
        user_properties: spec
            .user_properties
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
        payload_format_indicator: Some(format),
        correlation_data,
    })
}

/// The Publish request that deletes the topic's retained message: an empty retained
/// payload (subscribers receive it too).
pub fn delete_request(spec: &RetainedMessageSpec) -> PublishRequest {
    PublishRequest {
        topic: spec.topic.clone(),
        qos: i32::from(spec.qos),
        retain: true,
        ..Default::default()
    }
}

fn decode_base64(encoded: &str) -> Result<Vec<u8>, base64::DecodeError> {
    // YAML block scalars wrap long base64 over several lines.
    let cleaned: String = encoded.split_ascii_whitespace().collect();
    STANDARD.decode(cleaned)
}

/// SHA-256 (hex) over the payload and every attribute of a request, each field
/// length-prefixed so that no two different requests encode alike. GetRetainedMessage
/// does not return content type, expiry and the like, so this hash is how a change of
/// those is noticed.
pub fn message_sha256(req: &PublishRequest) -> String {
    fn field(h: &mut Sha256, name: &str, value: Option<&[u8]>) {
        h.update(name.as_bytes());
        match value {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v);
            }
        }
    }
    let mut h = Sha256::new();
    field(&mut h, "topic", Some(req.topic.as_bytes()));
    field(&mut h, "payload", Some(&req.payload));
    field(&mut h, "qos", Some(&req.qos.to_be_bytes()));
    field(&mut h, "retain", Some(&[u8::from(req.retain)]));
    field(
        &mut h,
        "contentType",
        req.content_type.as_deref().map(str::as_bytes),
    );
    field(
        &mut h,
        "responseTopic",
        req.response_topic.as_deref().map(str::as_bytes),
    );
    let expiry = req.message_expiry.map(i64::to_be_bytes);
    field(&mut h, "messageExpiry", expiry.as_ref().map(|e| &e[..]));
    let format = req.payload_format_indicator.map(|f| match f {
        PayloadFormat::UnspecifiedBytes => "UNSPECIFIED_BYTES",
        PayloadFormat::Utf8Data => "UTF8_DATA",
    });
    field(&mut h, "payloadFormat", format.map(str::as_bytes));
    field(
        &mut h,
        "correlationData",
        req.correlation_data.as_deref().map(str::as_bytes),
    );
    let count = (req.user_properties.len() as u64).to_be_bytes();
    field(&mut h, "userProperties", Some(&count));
    for (key, value) in &req.user_properties {
        field(&mut h, "key", Some(key.as_bytes()));
        field(&mut h, "value", Some(value.as_bytes()));
    }
    hex::encode(h.finalize())
}

/// Why a publish is planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishReason {
    /// Nothing published by this resource yet (status has no applied hash).
    Create,
    /// The spec changed since the last publish.
    Update,
    /// The spec is unchanged but the retained message differs or is gone.
    DriftCorrection,
}

impl PublishReason {
    /// CamelCase word for Events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishReason::Create => "Create",
            PublishReason::Update => "Update",
            PublishReason::DriftCorrection => "DriftCorrection",
        }
    }
}

/// The outcome of [`plan_retained`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetainedPlan {
    /// The retained message is what the spec declares: no publish.
    InSync,
    /// Publish the request. `out_of_band` describes someone else's edit being
    /// overwritten (sizes and hash prefixes, never payload bytes): emit a Warning Event.
    Publish {
        reason: PublishReason,
        out_of_band: Option<String>,
    },
    /// The message expired by its own `messageExpiry`; not re-published until the spec
    /// changes.
    Expired,
    /// `conflictPolicy: Preserve` found someone else's edit: publish nothing, stall.
    Preserve { detail: String },
}

/// Decides whether to publish `desired` given the retained message read back
/// (`observed`, `None` when the topic has none) and what status recorded.
///
/// - spec hash equals `status.appliedSha256` and the message matches: `InSync`;
/// - same, but the message is absent, and `messageExpiry` has run out since our last
///   publish: `Expired`;
/// - spec hash equals but the message differs or is absent: an out-of-band edit;
/// - spec hash differs and the message differs, with a `lastModifiedTime` newer than our
///   last publish: a spec change racing an out-of-band edit;
/// - out-of-band under `Preserve` without `force`: `Preserve`; otherwise `Publish`.
///
/// A changed spec hash publishes even when payload, qos and user properties match,
/// because the attributes GetRetainedMessage does not return (content type, expiry,
/// ...) may be what changed. A first reconcile (no recorded hash) adopts a matching
/// message without publishing when the spec sets none of those attributes.
pub fn plan_retained(
    desired: &PublishRequest,
    observed: Option<&RetainedMessageData>,
    status: &RetainedMessageStatus,
    policy: ConflictPolicy,
    force: bool,
    now_ms: i64,
) -> RetainedPlan {
    let hash = message_sha256(desired);
    let spec_unchanged = status.applied_sha256.as_deref() == Some(hash.as_str());
    let matches = observed.is_some_and(|o| same_message(desired, o));
    let last_publish = status.last_publish_time.as_deref().and_then(rfc3339_millis);

    // A resource seen for the first time adopts a matching message without publishing,
    // unless it declares attributes that GetRetainedMessage cannot show (then one
    // publish pins them): a publish reaches every subscriber.
    let adopting = status.applied_sha256.is_none() && adoptable(desired);
    if matches && (spec_unchanged || adopting) {
        return RetainedPlan::InSync;
    }
    if spec_unchanged && observed.is_none() && expired(desired, last_publish, now_ms) {
        return RetainedPlan::Expired;
    }

    let edited_by_others = spec_unchanged
        || observed.is_some_and(|o| {
            !matches
                && last_publish.is_some_and(|t| {
                    o.last_modified_time > t.saturating_add(CLOCK_SKEW_ALLOWANCE_MS)
                })
        });
    let out_of_band = edited_by_others.then(|| describe_edit(desired, observed));
    if let Some(detail) = &out_of_band {
        if policy == ConflictPolicy::Preserve && !force {
            return RetainedPlan::Preserve {
                detail: detail.clone(),
            };
        }
    }
    let reason = if spec_unchanged {
        PublishReason::DriftCorrection
    } else if status.applied_sha256.is_none() {
        PublishReason::Create
    } else {
        PublishReason::Update
    };
    RetainedPlan::Publish {
        reason,
        out_of_band,
    }
}

/// No attribute that GetRetainedMessage cannot return, beyond the JSON content type the
/// json payload implies.
pub fn adoptable(desired: &PublishRequest) -> bool {
    desired.response_topic.is_none()
        && desired.correlation_data.is_none()
        && desired.message_expiry.is_none()
        && desired
            .content_type
            .as_deref()
            .is_none_or(|c| c == "application/json")
}

/// The spec changed since the last recorded publish (`sha` is not `appliedSha256`), yet
/// the cloud shows exactly the new spec, and what it shows is not what the status last
/// recorded of the cloud: the content moved, after our record, to precisely our new
/// payload. That is our own publish whose record was lost (a dropped answer, a crash
/// before the status write, a failed status write): it is adopted, not published again,
/// because a publish reaches every subscriber.
///
/// Only a change of the visible content counts: a spec change in user properties alone
/// cannot be told from the old message, so it is published (at worst once more). As in
/// the adoption of an existing message by [`plan_retained`], a spec that sets attributes
/// GetRetainedMessage cannot show (content type other than JSON's, expiry, response
/// topic, correlation data) is published all the same, so that they are pinned even if
/// someone else put the same content there. A resource never published (no
/// `appliedSha256`) is left to [`plan_retained`]'s adoption rule.
pub fn landed_unrecorded(
    prior: &RetainedMessageStatus,
    sha: &str,
    desired: &PublishRequest,
    observed: &RetainedMessageData,
) -> bool {
    let Some(applied) = prior.applied_sha256.as_deref() else {
        return false;
    };
    if applied == sha || !adoptable(desired) || !same_message(desired, observed) {
        return false;
    }
    let observed_sha = hex::encode(Sha256::digest(&observed.payload));
    prior.payload_sha256.as_deref() != Some(observed_sha.as_str())
        || prior.qos != u8::try_from(observed.qos).ok()
}

/// After a publish whose answer was lost: whether `after`, the retained message read
/// back, is `desired` stored after `before` (the message read before the publish).
///
/// A new store time, or the desired payload where another one was: AWS (and the local
/// data plane) keep milliseconds, so two publishes can share a store time.
pub fn publish_landed(
    desired: &PublishRequest,
    before: Option<&RetainedMessageData>,
    after: &RetainedMessageData,
) -> bool {
    let stored_since = before.is_none_or(|b| {
        after.last_modified_time != b.last_modified_time || !same_message(desired, b)
    });
    same_message(desired, after) && stored_since
}

/// `field: old -> new` lines for a planned publish (`shadowsync diff`); payloads by size
/// and hash only.
pub fn describe_publish(
    observed: Option<&RetainedMessageData>,
    desired: &PublishRequest,
) -> Vec<String> {
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

/// What GetRetainedMessage can show: payload, qos, user properties (in order).
fn same_message(desired: &PublishRequest, observed: &RetainedMessageData) -> bool {
    observed.payload == desired.payload
        && observed.qos == desired.qos
        && observed.user_properties == desired.user_properties
}

fn expired(desired: &PublishRequest, last_publish: Option<i64>, now_ms: i64) -> bool {
    let (Some(expiry), Some(published)) = (desired.message_expiry, last_publish) else {
        return false;
    };
    let expires_at = published.saturating_add(expiry.saturating_mul(1000));
    expires_at <= now_ms.saturating_add(CLOCK_SKEW_ALLOWANCE_MS)
}

fn rfc3339_millis(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// RFC 3339 UTC with milliseconds for an epoch-milliseconds time (as
/// `lastModifiedTime` comes from AWS); `None` if out of range.
pub fn rfc3339_from_millis(ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Size and SHA-256 prefix: enough to tell payloads apart without revealing them.
pub fn payload_fingerprint(payload: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(payload));
    format!("{} bytes, sha256 {}", payload.len(), &digest[..12])
}

fn describe_edit(desired: &PublishRequest, observed: Option<&RetainedMessageData>) -> String {
    let Some(o) = observed else {
        return format!(
            "the retained message on {} was deleted by someone else",
            desired.topic
        );
    };
    let mut diffs = Vec::new();
    if o.payload != desired.payload {
        diffs.push(format!(
            "payload {} (spec: {})",
            payload_fingerprint(&o.payload),
            payload_fingerprint(&desired.payload)
        ));
    }
    if o.qos != desired.qos {
        diffs.push(format!("qos {} (spec: {})", o.qos, desired.qos));
    }
    if o.user_properties != desired.user_properties {
        diffs.push(format!(
            "{} user properties differing from the spec's {}",
            o.user_properties.len(),
            desired.user_properties.len()
        ));
    }
    let when = rfc3339_from_millis(o.last_modified_time)
        .map(|t| format!(" at {t}"))
        .unwrap_or_default();
    format!(
        "the retained message on {} was replaced by someone else{when}: {}",
        desired.topic,
        diffs.join("; ")
    )
}

#[cfg(test)]
mod tests;
