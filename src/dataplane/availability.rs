//! Tells when the data plane comes back after an outage, so that resources waiting out a
//! long retry backoff can try again at once instead of at the end of it.
//!
//! An outage is a spell of at least [`OUTAGE_MIN`] in which every attempt failed without
//! an answer (connection failures, timeouts, 500 and 503). It ends with the first attempt
//! that gets an answer (any answer but throttling: a 404 or a 409 is an answer). While
//! the data plane answers some calls, as under a partial error rate, there is no outage
//! and resources keep their own backoff; a 429 neither starts nor ends an outage, because
//! waking everyone into a throttled service would make it worse.
//!
//! Each recovery bumps a counter that subscribers watch ([`Availability::subscribe`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::resilient::{CallObserver, CallOutcome};
use super::ErrorKind;

/// The shortest spell of failures that counts as an outage.
pub const OUTAGE_MIN: Duration = Duration::from_secs(10);

/// What one attempt says of the data plane's availability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    /// It answered.
    Answered,
    /// No answer, or a server error.
    Failed,
    /// Throttled: it is there, but saturated.
    Neutral,
}

fn signal(outcome: CallOutcome) -> Signal {
    match outcome {
        CallOutcome::Failed(kind) if is_outage(kind) => Signal::Failed,
        CallOutcome::Failed(ErrorKind::Throttling) => Signal::Neutral,
        CallOutcome::Ok | CallOutcome::Failed(_) => Signal::Answered,
    }
}

/// The failures an outage produces: no answer, 500 and 503.
const OUTAGE_KINDS: [ErrorKind; 3] = [
    ErrorKind::Transport,
    ErrorKind::ServiceUnavailable,
    ErrorKind::InternalFailure,
];

fn is_outage(kind: ErrorKind) -> bool {
    OUTAGE_KINDS.contains(&kind)
}

/// True for a condition reason ([`ErrorKind::reason`], as a status carries it) that an
/// outage produces.
pub fn is_outage_reason(reason: &str) -> bool {
    OUTAGE_KINDS
        .iter()
        .any(|kind| kind.reason().as_str() == reason)
}

/// The pure state: when the current spell of failures began, if one is running.
#[derive(Debug, Default)]
struct Spell {
    failing_since: Option<Instant>,
}

impl Spell {
    /// Records one attempt; true if it ended an outage.
    fn record(&mut self, now: Instant, signal: Signal) -> bool {
        match signal {
            Signal::Neutral => false,
            Signal::Failed => {
                self.failing_since.get_or_insert(now);
                false
            }
            Signal::Answered => self
                .failing_since
                .take()
                .is_some_and(|since| now.saturating_duration_since(since) >= OUTAGE_MIN),
        }
    }
}

/// A [`CallObserver`] that detects recoveries and passes every call on to `inner`.
pub struct Availability {
    spell: Mutex<Spell>,
    recoveries: watch::Sender<u64>,
    inner: Option<Arc<dyn CallObserver>>,
}

impl Availability {
    pub fn new(inner: Option<Arc<dyn CallObserver>>) -> Self {
        Availability {
            spell: Mutex::default(),
            recoveries: watch::Sender::new(0),
            inner,
        }
    }

    /// Changes each time the data plane answers again after an outage.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.recoveries.subscribe()
    }
}

impl CallObserver for Availability {
    fn on_call(&self, operation: &'static str, outcome: CallOutcome, duration: Duration) {
        if let Some(inner) = &self.inner {
            inner.on_call(operation, outcome, duration);
        }
        let recovered = self
            .spell
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(Instant::now(), signal(outcome));
        if recovered {
            tracing::info!("the data plane answers again after an outage");
            self.recoveries.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn an_answer_after_a_long_spell_of_failures_is_a_recovery() {
        let t = Instant::now();
        let mut spell = Spell::default();
        assert!(!spell.record(at(t, 0), Signal::Failed));
        assert!(!spell.record(at(t, 5), Signal::Failed));
        assert!(
            !spell.record(at(t, 9), Signal::Neutral),
            "429 changes nothing"
        );
        assert!(spell.record(at(t, 12), Signal::Answered));
        assert!(!spell.record(at(t, 13), Signal::Answered), "once");
    }

    #[test]
    fn short_spells_and_partial_failure_are_no_outage() {
        let t = Instant::now();
        let mut spell = Spell::default();
        // Failures with answers in between: the spell restarts at every answer.
        for second in 0..60 {
            let signal = if second % 3 == 0 {
                Signal::Answered
            } else {
                Signal::Failed
            };
            assert!(!spell.record(at(t, second), signal), "second {second}");
        }
        assert!(!spell.record(at(t, 60), Signal::Answered));
        // A short spell.
        spell.record(at(t, 100), Signal::Failed);
        assert!(!spell.record(at(t, 109), Signal::Answered));
        // Throttling alone is not an outage, and does not end one either.
        spell.record(at(t, 200), Signal::Neutral);
        assert!(!spell.record(at(t, 230), Signal::Answered));
        spell.record(at(t, 300), Signal::Failed);
        assert!(!spell.record(at(t, 320), Signal::Neutral));
        assert!(spell.record(at(t, 321), Signal::Answered));
    }

    #[test]
    fn outcomes_are_classified_by_reason() {
        let failed = CallOutcome::Failed;
        assert_eq!(signal(CallOutcome::Ok), Signal::Answered);
        assert_eq!(signal(failed(ErrorKind::Transport)), Signal::Failed);
        assert_eq!(
            signal(failed(ErrorKind::ServiceUnavailable)),
            Signal::Failed
        );
        assert_eq!(signal(failed(ErrorKind::InternalFailure)), Signal::Failed);
        assert_eq!(signal(failed(ErrorKind::Throttling)), Signal::Neutral);
        assert_eq!(
            signal(failed(ErrorKind::ResourceNotFound)),
            Signal::Answered
        );
        assert_eq!(signal(failed(ErrorKind::Conflict)), Signal::Answered);
        assert!(!is_outage_reason("Throttled"));
        assert!(is_outage_reason("Unreachable"));
    }

    #[test]
    fn subscribers_see_each_recovery() {
        let availability = Availability::new(None);
        let mut recoveries = availability.subscribe();
        availability.on_call(
            "GetThingShadow",
            CallOutcome::Failed(ErrorKind::Transport),
            Duration::ZERO,
        );
        // Backdate the spell rather than wait out OUTAGE_MIN.
        availability.spell.lock().unwrap().failing_since = Instant::now().checked_sub(OUTAGE_MIN);
        assert!(!recoveries.has_changed().unwrap());
        availability.on_call("GetThingShadow", CallOutcome::Ok, Duration::ZERO);
        assert!(recoveries.has_changed().unwrap());
        assert_eq!(*recoveries.borrow_and_update(), 1);
    }
}
