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
                    spec: {thingName: lamp, desired: {k: {x: {p: []}, y: {a: 43}}}}\n";
    assert_eq!(check_text(manifest, &LIMITS[1]), (1, 0));
}
