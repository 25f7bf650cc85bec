//! The bad-input corpus (`tests/invalid/`, see its README): every manifest there is
//! checked twice.
//!
//! - Kubernetes: against a real kube-apiserver, with the real operator running. A case the
//!   CRD schema can refuse must be refused at admission (422, or 400 for an unknown field
//!   under `fieldValidation=Strict`) with a message naming the field. Any other case is
//!   created, and the operator must mark it `Stalled` with a message naming the field,
//!   emit a Warning Event, and make no data-plane call for it (counted at the data plane).
//! - `shadowsync apply -f`: the real binary against a `shadowsync dataplane serve` of its
//!   own must exit with the code the case states, name the field and the rule, and write
//!   nothing; for the cases the operator refuses, with the very message the operator put
//!   in the `Stalled` condition. `shadowsync diff` must refuse it too (exit 2).
//!
//! ThingShadowSet cases are checked at the apiserver and by `apply` and `diff` in the
//! same way ([`APPLY_KINDS`] lists the kinds `apply` reads; a kind missing from it would
//! be checked only for a refusal of the whole file naming the kind, with no call, and
//! against `api::validate` and the API types).
//!
//! Run with `cargo test --test invalid_corpus -- --nocapture`
//! to see the table of cases and the count line.

#[path = "e2e/mod.rs"]
mod e2e;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use e2e::*;
use serde_json::{json, Value};
use shadowsync::api::validate::{validate_thing_shadow_set, ShadowLimits};
use shadowsync::api::ThingShadowSet;
use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::server::{Operation, StatsSnapshot};
use shadowsync::dataplane::DataPlane;
use shadowsync::planner::fleet::naming::child_name;

const NAMESPACE: &str = "default";

/// How long a set's setup child may take to be Ready (see the setup loop).
const CHILD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The kinds `shadowsync apply` reads: their cases go through the CLI checks.
const APPLY_KINDS: [&str; 3] = ["ThingShadow", "RetainedMessage", "ThingShadowSet"];

/// Where a case is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// By the CRD schema (OpenAPI or CEL) when the apiserver admits the object.
    Admission,
    /// By the operator: `Stalled=True`, a Warning Event, no data-plane call.
    Operator,
}

/// What has to exist before the case is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    None,
    /// The first document is a valid earlier version of the same resource; the case is
    /// an update of it.
    Prior,
    /// The first document is another, valid resource that owns the same target.
    Owner,
    /// The thing's shadow already holds the `cloud` document.
    Cloud,
}

/// One file of the corpus: its header and documents.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    path: PathBuf,
    refused: Refused,
    field: String,
    /// Fragment of the apiserver's refusal (admission cases).
    admission: Option<String>,
    /// `Stalled` reason (operator cases).
    reason: Option<String>,
    /// Fragment of the rule text, in the operator's and apply's message.
    message: String,
    /// Where `apply` sees the case when it differs (`# apply-field:`, `# apply-message:`):
    /// a set's template change reaches `apply` as a change of each child.
    apply_field: Option<String>,
    apply_message: Option<String>,
    apply_exit: i32,
    setup: Setup,
    cloud: Option<Value>,
    /// Data-plane calls the operator may make for it: none, or one shadow read.
    reads: u64,
    /// The setup document (prior version or owner), if any.
    first: Option<Value>,
    /// The document under test.
    doc: Value,
}

impl Case {
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    fn resource_name(&self) -> String {
        self.doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn plural(&self) -> &'static str {
        match self.kind() {
            "ThingShadow" => "thingshadows",
            "ThingShadowSet" => "thingshadowsets",
            _ => "retainedmessages",
        }
    }

    /// Whether `shadowsync apply` reads this kind.
    fn applied(&self) -> bool {
        APPLY_KINDS.contains(&self.kind())
    }

    fn e2e_kind(&self) -> Kind {
        match self.kind() {
            "ThingShadow" => Kind::Shadow,
            _ => Kind::Retained,
        }
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid")
}

/// Reads every `*.yaml` of the corpus; panics on a malformed header.
fn load_corpus() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/invalid")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| parse_case(p)).collect()
}

fn parse_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).expect("a corpus file");
    let file = path.display().to_string();
    let mut header = BTreeMap::new();
    for line in text.lines().take_while(|l| *l != "---") {
        if let Some((key, value)) = line.strip_prefix("# ").and_then(|l| l.split_once(": ")) {
            header.insert(key.to_string(), value.to_string());
        }
    }
    let get = |key: &str| -> String {
        header
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{file}: the header has no `# {key}:` line"))
    };
    let mut docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let yaml: serde_yaml::Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
            serde_json::to_value(yaml).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect();
    let setup = match get("setup").as_str() {
        "none" => Setup::None,
        "prior" => Setup::Prior,
        "owner" => Setup::Owner,
        "cloud" => Setup::Cloud,
        other => panic!("{file}: unknown setup {other:?}"),
    };
    let refused = match get("refused").as_str() {
        "admission" => Refused::Admission,
        "operator" => Refused::Operator,
        other => panic!("{file}: unknown refused {other:?}"),
    };
    let expected_docs = if matches!(setup, Setup::Prior | Setup::Owner) {
        2
    } else {
        1
    };
    assert_eq!(docs.len(), expected_docs, "{file}: documents");
    let doc = docs.pop().expect("the case document");
    let first = docs.pop();
    let name = get("case");
    assert!(
        !get("why").is_empty(),
        "{file}: `# why:` says what is wrong"
    );
    assert_eq!(
        path.file_stem().and_then(|s| s.to_str()),
        Some(name.as_str()),
        "{file}: `# case:` is the file name"
    );
    let case = Case {
        name,
        path: path.to_path_buf(),
        refused,
        field: get("field"),
        admission: header.get("admission").cloned(),
        reason: header.get("reason").cloned(),
        message: get("message"),
        apply_field: header.get("apply-field").cloned(),
        apply_message: header.get("apply-message").cloned(),
        apply_exit: get("apply-exit").parse().expect("apply-exit is a number"),
        setup,
        cloud: header
            .get("cloud")
            .map(|c| serde_json::from_str(c).expect("cloud is JSON")),
        reads: match header.get("calls").map(String::as_str) {
            None | Some("none") => 0,
            Some("read") => 1,
            Some(other) => panic!("{file}: unknown calls {other:?}"),
        },
        first,
        doc,
    };
    match case.refused {
        Refused::Admission => assert!(case.admission.is_some(), "{file}: needs `# admission:`"),
        Refused::Operator => assert!(case.reason.is_some(), "{file}: needs `# reason:`"),
    }
    assert_eq!(case.setup == Setup::Cloud, case.cloud.is_some(), "{file}");
    case
}

/// What one case did.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// The apiserver's answer to the create (or update) and its message.
    admission_code: u16,
    admission_message: String,
    /// The operator's `Stalled` message.
    operator_message: String,
    apply_exit: Option<i32>,
    apply_output: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_manifest_is_refused_by_the_cluster_and_by_apply() {
    let started = Instant::now();
    let cases = load_corpus();
    assert!(
        cases.len() >= 40,
        "the corpus has {} cases, fewer than 40",
        cases.len()
    );

    let s = Stack::start("invalid-corpus").await;
    let (cli_dp, cli_dp_url) = s.spawn_dataplane("cli-dataplane");
    let cli_plane = AwsDataPlane::connect(AwsOptions {
        endpoint_url: Some(cli_dp_url.clone()),
        region: Some("us-east-1".into()),
    })
    .await
    .expect("an AWS SDK client for the CLI's data plane");

    // Shadows that exist before the case, in both data planes.
    for case in cases.iter().filter(|c| c.setup == Setup::Cloud) {
        let thing = case.doc["spec"]["thingName"].as_str().expect("thingName");
        let shadow = case.doc["spec"]["shadowName"].as_str();
        let body = case.cloud.clone().expect("cloud").to_string();
        for plane in [&s.plane, &cli_plane] {
            plane
                .update_thing_shadow(thing, shadow, body.clone().into())
                .await
                .unwrap_or_else(|e| panic!("{}: cloud setup: {e}", case.name));
        }
    }

    let (cluster, cli) = tokio::join!(cluster_side(&s, &cases), cli_side(&cli_dp_url, &cases));
    drop(cli_dp);

    let mut seen: Vec<Seen> = cluster;
    for (seen, (exit, output)) in seen.iter_mut().zip(cli) {
        seen.apply_exit = exit;
        seen.apply_output = output;
    }

    // apply: the stated exit, the field and the rule named, the operator's very message.
    let mut failures = Vec::new();
    for (case, seen) in cases.iter().zip(&seen) {
        let out = &seen.apply_output;
        if !case.applied() {
            // cli_side checked that apply refuses the file whole; the header against the
            // rules apply will run:
            if let Err(why) = library_side(case) {
                failures.push(format!("{}: {why}", case.name));
            }
            continue;
        }
        if seen.apply_exit != Some(case.apply_exit) {
            failures.push(format!(
                "{}: apply exited {:?}, expected {}\n{out}",
                case.name, seen.apply_exit, case.apply_exit
            ));
        }
        let field = case.apply_field.as_ref().unwrap_or(&case.field);
        let message = case.apply_message.as_ref().unwrap_or(&case.message);
        if !out.contains(field) || !out.contains(message) {
            failures.push(format!(
                "{}: apply does not name {field:?} with {message:?}\n{out}",
                case.name
            ));
        }
        if case.refused == Refused::Operator && !out.contains(&seen.operator_message) {
            failures.push(format!(
                "{}: apply and the operator say different things\noperator: {}\napply: {out}",
                case.name, seen.operator_message
            ));
        }
    }

    print_table(&cases, &seen);
    let admission = cases
        .iter()
        .filter(|c| c.refused == Refused::Admission)
        .count();
    let stalled = cases.len() - admission;
    let by_apply = seen
        .iter()
        .filter(|s| s.apply_exit.is_some_and(|code| code != 0))
        .count();
    say(&format!(
        "invalid corpus: {} cases, {admission} refused at admission, {stalled} stalled by the \
         operator, {by_apply} refused by apply ({:.1} s)",
        cases.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Creates every case in the cluster and checks where and how it is refused.
async fn cluster_side(s: &Stack, cases: &[Case]) -> Vec<Seen> {
    // Setup resources first, all Ready, so that their calls are done before counting.
    for case in cases {
        if let Some(first) = &case.first {
            let (code, body) = post(s, case, first).await;
            assert_eq!(code, 201, "{}: setup document: {body}", case.name);
        }
    }
    for case in cases {
        let Some(first) = &case.first else { continue };
        let name = first["metadata"]["name"].as_str().expect("a name");
        match case.kind() {
            "ThingShadow" | "RetainedMessage" => {
                s.wait_ready(case.e2e_kind(), NAMESPACE, name).await;
            }
            // A set's setup: its children, Ready (their writes done before counting).
            _ => {
                for thing in first["spec"]["selector"]["things"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let child = child_name(name, thing.as_str().expect("a thing name"));
                    // Up to 30 s after the CRDs are installed the apiserver refuses
                    // children that block their owner's deletion (its RESTMapper is
                    // refreshed every 30 s); the set retries.
                    eventually(
                        &format!("the set's child {child} Ready"),
                        CHILD_DEADLINE,
                        async || match s.try_get(Kind::Shadow, NAMESPACE, &child).await? {
                            Some(obj)
                                if condition_is(&obj, "Ready", "True") && is_current(&obj) =>
                            {
                                Ok(())
                            }
                            other => Err(format!("{other:?}")),
                        },
                    )
                    .await;
                }
            }
        }
    }
    let before = s.stats().await;

    let mut seen = vec![Seen::default(); cases.len()];
    let mut failures = Vec::new();
    for (case, seen) in cases.iter().zip(seen.iter_mut()) {
        let (code, body) = if case.setup == Setup::Prior {
            put(s, case).await
        } else {
            post(s, case, &case.doc).await
        };
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(body.clone());
        seen.admission_code = code;
        seen.admission_message = message.clone();
        match case.refused {
            Refused::Admission => {
                let expected = if case.admission.as_deref() == Some("unknown field") {
                    400
                } else {
                    422
                };
                let fragment = case.admission.as_deref().unwrap_or_default();
                if code != expected || !message.contains(&case.field) || !message.contains(fragment)
                {
                    failures.push(format!(
                        "{}: expected {expected} naming {:?} with {fragment:?}, got {code}: {message}",
                        case.name, case.field
                    ));
                }
            }
            Refused::Operator => {
                if code != 201 && code != 200 {
                    failures.push(format!(
                        "{}: the schema should admit it (the operator refuses it), got {code}: {message}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    for (case, seen) in cases.iter().zip(seen.iter_mut()) {
        if case.refused != Refused::Operator {
            continue;
        }
        let reason = case.reason.clone().unwrap_or_default();
        let name = case.resource_name();
        let obj = s
            .wait_status(
                case.e2e_kind(),
                NAMESPACE,
                &name,
                &format!("Stalled=True reason {reason}"),
                |o| {
                    condition_is(o, "Stalled", "True")
                        && condition_reason(o, "Stalled").as_deref() == Some(reason.as_str())
                        && is_current(o)
                },
            )
            .await;
        assert!(condition_is(&obj, "Ready", "False"), "{}", case.name);
        let message = condition(&obj, "Stalled").expect("Stalled")["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains(&case.field) && message.contains(&case.message),
            "{}: the Stalled message does not name {:?} with {:?}: {message}",
            case.name,
            case.field,
            case.message
        );
        let event = s.wait_event(NAMESPACE, &name, "Warning", &reason).await;
        let note = event.message.unwrap_or_default();
        assert!(
            note.contains(&case.field),
            "{}: the event does not name {}: {note}",
            case.name,
            case.field
        );
        seen.operator_message = message;
    }

    // No call for any of them: no write at all, and only the reads the cases state.
    let after = s.stats().await;
    let reads: u64 = cases.iter().map(|c| c.reads).sum();
    for op in [
        Operation::UpdateThingShadow,
        Operation::DeleteThingShadow,
        Operation::Publish,
        Operation::GetRetainedMessage,
    ] {
        assert_eq!(
            after.since(&before, op),
            0,
            "{op:?} calls for refused resources: {:?}",
            after.0
        );
    }
    assert_eq!(
        after.since(&before, Operation::GetThingShadow),
        reads,
        "shadow reads: only the cases that must read the shadow to know it is too large"
    );
    assert_eq!(
        after.total() - before.total(),
        reads,
        "data-plane calls for refused resources: {:?}",
        after.0
    );
    seen
}

async fn post(s: &Stack, case: &Case, doc: &Value) -> (u16, String) {
    let uri = format!(
        "/apis/iot.shadowsync.dev/v1alpha1/namespaces/{NAMESPACE}/{}?fieldValidation=Strict",
        case.plural()
    );
    raw(s, ::http::Method::POST, &uri, doc).await
}

/// An update of the prior version to the case document (what `kubectl apply` sends as a
/// patch, sent here as a whole object).
async fn put(s: &Stack, case: &Case) -> (u16, String) {
    let name = case.resource_name();
    let uri = format!(
        "/apis/iot.shadowsync.dev/v1alpha1/namespaces/{NAMESPACE}/{}/{name}",
        case.plural()
    );
    let (code, body) = send(s, ::http::Method::GET, &uri, None).await;
    assert_eq!(
        code, 200,
        "{}: the prior version is missing: {body}",
        case.name
    );
    let stored: Value = serde_json::from_str(&body).expect("the stored object");
    let mut doc = case.doc.clone();
    doc["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
    doc["metadata"]["namespace"] = json!(NAMESPACE);
    let uri = format!(
        "/apis/iot.shadowsync.dev/v1alpha1/namespaces/{NAMESPACE}/{}/{name}?fieldValidation=Strict",
        case.plural()
    );
    raw(s, ::http::Method::PUT, &uri, &doc).await
}

/// Sends `doc` as it is (the typed API would not build some of the cases) and returns the
/// apiserver's status code and body.
async fn raw(s: &Stack, method: ::http::Method, uri: &str, doc: &Value) -> (u16, String) {
    send(s, method, uri, Some(doc)).await
}

async fn send(s: &Stack, method: ::http::Method, uri: &str, doc: Option<&Value>) -> (u16, String) {
    let body = doc.map(|d| d.to_string().into_bytes()).unwrap_or_default();
    let request = ::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body))
        .expect("a request");
    let response = s
        .client
        .send(request)
        .await
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    (code, String::from_utf8_lossy(&body).to_string())
}

/// Runs `shadowsync diff` (which must exit 2 naming the field) and `shadowsync apply` on
/// every case against a data plane of its own; returns each apply's exit code and output.
/// Setup documents are applied in a run of their own first.
async fn cli_side(dp_url: &str, cases: &[Case]) -> Vec<(Option<i32>, String)> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e/invalid-corpus/cli");
    let _ = std::fs::remove_dir_all(&root);
    let mut results = Vec::new();
    for case in cases {
        let dir = root.join(&case.name);
        std::fs::create_dir_all(&dir).expect("a directory per case");
        if !case.applied() {
            // apply does not read the kind: the whole file is refused, naming the kind,
            // before any call (nothing of a set is ever half-applied).
            let refusal = format!("kind {:?} is not a shadowsync kind", case.kind());
            let before = dp_stats(dp_url).await;
            let mut last = (None, String::new());
            for verb in ["diff", "apply"] {
                let (code, out) = run(&dir, dp_url, verb, &case.path).await;
                assert!(
                    code == Some(2)
                        && out.contains(&refusal)
                        && out.contains("nothing was written"),
                    "{}: {verb} exited {code:?} without refusing the kind\n{out}",
                    case.name
                );
                last = (code, out);
            }
            let after = dp_stats(dp_url).await;
            assert_eq!(
                after.totals.calls, before.totals.calls,
                "{}: a data-plane call for a kind apply does not read",
                case.name
            );
            results.push(last);
            continue;
        }
        let target = match case.setup {
            Setup::None | Setup::Cloud | Setup::Owner => case.path.clone(),
            // The file holds both versions, as two documents of one name, which apply
            // refuses as a whole; the change is applied alone after the first version.
            Setup::Prior => {
                let path = dir.join("change.yaml");
                // JSON (which is YAML) says exactly what the case means: a plain YAML
                // scalar such as on would be read as kubectl reads it.
                std::fs::write(
                    &path,
                    serde_json::to_string_pretty(&case.doc).expect("json"),
                )
                .expect("write the change");
                path
            }
        };
        if let Some(first) = &case.first {
            let path = dir.join("first.yaml");
            std::fs::write(&path, serde_json::to_string_pretty(first).expect("json"))
                .expect("write the first version");
            let (code, out) = run(&dir, dp_url, "apply", &path).await;
            assert_eq!(
                code,
                Some(0),
                "{}: the setup document applies\n{out}",
                case.name
            );
        }
        let before = dp_stats(dp_url).await;
        // diff first: it must refuse the case too (exit 2: cannot be planned).
        let (diff_code, diff_out) = run(&dir, dp_url, "diff", &target).await;
        let field = case.apply_field.as_ref().unwrap_or(&case.field);
        let message = case.apply_message.as_ref().unwrap_or(&case.message);
        if diff_code != Some(2) || !diff_out.contains(field) || !diff_out.contains(message) {
            panic!(
                "{}: diff exited {diff_code:?} without naming {field:?} with {message:?}\n{diff_out}",
                case.name
            );
        }
        let (code, out) = run(&dir, dp_url, "apply", &target).await;
        let after = dp_stats(dp_url).await;
        let writes = |s: &StatsSnapshot| {
            s.calls_of(Operation::UpdateThingShadow)
                + s.calls_of(Operation::DeleteThingShadow)
                + s.calls_of(Operation::Publish)
        };
        assert_eq!(
            writes(&after),
            writes(&before),
            "{}: apply wrote something\n{out}",
            case.name
        );
        if case.setup != Setup::Owner {
            // The owner in the same run reads its shadow; nothing else may call (diff and
            // apply each read once where the case needs the cloud state).
            assert_eq!(
                after.totals.calls - before.totals.calls,
                2 * case.reads,
                "{}: apply called the data plane\n{out}",
                case.name
            );
        }
        results.push((code, out));
    }
    results
}

/// `shadowsync apply` or `shadowsync diff` on one file.
async fn run(dir: &Path, dp_url: &str, verb: &str, file: &Path) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shadowsync"));
    command
        .current_dir(dir)
        .args([verb, "--endpoint-url", dp_url, "--region", "us-east-1"])
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("-f")
        .arg(file)
        .env("AWS_ACCESS_KEY_ID", "corpus")
        .env("AWS_SECRET_ACCESS_KEY", "corpus")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (key, _) in std::env::vars() {
        if key.starts_with("SHADOWSYNC_") || key == "RUST_LOG" {
            command.env_remove(&key);
        }
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run shadowsync apply");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The header of a case of a kind apply does not read yet, against what apply will run:
/// - `apply-exit: 2` (a manifest that cannot be read as a resource): the document does
///   not decode into the API types (the message is serde's), or, for an unknown field,
///   decoding drops it (apply's strict reader refuses exactly that);
/// - `apply-exit: 1`, a new resource: it decodes, and `api::validate` refuses it with an
///   error that names the field and carries the message;
/// - `setup: prior`: both versions decode and validate (only the apiserver's transition
///   rules, or apply's memory of the first version, can refuse the change).
fn library_side(case: &Case) -> Result<(), String> {
    assert_eq!(
        case.kind(),
        "ThingShadowSet",
        "{}: no library check for this kind",
        case.name
    );
    let decode = |doc: &Value| serde_json::from_value::<ThingShadowSet>(doc.clone());
    let validate = |set: &ThingShadowSet| {
        validate_thing_shadow_set(
            set.metadata.name.as_deref().unwrap_or_default(),
            &set.spec,
            &ShadowLimits::default(),
        )
    };
    match (case.setup, case.apply_exit) {
        (Setup::Prior, _) => {
            for doc in [case.first.as_ref().expect("a prior version"), &case.doc] {
                let set = decode(doc).map_err(|e| format!("a version does not decode: {e}"))?;
                validate(&set).map_err(|e| format!("a version is invalid: {e:?}"))?;
            }
            Ok(())
        }
        (_, 2) if case.message == "unknown field" => {
            let pointer = format!("/{}", case.field.replace('.', "/"));
            if case.doc.pointer(&pointer).is_none() {
                return Err(format!("the document has no {}", case.field));
            }
            let set = decode(&case.doc).map_err(|e| format!("does not decode: {e}"))?;
            let back = serde_json::to_value(&set).expect("a set serializes");
            match back.pointer(&pointer) {
                None => Ok(()),
                Some(_) => Err(format!("{} is a known field", case.field)),
            }
        }
        (_, 2) => match decode(&case.doc) {
            Ok(_) => Err("it decodes, so apply would not refuse it as unreadable".into()),
            Err(e) if e.to_string().contains(&case.message) => Ok(()),
            Err(e) => Err(format!(
                "the decoding error does not say {:?}: {e}",
                case.message
            )),
        },
        (_, 1) => {
            let set = decode(&case.doc).map_err(|e| format!("does not decode: {e}"))?;
            let errors = validate(&set).err().unwrap_or_default();
            let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
            if errors
                .iter()
                .any(|e| e.field == case.field && e.to_string().contains(&case.message))
            {
                Ok(())
            } else {
                Err(format!(
                    "validation does not refuse {} with {:?}: {texts:?}",
                    case.field, case.message
                ))
            }
        }
        (_, code) => Err(format!("apply-exit {code} is neither 1 nor 2")),
    }
}

async fn dp_stats(url: &str) -> StatsSnapshot {
    let (code, body) = http("GET", &format!("{url}/_shadowsync/stats"), b"")
        .await
        .unwrap_or_else(|e| panic!("data-plane stats: {e}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("stats")
}

fn print_table(cases: &[Case], seen: &[Seen]) {
    let cut = |text: &str, max: usize| -> String {
        let line = text.lines().next().unwrap_or_default();
        if line.chars().count() > max {
            format!("{}...", line.chars().take(max).collect::<String>())
        } else {
            line.to_string()
        }
    };
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(4);
    say(&format!(
        "{:<width$}  {:<15}  {:<4}  {:<5}  MESSAGE (apiserver or operator)",
        "CASE", "KIND", "HTTP", "APPLY"
    ));
    for (case, seen) in cases.iter().zip(seen) {
        let (code, message) = match case.refused {
            Refused::Admission => (seen.admission_code.to_string(), &seen.admission_message),
            Refused::Operator => (String::new(), &seen.operator_message),
        };
        let message = message
            .split_once(" is invalid: ")
            .map_or(message.as_str(), |(_, rest)| rest);
        say(&format!(
            "{:<width$}  {:<15}  {:<4}  exit {}  {}",
            case.name,
            case.kind(),
            if case.refused == Refused::Admission {
                code
            } else {
                "-".into()
            },
            seen.apply_exit.map_or("?".into(), |c| c.to_string()),
            cut(
                &if case.refused == Refused::Operator {
                    format!(
                        "Stalled {}: {message}",
                        case.reason.as_deref().unwrap_or_default()
                    )
                } else {
                    message.to_string()
                },
                110
            )
        ));
    }
}
