//! Passes against a data plane that applies a write and then loses its answer: the
//! case where a blind retry would publish twice.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::api::{RetainedMessageSpec, RetainedMessageStatus, ThingShadowSpec, ThingShadowStatus};
use crate::dataplane::embedded::EmbeddedDataPlane;
use crate::dataplane::resilient::{ResiliencePolicy, Resilient};
use crate::dataplane::{
    NamedShadowPage, PublishRequest, RetainedMessageData, RetainedMessagePage, ShadowDeleted,
    ShadowDocument,
};

/// The embedded store, with switches: the next N publishes (or updates) are applied and
/// then answered with a transport error, or refused with one before being applied.
struct Lossy {
    inner: EmbeddedDataPlane,
    lose_publish_answers: AtomicU32,
    drop_publishes: AtomicU32,
    lose_update_answers: AtomicU32,
    /// Publishes the store applied.
    applied_publishes: AtomicU32,
    publish_calls: AtomicU32,
}

impl Lossy {
    fn new() -> Arc<Self> {
        Self::over(EmbeddedDataPlane::in_memory())
    }

    /// Every write lands in the same millisecond, as fast writes can on AWS too.
    fn frozen_clock() -> Arc<Self> {
        Self::over(EmbeddedDataPlane::in_memory().with_clock(|| 1_700_000_000_123))
    }

    fn over(inner: EmbeddedDataPlane) -> Arc<Self> {
        Arc::new(Lossy {
            inner,
            lose_publish_answers: AtomicU32::new(0),
            drop_publishes: AtomicU32::new(0),
            lose_update_answers: AtomicU32::new(0),
            applied_publishes: AtomicU32::new(0),
            publish_calls: AtomicU32::new(0),
        })
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn lost() -> DataPlaneError {
    DataPlaneError::new(ErrorKind::Transport, "connection reset (test)")
}

#[async_trait]
impl DataPlane for Lossy {
    async fn get_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDocument, DataPlaneError> {
        self.inner.get_thing_shadow(thing, shadow).await
    }
    async fn update_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        payload: Bytes,
    ) -> Result<ShadowDocument, DataPlaneError> {
        let answer = self
            .inner
            .update_thing_shadow(thing, shadow, payload)
            .await?;
        if take(&self.lose_update_answers) {
            return Err(lost());
        }
        Ok(answer)
    }
    async fn delete_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDeleted, DataPlaneError> {
        self.inner.delete_thing_shadow(thing, shadow).await
    }
    async fn list_named_shadows_for_thing(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: Option<i32>,
    ) -> Result<NamedShadowPage, DataPlaneError> {
        self.inner
            .list_named_shadows_for_thing(thing, next_token, page_size)
            .await
    }
    async fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError> {
        self.publish_calls.fetch_add(1, Ordering::SeqCst);
        if take(&self.drop_publishes) {
            return Err(lost());
        }
        self.inner.publish(request).await?;
        self.applied_publishes.fetch_add(1, Ordering::SeqCst);
        if take(&self.lose_publish_answers) {
            return Err(lost());
        }
        Ok(())
    }
    async fn get_retained_message(
        &self,
        topic: &str,
    ) -> Result<RetainedMessageData, DataPlaneError> {
        self.inner.get_retained_message(topic).await
    }
    async fn list_retained_messages(
        &self,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<RetainedMessagePage, DataPlaneError> {
        self.inner
            .list_retained_messages(next_token, max_results)
            .await
    }
}

/// The syncer as the operator builds it: through the retry policy (fast backoff).
fn syncer(plane: &Arc<Lossy>) -> Syncer {
    let inner: Arc<dyn DataPlane> = plane.clone();
    let policy = ResiliencePolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..ResiliencePolicy::passthrough()
    };
    Syncer::new(Arc::new(Resilient::new(inner, policy)))
}

fn retained(payload: Value) -> RetainedMessageSpec {
    serde_json::from_value(json!({"topic": "site/a/config", "payload": payload}))
        .expect("a valid spec")
}

fn ready(conditions: &[crate::api::Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn pass(
    syncer: &Syncer,
    spec: &RetainedMessageSpec,
    prior: &RetainedMessageStatus,
) -> RetainedSyncResult {
    syncer
        .sync_retained(spec, prior, PayloadInput::Inline, &SyncOptions::default())
        .await
}

#[tokio::test]
async fn a_publish_whose_answer_was_lost_is_not_published_again() {
    publish_answer_lost(Lossy::new()).await;
}

#[tokio::test]
async fn a_lost_publish_answer_in_the_same_millisecond_as_the_last_publish_is_recognised() {
    // The stored time alone cannot tell the two publishes apart; the payload can.
    publish_answer_lost(Lossy::frozen_clock()).await;
}

async fn publish_answer_lost(plane: Arc<Lossy>) {
    let syncer = syncer(&plane);
    let one = retained(json!({"json": {"v": 1}}));
    let first = pass(&syncer, &one, &RetainedMessageStatus::default()).await;
    assert!(first.ready);

    let two = retained(json!({"json": {"v": 2}}));
    plane.lose_publish_answers.store(1, Ordering::SeqCst);
    let second = pass(&syncer, &two, &first.status).await;

    assert!(second.ready, "{:?}", second.status.conditions);
    assert_eq!(plane.publish_calls.load(Ordering::SeqCst), 2, "no repeat");
    assert_eq!(plane.applied_publishes.load(Ordering::SeqCst), 2);
    assert_eq!(second.status.publish_count, 2);
    let third = pass(&syncer, &two, &second.status).await;
    assert!(third.ready);
    assert_eq!(third.publishes, 0);
    assert_eq!(plane.applied_publishes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_publish_dropped_before_it_was_applied_fails_the_pass_then_goes_out_once() {
    let plane = Lossy::new();
    let syncer = syncer(&plane);
    let one = retained(json!({"text": "one"}));
    plane.drop_publishes.store(1, Ordering::SeqCst);
    let failed = pass(&syncer, &one, &RetainedMessageStatus::default()).await;
    assert!(!failed.ready);
    assert!(
        failed
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Reconciling" && c.status == "True"),
        "retryable: {:?}",
        failed.status.conditions
    );
    assert_eq!(plane.applied_publishes.load(Ordering::SeqCst), 0);

    let next = pass(&syncer, &one, &failed.status).await;
    assert!(next.ready);
    assert_eq!(plane.applied_publishes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_publish_whose_record_was_lost_is_recognised_on_the_next_pass() {
    // The operator published, then died (or its status write failed) before recording
    // it: the next pass starts from the old status.
    let plane = Lossy::new();
    let syncer = syncer(&plane);
    let one = retained(json!({"json": {"v": 1}}));
    let recorded = pass(&syncer, &one, &RetainedMessageStatus::default())
        .await
        .status;
    let two = retained(json!({"json": {"v": 2}}));
    let unrecorded = pass(&syncer, &two, &recorded).await;
    assert_eq!(unrecorded.publishes, 1);

    let again = pass(&syncer, &two, &recorded).await;

    assert!(again.ready, "{:?}", again.status.conditions);
    assert_eq!(again.publishes, 0);
    assert_eq!(plane.applied_publishes.load(Ordering::SeqCst), 2);
    assert_eq!(
        again.status.applied_sha256, unrecorded.status.applied_sha256,
        "the spec is recorded as applied"
    );
    assert!(ready(&again.status.conditions));
}

#[tokio::test]
async fn a_change_only_in_attributes_the_cloud_does_not_show_is_still_published() {
    let plane = Lossy::new();
    let syncer = syncer(&plane);
    let one = retained(json!({"text": "same"}));
    let recorded = pass(&syncer, &one, &RetainedMessageStatus::default())
        .await
        .status;
    let mut expiring = one.clone();
    expiring.message_expiry = Some(3600);

    let changed = pass(&syncer, &expiring, &recorded).await;

    assert_eq!(changed.publishes, 1, "the expiry must reach the broker");
    assert_eq!(plane.applied_publishes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn hidden_attributes_are_pinned_even_when_the_cloud_shows_the_new_content() {
    let plane = Lossy::new();
    let syncer = syncer(&plane);
    let one = retained(json!({"text": "one"}));
    let recorded = pass(&syncer, &one, &RetainedMessageStatus::default())
        .await
        .status;
    // Someone else puts the new content there, without the expiry the spec declares.
    let mut two = retained(json!({"text": "two"}));
    plane
        .inner
        .publish(&PublishRequest {
            topic: two.topic.clone(),
            payload: Bytes::from_static(b"two"),
            retain: true,
            ..PublishRequest::default()
        })
        .await
        .unwrap();
    two.message_expiry = Some(3600);

    let next = pass(&syncer, &two, &recorded).await;

    assert_eq!(next.publishes, 1, "the expiry must reach the broker");
    assert_eq!(plane.applied_publishes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn someone_else_publishing_the_old_content_is_not_taken_for_ours() {
    let plane = Lossy::new();
    let syncer = syncer(&plane);
    let one = retained(json!({"text": "one"}));
    let recorded = pass(&syncer, &one, &RetainedMessageStatus::default())
        .await
        .status;
    let two = retained(json!({"text": "two"}));
    // The cloud still shows "one": the new spec is published.
    let next = pass(&syncer, &two, &recorded).await;
    assert_eq!(next.publishes, 1);
    assert_eq!(plane.applied_publishes.load(Ordering::SeqCst), 2);
}

fn shadow(desired: Value) -> ThingShadowSpec {
    serde_json::from_value(json!({"thingName": "lamp", "desired": desired})).expect("a spec")
}

#[tokio::test]
async fn a_shadow_update_whose_answer_was_lost_is_no_conflict() {
    let plane = Lossy::new();
    let syncer = syncer(&plane);
    let opts = SyncOptions::default();
    let first = syncer
        .sync_shadow(
            &shadow(json!({"power": "on"})),
            &ThingShadowStatus::default(),
            &opts,
        )
        .await;
    assert!(first.ready);

    // Applied, answer lost; the retry carries the old version and gets 409; the re-read
    // shows our own values.
    plane.lose_update_answers.store(1, Ordering::SeqCst);
    let spec = shadow(json!({"power": "off"}));
    let second = syncer.sync_shadow(&spec, &first.status, &opts).await;

    assert!(second.ready, "{:?}", second.status.conditions);
    let doc = plane.inner.get_thing_shadow("lamp", None).await.unwrap();
    assert_eq!(doc.state.desired, Some(json!({"power": "off"})));
    let conflicts = second.status.conflicts.clone().unwrap_or_default();
    assert_ne!(
        conflicts.last_reason.as_deref(),
        Some("OutOfBandEdit"),
        "our own write is not an out-of-band edit: {conflicts:?}"
    );
    assert!(
        second.events.iter().all(|e| !e.warning),
        "no warning: {:?}",
        second.events
    );
    // One write only: the answer-lost update, the refused retry, and nothing after.
    assert_eq!(doc.version, 2);
}
