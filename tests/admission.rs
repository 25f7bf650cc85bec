//! The CRDs and the shipped manifests at a real kube-apiserver's admission: the three CRDs
//! are applied server-side without a warning and come out structural and established;
//! every manifest under `deploy/examples/` (recursively) and `deploy/install.yaml` is
//! admitted (server-side apply, as Argo CD and Flux send them), twice without a change;
//! the CEL transition rules keep the immutable fields immutable on update; and a
//! ThingShadowSet's CEL and OpenAPI rules refuse each broken selector, template change
//! and rollout, naming the field.
//!
//! Needs the control plane of `tests/kube/cluster.sh` (built once, cached) and a kubectl:
//! `$SHADOWSYNC_KUBECTL`, else the one built with the control plane. The invalid corpus
//! (`tests/invalid_corpus.rs`) covers the rest of what the schema refuses.

#[path = "e2e/mod.rs"]
mod e2e;

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::*;
use serde_json::{json, Value};

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// kubectl as the cluster admin; returns (success, stdout, stderr).
fn kubectl(cluster: &ControlPlane, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(find_kubectl().expect("kubectl"))
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("KUBECACHEDIR", cluster.dir.join("kubectl-cache"))
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn kubectl_ok(cluster: &ControlPlane, args: &[&str]) -> (String, String) {
    let (ok, stdout, stderr) = kubectl(cluster, args);
    assert!(ok, "kubectl {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("warning"))
        .collect()
}

fn cluster(name: &str) -> ControlPlane {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("admission")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    ControlPlane::start(&dir.join("cluster"))
}

fn install_crds(cluster: &ControlPlane) {
    let crds = repo("crds").display().to_string();
    let (out, err) = kubectl_ok(cluster, &["apply", "--server-side", "-f", &crds]);
    assert!(
        warnings(&err).is_empty(),
        "the apiserver warned about the CRDs: {err}"
    );
    assert!(out.contains("serverside-applied"), "{out}");
    wait_established(
        &cluster.kubeconfig,
        &cluster.dir,
        &CRDS
            .map(|name| format!("crd/{name}"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
}

const CRDS: [&str; 3] = [
    "thingshadows.iot.shadowsync.dev",
    "retainedmessages.iot.shadowsync.dev",
    "thingshadowsets.iot.shadowsync.dev",
];

#[test]
fn crds_are_structural_established_and_applied_without_warning() {
    let cluster = cluster("crds");
    install_crds(&cluster);
    let (out, _) = kubectl_ok(
        &cluster,
        &["get", "crd", "-o", "jsonpath={.items[*].metadata.name}"],
    );
    let mut listed: Vec<&str> = out.split_whitespace().collect();
    listed.sort();
    let mut expected = CRDS.to_vec();
    expected.sort();
    assert_eq!(listed, expected, "crds/ holds exactly the three CRDs");
    for name in CRDS {
        let (out, _) = kubectl_ok(&cluster, &["get", "crd", name, "-o", "json"]);
        let crd: Value = serde_json::from_str(&out).expect("CRD json");
        let conditions = crd["status"]["conditions"].as_array().expect("conditions");
        let status_of = |type_: &str| {
            conditions
                .iter()
                .find(|c| c["type"] == type_)
                .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        };
        assert_eq!(
            status_of("Established").as_deref(),
            Some("True"),
            "{name}: {conditions:?}"
        );
        assert_eq!(
            status_of("NamesAccepted").as_deref(),
            Some("True"),
            "{name}: {conditions:?}"
        );
        assert_eq!(
            status_of("NonStructuralSchema"),
            None,
            "{name} is not structural: {conditions:?}"
        );
    }
    // A second apply changes nothing.
    let crds = repo("crds").display().to_string();
    let (_, err) = kubectl_ok(&cluster, &["apply", "--server-side", "-f", &crds]);
    assert!(warnings(&err).is_empty(), "{err}");
}

#[test]
fn examples_and_install_yaml_are_admitted() {
    let cluster = cluster("examples");
    install_crds(&cluster);
    let examples = repo("deploy/examples").display().to_string();
    // Namespaces first: the examples put resources in them.
    let namespaces = repo("deploy/examples/namespaces.yaml")
        .display()
        .to_string();
    kubectl_ok(&cluster, &["apply", "--server-side", "-f", &namespaces]);
    for pass in ["first", "second"] {
        let (out, err) = kubectl_ok(&cluster, &["apply", "--server-side", "-R", "-f", &examples]);
        assert!(
            warnings(&err).is_empty(),
            "{pass} apply of the examples warned: {err}"
        );
        assert!(out.contains("thingshadow.iot.shadowsync.dev/"), "{out}");
        assert!(out.contains("retainedmessage.iot.shadowsync.dev/"), "{out}");
        // deploy/examples/fleet, one folder down.
        for set in ["lamps-canary", "room-displays", "lamp-v2-night-mode"] {
            assert!(
                out.contains(&format!("thingshadowset.iot.shadowsync.dev/{set} ")),
                "{out}"
            );
        }
    }
    // Every example document is in the cluster now.
    let (out, _) = kubectl_ok(&cluster, &["get", "shadowsync", "-A", "-o", "json"]);
    let listed: Value = serde_json::from_str(&out).expect("list json");
    let mut expected = 0;
    for entry in walkdir(&repo("deploy/examples")) {
        let text = std::fs::read_to_string(&entry).expect("example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).expect("example YAML");
            if value["apiVersion"] == GROUP_VERSION {
                expected += 1;
            }
        }
    }
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(expected),
        "every ThingShadow, RetainedMessage and ThingShadowSet example was admitted"
    );

    let install = repo("deploy/install.yaml").display().to_string();
    for pass in ["first", "second"] {
        let (out, err) = kubectl_ok(&cluster, &["apply", "--server-side", "-f", &install]);
        assert!(
            warnings(&err).is_empty(),
            "{pass} apply of install.yaml warned: {err}"
        );
        assert!(out.contains("deployment.apps/shadowsync"), "{out}");
    }
}

#[test]
fn immutable_fields_stay_immutable_on_update() {
    let cluster = cluster("immutable");
    install_crds(&cluster);
    kubectl_ok(&cluster, &["create", "namespace", "immutable"]);
    let dir = cluster.dir.parent().expect("test dir").to_path_buf();
    let write = |name: &str, doc: Value| {
        let path = dir.join(name);
        std::fs::write(&path, doc.to_string()).expect("manifest");
        path.display().to_string()
    };
    let shadow = |thing: &str, shadow: Option<&str>| {
        let mut spec = json!({"thingName": thing, "desired": {"a": 1}});
        if let Some(shadow) = shadow {
            spec["shadowName"] = json!(shadow);
        }
        json!({"apiVersion": GROUP_VERSION, "kind": "ThingShadow",
            "metadata": {"name": "lamp", "namespace": "immutable"}, "spec": spec})
    };
    let retained = |topic: &str| {
        json!({"apiVersion": GROUP_VERSION, "kind": "RetainedMessage",
            "metadata": {"name": "config", "namespace": "immutable"},
            "spec": {"topic": topic, "payload": {"text": "x"}}})
    };
    kubectl_ok(
        &cluster,
        &[
            "apply",
            "-f",
            &write("a.json", shadow("lamp-1", Some("config"))),
        ],
    );
    kubectl_ok(
        &cluster,
        &["apply", "-f", &write("b.json", retained("a/b"))],
    );
    for (file, doc, field, rule) in [
        (
            "c.json",
            shadow("lamp-2", Some("config")),
            "spec.thingName",
            "thingName is immutable",
        ),
        (
            "d.json",
            shadow("lamp-1", Some("other")),
            "spec.shadowName",
            "shadowName is immutable",
        ),
        (
            "e.json",
            shadow("lamp-1", None),
            "spec",
            "shadowName cannot be added or removed",
        ),
        (
            "f.json",
            retained("a/c"),
            "spec.topic",
            "topic is immutable",
        ),
    ] {
        let (ok, out, err) = kubectl(&cluster, &["apply", "-f", &write(file, doc)]);
        assert!(!ok, "{field}: the change was admitted: {out}");
        assert!(err.contains(field) && err.contains(rule), "{field}: {err}");
    }
    // A change of a mutable field is admitted.
    let mut changed = shadow("lamp-1", Some("config"));
    changed["spec"]["desired"] = json!({"a": 2});
    kubectl_ok(&cluster, &["apply", "-f", &write("g.json", changed)]);
}

#[test]
fn thing_shadow_set_rules_refuse_naming_the_field() {
    let cluster = cluster("sets");
    install_crds(&cluster);
    kubectl_ok(&cluster, &["create", "namespace", "fleet"]);
    let dir = cluster.dir.parent().expect("test dir").to_path_buf();
    let write = |name: &str, doc: Value| {
        let path = dir.join(name);
        std::fs::write(&path, doc.to_string()).expect("manifest");
        path.display().to_string()
    };
    let set = |name: &str, spec: Value| {
        json!({"apiVersion": GROUP_VERSION, "kind": "ThingShadowSet",
            "metadata": {"name": name, "namespace": "fleet"}, "spec": spec})
    };
    let valid = || {
        json!({
            "selector": {"thingGroup": {"name": "lamps", "recursive": true}},
            "template": {"shadowName": "config", "desired": {"power": "on"}},
            "rollout": {"steps": [10, 50, 100], "stepTimeout": "15m", "maxFailures": "10%",
                        "onFailure": "Rollback"},
        })
    };

    // On create: each broken spec is refused, with the field and the rule in the answer,
    // and nothing is stored.
    type Change = fn(&mut Value);
    let cases: [(&str, Change, &str, &str); 9] = [
        (
            "two-forms",
            |s| s["selector"]["things"] = json!(["lamp-1"]),
            "spec.selector",
            "exactly one of things, thingGroup or query must be set",
        ),
        (
            "three-forms",
            |s| {
                s["selector"]["things"] = json!(["lamp-1"]);
                s["selector"]["query"] = json!("attributes.model:lamp-v2");
            },
            "spec.selector",
            "exactly one of things, thingGroup or query must be set",
        ),
        (
            "no-form",
            |s| s["selector"] = json!({}),
            "spec.selector",
            "exactly one of things, thingGroup or query must be set",
        ),
        (
            "budget-over-100-percent",
            |s| s["rollout"]["maxFailures"] = json!("150%"),
            "spec.rollout.maxFailures",
            "must be a count (3) or a percentage from 0% to 100%",
        ),
        (
            "budget-negative",
            |s| s["rollout"]["maxFailures"] = json!(-1),
            "spec.rollout.maxFailures",
            "must be a count (3) or a percentage from 0% to 100%",
        ),
        (
            "budget-words",
            |s| s["rollout"]["maxFailures"] = json!("ten"),
            "spec.rollout.maxFailures",
            "must be a count (3) or a percentage from 0% to 100%",
        ),
        (
            "step-zero",
            |s| s["rollout"]["steps"] = json!([0, 50, 100]),
            "spec.rollout.steps[0]",
            "should be greater than or equal to 1",
        ),
        (
            "step-over-100",
            |s| s["rollout"]["steps"] = json!([10, 101]),
            "spec.rollout.steps[1]",
            "should be less than or equal to 100",
        ),
        (
            "greengrass-template",
            |s| s["template"]["shadowName"] = json!("AWSManagedGreengrassV2Deployment"),
            "spec.template.shadowName",
            "owned by Greengrass",
        ),
    ];
    for (name, change, field, rule) in cases {
        let mut spec = valid();
        change(&mut spec);
        let file = write(&format!("{name}.json"), set(name, spec));
        let (ok, out, err) = kubectl(&cluster, &["apply", "--server-side", "-f", &file]);
        assert!(!ok, "{name}: admitted: {out}");
        assert!(
            err.contains(field) && err.contains(rule),
            "{name}: the refusal does not name {field} with {rule:?}: {err}"
        );
        let (found, _, _) = kubectl(&cluster, &["get", "tshadowset", name, "-n", "fleet"]);
        assert!(!found, "{name} was stored");
    }

    // On update: the template's shadow is a target, so it cannot be added, removed or
    // swapped (kubectl apply, as a user would edit the manifest).
    kubectl_ok(
        &cluster,
        &["apply", "-f", &write("lamps.json", set("lamps", valid()))],
    );
    let mut changed = valid();
    changed["template"]["shadowName"] = json!("settings");
    let mut removed = valid();
    removed["template"]
        .as_object_mut()
        .expect("template")
        .remove("shadowName");
    for (file, spec, field, rule) in [
        (
            "swapped.json",
            changed,
            "spec.template.shadowName",
            "shadowName is immutable",
        ),
        (
            "removed.json",
            removed,
            "spec.template",
            "shadowName cannot be added or removed",
        ),
    ] {
        let (ok, out, err) = kubectl(&cluster, &["apply", "-f", &write(file, set("lamps", spec))]);
        assert!(!ok, "{field}: the change was admitted: {out}");
        assert!(err.contains(field) && err.contains(rule), "{field}: {err}");
    }
    // A set made for the classic shadow cannot switch to a named one either.
    let mut classic = valid();
    classic["template"]
        .as_object_mut()
        .expect("template")
        .remove("shadowName");
    kubectl_ok(
        &cluster,
        &[
            "apply",
            "-f",
            &write("classic.json", set("classic", classic.clone())),
        ],
    );
    let mut added = classic;
    added["template"]["shadowName"] = json!("config");
    let (ok, out, err) = kubectl(
        &cluster,
        &["apply", "-f", &write("added.json", set("classic", added))],
    );
    assert!(!ok, "adding a shadowName was admitted: {out}");
    assert!(
        err.contains("spec.template") && err.contains("shadowName cannot be added or removed"),
        "{err}"
    );
    let (stored, _) = kubectl_ok(
        &cluster,
        &["get", "tshadowset", "lamps", "-n", "fleet", "-o", "json"],
    );
    let stored: Value = serde_json::from_str(&stored).expect("set json");
    assert_eq!(stored["spec"]["template"]["shadowName"], "config");
    assert_eq!(stored["metadata"]["generation"], 1);

    // What may change does: the desired state, the rollout and the selector.
    let mut next = valid();
    next["template"]["desired"] = json!({"power": "off"});
    next["rollout"] = json!({"steps": [25, 100], "maxFailures": 2});
    next["selector"] = json!({"query": "attributes.model:lamp-v2"});
    kubectl_ok(
        &cluster,
        &["apply", "-f", &write("next.json", set("lamps", next))],
    );
    let (stored, _) = kubectl_ok(
        &cluster,
        &["get", "tshadowset", "lamps", "-n", "fleet", "-o", "json"],
    );
    let stored: Value = serde_json::from_str(&stored).expect("set json");
    assert_eq!(stored["metadata"]["generation"], 2);
    assert_eq!(stored["spec"]["rollout"]["maxFailures"], 2);
}

/// Every file under `dir`, recursively.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out
}
