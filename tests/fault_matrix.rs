//! The fault matrix: a fleet of 200 ThingShadows and 50 RetainedMessages kept by the real
//! operator through data-plane faults (throttling, 5xx, latency, dropped connections
//! before and after the request was applied, a 60-second outage), Kubernetes faults on a
//! real control plane (a concurrent writer updating the same objects, cut watches, 410 and
//! relist after etcd compaction, an apiserver restart, a slow apiserver, refused
//! connections) and 20 SIGKILLs of the operator during convergence.
//!
//! Each scenario changes every spec (device reports arrive meanwhile) and asserts, from the
//! servers' own counts:
//! - every resource ends Ready for its generation, and the cloud equals its spec (the
//!   shadow's desired section, the retained payload): no lost update;
//! - no topic received more publishes than its spec changed: no duplicate publish;
//! - during the outage, no resource had more than [`OUTAGE_BOUND`] data-plane calls in the
//!   minute (no hot retry loop).
//!
//! One summary line per scenario goes to stderr. The SIGKILL moments come from a seeded
//! RNG: the seed is printed, and `SHADOWSYNC_FAULT_SEED=N` replays it.
//!
//! Run: `cargo test --test fault_matrix -- --nocapture`.
//! The operator runs with `--max-rps 200` (the default 100 keeps a quarter of the
//! lowest AWS quota free; 200 keeps the matrix within its time budget).

#[path = "e2e/mod.rs"]
mod e2e;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use kube::api::{Api, DynamicObject, ListParams};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shadowsync::dataplane::resilient::{ResiliencePolicy, Resilient};
use shadowsync::dataplane::server::TargetStats;
use shadowsync::dataplane::DataPlane;

const NAMESPACE: &str = "fault-matrix";
const SHADOWS: usize = 200;
const RETAINED: usize = 50;
/// Every 4th thing has a device that reports.
const DEVICE_EVERY: usize = 4;
const OPERATOR_ARGS: [&str; 2] = ["--max-rps", "200"];
/// How long a scenario may take to converge (generous: a loaded 2-core machine).
const CONVERGE_DEADLINE: Duration = Duration::from_secs(240);
const OUTAGE: Duration = Duration::from_secs(60);
const KILLS: usize = 20;
const SEED_ENV: &str = "SHADOWSYNC_FAULT_SEED";

/// Data-plane calls one resource may make in a minute while every call fails.
///
/// - The data-plane client makes at most 5 attempts per call (`ResiliencePolicy`), and a
///   pass in an outage makes exactly one call, its first read, so a pass costs <= 5 calls.
/// - After a failed pass the operator waits a per-resource backoff drawn from
///   [0.5, 1) x 2 s x 2^(n-1) after the n-th failure in a row: at least 1, 2, 4, 8, 16,
///   32 s. Pass k therefore starts at least 2^(k-1) - 1 s after the first: the 7th at
///   63 s or later. At most 6 passes fall into a minute.
/// - So at most 6 x 5 = 30 calls per resource per minute, for a resource whose spec
///   changes once in that minute (the change starts the first pass). Every further spec
///   change or forced reconcile can add one pass (5 calls); the test makes none.
const OUTAGE_BOUND: u64 = 6 * 5;

/// How soon after an outage every resource must be Ready again. After a minute of
/// failures a resource's own backoff is up to 64 s; the operator retries the resources
/// that waited for the data plane as soon as it answers again, so convergence takes
/// about what a spec change of every resource takes (a few seconds), not the backoff.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

fn shadow_name(i: usize) -> String {
    format!("lamp-{i:03}")
}
fn thing_name(i: usize) -> String {
    format!("fm-lamp-{i:03}")
}
fn retained_name(i: usize) -> String {
    format!("config-{i:02}")
}
fn topic_name(i: usize) -> String {
    format!("fm/site/{i:02}/config")
}

fn shadow_desired(i: usize, round: u32) -> Value {
    json!({
        "power": if round.is_multiple_of(2) { "on" } else { "off" },
        "level": round,
        "settings": {"id": i, "mode": format!("m{round}")},
    })
}

fn retained_payload(i: usize, round: u32) -> Value {
    json!({"round": round, "site": i, "interval": 30 + round})
}

/// What the test declared, and counts of it.
struct Fleet {
    /// Round of each shadow's current spec.
    shadow_round: Vec<u32>,
    retained_round: Vec<u32>,
    /// Spec versions declared per topic since the start (create included).
    declared: BTreeMap<String, u64>,
}

impl Fleet {
    /// Things and topics only the operator calls on (devices report to every
    /// [`DEVICE_EVERY`]th thing, and those calls count on the thing too).
    fn targets(&self) -> Vec<String> {
        (0..SHADOWS)
            .filter(|i| i % DEVICE_EVERY != 0)
            .map(thing_name)
            .chain((0..RETAINED).map(topic_name))
            .collect()
    }

    /// Every thing and topic.
    fn all_targets(&self) -> Vec<String> {
        (0..SHADOWS)
            .map(thing_name)
            .chain((0..RETAINED).map(topic_name))
            .collect()
    }
}

/// Counts of one scenario, all from the servers.
struct Figures {
    name: String,
    calls: u64,
    failed: u64,
    max_calls_per_resource: u64,
    publishes: u64,
    spec_changes: u64,
    converge: Duration,
    extra: String,
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "fault-matrix {:<14} calls={:<6} failed_calls(retried)={:<5} max_operator_calls/resource={:<3} publishes={}/{} spec changes converge={:.1}s{}",
            self.name,
            self.calls,
            self.failed,
            self.max_calls_per_resource,
            self.publishes,
            self.spec_changes,
            self.converge.as_secs_f64(),
            self.extra
        )
    }
}

fn kind_api(s: &Stack, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(s.client.clone(), NAMESPACE, &kind.resource())
}

/// The resources not yet Ready for their generation (`Err` while the apiserver is away).
async fn not_ready(s: &Stack) -> Result<Vec<String>, String> {
    let mut pending = Vec::new();
    let mut seen = 0;
    for kind in [Kind::Shadow, Kind::Retained] {
        let list = kind_api(s, kind)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("list: {e}"))?;
        for obj in list.items {
            seen += 1;
            let obj = serde_json::to_value(obj).expect("json");
            if !(condition_is(&obj, "Ready", "True") && is_current(&obj)) {
                pending.push(format!(
                    "{}/{} ({:?})",
                    kind.name(),
                    obj["metadata"]["name"].as_str().unwrap_or_default(),
                    condition_reason(&obj, "Ready")
                ));
            }
        }
    }
    if seen != SHADOWS + RETAINED {
        pending.push(format!("only {seen} resources listed"));
    }
    Ok(pending)
}

/// Polls until every resource is Ready for its generation; returns how long it took.
async fn converge(s: &Stack, since: Instant, what: &str) -> Duration {
    eventually(
        &format!("{what}: every resource Ready"),
        CONVERGE_DEADLINE,
        async || {
            let pending = not_ready(s).await?;
            if pending.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} not ready, e.g. {:?}",
                    pending.len(),
                    &pending[..pending.len().min(5)]
                ))
            }
        },
    )
    .await;
    since.elapsed()
}

/// The cloud equals every spec: each shadow's desired section, each retained payload.
async fn assert_cloud_matches(s: &Stack, fleet: &Fleet, what: &str) {
    for i in 0..SHADOWS {
        let doc = s
            .shadow(&thing_name(i), None)
            .await
            .unwrap_or_else(|| panic!("{what}: no shadow for {}", thing_name(i)));
        let want = shadow_desired(i, fleet.shadow_round[i]);
        assert_eq!(
            doc.state.desired.as_ref(),
            Some(&want),
            "{what}: lost update on {}",
            thing_name(i)
        );
    }
    for i in 0..RETAINED {
        let message = s
            .retained(&topic_name(i))
            .await
            .unwrap_or_else(|e| panic!("{what}: no retained message on {}: {e}", topic_name(i)));
        let got: Value = serde_json::from_slice(&message.payload).expect("a JSON payload");
        assert_eq!(
            got,
            retained_payload(i, fleet.retained_round[i]),
            "{what}: lost update on {}",
            topic_name(i)
        );
    }
}

/// Changes the spec of every resource (retrying while the apiserver is away).
async fn change_all(s: &Stack, fleet: &mut Fleet, round: u32, only: Option<&[usize]>) -> u64 {
    let all: Vec<usize> = (0..SHADOWS + RETAINED).collect();
    let picked = only.unwrap_or(&all);
    for &n in picked {
        if n < SHADOWS {
            let patch = json!({"spec": {"desired": shadow_desired(n, round)}});
            patch_until_accepted(s, Kind::Shadow, &shadow_name(n), patch).await;
            fleet.shadow_round[n] = round;
        } else {
            let i = n - SHADOWS;
            let patch = json!({"spec": {"payload": {"json": retained_payload(i, round)}}});
            patch_until_accepted(s, Kind::Retained, &retained_name(i), patch).await;
            fleet.retained_round[i] = round;
            *fleet.declared.entry(topic_name(i)).or_default() += 1;
        }
    }
    picked.iter().filter(|n| **n >= SHADOWS).count() as u64
}

async fn patch_until_accepted(s: &Stack, kind: Kind, name: &str, patch: Value) {
    eventually(&format!("a patch of {name}"), DEADLINE, async || {
        s.try_merge_patch(kind, NAMESPACE, name, patch.clone())
            .await
            .map(drop)
    })
    .await;
}

/// Devices: report `reported` state through the data plane, as a device would (with
/// their own retries), until stopped. Returns the number of reports that landed.
fn start_devices(s: &Stack) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let policy = ResiliencePolicy {
        max_attempts: 8,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(500),
        ..ResiliencePolicy::passthrough()
    };
    let plane = Resilient::new(Arc::new(s.plane.clone()), policy);
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut landed = 0;
        let mut seq = 0u64;
        while !flag.load(Ordering::SeqCst) {
            for i in (0..SHADOWS).step_by(DEVICE_EVERY) {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                seq += 1;
                let report = json!({"state": {"reported": {"seq": seq, "online": true}}});
                if plane
                    .update_thing_shadow(&thing_name(i), None, report.to_string().into())
                    .await
                    .is_ok()
                {
                    landed += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        landed
    });
    (stop, task)
}

async fn stop_devices(devices: (Arc<AtomicBool>, tokio::task::JoinHandle<u64>)) -> u64 {
    devices.0.store(true, Ordering::SeqCst);
    devices.1.await.expect("the device task")
}

/// Publishes per topic since `before`, checked against the spec versions declared per
/// topic in the same span: never more.
fn assert_no_duplicate_publish(
    what: &str,
    before: &TargetStats,
    after: &TargetStats,
    declared_before: &BTreeMap<String, u64>,
    declared_after: &BTreeMap<String, u64>,
) -> u64 {
    let mut total = 0;
    for i in 0..RETAINED {
        let topic = topic_name(i);
        let published = after.publishes_of(&topic) - before.publishes_of(&topic);
        let declared = declared_after.get(&topic).copied().unwrap_or(0)
            - declared_before.get(&topic).copied().unwrap_or(0);
        assert!(
            published <= declared,
            "{what}: {topic} was published {published} times for {declared} spec change(s)"
        );
        total += published;
    }
    total
}

/// The servers' counts before a scenario, to judge it by once it has converged.
struct Before {
    stats: Stats,
    targets: TargetStats,
    declared: BTreeMap<String, u64>,
}

impl Before {
    async fn take(s: &Stack, fleet: &Fleet) -> Before {
        Before {
            stats: s.stats().await,
            targets: s.target_stats().await,
            declared: fleet.declared.clone(),
        }
    }

    /// After the scenario converged, its faults cleared: the cloud equals every spec, no
    /// topic received more publishes than its declared versions, and the figures since
    /// `self` (most calls on one resource over `fleet.targets()`).
    async fn verify(
        &self,
        s: &Stack,
        fleet: &Fleet,
        name: &str,
        spec_changes: u64,
        converge: Duration,
    ) -> Figures {
        let stats = s.stats().await;
        let targets = s.target_stats().await;
        assert_cloud_matches(s, fleet, name).await;
        let publishes = assert_no_duplicate_publish(
            name,
            &self.targets,
            &targets,
            &self.declared,
            &fleet.declared,
        );
        let (max, _) = max_calls(&self.targets, &targets, &fleet.targets());
        Figures {
            name: name.into(),
            calls: stats.total() - self.stats.total(),
            failed: stats.0.totals.errors - self.stats.0.totals.errors,
            max_calls_per_resource: max,
            publishes,
            spec_changes,
            converge,
            extra: String::new(),
        }
    }
}

fn max_calls(before: &TargetStats, after: &TargetStats, targets: &[String]) -> (u64, f64) {
    let deltas: Vec<u64> = targets
        .iter()
        .map(|t| after.calls_of(t) - before.calls_of(t))
        .collect();
    let max = deltas.iter().copied().max().unwrap_or(0);
    let mean = deltas.iter().sum::<u64>() as f64 / deltas.len().max(1) as f64;
    (max, mean)
}

/// One scenario: `disturb` switches the fault on, every spec changes, devices report,
/// the fleet converges; then the fault is cleared and the cloud checked.
async fn scenario(
    s: &Stack,
    fleet: &mut Fleet,
    round: u32,
    name: &str,
    faults: Option<Value>,
) -> Figures {
    if let Some(faults) = &faults {
        s.set_faults(faults.clone()).await;
    }
    let before = Before::take(s, fleet).await;
    let started = Instant::now();
    let devices = start_devices(s);
    let changes = change_all(s, fleet, round, None).await;
    let took = converge(s, started, name).await;
    let reports = stop_devices(devices).await;
    let injected = s.stats().await.0.injected;
    let prior = &before.stats.0.injected;
    if faults.is_some() {
        s.set_faults(json!({})).await;
        let count = injected.throttled
            + injected.errors
            + injected.dropped
            + injected.dropped_after
            + injected.delayed
            - (prior.throttled
                + prior.errors
                + prior.dropped
                + prior.dropped_after
                + prior.delayed);
        assert!(count > 0, "{name}: no fault was injected");
    }
    let mut f = before.verify(s, fleet, name, changes, took).await;
    f.extra = format!(
        " device_reports={reports} injected: throttled={} errors={} dropped_before={} dropped_after_apply={} delayed={}",
        injected.throttled - prior.throttled,
        injected.errors - prior.errors,
        injected.dropped - prior.dropped,
        injected.dropped_after - prior.dropped_after,
        injected.delayed - prior.delayed,
    );
    f
}

/// A concurrent writer: labels every object again and again with a plain update (read,
/// change, write with the read resourceVersion), as a tool that is not the operator.
fn start_labeller(s: &Stack) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(u64, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let apis = [kind_api(s, Kind::Shadow), kind_api(s, Kind::Retained)];
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let (mut writes, mut conflicts) = (0u64, 0u64);
        let mut pass = 0u64;
        while !flag.load(Ordering::SeqCst) {
            pass += 1;
            for api in &apis {
                let Ok(list) = api.list(&ListParams::default()).await else {
                    continue;
                };
                for mut obj in list.items {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    obj.metadata
                        .labels
                        .get_or_insert_with(Default::default)
                        .insert("e2e-labeller-pass".into(), pass.to_string());
                    match api.replace(&name, &Default::default(), &obj).await {
                        Ok(_) => writes += 1,
                        Err(kube::Error::Api(status)) if status.code == 409 => conflicts += 1,
                        Err(_) => {}
                    }
                }
            }
        }
        (writes, conflicts)
    });
    (stop, task)
}

async fn stop_labeller(
    labeller: (Arc<AtomicBool>, tokio::task::JoinHandle<(u64, u64)>),
) -> (u64, u64) {
    labeller.0.store(true, Ordering::SeqCst);
    labeller.1.await.expect("the labeller")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix() {
    let run_started = Instant::now();
    let mut s = Stack::without_operator("fault-matrix").await;
    s.start_operator(&OPERATOR_ARGS).await;
    s.create_namespace(NAMESPACE).await;
    let mut fleet = Fleet {
        shadow_round: vec![0; SHADOWS],
        retained_round: vec![0; RETAINED],
        declared: BTreeMap::new(),
    };
    let started = Instant::now();
    for i in 0..SHADOWS {
        s.create(
            Kind::Shadow,
            NAMESPACE,
            &shadow_name(i),
            json!({"thingName": thing_name(i), "desired": shadow_desired(i, 0)}),
        )
        .await;
    }
    for i in 0..RETAINED {
        s.create(
            Kind::Retained,
            NAMESPACE,
            &retained_name(i),
            json!({"topic": topic_name(i), "qos": 1, "payload": {"json": retained_payload(i, 0)}}),
        )
        .await;
        fleet.declared.insert(topic_name(i), 1);
    }
    let took = converge(&s, started, "create").await;
    assert_cloud_matches(&s, &fleet, "create").await;
    let totals = s.target_stats().await;
    for i in 0..RETAINED {
        assert_eq!(
            totals.publishes_of(&topic_name(i)),
            1,
            "create: {}",
            topic_name(i)
        );
    }
    say(&format!(
        "fault-matrix create: {} resources Ready in {:.1}s, {} calls",
        SHADOWS + RETAINED,
        took.as_secs_f64(),
        s.stats().await.total()
    ));

    let mut figures = Vec::new();
    let mut round = 0;

    // ---- data-plane faults
    for (name, faults) in [
        ("throttle-30%", json!({"throttleRate": 0.3})),
        ("errors-20%", json!({"errorRate": 0.2})),
        ("latency-300ms", json!({"latencyMs": 300})),
        // Half before the request reaches the store, half after it was applied with the
        // answer lost: the case where a blind retry would publish twice.
        (
            "dropped-10+10%",
            json!({"dropRate": 0.1, "dropAfterRate": 0.1}),
        ),
    ] {
        round += 1;
        let f = scenario(&s, &mut fleet, round, name, Some(faults)).await;
        say(&f.line());
        figures.push(f);
    }

    // ---- a full outage of 60 s, every spec changed as it begins
    round += 1;
    {
        let name = "outage-60s";
        s.set_faults(json!({"outage": true})).await;
        let before = Before::take(&s, &fleet).await;
        let outage_started = Instant::now();
        let changes = change_all(&s, &mut fleet, round, None).await;
        // The outage lasts its minute: this is the fault's length, not a wait for a state.
        tokio::time::sleep(OUTAGE.saturating_sub(outage_started.elapsed())).await;
        let targets_in_outage = s.target_stats().await;
        let stats_in_outage = s.stats().await;
        let outage_window = outage_started.elapsed();
        s.set_faults(json!({})).await;
        let recovery_started = Instant::now();
        // No device reports during the outage: every call on every target is the operator's.
        let (max, mean) = max_calls(&before.targets, &targets_in_outage, &fleet.all_targets());
        assert!(
            max <= OUTAGE_BOUND,
            "{name}: a resource made {max} data-plane calls in {outage_window:?} of outage (bound {OUTAGE_BOUND})"
        );
        assert!(max > 0, "{name}: no call was tried during the outage");
        let recovered = converge(&s, recovery_started, name).await;
        assert!(
            recovered <= RECOVERY_BOUND,
            "{name}: Ready {recovered:?} after the outage ended (bound {RECOVERY_BOUND:?}): \
             resources waited out their backoff"
        );
        let mut f = before.verify(&s, &fleet, name, changes, recovered).await;
        f.max_calls_per_resource = max;
        f.extra = format!(
            " in_outage: calls={} max_calls/resource/min={max} (bound {OUTAGE_BOUND}) mean={mean:.1} window={:.1}s; converge counted from the end of the outage (bound {RECOVERY_BOUND:?})",
            stats_in_outage.total() - before.stats.total(),
            outage_window.as_secs_f64()
        );
        say(&f.line());
        figures.push(f);
    }

    // ---- Kubernetes faults, from the real components (and the proxy in front of the
    // apiserver for what they do not do on demand)
    for name in [
        "k8s-concurrent-writer",
        "k8s-watch-cut",
        "k8s-410-relist",
        "k8s-restart",
        "k8s-slow-apiserver",
        "k8s-refused",
    ] {
        round += 1;
        let before = Before::take(&s, &fleet).await;
        let started = Instant::now();
        let devices = start_devices(&s);
        let first: Vec<usize> = (0..SHADOWS + RETAINED).step_by(2).collect();
        let second: Vec<usize> = (1..SHADOWS + RETAINED).step_by(2).collect();
        let mut extra = String::new();
        let changes = match name {
            "k8s-concurrent-writer" => {
                // Another tool labels every object while the operator works: its updates
                // carry resourceVersions and race the operator's writes on the same
                // objects (the operator's own writes are patches, which do not).
                let writer = start_labeller(&s);
                let n = change_all(&s, &mut fleet, round, None).await;
                converge(&s, started, name).await;
                let (writes, conflicts) = stop_labeller(writer).await;
                assert!(writes > 0, "{name}: the concurrent writer wrote nothing");
                extra = format!(" writer_updates={writes} writer_409s={conflicts}");
                n
            }
            "k8s-watch-cut" => {
                let n = change_all(&s, &mut fleet, round, Some(&first)).await;
                assert!(s.cut_watches() > 0, "{name}: no connection to cut");
                n + change_all(&s, &mut fleet, round, Some(&second)).await
            }
            "k8s-410-relist" => {
                let n = change_all(&s, &mut fleet, round, Some(&first)).await;
                s.expire_watch_history().await;
                n + change_all(&s, &mut fleet, round, Some(&second)).await
            }
            "k8s-restart" => {
                let n = change_all(&s, &mut fleet, round, Some(&first)).await;
                s.cluster.component("stop", "apiserver");
                // Patches retry until the apiserver is back.
                let back = async {
                    tokio::task::spawn_blocking({
                        let dir = s.cluster.dir.clone();
                        move || {
                            std::thread::sleep(Duration::from_secs(2));
                            e2e::cluster::cluster_sh(&[
                                "start",
                                "apiserver",
                                &dir.display().to_string(),
                            ]);
                        }
                    })
                    .await
                    .expect("apiserver start")
                };
                let (n2, ()) = tokio::join!(change_all(&s, &mut fleet, round, Some(&second)), back);
                n + n2
            }
            "k8s-slow-apiserver" => {
                // Every new connection of the operator waits 2 s; open ones are cut so
                // that its watches and its request connections go through the delay.
                s.proxy.delay(Duration::from_secs(2));
                s.cut_watches();
                let n = change_all(&s, &mut fleet, round, None).await;
                converge(&s, started, name).await;
                s.proxy.delay(Duration::ZERO);
                n
            }
            _ => {
                // The apiserver refuses the operator's connections for 10 s.
                let n = change_all(&s, &mut fleet, round, Some(&first)).await;
                s.proxy.refuse(true);
                let refused_from = Instant::now();
                let n2 = change_all(&s, &mut fleet, round, Some(&second)).await;
                tokio::time::sleep(Duration::from_secs(10).saturating_sub(refused_from.elapsed()))
                    .await;
                s.proxy.refuse(false);
                n + n2
            }
        };
        let took = converge(&s, started, name).await;
        let reports = stop_devices(devices).await;
        let mut f = before.verify(&s, &fleet, name, changes, took).await;
        f.extra = format!(" device_reports={reports}{extra}");
        say(&f.line());
        figures.push(f);
    }

    // ---- SIGKILL of the operator at random moments during convergence
    {
        let name = "sigkill-x20";
        let seed: u64 = match std::env::var(SEED_ENV) {
            Ok(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("{SEED_ENV}={text:?} is not a number")),
            Err(_) => rand::random(),
        };
        say(&format!(
            "fault-matrix {name}: seed {seed} (replay with {SEED_ENV}={seed})"
        ));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let before = Before::take(&s, &fleet).await;
        let started = Instant::now();
        let devices = start_devices(&s);
        let mut changes = 0;
        let mut kill_moments = Vec::new();
        let restarts = AtomicU64::new(0);
        for _ in 0..KILLS {
            round += 1;
            // A random fifth of the fleet changes, then the operator dies at a random
            // moment while it converges.
            let picked: Vec<usize> = (0..SHADOWS + RETAINED)
                .filter(|_| rng.random_bool(0.2))
                .collect();
            changes += change_all(&s, &mut fleet, round, Some(&picked)).await;
            let moment = Duration::from_millis(rng.random_range(0..1500));
            kill_moments.push(moment.as_millis());
            // The moment of the kill is the scenario's random input, not a wait.
            tokio::time::sleep(moment).await;
            let operator = s.operator.take().expect("the operator runs");
            drop(operator); // SIGKILL, then reaped
            s.start_operator(&OPERATOR_ARGS).await;
            restarts.fetch_add(1, Ordering::SeqCst);
        }
        let took = converge(&s, started, name).await;
        let reports = stop_devices(devices).await;
        let mut f = before.verify(&s, &fleet, name, changes, took).await;
        f.extra = format!(
            " device_reports={reports} kills={} seed={seed} kill_after_ms={kill_moments:?}; converge counted from the first change",
            restarts.load(Ordering::SeqCst)
        );
        say(&f.line());
        figures.push(f);
    }

    // Over the whole run: no topic was published more often than its spec was declared.
    let totals = s.target_stats().await;
    for i in 0..RETAINED {
        let topic = topic_name(i);
        assert!(
            totals.publishes_of(&topic) <= fleet.declared[&topic],
            "{topic}: {} publishes for {} declared versions",
            totals.publishes_of(&topic),
            fleet.declared[&topic]
        );
    }
    let published: u64 = (0..RETAINED)
        .map(|i| totals.publishes_of(&topic_name(i)))
        .sum();
    let declared: u64 = fleet.declared.values().sum();
    say("fault-matrix summary:");
    for f in &figures {
        say(&format!("  {}", f.line()));
    }
    say(&format!(
        "fault-matrix total: {} ThingShadows, {} RetainedMessages, {published} publishes for {declared} declared payload versions, {:.0}s wall",
        SHADOWS,
        RETAINED,
        run_started.elapsed().as_secs_f64()
    ));
}
