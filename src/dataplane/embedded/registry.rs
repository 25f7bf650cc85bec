//! The registry in the embedded store: things, static thing groups and membership in the
//! same redb database as the shadows, with the same rule: every mutating call is one
//! write transaction committed with immediate durability before it answers.
//!
//! Keys: things and groups by name; membership twice (`group/thing` and `thing/group`)
//! and children as `parent/child`. Names cannot contain `/`, so each group's things,
//! each thing's groups and each group's children are one contiguous key range
//! (`name/` up to `name0`), sorted by the second name.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, TableError, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{corrupt, db_error, Store};
use super::{validate, EmbeddedDataPlane};
use crate::dataplane::registry::query::{Query, ThingView};
use crate::dataplane::registry::{
    self, Attributes, Registry, ThingCreated, ThingDocument, ThingGroupCreated, ThingGroupSpec,
    ThingNamePage, ThingSearchPage, LIST_THINGS_PAGE_DEFAULT, LIST_THINGS_PAGE_MAX,
    MAX_CHILD_GROUPS, MAX_GROUPS_PER_THING, MAX_GROUP_DEPTH, MAX_THING_ATTRIBUTES,
    SEARCH_PAGE_DEFAULT, SEARCH_PAGE_MAX,
};
use crate::dataplane::{DataPlaneError, ErrorKind};

/// Things (JSON of [`StoredThing`]) by name.
const THINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_things");
/// Thing groups (JSON of [`StoredGroup`]) by name.
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_groups");
/// `group/thing`: the things of a group.
const GROUP_THINGS: TableDefinition<&str, u8> = TableDefinition::new("registry_group_things");
/// `thing/group`: the groups of a thing.
const THING_GROUPS: TableDefinition<&str, u8> = TableDefinition::new("registry_thing_groups");
/// `parent/child`: the direct children of a group.
const CHILDREN: TableDefinition<&str, u8> = TableDefinition::new("registry_group_children");

/// Creates the registry's tables (so that read transactions find them).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), TableError> {
    txn.open_table(THINGS)?;
    txn.open_table(GROUPS)?;
    txn.open_table(GROUP_THINGS)?;
    txn.open_table(THING_GROUPS)?;
    txn.open_table(CHILDREN)?;
    Ok(())
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct StoredThing {
    thing_name: String,
    thing_id: String,
    #[serde(default)]
    attributes: Attributes,
    version: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct StoredGroup {
    thing_group_name: String,
    thing_group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default)]
    attributes: Attributes,
    version: i64,
    /// Epoch milliseconds.
    creation_date: i64,
}

impl StoredThing {
    fn created(&self) -> ThingCreated {
        ThingCreated {
            thing_name: self.thing_name.clone(),
            thing_arn: registry::thing_arn(&self.thing_name),
            thing_id: self.thing_id.clone(),
        }
    }
}

impl StoredGroup {
    fn created(&self) -> ThingGroupCreated {
        ThingGroupCreated {
            thing_group_name: self.thing_group_name.clone(),
            thing_group_arn: registry::thing_group_arn(&self.thing_group_name),
            thing_group_id: self.thing_group_id.clone(),
        }
    }

    fn spec(&self) -> ThingGroupSpec {
        ThingGroupSpec {
            parent_group_name: self.parent_group_name.clone(),
            description: self.description.clone(),
            attributes: self.attributes.clone(),
        }
    }
}

/// A random (version 4) UUID, the form AWS gives thing and group ids.
fn new_id() -> String {
    let mut n: u128 = rand::random();
    n &= !(0xf << 76);
    n |= 0x4 << 76;
    n &= !(0x3 << 62);
    n |= 0x2 << 62;
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn pair(first: &str, second: &str) -> String {
    format!("{first}/{second}")
}

fn thing_not_found(thing: &str) -> DataPlaneError {
    DataPlaneError::new(
        ErrorKind::ResourceNotFound,
        format!("Thing {thing} cannot be found."),
    )
}

fn group_not_found(group: &str) -> DataPlaneError {
    DataPlaneError::new(
        ErrorKind::ResourceNotFound,
        format!("Thing group {group} cannot be found."),
    )
}

fn invalid(message: impl Into<String>) -> DataPlaneError {
    DataPlaneError::new(ErrorKind::InvalidRequest, message)
}

fn load<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    what: &str,
) -> Result<Option<T>, DataPlaneError> {
    match table.get(key).map_err(db_error)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| corrupt(what, e)),
    }
}

fn save<T: Serialize>(
    table: &mut redb::Table<&'static str, &'static [u8]>,
    key: &str,
    value: &T,
    what: &str,
) -> Result<(), DataPlaneError> {
    let bytes = serde_json::to_vec(value).map_err(|e| corrupt(what, e))?;
    table.insert(key, bytes.as_slice()).map_err(db_error)?;
    Ok(())
}

/// The second names of the `first/second` keys of `first`, sorted, after `after`.
fn second_names(
    table: &impl ReadableTable<&'static str, u8>,
    first: &str,
) -> Result<Vec<String>, DataPlaneError> {
    let start = format!("{first}/");
    let end = format!("{first}0");
    let mut names = Vec::new();
    for entry in table
        .range::<&str>(start.as_str()..end.as_str())
        .map_err(db_error)?
    {
        let (key, _) = entry.map_err(db_error)?;
        names.push(
            key.value()
                .get(start.len()..)
                .unwrap_or_default()
                .to_string(),
        );
    }
    Ok(names)
}

/// The root of `group`'s hierarchy (the group itself for a root).
fn root_of(
    groups: &impl ReadableTable<&'static str, &'static [u8]>,
    group: &StoredGroup,
) -> Result<String, DataPlaneError> {
    let mut current = group.clone();
    // A hierarchy is at most MAX_GROUP_DEPTH deep; the bound guards a damaged file.
    for _ in 0..=MAX_GROUP_DEPTH {
        match &current.parent_group_name {
            None => return Ok(current.thing_group_name),
            Some(parent) => match load::<StoredGroup>(groups, parent, "thing group")? {
                Some(p) => current = p,
                None => return Ok(current.thing_group_name),
            },
        }
    }
    Err(corrupt(
        "thing group",
        "the hierarchy is deeper than allowed",
    ))
}

/// Levels from the root down to `group` (1 for a root).
fn depth_of(
    groups: &impl ReadableTable<&'static str, &'static [u8]>,
    group: &StoredGroup,
) -> Result<usize, DataPlaneError> {
    let mut depth = 1;
    let mut current = group.clone();
    while let Some(parent) = current.parent_group_name.clone() {
        depth += 1;
        if depth > MAX_GROUP_DEPTH + 1 {
            return Err(corrupt(
                "thing group",
                "the hierarchy is deeper than allowed",
            ));
        }
        match load::<StoredGroup>(groups, &parent, "thing group")? {
            Some(p) => current = p,
            None => break,
        }
    }
    Ok(depth)
}

/// `nextToken` scope of a ListThingsInThingGroup listing.
fn list_scope(group: &str, recursive: bool) -> String {
    format!("things-in:{group}:{recursive}")
}

/// `nextToken` scope of a search: tied to the query, so that a token is only good for the
/// query it came from.
fn search_scope(query: &str) -> String {
    let digest = Sha256::digest(query.as_bytes());
    format!("search:{}", hex::encode(&digest[..12]))
}

impl Store {
    pub(super) fn create_thing(
        &self,
        thing: &str,
        attributes: &Attributes,
    ) -> Result<ThingCreated, DataPlaneError> {
        let txn = self.write()?;
        let created = {
            let mut things = txn.open_table(THINGS).map_err(db_error)?;
            if let Some(existing) = load::<StoredThing>(&things, thing, "thing")? {
                // Same name and configuration: success, with the same ids.
                if existing.attributes == *attributes {
                    return Ok(existing.created());
                }
                return Err(DataPlaneError::new(
                    ErrorKind::ResourceAlreadyExists,
                    format!("Thing {thing} already exists in account with different attributes"),
                ));
            }
            let stored = StoredThing {
                thing_name: thing.to_string(),
                thing_id: new_id(),
                attributes: attributes.clone(),
                version: 1,
            };
            save(&mut things, thing, &stored, "thing")?;
            stored.created()
        };
        txn.commit().map_err(db_error)?;
        Ok(created)
    }

    pub(super) fn delete_thing(
        &self,
        thing: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError> {
        let txn = self.write()?;
        {
            let mut things = txn.open_table(THINGS).map_err(db_error)?;
            let Some(existing) = load::<StoredThing>(&things, thing, "thing")? else {
                // AWS: "Returns successfully with no error if ... you specify a thing that
                // doesn't exist."
                return Ok(());
            };
            if let Some(expected) = expected_version {
                if expected != existing.version {
                    return Err(DataPlaneError::new(
                        ErrorKind::VersionConflict,
                        format!(
                            "The version for thing {thing} does not match the expected version."
                        ),
                    ));
                }
            }
            things.remove(thing).map_err(db_error)?;
            let mut thing_groups = txn.open_table(THING_GROUPS).map_err(db_error)?;
            let mut group_things = txn.open_table(GROUP_THINGS).map_err(db_error)?;
            for group in second_names(&thing_groups, thing)? {
                thing_groups
                    .remove(pair(thing, &group).as_str())
                    .map_err(db_error)?;
                group_things
                    .remove(pair(&group, thing).as_str())
                    .map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    pub(super) fn create_thing_group(
        &self,
        group: &str,
        spec: &ThingGroupSpec,
    ) -> Result<ThingGroupCreated, DataPlaneError> {
        let txn = self.write()?;
        let now = self.now_ms();
        let created = {
            let mut groups = txn.open_table(GROUPS).map_err(db_error)?;
            if let Some(existing) = load::<StoredGroup>(&groups, group, "thing group")? {
                if existing.spec() == *spec {
                    return Ok(existing.created());
                }
                return Err(DataPlaneError::new(
                    ErrorKind::ResourceAlreadyExists,
                    format!(
                        "Thing Group {group} already exists in current account with different properties"
                    ),
                ));
            }
            let mut children = txn.open_table(CHILDREN).map_err(db_error)?;
            if let Some(parent) = &spec.parent_group_name {
                let Some(parent_group) = load::<StoredGroup>(&groups, parent, "thing group")?
                else {
                    return Err(invalid(format!(
                        "The parent thing group {parent} does not exist"
                    )));
                };
                if depth_of(&groups, &parent_group)? >= MAX_GROUP_DEPTH {
                    return Err(invalid(format!(
                        "Thing group {group} would be deeper than {MAX_GROUP_DEPTH} levels"
                    )));
                }
                if second_names(&children, parent)?.len() >= MAX_CHILD_GROUPS {
                    return Err(invalid(format!(
                        "Thing group {parent} already has {MAX_CHILD_GROUPS} child groups"
                    )));
                }
                children
                    .insert(pair(parent, group).as_str(), 1)
                    .map_err(db_error)?;
            }
            let stored = StoredGroup {
                thing_group_name: group.to_string(),
                thing_group_id: new_id(),
                parent_group_name: spec.parent_group_name.clone(),
                description: spec.description.clone(),
                attributes: spec.attributes.clone(),
                version: 1,
                creation_date: now,
            };
            save(&mut groups, group, &stored, "thing group")?;
            stored.created()
        };
        txn.commit().map_err(db_error)?;
        Ok(created)
    }

    pub(super) fn delete_thing_group(
        &self,
        group: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError> {
        let txn = self.write()?;
        {
            let mut groups = txn.open_table(GROUPS).map_err(db_error)?;
            let Some(existing) = load::<StoredGroup>(&groups, group, "thing group")? else {
                return Ok(());
            };
            let mut children = txn.open_table(CHILDREN).map_err(db_error)?;
            if !second_names(&children, group)?.is_empty() {
                return Err(invalid(format!(
                    "Cannot delete thing group : {group} when there are still child groups attached to it"
                )));
            }
            if let Some(expected) = expected_version {
                if expected != existing.version {
                    return Err(DataPlaneError::new(
                        ErrorKind::VersionConflict,
                        format!(
                            "The version for thing group {group} does not match the expected version."
                        ),
                    ));
                }
            }
            groups.remove(group).map_err(db_error)?;
            if let Some(parent) = &existing.parent_group_name {
                children
                    .remove(pair(parent, group).as_str())
                    .map_err(db_error)?;
            }
            let mut thing_groups = txn.open_table(THING_GROUPS).map_err(db_error)?;
            let mut group_things = txn.open_table(GROUP_THINGS).map_err(db_error)?;
            for thing in second_names(&group_things, group)? {
                group_things
                    .remove(pair(group, &thing).as_str())
                    .map_err(db_error)?;
                thing_groups
                    .remove(pair(&thing, group).as_str())
                    .map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    pub(super) fn add_thing_to_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError> {
        let txn = self.write()?;
        {
            let groups = txn.open_table(GROUPS).map_err(db_error)?;
            let Some(target) = load::<StoredGroup>(&groups, group, "thing group")? else {
                return Err(group_not_found(group));
            };
            let things = txn.open_table(THINGS).map_err(db_error)?;
            if load::<StoredThing>(&things, thing, "thing")?.is_none() {
                return Err(thing_not_found(thing));
            }
            let mut thing_groups = txn.open_table(THING_GROUPS).map_err(db_error)?;
            let current = second_names(&thing_groups, thing)?;
            if current.iter().any(|g| g == group) {
                return Ok(());
            }
            if current.len() >= MAX_GROUPS_PER_THING {
                return Err(invalid(format!(
                    "Thing {thing} is already in {MAX_GROUPS_PER_THING} thing groups, the most a thing can belong to"
                )));
            }
            let root = root_of(&groups, &target)?;
            for other in &current {
                if let Some(other_group) = load::<StoredGroup>(&groups, other, "thing group")? {
                    if root_of(&groups, &other_group)? == root {
                        return Err(invalid(format!(
                            "Thing {thing} cannot be added to thing group {group}: it is in thing \
                             group {other} of the same hierarchy (root {root}), and a thing can \
                             be in only one group of a hierarchy"
                        )));
                    }
                }
            }
            thing_groups
                .insert(pair(thing, group).as_str(), 1)
                .map_err(db_error)?;
            let mut group_things = txn.open_table(GROUP_THINGS).map_err(db_error)?;
            group_things
                .insert(pair(group, thing).as_str(), 1)
                .map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    pub(super) fn remove_thing_from_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError> {
        let txn = self.write()?;
        {
            let groups = txn.open_table(GROUPS).map_err(db_error)?;
            if load::<StoredGroup>(&groups, group, "thing group")?.is_none() {
                return Err(group_not_found(group));
            }
            let things = txn.open_table(THINGS).map_err(db_error)?;
            if load::<StoredThing>(&things, thing, "thing")?.is_none() {
                return Err(thing_not_found(thing));
            }
            let mut thing_groups = txn.open_table(THING_GROUPS).map_err(db_error)?;
            let mut group_things = txn.open_table(GROUP_THINGS).map_err(db_error)?;
            let removed = thing_groups
                .remove(pair(thing, group).as_str())
                .map_err(db_error)?
                .is_some();
            group_things
                .remove(pair(group, thing).as_str())
                .map_err(db_error)?;
            if !removed {
                // Not a member: nothing to do, and nothing to commit.
                return Ok(());
            }
        }
        txn.commit().map_err(db_error)
    }

    pub(super) fn list_things_in_thing_group(
        &self,
        group: &str,
        recursive: bool,
        after: Option<&str>,
        max_results: usize,
    ) -> Result<ThingNamePage, DataPlaneError> {
        let txn = self.read()?;
        let groups = txn.open_table(GROUPS).map_err(db_error)?;
        if load::<StoredGroup>(&groups, group, "thing group")?.is_none() {
            return Err(group_not_found(group));
        }
        let group_things = txn.open_table(GROUP_THINGS).map_err(db_error)?;
        let mut names: BTreeSet<String> = second_names(&group_things, group)?.into_iter().collect();
        if recursive {
            let children = txn.open_table(CHILDREN).map_err(db_error)?;
            let mut queue: VecDeque<String> = second_names(&children, group)?.into();
            while let Some(child) = queue.pop_front() {
                names.extend(second_names(&group_things, &child)?);
                queue.extend(second_names(&children, &child)?);
            }
        }
        let mut things: Vec<String> = names
            .into_iter()
            .filter(|name| after.is_none_or(|after| name.as_str() > after))
            .take(max_results + 1)
            .collect();
        let more = things.len() > max_results;
        things.truncate(max_results);
        let next_token = match things.last() {
            Some(last) if more => Some(validate::encode_token(&list_scope(group, recursive), last)),
            _ => None,
        };
        Ok(ThingNamePage { things, next_token })
    }

    pub(super) fn search_things(
        &self,
        query_text: &str,
        query: &Query,
        after: Option<&str>,
        max_results: usize,
    ) -> Result<ThingSearchPage, DataPlaneError> {
        let txn = self.read()?;
        let things = txn.open_table(THINGS).map_err(db_error)?;
        let thing_groups = txn.open_table(THING_GROUPS).map_err(db_error)?;
        let range = (
            after.map_or(Bound::Unbounded, Bound::Excluded),
            Bound::<&str>::Unbounded,
        );
        let mut found = Vec::new();
        let mut more = false;
        for entry in things.range::<&str>(range).map_err(db_error)? {
            let (_, value) = entry.map_err(db_error)?;
            let thing: StoredThing =
                serde_json::from_slice(value.value()).map_err(|e| corrupt("thing", e))?;
            let groups = second_names(&thing_groups, &thing.thing_name)?;
            let view = ThingView {
                name: &thing.thing_name,
                id: &thing.thing_id,
                attributes: &thing.attributes,
                groups: &groups,
            };
            if !query.matches(&view) {
                continue;
            }
            if found.len() == max_results {
                more = true;
                break;
            }
            found.push(ThingDocument {
                thing_name: thing.thing_name,
                thing_id: thing.thing_id,
                attributes: thing.attributes,
                thing_group_names: groups,
            });
        }
        let next_token = match found.last() {
            Some(last) if more => Some(validate::encode_token(
                &search_scope(query_text),
                &last.thing_name,
            )),
            _ => None,
        };
        Ok(ThingSearchPage {
            things: found,
            next_token,
        })
    }
}

#[async_trait]
impl Registry for EmbeddedDataPlane {
    async fn create_thing(
        &self,
        thing: &str,
        attributes: &Attributes,
    ) -> Result<ThingCreated, DataPlaneError> {
        registry::name("thingName", thing)?;
        registry::attributes(attributes, MAX_THING_ATTRIBUTES)?;
        let (thing, attributes) = (thing.to_string(), attributes.clone());
        self.blocking(move |s| s.create_thing(&thing, &attributes))
            .await
    }

    async fn delete_thing(
        &self,
        thing: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError> {
        registry::name("thingName", thing)?;
        let thing = thing.to_string();
        self.blocking(move |s| s.delete_thing(&thing, expected_version))
            .await
    }

    async fn create_thing_group(
        &self,
        group: &str,
        spec: &ThingGroupSpec,
    ) -> Result<ThingGroupCreated, DataPlaneError> {
        registry::thing_group_spec(group, spec)?;
        let (group, spec) = (group.to_string(), spec.clone());
        self.blocking(move |s| s.create_thing_group(&group, &spec))
            .await
    }

    async fn delete_thing_group(
        &self,
        group: &str,
        expected_version: Option<i64>,
    ) -> Result<(), DataPlaneError> {
        registry::name("thingGroupName", group)?;
        let group = group.to_string();
        self.blocking(move |s| s.delete_thing_group(&group, expected_version))
            .await
    }

    async fn add_thing_to_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError> {
        registry::name("thingGroupName", group)?;
        registry::name("thingName", thing)?;
        let (group, thing) = (group.to_string(), thing.to_string());
        self.blocking(move |s| s.add_thing_to_thing_group(&group, &thing))
            .await
    }

    async fn remove_thing_from_thing_group(
        &self,
        group: &str,
        thing: &str,
    ) -> Result<(), DataPlaneError> {
        registry::name("thingGroupName", group)?;
        registry::name("thingName", thing)?;
        let (group, thing) = (group.to_string(), thing.to_string());
        self.blocking(move |s| s.remove_thing_from_thing_group(&group, &thing))
            .await
    }

    async fn list_things_in_thing_group(
        &self,
        group: &str,
        recursive: bool,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ThingNamePage, DataPlaneError> {
        registry::name("thingGroupName", group)?;
        let max_results = validate::page_size(
            max_results,
            LIST_THINGS_PAGE_DEFAULT,
            LIST_THINGS_PAGE_MAX,
            "maxResults",
        )?;
        let after = next_token
            .map(|t| validate::decode_token(&list_scope(group, recursive), t))
            .transpose()?;
        let group = group.to_string();
        self.blocking(move |s| {
            s.list_things_in_thing_group(&group, recursive, after.as_deref(), max_results)
        })
        .await
    }

    async fn search_index(
        &self,
        query: &str,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ThingSearchPage, DataPlaneError> {
        let parsed = Query::parse(query)?;
        let max_results = validate::page_size(
            max_results,
            SEARCH_PAGE_DEFAULT,
            SEARCH_PAGE_MAX,
            "maxResults",
        )?;
        let after = next_token
            .map(|t| validate::decode_token(&search_scope(query), t))
            .transpose()?;
        let query = query.to_string();
        self.blocking(move |s| s.search_things(&query, &parsed, after.as_deref(), max_results))
            .await
    }
}
