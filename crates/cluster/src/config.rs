//! The server configuration pgtenant imposes on its embedded cluster.

/// Our settings live in their own file, included from `postgresql.conf`, so they stay
/// distinguishable from initdb's defaults.
pub(crate) const CONF_FILE: &str = "pgtenant.conf";

/// Appended to `postgresql.conf`. As the last line it overrides initdb's values.
pub(crate) const INCLUDE_LINE: &str =
    "\n# Settings managed by pgtenant.\ninclude 'pgtenant.conf'\n";

/// TLS with a password is the only way in: no `host` line (so plaintext logins are refused
/// with "no encryption") and no `local` line (the server has no Unix socket).
pub(crate) const HBA_CONF: &str = "\
# Managed by pgtenant: TLS and SCRAM over loopback only.
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128 scram-sha-256
";

/// File names, relative to the data directory, that the server reads its key pair from.
pub(crate) const SERVER_CERT: &str = "server.crt";
pub(crate) const SERVER_KEY: &str = "server.key";

/// Contents of [`CONF_FILE`].
pub(crate) fn server_conf(port: u16, fast: bool) -> String {
    let mut conf = format!(
        "\
listen_addresses = '127.0.0.1'
port = {port}
# TCP only: a socket directory would need a path writable by the server user and would
# allow logins that bypass TLS.
unix_socket_directories = ''
max_connections = 200

ssl = on
ssl_cert_file = '{SERVER_CERT}'
ssl_key_file = '{SERVER_KEY}'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'

# pg_ctl sends the server's stderr to the log file.
log_destination = 'stderr'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
"
    );
    if fast {
        conf.push_str(
            "
# Throwaway test cluster: durability traded for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
",
        );
    }
    conf
}

/// The statement creating the control role. It receives only a SCRAM verifier, so the
/// plaintext password never reaches the server or its logs.
pub(crate) fn create_control_role_sql(role: &str, scram_verifier: &str) -> String {
    format!(
        "CREATE ROLE {role} WITH LOGIN CREATEDB CREATEROLE PASSWORD '{}';\n",
        scram_verifier.replace('\'', "''")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hba_has_only_hostssl_rules() {
        let rules: Vec<&str> = HBA_CONF
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(
            rules,
            [
                "hostssl all all 127.0.0.1/32 scram-sha-256",
                "hostssl all all ::1/128 scram-sha-256"
            ]
        );
    }

    #[test]
    fn fast_settings_only_when_asked() {
        let normal = server_conf(5433, false);
        assert!(normal.contains("port = 5433\n"));
        assert!(normal.contains("ssl = on\n"));
        assert!(!normal.contains("fsync"));
        let fast = server_conf(5433, true);
        for setting in [
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
        ] {
            assert!(fast.contains(setting), "{setting}");
        }
    }

    #[test]
    fn role_sql_quotes_the_verifier() {
        let sql = create_control_role_sql("pgtenant", "SCRAM-SHA-256$4096:a'b$c:d");
        assert_eq!(
            sql,
            "CREATE ROLE pgtenant WITH LOGIN CREATEDB CREATEROLE \
             PASSWORD 'SCRAM-SHA-256$4096:a''b$c:d';\n"
        );
    }
}
