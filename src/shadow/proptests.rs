use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::dataplane::ShadowLimits;

const T0: i64 = 1_700_000_000;

/// Few key names, so that patches often hit existing keys.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("timestamp")].prop_map(String::from)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        prop_oneof![Just(1.0f64), Just(-0.5)].prop_map(Value::from),
        "[xy]{0,2}".prop_map(Value::from),
    ]
}

fn array() -> impl Strategy<Value = Value> {
    prop::collection::vec(scalar(), 0..3).prop_map(Value::Array)
}

fn object_of(inner: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), inner), 0..4)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
}

/// A stored state: no nulls anywhere.
fn state() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![scalar(), array()];
    object_of(leaf.prop_recursive(3, 24, 4, object_of))
}

/// A request section: like a state, plus nulls (removals).
fn patch() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(Value::Null), scalar(), array()];
    object_of(leaf.prop_recursive(3, 24, 4, object_of))
}

fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.as_object()?.get(k))
}

/// Paths (from the root) where `patch` has a leaf: `(path, value)`.
fn leaves(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        other => out.push((prefix.clone(), other.clone())),
    }
}

fn is_subtree(desired: &Value, reported: &Value) -> bool {
    match (desired, reported) {
        (Value::Object(d), Value::Object(r)) => d
            .iter()
            .all(|(k, v)| r.get(k).is_some_and(|w| is_subtree(v, w))),
        (Value::Object(_), _) => false,
        _ => values_equal(desired, reported),
    }
}

/// The metadata tree mirrors the state: same keys at every object level, a list of the
/// same length for every array, `{"timestamp": n}` at every scalar.
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
        (Value::Object(_) | Value::Array(_), _) => false,
        (Value::Null, _) => false,
        (_, Value::Object(m)) => m.len() == 1 && m.get("timestamp").is_some_and(Value::is_i64),
        _ => false,
    }
}

fn has_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.values().any(has_null),
        Value::Array(items) => items.iter().any(has_null),
        _ => false,
    }
}

fn big_limits() -> ShadowLimits {
    ShadowLimits {
        max_document_bytes: 1 << 20,
        ..ShadowLimits::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Desired(Value),
    Reported(Value),
    Delete,
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => patch().prop_map(Op::Desired),
        4 => patch().prop_map(Op::Reported),
        1 => Just(Op::Delete),
        1 => (0i64..TOMBSTONE_RETENTION_SECS / 4).prop_map(Op::Wait),
    ]
}

proptest! {
    #[test]
    fn merge_is_idempotent(target in state(), patch in patch()) {
        let mut once = target.clone();
        merge(&mut once, &patch);
        let mut twice = once.clone();
        merge(&mut twice, &patch);
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn merge_removes_nulled_paths_and_writes_every_other_leaf(target in state(), patch in patch()) {
        let mut merged = target.clone();
        merge(&mut merged, &patch);
        prop_assert!(!has_null(&merged), "a null was stored: {}", merged);
        let mut found = Vec::new();
        leaves(&patch, &mut Vec::new(), &mut found);
        for (path, leaf) in found {
            let got = get_path(&merged, &path);
            if leaf.is_null() {
                prop_assert!(got.is_none(), "{:?} survived its removal: {}", path, merged);
            } else {
                prop_assert_eq!(got, Some(&leaf), "{:?} not written", path);
            }
        }
    }

    #[test]
    fn merge_keeps_keys_the_patch_does_not_name(target in state(), patch in patch()) {
        let mut merged = target.clone();
        merge(&mut merged, &patch);
        if let (Value::Object(t), Value::Object(p), Value::Object(m)) = (&target, &patch, &merged) {
            for (k, v) in t {
                if !p.contains_key(k) {
                    prop_assert_eq!(m.get(k), Some(v));
                }
            }
        }
    }

    #[test]
    fn delta_is_empty_iff_desired_is_a_subtree_of_reported(desired in state(), reported in state()) {
        prop_assert_eq!(delta(&desired, &reported).is_none(), is_subtree(&desired, &reported));
        // Merging desired into reported always makes it a sub-tree.
        let mut converged = reported.clone();
        merge(&mut converged, &desired);
        prop_assert_eq!(delta(&desired, &converged), None);
        prop_assert_eq!(delta(&desired, &desired), None);
    }

    #[test]
    fn delta_holds_only_desired_values(desired in state(), reported in state()) {
        if let Some(d) = delta(&desired, &reported) {
            prop_assert!(is_subtree(&d, &desired), "delta {} is not part of desired {}", d, desired);
        }
    }

    #[test]
    fn metadata_mirrors_state_after_any_updates(patches in prop::collection::vec((patch(), patch()), 1..6)) {
        let mut record = ShadowRecord::absent();
        for (i, (d, r)) in patches.into_iter().enumerate() {
            let request = json!({"state": {"desired": d, "reported": r}}).to_string();
            record = record
                .apply_update(request.as_bytes(), &big_limits(), T0 + i as i64)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .record;
            prop_assert!(mirrors(&Value::Object(record.desired.clone()), &Value::Object(record.desired_metadata.clone())));
            prop_assert!(mirrors(&Value::Object(record.reported.clone()), &Value::Object(record.reported_metadata.clone())));
        }
    }

    #[test]
    fn versions_only_grow_across_delete_and_recreate(ops in prop::collection::vec(op(), 1..30)) {
        let mut record = ShadowRecord::absent();
        let mut now = T0;
        let mut last_issued = 0u64;
        for op in ops {
            let section = match op {
                Op::Wait(secs) => { now += secs; continue; }
                Op::Delete => {
                    match record.delete(now) {
                        Some((tombstone, deleted)) => {
                            prop_assert_eq!(deleted.version, last_issued);
                            record = tombstone;
                        }
                        None => prop_assert!(!record.exists()),
                    }
                    continue;
                }
                Op::Desired(p) => json!({"desired": p}),
                Op::Reported(p) => json!({"reported": p}),
            };
            let forgotten = record.current_version(now) == 0;
            let request = json!({"state": section}).to_string();
            let updated = record
                .apply_update(request.as_bytes(), &big_limits(), now)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            if forgotten {
                prop_assert_eq!(updated.record.version, 1);
            } else {
                prop_assert_eq!(updated.record.version, last_issued + 1);
            }
            prop_assert_eq!(updated.response.version, updated.record.version);
            last_issued = updated.record.version;
            record = updated.record;
        }
    }

    #[test]
    fn a_section_is_never_stored_empty_or_with_nulls(patches in prop::collection::vec(patch(), 1..5)) {
        let mut record = ShadowRecord::absent();
        for p in patches {
            let request = json!({"state": {"desired": p}}).to_string();
            record = record
                .apply_update(request.as_bytes(), &big_limits(), T0)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .record;
            let desired = Value::Object(record.desired.clone());
            prop_assert!(!has_null(&desired));
            let doc = record.document(T0);
            prop_assert_eq!(doc.state.desired.is_some(), !record.desired.is_empty());
            if let Some(Value::Object(map)) = &doc.state.desired {
                prop_assert!(!map.is_empty());
            }
        }
    }
}

#[test]
fn generators_produce_nested_removals() {
    // Guards the strategies above: they must be able to produce what the properties are
    // about (nested nulls, arrays), or the properties would pass vacuously.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut nested_null = false;
    let mut array = false;
    for _ in 0..500 {
        let value = patch().new_tree(&mut runner).map(|t| t.current());
        let Ok(value) = value else { continue };
        let mut found = Vec::new();
        leaves(&value, &mut Vec::new(), &mut found);
        nested_null |= found.iter().any(|(p, v)| p.len() > 1 && v.is_null());
        array |= found.iter().any(|(_, v)| v.is_array());
    }
    assert!(nested_null && array);
}
