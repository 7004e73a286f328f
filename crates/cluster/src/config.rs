//! The server configuration pgtenant imposes on its embedded cluster.

use std::path::Path;

/// Our settings live in their own file, included from `postgresql.conf`, so they stay
/// distinguishable from initdb's defaults.
pub(crate) const CONF_FILE: &str = "pgtenant.conf";

/// Appended to `postgresql.conf`. As the last line it overrides initdb's values.
pub(crate) const INCLUDE_LINE: &str =
    "\n# Settings managed by pgtenant.\ninclude 'pgtenant.conf'\n";

/// TLS over loopback (no `host` line, so plaintext TCP logins are refused with "no encryption")
/// and SCRAM for everyone; the Unix socket lives in the cluster's private `socket/` directory
/// (0700, the server's account), which only the server's account and root can enter.
/// [`hba`] puts the peer-authenticated lines of the socket before these.
const HBA_RULES: &str = "\
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128 scram-sha-256
local all all scram-sha-256
";

/// File names, relative to the data directory, that the server reads its key pair from.
pub(crate) const SERVER_CERT: &str = "server.crt";
pub(crate) const SERVER_KEY: &str = "server.key";

/// Marks the block of [`CONF_FILE`] that WAL archiving adds; everything between the marks is
/// rewritten whenever the archiving settings change.
pub(crate) const ARCHIVE_BEGIN: &str = "# BEGIN archiving (managed by `pgtenant backup`)";
pub(crate) const ARCHIVE_END: &str = "# END archiving";

/// The map name in `pg_ident.conf` of the OS accounts that may log in over the private Unix
/// socket without a password, and as which roles.
pub(crate) const IDENT_MAP: &str = "pgtenant";

/// The OS account that, besides the server's own, can enter the socket directory: pgtenant runs
/// as it when it runs the server as an unprivileged account.
const ROOT: &str = "root";

/// `pg_hba.conf`: over the private Unix socket, peer authentication through [`IDENT_MAP`] for the
/// control role (the only accounts that can reach the socket, root and the server's, can read its
/// password anyway: peer spares each of its connections a SCRAM exchange, whose PBKDF2 costs the
/// client ~1.5 ms) and, once archiving is on, for the superuser (pgBackRest connects only that
/// way); then [`HBA_RULES`]. The first matching line decides, so the peer lines come first.
pub(crate) fn hba(control_role: &str, superuser_by_peer: Option<&str>) -> String {
    let mut hba = String::from(
        "# Managed by pgtenant: TLS and SCRAM over loopback; over the private Unix socket, \
         the control role (and pgBackRest's superuser) by peer, everyone else by SCRAM.\n",
    );
    if let Some(superuser) = superuser_by_peer {
        hba.push_str(&format!(
            "# pgBackRest: the server's OS account, as {superuser}, over the private socket.\n\
             local all {superuser} peer map={IDENT_MAP}\n"
        ));
    }
    hba.push_str(&format!(
        "# pgtenant itself (root or the server's OS account), as {control_role}, over the private socket.\n\
         local all {control_role} peer map={IDENT_MAP}\n{HBA_RULES}"
    ));
    hba
}

/// `pg_ident.conf` for [`hba`]: the server's account as the control role and, when archiving is
/// on, as the superuser; root as the control role.
pub(crate) fn ident_conf(
    server_account: &str,
    control_role: &str,
    superuser_by_peer: Option<&str>,
) -> String {
    let mut conf = String::from("# Managed by pgtenant.\n");
    if let Some(superuser) = superuser_by_peer {
        conf.push_str(&format!("{IDENT_MAP} {server_account} {superuser}\n"));
    }
    conf.push_str(&format!("{IDENT_MAP} {server_account} {control_role}\n"));
    if server_account != ROOT {
        conf.push_str(&format!("{IDENT_MAP} {ROOT} {control_role}\n"));
    }
    conf
}

/// The archiving block of [`CONF_FILE`]: `command` is the `archive_command`.
pub(crate) fn archive_block(command: &str, timeout_secs: u32) -> String {
    format!(
        "{ARCHIVE_BEGIN}
wal_level = replica
archive_mode = on
archive_command = {}
# Recovery point objective: a WAL segment is archived at least this often when anything was written.
archive_timeout = {timeout_secs}
{ARCHIVE_END}
",
        // postgresql.conf strings double an inner quote, as SQL literals do.
        pgtenant_pg::quote_literal(command),
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

/// The longest Unix socket path the server can bind (`sun_path` less its terminating zero).
const MAX_SOCKET_PATH: usize = 107;

/// The socket settings of [`CONF_FILE`]: the server listens in `socket_dir` (0700, its own
/// account's), or on TCP only when the socket's path would be too long for the kernel (the
/// server refuses to start when it can create none of its sockets).
pub(crate) fn socket_lines(socket_dir: &Path, port: u16) -> String {
    let dir = socket_dir.display().to_string();
    let path_len = dir.len() + format!("/.s.PGSQL.{port}").len();
    let dir = if path_len <= MAX_SOCKET_PATH {
        dir
    } else {
        String::new()
    };
    format!(
        "{SOCKET_COMMENT}\nunix_socket_directories = {}\nunix_socket_permissions = 0700\n",
        pgtenant_pg::quote_literal(&dir)
    )
}

const SOCKET_COMMENT: &str = "# The control role, pgBackRest and the local pooler reach the server \
     over this socket; only the server's account (and root) can enter its directory, and pg_hba.conf \
     lets in only the control role and pgBackRest's superuser by peer, everyone else by SCRAM.";

/// `conf` with its socket settings (and those of an older pgtenant: none, or in the archiving
/// block) replaced by [`socket_lines`], right after the `port` line.
pub(crate) fn with_socket(conf: &str, socket_dir: &Path, port: u16) -> String {
    let mut out = String::new();
    for line in conf.lines() {
        let setting = line.split('=').next().unwrap_or_default().trim();
        let old = matches!(
            setting,
            "unix_socket_directories" | "unix_socket_permissions"
        ) || line == SOCKET_COMMENT
            || OLD_SOCKET_COMMENTS.contains(&line);
        if old {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("port = ") {
            out.push_str(&socket_lines(socket_dir, port));
        }
    }
    out
}

/// Comments an older pgtenant wrote next to its socket settings.
const OLD_SOCKET_COMMENTS: [&str; 5] = [
    "# The control role, pgBackRest and the local pooler reach the server over this socket; only \
     the server's account (and root) can enter its directory, and pg_hba.conf asks for SCRAM there too.",
    "# TCP only: a socket directory would need a path writable by the server user and would",
    "# allow logins that bypass TLS.",
    "# pgBackRest talks to the server only through a Unix socket; it lives in a directory only the",
    "# server's account can enter.",
];

/// Contents of [`CONF_FILE`].
pub(crate) fn server_conf(port: u16, socket_dir: &Path, fast: bool) -> String {
    let socket = socket_lines(socket_dir, port);
    let mut conf = format!(
        "\
listen_addresses = '127.0.0.1'
port = {port}
{socket}max_connections = 200

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

    const SOCKET: &str = "/state/cluster/socket";

    fn rules(hba: &str) -> Vec<&str> {
        hba.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn hba_lets_only_the_control_role_in_by_peer_and_asks_tls_and_scram_of_everyone_else() {
        assert_eq!(
            rules(&hba("pgtenant", None)),
            [
                "local all pgtenant peer map=pgtenant",
                "hostssl all all 127.0.0.1/32 scram-sha-256",
                "hostssl all all ::1/128 scram-sha-256",
                "local all all scram-sha-256"
            ]
        );
        assert_eq!(
            rules(&ident_conf("postgres", "pgtenant", None)),
            ["pgtenant postgres pgtenant", "pgtenant root pgtenant"]
        );
    }

    #[test]
    fn fast_settings_only_when_asked() {
        let normal = server_conf(5433, Path::new(SOCKET), false);
        assert!(normal.contains("port = 5433\n"));
        assert!(normal.contains("ssl = on\n"));
        assert!(normal.contains("unix_socket_directories = '/state/cluster/socket'\n"));
        assert!(normal.contains("unix_socket_permissions = 0700\n"));
        assert!(!normal.contains("fsync"));
        let fast = server_conf(5433, Path::new(SOCKET), true);
        for setting in [
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
        ] {
            assert!(fast.contains(setting), "{setting}");
        }
    }

    #[test]
    fn a_socket_path_too_long_for_the_kernel_leaves_the_server_on_tcp() {
        let long = format!("/{}/socket", "d".repeat(100));
        let conf = server_conf(5433, Path::new(&long), false);
        assert!(conf.contains("unix_socket_directories = ''\n"), "{conf}");
        // 107 bytes fit: 94 + "/.s.PGSQL.5433".
        let fits = format!("/{}", "d".repeat(92));
        assert_eq!(fits.len() + "/.s.PGSQL.5433".len(), MAX_SOCKET_PATH);
        let conf = server_conf(5433, Path::new(&fits), false);
        assert!(conf.contains(&format!("unix_socket_directories = '{fits}'\n")));
    }

    #[test]
    fn older_configurations_get_one_socket_setting_after_the_port() {
        let socket = Path::new(SOCKET);
        let current = server_conf(5433, socket, false);
        assert_eq!(with_socket(&current, socket, 5433), current);
        // TCP only, as pgtenant wrote it before the socket, and then with archiving on.
        let tcp_only = current.replace(
            &socket_lines(socket, 5433),
            &format!(
                "{}\n{}\nunix_socket_directories = ''\n",
                OLD_SOCKET_COMMENTS[0], OLD_SOCKET_COMMENTS[1]
            ),
        );
        assert!(!tcp_only.contains(SOCKET));
        let archiving = format!(
            "{tcp_only}\n{ARCHIVE_BEGIN}\narchive_mode = on\n{}\n{}\n\
             unix_socket_directories = '{SOCKET}'\nunix_socket_permissions = 0700\n{ARCHIVE_END}\n",
            OLD_SOCKET_COMMENTS[2], OLD_SOCKET_COMMENTS[3]
        );
        for old in [tcp_only, archiving.clone()] {
            let new = with_socket(&old, socket, 5433);
            assert_eq!(new.matches("unix_socket_directories").count(), 1, "{new}");
            assert_eq!(new.matches("unix_socket_permissions").count(), 1, "{new}");
            assert!(new.contains(&format!("port = 5433\n{}", socket_lines(socket, 5433))));
            assert!(!new.contains("TCP only"), "{new}");
            assert_eq!(with_socket(&new, socket, 5433), new);
        }
        assert!(with_socket(&archiving, socket, 5433).contains("archive_mode = on\n"));
    }

    #[test]
    fn archive_block_is_replaced_not_repeated() {
        let base = server_conf(5433, Path::new(SOCKET), false);
        let first = with_archive_block(&base, &archive_block("push '%p'", 60));
        assert!(first.starts_with(&base));
        assert!(
            first.contains("archive_command = 'push ''%p'''\n"),
            "{first}"
        );
        assert!(first.contains("archive_timeout = 60\n"));
        assert_eq!(first.matches("unix_socket_directories").count(), 1);
        let second = with_archive_block(&first, &archive_block("other %p", 30));
        assert_eq!(second.matches(ARCHIVE_BEGIN).count(), 1, "{second}");
        assert!(second.contains("archive_command = 'other %p'\n"));
        assert!(!second.contains("push"));
        assert_eq!(
            with_archive_block(&second, &archive_block("other %p", 30)),
            second
        );
    }

    #[test]
    fn with_archiving_the_superuser_by_peer_too_for_the_server_account_only() {
        assert_eq!(
            rules(&hba("pgtenant", Some("postgres"))),
            [
                "local all postgres peer map=pgtenant",
                "local all pgtenant peer map=pgtenant",
                "hostssl all all 127.0.0.1/32 scram-sha-256",
                "hostssl all all ::1/128 scram-sha-256",
                "local all all scram-sha-256"
            ]
        );
        assert_eq!(
            rules(&ident_conf("pgdata", "pgtenant", Some("postgres"))),
            [
                "pgtenant pgdata postgres",
                "pgtenant pgdata pgtenant",
                "pgtenant root pgtenant"
            ]
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
