//! The watch cache's form of a managed object, and the index of targets.
//!
//! The operator caches every ThingShadow and RetainedMessage it watches; at fleet scale
//! that cache is most of its memory. Decoded, an object is a tree of small allocations
//! (every JSON key and value its own, and `desired` three times over: in the spec and in
//! the status mirror): about 6 KB for a typical ThingShadow. [`Cached`] keeps instead the
//! metadata a reconcile needs, the object's target as one string, and the rest as its
//! compact JSON text, LZ4-compressed against a preset dictionary of the kinds' field
//! names and usual values (about 1.8 KB in all for a typical ThingShadow, of which the
//! compressed body is 250 bytes), and decodes the typed object when a reconcile starts,
//! which costs microseconds against the data-plane call it precedes.
//!
//! Metadata kept: name, namespace, uid, resourceVersion, generation, creation and
//! deletion timestamps, finalizers, and the annotations of this operator
//! (`iot.shadowsync.dev/...`). Labels, other annotations (such as kubectl's
//! last-applied-configuration, a second copy of the spec), owner references and
//! managedFields are not needed by any reconcile and are dropped.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;
use serde_json::Value;

use super::kinds::Managed;

/// Prefix of the annotations the cache keeps.
const OWN_ANNOTATIONS: &str = "iot.shadowsync.dev/";

/// A managed object as the watch cache keeps it; see the module documentation.
#[derive(Debug)]
pub struct Cached<K> {
    meta: ObjectMeta,
    target: Box<str>,
    /// The object without `metadata`, as compact JSON compressed with [`DICTIONARY`].
    body: Box<[u8]>,
    /// Length of the JSON before compression.
    plain_len: u32,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Cached {
            meta: self.meta.clone(),
            target: self.target.clone(),
            body: self.body.clone(),
            plain_len: self.plain_len,
            kind: PhantomData,
        }
    }
}

impl<K: Managed> Cached<K> {
    pub fn new(object: &K) -> Result<Self, serde_json::Error> {
        let mut value = serde_json::to_value(object)?;
        if let Some(map) = value.as_object_mut() {
            map.remove("metadata");
        }
        let json = serde_json::to_vec(&value)?;
        let plain_len = u32::try_from(json.len()).map_err(serde::ser::Error::custom)?;
        Ok(Cached {
            meta: slim(object.meta()),
            target: object.target_key().into_boxed_str(),
            body: lz4_flex::block::compress_with_dict(&json, &DICTIONARY).into_boxed_slice(),
            plain_len,
            kind: PhantomData,
        })
    }

    /// The typed object, with the metadata kept (see the module documentation).
    pub fn decode(&self) -> Result<K, serde_json::Error> {
        let json =
            lz4_flex::block::decompress_with_dict(&self.body, self.plain_len as usize, &DICTIONARY)
                .map_err(serde::de::Error::custom)?;
        let mut value: Value = serde_json::from_slice(&json)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("metadata".into(), serde_json::to_value(&self.meta)?);
        }
        serde_json::from_value(value)
    }

    /// The target ([`Managed::target_key`]): two objects with the same key must not
    /// both write.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The thing or topic, as the namespace allow-lists see it.
    pub fn tenancy_target(&self) -> crate::planner::tenancy::Target<'_> {
        K::tenancy_target_of_key(&self.target)
    }
}

/// Field names and usual values of both kinds, as the objects' JSON spells them: LZ4
/// finds them here instead of spelling them out in every cached object. Any bytes would
/// be correct; these make typical objects a quarter of their size.
static DICTIONARY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        serde_json::json!({"type": type_, "status": status, "reason": reason,
            "message": message, "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z"})
    };
    let conditions = serde_json::json!([
        condition(
            "Ready",
            "True",
            "Synced",
            "desired state matches the spec at shadow version "
        ),
        condition("Synced", "True", "Synced", "published to topic "),
        condition(
            "Converged",
            "False",
            "DeltaPending",
            "the device has not reported desired values"
        ),
        condition("Reconciling", "True", "Reconciling", ""),
        condition("Stalled", "True", "InvalidSpec", ""),
    ]);
    let shadow = serde_json::json!({
        "apiVersion": crate::api::API_VERSION, "kind": "ThingShadow",
        "spec": {"thingName": "", "shadowName": "", "desired": {},
            "managementPolicy": "Manage", "deletionPolicy": "Delete",
            "conflictPolicy": "Overwrite", "refreshInterval": "5m"},
        "status": {"observedGeneration": 1, "conditions": conditions,
            "shadow": {"version": 1, "desired": {}, "reported": {}, "delta": {},
                "lastReportedTime": ""},
            "managedPaths": [], "lastWrite": {"version": 1, "timestamp": 1},
            "conflicts": {"count": 1, "lastTime": "", "lastReason": "OutOfBandEdit",
                "expectedVersion": 1, "actualVersion": 1},
            "lastSyncTime": "2026-01-01T00:00:00Z", "lastHandledReconcileAt": ""},
    });
    let retained = serde_json::json!({
        "apiVersion": crate::api::API_VERSION, "kind": "RetainedMessage",
        "spec": {"topic": "", "payload": {"json": {}, "secretKeyRef": {"name": "", "key": ""}},
            "qos": 1, "contentType": "application/json", "managementPolicy": "Manage",
            "deletionPolicy": "Delete", "conflictPolicy": "Overwrite", "refreshInterval": "10m"},
        "status": {"observedGeneration": 1, "conditions": [], "payloadSha256": "",
            "payloadSize": 1, "qos": 1, "lastModifiedTime": "", "lastPublishTime": "",
            "publishCount": 1, "appliedSha256": "", "lastSyncTime": "2026-01-01T00:00:00Z"},
    });
    let mut bytes = serde_json::to_vec(&retained).unwrap_or_default();
    bytes.extend(serde_json::to_vec(&shadow).unwrap_or_default());
    bytes
});

/// Deserializing reads the whole object, then keeps its cached form (kube-runtime's
/// controller asks for this bound; the operator's watch builds [`Cached`] itself).
impl<'de, K: Managed> serde::Deserialize<'de> for Cached<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = K::deserialize(deserializer)?;
        Cached::new(&object).map_err(serde::de::Error::custom)
    }
}

fn slim(meta: &ObjectMeta) -> ObjectMeta {
    let annotations = meta.annotations.as_ref().and_then(|all| {
        let own: std::collections::BTreeMap<String, String> = all
            .iter()
            .filter(|(key, _)| key.starts_with(OWN_ANNOTATIONS))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        (!own.is_empty()).then_some(own)
    });
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        creation_timestamp: meta.creation_timestamp.clone(),
        deletion_timestamp: meta.deletion_timestamp.clone(),
        deletion_grace_period_seconds: meta.deletion_grace_period_seconds,
        finalizers: meta.finalizers.clone(),
        annotations,
        ..ObjectMeta::default()
    }
}

impl<K: Managed> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// Which cached objects share a target, so that the duplicate-target check on each
/// reconcile is a lookup instead of a scan of the whole cache (which made a restart
/// with 10,000 resources quadratic). Fed from the same watch events as the cache, with
/// the same relist semantics: a relist builds a new index that replaces the old one
/// when the relist is complete. Entries are verified against the cache when used.
#[derive(Default)]
pub struct TargetIndex {
    state: Mutex<IndexState>,
}

#[derive(Default)]
struct IndexState {
    live: HashMap<u64, Vec<Box<str>>>,
    relisting: Option<HashMap<u64, Vec<Box<str>>>>,
}

fn target_hash(target: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    target.hash(&mut hasher);
    hasher.finish()
}

/// `namespace/name` (neither may contain a slash): one allocation per indexed object.
fn key_of<K: Resource>(object: &K) -> Box<str> {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
    .into_boxed_str()
}

fn insert(map: &mut HashMap<u64, Vec<Box<str>>>, hash: u64, key: Box<str>) {
    // Nearly every target has one object: room for exactly one (a Vec's first push
    // would make room for four).
    let entries = map.entry(hash).or_insert_with(|| Vec::with_capacity(1));
    if !entries.contains(&key) {
        entries.push(key);
    }
}

impl TargetIndex {
    fn with<T>(&self, f: impl FnOnce(&mut IndexState) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }

    /// An object was added or changed.
    pub fn applied<K: Managed>(&self, object: &Cached<K>) {
        let hash = target_hash(object.target());
        self.with(|state| insert(&mut state.live, hash, key_of(object)));
    }

    /// An object was deleted.
    pub fn deleted<K: Managed>(&self, object: &Cached<K>) {
        let hash = target_hash(object.target());
        let key = key_of(object);
        self.with(|state| {
            if let Some(entries) = state.live.get_mut(&hash) {
                entries.retain(|entry| *entry != key);
                if entries.is_empty() {
                    state.live.remove(&hash);
                }
            }
        });
    }

    /// A relist starts: objects listed from now on form the next index.
    pub fn relist_started(&self) {
        self.with(|state| state.relisting = Some(HashMap::new()));
    }

    /// An object seen during a relist.
    pub fn relisted<K: Managed>(&self, object: &Cached<K>) {
        let hash = target_hash(object.target());
        self.with(|state| match state.relisting.as_mut() {
            Some(next) => insert(next, hash, key_of(object)),
            None => insert(&mut state.live, hash, key_of(object)),
        });
    }

    /// The relist is complete: its index replaces the old one.
    pub fn relist_done(&self) {
        self.with(|state| {
            if let Some(next) = state.relisting.take() {
                state.live = next;
            }
        });
    }

    /// Other live cached objects with the same target as `object`.
    pub fn rivals<K: Managed>(
        &self,
        object: &Cached<K>,
        store: &Store<Cached<K>>,
    ) -> Vec<std::sync::Arc<Cached<K>>> {
        let hash = target_hash(object.target());
        let mine = key_of(object);
        let candidates: Vec<Box<str>> = self.with(|state| {
            state
                .live
                .get(&hash)
                .map(|entries| entries.iter().filter(|e| **e != mine).cloned().collect())
                .unwrap_or_default()
        });
        candidates
            .into_iter()
            .filter_map(|key| {
                let (namespace, name) = key.split_once('/')?;
                store.get(&ObjectRef::<Cached<K>>::new(name).within(namespace))
            })
            .filter(|other| {
                other.target() == object.target()
                    && other.meta().uid != object.meta().uid
                    && other.meta().deletion_timestamp.is_none()
            })
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.with(|state| state.live.values().map(Vec::len).sum())
    }
}

/// The last trigger key (see `controller::trigger_key`) seen per object, so that only
/// changes to it cause a reconcile. kube-runtime's `predicate_filter` keeps the same with
/// the object's name, namespace and uid as owned strings (about 200 bytes per object);
/// this keeps two 64-bit hashes. Fed from the watch: a deleted object is forgotten.
#[derive(Default)]
pub struct Triggers {
    last: Mutex<HashMap<u64, u64>>,
}

fn identity<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    let mut hasher = DefaultHasher::new();
    meta.namespace.hash(&mut hasher);
    meta.name.hash(&mut hasher);
    meta.uid.hash(&mut hasher);
    hasher.finish()
}

impl Triggers {
    /// Records `trigger` for the object; true if it differs from the last one recorded
    /// (or none was).
    pub fn changed<K: Resource>(&self, object: &K, trigger: u64) -> bool {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        last.insert(identity(object), trigger) != Some(trigger)
    }

    /// After a relist: `current` is the whole new cache. Returns the objects whose
    /// trigger changed (or that are new), and forgets the objects the relist no longer
    /// has (deleted while no watch was open).
    pub fn relisted<K: Resource>(
        &self,
        current: Vec<Arc<K>>,
        trigger: impl Fn(&K) -> u64,
    ) -> Vec<Arc<K>> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = HashMap::with_capacity(current.len());
        let changed = current
            .into_iter()
            .filter(|object| {
                let id = identity(object.as_ref());
                let key = trigger(object);
                next.insert(id, key);
                last.get(&id) != Some(&key)
            })
            .collect();
        *last = next;
        changed
    }

    /// The object was deleted.
    pub fn forget<K: Resource>(&self, object: &K) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        last.remove(&identity(object));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ThingShadow, ThingShadowSpec};
    use crate::kinds::Kind;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use serde_json::json;

    fn shadow(namespace: &str, name: &str, thing: &str) -> ThingShadow {
        let spec: ThingShadowSpec = serde_json::from_value(json!({
            "thingName": thing,
            "desired": {"power": "on", "config": {"mode": "eco"}},
        }))
        .unwrap();
        let mut object = ThingShadow::new(name, spec);
        object.metadata.namespace = Some(namespace.into());
        object.metadata.uid = Some(format!("uid-{namespace}-{name}"));
        object.metadata.resource_version = Some("42".into());
        object.metadata.generation = Some(3);
        object.metadata.finalizers = Some(vec![crate::api::FINALIZER.into()]);
        object.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        object.metadata.annotations = Some(
            [
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{...}".to_string(),
                ),
                (
                    crate::api::PAUSED_ANNOTATION.to_string(),
                    "true".to_string(),
                ),
            ]
            .into(),
        );
        object
    }

    #[test]
    fn decoding_gives_back_the_object_with_the_metadata_a_reconcile_needs() {
        let mut object = shadow("ns", "a", "thing-1");
        object.status = Some(
            serde_json::from_value(json!({
                "observedGeneration": 3,
                "managedPaths": ["/power"],
            }))
            .unwrap(),
        );
        let cached = Cached::new(&object).unwrap();
        let decoded = cached.decode().unwrap();
        assert_eq!(decoded.spec, object.spec);
        assert_eq!(decoded.status, object.status);
        let meta = &decoded.metadata;
        assert_eq!(meta.name.as_deref(), Some("a"));
        assert_eq!(meta.namespace.as_deref(), Some("ns"));
        assert_eq!(meta.uid, object.metadata.uid);
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.generation, Some(3));
        assert_eq!(meta.finalizers, object.metadata.finalizers);
        let annotations = meta.annotations.clone().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            vec![crate::api::PAUSED_ANNOTATION],
            "only the operator's own annotations are kept"
        );
        assert!(meta.labels.is_none());
        assert_eq!(cached.target(), object.target_key());
        assert!(matches!(
            cached.tenancy_target(),
            crate::planner::tenancy::Target::Thing("thing-1")
        ));
        assert_eq!(Cached::<ThingShadow>::kind(&()), "ThingShadow");
    }

    #[test]
    fn the_cached_body_is_a_fraction_of_the_json() {
        let mut object = shadow("ns", "a", "thing-1");
        object.status = Some(
            serde_json::from_value(json!({
                "observedGeneration": 3,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Synced",
                    "message": "desired state matches the spec at shadow version 7",
                    "observedGeneration": 3, "lastTransitionTime": "2026-11-22T02:00:01Z"}],
                "shadow": {"version": 7, "desired": {"power": "on", "config": {"mode": "eco"}},
                    "delta": {"power": "on", "config": {"mode": "eco"}}},
                "managedPaths": ["/power", "/config/mode"],
                "lastSyncTime": "2026-11-22T02:00:01Z",
            }))
            .unwrap(),
        );
        let cached = Cached::new(&object).unwrap();
        let mut text = serde_json::to_value(&object).unwrap();
        text.as_object_mut().unwrap().remove("metadata");
        let text = serde_json::to_vec(&text).unwrap();
        assert_eq!(cached.plain_len as usize, text.len());
        assert!(
            cached.body.len() * 3 < text.len(),
            "{} bytes compressed from {}",
            cached.body.len(),
            text.len()
        );
        assert_eq!(cached.decode().unwrap().status, object.status);
    }

    #[test]
    fn the_dictionary_holds_both_kinds() {
        let text = String::from_utf8(DICTIONARY.clone()).unwrap();
        for needle in [
            "\"RetainedMessage\"",
            "\"ThingShadow\"",
            "\"lastTransitionTime\"",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
    }

    fn store_with(objects: &[ThingShadow]) -> (Store<Cached<ThingShadow>>, TargetIndex) {
        let mut writer = Writer::<Cached<ThingShadow>>::default();
        let index = TargetIndex::default();
        for object in objects {
            let cached = Cached::new(object).unwrap();
            index.applied(&cached);
            writer.apply_watcher_event(&watcher::Event::Apply(cached));
        }
        (writer.as_reader(), index)
    }

    #[test]
    fn rivals_are_found_by_target_and_verified_against_the_cache() {
        let a = shadow("ns1", "a", "thing-1");
        let b = shadow("ns2", "b", "thing-1");
        let c = shadow("ns1", "c", "thing-2");
        let (store, index) = store_with(&[a.clone(), b.clone(), c.clone()]);
        let a_cached = Cached::new(&a).unwrap();
        let rivals = index.rivals(&a_cached, &store);
        assert_eq!(rivals.len(), 1);
        assert_eq!(rivals[0].meta().name.as_deref(), Some("b"));
        assert!(index.rivals(&Cached::new(&c).unwrap(), &store).is_empty());

        // A deleted rival no longer counts.
        let b_cached = Cached::new(&b).unwrap();
        index.deleted(&b_cached);
        assert!(index.rivals(&a_cached, &store).is_empty());
        // An entry whose object is not in the cache is ignored.
        index.applied(&Cached::new(&shadow("ns3", "ghost", "thing-1")).unwrap());
        assert_eq!(index.rivals(&a_cached, &store).len(), 0);
    }

    #[test]
    fn only_a_changed_trigger_passes() {
        let triggers = Triggers::default();
        let a = shadow("ns", "a", "thing-1");
        let b = shadow("ns", "b", "thing-1");
        assert!(triggers.changed(&a, 1), "first sight");
        assert!(!triggers.changed(&a, 1), "same trigger");
        assert!(triggers.changed(&b, 1), "another object");
        assert!(triggers.changed(&a, 2), "changed trigger");
        triggers.forget(&a);
        assert!(triggers.changed(&a, 2), "forgotten after deletion");
        let mut recreated = a.clone();
        recreated.metadata.uid = Some("another-uid".into());
        assert!(
            triggers.changed(&recreated, 2),
            "a new object with the same name"
        );
    }

    #[test]
    fn a_relist_passes_changed_and_new_objects_and_forgets_the_gone() {
        use kube::ResourceExt;
        let triggers = Triggers::default();
        let a = shadow("ns", "a", "thing-1");
        let b = shadow("ns", "b", "thing-2");
        let gone = shadow("ns", "gone", "thing-3");
        for object in [&a, &b, &gone] {
            assert!(triggers.changed(object, 1));
        }
        let c = shadow("ns", "c", "thing-4");
        let trigger = |o: &ThingShadow| if o.name_any() == "b" { 2 } else { 1 };
        let passed = triggers.relisted(
            vec![
                Arc::new(a.clone()),
                Arc::new(b.clone()),
                Arc::new(c.clone()),
            ],
            trigger,
        );
        let names: Vec<String> = passed.iter().map(|o| o.name_any()).collect();
        assert_eq!(names, ["b", "c"], "a is unchanged");
        assert!(!triggers.changed(&c, 1), "c is recorded");
        assert!(triggers.changed(&gone, 1), "gone was forgotten");
        let again = triggers.relisted(vec![Arc::new(a), Arc::new(b), Arc::new(c)], trigger);
        assert!(again.is_empty(), "nothing changed since");
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_completes() {
        let a = shadow("ns1", "a", "thing-1");
        let b = shadow("ns2", "b", "thing-1");
        let (store, index) = store_with(&[a.clone(), b.clone()]);
        let a_cached = Cached::new(&a).unwrap();
        index.relist_started();
        index.relisted(&a_cached);
        // Until the relist completes, the old index answers.
        assert_eq!(index.rivals(&a_cached, &store).len(), 1);
        index.relist_done();
        assert_eq!(index.len(), 1, "b was gone in the relist");
        assert!(index.rivals(&a_cached, &store).is_empty());
    }
}
