//! Manifest parsing and validation (`shadowsync::cli::manifest`,
//! `shadowsync::api::validate`) followed by planning (`shadowsync::planner`), on
//! arbitrary text.
//!
//! The first byte picks the limits (AWS's defaults or small ones, so that size and depth
//! boundaries are reachable); the rest is read as a multi-document YAML stream.
//! `tests/invariants/manifest.rs` says what is checked.

#![no_main]

#[path = "../../invariants/mod.rs"]
mod invariants;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let limits =
        &invariants::manifest::LIMITS[usize::from(selector) % invariants::manifest::LIMITS.len()];
    invariants::manifest::check_text(&String::from_utf8_lossy(rest), limits);
});
