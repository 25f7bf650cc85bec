//! Name, topic and paging checks, with AWS's limits (AWS IoT Core's documented data-plane quotas).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::dataplane::{DataPlaneError, ErrorKind};

/// Longest thing name.
pub const MAX_THING_NAME: usize = 128;
/// Longest shadow name.
pub const MAX_SHADOW_NAME: usize = 64;
/// Longest topic, in bytes of UTF-8.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most `/` a topic may contain.
pub const MAX_TOPIC_SLASHES: usize = 7;

fn invalid(message: impl Into<String>) -> DataPlaneError {
    DataPlaneError::new(ErrorKind::InvalidRequest, message)
}

/// `thingName`: 1..=128 characters of `[a-zA-Z0-9:_-]`.
pub fn thing_name(name: &str) -> Result<(), DataPlaneError> {
    let ok = (1..=MAX_THING_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "Invalid thingName '{name}': must be 1 to {MAX_THING_NAME} characters of [a-zA-Z0-9:_-]"
        )))
    }
}

/// `shadowName`: 1..=64 characters of `[$a-zA-Z0-9:_-]`.
pub fn shadow_name(name: &str) -> Result<(), DataPlaneError> {
    let ok = (1..=MAX_SHADOW_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "Invalid shadowName '{name}': must be 1 to {MAX_SHADOW_NAME} characters of [$a-zA-Z0-9:_-]"
        )))
    }
}

/// A topic to publish to or to look up: 1..=256 bytes, at most 7 `/`, no wildcards (`+`,
/// `#`) and no NUL (MQTT forbids it). With `retain`, `$`-topics are refused: they are
/// reserved and AWS does not retain messages on them.
pub fn topic(topic: &str, retain: bool) -> Result<(), DataPlaneError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return Err(invalid(format!(
            "Invalid topic: must be 1 to {MAX_TOPIC_BYTES} bytes of UTF-8"
        )));
    }
    if topic.contains(['+', '#']) {
        return Err(invalid(format!(
            "Invalid topic '{topic}': wildcards (+, #) are not allowed"
        )));
    }
    if topic.contains('\0') {
        return Err(invalid("Invalid topic: contains a NUL character"));
    }
    if topic.matches('/').count() > MAX_TOPIC_SLASHES {
        return Err(invalid(format!(
            "Invalid topic '{topic}': more than {MAX_TOPIC_SLASHES} '/'"
        )));
    }
    if retain && topic.starts_with('$') {
        return Err(invalid(format!(
            "Invalid topic '{topic}': reserved topics cannot be retained"
        )));
    }
    Ok(())
}

/// A page size: `None` means `default`; outside `1..=max` is refused.
pub fn page_size(
    value: Option<i32>,
    default: usize,
    max: usize,
    field: &str,
) -> Result<usize, DataPlaneError> {
    match value {
        None => Ok(default),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| invalid(format!("{field} must be between 1 and {max}, got {n}"))),
    }
}

/// An opaque `nextToken`: the last key returned, tagged with what it pages (`scope`) so
/// that a token from another listing is refused rather than silently misread.
pub fn encode_token(scope: &str, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}\n{last}"))
}

/// The last key a `nextToken` made by [`encode_token`] with the same `scope` carries.
pub fn decode_token(scope: &str, token: &str) -> Result<String, DataPlaneError> {
    let bad = || invalid("Invalid nextToken");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (token_scope, last) = text.split_once('\n').ok_or_else(bad)?;
    if token_scope != scope || last.is_empty() {
        return Err(bad());
    }
    Ok(last.to_string())
}
