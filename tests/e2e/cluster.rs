//! The real Kubernetes control plane of the end-to-end tests: etcd, kube-apiserver and
//! kube-controller-manager built from the modules `tests/kube/go.mod` pins and run by
//! `tests/kube/cluster.sh` (which also builds them, once, into a cache).
//!
//! Each [`ControlPlane`] is a cluster of its own in its own folder, stopped when it is
//! dropped, and by `cluster.sh`'s watchdog when the test process dies however it dies.
//!
//! Kubernetes requests are counted from the apiserver's audit log (every request at
//! Metadata level: user, verb, resource, subresource, response code, request URI), never
//! from the operator's word.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `tests/kube/cluster.sh`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube/cluster.sh")
}

/// Runs `cluster.sh ARGS` and returns its standard output; panics with its output if it
/// fails.
pub fn cluster_sh(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cluster.sh: {e}"));
    if !out.status.success() {
        panic!(
            "cluster.sh {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One running control plane.
pub struct ControlPlane {
    pub dir: PathBuf,
    /// The admin kubeconfig (group `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT` of kube-apiserver.
    pub url: String,
    /// How long `cluster.sh up` took.
    pub start_time: Duration,
}

impl ControlPlane {
    /// Starts a control plane whose files live in `dir` (emptied first).
    pub fn start(dir: &Path) -> ControlPlane {
        let started = Instant::now();
        let pid = std::process::id().to_string();
        let dir_text = dir.display().to_string();
        cluster_sh(&["up", &dir_text, "--owner", &pid]);
        let port = std::fs::read_to_string(dir.join("apiserver.port"))
            .expect("cluster.sh wrote the apiserver's port");
        ControlPlane {
            dir: dir.to_path_buf(),
            kubeconfig: dir.join("admin.kubeconfig"),
            url: format!("https://127.0.0.1:{}", port.trim()),
            start_time: started.elapsed(),
        }
    }

    /// Port of kube-apiserver.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the apiserver URL")
    }

    /// The CA that signed the apiserver's serving certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// An admin client.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig).await
    }

    /// `stop`, `start` or `restart` one component (`etcd`, `apiserver`,
    /// `controller-manager`); `start` and `restart` return once it is ready.
    pub fn component(&self, action: &str, component: &str) {
        cluster_sh(&[action, component, &self.dir.display().to_string()]);
    }

    /// Writes a kubeconfig at `out` that authenticates as ServiceAccount `namespace/sa`
    /// with a token from the TokenRequest API, against `server` (the apiserver itself,
    /// or a proxy in front of it).
    pub fn service_account_kubeconfig(&self, namespace: &str, sa: &str, out: &Path, server: &str) {
        cluster_sh(&[
            "token-kubeconfig",
            &self.dir.display().to_string(),
            namespace,
            sa,
            &out.display().to_string(),
        ]);
        if server != self.url {
            let text = std::fs::read_to_string(out).expect("the kubeconfig just written");
            let text = text.replace(
                &format!("server: {}", self.url),
                &format!("server: {server}"),
            );
            std::fs::write(out, text).expect("kubeconfig");
        }
    }

    /// Every audit event so far.
    pub fn audit(&self) -> Vec<AuditEvent> {
        read_audit(&self.dir.join("audit.log"))
    }

    /// Compacts etcd's history up to its current revision (what a long-running cluster
    /// does every five minutes): watches that resume from an older resourceVersion get
    /// `410 Gone` once they reach etcd.
    pub async fn compact_etcd(&self) -> u64 {
        let port = std::fs::read_to_string(self.dir.join("etcd.port")).expect("etcd port");
        let base = format!("http://127.0.0.1:{}", port.trim());
        // etcd's gRPC gateway: POST /v3/kv/range for the current revision, then compact.
        let (code, body) =
            super::http("POST", &format!("{base}/v3/kv/range"), br#"{"key":"AA=="}"#)
                .await
                .unwrap_or_else(|e| panic!("etcd range: {e}"));
        assert_eq!(code, 200, "etcd range: {body}");
        let value: serde_json::Value = serde_json::from_str(&body).expect("etcd json");
        let revision: u64 = value["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {body}"));
        let request = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let (code, body) = super::http(
            "POST",
            &format!("{base}/v3/kv/compaction"),
            request.as_bytes(),
        )
        .await
        .unwrap_or_else(|e| panic!("etcd compaction: {e}"));
        assert_eq!(code, 200, "etcd compaction: {body}");
        revision
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.dir.display().to_string()])
            .output();
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)
            .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display())),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("a client config from the kubeconfig");
    kube::Client::try_from(config).expect("a Kubernetes client")
}

// ---------------------------------------------------------------------------------
// the audit log

/// The fields of an audit event (`audit.k8s.io/v1`) that the tests count by.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub stage: String,
    pub verb: String,
    #[serde(default)]
    pub request_u_r_i: String,
    pub user: AuditUser,
    #[serde(default)]
    pub object_ref: Option<AuditObjectRef>,
    #[serde(default)]
    pub response_status: Option<AuditStatus>,
    #[serde(default)]
    pub user_agent: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AuditUser {
    #[serde(default)]
    pub username: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub api_group: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AuditStatus {
    #[serde(default)]
    pub code: u16,
}

impl AuditEvent {
    /// A finished request, or a watch that started (watches finish only when cut).
    pub fn counts(&self) -> bool {
        match self.stage.as_str() {
            "ResponseComplete" | "Panic" => self.verb != "watch",
            "ResponseStarted" => self.verb == "watch",
            _ => false,
        }
    }

    /// A query parameter of the request URI (`fieldManager`, `dryRun`, ...).
    pub fn query(&self, key: &str) -> Option<&str> {
        let query = self.request_u_r_i.split_once('?')?.1;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Whether the event matches `filter`, a `key=value&...` list over `verb`, `resource`,
    /// `subresource`, `group`, `namespace`, `user`, `code` and `fieldManager`.
    pub fn matches(&self, filter: &str) -> bool {
        let object = self.object_ref.clone().unwrap_or_default();
        filter
            .split('&')
            .filter(|pair| !pair.is_empty())
            .all(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                match key {
                    "verb" => self.verb == value,
                    "resource" => object.resource == value,
                    "subresource" => object.subresource == value,
                    "group" => object.api_group == value,
                    "namespace" => object.namespace == value,
                    "user" => self.user.username == value,
                    "code" => self
                        .response_status
                        .as_ref()
                        .is_some_and(|s| s.code.to_string() == value),
                    "fieldManager" => self.query("fieldManager") == Some(value),
                    other => panic!("unknown audit filter key {other:?} in {filter:?}"),
                }
            })
    }
}

/// Parses an audit log (JSON lines); a line cut short by a write in progress is skipped.
pub fn read_audit(path: &Path) -> Vec<AuditEvent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<AuditEvent>(line).ok())
        .filter(AuditEvent::counts)
        .collect()
}
