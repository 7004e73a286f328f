//! `pgtenant spec upgrade`: a legacy values file to v1, as the smallest textual edit.
//!
//! Values files are written by people and hold the application's own chart values and
//! comments, so they are not re-serialized: the `apiVersion` line is inserted above
//! `postgresqlDatabases`, and each `deletionProtection: true|false` is replaced by
//! `mode: protected|standard` where it stands. Every other byte stays as it is. The positions come
//! from saphyr's node spans; the result is read back and must declare exactly the same databases,
//! or the file is left alone.

use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Marker, Scalar, YamlData};
use serde::Serialize;

use crate::diagnostic::Diagnostic;
use crate::file::{parse_file, parse_file_for};
use crate::location::SourceLocation;
use crate::model::{DatabaseSpec, API_VERSION_V1};
use crate::parse::{
    mode_of, string, syntax_error, Reading, API_VERSION_KEY, DATABASES_KEY, LEGACY_PROTECTION, MODE,
};

/// What [`upgrade`] makes of one values file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Nothing to do; the reason says why.
    Unchanged(Unchanged),
    /// The file's new text, and each edit made to the old one.
    Upgraded { text: String, changes: Vec<Change> },
    /// The file has problems to fix by hand first (errors, and any warnings); it must be left
    /// untouched.
    Failed(Vec<Diagnostic>),
}

/// Why [`upgrade`] left a file as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unchanged {
    /// The file declares no databases (no `postgresqlDatabases`): it is not pgtenant's.
    NoDatabases,
    /// The file says `apiVersion: pgtenant.io/v1` already.
    AlreadyV1,
}

impl Unchanged {
    pub fn as_str(&self) -> &'static str {
        match self {
            Unchanged::NoDatabases => "no-databases",
            Unchanged::AlreadyV1 => "already-v1",
        }
    }
}

/// One edit, located in the text before the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The text replaced; empty for the inserted `apiVersion` line.
    pub before: String,
    /// The text put there.
    pub after: String,
}

/// How the `apiVersion` line reads.
fn api_version_line() -> String {
    format!("{API_VERSION_KEY}: {API_VERSION_V1}")
}

/// The v1 text of a legacy values file: a pure function of its path in the repo (whose first
/// folder is the namespace, as for [`parse_file`]) and its text.
///
/// Upgrading is idempotent: a v1 file is [`Unchanged`]. A file with errors is not upgraded,
/// except for the errors the upgrade removes (fields that need v1, in a file without
/// `apiVersion`). An entry with both `mode` and `deletionProtection` is such an error.
pub fn upgrade(relative: &Path, text: &str) -> Upgrade {
    let documents = match MarkedYaml::load_from_str(text) {
        Ok(documents) => documents,
        Err(error) => return Upgrade::Failed(vec![syntax_error(relative, &error)]),
    };
    let top_level = match documents.first().map(|document| &document.data) {
        Some(YamlData::Mapping(top_level)) => Some(top_level),
        _ => None,
    };
    let top_level_key = |name: &str| {
        top_level.and_then(|top_level| top_level.iter().find(|(key, _)| string(key) == Some(name)))
    };
    let databases = top_level_key(DATABASES_KEY);
    let api_version = top_level_key(API_VERSION_KEY).and_then(|(_, value)| string(value));
    if databases.is_some() && api_version == Some(API_VERSION_V1) {
        return Upgrade::Unchanged(Unchanged::AlreadyV1);
    }
    let (declared, diagnostics) = parse_file_for(relative, text, Reading::ForUpgrade);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Upgrade::Failed(diagnostics);
    }
    let Some((key, entries)) = databases else {
        return Upgrade::Unchanged(Unchanged::NoDatabases);
    };

    let mut editor = Editor::new(relative, text);
    if let Err(problem) = edit(&mut editor, key, entries) {
        return Upgrade::Failed(vec![problem]);
    }
    let (upgraded, changes) = editor.finish();

    // The edit is textual, so check it: the new text must read as v1 without errors and declare
    // exactly the databases the old one did.
    let (read_back, problems) = parse_file(relative, &upgraded);
    if problems.iter().any(Diagnostic::is_error) || !same_databases(&declared, &read_back) {
        return Upgrade::Failed(vec![Diagnostic::error(
            SourceLocation::file_start(relative),
            "",
            "pgtenant cannot upgrade this file safely: its layout is unusual",
        )
        .with_hint(format!(
            "upgrade it by hand: add `{}` above `{DATABASES_KEY}` and replace each \
             `{LEGACY_PROTECTION}: true|false` with `{MODE}: protected|standard`",
            api_version_line()
        ))]);
    }
    Upgrade::Upgraded {
        text: upgraded,
        changes,
    }
}

fn edit(editor: &mut Editor, key: &MarkedYaml, entries: &MarkedYaml) -> Result<(), Diagnostic> {
    editor.insert_api_version(key)?;
    let YamlData::Sequence(entries) = &entries.data else {
        return Ok(());
    };
    for entry in entries {
        let YamlData::Mapping(fields) = &entry.data else {
            continue;
        };
        for (key, value) in fields {
            if string(key) == Some(LEGACY_PROTECTION) {
                editor.replace_deletion_protection(key, value)?;
            }
        }
    }
    Ok(())
}

/// Databases compared without their locations, which move down by the inserted line.
fn same_databases(before: &[DatabaseSpec], after: &[DatabaseSpec]) -> bool {
    let unlocated = |databases: &[DatabaseSpec]| -> Vec<DatabaseSpec> {
        databases
            .iter()
            .map(|database| DatabaseSpec {
                location: SourceLocation::default(),
                ..database.clone()
            })
            .collect()
    };
    unlocated(before) == unlocated(after)
}

/// Collects edits of a text by node positions, then applies them at once.
struct Editor<'a> {
    file: &'a Path,
    text: &'a str,
    /// Byte offset of each character, and the text's length last: saphyr's markers count
    /// characters.
    offsets: Vec<usize>,
    /// (start byte, end byte, replacement, what it was).
    edits: Vec<(usize, usize, String, Change)>,
}

impl<'a> Editor<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        let offsets = text
            .char_indices()
            .map(|(offset, _)| offset)
            .chain([text.len()])
            .collect();
        Editor {
            file,
            text,
            offsets,
            edits: Vec::new(),
        }
    }

    fn offset(&self, marker: &Marker) -> usize {
        self.offsets
            .get(marker.index())
            .copied()
            .unwrap_or(self.text.len())
    }

    fn location(&self, node: &MarkedYaml) -> SourceLocation {
        SourceLocation::at(self.file, &node.span.start)
    }

    /// `apiVersion: pgtenant.io/v1` on a line of its own above the `postgresqlDatabases` key,
    /// indented like it.
    fn insert_api_version(&mut self, key: &MarkedYaml) -> Result<(), Diagnostic> {
        let start = self.offset(&key.span.start);
        let line_start = self.text[..start]
            .rfind(['\n', '\r'])
            .map_or(0, |line_break| line_break + 1);
        let indentation = self.text[line_start..start].trim_start_matches('\u{feff}');
        if !indentation.chars().all(|c| c == ' ') {
            return Err(Diagnostic::error(
                self.location(key),
                DATABASES_KEY,
                format!(
                    "pgtenant cannot add `{API_VERSION_KEY}` here: `{DATABASES_KEY}` does not \
                     start its line"
                ),
            )
            .with_hint(format!(
                "write the top level of the file as a block mapping, or add `{}` by hand",
                api_version_line()
            )));
        }
        let location = self.location(key);
        let line = api_version_line();
        let inserted = format!("{line}{}{indentation}", line_break(self.text));
        self.edits.push((
            start,
            start,
            inserted,
            Change {
                line: location.line,
                column: location.column,
                before: String::new(),
                after: line,
            },
        ));
        Ok(())
    }

    /// `deletionProtection: true` → `mode: protected`, from the key to the end of the value;
    /// what follows (a comment, the rest of a flow mapping) stays.
    fn replace_deletion_protection(
        &mut self,
        key: &MarkedYaml,
        value: &MarkedYaml,
    ) -> Result<(), Diagnostic> {
        let cannot = || {
            Diagnostic::error(
                self.location(key),
                LEGACY_PROTECTION,
                format!("pgtenant cannot replace this `{LEGACY_PROTECTION}` safely"),
            )
            .with_hint(format!(
                "replace it by hand with `{MODE}: protected` (for `true`) or `{MODE}: standard` \
                 (for `false`), then run `pgtenant spec upgrade` again"
            ))
        };
        let YamlData::Value(Scalar::Boolean(protected)) = value.data else {
            return Err(cannot());
        };
        let start = self.offset(&key.span.start);
        let value_start = self.offset(&value.span.start);
        let end = self.offset(&value.span.end);
        if !(start < value_start && value_start < end) {
            return Err(cannot());
        }
        // The spans must cover exactly the key and the literal, or the edit would eat or leave
        // text: check both before trusting them.
        let key_text = &self.text[start..value_start];
        let key_ok = [
            LEGACY_PROTECTION.to_owned(),
            format!("\"{LEGACY_PROTECTION}\""),
            format!("'{LEGACY_PROTECTION}'"),
        ]
        .iter()
        .any(|spelling| {
            key_text
                .strip_prefix(spelling.as_str())
                .is_some_and(|rest| {
                    rest.trim()
                        .strip_prefix(':')
                        .is_some_and(|rest| rest.trim().is_empty())
                })
        });
        let literal = self.text[value_start..end].trim_end();
        let literal = literal
            .strip_prefix("!!bool")
            .map_or(literal, str::trim_start);
        let literal_ok = ["true", "True", "TRUE", "false", "False", "FALSE"].contains(&literal);
        if !key_ok || !literal_ok {
            return Err(cannot());
        }
        let location = self.location(key);
        let after = format!("{MODE}: {}", mode_of(protected).as_str());
        self.edits.push((
            start,
            end,
            after.clone(),
            Change {
                line: location.line,
                column: location.column,
                before: self.text[start..end].to_owned(),
                after,
            },
        ));
        Ok(())
    }

    fn finish(mut self) -> (String, Vec<Change>) {
        self.edits.sort_by_key(|(start, ..)| *start);
        let mut text = String::with_capacity(self.text.len() + 64);
        let mut copied = 0;
        let mut changes = Vec::new();
        for (start, end, replacement, change) in self.edits {
            text.push_str(&self.text[copied..start]);
            text.push_str(&replacement);
            copied = end;
            changes.push(change);
        }
        text.push_str(&self.text[copied..]);
        (text, changes)
    }
}

/// The file's own line break: its first one, or `\n` for a file of one line.
fn line_break(text: &str) -> &'static str {
    match text.find(['\n', '\r']) {
        Some(at) if text[at..].starts_with("\r\n") => "\r\n",
        Some(at) if text[at..].starts_with('\r') => "\r",
        _ => "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ApiVersion, Mode, Preset};

    const FILE: &str = "idp-dev/orders/values.yaml";

    fn upgraded(text: &str) -> (String, Vec<Change>) {
        match upgrade(Path::new(FILE), text) {
            Upgrade::Upgraded { text, changes } => (text, changes),
            other => panic!("not upgraded: {other:#?}"),
        }
    }

    fn failed(text: &str) -> Vec<String> {
        match upgrade(Path::new(FILE), text) {
            Upgrade::Failed(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
            other => panic!("not failed: {other:#?}"),
        }
    }

    #[test]
    fn keeps_every_other_byte() {
        let before = "\
# Orders service values (chart values first).
image:
  repository: registry.example/orders   # pinned
replicaCount: 2

# The databases.
postgresqlDatabases:
  # The main one: never dropped.
  - name: orders
    deletionProtection: true   # prod data!
  - name: orders-archive   # standard
    deletionProtection: false
  - name: scratch
ingress: {enabled: true}
";
        let after = "\
# Orders service values (chart values first).
image:
  repository: registry.example/orders   # pinned
replicaCount: 2

# The databases.
apiVersion: pgtenant.io/v1
postgresqlDatabases:
  # The main one: never dropped.
  - name: orders
    mode: protected   # prod data!
  - name: orders-archive   # standard
    mode: standard
  - name: scratch
ingress: {enabled: true}
";
        let (text, changes) = upgraded(before);
        assert_eq!(text, after);
        assert_eq!(
            changes,
            [
                Change {
                    line: 7,
                    column: 1,
                    before: String::new(),
                    after: "apiVersion: pgtenant.io/v1".into()
                },
                Change {
                    line: 10,
                    column: 5,
                    before: "deletionProtection: true".into(),
                    after: "mode: protected".into()
                },
                Change {
                    line: 12,
                    column: 5,
                    before: "deletionProtection: false".into(),
                    after: "mode: standard".into()
                },
            ]
        );
        let (databases, diagnostics) = parse_file(Path::new(FILE), &text);
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        let modes: Vec<(&str, Mode, ApiVersion)> = databases
            .iter()
            .map(|d| (d.name.as_str(), d.mode, d.api_version))
            .collect();
        assert_eq!(
            modes,
            [
                ("orders", Mode::Protected, ApiVersion::V1),
                ("orders-archive", Mode::Standard, ApiVersion::V1),
                ("scratch", Mode::Standard, ApiVersion::V1),
            ]
        );
    }

    #[test]
    fn is_idempotent() {
        let text = "postgresqlDatabases:\n  - name: a\n    deletionProtection: true\n";
        let (once, _) = upgraded(text);
        assert_eq!(
            upgrade(Path::new(FILE), &once),
            Upgrade::Unchanged(Unchanged::AlreadyV1)
        );
    }

    #[test]
    fn a_file_without_legacy_fields_only_gets_the_api_version() {
        let (text, changes) = upgraded("postgresqlDatabases:\n  - name: a\n    mode: protected\n");
        assert_eq!(
            text,
            "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    mode: protected\n"
        );
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn v1_fields_in_a_legacy_file_are_what_the_upgrade_is_for() {
        let text = "postgresqlDatabases:\n  - name: a\n    preset: app-migrator\n    extensions: [pgcrypto]\n    deletionProtection: true\n";
        let (_, diagnostics) = parse_file(Path::new(FILE), text);
        assert_eq!(
            diagnostics.iter().filter(|d| d.is_error()).count(),
            2,
            "{diagnostics:#?}"
        );
        let (upgraded_text, _) = upgraded(text);
        let (databases, diagnostics) = parse_file(Path::new(FILE), &upgraded_text);
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        assert_eq!(databases[0].preset, Preset::AppMigrator);
        assert_eq!(databases[0].mode, Mode::Protected);
        assert_eq!(databases[0].extensions, ["pgcrypto"]);
    }

    #[test]
    fn keeps_line_breaks_and_byte_order_mark() {
        let (text, _) = upgraded(
            "\u{feff}postgresqlDatabases:\r\n  - name: a\r\n    deletionProtection: true\r\n",
        );
        assert_eq!(
            text,
            "\u{feff}apiVersion: pgtenant.io/v1\r\npostgresqlDatabases:\r\n  - name: a\r\n    mode: protected\r\n"
        );
        let (text, _) = upgraded("postgresqlDatabases:\r  - name: a\r");
        assert_eq!(
            text,
            "apiVersion: pgtenant.io/v1\rpostgresqlDatabases:\r  - name: a\r"
        );
        let (text, _) = upgraded("postgresqlDatabases: [{name: a, deletionProtection: false}]");
        assert_eq!(
            text,
            "apiVersion: pgtenant.io/v1\npostgresqlDatabases: [{name: a, mode: standard}]"
        );
    }

    #[test]
    fn handles_flow_entries_quotes_tags_and_wrapped_values() {
        let text = "\
\"postgresqlDatabases\":
  - {name: 'é-x', deletionProtection: !!bool true}   # é
  - name: b
    'deletionProtection':   TRUE # keep
  - name: c
    deletionProtection:
      false
";
        let (text, _) = upgraded(&text.replace("é-x", "ex"));
        assert_eq!(
            text,
            "\
apiVersion: pgtenant.io/v1
\"postgresqlDatabases\":
  - {name: 'ex', mode: protected}   # é
  - name: b
    mode: protected # keep
  - name: c
    mode: standard
"
        );
    }

    #[test]
    fn keeps_the_indentation_of_an_indented_top_level() {
        let (text, _) = upgraded("  image: x\n  postgresqlDatabases:\n    - name: a\n");
        assert_eq!(
            text,
            "  image: x\n  apiVersion: pgtenant.io/v1\n  postgresqlDatabases:\n    - name: a\n"
        );
    }

    #[test]
    fn unchanged_files() {
        for text in [
            "",
            "# nothing\n",
            "image: x\n",
            "apiVersion: v2\nimage: x\n",
        ] {
            assert_eq!(
                upgrade(Path::new(FILE), text),
                Upgrade::Unchanged(Unchanged::NoDatabases),
                "{text:?}"
            );
        }
        for text in [
            "apiVersion: pgtenant.io/v1\npostgresqlDatabases: []\n",
            "postgresqlDatabases:\n  - name: a\napiVersion: pgtenant.io/v1\n",
            // A v1 file is not the upgrade's business, even a broken one.
            "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    deletionProtection: true\n",
        ] {
            assert_eq!(
                upgrade(Path::new(FILE), text),
                Upgrade::Unchanged(Unchanged::AlreadyV1),
                "{text:?}"
            );
        }
    }

    #[test]
    fn files_with_errors_are_not_upgraded() {
        assert_eq!(
            failed("postgresqlDatabases:\n  - name: a\n    mode: protected\n    deletionProtection: true\n"),
            [format!("error: {FILE}:4:5: postgresqlDatabases[0].deletionProtection: both `mode` and the legacy `deletionProtection` are set\n  help: remove `deletionProtection`: `mode` replaces it")]
        );
        let problems = failed("postgresqlDatabases:\n  - name: [a\n");
        assert!(problems[0].contains("invalid YAML"), "{problems:?}");
        assert_eq!(
            failed("apiVersion: pgtenant.io/v2\npostgresqlDatabases:\n  - name: a\n"),
            [format!("error: {FILE}:1:13: apiVersion: unknown apiVersion `pgtenant.io/v2`: the supported one is `pgtenant.io/v1`\n  help: did you mean `pgtenant.io/v1`?")]
        );
        let problems = failed("postgresqlDatabases:\n  - name: a\n    mdoe: protected\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("did you mean `mode`?"), "{problems:?}");
        // Namespace problems and duplicates are errors of the file too.
        assert_eq!(
            failed("postgresqlDatabases:\n  - name: a\n  - name: a\n").len(),
            2
        );
    }

    #[test]
    fn an_unusual_top_level_is_left_to_the_user() {
        let problems = failed("{postgresqlDatabases: [{name: a}]}\n");
        assert_eq!(
            problems,
            [format!("error: {FILE}:1:2: postgresqlDatabases: pgtenant cannot add `apiVersion` here: `postgresqlDatabases` does not start its line\n  help: write the top level of the file as a block mapping, or add `apiVersion: pgtenant.io/v1` by hand")]
        );
        // A complex key: the replacement would change the structure, which the read-back catches.
        let problems =
            failed("postgresqlDatabases:\n  - name: a\n    ? deletionProtection\n    : true\n");
        assert!(problems[0].contains("cannot"), "{problems:?}");
    }

    #[test]
    fn line_breaks() {
        assert_eq!(line_break("a\r\nb\n"), "\r\n");
        assert_eq!(line_break("a\rb"), "\r");
        assert_eq!(line_break("a\nb\r\n"), "\n");
        assert_eq!(line_break("a"), "\n");
    }
}
