//! The stored shadow record and the three shadow operations on it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json::{
    delta, has_null_in_array, json_depth, leaf_metadata, merge_with_metadata, timestamp,
};
use crate::dataplane::{
    DataPlaneError, ErrorKind, ShadowDeleted, ShadowDocument, ShadowLimits, ShadowMetadata,
    ShadowState,
};

/// How long a deleted shadow's version is remembered (AWS: 48 hours). A shadow re-created
/// within this time continues from the deleted one's version; later it starts afresh.
pub const TOMBSTONE_RETENTION_SECS: i64 = 48 * 3600;

/// Longest `clientToken` AWS accepts, in bytes.
pub const MAX_CLIENT_TOKEN_BYTES: usize = 64;

/// Error messages, as AWS words them, so that callers matching on text see the same thing
/// from every data-plane implementation.
pub mod messages {
    /// The request is not JSON, or not a JSON object.
    pub const INVALID_JSON: &str = "Payload contains invalid json";
    /// No `state`.
    pub const MISSING_STATE: &str = "Missing required node: state";
    /// `state` is not an object.
    pub const STATE_NOT_OBJECT: &str = "State node must be an object";
    /// `state.desired` is neither an object nor `null`.
    pub const DESIRED_NOT_OBJECT: &str = "Desired node must be an object";
    /// `state.reported` is neither an object nor `null`.
    pub const REPORTED_NOT_OBJECT: &str = "Reported node must be an object";
    /// `state` has neither `desired` nor `reported`.
    pub const EMPTY_STATE: &str = "State node must contain a desired or a reported node";
    /// `version` is not a non-negative integer.
    pub const INVALID_VERSION: &str = "Invalid version";
    /// `clientToken` is not a string of at most 64 bytes.
    pub const INVALID_CLIENT_TOKEN: &str = "Invalid clientToken";
    /// A `null` inside an array.
    pub const NULL_IN_ARRAY: &str = "Null values are not allowed in arrays";
    /// 409: `version` is not the shadow's current version.
    pub const VERSION_CONFLICT: &str = "Version conflict";
    /// 413: the request, or the document it would produce, is over the limit.
    pub const TOO_LARGE: &str = "The payload exceeds the maximum size allowed";
    /// 415: the request is not UTF-8.
    pub const UNSUPPORTED_ENCODING: &str =
        "Unsupported documented encoding; supported encoding is UTF-8";
}

/// A parsed and validated UpdateThingShadow request.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateRequest {
    /// The `desired` section as sent: an object, `Value::Null` (clear the section), or
    /// `None` when absent.
    pub desired: Option<Value>,
    /// The `reported` section, like `desired`.
    pub reported: Option<Value>,
    /// Echoed in the response so that the writer can match it to its request.
    pub client_token: Option<String>,
    /// The version the writer expects the shadow to have.
    pub version: Option<u64>,
}

impl UpdateRequest {
    /// Parses a raw request and checks everything that does not depend on the stored
    /// shadow: size, encoding, shape, `version`, `clientToken`, nesting depth and `null`
    /// inside arrays. Keys other than `state`, `version` and `clientToken` are ignored.
    pub fn parse(payload: &[u8], limits: &ShadowLimits) -> Result<Self, DataPlaneError> {
        use messages::*;
        // A cheap guard before parsing. The limit itself applies to the state sections
        // (below, and to the merged document in `apply_parsed`), not to the envelope
        // around them (`{"state":..}`, `version`, `clientToken`): a document at the limit
        // must be writable.
        if payload.len() > limits.max_document_bytes.saturating_mul(2) {
            return Err(too_large());
        }
        let text = std::str::from_utf8(payload).map_err(|_| {
            DataPlaneError::new(ErrorKind::UnsupportedDocumentEncoding, UNSUPPORTED_ENCODING)
        })?;
        let root: Value = serde_json::from_str(text).map_err(|_| invalid(INVALID_JSON))?;
        let Value::Object(mut root) = root else {
            return Err(invalid(INVALID_JSON));
        };

        let mut state = match root.remove("state") {
            None => return Err(invalid(MISSING_STATE)),
            Some(Value::Object(state)) => state,
            Some(_) => return Err(invalid(STATE_NOT_OBJECT)),
        };
        // AWS stores only these two sections; anything else (including `delta`) is refused
        // rather than silently dropped.
        if let Some(other) = state
            .keys()
            .find(|k| k.as_str() != "desired" && k.as_str() != "reported")
        {
            return Err(invalid(format!(
                "State contains an invalid node: '{other}'"
            )));
        }
        let desired = state.remove("desired");
        let reported = state.remove("reported");
        if desired.is_none() && reported.is_none() {
            return Err(invalid(EMPTY_STATE));
        }
        for (section, not_object) in [
            (&desired, DESIRED_NOT_OBJECT),
            (&reported, REPORTED_NOT_OBJECT),
        ] {
            match section {
                None | Some(Value::Null) => {}
                Some(value @ Value::Object(_)) => {
                    if json_depth(value) > limits.max_depth {
                        return Err(invalid(format!(
                            "JSON contains too many levels of nesting; maximum is {}",
                            limits.max_depth
                        )));
                    }
                    if has_null_in_array(value) {
                        return Err(invalid(NULL_IN_ARRAY));
                    }
                }
                Some(_) => return Err(invalid(not_object)),
            }
        }

        let empty = Map::new();
        let desired_map = match &desired {
            Some(Value::Object(map)) => map,
            _ => &empty,
        };
        let reported_map = match &reported {
            Some(Value::Object(map)) => map,
            _ => &empty,
        };
        if document_size(desired_map, reported_map) > limits.max_document_bytes {
            return Err(too_large());
        }

        let version = match root.remove("version") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| invalid(INVALID_VERSION))?),
        };
        let client_token = match root.remove("clientToken") {
            None => None,
            Some(Value::String(t)) if t.len() <= MAX_CLIENT_TOKEN_BYTES => Some(t),
            Some(_) => return Err(invalid(INVALID_CLIENT_TOKEN)),
        };
        Ok(Self {
            desired,
            reported,
            client_token,
            version,
        })
    }
}

/// One shadow as stored: its two sections with their metadata, its version and a
/// tombstone flag.
///
/// A deleted shadow keeps its record (with empty sections and `deleted: true`) so that a
/// shadow re-created within [`TOMBSTONE_RETENTION_SECS`] continues counting versions from
/// where the deleted one stopped. A section with no keys is not part of the document: an
/// empty map here means the section is absent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShadowRecord {
    /// The desired section (empty: absent).
    #[serde(default)]
    pub desired: Map<String, Value>,
    /// The reported section (empty: absent).
    #[serde(default)]
    pub reported: Map<String, Value>,
    /// `desired`'s metadata: `{"timestamp": epoch_seconds}` at each leaf.
    #[serde(default)]
    pub desired_metadata: Map<String, Value>,
    /// `reported`'s metadata.
    #[serde(default)]
    pub reported_metadata: Map<String, Value>,
    /// The version of the last successful update (kept after a delete).
    pub version: u64,
    /// Epoch seconds of the last update or of the delete.
    pub timestamp: i64,
    /// A tombstone: the shadow does not exist, but its version is remembered.
    pub deleted: bool,
}

/// The outcome of a successful update: the record to store and the response to return.
#[derive(Clone, Debug, PartialEq)]
pub struct Updated {
    /// The shadow after the update, to be stored.
    pub record: ShadowRecord,
    /// The UpdateThingShadow response.
    pub response: ShadowDocument,
}

impl ShadowRecord {
    /// A shadow that has never existed (or whose tombstone expired): its next update
    /// creates version 1.
    pub fn absent() -> Self {
        Self {
            desired: Map::new(),
            reported: Map::new(),
            desired_metadata: Map::new(),
            reported_metadata: Map::new(),
            version: 0,
            timestamp: 0,
            deleted: true,
        }
    }

    /// Whether the shadow exists (GetThingShadow would find it).
    pub fn exists(&self) -> bool {
        !self.deleted
    }

    /// The version an update's `version` must match, and the one the next update builds
    /// on: the stored version, or the tombstone's while it is retained, else 0.
    pub fn current_version(&self, now: i64) -> u64 {
        if self.deleted && now.saturating_sub(self.timestamp) >= TOMBSTONE_RETENTION_SECS {
            0
        } else {
            self.version
        }
    }

    /// UpdateThingShadow: validates `request`, merges it into this shadow (creating it if
    /// absent or deleted) and returns the new record and the update response. `self` is
    /// left untouched, so a failed update changes nothing.
    ///
    /// `now` is epoch seconds.
    pub fn apply_update(
        &self,
        request: &[u8],
        limits: &ShadowLimits,
        now: i64,
    ) -> Result<Updated, DataPlaneError> {
        let request = UpdateRequest::parse(request, limits)?;
        self.apply_parsed(&request, limits, now)
    }

    /// [`Self::apply_update`] with a request already parsed by [`UpdateRequest::parse`].
    pub fn apply_parsed(
        &self,
        request: &UpdateRequest,
        limits: &ShadowLimits,
        now: i64,
    ) -> Result<Updated, DataPlaneError> {
        let base_version = self.current_version(now);
        if let Some(expected) = request.version {
            if expected != base_version {
                return Err(DataPlaneError::new(
                    ErrorKind::Conflict,
                    messages::VERSION_CONFLICT,
                ));
            }
        }

        let mut next = if self.deleted {
            // A re-created shadow starts empty.
            ShadowRecord::absent()
        } else {
            self.clone()
        };
        apply_section(
            &mut next.desired,
            &mut next.desired_metadata,
            request.desired.as_ref(),
            now,
        );
        apply_section(
            &mut next.reported,
            &mut next.reported_metadata,
            request.reported.as_ref(),
            now,
        );
        if document_size(&next.desired, &next.reported) > limits.max_document_bytes {
            return Err(too_large());
        }
        next.version = base_version.saturating_add(1);
        next.timestamp = now;
        next.deleted = false;

        let response = ShadowDocument {
            state: ShadowState {
                desired: request.desired.clone(),
                reported: request.reported.clone(),
                delta: None,
            },
            metadata: ShadowMetadata {
                desired: request.desired.as_ref().map(|v| sent_metadata(v, now)),
                reported: request.reported.as_ref().map(|v| sent_metadata(v, now)),
            },
            version: next.version,
            timestamp: now,
            client_token: request.client_token.clone(),
        };
        Ok(Updated {
            record: next,
            response,
        })
    }

    /// GetThingShadow: the whole document with `delta` (absent when the device reported
    /// every desired value). `timestamp` is `now`: AWS stamps a response with the time it
    /// was generated, the per-leaf metadata says when values changed. The caller checks
    /// [`Self::exists`] first.
    pub fn document(&self, now: i64) -> ShadowDocument {
        let section =
            |map: &Map<String, Value>| (!map.is_empty()).then(|| Value::Object(map.clone()));
        let delta = if self.desired.is_empty() {
            None
        } else {
            delta(
                &Value::Object(self.desired.clone()),
                &Value::Object(self.reported.clone()),
            )
        };
        ShadowDocument {
            state: ShadowState {
                desired: section(&self.desired),
                reported: section(&self.reported),
                delta,
            },
            metadata: ShadowMetadata {
                desired: (!self.desired.is_empty())
                    .then(|| Value::Object(self.desired_metadata.clone())),
                reported: (!self.reported.is_empty())
                    .then(|| Value::Object(self.reported_metadata.clone())),
            },
            version: self.version,
            timestamp: now,
            client_token: None,
        }
    }

    /// DeleteThingShadow: the tombstone to store and the response (the version the shadow
    /// had), or `None` when there is no shadow to delete.
    pub fn delete(&self, now: i64) -> Option<(ShadowRecord, ShadowDeleted)> {
        if !self.exists() {
            return None;
        }
        let tombstone = ShadowRecord {
            version: self.version,
            timestamp: now,
            ..ShadowRecord::absent()
        };
        let response = ShadowDeleted {
            version: self.version,
            timestamp: now,
        };
        Some((tombstone, response))
    }
}

/// Applies one request section to a stored section: absent leaves it, `null` clears it, an
/// object merges into it.
fn apply_section(
    state: &mut Map<String, Value>,
    metadata: &mut Map<String, Value>,
    patch: Option<&Value>,
    now: i64,
) {
    match patch {
        None => return,
        Some(Value::Object(patch)) => merge_with_metadata(state, metadata, patch, now),
        Some(_) => state.clear(),
    }
    // An empty section disappears from the document, metadata included.
    if state.is_empty() {
        metadata.clear();
    }
}

/// The size the document limit applies to: `{"desired":..,"reported":..}` serialized
/// compactly, absent sections left out, metadata excluded.
pub fn document_size(desired: &Map<String, Value>, reported: &Map<String, Value>) -> usize {
    #[derive(Serialize)]
    struct State<'a> {
        #[serde(skip_serializing_if = "Map::is_empty")]
        desired: &'a Map<String, Value>,
        #[serde(skip_serializing_if = "Map::is_empty")]
        reported: &'a Map<String, Value>,
    }
    // Serializing string-keyed JSON cannot fail; if it ever did, refusing is the safe side.
    serde_json::to_vec(&State { desired, reported }).map_or(usize::MAX, |v| v.len())
}

/// Metadata of a section as sent in an update: every leaf written, including the `null`s
/// that removed keys, gets `{"timestamp": now}`.
fn sent_metadata(value: &Value, now: i64) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), sent_metadata(v, now)))
                .collect(),
        ),
        Value::Null => timestamp(now),
        other => leaf_metadata(other, now),
    }
}

fn invalid(message: impl Into<String>) -> DataPlaneError {
    DataPlaneError::new(ErrorKind::InvalidRequest, message)
}

fn too_large() -> DataPlaneError {
    DataPlaneError::new(ErrorKind::RequestEntityTooLarge, messages::TOO_LARGE)
}
