//! Between the stored form of an object and the form one served version shows. Custom
//! resources only change `apiVersion` (conversion strategy `None`); `events.k8s.io/v1`
//! Events are core `v1` Events with renamed fields, so `kubectl get events` sees the
//! Events a kube-rs `Recorder` writes.

use serde_json::{Map, Value};

use crate::meta::ordered;
use crate::registry::{Conversion, ResourceType};

/// (events.k8s.io/v1 name, core v1 name)
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(object: Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) -> Value {
    let Value::Object(map) = object else {
        return object;
    };
    let pairs: Vec<(&str, &str)> = pairs.collect();
    let mut out = Map::new();
    for (key, value) in map {
        let key = pairs
            .iter()
            .find(|(from, _)| *from == key)
            .map(|(_, to)| (*to).to_string())
            .unwrap_or(key);
        out.insert(key, value);
    }
    Value::Object(out)
}

/// The stored object as `version` of `rt` shows it.
pub fn to_external(rt: &ResourceType, version: &str, stored: &Value) -> Value {
    let mut object = match rt.conversion {
        Conversion::None => stored.clone(),
        Conversion::EventsV1 => rename(stored.clone(), EVENT_RENAMES.iter().map(|(e, c)| (*c, *e))),
    };
    object["apiVersion"] = Value::String(rt.api_version(version));
    object["kind"] = Value::String(rt.kind.clone());
    ordered(object)
}

/// A body sent to `rt` in the form it is stored in.
pub fn to_internal(rt: &ResourceType, version: &str, external: Value) -> Value {
    let mut object = match rt.conversion {
        Conversion::None => external,
        Conversion::EventsV1 => {
            let mut o = rename(external, EVENT_RENAMES.iter().copied());
            o["apiVersion"] = Value::String("v1".into());
            o
        }
    };
    if rt.conversion == Conversion::None {
        object["apiVersion"] = Value::String(rt.api_version(version));
    }
    object["kind"] = Value::String(rt.kind.clone());
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn events_v1_round_trip() {
        let registry = Registry::build(std::iter::empty());
        let ev1 = registry.find("events.k8s.io", "v1", "events").unwrap();
        let sent = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "ThingShadow", "name": "lamp"}, "note": "hi",
            "reason": "Synced", "type": "Normal", "reportingController": "shadowsync"});
        let stored = to_internal(&ev1, "v1", sent.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "lamp");
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["reportingComponent"], "shadowsync");
        assert_eq!(to_external(&ev1, "v1", &stored), sent);
    }
}
