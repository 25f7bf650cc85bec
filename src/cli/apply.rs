//! `shadowsync apply` and `shadowsync diff`: reconcile manifest files once, straight
//! against a data plane, with the same planner and sync pass the operator runs.
//!
//! A `ThingShadowSet` is first expanded into one ThingShadow per selected thing, its
//! membership read from the data plane's registry, and applied all at once (see
//! [`super::sets`]: staged rollouts need the operator).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use super::manifest::{self, Manifest, Resource};
use super::sets::{self, FailedSet};
use super::state::{State, StateFile, Stored};
use super::target::DataPlaneArgs;
use crate::api::{RetainedMessage, ThingShadow, ThingShadowSetStatus, API_VERSION};
use crate::kinds::Kind;
use crate::planner::conditions::{Reason, Refusal};
use crate::sync::{PayloadInput, SyncOptions, Syncer};

/// Where `apply` and `diff` keep their files by default.
pub const DEFAULT_DIR: &str = ".shadowsync";

/// Output format of `apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table: kind, name, target, Ready, reason (and the messages of resources not Ready).
    Table,
    /// The resulting status of each resource, as YAML documents.
    Yaml,
    /// The resulting status of each resource, as one JSON list.
    Json,
}

/// Flags shared by `apply` and `diff`.
#[derive(clap::Args, Debug, Clone)]
pub struct ManifestArgs {
    /// Manifest files or folders (`-` reads standard input). Repeatable.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Also read the sub-folders of folders given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// State file: what was last written for each resource (ownership of shadow keys).
    #[arg(
        long,
        env = "SHADOWSYNC_STATE",
        default_value = ".shadowsync/state.json"
    )]
    pub state: PathBuf,
    /// Resources reconciled at once.
    #[arg(long, env = "SHADOWSYNC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    #[command(flatten)]
    pub dataplane: DataPlaneArgs,
}

/// `shadowsync apply` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The outcome of one resource.
struct Outcome {
    kind: &'static str,
    key: String,
    target: String,
    ready: bool,
    reason: String,
    message: String,
    status: Value,
    /// `diff`: lines describing what a write would change.
    changes: Vec<String>,
    /// Refused before any call (invalid spec, duplicate target).
    refused: bool,
}

/// Exit codes: 0 all Ready (apply) / in sync (diff); 1 not Ready / differences; 2 errors.
pub async fn apply(args: ApplyArgs) -> u8 {
    run(&args.manifests, Mode::Apply(args.output)).await
}

/// `shadowsync diff`: what `apply` would write, without writing.
pub async fn diff(args: ManifestArgs) -> u8 {
    run(&args, Mode::Diff).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply(Output),
    Diff,
}

async fn run(args: &ManifestArgs, mode: Mode) -> u8 {
    let loaded = manifest::load(&args.files, args.recursive);
    for note in &loaded.skipped {
        eprintln!("note: {note}");
    }
    if !loaded.errors.is_empty() {
        for err in &loaded.errors {
            eprintln!("error: {err}");
        }
        eprintln!("nothing was written: fix the manifests above and run again");
        return 2;
    }
    let declared = loaded
        .manifests
        .iter()
        .map(|m| (m.resource.kind(), m.resource.key(), m.source.as_str()))
        .chain(
            loaded
                .sets
                .iter()
                .map(|s| ("ThingShadowSet", s.key(), s.source.as_str())),
        );
    if let Some(message) = duplicate_names(declared) {
        eprintln!("error: {message}\nnothing was written");
        return 2;
    }
    if loaded.manifests.is_empty() && loaded.sets.is_empty() {
        eprintln!("error: no ThingShadow, RetainedMessage or ThingShadowSet manifests found");
        return 2;
    }
    let mut state = match StateFile::open(&args.state) {
        Ok(state) => state,
        Err(err) => {
            eprintln!("error: {err}");
            return 2;
        }
    };
    let settings = args.dataplane.settings();
    let default_db = Path::new(DEFAULT_DIR).join("dataplane.redb");
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
    // Lines for the user go with the table (stdout), or to stderr when stdout carries
    // YAML or JSON.
    let say = |line: &str| match mode {
        Mode::Apply(Output::Table) | Mode::Diff => println!("{line}"),
        Mode::Apply(_) => eprintln!("{line}"),
    };
    say(&format!("Using the {}.", connected.description));
    let dry_run = mode == Mode::Diff;
    let expansion = sets::expand(
        &loaded.manifests,
        &loaded.sets,
        connected.registry.as_ref(),
        &settings.limits(),
        dry_run,
    )
    .await;
    for note in &expansion.notes {
        say(note);
    }
    let manifests = expansion.manifests;
    if let Some(message) = duplicate_names(
        manifests
            .iter()
            .map(|m| (m.resource.kind(), m.resource.key(), m.source.as_str())),
    ) {
        eprintln!("error: {message}\nnothing was written");
        return 2;
    }
    let syncer = Syncer::new(connected.data_plane).with_limits(settings.limits());
    let owners = owners(&manifests);
    let progress = progress_bar(manifests.len());
    let state_ref = &state.state;
    let outcomes: Vec<Outcome> = stream::iter(manifests.iter().enumerate())
        .map(|(index, manifest)| {
            let syncer = syncer.clone();
            let owner = owners.get(&index).cloned();
            let progress = progress.clone();
            async move {
                let outcome = reconcile(&syncer, manifest, owner, state_ref, dry_run).await;
                progress.inc(1);
                outcome
            }
        })
        .buffered(args.concurrency.max(1))
        .collect()
        .await;
    progress.finish_and_clear();

    if !dry_run {
        for (manifest, outcome) in manifests.iter().zip(&outcomes) {
            remember(&mut state, manifest, outcome);
        }
        if let Err(err) = state.save() {
            eprintln!("error: {err}");
            return 2;
        }
    }
    let outcomes = with_failed_sets(outcomes, &expansion.failed);
    match mode {
        Mode::Apply(output) => report_apply(&outcomes, output),
        Mode::Diff => report_diff(&outcomes),
    }
}

/// One resource, one pass.
async fn reconcile(
    syncer: &Syncer,
    manifest: &Manifest,
    owner: Option<String>,
    state: &State,
    dry_run: bool,
) -> Outcome {
    let key = manifest.resource.key();
    match &manifest.resource {
        Resource::ThingShadow(r) => {
            reconcile_kind(syncer, r.as_ref(), key, owner, state, dry_run).await
        }
        Resource::RetainedMessage(r) => {
            reconcile_kind(syncer, r.as_ref(), key, owner, state, dry_run).await
        }
    }
}

/// One resource of kind `K`: refused before any call when an earlier manifest owns its
/// target or its target differs from the one the state file remembers for it, else one
/// sync pass from the remembered status.
async fn reconcile_kind<K: Stored>(
    syncer: &Syncer,
    resource: &K,
    key: String,
    owner: Option<String>,
    state: &State,
    dry_run: bool,
) -> Outcome {
    let target = resource.target_column();
    let entry = K::entries(state).get(&key);
    let prior = entry
        .map(|e| K::entry_status(e).clone())
        .unwrap_or_default();
    let refusal = owner
        .map(|owner| {
            (
                Reason::DuplicateTarget,
                resource.duplicate_of(&owner).to_string(),
            )
        })
        .or_else(|| {
            entry.and_then(|e| moved(&K::entry_target(e), &resource.target_fields(), &key))
        });
    if let Some((reason, message)) = refusal {
        let mut status = prior;
        let refusal = Refusal {
            reason,
            message,
            stalled: true,
            not_synced: false,
            event: false,
        };
        refusal.set_conditions(K::conditions_mut(&mut status), None, &crate::sync::now());
        return refused(
            K::KIND,
            key,
            target,
            refusal.reason.as_str(),
            refusal.message,
            &status,
        );
    }
    // Without a cluster, a Secret or ConfigMap payload cannot be read.
    let payload = if resource.references_payload() {
        PayloadInput::Unavailable
    } else {
        PayloadInput::Inline
    };
    let opts = SyncOptions {
        generation: None,
        force: false,
        dry_run,
        reconcile_requested_at: None,
    };
    let synced = resource.sync(syncer, prior, payload, &opts).await;
    outcome(
        K::KIND,
        key,
        target,
        synced.ready,
        K::conditions(&synced.status),
        json_status(&synced.status),
        synced.changes,
    )
}

/// The first target field that differs from what the state file remembers: such a
/// change is refused, as the CRD refuses it in a cluster.
fn moved(
    remembered: &[(&'static str, String)],
    now: &[(&'static str, String)],
    key: &str,
) -> Option<(Reason, String)> {
    remembered
        .iter()
        .zip(now)
        .find(|(was, is)| was.1 != is.1)
        .map(|((field, was), _)| immutable(field, was, key))
}

fn immutable(field: &str, was: &str, key: &str) -> (Reason, String) {
    (
        Reason::InvalidSpec,
        format!(
            "{field}: is immutable (was {was:?}); delete {key} from the state file or use a new name to manage another target"
        ),
    )
}

fn json_status<T: serde::Serialize>(status: &T) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

fn outcome(
    kind: &'static str,
    key: String,
    target: String,
    ready: bool,
    conditions: &[crate::api::Condition],
    status: Value,
    changes: Vec<String>,
) -> Outcome {
    let ready_condition = conditions.iter().find(|c| c.type_ == "Ready");
    let refused = conditions
        .iter()
        .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == Reason::InvalidSpec)
        || conditions.iter().any(|c| {
            c.type_ == "Stalled"
                && c.status == "True"
                && c.reason == Reason::PayloadSourceUnavailable
        });
    Outcome {
        kind,
        key,
        target,
        ready,
        reason: ready_condition
            .map(|c| c.reason.clone())
            .unwrap_or_default(),
        message: ready_condition
            .map(|c| c.message.clone())
            .unwrap_or_default(),
        status,
        changes,
        refused,
    }
}

fn refused<T: serde::Serialize>(
    kind: &'static str,
    key: String,
    target: String,
    reason: &str,
    message: String,
    status: &T,
) -> Outcome {
    Outcome {
        kind,
        key,
        target,
        ready: false,
        reason: reason.to_string(),
        message,
        status: json_status(status),
        changes: Vec::new(),
        refused: true,
    }
}

/// Keeps the new status of `manifest` for the next run. A resource refused before any
/// call keeps its previous entry untouched (its ownership is still what the cloud holds).
fn remember(state: &mut StateFile, manifest: &Manifest, outcome: &Outcome) {
    if outcome.refused {
        return;
    }
    match &manifest.resource {
        Resource::ThingShadow(r) => keep(state, r.as_ref(), outcome),
        Resource::RetainedMessage(r) => keep(state, r.as_ref(), outcome),
    }
}

fn keep<K: Stored>(state: &mut StateFile, resource: &K, outcome: &Outcome) {
    if let Ok(status) = serde_json::from_value::<K::Status>(outcome.status.clone()) {
        K::entries_mut(&mut state.state).insert(outcome.key.clone(), resource.entry(status));
    }
}

/// Two manifests of one kind with the same namespace/name are one resource declared
/// twice. Each item is (kind, `namespace/name`, source).
fn duplicate_names<'a>(
    declared: impl IntoIterator<Item = (&'static str, String, &'a str)>,
) -> Option<String> {
    let mut seen: HashMap<(&str, String), &str> = HashMap::new();
    for (kind, key, source) in declared {
        if let Some(first) = seen.insert((kind, key.clone()), source) {
            return Some(format!(
                "{kind} {key} is declared twice ({first} and {source})"
            ));
        }
    }
    None
}

/// The outcomes of the synced resources with a row for each set that could not be
/// expanded, at its place in the input.
fn with_failed_sets(outcomes: Vec<Outcome>, failed: &[FailedSet]) -> Vec<Outcome> {
    let mut failed = failed.iter().peekable();
    let mut all = Vec::with_capacity(outcomes.len() + failed.len());
    for (index, outcome) in outcomes.into_iter().enumerate() {
        while let Some(set) = failed.next_if(|f| f.position <= index) {
            all.push(failed_set(set));
        }
        all.push(outcome);
    }
    all.extend(failed.map(failed_set));
    all
}

/// The row of a set that yielded no children: not Ready, with the reason, and the
/// conditions the operator would give it.
fn failed_set(set: &FailedSet) -> Outcome {
    let mut status = ThingShadowSetStatus::default();
    let refusal = Refusal {
        reason: set.reason,
        message: set.message.clone(),
        stalled: set.stalled,
        not_synced: set.reason != Reason::InvalidSpec,
        event: false,
    };
    refusal.set_conditions(&mut status.conditions, None, &crate::sync::now());
    refused(
        "ThingShadowSet",
        set.key.clone(),
        set.selector.clone(),
        set.reason.as_str(),
        set.message.clone(),
        &status,
    )
}

/// One owner per target: the first manifest naming a thing's shadow (or a topic) owns
/// it; each later one maps to the owner's `namespace/name`.
fn owners(manifests: &[Manifest]) -> HashMap<usize, String> {
    let mut first: HashMap<(&str, String), String> = HashMap::new();
    let mut later = HashMap::new();
    for (index, m) in manifests.iter().enumerate() {
        // The operator's target keys, one space per kind.
        let target = match &m.resource {
            Resource::ThingShadow(r) => (ThingShadow::KIND, r.target_key()),
            Resource::RetainedMessage(r) => (RetainedMessage::KIND, r.target_key()),
        };
        match first.get(&target) {
            Some(owner) => {
                later.insert(index, owner.clone());
            }
            None => {
                first.insert(target, m.resource.key());
            }
        }
    }
    later
}

fn progress_bar(len: usize) -> Arc<ProgressBar> {
    // Only worth drawing for many resources, and only on a terminal (indicatif hides
    // itself when stderr is not one).
    let bar = if len >= 20 {
        ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} resources {elapsed}") {
        bar.set_style(style);
    }
    Arc::new(bar)
}

fn report_apply(outcomes: &[Outcome], output: Output) -> u8 {
    match output {
        Output::Table => print_table(outcomes),
        Output::Yaml => {
            for o in outcomes {
                println!("---");
                // Quoted wherever YAML 1.1 and 1.2 readers would disagree, so that the
                // output reads back identically through kubectl and `apply`.
                print!("{}", super::yaml::document(&resource_view(o)));
            }
        }
        Output::Json => {
            let all: Vec<Value> = outcomes.iter().map(resource_view).collect();
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        }
    }
    let not_ready = outcomes.iter().filter(|o| !o.ready).count();
    if not_ready > 0 {
        eprintln!("{not_ready} of {} resource(s) not Ready", outcomes.len());
        1
    } else {
        0
    }
}

fn resource_view(o: &Outcome) -> Value {
    let (namespace, name) = o.key.split_once('/').unwrap_or(("default", &o.key));
    json!({
        "apiVersion": API_VERSION,
        "kind": o.kind,
        "metadata": {"name": name, "namespace": namespace},
        "status": o.status,
    })
}

fn print_table(outcomes: &[Outcome]) {
    let rows: Vec<[&str; 5]> = outcomes
        .iter()
        .map(|o| {
            [
                o.kind,
                o.key.as_str(),
                o.target.as_str(),
                if o.ready { "True" } else { "False" },
                o.reason.as_str(),
            ]
        })
        .collect();
    let header = ["KIND", "NAME", "TARGET", "READY", "REASON"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == 4 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out
    };
    println!("{}", line(header));
    for row in rows {
        println!("{}", line(row));
    }
    let failing: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ready).collect();
    if !failing.is_empty() {
        println!();
        for o in failing {
            println!("{} {}: {}: {}", o.kind, o.key, o.reason, o.message);
        }
    }
}

fn report_diff(outcomes: &[Outcome]) -> u8 {
    let mut differences = 0;
    let mut errors = 0;
    for o in outcomes {
        let pending = o.reason == Reason::Pending;
        if o.refused || (!o.ready && !pending) {
            errors += 1;
            println!(
                "{} {} -> {}: error: {}: {}",
                o.kind, o.key, o.target, o.reason, o.message
            );
        } else if !o.changes.is_empty() {
            differences += 1;
            println!("{} {} -> {}", o.kind, o.key, o.target);
            for change in &o.changes {
                println!("  {change}");
            }
        }
    }
    if errors > 0 {
        eprintln!("{errors} resource(s) could not be planned");
        2
    } else if differences > 0 {
        eprintln!("{differences} of {} resource(s) differ", outcomes.len());
        1
    } else {
        eprintln!("all {} resource(s) in sync", outcomes.len());
        0
    }
}
