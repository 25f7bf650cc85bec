//! One manifest, one meaning: `shadowsync apply` must read a manifest exactly as kubectl and
//! the apiserver read it, or refuse it naming the field.
//!
//! Against a real control plane (tests/kube/cluster.sh, the CRDs installed), every case
//! is read twice:
//! - by `shadowsync manifest parse -f FILE` (the reader `apply`, `diff` and `import` use,
//!   with the checks `apply` makes before any call);
//! - by `kubectl apply --dry-run=server -o json -f FILE`: kubectl's YAML-to-JSON, then the
//!   apiserver's decoding, defaulting, schema and CEL validation.
//!
//! When both accept a resource, their readings must be identical: the spec (both read
//! into the API types, defaults included) and the metadata (name, namespace, labels,
//! annotations), and also kubectl's own client-side reading, which it records in the
//! `last-applied-configuration` annotation. When kubectl or the apiserver refuses, apply
//! must refuse too. Apply may refuse what kubectl accepts (a value the two YAML versions
//! read differently), but then its message must name the field or the line.
//!
//! The cases: every manifest in `deploy/examples/`, every document of the invalid corpus
//! in `tests/invalid/`, and a generated family covering every scalar form on which YAML 1.1
//! and YAML 1.2 disagree or that JSON cannot hold, in every scalar style and as values,
//! keys, list items and typed fields, plus anchors, aliases, merge keys, multi-document
//! files, comments, tabs, CRLF, a byte-order mark, large integers and unicode.
//!
//! ```sh
//! cargo test --test yaml_kubectl -- --nocapture
//! ```

#[path = "e2e/mod.rs"]
mod e2e;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use shadowsync::cli::manifest::{parse_declared, Declared, Resource};

const NAMESPACE: &str = "yaml-diff";
const HEAD: &str = "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n";

struct Case {
    name: String,
    text: String,
}

/// How one case came out.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Verdict {
    /// Both read it, identically.
    Identical,
    /// Both refused it.
    BothRefused,
    /// kubectl accepted it, apply refused it naming the field or line.
    RefusedByApply,
    /// Nothing to compare (no shadowsync resource in it).
    NotOurs,
}

#[test]
fn apply_reads_every_manifest_as_kubectl_and_the_apiserver_do() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("yaml_kubectl");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cases")).expect("a work folder");
    let kubectl = e2e::find_kubectl().expect("kubectl on PATH");
    // A copy of the binary, which other builds in the same target folder cannot relink
    // under the test.
    let shadowsync = dir.join("shadowsync");
    std::fs::copy(env!("CARGO_BIN_EXE_shadowsync"), &shadowsync).expect("a copy of the binary");

    let started = std::time::Instant::now();
    let control_plane = e2e::ControlPlane::start(&dir.join("cluster"));
    e2e::kubectl_apply(&control_plane.kubeconfig, &root.join("crds"), &dir);
    let kube = |args: &[&str]| {
        Command::new(&kubectl)
            .args(args)
            .env("KUBECONFIG", &control_plane.kubeconfig)
            .env("KUBECACHEDIR", dir.join("kubectl-cache"))
            .output()
            .expect("kubectl runs")
    };

    let mut cases = Vec::new();
    for file in files(&root.join("deploy/examples"), true) {
        for (i, text) in split_like_kubectl(&read(&file)).into_iter().enumerate() {
            cases.push(Case {
                name: format!("{}#{}", file.strip_prefix(root).unwrap().display(), i + 1),
                text,
            });
        }
    }
    let examples = cases.len();
    for file in files(&root.join("tests/invalid"), false) {
        for (i, text) in split_like_kubectl(&read(&file)).into_iter().enumerate() {
            cases.push(Case {
                name: format!("{}#{}", file.strip_prefix(root).unwrap().display(), i + 1),
                text,
            });
        }
    }
    let corpus = cases.len() - examples;
    cases.extend(generated());
    let generated_count = cases.len() - examples - corpus;

    // Every namespace a case names, and the one the generated cases use.
    let mut namespaces: BTreeSet<String> = BTreeSet::from([NAMESPACE.to_string()]);
    for case in &cases {
        for line in case.text.lines() {
            if let Some(ns) = line.trim().strip_prefix("namespace:") {
                let ns = ns.trim().trim_matches(['"', '\'']);
                if !ns.is_empty()
                    && ns
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit())
                {
                    namespaces.insert(ns.to_string());
                }
            }
        }
    }
    for ns in &namespaces {
        let out = kube(&["create", "namespace", ns]);
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("AlreadyExists"),
            "kubectl create namespace {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut failures = Vec::new();
    let mut verdicts = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let file = dir.join("cases").join(format!("{i:04}.yaml"));
        std::fs::write(&file, &case.text).expect("a case file");
        let file_text = file.display().to_string();
        let ours = Command::new(&shadowsync)
            .args(["manifest", "parse", "-f", &file_text])
            .output()
            .expect("shadowsync runs");
        let theirs = kube(&["apply", "--dry-run=server", "-o", "json", "-f", &file_text]);
        match compare(&ours, &theirs) {
            Ok(verdict) => verdicts.push((verdict, i)),
            Err(why) => failures.push(format!(
                "{} ({}):\n{}\n--- apply: exit {:?}\n{}{}\n--- kubectl: exit {:?}\n{}{}",
                case.name,
                file.display(),
                why,
                ours.status.code(),
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&ours.stderr),
                theirs.status.code(),
                tail(&String::from_utf8_lossy(&theirs.stdout)),
                String::from_utf8_lossy(&theirs.stderr),
            )),
        }
    }
    let count = |v: Verdict| verdicts.iter().filter(|(x, _)| *x == v).count();
    for (verdict, i) in &verdicts {
        if *verdict == Verdict::RefusedByApply {
            e2e::say(&format!("refused by apply only: {}", cases[*i].name));
        }
    }
    e2e::say(&format!(
        "yaml vs kubectl: {} cases ({examples} from deploy/examples, {corpus} from tests/invalid, {generated_count} generated): {} read identically, {} refused by both, {} refused by apply only (field or line named), {} without a shadowsync resource, {} disagreements ({:.0} s)",
        cases.len(),
        count(Verdict::Identical),
        count(Verdict::BothRefused),
        count(Verdict::RefusedByApply),
        count(Verdict::NotOurs),
        failures.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    assert!(
        count(Verdict::Identical) > 100,
        "too few cases read by both"
    );
}

/// Compares the two readings of one case.
fn compare(ours: &std::process::Output, theirs: &std::process::Output) -> Result<Verdict, String> {
    let our_stderr = String::from_utf8_lossy(&ours.stderr);
    let their_stderr = String::from_utf8_lossy(&theirs.stderr);
    let our_items: Vec<Value> = if ours.status.code() == Some(2) {
        Vec::new()
    } else {
        serde_json::from_slice(&ours.stdout)
            .map_err(|e| format!("apply's output is not a JSON list: {e}"))?
    };
    let kubectl_nothing = their_stderr.contains("no objects passed to apply");
    if !theirs.status.success() {
        if kubectl_nothing && our_items.is_empty() && ours.status.code() == Some(0) {
            return Ok(Verdict::NotOurs);
        }
        // kubectl or the apiserver refused: apply must refuse too.
        if ours.status.success() {
            return Err("kubectl refused it, apply accepted it".into());
        }
        return Ok(Verdict::BothRefused);
    }
    let their_items: Vec<Value> = {
        let out: Value = serde_json::from_slice(&theirs.stdout)
            .map_err(|e| format!("kubectl's output is not JSON: {e}"))?;
        if out.get("kind") == Some(&json!("List")) {
            out["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![out]
        }
    };
    let their_items: Vec<&Value> = their_items
        .iter()
        .filter(|o| {
            o.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("iot.shadowsync.dev/"))
        })
        .collect();
    if ours.status.code() == Some(2) {
        // Apply refused what kubectl accepts: only with the field (or line) named.
        let named = our_stderr.lines().all(|line| {
            !line.starts_with("error: ")
                || line
                    .split_once(": ")
                    .map(|(_, rest)| rest)
                    .and_then(|rest| rest.split_once(": "))
                    .is_some_and(|(_, message)| {
                        message.starts_with("not valid YAML: line")
                            || message.starts_with("line ")
                            || message
                                .split_once(": ")
                                .is_some_and(|(field, _)| !field.contains(' ') && !field.is_empty())
                    })
        });
        return if named {
            Ok(Verdict::RefusedByApply)
        } else {
            Err("apply refused it without naming the field".into())
        };
    }
    if their_items.is_empty() && our_items.is_empty() {
        return Ok(Verdict::NotOurs);
    }
    if their_items.len() != our_items.len() {
        return Err(format!(
            "kubectl read {} shadowsync resources, apply {}",
            their_items.len(),
            our_items.len()
        ));
    }
    for (theirs, ours) in their_items.iter().zip(&our_items) {
        let server = reading(theirs).map_err(|e| format!("the apiserver's object: {e}"))?;
        let apply = reading(ours).map_err(|e| format!("apply's object: {e}"))?;
        if server != apply {
            return Err(format!(
                "readings differ\n  apiserver: {server}\n  apply:     {apply}"
            ));
        }
        // kubectl's own reading, before the apiserver: its last-applied annotation.
        let last_applied = theirs["metadata"]["annotations"]
            ["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .ok_or("no last-applied-configuration annotation")?;
        let client: Value = serde_json::from_str(last_applied)
            .map_err(|e| format!("last-applied-configuration: {e}"))?;
        let client = reading(&client).map_err(|e| format!("kubectl's reading: {e}"))?;
        if client["spec"] != apply["spec"] {
            return Err(format!(
                "kubectl's client-side reading differs\n  kubectl: {}\n  apply:   {}",
                client["spec"], apply["spec"]
            ));
        }
    }
    Ok(Verdict::Identical)
}

/// What a resource means: its spec read into the API types (defaults filled in), and its
/// name, namespace, labels and annotations (kubectl's own annotation left out).
fn reading(object: &Value) -> Result<Value, String> {
    let declared = parse_declared(object)?.ok_or("not a shadowsync resource")?;
    let (kind, key, spec, meta) = match &declared {
        Declared::Resource(resource) => {
            let (spec, meta) = match resource {
                Resource::ThingShadow(r) => (serde_json::to_value(&r.spec), &r.metadata),
                Resource::RetainedMessage(r) => (serde_json::to_value(&r.spec), &r.metadata),
            };
            (resource.kind(), resource.key(), spec, meta)
        }
        Declared::Set(set) => (
            "ThingShadowSet",
            format!(
                "{}/{}",
                set.metadata.namespace.as_deref().unwrap_or("default"),
                set.metadata.name.as_deref().unwrap_or_default()
            ),
            serde_json::to_value(&set.spec),
            &set.metadata,
        ),
    };
    let mut annotations = meta.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    Ok(json!({
        "kind": kind,
        "key": key,
        "labels": meta.labels.clone().unwrap_or_default(),
        "annotations": annotations,
        "spec": spec.map_err(|e| e.to_string())?,
    }))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(dir: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a folder entry").path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                out.extend(files(&entry, true));
            }
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(entry);
        }
    }
    out
}

/// The documents of a file as kubectl's reader splits them (lines starting with `---`),
/// without those holding only comments and blank lines.
fn split_like_kubectl(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("---") {
            out.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    out.push(current);
    out.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// Plain scalar forms on which YAML 1.1 (kubectl) and YAML 1.2 disagree, that JSON
/// cannot hold, or that look alike but are read alike.
const SCALARS: &[&str] = &[
    // Booleans and nulls.
    "y",
    "Y",
    "yes",
    "Yes",
    "YES",
    "n",
    "N",
    "no",
    "No",
    "NO",
    "on",
    "On",
    "ON",
    "off",
    "Off",
    "OFF",
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
    "yES",
    "oN",
    "~",
    "null",
    "Null",
    "NULL",
    "nULL",
    // Integers.
    "0",
    "-0",
    "+12",
    "010",
    "08",
    "-010",
    "00",
    "0x1F",
    "0x1f",
    "0X1F",
    "-0x1F",
    "0o17",
    "0O17",
    "+0o17",
    "0b11",
    "0B11",
    "-0b11",
    "0b-101",
    "1_000",
    "1__0",
    "1_",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "0xFFFFFFFFFFFFFFFFFF",
    // Floats.
    "1.5",
    ".5",
    "-.5",
    "+.5",
    "01.5",
    "1.0",
    "1.",
    "1e3",
    "1E+3",
    "2.5e-3",
    "-0.0",
    "1e19",
    "1.5e19",
    "1e21",
    "1e-400",
    "0.1",
    "1e400",
    "1_0.5",
    ".nan",
    ".NaN",
    ".inf",
    "-.Inf",
    "+.INF",
    ".nAn",
    "nan",
    "inf",
    "NaN",
    "1.8446744073709552e19",
    "2.0e+300",
    "3.141592653589793",
    "1152921504606846976",
    // Strings that look like something else.
    "1:20",
    "12:30:45",
    "190:20:30",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2002-12-14 21:59:43",
    "=",
    "<<",
    "-x",
    "+",
    ".",
    "1.2.3",
    "1e",
    "0x",
    "0b",
    "0o8",
    "_1",
    "é",
    "日本語",
    "😀",
    "a b",
    "http://x/y?z=1",
    "what?",
    "#x",
    "a#b",
    "a: b",
];

fn shadow(name: &str, spec: &str) -> String {
    format!("{HEAD}metadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  thingName: lamp-{name}\n{spec}")
}

/// The generated family.
fn generated() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: String, text: String| cases.push(Case { name, text });
    for (i, s) in SCALARS.iter().enumerate() {
        let name = format!("g{i}");
        // A value in a block mapping, in a flow mapping, in a list, as a key.
        add(
            format!("plain value {s:?}"),
            shadow(&format!("{name}-v"), &format!("  desired:\n    v: {s}\n")),
        );
        if !s.contains(['#', ':', '?']) {
            add(
                format!("flow value {s:?}"),
                shadow(
                    &format!("{name}-f"),
                    &format!("  desired: {{v: {s}, w: [{s}]}}\n"),
                ),
            );
        }
        add(
            format!("list item {s:?}"),
            shadow(
                &format!("{name}-l"),
                &format!("  desired:\n    v:\n      - {s}\n"),
            ),
        );
        if !s.is_empty() && !s.contains(['#', ':']) {
            add(
                format!("key {s:?}"),
                shadow(&format!("{name}-k"), &format!("  desired:\n    {s}: 1\n")),
            );
        }
        // Every quoting style is a string for everyone.
        add(
            format!("single-quoted {s:?}"),
            shadow(
                &format!("{name}-s"),
                &format!("  desired:\n    v: '{s}'\n    k: {{'{s}': 1}}\n"),
            ),
        );
        add(
            format!("double-quoted {s:?}"),
            shadow(
                &format!("{name}-d"),
                &format!("  desired:\n    v: \"{s}\"\n"),
            ),
        );
        add(
            format!("literal {s:?}"),
            shadow(
                &format!("{name}-b"),
                &format!("  desired:\n    v: |\n      {s}\n    w: >-\n      {s}\n"),
            ),
        );
        add(
            format!("!!str {s:?}"),
            shadow(
                &format!("{name}-t"),
                &format!("  desired:\n    v: !!str {s}\n"),
            ),
        );
        // Typed fields: a string field, an integer field, a label.
        add(format!("thingName {s:?}"), format!("{HEAD}metadata:\n  name: {name}-n\n  namespace: {NAMESPACE}\nspec:\n  thingName: {s}\n"));
        add(format!("annotation {s:?}"), format!("{HEAD}metadata:\n  name: {name}-a\n  namespace: {NAMESPACE}\n  annotations:\n    a: {s}\nspec:\n  thingName: t\n"));
        add(
            format!("qos {s:?}"),
            format!("apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\nmetadata:\n  name: {name}-q\n  namespace: {NAMESPACE}\nspec:\n  topic: t/{name}\n  payload:\n    json:\n      v: {s}\n  qos: {s}\n"),
        );
    }
    let structural: &[(&str, &str)] = &[
        ("anchors and aliases", "  desired:\n    base: &b {p: 1, q: [1, 2]}\n    copy: *b\n    list: [*b, *b]\n    s: &s hello\n    t: *s\n"),
        ("merge key", "  desired:\n    base: &b {p: 1, q: 2}\n    v:\n      <<: *b\n      r: 3\n"),
        ("merge key then override", "  desired:\n    base: &b {p: 1, q: 2}\n    v:\n      <<: *b\n      q: 9\n"),
        ("override then merge key", "  desired:\n    base: &b {p: 1, q: 2}\n    v:\n      q: 9\n      <<: *b\n"),
        ("merge list", "  desired:\n    a: &a {p: 1, q: 2}\n    b: &b {q: 3, r: 4}\n    v:\n      <<: [*a, *b]\n"),
        ("merge inline", "  desired:\n    v:\n      <<: {p: 1}\n      q: 2\n"),
        ("merge of a scalar", "  desired:\n    v:\n      <<: 1\n"),
        ("quoted merge key", "  desired:\n    v:\n      \"<<\": {p: 1}\n"),
        ("merge into spec", "  <<: {desired: {p: 1}}\n"),
        ("alias to a bool", "  desired:\n    a: &x on\n    b: *x\n"),
        ("unknown alias", "  desired:\n    a: *nope\n"),
        ("recursive alias", "  desired:\n    a: &x [1, *x]\n"),
        ("duplicate key", "  desired:\n    a: 1\n    a: 2\n"),
        ("duplicate key quoted", "  desired:\n    a: 1\n    \"a\": 2\n"),
        ("comments", "  desired: # on\n    # b: on\n    a: 1 # off\n    c: \"#x\" # y\n"),
        ("tab after colon", "  desired:\n    a:\t1\n    b: x\ty\n"),
        ("tab indentation", "  desired:\n\ta: 1\n"),
        ("folded plain", "  desired:\n    a: on\n      off\n"),
        ("unicode", "  desired:\n    é: \"日本\"\n    z: 😀\n    w: \"\\u00e9\\U0001F600\\t\"\n"),
        ("line separator in quotes", "  desired:\n    a: \"x \u{2028} y\"\n    b: 'p \u{2029} q'\n"),
        ("next line in plain", "  desired:\n    a: x\u{85}y\n"),
        ("control character", "  desired:\n    a: \"\u{7}\"\n"),
        ("escapes", "  desired:\n    a: \"\\0\\a\\b\\e\\f\\v\\N\\_\\L\\P\\/\\ \\x41\"\n"),
        ("single quote escape in double quotes", "  desired:\n    a: \"\\'\"\n"),
        ("question mark in flow", "  desired: {a: [x?y]}\n"),
        ("question mark key in flow", "  desired: {a: [?b]}\n"),
        ("colon in flow", "  desired: {a: [b:]}\n"),
        ("url in flow", "  desired: {a: http://x}\n"),
        ("adjacent json value", "  desired: {\"a\":1,\"b\":[1,2]}\n"),
        ("big integers", "  desired:\n    a: 9223372036854775807\n    b: -9223372036854775808\n    c: 4611686018427387904\n"),
        ("integral floats", "  desired:\n    a: 1.0\n    b: 1e15\n    c: 1e18\n    d: 1.5e19\n    e: 2e20\n    f: 1e22\n    g: 0.000001\n    h: 1e-7\n"),
        ("nulls", "  desired:\n    a: [null, {b: 1}]\n    c: {d: ~}\n"),
        ("null in a list", "  desired:\n    a: [null]\n"),
        ("null desired", "  desired: null\n  shadowName: ~\n"),
        ("escaped slash", "  desired:\n    a: \"x\\/y\"\n"),
        ("escaped quote", "  desired:\n    a: \"x\\'y\"\n"),
        ("nested", "  desired:\n    a: {b: {c: [1, {d: [true, null, \"x\"]}]}}\n"),
        ("explicit key", "  desired:\n    ? a\n    : 1\n"),
        ("complex key", "  desired:\n    ? [a, b]\n    : 1\n"),
        ("null key", "  desired:\n    ~: 1\n"),
        ("empty value", "  desired:\n    a:\n    b: \"\"\n"),
        ("keep chomping at the end", "  desired:\n    a: |+\n      x"),
        ("indentation indicator", "  desired:\n    a: |2\n        x\n      y\n"),
        ("multi-line double quotes", "  desired:\n    a: \"x\n      y\n\n      z\"\n"),
        ("multi-line single quotes", "  desired:\n    a: 'x\n      y'\n"),
        ("tagged map", "  desired: !!map {a: 1}\n"),
        ("binary", "  desired:\n    a: !!binary aGk=\n"),
        ("local tag", "  desired:\n    a: !x 1\n"),
        ("non-specific tag", "  desired:\n    a: ! 010\n"),
    ];
    for (i, (name, spec)) in structural.iter().enumerate() {
        add(name.to_string(), shadow(&format!("s{i}"), spec));
    }
    // Whole-file forms.
    let plain = shadow("w0", "  desired:\n    a: 1\n");
    add("CRLF line ends".into(), plain.replace('\n', "\r\n"));
    add("byte-order mark".into(), format!("\u{feff}{plain}"));
    add("no final line break".into(), plain.trim_end().to_string());
    add(
        "two documents".into(),
        format!(
            "# first\n{}---\n{}",
            shadow("w1", "  desired: {a: 1}\n"),
            shadow("w2", "  desired: {b: 2}\n")
        ),
    );
    add("document end marker".into(), format!("{plain}...\n"));
    add(
        "document end then content".into(),
        format!("{plain}...\nkind: X\n"),
    );
    add(
        "separator with content".into(),
        format!("--- {{a: 1}}\n{plain}"),
    );
    add(
        "separator with a comment".into(),
        format!("--- # c\n{}", shadow("w3", "  desired: {a: 1}\n")),
    );
    add(
        "json".into(),
        format!("{{\"apiVersion\": \"iot.shadowsync.dev/v1alpha1\", \"kind\": \"ThingShadow\", \"metadata\": {{\"name\": \"w4\", \"namespace\": \"{NAMESPACE}\"}}, \"spec\": {{\"thingName\": \"t\", \"desired\": {{\"a\": 1.0, \"b\": \"on\", \"c\": 1e3, \"d\": \"\\ud83d\\ude00\"}}}}}}\n"),
    );
    add(
        "json duplicate".into(),
        format!("{{\"apiVersion\": \"iot.shadowsync.dev/v1alpha1\", \"kind\": \"ThingShadow\", \"metadata\": {{\"name\": \"w5\", \"namespace\": \"{NAMESPACE}\"}}, \"spec\": {{\"thingName\": \"t\", \"desired\": {{\"a\": 1, \"a\": 2}}}}}}\n"),
    );
    add(
        "json payload with nulls".into(),
        format!("apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\nmetadata:\n  name: w7\n  namespace: {NAMESPACE}\nspec:\n  topic: t/w7\n  payload:\n    json: {{a: null, b: [null, {{c: 1}}]}}\n"),
    );
    add(
        "json payload".into(),
        format!("apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\nmetadata:\n  name: w8\n  namespace: {NAMESPACE}\nspec:\n  topic: t/w8\n  payload:\n    json: [1, 1.5, \"on\", true, null, {{c: [2.0e+2]}}]\n  qos: 1.0\n"),
    );
    add(
        "list".into(),
        format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}",
            shadow("w6", "  desired: {a: 1}\n").replace('\n', "\n  ")
        ),
    );
    cases
}
