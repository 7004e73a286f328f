use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::diagnostic::{self, Diagnostic};
use crate::file::check_file;
use crate::location::SourceLocation;
use crate::model::DatabaseSpec;
use crate::validate::collisions;

/// Names of the files databases are declared in, as Helm charts name their values.
const VALUES_FILES: [&str; 2] = ["values.yaml", "values.yml"];

/// Everything read from an apps repo.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LoadedRepo {
    /// Databases of the files without errors, sorted by namespace then name.
    pub databases: Vec<DatabaseSpec>,
    /// Every problem found, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
    /// Every values file found, relative to the repo root and sorted, including failed ones.
    pub files_read: Vec<PathBuf>,
    /// Files with at least one error, relative to the repo root and sorted. They contribute no
    /// databases: the tenants they declare are unknown and must be left alone.
    pub failed_files: Vec<PathBuf>,
}

impl LoadedRepo {
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// The repo as a whole cannot be read. Problems with single files are [`Diagnostic`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("apps repo `{}` does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("apps repo `{}` is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// Also raised for a folder inside the repo: the files in it, and so the tenants they
    /// declare, would be unknown without even a file name to blame.
    #[error("cannot read directory `{}`", path.display())]
    UnreadableDirectory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads and validates every `values.yaml` / `values.yml` below `root`, reporting all problems
/// at once.
pub fn load_repo(root: &Path) -> Result<LoadedRepo, SpecError> {
    let files_read = find_values_files(root)?;

    let mut declarations = Vec::new();
    let mut diagnostics = Vec::new();
    for relative in &files_read {
        match read_values_file(root, relative) {
            Ok(text) => {
                let checked = check_file(relative, &text);
                declarations.extend(checked.declarations);
                diagnostics.extend(checked.diagnostics);
            }
            Err(unreadable) => diagnostics.push(unreadable),
        }
    }
    diagnostics.extend(collisions(&declarations));
    diagnostic::sort(&mut diagnostics);

    // Every diagnostic is located in the file it is about, so its file is the one that fails.
    let failed: BTreeSet<&Path> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.location.file.as_path())
        .collect();
    let mut databases: Vec<DatabaseSpec> = declarations
        .into_iter()
        .map(|declaration| declaration.spec)
        .filter(|spec| !failed.contains(spec.location.file.as_path()))
        .collect();
    databases.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let failed_files = failed.into_iter().map(Path::to_path_buf).collect();

    Ok(LoadedRepo {
        databases,
        diagnostics,
        files_read,
        failed_files,
    })
}

/// Every values file of the repo at `root` that [`load_repo`] reads, relative to `root` and
/// sorted: `values.yaml` and `values.yml` below it, skipping dot folders and symlinked folders.
pub fn find_values_files(root: &Path) -> Result<Vec<PathBuf>, SpecError> {
    match fs::metadata(root) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(SpecError::NotADirectory {
                path: root.to_path_buf(),
            })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(SpecError::Missing {
                path: root.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(SpecError::UnreadableDirectory {
                path: root.to_path_buf(),
                source,
            })
        }
    }
    let mut found = Vec::new();
    collect_values_files(root, Path::new(""), &mut found)?;
    Ok(found)
}

/// Collects values files below `dir` (`relative` inside the repo) in sorted order, so that
/// reports are the same on every machine.
fn collect_values_files(
    root: &Path,
    relative: &Path,
    found: &mut Vec<PathBuf>,
) -> Result<(), SpecError> {
    let dir = root.join(relative);
    let unreadable = |source| SpecError::UnreadableDirectory {
        path: dir.clone(),
        source,
    };
    let mut entries = fs::read_dir(&dir)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        // Dot folders are tooling (`.git`, `.github`), not namespaces or apps.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        // `file_type` does not follow symlinks: a linked folder could leave the repo or loop.
        let file_type = entry.file_type().map_err(unreadable)?;
        let path = relative.join(&name);
        if file_type.is_dir() {
            collect_values_files(root, &path, found)?;
        } else if VALUES_FILES.iter().any(|values| name == *values)
            && !(file_type.is_symlink() && entry.path().is_dir())
        {
            found.push(path);
        }
    }
    Ok(())
}

/// The text of the values file `relative` inside the repo at `root`; a file that cannot be read
/// or is not UTF-8 is a diagnostic located at its start.
pub fn read_values_file(root: &Path, relative: &Path) -> Result<String, Diagnostic> {
    let path = root.join(relative);
    let unreadable = |message: String, hint: &str| {
        Diagnostic::error(SourceLocation::file_start(relative), "", message).with_hint(hint)
    };
    let bytes = fs::read(&path).map_err(|error| {
        unreadable(
            format!("cannot read file: {error}"),
            "make the file readable by pgtenant",
        )
    })?;
    String::from_utf8(bytes).map_err(|error| {
        unreadable(
            format!("file is not valid UTF-8: {error}"),
            "save the file as UTF-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use tempfile::TempDir;

    use super::*;
    use crate::model::Mode;

    fn repo(files: &[(&str, &str)]) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    fn tenants(loaded: &LoadedRepo) -> Vec<(String, Mode)> {
        loaded
            .databases
            .iter()
            .map(|d| (d.tenant_id(), d.mode))
            .collect()
    }

    fn paths(items: &[&str]) -> Vec<PathBuf> {
        items.iter().map(PathBuf::from).collect()
    }

    fn rendered(loaded: &LoadedRepo) -> Vec<String> {
        loaded.diagnostics.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn loads_a_healthy_repo() {
        let dir = repo(&[
            (
                "idp-dev/my-app/values.yaml",
                "image: app\npostgresqlDatabases:\n  - name: orders\n  - name: billing\n    mode: protected\n",
            ),
            ("idp-dev/my-app/deep/er/values.yml", "postgresqlDatabases:\n  - name: nested\n"),
            ("billing/values.yaml", "postgresqlDatabases:\n  - name: ledger\n"),
            ("billing/web/values.yaml", "image: web\nreplicas: 3\n"),
            ("billing/empty/values.yaml", ""),
            ("billing/none/values.yaml", "postgresqlDatabases: []\n"),
            ("billing/web/other.yaml", "postgresqlDatabases:\n  - name: not-read\n"),
            ("README.md", "# apps\n"),
        ]);
        let loaded = load_repo(dir.path()).unwrap();
        assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
        assert!(!loaded.has_errors());
        assert_eq!(
            tenants(&loaded),
            [
                ("billing/ledger".to_owned(), Mode::Standard),
                ("idp-dev/billing".to_owned(), Mode::Protected),
                ("idp-dev/nested".to_owned(), Mode::Standard),
                ("idp-dev/orders".to_owned(), Mode::Standard),
            ]
        );
        assert_eq!(
            loaded.files_read,
            paths(&[
                "billing/empty/values.yaml",
                "billing/none/values.yaml",
                "billing/values.yaml",
                "billing/web/values.yaml",
                "idp-dev/my-app/deep/er/values.yml",
                "idp-dev/my-app/values.yaml",
            ])
        );
        assert!(loaded.failed_files.is_empty());
        assert_eq!(
            loaded.databases[3].location.to_string(),
            "idp-dev/my-app/values.yaml:3:11"
        );
    }

    #[test]
    fn skips_dot_folders_and_symlinked_folders() {
        let dir = repo(&[
            (
                ".git/ns/values.yaml",
                "postgresqlDatabases:\n  - name: hidden\n",
            ),
            (
                "ns/.cache/values.yaml",
                "postgresqlDatabases:\n  - name: cached\n",
            ),
            (
                "elsewhere/app/values.yaml",
                "postgresqlDatabases:\n  - name: real\n",
            ),
        ]);
        fs::create_dir(dir.path().join("ns")).ok();
        symlink(
            dir.path().join("elsewhere/app"),
            dir.path().join("ns/linked"),
        )
        .unwrap();
        symlink(dir.path().join("elsewhere"), dir.path().join("linked-ns")).unwrap();
        let loaded = load_repo(dir.path()).unwrap();
        assert_eq!(
            tenants(&loaded),
            [("elsewhere/real".to_owned(), Mode::Standard)]
        );
        assert_eq!(loaded.files_read, paths(&["elsewhere/app/values.yaml"]));
    }

    #[test]
    fn legacy_fields_warn_without_failing() {
        let dir = repo(&[(
            "ns/app/values.yaml",
            "postgresqlDatabases:\n  - name: db\n    deletionProtection: true\n",
        )]);
        let loaded = load_repo(dir.path()).unwrap();
        assert!(!loaded.has_errors());
        assert_eq!(loaded.warnings().count(), 1);
        assert_eq!(tenants(&loaded), [("ns/db".to_owned(), Mode::Protected)]);
    }

    #[test]
    fn duplicates_across_files_fail_both_files() {
        let dir = repo(&[
            (
                "ns/a/values.yaml",
                "postgresqlDatabases:\n  - name: shared\n  - name: only-a\n",
            ),
            (
                "ns/b/values.yaml",
                "image: b\npostgresqlDatabases:\n  - name: shared\n",
            ),
            ("ns/c/values.yaml", "postgresqlDatabases:\n  - name: fine\n"),
            (
                "other/a/values.yaml",
                "postgresqlDatabases:\n  - name: shared\n",
            ),
        ]);
        let loaded = load_repo(dir.path()).unwrap();
        assert_eq!(
            rendered(&loaded),
            [
                "error: ns/a/values.yaml:2:11: postgresqlDatabases[0].name: database `ns/shared` is declared more than once, also at ns/b/values.yaml:3:11\n  help: keep one declaration and remove the others; until then none of the files involved is applied",
                "error: ns/b/values.yaml:3:11: postgresqlDatabases[0].name: database `ns/shared` is declared more than once, also at ns/a/values.yaml:2:11\n  help: keep one declaration and remove the others; until then none of the files involved is applied",
            ]
        );
        assert_eq!(
            loaded.failed_files,
            paths(&["ns/a/values.yaml", "ns/b/values.yaml"])
        );
        assert_eq!(
            tenants(&loaded),
            [
                ("ns/fine".to_owned(), Mode::Standard),
                ("other/shared".to_owned(), Mode::Standard),
            ]
        );
    }

    #[test]
    fn a_duplicate_of_a_declaration_in_a_broken_file_still_counts() {
        let dir = repo(&[
            (
                "ns/a/values.yaml",
                "postgresqlDatabases:\n  - name: shared\n    mode: bogus\n",
            ),
            (
                "ns/b/values.yaml",
                "postgresqlDatabases:\n  - name: shared\n",
            ),
        ]);
        let loaded = load_repo(dir.path()).unwrap();
        assert_eq!(
            loaded.failed_files,
            paths(&["ns/a/values.yaml", "ns/b/values.yaml"])
        );
        assert!(loaded.databases.is_empty());
        assert_eq!(loaded.errors().count(), 3);
    }

    #[test]
    fn every_broken_file_is_reported_and_good_files_still_load() {
        let dir = repo(&[
            (
                "a/app/values.yaml",
                "postgresqlDatabases:\n  - name: [oops\n",
            ),
            (
                "b/app/values.yaml",
                "postgresqlDatabases:\n  - name: ok\n  - name: Not_OK\n",
            ),
            (
                "c/app/values.yaml",
                "postgresqlDatabases:\n  - name: fine\n",
            ),
            (
                "d/app/values.yaml",
                "postgresqlDatabases:\n  - name: x\n    mdoe: protected\n",
            ),
        ]);
        fs::create_dir_all(dir.path().join("e/app")).unwrap();
        fs::write(
            dir.path().join("e/app/values.yaml"),
            b"postgresqlDatabases:\n  - name: \xff\n",
        )
        .unwrap();
        let loaded = load_repo(dir.path()).unwrap();
        let files: Vec<&Path> = loaded.errors().map(|d| d.location.file.as_path()).collect();
        assert_eq!(
            files,
            [
                Path::new("a/app/values.yaml"),
                Path::new("b/app/values.yaml"),
                Path::new("d/app/values.yaml"),
                Path::new("e/app/values.yaml"),
            ]
        );
        assert_eq!(
            loaded.failed_files,
            paths(&[
                "a/app/values.yaml",
                "b/app/values.yaml",
                "d/app/values.yaml",
                "e/app/values.yaml",
            ])
        );
        assert_eq!(tenants(&loaded), [("c/fine".to_owned(), Mode::Standard)]);
        assert_eq!(loaded.files_read.len(), 5);
        assert!(loaded
            .errors()
            .any(|d| d.message.starts_with("file is not valid UTF-8")));
    }

    #[test]
    fn a_values_file_at_the_root_is_an_error_only_when_it_declares_databases() {
        let dir = repo(&[("values.yaml", "image: x\n")]);
        assert!(load_repo(dir.path()).unwrap().diagnostics.is_empty());

        let dir = repo(&[("values.yaml", "postgresqlDatabases:\n  - name: x\n")]);
        let loaded = load_repo(dir.path()).unwrap();
        assert_eq!(loaded.failed_files, paths(&["values.yaml"]));
        assert!(loaded.databases.is_empty());
    }

    #[test]
    fn an_unusable_root_is_a_spec_error() {
        let dir = repo(&[("file", "x")]);
        let missing = dir.path().join("missing");
        assert!(matches!(
            load_repo(&missing),
            Err(SpecError::Missing { path }) if path == missing
        ));
        let file = dir.path().join("file");
        let error = load_repo(&file).unwrap_err();
        assert!(matches!(&error, SpecError::NotADirectory { path } if *path == file));
        assert_eq!(
            error.to_string(),
            format!("apps repo `{}` is not a directory", file.display())
        );
    }

    #[test]
    fn an_unreadable_folder_is_a_spec_error() {
        let dir = repo(&[("ns/app/values.yaml", "postgresqlDatabases: []\n")]);
        let locked = dir.path().join("ns");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        // Permissions do not bind root, which CI containers often run as.
        let enforced = fs::read_dir(&locked).is_err();
        let result = load_repo(dir.path());
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        if enforced {
            assert!(matches!(
                result,
                Err(SpecError::UnreadableDirectory { path, .. }) if path == locked
            ));
        }
    }
}
