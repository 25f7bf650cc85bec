//! Secrets and exposure: what must never leave the process.
//!
//! - A payload read from a Secret (`secretKeyRef`) goes to the publish and nowhere else:
//!   not into the operator's logs (trace level, text and JSON formats), the resource's
//!   status, Events, `/metrics`, nor the output of `shadowsync diff`.
//! - AWS credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) are
//!   never logged, by the operator, the CLI or the local data plane, even at trace level
//!   with the AWS adapter pointed at `shadowsync dataplane serve`.
//! - `shadowsync dataplane serve` listens on loopback unless `--allow-remote` is given.
//!
//! Each secret and credential is a distinctive string, looked for as it is and in base64
//! (how a Secret travels in JSON and how a payload travels on the wire). The operator
//! runs as the chart's ServiceAccount, whose token must not show either. Run with
//! `cargo test --test exposure -- --nocapture`.

#[path = "e2e/mod.rs"]
mod e2e;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e::*;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;
use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::DataPlane;

const SECRETS: [&str; 3] = [
    "pAyl0ad-from-secret-7Q2W-first",
    "pAyl0ad-from-secret-7Q2W-rotated",
    "pAyl0ad-from-secret-7Q2W-third",
];
const ACCESS_KEY_ID: &str = "AKIAEXPOSURE7Q2W3E4R";
const SECRET_ACCESS_KEY: &str = "exposure/Secret+Access+Key/7Q2W3E4R5T6Y7U8I9O0P";
const SESSION_TOKEN: &str = "exposure-session-token-7Q2W3E4R5T6Y7U8I9O0P-ZXCV";

/// Every form in which a value must not show up.
fn forms(value: &str) -> Vec<String> {
    let standard = base64::engine::general_purpose::STANDARD.encode(value);
    let unpadded = standard.trim_end_matches('=').to_string();
    vec![value.to_string(), standard, unpadded]
}

/// The places where `text` shows any of `values`, in any form.
fn leaks(what: &str, text: &str, values: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for value in values {
        for form in forms(value) {
            if text.contains(&form) {
                let at = text.find(&form).unwrap_or_default();
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(120)
                    .map_or(0, |(i, _)| i);
                found.push(format!(
                    "{what} shows {value:?} (as {form:?}): ...{}...",
                    &text[start..(at + form.len()).min(text.len())]
                ));
            }
        }
    }
    found
}

/// A process whose output goes to a file, killed when dropped.
struct Logged {
    child: Option<Child>,
    log: PathBuf,
}

impl Logged {
    fn spawn(args: &[&str], envs: &[(&str, &str)], log: PathBuf) -> Logged {
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_shadowsync"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file);
        for (key, _) in std::env::vars() {
            if key.starts_with("SHADOWSYNC_") || key.starts_with("AWS_") || key == "RUST_LOG" {
                command.env_remove(&key);
            }
        }
        command.envs(envs.iter().copied());
        let child = command.spawn().expect("start shadowsync");
        Logged {
            child: Some(child),
            log,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).to_string()
    }

    /// Waits for a line starting with `prefix` and returns the rest of it.
    fn wait_for(&mut self, prefix: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self.text().lines().find_map(|l| l.strip_prefix(prefix)) {
                return line.trim().to_string();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("exited ({status}) before {prefix:?}:\n{}", self.text());
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no {prefix:?} within {DEADLINE:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for the exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no exit 20 s after SIGTERM:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn credentials_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN),
        ("AWS_REGION", "eu-central-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", "trace"),
    ]
}

/// The bearer token in the operator's kubeconfig.
fn service_account_token(s: &Stack) -> String {
    let text = std::fs::read_to_string(&s.operator_kubeconfig).expect("operator kubeconfig");
    let token = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token in the operator's kubeconfig");
    assert!(token.len() > 100, "a ServiceAccount JWT");
    token.to_string()
}

/// `shadowsync run` at trace level with the distinctive credentials; returns it and the
/// URL of its metrics endpoint once `/readyz` answers 200.
async fn start_operator(s: &Stack, dp_url: &str, format: &str, log: PathBuf) -> (Logged, String) {
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    // The chart's ServiceAccount token, whose bearer header must not be logged either.
    let kubeconfig = s.operator_kubeconfig.display().to_string();
    let mut envs = credentials_env();
    envs.push(("KUBECONFIG", &kubeconfig));
    envs.push(("POD_NAME", "exposure"));
    envs.push(("POD_NAMESPACE", OPERATOR_NAMESPACE));
    let operator = Logged::spawn(
        &[
            "run",
            "--endpoint-url",
            dp_url,
            "--metrics-addr",
            &metrics_addr,
            "--log-format",
            format,
        ],
        &envs,
        log,
    );
    let url = format!("http://{metrics_addr}");
    eventually("the operator's /readyz", DEADLINE, async || {
        match http("GET", &format!("{url}/readyz"), b"").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}\n{}", operator.text())),
        }
    })
    .await;
    (operator, url)
}

async fn put_secret(s: &Stack, namespace: &str, value: &str) {
    s.put_core::<Secret>(
        namespace,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "device-token", "namespace": namespace},
               "stringData": {"token": value}}),
    )
    .await;
}

async fn wait_published(plane: &AwsDataPlane, topic: &str, value: &str) {
    eventually(
        &format!("{value:?} published on {topic}"),
        DEADLINE,
        async || match plane.get_retained_message(topic).await {
            Ok(m) if &m.payload[..] == value.as_bytes() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

/// Runs the CLI with the distinctive credentials at trace level; returns its exit code and
/// its whole output.
fn cli(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shadowsync"));
    command.current_dir(dir).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("SHADOWSYNC_") || key.starts_with("AWS_") || key == "RUST_LOG" {
            command.env_remove(&key);
        }
    }
    command.envs(credentials_env());
    let out = command.output().expect("run shadowsync");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_payloads_and_credentials_never_leave_the_process() {
    let s = Stack::without_operator("exposure").await;
    let ns = "exposure";
    let topic = "exposure/device/token";
    s.create_namespace(ns).await;

    // A data plane of our own at trace level: it sees every signed request.
    let mut dp = Logged::spawn(
        &["dataplane", "serve", "--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "trace")],
        s.dir.join("exposure-dataplane.log"),
    );
    let dp_url = dp.wait_for("listening on ");
    let plane = AwsDataPlane::connect(AwsOptions {
        endpoint_url: Some(dp_url.clone()),
        region: Some("us-east-1".into()),
    })
    .await
    .expect("an SDK client");

    put_secret(&s, ns, SECRETS[0]).await;
    s.create(
        Kind::Retained,
        ns,
        "token",
        json!({"topic": topic, "payload": {"secretKeyRef": {"name": "device-token", "key": "token"}},
               "qos": 1, "refreshInterval": "2s"}),
    )
    .await;
    s.create(
        Kind::Shadow,
        ns,
        "lamp",
        json!({"thingName": "exposure-lamp", "desired": {"power": "on"}}),
    )
    .await;

    // Text logs: the first value, then a rotation while the operator runs.
    let (mut text_op, text_metrics) =
        start_operator(&s, &dp_url, "text", s.dir.join("operator-text.log")).await;
    s.wait_ready(Kind::Retained, ns, "token").await;
    s.wait_ready(Kind::Shadow, ns, "lamp").await;
    wait_published(&plane, topic, SECRETS[0]).await;
    put_secret(&s, ns, SECRETS[1]).await;
    wait_published(&plane, topic, SECRETS[1]).await;
    let (code, text_metrics_body) = http("GET", &format!("{text_metrics}/metrics"), b"")
        .await
        .expect("metrics");
    assert_eq!(code, 200);
    assert!(
        text_metrics_body.contains("shadowsync_"),
        "metrics look empty: {text_metrics_body}"
    );
    text_op.stop();

    // JSON logs: a restart and another rotation.
    let (mut json_op, json_metrics) =
        start_operator(&s, &dp_url, "json", s.dir.join("operator-json.log")).await;
    put_secret(&s, ns, SECRETS[2]).await;
    wait_published(&plane, topic, SECRETS[2]).await;
    let (code, json_metrics_body) = http("GET", &format!("{json_metrics}/metrics"), b"")
        .await
        .expect("metrics");
    assert_eq!(code, 200);
    json_op.stop();

    // The CLI against the same data plane, whose retained message now holds the secret.
    let cli_dir = s.dir.join("cli");
    std::fs::create_dir_all(&cli_dir).expect("cli dir");
    std::fs::write(
        cli_dir.join("from-secret.yaml"),
        format!(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\n\
             metadata: {{name: token, namespace: {ns}}}\n\
             spec: {{topic: {topic}, payload: {{secretKeyRef: {{name: device-token, key: token}}}}, qos: 1}}\n"
        ),
    )
    .expect("manifest");
    std::fs::write(
        cli_dir.join("inline.yaml"),
        format!(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\n\
             metadata: {{name: token, namespace: {ns}}}\n\
             spec: {{topic: {topic}, payload: {{text: replaced}}, qos: 1}}\n\
             ---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
             metadata: {{name: lamp, namespace: {ns}}}\n\
             spec: {{thingName: exposure-lamp, desired: {{power: 'off'}}}}\n"
        ),
    )
    .expect("manifest");
    let endpoint = ["--endpoint-url", dp_url.as_str()];
    let diff_secret = cli(
        &cli_dir,
        &[&["diff", "-f", "from-secret.yaml"][..], &endpoint].concat(),
    );
    // Offline, a Secret cannot be read: diff says so instead of guessing.
    assert_eq!(diff_secret.0, Some(2), "{}", diff_secret.1);
    assert!(
        diff_secret
            .1
            .contains("spec.payload.secretKeyRef: needs a cluster"),
        "{}",
        diff_secret.1
    );
    // A manifest that would replace the secret payload: diff shows that the payload
    // changes, never what it was.
    let diff_inline = cli(
        &cli_dir,
        &[&["diff", "-f", "inline.yaml"][..], &endpoint].concat(),
    );
    assert_eq!(diff_inline.0, Some(1), "{}", diff_inline.1);
    assert!(
        diff_inline.1.contains("payload"),
        "diff names the payload change: {}",
        diff_inline.1
    );
    let applied = cli(
        &cli_dir,
        &[&["apply", "-f", "inline.yaml", "-o", "yaml"][..], &endpoint].concat(),
    );
    assert_eq!(applied.0, Some(0), "{}", applied.1);
    dp.stop();

    // Kubernetes: every status and every Event of the namespace.
    let status = format!(
        "{}\n{}",
        s.get(Kind::Retained, ns, "token").await.expect("token")["status"],
        s.get(Kind::Shadow, ns, "lamp").await.expect("lamp")["status"]
    );
    let retained = s.get(Kind::Retained, ns, "token").await.expect("token");
    assert_eq!(
        retained["status"]["payloadSize"],
        json!(SECRETS[2].len()),
        "the status describes the secret payload without showing it"
    );
    let events: Vec<String> = {
        let api: kube::Api<k8s_openapi::api::core::v1::Event> =
            kube::Api::namespaced(s.client.clone(), ns);
        api.list(&Default::default())
            .await
            .expect("events")
            .items
            .iter()
            .map(|e| serde_json::to_string(e).expect("json"))
            .collect()
    };
    assert!(!events.is_empty(), "the operator recorded events");

    let text_log = text_op.text();
    let json_log = json_op.text();
    assert!(
        text_log.lines().count() > 100 && text_log.contains("TRACE"),
        "the text log is at trace level"
    );
    assert!(
        json_log.contains("\"level\":\"TRACE\""),
        "the JSON log is at trace level"
    );
    // The trace logs did see the publishes: only their payloads are missing.
    assert!(text_log.contains(topic) || text_log.contains("exposure%2Fdevice%2Ftoken"));

    let token = service_account_token(&s);
    let credentials = [
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        SESSION_TOKEN,
        token.as_str(),
    ];
    let mut found = Vec::new();
    for (what, text) in [
        ("the operator's text log", text_log.as_str()),
        ("the operator's JSON log", json_log.as_str()),
        ("the data plane's log", dp.text().as_str()),
        ("diff of a secretKeyRef manifest", diff_secret.1.as_str()),
        ("diff of an inline manifest", diff_inline.1.as_str()),
        ("apply", applied.1.as_str()),
    ] {
        found.extend(leaks(what, text, &SECRETS));
        found.extend(leaks(what, text, &credentials));
    }
    for (what, text) in [
        ("status", status.as_str()),
        ("events", &events.join("\n")),
        ("/metrics (text run)", text_metrics_body.as_str()),
        ("/metrics (JSON run)", json_metrics_body.as_str()),
    ] {
        found.extend(leaks(what, text, &SECRETS));
        found.extend(leaks(what, text, &credentials));
    }
    say(&format!(
        "exposure: searched {} log lines (text {}, JSON {}, data plane {}), {} events, 2 /metrics \
         pages and 3 CLI runs for 3 secret payloads and 4 credentials (the AWS keys and the \
         ServiceAccount token, each as is and in base64): {} found",
        text_log.lines().count() + json_log.lines().count() + dp.text().lines().count(),
        text_log.lines().count(),
        json_log.lines().count(),
        dp.text().lines().count(),
        events.len(),
        found.len()
    ));
    assert!(found.is_empty(), "{}", found.join("\n\n"));
}

/// `dataplane serve` binds loopback by default and anything else only with --allow-remote.
#[test]
fn dataplane_serve_is_loopback_unless_allow_remote() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("exposure-serve");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");

    // The default address, from the binary's own help.
    let help = Command::new(env!("CARGO_BIN_EXE_shadowsync"))
        .args(["dataplane", "serve", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(
        help.contains("[default: 127.0.0.1:8443]"),
        "the default --listen is loopback: {help}"
    );

    // Without --listen: loopback (or, when 8443 is taken, an error, never another address).
    let mut default = Logged::spawn(
        &["dataplane", "serve"],
        &[("RUST_LOG", "info")],
        dir.join("default.log"),
    );
    let started = Instant::now();
    loop {
        let text = default.text();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.strip_prefix("listening on http://"))
        {
            assert_eq!(addr.trim(), "127.0.0.1:8443");
            break;
        }
        let exited = default
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if exited.is_some() {
            assert!(text.contains("127.0.0.1:8443"), "{text}");
            say("exposure: port 8443 is taken here; the default address was still loopback");
            break;
        }
        assert!(started.elapsed() < DEADLINE, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(default);

    // Non-loopback addresses and names are refused, with the flag named.
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.10:0"] {
        let out = Command::new(env!("CARGO_BIN_EXE_shadowsync"))
            .args(["dataplane", "serve", "--listen", listen])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{listen}: started");
        assert!(out.stdout.is_empty(), "{listen}: printed an address");
        assert!(stderr.contains("--allow-remote"), "{listen}: {stderr}");
    }

    // Loopback names are fine; --allow-remote opens the others.
    let mut local = Logged::spawn(
        &["dataplane", "serve", "--listen", "localhost:0"],
        &[("RUST_LOG", "info")],
        dir.join("localhost.log"),
    );
    let addr = local.wait_for("listening on http://");
    let ip: std::net::SocketAddr = addr.parse().expect("an address");
    assert!(ip.ip().is_loopback(), "{addr}");
    drop(local);

    let mut remote = Logged::spawn(
        &[
            "dataplane",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--allow-remote",
        ],
        &[("RUST_LOG", "info")],
        dir.join("remote.log"),
    );
    let addr = remote.wait_for("listening on http://");
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    let text = remote.text();
    assert!(
        text.to_ascii_lowercase().contains("any credentials"),
        "a remote listener warns that it accepts any credentials: {text}"
    );
    remote.stop();
}
