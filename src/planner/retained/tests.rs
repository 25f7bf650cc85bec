use serde_json::json;

use super::*;
use crate::api::{KeyRef, ManagementPolicy, PayloadSource, RetainedDeletionPolicy, UserProperty};

const NOW: i64 = 1_700_000_000_000;

fn spec(payload: PayloadSource) -> RetainedMessageSpec {
    RetainedMessageSpec {
        topic: "home/lamp/config".into(),
        payload,
        qos: 1,
        content_type: None,
        user_properties: vec![
            UserProperty {
                key: "site".into(),
                value: "berlin".into(),
            },
            UserProperty {
                key: "site".into(),
                value: "paris".into(),
            },
        ],
        response_topic: None,
        correlation_data: None,
        message_expiry: None,
        management_policy: ManagementPolicy::Manage,
        deletion_policy: RetainedDeletionPolicy::Delete,
        conflict_policy: ConflictPolicy::Overwrite,
        refresh_interval: "10m".into(),
    }
}

fn text(t: &str) -> PayloadSource {
    PayloadSource {
        text: Some(t.into()),
        ..Default::default()
    }
}

fn request(t: &str) -> PublishRequest {
    publish_request(&spec(text(t)), None).expect("valid spec")
}

/// What GetRetainedMessage returns after `req` was published at `at_ms`.
fn stored(req: &PublishRequest, at_ms: i64) -> RetainedMessageData {
    RetainedMessageData {
        topic: req.topic.clone(),
        payload: req.payload.clone(),
        qos: req.qos,
        last_modified_time: at_ms,
        user_properties: req.user_properties.clone(),
    }
}

/// Status right after `req` was published at `at_ms`.
fn published(req: &PublishRequest, at_ms: i64) -> RetainedMessageStatus {
    RetainedMessageStatus {
        applied_sha256: Some(message_sha256(req)),
        last_publish_time: rfc3339_from_millis(at_ms),
        publish_count: 1,
        ..Default::default()
    }
}

fn plan(
    req: &PublishRequest,
    observed: Option<&RetainedMessageData>,
    status: &RetainedMessageStatus,
    policy: ConflictPolicy,
    force: bool,
) -> RetainedPlan {
    plan_retained(req, observed, status, policy, force, NOW)
}

#[test]
fn json_payload_is_compact_sorted_and_labelled() {
    let s = spec(PayloadSource {
        json: Some(json!({"z": 1, "a": {"y": [1, 2], "b": "x"}})),
        ..Default::default()
    });
    let req = publish_request(&s, None).expect("valid");
    assert_eq!(&req.payload[..], br#"{"a":{"b":"x","y":[1,2]},"z":1}"#);
    assert_eq!(req.payload_format_indicator, Some(PayloadFormat::Utf8Data));
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
    let custom = RetainedMessageSpec {
        content_type: Some("application/vnd.lamp+json".into()),
        ..s
    };
    let req = publish_request(&custom, None).expect("valid");
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/vnd.lamp+json")
    );
}

#[test]
fn text_payload_is_utf8_without_a_default_content_type() {
    let req = request("héllo");
    assert_eq!(&req.payload[..], "héllo".as_bytes());
    assert_eq!(req.payload_format_indicator, Some(PayloadFormat::Utf8Data));
    assert_eq!(req.content_type, None);
}

#[test]
fn base64_payload_is_decoded_as_bytes() {
    let s = spec(PayloadSource {
        base64: Some("AAEC\n/w==".into()),
        ..Default::default()
    });
    let req = publish_request(&s, None).expect("valid");
    assert_eq!(&req.payload[..], &[0u8, 1, 2, 255][..]);
    assert_eq!(
        req.payload_format_indicator,
        Some(PayloadFormat::UnspecifiedBytes)
    );
    let bad = spec(PayloadSource {
        base64: Some("not base64!".into()),
        ..Default::default()
    });
    let err = publish_request(&bad, None).expect_err("invalid base64");
    assert!(err.starts_with("payload.base64"), "{err}");
}

#[test]
fn referenced_payloads_use_the_resolved_bytes() {
    let secret = spec(PayloadSource {
        secret_key_ref: Some(KeyRef {
            name: "lamp".into(),
            key: "token".into(),
        }),
        ..Default::default()
    });
    let req = publish_request(&secret, Some(b"s3cret")).expect("valid");
    assert_eq!(&req.payload[..], b"s3cret");
    assert_eq!(req.payload_format_indicator, Some(PayloadFormat::Utf8Data));
    let req = publish_request(&secret, Some(&[0xff, 0x00])).expect("valid");
    assert_eq!(
        req.payload_format_indicator,
        Some(PayloadFormat::UnspecifiedBytes)
    );
    let err = publish_request(&secret, None).expect_err("unresolved");
    assert!(err.contains("secretKeyRef"), "{err}");

    let config_map = spec(PayloadSource {
        config_map_key_ref: Some(KeyRef {
            name: "lamp".into(),
            key: "cfg".into(),
        }),
        ..Default::default()
    });
    let err = publish_request(&config_map, None).expect_err("unresolved");
    assert!(err.contains("configMapKeyRef"), "{err}");
}

#[test]
fn exactly_one_payload_source_is_required() {
    let none = publish_request(&spec(PayloadSource::default()), None).expect_err("none");
    assert!(none.contains("found 0"), "{none}");
    let two = PayloadSource {
        text: Some("a".into()),
        base64: Some("AA==".into()),
        ..Default::default()
    };
    let err = publish_request(&spec(two), None).expect_err("two");
    assert!(err.contains("found 2"), "{err}");
}

#[test]
fn an_empty_payload_is_refused_because_it_would_delete_the_message() {
    let err = publish_request(&spec(text("")), None).expect_err("empty");
    assert!(err.contains("empty"), "{err}");
    let secret = spec(PayloadSource {
        secret_key_ref: Some(KeyRef::default()),
        ..Default::default()
    });
    assert!(publish_request(&secret, Some(b"")).is_err());
}

#[test]
fn invalid_attributes_are_refused() {
    let qos = RetainedMessageSpec {
        qos: 2,
        ..spec(text("x"))
    };
    assert!(publish_request(&qos, None)
        .expect_err("qos")
        .contains("qos"));
    let corr = RetainedMessageSpec {
        correlation_data: Some("%%%".into()),
        ..spec(text("x"))
    };
    assert!(publish_request(&corr, None)
        .expect_err("corr")
        .contains("correlationData"));
    let expiry = RetainedMessageSpec {
        message_expiry: Some(u64::MAX),
        ..spec(text("x"))
    };
    assert!(publish_request(&expiry, None)
        .expect_err("expiry")
        .contains("messageExpiry"));
}

#[test]
fn attributes_are_copied_and_retain_is_set() {
    let s = RetainedMessageSpec {
        qos: 0,
        content_type: Some("text/plain".into()),
        response_topic: Some("home/lamp/replies".into()),
        correlation_data: Some("AQI=".into()),
        message_expiry: Some(3600),
        ..spec(text("on"))
    };
    let req = publish_request(&s, None).expect("valid");
    assert_eq!(
        req,
        PublishRequest {
            topic: "home/lamp/config".into(),
            payload: Bytes::from_static(b"on"),
            qos: 0,
            retain: true,
            content_type: Some("text/plain".into()),
            response_topic: Some("home/lamp/replies".into()),
            message_expiry: Some(3600),
            user_properties: vec![
                ("site".into(), "berlin".into()),
                ("site".into(), "paris".into()),
            ],
            payload_format_indicator: Some(PayloadFormat::Utf8Data),
            correlation_data: Some("AQI=".into()),
        }
    );
}

#[test]
fn message_hash_covers_payload_and_every_attribute() {
    let base = request("on");
    let h = message_sha256(&base);
    assert_eq!(h, message_sha256(&base.clone()));
    assert_eq!(h.len(), 64);
    let variants = [
        PublishRequest {
            payload: Bytes::from_static(b"off"),
            ..base.clone()
        },
        PublishRequest {
            qos: 0,
            ..base.clone()
        },
        PublishRequest {
            content_type: Some("text/plain".into()),
            ..base.clone()
        },
        PublishRequest {
            response_topic: Some("r".into()),
            ..base.clone()
        },
        PublishRequest {
            message_expiry: Some(60),
            ..base.clone()
        },
        PublishRequest {
            payload_format_indicator: Some(PayloadFormat::UnspecifiedBytes),
            ..base.clone()
        },
        PublishRequest {
            correlation_data: Some("AQI=".into()),
            ..base.clone()
        },
        PublishRequest {
            user_properties: base.user_properties.iter().rev().cloned().collect(),
            ..base.clone()
        },
        PublishRequest {
            user_properties: vec![],
            ..base.clone()
        },
        PublishRequest {
            topic: "other".into(),
            ..base.clone()
        },
        // Field boundaries matter: moving bytes between key and value is a change.
        PublishRequest {
            user_properties: vec![
                ("sitebe".into(), "rlin".into()),
                ("site".into(), "paris".into()),
            ],
            ..base.clone()
        },
    ];
    for v in &variants {
        assert_ne!(message_sha256(v), h, "{v:?}");
    }
}

#[test]
fn first_publish_when_nothing_is_retained() {
    let req = request("on");
    let status = RetainedMessageStatus::default();
    assert_eq!(
        plan(&req, None, &status, ConflictPolicy::Preserve, false),
        RetainedPlan::Publish {
            reason: PublishReason::Create,
            out_of_band: None
        }
    );
}

#[test]
fn nothing_is_published_when_in_sync_even_on_a_forced_sync() {
    let req = request("on");
    let status = published(&req, NOW - 60_000);
    let observed = stored(&req, NOW - 60_000 + 150);
    for force in [false, true] {
        assert_eq!(
            plan(
                &req,
                Some(&observed),
                &status,
                ConflictPolicy::Overwrite,
                force
            ),
            RetainedPlan::InSync
        );
    }
}

#[test]
fn a_payload_change_in_the_spec_is_an_update() {
    let old = request("on");
    let new = request("off");
    let status = published(&old, NOW - 60_000);
    let observed = stored(&old, NOW - 60_000 + 150);
    assert_eq!(
        plan(
            &new,
            Some(&observed),
            &status,
            ConflictPolicy::Preserve,
            false
        ),
        RetainedPlan::Publish {
            reason: PublishReason::Update,
            out_of_band: None
        }
    );
}

#[test]
fn an_attribute_change_aws_does_not_return_is_an_update() {
    let old = request("on");
    let new = PublishRequest {
        message_expiry: Some(3600),
        content_type: Some("text/plain".into()),
        ..old.clone()
    };
    let status = published(&old, NOW - 60_000);
    let observed = stored(&old, NOW - 60_000);
    assert_eq!(
        plan(
            &new,
            Some(&observed),
            &status,
            ConflictPolicy::Overwrite,
            false
        ),
        RetainedPlan::Publish {
            reason: PublishReason::Update,
            out_of_band: None
        }
    );
}

#[test]
fn adopting_an_identical_message_publishes_nothing() {
    let req = request("on");
    let observed = stored(&req, NOW - 3_600_000);
    assert_eq!(
        plan(
            &req,
            Some(&observed),
            &RetainedMessageStatus::default(),
            ConflictPolicy::Overwrite,
            false
        ),
        RetainedPlan::InSync
    );
}

#[test]
fn adopting_a_message_whose_spec_sets_unreadable_attributes_publishes_once() {
    let mut req = request("on");
    req.message_expiry = Some(3600);
    let observed = stored(&req, NOW - 3_600_000);
    assert_eq!(
        plan(
            &req,
            Some(&observed),
            &RetainedMessageStatus::default(),
            ConflictPolicy::Overwrite,
            false
        ),
        RetainedPlan::Publish {
            reason: PublishReason::Create,
            out_of_band: None
        }
    );
}

#[test]
fn someone_elses_publish_is_overwritten_and_described_without_payload_bytes() {
    let req = request("on-secret-value");
    let status = published(&req, NOW - 60_000);
    let theirs = RetainedMessageData {
        payload: Bytes::from_static(b"their-secret-value"),
        qos: 0,
        user_properties: vec![],
        ..stored(&req, NOW - 1_000)
    };
    let RetainedPlan::Publish {
        reason,
        out_of_band: Some(detail),
    } = plan(
        &req,
        Some(&theirs),
        &status,
        ConflictPolicy::Overwrite,
        false,
    )
    else {
        panic!("expected a publish with an out-of-band note");
    };
    assert_eq!(reason, PublishReason::DriftCorrection);
    assert!(!detail.contains("secret"), "{detail}");
    assert!(detail.contains("18 bytes, sha256 "), "{detail}");
    assert!(detail.contains("spec: 15 bytes, sha256 "), "{detail}");
    assert!(detail.contains("qos 0 (spec: 1)"), "{detail}");
    assert!(
        detail.contains("0 user properties differing from the spec's 2"),
        "{detail}"
    );
    assert!(detail.contains("2023-11-14T22:13:19.000Z"), "{detail}");
}

#[test]
fn differing_qos_or_property_order_alone_is_drift() {
    let req = request("on");
    let status = published(&req, NOW - 60_000);
    let qos = RetainedMessageData {
        qos: 0,
        ..stored(&req, NOW - 60_000)
    };
    let order = RetainedMessageData {
        user_properties: req.user_properties.iter().rev().cloned().collect(),
        ..stored(&req, NOW - 60_000)
    };
    for observed in [qos, order] {
        assert!(matches!(
            plan(
                &req,
                Some(&observed),
                &status,
                ConflictPolicy::Overwrite,
                false
            ),
            RetainedPlan::Publish {
                reason: PublishReason::DriftCorrection,
                out_of_band: Some(_)
            }
        ));
    }
}

#[test]
fn someone_elses_publish_under_preserve_stalls_until_forced() {
    let req = request("on");
    let status = published(&req, NOW - 60_000);
    let theirs = RetainedMessageData {
        payload: Bytes::from_static(b"off"),
        ..stored(&req, NOW - 1_000)
    };
    let RetainedPlan::Preserve { detail } = plan(
        &req,
        Some(&theirs),
        &status,
        ConflictPolicy::Preserve,
        false,
    ) else {
        panic!("expected Preserve");
    };
    assert!(detail.contains("replaced by someone else"), "{detail}");
    assert!(matches!(
        plan(&req, Some(&theirs), &status, ConflictPolicy::Preserve, true),
        RetainedPlan::Publish {
            reason: PublishReason::DriftCorrection,
            out_of_band: Some(_)
        }
    ));
}

#[test]
fn a_deleted_message_is_an_out_of_band_edit() {
    let req = request("on");
    let status = published(&req, NOW - 60_000);
    let RetainedPlan::Publish {
        reason,
        out_of_band: Some(detail),
    } = plan(&req, None, &status, ConflictPolicy::Overwrite, false)
    else {
        panic!("expected a publish");
    };
    assert_eq!(reason, PublishReason::DriftCorrection);
    assert!(detail.contains("deleted"), "{detail}");
    assert!(matches!(
        plan(&req, None, &status, ConflictPolicy::Preserve, false),
        RetainedPlan::Preserve { .. }
    ));
}

#[test]
fn an_expired_message_is_not_republished_until_the_spec_changes() {
    let req = PublishRequest {
        message_expiry: Some(60),
        ..request("on")
    };
    let status = published(&req, NOW - 61_000);
    assert_eq!(
        plan(&req, None, &status, ConflictPolicy::Overwrite, false),
        RetainedPlan::Expired
    );
    assert_eq!(
        plan(&req, None, &status, ConflictPolicy::Overwrite, true),
        RetainedPlan::Expired
    );
    // Gone well before its expiry: someone deleted it.
    let early = published(&req, NOW - 10_000);
    assert!(matches!(
        plan(&req, None, &early, ConflictPolicy::Overwrite, false),
        RetainedPlan::Publish {
            reason: PublishReason::DriftCorrection,
            ..
        }
    ));
    // A new spec publishes again.
    let changed = PublishRequest {
        payload: Bytes::from_static(b"off"),
        ..req.clone()
    };
    assert_eq!(
        plan(&changed, None, &status, ConflictPolicy::Overwrite, false),
        RetainedPlan::Publish {
            reason: PublishReason::Update,
            out_of_band: None
        }
    );
    // Without an expiry, absence is never "expired".
    let plain = request("on");
    assert!(matches!(
        plan(
            &plain,
            None,
            &published(&plain, NOW - 999_999_000),
            ConflictPolicy::Overwrite,
            false
        ),
        RetainedPlan::Publish { .. }
    ));
}

#[test]
fn a_spec_change_racing_someone_elses_publish_is_out_of_band() {
    let old = request("on");
    let new = request("dim");
    let status = published(&old, NOW - 60_000);
    let theirs = RetainedMessageData {
        payload: Bytes::from_static(b"off"),
        ..stored(&old, NOW - 30_000)
    };
    assert!(matches!(
        plan(
            &new,
            Some(&theirs),
            &status,
            ConflictPolicy::Preserve,
            false
        ),
        RetainedPlan::Preserve { .. }
    ));
    assert!(matches!(
        plan(
            &new,
            Some(&theirs),
            &status,
            ConflictPolicy::Overwrite,
            false
        ),
        RetainedPlan::Publish {
            reason: PublishReason::Update,
            out_of_band: Some(_)
        }
    ));
}

#[test]
fn our_own_publish_within_clock_skew_is_not_someone_elses() {
    let old = request("on");
    let new = request("dim");
    // Status written with second precision; the broker stamped 900 ms later.
    let status = RetainedMessageStatus {
        last_publish_time: Some("2023-11-14T22:12:20Z".into()),
        ..published(&old, 0)
    };
    let ours = stored(&old, NOW - 60_000 + 900);
    assert_eq!(
        plan(&new, Some(&ours), &status, ConflictPolicy::Preserve, false),
        RetainedPlan::Publish {
            reason: PublishReason::Update,
            out_of_band: None
        }
    );
}

#[test]
fn reasons_have_stable_names() {
    assert_eq!(PublishReason::Create.as_str(), "Create");
    assert_eq!(PublishReason::Update.as_str(), "Update");
    assert_eq!(PublishReason::DriftCorrection.as_str(), "DriftCorrection");
}
