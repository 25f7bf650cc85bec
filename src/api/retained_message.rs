//! `RetainedMessage`: the retained MQTT message of one topic.

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema;
use super::{Condition, ConflictPolicy, ConflictStatus, ManagementPolicy};

/// Declares the retained message of one MQTT topic.
// `printcolumn(...)` entries repeat keys such as `type_` by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "iot.shadowsync.dev",
    version = "v1alpha1",
    kind = "RetainedMessage",
    namespaced,
    status = "RetainedMessageStatus",
    shortname = "retmsg",
    category = "shadowsync",
    schema = "manual",
    doc = "A `RetainedMessage` resource: the retained MQTT message of one topic.",
    printcolumn(
        name = "Topic",
        type_ = "string",
        json_path = ".spec.topic",
        description = "MQTT topic"
    ),
    printcolumn(
        name = "QoS",
        type_ = "integer",
        json_path = ".spec.qos",
        description = "MQTT QoS of the publish"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "The retained message matches the spec"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes)]
pub struct RetainedMessageSpec {
    /// MQTT topic: 1 to 256 bytes of UTF-8, at most 8 levels (7 `/`), no `+` or `#`, not
    /// `$`-prefixed (reserved topics cannot be retained). Immutable.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = schema::TOPIC_PATTERN),
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "topic is immutable"},
            {
                "rule": schema::TOPIC_LEVELS_RULE,
                "message": "topic must have at most 8 levels (at most 7 '/')",
            },
        ]),
    )]
    pub topic: String,

    /// The payload: exactly one of `json`, `text`, `base64`, `secretKeyRef`, `configMapKeyRef`.
    pub payload: PayloadSource,

    /// MQTT QoS of the publish: 0 (default) or 1. AWS IoT does not support QoS 2.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1))]
    pub qos: u8,

    /// MQTT 5 content type. For a `json` payload it defaults to `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub content_type: Option<String>,

    /// MQTT 5 user properties, in order; keys may repeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<UserProperty>,

    /// MQTT 5 response topic; the same rules as `topic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = schema::TOPIC_PATTERN),
        extend("x-kubernetes-validations" = [
            {
                "rule": schema::TOPIC_LEVELS_RULE,
                "message": "responseTopic must have at most 8 levels (at most 7 '/')",
            },
        ]),
    )]
    pub response_topic: Option<String>,

    /// MQTT 5 correlation data, standard base64 (1 to 65535 bytes decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), extend("format" = "byte"))]
    pub correlation_data: Option<String>,

    /// MQTT 5 message expiry interval in seconds, 1 to 604800 (7 days, the AWS IoT Core
    /// maximum message expiry interval). A message that expired is not published again until
    /// the spec changes. Absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604_800))]
    pub message_expiry: Option<u64>,

    /// `Manage` (default) publishes the declared message; `Observe` never publishes and only
    /// mirrors the retained message into status.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// On deletion of this resource: `Delete` (default) publishes an empty retained payload,
    /// which deletes the retained message; `Retain` touches nothing.
    #[serde(default)]
    pub deletion_policy: RetainedDeletionPolicy,

    /// When someone else publishes to the topic: `Overwrite` (default) publishes ours again and
    /// emits a Warning event; `Preserve` stops publishing and sets `Stalled` until the spec
    /// changes or a sync is forced.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,

    /// How often the retained message is re-read, as a Go duration (`30s`, `10m`, `1h`), at
    /// least `1s`; `0s` reads only after a change. Default `10m`.
    #[serde(default = "default_retained_refresh")]
    #[schemars(regex(pattern = schema::DURATION_PATTERN))]
    pub refresh_interval: String,
}

fn default_retained_refresh() -> String {
    "10m".to_string()
}

impl JsonSchema for RetainedMessage {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetainedMessage".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::resource::<RetainedMessageSpec, RetainedMessageStatus>(
            generator,
            "RetainedMessage",
            "RetainedMessage keeps the retained MQTT message of one AWS IoT topic in the state \
             declared in spec, publishing only when the retained message differs, and reports \
             what the broker holds in status.",
        )
    }
}

/// Where the payload comes from. Exactly one field is set.
///
/// The schema says "exactly one" with `minProperties`/`maxProperties` rather than CEL: CEL
/// cannot see `json`, which has no type (any JSON).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct PayloadSource {
    /// Any JSON value, published compact with payload format UTF-8 and content type
    /// `application/json` unless `contentType` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::any_json")]
    pub json: Option<Value>,

    /// UTF-8 text, published as is with payload format UTF-8. Must not be empty: an empty
    /// retained payload deletes the retained message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub text: Option<String>,

    /// Binary payload, standard base64. Must not be empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), extend("format" = "byte"))]
    pub base64: Option<String>,

    /// The payload is the value of this key of a Secret in the resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,

    /// The payload is the value of this key of a ConfigMap in the resource's namespace
    /// (from `data` or `binaryData`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// A key of a Secret or ConfigMap in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct KeyRef {
    /// Name of the Secret or ConfigMap (a DNS subdomain).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The key whose value is the payload.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// One MQTT 5 user property.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct UserProperty {
    /// Property name; must not be empty.
    #[schemars(length(min = 1))]
    pub key: String,
    /// Property value; may be empty.
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
#[schemars(transform = schema::kubernetes)]
pub struct RetainedMessageStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Synced`, `Reconciling` and `Stalled` (kstatus conventions).
    #[serde(default)]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,

    /// SHA-256 (hex) of the retained payload as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,

    /// Size in bytes of the retained payload as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,

    /// QoS of the retained message as last read.
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

    /// Version conflicts and out-of-band publishes seen so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<ConflictStatus>,

    /// When the retained message was last read or published successfully (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,

    /// Value of the `iot.shadowsync.dev/reconcile-requested-at` annotation last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
