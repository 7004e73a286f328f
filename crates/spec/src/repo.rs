use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File, FileType};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use serde::Serialize;

use crate::diagnostic::{self, Diagnostic};
use crate::file::check_file;
use crate::location::SourceLocation;
use crate::model::DatabaseSpec;
use crate::validate::{collisions, Declaration};

/// Names of the files databases are declared in, as Helm charts name their values.
pub const VALUES_FILES: [&str; 2] = ["values.yaml", "values.yml"];

/// The largest values file read by default: far above any real values file, small enough that a
/// hostile one (a link to `/dev/zero`, a generated monster) cannot exhaust memory.
pub const DEFAULT_MAX_VALUES_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Overrides [`DEFAULT_MAX_VALUES_FILE_BYTES`]: a positive number of bytes.
pub const MAX_VALUES_FILE_BYTES_ENV: &str = "PGTENANT_MAX_VALUES_FILE_BYTES";

/// How an apps repo is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// A values file larger than this is an error for that file.
    pub max_values_file_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_values_file_bytes: DEFAULT_MAX_VALUES_FILE_BYTES,
        }
    }
}

impl LoadOptions {
    /// The defaults, with [`MAX_VALUES_FILE_BYTES_ENV`] applied when it is set.
    pub fn from_env() -> Result<Self, SpecError> {
        Self::from_env_value(std::env::var_os(MAX_VALUES_FILE_BYTES_ENV).as_deref())
    }

    fn from_env_value(value: Option<&OsStr>) -> Result<Self, SpecError> {
        let Some(value) = value else {
            return Ok(Self::default());
        };
        match value.to_str().map(str::trim).map(str::parse::<u64>) {
            Some(Ok(bytes)) if bytes > 0 => Ok(Self {
                max_values_file_bytes: bytes,
            }),
            _ => Err(SpecError::InvalidOption {
                name: MAX_VALUES_FILE_BYTES_ENV,
                value: value.to_string_lossy().into_owned(),
                expected: "a positive whole number of bytes, e.g. 4194304 for 4 MiB",
            }),
        }
    }
}

/// Everything read from an apps repo.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LoadedRepo {
    /// The repo root as given to [`load_repo`].
    #[serde(skip)]
    pub root: PathBuf,
    /// Databases of the files without errors, sorted by namespace then name.
    pub databases: Vec<DatabaseSpec>,
    /// Every problem found, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
    /// Every values file found, relative to the repo root and sorted, including failed ones.
    pub files_read: Vec<PathBuf>,
    /// Files with at least one error, relative to the repo root and sorted. They contribute no
    /// databases: the tenants they declare are unknown and must be left alone.
    pub failed_files: Vec<PathBuf>,
    /// Values files found but not read, relative to the repo root and sorted: by a
    /// [`load_repo_scoped`], those that can neither declare its tenants nor collide with them.
    /// Their databases and problems are unknown. Empty for a full load.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_read: Vec<PathBuf>,
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

    /// How many values files sit where an apps repo has them, `<namespace>/<folder>/values.yaml`,
    /// broken ones included.
    pub fn app_values_files(&self) -> usize {
        self.files_read
            .iter()
            .chain(&self.not_read)
            .filter(|file| is_app_values_file(file))
            .count()
    }

    /// Whether the root looks like an apps repo at all: at least one values file at
    /// `<namespace>/<folder>/values.yaml`. A project checkout, a home directory or a mistyped
    /// path has none, and reading it as a repo that declares nothing would plan to drop every
    /// tenant. Not checked by [`load_repo`]: the caller decides (an emptied repo is legitimate
    /// when asked for explicitly).
    pub fn ensure_apps_repo(&self) -> Result<(), SpecError> {
        if self.app_values_files() > 0 {
            return Ok(());
        }
        Err(SpecError::NotAnAppsRepo {
            path: self.root.clone(),
        })
    }
}

fn is_app_values_file(relative: &Path) -> bool {
    let components: Vec<Component> = relative.components().collect();
    matches!(
        components.as_slice(),
        [Component::Normal(_), Component::Normal(_), Component::Normal(name)]
            if VALUES_FILES.iter().any(|values| name == values)
    )
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
    /// From [`LoadedRepo::ensure_apps_repo`].
    #[error(
        "no values files under {dir}: is this the apps repo? (expected {dir}/<namespace>/<folder>/values.yaml)",
        dir = path.display()
    )]
    NotAnAppsRepo { path: PathBuf },
    #[error("{name}=`{value}` is not usable: expected {expected}")]
    InvalidOption {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Reads and validates every `values.yaml` / `values.yml` below `root`, reporting all problems
/// at once, with the [`LoadOptions`] of the environment.
pub fn load_repo(root: &Path) -> Result<LoadedRepo, SpecError> {
    load_repo_with(root, &LoadOptions::from_env()?)
}

/// [`load_repo`] with explicit options.
pub fn load_repo_with(root: &Path, options: &LoadOptions) -> Result<LoadedRepo, SpecError> {
    let files_read = find_values_files(root)?;
    let texts = files_read
        .into_iter()
        .map(|relative| {
            let text = read_values_file_with(root, &relative, options);
            (relative, text)
        })
        .collect();
    Ok(load_repo_from_texts(root, texts))
}

/// [`load_repo_with`] for the tenants `scope` only (`namespace/name`, as [`TenantId`] parses
/// them): of the values files found, only those that can declare one of them or collide with one
/// are read, the others are listed in [`LoadedRepo::not_read`]. Databases collide on their name
/// `<namespace>-<name>`, so the files read are those of each namespace that is, up to a `-`, a
/// prefix of a scoped tenant's database name (its own namespace included), and files outside any
/// namespace folder. What is read is checked exactly as a full load checks it: a broken file in
/// the scope is an error, a collision with a prefix namespace is found. An empty scope reads
/// everything.
///
/// [`TenantId`]: crate::TenantId
pub fn load_repo_scoped(
    root: &Path,
    scope: &BTreeSet<String>,
    options: &LoadOptions,
) -> Result<LoadedRepo, SpecError> {
    let databases: Vec<String> = scope.iter().map(|t| t.replacen('/', "-", 1)).collect();
    let (read, not_read): (Vec<PathBuf>, Vec<PathBuf>) = find_values_files(root)?
        .into_iter()
        .partition(|file| scope.is_empty() || can_declare_or_collide(file, &databases));
    let texts = read
        .into_iter()
        .map(|relative| {
            let text = read_values_file_with(root, &relative, options);
            (relative, text)
        })
        .collect();
    Ok(LoadedRepo {
        not_read,
        ..load_repo_from_texts(root, texts)
    })
}

/// Whether the values file `relative` can declare a database named one of `databases`: every
/// database it declares is named `<namespace>-<name>` after its first folder, the namespace.
/// A file outside any namespace folder is always read, and so is a folder whose name is not
/// UTF-8 (it is reported when read).
fn can_declare_or_collide(relative: &Path, databases: &[String]) -> bool {
    let mut components = relative.components();
    let (Some(first), Some(_)) = (components.next(), components.next()) else {
        return true;
    };
    let Some(namespace) = first.as_os_str().to_str() else {
        return true;
    };
    databases.iter().any(|database| {
        database
            .strip_prefix(namespace)
            .is_some_and(|rest| rest.starts_with('-'))
    })
}

/// [`load_repo`] from values files already read (`relative` path, text or why it could not be
/// read), sorted by path: for sources that are not a directory, such as a commit's tree.
pub fn load_repo_from_texts(
    root: &Path,
    texts: Vec<(PathBuf, Result<String, Diagnostic>)>,
) -> LoadedRepo {
    let checked = texts.into_iter().map(|(relative, text)| {
        let checked = CheckedValuesFile::check(&relative, text);
        (relative, checked)
    });
    assemble(root, checked)
}

/// One values file read and checked on its own (its text parsed and validated, or why it
/// could not be read), for a caller that keeps every file's result and re-reads only the files
/// that changed: [`load_repo_from_checked`] then makes the repo of them, collisions across
/// files included, exactly as [`load_repo`] would have.
#[derive(Debug, Clone)]
pub struct CheckedValuesFile {
    declarations: Vec<Declaration>,
    diagnostics: Vec<Diagnostic>,
}

impl CheckedValuesFile {
    /// `text` as [`read_values_file_with`] returned it for `relative`.
    pub fn check(relative: &Path, text: Result<String, Diagnostic>) -> Self {
        match text {
            Ok(text) => {
                let checked = check_file(relative, &text);
                CheckedValuesFile {
                    declarations: checked.declarations,
                    diagnostics: checked.diagnostics,
                }
            }
            Err(unreadable) => CheckedValuesFile {
                declarations: Vec::new(),
                diagnostics: vec![unreadable],
            },
        }
    }
}

/// [`load_repo`] from values files checked one by one ([`CheckedValuesFile`]), sorted by path.
pub fn load_repo_from_checked<'a>(
    root: &Path,
    files: impl IntoIterator<Item = (&'a Path, &'a CheckedValuesFile)>,
) -> LoadedRepo {
    let files = files
        .into_iter()
        .map(|(relative, checked)| (relative.to_path_buf(), checked.clone()));
    assemble(root, files)
}

fn assemble(root: &Path, files: impl Iterator<Item = (PathBuf, CheckedValuesFile)>) -> LoadedRepo {
    let mut declarations = Vec::new();
    let mut diagnostics = Vec::new();
    let mut files_read = Vec::new();
    for (relative, checked) in files {
        declarations.extend(checked.declarations);
        diagnostics.extend(checked.diagnostics);
        files_read.push(relative);
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

    LoadedRepo {
        root: root.to_path_buf(),
        databases,
        diagnostics,
        files_read,
        failed_files,
        not_read: Vec::new(),
    }
}

/// Every values file of the repo at `root` that [`load_repo`] reads, relative to `root` and
/// sorted: every entry named `values.yaml` or `values.yml` below it, whatever its type (a
/// directory or a FIFO of that name is reported when it is read), skipping dot folders and
/// never entering symlinked folders.
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
        let path = relative.join(&name);
        // Whatever carries a values file's name is one: if it cannot be read as one (a
        // directory, a FIFO, a link out of the repo), that is an error for it, which holds the
        // drops its tenants would otherwise suffer.
        if VALUES_FILES.iter().any(|values| name == *values) {
            found.push(path);
            continue;
        }
        // `file_type` does not follow symlinks: a linked folder could leave the repo or loop.
        // Other entries (sockets, devices, links) are not looked at, let alone opened.
        if entry.file_type().map_err(unreadable)?.is_dir() {
            collect_values_files(root, &path, found)?;
        }
    }
    Ok(())
}

/// The text of the values file `relative` inside the repo at `root`, read with the
/// [`LoadOptions`] of the environment; see [`read_values_file_with`].
pub fn read_values_file(root: &Path, relative: &Path) -> Result<String, Diagnostic> {
    let options = LoadOptions::from_env().map_err(|error| {
        Diagnostic::error(SourceLocation::file_start(relative), "", error.to_string()).with_hint(
            format!("unset {MAX_VALUES_FILE_BYTES_ENV} or give it a number of bytes"),
        )
    })?;
    read_values_file_with(root, relative, &options)
}

/// The text of the values file `relative` inside the repo at `root`. Only a regular file inside
/// the repo is read (through symlinks that stay inside it), and at most
/// [`LoadOptions::max_values_file_bytes`] of it; anything else is a diagnostic located at the
/// file's start that never quotes what the file holds.
pub fn read_values_file_with(
    root: &Path,
    relative: &Path,
    options: &LoadOptions,
) -> Result<String, Diagnostic> {
    let refused = |message: String, hint: &str| {
        Diagnostic::error(SourceLocation::file_start(relative), "", message).with_hint(hint)
    };
    if let Some((file, metadata)) = open_beneath(root, relative) {
        return read_opened(file, metadata, false, relative, options);
    }
    let cannot_read =
        |error: io::Error| refused(format!("cannot read file: {error}"), READABLE_HINT);
    let path = root.join(relative);
    let link = fs::symlink_metadata(&path).map_err(cannot_read)?;
    // Every component resolved, so that neither the file nor a folder above it leads out.
    let root = fs::canonicalize(root).map_err(cannot_read)?;
    let resolved =
        match fs::canonicalize(&path) {
            Ok(resolved) => resolved,
            Err(error) if link.file_type().is_symlink() => return Err(refused(
                format!("values file is a symlink that cannot be followed: {error}"),
                "point the symlink at a values file inside the repo, or replace it with the file",
            )),
            Err(error) => return Err(cannot_read(error)),
        };
    if !resolved.starts_with(&root) {
        let what = match link.file_type().is_symlink() {
            true => "values file is a symlink that leads outside the repo",
            false => "values file is outside the repo, through a symlinked folder",
        };
        return Err(refused(
            format!("{what}; pgtenant reads only files inside the apps repo"),
            "replace the symlink with the file itself, or point it at a file inside the repo",
        ));
    }
    let metadata = fs::metadata(&resolved).map_err(cannot_read)?;
    not_a_regular_file(
        metadata.file_type(),
        link.file_type().is_symlink(),
        &refused,
    )?;
    // `resolved` has no symlink left; should one appear in its place, or a FIFO, opening
    // neither follows nor waits, and the open file's own type is what counts.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(&resolved)
        .map_err(cannot_read)?;
    let metadata = file.metadata().map_err(cannot_read)?;
    read_opened(
        file,
        metadata,
        link.file_type().is_symlink(),
        relative,
        options,
    )
}

/// The regular file `relative` inside `root`, opened in one `openat2` call that the kernel
/// confines to the repo (`RESOLVE_BENEATH`: no `..` above it, no absolute symlink, no magic
/// link; symlinks that stay inside are followed) — instead of resolving every component of the
/// path in user space, which at 1,000 values files was most of a scoped run's repo read. None
/// for anything else (no such file, outside the repo, not a regular file, a kernel without
/// `openat2`): the caller's full resolution then reads it or says exactly what is wrong.
fn open_beneath(root: &Path, relative: &Path) -> Option<(File, fs::Metadata)> {
    use nix::fcntl::{openat2, OpenHow, ResolveFlag};
    use std::os::fd::FromRawFd as _;
    let directory = fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_DIRECTORY.bits())
        .open(root)
        .ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(std::os::fd::AsRawFd::as_raw_fd(&directory), relative, how).ok()?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let metadata = file.metadata().ok()?;
    metadata.is_file().then_some((file, metadata))
}

/// The text of an opened values file (`metadata` its own): a regular file of at most the
/// allowed size, UTF-8.
fn read_opened(
    file: File,
    metadata: fs::Metadata,
    through_symlink: bool,
    relative: &Path,
    options: &LoadOptions,
) -> Result<String, Diagnostic> {
    let refused = |message: String, hint: &str| {
        Diagnostic::error(SourceLocation::file_start(relative), "", message).with_hint(hint)
    };
    let cannot_read =
        |error: io::Error| refused(format!("cannot read file: {error}"), READABLE_HINT);
    not_a_regular_file(metadata.file_type(), through_symlink, &refused)?;
    let too_large = |size: String| {
        refused(
            format!(
                "values file is {size}, over the limit of {} bytes",
                options.max_values_file_bytes
            ),
            &format!(
                "values files are small: check what this file holds, or raise the limit with \
                 {MAX_VALUES_FILE_BYTES_ENV}"
            ),
        )
    };
    if metadata.len() > options.max_values_file_bytes {
        return Err(too_large(format!("{} bytes", metadata.len())));
    }
    let bytes =
        read_at_most(file, metadata.len(), options.max_values_file_bytes).map_err(cannot_read)?;
    if bytes.len() as u64 > options.max_values_file_bytes {
        return Err(too_large("larger than that".to_owned()));
    }
    String::from_utf8(bytes).map_err(|error| {
        refused(
            format!("file is not valid UTF-8: {error}"),
            "save the file as UTF-8",
        )
    })
}

const READABLE_HINT: &str = "make the file readable by pgtenant";

/// Up to `limit + 1` bytes of `file`: one more than allowed tells a file over the limit. Room
/// for the `size` it had when opened, and one byte more, makes that one read and the one that
/// finds its end.
fn read_at_most(file: File, size: u64, limit: u64) -> io::Result<Vec<u8>> {
    let room = size.min(limit).saturating_add(1);
    let mut bytes = Vec::with_capacity(usize::try_from(room).unwrap_or(usize::MAX));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// An error unless `file_type` is a regular file's.
fn not_a_regular_file(
    file_type: FileType,
    through_symlink: bool,
    refused: &impl Fn(String, &str) -> Diagnostic,
) -> Result<(), Diagnostic> {
    if file_type.is_file() {
        return Ok(());
    }
    let what = if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    let how = if through_symlink {
        "values file is a symlink to"
    } else {
        "values file is"
    };
    Err(refused(
        format!("{how} {what}, not a regular file"),
        "a values file must be a regular file: replace it with one (its databases are left as \
         they are until then)",
    ))
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

    fn scope(tenants: &[&str]) -> BTreeSet<String> {
        tenants.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_scoped_load_reads_the_namespaces_that_can_collide_and_finds_the_collision() {
        let dir = repo(&[
            // `a/b-c` and `a-b/c` both become the database `a-b-c`.
            ("a/x/values.yaml", "postgresqlDatabases:\n  - name: b-c\n"),
            ("a-b/y/values.yaml", "postgresqlDatabases:\n  - name: c\n"),
            // Another folder of the same namespace is read, a longer namespace is not.
            (
                "a-b/z/values.yaml",
                "postgresqlDatabases:\n  - name: other\n",
            ),
            ("a-bc/w/values.yaml", "postgresqlDatabases:\n  - name: c\n"),
            // Broken, but it can neither declare `a-b/c` nor collide with it.
            (
                "zz/q/values.yaml",
                "postgresqlDatabases:\n  - name: [oops\n",
            ),
        ]);
        let options = LoadOptions::default();
        let scoped = load_repo_scoped(dir.path(), &scope(&["a-b/c"]), &options).unwrap();
        assert_eq!(
            scoped.files_read,
            paths(&["a/x/values.yaml", "a-b/y/values.yaml", "a-b/z/values.yaml"])
        );
        assert_eq!(
            scoped.not_read,
            paths(&["a-bc/w/values.yaml", "zz/q/values.yaml"])
        );
        assert_eq!(
            scoped.failed_files,
            paths(&["a/x/values.yaml", "a-b/y/values.yaml"])
        );
        assert_eq!(tenants(&scoped), [("a-b/other".to_owned(), Mode::Standard)]);
        let full = load_repo_with(dir.path(), &options).unwrap();
        assert!(full.not_read.is_empty());
        // What the scoped load reports is what the full load reports about those files.
        let about_scope = |loaded: &LoadedRepo| -> Vec<String> {
            loaded
                .diagnostics
                .iter()
                .filter(|d| scoped.files_read.contains(&d.location.file))
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(about_scope(&scoped), about_scope(&full));
        assert_eq!(about_scope(&scoped), rendered(&scoped));
        assert!(
            rendered(&scoped)[0].contains("collides with"),
            "{:?}",
            rendered(&scoped)
        );
        // Not read is not lost: the unread files still make the folder an apps repo.
        assert_eq!(scoped.app_values_files(), full.app_values_files());
    }

    #[test]
    fn a_scoped_load_of_a_declared_tenant_equals_the_full_load_of_its_files() {
        let dir = repo(&[
            (
                "shop/cart/values.yaml",
                "postgresqlDatabases:\n  - name: cart\n",
            ),
            (
                "shop/web/values.yaml",
                "postgresqlDatabases:\n  - name: web\n",
            ),
            ("values.yaml", "postgresqlDatabases:\n  - name: x\n"),
            (
                "other/app/values.yaml",
                "postgresqlDatabases:\n  - name: Not_OK\n",
            ),
        ]);
        let options = LoadOptions::default();
        let scoped = load_repo_scoped(dir.path(), &scope(&["shop/cart"]), &options).unwrap();
        assert_eq!(
            tenants(&scoped),
            [
                ("shop/cart".to_owned(), Mode::Standard),
                ("shop/web".to_owned(), Mode::Standard)
            ]
        );
        // A file outside any namespace folder is read: it is reported as a full load reports it.
        assert_eq!(scoped.failed_files, paths(&["values.yaml"]));
        assert_eq!(scoped.not_read, paths(&["other/app/values.yaml"]));
        // No scope: everything, as load_repo_with.
        let all = load_repo_scoped(dir.path(), &BTreeSet::new(), &options).unwrap();
        let full = load_repo_with(dir.path(), &options).unwrap();
        assert_eq!(rendered(&all), rendered(&full));
        assert_eq!(all.files_read, full.files_read);
        assert!(all.not_read.is_empty());
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

    /// The error of `file` in `loaded`, rendered.
    fn error_of(loaded: &LoadedRepo, file: &str) -> String {
        let errors: Vec<String> = loaded
            .errors()
            .filter(|d| d.location.file == Path::new(file))
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 1, "{:#?}", loaded.diagnostics);
        assert!(loaded.failed_files.contains(&PathBuf::from(file)));
        errors.into_iter().next().unwrap()
    }

    const SECRET: &str = "postgresqlDatabases:\n  - name: outside-secret\n";

    #[test]
    fn a_values_file_linked_out_of_the_repo_is_an_error_that_quotes_nothing() {
        let outside = repo(&[("values.yaml", SECRET)]);
        let dir = repo(&[(
            "ns/fine/values.yaml",
            "postgresqlDatabases:\n  - name: fine\n",
        )]);
        fs::create_dir_all(dir.path().join("ns/app")).unwrap();
        symlink(
            outside.path().join("values.yaml"),
            dir.path().join("ns/app/values.yaml"),
        )
        .unwrap();
        // A folder link out of the repo, above a plain name, leads out just the same.
        symlink(outside.path(), dir.path().join("ns/via")).unwrap();
        // So does a relative link that climbs out with `..`.
        fs::create_dir_all(dir.path().join("ns/up")).unwrap();
        let to_root = dir.path().components().count() - 1 + 2;
        let climb =
            Path::new(&"../".repeat(to_root)).join(outside.path().strip_prefix("/").unwrap());
        symlink(&climb, dir.path().join("ns/up/values.yaml")).unwrap();
        let loaded = load_repo(dir.path()).unwrap();
        assert_eq!(
            error_of(&loaded, "ns/app/values.yaml"),
            "error: ns/app/values.yaml:1:1: values file is a symlink that leads outside the repo; pgtenant reads only files inside the apps repo\n  help: replace the symlink with the file itself, or point it at a file inside the repo"
        );
        assert!(error_of(&loaded, "ns/up/values.yaml").contains("leads outside the repo"));
        assert_eq!(tenants(&loaded), [("ns/fine".to_owned(), Mode::Standard)]);
        let via = read_values_file_with(
            dir.path(),
            Path::new("ns/via/values.yaml"),
            &LoadOptions::default(),
        )
        .unwrap_err();
        assert!(via.message.contains("outside the repo"), "{via}");
        let report = format!("{:?}", loaded.diagnostics) + &via.to_string();
        assert!(!report.contains("outside-secret"), "{report}");
    }

    #[test]
    fn a_values_file_linked_inside_the_repo_is_read() {
        let dir = repo(&[("shared/db.yaml", "postgresqlDatabases:\n  - name: linked\n")]);
        fs::create_dir_all(dir.path().join("ns/app")).unwrap();
        symlink(
            "../../shared/db.yaml",
            dir.path().join("ns/app/values.yaml"),
        )
        .unwrap();
        // An absolute link that stays inside (the kernel-confined open refuses those; the full
        // resolution reads it).
        let repo_file = dir.path().join("other/app/values.yaml");
        fs::create_dir_all(repo_file.parent().unwrap()).unwrap();
        fs::write(
            dir.path().join("shared/other.yaml"),
            "postgresqlDatabases:\n  - name: absolute\n",
        )
        .unwrap();
        symlink(dir.path().join("shared/other.yaml"), &repo_file).unwrap();
        let loaded = load_repo(dir.path()).unwrap();
        assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
        assert_eq!(
            tenants(&loaded),
            [
                ("ns/linked".to_owned(), Mode::Standard),
                ("other/absolute".to_owned(), Mode::Standard)
            ]
        );
        // A repo reached through a symlink of its own is still inside itself.
        let link = tempfile::tempdir().unwrap();
        symlink(dir.path(), link.path().join("repo")).unwrap();
        let loaded = load_repo(&link.path().join("repo")).unwrap();
        assert_eq!(tenants(&loaded).len(), 2);
    }

    #[test]
    fn a_values_file_linked_through_proc_is_refused() {
        let outside = repo(&[("values.yaml", SECRET)]);
        let dir = repo(&[]);
        fs::create_dir_all(dir.path().join("ns/app")).unwrap();
        let file = fs::File::open(outside.path().join("values.yaml")).unwrap();
        let magic = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        symlink(&magic, dir.path().join("ns/app/values.yaml")).unwrap();
        let loaded = load_repo(dir.path()).unwrap();
        let error = error_of(&loaded, "ns/app/values.yaml");
        assert!(error.contains("leads outside the repo"), "{error}");
        assert!(!error.contains("outside-secret"), "{error}");
    }

    #[test]
    fn a_dangling_values_file_link_is_an_error() {
        let dir = repo(&[]);
        fs::create_dir_all(dir.path().join("ns/app")).unwrap();
        symlink("gone.yaml", dir.path().join("ns/app/values.yaml")).unwrap();
        let loaded = load_repo(dir.path()).unwrap();
        assert!(error_of(&loaded, "ns/app/values.yaml")
            .contains("values file is a symlink that cannot be followed"));
    }

    #[test]
    fn a_directory_named_values_yaml_is_an_error_and_is_not_entered() {
        let dir = repo(&[(
            "ns/app/values.yaml/nested/values.yaml",
            "postgresqlDatabases:\n  - name: nested\n",
        )]);
        let loaded = load_repo(dir.path()).unwrap();
        assert_eq!(loaded.files_read, paths(&["ns/app/values.yaml"]));
        assert_eq!(
            error_of(&loaded, "ns/app/values.yaml"),
            "error: ns/app/values.yaml:1:1: values file is a directory, not a regular file\n  help: a values file must be a regular file: replace it with one (its databases are left as they are until then)"
        );
        assert!(loaded.databases.is_empty());
    }

    /// Runs `load` on another thread and fails the test if it takes longer than a few seconds.
    fn quickly<T: Send + 'static>(load: impl FnOnce() -> T + Send + 'static) -> T {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(load()));
        receiver
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading the repo blocked or took too long")
    }

    #[test]
    fn a_fifo_values_file_is_an_error_and_does_not_block() {
        let dir = repo(&[]);
        fs::create_dir_all(dir.path().join("ns/app")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("ns/app/values.yaml"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        // Not a values file by name: never opened.
        nix::unistd::mkfifo(
            &dir.path().join("ns/app/pipe"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        let root = dir.path().to_path_buf();
        let loaded = quickly(move || load_repo(&root).unwrap());
        assert_eq!(loaded.files_read, paths(&["ns/app/values.yaml"]));
        assert_eq!(
            error_of(&loaded, "ns/app/values.yaml"),
            "error: ns/app/values.yaml:1:1: values file is a FIFO (named pipe), not a regular file\n  help: a values file must be a regular file: replace it with one (its databases are left as they are until then)"
        );
    }

    #[test]
    fn a_device_is_refused_at_once_and_reading_is_capped() {
        let dir = repo(&[]);
        fs::create_dir_all(dir.path().join("ns/app")).unwrap();
        symlink("/dev/zero", dir.path().join("ns/app/values.yaml")).unwrap();
        // Other names are not followed, wherever they lead.
        symlink("/dev/zero", dir.path().join("ns/app/zero")).unwrap();
        let root = dir.path().to_path_buf();
        let loaded = quickly(move || load_repo(&root).unwrap());
        assert!(error_of(&loaded, "ns/app/values.yaml").contains("outside the repo"));

        // Were such a file opened, no more than the cap and one byte would be read.
        let zero = File::open("/dev/zero").unwrap();
        assert_eq!(
            quickly(move || read_at_most(zero, 0, 1024).unwrap().len()),
            1025
        );
    }

    #[test]
    fn a_values_file_over_the_size_cap_is_an_error() {
        let dir = repo(&[
            (
                "ns/big/values.yaml",
                &format!("image: x\n{}", "#".repeat(200)),
            ),
            (
                "ns/small/values.yaml",
                "postgresqlDatabases:\n  - name: small\n",
            ),
        ]);
        let options = LoadOptions {
            max_values_file_bytes: 100,
        };
        let loaded = load_repo_with(dir.path(), &options).unwrap();
        assert_eq!(
            error_of(&loaded, "ns/big/values.yaml"),
            "error: ns/big/values.yaml:1:1: values file is 209 bytes, over the limit of 100 bytes\n  help: values files are small: check what this file holds, or raise the limit with PGTENANT_MAX_VALUES_FILE_BYTES"
        );
        assert_eq!(tenants(&loaded), [("ns/small".to_owned(), Mode::Standard)]);

        // The default is 4 MiB: a sparse file just over it fails, one at it does not.
        let file = File::create(dir.path().join("ns/big/values.yaml")).unwrap();
        file.set_len(DEFAULT_MAX_VALUES_FILE_BYTES + 1).unwrap();
        let loaded = load_repo_with(dir.path(), &LoadOptions::default()).unwrap();
        assert!(error_of(&loaded, "ns/big/values.yaml")
            .contains("values file is 4194305 bytes, over the limit of 4194304 bytes"));
        let at_cap = DEFAULT_MAX_VALUES_FILE_BYTES as usize;
        fs::write(
            dir.path().join("ns/big/values.yaml"),
            format!("#{}", " ".repeat(at_cap - 1)),
        )
        .unwrap();
        let loaded = load_repo_with(dir.path(), &LoadOptions::default()).unwrap();
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    }

    #[test]
    fn the_size_cap_comes_from_the_environment() {
        assert_eq!(
            LoadOptions::from_env_value(None).unwrap(),
            LoadOptions::default()
        );
        assert_eq!(
            LoadOptions::from_env_value(Some(OsStr::new("1000")))
                .unwrap()
                .max_values_file_bytes,
            1000
        );
        for bad in ["0", "-1", "4MiB", ""] {
            let error = LoadOptions::from_env_value(Some(OsStr::new(bad))).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("PGTENANT_MAX_VALUES_FILE_BYTES=`{bad}` is not usable: expected a positive whole number of bytes, e.g. 4194304 for 4 MiB")
            );
        }
    }

    #[test]
    fn a_values_file_that_is_not_a_mapping_fails_its_file() {
        let dir = repo(&[
            ("ns/list/values.yaml", "- name: a\n"),
            ("ns/comments/values.yaml", "# nothing yet\n"),
        ]);
        let loaded = load_repo(dir.path()).unwrap();
        assert_eq!(loaded.failed_files, paths(&["ns/list/values.yaml"]));
    }

    #[test]
    fn a_folder_without_app_values_files_is_not_an_apps_repo() {
        for files in [
            &[][..],
            &[("README.md", "# project\n")][..],
            // A project checkout with an example repo inside it.
            &[(
                "examples/apps/shop/cart/values.yaml",
                "postgresqlDatabases:\n  - name: cart\n",
            )][..],
            &[
                ("values.yaml", "image: x\n"),
                ("ns/values.yaml", "image: x\n"),
            ][..],
        ] {
            let dir = repo(files);
            let loaded = load_repo(dir.path()).unwrap();
            assert_eq!(loaded.app_values_files(), 0, "{files:?}");
            let error = loaded.ensure_apps_repo().unwrap_err();
            assert!(matches!(&error, SpecError::NotAnAppsRepo { path } if path == dir.path()));
            let dir = dir.path().display();
            assert_eq!(
                error.to_string(),
                format!("no values files under {dir}: is this the apps repo? (expected {dir}/<namespace>/<folder>/values.yaml)")
            );
        }
        // Any file where apps have theirs will do, even a broken or unrelated one.
        for file in ["ns/app/values.yaml", "ns/app/values.yml"] {
            let dir = repo(&[(file, "image: [\n")]);
            let loaded = load_repo(dir.path()).unwrap();
            assert_eq!(loaded.app_values_files(), 1);
            loaded.ensure_apps_repo().unwrap();
        }
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
