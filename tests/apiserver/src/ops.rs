//! The verbs: get, list, create, update, patch, delete and deletecollection, with the
//! semantics controllers depend on (resourceVersion preconditions, generation, status
//! subresource isolation, finalizers and deletionTimestamp, namespace lifecycle, schema
//! pruning, defaulting and validation). Everything here runs under the store lock.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::apply::{self, Scope};
use crate::convert::{to_external, to_internal};
use crate::errors::{success_status, ApiError, Cause, Subject};
use crate::meta::{self, finalizers, is_deleting, name_of, now, ordered};
use crate::registry::{
    crd_status, parse_crd, ResourceType, Special, CRD_STORAGE, NAMESPACE_STORAGE,
};
use crate::selectors::Selector;
use crate::store::Store;

/// The main resource or its `status` subresource.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sub {
    Main,
    Status,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let mime = content_type.split(';').next().unwrap_or_default().trim();
        match mime {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PatchType::Merge => "merge",
            PatchType::Json => "json",
            PatchType::Strategic => "strategic",
            PatchType::Apply => "apply",
        }
    }
}

/// Where a request points: a type, the version it was addressed with, and the namespace in
/// the path (`None` for cluster-scoped types and all-namespace collections).
pub struct Target {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
}

impl Target {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        self.rt.subject(name)
    }

    pub fn external(&self, stored: &Value) -> Value {
        to_external(&self.rt, &self.version, stored)
    }

    fn tracks_generation(&self) -> bool {
        self.rt.custom || self.rt.special == Special::Crd
    }
}

/// Request options that change how a write is done.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    /// `fieldValidation=Strict`: unknown fields are an error instead of a warning.
    pub strict: bool,
    pub force: bool,
}

/// A successful write: HTTP code, body, and `Warning` header texts.
#[derive(Debug)]
pub struct Written {
    pub code: u16,
    pub body: Value,
    pub warnings: Vec<String>,
}

pub fn get(store: &Store, t: &Target, name: &str) -> Result<Value, ApiError> {
    store
        .get(&t.rt.storage, t.ns(), name)
        .map(|o| t.external(o))
        .ok_or_else(|| ApiError::not_found(&t.subject(name)))
}

/// One page of a list.
pub struct ListPage {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

fn encode_continue(rv: u64, next: &(String, String)) -> String {
    let token = json!({"rv": rv, "start": [next.0, next.1]});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let start = v["start"].as_array()?;
    Some((
        v["rv"].as_u64()?,
        (
            start.first()?.as_str()?.to_string(),
            start.get(1)?.as_str()?.to_string(),
        ),
    ))
}

/// Lists matching objects in (namespace, name) order. A continued list reports the first
/// page's resourceVersion, so a watch from it replays whatever changed meanwhile.
pub fn list(
    store: &Store,
    t: &Target,
    selector: &Selector,
    limit: Option<usize>,
    continue_token: Option<&str>,
) -> Result<ListPage, ApiError> {
    let (rv, start) = match continue_token.filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, start) = decode_continue(token)
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            if rv < store.compacted_rv() {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            (rv, Some(start))
        }
        None => (store.resource_version(), None),
    };
    let mut matching = store
        .iter_from(&t.rt.storage, t.namespace.as_deref(), start)
        .filter(|(_, o)| selector.matches(o));
    let mut items = Vec::new();
    let limit = limit.filter(|l| *l > 0);
    for (_, o) in matching.by_ref() {
        items.push(t.external(o));
        if limit.is_some_and(|l| items.len() >= l) {
            break;
        }
    }
    let mut continue_out = None;
    let mut remaining = None;
    if limit.is_some() {
        let rest: Vec<(&(String, String), &Value)> = matching.collect();
        if let Some((key, _)) = rest.first() {
            continue_out = Some(encode_continue(rv, key));
            remaining = Some(rest.len());
        }
    }
    Ok(ListPage {
        items,
        resource_version: rv,
        continue_token: continue_out,
        remaining,
    })
}

fn check_body_type(t: &Target, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    if !matches!(body.get("metadata"), None | Some(Value::Object(_))) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    let expected = t.rt.api_version(&t.version);
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
        if av != expected {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({expected})"
            )));
        }
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != t.rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                t.rt.kind
            )));
        }
    }
    if t.rt.namespaced {
        if let Some(ns) = body["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            if Some(ns) != t.namespace.as_deref() {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    }
    Ok(())
}

fn check_namespace_open(store: &Store, t: &Target, name: &str) -> Result<(), ApiError> {
    if !t.rt.namespaced {
        return Ok(());
    }
    let ns = t.ns();
    match store.get(NAMESPACE_STORAGE, "", ns) {
        None => Err(ApiError::not_found(&Subject {
            group: "",
            resource: "namespaces",
            kind: "Namespace",
            name: ns,
        })),
        Some(n) if is_deleting(n) => Err(ApiError::forbidden(format!(
            "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            t.subject(name).qualified_resource()
        ))
        .with_details(json!({"name": name, "group": t.rt.group, "kind": t.rt.plural}))),
        Some(_) => Ok(()),
    }
}

fn check_crd_open(store: &Store, t: &Target) -> Result<(), ApiError> {
    if !t.rt.custom {
        return Ok(());
    }
    let crd_name = format!("{}.{}", t.rt.plural, t.rt.group);
    if store
        .get(CRD_STORAGE, "", &crd_name)
        .is_some_and(is_deleting)
    {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating",
        ));
    }
    Ok(())
}

/// Everything but metadata and status: what `metadata.generation` tracks.
fn spec_part(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(m) = v.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata", "status"] {
            m.remove(key);
        }
    }
    v
}

fn without_managed_fields(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    v
}

fn client_metadata(from: &Value, into: &mut Map<String, Value>) {
    for key in meta::CLIENT_FIELDS {
        into.remove(*key);
        if let Some(v) = from.get(*key).filter(|v| !v.is_null()) {
            into.insert((*key).into(), v.clone());
        }
    }
}

fn secret_fields(object: &mut Value, creating: bool) {
    if let Some(Value::Object(string_data)) =
        object.as_object_mut().and_then(|m| m.remove("stringData"))
    {
        let data = object
            .as_object_mut()
            .expect("checked object")
            .entry("data")
            .or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    if creating && object["type"].is_null() {
        object["type"] = json!("Opaque");
    }
}

/// Builds the object to store from a candidate (create: `old == None`), checks it, and
/// stores it unless nothing changed or this is a dry run.
fn finish_write(
    store: &mut Store,
    t: &Target,
    old: Option<&Value>,
    candidate: Value,
    sub: Sub,
    opts: &WriteOptions,
    managed_fields: Option<Value>,
) -> Result<Written, ApiError> {
    let rt = t.rt.clone();
    let stamp = now();
    let mut new = match old {
        None => {
            let mut object = candidate;
            let given = object["metadata"].clone();
            let mut m = Map::new();
            m.insert("name".into(), given["name"].clone());
            if let Some(g) = given.get("generateName").filter(|g| g.is_string()) {
                m.insert("generateName".into(), g.clone());
            }
            if rt.namespaced {
                m.insert("namespace".into(), json!(t.ns()));
            }
            m.insert("uid".into(), json!(store.new_uid()));
            if t.tracks_generation() {
                m.insert("generation".into(), json!(1));
            }
            m.insert("creationTimestamp".into(), json!(stamp));
            client_metadata(&given, &mut m);
            object["metadata"] = Value::Object(m);
            if rt.custom && rt.status_subresource {
                if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
            }
            object
        }
        Some(old) => match sub {
            Sub::Status => {
                let mut object = old.clone();
                match candidate.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        if let Some(map) = object.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                object
            }
            Sub::Main => {
                let mut object = candidate;
                let mut m = old["metadata"].as_object().cloned().unwrap_or_default();
                client_metadata(&object["metadata"], &mut m);
                object["metadata"] = Value::Object(m);
                if rt.status_subresource {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                        if let Some(status) = old.get("status") {
                            map.insert("status".into(), status.clone());
                        }
                    }
                }
                object
            }
        },
    };
    if let Some(mf) = managed_fields {
        new["metadata"]["managedFields"] = mf;
    }
    let mut causes = meta::validate(&new["metadata"], &rt);
    if let Some(old) = old.filter(|o| is_deleting(o)) {
        let before = finalizers(old);
        let added: Vec<String> = finalizers(&new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            causes.push(Cause::forbidden(
                "metadata.finalizers",
                &format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
            ));
        }
    }
    let mut warnings = Vec::new();
    match rt.special {
        Special::Secret => secret_fields(&mut new, old.is_none()),
        Special::Namespace => {
            let name = name_of(&new).to_string();
            if !new["metadata"]["labels"].is_object() {
                new["metadata"]["labels"] = json!({});
            }
            new["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            if old.is_none() {
                new["status"] = json!({"phase": "Active"});
            }
        }
        Special::Crd => {
            if let Err(crd_causes) = parse_crd(&new) {
                causes.extend(crd_causes);
            }
            let since = old
                .and_then(|o| o["status"]["conditions"][0]["lastTransitionTime"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| stamp.clone());
            new["status"] = crd_status(&new, &since);
        }
        Special::None => {}
    }
    if rt.custom {
        if let Some(schema) = rt.version(&t.version).and_then(|v| v.schema.clone()) {
            let pruned = schema.normalize(&mut new);
            if opts.strict && !pruned.is_empty() {
                let list: Vec<String> = pruned
                    .iter()
                    .map(|p| format!("unknown field {p:?}"))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            warnings.extend(pruned.iter().map(|p| format!("unknown field {p:?}")));
            if causes.is_empty() {
                let old_for_rules = old.map(|o| {
                    let mut o = o.clone();
                    o["apiVersion"] = new["apiVersion"].clone();
                    o
                });
                causes.extend(schema.validate(&new, old_for_rules.as_ref()));
            }
        }
    }
    let name = name_of(&new).to_string();
    if !causes.is_empty() {
        return Err(ApiError::invalid(&t.subject(&name), causes));
    }
    if let Some(old) = old {
        if t.tracks_generation() && spec_part(&new) != spec_part(old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(generation + 1);
        }
    }
    let new = ordered(new);
    let storage = rt.storage.clone();
    let ns = t.ns().to_string();
    let Some(old) = old else {
        if store.get(&storage, &ns, &name).is_some() {
            return Err(ApiError::already_exists(&t.subject(&name)));
        }
        if opts.dry_run {
            return Ok(Written {
                code: 201,
                body: t.external(&new),
                warnings,
            });
        }
        let stored = store.put(&storage, &ns, &name, new);
        if rt.special == Special::Crd {
            store.rebuild_registry();
        }
        return Ok(Written {
            code: 201,
            body: t.external(&stored),
            warnings,
        });
    };
    if without_managed_fields(&new) == without_managed_fields(old) {
        return Ok(Written {
            code: 200,
            body: t.external(old),
            warnings,
        });
    }
    if opts.dry_run {
        return Ok(Written {
            code: 200,
            body: t.external(&new),
            warnings,
        });
    }
    if is_deleting(&new) && finalizers(&new).is_empty() {
        let removed = remove_object(store, &rt, &ns, &name).unwrap_or(new);
        return Ok(Written {
            code: 200,
            body: t.external(&removed),
            warnings,
        });
    }
    let stored = store.put(&storage, &ns, &name, new);
    if rt.special == Special::Crd {
        store.rebuild_registry();
    }
    Ok(Written {
        code: 200,
        body: t.external(&stored),
        warnings,
    })
}

pub fn create(
    store: &mut Store,
    t: &Target,
    mut body: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    check_body_type(t, &body)?;
    let mut name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let generate = body["metadata"]["generateName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() && !generate.is_empty() {
        name = format!("{generate}{}", store.random_suffix());
        body["metadata"]["name"] = json!(name);
    }
    check_namespace_open(store, t, &name)?;
    check_crd_open(store, t)?;
    let candidate = to_internal(&t.rt, &t.version, body);
    let managed = candidate["metadata"].get("managedFields").cloned();
    finish_write(store, t, None, candidate, Sub::Main, opts, managed)
}

fn check_resource_version(
    t: &Target,
    name: &str,
    given: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    match given.as_str().filter(|s| !s.is_empty()) {
        Some(rv) if Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            Err(ApiError::conflict(&t.subject(name)))
        }
        _ => Ok(()),
    }
}

pub fn update(
    store: &mut Store,
    t: &Target,
    name: &str,
    sub: Sub,
    mut body: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    check_body_type(t, &body)?;
    match body["metadata"]["name"].as_str() {
        None | Some("") => body["metadata"]["name"] = json!(name),
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        Some(_) => {}
    }
    let old = store
        .get(&t.rt.storage, t.ns(), name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.subject(name)))?;
    let given_rv = body["metadata"]["resourceVersion"].clone();
    if given_rv.as_str().is_none_or(str::is_empty) && t.rt.custom {
        return Err(ApiError::invalid(
            &t.subject(name),
            vec![Cause::new(
                "metadata.resourceVersion",
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update",
            )],
        ));
    }
    check_resource_version(t, name, &given_rv, &old)?;
    let candidate = to_internal(&t.rt, &t.version, body);
    finish_write(store, t, Some(&old), candidate, sub, opts, None)
}

/// Drops strategic-merge directives (`$patch`, `$setElementOrder/...`, `$retainKeys`, ...),
/// which leaves a plain merge patch.
fn strip_directives(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|k, _| !k.starts_with('$'));
        for v in map.values_mut() {
            strip_directives(v);
        }
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

pub fn patch(
    store: &mut Store,
    t: &Target,
    name: &str,
    sub: Sub,
    kind: PatchType,
    body: &[u8],
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    if kind == PatchType::Strategic && t.rt.custom {
        return Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    if kind == PatchType::Apply {
        return apply_patch(store, t, name, sub, body, opts);
    }
    let old = store
        .get(&t.rt.storage, t.ns(), name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.subject(name)))?;
    let mut doc = t.external(&old);
    let patch = parse_json(body)?;
    match kind {
        PatchType::Merge | PatchType::Strategic => {
            let mut patch = patch;
            if kind == PatchType::Strategic {
                strip_directives(&mut patch);
            }
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &patch);
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Apply => unreachable!("handled above"),
    }
    check_body_type(t, &doc)?;
    check_resource_version(t, name, &doc["metadata"]["resourceVersion"], &old)?;
    if name_of(&doc) != name {
        return Err(ApiError::invalid(
            &t.subject(name),
            vec![Cause::invalid(
                "metadata.name",
                &doc["metadata"]["name"],
                "field is immutable",
            )],
        ));
    }
    let candidate = to_internal(&t.rt, &t.version, doc);
    finish_write(store, t, Some(&old), candidate, sub, opts, None)
}

fn apply_patch(
    store: &mut Store,
    t: &Target,
    name: &str,
    sub: Sub,
    body: &[u8],
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let manager = opts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                &Subject {
                    group: "meta.k8s.io",
                    resource: "patchoptions",
                    kind: "PatchOptions",
                    name: "",
                },
                vec![Cause::required(
                    "fieldManager",
                    "is required for apply patch",
                )],
            )
        })?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the apply configuration is not UTF-8"))?;
    let mut applied: Value = serde_yaml::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    check_body_type(t, &applied)?;
    if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
        return Err(ApiError::bad_request(
            "apply configuration must set apiVersion and kind",
        ));
    }
    // Like a real server, an apply configuration may leave the name to the URL.
    match applied["metadata"]["name"].as_str() {
        None | Some("") => applied["metadata"]["name"] = json!(name),
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    let scope = match sub {
        Sub::Main => Scope::Main {
            status_is_subresource: t.rt.status_subresource,
        },
        Sub::Status => Scope::Status,
    };
    let api_version = t.rt.api_version(&t.version);
    let stamp = now();
    let old = store.get(&t.rt.storage, t.ns(), name).cloned();
    let Some(old) = old else {
        if sub == Sub::Status {
            return Err(ApiError::not_found(&t.subject(name)));
        }
        let (mut merged, managed) = apply::apply(
            None,
            &applied,
            &manager,
            opts.force,
            scope,
            &api_version,
            &stamp,
        )
        .map_err(|c| conflict_error(t, name, &c))?;
        merged["apiVersion"] = json!(api_version);
        merged["kind"] = json!(t.rt.kind);
        merged["metadata"]["name"] = json!(name);
        check_namespace_open(store, t, name)?;
        check_crd_open(store, t)?;
        let candidate = to_internal(&t.rt, &t.version, merged);
        return finish_write(store, t, None, candidate, Sub::Main, opts, Some(managed));
    };
    check_resource_version(t, name, &applied["metadata"]["resourceVersion"], &old)?;
    let current = t.external(&old);
    let (merged, managed) = apply::apply(
        Some(&current),
        &applied,
        &manager,
        opts.force,
        scope,
        &api_version,
        &stamp,
    )
    .map_err(|c| conflict_error(t, name, &c))?;
    let candidate = to_internal(&t.rt, &t.version, merged);
    finish_write(store, t, Some(&old), candidate, sub, opts, Some(managed))
}

fn conflict_error(t: &Target, name: &str, conflicts: &apply::Conflicts) -> ApiError {
    let mut err = ApiError::new(409, "Conflict", conflicts.message());
    let mut details = json!({"name": name, "kind": t.rt.plural});
    if !t.rt.group.is_empty() {
        details["group"] = json!(t.rt.group);
    }
    details["causes"] = conflicts.causes();
    err.details = Some(details);
    err
}

/// Removes a stored object for good and finishes whatever waited for it.
fn remove_object(store: &mut Store, rt: &ResourceType, ns: &str, name: &str) -> Option<Value> {
    let removed = store.remove(&rt.storage, ns, name)?;
    if rt.special == Special::Crd {
        store.rebuild_registry();
    }
    after_removal(store, &rt.storage, ns);
    Some(removed)
}

/// A namespace or CRD being deleted goes away once nothing it holds is left.
fn after_removal(store: &mut Store, storage: &str, ns: &str) {
    if !ns.is_empty() {
        let done = store
            .get(NAMESPACE_STORAGE, "", ns)
            .is_some_and(|n| is_deleting(n) && finalizers(n).is_empty())
            && store.count_in_namespace(ns) == 0;
        if done {
            if let Some(rt) = store.registry.by_storage(NAMESPACE_STORAGE) {
                remove_object(store, &rt, "", ns);
            }
        }
    }
    if let Some(rt) = store.registry.by_storage(storage).filter(|rt| rt.custom) {
        let crd_name = format!("{}.{}", rt.plural, rt.group);
        let done = store
            .get(CRD_STORAGE, "", &crd_name)
            .is_some_and(|c| is_deleting(c) && finalizers(c).is_empty())
            && store.iter_from(storage, None, None).next().is_none();
        if done {
            if let Some(crd_rt) = store.registry.by_storage(CRD_STORAGE) {
                remove_object(store, &crd_rt, "", &crd_name);
            }
        }
    }
}

/// What a delete did.
enum Deletion {
    /// Removed at once: the last stored state.
    Removed(Value),
    /// Marked with deletionTimestamp, waiting for finalizers (or content).
    Pending(Value),
}

/// Deletes one stored object: with finalizers (or content, for namespaces and CRDs) it is
/// only marked; otherwise it is removed.
fn delete_stored(store: &mut Store, rt: &ResourceType, ns: &str, name: &str) -> Option<Deletion> {
    let old = store.get(&rt.storage, ns, name)?.clone();
    if is_deleting(&old) {
        return Some(Deletion::Pending(old));
    }
    let holds_content = match rt.special {
        Special::Namespace => store.count_in_namespace(name) > 0,
        Special::Crd => {
            let (group, plural) = (
                old["spec"]["group"].as_str().unwrap_or_default(),
                old["spec"]["names"]["plural"].as_str().unwrap_or_default(),
            );
            store
                .iter_from(&ResourceType::storage_key(group, plural), None, None)
                .next()
                .is_some()
        }
        _ => false,
    };
    if finalizers(&old).is_empty() && !holds_content {
        return remove_object(store, rt, ns, name).map(Deletion::Removed);
    }
    let mut marked = old.clone();
    marked["metadata"]["deletionTimestamp"] = json!(now());
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    if let Some(g) = old["metadata"]["generation"].as_i64() {
        marked["metadata"]["generation"] = json!(g + 1);
    }
    if rt.special == Special::Namespace {
        if !marked["status"].is_object() {
            marked["status"] = json!({});
        }
        marked["status"]["phase"] = json!("Terminating");
    }
    let marked = store.put(&rt.storage, ns, name, ordered(marked));
    match rt.special {
        // Like the namespace controller, content is deleted a little later, not by this
        // request: clients deleting a namespace and its objects together still find them.
        Special::Namespace => store.schedule_namespace_cleanup(name),
        Special::Crd => {
            let storage = ResourceType::storage_key(
                old["spec"]["group"].as_str().unwrap_or_default(),
                old["spec"]["names"]["plural"].as_str().unwrap_or_default(),
            );
            if let Some(cr_rt) = store.registry.by_storage(&storage) {
                let keys: Vec<(String, String)> = store
                    .iter_from(&storage, None, None)
                    .map(|(k, _)| k.clone())
                    .collect();
                for (cr_ns, cr_name) in keys {
                    delete_stored(store, &cr_rt, &cr_ns, &cr_name);
                }
            }
        }
        _ => {}
    }
    after_removal(store, &rt.storage, ns);
    // The mark may have finished at once (an emptied namespace or CRD).
    Some(match store.get(&rt.storage, ns, name) {
        Some(current) => Deletion::Pending(current.clone()),
        None => Deletion::Pending(marked),
    })
}

pub fn delete(
    store: &mut Store,
    t: &Target,
    name: &str,
    options: &Value,
    dry_run: bool,
) -> Result<Written, ApiError> {
    let old = store
        .get(&t.rt.storage, t.ns(), name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.subject(name)))?;
    let pre = &options["preconditions"];
    if let Some(uid) = pre["uid"].as_str() {
        if Some(uid) != old["metadata"]["uid"].as_str() {
            return Err(ApiError::conflict_with(
                &t.subject(name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    if let Some(rv) = pre["resourceVersion"].as_str() {
        if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
            return Err(ApiError::conflict_with(
                &t.subject(name),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    if t.rt.special == Special::Namespace
        && matches!(name, "default" | "kube-system" | "kube-public")
    {
        return Err(ApiError::forbidden(format!(
            "namespaces {name:?} is forbidden: this namespace may not be deleted"
        )));
    }
    if dry_run {
        return Ok(Written {
            code: 200,
            body: t.external(&old),
            warnings: Vec::new(),
        });
    }
    let uid = old["metadata"]["uid"].as_str().map(str::to_string);
    match delete_stored(store, &t.rt, t.ns(), name) {
        Some(Deletion::Removed(_)) | None => Ok(Written {
            code: 200,
            body: success_status(&t.subject(name), uid.as_deref()),
            warnings: Vec::new(),
        }),
        Some(Deletion::Pending(current)) => Ok(Written {
            code: 200,
            body: t.external(&current),
            warnings: Vec::new(),
        }),
    }
}

pub fn delete_collection(
    store: &mut Store,
    t: &Target,
    selector: &Selector,
    dry_run: bool,
) -> Result<Written, ApiError> {
    let keys: Vec<(String, String)> = store
        .iter_from(&t.rt.storage, t.namespace.as_deref(), None)
        .filter(|(_, o)| selector.matches(o))
        .map(|(k, _)| k.clone())
        .collect();
    let mut items = Vec::new();
    for (ns, name) in keys {
        if dry_run {
            if let Some(o) = store.get(&t.rt.storage, &ns, &name) {
                items.push(t.external(o));
            }
            continue;
        }
        if t.rt.special == Special::Namespace
            && matches!(name.as_str(), "default" | "kube-system" | "kube-public")
        {
            continue;
        }
        match delete_stored(store, &t.rt, &ns, &name) {
            Some(Deletion::Removed(o)) | Some(Deletion::Pending(o)) => items.push(t.external(&o)),
            None => {}
        }
    }
    Ok(Written {
        code: 200,
        body: json!({
            "kind": t.rt.list_kind,
            "apiVersion": t.rt.api_version(&t.version),
            "metadata": {"resourceVersion": store.resource_version().to_string()},
            "items": items,
        }),
        warnings: Vec::new(),
    })
}

/// Creates an object on behalf of the server itself (start-up namespaces and CRDs).
pub fn ensure(
    store: &mut Store,
    group: &str,
    version: &str,
    plural: &str,
    object: Value,
) -> Result<(), ApiError> {
    let rt = store
        .registry
        .find(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    let name = name_of(&object).to_string();
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
    let t = Target {
        rt,
        version: version.to_string(),
        namespace,
    };
    let opts = WriteOptions::default();
    match store.get(&t.rt.storage, t.ns(), &name).cloned() {
        None => create(store, &t, object, &opts).map(|_| ()),
        Some(old) => {
            let mut body = object;
            body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            update(store, &t, &name, Sub::Main, body, &opts).map(|_| ())
        }
    }
}

/// Deletes the content of namespaces whose cleanup is due (the namespace controller's job).
pub fn clean_namespaces(store: &mut Store) {
    for ns in store.due_namespace_cleanups() {
        for (storage, child) in store.namespaced_keys(&ns) {
            if let Some(child_rt) = store.registry.by_storage(&storage) {
                delete_stored(store, &child_rt, &ns, &child);
            }
        }
        after_removal(store, "", &ns);
    }
}
