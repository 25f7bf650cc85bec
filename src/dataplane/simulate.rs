//! Simulated devices: things that answer a desired state the way a device would.
//!
//! [`SimulatedDevices`] wraps a [`DataPlane`]. After an UpdateThingShadow that carries a
//! desired section, to the classic or a named shadow of a thing matching
//! [`SimulationSettings::devices`], the thing's device waits
//! [`SimulationSettings::report_delay_ms`], reads the shadow and writes its whole current
//! desired section into reported, through UpdateThingShadow on the wrapped data plane (so
//! the version, metadata and delta move as they do for a real device). It reports nothing
//! when reported already holds those values.
//!
//! Each matching thing behaves one way for its whole life, chosen from its name alone so
//! that a test can predict it: [`device_draw`] maps the name to a number `u` in `[0, 1)`
//! (the first 8 bytes of the SHA-256 of the name, big-endian, divided by 2^64); the device
//! is [`DeviceBehavior::Silent`] (never reports) when `u < silent_fraction`,
//! [`DeviceBehavior::Wrong`] (reports one value wrong: see [`wrong_report`]) when
//! `u < silent_fraction + wrong_fraction`, and [`DeviceBehavior::Faithful`] otherwise.
//!
//! Device reports are not client calls: the server's stats do not count them; the
//! simulator counts its own ([`SimulationStats`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{
    DataPlane, DataPlaneError, ErrorKind, NamedShadowPage, PublishRequest, RetainedMessageData,
    RetainedMessagePage, ShadowDeleted, ShadowDocument,
};
use crate::planner::tenancy::glob_matches;

/// What the simulated devices are and how they behave. JSON (camelCase) at
/// `GET/PUT/PATCH /_shadowsync/simulation`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SimulationSettings {
    /// Comma-separated globs on thing names (`*` any run, `?` one character); things
    /// matching any of them are simulated devices. Empty: no simulation.
    pub devices: String,
    /// How long a device takes to report after a desired update, in milliseconds.
    pub report_delay_ms: u64,
    /// Fraction (0..=1) of the devices that never report.
    pub silent_fraction: f64,
    /// Fraction (0..=1) of the devices that report one value wrong.
    pub wrong_fraction: f64,
}

/// How one simulated device answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceBehavior {
    /// Reports the desired state.
    Faithful,
    /// Reports the desired state with one value changed.
    Wrong,
    /// Never reports.
    Silent,
}

impl SimulationSettings {
    /// The patterns of [`Self::devices`].
    pub fn patterns(&self) -> Vec<&str> {
        self.devices
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Whether any thing is simulated.
    pub fn is_active(&self) -> bool {
        !self.patterns().is_empty()
    }

    /// Checks the patterns and fractions.
    pub fn validate(&self) -> Result<(), String> {
        for pattern in self.patterns() {
            if let Some(bad) = pattern
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '*' | '?')))
            {
                return Err(format!(
                    "devices: {pattern:?} has {bad:?}; a pattern holds thing-name characters \
                     ([a-zA-Z0-9:_-]) and the wildcards * and ?"
                ));
            }
        }
        for (name, fraction) in [
            ("silentFraction", self.silent_fraction),
            ("wrongFraction", self.wrong_fraction),
        ] {
            if !(0.0..=1.0).contains(&fraction) {
                return Err(format!("{name} must be between 0 and 1, got {fraction}"));
            }
        }
        if self.silent_fraction + self.wrong_fraction > 1.0 {
            return Err(format!(
                "silentFraction + wrongFraction must be at most 1, got {}",
                self.silent_fraction + self.wrong_fraction
            ));
        }
        Ok(())
    }

    /// How `thing` behaves, or `None` when it is not a simulated device.
    pub fn behavior(&self, thing: &str) -> Option<DeviceBehavior> {
        if !self.patterns().iter().any(|p| glob_matches(p, thing)) {
            return None;
        }
        let u = device_draw(thing);
        Some(if u < self.silent_fraction {
            DeviceBehavior::Silent
        } else if u < self.silent_fraction + self.wrong_fraction {
            DeviceBehavior::Wrong
        } else {
            DeviceBehavior::Faithful
        })
    }
}

/// The number in `[0, 1)` a thing's behaviour is chosen by: the first 8 bytes of the
/// SHA-256 of its name, big-endian, over 2^64. In Python:
/// `int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64`.
pub fn device_draw(thing: &str) -> f64 {
    let digest = Sha256::digest(thing.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 2^64 as f64 is exact; the quotient is below 1 for every u64 but the last 1024,
    // which round up to 1.0: clamp them.
    (u64::from_be_bytes(first) as f64 / 18_446_744_073_709_551_616.0).min(1.0 - f64::EPSILON)
}

/// What a [`DeviceBehavior::Wrong`] device reports for `desired`: the same document with
/// the first leaf (in sorted key order, depth first; an array counts as a leaf) changed:
/// a number plus 1, a string with `-wrong` appended, a boolean negated, an array with
/// `"wrong"` appended. `None` when `desired` has no leaf.
pub fn wrong_report(desired: &Value) -> Option<Value> {
    fn spoil(value: &mut Value) -> bool {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<String> = map.keys().cloned().collect();
                keys.sort();
                keys.into_iter()
                    .any(|key| map.get_mut(&key).is_some_and(spoil))
            }
            Value::Number(n) => {
                *value = if let Some(i) = n.as_i64() {
                    json!(i.checked_add(1).unwrap_or(i - 1))
                } else if let Some(u) = n.as_u64() {
                    json!(u.checked_add(1).unwrap_or(u - 1))
                } else {
                    json!(n.as_f64().unwrap_or_default() + 1.0)
                };
                true
            }
            Value::String(s) => {
                s.push_str("-wrong");
                true
            }
            Value::Bool(b) => {
                *b = !*b;
                true
            }
            Value::Array(items) => {
                items.push(json!("wrong"));
                true
            }
            Value::Null => false,
        }
    }
    let mut report = desired.clone();
    spoil(&mut report).then_some(report)
}

/// Whether `reported` already holds every value of `target`.
fn holds(reported: Option<&Value>, target: &Value) -> bool {
    match (reported, target) {
        (Some(Value::Object(have)), Value::Object(want)) => {
            want.iter().all(|(key, value)| holds(have.get(key), value))
        }
        (Some(have), want) => have == want,
        (None, _) => false,
    }
}

/// What the simulated devices did since the server started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationStats {
    /// Reports scheduled after a desired update of a reporting device.
    pub scheduled: u64,
    /// Reports written (faithful and wrong).
    pub reported: u64,
    /// Of those, reports with a wrong value.
    pub wrong: u64,
    /// Reports not needed: reported already held the values, or desired was gone.
    pub unchanged: u64,
    /// Desired updates of silent devices (never answered).
    pub ignored: u64,
    /// Reports that failed (the message is logged).
    pub failed: u64,
    /// Reports scheduled and not done yet.
    pub pending: u64,
}

/// `GET /_shadowsync/simulation`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationStatus {
    pub settings: SimulationSettings,
    pub stats: SimulationStats,
}

struct Shared {
    settings: RwLock<SimulationSettings>,
    stats: Mutex<SimulationStats>,
    pending: AtomicUsize,
    settled: Notify,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut SimulationStats)) {
        f(&mut self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
}

/// A [`DataPlane`] whose matching things behave like devices (see the module doc).
/// Clones share settings, counters and pending reports.
#[derive(Clone)]
pub struct SimulatedDevices {
    inner: Arc<dyn DataPlane>,
    shared: Arc<Shared>,
}

impl SimulatedDevices {
    /// Wraps `inner`; refuses invalid settings.
    pub fn new(inner: Arc<dyn DataPlane>, settings: SimulationSettings) -> Result<Self, String> {
        settings.validate()?;
        Ok(Self {
            inner,
            shared: Arc::new(Shared {
                settings: RwLock::new(settings),
                stats: Mutex::new(SimulationStats::default()),
                pending: AtomicUsize::new(0),
                settled: Notify::new(),
            }),
        })
    }

    pub fn settings(&self) -> SimulationSettings {
        self.shared
            .settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the settings; reports already scheduled still happen.
    pub fn set_settings(&self, settings: SimulationSettings) -> Result<(), String> {
        settings.validate()?;
        tracing::info!(?settings, "device simulation changed");
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        Ok(())
    }

    pub fn stats(&self) -> SimulationStats {
        let mut stats = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        stats.pending = self.shared.pending.load(Ordering::SeqCst) as u64;
        stats
    }

    pub fn status(&self) -> SimulationStatus {
        SimulationStatus {
            settings: self.settings(),
            stats: self.stats(),
        }
    }

    /// Waits until no report is pending.
    pub async fn settled(&self) {
        loop {
            let notified = self.shared.settled.notified();
            if self.shared.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn after_update(&self, thing: &str, shadow: Option<&str>, response: &ShadowDocument) {
        // Only a desired section with values asks a device for something (`"desired":
        // null` removes it; the devices' own reports carry no desired section).
        if !matches!(&response.state.desired, Some(Value::Object(map)) if !map.is_empty()) {
            return;
        }
        let settings = self.settings();
        let Some(behavior) = settings.behavior(thing) else {
            return;
        };
        if behavior == DeviceBehavior::Silent {
            self.shared.count(|s| s.ignored += 1);
            return;
        }
        self.shared.count(|s| s.scheduled += 1);
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        let delay = Duration::from_millis(settings.report_delay_ms);
        let (inner, shared) = (self.inner.clone(), self.shared.clone());
        let (thing, shadow) = (thing.to_string(), shadow.map(str::to_string));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            report(&*inner, &shared, &thing, shadow.as_deref(), behavior).await;
            if shared.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                shared.settled.notify_waiters();
            }
        });
    }
}

/// One device report: read the shadow, write desired (or its wrong version) to reported.
async fn report(
    inner: &dyn DataPlane,
    shared: &Shared,
    thing: &str,
    shadow: Option<&str>,
    behavior: DeviceBehavior,
) {
    let doc = match inner.get_thing_shadow(thing, shadow).await {
        Ok(doc) => doc,
        Err(err) if err.kind == ErrorKind::ResourceNotFound => {
            shared.count(|s| s.unchanged += 1);
            return;
        }
        Err(err) => {
            tracing::warn!(thing, ?shadow, error = %err, "simulated device: cannot read its shadow");
            shared.count(|s| s.failed += 1);
            return;
        }
    };
    let Some(desired) = doc.state.desired.filter(Value::is_object) else {
        shared.count(|s| s.unchanged += 1);
        return;
    };
    let target = match behavior {
        DeviceBehavior::Wrong => match wrong_report(&desired) {
            Some(wrong) => wrong,
            None => {
                shared.count(|s| s.unchanged += 1);
                return;
            }
        },
        _ => desired,
    };
    if holds(doc.state.reported.as_ref(), &target) {
        shared.count(|s| s.unchanged += 1);
        return;
    }
    let body = json!({"state": {"reported": target}}).to_string();
    match inner
        .update_thing_shadow(thing, shadow, Bytes::from(body))
        .await
    {
        Ok(_) => shared.count(|s| {
            s.reported += 1;
            if behavior == DeviceBehavior::Wrong {
                s.wrong += 1;
            }
        }),
        Err(err) => {
            tracing::warn!(thing, ?shadow, error = %err, "simulated device: its report was refused");
            shared.count(|s| s.failed += 1);
        }
    }
}

#[async_trait]
impl DataPlane for SimulatedDevices {
    async fn get_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDocument, DataPlaneError> {
        self.inner.get_thing_shadow(thing, shadow).await
    }

    async fn update_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        payload: Bytes,
    ) -> Result<ShadowDocument, DataPlaneError> {
        let response = self
            .inner
            .update_thing_shadow(thing, shadow, payload)
            .await?;
        self.after_update(thing, shadow, &response);
        Ok(response)
    }

    async fn delete_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDeleted, DataPlaneError> {
        self.inner.delete_thing_shadow(thing, shadow).await
    }

    async fn list_named_shadows_for_thing(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: Option<i32>,
    ) -> Result<NamedShadowPage, DataPlaneError> {
        self.inner
            .list_named_shadows_for_thing(thing, next_token, page_size)
            .await
    }

    async fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError> {
        self.inner.publish(request).await
    }

    async fn get_retained_message(
        &self,
        topic: &str,
    ) -> Result<RetainedMessageData, DataPlaneError> {
        self.inner.get_retained_message(topic).await
    }

    async fn list_retained_messages(
        &self,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<RetainedMessagePage, DataPlaneError> {
        self.inner
            .list_retained_messages(next_token, max_results)
            .await
    }
}

/// A duration for `--simulate-report-delay`: a number and a unit, `ms`, `s` or `m`
/// (`250ms`, `1.5s`, `2m`); `0` alone is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: use ms, s or m (e.g. 500ms, 2s)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let millis = match unit {
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !(0.0..=86_400_000.0).contains(&millis) {
        return Err(format!("{text:?} is not between 0 and 24h"));
    }
    Ok(Duration::from_millis(millis.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::embedded::EmbeddedDataPlane;

    fn settings(devices: &str, delay_ms: u64, silent: f64, wrong: f64) -> SimulationSettings {
        SimulationSettings {
            devices: devices.to_string(),
            report_delay_ms: delay_ms,
            silent_fraction: silent,
            wrong_fraction: wrong,
        }
    }

    fn simulated(s: SimulationSettings) -> (SimulatedDevices, Arc<EmbeddedDataPlane>) {
        let store = Arc::new(EmbeddedDataPlane::in_memory());
        let sim = SimulatedDevices::new(store.clone(), s).expect("valid settings");
        (sim, store)
    }

    async fn desire(sim: &SimulatedDevices, thing: &str, desired: Value) -> ShadowDocument {
        let body = json!({"state": {"desired": desired}}).to_string();
        sim.update_thing_shadow(thing, None, Bytes::from(body))
            .await
            .expect("update accepted")
    }

    /// A thing name of the wanted behaviour under `s`, found by trying `prefix-N`.
    fn thing_that(s: &SimulationSettings, prefix: &str, wanted: DeviceBehavior) -> String {
        (0..10_000)
            .map(|n| format!("{prefix}-{n}"))
            .find(|name| s.behavior(name) == Some(wanted))
            .expect("some name has each behaviour")
    }

    #[test]
    fn behaviour_follows_the_hash_of_the_name() {
        // Known values: a Python test computes the same numbers.
        let u = device_draw("lamp-1");
        assert!((0.0..1.0).contains(&u));
        assert_eq!(u, device_draw("lamp-1"));
        let s = settings("lamp-*", 0, 0.25, 0.25);
        let mut counts = [0usize; 3];
        for n in 0..4000 {
            let name = format!("lamp-{n}");
            let expected = match device_draw(&name) {
                u if u < 0.25 => DeviceBehavior::Silent,
                u if u < 0.5 => DeviceBehavior::Wrong,
                _ => DeviceBehavior::Faithful,
            };
            let got = s.behavior(&name).expect("matches the pattern");
            assert_eq!(got, expected);
            counts[got as usize] += 1;
        }
        // Roughly half faithful, a quarter each of the others.
        assert!((1800..2200).contains(&counts[0]), "{counts:?}");
        assert!((800..1200).contains(&counts[1]), "{counts:?}");
        assert!((800..1200).contains(&counts[2]), "{counts:?}");
        assert_eq!(s.behavior("plug-1"), None);
        assert_eq!(
            settings("plug-?, lamp-*", 0, 0.0, 0.0).behavior("plug-1"),
            Some(DeviceBehavior::Faithful)
        );
        assert_eq!(settings("", 0, 0.0, 0.0).behavior("plug-1"), None);
    }

    #[test]
    fn settings_are_checked() {
        assert!(settings("lamp-*, a?", 0, 0.5, 0.5).validate().is_ok());
        assert!(settings("lamp/*", 0, 0.0, 0.0).validate().is_err());
        assert!(settings("x", 0, 0.6, 0.5).validate().is_err());
        assert!(settings("x", 0, -0.1, 0.0).validate().is_err());
        assert!(settings("x", 0, 0.0, f64::NAN).validate().is_err());
        let parsed: SimulationSettings =
            serde_json::from_str(r#"{"devices":"a*","reportDelayMs":5}"#).expect("valid JSON");
        assert_eq!(parsed, settings("a*", 5, 0.0, 0.0));
        assert!(serde_json::from_str::<SimulationSettings>(r#"{"delay":1}"#).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["5", "s", "1h", "-1s", "1e9s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrong_reports_change_the_first_leaf() {
        assert_eq!(
            wrong_report(&json!({"b": 1, "a": {"y": "on", "x": 2.5}})),
            Some(json!({"b": 1, "a": {"y": "on", "x": 3.5}}))
        );
        assert_eq!(
            wrong_report(&json!({"power": "on"})),
            Some(json!({"power": "on-wrong"}))
        );
        assert_eq!(
            wrong_report(&json!({"on": true})),
            Some(json!({"on": false}))
        );
        assert_eq!(
            wrong_report(&json!({"l": [1]})),
            Some(json!({"l": [1, "wrong"]}))
        );
        assert_eq!(
            wrong_report(&json!({"a": {}, "b": i64::MAX})),
            Some(json!({"a": {}, "b": i64::MAX - 1}))
        );
        assert_eq!(wrong_report(&json!({"a": {}})), None);
    }

    #[test]
    fn holds_compares_values_not_sections() {
        let reported = json!({"a": 1, "b": {"c": 2, "d": 3}, "extra": true});
        assert!(holds(Some(&reported), &json!({"a": 1, "b": {"c": 2}})));
        assert!(!holds(Some(&reported), &json!({"a": 2})));
        assert!(!holds(Some(&reported), &json!({"z": 1})));
        assert!(!holds(None, &json!({"a": 1})));
    }

    #[tokio::test(start_paused = true)]
    async fn a_faithful_device_reports_desired_after_the_delay() {
        let s = settings("dev-*", 2_000, 0.0, 0.0);
        let (sim, store) = simulated(s);
        let written = desire(&sim, "dev-1", json!({"power": "on", "level": {"v": 3}})).await;

        let start = tokio::time::Instant::now();
        // No store call in between: a blocking call in flight would let tokio's paused
        // clock jump to the device's timer.
        tokio::time::sleep(Duration::from_millis(1_999)).await;
        let stats = sim.stats();
        assert_eq!(
            (stats.pending, stats.reported),
            (1, 0),
            "reported before the delay"
        );

        sim.settled().await;
        assert!(start.elapsed() >= Duration::from_millis(2_000));
        let after = store.get_thing_shadow("dev-1", None).await.unwrap();
        assert_eq!(
            after.state.reported,
            Some(json!({"power": "on", "level": {"v": 3}}))
        );
        assert_eq!(after.state.delta, None);
        assert_eq!(after.version, written.version + 1, "a report is one update");
        assert!(after.metadata.reported.is_some());
        let stats = sim.stats();
        assert_eq!((stats.scheduled, stats.reported, stats.pending), (1, 1, 0));

        // A second desired update: reported follows; an update of reported alone (as the
        // device's own) asks for nothing.
        desire(&sim, "dev-1", json!({"power": "off"})).await;
        sim.settled().await;
        let doc = store.get_thing_shadow("dev-1", None).await.unwrap();
        assert_eq!(doc.state.reported.as_ref().unwrap()["power"], "off");
        sim.update_thing_shadow(
            "dev-1",
            None,
            Bytes::from(json!({"state": {"reported": {"x": 1}}}).to_string()),
        )
        .await
        .unwrap();
        assert_eq!(sim.stats().scheduled, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn named_shadows_are_answered_too() {
        let (sim, store) = simulated(settings("dev-*", 10, 0.0, 0.0));
        let body = json!({"state": {"desired": {"mode": "eco"}}}).to_string();
        sim.update_thing_shadow("dev-2", Some("config"), Bytes::from(body))
            .await
            .unwrap();
        sim.settled().await;
        let doc = store
            .get_thing_shadow("dev-2", Some("config"))
            .await
            .unwrap();
        assert_eq!(doc.state.reported, Some(json!({"mode": "eco"})));
        assert!(store.get_thing_shadow("dev-2", None).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn silent_wrong_and_unmatched_things() {
        let s = settings("dev-*", 100, 0.3, 0.3);
        let silent = thing_that(&s, "dev", DeviceBehavior::Silent);
        let wrong = thing_that(&s, "dev", DeviceBehavior::Wrong);
        let (sim, store) = simulated(s);
        for thing in [silent.as_str(), wrong.as_str(), "other-1"] {
            desire(&sim, thing, json!({"power": "on", "temp": 20})).await;
        }
        sim.settled().await;
        tokio::time::sleep(Duration::from_secs(60)).await;

        let doc = store.get_thing_shadow(&silent, None).await.unwrap();
        assert_eq!(doc.state.reported, None, "a silent device never reports");
        let doc = store.get_thing_shadow("other-1", None).await.unwrap();
        assert_eq!(doc.state.reported, None, "not a simulated device");
        let doc = store.get_thing_shadow(&wrong, None).await.unwrap();
        assert_eq!(
            doc.state.reported,
            Some(json!({"power": "on-wrong", "temp": 20}))
        );
        assert_eq!(doc.state.delta, Some(json!({"power": "on"})));

        let stats = sim.stats();
        assert_eq!(stats.ignored, 1);
        assert_eq!((stats.reported, stats.wrong), (1, 1));

        // The wrong device does not report again what it already reported.
        desire(&sim, &wrong, json!({"power": "on"})).await;
        sim.settled().await;
        assert_eq!(sim.stats().unchanged, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn settings_change_at_runtime() {
        let (sim, store) = simulated(SimulationSettings::default());
        desire(&sim, "late-1", json!({"a": 1})).await;
        assert_eq!(sim.stats().scheduled, 0);
        assert!(sim.set_settings(settings("late-*", 0, 2.0, 0.0)).is_err());
        sim.set_settings(settings("late-*", 0, 0.0, 0.0)).unwrap();
        desire(&sim, "late-1", json!({"a": 2})).await;
        sim.settled().await;
        let doc = store.get_thing_shadow("late-1", None).await.unwrap();
        assert_eq!(doc.state.reported, Some(json!({"a": 2})));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_shadow_is_not_reported() {
        let (sim, store) = simulated(settings("dev-*", 1_000, 0.0, 0.0));
        desire(&sim, "dev-3", json!({"a": 1})).await;
        sim.delete_thing_shadow("dev-3", None).await.unwrap();
        sim.settled().await;
        assert!(store.get_thing_shadow("dev-3", None).await.is_err());
        assert_eq!(sim.stats().unchanged, 1);
    }
}
