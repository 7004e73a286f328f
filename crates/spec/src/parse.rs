//! YAML text to typed, located values. Only the shape is checked here (types, known fields);
//! what the values mean is for `validate`.

use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, ScanError, YamlData};

use crate::diagnostic::{shown, Diagnostic};
use crate::location::SourceLocation;
use crate::model::Mode;
use crate::suggest::closest;

/// The only top-level key this crate reads; the rest of a values file belongs to the app's chart.
pub(crate) const DATABASES_KEY: &str = "postgresqlDatabases";

const NAME: &str = "name";
const MODE: &str = "mode";
/// Chart 0.5.0's boolean, superseded by `mode`.
pub(crate) const LEGACY_PROTECTION: &str = "deletionProtection";
const FIELDS: [&str; 3] = [NAME, MODE, LEGACY_PROTECTION];

/// saphyr reports a repeated mapping key as a scan error; this is its wording, matched so the
/// user gets a fix that fits.
const SAPHYR_DUPLICATE_KEY: &str = "duplicated key in mapping";

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
}

#[derive(Debug, Default)]
pub(crate) struct RawFile {
    /// Where the `postgresqlDatabases` key is; `None` when the file does not declare databases.
    pub declared_at: Option<SourceLocation>,
    pub entries: Vec<RawEntry>,
}

/// Reads the databases part of one values file. Problems go to `diagnostics`; whatever could
/// be read is returned regardless, so that later checks can still report on it.
pub(crate) fn parse(file: &Path, text: &str, diagnostics: &mut Vec<Diagnostic>) -> RawFile {
    let documents = match MarkedYaml::load_from_str(text) {
        Ok(documents) => documents,
        Err(error) => {
            diagnostics.push(syntax_error(file, &error));
            return RawFile::default();
        }
    };
    let mut parser = Parser { file, diagnostics };
    let mut documents = documents.iter();
    let raw = match documents.next().map(|document| &document.data) {
        Some(YamlData::Mapping(top_level)) => parser.top_level(top_level),
        // Empty files and files whose top level is not a mapping hold no databases.
        _ => RawFile::default(),
    };
    for document in documents {
        parser.ignored_document(document);
    }
    raw
}

fn syntax_error(file: &Path, error: &ScanError) -> Diagnostic {
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

    fn top_level(&mut self, top_level: &Mapping) -> RawFile {
        let mut raw = RawFile::default();
        for (key, value) in top_level {
            let Some(key_text) = string(key) else {
                continue;
            };
            if key_text == DATABASES_KEY {
                raw.declared_at = Some(self.location(key));
                raw.entries = self.databases(value);
            } else if closest(key_text, &[DATABASES_KEY]).is_some() {
                // A misspelt key would silently declare nothing, and the engine would then see
                // the file's databases as removed.
                self.diagnostics.push(
                    Diagnostic::warning(
                        self.location(key),
                        shown(key_text),
                        format!("top-level key `{}` is ignored", shown(key_text)),
                    )
                    .with_hint(format!(
                        "did you mean `{DATABASES_KEY}`? databases are only read from that key"
                    )),
                );
            }
        }
        raw
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
            path,
        };
        for (key, value) in fields {
            match string(key) {
                Some(NAME) => entry.name = self.name(&entry.path, value),
                Some(MODE) => entry.mode = self.mode(&entry.path, value),
                Some(LEGACY_PROTECTION) => {
                    entry.deletion_protection = self.deletion_protection(&entry.path, key, value);
                }
                Some(unknown) => {
                    let meant = self.unknown_field(&entry.path, key, unknown);
                    // `nmae: x` already says what to fix; "missing `name`" on top would be noise.
                    if meant == Some(NAME) && matches!(entry.name, Field::Absent) {
                        entry.name = Field::Invalid;
                    }
                }
                None => self.error(
                    key,
                    &entry.path,
                    format!("unexpected key {}", describe(key)),
                    allowed_fields(),
                ),
            }
        }
        Some(entry)
    }

    /// Reports an unknown field; returns the known field it was probably meant to be.
    fn unknown_field(&mut self, entry: &str, key: &MarkedYaml, name: &str) -> Option<&'static str> {
        let meant = closest(name, &FIELDS);
        let hint = match meant {
            _ if name == "<<" => {
                "YAML merge keys are not supported here: write the fields out".to_owned()
            }
            Some(known) => format!("did you mean `{known}`?"),
            None => allowed_fields(),
        };
        let name = shown(name);
        self.error(
            key,
            &format!("{entry}.{name}"),
            format!("unknown field `{name}`"),
            hint,
        );
        meant
    }

    fn name(&mut self, entry: &str, value: &MarkedYaml) -> Field<String> {
        if let Some(name) = string(value) {
            return Field::Given(Located {
                value: name.to_owned(),
                location: self.location(value),
            });
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
            &format!("{entry}.{NAME}"),
            format!(
                "expected the database name as a string, found {}",
                describe(value)
            ),
            hint,
        );
        Field::Invalid
    }

    fn mode(&mut self, entry: &str, value: &MarkedYaml) -> Field<Mode> {
        let field = format!("{entry}.{MODE}");
        let names = Mode::ALL.map(|mode| mode.as_str());
        let Some(text) = string(value) else {
            self.error(
                value,
                &field,
                format!(
                    "expected `standard` or `protected`, found {}",
                    describe(value)
                ),
                "use `mode: standard` or `mode: protected`".to_owned(),
            );
            return Field::Invalid;
        };
        if let Some(mode) = Mode::ALL.into_iter().find(|mode| mode.as_str() == text) {
            return Field::Given(Located {
                value: mode,
                location: self.location(value),
            });
        }
        let hint = match closest(text, &names) {
            Some(known) => format!("did you mean `{known}`?"),
            None => "use `standard` or `protected`".to_owned(),
        };
        self.error(
            value,
            &field,
            format!(
                "unknown mode `{}`: expected `standard` or `protected`",
                shown(text)
            ),
            hint,
        );
        Field::Invalid
    }

    fn deletion_protection(
        &mut self,
        entry: &str,
        key: &MarkedYaml,
        value: &MarkedYaml,
    ) -> Field<bool> {
        if let YamlData::Value(Scalar::Boolean(protected)) = value.data {
            return Field::Given(Located {
                value: protected,
                location: self.location(key),
            });
        }
        self.error(
            value,
            &format!("{entry}.{LEGACY_PROTECTION}"),
            format!("expected `true` or `false`, found {}", describe(value)),
            format!("replace `{LEGACY_PROTECTION}` with `mode: protected` or `mode: standard`"),
        );
        Field::Invalid
    }
}

fn allowed_fields() -> String {
    format!("the fields of a database are `{NAME}`, `{MODE}` and the legacy `{LEGACY_PROTECTION}`")
}

fn string<'a>(node: &'a MarkedYaml) -> Option<&'a str> {
    match &node.data {
        YamlData::Value(Scalar::String(text)) => Some(text),
        _ => None,
    }
}

/// What a node is, for "expected …, found …" messages.
fn describe(node: &MarkedYaml) -> String {
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
        let raw = parse(Path::new(FILE), text, &mut diagnostics);
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
            "- a list\n",
            "just a string\n",
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
    fn a_misspelt_top_level_key_is_a_warning() {
        let (raw, diagnostics) = parse_text("postgresqlDatabase:\n  - name: a\n");
        assert!(raw.declared_at.is_none());
        assert_eq!(diagnostics.len(), 1);
        assert!(!diagnostics[0].is_error());
        assert_eq!(
            diagnostics[0].to_string(),
            format!("warning: {FILE}:1:1: postgresqlDatabase: top-level key `postgresqlDatabase` is ignored\n  help: did you mean `postgresqlDatabases`? databases are only read from that key")
        );
    }

    #[test]
    fn hostile_text_cannot_break_report_lines() {
        let problem = only_problem("postgresqlDatabases:\n  - name: a\n    \"x\\ny\": 1\n");
        assert!(!problem.contains('\n'), "{problem}");
        assert!(problem.contains("unknown field `x\\ny`"), "{problem}");
    }
}
