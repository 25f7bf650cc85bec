//! The CRDs in `crds/`: up to date with the Rust types, structural (a real apiserver accepts
//! them), and carrying what the README documents (names, patterns, enums, defaults, CEL rules,
//! printer columns).
//!
//! Regenerate the committed files with `SHADOWSYNC_UPDATE_CRDS=1 cargo test --test crds`;
//! `cargo run -- crds` prints both.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use shadowsync::api::validate::{
    parse_duration, validate_retained_message, validate_thing_shadow, ShadowLimits,
};
use shadowsync::api::{
    crd_files, crd_yaml_retained_message, crd_yaml_thing_shadow, crds_yaml, retained_message_crd,
    thing_shadow_crd, RetainedMessage, RetainedMessageSpec, ThingShadow, ThingShadowSpec,
};

const REGENERATE: &str = "regenerate with `SHADOWSYNC_UPDATE_CRDS=1 cargo test --test crds` \
                          (`cargo run -- crds` prints both CRDs)";

// ---------------------------------------------------------------- committed files

#[test]
fn committed_crds_match_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var("SHADOWSYNC_UPDATE_CRDS").as_deref() == Ok("1");
    let mut stale = Vec::new();
    for (relative, generated) in crd_files() {
        let path = root.join(relative);
        if update {
            std::fs::create_dir_all(path.parent().expect("crds/ has a parent"))
                .expect("create crds/");
            std::fs::write(&path, &generated).expect("write the CRD file");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            let first_difference = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
            stale.push(format!(
                "{relative} differs from the generated CRD (first at line {})",
                first_difference + 1
            ));
        }
    }
    assert!(stale.is_empty(), "{}; {REGENERATE}", stale.join("; "));
}

#[test]
fn crds_yaml_holds_both_documents_thing_shadow_first() {
    let all = crds_yaml();
    assert_eq!(
        all,
        format!(
            "{}---\n{}",
            crd_yaml_thing_shadow(),
            crd_yaml_retained_message()
        )
    );
    let documents: Vec<CustomResourceDefinition> = all
        .split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).expect("each document is a CRD"))
        .collect();
    let names: Vec<&str> = documents
        .iter()
        .map(|crd| crd.metadata.name.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "thingshadows.iot.shadowsync.dev",
            "retainedmessages.iot.shadowsync.dev"
        ]
    );
    // The YAML says exactly what the typed CRDs say.
    assert_eq!(documents[0], thing_shadow_crd());
    assert_eq!(documents[1], retained_message_crd());
}

// ---------------------------------------------------------------- structural schema

fn schema(crd: &CustomResourceDefinition) -> Value {
    assert_eq!(crd.spec.versions.len(), 1);
    let props = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("an openAPIV3Schema");
    serde_json::to_value(props).expect("schema as JSON")
}

fn both() -> [(&'static str, Value); 2] {
    [
        ("ThingShadow", schema(&thing_shadow_crd())),
        ("RetainedMessage", schema(&retained_message_crd())),
    ]
}

/// Keys of a JSONSchemaProps node that Kubernetes knows.
const KNOWN_KEYS: &[&str] = &[
    "description",
    "type",
    "format",
    "title",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "properties",
    "additionalProperties",
    "nullable",
    "example",
    "externalDocs",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

/// Formats the apiserver validates; any other is at best ignored.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "duration",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "password",
];

/// Every violation of the structural-schema rules (and of a few apiserver checks) under
/// `node`, as `path: problem`.
fn structural_violations(path: &str, node: &Value, in_junctor: bool, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: not a schema object"));
        return;
    };
    let has = |key: &str| obj.contains_key(key);
    let flag = |key: &str| obj.get(key) == Some(&Value::Bool(true));

    for key in obj.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            out.push(format!("{path}: unknown keyword {key}"));
        }
    }
    if has("$ref") || has("definitions") || has("$schema") {
        out.push(format!("{path}: $ref/definitions are not allowed"));
    }
    if in_junctor {
        for key in [
            "type",
            "default",
            "nullable",
            "description",
            "additionalProperties",
        ] {
            if has(key) {
                out.push(format!("{path}: {key} inside allOf/anyOf/oneOf/not"));
            }
        }
    } else {
        let typed = obj
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
        if obj.get("type").is_some_and(|t| !t.is_string()) {
            out.push(format!("{path}: type must be a single string"));
        }
        if !typed
            && !flag("x-kubernetes-preserve-unknown-fields")
            && !flag("x-kubernetes-int-or-string")
        {
            out.push(format!("{path}: no type"));
        }
        if has("nullable") && !typed {
            out.push(format!("{path}: nullable without a type"));
        }
    }
    if has("properties") && has("additionalProperties") {
        out.push(format!(
            "{path}: properties together with additionalProperties"
        ));
    }
    if obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push(format!(
            "{path}: x-kubernetes-preserve-unknown-fields must be true"
        ));
    }
    if has("uniqueItems") {
        out.push(format!("{path}: uniqueItems is not allowed"));
    }
    if let Some(format) = obj.get("format").and_then(Value::as_str) {
        if !KNOWN_FORMATS.contains(&format) {
            out.push(format!("{path}: unknown format {format}"));
        }
    }
    if obj.get("type").and_then(Value::as_str) == Some("array") && !has("items") {
        out.push(format!("{path}: array without items"));
    }
    if let Some(items) = obj.get("items") {
        if !items.is_object() {
            out.push(format!("{path}: items must be one schema"));
        }
    }
    if let Some(Value::Array(rules)) = obj.get("x-kubernetes-validations") {
        for rule in rules {
            let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
            if text.is_empty() {
                out.push(format!(
                    "{path}: x-kubernetes-validations entry without a rule"
                ));
            }
            for field in cel_field_references(text) {
                if !cel_visible(obj.get("properties").and_then(|p| p.get(&field))) {
                    out.push(format!(
                        "{path}: rule {text:?} uses {field}, which CEL cannot see"
                    ));
                }
            }
        }
    }
    if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys: Vec<&str> = obj
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let required: Vec<&str> = obj
            .get("items")
            .and_then(|i| i.get("required"))
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if keys.is_empty() || keys.iter().any(|k| !required.contains(k)) {
            out.push(format!(
                "{path}: list-type map needs required list-map-keys"
            ));
        }
    }
    if let Some(default) = obj.get("default") {
        if let Some(problem) = default_problem(obj, default) {
            out.push(format!("{path}: default {default}: {problem}"));
        }
    }

    if let Some(Value::Object(properties)) = obj.get("properties") {
        for (name, child) in properties {
            structural_violations(&format!("{path}.{name}"), child, in_junctor, out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(&format!("{path}[]"), items, in_junctor, out);
    }
    if let Some(additional) = obj.get("additionalProperties") {
        if additional.is_object() {
            structural_violations(&format!("{path}{{}}"), additional, in_junctor, out);
        }
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = obj.get(junctor) {
            for (i, branch) in branches.iter().enumerate() {
                structural_violations(&format!("{path}/{junctor}[{i}]"), branch, true, out);
            }
        }
    }
    if let Some(not) = obj.get("not") {
        structural_violations(&format!("{path}/not"), not, true, out);
    }
}

/// Fields a CEL rule reads from `self` or `oldSelf` directly (`has(self.a)`, `self.a == 1`).
fn cel_field_references(rule: &str) -> Vec<String> {
    let re =
        regex_lite::Regex::new(r"\b(?:self|oldSelf)\.([A-Za-z_][A-Za-z0-9_]*)").expect("regex");
    re.captures_iter(rule)
        .map(|c| c[1].to_string())
        .filter(|name| {
            !["matches", "size", "startsWith", "endsWith", "contains"].contains(&name.as_str())
        })
        .collect()
}

/// Whether the apiserver exposes a property to CEL: it needs a type (a node that only
/// preserves unknown fields is hidden), or to be int-or-string.
fn cel_visible(node: Option<&Value>) -> bool {
    node.is_some_and(|n| {
        n.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
            || n.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
    })
}

/// Why a `default` would not pass its own node's validation, if it would not.
fn default_problem(node: &serde_json::Map<String, Value>, default: &Value) -> Option<String> {
    let type_ok = match node.get("type").and_then(Value::as_str) {
        Some("string") => default.is_string(),
        Some("integer") => default.is_i64() || default.is_u64(),
        Some("number") => default.is_number(),
        Some("boolean") => default.is_boolean(),
        Some("array") => default.is_array(),
        Some("object") => default.is_object(),
        _ => true,
    };
    if !type_ok {
        return Some("wrong type".into());
    }
    if let Some(Value::Array(allowed)) = node.get("enum") {
        if !allowed.contains(default) {
            return Some("not in enum".into());
        }
    }
    if let (Some(pattern), Some(text)) = (
        node.get("pattern").and_then(Value::as_str),
        default.as_str(),
    ) {
        let re = regex_lite::Regex::new(pattern).expect("pattern compiles");
        if !re.is_match(text) {
            return Some("does not match pattern".into());
        }
    }
    if let Some(n) = default.as_f64() {
        if node
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|min| n < min)
            || node
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|max| n > max)
        {
            return Some("out of bounds".into());
        }
    }
    None
}

#[test]
fn schemas_are_structural() {
    for (kind, root) in both() {
        let mut problems = Vec::new();
        structural_violations(kind, &root, false, &mut problems);
        assert!(problems.is_empty(), "{kind}:\n{}", problems.join("\n"));
        assert_eq!(root["type"], "object");
        assert!(root
            .get("properties")
            .and_then(|p| p.get("metadata"))
            .is_none());
        assert_eq!(root["required"], json!(["spec"]));
    }
}

#[test]
fn structural_check_catches_violations() {
    // The walker must be able to fail: a few broken schemas.
    let broken = [
        json!({"type": "object", "properties": {"a": {"description": "untyped"}}}),
        json!({"type": "object", "properties": {"a": {"type": "string", "nullable": true, "$ref": "#/x"}}}),
        json!({"type": "object", "properties": {"a": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}}}),
        json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}], "x-kubernetes-int-or-string": true}}}),
        json!({"type": "object", "properties": {"a": {"type": "integer", "format": "uint64"}}}),
        json!({"type": "object", "properties": {"a": {"type": "string", "enum": ["A"], "default": "B"}}}),
        json!({"type": "object", "properties": {"a": {"nullable": true, "x-kubernetes-preserve-unknown-fields": true}}}),
        // CEL cannot see an untyped field: the apiserver refuses to compile the rule.
        json!({
            "type": "object",
            "properties": {"json": {"x-kubernetes-preserve-unknown-fields": true}},
            "x-kubernetes-validations": [{"rule": "has(self.json)"}]
        }),
        json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "self.b == oldSelf.b"}]
        }),
    ];
    for schema in broken {
        let mut problems = Vec::new();
        structural_violations("t", &schema, false, &mut problems);
        assert!(!problems.is_empty(), "not caught: {schema}");
    }
}

/// kube converts schemars' output to `JSONSchemaProps` through serde, which silently drops
/// any keyword the type does not have (`const`, `$ref`, ...). Generate the schema as kube does
/// and check that the conversion loses nothing.
#[test]
fn schema_conversion_drops_nothing() {
    use kube::core::schema::{OptionalEnum, OptionalIntOrString, StructuralSchemaRewriter};
    use schemars::generate::SchemaSettings;
    use schemars::transform::AddNullable;

    fn generated<T: schemars::JsonSchema>() -> Value {
        let generator = SchemaSettings::openapi3()
            .with(|s| {
                s.inline_subschemas = true;
                s.meta_schema = None;
            })
            .with_transform(AddNullable::default())
            .with_transform(StructuralSchemaRewriter)
            .with_transform(OptionalEnum)
            .with_transform(OptionalIntOrString)
            .into_generator();
        serde_json::to_value(generator.into_root_schema_for::<T>()).expect("schema")
    }
    /// Numbers compared as f64: `JSONSchemaProps` holds bounds as floats.
    fn normalized(value: Value) -> Value {
        match value {
            Value::Number(n) => json!(n.as_f64()),
            Value::Array(items) => Value::Array(items.into_iter().map(normalized).collect()),
            Value::Object(map) => map.into_iter().map(|(k, v)| (k, normalized(v))).collect(),
            other => other,
        }
    }
    for (kind, raw) in [
        ("ThingShadow", generated::<ThingShadow>()),
        ("RetainedMessage", generated::<RetainedMessage>()),
    ] {
        let props: JSONSchemaProps = serde_json::from_value(raw.clone()).expect("JSONSchemaProps");
        let back = serde_json::to_value(props).expect("JSON");
        assert_eq!(normalized(raw), normalized(back), "{kind}");
    }
}

// ---------------------------------------------------------------- what the README names

fn node<'a>(root: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(root, |node, name| {
        node.get("properties")
            .and_then(|p| p.get(name))
            .unwrap_or_else(|| panic!("no property {path} (at {name})"))
    })
}

fn rules(node: &Value) -> Vec<&str> {
    node.get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().filter_map(|r| r["rule"].as_str()).collect())
        .unwrap_or_default()
}

fn required(node: &Value) -> Vec<&str> {
    node.get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn assert_free_form_object(node: &Value, what: &str) {
    assert_eq!(node["type"], "object", "{what}");
    assert_eq!(node["x-kubernetes-preserve-unknown-fields"], true, "{what}");
    assert!(node.get("properties").is_none(), "{what}");
}

#[test]
fn no_nullable_anywhere() {
    for (kind, root) in both() {
        let text = root.to_string();
        assert!(!text.contains("\"nullable\""), "{kind} has nullable");
    }
}

#[test]
fn every_property_has_a_description() {
    fn walk(path: &str, node: &Value, out: &mut Vec<String>) {
        if let Some(Value::Object(properties)) = node.get("properties") {
            for (name, child) in properties {
                let child_path = format!("{path}.{name}");
                if child
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    out.push(child_path.clone());
                }
                walk(&child_path, child, out);
            }
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, out);
        }
    }
    for (kind, root) in both() {
        let mut missing = Vec::new();
        walk(kind, &root, &mut missing);
        assert!(missing.is_empty(), "no description: {missing:?}");
    }
}

#[test]
fn thing_shadow_spec_schema() {
    let root = schema(&thing_shadow_crd());
    let spec = node(&root, "spec");
    assert_eq!(required(spec), ["thingName"]);

    let thing = node(&root, "spec.thingName");
    assert_eq!(thing["type"], "string");
    assert_eq!(thing["pattern"], "^[a-zA-Z0-9:_-]+$");
    assert_eq!(thing["minLength"], 1);
    assert_eq!(thing["maxLength"], 128);
    assert_eq!(rules(thing), ["self == oldSelf"]);

    let shadow = node(&root, "spec.shadowName");
    assert_eq!(shadow["type"], "string");
    assert_eq!(shadow["pattern"], "^[$a-zA-Z0-9:_-]+$");
    assert_eq!(shadow["minLength"], 1);
    assert_eq!(shadow["maxLength"], 64);
    assert_eq!(
        rules(shadow),
        [
            "self == oldSelf",
            "self != 'AWSManagedGreengrassV2Deployment'"
        ]
    );
    // Adding or removing shadowName switches target: refused on the spec object.
    assert_eq!(
        rules(spec),
        ["has(self.shadowName) == has(oldSelf.shadowName)"]
    );

    assert_free_form_object(node(&root, "spec.desired"), "spec.desired");

    for (field, values, default) in [
        ("managementPolicy", json!(["Manage", "Observe"]), "Manage"),
        (
            "deletionPolicy",
            json!(["ClearDesired", "Delete", "Retain"]),
            "ClearDesired",
        ),
        (
            "conflictPolicy",
            json!(["Overwrite", "Preserve"]),
            "Overwrite",
        ),
    ] {
        let policy = node(spec, field);
        assert_eq!(policy["type"], "string", "{field}");
        assert_eq!(policy["enum"], values, "{field}");
        assert_eq!(policy["default"], default, "{field}");
    }
    let refresh = node(spec, "refreshInterval");
    assert_eq!(refresh["type"], "string");
    assert_eq!(refresh["default"], "5m");
    assert!(refresh.get("pattern").is_some());
}

#[test]
fn thing_shadow_status_schema() {
    let root = schema(&thing_shadow_crd());
    let status = node(&root, "status");
    assert_eq!(status["type"], "object");
    assert_eq!(node(status, "observedGeneration")["type"], "integer");
    let conditions = node(status, "conditions");
    assert_eq!(conditions["type"], "array");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
        assert_eq!(
            conditions["items"]["properties"][field]["type"], "string",
            "{field}"
        );
    }
    assert_eq!(
        conditions["items"]["properties"]["observedGeneration"]["type"],
        "integer"
    );

    let mirror = node(status, "shadow");
    assert_eq!(required(mirror), ["version"]);
    assert_eq!(node(mirror, "version")["type"], "integer");
    assert_eq!(node(mirror, "version")["format"], "int64");
    for field in ["desired", "reported", "delta"] {
        assert_free_form_object(node(mirror, field), field);
    }
    assert_eq!(node(mirror, "lastReportedTime")["type"], "string");

    let managed = node(status, "managedPaths");
    assert_eq!(managed["type"], "array");
    assert_eq!(managed["items"]["type"], "string");

    let conflicts = node(status, "conflicts");
    for field in ["count", "expectedVersion", "actualVersion"] {
        assert_eq!(node(conflicts, field)["type"], "integer", "{field}");
    }
    for field in ["lastTime", "lastReason"] {
        assert_eq!(node(conflicts, field)["type"], "string", "{field}");
    }
    for field in ["lastSyncTime", "lastHandledReconcileAt"] {
        assert_eq!(node(status, field)["type"], "string", "{field}");
    }
}

#[test]
fn retained_message_spec_schema() {
    let root = schema(&retained_message_crd());
    let spec = node(&root, "spec");
    assert_eq!(required(spec), ["payload", "topic"]);

    let topic = node(spec, "topic");
    assert_eq!(topic["type"], "string");
    assert_eq!(topic["minLength"], 1);
    assert_eq!(topic["maxLength"], 256);
    assert_eq!(
        rules(topic),
        ["self == oldSelf", "!self.matches('^([^/]*/){8}')"]
    );
    let response = node(spec, "responseTopic");
    assert_eq!(response["pattern"], topic["pattern"]);
    assert_eq!(response["maxLength"], 256);
    assert_eq!(rules(response), ["!self.matches('^([^/]*/){8}')"]);

    let payload = node(spec, "payload");
    assert_eq!(payload["type"], "object");
    // Exactly one source: unknown fields are pruned first, so the count is of known ones.
    assert_eq!(payload["minProperties"], 1);
    assert_eq!(payload["maxProperties"], 1);
    assert!(payload
        .get("x-kubernetes-preserve-unknown-fields")
        .is_none());
    let json_payload = node(payload, "json");
    assert_eq!(json_payload["x-kubernetes-preserve-unknown-fields"], true);
    assert!(
        json_payload.get("type").is_none(),
        "payload.json is any JSON"
    );
    assert_eq!(node(payload, "text")["type"], "string");
    assert_eq!(node(payload, "base64")["format"], "byte");
    for key_ref in ["secretKeyRef", "configMapKeyRef"] {
        let key_ref = node(payload, key_ref);
        assert_eq!(required(key_ref), ["key", "name"]);
        assert_eq!(node(key_ref, "name")["minLength"], 1);
        assert_eq!(node(key_ref, "key")["minLength"], 1);
    }

    let qos = node(spec, "qos");
    assert_eq!(qos["type"], "integer");
    assert_eq!(qos["minimum"], 0.0);
    assert_eq!(qos["maximum"], 1.0);
    assert_eq!(qos["default"], 0);

    let expiry = node(spec, "messageExpiry");
    assert_eq!(expiry["type"], "integer");
    assert_eq!(expiry["minimum"], 1.0);
    assert_eq!(expiry["maximum"], 604800.0);

    assert_eq!(node(spec, "contentType")["type"], "string");
    assert_eq!(node(spec, "correlationData")["format"], "byte");
    let properties = node(spec, "userProperties");
    assert_eq!(properties["type"], "array");
    assert_eq!(required(&properties["items"]), ["key", "value"]);
    assert_eq!(properties["items"]["properties"]["key"]["minLength"], 1);

    for (field, values, default) in [
        ("managementPolicy", json!(["Manage", "Observe"]), "Manage"),
        ("deletionPolicy", json!(["Delete", "Retain"]), "Delete"),
        (
            "conflictPolicy",
            json!(["Overwrite", "Preserve"]),
            "Overwrite",
        ),
    ] {
        let policy = node(spec, field);
        assert_eq!(policy["enum"], values, "{field}");
        assert_eq!(policy["default"], default, "{field}");
    }
    assert_eq!(node(spec, "refreshInterval")["default"], "10m");
}

#[test]
fn retained_message_status_schema() {
    let root = schema(&retained_message_crd());
    let status = node(&root, "status");
    for field in ["observedGeneration", "payloadSize", "qos", "publishCount"] {
        assert_eq!(node(status, field)["type"], "integer", "{field}");
    }
    for field in [
        "payloadSha256",
        "lastModifiedTime",
        "lastPublishTime",
        "lastSyncTime",
    ] {
        assert_eq!(node(status, field)["type"], "string", "{field}");
    }
    assert_eq!(node(status, "conditions")["x-kubernetes-list-type"], "map");
    assert_eq!(node(status, "conflicts")["type"], "object");
}

#[test]
fn names_scope_and_subresources() {
    for (crd, kind, plural, short) in [
        (thing_shadow_crd(), "ThingShadow", "thingshadows", "tshadow"),
        (
            retained_message_crd(),
            "RetainedMessage",
            "retainedmessages",
            "retmsg",
        ),
    ] {
        assert_eq!(crd.spec.group, "iot.shadowsync.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["shadowsync".to_string()])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some(), "{kind}: status subresource");
        assert!(subresources.scale.is_none());
    }
}

fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.type_.clone(), c.json_path.clone()))
        .collect()
}

#[test]
fn printer_columns() {
    let ready = r#".status.conditions[?(@.type=="Ready")].status"#;
    let expected = |rows: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        rows.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect()
    };
    assert_eq!(
        columns(&thing_shadow_crd()),
        expected(&[
            ("Thing", "string", ".spec.thingName"),
            ("Shadow", "string", ".spec.shadowName"),
            ("Version", "integer", ".status.shadow.version"),
            ("Ready", "string", ready),
            (
                "Converged",
                "string",
                r#".status.conditions[?(@.type=="Converged")].status"#
            ),
            ("Age", "date", ".metadata.creationTimestamp"),
        ])
    );
    assert_eq!(
        columns(&retained_message_crd()),
        expected(&[
            ("Topic", "string", ".spec.topic"),
            ("QoS", "integer", ".spec.qos"),
            ("Ready", "string", ready),
            ("Age", "date", ".metadata.creationTimestamp"),
        ])
    );
}

// ---------------------------------------------------------------- schema and types agree

/// The schema's defaults are what serde fills in for a minimal manifest, so the stored object
/// and the operator's view of it agree.
#[test]
fn schema_defaults_equal_serde_defaults() {
    let shadow: ThingShadowSpec =
        serde_json::from_value(json!({"thingName": "lamp"})).expect("minimal ThingShadow");
    let message: RetainedMessageSpec =
        serde_json::from_value(json!({"topic": "t", "payload": {"text": "x"}}))
            .expect("minimal RetainedMessage");
    for (kind, root, spec) in [
        (
            "ThingShadow",
            schema(&thing_shadow_crd()),
            serde_json::to_value(&shadow).expect("JSON"),
        ),
        (
            "RetainedMessage",
            schema(&retained_message_crd()),
            serde_json::to_value(&message).expect("JSON"),
        ),
    ] {
        let properties = node(&root, "spec")["properties"]
            .as_object()
            .expect("properties");
        let mut defaulted = 0;
        for (name, prop) in properties {
            if let Some(default) = prop.get("default") {
                assert_eq!(spec.get(name), Some(default), "{kind}.spec.{name}");
                defaulted += 1;
            }
        }
        assert!(defaulted >= 4, "{kind}: {defaulted} defaults");
    }
}

#[test]
fn design_examples_deserialize_and_validate() {
    let shadow: ThingShadow = serde_yaml::from_str(
        r#"
apiVersion: iot.shadowsync.dev/v1alpha1
kind: ThingShadow
metadata: {name: kitchen-lamp, namespace: home}
spec:
  thingName: kitchen-lamp
  shadowName: config
  desired:
    power: "on"
    color: {r: 255, g: 180}
  managementPolicy: Manage
  deletionPolicy: ClearDesired
  conflictPolicy: Overwrite
  refreshInterval: 5m
"#,
    )
    .expect("ThingShadow example");
    assert_eq!(shadow.spec.shadow_name.as_deref(), Some("config"));
    assert_eq!(
        validate_thing_shadow(&shadow.spec, &ShadowLimits::default()),
        Ok(())
    );

    let message: RetainedMessage = serde_yaml::from_str(
        r#"
apiVersion: iot.shadowsync.dev/v1alpha1
kind: RetainedMessage
metadata: {name: lamp-config, namespace: home}
spec:
  topic: home/kitchen-lamp/config
  payload:
    json: {interval: 30}
  qos: 1
  contentType: application/json
  userProperties: [{key: site, value: berlin}]
  messageExpiry: 3600
  managementPolicy: Manage
  deletionPolicy: Delete
  conflictPolicy: Overwrite
  refreshInterval: 10m
"#,
    )
    .expect("RetainedMessage example");
    assert_eq!(message.spec.qos, 1);
    assert_eq!(
        validate_retained_message(&message.spec, &ShadowLimits::default()),
        Ok(())
    );
}

// ---------------------------------------------------------------- patterns agree with validation

/// The schemas, generated once for the property tests.
fn cached_schemas() -> &'static (Value, Value) {
    static SCHEMAS: std::sync::OnceLock<(Value, Value)> = std::sync::OnceLock::new();
    SCHEMAS.get_or_init(|| (schema(&thing_shadow_crd()), schema(&retained_message_crd())))
}

fn pattern_of(root: &Value, path: &str) -> regex_lite::Regex {
    let pattern = node(root, path)["pattern"].as_str().expect("a pattern");
    regex_lite::Regex::new(pattern).expect("the pattern compiles")
}

fn within_lengths(node: &Value, text: &str) -> bool {
    let chars = text.chars().count() as u64;
    node["minLength"].as_u64().is_none_or(|min| chars >= min)
        && node["maxLength"].as_u64().is_none_or(|max| chars <= max)
}

fn shadow_spec(thing: &str, shadow: Option<&str>) -> ThingShadowSpec {
    serde_json::from_value(json!({"thingName": thing, "shadowName": shadow}))
        .expect("ThingShadowSpec")
}

fn topic_spec(topic: &str) -> RetainedMessageSpec {
    serde_json::from_value(json!({"topic": topic, "payload": {"text": "x"}}))
        .expect("RetainedMessageSpec")
}

fn field_refused(
    errors: Result<(), Vec<shadowsync::api::validate::FieldError>>,
    field: &str,
) -> bool {
    errors
        .err()
        .unwrap_or_default()
        .iter()
        .any(|e| e.field == field)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn thing_name_schema_agrees_with_validation(name in "[a-zA-Z0-9:_ $/.é-]{0,130}") {
        let root = &cached_schemas().0;
        let by_schema = pattern_of(root, "spec.thingName").is_match(&name)
            && within_lengths(node(root, "spec.thingName"), &name);
        let by_validation = !field_refused(
            validate_thing_shadow(&shadow_spec(&name, None), &ShadowLimits::default()),
            "spec.thingName",
        );
        prop_assert_eq!(by_schema, by_validation);
    }

    #[test]
    fn shadow_name_schema_agrees_with_validation(
        name in prop_oneof!["[a-zA-Z0-9:_ $/.é-]{0,66}", Just("AWSManagedGreengrassV2Deployment".to_string())]
    ) {
        let root = &cached_schemas().0;
        let by_schema = pattern_of(root, "spec.shadowName").is_match(&name)
            && within_lengths(node(root, "spec.shadowName"), &name)
            && name != "AWSManagedGreengrassV2Deployment";
        let by_validation = !field_refused(
            validate_thing_shadow(&shadow_spec("t", Some(&name)), &ShadowLimits::default()),
            "spec.shadowName",
        );
        prop_assert_eq!(by_schema, by_validation);
    }

    #[test]
    fn topic_schema_agrees_with_validation(topic in "[a/$+#\u{0}é]{0,12}|[ab/]{250,260}") {
        let root = &cached_schemas().1;
        let levels = regex_lite::Regex::new("^([^/]*/){8}").expect("regex");
        let by_schema = pattern_of(root, "spec.topic").is_match(&topic)
            && within_lengths(node(root, "spec.topic"), &topic)
            && !levels.is_match(&topic);
        let by_validation = !field_refused(
            validate_retained_message(&topic_spec(&topic), &ShadowLimits::default()),
            "spec.topic",
        );
        // The schema counts characters, AWS bytes: validation is the stricter one there.
        if topic.len() <= 256 {
            prop_assert_eq!(by_schema, by_validation);
        } else {
            prop_assert!(!by_validation);
        }
    }

    #[test]
    fn refresh_pattern_agrees_with_parse_duration(
        text in prop_oneof![
            "[0-9.nsumhµ+-]{0,8}",
            "([0-9]{0,3}(\\.[0-9]{0,2})?(ns|us|µs|μs|ms|s|m|h|d|S|)){1,3}",
        ]
    ) {
        let root = &cached_schemas().0;
        let by_schema = pattern_of(root, "spec.refreshInterval").is_match(&text);
        prop_assert_eq!(by_schema, parse_duration(&text).is_ok(), "{:?}", text);
    }
}
