//! The trash: the final logical backup taken before a standard database is dropped (the plan's
//! `final-backup` operation, run by the engine's executor through [`FinalBackups`]), kept for its
//! environment tier's retention (`trash list`), and restorable into the database once it is
//! declared again (`trash restore`).
//!
//! Layout: `<root>/<namespace>/<name>/<time>.dump` (pg_dump's custom format, 0600) with a JSON
//! sidecar `<time>.json` ([`TrashEntry`]). A dump is written as `<time>.dump.partial` until pg_dump
//! has finished; a run taking final backups holds `<root>/trash.lock` shared for as long as it
//! does, so a `.dump.partial` file is removed (as a killed run's leftover) only when nobody holds it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use pgtenant_engine::{sql, Connector, FinalBackupRequest, FinalBackups, Ident};
use pgtenant_spec::Environment;
use serde::{Deserialize, Serialize};

use crate::libpq::clear_pg_env;
use crate::timestamp::Timestamp;
use crate::{process, sha256_of, BackupError};

/// Beside each dump, what `trash list` shows and what expiry needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrashEntry {
    pub tenant: String,
    pub database: String,
    pub dropped_at: String,
    pub expires_at: String,
    pub retention_days: u32,
    pub file: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Held shared by every run taking final backups, for as long as it does.
const LOCK_FILE: &str = "trash.lock";
/// What a dump is written as until pg_dump has finished.
const PARTIAL: &str = "dump.partial";

/// The trash under `root` (`<state-dir>/trash`). Cheap to clone: clones share the lock a run
/// takes with its first final backup, released when the last clone is dropped.
#[derive(Clone)]
pub struct Trash {
    root: PathBuf,
    dumping: Arc<Mutex<Option<Flock<File>>>>,
}

impl Trash {
    pub fn new(root: PathBuf) -> Self {
        Trash {
            root,
            dumping: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every entry, newest first; expired ones (dump and sidecar) are deleted on the way, and so
    /// are the `.dump.partial` files killed runs left (unless a run taking final backups is under way).
    pub fn entries(&self) -> Result<Vec<TrashEntry>, BackupError> {
        let mut entries = Vec::new();
        let root = &self.root;
        if !root.exists() {
            return Ok(entries);
        }
        remove_partial_dumps(root)?;
        let now = Timestamp::now().to_rfc3339();
        for namespace in read_dir(root)? {
            let namespace = namespace.map_err(io(root))?.path();
            if !namespace.is_dir() {
                continue; // the lock file
            }
            for tenant in read_dir(&namespace)? {
                let tenant = tenant.map_err(io(&namespace))?.path();
                for file in read_dir(&tenant)? {
                    let path = file.map_err(io(&tenant))?.path();
                    if path.extension().is_none_or(|e| e != "json") {
                        continue;
                    }
                    let bytes = std::fs::read(&path).map_err(io(&path))?;
                    let entry: TrashEntry = serde_json::from_slice(&bytes).map_err(|e| {
                        BackupError::Parse(format!("reading {}: {e}", path.display()))
                    })?;
                    // RFC 3339 UTC timestamps of one format compare as text.
                    if entry.expires_at < now {
                        let _ = std::fs::remove_file(&entry.file);
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    // Dumps taken by earlier versions were 0644.
                    private_file(&entry.file)?;
                    entries.push(entry);
                }
            }
        }
        entries.sort_by(|a, b| b.dropped_at.cmp(&a.dropped_at));
        Ok(entries)
    }

    /// The final backup of `database` (tenant `tenant`, `NS/DB`), kept as long as `environment`
    /// says; `libpq_env` connects pg_dump as the control role. Blocking (pg_dump). Returns the
    /// entry and what to tell the operator (leftovers of killed runs removed first).
    pub fn take(
        &self,
        tenant: &str,
        database: &str,
        environment: Environment,
        libpq_env: &[(&'static str, String)],
    ) -> Result<(TrashEntry, Vec<String>), BackupError> {
        let mut said = Vec::new();
        {
            let mut dumping = self.dumping.lock().unwrap_or_else(|p| p.into_inner());
            if dumping.is_none() {
                let removed = remove_partial_dumps(&self.root)?;
                if removed > 0 {
                    said.push(format!(
                        "removed {removed} unfinished final backup(s) left in the trash by an interrupted run"
                    ));
                }
                // Until every dump of this run is finished: no other run takes this one's for a leftover.
                *dumping = lock_trash(&self.root, FlockArg::LockShared)?;
            }
        }
        let id = pgtenant_spec::TenantId::parse(tenant)
            .map_err(|error| BackupError::Parse(format!("{tenant}: {error}")))?;
        let dir = self.root.join(id.dir());
        create_private_dirs(&dir)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let now = Timestamp::from_unix(now);
        let stamp = now.to_rfc3339();
        let file = dir.join(format!("{}.dump", stamp.replace(':', "")));
        let partial = file.with_extension(PARTIAL);
        let binaries = pgtenant_cluster::find_binaries()?;
        let mut command = Command::new(binaries.bin_dir.join("pg_dump"));
        command
            .args(["--format=custom", "--no-owner", "--file"])
            .arg(&partial);
        clear_pg_env(&mut command);
        command.envs(libpq_env.iter().map(|(k, v)| (*k, v)));
        // The dump holds the tenant's data: private whatever the process umask (process::run).
        process::run_quiet(&mut command)?;
        std::fs::rename(&partial, &file).map_err(io(&file))?;
        let (sha256, size) = sha256_of(&file)?;
        let retention_days = environment.retention_days();
        let entry = TrashEntry {
            tenant: tenant.to_string(),
            database: database.to_string(),
            dropped_at: stamp,
            expires_at: now
                .plus_seconds(i64::from(retention_days) * 86_400)
                .to_rfc3339(),
            retention_days,
            file: file.clone(),
            size,
            sha256,
        };
        let sidecar = file.with_extension("json");
        let json = serde_json::to_vec_pretty(&entry).expect("a trash entry serializes");
        crate::write_private_file(&sidecar, &json)?;
        said.push(format!(
            "final backup of {database} before it is dropped: {} ({size} bytes)",
            file.display()
        ));
        Ok((entry, said))
    }

    /// Restores `entry` into its database (which must exist, declared and applied again), its
    /// objects owned by `owner`, in one transaction. Checks the recorded checksum first.
    pub fn restore(
        &self,
        entry: &TrashEntry,
        connector: &Connector,
        owner: &str,
    ) -> Result<(), BackupError> {
        let (checksum, _) = sha256_of(&entry.file)?;
        if checksum != entry.sha256 {
            return Err(BackupError::Restore(format!(
                "{} does not match its recorded checksum: not restoring a damaged backup",
                entry.file.display()
            )));
        }
        let binaries = pgtenant_cluster::find_binaries()?;
        let mut command = Command::new(binaries.bin_dir.join("pg_restore"));
        command
            .args([
                "--no-owner",
                // The database was declared and applied again: schemas the spec creates exist already.
                "--clean",
                "--if-exists",
                "--exit-on-error",
                "--single-transaction",
                "--dbname",
                entry.database.as_str(),
            ])
            .arg(format!("--role={owner}"))
            .arg(&entry.file);
        clear_pg_env(&mut command);
        command.envs(connector.libpq_env(&entry.database));
        // The control role holds no standing membership in tenant roles, and pg_restore's SET ROLE
        // needs one: granted for the restore (committed, pg_restore is a session of its own) and
        // taken back after it, whatever its outcome. A crash in between leaves it behind; the next
        // plan revokes it as pgtenant's own.
        let owner = Ident::new(owner.to_string());
        let psql = |statement: String| {
            let mut psql = Command::new(binaries.bin_dir.join("psql"));
            psql.args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                entry.database.as_str(),
            ])
            .arg("-c")
            .arg(statement);
            clear_pg_env(&mut psql);
            psql.envs(connector.libpq_env(&entry.database));
            process::run_quiet(&mut psql)
        };
        psql(sql::lend(&owner, None))?;
        let restored = process::run_quiet(&mut command);
        let taken_back = psql(sql::take_back(&owner, None));
        restored.and(taken_back)
    }
}

#[async_trait::async_trait]
impl FinalBackups for Trash {
    async fn take(
        &self,
        request: FinalBackupRequest<'_>,
    ) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        let trash = self.clone();
        let (tenant, database) = (request.tenant.to_string(), request.database.to_string());
        let environment = request.environment;
        let env = request.connector.libpq_env(request.database);
        let taken =
            tokio::task::spawn_blocking(move || trash.take(&tenant, &database, environment, &env))
                .await?;
        Ok(taken?.1)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_dir(dir: &Path) -> Result<std::fs::ReadDir, BackupError> {
    std::fs::read_dir(dir).map_err(io(dir))
}

fn lock_trash(root: &Path, how: FlockArg) -> Result<Option<Flock<File>>, BackupError> {
    create_private_dirs(root)?;
    crate::catalog::flock(&root.join(LOCK_FILE), how)
}

/// Deletes the `.dump.partial` files that killed runs left in the trash, unless a run taking
/// final backups is under way (it holds the lock shared), whose dump may be one of them. Returns
/// how many.
fn remove_partial_dumps(root: &Path) -> Result<usize, BackupError> {
    if !root.exists() {
        return Ok(0);
    }
    let Some(_exclusive) = lock_trash(root, FlockArg::LockExclusiveNonblock)? else {
        return Ok(0);
    };
    let mut removed = 0;
    for namespace in read_dir(root)?.flatten() {
        // The lock file is no directory: read_dir fails and it is skipped.
        for tenant in std::fs::read_dir(namespace.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(tenant.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = file.path();
                if path.to_string_lossy().ends_with(&format!(".{PARTIAL}")) {
                    std::fs::remove_file(&path)
                        .or_else(|_| std::fs::remove_dir_all(&path))
                        .map_err(io(&path))?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

fn create_private_dirs(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Makes `path` 0600 if it is not already (and exists).
fn private_file(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_dumps_are_kept_while_a_run_is_dumping() {
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().join("trash"));
        let tenant = trash.root().join("shop/cart");
        create_private_dirs(&tenant).unwrap();
        let leftover = tenant.join("2026-01-01T000000Z.dump.partial");
        std::fs::write(&leftover, "half").unwrap();
        let held = lock_trash(trash.root(), FlockArg::LockShared).unwrap();
        assert!(held.is_some());
        assert_eq!(remove_partial_dumps(trash.root()).unwrap(), 0);
        assert!(leftover.exists());
        drop(held);
        assert_eq!(remove_partial_dumps(trash.root()).unwrap(), 1);
        assert!(!leftover.exists());
        assert!(trash.entries().unwrap().is_empty());
    }
}
