//! The real `shadowsync import` binary against the embedded default data plane
//! (`.shadowsync/dataplane.redb` in a temporary folder), filled by opening the store
//! directly, then `apply` of what it printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::{DataPlane, PublishRequest, GREENGRASS_SHADOW};

/// Named shadows of the gateway: more than one page of ListNamedShadowsForThing (25).
const GATEWAY_SHADOWS: usize = 30;
const LONG_TOPIC_LEAF: &str =
    "a-very-long-topic-level-that-makes-the-derived-name-longer-than-sixty-three";

/// The binary cargo built for these tests, or `$SHADOWSYNC_BIN` (as for the Python
/// suites).
fn binary() -> PathBuf {
    std::env::var_os("SHADOWSYNC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shadowsync")))
}

fn shadowsync(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env_remove("SHADOWSYNC_ENDPOINT_URL")
        .env_remove("SHADOWSYNC_DATA_PLANE")
        .env_remove("SHADOWSYNC_DB")
        .env_remove("SHADOWSYNC_STATE")
        .output()
        .expect("run shadowsync")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join(".shadowsync/dataplane.redb")
}

fn open(dir: &Path) -> EmbeddedDataPlane {
    let db = db_path(dir);
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    EmbeddedDataPlane::open(&db).expect("open the data-plane file")
}

async fn update(store: &EmbeddedDataPlane, thing: &str, shadow: Option<&str>, doc: Value) {
    store
        .update_thing_shadow(thing, shadow, Bytes::from(doc.to_string()))
        .await
        .unwrap_or_else(|e| panic!("update {thing}/{shadow:?}: {e}"));
}

async fn retain(
    store: &EmbeddedDataPlane,
    topic: &str,
    payload: &[u8],
    qos: i32,
    props: &[(&str, &str)],
) {
    store
        .publish(&PublishRequest {
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload),
            qos,
            retain: true,
            user_properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("publish {topic}: {e}"));
}

fn lamp_desired() -> Value {
    // Keys and values a YAML 1.1 reader would take for booleans, octal or times.
    json!({
        "power": "on",
        "color": {"r": 255, "g": 180, "b": 40},
        "schedule": {"weekdays": {"on": "06:30", "off": "23:00"}, "yes": true},
        "zones": [1, 2, 3],
        "label": "010",
        "ratio": 0.25,
        "gain": 1.0,
        "note": "line 1\nline 2: \"quoted\""
    })
}

fn gateway_desired(i: usize) -> Value {
    json!({"slot": i, "nested": {"a": {"b": [i, "x"], "c": {"d": parity(i)}}}})
}

fn parity(i: usize) -> Value {
    if i.is_multiple_of(2) {
        json!("even")
    } else {
        json!(false)
    }
}

/// Things, shadows and retained messages as an existing fleet would have them, with
/// device reports in between so that versions are not all 1.
async fn fill(dir: &Path) {
    let store = open(dir);
    update(
        &store,
        "Kitchen_Lamp",
        None,
        json!({"state": {"desired": lamp_desired(), "reported": {"power": "off"}}}),
    )
    .await;
    update(
        &store,
        "Kitchen_Lamp",
        None,
        json!({"state": {"reported": {"power": "on"}}}),
    )
    .await;
    // The gateway's classic shadow holds only reported state.
    update(
        &store,
        "fleet-gw",
        None,
        json!({"state": {"reported": {"uptime": 5}}}),
    )
    .await;
    // Written in reverse so that the output order is not the write order.
    for i in (0..GATEWAY_SHADOWS).rev() {
        let shadow = format!("cfg-{i:02}");
        update(
            &store,
            "fleet-gw",
            Some(&shadow),
            json!({"state": {"desired": gateway_desired(i)}}),
        )
        .await;
    }
    update(
        &store,
        "fleet-gw",
        Some(GREENGRASS_SHADOW),
        json!({"state": {"desired": {"deployment": "x"}}}),
    )
    .await;
    // Two things whose names derive the same manifest name.
    update(
        &store,
        "lamp",
        None,
        json!({"state": {"desired": {"level": 1}}}),
    )
    .await;
    update(
        &store,
        "LAMP",
        None,
        json!({"state": {"desired": {"level": 2}}}),
    )
    .await;

    retain(
        &store,
        "fleet/config/json",
        br#"{"a":1,"b":{"c":[true,null],"d":"on"}}"#,
        1,
        &[("site", "berlin"), ("site", "lab"), ("owner", "ops")],
    )
    .await;
    retain(
        &store,
        "fleet/config/pretty",
        br#"{"b": 1, "a": 2}"#,
        0,
        &[],
    )
    .await;
    retain(
        &store,
        "fleet/firmware/blob",
        &[0xff, 0x00, 0x10, 0x80],
        1,
        &[],
    )
    .await;
    retain(&store, "fleet/banner", b"on", 0, &[("lang", "en")]).await;
    retain(&store, &format!("fleet/{LONG_TOPIC_LEAF}"), b"1.0", 0, &[]).await;
    retain(&store, "other/ignored", b"not under the prefix", 0, &[]).await;
}

const THINGS: [&str; 5] = ["Kitchen_Lamp", "fleet-gw", "no-such-thing", "lamp", "LAMP"];

fn import_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["import", "--thing"];
    args.extend(THINGS);
    args.extend(extra);
    args
}

#[derive(Debug, Deserialize)]
struct Doc {
    kind: String,
    metadata: Meta,
    spec: Value,
}

#[derive(Debug, Deserialize)]
struct Meta {
    name: String,
    namespace: String,
}

fn documents(yaml: &str) -> Vec<Doc> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::from_value(v).expect("a manifest"))
        .collect()
}

fn target(doc: &Doc) -> String {
    match doc.kind.as_str() {
        "ThingShadow" => format!(
            "{}/{}",
            doc.spec["thingName"].as_str().unwrap(),
            doc.spec["shadowName"].as_str().unwrap_or("(classic)")
        ),
        _ => doc.spec["topic"].as_str().unwrap().to_string(),
    }
}

#[tokio::test]
async fn import_prints_one_manifest_per_shadow_and_retained_message() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path()).await;

    let out = shadowsync(
        dir.path(),
        &import_args(&[
            "--retained",
            "--topic-prefix",
            "fleet/",
            "--namespace",
            "fleet",
        ]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.starts_with(
            "# Imported by `shadowsync import` from the embedded data plane stored in \
             .shadowsync/dataplane.redb: shadows of Kitchen_Lamp, fleet-gw, no-such-thing, lamp, LAMP; \
             retained messages with topics starting with \"fleet/\".\n---\n"
        ),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("Using the embedded data plane stored in .shadowsync/dataplane.redb"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("note: fleet-gw/{GREENGRASS_SHADOW}: skipped")),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: thing no-such-thing has no shadows"),
        "{stderr}"
    );

    let docs = documents(&stdout);
    // Things in the order given, classic first, named by name; then topics sorted.
    let mut expected: Vec<String> =
        vec!["Kitchen_Lamp/(classic)".into(), "fleet-gw/(classic)".into()];
    expected.extend((0..GATEWAY_SHADOWS).map(|i| format!("fleet-gw/cfg-{i:02}")));
    expected.extend([
        "lamp/(classic)".into(),
        "LAMP/(classic)".into(),
        format!("fleet/{LONG_TOPIC_LEAF}"),
        "fleet/banner".into(),
        "fleet/config/json".into(),
        "fleet/config/pretty".into(),
        "fleet/firmware/blob".into(),
    ]);
    let targets: Vec<String> = docs.iter().map(target).collect();
    assert_eq!(targets, expected);

    let by_target: BTreeMap<String, &Doc> = docs.iter().map(|d| (target(d), d)).collect();
    for doc in &docs {
        assert_eq!(doc.metadata.namespace, "fleet");
        let name = &doc.metadata.name;
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-'),
            "{name} is not a DNS-1123 label"
        );
    }

    // Shadows: names, nested desired exactly as the cloud holds it, no desired when none.
    let lamp = by_target["Kitchen_Lamp/(classic)"];
    assert_eq!(lamp.metadata.name, "kitchen-lamp");
    assert_eq!(
        lamp.spec,
        json!({"thingName": "Kitchen_Lamp", "desired": lamp_desired()})
    );
    let gateway = by_target["fleet-gw/(classic)"];
    assert_eq!(gateway.metadata.name, "fleet-gw");
    assert_eq!(gateway.spec, json!({"thingName": "fleet-gw"}));
    for i in 0..GATEWAY_SHADOWS {
        let doc = by_target[&format!("fleet-gw/cfg-{i:02}")];
        assert_eq!(doc.metadata.name, format!("fleet-gw-cfg-{i:02}"));
        assert_eq!(
            doc.spec,
            json!({"thingName": "fleet-gw", "shadowName": format!("cfg-{i:02}"), "desired": gateway_desired(i)})
        );
    }
    // "lamp" keeps its own name; "LAMP" would take the same one and gets a hash suffix.
    assert_eq!(by_target["lamp/(classic)"].metadata.name, "lamp");
    let upper = &by_target["LAMP/(classic)"].metadata.name;
    assert!(
        upper.starts_with("lamp-") && upper.len() == "lamp-".len() + 8,
        "{upper}"
    );

    // Retained messages: json only when it re-serialises to the same bytes.
    let json_doc = by_target["fleet/config/json"];
    assert_eq!(json_doc.metadata.name, "fleet-config-json");
    assert_eq!(
        json_doc.spec,
        json!({
            "topic": "fleet/config/json",
            "payload": {"json": {"a": 1, "b": {"c": [true, null], "d": "on"}}},
            "qos": 1,
            "userProperties": [
                {"key": "site", "value": "berlin"},
                {"key": "site", "value": "lab"},
                {"key": "owner", "value": "ops"}
            ]
        })
    );
    assert_eq!(
        by_target["fleet/config/pretty"].spec["payload"],
        json!({"text": r#"{"b": 1, "a": 2}"#})
    );
    assert_eq!(
        by_target["fleet/firmware/blob"].spec["payload"],
        json!({"base64": "/wAQgA=="})
    );
    assert_eq!(
        by_target["fleet/banner"].spec["payload"],
        json!({"text": "on"})
    );
    assert_eq!(by_target["fleet/banner"].spec["qos"], json!(0));
    // `1.0` would come back from the Kubernetes API as `1`: imported as text.
    let long = by_target[format!("fleet/{LONG_TOPIC_LEAF}").as_str()];
    assert_eq!(long.spec["payload"], json!({"text": "1.0"}));
    assert_eq!(long.metadata.name.len(), 63, "{}", long.metadata.name);
    assert!(long.metadata.name.starts_with("fleet-a-very-long-topic"));
    // YAML 1.1 readers (kubectl) must not see booleans: the risky strings are quoted.
    assert!(stdout.contains("    power: \"on\"\n"), "{stdout}");
    assert!(stdout.contains("      \"on\": \"06:30\"\n"), "{stdout}");
    assert!(stdout.contains("    text: \"on\"\n"), "{stdout}");
}

#[tokio::test]
async fn retained_listing_follows_every_page() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path()).await;
    let out = shadowsync(dir.path(), &["import", "--retained", "--page-size", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let docs = documents(&String::from_utf8_lossy(&out.stdout));
    let topics: Vec<String> = docs.iter().map(target).collect();
    assert_eq!(
        topics,
        [
            format!("fleet/{LONG_TOPIC_LEAF}"),
            "fleet/banner".into(),
            "fleet/config/json".into(),
            "fleet/config/pretty".into(),
            "fleet/firmware/blob".into(),
            "other/ignored".into(),
        ]
    );
    assert!(docs.iter().all(|d| d.metadata.namespace == "default"));
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .ends_with(": all retained messages."));
}

/// Payload, qos, user properties and lastModifiedTime of one retained message.
type RetainedView = (Bytes, i32, Vec<(String, String)>, i64);

struct Snapshot {
    versions: BTreeMap<String, u64>,
    retained: BTreeMap<String, RetainedView>,
}

async fn snapshot(dir: &Path) -> Snapshot {
    let store = EmbeddedDataPlane::open(db_path(dir)).unwrap();
    let mut versions = BTreeMap::new();
    for thing in ["Kitchen_Lamp", "fleet-gw", "lamp", "LAMP"] {
        let classic = store.get_thing_shadow(thing, None).await.unwrap();
        versions.insert(format!("{thing}/(classic)"), classic.version);
        let mut token = None;
        loop {
            let page = store
                .list_named_shadows_for_thing(thing, token.as_deref(), Some(100))
                .await
                .unwrap();
            for name in page.results {
                let doc = store.get_thing_shadow(thing, Some(&name)).await.unwrap();
                versions.insert(format!("{thing}/{name}"), doc.version);
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
    }
    let mut retained = BTreeMap::new();
    let page = store.list_retained_messages(None, None).await.unwrap();
    for topic in page.retained_topics {
        let m = store.get_retained_message(&topic.topic).await.unwrap();
        retained.insert(
            topic.topic,
            (m.payload, m.qos, m.user_properties, m.last_modified_time),
        );
    }
    Snapshot { versions, retained }
}

#[tokio::test]
async fn applying_the_import_writes_no_shadow() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path()).await;
    let imported = shadowsync(dir.path(), &import_args(&[]));
    assert_eq!(imported.status.code(), Some(0), "{}", text(&imported));
    std::fs::write(dir.path().join("imported.yaml"), &imported.stdout).unwrap();
    let before = snapshot(dir.path()).await;
    assert_eq!(before.versions.len(), 4 + GATEWAY_SHADOWS + 1);

    // A fresh state file: nothing is owned yet, as on a first apply of imported manifests.
    let applied = shadowsync(
        dir.path(),
        &[
            "apply",
            "-f",
            "imported.yaml",
            "--state",
            "fresh-state.json",
        ],
    );
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    let after = snapshot(dir.path()).await;
    assert_eq!(
        after.versions,
        before.versions,
        "a shadow version moved: {}",
        text(&applied)
    );

    let diff = shadowsync(
        dir.path(),
        &["diff", "-f", "imported.yaml", "--state", "fresh-state.json"],
    );
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
}

/// The imported payload, qos and user properties are exactly the cloud's. A first apply
/// still publishes each retained message once: with no `appliedSha256` recorded,
/// `plan_retained` publishes even when everything GetRetainedMessage shows matches,
/// because content type, expiry, response topic and correlation data cannot be read
/// back. The second apply publishes nothing.
#[tokio::test]
async fn applying_the_import_republishes_each_retained_message_once_with_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path()).await;
    let imported = shadowsync(dir.path(), &["import", "--retained"]);
    assert_eq!(imported.status.code(), Some(0), "{}", text(&imported));
    std::fs::write(dir.path().join("imported.yaml"), &imported.stdout).unwrap();
    let before = snapshot(dir.path()).await;
    assert_eq!(before.retained.len(), 6);

    let state = ["--state", "fresh-state.json"];
    let first = shadowsync(
        dir.path(),
        &[&["apply", "-f", "imported.yaml"][..], &state].concat(),
    );
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let after_first = snapshot(dir.path()).await;
    for (topic, (payload, qos, props, modified)) in &before.retained {
        let (p, q, u, m) = &after_first.retained[topic];
        assert_eq!((p, q, u), (payload, qos, props), "{topic} changed");
        assert_eq!(
            m, modified,
            "{topic} was re-published by applying its import"
        );
    }

    let second = shadowsync(
        dir.path(),
        &[&["apply", "-f", "imported.yaml"][..], &state].concat(),
    );
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let after_second = snapshot(dir.path()).await;
    assert_eq!(
        after_second.retained, after_first.retained,
        "the second apply re-published"
    );
}

#[test]
fn bad_flags_and_a_missing_database_fail_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let bad = shadowsync(
        dir.path(),
        &["import", "--thing", "bad name!", "--namespace", "Fleet"],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--thing \"bad name!\": must match [a-zA-Z0-9:_-]{1,128}"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--namespace \"Fleet\": must be a DNS-1123 label"),
        "{stderr}"
    );
    assert!(bad.stdout.is_empty());

    let missing = shadowsync(dir.path(), &["import", "--thing", "lamp"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("no data-plane database at .shadowsync/dataplane.redb: nothing to import"),
        "{}",
        text(&missing)
    );
    assert!(!db_path(dir.path()).exists(), "import created a database");

    let nothing = shadowsync(dir.path(), &["import"]);
    assert_eq!(nothing.status.code(), Some(2), "{}", text(&nothing));
    let prefix_alone = shadowsync(
        dir.path(),
        &["import", "--thing", "a", "--topic-prefix", "x/"],
    );
    assert_eq!(
        prefix_alone.status.code(),
        Some(2),
        "{}",
        text(&prefix_alone)
    );
}
