use serde_json::{json, Value};

use super::*;
use crate::dataplane::{DataPlaneError, ErrorKind, ShadowLimits};

const T0: i64 = 1_700_000_000;

fn limits() -> ShadowLimits {
    ShadowLimits::default()
}

fn try_update(record: &ShadowRecord, request: Value, now: i64) -> Result<Updated, DataPlaneError> {
    record.apply_update(request.to_string().as_bytes(), &limits(), now)
}

fn update(record: &ShadowRecord, request: Value, now: i64) -> Updated {
    match try_update(record, request, now) {
        Ok(updated) => updated,
        Err(e) => panic!("update refused: {e}"),
    }
}

fn create(request: Value) -> ShadowRecord {
    update(&ShadowRecord::absent(), request, T0).record
}

fn reject(record: &ShadowRecord, raw: &[u8]) -> DataPlaneError {
    match record.apply_update(raw, &limits(), T0) {
        Ok(updated) => panic!("accepted: {:?}", updated.record),
        Err(e) => e,
    }
}

fn invalid(raw: &str) -> String {
    let e = reject(&ShadowRecord::absent(), raw.as_bytes());
    assert_eq!(e.kind, ErrorKind::InvalidRequest, "{raw}: {e}");
    e.message
}

fn obj(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

// ---- request validation ----

#[test]
fn not_json_or_not_an_object_is_invalid_json() {
    for raw in ["", "{", "not json", "[1,2]", "\"state\"", "5", "null"] {
        assert_eq!(invalid(raw), "Payload contains invalid json", "{raw}");
    }
}

#[test]
fn state_must_be_present_and_an_object() {
    assert_eq!(invalid(r#"{"version":1}"#), "Missing required node: state");
    for raw in [
        r#"{"state":null}"#,
        r#"{"state":5}"#,
        r#"{"state":[]}"#,
        r#"{"state":"x"}"#,
    ] {
        assert_eq!(invalid(raw), "State node must be an object", "{raw}");
    }
}

#[test]
fn state_accepts_only_desired_and_reported() {
    let message = invalid(r#"{"state":{"desired":{"a":1},"delta":{"a":1}}}"#);
    assert_eq!(message, "State contains an invalid node: 'delta'");
    assert_eq!(invalid(r#"{"state":{}}"#), messages::EMPTY_STATE);
}

#[test]
fn sections_must_be_objects_or_null() {
    for bad in ["5", "[]", "\"on\"", "true"] {
        assert_eq!(
            invalid(&format!(r#"{{"state":{{"desired":{bad}}}}}"#)),
            "Desired node must be an object"
        );
        assert_eq!(
            invalid(&format!(r#"{{"state":{{"reported":{bad}}}}}"#)),
            "Reported node must be an object"
        );
    }
    // null is the way to clear a section, so it is accepted even on a new shadow.
    let created = update(
        &ShadowRecord::absent(),
        json!({"state":{"desired":null}}),
        T0,
    );
    assert!(created.record.exists());
}

#[test]
fn version_must_be_a_non_negative_integer() {
    for bad in ["-1", "1.5", "\"3\"", "null", "[]", "{}"] {
        assert_eq!(
            invalid(&format!(
                r#"{{"state":{{"desired":{{"a":1}}}},"version":{bad}}}"#
            )),
            "Invalid version",
            "{bad}"
        );
    }
}

#[test]
fn client_token_is_a_string_of_at_most_64_bytes() {
    let ok = "t".repeat(64);
    let updated = update(
        &ShadowRecord::absent(),
        json!({"state":{"desired":{"a":1}},"clientToken": ok}),
        T0,
    );
    assert_eq!(updated.response.client_token.as_deref(), Some(ok.as_str()));

    let too_long = "t".repeat(65);
    let raw = json!({"state":{"desired":{"a":1}},"clientToken": too_long}).to_string();
    assert_eq!(invalid(&raw), "Invalid clientToken");
    // 22 three-byte characters: 22 chars but 66 bytes.
    let multibyte = "€".repeat(22);
    let raw = json!({"state":{"desired":{"a":1}},"clientToken": multibyte}).to_string();
    assert_eq!(invalid(&raw), "Invalid clientToken");
    assert_eq!(
        invalid(r#"{"state":{"desired":{"a":1}},"clientToken":5}"#),
        "Invalid clientToken"
    );
}

fn nested(levels: usize) -> Value {
    // `levels` nested objects: nested(1) = {"k": 1}.
    (0..levels).fold(json!(1), |inner, i| json!({ format!("k{i}"): inner }))
}

#[test]
fn depth_up_to_the_limit_is_accepted_and_beyond_is_refused() {
    assert_eq!(json_depth(&nested(6)), 6);
    let ok = update(
        &ShadowRecord::absent(),
        json!({"state":{"desired": nested(6), "reported": nested(6)}}),
        T0,
    );
    assert_eq!(ok.record.version, 1);

    let too_deep = json!({"state":{"reported": nested(7)}}).to_string();
    assert_eq!(
        invalid(&too_deep),
        "JSON contains too many levels of nesting; maximum is 6"
    );
    // Arrays are a level too.
    let with_array = json!({"state":{"desired": {"a":{"b":{"c":{"d":{"e":[[1]]}}}}}}});
    assert_eq!(json_depth(&with_array["state"]["desired"]), 7);
    assert!(invalid(&with_array.to_string()).starts_with("JSON contains too many levels"));
}

#[test]
fn depth_limit_is_configurable() {
    let tight = ShadowLimits {
        max_depth: 2,
        ..ShadowLimits::default()
    };
    let raw = json!({"state":{"desired": nested(3)}}).to_string();
    let e = ShadowRecord::absent()
        .apply_update(raw.as_bytes(), &tight, T0)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert_eq!(
        e.message,
        "JSON contains too many levels of nesting; maximum is 2"
    );
    let raw = json!({"state":{"desired": nested(2)}}).to_string();
    assert!(ShadowRecord::absent()
        .apply_update(raw.as_bytes(), &tight, T0)
        .is_ok());
}

#[test]
fn null_inside_an_array_is_refused() {
    for section in [
        json!({"a": [1, null]}),
        json!({"a": {"b": [null]}}),
        json!({"a": [[1], [null]]}),
        json!({"a": [{"x": null}]}),
    ] {
        let raw = json!({"state":{"desired": section}}).to_string();
        assert_eq!(invalid(&raw), messages::NULL_IN_ARRAY, "{raw}");
    }
    assert!(!has_null_in_array(&json!({"a": null, "b": [1, {"c": 2}]})));
}

#[test]
fn non_utf8_is_an_unsupported_encoding() {
    let e = reject(
        &ShadowRecord::absent(),
        b"{\"state\":{\"desired\":{\"a\":\"\xff\"}}}",
    );
    assert_eq!(e.kind, ErrorKind::UnsupportedDocumentEncoding);
}

#[test]
fn unknown_top_level_keys_are_ignored() {
    let updated = update(
        &ShadowRecord::absent(),
        json!({"state":{"desired":{"a":1}},"metadata":{"x":1},"timestamp":5}),
        T0,
    );
    assert_eq!(updated.record.desired, obj(json!({"a":1})));
}

// ---- versions ----

#[test]
fn a_new_shadow_starts_at_version_1_and_each_update_adds_one() {
    let v1 = create(json!({"state":{"desired":{"a":1}}}));
    assert_eq!((v1.version, v1.timestamp, v1.exists()), (1, T0, true));
    let v2 = update(&v1, json!({"state":{"reported":{"a":1}}}), T0 + 5).record;
    assert_eq!((v2.version, v2.timestamp), (2, T0 + 5));
    // An update that changes nothing still counts (AWS bumps on every accepted update).
    let v3 = update(&v2, json!({"state":{"reported":{"a":1}}}), T0 + 6).record;
    assert_eq!(v3.version, 3);
}

#[test]
fn a_matching_version_is_accepted_and_any_other_is_a_conflict() {
    let v1 = create(json!({"state":{"desired":{"a":1}}}));
    let v2 = update(&v1, json!({"state":{"desired":{"a":2}},"version":1}), T0).record;
    assert_eq!(v2.version, 2);
    for stale in [0, 1, 3, 100] {
        let e = try_update(
            &v2,
            json!({"state":{"desired":{"a":3}},"version":stale}),
            T0,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "version {stale}");
        assert_eq!(e.message, "Version conflict");
    }
}

#[test]
fn a_missing_shadow_has_version_0_for_the_version_check() {
    let created = update(
        &ShadowRecord::absent(),
        json!({"state":{"desired":{"a":1}},"version":0}),
        T0,
    );
    assert_eq!(created.record.version, 1);
    let e = try_update(
        &ShadowRecord::absent(),
        json!({"state":{"desired":{"a":1}},"version":1}),
        T0,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
}

#[test]
fn delete_returns_the_version_and_recreation_continues_from_it() {
    let mut record = create(json!({"state":{"desired":{"a":1}}}));
    for i in 0..4 {
        record = update(&record, json!({"state":{"reported":{"i":i}}}), T0).record;
    }
    assert_eq!(record.version, 5);
    let (tombstone, deleted) = record.delete(T0 + 10).expect("exists");
    assert_eq!((deleted.version, deleted.timestamp), (5, T0 + 10));
    assert!(!tombstone.exists());
    assert_eq!(tombstone.version, 5);
    assert!(
        tombstone.delete(T0 + 11).is_none(),
        "a tombstone cannot be deleted"
    );

    // The version check on a deleted shadow uses the remembered version.
    let e = try_update(
        &tombstone,
        json!({"state":{"desired":{"b":1}},"version":0}),
        T0 + 20,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    let recreated = update(
        &tombstone,
        json!({"state":{"desired":{"b":1}},"version":5}),
        T0 + 20,
    )
    .record;
    assert_eq!(recreated.version, 6);
    // The old content is gone.
    assert_eq!(recreated.desired, obj(json!({"b":1})));
    assert!(recreated.reported.is_empty());
}

#[test]
fn a_tombstone_is_forgotten_after_48_hours() {
    let record = create(json!({"state":{"desired":{"a":1}}}));
    let record = update(&record, json!({"state":{"desired":{"a":2}}}), T0).record;
    let (tombstone, _) = record.delete(T0).expect("exists");
    let just_before = T0 + TOMBSTONE_RETENTION_SECS - 1;
    assert_eq!(tombstone.current_version(just_before), 2);
    assert_eq!(
        update(
            &tombstone,
            json!({"state":{"desired":{"a":1}}}),
            just_before
        )
        .record
        .version,
        3
    );
    let after = T0 + TOMBSTONE_RETENTION_SECS;
    assert_eq!(tombstone.current_version(after), 0);
    assert_eq!(
        update(&tombstone, json!({"state":{"desired":{"a":1}}}), after)
            .record
            .version,
        1
    );
}

#[test]
fn nulling_all_state_keeps_the_shadow() {
    let record = create(json!({"state":{"desired":{"a":1},"reported":{"b":2}}}));
    let record = update(
        &record,
        json!({"state":{"desired":{"a":null},"reported":null}}),
        T0,
    )
    .record;
    assert!(record.exists());
    assert_eq!(record.version, 2);
    let doc = record.document(T0);
    assert_eq!(doc.state.desired, None);
    assert_eq!(doc.state.reported, None);
    assert_eq!(doc.state.delta, None);
    assert_eq!(doc.metadata.desired, None);
    assert_eq!(doc.version, 2);
}

// ---- size ----

#[test]
fn a_request_over_the_limit_is_too_large() {
    let small = ShadowLimits {
        max_document_bytes: 100,
        ..ShadowLimits::default()
    };
    let raw = json!({"state":{"desired":{"a": "x".repeat(100)}}}).to_string();
    let e = ShadowRecord::absent()
        .apply_update(raw.as_bytes(), &small, T0)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::RequestEntityTooLarge);
    assert_eq!(e.message, "The payload exceeds the maximum size allowed");
}

#[test]
fn a_small_update_that_makes_the_document_too_large_is_refused() {
    let small = ShadowLimits {
        max_document_bytes: 100,
        ..ShadowLimits::default()
    };
    let apply =
        |record: &ShadowRecord, v: Value| record.apply_update(v.to_string().as_bytes(), &small, T0);
    // {"desired":{"a":"<40 x>"}} is 60 bytes.
    let record = apply(
        &ShadowRecord::absent(),
        json!({"state":{"desired":{"a":"x".repeat(40)}}}),
    )
    .expect("fits")
    .record;
    assert_eq!(document_size(&record.desired, &record.reported), 60);
    // ,"reported":{"b":"<n y>"} adds 20 + n bytes: n = 21 is one byte over.
    let e = apply(&record, json!({"state":{"reported":{"b":"y".repeat(21)}}})).unwrap_err();
    assert_eq!(e.kind, ErrorKind::RequestEntityTooLarge);
    assert_eq!(e.message, "The payload exceeds the maximum size allowed");
    let at_limit = apply(&record, json!({"state":{"reported":{"b":"y".repeat(20)}}}))
        .expect("exactly at the limit")
        .record;
    assert_eq!(document_size(&at_limit.desired, &at_limit.reported), 100);
    // The limit is checked on the result: shrinking one value makes room for another.
    let grown = json!({"state":{"reported":{"c":"w".repeat(10)}}});
    assert!(apply(&at_limit, grown).is_err());
    let shrunk_and_grown = json!({"state":{"desired":{"a":"z"},"reported":{"c":"w".repeat(10)}}});
    let ok = apply(&at_limit, shrunk_and_grown).expect("fits after shrinking");
    assert_eq!(ok.record.version, 3);
}

// ---- merge ----

#[test]
fn nested_objects_merge_key_by_key() {
    let record = create(json!({"state":{"desired":{"color":{"r":255,"g":180},"power":"on"}}}));
    let record = update(
        &record,
        json!({"state":{"desired":{"color":{"r":10,"b":3}}}}),
        T0,
    )
    .record;
    assert_eq!(
        record.desired,
        obj(json!({"color":{"r":10,"g":180,"b":3},"power":"on"}))
    );
}

#[test]
fn null_removes_a_key_and_an_emptied_object() {
    let record = create(json!({"state":{"desired":{"color":{"r":1,"g":2},"power":"on"}}}));
    let record = update(
        &record,
        json!({"state":{"desired":{"color":{"r":null}}}}),
        T0,
    )
    .record;
    assert_eq!(record.desired, obj(json!({"color":{"g":2},"power":"on"})));
    let record = update(
        &record,
        json!({"state":{"desired":{"color":{"g":null}}}}),
        T0,
    )
    .record;
    assert_eq!(record.desired, obj(json!({"power":"on"})));
    assert_eq!(
        record.desired_metadata,
        obj(json!({"power":{"timestamp":T0}}))
    );
    // Removing a key that is not there is a no-op, not an error.
    let record = update(&record, json!({"state":{"desired":{"ghost":null}}}), T0).record;
    assert_eq!(record.desired, obj(json!({"power":"on"})));
}

#[test]
fn removing_the_last_key_removes_the_section() {
    let record = create(json!({"state":{"desired":{"a":1},"reported":{"b":1}}}));
    let record = update(&record, json!({"state":{"desired":{"a":null}}}), T0).record;
    assert!(record.desired.is_empty());
    assert!(record.desired_metadata.is_empty());
    let doc = record.document(T0);
    assert_eq!(doc.state.desired, None);
    assert_eq!(doc.state.reported, Some(json!({"b":1})));
}

#[test]
fn an_explicit_empty_object_is_kept() {
    let record = create(json!({"state":{"desired":{"a":{}}}}));
    assert_eq!(record.desired, obj(json!({"a":{}})));
    // Merging {} onto an object changes nothing.
    let record = update(&record, json!({"state":{"desired":{"a":{"x":1}}}}), T0).record;
    let record = update(&record, json!({"state":{"desired":{"a":{}}}}), T0).record;
    assert_eq!(record.desired, obj(json!({"a":{"x":1}})));
}

#[test]
fn a_new_object_made_only_of_nulls_is_not_created() {
    let record = create(json!({"state":{"desired":{"a":1}}}));
    let record = update(
        &record,
        json!({"state":{"desired":{"b":{"c":null,"d":{"e":null}}}}}),
        T0,
    )
    .record;
    assert_eq!(record.desired, obj(json!({"a":1})));
}

#[test]
fn desired_null_removes_the_whole_section() {
    let record = create(json!({"state":{"desired":{"a":1,"b":{"c":2}},"reported":{"a":1}}}));
    let updated = update(&record, json!({"state":{"desired":null}}), T0 + 1);
    assert!(updated.record.desired.is_empty());
    assert!(updated.record.desired_metadata.is_empty());
    assert_eq!(updated.record.reported, obj(json!({"a":1})));
    assert_eq!(updated.response.state.desired, Some(Value::Null));
    assert_eq!(
        updated.response.metadata.desired,
        Some(json!({"timestamp": T0 + 1}))
    );
    assert_eq!(updated.response.state.reported, None);
}

#[test]
fn arrays_are_replaced_whole() {
    let record = create(json!({"state":{"desired":{"list":[1,2,3],"o":{"l":["a","b"]}}}}));
    let record = update(
        &record,
        json!({"state":{"desired":{"list":[9],"o":{"l":[]}}}}),
        T0 + 1,
    )
    .record;
    assert_eq!(record.desired, obj(json!({"list":[9],"o":{"l":[]}})));
    assert_eq!(
        record.desired_metadata,
        obj(json!({"list":[{"timestamp":T0 + 1}],"o":{"l":[]}}))
    );
}

#[test]
fn an_object_replaces_a_scalar_and_a_scalar_replaces_an_object() {
    let record = create(json!({"state":{"desired":{"a":5,"b":{"x":1,"y":2},"c":[1]}}}));
    let record = update(
        &record,
        json!({"state":{"desired":{"a":{"timestamp":1},"b":"flat","c":{"k":true}}}}),
        T0 + 1,
    )
    .record;
    assert_eq!(
        record.desired,
        obj(json!({"a":{"timestamp":1},"b":"flat","c":{"k":true}}))
    );
    let t = T0 + 1;
    assert_eq!(
        record.desired_metadata,
        obj(json!({
            "a":{"timestamp":{"timestamp":t}},
            "b":{"timestamp":t},
            "c":{"k":{"timestamp":t}}
        }))
    );
    // An object made only of removals, merged onto a scalar, leaves nothing.
    let record = update(&record, json!({"state":{"desired":{"b":{"q":null}}}}), t).record;
    assert!(!record.desired.contains_key("b"));
    assert!(!record.desired_metadata.contains_key("b"));
}

#[test]
fn merge_is_public_and_matches_the_update() {
    let mut target = json!({"a":{"b":1,"c":2},"d":[1],"e":"x"});
    merge(
        &mut target,
        &json!({"a":{"b":null,"z":{"y":null}},"d":[2,3],"f":{}}),
    );
    assert_eq!(target, json!({"a":{"c":2},"d":[2,3],"e":"x","f":{}}));
    merge(&mut target, &Value::Null);
    assert_eq!(target, Value::Null);
    let mut scalar = json!(3);
    merge(&mut scalar, &json!({"k":{"n":null},"m":1}));
    assert_eq!(scalar, json!({"m":1}));
}

#[test]
fn key_order_is_kept_when_keys_are_removed() {
    let record = create(json!({"state":{"desired":{"a":1,"b":2,"c":3,"d":4}}}));
    let record = update(&record, json!({"state":{"desired":{"a":null}}}), T0).record;
    let keys: Vec<_> = record.desired.keys().cloned().collect();
    assert_eq!(keys, ["b", "c", "d"]);
}

// ---- metadata ----

#[test]
fn metadata_has_a_timestamp_per_leaf_and_per_array_element() {
    let record = create(
        json!({"state":{"reported":{"t":21.5,"ok":true,"tags":["x","y"],"pos":{"x":1,"y":[{"z":1}]}}}}),
    );
    assert_eq!(
        record.reported_metadata,
        obj(json!({
            "t":{"timestamp":T0},
            "ok":{"timestamp":T0},
            "tags":[{"timestamp":T0},{"timestamp":T0}],
            "pos":{"x":{"timestamp":T0},"y":[{"z":{"timestamp":T0}}]}
        }))
    );
}

#[test]
fn only_written_leaves_get_a_new_timestamp() {
    let record = create(json!({"state":{"desired":{"a":1,"o":{"x":1,"y":2}}}}));
    let t1 = T0 + 60;
    let record = update(&record, json!({"state":{"desired":{"o":{"y":3}}}}), t1).record;
    assert_eq!(
        record.desired_metadata,
        obj(json!({"a":{"timestamp":T0},"o":{"x":{"timestamp":T0},"y":{"timestamp":t1}}}))
    );
    assert_eq!(record.timestamp, t1);
}

// ---- update response ----

#[test]
fn the_update_response_echoes_what_was_sent() {
    let record = create(json!({"state":{"desired":{"a":1,"b":2}}}));
    let t1 = T0 + 7;
    let updated = update(
        &record,
        json!({"state":{"desired":{"b":null,"c":[1,2]},"reported":{"a":1}},"clientToken":"tok","version":1}),
        t1,
    );
    let response = updated.response;
    assert_eq!(response.state.desired, Some(json!({"b":null,"c":[1,2]})));
    assert_eq!(response.state.reported, Some(json!({"a":1})));
    assert_eq!(response.state.delta, None);
    assert_eq!(
        response.metadata.desired,
        Some(json!({"b":{"timestamp":t1},"c":[{"timestamp":t1},{"timestamp":t1}]}))
    );
    assert_eq!(
        response.metadata.reported,
        Some(json!({"a":{"timestamp":t1}}))
    );
    assert_eq!(response.version, 2);
    assert_eq!(response.timestamp, t1);
    assert_eq!(response.client_token.as_deref(), Some("tok"));
    // The wire form keeps the null section and token.
    let wire = serde_json::to_value(&response).expect("serializes");
    assert_eq!(wire["clientToken"], json!("tok"));
    assert_eq!(wire["state"]["desired"]["b"], Value::Null);
}

#[test]
fn the_update_response_omits_sections_not_sent() {
    let updated = update(
        &ShadowRecord::absent(),
        json!({"state":{"reported":{"a":1}}}),
        T0,
    );
    assert_eq!(updated.response.state.desired, None);
    assert_eq!(updated.response.metadata.desired, None);
    assert_eq!(updated.response.client_token, None);
    assert_eq!(updated.response.version, 1);
}

// ---- document and delta ----

#[test]
fn the_document_has_state_delta_metadata_version_and_response_time() {
    let record = create(
        json!({"state":{"desired":{"power":"on","color":{"r":255,"g":180}},"reported":{"power":"off","color":{"r":255,"g":0},"extra":1}}}),
    );
    let doc = record.document(T0 + 99);
    assert_eq!(
        doc.state.delta,
        Some(json!({"power":"on","color":{"g":180}}))
    );
    assert_eq!(
        doc.state.desired,
        Some(json!({"power":"on","color":{"r":255,"g":180}}))
    );
    assert_eq!(
        doc.metadata.desired,
        Some(json!({"power":{"timestamp":T0},"color":{"r":{"timestamp":T0},"g":{"timestamp":T0}}}))
    );
    assert_eq!(doc.version, 1);
    assert_eq!(doc.timestamp, T0 + 99);
    assert_eq!(doc.client_token, None);
}

#[test]
fn delta_is_absent_when_reported_matches() {
    let record = create(
        json!({"state":{"desired":{"a":1,"o":{"x":[1,2]}},"reported":{"a":1.0,"o":{"x":[1,2],"y":3},"z":0}}}),
    );
    assert_eq!(record.document(T0).state.delta, None);
}

#[test]
fn delta_without_reported_is_all_of_desired() {
    let record = create(json!({"state":{"desired":{"a":1,"o":{"x":1}}}}));
    assert_eq!(
        record.document(T0).state.delta,
        Some(json!({"a":1,"o":{"x":1}}))
    );
    let only_reported = create(json!({"state":{"reported":{"a":1}}}));
    assert_eq!(only_reported.document(T0).state.delta, None);
}

#[test]
fn delta_rules() {
    // Arrays compare whole.
    assert_eq!(
        delta(&json!({"l":[1,2]}), &json!({"l":[2,1]})),
        Some(json!({"l":[1,2]}))
    );
    assert_eq!(delta(&json!({"l":[1,2]}), &json!({"l":[1,2]})), None);
    // Type differences are differences; an object against a scalar is the whole object.
    assert_eq!(
        delta(&json!({"a":{"x":1}}), &json!({"a":5})),
        Some(json!({"a":{"x":1}}))
    );
    assert_eq!(
        delta(&json!({"a":"1"}), &json!({"a":1})),
        Some(json!({"a":"1"}))
    );
    // Numbers compare by value; large integers exactly.
    assert_eq!(delta(&json!({"a":2}), &json!({"a":2.0})), None);
    assert_eq!(
        delta(
            &json!({"a":9_007_199_254_740_993_u64}),
            &json!({"a":9_007_199_254_740_992_u64})
        ),
        Some(json!({"a":9_007_199_254_740_993_u64}))
    );
    // Missing keys and empty objects.
    assert_eq!(delta(&json!({"a":{}}), &json!({})), Some(json!({"a":{}})));
    assert_eq!(delta(&json!({"a":{}}), &json!({"a":{"b":1}})), None);
    // Keys only in reported do not matter.
    assert_eq!(delta(&json!({}), &json!({"r":1})), None);
}

#[test]
fn values_equal_ignores_key_order() {
    assert!(values_equal(
        &json!({"a":1,"b":[1.0]}),
        &json!({"b":[1],"a":1})
    ));
    assert!(!values_equal(&json!({"a":1}), &json!({"a":1,"b":2})));
}

// ---- records ----

#[test]
fn a_failed_update_changes_nothing() {
    let record = create(json!({"state":{"desired":{"a":1}}}));
    let before = record.clone();
    let _ = try_update(
        &record,
        json!({"state":{"desired":{"a":2}},"version":7}),
        T0 + 1,
    )
    .unwrap_err();
    assert_eq!(record, before);
}

#[test]
fn a_record_round_trips_through_serde() {
    let record =
        create(json!({"state":{"desired":{"b":1,"a":[1,2]},"reported":{"z":{"y":null,"x":"s"}}}}));
    let bytes = serde_json::to_vec(&record).expect("serializes");
    let back: ShadowRecord = serde_json::from_slice(&bytes).expect("deserializes");
    assert_eq!(back, record);
    let keys: Vec<_> = back.desired.keys().cloned().collect();
    assert_eq!(keys, ["b", "a"]);
}
