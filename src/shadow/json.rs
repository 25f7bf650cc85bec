//! Tree operations on shadow state: merge with null removal, delta, metadata, depth.
//!
//! These are pure functions on `serde_json` values so that the planner and the reconcile
//! code can predict what a shadow will look like after an update without a data plane.

use serde_json::{Map, Value};

/// Merges `patch` into `target` the way UpdateThingShadow merges a request section into
/// the stored section.
///
/// - objects merge key by key, recursively;
/// - a key set to `null` is removed;
/// - an object left empty by this patch's removals is removed from its parent (a patch
///   object with no keys, `{}`, removes nothing and so is kept or leaves the target as is);
/// - arrays and scalars replace the target value whole;
/// - an object merged onto a scalar or an array replaces it (as if merged onto `{}`);
/// - a `null` patch makes the target `null` (that is how `"desired": null` clears a section).
///
/// Merging the same patch twice gives the same result as merging it once.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target) = target {
                // The metadata is discarded: callers of the public function only want state.
                merge_with_metadata(target, &mut Map::new(), patch, 0);
            }
        }
        other => *target = other.clone(),
    }
}

/// [`merge`] on an object, keeping `metadata` (the same tree, with `{"timestamp": now}` at
/// every leaf) in step: written leaves get `now`, removed keys lose their metadata.
pub(crate) fn merge_with_metadata(
    target: &mut Map<String, Value>,
    metadata: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    now: i64,
) {
    for (key, patch_value) in patch {
        match patch_value {
            Value::Null => {
                // shift_remove keeps the order of the remaining keys stable.
                target.shift_remove(key);
                metadata.shift_remove(key);
            }
            Value::Object(patch_child) => {
                if !matches!(target.get(key), Some(Value::Object(_))) {
                    // A new key, or an object replacing a scalar or an array: its old
                    // metadata (a leaf timestamp or a list) no longer describes it.
                    target.insert(key.clone(), Value::Object(Map::new()));
                    metadata.insert(key.clone(), Value::Object(Map::new()));
                } else if !matches!(metadata.get(key), Some(Value::Object(_))) {
                    metadata.insert(key.clone(), Value::Object(Map::new()));
                }
                let mut emptied = false;
                if let (Some(Value::Object(target_child)), Some(Value::Object(meta_child))) =
                    (target.get_mut(key), metadata.get_mut(key))
                {
                    merge_with_metadata(target_child, meta_child, patch_child, now);
                    // Only a non-empty patch can empty an object: an explicit `{}` is a
                    // value the writer asked for and is kept.
                    emptied = target_child.is_empty() && !patch_child.is_empty();
                }
                if emptied {
                    target.shift_remove(key);
                    metadata.shift_remove(key);
                }
            }
            leaf => {
                target.insert(key.clone(), leaf.clone());
                metadata.insert(key.clone(), leaf_metadata(leaf, now));
            }
        }
    }
}

/// The metadata of a stored value: the same tree with `{"timestamp": now}` at every leaf,
/// and a list with one entry per element for an array.
pub fn leaf_metadata(value: &Value, now: i64) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), leaf_metadata(v, now)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| leaf_metadata(v, now)).collect()),
        _ => timestamp(now),
    }
}

/// `{"timestamp": now}`.
pub(crate) fn timestamp(now: i64) -> Value {
    let mut map = Map::new();
    map.insert("timestamp".to_string(), Value::from(now));
    Value::Object(map)
}

/// The desired values that the reported state does not match, or `None` when it matches.
///
/// Objects are compared key by key, recursively, and only differing keys are kept; a key
/// missing from `reported` is a difference; arrays and scalars are compared whole. Numbers
/// compare by value, so `1` matches `1.0`.
///
/// `delta(d, r)` is `None` exactly when `d` is a sub-tree of `r`.
pub fn delta(desired: &Value, reported: &Value) -> Option<Value> {
    match (desired, reported) {
        (Value::Object(desired), Value::Object(reported)) => {
            let mut out = Map::new();
            for (key, want) in desired {
                let diff = match reported.get(key) {
                    Some(have) => delta(want, have),
                    None => Some(want.clone()),
                };
                if let Some(diff) = diff {
                    out.insert(key.clone(), diff);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        _ if values_equal(desired, reported) => None,
        _ => Some(desired.clone()),
    }
}

/// JSON equality with numbers compared by value (`1 == 1.0`) and objects compared as
/// maps (key order does not matter).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x == y {
                return true;
            }
            // Mixed integer/float representations of the same number; two integers are
            // compared exactly above (large ones would collide as f64).
            if !(x.is_f64() || y.is_f64()) {
                return false;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| values_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Levels of JSON nesting of a value: a scalar is 0, an object or an array is one more than
/// its deepest child. A `desired` section `{"a": {"b": 1}}` has depth 2; AWS's limit
/// ("maximum is 6") is checked against this number for each section. Arrays count as a
/// level, as they do in the AWS Greengrass shadow manager.
pub fn json_depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether a `null` occurs anywhere inside an array (directly, or inside an object or an
/// array within it). Arrays are stored verbatim, so a `null` there could not mean removal.
pub fn has_null_in_array(value: &Value) -> bool {
    fn any_null(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Object(map) => map.values().any(any_null),
            Value::Array(items) => items.iter().any(any_null),
            _ => false,
        }
    }
    match value {
        Value::Object(map) => map.values().any(has_null_in_array),
        Value::Array(items) => items.iter().any(any_null),
        _ => false,
    }
}
