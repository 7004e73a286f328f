use std::path::Path;

use crate::diagnostic::{self, Diagnostic};
use crate::model::DatabaseSpec;
use crate::parse::{parse, Reading};
use crate::validate::{collisions, validate, Declaration};

/// One file checked on its own; collisions are left to the caller, who may see more files.
pub(crate) struct CheckedFile {
    pub declarations: Vec<Declaration>,
    pub diagnostics: Vec<Diagnostic>,
}

pub(crate) fn check_file(relative: &Path, text: &str) -> CheckedFile {
    check_file_for(relative, text, Reading::AsWritten)
}

pub(crate) fn check_file_for(relative: &Path, text: &str, reading: Reading) -> CheckedFile {
    let mut diagnostics = Vec::new();
    let raw = parse(relative, text, reading, &mut diagnostics);
    let declarations = validate(relative, raw, &mut diagnostics);
    CheckedFile {
        declarations,
        diagnostics,
    }
}

/// Parses and validates one values file's text, for unit tests and `spec upgrade`.
///
/// `relative` is the file's path inside the repo; its first component is the namespace.
/// Databases come in file order, and none at all when the file has an error: its tenants are
/// unknown then. Diagnostics are sorted by line and column. Only collisions within this file
/// are found; [`load_repo`](crate::load_repo) also finds them across files.
pub fn parse_file(relative: &Path, text: &str) -> (Vec<DatabaseSpec>, Vec<Diagnostic>) {
    parse_file_for(relative, text, Reading::AsWritten)
}

/// [`parse_file`], read as `reading` says.
pub(crate) fn parse_file_for(
    relative: &Path,
    text: &str,
    reading: Reading,
) -> (Vec<DatabaseSpec>, Vec<Diagnostic>) {
    let CheckedFile {
        declarations,
        mut diagnostics,
    } = check_file_for(relative, text, reading);
    diagnostics.extend(collisions(&declarations));
    diagnostic::sort(&mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return (Vec::new(), diagnostics);
    }
    let databases = declarations
        .into_iter()
        .map(|declaration| declaration.spec)
        .collect();
    (databases, diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;

    #[test]
    fn reads_databases_in_file_order() {
        let text = "\
image: nginx
replicas: 2
postgresqlDatabases:
  - name: zeta
  - name: alpha
    mode: protected
  - name: mid
    mode: standard
ingress:
  enabled: true
";
        let (databases, diagnostics) = parse_file(Path::new("idp-dev/app/values.yaml"), text);
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        let summary: Vec<(String, Mode, String)> = databases
            .iter()
            .map(|d| (d.tenant_id(), d.mode, d.location.to_string()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "idp-dev/zeta".to_owned(),
                    Mode::Standard,
                    "idp-dev/app/values.yaml:4:11".to_owned()
                ),
                (
                    "idp-dev/alpha".to_owned(),
                    Mode::Protected,
                    "idp-dev/app/values.yaml:5:11".to_owned()
                ),
                (
                    "idp-dev/mid".to_owned(),
                    Mode::Standard,
                    "idp-dev/app/values.yaml:7:11".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn one_error_withholds_every_database_of_the_file() {
        let text = "postgresqlDatabases:\n  - name: good\n  - name: Bad\n";
        let (databases, diagnostics) = parse_file(Path::new("ns/app/values.yaml"), text);
        assert!(databases.is_empty());
        assert_eq!(diagnostics.len(), 1);
    }

    #[test]
    fn warnings_do_not_withhold_databases() {
        let text = "postgresqlDatabases:\n  - name: good\n    deletionProtection: true\n";
        let (databases, diagnostics) = parse_file(Path::new("ns/app/values.yaml"), text);
        assert_eq!(databases.len(), 1);
        assert_eq!(diagnostics.len(), 1);
        assert!(!diagnostics[0].is_error());
    }

    #[test]
    fn diagnostics_come_sorted_by_position() {
        let text = "postgresqlDatabases:\n  - name: a\n    mode: x\n  - name: a\n";
        let (_, diagnostics) = parse_file(Path::new("ns/app/values.yaml"), text);
        let lines: Vec<usize> = diagnostics.iter().map(|d| d.location.line).collect();
        assert_eq!(lines, [2, 3, 4]);
    }
}
