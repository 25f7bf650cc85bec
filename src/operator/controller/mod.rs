//! The controller loop for one kind: watch, filter, reconcile, write status.
//!
//! A reconcile is idempotent and may be cut at any line: the tenancy check first (see
//! [`super::tenancy`]; a refused resource goes no further), then the finalizer, then one
//! sync pass (see [`crate::sync`]), then one server-side-apply status write only when the
//! status changed. Status writes never trigger a reconcile of their own: the watch is
//! filtered to changes of generation, of our annotations, of finalizers and of deletion.

mod invalid;
mod record;
mod watch;
mod writes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt};
use kube::ResourceExt;
use tracing::{info, warn};

use super::cache::{Cached, TargetIndex, Triggers};
use super::decide::{decide, Cleanup, Decision, Facts, FinalizerChange, CLEANUP_SKIPPED};
use super::kinds::Managed;
use super::refresh::Refreshes;
use super::{Context, OperatorError};
use crate::api::{ManagementPolicy, FINALIZER, PAUSED_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION};
use crate::reason::Reason;
use crate::sync::{SyncEvent, SyncOptions};
use watch::{after_outages, decoded, triggered};
pub(super) use writes::status_apply;
use writes::{add_finalizer, publish, remove_finalizer};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "shadowsync";

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
    // The watch's objects come in as references (see `triggered`), like the other
    // triggers.
    let controller = Controller::for_shared_stream(futures::stream::empty(), reader)
        .with_config(config)
        .reconcile_on(stream)
        .reconcile_on(ctx.tenancy.requeues(owners.store.clone()))
        .reconcile_on(after_outages(ctx.clone(), owners.store.clone()))
        .reconcile_on(refreshes.fired())
        .graceful_shutdown_on(shutdown.clone())
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
    if shutdown.now_or_never().is_none() {
        warn!(kind = K::KIND, "the controller stopped before shutdown");
        ctx.health.progress.loop_ended(K::KIND);
    }
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

async fn reconcile<K: Managed>(
    cached: Arc<Cached<K>>,
    ctx: Arc<Context>,
    owners: Owners<K>,
) -> Result<Action, OperatorError> {
    let started = Instant::now();
    let _running = ctx.health.progress.reconcile_started(K::KIND, started);
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

/// One reconcile: gather the facts, [`decide`], act, record. Returns the next action and
/// whether the resource is Ready.
async fn reconcile_inner<K: Managed>(
    obj: &Arc<K>,
    cached: &Cached<K>,
    ctx: &Arc<Context>,
    owners: &Owners<K>,
) -> Result<(Action, bool), OperatorError> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let uid = obj.uid().unwrap_or_default();

    // Gather. The cache may not have caught up with our own last write yet (a trigger
    // queued while the previous pass ran): then read the object itself, so that the
    // pass starts from the status it wrote and does not repeat its work.
    let fresh;
    let obj = if ctx.cache_is_behind(&uid, obj.resource_version().as_deref()) {
        fresh = Arc::new(
            api.get(&obj.name_any())
                .await
                .map_err(OperatorError::Kube)?,
        );
        &fresh
    } else {
        obj
    };
    let obj = obj.as_ref();
    let allowance = ctx.tenancy.check(obj).await?;
    let deleting = obj.meta().deletion_timestamp.is_some();
    let duplicate = (allowance.is_ok() && !deleting)
        .then(|| older_owner(obj, cached, owners, &ctx.tenancy))
        .flatten()
        .map(|owner| obj.duplicate_of(&owner).to_string());
    let prior = obj.status().cloned().unwrap_or_default();
    let annotations = obj.annotations();
    let requested = annotations
        .get(RECONCILE_REQUESTED_ANNOTATION)
        .map(String::as_str)
        .filter(|value| Some(*value) != K::last_handled_reconcile_at(&prior));
    let target = obj.target_display();
    let facts = Facts {
        deleting,
        has_finalizer: obj.finalizers().iter().any(|f| f == FINALIZER),
        paused: annotations.get(PAUSED_ANNOTATION).map(String::as_str) == Some("true"),
        observe: obj.management_policy() == ManagementPolicy::Observe,
        not_allowed: allowance
            .as_ref()
            .err()
            .map(|refused| refused.message.as_str()),
        duplicate: duplicate.as_deref(),
        requested,
        current: ready_for::<K>(&prior, obj.meta().generation),
        first_sight: !ctx.resources.seen(&uid),
        target: &target,
        prior: K::conditions(&prior),
    };

    // Decide, act, record.
    match decide(&facts) {
        Decision::Wait => {
            ctx.metrics.readiness(&uid, K::KIND, None);
            Ok((Action::await_change(), false))
        }
        Decision::Release(cleanup) => {
            ctx.metrics.readiness(&uid, K::KIND, None);
            let events = match cleanup {
                Cleanup::Run => match obj.cleanup(&ctx.syncer).await {
                    Ok(events) => events,
                    Err(err) => {
                        let event = SyncEvent {
                            warning: true,
                            reason: Reason::CleanupFailed,
                            message: format!("{target}: {err}"),
                        };
                        publish(ctx, obj, &[event]).await;
                        return Err(OperatorError::DataPlane(err));
                    }
                },
                Cleanup::Nothing => Vec::new(),
                Cleanup::Skipped(message) => vec![SyncEvent {
                    warning: true,
                    reason: CLEANUP_SKIPPED,
                    message,
                }],
            };
            publish(ctx, obj, &events).await;
            remove_finalizer(ctx, &api, obj).await?;
            ctx.resources.forget(&uid);
            Ok((Action::await_change(), false))
        }
        Decision::Refuse {
            refusal,
            finalizer,
            recheck,
        } => {
            change_finalizer(ctx, &api, obj, finalizer).await?;
            record::refusal(ctx, &api, obj, &prior, &refusal).await?;
            let action = recheck.map_or_else(Action::await_change, Action::requeue);
            Ok((action, false))
        }
        Decision::Defer { finalizer } => {
            change_finalizer(ctx, &api, obj, finalizer).await?;
            ctx.resources.first_sight(&uid);
            ctx.metrics.readiness(&uid, K::KIND, Some(true));
            let next = super::decide::Next::Refresh { wrote: false };
            Ok((record::schedule(ctx, owners, cached, obj, next), true))
        }
        Decision::Sync {
            finalizer,
            requested,
        } => {
            change_finalizer(ctx, &api, obj, finalizer).await?;
            ctx.resources.first_sight(&uid);
            let opts = SyncOptions {
                generation: obj.meta().generation,
                force: requested.is_some(),
                dry_run: false,
                reconcile_requested_at: requested,
            };
            let payload = obj.payload(ctx).await;
            let synced = obj.sync(&ctx.syncer, prior.clone(), payload, &opts).await;
            record::pass(ctx, &api, owners, cached, obj, &prior, synced).await
        }
    }
}

/// Our finalizer, as decided, before anything else the reconcile does.
async fn change_finalizer<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    change: FinalizerChange,
) -> Result<(), OperatorError> {
    match change {
        FinalizerChange::Keep => Ok(()),
        FinalizerChange::Add => add_finalizer(ctx, api, obj).await,
        FinalizerChange::Remove => remove_finalizer(ctx, api, obj).await,
    }
}

/// The prior status is Ready=True for this generation.
fn ready_for<K: Managed>(prior: &K::Status, generation: Option<i64>) -> bool {
    K::conditions(prior)
        .iter()
        .find(|c| c.type_ == "Ready")
        .is_some_and(|c| c.observed_generation == generation && c.status == "True")
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
        !conditions.is_empty()
            && !conditions
                .iter()
                .any(|c| c.reason == Reason::DuplicateTarget)
    });
    (
        o.meta().creation_timestamp.clone().map(|t| t.0),
        !holds,
        o.namespace().unwrap_or_default(),
        o.name_any(),
    )
}

fn error_policy<K: Managed>(obj: Arc<Cached<K>>, err: &OperatorError, ctx: Arc<Context>) -> Action {
    let uid = obj.uid().unwrap_or_default();
    let delay = ctx.resources.next_backoff(&uid);
    warn!(kind = K::KIND, name = %obj.name_any(), reason = %err.reason(), error = %err,
          retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
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
    use serde_json::json;

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
}
