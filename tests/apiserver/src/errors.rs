//! Errors in the shape of a Kubernetes `Status` object, which kube-rs and kubectl parse to
//! decide what happened (`reason`, `code`, `details.causes`).

use serde_json::{json, Map, Value};

/// One field-level cause of a 422 Invalid answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// Dotted field path, e.g. `spec.thingName` or `spec.items[0].key`.
    pub field: String,
    /// Kubernetes cause reason, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    /// The text after the field path, e.g. `Invalid value: "x": ...` or `Required value`.
    pub detail: String,
}

impl Cause {
    pub fn new(field: impl Into<String>, reason: &'static str, detail: impl Into<String>) -> Self {
        Cause {
            field: field.into(),
            reason,
            detail: detail.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        Cause::new(
            field,
            "FieldValueInvalid",
            format!("Invalid value: {}: {}", show_value(value), detail.as_ref()),
        )
    }

    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let text = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause::new(field, "FieldValueRequired", text)
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Cause::new(field, "FieldValueForbidden", format!("Forbidden: {detail}"))
    }

    /// `field: detail`, as the cause is printed inside the overall message.
    pub fn line(&self) -> String {
        if self.field.is_empty() {
            self.detail.clone()
        } else {
            format!("{}: {}", self.field, self.detail)
        }
    }
}

/// How Kubernetes prints a value inside `Invalid value: ...`: strings quoted, the rest as JSON.
pub fn show_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// An error answer: HTTP code plus the `Status` fields.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// Who an error is about, for `details` and messages.
pub struct Subject<'a> {
    pub group: &'a str,
    /// Resource plural, e.g. `thingshadows`.
    pub resource: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Subject<'_> {
    /// `thingshadows.iot.shadowsync.dev` or `configmaps`.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// `ThingShadow.iot.shadowsync.dev` or `ConfigMap`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self, kind: &str) -> Value {
        let mut details = Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), json!(self.name));
        }
        if !self.group.is_empty() {
            details.insert("group".into(), json!(self.group));
        }
        details.insert("kind".into(), json!(kind));
        Value::Object(details)
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(subject: &Subject) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!(
                "{} {:?} not found",
                subject.qualified_resource(),
                subject.name
            ),
            details: Some(subject.details(subject.resource)),
        }
    }

    /// A path that names no resource the server knows.
    pub fn no_route() -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(json!({})),
        }
    }

    pub fn already_exists(subject: &Subject) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!(
                "{} {:?} already exists",
                subject.qualified_resource(),
                subject.name
            ),
            details: Some(subject.details(subject.resource)),
        }
    }

    /// The optimistic-concurrency failure of an update with a stale `resourceVersion`.
    pub fn conflict(subject: &Subject) -> Self {
        Self::conflict_with(
            subject,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn conflict_with(subject: &Subject, why: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} {:?}: {why}",
                subject.qualified_resource(),
                subject.name
            ),
            details: Some(subject.details(subject.resource)),
        }
    }

    pub fn invalid(subject: &Subject, causes: Vec<Cause>) -> Self {
        let lines: Vec<String> = causes.iter().map(Cause::line).collect();
        let summary = if lines.len() == 1 {
            lines[0].clone()
        } else {
            format!("[{}]", lines.join(", "))
        };
        let mut details = subject.details(subject.kind);
        details["causes"] = Value::Array(
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.detail, "field": c.field}))
                .collect(),
        );
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!(
                "{} {:?} is invalid: {summary}",
                subject.qualified_kind(),
                subject.name
            ),
            details: Some(details),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// A `resourceVersion` or continue token older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The `Status` object sent as the body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status["code"] = json!(self.code);
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A successful `Status`, as answered by an immediate delete.
pub fn success_status(subject: &Subject, uid: Option<&str>) -> Value {
    let mut details = subject.details(subject.resource);
    if let Some(uid) = uid {
        details["uid"] = json!(uid);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
