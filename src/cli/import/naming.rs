//! Manifest names for imported targets: one DNS-1123 label per shadow or retained
//! message, valid for every Kubernetes object.
//!
//! Pure (no I/O), and these hold for any set of targets:
//!
//! - **Deterministic.** A target's name depends on the set of targets, never on the
//!   order they were read in, so importing the same fleet twice prints the same names.
//! - **Collision-free.** All names differ, even when targets differ only in case or in
//!   characters a label cannot hold (`a/b`, `a_b`): such names get a suffix from the
//!   SHA-256 of the exact target, lengthened until no two names meet.
//! - **Lossless names kept.** A target whose own name already is a valid label keeps it
//!   (`kitchen-lamp`). Only two things take it away: another lossless target with the
//!   same name and a smaller identity (the classic shadow of `a-b` against the named
//!   shadow `b` of `a`), or a hashed name that happens to equal it.
//! - **Always a label.** Names are 1 to [`MAX_NAME`] of `a-z0-9-`, alphanumeric at both
//!   ends. A base that is too long is cut, an empty one is replaced by `shadow` or
//!   `topic`, and either always gets a hash suffix.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::planner::fleet::naming::sanitize;

/// Longest name a manifest gets: a DNS-1123 label, valid for every Kubernetes object.
const MAX_NAME: usize = 63;
/// Hex digits of the hash suffix that shortens or disambiguates a name.
const HASH_DIGITS: usize = 8;

/// What a manifest name is derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NameCandidate {
    /// Lower-case, invalid characters replaced: the name when nothing collides.
    base: String,
    /// The base is the target's own name unchanged, so it keeps it in a collision.
    lossless: bool,
    /// The exact target (hashed for a suffix).
    identity: String,
    /// Used in front of the hash when the base is empty.
    fallback: &'static str,
}

/// `thing` for the classic shadow, `thing-shadow` for a named one.
pub(super) fn shadow_name_candidate(thing: &str, shadow: Option<&str>) -> NameCandidate {
    let (base, raw) = match shadow {
        None => (sanitize(thing), thing.to_string()),
        Some(shadow) => {
            let (t, s) = (sanitize(thing), sanitize(shadow));
            let base = match (t.is_empty(), s.is_empty()) {
                (false, false) => format!("{t}-{s}"),
                (true, _) => s,
                (false, true) => t,
            };
            (base, format!("{thing}-{shadow}"))
        }
    };
    NameCandidate {
        lossless: base == raw,
        base,
        identity: format!("shadow\0{thing}\0{}", shadow.unwrap_or("")),
        fallback: "shadow",
    }
}

/// `group` for a set of classic shadows, `group-shadow` for a named one. The set's name
/// is also its children's label value and the start of their names.
pub(super) fn set_name_candidate(group: &str, shadow: Option<&str>) -> NameCandidate {
    NameCandidate {
        identity: format!("set\0{group}\0{}", shadow.unwrap_or("")),
        fallback: "set",
        ..shadow_name_candidate(group, shadow)
    }
}

/// The topic with `/` and other invalid characters as `-`.
pub(super) fn topic_name_candidate(topic: &str) -> NameCandidate {
    let base = sanitize(topic);
    NameCandidate {
        lossless: base == topic,
        base,
        identity: format!("topic\0{topic}"),
        fallback: "topic",
    }
}

/// One DNS-1123 label per candidate, all different. A base keeps its plain form when it
/// fits and is unique; in a collision the lossless candidate (first by identity) keeps
/// it and the others get a hash of their exact target as suffix. Too long or empty
/// bases are always shortened with a hash.
pub(super) fn assign_names(candidates: &[NameCandidate]) -> Vec<String> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        groups.entry(c.base.as_str()).or_default().push(i);
    }
    // `None`: the plain base; `Some(n)`: base (cut) + `-` + n hex digits of the hash.
    let mut suffix: Vec<Option<usize>> = candidates
        .iter()
        .map(|c| (c.base.is_empty() || c.base.len() > MAX_NAME).then_some(HASH_DIGITS))
        .collect();
    for members in groups.values().filter(|m| m.len() > 1) {
        let keeper = members
            .iter()
            .filter(|&&i| candidates[i].lossless && suffix[i].is_none())
            .min_by_key(|&&i| &candidates[i].identity)
            .copied();
        for &i in members {
            if Some(i) != keeper && suffix[i].is_none() {
                suffix[i] = Some(HASH_DIGITS);
            }
        }
    }
    // A hashed name may still meet another name; lengthen the hashes until none does.
    for _ in 0..=64 {
        let names: Vec<String> = candidates
            .iter()
            .zip(&suffix)
            .map(|(c, s)| match s {
                None => c.base.clone(),
                Some(digits) => hashed_name(c, *digits),
            })
            .collect();
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            by_name.entry(name.as_str()).or_default().push(i);
        }
        let clashes: Vec<&Vec<usize>> = by_name.values().filter(|v| v.len() > 1).collect();
        if clashes.is_empty() {
            return names;
        }
        for members in clashes {
            for &i in members {
                suffix[i] = Some(match suffix[i] {
                    None => HASH_DIGITS,
                    Some(d) => (d + 4).min(64),
                });
            }
        }
    }
    unreachable!("distinct identities get distinct SHA-256 suffixes")
}

fn hashed_name(candidate: &NameCandidate, digits: usize) -> String {
    let digest = hex::encode(Sha256::digest(candidate.identity.as_bytes()));
    let hash = &digest[..digits.min(digest.len())];
    let stem = if candidate.base.is_empty() {
        candidate.fallback
    } else {
        &candidate.base
    };
    let room = MAX_NAME.saturating_sub(hash.len() + 1);
    // The stem is ASCII, so any byte index is a character boundary.
    let cut = stem[..stem.len().min(room)].trim_end_matches('-');
    if cut.is_empty() {
        hash.to_string()
    } else {
        format!("{cut}-{hash}")
    }
}

/// A DNS-1123 label: 1 to 63 of `a-z0-9-`, starting and ending alphanumeric.
pub(super) fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn names(candidates: &[NameCandidate]) -> Vec<String> {
        assign_names(candidates)
    }

    #[test]
    fn plain_names_when_nothing_collides() {
        let got = names(&[
            shadow_name_candidate("kitchen-lamp", None),
            shadow_name_candidate("kitchen-lamp", Some("config")),
            shadow_name_candidate("Hall_Thermostat:2", Some("$schedule")),
        ]);
        assert_eq!(
            got,
            [
                "kitchen-lamp",
                "kitchen-lamp-config",
                "hall-thermostat-2-schedule"
            ]
        );
        assert_eq!(
            names(&[topic_name_candidate("home/kitchen-lamp/config")]),
            ["home-kitchen-lamp-config"]
        );
    }

    #[test]
    fn collisions_keep_the_lossless_name_and_hash_the_others() {
        let lower = shadow_name_candidate("lamp", None);
        let upper = shadow_name_candidate("Lamp", None);
        let under = shadow_name_candidate("LAMP", None);
        let got = names(&[upper.clone(), lower.clone(), under.clone()]);
        assert_eq!(got[1], "lamp");
        assert!(got[0].starts_with("lamp-") && got[0].len() == 4 + 1 + HASH_DIGITS);
        assert!(got[2].starts_with("lamp-") && got[0] != got[2]);
        // The same input in another order gives the same names.
        let again = names(&[lower, under, upper]);
        assert_eq!(again, [got[1].clone(), got[2].clone(), got[0].clone()]);

        // Classic "a-b" and named "b" of "a" are both lossless: the smaller identity wins.
        let got = names(&[
            shadow_name_candidate("a", Some("b")),
            shadow_name_candidate("a-b", None),
        ]);
        assert_eq!(got[0], "a-b");
        assert_ne!(got[1], "a-b");

        // Two lossy topics: both hashed.
        let got = names(&[topic_name_candidate("a/b"), topic_name_candidate("a_b")]);
        assert!(got.iter().all(|n| n.starts_with("a-b-")), "{got:?}");
        assert_ne!(got[0], got[1]);
    }

    #[test]
    fn long_and_empty_bases_are_shortened_with_a_hash() {
        let long = "x".repeat(120);
        let got = names(&[
            shadow_name_candidate(&long, None),
            shadow_name_candidate(&long, Some("config")),
            topic_name_candidate("$$$/___"),
        ]);
        for name in &got {
            assert!(is_dns_label(name), "{name}");
        }
        assert_eq!(got[0].len(), MAX_NAME);
        assert_ne!(got[0], got[1]);
        assert!(got[2].starts_with("topic-"), "{}", got[2]);
    }

    #[test]
    fn a_hash_that_meets_a_plain_name_is_lengthened() {
        let lamp = shadow_name_candidate("Lamp", Some("x"));
        let plain_clash = hashed_name(&lamp, HASH_DIGITS);
        // A thing literally named like the hashed name of another.
        let got = names(&[
            lamp.clone(),
            shadow_name_candidate("lamp", Some("x")),
            shadow_name_candidate(&plain_clash, None),
        ]);
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), 3, "{got:?}");
        assert!(got.iter().all(|n| is_dns_label(n)), "{got:?}");
    }

    #[test]
    fn set_names_follow_the_group_and_the_shadow() {
        assert_eq!(names(&[set_name_candidate("Lamps_2", None)]), ["lamps-2"]);
        assert_eq!(names(&[set_name_candidate("lamps", None)]), ["lamps"]);
        assert_eq!(
            names(&[set_name_candidate("lamps", Some("config"))]),
            ["lamps-config"]
        );
        let got = names(&[set_name_candidate(&"g".repeat(128), None)]);
        assert!(is_dns_label(&got[0]) && got[0].len() == MAX_NAME, "{got:?}");
        let got = names(&[set_name_candidate("___", None)]);
        assert!(got[0].starts_with("set-"), "{got:?}");
    }

    #[test]
    fn sanitize_lowercases_and_collapses() {
        assert_eq!(sanitize("Kitchen__Lamp::1"), "kitchen-lamp-1");
        assert_eq!(sanitize("--a--"), "a");
        assert_eq!(sanitize("$"), "");
        assert_eq!(sanitize("été"), "t");
    }
}
