//! `ThingShadow`: the desired section of one AWS IoT device shadow.

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema;
use super::{Condition, ConflictPolicy, ConflictStatus, ManagementPolicy};

/// Declares the desired state of one device shadow (classic or named).
// `printcolumn(...)` entries repeat keys such as `type_` by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "iot.shadowsync.dev",
    version = "v1alpha1",
    kind = "ThingShadow",
    namespaced,
    status = "ThingShadowStatus",
    shortname = "tshadow",
    category = "shadowsync",
    schema = "manual",
    doc = "A `ThingShadow` resource: the desired section of one AWS IoT device shadow.",
    printcolumn(
        name = "Thing",
        type_ = "string",
        json_path = ".spec.thingName",
        description = "AWS IoT thing name"
    ),
    printcolumn(
        name = "Shadow",
        type_ = "string",
        json_path = ".spec.shadowName",
        description = "Named shadow (empty: classic shadow)"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".status.shadow.version",
        description = "Shadow version last seen"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "The cloud matches the spec"
    ),
    printcolumn(
        name = "Converged",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Converged")].status"#,
        description = "The device reported every owned desired value"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(
    transform = schema::kubernetes,
    extend("x-kubernetes-validations" = [
        {
            "rule": "has(self.shadowName) == has(oldSelf.shadowName)",
            "message": "shadowName cannot be added or removed: the classic and a named shadow are different targets",
        },
    ]),
)]
pub struct ThingShadowSpec {
    /// The AWS IoT thing whose shadow this is: 1 to 128 characters of `a-zA-Z0-9:_-`.
    /// Immutable.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = schema::THING_NAME_PATTERN),
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "thingName is immutable"},
        ]),
    )]
    pub thing_name: String,

    /// Name of a named shadow: 1 to 64 characters of `$a-zA-Z0-9:_-`. Absent means the
    /// classic (unnamed) shadow. Immutable. `AWSManagedGreengrassV2Deployment` is owned by
    /// Greengrass and refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = schema::SHADOW_NAME_PATTERN),
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "shadowName is immutable"},
            {
                "rule": "self != 'AWSManagedGreengrassV2Deployment'",
                "message": "the shadow AWSManagedGreengrassV2Deployment is owned by Greengrass",
            },
        ]),
    )]
    pub shadow_name: Option<String>,

    /// Desired state: a JSON object merged into the shadow's `state.desired`. This resource
    /// owns every leaf it sets (arrays are leaves); keys written by others are left alone.
    /// Absent: own nothing (with `Observe`, or to release all owned keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserved_object")]
    pub desired: Option<Value>,

    /// `Manage` (default) writes the desired state; `Observe` never writes and only mirrors the
    /// shadow into status.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// On deletion of this resource: `ClearDesired` (default) nulls the owned keys and keeps
    /// the shadow; `Delete` deletes the whole shadow; `Retain` touches nothing.
    #[serde(default)]
    pub deletion_policy: ShadowDeletionPolicy,

    /// When someone else changes an owned value: `Overwrite` (default) writes it back and
    /// emits a Warning event; `Preserve` stops writing and sets `Stalled` until the spec
    /// changes or a sync is forced.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,

    /// How often the shadow is re-read to see drift and reported state, as a Go duration
    /// (`30s`, `5m`, `1h30m`), at least `1s`; `0s` reads only after a change. Default `5m`.
    #[serde(default = "default_shadow_refresh")]
    #[schemars(regex(pattern = schema::DURATION_PATTERN))]
    pub refresh_interval: String,
}

fn default_shadow_refresh() -> String {
    "5m".to_string()
}

impl JsonSchema for ThingShadow {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ThingShadow".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::resource::<ThingShadowSpec, ThingShadowStatus>(
            generator,
            "ThingShadow",
            "ThingShadow keeps the desired section of one AWS IoT device shadow (classic or \
             named) in the state declared in spec, and mirrors the cloud document, the device's \
             reported state and version conflicts into status.",
        )
    }
}

/// What happens to the shadow when the resource is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ShadowDeletionPolicy {
    /// Null the owned paths; keep the shadow and the reported state.
    #[default]
    ClearDesired,
    /// Delete the whole shadow.
    Delete,
    /// Touch nothing.
    Retain,
}

/// Observed state of a `ThingShadow`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes)]
pub struct ThingShadowStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Synced`, `Converged`, `Reconciling` and `Stalled` (kstatus conventions).
    #[serde(default)]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,

    /// Mirror of the cloud shadow as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowMirror>,

    /// JSON-pointer leaf paths of `desired` this resource owns (`/color/r`).
    #[serde(default)]
    pub managed_paths: Vec<String>,

    /// SHA-256 (hex) of the spec's desired section last confirmed in the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_desired_sha256: Option<String>,

    /// Our last successful write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write: Option<LastWrite>,

    /// Version conflicts and out-of-band edits seen so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<ConflictStatus>,

    /// When the shadow was last read or written successfully (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,

    /// Value of the `iot.shadowsync.dev/reconcile-requested-at` annotation last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// The cloud shadow document as last read.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowMirror {
    /// Shadow version last seen.
    pub version: u64,

    /// The cloud's whole desired section, including keys this resource does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserved_object")]
    pub desired: Option<Value>,

    /// The state the device reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserved_object")]
    pub reported: Option<Value>,

    /// Desired values the device has not reported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserved_object")]
    pub delta: Option<Value>,

    /// Newest reported leaf timestamp (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reported_time: Option<String>,
}

/// Our last successful shadow write.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastWrite {
    /// Shadow version after the write.
    pub version: u64,
    /// The write's shadow timestamp (epoch seconds).
    pub timestamp: i64,
}
