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

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pgtenant_cluster::{ScratchCluster, ServerUser};
use pgtenant_engine::reconcile::TenantReapply;
use serde::Serialize;

use crate::catalog::{RestoreRecord, Verification, VerifiedDatabase};
use crate::libpq::{clear_pg_env, ServerAddress};
use crate::pgbackrest::{BackupSet, PgBackRest, StanzaInfo};
use crate::timestamp::Timestamp;
use crate::{process, sql, BackupError, Backups, Cluster, Login, TenantName};

/// How long a scratch server may take to replay WAL up to the target.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// The dump file inside a scratch directory.
const DUMP_FILE: &str = "database.pgdump";

/// Where progress and warnings go (the CLI draws them; tests ignore them).
pub trait Progress {
    /// Step `number` of `total` begins.
    fn step(&mut self, number: usize, total: usize, title: &str);
    fn warn(&mut self, message: &str);
}

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
pub struct StepTiming {
    pub step: String,
    pub seconds: f64,
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

/// Times the steps of a run and reports them to the progress display.
struct Steps<'p> {
    progress: &'p mut dyn Progress,
    total: usize,
    done: Vec<StepTiming>,
    current: Option<(String, Instant)>,
}

impl<'p> Steps<'p> {
    fn new(progress: &'p mut dyn Progress, total: usize) -> Self {
        Steps {
            progress,
            total,
            done: Vec::new(),
            current: None,
        }
    }

    fn begin(&mut self, title: &str) {
        self.finish();
        let number = self.done.len() + 1;
        tracing::info!(step = number, total = self.total, title, "step begins");
        self.progress.step(number, self.total, title);
        self.current = Some((title.to_string(), Instant::now()));
    }

    fn finish(&mut self) {
        if let Some((step, started)) = self.current.take() {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(title = step, seconds, "step done");
            self.done.push(StepTiming { step, seconds });
        }
    }
}

/// What steps 1 and 2 start from.
enum Source {
    Physical {
        set: Box<BackupSet>,
        /// PostgreSQL major version of the backup.
        version: String,
        /// `Some(target)` for a time target, None for the end of the set.
        time: Option<Timestamp>,
        single_database: bool,
    },
    Logical {
        id: String,
    },
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
        let (target_kind, target) = match &request.point {
            RestorePoint::Time(t) => ("time", t.to_rfc3339()),
            RestorePoint::Backup(id) => ("backup", id.clone()),
        };
        let (source_backup, single_database, total) = match &source {
            Source::Physical {
                set,
                single_database,
                ..
            } => (set.label.clone(), *single_database, 4),
            Source::Logical { id } => (id.clone(), false, 2),
        };
        let id = format!(
            "{}R-{}.{}",
            started.compact(),
            request.into.namespace,
            request.into.name
        );
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
                let what = match time {
                    Some(t) => format!("to {t}"),
                    None => "to its end".to_string(),
                };
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
                let mut args = vec![
                    format!("--pg1-path={}", cluster.data_dir().display()),
                    format!("--set={}", set.label),
                    "--archive-mode=off".to_string(),
                ];
                if *single_database {
                    args.push(format!("--db-include={source_db}"));
                }
                match time {
                    Some(t) => args.extend([
                        "--type=time".to_string(),
                        format!("--target={}", t.to_postgres()),
                        "--target-action=promote".to_string(),
                    ]),
                    None => args.extend([
                        "--type=immediate".to_string(),
                        "--target-action=promote".to_string(),
                    ]),
                }
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

    /// The live database must exist: a restore fills a database, it does not create one.
    fn require_database(&self, tenant: &TenantName) -> Result<(), BackupError> {
        let database = tenant.database();
        let exists = sql::block_on(async {
            let client = sql::connect(&self.control_url, None).await?;
            client
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) $1",
                    &[&database],
                )
                .await
                .map_err(|e| sql::sql_error("looking up the database", e))
                .map(|row| row.is_some())
        })??;
        if !exists {
            return Err(BackupError::Restore(format!(
                "database {database} does not exist on the cluster: declare {} in the apps repo \
                 and run `pgtenant apply` first",
                tenant.id()
            )));
        }
        Ok(())
    }

    /// The rules of a restore into another database than the tenant's own, checked before
    /// anything is touched: the same namespace unless `--allow-cross-namespace`; a database with no
    /// objects of its own, and not a protected one, unless `--replace`.
    fn check_into(&self, request: &RestoreRequest) -> Result<(), BackupError> {
        let (tenant, into) = (&request.tenant, &request.into);
        if into == tenant {
            return Ok(());
        }
        let refuse = |rule: String, flag: &str| {
            Err(BackupError::Restore(format!(
                "not restoring {} into {}: {rule}; nothing was changed (pass {flag} if that is \
                 what you want)",
                tenant.id(),
                into.id()
            )))
        };
        if into.namespace != tenant.namespace && !request.allow_cross_namespace {
            return refuse(
                format!(
                    "a restore goes only into a database of the same namespace ({}), and {} is \
                     namespace {}'s",
                    tenant.namespace,
                    into.id(),
                    into.namespace
                ),
                "--allow-cross-namespace",
            );
        }
        if request.replace {
            return Ok(());
        }
        let database = into.database();
        let (comment, objects) = sql::block_on(async {
            let client = sql::connect(&self.control_url, None).await?;
            let comment: Option<String> = client
                .query_one(
                    "SELECT pg_catalog.shobj_description(oid, 'pg_database') \
                     FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) $1",
                    &[&database],
                )
                .await
                .map_err(|e| sql::sql_error("reading the database's comment", e))?
                .get(0);
            let objects =
                user_objects(&sql::connect(&self.control_url, Some(&database)).await?).await?;
            Ok::<_, BackupError>((comment, objects))
        })??;
        let protected = comment
            .as_deref()
            .and_then(pgtenant_engine::desired::Marker::parse)
            .is_some_and(|m| m.mode == Some(pgtenant_spec::Mode::Protected));
        if protected {
            return refuse(
                format!(
                    "{} is a protected database, which a restore replaces only when told to",
                    into.id()
                ),
                "--replace",
            );
        }
        if !objects.is_empty() {
            let more = if objects.len() > USER_OBJECTS_NAMED {
                format!(" and {} more", objects.len() - USER_OBJECTS_NAMED)
            } else {
                String::new()
            };
            return refuse(
                format!(
                    "a restore goes only into an empty database, and {database} holds {}{more}",
                    objects[..objects.len().min(USER_OBJECTS_NAMED)].join(", ")
                ),
                "--replace",
            );
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
                    let version = set_version(info, set);
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
                if entry.tenant != tenant.id() {
                    return Err(BackupError::Restore(format!(
                        "logical backup {id} holds {}, not {}: restore it as `pgtenant restore {} \
                         --backup {id} --into {}`",
                        entry.tenant,
                        tenant.id(),
                        entry.tenant,
                        tenant.id()
                    )));
                }
                Ok(Source::Logical { id: id.clone() })
            }
            RestorePoint::Time(target) => {
                let target = *target;
                let rest = self.rest("a point-in-time restore")?;
                let mut info = rest.info()?;
                if info.backup.is_empty() {
                    return Err(BackupError::NoBackups);
                }
                let mut window = self.window(&info);
                let outside = |window: &crate::Window, reason: String| BackupError::OutsideWindow {
                    target: target.to_string(),
                    window: window.to_string(),
                    reason,
                };
                let now = Timestamp::now();
                if target > now {
                    window.latest = Some(now);
                    return Err(outside(
                        &window,
                        format!("it is in the future (now is {now})"),
                    ));
                }
                let earliest = window.earliest.expect("there are backups");
                if target < earliest {
                    return Err(outside(
                        &window,
                        format!(
                            "it is before the end of the oldest backup kept (retention: {} days)",
                            self.retention.days
                        ),
                    ));
                }
                // Recovery stops at the first commit after the target and fails if the archived
                // WAL ends before one: write a commit now and archive its segment. Needed even for
                // old targets (a cluster idle since then has no later commit), and an archived
                // segment's time says nothing about which commits it holds.
                self.archive_now(progress)?;
                info = rest.info()?;
                let set = info
                    .backup
                    .iter()
                    .filter(|b| Timestamp::from_unix(b.timestamp.stop + 1) <= target)
                    .max_by_key(|b| b.timestamp.stop)
                    .ok_or_else(|| outside(&window, "no backup ends before it".into()))?
                    .clone();
                let version = set_version(&info, &set);
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
        Ok(detailed
            .databases
            .unwrap_or_default()
            .iter()
            .any(|d| d.name == database))
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

    /// A scratch cluster for a restore of a backup of PostgreSQL `version`, and the pgBackRest
    /// to fill it with (running as the account the scratch server runs as). `kind` starts its
    /// directory's name, which is short: the server's socket path must fit in 107 bytes.
    fn scratch_cluster(
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

    /// Ends the sessions on `database` that the control role may end (those of the tenant's
    /// roles); returns how many.
    fn terminate_sessions(&self, database: &str) -> Result<u64, BackupError> {
        let database = database.to_string();
        sql::block_on(async {
            let client = sql::connect(&self.control_url, None).await?;
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) \
                     FROM pg_catalog.pg_stat_activity \
                     WHERE datname OPERATOR(pg_catalog.=) $1 \
                     AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid() \
                     AND pg_catalog.pg_has_role(usesysid, 'MEMBER')",
                    &[&database],
                )
                .await
                .map_err(|e| sql::sql_error("terminating sessions", e))?;
            Ok(row.get::<_, i64>(0) as u64)
        })?
    }

    /// `prelude`: statements dropping what exists in `database` but did not exist in the snapshot
    /// (tables created after the target time), so that the result equals the snapshot; it runs
    /// in the same transaction as the restore.
    fn drop_newer_objects(
        &self,
        database: &str,
        owner: &str,
        snapshot: &Objects,
        steps: &mut Steps<'_>,
    ) -> Result<String, BackupError> {
        let live = sql::block_on(async {
            objects_at(sql::connect(&self.control_url, Some(database))).await
        })??;
        let admin = owner.to_string();
        let mut prelude = String::new();
        let mut kept = Vec::new();
        for (schema, owner) in &live.schemas {
            if snapshot.schemas.contains_key(schema) {
                continue;
            }
            if owner == &admin {
                prelude.push_str(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE;\n",
                    quote(schema)
                ));
            } else {
                kept.push(format!("schema {schema} (owned by {owner})"));
            }
        }
        for ((schema, name), (kind, owner)) in &live.relations {
            if snapshot
                .relations
                .contains_key(&(schema.clone(), name.clone()))
                || !snapshot.schemas.contains_key(schema)
                    && live.schemas.get(schema) == Some(&admin)
            {
                continue;
            }
            let Some(keyword) = drop_keyword(kind) else {
                continue;
            };
            if owner == &admin {
                prelude.push_str(&format!(
                    "DROP {keyword} IF EXISTS {}.{} CASCADE;\n",
                    quote(schema),
                    quote(name)
                ));
            } else {
                kept.push(format!(
                    "{} {schema}.{name} (owned by {owner})",
                    keyword.to_lowercase()
                ));
            }
        }
        if !kept.is_empty() {
            steps.progress.warn(&format!(
                "kept objects created after the restore target that {admin} does not own: {}",
                kept.join(", ")
            ));
        }
        Ok(prelude)
    }

    /// `pg_restore --clean --if-exists` of `dump` into `database` as `admin`, in one transaction
    /// that starts with `prelude`.
    ///
    /// pg_restore writes the script and psql runs it with `--single-transaction`, after the
    /// prelude; the transaction commits only if the whole script arrived (a sentinel line that
    /// pgtenant appends once pg_restore has succeeded), so a failure or a kill at any point
    /// rolls everything back.
    ///
    /// `--no-owner`: everything restored is owned by the admin role, which is what the tenant
    /// model wants, and a dump of another tenant names owners that do not apply here. Privileges
    /// (`GRANT`s, default privileges) are kept for an in-place restore, where they name the same
    /// roles and reproduce the snapshot exactly, and dropped (`--no-acl`) into another tenant's
    /// database, where they would grant the source tenant's roles; the engine's re-apply then
    /// gives the target tenant's roles what they should have.
    fn pg_restore(
        &self,
        dump: &Path,
        database: &str,
        admin: &Login,
        other_tenant: bool,
        prelude: &str,
    ) -> Result<(), BackupError> {
        let binaries = self.client_binaries()?;
        let address = ServerAddress::from_admin_url(&self.control_url)?;
        let work = tempfile::Builder::new()
            .prefix("restore-sql-")
            .tempdir_in(&self.root)
            .map_err(|source| BackupError::Io {
                path: self.root.clone(),
                source,
            })?;
        let prelude_file = work.path().join("prelude.sql");
        let finish_file = work.path().join("finish.sql");
        crate::write_private_file(
            &prelude_file,
            format!("-- pgtenant: objects newer than the restore target\n{prelude}").as_bytes(),
        )?;
        crate::write_private_file(&finish_file, FINISH_SQL.as_bytes())?;

        let mut script = Command::new(binaries.program("pg_restore"));
        clear_pg_env(&mut script);
        script.args(["--clean", "--if-exists", "--no-owner"]);
        if other_tenant {
            script.arg("--no-acl");
        }
        script.args(["-f", "-"]).arg(dump);

        let mut psql = Command::new(binaries.program("psql"));
        clear_pg_env(&mut psql);
        address.apply(&mut psql, &admin.user, &admin.password, database);
        psql.env("PGOPTIONS", "-c client_min_messages=warning")
            .args([
                "-X",
                "-q",
                "--no-password",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
            ])
            .arg("-f")
            .arg(&prelude_file)
            .args(["-f", "-", "-f"])
            .arg(&finish_file);
        process::pipe_script(&mut script, &mut psql, SENTINEL).map_err(|source| {
            BackupError::RolledBack {
                database: database.to_string(),
                source: Box::new(source),
            }
        })
    }

    /// Roles to log in to a scratch cluster with (any existing role may: the socket is private):
    /// the bootstrap superuser's usual name and the control role.
    fn scratch_logins(&self) -> Vec<String> {
        let control = pgtenant_engine::Connector::from_url(&self.control_url)
            .ok()
            .and_then(|c| c.user().map(str::to_string));
        [Some(pgtenant_cluster::SUPERUSER.to_string()), control]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The bootstrap superuser of a scratch cluster, after checking that `database` exists in it.
    fn scratch_superuser(
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
            let set = match id {
                Some(id) => info.backup.iter().find(|b| b.label == id),
                None => info.backup.iter().max_by_key(|b| b.timestamp.stop),
            }
            .ok_or_else(|| match id {
                Some(id) => BackupError::UnknownBackup(id.to_string()),
                None => BackupError::NoBackups,
            })?
            .clone();
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
            &[
                format!("--pg1-path={}", cluster.data_dir().display()),
                format!("--set={}", set.label),
                "--archive-mode=off".into(),
                "--type=immediate".into(),
                "--target-action=promote".into(),
            ],
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

/// Starts a scratch server (WAL replay up to the target included), timed in the logs.
fn start_scratch(cluster: &mut ScratchCluster) -> Result<(), pgtenant_cluster::ClusterError> {
    let clock = Instant::now();
    let result = cluster.start(RECOVERY_TIMEOUT);
    let seconds = clock.elapsed().as_secs_f64();
    tracing::info!(seconds, ok = result.is_ok(), "scratch cluster started");
    result
}

/// Stops a scratch server and removes its files, timed in the logs.
fn remove_scratch(cluster: ScratchCluster) {
    let clock = Instant::now();
    drop(cluster);
    let seconds = clock.elapsed().as_secs_f64();
    tracing::info!(seconds, "scratch cluster stopped and removed");
}

/// Appended to the script once pg_restore has written all of it; [`FINISH_SQL`] refuses to commit
/// without it.
const SENTINEL: &[u8] = b"\n\\set pgtenant_restore_complete on\n";

const FINISH_SQL: &str = "\\if :{?pgtenant_restore_complete}
\\else
DO $$BEGIN RAISE EXCEPTION 'the restore script was cut short; rolling back'; END$$;
\\endif
";

/// How many of the objects found in a database that is not empty the refusal names.
const USER_OBJECTS_NAMED: usize = 5;

/// The objects users made in the database `client` is in (what `CREATE` made, not what initdb or
/// an extension did; empty schemas, as apply creates them, do not count): relations, routines,
/// types of their own, as `kind schema.name`, at most a few hundred.
async fn user_objects(client: &tokio_postgres::Client) -> Result<Vec<String>, BackupError> {
    let rows = client
        .query(
            "WITH user_schema AS ( \
               SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n \
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_(toast|temp_)'), \
             object AS ( \
               SELECT 'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid, \
                 CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' \
                   WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' \
                   WHEN 'c' THEN 'type' ELSE 'table' END AS kind, s.nspname, c.relname::text AS name \
               FROM pg_catalog.pg_class c JOIN user_schema s ON s.oid OPERATOR(pg_catalog.=) c.relnamespace \
               WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c') \
               UNION ALL \
               SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 'routine', s.nspname, p.proname::text \
               FROM pg_catalog.pg_proc p JOIN user_schema s ON s.oid OPERATOR(pg_catalog.=) p.pronamespace \
               UNION ALL \
               SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, 'type', s.nspname, t.typname::text \
               FROM pg_catalog.pg_type t JOIN user_schema s ON s.oid OPERATOR(pg_catalog.=) t.typnamespace \
               WHERE t.typrelid OPERATOR(pg_catalog.=) 0 AND t.typtype OPERATOR(pg_catalog.<>) 'm' \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e \
                 WHERE e.typarray OPERATOR(pg_catalog.=) t.oid)) \
             SELECT o.kind || ' ' || o.nspname || '.' || o.name FROM object o \
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
               WHERE d.classid OPERATOR(pg_catalog.=) o.classid \
               AND d.objid OPERATOR(pg_catalog.=) o.oid \
               AND d.deptype OPERATOR(pg_catalog.=) 'e') \
             ORDER BY 1 LIMIT 500",
            &[],
        )
        .await
        .map_err(|e| sql::sql_error("listing the database's objects", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Schemas and relations of a database, with their owners.
#[derive(Debug, Default)]
struct Objects {
    schemas: BTreeMap<String, String>,
    /// (schema, name) → (relkind, owner)
    relations: BTreeMap<(String, String), (String, String)>,
}

/// The user-made schemas and relations (not extension members) of the database `client` is in.
async fn objects_at(
    client: impl std::future::Future<Output = Result<tokio_postgres::Client, BackupError>>,
) -> Result<Objects, BackupError> {
    let client = client.await?;
    let not_extension = "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
         WHERE d.classid OPERATOR(pg_catalog.=) {table}::pg_catalog.regclass \
         AND d.objid OPERATOR(pg_catalog.=) {oid} AND d.deptype OPERATOR(pg_catalog.=) 'e')";
    let user_schema = "{name} NOT IN ('pg_catalog', 'information_schema') \
         AND {name} !~ '^pg_(toast|temp_)'";
    let schemas = client
        .query(
            &format!(
                "SELECT n.nspname::text, pg_catalog.pg_get_userbyid(n.nspowner)::text \
                 FROM pg_catalog.pg_namespace n WHERE {} AND {}",
                user_schema.replace("{name}", "n.nspname"),
                not_extension
                    .replace("{table}", "'pg_catalog.pg_namespace'")
                    .replace("{oid}", "n.oid")
            ),
            &[],
        )
        .await
        .map_err(|e| sql::sql_error("listing schemas", e))?;
    let relations = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text, \
                 pg_catalog.pg_get_userbyid(c.relowner)::text \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {} AND {}",
                user_schema.replace("{name}", "n.nspname"),
                not_extension
                    .replace("{table}", "'pg_catalog.pg_class'")
                    .replace("{oid}", "c.oid")
            ),
            &[],
        )
        .await
        .map_err(|e| sql::sql_error("listing relations", e))?;
    Ok(Objects {
        schemas: schemas.iter().map(|r| (r.get(0), r.get(1))).collect(),
        relations: relations
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect(),
    })
}

fn drop_keyword(relkind: &str) -> Option<&'static str> {
    Some(match relkind {
        "r" | "p" => "TABLE",
        "v" => "VIEW",
        "m" => "MATERIALIZED VIEW",
        "f" => "FOREIGN TABLE",
        "S" => "SEQUENCE",
        _ => return None,
    })
}

/// An identifier, always double-quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The major version a backup set was taken from.
fn set_version(info: &StanzaInfo, set: &BackupSet) -> String {
    info.db
        .iter()
        .find(|db| db.id == set.database.id)
        .or(info.db.last())
        .map(|db| db.version.clone())
        .unwrap_or_default()
}

/// pg_dump of `database` from a scratch cluster over its private socket, uncompressed: the dump is
/// read once, seconds later (or thrown away by `verify`), so compression would only cost time.
fn scratch_pg_dump(
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
