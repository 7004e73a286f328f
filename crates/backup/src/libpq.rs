//! How pg_dump and pg_restore reach the managed cluster as a tenant role: the admin URL's host,
//! port and TLS settings, with the tenant's user and password. Everything goes through libpq's
//! environment variables ([`pgtenant_pg::ClientEnv`]), so no password ever appears in a command line.

use std::path::PathBuf;
use std::process::Command;

use pgtenant_pg::conninfo::Conninfo;
use pgtenant_pg::{ClientEnv, SslMode};

use crate::BackupError;

pub(crate) use pgtenant_pg::env::clear_inherited as clear_pg_env;

/// The parts of the admin URL that say where the server is and how to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
    /// As the URL says; `require` when it says nothing (never less than encrypted for dumps).
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
}

impl ServerAddress {
    /// From a `postgresql://` URL or a `key=value` connection string. Only host, port, sslmode
    /// and sslrootcert are kept: the user and password are the control role's, not ours.
    pub fn from_admin_url(url: &str) -> Result<Self, BackupError> {
        let conninfo = Conninfo::parse(url)?;
        let (host, port) = conninfo.endpoint();
        Ok(ServerAddress {
            host,
            port,
            sslmode: conninfo.ssl_mode.unwrap_or(SslMode::Require),
            sslrootcert: conninfo.root_cert,
        })
    }

    /// libpq's environment for a session of `user` in `database`.
    pub fn client_env(&self, user: &str, password: &str, database: &str) -> ClientEnv {
        let mut env = ClientEnv::new(&self.host, self.port, database).login(user, password);
        env.ssl_mode = self.sslmode;
        env.root_cert = self.sslrootcert.clone();
        env.application_name = Some("pgtenant-backup".into());
        env.connect_timeout = Some(pgtenant_pg::connect::CONNECT_TIMEOUT);
        env
    }

    /// Sets libpq's variables on `cmd` for a session of `user` in `database`, none inherited.
    pub fn apply(&self, cmd: &mut Command, user: &str, password: &str, database: &str) {
        self.client_env(user, password, database).apply(cmd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keyword_strings() {
        let a = ServerAddress::from_admin_url(
            "postgresql://pgtenant:secret@127.0.0.1:5544/postgres?sslmode=verify-full&sslrootcert=/tmp/my%20state/ca.crt",
        )
        .unwrap();
        assert_eq!(
            a,
            ServerAddress {
                host: "127.0.0.1".into(),
                port: 5544,
                sslmode: SslMode::VerifyFull,
                sslrootcert: Some("/tmp/my state/ca.crt".into()),
            }
        );
        let b = ServerAddress::from_admin_url(
            "host=db.internal port=6432 user=pgtenant password='x y' sslmode=require",
        )
        .unwrap();
        assert_eq!((b.host.as_str(), b.port), ("db.internal", 6432));
        assert_eq!(b.sslmode, SslMode::Require);
        let c = ServerAddress::from_admin_url("postgresql://u@[::1]/db").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 5432));
        assert_eq!(
            c.sslmode,
            SslMode::Require,
            "dumps are never sent in clear by default"
        );
        let vars = c.client_env("app", "pw", "db").vars();
        assert!(vars.contains(&("PGAPPNAME", "pgtenant-backup".into())));
        assert!(vars.contains(&("PGPASSWORD", "pw".into())));
    }
}
