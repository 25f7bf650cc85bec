//! The refresh timers of one kind: when each resource is read again
//! (`spec.refreshInterval`, see [`until_refresh_slot`]).
//!
//! kube-runtime's scheduler would keep them as requeues (`Action::requeue`): every
//! resource, all the time, holds a scheduled request there, and each one keeps its
//! object reference (name, namespace, uid and resourceVersion, each its own string)
//! twice, in a delay queue and in a map, about 700 bytes in all. At 10,000 resources that
//! was 7 MB, the largest part of the operator's memory after the cache itself. Here a
//! timer is the resource's `namespace/name` once and its due time: about 130 bytes.
//!
//! The semantics are those of a requeue: a pass of the resource, whatever started it,
//! replaces its timer (the pass starts by [`Refreshes::cancel`]ling it, and sets a new
//! one by [`Refreshes::schedule`] if it wants one), and a due timer asks the controller
//! for a pass ([`Refreshes::fired`], given to `Controller::reconcile_on`). A timer of a
//! deleted resource is dropped; one that fires for a resource no longer cached asks for
//! nothing (the controller ignores references it cannot find).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use kube::Resource;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The pending refreshes of one kind.
#[derive(Default)]
pub struct Refreshes {
    state: Mutex<Timers>,
    /// Woken when a timer is set earlier than the one the stream waits for.
    changed: Notify,
}

#[derive(Default)]
struct Timers {
    /// Due time and `namespace/name`, earliest first.
    due: BTreeSet<(Instant, Arc<str>)>,
    /// The due time of each resource's timer.
    by_key: HashMap<Arc<str>, Instant>,
}

/// `namespace/name` of a namespaced object (neither may contain a slash).
fn key_of<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl Refreshes {
    fn timers(&self) -> MutexGuard<'_, Timers> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the object's timer to `delay` from now, replacing any it had.
    pub fn schedule<K: Resource>(&self, object: &K, delay: Duration) {
        let when = Instant::now() + delay;
        let key: Arc<str> = key_of(object).into();
        let earliest = {
            let mut timers = self.timers();
            if let Some(before) = timers.by_key.remove(&key) {
                timers.due.remove(&(before, key.clone()));
            }
            timers.by_key.insert(key.clone(), when);
            timers.due.insert((when, key));
            timers.due.first().is_some_and(|(first, _)| *first == when)
        };
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Drops the object's timer, if it has one.
    pub fn cancel<K: Resource>(&self, object: &K) {
        let key = key_of(object);
        let mut timers = self.timers();
        if let Some((key, when)) = timers.by_key.remove_entry(key.as_str()) {
            timers.due.remove(&(when, key));
        }
    }

    /// Timers set.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.timers().by_key.len()
    }

    /// The next timer if it is due, else when the earliest one will be.
    fn pop_due(&self, now: Instant) -> Result<Arc<str>, Option<Instant>> {
        let mut timers = self.timers();
        match timers.due.first() {
            Some((when, _)) if *when <= now => {
                let (_, key) = timers.due.pop_first().ok_or(None)?;
                timers.by_key.remove(&key);
                Ok(key)
            }
            Some((when, _)) => Err(Some(*when)),
            None => Err(None),
        }
    }

    /// The objects whose timer is due, as it falls due; never ends.
    pub fn fired<K>(self: Arc<Self>) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
    where
        K: Resource<DynamicType = ()> + 'static,
    {
        futures::stream::unfold(self, |refreshes| async move {
            loop {
                // Registered before looking, so that a timer set meanwhile wakes it.
                let changed = refreshes.changed.notified();
                match refreshes.pop_due(Instant::now()) {
                    Ok(key) => {
                        drop(changed);
                        let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
                        let object = ObjectRef::new(name).within(namespace);
                        return Some((object, refreshes));
                    }
                    Err(Some(when)) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(when) => {}
                            () = changed => {}
                        }
                    }
                    Err(None) => changed.await,
                }
            }
        })
    }
}

/// Time until this resource's next refresh slot. Each resource refreshes at a fixed
/// phase of its interval (a fraction in [0, 1), see `Resources::refresh_phase`), so reads
/// spread evenly over the interval even when thousands of resources were created (or
/// changed) in the same second. After a pass that wrote, the write's answer is fresh
/// state: the next read waits for the slot at least 0.9 interval away instead of
/// following moments later.
pub fn until_refresh_slot(phase: f64, period: Duration, wrote: bool) -> Duration {
    let period_ms = period.as_millis().max(1) as u64;
    let phase_ms = ((phase.clamp(0.0, 1.0) * period_ms as f64) as u64).min(period_ms - 1);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let into_slot = (now_ms + period_ms - phase_ms) % period_ms;
    let mut delay = period_ms - into_slot;
    if wrote && delay < period_ms / 10 * 9 {
        delay += period_ms;
    }
    Duration::from_millis(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn object(namespace: &str, name: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.namespace = Some(namespace.into());
        object.metadata.name = Some(name.into());
        object
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_fires_once_when_due() {
        let refreshes = Arc::new(Refreshes::default());
        let mut fired = Box::pin(refreshes.clone().fired::<ConfigMap>());
        refreshes.schedule(&object("ns", "a"), Duration::from_secs(30));
        let started = Instant::now();
        let first = fired.next().await.unwrap();
        assert_eq!(first, ObjectRef::new("a").within("ns"));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(refreshes.len(), 0);
        let again = tokio::time::timeout(Duration::from_secs(3600), fired.next()).await;
        assert!(again.is_err(), "a timer fires once");
    }

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_order_and_a_new_one_replaces_the_old() {
        let refreshes = Arc::new(Refreshes::default());
        let mut fired = Box::pin(refreshes.clone().fired::<ConfigMap>());
        refreshes.schedule(&object("ns", "late"), Duration::from_secs(60));
        refreshes.schedule(&object("ns", "moved"), Duration::from_secs(10));
        refreshes.schedule(&object("ns", "moved"), Duration::from_secs(90));
        refreshes.schedule(&object("other", "early"), Duration::from_secs(20));
        assert_eq!(refreshes.len(), 3);
        let started = Instant::now();
        let mut order = Vec::new();
        for _ in 0..3 {
            let next = fired.next().await.unwrap();
            order.push((next.name.clone(), started.elapsed().as_secs()));
        }
        assert_eq!(
            order,
            vec![
                ("early".to_string(), 20),
                ("late".to_string(), 60),
                ("moved".to_string(), 90)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_timer_does_not_fire() {
        let refreshes = Arc::new(Refreshes::default());
        let mut fired = Box::pin(refreshes.clone().fired::<ConfigMap>());
        refreshes.schedule(&object("ns", "a"), Duration::from_secs(5));
        refreshes.schedule(&object("ns", "b"), Duration::from_secs(10));
        refreshes.cancel(&object("ns", "a"));
        refreshes.cancel(&object("ns", "never-set"));
        let started = Instant::now();
        let next = fired.next().await.unwrap();
        assert_eq!(next.name, "b");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_set_while_the_stream_waits_wakes_it_earlier() {
        let refreshes = Arc::new(Refreshes::default());
        let mut fired = Box::pin(refreshes.clone().fired::<ConfigMap>());
        refreshes.schedule(&object("ns", "slow"), Duration::from_secs(300));
        let waiting = tokio::spawn(async move { fired.next().await.map(|o| o.name) });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        refreshes.schedule(&object("ns", "fast"), Duration::from_secs(2));
        assert_eq!(waiting.await.unwrap().as_deref(), Some("fast"));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn refresh_slots_fall_within_one_interval_and_spread_evenly() {
        const GOLDEN_FRACTION: f64 = 0.618_033_988_749_894_9;
        let period = Duration::from_secs(60);
        // 600 resources over 60 one-second buckets: 10 per second on average.
        let mut buckets = [0u32; 61];
        for n in 0..600u32 {
            let phase = (f64::from(n) * GOLDEN_FRACTION).fract();
            let delay = until_refresh_slot(phase, period, false);
            assert!(delay > Duration::ZERO && delay <= period, "{delay:?}");
            buckets[delay.as_secs() as usize] += 1;
            let after_write = until_refresh_slot(phase, period, true);
            assert!(
                after_write >= period.mul_f64(0.9) && after_write <= period.mul_f64(1.9),
                "{after_write:?}"
            );
        }
        // Slots are absolute (phase of the wall clock), so the buckets here are shifted
        // by the current millisecond; evenly spread, no second sees more than 12.
        let busiest = buckets.iter().max().copied().unwrap_or_default();
        assert!(busiest <= 12, "busiest second {busiest}: {buckets:?}");
    }
}
