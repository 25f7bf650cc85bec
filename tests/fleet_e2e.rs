//! End-to-end tests of `ThingShadowSet`: the real `shadowsync run` against a real
//! Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager from
//! `tests/kube`, so garbage collection is the real one) and the local data plane
//! (`shadowsync dataplane serve`) with simulated devices, the registry driven through
//! the AWS SDK's `iot` client as a user would.
//!
//! Sets selected by a list, a thing group (recursive) and a fleet-indexing query; a
//! canary step, an abort on a silent device and the rollback; membership changes;
//! conflicts; pause; an invalid spec; foreground and background deletion. Counts in
//! status are compared with the cloud read back through the SDK.
//!
//! Run with `cargo test --test fleet_e2e` (see `operator_e2e.rs` for what is needed).

#[path = "e2e/mod.rs"]
mod e2e;

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::*;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use serde_json::{json, Value};
use shadowsync::dataplane::registry::{Attributes, Registry, ThingGroupSpec};
use shadowsync::planner::fleet::naming::child_name;
use shadowsync::planner::rollout::order_key;

const SET: Kind = Kind::Set;
const SHADOW: Kind = Kind::Shadow;
/// Long enough for a step timeout, a membership resync and a few device reports.
const FLEET_DEADLINE: Duration = Duration::from_secs(90);

/// Makes the things matching `devices` (comma-separated globs) report what they are
/// told after `delay_ms`; every other thing stays silent.
async fn simulate(s: &Stack, devices: &str, delay_ms: u64) {
    let body = json!({
        "devices": devices,
        "reportDelayMs": delay_ms,
        "silentFraction": 0.0,
        "wrongFraction": 0.0,
    });
    let (code, answer) = http(
        "PUT",
        &format!("{}/_shadowsync/simulation", s.dp_url),
        body.to_string().as_bytes(),
    )
    .await
    .expect("the data plane answers");
    assert_eq!(code, 200, "PUT /_shadowsync/simulation: {answer}");
}

async fn create_things(s: &Stack, things: &[String], model: Option<&str>) {
    let mut attributes = Attributes::new();
    if let Some(model) = model {
        attributes.insert("model".into(), model.into());
    }
    for thing in things {
        s.plane
            .create_thing(thing, &attributes)
            .await
            .unwrap_or_else(|e| panic!("CreateThing {thing}: {e}"));
    }
}

async fn wait_set(
    s: &Stack,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(
        &format!("ThingShadowSet {ns}/{name}: {what}"),
        FLEET_DEADLINE,
        async || match s.try_get(SET, ns, name).await? {
            Some(obj) if check(&obj) => Ok(obj),
            Some(obj) => Err(serde_json::to_string(&obj["status"]).unwrap_or_default()),
            None => Err("not found".into()),
        },
    )
    .await
}

fn phase_is(obj: &Value, phase: &str) -> bool {
    obj["status"]["phase"] == phase && is_current(obj)
}

fn count(obj: &Value, field: &str) -> u64 {
    obj["status"][field].as_u64().unwrap_or(0)
}

/// The set's children, by thing.
async fn children(s: &Stack, ns: &str, set: &str) -> BTreeMap<String, Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), ns, &SHADOW.resource());
    let list = api
        .list(&ListParams::default().labels(&format!("iot.shadowsync.dev/set={set}")))
        .await
        .expect("list children");
    list.items
        .into_iter()
        .map(|o| {
            let value = serde_json::to_value(o).expect("json");
            (
                value["spec"]["thingName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                value,
            )
        })
        .collect()
}

fn revision_of(child: &Value) -> String {
    child["metadata"]["annotations"]["iot.shadowsync.dev/template-revision"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn desired(s: &Stack, thing: &str) -> Value {
    s.shadow(thing, None)
        .await
        .and_then(|d| d.state.desired)
        .unwrap_or(Value::Null)
}

async fn reported(s: &Stack, thing: &str) -> Value {
    s.shadow(thing, None)
        .await
        .and_then(|d| d.state.reported)
        .unwrap_or(Value::Null)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i:02}")).collect()
}

fn kubectl(s: &Stack) -> Kubectl {
    Kubectl::new(
        find_kubectl().expect("kubectl (built with the control plane)"),
        s,
    )
}

// ---------------------------------------------------------------------------------

/// A set by list: one child per thing (named, labelled and owned as documented), every
/// device converges, the status counts match the cloud, `kubectl get tshadowset` shows
/// the columns; deletion with foreground propagation deletes the set last, after each
/// child's deletionPolicy ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_by_list_converges_and_foreground_deletion_removes_it_last() {
    let s = Stack::start("fleet-list").await;
    let ns = "fleet-list";
    s.create_namespace(ns).await;
    let things = names("fl-lamp", 6);
    simulate(&s, "fl-lamp-*", 100).await;

    s.create(
        SET,
        ns,
        "lamps",
        json!({
            "selector": {"things": things},
            "template": {"desired": {"power": "on", "level": 3}, "refreshInterval": "2s"},
        }),
    )
    .await;
    let set = wait_set(&s, ns, "lamps", "Complete, all converged", |o| {
        phase_is(o, "Complete") && count(o, "converged") == 6
    })
    .await;
    assert!(condition_is(&set, "Ready", "True"), "{}", set["status"]);
    assert_eq!(
        condition_reason(&set, "Ready").as_deref(),
        Some("RolloutComplete")
    );
    assert!(condition(&set, "Reconciling").is_none() && condition(&set, "Stalled").is_none());
    for field in ["targeted", "updated", "converged"] {
        assert_eq!(count(&set, field), 6, "{field}: {}", set["status"]);
    }
    assert_eq!((count(&set, "failed"), count(&set, "conflicting")), (0, 0));
    assert_eq!(set["status"]["step"], "1/1 (100%)");
    let revision = set["status"]["revision"]
        .as_str()
        .expect("a revision")
        .to_string();
    assert_eq!(set["status"]["completeRevision"], revision.as_str());

    // The children, as documented; the cloud as the status says.
    let uid = set["metadata"]["uid"].as_str().expect("uid");
    let kids = children(&s, ns, "lamps").await;
    assert_eq!(kids.keys().cloned().collect::<Vec<_>>(), things);
    for (thing, child) in &kids {
        assert_eq!(
            child["metadata"]["name"],
            child_name("lamps", thing).as_str()
        );
        assert_eq!(revision_of(child), revision);
        let owner = &child["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["uid"].as_str(),
                owner["controller"].as_bool(),
                owner["blockOwnerDeletion"].as_bool()
            ),
            (Some(uid), Some(true), Some(true))
        );
        assert_eq!(desired(&s, thing).await, json!({"power": "on", "level": 3}));
        assert_eq!(
            reported(&s, thing).await,
            json!({"power": "on", "level": 3})
        );
    }
    s.wait_event(ns, "lamps", "Normal", "RolloutComplete").await;

    let out = kubectl(&s).ok(&["get", "tshadowset", "-n", ns]);
    let (header, rows) = table(&out);
    assert_eq!(
        header,
        [
            "NAME",
            "TARGETED",
            "UPDATED",
            "CONVERGED",
            "FAILED",
            "STEP",
            "PHASE",
            "AGE"
        ]
    );
    assert_eq!(&rows[0][..5], ["lamps", "6", "6", "6", "0"], "{out}");
    assert_eq!(rows[0][5..8], ["1/1", "(100%)", "Complete"], "{out}");
    let labelled = kubectl(&s).ok(&[
        "get",
        "tshadow",
        "-n",
        ns,
        "-l",
        "iot.shadowsync.dev/set=lamps",
        "-o",
        "name",
    ]);
    assert_eq!(labelled.lines().count(), 6, "{labelled}");

    // Foreground deletion: hold one child's cleanup (paused) and watch the set wait.
    let held = child_name("lamps", &things[0]);
    s.annotate(SHADOW, ns, &held, "iot.shadowsync.dev/paused", Some("true"))
        .await;
    let api: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), ns, &SET.resource());
    api.delete("lamps", &DeleteParams::foreground())
        .await
        .expect("delete the set (foreground)");
    eventually(
        "every child but the held one to go",
        FLEET_DEADLINE,
        async || {
            let left = children(&s, ns, "lamps").await;
            if left.len() == 1 && left.contains_key(&things[0]) {
                Ok(())
            } else {
                Err(format!("{:?}", left.keys().collect::<Vec<_>>()))
            }
        },
    )
    .await;
    let waiting = s
        .get(SET, ns, "lamps")
        .await
        .expect("the set waits for its last child");
    assert!(waiting["metadata"]["deletionTimestamp"].is_string());
    for thing in &things[1..] {
        assert_eq!(
            desired(&s, thing).await,
            Value::Null,
            "{thing}: ClearDesired ran"
        );
    }
    s.annotate(SHADOW, ns, &held, "iot.shadowsync.dev/paused", None)
        .await;
    s.wait_gone(SET, ns, "lamps").await;
    assert!(children(&s, ns, "lamps").await.is_empty());
    assert_eq!(desired(&s, &things[0]).await, Value::Null);
    assert_eq!(
        reported(&s, &things[0]).await["power"],
        "on",
        "reported is kept"
    );
}

/// A canary by thing group (recursive): the first revision goes everywhere; the second
/// stops at the canary step, where a silent device fails its step timeout, the budget
/// (0) is exceeded, the rollout aborts and the canary goes back to the first template.
/// No device outside the canary slice ever gets the second revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_by_thing_group_aborts_on_a_silent_device_and_rolls_back() {
    let s = Stack::start("fleet-canary").await;
    let ns = "fleet-canary";
    s.create_namespace(ns).await;
    let west = names("fc-west", 8);
    let east = names("fc-east", 4);
    create_things(&s, &west, None).await;
    create_things(&s, &east, None).await;
    s.plane
        .create_thing_group("fc-lamps", &ThingGroupSpec::default())
        .await
        .expect("CreateThingGroup");
    s.plane
        .create_thing_group(
            "fc-lamps-east",
            &ThingGroupSpec {
                parent_group_name: Some("fc-lamps".into()),
                ..ThingGroupSpec::default()
            },
        )
        .await
        .expect("CreateThingGroup (child)");
    for thing in &west {
        s.plane
            .add_thing_to_thing_group("fc-lamps", thing)
            .await
            .expect("add");
    }
    for thing in &east {
        s.plane
            .add_thing_to_thing_group("fc-lamps-east", thing)
            .await
            .expect("add");
    }
    let mut all: Vec<String> = west.iter().chain(&east).cloned().collect();
    simulate(&s, "fc-*", 100).await;

    let spec = |mode: &str| {
        json!({
            "selector": {"thingGroup": {"name": "fc-lamps", "recursive": true}},
            "template": {"desired": {"mode": mode}, "refreshInterval": "1s"},
            "rollout": {"steps": [10, 50, 100], "stepTimeout": "4s", "maxFailures": 0, "onFailure": "Rollback"},
        })
    };
    s.create(SET, ns, "lamps", spec("eco")).await;
    let first = wait_set(&s, ns, "lamps", "the first rollout Complete", |o| {
        phase_is(o, "Complete") && count(o, "converged") == 12
    })
    .await;
    let eco = first["status"]["revision"]
        .as_str()
        .expect("revision")
        .to_string();
    let mut first_written = BTreeMap::new();
    for thing in west.iter().chain(&east) {
        first_written.insert(thing.as_str(), desired_time(&s, thing).await);
    }

    // The canary slice: ceil(12 × 10%) = 2 devices, first in the rollout order. The
    // first of them goes silent.
    all.sort_by_key(|t| order_key(t));
    let canary = &all[..2];
    let silent = &canary[0];
    let talking: Vec<&str> = all
        .iter()
        .filter(|t| *t != silent)
        .map(String::as_str)
        .collect();
    simulate(&s, &talking.join(","), 100).await;

    s.merge_patch(
        SET,
        ns,
        "lamps",
        json!({"spec": {"template": {"desired": {"mode": "boost"}}}}),
    )
    .await;
    let progressing = wait_set(&s, ns, "lamps", "Progressing at the canary step", |o| {
        phase_is(o, "Progressing") && count(o, "updated") > 0
    })
    .await;
    assert_eq!(progressing["status"]["step"], "1/3 (10%)");
    assert!(
        count(&progressing, "updated") <= 2,
        "{}",
        progressing["status"]
    );
    assert!(condition_is(&progressing, "Reconciling", "True"));
    let boost = progressing["status"]["revision"]
        .as_str()
        .expect("revision")
        .to_string();
    assert_ne!(boost, eco);
    let out = kubectl(&s).ok(&["get", "tshadowset", "-n", ns, "lamps"]);
    assert!(out.contains("1/3") && out.contains("Progressing"), "{out}");
    say(&format!(
        "kubectl get tshadowset during the canary step:\n{out}"
    ));

    let aborted = wait_set(&s, ns, "lamps", "Aborted", |o| phase_is(o, "Aborted")).await;
    assert!(
        condition_is(&aborted, "Stalled", "True"),
        "{}",
        aborted["status"]
    );
    assert_eq!(
        condition_reason(&aborted, "Stalled").as_deref(),
        Some("RolloutAborted")
    );
    assert!(condition_is(&aborted, "Ready", "False"));
    let out = kubectl(&s).ok(&["get", "tshadowset", "-n", ns, "lamps"]);
    say(&format!("kubectl get tshadowset after the abort:\n{out}"));
    let failed = aborted["status"]["failedThings"]
        .as_array()
        .expect("failedThings");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["thing"], silent.as_str());
    assert!(failed[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("not converged"));
    s.wait_event(ns, "lamps", "Warning", "RolloutAborted").await;
    s.wait_event(ns, "lamps", "Warning", "RolledBack").await;

    // The rollback: every child carries the first revision again, the cloud says eco
    // everywhere, and only the canary ever said boost.
    eventually(
        "the canary back on the first template",
        FLEET_DEADLINE,
        async || {
            let kids = children(&s, ns, "lamps").await;
            let off: Vec<&String> = kids
                .iter()
                .filter(|(_, c)| revision_of(c) != eco)
                .map(|(t, _)| t)
                .collect();
            if off.is_empty() {
                Ok(())
            } else {
                Err(format!("not back yet: {off:?}"))
            }
        },
    )
    .await;
    // The aborted set keeps showing what stopped it.
    let settled = wait_set(&s, ns, "lamps", "rolled back", |o| {
        phase_is(o, "Aborted") && count(o, "updated") == 0
    })
    .await;
    assert_eq!(count(&settled, "failed"), 1, "{}", settled["status"]);
    assert_eq!(
        settled["status"]["failedThings"][0]["thing"],
        silent.as_str()
    );
    for thing in &all {
        let thing = thing.as_str();
        eventually(
            &format!("{thing} desired eco"),
            FLEET_DEADLINE,
            async || match desired(&s, thing).await {
                d if d == json!({"mode": "eco"}) => Ok(()),
                d => Err(d.to_string()),
            },
        )
        .await;
        let written = desired_time(&s, thing).await;
        if canary.iter().any(|c| c == thing) {
            assert!(
                written > first_written[thing],
                "{thing}: the canary was written twice"
            );
        } else {
            assert_eq!(
                written, first_written[thing],
                "{thing} is outside the canary: never written again"
            );
        }
    }
}

/// When `mode` was last written into the desired state (the shadow's metadata).
async fn desired_time(s: &Stack, thing: &str) -> i64 {
    let doc = s.shadow(thing, None).await.expect("a shadow");
    doc.metadata
        .desired
        .as_ref()
        .and_then(|m| m["mode"]["timestamp"].as_i64())
        .unwrap_or(0)
}

/// A set by fleet-indexing query follows its membership (re-read every resyncInterval):
/// a thing that stops matching loses its child (whose deletionPolicy runs), a new match
/// gets one. A thing whose shadow an older ThingShadow manages is reported conflicting
/// and never written. Pausing stops a template change from reaching any device until
/// the pause is lifted; an invalid spec stalls the set with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_set_follows_membership_reports_conflicts_and_pauses() {
    let s = Stack::start("fleet-query").await;
    let ns = "fleet-query";
    s.create_namespace(ns).await;
    let lamps = names("fq-lamp", 4);
    create_things(&s, &lamps, Some("lamp-v2")).await;
    create_things(&s, &["fq-old".to_string()], Some("lamp-v1")).await;
    simulate(&s, "fq-*", 100).await;

    // fq-lamp-02's shadow belongs to a standalone ThingShadow, created first.
    s.create(
        SHADOW,
        ns,
        "owner",
        json!({"thingName": "fq-lamp-02", "desired": {"x": 0}}),
    )
    .await;
    s.wait_ready(SHADOW, ns, "owner").await;

    s.create(
        SET,
        ns,
        "v2",
        json!({
            "selector": {"query": "attributes.model:lamp-v2"},
            "template": {"desired": {"x": 1}, "refreshInterval": "1s"},
            "resyncInterval": "10s",
        }),
    )
    .await;
    let set = wait_set(&s, ns, "v2", "Complete with one conflict", |o| {
        phase_is(o, "Complete") && count(o, "converged") == 3 && count(o, "conflicting") == 1
    })
    .await;
    assert_eq!(count(&set, "targeted"), 4);
    let conflicting = &set["status"]["conflictingThings"];
    assert_eq!(conflicting[0]["thing"], "fq-lamp-02", "{conflicting}");
    assert!(
        conflicting[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("owner"),
        "the reason names the owner: {conflicting}"
    );
    assert_eq!(
        desired(&s, "fq-lamp-02").await,
        json!({"x": 0}),
        "never written by the set"
    );
    assert_eq!(desired(&s, "fq-old").await, Value::Null, "not selected");

    // Membership: fq-lamp-04 stops matching (deleted from the registry), fq-lamp-05 starts.
    s.plane
        .delete_thing("fq-lamp-04", None)
        .await
        .expect("DeleteThing");
    create_things(&s, &["fq-lamp-05".to_string()], Some("lamp-v2")).await;
    wait_set(&s, ns, "v2", "the new member converged", |o| {
        phase_is(o, "Complete")
            && count(o, "targeted") == 4
            && count(o, "converged") == 3
            && o["status"]["conflictingThings"][0]["thing"] == "fq-lamp-02"
            && o["status"]["membershipReadTime"].is_string()
    })
    .await;
    eventually("the leaver's child to go", FLEET_DEADLINE, async || {
        let kids = children(&s, ns, "v2").await;
        if !kids.contains_key("fq-lamp-04") && kids.contains_key("fq-lamp-05") {
            Ok(())
        } else {
            Err(format!("{:?}", kids.keys().collect::<Vec<_>>()))
        }
    })
    .await;
    assert_eq!(
        desired(&s, "fq-lamp-04").await,
        Value::Null,
        "ClearDesired ran for the leaver"
    );
    assert_eq!(desired(&s, "fq-lamp-05").await, json!({"x": 1}));

    // Paused: a template change reaches nobody.
    s.annotate(SET, ns, "v2", "iot.shadowsync.dev/paused", Some("true"))
        .await;
    s.merge_patch(
        SET,
        ns,
        "v2",
        json!({"spec": {"template": {"desired": {"x": 2}}}}),
    )
    .await;
    let paused = wait_set(&s, ns, "v2", "Paused", |o| phase_is(o, "Paused")).await;
    assert_eq!(
        condition_reason(&paused, "Ready").as_deref(),
        Some("Paused")
    );
    assert_eq!(count(&paused, "updated"), 0, "{}", paused["status"]);
    for thing in ["fq-lamp-01", "fq-lamp-03", "fq-lamp-05"] {
        assert_eq!(
            desired(&s, thing).await,
            json!({"x": 1}),
            "{thing} while paused"
        );
    }
    s.annotate(SET, ns, "v2", "iot.shadowsync.dev/paused", None)
        .await;
    wait_set(&s, ns, "v2", "Complete with x=2", |o| {
        phase_is(o, "Complete") && count(o, "converged") == 3
    })
    .await;
    for thing in ["fq-lamp-01", "fq-lamp-03", "fq-lamp-05"] {
        assert_eq!(desired(&s, thing).await, json!({"x": 2}), "{thing}");
    }

    // An invalid spec (steps must grow) stalls the set with the field named and
    // changes nothing.
    s.merge_patch(
        SET,
        ns,
        "v2",
        json!({"spec": {"template": {"desired": {"x": 3}}, "rollout": {"steps": [50, 20]}}}),
    )
    .await;
    let stalled = wait_set(&s, ns, "v2", "Stalled InvalidSpec", |o| {
        is_current(o) && condition_reason(o, "Stalled").as_deref() == Some("InvalidSpec")
    })
    .await;
    let message = condition(&stalled, "Stalled").expect("Stalled")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("spec.rollout.steps[1]"), "{message}");
    s.wait_event(ns, "v2", "Warning", "InvalidSpec").await;
    assert_eq!(desired(&s, "fq-lamp-01").await, json!({"x": 2}));
}

/// Background deletion: the set goes at once, garbage collection deletes the children,
/// and each child's deletionPolicy (here Delete) runs before it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_leaves_the_cleanup_to_the_children() {
    let s = Stack::start("fleet-background").await;
    let ns = "fleet-background";
    s.create_namespace(ns).await;
    let things = names("fb-lamp", 3);
    simulate(&s, "fb-lamp-*", 100).await;
    s.create(
        SET,
        ns,
        "lamps",
        json!({
            "selector": {"things": things},
            "template": {"desired": {"on": true}, "deletionPolicy": "Delete", "refreshInterval": "1s"},
        }),
    )
    .await;
    wait_set(&s, ns, "lamps", "Complete", |o| {
        phase_is(o, "Complete") && count(o, "converged") == 3
    })
    .await;
    for thing in &things {
        assert!(s.shadow(thing, None).await.is_some());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), ns, &SET.resource());
    api.delete("lamps", &DeleteParams::background())
        .await
        .expect("delete the set (background)");
    s.wait_gone(SET, ns, "lamps").await;
    eventually(
        "garbage collection of the children",
        FLEET_DEADLINE,
        async || {
            let left = children(&s, ns, "lamps").await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{:?}", left.keys().collect::<Vec<_>>()))
            }
        },
    )
    .await;
    for thing in &things {
        assert!(
            s.shadow(thing, None).await.is_none(),
            "{thing}: deletionPolicy Delete ran"
        );
    }
}
