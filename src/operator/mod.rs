//! `shadowsync run`: the operator.
//!
//! Wiring only: flags, the Kubernetes client, the data plane (wrapped in the rate limiter
//! and retry policy), one controller per kind, leader election, `/metrics`, `/healthz`,
//! `/readyz`, and graceful shutdown on SIGTERM. The reconcile logic lives in
//! [`controller`], the per-kind parts in [`kinds`] and the namespace allow-lists in
//! [`tenancy`].

mod cache;
mod controller;
mod events;
mod http;
mod kinds;
mod metrics;
mod refresh;
mod resources;
mod tenancy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use kube::api::{Api, DynamicObject};
use kube::Client;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::{RetainedMessage, ThingShadow};
use crate::cli::target::DataPlaneArgs;
use crate::dataplane::availability::Availability;
use crate::dataplane::resilient::CallObserver;
use crate::sync::Syncer;
pub use controller::FIELD_MANAGER;
pub use metrics::Metrics;

/// Flags of `shadowsync run` (each also an environment variable).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub dataplane: DataPlaneArgs,
    /// Resources reconciled at once, per kind.
    #[arg(long, env = "SHADOWSYNC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SHADOWSYNC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Take part in leader election on a Lease, so that only one replica writes.
    #[arg(long, env = "SHADOWSYNC_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "SHADOWSYNC_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SHADOWSYNC_LEADER_ELECTION_LEASE",
        default_value = "shadowsync-leader"
    )]
    pub leader_election_lease: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SHADOWSYNC_NAMESPACE")]
    pub namespace: Option<String>,
    /// A namespace without the allow-list annotation for a kind
    /// (iot.shadowsync.dev/allowed-things, iot.shadowsync.dev/allowed-topics) may target
    /// nothing of that kind (default: such a namespace is unrestricted).
    #[arg(
        long,
        env = "SHADOWSYNC_REQUIRE_NAMESPACE_ALLOWLIST",
        default_value_t = false
    )]
    pub require_namespace_allowlist: bool,
    /// Log format.
    #[arg(long, env = "SHADOWSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Why a reconcile failed; `reason()` is a short static word for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("data plane: {0}")]
    DataPlane(#[source] crate::dataplane::DataPlaneError),
    #[error("{0}")]
    Internal(String),
}

impl OperatorError {
    pub fn reason(&self) -> &'static str {
        match self {
            OperatorError::Kube(_) => "KubernetesError",
            OperatorError::DataPlane(err) => err.kind.reason(),
            OperatorError::Internal(_) => "InternalError",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub syncer: Syncer,
    pub events: events::EventSink,
    pub metrics: Arc<Metrics>,
    pub concurrency: u16,
    /// The namespace allow-lists (see [`tenancy`]).
    tenancy: tenancy::Tenancy,
    /// What is remembered of each resource between passes.
    resources: resources::Resources,
    /// Changes when the data plane answers again after an outage (see
    /// [`crate::dataplane::availability`]).
    recoveries: watch::Receiver<u64>,
}

impl Context {
    /// Remembers the resourceVersion an own write produced.
    fn wrote<K: kube::Resource>(&self, obj: &K) {
        let meta = obj.meta();
        let (Some(uid), Some(version)) = (
            meta.uid.as_deref(),
            meta.resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
        ) else {
            return;
        };
        self.resources.wrote(uid, version);
    }

    /// True when the cached object is older than our last write to it. resourceVersions
    /// are opaque in general; where they are not numbers this never claims staleness.
    fn cache_is_behind(&self, uid: &str, cached: Option<&str>) -> bool {
        cached
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|cached| self.resources.cache_is_behind(uid, cached))
    }
}

/// Health as `/healthz` and `/readyz` report it.
#[derive(Default)]
pub struct Health {
    /// Controllers whose initial list is cached.
    synced: AtomicUsize,
    /// Controllers expected to report.
    expected: AtomicUsize,
    /// A standby replica is ready without caches (it is waiting for the lease).
    standby: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst)
            && (self.standby.load(Ordering::SeqCst)
                || (self.expected.load(Ordering::SeqCst) > 0
                    && self.synced.load(Ordering::SeqCst) >= self.expected.load(Ordering::SeqCst)))
    }

    pub fn alive(&self) -> bool {
        true
    }
}

/// Runs the operator until SIGTERM/SIGINT. Returns the process exit code.
pub async fn run(args: RunArgs) -> u8 {
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(err) => {
            error!(error = %err, "cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)");
            return 2;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let availability = Arc::new(Availability::new(Some(metrics.clone())));
    let recoveries = availability.subscribe();
    let observer: Arc<dyn CallObserver> = availability;
    let (dataplane, description) = match args
        .dataplane
        .settings()
        .connect(None, Some(observer))
        .await
    {
        Ok(pair) => pair,
        Err(err) => {
            error!(error = %err, "cannot set up the data plane");
            return 2;
        }
    };
    info!("using the {description}");
    let syncer = Syncer::new(dataplane).with_limits(args.dataplane.settings().limits());
    let health = Arc::new(Health::default());
    let tenancy = tenancy::Tenancy::start(
        client.clone(),
        args.namespace.as_deref(),
        args.require_namespace_allowlist,
        {
            let health = health.clone();
            move || {
                health.synced.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
    let ctx = Arc::new(Context {
        events: events::EventSink::new(
            client.clone(),
            "shadowsync",
            std::env::var("POD_NAME").ok(),
        ),
        client: client.clone(),
        syncer,
        metrics: metrics.clone(),
        concurrency: args.concurrency.max(1),
        tenancy,
        resources: resources::Resources::default(),
        recoveries,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = match http::serve(args.metrics_addr, metrics, health.clone()).await {
        Ok(server) => server,
        Err(err) => {
            error!(error = %err, addr = %args.metrics_addr, "cannot listen for metrics and probes");
            return 2;
        }
    };
    info!(addr = %server.addr, "serving /metrics, /healthz and /readyz");

    let signals = {
        let stop_tx = stop_tx.clone();
        let health = health.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("shutting down");
            health.shutting_down.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        })
    };

    let mut lease_lost = None;
    let lease = if args.leader_election {
        health.standby.store(true, Ordering::SeqCst);
        let namespace = args
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        match leader::acquire(
            client.clone(),
            &namespace,
            &args.leader_election_lease,
            stop_rx.clone(),
        )
        .await
        {
            Ok(Some(held)) => {
                health.standby.store(false, Ordering::SeqCst);
                lease_lost = Some(held.lost.clone());
                Some(held)
            }
            Ok(None) => {
                // Shutdown before leadership was won.
                server.stop().await;
                return 0;
            }
            Err(err) => {
                error!(error = %err, "leader election failed");
                server.stop().await;
                return 2;
            }
        }
    } else {
        None
    };

    // Two controllers and the Namespace cache of the tenancy allow-lists.
    health.expected.store(3, Ordering::SeqCst);
    let stop = {
        let stop_rx = stop_rx.clone();
        let lost = lease_lost.clone();
        move || {
            let mut stop_rx = stop_rx.clone();
            let lost = lost.clone();
            async move {
                let stopped = async {
                    let _ = stop_rx.wait_for(|stopped| *stopped).await;
                };
                match lost {
                    Some(mut lost) => {
                        tokio::select! {
                            _ = stopped => {}
                            _ = lost.wait_for(|lost| *lost) => {
                                warn!("leadership lost: stopping the controllers");
                            }
                        }
                    }
                    None => stopped.await,
                }
            }
        }
    };
    let shadows = controller::run::<ThingShadow>(
        ctx.clone(),
        watched::<ThingShadow>(&client, args.namespace.as_deref()),
        stop(),
        {
            let health = health.clone();
            move || {
                health.synced.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
    let retained = controller::run::<RetainedMessage>(
        ctx.clone(),
        watched::<RetainedMessage>(&client, args.namespace.as_deref()),
        stop(),
        {
            let health = health.clone();
            move || {
                health.synced.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
    info!(
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        "controllers started"
    );
    tokio::join!(shadows, retained);

    let lost = lease_lost.is_some_and(|lost| *lost.borrow());
    health.shutting_down.store(true, Ordering::SeqCst);
    if let Some(held) = lease {
        held.release().await;
    }
    signals.abort();
    server.stop().await;
    if lost {
        // Another replica leads now; exit so that the Pod restarts as a standby.
        1
    } else {
        0
    }
}

fn watched<K: kinds::Managed>(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = controller::api_resource::<K>();
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

mod leader {
    //! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager).

    use std::time::Duration;

    use kube::Client;
    use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
    use tokio::sync::watch;
    use tokio::task::JoinHandle;
    use tracing::info;

    /// A held lease. `lost` turns true if leadership is lost.
    pub struct Held {
        pub lost: watch::Receiver<bool>,
        channel: watch::Receiver<bool>,
        task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
        forward: JoinHandle<()>,
    }

    impl Held {
        /// Gives the lease up so that a standby takes over at once.
        pub async fn release(self) {
            self.forward.abort();
            drop(self.channel);
            if let Ok(Ok(manager)) = self.task.await {
                let _ = manager.release().await;
            }
        }
    }

    /// How often a standby reads the Lease again, as client-go's retry period.
    const STANDBY_RECHECK: Duration = Duration::from_secs(2);

    /// Waits until this replica holds the lease (`Ok(None)` if stopped first).
    pub async fn acquire(
        client: Client,
        namespace: &str,
        lease: &str,
        mut stop: watch::Receiver<bool>,
    ) -> kube_lease_manager::Result<Option<Held>> {
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("shadowsync-{}", std::process::id()));
        info!(%namespace, %lease, %identity, "waiting for leadership");
        let (channel, task) = loop {
            // A fresh manager reads the Lease anew. One that keeps running sleeps until
            // the holder's lease would expire, so it would miss a lease that its holder
            // released on shutdown and take over only a lease duration later.
            let manager = LeaseManagerBuilder::new(client.clone(), lease)
                .with_namespace(namespace)
                .with_identity(identity.clone())
                .with_field_manager(super::FIELD_MANAGER)
                .build()
                .await?;
            let (mut channel, task) = manager.watch().await;
            let recheck = tokio::time::sleep(STANDBY_RECHECK);
            tokio::pin!(recheck);
            let leading = loop {
                if *channel.borrow_and_update() {
                    break true;
                }
                tokio::select! {
                    changed = channel.changed() => {
                        if changed.is_err() {
                            // The manager gave up (an API error): look again.
                            (&mut recheck).await;
                            break false;
                        }
                    }
                    _ = &mut recheck => break false,
                    _ = stop.wait_for(|stopped| *stopped) => {
                        drop(channel);
                        if let Ok(Ok(manager)) = task.await {
                            let _ = manager.release().await;
                        }
                        return Ok(None);
                    }
                }
            };
            if leading {
                break (channel, task);
            }
            // Not leading: end this manager (it releases nothing it does not hold).
            drop(channel);
            let _ = task.await;
        };
        info!(%namespace, %lease, %identity, "leading");
        let (lost_tx, lost) = watch::channel(false);
        let mut follow = channel.clone();
        let forward = tokio::spawn(async move {
            while follow.changed().await.is_ok() {
                if !*follow.borrow_and_update() {
                    let _ = lost_tx.send(true);
                    return;
                }
            }
        });
        Ok(Some(Held {
            lost,
            channel,
            task,
            forward,
        }))
    }
}
