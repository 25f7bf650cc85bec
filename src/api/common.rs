//! Types shared by both kinds: policies, conditions, conflict records.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether shadowsync writes to the data plane or only mirrors it into status.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ManagementPolicy {
    /// Write the declared state and keep it there.
    #[default]
    Manage,
    /// Never write; mirror the cloud state into status.
    Observe,
}

/// What to do when someone else changed a value this resource owns.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConflictPolicy {
    /// Write the declared value back and emit a Warning event.
    #[default]
    Overwrite,
    /// Stop writing and report `Stalled=True` (reason `Conflict`) until the spec
    /// changes or a sync is forced.
    Preserve,
}

/// One status condition (kstatus conventions).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Synced`, `Converged`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word from a fixed set.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

/// Record of version conflicts and out-of-band edits.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictStatus {
    /// Conflicts seen since the resource was created.
    pub count: u64,
    /// When the last conflict was seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
    /// `VersionConflict` (benign: only keys we do not own moved) or `OutOfBandEdit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    /// The version our write carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// The version found on re-read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<u64>,
}
