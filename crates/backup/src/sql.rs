//! The few SQL statements backup and restore need: on the managed cluster through the engine's
//! connector (TLS as libpq means it), on scratch clusters over their private Unix socket.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use pgtenant_engine::Connector;
use tokio_postgres::{Client, NoTls};

use crate::BackupError;

/// Runs `future` on the process's runtime: the crate's API is synchronous.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output, BackupError> {
    let runtime = pgtenant_pg::runtime().map_err(|source| BackupError::Io {
        path: "tokio runtime".into(),
        source,
    })?;
    Ok(runtime.block_on(future))
}

pub(crate) fn sql_error(
    what: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> BackupError {
    BackupError::Sql {
        what: what.to_string(),
        source: source.into(),
    }
}

/// A session on the managed cluster with the admin URL's role (`database` None: its own).
pub(crate) async fn connect(url: &str, database: Option<&str>) -> Result<Client, BackupError> {
    let connector = Connector::from_url(url).map_err(|e| sql_error("the admin URL", e))?;
    connector
        .connect(database)
        .await
        .map_err(|e| sql_error("connecting", e))
}

/// A session on a scratch cluster.
pub(crate) async fn connect_socket(
    socket_dir: &Path,
    port: u16,
    user: &str,
    database: &str,
) -> Result<Client, BackupError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(port)
        .user(user)
        .dbname(database)
        .application_name("pgtenant-restore")
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| sql_error("connecting to the scratch cluster", e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
