//! kstatus conditions (the table in README.md, "Status").
//!
//! A status computed twice from the same facts must be byte-identical: a status patch
//! that changes nothing does not wake the controller again. So `lastTransitionTime`
//! moves only when a condition's status flips, and the order of conditions is fixed.

use crate::api::Condition;

/// The cloud matches the spec for this generation (always present).
pub const READY: &str = "Ready";
/// The last write or verification against the data plane succeeded.
pub const SYNCED: &str = "Synced";
/// ThingShadow only: the device reported every owned desired value.
pub const CONVERGED: &str = "Converged";
/// Present and True while work is in progress.
pub const RECONCILING: &str = "Reconciling";
/// Present and True when progress needs a human.
pub const STALLED: &str = "Stalled";

/// The order conditions are kept in; other types follow in their existing order.
const ORDER: [&str; 5] = [READY, SYNCED, CONVERGED, RECONCILING, STALLED];

/// Messages longer than this are cut (on a character boundary): an out-of-band report
/// can quote large values, and status objects should stay small.
pub const MAX_MESSAGE_BYTES: usize = 4096;

pub use crate::reason::Reason;

/// A Synced or Converged condition as one outcome sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    /// True or False.
    pub holds: bool,
    pub reason: Reason,
    pub message: String,
}

impl ConditionState {
    /// The condition is True.
    pub fn holds(reason: Reason, message: impl Into<String>) -> Self {
        ConditionState {
            holds: true,
            reason,
            message: message.into(),
        }
    }

    /// The condition is False.
    pub fn fails(reason: Reason, message: impl Into<String>) -> Self {
        ConditionState {
            holds: false,
            reason,
            message: message.into(),
        }
    }
}

/// The overall state of one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Ready=True.
    Ready { reason: Reason, message: String },
    /// Ready=False and Reconciling=True: work in progress.
    Progressing { reason: Reason, message: String },
    /// Ready=False with the error reason; retried, so neither Reconciling nor Stalled.
    Failed { reason: Reason, message: String },
    /// Ready=False and Stalled=True: needs a human.
    Stalled { reason: Reason, message: String },
}

impl Health {
    /// The reason word.
    pub fn reason(&self) -> Reason {
        match self {
            Health::Ready { reason, .. }
            | Health::Progressing { reason, .. }
            | Health::Failed { reason, .. }
            | Health::Stalled { reason, .. } => *reason,
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        match self {
            Health::Ready { message, .. }
            | Health::Progressing { message, .. }
            | Health::Failed { message, .. }
            | Health::Stalled { message, .. } => message,
        }
    }
}

/// A resource refused before any data-plane call (paused, a duplicate target, a
/// namespace that does not allow it, an object that does not match the schema, a target
/// changed under `apply`): the one place that says what its status becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
    /// Stalled=True (it needs a human); else Ready=False alone (it waits for a change
    /// that is expected, such as the end of a pause).
    pub stalled: bool,
    /// Synced=False with the same reason too: nothing of the spec can be synced.
    pub not_synced: bool,
    /// Worth an Event: the prior status does not carry this refusal yet.
    pub event: bool,
}

impl Refusal {
    /// The refusal's conditions, for `generation`. Other conditions (Synced and
    /// Converged from the last pass) stay as they were, unless `not_synced`.
    pub fn set_conditions(
        &self,
        conditions: &mut Vec<Condition>,
        generation: Option<i64>,
        now: &str,
    ) {
        let message = self.message.clone();
        let health = if self.stalled {
            Health::Stalled {
                reason: self.reason,
                message,
            }
        } else {
            Health::Failed {
                reason: self.reason,
                message,
            }
        };
        let synced = self
            .not_synced
            .then(|| ConditionState::fails(self.reason, self.message.clone()));
        set_conditions(conditions, generation, now, &health, synced, None);
    }
}

/// Sets the conditions for one reconcile outcome. `synced` and `converged` are left as
/// they were when `None` (not evaluated this time).
pub fn set_conditions(
    conditions: &mut Vec<Condition>,
    generation: Option<i64>,
    now: &str,
    health: &Health,
    synced: Option<ConditionState>,
    converged: Option<ConditionState>,
) {
    let ready = matches!(health, Health::Ready { .. });
    upsert_condition(
        conditions,
        READY,
        ready,
        health.reason().as_str(),
        health.message(),
        generation,
        now,
    );
    for (type_, state) in [(SYNCED, synced), (CONVERGED, converged)] {
        if let Some(state) = state {
            upsert_condition(
                conditions,
                type_,
                state.holds,
                state.reason.as_str(),
                &state.message,
                generation,
                now,
            );
        }
    }
    match health {
        Health::Progressing { reason, message } => upsert_condition(
            conditions,
            RECONCILING,
            true,
            reason.as_str(),
            message,
            generation,
            now,
        ),
        _ => remove_condition(conditions, RECONCILING),
    }
    match health {
        Health::Stalled { reason, message } => upsert_condition(
            conditions,
            STALLED,
            true,
            reason.as_str(),
            message,
            generation,
            now,
        ),
        _ => remove_condition(conditions, STALLED),
    }
}

/// Inserts or updates one condition. `lastTransitionTime` becomes `now` only when the
/// condition is new or its status flips; reason, message and `observedGeneration`
/// always take the given values. Keeps the fixed condition order.
pub fn upsert_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &str,
) {
    let status = if status { "True" } else { "False" };
    let message = truncate(message);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.status = status.to_string();
                existing.last_transition_time = now.to_string();
            }
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now.to_string(),
        }),
    }
    // A stable sort keeps unknown types in their existing relative order.
    conditions.sort_by_key(|c| rank(&c.type_));
}

/// Removes a condition (abnormal-true conditions are absent when not True).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of a type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn rank(type_: &str) -> usize {
    ORDER
        .iter()
        .position(|t| *t == type_)
        .unwrap_or(ORDER.len())
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    let ellipsis = "…";
    let mut end = MAX_MESSAGE_BYTES - ellipsis.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2024-05-01T10:00:00Z";
    const T2: &str = "2024-05-01T10:05:00Z";
    const T3: &str = "2024-05-01T10:10:00Z";

    fn ready() -> Health {
        Health::Ready {
            reason: Reason::InSync,
            message: "shadow version 42 matches the spec".into(),
        }
    }

    fn progressing() -> Health {
        Health::Progressing {
            reason: Reason::Writing,
            message: "writing 2 paths".into(),
        }
    }

    fn stalled() -> Health {
        Health::Stalled {
            reason: Reason::Conflict,
            message: "/power: cloud \"off\", spec \"on\"".into(),
        }
    }

    fn failed() -> Health {
        Health::Failed {
            reason: Reason::Throttled,
            message: "ThrottlingException: rate exceeded".into(),
        }
    }

    fn types(conditions: &[Condition]) -> Vec<&str> {
        conditions.iter().map(|c| c.type_.as_str()).collect()
    }

    fn get<'a>(conditions: &'a [Condition], t: &str) -> &'a Condition {
        find_condition(conditions, t).unwrap_or_else(|| panic!("no {t} condition"))
    }

    fn synced(ok: bool) -> Option<ConditionState> {
        Some(ConditionState {
            holds: ok,
            reason: Reason::Succeeded,
            message: String::new(),
        })
    }

    #[test]
    fn ready_is_always_present_and_true_only_when_ready() {
        for (health, want) in [
            (ready(), "True"),
            (progressing(), "False"),
            (failed(), "False"),
            (stalled(), "False"),
        ] {
            let mut c = Vec::new();
            set_conditions(&mut c, Some(1), T1, &health, None, None);
            let r = get(&c, READY);
            assert_eq!(r.status, want, "{health:?}");
            assert_eq!(r.reason, health.reason());
            assert_eq!(r.message, health.message());
            assert_eq!(r.observed_generation, Some(1));
            assert_eq!(r.last_transition_time, T1);
        }
    }

    #[test]
    fn reconciling_and_stalled_are_present_only_while_true() {
        let mut c = Vec::new();
        set_conditions(&mut c, Some(1), T1, &progressing(), None, None);
        assert_eq!(types(&c), vec![READY, RECONCILING]);
        assert_eq!(get(&c, RECONCILING).status, "True");
        assert_eq!(get(&c, RECONCILING).reason, Reason::Writing);

        set_conditions(&mut c, Some(1), T2, &stalled(), None, None);
        assert_eq!(types(&c), vec![READY, STALLED]);
        assert_eq!(get(&c, STALLED).status, "True");
        assert_eq!(get(&c, STALLED).reason, Reason::Conflict);
        assert!(get(&c, READY).message.contains("/power"));

        set_conditions(&mut c, Some(2), T3, &ready(), None, None);
        assert_eq!(types(&c), vec![READY]);
    }

    #[test]
    fn failed_is_not_ready_and_neither_stalled_nor_reconciling() {
        let mut c = Vec::new();
        set_conditions(&mut c, Some(1), T1, &stalled(), None, None);
        set_conditions(&mut c, Some(1), T2, &failed(), synced(false), None);
        assert_eq!(types(&c), vec![READY, SYNCED]);
        assert_eq!(get(&c, READY).status, "False");
        assert_eq!(get(&c, READY).reason, "Throttled");
        assert_eq!(get(&c, SYNCED).status, "False");
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut c = Vec::new();
        set_conditions(&mut c, Some(1), T1, &progressing(), synced(true), None);
        assert_eq!(get(&c, READY).last_transition_time, T1);
        // Still not ready, for a different reason: no transition.
        set_conditions(&mut c, Some(1), T2, &failed(), synced(true), None);
        assert_eq!(get(&c, READY).last_transition_time, T1);
        assert_eq!(get(&c, READY).reason, "Throttled");
        assert_eq!(get(&c, SYNCED).last_transition_time, T1);
        // Now ready: transition.
        set_conditions(&mut c, Some(2), T3, &ready(), synced(true), None);
        assert_eq!(get(&c, READY).last_transition_time, T3);
        assert_eq!(get(&c, READY).observed_generation, Some(2));
        assert_eq!(get(&c, SYNCED).last_transition_time, T1);
        assert_eq!(get(&c, SYNCED).observed_generation, Some(2));
    }

    #[test]
    fn same_facts_give_byte_identical_conditions() {
        let converged = || {
            Some(ConditionState::fails(
                Reason::AwaitingDevice,
                "/power not reported",
            ))
        };
        let mut first = Vec::new();
        set_conditions(
            &mut first,
            Some(3),
            T1,
            &stalled(),
            synced(true),
            converged(),
        );
        let mut second = first.clone();
        set_conditions(
            &mut second,
            Some(3),
            T2,
            &stalled(),
            synced(true),
            converged(),
        );
        assert_eq!(
            serde_json::to_string(&first).expect("serializable"),
            serde_json::to_string(&second).expect("serializable")
        );
    }

    #[test]
    fn synced_and_converged_are_kept_when_not_given() {
        let mut c = Vec::new();
        let converged = Some(ConditionState::holds(Reason::DeviceConverged, ""));
        set_conditions(&mut c, Some(1), T1, &ready(), synced(true), converged);
        let before_synced = get(&c, SYNCED).clone();
        let before_converged = get(&c, CONVERGED).clone();
        set_conditions(&mut c, Some(2), T2, &progressing(), None, None);
        assert_eq!(get(&c, SYNCED), &before_synced);
        assert_eq!(get(&c, CONVERGED), &before_converged);
        assert_eq!(get(&c, READY).observed_generation, Some(2));
    }

    #[test]
    fn order_is_fixed_and_foreign_conditions_are_kept_after_ours() {
        let mut c = vec![Condition {
            type_: "Custom".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: T1.into(),
        }];
        upsert_condition(
            &mut c,
            STALLED,
            true,
            Reason::InvalidSpec.as_str(),
            "bad",
            Some(1),
            T1,
        );
        upsert_condition(
            &mut c,
            CONVERGED,
            false,
            Reason::AwaitingDevice.as_str(),
            "",
            Some(1),
            T1,
        );
        set_conditions(&mut c, Some(1), T2, &progressing(), synced(true), None);
        assert_eq!(
            types(&c),
            vec![READY, SYNCED, CONVERGED, RECONCILING, "Custom"]
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let mut c = Vec::new();
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        upsert_condition(
            &mut c,
            READY,
            false,
            Reason::Conflict.as_str(),
            &long,
            None,
            T1,
        );
        let m = &get(&c, READY).message;
        assert!(m.len() <= MAX_MESSAGE_BYTES);
        assert!(m.ends_with('…'));
        assert!(m.len() > MAX_MESSAGE_BYTES - 8);
        assert_eq!(get(&c, READY).observed_generation, None);
    }
}
