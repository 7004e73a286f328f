//! `catalog.json` in the backup repository: logical backups, restores, verifications and the
//! retention settings. Physical backups are pgBackRest's own business (`pgbackrest info`).
//!
//! Every change reads, modifies and atomically replaces the file under an exclusive `flock`, so
//! concurrent pgtenant processes never lose each other's entries.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;
use crate::{BackupError, Environment};

pub const CATALOG_FILE: &str = "catalog.json";
const LOCK_FILE: &str = "catalog.lock";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub logical: Vec<LogicalBackup>,
    #[serde(default)]
    pub restores: Vec<RestoreRecord>,
    #[serde(default)]
    pub verifications: Vec<Verification>,
}

/// Retention as last chosen, so that a later command without `--environment` does not silently
/// shrink it to the default tier's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    pub environment: Option<Environment>,
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogicalBackup {
    pub id: String,
    /// NAMESPACE/DATABASE.
    pub tenant: String,
    pub database: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    /// `custom` (one file) or `directory` (parallel dump of a large database).
    pub format: String,
    /// Relative to the repository.
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    pub server_version: String,
    pub dumped_as: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub id: String,
    pub tenant: String,
    /// The database restored into: the tenant's own (in place) or another declared tenant's.
    pub into: String,
    pub in_place: bool,
    /// `time` or `backup`.
    pub target_kind: String,
    pub target: String,
    /// The backup set or logical backup the data came from.
    pub source_backup: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub seconds: f64,
    pub sessions_terminated: u64,
    pub ok: bool,
    pub error: Option<String>,
}

impl RestoreRecord {
    /// The record with a time target in RFC 3339, as records are written now (older ones hold
    /// `2025-06-01 12:30:00+00`).
    pub fn with_rfc3339_target(mut self) -> Self {
        if self.target_kind == "time" {
            if let Ok(time) = Timestamp::parse(&self.target) {
                self.target = time.to_rfc3339();
            }
        }
        self
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub backup: String,
    pub at: Timestamp,
    pub seconds: f64,
    pub ok: bool,
    pub databases: Vec<VerifiedDatabase>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifiedDatabase {
    pub name: String,
    pub tables: i64,
    pub size_bytes: i64,
    pub readable: bool,
}

/// The catalog file of a repository directory.
#[derive(Debug, Clone)]
pub struct CatalogFile {
    dir: PathBuf,
}

impl CatalogFile {
    pub fn new(dir: &Path) -> Self {
        CatalogFile {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(CATALOG_FILE)
    }

    pub fn load(&self) -> Result<Catalog, BackupError> {
        let path = self.path();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| BackupError::Json {
                what: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Catalog::default()),
            Err(source) => Err(BackupError::Io { path, source }),
        }
    }

    /// Applies `change` to the catalog under the lock and saves it; returns what `change` returns.
    pub fn update<T>(&self, change: impl FnOnce(&mut Catalog) -> T) -> Result<T, BackupError> {
        let _lock = self.lock()?;
        let mut catalog = self.load()?;
        let result = change(&mut catalog);
        self.save(&catalog)?;
        Ok(result)
    }

    fn lock(&self) -> Result<Flock<fs::File>, BackupError> {
        let path = self.dir.join(LOCK_FILE);
        lock_file(&path)
    }

    fn save(&self, catalog: &Catalog) -> Result<(), BackupError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{CATALOG_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(catalog).expect("catalog serializes");
        let io = |source| BackupError::Io {
            path: tmp.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(|source| BackupError::Io { path, source })
    }
}

/// The lock file itself (created if missing, private), for [`lock_file`] and [`try_lock_file`].
fn open_lock_file(path: &Path) -> Result<fs::File, BackupError> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A lock of kind `how` on `path` (created 0600 if missing), held until the returned value is
/// dropped; None when `how` does not wait and another process holds a conflicting lock.
pub(crate) fn flock(path: &Path, how: FlockArg) -> Result<Option<Flock<fs::File>>, BackupError> {
    match Flock::lock(open_lock_file(path)?, how) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(BackupError::Io {
            path: path.to_path_buf(),
            source: errno.into(),
        }),
    }
}

/// An exclusive lock on `path` (created if missing), held until the returned value is dropped.
pub(crate) fn lock_file(path: &Path) -> Result<Flock<fs::File>, BackupError> {
    Ok(flock(path, FlockArg::LockExclusive)?.expect("a waiting lock is always granted"))
}

/// Like [`lock_file`] but gives up at once: None if another process holds it.
pub fn try_lock_file(path: &Path) -> Result<Option<Flock<fs::File>>, BackupError> {
    flock(path, FlockArg::LockExclusiveNonblock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_survive_reload_and_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = CatalogFile::new(dir.path());
        assert!(file.load().unwrap().logical.is_empty());
        file.update(|c| c.settings.retention_days = Some(35))
            .unwrap();
        let catalog = file.load().unwrap();
        assert_eq!(catalog.settings.retention_days, Some(35));
        let mode = fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_old_catalog_reads_and_a_broken_one_keeps_its_json_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = CatalogFile::new(dir.path());
        // As versions before RFC 3339 in the catalog wrote it.
        fs::write(
            file.path(),
            r#"{"logical": [{"id": "20250601-123000L-shop.cart", "tenant": "shop/cart",
                "database": "shop-cart", "started": "2025-06-01 12:30:00+00",
                "finished": "2025-06-01 12:30:05.5+00", "format": "custom",
                "path": "logical/x", "size_bytes": 1, "sha256": "00",
                "server_version": "15.8", "dumped_as": "pgtenant_control"}],
              "restores": [{"id": "r", "tenant": "shop/cart", "into": "shop/cart",
                "in_place": true, "target_kind": "time", "target": "2025-06-01 14:30:00+02",
                "source_backup": "b", "started": "2025-06-01T12:31:00Z",
                "finished": "2025-06-01T12:32:00.250000Z", "seconds": 60.0,
                "sessions_terminated": 0, "ok": true, "error": null}]}"#,
        )
        .unwrap();
        let catalog = file.load().unwrap();
        let logical = &catalog.logical[0];
        assert_eq!(logical.started.to_rfc3339(), "2025-06-01T12:30:00Z");
        assert_eq!(
            logical.finished.to_string(),
            "2025-06-01 12:30:05.500000 UTC"
        );
        let restore = catalog.restores[0].clone().with_rfc3339_target();
        assert_eq!(restore.target, "2025-06-01T12:30:00Z");
        assert_eq!(
            serde_json::to_value(&catalog.restores[0]).unwrap()["finished"],
            "2025-06-01T12:32:00.250000Z"
        );

        fs::write(file.path(), "{not json").unwrap();
        let error = file.load().unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: ", file.path().display())),
            "{error}"
        );
        let source = std::error::Error::source(&error).unwrap();
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
    }

    #[test]
    fn try_lock_sees_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = lock_file(&path).unwrap();
        assert!(try_lock_file(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock_file(&path).unwrap().is_some());
    }
}
