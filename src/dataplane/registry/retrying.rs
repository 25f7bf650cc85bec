//! [`RetryingRegistry`]: any [`Registry`] behind an account-wide rate limit and a retry
//! policy, as [`Resilient`](crate::dataplane::resilient::Resilient) is for the data
//! plane.
//!
//! Each attempt of each call waits for the account-wide rate, then calls the wrapped
//! registry. Failures whose [`ErrorKind::is_retryable`] holds (throttling, 5xx, transport)
//! are retried on the [`Backoff`] schedule (full jitter, ceilings from 200 ms doubling to
//! 5 s), up to 5 attempts in all; every other failure (a missing group, an invalid query,
//! a version conflict) goes back to the caller at once, and so does the last failure
//! when the attempts run out. Retries pass through the rate limit again: AWS counts them.
//!
//! Repeating any registry call is harmless, even after a transport failure whose answer
//! was lost: CreateThing and CreateThingGroup answer the same for the same
//! configuration, the deletes succeed for what is already gone, and adding or removing a
//! member that is already in or out succeeds.
//!
//! The registry's quotas are AWS IoT control-plane quotas: per account and region, tens of
//! requests per second for the whole account, well below the shadow quotas. The default
//! rate, 10 per second with a burst of 10, leaves room for the other tools sharing the
//! account.
//!
//! The limiter uses tokio's clock, so tests run it in virtual time.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{
    Attributes, Registry, ThingCreated, ThingGroupCreated, ThingGroupSpec, ThingNamePage,
    ThingSearchPage,
};
use crate::backoff::{Backoff, Jitter};
use crate::dataplane::resilient::{Gcra, RateLimit};
use crate::dataplane::DataPlaneError;

/// Rate limit and retry policy of a [`RetryingRegistry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryPolicy {
    /// Attempts per call, the first included (1 = never retry). Zero is read as 1.
    pub max_attempts: u32,
    /// The wait before retry `n` is drawn from `backoff.delay(n)`.
    pub backoff: Backoff,
    /// Account-wide, over every registry operation; `None` = unlimited.
    pub rate: Option<RateLimit>,
}

impl RegistryPolicy {
    /// 5 attempts in all.
    pub const MAX_ATTEMPTS: u32 = 5;
    /// Full jitter under ceilings of 200 ms, 400 ms, 800 ms, 1.6 s (at most 5 s): a call
    /// that keeps failing gives up after at most 3 s of backoff.
    pub const BACKOFF: Backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        Jitter::Full,
    );
    /// 10 requests per second, burst 10.
    pub const RATE: RateLimit = RateLimit::new(10, 10);
}

impl Default for RegistryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::MAX_ATTEMPTS,
            backoff: Self::BACKOFF,
            rate: Some(Self::RATE),
        }
    }
}

/// A [`Registry`] with an account-wide rate limit and retries around another one.
pub struct RetryingRegistry {
    inner: Arc<dyn Registry>,
    policy: RegistryPolicy,
    rate: Option<Mutex<Gcra>>,
}

impl RetryingRegistry {
    /// `inner` with the default policy ([`RegistryPolicy::default`]).
    pub fn new(inner: Arc<dyn Registry>) -> Self {
        Self::with_policy(inner, RegistryPolicy::default())
    }

    pub fn with_policy(inner: Arc<dyn Registry>, policy: RegistryPolicy) -> Self {
        Self {
            inner,
            policy,
            rate: policy.rate.map(|rate| Mutex::new(Gcra::new(rate))),
        }
    }

    pub fn policy(&self) -> &RegistryPolicy {
        &self.policy
    }

    /// Runs `call` under the rate limit, retrying retryable failures.
    async fn run<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T, DataPlaneError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, DataPlaneError>>,
    {
        let max_attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            if let Some(rate) = &self.rate {
                let wait = lock(rate).reserve(Instant::now());
                tokio::time::sleep(wait).await;
            }
            match call().await {
                Err(err) if err.kind.is_retryable() && attempt < max_attempts => {
                    let delay = self.policy.backoff.delay(attempt, &mut rand::rng());
                    tracing::debug!(
                        operation,
                        attempt,
                        reason = %err.kind.reason(),
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "registry call failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A poisoned lock only means another caller panicked mid-update of a timestamp; the
/// limiter stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Registry for RetryingRegistry {
    async fn create_thing(
        &self,
        thing: &str,
        attributes: &Attributes,
    ) -> Result<ThingCreated, DataPlaneError> {
        self.run("CreateThing", || self.inner.create_thing(thing, attributes))
            .await
    }

    async fn delete_thing(
        &self,
        thing: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError> {
        self.run("DeleteThing", || {
            self.inner.delete_thing(thing, expected_version)
        })
        .await
    }

    async fn create_thing_group(
        &self,
        group: &str,
        spec: &ThingGroupSpec,
    ) -> Result<ThingGroupCreated, DataPlaneError> {
        self.run("CreateThingGroup", || {
            self.inner.create_thing_group(group, spec)
        })
        .await
    }

    async fn delete_thing_group(
        &self,
        group: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError> {
        self.run("DeleteThingGroup", || {
            self.inner.delete_thing_group(group, expected_version)
        })
        .await
    }

    async fn add_thing_to_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError> {
        self.run("AddThingToThingGroup", || {
            self.inner.add_thing_to_thing_group(group, thing)
        })
        .await
    }

    async fn remove_thing_from_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError> {
        self.run("RemoveThingFromThingGroup", || {
            self.inner.remove_thing_from_thing_group(group, thing)
        })
        .await
    }

    async fn list_things_in_thing_group(
        &self,
        group: &str,
        recursive: bool,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ThingNamePage, DataPlaneError> {
        self.run("ListThingsInThingGroup", || {
            self.inner
                .list_things_in_thing_group(group, recursive, next_token, max_results)
        })
        .await
    }

    async fn search_index(
        &self,
        query: &str,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ThingSearchPage, DataPlaneError> {
        self.run("SearchIndex", || {
            self.inner.search_index(query, next_token, max_results)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::dataplane::ErrorKind;

    /// A registry that answers from a script (`None` = success) and records when each
    /// call started and which operation it was.
    #[derive(Default)]
    struct Scripted {
        script: Mutex<VecDeque<Option<ErrorKind>>>,
        calls: Mutex<Vec<(&'static str, Instant)>>,
    }

    impl Scripted {
        fn failing(kinds: &[Option<ErrorKind>]) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(kinds.iter().copied().collect()),
                ..Self::default()
            })
        }

        fn answer(&self, operation: &'static str) -> Result<(), DataPlaneError> {
            lock(&self.calls).push((operation, Instant::now()));
            match lock(&self.script).pop_front().flatten() {
                Some(kind) => Err(DataPlaneError::new(
                    kind,
                    format!("scripted {} {}", operation, lock(&self.calls).len()),
                )),
                None => Ok(()),
            }
        }

        fn times(&self) -> Vec<Instant> {
            lock(&self.calls).iter().map(|(_, t)| *t).collect()
        }

        fn operations(&self) -> Vec<&'static str> {
            lock(&self.calls).iter().map(|(op, _)| *op).collect()
        }
    }

    #[async_trait]
    impl Registry for Scripted {
        async fn create_thing(
            &self,
            thing: &str,
            _: &Attributes,
        ) -> Result<ThingCreated, DataPlaneError> {
            self.answer("CreateThing")?;
            Ok(ThingCreated {
                thing_name: thing.to_string(),
                ..Default::default()
            })
        }
        async fn delete_thing(&self, _: &str, _: Option<i64>) -> Result<(), DataPlaneError> {
            self.answer("DeleteThing")
        }
        async fn create_thing_group(
            &self,
            group: &str,
            _: &ThingGroupSpec,
        ) -> Result<ThingGroupCreated, DataPlaneError> {
            self.answer("CreateThingGroup")?;
            Ok(ThingGroupCreated {
                thing_group_name: group.to_string(),
                ..Default::default()
            })
        }
        async fn delete_thing_group(&self, _: &str, _: Option<i64>) -> Result<(), DataPlaneError> {
            self.answer("DeleteThingGroup")
        }
        async fn add_thing_to_thing_group(&self, _: &str, _: &str) -> Result<(), DataPlaneError> {
            self.answer("AddThingToThingGroup")
        }
        async fn remove_thing_from_thing_group(
            &self,
            _: &str,
            _: &str,
        ) -> Result<(), DataPlaneError> {
            self.answer("RemoveThingFromThingGroup")
        }
        async fn list_things_in_thing_group(
            &self,
            group: &str,
            _: bool,
            _: Option<&str>,
            _: Option<i32>,
        ) -> Result<ThingNamePage, DataPlaneError> {
            self.answer("ListThingsInThingGroup")?;
            Ok(ThingNamePage {
                things: vec![format!("{group}-member")],
                next_token: None,
            })
        }
        async fn search_index(
            &self,
            _: &str,
            _: Option<&str>,
            _: Option<i32>,
        ) -> Result<ThingSearchPage, DataPlaneError> {
            self.answer("SearchIndex")?;
            Ok(ThingSearchPage::default())
        }
    }

    /// Retries only: no rate limit in the way.
    fn retries_only() -> RegistryPolicy {
        RegistryPolicy {
            rate: None,
            ..RegistryPolicy::default()
        }
    }

    #[test]
    fn the_default_policy_is_five_attempts_from_200_ms_to_5_s_at_10_per_second() {
        let policy = RegistryPolicy::default();
        assert_eq!(policy.max_attempts, 5);
        assert_eq!(policy.backoff.jitter, Jitter::Full);
        let ceilings: Vec<u64> = (1..=6)
            .map(|n| policy.backoff.ceiling(n).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 5000]);
        assert_eq!(policy.rate, Some(RateLimit::new(10, 10)));
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_within_the_ceilings_until_one_succeeds() {
        let inner = Scripted::failing(&[
            Some(ErrorKind::Throttling),
            Some(ErrorKind::ServiceUnavailable),
            Some(ErrorKind::Transport),
        ]);
        let registry = RetryingRegistry::with_policy(inner.clone(), retries_only());

        let page = registry
            .list_things_in_thing_group("lamps", true, None, Some(250))
            .await
            .expect("the fourth attempt succeeds");

        assert_eq!(page.things, ["lamps-member"]);
        let times = inner.times();
        assert_eq!(times.len(), 4);
        for (retry, pair) in (1..).zip(times.windows(2)) {
            let gap = pair[1] - pair[0];
            assert!(
                gap <= RegistryPolicy::BACKOFF.ceiling(retry),
                "retry {retry} waited {gap:?}"
            );
        }
        assert!(inner
            .operations()
            .iter()
            .all(|op| *op == "ListThingsInThingGroup"));
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_after_five_attempts_with_the_last_error() {
        let inner = Scripted::failing(&[
            Some(ErrorKind::Throttling),
            Some(ErrorKind::InternalFailure),
            Some(ErrorKind::Transport),
            Some(ErrorKind::Throttling),
            Some(ErrorKind::ServiceUnavailable),
            // Never reached.
            None,
        ]);
        let registry = RetryingRegistry::with_policy(inner.clone(), retries_only());
        let start = Instant::now();

        let err = registry.search_index("thingName:a*", None, None).await;

        let err = err.expect_err("five failures in a row");
        assert_eq!(err.kind, ErrorKind::ServiceUnavailable);
        assert_eq!(err.message, "scripted SearchIndex 5");
        assert_eq!(inner.times().len(), 5);
        // Four waits, each within its ceiling: at most 200 + 400 + 800 + 1600 ms.
        assert!(Instant::now() - start <= Duration::from_millis(3000));
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_come_back_at_once() {
        for kind in [
            ErrorKind::ResourceNotFound,
            ErrorKind::InvalidQuery,
            ErrorKind::InvalidRequest,
            ErrorKind::VersionConflict,
            ErrorKind::Unauthorized,
        ] {
            let inner = Scripted::failing(&[Some(kind)]);
            let registry = RetryingRegistry::new(inner.clone());
            let start = Instant::now();

            let err = registry
                .delete_thing_group("lamps", Some(3))
                .await
                .expect_err("scripted to fail");

            assert_eq!(err.kind, kind);
            assert_eq!(inner.times().len(), 1, "{kind:?}");
            assert_eq!(Instant::now(), start, "{kind:?} waited");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_attempt_means_no_retry() {
        let inner = Scripted::failing(&[Some(ErrorKind::Throttling)]);
        let registry = RetryingRegistry::with_policy(
            inner.clone(),
            RegistryPolicy {
                max_attempts: 0,
                ..retries_only()
            },
        );
        let err = registry.create_thing("t", &Attributes::new()).await;
        assert_eq!(err.expect_err("not retried").kind, ErrorKind::Throttling);
        assert_eq!(inner.times().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_account_rate_holds_over_all_operations_and_retries() {
        let inner = Scripted::failing(&[Some(ErrorKind::Throttling); 5]);
        let registry = Arc::new(RetryingRegistry::with_policy(
            inner.clone(),
            RegistryPolicy {
                // Whichever calls draw the throttles, each succeeds in the end.
                max_attempts: 10,
                backoff: Backoff::new(Duration::ZERO, Duration::ZERO, Jitter::Full),
                ..RegistryPolicy::default()
            },
        ));
        let start = Instant::now();

        // 25 calls at once, of several operations; the first five attempts are
        // throttled and retried at once, so 30 attempts go through the limiter.
        let calls: Vec<_> = (0..25)
            .map(|i| {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let thing = format!("t{i}");
                    match i % 3 {
                        0 => registry
                            .add_thing_to_thing_group("g", &thing)
                            .await
                            .map(|_| ()),
                        1 => registry
                            .list_things_in_thing_group("g", false, None, None)
                            .await
                            .map(|_| ()),
                        _ => registry.search_index("*", None, None).await.map(|_| ()),
                    }
                })
            })
            .collect();
        for call in calls {
            call.await.expect("joined").expect("succeeds after retries");
        }

        let mut offsets: Vec<Duration> = inner.times().iter().map(|t| *t - start).collect();
        offsets.sort();
        assert_eq!(offsets.len(), 30);
        // A burst of 10 at once, then one every 100 ms.
        assert!(offsets[..10].iter().all(Duration::is_zero), "{offsets:?}");
        for (n, offset) in offsets.iter().enumerate().skip(10) {
            assert_eq!(*offset, Duration::from_millis(100) * (n as u32 - 9));
        }
        // So no window of one second holds more than burst + rate.
        for (i, first) in offsets.iter().enumerate() {
            let in_window = offsets[i..]
                .iter()
                .filter(|t| **t - *first < Duration::from_secs(1))
                .count();
            assert!(in_window <= 20, "{in_window} calls within 1 s");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_operation_goes_through_the_policy() {
        let script: Vec<Option<ErrorKind>> = (0..8)
            .flat_map(|_| [Some(ErrorKind::Throttling), None])
            .collect();
        let inner = Scripted::failing(&script);
        let registry = RetryingRegistry::with_policy(inner.clone(), retries_only());
        registry
            .create_thing("t", &Attributes::new())
            .await
            .unwrap();
        registry.delete_thing("t", None).await.unwrap();
        registry
            .create_thing_group("g", &ThingGroupSpec::default())
            .await
            .unwrap();
        registry.delete_thing_group("g", None).await.unwrap();
        registry.add_thing_to_thing_group("g", "t").await.unwrap();
        registry
            .remove_thing_from_thing_group("g", "t")
            .await
            .unwrap();
        registry
            .list_things_in_thing_group("g", false, None, None)
            .await
            .unwrap();
        registry.search_index("*", None, None).await.unwrap();
        // Each operation failed once and was retried once.
        let operations = inner.operations();
        assert_eq!(operations.len(), 16);
        for pair in operations.chunks(2) {
            assert_eq!(pair[0], pair[1]);
        }
    }
}
