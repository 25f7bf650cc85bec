//! Every reason shadowsync gives, in one type: condition reasons, Event reasons, metric
//! labels and the CLI's REASON column all come from [`Reason`], whose string form
//! ([`Reason::as_str`]) is stable API (users match on it in alerts and scripts; the
//! README's troubleshooting table lists them). A closed set keeps metric labels bounded.
//!
//! This module imports nothing from the crate: every layer may use it.

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident,)*) => {
        /// Why a resource is in the state its conditions say, or why an Event was
        /// recorded.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The stable CamelCase form written to statuses, Events and labels.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

reasons! {
    // Ready=True.
    /// The cloud matches the spec.
    InSync,
    /// `managementPolicy: Observe`: the cloud state is mirrored.
    Observed,
    /// The retained message expired by its own `messageExpiry`.
    Expired,
    // In progress (Reconciling=True).
    /// A write or publish is under way.
    Writing,
    /// A benign version conflict is being retried; also the metric class of such a
    /// conflict and the data-plane error of a shadow write with a stale version.
    VersionConflict,
    /// Cleanup on deletion.
    Deleting,
    /// Waiting for something expected (e.g. the first read of a dry run).
    Pending,
    // Needs a human (Stalled=True).
    /// The spec fails validation.
    InvalidSpec,
    /// An out-of-band edit under `conflictPolicy: Preserve`; also a 409 from the data
    /// plane.
    Conflict,
    /// Another, older resource owns the same target.
    DuplicateTarget,
    /// The namespace's allow-list does not allow the target.
    NotAllowed,
    /// The object does not match the schema the operator was built with.
    InvalidObject,
    /// The referenced Secret or ConfigMap (or its key) does not exist.
    PayloadSourceMissing,
    /// The referenced payload cannot be read here (`apply` has no cluster).
    PayloadSourceUnavailable,
    // Ready=False alone.
    /// Reconciliation is paused by annotation.
    Paused,
    // Converged, Synced.
    /// The device reported every owned value.
    DeviceConverged,
    /// Owned values are still in `delta`.
    AwaitingDevice,
    /// The last data-plane call succeeded.
    Succeeded,
    // Events.
    /// A write or publish made the cloud match the spec.
    Synced,
    /// A publish of the retained message.
    Published,
    /// The cloud was changed outside shadowsync and was set back.
    DriftCorrected,
    /// The class of a conflict that another writer's edit caused.
    OutOfBandEdit,
    /// Deletion: the target was left as it is (`deletionPolicy: Retain`).
    Retained,
    /// Deletion: the shadow or retained message was deleted.
    Deleted,
    /// Deletion: the owned desired keys were removed.
    Cleared,
    /// Deletion cleanup failed (retried).
    CleanupFailed,
    /// Deletion of a resource its namespace does not allow: no cleanup.
    CleanupSkipped,
    // Data-plane failures (`ErrorKind::reason`).
    /// The document or message is over a size limit.
    TooLarge,
    /// The data plane refused the request as malformed.
    InvalidRequest,
    /// The thing, shadow or message does not exist.
    NotFound,
    /// Throttled (429).
    Throttled,
    /// The credentials are refused.
    AccessDenied,
    /// 503.
    ServiceUnavailable,
    /// 500.
    InternalFailure,
    /// 405.
    MethodNotAllowed,
    /// The document is not UTF-8 JSON.
    UnsupportedEncoding,
    /// No answer (connection or timeout).
    Unreachable,
    /// An answer that fits no known error.
    UnexpectedResponse,
    /// The resource exists already.
    AlreadyExists,
    /// A fleet-index query the data plane cannot run.
    InvalidQuery,
    /// The fleet index is not ready.
    IndexNotReady,
    // ThingShadowSet rollouts.
    /// Every selected thing carries the template (Ready=True).
    RolloutComplete,
    /// A template revision is being rolled out (Reconciling=True).
    RolloutProgressing,
    /// More devices failed than `maxFailures` allows (Stalled=True).
    RolloutAborted,
    /// The rollout went on to its next step (an Event).
    StepAdvanced,
    /// Devices were returned to the last complete template (an Event).
    RolledBack,
    /// The set's membership cannot be read from the registry.
    MembershipUnavailable,
    /// Another object holds the name of a set's child, or another resource the thing's
    /// shadow.
    ThingConflict,
    // Operator failures (logs only).
    /// A Kubernetes API call failed.
    KubernetesError,
    /// A failure inside the operator.
    InternalError,
}

impl Reason {
    /// The reason of this string form, if it is one.
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason equals its string form, so that statuses (which hold strings) and tests
/// compare with it directly.
impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, other: &Reason) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Reason> for str {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self.as_str() == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_are_unique_camel_case_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && text.chars().all(|c| c.is_ascii_alphanumeric()),
                "{text} is not CamelCase"
            );
            assert_eq!(Reason::parse(text), Some(*reason));
            assert_eq!(reason.to_string(), text);
        }
        assert_eq!(Reason::parse("inSync"), None);
        assert_eq!(*"InSync".to_string(), Reason::InSync);
        assert_ne!(*"InSync", Reason::Observed);
        assert_eq!(Reason::InSync, "InSync");
        assert_ne!("InSync", Reason::Observed);
    }

    #[test]
    fn the_string_forms_users_match_on_do_not_change() {
        // Statuses written by earlier versions and users' alerts rely on these.
        for (reason, text) in [
            (Reason::InSync, "InSync"),
            (Reason::DuplicateTarget, "DuplicateTarget"),
            (Reason::NotAllowed, "NotAllowed"),
            (Reason::Unreachable, "Unreachable"),
            (Reason::TooLarge, "TooLarge"),
            (Reason::OutOfBandEdit, "OutOfBandEdit"),
        ] {
            assert_eq!(reason.as_str(), text);
        }
    }
}
