//! `pgtenant serve` as a process: real binary, real PostgreSQL, a real directory and a real git
//! remote (a bare repository on disk the test pushes to). The state is read the way a client
//! reads it: `GET /api/v1/tenants` and `GET /readyz`.

mod backup_env;
mod common;
#[path = "../crates/serve/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{poll_until, Env};
use serde_json::Value;

/// A running `pgtenant serve`; killed when dropped.
struct Serve {
    child: Option<Child>,
    address: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// `pgtenant serve ARGS… --listen 127.0.0.1:0` against `env`'s cluster and state dir.
    fn start(env: &Env, args: &[&str]) -> Serve {
        Self::start_with(env, args, &[])
    }

    fn start_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Serve {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("pgtenant"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PGTENANT_ADMIN_URL", env.admin_url())
            .env("PGTENANT_STATE_DIR", env.state_path())
            .current_dir(env.repo_path());
        for (name, value) in vars {
            command.env(name, value);
        }
        Self::spawn(command, args)
    }

    /// `command serve ARGS… --listen 127.0.0.1:0`, its status page address read from stdout.
    fn spawn(mut command: Command, args: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        command
            .env("PGTENANT_LOG", "info")
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("pgtenant serve: status page http://") {
                    let _ = sender.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        let address = receiver
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "serve printed no status page URL:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Serve {
            child: Some(child),
            address,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Status code and body of `GET path`.
    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.address, path)
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert!(status < 500, "GET {path}: {status}\n{body}\n{}", self.log());
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `GET /readyz` (503 while not ready).
    fn readiness(&self) -> Value {
        let (_, body) = self.get("/readyz");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    fn tenants(&self) -> Value {
        self.json("/api/v1/tenants")
    }

    /// The tenant's status in the API, if listed.
    fn tenant(&self, id: &str) -> Option<Value> {
        self.tenants()["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == id)
            .cloned()
    }

    fn state_of(&self, id: &str) -> Option<String> {
        self.tenant(id)
            .and_then(|t| t["state"].as_str().map(str::to_string))
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit (at most `limit`); its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_get(address: &str, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return (599, "connection refused".into());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (599, "read failed".into());
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(599);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

const STANDARD: &str = "postgresqlDatabases:\n  - name: NAME\n    mode: standard\n";

fn values(names: &[&str]) -> String {
    let mut text = String::from("postgresqlDatabases:\n");
    for name in names {
        text.push_str(&format!("  - name: {name}\n    mode: standard\n"));
    }
    text
}

/// How long a change may take to be applied in these tests (debug build, shared machine); the
/// benchmark (bench/serve.py) measures the real latency.
const BOUND: Duration = Duration::from_secs(30);

async fn within(what: &str, bound: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_file_added_changed_and_removed_is_applied_by_the_running_service() {
    let env = Env::new();
    env.write("team/app/values.yaml", &STANDARD.replace("NAME", "app"));
    // Polling never comes round in this test: only file events can be what it reacts to.
    let serve = Serve::start(&env, &["--poll-interval", "1h", "--drift-interval", "1h"]);
    within("the first tenant in sync", BOUND * 2, || {
        serve.state_of("team/app").as_deref() == Some("in-sync")
    })
    .await;
    assert!(env.database_exists("team-app").await);

    // Added.
    env.write("team/more/values.yaml", &STANDARD.replace("NAME", "more"));
    within("an added file applied", BOUND, || {
        serve.state_of("team/more").as_deref() == Some("in-sync")
    })
    .await;
    assert!(env.database_exists("team-more").await);

    // Changed: a schema declared.
    env.write(
        "team/more/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: more\n    mode: standard\n    schemas: [billing]\n",
    );
    schema_appears(&env, &serve, "team-more", "billing").await;

    // Removed: dropped (after its final backup), and gone from the API.
    env.remove("team/more/values.yaml");
    database_dropped(&env, &serve, "team-more").await;
    within("the removed tenant gone from the API", BOUND, || {
        serve.tenant("team/more").is_none()
    })
    .await;
    assert_eq!(serve.state_of("team/app").as_deref(), Some("in-sync"));
    let (status, body) = serve.get("/readyz");
    assert_eq!(status, 200, "{body}");
}

/// Waits (at most [`BOUND`]) until `schema` exists in `database`: a changed file applied.
async fn schema_appears(env: &Env, serve: &Serve, database: &str, schema: &str) {
    let superuser = env.superuser(Some(database)).await;
    let started = Instant::now();
    while superuser
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            started.elapsed() < BOUND,
            "schema {schema} not in {database}: the change was not applied:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most [`BOUND`]) until `database` is gone: a removed file applied.
async fn database_dropped(env: &Env, serve: &Serve, database: &str) {
    let started = Instant::now();
    while env.database_exists(database).await {
        assert!(
            started.elapsed() < BOUND,
            "{database} was not dropped after its file was removed:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of a metric's samples in `GET /metrics` (every label set).
fn metric_sum(serve: &Serve, name: &str) -> f64 {
    let (_, text) = serve.get("/metrics");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Twenty values files written back to back (a `git pull`, a copy) are gathered into as few
/// reads as the burst allows: every new tenant is reconciled once, none is reconciled from a
/// half-read directory again, and all of them end in sync.
#[tokio::test]
async fn a_burst_of_writes_to_many_files_reconciles_each_tenant_once() {
    let env = Env::new();
    env.write("team/app/values.yaml", &STANDARD.replace("NAME", "app"));
    let serve = Serve::start(&env, &["--poll-interval", "1h", "--drift-interval", "1h"]);
    within("the first tenant in sync", BOUND * 2, || {
        serve.state_of("team/app").as_deref() == Some("in-sync")
    })
    .await;
    // The start-up reconcile, then the first drift batch (due at once, the next in an hour).
    within("the start-up reconciles", BOUND, || {
        metric_sum(&serve, "pgtenant_reconciles_total") >= 2.0
    })
    .await;
    let before = metric_sum(&serve, "pgtenant_reconciles_total");
    let names: Vec<String> = (0..20).map(|i| format!("burst{i:02}")).collect();
    for name in &names {
        env.write(
            &format!("burst/{name}/values.yaml"),
            &STANDARD.replace("NAME", name),
        );
    }
    within("every tenant of the burst in sync", BOUND * 2, || {
        names
            .iter()
            .all(|n| serve.state_of(&format!("burst/{n}")).as_deref() == Some("in-sync"))
    })
    .await;
    let reconciled = metric_sum(&serve, "pgtenant_reconciles_total") - before;
    assert_eq!(reconciled, 20.0, "each tenant once:\n{}", serve.log());
    for name in &names {
        assert!(env.database_exists(&format!("burst-{name}")).await);
    }
}

#[tokio::test]
async fn a_broken_file_or_a_deleted_source_drops_nothing() {
    let env = Env::new();
    env.write("team/a/values.yaml", &STANDARD.replace("NAME", "a"));
    env.write("team/b/values.yaml", &STANDARD.replace("NAME", "b"));
    let serve = Serve::start(&env, &["--poll-interval", "1s", "--drift-interval", "1h"]);
    within("both tenants in sync", BOUND * 2, || {
        serve.state_of("team/a").as_deref() == Some("in-sync")
            && serve.state_of("team/b").as_deref() == Some("in-sync")
    })
    .await;

    // A broken file: its tenant is left as it is (invalid), the other one is untouched.
    env.write("team/b/values.yaml", "postgresqlDatabases:\n  - name: [b\n");
    within("the broken file's tenant invalid", BOUND, || {
        serve.state_of("team/b").as_deref() == Some("invalid")
    })
    .await;
    assert!(
        env.database_exists("team-b").await,
        "a broken file dropped its database"
    );
    assert_eq!(serve.state_of("team/a").as_deref(), Some("in-sync"));

    // The whole source gone: an error, never an empty repo.
    let moved = env.repo_path().with_extension("moved");
    std::fs::rename(env.repo_path(), &moved).unwrap();
    let reasons = || {
        let (_, body) = serve.get("/readyz");
        body
    };
    within("the source error reported", BOUND, || {
        reasons().contains("source unreadable")
    })
    .await;
    assert!(
        env.database_exists("team-a").await,
        "a deleted source dropped a database"
    );
    assert!(
        env.database_exists("team-b").await,
        "a deleted source dropped a database"
    );
    assert!(
        serve.tenant("team/a").is_some(),
        "the last good state stays"
    );

    // Back, fixed: served again.
    std::fs::rename(&moved, env.repo_path()).unwrap();
    env.write("team/b/values.yaml", &STANDARD.replace("NAME", "b"));
    within("served again", BOUND, || {
        serve.state_of("team/b").as_deref() == Some("in-sync") && !reasons().contains("source")
    })
    .await;
    assert!(env.database_exists("team-a").await && env.database_exists("team-b").await);
}

#[tokio::test]
async fn a_revoke_made_by_hand_is_repaired_within_the_drift_interval() {
    let env = Env::new();
    env.write("team/a/values.yaml", &values(&["a", "b"]));
    let serve = Serve::start(&env, &["--poll-interval", "1h", "--drift-interval", "2s"]);
    within("both tenants in sync", BOUND * 2, || {
        serve.state_of("team/a").as_deref() == Some("in-sync")
            && serve.state_of("team/b").as_deref() == Some("in-sync")
    })
    .await;
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(r#"ALTER ROLE "team-a-read" CREATEDB"#)
        .await
        .unwrap();
    let repaired = || async {
        !superuser
            .query_one(
                "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'team-a-read'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    let started = Instant::now();
    while !repaired().await {
        // The drift interval, one more second for the batch, and slack for a debug build.
        assert!(
            started.elapsed() < Duration::from_secs(2 + 1 + 10),
            "drift not repaired within the drift interval:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    within("the repair reported as an event", BOUND, || {
        let (_, body) = serve.get("/api/v1/tenants/team/a");
        body.contains("drift repaired")
    })
    .await;
}

/// A tenant whose apply fails (an extension the server does not have) is retried with a
/// doubling backoff, shown as `failed` with its error and `retry_at`; meanwhile another tenant's
/// change is applied as usual, and fixing the file applies it at once, not after the backoff.
#[tokio::test]
async fn a_failing_tenant_backs_off_without_holding_the_others_back_and_a_fix_applies_at_once() {
    let env = Env::new();
    env.write("team/a/values.yaml", &STANDARD.replace("NAME", "a"));
    let broken = "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: bad\n    mode: standard\n    extensions: [no_such_extension]\n";
    env.write("team/bad/values.yaml", broken);
    let serve = Serve::start(&env, &["--poll-interval", "1h", "--drift-interval", "1h"]);
    within("team/a in sync", BOUND * 2, || {
        serve.state_of("team/a").as_deref() == Some("in-sync")
    })
    .await;

    // Each failure shows a new retry time; the time between them doubles (1 s, 2 s, 4 s, ...).
    let retry_at = || {
        serve
            .tenant("team/bad")
            .filter(|t| t["state"] == "failed")
            .and_then(|t| t["retry_at"].as_str().map(str::to_string))
    };
    let mut failures: Vec<(String, Instant)> = Vec::new();
    while failures.len() < 4 {
        if let Some(at) = retry_at() {
            if failures.last().is_none_or(|(last, _)| *last != at) {
                failures.push((at, Instant::now()));
            }
        }
        assert!(
            failures
                .first()
                .is_none_or(|(_, first)| first.elapsed() < BOUND * 2),
            "four failures not seen: {failures:?}\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = serve.tenant("team/bad").unwrap()["last_error"].to_string();
    assert!(error.contains("no_such_extension"), "{error}");
    for (k, pair) in failures.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].1;
        let backoff = Duration::from_secs(1 << k);
        // Never tried again before its backoff (less the 20 ms the test polls at).
        assert!(
            gap + Duration::from_millis(50) >= backoff,
            "retry {k} came after {gap:?}, before its backoff {backoff:?}: {failures:?}"
        );
    }

    // Meanwhile team/a's change goes through as usual.
    env.write(
        "team/a/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    mode: standard\n    schemas: [billing]\n",
    );
    schema_appears(&env, &serve, "team-a", "billing").await;

    // The fix is applied at once, though the backoff is now 8 s or more.
    env.write("team/bad/values.yaml", &STANDARD.replace("NAME", "bad"));
    let fixed = within("the fixed tenant in sync", BOUND, || {
        serve.state_of("team/bad").as_deref() == Some("in-sync")
    })
    .await;
    assert!(
        fixed < Duration::from_secs(8),
        "the fix waited for the backoff: {fixed:?}\n{}",
        serve.log()
    );
    assert!(serve.tenant("team/bad").unwrap()["retry_at"].is_null());
}

/// Removals keep the CLI's guards in the service: a namespace losing its last database is held,
/// two databases gone in one read are both held (at most one drop a run), and a protected
/// tenant's removal keeps its database as an orphan. Held drops are shown in the API, the metrics and
/// the page; no database is dropped.
#[tokio::test]
async fn removals_past_a_guard_are_held_and_reported_and_a_protected_database_is_kept() {
    let env = Env::new();
    env.write("team/a/values.yaml", &values(&["a"]));
    env.write(
        "team/b/values.yaml",
        "postgresqlDatabases:\n  - name: b\n    mode: protected\n",
    );
    env.write("team/pair/values.yaml", &values(&["c", "d"]));
    env.write("shop/cart/values.yaml", &values(&["cart"]));
    let serve = Serve::start(&env, &["--poll-interval", "1h", "--drift-interval", "1h"]);
    let all = ["team/a", "team/b", "team/c", "team/d", "shop/cart"];
    within("every tenant in sync", BOUND * 2, || {
        all.iter()
            .all(|t| serve.state_of(t).as_deref() == Some("in-sync"))
    })
    .await;

    // The shop namespace's last database, a single drop: held, a namespace is not emptied.
    env.remove("shop/cart/values.yaml");
    within("the namespace removal held", BOUND, || {
        serve.state_of("shop/cart").as_deref() == Some("held")
    })
    .await;

    // One file declaring two databases removed: more than one drop in a run, all held.
    env.remove("team/pair/values.yaml");
    within("both drops held", BOUND, || {
        ["team/c", "team/d"]
            .iter()
            .all(|t| serve.state_of(t).as_deref() == Some("held"))
    })
    .await;
    let c = serve.tenant("team/c").unwrap();
    assert!(
        c["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{c}"
    );
    assert!(metric_sum(&serve, "pgtenant_held_drops") >= 1.0);
    let (_, page) = serve.get("/");
    assert!(page.contains("drop held"), "{page}");

    // The protected tenant's file removed: kept as an orphan, gone from the API.
    env.remove("team/b/values.yaml");
    within("the protected tenant left the API", BOUND, || {
        serve.tenant("team/b").is_none()
    })
    .await;

    for database in ["team-b", "team-c", "team-d", "shop-cart"] {
        assert!(
            env.database_exists(database).await,
            "{database} was dropped:\n{}",
            serve.log()
        );
    }
    assert_eq!(serve.state_of("team/a").as_deref(), Some("in-sync"));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn commit_and_push(work: &Path, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    git(work, &["push", "-q", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}

/// A bare repository `dir/…/apps.git` and its clone `dir/work`, on branch main.
fn bare_and_clone(dir: &Path, bare: &Path) -> PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(bare).unwrap();
    git(bare, &["init", "-q", "--bare"]);
    git(dir, &["clone", "-q", bare.to_str().unwrap(), "work"]);
    git(&work, &["checkout", "-q", "-b", "main"]);
    work
}

/// Declares `team/NAME` in the clone `work`, commits and pushes it: the commit.
fn push_tenant(work: &Path, name: &str) -> String {
    std::fs::create_dir_all(work.join("team").join(name)).unwrap();
    std::fs::write(
        work.join("team").join(name).join("values.yaml"),
        STANDARD.replace("NAME", name),
    )
    .unwrap();
    commit_and_push(work, name)
}

/// Whether `tenant` is in sync at commit `sha`.
fn applied_at(serve: &Serve, tenant: &str, sha: &str) -> bool {
    serve
        .tenant(tenant)
        .is_some_and(|t| t["state"] == "in-sync" && t["last_applied_revision"] == sha)
}

#[tokio::test]
async fn a_git_remote_is_served_from_the_fetched_commit_with_its_sha() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("apps.git");
    let work = bare_and_clone(dir.path(), &bare);
    let first = push_tenant(&work, "a");

    let remote = format!("file://{}", bare.display());
    let serve = Serve::start(
        &env,
        &[&remote, "--poll-interval", "1s", "--drift-interval", "1h"],
    );
    within("the first commit applied", BOUND * 2, || {
        applied_at(&serve, "team/a", &first)
    })
    .await;
    assert_eq!(serve.tenants()["revision"], first.as_str());
    let parsed = metric_sum(&serve, "pgtenant_source_files_parsed_total");
    assert_eq!(parsed, 1.0, "the first commit's one values file");

    // A push: the new commit is fetched and applied, its SHA recorded.
    let second = push_tenant(&work, "b");
    within("the second commit applied", BOUND, || {
        applied_at(&serve, "team/b", &second)
    })
    .await;
    assert_eq!(serve.tenants()["revision"], second.as_str());
    assert!(env.database_exists("team-b").await);
    // Only the blob the commit added is parsed: team/a's is the same blob as before.
    assert_eq!(
        metric_sum(&serve, "pgtenant_source_files_parsed_total") - parsed,
        1.0,
        "{}",
        serve.log()
    );

    // The remote unreachable: reported, nothing dropped.
    std::fs::rename(&bare, dir.path().join("gone.git")).unwrap();
    within("the fetch error reported", BOUND, || {
        serve.get("/readyz").1.contains("source unreadable")
    })
    .await;
    assert!(env.database_exists("team-a").await && env.database_exists("team-b").await);
    assert_eq!(serve.tenants()["revision"], second.as_str());
}

/// `POST /api/v1/hooks/git` as GitHub and GitLab send it: `X-Hub-Signature-256`, the HMAC of
/// the body with the shared secret, or `X-Gitlab-Token`, the secret itself.
fn send_webhook(serve: &Serve, secret: &str, github: bool) -> u16 {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let signature = format!(
        "sha256={}",
        pgtenant_scram::hmac_sha256(secret.as_bytes(), body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let header = if github {
        ("X-Hub-Signature-256", signature.as_str())
    } else {
        ("X-Gitlab-Token", secret)
    };
    let address = serve.address.parse().unwrap();
    support::request(
        address,
        "POST",
        "/api/v1/hooks/git",
        &[header, ("Content-Type", "application/json")],
        body,
    )
    .status
}

/// With polling out of the way (1 h), only the signed webhook can make the service fetch: a
/// commit that changes one tenant's file and one that removes another's are each applied at
/// their own SHA, and the change-to-applied latency is recorded for the git source.
#[tokio::test]
async fn a_signed_webhook_fetches_at_once_and_a_change_and_a_removal_are_applied_at_their_commit() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("apps.git");
    let work = bare_and_clone(dir.path(), &bare);
    push_tenant(&work, "a");
    let first = push_tenant(&work, "b");
    let secret = "webhook-secret-of-the-test";
    let secret_file = dir.path().join("webhook");
    std::fs::write(&secret_file, secret).unwrap();

    let remote = format!("file://{}", bare.display());
    let serve = Serve::start(
        &env,
        &[
            &remote,
            "--poll-interval",
            "1h",
            "--drift-interval",
            "1h",
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    within("the first commit applied", BOUND * 2, || {
        applied_at(&serve, "team/a", &first) && applied_at(&serve, "team/b", &first)
    })
    .await;

    // Changed: team/a declares a schema. GitHub's signature.
    std::fs::write(
        work.join("team/a/values.yaml"),
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    mode: standard\n    schemas: [billing]\n",
    )
    .unwrap();
    let changed = commit_and_push(&work, "a declares billing");
    assert_eq!(send_webhook(&serve, "not-the-secret", true), 403);
    assert_eq!(send_webhook(&serve, secret, true), 202);
    within("the change applied at its commit", BOUND, || {
        applied_at(&serve, "team/a", &changed)
    })
    .await;
    schema_appears(&env, &serve, "team-a", "billing").await;

    // Removed: team/b's file deleted. GitLab's token.
    std::fs::remove_dir_all(work.join("team/b")).unwrap();
    let removed = commit_and_push(&work, "b removed");
    assert_eq!(send_webhook(&serve, secret, false), 202);
    within("the removal applied at its commit", BOUND, || {
        serve.tenants()["revision"] == removed.as_str() && serve.tenant("team/b").is_none()
    })
    .await;
    database_dropped(&env, &serve, "team-b").await;
    assert_eq!(serve.state_of("team/a").as_deref(), Some("in-sync"));
    let (_, metrics) = serve.get("/metrics");
    let latencies = metrics
        .lines()
        .find(|line| {
            line.starts_with("pgtenant_change_to_applied_seconds_count")
                && line.contains("source=\"git\"")
        })
        .and_then(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(
        latencies >= 2.0,
        "change-to-applied recorded per commit:\n{metrics}"
    );
}

/// A new tenant's statements and the read-back after them share one session in its database:
/// the read-back does not open another (pg_stat_database counts every session, flushed when it
/// ends).
#[tokio::test]
async fn a_new_tenant_is_applied_and_read_back_on_one_session_in_its_database() {
    let env = Env::new();
    env.write("team/app/values.yaml", &STANDARD.replace("NAME", "app"));
    let serve = Serve::start(&env, &["--poll-interval", "1h", "--drift-interval", "1h"]);
    within("the first tenant in sync", BOUND * 2, || {
        serve.state_of("team/app").as_deref() == Some("in-sync")
    })
    .await;
    env.write("team/new/values.yaml", &STANDARD.replace("NAME", "new"));
    within("the new tenant in sync", BOUND, || {
        serve.state_of("team/new").as_deref() == Some("in-sync")
    })
    .await;
    let superuser = env.superuser(None).await;
    let started = Instant::now();
    // The reconcile's sessions end with it; a session's counters are flushed before it leaves
    // pg_stat_activity.
    loop {
        let open: i64 = superuser
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'team-new'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(started.elapsed() < BOUND, "sessions left in team-new");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sessions: i64 = superuser
        .query_one(
            "SELECT sessions FROM pg_stat_database WHERE datname = 'team-new'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 1, "sessions opened in team-new:\n{}", serve.log());
}

/// A CA (its PEM file in `dir`) and the certificate and key (PEM) it signed for 127.0.0.1.
fn ca_and_server_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let server = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, server.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `git http-backend` behind TLS (tests/fixtures/git_https_server.py), serving the bare
/// repositories of a folder to `user:token`; killed when dropped.
struct GitHttpsServer {
    child: Child,
    port: u16,
}

impl GitHttpsServer {
    fn start(dir: &Path, root: &Path, certificate: &Path, key: &Path, credentials: &str) -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/git_https_server.py");
        let port_file = dir.join("git-https.port");
        let child = Command::new("python3")
            .arg(script)
            .args([&port_file, certificate, key, root])
            .arg(credentials)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("git-https.log")).unwrap())
            .spawn()
            .expect("python3 runs the HTTPS git server");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "the HTTPS git server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        GitHttpsServer { child, port }
    }
}

impl Drop for GitHttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_https_git_remote_with_a_token_in_its_url_is_fetched_and_applied() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos");
    let work = bare_and_clone(dir.path(), &repos.join("apps.git"));
    let first = push_tenant(&work, "a");

    let (ca, certificate, key) = ca_and_server_certificate(dir.path());
    const TOKEN: &str = "glpat-s3cr3t-t0ken";
    let server = GitHttpsServer::start(
        dir.path(),
        &repos,
        &certificate,
        &key,
        &format!("pgtenant:{TOKEN}"),
    );
    let config = dir.path().join("pgtenant.yaml");
    std::fs::write(
        &config,
        format!(
            "serve:\n  git:\n    remote: https://pgtenant:{TOKEN}@127.0.0.1:{}/apps.git\n    caFile: {}\n",
            server.port,
            ca.display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let serve = Serve::start(
        &env,
        &[
            "--config",
            &config,
            "--poll-interval",
            "1s",
            "--drift-interval",
            "1h",
        ],
    );
    within("the first commit applied over HTTPS", BOUND * 2, || {
        applied_at(&serve, "team/a", &first)
    })
    .await;

    // A push: fetched over HTTPS and applied.
    let second = push_tenant(&work, "b");
    within("the pushed commit applied", BOUND, || {
        applied_at(&serve, "team/b", &second)
    })
    .await;
    assert!(env.database_exists("team-b").await);

    // The server gone: reported, the last good state kept.
    drop(server);
    within("the fetch error reported", BOUND, || {
        serve.get("/readyz").1.contains("source unreadable")
    })
    .await;
    assert!(env.database_exists("team-a").await && env.database_exists("team-b").await);
    assert_eq!(serve.tenants()["revision"], second.as_str());
    assert!(serve.tenant("team/a").is_some() && serve.tenant("team/b").is_some());

    // The token is never shown.
    let shown = [
        serve.get("/").1,
        serve.get("/readyz").1,
        serve.get("/api/v1/tenants").1,
        serve.get("/metrics").1,
        serve.log(),
    ];
    for text in shown {
        assert!(!text.contains(TOKEN), "the token was shown:\n{text}");
    }
}

#[tokio::test]
async fn the_standby_takes_over_within_five_seconds_when_the_active_one_is_killed() {
    let env = Env::new();
    env.write("team/a/values.yaml", &STANDARD.replace("NAME", "a"));
    let args = ["--poll-interval", "1h", "--drift-interval", "1h"];
    let mut first = Serve::start(&env, &args);
    within("the first instance active", BOUND * 2, || {
        first.readiness()["leader"] == "active"
    })
    .await;
    let second = Serve::start(&env, &args);
    within("the second instance standing by", BOUND, || {
        second.readiness()["leader"] == "standby"
    })
    .await;
    assert_eq!(second.get("/readyz").0, 503, "a standby is not ready");

    first.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(first.wait(Duration::from_secs(5)).is_some());
    let took = within("the standby active", Duration::from_secs(5), || {
        second.readiness()["leader"] == "active"
    })
    .await;
    eprintln!("standby took over in {took:?}");
    // And it reconciles: a new file is applied by it.
    env.write("team/b/values.yaml", &STANDARD.replace("NAME", "b"));
    within("the new leader applies changes", BOUND, || {
        second.state_of("team/b").as_deref() == Some("in-sync")
    })
    .await;
}

#[tokio::test]
async fn sigterm_exits_zero_within_ten_seconds_and_leaves_no_tenant_half_applied() {
    let env = Env::new();
    let names: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    for name in &names {
        env.write(
            &format!("team/{name}/values.yaml"),
            &STANDARD.replace("NAME", name),
        );
    }
    let mut serve = Serve::start(&env, &["--poll-interval", "1h", "--drift-interval", "1h"]);
    // As soon as the first database exists, the batch is in flight.
    poll_until("the first database created", || async {
        env.database_exists("team-t0").await
            || env.database_exists("team-t1").await
            || env.database_exists("team-t7").await
    })
    .await;
    serve.signal(nix::sys::signal::Signal::SIGTERM);
    let code = serve.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit within 10 s, code 0:\n{}", serve.log());
    env.wait_until_advisory_locks_are_released().await;

    // Every tenant is either complete or not started: none is found drifted.
    let check = env.run(&["check", "--format", "json"]);
    let report = check.json();
    for tenant in report["tenants"].as_array().unwrap() {
        let status = tenant["status"].as_str().unwrap();
        assert!(
            status == "in-sync" || status == "missing",
            "{} is half-applied ({status}):\n{}",
            tenant["tenant"],
            check.stdout
        );
    }
}

#[tokio::test]
async fn sighup_reloads_the_drift_interval_and_keeps_the_running_config_when_broken() {
    let env = Env::new();
    env.write("team/a/values.yaml", &STANDARD.replace("NAME", "a"));
    let config = env.state_path().join("pgtenant.yaml");
    std::fs::write(&config, "serve: {driftInterval: 1h}\n").unwrap();
    let serve = Serve::start(&env, &["--poll-interval", "1h"]);
    within("the tenant in sync", BOUND * 2, || {
        serve.state_of("team/a").as_deref() == Some("in-sync")
    })
    .await;

    std::fs::write(&config, "serve: {driftInterval: soon}\n").unwrap();
    serve.signal(nix::sys::signal::Signal::SIGHUP);
    within("the broken config refused", BOUND, || {
        serve.log().contains("reloading the configuration failed")
    })
    .await;
    std::fs::write(&config, "serve: {driftInterval: 2s}\n").unwrap();
    serve.signal(nix::sys::signal::Signal::SIGHUP);
    within("the config reloaded", BOUND, || {
        serve.log().contains("configuration reloaded")
    })
    .await;

    // The new interval is the one in force: drift is repaired within it, not within an hour.
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(r#"ALTER ROLE "team-a-read" CREATEDB"#)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let createdb: bool = superuser
            .query_one(
                "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'team-a-read'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if !createdb {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2 + 1 + 10),
            "the reloaded drift interval is not in force:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the embedded cluster even when an assertion fails midway.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(assert_cmd::cargo::cargo_bin("pgtenant"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PGTENANT_STATE_DIR", &self.0)
            .arg("down")
            .output();
    }
}

#[tokio::test]
async fn with_no_config_and_a_directory_it_serves_the_embedded_cluster() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // As root the server runs as an unprivileged user, which must be able to enter the state dir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("team/a")).unwrap();
    std::fs::write(
        repo.join("team/a/values.yaml"),
        STANDARD.replace("NAME", "a"),
    )
    .unwrap();
    let _stop = StopOnDrop(state.clone());
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("pgtenant"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGTENANT_STATE_DIR", &state)
        .current_dir(dir.path());
    let serve = Serve::spawn(command, &[repo.to_str().unwrap(), "--drift-interval", "1h"]);
    within(
        "the tenant in sync on the embedded cluster",
        BOUND * 3,
        || serve.state_of("team/a").as_deref() == Some("in-sync"),
    )
    .await;
    assert!(
        state.join("cluster").is_dir(),
        "the embedded cluster was created"
    );
    let (status, page) = serve.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("team/a"), "{page}");
}

/// The newest physical backup `pgtenant backup list` shows (pgBackRest's info): its kind and
/// end, and how many there are.
fn physical_backups(env: &backup_env::BackupEnv) -> (usize, String, String) {
    let listing = env.ok(&["backup", "list", "--format", "json"]).json();
    let physical = listing["physical"].as_array().unwrap().clone();
    let newest = physical
        .iter()
        .max_by_key(|b| b["finished"].as_str().unwrap().to_string())
        .unwrap();
    (
        physical.len(),
        newest["type"].as_str().unwrap().to_string(),
        newest["finished"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_missed_scheduled_backup_and_a_due_rotation_run_for_real_at_start() {
    let env = backup_env::BackupEnv::new();
    env.declare("team", "app");
    env.ok(&["apply"]);
    // A first backup by hand (it turns WAL archiving on, restarting the embedded cluster).
    env.ok(&["backup", "run", "--type", "full"]);
    let (count, _, first) = physical_backups(&env);
    assert_eq!(count, 1);
    let old_uri = env.uri("team/app", "write");

    // As if serve had been stopped for two days: its last scheduled run, and the write login's
    // last rotation, long ago. The daily 00:00 diff was missed; the 1-day rotation is due.
    let serve_state = env.state.path().join("serve");
    std::fs::create_dir_all(&serve_state).unwrap();
    let two_days_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 2 * 86_400;
    std::fs::write(
        serve_state.join("schedule.json"),
        format!("{{\"default\": {two_days_ago}}}"),
    )
    .unwrap();
    std::fs::write(
        serve_state.join("rotations.json"),
        format!("{{\"team/app/write\": {two_days_ago}}}"),
    )
    .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("pgtenant.yaml");
    std::fs::write(
        &config,
        "backups: {diff: \"0 0 * * *\"}\nserve: {rotateEvery: 1d}\n",
    )
    .unwrap();
    let repo = env.repo.path().display().to_string();
    let config_arg = config.display().to_string();
    let mut command = env.command();
    command.env("PGTENANT_LOG", "info");
    let serve = Serve::spawn(
        command,
        &[
            &repo,
            "--config",
            &config_arg,
            "--poll-interval",
            "1s",
            "--drift-interval",
            "1h",
        ],
    );

    // The missed diff runs once: pgBackRest lists it, the API shows it as the tenant's last
    // backup (its database was there when it started).
    within("the caught-up backup in the API", BOUND * 4, || {
        serve
            .tenant("team/app")
            .and_then(|t| t["last_backup_at"].as_str().map(str::to_string))
            .is_some_and(|at| at > first)
    })
    .await;
    let (count, kind, newest) = physical_backups(&env);
    assert_eq!((count, kind.as_str()), (2, "diff"), "{}", serve.log());
    assert_eq!(
        serve.tenant("team/app").unwrap()["last_backup_at"],
        newest.as_str()
    );
    let cluster = &serve.json("/api/v1/tenants")["tenants"][0]["cluster"];
    assert_eq!(cluster, "default");
    let recorded = std::fs::read_to_string(serve_state.join("schedule.json")).unwrap();
    assert!(!recorded.contains(&two_days_ago.to_string()), "{recorded}");

    // The due rotation: new credentials in the store, and both the new and the old ones log
    // in during the grace period.
    let new_uri = {
        let started = Instant::now();
        loop {
            // While the rotation is in flight the store refuses to hand out credentials.
            let out = env.run(&[
                "credentials",
                "team/app",
                "--role",
                "write",
                "--format",
                "json",
            ]);
            let uri = (out.code == 0).then(|| out.json()["uri"].as_str().unwrap().to_string());
            if let Some(uri) = uri.filter(|uri| *uri != old_uri) {
                break uri;
            }
            assert!(
                started.elapsed() < BOUND * 2,
                "the due rotation did not run:\n{}",
                serve.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    common::connect(&new_uri, None)
        .await
        .expect("the rotated credentials log in");
    common::connect(&old_uri, None)
        .await
        .expect("the previous credentials still log in during the grace period");
}

/// `tenant`'s `role` through the embedded cluster's pooler: its stored credentials, the port
/// `status` shows, the cluster's CA.
fn pooled_url(p: &common::WithPooler, tenant: &str, role: &str) -> String {
    let credential = p.env.credentials(tenant, role);
    let port = p.ok(&["status", "--format", "json"]).json()["pooler"]["port"]
        .as_u64()
        .expect("the pooler's port");
    format!(
        "postgresql://{}:{}@127.0.0.1:{port}/{}?sslmode=verify-full&sslrootcert={}",
        credential["username"].as_str().unwrap(),
        credential["password"].as_str().unwrap(),
        credential["dbname"].as_str().unwrap(),
        p.env.cluster.cluster.ca_cert_path().display()
    )
}

/// A change syncs the pooler for the changed tenant alone: its new logins work through pgbouncer
/// at once, every other tenant's login stays in the auth file, and the verifiers the apply has
/// just set are recorded, not set a second time.
#[tokio::test]
async fn a_change_syncs_the_pooler_for_its_tenant_without_setting_its_passwords_twice() {
    let Some(p) = common::WithPooler::new() else {
        return;
    };
    p.env
        .write("team/a/values.yaml", &STANDARD.replace("NAME", "a"));
    p.ok(&["up"]);
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("pgtenant"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGTENANT_STATE_DIR", p.env.state_path())
        .current_dir(p.env.repo_path());
    let serve = Serve::spawn(
        command,
        &["--poll-interval", "1h", "--drift-interval", "1h"],
    );
    within("team/a in sync", BOUND * 2, || {
        serve.state_of("team/a").as_deref() == Some("in-sync")
    })
    .await;
    let a = pooled_url(&p, "team/a", "write");
    common::connect(&a, None)
        .await
        .expect("team/a through the pooler");

    p.env
        .write("team/b/values.yaml", &STANDARD.replace("NAME", "b"));
    within("team/b in sync", BOUND, || {
        serve.state_of("team/b").as_deref() == Some("in-sync")
    })
    .await;
    common::connect(&pooled_url(&p, "team/b", "write"), None)
        .await
        .unwrap_or_else(|e| panic!("team/b through the pooler at once: {e}\n{}", serve.log()));
    common::connect(&a, None).await.unwrap_or_else(|e| {
        panic!(
            "team/a's login left the pooler after a sync scoped to team/b: {e}\n{}",
            serve.log()
        )
    });

    let log = serve.log();
    let synced: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("pooler updated") && line.contains("team-b-"))
        .collect();
    assert!(!synced.is_empty(), "no pooler sync for team/b:\n{log}");
    for line in synced {
        for (at, _) in line.match_indices("verifier of team-b-") {
            let change = line[at..].split('"').next().unwrap();
            assert!(
                change.ends_with("(set by the apply)"),
                "the sync set a verifier the apply had just set: {change}\n{log}"
            );
        }
    }
}
