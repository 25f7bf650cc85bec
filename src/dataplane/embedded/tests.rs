use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::dataplane::{DataPlane, ErrorKind, PublishRequest, ShadowLimits};
use crate::shadow::TOMBSTONE_RETENTION_SECS;

const T0_MS: i64 = 1_700_000_000_123;
const T0: i64 = T0_MS / 1000;

/// A clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    fn new() -> Self {
        Self(Arc::new(AtomicI64::new(T0_MS)))
    }
    fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    fn source(&self) -> impl Fn() -> i64 + Send + Sync + 'static {
        let inner = self.0.clone();
        move || inner.load(Ordering::SeqCst)
    }
}

fn store() -> (EmbeddedDataPlane, ManualClock) {
    let clock = ManualClock::new();
    (
        EmbeddedDataPlane::in_memory().with_clock(clock.source()),
        clock,
    )
}

fn body(value: Value) -> Bytes {
    Bytes::from(value.to_string())
}

async fn update(
    dp: &EmbeddedDataPlane,
    thing: &str,
    shadow: Option<&str>,
    request: Value,
) -> ShadowDocument {
    match dp.update_thing_shadow(thing, shadow, body(request)).await {
        Ok(doc) => doc,
        Err(e) => panic!("update of {thing}/{shadow:?} refused: {e}"),
    }
}

fn kind<T: std::fmt::Debug>(result: Result<T, DataPlaneError>) -> ErrorKind {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.kind,
    }
}

fn retained(topic: &str, payload: &[u8]) -> PublishRequest {
    PublishRequest {
        topic: topic.to_string(),
        payload: Bytes::copy_from_slice(payload),
        qos: 1,
        retain: true,
        ..PublishRequest::default()
    }
}

// ---- shadows ----

#[tokio::test]
async fn update_then_get_returns_the_document() {
    let (dp, clock) = store();
    let response = update(
        &dp,
        "lamp",
        None,
        json!({"state":{"desired":{"power":"on","color":{"r":1}}},"clientToken":"c1"}),
    )
    .await;
    assert_eq!(response.version, 1);
    assert_eq!(response.timestamp, T0);
    assert_eq!(response.client_token.as_deref(), Some("c1"));
    assert_eq!(
        response.metadata.desired,
        Some(json!({"power":{"timestamp":T0},"color":{"r":{"timestamp":T0}}}))
    );

    clock.advance_ms(5_000);
    update(
        &dp,
        "lamp",
        None,
        json!({"state":{"reported":{"power":"off","color":{"r":1}}}}),
    )
    .await;
    clock.advance_ms(1_000);
    let doc = dp.get_thing_shadow("lamp", None).await.expect("exists");
    assert_eq!(doc.version, 2);
    assert_eq!(doc.timestamp, T0 + 6);
    assert_eq!(
        doc.state.desired,
        Some(json!({"power":"on","color":{"r":1}}))
    );
    assert_eq!(
        doc.state.reported,
        Some(json!({"power":"off","color":{"r":1}}))
    );
    assert_eq!(doc.state.delta, Some(json!({"power":"on"})));
    assert_eq!(
        doc.metadata.reported,
        Some(json!({"power":{"timestamp":T0 + 5},"color":{"r":{"timestamp":T0 + 5}}}))
    );
}

#[tokio::test]
async fn a_missing_shadow_is_not_found_with_aws_wording() {
    let (dp, _) = store();
    let e = dp.get_thing_shadow("lamp", None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceNotFound);
    assert_eq!(e.message, "No shadow exists with name: 'lamp'");
    let e = dp.get_thing_shadow("lamp", Some("cfg")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceNotFound);
    assert_eq!(e.message, "No shadow exists with name: 'lamp~cfg'");
    let e = dp
        .delete_thing_shadow("lamp", Some("cfg"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceNotFound);
}

#[tokio::test]
async fn classic_and_named_shadows_are_independent() {
    let (dp, _) = store();
    update(&dp, "lamp", None, json!({"state":{"desired":{"a":1}}})).await;
    assert_eq!(
        kind(dp.get_thing_shadow("lamp", Some("cfg")).await),
        ErrorKind::ResourceNotFound
    );
    for _ in 0..3 {
        update(
            &dp,
            "lamp",
            Some("cfg"),
            json!({"state":{"desired":{"b":2}}}),
        )
        .await;
    }
    let classic = dp.get_thing_shadow("lamp", None).await.expect("classic");
    let named = dp
        .get_thing_shadow("lamp", Some("cfg"))
        .await
        .expect("named");
    assert_eq!((classic.version, named.version), (1, 3));
    assert_eq!(classic.state.desired, Some(json!({"a":1})));
    assert_eq!(named.state.desired, Some(json!({"b":2})));
    // Another thing with a name that shares a prefix does not see them.
    assert_eq!(
        kind(dp.get_thing_shadow("lamp2", None).await),
        ErrorKind::ResourceNotFound
    );
    dp.delete_thing_shadow("lamp", None).await.expect("deleted");
    assert!(dp.get_thing_shadow("lamp", Some("cfg")).await.is_ok());
}

#[tokio::test]
async fn delete_returns_the_version_and_recreation_continues() {
    let (dp, clock) = store();
    for i in 0..4 {
        update(
            &dp,
            "lamp",
            Some("cfg"),
            json!({"state":{"reported":{"i":i}}}),
        )
        .await;
    }
    clock.advance_ms(2_000);
    let deleted = dp
        .delete_thing_shadow("lamp", Some("cfg"))
        .await
        .expect("deleted");
    assert_eq!(
        deleted,
        ShadowDeleted {
            version: 4,
            timestamp: T0 + 2
        }
    );
    assert_eq!(
        kind(dp.get_thing_shadow("lamp", Some("cfg")).await),
        ErrorKind::ResourceNotFound
    );
    assert_eq!(
        kind(dp.delete_thing_shadow("lamp", Some("cfg")).await),
        ErrorKind::ResourceNotFound
    );
    // Re-created: the version continues and the old content is gone.
    let recreated = update(
        &dp,
        "lamp",
        Some("cfg"),
        json!({"state":{"desired":{"x":1}}}),
    )
    .await;
    assert_eq!(recreated.version, 5);
    let doc = dp
        .get_thing_shadow("lamp", Some("cfg"))
        .await
        .expect("exists");
    assert_eq!(doc.state.reported, None);
    assert_eq!(doc.state.desired, Some(json!({"x":1})));
}

#[tokio::test]
async fn a_deleted_shadow_restarts_after_its_tombstone_expires() {
    let (dp, clock) = store();
    update(&dp, "lamp", None, json!({"state":{"desired":{"a":1}}})).await;
    update(&dp, "lamp", None, json!({"state":{"desired":{"a":2}}})).await;
    dp.delete_thing_shadow("lamp", None).await.expect("deleted");
    clock.advance_ms(TOMBSTONE_RETENTION_SECS * 1000);
    let recreated = update(&dp, "lamp", None, json!({"state":{"desired":{"a":1}}})).await;
    assert_eq!(recreated.version, 1);
}

#[tokio::test]
async fn version_conflicts_and_refusals_change_nothing() {
    let (dp, _) = store();
    let limits = ShadowLimits {
        max_document_bytes: 200,
        ..ShadowLimits::default()
    };
    let dp = dp.with_limits(limits);
    assert_eq!(dp.limits(), limits);
    let a = "y".repeat(100);
    update(&dp, "lamp", None, json!({"state":{"desired":{"a":a}}})).await;
    let stale = dp
        .update_thing_shadow(
            "lamp",
            None,
            body(json!({"state":{"desired":{"a":2}},"version":7})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (stale.kind, stale.message.as_str()),
        (ErrorKind::Conflict, "Version conflict")
    );
    let bad = dp
        .update_thing_shadow("lamp", None, Bytes::from_static(b"{nope"))
        .await
        .unwrap_err();
    assert_eq!(
        (bad.kind, bad.message.as_str()),
        (ErrorKind::InvalidRequest, "Payload contains invalid json")
    );
    let big = dp
        .update_thing_shadow(
            "lamp",
            None,
            // A small request that would make the stored document too large.
            body(json!({"state":{"reported":{"b":"x".repeat(100)}}})),
        )
        .await;
    assert_eq!(kind(big), ErrorKind::RequestEntityTooLarge);
    let doc = dp.get_thing_shadow("lamp", None).await.expect("exists");
    assert_eq!(doc.version, 1);
    assert_eq!(doc.state.desired, Some(json!({"a":a})));
    assert_eq!(doc.state.reported, None);
    // The matching version is accepted.
    let ok = update(
        &dp,
        "lamp",
        None,
        json!({"state":{"desired":{"a":2}},"version":1}),
    )
    .await;
    assert_eq!(ok.version, 2);
}

#[tokio::test]
async fn names_are_validated_on_every_shadow_operation() {
    let (dp, _) = store();
    let long_thing = "t".repeat(129);
    for thing in ["", "a b", "a/b", "lämp", "a.b", long_thing.as_str()] {
        assert_eq!(
            kind(dp.get_thing_shadow(thing, None).await),
            ErrorKind::InvalidRequest,
            "{thing:?}"
        );
        assert_eq!(
            kind(
                dp.update_thing_shadow(thing, None, body(json!({"state":{"desired":{"a":1}}})))
                    .await
            ),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(dp.delete_thing_shadow(thing, None).await),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(dp.list_named_shadows_for_thing(thing, None, None).await),
            ErrorKind::InvalidRequest
        );
    }
    let long_shadow = "s".repeat(65);
    for shadow in ["", "a b", "a/b", "a~b", long_shadow.as_str()] {
        assert_eq!(
            kind(dp.get_thing_shadow("lamp", Some(shadow)).await),
            ErrorKind::InvalidRequest,
            "{shadow:?}"
        );
    }
    // The longest and the most unusual valid names work.
    let thing = "Aa0:_-".repeat(21) + "xx";
    assert_eq!(thing.len(), 128);
    let shadow = "$Aa0:_-".repeat(9) + "x";
    assert_eq!(shadow.len(), 64);
    update(
        &dp,
        &thing,
        Some(&shadow),
        json!({"state":{"desired":{"a":1}}}),
    )
    .await;
    assert!(dp.get_thing_shadow(&thing, Some(&shadow)).await.is_ok());
}

#[tokio::test]
async fn list_named_shadows_sorted_without_classic_or_deleted() {
    let (dp, _) = store();
    update(&dp, "lamp", None, json!({"state":{"desired":{"a":1}}})).await;
    for name in ["zeta", "alpha", "$meta", "mid", "gone"] {
        update(
            &dp,
            "lamp",
            Some(name),
            json!({"state":{"desired":{"a":1}}}),
        )
        .await;
    }
    update(
        &dp,
        "lamp2",
        Some("other"),
        json!({"state":{"desired":{"a":1}}}),
    )
    .await;
    dp.delete_thing_shadow("lamp", Some("gone"))
        .await
        .expect("deleted");
    let page = dp
        .list_named_shadows_for_thing("lamp", None, None)
        .await
        .expect("listed");
    assert_eq!(page.results, ["$meta", "alpha", "mid", "zeta"]);
    assert_eq!(page.next_token, None);
    assert_eq!(page.timestamp, T0);
}

#[tokio::test]
async fn a_thing_without_named_shadows_lists_empty() {
    let (dp, _) = store();
    update(&dp, "lamp", None, json!({"state":{"desired":{"a":1}}})).await;
    for thing in ["lamp", "never-seen"] {
        let page = dp
            .list_named_shadows_for_thing(thing, None, None)
            .await
            .expect("empty, not 404");
        assert!(page.results.is_empty());
        assert_eq!(page.next_token, None);
    }
}

#[tokio::test]
async fn list_named_shadows_pages_with_opaque_tokens() {
    let (dp, _) = store();
    let names: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
    for name in names.iter().rev() {
        update(
            &dp,
            "lamp",
            Some(name),
            json!({"state":{"desired":{"a":1}}}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = dp
            .list_named_shadows_for_thing("lamp", token.as_deref(), Some(3))
            .await
            .expect("page");
        assert!(page.results.len() <= 3);
        seen.extend(page.results);
        pages += 1;
        match page.next_token {
            Some(t) => {
                assert!(
                    !t.contains("s2") && !t.contains("s5"),
                    "token is not opaque: {t}"
                );
                token = Some(t);
            }
            None => break,
        }
    }
    assert_eq!(seen, names);
    assert_eq!(pages, 3);

    // A page that ends exactly at the last name has no token.
    let exact = dp
        .list_named_shadows_for_thing("lamp", None, Some(7))
        .await
        .expect("page");
    assert_eq!((exact.results.len(), exact.next_token), (7, None));
}

#[tokio::test]
async fn list_named_shadows_defaults_to_25() {
    let (dp, _) = store();
    for i in 0..30 {
        update(
            &dp,
            "lamp",
            Some(&format!("s{i:02}")),
            json!({"state":{"desired":{"a":1}}}),
        )
        .await;
    }
    let first = dp
        .list_named_shadows_for_thing("lamp", None, None)
        .await
        .expect("page");
    assert_eq!(first.results.len(), 25);
    let rest = dp
        .list_named_shadows_for_thing("lamp", first.next_token.as_deref(), None)
        .await
        .expect("page");
    assert_eq!(rest.results.len(), 5);
    assert_eq!(rest.results[0], "s25");
    assert_eq!(rest.next_token, None);
}

#[tokio::test]
async fn list_named_shadows_refuses_bad_page_sizes_and_tokens() {
    let (dp, _) = store();
    for size in [0, -1, 101] {
        assert_eq!(
            kind(
                dp.list_named_shadows_for_thing("lamp", None, Some(size))
                    .await
            ),
            ErrorKind::InvalidRequest
        );
    }
    assert!(dp
        .list_named_shadows_for_thing("lamp", None, Some(100))
        .await
        .is_ok());
    assert!(dp
        .list_named_shadows_for_thing("lamp", None, Some(1))
        .await
        .is_ok());

    for name in ["a", "b"] {
        update(
            &dp,
            "other",
            Some(name),
            json!({"state":{"desired":{"a":1}}}),
        )
        .await;
    }
    let foreign = dp
        .list_named_shadows_for_thing("other", None, Some(1))
        .await
        .expect("page")
        .next_token
        .expect("more");
    for token in ["garbage!", "", foreign.as_str()] {
        assert_eq!(
            kind(
                dp.list_named_shadows_for_thing("lamp", Some(token), None)
                    .await
            ),
            ErrorKind::InvalidRequest,
            "{token:?}"
        );
    }
}

// ---- retained messages ----

#[tokio::test]
async fn a_retained_publish_is_stored_with_its_properties() {
    let (dp, clock) = store();
    let mut request = retained("home/lamp/config", b"{\"interval\":30}");
    request.user_properties = vec![
        ("site".into(), "berlin".into()),
        ("tag".into(), "a".into()),
        ("tag".into(), "b".into()),
    ];
    dp.publish(&request).await.expect("published");
    clock.advance_ms(10);
    let got = dp
        .get_retained_message("home/lamp/config")
        .await
        .expect("retained");
    assert_eq!(
        got,
        RetainedMessageData {
            topic: "home/lamp/config".into(),
            payload: Bytes::from_static(b"{\"interval\":30}"),
            qos: 1,
            last_modified_time: T0_MS,
            user_properties: request.user_properties.clone(),
        }
    );
}

#[tokio::test]
async fn the_newest_retained_publish_wins() {
    let (dp, clock) = store();
    dp.publish(&retained("t", b"one")).await.expect("published");
    clock.advance_ms(1_500);
    let mut second = retained("t", b"two");
    second.qos = 0;
    dp.publish(&second).await.expect("published");
    let got = dp.get_retained_message("t").await.expect("retained");
    assert_eq!(got.payload, Bytes::from_static(b"two"));
    assert_eq!(got.qos, 0);
    assert_eq!(got.last_modified_time, T0_MS + 1_500);
    assert!(got.user_properties.is_empty());
}

#[tokio::test]
async fn an_empty_retained_payload_deletes_and_non_retained_stores_nothing() {
    let (dp, _) = store();
    dp.publish(&retained("a", b"x")).await.expect("published");
    let mut plain = retained("a", b"y");
    plain.retain = false;
    dp.publish(&plain).await.expect("published");
    let mut plain_new = retained("b", b"y");
    plain_new.retain = false;
    dp.publish(&plain_new).await.expect("published");
    assert_eq!(
        dp.get_retained_message("a").await.expect("kept").payload,
        Bytes::from_static(b"x")
    );
    assert_eq!(
        kind(dp.get_retained_message("b").await),
        ErrorKind::ResourceNotFound
    );

    dp.publish(&retained("a", b"")).await.expect("deleted");
    let e = dp.get_retained_message("a").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceNotFound);
    // Deleting what is not there is not an error.
    dp.publish(&retained("a", b"")).await.expect("no-op");
    let page = dp.list_retained_messages(None, None).await.expect("listed");
    assert!(page.retained_topics.is_empty());
}

#[tokio::test]
async fn publish_validates_topic_qos_and_size() {
    let (dp, _) = store();
    let dp = dp.with_limits(ShadowLimits {
        max_payload_bytes: 10,
        ..ShadowLimits::default()
    });
    let long = "t".repeat(257);
    let deep = "a/b/c/d/e/f/g/h/i";
    for topic in [
        "",
        long.as_str(),
        deep,
        "a/+/c",
        "a/#",
        "a#b",
        "$aws/things/x",
        "$SYS/x",
        "a\0b",
    ] {
        assert_eq!(
            kind(dp.publish(&retained(topic, b"x")).await),
            ErrorKind::InvalidRequest,
            "{topic:?}"
        );
    }
    // At the limits, and a reserved topic without retain.
    let longest = "é".repeat(128);
    assert_eq!(longest.len(), 256);
    dp.publish(&retained(&longest, b"x"))
        .await
        .expect("256 bytes");
    dp.publish(&retained("a/b/c/d/e/f/g/h", b"x"))
        .await
        .expect("7 slashes");
    let mut reserved = retained("$aws/things/x/shadow/update", b"x");
    reserved.retain = false;
    dp.publish(&reserved).await.expect("not retained");

    for qos in [-1, 2] {
        let mut request = retained("q", b"x");
        request.qos = qos;
        assert_eq!(kind(dp.publish(&request).await), ErrorKind::InvalidRequest);
    }
    let e = dp.publish(&retained("big", &[7; 11])).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::RequestEntityTooLarge);
    dp.publish(&retained("big", &[7; 10]))
        .await
        .expect("at the limit");
    // Even a non-retained publish is checked.
    let mut plain = retained("big", &[7; 11]);
    plain.retain = false;
    assert_eq!(
        kind(dp.publish(&plain).await),
        ErrorKind::RequestEntityTooLarge
    );
    let mut bad_expiry = retained("e", b"x");
    bad_expiry.message_expiry = Some(-1);
    assert_eq!(
        kind(dp.publish(&bad_expiry).await),
        ErrorKind::InvalidRequest
    );
    let mut bad_correlation = retained("c", b"x");
    bad_correlation.correlation_data = Some("not base64!".into());
    assert_eq!(
        kind(dp.publish(&bad_correlation).await),
        ErrorKind::InvalidRequest
    );
}

#[tokio::test]
async fn an_expired_retained_message_is_gone() {
    let (dp, clock) = store();
    let mut request = retained("exp", b"x");
    request.message_expiry = Some(10);
    dp.publish(&request).await.expect("published");
    dp.publish(&retained("keep", b"y"))
        .await
        .expect("published");
    clock.advance_ms(9_999);
    assert!(dp.get_retained_message("exp").await.is_ok());
    clock.advance_ms(1);
    assert_eq!(
        kind(dp.get_retained_message("exp").await),
        ErrorKind::ResourceNotFound
    );
    let page = dp.list_retained_messages(None, None).await.expect("listed");
    let topics: Vec<_> = page
        .retained_topics
        .iter()
        .map(|t| t.topic.as_str())
        .collect();
    assert_eq!(topics, ["keep"]);
}

#[tokio::test]
async fn list_retained_messages_sorted_with_sizes_and_pages() {
    let (dp, clock) = store();
    for (topic, payload) in [("b/2", "xx"), ("a", "x"), ("b/1", "xxxxx"), ("c", "")] {
        dp.publish(&retained(topic, payload.as_bytes()))
            .await
            .expect("published");
        clock.advance_ms(1);
    }
    let mut binary = retained("bin", &[0, 255, 1, 2]);
    binary.qos = 0;
    dp.publish(&binary).await.expect("published");

    let all = dp.list_retained_messages(None, None).await.expect("listed");
    assert_eq!(all.next_token, None);
    let summary: Vec<_> = all
        .retained_topics
        .iter()
        .map(|t| (t.topic.as_str(), t.payload_size, t.qos))
        .collect();
    assert_eq!(
        summary,
        [("a", 1, 1), ("b/1", 5, 1), ("b/2", 2, 1), ("bin", 4, 0)]
    );
    assert_eq!(all.retained_topics[0].last_modified_time, T0_MS + 1);

    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = dp
            .list_retained_messages(token.as_deref(), Some(3))
            .await
            .expect("page");
        seen.extend(page.retained_topics.into_iter().map(|t| t.topic));
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b/1", "b/2", "bin"]);
}

#[tokio::test]
async fn list_retained_messages_defaults_to_200_and_refuses_bad_arguments() {
    let (dp, _) = store();
    for i in 0..201 {
        dp.publish(&retained(&format!("t/{i:03}"), b"x"))
            .await
            .expect("published");
    }
    let first = dp.list_retained_messages(None, None).await.expect("page");
    assert_eq!(first.retained_topics.len(), 200);
    let rest = dp
        .list_retained_messages(first.next_token.as_deref(), None)
        .await
        .expect("page");
    assert_eq!(rest.retained_topics.len(), 1);
    assert_eq!(rest.retained_topics[0].topic, "t/200");

    for size in [0, -5, 201] {
        assert_eq!(
            kind(dp.list_retained_messages(None, Some(size)).await),
            ErrorKind::InvalidRequest
        );
    }
    update(&dp, "lamp", Some("a"), json!({"state":{"desired":{"a":1}}})).await;
    update(&dp, "lamp", Some("b"), json!({"state":{"desired":{"a":1}}})).await;
    let shadow_token = dp
        .list_named_shadows_for_thing("lamp", None, Some(1))
        .await
        .expect("page")
        .next_token
        .expect("more");
    for token in ["%%%", shadow_token.as_str()] {
        assert_eq!(
            kind(dp.list_retained_messages(Some(token), None).await),
            ErrorKind::InvalidRequest
        );
    }
}

#[tokio::test]
async fn get_retained_message_checks_the_topic() {
    let (dp, _) = store();
    assert_eq!(
        kind(dp.get_retained_message("").await),
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        kind(dp.get_retained_message("a/#").await),
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        kind(dp.get_retained_message("none").await),
        ErrorKind::ResourceNotFound
    );
}

// ---- persistence ----

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let clock = ManualClock::new();
    {
        let dp = EmbeddedDataPlane::open(&path)
            .expect("created")
            .with_clock(clock.source());
        assert_eq!(dp.path(), Some(path.as_path()));
        update(
            &dp,
            "lamp",
            None,
            json!({"state":{"desired":{"a":1},"reported":{"a":0}}}),
        )
        .await;
        update(
            &dp,
            "lamp",
            Some("cfg"),
            json!({"state":{"desired":{"b":[1,2]}}}),
        )
        .await;
        for _ in 0..3 {
            update(
                &dp,
                "lamp",
                Some("old"),
                json!({"state":{"desired":{"c":1}}}),
            )
            .await;
        }
        dp.delete_thing_shadow("lamp", Some("old"))
            .await
            .expect("deleted");
        let mut message = retained("home/cfg", b"payload");
        message.user_properties = vec![("k".into(), "v".into()), ("k".into(), "w".into())];
        dp.publish(&message).await.expect("published");
    }
    clock.advance_ms(60_000);
    let dp = EmbeddedDataPlane::open(&path)
        .expect("reopened")
        .with_clock(clock.source());
    let classic = dp.get_thing_shadow("lamp", None).await.expect("classic");
    assert_eq!(classic.version, 1);
    assert_eq!(classic.state.delta, Some(json!({"a":1})));
    assert_eq!(
        classic.metadata.desired,
        Some(json!({"a":{"timestamp":T0}}))
    );
    let named = dp
        .get_thing_shadow("lamp", Some("cfg"))
        .await
        .expect("named");
    assert_eq!(named.state.desired, Some(json!({"b":[1,2]})));
    let names = dp
        .list_named_shadows_for_thing("lamp", None, None)
        .await
        .expect("listed")
        .results;
    assert_eq!(names, ["cfg"]);
    // The tombstone survived: re-creation continues from version 3.
    let recreated = update(
        &dp,
        "lamp",
        Some("old"),
        json!({"state":{"desired":{"c":2}}}),
    )
    .await;
    assert_eq!(recreated.version, 4);
    let message = dp.get_retained_message("home/cfg").await.expect("retained");
    assert_eq!(message.payload, Bytes::from_static(b"payload"));
    assert_eq!(message.last_modified_time, T0_MS);
    assert_eq!(message.user_properties.len(), 2);
    assert_eq!(
        message.user_properties[1],
        ("k".to_string(), "w".to_string())
    );
}

#[tokio::test]
async fn an_acknowledged_write_is_in_the_file_before_the_store_closes() {
    // What a crash leaves is the file as it is on disk: copy it while the store is still
    // open (nothing flushed by a clean shutdown) and open the copy.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let copy = dir.path().join("crashed.redb");
    let dp = EmbeddedDataPlane::open(&path).expect("created");
    update(&dp, "lamp", None, json!({"state":{"desired":{"a":1}}})).await;
    update(&dp, "lamp", None, json!({"state":{"desired":{"a":2}}})).await;
    dp.publish(&retained("t", b"x")).await.expect("published");
    std::fs::copy(&path, &copy).expect("copied");

    let recovered = EmbeddedDataPlane::open(&copy).expect("opens");
    let doc = recovered
        .get_thing_shadow("lamp", None)
        .await
        .expect("exists");
    assert_eq!((doc.version, doc.state.desired), (2, Some(json!({"a":2}))));
    assert!(recovered.get_retained_message("t").await.is_ok());
    drop(dp);
}

#[tokio::test]
async fn a_file_in_use_or_not_a_database_does_not_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let first = EmbeddedDataPlane::open(&path).expect("created");
    let e = EmbeddedDataPlane::open(&path).unwrap_err();
    assert_eq!(e.path, path);
    drop(first);
    assert!(EmbeddedDataPlane::open(&path).is_ok());

    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, b"this is not a redb file, not at all, no").expect("written");
    assert!(EmbeddedDataPlane::open(&junk).is_err());
}

// ---- concurrency ----

#[test]
fn the_store_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<EmbeddedDataPlane>();
    let _as_trait_object: Arc<dyn DataPlane> = Arc::new(EmbeddedDataPlane::in_memory());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_writer_wins_each_version_race() {
    let dp: Arc<dyn DataPlane> = Arc::new(EmbeddedDataPlane::in_memory());
    dp.update_thing_shadow("lamp", None, body(json!({"state":{"desired":{"w":-1}}})))
        .await
        .expect("created");
    for round in 1..=5u64 {
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let dp = dp.clone();
            tasks.push(tokio::spawn(async move {
                let request = json!({"state":{"desired":{"w":writer}},"version":round});
                dp.update_thing_shadow("lamp", None, body(request)).await
            }));
        }
        let mut winners = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(doc) => {
                    winners += 1;
                    assert_eq!(doc.version, round + 1);
                }
                Err(e) => assert_eq!(e.kind, ErrorKind::Conflict),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let doc = dp.get_thing_shadow("lamp", None).await.expect("exists");
    assert_eq!(doc.version, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_update() {
    const WRITERS: usize = 6;
    const INCREMENTS: u64 = 10;
    let dp = Arc::new(EmbeddedDataPlane::in_memory());
    update(
        &dp,
        "lamp",
        None,
        json!({"state":{"reported":{"start":true}}}),
    )
    .await;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let dp = dp.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("w{writer}");
            let mut conflicts = 0u64;
            let mut done = 0u64;
            while done < INCREMENTS {
                // Optimistic read-modify-write, as the reconciler does.
                let doc = dp.get_thing_shadow("lamp", None).await?;
                let current = doc
                    .state
                    .desired
                    .as_ref()
                    .and_then(|d| d.get(&key))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                assert_eq!(current, done, "{key} lost an update");
                let request =
                    json!({"state":{"desired":{key.clone(): current + 1}},"version":doc.version});
                match dp.update_thing_shadow("lamp", None, body(request)).await {
                    Ok(_) => done += 1,
                    Err(e) if e.kind == ErrorKind::Conflict => conflicts += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok::<u64, DataPlaneError>(conflicts)
        }));
    }
    // Unconditional writers interleave with them; they never conflict.
    let mut blind = Vec::new();
    for i in 0..10 {
        let dp = dp.clone();
        blind.push(tokio::spawn(async move {
            let request = json!({"state":{"reported":{format!("r{i}"): i}}});
            dp.update_thing_shadow("lamp", None, body(request)).await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("writer");
    }
    for task in blind {
        task.await.expect("task").expect("blind writer");
    }
    let doc = dp.get_thing_shadow("lamp", None).await.expect("exists");
    let expected_version = 1 + (WRITERS as u64) * INCREMENTS + 10;
    assert_eq!(doc.version, expected_version);
    let desired = doc.state.desired.expect("desired");
    for writer in 0..WRITERS {
        assert_eq!(desired[format!("w{writer}")], json!(INCREMENTS));
    }
    let reported = doc.state.reported.expect("reported");
    assert_eq!(reported.as_object().map(|m| m.len()), Some(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_a_file_store_are_all_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    {
        let dp = Arc::new(EmbeddedDataPlane::open(&path).expect("created"));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let dp = dp.clone();
            tasks.push(tokio::spawn(async move {
                let request = json!({"state":{"desired":{format!("k{i}"): i}}});
                dp.update_thing_shadow("lamp", Some("cfg"), body(request))
                    .await?;
                dp.publish(&retained(&format!("t/{i}"), b"x")).await
            }));
        }
        for task in tasks {
            task.await.expect("task").expect("write");
        }
    }
    let dp = EmbeddedDataPlane::open(&path).expect("reopened");
    let doc = dp
        .get_thing_shadow("lamp", Some("cfg"))
        .await
        .expect("exists");
    assert_eq!(doc.version, 8);
    assert_eq!(
        doc.state
            .desired
            .and_then(|d| d.as_object().map(|m| m.len())),
        Some(8)
    );
    let page = dp.list_retained_messages(None, None).await.expect("listed");
    assert_eq!(page.retained_topics.len(), 8);
}
