//! Call counts by operation and outcome, as the server saw them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::faults::Operation;

/// Outcome label of a successful call.
pub const OK: &str = "ok";
/// Outcome label of a call whose connection was dropped by fault injection.
pub const DROPPED: &str = "Dropped";

/// `GET /_shadowsync/stats`.
///
/// `calls[operation][outcome]`, where the outcome is `ok`, an AWS error type
/// (`ConflictException`, `ThrottlingException`, ...) or `Dropped`. Injected faults are
/// counted as outcomes too (a call is a call, whatever the answer) and, in addition,
/// under `injected`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
    pub totals: Totals,
    pub injected: Injected,
    /// Requests to paths or methods that are no data-plane operation.
    pub unrouted: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Every data-plane call.
    pub calls: u64,
    /// Calls answered 200.
    pub ok: u64,
    /// Calls answered with an error or dropped.
    pub errors: u64,
}

/// Faults injected, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Injected {
    pub throttled: u64,
    /// 500 and 503 from `errorRate`.
    pub errors: u64,
    pub dropped: u64,
    /// Successful requests whose answer was dropped after the store applied them.
    #[serde(default)]
    pub dropped_after: u64,
    pub outage: u64,
    /// Requests that were given extra latency.
    pub delayed: u64,
}

impl StatsSnapshot {
    /// Calls of `op` with `outcome`.
    pub fn count(&self, op: Operation, outcome: &str) -> u64 {
        self.calls
            .get(op.name())
            .and_then(|by_outcome| by_outcome.get(outcome))
            .copied()
            .unwrap_or(0)
    }

    /// Calls of `op`, whatever the outcome.
    pub fn calls_of(&self, op: Operation) -> u64 {
        self.calls
            .get(op.name())
            .map(|by_outcome| by_outcome.values().sum())
            .unwrap_or(0)
    }
}

/// `GET /_shadowsync/stats/targets`: counts per thing and per topic.
///
/// Kept apart from [`StatsSnapshot`] because it grows with the number of things and
/// topics, while the totals stay small enough to poll often.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStats {
    /// Data-plane calls per thing name (shadow operations) or topic (Publish and
    /// GetRetainedMessage), whatever the outcome, injected faults included.
    pub calls: BTreeMap<String, u64>,
    /// Publishes the store applied, per topic: what subscribers received. A publish
    /// whose answer was dropped after it was applied (`dropAfterRate`) counts here.
    pub publishes: BTreeMap<String, u64>,
}

impl TargetStats {
    /// Calls on `target` (a thing name or a topic).
    pub fn calls_of(&self, target: &str) -> u64 {
        self.calls.get(target).copied().unwrap_or(0)
    }

    /// Publishes applied to `topic`.
    pub fn publishes_of(&self, topic: &str) -> u64 {
        self.publishes.get(topic).copied().unwrap_or(0)
    }
}

/// Which injected-fault counter a faulted call bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InjectedKind {
    Throttled,
    Error,
    Dropped,
    DroppedAfter,
    Outage,
}

#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<StatsSnapshot>,
    targets: Mutex<TargetStats>,
}

impl Stats {
    fn with<R>(&self, f: impl FnOnce(&mut StatsSnapshot) -> R) -> R {
        // A panic while holding the lock cannot leave the counters inconsistent
        // in a way that matters, so a poisoned lock is used as is.
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    pub(crate) fn record(&self, op: Operation, outcome: &str) {
        self.with(|s| {
            *s.calls
                .entry(op.name().to_string())
                .or_default()
                .entry(outcome.to_string())
                .or_default() += 1;
            s.totals.calls += 1;
            if outcome == OK {
                s.totals.ok += 1;
            } else {
                s.totals.errors += 1;
            }
        });
    }

    pub(crate) fn record_injected(&self, kind: InjectedKind) {
        self.with(|s| match kind {
            InjectedKind::Throttled => s.injected.throttled += 1,
            InjectedKind::Error => s.injected.errors += 1,
            InjectedKind::Dropped => s.injected.dropped += 1,
            InjectedKind::DroppedAfter => s.injected.dropped_after += 1,
            InjectedKind::Outage => s.injected.outage += 1,
        });
    }

    /// One call on `target` (thing or topic), whatever its outcome.
    pub(crate) fn record_target(&self, target: &str) {
        let mut targets = lock(&self.targets);
        *targets.calls.entry(target.to_string()).or_default() += 1;
    }

    /// One publish the store applied to `topic`.
    pub(crate) fn record_publish(&self, topic: &str) {
        let mut targets = lock(&self.targets);
        *targets.publishes.entry(topic.to_string()).or_default() += 1;
    }

    pub(crate) fn targets(&self) -> TargetStats {
        lock(&self.targets).clone()
    }

    pub(crate) fn record_delayed(&self) {
        self.with(|s| s.injected.delayed += 1);
    }

    pub(crate) fn record_unrouted(&self) {
        self.with(|s| s.unrouted += 1);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        self.with(|s| s.clone())
    }

    /// Clears the counters (per-target ones included) and returns the totals they had.
    pub(crate) fn take(&self) -> StatsSnapshot {
        let taken = self.with(std::mem::take);
        *lock(&self.targets) = TargetStats::default();
        taken
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters only: a poisoned lock is used as is (see `Stats::with`).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation_and_outcome() {
        let stats = Stats::default();
        stats.record(Operation::UpdateThingShadow, OK);
        stats.record(Operation::UpdateThingShadow, OK);
        stats.record(Operation::UpdateThingShadow, "ConflictException");
        stats.record(Operation::Publish, DROPPED);
        let s = stats.snapshot();
        assert_eq!(s.count(Operation::UpdateThingShadow, OK), 2);
        assert_eq!(
            s.count(Operation::UpdateThingShadow, "ConflictException"),
            1
        );
        assert_eq!(s.calls_of(Operation::UpdateThingShadow), 3);
        assert_eq!(s.calls_of(Operation::GetThingShadow), 0);
        assert_eq!(
            s.totals,
            Totals {
                calls: 4,
                ok: 2,
                errors: 2
            }
        );
        let taken = stats.take();
        assert_eq!(taken, s);
        assert_eq!(stats.snapshot(), StatsSnapshot::default());
    }

    #[test]
    fn per_target_counts() {
        let stats = Stats::default();
        stats.record_target("lamp");
        stats.record_target("lamp");
        stats.record_target("a/b");
        stats.record_publish("a/b");
        stats.record_injected(InjectedKind::DroppedAfter);
        let t = stats.targets();
        assert_eq!(t.calls_of("lamp"), 2);
        assert_eq!(t.calls_of("a/b"), 1);
        assert_eq!(t.calls_of("nope"), 0);
        assert_eq!(t.publishes_of("a/b"), 1);
        assert_eq!(t.publishes_of("lamp"), 0);
        assert_eq!(stats.snapshot().injected.dropped_after, 1);
        let v = serde_json::to_value(&t).expect("serializable");
        assert_eq!(v["calls"]["lamp"], 2);
        assert_eq!(v["publishes"]["a/b"], 1);
        stats.take();
        assert_eq!(stats.targets(), TargetStats::default());
    }

    #[test]
    fn json_shape() {
        let stats = Stats::default();
        stats.record(Operation::UpdateThingShadow, OK);
        stats.record_injected(InjectedKind::Throttled);
        let v = serde_json::to_value(stats.snapshot()).expect("serializable");
        assert_eq!(v["calls"]["UpdateThingShadow"]["ok"], 1);
        assert_eq!(v["totals"]["calls"], 1);
        assert_eq!(v["injected"]["throttled"], 1);
        assert_eq!(v["unrouted"], 0);
    }
}
