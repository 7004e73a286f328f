//! Connections to a cluster: TLS the way libpq's `sslmode` means it, and the session settings
//! every control connection carries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::conninfo::{self, Conninfo};
use crate::{ClientEnv, Error, SslMode};

/// Bounded waits on every control connection, so a stuck lock or server never hangs a run.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where applications reach a server whose admin URL names a Unix socket on this host.
pub const LOOPBACK: &str = "127.0.0.1";
/// `application_name` unless the URL names one.
pub const APPLICATION_NAME: &str = "pgtenant";
/// `idle_session_timeout=0`: the apply lock lives in an idle session that must not be cut.
const SESSION_OPTIONS: &str =
    "-c statement_timeout=300000 -c lock_timeout=30000 -c idle_session_timeout=0 \
     -c search_path=pg_catalog,pg_temp -c standard_conforming_strings=on";

/// `role=none` and `session_authorization=<the user who logs in>`: options given at connection start
/// outrank `ALTER DATABASE … SET role` and `ALTER ROLE … IN DATABASE … SET`, which a tenant's admin
/// or login can write to make the control role act as another tenant's role (a superuser control
/// role would even take on a `session_authorization` default).
pub fn identity_options(user: Option<&str>) -> String {
    match user {
        // Startup options split at whitespace; a backslash makes the next character literal.
        Some(user) => {
            let mut escaped = String::with_capacity(user.len());
            for c in user.chars() {
                if c == '\\' || c.is_whitespace() {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            format!("-c role=none -c session_authorization={escaped}")
        }
        None => "-c role=none".to_string(),
    }
}

/// Everything needed to open connections to the cluster as the control role.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// Kept for the client programs (pg_dump, pg_restore) that reach the server through libpq.
    ssl_mode: SslMode,
    /// Whether the URL named the mode (else libpq's default applies).
    ssl_mode_given: bool,
    root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Config's Debug redacts the password.
        f.debug_struct("Connector")
            .field("config", &self.config)
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Accepts a `postgresql://` URL or a `key=value` connection string, like libpq.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let conninfo = Conninfo::parse(url)?;
        let ssl_mode = conninfo.ssl_mode();
        let Conninfo {
            mut config,
            ssl_mode: given,
            root_cert,
        } = conninfo;
        config.ssl_mode(ssl_mode.wire());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let options = format!("{SESSION_OPTIONS} {}", identity_options(config.get_user()));
        config.options(&options);
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        let tls =
            MakeRustlsConnect::new(crate::tls::client_config(ssl_mode, root_cert.as_deref())?);
        Ok(Connector {
            config,
            tls,
            ssl_mode,
            ssl_mode_given: given.is_some(),
            root_cert,
        })
    }

    /// For sessions as an application would open them (tenant roles): the server's defaults for
    /// search_path and timeouts instead of the control connection's.
    pub fn as_application(mut self) -> Self {
        self.config.options("");
        self
    }

    /// The same server reached as another role: to prove a tenant login works.
    pub fn with_login(&self, user: &str, password: &str) -> Self {
        let mut connector = self.clone();
        connector.config.user(user).password(password).options("");
        connector
    }

    /// The same role, database and settings reaching only `host:port`: the primary a Patroni
    /// REST API named, out of a multi-host admin URL (or instead of the one host it names).
    pub fn at(&self, host: &str, port: u16) -> Self {
        let from = &self.config;
        let mut config = tokio_postgres::Config::new();
        config.host(host).port(port);
        if let Some(user) = from.get_user() {
            config.user(user);
        }
        if let Some(password) = from.get_password() {
            config.password(password);
        }
        if let Some(dbname) = from.get_dbname() {
            config.dbname(dbname);
        }
        if let Some(options) = from.get_options() {
            config.options(options);
        }
        if let Some(name) = from.get_application_name() {
            config.application_name(name);
        }
        if let Some(timeout) = from.get_connect_timeout() {
            config.connect_timeout(*timeout);
        }
        if let Some(timeout) = from.get_tcp_user_timeout() {
            config.tcp_user_timeout(*timeout);
        }
        config
            .ssl_mode(from.get_ssl_mode())
            .ssl_negotiation(from.get_ssl_negotiation())
            .keepalives(from.get_keepalives())
            .keepalives_idle(from.get_keepalives_idle())
            .target_session_attrs(from.get_target_session_attrs())
            .channel_binding(from.get_channel_binding());
        if let Some(interval) = from.get_keepalives_interval() {
            config.keepalives_interval(interval);
        }
        if let Some(retries) = from.get_keepalives_retries() {
            config.keepalives_retries(retries);
        }
        Connector {
            config,
            ..self.clone()
        }
    }

    /// Every host and port connections try, in order (several for a multi-host URL).
    pub fn hosts(&self) -> Vec<(String, u16)> {
        use tokio_postgres::config::Host;
        let ports = self.config.get_ports();
        self.config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    Host::Tcp(host) => host.clone(),
                    #[cfg(unix)]
                    Host::Unix(path) => path.display().to_string(),
                };
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                (host, port)
            })
            .collect()
    }

    /// Whether connections insist on a server that takes writes (`target_session_attrs=read-write`).
    pub fn wants_primary(&self) -> bool {
        self.config.get_target_session_attrs()
            == tokio_postgres::config::TargetSessionAttrs::ReadWrite
    }

    /// Host and port of the admin URL: the default endpoint written into credentials. Never a
    /// Unix socket, which applications on other hosts or in other accounts cannot reach: an
    /// admin URL naming one (the embedded cluster's control role uses its private socket) gives
    /// the same server's TCP address, [`LOOPBACK`] and the port.
    pub fn endpoint(&self) -> (String, u16) {
        let (host, port) = conninfo::endpoint(&self.config);
        match self.on_socket() {
            true => (LOOPBACK.to_string(), port),
            false => (host, port),
        }
    }

    /// Whether connections go to a Unix socket (the admin URL's first host is a directory).
    pub fn on_socket(&self) -> bool {
        #[cfg(unix)]
        if let Some(tokio_postgres::config::Host::Unix(_)) = self.config.get_hosts().first() {
            return true;
        }
        false
    }

    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    /// The mode connections use, and whether the URL named it (else it is libpq's default).
    pub fn ssl_mode(&self) -> (SslMode, bool) {
        (self.ssl_mode, self.ssl_mode_given)
    }

    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// libpq's environment for a client program (pg_dump, pg_restore, psql) to reach `database`
    /// the way this connector does, as its role with the control session's identity options.
    pub fn client_env(&self, database: &str) -> ClientEnv {
        let (host, port) = conninfo::endpoint(&self.config);
        let mut env = ClientEnv::new(host, port, database);
        env.user = self.config.get_user().map(str::to_string);
        env.password = self
            .config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        env.ssl_mode = self.ssl_mode;
        env.root_cert = self.root_cert.clone();
        env.application_name = self.config.get_application_name().map(str::to_string);
        env.connect_timeout = self.config.get_connect_timeout().copied();
        env.options = Some(identity_options(self.config.get_user()));
        env
    }

    /// [`Self::client_env`] as variables.
    pub fn libpq_env(&self, database: &str) -> Vec<(&'static str, String)> {
        self.client_env(database).vars()
    }

    /// `database` None is the admin URL's own database.
    pub async fn connect(&self, database: Option<&str>) -> Result<Client, Error> {
        let mut config = self.config.clone();
        if let Some(database) = database {
            config.dbname(database);
        }
        let (client, connection) =
            config
                .connect(self.tls.clone())
                .await
                .map_err(|source| Error::Connect {
                    database: database.map(str::to_string),
                    source,
                })?;
        tokio::spawn(async move {
            // The client reports the error to its caller; nothing to add here.
            let _ = connection.await;
        });
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sessions_pin_their_own_identity() {
        assert_eq!(
            identity_options(Some("ops")),
            "-c role=none -c session_authorization=ops"
        );
        assert_eq!(
            identity_options(Some(r"a b\c")),
            r"-c role=none -c session_authorization=a\ b\\c"
        );
        let connector = Connector::from_url("postgresql://ops@db/postgres").unwrap();
        let options = connector.config.get_options().unwrap();
        assert!(options.ends_with("-c role=none -c session_authorization=ops"));
        assert!(connector.libpq_env("x").contains(&(
            "PGOPTIONS",
            "-c role=none -c session_authorization=ops".into()
        )));
        let login = connector.with_login("app", "pw");
        assert_eq!(login.config.get_options(), Some(""));
        assert_eq!(login.user(), Some("app"));
    }

    #[test]
    fn endpoint_comes_from_the_url() {
        let connector =
            Connector::from_url("postgresql://u@db.internal:6432/postgres?sslmode=require")
                .unwrap();
        assert_eq!(connector.endpoint(), ("db.internal".to_string(), 6432));
        assert_eq!(connector.user(), Some("u"));
        assert_eq!(connector.ssl_mode(), (SslMode::Require, true));
    }

    #[test]
    fn a_socket_admin_url_gives_applications_the_tcp_address() {
        let url = "postgresql://pgtenant:pw@/postgres?host=/state/my%20cluster/socket&port=5544\
                   &sslmode=disable";
        let connector = Connector::from_url(url).unwrap();
        assert!(connector.on_socket());
        assert_eq!(connector.endpoint(), (LOOPBACK.to_string(), 5544));
        assert_eq!(connector.user(), Some("pgtenant"));
        assert_eq!(connector.ssl_mode(), (SslMode::Disable, true));
        // pg_dump and pg_restore use the socket, like the control connections.
        let env = connector.client_env("app");
        assert_eq!(
            (env.host.as_str(), env.port),
            ("/state/my cluster/socket", 5544)
        );
        let tcp = Connector::from_url("postgresql://u@127.0.0.1:5544/postgres").unwrap();
        assert!(!tcp.on_socket());
        assert_eq!(tcp.client_env("x").host, "127.0.0.1");
    }

    #[test]
    fn client_programs_reach_the_server_the_same_way() {
        let connector = Connector::from_url(
            "host=db port=5433 user=ops password='p w' application_name=ops-runner sslmode=disable",
        )
        .unwrap();
        let env = connector.client_env("app");
        assert_eq!(
            (env.host.as_str(), env.port, env.database.as_str()),
            ("db", 5433, "app")
        );
        assert_eq!(env.password.as_deref(), Some("p w"));
        assert_eq!(env.ssl_mode, SslMode::Disable);
        assert_eq!(env.application_name.as_deref(), Some("ops-runner"));
        assert_eq!(env.connect_timeout, Some(CONNECT_TIMEOUT));
        let defaults = Connector::from_url("postgresql://ops@db/postgres").unwrap();
        assert_eq!(defaults.ssl_mode(), (SslMode::Prefer, false));
        assert_eq!(
            defaults.client_env("x").application_name.as_deref(),
            Some(APPLICATION_NAME)
        );
    }
}
