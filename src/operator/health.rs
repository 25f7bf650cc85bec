//! What `/readyz` and `/healthz` report.
//!
//! Ready: every controller's first list is cached (or this replica is a standby waiting
//! for the Lease), and it is not shutting down.
//!
//! Alive: no part of the operator has stopped making progress for longer than a bound
//! ([`Progress`]). A quiet cluster is not a stall: a watch that receives nothing is
//! healthy, and so is a controller with nothing to do. What counts:
//!
//! - a watch whose every attempt has failed for longer than the bound. The watcher
//!   retries with backoff (at most about a minute between attempts) and reports only
//!   failures and events, not a quiet reconnection: so a spell of failures ends with an
//!   event, or when no failure has come for [`SPELL_GAP`] (or the bound, if shorter);
//! - a reconcile that has been running for longer than the bound (every call it makes
//!   has a timeout, so one that does not return is stuck, and with it one of the
//!   controller's `--concurrency` slots);
//! - a controller loop that ended while the operator was not shutting down.
//!
//! The kubelet restarts a pod whose liveness probe fails: that is the remedy for a stuck
//! process, and the bound (`--progress-deadline-seconds`, five minutes by default) is
//! long enough that an apiserver restart or a data-plane outage does not trigger it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The default bound of [`Progress`].
pub const DEFAULT_STALL_BOUND: Duration = Duration::from_secs(300);

/// A watch failure more than this long after the previous one starts a new spell: the
/// watcher would have retried within it, and its silence means it reconnected.
pub const SPELL_GAP: Duration = Duration::from_secs(90);

/// Health as `/healthz` and `/readyz` report it.
pub struct Health {
    /// Controllers whose initial list is cached.
    pub(super) synced: AtomicUsize,
    /// Controllers expected to report.
    pub(super) expected: AtomicUsize,
    /// A standby replica is ready without caches (it is waiting for the lease).
    pub(super) standby: AtomicBool,
    pub(super) shutting_down: AtomicBool,
    pub progress: Progress,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(DEFAULT_STALL_BOUND)
    }
}

impl Health {
    /// Health whose liveness fails after `stall_bound` without progress.
    pub fn new(stall_bound: Duration) -> Self {
        Health {
            synced: AtomicUsize::new(0),
            expected: AtomicUsize::new(0),
            standby: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            progress: Progress::new(stall_bound),
        }
    }

    pub fn ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst)
            && (self.standby.load(Ordering::SeqCst)
                || (self.expected.load(Ordering::SeqCst) > 0
                    && self.synced.load(Ordering::SeqCst) >= self.expected.load(Ordering::SeqCst)))
    }

    /// `Err` names what stopped making progress.
    pub fn alive(&self) -> Result<(), String> {
        self.progress.check(Instant::now())
    }
}

/// Progress of the watches, the reconciles and the controller loops (see the module
/// documentation for what counts as a stall).
pub struct Progress {
    bound: Duration,
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per watched kind, while its attempts fail: the first and the last failure of the
    /// spell.
    failing_watches: HashMap<&'static str, (Instant, Instant)>,
    /// Reconciles running: (start, id) -> kind.
    running: BTreeMap<(Instant, u64), &'static str>,
    /// Controller loops that ended before shutdown.
    ended: Vec<&'static str>,
}

/// A reconcile in progress; dropping it (however the reconcile ends) records its end.
pub struct Running<'a> {
    progress: &'a Progress,
    key: (Instant, u64),
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.progress.state().running.remove(&self.key);
    }
}

impl Progress {
    pub fn new(bound: Duration) -> Self {
        Progress {
            bound,
            next_id: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The watch of `kind` got an answer (an event, a page, the end of a list).
    pub fn watch_answered(&self, kind: &'static str) {
        let mut state = self.state();
        if !state.failing_watches.is_empty() {
            state.failing_watches.remove(kind);
        }
    }

    /// An attempt of the watch of `kind` failed at `now`.
    pub fn watch_failed(&self, kind: &'static str, now: Instant) {
        let gap = self.gap();
        let mut state = self.state();
        let spell = state.failing_watches.entry(kind).or_insert((now, now));
        if now.saturating_duration_since(spell.1) > gap {
            *spell = (now, now);
        } else {
            spell.1 = now;
        }
    }

    fn gap(&self) -> Duration {
        SPELL_GAP.min(self.bound)
    }

    /// A reconcile of `kind` starts at `now`; it ends when the returned value is dropped.
    pub fn reconcile_started(&self, kind: &'static str, now: Instant) -> Running<'_> {
        let key = (now, self.next_id.fetch_add(1, Ordering::Relaxed));
        self.state().running.insert(key, kind);
        Running {
            progress: self,
            key,
        }
    }

    /// The controller loop of `kind` ended while the operator was not shutting down.
    pub fn loop_ended(&self, kind: &'static str) {
        self.state().ended.push(kind);
    }

    /// `Ok` when everything made progress within the bound at `now`; else what did not.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let state = self.state();
        let mut stalled = Vec::new();
        for kind in &state.ended {
            stalled.push(format!("the {kind} controller stopped"));
        }
        let mut failing: Vec<_> = state
            .failing_watches
            .iter()
            .filter(|(_, (since, last))| {
                now.saturating_duration_since(*since) > self.bound
                    && now.saturating_duration_since(*last) <= self.gap()
            })
            .map(|(kind, (since, _))| (kind, since))
            .collect();
        failing.sort();
        for (kind, since) in failing {
            stalled.push(format!(
                "the {kind} watch has failed for {}s",
                now.saturating_duration_since(*since).as_secs()
            ));
        }
        if let Some(((started, _), kind)) = state.running.first_key_value() {
            let took = now.saturating_duration_since(*started);
            if took > self.bound {
                stalled.push(format!(
                    "a {kind} reconcile has been running for {}s",
                    took.as_secs()
                ));
            }
        }
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "no progress for longer than {}s: {}",
                self.bound.as_secs(),
                stalled.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(60);

    #[test]
    fn a_quiet_operator_is_alive() {
        let progress = Progress::new(BOUND);
        let start = Instant::now();
        assert_eq!(progress.check(start + Duration::from_secs(3600)), Ok(()));
    }

    #[test]
    fn a_watch_failing_past_the_bound_is_a_stall_until_it_answers() {
        let progress = Progress::new(BOUND);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        progress.watch_failed("ThingShadow", start);
        // Later failures within the gap do not restart the spell.
        progress.watch_failed("ThingShadow", at(30));
        progress.watch_failed("ThingShadow", at(55));
        assert_eq!(progress.check(at(60)), Ok(()));
        let err = progress.check(at(61)).unwrap_err();
        assert!(
            err.contains("the ThingShadow watch has failed for 61s"),
            "{err}"
        );
        progress.watch_answered("RetainedMessage");
        assert!(progress.check(at(100)).is_err());
        // No failure for longer than the gap: the watcher reconnected quietly.
        assert_eq!(progress.check(at(116)), Ok(()));
        // An event ends the spell at once.
        progress.watch_failed("ThingShadow", at(200));
        progress.watch_failed("ThingShadow", at(250));
        progress.watch_failed("ThingShadow", at(300));
        assert!(progress.check(at(301)).is_err());
        progress.watch_answered("ThingShadow");
        assert_eq!(progress.check(at(301)), Ok(()));
        // A failure after a long quiet starts a new spell.
        progress.watch_failed("ThingShadow", at(400));
        progress.watch_failed("ThingShadow", at(500));
        assert_eq!(progress.check(at(501)), Ok(()));
    }

    #[test]
    fn a_reconcile_running_past_the_bound_is_a_stall_until_it_ends() {
        let progress = Progress::new(BOUND);
        let start = Instant::now();
        let slow = progress.reconcile_started("RetainedMessage", start);
        let quick = progress.reconcile_started("ThingShadow", start + BOUND);
        drop(quick);
        let err = progress
            .check(start + BOUND + Duration::from_secs(5))
            .unwrap_err();
        assert!(
            err.contains("a RetainedMessage reconcile has been running for 65s"),
            "{err}"
        );
        drop(slow);
        assert_eq!(progress.check(start + BOUND * 10), Ok(()));
    }

    #[test]
    fn an_ended_controller_loop_is_a_stall() {
        let progress = Progress::new(BOUND);
        progress.loop_ended("ThingShadow");
        let err = progress.check(Instant::now()).unwrap_err();
        assert!(err.contains("the ThingShadow controller stopped"), "{err}");
    }
}
