//! What the operator adds to a [`Kind`]: the kube `Resource` bound, what needs a
//! cluster (reading a referenced Secret or ConfigMap payload) and what else sees the
//! kind's watch (the sets' children). Everything else about a kind is in
//! [`crate::kinds`], shared with the CLI.

use std::future::Future;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::Context;
use crate::api::{RetainedMessage, ThingShadow};
pub use crate::kinds::{Kind, Synced};
use crate::sync::PayloadInput;

/// A kind the operator manages.
pub trait Managed:
    Kind + Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
{
    /// The payload the pass publishes, read from the cluster when the spec references
    /// one.
    fn payload(&self, ctx: &Context) -> impl Future<Output = PayloadInput> + Send;

    /// Sees every event of the kind's watch, each object as decoded, before it is made
    /// compact for the cache (which keeps no labels). Nothing by default.
    fn observe(_ctx: &Context, _event: Observed<'_, Self>) {}
}

/// One event of a kind's watch, as [`Managed::observe`] sees it. An object that does not
/// decode is not shown.
pub enum Observed<'a, K> {
    /// A relist begins: what it delivers replaces everything at [`Observed::RelistDone`].
    RelistStarted,
    /// An object of the relist.
    Relisted(&'a K),
    RelistDone,
    /// An object was created or changed.
    Applied(&'a K),
    /// An object was deleted.
    Deleted {
        namespace: &'a str,
        name: &'a str,
    },
}

impl Managed for ThingShadow {
    async fn payload(&self, _ctx: &Context) -> PayloadInput {
        PayloadInput::Inline
    }

    /// The ThingShadows that carry the set label are the sets' children: one watch
    /// serves both controllers.
    fn observe(ctx: &Context, event: Observed<'_, Self>) {
        ctx.children.observe(event);
    }
}

impl Managed for RetainedMessage {
    async fn payload(&self, ctx: &Context) -> PayloadInput {
        referenced_payload(self, ctx).await
    }
}

/// Reads a `secretKeyRef`/`configMapKeyRef` payload from the resource's namespace. The
/// bytes go straight into the publish; they are never logged or put in status.
async fn referenced_payload(resource: &RetainedMessage, ctx: &Context) -> PayloadInput {
    let namespace = resource.namespace().unwrap_or_else(|| "default".into());
    let source = &resource.spec.payload;
    if let Some(key_ref) = &source.secret_key_ref {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let found = api.get_opt(&key_ref.name).await;
        PayloadInput::Referenced(match found {
            Ok(Some(secret)) => secret
                .data
                .and_then(|mut data| data.remove(&key_ref.key))
                .map(|bytes| bytes.0)
                .or_else(|| {
                    secret
                        .string_data
                        .and_then(|mut data| data.remove(&key_ref.key))
                        .map(String::into_bytes)
                })
                .ok_or_else(|| {
                    format!(
                        "spec.payload.secretKeyRef: Secret {namespace}/{} has no key {:?}",
                        key_ref.name, key_ref.key
                    )
                }),
            Ok(None) => Err(format!(
                "spec.payload.secretKeyRef: Secret {namespace}/{} not found",
                key_ref.name
            )),
            Err(err) => Err(format!(
                "spec.payload.secretKeyRef: cannot read Secret {namespace}/{}: {}",
                key_ref.name,
                kube_reason(&err)
            )),
        })
    } else if let Some(key_ref) = &source.config_map_key_ref {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
        let found = api.get_opt(&key_ref.name).await;
        PayloadInput::Referenced(match found {
            Ok(Some(map)) => map
                .data
                .and_then(|mut data| data.remove(&key_ref.key))
                .map(String::into_bytes)
                .or_else(|| {
                    map.binary_data
                        .and_then(|mut data| data.remove(&key_ref.key))
                        .map(|bytes| bytes.0)
                })
                .ok_or_else(|| {
                    format!(
                        "spec.payload.configMapKeyRef: ConfigMap {namespace}/{} has no key {:?}",
                        key_ref.name, key_ref.key
                    )
                }),
            Ok(None) => Err(format!(
                "spec.payload.configMapKeyRef: ConfigMap {namespace}/{} not found",
                key_ref.name
            )),
            Err(err) => Err(format!(
                "spec.payload.configMapKeyRef: cannot read ConfigMap {namespace}/{}: {}",
                key_ref.name,
                kube_reason(&err)
            )),
        })
    } else {
        PayloadInput::Inline
    }
}

/// A Kubernetes error without request details.
fn kube_reason(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        _ => "the API server did not answer".into(),
    }
}
