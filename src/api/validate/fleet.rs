//! The rules of a `ThingShadowSet`: its name, its selector, its template (every
//! ThingShadow rule, under `spec.template`) and its rollout.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{finish, is_thing_name, parse_duration, validate_thing_shadow, FieldError};
use crate::api::{RolloutSpec, ThingShadowSetSpec};
use crate::dataplane::ShadowLimits;

/// A set's name is the value of its children's `iot.shadowsync.dev/set` label, and a
/// label value has at most 63 characters.
pub const MAX_SET_NAME: usize = 63;
/// The shortest `resyncInterval`: the registry's quotas are tens of calls per second for a
/// whole account.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest `stepTimeout`.
pub const MIN_STEP_TIMEOUT: Duration = Duration::from_secs(1);

/// A failure budget: a count of devices, or a percentage of the targeted things.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxFailures {
    Count(u32),
    Percent(u8),
}

/// Reads `maxFailures`.
pub fn max_failures(value: &IntOrString) -> Result<MaxFailures, FieldError> {
    const FIELD: &str = "spec.rollout.maxFailures";
    match value {
        IntOrString::Int(n) => u32::try_from(*n)
            .map(MaxFailures::Count)
            .map_err(|_| FieldError::new(FIELD, Some(&n.to_string()), "must not be negative")),
        IntOrString::String(text) => text
            .strip_suffix('%')
            .and_then(|digits| digits.parse::<u8>().ok())
            // As the CRD's pattern: no sign, no leading zero.
            .filter(|p| *p <= 100 && text.len() == p.to_string().len() + 1)
            .map(MaxFailures::Percent)
            .ok_or_else(|| {
                FieldError::new(
                    FIELD,
                    Some(text),
                    "must be a count (3) or a percentage from 0% to 100% (\"10%\")",
                )
            }),
    }
}

/// Checks a `ThingShadowSet`: its name, the selector (exactly one form, valid and distinct
/// thing names, a valid group name), the template (every ThingShadow rule, reported under
/// `spec.template`), the rollout and the resync interval.
pub fn validate_thing_shadow_set(
    name: &str,
    spec: &ThingShadowSetSpec,
    limits: &ShadowLimits,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if name.len() > MAX_SET_NAME {
        errors.push(FieldError::new(
            "metadata.name",
            Some(name),
            format!(
                "must be at most {MAX_SET_NAME} characters: it is the value of the children's \
                 iot.shadowsync.dev/set label"
            ),
        ));
    }

    check_selector(spec, &mut errors);

    // The template is a ThingShadow spec without its thing: check it with a valid
    // placeholder and move every error under spec.template.
    if let Err(template_errors) =
        validate_thing_shadow(&spec.template.spec_for("placeholder"), limits)
    {
        for mut error in template_errors {
            error.field = error.field.replacen("spec.", "spec.template.", 1);
            errors.push(error);
        }
    }

    check_rollout(&spec.rollout, &mut errors);

    match parse_duration(&spec.resync_interval) {
        Ok(interval) if interval < MIN_RESYNC_INTERVAL => errors.push(FieldError::new(
            "spec.resyncInterval",
            Some(&spec.resync_interval),
            "must be at least 10s (the registry's quotas are shared by the whole account)",
        )),
        Ok(_) => {}
        Err(why) => errors.push(FieldError::new(
            "spec.resyncInterval",
            Some(&spec.resync_interval),
            why,
        )),
    }

    finish(errors)
}

fn check_selector(spec: &ThingShadowSetSpec, errors: &mut Vec<FieldError>) {
    let selector = &spec.selector;
    let forms = [
        selector.things.is_some(),
        selector.thing_group.is_some(),
        selector.query.is_some(),
    ];
    if forms.iter().filter(|set| **set).count() != 1 {
        errors.push(FieldError::new(
            "spec.selector",
            None,
            "exactly one of things, thingGroup or query must be set",
        ));
    }
    if let Some(things) = &selector.things {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, thing) in things.iter().enumerate() {
            if !is_thing_name(thing) {
                errors.push(FieldError::new(
                    format!("spec.selector.things[{i}]"),
                    Some(thing),
                    "must match [a-zA-Z0-9:_-]{1,128}",
                ));
            } else if let Some(first) = seen.insert(thing, i) {
                seen.insert(thing, first);
                errors.push(FieldError::new(
                    format!("spec.selector.things[{i}]"),
                    Some(thing),
                    format!("is already listed at things[{first}]; each thing once"),
                ));
            }
        }
    }
    if let Some(group) = &selector.thing_group {
        if !is_thing_name(&group.name) {
            errors.push(FieldError::new(
                "spec.selector.thingGroup.name",
                Some(&group.name),
                "must match [a-zA-Z0-9:_-]{1,128}",
            ));
        }
    }
    if let Some(query) = &selector.query {
        if query.trim().is_empty() {
            errors.push(FieldError::new(
                "spec.selector.query",
                None,
                "must not be empty",
            ));
        }
    }
}

fn check_rollout(rollout: &RolloutSpec, errors: &mut Vec<FieldError>) {
    for (i, step) in rollout.steps.iter().enumerate() {
        if *step == 0 || *step > 100 {
            errors.push(FieldError::new(
                format!("spec.rollout.steps[{i}]"),
                Some(&step.to_string()),
                "must be a percentage from 1 to 100",
            ));
        }
        if i > 0 && *step <= rollout.steps[i - 1] {
            errors.push(FieldError::new(
                format!("spec.rollout.steps[{i}]"),
                Some(&step.to_string()),
                format!(
                    "steps are cumulative and must grow (the step before is {})",
                    rollout.steps[i - 1]
                ),
            ));
        }
    }
    if let Some(last) = rollout.steps.last() {
        if *last != 100 {
            errors.push(FieldError::new(
                "spec.rollout.steps",
                Some(&last.to_string()),
                "the last step must be 100, or the rollout never completes",
            ));
        }
    }
    match parse_duration(&rollout.step_timeout) {
        Ok(timeout) if timeout < MIN_STEP_TIMEOUT => errors.push(FieldError::new(
            "spec.rollout.stepTimeout",
            Some(&rollout.step_timeout),
            "must be at least 1s (a device needs time to report)",
        )),
        Ok(_) => {}
        Err(why) => errors.push(FieldError::new(
            "spec.rollout.stepTimeout",
            Some(&rollout.step_timeout),
            why,
        )),
    }
    if let Err(error) = max_failures(&rollout.max_failures) {
        errors.push(error);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{FleetSelector, ThingGroupSelector};

    fn spec(value: serde_json::Value) -> ThingShadowSetSpec {
        serde_json::from_value(value).expect("a set spec")
    }

    fn fields(name: &str, spec: &ThingShadowSetSpec) -> Vec<String> {
        match validate_thing_shadow_set(name, spec, &ShadowLimits::default()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_canary_set_is_valid_and_takes_the_defaults() {
        let set = spec(json!({
            "selector": {"thingGroup": {"name": "lamps"}},
            "template": {"desired": {"power": "on"}},
            "rollout": {"steps": [5, 25, 100], "maxFailures": "10%", "onFailure": "Rollback"},
        }));
        assert_eq!(fields("lamps", &set), Vec::<String>::new());
        assert!(set.rollout.wait_for_converged);
        assert_eq!(set.rollout.step_timeout, "10m");
        assert_eq!(set.resync_interval, "5m");
        assert_eq!(set.template.refresh_interval, "5m");
        assert_eq!(
            max_failures(&set.rollout.max_failures),
            Ok(MaxFailures::Percent(10))
        );
        let defaults = spec(json!({"selector": {"things": ["a"]}, "template": {}}));
        assert_eq!(
            max_failures(&defaults.rollout.max_failures),
            Ok(MaxFailures::Count(0))
        );
    }

    #[test]
    fn every_broken_rule_is_named_with_its_field() {
        let mut set = spec(json!({
            "selector": {"things": ["a", "bad name", "a"], "query": "thingName:x*"},
            "template": {"shadowName": "AWSManagedGreengrassV2Deployment",
                         "desired": {"a": [null]}, "refreshInterval": "10ms"},
            "rollout": {"steps": [50, 20, 90], "stepTimeout": "soon", "maxFailures": "150%"},
            "resyncInterval": "1s",
        }));
        set.selector.thing_group = None;
        let errors = fields(&"x".repeat(64), &set);
        let expected = [
            "metadata.name",
            "spec.selector: exactly one of things, thingGroup or query",
            "spec.selector.things[1] \"bad name\"",
            "spec.selector.things[2] \"a\": is already listed at things[0]",
            "spec.template.shadowName",
            "spec.template.desired",
            "spec.template.refreshInterval",
            "spec.rollout.steps[1] \"20\": steps are cumulative",
            "spec.rollout.steps \"90\": the last step must be 100",
            "spec.rollout.stepTimeout \"soon\"",
            "spec.rollout.maxFailures \"150%\"",
            "spec.resyncInterval \"1s\": must be at least 10s",
        ];
        for fragment in expected {
            assert!(
                errors.iter().any(|e| e.contains(fragment)),
                "no error contains {fragment:?}: {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }

    #[test]
    fn a_selector_needs_exactly_one_form_and_a_valid_group() {
        let mut set = spec(json!({"selector": {}, "template": {}}));
        assert_eq!(
            fields("s", &set),
            ["spec.selector: exactly one of things, thingGroup or query must be set"]
        );
        set.selector = FleetSelector {
            thing_group: Some(ThingGroupSelector {
                name: "no spaces".into(),
                recursive: true,
            }),
            ..FleetSelector::default()
        };
        assert_eq!(
            fields("s", &set),
            ["spec.selector.thingGroup.name \"no spaces\": must match [a-zA-Z0-9:_-]{1,128}"]
        );
        set.selector = FleetSelector {
            query: Some("  ".into()),
            ..FleetSelector::default()
        };
        assert_eq!(
            fields("s", &set),
            ["spec.selector.query: must not be empty"]
        );
    }

    #[test]
    fn max_failures_reads_counts_and_percentages_and_refuses_the_rest() {
        use IntOrString::{Int, String as Text};
        assert_eq!(max_failures(&Int(3)), Ok(MaxFailures::Count(3)));
        assert_eq!(
            max_failures(&Text("0%".into())),
            Ok(MaxFailures::Percent(0))
        );
        assert_eq!(
            max_failures(&Text("100%".into())),
            Ok(MaxFailures::Percent(100))
        );
        for bad in ["101%", "ten", "5", "-1%", "+5%", "%", "05%", "00%"] {
            let error = max_failures(&Text(bad.into())).unwrap_err();
            assert_eq!(error.field, "spec.rollout.maxFailures", "{bad}");
        }
        assert_eq!(
            max_failures(&Int(-1)).unwrap_err().to_string(),
            "spec.rollout.maxFailures \"-1\": must not be negative"
        );
    }
}
