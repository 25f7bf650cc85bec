//! A model of AWS's shadow merge and delta, written from the developer guide rather than
//! from `shadowsync::shadow`, and JSON helpers for checking documents.

use serde_json::{Map, Value};

/// Levels of objects and arrays: a scalar is 0 (what AWS's "maximum is 6" counts).
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

pub fn contains_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(m) => m.values().any(contains_null),
        Value::Array(a) => a.iter().any(contains_null),
        _ => false,
    }
}

/// A `null` anywhere inside an array.
pub fn null_in_array(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.values().any(null_in_array),
        Value::Array(a) => a.iter().any(contains_null),
        _ => false,
    }
}

/// JSON equality with numbers compared by value and objects as unordered maps.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The merge: objects merge key by key, `null` removes, arrays and scalars replace, an
/// object merged onto a non-object replaces it, and an object emptied by the patch's
/// removals disappears (an explicit `{}` stays).
pub fn model_merge(target: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    let mut out = target.clone();
    for (k, pv) in patch {
        match pv {
            Value::Null => {
                out.shift_remove(k);
            }
            Value::Object(pc) => {
                let base = match out.get(k) {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                let merged = model_merge(&base, pc);
                if merged.is_empty() && !pc.is_empty() {
                    out.shift_remove(k);
                } else {
                    out.insert(k.clone(), Value::Object(merged));
                }
            }
            leaf => {
                out.insert(k.clone(), leaf.clone());
            }
        }
    }
    out
}

/// The desired values the reported state does not hold (`None`: none).
pub fn model_delta(desired: &Value, reported: Option<&Value>) -> Option<Value> {
    match (desired, reported) {
        (Value::Object(d), Some(Value::Object(r))) => {
            let out: Map<String, Value> = d
                .iter()
                .filter_map(|(k, v)| model_delta(v, r.get(k)).map(|x| (k.clone(), x)))
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (_, Some(r)) if same(desired, r) => None,
        _ => Some(desired.clone()),
    }
}

/// `{"desired":..,"reported":..}` compact, empty sections left out: what the document
/// size limit applies to.
pub fn document_bytes(desired: &Map<String, Value>, reported: &Map<String, Value>) -> usize {
    let mut doc = Map::new();
    if !desired.is_empty() {
        doc.insert("desired".into(), Value::Object(desired.clone()));
    }
    if !reported.is_empty() {
        doc.insert("reported".into(), Value::Object(reported.clone()));
    }
    Value::Object(doc).to_string().len()
}
