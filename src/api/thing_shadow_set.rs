//! `ThingShadowSet`: one desired state for a fleet of devices, rolled out in steps.
//!
//! A set selects things (a list, a thing group, or a fleet-indexing query), and keeps one
//! child `ThingShadow` per selected thing, made from `spec.template`. Changing the template
//! rolls the new revision out in cumulative steps (`spec.rollout.steps`), waiting at each
//! step for the devices to report it, with a budget of failures and a choice between
//! stopping and rolling back when it is exceeded.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema;
use super::{Condition, ConflictPolicy, ManagementPolicy, ShadowDeletionPolicy, ThingShadowSpec};

/// Declares one desired shadow state for a fleet of things.
// `printcolumn(...)` entries repeat keys such as `type_` by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "iot.shadowsync.dev",
    version = "v1alpha1",
    kind = "ThingShadowSet",
    namespaced,
    status = "ThingShadowSetStatus",
    shortname = "tshadowset",
    category = "shadowsync",
    schema = "manual",
    doc = "A `ThingShadowSet` resource: one desired shadow state for a fleet of things.",
    printcolumn(
        name = "Targeted",
        type_ = "integer",
        json_path = ".status.targeted",
        description = "Things selected"
    ),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.updated",
        description = "Things that carry the revision being rolled out"
    ),
    printcolumn(
        name = "Converged",
        type_ = "integer",
        json_path = ".status.converged",
        description = "Updated things whose device reported the desired state"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.failed",
        description = "Updated things that failed (stalled, or not converged in time)"
    ),
    printcolumn(
        name = "Step",
        type_ = "string",
        json_path = ".status.step",
        description = "Rollout step, as step/steps (percentage)"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Progressing, Complete, Paused or Aborted"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes)]
pub struct ThingShadowSetSpec {
    /// Which things belong to the set: exactly one of `things`, `thingGroup` or `query`.
    pub selector: FleetSelector,

    /// The ThingShadow each selected thing gets (a ThingShadow spec without `thingName`).
    pub template: ShadowTemplate,

    /// How a template change reaches the fleet. Absent: all things at once, each step
    /// waiting for the devices to report.
    #[serde(default)]
    pub rollout: RolloutSpec,

    /// How often the membership (thing group or query) is read again, as a Go duration,
    /// at least `10s`. Default `5m`. A `things` list needs no reading.
    #[serde(default = "default_resync_interval")]
    #[schemars(regex(pattern = schema::DURATION_PATTERN))]
    pub resync_interval: String,
}

fn default_resync_interval() -> String {
    "5m".to_string()
}

impl JsonSchema for ThingShadowSet {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ThingShadowSet".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::resource::<ThingShadowSetSpec, ThingShadowSetStatus>(
            generator,
            "ThingShadowSet",
            "ThingShadowSet keeps one ThingShadow per selected thing (a list, a thing group or \
             a fleet-indexing query), made from spec.template, and rolls template changes out \
             in steps, waiting for the devices to report them.",
        )
    }
}

/// The things of a set: exactly one of the three fields.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes, extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.things) ? 1 : 0) + (has(self.thingGroup) ? 1 : 0) + (has(self.query) ? 1 : 0) == 1",
        "message": "exactly one of things, thingGroup or query must be set",
    },
]))]
pub struct FleetSelector {
    /// Thing names, each 1 to 128 characters of `a-zA-Z0-9:_-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "thing_names")]
    pub things: Option<Vec<String>>,

    /// The things of an AWS IoT thing group (static or dynamic), read with
    /// ListThingsInThingGroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_group: Option<ThingGroupSelector>,

    /// A fleet-indexing query on `AWS_Things` (for example `attributes.model:lamp-v2`),
    /// read with SearchIndex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    pub query: Option<String>,
}

fn thing_names(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 10000,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": schema::THING_NAME_PATTERN,
        },
    })
}

/// A thing group as a selector.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes)]
pub struct ThingGroupSelector {
    /// The group's name: 1 to 128 characters of `a-zA-Z0-9:_-`.
    #[schemars(length(min = 1, max = 128), regex(pattern = schema::THING_NAME_PATTERN))]
    pub name: String,

    /// Include the things of the group's descendants.
    #[serde(default)]
    pub recursive: bool,
}

/// A ThingShadow spec without `thingName`: what every device of the set gets.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes, extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.shadowName) == has(oldSelf.shadowName)",
        "message": "shadowName cannot be added or removed: the classic and a named shadow are different targets",
    },
]))]
pub struct ShadowTemplate {
    /// Name of a named shadow (absent: the classic shadow). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = schema::SHADOW_NAME_PATTERN),
        extend("x-kubernetes-validations" = [
            {"rule": "self == oldSelf", "message": "shadowName is immutable"},
            {
                "rule": "self != 'AWSManagedGreengrassV2Deployment'",
                "message": "the shadow AWSManagedGreengrassV2Deployment is owned by Greengrass",
            },
        ]),
    )]
    pub shadow_name: Option<String>,

    /// Desired state, as in a ThingShadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserved_object")]
    pub desired: Option<Value>,

    /// `Manage` (default) or `Observe`, as in a ThingShadow.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// What each child does when it is deleted (the thing leaves the set, or the set is
    /// deleted): `ClearDesired` (default), `Delete` or `Retain`.
    #[serde(default)]
    pub deletion_policy: ShadowDeletionPolicy,

    /// `Overwrite` (default) or `Preserve`, as in a ThingShadow.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,

    /// How often each shadow is re-read, as in a ThingShadow. Default `5m`.
    #[serde(default = "default_template_refresh")]
    #[schemars(regex(pattern = schema::DURATION_PATTERN))]
    pub refresh_interval: String,
}

impl ShadowTemplate {
    /// The ThingShadow spec `thing` gets from this template.
    pub fn spec_for(&self, thing: &str) -> ThingShadowSpec {
        ThingShadowSpec {
            thing_name: thing.to_string(),
            shadow_name: self.shadow_name.clone(),
            desired: self.desired.clone(),
            management_policy: self.management_policy,
            deletion_policy: self.deletion_policy,
            conflict_policy: self.conflict_policy,
            refresh_interval: self.refresh_interval.clone(),
        }
    }
}

fn default_template_refresh() -> String {
    "5m".to_string()
}

/// How a template change is rolled out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes)]
pub struct RolloutSpec {
    /// Cumulative percentages of the things, ascending, the last one 100 (`[5, 25, 100]`).
    /// Empty or absent: all at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "percent_steps")]
    pub steps: Vec<u8>,

    /// A step is done when its devices report the desired values (their ThingShadows are
    /// Converged), or fail. `false`: done as soon as their shadows are written. Default
    /// `true`.
    #[serde(default = "yes")]
    pub wait_for_converged: bool,

    /// How long a device may take to converge after it got the new template before it
    /// counts as failed, as a Go duration. Default `10m`.
    #[serde(default = "default_step_timeout")]
    #[schemars(regex(pattern = schema::DURATION_PATTERN))]
    pub step_timeout: String,

    /// How many failed devices the rollout tolerates: a count (`3`) or a percentage of
    /// the targeted things (`"10%"`). Beyond it the rollout stops (`Aborted`). Default 0.
    #[serde(default = "no_failures")]
    #[schemars(schema_with = "int_or_percent")]
    pub max_failures: IntOrString,

    /// When the failures exceed `maxFailures`: `Pause` (default) leaves the devices as
    /// they are; `Rollback` returns the updated ones to the last complete template.
    #[serde(default)]
    pub on_failure: RolloutFailurePolicy,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            steps: Vec::new(),
            wait_for_converged: true,
            step_timeout: default_step_timeout(),
            max_failures: no_failures(),
            on_failure: RolloutFailurePolicy::default(),
        }
    }
}

fn no_failures() -> IntOrString {
    IntOrString::Int(0)
}

fn yes() -> bool {
    true
}

fn default_step_timeout() -> String {
    "10m".to_string()
}

fn percent_steps(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 100,
        "items": {"type": "integer", "minimum": 1, "maximum": 100},
    })
}

fn int_or_percent(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",
            "message": "must be a count (3) or a percentage from 0% to 100% (\"10%\")",
        }],
    })
}

/// What a rollout does when its failures exceed the budget.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutFailurePolicy {
    /// Stop; the devices keep what they have.
    #[default]
    Pause,
    /// Stop and return the updated devices to the last complete template.
    Rollback,
}

/// Observed state of a `ThingShadowSet`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes)]
pub struct ThingShadowSetStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (the rollout is complete), `Reconciling` (it is progressing) and `Stalled`
    /// (it was aborted, or the spec is invalid), per kstatus conventions.
    #[serde(default)]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,

    /// `Progressing`, `Complete`, `Paused` or `Aborted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// The template revision being rolled out (a hash of `spec.template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,

    /// The last template revision whose rollout completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_revision: Option<String>,

    /// The template of `completeRevision`: what new members get during a rollout, and
    /// what a rollback returns devices to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserved_object")]
    pub complete_template: Option<ShadowTemplate>,

    /// The rollout step (0-based index into the steps in force).
    #[serde(default)]
    pub current_step: u32,

    /// The step for display: `2/3 (25%)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,

    /// When the current step began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_time: Option<String>,

    /// Whether the rollout of `revision` was aborted (until the template changes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aborted: bool,

    /// Things selected.
    #[serde(default)]
    pub targeted: u32,
    /// Things that carry `revision`.
    #[serde(default)]
    pub updated: u32,
    /// Of those, converged.
    #[serde(default)]
    pub converged: u32,
    /// Of those, failed.
    #[serde(default)]
    pub failed: u32,
    /// Things whose shadow another resource manages (never written by this set).
    #[serde(default)]
    pub conflicting: u32,

    /// Failed things with their reasons, in rollout order, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_things: Vec<ThingIssue>,

    /// Conflicting things with their reasons, in rollout order, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicting_things: Vec<ThingIssue>,

    /// When the membership was last read (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_read_time: Option<String>,
}

/// A thing and why it is listed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::kubernetes)]
pub struct ThingIssue {
    /// The thing's name.
    pub thing: String,
    /// Why it is listed: the child's Stalled reason and message, the step timeout it
    /// missed, or what else manages its shadow.
    pub reason: String,
}
