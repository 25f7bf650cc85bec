//! The real `shadowsync` binary with `ThingShadowSet` manifests: `apply` and `diff`
//! expand each set into one ThingShadow per selected thing, read from the registry of
//! the data plane in use, and `import --thing-group` prints the set a group's shadows
//! share.
//!
//! Against the embedded data plane (a `--db` file, filled by opening the store directly
//! before the binary runs and read the same way after), and against `dataplane serve` in
//! process, whose registry is filled through AWS's REST paths with the SDK adapter.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::registry::{Attributes, Registry, ThingGroupSpec};
use shadowsync::dataplane::server::{self, FaultSettings, Operation, ServerOptions};
use shadowsync::dataplane::DataPlane;
use shadowsync::fleet::child_name;

const API: &str = "apiVersion: iot.shadowsync.dev/v1alpha1";

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
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The table row of `namespace/name`.
fn row<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(key))
        .unwrap_or_else(|| panic!("no row for {key}\n{out}"))
}

fn db(dir: &Path) -> PathBuf {
    dir.join("plane.redb")
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn group(registry: &dyn Registry, name: &str, parent: Option<&str>) {
    let spec = ThingGroupSpec {
        parent_group_name: parent.map(str::to_string),
        ..Default::default()
    };
    registry
        .create_thing_group(name, &spec)
        .await
        .unwrap_or_else(|e| panic!("group {name}: {e}"));
}

async fn thing(registry: &dyn Registry, name: &str, model: &str, groups: &[&str]) {
    registry
        .create_thing(name, &attrs(&[("model", model)]))
        .await
        .unwrap_or_else(|e| panic!("thing {name}: {e}"));
    for g in groups {
        registry
            .add_thing_to_thing_group(g, name)
            .await
            .unwrap_or_else(|e| panic!("add {name} to {g}: {e}"));
    }
}

/// `home` > `kitchen`: `hub` in home, two lamps in kitchen; two sensors in no group.
async fn fill_registry(registry: &dyn Registry) {
    group(registry, "home", None).await;
    group(registry, "kitchen", Some("home")).await;
    thing(registry, "hub", "hub-1", &["home"]).await;
    thing(registry, "lamp-k1", "lamp-v2", &["kitchen"]).await;
    thing(registry, "lamp-k2", "lamp-v2", &["kitchen"]).await;
    thing(registry, "sensor-1", "sensor", &[]).await;
    thing(registry, "sensor-2", "sensor", &[]).await;
}

async fn update(store: &dyn DataPlane, thing: &str, shadow: Option<&str>, doc: Value) {
    store
        .update_thing_shadow(thing, shadow, Bytes::from(doc.to_string()))
        .await
        .unwrap_or_else(|e| panic!("update {thing}/{shadow:?}: {e}"));
}

/// (version, desired) of a shadow, or `None` when it does not exist.
async fn shadow(store: &dyn DataPlane, thing: &str, shadow: Option<&str>) -> Option<(u64, Value)> {
    match store.get_thing_shadow(thing, shadow).await {
        Ok(doc) => Some((doc.version, doc.state.desired.unwrap_or(Value::Null))),
        Err(err) if err.kind == shadowsync::dataplane::ErrorKind::ResourceNotFound => None,
        Err(err) => panic!("get {thing}/{shadow:?}: {err}"),
    }
}

fn set(name: &str, selector: &str, desired: &str) -> String {
    format!(
        "{API}\nkind: ThingShadowSet\nmetadata: {{name: {name}, namespace: home}}\n\
         spec:\n  selector: {selector}\n  template:\n    desired: {desired}\n"
    )
}

fn manifests(docs: &[String]) -> String {
    docs.join("---\n")
}

/// Sets by group (recursive), by query and by list.
fn three_sets(power: &str) -> String {
    manifests(&[
        set(
            "home-all",
            "{thingGroup: {name: home, recursive: true}}",
            &format!("{{power: '{power}', site: berlin}}"),
        ),
        set(
            "sensors",
            "{query: 'attributes.model:sensor'}",
            "{interval: 30}",
        ),
        set("spares", "{things: [spare-2, spare-1]}", "{mode: standby}"),
    ])
}

fn children(set: &str, things: &[&str]) -> Vec<(String, String)> {
    things
        .iter()
        .map(|t| (format!("home/{}", child_name(set, t)), t.to_string()))
        .collect()
}

#[tokio::test]
async fn sets_by_group_query_and_list_apply_their_children_and_a_reapply_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
        fill_registry(&store).await;
    }
    std::fs::write(dir.path().join("sets.yaml"), three_sets("on")).unwrap();
    let db_arg = db(dir.path());
    let db_arg = db_arg.to_str().unwrap();

    let out = shadowsync(dir.path(), &["apply", "-f", "sets.yaml", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = stdout(&out);
    for line in [
        "ThingShadowSet home/home-all: 3 things, applied at once (staged rollouts in spec.rollout need the operator)",
        "ThingShadowSet home/sensors: 2 things, applied at once (staged rollouts in spec.rollout need the operator)",
        "ThingShadowSet home/spares: 2 things, applied at once (staged rollouts in spec.rollout need the operator)",
    ] {
        assert!(table.lines().any(|l| l == line), "{line}\n{table}");
    }
    let expected = [
        children("home-all", &["hub", "lamp-k1", "lamp-k2"]),
        children("sensors", &["sensor-1", "sensor-2"]),
        children("spares", &["spare-1", "spare-2"]),
    ]
    .concat();
    for (key, thing) in &expected {
        let line = row(&table, key);
        assert!(line.contains(&format!("{thing} (classic)")), "{line}");
        assert!(line.contains("True"), "{line}");
    }
    // Children in input order, each set's sorted by thing.
    let order: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("ThingShadow "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let wanted: Vec<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(order, wanted);

    let versions = {
        let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
        let mut versions = Vec::new();
        for (thing, desired) in [
            ("hub", json!({"power": "on", "site": "berlin"})),
            ("lamp-k1", json!({"power": "on", "site": "berlin"})),
            ("lamp-k2", json!({"power": "on", "site": "berlin"})),
            ("sensor-1", json!({"interval": 30})),
            ("sensor-2", json!({"interval": 30})),
            ("spare-1", json!({"mode": "standby"})),
            ("spare-2", json!({"mode": "standby"})),
        ] {
            let (version, got) = shadow(&store, thing, None).await.expect(thing);
            assert_eq!(got, desired, "{thing}");
            versions.push(version);
        }
        versions
    };
    // The state file remembers the children as it remembers any ThingShadow.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".shadowsync/state.json")).unwrap(),
    )
    .unwrap();
    for (key, thing) in &expected {
        assert_eq!(
            state["thingShadows"][key]["thingName"],
            json!(thing),
            "{key}"
        );
    }

    let again = shadowsync(dir.path(), &["apply", "-f", "sets.yaml", "--db", db_arg]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
    for (thing, version) in [
        "hub", "lamp-k1", "lamp-k2", "sensor-1", "sensor-2", "spare-1", "spare-2",
    ]
    .iter()
    .zip(versions)
    {
        assert_eq!(
            shadow(&store, thing, None).await.unwrap().0,
            version,
            "{thing} was written again"
        );
    }
}

#[tokio::test]
async fn diff_shows_the_children_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
        fill_registry(&store).await;
    }
    let db_arg = db(dir.path());
    let db_arg = db_arg.to_str().unwrap();
    std::fs::write(dir.path().join("sets.yaml"), three_sets("on")).unwrap();
    let applied = shadowsync(dir.path(), &["apply", "-f", "sets.yaml", "--db", db_arg]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));

    std::fs::write(dir.path().join("sets.yaml"), three_sets("off")).unwrap();
    let out = shadowsync(dir.path(), &["diff", "-f", "sets.yaml", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains(
            "ThingShadowSet home/home-all: 3 things, compared at once; apply writes them all at once"
        ),
        "{printed}"
    );
    for (key, thing) in children("home-all", &["hub", "lamp-k1", "lamp-k2"]) {
        let header = format!("ThingShadow {key} -> {thing} (classic)");
        let at = printed
            .find(&header)
            .unwrap_or_else(|| panic!("{header}\n{printed}"));
        let change = printed[at..].lines().nth(1).unwrap_or_default();
        assert_eq!(change, "  ~ /power: \"on\" -> \"off\"", "{printed}");
    }
    // The children of the unchanged sets are in sync, so not listed.
    assert!(!printed.contains("sensor-1 (classic)"), "{printed}");
    assert!(
        stderr(&out).contains("3 of 7 resource(s) differ"),
        "{}",
        text(&out)
    );

    let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
    let (_, desired) = shadow(&store, "lamp-k1", None).await.unwrap();
    assert_eq!(desired["power"], "on", "diff wrote");
}

#[tokio::test]
async fn a_set_whose_membership_cannot_be_read_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
        fill_registry(&store).await;
    }
    let db_arg = db(dir.path());
    let db_arg = db_arg.to_str().unwrap();
    let input = manifests(&[
        set("lost", "{thingGroup: {name: nowhere}}", "{power: 'on'}"),
        format!(
            "{API}\nkind: ThingShadow\nmetadata: {{name: solo, namespace: home}}\n\
             spec: {{thingName: solo, desired: {{a: 1}}}}\n"
        ),
        set("odd", "{query: 'model:(lamp'}", "{power: 'on'}"),
        set("kitchen", "{thingGroup: {name: kitchen}}", "{power: 'on'}"),
    ]);
    std::fs::write(dir.path().join("sets.yaml"), input).unwrap();

    let out = shadowsync(dir.path(), &["apply", "-f", "sets.yaml", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = stdout(&out);
    let lost = row(&printed, "home/lost");
    assert!(
        lost.starts_with("ThingShadowSet") && lost.contains("thingGroup nowhere"),
        "{lost}"
    );
    assert!(lost.ends_with("False   NotFound"), "{lost}");
    assert!(
        printed.contains(
            "ThingShadowSet home/lost: NotFound: thingGroup nowhere: ResourceNotFoundException: "
        ),
        "{printed}"
    );
    let odd = row(&printed, "home/odd");
    assert!(odd.ends_with("False   InvalidQuery"), "{odd}");
    assert!(
        printed.contains(
            "ThingShadowSet home/odd: InvalidQuery: query \"model:(lamp\": InvalidQueryException: "
        ),
        "{printed}"
    );
    // Everything else was applied.
    assert!(row(&printed, "home/solo").contains("True"), "{printed}");
    for (key, _) in children("kitchen", &["lamp-k1", "lamp-k2"]) {
        assert!(row(&printed, &key).contains("True"), "{printed}");
    }
    assert!(
        stderr(&out).contains("2 of 5 resource(s) not Ready"),
        "{}",
        text(&out)
    );
    {
        let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
        assert!(shadow(&store, "solo", None).await.is_some());
        assert!(shadow(&store, "lamp-k2", None).await.is_some());
    }

    // diff: the same sets are errors (exit 2), named with their reasons.
    let out = shadowsync(dir.path(), &["diff", "-f", "sets.yaml", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stdout(&out).contains(
            "ThingShadowSet home/lost -> thingGroup nowhere: error: NotFound: thingGroup nowhere: ResourceNotFoundException"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn an_invalid_set_is_refused_by_field_and_its_duplicates_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db_arg = db(dir.path());
    let db_arg = db_arg.to_str().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        manifests(&[
            format!(
                "{API}\nkind: ThingShadowSet\nmetadata: {{name: bad, namespace: home}}\n\
                 spec:\n  selector: {{things: [a, 'b c', a]}}\n  template: {{desired: {{x: 1}}, refreshInterval: 1ms}}\n  \
                 rollout: {{steps: [50, 20]}}\n"
            ),
            set("fine", "{things: [f]}", "{x: 1}"),
        ]),
    )
    .unwrap();
    let out = shadowsync(dir.path(), &["apply", "-f", "bad.yaml", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = stdout(&out);
    assert!(
        row(&printed, "home/bad").contains("InvalidSpec"),
        "{printed}"
    );
    for field in [
        "spec.selector.things[1] \"b c\"",
        "spec.selector.things[2] \"a\": is already listed at things[0]",
        "spec.template.refreshInterval",
        "spec.rollout.steps",
    ] {
        assert!(printed.contains(field), "{field}\n{printed}");
    }
    assert!(row(&printed, &format!("home/{}", child_name("fine", "f"))).contains("True"));

    // Unknown fields are named before anything runs; a set declared twice is refused.
    std::fs::write(
        dir.path().join("typo.yaml"),
        set("s", "{things: [a]}", "{x: 1}").replace("    desired:", "    desried:"),
    )
    .unwrap();
    let out = shadowsync(dir.path(), &["apply", "-f", "typo.yaml", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("spec.template.desried: unknown field"),
        "{}",
        text(&out)
    );
    std::fs::write(
        dir.path().join("twice.yaml"),
        manifests(&[
            set("s", "{things: [a]}", "{x: 1}"),
            set("s", "{things: [b]}", "{x: 2}"),
        ]),
    )
    .unwrap();
    let out = shadowsync(dir.path(), &["apply", "-f", "twice.yaml", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out)
            .contains("ThingShadowSet home/s is declared twice (twice.yaml#1 and twice.yaml#2)"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_thing_declared_alone_before_a_set_keeps_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let db_arg = db(dir.path());
    let db_arg = db_arg.to_str().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        manifests(&[
            format!(
                "{API}\nkind: ThingShadow\nmetadata: {{name: first, namespace: home}}\n\
                 spec: {{thingName: b, desired: {{x: 0}}}}\n"
            ),
            set("s", "{things: [a, b]}", "{x: 1}"),
        ]),
    )
    .unwrap();
    let out = shadowsync(dir.path(), &["apply", "-f", "m.yaml", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = stdout(&out);
    assert!(row(&printed, "home/first").contains("True"), "{printed}");
    let child = row(&printed, &format!("home/{}", child_name("s", "b")));
    assert!(child.contains("DuplicateTarget"), "{child}");
    assert!(row(&printed, &format!("home/{}", child_name("s", "a"))).contains("True"));
}

/// Shadows of the members of `lamps` (recursive: `lamps` > `lamps-east`): what they
/// share, what they do not, and one member without the shadow.
async fn fill_fleet(registry: &dyn Registry, store: &dyn DataPlane, shadow_name: Option<&str>) {
    group(registry, "lamps", None).await;
    group(registry, "lamps-east", Some("lamps")).await;
    thing(registry, "lamp-1", "lamp", &["lamps"]).await;
    thing(registry, "lamp-2", "lamp", &["lamps"]).await;
    thing(registry, "lamp-3", "lamp", &["lamps-east"]).await;
    thing(registry, "lamp-new", "lamp", &["lamps-east"]).await;
    for (i, lamp) in ["lamp-1", "lamp-2", "lamp-3"].iter().enumerate() {
        update(
            store,
            lamp,
            shadow_name,
            json!({"state": {
                "desired": {
                    "power": "on",
                    "label": "010",
                    "color": {"r": 255, "g": i},
                    "zones": [1, 2],
                    "schedule": {"on": "06:30", "off": if i == 2 { "22:00" } else { "23:00" }}
                },
                "reported": {"power": "off"}
            }}),
        )
        .await;
    }
    // Versions beyond 1.
    update(
        store,
        "lamp-1",
        shadow_name,
        json!({"state": {"reported": {"power": "on"}}}),
    )
    .await;
}

fn shared_desired() -> Value {
    json!({"power": "on", "label": "010", "color": {"r": 255}, "zones": [1, 2], "schedule": {"on": "06:30"}})
}

#[tokio::test]
async fn import_of_a_thing_group_prints_the_shared_state_and_applying_it_changes_nothing() {
    for shadow_name in [None, Some("config")] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
            fill_fleet(&store, &store, shadow_name).await;
        }
        let db_arg = db(dir.path());
        let db_arg = db_arg.to_str().unwrap();
        let mut args = vec![
            "import",
            "--thing-group",
            "lamps",
            "--recursive",
            "--namespace",
            "home",
            "--db",
            db_arg,
        ];
        if let Some(s) = shadow_name {
            args.extend(["--shadow-name", s]);
        }
        let out = shadowsync(dir.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let yaml = stdout(&out);
        assert!(
            yaml.contains("# 1 member(s) without the shadow; apply would write the template to them:\n#   lamp-new\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("# 2 leaf path(s) left out of the template: their values differ between members, or some members lack them:\n#   /color/g\n#   /schedule/off\n"),
            "{yaml}"
        );
        assert!(
            stderr(&out).contains("imported 1 ThingShadowSet manifest: 4 member(s), 3 with the shadow, 5 shared leaf path(s), 2 left out"),
            "{}",
            text(&out)
        );
        std::fs::write(dir.path().join("set.yaml"), &yaml).unwrap();

        // Read as apply reads it: the group, recursive, the shadow, the shared leaves.
        let parsed = shadowsync(dir.path(), &["manifest", "parse", "-f", "set.yaml"]);
        assert_eq!(parsed.status.code(), Some(0), "{}", text(&parsed));
        let parsed: Value = serde_json::from_slice(&parsed.stdout).unwrap();
        let set = &parsed[0];
        let name = match shadow_name {
            Some(_) => "lamps-config",
            None => "lamps",
        };
        assert_eq!(set["kind"], "ThingShadowSet");
        assert_eq!(set["metadata"], json!({"name": name, "namespace": "home"}));
        assert_eq!(
            set["spec"]["selector"],
            json!({"thingGroup": {"name": "lamps", "recursive": true}})
        );
        assert_eq!(set["spec"]["template"]["desired"], shared_desired());
        assert_eq!(
            set["spec"]["template"].get("shadowName"),
            shadow_name.map(Value::from).as_ref()
        );

        let before = {
            let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
            let mut before = Vec::new();
            for lamp in ["lamp-1", "lamp-2", "lamp-3"] {
                before.push(shadow(&store, lamp, shadow_name).await.expect(lamp));
            }
            before
        };
        // Only the member without the shadow differs.
        let diff = shadowsync(dir.path(), &["diff", "-f", "set.yaml", "--db", db_arg]);
        assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
        assert!(
            stderr(&diff).contains("1 of 4 resource(s) differ"),
            "{}",
            text(&diff)
        );
        assert!(stdout(&diff).contains("-> lamp-new"), "{}", text(&diff));

        let applied = shadowsync(dir.path(), &["apply", "-f", "set.yaml", "--db", db_arg]);
        assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
        let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
        for (lamp, (version, desired)) in ["lamp-1", "lamp-2", "lamp-3"].iter().zip(before) {
            let after = shadow(&store, lamp, shadow_name).await.unwrap();
            assert_eq!(after, (version, desired), "{lamp} was written");
        }
        let (_, created) = shadow(&store, "lamp-new", shadow_name).await.unwrap();
        assert_eq!(created, shared_desired());
    }
}

#[tokio::test]
async fn import_of_a_thing_group_refuses_bad_flags_and_a_missing_group() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedDataPlane::open(db(dir.path())).unwrap();
        fill_registry(&store).await;
    }
    let db_arg = db(dir.path());
    let db_arg = db_arg.to_str().unwrap();

    let out = shadowsync(
        dir.path(),
        &["import", "--thing-group", "nope", "--db", db_arg],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(
        stderr(&out).contains("error: thingGroup nope: ResourceNotFoundException: "),
        "{}",
        text(&out)
    );

    let out = shadowsync(
        dir.path(),
        &[
            "import",
            "--thing-group",
            "a b",
            "--shadow-name",
            "a b",
            "--db",
            db_arg,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("--thing-group: must match"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("--shadow-name: "), "{}", text(&out));

    for args in [
        &["import", "--shadow-name", "x", "--retained"][..],
        &["import", "--thing-group", "home", "--thing", "hub"],
        &["import", "--recursive", "--thing", "hub"],
    ] {
        let out = shadowsync(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }

    // A group whose members have no such shadow: a set that declares nothing, every
    // member listed.
    let out = shadowsync(
        dir.path(),
        &["import", "--thing-group", "kitchen", "--db", db_arg],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let yaml = stdout(&out);
    assert!(
        yaml.contains("# 2 member(s) without the shadow:\n#   lamp-k1\n#   lamp-k2\n"),
        "{yaml}"
    );
    assert!(!yaml.contains("desired:"), "{yaml}");
    assert!(
        stderr(&out).contains("imported 1 ThingShadowSet manifest: 2 member(s), 0 with the shadow"),
        "{}",
        text(&out)
    );
}

/// `dataplane serve` in process, its registry filled through AWS's REST paths.
async fn serve() -> (server::ServerHandle, AwsDataPlane) {
    let store = Arc::new(EmbeddedDataPlane::in_memory());
    let handle = server::start_with_registry(store.clone(), store, ServerOptions::default())
        .await
        .expect("server");
    let client = AwsDataPlane::connect(AwsOptions {
        endpoint_url: Some(handle.endpoint_url()),
        region: Some("us-east-1".into()),
    })
    .await
    .expect("client");
    (handle, client)
}

/// Runs the binary off the runtime's threads, so that the server keeps answering.
async fn run(dir: &Path, args: Vec<String>) -> Output {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        shadowsync(&dir, &args)
    })
    .await
    .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_dataplane_serve_sets_apply_and_import_round_trips() {
    let (handle, client) = serve().await;
    fill_registry(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let url = handle.endpoint_url();
    std::fs::write(dir.path().join("sets.yaml"), three_sets("on")).unwrap();

    let args = |cmd: &[&str]| -> Vec<String> {
        cmd.iter()
            .map(|s| s.to_string())
            .chain(["--endpoint-url".to_string(), url.clone()])
            .collect()
    };
    let out = run(dir.path(), args(&["apply", "-f", "sets.yaml"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("ThingShadowSet home/home-all: 3 things, applied at once"));
    for lamp in ["hub", "lamp-k1", "lamp-k2"] {
        let (_, desired) = shadow(&client, lamp, None).await.expect(lamp);
        assert_eq!(desired, json!({"power": "on", "site": "berlin"}), "{lamp}");
    }
    let stats = handle.stats();
    assert_eq!(stats.calls_of(Operation::ListThingsInThingGroup), 1);
    assert_eq!(stats.calls_of(Operation::SearchIndex), 1);

    // Import the group back: everything is shared, so applying it changes nothing.
    let out = run(
        dir.path(),
        args(&[
            "import",
            "--thing-group",
            "home",
            "--recursive",
            "-n",
            "other",
        ]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let yaml = stdout(&out);
    assert!(!yaml.contains("without the shadow"), "{yaml}");
    std::fs::write(dir.path().join("imported.yaml"), &yaml).unwrap();
    let before = handle.target_stats();
    // A fresh state file: the set's children are new resources to it.
    let out = run(
        dir.path(),
        args(&["apply", "-f", "imported.yaml", "--state", "other.json"]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = handle.target_stats();
    for lamp in ["hub", "lamp-k1", "lamp-k2"] {
        let (version, _) = shadow(&client, lamp, None).await.unwrap();
        assert_eq!(version, 1, "{lamp} was written");
        assert_eq!(
            after.calls_of(lamp),
            before.calls_of(lamp) + 1,
            "{lamp}: one read"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_registry_is_retried_then_fails_only_its_set() {
    let (handle, client) = serve().await;
    fill_registry(&client).await;
    handle
        .set_faults(FaultSettings {
            throttle_rate: 1.0,
            operations: vec![Operation::ListThingsInThingGroup],
            ..Default::default()
        })
        .expect("faults");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sets.yaml"), three_sets("on")).unwrap();
    let args = vec![
        "apply".to_string(),
        "-f".into(),
        "sets.yaml".into(),
        "--endpoint-url".into(),
        handle.endpoint_url(),
    ];

    let out = run(dir.path(), args).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = stdout(&out);
    assert!(
        row(&printed, "home/home-all").ends_with("False   Throttled"),
        "{printed}"
    );
    assert!(
        printed.contains("ThingShadowSet home/home-all: Throttled: thingGroup home (recursive): ThrottlingException"),
        "{printed}"
    );
    // Five attempts, then the set gave up; the other sets were applied.
    assert_eq!(
        handle.stats().calls_of(Operation::ListThingsInThingGroup),
        5
    );
    for (key, _) in children("sensors", &["sensor-1", "sensor-2"]) {
        assert!(row(&printed, &key).contains("True"), "{printed}");
    }
    assert!(shadow(&client, "spare-1", None).await.is_some());
    assert!(shadow(&client, "hub", None).await.is_none());
}
