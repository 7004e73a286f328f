//! The pgbouncer pgtenant runs in front of its cluster (issue 13): real pgbouncer, real PostgreSQL.
//!
//! Each test runs the embedded-cluster mode against its own test cluster: the state directory's
//! `cluster` is a link to it and no admin URL is given, so `up` starts pgbouncer and `apply` and
//! `rotate` keep it in line. Without pgbouncer installed the tests fail (PGTENANT_TEST_ALLOW_SKIP=1
//! turns that into a skip).

mod common;
#[path = "../crates/serve/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;

use common::{poll_until, WithPooler};
use serde_json::Value;
use tokio_postgres::NoTls;

/// The embedded cluster with its pooler, and what these tests ask of it.
struct Pooled(WithPooler);

impl std::ops::Deref for Pooled {
    type Target = WithPooler;

    fn deref(&self) -> &WithPooler {
        &self.0
    }
}

impl Pooled {
    /// None: pgbouncer is missing and skipping is allowed.
    fn new() -> Option<Pooled> {
        WithPooler::new().map(Pooled)
    }

    fn up(&self) -> Value {
        self.ok(&["up", "--format", "json"]).json()
    }

    fn pooler(&self) -> Value {
        self.ok(&["status", "--format", "json"]).json()["pooler"].clone()
    }

    fn pid(&self) -> i64 {
        self.pooler()["pid"].as_i64().expect("pgbouncer runs")
    }

    fn port(&self) -> u16 {
        self.pooler()["port"].as_u64().unwrap() as u16
    }

    fn ca(&self) -> PathBuf {
        self.env.cluster.cluster.ca_cert_path()
    }

    /// The URL of `tenant`'s `role` through the pooler, with its stored password, for `database`.
    fn pooled_url(&self, tenant: &str, role: &str, database: Option<&str>) -> String {
        let credential = self.env.credentials(tenant, role);
        self.url_for(
            credential["username"].as_str().unwrap(),
            credential["password"].as_str().unwrap(),
            database.unwrap_or(credential["dbname"].as_str().unwrap()),
        )
    }

    fn url_for(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{database}?sslmode=verify-full&sslrootcert={}",
            self.port(),
            self.ca().display()
        )
    }

    fn pooler_dir(&self) -> PathBuf {
        std::fs::canonicalize(self.env.cluster.cluster.dir())
            .unwrap()
            .join("pooler")
    }

    /// `SHOW DATABASES` names through the admin console, as the admin login in the state file.
    async fn pooled_databases(&self) -> Vec<String> {
        let state: Value =
            serde_json::from_slice(&std::fs::read(self.pooler_dir().join("state.json")).unwrap())
                .unwrap();
        let admin = pgtenant_pooler_admin(
            self.pooler_dir(),
            self.port(),
            state["admin_password"].as_str().unwrap(),
        )
        .await;
        admin
            .simple_query("SHOW DATABASES")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    row.get("name").map(|s| s.to_string())
                }
                _ => None,
            })
            .collect()
    }
}

async fn pgtenant_pooler_admin(dir: PathBuf, port: u16, password: &str) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(dir)
        .port(port)
        .user("pgtenant_pooler_admin")
        .password(password)
        .dbname("pgbouncer");
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    common::connect(url, None).await
}

#[tokio::test]
async fn pooled_logins_run_pgbench_and_are_isolated_and_tls_only() {
    let Some(p) = Pooled::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.env.declare("team", "b", &[("b", "standard")]);
    let up = p.up();
    assert_eq!(up["pooler"]["state"], "running", "{up}");
    p.ok(&["apply"]);

    // The write role of team/a through the pooler, verify-full against the pooler's host name.
    let a_write = p.pooled_url("team/a", "write", None);
    let client = connect(&a_write)
        .await
        .expect("the write role logs in through the pooler");
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "team-a-write");
    assert_eq!(row.get::<_, String>(1), "team-a");

    // pgbench in transaction mode: the tables made by the admin role, the load by the write role.
    let admin = p.pooled_url("team/a", "admin", None);
    pgbench(&admin, &["-i", "-q", "-s", "1"]);
    let report = pgbench(&a_write, &["-n", "-c", "4", "-j", "2", "-t", "50"]);
    assert!(
        report.contains("number of failed transactions: 0"),
        "{report}"
    );
    // pgbouncer's server connections come over the server's Unix socket (`pooling.serverSocket`
    // is on by default): no client address, no TLS. The clients' side stays TLS (below).
    let row = p
        .env
        .superuser(None)
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE a.client_addr IS NULL AND NOT s.ssl), count(*) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = 'team-a-write'",
            &[],
        )
        .await
        .unwrap();
    let (on_socket, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        all > 0 && on_socket == all,
        "{on_socket} of {all} on the socket"
    );
    let databases = std::fs::read_to_string(p.pooler_dir().join("databases.ini")).unwrap();
    let socket = p.env.cluster.cluster.socket_dir();
    assert!(
        databases.contains(&format!("team-a = host={} port=", socket.display())),
        "{databases}"
    );

    // Tenant A's credentials do not reach tenant B's database through the pooler.
    let crossed = connect(&p.pooled_url("team/a", "write", Some("team-b")))
        .await
        .expect_err("A's login must not reach B's database");
    assert!(
        crossed.contains("permission denied") || crossed.contains("CONNECT"),
        "{crossed}"
    );

    // The control role and the superuser are not in the auth file: refused by pgbouncer itself.
    let control = p.env.cluster.cluster.control_url().unwrap();
    let password = |url: &str| {
        url.split(':')
            .nth(2)
            .unwrap()
            .split('@')
            .next()
            .unwrap()
            .to_string()
    };
    for (user, url) in [
        ("pgtenant", control),
        ("postgres", p.env.cluster.cluster.superuser_url().unwrap()),
    ] {
        let refused = connect(&p.url_for(user, &password(&url), "team-a"))
            .await
            .expect_err("not a tenant login");
        // pgbouncer runs a fake SCRAM exchange for a user it does not know.
        assert!(
            refused.contains("SASL authentication failed"),
            "{user}: {refused}"
        );
        let refused = connect(&p.url_for(user, &password(&url), "pgbouncer"))
            .await
            .expect_err("no admin console for the server's roles either");
        assert!(!refused.is_empty());
    }

    // Plaintext is refused.
    let plain = a_write.replace("sslmode=verify-full", "sslmode=disable");
    let refused = connect(&plain)
        .await
        .expect_err("plaintext must be refused");
    assert!(
        refused.contains("SSL required") || refused.contains("ssl"),
        "{refused}"
    );
}

/// Runs pgbench against `url`, which must succeed; its standard output.
fn pgbench(url: &str, args: &[&str]) -> String {
    let out = Command::new(pgbench_program())
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pgbench_program() -> PathBuf {
    let versioned = PathBuf::from("/usr/lib/postgresql/15/bin/pgbench");
    if versioned.exists() {
        return versioned;
    }
    pgtenant_cluster::find_binaries()
        .unwrap()
        .program("pgbench")
}

#[tokio::test]
async fn tenants_join_and_leave_the_pooler_without_a_restart_or_cut_sessions() {
    let Some(p) = Pooled::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.up();
    p.ok(&["apply"]);
    let pid = p.pid();
    let a = connect(&p.pooled_url("team/a", "write", None))
        .await
        .unwrap();
    a.batch_execute("SELECT 1").await.unwrap();
    assert!(p.pooled_databases().await.contains(&"team-a".to_string()));

    p.env.declare("team", "b", &[("b", "standard")]);
    p.ok(&["apply"]);
    assert_eq!(p.pid(), pid, "pgbouncer was not restarted");
    assert!(p.pooled_databases().await.contains(&"team-b".to_string()));
    let b = connect(&p.pooled_url("team/b", "write", None))
        .await
        .expect("a new tenant is reachable through the pooler at once");
    b.batch_execute("SELECT 1").await.unwrap();
    drop(b);
    a.batch_execute("SELECT 1")
        .await
        .expect("A's pooled session survives B's arrival");

    p.env.remove("team/b/values.yaml");
    p.ok(&["apply"]);
    assert_eq!(p.pid(), pid, "pgbouncer was not restarted");
    poll_until("team-b leaves the pooler", || async {
        !p.pooled_databases().await.contains(&"team-b".to_string())
    })
    .await;
    a.batch_execute("SELECT 1")
        .await
        .expect("A's pooled session survives B's removal");
}

/// `apply --tenant` of a new tenant reads only the values files that can declare it, pools C and
/// adds its logins, and leaves every other tenant's pool entry and verifiers as they were: the
/// pooler replaces only the scoped tenant's lines, it does not render the others again from
/// what the scoped run read. A following full apply finds nothing to change in the pooler, and a
/// scoped apply of C once it is removed takes out C's lines alone.
#[tokio::test]
async fn a_scoped_apply_reads_only_its_tenant_and_keeps_every_other_pool_entry_and_login() {
    let Some(p) = Pooled::new() else { return };
    p.env.declare("north", "a", &[("a", "standard")]);
    p.env.declare("south", "b", &[("b", "standard")]);
    p.up();
    p.ok(&["apply"]);
    let files = || {
        ["databases.ini", "users.txt"]
            .map(|name| std::fs::read_to_string(p.pooler_dir().join(name)).unwrap())
    };
    let lines = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines().map(str::to_string).collect()
    };
    let before = files();
    assert!(before[0].contains("north-a = ") && before[0].contains("south-b = "));
    let a = connect(&p.pooled_url("north/a", "write", None))
        .await
        .unwrap();
    a.batch_execute("SELECT 1").await.unwrap();

    p.env.declare("west", "c", &[("c", "standard")]);
    let scoped = p.ok(&["apply", "--tenant", "west/c"]);
    assert!(
        scoped.stderr.contains("read 1 of 3 values file(s)"),
        "the scoped load read only west/c's file:\n{}",
        scoped.stderr
    );
    let after = files();
    for (file, (was, is)) in ["databases.ini", "users.txt"]
        .iter()
        .zip(before.iter().zip(after.iter()))
    {
        let (was, is) = (lines(was), lines(is));
        assert!(
            was.is_subset(&is),
            "{file}: a line of A or B changed or left:\n{is:?}"
        );
        let added: Vec<_> = is.difference(&was).collect();
        assert!(!added.is_empty(), "{file}: C was added");
        assert!(
            added
                .iter()
                .all(|line| line.trim_start_matches('"').starts_with("west-c")),
            "{file}: only C's lines are new: {added:?}"
        );
    }
    let c = connect(&p.pooled_url("west/c", "write", None))
        .await
        .expect("C is reachable through the pooler at once");
    c.batch_execute("SELECT 1").await.unwrap();
    a.batch_execute("SELECT 1")
        .await
        .expect("A's pooled session survives C's scoped arrival");
    let b = connect(&p.pooled_url("south/b", "write", None))
        .await
        .expect("B still logs in through the pooler");
    b.batch_execute("SELECT 1").await.unwrap();

    p.ok(&["apply"]);
    assert_eq!(
        files(),
        after,
        "a full apply after the scoped one changes nothing in the pooler's files"
    );
    a.batch_execute("SELECT 1").await.unwrap();

    // C removed from the repo: its scoped apply reads the whole repo and C's lines go, alone.
    p.env.remove("west/c/values.yaml");
    p.ok(&[
        "apply",
        "--tenant",
        "west/c",
        "--allow-namespace-removal",
        "west",
    ]);
    assert_eq!(
        files(),
        before,
        "C's entry and logins left, A's and B's stayed"
    );
    a.batch_execute("SELECT 1")
        .await
        .expect("A's pooled session survives C's scoped removal");
}

#[tokio::test]
async fn rotation_and_grace_work_through_the_pooler_at_once() {
    let Some(p) = Pooled::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.up();
    p.ok(&["apply"]);
    let before = p.pooled_url("team/a", "write", None);
    let open = connect(&before).await.unwrap();
    open.batch_execute("SELECT 1").await.unwrap();

    let out = p.ok(&["rotate", "team/a", "--role", "write"]);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let after = p.pooled_url("team/a", "write", None);
    assert_ne!(before, after);
    if let Err(e) = connect(&after).await {
        panic!(
            "the new password does not work through the pooler: {e}\nrotate: {}\nusers: {}\nlog: {}",
            out.stderr,
            std::fs::read_to_string(p.pooler_dir().join("users.txt")).unwrap(),
            std::fs::read_to_string(p.pooler_dir().join("pgbouncer.log")).unwrap()
        );
    }
    let refused = connect(&before)
        .await
        .expect_err("the old password is refused");
    assert!(refused.contains("SASL authentication failed"), "{refused}");
    open.batch_execute("SELECT 1")
        .await
        .expect("a pooled session is not cut by the rotation");

    p.ok(&["rotate", "team/a", "--role", "write", "--grace"]);
    let twin = p.pooled_url("team/a", "write", None);
    assert!(twin.contains("team-a-write-alt"), "{twin}");
    connect(&twin)
        .await
        .expect("the grace login works through the pooler");
    connect(&after)
        .await
        .expect("the previous password still works during grace");
    open.batch_execute("SELECT 1").await.unwrap();
}

impl Pooled {
    async fn admin(&self) -> tokio_postgres::Client {
        let state: Value =
            serde_json::from_slice(&std::fs::read(self.pooler_dir().join("state.json")).unwrap())
                .unwrap();
        pgtenant_pooler_admin(
            self.pooler_dir(),
            self.port(),
            state["admin_password"].as_str().unwrap(),
        )
        .await
    }

    fn check(&self) -> (i32, Value) {
        let out = self.run(&["check", "--format", "json"]);
        (out.code, out.json())
    }
}

fn tenant<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == id)
        .unwrap_or_else(|| panic!("{id} in {report}"))
}

#[tokio::test]
async fn check_reports_a_removed_pool_entry_as_drift_and_apply_repairs_it() {
    let Some(p) = Pooled::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.up();
    p.ok(&["apply"]);
    let client = connect(&p.pooled_url("team/a", "write", None))
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let (code, report) = p.check();
    assert_eq!(code, 0, "{report}");
    let pool = &tenant(&report, "team/a")["pooler"];
    assert_eq!(pool["entry"], "ok", "{report}");
    for key in ["cl_waiting", "sv_active", "sv_idle", "avg_wait_us"] {
        assert!(pool[key].is_i64(), "{key} in {pool}");
    }

    // Someone removes the entry behind pgtenant's back (and reloads).
    let file = p.pooler_dir().join("databases.ini");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.lines()
            .filter(|l| !l.starts_with("team-a "))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    p.admin().await.simple_query("RELOAD").await.unwrap();
    let (code, report) = p.check();
    assert_eq!(code, 2, "a missing pool entry is drift: {report}");
    let a = tenant(&report, "team/a");
    assert_eq!(a["pooler"]["entry"], "missing", "{report}");
    assert_eq!(a["status"], "drift");
    assert!(
        a["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["phase"] == "pooler"),
        "{a}"
    );

    p.ok(&["apply"]);
    let (code, report) = p.check();
    assert_eq!(code, 0, "apply repaired the entry: {report}");
    assert_eq!(tenant(&report, "team/a")["pooler"]["entry"], "ok");
    connect(&p.pooled_url("team/a", "write", None))
        .await
        .expect("pooled again");
}

#[tokio::test]
async fn restore_in_place_pauses_and_resumes_the_pool() {
    let Some(p) = Pooled::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.up();
    p.ok(&["apply"]);
    let admin = connect(&p.pooled_url("team/a", "admin", None))
        .await
        .unwrap();
    admin
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let backup = p.ok(&["backup", "team/a", "--format", "json"]).json();
    let id = backup["id"].as_str().unwrap().to_string();
    admin
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let pid = p.pid();

    let out = p.ok(&["restore", "team/a", "--backup", &id, "--yes"]);
    assert!(
        out.stderr.contains("pgbouncer: paused the pool of team-a"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("pgbouncer: resumed and reconnected the pool of team-a"),
        "{}",
        out.stderr
    );
    assert_eq!(p.pid(), pid);
    // The pooled client connection survives; its next transaction gets a fresh server
    // connection to the restored database.
    let count: i64 = admin
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("the pool is resumed")
        .get(0);
    assert_eq!(count, 1);
    let paused: Vec<String> = p
        .admin()
        .await
        .simple_query("SHOW DATABASES")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) if row.get("name") == Some("team-a") => {
                row.get("paused").map(str::to_string)
            }
            _ => None,
        })
        .collect();
    assert_eq!(paused, ["0"]);
}

/// The port of the server the pooled session's next transaction runs on.
async fn server_port(client: &tokio_postgres::Client) -> Option<i32> {
    client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .ok()
        .map(|row| row.get(0))
}

#[tokio::test]
async fn a_followed_primary_gets_every_pools_next_server_connection() {
    let Some(p) = Pooled::new() else { return };
    // Over TCP, as a pooler in front of another host's server is.
    std::fs::write(
        p.env.state.path().join("pgtenant.yaml"),
        "pooling: {serverSocket: false}\n",
    )
    .unwrap();
    p.env.declare("team", "a", &[("a", "standard")]);
    p.up();
    p.ok(&["apply"]);
    let a = &p.env.cluster.cluster;
    let a_port = i32::from(a.port().unwrap());
    let session = connect(&p.pooled_url("team/a", "write", None))
        .await
        .unwrap();
    assert_eq!(server_port(&session).await, Some(a_port));

    // B: the "new primary", with A's certificate (the pooler verifies the server with A's CA)
    // and the tenant's role (the same verifier) and database.
    let b = pgtenant_cluster::TestCluster::start().unwrap();
    let user = b.cluster.server_user().unwrap();
    for file in ["server.crt", "server.key"] {
        let target = b.cluster.data_dir().join(file);
        std::fs::copy(a.data_dir().join(file), &target).unwrap();
        user.chown(&target).unwrap();
    }
    let verifier: String = p
        .env
        .superuser(None)
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'team-a-write'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let b_super = common::connect(&b.cluster.superuser_url().unwrap(), None)
        .await
        .unwrap();
    for sql in [
        format!("CREATE ROLE \"team-a-write\" LOGIN PASSWORD '{verifier}'"),
        "CREATE DATABASE \"team-a\"".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        b_super.batch_execute(&sql).await.unwrap();
    }
    let b_port = b.cluster.port().unwrap();

    let pooler = pgtenant_pooler::for_embedded(a, false).unwrap().unwrap();
    assert!(pooler.follow_primary("127.0.0.1", b_port).await.unwrap());
    assert!(!pooler.follow_primary("127.0.0.1", b_port).await.unwrap());
    let pid = p.pid();
    // The open session is not cut: its next transaction runs on B.
    poll_until("the pooled session's server is B", || async {
        server_port(&session).await == Some(i32::from(b_port))
    })
    .await;
    assert_eq!(p.pid(), pid);
    // A later apply keeps the followed primary (its sync renders the same entries).
    p.ok(&["apply"]);
    let databases = std::fs::read_to_string(p.pooler_dir().join("databases.ini")).unwrap();
    assert!(
        databases.contains(&format!("team-a = host=127.0.0.1 port={b_port} ")),
        "{databases}"
    );
    assert_eq!(server_port(&session).await, Some(i32::from(b_port)));

    // Following the configured server again goes back to A.
    assert!(pooler
        .follow_primary("127.0.0.1", a_port as u16)
        .await
        .unwrap());
    poll_until("the pooled session's server is A again", || async {
        server_port(&session).await == Some(a_port)
    })
    .await;
}

#[tokio::test]
async fn up_renders_the_platform_configs_pool_defaults_before_any_apply() {
    let Some(p) = Pooled::new() else { return };
    std::fs::write(
        p.env.state.path().join("pgtenant.yaml"),
        "pooling: {mode: session, size: 3}\n",
    )
    .unwrap();
    p.up();
    let ini = std::fs::read_to_string(p.pooler_dir().join("pgbouncer.ini")).unwrap();
    assert!(ini.contains("pool_mode = session\n"), "{ini}");
    assert!(ini.contains("default_pool_size = 3\n"), "{ini}");
}

#[tokio::test]
async fn pgbouncer_pools_are_in_serves_metrics_and_a_stopped_pooler_is_up_0() {
    let Some(p) = Pooled::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.up();
    p.ok(&["apply"]);
    let session = connect(&p.pooled_url("team/a", "write", None))
        .await
        .unwrap();
    session.batch_execute("SELECT 1").await.unwrap();
    let pooler = std::sync::Arc::new(
        pgtenant_pooler::for_embedded(&p.env.cluster.cluster, true)
            .unwrap()
            .unwrap(),
    );
    let metrics = pgtenant_serve::metrics::Metrics::default();
    metrics.watch_pgbouncer("local", pooler.clone());
    let scrape = || async {
        metrics.collect_pgbouncer().await;
        let text = pgtenant_serve::metrics::encode(&metrics, &Default::default());
        pgtenant_serve::metrics::to_prometheus_text(&text)
    };
    let text = scrape().await;
    for line in [
        "pgtenant_pgbouncer_up{cluster=\"local\"} 1",
        "pgtenant_pgbouncer_last_collection_error{cluster=\"local\"} 0",
        "pgtenant_pgbouncer_pools_cl_active{cluster=\"local\",database=\"team-a\"} 1",
        "pgtenant_pgbouncer_pools_cl_waiting{cluster=\"local\",database=\"team-a\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
    }
    for family in [
        "pgtenant_pgbouncer_pools_sv_active{",
        "pgtenant_pgbouncer_pools_sv_idle{",
        "pgtenant_pgbouncer_pools_maxwait_seconds{",
        "pgtenant_pgbouncer_stats_avg_wait_time_seconds{",
        "pgtenant_pgbouncer_stats_avg_xact_time_seconds{",
        "pgtenant_pgbouncer_stats_transactions_total{",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(family) && l.contains("database=\"team-a\"")),
            "no {family} in:\n{text}"
        );
    }
    assert!(!text.contains("database=\"pgbouncer\""), "{text}");
    support::promtool_check_metrics(&text);

    // pgbouncer down: up 0 and an error flag, the page still renders.
    pooler.stop().unwrap();
    let text = scrape().await;
    for line in [
        "pgtenant_pgbouncer_up{cluster=\"local\"} 0",
        "pgtenant_pgbouncer_last_collection_error{cluster=\"local\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
    }
    support::promtool_check_metrics(&text);
}

/// A pgbouncer of a configured cluster (`pooler: {run: local, auth: query}`) in front of the test
/// cluster, the superuser as control role (auth_query's lookup function must read `pg_authid`).
struct QueryPooler {
    env: common::Env,
    config: tempfile::TempDir,
    /// Under the cluster's directory, which the server's account can traverse.
    dir: PathBuf,
    port: u16,
}

impl Drop for QueryPooler {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

impl QueryPooler {
    fn new() -> Option<QueryPooler> {
        if pgtenant_cluster::find_pgbouncer().is_none() {
            pgtenant_cluster::skip_or_fail(
                "pgbouncer is not installed (apt-get install pgbouncer)",
            );
            return None;
        }
        let env = common::Env::new();
        let cluster = &env.cluster.cluster;
        let base = std::fs::canonicalize(cluster.dir()).unwrap();
        let dir = base.join("query-pooler");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (cert, key) = cluster.pooler_tls();
        let config = tempfile::tempdir().unwrap();
        let admin_url = config.path().join("admin-url");
        std::fs::write(&admin_url, cluster.superuser_url().unwrap()).unwrap();
        std::fs::set_permissions(
            &admin_url,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(
            config.path().join("pgtenant.yaml"),
            format!(
                "repo: {}\nclusters:\n  - name: main\n    adminUrl: file:admin-url\n    pooler:\n      run: local\n      listen: 127.0.0.1:{port}\n      configDir: {}\n      auth: query\n      tls: {{certFile: {}, keyFile: {}}}\n",
                env.repo_path().display(),
                dir.display(),
                std::fs::canonicalize(cert).unwrap().display(),
                std::fs::canonicalize(key).unwrap().display(),
            ),
        )
        .unwrap();
        Some(QueryPooler {
            env,
            config,
            dir,
            port,
        })
    }

    fn ok(&self, args: &[&str]) -> common::Output {
        let out = common::Output::of(
            self.env
                .cmd()
                .env_remove("PGTENANT_ADMIN_URL")
                .env("PGTENANT_CONFIG", self.config.path().join("pgtenant.yaml"))
                .args(args)
                .output()
                .unwrap(),
        );
        assert_eq!(out.code, 0, "{args:?}:\n{}\n{}", out.stdout, out.stderr);
        out
    }

    fn credentials(&self, tenant: &str, role: &str) -> Value {
        self.ok(&["credentials", tenant, "--role", role, "--format", "json"])
            .json()
    }

    fn url_for(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{database}?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.env.cluster.cluster.ca_cert_path().display()
        )
    }

    fn pooled_url(&self, tenant: &str, role: &str, database: Option<&str>) -> String {
        let credential = self.credentials(tenant, role);
        self.url_for(
            credential["username"].as_str().unwrap(),
            credential["password"].as_str().unwrap(),
            database.unwrap_or(credential["dbname"].as_str().unwrap()),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// The lookup login's password, as the auth file holds it.
    fn lookup_password(&self) -> String {
        let auth = std::fs::read_to_string(self.dir.join("users.txt")).unwrap();
        auth.lines()
            .find_map(|l| l.strip_prefix("\"pgtenant_pooler_lookup\" \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("the lookup login's password")
            .to_string()
    }
}

/// pgbouncer's refusal of a login the lookup function does not return (1.18 says `no such user`),
/// or whose SCRAM exchange it fails.
fn refused_by_pgbouncer(error: &str) -> bool {
    error.contains("no such user") || error.contains("SASL authentication failed")
}

/// The password in a libpq URL `postgresql://user:password@…`.
fn password_in(url: &str) -> String {
    url.split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn auth_query_looks_up_only_tenant_logins_that_may_log_in() {
    let Some(p) = QueryPooler::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.env.declare("team", "b", &[("b", "standard")]);
    p.ok(&["apply"]);

    // The auth file holds the admin and lookup logins only: tenant logins are looked up.
    let auth = std::fs::read_to_string(p.dir.join("users.txt")).unwrap();
    let lines: Vec<&str> = auth.lines().collect();
    assert_eq!(lines.len(), 2, "{auth}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("\"pgtenant_pooler_admin\" ")));
    let lookup_password = p.lookup_password();
    use std::os::unix::fs::PermissionsExt;
    for file in ["users.txt", "hba.conf", "pgbouncer.ini"] {
        let mode = std::fs::metadata(p.dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // The lookup role: a login with a small connection limit and nothing else.
    let superuser = p.env.superuser(None).await;
    let row = superuser
        .query_one(
            "SELECT rolcanlogin, rolconnlimit, rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication \
             OR rolbypassrls, (SELECT count(*) FROM pg_auth_members WHERE member = oid) \
             FROM pg_authid WHERE rolname = 'pgtenant_pooler_lookup'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the lookup role logs in");
    assert_eq!(
        row.get::<_, i32>(1),
        pgtenant_pooler::LOOKUP_CONNECTION_LIMIT
    );
    assert!(!row.get::<_, bool>(2), "no other attribute");
    assert_eq!(row.get::<_, i64>(3), 0, "a member of nothing");

    // The write role of team/a runs pgbench through the pooler, in transaction mode.
    let a_write = p.pooled_url("team/a", "write", None);
    let client = connect(&a_write).await.unwrap_or_else(|e| {
        panic!(
            "the write role logs in through the pooler: {e}\n{}",
            p.log()
        )
    });
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "team-a-write");
    assert_eq!(row.get::<_, String>(1), "team-a");
    drop(client);
    pgbench(
        &p.pooled_url("team/a", "admin", None),
        &["-i", "-q", "-s", "1"],
    );
    let report = pgbench(&a_write, &["-n", "-c", "4", "-j", "2", "-t", "50"]);
    assert!(
        report.contains("number of failed transactions: 0"),
        "{report}"
    );

    // Tenant A's login is not looked up in tenant B's database.
    let crossed = connect(&p.pooled_url("team/a", "write", Some("team-b")))
        .await
        .expect_err("A's login must not reach B's database");
    assert!(refused_by_pgbouncer(&crossed), "{crossed}");

    // A login whose VALID UNTIL has passed is refused; once extended, it gets through again.
    let a_read = p.pooled_url("team/a", "read", None);
    connect(&a_read).await.expect("the read role logs in");
    superuser
        .batch_execute("ALTER ROLE \"team-a-read\" VALID UNTIL '2000-01-01'")
        .await
        .unwrap();
    let expired = connect(&a_read)
        .await
        .expect_err("an expired login is refused");
    assert!(refused_by_pgbouncer(&expired), "{expired}");

    // Superuser, control role, a replication role and the lookup login itself are refused.
    superuser
        .batch_execute("CREATE ROLE repl LOGIN REPLICATION PASSWORD 'repl-password-1'")
        .await
        .unwrap();
    let cluster = &p.env.cluster.cluster;
    for (user, password) in [
        ("postgres", password_in(&cluster.superuser_url().unwrap())),
        ("pgtenant", password_in(&cluster.control_url().unwrap())),
        ("repl", "repl-password-1".to_string()),
        ("pgtenant_pooler_lookup", lookup_password.clone()),
    ] {
        let refused = connect(&p.url_for(user, &password, "team-a"))
            .await
            .expect_err(&format!("{user} must not log in through the pooler"));
        assert!(
            refused_by_pgbouncer(&refused) || refused.contains("rejected"),
            "{user}: {refused}"
        );
    }

    // The lookup login's password is kept in the store; an unscoped apply repairs its role.
    superuser
        .batch_execute("ALTER ROLE pgtenant_pooler_lookup NOLOGIN CONNECTION LIMIT -1")
        .await
        .unwrap();
    p.ok(&["apply"]);
    let row = superuser
        .query_one(
            "SELECT rolcanlogin, rolconnlimit FROM pg_authid WHERE rolname = 'pgtenant_pooler_lookup'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "apply gave the lookup role its login back"
    );
    assert_eq!(
        row.get::<_, i32>(1),
        pgtenant_pooler::LOOKUP_CONNECTION_LIMIT
    );
    connect(&p.pooled_url("team/b", "write", None))
        .await
        .expect("B's write role logs in through the pooler after the repair");
}

#[tokio::test]
async fn rotating_the_lookup_login_refuses_the_old_password_and_keeps_pooled_clients() {
    let Some(p) = QueryPooler::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.env.declare("team", "b", &[("b", "standard")]);
    p.ok(&["apply"]);
    let old = p.lookup_password();
    // The lookup login straight to the server, into a tenant database it has CONNECT on.
    let direct = |password: &str| {
        let credential = p.credentials("team/a", "write");
        format!(
            "postgresql://pgtenant_pooler_lookup:{password}@{}:{}/team-a?sslmode=verify-full&sslrootcert={}",
            credential["endpoint"].as_str().unwrap(),
            credential["port"],
            p.env.cluster.cluster.ca_cert_path().display()
        )
    };
    connect(&direct(&old))
        .await
        .expect("the lookup login logs in with its password");
    let pooled = connect(&p.pooled_url("team/a", "write", None))
        .await
        .unwrap_or_else(|e| panic!("team/a logs in through the pooler: {e}\n{}", p.log()));

    let out = p
        .ok(&["rotate", "--pooler-lookup", "--format", "json"])
        .json();
    assert_eq!(out["pooler_lookup"]["username"], "pgtenant_pooler_lookup");
    assert_eq!(out["pooler_lookup"]["cluster"], "main");
    assert_eq!(
        out["pooler_lookup"]["store_path"],
        "pgtenant/pooler/main-lookup"
    );
    let new = p.lookup_password();
    assert_ne!(new, old, "the auth file holds the new password");

    // The server refuses the old password and takes the new one.
    let refused = connect(&direct(&old))
        .await
        .expect_err("the old lookup password must be refused");
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    connect(&direct(&new))
        .await
        .expect("the new lookup password logs in");

    // The session pooled before the rotation keeps working; a database pgbouncer has not looked
    // a login up in yet needs a new lookup connection, with the new password.
    pooled
        .simple_query("SELECT 1")
        .await
        .expect("the pooled session survives the rotation");
    let b = connect(&p.pooled_url("team/b", "write", None))
        .await
        .unwrap_or_else(|e| panic!("a new lookup after the rotation: {e}\n{}", p.log()));
    b.simple_query("SELECT 1").await.unwrap();

    // A later apply keeps the rotated password (the store has it).
    p.ok(&["apply"]);
    assert_eq!(p.lookup_password(), new);

    // The flag stands alone: no tenant with it.
    let out = common::Output::of(
        p.env
            .cmd()
            .args(["rotate", "--pooler-lookup", "team/a"])
            .output()
            .unwrap(),
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
}

/// The SCRAM iteration count of every login of `prefix`, from `pg_authid` (as superuser).
async fn verifier_counts(p: &Pooled, prefix: &str) -> Vec<(String, String)> {
    p.env
        .superuser(None)
        .await
        .query(
            "SELECT rolname::text, split_part(split_part(rolpassword, '$', 2), ':', 1)
               FROM pg_authid WHERE rolcanlogin AND rolname LIKE $1 || '%' ORDER BY 1",
            &[&prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// `passwords.scramIterations` changed in the platform config: the next apply sets every login's
/// stored password again with the new count (once: the apply after it has nothing to do), the
/// credentials do not change, the login works directly and through the pooler, and a pooled
/// session open across the change is not cut.
#[tokio::test]
async fn a_changed_scram_iteration_count_is_applied_once_with_the_same_passwords() {
    let Some(p) = Pooled::new() else { return };
    p.env.declare("team", "a", &[("a", "standard")]);
    p.up();
    p.ok(&["apply"]);
    let counts = verifier_counts(&p, "team-a-").await;
    assert!(!counts.is_empty());
    assert!(counts.iter().all(|(_, n)| n == "4096"), "{counts:?}");
    let before = p.env.credentials("team/a", "write");
    let open = connect(&p.pooled_url("team/a", "write", None))
        .await
        .unwrap();

    std::fs::write(
        p.env.state.path().join("pgtenant.yaml"),
        "passwords: {scramIterations: 256}\n",
    )
    .unwrap();
    let plan = p.run(&["plan", "--format", "json"]);
    assert!(
        plan.stdout.contains("passwords.scramIterations is 256"),
        "the plan says why the passwords are set again:\n{}",
        plan.stdout
    );
    let (code, _) = p.check();
    assert_eq!(code, 2, "a login of another count is drift until applied");
    p.ok(&["apply"]);
    let counts = verifier_counts(&p, "team-a-").await;
    assert!(counts.iter().all(|(_, n)| n == "256"), "{counts:?}");
    let after = p.env.credentials("team/a", "write");
    assert_eq!(before["username"], after["username"]);
    assert_eq!(
        before["password"], after["password"],
        "the password is kept"
    );
    connect(after["uri"].as_str().unwrap())
        .await
        .expect("the unchanged password logs in directly with the new count");
    let users = std::fs::read_to_string(p.pooler_dir().join("users.txt")).unwrap();
    assert!(
        users.contains("\"team-a-write\" \"SCRAM-SHA-256$256:"),
        "{users}"
    );
    // A new server login of the pool, with the new count: pgbouncer passes it through.
    p.admin().await.simple_query("RECONNECT").await.unwrap();
    connect(&p.pooled_url("team/a", "write", None))
        .await
        .expect("the unchanged password logs in through the pooler with the new count");
    open.batch_execute("SELECT 1")
        .await
        .expect("a pooled session is not cut by the new count");

    let again = p.run(&["plan", "--format", "json"]);
    assert!(
        !again.stdout.contains("scramIterations"),
        "set once, not on every run:\n{}",
        again.stdout
    );
    let (code, report) = p.check();
    assert_eq!(code, 0, "converged after one apply: {report}");
    let last = p.env.apply();
    assert!(
        !last.to_string().contains("scramIterations"),
        "the second apply sets nothing again: {last}"
    );
    assert!(verifier_counts(&p, "team-a-")
        .await
        .iter()
        .all(|(_, n)| n == "256"));
}
