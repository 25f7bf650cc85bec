//! Invariants shared by the property tests (`tests/*_props.rs`, run in CI) and the
//! coverage-guided fuzz targets (`tests/fuzz/`): both generate inputs their own way and
//! check them here, so a property holds under either.
//!
//! - [`json`]: an independent model of AWS's merge and delta;
//! - [`shadow`]: an update to a stored shadow is accepted exactly when no rule refuses it,
//!   and leaves the state the model predicts;
//! - [`server`]: what the local data plane may answer to any request;
//! - [`manifest`]: what validation promises to planning and to the store.

#![allow(dead_code)] // Each test binary uses its own part of this module.

pub mod json;
pub mod manifest;
pub mod server;
pub mod shadow;
