//! Fleets: what a `ThingShadowSet` needs besides the rollout planner, shared by the
//! operator and the CLI.
//!
//! - The children: one ThingShadow per selected thing, named by [`child_name`] (pure,
//!   deterministic, one name per thing whatever else the set holds), labelled
//!   [`SET_LABEL`] and annotated with the template [`revision`] it carries.
//! - The membership ([`membership`]): the selector resolved against the registry, every
//!   page followed.

pub mod membership;

pub use crate::api::{REVISION_ANNOTATION, REVISION_TIME_ANNOTATION, SET_LABEL};
pub use crate::planner::fleet::naming::{child_name, revision};
