//! Discovery documents (`/api`, `/apis`, group and group-version resource lists, aggregated
//! discovery), `/version`, `/openapi/v2`, and Accept-header negotiation.

use serde_json::{json, Value};

use crate::registry::{Registry, ResourceType};

/// One entry of an Accept header: `type/subtype;param=value;...`.
#[derive(Debug, PartialEq)]
pub struct MediaRange {
    pub mime: String,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn is_json(&self) -> bool {
        matches!(
            self.mime.as_str(),
            "application/json" | "*/*" | "application/*" | "*"
        )
    }
}

pub fn parse_accept(header: Option<&str>) -> Vec<MediaRange> {
    let Some(header) = header else {
        return vec![MediaRange {
            mime: "*/*".into(),
            params: Vec::new(),
        }];
    };
    header
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let mime = pieces.next()?.trim().to_ascii_lowercase();
            if mime.is_empty() {
                return None;
            }
            let params = pieces
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            Some(MediaRange { mime, params })
        })
        .collect()
}

/// How to answer a read of objects.
#[derive(Clone, Debug, PartialEq)]
pub enum Representation {
    /// The objects themselves (or their List).
    Full,
    /// A `meta.k8s.io` Table; the string is the Table's apiVersion.
    Table(String),
    /// `PartialObjectMetadata` (or its List): metadata only.
    Metadata(String),
}

/// Picks the first representation in the Accept header that the server can produce.
pub fn negotiate(accept: &[MediaRange]) -> Option<Representation> {
    for range in accept {
        if range.mime != "application/json" && !range.is_json() {
            continue;
        }
        let group = range.param("g");
        let version = range.param("v");
        match range.param("as") {
            None => return Some(Representation::Full),
            Some("Table") if group == Some("meta.k8s.io") => {
                if let Some(v @ ("v1" | "v1beta1")) = version {
                    return Some(Representation::Table(format!("meta.k8s.io/{v}")));
                }
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if group == Some("meta.k8s.io") =>
            {
                if let Some(v @ ("v1" | "v1beta1")) = version {
                    return Some(Representation::Metadata(format!("meta.k8s.io/{v}")));
                }
            }
            _ => {}
        }
    }
    None
}

/// Which discovery form the client asked for: aggregated `v2`, `v2beta1`, or the plain one.
pub fn discovery_form(accept: &[MediaRange]) -> Option<&'static str> {
    for range in accept {
        if range.param("as") == Some("APIGroupDiscoveryList")
            && range.param("g") == Some("apidiscovery.k8s.io")
        {
            match range.param("v") {
                Some("v2") => return Some("v2"),
                Some("v2beta1") => return Some("v2beta1"),
                _ => continue,
            }
        }
        if range.is_json() && range.param("as").is_none() {
            return None;
        }
    }
    None
}

pub fn version_info(minor: u32) -> Value {
    json!({
        "major": "1",
        "minor": minor.to_string(),
        "gitVersion": format!("v1.{minor}.0"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    json!({
        "name": name,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": gv(&versions[0]),
    })
}

pub fn api_group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_doc(&g, &v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    let (name, versions) = registry
        .groups()
        .into_iter()
        .find(|(g, _)| g == group && !g.is_empty())?;
    let mut doc = group_doc(&name, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": rt.verbs(),
    });
    if !rt.short_names.is_empty() {
        main["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        main["categories"] = json!(rt.categories);
    }
    let mut out = vec![main];
    if rt.status_subresource {
        out.push(json!({
            "name": format!("{}/status", rt.plural),
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    out
}

pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = registry
        .in_group_version(group, version)
        .flat_map(|rt| resource_entries(rt))
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// The aggregated discovery document for the core group (`core == true`) or all others.
pub fn aggregated(registry: &Registry, core: bool, form: &str) -> Value {
    let items: Vec<Value> = registry
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .in_group_version(&group, v)
                        .map(|rt| {
                            let kind = json!({"group": group, "version": v, "kind": rt.kind});
                            let mut r = json!({
                                "resource": rt.plural,
                                "responseKind": kind,
                                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": rt.singular,
                                "verbs": rt.verbs(),
                            });
                            if !rt.short_names.is_empty() {
                                r["shortNames"] = json!(rt.short_names);
                            }
                            if !rt.categories.is_empty() {
                                r["categories"] = json!(rt.categories);
                            }
                            if rt.status_subresource {
                                r["subresources"] = json!([{
                                    "subresource": "status",
                                    "responseKind": kind,
                                    "verbs": ["get", "patch", "update"],
                                }]);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if !group.is_empty() {
                metadata["name"] = json!(group);
            }
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{form}"),
        "metadata": {},
        "items": items,
    })
}

/// What kube-openapi answers (the `@` that clients put in Accept is not valid in a media type).
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// An OpenAPI v2 document with no definitions. kubectl's client-side validation looks a kind
/// up in it and skips validation for kinds it does not find, so `kubectl apply` works
/// without `--validate=false`; the server validates custom resources itself.
pub fn openapi_v2(minor: u32, protobuf: bool) -> Vec<u8> {
    let title = "Kubernetes";
    let version = format!("v1.{minor}.0");
    if !protobuf {
        return serde_json::to_vec(&json!({
            "swagger": "2.0",
            "info": {"title": title, "version": version},
            "paths": {},
            "definitions": {},
        }))
        .expect("static JSON");
    }
    // gnostic openapi_v2.Document: swagger = 1 (string), info = 2 (Info: title = 1, version = 2).
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, title.as_bytes());
    field(&mut info, 2, version.as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let kubectl_get = parse_accept(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        ));
        assert_eq!(
            negotiate(&kubectl_get),
            Some(Representation::Table("meta.k8s.io/v1".into()))
        );
        assert_eq!(
            negotiate(&parse_accept(Some("application/json"))),
            Some(Representation::Full)
        );
        assert_eq!(negotiate(&parse_accept(None)), Some(Representation::Full));
        assert_eq!(
            negotiate(&parse_accept(Some("application/vnd.kubernetes.protobuf"))),
            None
        );
        let aggregated = parse_accept(Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"));
        assert_eq!(discovery_form(&aggregated), Some("v2"));
        assert_eq!(
            discovery_form(&parse_accept(Some("application/json"))),
            None
        );
    }

    #[test]
    fn openapi_protobuf_is_a_small_document() {
        let doc = openapi_v2(33, true);
        assert_eq!(&doc[..5], &[0x0a, 3, b'2', b'.', b'0']);
        assert_eq!(doc[5], 0x12);
        assert_eq!(doc[6] as usize, doc.len() - 7);
    }
}
