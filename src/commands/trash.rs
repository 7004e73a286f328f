//! The final logical backup taken before a standard database is dropped, kept for its environment
//! tier's retention (`trash list`), and restorable into the database once it is declared again
//! (`trash restore`).

use crate::render::outln;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use nix::fcntl::{Flock, FlockArg};
use pgtenant_backup::Timestamp;
use std::collections::BTreeSet;

use pgtenant_engine::desired::Marker;
use pgtenant_engine::plan::{Action, Notice, NoticeKind};
use pgtenant_engine::{Connector, DesiredTenant, Ident, Observed, Plan};
use pgtenant_spec::Environment;
use serde::{Deserialize, Serialize};

use crate::commands::parse_tenant;
use crate::commands::reconcile::reconcile_tenant;
use crate::context::Context;
use crate::render::{print_json, Format};
use crate::EXIT_OK;

#[derive(clap::Subcommand)]
pub enum TrashCommand {
    /// The final backups of dropped databases, newest first; expired ones are removed.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Restore the newest final backup of NS/DB into its database (declare it again and apply first).
    Restore {
        /// NAMESPACE/DATABASE whose final backup is restored (as `trash list` names it).
        tenant: String,
        /// The apps repo [default: the current directory].
        #[arg(long, env = "PGTENANT_REPO", hide_env_values = true)]
        repo: Option<PathBuf>,
    },
}

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

fn trash_dir(context: &Context) -> PathBuf {
    context.state_dir().join("trash")
}

/// Held shared by every run taking final backups, for as long as it does: a `.dump.partial` file
/// is being written only while someone holds it.
const LOCK_FILE: &str = "trash.lock";
/// What a dump is written as until pg_dump has finished.
const PARTIAL: &str = "dump.partial";

fn lock_trash(root: &Path, how: FlockArg) -> Result<Option<Flock<std::fs::File>>> {
    use std::os::unix::fs::OpenOptionsExt;
    create_private_dirs(root)?;
    let path = root.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, how) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => {
            Err(anyhow::Error::from(errno).context(format!("locking {}", path.display())))
        }
    }
}

/// Deletes the `.dump.partial` files that killed runs left in the trash, unless a run taking
/// final backups is under way (it holds the lock shared), whose dump may be one of them. Returns
/// how many.
fn remove_partial_dumps(root: &Path) -> Result<usize> {
    if !root.exists() {
        return Ok(0);
    }
    let Some(_exclusive) = lock_trash(root, FlockArg::LockExclusiveNonblock)? else {
        return Ok(0);
    };
    let mut removed = 0;
    for namespace in std::fs::read_dir(root)?.flatten() {
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
                        .with_context(|| format!("removing {}", path.display()))?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

/// Dumps every database the plan drops, right before the drops run: the tenant's roles stop logging
/// in and its sessions end first, so the dump holds the last write. A tenant whose dump fails keeps
/// its database (and its logins back): its drop is taken out of the plan and reported as blocked.
pub fn take_final_backups(
    context: &Context,
    runtime: &tokio::runtime::Runtime,
    connector: &Connector,
    observed: &Observed,
    drops: &mut Plan,
) -> Result<()> {
    let tenants: BTreeSet<String> = drops
        .operations
        .iter()
        .filter(|op| {
            matches!(
                op.action,
                Action::Sql {
                    transactional: false,
                    ..
                }
            )
        })
        .map(|op| op.tenant.clone())
        .collect();
    // A database without its own tier keeps its backup as long as the platform's tier says (the one
    // `pgtenant backup --environment` remembers), else the dev tier's.
    let platform = pgtenant_backup::CatalogFile::new(&context.state_dir().join("backups"))
        .load()
        .ok()
        .and_then(|catalog| catalog.settings.environment);
    if tenants.is_empty() {
        return Ok(());
    }
    let root = trash_dir(context);
    let removed = remove_partial_dumps(&root)?;
    if removed > 0 {
        eprintln!(
            "removed {removed} unfinished final backup(s) left in the trash by an interrupted run"
        );
    }
    // Until every dump of this run is finished: no other run takes this one's for a leftover.
    let _dumping = lock_trash(&root, FlockArg::LockShared)?;
    for tenant in tenants {
        let marked = |marker: Option<Marker>| marker.filter(|m| m.tenant == tenant);
        let Some((database, marker)) = observed
            .databases
            .iter()
            .find_map(|(name, db)| marked(db.marker()).map(|m| (name.clone(), m)))
        else {
            continue;
        };
        let roles: Vec<Ident> = observed
            .roles
            .iter()
            .filter(|(_, role)| marked(role.marker()).is_some())
            .map(|(name, _)| Ident::new(name.clone()))
            .collect();
        let environment = marker.environment.or(platform).unwrap_or_default();
        let result = runtime
            .block_on(pgtenant_engine::quiesce::quiesce(
                connector, &database, &roles,
            ))
            .map_err(anyhow::Error::from)
            .and_then(|stopped| {
                final_backup(context, connector, &tenant, &database, environment).inspect_err(
                    |_| {
                        let _ =
                            runtime.block_on(pgtenant_engine::quiesce::resume(connector, &stopped));
                    },
                )
            });
        match result {
            Ok(entry) => eprintln!(
                "final backup of {database} before it is dropped: {} ({} bytes)",
                entry.file.display(),
                entry.size
            ),
            Err(error) => {
                drops.operations.retain(|op| op.tenant != tenant);
                drops.notices.push(Notice {
                    kind: NoticeKind::Blocked,
                    tenant: tenant.clone(),
                    database: Some(database.clone()),
                    reason: format!(
                        "the final backup before dropping it failed, so it is not dropped: {}",
                        pgtenant_engine::error_chain(error.as_ref())
                    ),
                });
            }
        }
    }
    Ok(())
}

fn final_backup(
    context: &Context,
    connector: &Connector,
    tenant: &str,
    database: &str,
    environment: Environment,
) -> Result<TrashEntry> {
    let (namespace, name) = parse_tenant(tenant)?;
    let dir = trash_dir(context).join(namespace).join(name);
    create_private_dirs(&dir)?;
    let now = Timestamp::now().whole_seconds();
    let stamp = now.to_rfc3339();
    let file = dir.join(format!("{}.dump", stamp.replace(':', "")));
    let partial = file.with_extension(PARTIAL);
    let binaries = pgtenant_cluster::find_binaries().context("finding pg_dump")?;
    let mut command = Command::new(binaries.bin_dir.join("pg_dump"));
    command
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&partial);
    run(command, connector, database, "pg_dump")?;
    std::fs::rename(&partial, &file).with_context(|| format!("keeping {}", file.display()))?;
    let (sha256, size) = pgtenant_backup::sha256_of(&file)?;
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
    write_private(
        &file.with_extension("json"),
        &serde_json::to_vec_pretty(&entry)?,
    )?;
    Ok(entry)
}

/// Runs a client program against `database` as the control role (a member of every tenant role,
/// so it reads and writes what the owner owns), with libpq's environment and no inherited PG*.
fn run(mut command: Command, connector: &Connector, database: &str, what: &str) -> Result<()> {
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PG")) {
        command.env_remove(key);
    }
    command.envs(connector.libpq_env(database));
    // The dump holds the tenant's data: private whatever the process umask.
    pgtenant_backup::private_output(&mut command);
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn create_private_dirs(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes `path` 0600 if it is not already (and exists).
fn private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private", path.display()))
        }
        _ => Ok(()),
    }
}

/// Every entry, newest first; expired ones (dump and sidecar) are deleted on the way.
pub fn entries(context: &Context) -> Result<Vec<TrashEntry>> {
    let mut entries = Vec::new();
    let root = trash_dir(context);
    if !root.exists() {
        return Ok(entries);
    }
    remove_partial_dumps(&root)?;
    let now = Timestamp::now().whole_seconds().to_rfc3339();
    for namespace in std::fs::read_dir(&root)? {
        let namespace = namespace?.path();
        if !namespace.is_dir() {
            continue; // the lock file
        }
        for tenant in std::fs::read_dir(namespace)? {
            for file in std::fs::read_dir(tenant?.path())? {
                let path = file?.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let entry: TrashEntry = serde_json::from_slice(&std::fs::read(&path)?)
                    .with_context(|| format!("reading {}", path.display()))?;
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

pub fn run_command(context: &Context, command: &TrashCommand) -> Result<u8> {
    match command {
        TrashCommand::List { format } => {
            let entries = entries(context)?;
            match format {
                Format::Json => print_json(&entries)?,
                Format::Text if entries.is_empty() => {
                    eprintln!(
                        "the trash is empty: no standard database was dropped within its retention"
                    );
                }
                Format::Text => {
                    outln!(
                        "{:<23}  {:<32}  {:>12}  {:<23}  FILE",
                        "DROPPED",
                        "TENANT",
                        "BYTES",
                        "KEPT UNTIL"
                    );
                    for e in &entries {
                        outln!(
                            "{:<23}  {:<32}  {:>12}  {:<23}  {}",
                            Timestamp::humanize(&e.dropped_at),
                            e.tenant,
                            e.size,
                            Timestamp::humanize(&e.expires_at),
                            e.file.display()
                        );
                    }
                }
            }
            Ok(EXIT_OK)
        }
        TrashCommand::Restore { tenant, repo } => restore(context, tenant, repo.as_deref()),
    }
}

fn restore(context: &Context, tenant: &str, repo: Option<&Path>) -> Result<u8> {
    let entry = entries(context)?
        .into_iter()
        .find(|e| e.tenant == tenant)
        .with_context(|| {
            format!("no final backup of {tenant} in the trash (`pgtenant trash list`)")
        })?;
    let loaded = context.load_repo(repo, false)?;
    let Some(spec) = loaded.databases.iter().find(|d| d.tenant_id() == tenant) else {
        bail!("{tenant} is not declared in the apps repo: declare it again and run `pgtenant apply`, then restore");
    };
    let desired = DesiredTenant::from_spec(spec);
    let (checksum, _) = pgtenant_backup::sha256_of(&entry.file)?;
    if checksum != entry.sha256 {
        bail!(
            "{} does not match its recorded checksum: not restoring a damaged backup",
            entry.file.display()
        );
    }
    let connected = context.connect()?;
    let binaries = pgtenant_cluster::find_binaries().context("finding pg_restore")?;
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
        .arg(format!("--role={}", desired.owner()))
        .arg(&entry.file);
    run(command, &connected.connector, &entry.database, "pg_restore")
        .with_context(|| format!("restoring {} into {} (it must exist and be empty of the dumped objects: declare it, apply, then restore)", entry.file.display(), entry.database))?;
    let outcome = reconcile_tenant(context, repo, tenant)?;
    if let Some(failed) = outcome.failed().next() {
        bail!(
            "restored, but re-applying grants failed: {}",
            failed
                .error
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
    }
    outln!(
        "restored {} into {} (dropped at {}); ownership and grants re-applied",
        entry.file.display(),
        entry.database,
        Timestamp::humanize(&entry.dropped_at)
    );
    Ok(EXIT_OK)
}
