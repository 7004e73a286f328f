//! `up`, `down`, `status`: the embedded local cluster.

use crate::render::outln;
use anyhow::Result;
use pgtenant_cluster::ClusterStatus;

use crate::context::Context;
use crate::render::{print_json, Format};
use crate::EXIT_OK;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn up(context: &Context, args: &StatusArgs) -> Result<u8> {
    let cluster = context.start_embedded()?;
    // Also for clusters created by an older pgtenant; granting again changes nothing.
    crate::context::grant_platform_parameters(&cluster)?;
    print_status(&cluster.status()?, args.format)?;
    Ok(EXIT_OK)
}

pub fn down(context: &Context) -> Result<u8> {
    let cluster = context.embedded();
    let status = cluster.status()?;
    if !status.initialized {
        eprintln!(
            "no embedded cluster in {}: nothing to stop",
            status.data_dir.display()
        );
    } else if !status.running {
        eprintln!("the embedded cluster was not running");
    } else {
        cluster.stop()?;
        eprintln!("embedded cluster stopped");
    }
    Ok(EXIT_OK)
}

pub fn status(context: &Context, args: &StatusArgs) -> Result<u8> {
    print_status(&context.embedded().status()?, args.format)?;
    Ok(EXIT_OK)
}

fn print_status(status: &ClusterStatus, format: Format) -> Result<()> {
    if format == Format::Json {
        return print_json(status);
    }
    outln!("initialized: {}", status.initialized);
    outln!("running:     {}", status.running);
    if let Some(port) = status.port {
        outln!("address:     127.0.0.1:{port} (TLS required)");
    }
    outln!("data dir:    {}", status.data_dir.display());
    if let Some(version) = &status.version {
        outln!("version:     PostgreSQL {version}");
    }
    if let Some(ca) = &status.ca_cert {
        outln!("CA:          {}", ca.display());
    }
    Ok(())
}
