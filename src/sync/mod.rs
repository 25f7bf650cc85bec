//! One reconcile pass of one resource against a data plane.
//!
//! This is the thin I/O shell around the pure [`crate::planner`]: read the cloud state,
//! plan, write with the version that was read, and on a 409 re-read and classify. It
//! returns the new status and the events to emit, and never touches Kubernetes, so the
//! offline CLI (`apply`, `diff`) and the operator run exactly the same code.

mod retained;
mod shadow;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::api::ConflictStatus;
use crate::backoff::{Backoff, Jitter};
use crate::dataplane::{DataPlane, DataPlaneError, ErrorKind, ShadowLimits};
use crate::planner::conditions::Health;

pub use retained::{PayloadInput, RetainedPlanned, RetainedSyncResult};
pub use shadow::{show, ShadowSyncResult};

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
    /// CamelCase, from a fixed set.
    pub reason: &'static str,
    pub message: String,
}

impl SyncEvent {
    fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            message: message.into(),
        }
    }

    fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// Runs passes against one data plane.
#[derive(Clone)]
pub struct Syncer {
    dataplane: Arc<dyn DataPlane>,
    limits: ShadowLimits,
    /// Attempts of one write before a pass gives up on a shadow that keeps moving.
    conflict_attempts: u32,
    /// Base of the exponential backoff between conflict retries.
    conflict_backoff: Duration,
}

impl Syncer {
    pub fn new(dataplane: Arc<dyn DataPlane>) -> Self {
        Self {
            dataplane,
            limits: ShadowLimits::default(),
            conflict_attempts: 5,
            conflict_backoff: Duration::from_millis(50),
        }
    }

    pub fn with_limits(mut self, limits: ShadowLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Bounds the write attempts of one pass under version conflicts (at least 1).
    pub fn with_conflict_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.conflict_attempts = attempts.max(1);
        self.conflict_backoff = backoff;
        self
    }

    pub fn dataplane(&self) -> &Arc<dyn DataPlane> {
        &self.dataplane
    }

    pub fn limits(&self) -> &ShadowLimits {
        &self.limits
    }

    /// Full-jitter exponential backoff before conflict retry `attempt` (1-based), so that
    /// a burst of device reports cannot make writers retry in lock step: the ceiling is
    /// `conflict_backoff × 2^min(attempt, 6)`, at most 2 s.
    async fn conflict_pause(&self, attempt: u32) {
        let backoff = Backoff::new(
            self.conflict_backoff.saturating_mul(2),
            self.conflict_backoff
                .saturating_mul(64)
                .min(Duration::from_secs(2)),
            Jitter::Full,
        );
        let pause = backoff.delay(attempt, &mut rand::rng());
        tokio::time::sleep(pause).await;
    }
}

/// Current time as RFC 3339 with second precision, the format Kubernetes uses.
pub(crate) fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Records one conflict in a status' conflict block.
pub(crate) fn record_conflict(
    conflicts: &mut Option<ConflictStatus>,
    reason: &str,
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

/// How a failed data-plane call shows in conditions (Ready=False in every case):
/// - retryable (throttling, 5xx, unreachable): Reconciling=True, retried with backoff;
/// - refused in a way no retry mends (access denied, 400, 413): Stalled=True;
/// - anything else: Ready=False alone.
pub(crate) fn failure(err: &DataPlaneError) -> (Health, Option<(bool, &'static str, String)>) {
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
    (health, Some((false, reason, message)))
}

/// Reads that answer 404 become `None`.
pub(crate) fn found<T>(result: Result<T, DataPlaneError>) -> Result<Option<T>, DataPlaneError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.kind == ErrorKind::ResourceNotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Cuts a message for a condition or event at a character boundary.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
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

/// The current time as a status timestamp.
pub fn now() -> String {
    rfc3339(Utc::now())
}
