//! The restJson1 wire details: error responses, query parameters, MQTT 5 headers.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::dataplane::{DataPlaneError, ErrorKind, PayloadFormat, UserProperty};

/// Header that carries the error type; botocore and the Rust SDK read it first.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";
pub const USER_PROPERTIES_HEADER: &str = "x-amz-mqtt5-user-properties";
pub const PAYLOAD_FORMAT_HEADER: &str = "x-amz-mqtt5-payload-format-indicator";
pub const CORRELATION_DATA_HEADER: &str = "x-amz-mqtt5-correlation-data";

/// Decodes with or without padding: clients differ.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An AWS restJson1 error: the status of the kind, `x-amzn-ErrorType`, and a body with
/// `message` and `__type` (the fallback both botocore and the Rust SDK understand when
/// a proxy strips the header).
pub fn error_response(err: &DataPlaneError) -> Response {
    // Transport and Unhandled have no status of their own: they never come from a
    // store, but if one reported them, a 500 is the honest answer.
    let kind = match err.kind {
        ErrorKind::Transport | ErrorKind::Unhandled => ErrorKind::InternalFailure,
        kind => kind,
    };
    let status =
        StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    typed_error(status, kind.aws_type(), &err.message)
}

/// An error response with any type name (also the ones no [`ErrorKind`] has).
pub fn typed_error(status: StatusCode, aws_type: &'static str, message: &str) -> Response {
    let body = json!({ "message": message, "__type": aws_type });
    let mut response = (status, json_body(&body)).into_response();
    response
        .headers_mut()
        .insert(ERROR_TYPE_HEADER, HeaderValue::from_static(aws_type));
    response
}

/// A 200 JSON answer from any serializable value.
pub fn json_of<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(v) => json_ok(&v),
        Err(err) => error_response(&DataPlaneError::new(
            ErrorKind::InternalFailure,
            format!("cannot encode the answer: {err}"),
        )),
    }
}

/// A 200 JSON answer.
pub fn json_ok(value: &Value) -> Response {
    (StatusCode::OK, json_body(value)).into_response()
}

fn json_body(value: &Value) -> ([(header::HeaderName, HeaderValue); 1], String) {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
}

pub fn invalid(message: impl Into<String>) -> DataPlaneError {
    DataPlaneError::new(ErrorKind::InvalidRequest, message)
}

/// Query parameters of one request.
pub struct QueryParams(pub HashMap<String, String>);

impl QueryParams {
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An integer parameter within `range`, named in the error otherwise.
    pub fn int_in(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, DataPlaneError> {
        let Some(raw) = self.0.get(name) else {
            return Ok(None);
        };
        let value: i64 = raw
            .trim()
            .parse()
            .map_err(|_| invalid(format!("{name} must be an integer, got {raw:?}")))?;
        if !range.contains(&value) {
            return Err(invalid(format!(
                "{name} must be between {} and {}, got {value}",
                range.start(),
                range.end()
            )));
        }
        Ok(Some(value))
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, DataPlaneError> {
        match self.0.get(name).map(String::as_str) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(invalid(format!(
                "{name} must be true or false, got {other:?}"
            ))),
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, DataPlaneError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| invalid(format!("header {name} is not visible ASCII"))),
    }
}

/// `x-amz-mqtt5-user-properties`: base64 of a JSON array of objects with string values,
/// e.g. `[{"site":"berlin"},{"site":"hamburg"}]`. Order and repeated keys are kept.
pub fn user_properties(headers: &HeaderMap) -> Result<Vec<UserProperty>, DataPlaneError> {
    let Some(raw) = header_str(headers, USER_PROPERTIES_HEADER)? else {
        return Ok(Vec::new());
    };
    let bad = |why: &str| invalid(format!("header {USER_PROPERTIES_HEADER}: {why}"));
    let bytes = LENIENT_BASE64.decode(raw).map_err(|_| bad("not base64"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a JSON array of objects"))?;
    let Value::Array(items) = value else {
        return Err(bad("not a JSON array of objects"));
    };
    let mut properties = Vec::new();
    for item in items {
        let Value::Object(object) = item else {
            return Err(bad("every element must be an object"));
        };
        for (key, value) in object {
            let Value::String(value) = value else {
                return Err(bad(&format!("the value of {key:?} must be a string")));
            };
            properties.push((key, value));
        }
    }
    Ok(properties)
}

/// The GetRetainedMessage form of user properties: base64 of
/// `[{"k":"v"},...]`, or `None` when there are none.
pub fn encode_user_properties(properties: &[UserProperty]) -> Option<String> {
    if properties.is_empty() {
        return None;
    }
    let array: Vec<Value> = properties
        .iter()
        .map(|(k, v)| {
            let mut object = Map::new();
            object.insert(k.clone(), Value::String(v.clone()));
            Value::Object(object)
        })
        .collect();
    Some(STANDARD.encode(Value::Array(array).to_string()))
}

pub fn payload_format(headers: &HeaderMap) -> Result<Option<PayloadFormat>, DataPlaneError> {
    match header_str(headers, PAYLOAD_FORMAT_HEADER)? {
        None => Ok(None),
        Some("UNSPECIFIED_BYTES") => Ok(Some(PayloadFormat::UnspecifiedBytes)),
        Some("UTF8_DATA") => Ok(Some(PayloadFormat::Utf8Data)),
        Some(other) => Err(invalid(format!(
            "header {PAYLOAD_FORMAT_HEADER} must be UNSPECIFIED_BYTES or UTF8_DATA, got {other:?}"
        ))),
    }
}

/// `x-amz-mqtt5-correlation-data`, kept base64 as on the wire, but checked.
pub fn correlation_data(headers: &HeaderMap) -> Result<Option<String>, DataPlaneError> {
    match header_str(headers, CORRELATION_DATA_HEADER)? {
        None => Ok(None),
        Some(raw) => {
            LENIENT_BASE64
                .decode(raw)
                .map_err(|_| invalid(format!("header {CORRELATION_DATA_HEADER} is not base64")))?;
            Ok(Some(raw.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).expect("header value"));
        h
    }

    #[test]
    fn user_properties_keep_order_and_repeats() {
        let encoded = STANDARD.encode(r#"[{"site":"berlin"},{"site":"hamburg"},{"a":"1"}]"#);
        let props = user_properties(&headers(USER_PROPERTIES_HEADER, &encoded)).expect("valid");
        assert_eq!(
            props,
            vec![
                ("site".to_string(), "berlin".to_string()),
                ("site".to_string(), "hamburg".to_string()),
                ("a".to_string(), "1".to_string()),
            ]
        );
        let back = encode_user_properties(&props).expect("non-empty");
        let round = user_properties(&headers(USER_PROPERTIES_HEADER, &back)).expect("valid");
        assert_eq!(round, props);
        assert_eq!(encode_user_properties(&[]), None);
        assert_eq!(user_properties(&HeaderMap::new()), Ok(vec![]));
    }

    #[test]
    fn user_properties_refuse_bad_shapes() {
        for bad in [
            "not base64!".to_string(),
            STANDARD.encode("{}"),
            STANDARD.encode("[1]"),
            STANDARD.encode(r#"[{"a":1}]"#),
            STANDARD.encode("[{"),
        ] {
            let err = user_properties(&headers(USER_PROPERTIES_HEADER, &bad))
                .expect_err("must be refused");
            assert_eq!(err.kind, ErrorKind::InvalidRequest);
            assert!(
                err.message.contains(USER_PROPERTIES_HEADER),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn integer_parameters_name_themselves() {
        let q = QueryParams(HashMap::from([
            ("qos".to_string(), "2".to_string()),
            ("pageSize".to_string(), "x".to_string()),
            ("maxResults".to_string(), "200".to_string()),
        ]));
        let err = q.int_in("qos", 0..=1).expect_err("out of range");
        assert!(err.message.contains("qos"), "{}", err.message);
        let err = q.int_in("pageSize", 1..=100).expect_err("not a number");
        assert!(err.message.contains("pageSize"), "{}", err.message);
        assert_eq!(q.int_in("maxResults", 1..=200), Ok(Some(200)));
        assert_eq!(q.int_in("missing", 1..=2), Ok(None));
    }

    #[test]
    fn booleans_are_strict() {
        let q = QueryParams(HashMap::from([
            ("retain".to_string(), "yes".to_string()),
            ("ok".to_string(), "true".to_string()),
        ]));
        assert!(q.boolean("retain").is_err());
        assert_eq!(q.boolean("ok"), Ok(Some(true)));
        assert_eq!(q.boolean("none"), Ok(None));
    }

    #[test]
    fn payload_format_values() {
        assert_eq!(
            payload_format(&headers(PAYLOAD_FORMAT_HEADER, "UTF8_DATA")),
            Ok(Some(PayloadFormat::Utf8Data))
        );
        assert!(payload_format(&headers(PAYLOAD_FORMAT_HEADER, "utf8")).is_err());
    }

    #[test]
    fn transport_kinds_become_internal_failure() {
        let r = error_response(&DataPlaneError::new(ErrorKind::Transport, "x"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            r.headers().get(ERROR_TYPE_HEADER).map(|v| v.as_bytes()),
            Some(&b"InternalFailureException"[..])
        );
    }
}
