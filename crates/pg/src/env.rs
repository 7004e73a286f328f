//! libpq's environment for client programs (pg_dump, pg_restore, psql): how they reach a server,
//! with the password in the environment, never on a command line (visible to everyone in `ps`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::SslMode;

/// The libpq variables a program must not take from the caller's environment: they would send it
/// elsewhere (`PGHOSTADDR`, a service) or change how the server is verified. [`ClientEnv::apply`]
/// removes every inherited `PG*` variable; [`ClientEnv::apply_interactive`] only these (and
/// pgtenant's own `PGTENANT_*`), leaving a person's preferences (`PGCLIENTENCODING`…) alone.
pub const REDIRECTING_VARS: [&str; 5] = [
    "PGHOSTADDR",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLROOTCERT",
    "PGREQUIRESSL",
];

/// Where and as whom a libpq program connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnv {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ssl_mode: SslMode,
    pub root_cert: Option<PathBuf>,
    pub application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
    /// `PGOPTIONS`: settings given at connection start.
    pub options: Option<String>,
}

impl ClientEnv {
    pub fn new(host: impl Into<String>, port: u16, database: impl Into<String>) -> Self {
        ClientEnv {
            host: host.into(),
            port,
            database: database.into(),
            user: None,
            password: None,
            ssl_mode: SslMode::default(),
            root_cert: None,
            application_name: None,
            connect_timeout: None,
            options: None,
        }
    }

    /// The same server and TLS settings, as `user` with `password` (and no startup options).
    pub fn login(mut self, user: &str, password: &str) -> Self {
        self.user = Some(user.to_string());
        self.password = Some(password.to_string());
        self.options = None;
        self
    }

    /// The variables, in a stable order: where, who, TLS, then how.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
        ];
        if let Some(user) = &self.user {
            vars.push(("PGUSER", user.clone()));
        }
        if let Some(password) = &self.password {
            vars.push(("PGPASSWORD", password.clone()));
        }
        vars.push(("PGDATABASE", self.database.clone()));
        vars.push(("PGSSLMODE", self.ssl_mode.as_str().to_string()));
        if let Some(root_cert) = &self.root_cert {
            vars.push(("PGSSLROOTCERT", root_cert.display().to_string()));
        }
        if let Some(name) = &self.application_name {
            vars.push(("PGAPPNAME", name.clone()));
        }
        if let Some(timeout) = self.connect_timeout {
            vars.push(("PGCONNECT_TIMEOUT", timeout.as_secs().max(1).to_string()));
        }
        if let Some(options) = &self.options {
            vars.push(("PGOPTIONS", options.clone()));
        }
        vars
    }

    /// Sets the variables on `cmd`, after removing every inherited `PG*` variable so none
    /// overrides them: for programs pgtenant runs itself.
    pub fn apply(&self, cmd: &mut Command) {
        clear_inherited(cmd);
        cmd.envs(self.vars());
    }

    /// Sets the variables on `cmd`, after removing the inherited ones that would redirect it and
    /// pgtenant's own settings (the admin URL holds the control role's password): for a program a
    /// person uses, such as psql and its `\!` shell.
    pub fn apply_interactive(&self, cmd: &mut Command) {
        for var in REDIRECTING_VARS {
            cmd.env_remove(var);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PGTENANT_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.vars());
    }
}

/// Removes every inherited `PG*` variable from `cmd` (PGDATA, PGPORT, PGPASSWORD…), so none
/// silently overrides what the caller passes.
pub fn clear_inherited(cmd: &mut Command) {
    use std::os::unix::ffi::OsStrExt;
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"PG") {
            cmd.env_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_name_only_what_is_given() {
        let env = ClientEnv::new("db.internal", 5432, "app");
        let names: Vec<&str> = env.vars().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["PGHOST", "PGPORT", "PGDATABASE", "PGSSLMODE"]);
        let mut env = env.login("app-read", "s3cret");
        env.ssl_mode = SslMode::VerifyFull;
        env.root_cert = Some("/var/lib/pgtenant/ca.crt".into());
        env.application_name = Some("pgtenant".into());
        env.connect_timeout = Some(Duration::from_secs(10));
        let vars = env.vars();
        assert_eq!(
            vars,
            [
                ("PGHOST", "db.internal"),
                ("PGPORT", "5432"),
                ("PGUSER", "app-read"),
                ("PGPASSWORD", "s3cret"),
                ("PGDATABASE", "app"),
                ("PGSSLMODE", "verify-full"),
                ("PGSSLROOTCERT", "/var/lib/pgtenant/ca.crt"),
                ("PGAPPNAME", "pgtenant"),
                ("PGCONNECT_TIMEOUT", "10"),
            ]
            .map(|(n, v)| (n, v.to_string()))
        );
    }

    #[test]
    fn programs_see_only_the_variables_set() {
        // Whatever PG* variables this process has (a developer's PGHOST, the harness's
        // PGTENANT_PG_BIN), the child sees exactly the ones set.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "env | grep ^PG | sort"]);
        let env = ClientEnv::new("db", 5432, "app").login("u", "p");
        env.apply(&mut cmd);
        let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert_eq!(
            out,
            "PGDATABASE=app\nPGHOST=db\nPGPASSWORD=p\nPGPORT=5432\nPGSSLMODE=require\nPGUSER=u\n"
        );
    }
}
