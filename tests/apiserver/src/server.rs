//! HTTP: routing of Kubernetes API paths, content negotiation, watch streams, and the
//! `/_test/` hooks.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::discovery::{self, negotiate, parse_accept, Representation};
use crate::errors::ApiError;
use crate::ops::{self, PatchType, Sub, Target, WriteOptions};
use crate::registry::ResourceType;
use crate::selectors::Selector;
use crate::store::{Change, ConflictFault, RequestFilter, RequestKey, Store, WatchMsg};
use crate::table::{table, IncludeObject};

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;
/// Watch length when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Requests from the HTTP side to the server's control loop.
#[derive(Debug)]
pub enum Control {
    /// Stop listening, drop every connection, wait `down`, listen again on the same port.
    Restart {
        down: Duration,
        done: Option<std::sync::mpsc::Sender<Result<(), String>>>,
    },
    Shutdown,
}

pub struct Shared {
    pub store: Mutex<Store>,
    pub kube_minor: u32,
    pub log_requests: bool,
    pub server_address: String,
    pub control: mpsc::UnboundedSender<Control>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves consistent data (each write is one call),
        // so a poisoned lock is still usable.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/healthz", get(healthy))
        .route("/readyz", get(healthy))
        .route("/livez", get(healthy))
        .route("/openapi/v2", get(openapi_v2))
        .route("/_test/info", get(test_info))
        .route(
            "/_test/counters",
            get(test_counters).delete(test_reset_counters),
        )
        .route("/_test/counters/reset", post(test_reset_counters))
        .route("/_test/faults/conflicts", post(test_add_conflicts))
        .route("/_test/faults", delete(test_clear_faults))
        .route("/_test/watches", get(test_watches))
        .route("/_test/watches/cut", post(test_cut_watches))
        .route("/_test/history/forget", post(test_forget_history))
        .route("/_test/bookmarks", post(test_bookmarks))
        .route("/_test/restart", post(test_restart))
        .fallback(kube_api)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            log_requests,
        ))
        .with_state(shared)
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(
        serde_json::to_vec(body).expect("JSON values serialize"),
    ));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(err: &ApiError) -> Response {
    json_response(err.code, &err.to_status())
}

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .map(|q| {
            url_decode_pairs(q)
                .into_iter()
                .collect::<BTreeMap<String, String>>()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
            None => (percent_decode(p, true), String::new()),
        })
        .collect()
}

fn truthy(value: Option<&String>) -> bool {
    matches!(value.map(String::as_str), Some("true" | "1" | "True"))
}

async fn version(State(app): State<Arc<Shared>>) -> Response {
    json_response(200, &discovery::version_info(app.kube_minor))
}

async fn healthy() -> &'static str {
    "ok"
}

async fn openapi_v2(State(app): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let protobuf = accept.contains("protobuf");
    let body = discovery::openapi_v2(app.kube_minor, protobuf);
    let content_type = if protobuf {
        discovery::OPENAPI_V2_PROTOBUF
    } else {
        "application/json"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn test_info(State(app): State<Arc<Shared>>) -> Response {
    let mut store = app.lock();
    let watches = store.open_watches().len();
    json_response(
        200,
        &json!({
            "resourceVersion": store.resource_version(),
            "compactedResourceVersion": store.compacted_rv(),
            "openWatches": watches,
        }),
    )
}

async fn test_counters(State(app): State<Arc<Shared>>, request: Request) -> Response {
    let query = query_map(request.uri().query());
    let filter = match RequestFilter::from_query(&query) {
        Ok(f) => f,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    let store = app.lock();
    let entries: Vec<Value> = store
        .counters
        .iter()
        .filter(|(k, _)| filter.matches(k))
        .map(|(k, n)| {
            let mut v = serde_json::to_value(k).expect("counter keys serialize");
            v["count"] = json!(n);
            v
        })
        .collect();
    let total: u64 = store
        .counters
        .iter()
        .filter(|(k, _)| filter.matches(k))
        .map(|(_, n)| n)
        .sum();
    json_response(200, &json!({"count": total, "entries": entries}))
}

async fn test_reset_counters(State(app): State<Arc<Shared>>) -> Response {
    app.lock().counters.clear();
    json_response(200, &json!({"count": 0}))
}

async fn test_add_conflicts(State(app): State<Arc<Shared>>, request: Request) -> Response {
    let query = query_map(request.uri().query());
    let count: u32 = match query.get("count").map(|c| c.parse()) {
        Some(Ok(n)) => n,
        None => 1,
        Some(Err(_)) => return error_response(&ApiError::bad_request("count must be a number")),
    };
    let filter = match RequestFilter::from_query(&query) {
        Ok(f) => f,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    app.lock().conflict_faults.push(ConflictFault {
        remaining: count,
        filter,
    });
    json_response(200, &json!({"pending": count}))
}

async fn test_clear_faults(State(app): State<Arc<Shared>>) -> Response {
    app.lock().conflict_faults.clear();
    json_response(200, &json!({}))
}

async fn test_watches(State(app): State<Arc<Shared>>) -> Response {
    let watches: Vec<Value> = app
        .lock()
        .open_watches()
        .into_iter()
        .map(|(storage, ns)| json!({"storage": storage, "namespace": ns}))
        .collect();
    json_response(200, &json!({"open": watches.len(), "watches": watches}))
}

async fn test_cut_watches(State(app): State<Arc<Shared>>) -> Response {
    let n = app.lock().cut_watches();
    json_response(200, &json!({"cut": n}))
}

async fn test_forget_history(State(app): State<Arc<Shared>>) -> Response {
    let rv = app.lock().forget_history();
    json_response(200, &json!({"compactedResourceVersion": rv}))
}

async fn test_bookmarks(State(app): State<Arc<Shared>>) -> Response {
    let mut store = app.lock();
    store.send_bookmarks();
    json_response(200, &json!({"resourceVersion": store.resource_version()}))
}

async fn test_restart(State(app): State<Arc<Shared>>, request: Request) -> Response {
    let query = query_map(request.uri().query());
    let down = query
        .get("downMillis")
        .and_then(|d| d.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or_default();
    let sent = app.control.send(Control::Restart { down, done: None });
    match sent {
        Ok(()) => json_response(202, &json!({"restarting": true})),
        Err(_) => error_response(&ApiError::internal("the server is shutting down")),
    }
}

/// A parsed request to the Kubernetes API.
struct ApiRequest {
    method: Method,
    segments: Vec<String>,
    query: BTreeMap<String, String>,
    accept: Vec<discovery::MediaRange>,
    content_type: String,
    user_agent: String,
    body: Bytes,
}

async fn kube_api(State(app): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the request body is too large",
            ))
        }
    };
    let req = ApiRequest {
        method: parts.method.clone(),
        segments: parts
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect(),
        query: query_map(parts.uri.query()),
        accept: parse_accept(header(header::ACCEPT).as_deref()),
        content_type: header(header::CONTENT_TYPE).unwrap_or_default(),
        user_agent: header(header::USER_AGENT).unwrap_or_default(),
        body,
    };
    dispatch(&app, &req)
}

/// Logs every request (when asked to) with its answer code and user agent.
async fn log_requests(
    State(app): State<Arc<Shared>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if !app.log_requests {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let uri = request.uri().clone();
    let agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let response = next.run(request).await;
    eprintln!(
        "test-apiserver: {method} {uri} -> {} ({agent})",
        response.status().as_u16()
    );
    response
}

fn dispatch(app: &Arc<Shared>, req: &ApiRequest) -> Response {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let store = app.lock();
    let discovery_form = discovery::discovery_form(&req.accept);
    let is_get = req.method == Method::GET;
    let discovery_answer = match segs.as_slice() {
        ["api"] if is_get => Some(match discovery_form {
            Some(form) => {
                aggregated_response(discovery::aggregated(&store.registry, true, form), form)
            }
            None => json_response(200, &discovery::api_versions(&app.server_address)),
        }),
        ["apis"] if is_get => Some(match discovery_form {
            Some(form) => {
                aggregated_response(discovery::aggregated(&store.registry, false, form), form)
            }
            None => json_response(200, &discovery::api_group_list(&store.registry)),
        }),
        ["api", "v1"] if is_get => {
            discovery::resource_list(&store.registry, "", "v1").map(|doc| json_response(200, &doc))
        }
        ["apis", group] if is_get => Some(match discovery::api_group(&store.registry, group) {
            Some(doc) => json_response(200, &doc),
            None => error_response(&ApiError::no_route()),
        }),
        ["apis", group, version] if is_get => Some(
            match discovery::resource_list(&store.registry, group, version) {
                Some(doc) => json_response(200, &doc),
                None => error_response(&ApiError::no_route()),
            },
        ),
        _ => None,
    };
    if let Some(answer) = discovery_answer {
        return answer;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return error_response(&ApiError::no_route()),
    };
    let route = match resolve(&store, group, version, rest) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    drop(store);
    resource_request(app, req, route)
}

fn aggregated_response(doc: Value, form: &str) -> Response {
    let mut response = json_response(200, &doc);
    let content_type =
        format!("application/json;g=apidiscovery.k8s.io;v={form};as=APIGroupDiscoveryList");
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).expect("static header"),
    );
    response
}

/// What a resource path names.
struct Route {
    target: Target,
    name: Option<String>,
    sub: Option<String>,
}

fn resolve(store: &Store, group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let find = |plural: &str| store.registry.find(group, version, plural);
    let namespaced_path =
        rest.len() >= 3 && rest[0] == "namespaces" && find(rest[2]).is_some_and(|rt| rt.namespaced);
    let (rt, namespace, name, sub) = if namespaced_path {
        let rt = find(rest[2]).ok_or_else(ApiError::no_route)?;
        (
            rt,
            Some(rest[1].to_string()),
            rest.get(3).map(|s| s.to_string()),
            rest.get(4).map(|s| s.to_string()),
        )
    } else {
        let rt = find(rest[0]).ok_or_else(ApiError::no_route)?;
        if rt.namespaced && rest.len() > 1 {
            return Err(ApiError::no_route());
        }
        (
            rt,
            None,
            rest.get(1).map(|s| s.to_string()),
            rest.get(2).map(|s| s.to_string()),
        )
    };
    if rest.len() > if namespaced_path { 5 } else { 3 } {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = &sub {
        if sub != "status" || !rt.status_subresource {
            return Err(ApiError::no_route());
        }
    }
    Ok(Route {
        target: Target {
            rt,
            version: version.to_string(),
            namespace,
        },
        name,
        sub,
    })
}

fn verb_of(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unsupported",
    }
}

fn resource_request(app: &Arc<Shared>, req: &ApiRequest, route: Route) -> Response {
    let Route { target, name, sub } = route;
    let watch = truthy(req.query.get("watch"));
    let verb = verb_of(&req.method, name.is_some(), watch);
    let patch_type = if verb == "patch" {
        PatchType::from_content_type(&req.content_type)
    } else {
        None
    };
    let mut key = RequestKey {
        verb: verb.to_string(),
        group: target.rt.group.clone(),
        version: target.version.clone(),
        resource: target.rt.plural.clone(),
        subresource: sub.clone().unwrap_or_default(),
        patch_type: patch_type.map(|p| p.name().to_string()).unwrap_or_default(),
        field_manager: req.query.get("fieldManager").cloned().unwrap_or_default(),
        user_agent: req.user_agent.clone(),
        code: 0,
    };
    let response = if verb == "watch" {
        let mut query = req.query.clone();
        if let Some(name) = &name {
            // A watch on one object's path is a watch of the collection for that name.
            let extra = format!("metadata.name={name}");
            let fs = query.entry("fieldSelector".into()).or_default();
            *fs = if fs.is_empty() {
                extra
            } else {
                format!("{fs},{extra}")
            };
        }
        start_watch(app, target, &query, &req.accept)
    } else {
        let mut store = app.lock();
        let writes = matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        );
        if writes && store.take_conflict(&key) {
            let n = name.clone().unwrap_or_default();
            Err(ApiError::conflict(&target.rt.subject(&n)))
        } else {
            handle_verb(
                &mut store,
                req,
                &target,
                verb,
                name.as_deref(),
                sub.as_deref(),
                patch_type,
            )
        }
    };
    let response = match response {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    key.code = response.status().as_u16();
    app.lock().count_request(key);
    response
}

fn write_options(req: &ApiRequest) -> WriteOptions {
    WriteOptions {
        dry_run: req.query.get("dryRun").is_some_and(|d| d == "All"),
        field_manager: req.query.get("fieldManager").cloned(),
        strict: req
            .query
            .get("fieldValidation")
            .is_some_and(|v| v == "Strict"),
        force: truthy(req.query.get("force")),
    }
}

fn parse_body(req: &ApiRequest) -> Result<Value, ApiError> {
    if req.content_type.contains("protobuf") {
        return Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml",
        ));
    }
    if req.content_type.contains("yaml") {
        let text = std::str::from_utf8(&req.body)
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
        return serde_yaml::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!(
            "299 - {}",
            serde_json::to_string(w).expect("strings serialize")
        );
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

fn handle_verb(
    store: &mut Store,
    req: &ApiRequest,
    t: &Target,
    verb: &str,
    name: Option<&str>,
    sub: Option<&str>,
    patch_type: Option<PatchType>,
) -> Result<Response, ApiError> {
    let sub = if sub == Some("status") {
        Sub::Status
    } else {
        Sub::Main
    };
    let opts = write_options(req);
    let written = |w: ops::Written| with_warnings(json_response(w.code, &w.body), &w.warnings);
    match verb {
        "get" => {
            let object = ops::get(store, t, name.expect("get has a name"))?;
            represent_one(t, req, object)
        }
        "list" => {
            let selector = Selector::parse(
                req.query.get("labelSelector").map(String::as_str),
                req.query.get("fieldSelector").map(String::as_str),
                &t.rt,
            )?;
            let limit = match req.query.get("limit").filter(|l| !l.is_empty()) {
                Some(l) => Some(
                    l.parse::<usize>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
                ),
                None => None,
            };
            let page = ops::list(
                store,
                t,
                &selector,
                limit,
                req.query.get("continue").map(String::as_str),
            )?;
            represent_list(t, req, page)
        }
        "create" => {
            if t.rt.namespaced && t.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let body = parse_body(req)?;
            ops::create(store, t, body, &opts).map(written)
        }
        "update" => {
            let body = parse_body(req)?;
            ops::update(store, t, name.expect("update has a name"), sub, body, &opts).map(written)
        }
        "patch" => {
            let Some(kind) = patch_type else {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {:?})",
                    req.content_type
                )));
            };
            ops::patch(
                store,
                t,
                name.expect("patch has a name"),
                sub,
                kind,
                &req.body,
                &opts,
            )
            .map(written)
        }
        "delete" => {
            let options: Value = if req.body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&req.body).unwrap_or_else(|_| json!({}))
            };
            let dry_run = opts.dry_run
                || options["dryRun"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == "All"));
            ops::delete(
                store,
                t,
                name.expect("delete has a name"),
                &options,
                dry_run,
            )
            .map(written)
        }
        "deletecollection" => {
            let selector = Selector::parse(
                req.query.get("labelSelector").map(String::as_str),
                req.query.get("fieldSelector").map(String::as_str),
                &t.rt,
            )?;
            ops::delete_collection(store, t, &selector, opts.dry_run).map(written)
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn representation(req: &ApiRequest) -> Result<Representation, ApiError> {
    negotiate(&req.accept).ok_or_else(|| {
        ApiError::not_acceptable(
            "only the following media types are accepted: application/json, application/yaml",
        )
    })
}

fn metadata_only(object: &Value, api_version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": object["metadata"],
    })
}

fn version_of(t: &Target) -> &crate::registry::Version {
    t.rt.version(&t.version)
        .expect("routes only resolve served versions")
}

fn represent_one(t: &Target, req: &ApiRequest, object: Value) -> Result<Response, ApiError> {
    Ok(match representation(req)? {
        Representation::Full => json_response(200, &object),
        Representation::Table(av) => {
            let include = IncludeObject::parse(req.query.get("includeObject").map(String::as_str));
            let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
            json_response(200, &table(version_of(t), &av, &[object], include, meta))
        }
        Representation::Metadata(av) => json_response(200, &metadata_only(&object, &av)),
    })
}

fn represent_list(t: &Target, req: &ApiRequest, page: ops::ListPage) -> Result<Response, ApiError> {
    let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    Ok(match representation(req)? {
        Representation::Full => json_response(
            200,
            &json!({
                "kind": t.rt.list_kind,
                "apiVersion": t.rt.api_version(&t.version),
                "metadata": meta,
                "items": page.items,
            }),
        ),
        Representation::Table(av) => {
            let include = IncludeObject::parse(req.query.get("includeObject").map(String::as_str));
            json_response(200, &table(version_of(t), &av, &page.items, include, meta))
        }
        Representation::Metadata(av) => {
            let items: Vec<Value> = page.items.iter().map(|o| metadata_only(o, &av)).collect();
            json_response(
                200,
                &json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": av,
                    "metadata": meta,
                    "items": items,
                }),
            )
        }
    })
}

/// How each watch event's object is written.
struct WatchFormat {
    rt: Arc<ResourceType>,
    version: String,
    representation: Representation,
    include: IncludeObject,
}

impl WatchFormat {
    fn object(&self, stored: &Value) -> Value {
        let target = Target {
            rt: self.rt.clone(),
            version: self.version.clone(),
            namespace: None,
        };
        let object = target.external(stored);
        match &self.representation {
            Representation::Full => object,
            Representation::Metadata(av) => metadata_only(&object, av),
            Representation::Table(av) => {
                let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                let v = self.rt.version(&self.version).expect("served version");
                table(v, av, &[object], self.include, meta)
            }
        }
    }

    fn line(&self, kind: &str, object: Value) -> Bytes {
        let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object}))
            .expect("JSON values serialize");
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn change(&self, change: &Change, selector: &Selector) -> Option<Bytes> {
        let kind = change.kind_for(selector)?;
        Some(self.line(kind.as_str(), self.object(&change.object)))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.rt.kind,
            "apiVersion": self.rt.api_version(&self.version),
            "metadata": metadata,
        });
        self.line("BOOKMARK", object)
    }
}

/// Unregisters a watch when its response body is dropped (client gone or stream ended).
struct WatchGuard {
    app: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.app.lock().remove_watcher(self.id);
    }
}

struct WatchState {
    pending: VecDeque<Bytes>,
    rx: Option<mpsc::UnboundedReceiver<WatchMsg>>,
    deadline: tokio::time::Instant,
    format: WatchFormat,
    selector: Selector,
    _guard: Option<WatchGuard>,
}

fn start_watch(
    app: &Arc<Shared>,
    t: Target,
    query: &BTreeMap<String, String>,
    accept: &[discovery::MediaRange],
) -> Result<Response, ApiError> {
    let representation = negotiate(accept).ok_or_else(|| {
        ApiError::not_acceptable("only the following media types are accepted: application/json")
    })?;
    let selector = Selector::parse(
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
        &t.rt,
    )?;
    let bookmarks = truthy(query.get("allowWatchBookmarks"));
    let send_initial = truthy(query.get("sendInitialEvents"));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
    };
    let format = WatchFormat {
        rt: t.rt.clone(),
        version: t.version.clone(),
        representation,
        include: IncludeObject::parse(query.get("includeObject").map(String::as_str)),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut pending = VecDeque::new();
    let mut registered = None;
    {
        let mut store = app.lock();
        let in_scope = |ns: &str| t.namespace.as_deref().is_none_or(|want| want == ns);
        match from {
            Some(rv) if !send_initial => match store.changes_since(&t.rt.storage, rv) {
                Ok(changes) => {
                    for change in changes.iter().filter(|c| in_scope(&c.namespace)) {
                        if let Some(line) = format.change(change, &selector) {
                            pending.push_back(line);
                        }
                    }
                }
                Err(compacted) => {
                    let status =
                        ApiError::expired(format!("too old resource version: {rv} ({compacted})"))
                            .to_status();
                    pending.push_back(format.line("ERROR", status));
                }
            },
            _ => {
                let objects: Vec<Value> = store
                    .iter_from(&t.rt.storage, t.namespace.as_deref(), None)
                    .filter(|(_, o)| selector.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect();
                for o in objects {
                    pending.push_back(format.line("ADDED", format.object(&o)));
                }
                if send_initial && bookmarks {
                    pending.push_back(format.bookmark(store.resource_version(), true));
                }
            }
        }
        let failed = pending
            .back()
            .is_some_and(|b| b.starts_with(b"{\"type\":\"ERROR\""));
        if !failed {
            let id = store.add_watcher(&t.rt.storage, t.namespace.clone(), bookmarks, tx);
            registered = Some(WatchGuard {
                app: app.clone(),
                id,
            });
        }
    }
    let state = WatchState {
        pending,
        rx: registered.as_ref().map(|_| rx),
        deadline: tokio::time::Instant::now() + timeout,
        format,
        selector,
        _guard: registered,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(line) = state.pending.pop_front() {
                return Some((Ok::<Bytes, Infallible>(line), state));
            }
            let rx = state.rx.as_mut()?;
            tokio::select! {
                msg = rx.recv() => match msg? {
                    WatchMsg::Change(change) => {
                        if let Some(line) = state.format.change(&change, &state.selector) {
                            return Some((Ok(line), state));
                        }
                    }
                    WatchMsg::Bookmark(rv) => {
                        let line = state.format.bookmark(rv, false);
                        return Some((Ok(line), state));
                    }
                },
                _ = tokio::time::sleep_until(state.deadline) => return None,
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = query_map(Some(
            "labelSelector=team%3Dred%2Ctier+in+(a)&watch=1&bad=%zz%&x=%C3%A9%é",
        ));
        assert_eq!(q["labelSelector"], "team=red,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["bad"], "%zz%");
        assert_eq!(q["x"], "é%é");
        assert_eq!(percent_decode("a+b%2Fc", false), "a+b/c");
    }
}
