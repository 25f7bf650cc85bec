//! The watch of one kind: untyped list and watch, each object decoded on its own, shown
//! to the kind's observer ([`Managed::observe`]: the sets' children) and made into the
//! compact cached form, the target index kept, and the stream of objects to reconcile
//! filtered to what can change a reconcile's outcome.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::super::cache::{Cached, TargetIndex, Triggers};
use super::super::kinds::{Managed, Observed};
use super::super::refresh::Refreshes;
use super::super::Context;
use super::invalid::{explain_undecodable, report_undecodable};
use crate::api::{PAUSED_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION};

/// Objects per list request when the watch (re)lists.
const LIST_PAGE_SIZE: u32 = 100;

/// Watches the kind untyped and decodes each object on its own, so that one object that
/// does not deserialize is left out of the cache (and marked, see [`report_undecodable`])
/// instead of stopping the whole watch.
/// Objects are cached in their compact form ([`Cached`]) and indexed by target.
pub(super) fn decoded<K: Managed>(
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
            // Liveness: a failing watch is a stall once it has failed for long enough;
            // any answer ends the spell.
            match &event {
                Ok(_) => ctx.health.progress.watch_answered(K::KIND),
                Err(_) => ctx
                    .health
                    .progress
                    .watch_failed(K::KIND, std::time::Instant::now()),
            }
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
                // Decoded, shown to the kind's observer (the sets' children), compact.
                let decode = |obj: &DynamicObject, relisted: bool| {
                    typed::<K>(obj).and_then(|typed| {
                        let cached = Cached::new(&typed)?;
                        K::observe(
                            &ctx,
                            if relisted {
                                Observed::Relisted(&typed)
                            } else {
                                Observed::Applied(&typed)
                            },
                        );
                        Ok(cached)
                    })
                };
                let convert = |obj: DynamicObject| -> Option<Cached<K>> {
                    decode(&obj, true).map_err(|_| undecodable(&obj)).ok()
                };
                if let Ok(watcher::Event::Delete(obj)) = &event {
                    if let (Some(namespace), Some(name)) = (
                        obj.metadata.namespace.as_deref(),
                        obj.metadata.name.as_deref(),
                    ) {
                        K::observe(&ctx, Observed::Deleted { namespace, name });
                    }
                }
                match event {
                    Ok(watcher::Event::Apply(obj)) => match decode(&obj, false) {
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
                    Ok(watcher::Event::Delete(obj)) => {
                        match typed::<K>(&obj).and_then(|typed| Cached::new(&typed)) {
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
                        }
                    }
                    Ok(watcher::Event::InitApply(obj)) => convert(obj).map(|o| {
                        index.relisted(&o);
                        Ok(watcher::Event::InitApply(o))
                    }),
                    Ok(watcher::Event::Init) => {
                        index.relist_started();
                        K::observe(&ctx, Observed::RelistStarted);
                        Some(Ok(watcher::Event::Init))
                    }
                    Ok(watcher::Event::InitDone) => {
                        index.relist_done();
                        K::observe(&ctx, Observed::RelistDone);
                        Some(Ok(watcher::Event::InitDone))
                    }
                    Err(err) => Some(Err(err)),
                }
            }
        })
}

/// A watched object, typed.
fn typed<K: Managed>(obj: &DynamicObject) -> Result<K, serde_json::Error> {
    serde_json::to_value(obj).and_then(serde_json::from_value::<K>)
}

/// The objects to reconcile, from the reflected watch: a changed object as its event
/// comes, and after a relist the objects whose trigger changed, only once the relist is
/// complete. A relist's objects (`InitApply`) reach the cache all at once at `InitDone`;
/// a reconcile triggered before that would read the object as it was before the relist,
/// and the trigger would be spent on it.
///
/// Each object is named by namespace and name only: the controller's queue holds one
/// reference per waiting object (all of them after a restart's relist), and the one
/// kube-runtime makes from an object carries its uid and resourceVersion too.
pub(super) fn triggered<K: Managed>(
    reflected: impl Stream<Item = Result<watcher::Event<Cached<K>>, watcher::Error>> + Send,
    store: Store<Cached<K>>,
    triggers: Arc<Triggers>,
) -> impl Stream<Item = ObjectRef<Cached<K>>> + Send {
    let named = |object: &Cached<K>| {
        ObjectRef::new(&object.name_any()).within(&object.namespace().unwrap_or_default())
    };
    reflected.flat_map(move |event| {
        let objects = match event {
            Ok(watcher::Event::Apply(object))
                if triggers.changed(&object, trigger_key(&object)) =>
            {
                vec![named(&object)]
            }
            Ok(watcher::Event::InitDone) => triggers
                .relisted(store.state(), trigger_key)
                .iter()
                .map(|object| named(object))
                .collect(),
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
pub(super) fn after_outages<K: Managed>(
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
