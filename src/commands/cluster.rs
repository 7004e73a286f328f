//! `up`, `down`, `status`: the embedded local cluster, and its pooler when pgbouncer is installed.

use std::sync::Arc;

use crate::render::outln;
use anyhow::{Context as _, Result};
use pgtenant_cluster::{ClusterStatus, EmbeddedCluster};
use pgtenant_pooler::{Pooler, PoolerStatus};

use crate::context::Context;
use crate::render::{print_json, Format};
use crate::EXIT_OK;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `status --format json`: the cluster's keys, and `pooler` when pgbouncer is installed.
#[derive(serde::Serialize)]
struct Status {
    #[serde(flatten)]
    cluster: ClusterStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pooler: Option<PoolerStatus>,
}

pub fn up(context: &Context, args: &StatusArgs) -> Result<u8> {
    let cluster = context.start_embedded()?;
    // Also for clusters created by an older pgtenant; granting again changes nothing.
    crate::context::grant_platform_parameters(&cluster)?;
    // With the platform config's pool defaults from the start, not only after the first apply.
    if let Some(pooler) =
        embedded_pooler(context, &cluster)?.map(|p| with_pool_defaults(context, p))
    {
        pooler
            .ensure_running()
            .context("starting the embedded cluster's pgbouncer")?;
    }
    print_status(&status_of(context, &cluster)?, args.format)?;
    Ok(EXIT_OK)
}

pub fn down(context: &Context) -> Result<u8> {
    let cluster = context.embedded();
    let status = cluster.status()?;
    if status.initialized {
        if let Some(pooler) = embedded_pooler(context, &cluster)? {
            if pooler.status().pid.is_some() {
                pooler.stop()?;
                eprintln!("pgbouncer stopped");
            }
        }
    }
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
    print_status(&status_of(context, &context.embedded())?, args.format)?;
    Ok(EXIT_OK)
}

/// The embedded cluster's pooler, when the cluster exists and pgbouncer is installed; to the
/// server over its Unix socket unless the config's `pooling.serverSocket` is false.
pub fn embedded_pooler(context: &Context, cluster: &EmbeddedCluster) -> Result<Option<Pooler>> {
    if !cluster.is_initialized() {
        return Ok(None);
    }
    let server_socket = context.config().is_none_or(|c| c.pooling.server_socket);
    Ok(pgtenant_pooler::for_embedded(cluster, server_socket)?)
}

/// The pooler apply and rotate keep in line: the chosen cluster's `pooler:` in the platform
/// config, or for the embedded cluster its own pgbouncer when installed; None otherwise.
pub fn pooler_of(context: &Context) -> Result<Option<Arc<Pooler>>> {
    let defaults = context.config().map(|c| c.pooling).unwrap_or_default();
    let configured = context
        .config()
        .and_then(|c| c.clusters.iter().find(|k| k.name == context.cluster_name()))
        .and_then(|k| k.pooler.as_ref());
    let pooler = match (context.admin_url(), configured) {
        (Some(url), Some(config)) => {
            let (host, port) = pgtenant_engine::Connector::from_url(url)?.endpoint();
            let server = pgtenant_pooler::Server {
                host,
                port,
                ca_file: context.ca_file()?,
            };
            Some(
                pgtenant_pooler::for_config(
                    config,
                    &defaults,
                    context.state_dir(),
                    context.cluster_name(),
                    server,
                )
                .with_context(|| format!("the pooler of cluster `{}`", context.cluster_name()))?,
            )
        }
        (Some(_), None) => None,
        (None, _) => {
            embedded_pooler(context, &context.embedded())?.map(|p| with_pool_defaults(context, p))
        }
    };
    Ok(pooler.map(Arc::new))
}

/// The embedded cluster's pooler with the platform config's `pooling:` defaults.
fn with_pool_defaults(context: &Context, mut pooler: Pooler) -> Pooler {
    let defaults = context.config().map(|c| c.pooling).unwrap_or_default();
    pooler.settings.default_pool_mode = defaults.mode.as_str().to_string();
    pooler.settings.default_pool_size = defaults.size;
    pooler
}

fn status_of(context: &Context, cluster: &EmbeddedCluster) -> Result<Status> {
    Ok(Status {
        cluster: cluster.status()?,
        pooler: embedded_pooler(context, cluster)?.map(|p| p.status()),
    })
}

fn print_status(status: &Status, format: Format) -> Result<()> {
    if format == Format::Json {
        return print_json(status);
    }
    let cluster = &status.cluster;
    outln!("initialized: {}", cluster.initialized);
    outln!("running:     {}", cluster.running);
    if let Some(port) = cluster.port {
        outln!("address:     127.0.0.1:{port} (TLS required)");
    }
    if let Some(pooler) = &status.pooler {
        let pid = pooler.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        outln!(
            "pooler:      127.0.0.1:{} (pgbouncer, TLS required; {}{pid})",
            pooler.port,
            pooler.state
        );
    }
    outln!("data dir:    {}", cluster.data_dir.display());
    if let Some(version) = &cluster.version {
        outln!("version:     PostgreSQL {version}");
    }
    if let Some(ca) = &cluster.ca_cert {
        outln!("CA:          {}", ca.display());
    }
    Ok(())
}
