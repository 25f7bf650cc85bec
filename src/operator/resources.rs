//! What the operator remembers of each resource between passes, in one map keyed by uid:
//! its number in order of first sight (which fixes its refresh phase), its consecutive
//! failures (for the retry backoff) and the resourceVersion of our last write to it (to
//! tell a cache that is behind it). One entry per resource, under one lock: at 10,000
//! resources three maps of owned uids cost about 2 MB more.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};

/// Between failed passes of one resource: 2 s doubling to 5 minutes, and at least half
/// of that (equal jitter), so a failing resource really is slowed down.
const PASS_BACKOFF: Backoff = Backoff::new(
    Duration::from_secs(2),
    Duration::from_secs(300),
    Jitter::Equal,
);

#[derive(Default)]
pub struct Resources {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_uid: HashMap<Box<str>, Remembered>,
    next_number: u32,
}

#[derive(Default)]
struct Remembered {
    /// Order of first sight since start; `None` until the first pass marks it.
    number: Option<u32>,
    /// Consecutive failed passes.
    failures: u32,
    /// resourceVersion our last write produced.
    written: Option<u64>,
    /// Its last pass failed because the data plane did not answer: worth a pass as
    /// soon as it answers again, whatever its backoff.
    awaiting_data_plane: bool,
}

impl Remembered {
    fn is_empty(&self) -> bool {
        self.number.is_none()
            && self.failures == 0
            && self.written.is_none()
            && !self.awaiting_data_plane
    }
}

impl Resources {
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the entry of `uid` (created if missing), then drops it if it holds
    /// nothing any more.
    fn update<T>(&self, uid: &str, change: impl FnOnce(&mut Remembered, &mut u32) -> T) -> T {
        let mut state = self.state();
        let State {
            by_uid,
            next_number,
        } = &mut *state;
        let entry = match by_uid.get_mut(uid) {
            Some(entry) => entry,
            None => by_uid.entry(uid.into()).or_default(),
        };
        let out = change(entry, next_number);
        if entry.is_empty() {
            by_uid.remove(uid);
        }
        out
    }

    /// Whether a pass has marked this resource since the operator started (see
    /// [`Resources::first_sight`]); marks nothing.
    pub fn seen(&self, uid: &str) -> bool {
        self.state()
            .by_uid
            .get(uid)
            .is_some_and(|r| r.number.is_some())
    }

    /// True the first time a resource is seen since the operator started.
    pub fn first_sight(&self, uid: &str) -> bool {
        self.update(uid, |entry, next| {
            if entry.number.is_some() {
                return false;
            }
            entry.number = Some(*next);
            *next = next.wrapping_add(1);
            true
        })
    }

    /// Where in its refresh interval a resource refreshes, as a fraction in [0, 1).
    /// The n-th resource seen gets the fractional part of n times the golden ratio
    /// (a Weyl sequence): however many resources there are, consecutive ones land in
    /// the largest remaining gap, so reads are spread almost exactly evenly over the
    /// interval, without any resource knowing how many others there are. (Random or
    /// hashed phases give Poisson clumps: at 40 reads/s the busiest second of an
    /// interval sees about 1.5 times the mean.)
    pub fn refresh_phase(&self, uid: &str) -> f64 {
        const GOLDEN_FRACTION: f64 = 0.618_033_988_749_894_9;
        match self.state().by_uid.get(uid).and_then(|r| r.number) {
            Some(n) => (f64::from(n) * GOLDEN_FRACTION).fract(),
            // Not seen (cannot happen: a pass marks its resource first); any phase works.
            None => 0.0,
        }
    }

    /// The resource is gone: forget all of it.
    pub fn forget(&self, uid: &str) {
        self.state().by_uid.remove(uid);
    }

    /// Remembers the resourceVersion an own write produced.
    pub fn wrote(&self, uid: &str, version: u64) {
        self.update(uid, |entry, _| entry.written = Some(version));
    }

    /// True when the cached object is older than our last write to it.
    pub fn cache_is_behind(&self, uid: &str, cached: u64) -> bool {
        self.state()
            .by_uid
            .get(uid)
            .and_then(|r| r.written)
            .is_some_and(|ours| ours > cached)
    }

    pub fn reset_backoff(&self, uid: &str) {
        let mut state = self.state();
        if let Some(entry) = state.by_uid.get_mut(uid) {
            entry.failures = 0;
            entry.awaiting_data_plane = false;
            if entry.is_empty() {
                state.by_uid.remove(uid);
            }
        }
    }

    /// Exponential backoff per resource: 2 s doubling to 5 min, with jitter in
    /// [half, whole] of the ceiling. Bounds the data-plane calls of a failing resource
    /// (each pass makes at most a few calls, and the data-plane client retries within
    /// a pass on its own budget).
    pub fn next_backoff(&self, uid: &str) -> Duration {
        let count = self.update(uid, |entry, _| {
            entry.failures = entry.failures.saturating_add(1);
            entry.failures
        });
        PASS_BACKOFF.delay(count, &mut rand::rng())
    }

    /// The last pass failed for want of an answer from the data plane.
    pub fn await_data_plane(&self, uid: &str) {
        self.update(uid, |entry, _| entry.awaiting_data_plane = true);
    }

    /// True (once) if the resource waits for the data plane to answer again.
    pub fn take_awaiting(&self, uid: &str) -> bool {
        let mut state = self.state();
        state
            .by_uid
            .get_mut(uid)
            .is_some_and(|entry| std::mem::take(&mut entry.awaiting_data_plane))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().by_uid.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_numbered_in_order_of_first_sight() {
        let resources = Resources::default();
        assert!(resources.first_sight("a"));
        assert!(!resources.first_sight("a"));
        assert!(resources.first_sight("b"));
        assert_eq!(resources.refresh_phase("a"), 0.0);
        let b = resources.refresh_phase("b");
        assert!((b - 0.618_033_988).abs() < 1e-6, "{b}");
        resources.forget("a");
        assert!(
            resources.first_sight("a"),
            "seen anew after being forgotten"
        );
        let a = resources.refresh_phase("a");
        assert!((a - (2.0 * 0.618_033_988_f64).fract()).abs() < 1e-6, "{a}");
        assert_eq!(resources.refresh_phase("never"), 0.0);
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets() {
        let resources = Resources::default();
        let ceilings = [2, 4, 8, 16, 32, 64, 128, 256, 300, 300];
        for ceiling in ceilings {
            let delay = resources.next_backoff("a");
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} for {ceiling:?}"
            );
        }
        resources.reset_backoff("a");
        assert!(resources.next_backoff("a") <= Duration::from_secs(2));
    }

    #[test]
    fn a_cache_behind_our_write_is_told() {
        let resources = Resources::default();
        assert!(!resources.cache_is_behind("a", 5), "no write remembered");
        resources.wrote("a", 7);
        assert!(resources.cache_is_behind("a", 6));
        assert!(!resources.cache_is_behind("a", 7));
        assert!(!resources.cache_is_behind("a", 9));
        resources.forget("a");
        assert!(!resources.cache_is_behind("a", 6));
    }

    #[test]
    fn a_resource_waits_for_the_data_plane_until_taken_or_it_succeeds() {
        let resources = Resources::default();
        assert!(!resources.take_awaiting("a"));
        resources.await_data_plane("a");
        assert!(resources.take_awaiting("a"));
        assert!(!resources.take_awaiting("a"), "taken once");
        resources.await_data_plane("a");
        resources.reset_backoff("a");
        assert!(!resources.take_awaiting("a"), "a success clears it");
        assert_eq!(resources.len(), 0);
    }

    #[test]
    fn entries_with_nothing_to_remember_are_dropped() {
        let resources = Resources::default();
        resources.next_backoff("a");
        resources.reset_backoff("a");
        assert_eq!(resources.len(), 0);
        resources.first_sight("a");
        resources.wrote("a", 1);
        resources.next_backoff("a");
        resources.reset_backoff("a");
        assert_eq!(resources.len(), 1, "still numbered and written");
    }
}
