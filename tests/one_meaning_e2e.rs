//! One manifest, one meaning, end to end: the same files go through `shadowsync apply`
//! (against a data plane of its own) and through `kubectl apply` and the operator
//! (against another), and the two clouds must hold the same bytes: every shadow's desired
//! section and every retained payload, QoS and user properties.
//!
//! The files use every YAML form both readers accept alike (quoted words that YAML 1.1
//! would take for booleans, integral and fractional floats, exponents, large integers,
//! anchors, aliases and merge keys, block scalars, flow and JSON styles, unicode, comments
//! and escaped tabs), so that a difference in reading shows as a difference in the cloud. What
//! `apply` refuses is covered by `tests/yaml_kubectl.rs`.
//!
//! `cargo test --test one_meaning_e2e -- --nocapture`

#[path = "e2e/mod.rs"]
mod e2e;

use std::process::Command;

use e2e::*;
use serde_json::Value;
use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::DataPlane;

const NAMESPACE: &str = "one-meaning";

/// Three files of YAML a person writes, both kinds, each value in a form that YAML 1.1
/// (kubectl) and YAML 1.2 read alike.
const FILES: [(&str, &str); 3] = [
    (
        "lamps.yaml",
        r#"# Lamps, with the values people write.
apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata:
  name: porch
  namespace: one-meaning
spec:
  thingName: one-meaning-porch
  desired:
    power: "on"          # quoted: a string for every reader
    mode: 'no'
    enabled: true
    level: 10
    ratio: 0.25
    gain: 1.0            # the apiserver keeps 1
    big: 9007199254740993
    tiny: -1.5e-7
    scale: 1.0e+3
    name: "Ünïcødé ☀"
    label: "tab\there"   # an escaped tab in a quoted string
    colors: [red, "yes", 3]
    schedule:
      weekdays: {"on": "07:00", "off": "22:30"}
---
apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata: {name: hall, namespace: one-meaning}
spec: {"thingName": "one-meaning-hall", "shadowName": "config",
       "desired": {"power": "off", "level": 0, "ratio": 12.5, "list": [1.0, 2.5, -0.0]}}
"#,
    ),
    (
        "anchors.yaml",
        r#"apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata:
  name: kitchen
  namespace: one-meaning
spec:
  thingName: one-meaning-kitchen
  desired:
    defaults: &defaults
      power: "off"
      level: 3
      note: |
        first line
        second line
    evening:
      <<: *defaults
      level: 7
    copy: *defaults
    folded: >
      one
      two
"#,
    ),
    (
        "retained.yaml",
        r#"apiVersion: iot.shadowsync.dev/v1alpha1
kind: RetainedMessage
metadata:
  name: config
  namespace: one-meaning
spec:
  topic: one-meaning/config
  qos: 1
  userProperties:
    - {key: site, value: "on"}
    - {key: site, value: berlin}
  payload:
    json:
      interval: 30
      factor: 2.0
      precise: 0.1
      words: ["y", "n", "~"]
      nested: {a: [1, 2.50, 3.0e+2]}
---
apiVersion: iot.shadowsync.dev/v1alpha1
kind: RetainedMessage
metadata:
  name: banner
  namespace: one-meaning
spec:
  topic: one-meaning/banner
  payload:
    text: |-
      Grüße
        indented line
---
apiVersion: iot.shadowsync.dev/v1alpha1
kind: RetainedMessage
metadata:
  name: blob
  namespace: one-meaning
spec:
  topic: one-meaning/blob
  payload:
    base64: AAECAwQF/w==
"#,
    ),
];

const SHADOWS: [(&str, Option<&str>); 3] = [
    ("one-meaning-porch", None),
    ("one-meaning-hall", Some("config")),
    ("one-meaning-kitchen", None),
];
const TOPICS: [&str; 3] = [
    "one-meaning/config",
    "one-meaning/banner",
    "one-meaning/blob",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_the_operator_leave_the_same_bytes_in_the_cloud() {
    let s = Stack::start("one-meaning").await;
    s.create_namespace(NAMESPACE).await;
    let files = s.dir.join("manifests");
    std::fs::create_dir_all(&files).expect("manifest folder");
    for (name, text) in FILES {
        std::fs::write(files.join(name), text).expect("manifest");
    }

    // Through kubectl and the operator, into the stack's data plane.
    let kubectl = find_kubectl().expect("kubectl");
    let out = Command::new(&kubectl)
        .args(["apply", "-f"])
        .arg(&files)
        .env("KUBECONFIG", &s.kubeconfig)
        .env("KUBECACHEDIR", s.dir.join("kubectl-cache"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["porch", "hall", "kitchen"] {
        s.wait_ready(Kind::Shadow, NAMESPACE, name).await;
    }
    for name in ["config", "banner", "blob"] {
        s.wait_ready(Kind::Retained, NAMESPACE, name).await;
    }

    // Through `shadowsync apply`, into a data plane of its own.
    let (_apply_plane, apply_url) = s.spawn_dataplane("dataplane-apply");
    let state = s.dir.join("apply-state");
    std::fs::create_dir_all(&state).expect("state folder");
    let out = Command::new(env!("CARGO_BIN_EXE_shadowsync"))
        .args(["apply", "--endpoint-url", &apply_url, "-f"])
        .arg(&files)
        .current_dir(&state)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "e2e")
        .env("AWS_SECRET_ACCESS_KEY", "e2e")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("shadowsync apply runs");
    assert!(
        out.status.success(),
        "apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = AwsDataPlane::connect(AwsOptions {
        endpoint_url: Some(apply_url.clone()),
        region: Some("us-east-1".into()),
    })
    .await
    .expect("an SDK client");

    for (thing, shadow) in SHADOWS {
        let by_operator = s.plane.get_thing_shadow(thing, shadow).await;
        let by_apply = applied.get_thing_shadow(thing, shadow).await;
        let (by_operator, by_apply) = match (by_operator, by_apply) {
            (Ok(a), Ok(b)) => (a, b),
            other => panic!("{thing}: {other:?}"),
        };
        let a = serde_json::to_string(&by_operator.state.desired).expect("json");
        let b = serde_json::to_string(&by_apply.state.desired).expect("json");
        assert_eq!(
            a, b,
            "{thing}: operator (left) and apply (right) wrote different desired sections"
        );
        assert!(
            by_operator
                .state
                .desired
                .as_ref()
                .is_some_and(Value::is_object),
            "{thing}: a desired section was written"
        );
    }
    // And what both wrote is what kubectl means (not only the same as each other).
    let porch = s
        .plane
        .get_thing_shadow("one-meaning-porch", None)
        .await
        .expect("porch");
    let desired = porch.state.desired.expect("desired");
    assert_eq!(desired["power"], serde_json::json!("on"));
    assert_eq!(desired["mode"], serde_json::json!("no"));
    assert_eq!(serde_json::to_string(&desired["gain"]).expect("json"), "1");
    assert_eq!(desired["big"], serde_json::json!(9007199254740993u64));
    assert_eq!(desired["label"], serde_json::json!("tab\there"));
    assert_eq!(
        desired["schedule"]["weekdays"]["on"],
        serde_json::json!("07:00")
    );
    let kitchen = s
        .plane
        .get_thing_shadow("one-meaning-kitchen", None)
        .await
        .expect("kitchen");
    let desired = kitchen.state.desired.expect("desired");
    assert_eq!(
        desired["evening"],
        serde_json::json!({"power": "off", "level": 7, "note": "first line\nsecond line\n"})
    );
    assert_eq!(desired["folded"], serde_json::json!("one two\n"));

    for topic in TOPICS {
        let by_operator = s.plane.get_retained_message(topic).await.expect(topic);
        let by_apply = applied.get_retained_message(topic).await.expect(topic);
        assert_eq!(
            by_operator.payload, by_apply.payload,
            "{topic}: operator (left) and apply (right) published different bytes"
        );
        assert_eq!(by_operator.qos, by_apply.qos, "{topic}: QoS");
        assert_eq!(
            by_operator.user_properties, by_apply.user_properties,
            "{topic}: user properties"
        );
    }
    say(&format!(
        "one meaning: {} shadows and {} retained messages byte-identical through apply and \
         through kubectl + the operator",
        SHADOWS.len(),
        TOPICS.len()
    ));
}
