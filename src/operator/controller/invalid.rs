//! Objects that do not match the schema the operator was built with: left out of the
//! cache, and told so on the object itself.

use std::sync::Arc;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::super::cache::Cached;
use super::super::events::Record;
use super::super::kinds::Managed;
use super::super::Context;
use super::{api_resource, FIELD_MANAGER};
use crate::planner::conditions::{Reason, Refusal};

/// Why `obj` does not decode, naming the field (`spec.thingName: invalid type: ...`).
/// Decodes again with the path tracked: only for the rare object that failed.
pub(super) fn explain_undecodable<K: Managed>(obj: &DynamicObject) -> String {
    let value = match serde_json::to_value(obj) {
        Ok(value) => value,
        Err(err) => return err.to_string(),
    };
    match serde_path_to_error::deserialize::<_, K>(value) {
        Ok(typed) => match Cached::new(&typed) {
            Ok(_) => "it decodes now".into(),
            Err(err) => err.to_string(),
        },
        Err(err) => {
            let path = err.path().to_string();
            format!("{path}: {}", err.into_inner())
        }
    }
}

/// The reason on an object that does not match the schema the operator was built with.
const INVALID_OBJECT: Reason = Reason::InvalidObject;

/// Marks an object the operator cannot read (Stalled, reason `InvalidObject`) and records
/// a Warning Event, once per generation. The CRD's schema refuses such objects, so they
/// come only from a CRD older or newer than the operator (Helm does not upgrade CRDs).
/// The status is applied server-side by the operator's field manager, as every status
/// write: the prior status (which the typed one cannot read) with the conditions and
/// observedGeneration changed. One manager owning every status field is what lets the
/// next status write, once the object matches again, drop the Stalled condition (a
/// condition written by another manager, e.g. by a merge patch, would stay).
pub(super) async fn report_undecodable<K: Managed>(
    ctx: Arc<Context>,
    obj: DynamicObject,
    err: String,
) {
    let (Some(namespace), name) = (obj.namespace(), obj.name_any()) else {
        return;
    };
    let message = crate::sync::truncate(
        format!(
            "the object does not match the {} schema of this operator ({err}); nothing is \
             done with it, cleanup on deletion included, until it matches. Is the \
             CustomResourceDefinition older or newer than the operator? Upgrade the CRDs \
             with it",
            K::KIND
        ),
        1000,
    );
    let before: Vec<crate::api::Condition> = obj
        .data
        .pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let mut conditions = before.clone();
    let refusal = Refusal {
        reason: INVALID_OBJECT,
        message: message.clone(),
        stalled: true,
        not_synced: true,
        // Announced with each status change, i.e. once per generation.
        event: true,
    };
    refusal.set_conditions(
        &mut conditions,
        obj.metadata.generation,
        &crate::sync::now(),
    );
    let observed = obj
        .data
        .pointer("/status/observedGeneration")
        .and_then(|g| g.as_i64());
    let unchanged = observed == obj.metadata.generation
        && before.len() == conditions.len()
        && before.iter().zip(&conditions).all(|(a, b)| {
            (
                &a.type_,
                &a.status,
                &a.reason,
                &a.message,
                a.observed_generation,
            ) == (
                &b.type_,
                &b.status,
                &b.reason,
                &b.message,
                b.observed_generation,
            )
        });
    if unchanged {
        return;
    }
    let resource = api_resource::<K>();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let mut status = match obj.data.get("status") {
        Some(serde_json::Value::Object(prior)) => prior.clone(),
        _ => serde_json::Map::new(),
    };
    status.insert("observedGeneration".into(), json!(obj.metadata.generation));
    status.insert("conditions".into(), json!(conditions));
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": K::KIND,
        "status": status,
    });
    if let Err(err) = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        warn!(kind = K::KIND, %namespace, %name, error = %err, "cannot write the status");
        return;
    }
    let record = Record {
        warning: true,
        reason: INVALID_OBJECT.as_str(),
        note: &message,
        action: "Reconcile",
    };
    if let Err(err) = ctx
        .events
        .publish(&record, &obj.object_ref(&resource))
        .await
    {
        warn!(error = %err, "cannot record an event");
    }
}
