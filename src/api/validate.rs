//! Validation of specs before any data-plane call.
//!
//! The CRD schema checks much of this too, but the offline CLI (`shadowsync apply`) has no
//! apiserver, and a stored object may predate a schema change: every rule is checked here,
//! and every broken rule is reported (not only the first), each with the field path and the
//! rule, so that a `Stalled` condition says exactly what and where.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::{KeyRef, PayloadSource, RetainedMessageSpec, ThingShadowSpec};
pub use crate::dataplane::ShadowLimits;
use crate::dataplane::GREENGRASS_SHADOW;

/// Longest thing name (bytes; the allowed characters are ASCII).
pub const MAX_THING_NAME: usize = 128;
/// Longest shadow name (bytes; the allowed characters are ASCII).
pub const MAX_SHADOW_NAME: usize = 64;
/// Longest topic, in bytes of UTF-8.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most `/` in a topic (so at most 8 levels).
pub const MAX_TOPIC_SLASHES: usize = 7;
/// Longest message expiry interval: 7 days, AWS IoT Core's maximum message expiry interval.
/// The CRD schema carries the same bound.
pub const MAX_MESSAGE_EXPIRY_SECONDS: u64 = 604_800;
/// MQTT 5 binary data (correlation data) is at most 65535 bytes.
pub const MAX_CORRELATION_DATA_BYTES: usize = 65_535;
/// Shortest non-zero refresh interval: shorter ones would spend the rate limit (and money)
/// on reads.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest Secret/ConfigMap name and key.
pub const MAX_KEY_REF_LENGTH: usize = 253;

/// Values longer than this (in characters) are cut in messages.
const SHOWN_VALUE_CHARS: usize = 64;

/// One broken rule: where (`spec.thingName`), the offending value when it helps, and the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, from the resource root: `spec.desired.zones[2]`.
    pub field: String,
    /// The offending value, when showing it helps (never a whole payload).
    pub value: Option<String>,
    /// What the value must be: `must match [a-zA-Z0-9:_-]{1,128}`.
    pub rule: String,
}

impl FieldError {
    /// A broken rule on `field`, showing `value`.
    pub fn new(field: impl Into<String>, value: Option<&str>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            value: value.map(str::to_owned),
            rule: rule.into(),
        }
    }
}

/// `spec.thingName "bad name!": must match [a-zA-Z0-9:_-]{1,128}`; a long value is cut and
/// marked with `...` after the closing quote.
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.field)?;
        if let Some(value) = &self.value {
            let shown: String = value.chars().take(SHOWN_VALUE_CHARS).collect();
            write!(f, " {shown:?}")?;
            if shown.len() < value.len() {
                f.write_str("...")?;
            }
        }
        write!(f, ": {}", self.rule)
    }
}

impl std::error::Error for FieldError {}

/// All errors on one line, separated by `; ` (for a condition message or an Event).
pub fn format_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// How messages name the shadow a `ThingShadow` targets.
pub fn shadow_target(thing_name: &str, shadow_name: Option<&str>) -> String {
    match shadow_name {
        Some(name) => format!("shadow {name:?} of thing {thing_name}"),
        None => format!("the classic shadow of thing {thing_name}"),
    }
}

/// The refusal of a `ThingShadow` whose shadow another resource already owns. The operator
/// and `shadowsync apply` say the same: there, the older resource owns the target; here, the
/// first manifest that names it.
pub fn duplicate_shadow(spec: &ThingShadowSpec, owner_kind: &str, owner: &str) -> FieldError {
    FieldError::new(
        "spec.thingName",
        Some(&spec.thing_name),
        duplicate_rule(
            &shadow_target(&spec.thing_name, spec.shadow_name.as_deref()),
            owner_kind,
            owner,
        ),
    )
}

/// The refusal of a `RetainedMessage` whose topic another resource already owns.
pub fn duplicate_topic(spec: &RetainedMessageSpec, owner_kind: &str, owner: &str) -> FieldError {
    FieldError::new(
        "spec.topic",
        Some(&spec.topic),
        duplicate_rule(&format!("topic {}", spec.topic), owner_kind, owner),
    )
}

fn duplicate_rule(target: &str, owner_kind: &str, owner: &str) -> String {
    format!(
        "{target} is already managed by {owner_kind} {owner}; one resource per target (the one \
         created first keeps it), so this one makes no call"
    )
}

/// Checks a `ThingShadow` spec: names, the desired document (an object, depth, size, no
/// `null` in arrays) and the refresh interval.
pub fn validate_thing_shadow(
    spec: &ThingShadowSpec,
    limits: &ShadowLimits,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();

    if !is_thing_name(&spec.thing_name) {
        errors.push(FieldError::new(
            "spec.thingName",
            Some(&spec.thing_name),
            "must match [a-zA-Z0-9:_-]{1,128}",
        ));
    }

    if let Some(shadow) = &spec.shadow_name {
        if !is_shadow_name(shadow) {
            errors.push(FieldError::new(
                "spec.shadowName",
                Some(shadow),
                "must match [$a-zA-Z0-9:_-]{1,64}",
            ));
        }
        if shadow == GREENGRASS_SHADOW {
            errors.push(FieldError::new(
                "spec.shadowName",
                Some(shadow),
                "is owned by Greengrass and must not be written",
            ));
        }
    }

    if let Some(desired) = &spec.desired {
        check_desired(desired, limits, &mut errors);
    }

    check_refresh_interval(&spec.refresh_interval, &mut errors);

    finish(errors)
}

/// Checks a `RetainedMessage` spec: topic, payload source and size, MQTT 5 attributes and the
/// refresh interval.
pub fn validate_retained_message(
    spec: &RetainedMessageSpec,
    limits: &ShadowLimits,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();

    check_topic("spec.topic", &spec.topic, &mut errors);
    check_payload(&spec.payload, limits, &mut errors);

    if spec.qos > 1 {
        errors.push(FieldError::new(
            "spec.qos",
            Some(&spec.qos.to_string()),
            "must be 0 or 1 (AWS IoT does not support QoS 2)",
        ));
    }

    if let Some(content_type) = &spec.content_type {
        if content_type.is_empty() {
            errors.push(FieldError::new(
                "spec.contentType",
                None,
                "must not be empty when set",
            ));
        }
    }

    for (i, property) in spec.user_properties.iter().enumerate() {
        if property.key.is_empty() {
            errors.push(FieldError::new(
                format!("spec.userProperties[{i}].key"),
                None,
                "must not be empty",
            ));
        }
    }

    if let Some(topic) = &spec.response_topic {
        check_topic("spec.responseTopic", topic, &mut errors);
    }

    if let Some(data) = &spec.correlation_data {
        match decode_base64(data) {
            Ok(bytes) if bytes.is_empty() => errors.push(FieldError::new(
                "spec.correlationData",
                None,
                "must not be empty when set",
            )),
            Ok(bytes) if bytes.len() > MAX_CORRELATION_DATA_BYTES => errors.push(FieldError::new(
                "spec.correlationData",
                None,
                format!(
                    "decodes to {} bytes, more than the MQTT limit of {MAX_CORRELATION_DATA_BYTES}",
                    bytes.len()
                ),
            )),
            Ok(_) => {}
            Err(()) => errors.push(FieldError::new(
                "spec.correlationData",
                Some(data),
                BASE64_RULE,
            )),
        }
    }

    if let Some(expiry) = spec.message_expiry {
        if expiry == 0 {
            // MQTT 5: an interval of 0 has passed on arrival; the broker may drop the
            // message at once, so it would be published again and again for nothing.
            errors.push(FieldError::new(
                "spec.messageExpiry",
                Some("0"),
                "must be at least 1 second (omit it for a message that never expires)",
            ));
        }
        if expiry > MAX_MESSAGE_EXPIRY_SECONDS {
            errors.push(FieldError::new(
                "spec.messageExpiry",
                Some(&expiry.to_string()),
                format!("must be at most {MAX_MESSAGE_EXPIRY_SECONDS} seconds (7 days)"),
            ));
        }
    }

    check_refresh_interval(&spec.refresh_interval, &mut errors);

    finish(errors)
}

/// Parses a Go duration (`0`, `0s`, `300ms`, `1.5h`, `1h30m`; units `ns`, `us`/`µs`, `ms`,
/// `s`, `m`, `h`). Signs are refused: a negative interval has no meaning here.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const MAX_NANOS: u128 = i64::MAX as u128; // Go's limit, about 292 years
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.starts_with(['-', '+']) {
        return Err(format!("duration {text:?} must not have a sign"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }

    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        rest = after;
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            (frac_digits, rest) = after_dot.split_at(frac_len);
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(format!("invalid duration {text:?}: expected a number"));
        }

        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at(unit_len);
        rest = after;
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {text:?}")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {text:?} (use ns, us, ms, s, m or h)"
                ))
            }
        };

        let out_of_range = || format!("duration {text:?} is out of range");
        let int: u128 = if int_digits.len() > 20 {
            return Err(out_of_range());
        } else if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| out_of_range())?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(out_of_range)?;
        if !frac_digits.is_empty() {
            // Digits past the 18th are below a nanosecond for every unit: ignore them.
            let kept = &frac_digits[..frac_digits.len().min(18)];
            let frac: u128 = kept.parse().map_err(|_| out_of_range())?;
            let scale = 10u128.pow(kept.len() as u32);
            nanos += frac * unit_nanos / scale;
        }
        total = total.checked_add(nanos).ok_or_else(out_of_range)?;
        if total > MAX_NANOS {
            return Err(out_of_range());
        }
    }
    // `total` is at most i64::MAX, so it fits.
    Ok(Duration::from_nanos(total as u64))
}

/// Nesting depth of a JSON value: the number of keys and array indices on the path from the
/// value to its deepest descendant, an empty object or array counting as one level as it
/// does in the shadow store (`{"a":1}` is 1, `{"a":{"b":[1]}}` is 3, `{"a":{}}` is 2, a
/// scalar is 0). `ShadowLimits::max_depth` bounds this for a shadow's `desired` section.
pub fn json_depth(value: &Value) -> usize {
    deepest(value).0
}

/// The depth and the path segments of the deepest descendant (the first one found).
fn deepest(value: &Value) -> (usize, Vec<Segment<'_>>) {
    // The store counts every object and array as a level (`shadow::json_depth`), so an
    // empty one is a level too; otherwise a spec ending in `{}` one level past the limit
    // would pass here and be refused by the data plane.
    let empty = match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    };
    if empty {
        return (1, Vec::new());
    }
    let children: Box<dyn Iterator<Item = (Segment<'_>, &Value)>> = match value {
        Value::Object(map) => Box::new(map.iter().map(|(k, v)| (Segment::Key(k), v))),
        Value::Array(items) => Box::new(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (Segment::Index(i), v)),
        ),
        _ => return (0, Vec::new()),
    };
    let mut best: (usize, Vec<Segment<'_>>) = (0, Vec::new());
    for (segment, child) in children {
        let (depth, mut path) = deepest(child);
        if depth + 1 > best.0 {
            path.insert(0, segment);
            best = (depth + 1, path);
        }
    }
    best
}

#[derive(Clone, Copy, Debug)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `base.key`, or `base["odd key"]` when the key is not a plain name.
fn join_path(base: &str, segments: &[Segment<'_>]) -> String {
    let mut path = base.to_owned();
    for segment in segments {
        match segment {
            Segment::Key(key)
                if !key.is_empty()
                    && key.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$' | ':')
                    }) =>
            {
                path.push('.');
                path.push_str(key);
            }
            Segment::Key(key) => {
                path.push('[');
                path.push_str(&Value::String((*key).to_owned()).to_string());
                path.push(']');
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

fn finish(errors: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn is_thing_name(name: &str) -> bool {
    (1..=MAX_THING_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

fn is_shadow_name(name: &str) -> bool {
    (1..=MAX_SHADOW_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b':' | b'_' | b'-'))
}

fn check_desired(desired: &Value, limits: &ShadowLimits, errors: &mut Vec<FieldError>) {
    if !desired.is_object() {
        let shown = desired.to_string();
        errors.push(FieldError::new(
            "spec.desired",
            Some(&shown),
            "must be a JSON object",
        ));
        return;
    }

    let (depth, path) = deepest(desired);
    if depth > limits.max_depth {
        errors.push(FieldError::new(
            join_path("spec.desired", &path),
            None,
            format!(
                "nesting depth {depth} exceeds the limit of {}",
                limits.max_depth
            ),
        ));
    }

    let mut nulls = Vec::new();
    nulls_in_arrays(desired, false, &mut Vec::new(), &mut nulls);
    for path in nulls {
        errors.push(FieldError::new(
            path,
            None,
            "arrays must not contain null (AWS refuses them)",
        ));
    }

    let document = serde_json::json!({ "desired": desired });
    let size = document.to_string().len();
    if size > limits.max_document_bytes {
        errors.push(FieldError::new(
            "spec.desired",
            None,
            format!(
                "is {size} bytes as {{\"desired\": ...}} (compact JSON), more than the shadow document limit of {} bytes",
                limits.max_document_bytes
            ),
        ));
    }
}

/// Collects the paths of `null`s inside arrays, at any depth: an element, or a value of
/// an object within an array (the store refuses both, as arrays are stored verbatim).
fn nulls_in_arrays<'a>(
    value: &'a Value,
    in_array: bool,
    path: &mut Vec<Segment<'a>>,
    out: &mut Vec<String>,
) {
    match value {
        Value::Null if in_array => out.push(join_path("spec.desired", path)),
        Value::Object(map) => {
            for (key, child) in map {
                path.push(Segment::Key(key));
                nulls_in_arrays(child, in_array, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                nulls_in_arrays(child, true, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn check_refresh_interval(text: &str, errors: &mut Vec<FieldError>) {
    match parse_duration(text) {
        Ok(interval) if !interval.is_zero() && interval < MIN_REFRESH_INTERVAL => {
            errors.push(FieldError::new(
                "spec.refreshInterval",
                Some(text),
                "must be 0s (read only after a change) or at least 1s",
            ))
        }
        Ok(_) => {}
        Err(reason) => errors.push(FieldError::new(
            "spec.refreshInterval",
            Some(text),
            format!("must be a Go duration such as 0s, 30s, 5m or 1h30m ({reason})"),
        )),
    }
}

/// The rules of a topic name that can carry a retained message.
fn check_topic(field: &str, topic: &str, errors: &mut Vec<FieldError>) {
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        errors.push(FieldError::new(
            field,
            Some(topic),
            format!(
                "must be 1 to {MAX_TOPIC_BYTES} bytes of UTF-8 (is {} bytes)",
                topic.len()
            ),
        ));
    }
    let slashes = topic.matches('/').count();
    if slashes > MAX_TOPIC_SLASHES {
        errors.push(FieldError::new(
            field,
            Some(topic),
            format!(
                "must have at most {} levels (at most {MAX_TOPIC_SLASHES} '/'), has {}",
                MAX_TOPIC_SLASHES + 1,
                slashes + 1
            ),
        ));
    }
    if topic.contains(['+', '#']) {
        errors.push(FieldError::new(
            field,
            Some(topic),
            "must not contain the wildcards + or #",
        ));
    }
    if topic.starts_with('$') {
        errors.push(FieldError::new(
            field,
            Some(topic),
            "must not start with $ (reserved topics cannot be retained)",
        ));
    }
    if topic.contains('\0') {
        errors.push(FieldError::new(
            field,
            Some(topic),
            "must not contain NUL (U+0000)",
        ));
    }
}

const BASE64_RULE: &str = "must be standard base64 (A-Z a-z 0-9 + /, padded with =)";
const EMPTY_PAYLOAD_RULE: &str =
    "must not be empty: an empty retained payload deletes the retained message";

fn decode_base64(text: &str) -> Result<Vec<u8>, ()> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| ())
}

fn check_payload(payload: &PayloadSource, limits: &ShadowLimits, errors: &mut Vec<FieldError>) {
    let set: Vec<&str> = [
        ("json", payload.json.is_some()),
        ("text", payload.text.is_some()),
        ("base64", payload.base64.is_some()),
        ("secretKeyRef", payload.secret_key_ref.is_some()),
        ("configMapKeyRef", payload.config_map_key_ref.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    if set.len() != 1 {
        let found = (!set.is_empty()).then(|| set.join(", "));
        errors.push(FieldError::new(
            "spec.payload",
            found.as_deref(),
            "exactly one of json, text, base64, secretKeyRef, configMapKeyRef must be set",
        ));
    }

    let too_large = |field: &str, size: usize| {
        FieldError::new(
            field,
            None,
            format!(
                "payload is {size} bytes, more than the limit of {} bytes",
                limits.max_payload_bytes
            ),
        )
    };

    if let Some(json) = &payload.json {
        let size = json.to_string().len();
        if size > limits.max_payload_bytes {
            errors.push(too_large("spec.payload.json", size));
        }
    }

    if let Some(text) = &payload.text {
        if text.is_empty() {
            errors.push(FieldError::new(
                "spec.payload.text",
                None,
                EMPTY_PAYLOAD_RULE,
            ));
        } else if text.len() > limits.max_payload_bytes {
            errors.push(too_large("spec.payload.text", text.len()));
        }
    }

    if let Some(encoded) = &payload.base64 {
        match decode_base64(encoded) {
            Ok(bytes) if bytes.is_empty() => errors.push(FieldError::new(
                "spec.payload.base64",
                None,
                EMPTY_PAYLOAD_RULE,
            )),
            Ok(bytes) if bytes.len() > limits.max_payload_bytes => {
                errors.push(too_large("spec.payload.base64", bytes.len()))
            }
            Ok(_) => {}
            Err(()) => errors.push(FieldError::new(
                "spec.payload.base64",
                Some(encoded),
                BASE64_RULE,
            )),
        }
    }

    if let Some(key_ref) = &payload.secret_key_ref {
        check_key_ref("spec.payload.secretKeyRef", key_ref, errors);
    }
    if let Some(key_ref) = &payload.config_map_key_ref {
        check_key_ref("spec.payload.configMapKeyRef", key_ref, errors);
    }
}

fn check_key_ref(base: &str, key_ref: &KeyRef, errors: &mut Vec<FieldError>) {
    if key_ref.name.is_empty() {
        errors.push(FieldError::new(
            format!("{base}.name"),
            None,
            "must not be empty",
        ));
    } else if !is_dns_subdomain(&key_ref.name) {
        errors.push(FieldError::new(
            format!("{base}.name"),
            Some(&key_ref.name),
            "must be a DNS subdomain: at most 253 characters, dot-separated parts of a-z 0-9 and '-' that start and end with a letter or digit",
        ));
    }
    if key_ref.key.is_empty() {
        errors.push(FieldError::new(
            format!("{base}.key"),
            None,
            "must not be empty",
        ));
    } else if key_ref.key.len() > MAX_KEY_REF_LENGTH
        || !key_ref
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        errors.push(FieldError::new(
            format!("{base}.key"),
            Some(&key_ref.key),
            "must match [-._a-zA-Z0-9]{1,253}",
        ));
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= MAX_KEY_REF_LENGTH
        && name.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes.first() != Some(&b'-')
                && bytes.last() != Some(&b'-')
        })
}

mod fleet;
pub use fleet::*;

#[cfg(test)]
mod tests;
