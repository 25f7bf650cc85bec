//! Watches (from a resourceVersion, bookmarks, 410 Gone, timeouts, selectors, initial
//! events) and the `/_test/` hooks (counters, injected conflicts, cutting watches,
//! forgetting history, restarts with the same data).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use test_apiserver::{Options, RequestFilter};

#[tokio::test]
async fn watch_from_a_resource_version_replays_then_streams() {
    let server = start();
    let http = Http::new(&server);
    let a = http.post(TS, &shadow("a", "a")).await;
    let from = a.rv();
    http.merge(&format!("{TS}/a"), &json!({"spec": {"qos": 1}}))
        .await;
    http.post(TS, &shadow("b", "b")).await;
    // Another namespace's objects are not in this watch.
    http.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
    )
    .await;
    http.post(
        "/apis/iot.shadowsync.dev/v1alpha1/namespaces/other/thingshadows",
        &shadow("elsewhere", "x"),
    )
    .await;

    let mut watch = http
        .watch(&format!("{TS}?watch=1&resourceVersion={from}"))
        .await;
    let first = watch.next().await.unwrap();
    assert_eq!(first["type"], "MODIFIED");
    assert_eq!(first["object"]["metadata"]["name"], "a");
    assert_eq!(first["object"]["spec"]["qos"], 1);
    assert_eq!(first["object"]["kind"], "ThingShadow");
    let second = watch.next().await.unwrap();
    assert_eq!(second["type"], "ADDED");
    assert_eq!(second["object"]["metadata"]["name"], "b");

    let c = http.post(TS, &shadow("c", "c")).await;
    let live = watch.next().await.unwrap();
    assert_eq!(live["type"], "ADDED");
    assert_eq!(live["object"]["metadata"]["resourceVersion"], c.rv());
    http.delete(&format!("{TS}/c")).await;
    let gone = watch.next().await.unwrap();
    assert_eq!(gone["type"], "DELETED");
    let deleted_rv: u64 = gone["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(deleted_rv > c.rv().parse::<u64>().unwrap());

    // All-namespace watches see both namespaces.
    let mut everywhere = http
        .watch(&format!(
            "/apis/iot.shadowsync.dev/v1alpha1/thingshadows?watch=true&resourceVersion={from}"
        ))
        .await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = everywhere.next().await.unwrap();
        seen.push(format!(
            "{} {}",
            e["type"].as_str().unwrap(),
            e["object"]["metadata"]["name"].as_str().unwrap()
        ));
    }
    assert_eq!(
        seen,
        [
            "MODIFIED a",
            "ADDED b",
            "ADDED elsewhere",
            "ADDED c",
            "DELETED c"
        ]
    );
}

#[tokio::test]
async fn watch_without_a_resource_version_starts_with_the_current_objects() {
    let server = start();
    let http = Http::new(&server);
    http.post(TS, &shadow("a", "a")).await;
    http.post(TS, &shadow("b", "b")).await;
    for query in ["watch=true", "watch=true&resourceVersion=0"] {
        let mut watch = http.watch(&format!("{TS}?{query}")).await;
        for name in ["a", "b"] {
            let e = watch.next().await.unwrap();
            assert_eq!(e["type"], "ADDED");
            assert_eq!(e["object"]["metadata"]["name"], name);
        }
    }

    // Streaming lists: the initial events end with an annotated bookmark.
    let mut streaming = http
        .watch(&format!(
            "{TS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
        ))
        .await;
    assert_eq!(streaming.next().await.unwrap()["type"], "ADDED");
    assert_eq!(streaming.next().await.unwrap()["type"], "ADDED");
    let end = streaming.next().await.unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(
        end["object"]["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );
}

#[tokio::test]
async fn bookmarks_on_request_and_periodically() {
    let server = start_with(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    });
    let http = Http::new(&server);
    let created = http.post(TS, &shadow("a", "a")).await;

    // No bookmarks unless asked for.
    let mut plain = http
        .watch(&format!("{TS}?watch=true&resourceVersion={}", created.rv()))
        .await;
    let mut with = http
        .watch(&format!(
            "{TS}?watch=true&allowWatchBookmarks=true&resourceVersion={}",
            created.rv()
        ))
        .await;
    // Unrelated writes move the global resourceVersion; the bookmark reports it.
    http.post(
        CONFIGMAPS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}),
    )
    .await;
    let current = server.resource_version().to_string();
    let hook = http.post_empty("/_test/bookmarks").await;
    assert_eq!(hook.status, 200);
    // A periodic bookmark may come first (from before the ConfigMap); the one the hook
    // asked for carries the current resourceVersion. Nothing but bookmarks arrives.
    loop {
        let bookmark = with.next().await.unwrap();
        assert_eq!(bookmark["type"], "BOOKMARK");
        assert_eq!(bookmark["object"]["kind"], "ThingShadow");
        assert_eq!(
            bookmark["object"]["apiVersion"],
            "iot.shadowsync.dev/v1alpha1"
        );
        if bookmark["object"]["metadata"]["resourceVersion"] == current.as_str() {
            break;
        }
    }
    // Periodic ones follow without a request.
    assert_eq!(with.next().await.unwrap()["type"], "BOOKMARK");

    http.merge(&format!("{TS}/a"), &json!({"spec": {"qos": 0}}))
        .await;
    let e = plain.next().await.unwrap();
    assert_eq!(e["type"], "MODIFIED");
    assert_eq!(with.next_change().await.unwrap()["type"], "MODIFIED");
}

#[tokio::test]
async fn a_too_old_resource_version_gets_410_gone() {
    let server = start_with(Options {
        history_limit: 3,
        ..Default::default()
    });
    let http = Http::new(&server);
    let first = http.post(TS, &shadow("a", "a")).await.rv();
    for n in 0..4 {
        http.merge(&format!("{TS}/a"), &json!({"spec": {"qos": n % 2}}))
            .await;
    }
    let mut watch = http
        .watch(&format!("{TS}?watch=true&resourceVersion={first}"))
        .await;
    let e = watch.next().await.unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(e["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!("too old resource version: {first}")));
    assert!(
        watch.next().await.is_none(),
        "the stream ends after the error"
    );

    // Forgetting the history makes every earlier resourceVersion too old.
    let recent = server.resource_version();
    let mut ok = http
        .watch(&format!("{TS}?watch=true&resourceVersion={}", recent - 1))
        .await;
    let forgotten = http.post_empty("/_test/history/forget").await;
    assert_eq!(
        forgotten.body["compactedResourceVersion"],
        json!(server.resource_version())
    );
    let mut old = http
        .watch(&format!("{TS}?watch=true&resourceVersion={}", recent - 1))
        .await;
    assert_eq!(old.next().await.unwrap()["object"]["code"], 410);
    // A watch opened before keeps working, and watching from now works.
    assert_eq!(ok.next().await.unwrap()["type"], "MODIFIED");
    let mut now = http
        .watch(&format!("{TS}?watch=true&resourceVersion={recent}"))
        .await;
    http.post(TS, &shadow("b", "b")).await;
    assert_eq!(now.next().await.unwrap()["type"], "ADDED");
    assert_eq!(ok.next().await.unwrap()["type"], "ADDED");
}

#[tokio::test]
async fn watches_end_at_their_timeout_or_when_cut() {
    let server = start();
    let http = Http::new(&server);
    let rv = server.resource_version();
    let mut short = http
        .watch(&format!(
            "{TS}?watch=true&timeoutSeconds=1&resourceVersion={rv}"
        ))
        .await;
    assert!(short.next().await.is_none());

    let mut long = http
        .watch(&format!("{TS}?watch=true&resourceVersion={rv}"))
        .await;
    let mut other = http
        .watch(&format!("{CONFIGMAPS}?watch=true&resourceVersion={rv}"))
        .await;
    eventually("two open watches", || async {
        (server.open_watches() == 2).then_some(())
    })
    .await;
    let info = http.get("/_test/watches").await;
    assert_eq!(info.body["open"], 2);
    let cut = http.post_empty("/_test/watches/cut").await;
    assert_eq!(cut.body["cut"], 2);
    assert!(long.next().await.is_none());
    assert!(other.next().await.is_none());
    assert_eq!(server.open_watches(), 0);
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let server = start();
    let http = Http::new(&server);
    let rv = server.resource_version();
    let mut watch = http
        .watch(&format!(
            "{TS}?watch=true&labelSelector=team%3Dred&resourceVersion={rv}"
        ))
        .await;
    let mut by_name = http
        .watch(&format!(
            "{TS}?watch=true&fieldSelector=metadata.name%3Db&resourceVersion={rv}"
        ))
        .await;
    http.post(TS, &shadow("a", "a")).await;
    http.post(TS, &shadow("b", "b")).await;
    http.merge(
        &format!("{TS}/a"),
        &json!({"metadata": {"labels": {"team": "red"}}}),
    )
    .await;
    http.merge(
        &format!("{TS}/a"),
        &json!({"metadata": {"labels": {"team": "red", "x": "y"}}}),
    )
    .await;
    http.merge(
        &format!("{TS}/a"),
        &json!({"metadata": {"labels": {"team": "blue"}}}),
    )
    .await;
    let kinds: Vec<String> = [
        watch.next().await.unwrap(),
        watch.next().await.unwrap(),
        watch.next().await.unwrap(),
    ]
    .iter()
    .map(|e| e["type"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    let only_b = by_name.next().await.unwrap();
    assert_eq!(only_b["object"]["metadata"]["name"], "b");
    http.delete(&format!("{TS}/b")).await;
    assert_eq!(by_name.next().await.unwrap()["type"], "DELETED");
    // A watch on an object's path is a watch on that name.
    let mut single = http
        .watch(&format!("{TS}/a?watch=true&resourceVersion={rv}"))
        .await;
    assert_eq!(
        single.next().await.unwrap()["object"]["metadata"]["name"],
        "a"
    );
}

#[tokio::test]
async fn table_watches_for_kubectl_get_watch() {
    let server = start();
    let http = Http::new(&server);
    let rv = server.resource_version();
    let req = hyper::Request::builder()
        .uri(format!(
            "{}{TS}?watch=true&resourceVersion={rv}",
            server.url()
        ))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client.request(req).await.unwrap();
    http.post(TS, &shadow("a", "thing-a")).await;
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while !buf.contains(&b'\n') {
        let frame = tokio::time::timeout(DEADLINE, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&frame.into_data().unwrap());
    }
    let e: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    assert_eq!(e["object"]["kind"], "Table");
    assert_eq!(e["object"]["rows"][0]["cells"][1], "thing-a");
}

#[tokio::test]
async fn counters_by_verb_resource_and_field_manager() {
    let server = start();
    let http = Http::with_agent(&server, "shadowsync/0.1");
    let kubectl = Http::with_agent(&server, "kubectl/v1.33.0");
    http.post(TS, &shadow("a", "a")).await;
    kubectl.post(TS, &shadow("b", "b")).await;
    let status = |n: u64| {
        format!(
            "{{\"apiVersion\":\"iot.shadowsync.dev/v1alpha1\",\"kind\":\"ThingShadow\",\"metadata\":{{\"name\":\"a\"}},\"status\":{{\"observedGeneration\":{n}}}}}"
        )
    };
    for n in 1..=3 {
        let r = http
            .apply_yaml(
                &format!("{TS}/a/status?fieldManager=shadowsync&force=true"),
                &status(n),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    http.merge(
        &format!("{TS}/a/status?fieldManager=other"),
        &json!({"status": {}}),
    )
    .await;
    http.get(&format!("{TS}/a")).await;

    let status_patches = RequestFilter {
        verb: Some("patch".into()),
        resource: Some("thingshadows".into()),
        subresource: Some("status".into()),
        field_manager: Some("shadowsync".into()),
        ..Default::default()
    };
    assert_eq!(server.count(&status_patches), 3);
    assert_eq!(
        server.count(&RequestFilter {
            patch_type: Some("apply".into()),
            ..Default::default()
        }),
        3
    );
    assert_eq!(
        server.count(&RequestFilter {
            verb: Some("create".into()),
            user_agent: Some("kubectl/".into()),
            ..Default::default()
        }),
        1
    );
    let over_http = http
        .get("/_test/counters?verb=patch&subresource=status&fieldManager=shadowsync&code=200")
        .await;
    assert_eq!(over_http.body["count"], 3);
    assert_eq!(over_http.body["entries"][0]["resource"], "thingshadows");
    assert_eq!(over_http.body["entries"][0]["userAgent"], "shadowsync/0.1");
    let gets = server.count(&RequestFilter {
        verb: Some("get".into()),
        ..Default::default()
    });
    assert_eq!(gets, 1);

    http.post_empty("/_test/counters/reset").await;
    assert!(server.counters().is_empty());
}

#[tokio::test]
async fn injected_conflicts_answer_the_next_writes_with_409() {
    let server = start();
    let http = Http::new(&server);
    http.post(TS, &shadow("a", "a")).await;
    let set = http
        .post_empty("/_test/faults/conflicts?count=2&verb=patch&subresource=status")
        .await;
    assert_eq!(set.status, 200);
    let path = format!("{TS}/a/status");
    let body = json!({"status": {"observedGeneration": 1}});
    // Other writes are not affected.
    assert_eq!(
        http.merge(&format!("{TS}/a"), &json!({"spec": {"qos": 1}}))
            .await
            .status,
        200
    );
    let rv = server.resource_version();
    for _ in 0..2 {
        let r = http.merge(&path, &body).await;
        assert_eq!(r.status, 409);
        assert_eq!(r.body["reason"], "Conflict");
    }
    assert_eq!(
        server.resource_version(),
        rv,
        "refused writes change nothing"
    );
    assert_eq!(http.merge(&path, &body).await.status, 200);
    assert_eq!(
        server.count(&RequestFilter {
            subresource: Some("status".into()),
            code: Some(409),
            ..Default::default()
        }),
        2
    );
    server.inject_conflicts(5, RequestFilter::default());
    assert_eq!(http.post(TS, &shadow("b", "b")).await.status, 409);
    server.clear_faults();
    assert_eq!(http.post(TS, &shadow("b", "b")).await.status, 201);
}

#[tokio::test]
async fn library_restart_keeps_data_and_history() {
    let server = start();
    let http = Http::new(&server);
    let a = http.post(TS, &shadow("a", "a")).await;
    let mut watch = http
        .watch(&format!("{TS}?watch=true&resourceVersion={}", a.rv()))
        .await;
    let addr = server.addr();
    server.restart(Duration::from_millis(50)).unwrap();
    assert!(
        watch.next().await.is_none(),
        "the restart ends open watches"
    );
    assert_eq!(server.addr(), addr);
    let fresh = Http::new(&server);
    let got = fresh.get(&format!("{TS}/a")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.rv(), a.rv());
    // Resuming the watch from the last seen resourceVersion works after a restart.
    let mut resumed = fresh
        .watch(&format!("{TS}?watch=true&resourceVersion={}", a.rv()))
        .await;
    fresh.post(TS, &shadow("b", "b")).await;
    assert_eq!(
        resumed.next().await.unwrap()["object"]["metadata"]["name"],
        "b"
    );
    // The HTTP hook restarts too.
    let hook = fresh.post_empty("/_test/restart").await;
    assert_eq!(hook.status, 202);
    assert!(resumed.next().await.is_none());
    eventually("the server to answer after the hook restart", || {
        let fresh = Http::new(&server);
        async move {
            let answer = fresh
                .try_request(hyper::Method::GET, "/healthz", None, None, None)
                .await;
            answer.ok().filter(|r| r.status == 200).map(|_| ())
        }
    })
    .await;
    assert_eq!(
        Http::new(&server).get(TS).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn binary_restart_with_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.json");
    let kubeconfig = dir.path().join("kubeconfig");
    let crds = fixtures();
    let args = |listen: &str| -> Vec<String> {
        vec![
            "--listen".into(),
            listen.into(),
            "--crds".into(),
            crds.display().to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--data-file".into(),
            data.display().to_string(),
        ]
    };
    let first_args = args("127.0.0.1:0");
    let (child, url) = spawn_binary(&first_args.iter().map(String::as_str).collect::<Vec<_>>());
    let config = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(config.contains(&format!("server: {url}")), "{config}");
    assert!(config.contains("current-context: test-apiserver"));
    assert!(config.contains("namespace: default"));

    let created = Http::at(&url).post(TS, &shadow("kept", "t")).await;
    assert_eq!(created.status, 201);
    let rv: u64 = created.rv().parse().unwrap();
    terminate(child);

    let listen = url.trim_start_matches("http://").to_string();
    let second_args = args(&listen);
    let (_child, url2) = spawn_binary(&second_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(url2, url);
    let client = Http::at(&url2);
    let got = client.get(&format!("{TS}/kept")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["metadata"]["uid"], created.body["metadata"]["uid"]);
    // resourceVersions continue where they were.
    let next: u64 = client
        .post(TS, &shadow("new", "t"))
        .await
        .rv()
        .parse()
        .unwrap();
    assert!(next > rv);
    // The history did not survive: watching from before the restart is too old.
    let mut watch = client
        .watch(&format!("{TS}?watch=true&resourceVersion={}", rv - 1))
        .await;
    assert_eq!(watch.next().await.unwrap()["object"]["code"], 410);
}
