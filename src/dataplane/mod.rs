//! The AWS IoT data plane: one trait ([`DataPlane`]) and its implementations.
//!
//! - [`aws`]: the AWS SDK adapter (real AWS, moto, or `shadowsync dataplane serve`);
//! - [`embedded`]: an in-process store with AWS's shadow and retained-message semantics,
//!   in memory or persisted to a redb file;
//! - [`server`]: the embedded store behind the AWS IoT Data Plane REST API;
//! - [`resilient`]: the client-side rate limiter and retry policy every caller goes through;
//! - [`registry`]: the part of the AWS IoT registry (things, static thing groups, fleet
//!   search) that fleet rollouts need, a second trait implemented by the embedded store,
//!   the server and the SDK adapter;
//! - [`simulate`]: simulated devices that report what they are told, for the local server.
//!
//! The types mirror the AWS wire shapes so that every implementation can be held to the
//! same contract (`tests/contract.rs`, `tests/registry_contract.rs`).

pub mod availability;
pub mod aws;
pub mod connect;
pub mod embedded;
pub mod registry;
pub mod resilient;
pub mod server;
pub mod simulate;

use crate::reason::Reason;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The seven AWS IoT data-plane operations shadowsync uses.
#[async_trait]
pub trait DataPlane: Send + Sync {
    /// GetThingShadow: the whole document, with `state.delta`.
    async fn get_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDocument, DataPlaneError>;

    /// UpdateThingShadow with a raw request document
    /// (`{"state":{"desired":..,"reported":..},"version":N,"clientToken":".."}`).
    /// Returns the update response (the sections sent, their metadata, the new version).
    async fn update_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        payload: Bytes,
    ) -> Result<ShadowDocument, DataPlaneError>;

    /// DeleteThingShadow.
    async fn delete_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDeleted, DataPlaneError>;

    /// ListNamedShadowsForThing; `page_size` 1..=100.
    async fn list_named_shadows_for_thing(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: Option<i32>,
    ) -> Result<NamedShadowPage, DataPlaneError>;

    /// Publish (retained when `request.retain`).
    async fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError>;

    /// GetRetainedMessage.
    async fn get_retained_message(
        &self,
        topic: &str,
    ) -> Result<RetainedMessageData, DataPlaneError>;

    /// ListRetainedMessages; `max_results` 1..=200.
    async fn list_retained_messages(
        &self,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<RetainedMessagePage, DataPlaneError>;
}

/// A shadow document as AWS returns it from GetThingShadow (with `delta`) or
/// UpdateThingShadow (the sections sent, no `delta`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShadowDocument {
    #[serde(default)]
    pub state: ShadowState,
    #[serde(default)]
    pub metadata: ShadowMetadata,
    pub version: u64,
    /// Epoch seconds.
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// `state` of a shadow document. A section that is absent is `None`; in an update
/// response a section sent as `null` is `Some(Value::Null)`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct ShadowState {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub desired: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub reported: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Value>,
}

/// `metadata`: the same tree as `state`, with `{"timestamp": epoch_seconds}` at each leaf
/// (and a list of per-element metadata for arrays).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct ShadowMetadata {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub desired: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub reported: Option<Value>,
}

/// Keeps an explicit JSON `null` as `Some(Value::Null)` (serde would make it `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// DeleteThingShadow response.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ShadowDeleted {
    pub version: u64,
    #[serde(default)]
    pub timestamp: i64,
}

/// ListNamedShadowsForThing response.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamedShadowPage {
    pub results: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    #[serde(default)]
    pub timestamp: i64,
}

/// `x-amz-mqtt5-payload-format-indicator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayloadFormat {
    #[serde(rename = "UNSPECIFIED_BYTES")]
    UnspecifiedBytes,
    #[serde(rename = "UTF8_DATA")]
    Utf8Data,
}

/// One MQTT 5 user property (keys may repeat; order is kept).
pub type UserProperty = (String, String);

/// A Publish request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishRequest {
    pub topic: String,
    pub payload: Bytes,
    pub qos: i32,
    pub retain: bool,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    /// Seconds.
    pub message_expiry: Option<i64>,
    pub user_properties: Vec<UserProperty>,
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Base64, as on the wire.
    pub correlation_data: Option<String>,
}

/// GetRetainedMessage response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetainedMessageData {
    pub topic: String,
    pub payload: Bytes,
    pub qos: i32,
    /// Epoch milliseconds.
    pub last_modified_time: i64,
    pub user_properties: Vec<UserProperty>,
}

/// One entry of ListRetainedMessages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetainedTopicSummary {
    pub topic: String,
    pub payload_size: i64,
    pub qos: i32,
    /// Epoch milliseconds.
    pub last_modified_time: i64,
}

/// ListRetainedMessages response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetainedMessagePage {
    pub retained_topics: Vec<RetainedTopicSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// The error types AWS models for the data plane, plus the ways a call fails
/// before AWS answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 409 `ConflictException`: the version in the request is not the current one.
    Conflict,
    /// 413 `RequestEntityTooLargeException`.
    RequestEntityTooLarge,
    /// 400 `InvalidRequestException`.
    InvalidRequest,
    /// 404 `ResourceNotFoundException`.
    ResourceNotFound,
    /// 429 `ThrottlingException`.
    Throttling,
    /// 401 `UnauthorizedException`.
    Unauthorized,
    /// 503 `ServiceUnavailableException`.
    ServiceUnavailable,
    /// 500 `InternalFailureException`.
    InternalFailure,
    /// 405 `MethodNotAllowedException`.
    MethodNotAllowed,
    /// 415 `UnsupportedDocumentEncodingException`.
    UnsupportedDocumentEncoding,
    /// No answer: connection refused or dropped, timeout, DNS.
    Transport,
    /// An answer with no modelled type (403 from a wrong endpoint or region, say).
    Unhandled,
    /// 409 `ResourceAlreadyExistsException` (registry): a thing or thing group of that
    /// name exists with a different configuration.
    ResourceAlreadyExists,
    /// 409 `VersionConflictException` (registry): `expectedVersion` is not the current one.
    VersionConflict,
    /// 400 `InvalidQueryException` (registry search): a query this index cannot run.
    InvalidQuery,
    /// 400 `IndexNotReadyException` (registry search): the fleet index is being built.
    IndexNotReady,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::Conflict,
        ErrorKind::RequestEntityTooLarge,
        ErrorKind::InvalidRequest,
        ErrorKind::ResourceNotFound,
        ErrorKind::Throttling,
        ErrorKind::Unauthorized,
        ErrorKind::ServiceUnavailable,
        ErrorKind::InternalFailure,
        ErrorKind::MethodNotAllowed,
        ErrorKind::UnsupportedDocumentEncoding,
        ErrorKind::Transport,
        ErrorKind::Unhandled,
        ErrorKind::ResourceAlreadyExists,
        ErrorKind::VersionConflict,
        ErrorKind::InvalidQuery,
        ErrorKind::IndexNotReady,
    ];

    /// AWS's error type name (the `x-amzn-ErrorType` header).
    pub fn aws_type(self) -> &'static str {
        match self {
            ErrorKind::Conflict => "ConflictException",
            ErrorKind::RequestEntityTooLarge => "RequestEntityTooLargeException",
            ErrorKind::InvalidRequest => "InvalidRequestException",
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::Throttling => "ThrottlingException",
            ErrorKind::Unauthorized => "UnauthorizedException",
            ErrorKind::ServiceUnavailable => "ServiceUnavailableException",
            ErrorKind::InternalFailure => "InternalFailureException",
            ErrorKind::MethodNotAllowed => "MethodNotAllowedException",
            ErrorKind::UnsupportedDocumentEncoding => "UnsupportedDocumentEncodingException",
            ErrorKind::Transport => "TransportError",
            ErrorKind::Unhandled => "UnhandledError",
            ErrorKind::ResourceAlreadyExists => "ResourceAlreadyExistsException",
            ErrorKind::VersionConflict => "VersionConflictException",
            ErrorKind::InvalidQuery => "InvalidQueryException",
            ErrorKind::IndexNotReady => "IndexNotReadyException",
        }
    }

    /// The HTTP status AWS answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Conflict => 409,
            ErrorKind::RequestEntityTooLarge => 413,
            ErrorKind::InvalidRequest => 400,
            ErrorKind::ResourceNotFound => 404,
            ErrorKind::Throttling => 429,
            ErrorKind::Unauthorized => 401,
            ErrorKind::ServiceUnavailable => 503,
            ErrorKind::InternalFailure => 500,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::UnsupportedDocumentEncoding => 415,
            ErrorKind::Transport => 0,
            ErrorKind::Unhandled => 0,
            ErrorKind::ResourceAlreadyExists => 409,
            ErrorKind::VersionConflict => 409,
            ErrorKind::InvalidQuery => 400,
            ErrorKind::IndexNotReady => 400,
        }
    }

    /// Short static word for conditions, events and metric labels.
    pub fn reason(self) -> Reason {
        match self {
            ErrorKind::Conflict => Reason::Conflict,
            ErrorKind::RequestEntityTooLarge => Reason::TooLarge,
            ErrorKind::InvalidRequest => Reason::InvalidRequest,
            ErrorKind::ResourceNotFound => Reason::NotFound,
            ErrorKind::Throttling => Reason::Throttled,
            ErrorKind::Unauthorized => Reason::AccessDenied,
            ErrorKind::ServiceUnavailable => Reason::ServiceUnavailable,
            ErrorKind::InternalFailure => Reason::InternalFailure,
            ErrorKind::MethodNotAllowed => Reason::MethodNotAllowed,
            ErrorKind::UnsupportedDocumentEncoding => Reason::UnsupportedEncoding,
            ErrorKind::Transport => Reason::Unreachable,
            ErrorKind::Unhandled => Reason::UnexpectedResponse,
            ErrorKind::ResourceAlreadyExists => Reason::AlreadyExists,
            ErrorKind::VersionConflict => Reason::VersionConflict,
            ErrorKind::InvalidQuery => Reason::InvalidQuery,
            ErrorKind::IndexNotReady => Reason::IndexNotReady,
        }
    }

    /// Worth retrying with backoff: throttling, 5xx and transport failures.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttling
                | ErrorKind::ServiceUnavailable
                | ErrorKind::InternalFailure
                | ErrorKind::Transport
        )
    }
}

/// A failed data-plane call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.aws_type())]
pub struct DataPlaneError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DataPlaneError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Limits the embedded store enforces and validation checks before any call.
/// Defaults are AWS's documented limits; the unconfirmed ones are configurable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowLimits {
    /// desired + reported, serialized, metadata excluded (bytes).
    pub max_document_bytes: usize,
    /// Levels of nested objects inside `desired` or `reported`.
    pub max_depth: usize,
    /// Retained message / publish payload (bytes).
    pub max_payload_bytes: usize,
}

impl Default for ShadowLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: 8 * 1024,
            max_depth: 6,
            max_payload_bytes: 128 * 1024,
        }
    }
}

/// Greengrass owns this named shadow: shadowsync never writes it.
pub const GREENGRASS_SHADOW: &str = "AWSManagedGreengrassV2Deployment";
