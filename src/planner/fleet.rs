//! One pass of a `ThingShadowSet`, decided without I/O: from the set, its membership and
//! what its children show, to the child changes to make and the set's new status.
//!
//! [`plan_set`] validates the spec, asks [`plan_rollout`](super::rollout::plan_rollout)
//! which things get which revision, turns that into creations, updates and deletions of
//! children, and builds the status (counts, phase, step, the bounded lists of failed and
//! conflicting things, kstatus conditions) and the Events of phase changes. The operator
//! gathers the facts and performs the changes (`operator::fleet`).
//!
//! Rules kept here besides the rollout's own:
//! - Nothing is created, changed or deleted while the spec is invalid, the membership
//!   has never been read or the set is paused; a set whose membership cannot be re-read
//!   keeps the last one.
//! - A child that is being deleted is neither written nor recreated until it is gone.
//! - Children of things that left the selection are deleted (their deletionPolicy runs).
//! - A thing whose child name is held by another object, or whose shadow another resource
//!   owns (its child is refused with DuplicateTarget), is conflicting: never written.
//! - The template of the last complete revision is kept in the status: it is what new
//!   members get during a rollout and what a rollback restores.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::conditions::{
    find_condition, remove_condition, upsert_condition, READY, RECONCILING, STALLED,
};
use super::rollout::{
    plan_rollout, Child, FailureBudget, Member, OnFailure, Phase, RolloutInput, RolloutMemory,
    RolloutPlan, RolloutSettings,
};
use crate::api::validate::{
    format_errors, max_failures, parse_duration, validate_thing_shadow_set, MaxFailures,
    ShadowLimits,
};
use crate::api::{
    RolloutFailurePolicy, RolloutSpec, ShadowTemplate, ThingIssue, ThingShadow, ThingShadowSetSpec,
    ThingShadowSetStatus, REVISION_ANNOTATION, REVISION_TIME_ANNOTATION,
};
use crate::reason::Reason;

/// What the set needs to know of one child ThingShadow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildFacts {
    pub name: String,
    pub uid: String,
    pub thing: String,
    /// The revision annotation (`None`: none).
    pub revision: Option<String>,
    /// When it got that revision.
    pub since: Option<DateTime<Utc>>,
    /// Ready and Converged for its current generation.
    pub converged: bool,
    /// Stalled for its current generation: `Reason: message`.
    pub stalled: Option<String>,
    /// Refused because another resource owns the shadow: the refusal's message.
    pub duplicate: Option<String>,
    /// Being deleted.
    pub deleting: bool,
}

impl ChildFacts {
    /// The facts of a ThingShadow (a child of some set).
    pub fn of(shadow: &ThingShadow) -> ChildFacts {
        let meta = &shadow.metadata;
        let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
        let status = shadow.status.as_ref();
        let current =
            |generation: Option<i64>| generation.is_some() && generation == meta.generation;
        let fresh = status.is_some_and(|s| current(s.observed_generation));
        let condition = |type_: &str| {
            status
                .and_then(|s| find_condition(&s.conditions, type_))
                .filter(|c| c.status == "True" && (fresh || current(c.observed_generation)))
        };
        let converged = fresh && condition(READY).is_some() && condition("Converged").is_some();
        let (mut stalled, mut duplicate) = (None, None);
        if let Some(c) = condition(STALLED) {
            if c.reason == Reason::DuplicateTarget {
                duplicate = Some(c.message.clone());
            } else {
                stalled = Some(format!("{}: {}", c.reason, c.message));
            }
        }
        ChildFacts {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            thing: shadow.spec.thing_name.clone(),
            revision: annotation(REVISION_ANNOTATION).cloned(),
            since: annotation(REVISION_TIME_ANNOTATION)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            converged,
            stalled,
            duplicate,
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// Where the membership stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership<'a> {
    /// The things last read (`None`: never read successfully).
    pub things: Option<&'a [String]>,
    /// When they were read.
    pub read_time: Option<DateTime<Utc>>,
    /// Why the last read failed, if it did.
    pub error: Option<String>,
}

/// Everything one pass decides from.
#[derive(Clone, Debug)]
pub struct SetInput<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a ThingShadowSetSpec,
    pub prior: &'a ThingShadowSetStatus,
    pub membership: Membership<'a>,
    /// The set's children, by thing.
    pub children: &'a HashMap<String, ChildFacts>,
    /// Things whose child name another object holds, with why.
    pub foreign: &'a BTreeMap<String, String>,
    pub paused: bool,
    pub now: DateTime<Utc>,
    pub limits: &'a ShadowLimits,
}

/// One change to a child.
#[derive(Clone, Debug, PartialEq)]
pub enum ChildChange {
    /// Create the child of `thing` carrying `revision`.
    Create {
        thing: String,
        revision: String,
        template: Arc<ShadowTemplate>,
    },
    /// Give the existing child (`uid` as a precondition) `revision`.
    Update {
        thing: String,
        name: String,
        uid: String,
        revision: String,
        template: Arc<ShadowTemplate>,
        /// The child carries a revision annotation, so it has annotations to which the
        /// new revision's can be added in place.
        annotated: bool,
    },
    /// Delete the child of a thing that left the selection.
    Delete {
        thing: String,
        name: String,
        uid: String,
    },
}

/// An Event about the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetEvent {
    pub warning: bool,
    pub reason: Reason,
    pub message: String,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub struct SetPlan {
    pub changes: Vec<ChildChange>,
    pub status: ThingShadowSetStatus,
    pub events: Vec<SetEvent>,
    /// When to look again even if nothing changes (a step timeout).
    pub recheck_after: Option<Duration>,
}

/// The rollout settings of a valid spec.
pub fn rollout_settings(rollout: &RolloutSpec) -> RolloutSettings {
    RolloutSettings {
        steps: rollout.steps.clone(),
        wait_for_converged: rollout.wait_for_converged,
        step_timeout: parse_duration(&rollout.step_timeout).ok(),
        max_failures: match max_failures(&rollout.max_failures) {
            Ok(MaxFailures::Percent(p)) => FailureBudget::Percent(p),
            Ok(MaxFailures::Count(n)) => FailureBudget::Count(n),
            Err(_) => FailureBudget::Count(0),
        },
        on_failure: match rollout.on_failure {
            RolloutFailurePolicy::Pause => OnFailure::Pause,
            RolloutFailurePolicy::Rollback => OnFailure::Rollback,
        },
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Plans one pass of a set. See the module documentation for the rules.
pub fn plan_set(input: &SetInput<'_>) -> SetPlan {
    let now = rfc3339(input.now);
    let mut status = input.prior.clone();
    status.observed_generation = input.generation;
    if let Some(read) = input.membership.read_time {
        status.membership_read_time = Some(rfc3339(read));
    }
    let mut events = Vec::new();

    if let Err(errors) = validate_thing_shadow_set(input.name, input.spec, input.limits) {
        let message = format_errors(&errors);
        set_conditions(
            &mut status,
            Outcome::Stalled(Reason::InvalidSpec),
            &message,
            input.generation,
            &now,
        );
        if find_condition(&input.prior.conditions, STALLED)
            .is_none_or(|c| c.reason != Reason::InvalidSpec)
        {
            events.push(SetEvent {
                warning: true,
                reason: Reason::InvalidSpec,
                message,
            });
        }
        return SetPlan {
            changes: Vec::new(),
            status,
            events,
            recheck_after: None,
        };
    }

    let Some(things) = input.membership.things else {
        let message = format!(
            "cannot read the things of the set: {}",
            input.membership.error.as_deref().unwrap_or("not read yet")
        );
        set_conditions(
            &mut status,
            Outcome::Waiting(Reason::MembershipUnavailable),
            &message,
            input.generation,
            &now,
        );
        return SetPlan {
            changes: Vec::new(),
            status,
            events,
            recheck_after: None,
        };
    };

    let settings = rollout_settings(&input.spec.rollout);
    let revision = naming::revision(&input.spec.template);
    let memory = RolloutMemory {
        revision: input.prior.revision.clone(),
        complete_revision: input.prior.complete_revision.clone(),
        step: input.prior.current_step as usize,
        aborted: input.prior.aborted,
        step_started: parse_time(input.prior.step_started_time.as_deref()),
    };
    let members: Vec<Member> = things
        .iter()
        .map(|thing| Member {
            thing: thing.clone(),
            child: member_child(thing, input),
        })
        .collect();
    let plan = plan_rollout(&RolloutInput {
        members: &members,
        revision: &revision,
        settings: &settings,
        memory: &memory,
        paused: input.paused,
        now: input.now,
    });

    let complete_template = if plan.memory.complete_revision.as_deref() == Some(revision.as_str()) {
        Some(input.spec.template.clone())
    } else if plan.memory.complete_revision == input.prior.complete_revision {
        input.prior.complete_template.clone()
    } else {
        None
    };
    let changes = child_changes(&plan, things, &revision, complete_template.as_ref(), input);
    events.extend(phase_events(&plan, &changes, input.prior, &revision));
    fill_status(&mut status, &plan, &settings, complete_template);
    let outcome = match plan.phase {
        Phase::Complete => Outcome::Ready,
        Phase::Progressing => Outcome::Progressing,
        Phase::Paused => Outcome::Paused,
        Phase::Aborted => Outcome::Aborted,
    };
    let message = summary(
        &plan,
        &settings,
        &revision,
        input.membership.error.as_deref(),
    );
    set_conditions(&mut status, outcome, &message, input.generation, &now);
    SetPlan {
        changes,
        status,
        events,
        recheck_after: plan.recheck_after,
    }
}

/// What the rollout sees of one member.
fn member_child(thing: &str, input: &SetInput<'_>) -> Option<Child> {
    if let Some(why) = input.foreign.get(thing) {
        return Some(Child {
            conflicting: Some(why.clone()),
            ..Child::default()
        });
    }
    let facts = input.children.get(thing)?;
    Some(Child {
        revision: facts.revision.clone().unwrap_or_default(),
        since: facts.since,
        converged: facts.converged,
        stalled: facts.stalled.clone(),
        conflicting: facts.duplicate.clone(),
    })
}

fn child_changes(
    plan: &RolloutPlan,
    things: &[String],
    revision: &str,
    complete_template: Option<&ShadowTemplate>,
    input: &SetInput<'_>,
) -> Vec<ChildChange> {
    // One copy of each template, shared by every change that carries it: a pass over
    // 10,000 children would otherwise hold 10,000 copies of the desired document.
    let current = Arc::new(input.spec.template.clone());
    let complete = complete_template.map(|t| Arc::new(t.clone()));
    let mut changes = Vec::new();
    for (thing, assigned) in &plan.assign {
        let template = if assigned == revision {
            &current
        } else if Some(assigned) == plan.memory.complete_revision.as_ref() {
            match &complete {
                Some(template) => template,
                // The complete template is not known (its status was lost): nothing to
                // give this thing but the new revision in its turn.
                None => continue,
            }
        } else {
            continue;
        };
        match input.children.get(thing) {
            Some(child) if child.deleting => {}
            Some(child) => changes.push(ChildChange::Update {
                thing: thing.clone(),
                name: child.name.clone(),
                uid: child.uid.clone(),
                revision: assigned.clone(),
                template: Arc::clone(template),
                annotated: child.revision.is_some(),
            }),
            None => changes.push(ChildChange::Create {
                thing: thing.clone(),
                revision: assigned.clone(),
                template: Arc::clone(template),
            }),
        }
    }
    // A paused set touches nothing, and a deletion runs the child's deletionPolicy
    // against the data plane: leavers wait for the pause to end.
    if input.paused {
        return changes;
    }
    let selected: std::collections::HashSet<&str> = things.iter().map(String::as_str).collect();
    let mut leaving: Vec<&ChildFacts> = input
        .children
        .values()
        .filter(|c| !c.deleting && !selected.contains(c.thing.as_str()))
        .collect();
    leaving.sort_by(|a, b| a.name.cmp(&b.name));
    changes.extend(leaving.into_iter().map(|c| ChildChange::Delete {
        thing: c.thing.clone(),
        name: c.name.clone(),
        uid: c.uid.clone(),
    }));
    changes
}

fn phase_events(
    plan: &RolloutPlan,
    changes: &[ChildChange],
    prior: &ThingShadowSetStatus,
    revision: &str,
) -> Vec<SetEvent> {
    let mut events = Vec::new();
    let was = prior.phase.as_deref();
    let same_revision = prior.revision.as_deref() == Some(revision);
    match plan.phase {
        Phase::Complete if was != Some("Complete") || !same_revision => events.push(SetEvent {
            warning: false,
            reason: Reason::RolloutComplete,
            message: format!(
                "revision {revision} is on all {} things ({} converged, {} failed, {} conflicting)",
                plan.counts.targeted - plan.counts.conflicting,
                plan.counts.converged,
                plan.counts.failed,
                plan.counts.conflicting
            ),
        }),
        Phase::Aborted if was != Some("Aborted") || !same_revision => events.push(SetEvent {
            warning: true,
            reason: Reason::RolloutAborted,
            message: format!(
                "rollout of revision {revision} stopped: {} things failed, more than maxFailures allows",
                plan.counts.failed
            ),
        }),
        Phase::Progressing if same_revision && plan.memory.step > prior.current_step as usize => {
            events.push(SetEvent {
                warning: false,
                reason: Reason::StepAdvanced,
                message: format!("rollout of revision {revision} is at step {}", plan.memory.step + 1),
            })
        }
        _ => {}
    }
    if plan.phase == Phase::Aborted {
        let back = changes
            .iter()
            .filter(|c| matches!(c, ChildChange::Update { revision: r, .. } if r != revision))
            .count();
        if back > 0 {
            events.push(SetEvent {
                warning: true,
                reason: Reason::RolledBack,
                message: format!(
                    "{back} things returned to revision {}",
                    plan.memory.complete_revision.as_deref().unwrap_or("?")
                ),
            });
        }
    }
    events
}

fn fill_status(
    status: &mut ThingShadowSetStatus,
    plan: &RolloutPlan,
    settings: &RolloutSettings,
    complete_template: Option<ShadowTemplate>,
) {
    let steps = settings.effective_steps();
    let step = plan.memory.step.min(steps.len() - 1);
    // An aborted rollout keeps showing what stopped it: after a rollback the failed
    // devices no longer carry the revision and would drop out of the counts.
    let sticky =
        plan.phase == Phase::Aborted && status.aborted && status.revision == plan.memory.revision;
    let (failed_before, failed_things_before) = (status.failed, status.failed_things.clone());
    status.phase = Some(phase_name(plan.phase).to_string());
    status.revision = plan.memory.revision.clone();
    status.complete_revision = plan.memory.complete_revision.clone();
    status.complete_template = complete_template;
    status.current_step = step as u32;
    status.step = Some(format!("{}/{} ({}%)", step + 1, steps.len(), steps[step]));
    status.step_started_time = plan.memory.step_started.map(rfc3339);
    status.aborted = plan.memory.aborted;
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    status.targeted = count(plan.counts.targeted);
    status.updated = count(plan.counts.updated);
    status.converged = count(plan.counts.converged);
    status.failed = count(plan.counts.failed);
    status.conflicting = count(plan.counts.conflicting);
    let issues = |list: &[super::rollout::DeviceIssue]| {
        list.iter()
            .map(|d| ThingIssue {
                thing: d.thing.clone(),
                reason: d.reason.clone(),
            })
            .collect()
    };
    status.failed_things = issues(&plan.failed);
    status.conflicting_things = issues(&plan.conflicting);
    if sticky && status.failed < failed_before {
        status.failed = failed_before;
        status.failed_things = failed_things_before;
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Progressing => "Progressing",
        Phase::Complete => "Complete",
        Phase::Paused => "Paused",
        Phase::Aborted => "Aborted",
    }
}

fn summary(
    plan: &RolloutPlan,
    settings: &RolloutSettings,
    revision: &str,
    stale: Option<&str>,
) -> String {
    let steps = settings.effective_steps();
    let step = plan.memory.step.min(steps.len() - 1);
    let c = &plan.counts;
    let mut text = format!(
        "revision {revision}, step {}/{} ({}%): {} of {} things updated, {} converged, {} failed, {} conflicting",
        step + 1,
        steps.len(),
        steps[step],
        c.updated,
        c.targeted,
        c.converged,
        c.failed,
        c.conflicting
    );
    if let Some(error) = stale {
        text.push_str(&format!(
            "; membership not re-read ({error}), the last one is used"
        ));
    }
    text
}

/// The kstatus outcome of a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ready,
    Progressing,
    Paused,
    Aborted,
    /// Waiting for something outside (Ready=False, Reconciling=True).
    Waiting(Reason),
    /// Needs a human (Ready=False, Stalled=True).
    Stalled(Reason),
}

fn set_conditions(
    status: &mut ThingShadowSetStatus,
    outcome: Outcome,
    message: &str,
    generation: Option<i64>,
    now: &str,
) {
    let (ready_reason, reconciling, stalled) = match outcome {
        Outcome::Ready => (Reason::RolloutComplete, None, None),
        Outcome::Progressing => (
            Reason::RolloutProgressing,
            Some(Reason::RolloutProgressing),
            None,
        ),
        Outcome::Paused => (Reason::Paused, None, None),
        Outcome::Aborted => (Reason::RolloutAborted, None, Some(Reason::RolloutAborted)),
        Outcome::Waiting(reason) => (reason, Some(reason), None),
        Outcome::Stalled(reason) => (reason, None, Some(reason)),
    };
    let message = if outcome == Outcome::Paused {
        format!("paused by the iot.shadowsync.dev/paused annotation; {message}")
    } else {
        message.to_string()
    };
    let conditions = &mut status.conditions;
    let ready = outcome == Outcome::Ready;
    upsert_condition(
        conditions,
        READY,
        ready,
        ready_reason.as_str(),
        &message,
        generation,
        now,
    );
    for (type_, reason) in [(RECONCILING, reconciling), (STALLED, stalled)] {
        match reason {
            Some(reason) => upsert_condition(
                conditions,
                type_,
                true,
                reason.as_str(),
                &message,
                generation,
                now,
            ),
            None => remove_condition(conditions, type_),
        }
    }
}

pub mod naming;

#[cfg(test)]
mod tests;
