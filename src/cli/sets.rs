//! `ThingShadowSet` in `apply` and `diff`: each set becomes its children before anything
//! is synced.
//!
//! A set's selector is resolved against the registry of the data plane in use
//! ([`crate::fleet::membership::resolve`]), and each selected thing gets one `ThingShadow`
//! named [`child_name`] in the set's namespace, with the spec
//! [`ShadowTemplate::spec_for`](crate::api::ShadowTemplate::spec_for), the set's label
//! and the template's revision, as the operator names and labels them. The children take
//! the set's place in the input and from there on are ordinary ThingShadows: the same
//! duplicate-target check (the first declaration in the input owns a target), the same
//! sync pass, the same state file entries.
//!
//! Everything is applied at once. Staged rollouts (`spec.rollout`: steps, waiting for the
//! devices, failure budgets, rollback) need the operator, which keeps the rollout's
//! progress in the set's status between passes; the command line has no such memory and
//! says so, one line per set. A thing that left the selection keeps its shadow: `apply`
//! never deletes, as with a manifest removed from the input.
//!
//! A set that cannot be expanded (its spec breaks a rule, or its membership cannot be
//! read) is a failure of that set alone, reported with its name and reason; the other
//! manifests are still applied.

use std::collections::BTreeMap;

use super::manifest::{Manifest, Resource, SetManifest};
use crate::api::validate::{format_errors, validate_thing_shadow_set};
use crate::api::{ThingShadow, ThingShadowSet};
use crate::dataplane::registry::Registry;
use crate::dataplane::ShadowLimits;
use crate::fleet::membership::{describe, resolve};
use crate::fleet::{child_name, revision, REVISION_ANNOTATION, SET_LABEL};
use crate::reason::Reason;

/// The input with every set replaced by its children.
#[derive(Debug, Default)]
pub struct Expansion {
    /// The declared resources and the sets' children, in input order.
    pub manifests: Vec<Manifest>,
    /// Sets that yielded no children, in input order.
    pub failed: Vec<FailedSet>,
    /// One line per set that was expanded (see [`summary`]).
    pub notes: Vec<String>,
}

/// A set that could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedSet {
    /// How many entries of [`Expansion::manifests`] come before it in the input.
    pub position: usize,
    /// `namespace/name`.
    pub key: String,
    /// The selector, as messages name it.
    pub selector: String,
    pub reason: Reason,
    pub message: String,
    /// It needs a human (an invalid spec, a missing group, an invalid query), rather than
    /// another try later (a throttled or unreachable registry).
    pub stalled: bool,
}

/// Replaces each set of the input by its children. `dry_run` only changes the wording
/// of the notes (`diff` writes nothing).
pub async fn expand(
    manifests: &[Manifest],
    sets: &[SetManifest],
    registry: &dyn Registry,
    limits: &ShadowLimits,
    dry_run: bool,
) -> Expansion {
    let mut expansion = Expansion::default();
    let mut sets = sets.iter().peekable();
    for index in 0..=manifests.len() {
        while let Some(set) = sets.next_if(|s| s.position <= index) {
            expand_one(set, registry, limits, dry_run, &mut expansion).await;
        }
        if let Some(manifest) = manifests.get(index) {
            expansion.manifests.push(manifest.clone());
        }
    }
    expansion
}

async fn expand_one(
    set: &SetManifest,
    registry: &dyn Registry,
    limits: &ShadowLimits,
    dry_run: bool,
    expansion: &mut Expansion,
) {
    let key = set.key();
    let selector = describe(&set.set.spec.selector);
    let name = set.set.metadata.name.as_deref().unwrap_or_default();
    let failed = |reason: Reason, message: String, stalled: bool| FailedSet {
        position: expansion.manifests.len(),
        key: key.clone(),
        selector: selector.clone(),
        reason,
        message,
        stalled,
    };
    if let Err(errors) = validate_thing_shadow_set(name, &set.set.spec, limits) {
        let failure = failed(Reason::InvalidSpec, format_errors(&errors), true);
        expansion.failed.push(failure);
        return;
    }
    match resolve(registry, &set.set.spec.selector).await {
        Ok(things) => {
            expansion
                .notes
                .push(summary(&key, things.len(), &set.set, dry_run));
            expansion
                .manifests
                .extend(children(&set.set, &things, &set.source));
        }
        Err(err) => {
            let failure = failed(err.kind().reason(), err.to_string(), !err.is_retryable());
            expansion.failed.push(failure);
        }
    }
}

/// The children of `set` for these things, in the order given. `source` is the set's
/// manifest; each child's source names its thing too.
pub fn children(set: &ThingShadowSet, things: &[String], source: &str) -> Vec<Manifest> {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let template = &set.spec.template;
    let revision = revision(template);
    things
        .iter()
        .map(|thing| {
            let mut child =
                ThingShadow::new(&child_name(&set_name, thing), template.spec_for(thing));
            child.metadata.namespace = set.metadata.namespace.clone();
            child.metadata.labels =
                Some(BTreeMap::from([(SET_LABEL.to_string(), set_name.clone())]));
            child.metadata.annotations = Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_string(),
                revision.clone(),
            )]));
            Manifest {
                source: format!("{source} (ThingShadowSet {set_name}, thing {thing})"),
                resource: Resource::ThingShadow(Box::new(child)),
            }
        })
        .collect()
}

/// The line that says a set was expanded and is applied at once:
/// `ThingShadowSet home/lamps: 12 things, applied at once (staged rollouts in
/// spec.rollout need the operator)`.
pub fn summary(key: &str, things: usize, set: &ThingShadowSet, dry_run: bool) -> String {
    let count = match things {
        1 => "1 thing".to_string(),
        n => format!("{n} things"),
    };
    let done = if dry_run {
        "compared at once; apply writes them all at once"
    } else {
        "applied at once"
    };
    let steps = &set.spec.rollout.steps;
    let ignored = if steps.is_empty() {
        String::new()
    } else {
        let steps: Vec<String> = steps.iter().map(u8::to_string).collect();
        format!("spec.rollout.steps [{}] not followed: ", steps.join(", "))
    };
    format!(
        "ThingShadowSet {key}: {count}, {done} ({ignored}staged rollouts in spec.rollout need the operator)"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dataplane::embedded::EmbeddedDataPlane;
    use crate::dataplane::registry::{Attributes, ThingGroupSpec};

    fn set(name: &str, selector: serde_json::Value, steps: &[u8]) -> ThingShadowSet {
        serde_json::from_value(json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": "ThingShadowSet",
            "metadata": {"name": name, "namespace": "home"},
            "spec": {
                "selector": selector,
                "template": {"shadowName": "cfg", "desired": {"power": "on"}},
                "rollout": {"steps": steps},
            },
        }))
        .expect("a set")
    }

    fn shadow(name: &str) -> Manifest {
        let spec = serde_json::from_value(json!({"thingName": name})).expect("a spec");
        Manifest {
            source: format!("{name}.yaml#1"),
            resource: Resource::ThingShadow(Box::new(ThingShadow::new(name, spec))),
        }
    }

    fn keys(manifests: &[Manifest]) -> Vec<String> {
        manifests.iter().map(|m| m.resource.key()).collect()
    }

    #[test]
    fn children_are_named_labelled_and_specified_as_the_operator_makes_them() {
        let lamps = set("lamps", json!({"things": ["b", "a"]}), &[]);
        let made = children(&lamps, &["a".to_string(), "b".to_string()], "s.yaml#3");
        assert_eq!(made.len(), 2);
        let Resource::ThingShadow(child) = &made[0].resource else {
            panic!("a ThingShadow")
        };
        assert_eq!(
            child.metadata.name.as_deref(),
            Some(child_name("lamps", "a").as_str())
        );
        assert_eq!(child.metadata.namespace.as_deref(), Some("home"));
        assert_eq!(
            child
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SET_LABEL)),
            Some(&"lamps".to_string())
        );
        assert_eq!(
            child
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION)),
            Some(&revision(&lamps.spec.template))
        );
        assert_eq!(child.spec, lamps.spec.template.spec_for("a"));
        assert_eq!(made[0].source, "s.yaml#3 (ThingShadowSet lamps, thing a)");
    }

    #[test]
    fn the_summary_says_everything_is_applied_at_once() {
        let plain = set("lamps", json!({"things": ["a"]}), &[]);
        assert_eq!(
            summary("home/lamps", 12, &plain, false),
            "ThingShadowSet home/lamps: 12 things, applied at once (staged rollouts in spec.rollout need the operator)"
        );
        let staged = set("lamps", json!({"things": ["a"]}), &[5, 100]);
        assert_eq!(
            summary("home/lamps", 1, &staged, true),
            "ThingShadowSet home/lamps: 1 thing, compared at once; apply writes them all at once \
             (spec.rollout.steps [5, 100] not followed: staged rollouts in spec.rollout need the operator)"
        );
    }

    #[tokio::test]
    async fn sets_become_their_children_in_input_order_and_failures_keep_their_place() {
        let registry = EmbeddedDataPlane::in_memory();
        registry
            .create_thing_group("g", &ThingGroupSpec::default())
            .await
            .expect("group");
        for thing in ["g2", "g1"] {
            registry
                .create_thing(thing, &Attributes::new())
                .await
                .expect("thing");
            registry
                .add_thing_to_thing_group("g", thing)
                .await
                .expect("member");
        }
        let source = |set: ThingShadowSet, position: usize| SetManifest {
            source: format!("sets.yaml#{position}"),
            set: Box::new(set),
            position,
        };
        let sets = [
            source(set("first", json!({"things": ["x"]}), &[]), 0),
            source(
                set("missing", json!({"thingGroup": {"name": "nope"}}), &[]),
                1,
            ),
            source(set("group", json!({"thingGroup": {"name": "g"}}), &[]), 1),
            source(set("invalid", json!({"things": ["a", "a"]}), &[]), 2),
        ];
        let manifests = [shadow("one"), shadow("two")];

        let expansion = expand(
            &manifests,
            &sets,
            &registry,
            &ShadowLimits::default(),
            false,
        )
        .await;

        assert_eq!(
            keys(&expansion.manifests),
            [
                format!("home/{}", child_name("first", "x")),
                "default/one".to_string(),
                format!("home/{}", child_name("group", "g1")),
                format!("home/{}", child_name("group", "g2")),
                "default/two".to_string(),
            ]
        );
        let failed: Vec<(usize, &str, Reason, bool)> = expansion
            .failed
            .iter()
            .map(|f| (f.position, f.key.as_str(), f.reason, f.stalled))
            .collect();
        assert_eq!(
            failed,
            [
                (2, "home/missing", Reason::NotFound, true),
                (5, "home/invalid", Reason::InvalidSpec, true),
            ]
        );
        assert_eq!(expansion.failed[0].selector, "thingGroup nope");
        assert!(
            expansion.failed[0]
                .message
                .starts_with("thingGroup nope: ResourceNotFoundException: "),
            "{}",
            expansion.failed[0].message
        );
        assert!(
            expansion.failed[1]
                .message
                .contains("spec.selector.things[1] \"a\": is already listed at things[0]"),
            "{}",
            expansion.failed[1].message
        );
        assert_eq!(expansion.notes.len(), 2);
        assert!(
            expansion.notes[1].starts_with("ThingShadowSet home/group: 2 things, applied at once")
        );
    }
}
