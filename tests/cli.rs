//! The real `shadowsync` binary: `apply`, `diff` and `crds` with the embedded default
//! data plane (no flags), checked by opening the data-plane file afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::DataPlane;

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

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples")
}

async fn shadow_version(db: &Path, thing: &str, shadow: Option<&str>) -> u64 {
    let store = EmbeddedDataPlane::open(db).expect("open data-plane file");
    store
        .get_thing_shadow(thing, shadow)
        .await
        .expect("shadow exists")
        .version
}

#[tokio::test]
async fn apply_examples_on_the_embedded_default_then_reapply_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let examples = examples();
    let examples = examples.to_str().unwrap();

    let first = shadowsync(dir.path(), &["apply", "-f", examples]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("embedded data plane stored in .shadowsync/dataplane.redb"));
    for name in [
        "home/kitchen-lamp",
        "home/hallway-thermostat-schedule",
        "home/kitchen-lamp-config",
        "plant/sensor-calibration",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing\n{stdout}"));
        assert!(line.contains("True"), "{line}");
    }
    let db = dir.path().join(".shadowsync/dataplane.redb");
    let lamp = shadow_version(&db, "kitchen-lamp", None).await;
    let schedule = shadow_version(&db, "hallway-thermostat", Some("schedule")).await;

    let second = shadowsync(dir.path(), &["apply", "-f", examples]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(shadow_version(&db, "kitchen-lamp", None).await, lamp);
    assert_eq!(
        shadow_version(&db, "hallway-thermostat", Some("schedule")).await,
        schedule
    );
    let store = EmbeddedDataPlane::open(&db).unwrap();
    let retained = store
        .get_retained_message("plant/sensors/calibration/v2")
        .await
        .unwrap();
    assert_eq!(retained.payload.as_ref(), (0u8..16).collect::<Vec<_>>());
    drop(store);

    let diff = shadowsync(dir.path(), &["diff", "-f", examples]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
}

#[test]
fn diff_lists_paths_with_old_and_new_values() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("lamp.yaml");
    let write = |desired: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
                 metadata: {{name: lamp}}\nspec: {{thingName: lamp, desired: {desired}}}\n"
            ),
        )
        .unwrap();
    };
    write("{power: 'on', level: 3}");
    let applied = shadowsync(dir.path(), &["apply", "-f", "lamp.yaml"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    write("{power: 'off', color: red}");
    let diff = shadowsync(dir.path(), &["diff", "-f", "lamp.yaml"]);
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
    let out = String::from_utf8_lossy(&diff.stdout);
    assert!(out.contains("~ /power: \"on\" -> \"off\""), "{out}");
    assert!(out.contains("+ /color: \"red\""), "{out}");
    assert!(out.contains("- /level: 3 -> (removed)"), "{out}");
}

#[test]
fn invalid_specs_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
         metadata: {name: bad}\nspec: {thingName: 'bad name!', desired: {zones: [1, null]}}\n---\n\
         apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\n\
         metadata: {name: wild}\nspec: {topic: 'a/+/b', payload: {text: x}}\n---\n\
         apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
         metadata: {name: good}\nspec: {thingName: good, desired: {a: 1}}\n",
    )
    .unwrap();
    let out = shadowsync(dir.path(), &["apply", "-f", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("spec.thingName \"bad name!\""), "{stdout}");
    assert!(stdout.contains("spec.desired.zones[1]"), "{stdout}");
    assert!(stdout.contains("spec.topic"), "{stdout}");
    // The valid resource was applied; the invalid ones made no call.
    let good = stdout.lines().find(|l| l.contains("default/good")).unwrap();
    assert!(good.contains("True"), "{good}");
}

#[test]
fn duplicate_targets_leave_the_first_owner() {
    let dir = tempfile::tempdir().unwrap();
    let doc = |name: &str, v: u32| {
        format!(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
             metadata: {{name: {name}}}\nspec: {{thingName: shared, desired: {{v: {v}}}}}\n"
        )
    };
    std::fs::write(
        dir.path().join("dup.yaml"),
        format!("{}---\n{}", doc("first", 1), doc("second", 2)),
    )
    .unwrap();
    let out = shadowsync(dir.path(), &["apply", "-f", "dup.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let second = stdout
        .lines()
        .find(|l| l.contains("default/second"))
        .unwrap();
    assert!(second.contains("DuplicateTarget"), "{stdout}");
}

#[test]
fn unreadable_manifests_stop_the_run_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "kind: [unclosed\n").unwrap();
    let out = shadowsync(dir.path(), &["apply", "-f", "broken.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.yaml#1"));
    assert!(!dir.path().join(".shadowsync/state.json").exists());
}

#[test]
fn crds_command_prints_the_committed_crds() {
    let dir = tempfile::tempdir().unwrap();
    let out = shadowsync(dir.path(), &["crds"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["crds/thingshadows.yaml", "crds/retainedmessages.yaml"] {
        let committed = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            printed.contains(committed.trim()),
            "{file} differs from `shadowsync crds`"
        );
    }
}
