//! Tenancy: which things and topics the resources of a namespace may target.
//!
//! A platform team grants each namespace an allowance with two annotations on the
//! Namespace object:
//!
//! - [`ALLOWED_THINGS_ANNOTATION`] (`iot.shadowsync.dev/allowed-things`): glob patterns
//!   that a ThingShadow's `spec.thingName` must match. `*` stands for any run of
//!   characters (also none), `?` for exactly one character; everything else is literal.
//!   An entry may only use the characters of thing names (`a-z A-Z 0-9 : _ -`) besides
//!   the two wildcards, so that a typo (a topic, a space) cannot pass unnoticed.
//! - [`ALLOWED_TOPICS_ANNOTATION`] (`iot.shadowsync.dev/allowed-topics`): MQTT topic
//!   filters that a RetainedMessage's `spec.topic` must match. `+` is one whole level,
//!   `#` the rest of the topic (only as the last level; `a/#` also matches `a`), as MQTT
//!   defines them; wildcards at the first level never match a topic starting with `$`.
//!
//! Both are comma-separated lists; whitespace around entries is trimmed and empty
//! entries are skipped. A target is allowed when any entry matches it. The rules:
//!
//! | annotation | allowed |
//! |---|---|
//! | absent | everything, unless the operator runs with `--require-namespace-allowlist` (then nothing) |
//! | present but empty | nothing |
//! | any malformed entry | nothing (fail closed), with a message naming the entry and the rule |
//! | present | the targets some entry matches |
//!
//! Pure: no I/O. The operator feeds it the Namespace's annotations from its cache
//! (`crate::operator` runs the check before any data-plane call).

use std::collections::BTreeMap;
use std::fmt;

/// Glob patterns of the thing names a namespace's ThingShadows may target.
pub const ALLOWED_THINGS_ANNOTATION: &str = "iot.shadowsync.dev/allowed-things";
/// MQTT topic filters of the topics a namespace's RetainedMessages may target.
pub const ALLOWED_TOPICS_ANNOTATION: &str = "iot.shadowsync.dev/allowed-topics";
/// The operator flag that turns a missing annotation into "nothing allowed".
pub const REQUIRE_ALLOWLIST_FLAG: &str = "--require-namespace-allowlist";
/// The condition and Event reason of a resource outside its namespace's allowance.
pub const NOT_ALLOWED: crate::reason::Reason = crate::reason::Reason::NotAllowed;

/// Longest annotation value quoted in a message.
const QUOTE_LIMIT: usize = 200;
/// Longest topic filter, as MQTT's length prefix allows.
const MAX_FILTER_BYTES: usize = 65_535;

/// What a resource writes to: a thing (ThingShadow) or a topic (RetainedMessage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target<'a> {
    Thing(&'a str),
    Topic(&'a str),
}

impl<'a> Target<'a> {
    /// The annotation that governs this kind of target.
    pub fn annotation(&self) -> &'static str {
        match self {
            Target::Thing(_) => ALLOWED_THINGS_ANNOTATION,
            Target::Topic(_) => ALLOWED_TOPICS_ANNOTATION,
        }
    }

    /// The thing name or the topic.
    pub fn name(&self) -> &'a str {
        match self {
            Target::Thing(name) | Target::Topic(name) => name,
        }
    }

    fn noun(&self) -> &'static str {
        match self {
            Target::Thing(_) => "thing",
            Target::Topic(_) => "topic",
        }
    }
}

/// Why a target is refused; the message names the annotation, the namespace and the
/// value refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAllowed {
    pub message: String,
}

impl fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NotAllowed {}

/// An annotation entry that breaks its syntax rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedEntry {
    /// The entry as written (trimmed).
    pub entry: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

/// Decides whether `target` is allowed in `namespace`, given that namespace's
/// annotations (`None` when it has none).
pub fn check(
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
    target: Target<'_>,
    require_allowlist: bool,
) -> Result<(), NotAllowed> {
    let annotation = target.annotation();
    let refused = |why: String| NotAllowed {
        message: format!(
            "{} {:?} is not allowed in namespace {namespace:?}: {why}",
            target.noun(),
            target.name()
        ),
    };
    let Some(value) = annotations.and_then(|a| a.get(annotation)) else {
        if require_allowlist {
            return Err(refused(format!(
                "the namespace has no annotation {annotation} and the operator runs with \
                 {REQUIRE_ALLOWLIST_FLAG}, so it may target no {}",
                target.noun()
            )));
        }
        return Ok(());
    };
    let matched = match target {
        Target::Thing(name) => parse_thing_patterns(value)
            .map(|patterns| patterns.iter().any(|p| glob_matches(p, name))),
        Target::Topic(topic) => parse_topic_filters(value)
            .map(|filters| filters.iter().any(|f| filter_matches(f, topic))),
    };
    match matched {
        Ok(true) => Ok(()),
        Ok(false) if entries(value).next().is_none() => Err(refused(format!(
            "the namespace annotation {annotation} is empty, which allows no {}",
            target.noun()
        ))),
        Ok(false) => Err(refused(format!(
            "it matches no entry of the namespace annotation {annotation} ({:?})",
            quote(value)
        ))),
        Err(bad) => Err(refused(format!(
            "the namespace annotation {annotation} has an invalid entry {:?}: {}; nothing is \
             allowed until it is fixed",
            quote(&bad.entry),
            bad.rule
        ))),
    }
}

/// The non-empty, trimmed entries of a comma-separated annotation value.
fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|e| !e.is_empty())
}

fn quote(value: &str) -> String {
    let value = value.trim();
    if value.len() <= QUOTE_LIMIT {
        return value.to_string();
    }
    let mut end = QUOTE_LIMIT;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}

/// The rule of a thing-name glob entry.
pub const GLOB_RULE: &str = "a thing pattern may contain only a-z, A-Z, 0-9, ':', '_', '-' and \
                             the wildcards '*' (any run of characters) and '?' (one character)";

/// Parses `allowed-things`: the glob patterns, or the first malformed entry.
pub fn parse_thing_patterns(value: &str) -> Result<Vec<&str>, MalformedEntry> {
    entries(value)
        .map(|entry| {
            let valid = entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '*' | '?'));
            if valid {
                Ok(entry)
            } else {
                Err(MalformedEntry {
                    entry: entry.to_string(),
                    rule: GLOB_RULE,
                })
            }
        })
        .collect()
}

/// Parses `allowed-topics`: the topic filters, or the first malformed entry.
pub fn parse_topic_filters(value: &str) -> Result<Vec<&str>, MalformedEntry> {
    entries(value)
        .map(|entry| match filter_rule_broken(entry) {
            None => Ok(entry),
            Some(rule) => Err(MalformedEntry {
                entry: entry.to_string(),
                rule,
            }),
        })
        .collect()
}

/// The MQTT rule a topic filter breaks, if any.
fn filter_rule_broken(filter: &str) -> Option<&'static str> {
    if filter.len() > MAX_FILTER_BYTES {
        return Some("a topic filter must be at most 65535 bytes");
    }
    if filter.contains('\0') {
        return Some("a topic filter must not contain NUL (U+0000)");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some(
                "'#' must be a whole level and the last one of a topic filter (as in a/b/#)",
            );
        }
        if level.contains('+') && *level != "+" {
            return Some("'+' must be a whole level of a topic filter (as in a/+/c)");
        }
    }
    None
}

/// Whether a thing name matches a glob pattern (`*` any run, `?` one character).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // The last `*` seen and the name position it was tried at: on a mismatch the star
    // takes one more character. Linear space; at worst pattern x name steps.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Whether a topic matches a (well-formed) MQTT topic filter.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    // MQTT: a filter starting with a wildcard does not match topics starting with `$`.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for wanted in filter.split('/') {
        if wanted == "#" {
            // The rest, including nothing more ("a/#" matches "a").
            return true;
        }
        match levels.next() {
            Some(level) if wanted == "+" || wanted == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn things(value: &str) -> BTreeMap<String, String> {
        annotations(&[(ALLOWED_THINGS_ANNOTATION, value)])
    }

    fn topics(value: &str) -> BTreeMap<String, String> {
        annotations(&[(ALLOWED_TOPICS_ANNOTATION, value)])
    }

    #[test]
    fn globs() {
        let cases = [
            ("lamp-*", "lamp-1", true),
            ("lamp-*", "lamp-", true),
            ("lamp-*", "lamp", false),
            ("lamp-*", "xlamp-1", false),
            ("*", "anything", true),
            ("*", "", true),
            ("?", "a", true),
            ("?", "", false),
            ("?", "ab", false),
            ("lamp-??", "lamp-12", true),
            ("lamp-??", "lamp-123", false),
            ("*-lamp-*", "kitchen-lamp-2", true),
            ("*-lamp-*", "kitchen-lamp", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("a**", "a", true),
            ("exact", "exact", true),
            ("exact", "Exact", false),
            ("*a", "bbbbba", true),
            ("*a", "bbbbbab", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn topic_filters() {
        let cases = [
            ("home/+/config", "home/lamp/config", true),
            ("home/+/config", "home/lamp/state", false),
            ("home/+/config", "home/a/b/config", false),
            ("home/#", "home", true),
            ("home/#", "home/a", true),
            ("home/#", "home/a/b/c", true),
            ("home/#", "homes/a", false),
            ("#", "anything/at/all", true),
            ("+", "one", true),
            ("+", "one/two", false),
            ("+/+", "/finance", true),
            ("+/#", "a", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/", false),
            ("a/b/", "a/b/", true),
            ("a/+", "a/", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(filter_rule_broken(filter), None, "{filter} is well-formed");
            assert_eq!(
                filter_matches(filter, topic),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn malformed_topic_filters_name_the_rule() {
        for (filter, rule_part) in [
            ("a/#/b", "'#' must be a whole level and the last one"),
            ("sp+ort", "'+' must be a whole level"),
            ("a/b#", "'#' must be a whole level"),
            ("#/a", "'#' must be a whole level and the last one"),
            ("a/++", "'+' must be a whole level"),
            ("a\0b", "NUL"),
        ] {
            let rule = filter_rule_broken(filter).unwrap_or_else(|| panic!("{filter:?} refused"));
            assert!(rule.contains(rule_part), "{filter:?}: {rule}");
        }
        let long = "a".repeat(MAX_FILTER_BYTES + 1);
        assert!(filter_rule_broken(&long).is_some_and(|r| r.contains("65535")));
    }

    #[test]
    fn lists_are_trimmed_and_skip_empty_entries() {
        assert_eq!(
            parse_thing_patterns(" lamp-* ,  hall-? ,, ").unwrap(),
            vec!["lamp-*", "hall-?"]
        );
        assert_eq!(
            parse_topic_filters("home/+/config , site/# ").unwrap(),
            vec!["home/+/config", "site/#"]
        );
        assert!(parse_thing_patterns("").unwrap().is_empty());
        assert!(parse_thing_patterns(" , ").unwrap().is_empty());
    }

    #[test]
    fn malformed_glob_entries() {
        for bad in ["lamp/*", "lamp *", "lamp.1", "[ab]", "lämp"] {
            let err = parse_thing_patterns(&format!("ok-*, {bad}")).unwrap_err();
            assert_eq!(err.entry, bad);
            assert_eq!(err.rule, GLOB_RULE);
        }
    }

    #[test]
    fn absent_annotation_allows_everything_unless_required() {
        let none = BTreeMap::new();
        assert_eq!(check("team", None, Target::Thing("x"), false), Ok(()));
        assert_eq!(
            check("team", Some(&none), Target::Topic("a/b"), false),
            Ok(())
        );
        // The other kind's annotation does not restrict this kind.
        assert_eq!(
            check("team", Some(&topics("x/#")), Target::Thing("lamp"), false),
            Ok(())
        );

        let err = check("team", Some(&topics("x/#")), Target::Thing("lamp"), true).unwrap_err();
        assert_eq!(
            err.message,
            "thing \"lamp\" is not allowed in namespace \"team\": the namespace has no annotation \
             iot.shadowsync.dev/allowed-things and the operator runs with \
             --require-namespace-allowlist, so it may target no thing"
        );
        let err = check("team", None, Target::Topic("a/b"), true).unwrap_err();
        assert!(err.message.contains(ALLOWED_TOPICS_ANNOTATION), "{err}");
        assert!(err.message.contains("\"a/b\""), "{err}");
    }

    #[test]
    fn present_but_empty_allows_nothing() {
        for value in ["", "  ", ",", " , ,"] {
            let err =
                check("team", Some(&things(value)), Target::Thing("lamp"), false).unwrap_err();
            assert_eq!(
                err.message,
                "thing \"lamp\" is not allowed in namespace \"team\": the namespace annotation \
                 iot.shadowsync.dev/allowed-things is empty, which allows no thing"
            );
        }
    }

    #[test]
    fn match_and_mismatch() {
        let allowed = things("lamp-*, thermostat-??");
        for name in ["lamp-1", "lamp-kitchen", "thermostat-01"] {
            assert_eq!(
                check("team", Some(&allowed), Target::Thing(name), true),
                Ok(())
            );
        }
        let err = check("team", Some(&allowed), Target::Thing("door-1"), false).unwrap_err();
        assert_eq!(
            err.message,
            "thing \"door-1\" is not allowed in namespace \"team\": it matches no entry of the \
             namespace annotation iot.shadowsync.dev/allowed-things (\"lamp-*, thermostat-??\")"
        );

        let allowed = topics("home/+/config, site/berlin/#");
        for topic in ["home/lamp/config", "site/berlin", "site/berlin/a/b"] {
            assert_eq!(
                check("team", Some(&allowed), Target::Topic(topic), false),
                Ok(())
            );
        }
        for topic in ["home/lamp/state", "site/paris/a", "home/lamp/config/x"] {
            let err = check("team", Some(&allowed), Target::Topic(topic), false).unwrap_err();
            assert!(err.message.contains(&format!("topic {topic:?}")), "{err}");
            assert!(err.message.contains(ALLOWED_TOPICS_ANNOTATION), "{err}");
            assert!(err.message.contains("\"team\""), "{err}");
        }
    }

    #[test]
    fn a_malformed_entry_fails_closed() {
        // Even a target another entry would allow is refused.
        let err = check(
            "team",
            Some(&topics("home/#, a/#/b")),
            Target::Topic("home/x"),
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "topic \"home/x\" is not allowed in namespace \"team\": the namespace annotation \
             iot.shadowsync.dev/allowed-topics has an invalid entry \"a/#/b\": '#' must be a \
             whole level and the last one of a topic filter (as in a/b/#); nothing is allowed \
             until it is fixed"
        );
        let err = check(
            "team",
            Some(&topics("sp+ort")),
            Target::Topic("sport"),
            false,
        )
        .unwrap_err();
        assert!(err.message.contains("\"sp+ort\""), "{err}");
        assert!(err.message.contains("'+' must be a whole level"), "{err}");

        let err = check(
            "team",
            Some(&things("lamp-*, lamp/1")),
            Target::Thing("lamp-1"),
            false,
        )
        .unwrap_err();
        assert!(err.message.contains(ALLOWED_THINGS_ANNOTATION), "{err}");
        assert!(err.message.contains("\"lamp/1\""), "{err}");
        assert!(err.message.contains(GLOB_RULE), "{err}");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let value = format!("{},x-*", "é".repeat(300));
        let err = check("team", Some(&things(&value)), Target::Thing("lamp"), false).unwrap_err();
        assert!(err.message.len() < 600, "{}", err.message.len());
        assert!(err.message.contains("..."));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// An independent reference: the glob as a regular expression.
    fn glob_regex(pattern: &str) -> regex_lite::Regex {
        let mut re = String::from("^");
        for c in pattern.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => re.push_str(&regex_lite::escape(&c.to_string())),
            }
        }
        re.push('$');
        regex_lite::Regex::new(&re).expect("a valid regex")
    }

    /// An independent reference: the topic filter as a regular expression.
    fn filter_regex(filter: &str) -> regex_lite::Regex {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut re = String::from("^");
        for (i, level) in levels.iter().enumerate() {
            match *level {
                "#" if i == 0 => re.push_str(".*"),
                "#" => {
                    // "a/#" is "a" or "a/..." : take back the separator pushed before.
                    re.truncate(re.len() - 1);
                    re.push_str("(/.*)?");
                }
                "+" => re.push_str("[^/]*"),
                level => re.push_str(&regex_lite::escape(level)),
            }
            if i + 1 < levels.len() {
                re.push('/');
            }
        }
        re.push('$');
        regex_lite::Regex::new(&re).expect("a valid regex")
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec("[ab]{0,2}", 1..5).prop_map(|levels| levels.join("/"))
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof!["[ab]{0,2}", Just("+".to_string())], 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut levels, hash)| {
                if hash {
                    levels.push("#".into());
                }
                levels.join("/")
            })
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_regex(pattern in "[ab*?]{0,8}", name in "[ab]{0,10}") {
            prop_assert_eq!(glob_matches(&pattern, &name), glob_regex(&pattern).is_match(&name));
        }

        #[test]
        fn a_name_matches_itself_and_its_generalisations(
            name in "[a-zA-Z0-9:_-]{1,40}",
            at in any::<prop::sample::Index>(),
            len in 0usize..5,
        ) {
            prop_assert!(glob_matches(&name, &name));
            let chars: Vec<char> = name.chars().collect();
            let i = at.index(chars.len());
            let mut one = chars.clone();
            one[i] = '?';
            prop_assert!(glob_matches(&one.iter().collect::<String>(), &name));
            let end = (i + len).min(chars.len());
            let starred: String = chars[..i].iter().chain(['*'].iter()).chain(chars[end..].iter()).collect();
            prop_assert!(glob_matches(&starred, &name));
        }

        #[test]
        fn filter_agrees_with_a_regex(filter in filter_strategy(), topic in topic_strategy()) {
            prop_assert_eq!(filter_rule_broken(&filter), None);
            prop_assert_eq!(
                filter_matches(&filter, &topic),
                filter_regex(&filter).is_match(&topic),
                "filter {:?} topic {:?}", filter, topic
            );
        }

        #[test]
        fn a_topic_matches_its_generalisations(topic in topic_strategy(), at in any::<prop::sample::Index>()) {
            prop_assert!(filter_matches(&topic, &topic));
            let levels: Vec<&str> = topic.split('/').collect();
            let i = at.index(levels.len());
            let mut plus = levels.clone();
            plus[i] = "+";
            prop_assert!(filter_matches(&plus.join("/"), &topic));
            let mut hash: Vec<&str> = levels[..i].to_vec();
            hash.push("#");
            prop_assert!(filter_matches(&hash.join("/"), &topic));
        }

        #[test]
        fn check_never_panics(
            value in ".{0,40}",
            name in ".{0,20}",
            thing in any::<bool>(),
            require in any::<bool>(),
        ) {
            let annotation = if thing { ALLOWED_THINGS_ANNOTATION } else { ALLOWED_TOPICS_ANNOTATION };
            let annotations: BTreeMap<String, String> = [(annotation.to_string(), value.clone())].into();
            let target = if thing { Target::Thing(&name) } else { Target::Topic(&name) };
            match check("ns", Some(&annotations), target, require) {
                Ok(()) => {}
                Err(err) => {
                    prop_assert!(err.message.contains(annotation));
                    prop_assert!(err.message.contains("\"ns\""));
                }
            }
        }
    }
}
