//! The shadow document engine: AWS IoT merge, delta and metadata semantics (pure, no I/O).
//!
//! Everything here is a function of its inputs: the caller passes the stored
//! [`ShadowRecord`], the raw request and `now` (epoch seconds), and stores what comes back.
//! The embedded data plane is built on it, and the planner uses [`merge`] and [`delta`] to
//! predict a shadow without calling one.
//!
//! Semantics (the AWS IoT Core developer guide, "Device Shadow service documents"):
//! - an update merges objects key by key; `null` removes a key; `"desired": null` removes
//!   the section; arrays are replaced whole and may not contain `null`;
//! - an object emptied by removals is removed, and a section left with no keys disappears
//!   from the document (GetThingShadow shows no `desired` rather than `{}`);
//! - every leaf written gets `{"timestamp": now}` in `metadata` (a list for arrays);
//! - every successful update bumps the version by one; a request carrying a `version`
//!   that is not the current one fails with 409; a deleted shadow re-created within 48 h
//!   continues from its old version;
//! - `delta` holds the desired values the reported state does not match.

mod json;
mod record;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use json::{delta, has_null_in_array, json_depth, leaf_metadata, merge, values_equal};
pub use record::{
    document_size, messages, ShadowRecord, UpdateRequest, Updated, MAX_CLIENT_TOKEN_BYTES,
    TOMBSTONE_RETENTION_SECS,
};
