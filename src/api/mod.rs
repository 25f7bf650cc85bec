//! The custom resource types (`iot.shadowsync.dev/v1alpha1`) and their validation.

mod common;
mod retained_message;
mod thing_shadow;
pub mod validate;

pub use common::*;
pub use retained_message::*;
pub use thing_shadow::*;

/// API group of both kinds.
pub const GROUP: &str = "iot.shadowsync.dev";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "iot.shadowsync.dev/v1alpha1";
/// Finalizer that guards cleanup on deletion.
pub const FINALIZER: &str = "iot.shadowsync.dev/cleanup";
/// Annotation that pauses reconciliation when set to `"true"`.
pub const PAUSED_ANNOTATION: &str = "iot.shadowsync.dev/paused";
/// Annotation whose new value forces a sync; echoed to `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "iot.shadowsync.dev/reconcile-requested-at";
