//! The blocking core of the embedded data plane: one redb transaction per operation.
//!
//! Every mutation runs read-modify-write inside a single write transaction committed with
//! [`Durability::Immediate`] before the caller is answered. redb allows one write
//! transaction at a time, so concurrent updates of one shadow are serialized and the
//! version check is exact; an update that fails (or a crash before commit) leaves the
//! previous committed state whole.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::validate;
use crate::dataplane::{
    DataPlaneError, ErrorKind, NamedShadowPage, PayloadFormat, PublishRequest, RetainedMessageData,
    RetainedMessagePage, RetainedTopicSummary, ShadowDeleted, ShadowDocument, ShadowLimits,
    UserProperty,
};
use crate::shadow::{ShadowRecord, UpdateRequest};

/// Shadow records (JSON of [`ShadowRecord`]), keyed by [`shadow_key`].
const SHADOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("shadows");
/// Retained messages (JSON of [`StoredMessage`]), keyed by topic.
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained_messages");
/// Store-wide facts; `format` guards against opening a file written in another layout.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT: u64 = 1;

/// ListNamedShadowsForThing `pageSize` when none is given.
pub const SHADOW_PAGE_DEFAULT: usize = 25;
/// Largest ListNamedShadowsForThing `pageSize`.
pub const SHADOW_PAGE_MAX: usize = 100;
/// ListRetainedMessages `maxResults` when none is given (AWS documents only the maximum).
pub const RETAINED_PAGE_DEFAULT: usize = 200;
/// Largest ListRetainedMessages `maxResults`.
pub const RETAINED_PAGE_MAX: usize = 200;

/// The current time in epoch milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Key of one shadow: `thing/` for the classic shadow, `thing/name` for a named one.
/// Neither name can contain `/`, so a thing's shadows form one contiguous key range
/// (`thing/` up to `thing0`, `0` being the byte after `/`), sorted by shadow name.
fn shadow_key(thing: &str, shadow: Option<&str>) -> String {
    format!("{thing}/{}", shadow.unwrap_or(""))
}

fn not_found(thing: &str, shadow: Option<&str>) -> DataPlaneError {
    // AWS names a named shadow `thing~shadow` in this message.
    let name = match shadow {
        Some(shadow) => format!("{thing}~{shadow}"),
        None => thing.to_string(),
    };
    DataPlaneError::new(
        ErrorKind::ResourceNotFound,
        format!("No shadow exists with name: '{name}'"),
    )
}

pub(super) fn db_error(e: impl Into<redb::Error>) -> DataPlaneError {
    DataPlaneError::new(
        ErrorKind::InternalFailure,
        format!("embedded store: {}", e.into()),
    )
}

pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> DataPlaneError {
    DataPlaneError::new(
        ErrorKind::InternalFailure,
        format!("embedded store: unreadable {what}: {e}"),
    )
}

/// A retained message as stored: everything the publish carried, so that later readers
/// (GetRetainedMessage, the REST server) can return it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct StoredMessage {
    topic: String,
    /// Base64, to keep the record JSON compact for binary payloads.
    payload: String,
    qos: i32,
    /// Epoch milliseconds.
    last_modified_time: i64,
    #[serde(default)]
    user_properties: Vec<UserProperty>,
    /// Seconds after `last_modified_time` at which the message is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_expiry: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_format_indicator: Option<PayloadFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_data: Option<String>,
}

impl StoredMessage {
    fn expired(&self, now_ms: i64) -> bool {
        self.message_expiry.is_some_and(|secs| {
            now_ms
                >= self
                    .last_modified_time
                    .saturating_add(secs.saturating_mul(1000))
        })
    }

    /// Payload length without decoding it (standard base64 is always padded).
    fn payload_size(&self) -> usize {
        let padding = self
            .payload
            .bytes()
            .rev()
            .take_while(|&b| b == b'=')
            .count();
        (self.payload.len() / 4 * 3).saturating_sub(padding)
    }

    fn payload(&self) -> Result<Vec<u8>, DataPlaneError> {
        STANDARD
            .decode(&self.payload)
            .map_err(|e| corrupt("retained message", e))
    }
}

/// The database plus what every operation needs; cheap to clone into a blocking task.
#[derive(Clone)]
pub(super) struct Store {
    pub(super) db: Arc<Database>,
    pub(super) limits: ShadowLimits,
    pub(super) clock: Clock,
}

/// Creates the tables (so that read transactions find them) and checks the file format.
fn initialize(db: &Database) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let format = meta
            .get("format")
            .map_err(|e| e.to_string())?
            .map(|v| v.value());
        match format {
            None => {
                meta.insert("format", FORMAT).map_err(|e| e.to_string())?;
            }
            Some(FORMAT) => {}
            Some(other) => {
                return Err(format!(
                    "unknown store format {other} (this build reads format {FORMAT})"
                ))
            }
        }
        txn.open_table(SHADOWS).map_err(|e| e.to_string())?;
        txn.open_table(RETAINED).map_err(|e| e.to_string())?;
        // The registry's tables came later in the same format: a file written before
        // them gets them here, empty, and older builds ignore them.
        super::registry::create_tables(&txn).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

/// Opens (creating if absent) a database file.
pub(super) fn open_file(path: &Path) -> Result<Database, String> {
    let db = Database::create(path).map_err(|e| e.to_string())?;
    initialize(&db)?;
    Ok(db)
}

/// A database that lives in memory only.
pub(super) fn open_memory() -> Result<Database, String> {
    let db = Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(|e| e.to_string())?;
    initialize(&db)?;
    Ok(db)
}

impl Store {
    pub(super) fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    pub(super) fn read(&self) -> Result<ReadTransaction, DataPlaneError> {
        self.db.begin_read().map_err(db_error)
    }

    pub(super) fn write(&self) -> Result<WriteTransaction, DataPlaneError> {
        let mut txn = self.db.begin_write().map_err(db_error)?;
        // The default, stated so that nobody lowers it: an acknowledged write must
        // survive a crash.
        txn.set_durability(Durability::Immediate)
            .map_err(db_error)?;
        Ok(txn)
    }

    fn load_shadow(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<ShadowRecord, DataPlaneError> {
        match table.get(key).map_err(db_error)? {
            None => Ok(ShadowRecord::absent()),
            Some(bytes) => serde_json::from_slice(bytes.value()).map_err(|e| corrupt("shadow", e)),
        }
    }

    pub(super) fn get_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDocument, DataPlaneError> {
        let txn = self.read()?;
        let table = txn.open_table(SHADOWS).map_err(db_error)?;
        let record = Self::load_shadow(&table, &shadow_key(thing, shadow))?;
        if !record.exists() {
            return Err(not_found(thing, shadow));
        }
        Ok(record.document(self.now_secs()))
    }

    pub(super) fn update_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
        payload: &[u8],
    ) -> Result<ShadowDocument, DataPlaneError> {
        // Parse outside the write transaction: a bad request never waits for the lock.
        let request = UpdateRequest::parse(payload, &self.limits)?;
        let key = shadow_key(thing, shadow);
        let txn = self.write()?;
        // Read the clock under the write lock, so that timestamps follow commit order.
        let now = self.now_secs();
        let response = {
            let mut table = txn.open_table(SHADOWS).map_err(db_error)?;
            let current = Self::load_shadow(&table, &key)?;
            // On error the transaction is dropped, which aborts it: nothing was written.
            let updated = current.apply_parsed(&request, &self.limits, now)?;
            let bytes = serde_json::to_vec(&updated.record).map_err(|e| corrupt("shadow", e))?;
            table
                .insert(key.as_str(), bytes.as_slice())
                .map_err(db_error)?;
            updated.response
        };
        txn.commit().map_err(db_error)?;
        Ok(response)
    }

    pub(super) fn delete_shadow(
        &self,
        thing: &str,
        shadow: Option<&str>,
    ) -> Result<ShadowDeleted, DataPlaneError> {
        let key = shadow_key(thing, shadow);
        let txn = self.write()?;
        let now = self.now_secs();
        let response = {
            let mut table = txn.open_table(SHADOWS).map_err(db_error)?;
            let current = Self::load_shadow(&table, &key)?;
            let Some((tombstone, response)) = current.delete(now) else {
                return Err(not_found(thing, shadow));
            };
            let bytes = serde_json::to_vec(&tombstone).map_err(|e| corrupt("shadow", e))?;
            table
                .insert(key.as_str(), bytes.as_slice())
                .map_err(db_error)?;
            response
        };
        txn.commit().map_err(db_error)?;
        Ok(response)
    }

    pub(super) fn list_named_shadows(
        &self,
        thing: &str,
        after: Option<&str>,
        page_size: usize,
    ) -> Result<NamedShadowPage, DataPlaneError> {
        let txn = self.read()?;
        let table = txn.open_table(SHADOWS).map_err(db_error)?;
        let prefix = format!("{thing}/");
        let start = match after {
            Some(last) => Bound::Excluded(format!("{prefix}{last}")),
            // Skips the classic shadow (`thing/`), which this operation does not list.
            None => Bound::Excluded(prefix.clone()),
        };
        let end = format!("{thing}0");
        let range = (
            start.as_ref().map(String::as_str),
            Bound::Excluded(end.as_str()),
        );
        let mut results = Vec::new();
        let mut more = false;
        for entry in table.range::<&str>(range).map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            let record: ShadowRecord =
                serde_json::from_slice(value.value()).map_err(|e| corrupt("shadow", e))?;
            if !record.exists() {
                continue;
            }
            if results.len() == page_size {
                more = true;
                break;
            }
            let name = key.value().get(prefix.len()..).unwrap_or_default();
            results.push(name.to_string());
        }
        let next_token = match results.last() {
            Some(last) if more => Some(validate::encode_token(&shadow_scope(thing), last)),
            _ => None,
        };
        Ok(NamedShadowPage {
            results,
            next_token,
            timestamp: self.now_secs(),
        })
    }

    pub(super) fn publish(&self, request: &PublishRequest) -> Result<(), DataPlaneError> {
        let txn = self.write()?;
        let now = self.now_ms();
        {
            let mut table = txn.open_table(RETAINED).map_err(db_error)?;
            if request.payload.is_empty() {
                // An empty retained payload deletes the topic's retained message.
                table.remove(request.topic.as_str()).map_err(db_error)?;
            } else {
                let stored = StoredMessage {
                    topic: request.topic.clone(),
                    payload: STANDARD.encode(&request.payload),
                    qos: request.qos,
                    last_modified_time: now,
                    user_properties: request.user_properties.clone(),
                    message_expiry: request.message_expiry,
                    content_type: request.content_type.clone(),
                    response_topic: request.response_topic.clone(),
                    payload_format_indicator: request.payload_format_indicator,
                    correlation_data: request.correlation_data.clone(),
                };
                let bytes =
                    serde_json::to_vec(&stored).map_err(|e| corrupt("retained message", e))?;
                table
                    .insert(request.topic.as_str(), bytes.as_slice())
                    .map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    pub(super) fn get_retained(&self, topic: &str) -> Result<RetainedMessageData, DataPlaneError> {
        let txn = self.read()?;
        let table = txn.open_table(RETAINED).map_err(db_error)?;
        let stored: Option<StoredMessage> = match table.get(topic).map_err(db_error)? {
            None => None,
            Some(bytes) => Some(
                serde_json::from_slice(bytes.value())
                    .map_err(|e| corrupt("retained message", e))?,
            ),
        };
        let stored = stored
            .filter(|m| !m.expired(self.now_ms()))
            .ok_or_else(|| {
                DataPlaneError::new(
                    ErrorKind::ResourceNotFound,
                    format!("No retained message exists for topic: '{topic}'"),
                )
            })?;
        Ok(RetainedMessageData {
            payload: Bytes::from(stored.payload()?),
            topic: stored.topic,
            qos: stored.qos,
            last_modified_time: stored.last_modified_time,
            user_properties: stored.user_properties,
        })
    }

    pub(super) fn list_retained(
        &self,
        after: Option<&str>,
        max_results: usize,
    ) -> Result<RetainedMessagePage, DataPlaneError> {
        let txn = self.read()?;
        let table = txn.open_table(RETAINED).map_err(db_error)?;
        let now = self.now_ms();
        let range = (
            after.map_or(Bound::Unbounded, Bound::Excluded),
            Bound::<&str>::Unbounded,
        );
        let mut retained_topics = Vec::new();
        let mut more = false;
        for entry in table.range::<&str>(range).map_err(db_error)? {
            let (_, value) = entry.map_err(db_error)?;
            let stored: StoredMessage = serde_json::from_slice(value.value())
                .map_err(|e| corrupt("retained message", e))?;
            if stored.expired(now) {
                continue;
            }
            if retained_topics.len() == max_results {
                more = true;
                break;
            }
            retained_topics.push(RetainedTopicSummary {
                payload_size: i64::try_from(stored.payload_size()).unwrap_or(i64::MAX),
                topic: stored.topic,
                qos: stored.qos,
                last_modified_time: stored.last_modified_time,
            });
        }
        let next_token = match retained_topics.last() {
            Some(last) if more => Some(validate::encode_token(RETAINED_SCOPE, &last.topic)),
            _ => None,
        };
        Ok(RetainedMessagePage {
            retained_topics,
            next_token,
        })
    }
}

/// `nextToken` scope of ListRetainedMessages.
pub(super) const RETAINED_SCOPE: &str = "retained";

/// `nextToken` scope of ListNamedShadowsForThing: a token is only good for its thing.
pub(super) fn shadow_scope(thing: &str) -> String {
    format!("shadows:{thing}")
}
