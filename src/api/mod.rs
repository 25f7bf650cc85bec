//! The custom resource types (`iot.shadowsync.dev/v1alpha1`), their CRDs and their validation.
//!
//! The CRD YAML in `crds/` is generated from these types ([`crds_yaml`], printed by
//! `shadowsync crds`); `tests/crds.rs` fails when the committed files are out of date.

mod common;
mod retained_message;
mod schema;
mod thing_shadow;
mod thing_shadow_set;
pub mod validate;

pub use common::*;
pub use retained_message::*;
pub use thing_shadow::*;
pub use thing_shadow_set::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every kind.
pub const GROUP: &str = "iot.shadowsync.dev";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "iot.shadowsync.dev/v1alpha1";
/// Finalizer that guards cleanup on deletion.
pub const FINALIZER: &str = "iot.shadowsync.dev/cleanup";
/// Annotation that pauses reconciliation when set to `"true"`.
pub const PAUSED_ANNOTATION: &str = "iot.shadowsync.dev/paused";
/// Annotation whose new value forces a sync; echoed to `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "iot.shadowsync.dev/reconcile-requested-at";

/// Label on every child of a `ThingShadowSet`: the name of its set (`kubectl get tshadow -l
/// iot.shadowsync.dev/set=lamps`).
pub const SET_LABEL: &str = "iot.shadowsync.dev/set";
/// Annotation on every child of a `ThingShadowSet`: the template revision it carries.
pub const REVISION_ANNOTATION: &str = "iot.shadowsync.dev/template-revision";
/// Annotation on every child of a `ThingShadowSet`: when it was given that revision (RFC 3339); a step's
/// timeout counts from here.
pub const REVISION_TIME_ANNOTATION: &str = "iot.shadowsync.dev/revision-time";

/// First line of every generated CRD document.
const GENERATED_HEADER: &str =
    "# Generated from the Rust types in src/api by `shadowsync crds`. Do not edit.\n";

/// The `ThingShadow` CustomResourceDefinition.
pub fn thing_shadow_crd() -> CustomResourceDefinition {
    ThingShadow::crd()
}

/// The `RetainedMessage` CustomResourceDefinition.
pub fn retained_message_crd() -> CustomResourceDefinition {
    RetainedMessage::crd()
}

/// The `ThingShadowSet` CustomResourceDefinition.
///
/// kube makes every optional int-or-string field `nullable`; `maxFailures` has a default
/// instead, and a stored `null` would not decode, so the flag is dropped.
pub fn thing_shadow_set_crd() -> CustomResourceDefinition {
    let mut crd = ThingShadowSet::crd();
    for version in &mut crd.spec.versions {
        let max_failures = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|spec| spec.properties.as_mut())
            .and_then(|p| p.get_mut("rollout"))
            .and_then(|rollout| rollout.properties.as_mut())
            .and_then(|p| p.get_mut("maxFailures"));
        if let Some(node) = max_failures {
            node.nullable = None;
        }
    }
    crd
}

/// The content of `crds/thingshadows.yaml`.
pub fn crd_yaml_thing_shadow() -> String {
    to_yaml(&thing_shadow_crd())
}

/// The content of `crds/retainedmessages.yaml`.
pub fn crd_yaml_retained_message() -> String {
    to_yaml(&retained_message_crd())
}

/// The content of `crds/thingshadowsets.yaml`.
pub fn crd_yaml_thing_shadow_set() -> String {
    to_yaml(&thing_shadow_set_crd())
}

/// The three CRDs as one multi-document YAML stream, `ThingShadow` first, then
/// `RetainedMessage`, then `ThingShadowSet`: what `shadowsync crds` prints.
pub fn crds_yaml() -> String {
    format!(
        "{}---\n{}---\n{}",
        crd_yaml_thing_shadow(),
        crd_yaml_retained_message(),
        crd_yaml_thing_shadow_set()
    )
}

/// The committed CRD files: (path relative to the repository root, content).
pub fn crd_files() -> [(&'static str, String); 3] {
    [
        ("crds/thingshadows.yaml", crd_yaml_thing_shadow()),
        ("crds/retainedmessages.yaml", crd_yaml_retained_message()),
        ("crds/thingshadowsets.yaml", crd_yaml_thing_shadow_set()),
    ]
}

fn to_yaml(crd: &CustomResourceDefinition) -> String {
    // A CRD is plain data (strings, maps, numbers): serializing it cannot fail.
    let body = serde_yaml::to_string(crd).expect("a CustomResourceDefinition serializes to YAML");
    format!("{GENERATED_HEADER}{body}")
}
