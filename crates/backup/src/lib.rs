//! Backups and point-in-time restore of tenant databases on a shared cluster.
//!
//! Real engines, orchestrated:
//! - **physical backups and WAL archiving: pgBackRest.** For the embedded cluster pgtenant writes
//!   the stanza's configuration, turns on archiving (`archive_timeout` = [`ARCHIVE_TIMEOUT_SECS`],
//!   the recovery point objective) and creates the stanza; an external cluster brings its own
//!   configuration file and stanza. Retention follows the environment tier.
//! - **logical backups of one tenant: `pg_dump`** (custom format, or parallel directory format
//!   for large databases) into the repository, with a catalog entry.
//! - **restore of one tenant database to a point in time** ([`Backups::restore`]): the seed's
//!   manual procedure, automated — the cluster backup is restored into a scratch cluster holding
//!   only that database (`--db-include`), recovered to the target time, dumped with `pg_dump -Fc`
//!   and restored into the live database with `pg_restore --clean --if-exists` as the tenant's
//!   admin role, in one transaction. Other tenants are never touched.
//!
//! Layout of the repository (`<state-dir>/backups`):
//!
//! ```text
//! pgbackrest.conf         the embedded stanza's configuration (generated; 0600, server account)
//! repo/                   pgBackRest repo1-path (0700, server account)
//! log/, lock/             pgBackRest's logs and locks (0700, server account)
//! logical/<ns>/<db>/      logical backups (pg_dump), 0700
//! scratch/<id>-<random>/  scratch clusters of running restores and verifications (0700, server
//!                         account)
//! catalog.json            logical backups, restores, verifications, retention settings (0600)
//! ```
//!
//! Every file is 0600 and every directory 0700, whatever the process umask: the programs run here
//! get umask 0077 ([`private_output`]) and pgBackRest uses it (`neutral-umask=n`). Only when we
//! are root and the server runs as another account are the repository and `scratch/` 0711, so
//! that account can pass through to what it owns below them; nothing there can be listed.

mod catalog;
mod libpq;
mod logical;
mod pgbackrest;
mod process;
mod restore;
mod sql;
mod timestamp;
pub mod trash;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pgtenant_cluster::{ClusterError, EmbeddedCluster, ServerUser};
use serde::Serialize;

pub use catalog::{
    try_lock_file, Catalog, CatalogFile, LogicalBackup, RestoreRecord, Settings, Verification,
    VerifiedDatabase,
};
pub use libpq::ServerAddress;
pub use pgbackrest::{BackupSet, PgBackRest, StanzaInfo, EMBEDDED_STANZA};
pub use process::private_output;
pub use restore::{Progress, RestorePoint, RestoreReport, RestoreRequest, StepTiming};
pub use timestamp::Timestamp;

/// `archive_timeout` of the embedded cluster: a segment with any write in it is archived at most
/// this many seconds later, which bounds the data a lost server can take with it (RPO).
pub const ARCHIVE_TIMEOUT_SECS: u32 = 60;

/// Databases larger than this get a parallel directory-format logical backup.
pub const PARALLEL_DUMP_BYTES: i64 = 1 << 30;

const CONFIG_FILE: &str = "pgbackrest.conf";
const REPO_DIR: &str = "repo";
const LOG_DIR: &str = "log";
const LOCK_DIR: &str = "lock";
const LOGICAL_DIR: &str = "logical";
const SCRATCH_DIR: &str = "scratch";
const SCRATCH_LOCK: &str = "scratch.lock";
/// What `backup run` is, for the error when it cannot run.
const BACKUP_RUN: &str = "a physical backup of the cluster (`backup run`)";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("pgBackRest is not installed (no `pgbackrest` on PATH): apt-get install pgbackrest")]
    PgBackRestMissing,

    #[error("`{command}` failed ({status}){}", indent(output))]
    Command {
        /// Never holds a secret: passwords travel in the environment.
        command: String,
        status: String,
        output: String,
    },

    #[error("could not run {}", program.display())]
    Spawn { program: PathBuf, source: io::Error },

    #[error("I/O error on {}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error(transparent)]
    Cluster(#[from] ClusterError),

    #[error("{0}")]
    Parse(String),

    /// JSON that pgtenant reads (the catalog, `pgbackrest info`) did not parse.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A connection or statement failed: the source is kept, and with it the server's SQLSTATE
    /// ([`BackupError::sqlstate`]).
    #[error("{what}: {}", one_line(source.as_ref()))]
    Sql {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// No role of the candidates could log in to a scratch cluster.
    #[error("{0}")]
    NoLogin(&'static str),

    #[error("{0}")]
    Config(String),

    /// The admin URL does not parse (its own message says why).
    #[error(transparent)]
    Postgres(#[from] pgtenant_pg::Error),

    #[error("no backup `{0}`: `pgtenant backup list` shows the backups")]
    UnknownBackup(String),

    #[error("there is no backup yet: run `pgtenant backup run` first")]
    NoBackups,

    #[error(
        "{0} needs pgBackRest, which this cluster given with --admin-url has not been set up \
         with: give its existing --pgbackrest-config FILE and --stanza NAME (or \
         PGTENANT_PGBACKREST_CONFIG and PGTENANT_PGBACKREST_STANZA); logical backups \
         (`pgtenant backup NS/DB`, `restore --backup <logical id>`) need neither"
    )]
    NoPgBackRest(&'static str),

    #[error("{target} is outside the restorable window {window}: {reason}; nothing was changed")]
    OutsideWindow {
        target: String,
        window: String,
        reason: String,
    },

    #[error("{0}")]
    Restore(String),

    #[error("the scratch cluster did not recover {what}: {source}")]
    ScratchRecovery {
        what: String,
        #[source]
        source: ClusterError,
    },

    #[error(
        "restoring into {database} failed and was rolled back: the database is as it was \
         before the restore\n{source}"
    )]
    RolledBack {
        database: String,
        #[source]
        source: Box<BackupError>,
    },

    #[error(
        "the data of {tenant} is restored, but re-applying its ownership and grants failed \
         (run `pgtenant apply` to finish): {message}"
    )]
    Reapply { tenant: String, message: String },

    #[error(
        "logical backup {id} is damaged: its SHA-256 is {actual}, the catalog recorded {expected}"
    )]
    Checksum {
        id: String,
        expected: String,
        actual: String,
    },
}

impl BackupError {
    /// The SQLSTATE of the server error behind this one, wherever it sits in the chain.
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = next {
            if let Some(code) = error
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(tokio_postgres::Error::code)
            {
                return Some(code);
            }
            next = error.source();
        }
        None
    }
}

/// An error and its causes on one line, each text once: some errors (tokio_postgres's) already
/// end with their cause's text.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

fn indent(output: &str) -> String {
    output
        .lines()
        .map(|line| format!("\n  {line}"))
        .collect::<String>()
}

/// The environment tier, which sets the default retention: the spec's type, one definition.
pub use pgtenant_spec::Environment;

/// Retention as given on the command line; what is not given comes from the last command that
/// gave it, else the dev tier.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionChoice {
    pub environment: Option<Environment>,
    pub days: Option<u32>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Retention {
    pub environment: Environment,
    pub days: u32,
}

/// The cluster whose backups these are.
#[derive(Debug, Clone)]
pub enum Cluster {
    /// pgtenant's own cluster: pgtenant configures archiving and the stanza.
    Embedded {
        cluster: EmbeddedCluster,
        superuser_url: String,
    },
    /// A cluster given by URL: logical backups (pg_dump) need nothing more; physical backups and
    /// point-in-time restores need the pgBackRest stanza its operators configured.
    External { pgbackrest: Option<ExternalStanza> },
}

/// An external cluster's pgBackRest setup: its configuration file and stanza.
#[derive(Debug, Clone)]
pub struct ExternalStanza {
    pub config: PathBuf,
    pub stanza: String,
}

/// A tenant database as users name it: the spec's [`TenantId`](pgtenant_spec::TenantId), whose
/// `id()` is `NAMESPACE/NAME` and `database()` is `<namespace>-<name>`.
pub type TenantName = pgtenant_spec::TenantId;

/// Credentials of a tenant role, for pg_dump and pg_restore.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, ***)", self.user)
    }
}

/// The backups of one cluster, kept in one repository directory.
pub struct Backups {
    root: PathBuf,
    /// The mode of the directories the server's account passes through ([`passage_mode`]).
    passage: u32,
    cluster: Cluster,
    control_url: String,
    /// None for an external cluster without a pgBackRest setup: logical backups only.
    rest: Option<PgBackRest>,
    retention: Retention,
    catalog: CatalogFile,
}

/// What `backup run` did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub backup: PhysicalBackup,
    pub seconds: f64,
    pub restarted_cluster: bool,
    pub expired: ExpireReport,
}

/// What `backup expire` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExpireReport {
    pub retention: Option<Retention>,
    pub physical: Vec<String>,
    pub logical: Vec<String>,
}

/// A pgBackRest backup set as `backup list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PhysicalBackup {
    pub id: String,
    /// full, diff or incr.
    #[serde(rename = "type")]
    pub kind: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub size_bytes: u64,
    pub repo_size_bytes: u64,
    pub prior: Option<String>,
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
}

impl From<&BackupSet> for PhysicalBackup {
    fn from(set: &BackupSet) -> Self {
        PhysicalBackup {
            id: set.label.clone(),
            kind: set.kind.clone(),
            started: set.started(),
            finished: set.stopped(),
            size_bytes: set.info.size,
            repo_size_bytes: set.info.repository.size,
            prior: set.prior.clone(),
            wal_start: set.archive.start.clone(),
            wal_stop: set.archive.stop.clone(),
        }
    }
}

/// The span of time a tenant database can be restored to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    /// The end of the oldest backup: recovery must get past it to be consistent.
    pub earliest: Option<Timestamp>,
    /// When the newest archived WAL segment reached the repository (None if unknown).
    pub latest: Option<Timestamp>,
    pub wal_min: Option<String>,
    pub wal_max: Option<String>,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.earliest, &self.latest) {
            (Some(a), Some(b)) if a == b => write!(
                f,
                "{a} only (the end of the backup: later writes become restorable as their WAL is \
                 archived)"
            ),
            (Some(a), Some(b)) => write!(f, "{a} … {b}"),
            (Some(a), None) => write!(f, "{a} … the last archived WAL"),
            _ => write!(f, "(empty: no backup)"),
        }
    }
}

/// What `backup list` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// None for an external cluster without pgBackRest (logical backups only).
    pub stanza: Option<String>,
    pub repository: PathBuf,
    pub retention: Retention,
    pub rpo_seconds: Option<u32>,
    pub window: Window,
    pub physical: Vec<PhysicalBackup>,
    pub logical: Vec<LogicalBackup>,
    pub restores: Vec<RestoreRecord>,
    pub verifications: Vec<Verification>,
}

impl Backups {
    /// The repository at `root` (`<state-dir>/backups`), created if missing, for `cluster`;
    /// `control_url` reaches the cluster as the control role. Writes the embedded stanza's
    /// configuration (retention included) when it changed.
    pub fn open(
        root: &Path,
        cluster: Cluster,
        control_url: String,
        choice: RetentionChoice,
    ) -> Result<Self, BackupError> {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let server_user = match &cluster {
            Cluster::Embedded { cluster, .. } => cluster.server_user()?,
            // pgBackRest runs as the database's account by convention: `postgres` when we are root,
            // so that nothing in the repository ends up owned by root.
            Cluster::External {
                pgbackrest: Some(_),
            } => ServerUser::for_new_cluster()?,
            // Logical backups only: nothing runs as another account.
            Cluster::External { pgbackrest: None } => ServerUser::current(),
        };
        let passage = passage_mode(&server_user);
        create_dir(&root, passage, None)?;
        let catalog = CatalogFile::new(&root);
        let retention = resolve_retention(&catalog, choice)?;
        let (config, stanza, retention_args) = match &cluster {
            Cluster::External { pgbackrest: None } => {
                return Ok(Backups {
                    passage,
                    root,
                    cluster,
                    control_url,
                    rest: None,
                    retention,
                    catalog,
                })
            }
            Cluster::Embedded { cluster, .. } => {
                for dir in [REPO_DIR, LOG_DIR, LOCK_DIR] {
                    create_dir(&root.join(dir), 0o700, Some(&server_user))?;
                }
                let config = root.join(CONFIG_FILE);
                let text = pgbackrest::EmbeddedConfig {
                    repo: &root.join(REPO_DIR),
                    log: &root.join(LOG_DIR),
                    lock: &root.join(LOCK_DIR),
                    retention_days: retention.days,
                    data_dir: &cluster.data_dir(),
                    port: cluster.port()?,
                    socket_dir: &cluster.socket_dir(),
                    superuser: pgtenant_cluster::SUPERUSER,
                }
                .render();
                // Read by pgBackRest only, which runs as the server's account.
                write_if_changed(&config, &text, Some(&server_user))?;
                (config, EMBEDDED_STANZA.to_string(), Vec::new())
            }
            Cluster::External {
                pgbackrest: Some(ExternalStanza { config, stanza }),
            } => (
                std::path::absolute(config).unwrap_or_else(|_| config.clone()),
                stanza.clone(),
                vec![
                    "--repo1-retention-full-type=time".to_string(),
                    format!("--repo1-retention-full={}", retention.days),
                ],
            ),
        };
        let rest = PgBackRest {
            program: PgBackRest::find_program()?,
            config,
            stanza,
            user: server_user,
            cwd: root.clone(),
            retention: retention_args,
        };
        Ok(Backups {
            passage,
            root,
            cluster,
            control_url,
            rest: Some(rest),
            retention,
            catalog,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// The cluster's pgBackRest stanza, if it has one.
    pub fn pgbackrest(&self) -> Option<&PgBackRest> {
        self.rest.as_ref()
    }

    /// The stanza, for what needs physical backups (`what`, for the error when there is none).
    pub(crate) fn rest(&self, what: &'static str) -> Result<&PgBackRest, BackupError> {
        self.rest.as_ref().ok_or(BackupError::NoPgBackRest(what))
    }

    pub fn catalog(&self) -> Result<Catalog, BackupError> {
        self.catalog.load()
    }

    fn embedded(&self) -> Option<(&EmbeddedCluster, &str)> {
        match &self.cluster {
            Cluster::Embedded {
                cluster,
                superuser_url,
            } => Some((cluster, superuser_url)),
            Cluster::External { .. } => None,
        }
    }

    /// For the embedded cluster: archiving on (restarting the server once if the settings need
    /// it, which `progress` is told) and the stanza created. Returns whether it restarted.
    pub fn ensure_configured(&self, progress: &mut dyn Progress) -> Result<bool, BackupError> {
        let Some((cluster, superuser_url)) = self.embedded() else {
            return Ok(false);
        };
        let rest = self.rest(BACKUP_RUN)?;
        cluster.enable_archiving(&rest.archive_command(), ARCHIVE_TIMEOUT_SECS)?;
        let pending: Vec<String> = sql::block_on(async {
            let client = sql::connect(superuser_url, None).await?;
            let rows = client
                .query(
                    "SELECT name FROM pg_catalog.pg_settings WHERE pending_restart \
                     OR (name = 'archive_mode' AND setting <> 'on') ORDER BY name",
                    &[],
                )
                .await
                .map_err(|e| sql::sql_error("reading the server settings", e))?;
            Ok::<_, BackupError>(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })??;
        let restarted = !pending.is_empty();
        if restarted {
            progress.warn(&format!(
                "restarting the embedded cluster once to turn on WAL archiving ({} take effect \
                 only at server start); open sessions are disconnected",
                pending.join(", ")
            ));
            cluster.restart()?;
        }
        let info_file = self
            .root
            .join(REPO_DIR)
            .join("backup")
            .join(&rest.stanza)
            .join("backup.info");
        if !info_file.exists() {
            rest.run("stanza-create", &[])?;
        }
        Ok(restarted)
    }

    /// `backup run`: a pgBackRest backup of the whole cluster (`full`, `diff` or `incr`; pgBackRest
    /// makes the first one full whatever is asked), then expiry by the retention.
    #[tracing::instrument(name = "backup_run", skip_all, fields(kind = %kind))]
    pub fn run(&self, kind: &str, progress: &mut dyn Progress) -> Result<RunReport, BackupError> {
        let started = Timestamp::now();
        let rest = self.rest(BACKUP_RUN)?;
        progress.step(1, 3, "checking WAL archiving and the stanza");
        let restarted = self.ensure_configured(progress)?;
        let before: Vec<String> = rest
            .info()?
            .backup
            .iter()
            .map(|b| b.label.clone())
            .collect();
        progress.step(
            2,
            3,
            &format!("pgbackrest backup --type={kind} of the whole cluster"),
        );
        rest.run("backup", &[format!("--type={kind}")])?;
        progress.step(
            3,
            3,
            &format!("expiring what is older than {} days", self.retention.days),
        );
        let info = rest.info()?;
        let newest = info
            .backup
            .iter()
            .filter(|b| !before.contains(&b.label))
            .max_by_key(|b| b.timestamp.stop)
            .ok_or_else(|| BackupError::Parse("pgbackrest info lists no new backup".into()))?;
        // pgBackRest expires after each backup by itself; tell what it removed.
        let physical = before
            .into_iter()
            .filter(|label| !info.backup.iter().any(|b| &b.label == label))
            .collect();
        let logical = self.expire_logical()?;
        tracing::info!(label = %newest.label, seconds = Timestamp::now().seconds_since(started), "backup run finished");
        Ok(RunReport {
            backup: PhysicalBackup::from(newest),
            seconds: Timestamp::now().seconds_since(started),
            restarted_cluster: restarted,
            expired: ExpireReport {
                retention: Some(self.retention),
                physical,
                logical,
            },
        })
    }

    /// `backup expire`: physical backups and WAL past the retention (pgBackRest's `expire`), and
    /// logical backups older than the retention.
    pub fn expire(&self) -> Result<ExpireReport, BackupError> {
        let Some(rest) = &self.rest else {
            return Ok(ExpireReport {
                retention: Some(self.retention),
                physical: Vec::new(),
                logical: self.expire_logical()?,
            });
        };
        let before = rest.info()?;
        if before.backup.is_empty() {
            return Ok(ExpireReport {
                retention: Some(self.retention),
                physical: Vec::new(),
                logical: self.expire_logical()?,
            });
        }
        rest.run("expire", &[])?;
        let after = rest.info()?;
        let physical = before
            .backup
            .iter()
            .filter(|b| !after.backup.iter().any(|a| a.label == b.label))
            .map(|b| b.label.clone())
            .collect();
        Ok(ExpireReport {
            retention: Some(self.retention),
            physical,
            logical: self.expire_logical()?,
        })
    }

    fn expire_logical(&self) -> Result<Vec<String>, BackupError> {
        let cutoff = Timestamp::now().plus_seconds(-(i64::from(self.retention.days) * 86_400));
        let expired = self.catalog.update(|catalog| {
            let (old, keep): (Vec<_>, Vec<_>) =
                catalog.logical.drain(..).partition(|b| b.finished < cutoff);
            catalog.logical = keep;
            old
        })?;
        for backup in &expired {
            let path = self.root.join(&backup.path);
            let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
        }
        Ok(expired.into_iter().map(|b| b.id).collect())
    }

    /// `backup list`: physical backups, logical ones (of `tenant` only, if given), restores and
    /// verifications, and the restorable window.
    pub fn list(&self, tenant: Option<&TenantName>) -> Result<Listing, BackupError> {
        let info = self.rest.as_ref().map(PgBackRest::info).transpose()?;
        let catalog = self.catalog.load()?;
        let tenant_id = tenant.map(TenantName::id);
        let mine = |t: &str| tenant_id.as_deref().is_none_or(|id| id == t);
        Ok(Listing {
            stanza: self.rest.as_ref().map(|rest| rest.stanza.clone()),
            repository: self.root.clone(),
            retention: self.retention,
            rpo_seconds: self
                .embedded()
                .filter(|(cluster, _)| cluster.archiving_enabled())
                .map(|_| ARCHIVE_TIMEOUT_SECS),
            window: info
                .as_ref()
                .map(|info| self.window(info))
                .unwrap_or_default(),
            physical: info
                .iter()
                .flat_map(|info| &info.backup)
                .map(PhysicalBackup::from)
                .collect(),
            logical: catalog
                .logical
                .into_iter()
                .filter(|b| mine(&b.tenant))
                .collect(),
            restores: catalog
                .restores
                .into_iter()
                .filter(|r| mine(&r.tenant) || mine(&r.into))
                .map(RestoreRecord::with_rfc3339_target)
                .collect(),
            verifications: catalog.verifications,
        })
    }

    /// The restorable window according to `info`.
    pub(crate) fn window(&self, info: &StanzaInfo) -> Window {
        let earliest = info
            .backup
            .iter()
            .map(|b| b.timestamp.stop)
            .min()
            .map(|stop| Timestamp::from_unix(stop + 1));
        let range = info.archive.last();
        let wal_max = range.and_then(|r| r.max.clone());
        // Right after the first backup the newest archived segment is the one the backup ended in,
        // archived before the backup's end: the window is then that one instant, never a span
        // that ends before it starts.
        let latest = match (range, &wal_max, earliest) {
            (Some(range), Some(max), Some(earliest)) => self
                .archived_at(&range.id, max)
                .map(|latest| latest.max(earliest)),
            _ => None,
        };
        Window {
            earliest,
            latest,
            wal_min: range.and_then(|r| r.min.clone()),
            wal_max,
        }
    }

    /// When WAL segment `segment` reached the (local) repository: its file's modification time.
    fn archived_at(&self, archive_id: &str, segment: &str) -> Option<Timestamp> {
        self.embedded()?;
        let dir = self
            .root
            .join(REPO_DIR)
            .join("archive")
            .join(&self.rest.as_ref()?.stanza)
            .join(archive_id)
            .join(segment.get(..16)?);
        fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(segment))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()
            // Whole seconds, rounded down: what is shown is surely restorable.
            .map(|time| Timestamp::from_unix(Timestamp::from_system(time).unix()))
    }

    /// The lock that lets one restore or verification at a time use scratch clusters; says so
    /// when it has to wait for another.
    pub(crate) fn scratch_lock(
        &self,
        progress: &mut dyn Progress,
    ) -> Result<nix::fcntl::Flock<fs::File>, BackupError> {
        let path = self.root.join(SCRATCH_LOCK);
        if let Some(lock) = catalog::try_lock_file(&path)? {
            return Ok(lock);
        }
        progress.warn("waiting for another restore or verification to finish");
        catalog::lock_file(&path)
    }

    fn scratch_parent(&self) -> Result<PathBuf, BackupError> {
        let dir = self.root.join(SCRATCH_DIR);
        create_dir(&dir, self.passage, None)?;
        Ok(dir)
    }

    /// Removes scratch clusters a killed run left behind, if no restore or verification is
    /// running now. Returns how many.
    pub fn clean_leftovers(&self) -> Result<usize, BackupError> {
        let Some(_lock) = catalog::try_lock_file(&self.root.join(SCRATCH_LOCK))? else {
            return Ok(0);
        };
        Ok(pgtenant_cluster::remove_leftovers(&self.root.join(SCRATCH_DIR))?.len())
    }
}

fn resolve_retention(
    catalog: &CatalogFile,
    choice: RetentionChoice,
) -> Result<Retention, BackupError> {
    if choice.days == Some(0) {
        return Err(BackupError::Config(
            "--retention-days must be at least 1".into(),
        ));
    }
    let settings = if choice.environment.is_some() || choice.days.is_some() {
        catalog.update(|c| {
            if let Some(environment) = choice.environment {
                c.settings.environment = Some(environment);
                // A new tier brings its own default unless days are given too.
                c.settings.retention_days = None;
            }
            if let Some(days) = choice.days {
                c.settings.retention_days = Some(days);
            }
            c.settings.clone()
        })?
    } else {
        catalog.load()?.settings
    };
    let environment = settings.environment.unwrap_or(Environment::Dev);
    Ok(Retention {
        environment,
        days: settings
            .retention_days
            .unwrap_or_else(|| environment.retention_days()),
    })
}

/// The mode of a directory the server's account must pass through to reach what it owns below:
/// 0711 when it is another account than ours (we are root), else 0700.
fn passage_mode(server: &ServerUser) -> u32 {
    if server.switches() {
        0o711
    } else {
        0o700
    }
}

/// Creates `path` with `mode` if missing (handing it to `owner`), and fixes the mode if present.
fn create_dir(path: &Path, mode: u32, owner: Option<&ServerUser>) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(io)?;
        if let Some(owner) = owner {
            owner.chown(path)?;
        }
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)
}

/// Replaces `path` with a private file holding `text` (0600, handed to `owner`) unless it holds
/// that already with that mode.
fn write_if_changed(
    path: &Path,
    text: &str,
    owner: Option<&ServerUser>,
) -> Result<(), BackupError> {
    let private = fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0);
    if private && fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_private_file(&tmp, text.as_bytes())?;
    if let Some(owner) = owner {
        owner.chown(&tmp)?;
    }
    fs::rename(&tmp, path).map_err(|source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `path` (which must not exist) holding `bytes`, mode 0600 whatever the umask.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Hex SHA-256 of a file, or of a directory's files (name and digest of each, in name order).
pub fn sha256_of(path: &Path) -> Result<(String, u64), BackupError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let io = |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    };
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    let meta = fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        let mut names: Vec<PathBuf> = fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        let mut outer = Sha256::new();
        let mut total = 0;
        for name in names {
            let (digest, size) = sha256_of(&name)?;
            outer.update(name.file_name().unwrap_or_default().as_encoded_bytes());
            outer.update(b" ");
            outer.update(digest.as_bytes());
            outer.update(b"\n");
            total += size;
        }
        return Ok((hex(&outer.finalize()), total));
    }
    let mut file = fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((hex(&hasher.finalize()), meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_by_tier_remembered_and_overridable() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = CatalogFile::new(dir.path());
        let get = |environment, days| {
            resolve_retention(&catalog, RetentionChoice { environment, days }).unwrap()
        };
        assert_eq!(get(None, None).days, 7);
        assert_eq!(get(Some(Environment::Production), None).days, 35);
        // Remembered: a later command without options keeps production's retention.
        let kept = get(None, None);
        assert_eq!((kept.environment, kept.days), (Environment::Production, 35));
        assert_eq!(get(None, Some(90)).days, 90);
        assert_eq!(get(None, None).days, 90);
        assert_eq!(get(Some(Environment::Test), None).days, 7);
        assert_eq!(Environment::Staging.retention_days(), 35);
        assert!(resolve_retention(
            &catalog,
            RetentionChoice {
                environment: None,
                days: Some(0)
            }
        )
        .is_err());
    }

    #[test]
    fn checksums_of_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        fs::write(&file, b"abc").unwrap();
        let (digest, size) = sha256_of(&file).unwrap();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(size, 3);
        fs::write(dir.path().join("b"), b"de").unwrap();
        let (first, total) = sha256_of(dir.path()).unwrap();
        assert_eq!(total, 5);
        fs::write(dir.path().join("b"), b"dE").unwrap();
        assert_ne!(sha256_of(dir.path()).unwrap().0, first);
    }

    #[test]
    fn sql_errors_keep_their_source_and_sqlstate() {
        let server = pgtenant_cluster::TestCluster::start().unwrap();
        let url = server.cluster.control_url().unwrap();
        let error = sql::block_on(async {
            let client = sql::connect(&url, None).await?;
            client
                .simple_query("SELECT * FROM no_such_table")
                .await
                .map_err(|e| sql::sql_error("reading the table", e))
        })
        .unwrap()
        .unwrap_err();
        assert_eq!(
            error.sqlstate(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
        );
        // The text as before, the cause once.
        assert_eq!(
            error.to_string(),
            "reading the table: db error: ERROR: relation \"no_such_table\" does not exist"
        );
        let source = std::error::Error::source(&error).unwrap();
        assert!(source.downcast_ref::<tokio_postgres::Error>().is_some());
        // Wrapped, the SQLSTATE is still found.
        let wrapped = BackupError::RolledBack {
            database: "a-b".into(),
            source: Box::new(error),
        };
        assert_eq!(
            wrapped.sqlstate(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
        );
        assert!(wrapped.to_string().ends_with("does not exist"), "{wrapped}");
    }

    #[test]
    fn tenant_names() {
        let t = TenantName::new("shop", "cart");
        assert_eq!(t.id(), "shop/cart");
        assert_eq!(t.database(), "shop-cart");
        assert_eq!(
            format!(
                "{:?}",
                Login {
                    user: "u".into(),
                    password: "secret".into()
                }
            ),
            "Login(u, ***)"
        );
    }
}
