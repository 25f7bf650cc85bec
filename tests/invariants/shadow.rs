//! The shadow engine (`shadowsync::shadow`) against the model in [`super::json`].
//!
//! After every step of a sequence of updates, deletes and clock jumps on one shadow:
//! - an update is accepted exactly when no rule refuses it, and a refusal has the kind
//!   of one of the rules broken (size 413; shape, depth, null in an array 400; version
//!   409);
//! - after an accepted update each section equals the model merge of the old section
//!   and the request's, the version is one more than the base, the response echoes the
//!   request, and sending the same request again changes no state (idempotence);
//! - nothing stored holds a `null`, a section never exceeds the depth limit, the
//!   document never exceeds the size limit, the metadata mirrors the state;
//! - GetThingShadow's delta holds exactly the desired values reported does not match;
//! - merging a document into itself changes nothing.

use serde_json::{json, Map, Value};
use shadowsync::dataplane::{ErrorKind, ShadowLimits};
use shadowsync::shadow::{delta, merge, ShadowRecord, TOMBSTONE_RETENTION_SECS};

use super::json::{contains_null, depth, document_bytes, model_delta, model_merge, null_in_array};

/// An UpdateThingShadow request, field by field; any field may be malformed.
#[derive(Clone, Debug, Default)]
pub struct UpdateParts {
    /// `state.desired`: absent, `null`, an object, or anything else.
    pub desired: Option<Value>,
    pub reported: Option<Value>,
    /// `version`: a non-negative integer is well-formed.
    pub version: Option<Value>,
    /// `clientToken`: a string of at most 64 bytes is well-formed.
    pub client_token: Option<Value>,
    /// Adds a `state.delta`, which a request may not carry.
    pub stray_delta: bool,
}

impl UpdateParts {
    pub fn to_json(&self) -> String {
        let mut state = Map::new();
        if let Some(d) = &self.desired {
            state.insert("desired".into(), d.clone());
        }
        if let Some(r) = &self.reported {
            state.insert("reported".into(), r.clone());
        }
        if self.stray_delta {
            state.insert("delta".into(), json!({"a": 1}));
        }
        let mut request = Map::new();
        request.insert("state".into(), Value::Object(state));
        if let Some(v) = &self.version {
            request.insert("version".into(), v.clone());
        }
        if let Some(t) = &self.client_token {
            request.insert("clientToken".into(), t.clone());
        }
        Value::Object(request).to_string()
    }
}

/// The version an update must carry, and builds on.
pub fn base_version(record: &ShadowRecord, now: i64) -> u64 {
    if !record.exists() && now - record.timestamp >= TOMBSTONE_RETENTION_SECS {
        0
    } else {
        record.version
    }
}

/// Applies `parts` to `record` and checks the outcome; returns the record to keep.
pub fn check_update(
    record: &ShadowRecord,
    parts: &UpdateParts,
    limits: &ShadowLimits,
    now: i64,
) -> ShadowRecord {
    let bytes = parts.to_json();
    let base = base_version(record, now);

    // Every rule the request breaks, with the kind of error it earns.
    let mut refusals: Vec<ErrorKind> = Vec::new();
    let object = |s: &Option<Value>| match s {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if bytes.len() > 2 * limits.max_document_bytes
        || document_bytes(&object(&parts.desired), &object(&parts.reported))
            > limits.max_document_bytes
    {
        refusals.push(ErrorKind::RequestEntityTooLarge);
    }
    if parts.stray_delta || (parts.desired.is_none() && parts.reported.is_none()) {
        refusals.push(ErrorKind::InvalidRequest);
    }
    for s in [&parts.desired, &parts.reported].into_iter().flatten() {
        match s {
            Value::Null => {}
            Value::Object(_) => {
                if depth(s) > limits.max_depth || null_in_array(s) {
                    refusals.push(ErrorKind::InvalidRequest);
                }
            }
            _ => refusals.push(ErrorKind::InvalidRequest),
        }
    }
    let version = match &parts.version {
        None => None,
        Some(v) => {
            if v.as_u64().is_none() {
                refusals.push(ErrorKind::InvalidRequest);
            }
            v.as_u64()
        }
    };
    match &parts.client_token {
        None => {}
        Some(Value::String(t)) if t.len() <= 64 => {}
        Some(_) => refusals.push(ErrorKind::InvalidRequest),
    }
    if version.is_some_and(|n| n != base) {
        refusals.push(ErrorKind::Conflict);
    }
    let (old_desired, old_reported) = if record.exists() {
        (record.desired.clone(), record.reported.clone())
    } else {
        (Map::new(), Map::new())
    };
    let next_section = |old: &Map<String, Value>, patch: &Option<Value>| match patch {
        None => old.clone(),
        Some(Value::Object(p)) => model_merge(old, p),
        Some(_) => Map::new(),
    };
    let want_desired = next_section(&old_desired, &parts.desired);
    let want_reported = next_section(&old_reported, &parts.reported);
    if document_bytes(&want_desired, &want_reported) > limits.max_document_bytes {
        refusals.push(ErrorKind::RequestEntityTooLarge);
    }

    let updated = match record.apply_update(bytes.as_bytes(), limits, now) {
        Err(err) => {
            assert!(
                refusals.contains(&err.kind),
                "refused with {:?} ({}), expected one of {refusals:?}: {bytes}",
                err.kind,
                err.message
            );
            return record.clone();
        }
        Ok(updated) => {
            assert!(
                refusals.is_empty(),
                "accepted although {refusals:?} was expected: {bytes}"
            );
            updated
        }
    };
    let next = &updated.record;
    assert!(next.exists());
    assert_eq!(next.version, base + 1, "version after {bytes}");
    assert_eq!(updated.response.version, next.version);
    assert_eq!(updated.response.timestamp, now);
    assert_eq!(
        Value::Object(next.desired.clone()),
        Value::Object(want_desired),
        "desired after {bytes}, before {old_desired:?}"
    );
    assert_eq!(
        Value::Object(next.reported.clone()),
        Value::Object(want_reported),
        "reported after {bytes}, before {old_reported:?}"
    );
    assert_eq!(updated.response.state.desired, parts.desired);
    assert_eq!(updated.response.state.reported, parts.reported);
    assert_eq!(
        updated.response.client_token.as_deref(),
        parts.client_token.as_ref().and_then(Value::as_str)
    );
    check_stored(next, limits);
    check_document(next, now);

    // The same request once more, without its version, changes no state.
    let again = UpdateParts {
        version: None,
        ..parts.clone()
    };
    let twice = next
        .apply_update(again.to_json().as_bytes(), limits, now)
        .unwrap_or_else(|e| panic!("a repeated update was refused ({e}): {bytes}"));
    assert_eq!(
        twice.record.desired, next.desired,
        "merge is not idempotent"
    );
    assert_eq!(
        twice.record.reported, next.reported,
        "merge is not idempotent"
    );
    assert_eq!(twice.record.version, next.version + 1);
    updated.record
}

/// Raw bytes as a request: any outcome but a panic, and an accepted one stores a
/// well-formed document.
pub fn check_raw(
    record: &ShadowRecord,
    raw: &[u8],
    limits: &ShadowLimits,
    now: i64,
) -> ShadowRecord {
    match record.apply_update(raw, limits, now) {
        Ok(updated) => {
            assert_eq!(updated.record.version, base_version(record, now) + 1);
            check_stored(&updated.record, limits);
            check_document(&updated.record, now);
            updated.record
        }
        Err(_) => record.clone(),
    }
}

/// DeleteThingShadow: answers the version the shadow had and leaves a tombstone.
pub fn check_delete(record: &ShadowRecord, now: i64) -> ShadowRecord {
    match record.delete(now) {
        Some((tombstone, deleted)) => {
            assert!(record.exists());
            assert_eq!(deleted.version, record.version);
            assert!(!tombstone.exists());
            assert_eq!(base_version(&tombstone, now), record.version);
            tombstone
        }
        None => {
            assert!(!record.exists());
            record.clone()
        }
    }
}

/// What is stored: no nulls, within the limits, metadata mirroring the state.
pub fn check_stored(record: &ShadowRecord, limits: &ShadowLimits) {
    for (section, metadata) in [
        (&record.desired, &record.desired_metadata),
        (&record.reported, &record.reported_metadata),
    ] {
        let value = Value::Object(section.clone());
        assert!(!contains_null(&value), "stored a null: {value}");
        assert!(
            section.is_empty() || depth(&value) <= limits.max_depth,
            "stored {} levels, limit {}: {value}",
            depth(&value),
            limits.max_depth
        );
        assert!(
            mirrors(&value, &Value::Object(metadata.clone())),
            "metadata {metadata:?} does not mirror {value}"
        );
    }
    let size = document_bytes(&record.desired, &record.reported);
    assert!(size <= limits.max_document_bytes, "stored {size} bytes");
}

fn mirrors(state: &Value, metadata: &Value) -> bool {
    match (state, metadata) {
        (Value::Object(s), Value::Object(m)) => {
            s.len() == m.len()
                && s.iter()
                    .all(|(k, v)| m.get(k).is_some_and(|mv| mirrors(v, mv)))
        }
        (Value::Array(s), Value::Array(m)) => {
            s.len() == m.len() && s.iter().zip(m).all(|(v, mv)| mirrors(v, mv))
        }
        (Value::Object(_) | Value::Array(_) | Value::Null, _) => false,
        (_, Value::Object(m)) => m.len() == 1 && m.get("timestamp").is_some_and(Value::is_i64),
        _ => false,
    }
}

/// GetThingShadow: sections as stored, delta exactly the unmatched desired values.
pub fn check_document(record: &ShadowRecord, now: i64) {
    let doc = record.document(now);
    let desired = Value::Object(record.desired.clone());
    let reported = Value::Object(record.reported.clone());
    assert_eq!(doc.state.desired.is_some(), !record.desired.is_empty());
    assert_eq!(doc.state.reported.is_some(), !record.reported.is_empty());
    let want = if record.desired.is_empty() {
        None
    } else {
        model_delta(&desired, Some(&reported))
    };
    assert_eq!(
        doc.state.delta, want,
        "delta of {desired} against {reported}"
    );
    if let Some(d) = &doc.state.delta {
        // Applying the delta to reported leaves nothing to apply.
        let mut converged = reported.clone();
        merge(&mut converged, d);
        assert_eq!(
            delta(&desired, &converged),
            None,
            "delta {d} misses a difference"
        );
    }
}

/// Merging a document into itself changes nothing; a patch merged twice equals once,
/// and equals the model merge.
pub fn check_self_merge(record: &ShadowRecord, patch: &Map<String, Value>) {
    let desired = Value::Object(record.desired.clone());
    let mut once = desired.clone();
    merge(&mut once, &desired);
    assert_eq!(once, desired, "merging a document into itself changed it");

    let patch_value = Value::Object(patch.clone());
    let mut a = desired.clone();
    merge(&mut a, &patch_value);
    let mut b = a.clone();
    merge(&mut b, &patch_value);
    assert_eq!(a, b, "merging {patch_value} twice differs from once");
    assert_eq!(a, Value::Object(model_merge(&record.desired, patch)));
}
