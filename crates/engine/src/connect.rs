//! Connections to the managed cluster: [`pgtenant_pg::Connector`] (libpq-style URLs, TLS the way
//! `sslmode` means it, the control session's settings), its errors as [`EngineError`].

use std::ops::Deref;

use tokio_postgres::Client;

use crate::EngineError;

pub use pgtenant_pg::connect::{identity_options, CONNECT_TIMEOUT};
pub use pgtenant_pg::tls::client_config as client_tls_config;
pub use pgtenant_pg::SslMode;

/// [`pgtenant_pg::Connector`] with the engine's error type, so callers match
/// [`EngineError::Connect`] and its SQLSTATE; everything else derefs to the Postgres layer's type.
#[derive(Debug, Clone)]
pub struct Connector(pgtenant_pg::Connector);

impl Deref for Connector {
    type Target = pgtenant_pg::Connector;

    fn deref(&self) -> &pgtenant_pg::Connector {
        &self.0
    }
}

impl From<pgtenant_pg::Connector> for Connector {
    fn from(connector: pgtenant_pg::Connector) -> Self {
        Connector(connector)
    }
}

impl Connector {
    /// Accepts a `postgresql://` URL or a `key=value` connection string, like libpq.
    pub fn from_url(url: &str) -> Result<Self, EngineError> {
        Ok(Connector(pgtenant_pg::Connector::from_url(url)?))
    }

    /// See [`pgtenant_pg::Connector::as_application`].
    pub fn as_application(self) -> Self {
        Connector(self.0.as_application())
    }

    /// See [`pgtenant_pg::Connector::with_login`].
    pub fn with_login(&self, user: &str, password: &str) -> Self {
        Connector(self.0.with_login(user, password))
    }

    /// `database` None is the admin URL's own database.
    pub async fn connect(&self, database: Option<&str>) -> Result<Client, EngineError> {
        Ok(self.0.connect(database).await?)
    }

    pub fn into_inner(self) -> pgtenant_pg::Connector {
        self.0
    }
}

impl From<pgtenant_pg::Error> for EngineError {
    /// A failed connection keeps its own variant (and its SQLSTATE); the rest are set-up errors.
    fn from(error: pgtenant_pg::Error) -> Self {
        match error {
            pgtenant_pg::Error::Connect { database, source } => {
                EngineError::Connect { database, source }
            }
            other => EngineError::Postgres(other),
        }
    }
}
