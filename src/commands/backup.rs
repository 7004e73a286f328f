//! `backup …` and `restore`: thin wrappers over `pgtenant_backup`, which orchestrates pgBackRest,
//! pg_dump and pg_restore. This module resolves the cluster, credentials and the apps repo, draws
//! progress and prints results.

use crate::render::outln;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pgtenant_backup::{
    Backups, Cluster, Environment, ExternalStanza, Listing, Login, Progress, RestorePoint,
    RestoreRequest, RetentionChoice, TenantName, Timestamp,
};
use pgtenant_engine::DesiredTenant;
use pgtenant_secrets::SecretPath;
use pgtenant_spec::Preset;

use crate::commands::reconcile;
use crate::context::Context;
use crate::render::{print_json, Format};
use crate::{EXIT_ERROR, EXIT_OK};

/// Where the backups live and how long they are kept; shared by `backup …` and `restore`.
#[derive(clap::Args)]
pub struct RepositoryArgs {
    /// Environment tier, which sets the retention: production and staging keep 35 days, test and
    /// dev 7. Remembered for later commands [default: the last one given, else dev].
    #[arg(
        long,
        value_enum,
        env = "PGTENANT_ENVIRONMENT",
        hide_env_values = true,
        global = true
    )]
    environment: Option<EnvironmentArg>,

    /// Keep backups this many days instead of the tier's default (remembered likewise).
    #[arg(
        long,
        env = "PGTENANT_RETENTION_DAYS",
        hide_env_values = true,
        global = true,
        value_name = "DAYS"
    )]
    retention_days: Option<u32>,

    /// For a cluster given with --admin-url: its existing pgBackRest configuration file, for
    /// physical backups and point-in-time restores (logical backups need none).
    #[arg(
        long,
        env = "PGTENANT_PGBACKREST_CONFIG",
        hide_env_values = true,
        global = true,
        value_name = "FILE"
    )]
    pgbackrest_config: Option<PathBuf>,

    /// For a cluster given with --admin-url: its pgBackRest stanza (with --pgbackrest-config).
    #[arg(
        long,
        env = "PGTENANT_PGBACKREST_STANZA",
        hide_env_values = true,
        global = true,
        value_name = "NAME"
    )]
    stanza: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum EnvironmentArg {
    Production,
    Staging,
    Test,
    Dev,
}

impl From<EnvironmentArg> for Environment {
    fn from(arg: EnvironmentArg) -> Self {
        match arg {
            EnvironmentArg::Production => Environment::Production,
            EnvironmentArg::Staging => Environment::Staging,
            EnvironmentArg::Test => Environment::Test,
            EnvironmentArg::Dev => Environment::Dev,
        }
    }
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    command: Option<BackupCommand>,

    /// NAMESPACE/DATABASE: a logical backup (pg_dump, as the tenant's admin role) of that tenant
    /// database into the backup repository.
    tenant: Option<String>,

    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    format: Format,

    #[command(flatten)]
    repository: RepositoryArgs,
}

#[derive(Subcommand)]
enum BackupCommand {
    /// A physical backup of the whole cluster (pgBackRest), then expiry by the retention. The first
    /// run on the embedded cluster turns on WAL archiving and creates the stanza.
    Run {
        /// full, diff (since the last full) or incr (since the last backup); the first is full.
        #[arg(long = "type", value_enum, default_value_t = Kind::Incr)]
        kind: Kind,
    },
    /// Backups (physical and logical), the restorable window, restores and verifications.
    List {
        /// Only this tenant's logical backups and restores.
        tenant: Option<String>,
    },
    /// Restore a backup into a scratch cluster and check that it starts and every database reads
    /// completely [default: the newest physical backup]; for a logical backup, its checksum.
    Verify {
        /// The backup: a physical backup set's or a logical backup's id from `backup list`.
        id: Option<String>,
    },
    /// Remove backups and WAL past the retention.
    Expire,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Full,
    Diff,
    Incr,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Diff => "diff",
            Kind::Incr => "incr",
        }
    }
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// NAMESPACE/DATABASE whose data is restored.
    tenant: String,

    /// Restore to this point in time, e.g. '2025-06-01 14:30:00+02' (a zone is required).
    #[arg(long, required_unless_present = "backup", conflicts_with = "backup")]
    time: Option<String>,

    /// Restore to the end of this backup (an id from `backup list`: physical or logical).
    #[arg(long, value_name = "ID")]
    backup: Option<String>,

    /// Restore into another tenant database declared in the repo (e.g. NS/cart-restored) instead
    /// of in place: one of the same namespace that holds no objects yet.
    #[arg(long, value_name = "NAMESPACE/DATABASE")]
    into: Option<String>,

    /// With --into: restore into a database that holds objects already, or a protected one;
    /// objects of the same name are replaced, others are kept.
    #[arg(long, requires = "into")]
    replace: bool,

    /// With --into: restore into a database of another namespace (the data then belongs to
    /// that namespace's roles).
    #[arg(long, requires = "into")]
    allow_cross_namespace: bool,

    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,

    /// The apps repo declaring the tenant, for re-applying ownership and grants [default: the
    /// current directory].
    #[arg(long, env = "PGTENANT_REPO", hide_env_values = true)]
    repo: Option<PathBuf>,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    #[command(flatten)]
    repository: RepositoryArgs,
}

pub fn backup(context: &Context, args: &BackupArgs) -> Result<u8> {
    if args.command.is_none() && args.tenant.is_none() {
        bail!(
            "say what to back up: `pgtenant backup run` (the cluster), `pgtenant backup NS/DB` \
             (one tenant database), or see `pgtenant backup --help`"
        );
    }
    let backups = open(context, &args.repository)?;
    let mut progress = CliProgress::new();
    match (&args.command, &args.tenant) {
        (Some(BackupCommand::Run { kind }), _) => {
            let report = backups
                .run(kind.as_str(), &mut progress)
                .context("backing up the cluster with pgBackRest")?;
            progress.done();
            if args.format == Format::Json {
                print_json(&report)?;
            } else {
                let b = &report.backup;
                outln!(
                    "backup {} ({}) done in {:.1} s: {} of data, {} in the repository",
                    b.id,
                    b.kind,
                    report.seconds,
                    size(b.size_bytes),
                    size(b.repo_size_bytes)
                );
                print_expired(&report.expired.physical, &report.expired.logical);
            }
        }
        (Some(BackupCommand::List { tenant }), _) => {
            let tenant = tenant.as_deref().map(tenant_name).transpose()?;
            let listing = backups.list(tenant.as_ref())?;
            if args.format == Format::Json {
                print_json(&listing)?;
            } else {
                print_listing(&listing);
            }
        }
        (Some(BackupCommand::Verify { id }), _) => {
            let verification = backups.verify(id.as_deref(), &mut progress)?;
            progress.done();
            if args.format == Format::Json {
                print_json(&verification)?;
            } else {
                for db in &verification.databases {
                    outln!(
                        "  {:<40} {:>6} tables {:>10}  {}",
                        db.name,
                        db.tables,
                        size(db.size_bytes.max(0) as u64),
                        if db.readable {
                            "readable"
                        } else {
                            "NOT READABLE"
                        }
                    );
                }
                match &verification.error {
                    None if verification.ok => outln!(
                        "backup {} verified in {:.1} s",
                        verification.backup,
                        verification.seconds
                    ),
                    None => outln!("backup {} FAILED verification", verification.backup),
                    Some(error) => {
                        outln!(
                            "backup {} FAILED verification: {error}",
                            verification.backup
                        )
                    }
                }
            }
            if !verification.ok {
                return Ok(EXIT_ERROR);
            }
        }
        (Some(BackupCommand::Expire), _) => {
            let report = backups.expire()?;
            if args.format == Format::Json {
                print_json(&report)?;
            } else {
                if report.physical.is_empty() && report.logical.is_empty() {
                    outln!("nothing to expire");
                }
                print_expired(&report.physical, &report.logical);
            }
        }
        (None, Some(tenant)) => {
            let tenant = tenant_name(tenant)?;
            // Every preset's owner login is among the candidates: no apps repo needed here.
            let (_, login) = owner_login(context, &tenant, None)?;
            let entry = backups
                .backup_tenant(&tenant, &login, &mut progress)
                .with_context(|| format!("backing up {}", tenant.id()))?;
            progress.done();
            if args.format == Format::Json {
                print_json(&entry)?;
            } else {
                outln!(
                    "logical backup {} of {}: {} ({} format), sha256 {}",
                    entry.id,
                    entry.tenant,
                    size(entry.size_bytes),
                    entry.format,
                    entry.sha256
                );
            }
        }
        (None, None) => unreachable!("checked above"),
    }
    Ok(EXIT_OK)
}

pub fn restore(context: &Context, args: &RestoreArgs) -> Result<u8> {
    let tenant = tenant_name(&args.tenant)?;
    let into = match &args.into {
        Some(into) => tenant_name(into)?,
        None => tenant.clone(),
    };
    let point = match (&args.time, &args.backup) {
        (Some(time), None) => {
            RestorePoint::Time(Timestamp::parse(time).map_err(anyhow::Error::msg)?)
        }
        (None, Some(id)) => RestorePoint::Backup(id.clone()),
        _ => bail!("give either --time or --backup"),
    };
    let repo = context.repo(args.repo.as_deref());
    let declared = declared_tenant(context, &repo, &into)?.with_context(|| {
        format!(
            "{} is not declared in the apps repo {}: declare it (and run `pgtenant apply`) \
             before restoring into it, or pass --repo",
            into.id(),
            repo.display()
        )
    })?;
    confirm(args.yes, &tenant, &into, &point)?;
    let (owner, login) = owner_login(context, &into, Some(&declared))?;
    let backups = open(context, &args.repository)?;

    // Ownership and grants are re-applied by the engine's reconcile of that one tenant.
    let desired = pgtenant_engine::Desired::from_repo(&context.load_repo(Some(&repo), false)?);
    let reconciler = reconcile::reconciler(context)?;
    let reapply = pgtenant_engine::reconcile::TenantReapply {
        reconciler: &reconciler,
        desired: &desired,
        runtime: reconcile::runtime()?.handle().clone(),
    };
    let request = RestoreRequest {
        tenant: tenant.clone(),
        into: into.clone(),
        point,
        owner,
        login,
        replace: args.replace,
        allow_cross_namespace: args.allow_cross_namespace,
    };
    // Pooled sessions must neither hold the database during the restore nor keep server
    // connections to what it replaced: the pool is paused around it and reconnected after.
    let pooler = crate::commands::cluster::pooler_of(context)?;
    let paused = pooler
        .as_deref()
        .is_some_and(|p| pool_step(p, &into.database(), PoolStep::Pause));
    let mut progress = CliProgress::new();
    let result = backups.restore(&request, &reapply, &mut progress);
    progress.done();
    if let (Some(pooler), true) = (pooler.as_deref(), paused) {
        pool_step(pooler, &into.database(), PoolStep::Resume);
    }
    let report = result.with_context(|| {
        if into == tenant {
            format!("restoring {}", tenant.id())
        } else {
            format!("restoring {} into {}", tenant.id(), into.id())
        }
    })?;
    if args.format == Format::Json {
        print_json(&report)?;
    } else {
        outln!(
            "restored {} to {} from {} into database {} in {:.1} s ({} grant statement(s) \
             re-applied{})",
            report.tenant,
            Timestamp::humanize(&report.target),
            report.source_backup,
            into.database(),
            report.seconds,
            report.grants_reapplied,
            if report.sessions_terminated > 0 {
                format!(", {} session(s) terminated", report.sessions_terminated)
            } else {
                String::new()
            }
        );
    }
    Ok(EXIT_OK)
}

/// The backups of the cluster pgtenant manages: the embedded one (pgtenant configures its
/// stanza), or the admin URL's with the pgBackRest configuration its operators keep.
pub(crate) fn open(context: &Context, args: &RepositoryArgs) -> Result<Backups> {
    let choice = RetentionChoice {
        environment: args.environment.map(Environment::from),
        days: args.retention_days,
    };
    let root = context.state_dir().join("backups");
    let (cluster, control_url) = match (context.admin_url(), &args.pgbackrest_config, &args.stanza)
    {
        (None, None, None) => {
            let cluster = context.start_embedded()?;
            let control_url = cluster.control_url()?;
            let superuser_url = cluster.superuser_url()?;
            (
                Cluster::Embedded {
                    cluster,
                    superuser_url,
                },
                control_url,
            )
        }
        (Some(url), Some(config), Some(stanza)) => (
            Cluster::External {
                pgbackrest: Some(ExternalStanza {
                    config: config.clone(),
                    stanza: stanza.clone(),
                }),
            },
            url.to_string(),
        ),
        // Logical backups and their restores are pg_dump and pg_restore alone.
        (Some(url), None, None) => (Cluster::External { pgbackrest: None }, url.to_string()),
        (Some(_), _, _) => bail!(
            "physical backups of a cluster given with --admin-url use its existing pgBackRest \
             setup: give both --pgbackrest-config FILE and --stanza NAME (or \
             PGTENANT_PGBACKREST_CONFIG and PGTENANT_PGBACKREST_STANZA)"
        ),
        (None, _, _) => bail!(
            "--pgbackrest-config and --stanza are for a cluster given with --admin-url; the \
             embedded cluster's stanza is configured by pgtenant"
        ),
    };
    Backups::open(&root, cluster, control_url, choice)
        .with_context(|| format!("opening the backup repository {}", root.display()))
}

fn tenant_name(text: &str) -> Result<TenantName> {
    Ok(TenantName::parse(text)?)
}

/// The owner role of `tenant` and the login that acts as it (the owner itself when it logs in,
/// else a login whose sessions assume it): pg_dump and pg_restore run as that login, so they read
/// every object and everything restored gets the owner. Without the declaration (a logical
/// backup, which needs no apps repo) each preset's owner login ([`Preset::owner_login`]) is tried
/// in turn: `admin` (idp), `migrator` (app-migrator), `app` (schema-owner, whose sessions assume
/// the owner role).
fn owner_login(
    context: &Context,
    tenant: &TenantName,
    declared: Option<&DesiredTenant>,
) -> Result<(String, Login)> {
    let candidates: Vec<(String, SecretPath)> = match declared {
        Some(declared) => {
            let owner = declared
                .roles
                .iter()
                .find(|r| r.owner)
                .with_context(|| format!("{} has no owner role", tenant.id()))?;
            let login = std::iter::once(owner)
                .chain(
                    declared
                        .roles
                        .iter()
                        .filter(|r| r.assumes.as_ref() == Some(&owner.name)),
                )
                .find_map(|r| r.secret_path.clone())
                .with_context(|| format!("{} has no login that acts as its owner", tenant.id()))?;
            vec![(owner.name.as_str().to_string(), login)]
        }
        None => Preset::ALL
            .iter()
            .map(|preset| {
                (
                    tenant.owner_role(*preset),
                    SecretPath::for_tenant(tenant, preset.owner_login()),
                )
            })
            .collect(),
    };
    let store = context.store()?;
    for (owner, path) in &candidates {
        let credential = reconcile::runtime()?
            .block_on(store.get(path))
            .with_context(|| format!("reading {path} from the credential store"))?;
        if let Some(credential) = credential {
            return Ok((
                owner.clone(),
                Login {
                    user: credential.username,
                    password: credential.password,
                },
            ));
        }
    }
    bail!(
        "no stored credentials at {}: is {} declared in the repo, and has `pgtenant apply` run?",
        candidates
            .iter()
            .map(|(_, p)| p.to_string())
            .collect::<Vec<_>>()
            .join(" or "),
        tenant.id()
    )
}

/// The declaration of `tenant` in the apps repo at `repo`, if any. The restore re-applies grants
/// through the engine, which only knows declared tenants: checked before anything is touched.
fn declared_tenant(
    context: &Context,
    repo: &Path,
    tenant: &TenantName,
) -> Result<Option<DesiredTenant>> {
    let loaded = context.load_repo(Some(repo), false)?;
    let desired = pgtenant_engine::Desired::from_repo(&loaded);
    Ok(desired.tenants.into_iter().find(|t| t.id == tenant.id()))
}

fn confirm(yes: bool, tenant: &TenantName, into: &TenantName, point: &RestorePoint) -> Result<()> {
    if yes {
        return Ok(());
    }
    let to = match point {
        RestorePoint::Time(t) => format!("its state at {t}"),
        RestorePoint::Backup(id) => format!("backup {id}"),
    };
    let what = if tenant == into {
        format!(
            "This replaces the contents of {} with {to}; its open sessions are terminated.",
            into.database()
        )
    } else {
        format!(
            "This replaces the contents of {} with {}'s {to}.",
            into.database(),
            tenant.id()
        )
    };
    if !std::io::stdin().is_terminal() {
        bail!("{what} Pass --yes to confirm.");
    }
    eprint!(
        "{what}\nType the database name ({}) to go on: ",
        into.database()
    );
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != into.database() {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// One spinner per step on a terminal; plain `[n/N] …` lines otherwise.
struct CliProgress {
    terminal: bool,
    bar: Option<ProgressBar>,
    current: Option<(String, Instant)>,
}

impl CliProgress {
    fn new() -> Self {
        CliProgress {
            terminal: std::io::stderr().is_terminal(),
            bar: None,
            current: None,
        }
    }

    fn finish_step(&mut self) {
        if let Some((title, started)) = self.current.take() {
            let elapsed = started.elapsed().as_secs_f64();
            match self.bar.take() {
                Some(bar) => {
                    bar.set_style(
                        ProgressStyle::with_template("✓ [{prefix}] {msg}").expect("valid template"),
                    );
                    bar.finish_with_message(format!("{title} ({elapsed:.1} s)"));
                }
                None => eprintln!("      done in {elapsed:.1} s"),
            }
        }
    }

    fn done(&mut self) {
        self.finish_step();
    }
}

impl Progress for CliProgress {
    fn step(&mut self, number: usize, total: usize, title: &str) {
        self.finish_step();
        if self.terminal {
            let bar = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} [{prefix}] {msg} {elapsed}")
                    .expect("valid template"),
            );
            bar.set_prefix(format!("{number}/{total}"));
            bar.set_message(title.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(bar);
        } else {
            eprintln!("[{number}/{total}] {title}");
        }
        self.current = Some((title.to_string(), Instant::now()));
    }

    fn warn(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
}

fn print_expired(physical: &[String], logical: &[String]) {
    for id in physical {
        outln!("expired backup {id} (past the retention)");
    }
    for id in logical {
        outln!("expired logical backup {id} (past the retention)");
    }
}

fn print_listing(listing: &Listing) {
    outln!(
        "repository {} ({}), retention {} days ({}){}",
        listing.repository.display(),
        match &listing.stanza {
            Some(stanza) => format!("stanza {stanza}"),
            None => "logical backups only: no pgBackRest stanza".to_string(),
        },
        listing.retention.days,
        listing.retention.environment.as_str(),
        listing
            .rpo_seconds
            .map(|s| format!(", WAL archived at least every {s} s"))
            .unwrap_or_default()
    );
    outln!("restorable window: {}", listing.window);
    if listing.physical.is_empty() {
        outln!("no physical backups: run `pgtenant backup run`");
    } else {
        outln!(
            "\n{:<28} {:<5} {:<24} {:>10} {:>10}",
            "PHYSICAL",
            "TYPE",
            "FINISHED",
            "SIZE",
            "REPO"
        );
        for b in &listing.physical {
            outln!(
                "{:<28} {:<5} {:<24} {:>10} {:>10}",
                b.id,
                b.kind,
                b.finished.to_string(),
                size(b.size_bytes),
                size(b.repo_size_bytes)
            );
        }
    }
    if !listing.logical.is_empty() {
        outln!(
            "\n{:<40} {:<24} {:<24} {:>10}  {:<12}",
            "LOGICAL",
            "TENANT",
            "FINISHED",
            "SIZE",
            "SHA-256"
        );
        for b in &listing.logical {
            outln!(
                "{:<40} {:<24} {:<24} {:>10}  {:<12}",
                b.id,
                b.tenant,
                b.finished.to_string(),
                size(b.size_bytes),
                &b.sha256[..12.min(b.sha256.len())]
            );
        }
    }
    if !listing.restores.is_empty() {
        outln!("\nRESTORES");
        for r in &listing.restores {
            outln!(
                "{} {} -> {} to {} from {}: {} ({:.1} s){}",
                r.started,
                r.tenant,
                r.into,
                Timestamp::humanize(&r.target),
                r.source_backup,
                if r.ok { "ok" } else { "FAILED" },
                r.seconds,
                r.error
                    .as_deref()
                    .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                    .unwrap_or_default()
            );
        }
    }
    if !listing.verifications.is_empty() {
        outln!("\nVERIFICATIONS");
        for v in &listing.verifications {
            outln!(
                "{} {}: {} ({} database(s), {:.1} s)",
                v.at,
                v.backup,
                if v.ok { "ok" } else { "FAILED" },
                v.databases.len(),
                v.seconds
            );
        }
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(36_200_000), "36.2 MB");
        assert_eq!(size(1_500_000_000), "1.5 GB");
    }
}

#[derive(Clone, Copy)]
enum PoolStep {
    Pause,
    Resume,
}

/// How long PAUSE may wait for the pool's transactions to finish before the restore goes on
/// without it (a session-mode client in a long transaction).
const PAUSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// PAUSE a tenant database's pool (pgbouncer waits for its transactions and closes its server
/// connections), or RESUME and RECONNECT it. Says on stderr what it did; a pooler that does not
/// answer is a warning, never a failed restore. Returns whether the step took effect.
fn pool_step(pooler: &pgtenant_pooler::Pooler, database: &str, step: PoolStep) -> bool {
    let run = async {
        let admin = pooler.console()?;
        match step {
            PoolStep::Pause => {
                match tokio::time::timeout(PAUSE_TIMEOUT, admin.pause(database)).await {
                    Ok(result) => result,
                    Err(_) => {
                        // Undo the pending pause: the restore goes on with the pool open.
                        admin.resume(database).await?;
                        Err(pgtenant_pooler::PoolerError::Engine(format!(
                            "PAUSE did not finish within {PAUSE_TIMEOUT:?}"
                        )))
                    }
                }
            }
            PoolStep::Resume => {
                admin.resume(database).await?;
                admin.reconnect(database).await
            }
        }
    };
    let result = match reconcile::runtime() {
        Ok(runtime) => runtime.block_on(run),
        Err(error) => Err(pgtenant_pooler::PoolerError::Engine(format!("{error:#}"))),
    };
    match (result, step) {
        (Ok(()), PoolStep::Pause) => eprintln!("pgbouncer: paused the pool of {database}"),
        (Ok(()), PoolStep::Resume) => {
            eprintln!("pgbouncer: resumed and reconnected the pool of {database}")
        }
        (Err(error), _) => {
            eprintln!(
                "warning: pgbouncer's pool of {database}: {}",
                pgtenant_engine::error_chain(&error)
            );
            return false;
        }
    }
    true
}
