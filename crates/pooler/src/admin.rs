//! pgbouncer's admin console (the `pgbouncer` database), reached over the Unix socket in the
//! pooler's directory as [`crate::render::ADMIN_USER`]: RELOAD, PAUSE, RESUME, RECONNECT and the
//! SHOW commands. pgbouncer 1.18 has all of these (RECONNECT since 1.15).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::render::ADMIN_USER;
use crate::PoolerError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Admin {
    /// The Unix socket directory (`unix_socket_dir`).
    pub socket_dir: PathBuf,
    pub port: u16,
    pub password: String,
}

/// One row of a SHOW command, by column name (pgbouncer's columns vary between versions).
pub type Row = BTreeMap<String, String>;

impl Admin {
    pub async fn connect(&self) -> Result<Client, PoolerError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(ADMIN_USER)
            .password(&self.password)
            .dbname("pgbouncer")
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, connection) = config.connect(NoTls).await.map_err(PoolerError::Console)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs one console command (`RELOAD`, `PAUSE "db"`, …), returning its rows.
    pub async fn run(&self, command: &str) -> Result<Vec<Row>, PoolerError> {
        let client = self.connect().await?;
        let messages = client
            .simple_query(command)
            .await
            .map_err(PoolerError::Console)?;
        Ok(messages
            .into_iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, column)| {
                            (
                                column.name().to_string(),
                                row.get(i).unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    pub async fn reload(&self) -> Result<(), PoolerError> {
        self.run("RELOAD").await.map(drop)
    }

    /// Waits for the database's server connections to finish their transactions and holds new
    /// ones back (`PAUSE db`).
    pub async fn pause(&self, database: &str) -> Result<(), PoolerError> {
        self.run(&format!("PAUSE {}", quote(database)))
            .await
            .map(drop)
    }

    pub async fn resume(&self, database: &str) -> Result<(), PoolerError> {
        self.run(&format!("RESUME {}", quote(database)))
            .await
            .map(drop)
    }

    /// Closes the database's server connections once they are released (`RECONNECT db`): after
    /// a restore, pooled connections must not keep seeing the old database.
    pub async fn reconnect(&self, database: &str) -> Result<(), PoolerError> {
        self.run(&format!("RECONNECT {}", quote(database)))
            .await
            .map(drop)
    }

    /// `RECONNECT` of every pool (after the primary changed).
    pub async fn reconnect_all(&self) -> Result<(), PoolerError> {
        self.run("RECONNECT").await.map(drop)
    }

    pub async fn pools(&self) -> Result<Vec<Row>, PoolerError> {
        self.run("SHOW POOLS").await
    }

    pub async fn stats(&self) -> Result<Vec<Row>, PoolerError> {
        self.run("SHOW STATS").await
    }

    pub async fn databases(&self) -> Result<Vec<Row>, PoolerError> {
        self.run("SHOW DATABASES").await
    }
}

/// A database name as a console argument: pgbouncer takes an identifier, double-quoted when it
/// is not a plain lowercase word (tenant names hold hyphens).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
