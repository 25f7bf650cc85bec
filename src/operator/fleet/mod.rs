//! The `ThingShadowSet` controller: gather → plan → record → act. Unlike the other kinds
//! its writes go to Kubernetes (the children), not to the data plane, and its status is
//! written before them.
//!
//! - **Gather**: the set (kube-runtime's cache of the sets), its membership (read from
//!   the registry when the selector changed or `resyncInterval` passed, never on every
//!   pass; a failed read keeps the last membership), its children (`children`: the
//!   labelled ThingShadows as the ThingShadow controller's watch shows them, reduced to
//!   facts), the things whose child name another object holds.
//! - **Plan**: `planner::fleet::plan_set`, pure.
//! - **Record**: the status by server-side apply with the operator's field manager, only
//!   when it changed and at most once a second per set (passes are spaced by
//!   [`MIN_PASS_INTERVAL`]: a rollout of thousands of devices changes children all the
//!   time). It comes before the writes: it holds the rollout's memory, and a pass with
//!   thousands of writes lasts minutes.
//! - **Act**: create children (`create`; a name held by another object makes the thing
//!   conflicting), update them (one JSON patch with the uid as a `test`: the spec
//!   replaced, the revision annotations set), delete leavers (with a uid precondition).
//!   At most [`WRITE_CONCURRENCY`] writes at once. Then the Events of phase changes.
//!
//! Deleting a set deletes its children through Kubernetes garbage collection (each
//! child's ownerReference has `controller` and `blockOwnerDeletion`), and each child's
//! own finalizer runs its deletionPolicy; with foreground deletion the set goes last.
//! The set itself has no finalizer.

mod children;

pub use children::Children;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::controller::status_apply;
use super::events::Record;
use super::{Context, OperatorError};
use crate::api::validate::{parse_duration, validate_thing_shadow_set};
use crate::api::{
    ShadowTemplate, ThingShadow, ThingShadowSet, ThingShadowSetStatus, PAUSED_ANNOTATION,
    REVISION_ANNOTATION, REVISION_TIME_ANNOTATION, SET_LABEL,
};
use crate::dataplane::registry::Registry;
use crate::planner::fleet::naming::child_name;
use crate::planner::fleet::{plan_set, ChildChange, Membership, SetInput};
use children::SetKey;

/// Objects per page of the list of the sets.
const LIST_PAGE_SIZE: u32 = 100;
/// Passes of one set are at least this far apart (and so are its status writes).
pub const MIN_PASS_INTERVAL: Duration = Duration::from_secs(1);
/// Child writes in flight at once, per set. (32 created the children of a 10,000-thing
/// set faster, ~290 a second against ~250, with no measurable gain in the set's time to
/// converge, and twice the requests in flight.)
pub const WRITE_CONCURRENCY: usize = 16;
/// The kind, in logs and the liveness probe.
const KIND: &str = "ThingShadowSet";

/// What the controller remembers of one set between passes (by uid).
#[derive(Default)]
struct Remembered {
    /// A hash of the selector the membership was read for (a list of 10,000 names would
    /// otherwise be kept a second time, and serialized on every pass to compare).
    selector: u64,
    things: Option<Arc<Vec<String>>>,
    read_at: Option<Instant>,
    read_time: Option<chrono::DateTime<Utc>>,
    error: Option<String>,
    /// Things whose child name another object holds.
    foreign: BTreeMap<String, String>,
    last_pass: Option<Instant>,
    last_status_write: Option<Instant>,
}

struct Fleet {
    ctx: Arc<Context>,
    registry: Arc<dyn Registry>,
    /// The cached sets: what is remembered of a set that is gone is dropped.
    sets: reflector::Store<ThingShadowSet>,
    remembered: Mutex<HashMap<String, Remembered>>,
}

/// Runs the set controller until `shutdown`. `woken` names the sets whose children
/// changed (from [`Children`], which the ThingShadow controller's watch feeds). `ready`
/// is called once the sets and the children are listed.
pub async fn run(
    ctx: Arc<Context>,
    registry: Arc<dyn Registry>,
    namespace: Option<&str>,
    woken: impl futures::Stream<Item = ObjectRef<ThingShadowSet>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    ready: impl FnOnce() + Send + 'static,
) {
    let sets: Api<ThingShadowSet> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let (reader, writer) = reflector::store::<ThingShadowSet>();
    let fleet = Arc::new(Fleet {
        ctx: ctx.clone(),
        registry,
        sets: reader.clone(),
        remembered: Mutex::new(HashMap::new()),
    });

    // A pass is needed when the spec (generation), the pause annotation or the deletion
    // changes; not on the operator's own status writes.
    let sets_stream = watcher::watcher(
        sets,
        watcher::Config::default()
            .any_semantic()
            .page_size(LIST_PAGE_SIZE),
    )
    .default_backoff()
    .inspect({
        // Liveness: a failing watch is a stall once it has failed for long enough.
        let ctx = ctx.clone();
        move |event| match event {
            Ok(_) => ctx.health.progress.watch_answered(KIND),
            Err(err) => {
                warn!(kind = KIND, error = %err, "watch failed; retrying");
                ctx.health.progress.watch_failed(KIND, Instant::now());
            }
        }
    })
    .modify(|set: &mut ThingShadowSet| set.metadata.managed_fields = None)
    .reflect(writer)
    .applied_objects()
    .predicate_filter(trigger_key, Default::default());
    {
        let store = reader.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                let synced =
                    tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
                        .await;
                match synced {
                    Ok(Ok(())) if ctx.children.ready() => {
                        info!(kind = KIND, "cache synced");
                        ready();
                        return;
                    }
                    Ok(Err(_)) => return,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    }
    let shutdown = shutdown.shared();
    let unsynced_shutdown = {
        let shutdown = shutdown.clone();
        let store = reader.clone();
        async move {
            shutdown.await;
            if store.wait_until_ready().now_or_never().is_some() {
                std::future::pending::<()>().await;
            }
        }
    };
    let controller = Controller::for_stream(sets_stream, reader)
        .with_config(kube::runtime::Config::default().concurrency(ctx.concurrency))
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, fleet)
        .for_each(|result| async move {
            if let Err(err) = result {
                debug!(error = %err, "set reconcile loop");
            }
        });
    tokio::select! {
        () = controller => {}
        () = unsynced_shutdown => {}
    }
    if shutdown.now_or_never().is_none() {
        warn!(kind = KIND, "the controller stopped before shutdown");
        ctx.health.progress.loop_ended(KIND);
    }
}

/// What wakes a set: its generation, the pause annotation, deletion.
fn trigger_key(set: &ThingShadowSet) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    set.metadata.generation.hash(&mut hasher);
    paused(set).hash(&mut hasher);
    set.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

fn paused(set: &ThingShadowSet) -> bool {
    set.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// A failed pass is tried again after the same backoff as a ThingShadow's (2 s doubling
/// to 5 minutes, per set): e.g. for up to 30 s after the CRDs are installed the apiserver
/// refuses children with `blockOwnerDeletion` until it can map the owner's kind.
fn error_policy(set: Arc<ThingShadowSet>, err: &OperatorError, fleet: Arc<Fleet>) -> Action {
    let delay = fleet
        .ctx
        .resources
        .next_backoff(&set.uid().unwrap_or_default());
    warn!(set = %set.name_any(), error = %err, reason = %err.reason(), retry_in = ?delay,
          "set pass failed");
    Action::requeue(delay)
}

async fn reconcile(set: Arc<ThingShadowSet>, fleet: Arc<Fleet>) -> Result<Action, OperatorError> {
    let _running = fleet
        .ctx
        .health
        .progress
        .reconcile_started(KIND, Instant::now());
    if set.metadata.deletion_timestamp.is_some() {
        // Garbage collection deletes the children; nothing to write.
        return Ok(Action::await_change());
    }
    if !fleet.ctx.children.ready() {
        return Ok(Action::requeue(MIN_PASS_INTERVAL));
    }
    let (Some(namespace), Some(uid)) = (set.namespace(), set.uid()) else {
        return Ok(Action::await_change());
    };
    let name = set.name_any();
    // Space the passes: a rollout's children change all the time.
    if let Some(wait) = fleet.too_soon(&uid) {
        return Ok(Action::requeue(wait));
    }

    let limits = fleet.ctx.syncer.limits();
    let valid = validate_thing_shadow_set(&name, &set.spec, limits).is_ok();
    let resync = parse_duration(&set.spec.resync_interval).unwrap_or(Duration::from_secs(300));
    if valid {
        fleet.read_membership(&uid, &set, resync).await;
    }
    let prior = set.status.clone().unwrap_or_default();
    let key: SetKey = (namespace.clone(), name.clone());
    let (things, read_time, error, foreign) = fleet.membership(&uid);
    let now = Utc::now();
    let plan = fleet.ctx.children.with_set(&key, |children| {
        plan_set(&SetInput {
            name: &name,
            generation: set.metadata.generation,
            spec: &set.spec,
            prior: &prior,
            membership: Membership {
                things: things.as_deref().map(Vec::as_slice),
                read_time,
                error,
            },
            children,
            foreign: &foreign,
            paused: paused(&set),
            now,
            limits,
        })
    });

    // The status before the children: it holds the rollout's memory (revision, step),
    // which the writes act on, and a pass that writes thousands of children takes
    // minutes, during which the set shows this pass's counts and step. At most one status
    // write a second: a pass less than a second after the last write does nothing and
    // comes back. It must not act: the next pass would plan from the old memory (a step
    // advanced, its devices updated, and the status still naming the step before).
    if plan.status != prior {
        if let Some(wait) = fleet.status_written_recently(&uid) {
            // This pass only planned: the next one need not wait a whole interval.
            fleet.pass_abandoned(&uid);
            return Ok(Action::requeue(wait));
        }
        write_status(&fleet.ctx, &namespace, &name, &plan.status).await?;
    }
    let mut next = plan.recheck_after;

    let owner = owner_reference(&set, &uid);
    // Each write's future is made when its turn comes: at most WRITE_CONCURRENCY exist
    // at once, whatever the size of the fleet.
    let changes = &plan.changes;
    let outcomes = futures::stream::iter(0..changes.len())
        .map(|i| fleet.perform(&namespace, &name, &owner, &changes[i]))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(Some((thing, why))) => fleet.foreign(&uid, thing, why),
            Ok(None) => {}
            Err(err) => failures.push(err),
        }
    }

    for event in &plan.events {
        let record = Record {
            warning: event.warning,
            reason: event.reason.as_str(),
            note: &event.message,
            action: "Rollout",
        };
        if let Err(err) = fleet
            .ctx
            .events
            .publish(&record, &set.object_ref(&()))
            .await
        {
            warn!(error = %err, set = %name, "cannot record an Event");
        }
    }
    if let Some(err) = failures.into_iter().next() {
        return Err(err);
    }
    fleet.ctx.resources.reset_backoff(&uid);
    // Look again for a step timeout or the next membership read, whichever is first;
    // changes of the children wake the set anyway.
    if valid && set.spec.selector.things.is_none() {
        next = Some(next.map_or(resync, |n| n.min(resync)));
    }
    Ok(match next {
        Some(after) => Action::requeue(after.max(MIN_PASS_INTERVAL)),
        None => Action::await_change(),
    })
}

impl Fleet {
    /// `Some(wait)` when the last pass of the set was less than MIN_PASS_INTERVAL ago;
    /// otherwise records this pass.
    fn too_soon(&self, uid: &str) -> Option<Duration> {
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() > self.sets.len() {
            // Some set is gone (deleted sets get no pass): forget it, its membership
            // included.
            let live: std::collections::HashSet<String> =
                self.sets.state().iter().filter_map(|s| s.uid()).collect();
            remembered.retain(|uid, _| {
                let keep = live.contains(uid);
                if !keep {
                    self.ctx.resources.forget(uid);
                }
                keep
            });
        }
        let entry = remembered.entry(uid.to_string()).or_default();
        spaced(&mut entry.last_pass, Instant::now())
    }

    /// Forgets the start of this pass, which wrote nothing, so that the next one is not
    /// spaced from it.
    fn pass_abandoned(&self, uid: &str) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = remembered.get_mut(uid) {
            entry.last_pass = None;
        }
    }

    /// `Some(wait)` when the set's status was written less than MIN_PASS_INTERVAL ago;
    /// otherwise records a write now.
    fn status_written_recently(&self, uid: &str) -> Option<Duration> {
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        let entry = remembered.entry(uid.to_string()).or_default();
        spaced(&mut entry.last_status_write, Instant::now())
    }

    /// Reads the membership when the selector changed, it was never read, or
    /// `resync` has passed since the last read.
    async fn read_membership(&self, uid: &str, set: &ThingShadowSet, resync: Duration) {
        let selector = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            set.spec.selector.hash(&mut hasher);
            hasher.finish()
        };
        let due = {
            let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            remembered.get(uid).is_none_or(|r| {
                r.selector != selector
                    || r.things.is_none()
                    || r.read_at.is_none_or(|at| at.elapsed() >= resync)
            })
        };
        if !due {
            return;
        }
        let result = crate::fleet::membership::resolve(&*self.registry, &set.spec.selector).await;
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        let entry = remembered.entry(uid.to_string()).or_default();
        entry.read_at = Some(Instant::now());
        match result {
            Ok(things) => {
                // A name held by another object is tried again on each read: the
                // object may be gone.
                entry.foreign.clear();
                entry.selector = selector;
                entry.things = Some(Arc::new(things));
                entry.read_time = Some(Utc::now());
                entry.error = None;
            }
            Err(err) => {
                warn!(set = %set.name_any(), error = %err, "cannot read the set's membership");
                if entry.selector != selector {
                    // The old membership belongs to another selector.
                    entry.things = None;
                    entry.selector = selector;
                }
                entry.error = Some(err.to_string());
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn membership(
        &self,
        uid: &str,
    ) -> (
        Option<Arc<Vec<String>>>,
        Option<chrono::DateTime<Utc>>,
        Option<String>,
        BTreeMap<String, String>,
    ) {
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        match remembered.get(uid) {
            Some(r) => (
                r.things.clone(),
                r.read_time,
                r.error.clone(),
                r.foreign.clone(),
            ),
            None => (None, None, None, BTreeMap::new()),
        }
    }

    fn foreign(&self, uid: &str, thing: String, why: String) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        remembered
            .entry(uid.to_string())
            .or_default()
            .foreign
            .insert(thing, why);
    }

    /// Makes one change. `Ok(Some((thing, why)))`: the child's name is held by an object
    /// that is not this set's child.
    async fn perform(
        &self,
        namespace: &str,
        set: &str,
        owner: &OwnerReference,
        change: &ChildChange,
    ) -> Result<Option<(String, String)>, OperatorError> {
        let api: Api<ThingShadow> = Api::namespaced(self.ctx.client.clone(), namespace);
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        match change {
            ChildChange::Create {
                thing,
                revision,
                template,
            } => {
                let name = child_name(set, thing);
                let child = new_child(
                    &name, namespace, set, owner, thing, revision, template, &now,
                );
                let body = serde_json::to_vec(&child)
                    .map_err(|e| OperatorError::Internal(e.to_string()))?;
                let request = kube::core::Request::new(api.resource_url())
                    .create(&PostParams::default(), body)
                    .map_err(|e| OperatorError::Kube(kube::Error::BuildRequest(e)))?;
                match self
                    .ctx
                    .client
                    .request::<serde::de::IgnoredAny>(request)
                    .await
                {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        // Ours and not seen yet by the watch, or someone else's.
                        match api.get_opt(&name).await.map_err(OperatorError::Kube)? {
                            Some(existing) if is_child_of(&existing, owner) => Ok(None),
                            Some(_) => Ok(Some((
                                thing.clone(),
                                format!(
                                    "a ThingShadow named {name} already exists and is not this set's child"
                                ),
                            ))),
                            None => Ok(None),
                        }
                    }
                    Err(err) => Err(OperatorError::Kube(err)),
                }
            }
            ChildChange::Update {
                thing,
                name,
                uid,
                revision,
                template,
                annotated,
            } => {
                let spec = serde_json::to_value(template.spec_for(thing))
                    .map_err(|e| OperatorError::Internal(e.to_string()))?;
                for patch in update_patches(uid, revision, &now, spec, *annotated)? {
                    let request = kube::core::Request::new(api.resource_url())
                        .patch(name, &PatchParams::default(), &patch)
                        .map_err(|e| OperatorError::Kube(kube::Error::BuildRequest(e)))?;
                    match self
                        .ctx
                        .client
                        .request::<serde::de::IgnoredAny>(request)
                        .await
                    {
                        Ok(_) => {}
                        // Gone, or replaced by another object: the watch will tell.
                        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {
                            return Ok(None)
                        }
                        Err(err) => return Err(OperatorError::Kube(err)),
                    }
                }
                Ok(None)
            }
            ChildChange::Delete { name, uid, .. } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(name, &params).await {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(None),
                    Err(err) => Err(OperatorError::Kube(err)),
                }
            }
        }
    }
}

/// The patches that give an existing child (`uid`) a revision: the spec replaced and the
/// revision annotations set, the child's uid tested first. A child that has annotations
/// gets one JSON patch (atomic: a child never carries the new spec under the old
/// revision, and one request per child in a rollout of thousands). One without any gets
/// a merge patch of the annotations first (a JSON patch cannot add to a map that is not
/// there, and adding the map would replace one made meanwhile), then the spec.
fn update_patches(
    uid: &str,
    revision: &str,
    now: &str,
    spec: serde_json::Value,
    annotated: bool,
) -> Result<Vec<Patch<serde_json::Value>>, OperatorError> {
    let pointer = |key: &str| {
        format!(
            "/metadata/annotations/{}",
            key.replace('~', "~0").replace('/', "~1")
        )
    };
    let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": uid})];
    let mut patches = Vec::with_capacity(2);
    if annotated {
        ops.push(json!({"op": "add", "path": pointer(REVISION_ANNOTATION), "value": revision}));
        ops.push(json!({"op": "add", "path": pointer(REVISION_TIME_ANNOTATION), "value": now}));
    } else {
        patches.push(Patch::Merge(json!({"metadata": {"annotations": {
            REVISION_ANNOTATION: revision,
            REVISION_TIME_ANNOTATION: now,
        }}})));
    }
    ops.push(json!({"op": "replace", "path": "/spec", "value": spec}));
    let ops: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
        .map_err(|e| OperatorError::Internal(e.to_string()))?;
    patches.push(Patch::Json(ops));
    Ok(patches)
}

/// `Some(wait)` when `last` is less than MIN_PASS_INTERVAL before `now`; otherwise sets
/// `last` to `now`.
fn spaced(last: &mut Option<Instant>, now: Instant) -> Option<Duration> {
    if let Some(since) = last.map(|last| now.duration_since(last)) {
        if since < MIN_PASS_INTERVAL {
            return Some(MIN_PASS_INTERVAL - since);
        }
    }
    *last = Some(now);
    None
}

fn owner_reference(set: &ThingShadowSet, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: crate::api::API_VERSION.to_string(),
        kind: "ThingShadowSet".to_string(),
        name: set.name_any(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn is_child_of(shadow: &ThingShadow, owner: &OwnerReference) -> bool {
    shadow
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.uid == owner.uid && r.controller == Some(true))
        })
}

#[allow(clippy::too_many_arguments)]
fn new_child(
    name: &str,
    namespace: &str,
    set: &str,
    owner: &OwnerReference,
    thing: &str,
    revision: &str,
    template: &ShadowTemplate,
    now: &str,
) -> ThingShadow {
    ThingShadow {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some([(SET_LABEL.to_string(), set.to_string())].into()),
            annotations: Some(
                [
                    (REVISION_ANNOTATION.to_string(), revision.to_string()),
                    (REVISION_TIME_ANNOTATION.to_string(), now.to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: template.spec_for(thing),
        status: None,
    }
}

/// Server-side apply of the set's status with the operator's field manager.
async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &ThingShadowSetStatus,
) -> Result<(), OperatorError> {
    let api: Api<ThingShadowSet> = Api::namespaced(ctx.client.clone(), namespace);
    let (params, patch) = status_apply("ThingShadowSet", status);
    // The answer (the whole set, 10,000 thing names perhaps) is parsed, not built.
    let request = kube::core::Request::new(api.resource_url())
        .patch_subresource("status", name, &params, &patch)
        .map_err(|e| OperatorError::Kube(kube::Error::BuildRequest(e)))?;
    ctx.client
        .request::<serde::de::IgnoredAny>(request)
        .await
        .map_err(OperatorError::Kube)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies the patches as kube-apiserver does (RFC 7386 merge, RFC 6902 JSON patch).
    fn apply(
        mut doc: serde_json::Value,
        patches: &[Patch<serde_json::Value>],
    ) -> Result<serde_json::Value, json_patch::PatchError> {
        for patch in patches {
            match patch {
                Patch::Merge(merge) => json_patch::merge(&mut doc, merge),
                Patch::Json(ops) => json_patch::patch(&mut doc, ops)?,
                other => panic!("unexpected patch {other:?}"),
            }
        }
        Ok(doc)
    }

    fn child(annotations: Option<serde_json::Value>) -> serde_json::Value {
        let mut doc = json!({
            "metadata": {"name": "lamps-l1-0123abcd", "uid": "u-1"},
            "spec": {"thingName": "l1", "desired": {"power": "on"}},
        });
        if let Some(annotations) = annotations {
            doc["metadata"]["annotations"] = annotations;
        }
        doc
    }

    #[test]
    fn an_annotated_child_is_updated_by_one_json_patch_that_keeps_other_annotations() {
        let spec = json!({"thingName": "l1", "desired": {"power": "off"}});
        let patches = update_patches("u-1", "r2", "2026-12-07T10:00:00Z", spec.clone(), true)
            .expect("patches");
        assert_eq!(patches.len(), 1, "one request per child");
        let before = child(Some(json!({
            REVISION_ANNOTATION: "r1",
            REVISION_TIME_ANNOTATION: "2026-12-01T00:00:00Z",
            "team": "lighting",
        })));
        let after = apply(before, &patches).expect("the patch applies");
        assert_eq!(
            after["metadata"]["annotations"],
            json!({
                REVISION_ANNOTATION: "r2",
                REVISION_TIME_ANNOTATION: "2026-12-07T10:00:00Z",
                "team": "lighting",
            })
        );
        assert_eq!(after["spec"], spec);
    }

    #[test]
    fn an_update_of_a_replaced_child_changes_nothing() {
        let spec = json!({"thingName": "l1", "desired": {"power": "off"}});
        let patches =
            update_patches("u-0", "r2", "2026-12-07T10:00:00Z", spec, true).expect("patches");
        let before = child(Some(json!({REVISION_ANNOTATION: "r1"})));
        assert!(
            apply(before, &patches).is_err(),
            "the uid test fails for another object of the same name"
        );
    }

    #[test]
    fn a_child_without_annotations_gets_them_by_merge_then_the_spec() {
        let spec = json!({"thingName": "l1", "desired": {"power": "off"}});
        let patches = update_patches("u-1", "r2", "2026-12-07T10:00:00Z", spec.clone(), false)
            .expect("patches");
        assert_eq!(patches.len(), 2);
        assert!(matches!(patches[0], Patch::Merge(_)), "annotations first");
        let after = apply(child(None), &patches).expect("the patches apply");
        assert_eq!(
            after["metadata"]["annotations"],
            json!({REVISION_ANNOTATION: "r2", REVISION_TIME_ANNOTATION: "2026-12-07T10:00:00Z"})
        );
        assert_eq!(after["spec"], spec);
    }
}
