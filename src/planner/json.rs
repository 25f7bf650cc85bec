//! JSON value helpers the planner compares and hashes with.

use serde_json::{Map, Value};

/// Structural equality where numbers compare by value (`1 == 1.0`) and object key
/// order does not matter: the shadow engine's rule, so that the planner and the data
/// plane agree on what "equal" means (AWS may echo `1.0` as `1`).
pub use crate::shadow::values_equal;

/// Equality of two optional values where absent and `null` are the same thing: in a
/// shadow, setting a key to `null` removes it.
pub fn present_equal(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (non_null(a), non_null(b)) {
        (None, None) => true,
        (Some(x), Some(y)) => values_equal(x, y),
        _ => false,
    }
}

/// `None` for an absent value or `null`.
pub fn non_null(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// Compact JSON with object keys sorted at every level, so that the key order of a
/// manifest does not change a hash computed over it.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

/// [`canonical_json`] of an object given as a map.
pub fn canonical_map(m: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_canonical_map(m, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => write_canonical_map(m, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Display of a scalar Value is its compact JSON text.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_canonical_map(m: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        write_canonical(&m[k], out);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(values_equal(&json!(1), &json!(1.0)));
        assert!(values_equal(&json!(-3), &json!(-3.0)));
        assert!(!values_equal(&json!(1), &json!(1.5)));
        assert!(values_equal(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!values_equal(&json!(u64::MAX), &json!(i64::MAX)));
        assert!(!values_equal(&json!(1), &json!("1")));
    }

    #[test]
    fn containers_compare_deeply_and_ignore_key_order() {
        assert!(values_equal(
            &json!({"a": [1, {"b": 2.0}], "c": true}),
            &json!({"c": true, "a": [1.0, {"b": 2}]})
        ));
        assert!(!values_equal(&json!([1, 2]), &json!([2, 1])));
        assert!(!values_equal(&json!([1, 2]), &json!([1, 2, 3])));
        assert!(!values_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!values_equal(&json!({"a": 1}), &json!({"b": 1})));
    }

    #[test]
    fn absent_and_null_are_the_same() {
        assert!(present_equal(None, Some(&Value::Null)));
        assert!(present_equal(None, None));
        assert!(!present_equal(None, Some(&json!(0))));
        assert!(present_equal(Some(&json!(2)), Some(&json!(2.0))));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": {"y": 1, "x": [ {"q": 1, "p": 2} ]}, "a": "s\"t"});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":"s\"t","b":{"x":[{"p":2,"q":1}],"y":1}}"#
        );
    }
}
