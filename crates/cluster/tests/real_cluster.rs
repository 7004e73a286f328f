//! Against real PostgreSQL servers. When run as root (as here and in CI) this exercises
//! the switch to an unprivileged server account.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use pgtenant_cluster::{
    find_binaries, ClusterError, ClusterOptions, EmbeddedCluster, TestCluster, CONTROL_ROLE,
};

const PSQL: &str = "/usr/bin/psql";

/// A libpq URL split into the password and the rest, so that psql gets the password through
/// PGPASSWORD instead of its arguments.
struct Url {
    without_password: String,
    password: String,
}

impl Url {
    fn parse(url: &str) -> Url {
        let rest = url
            .strip_prefix("postgresql://")
            .expect("postgresql:// URL");
        let (userinfo, host_and_more) = rest.split_once('@').expect("user info");
        let (user, password) = userinfo.split_once(':').expect("password in URL");
        Url {
            without_password: format!("postgresql://{user}@{host_and_more}"),
            password: password.to_string(),
        }
    }

    /// The same URL with the query (sslmode, sslrootcert) replaced.
    fn with_query(&self, query: &str) -> String {
        let base = self.without_password.split('?').next().unwrap();
        format!("{base}?{query}")
    }
}

/// Runs one statement with psql; stdout on success, stderr on failure.
fn psql(conninfo: &str, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(PSQL)
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("LC_ALL", "C")
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn query(url: &str, sql: &str) -> String {
    let url = Url::parse(url);
    psql(&url.without_password, &url.password, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn cluster_dir(cluster: &EmbeddedCluster) -> PathBuf {
    cluster.data_dir().parent().unwrap().to_path_buf()
}

fn postmaster_pid(cluster: &EmbeddedCluster) -> u32 {
    let pidfile = fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    pidfile.lines().next().unwrap().trim().parse().unwrap()
}

/// The value of a `Name:` line of /proc/<pid>/status.
fn proc_status(pid: u32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn tls_roles_and_unprivileged_server() {
    let tc = TestCluster::start().unwrap();
    let cluster = &tc.cluster;
    let superuser = cluster.superuser_url().unwrap();
    let control = cluster.control_url().unwrap();

    let port = cluster.port().unwrap();
    let ca = cluster.ca_cert_path();
    assert!(ca.is_absolute());
    assert!(
        control.starts_with(&format!("postgresql://{CONTROL_ROLE}:")),
        "control URL has the control role"
    );
    let expected_tail = format!(
        "@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    assert!(superuser.ends_with(&expected_tail), "{superuser}");
    // The control role is on the private socket: SCRAM, no TLS (the server offers none there).
    let socket = cluster.socket_dir();
    assert!(cluster.listens_on_socket());
    assert!(
        control.ends_with(&format!(
            "@/postgres?host={}&port={port}&sslmode=disable",
            socket.display()
        )),
        "{control}"
    );

    // verify-full with our CA works, and the session really is encrypted.
    assert_eq!(
        query(
            &superuser,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
        "t"
    );
    assert_eq!(
        query(
            &superuser,
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles \
             WHERE rolname = 'pgtenant'"
        ),
        "f|t|t|t"
    );
    let own_session = "SELECT current_user, inet_client_addr() IS NULL, ssl FROM pg_stat_ssl \
                       WHERE pid = pg_backend_pid()";
    assert_eq!(query(&control, own_session), "pgtenant|t|f");
    // Over TCP the control role still needs TLS, as everyone does.
    let control_tcp = Url::parse(&superuser)
        .without_password
        .replace("postgresql://postgres@", "postgresql://pgtenant@");
    let control_password = Url::parse(&control).password;
    assert_eq!(
        psql(&control_tcp, &control_password, own_session).unwrap(),
        "pgtenant|f|t"
    );
    // On the socket the control role is let in by peer: whatever password comes with it, the
    // server asks for none (this process is root or the server's account, the only ones that can
    // enter the socket's directory). Every other role still needs its password there.
    let control_on_socket = Url::parse(&control).without_password;
    assert_eq!(
        psql(&control_on_socket, "wrong", own_session).unwrap(),
        "pgtenant|t|f"
    );
    let superuser_on_socket =
        control_on_socket.replace("postgresql://pgtenant@", "postgresql://postgres@");
    let no_password = psql(&superuser_on_socket, "wrong", "SELECT 1").unwrap_err();
    assert!(
        no_password.contains("password authentication failed"),
        "{no_password}"
    );

    // The verifier, not a password, is what the server stored.
    assert_eq!(
        query(
            &superuser,
            "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'pgtenant'"
        ),
        "SCRAM-SHA-256$"
    );

    // Plaintext is refused by pg_hba.conf.
    let url = Url::parse(&superuser);
    let err = psql(
        &url.with_query("sslmode=disable"),
        &url.password,
        "SELECT 1",
    )
    .unwrap_err();
    assert!(err.contains("no encryption"), "{err}");
    // A wrong password is refused too.
    let err = psql(&url.without_password, "wrong", "SELECT 1").unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");

    // The server does not run as root and keeps none of root's groups.
    let pid = postmaster_pid(cluster);
    let uids = proc_status(pid, "Uid");
    assert!(
        uids.split_whitespace().all(|uid| uid != "0"),
        "postmaster uids: {uids}"
    );
    let status = cluster.status().unwrap();
    assert!(status.initialized && status.running);
    assert_eq!(status.port, Some(port));
    assert_eq!(
        status.version.as_deref(),
        Some(find_binaries().unwrap().version.as_str())
    );
    assert_eq!(status.ca_cert.as_deref(), Some(ca.as_path()));
    if is_root() {
        assert_eq!(proc_status(pid, "Groups"), "", "supplementary groups");
        assert_eq!(status.server_user.as_deref(), Some("postgres"));
    }

    // File modes: secrets private, the key owned by the server.
    let dir = cluster_dir(cluster);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("cluster.json")), 0o600);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&ca), 0o644);
    assert_eq!(mode(&socket), 0o700);
    assert_eq!(
        fs::metadata(&socket).unwrap().uid(),
        fs::metadata(cluster.data_dir()).unwrap().uid(),
        "the socket's directory belongs to the server's account"
    );
    let server_key = cluster.data_dir().join("server.key");
    assert_eq!(mode(&server_key), 0o600);
    assert_eq!(
        fs::metadata(&server_key).unwrap().uid(),
        fs::metadata(cluster.data_dir()).unwrap().uid()
    );
    assert!(!dir.join(".initdb-pwfile").exists());

    // Passwords appear nowhere but in cluster.json.
    let log = fs::read_to_string(cluster.log_file()).unwrap();
    assert!(log.contains("database system is ready"), "{log}");
    for secret in [&url.password, &Url::parse(&control).password] {
        assert!(!log.contains(secret.as_str()));
    }
}

#[test]
fn clusters_have_their_own_ports_and_cas() {
    let a = TestCluster::start().unwrap();
    let b = TestCluster::start().unwrap();
    let (a, b) = (&a.cluster, &b.cluster);
    assert_ne!(a.port().unwrap(), b.port().unwrap());
    assert_eq!(query(&a.superuser_url().unwrap(), "SELECT 1"), "1");
    assert_eq!(query(&b.superuser_url().unwrap(), "SELECT 1"), "1");

    let url = Url::parse(&a.superuser_url().unwrap());
    let foreign_ca = format!(
        "sslmode=verify-full&sslrootcert={}",
        b.ca_cert_path().display()
    );
    let err = psql(&url.with_query(&foreign_ca), &url.password, "SELECT 1").unwrap_err();
    assert!(err.contains("certificate verify failed"), "{err}");
}

#[test]
fn test_clusters_share_no_data() {
    let a = TestCluster::start().unwrap();
    let a_url = a.cluster.superuser_url().unwrap();
    query(&a_url, "CREATE DATABASE only_in_a");
    let b = TestCluster::start().unwrap();
    let count = "SELECT count(*) FROM pg_database WHERE datname = 'only_in_a'";
    assert_eq!(query(&a_url, count), "1");
    assert_eq!(query(&b.cluster.superuser_url().unwrap(), count), "0");
}

#[test]
fn restart_keeps_port_and_ensure_running_is_idempotent() {
    let tc = TestCluster::start().unwrap();
    let cluster = &tc.cluster;
    let dir = cluster_dir(cluster);
    let port = cluster.port().unwrap();
    let pid = postmaster_pid(cluster);

    // Running: left alone.
    let again = EmbeddedCluster::ensure_running(&dir, &ClusterOptions::default()).unwrap();
    assert_eq!(again.port().unwrap(), port);
    assert_eq!(postmaster_pid(cluster), pid, "no restart");
    cluster.start().unwrap();
    assert_eq!(postmaster_pid(cluster), pid, "no restart");
    assert!(matches!(
        cluster.init(&ClusterOptions::default()),
        Err(ClusterError::AlreadyInitialized { .. })
    ));

    cluster.stop().unwrap();
    let status = cluster.status().unwrap();
    assert!(status.initialized && !status.running);
    assert_eq!(status.port, Some(port));
    cluster.stop().unwrap();

    cluster.start().unwrap();
    assert!(cluster.status().unwrap().running);
    assert_eq!(cluster.port().unwrap(), port);
    assert_eq!(query(&cluster.control_url().unwrap(), "SELECT 1"), "1");

    // Stopped: ensure_running starts it, on the same port.
    cluster.stop().unwrap();
    let again = EmbeddedCluster::ensure_running(&dir, &ClusterOptions::default()).unwrap();
    assert!(again.status().unwrap().running);
    assert_eq!(again.port().unwrap(), port);
    assert_eq!(query(&again.superuser_url().unwrap(), "SELECT 1"), "1");

    // A port contradicting the remembered one is an error, not a silent change.
    let other = ClusterOptions {
        port: Some(port.wrapping_add(1)),
        fast: true,
    };
    let err = EmbeddedCluster::ensure_running(&dir, &other).unwrap_err();
    assert!(err.to_string().contains("created with port"), "{err}");
}

#[test]
fn start_reports_a_port_taken_by_another_process() {
    let tc = TestCluster::start().unwrap();
    let cluster = &tc.cluster;
    let port = cluster.port().unwrap();
    cluster.stop().unwrap();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    match cluster.start() {
        Err(ClusterError::PortInUse { port: p, .. }) => assert_eq!(p, port),
        other => panic!("expected PortInUse, got {other:?}"),
    }
    drop(squatter);
    cluster.start().unwrap();
    assert!(cluster.status().unwrap().running);
}

/// Stops a cluster created outside TestCluster when the test ends, passing or not.
struct StopOnDrop<'a>(&'a EmbeddedCluster);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

#[test]
fn state_dir_the_server_cannot_enter_is_refused_until_fixed() {
    if !is_root() {
        pgtenant_cluster::skip_or_fail(
            "needs root: as anyone else the server runs as us and can enter our own directories",
        );
        return;
    }
    let parent = tempfile::tempdir().unwrap();
    fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let dir = parent.path().join("cluster");
    let options = ClusterOptions {
        port: None,
        fast: true,
    };
    let err = EmbeddedCluster::ensure_running(&dir, &options).unwrap_err();
    match &err {
        ClusterError::NotTraversable { dir: d, user } => {
            assert_eq!(d, parent.path());
            assert_eq!(user, "postgres");
        }
        other => panic!("expected NotTraversable, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&format!("chmod o+x {}", parent.path().display())),
        "{message}"
    );

    fs::set_permissions(parent.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let cluster = EmbeddedCluster::ensure_running(&dir, &options).unwrap();
    let _stop = StopOnDrop(&cluster);
    assert_eq!(query(&cluster.superuser_url().unwrap(), "SELECT 1"), "1");
}

#[test]
fn archiving_needs_one_restart_and_opens_a_socket_only_the_server_account_may_use() {
    let tc = TestCluster::start().unwrap();
    let cluster = &tc.cluster;
    let superuser = cluster.superuser_url().unwrap();
    assert!(!cluster.archiving_enabled());
    assert!(cluster.enable_archiving("true %p", 60).unwrap());
    assert!(cluster.archiving_enabled());
    assert!(
        !cluster.enable_archiving("true %p", 60).unwrap(),
        "nothing changes the second time"
    );
    // Reloaded: archive_mode and the socket wait for a restart, which the caller decides on.
    let pending = query(
        &superuser,
        "SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings WHERE pending_restart",
    );
    assert!(pending.contains("archive_mode"), "{pending}");
    assert!(!pending.contains("unix_socket_directories"), "{pending}");
    // The control role keeps its socket, its peer line now after the superuser's.
    assert_eq!(
        query(
            &cluster.control_url().unwrap(),
            "SELECT current_user || ' ' || (inet_client_addr() IS NULL)"
        ),
        "pgtenant true"
    );
    cluster.restart().unwrap();
    assert_eq!(
        query(
            &superuser,
            "SELECT current_setting('archive_mode') || ' ' || current_setting('archive_timeout') \
             || ' ' || current_setting('archive_command')"
        ),
        "on 1min true %p"
    );

    let socket = cluster.socket_dir();
    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let port = cluster.port().unwrap().to_string();
    let user = cluster.server_user().unwrap();
    let login_as = |role: &str| {
        user.command(Path::new(PSQL), cluster.dir())
            .args(["-X", "-w", "-A", "-t", "-h"])
            .arg(&socket)
            .args([
                "-p",
                &port,
                "-U",
                role,
                "-d",
                "postgres",
                "-c",
                "SELECT current_user",
            ])
            .output()
            .unwrap()
    };
    let out = login_as("postgres");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "postgres");
    let out = login_as(CONTROL_ROLE);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        CONTROL_ROLE,
        "the control role by peer too: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    query(
        &superuser,
        "CREATE ROLE some_tenant LOGIN PASSWORD 'a password nobody gives'",
    );
    let out = login_as("some_tenant");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("password"),
        "peer only for the superuser (pgBackRest) and the control role; anyone else needs a \
         password: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A new archive command replaces the block instead of adding one.
    assert!(cluster.enable_archiving("false %p", 30).unwrap());
    let conf = fs::read_to_string(cluster.data_dir().join("pgtenant.conf")).unwrap();
    assert_eq!(conf.matches("archive_command").count(), 1, "{conf}");
    assert_eq!(query(&superuser, "SHOW archive_timeout"), "30s");
    // TLS logins are unchanged.
    assert_eq!(
        query(
            &superuser,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
        "t"
    );
}

#[test]
fn a_cluster_made_before_the_socket_keeps_tcp_until_its_next_restart() {
    let tc = TestCluster::start().unwrap();
    let cluster = &tc.cluster;
    cluster.stop().unwrap();
    // What an older pgtenant wrote: TCP only, no socket directory, no `local` line.
    let data = cluster.data_dir();
    let conf_path = data.join("pgtenant.conf");
    let conf = fs::read_to_string(&conf_path).unwrap();
    let old_conf: String = conf
        .lines()
        .filter(|l| !l.starts_with("unix_socket_permissions") && !l.starts_with("# The control"))
        .map(|l| match l.starts_with("unix_socket_directories") {
            true => "unix_socket_directories = ''\n".to_string(),
            false => format!("{l}\n"),
        })
        .collect();
    fs::write(&conf_path, &old_conf).unwrap();
    let old_hba =
        "hostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n";
    fs::write(data.join("pg_hba.conf"), old_hba).unwrap();
    fs::remove_dir(cluster.socket_dir()).unwrap();
    // Started as the older pgtenant did: pg_ctl on the files as they are.
    let user = cluster.server_user().unwrap();
    let pg_ctl = cluster.binaries().unwrap().program("pg_ctl");
    let out = user
        .command(&pg_ctl, cluster.dir())
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(cluster.log_file())
        .args(["-w", "start"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let on_tcp_with_tls = "SELECT (inet_client_addr() IS NOT NULL) || ' ' || ssl FROM pg_stat_ssl \
                           WHERE pid = pg_backend_pid()";
    assert!(!cluster.listens_on_socket());
    let control = cluster.control_url().unwrap();
    assert!(control.contains("@127.0.0.1:"), "{control}");
    assert_eq!(query(&control, on_tcp_with_tls), "true true");

    // This pgtenant's start of the running server: the files are updated and reloaded, the
    // socket waits for a restart, and meanwhile the control role stays on TCP + TLS.
    cluster.start().unwrap();
    let conf = fs::read_to_string(&conf_path).unwrap();
    assert_eq!(conf.matches("unix_socket_directories").count(), 1, "{conf}");
    assert!(conf.contains(&format!(
        "unix_socket_directories = '{}'",
        cluster.socket_dir().display()
    )));
    let hba = fs::read_to_string(data.join("pg_hba.conf")).unwrap();
    assert!(
        hba.contains("\nlocal all pgtenant peer map=pgtenant\n"),
        "{hba}"
    );
    assert!(hba.contains("\nlocal all all scram-sha-256\n"), "{hba}");
    let ident = fs::read_to_string(data.join("pg_ident.conf")).unwrap();
    let server_account = format!("pgtenant {} pgtenant", user.name());
    assert!(ident.lines().any(|l| l == server_account), "{ident}");
    assert!(cluster.socket_dir().is_dir());
    assert!(!cluster.listens_on_socket());
    let superuser = cluster.superuser_url().unwrap();
    assert_eq!(
        query(
            &superuser,
            "SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart"
        ),
        "unix_socket_directories,unix_socket_permissions"
    );
    let control = cluster.control_url().unwrap();
    assert!(control.contains("@127.0.0.1:"), "{control}");
    assert_eq!(query(&control, on_tcp_with_tls), "true true");

    cluster.restart().unwrap();
    assert!(cluster.listens_on_socket());
    let control = cluster.control_url().unwrap();
    assert!(control.contains("sslmode=disable"), "{control}");
    assert_eq!(query(&control, on_tcp_with_tls), "false false");
    assert_eq!(query(&superuser, on_tcp_with_tls), "true true");
}
