//! Convergence benchmark: the release operator against a real Kubernetes control plane
//! (etcd, kube-apiserver and kube-controller-manager from `tests/kube/cluster.sh`) and
//! the local data plane, compared with the same data-plane calls made straight through
//! the adapter with the operator's client-side limits (so the ratio is what Kubernetes
//! costs).
//!
//! ```sh
//! cargo build --release --bins
//! cargo bench --bench converge -- [--shadows N] [--retained M] [--max-rps R]
//! cargo bench --bench converge -- --set N [--max-rps R]    # fleet mode, see fleet.rs
//! ```
//!
//! The operator runs as the chart's ServiceAccount (the Namespace, ServiceAccount and
//! RBAC objects of `deploy/install.yaml`, a token kubeconfig), as in the end-to-end
//! tests. Every figure comes from outside the operator: data-plane calls from the
//! server's `/_shadowsync/stats`, Kubernetes requests from kube-apiserver's audit log
//! (by user, verb, resource and subresource), readiness from a watch on the resources
//! (and, after a restart, from `/readyz` plus the operator's readiness gauge), memory and
//! CPU from `/proc`. The last line printed is one JSON object; see `benches/README.md`.

// The JSON summary is one `json!` literal with many fields.
#![recursion_limit = "256"]

// The end-to-end harness: the control plane, kubectl, the chart's RBAC, the audit log.
#[path = "../tests/e2e/mod.rs"]
mod e2e;

// Fleet mode (`--set N`): a ThingShadowSet against the same number of standalone
// ThingShadows. Under `converge/` so that cargo does not take it for a bench target.
#[path = "converge/fleet.rs"]
mod fleet;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{json, Value};

use e2e::cluster::AuditEvent;
use e2e::{ControlPlane, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, OPERATOR_USER};
use shadowsync::cli::target::DataPlaneArgs;
use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::resilient::{RateLimit, ResiliencePolicy, Resilient};
use shadowsync::dataplane::{DataPlane, ErrorKind, PayloadFormat, PublishRequest};

/// User agent of every request this benchmark sends to the apiserver.
const BENCH_UA: &str = "shadowsync-bench/converge";
/// The user of the admin kubeconfig `cluster.sh` writes (the benchmark's requests).
const ADMIN_USER: &str = "shadowsync-admin";
const NAMESPACE: &str = "bench";
const SHADOW_PLURAL: &str = "thingshadows";
const RETAINED_PLURAL: &str = "retainedmessages";
/// The operator's default `--concurrency` (per kind); passed explicitly so that the
/// operator and the direct run use the same value.
const DEFAULT_CONCURRENCY: usize = 16;
/// Resources created (and patched) at once by the benchmark.
const CLIENT_CONCURRENCY: usize = 32;
/// After a phase looks done, how long to keep counting late calls.
const SETTLE: Duration = Duration::from_secs(3);
/// Names of the marker requests that delimit phases in the audit log.
const MARKER_PREFIX: &str = "shadowsync-bench-marker-";

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
struct Args {
    shadows: usize,
    retained: usize,
    concurrency: usize,
    /// `--max-rps` of the operator and of the direct run (default: the operator's).
    max_rps: Option<String>,
    /// refreshInterval of the refresh phase; 0 = derived from the size.
    refresh_seconds: u64,
    skip_refresh: bool,
    operator_args: Vec<String>,
    timeout: Duration,
    /// Fleet mode: the number of things of the ThingShadowSet (`--set N`).
    set: Option<usize>,
    /// Fleet mode: the rollout steps of the template change (`--steps 1,10,100`).
    steps: Vec<u8>,
    /// Fleet mode: how long a simulated device takes to report (`--report-delay-ms`).
    report_delay_ms: u64,
}

fn parse_args() -> Result<Args> {
    parse_args_from(std::env::args().skip(1))
}

/// The options, without the program name.
fn parse_args_from(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut args = Args {
        shadows: 2000,
        retained: 200,
        concurrency: DEFAULT_CONCURRENCY,
        max_rps: None,
        refresh_seconds: 0,
        skip_refresh: false,
        operator_args: Vec::new(),
        timeout: Duration::from_secs(3600),
        set: None,
        steps: fleet::DEFAULT_STEPS.to_vec(),
        report_delay_ms: fleet::DEFAULT_REPORT_DELAY_MS,
    };
    // Options that belong to one mode only, to refuse them in the other.
    let mut fixed_mode_only = Vec::new();
    let mut set_mode_only = Vec::new();
    let mut timeout_given = false;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<String> {
            it.next()
                .ok_or_else(|| format!("{name} needs a value").into())
        };
        match arg.as_str() {
            "--shadows" => {
                args.shadows = value("--shadows")?.parse()?;
                fixed_mode_only.push("--shadows");
            }
            "--retained" => {
                args.retained = value("--retained")?.parse()?;
                fixed_mode_only.push("--retained");
            }
            "--skip-refresh" => {
                args.skip_refresh = true;
                fixed_mode_only.push("--skip-refresh");
            }
            "--set" => {
                let n = value("--set")?;
                args.set = Some(
                    n.parse()
                        .map_err(|e| format!("--set {n:?}: {e} (a number of things)"))?,
                );
            }
            "--steps" => {
                args.steps = fleet::parse_steps(&value("--steps")?)?;
                set_mode_only.push("--steps");
            }
            "--report-delay-ms" => {
                let ms = value("--report-delay-ms")?;
                args.report_delay_ms = ms
                    .parse()
                    .map_err(|e| format!("--report-delay-ms {ms:?}: {e}"))?;
                set_mode_only.push("--report-delay-ms");
            }
            "--concurrency" => args.concurrency = value("--concurrency")?.parse()?,
            "--max-rps" => {
                let rps = value("--max-rps")?;
                rps.parse::<f64>()
                    .map_err(|e| format!("--max-rps {rps:?}: {e}"))?;
                args.max_rps = Some(rps);
            }
            "--refresh-seconds" => args.refresh_seconds = value("--refresh-seconds")?.parse()?,
            "--operator-arg" => args.operator_args.push(value("--operator-arg")?),
            "--timeout-seconds" => {
                args.timeout = Duration::from_secs(value("--timeout-seconds")?.parse()?);
                timeout_given = true;
            }
            // `cargo bench` passes `--bench` to harness-less targets.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench converge -- [--shadows N] [--retained M] \
                     [--max-rps R] [--concurrency C] [--refresh-seconds S] \
                     [--skip-refresh] [--operator-arg ARG]... [--timeout-seconds T]\n\
                     cargo bench --bench converge -- --set N [--max-rps R] [--steps 1,10,100] \
                     [--refresh-seconds S] [--report-delay-ms MS] [--concurrency C] \
                     [--operator-arg ARG]... [--timeout-seconds T]\n\
                     cargo bench --bench converge -- --self-test"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if args.shadows == 0 {
        return Err("--shadows must be at least 1".into());
    }
    args.concurrency = args.concurrency.max(1);
    if let Some(rps) = &args.max_rps {
        // The operator gets it as a flag; the direct run reads the same flags.
        args.operator_args.push("--max-rps".into());
        args.operator_args.push(rps.clone());
    }
    if let Some(n) = args.set {
        if let Some(flag) = fixed_mode_only.first() {
            return Err(format!(
                "{flag} is an option of the standalone mode; --set N measures N things of \
                 one ThingShadowSet against N standalone ThingShadows"
            )
            .into());
        }
        fleet::check_size(n)?;
        fleet::fill_defaults(&mut args, timeout_given)?;
        return Ok(args);
    }
    if let Some(flag) = set_mode_only.first() {
        return Err(format!("{flag} is an option of the fleet mode (--set N)").into());
    }
    if args.refresh_seconds == 0 {
        // Keep the mean refresh rate well under the operator's default 100 requests/s,
        // so that the limiter does not flatten (or hide) the shape being measured.
        let resources = (args.shadows + args.retained) as u64;
        args.refresh_seconds = 20u64.max(resources.div_ceil(40));
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// Processes

/// A child process that is killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns how long it took to exit.
    fn terminate(&mut self, grace: Duration) -> Result<Duration> {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -TERM {} failed", self.pid()).into());
        }
        while started.elapsed() < grace {
            if self.child.try_wait()?.is_some() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not exit within {grace:?} of SIGTERM; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(started.elapsed())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts a program whose first stdout line is `listening on http://ADDR`; the rest of
/// its output goes to `log`.
fn start_listening(
    name: &'static str,
    program: &Path,
    args: &[&str],
    log: &Path,
    envs: &[(&str, &str)],
) -> Result<(Proc, String)> {
    let log_file = std::fs::File::create(log)?;
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file.try_clone()?))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let proc = Proc { name, child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        let mut log_file = log_file;
        for line in lines.map_while(|l| l.ok()) {
            let _ = writeln!(log_file, "{line}");
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
        format!(
            "{name} did not announce its address (log: {})",
            log.display()
        )
    })?;
    let addr = first
        .strip_prefix("listening on http://")
        .ok_or_else(|| format!("{name}: unexpected first line {first:?}"))?
        .trim()
        .to_string();
    Ok((proc, addr))
}

/// Starts `shadowsync run` and waits for the address of its metrics endpoint, which it
/// logs (JSON) on stderr.
/// Starts `shadowsync run` as the chart's ServiceAccount (`kubeconfig` holds its token)
/// and waits for the address of its metrics endpoint, which it logs (JSON) on stderr.
fn start_operator(
    bin: &Path,
    kubeconfig: &Path,
    endpoint: &str,
    args: &Args,
    log: &Path,
    pod_name: &str,
) -> Result<(Proc, String, Instant)> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let concurrency = args.concurrency.to_string();
    let endpoint_url = format!("http://{endpoint}");
    let mut cmd_args = vec![
        "run",
        "--endpoint-url",
        &endpoint_url,
        "--metrics-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--concurrency",
        &concurrency,
    ];
    cmd_args.extend(args.operator_args.iter().map(String::as_str));
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(&cmd_args)
        .env("KUBECONFIG", kubeconfig)
        // What the chart's Deployment sets.
        .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
        .env("POD_NAME", pod_name)
        .envs(aws_env())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let proc = Proc {
        name: "operator",
        child,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log_file = log_file;
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if !sent && line.contains("serving /metrics") {
                if let Some(addr) = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| find_str(&v, "addr"))
                {
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
            let _ = writeln!(log_file, "{line}");
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| {
        format!(
            "the operator did not log its metrics address (log: {})",
            log.display()
        )
    })?;
    Ok((proc, addr, started))
}

/// The first string value under `key` anywhere in a JSON log line.
fn find_str(v: &Value, key: &str) -> Option<String> {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(s)) = map.get(key) {
                return Some(s.clone());
            }
            map.values().find_map(|v| find_str(v, key))
        }
        _ => None,
    }
}

/// Dummy credentials and a region for the loopback endpoint, so that nothing probes the
/// instance metadata service.
fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// VmHWM (peak resident set) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = 100.0; // USER_HZ on Linux
    Some((utime + stime) / ticks)
}

// ---------------------------------------------------------------------------------------
// Plain HTTP to the admin endpoints (data-plane stats, operator metrics and probes)

fn http(method: &str, addr: &str, path: &str) -> Result<(u16, String)> {
    http_with_body(method, addr, path, "")
}

/// A request with a JSON body (an empty body: none).
fn http_with_body(method: &str, addr: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: {BENCH_UA}\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad HTTP answer from {addr}{path}"))?;
    Ok((code, body.to_string()))
}

fn http_json(method: &str, addr: &str, path: &str) -> Result<Value> {
    let (code, body) = http(method, addr, path)?;
    if code != 200 {
        return Err(format!("{method} {addr}{path}: {code} {body}").into());
    }
    Ok(serde_json::from_str(&body)?)
}

/// Data-plane calls by operation (all outcomes), from `/_shadowsync/stats`.
#[derive(Clone, Debug, Default)]
struct Calls(BTreeMap<String, u64>);

impl Calls {
    fn fetch(dataplane: &str) -> Result<Calls> {
        let v = http_json("GET", dataplane, "/_shadowsync/stats")?;
        let mut calls = BTreeMap::new();
        if let Some(ops) = v["calls"].as_object() {
            for (op, outcomes) in ops {
                let n = outcomes
                    .as_object()
                    .map(|o| o.values().filter_map(Value::as_u64).sum())
                    .unwrap_or(0);
                calls.insert(op.clone(), n);
            }
        }
        Ok(Calls(calls))
    }

    fn reset(dataplane: &str) -> Result<()> {
        http_json("POST", dataplane, "/_shadowsync/stats/reset").map(|_| ())
    }

    fn get(&self, op: &str) -> u64 {
        self.0.get(op).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn shadow_ops(&self) -> u64 {
        [
            "GetThingShadow",
            "UpdateThingShadow",
            "DeleteThingShadow",
            "ListNamedShadowsForThing",
        ]
        .iter()
        .map(|op| self.get(op))
        .sum()
    }

    fn retained_ops(&self) -> u64 {
        ["GetRetainedMessage", "Publish", "ListRetainedMessages"]
            .iter()
            .map(|op| self.get(op))
            .sum()
    }

    fn reads(&self) -> u64 {
        self.get("GetThingShadow") + self.get("GetRetainedMessage")
    }

    fn minus(&self, earlier: &Calls) -> Calls {
        Calls(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.get(k))))
                .collect(),
        )
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(op, n)| format!("{op} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
// ---------------------------------------------------------------------------------------
// Kubernetes requests, from kube-apiserver's audit log

/// Who sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    /// The operator: the chart's ServiceAccount.
    Operator,
    /// This benchmark (the admin kubeconfig).
    Bench,
    /// Everyone else: kube-controller-manager, the apiserver itself.
    System,
}

/// Requests counted in the audit log between two markers: one count per (who, verb,
/// resource, subresource), a finished request each (a watch when it starts).
#[derive(Clone, Debug, Default)]
struct ApiCounts {
    by: BTreeMap<(Who, String, String, String), u64>,
    /// The operator's requests answered with a code of 400 or more, by code.
    operator_errors: BTreeMap<u16, u64>,
    /// The operator's list requests of the two kinds that carried a `continue` token
    /// (pages after the first).
    operator_continued_lists: u64,
    /// The operator's watches of the two kinds that asked for the initial events
    /// (`sendInitialEvents=true`: streaming lists).
    operator_streaming_lists: u64,
    /// How long the apiserver took to answer each of the operator's writes, in
    /// microseconds (request received to response complete, from the audit log).
    operator_write_micros: Vec<u32>,
    /// When the apiserver received each of the operator's writes of a ThingShadowSet's
    /// status, in microseconds since the epoch (fleet mode).
    set_status_received_micros: Vec<i64>,
}

/// The timestamps of an audit event (`audit.k8s.io/v1`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditTimes {
    request_received_timestamp: Option<String>,
    stage_timestamp: Option<String>,
}

impl AuditTimes {
    /// Request received to this stage, in microseconds.
    fn micros(&self) -> Option<u32> {
        let parse = |t: &Option<String>| chrono::DateTime::parse_from_rfc3339(t.as_deref()?).ok();
        let took = parse(&self.stage_timestamp)? - parse(&self.request_received_timestamp)?;
        u32::try_from(took.num_microseconds()?).ok()
    }

    /// When the request was received, in microseconds since the epoch.
    fn received_micros(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(self.request_received_timestamp.as_deref()?)
            .ok()
            .map(|t| t.timestamp_micros())
    }
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

fn is_managed(resource: &str) -> bool {
    resource == SHADOW_PLURAL || resource == RETAINED_PLURAL
}

impl ApiCounts {
    fn add(&mut self, event: &AuditEvent, times: Option<AuditTimes>) {
        let who = match event.user.username.as_str() {
            OPERATOR_USER => Who::Operator,
            ADMIN_USER => Who::Bench,
            _ => Who::System,
        };
        let object = event.object_ref.clone().unwrap_or_default();
        if who == Who::Operator {
            if is_write(&event.verb) {
                if let Some(micros) = times.as_ref().and_then(|t| t.micros()) {
                    self.operator_write_micros.push(micros);
                }
                if object.resource == fleet::SET_PLURAL && object.subresource == "status" {
                    if let Some(at) = times.as_ref().and_then(|t| t.received_micros()) {
                        self.set_status_received_micros.push(at);
                    }
                }
            }
            if let Some(code) = event.response_status.as_ref().map(|s| s.code) {
                if code >= 400 {
                    *self.operator_errors.entry(code).or_default() += 1;
                }
            }
            if is_managed(&object.resource) {
                if event.verb == "list" && event.query("continue").is_some() {
                    self.operator_continued_lists += 1;
                }
                if event.verb == "watch" && event.query("sendInitialEvents") == Some("true") {
                    self.operator_streaming_lists += 1;
                }
            }
        }
        *self
            .by
            .entry((who, event.verb.clone(), object.resource, object.subresource))
            .or_default() += 1;
    }

    fn sum(&self, keep: impl Fn(Who, &str, &str, &str) -> bool) -> u64 {
        self.by
            .iter()
            .filter(|((who, verb, resource, sub), _)| keep(*who, verb, resource, sub))
            .map(|(_, n)| n)
            .sum()
    }

    /// The operator's writes to ThingShadows and RetainedMessages (main resource and
    /// `/status`).
    fn resource_writes(&self) -> u64 {
        self.sum(|who, verb, resource, _| {
            who == Who::Operator && is_write(verb) && is_managed(resource)
        })
    }

    /// Of those, writes to `/status`.
    fn status_writes(&self) -> u64 {
        self.sum(|who, verb, resource, sub| {
            who == Who::Operator && is_write(verb) && is_managed(resource) && sub == "status"
        })
    }

    /// The operator's writes of Events.
    fn event_writes(&self) -> u64 {
        self.sum(|who, verb, resource, _| {
            who == Who::Operator && is_write(verb) && resource == "events"
        })
    }

    /// Every write of the operator but Events.
    fn writes_but_events(&self) -> u64 {
        self.sum(|who, verb, resource, _| {
            who == Who::Operator && is_write(verb) && resource != "events"
        })
    }

    /// The operator's reads (get, list, watch) of the two kinds.
    fn resource_reads(&self) -> u64 {
        self.sum(|who, verb, resource, _| {
            who == Who::Operator && !is_write(verb) && is_managed(resource)
        })
    }

    fn operator(&self, verb: &str, resource: &str) -> u64 {
        self.sum(|w, v, r, _| w == Who::Operator && v == verb && r == resource)
    }

    fn operator_total(&self) -> u64 {
        self.sum(|who, _, _, _| who == Who::Operator)
    }

    /// Requests by verb, of one sender or (None) of everyone.
    fn by_verb(&self, who: Option<Who>) -> BTreeMap<String, u64> {
        let mut verbs = BTreeMap::new();
        for ((w, verb, _, _), n) in &self.by {
            if who.is_none_or(|who| who == *w) {
                *verbs.entry(verb.clone()).or_default() += n;
            }
        }
        verbs
    }

    /// The operator's requests, `verb resource[/sub] count, ...`.
    fn describe_operator(&self) -> String {
        let parts: Vec<String> = self
            .by
            .iter()
            .filter(|((who, ..), _)| *who == Who::Operator)
            .map(|((_, verb, resource, sub), n)| {
                let resource = if resource.is_empty() {
                    "(no resource)".to_string()
                } else if sub.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}/{sub}")
                };
                format!("{verb} {resource} {n}")
            })
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// Median and 90th percentile of the apiserver's answer time to the operator's
    /// writes, in milliseconds.
    fn write_latency_ms(&self) -> Option<(f64, f64)> {
        let mut sorted = self.operator_write_micros.clone();
        sorted.sort_unstable();
        let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        (!sorted.is_empty()).then(|| (at(0.5), at(0.9)))
    }

    fn describe_errors(&self) -> String {
        if self.operator_errors.is_empty() {
            return "none".into();
        }
        self.operator_errors
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads the audit log as it grows, and cuts it into phases with marker requests.
struct Audit {
    path: PathBuf,
    client: kube::Client,
    offset: u64,
    /// The end of the log that is not a whole line yet.
    partial: Vec<u8>,
    markers: u64,
    /// Counted since the last marker.
    current: ApiCounts,
}

impl Audit {
    fn new(path: PathBuf, client: kube::Client) -> Audit {
        Audit {
            path,
            client,
            offset: 0,
            partial: Vec::new(),
            markers: 0,
            current: ApiCounts::default(),
        }
    }

    /// Every request finished since the previous checkpoint (or since the start).
    ///
    /// A request's audit line is written once its response is complete, so a marker
    /// request (a GET of a namespace that does not exist) is sent first, and the log read
    /// until the marker is in it: every request that finished before this call is in the
    /// returned counts, and what came after the marker goes to the next checkpoint.
    async fn checkpoint(&mut self) -> Result<ApiCounts> {
        let name = format!("{MARKER_PREFIX}{}", self.markers);
        self.markers += 1;
        Api::<Namespace>::all(self.client.clone())
            .get_opt(&name)
            .await?;
        let uri = format!("/api/v1/namespaces/{name}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut found = None;
        loop {
            self.read_new(&uri, &mut found)?;
            if let Some(counts) = found {
                return Ok(counts);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the marker {uri} did not reach {} within 60 s",
                    self.path.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Counts the lines written since the last read; at the marker `uri`, moves what was
    /// counted so far to `found`.
    fn read_new(&mut self, uri: &str, found: &mut Option<ApiCounts>) -> Result<()> {
        let mut file = std::fs::File::open(&self.path)?;
        if file.metadata()?.len() < self.offset {
            return Err(format!(
                "{} is shorter than what was read of it: kube-apiserver rotated it",
                self.path.display()
            )
            .into());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut chunk = std::mem::take(&mut self.partial);
        let read = file.read_to_end(&mut chunk)?;
        self.offset += read as u64;
        let whole = chunk.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.partial = chunk.split_off(whole);
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(event) = serde_json::from_slice::<AuditEvent>(line) else {
                continue;
            };
            if !event.counts() {
                continue;
            }
            if event.request_u_r_i.contains(MARKER_PREFIX) {
                if found.is_none() && event.request_u_r_i == uri {
                    *found = Some(std::mem::take(&mut self.current));
                }
                continue;
            }
            let times = serde_json::from_slice::<AuditTimes>(line).ok();
            self.current.add(&event, times);
        }
        Ok(())
    }
}

/// The operator's readiness as seen from outside: `/readyz` and the readiness gauge.
fn operator_ready(metrics: &str, shadows: usize, retained: usize) -> bool {
    let Ok((code, _)) = http("GET", metrics, "/readyz") else {
        return false;
    };
    if code != 200 {
        return false;
    }
    let Ok((200, text)) = http("GET", metrics, "/metrics") else {
        return false;
    };
    let gauge = |kind: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("shadowsync_resources{"))
            .filter(|l| l.contains(&format!("kind=\"{kind}\"")) && l.contains("ready=\"true\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    };
    gauge("ThingShadow") as usize >= shadows && gauge("RetainedMessage") as usize >= retained
}

// ---------------------------------------------------------------------------------------
// Readiness from a watch

#[derive(Clone, Copy, Debug)]
struct Seen {
    shadow: bool,
    generation: i64,
    /// observedGeneration of a Ready=True condition.
    ready: Option<i64>,
}

#[derive(Default)]
struct Tracker {
    objects: Mutex<HashMap<String, Seen>>,
}

impl Tracker {
    fn update(&self, shadow: bool, obj: &DynamicObject) {
        let key = format!(
            "{}/{}",
            if shadow { "s" } else { "r" },
            obj.metadata.name.as_deref().unwrap_or("")
        );
        let generation = obj.metadata.generation.unwrap_or(0);
        let status = &obj.data["status"];
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready" && c["status"] == "True")
            .map(|c| {
                c["observedGeneration"]
                    .as_i64()
                    .or_else(|| status["observedGeneration"].as_i64())
                    .unwrap_or(0)
            });
        let seen = Seen {
            shadow,
            generation,
            ready,
        };
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(key, seen);
        }
    }

    /// Resources Ready for at least the given generation (shadows, retained).
    fn ready_count(&self, shadow_gen: i64, retained_gen: i64) -> (usize, usize) {
        let objects = self.objects.lock().expect("tracker lock");
        let mut counts = (0, 0);
        for seen in objects.values() {
            let min = if seen.shadow {
                shadow_gen
            } else {
                retained_gen
            };
            if seen.generation >= min && seen.ready == Some(seen.generation) {
                if seen.shadow {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
        }
        counts
    }
}

fn spawn_watch(
    client: kube::Client,
    resource: ApiResource,
    shadow: bool,
    tracker: Arc<Tracker>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<DynamicObject> = Api::namespaced_with(client, NAMESPACE, &resource);
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                    tracker.update(shadow, &o)
                }
                Ok(_) => {}
                Err(err) => eprintln!("watch: {err}"),
            }
        }
    })
}

async fn wait_ready(
    tracker: &Tracker,
    want: (usize, usize),
    generations: (i64, i64),
    deadline: Duration,
    what: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let counts = tracker.ready_count(generations.0, generations.1);
        if counts.0 >= want.0 && counts.1 >= want.1 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "{what}: only {}/{} ThingShadows and {}/{} RetainedMessages Ready after {deadline:?}",
                counts.0, want.0, counts.1, want.1
            )
            .into());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {what}: {}/{} ThingShadows, {}/{} RetainedMessages Ready after {:.0}s",
                counts.0,
                want.0,
                counts.1,
                want.1,
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The resources

fn thing(i: usize) -> String {
    format!("bench-thing-{i:05}")
}

fn topic(i: usize) -> String {
    format!("bench/device-{i:05}/config")
}

fn desired(i: usize, round: u32) -> Value {
    json!({"power": "on", "level": (i % 100) as u64, "round": round, "config": {"mode": "eco", "interval": 30}})
}

fn retained_payload(i: usize) -> Value {
    json!({"reportInterval": 30, "device": i, "telemetry": ["power", "temperature"]})
}

fn shadow_manifest(i: usize) -> Value {
    json!({
        "apiVersion": shadowsync::api::API_VERSION,
        "kind": "ThingShadow",
        "metadata": {"name": thing(i), "namespace": NAMESPACE},
        "spec": {"thingName": thing(i), "desired": desired(i, 1)},
    })
}

fn retained_manifest(i: usize) -> Value {
    json!({
        "apiVersion": shadowsync::api::API_VERSION,
        "kind": "RetainedMessage",
        "metadata": {"name": format!("bench-config-{i:05}"), "namespace": NAMESPACE},
        "spec": {"topic": topic(i), "payload": {"json": retained_payload(i)}, "qos": 1},
    })
}

fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(shadowsync::api::GROUP, shadowsync::api::VERSION, kind),
        plural,
    )
}

async fn create_all(client: &kube::Client, args: &Args) -> Result<Duration> {
    let started = Instant::now();
    let shadows: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &api_resource("ThingShadow", SHADOW_PLURAL),
    );
    let retained: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &api_resource("RetainedMessage", RETAINED_PLURAL),
    );
    let pp = PostParams {
        field_manager: Some("shadowsync-bench".into()),
        ..Default::default()
    };
    // Interleave the kinds, as a GitOps sync of a mixed directory would.
    let jobs: Vec<(bool, usize)> = (0..args.shadows.max(args.retained))
        .flat_map(|i| {
            let mut v = Vec::new();
            if i < args.shadows {
                v.push((true, i));
            }
            if i < args.retained {
                v.push((false, i));
            }
            v
        })
        .collect();
    futures::stream::iter(jobs)
        .map(|(shadow, i)| {
            let (api, manifest) = if shadow {
                (&shadows, shadow_manifest(i))
            } else {
                (&retained, retained_manifest(i))
            };
            let pp = &pp;
            async move {
                let obj: DynamicObject = serde_json::from_value(manifest)?;
                api.create(pp, &obj).await?;
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(started.elapsed())
}

async fn patch_all(
    client: &kube::Client,
    plural: &str,
    kind: &str,
    names: Vec<String>,
    patch: impl Fn(&str) -> Value,
) -> Result<Duration> {
    let started = Instant::now();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &api_resource(kind, plural));
    let pp = PatchParams {
        field_manager: Some("shadowsync-bench".into()),
        ..Default::default()
    };
    futures::stream::iter(names)
        .map(|name| {
            let body = patch(&name);
            let api = &api;
            let pp = &pp;
            async move {
                api.patch(&name, pp, &Patch::Merge(&body)).await?;
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------
// The direct run: the same calls through the adapter, no Kubernetes

async fn raw_run(
    dp: Arc<dyn DataPlane>,
    shadows: usize,
    retained: usize,
    concurrency: usize,
    prefix: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let shadow_work = {
        let dp = dp.clone();
        let prefix = prefix.to_string();
        async move {
            futures::stream::iter(0..shadows)
                .map(|i| {
                    let dp = dp.clone();
                    let name = format!("{prefix}{}", thing(i));
                    async move {
                        match dp.get_thing_shadow(&name, None).await {
                            Err(e) if e.kind == ErrorKind::ResourceNotFound => {}
                            Err(e) => return Err::<(), Error>(e.into()),
                            Ok(_) => return Err("the shadow already exists".into()),
                        }
                        let body = json!({
                            "state": {"desired": desired(i, 1)},
                            "clientToken": format!("bench-{i}"),
                        });
                        dp.update_thing_shadow(&name, None, Bytes::from(body.to_string()))
                            .await?;
                        Ok(())
                    }
                })
                .buffer_unordered(concurrency)
                .try_collect::<Vec<_>>()
                .await
        }
    };
    let retained_work = {
        let dp = dp.clone();
        let prefix = prefix.to_string();
        async move {
            futures::stream::iter(0..retained)
                .map(|i| {
                    let dp = dp.clone();
                    let topic = format!("{prefix}{}", topic(i));
                    async move {
                        match dp.get_retained_message(&topic).await {
                            Err(e) if e.kind == ErrorKind::ResourceNotFound => {}
                            Err(e) => return Err::<(), Error>(e.into()),
                            Ok(_) => return Err("the retained message already exists".into()),
                        }
                        let request = PublishRequest {
                            topic,
                            payload: Bytes::from(retained_payload(i).to_string()),
                            qos: 1,
                            retain: true,
                            content_type: Some("application/json".into()),
                            payload_format_indicator: Some(PayloadFormat::Utf8Data),
                            ..Default::default()
                        };
                        dp.publish(&request).await?;
                        Ok(())
                    }
                })
                .buffer_unordered(concurrency)
                .try_collect::<Vec<_>>()
                .await
        }
    };
    let (a, b) = tokio::join!(shadow_work, retained_work);
    a?;
    b?;
    Ok(started.elapsed())
}

/// The data-plane client policy `shadowsync run` builds from `operator_args` (and the
/// environment, which the operator process inherits): its `--max-rps` and
/// `--max-thing-rps`, parsed by the operator's own flag definitions.
fn operator_policy(operator_args: &[String]) -> Result<ResiliencePolicy> {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        dataplane: DataPlaneArgs,
    }
    let mut wanted = vec!["shadowsync-run".to_string()];
    let mut it = operator_args.iter();
    while let Some(arg) = it.next() {
        for flag in ["--max-rps", "--max-thing-rps"] {
            if arg == flag {
                wanted.push(arg.clone());
                wanted.extend(it.next().cloned());
            } else if arg.starts_with(&format!("{flag}=")) {
                wanted.push(arg.clone());
            }
        }
    }
    let flags = <Flags as clap::Parser>::try_parse_from(wanted)?;
    Ok(flags.dataplane.settings().policy())
}

fn rate_text(rate: Option<RateLimit>) -> String {
    rate.map_or_else(|| "unlimited".into(), |r| r.per_second.to_string())
}

// ---------------------------------------------------------------------------------------

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `shadowsync` binary the benchmark runs (operator and data plane):
/// `$SHADOWSYNC_BENCH_BIN` if set, else the one cargo built for this benchmark.
///
/// `cargo bench` builds the crate's binaries with the `bench` profile and links them to
/// `target/release/shadowsync`, over whatever `cargo build --release` left there; the
/// `bench` profile is the release profile (see Cargo.toml), so that this is the binary
/// that ships, but for tokio's `test-util` feature, which the dev-dependencies turn on.
fn shadowsync_bin() -> Result<(PathBuf, bool)> {
    match std::env::var_os("SHADOWSYNC_BENCH_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(
                    format!("SHADOWSYNC_BENCH_BIN={} is not a file", path.display()).into(),
                );
            }
            Ok((path, true))
        }
        None => Ok((PathBuf::from(env!("CARGO_BIN_EXE_shadowsync")), false)),
    }
}

/// Warns when a binary is older than the newest source file it is built from.
fn warn_if_stale(bin: &Path, sources: &[PathBuf]) {
    fn newest(dir: &Path) -> Option<SystemTime> {
        let mut newest = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let t = if path.is_dir() {
                newest_dir(&path)
            } else {
                entry.metadata().ok()?.modified().ok()
            };
            newest = newest.max(t);
        }
        newest
    }
    fn newest_dir(dir: &Path) -> Option<SystemTime> {
        newest(dir)
    }
    let Some(built) = std::fs::metadata(bin).and_then(|m| m.modified()).ok() else {
        return;
    };
    if sources.iter().filter_map(|s| newest(s)).any(|t| t > built) {
        eprintln!("warning: {} is older than its sources", bin.display());
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn main() {
    // `-- --self-test`: the benchmark's own checks, without a cluster (the target has no
    // libtest, and cargo builds it with `cfg(test)` for `cargo bench` too).
    if std::env::args().any(|a| a == "--self-test") {
        fleet::self_test();
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("converge: {err}");
            std::process::exit(2);
        }
    };
    for (k, v) in aws_env() {
        // Before any thread exists.
        std::env::set_var(k, v);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        let work = async {
            match args.set {
                Some(n) => fleet::run(args.clone(), n).await,
                None => run(args.clone()).await,
            }
        };
        tokio::time::timeout(args.timeout, work)
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {:?}", args.timeout).into()))
    });
    // Processes and the control plane are owned by `run` and stopped by now.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(err) = outcome {
        eprintln!("converge: {err}");
        std::process::exit(1);
    }
}

/// The process id `cluster.sh` recorded for a control-plane component.
fn component_pid(cluster: &ControlPlane, name: &str) -> Option<u32> {
    std::fs::read_to_string(cluster.dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The control plane with the CRDs and the chart's RBAC, the operator's ServiceAccount
/// kubeconfig, the benchmark's client and the namespace the benchmark works in.
struct Kube {
    cluster: ControlPlane,
    operator_kubeconfig: PathBuf,
    client: kube::Client,
    apiserver_version: String,
    apiserver_pid: u32,
    etcd_pid: u32,
    control_plane_seconds: Duration,
}

/// Starts the control plane (`cluster.sh up`), applies the CRDs and the chart's RBAC,
/// writes the ServiceAccount's kubeconfig and creates the benchmark's namespace.
async fn start_kube(root: &Path, logs: &Path) -> Result<Kube> {
    let started = Instant::now();
    let cluster = tokio::task::block_in_place(|| {
        let cluster = ControlPlane::start(&logs.join("cluster"));
        e2e::kubectl_apply(&cluster.kubeconfig, &root.join("crds"), logs);
        e2e::install_operator_rbac(&cluster.kubeconfig, logs);
        cluster
    });
    let operator_kubeconfig = logs.join("operator.kubeconfig");
    tokio::task::block_in_place(|| {
        cluster.service_account_kubeconfig(
            OPERATOR_NAMESPACE,
            OPERATOR_SERVICE_ACCOUNT,
            &operator_kubeconfig,
            &cluster.url,
        )
    });
    let control_plane_seconds = started.elapsed();
    let apiserver_pid = component_pid(&cluster, "apiserver").ok_or("no apiserver pid")?;
    let etcd_pid = component_pid(&cluster, "etcd").ok_or("no etcd pid")?;

    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cluster.kubeconfig)?,
        &Default::default(),
    )
    .await?;
    config.headers.push((
        HeaderName::from_static("user-agent"),
        HeaderValue::from_static(BENCH_UA),
    ));
    let client = kube::Client::try_from(config)?;
    let apiserver_version = client.apiserver_version().await?.git_version;
    println!(
        "control plane: kube-apiserver {apiserver_version} with etcd (cluster.sh), CRDs and the \
         chart's RBAC applied, in {:.1}s; the operator runs as {OPERATOR_USER}",
        control_plane_seconds.as_secs_f64()
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    Ok(Kube {
        cluster,
        operator_kubeconfig,
        client,
        apiserver_version,
        apiserver_pid,
        etcd_pid,
        control_plane_seconds,
    })
}

async fn run(args: Args) -> Result<()> {
    let total_started = Instant::now();
    let root = project_root();
    let (shadowsync_bin, explicit) = shadowsync_bin()?;
    if explicit {
        warn_if_stale(&shadowsync_bin, &[root.join("src")]);
    }
    let dir = tempfile::Builder::new()
        .prefix("shadowsync-bench-")
        .tempdir()?;
    let keep_logs = std::env::var_os("BENCH_KEEP_LOGS").is_some();
    let logs = if keep_logs {
        dir.keep()
    } else {
        dir.path().to_path_buf()
    };
    let (n, m) = (args.shadows, args.retained);
    let resources = n + m;
    println!(
        "converge: {n} ThingShadows, {m} RetainedMessages, operator concurrency {} per kind, {} cores, \
         binary {}{}",
        args.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        shadowsync_bin.display(),
        if keep_logs {
            format!(", logs in {}", logs.display())
        } else {
            String::new()
        }
    );

    // --- 1. The direct run ---------------------------------------------------------
    // The operator's client-side limits, from the same flags and environment it gets.
    let policy = operator_policy(&args.operator_args)?;
    let (raw_seconds, raw_unlimited_seconds) = {
        let (raw_server, raw_addr) = start_listening(
            "dataplane (direct run)",
            &shadowsync_bin,
            &["dataplane", "serve", "--listen", "127.0.0.1:0"],
            &logs.join("dataplane-direct.log"),
            &[],
        )?;
        let adapter = AwsDataPlane::connect(AwsOptions {
            endpoint_url: Some(format!("http://{raw_addr}")),
            region: Some("us-east-1".into()),
        })
        .await?;
        let dp: Arc<dyn DataPlane> = Arc::new(adapter);
        let limited_dp: Arc<dyn DataPlane> = Arc::new(Resilient::new(dp.clone(), policy));
        let raw = raw_run(limited_dp, n, m, args.concurrency, "").await?;
        let calls = Calls::fetch(&raw_addr)?;
        println!(
            "direct: {:.2}s for {} calls ({}), concurrency {} per kind, through the operator's \
             client limits ({} requests/s account-wide, {} per thing)",
            raw.as_secs_f64(),
            calls.total(),
            calls.describe(),
            args.concurrency,
            rate_text(policy.account_rate),
            rate_text(policy.thing_rate),
        );
        let unlimited = raw_run(dp.clone(), n, m, args.concurrency, "unlimited-").await?;
        println!(
            "direct without client limits: {:.2}s (what the local server sustains)",
            unlimited.as_secs_f64()
        );
        drop(raw_server);
        (raw, unlimited)
    };

    // --- 2. The control plane, the chart's RBAC, the data plane, the operator ----------
    let Kube {
        cluster,
        operator_kubeconfig,
        client,
        apiserver_version,
        apiserver_pid,
        etcd_pid,
        control_plane_seconds,
    } = start_kube(&root, &logs).await?;
    let mut audit = Audit::new(cluster.dir.join("audit.log"), client.clone());

    let (dataplane, dp_addr) = start_listening(
        "dataplane",
        &shadowsync_bin,
        &["dataplane", "serve", "--listen", "127.0.0.1:0"],
        &logs.join("dataplane.log"),
        &[],
    )?;

    let tracker = Arc::new(Tracker::default());
    let watches = [
        spawn_watch(
            client.clone(),
            api_resource("ThingShadow", SHADOW_PLURAL),
            true,
            tracker.clone(),
        ),
        spawn_watch(
            client.clone(),
            api_resource("RetainedMessage", RETAINED_PLURAL),
            false,
            tracker.clone(),
        ),
    ];

    audit.checkpoint().await?;
    let operator_log = logs.join("operator.log");
    let (mut operator, metrics_addr, _) = start_operator(
        &shadowsync_bin,
        &operator_kubeconfig,
        &dp_addr,
        &args,
        &operator_log,
        "shadowsync-bench-1",
    )?;
    // Start from an operator with synced (empty) caches, as a running install would be.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !operator_ready(&metrics_addr, 0, 0) {
        if Instant::now() > deadline {
            return Err(format!(
                "the operator did not become ready (log: {})",
                operator_log.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let startup_api = audit.checkpoint().await?;
    println!(
        "operator started (empty cluster); its requests: {}",
        startup_api.describe_operator()
    );
    Calls::reset(&dp_addr)?;
    let cpu_before = cpu_seconds(operator.pid()).unwrap_or(0.0);
    let apiserver_cpu_before = cpu_seconds(apiserver_pid).unwrap_or(0.0);
    let etcd_cpu_before = cpu_seconds(etcd_pid).unwrap_or(0.0);

    // --- 3. Convergence ----------------------------------------------------------------
    let started = Instant::now();
    let create_seconds = create_all(&client, &args).await?;
    let phase_deadline =
        Duration::from_secs(600).max(Duration::from_millis(200 * resources as u64));
    wait_ready(&tracker, (n, m), (1, 1), phase_deadline, "convergence").await?;
    let operator_seconds = started.elapsed();
    let converge_cpu = cpu_seconds(operator.pid()).unwrap_or(0.0) - cpu_before;
    let apiserver_cpu = cpu_seconds(apiserver_pid).unwrap_or(0.0) - apiserver_cpu_before;
    let etcd_cpu = cpu_seconds(etcd_pid).unwrap_or(0.0) - etcd_cpu_before;
    tokio::time::sleep(SETTLE).await;
    let converge_calls = Calls::fetch(&dp_addr)?;
    let converge_api = audit.checkpoint().await?;
    let calls_per_shadow_create = converge_calls.shadow_ops() as f64 / n as f64;
    let calls_per_retained_create = if m > 0 {
        converge_calls.retained_ops() as f64 / m as f64
    } else {
        0.0
    };
    let per_resource = |count: u64| count as f64 / resources as f64;
    let status_patches_per_resource = per_resource(converge_api.resource_writes());
    let operator_writes_per_resource = per_resource(converge_api.writes_but_events());
    let events_per_resource = per_resource(converge_api.event_writes());
    println!(
        "convergence: {:.2}s ({:.2}s to create all; CPU: operator {:.1}s, kube-apiserver {:.1}s, \
         etcd {:.1}s), data-plane calls {} ({})",
        operator_seconds.as_secs_f64(),
        create_seconds.as_secs_f64(),
        converge_cpu,
        apiserver_cpu,
        etcd_cpu,
        converge_calls.total(),
        converge_calls.describe()
    );
    println!(
        "  operator requests to the apiserver: {}",
        converge_api.describe_operator()
    );
    println!(
        "  = {} writes to the resources ({} status), {} Events, {} other writes; {} reads of \
         the resources; answers >= 400: {}",
        converge_api.resource_writes(),
        converge_api.status_writes(),
        converge_api.event_writes(),
        converge_api.writes_but_events() - converge_api.resource_writes(),
        converge_api.resource_reads(),
        converge_api.describe_errors()
    );
    println!(
        "  every request the apiserver answered, by verb: {:?} (the benchmark's own: {:?})",
        converge_api.by_verb(None),
        converge_api.by_verb(Some(Who::Bench))
    );
    let write_latency = converge_api.write_latency_ms();
    if let Some((median, p90)) = write_latency {
        println!(
            "  the apiserver answered the operator's writes in {median:.1} ms (median), \
             {p90:.1} ms (90th percentile)"
        );
    }

    // --- 4. One spec change on every ThingShadow ---------------------------------------
    Calls::reset(&dp_addr)?;
    audit.checkpoint().await?;
    let started = Instant::now();
    patch_all(
        &client,
        SHADOW_PLURAL,
        "ThingShadow",
        (0..n).map(thing).collect(),
        |name| {
            let i: usize = name
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            json!({"spec": {"desired": desired(i, 2)}})
        },
    )
    .await?;
    wait_ready(&tracker, (n, m), (2, 1), phase_deadline, "spec change").await?;
    let spec_change_seconds = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let change_calls = Calls::fetch(&dp_addr)?;
    let change_api = audit.checkpoint().await?;
    let writes_per_spec_change = change_calls.get("UpdateThingShadow") as f64 / n as f64;
    println!(
        "spec change: {:.2}s, data-plane calls {} ({}); operator requests to the apiserver: {}",
        spec_change_seconds.as_secs_f64(),
        change_calls.total(),
        change_calls.describe(),
        change_api.describe_operator()
    );

    // --- 5. Restart with everything in sync ---------------------------------------------
    let hwm_first = vm_hwm_kib(operator.pid()).unwrap_or(0);
    let exit_time = operator.terminate(Duration::from_secs(30))?;
    drop(operator);
    Calls::reset(&dp_addr)?;
    audit.checkpoint().await?;
    let (mut operator, metrics_addr, restarted) = start_operator(
        &shadowsync_bin,
        &operator_kubeconfig,
        &dp_addr,
        &args,
        &operator_log,
        "shadowsync-bench-2",
    )?;
    let deadline = restarted + phase_deadline;
    while !operator_ready(&metrics_addr, n, m) {
        if Instant::now() > deadline {
            return Err("the restarted operator did not count every resource Ready".into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let restart_seconds = restarted.elapsed();
    let hwm_restart_ready = vm_hwm_kib(operator.pid()).unwrap_or(0);
    tokio::time::sleep(SETTLE).await;
    let restart_calls = Calls::fetch(&dp_addr)?;
    let restart_api = audit.checkpoint().await?;
    let restart_writes = restart_calls.get("UpdateThingShadow");
    let restart_publishes = restart_calls.get("Publish");
    println!(
        "restart: old process exited {:.2}s after SIGTERM; new one Ready for all {:.2}s after start \
         (VmHWM {:.1} MiB then); within {}s more: data-plane calls {} ({})",
        exit_time.as_secs_f64(),
        restart_seconds.as_secs_f64(),
        mib(hwm_restart_ready),
        SETTLE.as_secs(),
        restart_calls.total(),
        restart_calls.describe(),
    );
    println!(
        "  operator requests to the apiserver: {} (list pages after the first: {}, streaming \
         lists: {})",
        restart_api.describe_operator(),
        restart_api.operator_continued_lists,
        restart_api.operator_streaming_lists,
    );

    // --- 6. Refresh spread ----------------------------------------------------------------
    let mut refresh = None;
    if !args.skip_refresh {
        let interval = args.refresh_seconds;
        let value = format!("{interval}s");
        let started = Instant::now();
        patch_all(
            &client,
            SHADOW_PLURAL,
            "ThingShadow",
            (0..n).map(thing).collect(),
            |_| json!({"spec": {"refreshInterval": value}}),
        )
        .await?;
        patch_all(
            &client,
            RETAINED_PLURAL,
            "RetainedMessage",
            (0..m).map(|i| format!("bench-config-{i:05}")).collect(),
            |_| json!({"spec": {"refreshInterval": value}}),
        )
        .await?;
        wait_ready(
            &tracker,
            (n, m),
            (3, 2),
            phase_deadline,
            "refreshInterval change",
        )
        .await?;
        let applied = started.elapsed();
        // One interval with everything in sync, sampled every second.
        let mut per_second = Vec::with_capacity(interval as usize);
        let window_start = Calls::fetch(&dp_addr)?;
        audit.checkpoint().await?;
        let mut previous = window_start.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        for _ in 0..interval {
            tick.tick().await;
            let now = Calls::fetch(&dp_addr)?;
            per_second.push(now.minus(&previous).reads());
            previous = now;
        }
        let window = previous.minus(&window_start);
        let window_api = audit.checkpoint().await?;
        let total_reads: u64 = per_second.iter().sum();
        let mean = total_reads as f64 / per_second.len().max(1) as f64;
        let peak = per_second.iter().copied().max().unwrap_or(0);
        let mut sorted = per_second.clone();
        sorted.sort_unstable();
        let peak_to_mean = if mean > 0.0 { peak as f64 / mean } else { 0.0 };
        println!(
            "refresh: refreshInterval {value} applied to all in {:.1}s; over the next {interval}s: \
             {total_reads} reads (mean {mean:.1}/s, busiest second {peak}, median {}, p90 {}), \
             writes {}, publishes {}; operator requests to the apiserver: {}",
            applied.as_secs_f64(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            window.get("UpdateThingShadow"),
            window.get("Publish"),
            window_api.describe_operator(),
        );
        println!("  reads per second: {per_second:?}");
        refresh = Some((interval, peak_to_mean, window_api.operator_total()));
    }

    let hwm_second = vm_hwm_kib(operator.pid()).unwrap_or(0);
    let peak_rss_mib = mib(hwm_first.max(hwm_second));
    let apiserver_rss_mib = mib(vm_hwm_kib(apiserver_pid).unwrap_or(0));
    let etcd_rss_mib = mib(vm_hwm_kib(etcd_pid).unwrap_or(0));
    println!(
        "memory: operator VmHWM {:.1} MiB (first process), {:.1} MiB (after restart; {:.1} MiB \
         when Ready); kube-apiserver {apiserver_rss_mib:.1} MiB, etcd {etcd_rss_mib:.1} MiB",
        mib(hwm_first),
        mib(hwm_second),
        mib(hwm_restart_ready),
    );
    operator.terminate(Duration::from_secs(30))?;
    drop(operator);
    for watch in &watches {
        watch.abort();
    }
    drop(dataplane);
    tokio::task::block_in_place(|| drop(cluster));

    let ratio = operator_seconds.as_secs_f64() / raw_seconds.as_secs_f64();
    let round = |x: f64, digits: i32| {
        let f = 10f64.powi(digits);
        (x * f).round() / f
    };
    let at_400 = args
        .max_rps
        .as_deref()
        .and_then(|r| r.parse::<f64>().ok())
        .is_some_and(|r| r == 400.0);
    let checks: Vec<(String, bool, String)> = {
        let mut c = vec![
            (
                format!(
                    "ratio <= 1.1{}",
                    if at_400 {
                        ""
                    } else {
                        " (target applies at --max-rps 400)"
                    }
                ),
                ratio <= 1.1,
                format!("{ratio:.3}"),
            ),
            (
                "calls_per_shadow_create <= 2.0".into(),
                calls_per_shadow_create <= 2.0,
                format!("{calls_per_shadow_create:.3}"),
            ),
            (
                "writes_per_spec_change = 1.0".into(),
                (writes_per_spec_change - 1.0).abs() < 1e-9,
                format!("{writes_per_spec_change:.3}"),
            ),
            (
                "restart_writes = 0".into(),
                restart_writes == 0,
                restart_writes.to_string(),
            ),
            (
                "restart_publishes = 0".into(),
                restart_publishes == 0,
                restart_publishes.to_string(),
            ),
            (
                "operator_writes_per_resource <= 2 (Events excluded)".into(),
                operator_writes_per_resource <= 2.0,
                format!("{operator_writes_per_resource:.3}"),
            ),
            (
                "events_per_resource <= 1".into(),
                events_per_resource <= 1.0,
                format!("{events_per_resource:.3}"),
            ),
            (
                "status_patches_per_resource <= 2".into(),
                status_patches_per_resource <= 2.0,
                format!("{status_patches_per_resource:.3}"),
            ),
        ];
        if let Some((_, p, _)) = refresh {
            c.push((
                "refresh_peak_to_mean <= 1.5".into(),
                p <= 1.5,
                format!("{p:.2}"),
            ));
        }
        c.push((
            format!(
                "peak_rss_mib <= 48{}",
                if n >= 10_000 {
                    ""
                } else {
                    " (target applies at 10000)"
                }
            ),
            peak_rss_mib <= 48.0,
            format!("{peak_rss_mib:.1}"),
        ));
        c
    };
    println!();
    println!("summary ({n} shadows, {m} retained, kube-apiserver {apiserver_version}):");
    println!(
        "  operator {:.2}s vs direct {:.2}s through the same client limits \
         (direct without limits {:.2}s)",
        operator_seconds.as_secs_f64(),
        raw_seconds.as_secs_f64(),
        raw_unlimited_seconds.as_secs_f64(),
    );
    println!("  retained calls per create: {calls_per_retained_create:.3}");
    for (what, ok, value) in &checks {
        println!("  {:4} {what}: {value}", if *ok { "PASS" } else { "FAIL" });
    }
    println!(
        "  total benchmark time {:.1}s",
        total_started.elapsed().as_secs_f64()
    );

    let mut out = json!({
        "shadows": n,
        "retained": m,
        "operator_seconds": round(operator_seconds.as_secs_f64(), 3),
        "raw_seconds": round(raw_seconds.as_secs_f64(), 3),
        "ratio": round(ratio, 3),
        "calls_per_shadow_create": round(calls_per_shadow_create, 4),
        "writes_per_spec_change": round(writes_per_spec_change, 4),
        "restart_seconds": round(restart_seconds.as_secs_f64(), 3),
        "restart_writes": restart_writes,
        "restart_publishes": restart_publishes,
        "peak_rss_mib": round(peak_rss_mib, 1),
        "status_patches_per_resource": round(status_patches_per_resource, 4),
        "refresh_peak_to_mean": refresh.map(|(_, p, _)| round(p, 3)),
        "operator_writes_per_resource": round(operator_writes_per_resource, 4),
        "events_per_resource": round(events_per_resource, 4),
        // Context for the figures above.
        "max_rps": args.max_rps.as_deref().map(|r| r.parse::<f64>().unwrap_or(0.0)),
        "raw_unlimited_seconds": round(raw_unlimited_seconds.as_secs_f64(), 3),
        "create_seconds": round(create_seconds.as_secs_f64(), 3),
        "calls_per_retained_create": round(calls_per_retained_create, 4),
        "status_writes_per_resource": round(per_resource(converge_api.status_writes()), 4),
        "operator_reads_per_resource": round(per_resource(converge_api.resource_reads()), 4),
        "operator_requests_converge": converge_api.by_verb(Some(Who::Operator)),
        "operator_errors_converge": converge_api
            .operator_errors
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect::<BTreeMap<_, _>>(),
        "apiserver_requests_converge": converge_api.by_verb(None),
        "operator_write_ms_median_converge": write_latency.map(|(m, _)| round(m, 2)),
        "operator_write_ms_p90_converge": write_latency.map(|(_, p)| round(p, 2)),
        "api_writes_per_spec_change": round(change_api.writes_but_events() as f64 / n as f64, 4),
        "events_per_spec_change": round(change_api.event_writes() as f64 / n as f64, 4),
        "spec_change_seconds": round(spec_change_seconds.as_secs_f64(), 3),
        "restart_api_writes": restart_api.writes_but_events(),
        "restart_events": restart_api.event_writes(),
        "restart_lists": restart_api.operator("list", SHADOW_PLURAL)
            + restart_api.operator("list", RETAINED_PLURAL),
        "restart_list_pages_continued": restart_api.operator_continued_lists,
        "restart_rss_mib_when_ready": round(mib(hwm_restart_ready), 1),
        "peak_rss_mib_first": round(mib(hwm_first), 1),
        "peak_rss_mib_restart": round(mib(hwm_second), 1),
        "refresh_interval_seconds": refresh.map(|(i, _, _)| i),
        "refresh_operator_api_requests": refresh.map(|(_, _, r)| r),
        "operator_cpu_seconds_converge": round(converge_cpu, 2),
        "apiserver_cpu_seconds_converge": round(apiserver_cpu, 2),
        "etcd_cpu_seconds_converge": round(etcd_cpu, 2),
        "apiserver_peak_rss_mib": round(apiserver_rss_mib, 1),
        "etcd_peak_rss_mib": round(etcd_rss_mib, 1),
        "control_plane_seconds": round(control_plane_seconds.as_secs_f64(), 1),
        "kube_apiserver": apiserver_version,
        "concurrency": args.concurrency,
    });
    if !args.operator_args.is_empty() {
        out["operator_args"] = json!(args.operator_args);
    }
    println!("{out}");
    Ok(())
}
