//! Property tests of manifest parsing and validation followed by planning: generated
//! manifests (valid and broken, as YAML streams) are read the way `shadowsync apply`
//! reads them and checked against `tests/invariants/manifest.rs`: nothing panics, every
//! error says something, and whatever validates is planned into a write or a publish
//! the embedded store accepts, after which nothing more is planned. The `manifest`
//! fuzz target checks the same on arbitrary text.
//!
//! Then the YAML reading itself (`shadowsync::cli::yaml`, which reads as kubectl reads):
//! generated scalars in every form on which YAML 1.1 and YAML 1.2 disagree or that JSON
//! cannot hold are either refused naming the field, or read as YAML 1.1 (the spec's
//! regular expressions) and YAML 1.2 (serde_yaml) both read them; generated documents
//! read the same whatever the style they are written in (block, flow, quoted, with
//! anchors and aliases, merge keys, comments, tabs, CRLF, several documents, unicode);
//! an ambiguous scalar anywhere in them is refused with its path; and what the writer
//! (`import`, `apply -o yaml`) writes reads back as the same JSON. The differential test
//! against kubectl and a real apiserver is `tests/yaml_kubectl.rs`.

mod invariants;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use shadowsync::cli::yaml::{self, number_as_the_apiserver_keeps_it, read_documents};

use invariants::manifest::{check_text, LIMITS};

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["power", "color", "r", "a", "x~y", "p/q", "timestamp"]).prop_map(String::from),
        1 => "\\PC{0,4}",
    ]
}

fn desired() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => (-3i64..300).prop_map(Value::from),
        1 => Just(Value::from(1.5)),
        2 => "[a-z ]{0,40}".prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => prop::collection::vec(prop_oneof![4 => (0i64..9).prop_map(Value::from), 1 => Just(Value::Null)], 0..4)
            .prop_map(Value::Array),
    ];
    let tree = leaf.prop_recursive(7, 48, 4, |inner| {
        prop::collection::vec((key(), inner), 0..4)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    });
    prop_oneof![
        8 => prop::collection::vec((key(), tree), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => Just(json!([1, 2])),
        1 => Just(json!("on")),
    ]
}

fn name(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(valid.to_string()),
        1 => "[a-zA-Z0-9:_$-]{0,3}",
        1 => "[a-z]{120,140}",
        1 => "\\PC{0,6}",
    ]
}

fn thing_shadow() -> impl Strategy<Value = Value> {
    (
        name("kitchen-lamp"),
        prop::option::of(name("config")),
        prop::option::of(desired()),
        prop::sample::select(vec!["5m", "0s", "0", "1h30m", "500ms", "-1s", "5x", ""]),
        prop::sample::select(vec!["Overwrite", "Preserve"]),
    )
        .prop_map(|(thing, shadow, desired, refresh, conflict)| {
            let mut spec = Map::new();
            spec.insert("thingName".into(), json!(thing));
            if let Some(shadow) = shadow {
                spec.insert("shadowName".into(), json!(shadow));
            }
            if let Some(desired) = desired {
                spec.insert("desired".into(), desired);
            }
            spec.insert("refreshInterval".into(), json!(refresh));
            spec.insert("conflictPolicy".into(), json!(conflict));
            json!({
                "apiVersion": "iot.shadowsync.dev/v1alpha1",
                "kind": "ThingShadow",
                "metadata": {"name": "lamp", "namespace": "home"},
                "spec": spec,
            })
        })
}

fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => desired().prop_map(|v| json!({"json": v})),
        2 => "[ -~]{0,70}".prop_map(|t| json!({"text": t})),
        2 => prop::sample::select(vec!["AAEC", "AAEC\n", "!!", "", "aGVsbG8gd29ybGQ="]).prop_map(|b| json!({"base64": b})),
        1 => prop::sample::select(vec!["creds", "Bad_Name", ""]).prop_map(|n| json!({"secretKeyRef": {"name": n, "key": "payload"}})),
        1 => Just(json!({"configMapKeyRef": {"name": "cfg", "key": "a/b"}})),
        1 => Just(json!({"text": "a", "base64": "AAEC"})),
        1 => Just(json!({})),
    ]
}

fn retained_message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            6 => prop::sample::select(vec!["home/lamp/config", "a", "a/b/c/d/e/f/g/h", "a/b/c/d/e/f/g/h/i", "$aws/x", "a/+", "a/#", "a\u{0}b", ""]).prop_map(String::from),
            1 => "\\PC{0,8}",
        ],
        payload(),
        0u8..4,
        prop::option::of(prop::sample::select(vec!["", "text/plain"])),
        prop::option::of(prop::sample::select(vec!["AAEC", "!", ""])),
        prop::option::of(prop::sample::select(vec![0u64, 3600, 604_800, 604_801])),
        prop::collection::vec(("[a-z]{0,2}", "[a-z]{0,2}"), 0..3),
    )
        .prop_map(|(topic, payload, qos, content_type, correlation, expiry, props)| {
            let mut spec = Map::new();
            spec.insert("topic".into(), json!(topic));
            spec.insert("payload".into(), payload);
            spec.insert("qos".into(), json!(qos));
            if let Some(c) = content_type {
                spec.insert("contentType".into(), json!(c));
            }
            if let Some(c) = correlation {
                spec.insert("correlationData".into(), json!(c));
            }
            if let Some(e) = expiry {
                spec.insert("messageExpiry".into(), json!(e));
            }
            let props: Vec<Value> = props.into_iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
            spec.insert("userProperties".into(), Value::Array(props));
            json!({
                "apiVersion": "iot.shadowsync.dev/v1alpha1",
                "kind": "RetainedMessage",
                "metadata": {"name": "cfg"},
                "spec": spec,
            })
        })
}

/// A YAML stream of generated documents, some of them cut or with a byte changed.
fn stream() -> impl Strategy<Value = String> {
    let doc = prop_oneof![thing_shadow(), retained_message()];
    (
        prop::collection::vec(doc, 1..4),
        prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(docs, damage)| {
            let mut text = docs
                .iter()
                .map(yaml::document)
                .collect::<Vec<_>>()
                .join("---\n");
            if let Some((at, byte)) = damage {
                let mut bytes = text.into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = byte;
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn whatever_validates_is_planned_and_accepted(
        limits in prop::sample::select(LIMITS.to_vec()),
        text in stream(),
    ) {
        check_text(&text, &limits);
    }
}

#[test]
fn generated_manifests_are_often_valid_and_often_not() {
    // Guards the strategies: a property over manifests that never validate (or always
    // do) would check little.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut read, mut valid) = (0, 0);
    for _ in 0..300 {
        let text = stream().new_tree(&mut runner).expect("a stream").current();
        let (r, v) = check_text(&text, &LIMITS[0]);
        read += r;
        valid += v;
    }
    assert!(
        valid > read / 10 && valid < read,
        "{valid} of {read} validated"
    );
}

// ---------------------------------------------------------------------------------------
// YAML reading

/// Plain scalar texts across YAML's resolution rules: booleans and nulls in every case
/// form, integers in every base, sign, underscore and leading-zero form, floats with and
/// without dot and exponent, infinities and NaN, base-60 numbers, timestamps, and
/// arbitrary short text (unicode included).
fn plain_scalar() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "y", "yes", "n", "no", "on", "off", "true", "false", "null", "~", ".inf", "+.inf", "-.inf",
        ".nan", "nan", "inf", "<<", "=",
    ])
    .prop_flat_map(|w| {
        prop::collection::vec(any::<bool>(), w.len()).prop_map(move |upper| {
            w.chars()
                .zip(upper)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect::<String>()
        })
    });
    let number = (
        prop::sample::select(vec!["", "", "+", "-"]),
        prop::sample::select(vec!["", "", "", "0", "0x", "0X", "0o", "0O", "0b", "0B"]),
        "[0-9]{1,3}(_?[0-9a-fA-F]{1,3}){0,2}|[0-9]{15,22}",
        prop::sample::select(vec!["", "", "", ".", ".5", ".25", "._5"]),
        prop::sample::select(vec!["", "", "", "e3", "E-2", "e+400", "e", "e-400"]),
    )
        .prop_map(|(sign, prefix, digits, fraction, exponent)| {
            format!("{sign}{prefix}{digits}{fraction}{exponent}")
        });
    let sexagesimal = (
        "[-+]?[0-9]{1,3}",
        prop::collection::vec("[0-9]{1,2}", 1..3),
        "(\\.[0-9]{0,2})?",
    )
        .prop_map(|(first, rest, fraction)| format!("{first}:{}{fraction}", rest.join(":")));
    prop_oneof![
        3 => word,
        4 => number,
        1 => sexagesimal,
        1 => "[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,3})?(Z|[-+][0-9]{2}:[0-9]{2})?)?",
        // (`>` first would start a folded block scalar.)
        2 => "[-+.:_~=<a-zA-Z0-9][-+.:_~=<>a-zA-Z0-9]{0,7}",
        1 => "[a-z\u{e9}\u{65e5}\u{1F600}]{1,4}",
    ]
}

/// A regular expression matching the whole text.
fn is(pattern: &str, text: &str) -> bool {
    regex_lite::Regex::new(&format!("^(?:{pattern})$"))
        .expect("a regular expression")
        .is_match(text)
}

/// What YAML 1.1 reads a plain scalar as, from the type definitions of yaml.org/type
/// (bool, null, int, float, each with its own regular expressions): `None` for a string.
fn yaml_1_1(text: &str) -> Option<Value> {
    if is("y|Y|yes|Yes|YES|true|True|TRUE|on|On|ON", text) {
        return Some(json!(true));
    }
    if is("n|N|no|No|NO|false|False|FALSE|off|Off|OFF", text) {
        return Some(json!(false));
    }
    if is("~|null|Null|NULL|", text) {
        return Some(Value::Null);
    }
    let signed = |body: &str| -> (f64, String) {
        let (sign, rest) = match body.as_bytes().first() {
            Some(b'-') => (-1.0, &body[1..]),
            Some(b'+') => (1.0, &body[1..]),
            _ => (1.0, body),
        };
        (sign, rest.replace('_', ""))
    };
    let int = |digits: &str, radix: u32, sign: f64| -> Option<Value> {
        let n = i128::from_str_radix(digits, radix).ok()?;
        Some(number(
            sign * n as f64,
            i64::try_from(n).ok().map(|n| (sign as i64) * n),
        ))
    };
    if is("[-+]?0b[0-1_]+", text) {
        let (sign, rest) = signed(text);
        return int(&rest[2..], 2, sign);
    }
    if is("[-+]?0[0-7_]+", text) {
        let (sign, rest) = signed(text);
        return int(&rest, 8, sign);
    }
    if is("[-+]?(0|[1-9][0-9_]*)", text) {
        let (sign, rest) = signed(text);
        return int(&rest, 10, sign);
    }
    if is("[-+]?0x[0-9a-fA-F_]+", text) {
        let (sign, rest) = signed(text);
        return int(&rest[2..], 16, sign);
    }
    if is("[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+", text)
        || is("[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*", text)
    {
        let (sign, rest) = signed(text);
        let (whole, fraction) = rest.split_once('.').unwrap_or((&rest, ""));
        let mut v = 0.0;
        for part in whole.split(':') {
            v = v * 60.0 + part.parse::<f64>().ok()?;
        }
        v += format!("0.{fraction}0").parse::<f64>().ok()?;
        return Some(number(sign * v, None));
    }
    if is("[-+]?([0-9][0-9_]*)?\\.[0-9.]*([eE][-+][0-9]+)?", text) {
        let (sign, rest) = signed(text);
        return rest.parse::<f64>().ok().map(|f| number(sign * f, None));
    }
    if is("[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN)", text) {
        return Some(json!("not JSON"));
    }
    None
}

/// A number as the apiserver keeps it, from a float or an exact integer.
fn number(f: f64, exact: Option<i64>) -> Value {
    match exact {
        Some(i) => json!(i),
        None => number_as_the_apiserver_keeps_it(f),
    }
}

/// `v: TEXT` through the reader.
fn read_value(text: &str) -> Result<Value, String> {
    let mut documents = read_documents(&format!("v: {text}\n"));
    let document = documents.remove(0);
    document
        .content
        .map(|v| v.map_or(Value::Null, |v| v["v"].clone()))
}

/// Numbers compared as the apiserver keeps them (serde_yaml keeps `1.0` a float).
fn normalized(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => number_as_the_apiserver_keeps_it(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.into_iter().map(normalized).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalized(v))).collect())
        }
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// A plain scalar is refused, naming the field, or read as YAML 1.1 and YAML 1.2 both
    /// read it.
    #[test]
    fn plain_scalars_mean_one_thing_or_are_refused(text in plain_scalar()) {
        match read_value(&text) {
            Err(message) => prop_assert!(
                message.starts_with("v: ") || message.starts_with("not valid YAML: line 1"),
                "{text:?}: {message}"
            ),
            Ok(value) => {
                // YAML 1.1: where the spec reads something other than a string, it is that.
                match yaml_1_1(&text) {
                    Some(v11) => prop_assert_eq!(&value, &v11, "YAML 1.1 reads {:?} otherwise", text),
                    None => prop_assert_eq!(&value, &json!(text), "YAML 1.1 reads {:?} as a string", text),
                }
                // kubectl (go-yaml v2): its resolution, independently of the rules above.
                match shadowsync::cli::yaml::kubectl_reading(&text) {
                    shadowsync::cli::yaml::KubectlReading::Str => prop_assert!(value.is_string()),
                    shadowsync::cli::yaml::KubectlReading::Null => prop_assert!(value.is_null()),
                    shadowsync::cli::yaml::KubectlReading::Bool(b) => prop_assert_eq!(&value, &json!(b)),
                    _ => prop_assert!(value.is_number()),
                }
                // YAML 1.2, as serde_yaml reads it.
                let v12: Value = serde_yaml::from_str::<serde_yaml::Value>(&format!("v: {text}\n"))
                    .ok()
                    .and_then(|y| serde_json::to_value(y).ok())
                    .map(|v| normalized(v["v"].clone()))
                    .unwrap_or_else(|| json!("unreadable"));
                prop_assert_eq!(&value, &v12, "YAML 1.2 reads {:?} otherwise", text);
                // Quoted, the same text is a string.
                prop_assert_eq!(read_value(&format!("'{}'", text.replace('\'', "''"))), Ok(json!(text)));
            }
        }
    }

    /// Whatever the writer writes reads back as the same string, for any string.
    #[test]
    fn written_strings_read_back(text in prop_oneof![plain_scalar(), "\\PC{0,12}", "[ -~\t\n\r\u{85}\u{2028}\u{feff}]{0,12}"]) {
        let written = yaml::string(&text);
        prop_assert_eq!(read_value(&written), Ok(json!(text)), "written as {}", written);
    }

    /// Integers in the int64 range read as themselves; beyond it, refused; floats as the
    /// apiserver keeps them.
    #[test]
    fn numbers_read_as_the_apiserver_keeps_them(i in any::<i64>(), u in (i64::MAX as u64 + 1)..=u64::MAX, f in any::<f64>()) {
        prop_assert_eq!(read_value(&i.to_string()), Ok(json!(i)));
        let big = read_value(&u.to_string()).unwrap_err();
        prop_assert!(big.contains("beyond the 64-bit integer range"), "{}", big);
        if f.is_finite() {
            let written = yaml::scalar_text(&json!(f));
            prop_assert_eq!(read_value(&written), Ok(number_as_the_apiserver_keeps_it(f)), "{}", written);
        }
    }
}

/// Documents to render: keys and leaves from the same tricky texts, numbers, booleans,
/// nulls, nested lists and mappings.
fn tree() -> impl Strategy<Value = Value> {
    let text = prop_oneof![plain_scalar(), "\\PC{0,8}"];
    let leaf = prop_oneof![
        3 => text.clone().prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(number_as_the_apiserver_keeps_it),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
    ];
    leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text.clone(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A value in flow style: JSON with every string double-quoted the YAML way.
fn flow(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", quoted(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::String(s) => quoted(s),
        other => yaml::scalar_text(other),
    }
}

/// Always double-quoted, whatever the string.
fn quoted(s: &str) -> String {
    let written = yaml::string(&format!("\u{1}{s}"));
    format!("\"{}", &written[7..])
}

/// The same document in other styles: block with comments after every line, CRLF line
/// ends, tabs after colons, flow, the value behind an anchor and used through an alias,
/// and merged into a mapping with `<<`.
fn styles(value: &Value) -> Vec<(String, String)> {
    let block = yaml::document(&json!({"v": value}));
    let commented: String = block
        .lines()
        .map(|l| {
            if l.ends_with(':') || l.ends_with('"') || l.contains(": ") {
                format!("{l} # on: 010\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let mut out = vec![
        ("block".into(), block.clone()),
        ("comments".into(), format!("# yes: no\n{commented}# ~\n")),
        ("crlf".into(), block.replace('\n', "\r\n")),
        ("flow".into(), format!("v: {}\n", flow(value))),
        (
            "json".into(),
            format!("{}\n", serde_json::to_string(&json!({"v": value})).unwrap()),
        ),
        ("anchor".into(), format!("a: &x {}\nv: *x\n", flow(value))),
        (
            "second document".into(),
            format!("# a\n---\nv: 1\n---\n{block}"),
        ),
    ];
    if !block.contains('"') {
        out.push(("tabs".into(), block.replace(": ", ":\t")));
    }
    if let Value::Object(map) = value {
        if !map.contains_key("<<") {
            out.push((
                "merge".into(),
                format!("b: &b {}\nv:\n  <<: *b\n", flow(value)),
            ));
            out.push((
                "inline merge".into(),
                format!("v:\n  <<: {}\n", flow(value)),
            ));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A document reads as the same JSON in every style, or is refused in every style.
    #[test]
    fn every_style_reads_the_same(value in tree()) {
        let expected = Ok(Some(json!({"v": value})));
        for (style, text) in styles(&value) {
            let documents = read_documents(&text);
            let last = documents.last().expect("a document");
            let got = match &last.content {
                Ok(Some(doc)) => Ok(Some(json!({"v": doc["v"].clone()}))),
                other => other.clone(),
            };
            prop_assert_eq!(&got, &expected, "{}:\n{}", style, text);
        }
    }

    /// An ambiguous plain scalar anywhere in a document refuses the document, naming
    /// its path.
    #[test]
    fn an_ambiguous_scalar_is_refused_with_its_path(
        value in tree(),
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec!["on", "No", "y", "010", "1_000", "0b1", ".nan", "-.inf", "1:20", "18446744073709551616", "0X1F"]),
    ) {
        // The paths of every leaf, and the text with the leaf at one of them plain.
        fn leaves(value: &Value, path: String, out: &mut Vec<String>) {
            match value {
                Value::Array(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        leaves(item, format!("{path}[{i}]"), out);
                    }
                }
                Value::Object(map) if !map.is_empty() => {
                    for (k, v) in map {
                        leaves(v, format!("{path}.{k}"), out);
                    }
                }
                _ => out.push(path),
            }
        }
        let marker = "\u{1}MARK\u{1}";
        let mut paths = Vec::new();
        leaves(&value, "v".into(), &mut paths);
        let target = at.index(paths.len());
        // Replace that leaf with the marker string, render, then put the bad scalar in
        // plain where the marker's quoted form is.
        fn replace(value: &Value, path: &str, here: String, marker: &str) -> Value {
            if here == path {
                return json!(marker);
            }
            match value {
                Value::Array(items) => Value::Array(
                    items.iter().enumerate().map(|(i, v)| replace(v, path, format!("{here}[{i}]"), marker)).collect(),
                ),
                Value::Object(map) => Value::Object(
                    map.iter().map(|(k, v)| (k.clone(), replace(v, path, format!("{here}.{k}"), marker))).collect(),
                ),
                other => other.clone(),
            }
        }
        let marked = replace(&value, &paths[target], "v".into(), marker);
        let text = yaml::document(&json!({"v": marked})).replace(&yaml::string(marker), bad);
        let documents = read_documents(&text);
        let message = documents[0].content.clone().expect_err("refused");
        prop_assert!(
            message.starts_with(&format!("{}: ", paths[target])),
            "{} at {}: {}\n{}", bad, paths[target], message, text
        );
    }
}
