//! The planner: pure functions from (spec, observed cloud state, ownership) to a plan
//! and a status. No I/O and no clock: callers pass the time they want used, so every
//! decision here can be unit-tested without a data plane or an apiserver.
//!
//! - [`paths`]: JSON pointers over the desired section (leaf paths, lookup, patches);
//! - [`json`]: value equality with numbers compared by value, and canonical encoding;
//! - [`shadow`]: what to write to a shadow, out-of-band edits, 409 classification, mirror;
//! - [`retained`]: what to publish as a retained message and when;
//! - [`pass`]: one whole reconcile pass as a state machine: which call comes next, and
//!   the status, conditions and events its answers lead to (the caller does the calls);
//! - [`conditions`]: kstatus conditions that only change when the facts change;
//! - [`tenancy`]: which things and topics a namespace's annotations allow;
//! - [`rollout`]: staged rollouts of one template to a fleet: which devices get it now.

pub mod conditions;
pub mod fleet;
pub mod json;
pub mod pass;
pub mod paths;
pub mod retained;
pub mod rollout;
pub mod shadow;
pub mod tenancy;

#[cfg(test)]
mod shadow_props;
