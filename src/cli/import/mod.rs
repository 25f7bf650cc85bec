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
//!
//! With `--thing-group`, one `ThingShadowSet` is printed instead: it selects the group
//! (as read by `apply`, with `--recursive` its descendants too), and its template
//! declares the part of one shadow (`--shadow-name`, else the classic shadow) that every
//! member holds alike ([`shared`]), so that applying it writes nothing to the members'
//! shadows. Members without the shadow, which `apply` would write the template to, and
//! the leaves left out are listed in comments. The set is printed only when every
//! member's shadow was read: with one missing, the shared part is not known.
//!
//! The command is split by concern:
//! - this module: the flags, their checks, the order of the work, and the read-back
//!   check that decides which manifests are printed;
//! - [`read`]: every data-plane call (list and get, never a write) and what it found;
//! - [`naming`]: manifest names, pure, deterministic and collision-free;
//! - [`shared`]: the desired state a fleet's shadows share, pure;
//! - [`write`]: the manifests and the output as YAML text, pure.

mod naming;
mod read;
mod shared;
mod write;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::apply::DEFAULT_DIR;
use super::manifest::{self, Resource};
use super::target::DataPlaneArgs;
use crate::api::validate::{
    format_errors, validate_retained_message, validate_thing_shadow, validate_thing_shadow_set,
};
use crate::api::{
    FleetSelector, ThingGroupSelector, ThingShadowSet, ThingShadowSetSpec, ThingShadowSpec,
};
use crate::dataplane::connect::{Connected, DataPlaneKind};
use crate::dataplane::{RetainedMessageData, ShadowLimits};
use crate::fleet::membership::resolve;
use crate::planner::json::values_equal;
use crate::planner::retained::publish_request;
use naming::{
    assign_names, is_dns_label, set_name_candidate, shadow_name_candidate, topic_name_candidate,
    NameCandidate,
};
use read::{read_member, read_retained, read_thing, FoundShadow, ThingRead};
use shared::shared;
use write::{
    header, render_output, render_set_output, retained_manifests, set_header, set_manifest,
    set_notes, shadow_manifest, Document,
};

/// Leaf paths listed in the comment of a set's import; the rest are counted.
const LEFT_OUT_LISTED: usize = 50;

/// `shadowsync import` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// Import the classic and every named shadow of these things. Repeatable.
    #[arg(
        long = "thing",
        value_name = "NAME",
        num_args = 1..,
        required_unless_present_any = ["retained", "thing_group"]
    )]
    pub things: Vec<String>,
    /// Print one ThingShadowSet selecting this thing group instead, whose template
    /// declares the desired state that every member's shadow holds alike (leaves with
    /// equal values in all of them), so that applying it writes nothing to them.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["things", "retained"])]
    pub thing_group: Option<String>,
    /// With --thing-group: the members of its descendant groups too.
    #[arg(long, requires = "thing_group")]
    pub recursive: bool,
    /// With --thing-group: the named shadow to read and declare (default: the classic
    /// shadow).
    #[arg(long, value_name = "NAME", requires = "thing_group")]
    pub shadow_name: Option<String>,
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
    let default_db = Path::new(DEFAULT_DIR).join("dataplane.redb");
    let settings = args.dataplane.settings();
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
    let connected = match settings
        .connect_with_registry(Some(&default_db), None)
        .await
    {
        Ok(connected) => connected,
        Err(err) => {
            eprintln!("error: {err}");
            return 2;
        }
    };
    let description = connected.description.clone();
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
    if let Some(group) = &args.thing_group {
        return import_set(&args, group, &connected, &source, &settings.limits()).await;
    }
    let dataplane = connected.data_plane;

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

    let retained_prefix = args
        .retained
        .then(|| args.topic_prefix.as_deref().unwrap_or(""));
    let rendered = render_output(
        &header(&source, &things, retained_prefix),
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
    if let Some(group) = &args.thing_group {
        // The flags as the set's fields, checked by the set's own rules.
        let spec = set_spec(group, args.recursive, args.shadow_name.as_deref());
        let problems = validate_thing_shadow_set("imported", &spec, &ShadowLimits::default())
            .err()
            .unwrap_or_default();
        for problem in problems {
            let flag = match problem.field.as_str() {
                "spec.selector.thingGroup.name" => "--thing-group",
                "spec.template.shadowName" => "--shadow-name",
                _ => continue,
            };
            errors.push(format!("{flag}: {}", problem.rule));
        }
    }
    if errors.is_empty() {
        Ok(things)
    } else {
        Err(errors)
    }
}

/// A set selecting `group` with an empty template for `shadow`.
fn set_spec(group: &str, recursive: bool, shadow: Option<&str>) -> ThingShadowSetSpec {
    let mut spec: ThingShadowSetSpec = serde_json::from_value(json!({
        "selector": {"thingGroup": {"name": group}},
        "template": {},
    }))
    .expect("a selector and an empty template make a set spec");
    if let Some(selector) = &mut spec.selector.thing_group {
        selector.recursive = recursive;
    }
    spec.template.shadow_name = shadow.map(str::to_string);
    spec
}

/// `import --thing-group`: one ThingShadowSet for what the members' shadows share.
async fn import_set(
    args: &ImportArgs,
    group: &str,
    connected: &Connected,
    source: &str,
    limits: &ShadowLimits,
) -> u8 {
    let shadow = args.shadow_name.as_deref();
    let selector = FleetSelector {
        thing_group: Some(ThingGroupSelector {
            name: group.to_string(),
            recursive: args.recursive,
        }),
        ..FleetSelector::default()
    };
    let members = match resolve(connected.registry.as_ref(), &selector).await {
        Ok(members) => members,
        Err(err) => {
            eprintln!("error: {err}");
            return 2;
        }
    };
    let dataplane = connected.data_plane.as_ref();
    let reads: Vec<_> = stream::iter(members.iter())
        .map(|thing| async move { (thing, read_member(dataplane, thing, shadow).await) })
        .buffered(args.concurrency.max(1))
        .collect()
        .await;
    let mut errors = Vec::new();
    let mut with_shadow = Vec::new();
    let mut without = Vec::new();
    for (thing, read) in reads {
        match read {
            Ok(Some(desired)) => with_shadow.push(desired),
            Ok(None) => without.push(thing.clone()),
            Err(err) => errors.push(err),
        }
    }
    if !errors.is_empty() {
        for err in &errors {
            eprintln!("error: {err}");
        }
        eprintln!(
            "nothing imported: what the members share is known only once every member's shadow is read"
        );
        return 2;
    }
    let maps: Vec<_> = with_shadow.iter().collect();
    let shared = shared(&maps);

    let name = assign_names(&[set_name_candidate(group, shadow)]).remove(0);
    let yaml = set_manifest(
        &name,
        &args.namespace,
        group,
        args.recursive,
        shadow,
        shared.desired.as_ref(),
    );
    let read = match read_back_set(&yaml) {
        Ok(read) => read,
        Err(err) => {
            eprintln!(
                "error: ThingShadowSet {}/{name}: {err}; not imported",
                args.namespace
            );
            return 2;
        }
    };
    let same_desired = match (&read.spec.template.desired, &shared.desired) {
        (None, None) => true,
        (Some(a), Some(b)) => values_equal(a, &Value::Object(b.clone())),
        _ => false,
    };
    if read.spec.selector != selector
        || read.spec.template.shadow_name.as_deref() != shadow
        || !same_desired
    {
        eprintln!(
            "error: ThingShadowSet {}/{name}: the manifest would not read back as the group and the shared desired state; not imported",
            args.namespace
        );
        return 2;
    }
    if let Err(problems) = validate_thing_shadow_set(&name, &read.spec, limits) {
        eprintln!(
            "warning: ThingShadowSet {}/{name}: apply will refuse it with these limits: {}",
            args.namespace,
            format_errors(&problems)
        );
    }
    let header = set_header(source, group, args.recursive, shadow, members.len());
    let notes = set_notes(
        &without,
        &shared.left_out,
        shared.desired.is_some(),
        LEFT_OUT_LISTED,
    );
    let rendered = render_set_output(&header, &notes, &yaml);
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(rendered.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("error: cannot write the manifest to standard output: {err}");
        return 2;
    }
    if members.is_empty() {
        eprintln!("note: thing group {group} has no members");
    } else if shared.desired.is_none() && !with_shadow.is_empty() {
        eprintln!(
            "note: no desired value is held alike by every member; the template declares none"
        );
    }
    let shared_leaves = shared
        .desired
        .as_ref()
        .map_or(0, |d| crate::planner::paths::leaf_paths(d).len());
    eprintln!(
        "imported 1 ThingShadowSet manifest: {} member(s), {} with the shadow, {shared_leaves} shared leaf path(s), {} left out",
        members.len(),
        with_shadow.len(),
        shared.left_out.len()
    );
    0
}

/// Reads one rendered set with the loader `apply` uses.
fn read_back_set(yaml: &str) -> Result<ThingShadowSet, String> {
    let mut loaded = manifest::Loaded::default();
    manifest::parse_documents("import", yaml, &mut loaded);
    if let Some(err) = loaded.errors.first() {
        return Err(format!("the manifest does not read back: {}", err.message));
    }
    match loaded.sets.pop() {
        Some(set) if loaded.sets.is_empty() && loaded.manifests.is_empty() => Ok(*set.set),
        _ => Err("the manifest does not read back as one ThingShadowSet".into()),
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

/// One `ThingShadow` document per shadow, kept only if it reads back as this thing,
/// this shadow and this desired state; a warning when `apply` would refuse it with the
/// current limits.
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
        let yaml = shadow_manifest(shadow, &name, namespace);
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

/// One `RetainedMessage` document per message: the first manifest that reads back as a
/// publish of the same payload bytes, QoS and user properties (an error when none
/// does); a warning when `apply` would refuse it with the current limits.
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
        for yaml in retained_manifests(message, &name, namespace) {
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
