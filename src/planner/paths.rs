//! JSON pointers (RFC 6901) over a shadow's desired section.
//!
//! Ownership is tracked per leaf: a scalar, an array (arrays are replaced whole by an
//! update, so their elements cannot be owned separately) or `null`. Pointers only
//! descend through objects, matching how a shadow update merges.

use serde_json::{Map, Value};

/// Escapes one object key as a pointer token (`~` as `~0`, `/` as `~1`).
pub fn escape_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Splits a pointer into unescaped object keys. `""` is the root (no keys); anything
/// else must start with `/`. `None` for a malformed pointer (missing leading `/`, or a
/// `~` not followed by `0` or `1`).
pub fn parse_pointer(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .map(unescape_token)
        .collect()
}

fn unescape_token(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Builds a pointer from unescaped object keys.
pub fn pointer_from_keys<S: AsRef<str>>(keys: &[S]) -> String {
    keys.iter()
        .map(|k| format!("/{}", escape_token(k.as_ref())))
        .collect()
}

/// Whether `ancestor` is a proper ancestor of `path` (both pointers).
pub fn is_ancestor(ancestor: &str, path: &str) -> bool {
    path.len() > ancestor.len()
        && path.starts_with(ancestor)
        && path.as_bytes()[ancestor.len()] == b'/'
}

/// Sorted pointers of every leaf of `desired`. Scalars, `null` and arrays are leaves;
/// an empty object has no leaves (so it owns nothing).
pub fn leaf_paths(desired: &Map<String, Value>) -> Vec<String> {
    leaves(desired).into_iter().map(|(p, _)| p).collect()
}

/// Every leaf of `desired` with its value, sorted by pointer.
pub fn leaves(desired: &Map<String, Value>) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    collect_leaves(desired, &mut String::new(), &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn collect_leaves<'a>(
    map: &'a Map<String, Value>,
    prefix: &mut String,
    out: &mut Vec<(String, &'a Value)>,
) {
    for (key, value) in map {
        let len = prefix.len();
        prefix.push('/');
        prefix.push_str(&escape_token(key));
        match value {
            Value::Object(child) => collect_leaves(child, prefix, out),
            leaf => out.push((prefix.clone(), leaf)),
        }
        prefix.truncate(len);
    }
}

/// The value at `pointer`, descending through objects only (arrays are leaves).
/// `None` if a key is missing, an intermediate value is not an object, or the pointer
/// is malformed. `""` is `doc` itself.
pub fn lookup<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    let keys = parse_pointer(pointer)?;
    let mut node = doc;
    for key in &keys {
        node = node.as_object()?.get(key)?;
    }
    Some(node)
}

/// Sets `value` at `pointer` inside `target`, creating intermediate objects and
/// replacing an intermediate non-object (the patch expresses "this subtree becomes an
/// object"). Returns `false`, leaving `target` untouched, for a malformed pointer or
/// the root, which cannot be set inside a map.
pub fn set_pointer(target: &mut Map<String, Value>, pointer: &str, value: Value) -> bool {
    let Some(keys) = parse_pointer(pointer) else {
        return false;
    };
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut node = target;
    for key in parents {
        let child = node
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(map) = child else {
            unreachable!("replaced by an object just above")
        };
        node = map;
    }
    node.insert(last.clone(), value);
    true
}

/// A patch object from `(pointer, value)` pairs, applied in order (a later pair wins).
/// Malformed pointers and the root are skipped.
pub fn patch_from_pairs<I>(pairs: I) -> Map<String, Value>
where
    I: IntoIterator<Item = (String, Value)>,
{
    let mut patch = Map::new();
    for (pointer, value) in pairs {
        set_pointer(&mut patch, &pointer, value);
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn leaf_paths_are_sorted_pointers_with_arrays_as_leaves() {
        let d = obj(json!({
            "power": "on",
            "color": {"r": 255, "g": 180},
            "list": [1, {"x": 2}],
            "empty": {},
            "gone": null,
            "nested": {"deeper": {"v": true}}
        }));
        assert_eq!(
            leaf_paths(&d),
            vec![
                "/color/g",
                "/color/r",
                "/gone",
                "/list",
                "/nested/deeper/v",
                "/power"
            ]
        );
    }

    #[test]
    fn leaf_paths_escape_tilde_and_slash() {
        let d = obj(json!({"a/b": 1, "m~n": {"": 2}}));
        assert_eq!(leaf_paths(&d), vec!["/a~1b", "/m~0n/"]);
        let doc = Value::Object(d);
        assert_eq!(lookup(&doc, "/a~1b"), Some(&json!(1)));
        assert_eq!(lookup(&doc, "/m~0n/"), Some(&json!(2)));
    }

    #[test]
    fn escape_round_trips_through_parse() {
        for key in ["plain", "a/b", "~", "~1", "/~0/", ""] {
            let p = pointer_from_keys(&[key, "x"]);
            assert_eq!(parse_pointer(&p), Some(vec![key.to_string(), "x".into()]));
        }
    }

    #[test]
    fn malformed_pointers_are_rejected() {
        assert_eq!(parse_pointer("no-slash"), None);
        assert_eq!(parse_pointer("/bad~2"), None);
        assert_eq!(parse_pointer("/trailing~"), None);
        assert_eq!(lookup(&json!({"a": 1}), "a"), None);
        assert_eq!(parse_pointer(""), Some(vec![]));
    }

    #[test]
    fn lookup_descends_objects_only() {
        let doc = json!({"a": {"b": [10, 20]}, "s": "x"});
        assert_eq!(lookup(&doc, "/a/b"), Some(&json!([10, 20])));
        assert_eq!(lookup(&doc, "/a/b/0"), None);
        assert_eq!(lookup(&doc, "/s/t"), None);
        assert_eq!(lookup(&doc, "/missing"), None);
        assert_eq!(lookup(&doc, ""), Some(&doc));
    }

    #[test]
    fn ancestry_respects_token_boundaries() {
        assert!(is_ancestor("/a", "/a/b"));
        assert!(is_ancestor("/a", "/a/b/c"));
        assert!(!is_ancestor("/a", "/ab"));
        assert!(!is_ancestor("/a", "/a"));
        assert!(!is_ancestor("/a/b", "/a"));
        assert!(is_ancestor("/", "//x"));
    }

    #[test]
    fn patches_nest_and_replace_non_object_intermediates() {
        let patch = patch_from_pairs(vec![
            ("/color/r".to_string(), json!(255)),
            ("/color/g".to_string(), Value::Null),
            ("/power".to_string(), json!("on")),
            ("/s".to_string(), json!(1)),
            ("/s/t".to_string(), json!(2)),
            ("bad".to_string(), json!(3)),
            ("".to_string(), json!(4)),
        ]);
        assert_eq!(
            Value::Object(patch),
            json!({"color": {"r": 255, "g": null}, "power": "on", "s": {"t": 2}})
        );
    }
}
