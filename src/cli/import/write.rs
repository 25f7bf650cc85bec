//! What `import` prints: the manifests that declare what was read, as YAML text.
//!
//! Pure: values in, text out, and the same input gives byte-identical output.
//!
//! - The YAML is [`crate::cli::yaml::document`]'s: kubectl (YAML 1.1) and `apply` read it
//!   back as the same JSON.
//! - A retained message may be declared more than one way; [`retained_manifests`] yields
//!   them best first: `json` only when the payload bytes are exactly what the operator
//!   would publish for the value, `text` when they are plain UTF-8, `base64` always.
//! - This module proposes; it does not vouch. The command reads every manifest back with
//!   `apply`'s loader and prints only one that declares exactly what the data plane
//!   holds.
//! - The output is one comment line saying where the manifests came from, one more when
//!   reads failed, then each document after a `---` line.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::read::FoundShadow;
use crate::api::API_VERSION;
use crate::cli::yaml;
use crate::dataplane::RetainedMessageData;
use crate::planner::json::canonical_json;

/// One manifest, rendered.
#[derive(Clone, Debug)]
pub(super) struct Document {
    pub(super) kind: &'static str,
    pub(super) yaml: String,
}

/// The `ThingShadow` manifest that declares `shadow`'s desired state as it is.
pub(super) fn shadow_manifest(shadow: &FoundShadow, name: &str, namespace: &str) -> String {
    let mut spec = Map::new();
    spec.insert("thingName".into(), Value::String(shadow.thing.clone()));
    if let Some(s) = &shadow.shadow {
        spec.insert("shadowName".into(), Value::String(s.clone()));
    }
    if let Some(desired) = &shadow.desired {
        spec.insert("desired".into(), Value::Object(desired.clone()));
    }
    yaml::document(&resource("ThingShadow", name, namespace, spec))
}

/// The `ThingShadowSet` manifest that selects thing group `group` and declares `desired`
/// for shadow `shadow` (`None`: the classic shadow) of every member.
pub(super) fn set_manifest(
    name: &str,
    namespace: &str,
    group: &str,
    recursive: bool,
    shadow: Option<&str>,
    desired: Option<&Map<String, Value>>,
) -> String {
    let mut selector = Map::new();
    selector.insert("name".into(), Value::String(group.to_string()));
    if recursive {
        selector.insert("recursive".into(), Value::Bool(true));
    }
    let mut template = Map::new();
    if let Some(s) = shadow {
        template.insert("shadowName".into(), Value::String(s.to_string()));
    }
    if let Some(desired) = desired {
        template.insert("desired".into(), Value::Object(desired.clone()));
    }
    let mut spec = Map::new();
    spec.insert("selector".into(), json!({ "thingGroup": selector }));
    spec.insert("template".into(), Value::Object(template));
    yaml::document(&resource("ThingShadowSet", name, namespace, spec))
}

/// The `RetainedMessage` manifests that may declare `message`, one per payload source
/// of [`payload_choices`], best first; each is rendered only when asked for.
pub(super) fn retained_manifests<'a>(
    message: &'a RetainedMessageData,
    name: &'a str,
    namespace: &'a str,
) -> impl Iterator<Item = String> + 'a {
    payload_choices(&message.payload)
        .into_iter()
        .map(move |payload| {
            let mut spec = Map::new();
            spec.insert("topic".into(), Value::String(message.topic.clone()));
            spec.insert("payload".into(), payload);
            spec.insert("qos".into(), json!(message.qos));
            if !message.user_properties.is_empty() {
                let properties = message
                    .user_properties
                    .iter()
                    .map(|(key, value)| json!({"key": key, "value": value}))
                    .collect();
                spec.insert("userProperties".into(), Value::Array(properties));
            }
            yaml::document(&resource("RetainedMessage", name, namespace, spec))
        })
}

/// The payload sources to try, best first: `json` when the bytes are exactly what the
/// operator would publish for the parsed value (compact, keys sorted) and survive a trip
/// through the Kubernetes API, `text` when they are UTF-8 without control characters
/// other than tab and line breaks (bytes such as NUL are binary data, clearer in
/// base64), `base64` always.
fn payload_choices(payload: &[u8]) -> Vec<Value> {
    let mut choices = Vec::new();
    if let Ok(text) = std::str::from_utf8(payload) {
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            if canonical_json(&value).as_bytes() == payload && survives_kubernetes(&value) {
                choices.push(json!({ "json": value }));
            }
        }
        if !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            choices.push(json!({ "text": text }));
        }
    }
    choices.push(json!({ "base64": STANDARD.encode(payload) }));
    choices
}

/// Whether the value comes back unchanged from the Kubernetes API server, which keeps
/// numbers as int64 or float64 and writes an integral float64 without a fraction (`1.0`
/// comes back as `1`, which the operator would publish as `1`).
fn survives_kubernetes(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            if n.is_u64() {
                n.as_u64().is_some_and(|u| i64::try_from(u).is_ok())
            } else if n.is_f64() {
                n.as_f64()
                    .is_some_and(|f| f.fract() != 0.0 || f.abs() >= 1e21)
            } else {
                true
            }
        }
        Value::Array(items) => items.iter().all(survives_kubernetes),
        Value::Object(map) => map.values().all(survives_kubernetes),
        _ => true,
    }
}

fn resource(kind: &str, name: &str, namespace: &str, spec: Map<String, Value>) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": Value::Object(spec),
    })
}

/// The first comment line: where the manifests came from. `retained` is the topic
/// prefix when retained messages were imported (empty: all of them).
pub(super) fn header(source: &str, things: &[String], retained: Option<&str>) -> String {
    let mut parts = Vec::new();
    if !things.is_empty() {
        if things.len() <= 10 {
            parts.push(format!("shadows of {}", things.join(", ")));
        } else {
            parts.push(format!("shadows of {} things", things.len()));
        }
    }
    if let Some(prefix) = retained {
        parts.push(if prefix.is_empty() {
            "all retained messages".to_string()
        } else {
            format!(
                "retained messages with topics starting with {}",
                Value::String(prefix.to_string())
            )
        });
    }
    let line = format!(
        "Imported by `shadowsync import` from the {source}: {}.",
        parts.join("; ")
    );
    // One comment line, whatever the path or prefix hold.
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The first comment line of a set's import.
pub(super) fn set_header(
    source: &str,
    group: &str,
    recursive: bool,
    shadow: Option<&str>,
    members: usize,
) -> String {
    let shadow = match shadow {
        Some(name) => format!("shadow {}", Value::String(name.to_string())),
        None => "classic shadow".to_string(),
    };
    let descendants = if recursive {
        " and its descendants"
    } else {
        ""
    };
    comment_text(&format!(
        "Imported by `shadowsync import` from the {source}: the desired state that the {shadow} of \
         every member of thing group {group}{descendants} ({members} thing(s)) holds alike."
    ))
}

/// The notes under a set's header: the members without the shadow (the template, when
/// it `declares` anything, would be written to them), and the leaves left out of the
/// template because the members do not hold them alike (at most `max_paths` listed).
pub(super) fn set_notes(
    without: &[String],
    left_out: &[String],
    declares: bool,
    max_paths: usize,
) -> Vec<String> {
    let mut notes = Vec::new();
    if !without.is_empty() {
        notes.push(if declares {
            format!(
                "{} member(s) without the shadow; apply would write the template to them:",
                without.len()
            )
        } else {
            format!("{} member(s) without the shadow:", without.len())
        });
        notes.extend(without.iter().map(|thing| format!("  {thing}")));
    }
    if !left_out.is_empty() {
        notes.push(format!(
            "{} leaf path(s) left out of the template: their values differ between members, or some members lack them:",
            left_out.len()
        ));
        notes.extend(
            left_out
                .iter()
                .take(max_paths)
                .map(|path| format!("  {path}")),
        );
        if left_out.len() > max_paths {
            notes.push(format!("  ... and {} more", left_out.len() - max_paths));
        }
    }
    notes
}

/// A set's whole standard output: the header and the notes as comment lines, then the
/// document.
pub(super) fn render_set_output(header: &str, notes: &[String], document: &str) -> String {
    let mut out = format!("# {header}\n");
    for note in notes {
        let _ = writeln!(out, "# {}", comment_text(note));
    }
    out.push_str("---\n");
    out.push_str(document);
    out
}

/// Text fit for one comment line: control characters become spaces.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The whole standard output: the header, a warning line when `errors` reads failed,
/// then the documents.
pub(super) fn render_output(header: &str, errors: usize, documents: &[Document]) -> String {
    let mut out = format!("# {header}\n");
    if errors > 0 {
        let _ = writeln!(
            out,
            "# Incomplete: {errors} read(s) failed; see the errors printed with this output."
        );
    }
    for document in documents {
        out.push_str("---\n");
        out.push_str(&document.yaml);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_only_when_the_bytes_come_back_exactly() {
        let first = |payload: &[u8]| payload_choices(payload)[0].clone();
        assert_eq!(
            first(br#"{"a":1,"b":[true,null]}"#),
            json!({"json": {"a": 1, "b": [true, null]}})
        );
        // Keys not sorted, spaces, an integral float, a big integer: text.
        for payload in [
            &br#"{"b":1,"a":2}"#[..],
            br#"{"a": 1}"#,
            br#"{"a":1.0}"#,
            b"18446744073709551615",
        ] {
            assert!(
                first(payload).get("text").is_some(),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        assert_eq!(first(&[0, 159, 146, 150]), json!({"base64": "AJ+Slg=="}));
        assert_eq!(first(&[0, 1, 2]), json!({"base64": "AAEC"}));
        assert_eq!(first(b"a\tb\r\nc"), json!({"text": "a\tb\r\nc"}));
    }

    #[test]
    fn set_output_lists_members_without_the_shadow_and_cuts_long_path_lists() {
        let notes = set_notes(
            &["lamp-3".into(), "lamp-4".into()],
            &["/a".into(), "/b".into(), "/c".into()],
            true,
            2,
        );
        let out = render_set_output("Imported.", &notes, "kind: X\n");
        assert_eq!(
            out,
            "# Imported.\n\
             # 2 member(s) without the shadow; apply would write the template to them:\n\
             #   lamp-3\n\
             #   lamp-4\n\
             # 3 leaf path(s) left out of the template: their values differ between members, or some members lack them:\n\
             #   /a\n\
             #   /b\n\
             #   ... and 1 more\n\
             ---\n\
             kind: X\n"
        );
        let notes = set_notes(&[], &["/line\nbreak".into()], true, 5);
        let out = render_set_output("h", &notes, "");
        assert!(out.contains("#   /line break\n"), "{out}");
        let notes = set_notes(&["lamp-1".into()], &[], false, 5);
        assert_eq!(notes, ["1 member(s) without the shadow:", "  lamp-1"]);
    }
}
