//! `backup verify`: a backup set restored into a scratch cluster and read completely, or a
//! logical backup's checksum and table of contents.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::catalog::{Verification, VerifiedDatabase};
use crate::libpq::clear_pg_env;
use crate::pgbackrest::BackupSet;
use crate::timestamp::Timestamp;
use crate::{process, sql, BackupError, Backups};

use super::prelude::{scratch_restore_args, set_to_verify, set_version};
use super::scratch::{remove_scratch, scratch_pg_dump, start_scratch};
use super::steps::{Progress, Steps};

impl Backups {
    /// `backup verify [ID]`: restores a backup into a scratch cluster and checks that it starts
    /// and every database reads completely (a pg_dump of each to /dev/null); for a logical
    /// backup, its checksum and table of contents. Records the result in the catalog.
    #[tracing::instrument(name = "backup_verify", skip_all, fields(id = ?id))]
    pub fn verify(
        &self,
        id: Option<&str>,
        progress: &mut dyn Progress,
    ) -> Result<Verification, BackupError> {
        let clock = Instant::now();
        let at = Timestamp::now();
        let _lock = self.scratch_lock(progress)?;
        pgtenant_cluster::remove_leftovers(&self.scratch_parent()?)?;
        let logical = id.and_then(|id| {
            self.catalog
                .load()
                .ok()?
                .logical
                .into_iter()
                .find(|b| b.id == id)
        });
        let (label, result) = if let Some(entry) = logical {
            let mut steps = Steps::new(progress, 1);
            steps.begin(&format!(
                "checking logical backup {} (SHA-256, table of contents)",
                entry.id
            ));
            let result = self.verify_logical(&entry.id);
            steps.finish();
            (entry.id, result)
        } else {
            let rest = match (&self.rest, id) {
                (Some(rest), _) => rest,
                (None, Some(id)) => return Err(BackupError::UnknownBackup(id.to_string())),
                (None, None) => return Err(BackupError::NoPgBackRest("verifying a backup set")),
            };
            let info = rest.info()?;
            let set = set_to_verify(&info.backup, id)?.clone();
            let version = set_version(&info, &set);
            let result = self.verify_physical(&set, &version, progress);
            (set.label, result)
        };
        let verification = match result {
            Ok(databases) => Verification {
                backup: label,
                at,
                seconds: clock.elapsed().as_secs_f64(),
                ok: databases.iter().all(|d| d.readable),
                databases,
                error: None,
            },
            Err(e) => Verification {
                backup: label,
                at,
                seconds: clock.elapsed().as_secs_f64(),
                ok: false,
                databases: Vec::new(),
                error: Some(e.to_string()),
            },
        };
        self.catalog
            .update(|c| c.verifications.push(verification.clone()))?;
        Ok(verification)
    }

    fn verify_logical(&self, id: &str) -> Result<Vec<VerifiedDatabase>, BackupError> {
        let (entry, path) = self.checked_logical(id)?;
        let binaries = self.client_binaries()?;
        let mut cmd = Command::new(binaries.program("pg_restore"));
        clear_pg_env(&mut cmd);
        cmd.arg("-l").arg(&path);
        let toc = process::run(&mut cmd)?;
        let tables = toc.lines().filter(|l| l.contains(" TABLE DATA ")).count() as i64;
        Ok(vec![VerifiedDatabase {
            name: entry.database,
            tables,
            size_bytes: entry.size_bytes as i64,
            readable: true,
        }])
    }

    fn verify_physical(
        &self,
        set: &BackupSet,
        version: &str,
        progress: &mut dyn Progress,
    ) -> Result<Vec<VerifiedDatabase>, BackupError> {
        let mut steps = Steps::new(progress, 3);
        steps.begin(&format!(
            "restoring backup {} into a scratch cluster and starting it",
            set.label
        ));
        let (mut cluster, rest) = self.scratch_cluster("verify", version)?;
        rest.run(
            "restore",
            &scratch_restore_args(&cluster.data_dir(), &set.label, None, None),
        )?;
        start_scratch(&mut cluster)?;
        steps.begin("reading every database completely (pg_dump to /dev/null)");
        let candidates = self.scratch_logins();
        let (superuser, databases) = sql::block_on(async {
            let mut last = None;
            for user in &candidates {
                match sql::connect_socket(&cluster.socket_dir(), cluster.port(), user, "postgres")
                    .await
                {
                    Ok(client) => {
                        let su: String = client
                            .query_one(
                                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10",
                                &[],
                            )
                            .await
                            .map_err(|e| sql::sql_error("reading the scratch cluster", e))?
                            .get(0);
                        let rows = client
                            .query(
                                "SELECT datname::text FROM pg_catalog.pg_database \
                                 WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                                &[],
                            )
                            .await
                            .map_err(|e| sql::sql_error("listing databases", e))?;
                        return Ok((su, rows.iter().map(|r| r.get(0)).collect::<Vec<String>>()));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| BackupError::NoLogin("no role to connect with")))
        })??;
        let mut verified = Vec::new();
        for database in databases {
            let (tables, size) = sql::block_on(async {
                let client = sql::connect_socket(
                    &cluster.socket_dir(),
                    cluster.port(),
                    &superuser,
                    &database,
                )
                .await?;
                let row = client
                    .query_one(
                        "SELECT (SELECT count(*) FROM pg_catalog.pg_class c \
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                           WHERE c.relkind IN ('r', 'p', 'm') \
                           AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                           AND n.nspname NOT LIKE 'pg\\_toast%'), \
                         pg_catalog.pg_database_size(pg_catalog.current_database())",
                        &[],
                    )
                    .await
                    .map_err(|e| sql::sql_error("reading a restored database", e))?;
                Ok::<_, BackupError>((row.get::<_, i64>(0), row.get::<_, i64>(1)))
            })??;
            let mut cmd = scratch_pg_dump(&cluster, &superuser, &database, Path::new("/dev/null"));
            let readable = match process::run_quiet(&mut cmd) {
                Ok(()) => true,
                Err(e) => {
                    steps
                        .progress
                        .warn(&format!("{database} is not readable: {e}"));
                    false
                }
            };
            verified.push(VerifiedDatabase {
                name: database,
                tables,
                size_bytes: size,
                readable,
            });
        }
        steps.begin("removing the scratch cluster");
        remove_scratch(cluster);
        steps.finish();
        Ok(verified)
    }
}
