//! Kubernetes manifests from typed objects: the `Secret` is k8s-openapi's (`v1_32`), the
//! `ExternalSecret` (external-secrets.io/v1, a CRD that k8s-openapi does not know) the serde structs
//! below, with exactly the fields pgtenant writes. Both are serialised through serde and written as
//! block YAML by [`to_yaml`], so no manifest is assembled from strings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::Value;

/// The label every manifest pgtenant writes carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "pgtenant");

/// `metadata` with `name`, `namespace` and the managed-by label.
pub fn metadata(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY.0.to_owned(),
            MANAGED_BY.1.to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

/// An `Opaque` Secret with `string_data`, in the given key order (kept in the YAML).
pub fn secret(
    name: &str,
    namespace: &str,
    string_data: &[(&str, String)],
) -> (Secret, Vec<String>) {
    let secret = Secret {
        metadata: metadata(name, namespace),
        type_: Some("Opaque".to_owned()),
        string_data: Some(
            string_data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ),
        ..Secret::default()
    };
    (
        secret,
        string_data.iter().map(|(k, _)| (*k).to_owned()).collect(),
    )
}

/// `external-secrets.io/v1` `ExternalSecret`: the fields pgtenant writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecret {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: ExternalSecretSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    pub refresh_interval: String,
    pub secret_store_ref: SecretStoreRef,
    pub target: ExternalSecretTarget,
    pub data: Vec<ExternalSecretData>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretStoreRef {
    pub name: String,
    /// `SecretStore` or `ClusterSecretStore`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalSecretTarget {
    /// The Kubernetes Secret the operator fills.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    pub secret_key: String,
    pub remote_ref: RemoteRef,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteRef {
    /// The secret's name in the provider.
    pub key: String,
    /// The key inside the secret's JSON value.
    pub property: String,
}

impl ExternalSecret {
    pub const API_VERSION: &'static str = "external-secrets.io/v1";
    pub const KIND: &'static str = "ExternalSecret";
}

/// The order keys are written in: Kubernetes' own (apiVersion, kind, metadata, …) and the
/// platform's for Secret data; keys not named here follow, sorted.
const KEY_ORDER: [&str; 16] = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "type",
    "stringData",
    "spec",
    "refreshInterval",
    "secretStoreRef",
    "target",
    "data",
    "secretKey",
    "remoteRef",
    "key",
];

/// `value` (a serialised manifest) as block YAML, mapping keys in [`KEY_ORDER`] and, under a
/// mapping named `ordered.0`, in the order `ordered.1`. Strings are plain where YAML reads them
/// back as the same string, double-quoted (JSON escapes) otherwise.
pub fn to_yaml(value: &impl Serialize, ordered: (&str, &[String])) -> String {
    let value = serde_json::to_value(value).expect("a manifest always serialises");
    let mut out = String::new();
    write_mapping(&mut out, &value, 0, ordered, None);
    out
}

fn rank(key: &str, parent: Option<&str>, ordered: (&str, &[String])) -> (usize, String) {
    if parent == Some("secretStoreRef") && key == "name" {
        return (0, String::new());
    }
    if parent == Some(ordered.0) {
        if let Some(i) = ordered.1.iter().position(|k| k == key) {
            return (i, String::new());
        }
    }
    match KEY_ORDER.iter().position(|k| *k == key) {
        Some(i) => (i, String::new()),
        None => (KEY_ORDER.len(), key.to_owned()),
    }
}

fn write_mapping(
    out: &mut String,
    value: &Value,
    indent: usize,
    ordered: (&str, &[String]),
    parent: Option<&str>,
) {
    let Value::Object(map) = value else {
        unreachable!("manifests are mappings")
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| rank(k, parent, ordered));
    for key in keys {
        let child = &map[key];
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(key));
        out.push(':');
        write_value(out, child, indent, ordered, key);
    }
}

fn write_value(
    out: &mut String,
    value: &Value,
    indent: usize,
    ordered: (&str, &[String]),
    key: &str,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, value, indent + 2, ordered, Some(key));
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str("- ");
                match item {
                    Value::Object(_) => {
                        // The first key on the dash's line, the others aligned under it.
                        let mut nested = String::new();
                        write_mapping(&mut nested, item, indent + 4, ordered, Some(key));
                        out.push_str(nested.trim_start());
                    }
                    other => {
                        out.push_str(&inline(other));
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::String(s) => scalar(s),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

/// A plain scalar when it cannot be read as anything but this string, else double-quoted.
fn scalar(s: &str) -> String {
    let plain = s.len() <= 100
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "./-_".contains(c))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).expect("a string always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_quoted_when_yaml_would_read_them_otherwise() {
        for (given, written) in [
            ("v1", "v1"),
            (
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/managed-by",
            ),
            ("yes", "\"yes\""),
            ("5432", "\"5432\""),
            ("a: b # c", "\"a: b # c\""),
            ("", "\"\""),
            ("~", "\"~\""),
        ] {
            assert_eq!(scalar(given), written);
        }
    }

    #[test]
    fn a_secret_keeps_kubernetes_order_and_the_given_data_order() {
        let (secret, order) = secret("a-b-c", "a", &[("z", "1".into()), ("a", "yes".into())]);
        assert_eq!(
            to_yaml(&secret, ("stringData", &order)),
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a-b-c\n  namespace: a\n  labels:\n    \
             app.kubernetes.io/managed-by: pgtenant\ntype: Opaque\nstringData:\n  z: \"1\"\n  a: \"yes\"\n"
        );
    }
}
