//! The client-side rate limiter and retry policy every data-plane caller goes through.
//!
//! [`Resilient`] wraps any [`DataPlane`]. Each attempt of each call:
//! 1. takes one of the per-thing in-flight slots (shadow operations only; AWS answers
//!    429 beyond 10 in flight per thing);
//! 2. waits for the per-thing rate (shadow operations only; AWS allows 20 requests per
//!    second per thing across all shadow APIs) and then for the account-wide rate;
//! 3. calls the wrapped data plane and reports the outcome to the [`CallObserver`].
//!
//! Retryable failures ([`ErrorKind::is_retryable`]: throttling, 5xx, transport) are
//! retried with exponential backoff and full jitter, up to a bounded number of attempts.
//! A 409 and every other 4xx go back to the caller at once: the reconciler decides what
//! a conflict means. Retries pass through the limiter again, as AWS counts them too.
//!
//! One exception: a Publish that failed in transport (the connection dropped, a timeout)
//! may have been applied with its answer lost, and a second Publish would reach every
//! subscriber twice. It goes back to the caller, which reads the retained message to
//! learn what happened (see [`crate::sync`]). Shadow updates need no such care: the
//! reconciler's carry the version they read, so a repeat of an applied one gets 409.
//!
//! The limiter uses tokio's clock, so tests run it in virtual time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{
    DataPlane, DataPlaneError, ErrorKind, NamedShadowPage, PublishRequest, RetainedMessageData,
    RetainedMessagePage, ShadowDeleted, ShadowDocument,
};
use crate::backoff::{Backoff, Jitter};

/// The operation names passed to [`CallObserver::on_call`] (AWS's names).
pub const OPERATIONS: [&str; 7] = [
    GET_THING_SHADOW,
    UPDATE_THING_SHADOW,
    DELETE_THING_SHADOW,
    LIST_NAMED_SHADOWS,
    PUBLISH,
    GET_RETAINED_MESSAGE,
    LIST_RETAINED_MESSAGES,
];
const GET_THING_SHADOW: &str = "GetThingShadow";
const UPDATE_THING_SHADOW: &str = "UpdateThingShadow";
const DELETE_THING_SHADOW: &str = "DeleteThingShadow";
const LIST_NAMED_SHADOWS: &str = "ListNamedShadowsForThing";
const PUBLISH: &str = "Publish";
const GET_RETAINED_MESSAGE: &str = "GetRetainedMessage";
const LIST_RETAINED_MESSAGES: &str = "ListRetainedMessages";

/// The label of a successful call ([`CallOutcome::label`]).
pub const OUTCOME_OK: &str = "ok";

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    Ok,
    Failed(ErrorKind),
}

impl CallOutcome {
    /// The metric label: [`OUTCOME_OK`], or the failure's
    /// [`ErrorKind::reason`](super::ErrorKind::reason).
    pub fn label(self) -> &'static str {
        match self {
            CallOutcome::Ok => OUTCOME_OK,
            CallOutcome::Failed(kind) => kind.reason().as_str(),
        }
    }
}

/// Sees every attempt that reached the wrapped data plane (retries included), e.g. to
/// count calls by operation and outcome in metrics.
pub trait CallObserver: Send + Sync {
    /// `operation` is one of [`OPERATIONS`]; `duration` is the attempt alone, without
    /// time spent waiting in the limiter or in backoff.
    fn on_call(&self, operation: &'static str, outcome: CallOutcome, duration: Duration);
}

/// A request rate: `per_second` on average, up to `burst` at once after a quiet spell.
///
/// Over any window of `t` seconds at most `burst + per_second * t` requests start.
/// Zeros are read as 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// Rate limits and retry policy of a [`Resilient`] data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResiliencePolicy {
    /// Attempts per call, the first included (so 1 = never retry). Zero is read as 1.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; it doubles for each further retry.
    pub base_delay: Duration,
    /// Upper bound of the backoff ceiling.
    pub max_delay: Duration,
    /// Account-wide limit over all operations (`--max-rps`); `None` = unlimited.
    pub account_rate: Option<RateLimit>,
    /// Per thing, over the shadow operations; `None` = unlimited.
    pub thing_rate: Option<RateLimit>,
    /// Shadow calls in flight per thing; `None` = unlimited. Zero is read as 1.
    pub thing_in_flight: Option<usize>,
}

impl Default for ResiliencePolicy {
    /// - 5 attempts, backoff ceilings 100 ms, 200 ms, 400 ms, 800 ms (max 5 s): a call
    ///   that keeps failing gives up after at most 1.5 s of backoff;
    /// - 100 requests/s account-wide with a burst of 100: a quarter of the lowest regional
    ///   shadow quota (400/s, AWS IoT Core's service quotas), leaving room for devices and other tools
    ///   sharing the account; raise it with `--max-rps` where the quota is 4,000/s;
    /// - per thing 20 requests/s and 10 in flight: AWS's limits. The burst is 2 so that a
    ///   pass's read and write go out back to back: with evenly spaced calls (burst 1) a
    ///   device reporting more often than every 50 ms moved the version between every
    ///   read and write, and the writer never landed.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            account_rate: Some(RateLimit::new(100, 100)),
            thing_rate: Some(RateLimit::new(20, 2)),
            thing_in_flight: Some(10),
        }
    }
}

impl ResiliencePolicy {
    /// No limits and a single attempt: the wrapper only observes.
    pub fn passthrough() -> Self {
        Self {
            max_attempts: 1,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            account_rate: None,
            thing_rate: None,
            thing_in_flight: None,
        }
    }

    /// The account-wide rate, with a burst of one second's worth.
    pub fn with_max_rps(mut self, rps: u32) -> Self {
        self.account_rate = Some(RateLimit::new(rps, rps));
        self
    }

    /// The retry schedule: `base_delay` doubling to `max_delay`, full jitter, so that
    /// retries of many callers spread out.
    fn retry_backoff(&self) -> Backoff {
        Backoff::new(self.base_delay, self.max_delay, Jitter::Full)
    }

    /// The largest delay before retry number `retry` (1 = the first retry):
    /// `min(max_delay, base_delay * 2^(retry-1))`. The delay is drawn uniformly from
    /// `0..=ceiling` (full jitter).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        self.retry_backoff().ceiling(retry)
    }

    /// A delay drawn for retry number `retry`.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        self.retry_backoff().delay(retry, rng)
    }
}

/// A [`DataPlane`] with client-side rate limits and retries around another one.
pub struct Resilient {
    inner: Arc<dyn DataPlane>,
    policy: ResiliencePolicy,
    account: Option<Mutex<Gcra>>,
    things: Mutex<ThingTable>,
    observer: Option<Arc<dyn CallObserver>>,
}

impl Resilient {
    pub fn new(inner: Arc<dyn DataPlane>, policy: ResiliencePolicy) -> Self {
        Self {
            inner,
            policy,
            account: policy.account_rate.map(|rate| Mutex::new(Gcra::new(rate))),
            things: Mutex::new(ThingTable::default()),
            observer: None,
        }
    }

    /// Reports every attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn policy(&self) -> &ResiliencePolicy {
        &self.policy
    }

    /// Runs `call` with the limiter and the retry policy. `thing` is set for the shadow
    /// operations, which AWS limits per thing.
    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        thing: Option<&str>,
        call: F,
    ) -> Result<T, DataPlaneError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, DataPlaneError>>,
    {
        self.run_with(operation, thing, Repeat::Safe, call).await
    }

    /// [`Resilient::run`] for a call that must not be repeated when its outcome is
    /// unknown (`repeat`).
    async fn run_with<T, F, Fut>(
        &self,
        operation: &'static str,
        thing: Option<&str>,
        repeat: Repeat,
        call: F,
    ) -> Result<T, DataPlaneError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, DataPlaneError>>,
    {
        let max_attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let result = {
                let _slot = self.admit(thing).await;
                let started = Instant::now();
                let result = call().await;
                if let Some(observer) = &self.observer {
                    let outcome = match &result {
                        Ok(_) => CallOutcome::Ok,
                        Err(err) => CallOutcome::Failed(err.kind),
                    };
                    observer.on_call(operation, outcome, started.elapsed());
                }
                result
            };
            match result {
                Err(err) if repeat.retries(&err) && attempt < max_attempts => {
                    let delay = self.policy.backoff(attempt, &mut rand::rng());
                    tracing::debug!(
                        operation,
                        attempt,
                        reason = %err.kind.reason(),
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "data-plane call failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Waits until one more attempt may start; the returned guard holds the per-thing
    /// in-flight slot until the attempt ends.
    async fn admit(&self, thing: Option<&str>) -> Option<OwnedSemaphorePermit> {
        let mut permit = None;
        if let Some(thing) = thing {
            if let Some(state) = self.thing_state(thing) {
                if let Some(in_flight) = &state.in_flight {
                    // The semaphore is never closed, so this only fails if it were.
                    permit = in_flight.clone().acquire_owned().await.ok();
                }
                if let Some(rate) = &state.rate {
                    let wait = lock(rate).reserve(Instant::now());
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if let Some(account) = &self.account {
            let wait = lock(account).reserve(Instant::now());
            tokio::time::sleep(wait).await;
        }
        permit
    }

    fn thing_state(&self, thing: &str) -> Option<Arc<ThingState>> {
        if self.policy.thing_rate.is_none() && self.policy.thing_in_flight.is_none() {
            return None;
        }
        let mut table = lock(&self.things);
        if let Some(state) = table.states.get(thing) {
            return Some(state.clone());
        }
        table.prune(Instant::now());
        let state = Arc::new(ThingState {
            rate: self
                .policy
                .thing_rate
                .map(|rate| Mutex::new(Gcra::new(rate))),
            in_flight: self
                .policy
                .thing_in_flight
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            capacity: self.policy.thing_in_flight.map_or(0, |n| n.max(1)),
        });
        table.states.insert(thing.to_owned(), state.clone());
        Some(state)
    }

    #[cfg(test)]
    fn tracked_things(&self) -> usize {
        lock(&self.things).states.len()
    }
}

/// Whether a failed call may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    /// Any retryable failure: repeating the call is harmless (reads, and writes that
    /// carry a version or set absolute values).
    Safe,
    /// Only failures that prove the call was not applied (an error answer); never a
    /// transport failure, after which the call may have been applied with its answer
    /// lost. Publish: every repeat reaches the subscribers.
    NotAfterUnknownOutcome,
}

impl Repeat {
    fn retries(self, err: &DataPlaneError) -> bool {
        match self {
            Repeat::Safe => err.kind.is_retryable(),
            Repeat::NotAfterUnknownOutcome => {
                err.kind.is_retryable() && err.kind != super::ErrorKind::Transport
            }
        }
    }
}

/// A poisoned lock only means another caller panicked mid-update of a few numbers;
/// the limiter state stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Limiter state of one thing.
struct ThingState {
    rate: Option<Mutex<Gcra>>,
    in_flight: Option<Arc<Semaphore>>,
    capacity: usize,
}

impl ThingState {
    /// Nobody is calling, waiting or holding a slot, and the rate has fully recovered:
    /// forgetting the thing changes nothing.
    fn idle(&self, now: Instant) -> bool {
        let slots_free = self
            .in_flight
            .as_ref()
            .is_none_or(|s| s.available_permits() == self.capacity);
        let rate_rested = self.rate.as_ref().is_none_or(|r| lock(r).rested(now));
        slots_free && rate_rested
    }
}

/// Per-thing states, pruned of idle things when the table doubles, so that memory
/// follows the things in use rather than every thing ever seen.
#[derive(Default)]
struct ThingTable {
    states: HashMap<String, Arc<ThingState>>,
    prune_at: usize,
}

impl ThingTable {
    const MIN_PRUNE_AT: usize = 1024;

    fn prune(&mut self, now: Instant) {
        if self.states.len() < self.prune_at.max(Self::MIN_PRUNE_AT) {
            return;
        }
        self.states
            .retain(|_, state| Arc::strong_count(state) > 1 || !state.idle(now));
        self.prune_at = self.states.len() * 2;
    }
}

/// The generic cell rate algorithm: a token bucket kept as one timestamp (the
/// theoretical arrival time of the next request). Each request reserves its slot when
/// it asks, so waiters are served in order. Also the registry's limiter
/// (`registry::retrying`).
#[derive(Debug)]
pub(crate) struct Gcra {
    interval: Duration,
    tolerance: Duration,
    next: Option<Instant>,
}

impl Gcra {
    pub(crate) fn new(rate: RateLimit) -> Self {
        let interval = Duration::from_secs(1) / rate.per_second.max(1);
        Self {
            interval,
            tolerance: interval * (rate.burst.max(1) - 1),
            next: None,
        }
    }

    /// Reserves the next slot; returns how long to wait for it.
    pub(crate) fn reserve(&mut self, now: Instant) -> Duration {
        let next = self.next.map_or(now, |t| t.max(now));
        let start = next.checked_sub(self.tolerance).unwrap_or(now).max(now);
        self.next = Some(next + self.interval);
        start - now
    }

    fn rested(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| t <= now)
    }
}

#[async_trait]
impl DataPlane for Resilient {
    async fn get_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDocument, DataPlaneError> {
        self.run(GET_THING_SHADOW, Some(thing), || {
            self.inner.get_thing_shadow(thing, shadow)
        })
        .await
    }

    async fn update_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        payload: Bytes,
    ) -> Result<ShadowDocument, DataPlaneError> {
        self.run(UPDATE_THING_SHADOW, Some(thing), || {
            self.inner
                .update_thing_shadow(thing, shadow, payload.clone())
        })
        .await
    }

    async fn delete_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDeleted, DataPlaneError> {
        self.run(DELETE_THING_SHADOW, Some(thing), || {
            self.inner.delete_thing_shadow(thing, shadow)
        })
        .await
    }

    async fn list_named_shadows_for_thing(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: Option<i32>,
    ) -> Result<NamedShadowPage, DataPlaneError> {
        self.run(LIST_NAMED_SHADOWS, Some(thing), || {
            self.inner
                .list_named_shadows_for_thing(thing, next_token, page_size)
        })
        .await
    }

    async fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError> {
        self.run_with(PUBLISH, None, Repeat::NotAfterUnknownOutcome, || {
            self.inner.publish(request)
        })
        .await
    }

    async fn get_retained_message(
        &self,
        topic: &str,
    ) -> Result<RetainedMessageData, DataPlaneError> {
        self.run(GET_RETAINED_MESSAGE, None, || {
            self.inner.get_retained_message(topic)
        })
        .await
    }

    async fn list_retained_messages(
        &self,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<RetainedMessagePage, DataPlaneError> {
        self.run(LIST_RETAINED_MESSAGES, None, || {
            self.inner.list_retained_messages(next_token, max_results)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::ErrorKind;
    use super::*;

    /// A data plane that answers from a script and records when each call started.
    #[derive(Default)]
    struct Scripted {
        script: Mutex<VecDeque<Option<ErrorKind>>>,
        /// (thing or topic, start time) of every call.
        calls: Mutex<Vec<(String, Instant)>>,
        latency: Duration,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Scripted {
        fn failing(kinds: &[Option<ErrorKind>]) -> Self {
            Self {
                script: Mutex::new(kinds.iter().copied().collect()),
                ..Self::default()
            }
        }

        fn with_latency(latency: Duration) -> Self {
            Self {
                latency,
                ..Self::default()
            }
        }

        async fn answer(&self, key: &str) -> Result<(), DataPlaneError> {
            lock(&self.calls).push((key.to_owned(), Instant::now()));
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match lock(&self.script).pop_front().flatten() {
                Some(kind) => Err(DataPlaneError::new(kind, "scripted")),
                None => Ok(()),
            }
        }

        fn call_times(&self) -> Vec<Instant> {
            lock(&self.calls).iter().map(|(_, t)| *t).collect()
        }

        fn call_times_of(&self, key: &str) -> Vec<Instant> {
            lock(&self.calls)
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, t)| *t)
                .collect()
        }
    }

    #[async_trait]
    impl DataPlane for Scripted {
        async fn get_thing_shadow(
            &self,
            thing: &str,
            _shadow: Option<&str>,
        ) -> Result<ShadowDocument, DataPlaneError> {
            self.answer(thing).await.map(|()| ShadowDocument::default())
        }
        async fn update_thing_shadow(
            &self,
            thing: &str,
            _shadow: Option<&str>,
            _payload: Bytes,
        ) -> Result<ShadowDocument, DataPlaneError> {
            self.answer(thing).await.map(|()| ShadowDocument::default())
        }
        async fn delete_thing_shadow(
            &self,
            thing: &str,
            _shadow: Option<&str>,
        ) -> Result<ShadowDeleted, DataPlaneError> {
            self.answer(thing).await.map(|()| ShadowDeleted::default())
        }
        async fn list_named_shadows_for_thing(
            &self,
            thing: &str,
            _next_token: Option<&str>,
            _page_size: Option<i32>,
        ) -> Result<NamedShadowPage, DataPlaneError> {
            self.answer(thing)
                .await
                .map(|()| NamedShadowPage::default())
        }
        async fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError> {
            self.answer(&request.topic).await
        }
        async fn get_retained_message(
            &self,
            topic: &str,
        ) -> Result<RetainedMessageData, DataPlaneError> {
            self.answer(topic)
                .await
                .map(|()| RetainedMessageData::default())
        }
        async fn list_retained_messages(
            &self,
            _next_token: Option<&str>,
            _max_results: Option<i32>,
        ) -> Result<RetainedMessagePage, DataPlaneError> {
            self.answer("")
                .await
                .map(|()| RetainedMessagePage::default())
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(&'static str, &'static str)>>);

    impl CallObserver for Recorder {
        fn on_call(&self, operation: &'static str, outcome: CallOutcome, _: Duration) {
            lock(&self.0).push((operation, outcome.label()));
        }
    }

    fn retry_only() -> ResiliencePolicy {
        ResiliencePolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            ..ResiliencePolicy::passthrough()
        }
    }

    fn wrap(inner: &Arc<Scripted>, policy: ResiliencePolicy) -> Resilient {
        let inner: Arc<dyn DataPlane> = inner.clone();
        Resilient::new(inner, policy)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_bound() {
        let inner = Arc::new(Scripted::failing(&[Some(ErrorKind::ServiceUnavailable); 9]));
        let recorder = Arc::new(Recorder::default());
        let plane = wrap(&inner, retry_only()).with_observer(recorder.clone());

        let err = plane.get_thing_shadow("t", None).await.unwrap_err();

        assert_eq!(err.kind, ErrorKind::ServiceUnavailable);
        assert_eq!(inner.call_times().len(), 5);
        assert_eq!(
            *lock(&recorder.0),
            vec![(GET_THING_SHADOW, "ServiceUnavailable"); 5]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        let inner = Arc::new(Scripted::failing(&[
            Some(ErrorKind::Throttling),
            Some(ErrorKind::InternalFailure),
            Some(ErrorKind::Transport),
        ]));
        let recorder = Arc::new(Recorder::default());
        let plane = wrap(&inner, retry_only()).with_observer(recorder.clone());

        plane
            .update_thing_shadow("t", Some("s"), Bytes::from_static(b"{}"))
            .await
            .unwrap();

        assert_eq!(
            *lock(&recorder.0),
            vec![
                (UPDATE_THING_SHADOW, "Throttled"),
                (UPDATE_THING_SHADOW, "InternalFailure"),
                (UPDATE_THING_SHADOW, "Unreachable"),
                (UPDATE_THING_SHADOW, OUTCOME_OK),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_and_conflicts_are_not_retried() {
        for kind in ErrorKind::ALL.into_iter().filter(|k| !k.is_retryable()) {
            let inner = Arc::new(Scripted::failing(&[Some(kind)]));
            let plane = wrap(&inner, retry_only());
            let err = plane
                .update_thing_shadow("t", None, Bytes::new())
                .await
                .unwrap_err();
            assert_eq!(err.kind, kind);
            assert_eq!(inner.call_times().len(), 1, "{kind:?} was retried");
        }
        // The table above covers these two, named here because the reconciler relies on it.
        assert!(!ErrorKind::Conflict.is_retryable());
        assert!(!ErrorKind::InvalidRequest.is_retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn publish_is_not_repeated_after_an_unknown_outcome() {
        let request = PublishRequest {
            topic: "a/b".into(),
            ..PublishRequest::default()
        };
        // A dropped connection: maybe applied, so the caller must look, not repeat.
        let inner = Arc::new(Scripted::failing(&[Some(ErrorKind::Transport)]));
        let plane = wrap(&inner, retry_only());
        let err = plane.publish(&request).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transport);
        assert_eq!(inner.call_times().len(), 1);

        // An error answer means not applied: retried as before.
        let inner = Arc::new(Scripted::failing(&[
            Some(ErrorKind::Throttling),
            Some(ErrorKind::ServiceUnavailable),
            Some(ErrorKind::InternalFailure),
        ]));
        let plane = wrap(&inner, retry_only());
        plane.publish(&request).await.unwrap();
        assert_eq!(inner.call_times().len(), 4);

        // Reads and versioned shadow updates are still retried after a transport failure.
        let inner = Arc::new(Scripted::failing(&[Some(ErrorKind::Transport); 2]));
        let plane = wrap(&inner, retry_only());
        plane.get_retained_message("a/b").await.unwrap();
        plane
            .update_thing_shadow("t", None, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(inner.call_times().len(), 4);
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_maximum() {
        let policy = ResiliencePolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..ResiliencePolicy::default()
        };
        let ceilings: Vec<u64> = (1..=6)
            .map(|n| policy.backoff_ceiling(n).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            policy.backoff_ceiling(u32::MAX),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn backoff_is_jittered_within_its_ceiling() {
        let policy = ResiliencePolicy::default();
        let mut rng = rand::rng();
        for retry in 1..=4 {
            let ceiling = policy.backoff_ceiling(retry);
            let samples: Vec<Duration> =
                (0..500).map(|_| policy.backoff(retry, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling));
            // Full jitter spreads over the whole range: 500 draws all in one half, or
            // all equal, would mean no jitter (chance 2^-500).
            assert!(samples.iter().any(|d| *d < ceiling / 2));
            assert!(samples.iter().any(|d| *d > ceiling / 2));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_delays_stay_within_the_growing_ceilings() {
        let inner = Arc::new(Scripted::failing(&[Some(ErrorKind::Throttling); 4]));
        let policy = retry_only();
        let plane = wrap(&inner, policy);

        plane.get_thing_shadow("t", None).await.unwrap();

        let times = inner.call_times();
        assert_eq!(times.len(), 5);
        for (retry, pair) in (1..).zip(times.windows(2)) {
            let gap = pair[1] - pair[0];
            assert!(
                gap <= policy.backoff_ceiling(retry),
                "retry {retry} waited {gap:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn account_rate_is_enforced() {
        let inner = Arc::new(Scripted::default());
        let policy = ResiliencePolicy {
            account_rate: Some(RateLimit::new(10, 5)),
            ..ResiliencePolicy::passthrough()
        };
        let plane = Arc::new(wrap(&inner, policy));
        let start = Instant::now();

        let calls: Vec<_> = (0..25)
            .map(|i| {
                let plane = plane.clone();
                tokio::spawn(async move {
                    let request = PublishRequest {
                        topic: format!("t/{i}"),
                        ..PublishRequest::default()
                    };
                    plane.publish(&request).await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }

        let mut offsets: Vec<Duration> = inner.call_times().iter().map(|t| *t - start).collect();
        offsets.sort();
        // A burst of 5 at once, then one every 100 ms.
        assert!(offsets[..5].iter().all(|d| d.is_zero()));
        for (n, offset) in offsets.iter().enumerate().skip(5) {
            assert_eq!(*offset, Duration::from_millis(100) * (n as u32 - 4));
        }
        // So no window of one second holds more than burst + rate.
        for (i, first) in offsets.iter().enumerate() {
            let in_window = offsets[i..]
                .iter()
                .filter(|t| **t - *first < Duration::from_secs(1))
                .count();
            assert!(in_window <= 15, "{in_window} calls within 1 s");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn thing_rate_spaces_calls_per_thing_only() {
        let inner = Arc::new(Scripted::default());
        let policy = ResiliencePolicy {
            thing_rate: Some(RateLimit::new(20, 1)),
            ..ResiliencePolicy::passthrough()
        };
        let plane = Arc::new(wrap(&inner, policy));
        let start = Instant::now();

        let calls: Vec<_> = (0..10)
            .flat_map(|_| ["a", "b"])
            .map(|thing| {
                let plane = plane.clone();
                tokio::spawn(async move { plane.get_thing_shadow(thing, None).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        // Retained-message calls are not per-thing limited.
        for i in 0..5 {
            plane.get_retained_message(&format!("x/{i}")).await.unwrap();
        }

        for thing in ["a", "b"] {
            let mut offsets: Vec<Duration> = inner
                .call_times_of(thing)
                .iter()
                .map(|t| *t - start)
                .collect();
            offsets.sort();
            let expected: Vec<Duration> = (0..10).map(|n| Duration::from_millis(50) * n).collect();
            assert_eq!(offsets, expected, "calls on {thing}");
        }
        let retained: Vec<Instant> = (0..5)
            .flat_map(|i| inner.call_times_of(&format!("x/{i}")))
            .collect();
        assert!(retained.windows(2).all(|w| w[0] == w[1]));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_calls_per_thing_are_capped() {
        let inner = Arc::new(Scripted::with_latency(Duration::from_secs(1)));
        let policy = ResiliencePolicy {
            thing_in_flight: Some(10),
            ..ResiliencePolicy::passthrough()
        };
        let plane = Arc::new(wrap(&inner, policy));
        let start = Instant::now();

        let calls: Vec<_> = (0..25)
            .map(|_| {
                let plane = plane.clone();
                tokio::spawn(async move { plane.get_thing_shadow("busy", None).await })
            })
            .collect();
        // Another thing is not held up by the busy one.
        tokio::task::yield_now().await;
        plane.get_thing_shadow("quiet", None).await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        for call in calls {
            call.await.unwrap().unwrap();
        }

        // 25 one-second calls, 10 at a time: 3 rounds; 11 at most with "quiet".
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        assert_eq!(inner.max_in_flight.load(Ordering::SeqCst), 11);
        let mut busy = inner.call_times_of("busy");
        busy.sort();
        assert_eq!(busy[9] - start, Duration::ZERO);
        assert_eq!(busy[10] - start, Duration::from_secs(1));
        assert_eq!(busy[20] - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_pass_through_the_limiter_again() {
        let inner = Arc::new(Scripted::failing(&[Some(ErrorKind::Throttling)]));
        let policy = ResiliencePolicy {
            max_attempts: 2,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            thing_rate: Some(RateLimit::new(2, 1)),
            ..ResiliencePolicy::passthrough()
        };
        let plane = wrap(&inner, policy);

        plane.get_thing_shadow("t", None).await.unwrap();

        let times = inner.call_times();
        assert_eq!(times[1] - times[0], Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_things_are_forgotten() {
        let inner = Arc::new(Scripted::default());
        let plane = wrap(&inner, ResiliencePolicy::default());
        for i in 0..ThingTable::MIN_PRUNE_AT {
            plane
                .get_thing_shadow(&format!("t{i}"), None)
                .await
                .unwrap();
        }
        assert_eq!(plane.tracked_things(), ThingTable::MIN_PRUNE_AT);
        tokio::time::sleep(Duration::from_secs(1)).await;

        plane.get_thing_shadow("new", None).await.unwrap();

        assert_eq!(plane.tracked_things(), 1);
    }
}
