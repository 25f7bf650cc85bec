//! `shadowsync import`: manifests for the shadows and retained messages that already
//! exist, so that a fleet managed by scripts can be handed to shadowsync without a write.
//!
//! The promise is that applying what `import` prints changes nothing in the cloud. Each
//! document is therefore checked before it is printed: the YAML is read back with the
//! same loader `apply` uses, and the spec it yields must declare exactly the desired
//! state (for a shadow) or the payload bytes, QoS and user properties (for a retained
//! message) that the data plane holds. A payload that would not come back byte for byte
//! as `json` is imported as `text`, and as `base64` when it is not UTF-8.
//!
//! GetRetainedMessage does not return the content type, message expiry, response topic
//! or correlation data of a message, so those are not imported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::stream::{self, StreamExt};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::apply::DEFAULT_DIR;
use super::manifest::{self, Resource};
use super::target::DataPlaneArgs;
use crate::api::validate::{validate_retained_message, validate_thing_shadow};
use crate::api::{ThingShadowSpec, API_VERSION};
use crate::dataplane::connect::DataPlaneKind;
use crate::dataplane::{
    DataPlane, DataPlaneError, ErrorKind, RetainedMessageData, ShadowLimits, GREENGRASS_SHADOW,
};
use crate::planner::json::{canonical_json, values_equal};
use crate::planner::retained::publish_request;
use crate::sync::found;

/// `shadowsync import` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// Import the classic and every named shadow of these things. Repeatable.
    #[arg(
        long = "thing",
        value_name = "NAME",
        num_args = 1..,
        required_unless_present = "retained"
    )]
    pub things: Vec<String>,
    /// Import retained messages (all of them, or those under --topic-prefix): payload,
    /// qos and user properties. Content type, message expiry, response topic and
    /// correlation data are not imported: GetRetainedMessage does not return them.
    #[arg(long)]
    pub retained: bool,
    /// Only retained messages whose topic starts with this string.
    #[arg(long, value_name = "PREFIX", requires = "retained")]
    pub topic_prefix: Option<String>,
    /// Namespace written into every manifest.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Things (and retained messages) read at once.
    #[arg(long, env = "SHADOWSYNC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Page size of ListNamedShadowsForThing and ListRetainedMessages (1-100). Default:
    /// the service's (25 named shadows, 200 retained topics).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=100))]
    pub page_size: Option<i32>,
    #[command(flatten)]
    pub dataplane: DataPlaneArgs,
}

/// Longest name a manifest gets: a DNS-1123 label, valid for every Kubernetes object.
pub const MAX_NAME: usize = 63;
/// Hex digits of the hash suffix that shortens or disambiguates a name.
const HASH_DIGITS: usize = 8;

/// Exit codes: 0 everything was read, 2 errors (bad flags, or a read that failed; the
/// manifests read completely are still printed).
pub async fn import(args: ImportArgs) -> u8 {
    let things = match check_args(&args) {
        Ok(things) => things,
        Err(errors) => {
            for err in errors {
                eprintln!("error: {err}");
            }
            return 2;
        }
    };
    let settings = args.dataplane.settings();
    let default_db = Path::new(DEFAULT_DIR).join("dataplane.redb");
    if settings.kind() == DataPlaneKind::Embedded {
        // Opening would create an empty database: importing from nothing is a mistake
        // worth naming (a forgotten --endpoint-url, or the wrong folder).
        let path = args.dataplane.db.as_deref().unwrap_or(&default_db);
        if !path.exists() {
            eprintln!(
                "error: no data-plane database at {}: nothing to import (pass --db, --endpoint-url or --data-plane aws)",
                path.display()
            );
            return 2;
        }
    }
    let (dataplane, description) = match settings.connect(Some(&default_db), None).await {
        Ok(pair) => pair,
        Err(err) => {
            eprintln!("error: {err}");
            return 2;
        }
    };
    // stdout carries only YAML.
    eprintln!("Using the {description}.");
    let source = match settings.kind() {
        DataPlaneKind::Embedded => format!(
            "embedded data plane stored in {}",
            args.dataplane
                .db
                .as_deref()
                .unwrap_or(&default_db)
                .display()
        ),
        DataPlaneKind::Aws => description,
    };

    let concurrency = args.concurrency.max(1);
    let mut log = Log::default();
    let shadows: Vec<ThingRead> = stream::iter(things.iter())
        .map(|thing| read_thing(dataplane.as_ref(), thing, args.page_size))
        .buffered(concurrency)
        .collect()
        .await;
    let mut found_shadows = Vec::new();
    for read in shadows {
        log.absorb(read.log);
        found_shadows.extend(read.shadows);
    }
    let retained = if args.retained {
        read_retained(
            dataplane.as_ref(),
            args.topic_prefix.as_deref().unwrap_or(""),
            args.page_size,
            concurrency,
            &mut log,
        )
        .await
    } else {
        Vec::new()
    };

    let limits = settings.limits();
    let mut documents = Vec::new();
    documents.extend(shadow_documents(
        &found_shadows,
        &args.namespace,
        &limits,
        &mut log,
    ));
    documents.extend(retained_documents(
        &retained,
        &args.namespace,
        &limits,
        &mut log,
    ));

    let rendered = render_output(
        &header(&source, &things, &args),
        log.errors.len(),
        &documents,
    );
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(rendered.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("error: cannot write the manifests to standard output: {err}");
        return 2;
    }
    for note in &log.notes {
        eprintln!("note: {note}");
    }
    for warning in &log.warnings {
        eprintln!("warning: {warning}");
    }
    for err in &log.errors {
        eprintln!("error: {err}");
    }
    eprintln!(
        "imported {} ThingShadow and {} RetainedMessage manifest(s)",
        documents.iter().filter(|d| d.kind == "ThingShadow").count(),
        documents
            .iter()
            .filter(|d| d.kind == "RetainedMessage")
            .count()
    );
    if log.errors.is_empty() {
        0
    } else {
        eprintln!(
            "{} error(s): the manifests printed are incomplete",
            log.errors.len()
        );
        2
    }
}

/// Checks the flags before any call; returns the things to read, each once, in the
/// order given.
fn check_args(args: &ImportArgs) -> Result<Vec<String>, Vec<String>> {
    let mut errors = Vec::new();
    if !is_dns_label(&args.namespace) {
        errors.push(format!(
            "--namespace {:?}: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)",
            args.namespace
        ));
    }
    let mut seen = HashSet::new();
    let mut things = Vec::new();
    for thing in &args.things {
        if !seen.insert(thing.as_str()) {
            continue;
        }
        let spec: Result<ThingShadowSpec, _> =
            serde_json::from_value(json!({ "thingName": thing }));
        let problems = match spec {
            Ok(spec) => validate_thing_shadow(&spec, &ShadowLimits::default())
                .err()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.field == "spec.thingName")
                .map(|e| e.rule)
                .collect(),
            Err(err) => vec![err.to_string()],
        };
        if problems.is_empty() {
            things.push(thing.clone());
        } else {
            errors.push(format!("--thing {thing:?}: {}", problems.join("; ")));
        }
    }
    if errors.is_empty() {
        Ok(things)
    } else {
        Err(errors)
    }
}

/// What reading produced besides the data: notes (skipped shadows, empty things),
/// warnings (a manifest `apply` would refuse with the current limits) and errors.
#[derive(Default)]
struct Log {
    notes: Vec<String>,
    warnings: Vec<String>,
    errors: Vec<String>,
}

impl Log {
    fn absorb(&mut self, other: Log) {
        self.notes.extend(other.notes);
        self.warnings.extend(other.warnings);
        self.errors.extend(other.errors);
    }
}

/// One existing shadow.
#[derive(Clone, Debug, PartialEq)]
struct FoundShadow {
    thing: String,
    /// `None`: the classic shadow.
    shadow: Option<String>,
    /// The cloud's desired section; `None` when it has none (or an empty one).
    desired: Option<Map<String, Value>>,
}

struct ThingRead {
    shadows: Vec<FoundShadow>,
    log: Log,
}

/// The classic shadow (404 = none) and every named shadow of one thing, classic first,
/// then by name.
async fn read_thing(dataplane: &dyn DataPlane, thing: &str, page_size: Option<i32>) -> ThingRead {
    let mut log = Log::default();
    let mut shadows = Vec::new();
    let mut failed = false;
    match found(dataplane.get_thing_shadow(thing, None).await) {
        Ok(Some(doc)) => match desired_section(doc.state.desired) {
            Ok(desired) => shadows.push(FoundShadow {
                thing: thing.to_string(),
                shadow: None,
                desired,
            }),
            Err(what) => {
                failed = true;
                log.errors
                    .push(format!("shadow {thing} (classic): desired {what}"));
            }
        },
        Ok(None) => {}
        Err(err) => {
            failed = true;
            log.errors
                .push(format!("GetThingShadow {thing} (classic): {err}"));
        }
    }

    let names = match list_named_shadows(dataplane, thing, page_size).await {
        Ok(names) => names,
        Err(err) => {
            log.errors.push(err);
            return ThingRead { shadows, log };
        }
    };
    for name in names {
        if name == GREENGRASS_SHADOW {
            log.notes.push(format!(
                "{thing}/{name}: skipped, the shadow is owned by Greengrass"
            ));
            continue;
        }
        match found(dataplane.get_thing_shadow(thing, Some(&name)).await) {
            Ok(Some(doc)) => match desired_section(doc.state.desired) {
                Ok(desired) => shadows.push(FoundShadow {
                    thing: thing.to_string(),
                    shadow: Some(name),
                    desired,
                }),
                Err(what) => {
                    failed = true;
                    log.errors
                        .push(format!("shadow {thing}/{name}: desired {what}"));
                }
            },
            Ok(None) => log.notes.push(format!(
                "{thing}/{name}: deleted between ListNamedShadowsForThing and GetThingShadow; skipped"
            )),
            Err(err) => {
                failed = true;
                log.errors
                    .push(format!("GetThingShadow {thing}/{name}: {err}"));
            }
        }
    }
    if shadows.is_empty() && !failed {
        log.notes
            .push(format!("thing {thing} has no shadows; nothing imported"));
    }
    ThingRead { shadows, log }
}

/// Every page of ListNamedShadowsForThing, names sorted and each once. A 404 (a
/// registry that does not know the thing) means no named shadows.
async fn list_named_shadows(
    dataplane: &dyn DataPlane,
    thing: &str,
    page_size: Option<i32>,
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut tokens_seen = HashSet::new();
    loop {
        let page = match dataplane
            .list_named_shadows_for_thing(thing, token.as_deref(), page_size)
            .await
        {
            Ok(page) => page,
            Err(err) if err.kind == ErrorKind::ResourceNotFound && token.is_none() => break,
            Err(err) => return Err(format!("ListNamedShadowsForThing {thing}: {err}")),
        };
        names.extend(page.results);
        match page.next_token.filter(|t| !t.is_empty()) {
            Some(next) => {
                if !tokens_seen.insert(next.clone()) {
                    return Err(format!(
                        "ListNamedShadowsForThing {thing}: the service returned nextToken {next:?} twice; stopped paging"
                    ));
                }
                token = Some(next);
            }
            None => break,
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The desired section as an object: `None` when absent, `null` or empty.
fn desired_section(desired: Option<Value>) -> Result<Option<Map<String, Value>>, String> {
    match desired {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) if map.is_empty() => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(format!(
            "is not a JSON object ({}), which a ThingShadow cannot declare",
            kind_of(&other)
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every retained message whose topic starts with `prefix`, sorted by topic.
async fn read_retained(
    dataplane: &dyn DataPlane,
    prefix: &str,
    page_size: Option<i32>,
    concurrency: usize,
    log: &mut Log,
) -> Vec<RetainedMessageData> {
    let mut topics = Vec::new();
    let mut token: Option<String> = None;
    let mut tokens_seen = HashSet::new();
    loop {
        let page = match dataplane
            .list_retained_messages(token.as_deref(), page_size)
            .await
        {
            Ok(page) => page,
            Err(err) => {
                log.errors.push(format!("ListRetainedMessages: {err}"));
                break;
            }
        };
        topics.extend(
            page.retained_topics
                .into_iter()
                .map(|t| t.topic)
                .filter(|t| t.starts_with(prefix)),
        );
        match page.next_token.filter(|t| !t.is_empty()) {
            Some(next) => {
                if !tokens_seen.insert(next.clone()) {
                    log.errors.push(format!(
                        "ListRetainedMessages: the service returned nextToken {next:?} twice; stopped paging"
                    ));
                    break;
                }
                token = Some(next);
            }
            None => break,
        }
    }
    topics.sort();
    topics.dedup();

    let reads: Vec<(String, Result<Option<RetainedMessageData>, DataPlaneError>)> =
        stream::iter(topics)
            .map(|topic| async move {
                let result = found(dataplane.get_retained_message(&topic).await);
                (topic, result)
            })
            .buffered(concurrency)
            .collect()
            .await;
    let mut messages = Vec::new();
    for (topic, result) in reads {
        match result {
            Ok(Some(message)) if message.payload.is_empty() => log.notes.push(format!(
                "retained message on {topic}: empty payload (that deletes a retained message); skipped"
            )),
            Ok(Some(message)) => messages.push(message),
            Ok(None) => log.notes.push(format!(
                "retained message on {topic}: deleted between ListRetainedMessages and GetRetainedMessage; skipped"
            )),
            Err(err) => log.errors.push(format!("GetRetainedMessage {topic}: {err}")),
        }
    }
    messages
}

/// One manifest, rendered.
#[derive(Clone, Debug)]
struct Document {
    kind: &'static str,
    yaml: String,
}

fn shadow_documents(
    shadows: &[FoundShadow],
    namespace: &str,
    limits: &ShadowLimits,
    log: &mut Log,
) -> Vec<Document> {
    let candidates: Vec<NameCandidate> = shadows
        .iter()
        .map(|s| shadow_name_candidate(&s.thing, s.shadow.as_deref()))
        .collect();
    let names = assign_names(&candidates);
    let mut documents = Vec::new();
    for (shadow, name) in shadows.iter().zip(names) {
        let target = match &shadow.shadow {
            Some(s) => format!("{}/{s}", shadow.thing),
            None => format!("{} (classic)", shadow.thing),
        };
        let mut spec = Map::new();
        spec.insert("thingName".into(), Value::String(shadow.thing.clone()));
        if let Some(s) = &shadow.shadow {
            spec.insert("shadowName".into(), Value::String(s.clone()));
        }
        if let Some(desired) = &shadow.desired {
            spec.insert("desired".into(), Value::Object(desired.clone()));
        }
        let yaml = yaml_document(&resource("ThingShadow", &name, namespace, spec));
        match read_back(&yaml) {
            Ok(Resource::ThingShadow(read)) => {
                let same_desired = match (&read.spec.desired, &shadow.desired) {
                    (None, None) => true,
                    (Some(Value::Object(a)), Some(b)) => {
                        values_equal(&Value::Object(a.clone()), &Value::Object(b.clone()))
                    }
                    _ => false,
                };
                if read.spec.thing_name != shadow.thing
                    || read.spec.shadow_name != shadow.shadow
                    || !same_desired
                {
                    log.errors.push(format!(
                        "shadow {target}: the manifest would not read back as the shadow's desired state; not imported"
                    ));
                    continue;
                }
                if let Err(problems) = validate_thing_shadow(&read.spec, limits) {
                    log.warnings.push(format!(
                        "ThingShadow {namespace}/{name} ({target}): apply will refuse it with these limits: {}",
                        crate::api::validate::format_errors(&problems)
                    ));
                }
                documents.push(Document {
                    kind: "ThingShadow",
                    yaml,
                });
            }
            Ok(_) => log.errors.push(format!(
                "shadow {target}: the manifest reads back as another kind; not imported"
            )),
            Err(err) => log
                .errors
                .push(format!("shadow {target}: {err}; not imported")),
        }
    }
    documents
}

fn retained_documents(
    messages: &[RetainedMessageData],
    namespace: &str,
    limits: &ShadowLimits,
    log: &mut Log,
) -> Vec<Document> {
    let candidates: Vec<NameCandidate> = messages
        .iter()
        .map(|m| topic_name_candidate(&m.topic))
        .collect();
    let names = assign_names(&candidates);
    let mut documents = Vec::new();
    'messages: for (message, name) in messages.iter().zip(names) {
        for payload in payload_choices(&message.payload) {
            let mut spec = Map::new();
            spec.insert("topic".into(), Value::String(message.topic.clone()));
            spec.insert("payload".into(), payload);
            spec.insert("qos".into(), json!(message.qos));
            if !message.user_properties.is_empty() {
                let properties = message
                    .user_properties
                    .iter()
                    .map(|(key, value)| json!({"key": key, "value": value}))
                    .collect();
                spec.insert("userProperties".into(), Value::Array(properties));
            }
            let yaml = yaml_document(&resource("RetainedMessage", &name, namespace, spec));
            let Ok(Resource::RetainedMessage(read)) = read_back(&yaml) else {
                continue;
            };
            let Ok(request) = publish_request(&read.spec, None) else {
                continue;
            };
            if request.payload != message.payload
                || request.qos != message.qos
                || request.user_properties != message.user_properties
            {
                continue;
            }
            if let Err(problems) = validate_retained_message(&read.spec, limits) {
                log.warnings.push(format!(
                    "RetainedMessage {namespace}/{name} ({}): apply will refuse it with these limits: {}",
                    message.topic,
                    crate::api::validate::format_errors(&problems)
                ));
            }
            documents.push(Document {
                kind: "RetainedMessage",
                yaml,
            });
            continue 'messages;
        }
        log.errors.push(format!(
            "retained message on {}: no manifest reads back as the same payload, qos and user properties; not imported",
            message.topic
        ));
    }
    documents
}

/// The payload sources to try, best first: `json` when the bytes are exactly what the
/// operator would publish for the parsed value (compact, keys sorted) and survive a trip
/// through the Kubernetes API, `text` when they are UTF-8 without control characters
/// other than tab and line breaks (bytes such as NUL are binary data, clearer in
/// base64), `base64` always.
fn payload_choices(payload: &[u8]) -> Vec<Value> {
    let mut choices = Vec::new();
    if let Ok(text) = std::str::from_utf8(payload) {
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            if canonical_json(&value).as_bytes() == payload && survives_kubernetes(&value) {
                choices.push(json!({ "json": value }));
            }
        }
        if !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            choices.push(json!({ "text": text }));
        }
    }
    choices.push(json!({ "base64": STANDARD.encode(payload) }));
    choices
}

/// Whether the value comes back unchanged from the Kubernetes API server, which keeps
/// numbers as int64 or float64 and writes an integral float64 without a fraction (`1.0`
/// comes back as `1`, which the operator would publish as `1`).
fn survives_kubernetes(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            if n.is_u64() {
                n.as_u64().is_some_and(|u| i64::try_from(u).is_ok())
            } else if n.is_f64() {
                n.as_f64()
                    .is_some_and(|f| f.fract() != 0.0 || f.abs() >= 1e21)
            } else {
                true
            }
        }
        Value::Array(items) => items.iter().all(survives_kubernetes),
        Value::Object(map) => map.values().all(survives_kubernetes),
        _ => true,
    }
}

fn resource(kind: &str, name: &str, namespace: &str, spec: Map<String, Value>) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": Value::Object(spec),
    })
}

/// Reads one rendered document with the loader `apply` uses.
fn read_back(yaml: &str) -> Result<Resource, String> {
    let mut loaded = manifest::Loaded::default();
    manifest::parse_documents("import", yaml, &mut loaded);
    if let Some(err) = loaded.errors.first() {
        return Err(format!("the manifest does not read back: {}", err.message));
    }
    match loaded.manifests.pop() {
        Some(m) if loaded.manifests.is_empty() => Ok(m.resource),
        _ => Err("the manifest does not read back as one resource".into()),
    }
}

/// The first comment line: where the manifests came from.
fn header(source: &str, things: &[String], args: &ImportArgs) -> String {
    let mut parts = Vec::new();
    if !things.is_empty() {
        if things.len() <= 10 {
            parts.push(format!("shadows of {}", things.join(", ")));
        } else {
            parts.push(format!("shadows of {} things", things.len()));
        }
    }
    if args.retained {
        parts.push(match args.topic_prefix.as_deref() {
            Some(prefix) if !prefix.is_empty() => {
                format!(
                    "retained messages with topics starting with {}",
                    Value::String(prefix.to_string())
                )
            }
            _ => "all retained messages".to_string(),
        });
    }
    let line = format!(
        "Imported by `shadowsync import` from the {source}: {}.",
        parts.join("; ")
    );
    // One comment line, whatever the path or prefix hold.
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn render_output(header: &str, errors: usize, documents: &[Document]) -> String {
    let mut out = format!("# {header}\n");
    if errors > 0 {
        let _ = writeln!(
            out,
            "# Incomplete: {errors} read(s) failed; see the errors printed with this output."
        );
    }
    for document in documents {
        out.push_str("---\n");
        out.push_str(&document.yaml);
    }
    out
}

// ----------------------------------------------------------------------------------
// Names

/// What a manifest name is derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameCandidate {
    /// Lower-case, invalid characters replaced: the name when nothing collides.
    pub base: String,
    /// The base is the target's own name unchanged, so it keeps it in a collision.
    pub lossless: bool,
    /// The exact target (hashed for a suffix).
    pub identity: String,
    /// Used in front of the hash when the base is empty.
    pub fallback: &'static str,
}

/// `thing` for the classic shadow, `thing-shadow` for a named one.
pub fn shadow_name_candidate(thing: &str, shadow: Option<&str>) -> NameCandidate {
    let (base, raw) = match shadow {
        None => (sanitize(thing), thing.to_string()),
        Some(shadow) => {
            let (t, s) = (sanitize(thing), sanitize(shadow));
            let base = match (t.is_empty(), s.is_empty()) {
                (false, false) => format!("{t}-{s}"),
                (true, _) => s,
                (false, true) => t,
            };
            (base, format!("{thing}-{shadow}"))
        }
    };
    NameCandidate {
        lossless: base == raw,
        base,
        identity: format!("shadow\0{thing}\0{}", shadow.unwrap_or("")),
        fallback: "shadow",
    }
}

/// The topic with `/` and other invalid characters as `-`.
pub fn topic_name_candidate(topic: &str) -> NameCandidate {
    let base = sanitize(topic);
    NameCandidate {
        lossless: base == topic,
        base,
        identity: format!("topic\0{topic}"),
        fallback: "topic",
    }
}

/// Lower-case ASCII letters and digits; every run of other characters becomes one `-`;
/// no `-` at either end.
pub fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// One DNS-1123 label per candidate, all different. A base keeps its plain form when it
/// fits and is unique; in a collision the lossless candidate (first by identity) keeps
/// it and the others get a hash of their exact target as suffix. Too long or empty
/// bases are always shortened with a hash.
pub fn assign_names(candidates: &[NameCandidate]) -> Vec<String> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        groups.entry(c.base.as_str()).or_default().push(i);
    }
    // `None`: the plain base; `Some(n)`: base (cut) + `-` + n hex digits of the hash.
    let mut suffix: Vec<Option<usize>> = candidates
        .iter()
        .map(|c| (c.base.is_empty() || c.base.len() > MAX_NAME).then_some(HASH_DIGITS))
        .collect();
    for members in groups.values().filter(|m| m.len() > 1) {
        let keeper = members
            .iter()
            .filter(|&&i| candidates[i].lossless && suffix[i].is_none())
            .min_by_key(|&&i| &candidates[i].identity)
            .copied();
        for &i in members {
            if Some(i) != keeper && suffix[i].is_none() {
                suffix[i] = Some(HASH_DIGITS);
            }
        }
    }
    // A hashed name may still meet another name; lengthen the hashes until none does.
    for _ in 0..=64 {
        let names: Vec<String> = candidates
            .iter()
            .zip(&suffix)
            .map(|(c, s)| match s {
                None => c.base.clone(),
                Some(digits) => hashed_name(c, *digits),
            })
            .collect();
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            by_name.entry(name.as_str()).or_default().push(i);
        }
        let clashes: Vec<&Vec<usize>> = by_name.values().filter(|v| v.len() > 1).collect();
        if clashes.is_empty() {
            return names;
        }
        for members in clashes {
            for &i in members {
                suffix[i] = Some(match suffix[i] {
                    None => HASH_DIGITS,
                    Some(d) => (d + 4).min(64),
                });
            }
        }
    }
    unreachable!("distinct identities get distinct SHA-256 suffixes")
}

fn hashed_name(candidate: &NameCandidate, digits: usize) -> String {
    let digest = hex::encode(Sha256::digest(candidate.identity.as_bytes()));
    let hash = &digest[..digits.min(digest.len())];
    let stem = if candidate.base.is_empty() {
        candidate.fallback
    } else {
        &candidate.base
    };
    let room = MAX_NAME.saturating_sub(hash.len() + 1);
    // The stem is ASCII, so any byte index is a character boundary.
    let cut = stem[..stem.len().min(room)].trim_end_matches('-');
    if cut.is_empty() {
        hash.to_string()
    } else {
        format!("{cut}-{hash}")
    }
}

/// A DNS-1123 label: 1 to 63 of `a-z0-9-`, starting and ending alphanumeric.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

// ----------------------------------------------------------------------------------
// YAML

/// A manifest as YAML that kubectl and `apply` read back as the same JSON.
pub fn yaml_document(value: &Value) -> String {
    super::yaml::document(value)
}

/// A string as YAML that kubectl and `apply` read back as this string.
pub fn yaml_string(s: &str) -> String {
    super::yaml::string(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(candidates: &[NameCandidate]) -> Vec<String> {
        assign_names(candidates)
    }

    #[test]
    fn plain_names_when_nothing_collides() {
        let got = names(&[
            shadow_name_candidate("kitchen-lamp", None),
            shadow_name_candidate("kitchen-lamp", Some("config")),
            shadow_name_candidate("Hall_Thermostat:2", Some("$schedule")),
        ]);
        assert_eq!(
            got,
            [
                "kitchen-lamp",
                "kitchen-lamp-config",
                "hall-thermostat-2-schedule"
            ]
        );
        assert_eq!(
            names(&[topic_name_candidate("home/kitchen-lamp/config")]),
            ["home-kitchen-lamp-config"]
        );
    }

    #[test]
    fn collisions_keep_the_lossless_name_and_hash_the_others() {
        let lower = shadow_name_candidate("lamp", None);
        let upper = shadow_name_candidate("Lamp", None);
        let under = shadow_name_candidate("LAMP", None);
        let got = names(&[upper.clone(), lower.clone(), under.clone()]);
        assert_eq!(got[1], "lamp");
        assert!(got[0].starts_with("lamp-") && got[0].len() == 4 + 1 + HASH_DIGITS);
        assert!(got[2].starts_with("lamp-") && got[0] != got[2]);
        // The same input in another order gives the same names.
        let again = names(&[lower, under, upper]);
        assert_eq!(again, [got[1].clone(), got[2].clone(), got[0].clone()]);

        // Classic "a-b" and named "b" of "a" are both lossless: the smaller identity wins.
        let got = names(&[
            shadow_name_candidate("a", Some("b")),
            shadow_name_candidate("a-b", None),
        ]);
        assert_eq!(got[0], "a-b");
        assert_ne!(got[1], "a-b");

        // Two lossy topics: both hashed.
        let got = names(&[topic_name_candidate("a/b"), topic_name_candidate("a_b")]);
        assert!(got.iter().all(|n| n.starts_with("a-b-")), "{got:?}");
        assert_ne!(got[0], got[1]);
    }

    #[test]
    fn long_and_empty_bases_are_shortened_with_a_hash() {
        let long = "x".repeat(120);
        let got = names(&[
            shadow_name_candidate(&long, None),
            shadow_name_candidate(&long, Some("config")),
            topic_name_candidate("$$$/___"),
        ]);
        for name in &got {
            assert!(is_dns_label(name), "{name}");
        }
        assert_eq!(got[0].len(), MAX_NAME);
        assert_ne!(got[0], got[1]);
        assert!(got[2].starts_with("topic-"), "{}", got[2]);
    }

    #[test]
    fn a_hash_that_meets_a_plain_name_is_lengthened() {
        let lamp = shadow_name_candidate("Lamp", Some("x"));
        let plain_clash = hashed_name(&lamp, HASH_DIGITS);
        // A thing literally named like the hashed name of another.
        let got = names(&[
            lamp.clone(),
            shadow_name_candidate("lamp", Some("x")),
            shadow_name_candidate(&plain_clash, None),
        ]);
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), 3, "{got:?}");
        assert!(got.iter().all(|n| is_dns_label(n)), "{got:?}");
    }

    #[test]
    fn sanitize_lowercases_and_collapses() {
        assert_eq!(sanitize("Kitchen__Lamp::1"), "kitchen-lamp-1");
        assert_eq!(sanitize("--a--"), "a");
        assert_eq!(sanitize("$"), "");
        assert_eq!(sanitize("été"), "t");
    }

    #[test]
    fn yaml_quotes_what_yaml_1_1_would_misread() {
        for s in [
            "on",
            "Off",
            "yes",
            "N",
            "null",
            "~",
            "010",
            "1_000",
            "12:30",
            "2001-01-01",
            "1e3",
            "",
            " x",
            "x ",
            "a: b",
            "- x",
            "#c",
            "<<",
            "=",
            ".inf",
            "@x",
            "`x",
            "'x'",
        ] {
            assert!(
                yaml_string(s).starts_with('"'),
                "{s:?} -> {}",
                yaml_string(s)
            );
        }
        for s in ["power", "home/lamp/config", "kitchen-lamp", "a_b.c"] {
            assert_eq!(yaml_string(s), s);
        }
        assert_eq!(
            yaml_string("a\"b\\c\nd\te\u{0}\u{7f}\u{85}\u{feff}é😀"),
            "\"a\\\"b\\\\c\\nd\\te\\u0000\\u007F\\u0085\\uFEFFé😀\""
        );
    }

    #[test]
    fn yaml_floats_have_a_dot_and_a_signed_exponent() {
        let v = json!([1.0, 0.5, 1e300, 1.5e-7, -2e21, 3, -4, u64::MAX]);
        let Value::Array(items) = &v else {
            unreachable!()
        };
        let shown: Vec<String> = items.iter().map(super::super::yaml::scalar_text).collect();
        assert_eq!(
            shown,
            [
                "1.0",
                "0.5",
                "1.0e+300",
                "1.5e-7",
                "-2.0e+21",
                "3",
                "-4",
                "18446744073709551615"
            ]
        );
    }

    #[test]
    fn yaml_reads_back_as_the_same_json() {
        let long_key = "k".repeat(1500);
        let doc = json!({
            "a": {"on": "off", "nested": {"deep": [1, [2, [3, {}]], {"x": [], "y": {}}]}},
            "list": [{"k": "v", "n": null}, "yes", 1.5, true, [], {}],
            "empty": "",
            "text": "line 1\nline 2\n",
            long_key: {"v": [1, 2]},
            "after": 0,
        });
        let yaml = yaml_document(&doc);
        let back: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, doc, "{yaml}");
    }

    #[test]
    fn json_payloads_only_when_the_bytes_come_back_exactly() {
        let first = |payload: &[u8]| payload_choices(payload)[0].clone();
        assert_eq!(
            first(br#"{"a":1,"b":[true,null]}"#),
            json!({"json": {"a": 1, "b": [true, null]}})
        );
        // Keys not sorted, spaces, an integral float, a big integer: text.
        for payload in [
            &br#"{"b":1,"a":2}"#[..],
            br#"{"a": 1}"#,
            br#"{"a":1.0}"#,
            b"18446744073709551615",
        ] {
            assert!(
                first(payload).get("text").is_some(),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        assert_eq!(first(&[0, 159, 146, 150]), json!({"base64": "AJ+Slg=="}));
        assert_eq!(first(&[0, 1, 2]), json!({"base64": "AAEC"}));
        assert_eq!(first(b"a\tb\r\nc"), json!({"text": "a\tb\r\nc"}));
    }
}
