//! The registry in the embedded store: what only this store has (the shared file,
//! durability, atomicity). The behaviour all registries share is in
//! `tests/registry_contract.rs`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::dataplane::registry::{Attributes, Registry, ThingGroupSpec};
use crate::dataplane::{DataPlane, ErrorKind};

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn child_of(parent: &str) -> ThingGroupSpec {
    ThingGroupSpec {
        parent_group_name: Some(parent.to_string()),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_registry_lives_in_the_shadow_file_and_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let (thing_id, group_id) = {
        let dp = EmbeddedDataPlane::open(&path).expect("created");
        let thing = dp
            .create_thing("lamp-1", &attrs(&[("color", "red")]))
            .await
            .expect("thing");
        let group = dp
            .create_thing_group("fleet", &ThingGroupSpec::default())
            .await
            .expect("group");
        dp.create_thing_group("canary", &child_of("fleet"))
            .await
            .expect("child");
        dp.add_thing_to_thing_group("canary", "lamp-1")
            .await
            .expect("added");
        dp.update_thing_shadow(
            "lamp-1",
            None,
            Bytes::from(json!({"state": {"desired": {"on": true}}}).to_string()),
        )
        .await
        .expect("shadow");
        (thing.thing_id, group.thing_group_id)
    };
    let dp = EmbeddedDataPlane::open(&path).expect("reopened");
    let again = dp
        .create_thing("lamp-1", &attrs(&[("color", "red")]))
        .await
        .expect("idempotent");
    assert_eq!(again.thing_id, thing_id);
    let group = dp
        .create_thing_group("fleet", &ThingGroupSpec::default())
        .await
        .expect("idempotent");
    assert_eq!(group.thing_group_id, group_id);
    let page = dp
        .list_things_in_thing_group("fleet", true, None, None)
        .await
        .expect("listed");
    assert_eq!(page.things, ["lamp-1"]);
    let found = dp
        .search_index("thingGroupNames:canary", None, None)
        .await
        .expect("searched");
    assert_eq!(found.things.len(), 1);
    assert_eq!(found.things[0].thing_id, thing_id);
    assert!(dp.get_thing_shadow("lamp-1", None).await.is_ok());
}

#[tokio::test]
async fn a_file_written_before_the_registry_opens_with_an_empty_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.redb");
    {
        // The layout of format 1 before the registry: only its three tables.
        let db = redb::Database::create(&path).expect("created");
        let txn = db.begin_write().expect("write");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .expect("meta");
            meta.insert("format", 1).expect("format");
            txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("shadows"))
                .expect("shadows");
            txn.open_table(redb::TableDefinition::<&str, &[u8]>::new(
                "retained_messages",
            ))
            .expect("retained");
        }
        txn.commit().expect("commit");
    }
    let dp = EmbeddedDataPlane::open(&path).expect("opens");
    let page = dp.search_index("*", None, None).await.expect("searched");
    assert!(page.things.is_empty());
    dp.create_thing("t", &Attributes::new())
        .await
        .expect("thing");
}

#[tokio::test]
async fn a_refused_call_changes_nothing() {
    let dp = EmbeddedDataPlane::in_memory();
    dp.create_thing("t", &Attributes::new()).await.unwrap();
    dp.create_thing_group("root-a", &ThingGroupSpec::default())
        .await
        .unwrap();
    dp.create_thing_group("a-1", &child_of("root-a"))
        .await
        .unwrap();
    dp.create_thing_group("a-2", &child_of("root-a"))
        .await
        .unwrap();
    dp.add_thing_to_thing_group("a-1", "t").await.unwrap();
    // Same hierarchy: refused, and the membership it would have made is not there.
    let err = dp.add_thing_to_thing_group("a-2", "t").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("same hierarchy"), "{}", err.message);
    let page = dp
        .list_things_in_thing_group("a-2", false, None, None)
        .await
        .unwrap();
    assert!(page.things.is_empty());
    // A group with children is not deleted, and keeps its things and children.
    let err = dp.delete_thing_group("root-a", None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    let page = dp
        .list_things_in_thing_group("root-a", true, None, None)
        .await
        .unwrap();
    assert_eq!(page.things, ["t"]);
    // A version conflict deletes nothing.
    let err = dp.delete_thing("t", Some(7)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::VersionConflict);
    dp.delete_thing("t", Some(1))
        .await
        .expect("version 1 is current");
    let page = dp
        .list_things_in_thing_group("a-1", false, None, None)
        .await
        .unwrap();
    assert!(page.things.is_empty(), "a deleted thing leaves its groups");
}

#[tokio::test]
async fn limits_of_hierarchies_and_memberships() {
    let dp = EmbeddedDataPlane::in_memory();
    let mut parent: Option<String> = None;
    for level in 1..=7 {
        let name = format!("level-{level}");
        let spec = ThingGroupSpec {
            parent_group_name: parent.clone(),
            ..Default::default()
        };
        dp.create_thing_group(&name, &spec)
            .await
            .expect("within depth");
        parent = Some(name);
    }
    let err = dp
        .create_thing_group("level-8", &child_of("level-7"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("deeper"), "{}", err.message);

    dp.create_thing("many", &Attributes::new()).await.unwrap();
    for n in 0..10 {
        let group = format!("root-{n}");
        dp.create_thing_group(&group, &ThingGroupSpec::default())
            .await
            .unwrap();
        dp.add_thing_to_thing_group(&group, "many").await.unwrap();
    }
    dp.create_thing_group("root-10", &ThingGroupSpec::default())
        .await
        .unwrap();
    let err = dp
        .add_thing_to_thing_group("root-10", "many")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("10 thing groups"), "{}", err.message);
    let found = dp.search_index("thingName:many", None, None).await.unwrap();
    assert_eq!(found.things[0].thing_group_names.len(), 10);

    let err = dp
        .create_thing(
            "x",
            &attrs(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
}

#[tokio::test]
async fn concurrent_creates_of_one_thing_agree_on_its_id() {
    let dp = Arc::new(EmbeddedDataPlane::in_memory());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let dp = dp.clone();
            tokio::spawn(async move { dp.create_thing("same", &Attributes::new()).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        ids.insert(task.await.expect("task").expect("created").thing_id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn tokens_are_tied_to_their_listing() {
    let dp = EmbeddedDataPlane::in_memory();
    dp.create_thing_group("g", &ThingGroupSpec::default())
        .await
        .unwrap();
    for n in 0..3 {
        let thing = format!("t-{n}");
        dp.create_thing(&thing, &Attributes::new()).await.unwrap();
        dp.add_thing_to_thing_group("g", &thing).await.unwrap();
    }
    let page = dp
        .list_things_in_thing_group("g", false, None, Some(2))
        .await
        .unwrap();
    let token = page.next_token.expect("more");
    // The same token for another group, for the recursive listing or a search is refused.
    for result in [
        dp.list_things_in_thing_group("h", false, Some(&token), None)
            .await
            .map(|_| ()),
        dp.list_things_in_thing_group("g", true, Some(&token), None)
            .await
            .map(|_| ()),
        dp.search_index("*", Some(&token), None).await.map(|_| ()),
    ] {
        assert_eq!(result.unwrap_err().kind, ErrorKind::InvalidRequest);
    }
    let search = dp.search_index("*", None, Some(1)).await.unwrap();
    let token = search.next_token.expect("more");
    let err = dp
        .search_index("thingName:t-*", Some(&token), Some(1))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::InvalidRequest,
        "a token is for its query"
    );
}
