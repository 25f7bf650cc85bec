//! The data-plane contract: one suite of AWS IoT shadow and retained-message behaviour,
//! run against every [`DataPlane`]:
//! - `embedded`: the embedded store, in process;
//! - `server`: `shadowsync dataplane serve` as a process, through the AWS SDK adapter;
//! - `moto`: a moto server (`pip install 'moto[server]'`), through the AWS SDK adapter.
//!
//! Each case uses its own thing names and topics, so all cases share one server per
//! backend and run in parallel. What moto does not implement is skipped on moto with a
//! printed `SKIP moto: <case>: <reason>` line.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};
use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::{
    DataPlane, DataPlaneError, ErrorKind, PayloadFormat, PublishRequest, ShadowDocument,
    ShadowLimits,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Embedded,
    Server,
    Moto,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Server => "server",
            Backend::Moto => "moto",
        }
    }
}

/// One case's view of one backend.
struct Ctx {
    backend: Backend,
    case: &'static str,
    plane: Arc<dyn DataPlane>,
}

impl Ctx {
    /// `None` (after printing why) when the backend is not available here.
    async fn new(backend: Backend, case: &'static str) -> Option<Ctx> {
        let plane: Arc<dyn DataPlane> = match backend {
            Backend::Embedded => Arc::new(EmbeddedDataPlane::in_memory()),
            Backend::Server => match support::local_server() {
                Ok(server) => Arc::new(aws_plane(server.url.clone()).await),
                Err(why) => panic!("shadowsync dataplane serve did not start: {why}"),
            },
            Backend::Moto => match support::moto() {
                support::MotoState::Running(moto) => Arc::new(aws_plane(moto.endpoint_url()).await),
                support::MotoState::NotInstalled => {
                    let message = "moto is not installed: pip install 'moto[server]'";
                    if std::env::var(support::REQUIRE_MOTO_ENV).is_ok_and(|v| v == "1") {
                        panic!("{message} ({}=1 requires it)", support::REQUIRE_MOTO_ENV);
                    }
                    skip_line(&format!("SKIP moto: {case}: {message}"));
                    return None;
                }
                support::MotoState::Failed(why) => panic!("moto did not start: {why}"),
            },
        };
        Some(Ctx {
            backend,
            case,
            plane,
        })
    }

    /// A name no other case (or call of this case) uses: `[a-zA-Z0-9_-]`.
    fn unique(&self, what: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{}-{what}-{}-{n}", self.case, std::process::id()).replace('_', "-")
    }

    /// A fresh thing name (registered first where the backend needs it).
    async fn thing(&self) -> String {
        let name = self.unique("thing");
        if self.backend == Backend::Moto {
            if let support::MotoState::Running(moto) = support::moto() {
                if let Err(e) = moto.create_thing(&name) {
                    panic!("{e}");
                }
            }
        }
        name
    }

    /// A fresh topic.
    fn topic(&self, what: &str) -> String {
        format!("shadowsync-test/{}", self.unique(what))
    }

    /// True (after printing why) when this part of the case cannot run on `backend`.
    fn skip_on(&self, backend: Backend, reason: &str) -> bool {
        if self.backend == backend {
            skip_line(&format!(
                "SKIP {}: {}: {reason}",
                backend.label(),
                self.case
            ));
            true
        } else {
            false
        }
    }

    async fn update(
        &self,
        thing: &str,
        shadow: Option<&str>,
        document: Value,
    ) -> Result<ShadowDocument, DataPlaneError> {
        self.plane
            .update_thing_shadow(thing, shadow, Bytes::from(document.to_string()))
            .await
    }

    async fn update_ok(
        &self,
        thing: &str,
        shadow: Option<&str>,
        document: Value,
    ) -> ShadowDocument {
        match self.update(thing, shadow, document.clone()).await {
            Ok(doc) => doc,
            Err(e) => panic!("update {thing}/{shadow:?} with {document} failed: {e}"),
        }
    }

    async fn get_ok(&self, thing: &str, shadow: Option<&str>) -> ShadowDocument {
        match self.plane.get_thing_shadow(thing, shadow).await {
            Ok(doc) => doc,
            Err(e) => panic!("get {thing}/{shadow:?} failed: {e}"),
        }
    }

    async fn publish_ok(&self, request: &PublishRequest) {
        if let Err(e) = self.plane.publish(request).await {
            panic!("publish to {} failed: {e}", request.topic);
        }
    }
}

/// Prints a skip to the real stderr: libtest captures `eprintln!` of passing tests,
/// and a skip must show in a plain `cargo test` run.
fn skip_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

async fn aws_plane(endpoint_url: String) -> AwsDataPlane {
    match AwsDataPlane::connect(AwsOptions {
        endpoint_url: Some(endpoint_url),
        region: None,
    })
    .await
    {
        Ok(plane) => plane,
        Err(e) => panic!("cannot set up the AWS client: {e}"),
    }
}

fn expect_kind<T: std::fmt::Debug>(
    result: Result<T, DataPlaneError>,
    kind: ErrorKind,
    what: &str,
) -> DataPlaneError {
    match result {
        Err(err) if err.kind == kind => err,
        other => panic!("{what}: expected {kind:?}, got {other:?}"),
    }
}

fn epoch_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn retained(topic: &str, payload: &'static [u8], qos: i32) -> PublishRequest {
    PublishRequest {
        topic: topic.to_owned(),
        payload: Bytes::from_static(payload),
        qos,
        retain: true,
        ..PublishRequest::default()
    }
}

/// Every leaf of a metadata tree: `(path, timestamp)`.
fn metadata_leaves(tree: &Value, path: String, out: &mut Vec<(String, i64)>) {
    match tree {
        Value::Object(map) if map.len() == 1 && map.get("timestamp").is_some_and(Value::is_i64) => {
            out.push((path, map["timestamp"].as_i64().unwrap_or_default()));
        }
        Value::Object(map) => {
            for (key, value) in map {
                metadata_leaves(value, format!("{path}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                metadata_leaves(value, format!("{path}/{i}"), out);
            }
        }
        other => panic!("unexpected metadata node at {path}: {other}"),
    }
}

const MOTO_RETAINED: &str =
    "moto 5.x accepts Publish but retains nothing; GetRetainedMessage and ListRetainedMessages answer 500";

// ---------------------------------------------------------------------------------
// Shadows

async fn merge_of_nested_objects(cx: &Ctx) {
    let thing = cx.thing().await;
    cx.update_ok(
        &thing,
        None,
        json!({"state": {"desired": {"a": {"b": 1, "c": 2}, "x": 1}}}),
    )
    .await;
    let response = cx
        .update_ok(
            &thing,
            None,
            json!({"state": {"desired": {"a": {"c": 3, "d": {"e": 4}}}}}),
        )
        .await;
    // The response echoes the sections sent, not the merged document.
    assert_eq!(
        response.state.desired,
        Some(json!({"a": {"c": 3, "d": {"e": 4}}}))
    );
    assert_eq!(response.state.reported, None);

    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(
        doc.state.desired,
        Some(json!({"a": {"b": 1, "c": 3, "d": {"e": 4}}, "x": 1}))
    );
}

async fn arrays_are_replaced_whole(cx: &Ctx) {
    let thing = cx.thing().await;
    cx.update_ok(
        &thing,
        None,
        json!({"state": {"desired": {"list": [1, 2, 3], "keep": true}}}),
    )
    .await;
    cx.update_ok(&thing, None, json!({"state": {"desired": {"list": [9]}}}))
        .await;
    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(doc.state.desired, Some(json!({"list": [9], "keep": true})));
}

async fn null_removes_a_property(cx: &Ctx) {
    let thing = cx.thing().await;
    cx.update_ok(
        &thing,
        None,
        json!({"state": {"desired": {"a": {"b": 1, "c": 2}, "k": 1, "z": 0}}}),
    )
    .await;
    cx.update_ok(
        &thing,
        None,
        json!({"state": {"desired": {"a": {"b": null}, "k": null}}}),
    )
    .await;
    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(doc.state.desired, Some(json!({"a": {"c": 2}, "z": 0})));
    // Metadata follows the state: no timestamps for removed leaves.
    let mut leaves = Vec::new();
    metadata_leaves(
        doc.metadata.desired.as_ref().unwrap_or(&Value::Null),
        String::new(),
        &mut leaves,
    );
    let paths: Vec<&str> = leaves.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["/a/c", "/z"]);
}

async fn desired_null_removes_the_section(cx: &Ctx) {
    if cx.skip_on(
        Backend::Moto,
        "moto 5.x ignores `\"desired\": null` and keeps the section",
    ) {
        return;
    }
    let thing = cx.thing().await;
    cx.update_ok(
        &thing,
        None,
        json!({"state": {"desired": {"a": 1}, "reported": {"a": 2}}}),
    )
    .await;
    let before = cx.get_ok(&thing, None).await;
    let response = cx
        .update_ok(&thing, None, json!({"state": {"desired": null}}))
        .await;
    assert_eq!(response.state.desired, Some(Value::Null));
    assert_eq!(response.version, before.version + 1);

    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(doc.state.desired, None);
    assert_eq!(doc.state.delta, None);
    assert_eq!(doc.state.reported, Some(json!({"a": 2})));
    assert_eq!(doc.metadata.desired, None);
    assert!(doc.metadata.reported.is_some());
}

async fn nulling_all_state_keeps_the_shadow(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, "moto 5.x ignores `null` sections") {
        return;
    }
    let thing = cx.thing().await;
    cx.update_ok(
        &thing,
        None,
        json!({"state": {"desired": {"a": 1}, "reported": {"a": 1}}}),
    )
    .await;
    let nulled = cx
        .update_ok(
            &thing,
            None,
            json!({"state": {"desired": null, "reported": null}}),
        )
        .await;
    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(doc.version, nulled.version);
    assert_eq!(doc.state.desired, None);
    assert_eq!(doc.state.reported, None);
}

async fn delta_lists_unmet_desired_values(cx: &Ctx) {
    let thing = cx.thing().await;
    cx.update_ok(
        &thing,
        None,
        json!({"state": {
            "desired": {"same": 1, "obj": {"c": 2, "d": 3}, "arr": [1, 2], "only_desired": "x"},
            "reported": {"same": 1, "obj": {"c": 5, "d": 3}, "arr": [1], "only_reported": "y"}
        }}),
    )
    .await;
    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(
        doc.state.delta,
        Some(json!({"obj": {"c": 2}, "arr": [1, 2], "only_desired": "x"}))
    );

    // Once reported catches up there is no delta.
    cx.update_ok(
        &thing,
        None,
        json!({"state": {"reported": {"obj": {"c": 2}, "arr": [1, 2], "only_desired": "x"}}}),
    )
    .await;
    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(doc.state.delta, None);
}

async fn metadata_timestamps_per_leaf(cx: &Ctx) {
    let thing = cx.thing().await;
    let before = epoch_secs();
    let response = cx
        .update_ok(
            &thing,
            None,
            json!({"state": {"desired": {"a": 1, "b": {"c": "x"}, "arr": [1, 2]}, "reported": {"r": true}}}),
        )
        .await;
    let after = epoch_secs();

    let mut desired = Vec::new();
    metadata_leaves(
        response.metadata.desired.as_ref().unwrap_or(&Value::Null),
        String::new(),
        &mut desired,
    );
    let paths: Vec<&str> = desired.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["/a", "/b/c", "/arr/0", "/arr/1"]);
    let mut reported = Vec::new();
    metadata_leaves(
        response.metadata.reported.as_ref().unwrap_or(&Value::Null),
        String::new(),
        &mut reported,
    );
    assert_eq!(reported.len(), 1);
    for (path, ts) in desired.iter().chain(&reported) {
        assert!(
            (before - 1..=after + 1).contains(ts),
            "{path}: {ts} not in {before}..={after}"
        );
    }
    assert!((before - 1..=after + 1).contains(&response.timestamp));

    // The stored metadata has the same leaves, and an untouched leaf keeps its time.
    let doc = cx.get_ok(&thing, None).await;
    let mut stored = Vec::new();
    metadata_leaves(
        doc.metadata.desired.as_ref().unwrap_or(&Value::Null),
        String::new(),
        &mut stored,
    );
    assert_eq!(stored, desired);
}

async fn version_bumps_on_every_update(cx: &Ctx) {
    let thing = cx.thing().await;
    let first = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"a": 1}}}))
        .await;
    let second = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"a": 1}}}))
        .await;
    assert_eq!(
        second.version,
        first.version + 1,
        "an update with no change still bumps"
    );
    let reported = cx
        .update_ok(&thing, None, json!({"state": {"reported": {"a": 1}}}))
        .await;
    assert_eq!(
        reported.version,
        first.version + 2,
        "a reported-only update bumps"
    );
    assert_eq!(cx.get_ok(&thing, None).await.version, reported.version);
}

async fn stale_version_conflicts(cx: &Ctx) {
    let thing = cx.thing().await;
    let first = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"a": 1}}}))
        .await;
    let second = cx
        .update_ok(
            &thing,
            None,
            json!({"state": {"desired": {"a": 2}}, "version": first.version}),
        )
        .await;
    assert_eq!(second.version, first.version + 1);

    let err = expect_kind(
        cx.update(
            &thing,
            None,
            json!({"state": {"desired": {"a": 3}}, "version": first.version}),
        )
        .await,
        ErrorKind::Conflict,
        "update with a stale version",
    );
    assert!(!err.message.is_empty());
    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(
        doc.version, second.version,
        "a refused update changes nothing"
    );
    assert_eq!(doc.state.desired, Some(json!({"a": 2})));
}

async fn no_version_means_no_check(cx: &Ctx) {
    let thing = cx.thing().await;
    let first = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"a": 1}}}))
        .await;
    // Someone else moves the shadow on.
    cx.update_ok(&thing, None, json!({"state": {"reported": {"a": 0}}}))
        .await;
    let last = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"a": 2}}}))
        .await;
    assert_eq!(last.version, first.version + 2);
}

async fn delete_and_recreate_keeps_counting_versions(cx: &Ctx) {
    let thing = cx.thing().await;
    cx.update_ok(&thing, None, json!({"state": {"desired": {"a": 1}}}))
        .await;
    let last = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"a": 2}}}))
        .await;

    let deleted = match cx.plane.delete_thing_shadow(&thing, None).await {
        Ok(deleted) => deleted,
        Err(e) => panic!("delete failed: {e}"),
    };
    // AWS documents the version of the deleted document; moto reports one more (the
    // delete counts as an update there). Either way counting goes on from there.
    assert!(
        (last.version..=last.version + 1).contains(&deleted.version),
        "delete answered version {} after version {}",
        deleted.version,
        last.version
    );
    expect_kind(
        cx.plane.get_thing_shadow(&thing, None).await,
        ErrorKind::ResourceNotFound,
        "get after delete",
    );

    let recreated = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"b": 1}}}))
        .await;
    assert_eq!(
        recreated.version,
        deleted.version + 1,
        "a re-created shadow continues the old count"
    );
    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(
        doc.state.desired,
        Some(json!({"b": 1})),
        "the old state is gone"
    );
}

async fn named_shadows_are_independent(cx: &Ctx) {
    let thing = cx.thing().await;
    let classic = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"c": 1}}}))
        .await;
    cx.update_ok(
        &thing,
        Some("config"),
        json!({"state": {"desired": {"n": 1}}}),
    )
    .await;
    cx.update_ok(
        &thing,
        Some("config"),
        json!({"state": {"desired": {"n": 2}}}),
    )
    .await;

    let classic_doc = cx.get_ok(&thing, None).await;
    let named_doc = cx.get_ok(&thing, Some("config")).await;
    assert_eq!(classic_doc.state.desired, Some(json!({"c": 1})));
    assert_eq!(
        classic_doc.version, classic.version,
        "named updates do not bump the classic shadow"
    );
    assert_eq!(named_doc.state.desired, Some(json!({"n": 2})));
    expect_kind(
        cx.plane.get_thing_shadow(&thing, Some("other")).await,
        ErrorKind::ResourceNotFound,
        "get of a named shadow never written",
    );

    if let Err(e) = cx.plane.delete_thing_shadow(&thing, Some("config")).await {
        panic!("delete of the named shadow failed: {e}");
    }
    assert_eq!(
        cx.get_ok(&thing, None).await.state.desired,
        Some(json!({"c": 1}))
    );
}

async fn list_named_shadows_with_paging(cx: &Ctx) {
    let thing = cx.thing().await;
    cx.update_ok(
        &thing,
        None,
        json!({"state": {"desired": {"classic": true}}}),
    )
    .await;
    for name in ["alpha", "beta", "gamma"] {
        cx.update_ok(
            &thing,
            Some(name),
            json!({"state": {"desired": {"n": name}}}),
        )
        .await;
    }

    let all = match cx
        .plane
        .list_named_shadows_for_thing(&thing, None, None)
        .await
    {
        Ok(page) => page,
        Err(e) => panic!("list failed: {e}"),
    };
    let mut names = all.results.clone();
    names.sort();
    assert_eq!(
        names,
        vec!["alpha", "beta", "gamma"],
        "the classic shadow is not listed"
    );

    if cx.skip_on(
        Backend::Moto,
        "moto 5.x ignores pageSize in ListNamedShadowsForThing",
    ) {
        return;
    }
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let page = match cx
            .plane
            .list_named_shadows_for_thing(&thing, token.as_deref(), Some(1))
            .await
        {
            Ok(page) => page,
            Err(e) => panic!("list page failed: {e}"),
        };
        assert!(
            page.results.len() <= 1,
            "page of size 1 holds {:?}",
            page.results
        );
        paged.extend(page.results);
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    assert!(token.is_none(), "paging did not end");
    paged.sort();
    assert_eq!(paged, vec!["alpha", "beta", "gamma"]);
}

async fn missing_shadows_are_not_found(cx: &Ctx) {
    let thing = cx.thing().await;
    expect_kind(
        cx.plane.get_thing_shadow(&thing, None).await,
        ErrorKind::ResourceNotFound,
        "get classic",
    );
    expect_kind(
        cx.plane.get_thing_shadow(&thing, Some("nope")).await,
        ErrorKind::ResourceNotFound,
        "get named",
    );
    expect_kind(
        cx.plane.delete_thing_shadow(&thing, None).await,
        ErrorKind::ResourceNotFound,
        "delete classic",
    );
    expect_kind(
        cx.plane.delete_thing_shadow(&thing, Some("nope")).await,
        ErrorKind::ResourceNotFound,
        "delete named",
    );
}

async fn oversize_documents_are_refused(cx: &Ctx) {
    if cx.skip_on(
        Backend::Moto,
        "moto 5.x enforces no shadow document size limit",
    ) {
        return;
    }
    let thing = cx.thing().await;
    let big = "x".repeat(9 * 1024);
    expect_kind(
        cx.update(&thing, None, json!({"state": {"desired": {"s": big}}}))
            .await,
        ErrorKind::RequestEntityTooLarge,
        "a 9 KB desired section",
    );

    // Each half fits; the merged document does not.
    let half = "x".repeat(5 * 1024);
    let first = cx
        .update_ok(&thing, None, json!({"state": {"desired": {"a": half}}}))
        .await;
    expect_kind(
        cx.update(&thing, None, json!({"state": {"reported": {"b": half}}}))
            .await,
        ErrorKind::RequestEntityTooLarge,
        "an update whose merged document exceeds 8 KB",
    );
    let doc = cx.get_ok(&thing, None).await;
    assert_eq!(
        doc.version, first.version,
        "a refused update changes nothing"
    );
    assert_eq!(doc.state.reported, None);
}

/// `{"l1": {"l2": ... {"ln": 1}}}`: `levels` nested objects.
fn nested(levels: usize) -> Value {
    (1..=levels)
        .rev()
        .fold(json!(1), |inner, n| json!({ format!("l{n}"): inner }))
}

async fn too_deep_json_is_refused(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, "moto 5.x enforces no JSON depth limit") {
        return;
    }
    // The section itself is a level: {"l1": {"l2": 1}} is 2 deep.
    let limit = ShadowLimits::default().max_depth;
    let thing = cx.thing().await;
    cx.update_ok(&thing, None, json!({"state": {"desired": nested(limit)}}))
        .await;
    let err = expect_kind(
        cx.update(
            &thing,
            None,
            json!({"state": {"reported": nested(limit + 1)}}),
        )
        .await,
        ErrorKind::InvalidRequest,
        "one level too deep",
    );
    assert!(err.message.contains("levels of nesting"), "{}", err.message);
}

async fn invalid_json_is_refused(cx: &Ctx) {
    let thing = cx.thing().await;
    for body in [
        &b"{\"state\":"[..],
        b"not json",
        b"{\"state\": {\"desired\": {\"a\": 1,}}}",
    ] {
        expect_kind(
            cx.plane
                .update_thing_shadow(&thing, None, Bytes::from_static(body))
                .await,
            ErrorKind::InvalidRequest,
            &format!("update with {}", String::from_utf8_lossy(body)),
        );
    }
    expect_kind(
        cx.plane.get_thing_shadow(&thing, None).await,
        ErrorKind::ResourceNotFound,
        "nothing was created",
    );
}

async fn null_in_arrays_is_refused(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, "moto 5.x accepts null inside arrays") {
        return;
    }
    let thing = cx.thing().await;
    expect_kind(
        cx.update(
            &thing,
            None,
            json!({"state": {"desired": {"a": [1, null]}}}),
        )
        .await,
        ErrorKind::InvalidRequest,
        "null in an array",
    );
    expect_kind(
        cx.update(
            &thing,
            None,
            json!({"state": {"reported": {"o": {"a": [[null]]}}}}),
        )
        .await,
        ErrorKind::InvalidRequest,
        "null in a nested array",
    );
}

// ---------------------------------------------------------------------------------
// Retained messages

async fn retained_publish_and_get(cx: &Ctx) {
    let topic = cx.topic("msg");
    let before = epoch_secs() * 1000;
    let properties = vec![
        ("k".to_owned(), "a".to_owned()),
        ("site".to_owned(), "berlin".to_owned()),
        ("k".to_owned(), "b".to_owned()),
    ];
    cx.publish_ok(&PublishRequest {
        topic: topic.clone(),
        payload: Bytes::from_static(b"{\"interval\":30}"),
        qos: 1,
        retain: true,
        content_type: Some("application/json".into()),
        response_topic: Some(format!("{topic}/reply")),
        message_expiry: Some(3600),
        user_properties: properties.clone(),
        payload_format_indicator: Some(PayloadFormat::Utf8Data),
        correlation_data: Some("Y29ycmVsYXRpb24=".into()),
    })
    .await;
    let after = epoch_secs() * 1000;
    // Up to here moto takes part: it accepts the publish with every option.
    if cx.skip_on(Backend::Moto, MOTO_RETAINED) {
        return;
    }

    let message = match cx.plane.get_retained_message(&topic).await {
        Ok(message) => message,
        Err(e) => panic!("get failed: {e}"),
    };
    assert_eq!(message.topic, topic);
    assert_eq!(message.payload, Bytes::from_static(b"{\"interval\":30}"));
    assert_eq!(message.qos, 1);
    assert_eq!(
        message.user_properties, properties,
        "order and repeated keys are kept"
    );
    assert!(
        (before - 1000..=after + 1000).contains(&message.last_modified_time),
        "lastModifiedTime {} not in {before}..={after} (epoch ms)",
        message.last_modified_time
    );
}

async fn retained_qos_and_newest_wins(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, MOTO_RETAINED) {
        return;
    }
    let topic = cx.topic("qos");
    cx.publish_ok(&retained(&topic, b"one", 0)).await;
    let first = cx.plane.get_retained_message(&topic).await;
    assert!(
        matches!(&first, Ok(m) if m.qos == 0 && m.payload == "one"),
        "{first:?}"
    );
    cx.publish_ok(&retained(&topic, b"two", 1)).await;
    let second = cx.plane.get_retained_message(&topic).await;
    assert!(
        matches!(&second, Ok(m) if m.qos == 1 && m.payload == "two" && m.user_properties.is_empty()),
        "{second:?}"
    );
}

async fn retained_list_with_paging(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, MOTO_RETAINED) {
        return;
    }
    let prefix = cx.topic("list");
    let mine: BTreeMap<String, (i64, i32)> = [("a", 1, 0), ("b", 22, 1), ("c", 333, 0)]
        .into_iter()
        .map(|(name, size, qos)| (format!("{prefix}/{name}"), (size, qos)))
        .collect();
    for (topic, (size, qos)) in &mine {
        cx.publish_ok(&PublishRequest {
            payload: Bytes::from(vec![b'p'; *size as usize]),
            ..retained(topic, b"", *qos)
        })
        .await;
    }

    // Other cases publish to the same server at the same time: look for ours only.
    let mut seen = BTreeMap::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = match cx
            .plane
            .list_retained_messages(token.as_deref(), Some(1))
            .await
        {
            Ok(page) => page,
            Err(e) => panic!("list failed: {e}"),
        };
        pages += 1;
        assert!(
            page.retained_topics.len() <= 1,
            "a page of 1 holds {:?}",
            page.retained_topics
        );
        for summary in page.retained_topics {
            if mine.contains_key(&summary.topic) {
                seen.insert(summary.topic, (summary.payload_size, summary.qos));
            }
        }
        token = page.next_token;
        if token.is_none() || pages > 10_000 {
            break;
        }
    }
    assert!(token.is_none(), "paging did not end");
    assert!(pages >= 3);
    assert_eq!(seen, mine);
}

async fn empty_retained_payload_deletes(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, MOTO_RETAINED) {
        return;
    }
    let topic = cx.topic("gone");
    cx.publish_ok(&retained(&topic, b"here", 1)).await;
    assert!(cx.plane.get_retained_message(&topic).await.is_ok());

    cx.publish_ok(&retained(&topic, b"", 1)).await;
    expect_kind(
        cx.plane.get_retained_message(&topic).await,
        ErrorKind::ResourceNotFound,
        "get after empty publish",
    );
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let page = match cx
            .plane
            .list_retained_messages(token.as_deref(), Some(200))
            .await
        {
            Ok(page) => page,
            Err(e) => panic!("list failed: {e}"),
        };
        assert!(
            page.retained_topics.iter().all(|s| s.topic != topic),
            "{topic} still listed"
        );
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
}

async fn refused_topics(cx: &Ctx) {
    if cx.skip_on(
        Backend::Moto,
        "moto 5.x accepts wildcard and $ topics in Publish",
    ) {
        return;
    }
    let base = cx.topic("bad");
    for topic in [
        format!("{base}/+/x"),
        format!("{base}/#"),
        format!("${base}"),
    ] {
        expect_kind(
            cx.plane.publish(&retained(&topic, b"x", 0)).await,
            ErrorKind::InvalidRequest,
            &format!("retained publish to {topic}"),
        );
    }
}

async fn retain_false_stores_nothing(cx: &Ctx) {
    let topic = cx.topic("plain");
    cx.publish_ok(&PublishRequest {
        retain: false,
        ..retained(&topic, b"fleeting", 1)
    })
    .await;
    if cx.skip_on(Backend::Moto, MOTO_RETAINED) {
        return;
    }
    expect_kind(
        cx.plane.get_retained_message(&topic).await,
        ErrorKind::ResourceNotFound,
        "get after retain=false",
    );
}

// ---------------------------------------------------------------------------------

/// One `#[tokio::test]` per case and backend.
macro_rules! contract {
    ($backend_mod:ident, $backend:expr, [$($case:ident),* $(,)?]) => {
        mod $backend_mod {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(cx) = super::Ctx::new($backend, stringify!($case)).await {
                        super::$case(&cx).await;
                    }
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($backend_mod:ident, $backend:expr) => {
        contract!(
            $backend_mod,
            $backend,
            [
                merge_of_nested_objects,
                arrays_are_replaced_whole,
                null_removes_a_property,
                desired_null_removes_the_section,
                nulling_all_state_keeps_the_shadow,
                delta_lists_unmet_desired_values,
                metadata_timestamps_per_leaf,
                version_bumps_on_every_update,
                stale_version_conflicts,
                no_version_means_no_check,
                delete_and_recreate_keeps_counting_versions,
                named_shadows_are_independent,
                list_named_shadows_with_paging,
                missing_shadows_are_not_found,
                oversize_documents_are_refused,
                too_deep_json_is_refused,
                invalid_json_is_refused,
                null_in_arrays_is_refused,
                retained_publish_and_get,
                retained_qos_and_newest_wins,
                retained_list_with_paging,
                empty_retained_payload_deletes,
                refused_topics,
                retain_false_stores_nothing,
            ]
        );
    };
}

all_cases!(embedded, super::Backend::Embedded);
all_cases!(server, super::Backend::Server);
all_cases!(moto, super::Backend::Moto);

// ---------------------------------------------------------------------------------
// The resilient wrapper in front of the SDK adapter, against injected faults.

mod resilience {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;
    use shadowsync::dataplane::resilient::{
        CallObserver, CallOutcome, ResiliencePolicy, Resilient,
    };
    use shadowsync::dataplane::DataPlane;

    use super::{aws_plane, support};

    #[derive(Default)]
    struct Counts(Mutex<HashMap<(&'static str, &'static str), usize>>);

    impl CallObserver for Counts {
        fn on_call(&self, operation: &'static str, outcome: CallOutcome, _: Duration) {
            *self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((operation, outcome.label()))
                .or_default() += 1;
        }
    }

    impl Counts {
        fn total(&self, outcome: &str) -> usize {
            let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
            counts
                .iter()
                .filter(|((_, o), _)| *o == outcome)
                .map(|(_, n)| n)
                .sum()
        }
    }

    /// About a third of the attempts fail (429, 500/503, reset connections); with enough
    /// attempts every call gets through, and the observer sees each attempt.
    #[tokio::test]
    async fn calls_get_through_throttling_errors_and_resets() {
        let server = support::start_local_server(&[
            "--fault-throttle-rate",
            "0.2",
            "--fault-error-rate",
            "0.1",
            "--fault-drop-rate",
            "0.05",
        ])
        .unwrap_or_else(|e| panic!("the faulty server did not start: {e}"));
        let counts = Arc::new(Counts::default());
        // 15 attempts: a call fails at a rate of about 0.32^15, under 1e-7.
        let policy = ResiliencePolicy {
            max_attempts: 15,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            ..ResiliencePolicy::default()
        };
        let plane = Arc::new(
            Resilient::new(Arc::new(aws_plane(server.url.clone()).await), policy)
                .with_observer(counts.clone()),
        );

        let things: Vec<String> = (0..4)
            .map(|i| format!("resilience-{}-{i}", std::process::id()))
            .collect();
        let mut tasks = Vec::new();
        for round in 0..20 {
            for thing in &things {
                let plane = plane.clone();
                let thing = thing.clone();
                tasks.push(tokio::spawn(async move {
                    let doc = json!({"state": {"desired": {"round": round, "by": thing}}});
                    plane
                        .update_thing_shadow(&thing, None, doc.to_string().into())
                        .await
                }));
            }
        }
        for task in tasks {
            if let Err(e) = task.await.unwrap_or_else(|e| panic!("task: {e}")) {
                panic!("a call failed despite retries: {e}");
            }
        }
        for thing in &things {
            let doc = plane
                .get_thing_shadow(thing, None)
                .await
                .unwrap_or_else(|e| panic!("get {thing}: {e}"));
            assert_eq!(
                doc.state.desired.as_ref().map(|d| &d["by"]),
                Some(&json!(thing))
            );
        }

        let ok = counts.total("ok");
        let failed: usize = [
            "Throttled",
            "InternalFailure",
            "ServiceUnavailable",
            "Unreachable",
        ]
        .iter()
        .map(|o| counts.total(o))
        .sum();
        assert_eq!(
            ok, 84,
            "80 updates and 4 gets, each counted once when it succeeds"
        );
        assert!(
            counts.total("Throttled") > 0,
            "no throttle seen: {:?}",
            counts.0
        );
        assert!(failed > 0);
        eprintln!(
            "resilience: {ok} calls, {} attempts ({:.2} per call), outcomes {:?}",
            ok + failed,
            (ok + failed) as f64 / ok as f64,
            counts.0.lock().unwrap_or_else(|p| p.into_inner())
        );
    }
}
