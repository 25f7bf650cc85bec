//! `shadowsync dataplane serve` over real HTTP on 127.0.0.1: paths, statuses, headers and
//! JSON shapes of every operation, error types, topic encoding, fault injection, stats,
//! and the AWS SDK for Rust as a client.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::server::{
    start, FaultSettings, Operation, ServerError, ServerHandle, ServerOptions, StatsSnapshot,
};
use shadowsync::dataplane::{
    DataPlane, DataPlaneError, NamedShadowPage, PublishRequest, RetainedMessageData,
    RetainedMessagePage, ShadowDeleted, ShadowDocument,
};

/// How long any wait in these tests may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// A store wrapper that counts calls and can hold them at a gate.

struct Counting {
    inner: Arc<dyn DataPlane>,
    calls: AtomicUsize,
    /// Calls wait here while it is `false`.
    gate: watch::Sender<bool>,
    /// Calls currently waiting at the gate.
    waiting: AtomicUsize,
}

impl Counting {
    fn new(inner: Arc<dyn DataPlane>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicUsize::new(0),
            gate: watch::channel(true).0,
            waiting: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn enter(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut open = self.gate.subscribe();
        if !*open.borrow_and_update() {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl DataPlane for Counting {
    async fn get_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDocument, DataPlaneError> {
        self.enter().await;
        self.inner.get_thing_shadow(thing, shadow).await
    }

    async fn update_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        payload: Bytes,
    ) -> Result<ShadowDocument, DataPlaneError> {
        self.enter().await;
        self.inner.update_thing_shadow(thing, shadow, payload).await
    }

    async fn delete_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDeleted, DataPlaneError> {
        self.enter().await;
        self.inner.delete_thing_shadow(thing, shadow).await
    }

    async fn list_named_shadows_for_thing(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: Option<i32>,
    ) -> Result<NamedShadowPage, DataPlaneError> {
        self.enter().await;
        self.inner
            .list_named_shadows_for_thing(thing, next_token, page_size)
            .await
    }

    async fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError> {
        self.enter().await;
        self.inner.publish(request).await
    }

    async fn get_retained_message(
        &self,
        topic: &str,
    ) -> Result<RetainedMessageData, DataPlaneError> {
        self.enter().await;
        self.inner.get_retained_message(topic).await
    }

    async fn list_retained_messages(
        &self,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<RetainedMessagePage, DataPlaneError> {
        self.enter().await;
        self.inner
            .list_retained_messages(next_token, max_results)
            .await
    }
}

fn new_store() -> Arc<dyn DataPlane> {
    Arc::new(EmbeddedDataPlane::in_memory())
}

struct Server {
    handle: ServerHandle,
    store: Arc<Counting>,
}

impl Server {
    async fn start() -> Self {
        Self::with_options(ServerOptions::default()).await
    }

    async fn with_options(options: ServerOptions) -> Self {
        let store = Counting::new(new_store());
        let handle = start(store.clone(), options)
            .await
            .expect("server starts on loopback");
        Self { handle, store }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    async fn call(&self, method: &str, path: &str) -> Reply {
        self.send(method, path, &[], b"").await
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        http(self.addr(), method, path, headers, body)
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
    }

    async fn put_faults(&self, faults: Value) -> Reply {
        self.send(
            "PUT",
            "/_shadowsync/faults",
            &[],
            faults.to_string().as_bytes(),
        )
        .await
    }

    async fn stats(&self) -> StatsSnapshot {
        let reply = self.call("GET", "/_shadowsync/stats").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        serde_json::from_value(reply.json()).expect("stats shape")
    }
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one request per connection, the path sent byte for byte.

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error_type(&self) -> Option<&str> {
        self.header("x-amzn-ErrorType")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", self.text()))
    }

    /// Asserts an AWS restJson1 error of `aws_type` with `status`.
    #[track_caller]
    fn assert_error(&self, status: u16, aws_type: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.error_type(),
            Some(aws_type),
            "headers: {:?}",
            self.headers
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        assert_eq!(body["__type"], aws_type, "{body}");
        let message = body["message"].as_str().expect("message is a string");
        assert!(!message.is_empty());
        message.to_string()
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Reply> {
    tokio::time::timeout(DEADLINE, async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("host: {addr}\r\n"));
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ));
        stream.write_all(request.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_reply(&raw)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?
}

fn parse_reply(raw: &[u8]) -> io::Result<Reply> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    if raw.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed without an answer",
        ));
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

async fn poll_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Shadows

#[tokio::test]
async fn classic_shadow_update_get_delete() {
    let s = Server::start().await;
    let doc =
        json!({"state": {"desired": {"power": "on", "color": {"r": 255}}}, "clientToken": "t-1"});
    let reply = s
        .send(
            "POST",
            "/things/lamp-1/shadow",
            &[("content-type", "application/octet-stream")],
            doc.to_string().as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("x-amzn-RequestId").is_some());
    let body = reply.json();
    assert_eq!(body["state"]["desired"]["power"], "on");
    assert_eq!(body["clientToken"], "t-1");
    let v1 = body["version"].as_u64().expect("version");
    assert!(body["timestamp"].as_i64().expect("timestamp") > 1_600_000_000);

    let reply = s.call("GET", "/things/lamp-1/shadow").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["state"]["desired"]["color"]["r"], 255);
    assert_eq!(body["version"].as_u64(), Some(v1));

    // The named shadow of the same thing is a different document.
    s.call("GET", "/things/lamp-1/shadow?name=config")
        .await
        .assert_error(404, "ResourceNotFoundException");

    let reply = s.call("DELETE", "/things/lamp-1/shadow").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["version"].as_u64(), Some(v1));
    assert!(body["timestamp"].is_i64());

    s.call("GET", "/things/lamp-1/shadow")
        .await
        .assert_error(404, "ResourceNotFoundException");
    s.call("DELETE", "/things/lamp-1/shadow")
        .await
        .assert_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn named_shadow_and_version_conflict() {
    let s = Server::start().await;
    let path = "/things/lamp-2/shadow?name=config";
    let reply = s
        .send("POST", path, &[], br#"{"state":{"reported":{"t":1}}}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let version = reply.json()["version"].as_u64().expect("version");

    let stale = json!({"state": {"desired": {"t": 2}}, "version": version + 7});
    let message = s
        .send("POST", path, &[], stale.to_string().as_bytes())
        .await
        .assert_error(409, "ConflictException");
    assert!(message.to_lowercase().contains("version"), "{message}");

    let fresh = json!({"state": {"desired": {"t": 2}}, "version": version});
    let reply = s
        .send("POST", path, &[], fresh.to_string().as_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["version"].as_u64(), Some(version + 1));

    // The classic shadow was never written.
    s.call("GET", "/things/lamp-2/shadow")
        .await
        .assert_error(404, "ResourceNotFoundException");
    let doc = s.call("GET", path).await.json();
    assert_eq!(doc["state"]["desired"]["t"], 2);
    assert_eq!(doc["state"]["reported"]["t"], 1);
}

#[tokio::test]
async fn shadow_errors_400_and_413() {
    let s = Server::start().await;
    s.send("POST", "/things/lamp-3/shadow", &[], b"{not json")
        .await
        .assert_error(400, "InvalidRequestException");
    s.send(
        "POST",
        "/things/lamp-3/shadow?name=",
        &[],
        br#"{"state":{}}"#,
    )
    .await
    .assert_error(400, "InvalidRequestException");

    let big = json!({"state": {"desired": {"blob": "x".repeat(9 * 1024)}}});
    s.send(
        "POST",
        "/things/lamp-3/shadow",
        &[],
        big.to_string().as_bytes(),
    )
    .await
    .assert_error(413, "RequestEntityTooLargeException");

    // Above the server's own body limit the store is never asked.
    let small = Server::with_options(ServerOptions {
        max_body_bytes: 1024,
        ..Default::default()
    })
    .await;
    let huge = vec![b'x'; 4096];
    small
        .send("POST", "/things/lamp-3/shadow", &[], &huge)
        .await
        .assert_error(413, "RequestEntityTooLargeException");
    assert_eq!(small.store.calls(), 0);
    // Nothing was stored by any of the refused writes.
    s.call("GET", "/things/lamp-3/shadow")
        .await
        .assert_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn thing_names_are_percent_decoded() {
    let s = Server::start().await;
    let reply = s
        .send(
            "POST",
            "/things/site%3Alamp_4-a/shadow?name=%24cfg",
            &[],
            br#"{"state":{"desired":{"a":1}}}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = s
        .call(
            "GET",
            "/api/things/shadow/ListNamedShadowsForThing/site:lamp_4-a",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["results"], json!(["$cfg"]));
}

#[tokio::test]
async fn list_named_shadows_pages() {
    let s = Server::start().await;
    for name in ["a", "b", "c"] {
        let reply = s
            .send(
                "POST",
                &format!("/things/lamp-5/shadow?name={name}"),
                &[],
                br#"{"state":{"desired":{"x":1}}}"#,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let base = "/api/things/shadow/ListNamedShadowsForThing/lamp-5";
    let first = s.call("GET", &format!("{base}?pageSize=2")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    assert_eq!(first["results"].as_array().map(Vec::len), Some(2));
    assert!(first["timestamp"].is_i64());
    let token = first["nextToken"].as_str().expect("a next token");
    let second = s
        .call("GET", &format!("{base}?pageSize=2&nextToken={token}"))
        .await
        .json();
    assert_eq!(second["results"].as_array().map(Vec::len), Some(1));
    assert!(second.get("nextToken").is_none(), "{second}");
    let mut all: Vec<Value> = first["results"].as_array().cloned().unwrap_or_default();
    all.extend(second["results"].as_array().cloned().unwrap_or_default());
    assert_eq!(Value::Array(all), json!(["a", "b", "c"]));

    for bad in ["0", "101", "-1", "ten"] {
        let message = s
            .call("GET", &format!("{base}?pageSize={bad}"))
            .await
            .assert_error(400, "InvalidRequestException");
        assert!(message.contains("pageSize"), "{message}");
    }
}

// ---------------------------------------------------------------------------------------
// Retained messages

#[tokio::test]
async fn publish_retained_and_get_it_back() {
    let s = Server::start().await;
    let props = b64(r#"[{"site":"berlin"},{"site":"hamburg"},{"floor":"2"}]"#);
    let reply = s
        .send(
            "POST",
            "/topics/home%2Fkitchen%2Fconfig?qos=1&retain=true&contentType=application%2Fjson&messageExpiry=3600",
            &[
                ("x-amz-mqtt5-user-properties", &props),
                ("x-amz-mqtt5-payload-format-indicator", "UTF8_DATA"),
                ("x-amz-mqtt5-correlation-data", &b64("req-1")),
            ],
            br#"{"interval":30}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let reply = s
        .call("GET", "/retainedMessage/home%2Fkitchen%2Fconfig")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["topic"], "home/kitchen/config");
    assert_eq!(body["qos"], 1);
    assert!(body["lastModifiedTime"].as_i64().expect("epoch ms") > 1_600_000_000_000);
    let payload = STANDARD
        .decode(body["payload"].as_str().expect("base64 payload"))
        .expect("payload is base64");
    assert_eq!(payload, br#"{"interval":30}"#);
    let props = STANDARD
        .decode(body["userProperties"].as_str().expect("user properties"))
        .expect("user properties are base64");
    let props: Value = serde_json::from_slice(&props).expect("user properties are JSON");
    assert_eq!(
        props,
        json!([{"site":"berlin"},{"site":"hamburg"},{"floor":"2"}])
    );

    // The same message under raw slashes.
    let raw = s.call("GET", "/retainedMessage/home/kitchen/config").await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.json()["topic"], "home/kitchen/config");

    s.call("GET", "/retainedMessage/home%2Fkitchen%2Fother")
        .await
        .assert_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn topics_with_raw_slashes_and_literal_percent_signs() {
    let s = Server::start().await;
    let reply = s
        .send("POST", "/topics/plant/line-1/state?retain=true", &[], b"on")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // `%252F` is a literal "%2F" in the topic name: decoded exactly once.
    let reply = s
        .send("POST", "/topics/odd%252Fname?retain=true", &[], b"x")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let body = s
        .call("GET", "/retainedMessage/plant%2Fline-1%2Fstate")
        .await
        .json();
    assert_eq!(body["topic"], "plant/line-1/state");
    let body = s.call("GET", "/retainedMessage/odd%252Fname").await.json();
    assert_eq!(body["topic"], "odd%2Fname");
    s.call("GET", "/retainedMessage/odd%2Fname")
        .await
        .assert_error(404, "ResourceNotFoundException");

    // Percent-encoding that is not UTF-8 is refused, not guessed at.
    let message = s
        .call("GET", "/retainedMessage/bad%FFtopic")
        .await
        .assert_error(400, "InvalidRequestException");
    assert!(message.contains("topic"), "{message}");
    // A `/` inside a thing name is decoded, then refused as a name.
    s.call("GET", "/things/a%2Fb/shadow")
        .await
        .assert_error(400, "InvalidRequestException");

    // Without user properties the field is left out.
    let body = s
        .call("GET", "/retainedMessage/plant/line-1/state")
        .await
        .json();
    assert!(body.get("userProperties").is_none(), "{body}");
    assert_eq!(body["qos"], 0);
}

#[tokio::test]
async fn list_retained_messages_pages_without_payloads() {
    let s = Server::start().await;
    for (i, topic) in ["t%2Fa", "t%2Fb", "t%2Fc"].iter().enumerate() {
        let reply = s
            .send(
                "POST",
                &format!("/topics/{topic}?retain=true&qos={}", i % 2),
                &[],
                &vec![b'p'; i + 1],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let first = s.call("GET", "/retainedMessage?maxResults=2").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    let page = first["retainedTopics"].as_array().expect("retainedTopics");
    assert_eq!(page.len(), 2);
    for entry in page {
        assert!(entry.get("payload").is_none(), "{entry}");
        assert!(entry["payloadSize"].is_i64() && entry["qos"].is_i64());
        assert!(entry["lastModifiedTime"].is_i64());
    }
    let token = first["nextToken"].as_str().expect("next token");
    let second = s
        .call(
            "GET",
            &format!("/retainedMessage?maxResults=2&nextToken={token}"),
        )
        .await
        .json();
    let mut seen: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for entry in page
        .iter()
        .chain(second["retainedTopics"].as_array().into_iter().flatten())
    {
        seen.insert(
            entry["topic"].as_str().unwrap_or_default().to_string(),
            (
                entry["payloadSize"].as_i64().unwrap_or(-1),
                entry["qos"].as_i64().unwrap_or(-1),
            ),
        );
    }
    assert!(second.get("nextToken").is_none(), "{second}");
    assert_eq!(
        seen,
        BTreeMap::from([
            ("t/a".to_string(), (1, 0)),
            ("t/b".to_string(), (2, 1)),
            ("t/c".to_string(), (3, 0)),
        ])
    );

    for bad in ["0", "201", "500", "x"] {
        let message = s
            .call("GET", &format!("/retainedMessage?maxResults={bad}"))
            .await
            .assert_error(400, "InvalidRequestException");
        assert!(message.contains("maxResults"), "{message}");
    }
}

#[tokio::test]
async fn empty_retained_publish_deletes() {
    let s = Server::start().await;
    let reply = s.send("POST", "/topics/x%2Fy?retain=true", &[], b"1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(s.call("GET", "/retainedMessage/x%2Fy").await.status, 200);
    let reply = s.send("POST", "/topics/x%2Fy?retain=true", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    s.call("GET", "/retainedMessage/x%2Fy")
        .await
        .assert_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn publish_parameters_are_checked() {
    let s = Server::start().await;
    // (path and query, headers, the parameter the error must name)
    type Case<'a> = (String, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        ("/topics/a?qos=2".into(), vec![], "qos"),
        ("/topics/a?qos=-1".into(), vec![], "qos"),
        ("/topics/a?retain=yes".into(), vec![], "retain"),
        (
            "/topics/a?messageExpiry=soon".into(),
            vec![],
            "messageExpiry",
        ),
        (
            "/topics/a".into(),
            vec![("x-amz-mqtt5-user-properties", b64(r#"{"a":"b"}"#))],
            "x-amz-mqtt5-user-properties",
        ),
        (
            "/topics/a".into(),
            vec![("x-amz-mqtt5-user-properties", "%%%".to_string())],
            "x-amz-mqtt5-user-properties",
        ),
        (
            "/topics/a".into(),
            vec![("x-amz-mqtt5-payload-format-indicator", "TEXT".to_string())],
            "x-amz-mqtt5-payload-format-indicator",
        ),
    ];
    for (path, headers, named) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let message = s
            .send("POST", &path, &headers, b"p")
            .await
            .assert_error(400, "InvalidRequestException");
        assert!(message.contains(named), "{path}: {message}");
    }
    assert_eq!(s.store.calls(), 0, "refused publishes reached the store");
    // Wildcards and reserved topics are refused by the store.
    for topic in ["a%2F%2B%2Fb", "a%2F%23", "%24aws%2Fthings"] {
        s.send("POST", &format!("/topics/{topic}?retain=true"), &[], b"p")
            .await
            .assert_error(400, "InvalidRequestException");
    }
}

// ---------------------------------------------------------------------------------------
// Routing, methods, credentials

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let s = Server::start().await;
    for path in ["/", "/things", "/things/a/b/shadow", "/nope", "/topics"] {
        s.call("GET", path)
            .await
            .assert_error(404, "UnknownOperationException");
    }
    for (method, path) in [
        ("PUT", "/things/a/shadow"),
        ("PATCH", "/things/a/shadow"),
        ("GET", "/topics/a"),
        ("DELETE", "/retainedMessage/a"),
        ("POST", "/retainedMessage"),
        ("POST", "/api/things/shadow/ListNamedShadowsForThing/a"),
    ] {
        s.call(method, path)
            .await
            .assert_error(405, "MethodNotAllowedException");
    }
    let stats = s.stats().await;
    assert_eq!(stats.unrouted, 11);
    assert_eq!(stats.totals.calls, 0);
    assert_eq!(s.store.calls(), 0);
}

#[tokio::test]
async fn any_credentials_and_any_host_are_accepted() {
    let s = Server::start().await;
    let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/iotdevicegateway/aws4_request, SignedHeaders=host;x-amz-date, Signature=deadbeef";
    let reply = s
        .send(
            "POST",
            "/things/lamp-6/shadow",
            &[
                ("host", "data-ats.iot.us-east-1.amazonaws.com"),
                ("authorization", auth),
                ("x-amz-date", "20240101T000000Z"),
                ("x-amz-security-token", "token"),
            ],
            br#"{"state":{"desired":{"a":1}}}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

// ---------------------------------------------------------------------------------------
// Faults and stats

#[tokio::test]
async fn full_throttling_answers_only_429_and_leaves_the_store_alone() {
    let s = Server::start().await;
    let reply = s.put_faults(json!({"throttleRate": 1.0})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["throttleRate"], 1.0);

    for _ in 0..5 {
        s.send(
            "POST",
            "/things/lamp-7/shadow",
            &[],
            br#"{"state":{"desired":{"a":1}}}"#,
        )
        .await
        .assert_error(429, "ThrottlingException");
        s.send("POST", "/topics/t?retain=true", &[], b"x")
            .await
            .assert_error(429, "ThrottlingException");
    }
    assert_eq!(s.store.calls(), 0);

    let stats = s.stats().await;
    assert_eq!(
        stats.count(Operation::UpdateThingShadow, "ThrottlingException"),
        5
    );
    assert_eq!(stats.count(Operation::Publish, "ThrottlingException"), 5);
    assert_eq!(stats.injected.throttled, 10);
    assert_eq!(stats.totals.calls, 10);
    assert_eq!(stats.totals.errors, 10);

    assert_eq!(s.put_faults(json!({})).await.status, 200);
    s.call("GET", "/things/lamp-7/shadow")
        .await
        .assert_error(404, "ResourceNotFoundException");
    s.call("GET", "/retainedMessage/t")
        .await
        .assert_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn error_rate_answers_500_or_503() {
    let s = Server::with_options(ServerOptions {
        faults: FaultSettings {
            error_rate: 1.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    for _ in 0..6 {
        let reply = s.call("GET", "/things/lamp-8/shadow").await;
        match reply.status {
            500 => reply.assert_error(500, "InternalFailureException"),
            503 => reply.assert_error(503, "ServiceUnavailableException"),
            other => panic!("status {other}: {}", reply.text()),
        };
    }
    assert_eq!(s.store.calls(), 0);
    assert_eq!(s.stats().await.injected.errors, 6);
}

#[tokio::test]
async fn outage_fails_every_operation_but_not_the_admin_api() {
    let s = Server::start().await;
    assert_eq!(s.put_faults(json!({"outage": true})).await.status, 200);
    for (method, path) in [
        ("POST", "/things/a/shadow"),
        ("GET", "/things/a/shadow"),
        ("DELETE", "/things/a/shadow"),
        ("GET", "/api/things/shadow/ListNamedShadowsForThing/a"),
        ("POST", "/topics/a"),
        ("GET", "/retainedMessage/a"),
        ("GET", "/retainedMessage"),
    ] {
        s.send(method, path, &[], br#"{"state":{}}"#)
            .await
            .assert_error(503, "ServiceUnavailableException");
    }
    assert_eq!(s.store.calls(), 0);
    // The health check reads the store directly, past the faults.
    assert_eq!(s.call("GET", "/_shadowsync/healthz").await.status, 200);
    let stats = s.stats().await;
    assert_eq!(stats.injected.outage, 7);
    for op in Operation::ALL {
        assert_eq!(stats.count(op, "ServiceUnavailableException"), 1, "{op}");
    }
}

#[tokio::test]
async fn fault_filter_limits_faults_to_named_operations() {
    let s = Server::start().await;
    let reply = s
        .put_faults(json!({"throttleRate": 1.0, "latencyMs": 1, "operations": ["Publish"]}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    s.send("POST", "/topics/a", &[], b"x")
        .await
        .assert_error(429, "ThrottlingException");
    let reply = s
        .send(
            "POST",
            "/things/lamp-9/shadow",
            &[],
            br#"{"state":{"desired":{"a":1}}}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stats = s.stats().await;
    assert_eq!(stats.injected.delayed, 1, "only the publish was delayed");
    assert_eq!(stats.count(Operation::UpdateThingShadow, "ok"), 1);
}

#[tokio::test]
async fn latency_is_added_to_each_request() {
    let s = Server::start().await;
    assert_eq!(s.put_faults(json!({"latencyMs": 300})).await.status, 200);
    let started = Instant::now();
    s.call("GET", "/retainedMessage/none")
        .await
        .assert_error(404, "ResourceNotFoundException");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered after {:?}",
        started.elapsed()
    );
    // The admin API is never delayed or faulted, and the call still reached the store.
    assert_eq!(s.stats().await.injected.delayed, 1);
    assert_eq!(s.store.calls(), 1);
}

#[tokio::test]
async fn dropped_requests_get_no_answer() {
    let s = Server::start().await;
    assert_eq!(
        s.put_faults(json!({"dropRate": 1.0, "operations": ["UpdateThingShadow"]}))
            .await
            .status,
        200
    );
    for _ in 0..3 {
        let result = http(
            s.addr(),
            "POST",
            "/things/lamp-10/shadow",
            &[],
            br#"{"state":{"desired":{"a":1}}}"#,
        )
        .await;
        assert!(result.is_err(), "got an answer: {result:?}");
    }
    // The server itself is fine, and nothing was written.
    s.call("GET", "/things/lamp-10/shadow")
        .await
        .assert_error(404, "ResourceNotFoundException");
    let stats = s.stats().await;
    assert_eq!(stats.count(Operation::UpdateThingShadow, "Dropped"), 3);
    assert_eq!(stats.injected.dropped, 3);
    assert_eq!(s.store.calls(), 1);
}

#[tokio::test]
async fn dropped_after_apply_loses_the_answer_but_keeps_the_write() {
    let s = Server::start().await;
    assert_eq!(
        s.put_faults(json!({"dropAfterRate": 1.0, "operations": ["Publish"]}))
            .await
            .status,
        200
    );
    let result = http(
        s.addr(),
        "POST",
        "/topics/site%2Fa?retain=true&qos=1",
        &[],
        b"hello",
    )
    .await;
    assert!(result.is_err(), "got an answer: {result:?}");
    // Applied all the same: the retained message is there.
    let reply = s.call("GET", "/retainedMessage/site%2Fa").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["payload"], json!("aGVsbG8="));
    let stats = s.stats().await;
    assert_eq!(stats.count(Operation::Publish, "Dropped"), 1);
    assert_eq!(stats.injected.dropped_after, 1);
    assert_eq!(stats.injected.dropped, 0);

    // Per target: calls on the topic (the publish and the read), and one applied publish.
    let reply = s.call("GET", "/_shadowsync/stats/targets").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let targets = reply.json();
    assert_eq!(targets["calls"]["site/a"], json!(2), "{targets}");
    assert_eq!(targets["publishes"]["site/a"], json!(1), "{targets}");
    assert_eq!(s.handle.target_stats().publishes_of("site/a"), 1);

    // A publish dropped before the store saw it is no publish.
    s.put_faults(json!({"dropRate": 1.0, "operations": ["Publish"]}))
        .await;
    let result = http(s.addr(), "POST", "/topics/site%2Fa?retain=true", &[], b"x").await;
    assert!(result.is_err(), "got an answer: {result:?}");
    assert_eq!(s.handle.target_stats().publishes_of("site/a"), 1);
    assert_eq!(s.handle.target_stats().calls_of("site/a"), 3);
    s.call("POST", "/_shadowsync/stats/reset").await;
    assert_eq!(s.handle.target_stats(), Default::default());
}

#[tokio::test]
async fn stats_count_calls_by_operation_and_outcome_and_reset() {
    let s = Server::start().await;
    let doc = br#"{"state":{"desired":{"a":1}}}"#;
    for _ in 0..3 {
        assert_eq!(
            s.send("POST", "/things/l/shadow", &[], doc).await.status,
            200
        );
    }
    s.send(
        "POST",
        "/things/l/shadow",
        &[],
        br#"{"state":{"desired":{"a":2}},"version":1000}"#,
    )
    .await
    .assert_error(409, "ConflictException");
    assert_eq!(s.call("GET", "/things/l/shadow").await.status, 200);
    s.call("GET", "/retainedMessage/none")
        .await
        .assert_error(404, "ResourceNotFoundException");

    let reply = s.call("GET", "/_shadowsync/stats").await;
    assert_eq!(reply.status, 200);
    let raw = reply.json();
    assert_eq!(
        raw["calls"]["UpdateThingShadow"],
        json!({"ok": 3, "ConflictException": 1})
    );
    assert_eq!(raw["calls"]["GetThingShadow"], json!({"ok": 1}));
    assert_eq!(
        raw["calls"]["GetRetainedMessage"],
        json!({"ResourceNotFoundException": 1})
    );
    assert_eq!(raw["totals"], json!({"calls": 6, "ok": 4, "errors": 2}));
    assert_eq!(s.handle.stats().totals.calls, 6);

    let reply = s.call("POST", "/_shadowsync/stats/reset").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["totals"]["calls"],
        6,
        "reset answers what it cleared"
    );
    let after = s.stats().await;
    assert_eq!(after, StatsSnapshot::default());
}

#[tokio::test]
async fn fault_settings_are_validated_and_patchable() {
    let s = Server::start().await;
    for bad in [
        json!({"throttleRate": 2.0}),
        json!({"dropRate": -0.5}),
        json!({"throttle": 1}),
        json!({"operations": ["Nope"]}),
        json!([1]),
    ] {
        s.put_faults(bad.clone())
            .await
            .assert_error(400, "InvalidRequestException");
    }
    s.send("PUT", "/_shadowsync/faults", &[], b"{")
        .await
        .assert_error(400, "InvalidRequestException");
    assert_eq!(s.handle.faults(), FaultSettings::default());

    assert_eq!(
        s.put_faults(json!({"latencyMs": 5, "errorRate": 0.25}))
            .await
            .status,
        200
    );
    let reply = s
        .send("PATCH", "/_shadowsync/faults", &[], br#"{"outage":true}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let expected = FaultSettings {
        latency_ms: 5,
        error_rate: 0.25,
        outage: true,
        ..Default::default()
    };
    assert_eq!(s.handle.faults(), expected);
    let got: FaultSettings =
        serde_json::from_value(s.call("GET", "/_shadowsync/faults").await.json())
            .expect("fault settings shape");
    assert_eq!(got, expected);

    // The Rust API changes the same settings.
    s.handle
        .set_faults(FaultSettings::default())
        .expect("valid settings");
    assert!(s
        .handle
        .set_faults(FaultSettings {
            throttle_rate: 3.0,
            ..Default::default()
        })
        .is_err());
    assert_eq!(
        s.call("GET", "/_shadowsync/faults").await.json()["outage"],
        false
    );
}

#[tokio::test]
async fn more_than_the_in_flight_limit_per_thing_is_throttled() {
    let s = Server::with_options(ServerOptions {
        max_inflight_per_thing: Some(1),
        ..Default::default()
    })
    .await;
    s.store.gate.send_replace(false);
    let addr = s.addr();
    let held =
        tokio::spawn(async move { http(addr, "GET", "/things/busy/shadow", &[], b"").await });
    poll_until("the first call to wait in the store", || async {
        s.store.waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    let message = s
        .call("GET", "/things/busy/shadow")
        .await
        .assert_error(429, "ThrottlingException");
    assert!(message.contains("in flight"), "{message}");
    // Another thing is not affected.
    let other =
        tokio::spawn(async move { http(addr, "GET", "/things/idle/shadow", &[], b"").await });
    poll_until("the other thing's call to reach the store", || async {
        s.store.waiting.load(Ordering::SeqCst) == 2
    })
    .await;
    s.store.gate.send_replace(true);
    for task in [held, other] {
        let reply = task.await.expect("task").expect("answer");
        reply.assert_error(404, "ResourceNotFoundException");
    }
    // The slot was released.
    s.call("GET", "/things/busy/shadow")
        .await
        .assert_error(404, "ResourceNotFoundException");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let s = Server::start().await;
    let reply = s.call("GET", "/_shadowsync/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
}

// ---------------------------------------------------------------------------------------
// Start-up and shutdown

#[tokio::test]
async fn non_loopback_addresses_are_refused_without_allow_remote() {
    for addr in ["0.0.0.0:0", "10.1.2.3:8443", "[::]:0"] {
        let options = ServerOptions {
            listen: addr.parse().expect("address"),
            ..Default::default()
        };
        match start(new_store(), options).await {
            Err(ServerError::RemoteNotAllowed(refused)) => {
                assert_eq!(refused.to_string(), addr)
            }
            Err(other) => panic!("{addr}: unexpected error {other}"),
            Ok(handle) => panic!("{addr}: listening on {}", handle.addr),
        }
    }
}

#[tokio::test]
async fn the_cli_refuses_non_loopback_without_allow_remote() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shadowsync"))
        .args(["dataplane", "serve", "--listen", "0.0.0.0:0"])
        .output();
    let output = tokio::time::timeout(DEADLINE, output)
        .await
        .expect("exits in time")
        .expect("runs");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "printed an address");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

#[tokio::test]
async fn the_binary_announces_its_address_and_stops_on_sigterm() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowsync"))
        .args(["dataplane", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DEADLINE).expect("first line in time");
    let url = line
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: SocketAddr = url.parse().expect("an address");
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let reply = http(addr, "GET", "/things/bin-lamp/shadow", &[], b"")
        .await
        .expect("an answer");
    reply.assert_error(404, "ResourceNotFoundException");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let s = Server::start().await;
    let addr = s.addr();
    assert_eq!(s.call("GET", "/_shadowsync/healthz").await.status, 200);
    s.handle.shutdown().await.expect("clean shutdown");
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------------------
// The AWS SDK for Rust as a client

fn sdk_client(endpoint: &str) -> aws_sdk_iotdataplane::Client {
    use aws_sdk_iotdataplane::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
    let config = aws_sdk_iotdataplane::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_iotdataplane::Client::from_conf(config)
}

#[tokio::test]
async fn the_rust_sdk_reads_answers_and_modelled_errors() {
    use aws_sdk_iotdataplane::primitives::Blob;
    use aws_sdk_iotdataplane::types::PayloadFormatIndicator;

    let s = Server::start().await;
    let client = sdk_client(&s.handle.endpoint_url());

    let out = client
        .update_thing_shadow()
        .thing_name("sdk-lamp")
        .shadow_name("cfg")
        .payload(Blob::new(r#"{"state":{"desired":{"on":true}}}"#))
        .send()
        .await
        .expect("update");
    let doc: Value =
        serde_json::from_slice(out.payload().map(Blob::as_ref).unwrap_or_default()).expect("JSON");
    let version = doc["version"].as_u64().expect("version");

    let err = client
        .update_thing_shadow()
        .thing_name("sdk-lamp")
        .shadow_name("cfg")
        .payload(Blob::new(format!(
            r#"{{"state":{{"desired":{{"on":false}}}},"version":{}}}"#,
            version + 1
        )))
        .send()
        .await
        .expect_err("stale version");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_conflict_exception()),
        "{err:?}"
    );

    let err = client
        .get_thing_shadow()
        .thing_name("sdk-lamp")
        .send()
        .await
        .expect_err("no classic shadow");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{err:?}"
    );

    let page = client
        .list_named_shadows_for_thing()
        .thing_name("sdk-lamp")
        .page_size(10)
        .send()
        .await
        .expect("list");
    assert_eq!(page.results(), ["cfg".to_string()]);

    client
        .publish()
        .topic("sdk/topic/one")
        .qos(1)
        .retain(true)
        .payload(Blob::new(vec![0u8, 1, 2, 255]))
        .user_properties(r#"[{"site":"berlin"},{"site":"hamburg"}]"#)
        .payload_format_indicator(PayloadFormatIndicator::UnspecifiedBytes)
        .send()
        .await
        .expect("publish");
    let got = client
        .get_retained_message()
        .topic("sdk/topic/one")
        .send()
        .await
        .expect("get retained");
    assert_eq!(got.topic(), Some("sdk/topic/one"));
    assert_eq!(got.qos(), 1);
    assert_eq!(got.payload().map(Blob::as_ref), Some(&[0u8, 1, 2, 255][..]));
    let props: Value =
        serde_json::from_slice(got.user_properties().map(Blob::as_ref).unwrap_or_default())
            .expect("user properties JSON");
    assert_eq!(props, json!([{"site":"berlin"},{"site":"hamburg"}]));

    let list = client
        .list_retained_messages()
        .max_results(5)
        .send()
        .await
        .expect("list retained");
    let topics: Vec<&str> = list
        .retained_topics()
        .iter()
        .filter_map(|t| t.topic())
        .collect();
    assert_eq!(topics, ["sdk/topic/one"]);

    s.handle
        .set_faults(FaultSettings {
            throttle_rate: 1.0,
            ..Default::default()
        })
        .expect("valid settings");
    let err = client
        .get_retained_message()
        .topic("sdk/topic/one")
        .send()
        .await
        .expect_err("throttled");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_throttling_exception()),
        "{err:?}"
    );

    s.handle
        .set_faults(FaultSettings {
            drop_rate: 1.0,
            ..Default::default()
        })
        .expect("valid settings");
    let err = client
        .get_retained_message()
        .topic("sdk/topic/one")
        .send()
        .await
        .expect_err("dropped");
    assert!(
        err.as_service_error().is_none(),
        "a dropped call has no AWS error: {err:?}"
    );
}
