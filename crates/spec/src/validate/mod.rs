//! What the parsed values mean: names, lengths, legacy fields and collisions.

mod fields;
mod legacy;
mod names;

use std::collections::BTreeMap;
use std::path::Path;

use crate::diagnostic::Diagnostic;
use crate::model::{ClusterChoice, DatabaseSpec, Preset};
use crate::parse::{Field, Format, RawEntry, RawFile, CLUSTER, NAME};
use fields::{extensions, roles, schemas};
use legacy::{legacy_protection_warning, mode, LegacyUse};
use names::{identifier_too_long, label_hint, label_message, label_problems, namespace};

pub(crate) use names::collisions;
pub use names::is_dns_label;

/// A database as declared, kept with its field path so that collisions found later, possibly
/// across files, can point at it.
#[derive(Debug, Clone)]
pub(crate) struct Declaration {
    pub spec: DatabaseSpec,
    /// Path of the entry's `name`, e.g. `postgresqlDatabases[0].name`.
    pub field: String,
}

/// Checks one parsed file and returns its declarations, including those of a file that has
/// errors: whether a file is applied is decided once collisions across files are known too.
pub(crate) fn validate(
    file: &Path,
    raw: RawFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Declaration> {
    let Some(declared_at) = raw.declared_at else {
        return Vec::new();
    };
    let namespace = namespace(file, declared_at, diagnostics);
    let mut legacy = Vec::new();
    let declarations = raw
        .entries
        .into_iter()
        .filter_map(|entry| {
            validate_entry(
                entry,
                raw.format,
                namespace.as_deref(),
                &mut legacy,
                diagnostics,
            )
        })
        .collect();
    diagnostics.extend(legacy_protection_warning(&legacy));
    declarations
}

fn validate_entry(
    entry: RawEntry,
    format: Format,
    namespace: Option<&str>,
    legacy: &mut Vec<LegacyUse>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Declaration> {
    let mode = mode(&entry, format, legacy, diagnostics);
    // An unusable preset is reported already; what depends on it is not checked further.
    let preset = match &entry.preset {
        Field::Given(preset) => Some(preset.value),
        Field::Absent => Some(Preset::default()),
        Field::Invalid => None,
    };
    let schemas = schemas(&entry, preset, diagnostics);
    let extensions = extensions(&entry, diagnostics);
    let roles = roles(&entry, preset, diagnostics);
    let field = format!("{}.{NAME}", entry.path);
    let name = match entry.name {
        Field::Given(name) => name,
        Field::Invalid => return None,
        Field::Absent => {
            diagnostics.push(
                Diagnostic::error(entry.location, entry.path, "missing field `name`")
                    .with_hint("add `name: <database>` to this entry"),
            );
            return None;
        }
    };
    let problems = label_problems(&name.value);
    if !problems.is_empty() {
        diagnostics.push(
            Diagnostic::error(
                name.location,
                field,
                label_message("database name", &name.value, &problems),
            )
            .with_hint(label_hint("", &name.value)),
        );
        return None;
    }
    let namespace = namespace?;
    if let Some(preset) = preset {
        if let Some(diagnostic) =
            identifier_too_long(namespace, &name.value, preset, &name.location, &field)
        {
            diagnostics.push(diagnostic);
        }
    }
    Some(Declaration {
        spec: DatabaseSpec {
            namespace: namespace.to_owned(),
            name: name.value,
            mode,
            location: name.location,
            api_version: format.api_version(),
            preset: preset.unwrap_or_default(),
            schemas,
            extensions,
            connection_limit: entry.connection_limit.given().copied(),
            environment: entry.environment.given().copied(),
            roles,
            pooling: entry.pooling.given().copied(),
            cluster: match entry.cluster {
                Field::Given(cluster) => Some(ClusterChoice {
                    name: cluster.value,
                    location: cluster.location,
                    field: format!("{}.{CLUSTER}", entry.path),
                }),
                Field::Absent | Field::Invalid => None,
            },
            placement_labels: match entry.placement {
                Field::Given(labels) => labels.value,
                Field::Absent | Field::Invalid => BTreeMap::new(),
            },
        },
        field,
    })
}

#[cfg(test)]
mod tests;
