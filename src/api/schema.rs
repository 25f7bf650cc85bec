//! Helpers that keep the generated OpenAPI schemas structural and free of surprises for a
//! real apiserver (see the CRD structural-schema rules).
//!
//! schemars describes Rust types for JSON Schema; a few of its habits do not fit Kubernetes:
//! `Option<T>` becomes `nullable: true` (a `null` is then stored instead of being pruned, and
//! CEL `has()` sees the field), unsigned integers carry formats such as `uint64` that the
//! apiserver does not know, and a bare `serde_json::Value` has no type at all, which the
//! apiserver prunes to nothing. The functions here fix that where the types are declared.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

/// `thingName`: AWS's characters; the length is bounded separately (1..=128).
pub(crate) const THING_NAME_PATTERN: &str = r"^[a-zA-Z0-9:_-]+$";
/// `shadowName`: AWS's characters; the length is bounded separately (1..=64).
pub(crate) const SHADOW_NAME_PATTERN: &str = r"^[$a-zA-Z0-9:_-]+$";
/// A topic that can be published with RETAIN: no wildcards, no NUL, not `$`-prefixed.
pub(crate) const TOPIC_PATTERN: &str = r"^[^$+#\x00][^+#\x00]*$";
/// CEL: at most 8 topic levels (7 `/`), which a length-free pattern cannot say readably.
pub(crate) const TOPIC_LEVELS_RULE: &str = "!self.matches('^([^/]*/){8}')";
/// A Go duration without sign, as [`super::validate::parse_duration`] accepts it.
pub(crate) const DURATION_PATTERN: &str =
    r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$";

/// Schema of a free-form JSON object that the apiserver keeps as it is.
pub(crate) fn preserved_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema of any JSON value (object, array, string, number or boolean).
///
/// A node without `type` is structural only with `x-kubernetes-preserve-unknown-fields`.
pub(crate) fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The schema of a whole resource: `spec` (required) and `status`, nothing else.
///
/// `apiVersion`, `kind` and `metadata` are left out on purpose: the apiserver adds and
/// validates them itself and refuses most constraints on `metadata`.
pub(crate) fn resource<Spec: JsonSchema, Status: JsonSchema>(
    generator: &mut SchemaGenerator,
    title: &str,
    description: &str,
) -> Schema {
    json_schema!({
        "title": title,
        "description": description,
        "type": "object",
        "properties": {
            "spec": generator.subschema_for::<Spec>(),
            "status": generator.subschema_for::<Status>(),
        },
        "required": ["spec"],
    })
}

/// Container transform applied to every top-level spec and status type: removes `null` from
/// types (no `nullable`), maps unsigned formats to the ones Kubernetes knows, and writes
/// integral bounds as integers.
pub(crate) fn kubernetes(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        tidy(object);
    }
}

fn tidy(object: &mut Map<String, Value>) {
    object.remove("nullable");

    // Doc comments keep their line breaks; `kubectl explain` wraps text itself.
    if let Some(Value::String(text)) = object.get_mut("description") {
        *text = unwrap_lines(text);
    }

    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let single = types.remove(0);
            object.insert("type".into(), single);
        }
    }

    // `Option<T>` of a type without a `type` keyword: `anyOf: [T, {type: null}]`.
    if let Some(Value::Array(branches)) = object.get_mut("anyOf") {
        branches.retain(|b| b.get("type") != Some(&Value::String("null".into())));
        if branches.len() == 1 {
            if let Value::Object(inner) = branches.remove(0) {
                object.remove("anyOf");
                for (key, value) in inner {
                    object.entry(key).or_insert(value);
                }
            }
        }
    }

    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }

    let format = object
        .get("format")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match format.as_deref() {
        Some("uint8" | "uint16" | "int8" | "int16") => {
            object.insert("format".into(), "int32".into());
        }
        Some("uint32" | "uint64" | "uint" | "int") => {
            object.insert("format".into(), "int64".into());
        }
        _ => {}
    }

    if object.get("type").and_then(Value::as_str) == Some("integer") {
        for bound in ["minimum", "maximum"] {
            if let Some(n) = object.get(bound).and_then(Value::as_f64) {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    object.insert(bound.into(), Value::from(n as i64));
                }
            }
        }
    }

    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(children)) = object.get_mut(key) {
            for child in children.values_mut() {
                if let Value::Object(child) = child {
                    tidy(child);
                }
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(Value::Object(child)) = object.get_mut(key) {
            tidy(child);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = object.get_mut(key) {
            for branch in branches {
                if let Value::Object(branch) = branch {
                    tidy(branch);
                }
            }
        }
    }
}

/// Joins the lines of each paragraph with spaces; paragraphs stay separated by a blank line.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tidied(value: Value) -> Value {
        let mut schema: Schema = serde_json::from_value(value).expect("schema");
        kubernetes(&mut schema);
        schema.to_value()
    }

    #[test]
    fn option_types_lose_null() {
        assert_eq!(
            tidied(json!({"type": ["string", "null"], "nullable": true})),
            json!({"type": "string"})
        );
        assert_eq!(
            tidied(json!({"anyOf": [{"type": "object", "properties": {}}, {"type": "null"}]})),
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn unsigned_formats_become_kubernetes_formats() {
        assert_eq!(
            tidied(json!({"type": "integer", "format": "uint64", "minimum": 0.0})),
            json!({"type": "integer", "format": "int64", "minimum": 0})
        );
        assert_eq!(
            tidied(json!({"type": "integer", "format": "uint8", "minimum": 0.0, "maximum": 1.0})),
            json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": 1})
        );
    }

    #[test]
    fn descriptions_are_unwrapped_per_paragraph() {
        assert_eq!(
            tidied(json!({"description": "one\ntwo\n\nthree"})),
            json!({"description": "one two\n\nthree"})
        );
    }

    #[test]
    fn nested_nodes_are_tidied() {
        let out = tidied(json!({
            "type": "object",
            "properties": {
                "a": {"type": "array", "items": {"type": ["integer", "null"], "format": "uint32"}}
            }
        }));
        assert_eq!(
            out["properties"]["a"]["items"],
            json!({"type": "integer", "format": "int64"})
        );
    }
}
