//! Fault injection: throttling, 5xx, latency, dropped connections and outages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dataplane::{DataPlaneError, ErrorKind};

/// The operations the server answers: the seven data-plane ones ([`Operation::ALL`]) and
/// the registry ones ([`Operation::REGISTRY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    UpdateThingShadow,
    GetThingShadow,
    DeleteThingShadow,
    ListNamedShadowsForThing,
    Publish,
    GetRetainedMessage,
    ListRetainedMessages,
    CreateThing,
    DeleteThing,
    CreateThingGroup,
    DeleteThingGroup,
    AddThingToThingGroup,
    RemoveThingFromThingGroup,
    ListThingsInThingGroup,
    SearchIndex,
    /// Answered, always with InvalidRequestException: dynamic groups are not served.
    CreateDynamicThingGroup,
}

impl Operation {
    /// The data-plane operations.
    pub const ALL: [Operation; 7] = [
        Operation::UpdateThingShadow,
        Operation::GetThingShadow,
        Operation::DeleteThingShadow,
        Operation::ListNamedShadowsForThing,
        Operation::Publish,
        Operation::GetRetainedMessage,
        Operation::ListRetainedMessages,
    ];

    /// The registry (control-plane) operations.
    pub const REGISTRY: [Operation; 9] = [
        Operation::CreateThing,
        Operation::DeleteThing,
        Operation::CreateThingGroup,
        Operation::DeleteThingGroup,
        Operation::AddThingToThingGroup,
        Operation::RemoveThingFromThingGroup,
        Operation::ListThingsInThingGroup,
        Operation::SearchIndex,
        Operation::CreateDynamicThingGroup,
    ];

    /// The AWS operation name (also the key in stats and the fault filter).
    pub fn name(self) -> &'static str {
        match self {
            Operation::UpdateThingShadow => "UpdateThingShadow",
            Operation::GetThingShadow => "GetThingShadow",
            Operation::DeleteThingShadow => "DeleteThingShadow",
            Operation::ListNamedShadowsForThing => "ListNamedShadowsForThing",
            Operation::Publish => "Publish",
            Operation::GetRetainedMessage => "GetRetainedMessage",
            Operation::ListRetainedMessages => "ListRetainedMessages",
            Operation::CreateThing => "CreateThing",
            Operation::DeleteThing => "DeleteThing",
            Operation::CreateThingGroup => "CreateThingGroup",
            Operation::DeleteThingGroup => "DeleteThingGroup",
            Operation::AddThingToThingGroup => "AddThingToThingGroup",
            Operation::RemoveThingFromThingGroup => "RemoveThingFromThingGroup",
            Operation::ListThingsInThingGroup => "ListThingsInThingGroup",
            Operation::SearchIndex => "SearchIndex",
            Operation::CreateDynamicThingGroup => "CreateDynamicThingGroup",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = || Operation::ALL.into_iter().chain(Operation::REGISTRY);
        all().find(|op| op.name() == s).ok_or_else(|| {
            let known: Vec<&str> = all().map(|op| op.name()).collect();
            format!("unknown operation {s:?} (known: {})", known.join(", "))
        })
    }
}

/// Faults the server injects into data-plane and registry requests (never into
/// `/_shadowsync/`).
///
/// JSON (camelCase) at `GET/PUT/PATCH /_shadowsync/faults`; every field may be omitted.
/// A faulted request never reaches the store, except under `dropAfterRate`. The latency
/// applies to every matching request, faulted or not; then, drawn independently in this
/// order, a request is dropped, throttled (429) or failed with 500/503. `outage` fails
/// every matching request with 503. A request that got through and succeeded may then
/// lose its answer (`dropAfterRate`): applied, but the client cannot know it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Fraction (0..=1) of requests answered 429 `ThrottlingException`.
    pub throttle_rate: f64,
    /// Fraction (0..=1) of requests answered 500 `InternalFailureException` or
    /// 503 `ServiceUnavailableException` (half each).
    pub error_rate: f64,
    /// Extra latency added to each request, in milliseconds.
    pub latency_ms: u64,
    /// Fraction (0..=1) of requests whose connection is reset without an answer, before
    /// the request reaches the store (nothing is applied).
    pub drop_rate: f64,
    /// Fraction (0..=1) of successful requests whose connection is reset after the store
    /// applied them: the write happened, the answer is lost (the hard case for retries).
    pub drop_after_rate: f64,
    /// Every request fails with 503 `ServiceUnavailableException`.
    pub outage: bool,
    /// Only these operations are faulted; empty means all.
    pub operations: Vec<Operation>,
}

/// What happens to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Reset the connection without an answer.
    Drop,
    /// 429 from `throttleRate`.
    Throttle,
    /// 500 or 503 from `errorRate`.
    Error(ErrorKind),
    /// 503 from `outage`.
    Outage,
}

impl Fault {
    /// The error answered, or `None` for a dropped connection.
    pub(crate) fn error(self) -> Option<DataPlaneError> {
        match self {
            Fault::Drop => None,
            Fault::Throttle => Some(DataPlaneError::new(
                ErrorKind::Throttling,
                "Rate exceeded (injected fault)",
            )),
            Fault::Error(kind) => Some(DataPlaneError::new(
                kind,
                format!("{} (injected fault)", kind.aws_type()),
            )),
            Fault::Outage => Some(DataPlaneError::new(
                ErrorKind::ServiceUnavailable,
                "Service unavailable (injected outage)",
            )),
        }
    }
}

impl FaultSettings {
    /// Checks the rates are fractions.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("throttleRate", self.throttle_rate),
            ("errorRate", self.error_rate),
            ("dropRate", self.drop_rate),
            ("dropAfterRate", self.drop_after_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        Ok(())
    }

    /// True when nothing is injected.
    pub fn is_quiet(&self) -> bool {
        self.throttle_rate == 0.0
            && self.error_rate == 0.0
            && self.latency_ms == 0
            && self.drop_rate == 0.0
            && self.drop_after_rate == 0.0
            && !self.outage
    }

    pub(crate) fn applies_to(&self, op: Operation) -> bool {
        self.operations.is_empty() || self.operations.contains(&op)
    }

    /// Draws the fault for one request of `op` (after its latency).
    pub(crate) fn draw(&self, op: Operation) -> Option<Fault> {
        if !self.applies_to(op) {
            return None;
        }
        if self.outage {
            return Some(Fault::Outage);
        }
        if hit(self.drop_rate) {
            return Some(Fault::Drop);
        }
        if hit(self.throttle_rate) {
            return Some(Fault::Throttle);
        }
        if hit(self.error_rate) {
            let kind = if rand::random::<bool>() {
                ErrorKind::InternalFailure
            } else {
                ErrorKind::ServiceUnavailable
            };
            return Some(Fault::Error(kind));
        }
        None
    }

    /// Whether the answer to a successful request of `op` is lost (after the store
    /// applied it).
    pub(crate) fn draw_drop_after(&self, op: Operation) -> bool {
        self.applies_to(op) && hit(self.drop_after_rate)
    }
}

fn hit(rate: f64) -> bool {
    // `random` is in [0, 1): a rate of 1.0 always hits, 0.0 never does.
    rate > 0.0 && rand::random::<f64>() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_round_trip() {
        for op in Operation::ALL.into_iter().chain(Operation::REGISTRY) {
            assert_eq!(op.name().parse::<Operation>(), Ok(op));
        }
        assert!("Nope".parse::<Operation>().is_err());
    }

    #[test]
    fn certain_and_impossible_rates() {
        let always = FaultSettings {
            throttle_rate: 1.0,
            ..Default::default()
        };
        let never = FaultSettings::default();
        for _ in 0..200 {
            assert_eq!(always.draw(Operation::Publish), Some(Fault::Throttle));
            assert_eq!(never.draw(Operation::Publish), None);
        }
    }

    #[test]
    fn drop_after_is_drawn_separately_and_filtered() {
        let s = FaultSettings {
            drop_after_rate: 1.0,
            operations: vec![Operation::Publish],
            ..Default::default()
        };
        assert!(!s.is_quiet());
        // Not a fault before the request: the request goes through to the store.
        assert_eq!(s.draw(Operation::Publish), None);
        assert!(s.draw_drop_after(Operation::Publish));
        assert!(!s.draw_drop_after(Operation::GetRetainedMessage));
        assert!(!FaultSettings::default().draw_drop_after(Operation::Publish));
        let parsed: FaultSettings =
            serde_json::from_str(r#"{"dropAfterRate":0.25}"#).expect("valid settings");
        assert_eq!(parsed.drop_after_rate, 0.25);
        assert!(FaultSettings {
            drop_after_rate: 2.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn filter_limits_faults_to_listed_operations() {
        let s = FaultSettings {
            outage: true,
            operations: vec![Operation::Publish],
            ..Default::default()
        };
        assert_eq!(s.draw(Operation::Publish), Some(Fault::Outage));
        assert_eq!(s.draw(Operation::GetThingShadow), None);
    }

    #[test]
    fn error_rate_gives_500_or_503() {
        let s = FaultSettings {
            error_rate: 1.0,
            ..Default::default()
        };
        for _ in 0..100 {
            match s.draw(Operation::GetRetainedMessage) {
                Some(Fault::Error(ErrorKind::InternalFailure))
                | Some(Fault::Error(ErrorKind::ServiceUnavailable)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn rates_outside_zero_one_are_refused() {
        for bad in [-0.1, 1.5, f64::NAN] {
            let s = FaultSettings {
                drop_rate: bad,
                ..Default::default()
            };
            assert!(s.validate().is_err(), "{bad} accepted");
        }
        assert!(FaultSettings::default().validate().is_ok());
    }

    #[test]
    fn json_shape_is_camel_case_and_partial() {
        let s: FaultSettings =
            serde_json::from_str(r#"{"throttleRate":0.5,"operations":["Publish"]}"#)
                .expect("valid settings");
        assert_eq!(s.throttle_rate, 0.5);
        assert_eq!(s.operations, vec![Operation::Publish]);
        assert!(serde_json::from_str::<FaultSettings>(r#"{"throttle":1}"#).is_err());
        assert!(serde_json::from_str::<FaultSettings>(r#"{"operations":["Nope"]}"#).is_err());
    }
}
