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

/// Which injected-fault counter a faulted call bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InjectedKind {
    Throttled,
    Error,
    Dropped,
    Outage,
}

#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<StatsSnapshot>,
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
            InjectedKind::Outage => s.injected.outage += 1,
        });
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

    /// Clears the counters and returns what they were, atomically.
    pub(crate) fn take(&self) -> StatsSnapshot {
        self.with(std::mem::take)
    }
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
