//! `list`: every database on the cluster (in a fleet, on every cluster) and its state: managed,
//! orphaned-protected (since when), or unmanaged.

use crate::render::outln;
use anyhow::{Context as _, Result};

use crate::commands::reconcile::runtime;
use crate::context::Context;
use crate::render::{print_json, Format};
use crate::EXIT_OK;
use pgtenant_engine::inventory::ListedDatabase;

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(context: &Context, args: &ListArgs) -> Result<u8> {
    if !context.fleet().is_empty() {
        return crate::fleet::list(context, args.format);
    }
    let connected = context.connect()?;
    let databases = runtime()?
        .block_on(pgtenant_engine::list_databases(&connected.connector))
        .context("reading the cluster")?;
    match args.format {
        Format::Json => print_json(&databases)?,
        Format::Text => {
            header(false);
            for db in &databases {
                line(db, None);
            }
        }
    }
    Ok(EXIT_OK)
}

/// The text table's header; `fleet`: with the CLUSTER column first.
pub fn header(fleet: bool) {
    let cluster = if fleet {
        format!("{:<16} ", "CLUSTER")
    } else {
        String::new()
    };
    outln!(
        "{cluster}{:<20} {:<32} {:<24} MODE",
        "STATE",
        "DATABASE",
        "TENANT"
    );
}

/// One database of the text table, after its cluster in a fleet.
pub fn line(db: &ListedDatabase, cluster: Option<&str>) {
    let cluster = cluster.map(|c| format!("{c:<16} ")).unwrap_or_default();
    let tenant = db.tenant.as_deref().unwrap_or("-");
    let mode = db.mode.as_deref().unwrap_or("-");
    let since = db
        .orphaned_since
        .as_deref()
        .map(|s| format!(" since {s}"))
        .unwrap_or_default();
    outln!(
        "{cluster}{:<20} {:<32} {:<24} {mode}{since}",
        db.state,
        db.database,
        tenant
    );
}
