//! `meta.k8s.io` Table answers, which `kubectl get` asks for to print columns: a CRD's
//! `additionalPrinterColumns` (after `Name`), or a built-in type's usual columns.

use serde_json::{json, Value};

use crate::meta::age;
use crate::registry::{Column, ColumnSource, Version};

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn column_definition(c: &Column) -> Value {
    json!({
        "name": c.name,
        "type": c.type_,
        "format": c.format,
        "description": c.description,
        "priority": c.priority,
    })
}

/// Turns one value into a cell of the column's type, as the CRD table convertor does.
fn cell_for(type_: &str, value: &Value) -> Value {
    match type_ {
        "integer" => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => value.clone(),
            Value::Number(n) => n.as_f64().map(|f| json!(f as i64)).unwrap_or(Value::Null),
            _ => Value::Null,
        },
        "number" => match value {
            Value::Number(_) => value.clone(),
            _ => Value::Null,
        },
        "boolean" => match value {
            Value::Bool(_) => value.clone(),
            _ => Value::Null,
        },
        "date" => match value.as_str() {
            Some(s) => age(s).map(Value::String).unwrap_or(Value::String(s.into())),
            None => Value::Null,
        },
        _ => match value {
            Value::String(s) => Value::String(s.clone()),
            Value::Null => Value::Null,
            other => Value::String(other.to_string()),
        },
    }
}

fn cell(column: &Column, object: &Value) -> Value {
    match &column.source {
        ColumnSource::Name => object["metadata"]["name"].clone(),
        ColumnSource::Age => cell_for("date", &object["metadata"]["creationTimestamp"]),
        ColumnSource::Path(path) => match path.find(object).first() {
            Some(v) => cell_for(&column.type_, v),
            None => Value::Null,
        },
        ColumnSource::DataCount => {
            let count = |k: &str| object[k].as_object().map_or(0, |m| m.len());
            json!(count("data") + count("binaryData"))
        }
        ColumnSource::EventObject => {
            let involved = object
                .get("involvedObject")
                .or_else(|| object.get("regarding"))
                .cloned()
                .unwrap_or(Value::Null);
            json!(format!(
                "{}/{}",
                involved["kind"].as_str().unwrap_or_default().to_lowercase(),
                involved["name"].as_str().unwrap_or_default()
            ))
        }
        ColumnSource::EventLastSeen => {
            let stamp = ["lastTimestamp", "deprecatedLastTimestamp", "eventTime"]
                .iter()
                .filter_map(|k| object[*k].as_str())
                .next()
                .or_else(|| object["series"]["lastObservedTime"].as_str())
                .or_else(|| object["metadata"]["creationTimestamp"].as_str());
            match stamp {
                Some(s) => json!(age(s).unwrap_or_else(|| s.to_string())),
                None => json!("<unknown>"),
            }
        }
    }
}

fn row_object(object: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(object.clone()),
        IncludeObject::Metadata => {
            let mut meta = object["metadata"].clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            Some(json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }))
        }
    }
}

/// A Table of served-form objects.
pub fn table(
    version: &Version,
    table_api_version: &str,
    objects: &[Value],
    include: IncludeObject,
    list_meta: Value,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = version.columns.iter().map(|c| cell(c, o)).collect();
            let mut row = json!({"cells": cells});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": table_api_version,
        "metadata": list_meta,
        "columnDefinitions": version.columns.iter().map(column_definition).collect::<Vec<_>>(),
        "rows": rows,
    })
}
