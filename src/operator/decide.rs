//! The decision of one reconcile, from the facts gathered about the resource: pure (no
//! I/O, no clock), so that every path a reconcile can take is a row of the table test
//! below. `controller` gathers the facts, calls [`decide`], carries the decision out and
//! records the outcome (`controller::record`); [`next_after_pass`] decides when to look
//! again after a sync pass.

use std::time::Duration;

use crate::api::{Condition, PAUSED_ANNOTATION};
use crate::planner::conditions::{Reason, Refusal, STALLED};
use crate::planner::tenancy::NOT_ALLOWED;

/// Requeue of a resource that another resource already owns the target of.
pub const DUPLICATE_RECHECK: Duration = Duration::from_secs(10);

/// What a reconcile knows before it decides.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Our finalizer is on the object.
    pub has_finalizer: bool,
    /// `iot.shadowsync.dev/paused: "true"`.
    pub paused: bool,
    /// `managementPolicy: Observe` (never writes, so needs no finalizer).
    pub observe: bool,
    /// Why the namespace does not allow the target, if it does not.
    pub not_allowed: Option<&'a str>,
    /// Why another, older resource owns the target, if one does (the duplicate-target
    /// message).
    pub duplicate: Option<&'a str>,
    /// The `reconcile-requested-at` value not handled yet, if any.
    pub requested: Option<&'a str>,
    /// The prior status is Ready=True for this generation.
    pub current: bool,
    /// The operator has not seen this resource since it started.
    pub first_sight: bool,
    /// The sentence naming the target, for messages.
    pub target: &'a str,
    /// The prior status' conditions: a refusal already recorded there is not announced
    /// again.
    pub prior: &'a [Condition],
}

/// What a reconcile does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing until the object changes (being deleted without our finalizer, or paused
    /// while being deleted: cleanup is a data-plane write too).
    Wait,
    /// Being deleted: clean up as `cleanup` says, then remove the finalizer (if there)
    /// and forget the resource.
    Release(Cleanup),
    /// No data-plane call; the status (and an Event, when new) say why.
    Refuse {
        refusal: Refusal,
        finalizer: FinalizerChange,
        /// Look again after this long even without a change.
        recheck: Option<Duration>,
    },
    /// In sync for its generation and seen for the first time since start: wait for its
    /// refresh slot instead of reading at once, so that a restart reads nothing at once.
    Defer { finalizer: FinalizerChange },
    /// One sync pass, forced over a Preserve conflict when `requested` is set (the
    /// `reconcile-requested-at` value, echoed to status).
    Sync {
        finalizer: FinalizerChange,
        requested: Option<String>,
    },
}

/// The deletion cleanup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// By `deletionPolicy`.
    Run,
    /// Nothing to clean up (`Observe` never wrote) or nothing to release.
    Nothing,
    /// The namespace does not allow the target: the data plane is not touched, and a
    /// Warning Event (this message) says so.
    Skipped(String),
}

/// Our finalizer, before anything else is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerChange {
    Keep,
    Add,
    Remove,
}

/// The reason of the Event that says a cleanup was skipped.
pub const CLEANUP_SKIPPED: Reason = Reason::CleanupSkipped;

/// Decides one reconcile. In order: the namespace allowance (nothing reaches the data
/// plane before it, not even a read), deletion, pause, duplicate target, then a pass.
pub fn decide(facts: &Facts<'_>) -> Decision {
    if let Some(why) = facts.not_allowed {
        if facts.deleting {
            return Decision::Release(if facts.has_finalizer {
                Cleanup::Skipped(format!(
                    "{}: the deletionPolicy cleanup was skipped and the data plane was not \
                     touched: {why}",
                    facts.target
                ))
            } else {
                Cleanup::Nothing
            });
        }
        return Decision::Refuse {
            refusal: refusal(facts.prior, NOT_ALLOWED, why.to_string(), true, true),
            // A refused resource is left as it is: it may be allowed again.
            finalizer: FinalizerChange::Keep,
            // A namespace change requeues it (`Tenancy::requeues`), as does a spec change.
            recheck: None,
        };
    }
    if facts.deleting {
        if !facts.has_finalizer || facts.paused {
            return Decision::Wait;
        }
        return Decision::Release(if facts.observe {
            Cleanup::Nothing
        } else {
            Cleanup::Run
        });
    }
    // Observe never writes, so there is nothing to clean up on deletion: its finalizer
    // goes, whatever else happens.
    let drop_finalizer = facts.observe && facts.has_finalizer;
    let keep_or_drop = if drop_finalizer {
        FinalizerChange::Remove
    } else {
        FinalizerChange::Keep
    };
    if facts.paused {
        return Decision::Refuse {
            refusal: Refusal {
                reason: Reason::Paused,
                message: format!(
                    "reconciliation is paused by the annotation {PAUSED_ANNOTATION}=\"true\""
                ),
                stalled: false,
                not_synced: false,
                event: false,
            },
            finalizer: keep_or_drop,
            recheck: None,
        };
    }
    if let Some(why) = facts.duplicate {
        return Decision::Refuse {
            refusal: refusal(
                facts.prior,
                Reason::DuplicateTarget,
                why.to_string(),
                true,
                false,
            ),
            finalizer: keep_or_drop,
            recheck: Some(DUPLICATE_RECHECK),
        };
    }
    let finalizer = if drop_finalizer {
        FinalizerChange::Remove
    } else if !facts.observe && !facts.has_finalizer {
        FinalizerChange::Add
    } else {
        FinalizerChange::Keep
    };
    if facts.current && facts.requested.is_none() && facts.first_sight {
        return Decision::Defer { finalizer };
    }
    Decision::Sync {
        finalizer,
        requested: facts.requested.map(str::to_string),
    }
}

/// A Stalled refusal, announced by an Event unless the prior status already carries
/// it: with the same message when `same_message` (a different message is news), else
/// with any message.
fn refusal(
    prior: &[Condition],
    reason: Reason,
    message: String,
    stalled: bool,
    same_message: bool,
) -> Refusal {
    let recorded = prior.iter().any(|c| {
        c.type_ == STALLED && c.reason == reason && (!same_message || c.message == message)
    });
    Refusal {
        reason,
        message,
        stalled,
        not_synced: false,
        event: !recorded,
    }
}

/// When to look at a resource again after a sync pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// At its next refresh slot (if it has a refresh interval), else on the next change;
    /// `wrote`: the pass wrote, so the next read waits at least 0.9 interval.
    Refresh { wrote: bool },
    /// After the resource's backoff; `awaiting_data_plane`: the pass failed for want of
    /// an answer, so the data plane answering again wakes it early.
    Backoff { awaiting_data_plane: bool },
}

/// Ready, or Stalled (needs a human: invalid spec, Preserve conflict, access denied),
/// looks again at the refresh period; anything else is retried with backoff.
pub fn next_after_pass(ready: bool, stalled: bool, unanswered: bool, wrote: bool) -> Next {
    if ready || stalled {
        Next::Refresh { wrote }
    } else {
        Next::Backoff {
            awaiting_data_plane: unanswered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stalled(reason: &str, message: &str) -> Condition {
        Condition {
            type_: STALLED.into(),
            status: "True".into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: "2026-12-07T10:00:00Z".into(),
        }
    }

    fn facts<'a>() -> Facts<'a> {
        Facts {
            deleting: false,
            has_finalizer: true,
            paused: false,
            observe: false,
            not_allowed: None,
            duplicate: None,
            requested: None,
            current: false,
            first_sight: false,
            target: "the classic shadow of thing lamp",
            prior: &[],
        }
    }

    fn refuse(reason: Reason, message: &str, stalled: bool, event: bool) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
            stalled,
            not_synced: false,
            event,
        }
    }

    const PAUSED_MESSAGE: &str =
        "reconciliation is paused by the annotation iot.shadowsync.dev/paused=\"true\"";

    #[test]
    fn every_path_of_a_reconcile() {
        use Decision::*;
        use FinalizerChange::*;
        let not_allowed = [stalled(NOT_ALLOWED.as_str(), "no")];
        let duplicate = [stalled("DuplicateTarget", "older")];
        let sync = |finalizer| Sync {
            finalizer,
            requested: None,
        };
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, Box<dyn Fn(&mut Facts<'static>)>, Decision)> = vec![
            ("a plain pass", Box::new(|_| {}), sync(Keep)),
            (
                "the first pass adds the finalizer",
                Box::new(|f| f.has_finalizer = false),
                sync(Add),
            ),
            (
                "Observe needs no finalizer",
                Box::new(|f| f.observe = true),
                sync(Remove),
            ),
            (
                "Observe without one",
                Box::new(|f| {
                    f.observe = true;
                    f.has_finalizer = false
                }),
                sync(Keep),
            ),
            (
                "requested passes are forced",
                Box::new(|f| f.requested = Some("now")),
                Sync {
                    finalizer: Keep,
                    requested: Some("now".into()),
                },
            ),
            (
                "in sync, seen first after a restart: wait for the slot",
                Box::new(|f| {
                    f.current = true;
                    f.first_sight = true
                }),
                Defer { finalizer: Keep },
            ),
            (
                "in sync but requested: no deferral",
                Box::new(|f| {
                    f.current = true;
                    f.first_sight = true;
                    f.requested = Some("now")
                }),
                Sync {
                    finalizer: Keep,
                    requested: Some("now".into()),
                },
            ),
            (
                "in sync, seen before: a pass",
                Box::new(|f| f.current = true),
                sync(Keep),
            ),
            (
                "not in sync, first sight: a pass",
                Box::new(|f| f.first_sight = true),
                sync(Keep),
            ),
            (
                "not allowed: refused, finalizer kept, announced",
                Box::new(|f| f.not_allowed = Some("no")),
                Refuse {
                    refusal: refuse(NOT_ALLOWED, "no", true, true),
                    finalizer: Keep,
                    recheck: None,
                },
            ),
            (
                "not allowed comes before pause and deletion",
                Box::new(|f| {
                    f.not_allowed = Some("no");
                    f.paused = true;
                    f.observe = true
                }),
                Refuse {
                    refusal: refuse(NOT_ALLOWED, "no", true, true),
                    finalizer: Keep,
                    recheck: None,
                },
            ),
            (
                "not allowed while deleted: cleanup skipped",
                Box::new(|f| {
                    f.not_allowed = Some("no");
                    f.deleting = true
                }),
                Release(Cleanup::Skipped(
                    "the classic shadow of thing lamp: the deletionPolicy cleanup was \
                     skipped and the data plane was not touched: no"
                        .into(),
                )),
            ),
            (
                "not allowed while deleted, no finalizer: nothing to say",
                Box::new(|f| {
                    f.not_allowed = Some("no");
                    f.deleting = true;
                    f.has_finalizer = false
                }),
                Release(Cleanup::Nothing),
            ),
            (
                "deleted: cleanup",
                Box::new(|f| f.deleting = true),
                Release(Cleanup::Run),
            ),
            (
                "deleted, Observe: no cleanup",
                Box::new(|f| {
                    f.deleting = true;
                    f.observe = true
                }),
                Release(Cleanup::Nothing),
            ),
            (
                "deleted while paused: waits",
                Box::new(|f| {
                    f.deleting = true;
                    f.paused = true
                }),
                Wait,
            ),
            (
                "deleted without our finalizer: nothing",
                Box::new(|f| {
                    f.deleting = true;
                    f.has_finalizer = false
                }),
                Wait,
            ),
            (
                "deleted comes before the duplicate check",
                Box::new(|f| {
                    f.deleting = true;
                    f.duplicate = Some("older")
                }),
                Release(Cleanup::Run),
            ),
            (
                "paused: Ready=False, no Event",
                Box::new(|f| f.paused = true),
                Refuse {
                    refusal: refuse(Reason::Paused, PAUSED_MESSAGE, false, false),
                    finalizer: Keep,
                    recheck: None,
                },
            ),
            (
                "paused Observe still drops its finalizer",
                Box::new(|f| {
                    f.paused = true;
                    f.observe = true
                }),
                Refuse {
                    refusal: refuse(Reason::Paused, PAUSED_MESSAGE, false, false),
                    finalizer: Remove,
                    recheck: None,
                },
            ),
            (
                "paused comes before the duplicate check",
                Box::new(|f| {
                    f.paused = true;
                    f.duplicate = Some("older")
                }),
                Refuse {
                    refusal: refuse(Reason::Paused, PAUSED_MESSAGE, false, false),
                    finalizer: Keep,
                    recheck: None,
                },
            ),
            (
                "duplicate: Stalled, announced, looked at again",
                Box::new(|f| f.duplicate = Some("older")),
                Refuse {
                    refusal: refuse(Reason::DuplicateTarget, "older", true, true),
                    finalizer: Keep,
                    recheck: Some(DUPLICATE_RECHECK),
                },
            ),
            (
                "duplicate without a finalizer gets none",
                Box::new(|f| {
                    f.duplicate = Some("older");
                    f.has_finalizer = false
                }),
                Refuse {
                    refusal: refuse(Reason::DuplicateTarget, "older", true, true),
                    finalizer: Keep,
                    recheck: Some(DUPLICATE_RECHECK),
                },
            ),
        ];
        for (name, change, expected) in table {
            let mut f = facts();
            change(&mut f);
            assert_eq!(decide(&f), expected, "{name}");
        }
        // Announced once: a refusal already in the prior status is not news.
        let mut f = facts();
        f.not_allowed = Some("no");
        f.prior = &not_allowed;
        assert!(matches!(decide(&f), Refuse { refusal, .. } if !refusal.event));
        f.not_allowed = Some("another reason");
        assert!(matches!(decide(&f), Refuse { refusal, .. } if refusal.event));
        // The duplicate refusal is news once, whichever resource owns the target.
        let mut f = facts();
        f.duplicate = Some("older");
        f.prior = &duplicate;
        assert!(matches!(decide(&f), Refuse { refusal, .. } if !refusal.event));
        f.duplicate = Some("another owner");
        assert!(matches!(decide(&f), Refuse { refusal, .. } if !refusal.event));
    }

    #[test]
    fn after_a_pass_ready_and_stalled_wait_for_the_refresh_the_rest_backs_off() {
        assert_eq!(
            next_after_pass(true, false, false, true),
            Next::Refresh { wrote: true }
        );
        assert_eq!(
            next_after_pass(false, true, true, false),
            Next::Refresh { wrote: false }
        );
        assert_eq!(
            next_after_pass(false, false, true, false),
            Next::Backoff {
                awaiting_data_plane: true
            }
        );
        assert_eq!(
            next_after_pass(false, false, false, true),
            Next::Backoff {
                awaiting_data_plane: false
            }
        );
    }
}
