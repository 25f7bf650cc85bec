//! `RetainedMessage`: the retained MQTT message of one topic.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Condition, ConflictPolicy, ConflictStatus, ManagementPolicy};

/// Declares the retained message of one MQTT topic.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "iot.shadowsync.dev",
    version = "v1alpha1",
    kind = "RetainedMessage",
    namespaced,
    status = "RetainedMessageStatus",
    shortname = "retmsg",
    category = "shadowsync"
)]
#[serde(rename_all = "camelCase")]
pub struct RetainedMessageSpec {
    /// MQTT topic. Immutable; no `+` or `#`; not `$`-prefixed.
    pub topic: String,
    /// Exactly one payload source.
    pub payload: PayloadSource,
    /// MQTT QoS, 0 or 1.
    #[serde(default)]
    pub qos: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// MQTT 5 user properties; keys may repeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<UserProperty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    /// Base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<String>,
    /// Seconds until the broker drops the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_expiry: Option<u64>,
    #[serde(default)]
    pub management_policy: ManagementPolicy,
    #[serde(default)]
    pub deletion_policy: RetainedDeletionPolicy,
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
    /// How often the retained message is re-read; `0s` reads only on change.
    #[serde(default = "default_retained_refresh")]
    pub refresh_interval: String,
}

fn default_retained_refresh() -> String {
    "10m".to_string()
}

/// Where the payload comes from. Exactly one field is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PayloadSource {
    /// Any JSON, sent compact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Binary, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// A key of a Secret or ConfigMap in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct KeyRef {
    pub name: String,
    pub key: String,
}

/// One MQTT 5 user property.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct UserProperty {
    pub key: String,
    pub value: String,
}

/// What happens to the retained message when the resource is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetainedDeletionPolicy {
    /// Publish an empty retained payload, which deletes the retained message.
    #[default]
    Delete,
    /// Touch nothing.
    Retain,
}

/// Observed state of a `RetainedMessage`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetainedMessageStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// SHA-256 (hex) of the retained payload as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    /// When the broker stored the retained message (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_time: Option<String>,
    /// When shadowsync last published (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_publish_time: Option<String>,
    /// Publishes made by shadowsync.
    #[serde(default)]
    pub publish_count: u64,
    /// SHA-256 of the whole message spec (payload and attributes) last published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<ConflictStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

