//! The resource types the server serves: the built-in ones shadowsync and kubectl need, and
//! one per CustomResourceDefinition, rebuilt whenever a CRD changes.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::errors::Cause;
use crate::jsonpath::JsonPath;
use crate::schema::CompiledSchema;

pub const CRD_GROUP: &str = "apiextensions.k8s.io";
pub const CRD_STORAGE: &str = "apiextensions.k8s.io/customresourcedefinitions";
pub const NAMESPACE_STORAGE: &str = "/namespaces";

/// How a printer column gets its cell.
#[derive(Debug)]
pub enum ColumnSource {
    Path(JsonPath),
    Name,
    /// Time since `metadata.creationTimestamp`, printed like kubectl's ages.
    Age,
    /// Number of keys in `data` plus `binaryData`.
    DataCount,
    /// `kind/name` of an Event's `involvedObject`.
    EventObject,
    /// Age of an Event's newest timestamp.
    EventLastSeen,
}

#[derive(Debug)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub source: ColumnSource,
}

impl Column {
    fn builtin(name: &str, type_: &str, source: ColumnSource) -> Column {
        Column {
            name: name.into(),
            type_: type_.into(),
            format: if matches!(source, ColumnSource::Name) {
                "name".into()
            } else {
                String::new()
            },
            description: String::new(),
            priority: 0,
            source,
        }
    }

    fn name() -> Column {
        let mut c = Column::builtin("Name", "string", ColumnSource::Name);
        c.description = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names".into();
        c
    }

    fn age() -> Column {
        let mut c = Column::builtin("Age", "date", ColumnSource::Age);
        c.description = "CreationTimestamp is a timestamp representing the server time when this object was created.".into();
        c
    }

    fn path(name: &str, type_: &str, path: &str) -> Column {
        Column::builtin(
            name,
            type_,
            ColumnSource::Path(JsonPath::parse(path).expect("built-in column path")),
        )
    }
}

/// Served version of a resource type.
#[derive(Debug)]
pub struct Version {
    pub name: String,
    pub schema: Option<Arc<CompiledSchema>>,
    pub columns: Vec<Column>,
}

/// Representation changes between what is stored and what a version serves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Conversion {
    None,
    /// `events.k8s.io/v1` Events, stored as core `v1` Events.
    EventsV1,
}

/// Built-in types with behaviour of their own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Special {
    None,
    Namespace,
    Secret,
    Crd,
}

#[derive(Debug)]
pub struct ResourceType {
    /// Empty for the core group.
    pub group: String,
    /// Served versions, the preferred one first.
    pub versions: Vec<Version>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// Defined by a CRD: generation tracking, schema, and updates need a resourceVersion.
    pub custom: bool,
    /// Objects of types with the same storage key are the same objects.
    pub storage: String,
    pub conversion: Conversion,
    pub special: Special,
    /// Field selectors accepted besides `metadata.name` and `metadata.namespace`.
    pub field_labels: Vec<&'static str>,
}

impl ResourceType {
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    pub fn subject<'a>(&'a self, name: &'a str) -> crate::errors::Subject<'a> {
        crate::errors::Subject {
            group: &self.group,
            resource: &self.plural,
            kind: &self.kind,
            name,
        }
    }

    /// The storage key of a type defined by group and plural.
    pub fn storage_key(group: &str, plural: &str) -> String {
        format!("{group}/{plural}")
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    columns: Vec<Column>,
    special: Special,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec![Version {
            name: version.into(),
            schema: None,
            columns,
        }],
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status_subresource: false,
        custom: false,
        storage: ResourceType::storage_key(group, plural),
        conversion: Conversion::None,
        special,
        field_labels: Vec::new(),
    }
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

fn event_columns() -> Vec<Column> {
    let mut name = Column::name();
    name.priority = 1;
    vec![
        Column::builtin("Last Seen", "string", ColumnSource::EventLastSeen),
        Column::path("Type", "string", ".type"),
        Column::path("Reason", "string", ".reason"),
        Column::builtin("Object", "string", ColumnSource::EventObject),
        Column::path("Message", "string", ".message"),
        name,
    ]
}

fn builtins() -> Vec<ResourceType> {
    let mut namespaces = builtin(
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        vec![
            Column::name(),
            Column::path("Status", "string", ".status.phase"),
            Column::age(),
        ],
        Special::Namespace,
    );
    namespaces.status_subresource = true;
    namespaces.field_labels = vec!["status.phase"];

    let mut events = builtin(
        "",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        event_columns(),
        Special::None,
    );
    events.field_labels = EVENT_FIELDS.to_vec();

    let mut secrets = builtin(
        "",
        "v1",
        "secrets",
        "Secret",
        true,
        &[],
        vec![
            Column::name(),
            Column::path("Type", "string", ".type"),
            Column::builtin("Data", "integer", ColumnSource::DataCount),
            Column::age(),
        ],
        Special::Secret,
    );
    secrets.field_labels = vec!["type"];

    let configmaps = builtin(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        &["cm"],
        vec![
            Column::name(),
            Column::builtin("Data", "integer", ColumnSource::DataCount),
            Column::age(),
        ],
        Special::None,
    );

    let leases = builtin(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        &[],
        vec![
            Column::name(),
            Column::path("Holder", "string", ".spec.holderIdentity"),
            Column::age(),
        ],
        Special::None,
    );

    let mut events_v1 = builtin(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        event_columns(),
        Special::None,
    );
    events_v1.storage = ResourceType::storage_key("", "events");
    events_v1.conversion = Conversion::EventsV1;
    events_v1.field_labels = EVENT_FIELDS.to_vec();

    let mut crds = builtin(
        CRD_GROUP,
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        vec![
            Column::name(),
            Column::path("Created At", "date", ".metadata.creationTimestamp"),
        ],
        Special::Crd,
    );
    crds.status_subresource = true;
    crds.categories = vec!["api-extensions".into()];
    crds.singular = "customresourcedefinition".into();

    vec![
        namespaces, events, secrets, configmaps, leases, events_v1, crds,
    ]
}

/// Every served type, the built-ins first, then one per CRD in name order.
#[derive(Debug)]
pub struct Registry {
    pub types: Vec<Arc<ResourceType>>,
}

impl Registry {
    /// Builds the registry from stored CRD objects (which were checked when written).
    pub fn build<'a>(crds: impl Iterator<Item = &'a Value>) -> Registry {
        let mut types: Vec<Arc<ResourceType>> = builtins().into_iter().map(Arc::new).collect();
        for crd in crds {
            match parse_crd(crd) {
                Ok(rt) => types.push(Arc::new(rt)),
                Err(causes) => eprintln!(
                    "test-apiserver: ignoring stored CRD {}: {causes:?}",
                    crd["metadata"]["name"]
                ),
            }
        }
        Registry { types }
    }

    /// The type served at `group`/`version` under `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural && t.version(version).is_some())
            .cloned()
    }

    pub fn by_storage(&self, storage: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.storage == storage && t.conversion == Conversion::None)
            .cloned()
    }

    /// Group names in discovery order, each with its versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            let entry = match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some(entry) => entry,
                None => {
                    groups.push((t.group.clone(), Vec::new()));
                    groups.last_mut().expect("just pushed")
                }
            };
            for v in &t.versions {
                if !entry.1.contains(&v.name) {
                    entry.1.push(v.name.clone());
                }
            }
        }
        for (_, versions) in &mut groups {
            sort_versions(versions);
        }
        groups
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ResourceType>> + 'a {
        self.types
            .iter()
            .filter(move |t| t.group == group && t.version(version).is_some())
    }
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, then
/// anything else alphabetically.
pub fn sort_versions(versions: &mut [String]) {
    fn key(v: &str) -> (u8, i64, i64, String) {
        let re = regex::Regex::new(r"^v(\d+)(?:(alpha|beta)(\d+))?$").expect("static regex");
        match re.captures(v) {
            Some(c) => {
                let major: i64 = c[1].parse().unwrap_or(0);
                let (rank, minor) = match c.get(2).map(|m| m.as_str()) {
                    None => (0, 0),
                    Some("beta") => (1, c[3].parse().unwrap_or(0)),
                    Some(_) => (2, c[3].parse().unwrap_or(0)),
                };
                (rank, -major, -minor, String::new())
            }
            None => (3, 0, 0, v.to_string()),
        }
    }
    versions.sort_by_key(|v| key(v));
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a CRD object and turns it into a resource type. Errors are 422 causes.
pub fn parse_crd(crd: &Value) -> Result<ResourceType, Vec<Cause>> {
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if group.is_empty() {
        causes.push(Cause::required("spec.group", ""));
    } else if !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    } else if (group.ends_with(".k8s.io") || group.ends_with(".kubernetes.io"))
        && crd["metadata"]["annotations"]["api-approved.kubernetes.io"].is_null()
    {
        causes.push(Cause::required(
            "metadata.annotations[api-approved.kubernetes.io]",
            "protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind", ""));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            causes.push(Cause::new(
                "spec.scope",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {}: supported values: \"Cluster\", \"Namespaced\"",
                    crate::errors::show_value(&spec["scope"])
                ),
            ));
            true
        }
    };
    let all_versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if all_versions.is_empty() {
        causes.push(Cause::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    let storage_count = all_versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if !all_versions.is_empty() && storage_count != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            &Value::Array(all_versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    let mut status_subresource = false;
    let mut versions = Vec::new();
    for (i, v) in all_versions.iter().enumerate() {
        let vname = v["name"].as_str().unwrap_or_default().to_string();
        if vname.is_empty() {
            causes.push(Cause::required(format!("spec.versions[{i}].name"), ""));
            continue;
        }
        if !v["subresources"]["status"].is_null() {
            status_subresource = true;
        }
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        let schema = match v["schema"].get("openAPIV3Schema") {
            Some(s) if s.is_object() => match CompiledSchema::compile(s.clone()) {
                Ok(c) => Some(Arc::new(c)),
                Err(problems) => {
                    for p in problems {
                        causes.push(Cause::invalid(
                            format!("spec.versions[{i}].schema.openAPIV3Schema"),
                            &json!("object"),
                            p,
                        ));
                    }
                    None
                }
            },
            _ => None,
        };
        let mut columns = vec![Column::name()];
        let printer = v["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (j, col) in printer.iter().enumerate() {
            let path = col["jsonPath"].as_str().unwrap_or_default();
            match JsonPath::parse(path) {
                Ok(p) => columns.push(Column {
                    name: col["name"].as_str().unwrap_or_default().to_string(),
                    type_: col["type"].as_str().unwrap_or("string").to_string(),
                    format: col["format"].as_str().unwrap_or_default().to_string(),
                    description: col["description"].as_str().unwrap_or_default().to_string(),
                    priority: col["priority"].as_i64().unwrap_or(0),
                    source: ColumnSource::Path(p),
                }),
                Err(e) => causes.push(Cause::invalid(
                    format!("spec.versions[{i}].additionalPrinterColumns[{j}].jsonPath"),
                    &json!(path),
                    e,
                )),
            }
        }
        if printer.is_empty() {
            columns.push(Column::age());
        }
        versions.push(Version {
            name: vname,
            schema,
            columns,
        });
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let mut order: Vec<String> = versions.iter().map(|v| v.name.clone()).collect();
    sort_versions(&mut order);
    versions.sort_by_key(|v| order.iter().position(|o| *o == v.name));
    Ok(ResourceType {
        singular: names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        list_kind: names["listKind"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{kind}List")),
        short_names: string_list(&names["shortNames"]),
        categories: string_list(&names["categories"]),
        storage: ResourceType::storage_key(&group, &plural),
        group,
        versions,
        plural,
        kind,
        namespaced,
        status_subresource,
        custom: true,
        conversion: Conversion::None,
        special: Special::None,
        field_labels: Vec::new(),
    })
}

/// The status a real apiserver writes on a CRD once its names are accepted.
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let spec = &crd["spec"];
    let mut accepted = spec["names"].clone();
    if accepted["singular"].is_null() {
        accepted["singular"] = json!(spec["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase());
    }
    if accepted["listKind"].is_null() {
        accepted["listKind"] = json!(format!(
            "{}List",
            spec["names"]["kind"].as_str().unwrap_or_default()
        ));
    }
    let stored: Vec<Value> = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
             "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now,
             "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v: Vec<String> = ["v1alpha1", "v1", "foo", "v2beta1", "v1beta2", "v2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_versions(&mut v);
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }
}
