//! YAML text to typed, located values. Only the shape is checked here (types, known fields,
//! enumerated values, number ranges, the fields each format allows); what the values mean
//! (names, duplicates, roles of the preset) is for `validate`.

use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, ScanError, YamlData};

use crate::diagnostic::{shown, Diagnostic};
use crate::duration::{self, parse_duration_ms, DurationError, MAX_TIMEOUT_MS};
use crate::location::SourceLocation;
use crate::model::{
    ApiVersion, Environment, LogStatements, Mode, Preset, RoleSettings, API_VERSION_V1,
};
use crate::suggest::{closest, closest_word};

/// The top-level key databases are read from; the rest of a values file belongs to the app's chart.
pub(crate) const DATABASES_KEY: &str = "postgresqlDatabases";
/// The top-level key that says which format the databases are written in.
pub(crate) const API_VERSION_KEY: &str = "apiVersion";
/// What every pgtenant `apiVersion` starts with.
const API_GROUP: &str = "pgtenant.io/";

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

/// The fields of a legacy entry (no `apiVersion`), as chart 1.0.1 and 0.5.0 wrote them.
pub(crate) const LEGACY_FIELDS: [&str; 3] = [NAME, MODE, LEGACY_PROTECTION];
/// The fields of a v1 entry.
pub(crate) const V1_FIELDS: [&str; 8] = [
    NAME,
    MODE,
    PRESET,
    SCHEMAS,
    EXTENSIONS,
    CONNECTION_LIMIT,
    ENVIRONMENT,
    ROLES,
];
/// The fields of one role's settings under `roles:`.
pub(crate) const ROLE_FIELDS: [&str; 3] = [CONNECTION_LIMIT, STATEMENT_TIMEOUT, LOG_STATEMENTS];

/// The hint of every v1 field found in a legacy file.
pub(crate) const ADD_API_VERSION_HINT: &str =
    "add `apiVersion: pgtenant.io/v1` at the top of the file (`pgtenant spec upgrade` does it)";

/// saphyr reports a repeated mapping key as a scan error; this is its wording, matched so the
/// user gets a fix that fits.
const SAPHYR_DUPLICATE_KEY: &str = "duplicated key in mapping";

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

pub fn syntax_error(file: &Path, error: &ScanError) -> Diagnostic {
    let location = SourceLocation::at(file, error.marker());
    if error.info() == SAPHYR_DUPLICATE_KEY {
        Diagnostic::error(location, "", "duplicate key in a mapping")
            .with_hint("remove or rename one of the two: YAML readers disagree on which one wins")
    } else {
        Diagnostic::error(location, "", format!("invalid YAML: {}", error.info())).with_hint(
            "fix the YAML syntax at or just before this position (indentation, quotes, brackets)",
        )
    }
}

struct Parser<'a> {
    file: &'a Path,
    diagnostics: &'a mut Vec<Diagnostic>,
    format: Format,
}

type Mapping<'input> = saphyr::AnnotatedMapping<'input, MarkedYaml<'input>>;

impl Parser<'_> {
    fn location(&self, node: &MarkedYaml) -> SourceLocation {
        SourceLocation::at(self.file, &node.span.start)
    }

    fn error(&mut self, node: &MarkedYaml, field: &str, message: String, hint: String) {
        let diagnostic = Diagnostic::error(self.location(node), field, message).with_hint(hint);
        self.diagnostics.push(diagnostic);
    }

    fn given<T>(&self, node: &MarkedYaml, value: T) -> Field<T> {
        Field::Given(Located {
            value,
            location: self.location(node),
        })
    }

    fn top_level(&mut self, top_level: &Mapping, reading: Reading) -> RawFile {
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

    fn ignored_document(&mut self, document: &MarkedYaml) {
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

    fn entry(&mut self, index: usize, node: &MarkedYaml) -> Option<RawEntry> {
        let path = format!("{DATABASES_KEY}[{index}]");
        let YamlData::Mapping(fields) = &node.data else {
            self.error(
                node,
                &path,
                format!("expected a database entry, found {}", describe(node)),
                "write each database as a mapping, e.g. `- name: my-db`".to_owned(),
            );
            return None;
        };
        let mut entry = RawEntry {
            location: self.location(node),
            name: Field::Absent,
            mode: Field::Absent,
            deletion_protection: Field::Absent,
            preset: Field::Absent,
            schemas: Field::Absent,
            extensions: Field::Absent,
            connection_limit: Field::Absent,
            environment: Field::Absent,
            roles: Field::Absent,
            path,
        };
        for (key, value) in fields {
            let Some(name) = string(key) else {
                self.error(
                    key,
                    &entry.path,
                    format!("unexpected key {}", describe(key)),
                    self.allowed_fields(),
                );
                continue;
            };
            let field = format!("{}.{name}", entry.path);
            if V1_FIELDS.contains(&name)
                && !LEGACY_FIELDS.contains(&name)
                && !self.format.allows_v1_fields()
            {
                self.error(
                    key,
                    &field,
                    format!(
                        "`{name}` needs the v1 format, and this file has no `{API_VERSION_KEY}`"
                    ),
                    ADD_API_VERSION_HINT.to_owned(),
                );
            }
            match name {
                NAME => entry.name = self.name(&field, value),
                MODE => entry.mode = self.mode(&field, value),
                LEGACY_PROTECTION if self.format == Format::V1 => {
                    self.removed_deletion_protection(&field, key, value, fields);
                }
                LEGACY_PROTECTION => {
                    entry.deletion_protection = self.deletion_protection(&field, key, value);
                }
                PRESET => entry.preset = self.preset(&field, value),
                SCHEMAS => entry.schemas = self.names(&field, value, NameList::Schemas),
                EXTENSIONS => entry.extensions = self.names(&field, value, NameList::Extensions),
                CONNECTION_LIMIT => entry.connection_limit = self.connection_limit(&field, value),
                ENVIRONMENT => entry.environment = self.environment(&field, value),
                ROLES => entry.roles = self.roles(&field, value),
                unknown => {
                    let meant = self.unknown_field(&entry.path, key, unknown);
                    // `nmae: x` already says what to fix; "missing `name`" on top would be noise.
                    if meant == Some(NAME) && matches!(entry.name, Field::Absent) {
                        entry.name = Field::Invalid;
                    }
                }
            }
        }
        Some(entry)
    }

    /// The fields an entry may have in this file's format.
    fn fields(&self) -> &'static [&'static str] {
        match self.format {
            Format::Legacy => &LEGACY_FIELDS,
            Format::V1 | Format::Upgrading | Format::Unknown => &V1_FIELDS,
        }
    }

    fn allowed_fields(&self) -> String {
        match self.format {
            Format::Legacy => format!(
                "the fields of a database are `{NAME}`, `{MODE}` and the legacy `{LEGACY_PROTECTION}`"
            ),
            Format::V1 | Format::Upgrading | Format::Unknown => {
                format!("the fields of a database are {}", listed(&V1_FIELDS, "and"))
            }
        }
    }

    /// Reports an unknown field; returns the known field it was probably meant to be.
    fn unknown_field(&mut self, entry: &str, key: &MarkedYaml, name: &str) -> Option<&'static str> {
        // Suggest v1 fields in a legacy file too: the v1 error then says how to get them.
        let mut candidates: Vec<&'static str> = V1_FIELDS.to_vec();
        if self.format != Format::V1 {
            candidates.push(LEGACY_PROTECTION);
        }
        let meant = closest(name, &candidates);
        let hint = match meant {
            _ if name == "<<" => {
                "YAML merge keys are not supported here: write the fields out".to_owned()
            }
            Some(known) => format!("did you mean `{known}`?"),
            None if self.format == Format::V1 && closest(name, &[LEGACY_PROTECTION]).is_some() => {
                format!("`{LEGACY_PROTECTION}` was removed in v1: use `mode: protected`")
            }
            None => self.allowed_fields(),
        };
        let name = shown(name);
        self.error(
            key,
            &format!("{entry}.{name}"),
            format!("unknown field `{name}`"),
            hint,
        );
        meant.filter(|known| self.fields().contains(known))
    }

    fn name(&mut self, field: &str, value: &MarkedYaml) -> Field<String> {
        if let Some(name) = string(value) {
            return self.given(value, name.to_owned());
        }
        let hint = match &value.data {
            YamlData::Value(Scalar::Integer(number)) => {
                format!("quote it so YAML reads it as text: `name: \"{number}\"`")
            }
            YamlData::Value(Scalar::Boolean(_) | Scalar::FloatingPoint(_)) => {
                "quote it so YAML reads it as text, e.g. `name: \"my-db\"`".to_owned()
            }
            _ => "give the database a single name, e.g. `name: my-db`".to_owned(),
        };
        self.error(
            value,
            field,
            format!(
                "expected the database name as a string, found {}",
                describe(value)
            ),
            hint,
        );
        Field::Invalid
    }

    fn mode(&mut self, field: &str, value: &MarkedYaml) -> Field<Mode> {
        let options = Mode::ALL.map(|mode| (mode, mode.as_str()));
        self.choice(field, value, MODE, "mode", &options)
    }

    fn preset(&mut self, field: &str, value: &MarkedYaml) -> Field<Preset> {
        let options = Preset::ALL.map(|preset| (preset, preset.as_str()));
        self.choice(field, value, PRESET, "preset", &options)
    }

    fn environment(&mut self, field: &str, value: &MarkedYaml) -> Field<Environment> {
        let options = Environment::ALL.map(|environment| (environment, environment.as_str()));
        self.choice(field, value, ENVIRONMENT, "environment", &options)
    }

    fn log_statements(&mut self, field: &str, value: &MarkedYaml) -> Field<LogStatements> {
        let options = LogStatements::ALL.map(|level| (level, level.as_str()));
        self.choice(
            field,
            value,
            LOG_STATEMENTS,
            "logStatements value",
            &options,
        )
    }

    /// One of a fixed set of words, e.g. `mode: protected`.
    fn choice<T: Copy>(
        &mut self,
        field: &str,
        value: &MarkedYaml,
        key: &str,
        noun: &str,
        options: &[(T, &'static str)],
    ) -> Field<T> {
        let names: Vec<&'static str> = options.iter().map(|(_, name)| *name).collect();
        let expected = listed(&names, "or");
        let Some(text) = string(value) else {
            let hint = match names.as_slice() {
                [one, two] => format!("use `{key}: {one}` or `{key}: {two}`"),
                _ => format!("use one of {expected}, e.g. `{key}: {}`", names[0]),
            };
            self.error(
                value,
                field,
                format!("expected {expected}, found {}", describe(value)),
                hint,
            );
            return Field::Invalid;
        };
        if let Some(&(choice, _)) = options.iter().find(|(_, name)| *name == text) {
            return self.given(value, choice);
        }
        let hint = match closest_word(text, &names) {
            Some(known) => format!("did you mean `{known}`?"),
            None => format!("use {expected}"),
        };
        self.error(
            value,
            field,
            format!("unknown {noun} `{}`: expected {expected}", shown(text)),
            hint,
        );
        Field::Invalid
    }

    fn deletion_protection(
        &mut self,
        field: &str,
        key: &MarkedYaml,
        value: &MarkedYaml,
    ) -> Field<bool> {
        if let YamlData::Value(Scalar::Boolean(protected)) = value.data {
            return self.given(key, protected);
        }
        self.error(
            value,
            field,
            format!("expected `true` or `false`, found {}", describe(value)),
            format!("replace `{LEGACY_PROTECTION}` with `mode: protected` or `mode: standard`"),
        );
        Field::Invalid
    }

    fn removed_deletion_protection(
        &mut self,
        field: &str,
        key: &MarkedYaml,
        value: &MarkedYaml,
        fields: &Mapping,
    ) {
        let has_mode = fields.keys().any(|key| string(key) == Some(MODE));
        let hint = match value.data {
            _ if has_mode => format!("remove `{LEGACY_PROTECTION}`: `mode` replaces it"),
            YamlData::Value(Scalar::Boolean(protected)) => format!(
                "replace `{LEGACY_PROTECTION}: {protected}` with `mode: {}`",
                mode_of(protected).as_str()
            ),
            _ => {
                format!("replace `{LEGACY_PROTECTION}` with `mode: protected` or `mode: standard`")
            }
        };
        self.error(
            key,
            field,
            format!("`{LEGACY_PROTECTION}` was removed in v1; use `mode: protected`"),
            hint,
        );
    }

    /// `connectionLimit`: -1 (no limit) or more, as PostgreSQL's `CONNECTION LIMIT` takes it.
    fn connection_limit(&mut self, field: &str, value: &MarkedYaml) -> Field<i32> {
        let (message, hint) = match &value.data {
            YamlData::Value(Scalar::Integer(number)) => match i32::try_from(*number) {
                Ok(limit) if limit >= -1 => return self.given(value, limit),
                Ok(_) => (
                    format!("connection limit `{number}` is below -1"),
                    "use `-1` for no limit, or the number of connections allowed (0 or more)"
                        .to_owned(),
                ),
                Err(_) if *number < 0 => (
                    format!("connection limit `{number}` is below -1"),
                    "use `-1` for no limit, or the number of connections allowed (0 or more)"
                        .to_owned(),
                ),
                Err(_) => (
                    format!(
                        "connection limit `{number}` is more than PostgreSQL's maximum of {}",
                        i32::MAX
                    ),
                    "use `-1` for no limit".to_owned(),
                ),
            },
            YamlData::Value(Scalar::String(text)) if text.trim().parse::<i64>().is_ok() => (
                format!(
                    "expected a number of connections, found {}",
                    describe(value)
                ),
                format!(
                    "write it without quotes: `{CONNECTION_LIMIT}: {}`",
                    text.trim()
                ),
            ),
            _ => (
                format!(
                    "expected a number of connections, found {}",
                    describe(value)
                ),
                format!("e.g. `{CONNECTION_LIMIT}: 20`, or `-1` for no limit"),
            ),
        };
        self.error(value, field, message, hint);
        Field::Invalid
    }

    /// `schemas` or `extensions`: a list of names. Items that are not strings are reported and
    /// left out; the names themselves are checked in `validate`.
    fn names(
        &mut self,
        field: &str,
        value: &MarkedYaml,
        list: NameList,
    ) -> Field<Vec<(usize, Located<String>)>> {
        let (what, example) = list.describe();
        let key = list.key();
        let YamlData::Sequence(items) = &value.data else {
            let hint = match string(value) {
                Some(one) => format!("write a list, even of one: `{key}: [{}]`", shown(one)),
                None => format!("list them, e.g. `{key}: [{example}]`, or remove `{key}`"),
            };
            self.error(
                value,
                field,
                format!("expected a list of {what} names, found {}", describe(value)),
                hint,
            );
            return Field::Invalid;
        };
        let mut names = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match string(item) {
                Some(name) => names.push((
                    index,
                    Located {
                        value: name.to_owned(),
                        location: self.location(item),
                    },
                )),
                None => {
                    let hint = match &item.data {
                        YamlData::Value(
                            Scalar::Integer(_) | Scalar::Boolean(_) | Scalar::FloatingPoint(_),
                        ) => "quote it so YAML reads it as text".to_owned(),
                        _ => format!("write one name per item, e.g. `{key}: [{example}]`"),
                    };
                    self.error(
                        item,
                        &format!("{field}[{index}]"),
                        format!("expected a {what} name, found {}", describe(item)),
                        hint,
                    );
                }
            }
        }
        self.given(value, names)
    }

    /// `roles`: settings by role suffix. Whether the suffixes are login roles of the preset is
    /// for `validate`, which knows the preset wherever it is written in the entry.
    fn roles(&mut self, field: &str, value: &MarkedYaml) -> Field<Vec<RawRole>> {
        let YamlData::Mapping(roles) = &value.data else {
            self.error(
                value,
                field,
                format!("expected settings by role, found {}", describe(value)),
                format!("e.g. `{ROLES}: {{write: {{{STATEMENT_TIMEOUT}: 30s}}}}`"),
            );
            return Field::Invalid;
        };
        let mut parsed = Vec::new();
        for (key, settings) in roles {
            let Some(suffix) = string(key) else {
                self.error(
                    key,
                    field,
                    format!("expected a role name, found {}", describe(key)),
                    format!(
                        "name the role, e.g. `{ROLES}: {{write: {{{STATEMENT_TIMEOUT}: 30s}}}}`"
                    ),
                );
                continue;
            };
            let path = format!("{field}.{}", shown(suffix));
            let settings = self.role_settings(&path, suffix, settings);
            parsed.push(RawRole {
                suffix: Located {
                    value: suffix.to_owned(),
                    location: self.location(key),
                },
                path,
                settings,
            });
        }
        self.given(value, parsed)
    }

    fn role_settings(&mut self, path: &str, suffix: &str, value: &MarkedYaml) -> RoleSettings {
        let mut settings = RoleSettings::default();
        let YamlData::Mapping(fields) = &value.data else {
            self.error(
                value,
                path,
                format!(
                    "expected the settings of role `{}`, found {}",
                    shown(suffix),
                    describe(value)
                ),
                format!(
                    "e.g. `{}: {{{STATEMENT_TIMEOUT}: 30s}}`, or remove the role",
                    shown(suffix)
                ),
            );
            return settings;
        };
        for (key, value) in fields {
            let Some(name) = string(key) else {
                self.error(
                    key,
                    path,
                    format!("unexpected key {}", describe(key)),
                    role_fields(),
                );
                continue;
            };
            let field = format!("{path}.{name}");
            match name {
                CONNECTION_LIMIT => {
                    settings.connection_limit =
                        self.connection_limit(&field, value).given().copied();
                }
                STATEMENT_TIMEOUT => {
                    settings.statement_timeout_ms =
                        self.statement_timeout(&field, value).given().copied();
                }
                LOG_STATEMENTS => {
                    settings.log_statements = self.log_statements(&field, value).given().copied();
                }
                unknown => {
                    let hint = match closest(unknown, &ROLE_FIELDS) {
                        Some(known) => format!("did you mean `{known}`?"),
                        None => role_fields(),
                    };
                    let unknown = shown(unknown);
                    self.error(
                        key,
                        &format!("{path}.{unknown}"),
                        format!("unknown field `{unknown}`"),
                        hint,
                    );
                }
            }
        }
        settings
    }

    /// `statementTimeout`: a PostgreSQL duration (`30s`) or a number of milliseconds.
    fn statement_timeout(&mut self, field: &str, value: &MarkedYaml) -> Field<u64> {
        const UNITS: &str = "`ms`, `s`, `min`, `h` or `d`";
        let max = format!(
            "PostgreSQL's maximum statement timeout of {MAX_TIMEOUT_MS}ms (about 24.8 days)"
        );
        let (message, hint) = match &value.data {
            YamlData::Value(Scalar::Integer(ms)) => match u64::try_from(*ms) {
                Ok(ms) if ms <= MAX_TIMEOUT_MS => return self.given(value, ms),
                Ok(_) => (
                    format!("`{ms}` milliseconds is more than {max}"),
                    format!("use at most `{MAX_TIMEOUT_MS}` (or `24d`), or `0` for no timeout"),
                ),
                Err(_) => (
                    format!("`{STATEMENT_TIMEOUT}` cannot be negative, found `{ms}`"),
                    "use a duration such as `30s`, or `0` for no timeout".to_owned(),
                ),
            },
            YamlData::Value(Scalar::String(text)) => match parse_duration_ms(text) {
                Ok(ms) => return self.given(value, ms),
                Err(error) => {
                    let text = shown(text);
                    match error {
                        DurationError::NotADuration => (
                            format!(
                                "expected a duration such as `30s` or a number of milliseconds, \
                                 found the string `{text}`"
                            ),
                            format!(
                                "write a whole number with a unit {UNITS} (e.g. `250ms`, `30s`, \
                                 `5min`), or a number of milliseconds"
                            ),
                        ),
                        DurationError::Negative => (
                            format!("`{STATEMENT_TIMEOUT}` cannot be negative, found `{text}`"),
                            "use a duration such as `30s`, or `0` for no timeout".to_owned(),
                        ),
                        DurationError::Fraction { exact_ms } => (
                            format!("`{text}` is not a whole number of its unit"),
                            match exact_ms {
                                Some(ms) => format!("write `{ms}ms`"),
                                None => "use a whole number of a smaller unit (PostgreSQL \
                                         counts statement timeouts in whole milliseconds)"
                                    .to_owned(),
                            },
                        ),
                        DurationError::UnknownUnit { unit, meant } => {
                            let number = text.trim().trim_end_matches(unit.as_str()).trim_end();
                            (
                                format!(
                                    "unknown unit `{}` in `{text}`: PostgreSQL takes {UNITS}",
                                    shown(&unit)
                                ),
                                match meant {
                                    Some(known) => format!("did you mean `{number}{known}`?"),
                                    None => format!("use one of the units {UNITS}"),
                                },
                            )
                        }
                        DurationError::TooLarge => (
                            format!("`{text}` is more than {max}"),
                            match duration::unit_of(&text).and_then(|unit| {
                                duration::max_in_unit(unit).map(|most| (most, unit))
                            }) {
                                Some((most, unit)) => {
                                    format!("use at most `{most}{unit}`, or `0` for no timeout")
                                }
                                None => format!(
                                    "use at most `{MAX_TIMEOUT_MS}` (or `24d`), or `0` for no \
                                     timeout"
                                ),
                            },
                        ),
                    }
                }
            },
            _ => (
                format!(
                    "expected a duration such as `30s` or a number of milliseconds, found {}",
                    describe(value)
                ),
                format!("e.g. `{STATEMENT_TIMEOUT}: 30s`, `{STATEMENT_TIMEOUT}: 5min` or `{STATEMENT_TIMEOUT}: 250`"),
            ),
        };
        self.error(value, field, message, hint);
        Field::Invalid
    }
}

/// The two name lists of an entry.
#[derive(Debug, Clone, Copy)]
enum NameList {
    Schemas,
    Extensions,
}

impl NameList {
    fn key(self) -> &'static str {
        match self {
            NameList::Schemas => SCHEMAS,
            NameList::Extensions => EXTENSIONS,
        }
    }

    /// What one item is, and an example list.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            NameList::Schemas => ("schema", "app, billing"),
            NameList::Extensions => ("extension", "pgcrypto, \"uuid-ossp\""),
        }
    }
}

pub(crate) fn mode_of(protected: bool) -> Mode {
    if protected {
        Mode::Protected
    } else {
        Mode::Standard
    }
}

fn role_fields() -> String {
    format!("the settings of a role are {}", listed(&ROLE_FIELDS, "and"))
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

pub(crate) fn string<'a>(node: &'a MarkedYaml) -> Option<&'a str> {
    match &node.data {
        YamlData::Value(Scalar::String(text)) => Some(text),
        _ => None,
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

/// What a node is, for "expected …, found …" messages.
pub fn describe(node: &MarkedYaml) -> String {
    match &node.data {
        YamlData::Value(Scalar::Null) => "no value".to_owned(),
        YamlData::Value(Scalar::Boolean(value)) => format!("the boolean `{value}`"),
        YamlData::Value(Scalar::Integer(value)) => format!("the number `{value}`"),
        YamlData::Value(Scalar::FloatingPoint(value)) => format!("the number `{value}`"),
        YamlData::Value(Scalar::String(value)) => format!("the string `{}`", shown(value)),
        YamlData::Sequence(_) => "a list".to_owned(),
        YamlData::Mapping(_) => "a mapping".to_owned(),
        YamlData::Tagged(tag, _) => format!("a value tagged `{tag}`"),
        YamlData::Representation(..) | YamlData::Alias(_) | YamlData::BadValue => {
            "a value that could not be read".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "idp-dev/my-db/values.yaml";

    fn parse_text(text: &str) -> (RawFile, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let raw = parse(Path::new(FILE), text, Reading::AsWritten, &mut diagnostics);
        (raw, diagnostics)
    }

    /// The only diagnostic of `text`, as `line:column field: message | hint`.
    fn only_problem(text: &str) -> String {
        let (_, diagnostics) = parse_text(text);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        let d = &diagnostics[0];
        format!(
            "{}:{} {}: {} | {}",
            d.location.line,
            d.location.column,
            d.field,
            d.message,
            d.hint.as_deref().unwrap_or("")
        )
    }

    fn given<T: Copy>(field: &Field<T>) -> Option<T> {
        match field {
            Field::Given(located) => Some(located.value),
            _ => None,
        }
    }

    #[test]
    fn reads_entries_with_locations() {
        let (raw, diagnostics) = parse_text(
            "image: nginx\npostgresqlDatabases:\n  - name: one\n  - name: two\n    mode: protected\n  - {name: three, deletionProtection: true}\n",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        let declared_at = raw.declared_at.unwrap();
        assert_eq!((declared_at.line, declared_at.column), (2, 1));
        assert_eq!(raw.entries.len(), 3);

        let Field::Given(name) = &raw.entries[0].name else {
            panic!("no name: {:?}", raw.entries[0]);
        };
        assert_eq!(name.value, "one");
        assert_eq!(name.location.to_string(), format!("{FILE}:3:11"));
        assert!(matches!(raw.entries[0].mode, Field::Absent));

        assert_eq!(given(&raw.entries[1].mode), Some(Mode::Protected));
        assert_eq!(raw.entries[1].path, "postgresqlDatabases[1]");
        assert_eq!(given(&raw.entries[2].deletion_protection), Some(true));
    }

    #[test]
    fn files_without_databases_declare_nothing() {
        for text in [
            "",
            "# nothing here\n",
            "image: nginx\nreplicas: 2\n",
            "~\n",
            "---\n",
        ] {
            let (raw, diagnostics) = parse_text(text);
            assert!(raw.declared_at.is_none(), "{text:?}");
            assert!(diagnostics.is_empty(), "{text:?}: {diagnostics:#?}");
        }
    }

    #[test]
    fn null_and_empty_lists_declare_no_databases() {
        for text in [
            "postgresqlDatabases:\n",
            "postgresqlDatabases: ~\n",
            "postgresqlDatabases: []\n",
        ] {
            let (raw, diagnostics) = parse_text(text);
            assert!(raw.declared_at.is_some(), "{text:?}");
            assert!(raw.entries.is_empty(), "{text:?}");
            assert!(diagnostics.is_empty(), "{text:?}: {diagnostics:#?}");
        }
    }

    #[test]
    fn unknown_fields_get_a_suggestion() {
        let cases = [
            ("mdoe: standard", "mdoe", "did you mean `mode`?"),
            ("Mode: standard", "Mode", "did you mean `mode`?"),
            ("nmae: x", "nmae", "did you mean `name`?"),
            (
                "deletion_protection: true",
                "deletion_protection",
                "did you mean `deletionProtection`?",
            ),
        ];
        for (line, key, hint) in cases {
            let text = format!("postgresqlDatabases:\n  - name: a\n    {line}\n");
            assert_eq!(
                only_problem(&text),
                format!("3:5 postgresqlDatabases[0].{key}: unknown field `{key}` | {hint}")
            );
        }
    }

    #[test]
    fn unrelated_unknown_fields_list_the_known_ones() {
        assert_eq!(
            only_problem("postgresqlDatabases:\n  - name: a\n    owner: bob\n"),
            "3:5 postgresqlDatabases[0].owner: unknown field `owner` | the fields of a database are `name`, `mode` and the legacy `deletionProtection`"
        );
        assert_eq!(
            only_problem("postgresqlDatabases:\n  - name: a\n    1: x\n"),
            "3:5 postgresqlDatabases[0]: unexpected key the number `1` | the fields of a database are `name`, `mode` and the legacy `deletionProtection`"
        );
        assert_eq!(
            only_problem("base: &b {mode: standard}\npostgresqlDatabases:\n  - name: a\n    <<: *b\n"),
            "4:5 postgresqlDatabases[0].<<: unknown field `<<` | YAML merge keys are not supported here: write the fields out"
        );
    }

    #[test]
    fn wrong_types_are_errors() {
        let cases = [
            (
                "mode: 3",
                "3:11 postgresqlDatabases[0].mode: expected `standard` or `protected`, found the number `3` | use `mode: standard` or `mode: protected`",
            ),
            (
                "deletionProtection: \"yes\"",
                "3:25 postgresqlDatabases[0].deletionProtection: expected `true` or `false`, found the string `yes` | replace `deletionProtection` with `mode: protected` or `mode: standard`",
            ),
            (
                "mode: !strict protected",
                "3:11 postgresqlDatabases[0].mode: expected `standard` or `protected`, found a value tagged `!strict` | use `mode: standard` or `mode: protected`",
            ),
        ];
        for (line, expected) in cases {
            let text = format!("postgresqlDatabases:\n  - name: a\n    {line}\n");
            assert_eq!(only_problem(&text), expected);
        }
    }

    #[test]
    fn a_name_must_be_a_string() {
        assert_eq!(
            only_problem("postgresqlDatabases:\n  - name: [a]\n"),
            "2:11 postgresqlDatabases[0].name: expected the database name as a string, found a list | give the database a single name, e.g. `name: my-db`"
        );
        assert_eq!(
            only_problem("postgresqlDatabases:\n  - name: 123\n"),
            "2:11 postgresqlDatabases[0].name: expected the database name as a string, found the number `123` | quote it so YAML reads it as text: `name: \"123\"`"
        );
        assert_eq!(
            only_problem("postgresqlDatabases:\n  - name:\n"),
            "2:9 postgresqlDatabases[0].name: expected the database name as a string, found no value | give the database a single name, e.g. `name: my-db`"
        );
        let (raw, _) = parse_text("postgresqlDatabases:\n  - name: 123\n");
        assert!(matches!(raw.entries[0].name, Field::Invalid));
        // A misspelt `name` counts as given, so it is not reported missing as well.
        let (raw, _) = parse_text("postgresqlDatabases:\n  - nmae: a\n");
        assert!(matches!(raw.entries[0].name, Field::Invalid));
        let (raw, _) = parse_text("postgresqlDatabases:\n  - nmae: a\n    name: b\n");
        assert!(matches!(raw.entries[0].name, Field::Given(_)));
    }

    #[test]
    fn bad_mode_values_suggest_the_closest() {
        let cases = [
            ("protect", "did you mean `protected`?"),
            ("Protected", "did you mean `protected`?"),
            ("standart", "did you mean `standard`?"),
            ("readonly", "use `standard` or `protected`"),
        ];
        for (value, hint) in cases {
            let text = format!("postgresqlDatabases:\n  - name: a\n    mode: {value}\n");
            assert_eq!(
                only_problem(&text),
                format!("3:11 postgresqlDatabases[0].mode: unknown mode `{value}`: expected `standard` or `protected` | {hint}")
            );
        }
    }

    #[test]
    fn invalid_yaml_reports_where() {
        let problem = only_problem("postgresqlDatabases:\n  - name: [a\n  - name: b\n");
        assert!(problem.starts_with("3:"), "{problem}");
        assert!(problem.contains(" : invalid YAML: "), "{problem}");

        assert_eq!(
            only_problem("image: x\npostgresqlDatabases: [\n"),
            "3:1 : invalid YAML: while parsing a node, did not find expected node content | fix the YAML syntax at or just before this position (indentation, quotes, brackets)"
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        assert_eq!(
            only_problem("postgresqlDatabases:\n  - name: a\n    name: b\n"),
            "3:5 : duplicate key in a mapping | remove or rename one of the two: YAML readers disagree on which one wins"
        );
        let (raw, _) = parse_text("postgresqlDatabases: []\npostgresqlDatabases: []\n");
        assert!(raw.declared_at.is_none());
    }

    #[test]
    fn misshapen_lists_and_entries_are_errors() {
        assert_eq!(
            only_problem("postgresqlDatabases:\n  name: a\n"),
            "2:3 postgresqlDatabases: expected a list of databases, found a mapping | list each database as `- name: <database>` under `postgresqlDatabases:`"
        );
        assert_eq!(
            only_problem("postgresqlDatabases:\n  - my-db\n"),
            "2:5 postgresqlDatabases[0]: expected a database entry, found the string `my-db` | write each database as a mapping, e.g. `- name: my-db`"
        );
    }

    #[test]
    fn databases_in_a_later_document_are_an_error() {
        assert_eq!(
            only_problem("image: x\n---\npostgresqlDatabases:\n  - name: a\n"),
            "3:1 postgresqlDatabases: `postgresqlDatabases` in a second YAML document is not read | Helm reads only the first document of a values file: move it above the first `---`"
        );
    }

    #[test]
    fn a_misspelt_databases_key_is_an_error_in_both_formats() {
        for (text, key) in [
            ("postgresqlDatabase:\n  - name: a\n", "postgresqlDatabase"),
            ("PostgresqlDatabases:\n  - name: a\n", "PostgresqlDatabases"),
            (
                "postgresql_databases:\n  - name: a\n",
                "postgresql_databases",
            ),
            ("postgresqlDatabses: []\n", "postgresqlDatabses"),
            ("postgresqlDatabase:\n", "postgresqlDatabase"),
            ("postgresqlDatabase: {name: a}\n", "postgresqlDatabase"),
            (
                "image: x\npostgresqldatabases:\n  - name: a\n",
                "postgresqldatabases",
            ),
            (
                "apiVersion: pgtenant.io/v1\npostgresqlDatabase:\n  - name: a\n",
                "postgresqlDatabase",
            ),
            (
                "postgresqlDatabases: []\npostgresqlDatabase:\n  - name: a\n",
                "postgresqlDatabase",
            ),
        ] {
            let (raw, diagnostics) = parse_text(text);
            assert!(raw.entries.is_empty(), "{text:?}");
            assert_eq!(diagnostics.len(), 1, "{text:?}: {diagnostics:#?}");
            assert!(diagnostics[0].is_error(), "{text:?}");
            assert_eq!(diagnostics[0].field, key);
            assert_eq!(
                diagnostics[0].message,
                format!("top-level key `{key}` is ignored"),
            );
            assert_eq!(
                diagnostics[0].hint.as_deref(),
                Some("did you mean `postgresqlDatabases`? databases are only read from that key; until it is fixed, the databases this file declared are left as they are"),
            );
        }
    }

    #[test]
    fn a_chart_value_named_like_the_databases_key_is_only_a_warning() {
        // Charts such as Bitnami's postgresql have `postgresqlDatabase: <name>` of their own.
        for text in [
            "postgresqlDatabase: app\n",
            "postgresqlDatabase: \"\"\n",
            "postgresqlDatabase: 3\n",
        ] {
            let (raw, diagnostics) = parse_text(text);
            assert!(raw.declared_at.is_none());
            assert_eq!(diagnostics.len(), 1, "{text:?}");
            assert!(!diagnostics[0].is_error(), "{text:?}");
            assert_eq!(
                diagnostics[0].to_string(),
                format!("warning: {FILE}:1:1: postgresqlDatabase: top-level key `postgresqlDatabase` is ignored\n  help: did you mean `postgresqlDatabases`? databases are only read from that key")
            );
        }
    }

    #[test]
    fn a_v1_file_without_databases_is_an_error() {
        assert_eq!(
            only_problem("apiVersion: pgtenant.io/v1\nimage: x\n"),
            "1:13 apiVersion: `apiVersion: pgtenant.io/v1` without `postgresqlDatabases` | add `postgresqlDatabases:` (`postgresqlDatabases: []` declares none), or remove `apiVersion` if the file is not pgtenant's; until then the databases this file declared are left as they are"
        );
        let (_, diagnostics) = parse_text("apiVersion: pgtenant.io/v2\n");
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].is_error());
        // Other charts' `apiVersion` is theirs.
        for text in ["apiVersion: v2\nimage: x\n", "apiVersion: 2\n"] {
            let (_, diagnostics) = parse_text(text);
            assert!(diagnostics.is_empty(), "{text:?}: {diagnostics:#?}");
        }
        // A misspelt databases key is the one problem reported.
        let (_, diagnostics) = parse_text("apiVersion: pgtenant.io/v1\npostgresqlDatabase: []\n");
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].field, "postgresqlDatabase");
    }

    #[test]
    fn a_top_level_that_is_not_a_mapping_is_an_error() {
        assert_eq!(
            only_problem("- a list\n"),
            "1:1 : a values file must be a mapping of keys, found a list | write the file as keys and values, databases under `postgresqlDatabases:`; until then the databases it declared are left as they are"
        );
        let (_, diagnostics) = parse_text("just a string\n");
        assert_eq!(diagnostics.len(), 1);
        assert!(diagnostics[0].is_error());
    }

    #[test]
    fn hostile_text_cannot_break_report_lines() {
        let problem = only_problem("postgresqlDatabases:\n  - name: a\n    \"x\\ny\": 1\n");
        assert!(!problem.contains('\n'), "{problem}");
        assert!(problem.contains("unknown field `x\\ny`"), "{problem}");
    }

    /// The problems of `fields` in one v1 entry, as `line:column field: message | hint`.
    fn v1_problems(fields: &str) -> Vec<String> {
        let text = format!(
            "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    {fields}\n"
        );
        let (_, diagnostics) = parse_text(&text);
        diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {}: {} | {}",
                    d.location.line,
                    d.location.column,
                    d.field,
                    d.message,
                    d.hint.as_deref().unwrap_or("")
                )
            })
            .collect()
    }

    #[test]
    fn reads_v1_fields_with_locations() {
        let (raw, diagnostics) = parse_text(
            "postgresqlDatabases:\n  - name: shop\n    preset: app-migrator\n    schemas: [billing, app]\n    extensions:\n      - pgcrypto\n      - \"uuid-ossp\"\n    connectionLimit: 50\n    environment: production\n    roles:\n      app: {connectionLimit: 20, statementTimeout: 30s, logStatements: mod}\n      migrator:\n        statementTimeout: 900000\napiVersion: pgtenant.io/v1\n",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        assert_eq!(raw.format, Format::V1);
        let entry = &raw.entries[0];
        assert_eq!(given(&entry.preset), Some(Preset::AppMigrator));
        assert_eq!(given(&entry.environment), Some(Environment::Production));
        assert_eq!(given(&entry.connection_limit), Some(50));
        let Field::Given(schemas) = &entry.schemas else {
            panic!("{entry:?}");
        };
        let schemas: Vec<(usize, &str, String)> = schemas
            .value
            .iter()
            .map(|(index, name)| (*index, name.value.as_str(), name.location.to_string()))
            .collect();
        assert_eq!(
            schemas,
            [
                (0, "billing", format!("{FILE}:4:15")),
                (1, "app", format!("{FILE}:4:24")),
            ]
        );
        let Field::Given(extensions) = &entry.extensions else {
            panic!("{entry:?}");
        };
        assert_eq!(extensions.value[1].1.value, "uuid-ossp");
        assert_eq!(extensions.value[1].1.location.line, 7);
        let Field::Given(roles) = &entry.roles else {
            panic!("{entry:?}");
        };
        let roles: Vec<(&str, &str, &RoleSettings)> = roles
            .value
            .iter()
            .map(|role| {
                (
                    role.suffix.value.as_str(),
                    role.path.as_str(),
                    &role.settings,
                )
            })
            .collect();
        assert_eq!(
            roles,
            [
                (
                    "app",
                    "postgresqlDatabases[0].roles.app",
                    &RoleSettings {
                        connection_limit: Some(20),
                        statement_timeout_ms: Some(30_000),
                        log_statements: Some(LogStatements::Mod),
                    }
                ),
                (
                    "migrator",
                    "postgresqlDatabases[0].roles.migrator",
                    &RoleSettings {
                        statement_timeout_ms: Some(900_000),
                        ..RoleSettings::default()
                    }
                ),
            ]
        );
    }

    #[test]
    fn v1_fields_in_a_legacy_file_say_how_to_get_v1() {
        let (raw, diagnostics) = parse_text(
            "postgresqlDatabases:\n  - name: a\n    preset: idp\n    roles: {write: {connectionLimit: 3}}\n    mode: protected\n",
        );
        assert_eq!(raw.format, Format::Legacy);
        let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                format!("error: {FILE}:3:5: postgresqlDatabases[0].preset: `preset` needs the v1 format, and this file has no `apiVersion`\n  help: add `apiVersion: pgtenant.io/v1` at the top of the file (`pgtenant spec upgrade` does it)"),
                format!("error: {FILE}:4:5: postgresqlDatabases[0].roles: `roles` needs the v1 format, and this file has no `apiVersion`\n  help: add `apiVersion: pgtenant.io/v1` at the top of the file (`pgtenant spec upgrade` does it)"),
            ]
        );
        // The values are still read, so that their own problems are reported at once.
        let (_, diagnostics) =
            parse_text("postgresqlDatabases:\n  - name: a\n    environment: prod\n");
        assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
        assert_eq!(
            diagnostics[1].hint.as_deref(),
            Some("did you mean `production`?")
        );
    }

    #[test]
    fn deletion_protection_was_removed_in_v1() {
        assert_eq!(
            v1_problems("deletionProtection: true"),
            ["4:5 postgresqlDatabases[0].deletionProtection: `deletionProtection` was removed in v1; use `mode: protected` | replace `deletionProtection: true` with `mode: protected`"]
        );
        assert_eq!(
            v1_problems("deletionProtection: false"),
            ["4:5 postgresqlDatabases[0].deletionProtection: `deletionProtection` was removed in v1; use `mode: protected` | replace `deletionProtection: false` with `mode: standard`"]
        );
        assert_eq!(
            v1_problems("mode: protected\n    deletionProtection: true"),
            ["5:5 postgresqlDatabases[0].deletionProtection: `deletionProtection` was removed in v1; use `mode: protected` | remove `deletionProtection`: `mode` replaces it"]
        );
        assert_eq!(
            v1_problems("deletion_protection: true"),
            ["4:5 postgresqlDatabases[0].deletion_protection: unknown field `deletion_protection` | `deletionProtection` was removed in v1: use `mode: protected`"]
        );
    }

    #[test]
    fn the_api_version_must_be_known() {
        let problems = |text: &str| {
            let (raw, diagnostics) = parse_text(text);
            let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            (raw.format, rendered)
        };
        assert_eq!(
            problems("apiVersion: pgtenant.io/v2\npostgresqlDatabases: []\n"),
            (
                Format::Unknown,
                vec![format!("error: {FILE}:1:13: apiVersion: unknown apiVersion `pgtenant.io/v2`: the supported one is `pgtenant.io/v1`\n  help: did you mean `pgtenant.io/v1`?")]
            )
        );
        assert_eq!(
            problems("apiVersion: v2\npostgresqlDatabases: []\n"),
            (
                Format::Unknown,
                vec![format!("error: {FILE}:1:13: apiVersion: unknown apiVersion `v2`: the supported one is `pgtenant.io/v1`\n  help: write `apiVersion: pgtenant.io/v1`, or remove the key for the legacy (chart 1.0.1) format")]
            )
        );
        assert_eq!(
            problems("apiVersion: 1\npostgresqlDatabases: []\n"),
            (
                Format::Unknown,
                vec![format!("error: {FILE}:1:13: apiVersion: expected `pgtenant.io/v1`, found the number `1`\n  help: write `apiVersion: pgtenant.io/v1`")]
            )
        );
        // Without databases, `apiVersion` belongs to the app's chart.
        assert_eq!(
            problems("apiVersion: v2\nimage: x\n"),
            (Format::Legacy, vec![])
        );
        // An unusable version blames neither format: only the fields' own problems are reported.
        let (_, rendered) =
            problems("apiVersion: v2\npostgresqlDatabases:\n  - name: a\n    deletionProtection: true\n    preset: idp\n");
        assert_eq!(rendered.len(), 1, "{rendered:#?}");
    }

    #[test]
    fn a_misspelt_api_version_key_is_a_warning_next_to_databases() {
        let (raw, diagnostics) =
            parse_text("apiversion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n");
        assert_eq!(raw.format, Format::Legacy);
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(
            diagnostics[0].to_string(),
            format!("warning: {FILE}:1:1: apiversion: top-level key `apiversion` is ignored\n  help: did you mean `apiVersion`? the format version is only read from that key")
        );
        let (_, diagnostics) = parse_text("api_version: x\nimage: y\n");
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        // Chart values named like the keys are not mistaken for them.
        let (_, diagnostics) = parse_text("postgresql: {enabled: false}\napi: {replicas: 2}\n");
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    }

    #[test]
    fn enumerated_values_suggest_the_closest() {
        let cases = [
            (
                "preset: app_migrator",
                "4:13 postgresqlDatabases[0].preset: unknown preset `app_migrator`: expected `idp`, `app-migrator` or `schema-owner` | did you mean `app-migrator`?",
            ),
            (
                "preset: migrator",
                "4:13 postgresqlDatabases[0].preset: unknown preset `migrator`: expected `idp`, `app-migrator` or `schema-owner` | use `idp`, `app-migrator` or `schema-owner`",
            ),
            (
                "preset: 1",
                "4:13 postgresqlDatabases[0].preset: expected `idp`, `app-migrator` or `schema-owner`, found the number `1` | use one of `idp`, `app-migrator` or `schema-owner`, e.g. `preset: idp`",
            ),
            (
                "environment: prod",
                "4:18 postgresqlDatabases[0].environment: unknown environment `prod`: expected `production`, `staging`, `test` or `dev` | did you mean `production`?",
            ),
            (
                "environment: Staging",
                "4:18 postgresqlDatabases[0].environment: unknown environment `Staging`: expected `production`, `staging`, `test` or `dev` | did you mean `staging`?",
            ),
            (
                "roles: {read: {logStatements: everything}}",
                "4:35 postgresqlDatabases[0].roles.read.logStatements: unknown logStatements value `everything`: expected `none`, `ddl`, `mod` or `all` | use `none`, `ddl`, `mod` or `all`",
            ),
            (
                "roles: {read: {logStatements: false}}",
                "4:35 postgresqlDatabases[0].roles.read.logStatements: expected `none`, `ddl`, `mod` or `all`, found the boolean `false` | use one of `none`, `ddl`, `mod` or `all`, e.g. `logStatements: none`",
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(v1_problems(fields), [expected], "{fields}");
        }
    }

    #[test]
    fn connection_limits() {
        for (fields, limit) in [
            ("connectionLimit: -1", -1),
            ("connectionLimit: 0", 0),
            ("connectionLimit: 2147483647", i32::MAX),
        ] {
            let text = format!(
                "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    {fields}\n"
            );
            let (raw, diagnostics) = parse_text(&text);
            assert!(diagnostics.is_empty(), "{diagnostics:#?}");
            assert_eq!(given(&raw.entries[0].connection_limit), Some(limit));
        }
        let cases = [
            (
                "connectionLimit: -2",
                "4:22 postgresqlDatabases[0].connectionLimit: connection limit `-2` is below -1 | use `-1` for no limit, or the number of connections allowed (0 or more)",
            ),
            (
                "connectionLimit: -9999999999",
                "4:22 postgresqlDatabases[0].connectionLimit: connection limit `-9999999999` is below -1 | use `-1` for no limit, or the number of connections allowed (0 or more)",
            ),
            (
                "connectionLimit: 2147483648",
                "4:22 postgresqlDatabases[0].connectionLimit: connection limit `2147483648` is more than PostgreSQL's maximum of 2147483647 | use `-1` for no limit",
            ),
            (
                "connectionLimit: \"10\"",
                "4:22 postgresqlDatabases[0].connectionLimit: expected a number of connections, found the string `10` | write it without quotes: `connectionLimit: 10`",
            ),
            (
                "connectionLimit: 2.5",
                "4:22 postgresqlDatabases[0].connectionLimit: expected a number of connections, found the number `2.5` | e.g. `connectionLimit: 20`, or `-1` for no limit",
            ),
            (
                "roles: {write: {connectionLimit: many}}",
                "4:38 postgresqlDatabases[0].roles.write.connectionLimit: expected a number of connections, found the string `many` | e.g. `connectionLimit: 20`, or `-1` for no limit",
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(v1_problems(fields), [expected], "{fields}");
        }
    }

    #[test]
    fn name_lists_must_be_lists_of_strings() {
        let cases = [
            (
                "schemas: app",
                vec!["4:14 postgresqlDatabases[0].schemas: expected a list of schema names, found the string `app` | write a list, even of one: `schemas: [app]`"],
            ),
            (
                "schemas:",
                vec!["4:12 postgresqlDatabases[0].schemas: expected a list of schema names, found no value | list them, e.g. `schemas: [app, billing]`, or remove `schemas`"],
            ),
            (
                "extensions: {pgcrypto: true}",
                vec!["4:17 postgresqlDatabases[0].extensions: expected a list of extension names, found a mapping | list them, e.g. `extensions: [pgcrypto, \"uuid-ossp\"]`, or remove `extensions`"],
            ),
            (
                "schemas: [app, 2024, [x]]",
                vec![
                    "4:20 postgresqlDatabases[0].schemas[1]: expected a schema name, found the number `2024` | quote it so YAML reads it as text",
                    "4:26 postgresqlDatabases[0].schemas[2]: expected a schema name, found a list | write one name per item, e.g. `schemas: [app, billing]`",
                ],
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(v1_problems(fields), expected, "{fields}");
        }
        let (raw, _) = parse_text("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    schemas: [1, app]\n");
        let Field::Given(schemas) = &raw.entries[0].schemas else {
            panic!();
        };
        assert_eq!(schemas.value.len(), 1);
        assert_eq!(schemas.value[0].0, 1, "the index is the item's in the file");
    }

    #[test]
    fn roles_must_be_settings_by_role() {
        let cases = [
            (
                "roles: [write]",
                vec!["4:12 postgresqlDatabases[0].roles: expected settings by role, found a list | e.g. `roles: {write: {statementTimeout: 30s}}`"],
            ),
            (
                "roles: {write: 30s}",
                vec!["4:20 postgresqlDatabases[0].roles.write: expected the settings of role `write`, found the string `30s` | e.g. `write: {statementTimeout: 30s}`, or remove the role"],
            ),
            (
                "roles: {write: {statement_timeout: 30s}}",
                vec!["4:21 postgresqlDatabases[0].roles.write.statement_timeout: unknown field `statement_timeout` | did you mean `statementTimeout`?"],
            ),
            (
                "roles: {write: {password: x}}",
                vec!["4:21 postgresqlDatabases[0].roles.write.password: unknown field `password` | the settings of a role are `connectionLimit`, `statementTimeout` and `logStatements`"],
            ),
            (
                "roles: {1: {}}",
                vec!["4:13 postgresqlDatabases[0].roles: expected a role name, found the number `1` | name the role, e.g. `roles: {write: {statementTimeout: 30s}}`"],
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(v1_problems(fields), expected, "{fields}");
        }
    }

    #[test]
    fn statement_timeouts() {
        let timeout = |value: &str| {
            let text = format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    roles:\n      write:\n        statementTimeout: {value}\n");
            let (raw, diagnostics) = parse_text(&text);
            let Field::Given(roles) = &raw.entries[0].roles else {
                panic!("{diagnostics:#?}");
            };
            let problems: Vec<String> = diagnostics
                .iter()
                .map(|d| format!("{} | {}", d.message, d.hint.as_deref().unwrap_or("")))
                .collect();
            (roles.value[0].settings.statement_timeout_ms, problems)
        };
        for (value, ms) in [
            ("30s", 30_000),
            ("5min", 300_000),
            ("250ms", 250),
            ("1h", 3_600_000),
            ("1500", 1_500),
            ("0", 0),
            ("\"0\"", 0),
            ("2147483647", 2_147_483_647),
        ] {
            assert_eq!(timeout(value), (Some(ms), vec![]), "{value}");
        }
        let cases = [
            ("-1", "`statementTimeout` cannot be negative, found `-1` | use a duration such as `30s`, or `0` for no timeout"),
            ("-5s", "`statementTimeout` cannot be negative, found `-5s` | use a duration such as `30s`, or `0` for no timeout"),
            ("30sec", "unknown unit `sec` in `30sec`: PostgreSQL takes `ms`, `s`, `min`, `h` or `d` | did you mean `30s`?"),
            ("5 m", "unknown unit `m` in `5 m`: PostgreSQL takes `ms`, `s`, `min`, `h` or `d` | did you mean `5min`?"),
            ("2w", "unknown unit `w` in `2w`: PostgreSQL takes `ms`, `s`, `min`, `h` or `d` | use one of the units `ms`, `s`, `min`, `h` or `d`"),
            ("1.5min", "`1.5min` is not a whole number of its unit | write `90000ms`"),
            ("soon", "expected a duration such as `30s` or a number of milliseconds, found the string `soon` | write a whole number with a unit `ms`, `s`, `min`, `h` or `d` (e.g. `250ms`, `30s`, `5min`), or a number of milliseconds"),
            ("30d", "`30d` is more than PostgreSQL's maximum statement timeout of 2147483647ms (about 24.8 days) | use at most `24d`, or `0` for no timeout"),
            ("2147483648", "`2147483648` milliseconds is more than PostgreSQL's maximum statement timeout of 2147483647ms (about 24.8 days) | use at most `2147483647` (or `24d`), or `0` for no timeout"),
            ("99999999999999999999", "expected a duration such as `30s` or a number of milliseconds, found the number `100000000000000000000` | e.g. `statementTimeout: 30s`, `statementTimeout: 5min` or `statementTimeout: 250`"),
            ("1.5", "expected a duration such as `30s` or a number of milliseconds, found the number `1.5` | e.g. `statementTimeout: 30s`, `statementTimeout: 5min` or `statementTimeout: 250`"),
            ("true", "expected a duration such as `30s` or a number of milliseconds, found the boolean `true` | e.g. `statementTimeout: 30s`, `statementTimeout: 5min` or `statementTimeout: 250`"),
        ];
        for (value, expected) in cases {
            assert_eq!(timeout(value), (None, vec![expected.to_owned()]), "{value}");
        }
    }

    #[test]
    fn unknown_fields_in_v1_list_the_v1_fields() {
        assert_eq!(
            v1_problems("owner: bob"),
            ["4:5 postgresqlDatabases[0].owner: unknown field `owner` | the fields of a database are `name`, `mode`, `preset`, `schemas`, `extensions`, `connectionLimit`, `environment` and `roles`"]
        );
        assert_eq!(
            v1_problems("extension: [pgcrypto]"),
            ["4:5 postgresqlDatabases[0].extension: unknown field `extension` | did you mean `extensions`?"]
        );
        assert_eq!(
            v1_problems("connection_limit: 3"),
            ["4:5 postgresqlDatabases[0].connection_limit: unknown field `connection_limit` | did you mean `connectionLimit`?"]
        );
    }
}
