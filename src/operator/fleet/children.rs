//! The children of every set, as the sets need them: one watch of the ThingShadows that
//! carry the set label, each reduced to its [`ChildFacts`] as it arrives (the objects
//! themselves are not kept), grouped by set and thing.
//!
//! The watch also says which set to look at again: every change of a child names its
//! set (the label), and a relist names every set it saw before or after.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tracing::warn;

use crate::api::{ThingShadow, ThingShadowSet, SET_LABEL};
use crate::planner::fleet::ChildFacts;

/// A set, by namespace and name.
pub type SetKey = (String, String);

/// The children of every set.
#[derive(Default)]
pub struct Children {
    state: Mutex<State>,
    /// The first list is complete.
    ready: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Per set, its children by thing.
    by_set: HashMap<SetKey, HashMap<String, ChildFacts>>,
    /// Per child (namespace, name), where it is filed.
    filed: HashMap<(String, String), (SetKey, String)>,
    /// A relist under way: what it has delivered so far.
    relist: Option<Vec<(String, String, ChildFacts)>>,
}

impl Children {
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
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.by_set.get(key) {
            Some(children) => f(children),
            None => f(&HashMap::new()),
        }
    }

    /// Files a child; returns its set.
    fn apply(&self, namespace: String, set: String, facts: ChildFacts) -> SetKey {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.clone(), set);
        state.file(key.clone(), namespace, facts);
        key
    }

    /// Forgets a child; returns its set.
    fn delete(&self, namespace: String, name: String) -> Option<SetKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.unfile(&(namespace, name))
    }

    fn relist_started(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.relist = Some(Vec::new());
    }

    fn relisted(&self, namespace: String, set: String, facts: ChildFacts) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .relist
            .get_or_insert_with(Vec::new)
            .push((namespace, set, facts));
    }

    /// Replaces everything with what the relist delivered; returns every set seen before
    /// or after.
    fn relist_done(&self) -> Vec<SetKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut sets: HashSet<SetKey> = state.by_set.keys().cloned().collect();
        let listed = state.relist.take().unwrap_or_default();
        state.by_set.clear();
        state.filed.clear();
        for (namespace, set, facts) in listed {
            let key = (namespace.clone(), set);
            sets.insert(key.clone());
            state.file(key, namespace, facts);
        }
        state.by_set.shrink_to_fit();
        state.filed.shrink_to_fit();
        drop(state);
        self.ready.store(true, Ordering::SeqCst);
        sets.into_iter().collect()
    }
}

impl State {
    fn file(&mut self, key: SetKey, namespace: String, facts: ChildFacts) {
        let child = (namespace, facts.name.clone());
        // A child whose label moved to another set, or whose thing changed (it cannot:
        // thingName is immutable), is filed anew.
        self.unfile(&child);
        self.filed.insert(child, (key.clone(), facts.thing.clone()));
        self.by_set
            .entry(key)
            .or_default()
            .insert(facts.thing.clone(), facts);
    }

    fn unfile(&mut self, child: &(String, String)) -> Option<SetKey> {
        let (key, thing) = self.filed.remove(child)?;
        if let Some(children) = self.by_set.get_mut(&key) {
            if children.get(&thing).is_some_and(|c| c.name == child.1) {
                children.remove(&thing);
            }
            if children.is_empty() {
                self.by_set.remove(&key);
            }
        }
        Some(key)
    }
}

/// The set a child belongs to (its label) and its facts; `None` for an object that is
/// not a readable child.
fn child_of(obj: &DynamicObject) -> Option<(String, String, ChildFacts)> {
    let namespace = obj.metadata.namespace.clone()?;
    let set = obj.metadata.labels.as_ref()?.get(SET_LABEL)?.clone();
    match obj.clone().try_parse::<ThingShadow>() {
        Ok(shadow) => Some((namespace, set, ChildFacts::of(&shadow))),
        Err(err) => {
            // The ThingShadow controller marks it InvalidObject; the set sees no child
            // for its thing until it is mended.
            warn!(error = %err, name = ?obj.metadata.name, "a set's child does not decode");
            None
        }
    }
}

/// Watches the children (ThingShadows with the set label) into `children`; yields the
/// sets to look at again. Watch failures are retried with backoff and reported to
/// `failed` (for the liveness probe); answers to `answered`.
pub fn watch(
    api: Api<DynamicObject>,
    children: std::sync::Arc<Children>,
    answered: impl Fn() + Send + 'static,
    failed: impl Fn() + Send + 'static,
) -> impl Stream<Item = ObjectRef<ThingShadowSet>> + Send {
    let config = watcher::Config::default()
        .labels(SET_LABEL)
        .any_semantic()
        .page_size(super::LIST_PAGE_SIZE);
    watcher::watcher(api, config)
        .default_backoff()
        .flat_map(move |event| {
            let sets: Vec<SetKey> = match event {
                Err(err) => {
                    warn!(error = %err, "the watch of the sets' children failed (retried)");
                    failed();
                    Vec::new()
                }
                Ok(event) => {
                    answered();
                    match event {
                        Event::Init => {
                            children.relist_started();
                            Vec::new()
                        }
                        Event::InitApply(mut obj) => {
                            obj.metadata.managed_fields = None;
                            if let Some((namespace, set, facts)) = child_of(&obj) {
                                children.relisted(namespace, set, facts);
                            }
                            Vec::new()
                        }
                        Event::InitDone => children.relist_done(),
                        Event::Apply(mut obj) => {
                            obj.metadata.managed_fields = None;
                            match child_of(&obj) {
                                Some((namespace, set, facts)) => {
                                    vec![children.apply(namespace, set, facts)]
                                }
                                None => Vec::new(),
                            }
                        }
                        Event::Delete(obj) => match (obj.metadata.namespace, obj.metadata.name) {
                            (Some(namespace), Some(name)) => {
                                children.delete(namespace, name).into_iter().collect()
                            }
                            _ => Vec::new(),
                        },
                    }
                }
            };
            futures::stream::iter(
                sets.into_iter()
                    .map(|(namespace, name)| ObjectRef::new(&name).within(&namespace)),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, thing: &str, revision: &str) -> ChildFacts {
        ChildFacts {
            name: name.into(),
            uid: format!("uid-{name}"),
            thing: thing.into(),
            revision: Some(revision.into()),
            ..ChildFacts::default()
        }
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

    #[test]
    fn children_are_filed_by_set_and_thing_and_forgotten_on_delete() {
        let children = Children::default();
        assert!(!children.ready());
        children.relist_started();
        children.relisted("ns".into(), "a".into(), facts("a-1", "t1", "r1"));
        children.relisted("ns".into(), "b".into(), facts("b-1", "t1", "r1"));
        assert_eq!(things(&children, "a"), []);
        let mut sets = children.relist_done();
        sets.sort();
        assert_eq!(sets, [("ns".into(), "a".into()), ("ns".into(), "b".into())]);
        assert!(children.ready());
        assert_eq!(things(&children, "a"), [("t1".into(), "r1".into())]);

        // An update replaces; a delete forgets and names the set.
        children.apply("ns".into(), "a".into(), facts("a-1", "t1", "r2"));
        children.apply("ns".into(), "a".into(), facts("a-2", "t2", "r2"));
        assert_eq!(
            things(&children, "a"),
            [("t1".into(), "r2".into()), ("t2".into(), "r2".into())]
        );
        assert_eq!(
            children.delete("ns".into(), "a-1".into()),
            Some(("ns".into(), "a".into()))
        );
        assert_eq!(children.delete("ns".into(), "a-1".into()), None);
        assert_eq!(things(&children, "a"), [("t2".into(), "r2".into())]);

        // A child relabelled to another set moves.
        children.apply("ns".into(), "b".into(), facts("a-2", "t2", "r2"));
        assert_eq!(things(&children, "a"), []);
        assert_eq!(
            things(&children, "b"),
            [("t1".into(), "r1".into()), ("t2".into(), "r2".into())]
        );

        // A relist drops what it did not deliver and names the sets that lost children.
        children.relist_started();
        children.relisted("ns".into(), "b".into(), facts("b-1", "t1", "r3"));
        let mut sets = children.relist_done();
        sets.sort();
        assert_eq!(sets, [("ns".into(), "b".into())]);
        assert_eq!(things(&children, "b"), [("t1".into(), "r3".into())]);
    }
}
