//! Object metadata: the fields a client may set, their syntax, and the key order the server
//! writes objects in.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::errors::Cause;
use crate::registry::{ResourceType, Special};

/// Metadata keys a client controls on create and update; the rest the server owns.
pub const CLIENT_FIELDS: &[&str] = &["labels", "annotations", "ownerReferences", "finalizers"];

const META_ORDER: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("static regex")
});
static DNS_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("static regex"));
static QUALIFIED_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("static regex")
});

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Puts `apiVersion`, `kind`, `metadata` first and metadata keys in Kubernetes' order, so
/// that output is stable and reads like a real server's.
pub fn ordered(object: Value) -> Value {
    let Value::Object(mut map) = object else {
        return object;
    };
    let mut out = Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(v) = map.remove(key) {
            out.insert(key.into(), v);
        }
    }
    if let Some(Value::Object(mut meta)) = map.remove("metadata") {
        let mut sorted = Map::new();
        for key in META_ORDER {
            if let Some(v) = meta.remove(*key) {
                sorted.insert((*key).into(), v);
            }
        }
        sorted.extend(meta);
        out.insert("metadata".into(), Value::Object(sorted));
    }
    out.extend(map);
    Value::Object(out)
}

pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn check_name(value: &str, rt: &ResourceType, field: &str, causes: &mut Vec<Cause>) {
    let (re, max, what, example, pattern) = if rt.special == Special::Namespace {
        (
            &*DNS_LABEL,
            63,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            "'my-name',  or '123-abc'",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
        )
    } else {
        (
            &*DNS_SUBDOMAIN,
            253,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "'example.com'",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
        )
    };
    let v = Value::String(value.into());
    if value.len() > max {
        causes.push(Cause::invalid(
            field,
            &v,
            format!("must be no more than {max} characters"),
        ));
    } else if !re.is_match(value) {
        causes.push(Cause::invalid(
            field,
            &v,
            format!("{what} (e.g. {example}, regex used for validation is '{pattern}')"),
        ));
    }
}

fn check_qualified_name(key: &str, field: &str, causes: &mut Vec<Cause>) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let v = Value::String(key.into());
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 || !DNS_SUBDOMAIN.is_match(prefix) {
            causes.push(Cause::invalid(
                field,
                &v,
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            ));
        }
    }
    if name.is_empty() || name.len() > 63 || !QUALIFIED_NAME.is_match(name) {
        causes.push(Cause::invalid(
            field,
            &v,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with at most 63 characters",
        ));
    }
}

/// Checks the client-controlled metadata of an object about to be stored.
pub fn validate(meta: &Value, rt: &ResourceType) -> Vec<Cause> {
    let mut causes = Vec::new();
    match meta.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => check_name(name, rt, "metadata.name", &mut causes),
        _ => causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        )),
    }
    match meta.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (key, value) in labels {
                let field = "metadata.labels";
                check_qualified_name(key, field, &mut causes);
                match value.as_str() {
                    Some(v) if v.is_empty() || (v.len() <= 63 && QUALIFIED_NAME.is_match(v)) => {}
                    Some(v) => causes.push(Cause::invalid(
                        field,
                        &Value::String(v.into()),
                        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?') with at most 63 characters",
                    )),
                    None => causes.push(Cause::invalid(
                        format!("metadata.labels[{key}]"),
                        value,
                        "must be a string",
                    )),
                }
            }
        }
        Some(other) => causes.push(Cause::invalid(
            "metadata.labels",
            other,
            "must be an object",
        )),
    }
    match meta.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(annotations)) => {
            for (key, value) in annotations {
                check_qualified_name(key, "metadata.annotations", &mut causes);
                if !value.is_string() {
                    causes.push(Cause::invalid(
                        format!("metadata.annotations[{key}]"),
                        value,
                        "must be a string",
                    ));
                }
            }
        }
        Some(other) => causes.push(Cause::invalid(
            "metadata.annotations",
            other,
            "must be an object",
        )),
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(f) => {
                        check_qualified_name(f, &format!("metadata.finalizers[{i}]"), &mut causes)
                    }
                    None => causes.push(Cause::invalid(
                        format!("metadata.finalizers[{i}]"),
                        item,
                        "must be a string",
                    )),
                }
            }
        }
        Some(other) => causes.push(Cause::invalid(
            "metadata.finalizers",
            other,
            "must be a list of strings",
        )),
    }
    match meta.get("ownerReferences") {
        None | Some(Value::Null) | Some(Value::Array(_)) => {}
        Some(other) => causes.push(Cause::invalid(
            "metadata.ownerReferences",
            other,
            "must be a list",
        )),
    }
    causes
}

pub fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

/// Human-readable age as kubectl prints it (`5s`, `3m20s`, `4h`, `2d3h`, ...).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Age of an RFC 3339 timestamp, or `None` if it does not parse.
pub fn age(timestamp: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    let seconds = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    Some(human_duration(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn ages_print_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(3600 * 5 + 60 * 7), "5h7m");
        assert_eq!(human_duration(86400 * 3 + 3600), "3d1h");
    }

    #[test]
    fn metadata_syntax() {
        let registry = Registry::build(std::iter::empty());
        let cm = registry.find("", "v1", "configmaps").unwrap();
        let ns = registry.find("", "v1", "namespaces").unwrap();
        assert!(validate(
            &json!({"name": "a.b-c", "labels": {"app.kubernetes.io/name": "x"}}),
            &cm
        )
        .is_empty());
        assert_eq!(validate(&json!({"name": "Bad_Name"}), &cm).len(), 1);
        assert_eq!(validate(&json!({"name": "a.b"}), &ns).len(), 1);
        assert_eq!(
            validate(&json!({}), &cm)[0].line(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(
            validate(&json!({"name": "a", "labels": {"k": "bad value"}}), &cm).len(),
            1
        );
        assert_eq!(
            validate(&json!({"name": "a", "finalizers": [1]}), &cm).len(),
            1
        );
    }

    #[test]
    fn ordering() {
        let o = ordered(
            json!({"spec": 1, "metadata": {"uid": "u", "name": "n"}, "kind": "K", "apiVersion": "v"}),
        );
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"apiVersion":"v","kind":"K","metadata":{"name":"n","uid":"u"},"spec":1}"#
        );
    }
}
