//! What a real apiserver does with a custom resource's body before it stores it, driven by
//! the CRD's `openAPIV3Schema`: drop unknown fields (pruning), drop `null`s of non-nullable
//! fields, fill `default`s, then validate (OpenAPI value validations and
//! `x-kubernetes-validations` CEL rules, including transition rules against the old object).

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::errors::{show_value, Cause};

/// A CRD version's schema, with its regular expressions and CEL rules compiled once.
pub struct CompiledSchema {
    pub root: Value,
    patterns: HashMap<String, Regex>,
    cel: Option<kube_cel::CompiledSchema>,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Compiles a schema. Errors name rules or patterns that do not compile, which a real
    /// apiserver refuses when the CRD is created.
    pub fn compile(root: Value) -> Result<CompiledSchema, Vec<String>> {
        let mut problems = Vec::new();
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns, &mut problems);
        let mut has_rules = false;
        find_rules(&root, &mut has_rules);
        let cel = if has_rules {
            let compiled = kube_cel::compile_schema(&root);
            collect_cel_errors(&compiled, &mut problems);
            Some(compiled)
        } else {
            None
        };
        if problems.is_empty() {
            Ok(CompiledSchema {
                root,
                patterns,
                cel,
            })
        } else {
            Err(problems)
        }
    }

    /// Prunes, drops nulls and defaults `object` in place. Returns the paths of pruned fields.
    pub fn normalize(&self, object: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        if let Value::Object(map) = object {
            let props = self.root.get("properties").and_then(Value::as_object);
            let preserve = preserves_unknown(&self.root);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match props.and_then(|p| p.get(&key)) {
                    Some(child_schema) => {
                        if let Some(child) = map.get_mut(&key) {
                            prune(child_schema, child, &key, &mut pruned);
                        }
                    }
                    None if !preserve => {
                        map.remove(&key);
                        pruned.push(key);
                    }
                    None => {}
                }
            }
            if let Some(props) = props {
                for (key, child_schema) in props {
                    if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    default_property(map, key, child_schema);
                }
            }
        }
        pruned
    }

    /// Value validations and CEL rules. `old` is the stored object on an update.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Value::Object(map) = object {
            for name in required(&self.root) {
                if !map.contains_key(name) {
                    causes.push(Cause::required(name, ""));
                }
            }
            if let Some(props) = self.root.get("properties").and_then(Value::as_object) {
                for (key, child_schema) in props {
                    if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if let Some(child) = map.get(key) {
                        self.check(child_schema, child, key, &mut causes);
                    }
                }
            }
        }
        if causes.is_empty() {
            if let Some(cel) = &self.cel {
                causes.extend(cel_causes(cel, object, old));
            }
        }
        causes
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
        if value.is_null() {
            if flag(schema, "nullable") {
                return;
            }
            if let Some(expected) = expected_type(schema) {
                causes.push(type_error(path, value, &expected));
            }
            return;
        }
        if let Some(expected) = expected_type(schema) {
            if !type_matches(&expected, value) {
                causes.push(type_error(path, value, &expected));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                let supported: Vec<String> = options.iter().map(show_value).collect();
                causes.push(Cause::new(
                    path,
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: {}: supported values: {}",
                        show_value(value),
                        supported.join(", ")
                    ),
                ));
            }
        }
        match value {
            Value::String(s) => self.check_string(schema, s, value, path, causes),
            Value::Number(_) => check_number(schema, value, path, causes),
            Value::Array(items) => self.check_array(schema, items, path, causes),
            Value::Object(map) => self.check_object(schema, map, path, causes),
            _ => {}
        }
        self.check_combinators(schema, value, path, causes);
    }

    fn check_string(
        &self,
        schema: &Value,
        s: &str,
        value: &Value,
        path: &str,
        causes: &mut Vec<Cause>,
    ) {
        let len = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                causes.push(Cause::new(
                    path,
                    "FieldValueTooLong",
                    format!("Too long: may not be longer than {max}"),
                ));
            }
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if len < min {
                causes.push(Cause::invalid(
                    path,
                    value,
                    format!("{path} in body should be at least {min} chars long"),
                ));
            }
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str) {
            if !format_matches(format, s) {
                causes.push(Cause::invalid(
                    path,
                    value,
                    format!(
                        "{path} in body must be of type {format}: {}",
                        show_value(value)
                    ),
                ));
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            if let Some(re) = self.patterns.get(pattern) {
                if !re.is_match(s) {
                    causes.push(Cause::invalid(
                        path,
                        value,
                        format!("{path} in body should match '{pattern}'"),
                    ));
                }
            }
        }
    }

    fn check_array(&self, schema: &Value, items: &[Value], path: &str, causes: &mut Vec<Cause>) {
        let n = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if n > max {
                causes.push(Cause::new(
                    path,
                    "FieldValueTooMany",
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if n < min {
                causes.push(Cause::invalid(
                    path,
                    &Value::from(n),
                    format!("{path} in body should have at least {min} items"),
                ));
            }
        }
        let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
        let unique = flag(schema, "uniqueItems") || list_type == Some("set");
        if unique || list_type == Some("map") {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen: Vec<Value> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let identity = if list_type == Some("map") {
                    let mut id = Map::new();
                    for key in &keys {
                        if let Some(v) = item.get(*key) {
                            id.insert((*key).to_string(), v.clone());
                        }
                    }
                    Value::Object(id)
                } else {
                    item.clone()
                };
                if seen.contains(&identity) {
                    causes.push(Cause::new(
                        format!("{path}[{i}]"),
                        "FieldValueDuplicate",
                        format!("Duplicate value: {}", show_value(&identity)),
                    ));
                } else {
                    seen.push(identity);
                }
            }
        }
        if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{i}]"), causes);
            }
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        map: &Map<String, Value>,
        path: &str,
        causes: &mut Vec<Cause>,
    ) {
        let n = map.len() as u64;
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
            if n > max {
                causes.push(Cause::new(
                    path,
                    "FieldValueTooMany",
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
        }
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
            if n < min {
                causes.push(Cause::invalid(
                    path,
                    &Value::from(n),
                    format!("{path} in body should have at least {min} properties"),
                ));
            }
        }
        for name in required(schema) {
            if !map.contains_key(name) {
                causes.push(Cause::required(join(path, name), ""));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|s| s.is_object());
        for (key, child) in map {
            let child_path = join(path, key);
            if let Some(child_schema) = props.and_then(|p| p.get(key)) {
                self.check(child_schema, child, &child_path, causes);
            } else if let Some(additional) = additional {
                self.check(additional, child, &child_path, causes);
            }
        }
    }

    fn check_combinators(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        causes: &mut Vec<Cause>,
    ) {
        let passes = |branch: &Value| {
            let mut sub = Vec::new();
            self.check(branch, value, path, &mut sub);
            sub
        };
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for branch in all {
                causes.extend(passes(branch));
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any.is_empty() && !any.iter().any(|b| passes(b).is_empty()) {
                causes.push(Cause::invalid(
                    path,
                    value,
                    format!("{path} in body must validate at least one schema (anyOf)"),
                ));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let ok = one.iter().filter(|b| passes(b).is_empty()).count();
            if !one.is_empty() && ok != 1 {
                causes.push(Cause::invalid(
                    path,
                    value,
                    format!("{path} in body must validate one and only one schema (oneOf)"),
                ));
            }
        }
        if let Some(not) = schema.get("not").filter(|s| s.is_object()) {
            if passes(not).is_empty() {
                causes.push(Cause::invalid(
                    path,
                    value,
                    format!("{path} in body must not validate the schema (not)"),
                ));
            }
        }
    }
}

/// The string formats a real apiserver checks that controllers commonly use; other formats
/// are accepted as they are.
fn format_matches(format: &str, s: &str) -> bool {
    use base64::Engine;
    match format {
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "uuid" => {
            s.len() == 36
                && s.char_indices().all(|(i, c)| {
                    if matches!(i, 8 | 13 | 18 | 23) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                })
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => true,
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(x) = value.as_f64() else { return };
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let relation = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(Cause::invalid(
                path,
                value,
                format!("{path} in body should be {relation} {}", number(max)),
            ));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let relation = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(Cause::invalid(
                path,
                value,
                format!("{path} in body should be {relation} {}", number(min)),
            ));
        }
    }
    if let Some(factor) = schema.get("multipleOf").and_then(Value::as_f64) {
        if factor > 0.0 && (x / factor).fract() != 0.0 {
            causes.push(Cause::invalid(
                path,
                value,
                format!("{path} in body should be a multiple of {}", number(factor)),
            ));
        }
    }
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn preserves_unknown(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-preserve-unknown-fields")
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// The type a node demands: `integer,string` for int-or-string, `None` when anything goes.
fn expected_type(schema: &Value) -> Option<String> {
    if flag(schema, "x-kubernetes-int-or-string") {
        return Some("integer,string".into());
    }
    schema
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// The JSON type name Kubernetes reports for a value.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    expected.split(',').any(|t| match t {
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    })
}

fn type_error(path: &str, value: &Value, expected: &str) -> Cause {
    let actual = Value::String(type_name(value).into());
    Cause::invalid(
        path,
        &actual,
        format!(
            "{path} in body must be of type {expected}: {}",
            show_value(&actual)
        ),
    )
}

/// Removes fields the schema does not know, recording their paths.
fn prune(schema: &Value, value: &mut Value, path: &str, pruned: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keep_unknown = preserves_unknown(schema)
                || additional.and_then(Value::as_bool) == Some(true)
                || additional.is_some_and(Value::is_object);
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                if let Some(child_schema) = props.and_then(|p| p.get(&key)) {
                    if let Some(child) = map.get_mut(&key) {
                        prune(child_schema, child, &child_path, pruned);
                    }
                } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                    if let Some(child) = map.get_mut(&key) {
                        prune(additional, child, &child_path, pruned);
                    }
                } else if keep_unknown
                    || (embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
                {
                    continue;
                } else {
                    map.remove(&key);
                    pruned.push(child_path);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

/// Fills a missing property from its `default`, replaces or drops a `null` the schema does
/// not allow, then does the same inside the property.
fn default_property(map: &mut Map<String, Value>, key: &str, schema: &Value) {
    let default = schema.get("default");
    match map.get(key) {
        None => {
            if let Some(default) = default {
                map.insert(key.to_string(), default.clone());
            }
        }
        Some(Value::Null) if !flag(schema, "nullable") => match default {
            Some(default) => {
                map.insert(key.to_string(), default.clone());
            }
            None => {
                map.remove(key);
            }
        },
        Some(_) => {}
    }
    if let Some(child) = map.get_mut(key) {
        apply_defaults(schema, child);
    }
}

fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(props) = props {
                for (key, child_schema) in props {
                    default_property(map, key, child_schema);
                }
            }
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let keys: Vec<String> = map
                    .keys()
                    .filter(|k| props.is_none_or(|p| !p.contains_key(k.as_str())))
                    .cloned()
                    .collect();
                for key in keys {
                    default_property(map, &key, additional);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

fn collect_patterns(schema: &Value, out: &mut HashMap<String, Regex>, problems: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(p)) = map.get("pattern") {
                if !out.contains_key(p) {
                    match Regex::new(p) {
                        Ok(re) => {
                            out.insert(p.clone(), re);
                        }
                        Err(e) => problems.push(format!("pattern {p:?} does not compile: {e}")),
                    }
                }
            }
            for (key, child) in map {
                // `default`, `enum` and `example` hold data, not schemas.
                if !matches!(key.as_str(), "default" | "enum" | "example") {
                    collect_patterns(child, out, problems);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_patterns(item, out, problems);
            }
        }
        _ => {}
    }
}

fn find_rules(schema: &Value, found: &mut bool) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("x-kubernetes-validations") {
                *found = true;
                return;
            }
            for (key, child) in map {
                if !matches!(key.as_str(), "default" | "enum" | "example") {
                    find_rules(child, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| find_rules(i, found)),
        _ => {}
    }
}

fn collect_cel_errors(compiled: &kube_cel::CompiledSchema, problems: &mut Vec<String>) {
    for err in compiled.compilation_errors() {
        problems.push(format!("x-kubernetes-validations: {err}"));
    }
    for child in compiled.properties.values() {
        collect_cel_errors(child, problems);
    }
    for child in compiled
        .items
        .iter()
        .chain(compiled.additional_properties.iter())
    {
        collect_cel_errors(child, problems);
    }
    for child in compiled
        .all_of
        .iter()
        .chain(&compiled.one_of)
        .chain(&compiled.any_of)
    {
        collect_cel_errors(child, problems);
    }
}

fn cel_causes(
    compiled: &kube_cel::CompiledSchema,
    object: &Value,
    old: Option<&Value>,
) -> Vec<Cause> {
    let Err(errors) = kube_cel::validate_compiled(compiled, object, old) else {
        return Vec::new();
    };
    let mut causes = Vec::new();
    for error in errors.into_vec() {
        match error.kind {
            kube_cel::ErrorKind::ValidationFailure => {}
            kube_cel::ErrorKind::UnsupportedReference => {
                // A rule this CEL build cannot evaluate is skipped rather than failing every
                // write; the README lists this gap.
                eprintln!(
                    "test-apiserver: skipping CEL rule {:?}: {}",
                    error.rule, error.message
                );
                continue;
            }
            _ => {
                let value = value_at(object, &error.field_path);
                causes.push(Cause::invalid(
                    error.field_path.clone(),
                    &Value::String(type_name(value.unwrap_or(&Value::Null)).into()),
                    &error.message,
                ));
                continue;
            }
        }
        let value = value_at(object, &error.field_path);
        let shown = Value::String(type_name(value.unwrap_or(&Value::Null)).into());
        let cause = match error.reason.as_deref() {
            Some("FieldValueForbidden") => Cause::forbidden(error.field_path, &error.message),
            Some("FieldValueRequired") => Cause::required(error.field_path, &error.message),
            Some("FieldValueDuplicate") => Cause::new(
                error.field_path,
                "FieldValueDuplicate",
                format!("Duplicate value: {}", error.message),
            ),
            _ => Cause::invalid(error.field_path, &shown, &error.message),
        };
        causes.push(cause);
    }
    causes
}

/// The value at a dotted path with `[i]` indexes, e.g. `spec.items[2].key`.
pub fn value_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = root;
    if path.is_empty() {
        return Some(root);
    }
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            current = current.get(i)?;
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> CompiledSchema {
        CompiledSchema::compile(json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5,
                                 "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "name is immutable"}]},
                        "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                        "count": {"type": "integer", "minimum": 0, "maximum": 3},
                        "port": {"x-kubernetes-int-or-string": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "list": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                        "opt": {"type": "string", "nullable": true}
                    }
                },
                "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn prunes_unknown_fields_and_applies_defaults() {
        let s = schema();
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"name": "abc", "junk": 1, "free": {"any": {"thing": 1}},
                     "labels": {"a": "b"}, "list": [{"k": "v", "extra": true}], "opt": null, "count": null},
            "top": 1
        });
        let pruned = s.normalize(&mut obj);
        assert_eq!(pruned, vec!["spec.junk", "spec.list[0].extra", "top"]);
        assert_eq!(
            obj["spec"],
            json!({"name": "abc", "free": {"any": {"thing": 1}}, "labels": {"a": "b"},
                   "list": [{"k": "v"}], "opt": null, "mode": "A"})
        );
        assert!(s.validate(&obj, None).is_empty());
    }

    #[test]
    fn reports_value_violations() {
        let s = schema();
        let obj = json!({"spec": {"name": "ABCDEFG", "mode": "C", "count": 9, "port": true,
                                   "list": [{}, {}, {}]}});
        let causes: Vec<String> = s.validate(&obj, None).iter().map(Cause::line).collect();
        assert!(causes.contains(&"spec.name: Too long: may not be longer than 5".to_string()));
        assert!(causes.contains(
            &"spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'"
                .to_string()
        ));
        assert!(causes.contains(
            &"spec.mode: Unsupported value: \"C\": supported values: \"A\", \"B\"".to_string()
        ));
        assert!(causes.contains(
            &"spec.count: Invalid value: 9: spec.count in body should be less than or equal to 3"
                .to_string()
        ));
        assert!(causes.contains(&"spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"".to_string()));
        assert!(causes.contains(&"spec.list: Too many: 3: must have at most 2 items".to_string()));
        let missing: Vec<String> = s
            .validate(&json!({"spec": {}}), None)
            .iter()
            .map(Cause::line)
            .collect();
        assert_eq!(missing, vec!["spec.name: Required value"]);
        let no_spec: Vec<String> = s
            .validate(&json!({}), None)
            .iter()
            .map(Cause::line)
            .collect();
        assert_eq!(no_spec, vec!["spec: Required value"]);
    }

    #[test]
    fn checks_common_string_formats() {
        assert!(format_matches("byte", "AAEC"));
        assert!(!format_matches("byte", "not base64!"));
        assert!(format_matches("date-time", "2025-01-01T00:00:00Z"));
        assert!(!format_matches("date-time", "yesterday"));
        assert!(format_matches(
            "uuid",
            "8b969e08-3932-4b06-8110-80cf1bfc917b"
        ));
        assert!(format_matches("int64", "anything"));
    }

    #[test]
    fn transition_rules_see_the_old_object() {
        let s = schema();
        let old = json!({"spec": {"name": "abc"}});
        let new = json!({"spec": {"name": "abd"}});
        assert!(s.validate(&new, None).is_empty());
        assert!(s.validate(&old, Some(&old)).is_empty());
        let lines: Vec<String> = s
            .validate(&new, Some(&old))
            .iter()
            .map(Cause::line)
            .collect();
        assert_eq!(
            lines,
            vec!["spec.name: Invalid value: \"string\": name is immutable"]
        );
    }

    #[test]
    fn refuses_rules_that_do_not_parse() {
        let err = CompiledSchema::compile(json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.a ==", "message": "x"}]
        }))
        .unwrap_err();
        assert_eq!(err.len(), 1);
    }
}
