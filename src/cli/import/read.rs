//! Everything `import` asks of the data plane: the shadows of the things named on the
//! command line, one shadow of each member of a thing group, and the retained messages,
//! read page by page, and what was found. (The group's members are read with
//! [`crate::fleet::membership::resolve`], as `apply` reads them.)
//!
//! - **Reads only.** List and get calls; nothing here writes.
//! - **Every page, and no loop.** Paging follows `nextToken` until the service returns
//!   none (or an empty one); a token returned twice stops paging with an error rather
//!   than looping forever.
//! - **Stable order.** Named shadows and topics are sorted and deduplicated, and results
//!   keep the order of the input whatever the concurrency, so the output does not
//!   depend on how pages or answers arrived.
//! - **A failure is reported, not fatal.** Each failed call is one error in the [`Log`];
//!   the other reads go on, and what was read completely is still imported. A 404 means
//!   "none" (no classic shadow, a thing the registry does not know, a target deleted
//!   between the list and the get: the last one is noted).
//! - **Skipped, with a note:** the Greengrass-owned shadow, and retained messages with
//!   an empty payload (publishing one deletes the retained message).

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use serde_json::{Map, Value};

use super::Log;
use crate::dataplane::{
    DataPlane, DataPlaneError, ErrorKind, RetainedMessageData, GREENGRASS_SHADOW,
};
use crate::sync::found;

/// One existing shadow.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct FoundShadow {
    pub(super) thing: String,
    /// `None`: the classic shadow.
    pub(super) shadow: Option<String>,
    /// The cloud's desired section; `None` when it has none (or an empty one).
    pub(super) desired: Option<Map<String, Value>>,
}

/// The shadows of one thing, and what reading them logged.
pub(super) struct ThingRead {
    pub(super) shadows: Vec<FoundShadow>,
    pub(super) log: Log,
}

/// The classic shadow (404 = none) and every named shadow of one thing, classic first,
/// then by name.
pub(super) async fn read_thing(
    dataplane: &dyn DataPlane,
    thing: &str,
    page_size: Option<i32>,
) -> ThingRead {
    let mut log = Log::default();
    let mut shadows = Vec::new();
    let mut failed = false;
    match found(dataplane.get_thing_shadow(thing, None).await) {
        Ok(Some(doc)) => match desired_section(doc.state.desired) {
            Ok(desired) => shadows.push(FoundShadow {
                thing: thing.to_string(),
                shadow: None,
                desired,
            }),
            Err(what) => {
                failed = true;
                log.errors
                    .push(format!("shadow {thing} (classic): desired {what}"));
            }
        },
        Ok(None) => {}
        Err(err) => {
            failed = true;
            log.errors
                .push(format!("GetThingShadow {thing} (classic): {err}"));
        }
    }

    let names = match list_named_shadows(dataplane, thing, page_size).await {
        Ok(names) => names,
        Err(err) => {
            log.errors.push(err);
            return ThingRead { shadows, log };
        }
    };
    for name in names {
        if name == GREENGRASS_SHADOW {
            log.notes.push(format!(
                "{thing}/{name}: skipped, the shadow is owned by Greengrass"
            ));
            continue;
        }
        match found(dataplane.get_thing_shadow(thing, Some(&name)).await) {
            Ok(Some(doc)) => match desired_section(doc.state.desired) {
                Ok(desired) => shadows.push(FoundShadow {
                    thing: thing.to_string(),
                    shadow: Some(name),
                    desired,
                }),
                Err(what) => {
                    failed = true;
                    log.errors
                        .push(format!("shadow {thing}/{name}: desired {what}"));
                }
            },
            Ok(None) => log.notes.push(format!(
                "{thing}/{name}: deleted between ListNamedShadowsForThing and GetThingShadow; skipped"
            )),
            Err(err) => {
                failed = true;
                log.errors
                    .push(format!("GetThingShadow {thing}/{name}: {err}"));
            }
        }
    }
    if shadows.is_empty() && !failed {
        log.notes
            .push(format!("thing {thing} has no shadows; nothing imported"));
    }
    ThingRead { shadows, log }
}

/// The desired section of one shadow of `thing` (`None`: the classic shadow): `None`
/// when the thing has no such shadow, an empty map when the shadow has no desired state.
pub(super) async fn read_member(
    dataplane: &dyn DataPlane,
    thing: &str,
    shadow: Option<&str>,
) -> Result<Option<Map<String, Value>>, String> {
    let target = match shadow {
        Some(name) => format!("{thing}/{name}"),
        None => format!("{thing} (classic)"),
    };
    match found(dataplane.get_thing_shadow(thing, shadow).await) {
        Ok(Some(doc)) => desired_section(doc.state.desired)
            .map(|desired| Some(desired.unwrap_or_default()))
            .map_err(|what| format!("shadow {target}: desired {what}")),
        Ok(None) => Ok(None),
        Err(err) => Err(format!("GetThingShadow {target}: {err}")),
    }
}

/// Every page of ListNamedShadowsForThing, names sorted and each once. A 404 (a
/// registry that does not know the thing) means no named shadows.
async fn list_named_shadows(
    dataplane: &dyn DataPlane,
    thing: &str,
    page_size: Option<i32>,
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut tokens_seen = HashSet::new();
    loop {
        let page = match dataplane
            .list_named_shadows_for_thing(thing, token.as_deref(), page_size)
            .await
        {
            Ok(page) => page,
            Err(err) if err.kind == ErrorKind::ResourceNotFound && token.is_none() => break,
            Err(err) => return Err(format!("ListNamedShadowsForThing {thing}: {err}")),
        };
        names.extend(page.results);
        match page.next_token.filter(|t| !t.is_empty()) {
            Some(next) => {
                if !tokens_seen.insert(next.clone()) {
                    return Err(format!(
                        "ListNamedShadowsForThing {thing}: the service returned nextToken {next:?} twice; stopped paging"
                    ));
                }
                token = Some(next);
            }
            None => break,
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The desired section as an object: `None` when absent, `null` or empty.
fn desired_section(desired: Option<Value>) -> Result<Option<Map<String, Value>>, String> {
    match desired {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) if map.is_empty() => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(format!(
            "is not a JSON object ({}), which a ThingShadow cannot declare",
            kind_of(&other)
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every retained message whose topic starts with `prefix`, sorted by topic.
pub(super) async fn read_retained(
    dataplane: &dyn DataPlane,
    prefix: &str,
    page_size: Option<i32>,
    concurrency: usize,
    log: &mut Log,
) -> Vec<RetainedMessageData> {
    let mut topics = Vec::new();
    let mut token: Option<String> = None;
    let mut tokens_seen = HashSet::new();
    loop {
        let page = match dataplane
            .list_retained_messages(token.as_deref(), page_size)
            .await
        {
            Ok(page) => page,
            Err(err) => {
                log.errors.push(format!("ListRetainedMessages: {err}"));
                break;
            }
        };
        topics.extend(
            page.retained_topics
                .into_iter()
                .map(|t| t.topic)
                .filter(|t| t.starts_with(prefix)),
        );
        match page.next_token.filter(|t| !t.is_empty()) {
            Some(next) => {
                if !tokens_seen.insert(next.clone()) {
                    log.errors.push(format!(
                        "ListRetainedMessages: the service returned nextToken {next:?} twice; stopped paging"
                    ));
                    break;
                }
                token = Some(next);
            }
            None => break,
        }
    }
    topics.sort();
    topics.dedup();

    let reads: Vec<(String, Result<Option<RetainedMessageData>, DataPlaneError>)> =
        stream::iter(topics)
            .map(|topic| async move {
                let result = found(dataplane.get_retained_message(&topic).await);
                (topic, result)
            })
            .buffered(concurrency)
            .collect()
            .await;
    let mut messages = Vec::new();
    for (topic, result) in reads {
        match result {
            Ok(Some(message)) if message.payload.is_empty() => log.notes.push(format!(
                "retained message on {topic}: empty payload (that deletes a retained message); skipped"
            )),
            Ok(Some(message)) => messages.push(message),
            Ok(None) => log.notes.push(format!(
                "retained message on {topic}: deleted between ListRetainedMessages and GetRetainedMessage; skipped"
            )),
            Err(err) => log.errors.push(format!("GetRetainedMessage {topic}: {err}")),
        }
    }
    messages
}
