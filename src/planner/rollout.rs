//! Staged rollouts of one desired state to a fleet: which devices get the new template
//! now, which go back to the previous one, and where the rollout stands.
//!
//! Pure: [`plan_rollout`] takes the selection, what each device's ThingShadow shows, the
//! rollout settings, what the last pass remembered and the time, and returns what to do
//! and the status. The fleet controller applies the plan (creating or updating one
//! ThingShadow per device) and stores [`RolloutMemory`] in the set's status, so a restart
//! continues where the rollout was.
//!
//! The rules:
//! - **Order.** Devices are taken in the order of the SHA-256 of their thing names: the
//!   same order whatever order the selection comes in and across restarts, and a canary
//!   slice spread over the name space rather than the first names alphabetically.
//! - **Steps.** `steps` are cumulative percentages of the selection (`[5, 25, 100]`; none
//!   means `[100]`). Step *k* lets at most `ceil(p_k × n / 100)` devices carry the new
//!   revision, the first ones in the order: never more.
//! - **Gates.** A step is done when every device of its slice carries the new revision
//!   and, with `waitForConverged`, has converged or failed. A device that has not
//!   converged `stepTimeout` after it got the revision (or, when that is not known, after
//!   the step began) counts as failed, so a silent device never blocks a rollout forever. A device whose ThingShadow is stalled (an
//!   invalid spec for that device, a conflict under Preserve, access denied) fails at once.
//! - **Budget.** More failures than `maxFailures` (a count, or a percentage of the
//!   selection) stop the rollout: phase `Aborted`. With `onFailure: Rollback`, every
//!   device that carries the new revision goes back to the last complete one (when there
//!   is one); with `Pause`, devices stay as they are.
//! - **Template changes.** A new revision starts over from the first step; devices that
//!   carry an abandoned revision are moved in their turn.
//! - **Members.** A device that joins the selection gets the last complete revision, or
//!   the new one once its slot in the order comes (immediately once the rollout is
//!   complete). Before the first rollout completes there is no previous revision: devices
//!   outside the slices reached so far get no ThingShadow at all, so nothing is written
//!   to them. Devices that left the selection are not the planner's business (the
//!   controller deletes their children).
//! - **Conflicts.** A device whose shadow another resource owns is counted as conflicting
//!   and skipped: it neither blocks a step nor counts as a failure.
//! - **Pause.** A paused set plans nothing new (no update, no rollback) and reports
//!   `Paused`; it resumes where it stood.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How the budget of failures is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureBudget {
    /// At most this many failed devices.
    Count(u32),
    /// At most this percentage (0 to 100) of the selection, rounded down.
    Percent(u8),
}

impl FailureBudget {
    /// The number of failed devices allowed in a selection of `n`.
    pub fn allowed(self, n: usize) -> usize {
        match self {
            FailureBudget::Count(count) => count as usize,
            FailureBudget::Percent(percent) => n * percent.min(100) as usize / 100,
        }
    }
}

/// What happens when the budget is exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop where the rollout stands.
    Pause,
    /// Return the devices that carry the new revision to the last complete one.
    Rollback,
}

/// The rollout settings of a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutSettings {
    /// Cumulative percentages, each in 1..=100, ascending, the last 100 (checked by
    /// [`RolloutSettings::validate`]). Empty: all at once.
    pub steps: Vec<u8>,
    pub wait_for_converged: bool,
    pub step_timeout: Option<Duration>,
    pub max_failures: FailureBudget,
    pub on_failure: OnFailure,
}

impl RolloutSettings {
    /// The steps in force: `[100]` when none are given.
    pub fn effective_steps(&self) -> Vec<u8> {
        if self.steps.is_empty() {
            vec![100]
        } else {
            self.steps.clone()
        }
    }

    /// Every rule the steps break, as `field: rule` messages.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            if *step == 0 || *step > 100 {
                errors.push(format!(
                    "spec.rollout.steps[{i}] {step}: must be a percentage from 1 to 100"
                ));
            }
            if i > 0 && *step <= self.steps[i - 1] {
                errors.push(format!(
                    "spec.rollout.steps[{i}] {step}: steps are cumulative and must grow (the step before is {})",
                    self.steps[i - 1]
                ));
            }
        }
        if let Some(last) = self.steps.last() {
            if *last != 100 {
                errors.push(format!(
                    "spec.rollout.steps: the last step is {last}: it must be 100, or the rollout never completes"
                ));
            }
        }
        if let FailureBudget::Percent(p) = self.max_failures {
            if p > 100 {
                errors.push(format!(
                    "spec.rollout.maxFailures {p}%: must be a percentage from 0 to 100"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// What one device's ThingShadow shows, as far as the rollout cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Child {
    /// The template revision the child carries.
    pub revision: String,
    /// When the child was given that revision (from its annotation), if known.
    pub since: Option<DateTime<Utc>>,
    /// Ready and Converged for the child's current generation.
    pub converged: bool,
    /// Stalled for the current generation, with its reason: a failure.
    pub stalled: Option<String>,
    /// Another resource owns the target (DuplicateTarget), with its message.
    pub conflicting: Option<String>,
}

/// One selected device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub thing: String,
    /// Its ThingShadow, if it has one.
    pub child: Option<Child>,
}

/// Phases, as the status shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Progressing,
    Complete,
    Paused,
    Aborted,
}

/// What the rollout remembers between passes (kept in the set's status).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutMemory {
    /// The revision being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The last revision whose rollout completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_revision: Option<String>,
    /// Index into the effective steps.
    #[serde(default)]
    pub step: usize,
    /// Whether the rollout of `revision` was aborted (stays aborted until the template
    /// changes).
    #[serde(default)]
    pub aborted: bool,
    /// When the current step began: the step timeout of a device that does not say when
    /// it got the revision counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started: Option<DateTime<Utc>>,
}

/// Everything a pass decides from.
#[derive(Clone, Debug)]
pub struct RolloutInput<'a> {
    pub members: &'a [Member],
    /// The revision of the set's current template.
    pub revision: &'a str,
    pub settings: &'a RolloutSettings,
    pub memory: &'a RolloutMemory,
    pub paused: bool,
    pub now: DateTime<Utc>,
}

/// A device that failed or conflicts, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIssue {
    pub thing: String,
    pub reason: String,
}

/// Counts for the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RolloutCounts {
    pub targeted: usize,
    /// Devices that carry the revision being rolled out.
    pub updated: usize,
    /// Of those, converged.
    pub converged: usize,
    pub failed: usize,
    pub conflicting: usize,
}

/// What to do now, and the status after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutPlan {
    /// Children to create or change to carry `revision`: (thing, revision).
    pub assign: Vec<(String, String)>,
    pub phase: Phase,
    pub memory: RolloutMemory,
    pub counts: RolloutCounts,
    /// Failed devices, in rollout order, at most [`MAX_LISTED`].
    pub failed: Vec<DeviceIssue>,
    /// Conflicting devices, in rollout order, at most [`MAX_LISTED`].
    pub conflicting: Vec<DeviceIssue>,
    /// When the next look is needed even if nothing changes (the earliest step timeout).
    pub recheck_after: Option<Duration>,
}

/// At most this many failed and conflicting devices are listed in the status.
pub const MAX_LISTED: usize = 20;

/// Position of a thing in the rollout order.
pub fn order_key(thing: &str) -> [u8; 32] {
    Sha256::digest(thing.as_bytes()).into()
}

/// How many devices step `step` (a cumulative percentage) allows out of `n`.
pub fn slice_size(percent: u8, n: usize) -> usize {
    (n * percent.min(100) as usize).div_ceil(100)
}

/// Plans one pass of a rollout. See the module documentation for the rules.
pub fn plan_rollout(input: &RolloutInput<'_>) -> RolloutPlan {
    let mut members: Vec<&Member> = input.members.iter().collect();
    // The key once per member (a SHA-256 and a copy of the name): `sort_by_key` would
    // make it twice per comparison, about 27 times per member at 10,000 members, on
    // every pass of the set.
    members.sort_by_cached_key(|m| (order_key(&m.thing), m.thing.as_str()));
    members.dedup_by(|a, b| a.thing == b.thing);
    let n = members.len();
    let steps = input.settings.effective_steps();
    let revision = input.revision.to_string();

    // A new template starts over.
    let mut memory = input.memory.clone();
    if memory.revision.as_deref() != Some(input.revision) {
        memory.revision = Some(revision.clone());
        memory.step = 0;
        memory.aborted = false;
        memory.step_started = None;
    }
    let step_started = *memory.step_started.get_or_insert(input.now);
    memory.step = memory.step.min(steps.len() - 1);
    if memory.complete_revision.as_deref() == Some(input.revision) {
        // Already complete (e.g. after a restart): every member carries it.
        memory.step = steps.len() - 1;
    }

    let mut counts = RolloutCounts {
        targeted: n,
        ..RolloutCounts::default()
    };
    let mut failed = Vec::new();
    let mut conflicting = Vec::new();
    let mut recheck: Option<Duration> = None;
    // Per member: (conflicting, carries the revision, done for the gate, failed).
    let mut state = Vec::with_capacity(n);
    for member in &members {
        let Some(child) = &member.child else {
            state.push(MemberState::default());
            continue;
        };
        if let Some(reason) = &child.conflicting {
            counts.conflicting += 1;
            conflicting.push(DeviceIssue {
                thing: member.thing.clone(),
                reason: reason.clone(),
            });
            state.push(MemberState {
                conflicting: true,
                ..MemberState::default()
            });
            continue;
        }
        let carries = child.revision == revision;
        let mut st = MemberState {
            carries,
            ..MemberState::default()
        };
        if carries {
            counts.updated += 1;
            if child.converged {
                counts.converged += 1;
                st.done = true;
            } else if let Some(reason) = &child.stalled {
                st.failed = Some(reason.clone());
            } else if !input.settings.wait_for_converged {
                st.done = true;
            } else if let Some(timeout) = input.settings.step_timeout {
                // A device counts from when it got the revision, or else from the start of
                // the step; a time in the future (clock skew) counts as now.
                let since = child.since.unwrap_or(step_started);
                let waited = (input.now - since).to_std().unwrap_or_default();
                if waited >= timeout {
                    st.failed = Some(format!(
                        "not converged {}s after it got revision {revision}",
                        timeout.as_secs()
                    ));
                } else {
                    let left = timeout - waited;
                    recheck = Some(recheck.map_or(left, |r: Duration| r.min(left)));
                }
            }
            if let Some(reason) = &st.failed {
                counts.failed += 1;
                failed.push(DeviceIssue {
                    thing: member.thing.clone(),
                    reason: reason.clone(),
                });
            }
        }
        state.push(st);
    }
    failed.truncate(MAX_LISTED);
    conflicting.truncate(MAX_LISTED);

    // A device that fails after its revision completed (a newcomer that stays silent)
    // is listed, but cannot abort a rollout that is over.
    let budget = input.settings.max_failures.allowed(n);
    let over = memory.complete_revision.as_deref() == Some(input.revision);
    if counts.failed > budget && !over {
        memory.aborted = true;
    }

    let stable = memory
        .complete_revision
        .clone()
        .filter(|complete| *complete != revision);
    let mut assign = Vec::new();
    let phase;
    if input.paused {
        phase = Phase::Paused;
    } else if memory.aborted {
        phase = Phase::Aborted;
        if input.settings.on_failure == OnFailure::Rollback {
            if let Some(stable) = &stable {
                for (member, st) in members.iter().zip(&state) {
                    if st.carries && !st.conflicting {
                        assign.push((member.thing.clone(), stable.clone()));
                    }
                }
            }
        }
    } else {
        // Advance through every step whose gate is passed.
        while memory.step + 1 < steps.len()
            && slice(&state, slice_size(steps[memory.step], n)).passed
        {
            memory.step += 1;
            memory.step_started = Some(input.now);
        }
        let current = slice(&state, slice_size(steps[memory.step], n));
        let complete = memory.step + 1 == steps.len() && current.passed;
        for (i, (member, st)) in members.iter().zip(&state).enumerate() {
            if st.conflicting || st.carries {
                continue;
            }
            // `joins` is in ascending order: a search, not a scan per member (a first
            // pass over 10,000 new members was 50 million comparisons).
            if current.joins.binary_search(&i).is_ok() {
                assign.push((member.thing.clone(), revision.clone()));
            } else if member.child.is_none() {
                // Outside the slice: a new member starts on the last complete revision.
                if let Some(stable) = &stable {
                    assign.push((member.thing.clone(), stable.clone()));
                }
            }
        }
        if complete {
            memory.complete_revision = Some(revision.clone());
            phase = Phase::Complete;
        } else {
            phase = Phase::Progressing;
        }
    }
    RolloutPlan {
        assign,
        phase,
        memory,
        counts,
        failed,
        conflicting,
        recheck_after: recheck,
    }
}

/// The slice of a step: the devices that carry the revision, wherever they are in the
/// order (members that joined may sort before them), topped up with the first others in
/// the order until `size` slots are taken. A conflicting device in the first `size`
/// positions takes its slot and passes. So never more than `size` devices carry the
/// revision, whoever joins.
struct Slice {
    /// Devices (by position, ascending) that get the revision now.
    joins: Vec<usize>,
    /// Every slot is taken and every device in it has converged or failed.
    passed: bool,
}

fn slice(state: &[MemberState], size: usize) -> Slice {
    let conflicting = state[..size.min(state.len())]
        .iter()
        .filter(|st| st.conflicting)
        .count();
    let carriers: Vec<&MemberState> = state
        .iter()
        .filter(|st| st.carries && !st.conflicting)
        .collect();
    let room = size.saturating_sub(conflicting + carriers.len());
    let joins: Vec<usize> = state
        .iter()
        .enumerate()
        .filter(|(_, st)| !st.carries && !st.conflicting)
        .map(|(i, _)| i)
        .take(room)
        .collect();
    let passed = joins.is_empty() && carriers.iter().all(|st| st.done || st.failed.is_some());
    Slice { joins, passed }
}

#[derive(Clone, Debug, Default)]
struct MemberState {
    conflicting: bool,
    carries: bool,
    /// Counts as done for the step gate (converged, or no convergence wait).
    done: bool,
    failed: Option<String>,
}

#[cfg(test)]
mod tests;
