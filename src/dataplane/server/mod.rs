//! The embedded data plane behind the AWS IoT Data Plane REST API.
//!
//! `shadowsync dataplane serve` speaks restJson1 the way AWS IoT does (same paths, query
//! parameters, MQTT 5 headers, JSON shapes, `x-amzn-ErrorType` headers), so the AWS SDK
//! for Rust, boto3 and the AWS CLI work against it with `--endpoint-url http://ADDR`.
//! Besides the data plane (`iot-data`) it serves the registry operations of the control
//! plane (`iot`) that [`Registry`] has, on AWS's paths (`POST /things/{thingName}`,
//! `PUT /thing-groups/addThingToThingGroup`, `GET /thing-groups/{name}/things`,
//! `POST /indices/search`, ...): point both clients at the same URL.
//! It accepts any credentials and ignores SigV4 signatures, which is why it listens on
//! loopback unless told otherwise.
//!
//! Besides the AWS paths it has an admin API under `/_shadowsync/` (no AWS path starts
//! so): `GET/PUT/PATCH /_shadowsync/faults` ([`FaultSettings`]),
//! `GET /_shadowsync/stats` ([`StatsSnapshot`]), `GET /_shadowsync/stats/targets`
//! (per thing and topic: calls, applied publishes; [`TargetStats`]),
//! `POST /_shadowsync/stats/reset` (answers the counts it cleared),
//! `GET/PUT/PATCH /_shadowsync/simulation` (simulated devices: [`SimulationSettings`] and
//! [`SimulationStats`](crate::dataplane::simulate::SimulationStats)) and
//! `GET /_shadowsync/healthz`. Registry calls are counted and faulted like data-plane
//! calls, under their AWS operation names; simulated device reports are not calls.
//!
//! Tests and other modules start a server in-process with [`start`].

mod conn;
mod faults;
mod registry_routes;
mod routes;
mod stats;
mod wire;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{FaultSettings, Operation};
pub use stats::{Injected, StatsSnapshot, TargetStats, Totals, DROPPED, OK};

use crate::dataplane::embedded::EmbeddedDataPlane;
use crate::dataplane::registry::Registry;
use crate::dataplane::simulate::{parse_duration, SimulatedDevices, SimulationSettings};
use crate::dataplane::{DataPlane, ShadowLimits};
use conn::{Conn, CuttableListener};
use routes::{App, Inflight};

/// Default `--listen`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// Requests bodies above this are refused with 413 before they reach the store
/// (which enforces the AWS limits itself).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Flags of `shadowsync dataplane serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (HTTP). Port 0 picks a free port; the bound address is
    /// printed on stdout as the first line: `listening on http://ADDR`.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// Allow a non-loopback --listen address. The server accepts any credentials, so
    /// anyone who can reach it can read and write every shadow.
    #[arg(long)]
    pub allow_remote: bool,

    /// Persist to this database file (created if missing); without it the data lives in
    /// memory and is gone when the server stops.
    #[arg(long)]
    pub db: Option<PathBuf>,

    /// Fraction (0..1) of data-plane requests answered 429 ThrottlingException.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_throttle_rate: f64,

    /// Fraction (0..1) of data-plane requests answered 500 or 503.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_error_rate: f64,

    /// Extra latency added to each data-plane request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub fault_latency_ms: u64,

    /// Fraction (0..1) of data-plane requests whose connection is reset without an answer
    /// (before the request is applied).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_drop_rate: f64,

    /// Fraction (0..1) of successful data-plane requests whose connection is reset after
    /// the request was applied (the answer is lost).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_drop_after_rate: f64,

    /// Answer every data-plane request 503 ServiceUnavailableException.
    #[arg(long)]
    pub fault_outage: bool,

    /// Inject faults only into these operations (comma-separated AWS names, e.g.
    /// UpdateThingShadow,Publish); default all.
    #[arg(long, value_delimiter = ',', value_parser = parse_operation)]
    pub fault_operations: Vec<Operation>,

    /// Answer 429 when more than this many requests are in flight for one thing
    /// (AWS: 10). Off by default.
    #[arg(long)]
    pub max_inflight_per_thing: Option<usize>,

    /// Shadow document limit (desired + reported, bytes).
    #[arg(long, default_value_t = ShadowLimits::default().max_document_bytes)]
    pub max_document_bytes: usize,

    /// Levels of nested objects allowed inside desired or reported.
    #[arg(long, default_value_t = ShadowLimits::default().max_depth)]
    pub max_depth: usize,

    /// Publish payload limit (bytes).
    #[arg(long, default_value_t = ShadowLimits::default().max_payload_bytes)]
    pub max_payload_bytes: usize,

    /// Simulate devices for the things matching these globs (comma-separated, `*` and
    /// `?`): after a shadow update with a desired section, such a thing reports it.
    /// Changeable at runtime with PUT /_shadowsync/simulation.
    #[arg(long, value_name = "PATTERN")]
    pub simulate_devices: Option<String>,

    /// How long a simulated device takes to report (e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub simulate_report_delay: Duration,

    /// Fraction (0..1) of the simulated devices that never report (chosen by a hash of
    /// the thing name).
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub simulate_silent_fraction: f64,

    /// Fraction (0..1) of the simulated devices that report one value wrong.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate)]
    pub simulate_wrong_fraction: f64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("{rate} is not between 0 and 1"));
    }
    Ok(rate)
}

fn parse_operation(s: &str) -> Result<Operation, String> {
    s.trim().parse()
}

impl ServeArgs {
    /// The fault settings the flags ask for.
    pub fn fault_settings(&self) -> FaultSettings {
        FaultSettings {
            throttle_rate: self.fault_throttle_rate,
            error_rate: self.fault_error_rate,
            latency_ms: self.fault_latency_ms,
            drop_rate: self.fault_drop_rate,
            drop_after_rate: self.fault_drop_after_rate,
            outage: self.fault_outage,
            operations: self.fault_operations.clone(),
        }
    }

    /// The device simulation the flags ask for.
    pub fn simulation(&self) -> SimulationSettings {
        SimulationSettings {
            devices: self.simulate_devices.clone().unwrap_or_default(),
            report_delay_ms: u64::try_from(self.simulate_report_delay.as_millis())
                .unwrap_or(u64::MAX),
            silent_fraction: self.simulate_silent_fraction,
            wrong_fraction: self.simulate_wrong_fraction,
        }
    }

    /// The store limits the flags ask for.
    pub fn limits(&self) -> ShadowLimits {
        ShadowLimits {
            max_document_bytes: self.max_document_bytes,
            max_depth: self.max_depth,
            max_payload_bytes: self.max_payload_bytes,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot resolve --listen {addr:?}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error(
        "refusing to listen on {0}: it is not a loopback address and the server accepts \
         any credentials; pass --allow-remote to do it anyway"
    )]
    RemoteNotAllowed(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("invalid fault settings: {0}")]
    Faults(String),
    #[error("invalid device simulation: {0}")]
    Simulation(String),
    #[error("{0}")]
    Store(String),
    #[error("cannot install the signal handlers: {0}")]
    Signal(io::Error),
    #[error("the server failed: {0}")]
    Serve(io::Error),
}

/// How [`start`] runs a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Port 0 binds an ephemeral port; see [`ServerHandle::addr`].
    pub listen: SocketAddr,
    /// Needed for a non-loopback `listen`.
    pub allow_remote: bool,
    /// Initial fault settings (changeable later).
    pub faults: FaultSettings,
    /// 429 above this many requests in flight for one thing.
    pub max_inflight_per_thing: Option<usize>,
    pub max_body_bytes: usize,
    /// Initial device simulation (changeable later); default none.
    pub simulation: SimulationSettings,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_remote: false,
            faults: FaultSettings::default(),
            max_inflight_per_thing: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            simulation: SimulationSettings::default(),
        }
    }
}

/// A running server. Dropping it starts a graceful shutdown in the background;
/// [`ServerHandle::shutdown`] waits for it.
pub struct ServerHandle {
    /// The bound address (the real port when `listen` had port 0).
    pub addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// `http://ADDR`, for `--endpoint-url` and SDK configs.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self) -> FaultSettings {
        self.app.faults()
    }

    /// Replaces the fault settings (as `PUT /_shadowsync/faults`).
    pub fn set_faults(&self, settings: FaultSettings) -> Result<(), ServerError> {
        self.app.set_faults(settings).map_err(ServerError::Faults)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.app.stats.snapshot()
    }

    /// Calls per thing and topic, and applied publishes per topic.
    pub fn target_stats(&self) -> TargetStats {
        self.app.stats.targets()
    }

    /// Clears the counters and returns what they were.
    pub fn reset_stats(&self) -> StatsSnapshot {
        self.app.stats.take()
    }

    /// The simulated devices (settings, counters, [`SimulatedDevices::settled`]).
    pub fn simulator(&self) -> &SimulatedDevices {
        &self.app.simulator
    }

    /// Stops accepting connections and waits for the requests in flight.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(ServerError::Serve),
                Err(join) => Err(ServerError::Serve(io::Error::other(join))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `options.listen` and serves `store` in a background task, with a registry of
/// its own in memory.
///
/// Refuses a non-loopback address unless `options.allow_remote`.
pub async fn start(
    store: Arc<dyn DataPlane>,
    options: ServerOptions,
) -> Result<ServerHandle, ServerError> {
    start_with_registry(store, Arc::new(EmbeddedDataPlane::in_memory()), options).await
}

/// [`start`] with the registry to serve (an [`EmbeddedDataPlane`] is both).
pub async fn start_with_registry(
    store: Arc<dyn DataPlane>,
    registry: Arc<dyn Registry>,
    options: ServerOptions,
) -> Result<ServerHandle, ServerError> {
    if !options.listen.ip().is_loopback() && !options.allow_remote {
        return Err(ServerError::RemoteNotAllowed(options.listen));
    }
    options.faults.validate().map_err(ServerError::Faults)?;
    options
        .simulation
        .validate()
        .map_err(ServerError::Simulation)?;
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: options.listen,
        source,
    })?;
    let app = new_app(store, registry, &options)?;
    let router = routes::router(app.clone(), options.max_body_bytes);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            CuttableListener::new(listener),
            router.into_make_service_with_connect_info::<Conn>(),
        )
        .with_graceful_shutdown(async move {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        })
        .await
    });
    tracing::info!(%addr, "data plane listening");
    Ok(ServerHandle {
        addr,
        app,
        stop: Some(stop),
        task: Some(task),
    })
}

fn new_app(
    store: Arc<dyn DataPlane>,
    registry: Arc<dyn Registry>,
    options: &ServerOptions,
) -> Result<Arc<App>, ServerError> {
    let simulator = SimulatedDevices::new(store, options.simulation.clone())
        .map_err(ServerError::Simulation)?;
    Ok(Arc::new(App {
        store: Arc::new(simulator.clone()),
        registry,
        simulator,
        faults: RwLock::new(options.faults.clone()),
        stats: Default::default(),
        inflight: Inflight::default(),
        max_inflight_per_thing: options.max_inflight_per_thing,
    }))
}

/// The server's routes without a socket, for driving requests in process (property
/// tests, fuzzing): send `http::Request`s with `tower::ServiceExt::oneshot` on
/// [`InProcessServer::router`]. Requests are answered as by [`start`], except that a
/// dropped-connection fault, having no connection to reset, answers 500.
pub struct InProcessServer {
    app: Arc<App>,
    router: axum::Router,
}

impl InProcessServer {
    /// Serves `store` with `options` (`listen` and `allow_remote` are not used), with a
    /// registry of its own in memory.
    pub fn new(store: Arc<dyn DataPlane>, options: &ServerOptions) -> Result<Self, ServerError> {
        Self::with_registry(store, Arc::new(EmbeddedDataPlane::in_memory()), options)
    }

    /// [`InProcessServer::new`] with the registry to serve.
    pub fn with_registry(
        store: Arc<dyn DataPlane>,
        registry: Arc<dyn Registry>,
        options: &ServerOptions,
    ) -> Result<Self, ServerError> {
        options.faults.validate().map_err(ServerError::Faults)?;
        let app = new_app(store, registry, options)?;
        let router = routes::router(app.clone(), options.max_body_bytes)
            .layer(axum::middleware::map_request(with_detached_conn));
        Ok(Self { app, router })
    }

    /// The router; clones share the server's store, faults and counters.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    pub fn faults(&self) -> FaultSettings {
        self.app.faults()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.app.stats.snapshot()
    }
}

/// Handlers read the connection from `ConnectInfo`, which only a listener provides.
async fn with_detached_conn(mut request: axum::extract::Request) -> axum::extract::Request {
    if request
        .extensions()
        .get::<axum::extract::ConnectInfo<Conn>>()
        .is_none()
    {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(Conn::detached()));
    }
    request
}

/// Resolves `--listen`; every address it names must be loopback unless `allow_remote`.
async fn resolve_listen(listen: &str, allow_remote: bool) -> Result<SocketAddr, ServerError> {
    let resolve_error = |reason: String| ServerError::Resolve {
        addr: listen.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = match listen.parse::<SocketAddr>() {
        Ok(addr) => vec![addr],
        Err(_) => tokio::net::lookup_host(listen)
            .await
            .map_err(|err| resolve_error(err.to_string()))?
            .collect(),
    };
    let Some(first) = addrs.first().copied() else {
        return Err(resolve_error("no address".to_string()));
    };
    if !allow_remote {
        if let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(ServerError::RemoteNotAllowed(*remote));
        }
    }
    Ok(first)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Someone may have installed a subscriber already; theirs wins.
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_env_filter(filter)
        .try_init();
}

fn open_store(args: &ServeArgs) -> Result<Arc<EmbeddedDataPlane>, ServerError> {
    let store = match &args.db {
        Some(path) => {
            EmbeddedDataPlane::open(path).map_err(|err| ServerError::Store(err.to_string()))?
        }
        None => EmbeddedDataPlane::in_memory(),
    };
    match store.path() {
        Some(path) => tracing::info!(db = %path.display(), "data persisted to a file"),
        None => tracing::info!("data kept in memory only (no --db)"),
    }
    Ok(Arc::new(store.with_limits(args.limits())))
}

/// SIGTERM and SIGINT, installed before the address is announced so that a signal sent
/// right after it is never lost.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, ServerError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(ServerError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(ServerError::Signal)?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), ServerError> {
    init_logging();
    let faults = args.fault_settings();
    faults.validate().map_err(ServerError::Faults)?;
    let listen = resolve_listen(&args.listen, args.allow_remote).await?;
    let simulation = args.simulation();
    simulation.validate().map_err(ServerError::Simulation)?;
    let store = open_store(&args)?;
    let limits = args.limits();
    let options = ServerOptions {
        listen,
        allow_remote: args.allow_remote,
        faults,
        max_inflight_per_thing: args.max_inflight_per_thing,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES
            .max(limits.max_document_bytes.saturating_mul(2))
            .max(limits.max_payload_bytes.saturating_mul(2)),
        simulation,
    };
    if options.simulation.is_active() {
        tracing::info!(settings = ?options.simulation, "simulating devices");
    }
    let mut signals = Signals::install()?;
    // One database holds the shadows, the retained messages and the registry.
    let handle = start_with_registry(store.clone(), store, options).await?;
    if !handle.addr.ip().is_loopback() {
        tracing::warn!(
            addr = %handle.addr,
            "listening on a non-loopback address (--allow-remote): the server accepts any \
             credentials, so anyone who can reach it can read and write every shadow and \
             retained message"
        );
    }
    {
        use std::io::Write as _;
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "listening on {}", handle.endpoint_url());
        let _ = stdout.flush();
    }
    let signal = signals.recv().await;
    tracing::info!(signal, "shutting down");
    match tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown()).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
            Ok(())
        }
    }
}
