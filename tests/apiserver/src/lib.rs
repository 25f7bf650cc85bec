//! A small, in-memory Kubernetes API server for end-to-end tests: the real shadowsync
//! binary, kube-rs clients and kubectl talk to it over plain HTTP on loopback.
//!
//! It serves discovery, namespaces, core Secrets, ConfigMaps and Events, `events.k8s.io`
//! Events, Leases and every CRD (from files or created at runtime) with list, watch, get,
//! create, update, patch (merge, JSON, apply, strategic for built-ins), delete and
//! deletecollection; the status subresource; generation; finalizers; schema pruning,
//! defaulting and validation (including CEL rules); Table output for kubectl; and `/_test/`
//! hooks for counting requests and injecting faults. See README.md for what it leaves out.
//!
//! ```no_run
//! let server = test_apiserver::TestApiServer::start(test_apiserver::Options {
//!     crds: vec!["crds".into()],
//!     ..Default::default()
//! })
//! .unwrap();
//! std::env::set_var("KUBECONFIG", server.kubeconfig_path());
//! ```

mod apply;
mod convert;
mod discovery;
pub mod errors;
mod jsonpath;
mod meta;
mod ops;
mod registry;
mod schema;
mod selectors;
mod server;
mod store;
mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

pub use store::{CounterEntry, RequestFilter, RequestKey};

use server::{Control, Shared};
use store::{ConflictFault, Store};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// CRD YAML files, or directories whose `*.yaml`, `*.yml` and `*.json` files are read.
    pub crds: Vec<PathBuf>,
    /// Where to write the kubeconfig; `None` writes one into the temp directory and removes
    /// it when the server is dropped.
    pub kubeconfig: Option<PathBuf>,
    /// Persist objects here (loaded at start if present, written shortly after each change
    /// and at shutdown), so a new process can continue with the same data.
    pub data_file: Option<PathBuf>,
    /// How many changes the watch history keeps; older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// Interval of the periodic BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Seed for generated names and UIDs, so that runs repeat.
    pub seed: u64,
    /// Minor version reported by `/version` (major is 1).
    pub kube_minor: u32,
    /// Print one line per API request to stderr.
    pub log_requests: bool,
    /// How long after a namespace's deletion its content is deleted (what the namespace
    /// controller does in a real cluster, a moment later).
    pub namespace_cleanup_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            crds: Vec::new(),
            kubeconfig: None,
            data_file: None,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            seed: 1,
            kube_minor: 33,
            log_requests: false,
            namespace_cleanup_delay: Duration::from_millis(500),
        }
    }
}

/// Why a server did not start or restart.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn err(what: impl std::fmt::Display) -> StartError {
    StartError(what.to_string())
}

/// A running server. It runs on its own thread and runtime, so it can be used from sync and
/// async tests alike; dropping it stops it (and writes the data file, if any).
pub struct TestApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    remove_kubeconfig: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestApiServer {
    pub fn start(options: Options) -> Result<TestApiServer, StartError> {
        let mut store = Store::new(
            options.history_limit,
            options.seed,
            options.namespace_cleanup_delay,
        );
        if let Some(path) = options.data_file.as_ref().filter(|p| p.exists()) {
            let bytes =
                std::fs::read(path).map_err(|e| err(format!("reading {}: {e}", path.display())))?;
            let snapshot = serde_json::from_slice(&bytes)
                .map_err(|e| err(format!("parsing {}: {e}", path.display())))?;
            store.restore(snapshot);
        }
        for ns in ["default", "kube-system", "kube-public"] {
            if store.get(registry::NAMESPACE_STORAGE, "", ns).is_none() {
                ops::ensure(
                    &mut store,
                    "",
                    "v1",
                    "namespaces",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )
                .map_err(err)?;
            }
        }
        for crd in load_crds(&options.crds)? {
            let name = crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            ops::ensure(
                &mut store,
                registry::CRD_GROUP,
                "v1",
                "customresourcedefinitions",
                crd,
            )
            .map_err(|e| err(format!("CRD {name}: {}", e.message)))?;
        }

        let listener = std::net::TcpListener::bind(options.listen)
            .map_err(|e| err(format!("listening on {}: {e}", options.listen)))?;
        listener.set_nonblocking(true).map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;

        let (kubeconfig, remove_kubeconfig) = match &options.kubeconfig {
            Some(p) => (p.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "test-apiserver-{}-{}.kubeconfig",
                    std::process::id(),
                    addr.port()
                )),
                true,
            ),
        };
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr))
            .map_err(|e| err(format!("writing {}: {e}", kubeconfig.display())))?;

        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store: std::sync::Mutex::new(store),
            kube_minor: options.kube_minor,
            log_requests: options.log_requests,
            server_address: addr.to_string(),
            control: control_tx,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-apiserver")
            .enable_all()
            .build()
            .map_err(err)?;
        let thread_shared = shared.clone();
        let data_file = options.data_file.clone();
        let bookmark_interval = options.bookmark_interval;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("test-apiserver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    control_loop(
                        thread_shared,
                        listener,
                        addr,
                        control_rx,
                        data_file,
                        bookmark_interval,
                    )
                    .await;
                });
            })
            .map_err(err)?;
        ready_rx
            .recv()
            .map_err(|_| err("the server thread ended before listening"))?
            .map_err(err)?;
        Ok(TestApiServer {
            shared,
            addr,
            kubeconfig,
            remove_kubeconfig,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version()
    }

    /// All request counters (every API request, keyed by verb, resource, subresource,
    /// patch type, field manager, user agent and answer code).
    pub fn counters(&self) -> Vec<CounterEntry> {
        self.shared
            .lock()
            .counters
            .iter()
            .map(|(k, n)| CounterEntry {
                key: k.clone(),
                count: *n,
            })
            .collect()
    }

    /// The number of requests matching a filter.
    pub fn count(&self, filter: &RequestFilter) -> u64 {
        self.shared
            .lock()
            .counters
            .iter()
            .filter(|(k, _)| filter.matches(k))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset_counters(&self) {
        self.shared.lock().counters.clear();
    }

    /// Answers the next `count` writes matching `filter` with 409 Conflict.
    pub fn inject_conflicts(&self, count: u32, filter: RequestFilter) {
        self.shared.lock().conflict_faults.push(ConflictFault {
            remaining: count,
            filter,
        });
    }

    pub fn clear_faults(&self) {
        self.shared.lock().conflict_faults.clear();
    }

    /// Number of open watch streams.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches().len()
    }

    /// Ends every open watch stream (clients see the stream end and watch again).
    pub fn cut_watches(&self) -> usize {
        self.shared.lock().cut_watches()
    }

    /// Drops the watch history, so watching from any earlier resourceVersion gets 410 Gone.
    pub fn forget_history(&self) -> u64 {
        self.shared.lock().forget_history()
    }

    /// Sends a BOOKMARK now on every watch that allows bookmarks.
    pub fn send_bookmarks(&self) {
        self.shared.lock().send_bookmarks()
    }

    /// A stored object as the given group/version serves it, read without a request.
    pub fn object(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = self.shared.lock();
        let rt = store.registry.find(group, version, plural)?;
        let t = ops::Target {
            rt,
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
        };
        ops::get(&store, &t, name).ok()
    }

    /// Stops listening and drops every connection (clients see resets and ended watches),
    /// waits `down`, then listens on the same port again with the same data and history.
    pub fn restart(&self, down: Duration) -> Result<(), StartError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.shared
            .control
            .send(Control::Restart {
                down,
                done: Some(tx),
            })
            .map_err(|_| err("the server is not running"))?;
        rx.recv()
            .map_err(|_| err("the server stopped while restarting"))?
            .map_err(err)
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        let _ = self.shared.control.send(Control::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if self.remove_kubeconfig {
            let _ = std::fs::remove_file(&self.kubeconfig);
        }
    }
}

/// A kubeconfig for plain HTTP without credentials, usable by kube-rs and kubectl.
pub fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test-apiserver
  cluster:
    server: http://{addr}
contexts:
- name: test-apiserver
  context:
    cluster: test-apiserver
    user: test-apiserver
    namespace: default
current-context: test-apiserver
users:
- name: test-apiserver
  user: {{}}
preferences: {{}}
"
    )
}

/// CRD documents from files and directories (multi-document YAML); other kinds are skipped.
pub fn load_crds(paths: &[PathBuf]) -> Result<Vec<Value>, StartError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| err(format!("reading {}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                })
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| err(format!("reading {}: {e}", file.display())))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| err(format!("parsing {}: {e}", file.display())))?;
            if value.is_null() {
                continue;
            }
            if value["kind"] == "CustomResourceDefinition"
                && value["apiVersion"] == "apiextensions.k8s.io/v1"
            {
                crds.push(value);
            } else {
                eprintln!(
                    "test-apiserver: {}: skipping a {} {} document (not an apiextensions.k8s.io/v1 CRD)",
                    file.display(),
                    value["apiVersion"],
                    value["kind"]
                );
            }
        }
    }
    Ok(crds)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

fn write_data_file(shared: &Shared, path: &Path) {
    let snapshot = {
        let mut store = shared.lock();
        if !store.dirty {
            return;
        }
        store.dirty = false;
        store.snapshot()
    };
    let bytes = serde_json::to_vec(&snapshot).expect("snapshots serialize");
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        eprintln!("test-apiserver: writing {}: {e}", path.display());
        shared.lock().dirty = true;
    }
}

async fn control_loop(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    mut control: mpsc::UnboundedReceiver<Control>,
    data_file: Option<PathBuf>,
    bookmark_interval: Duration,
) {
    let router = server::router(shared.clone());
    let (mut stop_tx, stop_rx) = watch::channel(false);
    let mut serving = tokio::spawn(accept_loop(listener, router.clone(), stop_rx));

    let ticker_shared = shared.clone();
    let bookmarks = tokio::spawn(async move {
        let mut tick = tokio::time::interval(bookmark_interval.max(Duration::from_millis(10)));
        tick.tick().await;
        loop {
            tick.tick().await;
            ticker_shared.lock().send_bookmarks();
        }
    });
    let namespace_shared = shared.clone();
    let namespaces = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            ops::clean_namespaces(&mut namespace_shared.lock());
        }
    });
    let flusher = data_file.clone().map(|path| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                write_data_file(&shared, &path);
            }
        })
    });

    while let Some(command) = control.recv().await {
        match command {
            Control::Shutdown => break,
            Control::Restart { down, done } => {
                // Let the response to a `/_test/restart` request leave first.
                if done.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = stop_tx.send(true);
                let _ = (&mut serving).await;
                shared.lock().cut_watches();
                tokio::time::sleep(down).await;
                let result = match tokio::net::TcpListener::bind(addr).await {
                    Ok(listener) => {
                        let (tx, rx) = watch::channel(false);
                        stop_tx = tx;
                        serving = tokio::spawn(accept_loop(listener, router.clone(), rx));
                        Ok(())
                    }
                    Err(e) => Err(format!("listening again on {addr}: {e}")),
                };
                if let Err(e) = &result {
                    eprintln!("test-apiserver: {e}");
                }
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = serving.await;
    shared.lock().cut_watches();
    bookmarks.abort();
    namespaces.abort();
    if let Some(f) = flusher {
        f.abort();
    }
    if let Some(path) = data_file {
        write_data_file(&shared, &path);
    }
}
