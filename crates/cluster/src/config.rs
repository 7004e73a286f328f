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

/// Marks the block of [`CONF_FILE`] that WAL archiving adds; everything between the marks is
/// rewritten whenever the archiving settings change.
pub(crate) const ARCHIVE_BEGIN: &str = "# BEGIN archiving (managed by `pgtenant backup`)";
pub(crate) const ARCHIVE_END: &str = "# END archiving";

/// The map name in `pg_ident.conf` that lets the server's OS account log in as the superuser
/// over the private Unix socket (pgBackRest connects only that way).
pub(crate) const IDENT_MAP: &str = "pgtenant";

/// `pg_hba.conf` once archiving is on: the TLS rules, plus the superuser over the Unix socket for
/// the server's own OS account only (peer authentication through [`IDENT_MAP`]; the socket
/// directory is private to that account as well).
pub(crate) fn hba_with_socket(superuser: &str) -> String {
    format!(
        "{HBA_CONF}# pgBackRest: the server's OS account, as {superuser}, over the private socket.\n\
         local all {superuser} peer map={IDENT_MAP}\n"
    )
}

pub(crate) fn ident_conf(os_user: &str, superuser: &str) -> String {
    format!("# Managed by pgtenant.\n{IDENT_MAP} {os_user} {superuser}\n")
}

/// The archiving block of [`CONF_FILE`]: `command` is the `archive_command`.
pub(crate) fn archive_block(
    command: &str,
    timeout_secs: u32,
    socket_dir: &std::path::Path,
) -> String {
    format!(
        "{ARCHIVE_BEGIN}
wal_level = replica
archive_mode = on
archive_command = {}
# Recovery point objective: a WAL segment is archived at least this often when anything was written.
archive_timeout = {timeout_secs}
# pgBackRest talks to the server only through a Unix socket; it lives in a directory only the
# server's account can enter.
unix_socket_directories = {}
unix_socket_permissions = 0700
{ARCHIVE_END}
",
        // postgresql.conf strings double an inner quote, as SQL literals do.
        pgtenant_pg::quote_literal(command),
        pgtenant_pg::quote_literal(&socket_dir.display().to_string())
    )
}

/// `conf` with its archiving block replaced by `block` (or `block` appended when it has none).
pub(crate) fn with_archive_block(conf: &str, block: &str) -> String {
    let mut out = String::new();
    let mut lines = conf.lines();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        if line == ARCHIVE_BEGIN {
            for rest in lines.by_ref() {
                if rest == ARCHIVE_END {
                    break;
                }
            }
            out.push_str(block);
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(block);
    }
    out
}

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
        "CREATE ROLE {} WITH LOGIN CREATEDB CREATEROLE PASSWORD {};\n",
        pgtenant_pg::Ident::new(role).quote(),
        pgtenant_pg::quote_literal(scram_verifier)
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
    fn archive_block_is_replaced_not_repeated() {
        let base = server_conf(5433, false);
        let socket = std::path::Path::new("/state/cluster/socket");
        let first = with_archive_block(&base, &archive_block("push '%p'", 60, socket));
        assert!(first.starts_with(&base));
        assert!(
            first.contains("archive_command = 'push ''%p'''\n"),
            "{first}"
        );
        assert!(first.contains("archive_timeout = 60\n"));
        assert!(first.contains("unix_socket_directories = '/state/cluster/socket'\n"));
        let second = with_archive_block(&first, &archive_block("other %p", 30, socket));
        assert_eq!(second.matches(ARCHIVE_BEGIN).count(), 1, "{second}");
        assert!(second.contains("archive_command = 'other %p'\n"));
        assert!(!second.contains("push"));
        assert_eq!(
            with_archive_block(&second, &archive_block("other %p", 30, socket)),
            second
        );
    }

    #[test]
    fn socket_login_only_for_the_superuser_by_peer() {
        let hba = hba_with_socket("postgres");
        assert!(hba.starts_with(HBA_CONF));
        assert!(hba.ends_with("local all postgres peer map=pgtenant\n"));
        assert_eq!(
            ident_conf("postgres", "postgres").lines().last(),
            Some("pgtenant postgres postgres")
        );
    }

    #[test]
    fn role_sql_quotes_the_verifier() {
        let sql = create_control_role_sql("pgtenant", "SCRAM-SHA-256$4096:a'b$c:d");
        assert_eq!(
            sql,
            "CREATE ROLE \"pgtenant\" WITH LOGIN CREATEDB CREATEROLE \
             PASSWORD 'SCRAM-SHA-256$4096:a''b$c:d';\n"
        );
    }
}
