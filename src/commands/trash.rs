//! `trash list` and `trash restore`: the final backups of dropped standard databases (taken by
//! `apply` as an operation of its plan, see `pgtenant_backup::trash`), kept for their environment
//! tier's retention, and restorable into the database once it is declared again.

use crate::render::outln;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use pgtenant_backup::trash::{Trash, TrashEntry};
use pgtenant_backup::Timestamp;
use pgtenant_engine::DesiredTenant;

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

fn trash(context: &Context) -> Trash {
    Trash::new(context.state_dir().join("trash"))
}

/// Every entry, newest first; expired ones (dump and sidecar) are deleted on the way.
pub fn entries(context: &Context) -> Result<Vec<TrashEntry>> {
    Ok(trash(context).entries()?)
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
    let trash = trash(context);
    let entry = trash
        .entries()?
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
    let connected = context.connect()?;
    trash
        .restore(&entry, &connected.connector, desired.owner().as_str())
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
