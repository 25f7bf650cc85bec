//! Property tests of manifest parsing and validation followed by planning: generated
//! manifests (valid and broken, as YAML streams) are read the way `shadowsync apply`
//! reads them and checked against `tests/invariants/manifest.rs`: nothing panics, every
//! error says something, and whatever validates is planned into a write or a publish
//! the embedded store accepts, after which nothing more is planned. The `manifest`
//! fuzz target checks the same on arbitrary text.

mod invariants;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use invariants::manifest::{check_text, LIMITS};

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["power", "color", "r", "a", "x~y", "p/q", "timestamp"]).prop_map(String::from),
        1 => "\\PC{0,4}",
    ]
}

fn desired() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => (-3i64..300).prop_map(Value::from),
        1 => Just(Value::from(1.5)),
        2 => "[a-z ]{0,40}".prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => prop::collection::vec(prop_oneof![4 => (0i64..9).prop_map(Value::from), 1 => Just(Value::Null)], 0..4)
            .prop_map(Value::Array),
    ];
    let tree = leaf.prop_recursive(7, 48, 4, |inner| {
        prop::collection::vec((key(), inner), 0..4)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    });
    prop_oneof![
        8 => prop::collection::vec((key(), tree), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => Just(json!([1, 2])),
        1 => Just(json!("on")),
    ]
}

fn name(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(valid.to_string()),
        1 => "[a-zA-Z0-9:_$-]{0,3}",
        1 => "[a-z]{120,140}",
        1 => "\\PC{0,6}",
    ]
}

fn thing_shadow() -> impl Strategy<Value = Value> {
    (
        name("kitchen-lamp"),
        prop::option::of(name("config")),
        prop::option::of(desired()),
        prop::sample::select(vec!["5m", "0s", "0", "1h30m", "500ms", "-1s", "5x", ""]),
        prop::sample::select(vec!["Overwrite", "Preserve"]),
    )
        .prop_map(|(thing, shadow, desired, refresh, conflict)| {
            let mut spec = Map::new();
            spec.insert("thingName".into(), json!(thing));
            if let Some(shadow) = shadow {
                spec.insert("shadowName".into(), json!(shadow));
            }
            if let Some(desired) = desired {
                spec.insert("desired".into(), desired);
            }
            spec.insert("refreshInterval".into(), json!(refresh));
            spec.insert("conflictPolicy".into(), json!(conflict));
            json!({
                "apiVersion": "iot.shadowsync.dev/v1alpha1",
                "kind": "ThingShadow",
                "metadata": {"name": "lamp", "namespace": "home"},
                "spec": spec,
            })
        })
}

fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => desired().prop_map(|v| json!({"json": v})),
        2 => "[ -~]{0,70}".prop_map(|t| json!({"text": t})),
        2 => prop::sample::select(vec!["AAEC", "AAEC\n", "!!", "", "aGVsbG8gd29ybGQ="]).prop_map(|b| json!({"base64": b})),
        1 => prop::sample::select(vec!["creds", "Bad_Name", ""]).prop_map(|n| json!({"secretKeyRef": {"name": n, "key": "payload"}})),
        1 => Just(json!({"configMapKeyRef": {"name": "cfg", "key": "a/b"}})),
        1 => Just(json!({"text": "a", "base64": "AAEC"})),
        1 => Just(json!({})),
    ]
}

fn retained_message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            6 => prop::sample::select(vec!["home/lamp/config", "a", "a/b/c/d/e/f/g/h", "a/b/c/d/e/f/g/h/i", "$aws/x", "a/+", "a/#", "a\u{0}b", ""]).prop_map(String::from),
            1 => "\\PC{0,8}",
        ],
        payload(),
        0u8..4,
        prop::option::of(prop::sample::select(vec!["", "text/plain"])),
        prop::option::of(prop::sample::select(vec!["AAEC", "!", ""])),
        prop::option::of(prop::sample::select(vec![0u64, 3600, 604_800, 604_801])),
        prop::collection::vec(("[a-z]{0,2}", "[a-z]{0,2}"), 0..3),
    )
        .prop_map(|(topic, payload, qos, content_type, correlation, expiry, props)| {
            let mut spec = Map::new();
            spec.insert("topic".into(), json!(topic));
            spec.insert("payload".into(), payload);
            spec.insert("qos".into(), json!(qos));
            if let Some(c) = content_type {
                spec.insert("contentType".into(), json!(c));
            }
            if let Some(c) = correlation {
                spec.insert("correlationData".into(), json!(c));
            }
            if let Some(e) = expiry {
                spec.insert("messageExpiry".into(), json!(e));
            }
            let props: Vec<Value> = props.into_iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
            spec.insert("userProperties".into(), Value::Array(props));
            json!({
                "apiVersion": "iot.shadowsync.dev/v1alpha1",
                "kind": "RetainedMessage",
                "metadata": {"name": "cfg"},
                "spec": spec,
            })
        })
}

/// A YAML stream of generated documents, some of them cut or with a byte changed.
fn stream() -> impl Strategy<Value = String> {
    let doc = prop_oneof![thing_shadow(), retained_message()];
    (
        prop::collection::vec(doc, 1..4),
        prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(docs, damage)| {
            let mut text = docs
                .iter()
                .map(|d| serde_yaml::to_string(d).expect("YAML"))
                .collect::<Vec<_>>()
                .join("---\n");
            if let Some((at, byte)) = damage {
                let mut bytes = text.into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = byte;
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn whatever_validates_is_planned_and_accepted(
        limits in prop::sample::select(LIMITS.to_vec()),
        text in stream(),
    ) {
        check_text(&text, &limits);
    }
}

#[test]
fn generated_manifests_are_often_valid_and_often_not() {
    // Guards the strategies: a property over manifests that never validate (or always
    // do) would check little.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut read, mut valid) = (0, 0);
    for _ in 0..300 {
        let text = stream().new_tree(&mut runner).expect("a stream").current();
        let (r, v) = check_text(&text, &LIMITS[0]);
        read += r;
        valid += v;
    }
    assert!(
        valid > read / 10 && valid < read,
        "{valid} of {read} validated"
    );
}
