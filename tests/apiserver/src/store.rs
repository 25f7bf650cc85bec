//! The server's whole state behind one lock: objects, the global resourceVersion, the
//! bounded watch history, open watches, request counters and injected faults.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::registry::{Registry, CRD_STORAGE};
use crate::selectors::Selector;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watches.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub storage: String,
    pub namespace: String,
    pub kind: EventKind,
    pub object: Value,
    /// The object before a modification, so that selector watches can see it leave.
    pub old: Option<Value>,
}

impl Change {
    /// The event type a watch with this selector sees, if any: an object that starts or
    /// stops matching a selector is ADDED or DELETED for that watch, as Kubernetes does.
    pub fn kind_for(&self, selector: &Selector) -> Option<EventKind> {
        if selector.is_empty() {
            return Some(self.kind);
        }
        let now = selector.matches(&self.object);
        if self.kind != EventKind::Modified {
            return now.then_some(self.kind);
        }
        let before = self.old.as_ref().is_some_and(|o| selector.matches(o));
        match (before, now) {
            (true, true) => Some(EventKind::Modified),
            (false, true) => Some(EventKind::Added),
            (true, false) => Some(EventKind::Deleted),
            (false, false) => None,
        }
    }
}

#[derive(Debug)]
pub enum WatchMsg {
    Change(Arc<Change>),
    /// A bookmark at this resourceVersion; everything up to it has been sent.
    Bookmark(u64),
}

struct Watcher {
    id: u64,
    storage: String,
    namespace: Option<String>,
    bookmarks: bool,
    tx: UnboundedSender<WatchMsg>,
}

/// What a request counter is keyed by.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestKey {
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// `apply`, `merge`, `json` or `strategic` for patches.
    pub patch_type: String,
    pub field_manager: String,
    pub user_agent: String,
    pub code: u16,
}

/// One counter and its value, as the test hooks report them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterEntry {
    #[serde(flatten)]
    pub key: RequestKey,
    pub count: u64,
}

/// Which requests a count or an injected fault applies to; `None` matches anything.
/// `user_agent` matches as a prefix, the rest exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestFilter {
    pub verb: Option<String>,
    pub group: Option<String>,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub patch_type: Option<String>,
    pub field_manager: Option<String>,
    pub user_agent: Option<String>,
    pub code: Option<u16>,
}

impl RequestFilter {
    pub fn matches(&self, key: &RequestKey) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.verb, &key.verb)
            && eq(&self.group, &key.group)
            && eq(&self.resource, &key.resource)
            && eq(&self.subresource, &key.subresource)
            && eq(&self.patch_type, &key.patch_type)
            && eq(&self.field_manager, &key.field_manager)
            && self
                .user_agent
                .as_deref()
                .is_none_or(|w| key.user_agent.starts_with(w))
            && self.code.is_none_or(|c| c == key.code)
    }

    /// Builds a filter from query parameters named like the JSON fields.
    pub fn from_query(query: &BTreeMap<String, String>) -> Result<RequestFilter, String> {
        let get = |k: &str| query.get(k).cloned();
        Ok(RequestFilter {
            verb: get("verb"),
            group: get("group"),
            resource: get("resource"),
            subresource: get("subresource"),
            patch_type: get("patchType"),
            field_manager: get("fieldManager"),
            user_agent: get("userAgent"),
            code: match query.get("code") {
                Some(c) => Some(c.parse().map_err(|_| format!("bad code {c:?}"))?),
                None => None,
            },
        })
    }
}

#[derive(Clone, Debug)]
pub struct ConflictFault {
    pub remaining: u32,
    pub filter: RequestFilter,
}

/// The part of the state that `--data-file` keeps across restarts.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub resource_version: u64,
    pub objects: BTreeMap<String, Vec<Value>>,
}

pub struct Store {
    pub registry: Registry,
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches from a resourceVersion below this one cannot be served any more.
    compacted_rv: u64,
    watchers: Vec<Watcher>,
    next_watcher_id: u64,
    pub counters: BTreeMap<RequestKey, u64>,
    pub conflict_faults: Vec<ConflictFault>,
    rng: StdRng,
    /// Namespaces being deleted, and when their content is to be deleted.
    namespace_cleanups: BTreeMap<String, Instant>,
    namespace_cleanup_delay: Duration,
    /// Changed since the data file was last written.
    pub dirty: bool,
}

impl Store {
    pub fn new(history_limit: usize, seed: u64, namespace_cleanup_delay: Duration) -> Store {
        Store {
            registry: Registry::build(std::iter::empty()),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_rv: 0,
            watchers: Vec::new(),
            next_watcher_id: 1,
            counters: BTreeMap::new(),
            conflict_faults: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            namespace_cleanups: BTreeMap::new(),
            namespace_cleanup_delay,
            dirty: false,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    pub fn get(&self, storage: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(storage)?
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Objects of one storage key, in (namespace, name) order, from `start` on.
    pub fn iter_from<'a>(
        &'a self,
        storage: &str,
        namespace: Option<&'a str>,
        start: Option<(String, String)>,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Value)> + 'a {
        let lower = start.unwrap_or_default();
        self.objects
            .get(storage)
            .into_iter()
            .flat_map(move |m| m.range(lower.clone()..))
            .filter(move |((ns, _), _)| namespace.is_none_or(|want| want == ns))
    }

    pub fn count_in_namespace(&self, namespace: &str) -> usize {
        self.objects
            .values()
            .flat_map(|m| m.keys())
            .filter(|(ns, _)| ns == namespace)
            .count()
    }

    /// Storage keys that hold objects in a namespace.
    pub fn namespaced_keys(&self, namespace: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (storage, objects) in &self.objects {
            for (ns, name) in objects.keys() {
                if ns == namespace {
                    out.push((storage.clone(), name.clone()));
                }
            }
        }
        out
    }

    pub fn crd_objects(&self) -> impl Iterator<Item = &Value> {
        self.objects
            .get(CRD_STORAGE)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn rebuild_registry(&mut self) {
        let registry = Registry::build(self.crd_objects());
        self.registry = registry;
    }

    /// Random lowercase letters and digits as Kubernetes uses for `generateName`.
    pub fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    /// A version-4 UUID from the seeded generator, so runs are repeatable.
    pub fn new_uid(&mut self) -> String {
        let mut b: [u8; 16] = self.rng.random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores a new or changed object under the next resourceVersion and tells watches.
    pub fn put(&mut self, storage: &str, namespace: &str, name: &str, mut object: Value) -> Value {
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let old = self
            .objects
            .entry(storage.to_string())
            .or_default()
            .insert((namespace.to_string(), name.to_string()), object.clone());
        let kind = if old.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(Change {
            rv,
            storage: storage.to_string(),
            namespace: namespace.to_string(),
            kind,
            object: object.clone(),
            old,
        });
        object
    }

    /// Removes an object; the DELETED event carries it with the deletion's resourceVersion.
    pub fn remove(&mut self, storage: &str, namespace: &str, name: &str) -> Option<Value> {
        let mut object = self
            .objects
            .get_mut(storage)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.record(Change {
            rv,
            storage: storage.to_string(),
            namespace: namespace.to_string(),
            kind: EventKind::Deleted,
            object: object.clone(),
            old: None,
        });
        Some(object)
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.dirty = true;
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        // Selectors are applied by each watch stream (see `Change::kind_for`).
        self.watchers.retain(|w| {
            let relevant = w.storage == change.storage
                && w.namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == change.namespace);
            if relevant {
                w.tx.send(WatchMsg::Change(change.clone())).is_ok()
            } else {
                !w.tx.is_closed()
            }
        });
    }

    /// Changes after `rv` for one storage key, or `Err` when history no longer reaches back.
    pub fn changes_since(&self, storage: &str, rv: u64) -> Result<Vec<Arc<Change>>, u64> {
        if rv < self.compacted_rv {
            return Err(self.compacted_rv);
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > rv && c.storage == storage)
            .cloned()
            .collect())
    }

    pub fn add_watcher(
        &mut self,
        storage: &str,
        namespace: Option<String>,
        bookmarks: bool,
        tx: UnboundedSender<WatchMsg>,
    ) -> u64 {
        let id = self.next_watcher_id;
        self.next_watcher_id += 1;
        self.watchers.push(Watcher {
            id,
            storage: storage.to_string(),
            namespace,
            bookmarks,
            tx,
        });
        id
    }

    pub fn remove_watcher(&mut self, id: u64) {
        self.watchers.retain(|w| w.id != id);
    }

    /// Open watches as (storage key, namespace) pairs.
    pub fn open_watches(&mut self) -> Vec<(String, Option<String>)> {
        self.watchers.retain(|w| !w.tx.is_closed());
        self.watchers
            .iter()
            .map(|w| (w.storage.clone(), w.namespace.clone()))
            .collect()
    }

    /// Ends every open watch stream. Returns how many there were.
    pub fn cut_watches(&mut self) -> usize {
        let n = self.watchers.len();
        self.watchers.clear();
        n
    }

    /// Sends a bookmark at the current resourceVersion to watches that asked for them.
    pub fn send_bookmarks(&mut self) {
        let rv = self.rv;
        self.watchers
            .retain(|w| !w.bookmarks || w.tx.send(WatchMsg::Bookmark(rv)).is_ok());
    }

    /// Drops the history: a watch from any earlier resourceVersion now gets 410 Gone.
    pub fn forget_history(&mut self) -> u64 {
        self.history.clear();
        self.compacted_rv = self.rv;
        self.rv
    }

    pub fn schedule_namespace_cleanup(&mut self, namespace: &str) {
        let due = Instant::now() + self.namespace_cleanup_delay;
        self.namespace_cleanups
            .entry(namespace.to_string())
            .or_insert(due);
    }

    /// Namespaces whose content should be deleted now; each is returned once.
    pub fn due_namespace_cleanups(&mut self) -> Vec<String> {
        let now = Instant::now();
        let due: Vec<String> = self
            .namespace_cleanups
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in &due {
            self.namespace_cleanups.remove(ns);
        }
        due
    }

    pub fn count_request(&mut self, key: RequestKey) {
        *self.counters.entry(key).or_default() += 1;
    }

    /// Consumes one injected conflict matching the request, if any is left.
    pub fn take_conflict(&mut self, key: &RequestKey) -> bool {
        for fault in &mut self.conflict_faults {
            if fault.remaining > 0 && fault.filter.matches(key) {
                fault.remaining -= 1;
                return true;
            }
        }
        false
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            resource_version: self.rv,
            objects: self
                .objects
                .iter()
                .filter(|(_, m)| !m.is_empty())
                .map(|(k, m)| (k.clone(), m.values().cloned().collect()))
                .collect(),
        }
    }

    /// Loads a snapshot into an empty store; its history starts empty, so watches from
    /// before the snapshot get 410 Gone.
    pub fn restore(&mut self, snapshot: Snapshot) {
        for (storage, objects) in snapshot.objects {
            let map = self.objects.entry(storage).or_default();
            for object in objects {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                map.insert((ns, name), object);
            }
        }
        self.rv = snapshot.resource_version;
        self.compacted_rv = self.rv;
        self.rebuild_registry();
        let terminating: Vec<String> = self
            .objects
            .get(crate::registry::NAMESPACE_STORAGE)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|ns| !ns["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|ns| ns["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        for ns in terminating {
            self.schedule_namespace_cleanup(&ns);
        }
    }
}
