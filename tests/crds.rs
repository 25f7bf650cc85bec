//! The CRDs in `crds/`: up to date with the Rust types, structural (a real apiserver accepts
//! them), and carrying what the README documents (names, patterns, enums, defaults, CEL rules,
//! printer columns).
//!
//! Regenerate the committed files with `SHADOWSYNC_UPDATE_CRDS=1 cargo test --test crds`;
//! `cargo run -- crds` prints all three.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use shadowsync::api::validate::{
    max_failures, parse_duration, validate_retained_message, validate_thing_shadow,
    validate_thing_shadow_set, ShadowLimits,
};
use shadowsync::api::{
    crd_files, crd_yaml_retained_message, crd_yaml_thing_shadow, crd_yaml_thing_shadow_set,
    crds_yaml, retained_message_crd, thing_shadow_crd, thing_shadow_set_crd, RetainedMessage,
    RetainedMessageSpec, ThingShadow, ThingShadowSet, ThingShadowSetSpec, ThingShadowSpec,
};

const REGENERATE: &str = "regenerate with `SHADOWSYNC_UPDATE_CRDS=1 cargo test --test crds` \
                          (`cargo run -- crds` prints the three CRDs)";

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
fn crds_yaml_holds_the_three_documents_thing_shadow_first() {
    let all = crds_yaml();
    assert_eq!(
        all,
        format!(
            "{}---\n{}---\n{}",
            crd_yaml_thing_shadow(),
            crd_yaml_retained_message(),
            crd_yaml_thing_shadow_set()
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
            "retainedmessages.iot.shadowsync.dev",
            "thingshadowsets.iot.shadowsync.dev"
        ]
    );
    // The YAML says exactly what the typed CRDs say.
    assert_eq!(documents[0], thing_shadow_crd());
    assert_eq!(documents[1], retained_message_crd());
    assert_eq!(documents[2], thing_shadow_set_crd());
    // One committed file per CRD, and every file in crds/ is one of them (the chart and
    // deploy/install.yaml copy that folder).
    let files: Vec<&str> = crd_files().iter().map(|(path, _)| *path).collect();
    assert_eq!(
        files,
        [
            "crds/thingshadows.yaml",
            "crds/retainedmessages.yaml",
            "crds/thingshadowsets.yaml"
        ]
    );
    let mut on_disk: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
            .expect("crds/")
            .map(|e| format!("crds/{}", e.expect("entry").file_name().to_string_lossy()))
            .collect();
    on_disk.sort();
    let mut expected: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(on_disk, expected);
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

fn all_kinds() -> [(&'static str, Value); 3] {
    [
        ("ThingShadow", schema(&thing_shadow_crd())),
        ("RetainedMessage", schema(&retained_message_crd())),
        ("ThingShadowSet", schema(&thing_shadow_set_crd())),
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
        // The apiserver accepts nullable on an int-or-string node (no type there by
        // definition); `no_nullable_anywhere` says why we still want none.
        if has("nullable") && !typed && !flag("x-kubernetes-int-or-string") {
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
    for (kind, root) in all_kinds() {
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
        ("ThingShadowSet", generated::<ThingShadowSet>()),
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

/// Every property under `node` (depth first) with its path: `(path, property schema)`.
fn properties<'a>(path: &str, node: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    if let Some(Value::Object(children)) = node.get("properties") {
        for (name, child) in children {
            let child_path = format!("{path}.{name}");
            out.push((child_path.clone(), child));
            properties(&child_path, child, out);
        }
    }
    if let Some(items) = node.get("items") {
        properties(&format!("{path}[]"), items, out);
    }
}

/// Paths of the nodes marked `nullable`: there the apiserver stores a `null` instead of
/// pruning it and applying the default, and CEL's `has()` sees the field.
fn nullable_paths(kind: &str, root: &Value) -> Vec<String> {
    let mut all = vec![(kind.to_string(), root)];
    properties(kind, root, &mut all);
    all.into_iter()
        .filter(|(_, node)| node.get("nullable").is_some())
        .map(|(path, _)| path)
        .collect()
}

/// Paths of the properties without a description (`kubectl explain` shows nothing).
fn undescribed_paths(kind: &str, root: &Value) -> Vec<String> {
    let mut all = Vec::new();
    properties(kind, root, &mut all);
    all.into_iter()
        .filter(|(_, node)| {
            node.get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        })
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn no_nullable_anywhere() {
    for (kind, root) in [
        ("ThingShadow", schema(&thing_shadow_crd())),
        ("RetainedMessage", schema(&retained_message_crd())),
    ] {
        assert_eq!(nullable_paths(kind, &root), Vec::<String>::new());
    }
}

/// kube's `OptionalIntOrString` transform marks every int-or-string property that is not
/// required `nullable`, and `spec.rollout.maxFailures` has a serde default, so it is not
/// required. The apiserver then stores `maxFailures: null` (or an empty `maxFailures:` in
/// YAML) as null instead of pruning it and defaulting it to 0 (kube-apiserver 1.37 does),
/// and `IntOrString` does not deserialize from null: such a set cannot be decoded.
#[test]
fn no_nullable_in_the_thing_shadow_set() {
    let root = schema(&thing_shadow_set_crd());
    assert_eq!(
        nullable_paths("ThingShadowSet", &root),
        Vec::<String>::new()
    );
}

#[test]
fn every_property_has_a_description() {
    for (kind, root) in [
        ("ThingShadow", schema(&thing_shadow_crd())),
        ("RetainedMessage", schema(&retained_message_crd())),
    ] {
        assert_eq!(undescribed_paths(kind, &root), Vec::<String>::new());
    }
}

#[test]
fn every_property_of_the_thing_shadow_set_has_a_description() {
    let root = schema(&thing_shadow_set_crd());
    assert_eq!(
        undescribed_paths("ThingShadowSet", &root),
        Vec::<String>::new()
    );
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
fn thing_shadow_set_spec_schema() {
    let root = schema(&thing_shadow_set_crd());
    let spec = node(&root, "spec");
    assert_eq!(required(spec), ["selector", "template"]);

    // The selector: exactly one of three forms, counted by CEL (the fields are typed, so
    // CEL sees them; `has()` is false for an absent field).
    let selector = node(spec, "selector");
    assert_eq!(selector["type"], "object");
    assert_eq!(
        rules(selector),
        ["(has(self.things) ? 1 : 0) + (has(self.thingGroup) ? 1 : 0) + (has(self.query) ? 1 : 0) == 1"]
    );
    let things = node(selector, "things");
    assert_eq!(things["type"], "array");
    assert_eq!(things["maxItems"], 10000);
    let thing_name = node(&thing_shadow_crd_schema(), "spec.thingName").clone();
    for key in ["type", "pattern", "minLength", "maxLength"] {
        assert_eq!(things["items"][key], thing_name[key], "things[] {key}");
    }
    let group = node(selector, "thingGroup");
    assert_eq!(required(group), ["name"]);
    for key in ["type", "pattern", "minLength", "maxLength"] {
        assert_eq!(
            node(group, "name")[key],
            thing_name[key],
            "thingGroup.name {key}"
        );
    }
    assert_eq!(node(group, "recursive")["type"], "boolean");
    assert_eq!(node(group, "recursive")["default"], false);
    let query = node(selector, "query");
    assert_eq!(query["type"], "string");
    assert_eq!(query["minLength"], 1);
    assert_eq!(query["maxLength"], 1000);

    // The template: a ThingShadow spec without thingName, with the same rules.
    let template = node(spec, "template");
    assert!(node(template, "desired").get("type").is_some());
    assert!(template["properties"].get("thingName").is_none());
    assert!(template
        .get("x-kubernetes-preserve-unknown-fields")
        .is_none());
    assert_eq!(required(template), Vec::<&str>::new());
    let shadow_root = thing_shadow_crd_schema();
    let shadow_spec = node(&shadow_root, "spec");
    for field in [
        "shadowName",
        "managementPolicy",
        "deletionPolicy",
        "conflictPolicy",
        "refreshInterval",
    ] {
        let ours = node(template, field);
        let theirs = node(shadow_spec, field);
        for key in [
            "type",
            "pattern",
            "minLength",
            "maxLength",
            "enum",
            "default",
        ] {
            assert_eq!(ours.get(key), theirs.get(key), "template.{field} {key}");
        }
    }
    assert_eq!(
        rules(node(template, "shadowName")),
        rules(node(shadow_spec, "shadowName"))
    );
    assert_eq!(rules(template), rules(shadow_spec));
    assert_free_form_object(node(template, "desired"), "template.desired");

    // The rollout.
    let rollout = node(spec, "rollout");
    let steps = node(rollout, "steps");
    assert_eq!(steps["type"], "array");
    assert_eq!(steps["maxItems"], 100);
    assert_eq!(steps["items"]["type"], "integer");
    assert_eq!(steps["items"]["minimum"], 1.0);
    assert_eq!(steps["items"]["maximum"], 100.0);
    let budget = node(rollout, "maxFailures");
    assert_eq!(budget["x-kubernetes-int-or-string"], true);
    assert!(budget.get("type").is_none());
    assert_eq!(budget["default"], 0);
    assert_eq!(
        rules(budget),
        ["type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')"]
    );
    let on_failure = node(rollout, "onFailure");
    assert_eq!(on_failure["enum"], json!(["Pause", "Rollback"]));
    assert_eq!(on_failure["default"], "Pause");
    assert_eq!(node(rollout, "waitForConverged")["default"], true);
    assert_eq!(node(rollout, "stepTimeout")["default"], "10m");
    assert_eq!(
        node(rollout, "stepTimeout")["pattern"],
        shadow_spec["properties"]["refreshInterval"]["pattern"]
    );
    // An absent rollout is the defaults, the same ones serde fills in.
    assert_eq!(
        rollout["default"],
        json!({"waitForConverged": true, "stepTimeout": "10m", "maxFailures": 0, "onFailure": "Pause"})
    );
    let resync = node(spec, "resyncInterval");
    assert_eq!(resync["default"], "5m");
    assert_eq!(
        resync["pattern"],
        shadow_spec["properties"]["refreshInterval"]["pattern"]
    );
}

fn thing_shadow_crd_schema() -> Value {
    schema(&thing_shadow_crd())
}

#[test]
fn thing_shadow_set_status_schema() {
    let root = schema(&thing_shadow_set_crd());
    let status = node(&root, "status");
    assert_eq!(status["type"], "object");
    assert_eq!(node(status, "observedGeneration")["type"], "integer");
    // The conditions are the same kstatus list as the other kinds'.
    let shadow_root = thing_shadow_crd_schema();
    let theirs = node(&shadow_root, "status.conditions");
    let conditions = node(status, "conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(conditions["items"], theirs["items"]);
    for field in [
        "targeted",
        "updated",
        "converged",
        "failed",
        "conflicting",
        "currentStep",
    ] {
        let count = node(status, field);
        assert_eq!(count["type"], "integer", "{field}");
        assert_eq!(count["minimum"], 0.0, "{field}");
    }
    for field in [
        "phase",
        "step",
        "revision",
        "completeRevision",
        "stepStartedTime",
        "membershipReadTime",
    ] {
        assert_eq!(node(status, field)["type"], "string", "{field}");
    }
    assert_eq!(node(status, "aborted")["type"], "boolean");
    assert_free_form_object(node(status, "completeTemplate"), "completeTemplate");
    for list in ["failedThings", "conflictingThings"] {
        let items = &node(status, list)["items"];
        assert_eq!(required(items), ["reason", "thing"], "{list}");
    }
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
        (
            thing_shadow_set_crd(),
            "ThingShadowSet",
            "thingshadowsets",
            "tshadowset",
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
    assert_eq!(
        columns(&thing_shadow_set_crd()),
        expected(&[
            ("Targeted", "integer", ".status.targeted"),
            ("Updated", "integer", ".status.updated"),
            ("Converged", "integer", ".status.converged"),
            ("Failed", "integer", ".status.failed"),
            ("Step", "string", ".status.step"),
            ("Phase", "string", ".status.phase"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ])
    );
    // Every set column but Age says what it shows (`kubectl explain`-style help).
    let set = thing_shadow_set_crd();
    for column in set.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
    {
        assert!(
            column.name == "Age" || column.description.is_some(),
            "{}",
            column.name
        );
    }
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

/// The same for a set, at every depth: a minimal set read by serde carries, at each
/// defaulted path, the schema's default.
#[test]
fn thing_shadow_set_schema_defaults_equal_serde_defaults() {
    fn walk(path: &str, schema: &Value, value: &Value, seen: &mut Vec<String>) {
        let Some(Value::Object(children)) = schema.get("properties") else {
            return;
        };
        for (name, child) in children {
            let here = format!("{path}.{name}");
            let Some(actual) = value.get(name) else {
                assert!(
                    child.get("default").is_none(),
                    "{here}: the schema defaults it, serde leaves it out"
                );
                continue;
            };
            if let Some(default) = child.get("default") {
                assert_eq!(actual, default, "{here}");
                seen.push(here.clone());
            }
            walk(&here, child, actual, seen);
        }
    }
    let minimal: ThingShadowSetSpec = serde_json::from_value(json!({
        "selector": {"thingGroup": {"name": "lamps"}},
        "template": {},
    }))
    .expect("a minimal set");
    let root = schema(&thing_shadow_set_crd());
    let mut seen = Vec::new();
    walk(
        "spec",
        node(&root, "spec"),
        &serde_json::to_value(&minimal).expect("JSON"),
        &mut seen,
    );
    for path in [
        "spec.resyncInterval",
        "spec.rollout",
        "spec.rollout.maxFailures",
        "spec.rollout.onFailure",
        "spec.rollout.stepTimeout",
        "spec.rollout.waitForConverged",
        "spec.selector.thingGroup.recursive",
        "spec.template.conflictPolicy",
        "spec.template.deletionPolicy",
        "spec.template.managementPolicy",
        "spec.template.refreshInterval",
    ] {
        assert!(
            seen.iter().any(|p| p == path),
            "{path} not checked: {seen:?}"
        );
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

/// Every ThingShadowSet the repository ships (deploy/examples/fleet, the Flux example)
/// reads into the types and passes every rule the operator checks, including those the
/// schema cannot say (steps that grow and end at 100, a resync of at least 10 s).
#[test]
fn shipped_sets_deserialize_and_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("deploy/examples/fleet"))
        .expect("deploy/examples/fleet")
        .map(|e| e.expect("entry").path())
        .collect();
    files.push(root.join("deploy/flux/shadows/hall-lamps.yaml"));
    files.sort();
    let mut selectors = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("an example");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).expect("YAML");
            if value["kind"] != "ThingShadowSet" {
                continue;
            }
            let set: ThingShadowSet =
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = set.metadata.name.clone().expect("a name");
            assert_eq!(
                validate_thing_shadow_set(&name, &set.spec, &ShadowLimits::default()),
                Ok(()),
                "{}",
                path.display()
            );
            let selector = &set.spec.selector;
            selectors.push(if selector.things.is_some() {
                "things"
            } else if selector.thing_group.is_some() {
                "thingGroup"
            } else {
                "query"
            });
        }
    }
    selectors.sort();
    selectors.dedup();
    assert_eq!(selectors, ["query", "thingGroup", "things"]);
}

// ---------------------------------------------------------------- patterns agree with validation

/// The schemas, generated once for the property tests.
fn cached_schemas() -> &'static (Value, Value, Value) {
    static SCHEMAS: std::sync::OnceLock<(Value, Value, Value)> = std::sync::OnceLock::new();
    SCHEMAS.get_or_init(|| {
        (
            schema(&thing_shadow_crd()),
            schema(&retained_message_crd()),
            schema(&thing_shadow_set_crd()),
        )
    })
}

fn set_spec(selector: Value, rollout: Value) -> ThingShadowSetSpec {
    serde_json::from_value(json!({"selector": selector, "template": {}, "rollout": rollout}))
        .expect("ThingShadowSetSpec")
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
    fn set_thing_names_schema_agrees_with_validation(name in "[a-zA-Z0-9:_ $/.é-]{0,130}") {
        let root = &cached_schemas().2;
        let things = &node(root, "spec.selector.things")["items"];
        let pattern = regex_lite::Regex::new(things["pattern"].as_str().expect("pattern"))
            .expect("the pattern compiles");
        let by_schema = pattern.is_match(&name) && within_lengths(things, &name);
        let spec = set_spec(json!({"things": [name.clone()]}), json!({}));
        let by_validation = !field_refused(
            validate_thing_shadow_set("s", &spec, &ShadowLimits::default()),
            "spec.selector.things[0]",
        );
        prop_assert_eq!(by_schema, by_validation);
        let group = node(root, "spec.selector.thingGroup.name");
        let by_schema = pattern_of(root, "spec.selector.thingGroup.name").is_match(&name)
            && within_lengths(group, &name);
        let spec = set_spec(json!({"thingGroup": {"name": name}}), json!({}));
        let by_validation = !field_refused(
            validate_thing_shadow_set("s", &spec, &ShadowLimits::default()),
            "spec.selector.thingGroup.name",
        );
        prop_assert_eq!(by_schema, by_validation);
    }

    #[test]
    fn step_bounds_agree_with_validation(step in 0u8..=255) {
        let root = &cached_schemas().2;
        let items = &node(root, "spec.rollout.steps")["items"];
        let by_schema = f64::from(step) >= items["minimum"].as_f64().expect("minimum")
            && f64::from(step) <= items["maximum"].as_f64().expect("maximum");
        // One step that is also the last: only the bounds can fail it (and 100 is due).
        let spec = set_spec(json!({"things": ["a"]}), json!({"steps": [step]}));
        let errors = validate_thing_shadow_set("s", &spec, &ShadowLimits::default());
        prop_assert_eq!(by_schema, !field_refused(errors, "spec.rollout.steps[0]"));
    }

    /// `apply` has no apiserver, so validation must refuse what the schema refuses.
    /// Today `max_failures` reads the digits as a number and so also takes "00%" and
    /// "05%", which the CRD's rule refuses.
    #[test]
    fn max_failures_rule_agrees_with_validation(
        text in prop_oneof!["[0-9+%-]{0,5}", "[0-9]{1,3}%", Just("100%".to_string())]
    ) {
        // The CRD's CEL rule for a string: ^(100|[1-9]?[0-9])%$.
        let cel = regex_lite::Regex::new("^(100|[1-9]?[0-9])%$").expect("regex");
        let by_schema = cel.is_match(&text);
        let by_validation = max_failures(
            &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(text.clone()),
        )
        .is_ok();
        prop_assert_eq!(by_schema, by_validation, "{:?}", text);
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
