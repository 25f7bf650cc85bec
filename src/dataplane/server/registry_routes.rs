//! The registry operations on AWS IoT's control-plane REST paths (the `iot` API,
//! restJson1, as botocore's `iot` service model and the Rust SDK send them), and the
//! `/_shadowsync/simulation` admin endpoint.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::conn::Conn;
use super::faults::Operation;
use super::routes::{
    body_bytes, path_value, query_params, to_json, App, BodyArg, PathArg, QueryArg,
};
use super::wire::{self, error_response, invalid, json_ok};
use crate::dataplane::registry::{
    self, Attributes, ThingGroupSpec, LIST_THINGS_PAGE_MAX, LOCAL_ACCOUNT, LOCAL_REGION,
    SEARCH_PAGE_MAX, THINGS_INDEX,
};
use crate::dataplane::simulate::SimulationSettings;
use crate::dataplane::{DataPlaneError, ErrorKind};

type AppState = State<Arc<App>>;

/// The registry routes and the simulation endpoint, added to the server's router.
pub(crate) fn routes(router: Router<Arc<App>>) -> Router<Arc<App>> {
    router
        .route(
            "/things/{thingName}",
            post(create_thing)
                .delete(delete_thing)
                .get(not_served)
                .patch(not_served),
        )
        .route(
            "/thing-groups/{thingGroupName}",
            post(create_thing_group)
                .delete(delete_thing_group)
                .get(not_served)
                .patch(not_served),
        )
        .route(
            "/thing-groups/addThingToThingGroup",
            put(add_thing_to_thing_group),
        )
        .route(
            "/thing-groups/removeThingFromThingGroup",
            put(remove_thing_from_thing_group),
        )
        .route(
            "/thing-groups/{thingGroupName}/things",
            get(list_things_in_thing_group),
        )
        .route("/indices/search", post(search_index))
        .route(
            "/dynamic-thing-groups/{thingGroupName}",
            post(create_dynamic_thing_group),
        )
        .route(
            "/_shadowsync/simulation",
            get(get_simulation)
                .put(put_simulation)
                .patch(patch_simulation),
        )
}

/// DescribeThing, UpdateThing, DescribeThingGroup and UpdateThingGroup share paths with
/// operations this registry serves: answered as an unknown operation (like any path the
/// server does not serve), not as a method the path does not allow.
async fn not_served(State(app): AppState, method: Method, uri: Uri) -> Response {
    app.stats.record_unrouted();
    wire::typed_error(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        &format!(
            "No operation at {method} {}: this registry serves CreateThing, DeleteThing, \
             CreateThingGroup, DeleteThingGroup, AddThingToThingGroup, \
             RemoveThingFromThingGroup, ListThingsInThingGroup and SearchIndex",
            uri.path()
        ),
    )
}

/// A JSON request body; an empty body is `{}`.
fn json_body<T: for<'de> Deserialize<'de>>(body: BodyArg) -> Result<T, DataPlaneError> {
    let bytes = body_bytes(body)?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|err| invalid(format!("invalid request body: {err}")))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AttributePayload {
    #[serde(default)]
    attributes: Option<Attributes>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreateThingBody {
    thing_type_name: Option<String>,
    attribute_payload: Option<AttributePayload>,
    billing_group_name: Option<String>,
}

async fn create_thing(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    body: BodyArg,
) -> Response {
    app.call(Operation::CreateThing, &conn, None, None, async {
        let thing = path_value(path, "thingName")?;
        let body: CreateThingBody = json_body(body)?;
        // This registry has no thing types and no billing groups: a request naming one
        // names something that does not exist.
        if let Some(thing_type) = body.thing_type_name {
            return Err(DataPlaneError::new(
                ErrorKind::ResourceNotFound,
                format!("Thing type {thing_type} does not exist (this registry has no thing types)"),
            ));
        }
        if let Some(billing_group) = body.billing_group_name {
            return Err(DataPlaneError::new(
                ErrorKind::ResourceNotFound,
                format!(
                    "Billing group {billing_group} does not exist (this registry has no billing groups)"
                ),
            ));
        }
        let attributes = body
            .attribute_payload
            .and_then(|p| p.attributes)
            .unwrap_or_default();
        let created = app.registry.create_thing(&thing, &attributes).await?;
        to_json(&created)
    })
    .await
}

fn expected_version(query: QueryArg) -> Result<Option<i64>, DataPlaneError> {
    query_params(query)?.int_in("expectedVersion", i64::MIN..=i64::MAX)
}

async fn delete_thing(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    query: QueryArg,
) -> Response {
    app.call(Operation::DeleteThing, &conn, None, None, async {
        let thing = path_value(path, "thingName")?;
        let expected = expected_version(query)?;
        app.registry.delete_thing(&thing, expected).await?;
        Ok(json_ok(&json!({})))
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ThingGroupProperties {
    thing_group_description: Option<String>,
    attribute_payload: Option<AttributePayload>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreateThingGroupBody {
    parent_group_name: Option<String>,
    thing_group_properties: Option<ThingGroupProperties>,
    /// Accepted and not kept: tags play no part in what this registry answers.
    #[allow(dead_code)]
    tags: Option<Value>,
}

async fn create_thing_group(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    body: BodyArg,
) -> Response {
    app.call(Operation::CreateThingGroup, &conn, None, None, async {
        let group = path_value(path, "thingGroupName")?;
        let body: CreateThingGroupBody = json_body(body)?;
        let properties = body.thing_group_properties.unwrap_or_default();
        let spec = ThingGroupSpec {
            parent_group_name: body.parent_group_name,
            description: properties.thing_group_description,
            attributes: properties
                .attribute_payload
                .and_then(|p| p.attributes)
                .unwrap_or_default(),
        };
        let created = app.registry.create_thing_group(&group, &spec).await?;
        to_json(&created)
    })
    .await
}

async fn delete_thing_group(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    query: QueryArg,
) -> Response {
    app.call(Operation::DeleteThingGroup, &conn, None, None, async {
        let group = path_value(path, "thingGroupName")?;
        let expected = expected_version(query)?;
        app.registry.delete_thing_group(&group, expected).await?;
        Ok(json_ok(&json!({})))
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MembershipBody {
    thing_group_name: Option<String>,
    thing_group_arn: Option<String>,
    thing_name: Option<String>,
    thing_arn: Option<String>,
    /// Only matters with dynamic groups, which this registry does not have.
    #[allow(dead_code)]
    override_dynamic_groups: Option<bool>,
}

/// The name a request identifies by name, ARN or both (`kind` is `thing` or
/// `thinggroup`, as in the ARN).
fn identify(
    name: Option<String>,
    arn: Option<String>,
    kind: &str,
    field: &str,
) -> Result<String, DataPlaneError> {
    let arn_prefix = format!("arn:aws:iot:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{kind}/");
    match (name, arn) {
        (Some(name), None) => Ok(name),
        (Some(name), Some(arn)) => {
            if arn.strip_prefix(&arn_prefix) == Some(name.as_str()) {
                Ok(name)
            } else {
                Err(invalid(format!(
                    "{field}Arn {arn} does not match the specified {field}Name {name}"
                )))
            }
        }
        (None, Some(arn)) => match arn.strip_prefix(&arn_prefix) {
            Some(name) if !name.is_empty() => Ok(name.to_string()),
            _ => Err(DataPlaneError::new(
                ErrorKind::ResourceNotFound,
                format!("{arn} is not the ARN of a {kind} of this registry ({arn_prefix}NAME)"),
            )),
        },
        (None, None) => Err(invalid(format!(
            "Both {field}Arn and {field}Name are empty. Need to specify at least one of them"
        ))),
    }
}

fn membership(body: BodyArg) -> Result<(String, String), DataPlaneError> {
    let body: MembershipBody = json_body(body)?;
    let group = identify(
        body.thing_group_name,
        body.thing_group_arn,
        "thinggroup",
        "thingGroup",
    )?;
    let thing = identify(body.thing_name, body.thing_arn, "thing", "thing")?;
    Ok((group, thing))
}

async fn add_thing_to_thing_group(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    body: BodyArg,
) -> Response {
    app.call(Operation::AddThingToThingGroup, &conn, None, None, async {
        let (group, thing) = membership(body)?;
        app.registry
            .add_thing_to_thing_group(&group, &thing)
            .await?;
        Ok(json_ok(&json!({})))
    })
    .await
}

async fn remove_thing_from_thing_group(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    body: BodyArg,
) -> Response {
    app.call(
        Operation::RemoveThingFromThingGroup,
        &conn,
        None,
        None,
        async {
            let (group, thing) = membership(body)?;
            app.registry
                .remove_thing_from_thing_group(&group, &thing)
                .await?;
            Ok(json_ok(&json!({})))
        },
    )
    .await
}

async fn list_things_in_thing_group(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
    query: QueryArg,
) -> Response {
    app.call(
        Operation::ListThingsInThingGroup,
        &conn,
        None,
        None,
        async {
            let group = path_value(path, "thingGroupName")?;
            let params = query_params(query)?;
            let recursive = params.boolean("recursive")?.unwrap_or(false);
            let max_results = params
                .int_in("maxResults", 1..=LIST_THINGS_PAGE_MAX as i64)?
                .map(|n| n as i32);
            let page = app
                .registry
                .list_things_in_thing_group(
                    &group,
                    recursive,
                    params.string("nextToken").filter(|t| !t.is_empty()),
                    max_results,
                )
                .await?;
            to_json(&page)
        },
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SearchIndexBody {
    index_name: Option<String>,
    query_string: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    /// AWS's only query version is 2017-09-30; any is accepted.
    #[allow(dead_code)]
    query_version: Option<String>,
}

async fn search_index(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    body: BodyArg,
) -> Response {
    app.call(Operation::SearchIndex, &conn, None, None, async {
        let body: SearchIndexBody = json_body(body)?;
        match body.index_name.as_deref() {
            None | Some(THINGS_INDEX) => {}
            Some("AWS_ThingGroups") => {
                return Err(invalid(
                    "The AWS_ThingGroups index is not served here; only AWS_Things",
                ))
            }
            Some(other) => {
                return Err(DataPlaneError::new(
                    ErrorKind::ResourceNotFound,
                    format!("Index {other} does not exist (this registry serves AWS_Things)"),
                ))
            }
        }
        let query = body
            .query_string
            .ok_or_else(|| invalid("queryString is required"))?;
        let max_results = match body.max_results {
            None => None,
            Some(n) if (1..=SEARCH_PAGE_MAX as i64).contains(&n) => Some(n as i32),
            Some(n) => {
                return Err(invalid(format!(
                    "maxResults must be between 1 and {SEARCH_PAGE_MAX}, got {n}"
                )))
            }
        };
        let page = app
            .registry
            .search_index(
                &query,
                body.next_token.as_deref().filter(|t| !t.is_empty()),
                max_results,
            )
            .await?;
        let mut answer = json!({
            "things": page.things,
            "thingGroups": [],
        });
        if let Some(token) = page.next_token {
            answer["nextToken"] = Value::String(token);
        }
        Ok(json_ok(&answer))
    })
    .await
}

async fn create_dynamic_thing_group(
    State(app): AppState,
    ConnectInfo(conn): ConnectInfo<Conn>,
    path: PathArg,
) -> Response {
    app.call(
        Operation::CreateDynamicThingGroup,
        &conn,
        None,
        None,
        async {
            let group = path_value(path, "thingGroupName")?;
            registry::name("thingGroupName", &group)?;
            Err::<Response, _>(invalid(format!(
                "Dynamic thing groups are not supported by this registry (it keeps no continuous \
             index to maintain their membership); create a static group ({group}) with \
             CreateThingGroup, or run the query with SearchIndex"
            )))
        },
    )
    .await
}

async fn get_simulation(State(app): AppState) -> Response {
    wire::json_of(&app.simulator.status())
}

fn parse_settings(body: BodyArg) -> Result<serde_json::Map<String, Value>, DataPlaneError> {
    let bytes = body_bytes(body)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("simulation settings must be a JSON object")),
        Err(err) => Err(invalid(format!("simulation settings are not JSON: {err}"))),
    }
}

fn apply_settings(app: &App, value: serde_json::Map<String, Value>) -> Response {
    let result = serde_json::from_value::<SimulationSettings>(Value::Object(value))
        .map_err(|err| err.to_string())
        .and_then(|settings| app.simulator.set_settings(settings));
    match result {
        Ok(()) => wire::json_of(&app.simulator.status()),
        Err(message) => error_response(&invalid(format!("invalid simulation settings: {message}"))),
    }
}

/// Replaces the settings (fields left out take their default: no simulation).
async fn put_simulation(State(app): AppState, body: BodyArg) -> Response {
    match parse_settings(body) {
        Ok(value) => apply_settings(&app, value),
        Err(err) => error_response(&err),
    }
}

/// Changes only the fields given.
async fn patch_simulation(State(app): AppState, body: BodyArg) -> Response {
    let patch = match parse_settings(body) {
        Ok(patch) => patch,
        Err(err) => return error_response(&err),
    };
    let mut merged = match serde_json::to_value(app.simulator.settings()) {
        Ok(Value::Object(current)) => current,
        _ => serde_json::Map::new(),
    };
    merged.extend(patch);
    apply_settings(&app, merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn things_and_groups_are_identified_by_name_or_arn() {
        let arn = registry::thing_arn("lamp");
        assert_eq!(
            identify(Some("lamp".into()), None, "thing", "thing").unwrap(),
            "lamp"
        );
        assert_eq!(
            identify(None, Some(arn.clone()), "thing", "thing").unwrap(),
            "lamp"
        );
        assert_eq!(
            identify(Some("lamp".into()), Some(arn), "thing", "thing").unwrap(),
            "lamp"
        );
        let err = identify(
            Some("lamp".into()),
            Some(registry::thing_arn("other")),
            "thing",
            "thing",
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        let err = identify(None, None, "thinggroup", "thingGroup").unwrap_err();
        assert!(err.message.contains("thingGroupName"), "{}", err.message);
        let err = identify(
            None,
            Some("arn:aws:iot:eu-west-1:111122223333:thinggroup/g".into()),
            "thinggroup",
            "thingGroup",
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::ResourceNotFound);
        assert_eq!(
            identify(
                None,
                Some(registry::thing_group_arn("g")),
                "thinggroup",
                "thingGroup"
            )
            .unwrap(),
            "g"
        );
    }
}
