//! The server driven with plain HTTP: discovery, every verb, status subresource isolation,
//! generation, finalizers, optimistic concurrency, patches, schema handling, Table output,
//! namespaces and the built-in types.

mod common;

use common::*;
use hyper::Method;
use serde_json::{json, Value};

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn discovery_documents() {
    let server = start();
    let http = Http::new(&server);

    let version = http.get("/version").await;
    assert_eq!(version.status, 200);
    assert_eq!(version.body["gitVersion"], "v1.33.0");
    assert_eq!(http.get("/healthz").await.raw, "ok");
    assert_eq!(http.get("/readyz").await.status, 200);
    assert_eq!(http.get("/livez").await.status, 200);

    let api = http.get("/api").await;
    assert_eq!(api.body["kind"], "APIVersions");
    assert_eq!(api.body["versions"], json!(["v1"]));

    let core = http.get("/api/v1").await;
    let core_names: Vec<&str> = core.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for want in [
        "namespaces",
        "namespaces/status",
        "events",
        "secrets",
        "configmaps",
    ] {
        assert!(core_names.contains(&want), "{want} in {core_names:?}");
    }

    let groups = http.get("/apis").await;
    assert_eq!(groups.body["kind"], "APIGroupList");
    let group_versions: Vec<&str> = groups.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["preferredVersion"]["groupVersion"].as_str().unwrap())
        .collect();
    for want in [
        "coordination.k8s.io/v1",
        "events.k8s.io/v1",
        "apiextensions.k8s.io/v1",
        "iot.shadowsync.dev/v1alpha1",
        "fixture.shadowsync.dev/v1",
    ] {
        assert!(
            group_versions.contains(&want),
            "{want} in {group_versions:?}"
        );
    }
    let group = http.get("/apis/iot.shadowsync.dev").await;
    assert_eq!(group.body["kind"], "APIGroup");

    let list = http.get("/apis/iot.shadowsync.dev/v1alpha1").await;
    assert_eq!(list.body["groupVersion"], "iot.shadowsync.dev/v1alpha1");
    let resources = list.body["resources"].as_array().unwrap();
    let main = &resources[0];
    assert_eq!(main["name"], "thingshadows");
    assert_eq!(main["singularName"], "thingshadow");
    assert_eq!(main["kind"], "ThingShadow");
    assert_eq!(main["namespaced"], true);
    assert_eq!(main["shortNames"], json!(["tshadow"]));
    assert_eq!(main["categories"], json!(["shadowsync"]));
    for verb in [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ] {
        assert!(main["verbs"].as_array().unwrap().contains(&json!(verb)));
    }
    assert_eq!(resources[1]["name"], "thingshadows/status");
    assert_eq!(resources[1]["verbs"], json!(["get", "patch", "update"]));
    assert_eq!(http.get("/apis/nope.example.com/v1").await.status, 404);

    let aggregated = http
        .get_as(
            "/apis",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .await;
    assert_eq!(
        aggregated.headers["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(aggregated.body["kind"], "APIGroupDiscoveryList");
    let iot = aggregated.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "iot.shadowsync.dev")
        .expect("the CRD's group");
    let r = &iot["versions"][0]["resources"][0];
    assert_eq!(r["resource"], "thingshadows");
    assert_eq!(r["scope"], "Namespaced");
    assert_eq!(r["subresources"][0]["subresource"], "status");
    // An Accept the server does not know falls back to the plain form.
    let plain = http
        .get_as(
            "/apis",
            "application/json;g=apidiscovery.k8s.io;v=v9;as=APIGroupDiscoveryList,application/json",
        )
        .await;
    assert_eq!(plain.body["kind"], "APIGroupList");
    let core_aggregated = http
        .get_as(
            "/api",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        )
        .await;
    assert_eq!(
        core_aggregated.body["apiVersion"],
        "apidiscovery.k8s.io/v2beta1"
    );

    let openapi = http
        .get_as(
            "/openapi/v2",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .await;
    assert_eq!(openapi.status, 200);
    assert!(openapi.raw.starts_with(b"\x0a\x032.0"));
    assert_eq!(http.get("/openapi/v2").await.body["swagger"], "2.0");
}

#[tokio::test]
async fn create_get_list_delete_a_custom_resource() {
    let server = start();
    let http = Http::new(&server);
    let created = http.post(TS, &shadow("lamp", "kitchen-lamp")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let obj = &created.body;
    assert_eq!(obj["apiVersion"], "iot.shadowsync.dev/v1alpha1");
    assert_eq!(obj["kind"], "ThingShadow");
    assert_eq!(obj["metadata"]["namespace"], "default");
    assert_eq!(obj["metadata"]["generation"], 1);
    assert_eq!(obj["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(obj["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let rv: u64 = created.rv().parse().unwrap();
    assert_eq!(rv, server.resource_version());
    // Defaults from the schema.
    assert_eq!(obj["spec"]["managementPolicy"], "Manage");
    assert_eq!(obj["spec"]["refreshInterval"], "5m");

    let got = http.get(&format!("{TS}/lamp")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, created.body);

    http.post(TS, &shadow("desk", "desk-lamp")).await;
    let list = http.get(TS).await;
    assert_eq!(list.body["kind"], "ThingShadowList");
    assert_eq!(names(&list.body), ["desk", "lamp"]);
    assert_eq!(list.rv(), server.resource_version().to_string());
    // All namespaces.
    let all = http
        .get("/apis/iot.shadowsync.dev/v1alpha1/thingshadows")
        .await;
    assert_eq!(names(&all.body), ["desk", "lamp"]);

    let deleted = http.delete(&format!("{TS}/lamp")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["kind"], "Status");
    assert_eq!(deleted.body["status"], "Success");
    assert_eq!(deleted.body["details"]["name"], "lamp");

    let missing = http.get(&format!("{TS}/lamp")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "thingshadows.iot.shadowsync.dev \"lamp\" not found",
            "reason": "NotFound",
            "details": {"name": "lamp", "group": "iot.shadowsync.dev", "kind": "thingshadows"},
            "code": 404
        })
    );
    assert_eq!(http.delete(&format!("{TS}/lamp")).await.status, 404);
}

#[tokio::test]
async fn generate_name_missing_namespace_and_duplicates() {
    let server = start();
    let http = Http::new(&server);
    let mut body = shadow("", "t");
    body["metadata"] = json!({"generateName": "lamp-"});
    let a = http.post(TS, &body).await;
    let b = http.post(TS, &body).await;
    assert_eq!(a.status, 201);
    let (na, nb) = (
        a.body["metadata"]["name"].as_str().unwrap(),
        b.body["metadata"]["name"].as_str().unwrap(),
    );
    assert!(na.starts_with("lamp-") && na.len() == 10, "{na}");
    assert_ne!(na, nb);
    assert_eq!(a.body["metadata"]["generateName"], "lamp-");

    let nowhere = http
        .post(
            "/apis/iot.shadowsync.dev/v1alpha1/namespaces/nowhere/thingshadows",
            &shadow("x", "t"),
        )
        .await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.body["reason"], "NotFound");
    assert_eq!(nowhere.body["message"], "namespaces \"nowhere\" not found");

    http.post(TS, &shadow("dup", "t")).await;
    let again = http.post(TS, &shadow("dup", "t")).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(
        again.body["message"],
        "thingshadows.iot.shadowsync.dev \"dup\" already exists"
    );

    let mut unnamed = shadow("", "t");
    unnamed["metadata"] = json!({});
    let invalid = http.post(TS, &unnamed).await;
    assert_eq!(invalid.status, 422);
    assert_eq!(
        invalid.body["details"]["causes"][0]["field"],
        "metadata.name"
    );

    let wrong_ns = {
        let mut b = shadow("w", "t");
        b["metadata"]["namespace"] = json!("kube-system");
        http.post(TS, &b).await
    };
    assert_eq!(wrong_ns.status, 400);
    assert_eq!(wrong_ns.body["reason"], "BadRequest");
}

#[tokio::test]
async fn update_needs_the_current_resource_version() {
    let server = start();
    let http = Http::new(&server);
    let created = http.post(TS, &shadow("lamp", "t")).await.body;
    let path = format!("{TS}/lamp");

    let mut stale = created.clone();
    stale["spec"]["desired"] = json!({"power": "off"});
    let first = http.put(&path, &stale).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["metadata"]["generation"], 2);
    assert_ne!(first.rv(), created["metadata"]["resourceVersion"]);

    // The same body again carries the old resourceVersion now.
    let conflict = http.put(&path, &stale).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(
        conflict.body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Operation cannot be fulfilled on thingshadows.iot.shadowsync.dev \"lamp\": the object has been modified; please apply your changes to the latest version and try again",
            "reason": "Conflict",
            "details": {"name": "lamp", "group": "iot.shadowsync.dev", "kind": "thingshadows"},
            "code": 409
        })
    );

    // Custom resources must name a resourceVersion on update.
    let mut unconditional = first.body.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let refused = http.put(&path, &unconditional).await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.body["details"]["causes"][0]["field"],
        "metadata.resourceVersion"
    );

    // A merge patch naming a stale resourceVersion is a conflict too.
    let patch = json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"qos": 1}});
    assert_eq!(http.merge(&path, &patch).await.status, 409);

    // An update that changes nothing keeps the resourceVersion (no event).
    let same = http.put(&path, &first.body).await;
    assert_eq!(same.status, 200);
    assert_eq!(same.rv(), first.rv());

    assert_eq!(
        http.put(&format!("{TS}/ghost"), &shadow("ghost", "t"))
            .await
            .status,
        404
    );
    let renamed = {
        let mut b = first.body.clone();
        b["metadata"]["name"] = json!("other");
        http.put(&path, &b).await
    };
    assert_eq!(renamed.status, 400);
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_tracks_spec_only() {
    let server = start();
    let http = Http::new(&server);
    let path = format!("{TS}/lamp");
    let status_path = format!("{path}/status");

    // Status given on create is dropped.
    let mut body = shadow("lamp", "t");
    body["status"] = json!({"observedGeneration": 99});
    let created = http.post(TS, &body).await.body;
    assert!(created.get("status").is_none());

    // Writing status changes only status: not spec, labels or generation.
    let mut write = created.clone();
    write["status"] =
        json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]});
    write["spec"]["qos"] = json!(1);
    write["metadata"]["labels"] = json!({"sneaky": "yes"});
    let after = http.put(&status_path, &write).await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.body["status"]["observedGeneration"], 1);
    assert!(after.body["spec"].get("qos").is_none());
    assert!(after.body["metadata"].get("labels").is_none());
    assert_eq!(after.body["metadata"]["generation"], 1);

    let patched = http
        .merge(
            &status_path,
            &json!({"status": {"shadow": {"version": 3}}, "spec": {"qos": 0}}),
        )
        .await;
    assert_eq!(patched.body["status"]["shadow"]["version"], 3);
    assert_eq!(patched.body["status"]["observedGeneration"], 1);
    assert!(patched.body["spec"].get("qos").is_none());
    assert_eq!(patched.body["metadata"]["generation"], 1);
    assert_eq!(http.get(&status_path).await.body, patched.body);

    // Writes to the main resource ignore status.
    let main = http
        .merge(
            &path,
            &json!({"status": {"observedGeneration": 42}, "metadata": {"labels": {"a": "b"}}}),
        )
        .await;
    assert_eq!(main.body["status"]["observedGeneration"], 1);
    assert_eq!(main.body["metadata"]["labels"], json!({"a": "b"}));
    // Metadata changes do not bump generation ...
    assert_eq!(main.body["metadata"]["generation"], 1);
    // ... spec changes do.
    let spec = http.merge(&path, &json!({"spec": {"qos": 1}})).await;
    assert_eq!(spec.body["metadata"]["generation"], 2);
    let spec_again = http.merge(&path, &json!({"spec": {"qos": 1}})).await;
    assert_eq!(spec_again.body["metadata"]["generation"], 2);
    assert_eq!(spec_again.rv(), spec.rv());

    // Status writes are validated against the status schema.
    let bad = http
        .merge(
            &status_path,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        bad.body["details"]["causes"][0]["field"],
        "status.conditions[0].status"
    );
    let dup = http
        .merge(&status_path, &json!({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "A", "status": "False"}]}}))
        .await;
    assert_eq!(dup.status, 422);

    // A type without a status subresource has no /status path and keeps status on writes.
    let g = http
        .post(GADGETS, &json!({"apiVersion": "fixture.shadowsync.dev/v1", "kind": "Gadget", "metadata": {"name": "g"}, "status": {"phase": "New"}}))
        .await;
    assert_eq!(g.body["status"]["phase"], "New");
    assert_eq!(http.get(&format!("{GADGETS}/g/status")).await.status, 404);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = start();
    let http = Http::new(&server);
    let path = format!("{TS}/lamp");
    let mut body = shadow("lamp", "t");
    body["metadata"]["finalizers"] = json!(["iot.shadowsync.dev/cleanup"]);
    http.post(TS, &body).await;
    let mut watch = http
        .watch(&format!(
            "{TS}?watch=true&resourceVersion={}",
            server.resource_version()
        ))
        .await;

    let deleting = http.delete(&path).await;
    assert_eq!(deleting.status, 200);
    assert_eq!(deleting.body["kind"], "ThingShadow");
    assert!(deleting.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(deleting.body["metadata"]["generation"], 2);
    let modified = watch.next().await.unwrap();
    assert_eq!(modified["type"], "MODIFIED");
    assert!(modified["object"]["metadata"]["deletionTimestamp"].is_string());

    // Still there; deleting again changes nothing; no new finalizers may be added.
    let still = http.get(&path).await;
    assert_eq!(still.status, 200);
    assert_eq!(
        http.delete(&path).await.body["metadata"]["resourceVersion"],
        still.body["metadata"]["resourceVersion"]
    );
    let more = http
        .merge(&path, &json!({"metadata": {"finalizers": ["iot.shadowsync.dev/cleanup", "other.example.com/x"]}}))
        .await;
    assert_eq!(more.status, 422);
    // Status can still be written while deleting.
    assert_eq!(
        http.merge(
            &format!("{path}/status"),
            &json!({"status": {"observedGeneration": 2}})
        )
        .await
        .status,
        200
    );
    assert_eq!(watch.next().await.unwrap()["type"], "MODIFIED");

    // Removing the last finalizer deletes the object.
    let done = http
        .patch(
            &path,
            "application/json-patch+json",
            &json!([{"op": "remove", "path": "/metadata/finalizers"}]),
        )
        .await;
    assert_eq!(done.status, 200);
    assert_eq!(http.get(&path).await.status, 404);
    let deleted = watch.next().await.unwrap();
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(deleted["object"]["metadata"]["name"], "lamp");

    // Without finalizers deletion is immediate.
    http.post(TS, &shadow("quick", "t")).await;
    assert_eq!(
        http.delete(&format!("{TS}/quick")).await.body["kind"],
        "Status"
    );
    assert_eq!(watch.next().await.unwrap()["type"], "ADDED");
    assert_eq!(watch.next().await.unwrap()["type"], "DELETED");

    // Delete preconditions.
    let c = http.post(TS, &shadow("pre", "t")).await.body;
    let wrong = http
        .request(
            Method::DELETE,
            &format!("{TS}/pre"),
            Some("application/json"),
            None,
            Some(serde_json::to_vec(&json!({"preconditions": {"uid": "not-it"}})).unwrap()),
        )
        .await;
    assert_eq!(wrong.status, 409);
    let right = http
        .request(
            Method::DELETE,
            &format!("{TS}/pre"),
            Some("application/json"),
            None,
            Some(
                serde_json::to_vec(&json!({"preconditions": {"uid": c["metadata"]["uid"]}}))
                    .unwrap(),
            ),
        )
        .await;
    assert_eq!(right.status, 200);
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let server = start();
    let http = Http::new(&server);
    let path = format!("{TS}/lamp");
    let mut body = shadow("lamp", "t");
    body["spec"]["desired"] = json!({"power": "on", "color": {"r": 1, "g": 2}});
    http.post(TS, &body).await;

    let merged = http
        .merge(
            &path,
            &json!({"spec": {"desired": {"color": {"g": null, "b": 3}}}}),
        )
        .await;
    assert_eq!(
        merged.body["spec"]["desired"],
        json!({"power": "on", "color": {"r": 1, "b": 3}})
    );

    let patched = http
        .patch(
            &path,
            "application/json-patch+json",
            &json!([
                {"op": "test", "path": "/spec/desired/power", "value": "on"},
                {"op": "replace", "path": "/spec/desired/power", "value": "off"},
                {"op": "add", "path": "/spec/tags", "value": ["a"]}
            ]),
        )
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.body["spec"]["desired"]["power"], "off");
    assert_eq!(patched.body["spec"]["tags"], json!(["a"]));
    let failed = http
        .patch(
            &path,
            "application/json-patch+json",
            &json!([{"op": "test", "path": "/spec/desired/power", "value": "on"}]),
        )
        .await;
    assert_eq!(failed.status, 422);

    let smp = http
        .patch(
            &path,
            "application/strategic-merge-patch+json",
            &json!({"spec": {"qos": 1}}),
        )
        .await;
    assert_eq!(smp.status, 415);
    assert_eq!(smp.body["reason"], "UnsupportedMediaType");

    http.post(CONFIGMAPS, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}}))
        .await;
    let cm = http
        .patch(
            &format!("{CONFIGMAPS}/cm"),
            "application/strategic-merge-patch+json",
            &json!({"data": {"b": "2"}, "$setElementOrder/x": []}),
        )
        .await;
    assert_eq!(cm.status, 200);
    assert_eq!(cm.body["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(
        http.patch(&format!("{CONFIGMAPS}/cm"), "text/plain", &json!({}))
            .await
            .status,
        415
    );
    assert_eq!(
        http.merge(&format!("{TS}/ghost"), &json!({})).await.status,
        404
    );
}

#[tokio::test]
async fn server_side_apply() {
    let server = start();
    let http = Http::new(&server);
    let path = format!("{TS}/lamp");
    let apply = |manager: &str, force: bool| {
        format!(
            "{path}?fieldManager={manager}{}",
            if force { "&force=true" } else { "" }
        )
    };
    let first = http
        .apply_yaml(
            &apply("alice", false),
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata:\n  name: lamp\n  labels: {team: a}\nspec:\n  thingName: t\n  qos: 1\n  desired: {power: 'on', mode: eco}\n",
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let mf = &first.body["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "alice");
    assert_eq!(mf["operation"], "Apply");

    // Someone else's merge patch adds a field; alice's next apply keeps it, and drops only
    // what alice applied before and no longer mentions (desired.mode and the label).
    http.merge(&path, &json!({"spec": {"tags": ["x"]}})).await;
    let second = http
        .apply_yaml(
            &apply("alice", false),
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: lamp}\nspec: {thingName: t, qos: 1, desired: {power: 'off'}}\n",
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["spec"]["desired"], json!({"power": "off"}));
    assert_eq!(second.body["spec"]["tags"], json!(["x"]));
    assert!(second.body["metadata"].get("labels").is_none());

    // Another manager applying a different value to alice's field conflicts unless forced.
    let conflict = http
        .apply_yaml(
            &apply("bob", false),
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: lamp}\nspec: {qos: 0}\n",
        )
        .await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.body["reason"], "Conflict");
    assert_eq!(conflict.body["details"]["causes"][0]["field"], ".spec.qos");
    let forced = http
        .apply_yaml(
            &apply("bob", true),
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: lamp}\nspec: {qos: 0}\n",
        )
        .await;
    assert_eq!(forced.status, 200);
    assert_eq!(forced.body["spec"]["qos"], 0);

    // Apply to status changes only status.
    let status = http
        .apply_yaml(
            &format!("{path}/status?fieldManager=ctl&force=true"),
            r#"{"apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "ThingShadow", "metadata": {"name": "lamp"}, "status": {"observedGeneration": 3}, "spec": {"qos": 1}}"#,
        )
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["status"]["observedGeneration"], 3);
    assert_eq!(status.body["spec"]["qos"], 0);
    assert_eq!(
        http.apply_yaml(
            &format!("{TS}/ghost/status?fieldManager=ctl"),
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: ghost}\n"
        )
        .await
        .status,
        404
    );

    let unmanaged = http
        .apply_yaml(
            &path,
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: lamp}\n",
        )
        .await;
    assert_eq!(unmanaged.status, 422);
}

#[tokio::test]
async fn schema_pruning_defaults_and_validation() {
    let server = start();
    let http = Http::new(&server);
    let mut body = shadow("lamp", "t");
    body["spec"]["unknown"] = json!({"deep": 1});
    body["spec"]["desired"] = json!({"anything": {"goes": [1, 2]}});
    body["extra"] = json!(true);
    let created = http.post(TS, &body).await;
    assert_eq!(created.status, 201);
    assert!(created.body["spec"].get("unknown").is_none());
    assert!(created.body.get("extra").is_none());
    assert_eq!(
        created.body["spec"]["desired"],
        json!({"anything": {"goes": [1, 2]}})
    );
    let warnings = created.warnings();
    assert!(
        warnings.contains(&"299 - \"unknown field \\\"spec.unknown\\\"\"".to_string()),
        "{warnings:?}"
    );

    let strict = http
        .request(
            Method::POST,
            &format!("{TS}?fieldValidation=Strict"),
            Some("application/json"),
            None,
            Some(
                serde_json::to_vec(&{
                    let mut b = shadow("strict", "t");
                    b["spec"]["unknown"] = json!(1);
                    b
                })
                .unwrap(),
            ),
        )
        .await;
    assert_eq!(strict.status, 400);

    let mut bad = shadow("bad", "not valid!");
    bad["spec"]["managementPolicy"] = json!("Sometimes");
    bad["spec"]["qos"] = json!(7);
    bad["spec"]["tags"] = json!(["a", "b", "c", "d"]);
    let invalid = http.post(TS, &bad).await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.body["reason"], "Invalid");
    assert_eq!(invalid.body["details"]["kind"], "ThingShadow");
    assert_eq!(invalid.body["details"]["name"], "bad");
    let causes = invalid.body["details"]["causes"].as_array().unwrap();
    let fields: Vec<&str> = causes
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.thingName",
            "spec.managementPolicy",
            "spec.qos",
            "spec.tags"
        ]
    );
    assert_eq!(
        causes[0]["message"],
        "Invalid value: \"not valid!\": spec.thingName in body should match '^[a-zA-Z0-9:_-]+$'"
    );
    assert!(invalid.body["message"].as_str().unwrap().starts_with(
        "ThingShadow.iot.shadowsync.dev \"bad\" is invalid: [spec.thingName: Invalid value: "
    ));

    let mut missing = shadow("missing", "t");
    missing["spec"].as_object_mut().unwrap().remove("thingName");
    let required = http.post(TS, &missing).await;
    assert_eq!(
        required.body["message"],
        "ThingShadow.iot.shadowsync.dev \"missing\" is invalid: spec.thingName: Required value"
    );
    let mut wrong_type = shadow("typed", "t");
    wrong_type["spec"]["qos"] = json!("one");
    assert_eq!(
        http.post(TS, &wrong_type).await.body["details"]["causes"][0]["message"],
        "Invalid value: \"string\": spec.qos in body must be of type integer: \"string\""
    );

    // CEL: thingName is immutable, shadowName cannot be added later.
    let path = format!("{TS}/lamp");
    let changed = http
        .merge(&path, &json!({"spec": {"thingName": "other"}}))
        .await;
    assert_eq!(changed.status, 422);
    assert_eq!(
        changed.body["message"],
        "ThingShadow.iot.shadowsync.dev \"lamp\" is invalid: spec.thingName: Invalid value: \"string\": thingName is immutable"
    );
    let added = http
        .merge(&path, &json!({"spec": {"shadowName": "config"}}))
        .await;
    assert_eq!(added.status, 422);
    assert_eq!(added.body["details"]["causes"][0]["field"], "spec");
    // The same value passes the transition rule; rules with oldSelf do not run on create.
    assert_eq!(
        http.merge(&path, &json!({"spec": {"thingName": "t"}}))
            .await
            .status,
        200
    );
    let mut named = shadow("named", "t");
    named["spec"]["shadowName"] = json!("config");
    assert_eq!(http.post(TS, &named).await.status, 201);

    // int-or-string and nullable.
    for (size, ok) in [(json!(3), true), (json!("3Gi"), true), (json!(true), false)] {
        let g = json!({"apiVersion": "fixture.shadowsync.dev/v1", "kind": "Gadget",
                       "metadata": {"name": format!("g{}", size.to_string().len())},
                       "spec": {"size": size, "note": null}});
        let r = http.post(GADGETS, &g).await;
        assert_eq!(r.status == 201, ok, "{}", r.body);
        if ok {
            assert!(r.body["spec"]["note"].is_null() && r.body["spec"].get("note").is_some());
        }
    }
    // A null for a non-nullable field is dropped, or replaced by its default.
    let mut nulls = shadow("nulls", "t");
    nulls["spec"]["qos"] = Value::Null;
    nulls["spec"]["managementPolicy"] = Value::Null;
    let r = http.post(TS, &nulls).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body["spec"].get("qos").is_none());
    assert_eq!(r.body["spec"]["managementPolicy"], "Manage");
}

#[tokio::test]
async fn list_selectors_and_paging() {
    let server = start();
    let http = Http::new(&server);
    for (name, team) in [
        ("a", "red"),
        ("b", "blue"),
        ("c", "red"),
        ("d", "green"),
        ("e", "red"),
    ] {
        let mut s = shadow(name, name);
        s["metadata"]["labels"] = json!({"team": team});
        http.post(TS, &s).await;
    }
    let red = http.get(&format!("{TS}?labelSelector=team%3Dred")).await;
    assert_eq!(names(&red.body), ["a", "c", "e"]);
    let not_red = http.get(&format!("{TS}?labelSelector=team!%3Dred")).await;
    assert_eq!(names(&not_red.body), ["b", "d"]);
    let set = http
        .get(&format!("{TS}?labelSelector=team+in+(blue,green)"))
        .await;
    assert_eq!(names(&set.body), ["b", "d"]);
    let by_name = http
        .get(&format!("{TS}?fieldSelector=metadata.name%3Dc"))
        .await;
    assert_eq!(names(&by_name.body), ["c"]);
    let by_ns = http
        .get("/apis/iot.shadowsync.dev/v1alpha1/thingshadows?fieldSelector=metadata.namespace%3Dkube-system")
        .await;
    assert!(names(&by_ns.body).is_empty());
    assert_eq!(
        http.get(&format!("{TS}?fieldSelector=spec.thingName%3Dc"))
            .await
            .status,
        400
    );

    let page1 = http.get(&format!("{TS}?limit=2")).await;
    assert_eq!(names(&page1.body), ["a", "b"]);
    assert_eq!(page1.body["metadata"]["remainingItemCount"], 3);
    let token = page1.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let page2 = http.get(&format!("{TS}?limit=2&continue={token}")).await;
    assert_eq!(names(&page2.body), ["c", "d"]);
    assert_eq!(page2.rv(), page1.rv());
    let token2 = page2.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let page3 = http.get(&format!("{TS}?limit=2&continue={token2}")).await;
    assert_eq!(names(&page3.body), ["e"]);
    assert!(page3.body["metadata"].get("continue").is_none());

    // Once the history no longer reaches back to the first page, the token has expired.
    http.post(TS, &shadow("f", "f")).await;
    server.forget_history();
    let expired = http.get(&format!("{TS}?limit=2&continue={token}")).await;
    assert_eq!(expired.status, 410);
    assert_eq!(expired.body["reason"], "Expired");
}

#[tokio::test]
async fn table_output_uses_printer_columns() {
    let server = start();
    let http = Http::new(&server);
    http.post(TS, &shadow("lamp", "kitchen-lamp")).await;
    http.merge(
        &format!("{TS}/lamp/status"),
        &json!({"status": {"shadow": {"version": 42}, "conditions": [
            {"type": "Synced", "status": "True"}, {"type": "Ready", "status": "False"}]}}),
    )
    .await;
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let t = http.get_as(TS, accept).await;
    assert_eq!(t.status, 200);
    assert_eq!(t.body["kind"], "Table");
    assert_eq!(t.body["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = t.body["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Name", "Thing", "Shadow", "Version", "Ready", "Age"]
    );
    let row = &t.body["rows"][0];
    let cells = row["cells"].as_array().unwrap();
    assert_eq!(
        cells[..5],
        [
            json!("lamp"),
            json!("kitchen-lamp"),
            Value::Null,
            json!(42),
            json!("False")
        ]
    );
    assert!(cells[5].as_str().unwrap().ends_with('s'));
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["name"], "lamp");

    let one = http
        .get_as(
            &format!("{TS}/lamp"),
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
        )
        .await;
    assert_eq!(one.body["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(one.body["rows"].as_array().unwrap().len(), 1);
    let full = http
        .get_as(&format!("{TS}?includeObject=Object"), accept)
        .await;
    assert_eq!(
        full.body["rows"][0]["object"]["spec"]["thingName"],
        "kitchen-lamp"
    );

    // A CRD without printer columns gets Name and Age; built-ins have their usual columns.
    http.post(GADGETS, &json!({"apiVersion": "fixture.shadowsync.dev/v1", "kind": "Gadget", "metadata": {"name": "g"}}))
        .await;
    let g = http.get_as(GADGETS, accept).await;
    assert_eq!(g.body["columnDefinitions"].as_array().unwrap().len(), 2);
    http.post(CONFIGMAPS, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}}))
        .await;
    let cm = http.get_as(CONFIGMAPS, accept).await;
    assert_eq!(cm.body["rows"][0]["cells"][1], 2);

    let meta = http
        .get_as(
            TS,
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .await;
    assert_eq!(meta.body["kind"], "PartialObjectMetadataList");
    assert!(meta.body["items"][0].get("spec").is_none());
    assert_eq!(
        http.get_as(TS, "application/vnd.kubernetes.protobuf")
            .await
            .status,
        406
    );
}

#[tokio::test]
async fn namespaces_and_built_in_types() {
    let server = start();
    let http = Http::new(&server);
    let ns = http
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "home"}}),
        )
        .await;
    assert_eq!(ns.status, 201);
    assert_eq!(ns.body["status"]["phase"], "Active");
    assert_eq!(
        ns.body["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "home"
    );
    let home = "/apis/iot.shadowsync.dev/v1alpha1/namespaces/home/thingshadows";
    let mut held = shadow("held", "t");
    held["metadata"]["finalizers"] = json!(["iot.shadowsync.dev/cleanup"]);
    assert_eq!(http.post(home, &held).await.status, 201);
    http.post(home, &shadow("free", "t")).await;
    http.post(
        "/api/v1/namespaces/home/secrets",
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "hello"}}),
    )
    .await;
    let secret = http.get("/api/v1/namespaces/home/secrets/s").await.body;
    assert_eq!(secret["data"]["k"], "aGVsbG8=");
    assert_eq!(secret["type"], "Opaque");
    assert!(secret.get("stringData").is_none());

    // Deleting a namespace deletes its content; it goes when the last finalizer is gone.
    let deleting = http.delete("/api/v1/namespaces/home").await;
    assert_eq!(deleting.body["status"]["phase"], "Terminating");
    let refused = http.post(home, &shadow("late", "t")).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["reason"], "Forbidden");
    // The content goes a moment later, as the namespace controller would delete it.
    eventually("the namespace's content to be deleted", || async {
        (http.get(&format!("{home}/free")).await.status == 404).then_some(())
    })
    .await;
    assert_eq!(
        http.get("/api/v1/namespaces/home/secrets/s").await.status,
        404
    );
    assert!(
        http.get(&format!("{home}/held")).await.body["metadata"]["deletionTimestamp"].is_string()
    );
    assert_eq!(http.get("/api/v1/namespaces/home").await.status, 200);
    http.merge(
        &format!("{home}/held"),
        &json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(http.get("/api/v1/namespaces/home").await.status, 404);
    assert_eq!(http.delete("/api/v1/namespaces/default").await.status, 403);

    // ConfigMaps and Leases may be updated without a resourceVersion.
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"},
                       "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    assert_eq!(http.post(lease_path, &lease).await.status, 201);
    let mut take = lease.clone();
    take["spec"]["holderIdentity"] = json!("b");
    let taken = http.put(&format!("{lease_path}/leader"), &take).await;
    assert_eq!(taken.status, 200);
    assert_eq!(taken.body["spec"]["holderIdentity"], "b");
    assert!(taken.body["metadata"].get("generation").is_none());

    // events.k8s.io/v1 Events are core v1 Events too.
    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "lamp.1"}, "eventTime": "2025-01-01T00:00:00.000000Z",
        "regarding": {"apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "ThingShadow", "name": "lamp", "namespace": "default"},
        "reason": "Synced", "note": "all good", "type": "Normal", "action": "Sync",
        "reportingController": "shadowsync", "reportingInstance": "shadowsync-0"});
    let created = http
        .post("/apis/events.k8s.io/v1/namespaces/default/events", &event)
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["note"], "all good");
    let core = http
        .get("/api/v1/namespaces/default/events/lamp.1")
        .await
        .body;
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "all good");
    assert_eq!(core["involvedObject"]["name"], "lamp");
    assert_eq!(core["reportingComponent"], "shadowsync");
    let selected = http
        .get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dlamp,reason%3DSynced")
        .await;
    assert_eq!(names(&selected.body), ["lamp.1"]);
    let series = http
        .patch(
            "/apis/events.k8s.io/v1/namespaces/default/events/lamp.1",
            "application/strategic-merge-patch+json",
            &json!({"series": {"count": 2, "lastObservedTime": "2025-01-01T00:01:00.000000Z"}}),
        )
        .await;
    assert_eq!(series.body["series"]["count"], 2);
}

#[tokio::test]
async fn crds_can_be_created_and_deleted_at_runtime() {
    let server = start();
    let http = Http::new(&server);
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.shadowsync.dev"},
        "spec": {"group": "example.shadowsync.dev", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                 "versions": [{"name": "v1beta1", "served": true, "storage": false,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                              {"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}}]}
    });
    let created = http
        .post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &crd,
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body["status"]["conditions"][1]["type"],
        "Established"
    );
    assert_eq!(
        created.body["status"]["acceptedNames"]["listKind"],
        "WidgetList"
    );
    let group = http.get("/apis/example.shadowsync.dev").await.body;
    assert_eq!(group["preferredVersion"]["version"], "v1");
    let path = "/apis/example.shadowsync.dev/v1/namespaces/default/widgets";
    let w = http
        .post(path, &json!({"apiVersion": "example.shadowsync.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"n": 1, "x": 2}}))
        .await;
    assert_eq!(w.status, 201);
    assert!(w.body["spec"].get("x").is_none());
    // The other version serves the same objects.
    let beta = http
        .get("/apis/example.shadowsync.dev/v1beta1/namespaces/default/widgets/w")
        .await;
    assert_eq!(beta.body["apiVersion"], "example.shadowsync.dev/v1beta1");
    let wrong_version = http
        .post(path, &json!({"apiVersion": "example.shadowsync.dev/v1beta1", "kind": "Widget", "metadata": {"name": "v"}}))
        .await;
    assert_eq!(wrong_version.status, 400);

    let bad = http
        .post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": "wrong.example.shadowsync.dev"},
                    "spec": {"group": "example.shadowsync.dev", "scope": "Namespaced",
                             "names": {"plural": "things", "kind": "Thing"},
                             "versions": [{"name": "v1", "served": true, "storage": true}]}}),
        )
        .await;
    assert_eq!(bad.status, 422);
    let protected = http
        .post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": "things.example.k8s.io"},
                    "spec": {"group": "example.k8s.io", "scope": "Cluster",
                             "names": {"plural": "things", "kind": "Thing"},
                             "versions": [{"name": "v1", "served": true, "storage": true}]}}),
        )
        .await;
    assert_eq!(protected.status, 422);

    let deleted = http
        .delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.shadowsync.dev")
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        http.get("/apis/example.shadowsync.dev/v1").await.status,
        404
    );
    assert_eq!(http.get(path).await.status, 404);
}

#[tokio::test]
async fn error_shapes() {
    let server = start();
    let http = Http::new(&server);
    let unknown = http
        .get("/apis/iot.shadowsync.dev/v1alpha1/namespaces/default/nothings")
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.body["message"],
        "the server could not find the requested resource"
    );
    let put_collection = http.put(TS, &json!({})).await;
    assert_eq!(put_collection.status, 405);
    assert_eq!(put_collection.body["reason"], "MethodNotAllowed");
    let create_everywhere = http
        .post(
            "/apis/iot.shadowsync.dev/v1alpha1/thingshadows",
            &shadow("x", "t"),
        )
        .await;
    assert_eq!(create_everywhere.status, 405);
    let garbage = http
        .request(
            Method::POST,
            TS,
            Some("application/json"),
            None,
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.body["reason"], "BadRequest");
    let wrong_kind = http
        .post(TS, &json!({"apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "Other", "metadata": {"name": "x"}}))
        .await;
    assert_eq!(wrong_kind.status, 400);
    let cluster_object_in_ns = http
        .get("/apis/iot.shadowsync.dev/v1alpha1/thingshadows/x")
        .await;
    assert_eq!(cluster_object_in_ns.status, 404);
}

#[tokio::test]
async fn dry_run_and_delete_collection() {
    let server = start();
    let http = Http::new(&server);
    let rv = server.resource_version();
    let dry = http
        .request(
            Method::POST,
            &format!("{TS}?dryRun=All"),
            Some("application/json"),
            None,
            Some(serde_json::to_vec(&shadow("dry", "t")).unwrap()),
        )
        .await;
    assert_eq!(dry.status, 201);
    assert_eq!(server.resource_version(), rv);
    assert_eq!(http.get(&format!("{TS}/dry")).await.status, 404);

    for n in ["a", "b", "c"] {
        let mut s = shadow(n, n);
        s["metadata"]["labels"] = json!({"sweep": if n == "c" { "no" } else { "yes" }});
        http.post(TS, &s).await;
    }
    let swept = http
        .delete(&format!("{TS}?labelSelector=sweep%3Dyes"))
        .await;
    assert_eq!(swept.status, 200);
    assert_eq!(names(&swept.body), ["a", "b"]);
    assert_eq!(names(&http.get(TS).await.body), ["c"]);
}

/// The project's own generated CRDs (`crds/` at the workspace root) load, and the server
/// enforces what they declare.
#[tokio::test]
async fn the_project_crds_load_and_are_enforced() {
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let server = start_with(test_apiserver::Options {
        crds: vec![crds],
        ..Default::default()
    });
    let http = Http::new(&server);
    let resources = http.get("/apis/iot.shadowsync.dev/v1alpha1").await.body;
    let names: Vec<&str> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "retainedmessages",
            "retainedmessages/status",
            "thingshadows",
            "thingshadows/status"
        ]
    );

    // The example from DESIGN.md.
    let lamp = json!({
        "apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "ThingShadow",
        "metadata": {"name": "kitchen-lamp"},
        "spec": {"thingName": "kitchen-lamp", "shadowName": "config",
                 "desired": {"power": "on", "color": {"r": 255, "g": 180}},
                 "managementPolicy": "Manage", "deletionPolicy": "ClearDesired",
                 "conflictPolicy": "Overwrite", "refreshInterval": "5m"}
    });
    let created = http.post(TS, &lamp).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["spec"]["desired"]["color"]["g"], 180);
    let path = format!("{TS}/kitchen-lamp");
    let renamed = http
        .merge(&path, &json!({"spec": {"thingName": "other"}}))
        .await;
    assert_eq!(renamed.status, 422);
    assert!(renamed.body["message"]
        .as_str()
        .unwrap()
        .contains("thingName is immutable"));
    let unnamed = http
        .request(
            hyper::Method::PATCH,
            &path,
            Some("application/json-patch+json"),
            None,
            Some(br#"[{"op": "remove", "path": "/spec/shadowName"}]"#.to_vec()),
        )
        .await;
    assert_eq!(unnamed.status, 422, "{}", unnamed.body);
    let mut greengrass = lamp.clone();
    greengrass["metadata"]["name"] = json!("gg");
    greengrass["spec"]["shadowName"] = json!("AWSManagedGreengrassV2Deployment");
    assert_eq!(http.post(TS, &greengrass).await.status, 422);

    let status = http
        .merge(
            &format!("{path}/status"),
            &json!({"status": {"observedGeneration": 1, "shadow": {"version": 42},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Synced", "message": "",
                                "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1}]}}),
        )
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
    let table = http
        .get_as(TS, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .await
        .body;
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Thing",
            "Shadow",
            "Version",
            "Ready",
            "Converged",
            "Age"
        ]
    );
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(
        cells[..5],
        [
            json!("kitchen-lamp"),
            json!("kitchen-lamp"),
            json!("config"),
            json!(42),
            json!("True")
        ]
    );

    let messages = "/apis/iot.shadowsync.dev/v1alpha1/namespaces/default/retainedmessages";
    let message = |name: &str, topic: &str, payload: serde_json::Value| {
        json!({"apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "RetainedMessage",
               "metadata": {"name": name}, "spec": {"topic": topic, "payload": payload, "qos": 1}})
    };
    let ok = http
        .post(
            messages,
            &message(
                "cfg",
                "home/kitchen-lamp/config",
                json!({"json": {"interval": 30}}),
            ),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(ok.body["spec"]["payload"]["json"]["interval"], 30);
    for (name, topic, payload) in [
        ("deep", "a/b/c/d/e/f/g/h/i", json!({"text": "x"})),
        ("wild", "home/+/config", json!({"text": "x"})),
        ("two", "home/t", json!({"text": "x", "base64": "AAEC"})),
        ("none", "home/t", json!({})),
        ("bytes", "home/t", json!({"base64": "not base64!"})),
    ] {
        let refused = http.post(messages, &message(name, topic, payload)).await;
        assert_eq!(refused.status, 422, "{name}: {}", refused.body);
    }
}

#[tokio::test]
async fn malformed_bodies_are_refused_not_crashed_on() {
    let server = start();
    let http = Http::new(&server);
    let odd = [
        json!({"apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "ThingShadow", "metadata": "x"}),
        json!([1, 2]),
        json!({"apiVersion": "iot.shadowsync.dev/v1alpha1", "kind": "ThingShadow",
               "metadata": {"name": "a", "labels": "x", "finalizers": "y"}, "spec": {"thingName": "t"}}),
    ];
    for body in &odd {
        let r = http.post(TS, body).await;
        assert!(r.status == 400 || r.status == 422, "{body}: {}", r.body);
    }
    http.post(TS, &shadow("a", "t")).await;
    let r = http
        .merge(&format!("{TS}/a"), &json!({"metadata": "x"}))
        .await;
    assert_eq!(r.status, 400);
    let ns = http
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "labels": "x"}}),
        )
        .await;
    assert_eq!(ns.status, 422);
    assert_eq!(http.get("/healthz").await.status, 200);
}
