//! The children of every set, as the sets need them: the ThingShadow controller's watch
//! shows it every ThingShadow it decodes ([`Children::observe`]), and those that carry
//! the set label are reduced to their [`ChildFacts`] (the objects themselves are not
//! kept here), grouped by set and thing. One watch of the ThingShadows serves both
//! controllers: a second one, selected by the label, would have the apiserver send
//! every child twice and the operator decode it twice.
//!
//! Every change of a child names its set to look at again (sent to the set controller),
//! and a relist names every set it saw before or after.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use tokio::sync::mpsc;

use super::super::kinds::Observed;
use crate::api::{ThingShadow, ThingShadowSet, SET_LABEL};
use crate::planner::fleet::ChildFacts;

/// A set, by namespace and name.
pub type SetKey = (String, String);

/// The children of every set.
pub struct Children {
    state: Mutex<State>,
    /// The first list is complete.
    ready: AtomicBool,
    /// The sets to look at again, to the set controller.
    wake: mpsc::UnboundedSender<SetKey>,
}

#[derive(Default)]
struct State {
    /// Per set, its children by thing. The key is shared with `filed`.
    by_set: HashMap<Arc<SetKey>, HashMap<String, ChildFacts>>,
    /// Per child (`namespace/name`), its set and thing. Compact: one entry per child of
    /// every set, 10,000 for a large set.
    filed: HashMap<Box<str>, (Arc<SetKey>, Box<str>)>,
    /// A relist under way: what it has delivered so far.
    relist: Option<Vec<(String, String, ChildFacts)>>,
}

impl Children {
    /// The children (empty, not ready) and the stream of sets to look at again.
    pub fn new() -> (
        Children,
        impl Stream<Item = ObjectRef<ThingShadowSet>> + Send + 'static,
    ) {
        let (wake, woken) = mpsc::unbounded_channel::<SetKey>();
        let children = Children {
            state: Mutex::new(State::default()),
            ready: AtomicBool::new(false),
            wake,
        };
        let sets = futures::stream::unfold(woken, |mut woken| async move {
            let (namespace, name) = woken.recv().await?;
            Some((ObjectRef::new(&name).within(&namespace), woken))
        });
        (children, sets)
    }

    /// Whether the first list is complete (before it, a set would see no children and
    /// create them all again).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Runs `f` on the children of one set (empty when it has none).
    pub fn with_set<T>(
        &self,
        key: &SetKey,
        f: impl FnOnce(&HashMap<String, ChildFacts>) -> T,
    ) -> T {
        let state = self.state();
        match state.by_set.get(key) {
            Some(children) => f(children),
            None => f(&HashMap::new()),
        }
    }

    /// Takes in one event of the ThingShadow watch; wakes the sets it concerns.
    pub fn observe(&self, event: Observed<'_, ThingShadow>) {
        let woken = match event {
            Observed::RelistStarted => {
                self.state().relist = Some(Vec::new());
                Vec::new()
            }
            Observed::Relisted(shadow) => {
                if let Some((namespace, set)) = child_of(shadow) {
                    self.state().relist.get_or_insert_with(Vec::new).push((
                        namespace,
                        set,
                        ChildFacts::of(shadow),
                    ));
                }
                Vec::new()
            }
            Observed::RelistDone => self.relist_done(),
            Observed::Applied(shadow) => self.apply(shadow),
            Observed::Deleted { namespace, name } => self
                .state()
                .unfile(&child_id(namespace, name))
                .into_iter()
                .collect(),
        };
        for set in woken {
            // The set controller is gone only when the operator stops.
            let _ = self.wake.send(set);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Files a child, or forgets an object that no longer carries the set label; returns
    /// the sets it concerns.
    fn apply(&self, shadow: &ThingShadow) -> Vec<SetKey> {
        let mut state = self.state();
        match child_of(shadow) {
            Some((namespace, set)) => {
                let key = (namespace, set);
                let moved_from = state.file(key.clone(), ChildFacts::of(shadow));
                moved_from.into_iter().chain([key]).collect()
            }
            None => state
                .unfile(&child_id(
                    &shadow.namespace().unwrap_or_default(),
                    &shadow.name_any(),
                ))
                .into_iter()
                .collect(),
        }
    }

    /// Replaces everything with what the relist delivered; returns every set seen before
    /// or after.
    fn relist_done(&self) -> Vec<SetKey> {
        let mut state = self.state();
        let mut sets: HashSet<SetKey> = state.by_set.keys().map(|k| SetKey::clone(k)).collect();
        let listed = state.relist.take().unwrap_or_default();
        state.by_set.clear();
        state.filed.clear();
        for (namespace, set, facts) in listed {
            let key = (namespace, set);
            sets.insert(key.clone());
            state.file(key, facts);
        }
        state.by_set.shrink_to_fit();
        state.filed.shrink_to_fit();
        drop(state);
        self.ready.store(true, Ordering::SeqCst);
        sets.into_iter().collect()
    }
}

impl State {
    /// Files a child of the set `key` (in the set's namespace); returns the set it was
    /// filed under before, if another.
    fn file(&mut self, key: SetKey, facts: ChildFacts) -> Option<SetKey> {
        let child = child_id(&key.0, &facts.name);
        // A child whose label moved to another set, or whose thing changed (it cannot:
        // thingName is immutable), is filed anew.
        let before = self.unfile(&child).filter(|before| *before != key);
        let set = match self.by_set.get_key_value(&key) {
            Some((set, _)) => set.clone(),
            None => Arc::new(key),
        };
        self.filed
            .insert(child, (set.clone(), facts.thing.as_str().into()));
        self.by_set
            .entry(set)
            .or_default()
            .insert(facts.thing.clone(), facts);
        before
    }

    /// Forgets the child `namespace/name`; returns its set.
    fn unfile(&mut self, child: &str) -> Option<SetKey> {
        let (set, thing) = self.filed.remove(child)?;
        let name = child.split_once('/').map_or(child, |(_, name)| name);
        if let Some(children) = self.by_set.get_mut(&*set) {
            if children.get(&*thing).is_some_and(|c| c.name == name) {
                children.remove(&*thing);
            }
            if children.is_empty() {
                self.by_set.remove(&*set);
            }
        }
        Some(SetKey::clone(&set))
    }
}

/// How `filed` names a child (a namespace has no `/` in its name).
fn child_id(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

/// The namespace and set of a ThingShadow that carries the set label.
fn child_of(shadow: &ThingShadow) -> Option<(String, String)> {
    let namespace = shadow.namespace()?;
    let set = shadow.labels().get(SET_LABEL)?.clone();
    Some((namespace, set))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::api::REVISION_ANNOTATION;

    /// A ThingShadow `name` of `thing`, labelled for `set` (none: no label), carrying
    /// `revision`.
    fn shadow(name: &str, thing: &str, set: Option<&str>, revision: &str) -> ThingShadow {
        let mut value = json!({
            "apiVersion": "iot.shadowsync.dev/v1alpha1",
            "kind": "ThingShadow",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": format!("uid-{name}"),
                "annotations": {REVISION_ANNOTATION: revision},
            },
            "spec": {"thingName": thing},
        });
        if let Some(set) = set {
            value["metadata"]["labels"] = json!({SET_LABEL: set});
        }
        serde_json::from_value(value).expect("a ThingShadow")
    }

    fn things(children: &Children, set: &str) -> Vec<(String, String)> {
        let mut out = children.with_set(&("ns".into(), set.into()), |c| {
            c.values()
                .map(|f| (f.thing.clone(), f.revision.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
        });
        out.sort();
        out
    }

    /// The sets woken so far, sorted, by name.
    fn woken(sets: &mut (impl Stream<Item = ObjectRef<ThingShadowSet>> + Unpin)) -> Vec<String> {
        let mut names = Vec::new();
        while let Some(Some(set)) = sets.next().now_or_never() {
            assert_eq!(set.namespace.as_deref(), Some("ns"));
            names.push(set.name);
        }
        names.sort();
        names
    }

    use futures::FutureExt;

    #[test]
    fn children_are_filed_by_set_and_thing_and_forgotten_on_delete() {
        let (children, sets) = Children::new();
        let mut sets = Box::pin(sets);
        assert!(!children.ready());
        children.observe(Observed::RelistStarted);
        children.observe(Observed::Relisted(&shadow("a-1", "t1", Some("a"), "r1")));
        children.observe(Observed::Relisted(&shadow("b-1", "t1", Some("b"), "r1")));
        children.observe(Observed::Relisted(&shadow("solo", "t9", None, "r1")));
        assert_eq!(things(&children, "a"), [], "a relist counts once complete");
        assert_eq!(woken(&mut sets), Vec::<String>::new());
        children.observe(Observed::RelistDone);
        assert_eq!(
            woken(&mut sets),
            ["a", "b"],
            "an unlabelled shadow is no child"
        );
        assert!(children.ready());
        assert_eq!(things(&children, "a"), [("t1".into(), "r1".into())]);

        // An update replaces; a delete forgets and names the set.
        children.observe(Observed::Applied(&shadow("a-1", "t1", Some("a"), "r2")));
        children.observe(Observed::Applied(&shadow("a-2", "t2", Some("a"), "r2")));
        assert_eq!(woken(&mut sets), ["a", "a"]);
        assert_eq!(
            things(&children, "a"),
            [("t1".into(), "r2".into()), ("t2".into(), "r2".into())]
        );
        children.observe(Observed::Deleted {
            namespace: "ns",
            name: "a-1",
        });
        assert_eq!(woken(&mut sets), ["a"]);
        children.observe(Observed::Deleted {
            namespace: "ns",
            name: "a-1",
        });
        children.observe(Observed::Deleted {
            namespace: "ns",
            name: "solo",
        });
        assert_eq!(woken(&mut sets), Vec::<String>::new(), "nothing to tell");
        assert_eq!(things(&children, "a"), [("t2".into(), "r2".into())]);

        // A child relabelled to another set moves, and both sets look again.
        children.observe(Observed::Applied(&shadow("a-2", "t2", Some("b"), "r2")));
        assert_eq!(woken(&mut sets), ["a", "b"]);
        assert_eq!(things(&children, "a"), []);
        assert_eq!(
            things(&children, "b"),
            [("t1".into(), "r1".into()), ("t2".into(), "r2".into())]
        );
        // One whose label is removed is no longer a child.
        children.observe(Observed::Applied(&shadow("a-2", "t2", None, "r2")));
        assert_eq!(woken(&mut sets), ["b"]);
        assert_eq!(things(&children, "b"), [("t1".into(), "r1".into())]);

        // A relist drops what it did not deliver and names the sets that lost children.
        children.observe(Observed::Applied(&shadow("a-3", "t3", Some("a"), "r2")));
        assert_eq!(woken(&mut sets), ["a"]);
        children.observe(Observed::RelistStarted);
        children.observe(Observed::Relisted(&shadow("b-1", "t1", Some("b"), "r3")));
        children.observe(Observed::RelistDone);
        assert_eq!(woken(&mut sets), ["a", "b"]);
        assert_eq!(things(&children, "a"), []);
        assert_eq!(things(&children, "b"), [("t1".into(), "r3".into())]);
    }
}
