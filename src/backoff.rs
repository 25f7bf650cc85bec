//! Exponential backoff with jitter: the one schedule behind every wait before trying
//! again, whether a data-plane call (`dataplane::resilient`), a write after a version
//! conflict (`sync`) or a whole operator pass (`operator::resources`).
//!
//! The ceiling before attempt `n` (1-based) is `base × 2^(n-1)`, at most `max`; the delay
//! is drawn below the ceiling as the [`Jitter`] kind says, so that callers that failed
//! together do not come back together.
//!
//! Invariants, for every `base`, `max` and attempt number (`u32::MAX` included):
//!
//! - ceilings never decrease from one attempt to the next and never exceed `max`;
//! - a delay never exceeds its ceiling;
//! - nothing overflows or panics.
//!
//! The bottom of the layering: nothing here depends on the rest of the crate.

use std::time::Duration;

use rand::Rng;

/// How a delay is drawn from its ceiling, uniformly to the nanosecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Anywhere in `[0, ceiling]`: the widest spread, for short waits where many callers
    /// retry at once.
    Full,
    /// In `[ceiling / 2, ceiling]`: at least half the ceiling is always waited, for long
    /// waits whose point is to slow a failing caller down.
    Equal,
}

/// An exponential backoff schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling before the first attempt that waits.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration, jitter: Jitter) -> Self {
        Self { base, max, jitter }
    }

    /// The largest delay before attempt `attempt` (1-based; 0 is read as 1):
    /// `min(max, base × 2^(attempt-1))`. The doubling stops after 31 doublings, which
    /// matters only for a `max` over two billion times the `base`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// A delay drawn for attempt `attempt`, within [`Backoff::ceiling`] as
    /// [`Backoff::jitter`] says.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        let floor = match self.jitter {
            Jitter::Full => 0,
            Jitter::Equal => ceiling / 2,
        };
        Duration::from_nanos(rng.random_range(floor..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn draws(backoff: &Backoff, attempt: u32) -> Vec<Duration> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..1000)
            .map(|_| backoff.delay(attempt, &mut rng))
            .collect()
    }

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let backoff = Backoff::new(ms(100), ms(1000), Jitter::Full);
        let ceilings: Vec<Duration> = (0..=7).map(|n| backoff.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [100, 100, 200, 400, 800, 1000, 1000, 1000].map(ms)
        );
        // A maximum below the base caps from the first attempt.
        assert_eq!(
            Backoff::new(ms(100), ms(30), Jitter::Full).ceiling(1),
            ms(30)
        );
    }

    #[test]
    fn huge_attempts_and_durations_do_not_overflow() {
        let backoff = Backoff::new(ms(100), ms(1000), Jitter::Full);
        assert_eq!(backoff.ceiling(u32::MAX), ms(1000));
        assert_eq!(backoff.ceiling(33), ms(1000));

        let unbounded = Backoff::new(Duration::MAX, Duration::MAX, Jitter::Equal);
        assert_eq!(unbounded.ceiling(u32::MAX), Duration::MAX);
        let mut rng = StdRng::seed_from_u64(1);
        let delay = unbounded.delay(u32::MAX, &mut rng);
        assert!(delay >= Duration::from_nanos(u64::MAX / 2), "{delay:?}");

        // The doubling stops after 31 doublings.
        let tiny = Backoff::new(Duration::from_nanos(1), Duration::MAX, Jitter::Full);
        assert_eq!(tiny.ceiling(32), Duration::from_nanos(1 << 31));
        assert_eq!(tiny.ceiling(u32::MAX), Duration::from_nanos(1 << 31));

        let zero = Backoff::new(Duration::ZERO, Duration::ZERO, Jitter::Full);
        assert_eq!(zero.delay(u32::MAX, &mut rng), Duration::ZERO);
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_ceiling() {
        let backoff = Backoff::new(ms(100), ms(5000), Jitter::Full);
        for attempt in 1..=7 {
            let ceiling = backoff.ceiling(attempt);
            let delays = draws(&backoff, attempt);
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // A thousand uniform draws all missing a quarter of the range: chance 2^-415.
            assert!(delays.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(
                delays.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn equal_jitter_waits_at_least_half_and_spreads_over_the_rest() {
        let backoff = Backoff::new(
            Duration::from_secs(2),
            Duration::from_secs(300),
            Jitter::Equal,
        );
        for attempt in 1..=10 {
            let ceiling = backoff.ceiling(attempt);
            let delays = draws(&backoff, attempt);
            assert!(
                delays.iter().all(|d| *d >= ceiling / 2 && *d <= ceiling),
                "attempt {attempt}"
            );
            assert!(
                delays.iter().any(|d| *d < ceiling * 5 / 8),
                "attempt {attempt}"
            );
            assert!(
                delays.iter().any(|d| *d > ceiling * 7 / 8),
                "attempt {attempt}"
            );
        }
    }
}
