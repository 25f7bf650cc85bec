//! `shadowsync run`: the operator.
//!
//! Wiring only: [`Settings`] (spelled as flags by the CLI), the Kubernetes client, the
//! data plane and its registry (wrapped in the rate limiter and retry policy), one
//! controller per kind (the sets' in [`fleet`]),
//! leader election, `/metrics`, `/healthz`, `/readyz`, and graceful shutdown on SIGTERM.
//! The reconcile logic lives in [`controller`], the per-kind parts in [`kinds`], the
//! namespace allow-lists in [`tenancy`] and the Lease in [`leader`].

mod cache;
mod controller;
mod decide;
mod events;
mod fleet;
mod health;
mod http;
mod kinds;
mod leader;
mod metrics;
mod refresh;
mod resources;
mod tenancy;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kube::api::{Api, DynamicObject};
use kube::Client;
use tokio::sync::watch;
use tracing::{error, info};

use crate::api::{RetainedMessage, ThingShadow};
use crate::dataplane::availability::Availability;
use crate::dataplane::connect::DataPlaneSettings;
use crate::dataplane::resilient::CallObserver;
use crate::sync::Syncer;
pub use controller::FIELD_MANAGER;
pub use health::Health;
pub use leader::LeaderElection;
use leader::Leadership;
pub use metrics::Metrics;

/// What `shadowsync run` is asked to do (the CLI builds it from its flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The data plane to sync to.
    pub dataplane: DataPlaneSettings,
    /// Resources reconciled at once, per kind (0 is read as 1).
    pub concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    pub metrics_addr: SocketAddr,
    /// How long a watch may fail, a reconcile run, or a controller be stopped before
    /// /healthz fails (see [`health`]).
    pub progress_deadline: std::time::Duration,
    /// `Some`: only the holder of this Lease runs the controllers.
    pub leader_election: Option<LeaderElection>,
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// A namespace without the allow-list annotation of a kind may target nothing of
    /// that kind (else such a namespace is unrestricted).
    pub require_namespace_allowlist: bool,
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
    pub fn reason(&self) -> crate::reason::Reason {
        use crate::reason::Reason;
        match self {
            OperatorError::Kube(_) => Reason::KubernetesError,
            OperatorError::DataPlane(err) => err.kind.reason(),
            OperatorError::Internal(_) => Reason::InternalError,
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
    /// Readiness and progress, for the probes.
    health: Arc<Health>,
    /// The sets' children, fed by the ThingShadow watch (see [`kinds::Managed::observe`]).
    children: fleet::Children,
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

/// Runs the operator until SIGTERM/SIGINT. Returns the process exit code.
pub async fn run(settings: Settings) -> u8 {
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
    let connected = match settings
        .dataplane
        .connect_with_registry(None, Some(observer))
        .await
    {
        Ok(connected) => connected,
        Err(err) => {
            error!(error = %err, "cannot set up the data plane");
            return 2;
        }
    };
    info!("using the {}", connected.description);
    let registry = connected.registry;
    let syncer = Syncer::new(connected.data_plane).with_limits(settings.dataplane.limits());
    let health = Arc::new(Health::new(settings.progress_deadline));
    let tenancy = tenancy::Tenancy::start(
        client.clone(),
        settings.namespace.as_deref(),
        settings.require_namespace_allowlist,
        {
            let health = health.clone();
            move || {
                health.synced.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
    let (children, set_wakes) = fleet::Children::new();
    let ctx = Arc::new(Context {
        events: events::EventSink::new(
            client.clone(),
            "shadowsync",
            std::env::var("POD_NAME").ok(),
        ),
        client: client.clone(),
        syncer,
        metrics: metrics.clone(),
        concurrency: settings.concurrency.max(1),
        tenancy,
        resources: resources::Resources::default(),
        recoveries,
        health: health.clone(),
        children,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = match http::serve(settings.metrics_addr, metrics, health.clone()).await {
        Ok(server) => server,
        Err(err) => {
            error!(error = %err, addr = %settings.metrics_addr, "cannot listen for metrics and probes");
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

    // With leader election, only the holder of the Lease goes on; a standby is ready
    // meanwhile.
    let leadership = match &settings.leader_election {
        None => Leadership::unconditional(),
        Some(election) => {
            health.standby.store(true, Ordering::SeqCst);
            match Leadership::acquire(client.clone(), election, stop_rx.clone()).await {
                Ok(Some(leadership)) => {
                    health.standby.store(false, Ordering::SeqCst);
                    leadership
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
        }
    };

    // Three controllers and the Namespace cache of the tenancy allow-lists.
    health.expected.store(4, Ordering::SeqCst);
    let shadows = controller::run::<ThingShadow>(
        ctx.clone(),
        watched::<ThingShadow>(&client, settings.namespace.as_deref()),
        leadership.until_stopped(stop_rx.clone()),
        {
            let health = health.clone();
            move || {
                health.synced.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
    let retained = controller::run::<RetainedMessage>(
        ctx.clone(),
        watched::<RetainedMessage>(&client, settings.namespace.as_deref()),
        leadership.until_stopped(stop_rx.clone()),
        {
            let health = health.clone();
            move || {
                health.synced.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
    let sets = fleet::run(
        ctx.clone(),
        registry,
        settings.namespace.as_deref(),
        set_wakes,
        leadership.until_stopped(stop_rx.clone()),
        {
            let health = health.clone();
            move || {
                health.synced.fetch_add(1, Ordering::SeqCst);
            }
        },
    );
    info!(
        namespace = settings.namespace.as_deref().unwrap_or("(all)"),
        "controllers started"
    );
    tokio::join!(shadows, retained, sets);

    health.shutting_down.store(true, Ordering::SeqCst);
    let ended = leadership.end().await;
    signals.abort();
    server.stop().await;
    match ended {
        leader::Ended::Stopped => 0,
        // Another replica leads now; exit so that the Pod restarts as a standby.
        leader::Ended::LeaseLost => 1,
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
