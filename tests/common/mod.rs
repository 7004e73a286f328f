//! Shared by the integration tests: a real PostgreSQL cluster per test (started from the system
//! binaries, non-superuser control role), a temporary apps repo and state dir, and the real binary.
//!
//! Each test gets a cluster of its own (tests of a binary run in parallel, and `apply` locks
//! and plans the whole cluster), copied from a template the test binary creates once: see
//! `pgtenant_cluster::TestCluster`.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod aws;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use pgtenant_cluster::TestCluster;
use pgtenant_engine::Connector;
use serde_json::Value;
use tempfile::TempDir;
use tokio_postgres::Client;

pub struct Env {
    pub cluster: TestCluster,
    pub state: TempDir,
    pub repo: TempDir,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn of(output: std::process::Output) -> Output {
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            cluster: TestCluster::start().expect("start a test cluster"),
            state: tempfile::tempdir().unwrap(),
            repo: tempfile::tempdir().unwrap(),
        }
    }

    pub fn admin_url(&self) -> String {
        self.cluster.cluster.control_url().unwrap()
    }

    /// The binary, pointed at this test's cluster, state dir and repo.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("pgtenant").unwrap();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PGTENANT_ADMIN_URL", self.admin_url())
            .env("PGTENANT_STATE_DIR", self.state.path())
            .current_dir(self.repo.path());
        // The Secrets Manager tests' endpoint and dummy credentials (common/aws.rs).
        cmd.envs(std::env::vars().filter(|(name, _)| name.starts_with("AWS_")));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Output::of(self.cmd().args(args).output().unwrap())
    }

    /// `apply --format json`, which must succeed.
    pub fn apply(&self) -> Value {
        let out = self.run(&["apply", "--format", "json"]);
        assert_eq!(out.code, 0, "apply failed:\n{}\n{}", out.stdout, out.stderr);
        out.json()
    }

    pub fn plan(&self) -> Output {
        self.run(&["plan", "--format", "json"])
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.repo.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn remove(&self, relative: &str) {
        std::fs::remove_file(self.repo.path().join(relative)).unwrap();
    }

    /// Declares databases `names` (with their modes) in `<namespace>/<folder>/values.yaml`.
    pub fn declare(&self, namespace: &str, folder: &str, entries: &[(&str, &str)]) {
        let mut yaml = String::from("postgresqlDatabases:\n");
        for (name, mode) in entries {
            yaml.push_str(&format!("  - name: {name}\n    mode: {mode}\n"));
        }
        self.write(&format!("{namespace}/{folder}/values.yaml"), &yaml);
    }

    pub fn credentials(&self, tenant: &str, role: &str) -> Value {
        let out = self.run(&["credentials", tenant, "--role", role, "--format", "json"]);
        assert_eq!(out.code, 0, "credentials failed:\n{}", out.stderr);
        out.json()
    }

    pub fn state_path(&self) -> PathBuf {
        self.state.path().to_path_buf()
    }

    pub fn repo_path(&self) -> &Path {
        self.repo.path()
    }

    pub async fn connect_as(&self, tenant: &str, role: &str) -> Client {
        let uri = self.credentials(tenant, role)["uri"]
            .as_str()
            .unwrap()
            .to_string();
        connect(&uri, None)
            .await
            .unwrap_or_else(|e| panic!("{role} of {tenant} cannot connect: {e}"))
    }

    pub async fn superuser(&self, database: Option<&str>) -> Client {
        connect(&self.cluster.cluster.superuser_url().unwrap(), database)
            .await
            .unwrap()
    }

    pub async fn database_exists(&self, name: &str) -> bool {
        self.control()
            .await
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .unwrap()
            .is_some()
    }

    /// How many roles' names start with `prefix`.
    pub async fn roles_like(&self, prefix: &str) -> i64 {
        self.control()
            .await
            .query_one(
                "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, $1)",
                &[&prefix],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn control(&self) -> Client {
        connect(&self.admin_url(), None).await.unwrap()
    }

    /// Waits until no session holds an advisory lock (the apply lock): a client the test dropped
    /// is gone for the server only once its backend has noticed the closed connection.
    pub async fn wait_until_advisory_locks_are_released(&self) {
        let superuser = self.superuser(None).await;
        poll_until("advisory locks released", || async {
            let held: i64 = superuser
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            held == 0
        })
        .await;
    }

    /// Waits until new sessions see `setting` = `value`, after `pg_reload_conf()`: the server
    /// applies a reload asynchronously.
    pub async fn wait_for_setting(&self, setting: &str, value: &str) {
        poll_until(&format!("{setting} = {value} in new sessions"), || async {
            let current: String = self
                .superuser(None)
                .await
                .query_one(
                    "SELECT setting FROM pg_settings WHERE name = $1",
                    &[&setting],
                )
                .await
                .unwrap()
                .get(0);
            current == value
        })
        .await;
    }
}

/// How long [`poll_until`] waits before failing the test.
pub const POLL_DEADLINE: Duration = Duration::from_secs(30);

/// Polls `done` every 20 ms until it holds; fails the test, naming `what`, after
/// [`POLL_DEADLINE`]. Tests wait for a condition, never for a fixed time.
pub async fn poll_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + POLL_DEADLINE;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "gave up after {POLL_DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session as an application opens it (server defaults, not the control connection's settings).
pub async fn connect(url: &str, database: Option<&str>) -> Result<Client, String> {
    let connector = Connector::from_url(url)
        .map_err(|e| e.to_string())?
        .as_application();
    connector
        .connect(database)
        .await
        .map_err(|e| pgtenant_engine::error_chain(&e))
}

/// The SQLSTATE of a failed statement, to assert *why* something was refused.
pub async fn sqlstate(client: &Client, sql: &str) -> Option<String> {
    match client.batch_execute(sql).await {
        Ok(()) => None,
        Err(e) => Some(
            e.code()
                .map(|c| c.code().to_string())
                .unwrap_or_else(|| e.to_string()),
        ),
    }
}

pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// The embedded-cluster mode on this test's cluster (no admin URL, the state dir's `cluster` a
/// link to it), so `up` starts the managed pgbouncer; stopped again on drop (pgbouncer is a
/// daemon: it would outlive the test).
pub struct WithPooler {
    pub env: Env,
}

impl Drop for WithPooler {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

impl WithPooler {
    /// None: pgbouncer is missing and skipping is allowed.
    pub fn new() -> Option<WithPooler> {
        if pgtenant_cluster::find_pgbouncer().is_none() {
            pgtenant_cluster::skip_or_fail(
                "pgbouncer is not installed (apt-get install pgbouncer)",
            );
            return None;
        }
        let env = Env::new();
        std::os::unix::fs::symlink(env.cluster.cluster.dir(), env.state.path().join("cluster"))
            .unwrap();
        Some(WithPooler { env })
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Output::of(
            self.env
                .cmd()
                .env_remove("PGTENANT_ADMIN_URL")
                .args(args)
                .output()
                .unwrap(),
        )
    }

    /// `run`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{args:?}:\n{}\n{}", out.stdout, out.stderr);
        out
    }
}
