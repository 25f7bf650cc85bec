use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::naming::{child_name, revision};
use super::*;
use crate::api::validate::ShadowLimits;
use crate::api::{
    Condition, FleetSelector, RolloutFailurePolicy, RolloutSpec, ShadowTemplate,
    ThingGroupSelector, ThingShadow, ThingShadowSetSpec, ThingShadowSetStatus,
};
use crate::planner::conditions::{find_condition, READY, RECONCILING, STALLED};
use crate::planner::rollout::{order_key, slice_size};
use crate::reason::Reason;

const SET: &str = "lamps";

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn template(power: &str) -> ShadowTemplate {
    serde_json::from_value(json!({"desired": {"power": power}})).expect("a template")
}

fn rollout(steps: &[u8]) -> RolloutSpec {
    RolloutSpec {
        steps: steps.to_vec(),
        ..RolloutSpec::default()
    }
}

fn set_spec(template: ShadowTemplate, rollout: RolloutSpec) -> ThingShadowSetSpec {
    ThingShadowSetSpec {
        selector: FleetSelector {
            thing_group: Some(ThingGroupSelector {
                name: "lamps".into(),
                recursive: false,
            }),
            ..FleetSelector::default()
        },
        template,
        rollout,
        resync_interval: "5m".into(),
    }
}

fn things(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("lamp-{i:03}")).collect()
}

/// The things in rollout order.
fn ordered(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort_by_cached_key(|t| order_key(t));
    v
}

fn condition<'a>(status: &'a ThingShadowSetStatus, type_: &str) -> Option<&'a Condition> {
    find_condition(&status.conditions, type_)
}

fn ready(status: &ThingShadowSetStatus) -> &Condition {
    condition(status, READY).expect("a Ready condition")
}

/// Asserts that the Ready condition's message contains `text`.
fn assert_ready_says(status: &ThingShadowSetStatus, text: &str) {
    let message = &ready(status).message;
    assert!(message.contains(text), "{message}");
}

/// A condition's status and reason, to compare with one assertion.
fn pair(c: &Condition) -> (&str, &str) {
    (c.status.as_str(), c.reason.as_str())
}

fn json_of(status: &ThingShadowSetStatus) -> String {
    serde_json::to_string(status).expect("a status serializes")
}

fn changed_things(plan: &SetPlan) -> BTreeSet<String> {
    plan.changes
        .iter()
        .map(|c| thing_of(c).to_string())
        .collect()
}

fn thing_of(change: &ChildChange) -> &str {
    match change {
        ChildChange::Create { thing, .. }
        | ChildChange::Update { thing, .. }
        | ChildChange::Delete { thing, .. } => thing,
    }
}

fn reasons(plan: &SetPlan) -> Vec<Reason> {
    plan.events.iter().map(|e| e.reason).collect()
}

/// A set, its membership and its children, changed as the operator changes them.
struct World {
    spec: ThingShadowSetSpec,
    generation: i64,
    status: ThingShadowSetStatus,
    things: Vec<String>,
    read_time: DateTime<Utc>,
    membership_error: Option<String>,
    children: HashMap<String, ChildFacts>,
    /// The template each child was last given.
    templates: HashMap<String, ShadowTemplate>,
    foreign: BTreeMap<String, String>,
    paused: bool,
    limits: ShadowLimits,
    next_uid: u64,
}

impl World {
    fn new(spec: ThingShadowSetSpec, things: Vec<String>) -> World {
        World {
            spec,
            generation: 1,
            status: ThingShadowSetStatus::default(),
            things,
            read_time: t(0),
            membership_error: None,
            children: HashMap::new(),
            templates: HashMap::new(),
            foreign: BTreeMap::new(),
            paused: false,
            limits: ShadowLimits::default(),
            next_uid: 0,
        }
    }

    fn input_with<'a>(&'a self, things: &'a [String], now: DateTime<Utc>) -> SetInput<'a> {
        SetInput {
            name: SET,
            generation: Some(self.generation),
            spec: &self.spec,
            prior: &self.status,
            membership: Membership {
                things: Some(things),
                read_time: Some(self.read_time),
                error: self.membership_error.clone(),
            },
            children: &self.children,
            foreign: &self.foreign,
            paused: self.paused,
            now,
            limits: &self.limits,
        }
    }

    fn plan(&self, now: DateTime<Utc>) -> SetPlan {
        plan_set(&self.input_with(&self.things, now))
    }

    fn set_template(&mut self, template: ShadowTemplate) {
        self.spec.template = template;
        self.generation += 1;
    }

    /// Performs the changes as the operator does: a created or updated child carries
    /// the revision from `now` and has not converged; a deleted child is being deleted
    /// until [`World::finish_deletions`].
    fn apply(&mut self, plan: &SetPlan, now: DateTime<Utc>) {
        for change in &plan.changes {
            match change {
                ChildChange::Create {
                    thing,
                    revision: rev,
                    template,
                } => {
                    assert!(!self.children.contains_key(thing), "{thing} has a child");
                    self.next_uid += 1;
                    self.children.insert(
                        thing.clone(),
                        ChildFacts {
                            name: child_name(SET, thing),
                            uid: format!("uid-{}", self.next_uid),
                            thing: thing.clone(),
                            revision: Some(rev.clone()),
                            since: Some(now),
                            ..ChildFacts::default()
                        },
                    );
                    self.templates
                        .insert(thing.clone(), ShadowTemplate::clone(template));
                }
                ChildChange::Update {
                    thing,
                    name,
                    uid,
                    revision: rev,
                    template,
                    ..
                } => {
                    let child = self.children.get_mut(thing).expect("an updated child");
                    assert_eq!((&child.name, &child.uid), (name, uid));
                    assert!(!child.deleting, "{thing}: a deleting child is written");
                    child.revision = Some(rev.clone());
                    child.since = Some(now);
                    child.converged = false;
                    child.stalled = None;
                    self.templates
                        .insert(thing.clone(), ShadowTemplate::clone(template));
                }
                ChildChange::Delete { thing, name, uid } => {
                    let child = self.children.get_mut(thing).expect("a deleted child");
                    assert_eq!((&child.name, &child.uid), (name, uid));
                    child.deleting = true;
                }
            }
        }
        self.status = plan.status.clone();
    }

    fn step(&mut self, now: DateTime<Utc>) -> SetPlan {
        let plan = self.plan(now);
        self.apply(&plan, now);
        plan
    }

    fn finish_deletions(&mut self) {
        self.children.retain(|_, c| !c.deleting);
        let children = &self.children;
        self.templates
            .retain(|thing, _| children.contains_key(thing));
    }

    fn converge_all(&mut self) {
        for child in self.children.values_mut() {
            if child.duplicate.is_none() {
                child.converged = true;
            }
        }
    }

    /// Things whose child carries `rev`.
    fn carrying(&self, rev: &str) -> BTreeSet<String> {
        self.children
            .values()
            .filter(|c| c.revision.as_deref() == Some(rev))
            .map(|c| c.thing.clone())
            .collect()
    }
}

/// A set whose rollout of `template("on")` completed over `n` things.
fn completed(n: usize, rollout: RolloutSpec) -> World {
    let mut world = World::new(set_spec(template("on"), rollout), things(n));
    for pass in 0..10 {
        world.step(t(pass));
        world.converge_all();
        if world.status.phase.as_deref() == Some("Complete") {
            return world;
        }
    }
    panic!("the first rollout did not complete: {:?}", world.status);
}

// ------------------------------------------------------------------ ChildFacts::of

fn cond(type_: &str, status: &str, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": generation, "lastTransitionTime": "2027-01-15T08:00:00Z",
    })
}

fn shadow(generation: i64, observed: i64, conditions: Vec<Value>) -> Value {
    json!({
        "apiVersion": "iot.shadowsync.dev/v1alpha1",
        "kind": "ThingShadow",
        "metadata": {
            "name": "lamps-lamp-1-0a1b2c3d",
            "namespace": "home",
            "uid": "uid-7",
            "generation": generation,
            "annotations": {
                "iot.shadowsync.dev/template-revision": "abc1234567",
                "iot.shadowsync.dev/revision-time": "2027-01-15T08:00:00Z",
            },
        },
        "spec": {"thingName": "lamp-1", "desired": {"power": "on"}},
        "status": {"observedGeneration": observed, "conditions": conditions},
    })
}

fn facts(value: Value) -> ChildFacts {
    let shadow: ThingShadow = serde_json::from_value(value).expect("a ThingShadow");
    ChildFacts::of(&shadow)
}

#[test]
fn child_facts_read_names_revision_and_its_time() {
    let f = facts(shadow(3, 3, vec![]));
    assert_eq!(f.name, "lamps-lamp-1-0a1b2c3d");
    assert_eq!(f.uid, "uid-7");
    assert_eq!(f.thing, "lamp-1");
    assert_eq!(f.revision.as_deref(), Some("abc1234567"));
    assert_eq!(
        f.since,
        Some(Utc.with_ymd_and_hms(2027, 1, 15, 8, 0, 0).unwrap())
    );
    assert!(!f.converged && !f.deleting);
    assert_eq!((f.stalled, f.duplicate), (None, None));

    // An offset is read as the same instant.
    let mut value = shadow(3, 3, vec![]);
    value["metadata"]["annotations"]["iot.shadowsync.dev/revision-time"] =
        json!("2027-01-15T10:00:00+02:00");
    assert_eq!(
        facts(value).since,
        Some(Utc.with_ymd_and_hms(2027, 1, 15, 8, 0, 0).unwrap())
    );

    // A time that does not parse is no time; no annotations at all, no revision.
    for bad in ["yesterday", "", "2027-01-15 08:00"] {
        let mut value = shadow(3, 3, vec![]);
        value["metadata"]["annotations"]["iot.shadowsync.dev/revision-time"] = json!(bad);
        let f = facts(value);
        assert_eq!(f.since, None, "{bad:?}");
        assert_eq!(f.revision.as_deref(), Some("abc1234567"));
    }
    let mut value = shadow(3, 3, vec![]);
    value["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let f = facts(value);
    assert_eq!((f.revision, f.since), (None, None));
}

#[test]
fn child_facts_are_converged_only_for_the_current_generation_ready_and_converged() {
    let both = || {
        vec![
            cond("Ready", "True", "InSync", "", 3),
            cond("Converged", "True", "DeviceConverged", "", 3),
        ]
    };
    assert!(facts(shadow(3, 3, both())).converged);
    // A status computed for an older generation says nothing of the current spec.
    assert!(!facts(shadow(4, 3, both())).converged);
    // No status at all.
    let mut value = shadow(3, 3, both());
    value.as_object_mut().unwrap().remove("status");
    assert!(!facts(value).converged);
    // Ready without Converged, Converged without Ready, either False.
    for conditions in [
        vec![cond("Ready", "True", "InSync", "", 3)],
        vec![cond("Converged", "True", "DeviceConverged", "", 3)],
        vec![
            cond("Ready", "False", "Writing", "", 3),
            cond("Converged", "True", "DeviceConverged", "", 3),
        ],
        vec![
            cond("Ready", "True", "InSync", "", 3),
            cond("Converged", "False", "AwaitingDevice", "/power", 3),
        ],
    ] {
        assert!(
            !facts(shadow(3, 3, conditions.clone())).converged,
            "{conditions:?}"
        );
    }
}

#[test]
fn child_facts_tell_a_stalled_child_from_a_duplicate() {
    let stalled = facts(shadow(
        3,
        3,
        vec![
            cond("Ready", "False", "Conflict", "/power: cloud \"off\"", 3),
            cond("Stalled", "True", "Conflict", "/power: cloud \"off\"", 3),
        ],
    ));
    assert_eq!(
        stalled.stalled.as_deref(),
        Some("Conflict: /power: cloud \"off\"")
    );
    assert_eq!(stalled.duplicate, None);
    assert!(!stalled.converged);

    let duplicate = facts(shadow(
        3,
        3,
        vec![cond(
            "Stalled",
            "True",
            "DuplicateTarget",
            "the classic shadow of lamp-1 is managed by ThingShadow home/lamp",
            3,
        )],
    ));
    assert_eq!(duplicate.stalled, None, "a duplicate is not a failure");
    assert_eq!(
        duplicate.duplicate.as_deref(),
        Some("the classic shadow of lamp-1 is managed by ThingShadow home/lamp")
    );

    // Stalled for an older generation (the spec changed since): neither.
    let old = facts(shadow(
        4,
        3,
        vec![cond("Stalled", "True", "Conflict", "old", 3)],
    ));
    assert_eq!((old.stalled, old.duplicate), (None, None));
    // The status is behind but the Stalled condition is for the current generation.
    let current = facts(shadow(
        4,
        3,
        vec![cond("Stalled", "True", "InvalidSpec", "spec.desired", 4)],
    ));
    assert_eq!(
        current.stalled.as_deref(),
        Some("InvalidSpec: spec.desired")
    );
    // Stalled=False is not stalled.
    let not = facts(shadow(
        3,
        3,
        vec![cond("Stalled", "False", "Conflict", "", 3)],
    ));
    assert_eq!(not.stalled, None);
}

#[test]
fn child_facts_see_a_deletion() {
    let mut value = shadow(3, 3, vec![]);
    value["metadata"]["deletionTimestamp"] = json!("2027-01-15T09:00:00Z");
    assert!(facts(value).deleting);
    assert!(!facts(shadow(3, 3, vec![])).deleting);
}

// ------------------------------------------------------------------ plan_set

#[test]
fn an_invalid_spec_changes_nothing_and_stalls_with_one_event() {
    let mut world = completed(10, rollout(&[]));
    // A child of a thing that left: it would be deleted were the spec valid.
    world.things.pop();
    world.spec.rollout.steps = vec![50, 20];
    world.generation += 1;
    let before = world.status.clone();

    let plan = world.plan(t(100));
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    let r = ready(&plan.status);
    assert_eq!(pair(r), ("False", "InvalidSpec"));
    assert!(r.message.contains("spec.rollout.steps[1]"), "{}", r.message);
    let s = condition(&plan.status, STALLED).expect("Stalled");
    assert_eq!(pair(s), ("True", "InvalidSpec"));
    assert_eq!(s.observed_generation, Some(world.generation));
    assert!(condition(&plan.status, RECONCILING).is_none());
    assert_eq!(plan.status.observed_generation, Some(world.generation));
    // The rollout's memory is kept for when the spec is fixed.
    assert_eq!(plan.status.revision, before.revision);
    assert_eq!(plan.status.complete_template, before.complete_template);
    assert_eq!(plan.events.len(), 1, "{:?}", plan.events);
    assert!(plan.events[0].warning);
    assert_eq!(plan.events[0].reason, Reason::InvalidSpec);
    assert!(plan.events[0].message.contains("spec.rollout.steps[1]"));
    assert_eq!(plan.recheck_after, None);

    // Seen again: no second Event, and no transition.
    world.apply(&plan, t(100));
    let again = world.plan(t(200));
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert!(again.changes.is_empty());
    assert_eq!(json_of(&again.status), json_of(&plan.status));

    // Fixed: the set goes on, and the child of the thing that left goes.
    world.spec.rollout.steps = vec![50, 100];
    world.generation += 1;
    let fixed = world.plan(t(300));
    assert!(condition(&fixed.status, STALLED).is_none());
    assert_eq!(ready(&fixed.status).status, "True");
    assert_eq!(fixed.changes.len(), 1);
    assert!(matches!(&fixed.changes[0], ChildChange::Delete { .. }));
}

#[test]
fn an_invalid_template_names_its_field_under_spec_template() {
    let mut spec = set_spec(template("on"), rollout(&[]));
    spec.template.refresh_interval = "soon".into();
    let world = World::new(spec, things(3));
    let plan = world.plan(t(0));
    assert!(plan.changes.is_empty());
    assert_ready_says(&plan.status, "spec.template.refreshInterval");
}

#[test]
fn an_unread_membership_changes_nothing_and_waits() {
    let world = completed(10, rollout(&[]));
    for error in [None, Some("AccessDeniedException: not authorized")] {
        let input = SetInput {
            membership: Membership {
                things: None,
                read_time: None,
                error: error.map(str::to_string),
            },
            ..world.input_with(&world.things, t(100))
        };
        let plan = plan_set(&input);
        // Every child would be a leaver under an empty membership: none is deleted.
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);
        assert!(plan.events.is_empty());
        let r = ready(&plan.status);
        assert_eq!(pair(r), ("False", "MembershipUnavailable"));
        let rec = condition(&plan.status, RECONCILING).expect("Reconciling");
        assert_eq!(pair(rec), ("True", "MembershipUnavailable"));
        assert!(condition(&plan.status, STALLED).is_none());
        assert!(
            r.message.contains(error.unwrap_or("not read yet")),
            "{}",
            r.message
        );
    }
}

#[test]
fn a_failed_re_read_uses_the_last_membership_and_says_so() {
    let mut world = World::new(set_spec(template("on"), rollout(&[])), things(4));
    world.membership_error = Some("ThrottlingException: rate exceeded".into());
    let plan = world.plan(t(0));
    assert_eq!(plan.changes.len(), 4);
    let r = ready(&plan.status);
    assert_eq!(r.reason, "RolloutProgressing");
    assert!(
        r.message.contains(
            "membership not re-read (ThrottlingException: rate exceeded), the last one is used"
        ),
        "{}",
        r.message
    );
    assert_eq!(plan.status.membership_read_time, Some(rfc3339(t(0))));
}

#[test]
fn a_first_rollout_all_at_once_creates_one_child_per_thing() {
    let names = things(25);
    let mut world = World::new(set_spec(template("on"), rollout(&[])), names.clone());
    let rev = revision(&template("on"));
    let plan = world.step(t(0));
    assert_eq!(plan.changes.len(), 25);
    for change in &plan.changes {
        match change {
            ChildChange::Create {
                revision: r,
                template: tpl,
                ..
            } => {
                assert_eq!(r, &rev);
                assert_eq!(**tpl, template("on"));
            }
            other => panic!("not a creation: {other:?}"),
        }
    }
    assert_eq!(
        changed_things(&plan),
        names.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(plan.status.phase.as_deref(), Some("Progressing"));
    assert_eq!(plan.status.step.as_deref(), Some("1/1 (100%)"));
    assert_eq!(plan.status.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(plan.status.complete_revision, None);
    assert_eq!(plan.status.targeted, 25);
    // Nothing carries the revision yet: no timeout runs.
    assert_eq!(plan.recheck_after, None);
    // Waiting for the devices (wait_for_converged is the default), at most the timeout.
    let waiting = world.step(t(60));
    assert!(waiting.changes.is_empty());
    assert_eq!(waiting.recheck_after, Some(Duration::from_secs(540)));

    world.converge_all();
    let done = world.step(t(120));
    assert!(done.changes.is_empty());
    assert_eq!(done.status.phase.as_deref(), Some("Complete"));
    assert_eq!(done.status.complete_revision.as_deref(), Some(rev.as_str()));
    assert_eq!((done.status.updated, done.status.converged), (25, 25));
}

#[test]
fn a_canary_rollout_goes_step_by_step_to_complete() {
    let names = things(100);
    let order = ordered(&names);
    let tpl = template("on");
    let rev = revision(&tpl);
    let mut world = World::new(set_spec(tpl.clone(), rollout(&[10, 50, 100])), names);

    let first = world.step(t(0));
    assert_eq!(
        changed_things(&first),
        order[..10].iter().cloned().collect::<BTreeSet<_>>(),
        "the first 10% in rollout order"
    );
    assert!(first
        .changes
        .iter()
        .all(|c| matches!(c, ChildChange::Create { revision: r, template: x, .. } if *r == rev && **x == tpl)));
    assert_eq!(first.status.current_step, 0);
    assert_eq!(first.status.step.as_deref(), Some("1/3 (10%)"));
    assert_eq!(first.status.step_started_time, Some(rfc3339(t(0))));
    let r = ready(&first.status);
    assert_eq!(pair(r), ("False", "RolloutProgressing"));
    // Counts are of what the children show, before this pass's changes.
    assert!(
        r.message
            .contains("step 1/3 (10%): 0 of 100 things updated"),
        "{}",
        r.message
    );
    assert_eq!(
        condition(&first.status, RECONCILING).unwrap().status,
        "True"
    );
    assert!(first.events.is_empty(), "{:?}", first.events);

    // Not converged: the gate holds.
    let waiting = world.step(t(30));
    assert!(waiting.changes.is_empty(), "{:?}", waiting.changes);
    assert_eq!(waiting.status.current_step, 0);
    assert_eq!(waiting.recheck_after, Some(Duration::from_secs(570)));
    assert_ready_says(&waiting.status, "10 of 100 things updated, 0 converged");

    world.converge_all();
    let second = world.step(t(60));
    assert_eq!(second.status.current_step, 1);
    assert_eq!(second.status.step.as_deref(), Some("2/3 (50%)"));
    assert_eq!(second.status.step_started_time, Some(rfc3339(t(60))));
    assert_eq!(
        changed_things(&second),
        order[10..50].iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(reasons(&second), vec![Reason::StepAdvanced]);
    assert!(!second.events[0].warning);
    assert!(
        second.events[0].message.contains("step 2"),
        "{:?}",
        second.events
    );
    assert_eq!(world.carrying(&rev).len(), 50);

    world.converge_all();
    let third = world.step(t(120));
    assert_eq!(third.status.current_step, 2);
    assert_eq!(third.changes.len(), 50);
    assert_eq!(reasons(&third), vec![Reason::StepAdvanced]);
    assert_eq!(third.status.phase.as_deref(), Some("Progressing"));

    world.converge_all();
    let done = world.step(t(180));
    assert!(done.changes.is_empty());
    assert_eq!(done.status.phase.as_deref(), Some("Complete"));
    assert_eq!(done.status.complete_revision.as_deref(), Some(rev.as_str()));
    assert_eq!(done.status.complete_template.as_ref(), Some(&tpl));
    assert_eq!(
        (
            done.status.targeted,
            done.status.updated,
            done.status.converged,
            done.status.failed
        ),
        (100, 100, 100, 0)
    );
    let r = ready(&done.status);
    assert_eq!(pair(r), ("True", "RolloutComplete"));
    assert_eq!(r.last_transition_time, rfc3339(t(180)));
    assert!(condition(&done.status, RECONCILING).is_none());
    assert!(condition(&done.status, STALLED).is_none());
    assert_eq!(reasons(&done), vec![Reason::RolloutComplete]);
    assert!(done.events[0].message.contains("on all 100 things"));
    assert_eq!(done.recheck_after, None);

    // Complete stays complete, without a second Event.
    let still = world.step(t(240));
    assert!(still.changes.is_empty() && still.events.is_empty());
    assert_eq!(json_of(&still.status), json_of(&done.status));
}

#[test]
fn a_template_change_updates_the_slice_and_new_members_get_the_complete_template() {
    let mut world = completed(100, rollout(&[10, 50, 100]));
    let (old, new) = (template("on"), template("off"));
    let (old_rev, new_rev) = (revision(&old), revision(&new));
    let uids: HashMap<String, String> = world
        .children
        .values()
        .map(|c| (c.thing.clone(), c.uid.clone()))
        .collect();
    world.set_template(new.clone());

    let plan = world.step(t(100));
    assert_eq!(plan.changes.len(), 10, "10% of 100");
    let order = ordered(&world.things);
    assert_eq!(
        changed_things(&plan),
        order[..10].iter().cloned().collect::<BTreeSet<_>>()
    );
    for change in &plan.changes {
        let ChildChange::Update {
            thing,
            name,
            uid,
            revision: r,
            template: x,
            annotated,
        } = change
        else {
            panic!("not an update: {change:?}");
        };
        assert_eq!(uid, &uids[thing], "the uid is the precondition");
        assert_eq!(name, &child_name(SET, thing));
        assert_eq!((r, &**x), (&new_rev, &new));
        assert!(annotated, "the child carries the old revision's annotation");
    }
    assert_eq!(plan.status.revision.as_deref(), Some(new_rev.as_str()));
    assert_eq!(
        plan.status.complete_revision.as_deref(),
        Some(old_rev.as_str())
    );
    assert_eq!(plan.status.complete_template.as_ref(), Some(&old));
    assert_eq!(plan.status.current_step, 0);
    assert_eq!(ready(&plan.status).status, "False");
    assert!(plan.events.is_empty(), "{:?}", plan.events);

    // Things join while the canaries have not converged: the ones after the next
    // slices in the order get the complete template, the rest nothing more.
    let joiners: Vec<String> = (0..200)
        .map(|i| format!("newcomer-{i}"))
        .filter(|name| {
            let mut all = world.things.clone();
            all.push(name.clone());
            ordered(&all)[..60].iter().all(|t| t != name)
        })
        .take(3)
        .collect();
    world.things.extend(joiners.iter().cloned());
    let plan = world.step(t(130));
    let created: BTreeSet<String> = plan
        .changes
        .iter()
        .filter(|c| {
            matches!(c, ChildChange::Create { revision: r, template: x, .. } if *r == old_rev && **x == old)
        })
        .map(|c| thing_of(c).to_string())
        .collect();
    assert_eq!(created, joiners.iter().cloned().collect::<BTreeSet<_>>());
    // The first slice grew with the fleet (10% of 103): one more update, inside it.
    let order = ordered(&world.things);
    let updated: Vec<&ChildChange> = plan
        .changes
        .iter()
        .filter(|c| matches!(c, ChildChange::Update { revision: r, .. } if *r == new_rev))
        .collect();
    assert_eq!(updated.len(), 1, "{:?}", plan.changes);
    assert_eq!(thing_of(updated[0]), order[10]);
    assert_eq!(plan.changes.len(), 4);
    assert_eq!(world.carrying(&new_rev).len(), slice_size(10, 103));

    // The canaries converge: step 2 takes half of the 103 things.
    world.converge_all();
    let plan = world.step(t(160));
    assert_eq!(plan.status.current_step, 1);
    assert_eq!(world.carrying(&new_rev).len(), slice_size(50, 103));
    assert!(plan
        .changes
        .iter()
        .all(|c| matches!(c, ChildChange::Update { revision: r, .. } if *r == new_rev)));
    assert_eq!(reasons(&plan), vec![Reason::StepAdvanced]);
}

/// 10 things complete on `on`, steps [30, 100], one failure allowed; the template turns
/// to `off` and two of the three canaries stall.
#[test]
fn a_child_that_lost_its_revision_annotation_is_given_the_revision_again() {
    let mut world = completed(3, rollout(&[]));
    let lost = world.things[0].clone();
    // Someone removed the child's annotations: it no longer says what it carries.
    world.children.get_mut(&lost).expect("a child").revision = None;
    let plan = world.plan(t(200));
    let updates: Vec<(&str, bool)> = plan
        .changes
        .iter()
        .map(|change| match change {
            ChildChange::Update {
                thing, annotated, ..
            } => (thing.as_str(), *annotated),
            other => panic!("not an update: {other:?}"),
        })
        .collect();
    assert_eq!(
        updates,
        [(lost.as_str(), false)],
        "the annotations must be made anew"
    );
}

fn failing_rollout(on_failure: RolloutFailurePolicy) -> (World, SetPlan) {
    let mut r = rollout(&[30, 100]);
    r.max_failures = IntOrString::Int(1);
    r.on_failure = on_failure;
    let mut world = completed(10, r);
    world.set_template(template("off"));
    let plan = world.step(t(100));
    assert_eq!(plan.changes.len(), 3);
    let canaries = changed_things(&plan);
    for thing in canaries.iter().take(2) {
        world.children.get_mut(thing).unwrap().stalled =
            Some("Conflict: /power changed outside shadowsync".into());
    }
    let plan = world.plan(t(130));
    (world, plan)
}

#[test]
fn failures_beyond_the_budget_with_rollback_restore_the_previous_template() {
    let (mut world, plan) = failing_rollout(RolloutFailurePolicy::Rollback);
    let (old, new) = (template("on"), template("off"));
    let (old_rev, new_rev) = (revision(&old), revision(&new));
    let carriers = world.carrying(&new_rev);
    assert_eq!(carriers.len(), 3);

    assert_eq!(plan.status.phase.as_deref(), Some("Aborted"));
    assert!(plan.status.aborted);
    assert_eq!(plan.status.failed, 2);
    assert_eq!(plan.status.failed_things.len(), 2);
    assert!(plan.status.failed_things[0]
        .reason
        .starts_with("Conflict: "));
    let r = ready(&plan.status);
    assert_eq!(pair(r), ("False", "RolloutAborted"));
    let s = condition(&plan.status, STALLED).expect("Stalled");
    assert_eq!(pair(s), ("True", "RolloutAborted"));
    assert!(condition(&plan.status, RECONCILING).is_none());

    // Every child that carries the new revision goes back, with exactly the old template.
    assert_eq!(changed_things(&plan), carriers);
    for change in &plan.changes {
        let ChildChange::Update {
            thing,
            uid,
            revision: r,
            template: x,
            ..
        } = change
        else {
            panic!("not an update: {change:?}");
        };
        assert_eq!(uid, &world.children[thing].uid);
        assert_eq!(r, &old_rev);
        assert_eq!(&**x, &old);
        assert_eq!(&**x, world.status.complete_template.as_ref().unwrap());
    }
    assert_eq!(
        reasons(&plan),
        vec![Reason::RolloutAborted, Reason::RolledBack]
    );
    assert!(plan.events.iter().all(|e| e.warning));
    assert!(plan.events[1]
        .message
        .contains(&format!("3 things returned to revision {old_rev}")));

    world.apply(&plan, t(130));
    assert!(world.carrying(&new_rev).is_empty());
    world.converge_all();
    // Aborted stays aborted, quietly, until the template changes, and keeps showing
    // the devices that stopped it (after the rollback they no longer carry the revision).
    let again = world.step(t(160));
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.status.phase.as_deref(), Some("Aborted"));
    assert_eq!(again.status.updated, 0);
    assert_eq!(again.status.failed, 2);
    assert_eq!(again.status.failed_things, plan.status.failed_things);
    assert_eq!(
        condition(&again.status, STALLED)
            .unwrap()
            .last_transition_time,
        rfc3339(t(130))
    );
    // A new template starts over.
    world.set_template(template("dim"));
    let fixed = world.step(t(190));
    assert_eq!(fixed.status.phase.as_deref(), Some("Progressing"));
    assert!(!fixed.status.aborted);
    assert!(condition(&fixed.status, STALLED).is_none());
    assert_eq!(fixed.changes.len(), 3);
}

#[test]
fn failures_beyond_the_budget_with_pause_leave_the_devices_as_they_are() {
    let (world, plan) = failing_rollout(RolloutFailurePolicy::Pause);
    assert_eq!(plan.status.phase.as_deref(), Some("Aborted"));
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    assert_eq!(reasons(&plan), vec![Reason::RolloutAborted]);
    assert_eq!(
        condition(&plan.status, STALLED).unwrap().reason,
        "RolloutAborted"
    );
    assert_eq!(world.carrying(&revision(&template("off"))).len(), 3);
}

#[test]
fn a_paused_set_changes_nothing() {
    let mut world = completed(20, rollout(&[10, 100]));
    world.set_template(template("off"));
    world.things.push("newcomer".into());
    world.things.remove(0);
    world.paused = true;
    let plan = world.step(t(100));
    // No update, no creation for the newcomer, and no deletion for the leaver either:
    // a deletion runs the child's deletionPolicy against the data plane.
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    assert_eq!(plan.status.phase.as_deref(), Some("Paused"));
    let r = ready(&plan.status);
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Paused"));
    assert!(r
        .message
        .starts_with("paused by the iot.shadowsync.dev/paused annotation"));
    assert!(condition(&plan.status, RECONCILING).is_none());
    assert!(condition(&plan.status, STALLED).is_none());
    assert!(plan.events.is_empty());

    world.paused = false;
    let resumed = world.step(t(130));
    assert_eq!(
        world.carrying(&revision(&template("off"))).len(),
        slice_size(10, 20),
        "it resumes at the first step"
    );
    assert!(resumed
        .changes
        .iter()
        .any(|c| matches!(c, ChildChange::Delete { thing, .. } if thing == "lamp-000")));
    assert!(world.children.contains_key("newcomer"));
    assert_eq!(resumed.status.phase.as_deref(), Some("Progressing"));
}

#[test]
fn children_of_leavers_are_deleted_and_deleting_children_are_left_alone() {
    let mut world = completed(10, rollout(&[]));
    let leavers = ["lamp-003".to_string(), "lamp-007".to_string()];
    world.things.retain(|t| !leavers.contains(t));
    let plan = world.step(t(100));
    let expected: Vec<ChildChange> = leavers
        .iter()
        .map(|thing| ChildChange::Delete {
            thing: thing.clone(),
            name: child_name(SET, thing),
            uid: world.children[thing].uid.clone(),
        })
        .collect();
    assert_eq!(plan.changes, expected, "by name");
    assert_eq!(plan.status.targeted, 8);
    // Being deleted: not deleted again.
    let again = world.step(t(130));
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    // A member whose child is being deleted is neither updated nor recreated.
    world.finish_deletions();
    world.children.get_mut("lamp-001").unwrap().deleting = true;
    world.set_template(template("off"));
    let plan = world.step(t(160));
    assert_eq!(plan.changes.len(), 7);
    assert!(!changed_things(&plan).contains("lamp-001"));
    // Its rejoining thing's child is still going: nothing for it either.
    world.things.push("lamp-003".into());
    world.children.insert(
        "lamp-003".into(),
        ChildFacts {
            name: child_name(SET, "lamp-003"),
            uid: "uid-old".into(),
            thing: "lamp-003".into(),
            deleting: true,
            ..ChildFacts::default()
        },
    );
    let plan = world.step(t(170));
    assert!(!changed_things(&plan).contains("lamp-001"));
    // Once gone, it is created with the template in force.
    world.finish_deletions();
    let plan = world.step(t(190));
    let created: BTreeSet<String> = plan
        .changes
        .iter()
        .filter(|c| matches!(c, ChildChange::Create { template: x, .. } if **x == template("off")))
        .map(|c| thing_of(c).to_string())
        .collect();
    assert_eq!(
        created,
        ["lamp-001".to_string(), "lamp-003".to_string()].into()
    );
}

#[test]
fn conflicting_things_are_counted_and_never_written() {
    let names = things(10);
    let mut world = World::new(set_spec(template("on"), rollout(&[])), names);
    world.foreign.insert(
        "lamp-002".into(),
        "the name lamps-lamp-002-… is held by a ThingShadow that is not a child of lamps".into(),
    );
    world.children.insert(
        "lamp-005".into(),
        ChildFacts {
            name: child_name(SET, "lamp-005"),
            uid: "uid-dup".into(),
            thing: "lamp-005".into(),
            duplicate: Some(
                "the classic shadow of lamp-005 is managed by ThingShadow home/lamp".into(),
            ),
            ..ChildFacts::default()
        },
    );
    let plan = world.step(t(0));
    assert_eq!(plan.changes.len(), 8);
    let touched = changed_things(&plan);
    assert!(!touched.contains("lamp-002") && !touched.contains("lamp-005"));
    assert_eq!(plan.status.conflicting, 2);
    let listed: BTreeSet<&str> = plan
        .status
        .conflicting_things
        .iter()
        .map(|i| i.thing.as_str())
        .collect();
    assert_eq!(listed, ["lamp-002", "lamp-005"].into());
    assert!(plan
        .status
        .conflicting_things
        .iter()
        .any(|i| i.reason.contains("managed by ThingShadow home/lamp")));

    // They do not block completion, and a template change leaves them alone too.
    world.converge_all();
    let done = world.step(t(60));
    assert_eq!(done.status.phase.as_deref(), Some("Complete"));
    assert!(
        done.events[0].message.contains("2 conflicting"),
        "{:?}",
        done.events
    );
    world.set_template(template("off"));
    let plan = world.step(t(100));
    assert_eq!(plan.changes.len(), 8);
    let touched = changed_things(&plan);
    assert!(!touched.contains("lamp-002") && !touched.contains("lamp-005"));
}

#[test]
fn a_step_timeout_is_rechecked_and_counts_silent_devices_as_failed() {
    let mut r = rollout(&[50, 100]);
    r.step_timeout = "2m".into();
    r.max_failures = IntOrString::String("50%".into());
    let mut world = World::new(set_spec(template("on"), r), things(4));
    let plan = world.step(t(0));
    assert_eq!(plan.changes.len(), 2);
    assert_eq!(plan.recheck_after, None);
    let plan = world.step(t(0));
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(120)));
    let plan = world.step(t(90));
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(30)));
    let plan = world.step(t(120));
    assert_eq!(plan.status.failed, 2);
    assert!(plan.status.failed_things[0]
        .reason
        .contains("not converged 120s"));
    assert_eq!(
        plan.status.current_step, 1,
        "2 failures are within 50% of 4"
    );
    assert_eq!(plan.changes.len(), 2);
}

#[test]
fn the_same_input_gives_the_same_status_byte_for_byte() {
    let mut world = completed(50, rollout(&[10, 50, 100]));
    world.set_template(template("off"));
    world.foreign.insert("lamp-004".into(), "held".into());
    world.step(t(100));
    world.children.get_mut("lamp-010").unwrap().stalled = Some("Conflict: x".into());
    for now in [t(130), t(131)] {
        let a = world.plan(now);
        let b = world.plan(now);
        assert_eq!(a, b);
        assert_eq!(json_of(&a.status), json_of(&b.status));
    }
}

#[test]
fn the_transition_time_stays_while_nothing_changes() {
    // Progressing, complete, invalid, unread: fed back with a later time, the status
    // is the same, byte for byte.
    let mut progressing = completed(30, rollout(&[10, 100]));
    progressing.set_template(template("off"));
    let mut complete = completed(30, rollout(&[10, 100]));
    complete.step(t(50));
    let mut invalid = completed(30, rollout(&[10, 100]));
    invalid.spec.resync_interval = "1s".into();
    for (what, world) in [
        ("progressing", &mut progressing),
        ("complete", &mut complete),
        ("invalid", &mut invalid),
    ] {
        world.step(t(100));
        let first = world.step(t(110));
        assert!(first.changes.is_empty(), "{what}: {:?}", first.changes);
        // Later, but before any step timeout.
        let second = world.plan(t(400));
        assert!(second.changes.is_empty(), "{what}: {:?}", second.changes);
        assert_eq!(json_of(&second.status), json_of(&first.status), "{what}");
        assert!(second.events.is_empty(), "{what}: {:?}", second.events);
    }
    let unread = completed(5, rollout(&[]));
    let input = SetInput {
        membership: Membership {
            things: None,
            read_time: None,
            error: Some("timeout".into()),
        },
        ..unread.input_with(&unread.things, t(100))
    };
    let first = plan_set(&input);
    let prior = first.status.clone();
    let second = plan_set(&SetInput {
        prior: &prior,
        now: t(900),
        ..input
    });
    assert_eq!(json_of(&second.status), json_of(&first.status));
    assert_eq!(ready(&second.status).last_transition_time, rfc3339(t(100)));
}

// ------------------------------------------------------------------ properties

/// How a simulated device answers a new template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    /// Converges, with some probability per pass.
    Good,
    /// Never reports.
    Silent,
    /// Its ThingShadow stalls on any template but the first one (which it converges on).
    Stalls,
}

#[derive(Clone, Debug)]
struct PoolThing {
    name: String,
    device: Device,
    /// Another object holds its child's name.
    foreign: bool,
    /// Another resource owns its shadow: its child is refused with DuplicateTarget.
    duplicate: bool,
    /// In the selection at the start (else it may join later).
    member: bool,
}

#[derive(Clone, Debug)]
struct Fleet {
    pool: Vec<PoolThing>,
    steps: Vec<u8>,
    wait_for_converged: bool,
    step_timeout: u64,
    max_failures: IntOrString,
    rollback: bool,
    /// A first rollout of another template completed before (else this is the first).
    start_complete: bool,
    /// Chance in percent that a good device converges in a pass.
    converge_percent: u64,
    /// Seconds between passes.
    interval: i64,
    /// Things join and leave between passes.
    churn: bool,
    /// Passes before the membership settles and time runs past the timeouts.
    passes: usize,
    /// The pass at which the template changes again, mid-rollout.
    change_at: Option<usize>,
    /// The pass from which the set is paused for two passes.
    pause_at: Option<usize>,
    seed: u64,
}

/// A pool where about `bad` percent of the devices are silent or stall.
fn arb_pool() -> impl Strategy<Value = Vec<PoolThing>> {
    prop::sample::select(vec![0u8, 2, 10, 40]).prop_flat_map(|bad| {
        let device = (0u8..100).prop_map(move |roll| {
            if roll < bad / 2 {
                Device::Silent
            } else if roll < bad {
                Device::Stalls
            } else {
                Device::Good
            }
        });
        arb_things(device)
    })
}

fn arb_things(device: impl Strategy<Value = Device>) -> impl Strategy<Value = Vec<PoolThing>> {
    prop::collection::vec(
        (
            device,
            prop::bool::weighted(0.03),
            prop::bool::weighted(0.03),
            prop::bool::weighted(0.9),
        ),
        0..330,
    )
    .prop_map(|things| {
        things
            .into_iter()
            .enumerate()
            .map(|(i, (device, foreign, duplicate, member))| PoolThing {
                name: format!("dev-{i:03}"),
                device,
                foreign,
                duplicate: duplicate && !foreign,
                member,
            })
            .collect()
    })
}

fn arb_steps() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => prop::collection::btree_set(1u8..100, 0..5).prop_map(|set| {
            let mut steps: Vec<u8> = set.into_iter().collect();
            steps.push(100);
            steps
        }),
    ]
}

fn arb_fleet() -> impl Strategy<Value = Fleet> {
    (
        (
            arb_pool(),
            arb_steps(),
            prop::bool::weighted(0.8),
            prop::sample::select(vec![30u64, 300, 600]),
            prop_oneof![
                (0i32..8).prop_map(IntOrString::Int),
                (0u8..=40).prop_map(|p| IntOrString::String(format!("{p}%"))),
            ],
            any::<bool>(),
            any::<bool>(),
        ),
        (
            10u64..100,
            5i64..400,
            any::<bool>(),
            0usize..15,
            prop::option::weighted(0.3, 0usize..15),
            prop::option::weighted(0.2, 0usize..15),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (pool, steps, wait_for_converged, step_timeout, max_failures, rollback, start),
                (converge_percent, interval, churn, passes, change_at, pause_at, seed),
            )| Fleet {
                pool,
                steps,
                wait_for_converged,
                step_timeout,
                max_failures,
                rollback,
                start_complete: start,
                converge_percent,
                interval,
                churn,
                passes,
                change_at,
                pause_at,
                seed,
            },
        )
}

/// The operator around `plan_set`: it applies every plan, devices converge or not,
/// things join and leave, and time advances. Every pass is checked.
struct Sim {
    world: World,
    fleet: Fleet,
    devices: HashMap<String, Device>,
    /// Things whose shadow another resource owns.
    owned_elsewhere: BTreeSet<String>,
    by_revision: HashMap<String, ShadowTemplate>,
    first_revision: String,
    rng: u64,
    now: i64,
    pass: usize,
    /// The membership changed since the rollout of the current revision began.
    membership_changed: bool,
    /// The revision and step of the last pass.
    last: Option<(String, u32)>,
    /// Plan every pass a second time from a shuffled membership.
    check_order: bool,
}

const HELD: &str = "the name is held by a ThingShadow that is not a child of lamps";
const OWNED: &str = "the classic shadow is managed by ThingShadow home/lamp";

fn duplicate_child(thing: &str, uid: String) -> ChildFacts {
    ChildFacts {
        name: child_name(SET, thing),
        uid,
        thing: thing.to_string(),
        duplicate: Some(OWNED.into()),
        ..ChildFacts::default()
    }
}

impl Sim {
    fn new(fleet: &Fleet) -> Sim {
        let (first, second) = (template("on"), template("off"));
        let mut rollout = RolloutSpec {
            steps: fleet.steps.clone(),
            wait_for_converged: fleet.wait_for_converged,
            step_timeout: format!("{}s", fleet.step_timeout),
            max_failures: fleet.max_failures.clone(),
            on_failure: if fleet.rollback {
                RolloutFailurePolicy::Rollback
            } else {
                RolloutFailurePolicy::Pause
            },
        };
        if fleet.start_complete {
            // Nothing fails the first rollout.
            rollout.max_failures = IntOrString::String("100%".into());
        }
        let members: Vec<String> = fleet
            .pool
            .iter()
            .filter(|p| p.member)
            .map(|p| p.name.clone())
            .collect();
        let mut world = World::new(set_spec(first.clone(), rollout), members);
        for p in &fleet.pool {
            if p.foreign {
                world.foreign.insert(p.name.clone(), HELD.into());
            }
            if p.duplicate && p.member {
                world.next_uid += 1;
                let uid = format!("uid-{}", world.next_uid);
                world
                    .children
                    .insert(p.name.clone(), duplicate_child(&p.name, uid));
            }
        }
        if fleet.start_complete {
            for pass in 0..10 {
                world.step(t(pass));
                world.converge_all();
                if world.status.phase.as_deref() == Some("Complete") {
                    break;
                }
            }
            assert_eq!(world.status.phase.as_deref(), Some("Complete"));
            world.spec.rollout.max_failures = fleet.max_failures.clone();
        }
        world.set_template(second);
        let by_revision = ["on", "off", "dim"]
            .into_iter()
            .map(|p| (revision(&template(p)), template(p)))
            .collect();
        Sim {
            world,
            devices: fleet
                .pool
                .iter()
                .map(|p| (p.name.clone(), p.device))
                .collect(),
            owned_elsewhere: fleet
                .pool
                .iter()
                .filter(|p| p.duplicate)
                .map(|p| p.name.clone())
                .collect(),
            by_revision,
            first_revision: revision(&first),
            rng: fleet.seed,
            now: 100,
            pass: 0,
            membership_changed: false,
            last: None,
            check_order: false,
            fleet: fleet.clone(),
        }
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn devices_act(&mut self) {
        let mut things: Vec<String> = self.world.children.keys().cloned().collect();
        things.sort();
        for thing in things {
            let roll = self.next() % 100;
            let device = self.devices[&thing];
            let child = self.world.children.get_mut(&thing).unwrap();
            if child.deleting
                || child.duplicate.is_some()
                || child.converged
                || child.stalled.is_some()
            {
                continue;
            }
            let first = child.revision.as_deref() == Some(self.first_revision.as_str());
            match device {
                Device::Silent => {}
                Device::Stalls if !first => {
                    child.stalled = Some("Conflict: /power changed outside shadowsync".into());
                }
                Device::Good | Device::Stalls => {
                    if roll < self.fleet.converge_percent {
                        child.converged = true;
                    }
                }
            }
        }
    }

    fn churn(&mut self) {
        let pool: Vec<String> = self.fleet.pool.iter().map(|p| p.name.clone()).collect();
        let mut changed = false;
        for name in pool {
            let member = self.world.things.contains(&name);
            if member && self.chance(2) {
                self.world.things.retain(|t| *t != name);
                changed = true;
            } else if !member && self.chance(5) {
                self.world.things.push(name);
                changed = true;
            }
        }
        self.membership_changed |= changed;
    }

    fn shuffled_things(&mut self) -> Vec<String> {
        let mut things = self.world.things.clone();
        for i in (1..things.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            things.swap(i, j);
        }
        things
    }

    /// One pass: devices act, the membership may change, the set is planned, checked and
    /// applied.
    fn pass(&mut self, churn: bool, paused: bool) -> Result<SetPlan, TestCaseError> {
        self.world.finish_deletions();
        self.devices_act();
        if churn {
            self.churn();
        }
        self.world.paused = paused;
        let changes_template = self.fleet.change_at == Some(self.pass);
        if changes_template {
            self.world.set_template(template("dim"));
            self.membership_changed = false;
        }
        let now = t(self.now);
        let plan = self.world.plan(now);

        if self.check_order {
            // The same plan, whatever order the membership lists the things in (and so,
            // the same plan every time).
            let shuffled = self.shuffled_things();
            prop_assert_eq!(
                &plan_set(&self.world.input_with(&shuffled, now)),
                &plan,
                "the order of the membership changed the plan"
            );
        }

        self.check(&plan)?;
        if changes_template {
            self.check_started_over(&plan)?;
        }
        self.world.apply(&plan, now);
        for change in &plan.changes {
            if let ChildChange::Create { thing, .. } = change {
                if self.owned_elsewhere.contains(thing) {
                    // Its ThingShadow is refused at once.
                    self.world.children.get_mut(thing).unwrap().duplicate = Some(OWNED.into());
                }
            }
        }
        self.check_applied(&plan)?;
        self.pass += 1;
        Ok(plan)
    }

    fn current(&self) -> String {
        self.revision_of(&self.world.spec.template)
    }

    /// [`revision`], looked up for the simulation's templates.
    fn revision_of(&self, template: &ShadowTemplate) -> String {
        self.by_revision
            .iter()
            .find(|(_, known)| *known == template)
            .map_or_else(|| revision(template), |(rev, _)| rev.clone())
    }

    fn conflicting(&self, thing: &str) -> bool {
        self.world.foreign.contains_key(thing)
            || self
                .world
                .children
                .get(thing)
                .is_some_and(|c| c.duplicate.is_some())
    }

    fn members(&self) -> BTreeSet<String> {
        self.world.things.iter().cloned().collect()
    }

    /// The things of the current step's slice, in rollout order.
    fn slice(&self, step: usize) -> Vec<String> {
        let members: Vec<String> = self.members().into_iter().collect();
        let n = members.len();
        let steps = rollout_settings(&self.world.spec.rollout).effective_steps();
        let mut order = ordered(&members);
        order.truncate(slice_size(steps[step], n));
        order
    }

    /// The rules every plan keeps, checked against the input it was planned from.
    fn check(&self, plan: &SetPlan) -> Result<(), TestCaseError> {
        let w = &self.world;
        let status = &plan.status;
        let members = self.members();
        let current = self.current();
        let steps = rollout_settings(&w.spec.rollout).effective_steps();
        prop_assert_eq!(status.targeted as usize, members.len());
        prop_assert_eq!(status.revision.as_deref(), Some(current.as_str()));
        prop_assert!((status.current_step as usize) < steps.len());
        let slice: BTreeSet<String> = self
            .slice(status.current_step as usize)
            .into_iter()
            .collect();
        if let Some((revision, step)) = &self.last {
            if *revision == current {
                prop_assert!(status.current_step >= *step, "the step went back");
            }
        }
        match (&status.complete_revision, &status.complete_template) {
            (Some(rev), Some(template)) => prop_assert_eq!(&revision(template), rev),
            (None, None) => {}
            (rev, template) => {
                prop_assert!(
                    false,
                    "complete revision {rev:?} with template {template:?}"
                )
            }
        }

        let mut seen = BTreeSet::new();
        for change in &plan.changes {
            let thing = thing_of(change);
            prop_assert!(seen.insert(thing), "{thing} changed twice");
            let write = match change {
                ChildChange::Create {
                    revision, template, ..
                } => {
                    prop_assert!(members.contains(thing), "created {thing}, not a member");
                    prop_assert!(!w.children.contains_key(thing), "created {thing} twice");
                    Some((revision, template))
                }
                ChildChange::Update {
                    name,
                    uid,
                    revision,
                    template,
                    ..
                } => {
                    prop_assert!(members.contains(thing), "updated {thing}, not a member");
                    let child = &w.children[thing];
                    prop_assert!(!child.deleting, "updated {thing} while it is deleted");
                    prop_assert_eq!((&child.name, &child.uid), (name, uid));
                    Some((revision, template))
                }
                ChildChange::Delete { name, uid, .. } => {
                    prop_assert!(!members.contains(thing), "deleted {thing}, a member");
                    let child = &w.children[thing];
                    prop_assert!(!child.deleting, "deleted {thing} twice");
                    prop_assert_eq!((&child.name, &child.uid), (name, uid));
                    None
                }
            };
            if let Some((rev, template)) = write {
                prop_assert!(!self.conflicting(thing), "wrote conflicting {thing}");
                prop_assert_eq!(&self.revision_of(template), rev);
                if *rev == current {
                    prop_assert!(
                        slice.contains(thing),
                        "{thing} outside the slice of step {}",
                        status.current_step
                    );
                } else {
                    prop_assert_eq!(Some(rev), status.complete_revision.as_ref());
                    prop_assert_eq!(Some(&**template), self.by_revision.get(rev));
                }
            }
        }

        if w.paused {
            prop_assert!(plan.changes.is_empty(), "paused, yet {:?}", plan.changes);
            prop_assert_eq!(status.phase.as_deref(), Some("Paused"));
            prop_assert_eq!(&ready(status).reason, "Paused");
        }
        if status.phase.as_deref() == Some("Aborted") {
            prop_assert_eq!(
                &condition(status, STALLED).unwrap().reason,
                "RolloutAborted"
            );
            let writes: Vec<&ChildChange> = plan
                .changes
                .iter()
                .filter(|c| !matches!(c, ChildChange::Delete { .. }))
                .collect();
            let complete = status.complete_revision.as_ref().filter(|c| **c != current);
            match (self.fleet.rollback, complete) {
                (true, Some(complete)) => {
                    // Exactly the children that carry the new revision go back, to exactly
                    // the previous template.
                    let expected: BTreeSet<String> = members
                        .iter()
                        .filter(|t| !self.conflicting(t))
                        .filter(|t| {
                            w.children.get(*t).is_some_and(|c| {
                                !c.deleting && c.revision.as_deref() == Some(current.as_str())
                            })
                        })
                        .cloned()
                        .collect();
                    let mut back = BTreeSet::new();
                    for change in writes {
                        let ChildChange::Update {
                            thing,
                            revision: r,
                            template: x,
                            ..
                        } = change
                        else {
                            return Err(TestCaseError::fail(format!("aborted, yet {change:?}")));
                        };
                        prop_assert_eq!(r, complete);
                        prop_assert_eq!(Some(&**x), status.complete_template.as_ref());
                        back.insert(thing.clone());
                    }
                    prop_assert_eq!(&back, &expected);
                    if !back.is_empty() {
                        prop_assert!(plan.events.iter().any(|e| e.reason == Reason::RolledBack));
                    }
                }
                _ => prop_assert!(writes.is_empty(), "aborted, yet {writes:?}"),
            }
        }
        Ok(())
    }

    /// After a template change: the rollout is at its first step, unless that step's
    /// slice holds only conflicting things (or none), which lets it pass at once.
    fn check_started_over(&self, plan: &SetPlan) -> Result<(), TestCaseError> {
        let status = &plan.status;
        prop_assert_eq!(status.revision.as_ref(), Some(&self.current()));
        prop_assert!(!status.aborted);
        prop_assert!(status.phase.as_deref() != Some("Aborted"));
        let first = self.slice(0);
        if !first.iter().all(|t| self.conflicting(t)) {
            prop_assert_eq!(status.current_step, 0);
            prop_assert!(condition(status, STALLED).is_none());
        }
        Ok(())
    }

    /// The state after a plan was applied.
    fn check_applied(&mut self, plan: &SetPlan) -> Result<(), TestCaseError> {
        let w = &self.world;
        let current = self.current();
        let status = &plan.status;
        // Every child carries the template its revision says.
        for (thing, child) in &w.children {
            if let Some(template) = w.templates.get(thing) {
                prop_assert_eq!(Some(self.revision_of(template)), child.revision.clone());
            }
        }
        let carriers: Vec<&String> = w
            .things
            .iter()
            .filter(|t| !self.conflicting(t))
            .filter(|t| {
                w.children
                    .get(*t)
                    .is_some_and(|c| c.revision.as_deref() == Some(current.as_str()))
            })
            .collect();
        if !self.membership_changed {
            let allowed = self.slice(status.current_step as usize).len();
            prop_assert!(
                carriers.len() <= allowed,
                "{} carry the new revision at step {}, which allows {allowed}",
                carriers.len(),
                status.current_step
            );
        }
        if status.phase.as_deref() == Some("Aborted")
            && self.fleet.rollback
            && status
                .complete_revision
                .as_ref()
                .is_some_and(|c| *c != current)
        {
            let left: Vec<&&String> = carriers
                .iter()
                .filter(|t| !w.children[**t].deleting)
                .collect();
            prop_assert!(left.is_empty(), "not rolled back: {left:?}");
        }
        self.last = Some((current, status.current_step));
        Ok(())
    }

    /// The whole run: passes with churn and pauses, then a settled membership with time
    /// running past the step timeout at every pass. Returns the last plan.
    fn run(&mut self) -> Result<SetPlan, TestCaseError> {
        for i in 0..self.fleet.passes {
            let paused = self.fleet.pause_at.is_some_and(|p| (p..p + 2).contains(&i));
            self.pass(self.fleet.churn, paused)?;
            self.now += self.fleet.interval;
        }
        // Settled: each step's devices converge, fail or time out before the next pass.
        let steps = rollout_settings(&self.world.spec.rollout).effective_steps();
        let mut plan = None;
        for _ in 0..steps.len() + 3 {
            self.now += self.fleet.step_timeout as i64 + 1;
            let p = self.pass(false, false)?;
            let done = matches!(p.status.phase.as_deref(), Some("Complete" | "Aborted"));
            plan = Some(p);
            if done {
                break;
            }
        }
        Ok(plan.expect("at least one pass"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Over a fixed membership, never more things carry the new revision than the step
    /// allows, whatever the devices do.
    #[test]
    fn never_more_carry_the_new_revision_than_the_step_allows(mut f in arb_fleet()) {
        f.churn = false;
        for p in &mut f.pool {
            p.member = true;
        }
        Sim::new(&f).run()?;
    }

    /// With things joining and leaving: every write stays inside the current slice (or
    /// gives the complete template), no pass writes a conflicting thing, and children of
    /// leavers are deleted once.
    #[test]
    fn changes_stay_in_the_slice_and_off_conflicting_things(mut f in arb_fleet()) {
        f.churn = true;
        Sim::new(&f).run()?;
    }

    /// With a step timeout, a rollout whose devices stay silent or stall reaches
    /// Complete or Aborted within a bounded number of passes once time runs on.
    #[test]
    fn a_silent_device_never_blocks_forever(mut f in arb_fleet()) {
        f.wait_for_converged = true;
        let last = Sim::new(&f).run()?;
        let phase = last.status.phase.clone();
        prop_assert!(
            matches!(phase.as_deref(), Some("Complete" | "Aborted")),
            "still {:?} at step {}: {:?}", phase, last.status.current_step, ready(&last.status).message
        );
        if phase.as_deref() == Some("Complete") {
            prop_assert_eq!(&ready(&last.status).status, "True");
            prop_assert!(condition(&last.status, RECONCILING).is_none());
        }
    }

    /// Beyond the budget with Rollback, every child that carries the new revision gets
    /// the previous template back, exactly.
    #[test]
    fn rollback_restores_exactly_the_previous_template(mut f in arb_fleet()) {
        f.rollback = true;
        f.start_complete = true;
        f.max_failures = IntOrString::Int(0);
        f.change_at = None;
        let mut sim = Sim::new(&f);
        let last = sim.run()?;
        if last.status.phase.as_deref() == Some("Aborted") {
            let old = revision(&template("on"));
            for thing in &sim.world.things {
                if let Some(child) = sim.world.children.get(thing) {
                    if child.duplicate.is_none() && child.revision.is_some() {
                        prop_assert_eq!(child.revision.as_deref(), Some(old.as_str()));
                        prop_assert_eq!(&sim.world.templates[thing], &template("on"));
                    }
                }
            }
        }
    }

    /// The plan does not depend on the order in which the membership lists the things
    /// (checked at every pass of the simulation, here on fleets that change a lot).
    #[test]
    fn the_plan_does_not_depend_on_the_membership_order(mut f in arb_fleet()) {
        f.churn = true;
        f.passes = 8;
        f.converge_percent = 50;
        let mut sim = Sim::new(&f);
        sim.check_order = true;
        sim.run()?;
    }

    /// A template change mid-rollout starts over from the first step.
    #[test]
    fn a_template_change_mid_rollout_starts_over(mut f in arb_fleet(), at in 1usize..12) {
        f.passes = f.passes.max(at + 1);
        f.change_at = Some(at);
        Sim::new(&f).run()?;
    }
}
