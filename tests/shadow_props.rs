//! Property tests of the shadow engine against the model of AWS's rules in
//! `tests/invariants/shadow.rs` (the `shadow_engine` fuzz target checks the same).
//! `src/shadow/proptests.rs` covers merge and delta in isolation; these run whole
//! update sequences, including malformed requests, against drawn limits.

mod invariants;

use proptest::prelude::*;
use serde_json::Value;
use shadowsync::dataplane::ShadowLimits;
use shadowsync::shadow::{ShadowRecord, TOMBSTONE_RETENTION_SECS};

use invariants::shadow::{check_delete, check_raw, check_self_merge, check_update, UpdateParts};

const T0: i64 = 1_700_000_000;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c", "timestamp", "", "x~y"]).prop_map(String::from),
        1 => "\\PC{0,3}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-2i64..3).prop_map(Value::from),
        (-2i64..3).prop_map(|n| Value::from(n as f64)),
        any::<u64>().prop_map(Value::from),
        "[xy]{0,3}".prop_map(Value::from),
    ]
}

fn object_of(inner: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), inner), 0..4)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
}

/// A request section's content: nested objects with nulls (removals), arrays, and now
/// and then a null inside an array.
fn patch() -> impl Strategy<Value = Value> {
    let array = prop::collection::vec(prop_oneof![8 => scalar(), 1 => Just(Value::Null)], 0..3)
        .prop_map(Value::Array);
    let leaf = prop_oneof![2 => Just(Value::Null), 6 => scalar(), 2 => array];
    object_of(leaf.prop_recursive(7, 40, 4, object_of))
}

fn section() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => scalar().prop_map(Some),
        6 => patch().prop_map(Some),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Update(Box<UpdateParts>, Option<u64>),
    Raw(Vec<u8>),
    Delete,
    Wait(i64),
    SelfMerge(Value),
}

fn op() -> impl Strategy<Value = Op> {
    let version = prop_oneof![
        2 => Just(None),
        // Resolved against the base version when applied: 0 = current, 1 = next.
        2 => (0u64..2).prop_map(|d| Some(Value::from(d))),
        1 => scalar().prop_map(Some),
    ];
    let token = prop_oneof![
        3 => Just(None),
        1 => (60usize..70).prop_map(|n| Some(Value::String("t".repeat(n)))),
        1 => scalar().prop_map(Some),
    ];
    let update = (
        section(),
        section(),
        version,
        token,
        prop::bool::weighted(0.05),
    )
        .prop_map(|(desired, reported, version, client_token, stray_delta)| {
            let offset = version.as_ref().and_then(Value::as_u64).filter(|d| *d < 2);
            let parts = UpdateParts {
                desired,
                reported,
                version: if offset.is_some() { None } else { version },
                client_token,
                stray_delta,
            };
            Op::Update(Box::new(parts), offset)
        });
    prop_oneof![
        8 => update,
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Op::Raw),
        1 => Just(Op::Delete),
        1 => (0..TOMBSTONE_RETENTION_SECS + 10).prop_map(Op::Wait),
        1 => patch().prop_map(Op::SelfMerge),
    ]
}

fn limits() -> impl Strategy<Value = ShadowLimits> {
    (
        prop::sample::select(vec![48usize, 128, 400, 8 * 1024]),
        1usize..8,
    )
        .prop_map(|(max_document_bytes, max_depth)| ShadowLimits {
            max_document_bytes,
            max_depth,
            max_payload_bytes: 128 * 1024,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn update_sequences_follow_the_model(limits in limits(), ops in prop::collection::vec(op(), 1..12)) {
        let mut record = ShadowRecord::absent();
        let mut now = T0;
        for op in ops {
            record = match op {
                Op::Update(mut parts, offset) => {
                    if let Some(offset) = offset {
                        let base = invariants::shadow::base_version(&record, now);
                        parts.version = Some(Value::from(base + offset));
                    }
                    check_update(&record, &parts, &limits, now)
                }
                Op::Raw(bytes) => check_raw(&record, &bytes, &limits, now),
                Op::Delete => check_delete(&record, now),
                Op::Wait(secs) => {
                    now += secs;
                    record
                }
                Op::SelfMerge(patch) => {
                    if let Value::Object(patch) = patch {
                        check_self_merge(&record, &patch);
                    }
                    record
                }
            };
        }
    }
}

#[test]
fn generators_reach_every_refusal() {
    // Guards the strategies above: without these cases the properties would pass
    // without ever meeting the limits.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut too_deep, mut null_in_array, mut not_object) = (false, false, false);
    for _ in 0..2000 {
        let Ok(tree) = section().new_tree(&mut runner) else {
            continue;
        };
        let Some(value) = tree.current() else {
            continue;
        };
        too_deep |= invariants::json::depth(&value) > 3;
        null_in_array |= invariants::json::null_in_array(&value);
        not_object |= !value.is_object() && !value.is_null();
    }
    assert!(
        too_deep && null_in_array && not_object,
        "{too_deep} {null_in_array} {not_object}"
    );
}
