//! Validation of specs before any data-plane call (filled in below).
