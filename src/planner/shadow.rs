//! Shadow planning: what to write so the cloud's desired section matches the spec on
//! the paths this resource owns, and nothing else (README.md, "What it does, step by step").

use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::json::{canonical_map, non_null, present_equal};
use super::paths::{is_ancestor, leaves, lookup, parse_pointer, patch_from_pairs};
use crate::api::validate::FieldError;
use crate::api::{ConflictPolicy, ShadowMirror, ThingShadowSpec, ThingShadowStatus};
use crate::dataplane::{ShadowDocument, ShadowLimits, ShadowState};

/// What this resource owns in the shadow and what it last confirmed there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Leaf pointers written by this resource (`status.managedPaths`).
    pub managed_paths: Vec<String>,
    /// [`desired_sha256`] of the spec last confirmed in the cloud.
    pub applied_desired_sha256: Option<String>,
    /// Shadow timestamp (epoch seconds) of our last successful write.
    pub last_write_timestamp: Option<i64>,
}

impl Ownership {
    /// Ownership as recorded in a resource's status.
    pub fn from_status(status: &ThingShadowStatus) -> Self {
        Self {
            managed_paths: status.managed_paths.clone(),
            applied_desired_sha256: status.applied_desired_sha256.clone(),
            last_write_timestamp: status.last_write.as_ref().map(|w| w.timestamp),
        }
    }
}

/// SHA-256 (hex) of a desired section, keys sorted at every level: reordering keys in
/// a manifest is not a spec change.
pub fn desired_sha256(desired: &Map<String, Value>) -> String {
    hex::encode(Sha256::digest(canonical_map(desired).as_bytes()))
}

/// One path's value before and after (`None` = absent).
#[derive(Clone, Debug, PartialEq)]
pub struct PathChange {
    /// JSON pointer inside `desired`.
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// The outcome of [`plan_shadow`].
#[derive(Clone, Debug, PartialEq)]
pub enum ShadowPlan {
    /// Every owned path already holds the spec's value: no call.
    InSync,
    /// Send `update` (`{"state":{"desired": D}}`; the caller adds the `version` it read).
    Write {
        update: Value,
        /// Every path the write changes (old = cloud value, new = written value), sorted.
        changes: Vec<PathChange>,
        /// The subset of `changes` that undoes someone else's edit (old = their value,
        /// new = spec value). Non-empty means: emit a Warning Event.
        out_of_band: Vec<PathChange>,
    },
    /// `conflictPolicy: Preserve` found out-of-band edits: write nothing, stall.
    Preserve { out_of_band: Vec<PathChange> },
}

/// The spec's desired section as a map. `None` is an empty object; a non-object is
/// rejected by validation before planning and counts as empty here.
fn spec_desired(spec: &ThingShadowSpec) -> Map<String, Value> {
    match &spec.desired {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// The desired section of an observed document, as an object (`{}` when absent).
fn cloud_desired(observed: Option<&ShadowDocument>) -> Value {
    match observed.and_then(|d| d.state.desired.as_ref()) {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => Value::Object(Map::new()),
    }
}

/// Plans the write that brings the owned paths of the shadow to the spec.
///
/// - every spec leaf whose cloud value differs is set (arrays whole, `1 == 1.0`);
/// - every owned path the spec no longer has is set to `null` if still present, unless
///   it is an ancestor or descendant of a spec leaf (setting that leaf replaces it);
/// - keys not owned never appear in the write;
/// - an owned spec path whose cloud value differs although the spec is unchanged since
///   it was last confirmed, or whose metadata timestamp is newer than our last write, was
///   edited out of band: `Overwrite` (or `force`) writes it back and reports it,
///   `Preserve` writes nothing at all.
pub fn plan_shadow(
    spec: &ThingShadowSpec,
    observed: Option<&ShadowDocument>,
    ownership: &Ownership,
    force: bool,
) -> ShadowPlan {
    let desired = spec_desired(spec);
    let cloud = cloud_desired(observed);
    let metadata = observed.and_then(|d| d.metadata.desired.as_ref());
    let spec_leaves = leaves(&desired);
    let spec_unchanged =
        ownership.applied_desired_sha256.as_deref() == Some(desired_sha256(&desired).as_str());

    let mut sets: Vec<(String, Value)> = Vec::new();
    let mut changes = Vec::new();
    let mut out_of_band = Vec::new();
    for (path, want) in &spec_leaves {
        let have = lookup(&cloud, path);
        if present_equal(have, Some(want)) {
            continue;
        }
        let change = PathChange {
            path: path.clone(),
            old: non_null(have).cloned(),
            new: non_null(Some(want)).cloned(),
        };
        // A newer timestamp only says someone else wrote after us; it is an edit of
        // ours only where we own the path (or a path above or below it). A new spec
        // leaf taking over someone's key is a spec change, not a conflict.
        let edited_after_us = || {
            owns_region(&ownership.managed_paths, path)
                && metadata.is_some_and(|m| edited_after(m, path, ownership.last_write_timestamp))
        };
        let edited_by_others = spec_unchanged || edited_after_us();
        if edited_by_others {
            out_of_band.push(change.clone());
        }
        changes.push(change);
        sets.push((path.clone(), (*want).clone()));
    }

    if !out_of_band.is_empty() && spec.conflict_policy == ConflictPolicy::Preserve && !force {
        return ShadowPlan::Preserve { out_of_band };
    }

    let spec_paths: Vec<&str> = spec_leaves.iter().map(|(p, _)| p.as_str()).collect();
    let removed = ownership
        .managed_paths
        .iter()
        .map(String::as_str)
        .filter(|p| !spec_paths.contains(p))
        .filter(|p| {
            // The spec's own value at an ancestor or descendant replaces this path.
            !spec_paths
                .iter()
                .any(|s| is_ancestor(p, s) || is_ancestor(s, p))
        });
    for (path, old) in present_paths_to_null(removed, &cloud) {
        changes.push(PathChange {
            path: path.clone(),
            old: Some(old),
            new: None,
        });
        sets.push((path, Value::Null));
    }

    if changes.is_empty() {
        return ShadowPlan::InSync;
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    ShadowPlan::Write {
        update: desired_update(patch_from_pairs(sets)),
        changes,
        out_of_band,
    }
}

/// `{"state":{"desired": patch}}`.
fn desired_update(patch: Map<String, Value>) -> Value {
    json!({"state": {"desired": Value::Object(patch)}})
}

/// The paths among `paths` that are present in `cloud`, with their values, sorted and
/// without duplicates; a path whose ancestor is already nulled is dropped (the
/// ancestor's removal takes it along, and nulling both would turn the ancestor back
/// into an object). Malformed pointers and the root are ignored.
fn present_paths_to_null<'a>(
    paths: impl Iterator<Item = &'a str>,
    cloud: &Value,
) -> Vec<(String, Value)> {
    let mut sorted: Vec<&str> = paths.filter(|p| !p.is_empty()).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(String, Value)> = Vec::new();
    for path in sorted {
        if out.iter().any(|(n, _)| is_ancestor(n, path)) {
            continue;
        }
        if let Some(old) = non_null(lookup(cloud, path)) {
            out.push((path.to_string(), old.clone()));
        }
    }
    out
}

/// Whether `path`, or a path above or below it, is owned.
fn owns_region(managed_paths: &[String], path: &str) -> bool {
    managed_paths
        .iter()
        .any(|m| m == path || is_ancestor(m, path) || is_ancestor(path, m))
}

/// Whether the metadata of `path` (or of the cloud leaf above it, if someone replaced
/// an object by a scalar) is newer than our last write.
fn edited_after(metadata: &Value, path: &str, last_write: Option<i64>) -> bool {
    let Some(last_write) = last_write else {
        return false;
    };
    metadata_timestamp(metadata, path).is_some_and(|t| t > last_write)
}

/// The newest metadata timestamp at or below `path`, or of a leaf above it.
fn metadata_timestamp(metadata: &Value, path: &str) -> Option<i64> {
    let keys = parse_pointer(path)?;
    let mut node = metadata;
    for key in &keys {
        if let Some(t) = leaf_timestamp(node) {
            return Some(t);
        }
        node = node.as_object()?.get(key)?;
    }
    newest_timestamp(node)
}

/// A metadata leaf is `{"timestamp": N}`. A key named `timestamp` in the document
/// itself shows up as `{"timestamp": {"timestamp": N}}`, which is not a number.
fn leaf_timestamp(node: &Value) -> Option<i64> {
    node.as_object()?.get("timestamp")?.as_i64()
}

/// The newest leaf timestamp in a metadata subtree (arrays carry one entry per element).
fn newest_timestamp(node: &Value) -> Option<i64> {
    if let Some(t) = leaf_timestamp(node) {
        return Some(t);
    }
    match node {
        Value::Object(m) => m.values().filter_map(newest_timestamp).max(),
        Value::Array(items) => items.iter().filter_map(newest_timestamp).max(),
        _ => None,
    }
}

/// The write for `deletionPolicy: ClearDesired`: `null` for every owned path still
/// present. `None` when there is nothing to clear (or no shadow).
pub fn plan_clear(managed_paths: &[String], observed: Option<&ShadowDocument>) -> Option<Value> {
    let cloud = cloud_desired(Some(observed?));
    let nulls = present_paths_to_null(managed_paths.iter().map(String::as_str), &cloud);
    if nulls.is_empty() {
        return None;
    }
    let patch = patch_from_pairs(nulls.into_iter().map(|(p, _)| (p, Value::Null)));
    Some(desired_update(patch))
}

/// How a 409 should be handled once the shadow has been re-read.
#[derive(Clone, Debug, PartialEq)]
pub enum ConflictClass {
    /// Only `reported`, keys we do not own, or the version moved: retry with the new version.
    Benign,
    /// Someone changed paths we own or are about to write (old = first read, new = re-read).
    OutOfBand(Vec<PathChange>),
}

/// Classifies a version conflict by comparing the desired values of the owned paths
/// (`managed_paths`, plus `spec_paths` about to be written) between the read the failed
/// write was based on (`before`) and the re-read (`after`).
pub fn classify_conflict(
    before: Option<&ShadowDocument>,
    after: Option<&ShadowDocument>,
    managed_paths: &[String],
    spec_paths: &[String],
) -> ConflictClass {
    let old = cloud_desired(before);
    let new = cloud_desired(after);
    let mut paths: Vec<&str> = managed_paths
        .iter()
        .chain(spec_paths)
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .collect();
    paths.sort_unstable();
    paths.dedup();
    let changed: Vec<PathChange> = paths
        .into_iter()
        .filter_map(|path| {
            let (a, b) = (lookup(&old, path), lookup(&new, path));
            (!present_equal(a, b)).then(|| PathChange {
                path: path.to_string(),
                old: non_null(a).cloned(),
                new: non_null(b).cloned(),
            })
        })
        .collect();
    if changed.is_empty() {
        ConflictClass::Benign
    } else {
        ConflictClass::OutOfBand(changed)
    }
}

/// `status.shadow` for a document read from the cloud.
pub fn mirror(doc: &ShadowDocument) -> ShadowMirror {
    let section = |v: &Option<Value>| v.clone().filter(|v| !v.is_null());
    ShadowMirror {
        version: doc.version,
        desired: section(&doc.state.desired),
        reported: section(&doc.state.reported),
        delta: section(&doc.state.delta),
        last_reported_time: doc
            .metadata
            .reported
            .as_ref()
            .and_then(newest_timestamp)
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
    }
}

/// Owned paths present in `delta`: values the device has not applied yet. Empty
/// means the resource is `Converged`.
pub fn owned_delta_paths(delta: Option<&Value>, managed_paths: &[String]) -> Vec<String> {
    let Some(delta) = delta else {
        return Vec::new();
    };
    let mut out: Vec<String> = managed_paths
        .iter()
        .filter(|p| !p.is_empty() && non_null(lookup(delta, p)).is_some())
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The document after our write, computed from the read before it (`before`), the
/// write (`update`) and its answer: the write carried that read's version, so nothing
/// else can have landed in between. The status mirrors this prediction, so the next
/// read of an unchanged shadow finds the status as it is and no status write follows.
pub fn after_write(
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

/// The write `update` would make the shadow larger than the document limit: the error that
/// says so, naming `spec.desired`.
///
/// The limit applies to the merged document: a spec that fits alone can still overflow
/// next to what the device reported. Such a write is refused before it is sent, as an
/// invalid spec, instead of being sent to answer 413.
pub fn merged_too_large(
    before: Option<&ShadowDocument>,
    update: &Value,
    limits: &ShadowLimits,
) -> Option<FieldError> {
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
        FieldError::new(
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
pub fn not_our_write(class: ConflictClass, update: &Value) -> ConflictClass {
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

/// A value for a message or a diff line, cut short.
pub fn show(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".into(),
        Some(v) => super::pass::truncate(v.to_string(), 80),
    }
}

/// One line per change, `path: cloud X, spec Y`, for status messages and Events.
/// Shadow values are not secret (they are in the manifest and the shadow alike).
pub fn describe_changes(changes: &[PathChange]) -> String {
    let show = |v: &Option<Value>| match v {
        Some(v) => v.to_string(),
        None => "absent".to_string(),
    };
    changes
        .iter()
        .map(|c| format!("{}: cloud {}, spec {}", c.path, show(&c.old), show(&c.new)))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
