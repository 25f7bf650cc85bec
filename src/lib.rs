//! shadowsync keeps AWS IoT device shadows and retained MQTT messages in the
//! state declared by two Kubernetes custom resources.
//!
//! The crate reads top-down:
//! - [`reason`]: every condition, Event and metric reason, as one type;
//! - [`api`]: the `ThingShadow` and `RetainedMessage` resource types and their validation;
//! - [`planner`]: pure functions from (spec, observed cloud state, ownership) to a plan and a status;
//! - [`shadow`]: the shadow document engine (AWS merge, null removal, delta, metadata), pure;
//! - [`dataplane`]: the AWS IoT data-plane contract and its implementations
//!   (AWS SDK adapter, embedded store, local REST server);
//! - [`sync`]: one reconcile pass against a data plane (read, plan, write, classify conflicts),
//!   shared by the offline CLI and the operator;
//! - [`kinds`]: each kind described once (target key, status accessors, sync, cleanup)
//!   for the CLI and the operator;
//! - [`operator`]: `shadowsync run`, the Kubernetes controllers around the same sync pass;
//! - [`cli`]: the `shadowsync` command line.

pub mod api;
pub mod backoff;
pub mod cli;
pub mod dataplane;
pub mod fleet;
pub mod kinds;
pub mod operator;
pub mod planner;
pub mod reason;
pub mod shadow;
pub mod sync;
