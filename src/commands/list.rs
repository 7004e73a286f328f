//! `list`: every database on the cluster and its state: managed, orphaned-protected (since when),
//! or unmanaged.

use crate::render::outln;
use anyhow::{Context as _, Result};

use crate::commands::reconcile::runtime;
use crate::context::Context;
use crate::render::{print_json, Format};
use crate::EXIT_OK;

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(context: &Context, args: &ListArgs) -> Result<u8> {
    let connected = context.connect()?;
    let databases = runtime()?
        .block_on(pgtenant_engine::list_databases(&connected.connector))
        .context("reading the cluster")?;
    match args.format {
        Format::Json => print_json(&databases)?,
        Format::Text => {
            outln!("{:<20} {:<32} {:<24} MODE", "STATE", "DATABASE", "TENANT");
            for db in &databases {
                let tenant = db.tenant.as_deref().unwrap_or("-");
                let mode = db.mode.as_deref().unwrap_or("-");
                let since = db
                    .orphaned_since
                    .as_deref()
                    .map(|s| format!(" since {s}"))
                    .unwrap_or_default();
                outln!(
                    "{:<20} {:<32} {:<24} {mode}{since}",
                    db.state,
                    db.database,
                    tenant
                );
            }
        }
    }
    Ok(EXIT_OK)
}
