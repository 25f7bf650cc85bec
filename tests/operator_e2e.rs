//! End-to-end tests of `shadowsync run`: the real binary against a real Kubernetes
//! control plane (etcd, kube-apiserver, kube-controller-manager from `tests/kube`) and
//! the local data plane (`shadowsync dataplane serve`), each a process of its own, driven
//! through the Kubernetes API, the data plane and kubectl. The operator runs as the
//! chart's ServiceAccount, bound by the chart's RBAC.
//!
//! Every test starts its own control plane and data plane (see `e2e/mod.rs`), so that
//! the call counters of the data plane and the audit log of the apiserver belong to that
//! test alone and tests can run in parallel. Names of namespaces, things and topics are
//! unique per test all the same.
//!
//! Run with `cargo test --test operator_e2e`; the first run builds the control plane
//! (`tests/kube/cluster.sh build`, cached). kubectl (`$SHADOWSYNC_KUBECTL` or on PATH)
//! is needed. Each test keeps the logs of its processes in `target/tmp/e2e/<test>/`
//! (the control plane's under `cluster/`); a failing test prints their last lines. Set
//! `SHADOWSYNC_E2E_OPERATOR_LOG` to a `RUST_LOG` filter for more operator logging.

#[path = "e2e/mod.rs"]
mod e2e;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shadowsync::dataplane::server::Operation;
use shadowsync::dataplane::{DataPlane, ErrorKind, PublishRequest};

const SHADOW: Kind = Kind::Shadow;
const RETAINED: Kind = Kind::Retained;

fn desired_of(doc: &shadowsync::dataplane::ShadowDocument) -> Value {
    doc.state.desired.clone().unwrap_or(Value::Null)
}

fn reported_of(doc: &shadowsync::dataplane::ShadowDocument) -> Value {
    doc.state.reported.clone().unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------
// 1. create

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_becomes_ready_with_status() {
    let s = Stack::start("create").await;
    let ns = "e2e-create";
    s.create_namespace(ns).await;

    let desired = json!({"power": "on", "color": {"r": 255, "g": 180}, "modes": ["eco", "boost"]});
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": "e2e-create-lamp", "desired": desired}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    let stats = s.stats().await;
    let status_writes = s.status_writes().await;

    let cloud = s
        .shadow("e2e-create-lamp", None)
        .await
        .expect("the shadow exists");
    assert_eq!(desired_of(&cloud), desired, "the cloud holds the spec");
    let status = &obj["status"];
    assert_eq!(status["shadow"]["version"], json!(cloud.version));
    assert_eq!(status["shadow"]["desired"], desired);
    assert_eq!(status["shadow"]["delta"], desired, "nothing reported yet");
    assert_eq!(
        status["managedPaths"],
        json!(["/color/g", "/color/r", "/modes", "/power"]),
        "arrays are leaves"
    );
    assert_eq!(status["observedGeneration"], json!(1));
    assert_eq!(obj["metadata"]["generation"], json!(1));
    assert!(status["lastSyncTime"].is_string());
    assert_eq!(finalizers(&obj), vec![FINALIZER.to_string()]);

    let conditions = status["conditions"].as_array().expect("conditions");
    for c in conditions {
        assert_eq!(c["observedGeneration"], json!(1), "condition {c}");
        assert!(
            c["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "condition {c}"
        );
        assert!(c["message"].is_string(), "condition {c}");
        assert!(c["lastTransitionTime"].is_string(), "condition {c}");
    }
    assert!(condition_is(&obj, "Ready", "True"));
    assert!(condition_is(&obj, "Synced", "True"));
    assert!(condition_is(&obj, "Converged", "False"));
    assert_eq!(
        condition_reason(&obj, "Converged").as_deref(),
        Some("AwaitingDevice")
    );
    // Abnormal-true conditions are absent or False once Ready.
    for abnormal in ["Reconciling", "Stalled"] {
        assert!(
            !condition_is(&obj, abnormal, "True"),
            "{abnormal} is True on a Ready resource: {status}"
        );
    }

    // What one create costs: one read (404) and one write; one status write.
    assert_eq!(stats.calls(Operation::GetThingShadow), 1, "{:?}", stats.0);
    assert_eq!(
        stats.calls(Operation::UpdateThingShadow),
        1,
        "{:?}",
        stats.0
    );
    assert_eq!(stats.total(), 2, "{:?}", stats.0);
    assert_eq!(status_writes, 1, "status writes for one create");
    // And on the resource itself, one more patch: the finalizer.
    let patches = s.api_count("verb=patch&group=iot.shadowsync.dev").await;
    assert_eq!(patches, 2, "the finalizer and the status");
    say(&format!(
        "create: {} data-plane calls, {status_writes} status write(s)",
        stats.total()
    ));
    let event = s.wait_event(ns, "lamp", "Normal", "Synced").await;
    assert!(
        event
            .message
            .unwrap_or_default()
            .contains("e2e-create-lamp"),
        "the event names the shadow"
    );

    // A named shadow of the same thing is a target of its own.
    s.create(
        SHADOW,
        ns,
        "lamp-config",
        json!({"thingName": "e2e-create-lamp", "shadowName": "config", "desired": {"interval": 30}}),
    )
    .await;
    let named = s.wait_ready(SHADOW, ns, "lamp-config").await;
    let cloud = s
        .shadow("e2e-create-lamp", Some("config"))
        .await
        .expect("the named shadow exists");
    assert_eq!(desired_of(&cloud), json!({"interval": 30}));
    assert_eq!(named["status"]["shadow"]["version"], json!(cloud.version));
    let classic = s.shadow("e2e-create-lamp", None).await.expect("classic");
    assert_eq!(
        desired_of(&classic),
        desired,
        "the classic shadow is untouched"
    );
}

// ---------------------------------------------------------------------------------
// 2. spec change

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_change_makes_exactly_one_write() {
    let s = Stack::start("spec-change").await;
    let ns = "e2e-change";
    s.create_namespace(ns).await;
    let thing = "e2e-change-lamp";
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "on", "level": 3}}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "lamp").await;
    let before = s.stats().await;
    let writes_before = s.status_writes().await;

    s.merge_patch(
        SHADOW,
        ns,
        "lamp",
        json!({"spec": {"desired": {"level": 7}}}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    let after = s.stats().await;
    assert_eq!(obj["metadata"]["generation"], json!(2));
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        1,
        "one spec change, one UpdateThingShadow: {:?}",
        after.0
    );
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"power": "on", "level": 7}));
    assert_eq!(obj["status"]["shadow"]["desired"]["level"], json!(7));
    assert_eq!(obj["status"]["shadow"]["version"], json!(cloud.version));
    assert_eq!(
        s.status_writes().await - writes_before,
        1,
        "one status write"
    );

    // A spec change that leaves the desired state alone writes nothing to the cloud.
    let before = s.stats().await;
    s.merge_patch(
        SHADOW,
        ns,
        "lamp",
        json!({"spec": {"conflictPolicy": "Preserve"}}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    assert_eq!(obj["metadata"]["generation"], json!(3));
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        0,
        "{:?}",
        after.0
    );
    assert_eq!(
        after.since(&before, Operation::GetThingShadow),
        1,
        "one read to verify"
    );

    // A forced sync of a resource in sync reads and echoes the request, and writes
    // nothing to the cloud.
    let before = s.stats().await;
    let at = "forced-1";
    s.annotate(SHADOW, ns, "lamp", RECONCILE_REQUESTED, Some(at))
        .await;
    let obj = s
        .wait_status(SHADOW, ns, "lamp", "the forced sync handled", |o| {
            o["status"]["lastHandledReconcileAt"] == at
        })
        .await;
    assert!(condition_is(&obj, "Ready", "True"), "{}", obj["status"]);
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        0,
        "{:?}",
        after.0
    );
    assert_eq!(
        after.since(&before, Operation::GetThingShadow),
        1,
        "{:?}",
        after.0
    );

    // Quick successive edits (a key added, removed, another added) end in the last
    // spec, with at most one write per edit.
    let before = s.stats().await;
    let edits = [
        json!({"extra": 1}),
        json!({"extra": null, "mode": "a"}),
        json!({"mode": "b"}),
        json!({"mode": null, "last": true}),
    ];
    for edit in &edits {
        s.merge_patch(SHADOW, ns, "lamp", json!({"spec": {"desired": edit}}))
            .await;
    }
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    assert_eq!(obj["metadata"]["generation"], json!(7));
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(
        desired_of(&cloud),
        json!({"power": "on", "level": 7, "last": true})
    );
    assert_eq!(
        obj["status"]["managedPaths"],
        json!(["/last", "/level", "/power"])
    );
    let after = s.stats().await;
    let writes = after.since(&before, Operation::UpdateThingShadow);
    assert!(
        (1..=edits.len() as u64).contains(&writes),
        "{writes} writes for {} edits",
        edits.len()
    );
    say(&format!("{} quick edits: {writes} write(s)", edits.len()));
}

// ---------------------------------------------------------------------------------
// 3. removed keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_key_is_nulled_and_foreign_key_survives() {
    let s = Stack::start("removed-key").await;
    let ns = "e2e-removed";
    s.create_namespace(ns).await;
    let thing = "e2e-removed-lamp";
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"a": 1, "b": {"c": 2, "d": 3}}}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "lamp").await;
    // Another tool writes a key of its own.
    s.update_shadow(
        thing,
        None,
        json!({"state": {"desired": {"other": "theirs"}}}),
    )
    .await;

    s.merge_patch(
        SHADOW,
        ns,
        "lamp",
        json!({"spec": {"desired": {"a": null, "b": {"c": null}}}}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    assert_eq!(obj["spec"]["desired"], json!({"b": {"d": 3}}));
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(
        desired_of(&cloud),
        json!({"b": {"d": 3}, "other": "theirs"}),
        "removed keys are nulled (gone), the foreign key stays"
    );
    assert_eq!(obj["status"]["managedPaths"], json!(["/b/d"]));
    assert_eq!(
        obj["status"]["shadow"]["desired"],
        json!({"b": {"d": 3}, "other": "theirs"})
    );

    // No desired state at all: every owned key goes, the foreign one stays.
    s.merge_patch(SHADOW, ns, "lamp", json!({"spec": {"desired": null}}))
        .await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    assert!(obj["spec"]["desired"].is_null(), "{}", obj["spec"]);
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"other": "theirs"}));
    assert_eq!(obj["status"]["managedPaths"], json!([]));

    // A resource that declares no desired state makes no write at all.
    let before = s.stats().await;
    s.create(SHADOW, ns, "bare", json!({"thingName": "e2e-removed-bare"}))
        .await;
    s.wait_ready(SHADOW, ns, "bare").await;
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        0,
        "{:?}",
        after.0
    );
}

// ---------------------------------------------------------------------------------
// 4. reported state

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_report_flows_into_status_and_converges() {
    let s = Stack::start("device-report").await;
    let ns = "e2e-report";
    s.create_namespace(ns).await;
    let thing = "e2e-report-lamp";
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "on", "level": 3}, "refreshInterval": "1s"}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    assert!(condition_is(&obj, "Converged", "False"));
    let before = s.stats().await;

    // The device applies one of the two values.
    s.update_shadow(
        thing,
        None,
        json!({"state": {"reported": {"power": "on", "rssi": -60}}}),
    )
    .await;
    let obj = s
        .wait_status(SHADOW, ns, "lamp", "the partial report in status", |o| {
            o["status"]["shadow"]["reported"]["power"] == "on"
        })
        .await;
    assert_eq!(
        obj["status"]["shadow"]["delta"],
        json!({"level": 3}),
        "delta shrank"
    );
    assert!(
        condition_is(&obj, "Converged", "False"),
        "{}",
        obj["status"]
    );
    assert!(condition_is(&obj, "Ready", "True"));

    // Then the other one.
    let last = s
        .update_shadow(thing, None, json!({"state": {"reported": {"level": 3}}}))
        .await;
    let obj = s
        .wait_status(SHADOW, ns, "lamp", "Converged=True", |o| {
            condition_is(o, "Converged", "True")
        })
        .await;
    let status = &obj["status"]["shadow"];
    assert_eq!(status["version"], json!(last.version));
    assert_eq!(
        status["reported"],
        json!({"power": "on", "rssi": -60, "level": 3})
    );
    assert!(status["delta"].is_null(), "no delta left: {status}");
    assert!(status["lastReportedTime"].is_string(), "{status}");
    assert_eq!(
        condition_reason(&obj, "Converged").as_deref(),
        Some("DeviceConverged")
    );

    // The operator only read: the two updates are the device's.
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        2,
        "{:?}",
        after.0
    );
}

// ---------------------------------------------------------------------------------
// 5. out-of-band edits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_edit_is_overwritten() {
    let s = Stack::start("oob-overwrite").await;
    let ns = "e2e-overwrite";
    s.create_namespace(ns).await;
    let thing = "e2e-overwrite-lamp";
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "on"}, "refreshInterval": "1s",
               "conflictPolicy": "Overwrite"}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "lamp").await;
    let before = s.stats().await;

    s.update_shadow(thing, None, json!({"state": {"desired": {"power": "off"}}}))
        .await;
    let obj = s
        .wait_status(SHADOW, ns, "lamp", "a recorded out-of-band edit", |o| {
            o["status"]["conflicts"]["count"] == 1 && condition_is(o, "Ready", "True")
        })
        .await;
    assert_eq!(obj["status"]["conflicts"]["lastReason"], "OutOfBandEdit");
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(
        desired_of(&cloud),
        json!({"power": "on"}),
        "ours was written back"
    );
    let event = s.wait_event(ns, "lamp", "Warning", "DriftCorrected").await;
    let message = event.message.unwrap_or_default();
    assert!(message.contains("/power"), "{message}");
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        2,
        "the edit and one write-back: {:?}",
        after.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_edit_is_preserved_until_forced() {
    let s = Stack::start("oob-preserve").await;
    let ns = "e2e-preserve";
    s.create_namespace(ns).await;
    let thing = "e2e-preserve-lamp";
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "on", "mode": "eco"},
               "refreshInterval": "1s", "conflictPolicy": "Preserve"}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "lamp").await;
    let before = s.stats().await;

    s.update_shadow(thing, None, json!({"state": {"desired": {"power": "off"}}}))
        .await;
    let obj = s
        .wait_status(SHADOW, ns, "lamp", "Stalled=True reason Conflict", |o| {
            condition_is(o, "Stalled", "True")
        })
        .await;
    assert_eq!(
        condition_reason(&obj, "Stalled").as_deref(),
        Some("Conflict")
    );
    assert!(condition_is(&obj, "Ready", "False"), "{}", obj["status"]);
    assert_eq!(condition_reason(&obj, "Ready").as_deref(), Some("Conflict"));
    let message = condition(&obj, "Stalled").expect("Stalled")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("/power") && message.contains("\"off\"") && message.contains("\"on\""),
        "the message shows the path and both values: {message}"
    );
    assert_eq!(obj["status"]["conflicts"]["count"], json!(1));
    assert_eq!(obj["status"]["conflicts"]["lastReason"], "OutOfBandEdit");
    s.wait_event(ns, "lamp", "Warning", "Conflict").await;

    // Let the operator look again at least twice (refreshInterval 1s): it still writes
    // nothing and counts the conflict once.
    let stalled_at = s.stats().await;
    eventually("two more refreshes", DEADLINE, async || {
        let now = s.stats().await;
        let reads = now.since(&stalled_at, Operation::GetThingShadow);
        if reads >= 2 {
            Ok(())
        } else {
            Err(format!("{reads} reads"))
        }
    })
    .await;
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        1,
        "only the out-of-band edit was written: {:?}",
        after.0
    );
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud)["power"], "off", "the edit is preserved");
    let obj = s.get(SHADOW, ns, "lamp").await.expect("resource");
    assert_eq!(
        obj["status"]["conflicts"]["count"],
        json!(1),
        "counted once"
    );
    assert!(condition_is(&obj, "Stalled", "True"));

    // A forced sync writes ours.
    let at = "2026-11-22T10:00:00Z";
    s.annotate(SHADOW, ns, "lamp", RECONCILE_REQUESTED, Some(at))
        .await;
    let obj = s
        .wait_status(
            SHADOW,
            ns,
            "lamp",
            "Ready again after the forced sync",
            |o| condition_is(o, "Ready", "True") && o["status"]["lastHandledReconcileAt"] == at,
        )
        .await;
    assert!(!condition_is(&obj, "Stalled", "True"), "{}", obj["status"]);
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"power": "on", "mode": "eco"}));
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        2,
        "{:?}",
        after.0
    );
}

// ---------------------------------------------------------------------------------
// 6. a chatty device

/// About ten reports per second: a chatty device within AWS's 20 requests per second
/// per thing, with the operator's default limits (which space its own calls to one
/// thing 50 ms apart, so most versioned writes race a report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatty_device_does_not_livelock_the_writer() {
    chatty_device("chatty-device", &[], Duration::from_millis(75), 5.0).await;
}

/// Over a hundred reports per second, without the per-thing rate limit: the retries of
/// one pass are bounded and jittered, and the write still lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_chatty_device_does_not_livelock_the_writer() {
    chatty_device(
        "very-chatty-device",
        &["--max-thing-rps", "0"],
        Duration::from_millis(2),
        20.0,
    )
    .await;
}

/// A device reports in a loop (no version: last writer wins) while the spec changes;
/// the operator must converge within the deadline.
async fn chatty_device(name: &str, operator_args: &[&str], pause: Duration, min_rate: f64) {
    let mut s = Stack::without_operator(name).await;
    s.start_operator(operator_args).await;
    let ns = format!("e2e-{name}");
    s.create_namespace(&ns).await;
    let thing = format!("e2e-{name}-sensor");
    s.create(
        SHADOW,
        &ns,
        "sensor",
        json!({"thingName": thing, "desired": {"interval": 10, "mode": "eco"}}),
    )
    .await;
    s.wait_ready(SHADOW, &ns, "sensor").await;

    let stop = Arc::new(AtomicBool::new(false));
    let reports = Arc::new(AtomicU64::new(0));
    let device = {
        let plane = s.plane.clone();
        let stop = stop.clone();
        let reports = reports.clone();
        let thing = thing.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let doc = json!({"state": {"reported": {"counter": n, "interval": 10}}});
                if plane
                    .update_thing_shadow(&thing, None, doc.to_string().into())
                    .await
                    .is_ok()
                {
                    reports.fetch_add(1, Ordering::Relaxed);
                }
                // Jitter, so that the reports keep no fixed phase to the operator's calls.
                let jittered = pause.mul_f64(rand::random_range(0.5..1.5));
                tokio::time::sleep(jittered).await;
            }
        })
    };
    eventually("the device to be reporting", DEADLINE, async || {
        let n = reports.load(Ordering::Relaxed);
        if n >= 5 {
            Ok(())
        } else {
            Err(format!("{n} reports"))
        }
    })
    .await;

    let started = Instant::now();
    let reports_before = reports.load(Ordering::Relaxed);
    s.merge_patch(
        SHADOW,
        &ns,
        "sensor",
        json!({"spec": {"desired": {"interval": 60}}}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, &ns, "sensor").await;
    let took = started.elapsed();
    // Keep the device going a little longer, to measure its rate over a fair window.
    eventually("a second of device reports", DEADLINE, async || {
        if started.elapsed() >= Duration::from_secs(1) {
            Ok(())
        } else {
            Err(format!("{:?}", started.elapsed()))
        }
    })
    .await;
    let window = started.elapsed();
    let during = reports.load(Ordering::Relaxed) - reports_before;
    stop.store(true, Ordering::Relaxed);
    device.await.expect("the device task");

    let cloud = s.shadow(&thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"interval": 60, "mode": "eco"}));
    assert_eq!(obj["metadata"]["generation"], json!(2));
    let stats = s.stats().await;
    let conflicts = stats
        .0
        .count(Operation::UpdateThingShadow, "ConflictException");
    let rate = during as f64 / window.as_secs_f64();
    say(&format!(
        "{name}: converged in {took:?} while the device reported {rate:.0}/s; \
         {conflicts} version conflict(s); status conflicts {}",
        obj["status"]["conflicts"]
    ));
    assert!(
        rate >= min_rate,
        "the device reported only {rate:.1}/s; the test needs at least {min_rate}/s"
    );
}

// ---------------------------------------------------------------------------------
// 7. deletion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_policies() {
    let s = Stack::start("deletion").await;
    let ns = "e2e-delete";
    s.create_namespace(ns).await;
    for (name, policy) in [
        ("clear", "ClearDesired"),
        ("delete", "Delete"),
        ("retain", "Retain"),
    ] {
        s.create(
            SHADOW,
            ns,
            name,
            json!({"thingName": format!("e2e-delete-{name}"), "desired": {"power": "on", "level": 2},
                   "deletionPolicy": policy}),
        )
        .await;
    }
    for (name, policy) in [("rdelete", "Delete"), ("rretain", "Retain")] {
        s.create(
            RETAINED,
            ns,
            name,
            json!({"topic": format!("e2e/delete/{name}"), "payload": {"text": "hello"},
                   "deletionPolicy": policy}),
        )
        .await;
    }
    for name in ["clear", "delete", "retain"] {
        let obj = s.wait_ready(SHADOW, ns, name).await;
        assert_eq!(finalizers(&obj), vec![FINALIZER.to_string()]);
    }
    for name in ["rdelete", "rretain"] {
        let obj = s.wait_ready(RETAINED, ns, name).await;
        assert_eq!(finalizers(&obj), vec![FINALIZER.to_string()]);
    }
    // The device of "clear" reported; someone else owns a key there too.
    s.update_shadow(
        "e2e-delete-clear",
        None,
        json!({"state": {"reported": {"power": "on"}, "desired": {"other": 1}}}),
    )
    .await;
    let retained_before = s.shadow("e2e-delete-retain", None).await.expect("shadow");

    for name in ["clear", "delete", "retain"] {
        s.delete(SHADOW, ns, name).await;
    }
    for name in ["rdelete", "rretain"] {
        s.delete(RETAINED, ns, name).await;
    }
    for name in ["clear", "delete", "retain"] {
        s.wait_gone(SHADOW, ns, name).await;
    }
    for name in ["rdelete", "rretain"] {
        s.wait_gone(RETAINED, ns, name).await;
    }

    let cleared = s
        .shadow("e2e-delete-clear", None)
        .await
        .expect("ClearDesired keeps the shadow");
    assert_eq!(
        desired_of(&cleared),
        json!({"other": 1}),
        "owned keys nulled, others kept"
    );
    assert_eq!(
        reported_of(&cleared),
        json!({"power": "on"}),
        "reported kept"
    );
    assert!(
        s.shadow("e2e-delete-delete", None).await.is_none(),
        "Delete removes the shadow"
    );
    let retained_after = s
        .shadow("e2e-delete-retain", None)
        .await
        .expect("Retain keeps it");
    assert_eq!(
        retained_after.version, retained_before.version,
        "Retain writes nothing"
    );
    assert_eq!(
        desired_of(&retained_after),
        json!({"power": "on", "level": 2})
    );

    match s.retained("e2e/delete/rdelete").await {
        Err(err) if err.kind == ErrorKind::ResourceNotFound => {}
        other => panic!("Delete should remove the retained message: {other:?}"),
    }
    let kept = s
        .retained("e2e/delete/rretain")
        .await
        .expect("Retain keeps it");
    assert_eq!(&kept.payload[..], b"hello");

    let stats = s.stats().await;
    assert_eq!(
        stats.calls(Operation::DeleteThingShadow),
        1,
        "{:?}",
        stats.0
    );

    // Deleting a namespace deletes its resources, each with its cleanup.
    let doomed = "e2e-delete-ns";
    s.create_namespace(doomed).await;
    s.create(
        SHADOW,
        doomed,
        "lamp",
        json!({"thingName": "e2e-delete-ns-lamp", "desired": {"power": "on"}}),
    )
    .await;
    s.wait_ready(SHADOW, doomed, "lamp").await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(s.client.clone());
    namespaces
        .delete(doomed, &Default::default())
        .await
        .expect("delete the namespace");
    s.wait_gone(SHADOW, doomed, "lamp").await;
    eventually("the namespace to go", DEADLINE, async || {
        match namespaces.get_opt(doomed).await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|n| n.map(|n| n.status)))),
        }
    })
    .await;
    let cloud = s.shadow("e2e-delete-ns-lamp", None).await.expect("shadow");
    assert!(desired_of(&cloud).is_null(), "{:?}", cloud.state);

    // A paused resource is cleaned up once unpaused.
    s.create(
        SHADOW,
        ns,
        "paused",
        json!({"thingName": "e2e-delete-paused", "desired": {"power": "on"}}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "paused").await;
    s.annotate(SHADOW, ns, "paused", PAUSED, Some("true")).await;
    s.wait_status(SHADOW, ns, "paused", "Ready=False reason Paused", |o| {
        condition_reason(o, "Ready").as_deref() == Some("Paused")
    })
    .await;
    s.delete(SHADOW, ns, "paused").await;
    let obj = s
        .get(SHADOW, ns, "paused")
        .await
        .expect("kept by its finalizer");
    assert!(obj["metadata"]["deletionTimestamp"].is_string());
    s.annotate(SHADOW, ns, "paused", PAUSED, None).await;
    s.wait_gone(SHADOW, ns, "paused").await;
    let cloud = s.shadow("e2e-delete-paused", None).await.expect("shadow");
    assert!(desired_of(&cloud).is_null(), "{:?}", cloud.state);
}

// ---------------------------------------------------------------------------------
// 8. Observe

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_never_writes_and_mirrors_the_cloud() {
    let s = Stack::start("observe").await;
    let ns = "e2e-observe";
    s.create_namespace(ns).await;
    let thing = "e2e-observe-lamp";
    let topic = "e2e/observe/config";
    s.update_shadow(
        thing,
        None,
        json!({"state": {"desired": {"power": "on"}, "reported": {"power": "off"}}}),
    )
    .await;
    s.plane
        .publish(&PublishRequest {
            topic: topic.into(),
            payload: "theirs".into(),
            qos: 1,
            retain: true,
            ..Default::default()
        })
        .await
        .expect("publish");
    let before = s.stats().await;

    // The spec's desired differs from the cloud: Observe must not write it.
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "managementPolicy": "Observe", "refreshInterval": "1s",
               "desired": {"power": "ours"}}),
    )
    .await;
    s.create(
        RETAINED,
        ns,
        "config",
        json!({"topic": topic, "managementPolicy": "Observe", "payload": {"text": "ours"},
               "refreshInterval": "1s"}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(obj["status"]["shadow"]["version"], json!(cloud.version));
    assert_eq!(obj["status"]["shadow"]["desired"], json!({"power": "on"}));
    assert_eq!(obj["status"]["shadow"]["reported"], json!({"power": "off"}));
    assert_eq!(obj["status"]["shadow"]["delta"], json!({"power": "on"}));
    assert!(finalizers(&obj).is_empty(), "Observe gets no finalizer");
    let retained = s.wait_ready(RETAINED, ns, "config").await;
    assert_eq!(
        retained["status"]["payloadSha256"],
        json!(hex::encode(Sha256::digest(b"theirs")))
    );
    assert!(
        finalizers(&retained).is_empty(),
        "Observe gets no finalizer"
    );

    // The device catches up: the status follows the cloud.
    let reported = s
        .update_shadow(thing, None, json!({"state": {"reported": {"power": "on"}}}))
        .await;
    let obj = s
        .wait_status(SHADOW, ns, "lamp", "the new version mirrored", |o| {
            o["status"]["shadow"]["version"] == json!(reported.version)
        })
        .await;
    assert_eq!(obj["status"]["shadow"]["reported"], json!({"power": "on"}));
    assert!(condition_is(&obj, "Converged", "True"));

    s.delete(SHADOW, ns, "lamp").await;
    s.delete(RETAINED, ns, "config").await;
    s.wait_gone(SHADOW, ns, "lamp").await;
    s.wait_gone(RETAINED, ns, "config").await;

    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        1,
        "only the device's report: {:?}",
        after.0
    );
    assert_eq!(after.since(&before, Operation::Publish), 0, "{:?}", after.0);
    assert_eq!(
        after.since(&before, Operation::DeleteThingShadow),
        0,
        "{:?}",
        after.0
    );
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(cloud.version, reported.version, "deletion touched nothing");
    let message = s.retained(topic).await.expect("still retained");
    assert_eq!(&message.payload[..], b"theirs");

    // A managed resource switched to Observe loses its finalizer, and its deletion
    // leaves the shadow alone.
    let switched = "e2e-observe-switch";
    s.create(
        SHADOW,
        ns,
        "switch",
        json!({"thingName": switched, "desired": {"power": "on"}}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, ns, "switch").await;
    assert_eq!(finalizers(&obj), vec![FINALIZER.to_string()]);
    s.merge_patch(
        SHADOW,
        ns,
        "switch",
        json!({"spec": {"managementPolicy": "Observe"}}),
    )
    .await;
    let obj = s
        .wait_status(SHADOW, ns, "switch", "observed without a finalizer", |o| {
            is_current(o)
                && condition_reason(o, "Ready").as_deref() == Some("Observed")
                && finalizers(o).is_empty()
        })
        .await;
    assert!(condition_is(&obj, "Ready", "True"));
    let version = s.shadow(switched, None).await.expect("shadow").version;
    s.delete(SHADOW, ns, "switch").await;
    s.wait_gone(SHADOW, ns, "switch").await;
    let cloud = s.shadow(switched, None).await.expect("shadow");
    assert_eq!(cloud.version, version, "an Observe deletion writes nothing");
    assert_eq!(desired_of(&cloud), json!({"power": "on"}));
}

// ---------------------------------------------------------------------------------
// 9. paused

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_resource_is_not_written_until_unpaused() {
    let s = Stack::start("paused").await;
    let ns = "e2e-paused";
    s.create_namespace(ns).await;
    let thing = "e2e-paused-lamp";
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "on"}}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "lamp").await;

    s.annotate(SHADOW, ns, "lamp", PAUSED, Some("true")).await;
    s.wait_status(SHADOW, ns, "lamp", "Ready=False reason Paused", |o| {
        condition_reason(o, "Ready").as_deref() == Some("Paused")
    })
    .await;
    let before = s.stats().await;
    s.merge_patch(
        SHADOW,
        ns,
        "lamp",
        json!({"spec": {"desired": {"power": "off"}}}),
    )
    .await;
    let obj = s
        .wait_status(
            SHADOW,
            ns,
            "lamp",
            "the paused status for generation 2",
            |o| is_current(o) && condition_reason(o, "Ready").as_deref() == Some("Paused"),
        )
        .await;
    assert!(condition_is(&obj, "Ready", "False"));
    let after = s.stats().await;
    assert_eq!(
        after.total() - before.total(),
        0,
        "no call while paused: {:?}",
        after.0
    );
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"power": "on"}));

    s.annotate(SHADOW, ns, "lamp", PAUSED, None).await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    assert_eq!(obj["metadata"]["generation"], json!(2));
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"power": "off"}));
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        1,
        "{:?}",
        after.0
    );
}

// ---------------------------------------------------------------------------------
// 10. one owner per target

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_target_waits_for_the_owner() {
    let s = Stack::start("duplicate").await;
    let (first_ns, second_ns) = ("e2e-dup-a", "e2e-dup-b");
    s.create_namespace(first_ns).await;
    s.create_namespace(second_ns).await;
    let thing = "e2e-dup-lamp";
    s.create(
        SHADOW,
        first_ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "on"}}),
    )
    .await;
    s.wait_ready(SHADOW, first_ns, "lamp").await;
    let before = s.stats().await;

    s.create(
        SHADOW,
        second_ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "off"}}),
    )
    .await;
    let obj = s
        .wait_status(
            SHADOW,
            second_ns,
            "lamp",
            "Ready=False reason DuplicateTarget",
            |o| {
                condition_is(o, "Ready", "False")
                    && condition_reason(o, "Ready").as_deref() == Some("DuplicateTarget")
            },
        )
        .await;
    let message = condition(&obj, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&format!("{first_ns}/lamp")),
        "names the owner: {message}"
    );
    assert!(
        finalizers(&obj).is_empty(),
        "no finalizer for a resource that never writes"
    );
    let after = s.stats().await;
    assert_eq!(
        after.total(),
        before.total(),
        "no call for the duplicate: {:?}",
        after.0
    );
    s.wait_event(second_ns, "lamp", "Warning", "DuplicateTarget")
        .await;

    // The owner goes (ClearDesired nulls its keys); the other one takes over.
    s.delete(SHADOW, first_ns, "lamp").await;
    s.wait_gone(SHADOW, first_ns, "lamp").await;
    let gone_at = Instant::now();
    eventually(
        "the second resource to take over",
        Duration::from_secs(45),
        async || match s.get(SHADOW, second_ns, "lamp").await {
            Some(o) if condition_is(&o, "Ready", "True") => Ok(()),
            other => Err(format!("{:?}", other.map(|o| o["status"].clone()))),
        },
    )
    .await;
    say(&format!(
        "duplicate target: taken over {:?} after the owner was deleted",
        gone_at.elapsed()
    ));
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"power": "off"}));
}

// ---------------------------------------------------------------------------------
// 11. invalid specs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_stalls_without_any_call() {
    let s = Stack::start("invalid").await;
    let ns = "e2e-invalid";
    s.create_namespace(ns).await;
    let thing = |name: &str| format!("e2e-invalid-{name}");
    // The CRD schema admits all of these: only the operator's validation refuses them.
    let cases = [
        (
            SHADOW,
            "deep",
            json!({"thingName": thing("deep"),
                   "desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}),
            "spec.desired.a.b.c.d.e.f.g",
        ),
        (
            SHADOW,
            "nulls",
            json!({"thingName": thing("nulls"), "desired": {"list": [1, null, 3]}}),
            "spec.desired.list[1]",
        ),
        (
            SHADOW,
            "huge",
            json!({"thingName": thing("huge"), "desired": {"blob": "x".repeat(9000)}}),
            "spec.desired",
        ),
        (
            SHADOW,
            "often",
            json!({"thingName": thing("often"), "desired": {"a": 1}, "refreshInterval": "500ms"}),
            "spec.refreshInterval",
        ),
        (
            RETAINED,
            "big-payload",
            json!({"topic": "e2e/invalid/big", "payload": {"text": "x".repeat(140_000)}}),
            "spec.payload.text",
        ),
    ];
    for (kind, name, spec, _) in &cases {
        let created = s.create(*kind, ns, name, spec.clone()).await;
        for (key, value) in spec.as_object().expect("a spec object") {
            assert_eq!(
                &created["spec"][key], value,
                "{name}: spec.{key} stored as given"
            );
        }
    }
    for (kind, name, _, field) in &cases {
        let obj = s
            .wait_status(*kind, ns, name, "Stalled=True reason InvalidSpec", |o| {
                condition_is(o, "Stalled", "True") && is_current(o)
            })
            .await;
        assert_eq!(
            condition_reason(&obj, "Stalled").as_deref(),
            Some("InvalidSpec")
        );
        assert!(condition_is(&obj, "Ready", "False"));
        let message = condition(&obj, "Stalled").expect("Stalled")["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.starts_with(field),
            "{name}: names {field}: {message}"
        );
        let event = s.wait_event(ns, name, "Warning", "InvalidSpec").await;
        assert!(event.message.unwrap_or_default().contains(field));
    }
    // What the schema itself refuses never becomes a resource.
    let refused = s
        .try_create(
            SHADOW,
            ns,
            "array",
            json!({"thingName": thing("array"), "desired": [1]}),
        )
        .await
        .expect_err("desired must be an object");
    assert!(refused.contains("spec.desired"), "{refused}");

    let stats = s.stats().await;
    assert_eq!(stats.total(), 0, "no data-plane call: {:?}", stats.0);
}

/// CRDs whose ThingShadow schema takes any spec, as an older or newer CRD than the
/// operator's can (Helm does not upgrade CRDs): the apiserver admits objects the operator
/// cannot read.
fn permissive_crds(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("e2e-crds")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a CRD directory");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for entry in std::fs::read_dir(&source).expect("crds/") {
        let path = entry.expect("a CRD file").path();
        let text = std::fs::read_to_string(&path).expect("a CRD");
        let mut crd: serde_yaml::Value = serde_yaml::from_str(&text).expect("CRD YAML");
        if crd["spec"]["names"]["kind"] == "ThingShadow" {
            let versions = crd["spec"]["versions"].as_sequence_mut().expect("versions");
            for version in versions {
                version["schema"]["openAPIV3Schema"]["properties"]["spec"] = serde_yaml::from_str(
                    "{type: object, x-kubernetes-preserve-unknown-fields: true}",
                )
                .expect("a schema");
            }
        }
        let out = dir.join(path.file_name().expect("a file name"));
        std::fs::write(out, serde_yaml::to_string(&crd).expect("YAML")).expect("write a CRD");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_operator_cannot_read_is_stalled_and_left_alone() {
    // The operator starts with its own CRDs; then the CRDs change under it (an older or
    // newer chart's, applied server-side as Helm 4 and kubectl do).
    let s = Stack::start("undecodable").await;
    kubectl_apply(&s.kubeconfig, &permissive_crds("undecodable"), &s.dir);
    let ns = "e2e-undecodable";
    s.create_namespace(ns).await;

    // A new object that does not match: Stalled, a Warning naming the field, no call.
    s.create(
        SHADOW,
        ns,
        "bad",
        json!({"thingName": 42, "desired": {"a": 1}}),
    )
    .await;
    let obj = s
        .wait_status(
            SHADOW,
            ns,
            "bad",
            "Stalled=True reason InvalidObject",
            |o| condition_reason(o, "Stalled").as_deref() == Some("InvalidObject") && is_current(o),
        )
        .await;
    assert!(condition_is(&obj, "Ready", "False"));
    let message = condition(&obj, "Stalled").expect("Stalled")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("spec.thingName"),
        "names the field: {message}"
    );
    let event = s.wait_event(ns, "bad", "Warning", "InvalidObject").await;
    assert!(event.message.unwrap_or_default().contains("spec.thingName"));

    // A good object next to it converges: the watch goes on. It refreshes every second.
    s.create(
        SHADOW,
        ns,
        "good",
        json!({"thingName": "e2e-undecodable-good", "desired": {"v": 1}, "refreshInterval": "1s"}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "good").await;
    assert_eq!(
        s.stats().await.writes(),
        1,
        "only the good object was written"
    );

    // An edit that breaks it: its last good spec is not enforced any more, not even by
    // its refresh. A probe refreshing every second shows time passing for the operator.
    s.merge_patch(
        SHADOW,
        ns,
        "good",
        json!({"spec": {"managementPolicy": "Sometimes", "desired": {"v": 2}}}),
    )
    .await;
    let obj = s
        .wait_status(
            SHADOW,
            ns,
            "good",
            "Stalled=True reason InvalidObject",
            |o| condition_reason(o, "Stalled").as_deref() == Some("InvalidObject") && is_current(o),
        )
        .await;
    let message = condition(&obj, "Stalled").expect("Stalled")["message"].to_string();
    assert!(message.contains("spec.managementPolicy"), "{message}");
    let broken = s.target_stats().await;
    s.create(
        SHADOW,
        ns,
        "probe",
        json!({"thingName": "e2e-undecodable-probe", "desired": {"p": 1}, "refreshInterval": "1s"}),
    )
    .await;
    eventually("the probe refreshed three times", DEADLINE, async || {
        let reads = s.target_stats().await.calls_of("e2e-undecodable-probe");
        // create: a read and a write; then one read per refresh
        (reads >= 5).then_some(()).ok_or(format!("{reads} calls"))
    })
    .await;
    let later = s.target_stats().await;
    assert_eq!(
        later.calls_of("e2e-undecodable-good"),
        broken.calls_of("e2e-undecodable-good"),
        "no call for an object that cannot be read"
    );
    assert_eq!(later.calls_of("42"), 0);
    // The readiness gauge counts it as not Ready (bad and good out of bad, good, probe).
    let (code, metrics) = s.operator_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("shadowsync_resources{kind=\"ThingShadow\",ready=\"false\"} 2"),
        "{metrics}"
    );

    // Mended: synced again, and the Stalled condition is gone.
    s.merge_patch(
        SHADOW,
        ns,
        "good",
        json!({"spec": {"managementPolicy": null, "desired": {"v": 3}}}),
    )
    .await;
    let obj = s
        .wait_status(SHADOW, ns, "good", "Ready again", |o| {
            condition_is(o, "Ready", "True") && is_current(o)
        })
        .await;
    assert!(!condition_is(&obj, "Stalled", "True"), "{}", obj["status"]);
    let cloud = s
        .shadow("e2e-undecodable-good", None)
        .await
        .expect("the shadow exists");
    assert_eq!(desired_of(&cloud), json!({"v": 3}));
}

// ---------------------------------------------------------------------------------
// 12. retained messages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_publish_drift_and_delete() {
    let s = Stack::start("retained").await;
    let ns = "e2e-retained";
    s.create_namespace(ns).await;
    let topic = "e2e/retained/lamp/config";
    let payload = json!({"interval": 30, "mode": "eco"});
    s.create(
        RETAINED,
        ns,
        "config",
        json!({"topic": topic, "payload": {"json": payload}, "qos": 1, "refreshInterval": "1s",
               "userProperties": [{"key": "site", "value": "berlin"}, {"key": "site", "value": "paris"}]}),
    )
    .await;
    let obj = s.wait_ready(RETAINED, ns, "config").await;
    let message = s.retained(topic).await.expect("published");
    let body: Value = serde_json::from_slice(&message.payload).expect("a JSON payload");
    assert_eq!(body, payload);
    assert!(!message.payload.contains(&b' '), "sent compact");
    assert_eq!(message.qos, 1);
    assert_eq!(
        message.user_properties,
        vec![
            ("site".to_string(), "berlin".to_string()),
            ("site".to_string(), "paris".to_string())
        ]
    );
    let status = &obj["status"];
    assert_eq!(
        status["payloadSha256"],
        json!(hex::encode(Sha256::digest(&message.payload)))
    );
    assert_eq!(status["payloadSize"], json!(message.payload.len()));
    assert_eq!(status["qos"], json!(1));
    assert_eq!(status["publishCount"], json!(1));
    let stats = s.stats().await;
    assert_eq!(stats.calls(Operation::Publish), 1, "{:?}", stats.0);

    // Someone else publishes to the topic: ours again.
    s.plane
        .publish(&PublishRequest {
            topic: topic.into(),
            payload: "rogue".into(),
            qos: 0,
            retain: true,
            ..Default::default()
        })
        .await
        .expect("publish");
    let obj = s
        .wait_status(RETAINED, ns, "config", "the drift corrected", |o| {
            o["status"]["conflicts"]["count"] == 1 && condition_is(o, "Ready", "True")
        })
        .await;
    assert_eq!(obj["status"]["conflicts"]["lastReason"], "OutOfBandEdit");
    let message = s.retained(topic).await.expect("retained");
    assert_eq!(
        serde_json::from_slice::<Value>(&message.payload).ok(),
        Some(payload.clone())
    );
    assert_eq!(message.qos, 1);
    s.wait_event(ns, "config", "Warning", "DriftCorrected")
        .await;
    let after = s.stats().await;
    assert_eq!(
        after.since(&stats, Operation::Publish),
        2,
        "the rogue publish and one correction: {:?}",
        after.0
    );

    // A spec change: one publish.
    s.merge_patch(
        RETAINED,
        ns,
        "config",
        json!({"spec": {"payload": {"json": {"interval": 60}}}}),
    )
    .await;
    s.wait_ready(RETAINED, ns, "config").await;
    let message = s.retained(topic).await.expect("retained");
    assert_eq!(
        serde_json::from_slice::<Value>(&message.payload).ok(),
        Some(json!({"interval": 60, "mode": "eco"}))
    );
    let changed = s.stats().await;
    assert_eq!(
        changed.since(&after, Operation::Publish),
        1,
        "{:?}",
        changed.0
    );

    s.delete(RETAINED, ns, "config").await;
    s.wait_gone(RETAINED, ns, "config").await;
    match s.retained(topic).await {
        Err(err) if err.kind == ErrorKind::ResourceNotFound => {}
        other => panic!("the retained message should be gone: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// 13. restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_sync_writes_nothing() {
    let mut s = Stack::start("restart").await;
    let ns = "e2e-restart";
    s.create_namespace(ns).await;
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": "e2e-restart-lamp", "desired": {"power": "on"}, "refreshInterval": "1s"}),
    )
    .await;
    s.create(
        SHADOW,
        ns,
        "lamp-config",
        json!({"thingName": "e2e-restart-lamp", "shadowName": "config",
               "desired": {"interval": 30, "list": [1, 2]}, "refreshInterval": "1s"}),
    )
    .await;
    s.create(
        RETAINED,
        ns,
        "retained",
        // Attributes that GetRetainedMessage does not return, too: the operator must
        // not publish again just because it cannot see them.
        json!({"topic": "e2e/restart/lamp", "payload": {"json": {"a": 1}}, "qos": 1,
               "userProperties": [{"key": "k", "value": "v"}], "refreshInterval": "1s",
               "messageExpiry": 3600, "responseTopic": "e2e/restart/lamp/reply",
               "contentType": "application/vnd.e2e+json"}),
    )
    .await;
    for name in ["lamp", "lamp-config"] {
        s.wait_ready(SHADOW, ns, name).await;
    }
    s.wait_ready(RETAINED, ns, "retained").await;

    let (code, _) = s.operator_get("/readyz").await;
    assert_eq!(code, 200);
    let (code, metrics) = s.operator_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("shadowsync_dataplane_calls_total{"),
        "no shadowsync_dataplane_calls_total in:\n{metrics}"
    );

    let (status, took) = s.stop_operator();
    assert!(
        status.success(),
        "the operator exits cleanly on SIGTERM: {status}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the operator took {took:?} to stop"
    );
    say(&format!(
        "restart: the operator stopped {took:?} after SIGTERM"
    ));

    // While it is down, the devices report: the restarted operator must read them
    // (which proves that it looked at each shadow) and still write nothing.
    let v1 = s
        .update_shadow(
            "e2e-restart-lamp",
            None,
            json!({"state": {"reported": {"power": "on"}}}),
        )
        .await
        .version;
    let v2 = s
        .update_shadow(
            "e2e-restart-lamp",
            Some("config"),
            json!({"state": {"reported": {"interval": 30}}}),
        )
        .await
        .version;
    let before = s.stats().await;
    let status_before = s.status_writes().await;

    s.start_operator(&[]).await;
    let (code, _) = s.operator_get("/readyz").await;
    assert_eq!(code, 200);
    for (name, version) in [("lamp", v1), ("lamp-config", v2)] {
        let obj = s
            .wait_status(SHADOW, ns, name, "the report read after the restart", |o| {
                o["status"]["shadow"]["version"] == json!(version)
            })
            .await;
        assert!(condition_is(&obj, "Ready", "True"), "{}", obj["status"]);
    }
    eventually(
        "the retained message read after the restart",
        DEADLINE,
        async || {
            let now = s.stats().await;
            match now.since(&before, Operation::GetRetainedMessage) {
                0 => Err("no read yet".into()),
                _ => Ok(()),
            }
        },
    )
    .await;
    let obj = s.get(RETAINED, ns, "retained").await.expect("resource");
    assert!(condition_is(&obj, "Ready", "True"), "{}", obj["status"]);

    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        0,
        "{:?}",
        after.0
    );
    assert_eq!(after.since(&before, Operation::Publish), 0, "{:?}", after.0);
    assert_eq!(
        after.since(&before, Operation::DeleteThingShadow),
        0,
        "{:?}",
        after.0
    );
    assert_eq!(
        s.status_writes().await - status_before,
        2,
        "one status write per shadow whose report changed, none for the rest"
    );
    let (_, metrics) = s.operator_get("/metrics").await;
    assert!(
        metrics.contains("shadowsync_dataplane_calls_total{"),
        "{metrics}"
    );

    // Changes made while the operator is down are applied once it is back: a spec
    // change (one write) and a deletion (the ClearDesired cleanup, one write).
    let (status, _) = s.stop_operator();
    assert!(status.success(), "{status}");
    s.merge_patch(
        SHADOW,
        ns,
        "lamp",
        json!({"spec": {"desired": {"power": "off"}}}),
    )
    .await;
    s.delete(SHADOW, ns, "lamp-config").await;
    let before = s.stats().await;
    s.start_operator(&[]).await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    assert_eq!(obj["metadata"]["generation"], json!(2));
    s.wait_gone(SHADOW, ns, "lamp-config").await;
    let after = s.stats().await;
    assert_eq!(
        after.since(&before, Operation::UpdateThingShadow),
        2,
        "{:?}",
        after.0
    );
    let lamp = s.shadow("e2e-restart-lamp", None).await.expect("shadow");
    assert_eq!(desired_of(&lamp), json!({"power": "off"}));
    let config = s
        .shadow("e2e-restart-lamp", Some("config"))
        .await
        .expect("ClearDesired keeps the shadow");
    assert!(desired_of(&config).is_null(), "{:?}", config.state);
    assert_eq!(reported_of(&config), json!({"interval": 30}));
}

// ---------------------------------------------------------------------------------
// 14. status writes do not wake the operator

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_write_does_not_trigger_a_reconcile() {
    let s = Stack::start("quiet").await;
    let ns = "e2e-quiet";
    s.create_namespace(ns).await;
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": "e2e-quiet-lamp", "desired": {"power": "on"}, "refreshInterval": "0s"}),
    )
    .await;
    s.create(
        RETAINED,
        ns,
        "retained",
        json!({"topic": "e2e/quiet/lamp", "payload": {"text": "on"}, "refreshInterval": "0s"}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "lamp").await;
    s.wait_ready(RETAINED, ns, "retained").await;
    let calls = s.stats().await.total();
    let status_writes = s.status_writes().await;
    let writes = s.resource_writes().await;

    // The one assertion in this suite that waits a fixed time: that nothing happens.
    // A status write that woke the operator would show within milliseconds as another
    // read and another status write; three seconds on a loaded machine is ample for
    // that, and short enough for the suite.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        let now_calls = s.stats().await.total();
        let now_status = s.status_writes().await;
        let now_writes = s.resource_writes().await;
        assert_eq!(
            (now_calls, now_status, now_writes),
            (calls, status_writes, writes),
            "data-plane calls, status writes, resource writes changed after Ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(&format!(
        "quiet: {calls} data-plane calls and {status_writes} status writes for one shadow and one retained message"
    ));
}

// ---------------------------------------------------------------------------------
// 15. kubectl

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_wait_delete() {
    let binary = find_kubectl().expect("kubectl (built with the control plane)");
    let s = Stack::start("kubectl").await;
    let kubectl = Kubectl::new(binary, &s);
    let ns = "e2e-kubectl";
    // Imperative, as users do it (kubectl sends built-in kinds as protobuf).
    let out = kubectl.ok(&["create", "namespace", ns]);
    assert!(out.contains("namespace/e2e-kubectl created"), "{out}");
    let manifest = s.dir.join("lamp.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata:
  name: porch-lamp
  namespace: e2e-kubectl
spec:
  thingName: e2e-kubectl-lamp
  shadowName: config
  desired:
    power: "on"
    brightness: 80
---
apiVersion: iot.shadowsync.dev/v1alpha1
kind: RetainedMessage
metadata:
  name: porch-lamp-config
  namespace: e2e-kubectl
spec:
  topic: e2e/kubectl/porch-lamp
  payload:
    json: {interval: 30}
  qos: 1
"#,
    )
    .expect("manifest");
    let manifest = manifest.display().to_string();
    let out = kubectl.ok(&["apply", "-f", &manifest]);
    assert!(
        out.contains("thingshadow.iot.shadowsync.dev/porch-lamp created"),
        "{out}"
    );
    assert!(
        out.contains("retainedmessage.iot.shadowsync.dev/porch-lamp-config created"),
        "{out}"
    );
    for target in ["tshadow/porch-lamp", "retmsg/porch-lamp-config"] {
        let out = kubectl.ok(&[
            "wait",
            "--for=condition=Ready",
            target,
            "-n",
            ns,
            "--timeout=60s",
        ]);
        assert!(out.contains("condition met"), "{out}");
    }

    let out = kubectl.ok(&["get", "tshadow", "-n", ns]);
    let (header, rows) = table(&out);
    assert_eq!(
        header,
        [
            "NAME",
            "THING",
            "SHADOW",
            "VERSION",
            "READY",
            "CONVERGED",
            "AGE"
        ],
        "{out}"
    );
    let cloud = s
        .shadow("e2e-kubectl-lamp", Some("config"))
        .await
        .expect("shadow");
    let version = cloud.version.to_string();
    assert_eq!(
        rows[0][..6],
        [
            "porch-lamp",
            "e2e-kubectl-lamp",
            "config",
            version.as_str(),
            "True",
            "False"
        ],
        "{out}"
    );
    assert_eq!(desired_of(&cloud), json!({"power": "on", "brightness": 80}));
    let out = kubectl.ok(&["get", "retmsg", "-n", ns]);
    let (header, rows) = table(&out);
    assert_eq!(header, ["NAME", "TOPIC", "QOS", "READY", "AGE"], "{out}");
    assert_eq!(
        rows[0][..4],
        ["porch-lamp-config", "e2e/kubectl/porch-lamp", "1", "True"],
        "{out}"
    );

    // Re-applied server-side, as Argo CD and Flux do: the objects are unchanged and so is
    // the cloud (no generation change, no write).
    let out = kubectl.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &manifest,
    ]);
    assert!(
        out.contains("thingshadow.iot.shadowsync.dev/porch-lamp serverside-applied"),
        "{out}"
    );
    let again = s
        .shadow("e2e-kubectl-lamp", Some("config"))
        .await
        .expect("shadow");
    assert_eq!(
        again.version, cloud.version,
        "a server-side re-apply writes nothing"
    );

    // Events as users read them.
    let out = kubectl.ok(&["events", "-n", ns, "--for", "tshadow/porch-lamp"]);
    assert!(
        out.contains("Synced"),
        "kubectl events shows the Synced event: {out}"
    );
    assert!(out.contains("e2e-kubectl-lamp"), "{out}");
    let out = kubectl.ok(&["events", "-n", ns, "--for", "retmsg/porch-lamp-config"]);
    assert!(
        out.contains("Published"),
        "kubectl events shows the Published event: {out}"
    );

    // The category lists both kinds.
    let out = kubectl.ok(&["get", "shadowsync", "-n", ns, "-o", "name"]);
    assert!(
        out.contains("thingshadow.iot.shadowsync.dev/porch-lamp"),
        "{out}"
    );
    assert!(
        out.contains("retainedmessage.iot.shadowsync.dev/porch-lamp-config"),
        "{out}"
    );

    // What the CRD schema refuses never reaches the operator; what only the operator
    // refuses is Stalled, which `kubectl wait` can wait for too.
    let bad = s.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        r#"apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata:
  name: bad-name
  namespace: e2e-kubectl
spec:
  thingName: "bad name!"
"#,
    )
    .expect("manifest");
    let (ok, _, stderr) = kubectl.run(&["apply", "-f", &bad.display().to_string()]);
    assert!(!ok, "an invalid thingName is refused");
    assert!(stderr.contains("spec.thingName"), "{stderr}");
    let deep = s.dir.join("deep.yaml");
    std::fs::write(
        &deep,
        r#"apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata:
  name: too-deep
  namespace: e2e-kubectl
spec:
  thingName: e2e-kubectl-deep
  desired: {a: {b: {c: {d: {e: {f: {g: 1}}}}}}}
"#,
    )
    .expect("manifest");
    kubectl.ok(&["apply", "-f", &deep.display().to_string()]);
    let out = kubectl.ok(&[
        "wait",
        "--for=condition=Stalled",
        "tshadow/too-deep",
        "-n",
        ns,
        "--timeout=60s",
    ]);
    assert!(out.contains("condition met"), "{out}");

    // kubectl delete waits until the finalizers are handled.
    let out = kubectl.ok(&["delete", "-f", &manifest, "--timeout=60s"]);
    assert!(out.contains("deleted"), "{out}");
    assert!(s.get(SHADOW, ns, "porch-lamp").await.is_none());
    assert!(s.get(RETAINED, ns, "porch-lamp-config").await.is_none());
    let cloud = s
        .shadow("e2e-kubectl-lamp", Some("config"))
        .await
        .expect("ClearDesired keeps it");
    assert!(
        desired_of(&cloud).is_null(),
        "owned keys cleared: {:?}",
        cloud.state
    );
    assert!(
        matches!(s.retained("e2e/kubectl/porch-lamp").await, Err(e) if e.kind == ErrorKind::ResourceNotFound),
        "the retained message is deleted"
    );

    // Deleting the namespace: the real namespace controller deletes what is in it and
    // waits for the operator's finalizers, so the cleanup happens before it is gone.
    let last = s.dir.join("last.yaml");
    std::fs::write(
        &last,
        r#"apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata:
  name: last-lamp
  namespace: e2e-kubectl
spec:
  thingName: e2e-kubectl-last
  desired: {power: "on"}
  deletionPolicy: Delete
"#,
    )
    .expect("manifest");
    kubectl.ok(&["apply", "-f", &last.display().to_string()]);
    kubectl.ok(&[
        "wait",
        "--for=condition=Ready",
        "tshadow/last-lamp",
        "-n",
        ns,
        "--timeout=60s",
    ]);
    assert!(s.shadow("e2e-kubectl-last", None).await.is_some());
    let out = kubectl.ok(&["delete", "namespace", ns, "--timeout=120s"]);
    assert!(out.contains("deleted"), "{out}");
    let (ok, _, stderr) = kubectl.run(&["get", "namespace", ns]);
    assert!(
        !ok && stderr.contains("NotFound"),
        "the namespace is gone: {stderr}"
    );
    assert!(
        s.shadow("e2e-kubectl-last", None).await.is_none(),
        "deletionPolicy Delete ran before the namespace went"
    );
}

// ---------------------------------------------------------------------------------
// data-plane faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_outage_and_throttling_are_survived() {
    let s = Stack::start("faults").await;
    let ns = "e2e-faults";
    s.create_namespace(ns).await;
    let thing = "e2e-faults-lamp";

    // Created during an outage: not Ready, not Synced, and not Stalled (no human needed).
    s.set_faults(json!({"outage": true})).await;
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "on"}}),
    )
    .await;
    let obj = s
        .wait_status(SHADOW, ns, "lamp", "Synced=False during the outage", |o| {
            condition_is(o, "Synced", "False") && is_current(o)
        })
        .await;
    assert!(condition_is(&obj, "Ready", "False"), "{}", obj["status"]);
    assert!(!condition_is(&obj, "Stalled", "True"), "{}", obj["status"]);
    let reason = condition_reason(&obj, "Ready").unwrap_or_default();
    assert!(
        reason.contains("Unavailable"),
        "the reason says what failed: {reason}"
    );

    // The outage ends: the operator recovers on its own (retry with backoff).
    s.set_faults(json!({})).await;
    s.wait_ready(SHADOW, ns, "lamp").await;
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"power": "on"}));

    // Half of the calls throttled and some failing with 5xx: retried, written once.
    let before = s.stats().await;
    s.set_faults(json!({"throttleRate": 0.5, "errorRate": 0.2}))
        .await;
    s.merge_patch(
        SHADOW,
        ns,
        "lamp",
        json!({"spec": {"desired": {"power": "off"}}}),
    )
    .await;
    let obj = s.wait_ready(SHADOW, ns, "lamp").await;
    s.set_faults(json!({})).await;
    let after = s.stats().await;
    let ok_writes = after.0.count(Operation::UpdateThingShadow, "ok")
        - before.0.count(Operation::UpdateThingShadow, "ok");
    assert_eq!(ok_writes, 1, "one successful write: {:?}", after.0);
    let cloud = s.shadow(thing, None).await.expect("shadow");
    assert_eq!(desired_of(&cloud), json!({"power": "off"}));
    assert_eq!(obj["status"]["shadow"]["version"], json!(cloud.version));
    say(&format!(
        "faults: {} calls ({} injected throttles, {} injected errors) for one change",
        after.total() - before.total(),
        after.0.injected.throttled - before.0.injected.throttled,
        after.0.injected.errors - before.0.injected.errors
    ));

    // A deletion during an outage keeps the finalizer until the cleanup succeeded.
    s.set_faults(json!({"outage": true})).await;
    s.delete(SHADOW, ns, "lamp").await;
    s.wait_event(ns, "lamp", "Warning", "CleanupFailed").await;
    let obj = s
        .get(SHADOW, ns, "lamp")
        .await
        .expect("kept while the cleanup fails");
    assert!(obj["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(finalizers(&obj), vec![FINALIZER.to_string()]);
    s.set_faults(json!({})).await;
    s.wait_gone(SHADOW, ns, "lamp").await;
    let cloud = s
        .shadow(thing, None)
        .await
        .expect("ClearDesired keeps the shadow");
    assert!(desired_of(&cloud).is_null(), "{:?}", cloud.state);
}

// ---------------------------------------------------------------------------------
// payloads from Secrets and ConfigMaps

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_payload_from_secret_and_configmap() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    let s = Stack::start("payload-refs").await;
    let ns = "e2e-refs";
    s.create_namespace(ns).await;
    let secret_text = "s3cr3t-token-value";
    s.put_core::<Secret>(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
               "stringData": {"token": secret_text}}),
    )
    .await;
    s.create(
        RETAINED,
        ns,
        "token",
        json!({"topic": "e2e/refs/token", "payload": {"secretKeyRef": {"name": "creds", "key": "token"}},
               "refreshInterval": "1s"}),
    )
    .await;
    // The ConfigMap does not exist yet.
    s.create(
        RETAINED,
        ns,
        "settings",
        json!({"topic": "e2e/refs/settings",
               "payload": {"configMapKeyRef": {"name": "settings", "key": "config.json"}},
               "refreshInterval": "1s"}),
    )
    .await;

    s.wait_ready(RETAINED, ns, "token").await;
    let message = s.retained("e2e/refs/token").await.expect("published");
    assert_eq!(&message.payload[..], secret_text.as_bytes());
    let missing = s
        .wait_status(
            RETAINED,
            ns,
            "settings",
            "Ready=False for the missing ConfigMap",
            |o| condition_is(o, "Ready", "False") && is_current(o),
        )
        .await;
    let message = condition(&missing, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("settings"),
        "names the ConfigMap: {message}"
    );
    assert!(
        matches!(s.retained("e2e/refs/settings").await, Err(e) if e.kind == ErrorKind::ResourceNotFound),
        "nothing published without a payload"
    );

    // The ConfigMap appears: published without any change to the resource.
    s.put_core::<ConfigMap>(
        ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns},
               "data": {"config.json": "{\"interval\":5}"}}),
    )
    .await;
    s.wait_ready(RETAINED, ns, "settings").await;
    let message = s.retained("e2e/refs/settings").await.expect("published");
    assert_eq!(&message.payload[..], b"{\"interval\":5}");

    // The Secret changes: the refresh publishes the new value.
    let rotated = "rotated-token-value";
    s.put_core::<Secret>(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
               "stringData": {"token": rotated}}),
    )
    .await;
    eventually("the rotated secret published", DEADLINE, async || {
        match s.retained("e2e/refs/token").await {
            Ok(m) if &m.payload[..] == rotated.as_bytes() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Neither the status nor an event shows the secret.
    let obj = s.get(RETAINED, ns, "token").await.expect("resource");
    let shown = obj["status"].to_string();
    let events: Vec<String> = s
        .events(ns, "token")
        .await
        .into_iter()
        .map(|e| format!("{:?}", e.message))
        .collect();
    for secret in [secret_text, rotated] {
        assert!(
            !shown.contains(secret),
            "the status shows the secret: {shown}"
        );
        assert!(
            !events.iter().any(|e| e.contains(secret)),
            "an event shows the secret: {events:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// leader election

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_lets_one_replica_write() {
    // Two replicas, each with a data plane of its own, so that the data plane of the
    // standby shows whether it ever made a call.
    let mut s = Stack::without_operator("leader-election").await;
    let (_standby_plane, standby_url) = s.spawn_dataplane("dataplane-standby");
    // The Lease goes to the operator's own namespace ($POD_NAMESPACE, as the chart sets
    // it), the only one where the chart's Role lets it write Leases.
    let flags = ["--leader-election"];
    let leader_url = s.dp_url.clone();
    let leader = s.spawn_operator(&leader_url, &flags, "leader").await;
    // The leader holds the lease before the standby starts.
    eventually("the lease to be held", DEADLINE, async || {
        let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(s.client.clone(), OPERATOR_NAMESPACE);
        match api.get_opt("shadowsync-leader").await {
            Ok(Some(lease)) => lease
                .spec
                .and_then(|spec| spec.holder_identity)
                .filter(|holder| holder.starts_with("leader"))
                .map(|_| ())
                .ok_or_else(|| "no holder yet".to_string()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut standby = s.spawn_operator(&standby_url, &flags, "standby").await;

    let ns = "e2e-leader";
    s.create_namespace(ns).await;
    let thing = "e2e-leader-lamp";
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"power": "on"}}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "lamp").await;
    assert!(s.shadow(thing, None).await.is_some(), "the leader wrote");
    let standby_stats = standby_dp_stats(&standby_url).await;
    assert_eq!(
        standby_stats.total(),
        0,
        "the standby made a call: {:?}",
        standby_stats.0
    );

    // The leader stops (and releases the lease): the standby takes over.
    let mut leader = leader;
    let (status, _) = leader
        .proc
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status}");
    let stopped = Instant::now();
    s.merge_patch(
        SHADOW,
        ns,
        "lamp",
        json!({"spec": {"desired": {"power": "off"}}}),
    )
    .await;
    // The leader released the lease on its way out: the standby, which reads the
    // Lease every 2 s, takes over without waiting for the lease to expire (30 s).
    s.wait_ready(SHADOW, ns, "lamp").await;
    let took = stopped.elapsed();
    say(&format!(
        "leader election: the standby took over in {took:?}"
    ));
    assert!(
        took < Duration::from_secs(15),
        "the standby took {took:?} to take over a released lease"
    );
    let standby_stats = standby_dp_stats(&standby_url).await;
    assert!(
        standby_stats.calls(Operation::UpdateThingShadow) >= 1,
        "the new leader wrote: {:?}",
        standby_stats.0
    );
    let (status, _) = standby
        .proc
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status}");
}

async fn standby_dp_stats(url: &str) -> Stats {
    let (code, body) = http("GET", &format!("{url}/_shadowsync/stats"), b"")
        .await
        .unwrap_or_else(|e| panic!("stats: {e}"));
    assert_eq!(code, 200, "{body}");
    Stats(serde_json::from_str(&body).expect("stats json"))
}

// ---------------------------------------------------------------------------------
// many resources at once

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_resources_cost_two_calls_and_one_status_write_each() {
    let s = Stack::start("many").await;
    let ns = "e2e-many";
    s.create_namespace(ns).await;
    const SHADOWS: usize = 30;
    const MESSAGES: usize = 10;
    let shadows = (0..SHADOWS).map(|i| {
        let s = &s;
        async move {
            s.create(
                SHADOW,
                ns,
                &format!("lamp-{i}"),
                json!({"thingName": format!("e2e-many-lamp-{i}"), "desired": {"power": "on", "n": i}}),
            )
            .await
        }
    });
    futures::future::join_all(shadows).await;
    let messages = (0..MESSAGES).map(|i| {
        let s = &s;
        async move {
            s.create(
                RETAINED,
                ns,
                &format!("config-{i}"),
                json!({"topic": format!("e2e/many/{i}"), "payload": {"json": {"n": i}}}),
            )
            .await
        }
    });
    futures::future::join_all(messages).await;
    for i in 0..SHADOWS {
        s.wait_ready(SHADOW, ns, &format!("lamp-{i}")).await;
    }
    for i in 0..MESSAGES {
        s.wait_ready(RETAINED, ns, &format!("config-{i}")).await;
    }
    let stats = s.stats().await;
    let status_writes = s.status_writes().await;
    say(&format!(
        "many: {} shadows and {} retained messages: {} data-plane calls, {} status writes",
        SHADOWS,
        MESSAGES,
        stats.total(),
        status_writes
    ));
    assert_eq!(
        stats.calls(Operation::GetThingShadow),
        SHADOWS as u64,
        "{:?}",
        stats.0
    );
    assert_eq!(
        stats.calls(Operation::UpdateThingShadow),
        SHADOWS as u64,
        "{:?}",
        stats.0
    );
    assert_eq!(
        stats.calls(Operation::GetRetainedMessage),
        MESSAGES as u64,
        "{:?}",
        stats.0
    );
    assert_eq!(
        stats.calls(Operation::Publish),
        MESSAGES as u64,
        "{:?}",
        stats.0
    );
    assert_eq!(
        status_writes,
        (SHADOWS + MESSAGES) as u64,
        "one status write each"
    );
    for i in 0..SHADOWS {
        let cloud = s
            .shadow(&format!("e2e-many-lamp-{i}"), None)
            .await
            .expect("shadow");
        assert_eq!(desired_of(&cloud), json!({"power": "on", "n": i}));
    }
}

// ---------------------------------------------------------------------------------
// interrupted watches

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_watches_and_apiserver_restart_cause_no_extra_work() {
    let s = Stack::start("watches").await;
    let ns = "e2e-watches";
    s.create_namespace(ns).await;
    let thing = "e2e-watches-lamp";
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": thing, "desired": {"level": 1}}),
    )
    .await;
    s.create(
        RETAINED,
        ns,
        "config",
        json!({"topic": "e2e/watches/config", "payload": {"text": "one"}}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "lamp").await;
    s.wait_ready(RETAINED, ns, "config").await;

    for (round, disruption) in ["cut watches", "410 and relist", "apiserver restart"]
        .iter()
        .enumerate()
    {
        let before = s.stats().await;
        let status_before = s.status_writes().await;
        match *disruption {
            "cut watches" => {
                let cut = s.cut_watches();
                assert!(cut >= 1, "the operator had no open connection to cut");
            }
            // Watches resume from a resourceVersion etcd no longer has: 410, then the
            // operator lists again.
            "410 and relist" => {
                s.expire_watch_history().await;
                // The operator's watches really were refused (410) before it listed again.
                eventually("the watch to be refused with 410", DEADLINE, async || {
                    let log = s.operator().proc.log_text();
                    log.contains("too old resource version")
                        .then_some(())
                        .ok_or_else(|| "no 410 in the operator's log yet".to_string())
                })
                .await;
            }
            // Returns once the apiserver is back: a change that lands just before it
            // goes down has its status write cut off, which rightly costs a second pass.
            _ => s.restart_apiserver(),
        }
        // The apiserver may be down for a moment: retry the patch until it answers.
        let level = round as i64 + 2;
        eventually("the spec patch to be accepted", DEADLINE, async || {
            let patch = json!({"spec": {"desired": {"level": level}}});
            s.try_merge_patch(SHADOW, ns, "lamp", patch).await.map(drop)
        })
        .await;
        let obj = s.wait_ready(SHADOW, ns, "lamp").await;
        assert_eq!(obj["spec"]["desired"]["level"], json!(level));
        let after = s.stats().await;
        assert_eq!(
            (
                after.since(&before, Operation::GetThingShadow),
                after.since(&before, Operation::UpdateThingShadow)
            ),
            (1, 1),
            "after {disruption}: one read and one write for one change, nothing for the rest: {:?}",
            after.0
        );
        assert_eq!(
            after.total() - before.total(),
            2,
            "{disruption}: {:?}",
            after.0
        );
        assert_eq!(s.status_writes().await - status_before, 1, "{disruption}");
        let cloud = s.shadow(thing, None).await.expect("shadow");
        assert_eq!(desired_of(&cloud), json!({"level": level}));
    }
}

// ---------------------------------------------------------------------------------
// retained messages: expiry and Preserve

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_expiry_and_preserve() {
    let s = Stack::start("retained-expiry").await;
    let ns = "e2e-retained-expiry";
    s.create_namespace(ns).await;

    // Expires after 2 s by its own messageExpiry: not published again.
    s.create(
        RETAINED,
        ns,
        "flash",
        json!({"topic": "e2e/expiry/flash", "payload": {"text": "now"}, "messageExpiry": 2,
               "refreshInterval": "1s"}),
    )
    .await;
    s.wait_ready(RETAINED, ns, "flash").await;
    let obj = s
        .wait_status(RETAINED, ns, "flash", "Ready reason Expired", |o| {
            condition_reason(o, "Ready").as_deref() == Some("Expired")
        })
        .await;
    assert!(condition_is(&obj, "Ready", "True"), "{}", obj["status"]);
    // A few more refreshes: still no second publish.
    let expired_at = s.stats().await;
    eventually("two more refreshes", DEADLINE, async || {
        let reads = s
            .stats()
            .await
            .since(&expired_at, Operation::GetRetainedMessage);
        if reads >= 2 {
            Ok(())
        } else {
            Err(format!("{reads} reads"))
        }
    })
    .await;
    let stats = s.stats().await;
    assert_eq!(stats.calls(Operation::Publish), 1, "{:?}", stats.0);

    // Preserve: someone else's message stays until a forced sync.
    let topic = "e2e/expiry/preserved";
    s.create(
        RETAINED,
        ns,
        "preserved",
        json!({"topic": topic, "payload": {"text": "ours"}, "conflictPolicy": "Preserve",
               "refreshInterval": "1s"}),
    )
    .await;
    s.wait_ready(RETAINED, ns, "preserved").await;
    let before = s.stats().await;
    s.plane
        .publish(&PublishRequest {
            topic: topic.into(),
            payload: "theirs".into(),
            qos: 0,
            retain: true,
            ..Default::default()
        })
        .await
        .expect("publish");
    let obj = s
        .wait_status(RETAINED, ns, "preserved", "Stalled reason Conflict", |o| {
            condition_is(o, "Stalled", "True")
        })
        .await;
    assert_eq!(
        condition_reason(&obj, "Stalled").as_deref(),
        Some("Conflict")
    );
    assert!(condition_is(&obj, "Ready", "False"));
    assert_eq!(obj["status"]["conflicts"]["count"], json!(1));
    let message = s.retained(topic).await.expect("retained");
    assert_eq!(&message.payload[..], b"theirs");
    assert_eq!(
        s.stats().await.since(&before, Operation::Publish),
        1,
        "only theirs"
    );

    s.annotate(RETAINED, ns, "preserved", RECONCILE_REQUESTED, Some("now"))
        .await;
    s.wait_status(
        RETAINED,
        ns,
        "preserved",
        "Ready after the forced sync",
        |o| condition_is(o, "Ready", "True") && o["status"]["lastHandledReconcileAt"] == "now",
    )
    .await;
    let message = s.retained(topic).await.expect("retained");
    assert_eq!(&message.payload[..], b"ours");
    assert_eq!(s.stats().await.since(&before, Operation::Publish), 2);
}

/// KNOWN FAILURE (outside `src/operator` and `src/sync`): with the default limits, the
/// per-thing rate limiter (`--max-thing-rps 20` with a burst of 1, set up in
/// `src/cli/target.rs`) spaces every call to one thing 50 ms apart, including the
/// versioned write after its read. A device that reports more often than every 50 ms
/// then moves the version inside every such gap, and the write never lands. A burst of
/// 2 per thing (still 20/s on average) lets the write follow its read at once: with
/// that one change this test converges in about 0.1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reporting_faster_than_the_thing_rate_does_not_livelock_the_writer() {
    chatty_device(
        "device-above-thing-rate",
        &[],
        Duration::from_millis(25),
        20.0,
    )
    .await;
}

// ---------------------------------------------------------------------------------
// shutdown before the caches synced

/// SIGTERM while the first list is still on its way (a slow apiserver) stops the
/// operator at once: nothing ran, so there is nothing to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_before_the_caches_synced_exits_at_once() {
    let mut s = Stack::without_operator("sigterm-unsynced").await;
    // Every new connection of the operator waits 30 s: its lists cannot complete.
    s.proxy.delay(Duration::from_secs(30));
    let dp_url = s.dp_url.clone();
    let mut operator = s.spawn_operator_unready(&dp_url, &[], "operator");
    eventually("the controllers to start", DEADLINE, async || {
        operator
            .proc
            .log_text()
            .contains("controllers started")
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let (code, _) = http("GET", &format!("{}/readyz", operator.metrics_url), b"")
        .await
        .expect("/readyz answers");
    assert_eq!(code, 503, "not ready before the caches synced");
    let (status, took) = operator
        .proc
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "exit status {status}");
    say(&format!(
        "SIGTERM before the caches synced: exited in {took:?}"
    ));
    s.proxy.delay(Duration::ZERO);
}

// ---------------------------------------------------------------------------------
// RBAC: what the chart grants is what the operator uses

/// The operator, bound by exactly the chart's RBAC, goes through everything it does
/// (both kinds, payloads from a Secret and a ConfigMap, Events, the finalizer, deletion,
/// leader election, the tenancy Namespace watch) without one refused request; and every
/// verb the chart grants shows up in the apiserver's audit log of the operator's
/// requests, except the ones listed below with the reason they cannot be provoked on
/// demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_rbac_is_exactly_what_the_operator_uses() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    let mut s = Stack::without_operator("rbac").await;
    s.start_operator(&["--leader-election"]).await;
    let ns = "e2e-rbac";
    s.create_namespace(ns).await;
    s.put_core::<Secret>(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
               "stringData": {"token": "t0ken"}}),
    )
    .await;
    s.put_core::<ConfigMap>(
        ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns},
               "data": {"mode": "eco"}}),
    )
    .await;
    s.create(
        SHADOW,
        ns,
        "lamp",
        json!({"thingName": "e2e-rbac-lamp", "desired": {"power": "on"}}),
    )
    .await;
    s.create(
        RETAINED,
        ns,
        "token",
        json!({"topic": "e2e/rbac/token", "payload": {"secretKeyRef": {"name": "creds", "key": "token"}}}),
    )
    .await;
    s.create(
        RETAINED,
        ns,
        "mode",
        json!({"topic": "e2e/rbac/mode", "payload": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}),
    )
    .await;
    for (kind, name) in [(SHADOW, "lamp"), (RETAINED, "token"), (RETAINED, "mode")] {
        s.wait_ready(kind, ns, name).await;
    }
    // A resource stalled on an invalid spec repeats its Warning on every refresh: the
    // event sink folds the repeats into a series (a patch of the first Event).
    s.create(
        SHADOW,
        ns,
        "deep",
        json!({"thingName": "e2e-rbac-deep", "refreshInterval": "1s",
               "desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}),
    )
    .await;
    eventually("a Warning with a series", DEADLINE, async || {
        let events = s.events(ns, "deep").await;
        events
            .iter()
            .any(|e| {
                e.series
                    .as_ref()
                    .is_some_and(|series| series.count.unwrap_or(0) >= 2)
            })
            .then_some(())
            .ok_or_else(|| format!("{} events, no series yet", events.len()))
    })
    .await;
    // A set: children created, one deleted when its thing leaves, the set's status.
    s.create(
        Kind::Set,
        ns,
        "pair",
        json!({"selector": {"things": ["e2e-rbac-a", "e2e-rbac-b"]},
               "template": {"desired": {"on": true}},
               "rollout": {"waitForConverged": false}}),
    )
    .await;
    s.wait_status(Kind::Set, ns, "pair", "Complete with 2 things", |o| {
        o["status"]["phase"] == "Complete" && o["status"]["updated"] == 2 && is_current(o)
    })
    .await;
    s.merge_patch(
        Kind::Set,
        ns,
        "pair",
        json!({"spec": {"selector": {"things": ["e2e-rbac-a"]}}}),
    )
    .await;
    s.wait_status(Kind::Set, ns, "pair", "one thing left", |o| {
        o["status"]["targeted"] == 1 && is_current(o)
    })
    .await;
    s.wait_gone(
        SHADOW,
        ns,
        &shadowsync::planner::fleet::naming::child_name("pair", "e2e-rbac-b"),
    )
    .await;
    for (kind, name) in [
        (SHADOW, "lamp"),
        (SHADOW, "deep"),
        (RETAINED, "token"),
        (RETAINED, "mode"),
        (Kind::Set, "pair"),
    ] {
        s.delete(kind, ns, name).await;
        s.wait_gone(kind, ns, name).await;
    }

    // Every request of the operator, as (verb, group, resource/subresource, code).
    s.api_count("").await; // flushes the audit log up to now
    let events: Vec<_> = s
        .cluster
        .audit()
        .into_iter()
        .filter(|e| e.user.username == OPERATOR_USER)
        .collect();
    let refused: Vec<String> = events
        .iter()
        .filter(|e| {
            e.response_status
                .as_ref()
                .is_some_and(|st| st.code == 401 || st.code == 403)
        })
        .map(|e| format!("{} {}", e.verb, e.request_u_r_i))
        .collect();
    assert!(
        refused.is_empty(),
        "requests the chart's RBAC refused: {refused:?}"
    );
    let used: std::collections::BTreeSet<String> = events
        .iter()
        .map(|e| {
            let o = e.object_ref.clone().unwrap_or_default();
            let resource = if o.subresource.is_empty() {
                o.resource
            } else {
                format!("{}/{}", o.resource, o.subresource)
            };
            format!("{} {}/{}", e.verb, o.api_group, resource)
        })
        .collect();

    // What the chart grants, from the rendered install.yaml.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/install.yaml"),
    )
    .expect("install.yaml");
    let mut granted = std::collections::BTreeSet::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document).expect("YAML");
        if !matches!(value["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in value["rules"].as_array().expect("rules") {
            for group in rule["apiGroups"].as_array().expect("apiGroups") {
                for resource in rule["resources"].as_array().expect("resources") {
                    for verb in rule["verbs"].as_array().expect("verbs") {
                        granted.insert(format!(
                            "{} {}/{}",
                            verb.as_str().unwrap_or_default(),
                            group.as_str().unwrap_or_default(),
                            resource.as_str().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    // Granted, needed, and not provoked here:
    let not_provoked = [
        // The fallback read of a namespace created a moment ago that the Namespace watch
        // has not delivered yet (src/operator/tenancy.rs): a race, not on demand.
        "get /namespaces",
        // The fresh read of an object whose cached copy is older than the operator's own
        // last write (a reconcile queued behind that write, src/operator/controller.rs):
        // also a race with the watch.
        "get iot.shadowsync.dev/thingshadows",
        "get iot.shadowsync.dev/retainedmessages",
        // Never a request: the OwnerReferencesPermissionEnforcement admission plugin
        // checks it when a child's ownerReference blocks its set's deletion (the plugin
        // is on in this control plane, so a missing grant refuses the create above).
        "update iot.shadowsync.dev/thingshadowsets/finalizers",
    ];
    let unused: Vec<&String> = granted
        .iter()
        .filter(|g| !used.contains(*g) && !not_provoked.contains(&g.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "the chart grants what the operator never used: {unused:?}; used: {used:?}"
    );
    let ungranted: Vec<&String> = used.iter().filter(|u| !granted.contains(*u)).collect();
    assert!(ungranted.is_empty(), "used without a grant: {ungranted:?}");
    say(&format!(
        "rbac: {} grants, all used but {not_provoked:?}; {} requests by the operator, none refused",
        granted.len(),
        events.len()
    ));
}

/// `/healthz` fails, naming the watch, once the operator's watches have failed for longer
/// than `--progress-deadline-seconds` (here the apiserver refuses its connections), and
/// passes again once they reconnect. Until then a quiet, healthy operator passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_while_the_watches_make_no_progress_and_recovers() {
    let mut s = Stack::without_operator("healthz-progress").await;
    s.start_operator(&["--progress-deadline-seconds", "3"])
        .await;
    let (code, body) = s.operator_get("/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok"));

    s.proxy.refuse(true);
    s.cut_watches();
    let stalled = eventually(
        "/healthz to fail",
        Duration::from_secs(60),
        async || match s.operator_get("/healthz").await {
            (503, body) => Ok(body),
            (code, body) => Err(format!("{code} {body}")),
        },
    )
    .await;
    assert!(
        stalled.contains("watch has failed for"),
        "/healthz says: {stalled}"
    );
    s.proxy.refuse(false);
    eventually(
        "/healthz to pass again",
        Duration::from_secs(120),
        async || match s.operator_get("/healthz").await {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        },
    )
    .await;
}
