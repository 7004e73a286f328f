//! Before a database's final backup: its roles stop logging in and its sessions end, so the dump
//! holds the last write (nothing can write between the dump and the drop). Undone if the backup fails.

use tokio_postgres::Client;

use crate::connect::Connector;
use crate::ident::Ident;
use crate::{sql, EngineError};

const TERMINATE_SESSIONS: &str = "
SELECT pg_catalog.pg_terminate_backend(a.pid)
  FROM pg_catalog.pg_stat_activity a
 WHERE a.datname = $1 AND a.pid <> pg_catalog.pg_backend_pid()";

/// `NOLOGIN` for `roles`, then ends every session on `database`. Returns the roles that could log
/// in before, for [`resume`].
pub async fn quiesce(
    connector: &Connector,
    database: &str,
    roles: &[Ident],
) -> Result<Vec<Ident>, EngineError> {
    let control = connector.connect(None).await?;
    let could_login = logins(&control, roles).await?;
    for role in &could_login {
        execute(&control, &sql::alter_role(role, &["NOLOGIN".to_string()])).await?;
    }
    control
        .execute(TERMINATE_SESSIONS, &[&database])
        .await
        .map_err(|source| EngineError::Catalog {
            database: None,
            source,
        })?;
    Ok(could_login)
}

/// Gives `roles` their login back.
pub async fn resume(connector: &Connector, roles: &[Ident]) -> Result<(), EngineError> {
    let control = connector.connect(None).await?;
    for role in roles {
        execute(&control, &sql::alter_role(role, &["LOGIN".to_string()])).await?;
    }
    Ok(())
}

async fn logins(control: &Client, roles: &[Ident]) -> Result<Vec<Ident>, EngineError> {
    let names: Vec<&str> = roles.iter().map(Ident::as_str).collect();
    let rows = control
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolcanlogin AND rolname = ANY($1) ORDER BY 1",
            &[&names],
        )
        .await
        .map_err(|source| EngineError::Catalog { database: None, source })?;
    Ok(rows
        .iter()
        .map(|r| Ident::new(r.get::<_, String>(0)))
        .collect())
}

async fn execute(control: &Client, statement: &str) -> Result<(), EngineError> {
    control
        .batch_execute(statement)
        .await
        .map_err(|source| EngineError::Catalog {
            database: None,
            source,
        })
}
