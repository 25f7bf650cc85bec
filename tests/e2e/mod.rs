//! Harness for the end-to-end tests: a real Kubernetes control plane ([`cluster`]),
//! `shadowsync dataplane serve` and `shadowsync run` as real processes, one set per test,
//! and helpers to drive them. The operator authenticates as the chart's ServiceAccount,
//! bound by the chart's RBAC, and reaches the apiserver through a [`proxy`] that can cut,
//! refuse or slow its connections.
//!
//! Every number a test asserts comes from the servers' own counters: data-plane calls
//! from the data plane's `/_shadowsync/stats`, Kubernetes requests from the apiserver's
//! audit log. Nothing is taken from the operator's word, except its `/metrics` and
//! `/readyz`, which are what the test checks there.
//!
//! Processes are owned by [`Proc`], which kills and reaps its process on drop, so that a
//! failing (panicking) test leaves nothing behind. Each stream of a process is copied to
//! a log file under `$CARGO_TARGET_TMPDIR/e2e/<test>/`; a failing test prints the tail
//! of each log.

#![allow(dead_code)] // Not every test uses every helper.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::Client;
use serde::Deserialize;
use serde_json::{json, Value};
use shadowsync::api::{RetainedMessage, ThingShadow};
use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::server::{Operation, StatsSnapshot};
use shadowsync::dataplane::{DataPlane, DataPlaneError, ErrorKind, ShadowDocument};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod cluster;
pub mod proxy;

pub use cluster::ControlPlane;
pub use proxy::Proxy;

/// How long a process may take to print its address.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The default deadline of a wait for the operator to do something.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Set it to a `RUST_LOG` filter for the operator processes (default
/// `warn,shadowsync=debug`), e.g. to see every AWS SDK request.
pub const OPERATOR_LOG_ENV: &str = "SHADOWSYNC_E2E_OPERATOR_LOG";
/// Pause between two looks at a polled condition.
const POLL: Duration = Duration::from_millis(100);

pub const GROUP_VERSION: &str = "iot.shadowsync.dev/v1alpha1";
pub const PAUSED: &str = "iot.shadowsync.dev/paused";
pub const RECONCILE_REQUESTED: &str = "iot.shadowsync.dev/reconcile-requested-at";
pub const FINALIZER: &str = "iot.shadowsync.dev/cleanup";

// ---------------------------------------------------------------------------------
// processes

/// A child process that is killed and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    /// Output lines until the start-up line was found (then dropped: the log has them).
    lines: Option<mpsc::Receiver<String>>,
}

impl Proc {
    /// Starts `program` with both output streams copied, line by line, to `log` and to
    /// [`Proc::wait_line`].
    fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
        log: PathBuf,
    ) -> Proc {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Settings of the developer's shell must not change what the operator does.
        for (key, _) in std::env::vars() {
            if key.starts_with("SHADOWSYNC_") || key.starts_with("AWS_") || key == "RUST_LOG" {
                command.env_remove(&key);
            }
        }
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        copy_lines(
            stdout,
            file.try_clone().expect("log file handle"),
            tx.clone(),
        );
        copy_lines(stderr, file, tx);
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            lines: Some(lines),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Waits for the first output line `pick` accepts, and returns what it picked.
    fn wait_line<T>(&mut self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + START_DEADLINE;
        let lines = self
            .lines
            .as_ref()
            .expect("output lines are still listened to");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = pick(&line) {
                        return found;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{} printed no {what} within {START_DEADLINE:?}; {}",
                        self.name,
                        self.tail()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    panic!(
                        "{} exited ({status:?}) before printing {what}; {}",
                        self.name,
                        self.tail()
                    )
                }
            }
        }
    }

    /// Stops queueing output lines (they still go to the log).
    fn stop_listening(&mut self) {
        self.lines = None;
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> Result<(ExitStatus, Duration), String> {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill -TERM {} failed: {status}", self.pid()));
        }
        let child = self.child.as_mut().ok_or("already reaped")?;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                self.child = None;
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > within {
                return Err(format!(
                    "{} still runs {within:?} after SIGTERM; {}",
                    self.name,
                    self.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("{} (last lines):\n{tail}", self.log.display())
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "--- {}: {}", self.name, self.tail());
        }
    }
}

/// Copies a stream to the log file and to the channel (while anyone listens).
fn copy_lines(
    stream: impl std::io::Read + Send + 'static,
    mut file: std::fs::File,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let _ = file.write_all(line.as_bytes());
                    let _ = tx.send(line.trim_end().to_string());
                }
            }
        }
    });
}

fn shadowsync_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shadowsync"))
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

// ---------------------------------------------------------------------------------
// the stack

/// The running operator.
pub struct Operator {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT` of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_url: String,
}

/// One test's processes and clients. Fields drop in order: the operator goes first.
pub struct Stack {
    pub operator: Option<Operator>,
    pub dataplane: Proc,
    /// Between the operator and the apiserver: cuts, refusals and delays on demand.
    pub proxy: Proxy,
    /// etcd, kube-apiserver and kube-controller-manager of this test alone.
    pub cluster: ControlPlane,
    /// `http://127.0.0.1:PORT` of the data plane.
    pub dp_url: String,
    /// `https://127.0.0.1:PORT` of the apiserver.
    pub api_url: String,
    /// The admin kubeconfig (tests and kubectl act as a cluster administrator).
    pub kubeconfig: PathBuf,
    /// The operator's kubeconfig: the chart's ServiceAccount, through the proxy.
    pub operator_kubeconfig: PathBuf,
    pub dir: PathBuf,
    /// An admin client.
    pub client: Client,
    /// The data plane through the AWS SDK adapter: what a device or another tool does.
    pub plane: AwsDataPlane,
    operator_runs: u32,
    audit_markers: std::sync::atomic::AtomicU64,
}

/// Where the chart (and `deploy/install.yaml`) installs the operator.
pub const OPERATOR_NAMESPACE: &str = "shadowsync-system";
/// The chart's ServiceAccount, as which the operator runs.
pub const OPERATOR_SERVICE_ACCOUNT: &str = "shadowsync";
/// The operator's user name in the audit log.
pub const OPERATOR_USER: &str = "system:serviceaccount:shadowsync-system:shadowsync";

impl Stack {
    /// Starts the control plane, the data plane and the operator for the test `name`.
    pub async fn start(name: &str) -> Stack {
        let mut stack = Stack::without_operator(name).await;
        stack.start_operator(&[]).await;
        stack
    }

    /// Starts the control plane and the data plane only.
    pub async fn without_operator(name: &str) -> Stack {
        Stack::with_crds(name, &repo_path("crds")).await
    }

    /// [`Stack::without_operator`] with the CustomResourceDefinitions in `crds`.
    ///
    /// The cluster gets exactly what `deploy/install.yaml` (rendered from the chart)
    /// installs around the operator: its namespace, ServiceAccount and RBAC objects. The
    /// operator runs as that ServiceAccount, so a permission the chart lacks fails the
    /// test that needs it.
    pub async fn with_crds(name: &str, crds: &std::path::Path) -> Stack {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");

        let mut dataplane = Proc::spawn(
            "dataplane",
            &shadowsync_binary(),
            &[
                "dataplane".into(),
                "serve".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
            &[("RUST_LOG", "warn,shadowsync=info".into())],
            dir.join("dataplane.log"),
        );
        let cluster = ControlPlane::start(&dir.join("cluster"));
        let dp_url = dataplane.wait_line("its address", listening_url);
        dataplane.stop_listening();

        let kubeconfig = cluster.kubeconfig.clone();
        kubectl_apply(&kubeconfig, crds, &dir);
        install_operator_rbac(&kubeconfig, &dir);
        let proxy = Proxy::start(cluster.port());
        let operator_kubeconfig = dir.join("operator.kubeconfig");
        cluster.service_account_kubeconfig(
            OPERATOR_NAMESPACE,
            OPERATOR_SERVICE_ACCOUNT,
            &operator_kubeconfig,
            &proxy.url,
        );
        let client = cluster.client().await;
        let plane = AwsDataPlane::connect(AwsOptions {
            endpoint_url: Some(dp_url.clone()),
            region: Some("us-east-1".into()),
        })
        .await
        .expect("an AWS SDK client for the local data plane");
        Stack {
            operator: None,
            dataplane,
            proxy,
            api_url: cluster.url.clone(),
            cluster,
            dp_url,
            kubeconfig,
            operator_kubeconfig,
            dir,
            client,
            plane,
            operator_runs: 0,
            audit_markers: Default::default(),
        }
    }

    /// Starts `shadowsync run` (with `extra` flags) and waits until `/readyz` says its
    /// caches are synced.
    pub async fn start_operator(&mut self, extra: &[&str]) {
        assert!(self.operator.is_none(), "the operator already runs");
        let dp_url = self.dp_url.clone();
        let operator = self.spawn_operator(&dp_url, extra, "operator").await;
        self.operator = Some(operator);
    }

    /// Starts one more `shadowsync run` against the data plane at `dp_url` and waits
    /// until its `/readyz` answers 200. The caller owns it.
    pub async fn spawn_operator(&mut self, dp_url: &str, extra: &[&str], label: &str) -> Operator {
        let operator = self.spawn_operator_unready(dp_url, extra, label);
        let readyz = format!("{}/readyz", operator.metrics_url);
        eventually(
            &format!("{label}'s /readyz to answer 200"),
            DEADLINE,
            async || match http("GET", &readyz, b"").await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
        operator
    }

    /// Starts one more `shadowsync run` and returns once it serves its endpoints, ready
    /// or not. The caller owns it.
    pub fn spawn_operator_unready(
        &mut self,
        dp_url: &str,
        extra: &[&str],
        label: &str,
    ) -> Operator {
        self.operator_runs += 1;
        let mut args: Vec<String> = vec![
            "run".into(),
            "--endpoint-url".into(),
            dp_url.to_string(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--log-format".into(),
            "json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut proc = Proc::spawn(
            label,
            &shadowsync_binary(),
            &args,
            &[
                ("KUBECONFIG", self.operator_kubeconfig.display().to_string()),
                // What the chart's Deployment sets: the Lease lives in its namespace.
                ("POD_NAMESPACE", OPERATOR_NAMESPACE.into()),
                // Static credentials and region: no probing of instance metadata.
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ACCESS_KEY_ID", "e2e".into()),
                ("AWS_SECRET_ACCESS_KEY", "e2e".into()),
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
                // One identity per process, for leader election.
                ("POD_NAME", format!("{label}-{}", self.operator_runs)),
                (
                    "RUST_LOG",
                    std::env::var(OPERATOR_LOG_ENV).unwrap_or("warn,shadowsync=debug".into()),
                ),
            ],
            self.dir.join(format!("{label}-{}.log", self.operator_runs)),
        );
        let addr = proc.wait_line("the metrics address", |line| {
            let entry: Value = serde_json::from_str(line).ok()?;
            let fields = entry.get("fields")?;
            if fields.get("message")?.as_str()? != "serving /metrics, /healthz and /readyz" {
                return None;
            }
            fields.get("addr")?.as_str().map(str::to_owned)
        });
        proc.stop_listening();
        Operator {
            proc,
            metrics_url: format!("http://{addr}"),
        }
    }

    /// Starts one more data plane (`label` names its log). The caller owns it.
    pub fn spawn_dataplane(&self, label: &str) -> (Proc, String) {
        let mut proc = Proc::spawn(
            label,
            &shadowsync_binary(),
            &[
                "dataplane".into(),
                "serve".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
            &[("RUST_LOG", "warn,shadowsync=info".into())],
            self.dir.join(format!("{label}.log")),
        );
        let url = proc.wait_line("its address", listening_url);
        proc.stop_listening();
        (proc, url)
    }

    /// Sends SIGTERM to the operator and returns its exit status and how long it took.
    pub fn stop_operator(&mut self) -> (ExitStatus, Duration) {
        let mut operator = self.operator.take().expect("the operator runs");
        operator
            .proc
            .terminate(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn operator(&self) -> &Operator {
        self.operator.as_ref().expect("the operator runs")
    }

    // ---- Kubernetes

    pub async fn create_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("a Namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    }

    fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &kind.resource())
    }

    /// Creates a resource of `kind` with this `spec` (and optional `metadata` extras).
    pub async fn create(&self, kind: Kind, namespace: &str, name: &str, spec: Value) -> Value {
        self.create_with(kind, namespace, json!({"name": name}), spec)
            .await
    }

    /// A create that reports a refusal instead of failing.
    pub async fn try_create(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        spec: Value,
    ) -> Result<Value, String> {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": GROUP_VERSION,
            "kind": kind.name(),
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .expect("a resource");
        self.api(kind, namespace)
            .create(&PostParams::default(), &object)
            .await
            .map(|o| serde_json::to_value(o).expect("json"))
            .map_err(|e| e.to_string())
    }

    pub async fn create_with(
        &self,
        kind: Kind,
        namespace: &str,
        metadata: Value,
        spec: Value,
    ) -> Value {
        let mut metadata = metadata;
        metadata["namespace"] = json!(namespace);
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": GROUP_VERSION,
            "kind": kind.name(),
            "metadata": metadata,
            "spec": spec,
        }))
        .expect("a resource");
        let created = self
            .api(kind, namespace)
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create {} {namespace}/{}: {e}",
                    kind.name(),
                    object.metadata.name.clone().unwrap_or_default()
                )
            });
        serde_json::to_value(created).expect("json")
    }

    /// A get that reports errors instead of failing (polls retry through them).
    pub async fn try_get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, String> {
        self.api(kind, namespace)
            .get_opt(name)
            .await
            .map(|o| o.map(|o| serde_json::to_value(o).expect("json")))
            .map_err(|e| format!("get {} {namespace}/{name}: {e}", kind.name()))
    }

    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.api(kind, namespace)
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get {} {namespace}/{name}: {e}", kind.name()))
            .map(|o| serde_json::to_value(o).expect("json"))
    }

    /// A JSON merge patch of the main resource (spec, metadata).
    pub async fn merge_patch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Value {
        let patched = self
            .api(kind, namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch {} {namespace}/{name}: {e}", kind.name()));
        serde_json::to_value(patched).expect("json")
    }

    /// A JSON merge patch that may fail (e.g. while the apiserver restarts).
    pub async fn try_merge_patch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, String> {
        self.api(kind, namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|o| serde_json::to_value(o).expect("json"))
            .map_err(|e| e.to_string())
    }

    pub async fn annotate(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) {
        self.merge_patch(
            kind,
            namespace,
            name,
            json!({"metadata": {"annotations": {key: value}}}),
        )
        .await;
    }

    pub async fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        self.api(kind, namespace)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {} {namespace}/{name}: {e}", kind.name()));
    }

    /// Waits until the object is gone (its finalizer handled).
    pub async fn wait_gone(&self, kind: Kind, namespace: &str, name: &str) {
        eventually(
            &format!("{} {namespace}/{name} to disappear", kind.name()),
            DEADLINE,
            async || match self.try_get(kind, namespace, name).await? {
                None => Ok(()),
                Some(obj) => Err(format!("still there: {}", obj["metadata"])),
            },
        )
        .await;
    }

    /// Waits until the resource is Ready=True for its current generation, and returns it.
    pub async fn wait_ready(&self, kind: Kind, namespace: &str, name: &str) -> Value {
        self.wait_status(
            kind,
            namespace,
            name,
            "Ready=True for the current generation",
            |obj| condition_is(obj, "Ready", "True") && is_current(obj),
        )
        .await
    }

    /// Waits until `check` accepts the object, and returns it.
    pub async fn wait_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let description = format!("{} {namespace}/{name}: {what}", kind.name());
        eventually(&description, DEADLINE, async || {
            match self.try_get(kind, namespace, name).await? {
                Some(obj) if check(&obj) => Ok(obj),
                Some(obj) => Err(format!(
                    "generation {}, status {}",
                    obj["metadata"]["generation"],
                    serde_json::to_string_pretty(&obj["status"]).unwrap_or_default()
                )),
                None => Err("not found".into()),
            }
        })
        .await
    }

    /// Events in the namespace about the object `name`.
    pub async fn events(&self, namespace: &str, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        api.list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list events in {namespace}: {e}"))
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect()
    }

    /// Waits for an event of `type_` ("Normal"/"Warning") and `reason` about `name`.
    pub async fn wait_event(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        reason: &str,
    ) -> Event {
        eventually(
            &format!("a {type_} event {reason} about {namespace}/{name}"),
            DEADLINE,
            async || {
                let events = self.events(namespace, name).await;
                events
                    .iter()
                    .find(|e| {
                        e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason)
                    })
                    .cloned()
                    .ok_or_else(|| {
                        let seen: Vec<String> = events
                            .iter()
                            .map(|e| format!("{:?}/{:?}: {:?}", e.type_, e.reason, e.message))
                            .collect();
                        format!("events so far: {seen:?}")
                    })
            },
        )
        .await
    }

    // ---- counters

    /// The data plane's call counts per thing and topic, and publishes per topic.
    pub async fn target_stats(&self) -> shadowsync::dataplane::server::TargetStats {
        let url = format!("{}/_shadowsync/stats/targets", self.dp_url);
        let (code, body) = http("GET", &url, b"")
            .await
            .unwrap_or_else(|e| panic!("target stats: {e}"));
        assert_eq!(code, 200, "target stats: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("target stats {body}: {e}"))
    }

    /// The data plane's call counts.
    pub async fn stats(&self) -> Stats {
        let (code, body) = http("GET", &format!("{}/_shadowsync/stats", self.dp_url), b"")
            .await
            .unwrap_or_else(|e| panic!("data-plane stats: {e}"));
        assert_eq!(code, 200, "data-plane stats: {body}");
        Stats(serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats {body}: {e}")))
    }

    /// Requests in the apiserver's audit log that match `query` (`verb=patch&
    /// subresource=status`; keys in [`cluster::AuditEvent::matches`]).
    ///
    /// The audit line of a request is written as its response goes out, so a marker
    /// request is sent first and the log read once the marker is in it: every request
    /// that finished before this call is counted.
    pub async fn api_count(&self, query: &str) -> u64 {
        let marker = self
            .audit_markers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("shadowsync-audit-marker-{marker}");
        let uri = format!("/api/v1/namespaces/{name}");
        Api::<Namespace>::all(self.client.clone())
            .get_opt(&name)
            .await
            .unwrap_or_else(|e| panic!("audit marker request: {e}"));
        let log = self.cluster.dir.join("audit.log");
        eventually("the audit marker in the audit log", DEADLINE, async || {
            let events = cluster::read_audit(&log);
            if events.iter().any(|e| e.request_u_r_i == uri) {
                Ok(events.iter().filter(|e| e.matches(query)).count() as u64)
            } else {
                Err(format!("{} events, no marker {uri}", events.len()))
            }
        })
        .await
    }

    /// Status writes by the operator (server-side apply on `/status` by `shadowsync`).
    pub async fn status_writes(&self) -> u64 {
        self.api_count(&format!(
            "verb=patch&subresource=status&fieldManager=shadowsync&user={OPERATOR_USER}"
        ))
        .await
    }

    /// Every write request to the API, by anyone, of the shadowsync kinds.
    pub async fn resource_writes(&self) -> u64 {
        let mut total = 0;
        for verb in ["create", "update", "patch", "delete"] {
            total += self
                .api_count(&format!("verb={verb}&group=iot.shadowsync.dev"))
                .await;
        }
        total
    }

    // ---- Kubernetes faults, from the real components

    /// Cuts every connection between the operator and the apiserver (its watches
    /// included); the operator reconnects and resumes its watches.
    pub fn cut_watches(&self) -> usize {
        self.proxy.cut()
    }

    /// Restarts kube-apiserver (same port, same etcd); returns once it is ready again.
    pub fn restart_apiserver(&self) {
        self.cluster.component("restart", "apiserver");
    }

    /// Makes the operator's watches resume from a resourceVersion that no longer exists:
    /// etcd's history is compacted and the apiserver restarted (a fresh watch cache
    /// starts at the newest revision), so the operator gets `410 Gone` and lists again.
    /// Returns the revision compacted to.
    pub async fn expire_watch_history(&self) -> u64 {
        // A write the operator does not watch moves etcd past the operator's last
        // resourceVersion, whatever the timing of its bookmarks.
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), "default");
        let marker = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "e2e-revision"}, "data": {"at": format!("{:?}", Instant::now())}});
        api.patch(
            "e2e-revision",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&marker),
        )
        .await
        .unwrap_or_else(|e| panic!("revision marker: {e}"));
        let revision = self.cluster.compact_etcd().await;
        self.restart_apiserver();
        revision
    }

    // ---- data plane as a device or another tool

    pub async fn shadow(&self, thing: &str, shadow: Option<&str>) -> Option<ShadowDocument> {
        match self.plane.get_thing_shadow(thing, shadow).await {
            Ok(doc) => Some(doc),
            Err(err) if err.kind == ErrorKind::ResourceNotFound => None,
            Err(err) => panic!("GetThingShadow {thing}: {err}"),
        }
    }

    /// UpdateThingShadow with `document` (no version: last writer wins).
    pub async fn update_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        document: Value,
    ) -> ShadowDocument {
        self.plane
            .update_thing_shadow(thing, shadow, document.to_string().into())
            .await
            .unwrap_or_else(|e| panic!("UpdateThingShadow {thing}: {e}"))
    }

    pub async fn retained(
        &self,
        topic: &str,
    ) -> Result<shadowsync::dataplane::RetainedMessageData, DataPlaneError> {
        self.plane.get_retained_message(topic).await
    }

    /// Replaces the data plane's fault settings (`{}` clears them).
    pub async fn set_faults(&self, settings: Value) {
        let (code, body) = http(
            "PUT",
            &format!("{}/_shadowsync/faults", self.dp_url),
            settings.to_string().as_bytes(),
        )
        .await
        .unwrap_or_else(|e| panic!("fault settings: {e}"));
        assert_eq!(code, 200, "fault settings {settings}: {body}");
    }

    /// Creates or replaces a core object (Secret, ConfigMap) from JSON.
    pub async fn put_core<K>(&self, namespace: &str, object: Value)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let typed: K = serde_json::from_value(object.clone()).expect("a core object");
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        let params = PatchParams::apply("e2e-test").force();
        api.patch(&name, &params, &Patch::Apply(&typed))
            .await
            .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    }

    /// `GET` on the operator's endpoint server.
    pub async fn operator_get(&self, path: &str) -> (u16, String) {
        http(
            "GET",
            &format!("{}{path}", self.operator().metrics_url),
            b"",
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path} on the operator: {e}"))
    }
}

/// `kubectl apply --server-side` of `path` (a file or folder) as the admin; for
/// CustomResourceDefinitions, waits until they are established.
pub fn kubectl_apply(kubeconfig: &Path, path: &Path, dir: &Path) {
    let kubectl = find_kubectl().expect("kubectl is needed to set up the cluster");
    let run = |args: &[&str]| {
        let out = Command::new(&kubectl)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBECACHEDIR", dir.join("kubectl-cache"))
            .output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let path_text = path.display().to_string();
    let applied = run(&[
        "apply",
        "--server-side",
        "--field-manager=e2e-setup",
        "-f",
        &path_text,
    ]);
    let crds: Vec<&str> = applied
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("customresourcedefinition"))
        .collect();
    wait_established(kubeconfig, dir, &crds);
}

/// Polls until every CustomResourceDefinition in `crds` (`customresourcedefinition.../NAME`
/// or `crd/NAME`) is Established. `kubectl wait` cannot do it alone: right after the
/// create, a CRD has no status yet and kubectl wait fails on it instead of waiting.
pub fn wait_established(kubeconfig: &Path, dir: &Path, crds: &[&str]) {
    let kubectl = find_kubectl().expect("kubectl is needed to set up the cluster");
    let deadline = Instant::now() + Duration::from_secs(60);
    for crd in crds {
        let name = crd.rsplit('/').next().unwrap_or(crd);
        loop {
            let out = Command::new(&kubectl)
                .args(["get", "crd", name, "-o"])
                .arg(r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#)
                .env("KUBECONFIG", kubeconfig)
                .env("KUBECACHEDIR", dir.join("kubectl-cache"))
                .output()
                .unwrap_or_else(|e| panic!("kubectl: {e}"));
            let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && status == "True" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} not Established within 60 s: {status:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(POLL);
        }
    }
}

/// Applies what `deploy/install.yaml` installs around the operator (its Namespace,
/// ServiceAccount and RBAC objects), exactly as rendered from the chart.
pub fn install_operator_rbac(kubeconfig: &Path, dir: &Path) {
    const KINDS: [&str; 6] = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let text = std::fs::read_to_string(repo_path("deploy/install.yaml")).expect("install.yaml");
    let mut kept = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).expect("install.yaml parses");
        if KINDS.contains(&value["kind"].as_str().unwrap_or_default()) {
            kept.push(value);
        }
    }
    assert_eq!(
        kept.len(),
        KINDS.len(),
        "install.yaml holds one object of each kind"
    );
    let file = dir.join("operator-rbac.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": kept});
    std::fs::write(&file, list.to_string()).expect("rbac file");
    kubectl_apply(kubeconfig, &file, dir);
}

/// `listening on http://ADDR` -> `http://ADDR`.
fn listening_url(line: &str) -> Option<String> {
    line.trim().strip_prefix("listening on ").map(str::to_owned)
}

/// The data plane's call counts.
#[derive(Clone, Debug)]
pub struct Stats(pub StatsSnapshot);

impl Stats {
    /// Calls of `op`, whatever the outcome.
    pub fn calls(&self, op: Operation) -> u64 {
        self.0.calls_of(op)
    }

    pub fn total(&self) -> u64 {
        self.0.totals.calls
    }

    /// Calls of `op` since `before`.
    pub fn since(&self, before: &Stats, op: Operation) -> u64 {
        self.calls(op) - before.calls(op)
    }

    /// Writes of any kind (shadow updates and deletes, publishes).
    pub fn writes(&self) -> u64 {
        self.calls(Operation::UpdateThingShadow)
            + self.calls(Operation::DeleteThingShadow)
            + self.calls(Operation::Publish)
    }
}

// ---------------------------------------------------------------------------------
// resources

/// The three kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Shadow,
    Retained,
    Set,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Shadow => "ThingShadow",
            Kind::Retained => "RetainedMessage",
            Kind::Set => "ThingShadowSet",
        }
    }

    pub fn resource(self) -> ApiResource {
        match self {
            Kind::Shadow => ApiResource::erase::<ThingShadow>(&()),
            Kind::Retained => ApiResource::erase::<RetainedMessage>(&()),
            Kind::Set => ApiResource::erase::<shadowsync::api::ThingShadowSet>(&()),
        }
    }
}

/// The condition of `type_` in the object's status.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub fn condition_is(obj: &Value, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == status)
}

pub fn condition_reason(obj: &Value, type_: &str) -> Option<String> {
    condition(obj, type_).and_then(|c| c["reason"].as_str().map(str::to_owned))
}

/// The status was written for the object's current generation (on the status and on
/// its Ready condition).
pub fn is_current(obj: &Value) -> bool {
    let generation = &obj["metadata"]["generation"];
    !generation.is_null()
        && obj["status"]["observedGeneration"] == *generation
        && condition(obj, "Ready").is_some_and(|c| c["observedGeneration"] == *generation)
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// waiting

/// Polls `check` until it answers `Ok`, for at most `timeout`; panics with the last
/// answer otherwise.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `f` and fails the test if it does not finish within `timeout`.
pub async fn within<T>(what: &str, timeout: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {timeout:?}"))
}

// ---------------------------------------------------------------------------------
// HTTP

/// A minimal HTTP/1.1 request over a fresh connection (`Connection: close`); returns the
/// status code and the body (chunked bodies are decoded).
pub async fn http(method: &str, url: &str, body: &[u8]) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        stream
            .write_all(body)
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok::<_, String>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| format!("{method} {url}: no answer within 20 s"))??;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{method} {url}: no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let raw = &response[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {url}: no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

// ---------------------------------------------------------------------------------
// kubectl

/// `$SHADOWSYNC_KUBECTL`, else the kubectl that `tests/kube` builds with the control
/// plane (the same release as the apiserver).
pub fn find_kubectl() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("SHADOWSYNC_KUBECTL") {
        return Some(PathBuf::from(explicit));
    }
    let built = PathBuf::from(cluster::cluster_sh(&["build"]).trim()).join("kubectl");
    built.is_file().then_some(built)
}

/// Prints a line to the real stderr (libtest captures `eprintln!` of passing tests, and
/// a SKIP must show in a plain `cargo test` run).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

// ---------------------------------------------------------------------------------
// kubectl

/// kubectl against the stack's apiserver, with its caches in the test directory.
pub struct Kubectl {
    binary: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    home: std::path::PathBuf,
}

impl Kubectl {
    pub fn new(binary: std::path::PathBuf, s: &Stack) -> Self {
        let home = s.dir.join("kubectl-home");
        std::fs::create_dir_all(&home).expect("kubectl home");
        Kubectl {
            binary,
            kubeconfig: s.kubeconfig.clone(),
            home,
        }
    }

    /// Runs kubectl (on a blocking-friendly thread); returns success, stdout, stderr.
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        tokio::task::block_in_place(|| {
            let output = std::process::Command::new(&self.binary)
                .args(args)
                .arg(format!("--cache-dir={}", self.home.join("cache").display()))
                .env("KUBECONFIG", &self.kubeconfig)
                .env("HOME", &self.home)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("kubectl runs");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).to_string(),
                String::from_utf8_lossy(&output.stderr).to_string(),
            )
        })
    }

    /// Runs kubectl and returns stdout; fails the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args);
        assert!(ok, "kubectl {args:?} failed:\n{stdout}\n{stderr}");
        stdout
    }
}

/// The header and rows of kubectl's table output, split on whitespace.
pub fn table(out: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = out
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    let header = lines.next().unwrap_or_default();
    let rows: Vec<Vec<String>> = lines.filter(|r| !r.is_empty()).collect();
    assert!(!rows.is_empty(), "no rows in:\n{out}");
    (header, rows)
}
