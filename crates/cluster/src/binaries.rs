//! Locating the PostgreSQL server binaries (initdb, pg_ctl, postgres).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgtenant_pg::process::{is_executable, Run};

use crate::ClusterError;

/// `pg_ctl --version` answers at once; a program that does not is not a usable pg_ctl.
const VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Environment variable naming the directory that holds initdb and pg_ctl.
pub const PG_BIN_ENV: &str = "PGTENANT_PG_BIN";

/// Where Debian and Ubuntu install each major version side by side (`<root>/<major>/bin`).
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// The three programs a cluster needs; they must come from the same directory so that
/// their versions agree.
const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// A directory holding a matching set of PostgreSQL server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub bin_dir: PathBuf,
    /// Major version as `pg_ctl --version` reports it, e.g. "15".
    pub version: String,
}

impl Binaries {
    /// The binaries in `dir`, if all of them are there and `pg_ctl` runs.
    pub(crate) fn in_dir(dir: &Path) -> Option<Self> {
        if !REQUIRED.iter().all(|name| is_executable(&dir.join(name))) {
            return None;
        }
        // `--version` is answered before pg_ctl's refusal to run as root, so this works for
        // every caller.
        let mut cmd = Command::new(dir.join("pg_ctl"));
        cmd.arg("--version");
        let output = Run::new(&mut cmd).timeout(VERSION_TIMEOUT).output().ok()?;
        if !output.status.success() {
            return None;
        }
        let version = parse_major_version(&String::from_utf8_lossy(&output.stdout))?;
        Some(Binaries {
            bin_dir: real_dir(dir),
            version,
        })
    }

    /// A program of this installation (`pg_dump`, `pg_restore` and `psql` sit beside the server
    /// binaries in the usual packages).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// Finds the server binaries: `$PGTENANT_PG_BIN` if set (and then only there), else the
/// first directory on `PATH` holding all of them, else the highest `/usr/lib/postgresql/*/bin`.
pub fn find_binaries() -> Result<Binaries, ClusterError> {
    find_binaries_in(
        std::env::var_os(PG_BIN_ENV),
        std::env::var_os("PATH"),
        Path::new(VERSIONED_ROOT),
    )
}

/// [`find_binaries`] with its inputs passed in, so tests need not touch the process-global
/// environment.
pub(crate) fn find_binaries_in(
    pg_bin: Option<OsString>,
    path: Option<OsString>,
    versioned_root: &Path,
) -> Result<Binaries, ClusterError> {
    // An explicit choice is final: silently falling back elsewhere would hide the mistake.
    if let Some(dir) = pg_bin.filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return Binaries::in_dir(&dir).ok_or(ClusterError::BinariesNotFound {
            searched: vec![dir],
        });
    }
    let mut searched: Vec<PathBuf> = path
        .as_deref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    searched.extend(versioned_dirs(versioned_root));
    searched
        .iter()
        .find_map(|dir| Binaries::in_dir(dir))
        .ok_or(ClusterError::BinariesNotFound { searched })
}

/// Binaries of major version `version` (as in `PG_VERSION`, e.g. "15"): the versioned directory
/// `/usr/lib/postgresql/<version>/bin` if present, else whatever [`find_binaries`] finds if it is of
/// that version. A data directory runs only under binaries of its own major version.
pub fn find_binaries_for_version(version: &str) -> Result<Binaries, ClusterError> {
    let dir = Path::new(VERSIONED_ROOT).join(version).join("bin");
    if std::env::var_os(PG_BIN_ENV).is_none_or(|d| d.is_empty()) {
        if let Some(found) = Binaries::in_dir(&dir).filter(|b| b.version == version) {
            return Ok(found);
        }
    }
    let found = find_binaries()?;
    if found.version == version {
        return Ok(found);
    }
    Err(ClusterError::State {
        path: found.bin_dir.clone(),
        reason: format!(
            "PostgreSQL {} binaries, but data of PostgreSQL {version} needs binaries of that \
             version: apt-get install postgresql-{version} (or set {PG_BIN_ENV})",
            found.version
        ),
    })
}

/// `<root>/<version>/bin` for each installed version, highest version first.
/// Environment variable naming the pgbouncer program to run (for an installation outside `PATH`);
/// set but empty: pgbouncer counts as not installed.
pub const PGBOUNCER_ENV: &str = "PGTENANT_PGBOUNCER";

/// The pgbouncer program: [`PGBOUNCER_ENV`], else the first `pgbouncer` on `PATH`, else Debian's
/// `/usr/sbin/pgbouncer` (`/usr/sbin` is not on an ordinary user's `PATH`). None: not installed.
pub fn find_pgbouncer() -> Option<PathBuf> {
    if let Some(given) = std::env::var_os(PGBOUNCER_ENV) {
        let path = PathBuf::from(given);
        return is_executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| is_executable(candidate))
}

fn versioned_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let key = version_key(entry.file_name().to_str()?)?;
            Some((key, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Numeric sort key of a version directory name ("9.6" < "15"); None for other names.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15"; before version 10 the
/// major version had two parts ("9.6.24" -> "9.6").
fn parse_major_version(output: &str) -> Option<String> {
    let full = output
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    let numeric: String = full
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let first = parts.next()?;
    match first.parse::<u32>().ok()? {
        major if major >= 10 => Some(first.to_string()),
        _ => Some(format!("{first}.{}", parts.next()?)),
    }
}

/// Where the binaries in `dir` really are, when they are symlinks into one directory (as
/// `/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl`): that path names the
/// version and outlives the links.
fn real_dir(dir: &Path) -> PathBuf {
    fs::canonicalize(dir.join("pg_ctl"))
        .ok()
        .and_then(|target| Some(target.parent()?.to_path_buf()))
        .filter(|real| REQUIRED.iter().all(|name| is_executable(&real.join(name))))
        .unwrap_or_else(|| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_version_from_pg_ctl_output() {
        let parse = parse_major_version;
        assert_eq!(
            parse("pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").as_deref(),
            Some("15")
        );
        assert_eq!(parse("pg_ctl (PostgreSQL) 17beta1").as_deref(), Some("17"));
        assert_eq!(parse("pg_ctl (PostgreSQL) 9.6.24").as_deref(), Some("9.6"));
        assert_eq!(parse("pg_ctl (PostgreSQL)"), None);
    }

    #[test]
    fn explicit_empty_dir_is_not_found_and_names_the_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_binaries_in(
            Some(empty.path().into()),
            std::env::var_os("PATH"),
            Path::new(VERSIONED_ROOT),
        )
        .unwrap_err();
        match &err {
            ClusterError::BinariesNotFound { searched } => {
                assert_eq!(searched, &vec![empty.path().to_path_buf()])
            }
            other => panic!("unexpected error: {other}"),
        }
        let message = err.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains(PG_BIN_ENV), "{message}");
        assert!(
            message.contains(&empty.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn nothing_found_lists_every_searched_dir() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("14/bin")).unwrap();
        let err = find_binaries_in(
            None,
            Some("/nonexistent-a:/nonexistent-b".into()),
            root.path(),
        )
        .unwrap_err();
        match err {
            ClusterError::BinariesNotFound { searched } => assert_eq!(
                searched,
                vec![
                    PathBuf::from("/nonexistent-a"),
                    PathBuf::from("/nonexistent-b"),
                    root.path().join("14/bin"),
                ]
            ),
            other => panic!("unexpected error: {other}"),
        }
    }

    #[test]
    fn highest_version_dir_first() {
        let root = tempfile::tempdir().unwrap();
        for name in ["9.6", "15", "16", "common", "13"] {
            fs::create_dir(root.path().join(name)).unwrap();
        }
        let dirs = versioned_dirs(root.path());
        let names: Vec<_> = dirs
            .iter()
            .map(|d| d.parent().unwrap().file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["16", "15", "13", "9.6"]);
    }

    #[test]
    fn finds_a_fake_installation_and_its_version() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("16/bin");
        fs::create_dir_all(&bin).unwrap();
        // Written by a child shell: a file this multi-threaded process had open for writing
        // could leak into another test's fork and make exec fail with "text file busy".
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"for n in initdb pg_ctl postgres; do printf '#!/bin/sh\necho "pg_ctl (PostgreSQL) 16.4"\n' > "$1/$n"; chmod 755 "$1/$n"; done"#)
            .arg("sh")
            .arg(&bin)
            .status()
            .unwrap();
        assert!(status.success());
        let found = find_binaries_in(None, None, root.path()).unwrap();
        assert_eq!(
            found,
            Binaries {
                bin_dir: bin,
                version: "16".into()
            }
        );
    }
}
