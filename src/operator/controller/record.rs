//! Recording the outcome of a reconcile, in one place for every path: the Events (only
//! the new ones: a pass returns only what happened, a refusal says whether it is news),
//! the status (server-side apply, only when it changed), the readiness gauge, and when
//! to look again.

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::super::cache::Cached;
use super::super::decide::{next_after_pass, Next};
use super::super::kinds::{Managed, Synced};
use super::super::refresh::until_refresh_slot;
use super::super::{Context, OperatorError};
use super::writes::{publish, write_status};
use super::Owners;
use crate::dataplane::availability::is_outage_reason;
use crate::planner::conditions::{Reason, Refusal};
use crate::sync::SyncEvent;

/// A refused resource: its status says why (for this generation), an Event too when the
/// refusal is news, and it counts as not Ready.
pub(super) async fn refusal<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    prior: &K::Status,
    refusal: &Refusal,
) -> Result<(), OperatorError> {
    let generation = obj.meta().generation;
    let mut status = prior.clone();
    K::set_observed_generation(&mut status, generation);
    refusal.set_conditions(
        K::conditions_mut(&mut status),
        generation,
        &crate::sync::now(),
    );
    if refusal.event {
        let event = SyncEvent {
            warning: true,
            reason: refusal.reason,
            message: refusal.message.clone(),
        };
        publish(ctx, obj, &[event]).await;
    }
    write_status(ctx, api, &obj.name_any(), prior, &status).await?;
    ctx.metrics
        .readiness(&obj.uid().unwrap_or_default(), K::KIND, Some(false));
    Ok(())
}

/// A sync pass: its events, the conflicts it counted, its status, readiness, and the
/// next look (see [`next_after_pass`]).
pub(super) async fn pass<K: Managed>(
    ctx: &Context,
    api: &Api<K>,
    owners: &Owners<K>,
    cached: &Cached<K>,
    obj: &K,
    prior: &K::Status,
    synced: Synced<K::Status>,
) -> Result<(Action, bool), OperatorError> {
    let uid = obj.uid().unwrap_or_default();
    publish(ctx, obj, &synced.events).await;
    if let Some(after) = K::conflicts(&synced.status) {
        let before = K::conflicts(prior).map_or(0, |c| c.count);
        let new = after.count.saturating_sub(before);
        if new > 0 {
            let class = match after.last_reason.as_deref().and_then(Reason::parse) {
                Some(Reason::OutOfBandEdit) => Reason::OutOfBandEdit,
                _ => Reason::VersionConflict,
            };
            ctx.metrics.conflict(K::KIND, class, new);
        }
    }
    write_status(ctx, api, &obj.name_any(), prior, &synced.status).await?;
    ctx.metrics.readiness(&uid, K::KIND, Some(synced.ready));

    let conditions = K::conditions(&synced.status);
    let stalled = conditions
        .iter()
        .any(|c| c.type_ == "Stalled" && c.status == "True");
    let unanswered = conditions
        .iter()
        .any(|c| c.type_ == "Ready" && is_outage_reason(&c.reason));
    if synced.ready {
        ctx.resources.reset_backoff(&uid);
    }
    let next = next_after_pass(synced.ready, stalled, unanswered, synced.wrote);
    Ok((schedule(ctx, owners, cached, obj, next), synced.ready))
}

/// Turns [`Next`] into the controller's action: a refresh timer at the resource's slot
/// (see [`super::super::refresh`]; none without a refresh interval) and no requeue, or
/// a requeue after the resource's backoff.
pub(super) fn schedule<K: Managed>(
    ctx: &Context,
    owners: &Owners<K>,
    cached: &Cached<K>,
    obj: &K,
    next: Next,
) -> Action {
    let uid = obj.uid().unwrap_or_default();
    match next {
        Next::Refresh { wrote } => {
            if let Some(period) = obj.refresh() {
                let delay = until_refresh_slot(ctx.resources.refresh_phase(&uid), period, wrote);
                owners.refreshes.schedule(cached, delay);
            }
            Action::await_change()
        }
        Next::Backoff {
            awaiting_data_plane,
        } => {
            if awaiting_data_plane {
                ctx.resources.await_data_plane(&uid);
            }
            Action::requeue(ctx.resources.next_backoff(&uid))
        }
    }
}
