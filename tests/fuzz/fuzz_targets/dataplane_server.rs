//! The local data plane's request handling (`shadowsync::dataplane::server`), driven in
//! process through its axum router over an in-memory embedded store.
//!
//! Each input is a short sequence of requests (method, path, query, headers, body) built
//! around the AWS routes, including the `/_shadowsync/` admin API (so faults can be
//! switched on), under store limits drawn from the input; `tests/invariants/server.rs`
//! says what is checked on every answer.

#![no_main]

#[path = "common.rs"]
mod common;
#[path = "../../invariants/mod.rs"]
mod invariants;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Result, Unstructured};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::server::{InProcessServer, ServerOptions};
use shadowsync::dataplane::ShadowLimits;

use common::PATCH;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            // Injected latency sleeps in virtual time.
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(limits) = limits(&mut u) else { return };
    let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
    let store = {
        let clock = clock.clone();
        EmbeddedDataPlane::in_memory()
            .with_limits(limits)
            .with_clock(move || clock.load(Ordering::SeqCst))
    };
    let options = ServerOptions {
        max_body_bytes: *u.choose(&[64usize, 4096, 1 << 20]).unwrap_or(&(1 << 20)),
        ..ServerOptions::default()
    };
    let server = InProcessServer::new(Arc::new(store), &options).expect("no faults at start");
    runtime().block_on(async {
        for _ in 0..6 {
            let Ok(request) = request(&mut u) else { break };
            clock.fetch_add(1_000, Ordering::SeqCst);
            invariants::server::exchange(&server, request).await;
        }
    });
});

fn limits(u: &mut Unstructured<'_>) -> Result<ShadowLimits> {
    Ok(ShadowLimits {
        max_document_bytes: *u.choose(&[64, 512, 8 * 1024])?,
        max_depth: u.int_in_range(1..=6)?,
        max_payload_bytes: *u.choose(&[4, 128 * 1024])?,
    })
}

const THINGS: &[&str] = &["lamp", "lamp-2", "a:b_c", "-", "bad name", "x%2Fy"];
const TOPICS: &[&str] = &[
    "a/b",
    "a",
    "a%2Fb",
    "$aws/x",
    "a/+",
    "a/#",
    "a/b/c/d/e/f/g/h/i",
    "%00",
];
const QUERY_KEYS: &[&str] = &[
    "name",
    "nextToken",
    "pageSize",
    "maxResults",
    "qos",
    "retain",
    "contentType",
    "responseTopic",
    "messageExpiry",
];
const QUERY_VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "100",
    "101",
    "200",
    "201",
    "true",
    "false",
    "",
    "config",
    "$x",
    "AWSManagedGreengrassV2Deployment",
    "a/b",
    "99999999999999999999",
];
const HEADERS: &[&str] = &[
    "x-amz-mqtt5-user-properties",
    "x-amz-mqtt5-payload-format-indicator",
    "x-amz-mqtt5-correlation-data",
    "content-type",
    "content-length",
    "x-amzn-errortype",
];

/// Percent-encodes what a URI path or query cannot hold; `/` is kept unless `slash`.
fn encode(text: &str, slash: bool) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:$!'()*,;@".contains(&b) || (b == b'/' && !slash) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pick(u: &mut Unstructured<'_>, list: &[&str]) -> Result<String> {
    if u.ratio(1, 6)? {
        String::arbitrary(u)
    } else {
        Ok(u.choose(list)?.to_string())
    }
}

fn request(u: &mut Unstructured<'_>) -> Result<Request<Body>> {
    let method = match u.int_in_range(0..=9)? {
        0..=2 => Method::GET,
        3..=5 => Method::POST,
        6 => Method::DELETE,
        7 => Method::PUT,
        8 => Method::PATCH,
        _ => u.choose(&[Method::HEAD, Method::OPTIONS])?.clone(),
    };
    let thing = encode(&pick(u, THINGS)?, true);
    let topic = pick(u, TOPICS)?;
    let topic = if u.arbitrary()? {
        encode(&topic, false)
    } else {
        encode(&topic, true)
    };
    let mut path = match u.int_in_range(0..=10)? {
        0..=2 => format!("/things/{thing}/shadow"),
        3 => format!("/api/things/shadow/ListNamedShadowsForThing/{thing}"),
        4 | 5 => format!("/topics/{topic}"),
        6 => "/retainedMessage".to_string(),
        7 => format!("/retainedMessage/{topic}"),
        8 => u
            .choose(&[
                "/_shadowsync/faults",
                "/_shadowsync/stats",
                "/_shadowsync/stats/reset",
                "/_shadowsync/healthz",
            ])?
            .to_string(),
        _ => format!("/{}", encode(&String::arbitrary(u)?, false)),
    };
    let pairs = u.int_in_range(0..=3)?;
    for i in 0..pairs {
        let k = pick(u, QUERY_KEYS)?;
        let v = pick(u, QUERY_VALUES)?;
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(&encode(&k, true));
        path.push('=');
        path.push_str(&encode(&v, true));
    }

    let mut builder = Request::builder().method(method).uri(path);
    for _ in 0..u.int_in_range(0..=2)? {
        let name = HeaderName::from_static(u.choose(HEADERS)?);
        let value = match u.int_in_range(0..=3)? {
            0 => STANDARD.encode(json!([{"site": "berlin"}, {"site": "x"}]).to_string()),
            1 => u
                .choose(&[
                    "UTF8_DATA",
                    "UNSPECIFIED_BYTES",
                    "AAEC",
                    "application/json",
                    "3",
                ])?
                .to_string(),
            2 => STANDARD.encode(Vec::<u8>::arbitrary(u)?),
            _ => String::arbitrary(u)?,
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            builder = builder.header(name, value);
        }
    }
    let body = match u.int_in_range(0..=5)? {
        0 => Vec::new(),
        1 => Vec::<u8>::arbitrary(u)?,
        2 => {
            let faults = json!({
                "throttleRate": *u.choose(&[0.0, 0.5, 1.0, 2.0])?,
                "errorRate": *u.choose(&[0.0, 0.5, 1.0])?,
                "dropRate": *u.choose(&[0.0, 1.0])?,
                "latencyMs": *u.choose(&[0u64, 10, u64::MAX])?,
                "outage": bool::arbitrary(u)?,
            });
            faults.to_string().into_bytes()
        }
        _ => {
            let mut state = Map::new();
            for section in ["desired", "reported"] {
                match u.int_in_range(0..=3)? {
                    0 => {}
                    1 => {
                        state.insert(section.into(), Value::Null);
                    }
                    _ => {
                        state.insert(section.into(), Value::Object(common::object(u, 4, PATCH)?));
                    }
                }
            }
            let mut update = json!({ "state": state });
            if u.ratio(1, 3)? {
                update["version"] = json!(u.int_in_range(0u64..=4)?);
            }
            if u.ratio(1, 4)? {
                update["clientToken"] = json!(String::arbitrary(u)?);
            }
            update.to_string().into_bytes()
        }
    };
    builder
        .body(Body::from(body))
        .map_err(|_| arbitrary::Error::IncorrectFormat)
}
