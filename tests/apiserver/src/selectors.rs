//! `labelSelector` and `fieldSelector` query parameters.

use serde_json::Value;

use crate::errors::ApiError;
use crate::registry::{Conversion, ResourceType};

#[derive(Clone, Debug, PartialEq)]
enum LabelOp {
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq)]
struct LabelReq {
    key: String,
    op: LabelOp,
}

#[derive(Clone, Debug, PartialEq)]
struct FieldReq {
    /// Dotted path in the stored object.
    path: String,
    value: String,
    equal: bool,
}

/// A parsed label and field selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Selector {
    pub fn parse(
        labels: Option<&str>,
        fields: Option<&str>,
        rt: &ResourceType,
    ) -> Result<Selector, ApiError> {
        let mut selector = Selector::default();
        if let Some(text) = labels.filter(|t| !t.trim().is_empty()) {
            for part in split_top_level(text) {
                selector.labels.push(parse_label_requirement(part.trim())?);
            }
        }
        if let Some(text) = fields.filter(|t| !t.trim().is_empty()) {
            for part in text.split(',') {
                let part = part.trim();
                let (label, value, equal) = if let Some((l, v)) = part.split_once("!=") {
                    (l, v, false)
                } else if let Some((l, v)) = part.split_once("==") {
                    (l, v, true)
                } else if let Some((l, v)) = part.split_once('=') {
                    (l, v, true)
                } else {
                    return Err(ApiError::bad_request(format!(
                        "invalid selector: '{text}'; can't understand '{part}'"
                    )));
                };
                let path = field_path(label.trim(), rt).ok_or_else(|| {
                    ApiError::bad_request(format!("field label not supported: {}", label.trim()))
                })?;
                selector.fields.push(FieldReq {
                    path,
                    value: value.trim().to_string(),
                    equal,
                });
            }
        }
        Ok(selector)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether a stored object matches.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|req| {
            let value = labels.get(&req.key).and_then(Value::as_str);
            match &req.op {
                LabelOp::Exists => value.is_some(),
                LabelOp::NotExists => value.is_none(),
                LabelOp::In(values) => value.is_some_and(|v| values.iter().any(|x| x == v)),
                LabelOp::NotIn(values) => value.is_none_or(|v| values.iter().all(|x| x != v)),
                LabelOp::Gt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                LabelOp::Lt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        });
        labels_ok
            && self.fields.iter().all(|req| {
                let actual = field_value(object, &req.path);
                (actual == req.value) == req.equal
            })
    }
}

/// The path in the stored object that a field label selects, if the type supports it.
fn field_path(label: &str, rt: &ResourceType) -> Option<String> {
    if label == "metadata.name" || label == "metadata.namespace" {
        return Some(label.to_string());
    }
    let stored = if rt.conversion == Conversion::EventsV1 {
        match label {
            "reportingController" => "reportingComponent".to_string(),
            "deprecatedSource" => "source".to_string(),
            l => match l.strip_prefix("regarding.") {
                Some(rest) => format!("involvedObject.{rest}"),
                None => l.to_string(),
            },
        }
    } else {
        label.to_string()
    };
    if !rt.field_labels.contains(&stored.as_str()) {
        return None;
    }
    Some(if stored == "source" {
        "source.component".to_string()
    } else {
        stored
    })
}

fn field_value(object: &Value, path: &str) -> String {
    let mut current = object;
    for part in path.split('.') {
        match current.get(part) {
            Some(v) => current = v,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_label_requirement(part: &str) -> Result<LabelReq, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {part:?}"));
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelReq {
            key: key.trim().to_string(),
            op: LabelOp::NotExists,
        });
    }
    let set_values = |rest: &str| -> Result<Vec<String>, ApiError> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(bad)?;
        Ok(inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect())
    };
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        if let Some(values) = rest.strip_prefix("notin") {
            return Ok(LabelReq {
                key: words[0].to_string(),
                op: LabelOp::NotIn(set_values(values)?),
            });
        }
        if let Some(values) = rest.strip_prefix("in") {
            return Ok(LabelReq {
                key: words[0].to_string(),
                op: LabelOp::In(set_values(values)?),
            });
        }
    }
    for (token, kind) in [("!=", 0), ("==", 1), ("=", 1), (">", 2), ("<", 3)] {
        if let Some((key, value)) = part.split_once(token) {
            let key = key.trim().to_string();
            let value = value.trim().to_string();
            if key.is_empty() {
                return Err(bad());
            }
            let op = match kind {
                0 => LabelOp::NotIn(vec![value]),
                1 => LabelOp::In(vec![value]),
                2 => LabelOp::Gt(value.parse().map_err(|_| bad())?),
                _ => LabelOp::Lt(value.parse().map_err(|_| bad())?),
            };
            return Ok(LabelReq { key, op });
        }
    }
    if part.is_empty() || part.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(LabelReq {
        key: part.to_string(),
        op: LabelOp::Exists,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    fn rt(plural: &str) -> std::sync::Arc<ResourceType> {
        Registry::build(std::iter::empty())
            .find("", "v1", plural)
            .unwrap()
    }

    #[test]
    fn label_selectors() {
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "1"}}});
        let cm = rt("configmaps");
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web, db)",
            "app notin (db)",
            "app",
            "!missing",
            "tier>0",
            "app=web,tier<2",
        ];
        for s in yes {
            assert!(
                Selector::parse(Some(s), None, &cm).unwrap().matches(&obj),
                "{s}"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "missing",
            "!app",
            "tier>1",
        ];
        for s in no {
            assert!(
                !Selector::parse(Some(s), None, &cm).unwrap().matches(&obj),
                "{s}"
            );
        }
    }

    #[test]
    fn field_selectors() {
        let cm = rt("configmaps");
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(Selector::parse(None, Some("metadata.name=a"), &cm)
            .unwrap()
            .matches(&obj));
        assert!(
            !Selector::parse(None, Some("metadata.name=a,metadata.namespace!=ns"), &cm)
                .unwrap()
                .matches(&obj)
        );
        let err = Selector::parse(None, Some("spec.x=1"), &cm).unwrap_err();
        assert_eq!(err.code, 400);
        let ev = rt("events");
        let event = json!({"metadata": {"name": "e"}, "involvedObject": {"name": "lamp"}, "source": {"component": "op"}});
        assert!(
            Selector::parse(None, Some("involvedObject.name=lamp,source=op"), &ev)
                .unwrap()
                .matches(&event)
        );
    }
}
