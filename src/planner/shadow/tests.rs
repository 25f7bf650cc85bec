use serde_json::{json, Map, Value};

use super::*;
use crate::api::{ConflictPolicy, LastWrite, ManagementPolicy, ShadowDeletionPolicy};
use crate::dataplane::{ShadowMetadata, ShadowState};
use crate::planner::shadow_props::apply_update;

fn spec(desired: Value) -> ThingShadowSpec {
    ThingShadowSpec {
        thing_name: "kitchen-lamp".into(),
        shadow_name: None,
        desired: Some(desired),
        management_policy: ManagementPolicy::Manage,
        deletion_policy: ShadowDeletionPolicy::ClearDesired,
        conflict_policy: ConflictPolicy::Overwrite,
        refresh_interval: "5m".into(),
    }
}

fn preserve(desired: Value) -> ThingShadowSpec {
    ThingShadowSpec {
        conflict_policy: ConflictPolicy::Preserve,
        ..spec(desired)
    }
}

fn doc(desired: Value) -> ShadowDocument {
    ShadowDocument {
        state: ShadowState {
            desired: Some(desired),
            reported: None,
            delta: None,
        },
        version: 7,
        timestamp: 1_700_000_000,
        ..Default::default()
    }
}

fn doc_with_meta(desired: Value, meta: Value) -> ShadowDocument {
    let mut d = doc(desired);
    d.metadata.desired = Some(meta);
    d
}

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn owning(paths: &[&str]) -> Ownership {
    Ownership {
        managed_paths: paths.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// Ownership as recorded right after `desired` was written and confirmed at `ts`.
fn confirmed(desired: &Value, ts: i64) -> Ownership {
    let m = obj(desired);
    Ownership {
        managed_paths: crate::planner::paths::leaf_paths(&m),
        applied_desired_sha256: Some(desired_sha256(&m)),
        last_write_timestamp: Some(ts),
    }
}

fn change(path: &str, old: Option<Value>, new: Option<Value>) -> PathChange {
    PathChange {
        path: path.into(),
        old,
        new,
    }
}

/// The `desired` object a Write plan sends.
fn written(plan: &ShadowPlan) -> Value {
    match plan {
        ShadowPlan::Write { update, .. } => update["state"]["desired"].clone(),
        other => panic!("expected a write, got {other:?}"),
    }
}

fn out_of_band(plan: &ShadowPlan) -> Vec<PathChange> {
    match plan {
        ShadowPlan::Write { out_of_band, .. } => out_of_band.clone(),
        ShadowPlan::Preserve { out_of_band } => out_of_band.clone(),
        ShadowPlan::InSync => Vec::new(),
    }
}

#[test]
fn new_shadow_writes_every_leaf_without_version() {
    let desired = json!({"power": "on", "color": {"r": 255, "g": 180}});
    let plan = plan_shadow(&spec(desired.clone()), None, &Ownership::default(), false);
    let ShadowPlan::Write {
        update,
        changes,
        out_of_band,
    } = plan
    else {
        panic!("expected a write");
    };
    assert_eq!(update, json!({"state": {"desired": desired}}));
    assert!(update.get("version").is_none());
    assert_eq!(
        changes,
        vec![
            change("/color/g", None, Some(json!(180))),
            change("/color/r", None, Some(json!(255))),
            change("/power", None, Some(json!("on"))),
        ]
    );
    assert!(out_of_band.is_empty());
}

#[test]
fn shadow_without_desired_section_is_like_a_new_one() {
    let mut observed = doc(json!({}));
    observed.state.desired = None;
    observed.state.reported = Some(json!({"power": "off"}));
    let plan = plan_shadow(
        &spec(json!({"power": "on"})),
        Some(&observed),
        &Ownership::default(),
        false,
    );
    assert_eq!(written(&plan), json!({"power": "on"}));
}

#[test]
fn in_sync_makes_no_write_even_with_foreign_keys_and_reported_state() {
    let desired = json!({"power": "on", "color": {"r": 255, "g": 180}, "modes": ["a", "b"]});
    let mut observed = doc(json!({
        "modes": ["a", "b"], "color": {"g": 180.0, "r": 255, "b": 7}, "power": "on", "app": {"x": 1}
    }));
    observed.state.reported = Some(json!({"power": "off"}));
    let ownership = confirmed(&desired, 100);
    assert_eq!(
        plan_shadow(&spec(desired.clone()), Some(&observed), &ownership, false),
        ShadowPlan::InSync
    );
    // A restart with lost ownership also finds nothing to do.
    assert_eq!(
        plan_shadow(&spec(desired), Some(&observed), &Ownership::default(), true),
        ShadowPlan::InSync
    );
}

#[test]
fn a_changed_leaf_is_the_only_key_written() {
    let old = json!({"power": "on", "color": {"r": 255, "g": 180}});
    let new = json!({"power": "on", "color": {"r": 10, "g": 180}});
    let observed = doc(json!({"power": "on", "color": {"r": 255, "g": 180}, "app": 1}));
    let plan = plan_shadow(&spec(new), Some(&observed), &confirmed(&old, 100), false);
    assert_eq!(written(&plan), json!({"color": {"r": 10}}));
    assert!(out_of_band(&plan).is_empty());
}

#[test]
fn a_key_removed_from_the_spec_is_nulled_once() {
    let old = json!({"power": "on", "color": {"r": 255, "g": 180}});
    let new = json!({"power": "on", "color": {"r": 255}});
    let observed = doc(old.clone());
    let plan = plan_shadow(
        &spec(new.clone()),
        Some(&observed),
        &confirmed(&old, 100),
        false,
    );
    let ShadowPlan::Write {
        update, changes, ..
    } = &plan
    else {
        panic!("expected a write");
    };
    assert_eq!(
        update,
        &json!({"state": {"desired": {"color": {"g": null}}}})
    );
    assert_eq!(changes, &vec![change("/color/g", Some(json!(180)), None)]);
    // Already gone from the cloud: nothing left to do.
    let after = doc(apply_update(&old, update));
    assert_eq!(
        after.state.desired,
        Some(json!({"power": "on", "color": {"r": 255}}))
    );
    assert_eq!(
        plan_shadow(&spec(new), Some(&after), &confirmed(&old, 100), false),
        ShadowPlan::InSync
    );
}

#[test]
fn empty_or_missing_spec_nulls_everything_owned_and_nothing_else() {
    let observed = doc(json!({"power": "on", "color": {"r": 1}, "app": true}));
    let ownership = owning(&["/power", "/color/r"]);
    let mut s = spec(json!({}));
    s.desired = None;
    let plan = plan_shadow(&s, Some(&observed), &ownership, false);
    assert_eq!(written(&plan), json!({"color": {"r": null}, "power": null}));
    assert_eq!(
        written(&plan_shadow(
            &spec(json!({})),
            Some(&observed),
            &ownership,
            false
        )),
        written(&plan)
    );
}

#[test]
fn keys_we_do_not_own_never_appear_in_the_write() {
    let desired = json!({"color": {"r": 1}});
    // Someone else's keys sit beside ours, even inside our object.
    let observed =
        doc(json!({"color": {"r": 2, "b": 3}, "schedule": {"on": "07:00"}, "fw": "1.2"}));
    let plan = plan_shadow(
        &spec(desired),
        Some(&observed),
        &owning(&["/color/r"]),
        false,
    );
    assert_eq!(written(&plan), json!({"color": {"r": 1}}));
}

#[test]
fn foreign_keys_under_an_unowned_path_are_not_nulled() {
    // "/color/b" is not ours: removing "/color/r" from the spec must leave it.
    let observed = doc(json!({"color": {"r": 2, "b": 3}}));
    let plan = plan_shadow(
        &spec(json!({})),
        Some(&observed),
        &owning(&["/color/r"]),
        false,
    );
    assert_eq!(written(&plan), json!({"color": {"r": null}}));
    let after = apply_update(
        observed.state.desired.as_ref().unwrap(),
        &json!({"state": {"desired": written(&plan)}}),
    );
    assert_eq!(after, json!({"color": {"b": 3}}));
}

#[test]
fn arrays_are_leaves_replaced_whole() {
    let desired = json!({"modes": [1, 2, 3], "pts": [{"x": 1}]});
    let ownership = owning(&["/modes", "/pts"]);
    let grow = doc(json!({"modes": [1, 2], "pts": [{"x": 1.0}]}));
    assert_eq!(
        written(&plan_shadow(
            &spec(desired.clone()),
            Some(&grow),
            &ownership,
            false
        )),
        json!({"modes": [1, 2, 3]})
    );
    let reordered = doc(json!({"modes": [3, 2, 1], "pts": [{"x": 1}]}));
    assert_eq!(
        written(&plan_shadow(
            &spec(desired.clone()),
            Some(&reordered),
            &ownership,
            false
        )),
        json!({"modes": [1, 2, 3]})
    );
    let same = doc(json!({"modes": [1.0, 2, 3], "pts": [{"x": 1}]}));
    assert_eq!(
        plan_shadow(&spec(desired), Some(&same), &ownership, false),
        ShadowPlan::InSync
    );
}

#[test]
fn numbers_compare_by_value() {
    let observed = doc(json!({"level": 1.0, "ratio": 0.5}));
    let plan = plan_shadow(
        &spec(json!({"level": 1, "ratio": 0.5})),
        Some(&observed),
        &owning(&["/level", "/ratio"]),
        false,
    );
    assert_eq!(plan, ShadowPlan::InSync);
    let plan = plan_shadow(
        &spec(json!({"level": 1, "ratio": 0.25})),
        Some(&observed),
        &owning(&["/level", "/ratio"]),
        false,
    );
    assert_eq!(written(&plan), json!({"ratio": 0.25}));
}

#[test]
fn nested_objects_write_only_the_differing_deep_leaves() {
    let desired = json!({"a": {"b": {"c": {"d": 1, "e": 2}}, "f": 3}});
    let observed = doc(json!({"a": {"b": {"c": {"d": 1, "e": 9, "z": 0}}, "f": 3}}));
    let plan = plan_shadow(
        &spec(desired),
        Some(&observed),
        &owning(&["/a/b/c/d", "/a/b/c/e", "/a/f"]),
        false,
    );
    assert_eq!(written(&plan), json!({"a": {"b": {"c": {"e": 2}}}}));
}

#[test]
fn scalar_becoming_an_object_replaces_it_without_nulling_the_old_path() {
    // "/color" was ours as a scalar; the spec now has an object there.
    let observed = doc(json!({"color": "red"}));
    let plan = plan_shadow(
        &spec(json!({"color": {"r": 255}})),
        Some(&observed),
        &owning(&["/color"]),
        false,
    );
    let ShadowPlan::Write {
        update, changes, ..
    } = &plan
    else {
        panic!("expected a write");
    };
    assert_eq!(update["state"]["desired"], json!({"color": {"r": 255}}));
    assert_eq!(changes, &vec![change("/color/r", None, Some(json!(255)))]);
    assert_eq!(
        apply_update(&json!({"color": "red"}), update),
        json!({"color": {"r": 255}})
    );
}

#[test]
fn object_becoming_a_scalar_replaces_it_without_nulling_the_old_leaves() {
    let observed = doc(json!({"color": {"r": 255, "g": 180}}));
    let plan = plan_shadow(
        &spec(json!({"color": "red"})),
        Some(&observed),
        &owning(&["/color/g", "/color/r"]),
        false,
    );
    let ShadowPlan::Write {
        update, changes, ..
    } = &plan
    else {
        panic!("expected a write");
    };
    assert_eq!(update["state"]["desired"], json!({"color": "red"}));
    assert_eq!(
        changes,
        &vec![change(
            "/color",
            Some(json!({"r": 255, "g": 180})),
            Some(json!("red"))
        )]
    );
}

#[test]
fn an_owned_path_under_a_foreign_scalar_is_left_alone() {
    // Someone turned our object into a scalar; our removed leaf is no longer there,
    // and nulling it would turn their scalar back into an object.
    let observed = doc(json!({"color": "blue"}));
    let plan = plan_shadow(
        &spec(json!({})),
        Some(&observed),
        &owning(&["/color/r"]),
        false,
    );
    assert_eq!(plan, ShadowPlan::InSync);
}

#[test]
fn overlapping_owned_paths_null_the_ancestor_only() {
    let observed = doc(json!({"a": {"b": 1}, "c": 2}));
    let plan = plan_shadow(
        &spec(json!({})),
        Some(&observed),
        &owning(&["/a/b", "/a", "/a", "bad~pointer", ""]),
        false,
    );
    assert_eq!(written(&plan), json!({"a": null}));
}

#[test]
fn a_null_spec_leaf_means_absent() {
    let ownership = owning(&["/gone"]);
    let present = doc(json!({"gone": 1, "x": 2}));
    let plan = plan_shadow(
        &spec(json!({"gone": null})),
        Some(&present),
        &ownership,
        false,
    );
    assert_eq!(written(&plan), json!({"gone": null}));
    let absent = doc(json!({"x": 2}));
    assert_eq!(
        plan_shadow(
            &spec(json!({"gone": null})),
            Some(&absent),
            &ownership,
            false
        ),
        ShadowPlan::InSync
    );
}

#[test]
fn out_of_band_edit_is_written_back_under_overwrite() {
    let desired = json!({"power": "on", "level": 3});
    let ownership = confirmed(&desired, 100);
    let observed = doc(json!({"power": "off", "level": 3}));
    let plan = plan_shadow(&spec(desired), Some(&observed), &ownership, false);
    assert_eq!(written(&plan), json!({"power": "on"}));
    assert_eq!(
        out_of_band(&plan),
        vec![change("/power", Some(json!("off")), Some(json!("on")))]
    );
}

#[test]
fn a_deleted_owned_key_is_out_of_band_too() {
    let desired = json!({"power": "on"});
    let observed = doc(json!({}));
    let plan = plan_shadow(
        &spec(desired.clone()),
        Some(&observed),
        &confirmed(&desired, 100),
        false,
    );
    assert_eq!(
        out_of_band(&plan),
        vec![change("/power", None, Some(json!("on")))]
    );
}

#[test]
fn out_of_band_edit_under_preserve_writes_nothing_at_all() {
    let old = json!({"power": "on", "level": 3, "gone": 1});
    let desired = json!({"power": "on", "level": 3});
    let ownership = confirmed(&desired, 100);
    let observed = doc(json!({"power": "off", "level": 3, "gone": 1}));
    let plan = plan_shadow(
        &preserve(desired.clone()),
        Some(&observed),
        &ownership,
        false,
    );
    assert_eq!(
        plan,
        ShadowPlan::Preserve {
            out_of_band: vec![change("/power", Some(json!("off")), Some(json!("on")))]
        }
    );
    // Even a pending removal waits while the conflict stands.
    let mut stale = confirmed(&desired, 100);
    stale.managed_paths = crate::planner::paths::leaf_paths(&obj(&old));
    assert!(matches!(
        plan_shadow(&preserve(desired), Some(&observed), &stale, false),
        ShadowPlan::Preserve { .. }
    ));
}

#[test]
fn forced_sync_under_preserve_writes_like_overwrite() {
    let desired = json!({"power": "on"});
    let ownership = confirmed(&desired, 100);
    let observed = doc(json!({"power": "off"}));
    let forced = plan_shadow(
        &preserve(desired.clone()),
        Some(&observed),
        &ownership,
        true,
    );
    let overwrite = plan_shadow(&spec(desired), Some(&observed), &ownership, false);
    assert_eq!(forced, overwrite);
    assert_eq!(written(&forced), json!({"power": "on"}));
    assert_eq!(out_of_band(&forced).len(), 1);
}

#[test]
fn a_spec_change_is_not_an_out_of_band_edit() {
    let old = json!({"power": "on"});
    let new = json!({"power": "off"});
    let observed = doc_with_meta(old.clone(), json!({"power": {"timestamp": 100}}));
    let plan = plan_shadow(
        &preserve(new),
        Some(&observed),
        &confirmed(&old, 100),
        false,
    );
    assert_eq!(written(&plan), json!({"power": "off"}));
    assert!(out_of_band(&plan).is_empty());
}

#[test]
fn metadata_newer_than_our_last_write_marks_an_edit_even_after_a_spec_change() {
    let old = json!({"power": "on", "level": 1});
    let new = json!({"power": "on", "level": 2});
    // Someone set power to "off" at 150, after our write at 100.
    let observed = doc_with_meta(
        json!({"power": "off", "level": 1}),
        json!({"power": {"timestamp": 150}, "level": {"timestamp": 100}}),
    );
    let plan = plan_shadow(
        &preserve(new.clone()),
        Some(&observed),
        &confirmed(&old, 100),
        false,
    );
    assert_eq!(
        plan,
        ShadowPlan::Preserve {
            out_of_band: vec![change("/power", Some(json!("off")), Some(json!("on")))]
        }
    );
    let plan = plan_shadow(&spec(new), Some(&observed), &confirmed(&old, 100), false);
    assert_eq!(written(&plan), json!({"level": 2, "power": "on"}));
    assert_eq!(out_of_band(&plan).len(), 1);
}

#[test]
fn newer_metadata_with_our_value_is_not_a_conflict() {
    // Someone rewrote the same value: nothing to fight over.
    let old = json!({"power": "on", "level": 1});
    let new = json!({"power": "on", "level": 2});
    let observed = doc_with_meta(
        json!({"power": "on", "level": 1}),
        json!({"power": {"timestamp": 150}, "level": {"timestamp": 100}}),
    );
    let plan = plan_shadow(
        &preserve(new),
        Some(&observed),
        &confirmed(&old, 100),
        false,
    );
    assert_eq!(written(&plan), json!({"level": 2}));
    assert!(out_of_band(&plan).is_empty());
}

#[test]
fn newer_metadata_of_a_foreign_scalar_above_our_leaf_is_seen() {
    let old = json!({"color": {"r": 1}});
    let new = json!({"color": {"r": 2}});
    let observed = doc_with_meta(
        json!({"color": "blue"}),
        json!({"color": {"timestamp": 200}}),
    );
    let plan = plan_shadow(
        &preserve(new),
        Some(&observed),
        &confirmed(&old, 100),
        false,
    );
    assert_eq!(
        plan,
        ShadowPlan::Preserve {
            out_of_band: vec![change("/color/r", None, Some(json!(2)))]
        }
    );
}

#[test]
fn a_document_key_named_timestamp_is_not_mistaken_for_metadata() {
    let old = json!({"t": {"timestamp": 1}});
    let new = json!({"t": {"timestamp": 2}, "x": 1});
    let observed = doc_with_meta(
        json!({"t": {"timestamp": 5}}),
        json!({"t": {"timestamp": {"timestamp": 90}}}),
    );
    // Our write was at 100: the edit at 90 is older, so this is a plain spec change.
    let plan = plan_shadow(
        &preserve(new.clone()),
        Some(&observed),
        &confirmed(&old, 100),
        false,
    );
    assert!(out_of_band(&plan).is_empty());
    let observed = doc_with_meta(
        json!({"t": {"timestamp": 5}}),
        json!({"t": {"timestamp": {"timestamp": 150}}}),
    );
    let plan = plan_shadow(
        &preserve(new),
        Some(&observed),
        &confirmed(&old, 100),
        false,
    );
    assert!(matches!(plan, ShadowPlan::Preserve { .. }));
}

#[test]
fn without_a_recorded_write_timestamps_prove_nothing() {
    let observed = doc_with_meta(
        json!({"power": "off"}),
        json!({"power": {"timestamp": 999}}),
    );
    let plan = plan_shadow(
        &preserve(json!({"power": "on"})),
        Some(&observed),
        &owning(&["/power"]),
        false,
    );
    assert_eq!(written(&plan), json!({"power": "on"}));
}

#[test]
fn desired_hash_ignores_key_order_but_not_values() {
    let a = obj(&json!({"a": 1, "b": {"x": [1, 2], "y": "s"}}));
    let b = obj(&json!({"b": {"y": "s", "x": [1, 2]}, "a": 1}));
    let c = obj(&json!({"b": {"y": "s", "x": [2, 1]}, "a": 1}));
    assert_eq!(desired_sha256(&a), desired_sha256(&b));
    assert_ne!(desired_sha256(&a), desired_sha256(&c));
    assert_eq!(desired_sha256(&a).len(), 64);
    // The same spec with its keys reordered is still "confirmed".
    let observed = doc(json!({"a": 1, "b": {"x": [1, 2], "y": "other"}}));
    let ownership = confirmed(&Value::Object(a), 100);
    let plan = plan_shadow(
        &preserve(Value::Object(b)),
        Some(&observed),
        &ownership,
        false,
    );
    assert!(matches!(plan, ShadowPlan::Preserve { .. }));
}

#[test]
fn ownership_comes_from_status() {
    let status = ThingShadowStatus {
        managed_paths: vec!["/a".into(), "/b/c".into()],
        applied_desired_sha256: Some("abc".into()),
        last_write: Some(LastWrite {
            version: 4,
            timestamp: 1234,
        }),
        ..Default::default()
    };
    assert_eq!(
        Ownership::from_status(&status),
        Ownership {
            managed_paths: vec!["/a".into(), "/b/c".into()],
            applied_desired_sha256: Some("abc".into()),
            last_write_timestamp: Some(1234),
        }
    );
    assert_eq!(
        Ownership::from_status(&ThingShadowStatus::default()),
        Ownership::default()
    );
}

#[test]
fn conflict_with_only_reported_or_foreign_changes_is_benign() {
    let mut before = doc(json!({"power": "on", "app": 1}));
    before.state.reported = Some(json!({"power": "off"}));
    let mut after = doc(json!({"power": "on", "app": 2, "new": true}));
    after.state.reported = Some(json!({"power": "on"}));
    after.version = 9;
    let managed = vec!["/power".to_string()];
    assert_eq!(
        classify_conflict(Some(&before), Some(&after), &managed, &managed),
        ConflictClass::Benign
    );
    // Number formatting is not a change.
    let after = doc(json!({"power": "on", "level": 1.0}));
    let before = doc(json!({"power": "on", "level": 1}));
    let managed = vec!["/power".to_string(), "/level".to_string()];
    assert_eq!(
        classify_conflict(Some(&before), Some(&after), &managed, &[]),
        ConflictClass::Benign
    );
}

#[test]
fn conflict_touching_an_owned_path_is_out_of_band() {
    let before = doc(json!({"power": "on", "color": {"r": 1}}));
    let after = doc(json!({"power": "off", "color": "blue"}));
    let managed = vec!["/power".to_string(), "/color/r".to_string()];
    assert_eq!(
        classify_conflict(Some(&before), Some(&after), &managed, &[]),
        ConflictClass::OutOfBand(vec![
            change("/color/r", Some(json!(1)), None),
            change("/power", Some(json!("on")), Some(json!("off"))),
        ])
    );
}

#[test]
fn conflict_on_a_path_we_were_about_to_write_is_out_of_band() {
    let before = doc(json!({}));
    let after = doc(json!({"mode": "eco"}));
    let spec_paths = vec!["/mode".to_string()];
    assert_eq!(
        classify_conflict(Some(&before), Some(&after), &[], &spec_paths),
        ConflictClass::OutOfBand(vec![change("/mode", None, Some(json!("eco")))])
    );
    // A shadow created meanwhile by someone else, holding our key.
    assert_eq!(
        classify_conflict(None, Some(&after), &[], &spec_paths),
        ConflictClass::OutOfBand(vec![change("/mode", None, Some(json!("eco")))])
    );
    // ...or holding only keys we do not touch.
    assert_eq!(
        classify_conflict(None, Some(&doc(json!({"x": 1}))), &[], &spec_paths),
        ConflictClass::Benign
    );
}

#[test]
fn clear_nulls_owned_paths_still_present() {
    let observed = doc(json!({"power": "on", "color": {"r": 1, "b": 2}, "app": 3}));
    let managed: Vec<String> = ["/power", "/color/r", "/color/g"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let update = plan_clear(&managed, Some(&observed)).expect("something to clear");
    assert_eq!(
        update,
        json!({"state": {"desired": {"color": {"r": null}, "power": null}}})
    );
    assert_eq!(
        apply_update(observed.state.desired.as_ref().unwrap(), &update),
        json!({"color": {"b": 2}, "app": 3})
    );
}

#[test]
fn clear_with_nothing_left_makes_no_write() {
    let managed = vec!["/power".to_string()];
    assert_eq!(plan_clear(&managed, Some(&doc(json!({"app": 1})))), None);
    assert_eq!(plan_clear(&managed, None), None);
    assert_eq!(plan_clear(&[], Some(&doc(json!({"power": 1})))), None);
}

#[test]
fn mirror_copies_sections_and_the_newest_reported_time() {
    let d = ShadowDocument {
        state: ShadowState {
            desired: Some(json!({"power": "on"})),
            reported: Some(json!({"power": "off", "modes": [1, 2], "n": {"v": 1}})),
            delta: Some(json!({"power": "on"})),
        },
        metadata: ShadowMetadata {
            desired: Some(json!({"power": {"timestamp": 1_700_000_900}})),
            reported: Some(json!({
                "power": {"timestamp": 1_700_000_000},
                "modes": [{"timestamp": 1_700_000_100}, {"timestamp": 1_700_000_200}],
                "n": {"v": {"timestamp": 1_700_000_050}}
            })),
        },
        version: 42,
        timestamp: 1_700_001_000,
        client_token: None,
    };
    let m = mirror(&d);
    assert_eq!(m.version, 42);
    assert_eq!(m.desired, d.state.desired);
    assert_eq!(m.reported, d.state.reported);
    assert_eq!(m.delta, d.state.delta);
    assert_eq!(
        m.last_reported_time.as_deref(),
        Some("2023-11-14T22:16:40Z")
    );
}

#[test]
fn mirror_without_reported_state_has_no_reported_time() {
    let mut d = doc(json!({"a": 1}));
    d.state.reported = Some(Value::Null);
    let m = mirror(&d);
    assert_eq!(m.reported, None);
    assert_eq!(m.last_reported_time, None);
    assert_eq!(m.version, 7);
}

#[test]
fn owned_delta_paths_lists_what_the_device_has_not_applied() {
    let delta = json!({"power": "on", "color": {"r": 1}, "app": 5});
    let managed: Vec<String> = ["/power", "/color/g", "/color/r", "/power"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        owned_delta_paths(Some(&delta), &managed),
        vec!["/color/r", "/power"]
    );
    assert!(owned_delta_paths(None, &managed).is_empty());
    assert!(owned_delta_paths(Some(&json!({"app": 1})), &managed).is_empty());
}

#[test]
fn describe_changes_shows_both_values() {
    let text = describe_changes(&[
        change("/power", Some(json!("off")), Some(json!("on"))),
        change("/gone", None, Some(json!(1))),
    ]);
    assert_eq!(
        text,
        r#"/power: cloud "off", spec "on"; /gone: cloud absent, spec 1"#
    );
}

#[test]
fn a_new_spec_leaf_over_someone_elses_key_is_a_spec_change() {
    let old = json!({"power": "on"});
    let new = json!({"power": "on", "mode": "eco"});
    // "mode" was written by an app after our last write; the spec now claims it.
    let observed = doc_with_meta(
        json!({"power": "on", "mode": "boost"}),
        json!({"power": {"timestamp": 100}, "mode": {"timestamp": 150}}),
    );
    let plan = plan_shadow(
        &preserve(new),
        Some(&observed),
        &confirmed(&old, 100),
        false,
    );
    assert_eq!(written(&plan), json!({"mode": "eco"}));
    assert!(out_of_band(&plan).is_empty());
}

mod merged_size {
    use super::*;
    use crate::dataplane::{ShadowDocument, ShadowLimits, ShadowState};
    use serde_json::json;

    fn doc(desired: Value, reported: Value) -> ShadowDocument {
        ShadowDocument {
            state: ShadowState {
                desired: Some(desired),
                reported: Some(reported),
                delta: None,
            },
            version: 3,
            ..Default::default()
        }
    }

    fn limits(max_document_bytes: usize) -> ShadowLimits {
        ShadowLimits {
            max_document_bytes,
            ..ShadowLimits::default()
        }
    }

    #[test]
    fn a_write_that_fits_alone_can_overflow_next_to_the_reported_state() {
        let before = doc(json!({}), json!({"log": "r".repeat(60)}));
        let update = json!({"state": {"desired": {"notes": "d".repeat(60)}}});
        assert!(merged_too_large(None, &update, &limits(100)).is_none());
        let error = merged_too_large(Some(&before), &update, &limits(100)).expect("too large");
        assert_eq!(error.field, "spec.desired");
        assert!(error
            .rule
            .contains("more than the shadow document limit of 100 bytes"));
    }

    #[test]
    fn keys_the_write_removes_do_not_count() {
        // The write nulls a large key it owned and sets a small one: the result is small.
        let before = doc(json!({"old": "o".repeat(80)}), json!({}));
        let update = json!({"state": {"desired": {"old": null, "new": 1}}});
        assert!(merged_too_large(Some(&before), &update, &limits(100)).is_none());
        // Exactly at the limit is allowed, one byte more is not.
        let size =
            crate::shadow::document_size(json!({"new": 1}).as_object().unwrap(), &Map::new());
        assert!(merged_too_large(Some(&before), &update, &limits(size)).is_none());
        assert!(merged_too_large(Some(&before), &update, &limits(size - 1)).is_some());
    }
}
