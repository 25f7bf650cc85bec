//! Shared helpers: start a server with the fixture CRDs, talk plain HTTP to it, read watch
//! streams, and poll with a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use test_apiserver::{Options, TestApiServer};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn start() -> TestApiServer {
    start_with(Options::default())
}

pub fn start_with(mut options: Options) -> TestApiServer {
    if options.crds.is_empty() {
        options.crds = vec![fixtures()];
    }
    TestApiServer::start(options).expect("the test apiserver starts")
}

pub const TS: &str = "/apis/iot.shadowsync.dev/v1alpha1/namespaces/default/thingshadows";
pub const GADGETS: &str = "/apis/fixture.shadowsync.dev/v1/gadgets";
pub const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

pub fn shadow(name: &str, thing: &str) -> Value {
    serde_json::json!({
        "apiVersion": "iot.shadowsync.dev/v1alpha1",
        "kind": "ThingShadow",
        "metadata": {"name": name},
        "spec": {"thingName": thing, "desired": {"power": "on"}},
    })
}

pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    pub user_agent: String,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Bytes,
}

impl Resp {
    /// The `resourceVersion` of the returned object or list.
    pub fn rv(&self) -> String {
        self.body["metadata"]["resourceVersion"]
            .as_str()
            .expect("a resourceVersion")
            .to_string()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.headers
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

impl Http {
    pub fn new(server: &TestApiServer) -> Http {
        Http::at(&server.url())
    }

    /// A client for a server at `url` (e.g. one run as a separate process).
    pub fn at(url: &str) -> Http {
        Http {
            base: url.to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            user_agent: "apiserver-tests".into(),
        }
    }

    pub fn with_agent(server: &TestApiServer, agent: &str) -> Http {
        let mut h = Http::new(server);
        h.user_agent = agent.into();
        h
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("user-agent", &self.user_agent);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap()
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        self.try_request(method, path, content_type, accept, body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Like `request`, but a connection failure is an `Err` instead of a test failure.
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Resp, String> {
        let req = self.build(method, path, content_type, accept, body);
        let resp = tokio::time::timeout(DEADLINE, self.client.request(req))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| format!("request failed: {e:?}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            body,
            raw,
        })
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None, None, None).await
    }

    pub async fn get_as(&self, path: &str, accept: &str) -> Resp {
        self.request(Method::GET, path, None, Some(accept), None)
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(
            Method::POST,
            path,
            Some("application/json"),
            None,
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.request(
            Method::PUT,
            path,
            Some("application/json"),
            None,
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Resp {
        self.request(
            Method::PATCH,
            path,
            Some(content_type),
            None,
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn merge(&self, path: &str, body: &Value) -> Resp {
        self.patch(path, "application/merge-patch+json", body).await
    }

    pub async fn apply_yaml(&self, path: &str, yaml: &str) -> Resp {
        self.request(
            Method::PATCH,
            path,
            Some("application/apply-patch+yaml"),
            None,
            Some(yaml.as_bytes().to_vec()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path, None, None, None).await
    }

    pub async fn post_empty(&self, path: &str) -> Resp {
        self.request(Method::POST, path, None, None, None).await
    }

    /// Opens a watch; `path` includes the query (`?watch=true&...`).
    pub async fn watch(&self, path: &str) -> Watch {
        let req = self.build(Method::GET, path, None, None, None);
        let resp = tokio::time::timeout(DEADLINE, self.client.request(req))
            .await
            .expect("the server answers in time")
            .expect("the request is sent");
        assert_eq!(resp.status().as_u16(), 200, "watch {path}");
        Watch {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }
}

pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

impl Watch {
    /// The next event, or `None` when the server ended the stream. Fails the test if
    /// nothing arrives before the deadline.
    pub async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(DEADLINE, self.next_inner())
            .await
            .expect("a watch event (or the end of the stream) arrives in time")
    }

    async fn next_inner(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON watch event"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                _ => return None,
            }
        }
    }

    /// The next event that is not a BOOKMARK.
    pub async fn next_change(&mut self) -> Option<Value> {
        loop {
            let e = self.next().await?;
            if e["type"] != "BOOKMARK" {
                return Some(e);
            }
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server binary as a child process, killed if the test ends early. Its stdout stays
/// open so that it never writes into a closed pipe.
pub struct Child(
    pub std::process::Child,
    BufReader<std::process::ChildStdout>,
);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads the address from its first line.
pub fn spawn_binary(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_test-apiserver"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Child(child, stdout), url)
}

/// Stops the binary with SIGTERM and checks that it exits cleanly.
pub fn terminate(mut child: Child) {
    let pid = child.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}
