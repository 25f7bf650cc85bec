//! The things a `ThingShadowSet` selects: its selector resolved against the registry.
//!
//! - `things`: the list itself; no call.
//! - `thingGroup`: ListThingsInThingGroup, every page (250 names a page), with the
//!   selector's `recursive`.
//! - `query`: SearchIndex on `AWS_Things`, every page (100 things a page), the things'
//!   names.
//!
//! The result is sorted, each thing once, so it depends only on the membership, never on
//! how the pages came. Paging follows `nextToken` until the service returns none (or an
//! empty one); a token that comes back a second time stops paging with an error rather
//! than looping forever. A failed call is a [`MembershipError`] carrying the call's
//! [`DataPlaneError`], so that a caller can tell a throttled or unreachable registry
//! (worth trying again later) from a missing group or an invalid query (worth telling a
//! human). The calls go through whatever registry is given: callers pass one wrapped in
//! [`RetryingRegistry`](crate::dataplane::registry::retrying::RetryingRegistry), which
//! already retried the retryable failures.

use std::collections::HashMap;
use std::future::Future;

use crate::api::FleetSelector;
use crate::dataplane::registry::{Registry, LIST_THINGS_PAGE_MAX, SEARCH_PAGE_MAX};
use crate::dataplane::{DataPlaneError, ErrorKind};

/// Why the membership of a selector could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{selector}: {error}")]
pub struct MembershipError {
    /// The selector as a message names it: `thingGroup lamps`,
    /// `thingGroup lamps (recursive)`, `query "attributes.model:lamp"`.
    pub selector: String,
    /// The failed call's error (its kind says whether trying again may help). A
    /// `nextToken` returned twice is [`ErrorKind::Unhandled`] (an answer the service
    /// should never give), a selector with no form or several is
    /// [`ErrorKind::InvalidRequest`].
    pub error: DataPlaneError,
}

impl MembershipError {
    pub fn kind(&self) -> ErrorKind {
        self.error.kind
    }

    /// Trying again later may succeed (throttled, 5xx, unreachable).
    pub fn is_retryable(&self) -> bool {
        self.error.kind.is_retryable()
    }
}

/// The selector as messages name it (see [`MembershipError::selector`]).
pub fn describe(selector: &FleetSelector) -> String {
    match (&selector.things, &selector.thing_group, &selector.query) {
        (Some(things), None, None) => format!("things ({})", things.len()),
        (None, Some(group), None) if group.recursive => {
            format!("thingGroup {} (recursive)", group.name)
        }
        (None, Some(group), None) => format!("thingGroup {}", group.name),
        (None, None, Some(query)) => format!("query {}", serde_json::Value::from(query.as_str())),
        _ => "selector".to_string(),
    }
}

/// The things `selector` selects, sorted, each once.
pub async fn resolve(
    registry: &dyn Registry,
    selector: &FleetSelector,
) -> Result<Vec<String>, MembershipError> {
    let fail = |error: DataPlaneError| MembershipError {
        selector: describe(selector),
        error,
    };
    let mut things = match (&selector.things, &selector.thing_group, &selector.query) {
        (Some(things), None, None) => things.clone(),
        (None, Some(group), None) => {
            let max = page_size(LIST_THINGS_PAGE_MAX);
            paged("ListThingsInThingGroup", |token| async move {
                let page = registry
                    .list_things_in_thing_group(&group.name, group.recursive, token.as_deref(), max)
                    .await?;
                Ok((page.things, page.next_token))
            })
            .await
            .map_err(fail)?
        }
        (None, None, Some(query)) => {
            let max = page_size(SEARCH_PAGE_MAX);
            paged("SearchIndex", |token| async move {
                let page = registry.search_index(query, token.as_deref(), max).await?;
                let names = page.things.into_iter().map(|t| t.thing_name).collect();
                Ok((names, page.next_token))
            })
            .await
            .map_err(fail)?
        }
        _ => {
            return Err(fail(DataPlaneError::new(
                ErrorKind::InvalidRequest,
                "exactly one of things, thingGroup or query must be set",
            )))
        }
    };
    things.sort();
    things.dedup();
    Ok(things)
}

fn page_size(max: usize) -> Option<i32> {
    Some(i32::try_from(max).unwrap_or(i32::MAX))
}

/// Every page of a listing: `call(token)` answers one page's names and the next token.
async fn paged<F, Fut>(operation: &str, mut call: F) -> Result<Vec<String>, DataPlaneError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<String>, Option<String>), DataPlaneError>>,
{
    let mut names = Vec::new();
    // Each token returned, with the page it came with.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut token: Option<String> = None;
    for page in 1.. {
        let (found, next) = call(token.take()).await?;
        names.extend(found);
        let Some(next) = next.filter(|t| !t.is_empty()) else {
            break;
        };
        if let Some(first) = seen.get(&next) {
            return Err(DataPlaneError::new(
                ErrorKind::Unhandled,
                format!(
                    "{operation} returned nextToken {next:?} again with page {page} (first with page {first}); stopped paging"
                ),
            ));
        }
        seen.insert(next.clone(), page);
        token = Some(next);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::api::ThingGroupSelector;
    use crate::dataplane::embedded::EmbeddedDataPlane;
    use crate::dataplane::registry::{
        Attributes, ThingCreated, ThingDocument, ThingGroupCreated, ThingGroupSpec, ThingNamePage,
        ThingSearchPage,
    };

    /// One listing call as the registry saw it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Call {
        operation: &'static str,
        token: Option<String>,
        max_results: Option<i32>,
    }

    /// The embedded registry with its listing calls recorded, or, with `script`, pages
    /// answered from the script.
    struct Recording {
        store: EmbeddedDataPlane,
        script: Mutex<VecDeque<Result<ThingNamePage, DataPlaneError>>>,
        calls: Mutex<Vec<Call>>,
    }

    impl Recording {
        fn of(store: &EmbeddedDataPlane) -> Self {
            Self {
                store: store.clone(),
                script: Mutex::new(VecDeque::new()),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn scripted(pages: Vec<Result<ThingNamePage, DataPlaneError>>) -> Self {
            Self {
                script: Mutex::new(pages.into()),
                ..Self::of(&EmbeddedDataPlane::in_memory())
            }
        }

        fn record(&self, operation: &'static str, token: Option<&str>, max_results: Option<i32>) {
            self.calls.lock().unwrap().push(Call {
                operation,
                token: token.map(str::to_string),
                max_results,
            });
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        fn next_scripted(&self) -> Option<Result<ThingNamePage, DataPlaneError>> {
            self.script.lock().unwrap().pop_front()
        }
    }

    #[async_trait]
    impl Registry for Recording {
        async fn create_thing(
            &self,
            thing: &str,
            attributes: &Attributes,
        ) -> Result<ThingCreated, DataPlaneError> {
            self.store.create_thing(thing, attributes).await
        }
        async fn delete_thing(&self, thing: &str, v: Option<i64>) -> Result<(), DataPlaneError> {
            self.store.delete_thing(thing, v).await
        }
        async fn create_thing_group(
            &self,
            group: &str,
            spec: &ThingGroupSpec,
        ) -> Result<ThingGroupCreated, DataPlaneError> {
            self.store.create_thing_group(group, spec).await
        }
        async fn delete_thing_group(
            &self,
            group: &str,
            v: Option<i64>,
        ) -> Result<(), DataPlaneError> {
            self.store.delete_thing_group(group, v).await
        }
        async fn add_thing_to_thing_group(
            &self,
            group: &str,
            thing: &str,
        ) -> Result<(), DataPlaneError> {
            self.store.add_thing_to_thing_group(group, thing).await
        }
        async fn remove_thing_from_thing_group(
            &self,
            group: &str,
            thing: &str,
        ) -> Result<(), DataPlaneError> {
            self.store.remove_thing_from_thing_group(group, thing).await
        }
        async fn list_things_in_thing_group(
            &self,
            group: &str,
            recursive: bool,
            next_token: Option<&str>,
            max_results: Option<i32>,
        ) -> Result<ThingNamePage, DataPlaneError> {
            self.record("ListThingsInThingGroup", next_token, max_results);
            match self.next_scripted() {
                Some(answer) => answer,
                None => {
                    self.store
                        .list_things_in_thing_group(group, recursive, next_token, max_results)
                        .await
                }
            }
        }
        async fn search_index(
            &self,
            query: &str,
            next_token: Option<&str>,
            max_results: Option<i32>,
        ) -> Result<ThingSearchPage, DataPlaneError> {
            self.record("SearchIndex", next_token, max_results);
            match self.next_scripted() {
                Some(answer) => answer.map(|page| ThingSearchPage {
                    things: page
                        .things
                        .into_iter()
                        .map(|thing_name| ThingDocument {
                            thing_name,
                            ..Default::default()
                        })
                        .collect(),
                    next_token: page.next_token,
                }),
                None => {
                    self.store
                        .search_index(query, next_token, max_results)
                        .await
                }
            }
        }
    }

    fn group(name: &str, recursive: bool) -> FleetSelector {
        FleetSelector {
            thing_group: Some(ThingGroupSelector {
                name: name.to_string(),
                recursive,
            }),
            ..Default::default()
        }
    }

    fn query(text: &str) -> FleetSelector {
        FleetSelector {
            query: Some(text.to_string()),
            ..Default::default()
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn thing_in(store: &EmbeddedDataPlane, thing: &str, group: &str, model: &str) {
        store
            .create_thing(thing, &attrs(&[("model", model)]))
            .await
            .unwrap_or_else(|e| panic!("create {thing}: {e}"));
        store
            .add_thing_to_thing_group(group, thing)
            .await
            .unwrap_or_else(|e| panic!("add {thing} to {group}: {e}"));
    }

    async fn new_group(store: &EmbeddedDataPlane, name: &str, parent: Option<&str>) {
        let spec = ThingGroupSpec {
            parent_group_name: parent.map(str::to_string),
            ..Default::default()
        };
        store
            .create_thing_group(name, &spec)
            .await
            .unwrap_or_else(|e| panic!("create group {name}: {e}"));
    }

    /// `home` > `kitchen` > `kitchen-lights`, a thing or two in each, written out of
    /// order; and a group of `big` things, more than one page of either listing.
    async fn fleet(big: usize) -> EmbeddedDataPlane {
        let store = EmbeddedDataPlane::in_memory();
        new_group(&store, "home", None).await;
        new_group(&store, "kitchen", Some("home")).await;
        new_group(&store, "kitchen-lights", Some("kitchen")).await;
        thing_in(&store, "lamp-l1", "kitchen-lights", "lamp-v2").await;
        thing_in(&store, "fridge", "kitchen", "fridge-x").await;
        thing_in(&store, "lamp-k1", "kitchen", "lamp-v1").await;
        thing_in(&store, "hub", "home", "hub-1").await;
        new_group(&store, "big", None).await;
        for i in (0..big).rev() {
            thing_in(&store, &format!("sensor-{i:04}"), "big", "sensor-s").await;
        }
        store
    }

    #[tokio::test]
    async fn a_list_is_sorted_and_deduplicated_without_a_call() {
        let registry = Recording::of(&EmbeddedDataPlane::in_memory());
        let selector = FleetSelector {
            things: Some(vec!["b".into(), "a".into(), "c".into(), "a".into()]),
            ..Default::default()
        };
        let things = resolve(&registry, &selector).await.expect("a list");
        assert_eq!(things, ["a", "b", "c"]);
        assert!(registry.calls().is_empty());
    }

    #[tokio::test]
    async fn a_group_gives_its_own_things_or_with_recursive_its_descendants_too() {
        let store = fleet(0).await;
        let registry = Recording::of(&store);
        let cases: [(&str, bool, &[&str]); 5] = [
            ("home", false, &["hub"]),
            ("home", true, &["fridge", "hub", "lamp-k1", "lamp-l1"]),
            ("kitchen", false, &["fridge", "lamp-k1"]),
            ("kitchen", true, &["fridge", "lamp-k1", "lamp-l1"]),
            ("kitchen-lights", true, &["lamp-l1"]),
        ];
        for (name, recursive, expected) in cases {
            let things = resolve(&registry, &group(name, recursive))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(things, expected, "{name} recursive={recursive}");
        }
        // One page each, of the largest size.
        let calls = registry.calls();
        assert_eq!(calls.len(), cases.len());
        assert!(calls
            .iter()
            .all(|c| c.max_results == Some(250) && c.token.is_none()));
    }

    #[tokio::test]
    async fn every_page_of_a_large_group_and_a_large_search_is_read() {
        let store = fleet(260).await;
        let expected: Vec<String> = (0..260).map(|i| format!("sensor-{i:04}")).collect();

        let registry = Recording::of(&store);
        let things = resolve(&registry, &group("big", false))
            .await
            .expect("the group");
        assert_eq!(things, expected);
        let calls = registry.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].token, None);
        assert!(calls[1].token.is_some());
        assert!(calls
            .iter()
            .all(|c| c.operation == "ListThingsInThingGroup" && c.max_results == Some(250)));

        let registry = Recording::of(&store);
        let things = resolve(&registry, &query("attributes.model:sensor-s"))
            .await
            .expect("the query");
        assert_eq!(things, expected);
        let calls = registry.calls();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(calls
            .iter()
            .all(|c| c.operation == "SearchIndex" && c.max_results == Some(100)));
    }

    #[tokio::test]
    async fn a_query_gives_the_names_of_the_matching_things() {
        let store = fleet(3).await;
        let registry = Recording::of(&store);
        let things = resolve(&registry, &query("attributes.model:lamp*"))
            .await
            .expect("the query");
        assert_eq!(things, ["lamp-k1", "lamp-l1"]);
        let things = resolve(&registry, &query("thingGroupNames:kitchen"))
            .await
            .expect("by group name");
        assert_eq!(things, ["fridge", "lamp-k1"]);
    }

    #[tokio::test]
    async fn a_missing_group_is_an_error_naming_the_selector_with_its_kind() {
        let store = fleet(0).await;
        let registry = Recording::of(&store);
        let err = resolve(&registry, &group("lamps", false))
            .await
            .expect_err("no such group");
        assert_eq!(err.kind(), ErrorKind::ResourceNotFound);
        assert!(!err.is_retryable());
        assert_eq!(err.selector, "thingGroup lamps");
        let text = err.to_string();
        assert!(
            text.starts_with("thingGroup lamps: ResourceNotFoundException: "),
            "{text}"
        );
        let err = resolve(&registry, &group("lamps", true))
            .await
            .expect_err("no such group");
        assert!(
            err.to_string()
                .starts_with("thingGroup lamps (recursive): ResourceNotFoundException"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_invalid_query_is_an_error_naming_the_query() {
        let registry = Recording::of(&fleet(0).await);
        let err = resolve(&registry, &query("model:(lamp"))
            .await
            .expect_err("not a query this index runs");
        assert_eq!(err.kind(), ErrorKind::InvalidQuery);
        assert!(!err.is_retryable());
        assert!(
            err.to_string()
                .starts_with("query \"model:(lamp\": InvalidQueryException: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_retryable_failure_keeps_its_kind() {
        let registry = Recording::scripted(vec![
            Ok(ThingNamePage {
                things: vec!["a".into()],
                next_token: Some("t1".into()),
            }),
            Err(DataPlaneError::new(ErrorKind::Throttling, "Rate exceeded")),
        ]);
        let err = resolve(&registry, &group("lamps", false))
            .await
            .expect_err("throttled");
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "thingGroup lamps: ThrottlingException: Rate exceeded"
        );
    }

    #[tokio::test]
    async fn a_token_returned_twice_stops_paging_with_an_error() {
        let page = |thing: &str, token: &str| {
            Ok(ThingNamePage {
                things: vec![thing.to_string()],
                next_token: Some(token.to_string()),
            })
        };
        let registry = Recording::scripted(vec![
            page("a", "t1"),
            page("b", "t2"),
            page("c", "t1"),
            page("d", "never read"),
        ]);
        let err = resolve(&registry, &group("lamps", true))
            .await
            .expect_err("a loop");
        assert_eq!(err.kind(), ErrorKind::Unhandled);
        assert_eq!(
            err.to_string(),
            "thingGroup lamps (recursive): UnhandledError: ListThingsInThingGroup returned \
             nextToken \"t1\" again with page 3 (first with page 1); stopped paging"
        );
        assert_eq!(registry.calls().len(), 3);

        // The same for a search; an empty token ends paging like none.
        let registry = Recording::scripted(vec![page("b", "t"), page("a", "t")]);
        let err = resolve(&registry, &query("thingName:*"))
            .await
            .expect_err("a loop");
        assert!(
            err.to_string().contains("SearchIndex returned nextToken"),
            "{err}"
        );
        let registry = Recording::scripted(vec![page("b", "t"), page("a", "")]);
        let things = resolve(&registry, &query("thingName:*")).await.unwrap();
        assert_eq!(things, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_selector_without_exactly_one_form_is_refused_without_a_call() {
        let registry = Recording::of(&EmbeddedDataPlane::in_memory());
        let both = FleetSelector {
            things: Some(vec!["a".into()]),
            ..query("thingName:a")
        };
        for selector in [FleetSelector::default(), both] {
            let err = resolve(&registry, &selector).await.expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::InvalidRequest);
            assert!(err.to_string().contains("exactly one of"), "{err}");
        }
        assert!(registry.calls().is_empty());
    }
}
