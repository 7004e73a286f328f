//! A repo whose values files cannot be trusted (a typo in the top-level key, a file that became a
//! directory, a link out of the repo, a device, a FIFO, a huge file) fails those files, and a
//! failed file holds every drop: nothing is dropped and nothing outside the repo is read.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, Output};

/// `team/a` and `team/b`, applied: removing either alone would drop its database (the repo is
/// not empty and namespace `team` keeps the other).
fn two_applied_tenants() -> Env {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();
    env
}

/// Makes `team/a/values.yaml` something else, with `make` given its path.
fn replace_values_file(env: &Env, make: impl FnOnce(&Path)) {
    let path = env.repo_path().join("team/a/values.yaml");
    std::fs::remove_file(&path).unwrap();
    make(&path);
}

/// Runs the binary with `args`; it must finish within `limit`.
fn run_within(env: &Env, args: &[&str], limit: Duration, envs: &[(&str, &str)]) -> Output {
    let started = Instant::now();
    let output = env
        .cmd()
        .envs(envs.iter().copied())
        .args(args)
        .timeout(limit)
        .output()
        .unwrap();
    assert!(
        started.elapsed() < limit,
        "`pgtenant {}` did not finish within {limit:?}",
        args.join(" ")
    );
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `apply` fails, names `problem` for `team/a/values.yaml` and drops nothing.
async fn apply_fails_and_keeps_a(env: &Env, problem: &str, envs: &[(&str, &str)]) -> Output {
    let password = env.credentials("team/a", "write")["password"].clone();
    let out = run_within(
        env,
        &["apply", "--format", "json"],
        Duration::from_secs(60),
        envs,
    );
    assert_eq!(
        out.code, 1,
        "apply must fail:\n{}\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains("error: team/a/values.yaml:") && out.stderr.contains(problem),
        "the error names the file and `{problem}`:\n{}",
        out.stderr
    );
    assert!(
        out.json()["notices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "held" && n["tenant"] == "team/a"),
        "the drop is held:\n{}",
        out.stdout
    );
    assert!(env.database_exists("team-a").await, "team-a was dropped");
    assert!(env.database_exists("team-b").await);
    assert_eq!(
        env.credentials("team/a", "write")["password"],
        password,
        "the credentials are untouched"
    );
    out
}

#[tokio::test]
async fn a_typo_in_the_top_level_key_holds_drops() {
    let env = two_applied_tenants();

    env.write(
        "team/a/values.yaml",
        "postgresqlDatabase:\n  - name: a\n    mode: standard\n",
    );
    let out =
        apply_fails_and_keeps_a(&env, "top-level key `postgresqlDatabase` is ignored", &[]).await;
    assert!(
        out.stderr
            .contains("help: did you mean `postgresqlDatabases`?"),
        "{}",
        out.stderr
    );

    // In a v1 file, the same; and `apiVersion` without the key at all.
    env.write(
        "team/a/values.yaml",
        "apiVersion: pgtenant.io/v1\nPostgresqlDatabases:\n  - name: a\n",
    );
    apply_fails_and_keeps_a(&env, "top-level key `PostgresqlDatabases` is ignored", &[]).await;
    env.write(
        "team/a/values.yaml",
        "apiVersion: pgtenant.io/v1\nimage: a\n",
    );
    apply_fails_and_keeps_a(
        &env,
        "`apiVersion: pgtenant.io/v1` without `postgresqlDatabases`",
        &[],
    )
    .await;

    // A file that never was pgtenant's is still the app's own business.
    env.write("team/a/values.yaml", "image: a\n");
    env.write("team/web/values.yaml", "image: web\napiVersion: v2\n");
    let out = env.run(&["apply", "--format", "json", "--max-drops", "1"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!env.database_exists("team-a").await);
}

#[tokio::test]
async fn a_values_file_that_became_a_directory_holds_drops() {
    let env = two_applied_tenants();
    replace_values_file(&env, |path| {
        std::fs::create_dir_all(path.join("inner")).unwrap();
        std::fs::write(
            path.join("inner/values.yaml"),
            "postgresqlDatabases:\n  - name: inner\n",
        )
        .unwrap();
    });
    apply_fails_and_keeps_a(&env, "values file is a directory, not a regular file", &[]).await;
    assert!(
        !env.database_exists("team-inner").await,
        "nothing below a directory named values.yaml is read"
    );
}

#[tokio::test]
async fn a_symlink_out_of_the_repo_is_refused_and_holds_drops() {
    let env = two_applied_tenants();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("values.yaml"),
        // Read, its bad name would be quoted in the error.
        "postgresqlDatabases:\n  - name: a\n  - name: Top_Secret_Token\n",
    )
    .unwrap();
    replace_values_file(&env, |path| {
        symlink(outside.path().join("values.yaml"), path).unwrap();
    });
    let out = apply_fails_and_keeps_a(
        &env,
        "values file is a symlink that leads outside the repo",
        &[],
    )
    .await;
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains("Top_Secret_Token"),
            "the outside file's content is echoed on {stream}:\n{text}"
        );
    }
}

#[tokio::test]
async fn values_file_pointing_at_dev_zero_is_capped() {
    let env = two_applied_tenants();
    replace_values_file(&env, |path| symlink("/dev/zero", path).unwrap());
    apply_fails_and_keeps_a(&env, "team/a/values.yaml:1:1: values file is", &[]).await;

    // A regular file over the cap, which the environment sets.
    let text = format!("postgresqlDatabases:\n  - name: a\n#{}\n", "x".repeat(100));
    replace_values_file(&env, |path| std::fs::write(path, &text).unwrap());
    apply_fails_and_keeps_a(
        &env,
        &format!(
            "values file is {} bytes, over the limit of 64 bytes",
            text.len()
        ),
        &[("PGTENANT_MAX_VALUES_FILE_BYTES", "64")],
    )
    .await;
    // Under the default cap the same file is fine.
    env.apply();
}

#[tokio::test]
async fn a_fifo_values_file_does_not_block() {
    let env = two_applied_tenants();
    replace_values_file(&env, |path| {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    });
    let out = run_within(
        &env,
        &["plan", "--format", "json"],
        Duration::from_secs(60),
        &[],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "team/a/values.yaml:1:1: values file is a FIFO (named pipe), not a regular file"
        ),
        "{}",
        out.stderr
    );
    apply_fails_and_keeps_a(&env, "values file is a FIFO", &[]).await;
}
