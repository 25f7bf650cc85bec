//! Loading `ThingShadow`, `RetainedMessage` and `ThingShadowSet` manifests from files and
//! folders.
//!
//! Like `kubectl apply -f`: a path is a file or a folder (its `*.yaml`, `*.yml` and
//! `*.json` files, sorted by name; sub-folders only with `--recursive`), a file holds one
//! or more YAML documents, and `-` reads standard input. Documents of other kinds are
//! skipped with a note, because a folder of manifests often holds a Namespace or a
//! kustomization too. Unknown fields are errors that name the field, so a typo such as
//! `desried` does not silently turn into "no desired state".
//!
//! The text is read exactly as kubectl reads it ([`super::yaml`]): a value that kubectl
//! and a YAML 1.2 reader would read differently, or that JSON cannot hold, is an error
//! naming the field, and so is a key whose value is `null` in `desired` or a `json`
//! payload (the apiserver drops such keys). Numbers end as the apiserver keeps them.
//!
//! A `ThingShadowSet` is read as strictly, but kept apart ([`Loaded::sets`]): it is not
//! reconciled itself, `apply` and `diff` expand it into one `ThingShadow` per selected
//! thing, which take the set's place in the input order ([`SetManifest::position`]).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{RetainedMessage, ThingShadow, ThingShadowSet, API_VERSION};

/// One resource read from a manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Where it came from: `path#document-index` (1-based).
    pub source: String,
    pub resource: Resource,
}

/// The two kinds shadowsync manages.
#[derive(Clone, Debug)]
pub enum Resource {
    ThingShadow(Box<ThingShadow>),
    RetainedMessage(Box<RetainedMessage>),
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::ThingShadow(_) => "ThingShadow",
            Resource::RetainedMessage(_) => "RetainedMessage",
        }
    }

    /// `namespace/name`, with the namespace `default` when the manifest names none.
    pub fn key(&self) -> String {
        let meta = match self {
            Resource::ThingShadow(r) => &r.metadata,
            Resource::RetainedMessage(r) => &r.metadata,
        };
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default()
        )
    }
}

/// A `ThingShadowSet` read from a manifest.
#[derive(Clone, Debug)]
pub struct SetManifest {
    /// Where it came from: `path#document-index` (1-based).
    pub source: String,
    pub set: Box<ThingShadowSet>,
    /// How many resources were read before it: its children go before
    /// `manifests[position]`, so that the input order (the first declaration of a
    /// target owns it) holds for them too.
    pub position: usize,
}

impl SetManifest {
    /// `namespace/name`, with the namespace `default` when the manifest names none.
    pub fn key(&self) -> String {
        let meta = &self.set.metadata;
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default()
        )
    }
}

/// What one document declares.
#[derive(Clone, Debug)]
pub enum Declared {
    Resource(Resource),
    Set(Box<ThingShadowSet>),
}

/// Why a manifest could not be read. Each names the file and document and, for content
/// errors, the field.
#[derive(Debug)]
pub struct LoadError {
    pub source: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

/// What loading produced: the resources, the sets, the documents skipped, and every
/// error.
#[derive(Debug, Default)]
pub struct Loaded {
    pub manifests: Vec<Manifest>,
    pub sets: Vec<SetManifest>,
    pub skipped: Vec<String>,
    pub errors: Vec<LoadError>,
}

/// Reads every path. Errors are collected, not fatal, so that one run reports them all.
pub fn load(paths: &[PathBuf], recursive: bool) -> Loaded {
    let mut loaded = Loaded::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => parse_documents("<stdin>", &text, &mut loaded),
                Err(err) => loaded.errors.push(LoadError {
                    source: "<stdin>".into(),
                    message: format!("cannot read: {err}"),
                }),
            }
            continue;
        }
        let mut files = Vec::new();
        if let Err(err) = collect_files(path, recursive, true, &mut files) {
            loaded.errors.push(LoadError {
                source: path.display().to_string(),
                message: err,
            });
            continue;
        }
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => parse_documents(&file.display().to_string(), &text, &mut loaded),
                Err(err) => loaded.errors.push(LoadError {
                    source: file.display().to_string(),
                    message: format!("cannot read: {err}"),
                }),
            }
        }
    }
    loaded
}

fn collect_files(
    path: &Path,
    recursive: bool,
    top: bool,
    out: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|err| format!("cannot read: {err}"))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    if !top && !recursive {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|err| format!("cannot list folder: {err}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                collect_files(&entry, recursive, false, out)?;
            }
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Parses a multi-document YAML (or JSON) text, reading it exactly as kubectl reads it
/// (see [`super::yaml`]): a value whose meaning would differ between kubectl and a YAML
/// 1.2 reader, or that JSON cannot hold, is an error naming its field.
pub fn parse_documents(file: &str, text: &str, loaded: &mut Loaded) {
    for document in super::yaml::read_documents(text) {
        let source = format!("{file}#{}", document.index);
        match document.content {
            Err(message) => loaded.errors.push(LoadError { source, message }),
            Ok(None) => {}
            Ok(Some(json)) => parse_object(source, &json, loaded),
        }
    }
}

/// One document read as JSON. Like kubectl, a document with an `items` field is a list
/// (`kind: List`) whose items are the resources.
fn parse_object(source: String, json: &Value, loaded: &mut Loaded) {
    if let Some(items) = json.as_object().and_then(|o| o.get("items")) {
        match items {
            Value::Null => {}
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let source = format!("{source} items[{i}]");
                    if item.is_object() {
                        parse_object(source, item, loaded);
                    } else {
                        loaded.errors.push(LoadError {
                            source,
                            message: "a list item must be a mapping with apiVersion and kind"
                                .into(),
                        });
                    }
                }
            }
            _ => loaded.errors.push(LoadError {
                source,
                message: "items: a document with items is a list for kubectl; items must be a list of manifests".into(),
            }),
        }
        return;
    }
    match parse_declared(json) {
        Ok(Some(Declared::Resource(resource))) => {
            loaded.manifests.push(Manifest { source, resource })
        }
        Ok(Some(Declared::Set(set))) => loaded.sets.push(SetManifest {
            source,
            set,
            position: loaded.manifests.len(),
        }),
        Ok(None) => loaded.skipped.push(format!(
            "{source}: {} {} is not a shadowsync resource; skipped",
            json.get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            json.get("kind").and_then(Value::as_str).unwrap_or("?")
        )),
        Err(message) => loaded.errors.push(LoadError { source, message }),
    }
}

/// One document that declares one resource: `Ok(None)` when it is not one of our kinds.
/// A `ThingShadowSet` is an error here: it declares many (see [`parse_declared`]).
pub fn parse_resource(json: &Value) -> Result<Option<Resource>, String> {
    match parse_declared(json)? {
        Some(Declared::Resource(resource)) => Ok(Some(resource)),
        Some(Declared::Set(_)) => Err(
            "kind \"ThingShadowSet\" declares one ThingShadow per selected thing, not one resource"
                .into(),
        ),
        None => Ok(None),
    }
}

/// One document: `Ok(None)` when it is not one of our kinds.
pub fn parse_declared(json: &Value) -> Result<Option<Declared>, String> {
    let Some(object) = json.as_object() else {
        return Err("a manifest must be a mapping with apiVersion and kind".into());
    };
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    let group = api_version.and_then(|v| v.split('/').next());
    if group != Some(crate::api::GROUP) {
        return Ok(None);
    }
    if api_version != Some(API_VERSION) {
        return Err(format!(
            "apiVersion {:?} is not served; use {API_VERSION}",
            api_version.unwrap_or_default()
        ));
    }
    // Free-form JSON fields: the apiserver drops a key whose value is null there (the
    // schema does not make them nullable), so kubectl and the operator never see it.
    let (free, path, hint) = match kind {
        Some("ThingShadow") => (
            json.pointer("/spec/desired"),
            "spec.desired",
            " (a desired key that a manifest no longer declares is cleared from the shadow by apply and by the operator)",
        ),
        Some("ThingShadowSet") => (
            json.pointer("/spec/template/desired"),
            "spec.template.desired",
            " (a desired key that a template no longer declares is cleared from the shadows by apply and by the operator)",
        ),
        _ => (json.pointer("/spec/payload/json"), "spec.payload.json", ""),
    };
    if let Some(field) = free.and_then(|v| null_valued_key(v, path)) {
        return Err(format!(
            "{field}: null as a value: the apiserver drops this key, so kubectl and the operator never see it; remove the key{hint}"
        ));
    }
    let declared = match kind {
        Some("ThingShadow") => Declared::Resource(Resource::ThingShadow(Box::new(strict::<
            ThingShadow,
        >(json)?))),
        Some("RetainedMessage") => {
            Declared::Resource(Resource::RetainedMessage(Box::new(strict::<
                RetainedMessage,
            >(json)?)))
        }
        Some("ThingShadowSet") => Declared::Set(Box::new(strict::<ThingShadowSet>(json)?)),
        other => {
            return Err(format!(
                "kind {:?} is not a shadowsync kind (ThingShadow, RetainedMessage, ThingShadowSet)",
                other.unwrap_or_default()
            ))
        }
    };
    let name = match &declared {
        Declared::Resource(Resource::ThingShadow(r)) => r.metadata.name.as_deref(),
        Declared::Resource(Resource::RetainedMessage(r)) => r.metadata.name.as_deref(),
        Declared::Set(r) => r.metadata.name.as_deref(),
    };
    match name {
        None | Some("") => Err("metadata.name: required".into()),
        Some(name) if !is_dns_subdomain(name) => Err(format!(
            "metadata.name {name:?}: must be a DNS subdomain (lower-case letters, digits, '-' and '.', at most 253)"
        )),
        Some(_) => Ok(Some(declared)),
    }
}

/// The path of the first key whose value is null, in objects at any depth.
fn null_valued_key(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let path = format!("{path}.{k}");
            if v.is_null() {
                Some(path)
            } else {
                null_valued_key(v, &path)
            }
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| null_valued_key(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Deserializes with every unknown field reported by its path.
fn strict<T: DeserializeOwned>(json: &Value) -> Result<T, String> {
    let mut unknown = Vec::new();
    let parsed: Result<T, _> = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        json,
        &mut |path: serde_ignored::Path<'_>| unknown.push(path.to_string()),
    ));
    let value = parsed.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        // serde reports a missing field at its parent: name the field itself, as the
        // apiserver does (`spec.thingName: Required value`).
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'));
        match (path.as_str(), missing) {
            (".", Some(field)) => format!("{field}: required ({inner})"),
            (_, Some(field)) => format!("{path}.{field}: required ({inner})"),
            (".", None) => inner,
            _ => format!("{path}: {inner}"),
        }
    })?;
    // apiVersion and kind are read above; status in a manifest is ignored, as kubectl
    // apply ignores it through the status subresource.
    unknown.retain(|p| !matches!(p.as_str(), "apiVersion" | "kind") && !p.starts_with("status"));
    if unknown.is_empty() {
        Ok(value)
    } else {
        Err(unknown
            .iter()
            .map(|p| format!("{p}: unknown field"))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Loaded {
        let mut loaded = Loaded::default();
        parse_documents("m.yaml", text, &mut loaded);
        loaded
    }

    #[test]
    fn reads_both_kinds_from_one_stream_and_skips_others() {
        let loaded = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: home}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
             metadata: {name: lamp, namespace: home}\nspec: {thingName: lamp, desired: {a: 1}}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\n\
             metadata: {name: cfg}\nspec: {topic: a/b, payload: {text: hi}}\n",
        );
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.skipped.len(), 1);
        assert_eq!(loaded.manifests.len(), 2);
        assert_eq!(loaded.manifests[0].resource.key(), "home/lamp");
        assert_eq!(loaded.manifests[0].source, "m.yaml#2");
        assert_eq!(loaded.manifests[1].resource.key(), "default/cfg");
        assert_eq!(loaded.manifests[1].resource.kind(), "RetainedMessage");
    }

    #[test]
    fn unknown_fields_are_named() {
        let loaded = parse(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
             metadata: {name: lamp}\nspec: {thingName: lamp, desried: {a: 1}}\n",
        );
        assert_eq!(loaded.errors.len(), 1);
        assert_eq!(loaded.errors[0].message, "spec.desried: unknown field");
        assert_eq!(loaded.errors[0].source, "m.yaml#1");
    }

    #[test]
    fn type_errors_name_the_field() {
        let loaded = parse(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\n\
             metadata: {name: m}\nspec: {topic: a, payload: {text: x}, qos: many}\n",
        );
        assert_eq!(loaded.errors.len(), 1);
        assert!(
            loaded.errors[0]
                .message
                .starts_with("spec.qos: invalid type"),
            "{}",
            loaded.errors[0].message
        );
    }

    #[test]
    fn integral_floats_read_as_integers_as_a_cluster_reads_them() {
        let loaded = parse(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\n\
             metadata: {name: m}\nspec: {topic: a, payload: {json: {t: 21.0, h: 0.5}}, qos: 1.0, messageExpiry: 60.0}\n",
        );
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let Resource::RetainedMessage(r) = &loaded.manifests[0].resource else {
            panic!("a RetainedMessage")
        };
        assert_eq!(r.spec.qos, 1);
        assert_eq!(r.spec.message_expiry, Some(60));
        assert_eq!(
            r.spec.payload.json,
            Some(serde_json::json!({"t": 21, "h": 0.5}))
        );
        let fraction = parse(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\n\
             metadata: {name: m}\nspec: {topic: a, payload: {text: x}, qos: 0.5}\n",
        );
        assert!(fraction.errors[0]
            .message
            .starts_with("spec.qos: invalid type"));
    }

    #[test]
    fn null_valued_keys_in_free_form_json_are_refused() {
        let loaded = parse(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: m}\n\
             spec: {thingName: t, desired: {a: {b: [{c: ~}]}}}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: RetainedMessage\nmetadata: {name: r}\n\
             spec: {topic: a, payload: {json: {k: null}}}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: nn}\n\
             spec: {thingName: t, shadowName: null, desired: {a: [null]}}\n",
        );
        let messages: Vec<_> = loaded.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0]
            .starts_with("spec.desired.a.b[0].c: null as a value: the apiserver drops this key"));
        assert!(messages[1].starts_with("spec.payload.json.k: null as a value"));
        // A null typed field is absent for everyone; a null in a list is validation's.
        assert_eq!(loaded.manifests.len(), 1);
    }

    #[test]
    fn kubectl_and_yaml_1_2_disagreements_are_refused_with_the_field() {
        let loaded = parse(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: m}\n\
             spec:\n  thingName: t\n  desired: {power: on, mode: no, level: 010}\n",
        );
        assert_eq!(
            loaded.errors[0].message,
            "spec.desired.power: unquoted on is the boolean true for kubectl and the operator; quote it (\"on\") or write true"
        );
    }

    #[test]
    fn a_list_document_holds_resources_as_for_kubectl() {
        let loaded = parse(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: iot.shadowsync.dev/v1alpha1\n  kind: ThingShadow\n  metadata: {name: a}\n  spec: {thingName: a}\n- 5\n",
        );
        assert_eq!(loaded.manifests.len(), 1);
        assert_eq!(loaded.manifests[0].source, "m.yaml#1 items[0]");
        assert_eq!(loaded.errors[0].source, "m.yaml#1 items[1]");
    }

    #[test]
    fn missing_required_field_is_named() {
        let loaded = parse(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: m}\nspec: {desired: {}}\n",
        );
        assert_eq!(loaded.errors.len(), 1);
        assert_eq!(
            loaded.errors[0].message,
            "spec.thingName: required (missing field `thingName`)"
        );
    }

    #[test]
    fn wrong_version_kind_and_name_are_refused() {
        let loaded = parse(
            "apiVersion: iot.shadowsync.dev/v1\nkind: ThingShadow\nmetadata: {name: m}\nspec: {thingName: a}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: Shadow\nmetadata: {name: m}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {name: Bad_Name}\nspec: {thingName: a}\n",
        );
        let messages: Vec<_> = loaded.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("not served"));
        assert!(messages[1].contains("not a shadowsync kind"));
        assert!(messages[2].starts_with("metadata.name \"Bad_Name\""));
    }

    #[test]
    fn sets_are_read_strictly_and_kept_apart_in_their_place() {
        let shadow = |name: &str| {
            format!(
                "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\n\
                 metadata: {{name: {name}}}\nspec: {{thingName: {name}}}\n"
            )
        };
        let set = "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadowSet\n\
                   metadata: {name: lamps, namespace: home}\n\
                   spec:\n  selector: {thingGroup: {name: lamps, recursive: true}}\n  \
                   template: {desired: {power: 'on'}}\n  rollout: {steps: [10, 100], maxFailures: 10%}\n";
        let loaded = parse(&format!("{}---\n{set}---\n{}", shadow("a"), shadow("b")));
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.manifests.len(), 2);
        assert_eq!(loaded.sets.len(), 1);
        let read = &loaded.sets[0];
        assert_eq!((read.source.as_str(), read.position), ("m.yaml#2", 1));
        assert_eq!(read.key(), "home/lamps");
        let spec = &read.set.spec;
        assert_eq!(
            spec.selector.thing_group.as_ref().map(|g| g.recursive),
            Some(true)
        );
        assert_eq!(
            spec.template.desired,
            Some(serde_json::json!({"power": "on"}))
        );
        assert_eq!(spec.rollout.steps, [10, 100]);

        // Unknown fields, null-valued desired keys and bad names, named by field.
        let loaded = parse(
            "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadowSet\nmetadata: {name: s}\n\
             spec: {selector: {things: [a]}, template: {desried: {a: 1}}}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadowSet\nmetadata: {name: s}\n\
             spec: {selector: {things: [a]}, template: {desired: {a: {b: null}}}}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadowSet\nmetadata: {name: S}\n\
             spec: {selector: {things: [a]}, template: {}}\n---\n\
             apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadowSet\nmetadata: {name: s}\n\
             spec: {template: {}}\n",
        );
        let messages: Vec<_> = loaded.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert_eq!(messages[0], "spec.template.desried: unknown field");
        assert!(
            messages[1].starts_with("spec.template.desired.a.b: null as a value"),
            "{}",
            messages[1]
        );
        assert!(
            messages[2].starts_with("metadata.name \"S\""),
            "{}",
            messages[2]
        );
        assert!(
            messages[3].starts_with("spec.selector: required"),
            "{}",
            messages[3]
        );
        assert!(loaded.sets.is_empty());
    }

    #[test]
    fn parse_resource_refuses_a_set_which_is_many_resources() {
        let set = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "ThingShadowSet",
            "metadata": {"name": "s"},
            "spec": {"selector": {"things": ["a"]}, "template": {}},
        });
        let err = parse_resource(&set).expect_err("a set");
        assert!(err.contains("one ThingShadow per selected thing"), "{err}");
        assert!(matches!(parse_declared(&set), Ok(Some(Declared::Set(_)))));
    }

    #[test]
    fn yaml_syntax_error_is_reported_with_its_document() {
        let loaded = parse("a: [1, 2\n");
        assert_eq!(loaded.errors.len(), 1);
        assert!(loaded.errors[0].message.starts_with("not valid YAML"));
    }

    #[test]
    fn folders_are_read_in_name_order_and_not_recursively_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let doc = |name: &str| {
            format!(
                "apiVersion: iot.shadowsync.dev/v1alpha1\nkind: ThingShadow\nmetadata: {{name: {name}}}\nspec: {{thingName: {name}}}\n"
            )
        };
        std::fs::write(dir.path().join("b.yaml"), doc("b")).unwrap();
        std::fs::write(dir.path().join("a.yml"), doc("a")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.yaml"), doc("c")).unwrap();
        let keys = |loaded: Loaded| -> Vec<String> {
            loaded.manifests.iter().map(|m| m.resource.key()).collect()
        };
        let flat = load(&[dir.path().to_path_buf()], false);
        assert_eq!(keys(flat), ["default/a", "default/b"]);
        let deep = load(&[dir.path().to_path_buf()], true);
        assert_eq!(keys(deep), ["default/a", "default/b", "default/c"]);
        let missing = load(&[dir.path().join("nope.yaml")], false);
        assert_eq!(missing.errors.len(), 1);
    }
}
