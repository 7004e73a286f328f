//! `adminUrl`: the URL itself, or a reference to where it is kept so that no password sits in the
//! config file.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The largest admin-URL file read: a URL is short; a mistaken path (a log, a device) is not.
const MAX_URL_FILE_BYTES: u64 = 64 * 1024;

/// Where a cluster's admin URL comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminUrlSource {
    /// `env:VAR`.
    Env(String),
    /// `file:/path`: the file's contents, trimmed.
    File(PathBuf),
    /// The URL (or libpq key=value conninfo) written in the file.
    Inline(String),
}

/// Never prints an inline URL: it may hold a password.
impl fmt::Debug for AdminUrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminUrlSource::Env(var) => write!(f, "Env({var:?})"),
            AdminUrlSource::File(path) => write!(f, "File({path:?})"),
            AdminUrlSource::Inline(_) => f.write_str("Inline(..)"),
        }
    }
}

/// A resolved admin URL.
pub struct Resolved {
    pub url: String,
    /// Worth telling the user (a file others can read); the URL is usable regardless.
    pub warnings: Vec<String>,
}

/// Why an admin URL could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The variable is unset or empty.
    EnvUnset(String),
    /// The file cannot be read, or is not a regular file of reasonable size.
    File { path: PathBuf, reason: String },
    /// The file is empty (after trimming).
    EmptyFile(PathBuf),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::EnvUnset(var) => {
                write!(f, "the environment variable {var} is not set (or empty)")
            }
            ResolveError::File { path, reason } => {
                write!(f, "cannot read {}: {reason}", path.display())
            }
            ResolveError::EmptyFile(path) => write!(f, "{} is empty", path.display()),
        }
    }
}

impl std::error::Error for ResolveError {}

impl AdminUrlSource {
    /// The URL it stands for: the variable's value or the file's trimmed contents.
    pub fn resolve(&self) -> Result<Resolved, ResolveError> {
        match self {
            AdminUrlSource::Inline(url) => Ok(Resolved {
                url: url.clone(),
                warnings: Vec::new(),
            }),
            AdminUrlSource::Env(var) => match std::env::var(var) {
                Ok(url) if !url.trim().is_empty() => Ok(Resolved {
                    url: url.trim().to_owned(),
                    warnings: Vec::new(),
                }),
                _ => Err(ResolveError::EnvUnset(var.clone())),
            },
            AdminUrlSource::File(path) => read_url_file(path),
        }
    }

    /// How it is written in the file, without a secret: `env:VAR`, `file:/path`, `inline`.
    pub fn describe(&self) -> String {
        match self {
            AdminUrlSource::Env(var) => format!("env:{var}"),
            AdminUrlSource::File(path) => format!("file:{}", path.display()),
            AdminUrlSource::Inline(_) => "inline".to_owned(),
        }
    }
}

fn read_url_file(path: &Path) -> Result<Resolved, ResolveError> {
    let failed = |reason: String| ResolveError::File {
        path: path.to_path_buf(),
        reason,
    };
    // O_NONBLOCK: opening a FIFO must not hang; the type is checked right after.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|error| failed(error.to_string()))?;
    let metadata = file.metadata().map_err(|e| failed(e.to_string()))?;
    if !metadata.is_file() {
        return Err(failed("not a regular file".to_owned()));
    }
    if metadata.len() > MAX_URL_FILE_BYTES {
        return Err(failed(format!(
            "{} bytes, more than an admin URL ({MAX_URL_FILE_BYTES} bytes at most)",
            metadata.len()
        )));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_URL_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| failed(e.to_string()))?;
    let url = text.trim();
    if url.is_empty() {
        return Err(ResolveError::EmptyFile(path.to_path_buf()));
    }
    let mut warnings = Vec::new();
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        warnings.push(format!(
            "{} has mode {mode:04o}: others than its owner can read the admin URL; \
             `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let us = nix::unistd::geteuid().as_raw();
    if metadata.uid() != us && metadata.uid() != 0 {
        warnings.push(format!(
            "{} is owned by uid {}, neither this user (uid {us}) nor root: its owner can change \
             which cluster pgtenant manages",
            path.display(),
            metadata.uid()
        ));
    }
    Ok(Resolved {
        url: url.to_owned(),
        warnings,
    })
}

/// Whether a URL or conninfo carries a password: `postgres://user:secret@…`, `?password=…`,
/// or `password=…` in key=value form.
pub(crate) fn has_inline_password(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return true;
            }
        }
        return rest
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|p| p.starts_with("password=")));
    }
    lower
        .split_whitespace()
        .any(|pair| pair.trim_start().starts_with("password") && pair.contains('='))
        || lower.contains("password =")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn finds_inline_passwords() {
        for url in [
            "postgres://admin:s3cret@db:5432/postgres",
            "postgresql://admin:s3cret@db/postgres?sslmode=require",
            "postgres://admin@db/postgres?sslmode=require&password=x",
            "host=db user=admin password=x",
            "host=db password = x",
        ] {
            assert!(has_inline_password(url), "{url}");
        }
        for url in [
            "postgres://admin@db:5432/postgres",
            "postgres://db/postgres?sslmode=verify-full",
            "host=db user=admin",
            "postgres://[::1]:5432/postgres",
        ] {
            assert!(!has_inline_password(url), "{url}");
        }
    }

    #[test]
    fn env_references_read_the_variable() {
        let var = "PGTENANT_CONFIG_TEST_ENV_REFERENCE";
        let source = AdminUrlSource::Env(var.to_owned());
        std::env::remove_var(var);
        assert_eq!(
            source.resolve().err(),
            Some(ResolveError::EnvUnset(var.to_owned()))
        );
        std::env::set_var(var, " postgres://a@b/c \n");
        assert_eq!(source.resolve().unwrap().url, "postgres://a@b/c");
        std::env::remove_var(var);
        assert_eq!(source.describe(), format!("env:{var}"));
    }

    #[test]
    fn file_references_read_the_trimmed_file_and_warn_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-url");
        std::fs::write(&path, "postgres://a@b/c\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let source = AdminUrlSource::File(path.clone());
        let resolved = source.resolve().unwrap();
        assert_eq!(resolved.url, "postgres://a@b/c");
        assert!(resolved.warnings.is_empty(), "{:?}", resolved.warnings);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let resolved = source.resolve().unwrap();
        assert_eq!(resolved.warnings.len(), 1);
        assert!(
            resolved.warnings[0].contains("mode 0644"),
            "{:?}",
            resolved.warnings
        );

        std::fs::write(&path, " \n").unwrap();
        assert_eq!(source.resolve().err(), Some(ResolveError::EmptyFile(path)));

        let missing = AdminUrlSource::File(dir.path().join("nope"));
        assert!(matches!(missing.resolve(), Err(ResolveError::File { .. })));
        let directory = AdminUrlSource::File(dir.path().to_path_buf());
        let error = directory.resolve().err().unwrap().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }

    #[test]
    fn debug_never_shows_an_inline_url() {
        let source = AdminUrlSource::Inline("postgres://a:secret@b/c".to_owned());
        assert_eq!(format!("{source:?}"), "Inline(..)");
        assert_eq!(source.describe(), "inline");
    }
}
