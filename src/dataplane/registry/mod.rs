//! The part of the AWS IoT registry that fleet rollouts need: things, static thing groups
//! (with parents), membership, listing a group's things, and fleet search.
//!
//! [`Registry`] sits beside [`DataPlane`](super::DataPlane): the registry is AWS IoT's
//! control plane (the `iot` API on the regional endpoint), the shadows are its data plane.
//! Three implementations are held to one contract (`tests/registry_contract.rs`):
//! - [`EmbeddedDataPlane`](super::embedded::EmbeddedDataPlane), in the same redb file as
//!   the shadows, a committed transaction per mutating call;
//! - `shadowsync dataplane serve`, on AWS's REST paths (see [`super::server`]);
//! - [`AwsDataPlane`](super::aws::AwsDataPlane), through aws-sdk-iot.
//!
//! What is modelled, as AWS documents it (AWS IoT API reference, "Static thing groups"):
//! - CreateThing succeeds again for the same name and configuration and answers the same
//!   ids; the same name with other attributes is `ResourceAlreadyExistsException`.
//!   DeleteThing of a thing that does not exist succeeds; deleting a thing removes it from
//!   its groups. Things and shadows are independent: neither deletes the other.
//! - CreateThingGroup likewise; a group's parent is fixed at creation and must exist; a
//!   hierarchy is at most [`MAX_GROUP_DEPTH`] deep. DeleteThingGroup of a missing group
//!   succeeds; a group with child groups cannot be deleted.
//! - A thing is in at most [`MAX_GROUPS_PER_THING`] groups, and in at most one group of a
//!   hierarchy (groups sharing a root).
//! - Names are 1 to 128 characters of `[a-zA-Z0-9:_-]`.
//!
//! Not modelled: thing types and billing groups (this registry has none, so a request
//! naming one gets `ResourceNotFoundException`), dynamic thing groups (refused with
//! `InvalidRequestException`: the server has no continuous index to keep their membership
//! honest), UpdateThing (a thing's version is always 1), tags (accepted, not kept).
//!
//! SearchIndex runs the query language subset described in [`query`] against the
//! `AWS_Things` index, with no indexing delay.
//!
//! Callers get a registry wrapped in [`retrying::RetryingRegistry`] (an account-wide rate
//! limit and retries of throttling, 5xx and transport failures), from
//! [`DataPlaneSettings::connect_with_registry`](super::connect::DataPlaneSettings::connect_with_registry).

pub mod query;
pub mod retrying;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{DataPlaneError, ErrorKind};

/// Attribute name to value.
pub type Attributes = BTreeMap<String, String>;

/// The index SearchIndex reads (the only one here).
pub const THINGS_INDEX: &str = "AWS_Things";
/// ListThingsInThingGroup `maxResults` when none is given (AWS documents only the range).
pub const LIST_THINGS_PAGE_DEFAULT: usize = 25;
/// Largest ListThingsInThingGroup `maxResults`.
pub const LIST_THINGS_PAGE_MAX: usize = 250;
/// SearchIndex `maxResults` when none is given.
pub const SEARCH_PAGE_DEFAULT: usize = 100;
/// Largest SearchIndex `maxResults` ("cannot exceed 100").
pub const SEARCH_PAGE_MAX: usize = 100;
/// Groups a thing may belong to.
pub const MAX_GROUPS_PER_THING: usize = 10;
/// Levels of a thing group hierarchy (a root alone is 1).
pub const MAX_GROUP_DEPTH: usize = 7;
/// Direct child groups of one group.
pub const MAX_CHILD_GROUPS: usize = 100;
/// Attributes of a thing without a thing type.
pub const MAX_THING_ATTRIBUTES: usize = 3;
/// Attributes of a thing group.
pub const MAX_GROUP_ATTRIBUTES: usize = 50;
/// Longest thing group description.
pub const MAX_DESCRIPTION: usize = 2028;

/// Region and account in the ARNs the local registry makes up.
pub const LOCAL_REGION: &str = "us-east-1";
pub const LOCAL_ACCOUNT: &str = "000000000000";

/// The registry operations fleet rollouts need.
#[async_trait]
pub trait Registry: Send + Sync {
    /// CreateThing with these attributes (no thing type, no billing group).
    async fn create_thing(
        &self,
        thing: &str,
        attributes: &Attributes,
    ) -> Result<ThingCreated, DataPlaneError>;

    /// DeleteThing; `Ok` also when the thing does not exist.
    async fn delete_thing(
        &self,
        thing: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError>;

    /// CreateThingGroup (a static group).
    async fn create_thing_group(
        &self,
        group: &str,
        spec: &ThingGroupSpec,
    ) -> Result<ThingGroupCreated, DataPlaneError>;

    /// DeleteThingGroup; `Ok` also when the group does not exist.
    async fn delete_thing_group(
        &self,
        group: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError>;

    /// AddThingToThingGroup; `Ok` when the thing is already in the group.
    async fn add_thing_to_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError>;

    /// RemoveThingFromThingGroup; `Ok` when the thing is not in the group.
    async fn remove_thing_from_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError>;

    /// ListThingsInThingGroup: thing names, sorted; with `recursive`, the things of every
    /// descendant group too (each once). `max_results` 1..=250.
    async fn list_things_in_thing_group(
        &self,
        group: &str,
        recursive: bool,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ThingNamePage, DataPlaneError>;

    /// SearchIndex on `AWS_Things`; `max_results` 1..=100.
    async fn search_index(
        &self,
        query: &str,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ThingSearchPage, DataPlaneError>;
}

/// CreateThing response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingCreated {
    pub thing_name: String,
    pub thing_arn: String,
    pub thing_id: String,
}

/// What CreateThingGroup sets besides the name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingGroupSpec {
    /// Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub attributes: Attributes,
}

/// CreateThingGroup response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingGroupCreated {
    pub thing_group_name: String,
    pub thing_group_arn: String,
    pub thing_group_id: String,
}

/// ListThingsInThingGroup response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingNamePage {
    pub things: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One thing as SearchIndex returns it (the registry fields; no shadow or connectivity,
/// as with thing indexing mode `REGISTRY`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingDocument {
    pub thing_name: String,
    #[serde(default)]
    pub thing_id: String,
    #[serde(default)]
    pub attributes: Attributes,
    /// The groups the thing was added to (not their ancestors), sorted.
    #[serde(default)]
    pub thing_group_names: Vec<String>,
}

/// SearchIndex response (things only: the `AWS_ThingGroups` index is not served).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingSearchPage {
    pub things: Vec<ThingDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `arn:aws:iot:REGION:ACCOUNT:thing/NAME` in the local registry.
pub fn thing_arn(thing: &str) -> String {
    format!("arn:aws:iot:{LOCAL_REGION}:{LOCAL_ACCOUNT}:thing/{thing}")
}

/// `arn:aws:iot:REGION:ACCOUNT:thinggroup/NAME` in the local registry.
pub fn thing_group_arn(group: &str) -> String {
    format!("arn:aws:iot:{LOCAL_REGION}:{LOCAL_ACCOUNT}:thinggroup/{group}")
}

fn invalid(message: impl Into<String>) -> DataPlaneError {
    DataPlaneError::new(ErrorKind::InvalidRequest, message)
}

/// A thing or thing group name (`field` names it in the error): 1..=128 of `[a-zA-Z0-9:_-]`.
pub fn name(field: &str, value: &str) -> Result<(), DataPlaneError> {
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "Invalid {field} '{value}': must be 1 to 128 characters of [a-zA-Z0-9:_-]"
        )))
    }
}

/// Attributes: names 1..=128 of `[a-zA-Z0-9_.,@/:#-]`, values 0..=800 of
/// `[a-zA-Z0-9_.,@/:#=\[\]-]`, at most `max` of them.
pub fn attributes(attributes: &Attributes, max: usize) -> Result<(), DataPlaneError> {
    if attributes.len() > max {
        return Err(invalid(format!(
            "Too many attributes: {} (at most {max})",
            attributes.len()
        )));
    }
    for (key, value) in attributes {
        let key_ok = (1..=128).contains(&key.len())
            && key.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'_' | b'.' | b',' | b'@' | b'/' | b':' | b'#' | b'-')
            });
        if !key_ok {
            return Err(invalid(format!(
                "Invalid attribute name '{key}': must be 1 to 128 characters of [a-zA-Z0-9_.,@/:#-]"
            )));
        }
        let value_ok = value.len() <= 800
            && value.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'_' | b'.' | b',' | b'@' | b'/' | b':' | b'#' | b'=' | b'[' | b']' | b'-'
                    )
            });
        if !value_ok {
            return Err(invalid(format!(
                "Invalid value of attribute '{key}': must be at most 800 characters of [a-zA-Z0-9_.,@/:#=[]-]"
            )));
        }
    }
    Ok(())
}

/// Everything CreateThingGroup checks before anything is stored.
pub fn thing_group_spec(group: &str, spec: &ThingGroupSpec) -> Result<(), DataPlaneError> {
    name("thingGroupName", group)?;
    if let Some(parent) = &spec.parent_group_name {
        name("parentGroupName", parent)?;
        if parent == group {
            return Err(invalid(format!(
                "Thing group '{group}' cannot be its own parent"
            )));
        }
    }
    if let Some(description) = &spec.description {
        let ok = description.chars().count() <= MAX_DESCRIPTION
            && description
                .chars()
                .all(|c| c == ' ' || !c.is_control() && !c.is_whitespace());
        if !ok {
            return Err(invalid(format!(
                "Invalid thingGroupDescription: at most {MAX_DESCRIPTION} visible characters or spaces"
            )));
        }
    }
    attributes(&spec.attributes, MAX_GROUP_ATTRIBUTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_aws_pattern() {
        assert!(name("thingName", "lamp:1_a-B").is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(129)] {
            let err = name("thingName", bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidRequest);
            assert!(err.message.contains("thingName"), "{}", err.message);
        }
        assert!(name("thingGroupName", &"x".repeat(128)).is_ok());
    }

    #[test]
    fn attributes_follow_the_aws_patterns_and_count() {
        let ok: Attributes = [("site/floor", "b-2"), ("rev", "[1]=x"), ("e", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(attributes(&ok, 3).is_ok());
        assert!(attributes(&ok, 2).is_err());
        for (k, v) in [("", "x"), ("a b", "x"), ("a", "x y"), ("a", "é")] {
            let one = Attributes::from([(k.to_string(), v.to_string())]);
            assert_eq!(
                attributes(&one, 3).unwrap_err().kind,
                ErrorKind::InvalidRequest,
                "{k}={v}"
            );
        }
    }

    #[test]
    fn group_specs_are_checked() {
        let spec = ThingGroupSpec {
            parent_group_name: Some("g".into()),
            ..Default::default()
        };
        assert!(thing_group_spec("g", &spec).is_err());
        assert!(thing_group_spec("h", &spec).is_ok());
        let spec = ThingGroupSpec {
            description: Some("line\nbreak".into()),
            ..Default::default()
        };
        assert!(thing_group_spec("h", &spec).is_err());
        let spec = ThingGroupSpec {
            description: Some("A lamp group, floor 2".into()),
            ..Default::default()
        };
        assert!(thing_group_spec("h", &spec).is_ok());
    }
}
