//! The registry contract: one suite of AWS IoT registry behaviour (things, static thing
//! groups, membership, ListThingsInThingGroup, SearchIndex), run against every
//! [`Registry`]:
//! - `embedded`: the embedded store, in process;
//! - `server`: `shadowsync dataplane serve` as a process, through the AWS SDK adapter
//!   (aws-sdk-iot, with the same `--endpoint-url` as the data plane);
//! - `moto`: a moto server (`pip install 'moto[server]'`), through the AWS SDK adapter.
//!
//! Each case uses its own names, so all cases share one server per backend and run in
//! parallel; searches are scoped to the case's names. What moto does not implement is
//! skipped on moto with a printed `SKIP moto: <case>: <reason>` line.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use shadowsync::dataplane::aws::{AwsDataPlane, AwsOptions};
use shadowsync::dataplane::embedded::EmbeddedDataPlane;
use shadowsync::dataplane::registry::{
    Attributes, Registry, ThingDocument, ThingGroupSpec, ThingNamePage,
};
use shadowsync::dataplane::{DataPlaneError, ErrorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Embedded,
    Server,
    Moto,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Server => "server",
            Backend::Moto => "moto",
        }
    }
}

struct Ctx {
    backend: Backend,
    case: &'static str,
    registry: Arc<dyn Registry>,
}

impl Ctx {
    /// `None` (after printing why) when the backend is not available here.
    async fn new(backend: Backend, case: &'static str) -> Option<Ctx> {
        let registry: Arc<dyn Registry> = match backend {
            Backend::Embedded => Arc::new(EmbeddedDataPlane::in_memory()),
            Backend::Server => match support::local_server() {
                Ok(server) => Arc::new(aws_registry(server.url.clone()).await),
                Err(why) => panic!("shadowsync dataplane serve did not start: {why}"),
            },
            Backend::Moto => match support::moto() {
                support::MotoState::Running(moto) => {
                    Arc::new(aws_registry(moto.endpoint_url()).await)
                }
                support::MotoState::NotInstalled => {
                    let message = "moto is not installed: pip install 'moto[server]'";
                    if std::env::var(support::REQUIRE_MOTO_ENV).is_ok_and(|v| v == "1") {
                        panic!("{message} ({}=1 requires it)", support::REQUIRE_MOTO_ENV);
                    }
                    skip_line(&format!("SKIP moto: {case}: {message}"));
                    return None;
                }
                support::MotoState::Failed(why) => panic!("moto did not start: {why}"),
            },
        };
        Some(Ctx {
            backend,
            case,
            registry,
        })
    }

    /// A name no other case (or call of this case) uses.
    fn unique(&self, what: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{}-{what}-{}-{n}", self.case, std::process::id()).replace('_', "-")
    }

    /// True (after printing why) when this part of the case cannot run on `backend`.
    fn skip_on(&self, backend: Backend, reason: &str) -> bool {
        if self.backend == backend {
            skip_line(&format!(
                "SKIP {}: {}: {reason}",
                backend.label(),
                self.case
            ));
            true
        } else {
            false
        }
    }

    async fn thing(&self, name: &str, attributes: &[(&str, &str)]) {
        if let Err(e) = self.registry.create_thing(name, &attrs(attributes)).await {
            panic!("create thing {name}: {e}");
        }
    }

    async fn group(&self, name: &str, parent: Option<&str>) {
        let spec = ThingGroupSpec {
            parent_group_name: parent.map(str::to_string),
            ..Default::default()
        };
        if let Err(e) = self.registry.create_thing_group(name, &spec).await {
            panic!("create group {name}: {e}");
        }
    }

    async fn add(&self, group: &str, thing: &str) {
        if let Err(e) = self.registry.add_thing_to_thing_group(group, thing).await {
            panic!("add {thing} to {group}: {e}");
        }
    }

    async fn list(&self, group: &str, recursive: bool) -> Vec<String> {
        match self
            .registry
            .list_things_in_thing_group(group, recursive, None, None)
            .await
        {
            Ok(page) => sorted(page.things),
            Err(e) => panic!("list {group} (recursive {recursive}): {e}"),
        }
    }

    async fn search(&self, query: &str) -> Vec<ThingDocument> {
        match self.registry.search_index(query, None, None).await {
            Ok(page) => page.things,
            Err(e) => panic!("search {query:?}: {e}"),
        }
    }

    async fn search_names(&self, query: &str) -> Vec<String> {
        sorted(
            self.search(query)
                .await
                .into_iter()
                .map(|d| d.thing_name)
                .collect(),
        )
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Prints a skip to the real stderr (libtest captures `eprintln!` of passing tests).
fn skip_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

async fn aws_registry(endpoint_url: String) -> AwsDataPlane {
    match AwsDataPlane::connect(AwsOptions {
        endpoint_url: Some(endpoint_url),
        region: None,
    })
    .await
    {
        Ok(plane) => plane,
        Err(e) => panic!("cannot set up the AWS client: {e}"),
    }
}

fn expect_kind<T: std::fmt::Debug>(
    result: Result<T, DataPlaneError>,
    kind: ErrorKind,
    what: &str,
) -> DataPlaneError {
    match result {
        Err(err) if err.kind == kind => err,
        other => panic!("{what}: expected {kind:?}, got {other:?}"),
    }
}

/// Every page of a listing, following `nextToken`.
async fn all_pages(cx: &Ctx, group: &str, recursive: bool, page_size: i32) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let ThingNamePage { things, next_token } = match cx
            .registry
            .list_things_in_thing_group(group, recursive, token.as_deref(), Some(page_size))
            .await
        {
            Ok(page) => page,
            Err(e) => panic!("list {group} page {pages}: {e}"),
        };
        pages += 1;
        assert!(
            things.len() <= page_size as usize,
            "page too big: {things:?}"
        );
        names.extend(things);
        match next_token {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    (names, pages)
}

const MOTO_IDEMPOTENCE: &str =
    "moto 5.x overwrites a thing created again with other attributes instead of refusing it";
const MOTO_DELETE_MISSING: &str =
    "moto 5.x answers ResourceNotFoundException to DeleteThing of a missing thing (AWS succeeds)";
const MOTO_PAGING: &str =
    "moto 5.x ignores maxResults and nextToken of ListThingsInThingGroup and SearchIndex";
const MOTO_RECURSIVE: &str = "moto 5.x ignores `recursive` of ListThingsInThingGroup";
const MOTO_DELETED_MEMBERS: &str = "moto 5.x keeps a deleted thing in the thing groups it was in";
const MOTO_VALIDATION: &str =
    "moto 5.x does not check thing and group names against AWS's pattern and length";
const MOTO_HIERARCHY: &str =
    "moto 5.x lets a thing into two groups of one hierarchy and checks no hierarchy depth";
const MOTO_MISSING_PARENT: &str =
    "moto 5.x fails with a 500 on CreateThingGroup with a parent that does not exist";
const MOTO_QUERY: &str =
    "moto 5.x runs unsupported query forms loosely (substring match) instead of refusing them";
const MOTO_CASE: &str = "moto 5.x searches case-sensitively (AWS: values are case-insensitive)";

// ---------------------------------------------------------------------------------
// Things

async fn create_thing_is_idempotent(cx: &Ctx) {
    let name = cx.unique("t");
    let first = cx
        .registry
        .create_thing(&name, &attrs(&[("color", "red")]))
        .await
        .expect("created");
    assert_eq!(first.thing_name, name);
    assert!(
        first.thing_arn.starts_with("arn:aws:iot:")
            && first.thing_arn.ends_with(&format!(":thing/{name}")),
        "{}",
        first.thing_arn
    );
    assert!(!first.thing_id.is_empty());
    let again = cx
        .registry
        .create_thing(&name, &attrs(&[("color", "red")]))
        .await
        .expect("the same thing again succeeds");
    assert_eq!(again.thing_arn, first.thing_arn);
    if cx.backend != Backend::Moto {
        // moto makes a new id for the same thing.
        assert_eq!(again.thing_id, first.thing_id);
    }
    if cx.skip_on(Backend::Moto, MOTO_IDEMPOTENCE) {
        return;
    }
    let err = expect_kind(
        cx.registry
            .create_thing(&name, &attrs(&[("color", "blue")]))
            .await,
        ErrorKind::ResourceAlreadyExists,
        "same name, other attributes",
    );
    assert!(err.message.contains(&name), "{}", err.message);
    // The refused create changed nothing.
    let docs = cx.search(&format!("thingName:{name}")).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].attributes, attrs(&[("color", "red")]));
}

async fn delete_thing(cx: &Ctx) {
    let name = cx.unique("t");
    cx.thing(&name, &[]).await;
    cx.registry
        .delete_thing(&name, None)
        .await
        .expect("deleted");
    assert!(cx.search(&format!("thingName:{name}")).await.is_empty());
    let group = cx.unique("g");
    cx.group(&group, None).await;
    expect_kind(
        cx.registry.add_thing_to_thing_group(&group, &name).await,
        ErrorKind::ResourceNotFound,
        "add a deleted thing",
    );
    // Created again, it is a new thing.
    cx.thing(&name, &[("v", "2")]).await;
    let docs = cx.search(&format!("thingName:{name}")).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].attributes, attrs(&[("v", "2")]));
    if cx.skip_on(Backend::Moto, MOTO_DELETE_MISSING) {
        return;
    }
    cx.registry
        .delete_thing(&cx.unique("never"), None)
        .await
        .expect("deleting a missing thing succeeds");
    expect_kind(
        cx.registry.delete_thing(&name, Some(99)).await,
        ErrorKind::VersionConflict,
        "expectedVersion 99 of a thing at version 1",
    );
    cx.registry
        .delete_thing(&name, Some(1))
        .await
        .expect("version 1 is current");
}

async fn invalid_names_are_refused(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, MOTO_VALIDATION) {
        return;
    }
    for bad in ["a b", "semi;colon", &"x".repeat(129)] {
        expect_kind(
            cx.registry.create_thing(bad, &Attributes::new()).await,
            ErrorKind::InvalidRequest,
            &format!("thing {bad:?}"),
        );
        expect_kind(
            cx.registry
                .create_thing_group(bad, &ThingGroupSpec::default())
                .await,
            ErrorKind::InvalidRequest,
            &format!("group {bad:?}"),
        );
    }
    let longest = "x".repeat(128);
    // 128 characters are allowed (the name is shared by every run: fine, it is idempotent).
    cx.registry
        .create_thing(&longest, &Attributes::new())
        .await
        .expect("128 characters");
}

// ---------------------------------------------------------------------------------
// Thing groups

async fn create_thing_group_is_idempotent(cx: &Ctx) {
    let name = cx.unique("g");
    let spec = ThingGroupSpec {
        description: Some("lamps on floor 2".into()),
        attributes: attrs(&[("floor", "2")]),
        ..Default::default()
    };
    let first = cx
        .registry
        .create_thing_group(&name, &spec)
        .await
        .expect("created");
    assert_eq!(first.thing_group_name, name);
    assert!(
        first
            .thing_group_arn
            .ends_with(&format!(":thinggroup/{name}")),
        "{}",
        first.thing_group_arn
    );
    let again = cx
        .registry
        .create_thing_group(&name, &spec)
        .await
        .expect("the same group again succeeds");
    assert_eq!(again, first);
    let other = ThingGroupSpec {
        description: Some("another description".into()),
        ..spec
    };
    expect_kind(
        cx.registry.create_thing_group(&name, &other).await,
        ErrorKind::ResourceAlreadyExists,
        "same name, other properties",
    );
}

async fn delete_thing_group(cx: &Ctx) {
    let parent = cx.unique("parent");
    let child = cx.unique("child");
    let thing = cx.unique("t");
    cx.group(&parent, None).await;
    cx.group(&child, Some(&parent)).await;
    cx.thing(&thing, &[]).await;
    cx.add(&child, &thing).await;
    expect_kind(
        cx.registry.delete_thing_group(&parent, None).await,
        ErrorKind::InvalidRequest,
        "delete a group with a child group",
    );
    cx.registry
        .delete_thing_group(&child, None)
        .await
        .expect("a leaf group with things is deleted");
    expect_kind(
        cx.registry
            .list_things_in_thing_group(&child, false, None, None)
            .await,
        ErrorKind::ResourceNotFound,
        "list a deleted group",
    );
    cx.registry
        .delete_thing_group(&parent, None)
        .await
        .expect("now childless");
    cx.registry
        .delete_thing_group(&cx.unique("never"), None)
        .await
        .expect("deleting a missing group succeeds");
    // The thing itself is untouched.
    assert_eq!(
        cx.search_names(&format!("thingName:{thing}")).await,
        [thing]
    );
}

async fn missing_parent_is_refused(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, MOTO_MISSING_PARENT) {
        return;
    }
    let spec = ThingGroupSpec {
        parent_group_name: Some(cx.unique("missing")),
        ..Default::default()
    };
    expect_kind(
        cx.registry
            .create_thing_group(&cx.unique("orphan"), &spec)
            .await,
        ErrorKind::InvalidRequest,
        "a parent that does not exist",
    );
}

// ---------------------------------------------------------------------------------
// Membership and listing

async fn membership_is_idempotent(cx: &Ctx) {
    let group = cx.unique("g");
    let thing = cx.unique("t");
    cx.group(&group, None).await;
    cx.thing(&thing, &[]).await;
    cx.add(&group, &thing).await;
    cx.add(&group, &thing).await;
    assert_eq!(cx.list(&group, false).await, std::slice::from_ref(&thing));
    for _ in 0..2 {
        cx.registry
            .remove_thing_from_thing_group(&group, &thing)
            .await
            .expect("removed (or was not a member)");
    }
    assert!(cx.list(&group, false).await.is_empty());
}

async fn missing_things_and_groups_are_not_found(cx: &Ctx) {
    let group = cx.unique("g");
    let thing = cx.unique("t");
    cx.group(&group, None).await;
    cx.thing(&thing, &[]).await;
    let missing_group = cx.unique("nogroup");
    let missing_thing = cx.unique("nothing");
    expect_kind(
        cx.registry
            .add_thing_to_thing_group(&missing_group, &thing)
            .await,
        ErrorKind::ResourceNotFound,
        "add to a missing group",
    );
    expect_kind(
        cx.registry
            .add_thing_to_thing_group(&group, &missing_thing)
            .await,
        ErrorKind::ResourceNotFound,
        "add a missing thing",
    );
    expect_kind(
        cx.registry
            .remove_thing_from_thing_group(&missing_group, &thing)
            .await,
        ErrorKind::ResourceNotFound,
        "remove from a missing group",
    );
    expect_kind(
        cx.registry
            .remove_thing_from_thing_group(&group, &missing_thing)
            .await,
        ErrorKind::ResourceNotFound,
        "remove a missing thing",
    );
    expect_kind(
        cx.registry
            .list_things_in_thing_group(&missing_group, false, None, None)
            .await,
        ErrorKind::ResourceNotFound,
        "list a missing group",
    );
}

async fn list_things_with_paging(cx: &Ctx) {
    let group = cx.unique("g");
    cx.group(&group, None).await;
    let mut expected = Vec::new();
    for n in 0..7 {
        let thing = cx.unique(&format!("t{n}"));
        cx.thing(&thing, &[]).await;
        cx.add(&group, &thing).await;
        expected.push(thing);
    }
    expected.sort();
    assert_eq!(cx.list(&group, false).await, expected);
    if cx.skip_on(Backend::Moto, MOTO_PAGING) {
        return;
    }
    let (names, pages) = all_pages(cx, &group, false, 3).await;
    assert_eq!(pages, 3);
    assert_eq!(sorted(names.clone()), expected);
    assert_eq!(
        names.len(),
        BTreeSet::from_iter(&names).len(),
        "a duplicate"
    );
    let (names, pages) = all_pages(cx, &group, false, 7).await;
    assert_eq!((names.len(), pages), (7, 1));
    for bad in [0, 251] {
        expect_kind(
            cx.registry
                .list_things_in_thing_group(&group, false, None, Some(bad))
                .await,
            ErrorKind::InvalidRequest,
            &format!("maxResults {bad}"),
        );
    }
    expect_kind(
        cx.registry
            .list_things_in_thing_group(&group, false, Some("not-a-token"), None)
            .await,
        ErrorKind::InvalidRequest,
        "a made-up nextToken",
    );
}

async fn recursive_listing(cx: &Ctx) {
    // root > mid > leaf, and a sibling of mid; one thing in each.
    let root = cx.unique("root");
    let mid = cx.unique("mid");
    let leaf = cx.unique("leaf");
    let sibling = cx.unique("sibling");
    cx.group(&root, None).await;
    cx.group(&mid, Some(&root)).await;
    cx.group(&leaf, Some(&mid)).await;
    cx.group(&sibling, Some(&root)).await;
    let mut things = Vec::new();
    for group in [&root, &mid, &leaf, &sibling] {
        let thing = cx.unique("t");
        cx.thing(&thing, &[]).await;
        cx.add(group, &thing).await;
        things.push(thing);
    }
    assert_eq!(cx.list(&root, false).await, [things[0].clone()]);
    assert_eq!(cx.list(&mid, false).await, [things[1].clone()]);
    if cx.skip_on(Backend::Moto, MOTO_RECURSIVE) {
        return;
    }
    assert_eq!(cx.list(&root, true).await, sorted(things.clone()));
    assert_eq!(
        cx.list(&mid, true).await,
        sorted(vec![things[1].clone(), things[2].clone()])
    );
    assert_eq!(cx.list(&leaf, true).await, [things[2].clone()]);
    // Paging works across the hierarchy too.
    let (names, pages) = all_pages(cx, &root, true, 3).await;
    assert_eq!(pages, 2);
    assert_eq!(sorted(names), sorted(things));
}

async fn deleting_a_thing_leaves_its_groups(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, MOTO_DELETED_MEMBERS) {
        return;
    }
    let group = cx.unique("g");
    let stays = cx.unique("stays");
    let goes = cx.unique("goes");
    cx.group(&group, None).await;
    for thing in [&stays, &goes] {
        cx.thing(thing, &[]).await;
        cx.add(&group, thing).await;
    }
    cx.registry
        .delete_thing(&goes, None)
        .await
        .expect("deleted");
    assert_eq!(cx.list(&group, false).await, [stays]);
    // Created again, it is in no group.
    cx.thing(&goes, &[]).await;
    assert!(!cx.list(&group, false).await.contains(&goes));
}

async fn one_group_per_hierarchy(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, MOTO_HIERARCHY) {
        return;
    }
    let root = cx.unique("root");
    let a = cx.unique("a");
    let b = cx.unique("b");
    let other_root = cx.unique("other");
    cx.group(&root, None).await;
    cx.group(&a, Some(&root)).await;
    cx.group(&b, Some(&root)).await;
    cx.group(&other_root, None).await;
    let thing = cx.unique("t");
    cx.thing(&thing, &[]).await;
    cx.add(&a, &thing).await;
    expect_kind(
        cx.registry.add_thing_to_thing_group(&b, &thing).await,
        ErrorKind::InvalidRequest,
        "a second group of the same hierarchy",
    );
    expect_kind(
        cx.registry.add_thing_to_thing_group(&root, &thing).await,
        ErrorKind::InvalidRequest,
        "the root of the same hierarchy",
    );
    cx.add(&other_root, &thing).await;
    // Moving within a hierarchy: remove, then add.
    cx.registry
        .remove_thing_from_thing_group(&a, &thing)
        .await
        .expect("removed");
    cx.add(&b, &thing).await;
    assert_eq!(cx.list(&root, true).await, [thing]);
}

// ---------------------------------------------------------------------------------
// SearchIndex

/// Three things under one prefix: `-a` red in group, `-b` blue in group, `-c` red alone.
async fn search_fleet(cx: &Ctx) -> (String, String, [String; 3]) {
    let prefix = cx.unique("s");
    let group = cx.unique("g");
    cx.group(&group, None).await;
    let names = [
        format!("{prefix}-a"),
        format!("{prefix}-b"),
        format!("{prefix}-c"),
    ];
    cx.thing(&names[0], &[("color", "red"), ("floor", "2")])
        .await;
    cx.thing(&names[1], &[("color", "blue")]).await;
    cx.thing(&names[2], &[("color", "red")]).await;
    cx.add(&group, &names[0]).await;
    cx.add(&group, &names[1]).await;
    (prefix, group, names)
}

async fn search_query_forms(cx: &Ctx) {
    let (prefix, group, [a, b, c]) = search_fleet(cx).await;
    assert_eq!(
        cx.search_names(&format!("thingName:{a}")).await,
        std::slice::from_ref(&a)
    );
    assert_eq!(
        cx.search_names(&format!("thingName:{prefix}-*")).await,
        [a.clone(), b.clone(), c.clone()]
    );
    assert_eq!(
        cx.search_names(&format!("thingGroupNames:{group}")).await,
        [a.clone(), b.clone()]
    );
    assert_eq!(
        cx.search_names(&format!("thingName:{prefix}-* AND attributes.color:red"))
            .await,
        [a.clone(), c.clone()]
    );
    assert_eq!(
        cx.search_names(&format!("thingName:{prefix}-* attributes.color:red"))
            .await,
        [a.clone(), c.clone()],
        "AND is the default operator"
    );
    assert_eq!(
        cx.search_names(&format!("thingName:{a} OR thingName:{c}"))
            .await,
        [a.clone(), c.clone()]
    );
    assert_eq!(
        cx.search_names(&format!(
            "thingName:{prefix}-* AND NOT thingGroupNames:{group}"
        ))
        .await,
        std::slice::from_ref(&c)
    );
    assert_eq!(
        cx.search_names(&format!(
            "thingGroupNames:{group} AND attributes.color:blue"
        ))
        .await,
        std::slice::from_ref(&b)
    );
    // What a document carries.
    let docs = cx.search(&format!("thingName:{a}")).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0].attributes,
        attrs(&[("color", "red"), ("floor", "2")])
    );
    assert_eq!(docs[0].thing_group_names, std::slice::from_ref(&group));
    assert!(!docs[0].thing_id.is_empty());
    assert!(cx
        .search(&format!("thingName:{prefix}-nothing"))
        .await
        .is_empty());

    if cx.skip_on(Backend::Moto, MOTO_CASE) {
        return;
    }
    assert_eq!(
        cx.search_names(&format!(
            "thingName:{} AND attributes.color:RED",
            a.to_uppercase()
        ))
        .await,
        std::slice::from_ref(&a)
    );
    assert_eq!(
        cx.search_names(&format!("thingName:{prefix}-? -attributes.color:red"))
            .await,
        std::slice::from_ref(&b)
    );
    assert_eq!(
        cx.search_names(&format!("thingName:({a} OR {b}) attributes.floor:*"))
            .await,
        [a]
    );
}

async fn search_with_paging(cx: &Ctx) {
    let (prefix, _, names) = search_fleet(cx).await;
    if cx.skip_on(Backend::Moto, MOTO_PAGING) {
        return;
    }
    let query = format!("thingName:{prefix}-*");
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = cx
            .registry
            .search_index(&query, token.as_deref(), Some(2))
            .await
            .unwrap_or_else(|e| panic!("page {pages}: {e}"));
        pages += 1;
        assert!(page.things.len() <= 2);
        found.extend(page.things.into_iter().map(|d| d.thing_name));
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(sorted(found), names);
    for bad in [0, 101] {
        expect_kind(
            cx.registry.search_index(&query, None, Some(bad)).await,
            ErrorKind::InvalidRequest,
            &format!("maxResults {bad}"),
        );
    }
}

async fn unsupported_queries_are_refused(cx: &Ctx) {
    if cx.skip_on(Backend::Moto, MOTO_QUERY) {
        return;
    }
    for query in [
        "lamp",
        "thingTypeName:lamp",
        "shadow.reported.power:on",
        "attributes.floor:[1 TO 3]",
        "thingName:(lamp",
        "thingName:a AND",
    ] {
        let err = expect_kind(
            cx.registry.search_index(query, None, None).await,
            ErrorKind::InvalidQuery,
            query,
        );
        assert!(!err.message.is_empty());
    }
}

// ---------------------------------------------------------------------------------

/// One `#[tokio::test]` per case and backend.
macro_rules! contract {
    ($backend_mod:ident, $backend:expr, [$($case:ident),* $(,)?]) => {
        mod $backend_mod {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(cx) = super::Ctx::new($backend, stringify!($case)).await {
                        super::$case(&cx).await;
                    }
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($backend_mod:ident, $backend:expr) => {
        contract!(
            $backend_mod,
            $backend,
            [
                create_thing_is_idempotent,
                delete_thing,
                invalid_names_are_refused,
                create_thing_group_is_idempotent,
                delete_thing_group,
                missing_parent_is_refused,
                membership_is_idempotent,
                missing_things_and_groups_are_not_found,
                list_things_with_paging,
                recursive_listing,
                deleting_a_thing_leaves_its_groups,
                one_group_per_hierarchy,
                search_query_forms,
                search_with_paging,
                unsupported_queries_are_refused,
            ]
        );
    };
}

all_cases!(embedded, super::Backend::Embedded);
all_cases!(server, super::Backend::Server);
all_cases!(moto, super::Backend::Moto);

// ---------------------------------------------------------------------------------
// Simulated devices, through `dataplane serve` and the SDK adapter.

mod simulation {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use serde_json::json;
    use shadowsync::dataplane::simulate::{DeviceBehavior, SimulationSettings};
    use shadowsync::dataplane::DataPlane;

    use super::{aws_registry, support};

    #[tokio::test]
    async fn matching_things_report_like_devices() {
        let server = support::start_local_server(&[
            "--simulate-devices",
            "rsim-*",
            "--simulate-report-delay",
            "200ms",
            "--simulate-wrong-fraction",
            "0.5",
        ])
        .unwrap_or_else(|e| panic!("the simulating server did not start: {e}"));
        let settings = SimulationSettings {
            devices: "rsim-*".into(),
            report_delay_ms: 200,
            silent_fraction: 0.0,
            wrong_fraction: 0.5,
        };
        let find = |wanted| {
            (0..1000)
                .map(|n| format!("rsim-{n}"))
                .find(|t| settings.behavior(t) == Some(wanted))
                .unwrap_or_else(|| panic!("no name is {wanted:?}"))
        };
        let (faithful, wrong) = (find(DeviceBehavior::Faithful), find(DeviceBehavior::Wrong));
        let plane = aws_registry(server.url.clone()).await;
        let desired = json!({"state": {"desired": {"mode": "eco", "on": true}}}).to_string();
        let started = Instant::now();
        for thing in [&faithful, &wrong] {
            plane
                .update_thing_shadow(thing, None, Bytes::from(desired.clone()))
                .await
                .unwrap_or_else(|e| panic!("update {thing}: {e}"));
        }
        let reported = |thing: String| {
            let plane = plane.clone();
            async move {
                loop {
                    let doc = plane
                        .get_thing_shadow(&thing, None)
                        .await
                        .unwrap_or_else(|e| panic!("get {thing}: {e}"));
                    if doc.state.reported.is_some() {
                        return doc;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "{thing} never reported"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let good = reported(faithful).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(
            good.state.reported,
            Some(json!({"mode": "eco", "on": true}))
        );
        assert_eq!(good.state.delta, None);
        assert_eq!(good.version, 2);
        let bad = reported(wrong).await;
        // The first leaf in key order is `mode`.
        assert_eq!(
            bad.state.reported,
            Some(json!({"mode": "eco-wrong", "on": true}))
        );
        assert_eq!(bad.state.delta, Some(json!({"mode": "eco"})));
    }
}
