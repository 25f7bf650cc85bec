//! Property tests of the local data plane's request handling: sequences of requests
//! (method, path, query, headers, body) sent in process to the server's router over an
//! in-memory embedded store, each answer checked against `tests/invariants/server.rs`
//! (documented statuses per route, error headers and bodies, 2xx shapes, no 429/5xx
//! without an injected fault). The `dataplane_server` fuzz target checks the same.

mod invariants;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Value};
use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::server::{InProcessServer, ServerOptions};
use shadowsync::dataplane::ShadowLimits;

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

fn one_of(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        5 => prop::sample::select(items).prop_map(String::from),
        1 => "\\PC{0,6}",
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::GET,
        Method::POST,
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::PATCH,
        Method::HEAD,
    ])
}

fn thing() -> impl Strategy<Value = String> {
    one_of(&["lamp", "lamp-2", "a:b_c", "bad name", "x/y"]).prop_map(|t| encode(&t, true))
}

fn topic() -> impl Strategy<Value = String> {
    (
        one_of(&["a/b", "a", "$aws/x", "a/+", "a/#", "a/b/c/d/e/f/g/h/i"]),
        any::<bool>(),
    )
        .prop_map(|(t, slash)| encode(&t, slash))
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => thing().prop_map(|t| format!("/things/{t}/shadow")),
        1 => thing().prop_map(|t| format!("/api/things/shadow/ListNamedShadowsForThing/{t}")),
        2 => topic().prop_map(|t| format!("/topics/{t}")),
        1 => Just("/retainedMessage".to_string()),
        1 => topic().prop_map(|t| format!("/retainedMessage/{t}")),
        1 => prop::sample::select(vec![
            "/_shadowsync/faults",
            "/_shadowsync/stats",
            "/_shadowsync/stats/reset",
            "/_shadowsync/healthz",
            "/",
            "/things//shadow",
            "/topics/",
        ])
        .prop_map(String::from),
        1 => "\\PC{0,12}".prop_map(|p| format!("/{}", encode(&p, false))),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let pair = (
        one_of(&[
            "name",
            "nextToken",
            "pageSize",
            "maxResults",
            "qos",
            "retain",
            "contentType",
            "responseTopic",
            "messageExpiry",
        ]),
        one_of(&[
            "0", "1", "2", "-1", "100", "101", "200", "201", "true", "no", "", "config", "$x",
            "a/b",
        ]),
    );
    prop::collection::vec(pair, 0..3).prop_map(|pairs| {
        let joined: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k, true), encode(v, true)))
            .collect();
        if joined.is_empty() {
            String::new()
        } else {
            format!("?{}", joined.join("&"))
        }
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-2i64..3).prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[abc]", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let update = (
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(0u64..4),
    )
        .prop_map(|(desired, reported, version)| {
            let mut state = serde_json::Map::new();
            if let Some(d) = desired {
                state.insert("desired".into(), d);
            }
            if let Some(r) = reported {
                state.insert("reported".into(), r);
            }
            let mut update = json!({ "state": state });
            if let Some(v) = version {
                update["version"] = json!(v);
            }
            update.to_string().into_bytes()
        });
    let faults = (
        prop::sample::select(vec![0.0, 0.5, 1.0, 2.0]),
        prop::sample::select(vec![0.0, 1.0]),
        any::<bool>(),
        prop::sample::select(vec![0u64, 10, u64::MAX]),
    )
        .prop_map(|(throttle, drop, outage, latency)| {
            json!({"throttleRate": throttle, "dropRate": drop, "outage": outage, "latencyMs": latency})
                .to_string()
                .into_bytes()
        });
    prop_oneof![
        1 => Just(Vec::new()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => faults,
        4 => update,
    ]
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let value = prop_oneof![
        Just(STANDARD.encode(r#"[{"site":"berlin"},{"site":"x"}]"#)),
        Just(STANDARD.encode(r#"[{"site":1}]"#)),
        Just("UTF8_DATA".to_string()),
        Just("AAEC".to_string()),
        "[ -~]{0,8}",
    ];
    let name = prop::sample::select(vec![
        "x-amz-mqtt5-user-properties",
        "x-amz-mqtt5-payload-format-indicator",
        "x-amz-mqtt5-correlation-data",
        "content-type",
    ]);
    prop::collection::vec((name, value), 0..2)
}

fn request() -> impl Strategy<Value = Request<Body>> {
    (method(), path(), query(), headers(), body()).prop_filter_map(
        "a URI the http crate accepts",
        |(method, path, query, headers, body)| {
            let mut builder = Request::builder()
                .method(method)
                .uri(format!("{path}{query}"));
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            builder.body(Body::from(body)).ok()
        },
    )
}

fn limits() -> impl Strategy<Value = ShadowLimits> {
    (
        prop::sample::select(vec![64usize, 8 * 1024]),
        1usize..7,
        prop::sample::select(vec![4usize, 128 * 1024]),
    )
        .prop_map(
            |(max_document_bytes, max_depth, max_payload_bytes)| ShadowLimits {
                max_document_bytes,
                max_depth,
                max_payload_bytes,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_answer_is_documented(
        limits in limits(),
        max_body_bytes in prop::sample::select(vec![64usize, 1 << 20]),
        requests in prop::collection::vec(request(), 1..8),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let store = EmbeddedDataPlane::in_memory().with_limits(limits);
        let options = ServerOptions { max_body_bytes, ..ServerOptions::default() };
        let server = InProcessServer::new(Arc::new(store), &options).expect("server");
        runtime.block_on(async {
            for request in requests {
                invariants::server::exchange(&server, request).await;
            }
        });
    }
}

#[test]
fn a_known_sequence_is_answered_as_documented() {
    // The property's checks on a sequence whose answers are known, so that a checker
    // that accepts everything would be noticed.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let server = InProcessServer::new(
        Arc::new(EmbeddedDataPlane::in_memory()),
        &ServerOptions::default(),
    )
    .expect("server");
    let send = |method: Method, uri: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    runtime.block_on(async {
        use invariants::server::exchange;
        let update = r#"{"state":{"desired":{"a":1},"reported":{"a":2}}}"#;
        assert_eq!(
            exchange(&server, send(Method::POST, "/things/lamp/shadow", update)).await,
            200
        );
        assert_eq!(
            exchange(&server, send(Method::GET, "/things/lamp/shadow", "")).await,
            200
        );
        let stale = r#"{"state":{"desired":{"a":1}},"version":7}"#;
        assert_eq!(
            exchange(&server, send(Method::POST, "/things/lamp/shadow", stale)).await,
            409
        );
        assert_eq!(
            exchange(&server, send(Method::GET, "/things/other/shadow", "")).await,
            404
        );
        assert_eq!(
            exchange(&server, send(Method::PUT, "/things/lamp/shadow", "")).await,
            405
        );
        assert_eq!(
            exchange(&server, send(Method::GET, "/nowhere", "")).await,
            404
        );
        assert_eq!(
            exchange(
                &server,
                send(Method::POST, "/topics/a%2Fb?retain=true&qos=1", "x")
            )
            .await,
            200
        );
        assert_eq!(
            exchange(&server, send(Method::GET, "/retainedMessage/a%2Fb", "")).await,
            200
        );
        assert_eq!(
            exchange(&server, send(Method::GET, "/retainedMessage", "")).await,
            200
        );
        assert_eq!(
            exchange(&server, send(Method::POST, "/topics/a%2B?retain=true", "x")).await,
            400
        );
    });
}
