//! The operator's writes to Kubernetes: the status by server-side apply (only when it
//! changed), finalizers by JSON patch with a `test`, and Events through the one sink.
//! Each write's answer is read only for the uid and resourceVersion (see
//! `Context::wrote`).

use kube::api::{Api, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::super::events::Record;
use super::super::kinds::Managed;
use super::super::{Context, OperatorError};
use super::{api_resource, FIELD_MANAGER};
use crate::api::FINALIZER;
use crate::sync::SyncEvent;

/// Server-side apply of the status, only when it changed.
pub(in crate::operator) async fn write_status<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    prior: &K::Status,
    status: &K::Status,
) -> Result<(), OperatorError> {
    if prior == status {
        return Ok(());
    }
    let (params, patch) = status_apply(K::KIND, status);
    let written = written_api::<K>(ctx, api)
        .patch_status(name, &params, &patch)
        .await
        .map_err(OperatorError::Kube)?;
    ctx.wrote(&written);
    Ok(())
}

/// The server-side apply of a status of `kind` (any kind of the API group, the sets
/// too): the operator's field manager, forced, since it owns every status field (which
/// is what lets a later write drop a condition).
pub(in crate::operator) fn status_apply(
    kind: &str,
    status: &impl serde::Serialize,
) -> (PatchParams, Patch<serde_json::Value>) {
    let patch = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": kind,
        "status": status,
    });
    (
        PatchParams::apply(FIELD_MANAGER).force(),
        Patch::Apply(patch),
    )
}

/// What the answer to a write is read for: the object's uid and resourceVersion (see
/// `Context::wrote`). The answer is the whole object, managedFields included; read into
/// this type, the rest is skipped as it is parsed instead of built as a typed object
/// (a few hundred small allocations per write, which at fleet scale fragmented the heap).
#[derive(Clone, Debug, serde::Deserialize)]
struct Written {
    #[serde(deserialize_with = "written_meta")]
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

fn written_meta<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Ids {
        uid: Option<String>,
        resource_version: Option<String>,
    }
    let ids = <Ids as serde::Deserialize>::deserialize(deserializer)?;
    Ok(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        uid: ids.uid,
        resource_version: ids.resource_version,
        ..Default::default()
    })
}

impl Resource for Written {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn group(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn kind(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> std::borrow::Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// `api` (the kind, in its namespace), answering writes as [`Written`].
fn written_api<K: Managed>(ctx: &Context, api: &Api<K>) -> Api<Written> {
    let resource = api_resource::<K>();
    match api.namespace() {
        Some(namespace) => Api::namespaced_with(ctx.client.clone(), namespace, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    }
}

pub(in crate::operator) async fn add_finalizer<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
) -> Result<(), OperatorError> {
    // A JSON patch with a test, so that a concurrent finalizer change fails instead of
    // being overwritten.
    let patch = if obj.finalizers().is_empty() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": obj.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    json_patch(ctx, api, obj, patch).await
}

pub(in crate::operator) async fn remove_finalizer<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
) -> Result<(), OperatorError> {
    let Some(index) = obj.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch = json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]);
    match json_patch(ctx, api, obj, patch).await {
        // Already gone: the object was removed once its last finalizer went.
        Err(OperatorError::Kube(kube::Error::Api(status))) if status.code == 404 => Ok(()),
        other => other,
    }
}

async fn json_patch<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    patch: serde_json::Value,
) -> Result<(), OperatorError> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|err| OperatorError::Internal(err.to_string()))?;
    let written = written_api::<K>(ctx, api)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .map_err(OperatorError::Kube)?;
    ctx.wrote(&written);
    Ok(())
}

/// Sends events through the operator's one sink; a failure to record is logged, never fatal.
pub(in crate::operator) async fn publish<K: Managed>(ctx: &Context, obj: &K, events: &[SyncEvent]) {
    if events.is_empty() {
        return;
    }
    let reference = obj.object_ref(&());
    for event in events {
        if event.warning {
            warn!(kind = K::KIND, name = %obj.name_any(), reason = %event.reason, "{}", event.message);
        } else {
            info!(kind = K::KIND, name = %obj.name_any(), reason = %event.reason, "{}", event.message);
        }
        let note = crate::sync::truncate(event.message.clone(), 1000);
        let record = Record {
            warning: event.warning,
            reason: event.reason.as_str(),
            note: &note,
            action: "Reconcile",
        };
        if let Err(err) = ctx.events.publish(&record, &reference).await {
            warn!(error = %err, "cannot record an event");
        }
    }
}
