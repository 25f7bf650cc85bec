//! End-to-end tests of tenancy: the namespace annotations `iot.shadowsync.dev/allowed-things`
//! and `iot.shadowsync.dev/allowed-topics`, and `--require-namespace-allowlist`, with the
//! real `shadowsync run` against a real control plane and the local data plane (see
//! `e2e/mod.rs`).
//!
//! Every "no call" claim is read from the data plane's own counters; each test owns its
//! data plane, and the steps of a test run one after the other, so a counter that does
//! not move between two snapshots means the operator made no call in between. Resources
//! use `refreshInterval: 0s`, so that no refresh read lands between two snapshots.
//!
//! Run with `cargo test --test tenancy_e2e`.

#[path = "e2e/mod.rs"]
mod e2e;

use e2e::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use shadowsync::dataplane::server::Operation;
use shadowsync::dataplane::ErrorKind;

const SHADOW: Kind = Kind::Shadow;
const RETAINED: Kind = Kind::Retained;
const THINGS: &str = "iot.shadowsync.dev/allowed-things";
const TOPICS: &str = "iot.shadowsync.dev/allowed-topics";

async fn create_namespace_with(s: &Stack, name: &str, annotations: Value) {
    let api: Api<Namespace> = Api::all(s.client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
            .expect("a Namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

/// A merge patch of the Namespace's annotations (`null` removes one).
async fn annotate_namespace(s: &Stack, name: &str, annotations: Value) {
    let api: Api<Namespace> = Api::all(s.client.clone());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
    )
    .await
    .unwrap_or_else(|e| panic!("annotate namespace {name}: {e}"));
}

fn shadow_spec(thing: &str, desired: Value) -> Value {
    json!({"thingName": thing, "desired": desired, "refreshInterval": "0s",
           "deletionPolicy": "Delete"})
}

fn retained_spec(topic: &str) -> Value {
    json!({"topic": topic, "payload": {"text": "hello"}, "refreshInterval": "0s"})
}

fn message_of(obj: &Value, type_: &str) -> String {
    condition(obj, type_).expect("the condition")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the resource is Stalled with reason NotAllowed for its current
/// generation, checks the shape of that state, and returns the message.
async fn wait_not_allowed(s: &Stack, kind: Kind, ns: &str, name: &str) -> String {
    let obj = s
        .wait_status(kind, ns, name, "Stalled=True reason NotAllowed", |o| {
            condition_is(o, "Stalled", "True")
                && condition_reason(o, "Stalled").as_deref() == Some("NotAllowed")
                && is_current(o)
        })
        .await;
    assert!(condition_is(&obj, "Ready", "False"), "{}", obj["status"]);
    assert_eq!(
        condition_reason(&obj, "Ready").as_deref(),
        Some("NotAllowed")
    );
    let message = message_of(&obj, "Stalled");
    assert_eq!(message, message_of(&obj, "Ready"));
    assert!(
        message.contains(&format!("namespace {ns:?}")),
        "names the namespace: {message}"
    );
    let event = s.wait_event(ns, name, "Warning", "NotAllowed").await;
    assert_eq!(
        event.message.as_deref(),
        Some(message.as_str()),
        "the event says what the condition says"
    );
    message
}

async fn assert_no_shadow(s: &Stack, thing: &str) {
    assert!(
        s.shadow(thing, None).await.is_none(),
        "no shadow was created for {thing}"
    );
}

async fn assert_no_retained(s: &Stack, topic: &str) {
    match s.retained(topic).await {
        Err(err) if err.kind == ErrorKind::ResourceNotFound => {}
        other => panic!("nothing must be retained on {topic}: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// allow-lists without --require-namespace-allowlist

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_allow_lists_restrict_things_and_topics() {
    let s = Stack::start("tenancy-allow-lists").await;
    let team = "ten-a";
    let free = "ten-b";
    create_namespace_with(
        &s,
        team,
        json!({THINGS: " ten-lamp-* , ten-hall-? ", TOPICS: "ten/+/config, ten/site/#"}),
    )
    .await;
    create_namespace_with(&s, free, json!({})).await;

    // 1. Refused targets: Stalled, a Warning Event, and no data-plane call at all.
    s.create(
        SHADOW,
        team,
        "door",
        shadow_spec("ten-door-1", json!({"open": false})),
    )
    .await;
    s.create(
        SHADOW,
        team,
        "hall-long",
        shadow_spec("ten-hall-12", json!({"on": true})),
    )
    .await;
    let refused_topics = [
        ("state", "ten/lamp/state"), // `+` matches the level, "state" is not "config"
        ("deep", "ten/a/b/config"),  // `+` is exactly one level
        ("sites", "ten/sites/berlin"), // `#` needs the level "site" before it
    ];
    for (name, topic) in refused_topics {
        s.create(RETAINED, team, name, retained_spec(topic)).await;
    }
    let message = wait_not_allowed(&s, SHADOW, team, "door").await;
    assert_eq!(
        message,
        "thing \"ten-door-1\" is not allowed in namespace \"ten-a\": it matches no entry of the \
         namespace annotation iot.shadowsync.dev/allowed-things (\"ten-lamp-* , ten-hall-?\")"
    );
    let message = wait_not_allowed(&s, SHADOW, team, "hall-long").await;
    assert!(message.contains("\"ten-hall-12\""), "{message}");
    for (name, topic) in refused_topics {
        let message = wait_not_allowed(&s, RETAINED, team, name).await;
        assert!(message.contains(&format!("topic {topic:?}")), "{message}");
        assert!(message.contains(TOPICS), "{message}");
    }
    for name in ["door", "hall-long"] {
        let obj = s.get(SHADOW, team, name).await.expect("exists");
        assert!(
            finalizers(&obj).is_empty(),
            "no finalizer on a refused resource"
        );
    }
    let stats = s.stats().await;
    assert_eq!(
        stats.total(),
        0,
        "no data-plane call for refused resources: {:?}",
        stats.0
    );
    assert_no_shadow(&s, "ten-door-1").await;
    for (_, topic) in refused_topics {
        assert_no_retained(&s, topic).await;
    }

    // 2. Allowed targets in the same namespace, and anything in a namespace without
    //    annotations.
    s.create(
        SHADOW,
        team,
        "lamp",
        shadow_spec("ten-lamp-1", json!({"power": "on"})),
    )
    .await;
    s.create(
        SHADOW,
        team,
        "hall",
        shadow_spec("ten-hall-1", json!({"power": "on"})),
    )
    .await;
    s.create(
        SHADOW,
        free,
        "free",
        shadow_spec("ten-free-1", json!({"power": "on"})),
    )
    .await;
    let allowed_topics = [
        ("config", "ten/lamp/config"),      // `+`
        ("site", "ten/site"),               // `#` also matches its parent level
        ("site-deep", "ten/site/berlin/x"), // `#` matches any depth
    ];
    for (name, topic) in allowed_topics {
        s.create(RETAINED, team, name, retained_spec(topic)).await;
    }
    s.create(RETAINED, free, "free-topic", retained_spec("anything/goes"))
        .await;
    for (ns, name) in [(team, "lamp"), (team, "hall"), (free, "free")] {
        s.wait_ready(SHADOW, ns, name).await;
    }
    for (name, _) in allowed_topics {
        s.wait_ready(RETAINED, team, name).await;
    }
    s.wait_ready(RETAINED, free, "free-topic").await;
    let stats = s.stats().await;
    assert_eq!(
        stats.calls(Operation::UpdateThingShadow),
        3,
        "{:?}",
        stats.0
    );
    assert_eq!(stats.calls(Operation::Publish), 4, "{:?}", stats.0);
    assert_no_shadow(&s, "ten-door-1").await;
    say(&format!(
        "tenancy: 5 refused and 7 allowed resources, {} data-plane calls",
        stats.total()
    ));

    // 3. Tightened: the namespace no longer allows "ten-lamp-*". The synced resource
    //    becomes NotAllowed without being touched, and from then on nothing reaches the
    //    cloud for it: not a spec change, not a forced sync, not its deletion.
    annotate_namespace(&s, team, json!({THINGS: "ten-hall-?"})).await;
    let message = wait_not_allowed(&s, SHADOW, team, "lamp").await;
    assert!(message.contains("\"ten-lamp-1\""), "{message}");
    let lamp = s.get(SHADOW, team, "lamp").await.expect("exists");
    assert_eq!(
        lamp["metadata"]["generation"],
        json!(1),
        "the resource was not touched"
    );
    assert!(condition_is(
        &s.get(SHADOW, team, "hall").await.expect("exists"),
        "Ready",
        "True"
    ));
    let before = s.stats().await;
    s.merge_patch(
        SHADOW,
        team,
        "lamp",
        json!({"spec": {"desired": {"power": "off"}}}),
    )
    .await;
    s.wait_status(SHADOW, team, "lamp", "NotAllowed for generation 2", |o| {
        o["status"]["observedGeneration"] == json!(2)
            && condition_reason(o, "Stalled").as_deref() == Some("NotAllowed")
            && is_current(o)
    })
    .await;
    s.annotate(SHADOW, team, "lamp", RECONCILE_REQUESTED, Some("now"))
        .await;
    s.delete(SHADOW, team, "lamp").await;
    s.wait_gone(SHADOW, team, "lamp").await;
    let skipped = s
        .wait_event(team, "lamp", "Warning", "CleanupSkipped")
        .await;
    let note = skipped.message.unwrap_or_default();
    assert!(note.contains("cleanup was skipped"), "{note}");
    assert!(note.contains(THINGS), "{note}");
    let after = s.stats().await;
    assert_eq!(
        after.total(),
        before.total(),
        "no call after the resource was refused: {:?}",
        after.0
    );
    assert_eq!(after.calls(Operation::DeleteThingShadow), 0);
    let cloud = s
        .shadow("ten-lamp-1", None)
        .await
        .expect("deletionPolicy Delete was skipped: the shadow stays");
    assert_eq!(
        cloud.state.desired.clone().unwrap_or_default(),
        json!({"power": "on"}),
        "the cloud keeps what was written while allowed"
    );

    // 4. Loosened: a refused resource becomes Ready without being touched.
    annotate_namespace(&s, team, json!({THINGS: "ten-hall-?, ten-door-*"})).await;
    s.wait_ready(SHADOW, team, "door").await;
    let door = s.get(SHADOW, team, "door").await.expect("exists");
    assert_eq!(door["metadata"]["generation"], json!(1));
    assert_eq!(
        s.shadow("ten-door-1", None)
            .await
            .expect("written once allowed")
            .state
            .desired,
        Some(json!({"open": false}))
    );
    // Removing the annotation lifts every restriction (no --require-namespace-allowlist).
    annotate_namespace(&s, team, json!({TOPICS: null})).await;
    for (name, _) in refused_topics {
        s.wait_ready(RETAINED, team, name).await;
    }
}

// ---------------------------------------------------------------------------------
// malformed entries and duplicate targets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_fail_closed_and_refused_resources_never_own_a_target() {
    let s = Stack::start("tenancy-malformed").await;

    // A malformed entry refuses everything of its kind, naming the entry and the rule.
    let team = "ten-c";
    create_namespace_with(
        &s,
        team,
        json!({THINGS: "ten-c-*, ten c", TOPICS: "ten/c/#, ten/#/bad"}),
    )
    .await;
    s.create(
        SHADOW,
        team,
        "lamp",
        shadow_spec("ten-c-1", json!({"power": "on"})),
    )
    .await;
    s.create(RETAINED, team, "config", retained_spec("ten/c/config"))
        .await;
    let message = wait_not_allowed(&s, SHADOW, team, "lamp").await;
    assert!(message.contains(THINGS), "{message}");
    assert!(message.contains("invalid entry \"ten c\""), "{message}");
    assert!(
        message.contains("may contain only"),
        "names the rule: {message}"
    );
    let message = wait_not_allowed(&s, RETAINED, team, "config").await;
    assert!(message.contains(TOPICS), "{message}");
    assert!(message.contains("invalid entry \"ten/#/bad\""), "{message}");
    assert!(
        message.contains("'#' must be a whole level and the last one"),
        "names the rule: {message}"
    );
    let message = {
        annotate_namespace(&s, team, json!({TOPICS: "ten/c/#, sp+ort"})).await;
        s.wait_status(
            RETAINED,
            team,
            "config",
            "the new rule in the message",
            |o| {
                condition(o, "Stalled")
                    .is_some_and(|c| c["message"].as_str().unwrap_or_default().contains("sp+ort"))
            },
        )
        .await;
        message_of(
            &s.get(RETAINED, team, "config").await.expect("exists"),
            "Stalled",
        )
    };
    assert!(message.contains("'+' must be a whole level"), "{message}");
    assert_eq!(s.stats().await.total(), 0, "fail closed: no call");

    // Fixed: both become Ready without being touched.
    annotate_namespace(&s, team, json!({THINGS: "ten-c-*", TOPICS: "ten/c/#"})).await;
    s.wait_ready(SHADOW, team, "lamp").await;
    s.wait_ready(RETAINED, team, "config").await;

    // An older resource its namespace refuses does not block a newer, allowed one in
    // another namespace. "ten-d" sorts before "ten-e", so the refused one is older even
    // when both were created within the same second.
    let (refusing, allowing) = ("ten-d", "ten-e");
    create_namespace_with(&s, refusing, json!({THINGS: "nothing-*"})).await;
    create_namespace_with(&s, allowing, json!({THINGS: "ten-dup-*"})).await;
    let thing = "ten-dup-1";
    s.create(
        SHADOW,
        refusing,
        "lamp",
        shadow_spec(thing, json!({"owner": "d"})),
    )
    .await;
    wait_not_allowed(&s, SHADOW, refusing, "lamp").await;
    s.create(
        SHADOW,
        allowing,
        "lamp",
        shadow_spec(thing, json!({"owner": "e"})),
    )
    .await;
    s.wait_ready(SHADOW, allowing, "lamp").await;
    let cloud = s
        .shadow(thing, None)
        .await
        .expect("written by the allowed one");
    assert_eq!(cloud.state.desired, Some(json!({"owner": "e"})));
    let still = s.get(SHADOW, refusing, "lamp").await.expect("exists");
    assert_eq!(
        condition_reason(&still, "Stalled").as_deref(),
        Some("NotAllowed")
    );

    // Once its namespace allows it, the older one owns the target again, and the newer
    // one, re-queued by the namespace change, steps back without any edit.
    annotate_namespace(&s, refusing, json!({THINGS: "ten-dup-*"})).await;
    s.wait_ready(SHADOW, refusing, "lamp").await;
    s.wait_status(
        SHADOW,
        allowing,
        "lamp",
        "Stalled=True reason DuplicateTarget",
        |o| condition_reason(o, "Stalled").as_deref() == Some("DuplicateTarget"),
    )
    .await;
}

// ---------------------------------------------------------------------------------
// --require-namespace-allowlist

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_namespace_allowlist_refuses_namespaces_without_the_annotation() {
    let mut s = Stack::without_operator("tenancy-require").await;
    s.start_operator(&["--require-namespace-allowlist"]).await;
    let bare = "req-bare";
    let things_only = "req-things";
    create_namespace_with(&s, bare, json!({})).await;
    create_namespace_with(&s, things_only, json!({THINGS: "req-*"})).await;

    s.create(
        SHADOW,
        bare,
        "lamp",
        shadow_spec("req-bare-1", json!({"power": "on"})),
    )
    .await;
    s.create(RETAINED, bare, "config", retained_spec("req/bare/config"))
        .await;
    s.create(
        RETAINED,
        things_only,
        "config",
        retained_spec("req/things/config"),
    )
    .await;
    let message = wait_not_allowed(&s, SHADOW, bare, "lamp").await;
    assert_eq!(
        message,
        "thing \"req-bare-1\" is not allowed in namespace \"req-bare\": the namespace has no \
         annotation iot.shadowsync.dev/allowed-things and the operator runs with \
         --require-namespace-allowlist, so it may target no thing"
    );
    let message = wait_not_allowed(&s, RETAINED, bare, "config").await;
    assert!(message.contains(TOPICS), "{message}");
    assert!(
        message.contains("--require-namespace-allowlist"),
        "{message}"
    );
    // One annotation does not stand for the other.
    let message = wait_not_allowed(&s, RETAINED, things_only, "config").await;
    assert!(message.contains(TOPICS), "{message}");
    let stats = s.stats().await;
    assert_eq!(stats.total(), 0, "no call: {:?}", stats.0);

    s.create(
        SHADOW,
        things_only,
        "lamp",
        shadow_spec("req-1", json!({"power": "on"})),
    )
    .await;
    s.wait_ready(SHADOW, things_only, "lamp").await;

    // An explicitly empty annotation allows nothing either.
    annotate_namespace(&s, bare, json!({THINGS: ""})).await;
    s.wait_status(SHADOW, bare, "lamp", "the empty-annotation message", |o| {
        condition(o, "Stalled").is_some_and(|c| {
            c["message"]
                .as_str()
                .unwrap_or_default()
                .contains("is empty, which allows no thing")
        })
    })
    .await;
    // The platform team grants the namespace its things: Ready without touching it.
    annotate_namespace(&s, bare, json!({THINGS: "req-bare-*"})).await;
    s.wait_ready(SHADOW, bare, "lamp").await;
    let stats = s.stats().await;
    assert_eq!(
        stats.calls(Operation::UpdateThingShadow),
        2,
        "{:?}",
        stats.0
    );
    assert_eq!(stats.calls(Operation::Publish), 0, "{:?}", stats.0);
}

/// With `--namespace`, the operator watches only that Namespace object (a field
/// selector on its name, as the chart's RBAC limited by `resourceNames` requires).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watched_namespace_follows_its_annotations() {
    let mut s = Stack::without_operator("tenancy-one-namespace").await;
    let team = "one-team";
    create_namespace_with(&s, team, json!({TOPICS: "one/#"})).await;
    s.start_operator(&["--namespace", team, "--require-namespace-allowlist"])
        .await;
    s.create(
        SHADOW,
        team,
        "lamp",
        shadow_spec("one-lamp", json!({"power": "on"})),
    )
    .await;
    s.create(RETAINED, team, "config", retained_spec("one/config"))
        .await;
    wait_not_allowed(&s, SHADOW, team, "lamp").await;
    s.wait_ready(RETAINED, team, "config").await;
    annotate_namespace(&s, team, json!({THINGS: "one-*"})).await;
    s.wait_ready(SHADOW, team, "lamp").await;
    // The Namespace came from the cache (its watch follows the field selector), never
    // from the fallback read of a namespace the cache does not know yet.
    let get = format!("verb=get&resource=namespaces&user={OPERATOR_USER}");
    let watch = format!("verb=watch&resource=namespaces&user={OPERATOR_USER}");
    assert_eq!(s.api_count(&get).await, 0);
    assert!(s.api_count(&watch).await >= 1);
}

/// `deploy/examples/tenancy/tenancy.yaml` does what its comments say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenancy_example_behaves_as_documented() {
    let s = Stack::start("tenancy-example").await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/examples/tenancy/tenancy.yaml");
    let text = std::fs::read_to_string(&path).expect("the example");
    let mut expected = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let doc = <Value as serde::Deserialize>::deserialize(document).expect("a YAML document");
        let name = doc["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        match doc["kind"].as_str() {
            Some("Namespace") => {
                create_namespace_with(&s, &name, doc["metadata"]["annotations"].clone()).await
            }
            Some(kind) => {
                let kind = if kind == "ThingShadow" {
                    SHADOW
                } else {
                    RETAINED
                };
                let ns = doc["metadata"]["namespace"].as_str().expect("a namespace");
                s.create(kind, ns, &name, doc["spec"].clone()).await;
                expected.push((kind, ns.to_string(), name));
            }
            None => panic!("a document without kind in {}", path.display()),
        }
    }
    assert_eq!(expected.len(), 3, "{expected:?}");
    for (kind, ns, name) in &expected {
        if name == "thermostat" {
            let message = wait_not_allowed(&s, *kind, ns, name).await;
            // The comment wraps the message; compare without the line breaks.
            let flat: String = text
                .lines()
                .map(|l| l.trim_start_matches('#').trim())
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                flat.contains(&message),
                "the example quotes the message: {message}"
            );
            assert_no_shadow(&s, "thermostat-1").await;
        } else {
            s.wait_ready(*kind, ns, name).await;
        }
    }

    // `shadowsync apply` has no namespaces to read: the allow-lists do not apply to it
    // (README, "Tenancy"). The Namespace document is skipped and the refused shadow is
    // written.
    let dir = s.dir.join("cli");
    std::fs::create_dir_all(&dir).expect("a directory for the CLI state");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shadowsync"))
        .args(["apply", "-f", path.to_str().expect("a UTF-8 path")])
        .args(["--endpoint-url", &s.dp_url])
        .current_dir(&dir)
        .env_remove("SHADOWSYNC_DATA_PLANE")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "e2e")
        .env("AWS_SECRET_ACCESS_KEY", "e2e")
        .output()
        .expect("run shadowsync apply");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("lighting/thermostat"))
        .unwrap_or_else(|| panic!("no line for the thermostat: {stdout}"));
    assert!(line.contains("True"), "{line}");
    assert!(s.shadow("thermostat-1", None).await.is_some());
}
