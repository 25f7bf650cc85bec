//! Names and revisions of a set's children: pure and deterministic.

use sha2::{Digest, Sha256};

use crate::api::ShadowTemplate;
use crate::planner::json::canonical_json;

/// Longest child name: a DNS-1123 label, valid for every object and label value.
const MAX_NAME: usize = 63;
/// Hex digits of the thing's hash that end every child name.
const HASH_DIGITS: usize = 8;

/// The name of `thing`'s child in set `set`: `<set>-<thing>-<hash>`, lower case, other
/// characters as `-`, cut to fit 63 characters, ending with 8 hex digits of the SHA-256
/// of the exact thing name. The hash keeps names apart that read the same once cut or
/// lower-cased (`Lamp_1`, `lamp-1`), and sets whose names run into each other (`a` with
/// thing `b-c`, `a-b` with thing `c`).
pub fn child_name(set: &str, thing: &str) -> String {
    let hash = hex::encode(Sha256::digest(thing.as_bytes()));
    let mut base = sanitize(&format!("{set}-{thing}"));
    base.truncate(MAX_NAME - HASH_DIGITS - 1);
    while base.ends_with('-') {
        base.pop();
    }
    if base.is_empty() {
        base.push_str("thing");
    }
    format!("{base}-{}", &hash[..HASH_DIGITS])
}

/// Lower-case ASCII letters and digits; every run of other characters becomes one `-`;
/// no `-` at either end. Also what `import` derives manifest names from.
pub fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The revision of a template: the first 10 hex digits of the SHA-256 of its canonical
/// JSON (keys sorted, defaults filled in), so that the same template always has the same
/// revision, whatever order its YAML was written in.
pub fn revision(template: &ShadowTemplate) -> String {
    // A template is plain data: it always serializes.
    let value = serde_json::to_value(template).expect("a template serializes to JSON");
    let digest = Sha256::digest(canonical_json(&value).as_bytes());
    hex::encode(digest)[..10].to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(value: serde_json::Value) -> ShadowTemplate {
        serde_json::from_value(value).expect("a template")
    }

    fn is_label(name: &str) -> bool {
        (1..=MAX_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn child_names_are_labels_unique_per_thing_and_stable() {
        assert_eq!(child_name("lamps", "lamp-1"), child_name("lamps", "lamp-1"));
        assert!(child_name("lamps", "lamp-1").starts_with("lamps-lamp-1-"));
        let pairs = [
            ("lamps", "Lamp_1"),
            ("lamps", "lamp-1"),
            ("lamps", "lamp:1"),
            ("a", "b-c"),
            ("a-b", "c"),
            ("s", &"x".repeat(128)),
            ("s", &"x".repeat(127)),
            (&"s".repeat(63), "t"),
            ("s", "___"),
        ];
        let names: Vec<String> = pairs.iter().map(|(s, t)| child_name(s, t)).collect();
        for name in &names {
            assert!(is_label(name), "{name}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:#?}");
    }

    #[test]
    fn the_revision_follows_the_content_not_the_spelling() {
        let a = template(json!({"desired": {"a": 1, "b": {"c": true}}}));
        let b = template(json!({"desired": {"b": {"c": true}, "a": 1}, "refreshInterval": "5m"}));
        assert_eq!(revision(&a), revision(&b));
        assert_eq!(revision(&a).len(), 10);
        let c = template(json!({"desired": {"a": 2, "b": {"c": true}}}));
        assert_ne!(revision(&a), revision(&c));
        let d =
            template(json!({"desired": {"a": 1, "b": {"c": true}}, "deletionPolicy": "Retain"}));
        assert_ne!(revision(&a), revision(&d));
    }
}
