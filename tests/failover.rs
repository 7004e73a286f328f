//! Surviving a Patroni failover (issue 15 item 4), against a real 3-node Patroni + etcd cluster
//! started by deploy/ha/ha-dev.py: the primary is killed -9 (Patroni and postmaster) while `apply`
//! provisions 50 tenants; the run rediscovers the new primary, plans again from its catalog and
//! converges. Needs Debian's `patroni`, `python3-etcd` and `etcd-server`: without them the test
//! fails unless PGTENANT_TEST_ALLOW_SKIP=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Output;
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ha/ha-dev.py");

/// A Patroni cluster for one test, stopped and deleted when dropped.
struct Ha {
    dir: PathBuf,
    description: Value,
    admin_url: String,
}

impl Ha {
    fn up(dir: &Path) -> Ha {
        let out = Output::of(
            Command::new("python3")
                .args([SCRIPT, "up"])
                .arg(dir)
                .args(["--nodes", "3"])
                .output()
                .unwrap(),
        );
        assert_eq!(out.code, 0, "ha-dev up failed:\n{}", out.stderr);
        let cluster: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap())
                .unwrap();
        // Dead members refuse at once on loopback; a member that hangs is given up on quickly.
        let admin_url = format!(
            "{}&connect_timeout=2",
            cluster["admin_url"].as_str().unwrap()
        );
        Ha {
            dir: dir.to_path_buf(),
            description: cluster,
            admin_url,
        }
    }

    fn run(&self, command: &str) -> Output {
        Output::of(
            Command::new("python3")
                .args([SCRIPT, command])
                .arg(&self.dir)
                .output()
                .unwrap(),
        )
    }

    fn patroni_urls(&self) -> Vec<String> {
        self.description["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["patroni"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .args([SCRIPT, "down"])
            .arg(&self.dir)
            .arg("--remove")
            .output();
    }
}

fn ha_tools_missing() -> Option<String> {
    let missing: Vec<&str> = ["patroni", "etcd", "openssl", "python3"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (apt-get install patroni python3-etcd etcd-server)",
            missing.join(", ")
        )
    })
}

fn pgtenant(state: &Path, repo: &Path, admin_url: &str) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pgtenant"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGTENANT_STATE_DIR", state)
        .env("HA_ADMIN_URL", admin_url)
        .current_dir(repo);
    cmd
}

async fn tenant_databases(admin_url: &str) -> Option<i64> {
    let client = common::connect(admin_url, None).await.ok()?;
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'fo_-db%'",
            &[],
        )
        .await
        .ok()?;
    Some(row.get(0))
}

#[test]
fn apply_survives_a_patroni_failover_and_converges_on_the_new_primary() {
    if let Some(reason) = ha_tools_missing() {
        pgtenant_cluster::skip_or_fail(&reason);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The servers run as an unprivileged account, which must reach the cluster's directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ha = Ha::up(&dir.path().join("ha"));
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let patroni = ha
        .patroni_urls()
        .iter()
        .map(|url| format!("\"{url}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        state.path().join("pgtenant.yaml"),
        format!(
            "clusters:\n  - name: ha\n    adminUrl: env:HA_ADMIN_URL\n    patroni: [{patroni}]\n    failoverTimeout: 60s\n"
        ),
    )
    .unwrap();
    for namespace in 0..5 {
        let mut yaml = String::from("postgresqlDatabases:\n");
        for db in 0..10 {
            yaml.push_str(&format!("  - name: db{db}\n    mode: standard\n"));
        }
        let path = repo.path().join(format!("fo{namespace}/apps/values.yaml"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, yaml).unwrap();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let child = pgtenant(state.path(), repo.path(), &ha.admin_url)
        .args(["apply", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the primary once the run is well under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while runtime
        .block_on(tenant_databases(&ha.admin_url))
        .unwrap_or(0)
        < 10
    {
        assert!(Instant::now() < deadline, "apply created no databases");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = ha.run("kill-primary");
    assert_eq!(killed.code, 0, "kill-primary failed: {}", killed.stderr);
    let killed_at = Instant::now();
    let out = Output::of(child.wait_with_output().unwrap());
    let kill_to_converged = killed_at.elapsed();
    eprintln!(
        "killed {}; kill → converged: {} ms",
        killed.stdout.trim(),
        kill_to_converged.as_millis()
    );
    assert_eq!(
        out.code, 0,
        "apply did not survive the failover:\n{}\n{}",
        out.stdout, out.stderr
    );
    let report = out.json();
    assert_eq!(report["ok"], true, "{report:#}");
    let failovers = report["failovers"].as_array().expect("failovers");
    assert!(
        !failovers.is_empty(),
        "the run reports no failover: {report:#}"
    );
    let failover = &failovers[0];
    assert_ne!(failover["from"], failover["to"], "{failover:#}");
    eprintln!("failover reported: {failover}");

    // Every declared tenant exists once on the new primary, and nothing is left to do.
    assert_eq!(
        runtime.block_on(tenant_databases(&ha.admin_url)),
        Some(50),
        "databases on the new primary"
    );
    let plan = Output::of(
        pgtenant(state.path(), repo.path(), &ha.admin_url)
            .args(["plan", "--format", "json"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        plan.code, 0,
        "not converged:\n{}\n{}",
        plan.stdout, plan.stderr
    );

    // Every login works with the credentials the store holds, through the multi-host URI.
    let out_dir = state.path().join("exported");
    let export = Output::of(
        pgtenant(state.path(), repo.path(), &ha.admin_url)
            .args(["export", "--format", "json", "--out"])
            .arg(&out_dir)
            .output()
            .unwrap(),
    );
    assert_eq!(export.code, 0, "export failed: {}", export.stderr);
    let mut logins = 0;
    for entry in std::fs::read_dir(&out_dir).unwrap() {
        let credential: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        let uri = credential["uri"].as_str().unwrap();
        assert!(uri.contains("target_session_attrs=read-write"), "{uri}");
        let session = runtime.block_on(common::connect(uri, None));
        let client =
            session.unwrap_or_else(|e| panic!("{} cannot log in: {e}", credential["username"]));
        let writes: bool = runtime
            .block_on(client.query_one("SELECT NOT pg_is_in_recovery()", &[]))
            .unwrap()
            .get(0);
        assert!(writes, "{} reached a standby", credential["username"]);
        logins += 1;
    }
    assert!(logins >= 50, "only {logins} credentials exported");
}
