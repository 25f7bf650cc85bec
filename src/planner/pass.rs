//! One reconcile pass of one resource, as a pure state machine.
//!
//! A pass reads the cloud, plans, writes once with the version it read, and on a 409
//! re-reads and classifies. Everything a pass decides lives here: which call comes
//! next, how an answer is classified, and what the status, conditions and events become.
//! The I/O loop in `crate::sync` only performs the call a step names and hands the
//! answer back, with the time it wants used:
//!
//! ```text
//! let mut pass = ShadowPass::new(..);
//! let mut step = pass.start();
//! loop {
//!     step = match step {
//!         ShadowStep::Read { pause } => {
//!             // wait `pause` first, if given (the backoff of that conflict attempt)
//!             pass.read(get_thing_shadow(), now)
//!         }
//!         ShadowStep::Write(body) => pass.wrote(update_thing_shadow(body)),
//!         ShadowStep::Done => return pass.finish(now),
//!     }
//! }
//! ```
//!
//! So the whole pass (not only the plan) runs without a data plane in tests, against a
//! model of the cloud: the property tests in `shadow_props` and `retained_props`.
//!
//! Invariants, for both kinds:
//! - no I/O and no clock: every timestamp comes from a `now` argument;
//! - the same answers and times give a byte-identical status and the same events;
//!   `lastSyncTime` moves only when the pass wrote or the status changed otherwise, so a
//!   refresh that finds nothing new leaves the status as it was;
//! - a call that failed shows in conditions by [`failure`], whatever the step.

pub mod retained;
pub mod shadow;

#[cfg(test)]
mod retained_props;
#[cfg(test)]
mod shadow_props;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::api::{Condition, ConflictStatus, RetainedMessageStatus, ThingShadowStatus};
use crate::dataplane::{DataPlaneError, ErrorKind};
use crate::planner::conditions::{set_conditions, ConditionState, Health, Reason};

/// How a pass runs.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// `metadata.generation` of the resource (None offline).
    pub generation: Option<i64>,
    /// Write even over an out-of-band edit under `conflictPolicy: Preserve`
    /// (a forced sync through the `reconcile-requested-at` annotation).
    pub force: bool,
    /// Plan only: read, but never write (`shadowsync diff`).
    pub dry_run: bool,
    /// The `reconcile-requested-at` annotation value being handled, echoed to status.
    pub reconcile_requested_at: Option<String>,
}

/// A Kubernetes-style event produced by a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncEvent {
    pub warning: bool,
    pub reason: Reason,
    pub message: String,
}

impl SyncEvent {
    pub fn normal(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            message: message.into(),
        }
    }

    pub fn warning(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// A `Synced` or `Converged` condition as a pass found it.
pub(crate) type Check = ConditionState;

/// How a pass ended, before it is turned into conditions. `synced` and `converged` are
/// `None` when the pass did not get far enough to evaluate them: the condition keeps
/// what an earlier pass found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub health: Health,
    pub synced: Option<Check>,
    pub converged: Option<Check>,
}

impl Verdict {
    pub fn new(health: Health, synced: Option<Check>) -> Self {
        Self {
            health,
            synced,
            converged: None,
        }
    }

    /// A failed data-plane call: see [`failure`].
    pub fn failed(err: &DataPlaneError) -> Self {
        let (health, synced) = failure(err);
        Self::new(health, synced)
    }
}

/// How a failed data-plane call shows in conditions (Ready=False in every case):
/// - retryable (throttling, 5xx, unreachable): Reconciling=True, retried with backoff;
/// - refused in a way no retry mends (access denied, 400, 413): Stalled=True;
/// - anything else: Ready=False alone.
///
/// Synced=False with the error's reason in every case.
pub fn failure(err: &DataPlaneError) -> (Health, Option<ConditionState>) {
    let reason = err.kind.reason();
    let message = truncate(err.to_string(), 512);
    let health = if err.kind.is_retryable() {
        Health::Progressing {
            reason,
            message: message.clone(),
        }
    } else if matches!(
        err.kind,
        ErrorKind::Unauthorized | ErrorKind::InvalidRequest | ErrorKind::RequestEntityTooLarge
    ) {
        Health::Stalled {
            reason,
            message: message.clone(),
        }
    } else {
        Health::Failed {
            reason,
            message: message.clone(),
        }
    };
    (health, Some(ConditionState::fails(reason, message)))
}

/// Records one conflict in a status' conflict block: the count goes up by one, the rest
/// describes this conflict.
pub fn record_conflict(
    conflicts: &mut Option<ConflictStatus>,
    reason: Reason,
    expected_version: Option<u64>,
    actual_version: Option<u64>,
    now: &str,
) {
    let entry = conflicts.get_or_insert_with(ConflictStatus::default);
    entry.count += 1;
    entry.last_time = Some(now.to_string());
    entry.last_reason = Some(reason.to_string());
    entry.expected_version = expected_version;
    entry.actual_version = actual_version;
}

/// Whether the conflict block already records an out-of-band edit seen at `actual`
/// (a shadow version, or a retained message's store time): a resource stalled by
/// `conflictPolicy: Preserve` counts one edit once, not on every refresh.
pub fn edit_already_counted(conflicts: Option<&ConflictStatus>, actual: Option<u64>) -> bool {
    conflicts.is_some_and(|c| {
        c.actual_version == actual
            && c.last_reason.as_deref() == Some(Reason::OutOfBandEdit.as_str())
    })
}

/// Cuts a message for a condition or event at a character boundary.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A time as RFC 3339 with second precision, the format Kubernetes uses.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The status fields every kind sets the same way at the start and the end of a pass.
pub(crate) trait PassStatus: Clone + PartialEq {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observed_generation_mut(&mut self) -> &mut Option<i64>;
    fn last_sync_time(&self) -> &Option<String>;
    fn last_sync_time_mut(&mut self) -> &mut Option<String>;
    fn last_handled_reconcile_at_mut(&mut self) -> &mut Option<String>;
}

macro_rules! pass_status {
    ($type:ty) => {
        impl PassStatus for $type {
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn observed_generation_mut(&mut self) -> &mut Option<i64> {
                &mut self.observed_generation
            }
            fn last_sync_time(&self) -> &Option<String> {
                &self.last_sync_time
            }
            fn last_sync_time_mut(&mut self) -> &mut Option<String> {
                &mut self.last_sync_time
            }
            fn last_handled_reconcile_at_mut(&mut self) -> &mut Option<String> {
                &mut self.last_handled_reconcile_at
            }
        }
    };
}

pass_status!(ThingShadowStatus);
pass_status!(RetainedMessageStatus);

/// The status a pass starts from: the prior one, with the annotation being handled.
pub(crate) fn begin<S: PassStatus>(prior: &S, opts: &SyncOptions) -> S {
    let mut status = prior.clone();
    if let Some(at) = &opts.reconcile_requested_at {
        *status.last_handled_reconcile_at_mut() = Some(at.clone());
    }
    status
}

/// Turns the verdict into conditions and settles `observedGeneration` and
/// `lastSyncTime`; returns Ready.
///
/// `lastSyncTime` moves only when something changed (a write, or any other field), so
/// that a refresh that finds everything in sync leaves the status byte-identical and the
/// caller writes no status.
pub(crate) fn conclude<S: PassStatus>(
    status: &mut S,
    prior: &S,
    opts: &SyncOptions,
    verdict: Verdict,
    writes: u32,
    now: DateTime<Utc>,
) -> bool {
    let now = rfc3339(now);
    *status.observed_generation_mut() = opts.generation;
    let ready = matches!(verdict.health, Health::Ready { .. });
    set_conditions(
        status.conditions_mut(),
        opts.generation,
        &now,
        &verdict.health,
        verdict.synced,
        verdict.converged,
    );
    *status.last_sync_time_mut() = prior.last_sync_time().clone();
    if writes > 0 || status != prior {
        *status.last_sync_time_mut() = Some(now);
    }
    ready
}
