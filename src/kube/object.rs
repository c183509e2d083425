//! A ServiceEntry as the API server sends it, decoded into only what globaldns reads, each object
//! on its own.
//!
//! The watch lists every object of a cluster (100,000 of them in a large mesh). kube's
//! `DynamicObject` buffers each one through serde's `flatten` into a `serde_json::Value` (maps of
//! every field, `endpoints` included) that is then cloned and parsed again: that decode, not the
//! API server, was most of a cold start. Here each object of a list page or watch event is taken
//! as its raw JSON text (a copy of its bytes), then decoded straight into the model's types,
//! skipping what is not read. A bad object thus fails alone: it becomes an object whose `body`
//! says why, named from its metadata, instead of failing the page it came in (kube's own
//! `DeserializeGuard` does the same through a buffered, cloned `serde_value::Value`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use kube::api::ApiResource;
use kube::core::NamespaceResourceScope;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::serviceentry::{self as model, ServiceEntrySpec, ServiceEntryStatus};

/// One entry of `metadata.managedFields`: which manager set which fields.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedField {
    #[serde(default)]
    pub manager: String,
    /// `Apply` or `Update`.
    #[serde(default)]
    pub operation: String,
    /// `status` for a write to the status subresource (API servers from 1.22 on say so).
    #[serde(default)]
    pub subresource: Option<String>,
    /// The set of fields as the API server wrote it (`{"f:spec":{"f:addresses":{}}}`), kept as
    /// text: decoded only when asked ([`ServiceEntryObject::managed_fields_entries`]).
    #[serde(default, rename = "fieldsV1")]
    pub fields_v1: Option<Box<RawValue>>,
}

/// What of `spec` and `status` globaldns reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Body {
    pub spec: ServiceEntrySpec,
    pub status: Option<ServiceEntryStatus>,
}

/// A ServiceEntry as read from the API server.
#[derive(Clone, Debug)]
pub struct ServiceEntryObject {
    /// Only name, namespace, resourceVersion, labels and annotations are read.
    pub metadata: ObjectMeta,
    /// The version it was read at (`networking.istio.io/v1`).
    pub api_version: String,
    pub managed_fields: Vec<ManagedField>,
    /// spec and status, or why they do not fit the model (the object is then skipped), with the
    /// path of the field at fault (`spec.hosts: invalid type: …`).
    pub body: Result<Body, String>,
}

/// `metadata` as read.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    managed_fields: Option<Vec<ManagedField>>,
}

/// The whole object as read; anything else in it is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Whole {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    metadata: Meta,
    spec: ServiceEntrySpec,
    #[serde(default)]
    status: Option<ServiceEntryStatus>,
}

/// Only what names an object: what is left of one that does not fit [`Whole`].
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    metadata: Meta,
}

impl ServiceEntryObject {
    /// Decodes one object from its JSON text. Never fails: an object that does not fit says why
    /// in `body`, with as much of its metadata as could be read.
    pub fn decode(json: &str) -> ServiceEntryObject {
        match serde_json::from_str::<Whole>(json) {
            Ok(w) => ServiceEntryObject::new(
                w.api_version,
                w.metadata,
                Ok(Body {
                    spec: w.spec,
                    status: w.status,
                }),
            ),
            Err(_) => {
                let why = Err(why_not::<Whole>(json));
                if let Ok(h) = serde_json::from_str::<Head>(json) {
                    return ServiceEntryObject::new(h.api_version, h.metadata, why);
                }
                // Metadata that does not fit either (no API server sends that): its identity only.
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                let field = |f: &str| v["metadata"][f].as_str().map(String::from);
                let meta = Meta {
                    name: field("name"),
                    namespace: field("namespace"),
                    resource_version: field("resourceVersion"),
                    ..Meta::default()
                };
                ServiceEntryObject::new(String::new(), meta, why)
            }
        }
    }

    fn new(api_version: String, m: Meta, body: Result<Body, String>) -> ServiceEntryObject {
        ServiceEntryObject {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                resource_version: m.resource_version,
                labels: m.labels,
                annotations: m.annotations,
                ..ObjectMeta::default()
            },
            api_version,
            managed_fields: m.managed_fields.unwrap_or_default(),
            body,
        }
    }

    /// `metadata.managedFields` as k8s-openapi's type, `fieldsV1` decoded now (only write-back
    /// asks, so a watch without it never pays for them).
    pub fn managed_fields_entries(&self) -> Vec<ManagedFieldsEntry> {
        self.managed_fields_entries_naming("")
    }

    /// [`Self::managed_fields_entries`], only those whose `fieldsV1` text contains `needle`: a
    /// text search first, so that the rest are never decoded.
    pub fn managed_fields_entries_naming(&self, needle: &str) -> Vec<ManagedFieldsEntry> {
        self.managed_fields
            .iter()
            .filter(|m| {
                m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.get().contains(needle))
            })
            .map(|m| ManagedFieldsEntry {
                manager: Some(m.manager.clone()),
                operation: Some(m.operation.clone()),
                subresource: m.subresource.clone(),
                fields_type: m.fields_v1.as_ref().map(|_| "FieldsV1".into()),
                fields_v1: m
                    .fields_v1
                    .as_ref()
                    .and_then(|raw| serde_json::from_str(raw.get()).ok())
                    .map(FieldsV1),
                ..ManagedFieldsEntry::default()
            })
            .collect()
    }

    /// `namespace/name`, as logs name the object.
    pub fn describe(&self) -> String {
        let m = &self.metadata;
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        )
    }

    /// Into the model both sources share (the file source reads the same types from YAML).
    pub fn into_model(self) -> Result<model::ServiceEntry, String> {
        let body = self.body?;
        let m = self.metadata;
        Ok(model::ServiceEntry {
            api_version: self.api_version,
            kind: "ServiceEntry".into(),
            metadata: model::ObjectMeta {
                name: m.name.unwrap_or_default(),
                namespace: m.namespace,
                labels: m.labels.unwrap_or_default(),
                annotations: m.annotations.unwrap_or_default(),
                creation_timestamp: None,
            },
            spec: body.spec,
            status: body.status,
        })
    }
}

/// Why `json` does not decode as `T`: the path of the field at fault and serde's message,
/// without the position in the object's text.
fn why_not<T: for<'de> Deserialize<'de>>(json: &str) -> String {
    let mut de = serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => "does not decode".into(),
        Err(e) => {
            let inner = e.inner();
            let at = format!(" at line {} column {}", inner.line(), inner.column());
            let msg = inner.to_string();
            let msg = msg.strip_suffix(&at).unwrap_or(&msg);
            match e.path().to_string().as_str() {
                "." => msg.to_string(),
                path => format!("{path}: {msg}"),
            }
        }
    }
}

impl<'de> Deserialize<'de> for ServiceEntryObject {
    /// Takes the object's JSON text as it is, then decodes it on its own ([`Self::decode`]): only
    /// malformed JSON (the whole page is unreadable then) fails here.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <Box<RawValue>>::deserialize(d)?;
        Ok(ServiceEntryObject::decode(raw.get()))
    }
}

impl kube::Resource for ServiceEntryObject {
    /// The version is found by discovery ([`super::crd::serviceentry_resource`]).
    type DynamicType = ApiResource;
    type Scope = NamespaceResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::{ObjectList, WatchEvent};
    use serde_json::json;

    fn se(name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": "n", "resourceVersion": "7",
                         "labels": {"x": "y"}, "annotations": {"a": "b"},
                         "managedFields": [
                             {"manager": "kubectl", "operation": "Update",
                              "fieldsV1": {"f:spec": {"f:hosts": {}, "f:addresses": {}}}},
                             {"manager": "globaldns", "operation": "Update",
                              "subresource": "status",
                              "fieldsV1": {"f:status": {"f:addresses": {}}}}]},
            "spec": spec,
        })
    }

    #[test]
    fn reads_what_globaldns_needs_and_skips_the_rest() {
        let mut v = se(
            "a",
            json!({"hosts": ["a.n.global"], "addresses": ["10.0.0.1"], "resolution": "DNS",
                   "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                   "endpoints": [{"address": "192.0.2.1", "labels": {"k": "v"}}],
                   "unknownField": {"deep": [1, 2, {"x": null}]}}),
        );
        v["status"] = json!({"addresses": [{"value": "240.240.0.1", "host": "a.n.global"}],
                             "conditions": [{"type": "Reconciled"}]});
        let obj = ServiceEntryObject::decode(&v.to_string());
        assert_eq!(obj.describe(), "n/a");
        assert_eq!(obj.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(obj.metadata.annotations.as_ref().unwrap()["a"], "b");
        assert_eq!(obj.api_version, "networking.istio.io/v1");
        let mf = obj.managed_fields_entries();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0].manager.as_deref(), Some("kubectl"));
        assert_eq!(mf[0].operation.as_deref(), Some("Update"));
        let fields = |i: usize| mf[i].fields_v1.as_ref().unwrap().0.clone();
        assert!(fields(0)["f:spec"].get("f:addresses").is_some());
        assert!(fields(1)["f:status"].get("f:addresses").is_some());
        assert_eq!(mf[1].subresource.as_deref(), Some("status"));
        let body = obj.body.as_ref().unwrap();
        assert_eq!(body.spec.addresses, ["10.0.0.1"]);
        assert_eq!(body.spec.ports[0].number, 80);
        let se = obj.into_model().unwrap();
        assert_eq!(se.spec.hosts, ["a.n.global"]);
        assert_eq!(se.metadata.labels["x"], "y");
        assert_eq!(se.status.unwrap().addresses[0].value, "240.240.0.1");
    }

    #[test]
    fn a_bad_object_says_where_and_keeps_its_name() {
        let wrong =
            ServiceEntryObject::decode(&se("w", json!({"hosts": "a.n.global"})).to_string());
        assert_eq!(wrong.describe(), "n/w");
        assert_eq!(wrong.metadata.resource_version.as_deref(), Some("7"));
        let why = wrong.body.unwrap_err();
        assert!(why.starts_with("spec.hosts: invalid type: string"), "{why}");
        assert!(!why.contains("column"), "{why}");

        let mut nospec = se("m", json!(null));
        nospec.as_object_mut().unwrap().remove("spec");
        let missing = ServiceEntryObject::decode(&nospec.to_string());
        assert_eq!(missing.describe(), "n/m");
        assert_eq!(missing.body.unwrap_err(), "missing field `spec`");

        let port = se(
            "p",
            json!({"hosts": ["p.n.global"], "ports": [{"number": "http"}]}),
        );
        let why = ServiceEntryObject::decode(&port.to_string())
            .body
            .unwrap_err();
        assert!(
            why.starts_with("spec.ports[0].number: invalid value"),
            "{why}"
        );

        // Metadata that does not fit (no API server sends it) still names the object.
        let mut odd = se("o", json!({"hosts": ["o.n.global"]}));
        odd["metadata"]["labels"] = json!({"x": 1});
        let odd = ServiceEntryObject::decode(&odd.to_string());
        assert_eq!(odd.describe(), "n/o");
        assert!(odd
            .body
            .unwrap_err()
            .starts_with("metadata.labels.x: invalid type"));
    }

    #[test]
    fn one_bad_object_does_not_fail_its_list_or_watch_event() {
        let list = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntryList",
            "metadata": {"resourceVersion": "99", "continue": ""},
            "items": [se("a", json!({"hosts": ["a.n.global"]})),
                      se("bad", json!({"hosts": [1, 2]})),
                      se("c", json!({"hosts": ["c.n.global"]}))]
        });
        // As kube's client decodes a page: from the response text.
        let page: ObjectList<ServiceEntryObject> = serde_json::from_str(&list.to_string()).unwrap();
        let ok: Vec<(String, bool)> = page
            .items
            .iter()
            .map(|o| (o.describe(), o.body.is_ok()))
            .collect();
        assert_eq!(
            ok,
            [
                ("n/a".into(), true),
                ("n/bad".into(), false),
                ("n/c".into(), true)
            ]
        );
        let line = json!({"type": "MODIFIED", "object": se("bad", json!({"hosts": "x"}))});
        let ev: WatchEvent<ServiceEntryObject> = serde_json::from_str(&line.to_string()).unwrap();
        let WatchEvent::Modified(o) = ev else {
            panic!("not a MODIFIED event")
        };
        assert_eq!(o.describe(), "n/bad");
        assert!(o.body.is_err());
        // Malformed JSON is no object at all: the page itself fails.
        assert!(serde_json::from_str::<ObjectList<ServiceEntryObject>>(r#"{"items":[{"#).is_err());
    }
}
