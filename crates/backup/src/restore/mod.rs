//! Point-in-time restore of one tenant database on a shared cluster, and backup verification.
//!
//! The procedure of the platform's runbook (seed 000), automated:
//! 1. restore the cluster backup into a scratch data directory with only that database
//!    (`pgbackrest restore --db-include`), recovery target = the time, and start it: a private
//!    server with no TCP listener that archives nothing;
//! 2. `pg_dump -Fc` that database from the scratch cluster;
//! 3. `pg_restore --clean --if-exists` into the live database (or another declared tenant's) as
//!    the tenant's admin role, in a single transaction, then let the engine re-apply ownership
//!    and grants;
//! 4. stop and delete the scratch cluster and record the restore in the catalog.
//!
//! Nothing touches the live cluster before step 3, and step 3 is one transaction: a failure or a
//! kill at any point leaves the live database as it was. Other tenants are never touched.

mod live;
mod prelude;
mod scratch;
mod steps;
mod verify;

use std::time::Instant;

use pgtenant_engine::reconcile::TenantReapply;
use serde::Serialize;

use crate::catalog::RestoreRecord;
use crate::pgbackrest::{BackupSet, PgBackRest};
use crate::timestamp::Timestamp;
use crate::{process, sql, BackupError, Backups, Cluster, Login, TenantName};

use live::objects_at;
use prelude::Source;
use scratch::{remove_scratch, scratch_pg_dump, start_scratch, DUMP_FILE};
use steps::Steps;
pub use steps::{Progress, StepTiming};

/// What to restore to.
#[derive(Debug, Clone)]
pub enum RestorePoint {
    /// The state at this instant (commits up to and including it).
    Time(Timestamp),
    /// The end of a pgBackRest backup set, or a logical backup, by id.
    Backup(String),
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The tenant whose data is restored.
    pub tenant: TenantName,
    /// The tenant database restored into: `tenant` itself (in place) or another declared one.
    pub into: TenantName,
    pub point: RestorePoint,
    /// The role that owns `into`'s database and objects.
    pub owner: String,
    /// A login of `into` that acts as its owner (the owner itself, or a login whose sessions
    /// assume the owner role): pg_restore runs as it, so everything restored gets that owner.
    pub login: Login,
    /// Into another database (`into` ≠ `tenant`): allow one that holds objects already, or a
    /// protected one, whose objects the restore replaces (`--replace`).
    pub replace: bool,
    /// Into another database: allow one of another namespace (`--allow-cross-namespace`).
    pub allow_cross_namespace: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub id: String,
    pub tenant: String,
    pub into: String,
    pub in_place: bool,
    pub target: String,
    /// The backup set (or logical backup) the data came from.
    pub source_backup: String,
    /// Whether the scratch restore held only this database (`--db-include`).
    pub single_database: bool,
    pub sessions_terminated: u64,
    pub grants_reapplied: usize,
    pub steps: Vec<StepTiming>,
    pub seconds: f64,
}

#[derive(Default)]
struct Outcome {
    sessions: u64,
    reapplied: usize,
}

impl Backups {
    /// Restores one tenant database; see the module documentation for the steps. `reapply`
    /// re-applies ownership and grants of `request.into` (the engine's reconcile of that one
    /// tenant) and returns the number of statements it ran.
    #[tracing::instrument(name = "restore", skip_all, fields(tenant = %request.tenant.id(), into = %request.into.id()))]
    pub fn restore(
        &self,
        request: &RestoreRequest,
        reapply: &TenantReapply<'_>,
        progress: &mut dyn Progress,
    ) -> Result<RestoreReport, BackupError> {
        let started = Timestamp::now();
        let clock = Instant::now();
        let in_place = request.into == request.tenant;
        // One scratch user at a time; what a killed run left goes first.
        let _lock = self.scratch_lock(progress)?;
        let leftovers = pgtenant_cluster::remove_leftovers(&self.scratch_parent()?)?;
        if !leftovers.is_empty() {
            progress.warn(&format!(
                "removed {} scratch cluster(s) left behind by an interrupted run",
                leftovers.len()
            ));
        }
        self.require_database(&request.into)?;
        self.check_into(request)?;
        let source = self.resolve_source(&request.tenant, &request.point, progress)?;
        let (target_kind, target) = prelude::target_of(&request.point);
        let (source_backup, single_database, total) = source.summary();
        let id = prelude::restore_id(started, &request.into);
        let mut steps = Steps::new(progress, total);
        let mut outcome = Outcome::default();
        let result = self.restore_steps(request, &source, reapply, &mut steps, &mut outcome);
        steps.finish();
        let seconds = clock.elapsed().as_secs_f64();
        let record = RestoreRecord {
            id: id.clone(),
            tenant: request.tenant.id(),
            into: request.into.id(),
            in_place,
            target_kind: target_kind.into(),
            target: target.clone(),
            source_backup: source_backup.clone(),
            started,
            finished: Timestamp::now(),
            seconds,
            sessions_terminated: outcome.sessions,
            ok: result.is_ok(),
            error: result.as_ref().err().map(|e| e.to_string()),
        };
        tracing::info!(id, seconds, ok = result.is_ok(), "restore finished");
        self.catalog.update(|c| c.restores.push(record))?;
        result?;
        Ok(RestoreReport {
            id,
            tenant: request.tenant.id(),
            into: request.into.id(),
            in_place,
            target,
            source_backup,
            single_database,
            sessions_terminated: outcome.sessions,
            grants_reapplied: outcome.reapplied,
            steps: steps.done,
            seconds,
        })
    }

    fn restore_steps(
        &self,
        request: &RestoreRequest,
        source: &Source,
        reapply: &TenantReapply<'_>,
        steps: &mut Steps<'_>,
        outcome: &mut Outcome,
    ) -> Result<(), BackupError> {
        let source_db = request.tenant.database();
        let target_db = request.into.database();
        let mut scratch = None;
        let mut discarding = None;
        let mut snapshot = None;
        let dump = match source {
            Source::Physical {
                set,
                version,
                time,
                single_database,
            } => {
                let what = prelude::recovery_target(*time);
                let only = if *single_database {
                    format!(" holding only {source_db}")
                } else {
                    " (whole cluster)".to_string()
                };
                steps.begin(&format!(
                    "restoring backup {} {what} into a scratch cluster{only}",
                    set.label
                ));
                let (mut cluster, rest) = self.scratch_cluster("restore", version)?;
                let args = prelude::scratch_restore_args(
                    &cluster.data_dir(),
                    &set.label,
                    single_database.then_some(source_db.as_str()),
                    *time,
                );
                rest.run("restore", &args)?;
                start_scratch(&mut cluster)
                    .map_err(|source| BackupError::ScratchRecovery { what, source })?;

                steps.begin(&format!(
                    "pg_dump -Fc of {source_db} from the scratch cluster"
                ));
                let superuser = self.scratch_superuser(&cluster, &source_db)?;
                let dump = cluster.dir().join(DUMP_FILE);
                let mut cmd = scratch_pg_dump(&cluster, &superuser, &source_db, &dump);
                process::run_quiet(&mut cmd)?;
                pgtenant_engine::rotate::failpoint("restore:after-scratch-dump");
                snapshot = Some(sql::block_on(objects_at(sql::connect_socket(
                    &cluster.socket_dir(),
                    cluster.port(),
                    &superuser,
                    &source_db,
                )))??);
                // The dump is all we need; free the scratch server and its data now.
                discarding = Some(cluster.discard_data()?);
                scratch = Some(cluster);
                dump
            }
            Source::Logical { id } => {
                steps.begin(&format!("checking logical backup {id} (SHA-256)"));
                self.checked_logical(id)?.1
            }
        };

        steps.begin(&format!(
            "pg_restore --clean --if-exists into {target_db} as {} (one transaction), then \
             ownership and grants",
            request.login.user
        ));
        if request.into == request.tenant {
            outcome.sessions = self.terminate_sessions(&target_db)?;
            if outcome.sessions > 0 {
                steps.progress.warn(&format!(
                    "terminated {} open session(s) on {target_db} for the in-place restore",
                    outcome.sessions
                ));
            }
        }
        let prelude = match &snapshot {
            Some(snapshot) => {
                self.drop_newer_objects(&target_db, &request.owner, snapshot, steps)?
            }
            None => String::new(),
        };
        self.pg_restore(
            &dump,
            &target_db,
            &request.login,
            request.into != request.tenant,
            &prelude,
        )?;
        let failed = |message: String| BackupError::Reapply {
            tenant: request.into.id(),
            message,
        };
        let applied = reapply
            .run(&request.into.id())
            .map_err(|e| failed(pgtenant_engine::error_chain(&e)))?;
        if let Some(error) = applied.outcome.failed().find_map(|t| t.error.as_ref()) {
            return Err(failed(error.to_string()));
        }
        outcome.reapplied = applied.outcome.applied();

        if let Some(cluster) = scratch {
            steps.begin("removing the scratch cluster");
            if let Some(thread) = discarding {
                let _ = thread.join();
            }
            remove_scratch(cluster);
        }
        Ok(())
    }

    fn resolve_source(
        &self,
        tenant: &TenantName,
        point: &RestorePoint,
        progress: &mut dyn Progress,
    ) -> Result<Source, BackupError> {
        let database = tenant.database();
        match point {
            RestorePoint::Backup(id) => {
                let info = self.rest.as_ref().map(PgBackRest::info).transpose()?;
                let set = info.as_ref().and_then(|info| {
                    info.backup
                        .iter()
                        .find(|b| &b.label == id)
                        .map(|b| (info, b))
                });
                if let Some((info, set)) = set {
                    let version = prelude::set_version(info, set);
                    if !self.set_has_database(set, &database)? {
                        return Err(BackupError::Restore(format!(
                            "database {database} is not in backup {id} (taken {}): it did not \
                             exist then",
                            set.stopped()
                        )));
                    }
                    return Ok(Source::Physical {
                        set: Box::new(set.clone()),
                        version,
                        time: None,
                        single_database: true,
                    });
                }
                let catalog = self.catalog.load()?;
                let entry = catalog
                    .logical
                    .iter()
                    .find(|b| &b.id == id)
                    .ok_or_else(|| BackupError::UnknownBackup(id.clone()))?;
                prelude::check_logical_tenant(id, &entry.tenant, tenant)?;
                Ok(Source::Logical { id: id.clone() })
            }
            RestorePoint::Time(target) => {
                let target = *target;
                let rest = self.rest("a point-in-time restore")?;
                let mut info = rest.info()?;
                if info.backup.is_empty() {
                    return Err(BackupError::NoBackups);
                }
                let window = self.window(&info);
                prelude::check_time_target(target, Timestamp::now(), &window, self.retention.days)?;
                // Recovery stops at the first commit after the target and fails if the archived
                // WAL ends before one: write a commit now and archive its segment. Needed even for
                // old targets (a cluster idle since then has no later commit), and an archived
                // segment's time says nothing about which commits it holds.
                self.archive_now(progress)?;
                info = rest.info()?;
                let set = prelude::set_for_time(&info.backup, target)
                    .ok_or_else(|| {
                        prelude::outside_window(target, &window, "no backup ends before it".into())
                    })?
                    .clone();
                let version = prelude::set_version(&info, &set);
                let single_database = self.set_has_database(&set, &database)?;
                if !single_database {
                    progress.warn(&format!(
                        "database {database} is not in backup {} (it was created after that \
                         backup): --db-include needs it there, so the whole cluster is restored \
                         into the scratch directory instead",
                        set.label
                    ));
                }
                Ok(Source::Physical {
                    set: Box::new(set),
                    version,
                    time: Some(target),
                    single_database,
                })
            }
        }
    }

    fn set_has_database(&self, set: &BackupSet, database: &str) -> Result<bool, BackupError> {
        let detailed = self.rest("reading a backup set")?.set_info(&set.label)?;
        Ok(prelude::set_holds(detailed, database))
    }

    /// Writes a commit record now and waits until its WAL segment is in the archive, so that
    /// recovery to any earlier instant finds a commit past it (PostgreSQL stops at the first
    /// commit after the target; running out of WAL before one is an error).
    fn archive_now(&self, progress: &mut dyn Progress) -> Result<(), BackupError> {
        sql::block_on(async {
            let client = sql::connect(&self.control_url, None).await?;
            client
                .simple_query("SELECT pg_catalog.txid_current()")
                .await
                .map_err(|e| sql::sql_error("writing a commit record", e))
        })??;
        // `check` switches to a new WAL segment and waits until the old one is archived.
        if let Err(e) = self.rest("a point-in-time restore")?.run("check", &[]) {
            match self.cluster {
                Cluster::Embedded { .. } => return Err(e),
                Cluster::External { .. } => progress.warn(&format!(
                    "could not force a WAL switch with `pgbackrest check` ({e}); the restore can \
                     reach only what archive_timeout has archived"
                )),
            }
        }
        Ok(())
    }
}
