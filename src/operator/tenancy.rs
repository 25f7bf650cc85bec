//! Tenancy in the operator: the Namespace cache, the check before any data-plane call,
//! and re-queueing when a namespace's allowance changes.
//!
//! The rules themselves are pure and live in [`crate::planner::tenancy`]. Here:
//!
//! - a reflector caches Namespaces (with `--namespace NS`, only that one, through the
//!   field selector `metadata.name=NS`, which an RBAC rule limited by `resourceNames`
//!   allows); its sync counts towards `/readyz`, and no resource is checked before it;
//! - [`Tenancy::check`] is the first fact every reconcile gathers, and it returns the
//!   refusal instead of acting on it: `operator::decide` turns it into `Ready=False`,
//!   `Stalled=True` with reason `NotAllowed` and a Warning Event, and no data-plane call.
//!   Such a resource that is being deleted loses its finalizer without any cleanup (a
//!   Warning Event `CleanupSkipped` says so): cleanup is a write to a target the
//!   namespace may not touch;
//! - [`Tenancy::permits`] lets the duplicate-target check ignore rivals that are not
//!   allowed, so a refused resource never blocks an allowed one in another namespace;
//! - [`Tenancy::requeues`] re-queues the resources of a namespace whose allowance
//!   annotations changed (and the resources sharing a target with them, whose
//!   duplicate-target verdict may change too), so an edit of the Namespace takes effect
//!   without touching the resources.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::{stream, Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use super::cache::Cached;
use super::kinds::Managed;
use super::OperatorError;
use crate::planner::tenancy::{
    self, NotAllowed, ALLOWED_THINGS_ANNOTATION, ALLOWED_TOPICS_ANNOTATION,
};

/// How long a reconcile waits for the first Namespace list before it gives up (and is
/// retried with backoff). Short, so that shutdown is not held up by waiting reconciles.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// The Namespace cache and what the operator was told about missing annotations.
pub struct Tenancy {
    require_allowlist: bool,
    client: Client,
    namespaces: Store<Namespace>,
    synced: watch::Receiver<bool>,
    /// Names of namespaces whose allowance changed after the first sync.
    changed: broadcast::Sender<String>,
}

/// The two annotations of a namespace, to tell a change that matters from any other.
type Allowance = (Option<String>, Option<String>);

fn allowance(ns: &Namespace) -> Allowance {
    let annotations = ns.annotations();
    (
        annotations.get(ALLOWED_THINGS_ANNOTATION).cloned(),
        annotations.get(ALLOWED_TOPICS_ANNOTATION).cloned(),
    )
}

impl Tenancy {
    /// Starts caching Namespaces (`only`: just that one). `ready` is called once the
    /// first list is in the cache.
    pub fn start(
        client: Client,
        only: Option<&str>,
        require_allowlist: bool,
        ready: impl FnOnce() + Send + 'static,
    ) -> Tenancy {
        let (reader, writer) = reflector::store::<Namespace>();
        let (synced_tx, synced) = watch::channel(false);
        let (changed, _) = broadcast::channel(256);
        let api: Api<Namespace> = Api::all(client.clone());
        let mut config = watcher::Config::default().any_semantic();
        if let Some(name) = only {
            config = config.fields(&format!("metadata.name={name}"));
        }
        let events = watcher(api, config)
            .default_backoff()
            .modify(|ns: &mut Namespace| {
                // Only the annotations are ever read.
                ns.meta_mut().managed_fields = None;
                ns.spec = None;
                ns.status = None;
            })
            .reflect(writer);
        let sender = changed.clone();
        tokio::spawn(follow(events, synced_tx, sender, ready));
        Tenancy {
            require_allowlist,
            client,
            namespaces: reader,
            synced,
            changed,
        }
    }

    /// Decides whether `obj` may target what it names. Waits (briefly) for the first
    /// Namespace list; a namespace not in the cache yet is read from the API.
    pub async fn check<K: Managed>(
        &self,
        obj: &K,
    ) -> Result<Result<(), NotAllowed>, OperatorError> {
        let mut synced = self.synced.clone();
        match tokio::time::timeout(SYNC_WAIT, synced.wait_for(|s| *s)).await {
            Ok(Ok(_)) => {}
            _ => {
                return Err(OperatorError::Internal(
                    "the Namespace cache is not synced yet: the operator needs get, list and \
                     watch on namespaces to check the tenancy allow-lists"
                        .into(),
                ))
            }
        }
        let namespace = obj.namespace().unwrap_or_default();
        let annotations = match self.namespaces.get(&ObjectRef::new(&namespace)) {
            Some(ns) => ns.metadata.annotations.clone(),
            None => {
                // Created a moment ago and not in the cache yet.
                let api: Api<Namespace> = Api::all(self.client.clone());
                match api.get_opt(&namespace).await.map_err(OperatorError::Kube)? {
                    Some(ns) => ns.metadata.annotations,
                    None => {
                        return Ok(Err(NotAllowed {
                            message: format!(
                                "{} is not allowed: its namespace {namespace:?} was not found, so \
                                 its allowance ({} / {}) is unknown",
                                obj.target_display(),
                                ALLOWED_THINGS_ANNOTATION,
                                ALLOWED_TOPICS_ANNOTATION
                            ),
                        }))
                    }
                }
            }
        };
        Ok(self.decide(obj, &namespace, annotations.as_ref()))
    }

    fn decide<K: Managed>(
        &self,
        obj: &K,
        namespace: &str,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<(), NotAllowed> {
        tenancy::check(
            namespace,
            annotations,
            obj.tenancy_target(),
            self.require_allowlist,
        )
    }

    /// Whether `obj` is allowed, from the cache alone. A namespace not cached (yet)
    /// counts as allowed here: this is used to ignore refused rivals in the
    /// duplicate-target check, where ignoring one wrongly could let two resources write.
    pub fn permits<K: Managed>(&self, obj: &Cached<K>) -> bool {
        let namespace = obj.namespace().unwrap_or_default();
        match self.namespaces.get(&ObjectRef::new(&namespace)) {
            Some(ns) => tenancy::check(
                &namespace,
                ns.metadata.annotations.as_ref(),
                obj.tenancy_target(),
                self.require_allowlist,
            )
            .is_ok(),
            None => true,
        }
    }

    /// References of the resources to reconcile again when a namespace's allowance
    /// changes: those in the namespace, and those sharing a thing or topic with them.
    pub fn requeues<K: Managed>(
        &self,
        store: Store<Cached<K>>,
    ) -> impl Stream<Item = ObjectRef<Cached<K>>> + Send {
        let receiver = self.changed.subscribe();
        stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(namespace) => Some((Some(namespace), receiver)),
                // Changes were missed: look at everything.
                Err(broadcast::error::RecvError::Lagged(_)) => Some((None, receiver)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .flat_map(move |namespace| stream::iter(affected(&store, namespace.as_deref())))
    }
}

/// The resources in `namespace` (all when `None`) and those sharing a target with them.
fn affected<K: Managed>(
    store: &Store<Cached<K>>,
    namespace: Option<&str>,
) -> Vec<ObjectRef<Cached<K>>> {
    let state = store.state();
    let Some(namespace) = namespace else {
        return state
            .iter()
            .map(|obj| ObjectRef::from_obj(obj.as_ref()))
            .collect();
    };
    let inside = |obj: &Cached<K>| obj.namespace().as_deref() == Some(namespace);
    let targets: HashSet<String> = state
        .iter()
        .filter(|obj| inside(obj))
        .map(|obj| obj.tenancy_target().name().to_string())
        .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    state
        .iter()
        .filter(|obj| inside(obj) || targets.contains(obj.tenancy_target().name()))
        .map(|obj| ObjectRef::from_obj(obj.as_ref()))
        .collect()
}

/// Drives the Namespace reflector: marks the cache synced after the first list and
/// announces namespaces whose allowance changed. After a relist the announcements wait
/// for its end, when the cache holds the new state (a reconcile woken earlier would
/// read the old one).
async fn follow(
    events: impl Stream<Item = Result<watcher::Event<Namespace>, watcher::Error>> + Send,
    synced: watch::Sender<bool>,
    changed: broadcast::Sender<String>,
    ready: impl FnOnce() + Send,
) {
    let mut ready = Some(ready);
    let mut known: HashMap<String, Allowance> = HashMap::new();
    let mut listing: Option<(HashSet<String>, Vec<String>)> = None;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let first_sync_done = *synced.borrow();
        match event {
            Ok(watcher::Event::Init) => listing = Some((HashSet::new(), Vec::new())),
            Ok(watcher::Event::InitApply(ns)) => {
                let name = ns.name_any();
                let now = allowance(&ns);
                if let Some((seen, pending)) = listing.as_mut() {
                    seen.insert(name.clone());
                    if known.insert(name.clone(), now.clone()).as_ref() != Some(&now) {
                        pending.push(name);
                    }
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some((seen, pending)) = listing.take() {
                    known.retain(|name, _| seen.contains(name));
                    if first_sync_done {
                        for name in pending {
                            info!(namespace = %name, "tenancy allowance changed");
                            let _ = changed.send(name);
                        }
                    }
                }
                if !first_sync_done {
                    info!(namespaces = known.len(), "namespace cache synced");
                    let _ = synced.send(true);
                    if let Some(ready) = ready.take() {
                        ready();
                    }
                }
            }
            Ok(watcher::Event::Apply(ns)) => {
                let name = ns.name_any();
                let now = allowance(&ns);
                if known.insert(name.clone(), now.clone()).as_ref() != Some(&now) {
                    info!(namespace = %name, "tenancy allowance changed");
                    let _ = changed.send(name);
                }
            }
            Ok(watcher::Event::Delete(ns)) => {
                known.remove(&ns.name_any());
            }
            Err(err) => warn!(error = %err, "watching namespaces (tenancy allow-lists)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ThingShadow;
    use serde_json::json;

    fn namespace(name: &str, things: Option<&str>) -> Namespace {
        let mut ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("a Namespace");
        if let Some(value) = things {
            ns.metadata.annotations =
                Some([(ALLOWED_THINGS_ANNOTATION.to_string(), value.to_string())].into());
        }
        ns
    }

    fn shadow(namespace: &str, name: &str, thing: &str) -> ThingShadow {
        serde_json::from_value(json!({
            "apiVersion": "iot.shadowsync.dev/v1alpha1",
            "kind": "ThingShadow",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"thingName": thing},
        }))
        .expect("a ThingShadow")
    }

    /// Feeds `events` through [`follow`] and returns what it announced and whether the
    /// cache was marked synced.
    async fn announced(events: Vec<watcher::Event<Namespace>>) -> (Vec<String>, bool) {
        let (synced_tx, synced) = watch::channel(false);
        let (changed, mut receiver) = broadcast::channel(64);
        let stream = stream::iter(events.into_iter().map(Ok));
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ready.clone();
        follow(stream, synced_tx, changed, move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        })
        .await;
        let mut names = Vec::new();
        while let Ok(name) = receiver.try_recv() {
            names.push(name);
        }
        let synced = *synced.borrow();
        assert_eq!(synced, ready.load(std::sync::atomic::Ordering::SeqCst));
        (names, synced)
    }

    #[tokio::test]
    async fn first_list_syncs_without_announcing() {
        use watcher::Event::*;
        let (names, synced) = announced(vec![
            Init,
            InitApply(namespace("a", Some("x-*"))),
            InitApply(namespace("b", None)),
        ])
        .await;
        assert!(names.is_empty());
        assert!(!synced, "not synced before the list ends");
        let (names, synced) =
            announced(vec![Init, InitApply(namespace("a", Some("x-*"))), InitDone]).await;
        assert!(names.is_empty(), "{names:?}");
        assert!(synced);
    }

    #[tokio::test]
    async fn only_allowance_changes_are_announced() {
        use watcher::Event::*;
        let mut relabelled = namespace("a", Some("x-*"));
        relabelled.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
        let (names, _) = announced(vec![
            Init,
            InitApply(namespace("a", Some("x-*"))),
            InitDone,
            Apply(relabelled),                       // other metadata: nothing
            Apply(namespace("a", Some("x-*, y-*"))), // changed
            Apply(namespace("new", None)),           // first seen after the sync
            Apply(namespace("new", None)),           // unchanged
            Delete(namespace("a", None)),
            Apply(namespace("a", Some("x-*, y-*"))), // back: first seen again
        ])
        .await;
        assert_eq!(names, vec!["a", "new", "a"]);
    }

    #[tokio::test]
    async fn a_relist_announces_its_changes_when_it_ends() {
        use watcher::Event::*;
        let (names, _) = announced(vec![
            Init,
            InitApply(namespace("a", Some("x-*"))),
            InitApply(namespace("b", None)),
            InitDone,
            // The watch broke and the list is read again: "a" changed meanwhile.
            Init,
            InitApply(namespace("a", Some("y-*"))),
            InitApply(namespace("b", None)),
        ])
        .await;
        assert!(names.is_empty(), "not before the relist ends: {names:?}");
        let (names, _) = announced(vec![
            Init,
            InitApply(namespace("a", Some("x-*"))),
            InitApply(namespace("b", None)),
            InitDone,
            Init,
            InitApply(namespace("a", Some("y-*"))),
            InitApply(namespace("b", None)),
            InitDone,
        ])
        .await;
        assert_eq!(names, vec!["a"]);
    }

    #[test]
    fn affected_resources_are_the_namespace_and_its_rivals() {
        let (store, mut writer) = reflector::store::<Cached<ThingShadow>>();
        for obj in [
            shadow("team", "lamp", "lamp-1"),
            shadow("team", "door", "door-1"),
            shadow("other", "lamp", "lamp-1"),
            shadow("other", "hall", "hall-1"),
        ] {
            let cached = Cached::new(&obj).unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(cached));
        }
        let mut names: Vec<String> = affected(&store, Some("team"))
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        assert_eq!(names, vec!["other/lamp", "team/door", "team/lamp"]);
        assert!(affected(&store, Some("empty")).is_empty());
        assert_eq!(affected(&store, None).len(), 4);
    }
}
