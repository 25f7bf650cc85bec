//! The desired state the shadows of a fleet share, for `import --thing-group`.
//!
//! Pure. A leaf (in the sense of [`crate::planner::paths::leaves`]: a scalar or an
//! array; an empty object has none) is shared when every shadow holds it with an equal
//! value (numbers compared by value, `1 == 1.0`). A `ThingShadowSet` whose template
//! declares exactly the shared leaves is in sync on every one of those shadows: applying
//! it writes nothing to them, and leaves the other leaves to whoever writes them now.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::planner::json::values_equal;
use crate::planner::paths::{leaves, parse_pointer, patch_from_pairs};

/// What the shadows share.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Shared {
    /// The shared leaves as a desired section; `None` when none is shared.
    pub(super) desired: Option<Map<String, Value>>,
    /// The leaves some shadows hold that are not shared (a value that differs, or a
    /// shadow without the leaf), as sorted pointers.
    pub(super) left_out: Vec<String>,
}

/// The leaves every one of `shadows` holds with an equal value.
pub(super) fn shared(shadows: &[&Map<String, Value>]) -> Shared {
    let Some((first, others)) = shadows.split_first() else {
        return Shared::default();
    };
    let common: Vec<(String, Value)> = leaves(first)
        .into_iter()
        .filter(|(path, value)| {
            others.iter().all(|other| {
                lookup(other, path)
                    .is_some_and(|theirs| !theirs.is_object() && values_equal(theirs, value))
            })
        })
        .map(|(path, value)| (path, value.clone()))
        .collect();
    let kept: BTreeSet<&str> = common.iter().map(|(p, _)| p.as_str()).collect();
    let mut left_out = BTreeSet::new();
    for shadow in shadows {
        for (path, _) in leaves(shadow) {
            if !kept.contains(path.as_str()) {
                left_out.insert(path);
            }
        }
    }
    let desired = (!common.is_empty()).then(|| patch_from_pairs(common));
    Shared {
        desired,
        left_out: left_out.into_iter().collect(),
    }
}

/// The value at `pointer` in `map`, descending through objects only.
fn lookup<'a>(map: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let keys = parse_pointer(pointer)?;
    let (last, parents) = keys.split_last()?;
    let mut node = map;
    for key in parents {
        node = node.get(key)?.as_object()?;
    }
    node.get(last)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn of(values: &[Value]) -> Shared {
        let maps: Vec<Map<String, Value>> = values.iter().cloned().map(obj).collect();
        let refs: Vec<&Map<String, Value>> = maps.iter().collect();
        shared(&refs)
    }

    #[test]
    fn only_leaves_equal_everywhere_are_shared() {
        let got = of(&[
            json!({"power": "on", "color": {"r": 255, "g": 1}, "zones": [1, 2], "level": 3}),
            json!({"power": "on", "color": {"r": 255.0, "g": 2}, "zones": [1, 2], "extra": true}),
            json!({"power": "on", "color": {"r": 255, "g": 1}, "zones": [1, 2], "level": 3}),
        ]);
        assert_eq!(
            got.desired.map(Value::Object),
            Some(json!({"power": "on", "color": {"r": 255}, "zones": [1, 2]}))
        );
        assert_eq!(got.left_out, ["/color/g", "/extra", "/level"]);
    }

    #[test]
    fn a_leaf_against_an_object_is_not_shared() {
        let got = of(&[
            json!({"a": 1, "b": {"c": 1}}),
            json!({"a": {"x": 1}, "b": 1}),
        ]);
        assert_eq!(got.desired, None);
        assert_eq!(got.left_out, ["/a", "/a/x", "/b", "/b/c"]);
    }

    #[test]
    fn one_shadow_shares_everything_and_none_shares_nothing() {
        let got = of(&[json!({"a": {"b": [1]}, "e": {}})]);
        assert_eq!(
            got.desired.map(Value::Object),
            Some(json!({"a": {"b": [1]}}))
        );
        assert!(got.left_out.is_empty());
        assert_eq!(shared(&[]), Shared::default());
        let got = of(&[json!({"a": 1}), json!({})]);
        assert_eq!(got.desired, None);
        assert_eq!(got.left_out, ["/a"]);
    }

    #[test]
    fn keys_with_slashes_and_tildes_survive() {
        let doc = json!({"a/b": {"~c": 1}, "d": 2});
        let got = of(&[doc.clone(), doc.clone()]);
        assert_eq!(got.desired.map(Value::Object), Some(doc));
    }
}
