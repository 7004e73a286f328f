//! Logical backups of one tenant database: `pg_dump` as the tenant's admin role, over TLS, into
//! the repository, with a catalog entry (tenant, time, size, checksum, server version).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use pgtenant_cluster::Binaries;

use crate::libpq::ServerAddress;
use crate::restore::Progress;
use crate::timestamp::Timestamp;
use crate::{
    create_dir, process, sha256_of, sql, BackupError, Backups, Cluster, LogicalBackup, Login,
    TenantName, LOGICAL_DIR, PARALLEL_DUMP_BYTES,
};

impl Backups {
    /// The PostgreSQL client programs to use against the managed cluster.
    pub(crate) fn client_binaries(&self) -> Result<Binaries, BackupError> {
        Ok(match &self.cluster {
            Cluster::Embedded { cluster, .. } => cluster.binaries()?,
            Cluster::External { .. } => pgtenant_cluster::find_binaries()?,
        })
    }

    /// `backup NS/DB`: a logical backup of one tenant database, taken as `login` (a login that
    /// acts as the tenant's owner, so it reads every object).
    pub fn backup_tenant(
        &self,
        tenant: &TenantName,
        login: &Login,
        progress: &mut dyn Progress,
    ) -> Result<LogicalBackup, BackupError> {
        let database = tenant.database();
        let (size, server_version) = sql::block_on(async {
            let client = sql::connect(&self.control_url, None).await?;
            let row = client
                .query_opt(
                    "SELECT pg_catalog.pg_database_size(oid), \
                     pg_catalog.current_setting('server_version') \
                     FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) $1",
                    &[&database],
                )
                .await
                .map_err(|e| sql::sql_error("reading the database's size", e))?;
            Ok::<_, BackupError>(row.map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1))))
        })??
        .ok_or_else(|| {
            BackupError::Restore(format!(
                "database {database} does not exist on the cluster: is {} declared and applied?",
                tenant.id()
            ))
        })?;
        let started = Timestamp::now();
        let id = format!(
            "{}L-{}.{}",
            started.compact(),
            tenant.namespace,
            tenant.name
        );
        let relative_dir = PathBuf::from(LOGICAL_DIR).join(tenant.dir());
        let dir = self.root.join(&relative_dir);
        create_dir(&self.root.join(LOGICAL_DIR), 0o700, None)?;
        create_dir(&dir, 0o700, None)?;
        let parallel = size > PARALLEL_DUMP_BYTES;
        let (format, file_name) = if parallel {
            ("directory", format!("{id}.dir"))
        } else {
            ("custom", format!("{id}.dump"))
        };
        let partial = dir.join(format!("{file_name}.partial"));
        let _ = fs::remove_file(&partial).or_else(|_| fs::remove_dir_all(&partial));
        progress.step(
            1,
            2,
            &format!(
                "pg_dump of {database} ({} MB) as {}",
                size / 1_000_000,
                login.user
            ),
        );
        let binaries = self.client_binaries()?;
        let address = ServerAddress::from_admin_url(&self.control_url)?;
        let mut cmd = std::process::Command::new(binaries.program("pg_dump"));
        address.apply(&mut cmd, &login.user, &login.password, &database);
        cmd.arg("--no-password").arg("-f").arg(&partial);
        if parallel {
            let jobs = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
            cmd.args(["-Fd", "-j", &jobs.to_string()]);
        } else {
            cmd.arg("-Fc");
        }
        let dumped = process::run_quiet(&mut cmd);
        if let Err(e) = dumped {
            let _ = fs::remove_file(&partial).or_else(|_| fs::remove_dir_all(&partial));
            return Err(e);
        }
        progress.step(2, 2, "checksum and catalog entry");
        let path = dir.join(&file_name);
        fs::rename(&partial, &path).map_err(|source| BackupError::Io {
            path: path.clone(),
            source,
        })?;
        if path.is_file() {
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        }
        let (sha256, size_bytes) = sha256_of(&path)?;
        let entry = LogicalBackup {
            id,
            tenant: tenant.id(),
            database,
            started,
            finished: Timestamp::now(),
            format: format.into(),
            path: relative_dir.join(file_name),
            size_bytes,
            sha256,
            server_version,
            dumped_as: login.user.clone(),
        };
        self.catalog.update(|c| c.logical.push(entry.clone()))?;
        Ok(entry)
    }

    /// A logical backup by id, its checksum verified.
    pub(crate) fn checked_logical(
        &self,
        id: &str,
    ) -> Result<(LogicalBackup, PathBuf), BackupError> {
        let entry = self
            .catalog
            .load()?
            .logical
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| BackupError::UnknownBackup(id.to_string()))?;
        let path = self.root.join(&entry.path);
        let (actual, _) = sha256_of(&path)?;
        if actual != entry.sha256 {
            return Err(BackupError::Checksum {
                id: id.to_string(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok((entry, path))
    }
}
