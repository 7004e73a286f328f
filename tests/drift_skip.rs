//! Skipping tenant databases that cannot have changed (their `pg_stat_database` row counters did
//! not move since their last verification): a no-op run connects to none of them, transactions
//! that write nothing (autovacuum's visits, an app's reads) do not make it reconnect, a change by
//! hand is found once its statistics are flushed, and always within the bound whatever they say.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use common::{poll_until, Env};
use serde_json::Value;

const TENANTS: [&str; 2] = ["team/a", "team/b"];
const DATABASES: [&str; 2] = ["team-a", "team-b"];

/// Two converged tenants, connections logged.
async fn converged() -> Env {
    let env = Env::new();
    let superuser = env.superuser(None).await;
    for statement in [
        "ALTER SYSTEM SET log_connections = on",
        "SELECT pg_reload_conf()",
    ] {
        superuser.batch_execute(statement).await.unwrap();
    }
    env.wait_for_setting("log_connections", "on").await;
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();
    env
}

/// How many sessions the server log shows were opened in `database` so far (`log_connections`
/// writes the line while the session starts, before the client gets to run anything).
fn sessions_in(env: &Env, database: &str) -> usize {
    let log = std::fs::read_to_string(env.cluster.cluster.log_file()).unwrap();
    let needle = format!(" database={database} ");
    log.lines()
        .filter(|line| line.contains("connection authorized") && line.contains(&needle))
        .count()
}

fn sessions(env: &Env) -> Vec<usize> {
    DATABASES.iter().map(|db| sessions_in(env, db)).collect()
}

fn plan(env: &Env, args: &[&str]) -> common::Output {
    let out = env.run(&[&["plan", "--format", "json"], args].concat());
    assert!(
        out.code == 0 || out.code == 2,
        "plan failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    out
}

fn check(env: &Env, args: &[&str]) -> Value {
    let out = env.run(&[&["check", "--format", "json"], args].concat());
    assert!(
        out.code == 0 || out.code == 2,
        "check failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    out.json()
}

/// `verified` of each tenant in a check report.
fn verified(report: &Value) -> Vec<String> {
    TENANTS
        .iter()
        .map(|tenant| {
            let tenant = report["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["tenant"] == *tenant)
                .unwrap();
            tenant["verified"].as_str().unwrap_or("null").to_string()
        })
        .collect()
}

/// A plan, then a second one that must connect to no tenant database: pgtenant's own inspection
/// writes nothing, so the counters are still what its verification recorded.
fn settle(env: &Env) {
    plan(env, &[]);
    let before = sessions(env);
    plan(env, &[]);
    assert_eq!(
        sessions(env),
        before,
        "a second no-op plan connects to no tenant database"
    );
}

fn cache_file(env: &Env) -> PathBuf {
    let dir = env.state_path().join("verified");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one verifications file per cluster: {files:?}"
    );
    files.into_iter().next().unwrap()
}

fn read_cache(env: &Env) -> Value {
    serde_json::from_slice(&std::fs::read(cache_file(env)).unwrap()).unwrap()
}

/// The server's counters for `database`, as the engine's cluster-wide read gives them.
async fn counters(env: &Env, database: &str) -> Value {
    let row = env
        .superuser(None)
        .await
        .query_one(
            "SELECT d.oid, s.tup_inserted, s.tup_updated, s.tup_deleted,
                    (EXTRACT(EPOCH FROM s.stats_reset) * 1000000)::int8
               FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid
              WHERE d.datname = $1",
            &[&database],
        )
        .await
        .unwrap();
    serde_json::json!({
        "oid": row.get::<_, u32>(0),
        "tup_inserted": row.get::<_, i64>(1),
        "tup_updated": row.get::<_, i64>(2),
        "tup_deleted": row.get::<_, i64>(3),
        "stats_reset": row.get::<_, Option<i64>>(4),
    })
}

/// Transactions committed in `database` so far, as the server has counted them.
async fn commits(env: &Env, database: &str) -> i64 {
    env.superuser(None)
        .await
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
            &[&database],
        )
        .await
        .unwrap()
        .get(0)
}

fn plan_fixes(out: &common::Output) -> Vec<String> {
    out.json()["operations"]
        .as_array()
        .map(|ops| {
            ops.iter()
                .filter_map(|op| op["statement"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

const REGRANT: &str = r#"GRANT SELECT ON TABLE "public"."items" TO "team-a-read";"#;

/// A tenant admin's session, opened (and so counted) before the last verification, that holds
/// a table the read role may select from. It returns once the server has counted the table's
/// catalog rows: an idle session flushes its statistics lazily (up to ~10 s later), and a flush
/// after the verification would look like a change made after it.
async fn admin_session(env: &Env) -> tokio_postgres::Client {
    let admin = env.connect_as("team/a", "admin").await;
    let before = counters(env, "team-a").await;
    admin
        .batch_execute("CREATE TABLE items (id int)")
        .await
        .unwrap();
    poll_until("the CREATE TABLE's catalog rows are counted", || async {
        counters(env, "team-a").await["tup_inserted"] != before["tup_inserted"]
    })
    .await;
    admin
}

/// Verified and trusted, then a REVOKE by hand in a session counted before the verification, and
/// the server has counted its commit (flushed lazily: up to ~10 s for an idle session). The
/// session stays open.
async fn revoked_after_verification(env: &Env) -> tokio_postgres::Client {
    let admin = admin_session(env).await;
    settle(env);
    let expected = read_cache(env)["databases"]["team-a"]["stats"].clone();
    assert_eq!(
        counters(env, "team-a").await,
        expected,
        "after a verification the counters are what it expects"
    );
    admin
        .batch_execute(r#"REVOKE SELECT ON items FROM "team-a-read""#)
        .await
        .unwrap();
    poll_until("the REVOKE's commit is counted", || async {
        counters(env, "team-a").await != expected
    })
    .await;
    admin
}

#[tokio::test]
async fn a_no_op_plan_connects_to_no_tenant_database_and_full_inspects_all() {
    let env = converged().await;
    settle(&env);

    let report = check(&env, &[]);
    assert_eq!(verified(&report), ["trusted", "trusted"], "{report:#}");
    let tenant = &report["tenants"][0];
    let at = tenant["verified_at"].as_str().unwrap();
    assert!(
        at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "verified_at is RFC 3339 in UTC: {at}"
    );
    let text = env.run(&["check"]);
    assert!(
        text.stdout.contains("(trusted, verified "),
        "{}",
        text.stdout
    );

    let before = sessions(&env);
    let report = check(&env, &["--full"]);
    assert_eq!(verified(&report), ["this-run", "this-run"], "{report:#}");
    let after = sessions(&env);
    for (i, db) in DATABASES.iter().enumerate() {
        assert_eq!(after[i], before[i] + 1, "--full inspects {db} once");
    }
    let out = plan(&env, &["--full"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(sessions(&env)[0], after[0] + 1, "plan --full inspects too");

    // PGTENANT_TRUST_FOR=0: every run verifies again.
    let before = sessions(&env);
    let out = env
        .cmd()
        .env("PGTENANT_TRUST_FOR", "0")
        .args(["plan", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sessions(&env)[1], before[1] + 1);
}

#[tokio::test]
async fn transactions_that_write_nothing_do_not_make_a_plan_reconnect() {
    let env = converged().await;
    let admin = admin_session(&env).await;
    settle(&env);
    let before = commits(&env, "team-a").await;
    // What autovacuum's visit to an idle database and an app's reads do: commit transactions that
    // read, catalogs included, and write no row.
    for _ in 0..5 {
        admin
            .batch_execute(
                "BEGIN; SELECT count(*) FROM items; SELECT count(*) FROM pg_class; COMMIT",
            )
            .await
            .unwrap();
    }
    poll_until("the reads' commits are counted", || async {
        commits(&env, "team-a").await >= before + 5
    })
    .await;
    let sessions_before = sessions(&env);
    let out = plan(&env, &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(
        sessions(&env),
        sessions_before,
        "committed reads are no reason to inspect"
    );
    let report = check(&env, &[]);
    assert_eq!(verified(&report), ["trusted", "trusted"], "{report:#}");
    drop(admin);
}

#[tokio::test]
async fn a_revoke_by_hand_is_found_by_the_next_plan_once_its_statistics_are_flushed() {
    let env = converged().await;
    let admin = revoked_after_verification(&env).await;
    let out = plan(&env, &[]);
    assert_eq!(out.code, 2, "drift is pending:\n{}", out.stdout);
    assert!(
        plan_fixes(&out).iter().any(|sql| sql == REGRANT),
        "{}",
        out.stdout
    );
    drop(admin);
}

#[tokio::test]
async fn drift_the_statistics_do_not_show_is_found_within_the_bound() {
    let env = converged().await;
    let admin = revoked_after_verification(&env).await;
    // As if the server had never counted the REVOKE (a flush lost, a reset that landed on the
    // same numbers), and the verification had just been made.
    let mut cache = read_cache(&env);
    let entry = &mut cache["databases"]["team-a"];
    entry["stats"] = counters(&env, "team-a").await;
    let verified_at = SystemTime::now();
    let since_epoch = verified_at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    entry["verified_at"] = serde_json::json!({
        "secs_since_epoch": since_epoch.as_secs(),
        "nanos_since_epoch": since_epoch.subsec_nanos(),
    });
    std::fs::write(cache_file(&env), serde_json::to_vec(&cache).unwrap()).unwrap();

    let bound = Duration::from_secs(3);
    let started = Instant::now();
    let mut hidden = 0;
    loop {
        let out = env
            .cmd()
            .env("PGTENANT_TRUST_FOR", "3s")
            .args(["plan", "--format", "json"])
            .output()
            .unwrap();
        let out = common::Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if plan_fixes(&out).iter().any(|sql| sql == REGRANT) {
            break;
        }
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        hidden += 1;
        assert!(
            started.elapsed() < bound + Duration::from_secs(5),
            "the drift stays hidden beyond the bound of {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        hidden > 0,
        "trusted while the verification is younger than the bound"
    );
    assert!(
        SystemTime::now().duration_since(verified_at).unwrap() >= bound,
        "found once the bound has passed, not before: the counters hid it until then"
    );
    drop(admin);
}

#[tokio::test]
async fn a_corrupt_verifications_file_means_inspecting_everything() {
    let env = converged().await;
    settle(&env);
    std::fs::write(cache_file(&env), b"{ not json").unwrap();
    let before = sessions(&env);
    let out = plan(&env, &[]);
    assert_eq!(out.code, 0, "a corrupt file is no error:\n{}", out.stderr);
    let after = sessions(&env);
    for (i, db) in DATABASES.iter().enumerate() {
        assert_eq!(after[i], before[i] + 1, "{db} is inspected");
    }
    // Replaced by a good one, private.
    use std::os::unix::fs::PermissionsExt;
    let file = cache_file(&env);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    read_cache(&env);

    // A file others could have written is not believed either.
    settle(&env);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = sessions(&env);
    plan(&env, &[]);
    let after = sessions(&env);
    for (i, db) in DATABASES.iter().enumerate() {
        assert_eq!(after[i], before[i] + 1, "{db} is inspected");
    }
}
