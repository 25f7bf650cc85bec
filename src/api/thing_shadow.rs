//! `ThingShadow`: the desired section of one AWS IoT device shadow.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Condition, ConflictPolicy, ConflictStatus, ManagementPolicy};

/// Declares the desired state of one device shadow (classic or named).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "iot.shadowsync.dev",
    version = "v1alpha1",
    kind = "ThingShadow",
    namespaced,
    status = "ThingShadowStatus",
    shortname = "tshadow",
    category = "shadowsync"
)]
#[serde(rename_all = "camelCase")]
pub struct ThingShadowSpec {
    /// The thing whose shadow this is. Immutable.
    pub thing_name: String,
    /// Named shadow; absent means the classic shadow. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_name: Option<String>,
    /// Desired state: a JSON object. Every leaf is owned by this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Value>,
    #[serde(default)]
    pub management_policy: ManagementPolicy,
    #[serde(default)]
    pub deletion_policy: ShadowDeletionPolicy,
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
    /// How often the shadow is re-read (Go duration such as `5m`); `0s` reads only on change.
    #[serde(default = "default_shadow_refresh")]
    pub refresh_interval: String,
}

fn default_shadow_refresh() -> String {
    "5m".to_string()
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
pub struct ThingShadowStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Mirror of the cloud shadow as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowMirror>,
    /// JSON-pointer leaf paths of `desired` this resource owns.
    #[serde(default)]
    pub managed_paths: Vec<String>,
    /// SHA-256 of the spec's desired section last confirmed in the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_desired_sha256: Option<String>,
    /// Our last successful write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write: Option<LastWrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<ConflictStatus>,
    /// When the shadow was last read or written successfully (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// Value of the `reconcile-requested-at` annotation last handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// The cloud shadow document as last read.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowMirror {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
