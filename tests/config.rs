//! The platform config (pgtenant.yaml) through the binary: `config check` and `config schema`,
//! the repo and the cluster taken from the config, flags winning over it, the cluster choice.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use assert_cmd::Command;
use common::{Env, Output};
use tempfile::TempDir;

/// The binary with a clean environment: no admin URL, its own state dir, run in `cwd`.
fn pgtenant(state: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::cargo_bin("pgtenant").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGTENANT_STATE_DIR", state)
        .current_dir(cwd);
    cmd
}

fn output(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap();
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

const SECRET: &str = "s3cret-never-printed";

#[test]
fn config_check_accepts_a_good_file_and_says_what_clusters_resolve_to_without_secrets() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    write_private(
        &dir.path().join("admin-url"),
        &format!("postgres://pgtenant:{SECRET}@db.internal:5433/postgres\n"),
    );
    let config = dir.path().join("pgtenant.yaml");
    std::fs::write(
        &config,
        "repo: apps\n\
         clusters:\n\
         \x20 - name: main\n\
         \x20   adminUrl: file:admin-url\n\
         \x20   endpoint: apps.internal:6432\n\
         \x20   labels: {tier: production}\n\
         \x20 - name: replica\n\
         \x20   adminUrl: env:REPLICA_ADMIN_URL\n\
         store: {type: file}\n\
         retention: {production: 35d}\n\
         backups: {full: \"0 2 * * 0\", diff: \"0 2 * * 1-6\"}\n\
         serve: {listen: 127.0.0.1:8432, driftInterval: 10min, pollInterval: 10s}\n",
    )
    .unwrap();
    let out = output(
        pgtenant(&dir.path().join("state"), dir.path())
            .env(
                "REPLICA_ADMIN_URL",
                format!("postgres://ro:{SECRET}@replica:5432/postgres"),
            )
            .args([
                "--config",
                "pgtenant.yaml",
                "--cluster",
                "main",
                "config",
                "check",
            ]),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "cluster main: admin URL from file:{} → pgtenant@db.internal:5433; endpoint apps.internal:6432; labels tier=production",
            dir.path().join("admin-url").display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("cluster replica: admin URL from env:REPLICA_ADMIN_URL → ro@replica:5432"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("commands manage cluster `main`"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET));

    let json = output(
        pgtenant(&dir.path().join("state"), dir.path())
            .env("REPLICA_ADMIN_URL", "postgres://ro@replica/postgres")
            .env("PGTENANT_CONFIG", &config)
            .args(["config", "check", "--format", "json"]),
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let report = json.json();
    assert_eq!(report["valid"], true);
    assert_eq!(report["clusters"][0]["host"], "db.internal");
    assert_eq!(report["clusters"][0]["port"], 5433);
    assert_eq!(report["clusters"][1]["resolved"], true);
    assert_eq!(
        report["repo"],
        dir.path().join("apps").display().to_string()
    );
    assert!(report["selected"].is_null(), "two clusters, none chosen");
    assert!(
        report["selection_error"]
            .as_str()
            .unwrap()
            .contains("--cluster NAME"),
        "{report}"
    );
    assert!(!json.stdout.contains(SECRET));
}

#[test]
fn config_check_reports_every_problem_located_and_exits_1() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("pgtenant.yaml");
    let run = |args: &[&str]| output(pgtenant(&dir.path().join("state"), dir.path()).args(args));
    std::fs::write(
        &config,
        "clustres: []\n\
         repo: /nonexistent/apps\n\
         clusters:\n\
         \x20 - name: main\n\
         \x20   adminUrl: env:PGTENANT_TEST_UNSET_URL\n\
         serve: {pollInterval: 10m}\n",
    )
    .unwrap();
    let out = run(&["--config", "pgtenant.yaml", "config", "check"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    for expected in [
        "error: pgtenant.yaml:1:1: clustres: unknown key `clustres`\n  help: did you mean `clusters`?",
        "error: pgtenant.yaml:6:23: serve.pollInterval: unknown unit `m` in `10m`",
        "help: did you mean `10min`?",
    ] {
        assert!(out.stderr.contains(expected), "wanted {expected:?} in\n{}", out.stderr);
    }
    assert!(out.stdout.contains("invalid: 2 error(s)"), "{}", out.stdout);

    // Valid shape, but references that do not resolve: still exit 1, located.
    std::fs::write(
        &config,
        "repo: /nonexistent/apps\nclusters:\n  - name: main\n    adminUrl: env:PGTENANT_TEST_UNSET_URL\n",
    )
    .unwrap();
    let out = run(&["--config", "pgtenant.yaml", "config", "check"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "error: pgtenant.yaml:4:15: clusters[0].adminUrl: the environment variable PGTENANT_TEST_UNSET_URL is not set"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("repo: the apps repo /nonexistent/apps is not a directory"),
        "{}",
        out.stderr
    );

    // Any other command refuses a broken config, with the same located report.
    std::fs::write(&config, "clustres: []\n").unwrap();
    let out = run(&["--config", "pgtenant.yaml", "list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("pgtenant.yaml:1:1: clustres: unknown key"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("has 1 error(s)"), "{}", out.stderr);

    // A missing --config is an error; a missing default config is no config at all.
    let out = run(&["--config", "nope.yaml", "config", "check"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("nope.yaml:1:1: cannot read the config file"),
        "{}",
        out.stderr
    );
    let out = run(&["config", "check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("no config file:"), "{}", out.stdout);
}

#[test]
fn the_default_config_is_read_from_the_state_dir() {
    let dir = TempDir::new().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("pgtenant.yaml"), "environment: prod\n").unwrap();
    let out = output(pgtenant(&state, dir.path()).args(["config", "check"]));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("pgtenant.yaml:1:14: environment: unknown tier `prod`"),
        "{}",
        out.stderr
    );
}

#[test]
fn config_schema_prints_the_committed_schema() {
    let dir = TempDir::new().unwrap();
    let out = output(pgtenant(dir.path(), dir.path()).args(["config", "schema"]));
    assert_eq!(out.code, 0);
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pgtenant-config.schema.json"),
    )
    .unwrap();
    assert_eq!(out.stdout, committed);
}

#[test]
fn flags_override_the_config() {
    let dir = TempDir::new().unwrap();
    let pem =
        |name: &str| format!("-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n");
    std::fs::write(dir.path().join("config-ca.pem"), pem("FROMCONFIG")).unwrap();
    std::fs::write(dir.path().join("flag-ca.pem"), pem("FROMFLAG")).unwrap();
    std::fs::write(
        dir.path().join("pgtenant.yaml"),
        "clusters:\n  - name: main\n    adminUrl: env:MAIN_URL\n    caFile: config-ca.pem\n",
    )
    .unwrap();
    let ca = |extra: &[&str]| {
        let mut cmd = pgtenant(&dir.path().join("state"), dir.path());
        cmd.env("MAIN_URL", "postgres://pgtenant@db.internal/postgres")
            .env("PGTENANT_CONFIG", dir.path().join("pgtenant.yaml"))
            .args(extra)
            .arg("ca");
        output(&mut cmd)
    };
    let out = ca(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("FROMCONFIG"),
        "the config wins over the default: {}",
        out.stdout
    );
    let out = ca(&["--ca-file", "flag-ca.pem"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("FROMFLAG"),
        "the flag wins over the config: {}",
        out.stdout
    );
}

#[test]
fn two_clusters_without_cluster_is_a_clear_error_listing_them() {
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("pgtenant.yaml"),
        "clusters:\n  - name: main\n    adminUrl: env:MAIN_URL\n  - name: analytics\n    adminUrl: env:ANALYTICS_URL\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("team/app")).unwrap();
    std::fs::write(
        dir.path().join("team/app/values.yaml"),
        "postgresqlDatabases:\n  - name: orders\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = pgtenant(&dir.path().join("state"), dir.path());
        cmd.env("MAIN_URL", "postgres://pgtenant@127.0.0.1:1/postgres")
            .env("ANALYTICS_URL", "postgres://pgtenant@127.0.0.1:1/postgres")
            .env("PGTENANT_CONFIG", dir.path().join("pgtenant.yaml"))
            .args(extra);
        output(&mut cmd)
    };
    // plan (and apply) run over every cluster (docs/fleet.md): both are unreachable here.
    let out = run(&["plan", "."]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.contains("== cluster main == unreachable")
            && out.stdout.contains("== cluster analytics == unreachable"),
        "{}",
        out.stdout
    );
    // So does list: each unreachable cluster is reported, exit 1.
    let out = run(&["list"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cluster main is unreachable")
            && out.stderr.contains("cluster analytics is unreachable"),
        "{}",
        out.stderr
    );
    // Commands not run over the fleet yet still ask for one.
    let out = run(&["ca"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "the config file lists 2 clusters (main, analytics): choose one with --cluster NAME or PGTENANT_CLUSTER"
        ),
        "{}",
        out.stderr
    );
    let out = run(&["--cluster", "nope", "list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "--cluster nope: no such cluster in the config file; its clusters are main, analytics"
        ),
        "{}",
        out.stderr
    );
    // Commands that need no cluster still run.
    let out = run(&["spec", "schema"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A test cluster reached only through the config: its admin URL in a 0600 file referenced
/// with `file:`, no PGTENANT_ADMIN_URL, run from another directory.
struct Configured {
    env: Env,
    dir: TempDir,
}

impl Configured {
    fn new(clusters: &str) -> Configured {
        let env = Env::new();
        env.declare("team", "app", &[("orders", "standard")]);
        let dir = TempDir::new().unwrap();
        write_private(
            &dir.path().join("admin-url"),
            &format!("{}\n", env.admin_url()),
        );
        std::fs::write(
            dir.path().join("pgtenant.yaml"),
            format!("repo: {}\nclusters:\n{clusters}", env.repo_path().display()),
        )
        .unwrap();
        Configured { env, dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        let elsewhere = TempDir::new().unwrap();
        let mut cmd = pgtenant(&self.env.state_path(), elsewhere.path());
        cmd.env("PGTENANT_CONFIG", self.dir.path().join("pgtenant.yaml"))
            .args(args);
        output(&mut cmd)
    }
}

const MAIN_FROM_FILE: &str =
    "  - name: main\n    adminUrl: file:admin-url\n    endpoint: apps.example:6543\n";

#[test]
fn the_configs_cluster_is_reached_from_anywhere_without_an_admin_url_variable() {
    let configured = Configured::new(MAIN_FROM_FILE);
    let repo = configured.env.repo_path().display().to_string();
    let plan = configured.run(&["plan", &repo, "--format", "json"]);
    assert_eq!(
        plan.code, 2,
        "changes pending:\n{}\n{}",
        plan.stdout, plan.stderr
    );
    assert!(plan.stdout.contains("team/orders"), "{}", plan.stdout);
    let apply = configured.run(&["apply", &repo]);
    assert_eq!(apply.code, 0, "{}\n{}", apply.stdout, apply.stderr);
    // The endpoint of the config is what credentials name.
    let url = configured.run(&["url", "team/orders", "--role", "write"]);
    assert_eq!(url.code, 0, "{}", url.stderr);
    assert!(url.stdout.contains("apps.example:6543"), "{}", url.stdout);
}

#[test]
fn an_admin_url_flag_wins_over_the_configs_cluster() {
    // The config's cluster is unreachable; the variable points at the real one.
    let configured = Configured::new(
        "  - name: main\n    adminUrl: postgres://pgtenant@127.0.0.1:1/postgres\n  - name: other\n    adminUrl: env:UNSET_URL\n",
    );
    let repo = configured.env.repo_path().display().to_string();
    let elsewhere = TempDir::new().unwrap();
    let out = output(
        pgtenant(&configured.env.state_path(), elsewhere.path())
            .env(
                "PGTENANT_CONFIG",
                configured.dir.path().join("pgtenant.yaml"),
            )
            .env("PGTENANT_ADMIN_URL", configured.env.admin_url())
            .args(["plan", &repo]),
    );
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn cluster_chooses_among_several() {
    let configured = Configured::new(&format!(
        "{MAIN_FROM_FILE}  - name: broken\n    adminUrl: env:UNSET_URL\n"
    ));
    let repo = configured.env.repo_path().display().to_string();
    let out = configured.run(&["--cluster", "main", "plan", &repo]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    let out = configured.run(&["--cluster", "broken", "plan", &repo]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "the admin URL of cluster `broken`: the environment variable UNSET_URL is not set"
        ),
        "{}",
        out.stderr
    );
}

/// With `repo:` in the config, commands no longer depend on the current directory.
#[test]
fn plan_without_a_repo_argument_reads_the_configs_repo() {
    let configured = Configured::new(MAIN_FROM_FILE);
    let plan = configured.run(&["plan", "--format", "json"]);
    assert_eq!(
        plan.code, 2,
        "changes pending:\n{}\n{}",
        plan.stdout, plan.stderr
    );
    assert!(plan.stdout.contains("team/orders"), "{}", plan.stdout);
}

#[test]
fn config_check_reports_pooler_and_pooling_mistakes_located() {
    let dir = TempDir::new().unwrap();
    let run = |args: &[&str]| output(pgtenant(&dir.path().join("state"), dir.path()).args(args));
    std::fs::write(
        dir.path().join("pgtenant.yaml"),
        "clusters:\n  - name: main\n    adminUrl: env:PGTENANT_TEST_UNSET_URL\n    pooler: {listen: 127.0.0.1:6432, auth: querry}\npooling: {mode: sesion, size: 20000}\n",
    )
    .unwrap();
    let out = run(&["--config", "pgtenant.yaml", "config", "check"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    for expected in [
        "error: pgtenant.yaml:4:44: clusters[0].pooler.auth: unknown pooler authentication `querry`: expected `file` or `query`\n  help: did you mean `query`?",
        "error: pgtenant.yaml:5:17: pooling.mode: unknown pool mode `sesion`: expected `transaction` or `session`\n  help: did you mean `session`?",
        "error: pgtenant.yaml:5:31: pooling.size: expected a pool size from 1 to 10000, found the number `20000`",
    ] {
        assert!(out.stderr.contains(expected), "wanted {expected:?} in\n{}", out.stderr);
    }
    assert!(out.stdout.contains("invalid: 3 error(s)"), "{}", out.stdout);
}

#[test]
fn auth_query_is_refused_without_a_superuser_and_planned_with_one() {
    // The harness's control role is no superuser: every tenant is refused, saying why and what else.
    let configured = Configured::new("  - name: main\n    adminUrl: file:admin-url\n");
    let repo = configured.env.repo_path().display().to_string();
    // A configured pooler presents a certificate of its own: the server's will do here.
    let data = configured.env.cluster.cluster.dir().join("data");
    std::fs::write(
        configured.dir.path().join("pgtenant.yaml"),
        format!(
            "repo: {repo}\nclusters:\n  - name: main\n    adminUrl: file:admin-url\n    pooler:\n      run: files\n      listen: 127.0.0.1:1\n      configDir: pooler\n      auth: query\n      tls: {{certFile: {}, keyFile: {}}}\n",
            data.join("server.crt").display(),
            data.join("server.key").display()
        ),
    )
    .unwrap();
    let plan = configured.run(&["plan", &repo]);
    assert_ne!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let said = format!("{}{}", plan.stdout, plan.stderr);
    for needed in [
        "the pooler's `auth: query` needs the lookup function `pgtenant.pooler_lookup`",
        "is not a superuser",
        "Use `auth: file`",
    ] {
        assert!(said.contains(needed), "{needed}:\n{said}");
    }

    // A superuser control role: the lookup function is planned inside the tenant's database.
    write_private(
        &configured.dir.path().join("admin-url"),
        &format!(
            "{}\n",
            configured.env.cluster.cluster.superuser_url().unwrap()
        ),
    );
    let plan = configured.run(&["plan", &repo, "--format", "json"]);
    let said = format!("{}{}", plan.stdout, plan.stderr);
    assert!(
        said.contains("CREATE OR REPLACE FUNCTION \\\"pgtenant\\\".\\\"pooler_lookup\\\"(text)"),
        "{said}"
    );
    assert!(!said.contains("is not a superuser"), "{said}");
}
