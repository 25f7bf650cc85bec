//! What the local data plane (`shadowsync::dataplane::server`) may answer, checked on
//! requests sent in process through its router ([`InProcessServer`]):
//! - nothing panics;
//! - the status is one the AWS API model documents for the operation of that route (any
//!   operation answers 405 for a wrong method); a path no route matches answers 404
//!   `UnknownOperationException`;
//! - an error carries `x-amzn-ErrorType` and a JSON body whose `__type` names the same
//!   type, with the status that type has;
//! - a 2xx body is JSON of the shape AWS documents for the operation;
//! - 429 and 5xx happen only when the request was faulted.

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use shadowsync::dataplane::server::{InProcessServer, StatsSnapshot};
use tower::ServiceExt;

use super::json::model_delta;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    UpdateThingShadow,
    GetThingShadow,
    DeleteThingShadow,
    ListNamedShadowsForThing,
    Publish,
    GetRetainedMessage,
    ListRetainedMessages,
    Admin(&'static str),
    /// A known path with a method it does not serve.
    WrongMethod,
    Unrouted,
}

/// The route axum picks for a request (path segments are matched before decoding).
pub fn route(method: &Method, path: &str) -> Route {
    let get = method == Method::GET || method == Method::HEAD;
    let segments: Vec<&str> = path.split('/').collect();
    let with = |route: Route, ok: bool| if ok { route } else { Route::WrongMethod };
    match segments.as_slice() {
        // An empty segment still matches a parameter (the handler refuses it with 400).
        ["", "things", _, "shadow"] => match *method {
            Method::POST => Route::UpdateThingShadow,
            Method::DELETE => Route::DeleteThingShadow,
            _ => with(Route::GetThingShadow, get),
        },
        // ...but not as the last segment, nor does an empty catch-all match.
        ["", "api", "things", "shadow", "ListNamedShadowsForThing", thing] if !thing.is_empty() => {
            with(Route::ListNamedShadowsForThing, get)
        }
        ["", "topics", rest @ ..] if !rest.join("/").is_empty() => {
            with(Route::Publish, method == Method::POST)
        }
        ["", "retainedMessage"] => with(Route::ListRetainedMessages, get),
        ["", "retainedMessage", rest @ ..] if !rest.join("/").is_empty() => {
            with(Route::GetRetainedMessage, get)
        }
        ["", "_shadowsync", "faults"] => with(
            Route::Admin("faults"),
            get || method == Method::PUT || method == Method::PATCH,
        ),
        ["", "_shadowsync", "stats"] => with(Route::Admin("stats"), get),
        ["", "_shadowsync", "stats", "reset"] => {
            with(Route::Admin("reset"), method == Method::POST)
        }
        ["", "_shadowsync", "healthz"] => with(Route::Admin("healthz"), get),
        _ => Route::Unrouted,
    }
}

/// The statuses the AWS model documents for each operation (the AWS IoT Data Plane API reference, each operation's errors).
pub fn documented(route: Route) -> &'static [u16] {
    match route {
        Route::UpdateThingShadow => &[200, 409, 413, 400, 429, 401, 503, 500, 405, 415],
        Route::GetThingShadow | Route::DeleteThingShadow => {
            &[200, 400, 404, 429, 401, 503, 500, 405, 415]
        }
        Route::ListNamedShadowsForThing | Route::GetRetainedMessage => {
            &[200, 500, 400, 405, 404, 503, 429, 401]
        }
        // 413: the MQTT payload limit (128 KB); the embedded store refuses an oversize
        // publish with RequestEntityTooLargeException like an oversize shadow.
        Route::Publish => &[200, 500, 400, 405, 429, 401, 413],
        Route::ListRetainedMessages => &[200, 500, 400, 405, 503, 429, 401],
        Route::Admin("faults") => &[200, 400, 413],
        Route::Admin("healthz") => &[200],
        Route::Admin(_) => &[200],
        Route::WrongMethod => &[405],
        Route::Unrouted => &[404],
    }
}

fn status_of(aws_type: &str) -> Option<u16> {
    Some(match aws_type {
        "ConflictException" => 409,
        "RequestEntityTooLargeException" => 413,
        "InvalidRequestException" => 400,
        "ResourceNotFoundException" => 404,
        "ThrottlingException" => 429,
        "UnauthorizedException" => 401,
        "ServiceUnavailableException" => 503,
        "InternalFailureException" => 500,
        "MethodNotAllowedException" => 405,
        "UnsupportedDocumentEncodingException" => 415,
        "UnknownOperationException" => 404,
        _ => return None,
    })
}

/// Faults drawn so far (latency alone is not one).
fn injected(stats: &StatsSnapshot) -> u64 {
    let i = &stats.injected;
    i.throttled + i.errors + i.dropped + i.outage
}

/// Sends `request` and checks the answer against everything above.
pub async fn exchange(server: &InProcessServer, request: Request<Body>) -> u16 {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let shown = format!("{method} {}", request.uri());
    let route = route(&method, &path);
    let before = injected(&server.stats());
    let response: Response<Body> = match server.router().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let faulted = injected(&server.stats()) != before;
    let status = response.status();
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().expect("ASCII error type").to_string());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("in-memory body");
    let text = String::from_utf8_lossy(&body);

    if !faulted {
        assert!(
            status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error(),
            "{shown} answered {status} without an injected fault: {text}"
        );
        assert!(
            documented(route).contains(&status.as_u16()),
            "{shown} ({route:?}) answered {status}, not documented for it: {text}"
        );
    }
    if method == Method::HEAD || (faulted && error_type.is_none()) {
        // No body to check: HEAD answers have none, and a dropped connection (served
        // in process, where there is none to reset) has no answer at all.
        return status.as_u16();
    }
    if route == Route::Unrouted {
        assert_eq!(
            error_type.as_deref(),
            Some("UnknownOperationException"),
            "{shown}"
        );
    }
    if !status.is_success() {
        let aws_type =
            error_type.unwrap_or_else(|| panic!("{shown}: {status} without x-amzn-ErrorType"));
        assert_eq!(
            status_of(&aws_type),
            Some(status.as_u16()),
            "{shown}: {aws_type} with {status}"
        );
        let body: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{shown}: error body is not JSON ({e}): {text}"));
        assert_eq!(body["__type"], json!(aws_type), "{shown}: {text}");
        assert!(body["message"].is_string(), "{shown}: {text}");
        return status.as_u16();
    }
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{shown}: {status} body is not JSON ({e}): {text}"));
    check_shape(route, &body).unwrap_or_else(|why| panic!("{shown}: {why}: {text}"));
    status.as_u16()
}

fn field<'a>(body: &'a Value, name: &str) -> std::result::Result<&'a Value, String> {
    body.get(name).ok_or_else(|| format!("no {name}"))
}

fn int(body: &Value, name: &str) -> std::result::Result<i64, String> {
    field(body, name)?
        .as_i64()
        .ok_or_else(|| format!("{name} is not an integer"))
}

fn optional_string(body: &Value, name: &str) -> std::result::Result<(), String> {
    match body.get(name) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

pub fn check_shape(route: Route, body: &Value) -> std::result::Result<(), String> {
    if !body.is_object() {
        return Err("not a JSON object".into());
    }
    match route {
        Route::UpdateThingShadow | Route::GetThingShadow => {
            let state = field(body, "state")?;
            let section = |name: &str| match state.get(name) {
                None | Some(Value::Object(_)) => Ok(()),
                Some(Value::Null) if route == Route::UpdateThingShadow => Ok(()),
                Some(_) => Err(format!("state.{name} is not an object")),
            };
            section("desired")?;
            section("reported")?;
            section("delta")?;
            if !field(body, "metadata")?.is_object() {
                return Err("metadata is not an object".into());
            }
            field(body, "version")?
                .as_u64()
                .ok_or("version is not a u64")?;
            int(body, "timestamp")?;
            optional_string(body, "clientToken")?;
            if route == Route::GetThingShadow {
                let want = state.get("desired").and_then(|d| {
                    model_delta(d, Some(state.get("reported").unwrap_or(&json!({}))))
                });
                if state.get("delta") != want.as_ref() {
                    return Err(format!(
                        "delta is not desired minus reported (want {want:?})"
                    ));
                }
            }
        }
        Route::DeleteThingShadow => {
            field(body, "version")?
                .as_u64()
                .ok_or("version is not a u64")?;
            int(body, "timestamp")?;
        }
        Route::ListNamedShadowsForThing => {
            let results = field(body, "results")?
                .as_array()
                .ok_or("results is not a list")?;
            if !results.iter().all(Value::is_string) {
                return Err("results holds a non-string".into());
            }
            optional_string(body, "nextToken")?;
            int(body, "timestamp")?;
        }
        Route::Publish => {}
        Route::GetRetainedMessage => {
            field(body, "topic")?
                .as_str()
                .ok_or("topic is not a string")?;
            let payload = field(body, "payload")?
                .as_str()
                .ok_or("payload is not a string")?;
            STANDARD
                .decode(payload)
                .map_err(|e| format!("payload is not base64: {e}"))?;
            let qos = int(body, "qos")?;
            if !(0..=1).contains(&qos) {
                return Err(format!("qos {qos}"));
            }
            int(body, "lastModifiedTime")?;
            if let Some(props) = body.get("userProperties") {
                let props = props.as_str().ok_or("userProperties is not a string")?;
                let bytes = STANDARD
                    .decode(props)
                    .map_err(|e| format!("userProperties: {e}"))?;
                let list: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                let ok = list.as_array().is_some_and(|l| {
                    l.iter().all(|o| {
                        o.as_object()
                            .is_some_and(|o| o.values().all(Value::is_string))
                    })
                });
                if !ok {
                    return Err("userProperties is not a list of string maps".into());
                }
            }
        }
        Route::ListRetainedMessages => {
            let topics = field(body, "retainedTopics")?
                .as_array()
                .ok_or("retainedTopics is not a list")?;
            for t in topics {
                t.get("topic")
                    .and_then(Value::as_str)
                    .ok_or("a topic is not a string")?;
                if int(t, "payloadSize")? < 0 {
                    return Err("negative payloadSize".into());
                }
                if !(0..=1).contains(&int(t, "qos")?) {
                    return Err("qos out of range".into());
                }
                int(t, "lastModifiedTime")?;
            }
            optional_string(body, "nextToken")?;
        }
        Route::Admin("healthz") => {
            if body["status"] != "ok" {
                return Err("healthz is not ok".into());
            }
        }
        Route::Admin(_) => {}
        Route::WrongMethod | Route::Unrouted => return Err("a 2xx for an unserved request".into()),
    }
    Ok(())
}
