//! What validation promises: manifest text, read like `shadowsync apply` reads it
//! (`shadowsync::cli::manifest`), validated (`shadowsync::api::validate`) and planned
//! (`shadowsync::planner`):
//! - nothing panics, and every error says something;
//! - a ThingShadow whose spec validates plans a write that the embedded store accepts
//!   (to an absent shadow, and with a `version` to an existing empty one), after which
//!   the shadow's desired section holds exactly the spec's leaves, and planning again
//!   against it finds nothing to write;
//! - a RetainedMessage whose spec validates yields a Publish request the embedded store
//!   accepts, reads back the same payload and qos, and then plans no further publish.

use serde_json::{json, Map, Value};
use shadowsync::api::validate::{validate_retained_message, validate_thing_shadow};
use shadowsync::api::{
    ConflictPolicy, RetainedMessageSpec, RetainedMessageStatus, ThingShadowSpec,
};
use shadowsync::cli::manifest::{parse_documents, Loaded, Resource};
use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::{DataPlane, ShadowLimits};
use shadowsync::planner::paths::leaves;
use shadowsync::planner::retained::{message_sha256, plan_retained, publish_request, RetainedPlan};
use shadowsync::planner::shadow::{desired_sha256, plan_shadow, Ownership, ShadowPlan};
use shadowsync::shadow::{values_equal, ShadowRecord};

const NOW: i64 = 1_700_000_000;

/// Limits to validate against: AWS's defaults, and small ones that short inputs reach.
pub const LIMITS: [ShadowLimits; 4] = [
    ShadowLimits {
        max_document_bytes: 8 * 1024,
        max_depth: 6,
        max_payload_bytes: 128 * 1024,
    },
    ShadowLimits {
        max_document_bytes: 256,
        max_depth: 3,
        max_payload_bytes: 64,
    },
    ShadowLimits {
        max_document_bytes: 64,
        max_depth: 1,
        max_payload_bytes: 8,
    },
    ShadowLimits {
        max_document_bytes: 1024,
        max_depth: 6,
        max_payload_bytes: 512,
    },
];

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
    }
    RT.with(|rt| rt.block_on(future))
}

/// Reads `text` as a manifest stream and checks every resource in it; returns how many
/// resources were read and how many of them validated.
pub fn check_text(text: &str, limits: &ShadowLimits) -> (usize, usize) {
    let mut loaded = Loaded::default();
    parse_documents("input.yaml", text, &mut loaded);
    for error in &loaded.errors {
        assert!(
            !error.message.is_empty(),
            "an empty error from {}",
            error.source
        );
    }
    let mut valid = 0;
    for manifest in &loaded.manifests {
        let ok = match &manifest.resource {
            Resource::ThingShadow(r) => thing_shadow(&r.spec, limits),
            Resource::RetainedMessage(r) => retained_message(&r.spec, limits),
        };
        valid += usize::from(ok);
    }
    (loaded.manifests.len(), valid)
}

/// A ThingShadow spec: refused with reasons, or planned, written and read back.
pub fn thing_shadow(spec: &ThingShadowSpec, limits: &ShadowLimits) -> bool {
    if let Err(errors) = validate_thing_shadow(spec, limits) {
        assert!(!errors.is_empty());
        for e in &errors {
            assert!(e.field.starts_with("spec."), "{e}");
        }
        return false;
    }
    let desired = match &spec.desired {
        Some(Value::Object(m)) => m.clone(),
        None => Map::new(),
        Some(other) => panic!("validated a non-object desired: {other}"),
    };
    let wanted: Vec<(String, Value)> = leaves(&desired)
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(p, v)| (p, v.clone()))
        .collect();

    let plan = plan_shadow(spec, None, &Ownership::default(), false);
    let update = match plan {
        ShadowPlan::InSync => {
            assert!(wanted.is_empty(), "nothing planned for {wanted:?}");
            return true;
        }
        ShadowPlan::Preserve { .. } => panic!("Preserve without an observed shadow"),
        ShadowPlan::Write {
            update,
            changes,
            out_of_band,
        } => {
            assert!(out_of_band.is_empty(), "an out-of-band edit with no shadow");
            assert_eq!(changes.len(), wanted.len(), "changes {changes:?}");
            update
        }
    };
    assert!(
        update
            .pointer("/state/desired")
            .is_some_and(Value::is_object),
        "malformed update {update}"
    );

    // To an absent shadow (no version), as the first write of a sync pass.
    let created = ShadowRecord::absent()
        .apply_update(update.to_string().as_bytes(), limits, NOW)
        .unwrap_or_else(|e| panic!("the store refused a validated spec: {e}: {update}"));
    check_holds(&created.record, &wanted, &update);

    // To an existing shadow with nothing in it, carrying the version read.
    let emptied = ShadowRecord::absent()
        .apply_update(br#"{"state":{"reported":{"a":1}}}"#, limits, NOW)
        .and_then(|u| {
            u.record
                .apply_update(br#"{"state":{"reported":null}}"#, limits, NOW)
        })
        .expect("an empty shadow");
    let mut versioned = update.clone();
    versioned["version"] = json!(emptied.record.version);
    let written = emptied
        .record
        .apply_update(versioned.to_string().as_bytes(), limits, NOW)
        .unwrap_or_else(|e| panic!("the store refused a validated spec: {e}: {versioned}"));
    check_holds(&written.record, &wanted, &versioned);

    // Read back, nothing more to write.
    let doc = written.record.document(NOW + 1);
    let ownership = Ownership {
        managed_paths: wanted.iter().map(|(p, _)| p.clone()).collect(),
        applied_desired_sha256: Some(desired_sha256(&desired)),
        last_write_timestamp: Some(NOW),
    };
    let again = plan_shadow(spec, Some(&doc), &ownership, false);
    assert_eq!(
        again,
        ShadowPlan::InSync,
        "a second write planned after {update}"
    );
    true
}

/// The stored desired section holds every wanted leaf and nothing else.
fn check_holds(record: &ShadowRecord, wanted: &[(String, Value)], update: &Value) {
    let stored = leaves(&record.desired);
    assert_eq!(
        stored.len(),
        wanted.len(),
        "stored {:?} for {update}",
        record.desired
    );
    for ((path, value), (want_path, want)) in stored.iter().zip(wanted) {
        assert_eq!(path, want_path, "for {update}");
        assert!(
            values_equal(value, want),
            "{path}: stored {value}, wanted {want}"
        );
    }
}

/// A RetainedMessage spec: refused with reasons, or published and read back.
pub fn retained_message(spec: &RetainedMessageSpec, limits: &ShadowLimits) -> bool {
    if let Err(errors) = validate_retained_message(spec, limits) {
        assert!(!errors.is_empty());
        return false;
    }
    let referenced: &[u8] = b"from a Secret";
    let request = publish_request(spec, Some(referenced))
        .unwrap_or_else(|e| panic!("a validated spec has no Publish request: {e}"));
    assert!(request.retain);
    assert!(!request.payload.is_empty());
    let store = EmbeddedDataPlane::in_memory()
        .with_limits(ShadowLimits {
            // A referenced payload is checked when it is read, not by validation.
            max_payload_bytes: limits.max_payload_bytes.max(referenced.len()),
            ..*limits
        })
        .with_clock(|| NOW * 1000);
    let observed = block_on(async {
        store
            .publish(&request)
            .await
            .unwrap_or_else(|e| panic!("the store refused a validated spec: {e}: {request:?}"));
        store.get_retained_message(&request.topic).await
    });
    let status = RetainedMessageStatus {
        applied_sha256: Some(message_sha256(&request)),
        last_publish_time: Some("2023-11-14T22:13:20Z".to_string()),
        ..RetainedMessageStatus::default()
    };
    // `messageExpiry: 0` (which would expire on arrival) does not validate, so the
    // message just published is there.
    let observed = observed.unwrap_or_else(|e| panic!("the message just published: {e}"));
    assert_eq!(observed.payload, request.payload);
    assert_eq!(observed.qos, request.qos);
    assert_eq!(observed.user_properties, request.user_properties);
    let plan = plan_retained(
        &request,
        Some(&observed),
        &status,
        ConflictPolicy::Overwrite,
        false,
        NOW * 1000,
    );
    assert_eq!(plan, RetainedPlan::InSync, "a second publish planned");
    true
}
