use serde_json::json;

use super::*;

/// The first document of `text`.
fn read(text: &str) -> Result<Value, String> {
    let mut documents = read_documents(text);
    assert!(!documents.is_empty(), "no document in {text:?}");
    documents
        .remove(0)
        .content
        .map(|v| v.unwrap_or(Value::Null))
}

/// `v: <scalar>` read: the value, or the error.
fn value(scalar: &str) -> Result<Value, String> {
    read(&format!("v: {scalar}\n")).map(|doc| doc["v"].clone())
}

fn refused(scalar: &str) -> String {
    match value(scalar) {
        Ok(v) => panic!("{scalar:?} was read as {v}"),
        Err(message) => message,
    }
}

#[test]
fn yaml_1_1_booleans_are_refused_with_what_kubectl_reads() {
    for (text, b) in [
        ("y", true),
        ("Y", true),
        ("yes", true),
        ("Yes", true),
        ("YES", true),
        ("on", true),
        ("On", true),
        ("ON", true),
        ("n", false),
        ("N", false),
        ("no", false),
        ("No", false),
        ("NO", false),
        ("off", false),
        ("Off", false),
        ("OFF", false),
    ] {
        assert_eq!(
            refused(text),
            format!(
                "v: unquoted {text} is the boolean {b} for kubectl and the operator; quote it (\"{text}\") or write {b}"
            )
        );
        assert_eq!(value(&format!("\"{text}\"")), Ok(json!(text)));
        assert_eq!(value(&format!("'{text}'")), Ok(json!(text)));
    }
    for (text, b) in [
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ] {
        assert_eq!(value(text), Ok(json!(b)));
    }
    // Other case forms are strings for every reader.
    for text in ["yES", "oN", "tRUE", "nO", "ofF", "yess"] {
        assert_eq!(value(text), Ok(json!(text)));
    }
}

#[test]
fn nulls_are_the_same_for_every_reader() {
    for text in ["~", "null", "Null", "NULL", ""] {
        assert_eq!(value(text), Ok(Value::Null), "{text:?}");
    }
    assert_eq!(value("nULL"), Ok(json!("nULL")));
    assert_eq!(value("\"null\""), Ok(json!("null")));
    assert_eq!(value("'~'"), Ok(json!("~")));
}

#[test]
fn integers_read_alike_are_accepted() {
    for (text, n) in [
        ("0", json!(0)),
        ("-0", json!(0)),
        ("+12", json!(12)),
        ("-7", json!(-7)),
        ("0x1F", json!(31)),
        ("0x1f", json!(31)),
        ("9223372036854775807", json!(i64::MAX)),
        ("-9223372036854775808", json!(i64::MIN)),
    ] {
        assert_eq!(value(text), Ok(n), "{text}");
    }
}

#[test]
fn integers_kubectl_reads_otherwise_are_refused() {
    assert_eq!(
        refused("010"),
        "v: unquoted 010 has a leading zero: it is the octal number 8 for kubectl and the operator (YAML 1.2 reads 10); quote it (\"010\") or write 8"
    );
    assert!(refused("08").contains("is the number 8 for kubectl"));
    assert!(refused("-010").contains("octal number -8"));
    assert!(refused("0o17").contains("the text \"0o17\" for YAML 1.1"));
    assert!(refused("00").contains("leading zero"));
    for (text, n) in [
        ("1_000", "1000"),
        ("1__0", "10"),
        ("1_", "1"),
        ("0b11", "3"),
        ("0B11", "3"),
        ("-0b11", "-3"),
        ("0X1F", "31"),
        ("0O17", "15"),
        ("-0x1F", "-31"),
        ("+0o17", "15"),
        ("1_0.5", "10.5"),
    ] {
        assert_eq!(
            refused(text),
            format!(
                "v: unquoted {text} is the number {n} for kubectl and the operator; quote it (\"{text}\") or write {n}"
            )
        );
    }
    // go-yaml's quirk: the base-2 digits after `0b` may carry a sign.
    assert!(refused("0b-101").contains("the number -5"));
}

#[test]
fn integers_beyond_64_bits_are_refused() {
    assert_eq!(
        refused("18446744073709551615"),
        "v: unquoted 18446744073709551615 is beyond the 64-bit integer range: kubectl and the apiserver keep it as the float 18446744073709552000, losing digits; quote it (\"18446744073709551615\") or write it as a float"
    );
    assert!(refused("9223372036854775808").contains("beyond the 64-bit integer range"));
    assert!(refused("-9223372036854775809").contains("beyond the 64-bit integer range"));
    assert!(refused("123456789012345678901234567890").contains("beyond the 64-bit integer range"));
    assert!(refused("0xFFFFFFFFFFFFFFFFFF").contains("kubectl reads it as the text"));
    // Written as a float it is a float for everyone.
    assert_eq!(
        value("1.8446744073709552e+19"),
        Ok(json!(1.8446744073709552e19))
    );
    assert_eq!(value("1.5e+19"), Ok(json!(15_000_000_000_000_000_000u64)));
}

#[test]
fn floats_end_as_the_apiserver_keeps_them() {
    for (text, n) in [
        ("1.5", json!(1.5)),
        (".5", json!(0.5)),
        ("-.5", json!(-0.5)),
        ("+.5", json!(0.5)),
        ("01.5", json!(1.5)),
        ("1.0", json!(1)),
        ("1.", json!(1)),
        ("1.0e+3", json!(1000)),
        ("1.E+3", json!(1000)),
        ("2.5e-3", json!(0.0025)),
        ("-0.0", json!(0)),
        ("1.0e+19", json!(10_000_000_000_000_000_000u64)),
        ("1.0e+21", json!(1e21)),
        ("1.0e-400", json!(0)),
        ("0.1", json!(0.1)),
    ] {
        assert_eq!(value(text), Ok(n), "{text}");
    }
    // YAML 1.1 reads these as text.
    assert!(refused("1e3")
        .ends_with("write 1000.0 (a dot, and a sign in the exponent), or quote it (\"1e3\")"));
    assert!(refused("1.5e19").contains("write 1.5e+19 (a dot"));
    for (text, n) in [
        ("1e3", "1000"),
        ("1.5e3", "1500"),
        ("1E-2", "0.01"),
        ("0o17", "15"),
    ] {
        assert!(
            refused(text).starts_with(&format!(
                "v: unquoted {text} is the number {n} for kubectl and YAML 1.2 but the text \"{text}\" for YAML 1.1"
            )),
            "{}",
            refused(text)
        );
    }
    // 2^60 comes back with the shortest digits Go writes for it.
    assert_eq!(
        number_as_the_apiserver_keeps_it(2f64.powi(60)),
        json!(1_152_921_504_606_847_000i64)
    );
}

#[test]
fn what_json_cannot_carry_is_refused() {
    for (text, shown) in [
        (".nan", "NaN"),
        (".NaN", "NaN"),
        (".NAN", "NaN"),
        (".inf", "+Inf"),
        ("+.Inf", "+Inf"),
        ("-.INF", "-Inf"),
    ] {
        assert_eq!(
            refused(text),
            format!("v: unquoted {text} is the float {shown} for kubectl, which JSON cannot carry: kubectl and the apiserver refuse it; quote it (\"{text}\") for the text")
        );
    }
    assert_eq!(
        refused("1e400"),
        "v: unquoted 1e400 is beyond the range of a 64-bit float: kubectl reads it as the text \"1e400\"; quote it (\"1e400\")"
    );
    // Not special for anyone.
    for text in [".nAn", "+.nan", "nan", "inf", "Infinity", "NaN"] {
        assert_eq!(value(text), Ok(json!(text)));
    }
}

#[test]
fn strings_every_reader_reads_as_strings() {
    for text in [
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "=",
        "<<",
        "-x",
        "+",
        ".",
        "1.2.3",
        "1e",
        "0x",
        "0b",
        "0o8",
        "_1",
        "a b c",
        "é",
        "日本語",
        "😀",
        "http://x/y?z=1",
    ] {
        assert_eq!(value(text), Ok(json!(text)), "{text}");
    }
}

#[test]
fn base_60_numbers_are_refused() {
    assert_eq!(
        refused("1:20"),
        "v: unquoted 1:20 is the base-60 number 80 under YAML 1.1 rules (kubectl reads the text \"1:20\", tools that follow YAML 1.1 read the number); quote it (\"1:20\")"
    );
    assert!(refused("190:20:30").contains("base-60 number 685230"));
    assert!(refused("-1:30").contains("base-60 number -90"));
    assert!(refused("1:20.5").contains("base-60 number 80.5"));
    assert!(refused("0:30.0").contains("base-60 number 30"));
    // Not base 60 (a minute field of 60 or more, a leading zero in an integer, three
    // digits after a colon): strings for everyone.
    for text in ["1:60", "01:20", "1:200", "1:", ":20", "1::2", "a:1"] {
        assert_eq!(value(&format!("\"{text}\"")), Ok(json!(text)));
        if !text.ends_with(':') && !text.starts_with(':') && !text.contains("::") {
            assert_eq!(value(text), Ok(json!(text)), "{text}");
        }
    }
    assert_eq!(value("\"1:20\""), Ok(json!("1:20")));
}

#[test]
fn quoted_and_block_scalars_are_strings() {
    assert_eq!(value("\"010\""), Ok(json!("010")));
    assert_eq!(value("'1_000'"), Ok(json!("1_000")));
    assert_eq!(
        value("\"a\\tb\\u00e9\\U0001F600\""),
        Ok(json!("a\tb\u{e9}\u{1F600}"))
    );
    assert_eq!(value("'it''s'"), Ok(json!("it's")));
    assert_eq!(read("v: |\n  on\n  off\n"), Ok(json!({"v": "on\noff\n"})));
    assert_eq!(read("v: >\n  on\n  off\n"), Ok(json!({"v": "on off\n"})));
    assert_eq!(read("v: |-\n  010\n"), Ok(json!({"v": "010"})));
    // kubectl's reader ends every line with a line break, the last one too.
    assert_eq!(read("v: |+\n  x"), Ok(json!({"v": "x\n"})));
    // A plain scalar over several lines is folded: a string for everyone.
    assert_eq!(read("v: on\n  off\n"), Ok(json!({"v": "on off"})));
}

#[test]
fn tags_other_than_str_are_refused() {
    assert_eq!(value("!!str 010"), Ok(json!("010")));
    assert_eq!(value("!!str on"), Ok(json!("on")));
    assert_eq!(value("!!str"), Ok(json!("")));
    for (text, tag) in [
        ("!!binary aGk=", "!!binary"),
        ("!!int \"10\"", "!!int"),
        ("!!float 1", "!!float"),
        ("!!bool yes", "!!bool"),
        ("!custom x", "!custom"),
        ("! x", "!"),
        ("!!timestamp 2001-12-14", "!!timestamp"),
    ] {
        assert!(
            refused(text).starts_with(&format!("v: the tag {tag} is not supported")),
            "{text}: {}",
            refused(text)
        );
    }
    assert!(refused("!!map {a: 1}").starts_with("v: the tag !!map is not supported"));
    assert!(refused("!!seq [1]").starts_with("v: the tag !!seq is not supported"));
    assert!(refused("!!set {a}").starts_with("v: the tag !!set is not supported"));
}

#[test]
fn keys_must_be_strings_for_every_reader() {
    assert_eq!(read("\"on\": 1\n'1': 2\n"), Ok(json!({"on": 1, "1": 2})));
    assert_eq!(
        read("a:\n  1: x\n").unwrap_err(),
        "a: the key 1 is the number 1 for kubectl, not a string (kubectl turns it into the key \"1\"); quote it (\"1\")"
    );
    assert_eq!(
        read("a:\n  true: x\n").unwrap_err(),
        "a: the key true is the boolean true for kubectl, not a string (kubectl turns it into the key \"true\"); quote it (\"true\")"
    );
    assert!(read("a:\n  1.5: x\n")
        .unwrap_err()
        .starts_with("a: the key 1.5 is the number 1.5"));
    assert!(read("a:\n  ~: x\n")
        .unwrap_err()
        .contains("null for kubectl, not a string (kubectl refuses it)"));
    assert!(read("a:\n  on: x\n")
        .unwrap_err()
        .starts_with("a: key on: unquoted on is the boolean true"));
    assert!(read("a:\n  010: x\n")
        .unwrap_err()
        .starts_with("a: key 010: unquoted 010 has a leading zero"));
    assert!(read("a:\n  [1, 2]: x\n")
        .unwrap_err()
        .starts_with("a: a mapping or a list used as a key"));
    assert!(read("a:\n  ? {b: 1}\n  : x\n")
        .unwrap_err()
        .starts_with("a: a mapping or a list used as a key"));
    // Strings for everyone, even when they look like dates.
    assert_eq!(read("2001-01-01: b\n"), Ok(json!({"2001-01-01": "b"})));
}

#[test]
fn a_key_given_twice_is_refused() {
    assert_eq!(
        read("spec:\n  desired:\n    a: 1\n    a: 2\n").unwrap_err(),
        "spec.desired.a: the key appears twice in one mapping: kubectl keeps the last value without a word; remove one"
    );
    assert!(read("a: 1\n\"a\": 2\n").is_err());
}

#[test]
fn merge_keys_merge_as_kubectl_merges_them() {
    let base = "base: &b {p: 1, q: 2}\nother: &o {q: 3, r: 4}\n";
    assert_eq!(
        read(&format!("{base}v:\n  <<: *b\n  w: 0\n")).unwrap()["v"],
        json!({"p": 1, "q": 2, "w": 0})
    );
    // Written after the merge, a key overrides the merged value, for everyone.
    assert_eq!(
        read(&format!("{base}v:\n  <<: *b\n  q: 9\n")).unwrap()["v"],
        json!({"p": 1, "q": 9})
    );
    // A list of mappings: the first ones take precedence.
    assert_eq!(
        read(&format!("{base}v:\n  <<: [*b, *o]\n")).unwrap()["v"],
        json!({"p": 1, "q": 2, "r": 4})
    );
    assert_eq!(
        read(&format!("{base}v:\n  <<: [*o, *b]\n")).unwrap()["v"],
        json!({"p": 1, "q": 3, "r": 4})
    );
    assert_eq!(
        read("v:\n  <<: {a: 1}\n  b: 2\n").unwrap()["v"],
        json!({"a": 1, "b": 2})
    );
    // Written before the merge: go-yaml keeps the merged value, the merge rule the other.
    assert_eq!(
        read(&format!("{base}v:\n  q: 9\n  <<: *b\n")).unwrap_err(),
        "v.q: set here and again by the merge key << that follows it: kubectl keeps the merged value, other YAML readers the one written here; put << first in the mapping"
    );
    assert!(read("v:\n  <<: {a: 1}\n  <<: {b: 1}\n")
        .unwrap_err()
        .starts_with("v.<<: the merge key << appears twice"));
    for bad in ["1", "[1, 2]", "[{a: 1}, 2]", "z"] {
        assert!(
            read(&format!("v:\n  <<: {bad}\n"))
                .unwrap_err()
                .starts_with("v.<<: a merge key takes a mapping or a list of mappings"),
            "{bad}"
        );
    }
    assert!(read("s: &s [ {a: 1} ]\nv:\n  <<: *s\n")
        .unwrap_err()
        .contains("a merge key takes a mapping"));
    // Quoted, it is an ordinary key.
    assert_eq!(
        read("v:\n  \"<<\": {a: 1}\n").unwrap()["v"],
        json!({"<<": {"a": 1}})
    );
    // Values inside merged mappings follow the same rules.
    assert!(read("v:\n  <<: {a: on}\n")
        .unwrap_err()
        .starts_with("v.<<.a: unquoted on is the boolean true"));
}

#[test]
fn anchors_and_aliases_copy_values() {
    assert_eq!(
        read("a: &x {b: [1, 2]}\nc: *x\nd: &y 5\ne: *y\n"),
        Ok(json!({"a": {"b": [1, 2]}, "c": {"b": [1, 2]}, "d": 5, "e": 5}))
    );
    // A later anchor of the same name replaces the earlier one.
    assert_eq!(
        read("a: &x 1\nb: *x\nc: &x 2\nd: *x\n"),
        Ok(json!({"a": 1, "b": 1, "c": 2, "d": 2}))
    );
    // An alias as a key.
    assert_eq!(
        read("k: &k name\n*k : v\n"),
        Ok(json!({"k": "name", "name": "v"}))
    );
    assert_eq!(
        read("a: *nope\n").unwrap_err(),
        "line 1: the alias *nope names no anchor defined before it in this document"
    );
    assert!(read("a: &x [1, *x]\n")
        .unwrap_err()
        .contains("inside the node its anchor names"));
    // Anchors do not cross documents.
    let documents = read_documents("a: &x 1\n---\nb: *x\n");
    assert!(documents[1]
        .content
        .as_ref()
        .unwrap_err()
        .contains("names no anchor"));
    // An aliased value is checked like the original.
    assert!(read("a: &x on\n").is_err());
}

#[test]
fn alias_bombs_are_refused_as_kubectl_refuses_them() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..7 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    assert!(read(&text).unwrap_err().contains("excessive aliasing"));
    // A few aliases are fine.
    assert!(read("a: &a [1, 2]\nb: [*a, *a, *a]\n").is_ok());
}

#[test]
fn documents_are_split_as_kubectl_splits_them() {
    let documents = read_documents(
        "# a header\n---\na: 1\n--- # a comment\n\n---\n# only a comment\n---\nb: 2\n...\n---\n~\n---\nc: 3\r\nd: 4\r\n",
    );
    let contents: Vec<_> = documents
        .iter()
        .map(|d| (d.index, d.content.clone()))
        .collect();
    assert_eq!(
        contents,
        [
            (1, Ok(Some(json!({"a": 1})))),
            (2, Ok(Some(json!({"b": 2})))),
            (3, Ok(None)),
            (4, Ok(Some(json!({"c": 3, "d": 4})))),
        ]
    );
    for bad in ["a: 1\n--- {b: 2}\n", "a: 1\n---b\n", "a: 1\n----\n"] {
        let documents = read_documents(bad);
        let last = documents.last().unwrap();
        assert!(
            last.content
                .as_ref()
                .unwrap_err()
                .contains("kubectl allows only a comment after the document separator"),
            "{bad:?}"
        );
    }
    // After `...` without `---`, kubectl would read only the first document.
    assert!(read("a: 1\n...\nb: 2\n").is_err());
    assert_eq!(read_documents("a: 1\n...\n---\nb: 2\n").len(), 2);
    // A syntax error names its line in the file and does not stop the next document.
    let documents = read_documents("a: 1\n---\nb: [1\n---\nc: 3\n");
    assert!(documents[1]
        .content
        .as_ref()
        .unwrap_err()
        .starts_with("not valid YAML: line 4"));
    assert_eq!(documents[2].content, Ok(Some(json!({"c": 3}))));
}

#[test]
fn comments_tabs_and_unicode() {
    assert_eq!(
        read("a: 1 # on\n# b: on\nc: \"#x\" #y\n"),
        Ok(json!({"a": 1, "c": "#x"}))
    );
    assert_eq!(read("a:\t1\nb: x\ty\n"), Ok(json!({"a": 1, "b": "x\ty"})));
    assert!(read("a:\n\tb: 1\n")
        .unwrap_err()
        .starts_with("not valid YAML"));
    assert_eq!(
        read("\u{feff}é: \"日本\"\nz: 😀\n"),
        Ok(json!({"é": "日本", "z": "😀"}))
    );
    // libyaml, like go-yaml, counts LS (U+2028) as a line break inside a quoted scalar.
    assert_eq!(
        read("a: \"x \u{2028} y\"\n"),
        Ok(json!({"a": "x\u{2028}y"}))
    );
    assert!(read("a: \"\u{7}\"\n")
        .unwrap_err()
        .starts_with("not valid YAML"));
}

#[test]
fn question_marks_in_flow_plain_scalars_are_refused() {
    assert!(read("a: [x?y]\n")
        .unwrap_err()
        .starts_with("a[0]: unquoted x?y inside [ ] or { }: kubectl ends a plain value at ?"));
    assert!(read("a: {b: what?}\n").is_err());
    assert_eq!(read("a: [\"x?y\"]\n"), Ok(json!({"a": ["x?y"]})));
    assert_eq!(read("a: what?\n"), Ok(json!({"a": "what?"})));
}

#[test]
fn json_streams_are_read_as_kubectl_reads_them() {
    let documents = read_documents(
        "{\"a\": 1.0, \"b\": \"on\", \"c\": [010]}\n{\"d\": 1e3}\n"
            .replace("010", "10")
            .as_str(),
    );
    assert_eq!(documents.len(), 2);
    assert_eq!(
        documents[0].content,
        Ok(Some(json!({"a": 1, "b": "on", "c": [10]})))
    );
    assert_eq!(documents[1].content, Ok(Some(json!({"d": 1000}))));
    // JSON numbers are JSON's: `1e3` is a number there.
    assert_eq!(
        read("{\"a\": {\"b\": 1, \"b\": 2}}").unwrap_err(),
        "a.b: duplicate field: the apiserver refuses it at line 1 column 22"
    );
    assert!(read("{\"a\": [18446744073709551615]}")
        .unwrap_err()
        .contains("a[0]: 18446744073709551615 is beyond the 64-bit integer range"));
    // Not JSON: YAML in flow style, read as YAML.
    assert_eq!(read("{a: on}").unwrap_err(), "a: unquoted on is the boolean true for kubectl and the operator; quote it (\"on\") or write true");
    assert_eq!(
        read("{\"a\": 1}\n---\n{b: 2}\n").ok(),
        Some(json!({"a": 1}))
    );
}

#[test]
fn the_writer_quotes_what_some_reader_would_misread() {
    for s in [
        "on",
        "Off",
        "yes",
        "N",
        "null",
        "~",
        "010",
        "1_000",
        "12:30",
        "2001-01-01",
        "1e3",
        "",
        " x",
        "x ",
        "a: b",
        "- x",
        "#c",
        "<<",
        "=",
        ".inf",
        "@x",
        "`x",
        "'x'",
        "0b1",
        "0x1F",
        "True",
        "-",
        "?x",
    ] {
        assert!(string(s).starts_with('"'), "{s:?} -> {}", string(s));
    }
    for s in ["power", "home/lamp/config", "kitchen-lamp", "a_b.c"] {
        assert_eq!(string(s), s);
    }
    assert_eq!(
        string("a\"b\\c\nd\te\u{0}\u{7f}\u{85}\u{feff}\u{2028}\u{2029}é😀"),
        "\"a\\\"b\\\\c\\nd\\te\\u0000\\u007F\\u0085\\uFEFF\\u2028\\u2029é😀\""
    );
}

#[test]
fn what_the_writer_writes_reads_back_the_same() {
    let long_key = "k".repeat(1500);
    let doc = json!({
        "a": {"on": "off", "nested": {"deep": [1, [2, [3, {}]], {"x": [], "y": {}}]}},
        "list": [{"k": "v", "n": null}, "yes", 1.5, true, [], {}, "010", "1:20", "<<"],
        "empty": "",
        "text": "line 1\nline 2\n",
        "odd": "x \u{2028} y \u{85} z\u{feff}",
        "numbers": [0, -1, i64::MAX, i64::MIN, 0.1, 1e300, -2.5e-7, 1e21],
        long_key: {"v": [1, 2]},
        "after": 0,
    });
    let yaml = document(&doc);
    assert_eq!(read(&yaml), Ok(doc), "{yaml}");
}

#[test]
fn the_escapes_go_yaml_does_not_know_are_refused() {
    assert_eq!(
        read("a: \"x\\/y\"\n").unwrap_err(),
        "a: the escape \\/ in a double-quoted value: kubectl does not know it and refuses the manifest; write / alone"
    );
    assert!(read("\"x\\/y\": 1\n")
        .unwrap_err()
        .contains("the escape \\/ in the double-quoted key"));
    // An escaped backslash before a slash is not that escape.
    assert_eq!(read("a: \"x\\\\/y\"\n"), Ok(json!({"a": "x\\/y"})));
    // In JSON, `\/` is JSON's and kubectl reads it.
    assert_eq!(read("{\"a\": \"x\\/y\"}"), Ok(json!({"a": "x/y"})));
}

#[test]
fn floats_are_written_with_a_dot_and_a_signed_exponent() {
    let v = json!([1.0, 0.5, 1e300, 1.5e-7, -2e21, 3, -4, u64::MAX]);
    let Value::Array(items) = &v else {
        unreachable!()
    };
    let shown: Vec<String> = items.iter().map(scalar_text).collect();
    assert_eq!(
        shown,
        [
            "1.0",
            "0.5",
            "1.0e+300",
            "1.5e-7",
            "-2.0e+21",
            "3",
            "-4",
            "18446744073709551615"
        ]
    );
}
