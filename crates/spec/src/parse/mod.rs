//! YAML text to typed, located values. Only the shape is checked here (types, known fields,
//! enumerated values, number ranges, the fields each format allows); what the values mean
//! (names, duplicates, roles of the preset) is for `validate`.

mod entry;
mod placement;
mod pooling;
mod roles;
mod top_level;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::diagnostic::Diagnostic;
use crate::location::SourceLocation;
use crate::model::{ApiVersion, Environment, Mode, Pooling, Preset, RoleSettings};

pub(crate) use yaml::string;
pub use yaml::{describe, syntax_error};

/// The top-level key databases are read from; the rest of a values file belongs to the app's chart.
pub(crate) const DATABASES_KEY: &str = "postgresqlDatabases";
/// The top-level key that says which format the databases are written in.
pub(crate) const API_VERSION_KEY: &str = "apiVersion";

pub(crate) const NAME: &str = "name";
pub(crate) const MODE: &str = "mode";
/// Chart 0.5.0's boolean, superseded by `mode`; accepted in legacy files, removed in v1.
pub(crate) const LEGACY_PROTECTION: &str = "deletionProtection";
pub(crate) const PRESET: &str = "preset";
pub(crate) const SCHEMAS: &str = "schemas";
pub(crate) const EXTENSIONS: &str = "extensions";
pub(crate) const CONNECTION_LIMIT: &str = "connectionLimit";
pub(crate) const ENVIRONMENT: &str = "environment";
pub(crate) const ROLES: &str = "roles";
pub(crate) const STATEMENT_TIMEOUT: &str = "statementTimeout";
pub(crate) const LOG_STATEMENTS: &str = "logStatements";
pub(crate) const POOLING: &str = "pooling";
pub(crate) const POOL_MODE: &str = "mode";
pub(crate) const POOL_SIZE: &str = "size";
/// The fields of `pooling:`.
pub(crate) const POOLING_FIELDS: [&str; 2] = [POOL_MODE, POOL_SIZE];
pub(crate) const CLUSTER: &str = "cluster";
pub(crate) const PLACEMENT: &str = "placement";
pub(crate) const PLACEMENT_LABELS: &str = "labels";
/// The fields of `placement:`.
pub(crate) const PLACEMENT_FIELDS: [&str; 1] = [PLACEMENT_LABELS];

/// The fields of a legacy entry (no `apiVersion`), as chart 1.0.1 and 0.5.0 wrote them.
pub(crate) const LEGACY_FIELDS: [&str; 3] = [NAME, MODE, LEGACY_PROTECTION];
/// The fields of a v1 entry.
pub(crate) const V1_FIELDS: [&str; 11] = [
    NAME,
    MODE,
    PRESET,
    SCHEMAS,
    EXTENSIONS,
    CONNECTION_LIMIT,
    ENVIRONMENT,
    ROLES,
    POOLING,
    CLUSTER,
    PLACEMENT,
];
/// The fields of one role's settings under `roles:`.
pub(crate) const ROLE_FIELDS: [&str; 3] = [CONNECTION_LIMIT, STATEMENT_TIMEOUT, LOG_STATEMENTS];

/// The hint of every v1 field found in a legacy file.
pub(crate) const ADD_API_VERSION_HINT: &str =
    "add `apiVersion: pgtenant.io/v1` at the top of the file (`pgtenant spec upgrade` does it)";

/// What the file is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// As the engine sees it.
    AsWritten,
    /// As `spec upgrade` will write it: a legacy file is read as v1, its `deletionProtection`
    /// converted without a warning (the upgrade replaces it).
    ForUpgrade,
}

/// The format the entries of a file are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Format {
    /// No `apiVersion`: chart 1.0.1's fields and 0.5.0's `deletionProtection` only.
    #[default]
    Legacy,
    /// `apiVersion: pgtenant.io/v1`.
    V1,
    /// A legacy file read for `spec upgrade` ([`Reading::ForUpgrade`]).
    Upgrading,
    /// `apiVersion` is unusable (already reported): fields are read without either format's
    /// rules, so that their own problems are still found without blaming the format.
    Unknown,
}

impl Format {
    fn allows_v1_fields(self) -> bool {
        self != Format::Legacy
    }

    pub(crate) fn api_version(self) -> ApiVersion {
        match self {
            Format::Legacy => ApiVersion::Legacy,
            Format::V1 | Format::Upgrading | Format::Unknown => ApiVersion::V1,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Located<T> {
    pub value: T,
    pub location: SourceLocation,
}

/// One field of an entry. `Invalid` is kept apart from `Absent` so that a field with a wrong
/// type is reported once, not a second time as missing.
#[derive(Debug)]
pub(crate) enum Field<T> {
    Absent,
    /// Present but unusable; already reported.
    Invalid,
    Given(Located<T>),
}

impl<T> Field<T> {
    pub(crate) fn given(&self) -> Option<&T> {
        match self {
            Field::Given(located) => Some(&located.value),
            Field::Absent | Field::Invalid => None,
        }
    }
}

/// One role under an entry's `roles:`.
#[derive(Debug)]
pub(crate) struct RawRole {
    /// The role suffix as written, located at the key.
    pub suffix: Located<String>,
    /// Field path of the role, e.g. `postgresqlDatabases[0].roles.write`.
    pub path: String,
    /// The usable settings; unusable ones are reported and left unset.
    pub settings: RoleSettings,
}

/// One item of `postgresqlDatabases`.
#[derive(Debug)]
pub(crate) struct RawEntry {
    /// Field path of the entry, e.g. `postgresqlDatabases[2]`.
    pub path: String,
    pub location: SourceLocation,
    /// Located at the value.
    pub name: Field<String>,
    pub mode: Field<Mode>,
    /// Located at the key, which is what a deprecation warning points at.
    pub deletion_protection: Field<bool>,
    pub preset: Field<Preset>,
    /// Each name with its index in the list, located at its value; items that are not strings
    /// are reported and left out.
    pub schemas: Field<Vec<(usize, Located<String>)>>,
    pub extensions: Field<Vec<(usize, Located<String>)>>,
    pub connection_limit: Field<i32>,
    pub environment: Field<Environment>,
    pub roles: Field<Vec<RawRole>>,
    pub pooling: Field<Pooling>,
    /// `cluster:`, located at its value.
    pub cluster: Field<String>,
    /// `placement.labels`.
    pub placement: Field<BTreeMap<String, String>>,
}

#[derive(Debug, Default)]
pub(crate) struct RawFile {
    /// Where the `postgresqlDatabases` key is; `None` when the file does not declare databases.
    pub declared_at: Option<SourceLocation>,
    pub format: Format,
    pub entries: Vec<RawEntry>,
}

/// Reads the databases part of one values file. Problems go to `diagnostics`; whatever could
/// be read is returned regardless, so that later checks can still report on it.
pub(crate) fn parse(
    file: &Path,
    text: &str,
    reading: Reading,
    diagnostics: &mut Vec<Diagnostic>,
) -> RawFile {
    let documents = match MarkedYaml::load_from_str(text) {
        Ok(documents) => documents,
        Err(error) => {
            diagnostics.push(syntax_error(file, &error));
            return RawFile::default();
        }
    };
    let mut parser = Parser {
        file,
        diagnostics,
        format: Format::Legacy,
    };
    let mut documents = documents.iter();
    let raw = match documents.next() {
        Some(document) => match &document.data {
            YamlData::Mapping(top_level) => parser.top_level(top_level, reading),
            // A file of comments only, or an explicit `~`: nothing declared.
            YamlData::Value(Scalar::Null) => RawFile::default(),
            // Helm refuses such a file too; what it declared is unknown.
            _ => {
                parser.error(
                    document,
                    "",
                    format!(
                        "a values file must be a mapping of keys, found {}",
                        describe(document)
                    ),
                    format!(
                        "write the file as keys and values, databases under `{DATABASES_KEY}:`; \
                         until then the databases it declared are left as they are"
                    ),
                );
                RawFile::default()
            }
        },
        // An empty file.
        None => RawFile::default(),
    };
    for document in documents {
        parser.ignored_document(document);
    }
    raw
}

struct Parser<'a> {
    file: &'a Path,
    diagnostics: &'a mut Vec<Diagnostic>,
    format: Format,
}

type Mapping<'input> = saphyr::AnnotatedMapping<'input, MarkedYaml<'input>>;

pub(crate) fn mode_of(protected: bool) -> Mode {
    if protected {
        Mode::Protected
    } else {
        Mode::Standard
    }
}

/// "`a`, `b` and `c`".
pub fn listed(items: &[&str], conjunction: &str) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("`{item}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} {conjunction} {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests;
