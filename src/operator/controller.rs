//! The controller loop for one kind: watch, filter, reconcile, write status.
//!
//! A reconcile is idempotent and may be cut at any line: the tenancy check first (see
//! [`super::tenancy`]; a refused resource goes no further), then the finalizer, then one
//! sync pass (see [`crate::sync`]), then one server-side-apply status write only when the
//! status changed. Status writes never trigger a reconcile of their own: the watch is
//! filtered to changes of generation, of our annotations, of finalizers and of deletion.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::cache::{Cached, TargetIndex, Triggers};
use super::events::Record;
use super::kinds::Managed;
use super::refresh::Refreshes;
use super::{Context, OperatorError};
use crate::api::{ManagementPolicy, FINALIZER, PAUSED_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION};
use crate::dataplane::availability::is_outage_reason;
use crate::planner::conditions::{set_conditions, Health};
use crate::sync::{SyncEvent, SyncOptions};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "shadowsync";

/// Objects per list request when the watch (re)lists.
const LIST_PAGE_SIZE: u32 = 100;

/// Requeue of a resource that another resource already owns the target of.
const DUPLICATE_RECHECK: Duration = Duration::from_secs(10);

/// Runs the controller of one kind until shutdown. `ready` is called once the initial
/// list is in the cache.
pub async fn run<K: Managed>(
    ctx: Arc<Context>,
    api: Api<DynamicObject>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    ready: impl FnOnce() + Send + 'static,
) {
    let (reader, writer) = reflector::store::<Cached<K>>();
    let index = Arc::new(TargetIndex::default());
    let triggers = Arc::new(Triggers::default());
    let refreshes = Arc::new(Refreshes::default());
    let stream = triggered(
        decoded::<K>(
            api,
            ctx.clone(),
            index.clone(),
            triggers.clone(),
            refreshes.clone(),
            reader.clone(),
        )
        .reflect(writer),
        reader.clone(),
        triggers,
    );
    let store = reader.clone();
    tokio::spawn(async move {
        // The store's readiness signal wakes only its most recent waiter, and the
        // controller waits on it too: poll again now and then instead of waiting once.
        loop {
            match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    info!(kind = K::KIND, "cache synced");
                    ready();
                    return;
                }
                Ok(Err(_)) => {
                    warn!(kind = K::KIND, "the watch ended before the cache synced");
                    return;
                }
                Err(_) => continue,
            }
        }
    });
    let config = kube::runtime::Config::default().concurrency(ctx.concurrency);
    let owners = Owners {
        store: reader.clone(),
        index,
        refreshes: refreshes.clone(),
    };
    let shutdown = shutdown.shared();
    // kube-runtime holds its reconcile runner until the cache is ready and waits for the
    // runner on shutdown: a shutdown before the first list completed would wait for a
    // cache that never fills. Nothing can have run then, so there is nothing to wait for.
    let unsynced_shutdown = {
        let shutdown = shutdown.clone();
        let store = reader.clone();
        async move {
            shutdown.await;
            if store.wait_until_ready().now_or_never().is_some() {
                // Synced (or the watch ended): the controller finishes what runs.
                std::future::pending::<()>().await;
            }
            info!(kind = K::KIND, "stopped before the cache synced");
        }
    };
    let controller = Controller::for_shared_stream(stream, reader)
        .with_config(config)
        .reconcile_on(ctx.tenancy.requeues(owners.store.clone()))
        .reconcile_on(after_outages(ctx.clone(), owners.store.clone()))
        .reconcile_on(refreshes.fired())
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx| {
                let owners = owners.clone();
                async move { reconcile(obj, ctx, owners).await }
            },
            error_policy::<K>,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "reconcile loop");
            }
        });
    tokio::select! {
        () = controller => {}
        () = unsynced_shutdown => {}
    }
}

/// Watches the kind untyped and decodes each object on its own, so that one object that
/// does not deserialize is left out of the cache (and marked, see [`report_undecodable`])
/// instead of stopping the whole watch.
/// Objects are cached in their compact form ([`Cached`]) and indexed by target.
fn decoded<K: Managed>(
    api: Api<DynamicObject>,
    ctx: Arc<Context>,
    index: Arc<TargetIndex>,
    triggers: Arc<Triggers>,
    refreshes: Arc<Refreshes>,
    store: Store<Cached<K>>,
) -> impl Stream<Item = Result<watcher::Event<Cached<K>>, watcher::Error>> + Send {
    // Pages of 100 bound the memory of a relist to about one page of decoded objects
    // (client-go lists in pages of 500). An apiserver that serves resourceVersion=0
    // lists from its watch cache may ignore the limit and answer in one page.
    let config = watcher::Config::default()
        .any_semantic()
        .page_size(LIST_PAGE_SIZE);
    watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            // managedFields are most of a watched object's metadata and nothing here
            // reads them (the cache drops them): drop them before the object is copied
            // and decoded.
            let event = event.map(|event| {
                event.modify(|obj: &mut DynamicObject| obj.metadata.managed_fields = None)
            });
            let ctx = ctx.clone();
            let index = index.clone();
            let triggers = triggers.clone();
            let refreshes = refreshes.clone();
            let store = store.clone();
            async move {
                // An object that does not match: tell its owner on the object itself (not
                // only in the log), and drop a cached older version, which must not stay
                // in force. (A relist leaves it out of the new cache by itself.)
                let undecodable = |obj: &DynamicObject| {
                    let err = explain_undecodable::<K>(obj);
                    warn!(kind = K::KIND, namespace = %obj.namespace().unwrap_or_default(),
                          name = %obj.name_any(), error = %err,
                          "skipping an object that does not match the schema");
                    ctx.metrics
                        .reconciled(K::KIND, "undecodable", Duration::ZERO);
                    if let Some(uid) = obj.uid() {
                        ctx.metrics.readiness(&uid, K::KIND, Some(false));
                    }
                    tokio::spawn(report_undecodable::<K>(ctx.clone(), obj.clone(), err));
                };
                let convert = |obj: DynamicObject| -> Option<Cached<K>> {
                    decode::<K>(&obj).map_err(|_| undecodable(&obj)).ok()
                };
                match event {
                    Ok(watcher::Event::Apply(obj)) => match decode::<K>(&obj) {
                        Ok(o) => {
                            index.applied(&o);
                            Some(Ok(watcher::Event::Apply(o)))
                        }
                        Err(_) => {
                            undecodable(&obj);
                            let stale = ObjectRef::<Cached<K>>::new(&obj.name_any())
                                .within(&obj.namespace().unwrap_or_default());
                            store.get(&stale).map(|old| {
                                index.deleted(&old);
                                triggers.forget(old.as_ref());
                                refreshes.cancel(old.as_ref());
                                Ok(watcher::Event::Delete(old.as_ref().clone()))
                            })
                        }
                    },
                    Ok(watcher::Event::Delete(obj)) => match decode::<K>(&obj) {
                        Ok(o) => {
                            index.deleted(&o);
                            triggers.forget(&o);
                            refreshes.cancel(&o);
                            Some(Ok(watcher::Event::Delete(o)))
                        }
                        // Gone: nothing to tell, and its cached version left with its
                        // last Apply.
                        Err(_) => {
                            if let Some(uid) = obj.uid() {
                                ctx.metrics.readiness(&uid, K::KIND, None);
                                ctx.resources.forget(&uid);
                            }
                            None
                        }
                    },
                    Ok(watcher::Event::InitApply(obj)) => convert(obj).map(|o| {
                        index.relisted(&o);
                        Ok(watcher::Event::InitApply(o))
                    }),
                    Ok(watcher::Event::Init) => {
                        index.relist_started();
                        Some(Ok(watcher::Event::Init))
                    }
                    Ok(watcher::Event::InitDone) => {
                        index.relist_done();
                        Some(Ok(watcher::Event::InitDone))
                    }
                    Err(err) => Some(Err(err)),
                }
            }
        })
}

/// The compact cached form of a watched object.
fn decode<K: Managed>(obj: &DynamicObject) -> Result<Cached<K>, serde_json::Error> {
    serde_json::to_value(obj)
        .and_then(serde_json::from_value::<K>)
        .and_then(|typed| Cached::new(&typed))
}

/// Why `obj` does not decode, naming the field (`spec.thingName: invalid type: ...`).
/// Decodes again with the path tracked: only for the rare object that failed.
fn explain_undecodable<K: Managed>(obj: &DynamicObject) -> String {
    let value = match serde_json::to_value(obj) {
        Ok(value) => value,
        Err(err) => return err.to_string(),
    };
    match serde_path_to_error::deserialize::<_, K>(value) {
        Ok(typed) => match Cached::new(&typed) {
            Ok(_) => "it decodes now".into(),
            Err(err) => err.to_string(),
        },
        Err(err) => {
            let path = err.path().to_string();
            format!("{path}: {}", err.into_inner())
        }
    }
}

/// The reason on an object that does not match the schema the operator was built with.
const INVALID_OBJECT: &str = "InvalidObject";

/// Marks an object the operator cannot read (Stalled, reason `InvalidObject`) and records
/// a Warning Event, once per generation. The CRD's schema refuses such objects, so they
/// come only from a CRD older or newer than the operator (Helm does not upgrade CRDs).
/// The status is applied server-side by the operator's field manager, as every status
/// write: the prior status (which the typed one cannot read) with the conditions and
/// observedGeneration changed. One manager owning every status field is what lets the
/// next status write, once the object matches again, drop the Stalled condition (a
/// condition written by another manager, e.g. by a merge patch, would stay).
async fn report_undecodable<K: Managed>(ctx: Arc<Context>, obj: DynamicObject, err: String) {
    let (Some(namespace), name) = (obj.namespace(), obj.name_any()) else {
        return;
    };
    let message = crate::sync::truncate(
        format!(
            "the object does not match the {} schema of this operator ({err}); nothing is \
             done with it, cleanup on deletion included, until it matches. Is the \
             CustomResourceDefinition older or newer than the operator? Upgrade the CRDs \
             with it",
            K::KIND
        ),
        1000,
    );
    let before: Vec<crate::api::Condition> = obj
        .data
        .pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let mut conditions = before.clone();
    set_conditions(
        &mut conditions,
        obj.metadata.generation,
        &crate::sync::now(),
        &Health::Stalled {
            reason: INVALID_OBJECT,
            message: message.clone(),
        },
        Some((false, INVALID_OBJECT, message.clone())),
        None,
    );
    let observed = obj
        .data
        .pointer("/status/observedGeneration")
        .and_then(|g| g.as_i64());
    let unchanged = observed == obj.metadata.generation
        && before.len() == conditions.len()
        && before.iter().zip(&conditions).all(|(a, b)| {
            (
                &a.type_,
                &a.status,
                &a.reason,
                &a.message,
                a.observed_generation,
            ) == (
                &b.type_,
                &b.status,
                &b.reason,
                &b.message,
                b.observed_generation,
            )
        });
    if unchanged {
        return;
    }
    let resource = api_resource::<K>();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let mut status = match obj.data.get("status") {
        Some(serde_json::Value::Object(prior)) => prior.clone(),
        _ => serde_json::Map::new(),
    };
    status.insert("observedGeneration".into(), json!(obj.metadata.generation));
    status.insert("conditions".into(), json!(conditions));
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": K::KIND,
        "status": status,
    });
    if let Err(err) = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        warn!(kind = K::KIND, %namespace, %name, error = %err, "cannot write the status");
        return;
    }
    let record = Record {
        warning: true,
        reason: INVALID_OBJECT,
        note: &message,
        action: "Reconcile",
    };
    if let Err(err) = ctx
        .events
        .publish(&record, &obj.object_ref(&resource))
        .await
    {
        warn!(error = %err, "cannot record an event");
    }
}

/// The objects to reconcile, from the reflected watch: a changed object as its event
/// comes, and after a relist the objects whose trigger changed, only once the relist is
/// complete. A relist's objects (`InitApply`) reach the cache all at once at `InitDone`;
/// a reconcile triggered before that would read the object as it was before the relist,
/// and the trigger would be spent on it.
fn triggered<K: Managed>(
    reflected: impl Stream<Item = Result<watcher::Event<Cached<K>>, watcher::Error>> + Send,
    store: Store<Cached<K>>,
    triggers: Arc<Triggers>,
) -> impl Stream<Item = Arc<Cached<K>>> + Send {
    reflected.flat_map(move |event| {
        let objects = match event {
            Ok(watcher::Event::Apply(object))
                if triggers.changed(&object, trigger_key(&object)) =>
            {
                vec![Arc::new(object)]
            }
            Ok(watcher::Event::InitDone) => triggers.relisted(store.state(), trigger_key),
            Ok(_) => Vec::new(),
            Err(err) => {
                // The watcher retries with backoff; the cache keeps its last state.
                warn!(kind = K::KIND, error = %err, "watch failed; retrying");
                Vec::new()
            }
        };
        futures::stream::iter(objects)
    })
}

/// When the data plane answers again after an outage, the resources whose last pass
/// failed for want of an answer, so that they do not wait out the rest of their backoff
/// (up to 5 minutes). Each is woken once per failure; one that fails again backs off as
/// before, so no outage pattern makes a retry loop of this.
fn after_outages<K: Managed>(
    ctx: Arc<Context>,
    store: Store<Cached<K>>,
) -> impl Stream<Item = ObjectRef<Cached<K>>> + Send {
    let recoveries = ctx.recoveries.clone();
    futures::stream::unfold(recoveries, |mut recoveries| async move {
        recoveries.changed().await.ok()?;
        Some(((), recoveries))
    })
    .flat_map(move |()| {
        let waiting: Vec<_> = store
            .state()
            .iter()
            .filter(|object| {
                object
                    .uid()
                    .is_some_and(|uid| ctx.resources.take_awaiting(&uid))
            })
            .map(|object| ObjectRef::from_obj(object.as_ref()))
            .collect();
        if !waiting.is_empty() {
            info!(
                kind = K::KIND,
                resources = waiting.len(),
                "the data plane answers again: retrying the resources that waited for it"
            );
        }
        futures::stream::iter(waiting)
    })
}

/// The cache and target index of one kind, for the duplicate-target check, and its
/// refresh timers.
struct Owners<K: Managed> {
    store: Store<Cached<K>>,
    index: Arc<TargetIndex>,
    refreshes: Arc<Refreshes>,
}

impl<K: Managed> Clone for Owners<K> {
    fn clone(&self) -> Self {
        Owners {
            store: self.store.clone(),
            index: self.index.clone(),
            refreshes: self.refreshes.clone(),
        }
    }
}

/// What may trigger a reconcile: the spec (generation), our annotations and deletion.
/// A status write changes none of these, and neither does adding our finalizer (the
/// pass that adds it goes on to sync).
fn trigger_key<K: Managed>(obj: &Cached<K>) -> u64 {
    let meta = obj.meta();
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    let annotations = meta.annotations.as_ref();
    for key in [PAUSED_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION] {
        annotations.and_then(|a| a.get(key)).hash(&mut hasher);
    }
    hasher.finish()
}

async fn reconcile<K: Managed>(
    cached: Arc<Cached<K>>,
    ctx: Arc<Context>,
    owners: Owners<K>,
) -> Result<Action, OperatorError> {
    let started = Instant::now();
    // This pass replaces the pending refresh, as a requeue would be replaced.
    owners.refreshes.cancel(cached.as_ref());
    let result = match cached.decode() {
        Ok(obj) => reconcile_inner(&Arc::new(obj), &cached, &ctx, &owners).await,
        Err(err) => Err(OperatorError::Internal(format!(
            "cannot decode the cached object: {err}"
        ))),
    };
    let outcome = match &result {
        Ok((_, true)) => "ready",
        Ok((_, false)) => "not_ready",
        Err(_) => "error",
    };
    ctx.metrics.reconciled(K::KIND, outcome, started.elapsed());
    result.map(|(action, _)| action)
}

/// Returns the next action and whether the resource is Ready.
async fn reconcile_inner<K: Managed>(
    obj: &Arc<K>,
    cached: &Cached<K>,
    ctx: &Arc<Context>,
    owners: &Owners<K>,
) -> Result<(Action, bool), OperatorError> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let name = obj.name_any();
    let uid = obj.uid().unwrap_or_default();
    // The cache may not have caught up with our own last write yet (a trigger queued
    // while the previous pass ran): then read the object itself, so that the pass starts
    // from the status it wrote and does not repeat its work.
    let fresh;
    let obj = if ctx.cache_is_behind(&uid, obj.resource_version().as_deref()) {
        fresh = Arc::new(api.get(&name).await.map_err(OperatorError::Kube)?);
        &fresh
    } else {
        obj
    };
    if let Some(outcome) = super::tenancy::enforce(obj.as_ref(), ctx, &api).await? {
        return Ok(outcome);
    }
    let annotations = obj.annotations();
    let paused = annotations.get(PAUSED_ANNOTATION).map(String::as_str) == Some("true");
    let has_finalizer = obj.finalizers().iter().any(|f| f == FINALIZER);
    let observe = obj.management_policy() == ManagementPolicy::Observe;
    let prior = obj.status().cloned().unwrap_or_default();

    if obj.meta().deletion_timestamp.is_some() {
        ctx.metrics.readiness(&uid, K::KIND, None);
        if !has_finalizer {
            return Ok((Action::await_change(), false));
        }
        if paused {
            // Cleanup is a data-plane write too: it waits until the resource is unpaused.
            return Ok((Action::await_change(), false));
        }
        if !observe {
            match obj.cleanup(ctx).await {
                Ok(events) => publish(ctx, obj.as_ref(), &events).await,
                Err(err) => {
                    let event = SyncEvent {
                        warning: true,
                        reason: "CleanupFailed",
                        message: format!("{}: {err}", obj.target_display()),
                    };
                    publish(ctx, obj.as_ref(), &[event]).await;
                    return Err(OperatorError::DataPlane(err));
                }
            }
        }
        remove_finalizer(ctx, &api, obj.as_ref()).await?;
        ctx.resources.forget(&uid);
        return Ok((Action::await_change(), false));
    }

    if observe && has_finalizer {
        // Observe never writes, so there is nothing to clean up on deletion.
        remove_finalizer(ctx, &api, obj.as_ref()).await?;
    }
    let generation = obj.meta().generation;
    if paused {
        let mut status = prior.clone();
        K::set_observed_generation(&mut status, generation);
        set_conditions(
            K::conditions_mut(&mut status),
            generation,
            &crate::sync::now(),
            &Health::Failed {
                reason: "Paused",
                message: format!(
                    "reconciliation is paused by the annotation {PAUSED_ANNOTATION}=\"true\""
                ),
            },
            None,
            None,
        );
        write_status(ctx, &api, &name, &prior, &status).await?;
        ctx.metrics.readiness(&uid, K::KIND, Some(false));
        return Ok((Action::await_change(), false));
    }

    if let Some(owner) = older_owner(obj.as_ref(), cached, owners, &ctx.tenancy) {
        let mut status = prior.clone();
        K::set_observed_generation(&mut status, generation);
        let message = obj.duplicate_of(&owner).to_string();
        let fresh = !K::conditions(&prior)
            .iter()
            .any(|c| c.type_ == "Stalled" && c.reason == "DuplicateTarget");
        set_conditions(
            K::conditions_mut(&mut status),
            generation,
            &crate::sync::now(),
            &Health::Stalled {
                reason: "DuplicateTarget",
                message: message.clone(),
            },
            None,
            None,
        );
        if fresh {
            let event = SyncEvent {
                warning: true,
                reason: "DuplicateTarget",
                message,
            };
            publish(ctx, obj.as_ref(), &[event]).await;
        }
        write_status(ctx, &api, &name, &prior, &status).await?;
        ctx.metrics.readiness(&uid, K::KIND, Some(false));
        return Ok((Action::requeue(DUPLICATE_RECHECK), false));
    }

    if !observe && !has_finalizer {
        add_finalizer(ctx, &api, obj.as_ref()).await?;
    }

    let requested = annotations
        .get(RECONCILE_REQUESTED_ANNOTATION)
        .cloned()
        .filter(|value| Some(value.as_str()) != K::last_handled_reconcile_at(&prior));
    let ready_before = K::conditions(&prior)
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let current = prior_is_current::<K>(&prior, generation) && ready_before;
    if current && requested.is_none() && ctx.resources.first_sight(&uid) {
        // Just started and this resource was in sync for its generation: spread the first
        // reads over one refresh interval instead of reading every shadow at once.
        ctx.metrics.readiness(&uid, K::KIND, Some(true));
        let delay = obj
            .refresh()
            .map(|period| until_refresh_slot(ctx.resources.refresh_phase(&uid), period, false));
        return Ok((refresh_later(owners, cached, delay), true));
    }
    ctx.resources.first_sight(&uid);

    let conflicts_before = K::conflicts(&prior).cloned().unwrap_or_default();
    let opts = SyncOptions {
        generation,
        force: requested.is_some(),
        dry_run: false,
        reconcile_requested_at: requested,
    };
    let synced = obj.sync(ctx, prior.clone(), opts).await;
    publish(ctx, obj.as_ref(), &synced.events).await;
    if let Some(after) = K::conflicts(&synced.status) {
        let new = after.count.saturating_sub(conflicts_before.count);
        if new > 0 {
            let class = match after.last_reason.as_deref() {
                Some("OutOfBandEdit") => "OutOfBandEdit",
                _ => "VersionConflict",
            };
            ctx.metrics.conflict(K::KIND, class, new);
        }
    }
    write_status(ctx, &api, &name, &prior, &synced.status).await?;
    ctx.metrics.readiness(&uid, K::KIND, Some(synced.ready));

    let stalled = K::conditions(&synced.status)
        .iter()
        .any(|c| c.type_ == "Stalled" && c.status == "True");
    let action = if synced.ready {
        ctx.resources.reset_backoff(&uid);
        let delay = obj.refresh().map(|period| {
            until_refresh_slot(ctx.resources.refresh_phase(&uid), period, synced.wrote)
        });
        refresh_later(owners, cached, delay)
    } else if stalled {
        // Needs a human (invalid spec, Preserve conflict, access denied): look again at
        // the refresh period, or on the next change.
        let delay = obj.refresh().map(|period| {
            until_refresh_slot(ctx.resources.refresh_phase(&uid), period, synced.wrote)
        });
        refresh_later(owners, cached, delay)
    } else {
        let unanswered = K::conditions(&synced.status)
            .iter()
            .any(|c| c.type_ == "Ready" && is_outage_reason(&c.reason));
        if unanswered {
            ctx.resources.await_data_plane(&uid);
        }
        Action::requeue(ctx.resources.next_backoff(&uid))
    };
    Ok((action, synced.ready))
}

/// The pass is done: the next one comes at the refresh slot `delay` away (a refresh
/// timer, see [`super::refresh`]), else on the next change.
fn refresh_later<K: Managed>(
    owners: &Owners<K>,
    cached: &Cached<K>,
    delay: Option<Duration>,
) -> Action {
    if let Some(delay) = delay {
        owners.refreshes.schedule(cached, delay);
    }
    Action::await_change()
}

fn prior_is_current<K: Managed>(prior: &K::Status, generation: Option<i64>) -> bool {
    K::conditions(prior)
        .iter()
        .find(|c| c.type_ == "Ready")
        .is_some_and(|c| c.observed_generation == generation)
}

/// The older resource targeting the same thing/shadow (or topic), if any: creation time
/// decides; within the same second (the precision of `creationTimestamp`) a resource that
/// already holds the target (it has been reconciled and is not marked `DuplicateTarget`)
/// keeps it; then namespace/name. Resources their namespace does not allow are ignored:
/// they never write, so they must not block an allowed one. Runs on every reconcile: one
/// lookup in the target index; rivals, when there are any, are decoded to compare.
fn older_owner<K: Managed>(
    obj: &K,
    cached: &Cached<K>,
    owners: &Owners<K>,
    tenancy: &super::tenancy::Tenancy,
) -> Option<String> {
    let mine = precedence(obj);
    owners
        .index
        .rivals(cached, &owners.store)
        .iter()
        .filter(|other| tenancy.permits(other.as_ref()))
        .filter_map(|other| other.decode().ok())
        .map(|other| precedence(&other))
        .filter(|theirs| *theirs < mine)
        .min()
        .map(|(_, _, namespace, name)| format!("{namespace}/{name}"))
}

/// The order in which resources with the same target own it (smallest first).
type Precedence = (Option<k8s_openapi::jiff::Timestamp>, bool, String, String);

fn precedence<K: Managed>(o: &K) -> Precedence {
    let holds = o.status().is_some_and(|status| {
        let conditions = K::conditions(status);
        !conditions.is_empty() && !conditions.iter().any(|c| c.reason == "DuplicateTarget")
    });
    (
        o.meta().creation_timestamp.clone().map(|t| t.0),
        !holds,
        o.namespace().unwrap_or_default(),
        o.name_any(),
    )
}

/// Time until this resource's next refresh slot. Each resource refreshes at a fixed
/// phase of its interval (a fraction in [0, 1), see `Resources::refresh_phase`), so reads
/// spread evenly over the interval even when thousands of resources were created (or
/// changed) in the same second. After a pass that wrote, the write's answer is fresh
/// state: the next read waits for the slot at least 0.9 interval away instead of
/// following moments later.
fn until_refresh_slot(phase: f64, period: Duration, wrote: bool) -> Duration {
    let period_ms = period.as_millis().max(1) as u64;
    let phase_ms = ((phase.clamp(0.0, 1.0) * period_ms as f64) as u64).min(period_ms - 1);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let into_slot = (now_ms + period_ms - phase_ms) % period_ms;
    let mut delay = period_ms - into_slot;
    if wrote && delay < period_ms / 10 * 9 {
        delay += period_ms;
    }
    Duration::from_millis(delay)
}

fn error_policy<K: Managed>(obj: Arc<Cached<K>>, err: &OperatorError, ctx: Arc<Context>) -> Action {
    let uid = obj.uid().unwrap_or_default();
    let delay = ctx.resources.next_backoff(&uid);
    warn!(kind = K::KIND, name = %obj.name_any(), reason = err.reason(), error = %err,
          retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Server-side apply of the status, only when it changed.
pub(super) async fn write_status<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    prior: &K::Status,
    status: &K::Status,
) -> Result<(), OperatorError> {
    if prior == status {
        return Ok(());
    }
    let (group, version) = crate::api::API_VERSION
        .split_once('/')
        .unwrap_or((crate::api::GROUP, crate::api::VERSION));
    let patch = json!({
        "apiVersion": format!("{group}/{version}"),
        "kind": K::KIND,
        "status": status,
    });
    let written = written_api::<K>(ctx, api)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(OperatorError::Kube)?;
    ctx.wrote(&written);
    Ok(())
}

/// What the answer to a write is read for: the object's uid and resourceVersion (see
/// `Context::wrote`). The answer is the whole object, managedFields included; read into
/// this type, the rest is skipped as it is parsed instead of built as a typed object
/// (a few hundred small allocations per write, which at fleet scale fragmented the heap).
#[derive(Clone, Debug, serde::Deserialize)]
struct Written {
    #[serde(deserialize_with = "written_meta")]
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

fn written_meta<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Ids {
        uid: Option<String>,
        resource_version: Option<String>,
    }
    let ids = <Ids as serde::Deserialize>::deserialize(deserializer)?;
    Ok(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        uid: ids.uid,
        resource_version: ids.resource_version,
        ..Default::default()
    })
}

impl Resource for Written {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn group(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn kind(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// `api` (the kind, in its namespace), answering writes as [`Written`].
fn written_api<K: Managed>(ctx: &Context, api: &Api<K>) -> Api<Written> {
    let resource = api_resource::<K>();
    match api.namespace() {
        Some(namespace) => Api::namespaced_with(ctx.client.clone(), namespace, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    }
}

async fn add_finalizer<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
) -> Result<(), OperatorError> {
    // A JSON patch with a test, so that a concurrent finalizer change fails instead of
    // being overwritten.
    let patch = if obj.finalizers().is_empty() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": obj.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    json_patch(ctx, api, obj, patch).await
}

pub(super) async fn remove_finalizer<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
) -> Result<(), OperatorError> {
    let Some(index) = obj.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch = json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]);
    match json_patch(ctx, api, obj, patch).await {
        // Already gone: the object was removed once its last finalizer went.
        Err(OperatorError::Kube(kube::Error::Api(status))) if status.code == 404 => Ok(()),
        other => other,
    }
}

async fn json_patch<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    patch: serde_json::Value,
) -> Result<(), OperatorError> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|err| OperatorError::Internal(err.to_string()))?;
    let written = written_api::<K>(ctx, api)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .map_err(OperatorError::Kube)?;
    ctx.wrote(&written);
    Ok(())
}

/// Sends events through the operator's one sink; a failure to record is logged, never fatal.
pub(super) async fn publish<K: Managed>(ctx: &Context, obj: &K, events: &[SyncEvent]) {
    if events.is_empty() {
        return;
    }
    let reference = obj.object_ref(&());
    for event in events {
        if event.warning {
            warn!(kind = K::KIND, name = %obj.name_any(), reason = event.reason, "{}", event.message);
        } else {
            info!(kind = K::KIND, name = %obj.name_any(), reason = event.reason, "{}", event.message);
        }
        let note = crate::sync::truncate(event.message.clone(), 1000);
        let record = Record {
            warning: event.warning,
            reason: event.reason,
            note: &note,
            action: "Reconcile",
        };
        if let Err(err) = ctx.events.publish(&record, &reference).await {
            warn!(error = %err, "cannot record an event");
        }
    }
}

/// The API resource of a kind, for the untyped watch.
pub fn api_resource<K: Managed>() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crate::api::GROUP, crate::api::VERSION, K::KIND),
        &K::plural(&()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_same_second_the_resource_holding_the_target_keeps_it() {
        use crate::api::{Condition, RetainedMessage, RetainedMessageStatus};
        let resource = |name: &str, second: i64, status: Option<(&str, &str)>| {
            let mut r: RetainedMessage = serde_json::from_value(json!({
                "apiVersion": "iot.shadowsync.dev/v1alpha1",
                "kind": "RetainedMessage",
                "metadata": {"name": name, "namespace": "ns",
                             "creationTimestamp": format!("2026-11-22T02:00:{second:02}Z")},
                "spec": {"topic": "a/b", "payload": {"text": "x"}},
            }))
            .expect("a resource");
            r.status = status.map(|(type_, reason)| RetainedMessageStatus {
                conditions: vec![Condition {
                    type_: type_.into(),
                    status: "True".into(),
                    reason: reason.into(),
                    message: String::new(),
                    observed_generation: Some(1),
                    last_transition_time: "2026-11-22T02:00:00Z".into(),
                }],
                ..Default::default()
            });
            r
        };
        // Same second: the owner that already wrote beats a newcomer whose name sorts first.
        let owner = resource("zz-owner", 5, Some(("Ready", "InSync")));
        let newcomer = resource("aa-new", 5, None);
        assert!(precedence(&owner) < precedence(&newcomer));
        // A resource already marked as the duplicate does not hold the target.
        let marked = resource("aa-new", 5, Some(("Stalled", "DuplicateTarget")));
        assert!(precedence(&owner) < precedence(&marked));
        // Two newcomers: the name decides, the same way for both.
        assert!(precedence(&newcomer) < precedence(&resource("zz-other", 5, None)));
        // Creation time comes first.
        assert!(precedence(&resource("zz", 4, None)) < precedence(&owner));
    }

    #[test]
    fn refresh_slots_fall_within_one_interval_and_spread_evenly() {
        const GOLDEN_FRACTION: f64 = 0.618_033_988_749_894_9;
        let period = Duration::from_secs(60);
        // 600 resources over 60 one-second buckets: 10 per second on average.
        let mut buckets = [0u32; 61];
        for n in 0..600u32 {
            let phase = (f64::from(n) * GOLDEN_FRACTION).fract();
            let delay = until_refresh_slot(phase, period, false);
            assert!(delay > Duration::ZERO && delay <= period, "{delay:?}");
            buckets[delay.as_secs() as usize] += 1;
            let after_write = until_refresh_slot(phase, period, true);
            assert!(
                after_write >= period.mul_f64(0.9) && after_write <= period.mul_f64(1.9),
                "{after_write:?}"
            );
        }
        // Slots are absolute (phase of the wall clock), so the buckets here are shifted
        // by the current millisecond; evenly spread, no second sees more than 12.
        let busiest = buckets.iter().max().copied().unwrap_or_default();
        assert!(busiest <= 12, "busiest second {busiest}: {buckets:?}");
    }
}
