//! Generators shared by the fuzz targets: JSON values shaped like shadow documents.
//!
//! Keys come mostly from a short list so that updates often hit keys already stored,
//! and numbers mostly from a small range so that `1` and `1.0` meet.

#![allow(dead_code)]

use arbitrary::{Arbitrary, Result, Unstructured};
use serde_json::{Map, Number, Value};

const KEYS: &[&str] = &[
    "a",
    "b",
    "c",
    "power",
    "color",
    "timestamp",
    "state",
    "desired",
    "",
    "x~y",
    "p/q",
    "$v",
    "\u{e4}",
];

const STRINGS: &[&str] = &["on", "off", "", "x", "1", "\u{1f4a1}"];

pub fn key(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 10)? {
        String::arbitrary(u)
    } else {
        Ok(u.choose(KEYS)?.to_string())
    }
}

fn number(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=4)? {
        0 => Value::from(u.int_in_range(-2i64..=2)?),
        1 => Value::from(u.int_in_range(-2i64..=2)? as f64),
        2 => Value::from(i64::arbitrary(u)?),
        3 => Value::from(u64::arbitrary(u)?),
        _ => Number::from_f64(f64::arbitrary(u)?).map_or(Value::from(0.5), Value::Number),
    })
}

/// Knobs for [`value`].
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// `null` as an object value (a removal in an update).
    pub nulls: bool,
    /// `null` inside arrays (refused by AWS).
    pub nulls_in_arrays: bool,
}

pub const STORED: Shape = Shape {
    nulls: false,
    nulls_in_arrays: false,
};
pub const PATCH: Shape = Shape {
    nulls: true,
    nulls_in_arrays: false,
};

/// Any JSON value, at most `depth` levels of objects and arrays.
pub fn value(u: &mut Unstructured<'_>, depth: usize, shape: Shape) -> Result<Value> {
    let kinds = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 if shape.nulls => Value::Null,
        0 | 1 => Value::Bool(bool::arbitrary(u)?),
        2 => number(u)?,
        3 => Value::String(u.choose(STRINGS)?.to_string()),
        4 => Value::String(String::arbitrary(u)?),
        5 => array(u, depth - 1, shape)?,
        _ => Value::Object(object(u, depth - 1, shape)?),
    })
}

fn array(u: &mut Unstructured<'_>, depth: usize, shape: Shape) -> Result<Value> {
    let len = u.int_in_range(0..=3)?;
    let inner = Shape {
        nulls: shape.nulls_in_arrays,
        ..shape
    };
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
        items.push(value(u, depth, inner)?);
    }
    Ok(Value::Array(items))
}

/// An object with up to four keys, values at most `depth` levels deep.
pub fn object(u: &mut Unstructured<'_>, depth: usize, shape: Shape) -> Result<Map<String, Value>> {
    let len = u.int_in_range(0..=4)?;
    let mut map = Map::new();
    for _ in 0..len {
        let k = key(u)?;
        let v = value(u, depth, shape)?;
        map.insert(k, v);
    }
    Ok(map)
}
