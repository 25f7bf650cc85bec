//! The server through kube-rs, the client the operator uses: kubeconfig loading,
//! discovery (plain and aggregated), typed and dynamic objects, status patches by
//! server-side apply, errors, the runtime watcher with a reflector across cut watches and
//! 410s, and the event Recorder.

mod common;

use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, ObjectReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Discovery, Scope};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use test_apiserver::{RequestFilter, TestApiServer};

async fn client(server: &TestApiServer) -> Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    Client::try_from(config).unwrap()
}

fn shadows(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("iot.shadowsync.dev", "v1alpha1", "ThingShadow"),
        "thingshadows",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn dynamic_shadow(name: &str) -> DynamicObject {
    serde_json::from_value(shadow(name, name)).unwrap()
}

fn api_error(err: kube::Error) -> Box<kube::core::Status> {
    match err {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn try_default_reads_kubeconfig_and_discovery_works() {
    let server = start();
    // The only test in this binary that reads KUBECONFIG.
    std::env::set_var("KUBECONFIG", server.kubeconfig_path());
    let client = Client::try_default().await.unwrap();
    assert_eq!(client.default_namespace(), "default");
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.minor, "33");

    for discovery in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let gvk = GroupVersionKind::gvk("iot.shadowsync.dev", "v1alpha1", "ThingShadow");
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .expect("ThingShadow is discovered");
        assert_eq!(ar.plural, "thingshadows");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(caps
            .subresources
            .iter()
            .any(|(sr, _)| sr.plural == "status"));
        let lease = GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease");
        assert!(discovery.resolve_gvk(&lease).is_some());
        let cm = GroupVersionKind::gvk("", "v1", "ConfigMap");
        assert!(discovery.resolve_gvk(&cm).is_some());
        let event = GroupVersionKind::gvk("events.k8s.io", "v1", "Event");
        assert!(discovery.resolve_gvk(&event).is_some());
    }
}

#[tokio::test]
async fn typed_objects_and_api_errors() {
    let server = start();
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"}, "data": {"a": "1"}
    }))
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some());
    let dup = api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert!(dup.is_already_exists());

    cm.metadata.resource_version = created.metadata.resource_version.clone();
    cm.data = Some([("a".to_string(), "2".to_string())].into());
    let replaced = cms
        .replace("settings", &PostParams::default(), &cm)
        .await
        .unwrap();
    assert_eq!(replaced.data.unwrap()["a"], "2");
    let stale = api_error(
        cms.replace("settings", &PostParams::default(), &cm)
            .await
            .unwrap_err(),
    );
    assert!(stale.is_conflict());
    assert_eq!(stale.code, 409);

    let listed = cms.list(&ListParams::default().labels("")).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let gone = cms
        .delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    assert!(gone.is_right(), "an immediate delete answers a Status");
    let missing = api_error(cms.get("settings").await.unwrap_err());
    assert!(missing.is_not_found());

    // Leases, as leader election uses them.
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "shadowsync-leader"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let held = leases.create(&PostParams::default(), &lease).await.unwrap();
    let renewed = leases
        .patch(
            "shadowsync-leader",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": "2025-01-01T00:00:00.000000Z"}})),
        )
        .await
        .unwrap();
    assert_ne!(
        renewed.metadata.resource_version,
        held.metadata.resource_version
    );

    // Invalid custom resources come back as 422 with causes.
    let shadows = shadows(&client);
    let mut bad = dynamic_shadow("bad");
    bad.data["spec"]["thingName"] = json!("has spaces");
    let invalid = api_error(
        shadows
            .create(&PostParams::default(), &bad)
            .await
            .unwrap_err(),
    );
    assert!(invalid.is_invalid());
    let causes = invalid.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.thingName");
}

#[tokio::test]
async fn status_by_server_side_apply_and_finalizers() {
    let server = start();
    let client = client(&server).await;
    let api = shadows(&client);
    let created = api
        .create(&PostParams::default(), &dynamic_shadow("lamp"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({
        "apiVersion": "iot.shadowsync.dev/v1alpha1",
        "kind": "ThingShadow",
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Synced"}]}
    });
    let pp = PatchParams::apply("shadowsync").force();
    let after = api
        .patch_status("lamp", &pp, &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(after.data["status"]["conditions"][0]["status"], "True");
    assert_eq!(after.metadata.generation, Some(1));
    // The same apply again is a no-op: no new resourceVersion.
    let again = api
        .patch_status("lamp", &pp, &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        after.metadata.resource_version
    );
    assert_eq!(
        server.count(&RequestFilter {
            verb: Some("patch".into()),
            subresource: Some("status".into()),
            field_manager: Some("shadowsync".into()),
            ..Default::default()
        }),
        2
    );

    // Finalizer flow as a controller does it.
    api.patch(
        "lamp",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["iot.shadowsync.dev/cleanup"]}})),
    )
    .await
    .unwrap();
    let pending = api.delete("lamp", &DeleteParams::default()).await.unwrap();
    let marked = pending.left().expect("a finalizer keeps the object");
    assert!(marked.metadata.deletion_timestamp.is_some());
    api.patch(
        "lamp",
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": ["iot.shadowsync.dev/cleanup"]},
            {"op": "remove", "path": "/metadata/finalizers"}
        ])).unwrap()),
    )
    .await
    .unwrap();
    assert!(api_error(api.get("lamp").await.unwrap_err()).is_not_found());
}

#[tokio::test]
async fn watcher_and_reflector_survive_cut_watches_and_410() {
    // No periodic bookmarks: they would move the watcher's resourceVersion on their own.
    let server = start_with(test_apiserver::Options {
        bookmark_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    });
    let client = client(&server).await;
    let api = shadows(&client);
    api.create(&PostParams::default(), &dynamic_shadow("a"))
        .await
        .unwrap();

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("iot.shadowsync.dev", "v1alpha1", "ThingShadow"),
        "thingshadows",
    );
    let writer = reflector::store::Writer::<DynamicObject>::new(ar);
    let reader = writer.as_reader();
    let stream = watcher(api.clone(), watcher::Config::default().timeout(30))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let handle = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                eprintln!("watcher error (retried): {e}");
            }
        }
    });
    let names = |reader: &reflector::Store<DynamicObject>| {
        let mut n: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
        n.sort();
        n
    };
    reader.wait_until_ready().await.unwrap();
    assert_eq!(names(&reader), ["a"]);

    api.create(&PostParams::default(), &dynamic_shadow("b"))
        .await
        .unwrap();
    eventually("b in the cache", || async {
        (names(&reader) == ["a", "b"]).then_some(())
    })
    .await;

    // A cut watch is resumed from the last resourceVersion.
    eventually("an open watch", || async {
        (server.open_watches() > 0).then_some(())
    })
    .await;
    server.cut_watches();
    api.create(&PostParams::default(), &dynamic_shadow("c"))
        .await
        .unwrap();
    eventually("c in the cache", || async {
        (names(&reader) == ["a", "b", "c"]).then_some(())
    })
    .await;

    // A write the watcher does not see moves the resourceVersion past its last one; with
    // the history forgotten, its resumed watch gets 410 Gone and it lists again.
    let lists = |server: &TestApiServer| {
        server.count(&RequestFilter {
            verb: Some("list".into()),
            resource: Some("thingshadows".into()),
            ..Default::default()
        })
    };
    assert_eq!(lists(&server), 1);
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let unrelated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "unrelated"}})).unwrap();
    cms.create(&PostParams::default(), &unrelated)
        .await
        .unwrap();
    server.forget_history();
    server.cut_watches();
    eventually("a second list after 410", || async {
        (lists(&server) == 2).then_some(())
    })
    .await;
    api.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("a gone from the cache", || async {
        (names(&reader) == ["b", "c"]).then_some(())
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn recorder_events_show_up_as_core_events() {
    let server = start();
    let client = client(&server).await;
    let api = shadows(&client);
    let lamp = api
        .create(&PostParams::default(), &dynamic_shadow("lamp"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "shadowsync".into(),
            instance: Some("shadowsync-0".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("iot.shadowsync.dev/v1alpha1".into()),
        kind: Some("ThingShadow".into()),
        name: Some("lamp".into()),
        namespace: Some("default".into()),
        uid: lamp.metadata.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "OutOfBandEdit".into(),
        note: Some("someone changed /power".into()),
        action: "Sync".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();

    let core: Api<CoreEvent> = Api::default_namespaced(client.clone());
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=lamp"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("OutOfBandEdit"));
    assert_eq!(e.message.as_deref(), Some("someone changed /power"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.series.as_ref().and_then(|s| s.count), Some(2));
}
