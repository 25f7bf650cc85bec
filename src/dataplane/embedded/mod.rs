//! The embedded data plane: AWS IoT shadow and retained-message semantics in process,
//! in memory or persisted to a redb file.
//!
//! Shadow semantics come from [`crate::shadow`]; this module adds names, storage, paging
//! and retained messages. Every mutating call is committed to the database with immediate
//! durability, in one transaction, before it returns `Ok`: an acknowledged write survives
//! a crash and a failed or interrupted one leaves nothing behind. The database calls are
//! blocking, so they run on tokio's blocking pool and never hold a lock across an await.
//!
//! Where AWS's behaviour is not documented, the choices are:
//! - ListNamedShadowsForThing for a thing without named shadows answers an empty list,
//!   not 404: AWS models ResourceNotFound for the operation, but shadows do not need a
//!   registry Thing, so "no shadows" is not "no such resource" (moto answers 404 for a
//!   Thing it does not know);
//! - an update carrying `version` to a shadow that does not exist compares it with 0, or
//!   with the deleted shadow's version while its tombstone is kept (48 h);
//! - ListRetainedMessages defaults to its maximum page, 200.
//!
//! The same store is also a [`Registry`](crate::dataplane::registry::Registry) (things,
//! static thing groups, fleet search), in the same database file and with the same
//! durability rule.

mod registry;
mod store;
pub mod validate;

#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    DataPlane, DataPlaneError, ErrorKind, NamedShadowPage, PublishRequest, RetainedMessageData,
    RetainedMessagePage, ShadowDeleted, ShadowDocument, ShadowLimits,
};
use store::Store;
pub use store::{
    Clock, RETAINED_PAGE_DEFAULT, RETAINED_PAGE_MAX, SHADOW_PAGE_DEFAULT, SHADOW_PAGE_MAX,
};

/// The database file could not be opened or created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot open the data-plane database {}: {message}", path.display())]
pub struct OpenError {
    /// The file that was asked for.
    pub path: PathBuf,
    /// What redb said (in use by another store, not a database, I/O error...).
    pub message: String,
}

/// An in-process AWS IoT data plane (see the module documentation).
///
/// Cheap to clone: clones share the same database. Use it directly, as
/// `Arc<EmbeddedDataPlane>` or as `Arc<dyn DataPlane>`.
#[derive(Clone)]
pub struct EmbeddedDataPlane {
    store: Store,
    path: Option<PathBuf>,
}

impl fmt::Debug for EmbeddedDataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedDataPlane")
            .field("path", &self.path)
            .field("limits", &self.store.limits)
            .finish_non_exhaustive()
    }
}

/// Wall-clock time in epoch milliseconds.
fn system_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl EmbeddedDataPlane {
    fn with_db(db: redb::Database, path: Option<PathBuf>) -> Self {
        Self {
            store: Store {
                db: Arc::new(db),
                limits: ShadowLimits::default(),
                clock: Arc::new(system_clock),
            },
            path,
        }
    }

    /// A store that lives in memory and is gone when the last clone is dropped.
    ///
    /// # Panics
    ///
    /// Only if memory for the empty database cannot be allocated.
    pub fn in_memory() -> Self {
        match store::open_memory() {
            Ok(db) => Self::with_db(db, None),
            // Creating an empty in-memory database only allocates; there is no input that
            // can make it fail, and no sensible way to go on if allocation does.
            Err(e) => panic!("cannot create an in-memory redb database: {e}"),
        }
    }

    /// A store persisted to the redb file at `path`, created if absent and loaded if
    /// present. The file is locked while open: a second open of the same file, in this
    /// process or another, fails until the first store (and all its clones) is dropped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref();
        let db = store::open_file(path).map_err(|message| OpenError {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(Self::with_db(db, Some(path.to_path_buf())))
    }

    /// Enforces these limits instead of AWS's defaults.
    pub fn with_limits(mut self, limits: ShadowLimits) -> Self {
        self.store.limits = limits;
        self
    }

    /// Reads time (epoch milliseconds) from `clock` instead of the system clock, so that
    /// tests control timestamps, tombstone retention and message expiry.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.store.clock = Arc::new(clock);
        self
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> ShadowLimits {
        self.store.limits
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `op` on the blocking pool: redb calls block (a commit waits for fsync).
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, DataPlaneError> + Send + 'static,
    ) -> Result<T, DataPlaneError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|e| {
                DataPlaneError::new(
                    ErrorKind::InternalFailure,
                    format!("embedded store task failed: {e}"),
                )
            })?
    }
}

fn check_names(thing: &str, shadow: Option<&str>) -> Result<(), DataPlaneError> {
    validate::thing_name(thing)?;
    if let Some(shadow) = shadow {
        validate::shadow_name(shadow)?;
    }
    Ok(())
}

#[async_trait]
impl DataPlane for EmbeddedDataPlane {
    async fn get_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDocument, DataPlaneError> {
        check_names(thing, shadow)?;
        let (thing, shadow) = (thing.to_string(), shadow.map(str::to_string));
        self.blocking(move |s| s.get_shadow(&thing, shadow.as_deref()))
            .await
    }

    async fn update_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        payload: Bytes,
    ) -> Result<ShadowDocument, DataPlaneError> {
        check_names(thing, shadow)?;
        let (thing, shadow) = (thing.to_string(), shadow.map(str::to_string));
        self.blocking(move |s| s.update_shadow(&thing, shadow.as_deref(), &payload))
            .await
    }

    async fn delete_thing_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDeleted, DataPlaneError> {
        check_names(thing, shadow)?;
        let (thing, shadow) = (thing.to_string(), shadow.map(str::to_string));
        self.blocking(move |s| s.delete_shadow(&thing, shadow.as_deref()))
            .await
    }

    /// Names of the thing's existing named shadows (never the classic one), sorted, in
    /// pages of `page_size` (default 25). A thing with none gets an empty list, not 404.
    async fn list_named_shadows_for_thing(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: Option<i32>,
    ) -> Result<NamedShadowPage, DataPlaneError> {
        validate::thing_name(thing)?;
        let page_size =
            validate::page_size(page_size, SHADOW_PAGE_DEFAULT, SHADOW_PAGE_MAX, "pageSize")?;
        let after = next_token
            .map(|t| validate::decode_token(&store::shadow_scope(thing), t))
            .transpose()?;
        let thing = thing.to_string();
        self.blocking(move |s| s.list_named_shadows(&thing, after.as_deref(), page_size))
            .await
    }

    /// Validates the request; with `retain`, stores the message (or deletes the topic's
    /// retained message when the payload is empty). Without `retain` nothing is kept: this
    /// store has no subscribers.
    async fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError> {
        validate_publish(request, &self.store.limits)?;
        if !request.retain {
            return Ok(());
        }
        let request = request.clone();
        self.blocking(move |s| s.publish(&request)).await
    }

    async fn get_retained_message(
        &self,
        topic: &str,
    ) -> Result<RetainedMessageData, DataPlaneError> {
        validate::topic(topic, false)?;
        let topic = topic.to_string();
        self.blocking(move |s| s.get_retained(&topic)).await
    }

    /// Retained messages sorted by topic, in pages of `max_results` (default 200).
    async fn list_retained_messages(
        &self,
        next_token: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<RetainedMessagePage, DataPlaneError> {
        let max_results = validate::page_size(
            max_results,
            RETAINED_PAGE_DEFAULT,
            RETAINED_PAGE_MAX,
            "maxResults",
        )?;
        let after = next_token
            .map(|t| validate::decode_token(store::RETAINED_SCOPE, t))
            .transpose()?;
        self.blocking(move |s| s.list_retained(after.as_deref(), max_results))
            .await
    }
}

/// Everything Publish checks before anything is stored.
fn validate_publish(request: &PublishRequest, limits: &ShadowLimits) -> Result<(), DataPlaneError> {
    let invalid = |message: String| DataPlaneError::new(ErrorKind::InvalidRequest, message);
    validate::topic(&request.topic, request.retain)?;
    if !(0..=1).contains(&request.qos) {
        return Err(invalid(format!("qos must be 0 or 1, got {}", request.qos)));
    }
    if request.payload.len() > limits.max_payload_bytes {
        return Err(DataPlaneError::new(
            ErrorKind::RequestEntityTooLarge,
            format!(
                "The payload exceeds the maximum size allowed ({} bytes)",
                limits.max_payload_bytes
            ),
        ));
    }
    if let Some(expiry) = request.message_expiry {
        if expiry < 0 {
            return Err(invalid(format!(
                "messageExpiry must not be negative, got {expiry}"
            )));
        }
    }
    if let Some(response_topic) = &request.response_topic {
        validate::topic(response_topic, false)?;
    }
    if let Some(data) = &request.correlation_data {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| invalid("correlationData must be base64".to_string()))?;
    }
    Ok(())
}
