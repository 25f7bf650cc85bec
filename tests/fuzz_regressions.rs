//! Inputs that the fuzz targets (`tests/fuzz/`) and the property tests found breaking an
//! invariant, each kept as a test that runs in CI, with the fix it led to.

mod invariants;

use serde_json::json;
use shadowsync::api::validate::{json_depth, validate_thing_shadow, ShadowLimits};
use shadowsync::api::ThingShadowSpec;
use shadowsync::shadow::ShadowRecord;

use invariants::manifest::{check_text, LIMITS};

fn spec(desired: serde_json::Value) -> ThingShadowSpec {
    serde_json::from_value(json!({"thingName": "lamp", "desired": desired})).expect("a spec")
}

/// Found by `manifest_props`: validation counted an empty object or array as no level
/// while the store counts it as one, so a spec ending in `{}` (or `[]`) one level past
/// the limit validated and was then refused by the data plane with 400. Validation now
/// counts it as the store does.
#[test]
fn an_empty_object_past_the_depth_limit_is_refused_by_validation() {
    let limits = ShadowLimits {
        max_depth: 3,
        ..ShadowLimits::default()
    };
    for desired in [
        json!({"a": {"b": {"c": {}}}}),
        json!({"a": {"b": {"c": []}}}),
    ] {
        assert_eq!(json_depth(&desired), 4, "{desired}");
        let errors = validate_thing_shadow(&spec(desired.clone()), &limits)
            .expect_err("one level past the limit");
        assert_eq!(errors[0].field, "spec.desired.a.b.c", "{}", errors[0]);
        let request = json!({"state": {"desired": desired}}).to_string();
        ShadowRecord::absent()
            .apply_update(request.as_bytes(), &limits, 0)
            .expect_err("the store refuses it too");
    }
    // At the limit both accept.
    let at_limit = json!({"a": {"b": {}}});
    validate_thing_shadow(&spec(at_limit.clone()), &limits).expect("at the limit");
    let request = json!({"state": {"desired": at_limit}}).to_string();
    ShadowRecord::absent()
        .apply_update(request.as_bytes(), &limits, 0)
        .expect("at the limit");

    // The manifest the property test shrank to.
    let manifest = "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
                    metadata: {name: lamp}\n\
                    spec: {thingName: lamp, desired: {k: {x: {p: []}, \"y\": {a: 43}}}}\n";
    assert_eq!(check_text(manifest, &LIMITS[1]), (1, 0));
}

/// Found by `shadow_engine`: JSON numbers were parsed with serde_json's fast float
/// parser, which can be one unit in the last place off (5.468341513765653e-304 came
/// back as ...652e-304), so the store kept a value other than the one written and a spec
/// holding such a number never looked in sync. The crate now enables serde_json's
/// `float_roundtrip`, which parses every float exactly.
#[test]
fn floats_are_stored_exactly() {
    let written = 5.468341513765653e-304_f64;
    let request = r#"{"state":{"desired":{"":5.468341513765653e-304},"reported":{}}}"#;
    let updated = ShadowRecord::absent()
        .apply_update(request.as_bytes(), &ShadowLimits::default(), 0)
        .expect("accepted");
    assert_eq!(updated.record.desired[""].as_f64(), Some(written));

    // The same number from a manifest: written once, then in sync.
    let manifest = "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
                    metadata: {name: lamp}\n\
                    spec: {thingName: lamp, desired: {x: 5.468341513765653e-304, \"y\": 0.1}}\n";
    assert_eq!(check_text(manifest, &LIMITS[0]), (1, 1));
}

/// Found by the `manifest` target: validation bounds `{"desired": ...}` by the document
/// limit, as the store bounds the document, but the store also refused any request
/// longer than the limit, and a request wraps the document in `{"state": ...}` (plus
/// `version`): a spec at the limit validated and was then refused with 413. The store
/// now applies the limit to the request's state sections and to the merged document,
/// with only a coarse guard (twice the limit) on the raw request.
#[test]
fn a_document_at_the_size_limit_can_be_written() {
    let limits = LIMITS[1];
    // {"desired":{"a":"xx..."}} is 20 bytes around the string.
    let desired = json!({"a": "x".repeat(limits.max_document_bytes - 20)});
    assert_eq!(
        json!({ "desired": desired }).to_string().len(),
        limits.max_document_bytes
    );
    validate_thing_shadow(&spec(desired.clone()), &limits).expect("at the limit");
    let request = json!({"state": {"desired": desired}, "version": 0}).to_string();
    assert!(request.len() > limits.max_document_bytes);
    ShadowRecord::absent()
        .apply_update(request.as_bytes(), &limits, 0)
        .expect("a document at the limit is accepted");

    // One byte more is refused by both.
    let over = json!({"a": "x".repeat(limits.max_document_bytes - 19)});
    validate_thing_shadow(&spec(over.clone()), &limits).expect_err("over the limit");
    let request = json!({"state": {"desired": over}}).to_string();
    let err = ShadowRecord::absent()
        .apply_update(request.as_bytes(), &limits, 0)
        .expect_err("over the limit");
    assert_eq!(
        err.kind,
        shadowsync::dataplane::ErrorKind::RequestEntityTooLarge
    );

    // The manifest the fuzz target found, shortened.
    let manifest = format!(
        "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {{name: t}}\n\
         spec: {{thingName: t, desired: {{mode: heat, setpoints: '{}'}}}}\n",
        "\\".repeat(107)
    );
    assert_eq!(check_text(&manifest, &limits), (1, 1));
}

/// Found by the `manifest` target: validation refused a `null` only as a direct array
/// element, while the store refuses a `null` anywhere inside an array (also as a value
/// of an object in an array), so such a spec validated and was then refused with 400.
/// Validation now refuses it too, naming the path.
#[test]
fn a_null_in_an_object_in_an_array_is_refused_by_validation() {
    let desired = json!({"mode": "heat", "settings": [{"key": null, "value": "berlin"}]});
    let errors = validate_thing_shadow(&spec(desired.clone()), &ShadowLimits::default())
        .expect_err("a null inside an array");
    assert_eq!(
        errors[0].field, "spec.desired.settings[0].key",
        "{}",
        errors[0]
    );
    let request = json!({"state": {"desired": desired}}).to_string();
    ShadowRecord::absent()
        .apply_update(request.as_bytes(), &ShadowLimits::default(), 0)
        .expect_err("the store refuses it too");

    let manifest = "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
                    metadata: {name: t}\n\
                    spec: {thingName: t, desired: {settings: [{key: ~, value: berlin}]}}\n";
    // Refused as soon as it is read: the apiserver drops a key whose value is null.
    assert_eq!(check_text(manifest, &LIMITS[0]), (0, 0));
}
