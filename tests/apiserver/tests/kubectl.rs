//! kubectl against the server binary: apply, get with printer columns, wait for a
//! condition set through the status subresource, delete.
//!
//! Uses `$SHADOWSYNC_KUBECTL` or `kubectl` on PATH. Without one the test prints a SKIP
//! line, unless `SHADOWSYNC_REQUIRE_KUBECTL=1`, which makes a missing kubectl a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::json;

fn find_kubectl() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("SHADOWSYNC_KUBECTL") {
        return Some(PathBuf::from(explicit));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(args)
            .arg(format!("--cache-dir={}", self.home.join("cache").display()))
            .env("KUBECONFIG", &self.kubeconfig)
            // Keep kubectl's caches and settings out of the real home directory.
            .env("HOME", &self.home)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("kubectl runs");
        eprintln!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs kubectl and returns stdout, failing the test on a non-zero exit.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

const MANIFEST: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: e2e
---
apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata:
  name: lamp
  namespace: e2e
spec:
  thingName: kitchen-lamp
  desired:
    power: \"on\"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: e2e
data:
  interval: \"30\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_wait_delete() {
    let Some(binary) = find_kubectl() else {
        if std::env::var("SHADOWSYNC_REQUIRE_KUBECTL").as_deref() == Ok("1") {
            panic!("kubectl is required (SHADOWSYNC_REQUIRE_KUBECTL=1) but not on PATH");
        }
        println!(
            "SKIP: kubectl not found on PATH (set SHADOWSYNC_REQUIRE_KUBECTL=1 to fail instead)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let crds = fixtures();
    let (_server, url) = spawn_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--crds",
        crds.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    let http = Http::at(&url);
    let kubectl = Kubectl {
        binary,
        kubeconfig,
        home: dir.path().to_path_buf(),
    };
    let version = kubectl.run(&["version"]);
    eprintln!("kubectl version exit: {:?}", version.status);

    let manifest = dir.path().join("lamp.yaml");
    write(&manifest, MANIFEST);
    let applied = kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(applied.contains("namespace/e2e created"), "{applied}");
    assert!(
        applied.contains("thingshadow.iot.shadowsync.dev/lamp created"),
        "{applied}"
    );
    assert!(applied.contains("configmap/settings created"), "{applied}");

    let table = kubectl.ok(&["get", "tshadow", "-n", "e2e"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "THING", "SHADOW", "VERSION", "READY", "AGE"]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["lamp", "kitchen-lamp"]);
    let by_category = kubectl.ok(&["get", "shadowsync", "-A"]);
    assert!(by_category.contains("lamp"), "{by_category}");

    // `kubectl wait` lists, then watches until the condition appears.
    let waiting = kubectl
        .command(&[
            "wait",
            "--for=condition=Ready",
            "thingshadow/lamp",
            "-n",
            "e2e",
            "--timeout=60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("kubectl wait to watch the ThingShadow", || {
        let http = &http;
        async move {
            let watches = http.get("/_test/watches").await.body;
            watches["watches"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["storage"] == "iot.shadowsync.dev/thingshadows")
                .then_some(())
        }
    })
    .await;
    let status = http
        .merge(
            "/apis/iot.shadowsync.dev/v1alpha1/namespaces/e2e/thingshadows/lamp/status",
            &json!({"status": {"observedGeneration": 1, "shadow": {"version": 7}, "conditions": [
                {"type": "Ready", "status": "True", "reason": "Synced", "observedGeneration": 1,
                 "lastTransitionTime": "2025-01-01T00:00:00Z", "message": "in sync"}]}}),
        )
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
    let waited = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let said = String::from_utf8_lossy(&waited.stdout);
    assert!(
        waited.status.success(),
        "kubectl wait: {said} {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(said.contains("condition met"), "{said}");

    let table = kubectl.ok(&["get", "tshadow", "lamp", "-n", "e2e"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["lamp", "kitchen-lamp", "7", "True"]);
    let ready = kubectl.ok(&[
        "get",
        "tshadow",
        "lamp",
        "-n",
        "e2e",
        "-o",
        "jsonpath={.status.conditions[0].status}",
    ]);
    assert_eq!(ready, "True");

    // Applying again changes nothing; a changed manifest is a patch that bumps generation.
    let again = kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        again.contains("thingshadow.iot.shadowsync.dev/lamp unchanged"),
        "{again}"
    );
    write(
        &manifest,
        &MANIFEST.replace("power: \"on\"", "power: \"off\""),
    );
    let changed = kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        changed.contains("thingshadow.iot.shadowsync.dev/lamp configured"),
        "{changed}"
    );
    let generation = kubectl.ok(&[
        "get",
        "tshadow",
        "lamp",
        "-n",
        "e2e",
        "-o",
        "jsonpath={.metadata.generation} {.spec.desired.power} {.status.observedGeneration}",
    ]);
    assert_eq!(generation, "2 off 1");

    // The server rejects what the schema forbids, and kubectl shows why.
    let bad = dir.path().join("bad.yaml");
    write(
        &bad,
        &MANIFEST
            .split("---\n")
            .nth(1)
            .unwrap()
            .replace("thingName: kitchen-lamp", "thingName: other-lamp"),
    );
    let refused = kubectl.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("thingName is immutable"), "{why}");

    let deleted = kubectl.ok(&["delete", "-f", manifest.to_str().unwrap()]);
    assert!(deleted.contains("namespace \"e2e\" deleted"), "{deleted}");
    let none = kubectl.run(&["get", "tshadow", "-A"]);
    assert!(none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("No resources found"),
        "{none:?}"
    );
    let gone = http
        .get("/apis/iot.shadowsync.dev/v1alpha1/namespaces/e2e/thingshadows/lamp")
        .await;
    assert_eq!(gone.status, 404);
}
