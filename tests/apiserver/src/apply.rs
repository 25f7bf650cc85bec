//! Server-side apply, simplified: the applied configuration is merged into the object
//! (maps recursively, lists and scalars replaced whole). Each applier's set of leaf fields is
//! kept in `metadata.managedFields` (`operation: Apply`, FieldsV1), which gives two real
//! behaviours cheaply: a field an applier stops mentioning is removed unless another applier
//! owns it, and applying a different value to a field another applier owns is a 409
//! conflict unless `force=true` (which moves the field to the new owner). Fields written by
//! update, merge or JSON patch are not tracked, so they never conflict.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

type FieldPath = Vec<String>;
type FieldSet = BTreeSet<FieldPath>;

/// A rejected apply: the conflicting (manager, field path) pairs.
#[derive(Debug)]
pub struct Conflicts(pub Vec<(String, String)>);

impl Conflicts {
    pub fn message(&self) -> String {
        let n = self.0.len();
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(m, f)| format!("conflict with {m:?}: {f}"))
            .collect();
        format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            parts.join(", ")
        )
    }

    pub fn causes(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|(m, f)| {
                    json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m:?}"), "field": f})
                })
                .collect(),
        )
    }
}

/// Which part of an object an apply is about.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scope {
    /// The main resource: everything but status (when status is a subresource) and the
    /// server-owned metadata.
    Main {
        status_is_subresource: bool,
    },
    Status,
}

impl Scope {
    fn subresource(self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
        }
    }
}

/// The fields of `applied` that the applier states, as leaf paths.
fn applied_fields(applied: &Value, scope: Scope) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(map) = applied.as_object() else {
        return set;
    };
    for (key, value) in map {
        let take = match scope {
            Scope::Status => key == "status",
            Scope::Main {
                status_is_subresource,
            } => match key.as_str() {
                "apiVersion" | "kind" => false,
                "status" => !status_is_subresource,
                _ => true,
            },
        };
        if !take {
            continue;
        }
        if key == "metadata" {
            for meta_key in crate::meta::CLIENT_FIELDS {
                if let Some(v) = value.get(*meta_key) {
                    leaves(
                        v,
                        &mut vec!["metadata".to_string(), (*meta_key).to_string()],
                        &mut set,
                        meta_key == &"labels" || meta_key == &"annotations",
                    );
                }
            }
            continue;
        }
        leaves(value, &mut vec![key.clone()], &mut set, true);
    }
    set
}

fn leaves(value: &Value, path: &mut FieldPath, out: &mut FieldSet, descend: bool) {
    match value {
        Value::Object(map) if descend && !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                leaves(v, path, out, true);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for part in path {
            node = node
                .entry(format!("f:{part}"))
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(fields: &Value) -> FieldSet {
    fn walk(node: &Map<String, Value>, path: &mut FieldPath, out: &mut FieldSet) {
        let children: Vec<(&String, &Value)> =
            node.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, v) in children {
            path.push(k[2..].to_string());
            match v.as_object() {
                Some(child) => walk(child, path, out),
                None => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    if let Some(map) = fields.as_object() {
        walk(map, &mut Vec::new(), &mut out);
    }
    out
}

fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for part in path {
        current = current.get(part.as_str())?;
    }
    Some(current)
}

fn remove_at(object: &mut Value, path: &FieldPath) {
    remove_at_exact(object, path);
    // Maps the removal left empty were only there to hold the removed field.
    for depth in (1..path.len()).rev() {
        let parent = &path[..depth];
        let empty =
            value_at(object, parent).is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
        if !empty {
            break;
        }
        remove_at_exact(object, parent);
    }
}

fn remove_at_exact(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = object;
    for part in parents {
        match current.get_mut(part.as_str()) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(map) = current.as_object_mut() {
        map.remove(last);
    }
}

fn merge_into(target: &mut Value, source: &Value) {
    match (target, source) {
        (Value::Object(t), Value::Object(s)) => {
            for (k, v) in s {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_into(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, s) => *t = s.clone(),
    }
}

fn path_text(path: &FieldPath) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

struct Entry {
    manager: String,
    apply: bool,
    subresource: String,
    fields: FieldSet,
    raw: Value,
}

fn entries(object: Option<&Value>) -> Vec<Entry> {
    object
        .and_then(|o| o["metadata"]["managedFields"].as_array())
        .into_iter()
        .flatten()
        .map(|raw| Entry {
            manager: raw["manager"].as_str().unwrap_or_default().to_string(),
            apply: raw["operation"].as_str() == Some("Apply"),
            subresource: raw["subresource"].as_str().unwrap_or_default().to_string(),
            fields: from_fields_v1(&raw["fieldsV1"]),
            raw: raw.clone(),
        })
        .collect()
}

/// Applies `applied` for `manager` to `current` (absent: the object is being created).
/// Returns the merged object and its new `managedFields`.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    api_version: &str,
    now: &str,
) -> Result<(Value, Value), Conflicts> {
    let subresource = scope.subresource();
    let mine = applied_fields(applied, scope);
    let mut entries = entries(current);
    let mut conflicts = Vec::new();
    if let Some(current) = current {
        for entry in entries
            .iter()
            .filter(|e| e.apply && e.manager != manager && e.subresource == subresource)
        {
            for path in entry.fields.intersection(&mine) {
                if value_at(current, path) != value_at(applied, path) {
                    conflicts.push((entry.manager.clone(), path_text(path)));
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Conflicts(conflicts));
    }
    let previous: FieldSet = entries
        .iter()
        .find(|e| e.apply && e.manager == manager && e.subresource == subresource)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    // With force, the fields in conflict move to this applier; equal values stay shared.
    for (other, field) in &conflicts {
        for entry in entries
            .iter_mut()
            .filter(|e| e.apply && e.manager == *other && e.subresource == subresource)
        {
            entry.fields.retain(|p| path_text(p) != *field);
        }
    }
    let mut merged = current.cloned().unwrap_or_else(|| json!({}));
    for path in previous.difference(&mine) {
        let owned_by_other = entries
            .iter()
            .any(|e| e.apply && e.manager != manager && e.fields.contains(path));
        if !owned_by_other {
            remove_at(&mut merged, path);
        }
    }
    let mut content = applied.clone();
    if let Some(map) = content.as_object_mut() {
        match scope {
            Scope::Status => map.retain(|k, _| k == "status"),
            Scope::Main {
                status_is_subresource: true,
            } => {
                map.remove("status");
            }
            Scope::Main { .. } => {}
        }
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| crate::meta::CLIENT_FIELDS.contains(&k.as_str()));
        }
    }
    merge_into(&mut merged, &content);

    let mut managed = Vec::new();
    let mut placed = false;
    for entry in entries {
        if entry.apply && entry.manager == manager && entry.subresource == subresource {
            placed = true;
            managed.push(new_entry(manager, &mine, scope, api_version, now));
        } else if entry.apply && entry.subresource == subresource {
            if !entry.fields.is_empty() {
                let mut raw = entry.raw.clone();
                raw["fieldsV1"] = to_fields_v1(&entry.fields);
                managed.push(raw);
            }
        } else {
            managed.push(entry.raw);
        }
    }
    if !placed {
        managed.push(new_entry(manager, &mine, scope, api_version, now));
    }
    Ok((merged, Value::Array(managed)))
}

fn new_entry(
    manager: &str,
    fields: &FieldSet,
    scope: Scope,
    api_version: &str,
    now: &str,
) -> Value {
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(fields),
    });
    if scope == Scope::Status {
        entry["subresource"] = json!("status");
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main {
        status_is_subresource: true,
    };

    fn run(
        current: Option<&Value>,
        applied: Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, Conflicts> {
        apply(current, &applied, manager, force, MAIN, "x/v1", "t").map(|(mut obj, mf)| {
            obj["metadata"]["managedFields"] = mf;
            obj
        })
    }

    #[test]
    fn merges_and_removes_only_own_dropped_fields() {
        let first = run(
            None,
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"a": 1, "b": {"c": 2}}}),
            "one",
            false,
        )
        .unwrap();
        assert_eq!(first["spec"], json!({"a": 1, "b": {"c": 2}}));
        // Someone else (not an applier) adds a field: the next apply keeps it.
        let mut edited = first.clone();
        edited["spec"]["other"] = json!(true);
        let second = run(
            Some(&edited),
            json!({"metadata": {"name": "a"}, "spec": {"a": 5}}),
            "one",
            false,
        )
        .unwrap();
        assert_eq!(second["spec"], json!({"a": 5, "other": true}));
        assert!(second["metadata"].get("labels").is_none());
    }

    #[test]
    fn conflicts_between_appliers_unless_forced() {
        let first = run(None, json!({"spec": {"a": 1}}), "one", false).unwrap();
        // Same value: shared ownership, no conflict.
        let shared = run(Some(&first), json!({"spec": {"a": 1}}), "two", false).unwrap();
        let err = run(Some(&shared), json!({"spec": {"a": 2}}), "two", false).unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"one\": .spec.a"
        );
        let forced = run(Some(&shared), json!({"spec": {"a": 2}}), "two", true).unwrap();
        assert_eq!(forced["spec"]["a"], 2);
        // "one" no longer owns spec.a, so it can stop mentioning it without removing it.
        let after = run(Some(&forced), json!({"spec": {}}), "one", false).unwrap();
        assert_eq!(after["spec"]["a"], 2);
    }

    #[test]
    fn status_scope_touches_only_status() {
        let obj = json!({"spec": {"a": 1}, "status": {"old": true}});
        let (merged, mf) = apply(
            Some(&obj),
            &json!({"spec": {"a": 9}, "status": {"ready": true}}),
            "ctl",
            false,
            Scope::Status,
            "x/v1",
            "t",
        )
        .unwrap();
        assert_eq!(merged["spec"]["a"], 1);
        assert_eq!(merged["status"], json!({"old": true, "ready": true}));
        assert_eq!(mf[0]["subresource"], "status");
        assert_eq!(mf[0]["fieldsV1"], json!({"f:status": {"f:ready": {}}}));
    }
}
