//! Routing and handlers: the seven data-plane operations and the `/_shadowsync/` admin API
//! (the registry operations are in [`super::registry_routes`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::conn::Conn;
use super::faults::{Fault, FaultSettings, Operation};
use super::stats::{InjectedKind, Stats, DROPPED, OK};
use super::wire::{self, error_response, invalid, json_ok, QueryParams};
use crate::dataplane::registry::Registry;
use crate::dataplane::simulate::SimulatedDevices;
use crate::dataplane::{DataPlane, DataPlaneError, ErrorKind, PublishRequest};

/// Shared state of one server.
pub(crate) struct App {
    /// The data plane the handlers call: the store behind the device simulation.
    pub store: Arc<dyn DataPlane>,
    pub registry: Arc<dyn Registry>,
    pub simulator: SimulatedDevices,
    pub faults: RwLock<FaultSettings>,
    pub stats: Stats,
    pub inflight: Inflight,
    pub max_inflight_per_thing: Option<usize>,
}

impl App {
    pub(crate) fn faults(&self) -> FaultSettings {
        self.faults
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn set_faults(&self, settings: FaultSettings) -> Result<(), String> {
        settings.validate()?;
        tracing::info!(?settings, "fault settings changed");
        *self
            .faults
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        Ok(())
    }

    /// Runs one data-plane call: latency, injected faults, the per-thing in-flight
    /// limit, then `work` (which alone touches the store), and counts the outcome.
    /// `thing` is set for shadow operations (the in-flight limit), `topic` for the
    /// retained-message ones; either is the target the call is counted under.
    pub(crate) async fn call<F>(
        &self,
        op: Operation,
        conn: &Conn,
        thing: Option<&str>,
        topic: Option<&str>,
        work: F,
    ) -> Response
    where
        F: Future<Output = Result<Response, DataPlaneError>>,
    {
        if let Some(target) = thing.or(topic) {
            self.stats.record_target(target);
        }
        let faults = self.faults();
        if faults.applies_to(op) && faults.latency_ms > 0 {
            self.stats.record_delayed();
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        if let Some(fault) = faults.draw(op) {
            self.stats.record_injected(match fault {
                Fault::Drop => InjectedKind::Dropped,
                Fault::Throttle => InjectedKind::Throttled,
                Fault::Error(_) => InjectedKind::Error,
                Fault::Outage => InjectedKind::Outage,
            });
            return match fault.error() {
                Some(err) => {
                    tracing::debug!(%op, remote = %conn.remote, kind = err.kind.aws_type(), "injected fault");
                    self.stats.record(op, err.kind.aws_type());
                    error_response(&err)
                }
                None => {
                    tracing::debug!(%op, remote = %conn.remote, "injected fault: dropping the connection");
                    self.stats.record(op, DROPPED);
                    conn.cut();
                    // Never written: the cut stream refuses it and hyper drops the connection.
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            };
        }
        let _slot = match (thing, self.max_inflight_per_thing) {
            (Some(thing), Some(limit)) => {
                match self.inflight.enter(thing, limit) {
                    Some(slot) => Some(slot),
                    None => {
                        let err = DataPlaneError::new(
                        ErrorKind::Throttling,
                        format!("Rate exceeded: more than {limit} requests in flight for this thing"),
                    );
                        self.stats.record(op, err.kind.aws_type());
                        return error_response(&err);
                    }
                }
            }
            _ => None,
        };
        match work.await {
            Ok(_) if faults.draw_drop_after(op) => {
                // Applied, but the client never learns it: the hard case for retries.
                tracing::debug!(%op, remote = %conn.remote, "injected fault: dropping the connection after the call was applied");
                self.stats.record_injected(InjectedKind::DroppedAfter);
                self.stats.record(op, DROPPED);
                conn.cut();
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
            Ok(response) => {
                self.stats.record(op, OK);
                response
            }
            Err(err) => {
                tracing::debug!(%op, kind = err.kind.aws_type(), message = %err.message, "call failed");
                self.stats.record(op, err.kind.aws_type());
                error_response(&err)
            }
        }
    }
}

/// Requests in flight per thing (AWS answers 429 above 10).
#[derive(Default)]
pub(crate) struct Inflight {
    by_thing: Mutex<HashMap<String, usize>>,
}

pub(crate) struct InflightSlot<'a> {
    inflight: &'a Inflight,
    thing: String,
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.by_thing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn enter(&self, thing: &str, limit: usize) -> Option<InflightSlot<'_>> {
        let mut by_thing = self.lock();
        let count = by_thing.entry(thing.to_string()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(InflightSlot {
            inflight: self,
            thing: thing.to_string(),
        })
    }
}

impl Drop for InflightSlot<'_> {
    fn drop(&mut self) {
        let mut by_thing = self.inflight.lock();
        if let Some(count) = by_thing.get_mut(&self.thing) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                by_thing.remove(&self.thing);
            }
        }
    }
}

type AppState = State<Arc<App>>;
pub(crate) type PathArg = Result<Path<String>, PathRejection>;
pub(crate) type QueryArg = Result<Query<HashMap<String, String>>, QueryRejection>;
pub(crate) type BodyArg = Result<Bytes, BytesRejection>;

pub(crate) fn router(app: Arc<App>, max_body_bytes: usize) -> Router {
    super::registry_routes::routes(Router::new())
        .route(
            "/things/{thingName}/shadow",
            get(get_thing_shadow)
                .post(update_thing_shadow)
                .delete(delete_thing_shadow),
        )
        .route(
            "/api/things/shadow/ListNamedShadowsForThing/{thingName}",
            get(list_named_shadows),
        )
        // A wildcard, so that a topic sent with raw `/` matches as well as one sent
        // with `%2F`; axum percent-decodes the captured value once.
        .route("/topics/{*topic}", post(publish))
        .route("/retainedMessage", get(list_retained_messages))
        .route("/retainedMessage/{*topic}", get(get_retained_message))
        .route(
            "/_shadowsync/faults",
            get(get_faults).put(put_faults).patch(patch_faults),
        )
        .route("/_shadowsync/stats", get(get_stats))
        .route("/_shadowsync/stats/targets", get(get_target_stats))
        .route("/_shadowsync/stats/reset", post(reset_stats))
        .route("/_shadowsync/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::map_response(with_request_id))
        .with_state(app)
}

async fn with_request_id(mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&request_id()) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

fn request_id() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(crate) fn path_value(path: PathArg, what: &str) -> Result<String, DataPlaneError> {
    let Path(value) = path.map_err(|rejection| {
        invalid(format!(
            "{what} in the path is not valid: {}",
            rejection.body_text()
        ))
    })?;
    if value.is_empty() {
        return Err(invalid(format!("{what} must not be empty")));
    }
    Ok(value)
}

pub(crate) fn query_params(query: QueryArg) -> Result<QueryParams, DataPlaneError> {
    let Query(params) = query
        .map_err(|rejection| invalid(format!("invalid query string: {}", rejection.body_text())))?;
    Ok(QueryParams(params))
}

pub(crate) fn body_bytes(body: BodyArg) -> Result<Bytes, DataPlaneError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            DataPlaneError::new(
                ErrorKind::RequestEntityTooLarge,
                "The request body is larger than this server accepts",
            )
        } else {
            invalid(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    })
}

fn shadow_name(params: &QueryParams) -> Result<Option<String>, DataPlaneError> {
    match params.string("name") {
        None => Ok(None),
        Some("") => Err(invalid("name (the shadow name) must not be empty")),
        Some(name) => Ok(Some(name.to_string())),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Response, DataPlaneError> {
    serde_json::to_value(value)
        .map(|v| json_ok(&v))
        .map_err(|err| {
            DataPlaneError::new(
                ErrorKind::InternalFailure,
                format!("cannot encode the answer: {err}"),
            )
        })
}

/// The thing (or topic) a request is for, used by the per-thing in-flight limit and the
/// per-target counts.
fn thing_of(path: &PathArg) -> Option<String> {
    path.as_ref().ok().map(|Path(thing)| thing.clone())
}

async fn update_thing_shadow(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    query: QueryArg,
    body: BodyArg,
) -> Response {
    let thing = thing_of(&path);
    app.call(
        Operation::UpdateThingShadow,
        &conn,
        thing.as_deref(),
        None,
        async {
            let thing = path_value(path, "thingName")?;
            let shadow = shadow_name(&query_params(query)?)?;
            let body = body_bytes(body)?;
            let doc = app
                .store
                .update_thing_shadow(&thing, shadow.as_deref(), body)
                .await?;
            to_json(&doc)
        },
    )
    .await
}

async fn get_thing_shadow(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    query: QueryArg,
) -> Response {
    let thing = thing_of(&path);
    app.call(
        Operation::GetThingShadow,
        &conn,
        thing.as_deref(),
        None,
        async {
            let thing = path_value(path, "thingName")?;
            let shadow = shadow_name(&query_params(query)?)?;
            let doc = app
                .store
                .get_thing_shadow(&thing, shadow.as_deref())
                .await?;
            to_json(&doc)
        },
    )
    .await
}

async fn delete_thing_shadow(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    query: QueryArg,
) -> Response {
    let thing = thing_of(&path);
    app.call(
        Operation::DeleteThingShadow,
        &conn,
        thing.as_deref(),
        None,
        async {
            let thing = path_value(path, "thingName")?;
            let shadow = shadow_name(&query_params(query)?)?;
            let deleted = app
                .store
                .delete_thing_shadow(&thing, shadow.as_deref())
                .await?;
            to_json(&deleted)
        },
    )
    .await
}

async fn list_named_shadows(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    query: QueryArg,
) -> Response {
    let thing = thing_of(&path);
    app.call(
        Operation::ListNamedShadowsForThing,
        &conn,
        thing.as_deref(),
        None,
        async {
            let thing = path_value(path, "thingName")?;
            let params = query_params(query)?;
            let page_size = params.int_in("pageSize", 1..=100)?.map(|n| n as i32);
            let page = app
                .store
                .list_named_shadows_for_thing(&thing, params.string("nextToken"), page_size)
                .await?;
            to_json(&page)
        },
    )
    .await
}

async fn publish(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    query: QueryArg,
    headers: HeaderMap,
    body: BodyArg,
) -> Response {
    let target = thing_of(&path);
    app.call(Operation::Publish, &conn, None, target.as_deref(), async {
        let topic = path_value(path, "topic")?;
        let params = query_params(query)?;
        let request = PublishRequest {
            topic,
            payload: body_bytes(body)?,
            qos: params.int_in("qos", 0..=1)?.unwrap_or(0) as i32,
            retain: params.boolean("retain")?.unwrap_or(false),
            content_type: params.string("contentType").map(str::to_string),
            response_topic: params.string("responseTopic").map(str::to_string),
            message_expiry: params.int_in("messageExpiry", 0..=i64::from(u32::MAX))?,
            user_properties: wire::user_properties(&headers)?,
            payload_format_indicator: wire::payload_format(&headers)?,
            correlation_data: wire::correlation_data(&headers)?,
        };
        app.store.publish(&request).await?;
        app.stats.record_publish(&request.topic);
        Ok(json_ok(
            &json!({ "message": "OK", "traceId": request_id() }),
        ))
    })
    .await
}

async fn get_retained_message(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
) -> Response {
    let target = thing_of(&path);
    app.call(
        Operation::GetRetainedMessage,
        &conn,
        None,
        target.as_deref(),
        async {
            let topic = path_value(path, "topic")?;
            let message = app.store.get_retained_message(&topic).await?;
            let mut body = json!({
                "topic": message.topic,
                "payload": STANDARD.encode(&message.payload),
                "qos": message.qos,
                "lastModifiedTime": message.last_modified_time,
            });
            if let Some(properties) = wire::encode_user_properties(&message.user_properties) {
                body["userProperties"] = Value::String(properties);
            }
            Ok(json_ok(&body))
        },
    )
    .await
}

async fn list_retained_messages(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    query: QueryArg,
) -> Response {
    app.call(Operation::ListRetainedMessages, &conn, None, None, async {
        let params = query_params(query)?;
        let max_results = params.int_in("maxResults", 1..=200)?.map(|n| n as i32);
        let page = app
            .store
            .list_retained_messages(params.string("nextToken"), max_results)
            .await?;
        to_json(&page)
    })
    .await
}

async fn not_found(State(app): AppState, method: Method, uri: Uri) -> Response {
    app.stats.record_unrouted();
    // Not a missing resource but a missing route: a distinct type, so that a client
    // pointed at the wrong path does not take it for "already deleted".
    wire::typed_error(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        &format!("No operation at {method} {}", uri.path()),
    )
}

async fn method_not_allowed(State(app): AppState, method: Method, uri: Uri) -> Response {
    app.stats.record_unrouted();
    error_response(&DataPlaneError::new(
        ErrorKind::MethodNotAllowed,
        format!("The method {method} is not allowed on {}", uri.path()),
    ))
}

async fn get_faults(State(app): AppState) -> Response {
    wire::json_of(&app.faults())
}

fn parse_faults(body: BodyArg) -> Result<Value, DataPlaneError> {
    let body = body_bytes(body)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|err| invalid(format!("fault settings are not JSON: {err}")))?;
    if !value.is_object() {
        return Err(invalid("fault settings must be a JSON object"));
    }
    Ok(value)
}

fn apply_faults(app: &App, value: Value) -> Response {
    let result = serde_json::from_value::<FaultSettings>(value)
        .map_err(|err| err.to_string())
        .and_then(|settings| app.set_faults(settings));
    match result {
        Ok(()) => wire::json_of(&app.faults()),
        Err(message) => error_response(&invalid(format!("invalid fault settings: {message}"))),
    }
}

/// Replaces the fault settings (fields left out take their default: no fault).
async fn put_faults(State(app): AppState, body: BodyArg) -> Response {
    match parse_faults(body) {
        Ok(value) => apply_faults(&app, value),
        Err(err) => error_response(&err),
    }
}

/// Changes only the fields given.
async fn patch_faults(State(app): AppState, body: BodyArg) -> Response {
    let patch = match parse_faults(body) {
        Ok(Value::Object(patch)) => patch,
        Ok(_) => return error_response(&invalid("fault settings must be a JSON object")),
        Err(err) => return error_response(&err),
    };
    let mut merged = match serde_json::to_value(app.faults()) {
        Ok(Value::Object(current)) => current,
        _ => serde_json::Map::new(),
    };
    merged.extend(patch);
    apply_faults(&app, Value::Object(merged))
}

async fn get_stats(State(app): AppState) -> Response {
    wire::json_of(&app.stats.snapshot())
}

async fn get_target_stats(State(app): AppState) -> Response {
    wire::json_of(&app.stats.targets())
}

/// Clears the counters; answers what they were.
async fn reset_stats(State(app): AppState) -> Response {
    wire::json_of(&app.stats.take())
}

/// Healthy when the store answers a cheap read (not counted in stats, never faulted).
async fn healthz(State(app): AppState) -> Response {
    match app.store.list_retained_messages(None, Some(1)).await {
        Ok(_) => json_ok(&json!({ "status": "ok" })),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "message": err.to_string() })),
        )
            .into_response(),
    }
}
