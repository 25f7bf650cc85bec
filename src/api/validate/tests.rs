use super::*;
use crate::api::{
    ConflictPolicy, ManagementPolicy, RetainedDeletionPolicy, ShadowDeletionPolicy, UserProperty,
};
use proptest::prelude::*;
use serde_json::json;

fn limits() -> ShadowLimits {
    ShadowLimits::default()
}

fn shadow(thing: &str) -> ThingShadowSpec {
    ThingShadowSpec {
        thing_name: thing.to_string(),
        shadow_name: None,
        desired: Some(json!({"power": "on"})),
        management_policy: ManagementPolicy::Manage,
        deletion_policy: ShadowDeletionPolicy::ClearDesired,
        conflict_policy: ConflictPolicy::Overwrite,
        refresh_interval: "5m".to_string(),
    }
}

fn message(topic: &str) -> RetainedMessageSpec {
    RetainedMessageSpec {
        topic: topic.to_string(),
        payload: PayloadSource {
            text: Some("hello".to_string()),
            ..Default::default()
        },
        qos: 0,
        content_type: None,
        user_properties: Vec::new(),
        response_topic: None,
        correlation_data: None,
        message_expiry: None,
        management_policy: ManagementPolicy::Manage,
        deletion_policy: RetainedDeletionPolicy::Delete,
        conflict_policy: ConflictPolicy::Overwrite,
        refresh_interval: "10m".to_string(),
    }
}

fn shadow_errors(spec: &ThingShadowSpec) -> Vec<FieldError> {
    validate_thing_shadow(spec, &limits())
        .err()
        .unwrap_or_default()
}

fn message_errors(spec: &RetainedMessageSpec) -> Vec<FieldError> {
    validate_retained_message(spec, &limits())
        .err()
        .unwrap_or_default()
}

fn fields(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}

/// `{"a":{"b":...{leaf}}}` with `levels` keys named a, b, c, ...
fn nested(levels: usize, leaf: Value) -> Value {
    (0..levels).rev().fold(leaf, |inner, i| {
        let key = ((b'a' + i as u8) as char).to_string();
        json!({ key: inner })
    })
}

// ---------------------------------------------------------------- FieldError

#[test]
fn field_error_display_quotes_the_value() {
    let errors = shadow_errors(&shadow("bad name!"));
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        r#"spec.thingName "bad name!": must match [a-zA-Z0-9:_-]{1,128}"#
    );
}

#[test]
fn field_error_display_omits_a_missing_value() {
    let error = FieldError::new("spec.payload", None, "exactly one");
    assert_eq!(error.to_string(), "spec.payload: exactly one");
}

#[test]
fn field_error_display_cuts_long_values() {
    let long = "x".repeat(200);
    let shown = FieldError::new("spec.topic", Some(&long), "rule").to_string();
    assert_eq!(shown, format!("spec.topic \"{}\"...: rule", "x".repeat(64)));
    let exact = "y".repeat(64);
    let shown = FieldError::new("spec.topic", Some(&exact), "rule").to_string();
    assert_eq!(shown, format!("spec.topic \"{exact}\": rule"));
}

#[test]
fn field_error_display_escapes_control_characters() {
    let shown = FieldError::new("spec.topic", Some("a\0b\"c"), "rule").to_string();
    assert_eq!(shown, r#"spec.topic "a\0b\"c": rule"#);
}

#[test]
fn format_errors_joins_all() {
    let errors = vec![
        FieldError::new("a", None, "one"),
        FieldError::new("b", Some("v"), "two"),
    ];
    assert_eq!(format_errors(&errors), r#"a: one; b "v": two"#);
}

// ---------------------------------------------------------------- thingName

#[test]
fn thing_name_length_bounds() {
    assert!(shadow_errors(&shadow(&"a".repeat(128))).is_empty());
    assert_eq!(
        fields(&shadow_errors(&shadow(&"a".repeat(129)))),
        ["spec.thingName"]
    );
    assert_eq!(fields(&shadow_errors(&shadow(""))), ["spec.thingName"]);
    assert!(shadow_errors(&shadow("a")).is_empty());
}

#[test]
fn thing_name_characters() {
    assert!(shadow_errors(&shadow("Lamp-01:kitchen_A")).is_empty());
    for bad in ["a b", "a/b", "a$b", "a.b", "lämp", "a\0"] {
        assert_eq!(
            fields(&shadow_errors(&shadow(bad))),
            ["spec.thingName"],
            "{bad:?}"
        );
    }
}

// ---------------------------------------------------------------- shadowName

#[test]
fn shadow_name_length_bounds() {
    let mut spec = shadow("lamp");
    spec.shadow_name = Some("s".repeat(64));
    assert!(shadow_errors(&spec).is_empty());
    spec.shadow_name = Some("s".repeat(65));
    assert_eq!(fields(&shadow_errors(&spec)), ["spec.shadowName"]);
    spec.shadow_name = Some(String::new());
    assert_eq!(fields(&shadow_errors(&spec)), ["spec.shadowName"]);
}

#[test]
fn shadow_name_characters() {
    let mut spec = shadow("lamp");
    spec.shadow_name = Some("$package:config_1-a".into());
    assert!(shadow_errors(&spec).is_empty());
    spec.shadow_name = Some("con fig".into());
    let errors = shadow_errors(&spec);
    assert_eq!(fields(&errors), ["spec.shadowName"]);
    assert_eq!(errors[0].rule, "must match [$a-zA-Z0-9:_-]{1,64}");
}

#[test]
fn classic_shadow_needs_no_name() {
    let spec = shadow("lamp");
    assert_eq!(spec.shadow_name, None);
    assert_eq!(validate_thing_shadow(&spec, &limits()), Ok(()));
}

#[test]
fn greengrass_shadow_is_refused() {
    let mut spec = shadow("core");
    spec.shadow_name = Some("AWSManagedGreengrassV2Deployment".into());
    let errors = shadow_errors(&spec);
    assert_eq!(fields(&errors), ["spec.shadowName"]);
    assert!(errors[0].rule.contains("Greengrass"), "{}", errors[0]);
    // Only the exact name is reserved.
    spec.shadow_name = Some("AWSManagedGreengrassV2Deployment2".into());
    assert!(shadow_errors(&spec).is_empty());
}

// ---------------------------------------------------------------- desired

#[test]
fn desired_must_be_an_object() {
    let mut spec = shadow("lamp");
    spec.desired = Some(json!({}));
    assert!(shadow_errors(&spec).is_empty());
    spec.desired = None;
    assert!(shadow_errors(&spec).is_empty());
    for bad in [json!([1]), json!("on"), json!(1), json!(true), Value::Null] {
        spec.desired = Some(bad.clone());
        let errors = shadow_errors(&spec);
        assert_eq!(fields(&errors), ["spec.desired"], "{bad}");
        assert_eq!(errors[0].rule, "must be a JSON object");
    }
}

#[test]
fn desired_depth_at_the_limit_is_accepted() {
    let mut spec = shadow("lamp");
    spec.desired = Some(nested(6, json!(1)));
    assert!(shadow_errors(&spec).is_empty());
}

#[test]
fn desired_depth_past_the_limit_names_the_deepest_path() {
    let mut spec = shadow("lamp");
    let mut desired = nested(7, json!(1));
    desired["z"] = json!({"shallow": true});
    spec.desired = Some(desired);
    let errors = shadow_errors(&spec);
    assert_eq!(fields(&errors), ["spec.desired.a.b.c.d.e.f.g"]);
    assert_eq!(errors[0].rule, "nesting depth 7 exceeds the limit of 6");
}

#[test]
fn desired_depth_counts_array_levels_and_follows_the_limit() {
    let mut spec = shadow("lamp");
    spec.desired = Some(json!({"m": [[1, [2]]]}));
    let tight = ShadowLimits {
        max_depth: 3,
        ..ShadowLimits::default()
    };
    let errors = validate_thing_shadow(&spec, &tight).unwrap_err();
    assert_eq!(fields(&errors), ["spec.desired.m[0][1][0]"]);
    let enough = ShadowLimits {
        max_depth: 4,
        ..ShadowLimits::default()
    };
    assert_eq!(validate_thing_shadow(&spec, &enough), Ok(()));
}

#[test]
fn odd_keys_are_quoted_in_paths() {
    let mut spec = shadow("lamp");
    spec.desired = Some(json!({"a.b": {"c d": [null]}}));
    let errors = shadow_errors(&spec);
    assert_eq!(fields(&errors), [r#"spec.desired["a.b"]["c d"][0]"#]);
}

#[test]
fn json_depth_definition() {
    assert_eq!(json_depth(&json!(1)), 0);
    assert_eq!(json_depth(&json!({})), 1);
    assert_eq!(json_depth(&json!({"a": 1})), 1);
    assert_eq!(json_depth(&json!({"a": {}})), 2);
    assert_eq!(json_depth(&json!({"a": []})), 2);
    assert_eq!(json_depth(&json!({"a": {"b": [1]}})), 3);
    assert_eq!(json_depth(&nested(6, json!("x"))), 6);
}

#[test]
fn nulls_inside_arrays_are_refused_with_their_index() {
    let mut spec = shadow("lamp");
    spec.desired = Some(json!({
        "zones": [1, 2, null],
        "nested": {"list": [{"inner": [null, 3]}]},
        "removed": null
    }));
    let errors = shadow_errors(&spec);
    assert_eq!(
        fields(&errors),
        [
            "spec.desired.zones[2]",
            "spec.desired.nested.list[0].inner[0]"
        ]
    );
    assert!(errors[0].rule.contains("must not contain null"));
}

#[test]
fn null_object_values_and_null_free_arrays_are_accepted() {
    let mut spec = shadow("lamp");
    spec.desired = Some(json!({"removed": null, "zones": [1, [2], {"a": 1}]}));
    assert!(shadow_errors(&spec).is_empty());
    // Inside an array a null is stored verbatim, even as an object's value: the store
    // refuses it, so validation does.
    spec.desired = Some(json!({"zones": [{"a": null}]}));
    assert_eq!(fields(&shadow_errors(&spec)), ["spec.desired.zones[0].a"]);
}

#[test]
fn desired_size_within_the_document_limit() {
    // {"desired":{"k":"<n x>"}} is 20 + n bytes.
    let limit = ShadowLimits {
        max_document_bytes: 100,
        ..ShadowLimits::default()
    };
    let mut spec = shadow("lamp");
    spec.desired = Some(json!({"k": "x".repeat(80)}));
    assert_eq!(validate_thing_shadow(&spec, &limit), Ok(()));
    spec.desired = Some(json!({"k": "x".repeat(81)}));
    let errors = validate_thing_shadow(&spec, &limit).unwrap_err();
    assert_eq!(fields(&errors), ["spec.desired"]);
    assert!(errors[0].rule.contains("101 bytes"), "{}", errors[0]);
    assert!(errors[0].rule.contains("100 bytes"), "{}", errors[0]);
}

#[test]
fn desired_size_uses_the_default_limit() {
    let mut spec = shadow("lamp");
    spec.desired = Some(json!({"k": "x".repeat(8 * 1024 - 20)}));
    assert!(shadow_errors(&spec).is_empty());
    spec.desired = Some(json!({"k": "x".repeat(8 * 1024 - 19)}));
    assert_eq!(fields(&shadow_errors(&spec)), ["spec.desired"]);
}

// ---------------------------------------------------------------- refreshInterval

#[test]
fn refresh_interval_accepts_go_durations() {
    for ok in [
        "0",
        "0s",
        "1s",
        "30s",
        "5m",
        "1h30m",
        "1.5h",
        "1000ms",
        "2h45m30.5s",
    ] {
        let mut spec = shadow("lamp");
        spec.refresh_interval = ok.into();
        assert!(shadow_errors(&spec).is_empty(), "{ok}");
    }
}

#[test]
fn refresh_interval_refuses_non_durations() {
    for bad in ["", "5", "5d", "-5m", "+5m", "five minutes", "1h 30m", "m"] {
        let mut spec = shadow("lamp");
        spec.refresh_interval = bad.into();
        let errors = shadow_errors(&spec);
        assert_eq!(fields(&errors), ["spec.refreshInterval"], "{bad:?}");
        assert!(
            errors[0].rule.starts_with("must be a Go duration"),
            "{}",
            errors[0]
        );
    }
}

#[test]
fn refresh_interval_below_one_second_is_refused() {
    let mut spec = shadow("lamp");
    spec.refresh_interval = "999ms".into();
    let errors = shadow_errors(&spec);
    assert_eq!(fields(&errors), ["spec.refreshInterval"]);
    assert_eq!(
        errors[0].rule,
        "must be 0s (read only after a change) or at least 1s"
    );
    spec.refresh_interval = "0.5s".into();
    assert_eq!(fields(&shadow_errors(&spec)), ["spec.refreshInterval"]);
    spec.refresh_interval = "1000000us".into();
    assert!(shadow_errors(&spec).is_empty());
}

#[test]
fn all_shadow_errors_are_collected() {
    let mut spec = shadow("bad name");
    spec.shadow_name = Some("bad/shadow".into());
    spec.desired = Some(json!({"a": [null]}));
    spec.refresh_interval = "soon".into();
    let errors = shadow_errors(&spec);
    assert_eq!(
        fields(&errors),
        [
            "spec.thingName",
            "spec.shadowName",
            "spec.desired.a[0]",
            "spec.refreshInterval"
        ]
    );
}

// ---------------------------------------------------------------- parse_duration

#[test]
fn parse_duration_values() {
    let cases: [(&str, Duration); 14] = [
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h30m", Duration::from_secs(5400)),
        ("1.5h", Duration::from_secs(5400)),
        (".5s", Duration::from_millis(500)),
        ("1.s", Duration::from_secs(1)),
        ("300ms", Duration::from_millis(300)),
        ("10us", Duration::from_micros(10)),
        ("10µs", Duration::from_micros(10)),
        ("10μs", Duration::from_micros(10)),
        ("7ns", Duration::from_nanos(7)),
        ("1h1m1s1ms", Duration::from_millis(3_661_001)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
}

#[test]
fn parse_duration_errors() {
    for bad in [
        "", "0x", "00", "1", "s", ".s", ".", "1d", "1h-5m", "-1s", "+1s", "1 s", "1S",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
    }
    assert!(parse_duration("1d").unwrap_err().contains("unknown unit"));
    assert!(parse_duration("5").unwrap_err().contains("missing unit"));
}

#[test]
fn parse_duration_range_is_gos() {
    // Go's maximum, i64::MAX nanoseconds, is 2562047h47m16.854775807s.
    assert_eq!(
        parse_duration("2562047h47m16.854775807s"),
        Ok(Duration::from_nanos(i64::MAX as u64))
    );
    assert!(parse_duration("2562047h47m16.854775808s").is_err());
    assert!(parse_duration("99999999999999999999999h").is_err());
}

#[test]
fn parse_duration_ignores_digits_below_a_nanosecond() {
    assert_eq!(parse_duration("1.0000000001s"), Ok(Duration::from_secs(1)));
}

proptest! {
    #[test]
    fn parse_duration_sums_its_parts(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms");
        let expected = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&text), Ok(expected));
    }

    #[test]
    fn parse_duration_never_panics(text in "\\PC{0,16}") {
        let _ = parse_duration(&text);
    }
}

// ---------------------------------------------------------------- topic

#[test]
fn topic_length_in_bytes() {
    assert!(message_errors(&message(&"t".repeat(256))).is_empty());
    assert_eq!(
        fields(&message_errors(&message(&"t".repeat(257)))),
        ["spec.topic"]
    );
    // Two bytes per character: the limit is in bytes, not characters.
    assert!(message_errors(&message(&"é".repeat(128))).is_empty());
    let errors = message_errors(&message(&format!("{}a", "é".repeat(128))));
    assert_eq!(fields(&errors), ["spec.topic"]);
    assert!(errors[0].rule.contains("is 257 bytes"), "{}", errors[0]);
    assert_eq!(fields(&message_errors(&message(""))), ["spec.topic"]);
}

#[test]
fn topic_levels() {
    assert!(message_errors(&message("a/b/c/d/e/f/g/h")).is_empty());
    let errors = message_errors(&message("a/b/c/d/e/f/g/h/i"));
    assert_eq!(fields(&errors), ["spec.topic"]);
    assert_eq!(
        errors[0].rule,
        "must have at most 8 levels (at most 7 '/'), has 9"
    );
    // Empty levels count too.
    assert_eq!(
        fields(&message_errors(&message("////////"))),
        ["spec.topic"]
    );
    assert!(message_errors(&message("///////")).is_empty());
}

#[test]
fn topic_wildcards() {
    for bad in ["home/+/config", "home/#", "a+b", "#"] {
        let errors = message_errors(&message(bad));
        assert_eq!(fields(&errors), ["spec.topic"], "{bad}");
        assert_eq!(errors[0].rule, "must not contain the wildcards + or #");
    }
}

#[test]
fn topic_reserved_prefix() {
    let errors = message_errors(&message("$aws/things/lamp/shadow/update"));
    assert_eq!(fields(&errors), ["spec.topic"]);
    assert!(errors[0].rule.starts_with("must not start with $"));
    assert!(message_errors(&message("home/$lamp")).is_empty());
}

#[test]
fn topic_nul() {
    let errors = message_errors(&message("home\0lamp"));
    assert_eq!(fields(&errors), ["spec.topic"]);
    assert_eq!(errors[0].rule, "must not contain NUL (U+0000)");
}

#[test]
fn topic_errors_are_all_reported() {
    let errors = message_errors(&message("$a/+/\0"));
    assert_eq!(errors.len(), 3, "{}", format_errors(&errors));
}

#[test]
fn response_topic_follows_topic_rules() {
    let mut spec = message("home/lamp");
    spec.response_topic = Some("home/lamp/reply".into());
    assert!(message_errors(&spec).is_empty());
    spec.response_topic = Some("home/+/reply".into());
    assert_eq!(fields(&message_errors(&spec)), ["spec.responseTopic"]);
    spec.response_topic = Some(String::new());
    assert_eq!(fields(&message_errors(&spec)), ["spec.responseTopic"]);
    spec.response_topic = Some("r".repeat(257));
    assert_eq!(fields(&message_errors(&spec)), ["spec.responseTopic"]);
}

// ---------------------------------------------------------------- payload

#[test]
fn payload_needs_exactly_one_source() {
    let mut spec = message("t");
    spec.payload = PayloadSource::default();
    let errors = message_errors(&spec);
    assert_eq!(fields(&errors), ["spec.payload"]);
    assert_eq!(
        errors[0].rule,
        "exactly one of json, text, base64, secretKeyRef, configMapKeyRef must be set"
    );
    assert_eq!(errors[0].value, None);

    spec.payload = PayloadSource {
        text: Some("a".into()),
        base64: Some("AAEC".into()),
        ..Default::default()
    };
    let errors = message_errors(&spec);
    assert_eq!(fields(&errors), ["spec.payload"]);
    assert_eq!(errors[0].value.as_deref(), Some("text, base64"));
}

#[test]
fn each_payload_source_alone_is_accepted() {
    let key_ref = KeyRef {
        name: "lamp-config".into(),
        key: "payload.json".into(),
    };
    let sources = [
        PayloadSource {
            json: Some(json!({"interval": 30})),
            ..Default::default()
        },
        PayloadSource {
            json: Some(json!("a string is JSON too")),
            ..Default::default()
        },
        PayloadSource {
            text: Some("plain".into()),
            ..Default::default()
        },
        PayloadSource {
            base64: Some("AAEC".into()),
            ..Default::default()
        },
        PayloadSource {
            secret_key_ref: Some(key_ref.clone()),
            ..Default::default()
        },
        PayloadSource {
            config_map_key_ref: Some(key_ref),
            ..Default::default()
        },
    ];
    for source in sources {
        let mut spec = message("t");
        spec.payload = source.clone();
        assert!(message_errors(&spec).is_empty(), "{source:?}");
    }
}

#[test]
fn base64_payload_must_be_standard_base64() {
    let mut spec = message("t");
    for ok in ["AAEC", "AA==", "AAE=", "+/+/"] {
        spec.payload = PayloadSource {
            base64: Some(ok.into()),
            ..Default::default()
        };
        assert!(message_errors(&spec).is_empty(), "{ok}");
    }
    for bad in ["AAE", "-_-_", "AA=A", "A A=", "@@@@"] {
        spec.payload = PayloadSource {
            base64: Some(bad.into()),
            ..Default::default()
        };
        let errors = message_errors(&spec);
        assert_eq!(fields(&errors), ["spec.payload.base64"], "{bad}");
        assert!(errors[0].rule.starts_with("must be standard base64"));
    }
}

#[test]
fn empty_inline_payloads_are_refused() {
    let mut spec = message("t");
    spec.payload = PayloadSource {
        text: Some(String::new()),
        ..Default::default()
    };
    let errors = message_errors(&spec);
    assert_eq!(fields(&errors), ["spec.payload.text"]);
    assert!(errors[0].rule.contains("deletes the retained message"));
    spec.payload = PayloadSource {
        base64: Some(String::new()),
        ..Default::default()
    };
    assert_eq!(fields(&message_errors(&spec)), ["spec.payload.base64"]);
    spec.payload = PayloadSource {
        text: Some(" ".into()),
        ..Default::default()
    };
    assert!(message_errors(&spec).is_empty());
}

#[test]
fn payload_size_limit_for_each_inline_source() {
    let limit = ShadowLimits {
        max_payload_bytes: 12,
        ..ShadowLimits::default()
    };
    let check = |source: PayloadSource| {
        let mut spec = message("t");
        spec.payload = source;
        validate_retained_message(&spec, &limit)
            .err()
            .unwrap_or_default()
    };
    let text = |s: &str| PayloadSource {
        text: Some(s.into()),
        ..Default::default()
    };
    assert!(check(text(&"x".repeat(12))).is_empty());
    assert_eq!(fields(&check(text(&"x".repeat(13)))), ["spec.payload.text"]);
    // Bytes, not characters.
    assert_eq!(fields(&check(text(&"é".repeat(7)))), ["spec.payload.text"]);

    // 12 decoded bytes encode to 16 base64 characters.
    let b64 = |n: usize| PayloadSource {
        base64: Some(base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])),
        ..Default::default()
    };
    assert!(check(b64(12)).is_empty());
    let errors = check(b64(13));
    assert_eq!(fields(&errors), ["spec.payload.base64"]);
    assert_eq!(
        errors[0].rule,
        "payload is 13 bytes, more than the limit of 12 bytes"
    );

    // Compact JSON: {"k":"1234"} is 12 bytes, whatever the manifest's spacing.
    let json_source = |v: Value| PayloadSource {
        json: Some(v),
        ..Default::default()
    };
    assert!(check(json_source(json!({"k": "1234"}))).is_empty());
    assert_eq!(
        fields(&check(json_source(json!({"k": "12345"})))),
        ["spec.payload.json"]
    );
}

#[test]
fn payload_size_uses_the_default_limit() {
    let mut spec = message("t");
    spec.payload = PayloadSource {
        text: Some("x".repeat(128 * 1024)),
        ..Default::default()
    };
    assert!(message_errors(&spec).is_empty());
    spec.payload = PayloadSource {
        text: Some("x".repeat(128 * 1024 + 1)),
        ..Default::default()
    };
    assert_eq!(fields(&message_errors(&spec)), ["spec.payload.text"]);
}

#[test]
fn key_refs_need_a_name_and_a_key() {
    let mut spec = message("t");
    spec.payload = PayloadSource {
        secret_key_ref: Some(KeyRef {
            name: String::new(),
            key: String::new(),
        }),
        ..Default::default()
    };
    let errors = message_errors(&spec);
    assert_eq!(
        fields(&errors),
        [
            "spec.payload.secretKeyRef.name",
            "spec.payload.secretKeyRef.key"
        ]
    );
    assert!(errors.iter().all(|e| e.rule == "must not be empty"));

    spec.payload = PayloadSource {
        config_map_key_ref: Some(KeyRef {
            name: "Bad_Name".into(),
            key: "a/b".into(),
        }),
        ..Default::default()
    };
    assert_eq!(
        fields(&message_errors(&spec)),
        [
            "spec.payload.configMapKeyRef.name",
            "spec.payload.configMapKeyRef.key"
        ]
    );
}

#[test]
fn key_ref_name_and_key_bounds() {
    let check = |name: &str, key: &str| {
        let mut spec = message("t");
        spec.payload = PayloadSource {
            config_map_key_ref: Some(KeyRef {
                name: name.into(),
                key: key.into(),
            }),
            ..Default::default()
        };
        message_errors(&spec)
    };
    assert!(check("a.b-c.d1", "tls.crt").is_empty());
    assert!(check(&"n".repeat(253), &"k".repeat(253)).is_empty());
    assert_eq!(
        fields(&check(&"n".repeat(254), &"k".repeat(254))),
        [
            "spec.payload.configMapKeyRef.name",
            "spec.payload.configMapKeyRef.key"
        ]
    );
    for bad_name in ["-a", "a-", "a..b", ".a", "a.", "UPPER", "a_b"] {
        assert_eq!(
            fields(&check(bad_name, "k")),
            ["spec.payload.configMapKeyRef.name"],
            "{bad_name}"
        );
    }
}

// ---------------------------------------------------------------- MQTT 5 attributes

#[test]
fn qos_is_zero_or_one() {
    let mut spec = message("t");
    spec.qos = 1;
    assert!(message_errors(&spec).is_empty());
    spec.qos = 2;
    let errors = message_errors(&spec);
    assert_eq!(fields(&errors), ["spec.qos"]);
    assert_eq!(errors[0].value.as_deref(), Some("2"));
}

#[test]
fn content_type_must_not_be_empty() {
    let mut spec = message("t");
    spec.content_type = Some("application/json".into());
    assert!(message_errors(&spec).is_empty());
    spec.content_type = Some(String::new());
    assert_eq!(fields(&message_errors(&spec)), ["spec.contentType"]);
}

#[test]
fn user_property_keys_must_not_be_empty() {
    let mut spec = message("t");
    spec.user_properties = vec![
        UserProperty {
            key: "site".into(),
            value: String::new(),
        },
        UserProperty {
            key: "site".into(),
            value: "berlin".into(),
        },
        UserProperty {
            key: String::new(),
            value: "x".into(),
        },
    ];
    assert_eq!(
        fields(&message_errors(&spec)),
        ["spec.userProperties[2].key"]
    );
}

#[test]
fn correlation_data_is_base64_within_the_mqtt_limit() {
    let mut spec = message("t");
    let encode = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![1u8; n]);
    spec.correlation_data = Some(encode(MAX_CORRELATION_DATA_BYTES));
    assert!(message_errors(&spec).is_empty());
    spec.correlation_data = Some(encode(MAX_CORRELATION_DATA_BYTES + 1));
    assert_eq!(fields(&message_errors(&spec)), ["spec.correlationData"]);
    spec.correlation_data = Some("not base64!".into());
    let errors = message_errors(&spec);
    assert_eq!(fields(&errors), ["spec.correlationData"]);
    assert!(errors[0].rule.starts_with("must be standard base64"));
    spec.correlation_data = Some(String::new());
    assert_eq!(fields(&message_errors(&spec)), ["spec.correlationData"]);
}

#[test]
fn message_expiry_bound() {
    let mut spec = message("t");
    spec.message_expiry = Some(0);
    let errors = message_errors(&spec);
    assert_eq!(fields(&errors), ["spec.messageExpiry"]);
    assert!(errors[0].rule.starts_with("must be at least 1 second"));
    spec.message_expiry = Some(1);
    assert!(message_errors(&spec).is_empty());
    spec.message_expiry = Some(MAX_MESSAGE_EXPIRY_SECONDS);
    assert!(message_errors(&spec).is_empty());
    spec.message_expiry = Some(MAX_MESSAGE_EXPIRY_SECONDS + 1);
    let errors = message_errors(&spec);
    assert_eq!(fields(&errors), ["spec.messageExpiry"]);
    assert_eq!(errors[0].value.as_deref(), Some("604801"));
}

#[test]
fn retained_refresh_interval_is_checked() {
    let mut spec = message("t");
    spec.refresh_interval = "0s".into();
    assert!(message_errors(&spec).is_empty());
    spec.refresh_interval = "10 minutes".into();
    assert_eq!(fields(&message_errors(&spec)), ["spec.refreshInterval"]);
    spec.refresh_interval = "100ms".into();
    assert_eq!(fields(&message_errors(&spec)), ["spec.refreshInterval"]);
}

#[test]
fn all_message_errors_are_collected() {
    let mut spec = message("a/+");
    spec.payload = PayloadSource::default();
    spec.qos = 5;
    spec.content_type = Some(String::new());
    spec.message_expiry = Some(u64::MAX);
    spec.refresh_interval = "later".into();
    let errors = message_errors(&spec);
    assert_eq!(
        fields(&errors),
        [
            "spec.topic",
            "spec.payload",
            "spec.qos",
            "spec.contentType",
            "spec.messageExpiry",
            "spec.refreshInterval"
        ]
    );
}
