//! Kubernetes Events (`events.k8s.io/v1`) for the resources the operator manages.
//!
//! kube-runtime's `Recorder` keeps every event it sent, whole, for six minutes to build
//! series, and scans that cache on every publish. At fleet scale (tens of thousands of
//! resources created or changed at once, one event each) that cache was the largest
//! part of the operator's memory and a quadratic cost in CPU. This sink keeps only what
//! a series needs, for a bounded number of recent events: a 64-bit key, the event's
//! name and count. A repeat of the same event (same object, type, reason and note)
//! within [`SERIES_WINDOW`] updates the first one's `series` instead of creating another,
//! as client-go's event recorder does.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

/// Repeats of one event within this window extend its series.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// At most this many recent events are remembered for series; the oldest go first.
pub const SERIES_CAPACITY: usize = 1024;

/// What the sink records: a [`crate::sync::SyncEvent`] turned into Event fields.
pub struct Record<'a> {
    pub warning: bool,
    pub reason: &'a str,
    pub note: &'a str,
    pub action: &'a str,
}

/// Publishes Events with bounded memory; see the module documentation.
pub struct EventSink {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<SeriesCache>,
}

impl EventSink {
    /// `instance` is the reporting instance (the Pod name), defaulting to `controller`.
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        EventSink {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            recent: Mutex::new(SeriesCache::new(SERIES_CAPACITY, SERIES_WINDOW)),
        }
    }

    /// Creates the Event, or extends the series of an identical recent one.
    pub async fn publish(
        &self,
        record: &Record<'_>,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = series_key(record, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let now = Instant::now();
        let seen = self
            .recent
            .lock()
            .map(|mut recent| recent.observe(key, now))
            .unwrap_or(Seen::New);
        let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
        if let Seen::Repeat { name, count } = seen {
            let patch = json!({
                "series": EventSeries { count: count as i32, last_observed_time: stamp.clone() },
            });
            let request = kube::core::Request::new(api.resource_url())
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .map_err(kube::Error::BuildRequest)?;
            match self.client.request::<Skipped>(request).await {
                Ok(_) => return Ok(()),
                // The first event is gone (expired or deleted): start anew below.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        let name = format!("{object}.{:x}", stamp.0.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            action: Some(record.action.to_string()),
            reason: Some(record.reason.to_string()),
            note: Some(record.note.to_string()),
            type_: Some(if record.warning { "Warning" } else { "Normal" }.to_string()),
            event_time: Some(stamp),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let body = serde_json::to_vec(&event).map_err(kube::Error::SerdeError)?;
        let request = kube::core::Request::new(api.resource_url())
            .create(&PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Skipped>(request).await?;
        if let Ok(mut recent) = self.recent.lock() {
            recent.created(key, name, now);
        }
        Ok(())
    }
}

/// The answer to an Event write is the Event; nothing in it is needed, so it is skipped
/// as it is parsed rather than built.
type Skipped = serde::de::IgnoredAny;

/// Identity of an event for series: the object (by uid), type, reason and note.
fn series_key(record: &Record<'_>, regarding: &ObjectReference) -> u64 {
    let mut hasher = DefaultHasher::new();
    regarding.uid.hash(&mut hasher);
    regarding.namespace.hash(&mut hasher);
    regarding.name.hash(&mut hasher);
    record.warning.hash(&mut hasher);
    record.reason.hash(&mut hasher);
    record.note.hash(&mut hasher);
    record.action.hash(&mut hasher);
    hasher.finish()
}

/// Whether an event was sent recently.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    /// Sent before under `name`; this is occurrence number `count`.
    Repeat {
        name: String,
        count: u32,
    },
}

struct Recent {
    name: String,
    count: u32,
    last: Instant,
}

/// The bounded memory of recent events (pure; the clock is passed in).
pub struct SeriesCache {
    capacity: usize,
    window: Duration,
    entries: HashMap<u64, Recent>,
}

impl SeriesCache {
    pub fn new(capacity: usize, window: Duration) -> Self {
        SeriesCache {
            capacity: capacity.max(1),
            window,
            entries: HashMap::new(),
        }
    }

    /// Looks an event up; a repeat within the window counts one more occurrence.
    pub fn observe(&mut self, key: u64, now: Instant) -> Seen {
        match self.entries.get_mut(&key) {
            Some(entry) if now.saturating_duration_since(entry.last) < self.window => {
                entry.count = entry.count.saturating_add(1);
                entry.last = now;
                Seen::Repeat {
                    name: entry.name.clone(),
                    count: entry.count,
                }
            }
            Some(_) => {
                self.entries.remove(&key);
                Seen::New
            }
            None => Seen::New,
        }
    }

    /// Remembers a newly created event, making room if the cache is full: expired
    /// entries first, then the least recently seen one.
    pub fn created(&mut self, key: u64, name: String, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let window = self.window;
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.last) < window);
            if self.entries.len() >= self.capacity {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| *k)
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(
            key,
            Recent {
                name,
                count: 1,
                last: now,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_extends_the_series_of_the_first_event() {
        let mut cache = SeriesCache::new(8, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(cache.observe(1, t0), Seen::New);
        cache.created(1, "obj.1".into(), t0);
        assert_eq!(
            cache.observe(1, t0 + Duration::from_secs(10)),
            Seen::Repeat {
                name: "obj.1".into(),
                count: 2
            }
        );
        assert_eq!(
            cache.observe(1, t0 + Duration::from_secs(65)),
            Seen::Repeat {
                name: "obj.1".into(),
                count: 3
            },
            "the window runs from the last occurrence"
        );
        assert_eq!(cache.observe(2, t0), Seen::New, "another event is new");
    }

    #[test]
    fn an_event_after_the_window_is_new_again() {
        let mut cache = SeriesCache::new(8, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.created(1, "obj.1".into(), t0);
        assert_eq!(cache.observe(1, t0 + Duration::from_secs(61)), Seen::New);
        assert_eq!(cache.len(), 0, "the expired entry is dropped");
    }

    #[test]
    fn memory_stays_bounded_and_the_least_recent_goes_first() {
        let mut cache = SeriesCache::new(4, Duration::from_secs(600));
        let t0 = Instant::now();
        for key in 0..4u64 {
            cache.created(key, format!("obj.{key}"), t0 + Duration::from_secs(key));
        }
        // Key 0 is seen again, so key 1 is now the least recent.
        assert!(matches!(
            cache.observe(0, t0 + Duration::from_secs(10)),
            Seen::Repeat { .. }
        ));
        cache.created(9, "obj.9".into(), t0 + Duration::from_secs(11));
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.observe(1, t0 + Duration::from_secs(12)), Seen::New);
        assert!(matches!(
            cache.observe(0, t0 + Duration::from_secs(12)),
            Seen::Repeat { .. }
        ));
        for key in 100..10_100u64 {
            cache.created(key, String::new(), t0 + Duration::from_secs(20));
        }
        assert_eq!(cache.len(), 4, "never more than the capacity");
    }

    #[test]
    fn the_key_tells_objects_reasons_and_notes_apart() {
        let reference = |uid: &str| ObjectReference {
            uid: Some(uid.into()),
            name: Some("a".into()),
            namespace: Some("ns".into()),
            ..ObjectReference::default()
        };
        let record = |reason, note| Record {
            warning: false,
            reason,
            note,
            action: "Reconcile",
        };
        let base = series_key(&record("Synced", "x"), &reference("u1"));
        assert_eq!(base, series_key(&record("Synced", "x"), &reference("u1")));
        assert_ne!(base, series_key(&record("Synced", "y"), &reference("u1")));
        assert_ne!(base, series_key(&record("Conflict", "x"), &reference("u1")));
        assert_ne!(base, series_key(&record("Synced", "x"), &reference("u2")));
    }
}
