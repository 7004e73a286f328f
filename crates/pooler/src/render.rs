//! The text of pgbouncer's files: `pgbouncer.ini`, the `[databases]` file it includes, and the
//! `auth_file` of SCRAM verifiers. Pure: [`crate::files`] writes them.

use std::fmt::Write as _;
use std::path::PathBuf;

/// The console login pgtenant administers pgbouncer with: a pgbouncer-only user (in the auth file,
/// never a server role), whose random password lives in the pooler's state file.
pub const ADMIN_USER: &str = "pgtenant_pooler_admin";
pub const INI_FILE: &str = "pgbouncer.ini";
pub const DATABASES_FILE: &str = "databases.ini";
pub const AUTH_FILE: &str = "users.txt";
/// `auth: query` only: pgbouncer's own HBA rules, which refuse the lookup login to clients.
pub const HBA_FILE: &str = "hba.conf";
pub const PID_FILE: &str = "pgbouncer.pid";
pub const LOG_FILE: &str = "pgbouncer.log";
/// The function P13b's lookup role owns in every tenant database (auth: query).
pub const AUTH_QUERY: &str = "SELECT usename, passwd FROM pgtenant.pooler_lookup($1)";

/// How pgbouncer learns the verifiers it checks clients against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The `auth_file` pgtenant writes (the default).
    File,
    /// `auth_query` through the lookup function, logging in as `user` (whose own verifier is
    /// in the auth file).
    Query { user: String },
}

/// TLS between pgbouncer and the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `verify-full` with a CA, else `require`.
    pub ca_file: Option<PathBuf>,
}

/// Everything `pgbouncer.ini` says apart from the databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Holds every file, the pid file, the log and the admin socket.
    pub dir: PathBuf,
    pub listen_addr: String,
    pub listen_port: u16,
    pub auth: Auth,
    /// The certificate (issued for the host name apps use) and key shown to clients.
    pub client_tls_cert: PathBuf,
    pub client_tls_key: PathBuf,
    pub server_tls: ServerTls,
    pub default_pool_mode: String,
    pub default_pool_size: u32,
    pub max_client_conn: u32,
}

/// One tenant database's pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The tenant's database name, which is also the name clients ask the pooler for.
    pub database: String,
    pub host: String,
    pub port: u16,
    pub pool_mode: String,
    pub pool_size: u32,
}

pub fn ini(settings: &Settings) -> String {
    let dir = &settings.dir;
    let path = |name: &str| dir.join(name).display().to_string();
    let mut out = String::from(
        ";; Managed by pgtenant (pgtenant apply rewrites it and RELOADs pgbouncer): edits are lost.\n\
         [pgbouncer]\n",
    );
    let mut set = |key: &str, value: &str| {
        let _ = writeln!(out, "{key} = {value}");
    };
    set("listen_addr", &settings.listen_addr);
    set("listen_port", &settings.listen_port.to_string());
    set("unix_socket_dir", &dir.display().to_string());
    set("unix_socket_mode", "0700");
    set("pidfile", &path(PID_FILE));
    set("logfile", &path(LOG_FILE));
    match &settings.auth {
        Auth::File => set("auth_type", "scram-sha-256"),
        Auth::Query { user } => {
            // SCRAM for everyone the HBA file does not refuse (see [`hba`]).
            set("auth_type", "hba");
            set("auth_hba_file", &path(HBA_FILE));
            set("auth_user", user);
            set("auth_query", AUTH_QUERY);
        }
    }
    set("auth_file", &path(AUTH_FILE));
    set("admin_users", ADMIN_USER);
    // JDBC sends extra_float_digits, some clients options: pgbouncer refuses unknown ones.
    set("ignore_startup_parameters", "extra_float_digits,options");
    set("client_tls_sslmode", "require");
    set(
        "client_tls_cert_file",
        &settings.client_tls_cert.display().to_string(),
    );
    set(
        "client_tls_key_file",
        &settings.client_tls_key.display().to_string(),
    );
    // No client certificate is asked for (`require`), so this CA file verifies nothing; without
    // one pgbouncer parses the system's whole CA bundle on every RELOAD (a tenant change), which
    // is most of a RELOAD's time.
    set(
        "client_tls_ca_file",
        &settings.client_tls_cert.display().to_string(),
    );
    match &settings.server_tls.ca_file {
        Some(ca) => {
            set("server_tls_sslmode", "verify-full");
            set("server_tls_ca_file", &ca.display().to_string());
        }
        None => set("server_tls_sslmode", "require"),
    }
    set("pool_mode", &settings.default_pool_mode);
    set("default_pool_size", &settings.default_pool_size.to_string());
    set("max_client_conn", &settings.max_client_conn.to_string());
    // A pooled server session starts clean for its next client (session mode), and transaction
    // mode never leaves session state behind in the first place.
    set("server_reset_query", "DISCARD ALL");
    set("log_connections", "0");
    set("log_disconnections", "0");
    let _ = writeln!(out, "%include {}", path(DATABASES_FILE));
    out
}

/// pgbouncer's HBA file for `auth: query`. The lookup login must be in the auth file with its
/// password (pgbouncer logs in to the server with it, where a SCRAM verifier would not do), which
/// would let a client log in as it too: these rules refuse it to every client, on every socket.
/// Everyone else logs in with SCRAM (TLS is required of TCP clients by `client_tls_sslmode`).
pub fn hba(lookup_user: &str) -> String {
    let mut out = String::from(";; Managed by pgtenant: the lookup login is pgbouncer's own.\n");
    for kind in ["local all", "host all"] {
        let address = if kind == "local all" {
            ""
        } else {
            " 0.0.0.0/0"
        };
        let _ = writeln!(out, "{kind} {lookup_user}{address} reject");
        if kind == "host all" {
            let _ = writeln!(out, "{kind} {lookup_user} ::/0 reject");
        }
    }
    out.push_str(
        "local all all scram-sha-256\n\
         host all all 0.0.0.0/0 scram-sha-256\n\
         host all all ::/0 scram-sha-256\n",
    );
    out
}

/// The `[databases]` section: one line per entry, sorted, so the same fleet gives the same text.
pub fn databases(entries: &[Entry]) -> String {
    let mut entries = entries.to_vec();
    entries.sort();
    let mut out =
        String::from(";; Managed by pgtenant: one pool per tenant database.\n[databases]\n");
    for e in &entries {
        let _ = writeln!(
            out,
            "{} = host={} port={} dbname={} pool_mode={} pool_size={}",
            e.database, e.host, e.port, e.database, e.pool_mode, e.pool_size
        );
    }
    out
}

/// The entries of a databases file [`databases`] wrote (other lines are skipped).
pub fn parse_databases(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(" = ")?;
            let value = |key: &str| {
                rest.split(' ')
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            };
            Some(Entry {
                database: name.trim().to_string(),
                host: value("host")?.to_string(),
                port: value("port")?.parse().ok()?,
                pool_mode: value("pool_mode")?.to_string(),
                pool_size: value("pool_size")?.parse().ok()?,
            })
        })
        .collect()
}

/// The auth file: `"user" "verifier"` lines, sorted. Names and verifiers never hold a double
/// quote (tenant names are restricted, verifiers are base64), which [`is_plain`] checks.
pub fn auth_file<'a>(users: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut users: Vec<_> = users.into_iter().collect();
    users.sort();
    let mut out = String::new();
    for (user, verifier) in users {
        debug_assert!(is_plain(user) && is_plain(verifier));
        let _ = writeln!(out, "\"{user}\" \"{verifier}\"");
    }
    out
}

/// Whether `text` can stand in pgbouncer's files unquoted-safe: no quotes, spaces or controls.
pub fn is_plain(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\'' && c != '\\')
}

/// Whether a database name can be a `[databases]` key and a `dbname=` value as is.
pub fn is_plain_database(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            dir: "/var/lib/pgtenant/cluster/pooler".into(),
            listen_addr: "127.0.0.1".into(),
            listen_port: 6432,
            auth: Auth::File,
            client_tls_cert: "/var/lib/pgtenant/cluster/data/server.crt".into(),
            client_tls_key: "/var/lib/pgtenant/cluster/data/server.key".into(),
            server_tls: ServerTls {
                ca_file: Some("/var/lib/pgtenant/cluster/ca.crt".into()),
            },
            default_pool_mode: "transaction".into(),
            default_pool_size: 10,
            max_client_conn: 2000,
        }
    }

    #[test]
    fn rendered_ini() {
        insta::assert_snapshot!(ini(&settings()));
    }

    #[test]
    fn auth_query_names_the_lookup_function_and_plain_tls_without_a_ca_is_require() {
        let mut s = settings();
        s.auth = Auth::Query {
            user: "pgtenant_pooler_lookup".into(),
        };
        s.server_tls.ca_file = None;
        let text = ini(&s);
        assert!(text.contains("auth_user = pgtenant_pooler_lookup\n"));
        assert!(text.contains("auth_type = hba\n"));
        assert!(text.contains("auth_hba_file = /var/lib/pgtenant/cluster/pooler/hba.conf\n"));
        insta::assert_snapshot!(hba("pgtenant_pooler_lookup"), @r"
        ;; Managed by pgtenant: the lookup login is pgbouncer's own.
        local all pgtenant_pooler_lookup reject
        host all pgtenant_pooler_lookup 0.0.0.0/0 reject
        host all pgtenant_pooler_lookup ::/0 reject
        local all all scram-sha-256
        host all all 0.0.0.0/0 scram-sha-256
        host all all ::/0 scram-sha-256
        ");
        assert!(text.contains(&format!("auth_query = {AUTH_QUERY}\n")));
        assert!(text.contains("server_tls_sslmode = require\n"));
        assert!(!text.contains("server_tls_ca_file"));
    }

    #[test]
    fn databases_are_sorted_with_their_own_mode_and_size() {
        let entry = |db: &str, mode: &str, size| Entry {
            database: db.into(),
            host: "127.0.0.1".into(),
            port: 5432,
            pool_mode: mode.into(),
            pool_size: size,
        };
        let text = databases(&[
            entry("team-b", "session", 3),
            entry("team-a", "transaction", 10),
        ]);
        assert_eq!(
            parse_databases(&text),
            vec![
                entry("team-a", "transaction", 10),
                entry("team-b", "session", 3)
            ]
        );
        insta::assert_snapshot!(text, @r"
        ;; Managed by pgtenant: one pool per tenant database.
        [databases]
        team-a = host=127.0.0.1 port=5432 dbname=team-a pool_mode=transaction pool_size=10
        team-b = host=127.0.0.1 port=5432 dbname=team-b pool_mode=session pool_size=3
        ");
    }

    #[test]
    fn auth_file_lines_are_quoted_and_sorted() {
        let text = auth_file([
            ("b", "SCRAM-SHA-256$4096:x$y:z"),
            ("a", "SCRAM-SHA-256$1:s$k:k"),
        ]);
        assert_eq!(
            text,
            "\"a\" \"SCRAM-SHA-256$1:s$k:k\"\n\"b\" \"SCRAM-SHA-256$4096:x$y:z\"\n"
        );
        assert!(!is_plain("a\"b") && !is_plain("") && !is_plain("a b"));
        assert!(is_plain_database("team-app_1") && !is_plain_database("a b"));
    }
}
