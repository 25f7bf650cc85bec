//! One reconcile pass of one resource against a data plane.
//!
//! This is the thin I/O shell around the pure [`crate::planner`]: the pass itself (what
//! to call next, how to read each answer, what the status and events become) is the
//! state machine in [`crate::planner::pass`]; this module performs the calls it asks for
//! (read, write with the version read, re-read after a 409 with a backoff before it) and
//! hands the answers back with the wall-clock time. It never touches Kubernetes, so the
//! offline CLI (`apply`, `diff`) and the operator run exactly the same code.

mod retained;
mod shadow;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::backoff::{Backoff, Jitter};
use crate::dataplane::{DataPlane, DataPlaneError, ErrorKind, ShadowLimits};

pub use crate::planner::pass::retained::{PayloadInput, RetainedPlanned, RetainedSyncResult};
pub use crate::planner::pass::shadow::ShadowSyncResult;
pub(crate) use crate::planner::pass::truncate;
pub use crate::planner::pass::{SyncEvent, SyncOptions};
pub use crate::planner::shadow::show;

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

/// Reads that answer 404 become `None`.
pub(crate) fn found<T>(result: Result<T, DataPlaneError>) -> Result<Option<T>, DataPlaneError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.kind == ErrorKind::ResourceNotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// The current time as a status timestamp.
pub fn now() -> String {
    crate::planner::pass::rfc3339(Utc::now())
}
