//! Scratch clusters: creating one for a backup's PostgreSQL version, logging in to it, starting
//! it, dumping a database out of it, and removing it (and what interrupted runs left behind).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pgtenant_cluster::{ScratchCluster, ServerUser};

use crate::libpq::clear_pg_env;
use crate::pgbackrest::PgBackRest;
use crate::{sql, BackupError, Backups, Cluster};

/// How long a scratch server may take to replay WAL up to the target.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// The dump file inside a scratch directory.
pub(super) const DUMP_FILE: &str = "database.pgdump";

impl Backups {
    /// A scratch cluster for a restore of a backup of PostgreSQL `version`, and the pgBackRest
    /// to fill it with (running as the account the scratch server runs as). `kind` starts its
    /// directory's name, which is short: the server's socket path must fit in 107 bytes.
    pub(super) fn scratch_cluster(
        &self,
        kind: &str,
        version: &str,
    ) -> Result<(ScratchCluster, PgBackRest), BackupError> {
        let (binaries, user) = match &self.cluster {
            Cluster::Embedded { cluster, .. } => (cluster.binaries()?, cluster.server_user()?),
            Cluster::External { .. } => (
                pgtenant_cluster::find_binaries_for_version(version)?,
                ServerUser::for_new_cluster()?,
            ),
        };
        let scratch =
            ScratchCluster::create(&self.scratch_parent()?, kind, binaries, user.clone())?;
        let rest = PgBackRest {
            user,
            ..self.rest("a scratch cluster")?.clone()
        };
        Ok((scratch, rest))
    }

    /// Roles to log in to a scratch cluster with (any existing role may: the socket is private):
    /// the bootstrap superuser's usual name and the control role.
    pub(super) fn scratch_logins(&self) -> Vec<String> {
        let control = pgtenant_engine::Connector::from_url(&self.control_url)
            .ok()
            .and_then(|c| c.user().map(str::to_string));
        [Some(pgtenant_cluster::SUPERUSER.to_string()), control]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The bootstrap superuser of a scratch cluster, after checking that `database` exists in it.
    pub(super) fn scratch_superuser(
        &self,
        cluster: &ScratchCluster,
        database: &str,
    ) -> Result<String, BackupError> {
        let database = database.to_string();
        let logins = self.scratch_logins();
        sql::block_on(async {
            let mut last = None;
            for user in &logins {
                let client = match sql::connect_socket(
                    &cluster.socket_dir(),
                    cluster.port(),
                    user,
                    "postgres",
                )
                .await
                {
                    Ok(client) => client,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                };
                let row = client
                    .query_one(
                        "SELECT (SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10), \
                         EXISTS (SELECT 1 FROM pg_catalog.pg_database \
                         WHERE datname OPERATOR(pg_catalog.=) $1)",
                        &[&database],
                    )
                    .await
                    .map_err(|e| sql::sql_error("reading the scratch cluster", e))?;
                if !row.get::<_, bool>(1) {
                    return Err(BackupError::Restore(format!(
                        "database {database} did not exist at the restore target"
                    )));
                }
                return Ok(row.get::<_, String>(0));
            }
            Err(last.unwrap_or_else(|| BackupError::NoLogin("no role to log in with")))
        })?
    }
}

/// Starts a scratch server (WAL replay up to the target included), timed in the logs.
pub(super) fn start_scratch(
    cluster: &mut ScratchCluster,
) -> Result<(), pgtenant_cluster::ClusterError> {
    let clock = Instant::now();
    let result = cluster.start(RECOVERY_TIMEOUT);
    let seconds = clock.elapsed().as_secs_f64();
    tracing::info!(seconds, ok = result.is_ok(), "scratch cluster started");
    result
}

/// Stops a scratch server and removes its files, timed in the logs.
pub(super) fn remove_scratch(cluster: ScratchCluster) {
    let clock = Instant::now();
    drop(cluster);
    let seconds = clock.elapsed().as_secs_f64();
    tracing::info!(seconds, "scratch cluster stopped and removed");
}

/// pg_dump of `database` from a scratch cluster over its private socket, uncompressed: the dump is
/// read once, seconds later (or thrown away by `verify`), so compression would only cost time.
pub(super) fn scratch_pg_dump(
    cluster: &ScratchCluster,
    superuser: &str,
    database: &str,
    output: &Path,
) -> Command {
    let mut cmd = Command::new(cluster.binaries().program("pg_dump"));
    clear_pg_env(&mut cmd);
    cmd.arg("--no-password")
        .arg("-h")
        .arg(cluster.socket_dir())
        .arg("-p")
        .arg(cluster.port().to_string())
        .arg("-U")
        .arg(superuser)
        .arg("-d")
        .arg(database)
        .args(["-Fc", "-Z0", "--no-sync", "-f"])
        .arg(output);
    cmd
}
