//! Property tests of shadow planning against an independent model of AWS's merge:
//! objects merge key by key, `null` removes, arrays and scalars replace.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use super::json::present_equal;
use super::paths::{is_ancestor, leaf_paths, leaves, lookup};
use super::shadow::{desired_sha256, plan_shadow, Ownership, ShadowPlan};
use crate::api::{ConflictPolicy, ManagementPolicy, ShadowDeletionPolicy, ThingShadowSpec};
use crate::dataplane::{ShadowDocument, ShadowMetadata, ShadowState};

/// Applies an update request (`{"state":{"desired": D}}`) to a desired section.
pub(crate) fn apply_update(desired: &Value, update: &Value) -> Value {
    let mut doc = match desired {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    match update.pointer("/state/desired") {
        Some(Value::Object(patch)) => merge(&mut doc, patch),
        Some(Value::Null) => doc.clear(),
        _ => {}
    }
    Value::Object(doc)
}

fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(child) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(inner) = slot {
                    merge(inner, child);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Metadata for `desired`: `{"timestamp": N}` per leaf, N drawn from `stamps` in turn.
fn metadata_for(desired: &Value, stamps: &[i64], next: &mut usize) -> Value {
    match desired {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), metadata_for(v, stamps, next)))
                .collect(),
        ),
        _ => {
            let t = stamps[*next % stamps.len()];
            *next += 1;
            json!({"timestamp": t})
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    select(vec!["a", "b", "c", "x~y", "p/q", ""]).prop_map(String::from)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-2i64..3).prop_map(Value::from),
        // Integral floats: the cloud may hold 1.0 where the spec says 1.
        (-2i64..3).prop_map(|n| json!(n as f64)),
        any::<bool>().prop_map(Value::from),
        select(vec!["on", "off"]).prop_map(Value::from),
        prop::collection::vec((-1i64..2).prop_map(Value::from), 0..3).prop_map(Value::Array),
    ]
}

fn object_of(leaf: BoxedStrategy<Value>) -> impl Strategy<Value = Map<String, Value>> {
    let tree = leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::btree_map(key(), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    });
    prop::collection::btree_map(key(), tree, 0..5).prop_map(|m| m.into_iter().collect())
}

/// A cloud desired section (AWS never stores `null`).
fn cloud_object() -> impl Strategy<Value = Map<String, Value>> {
    object_of(scalar().boxed())
}

/// A spec desired section; `null` leaves mean "absent".
fn spec_object() -> impl Strategy<Value = Map<String, Value>> {
    object_of(prop_oneof![9 => scalar(), 1 => Just(Value::Null)].boxed())
}

fn spec_of(desired: &Map<String, Value>, policy: ConflictPolicy) -> ThingShadowSpec {
    ThingShadowSpec {
        thing_name: "t".into(),
        shadow_name: None,
        desired: Some(Value::Object(desired.clone())),
        management_policy: ManagementPolicy::Manage,
        deletion_policy: ShadowDeletionPolicy::ClearDesired,
        conflict_policy: policy,
        refresh_interval: "5m".into(),
    }
}

fn document(desired: &Value, metadata: Option<Value>) -> ShadowDocument {
    ShadowDocument {
        state: ShadowState {
            desired: Some(desired.clone()),
            reported: None,
            delta: None,
        },
        metadata: ShadowMetadata {
            desired: metadata,
            reported: None,
        },
        version: 1,
        timestamp: 0,
        client_token: None,
    }
}

#[derive(Debug, Clone)]
struct Case {
    cloud: Map<String, Value>,
    spec: Map<String, Value>,
    ownership: Ownership,
    stamps: Vec<i64>,
    policy: ConflictPolicy,
    force: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        cloud_object(),
        spec_object(),
        spec_object(),
        prop::collection::vec(any::<bool>(), 16),
        0usize..3,
        prop::option::of(0i64..200),
        prop::collection::vec(0i64..200, 1..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(cloud, spec, previous, mask, hash, last_write, stamps, preserve, force)| {
                // Previously owned: an earlier spec's leaves, plus some of the cloud's
                // and the current spec's leaves.
                let mut managed = leaf_paths(&previous);
                let candidates = leaf_paths(&cloud).into_iter().chain(leaf_paths(&spec));
                managed.extend(
                    candidates
                        .zip(mask.iter().cycle())
                        .filter(|(_, keep)| **keep)
                        .map(|(p, _)| p),
                );
                let applied = match hash {
                    0 => None,
                    1 => Some(desired_sha256(&spec)),
                    _ => Some(desired_sha256(&previous)),
                };
                Case {
                    cloud,
                    spec,
                    ownership: Ownership {
                        managed_paths: managed,
                        applied_desired_sha256: applied,
                        last_write_timestamp: last_write,
                    },
                    stamps,
                    policy: if preserve {
                        ConflictPolicy::Preserve
                    } else {
                        ConflictPolicy::Overwrite
                    },
                    force,
                }
            },
        )
}

/// What must hold once the cloud (`after`) reflects the plan for `case`.
fn check_converged(case: &Case, before: &Value, after: &Value) -> Result<(), TestCaseError> {
    let spec_leaves = leaves(&case.spec);
    let spec_paths: Vec<&str> = spec_leaves.iter().map(|(p, _)| p.as_str()).collect();
    for (path, want) in &spec_leaves {
        prop_assert!(
            present_equal(lookup(after, path), Some(want)),
            "spec leaf {path} is {:?}, want {want}",
            lookup(after, path)
        );
    }
    for owned in &case.ownership.managed_paths {
        let in_spec = spec_paths.contains(&owned.as_str());
        let above_spec = spec_paths.iter().any(|s| is_ancestor(owned, s));
        if !in_spec && !above_spec {
            prop_assert!(
                present_equal(lookup(after, owned), None),
                "removed owned path {owned} still holds {:?}",
                lookup(after, owned)
            );
        }
    }
    let Value::Object(before_map) = before else {
        unreachable!("cloud sections are objects")
    };
    for path in leaf_paths(before_map) {
        let claimed = spec_paths
            .iter()
            .copied()
            .chain(case.ownership.managed_paths.iter().map(String::as_str))
            .any(|s| s == path || is_ancestor(s, &path));
        // The spec setting a leaf below a foreign scalar replaces that scalar.
        let under_spec = spec_paths.iter().any(|s| is_ancestor(&path, s));
        if !claimed && !under_spec {
            prop_assert_eq!(
                lookup(after, &path),
                lookup(before, &path),
                "foreign path {} moved",
                path
            );
        }
    }
    Ok(())
}

/// The main property: the plan converges, touches only what is ours, and is final.
fn check_plan(case: &Case) -> Result<(), TestCaseError> {
    let cloud = Value::Object(case.cloud.clone());
    let mut next = 0;
    let meta = metadata_for(&cloud, &case.stamps, &mut next);
    let observed = document(&cloud, Some(meta));
    let spec = spec_of(&case.spec, case.policy);
    let plan = plan_shadow(&spec, Some(&observed), &case.ownership, case.force);

    let after = match &plan {
        ShadowPlan::InSync => cloud.clone(),
        ShadowPlan::Preserve { out_of_band } => {
            prop_assert_eq!(case.policy, ConflictPolicy::Preserve);
            prop_assert!(!case.force);
            prop_assert!(!out_of_band.is_empty());
            // Overwrite sees the same edits and writes them back.
            let overwrite = spec_of(&case.spec, ConflictPolicy::Overwrite);
            match plan_shadow(&overwrite, Some(&observed), &case.ownership, false) {
                ShadowPlan::Write { out_of_band: o, .. } => prop_assert_eq!(&o, out_of_band),
                other => prop_assert!(false, "overwrite planned {:?}", other),
            }
            return Ok(());
        }
        ShadowPlan::Write {
            update,
            changes,
            out_of_band,
        } => {
            let keys = |v: &Value| -> Vec<String> {
                v.as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default()
            };
            prop_assert_eq!(keys(update), vec!["state".to_string()]);
            prop_assert_eq!(keys(&update["state"]), vec!["desired".to_string()]);
            let written = update["state"]["desired"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let written_paths = leaf_paths(&written);
            prop_assert!(!written_paths.is_empty());
            let spec_paths = leaf_paths(&case.spec);
            for p in &written_paths {
                prop_assert!(
                    spec_paths.contains(p) || case.ownership.managed_paths.contains(p),
                    "wrote {} which is neither in the spec nor owned",
                    p
                );
            }
            let change_paths: Vec<String> = changes.iter().map(|c| c.path.clone()).collect();
            prop_assert_eq!(&change_paths, &written_paths);
            for o in out_of_band {
                prop_assert!(changes.contains(o));
            }
            apply_update(&cloud, update)
        }
    };
    check_converged(case, &cloud, &after)?;

    // Planning again against the result finds nothing to do, whether or not the
    // caller recorded the new ownership, and whatever the policy.
    let recorded = Ownership {
        managed_paths: leaf_paths(&case.spec),
        applied_desired_sha256: Some(desired_sha256(&case.spec)),
        last_write_timestamp: Some(500),
    };
    let again = document(&after, None);
    for policy in [ConflictPolicy::Overwrite, ConflictPolicy::Preserve] {
        let spec = spec_of(&case.spec, policy);
        for ownership in [&recorded, &case.ownership] {
            prop_assert_eq!(
                plan_shadow(&spec, Some(&again), ownership, false),
                ShadowPlan::InSync
            );
        }
    }
    Ok(())
}

/// With the spec confirmed in the cloud, every difference is someone else's edit.
fn check_confirmed(
    cloud: Map<String, Value>,
    spec: Map<String, Value>,
) -> Result<(), TestCaseError> {
    let ownership = Ownership {
        managed_paths: leaf_paths(&spec),
        applied_desired_sha256: Some(desired_sha256(&spec)),
        last_write_timestamp: None,
    };
    let observed = document(&Value::Object(cloud), None);
    let overwrite = spec_of(&spec, ConflictPolicy::Overwrite);
    match plan_shadow(&overwrite, Some(&observed), &ownership, false) {
        ShadowPlan::InSync => {}
        ShadowPlan::Write {
            changes,
            out_of_band,
            ..
        } => prop_assert_eq!(changes, out_of_band),
        other => prop_assert!(false, "overwrite planned {:?}", other),
    }
    Ok(())
}

/// With no record of earlier writes, nothing can be told apart as an out-of-band edit.
fn check_no_history(
    cloud: Map<String, Value>,
    spec: Map<String, Value>,
) -> Result<(), TestCaseError> {
    let observed = document(&Value::Object(cloud), None);
    let preserve = spec_of(&spec, ConflictPolicy::Preserve);
    match plan_shadow(&preserve, Some(&observed), &Ownership::default(), false) {
        ShadowPlan::InSync => {}
        ShadowPlan::Write { out_of_band, .. } => prop_assert!(out_of_band.is_empty()),
        other => prop_assert!(false, "planned {:?}", other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn planned_writes_converge_and_touch_only_owned_keys(case in case()) {
        check_plan(&case)?;
    }

    #[test]
    fn a_confirmed_spec_reports_every_difference_as_out_of_band(
        cloud in cloud_object(),
        spec in spec_object(),
    ) {
        check_confirmed(cloud, spec)?;
    }

    #[test]
    fn without_ownership_history_nothing_is_out_of_band(
        cloud in cloud_object(),
        spec in spec_object(),
    ) {
        check_no_history(cloud, spec)?;
    }
}

#[test]
fn the_merge_model_follows_aws_semantics() {
    let cloud = json!({"a": {"b": 1, "c": [1, 2]}, "s": "x", "keep": true});
    let update =
        json!({"state": {"desired": {"a": {"b": null, "c": [3]}, "s": {"t": 1}, "n": {"m": 2}}}});
    assert_eq!(
        apply_update(&cloud, &update),
        json!({"a": {"c": [3]}, "s": {"t": 1}, "keep": true, "n": {"m": 2}})
    );
    assert_eq!(
        apply_update(&cloud, &json!({"state": {"desired": null}})),
        json!({})
    );
}
