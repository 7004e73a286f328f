//! The top level of a values file: `apiVersion`, `postgresqlDatabases`, the keys that look
//! like them, and later YAML documents.

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{
    describe, string, Format, Mapping, Parser, RawEntry, RawFile, Reading, API_VERSION_KEY,
    DATABASES_KEY,
};
use crate::diagnostic::{shown, Diagnostic};
use crate::model::API_VERSION_V1;
use crate::suggest::closest;

/// What every pgtenant `apiVersion` starts with.
const API_GROUP: &str = "pgtenant.io/";

impl Parser<'_> {
    pub(super) fn top_level(&mut self, top_level: &Mapping, reading: Reading) -> RawFile {
        let mut databases = None;
        let mut api_version = None;
        let mut near_misses = Vec::new();
        for (key, value) in top_level {
            let Some(key_text) = string(key) else {
                continue;
            };
            if key_text == DATABASES_KEY {
                databases = Some((key, value));
            } else if key_text == API_VERSION_KEY {
                api_version = Some(value);
            } else if let Some(meant) = closest(key_text, &[DATABASES_KEY, API_VERSION_KEY]) {
                near_misses.push((key, key_text, meant, value));
            }
        }
        let mut misspelt_databases = false;
        for (key, key_text, meant, value) in near_misses {
            // A misspelt `postgresqlDatabases` would silently declare nothing, and the engine
            // would then see the file's databases as removed: an error, which leaves them
            // alone. Only a plain value is let pass with a warning, as no list of databases was
            // meant there: charts have keys of their own that look alike
            // (`postgresqlDatabase: app`). A misspelt `apiVersion` only matters next to
            // databases, and reads them as legacy, which v1 fields then fail.
            let (what, warn) = match meant {
                DATABASES_KEY => ("databases are only read from that key", is_plain(value)),
                _ if databases.is_some() => ("the format version is only read from that key", true),
                _ => continue,
            };
            let location = self.location(key);
            let message = format!("top-level key `{}` is ignored", shown(key_text));
            let diagnostic = if warn {
                Diagnostic::warning(location, shown(key_text), message)
                    .with_hint(format!("did you mean `{meant}`? {what}"))
            } else {
                misspelt_databases |= meant == DATABASES_KEY;
                Diagnostic::error(location, shown(key_text), message).with_hint(format!(
                    "did you mean `{meant}`? {what}; until it is fixed, the databases this file \
                     declared are left as they are"
                ))
            };
            self.diagnostics.push(diagnostic);
        }
        let Some((key, value)) = databases else {
            // Without databases, `apiVersion` may well be the app's own chart value, unless it
            // names pgtenant's format: then `postgresqlDatabases` went missing.
            if let Some(version) = api_version.filter(|version| names_pgtenant(version)) {
                if !misspelt_databases {
                    self.error(
                        version,
                        API_VERSION_KEY,
                        format!(
                            "`{API_VERSION_KEY}: {}` without `{DATABASES_KEY}`",
                            string(version).map(shown).unwrap_or_default()
                        ),
                        format!(
                            "add `{DATABASES_KEY}:` (`{DATABASES_KEY}: []` declares none), or \
                             remove `{API_VERSION_KEY}` if the file is not pgtenant's; until \
                             then the databases this file declared are left as they are"
                        ),
                    );
                }
            }
            return RawFile::default();
        };
        self.format = match api_version {
            Some(version) => self.api_version(version),
            None if reading == Reading::ForUpgrade => Format::Upgrading,
            None => Format::Legacy,
        };
        RawFile {
            declared_at: Some(self.location(key)),
            format: self.format,
            entries: self.databases(value),
        }
    }

    fn api_version(&mut self, value: &MarkedYaml) -> Format {
        let Some(version) = string(value) else {
            self.error(
                value,
                API_VERSION_KEY,
                format!("expected `{API_VERSION_V1}`, found {}", describe(value)),
                format!("write `{API_VERSION_KEY}: {API_VERSION_V1}`"),
            );
            return Format::Unknown;
        };
        if version == API_VERSION_V1 {
            return Format::V1;
        }
        let hint = match closest(version, &[API_VERSION_V1]) {
            Some(known) => format!("did you mean `{known}`?"),
            None => format!(
                "write `{API_VERSION_KEY}: {API_VERSION_V1}`, or remove the key for the legacy \
                 (chart 1.0.1) format"
            ),
        };
        self.error(
            value,
            API_VERSION_KEY,
            format!(
                "unknown apiVersion `{}`: the supported one is `{API_VERSION_V1}`",
                shown(version)
            ),
            hint,
        );
        Format::Unknown
    }

    pub(super) fn ignored_document(&mut self, document: &MarkedYaml) {
        let YamlData::Mapping(top_level) = &document.data else {
            return;
        };
        for key in top_level.keys() {
            if string(key) == Some(DATABASES_KEY) {
                self.error(
                    key,
                    DATABASES_KEY,
                    format!("`{DATABASES_KEY}` in a second YAML document is not read"),
                    "Helm reads only the first document of a values file: move it above the first `---`"
                        .to_owned(),
                );
            }
        }
    }

    fn databases(&mut self, value: &MarkedYaml) -> Vec<RawEntry> {
        match &value.data {
            YamlData::Value(Scalar::Null) => Vec::new(),
            YamlData::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| self.entry(index, item))
                .collect(),
            _ => {
                self.error(
                    value,
                    DATABASES_KEY,
                    format!("expected a list of databases, found {}", describe(value)),
                    format!("list each database as `- name: <database>` under `{DATABASES_KEY}:`"),
                );
                Vec::new()
            }
        }
    }
}

/// A scalar other than null: under a key that looks like `postgresqlDatabases`, not a list of
/// databases.
fn is_plain(node: &MarkedYaml) -> bool {
    matches!(&node.data, YamlData::Value(scalar) if !matches!(scalar, Scalar::Null))
}

/// An `apiVersion` value that is pgtenant's (`pgtenant.io/…`), supported or not.
fn names_pgtenant(version: &MarkedYaml) -> bool {
    string(version).is_some_and(|text| text.starts_with(API_GROUP))
}
