//! The command contract through the binary: exit codes, JSON shapes, error messages, the embedded cluster.

mod common;

use std::os::unix::fs::PermissionsExt;

use assert_cmd::Command;
use common::Env;
use predicates::prelude::*;

#[tokio::test]
async fn hostile_names_are_rejected_with_file_line_and_nothing_is_created() {
    let env = Env::new();
    env.write(
        "team/app/values.yaml",
        "postgresqlDatabases:\n  - name: \"x\\\";DROP DATABASE postgres;--\"\n  - name: \"$$\"\n  - name: \"Upper\"\n",
    );
    env.write(
        "bad_ns/app/values.yaml",
        "postgresqlDatabases:\n  - name: fine\n",
    );
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("team/app/values.yaml:2:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("team/app/values.yaml:3:"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("bad_ns"), "{}", out.stderr);
    let managed: i64 = env
        .control()
        .await
        .query_one("SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1', 'pgtenant')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(managed, 0);
}

#[tokio::test]
async fn plan_json_contract_and_exit_codes() {
    let env = Env::new();
    let empty = env.plan();
    assert_eq!(
        empty.code, 1,
        "a directory without values files is not an apps repo"
    );
    assert!(
        empty.stderr.contains("no values files under")
            && empty.stderr.contains("is this the apps repo?"),
        "{}",
        empty.stderr
    );
    assert_eq!(env.run(&["plan", "--allow-empty-repo"]).code, 0);
    env.declare("idp-dev", "my-db", &[("my-db", "protected")]);
    env.write(
        "idp-dev/typo/values.yaml",
        "postgresqlDatabases:\n  - name: typo\n    mdoe: standard\n",
    );
    let out = env.plan();
    assert_eq!(out.code, 1, "a spec error outranks pending changes");
    assert!(
        out.stderr.contains("idp-dev/typo/values.yaml:3:5"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("did you mean `mode`"), "{}", out.stderr);
    let plan = out.json();
    for key in [
        "converged",
        "operations",
        "notices",
        "diagnostics",
        "summary",
    ] {
        assert!(plan.get(key).is_some(), "plan JSON lacks {key}");
    }
    let op = &plan["operations"][0];
    for key in [
        "tenant",
        "phase",
        "database",
        "run_as",
        "statement",
        "why",
        "destructive",
    ] {
        assert!(op.get(key).is_some(), "operation JSON lacks {key}: {op:#}");
    }
    assert_eq!(
        plan["diagnostics"][0]["field"],
        "postgresqlDatabases[0].mdoe"
    );
    assert_eq!(plan["diagnostics"][0]["location"]["line"], 3);

    env.remove("idp-dev/typo/values.yaml");
    assert_eq!(env.plan().code, 2);
    env.apply();
    assert_eq!(env.plan().code, 0);

    let text = env.run(&["plan"]);
    assert!(text.stdout.contains("In sync"), "{}", text.stdout);
}

#[test]
fn legacy_field_is_converted_with_a_warning() {
    let env = Env::new();
    env.write(
        "shop/cart/values.yaml",
        "postgresqlDatabases:\n  - name: cart\n    deletionProtection: true\n",
    );
    let out = env.run(&["plan", "--format", "json"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("warning: shop/cart/values.yaml:3:5"),
        "{}",
        out.stderr
    );
    let comment = out.json()["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| {
            op["statement"]
                .as_str()
                .unwrap()
                .starts_with("COMMENT ON DATABASE")
        })
        .unwrap()["statement"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(comment.contains(r#""mode":"protected""#), "{comment}");
}

#[test]
fn credentials_errors_are_explained() {
    let env = Env::new();
    let out = env.run(&["credentials", "idp-dev/nope", "--role", "read"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("no stored credentials at customer/idp-dev/nope-read"),
        "{}",
        out.stderr
    );
    let out = env.run(&["credentials", "not-a-tenant", "--role", "read"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("NAMESPACE/DATABASE"), "{}", out.stderr);
}

#[test]
fn unreachable_or_invalid_admin_url_is_an_error_with_its_cause() {
    let env = Env::new();
    env.declare("shop", "cart", &[("cart", "standard")]);
    let out = env
        .cmd()
        .env(
            "PGTENANT_ADMIN_URL",
            "postgresql://x@127.0.0.1:1/postgres?sslmode=verify-full&sslrootcert=/nonexistent",
        )
        .args(["plan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("Caused by:") && stderr.contains("/nonexistent"),
        "{stderr}"
    );
}

fn bare_command(state_dir: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("pgtenant").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGTENANT_STATE_DIR", state_dir);
    cmd
}

/// Stops the embedded cluster even when an assertion fails midway, so no server outlives the test.
struct StopOnDrop(std::path::PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = bare_command(&self.0).arg("down").output();
    }
}

#[test]
fn embedded_cluster_up_plan_apply_status_down() {
    let dir = tempfile::tempdir().unwrap();
    // As root the server runs as an unprivileged user, which must be able to enter the state dir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("idp-dev/my-db")).unwrap();
    std::fs::write(
        repo.join("idp-dev/my-db/values.yaml"),
        "postgresqlDatabases:\n  - name: my-db\n",
    )
    .unwrap();

    let _stop = StopOnDrop(state.clone());
    bare_command(&state)
        .arg("up")
        .assert()
        .success()
        .stdout(predicate::str::contains("running:     true"));
    bare_command(&state)
        .args(["plan"])
        .arg(&repo)
        .assert()
        .code(2);
    bare_command(&state)
        .args(["apply"])
        .arg(&repo)
        .assert()
        .success();
    bare_command(&state)
        .args(["plan"])
        .arg(&repo)
        .assert()
        .code(0);
    let status = bare_command(&state)
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["version"], "15");
    bare_command(&state)
        .arg("down")
        .assert()
        .success()
        .stderr(predicate::str::contains("embedded cluster stopped"));
    bare_command(&state)
        .arg("down")
        .assert()
        .success()
        .stderr(predicate::str::contains("was not running"));
    let status = bare_command(&state)
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["running"], false);
    // Credentials stay readable with the cluster down; the store is local.
    bare_command(&state)
        .args([
            "credentials",
            "idp-dev/my-db",
            "--role",
            "write",
            "--format",
            "uri",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("sslmode=require"));
    // A command that needs the cluster starts it again, and says so.
    bare_command(&state)
        .args(["plan"])
        .arg(&repo)
        .assert()
        .code(0)
        .stderr(predicate::str::contains("it was stopped"));
}

#[test]
fn down_without_a_cluster_says_there_was_nothing_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    bare_command(&dir.path().join("state"))
        .arg("down")
        .assert()
        .success()
        .stderr(predicate::str::contains("nothing to stop"))
        .stderr(predicate::str::contains("stopped").not());
}

/// The binary with stdout connected to a pipe whose reading end is already closed: every write
/// fails with EPIPE, deterministically.
fn run_with_closed_stdout(state_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    std::process::Command::new(assert_cmd::cargo::cargo_bin("pgtenant"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGTENANT_STATE_DIR", state_dir)
        .args(args)
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for args in [
        &["spec", "schema"][..],
        &["status"],
        &["status", "--format", "json"],
    ] {
        let out = run_with_closed_stdout(&state, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn held_drops_are_not_success() {
    let env = Env::new();
    env.declare(
        "shop",
        "cart",
        &[("a", "standard"), ("b", "standard"), ("c", "standard")],
    );
    env.apply();
    env.declare("shop", "cart", &[("c", "standard")]);
    // Two drops, --max-drops 1: both held. plan is not "in sync"; apply does not say success.
    let plan = env.run(&["plan"]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(!plan.stdout.contains("In sync"), "{}", plan.stdout);
    assert!(plan.stdout.contains("held: shop/a"), "{}", plan.stdout);
    let apply = env.run(&["apply"]);
    assert_eq!(apply.code, 1, "{}\n{}", apply.stdout, apply.stderr);
    let last = apply.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("2 drop(s) held: shop/a") && last.contains("shop/b"),
        "{}",
        apply.stdout
    );
    let json = env.run(&["apply", "--format", "json"]);
    assert_eq!(json.code, 1);
    assert_eq!(json.json()["ok"], false);
    // Allowed, they go, and the run is a success again.
    let allowed = env.run(&["apply", "--max-drops", "2"]);
    assert_eq!(allowed.code, 0, "{}\n{}", allowed.stdout, allowed.stderr);
    assert_eq!(env.plan().code, 0);
}

#[test]
fn a_long_apply_reports_each_finished_tenant_on_stderr() {
    let env = Env::new();
    env.declare("shop", "cart", &[("a", "standard"), ("b", "standard")]);
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for tenant in ["shop/a", "shop/b"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with("done: ") && l.contains(tenant)),
            "{}",
            out.stderr
        );
    }
    // JSON runs stay quiet on stderr.
    env.declare(
        "shop",
        "cart",
        &[("a", "standard"), ("b", "standard"), ("d", "standard")],
    );
    let json = env.run(&["apply", "--format", "json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    assert!(!json.stderr.contains("done: "), "{}", json.stderr);
}

#[test]
fn the_repo_comes_from_pgtenant_repo_and_check_hides_drop_options() {
    let env = Env::new();
    env.declare("shop", "cart", &[("cart", "standard")]);
    let elsewhere = tempfile::tempdir().unwrap();
    let out = env
        .cmd()
        .current_dir(elsewhere.path())
        .env("PGTENANT_REPO", env.repo_path())
        .args(["plan", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan["operations"].as_array().unwrap().len() > 3);

    let help = env.run(&["check", "--help"]);
    assert!(!help.stdout.contains("--max-drops"), "{}", help.stdout);
    assert!(help.stdout.contains("Global options:"), "{}", help.stdout);
    assert!(
        !help.stdout.contains("=]"),
        "empty [env: X=] shown: {}",
        help.stdout
    );
    // Still accepted, for scripts that pass the same options to plan, apply and check.
    assert_ne!(env.run(&["check", "--max-drops", "3"]).code, 1);
}

#[test]
fn missing_postgres_binaries_name_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let empty_bin = dir.path().join("bin");
    std::fs::create_dir(&empty_bin).unwrap();
    bare_command(&dir.path().join("state"))
        .env("PGTENANT_PG_BIN", &empty_bin)
        .arg("up")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("apt-get install postgresql"));
}

#[tokio::test]
async fn concurrent_applies_are_refused_not_interleaved() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    // The lock lives in pgtenant's control database (created on first use).
    let connector = pgtenant_engine::Connector::from_url(&env.admin_url()).unwrap();
    let holder = pgtenant_engine::control::session(&connector).await.unwrap();
    let pid: i32 = holder
        .query_one(
            "SELECT pg_advisory_lock(8099570433841524340), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(1);
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&format!(
            "another `pgtenant apply` is running against this cluster (backend pid {pid})"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(env.plan().code, 2, "plan does not need the lock");
    drop(holder);
    env.wait_until_advisory_locks_are_released().await;
    env.apply();
}

#[test]
fn endpoint_is_written_into_credentials_and_kept_up_to_date() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    let apply = |endpoint: &str| {
        let out = env
            .cmd()
            .env("PGTENANT_ENDPOINT", endpoint)
            .args(["apply", "--format", "json"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    apply("rds-proxy.internal:5432");
    let first = env.credentials("idp-dev/my-db", "write");
    assert_eq!(first["endpoint"], "rds-proxy.internal");
    assert_eq!(first["port"], 5432);
    assert!(first["uri"]
        .as_str()
        .unwrap()
        .contains("@rds-proxy.internal:5432/idp-dev-my-db?sslmode=require"));

    // The platform moves behind a pooler: stored details follow, passwords stay.
    let moved = apply("pooler.internal:6432");
    let statements: Vec<&str> = moved["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["statement"].as_str().unwrap())
        .collect();
    assert_eq!(statements.len(), 3, "{statements:#?}");
    assert!(statements
        .iter()
        .all(|s| s.starts_with("-- credential store: update connection details")));
    let second = env.credentials("idp-dev/my-db", "write");
    assert_eq!(
        (second["endpoint"].as_str(), second["port"].as_u64()),
        (Some("pooler.internal"), Some(6432))
    );
    assert_eq!(second["password"], first["password"]);

    let bad = env
        .cmd()
        .env("PGTENANT_ENDPOINT", "no-port")
        .args(["plan"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not HOST:PORT"));
}

#[tokio::test]
async fn tenant_scope_reconciles_only_the_named_tenants() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(r#"ALTER ROLE "team-a-read" CREATEDB; ALTER ROLE "team-b-read" CREATEDB"#)
        .await
        .unwrap();
    env.declare("team", "c", &[("c", "standard")]);

    let out = env.run(&[
        "apply", "--tenant", "team/c", "--tenant", "team/a", "--format", "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let touched: Vec<String> = out.json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(touched, ["team/a", "team/c"]);
    let plan = env.plan().json();
    let pending: Vec<&str> = plan["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(
        pending,
        ["team/b"],
        "b was out of scope and keeps its drift"
    );
    assert_eq!(env.run(&["plan", "--tenant", "bad name"]).code, 1);
    let unknown = env.run(&["plan", "--tenant", "team/nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no such tenant"),
        "{}",
        unknown.stderr
    );
}
