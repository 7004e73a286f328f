//! `pgtenant move` between two real clusters of a fleet (docs/fleet.md "Moving a tenant"): the
//! data and the credentials (same username and password) go to the target, the source refuses
//! logins and is kept as a protected orphan; a failure after the copy leaves the source serving;
//! `--abort` puts a moved tenant back on the source.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::{connect, Env, Output};
use serde_json::Value;
use tempfile::TempDir;

struct Fleet {
    clusters: Vec<Env>,
    dir: TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        let clusters: Vec<Env> = (0..2).map(|_| Env::new()).collect();
        let dir = TempDir::new().unwrap();
        let mut config = format!("repo: {}\nclusters:\n", clusters[0].repo_path().display());
        for (env, name) in clusters.iter().zip(["a", "b"]) {
            let url = dir.path().join(format!("{name}-url"));
            std::fs::write(&url, format!("{}\n", env.admin_url())).unwrap();
            std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o600)).unwrap();
            config.push_str(&format!(
                "  - name: {name}\n    adminUrl: file:{}\n",
                url.display()
            ));
        }
        std::fs::write(dir.path().join("pgtenant.yaml"), config).unwrap();
        Fleet { clusters, dir }
    }

    fn command(&self, env: &[(&str, &str)], args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("pgtenant"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PGTENANT_STATE_DIR", self.clusters[0].state_path())
            .env("PGTENANT_CONFIG", self.dir.path().join("pgtenant.yaml"))
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .args(args);
        cmd
    }

    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        Output::of(self.command(env, args).output().unwrap())
    }

    /// The comment (pgtenant's marker) of database team-app on cluster `index`.
    fn marker_of_team_app(&self, index: usize, rt: &tokio::runtime::Runtime) -> String {
        rt.block_on(async {
            self.clusters[index]
                .superuser(None)
                .await
                .query_one(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'team-app'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
                .unwrap()
        })
    }

    /// The dump files in the fleet's state directory (each holds a tenant's data).
    fn dumps(&self) -> Vec<String> {
        std::fs::read_dir(self.clusters[0].state_path().join("fleet"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".dump"))
            .collect()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(&[], args)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{args:?}:\n{}\n{}", out.stdout, out.stderr);
        out
    }

    /// The stored credentials of a tenant's login (read through one cluster's context: the
    /// store is the fleet's one store).
    fn credentials(&self, tenant: &str, role: &str) -> Value {
        self.ok(&[
            "--cluster",
            "a",
            "credentials",
            tenant,
            "--role",
            role,
            "--format",
            "json",
        ])
        .json()
    }

    /// The cluster the fleet plan places `tenant` on, and the plan's exit code.
    fn placed_on(&self, tenant: &str) -> (String, i32) {
        let plan = self.run(&["plan", "--format", "json"]);
        let json = plan.json();
        let entry = json["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == tenant)
            .unwrap_or_else(|| panic!("{tenant} not in {json:#}"))
            .clone();
        assert_eq!(entry["state"], "existing", "{json:#}\n{}", plan.stderr);
        (entry["cluster"].as_str().unwrap().to_owned(), plan.code)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn count(uri: &str, table: &str) -> Result<i64, String> {
    let client = connect(uri, None).await?;
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| e.to_string())
}

const V1: &str = "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n";

#[test]
fn a_moved_tenant_keeps_its_data_and_credentials_a_failed_move_leaves_the_source_and_abort_rolls_back(
) {
    let fleet = Fleet::new();
    let rt = rt();
    // Both clusters are empty: `app` goes to a (config order), then `two` to b (headroom).
    fleet.clusters[0].write("team/app/values.yaml", &format!("{V1}  - name: app\n"));
    fleet.ok(&["apply"]);
    fleet.clusters[0].write(
        "team/app/values.yaml",
        &format!("{V1}  - name: app\n  - name: two\n"),
    );
    fleet.ok(&["apply"]);
    assert_eq!(fleet.placed_on("team/app"), ("a".into(), 0));
    assert_eq!(fleet.placed_on("team/two").0, "b");
    let before = fleet.credentials("team/app", "admin");
    let uri_a = before["uri"].as_str().unwrap().to_owned();
    rt.block_on(async {
        let admin = connect(&uri_a, None).await.unwrap();
        admin
            .batch_execute(
                "CREATE TABLE items (id bigserial PRIMARY KEY, name text);
                 INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 250) g;
                 CREATE SCHEMA reporting; CREATE TABLE reporting.daily (day date, total int);
                 INSERT INTO reporting.daily VALUES (current_date, 7);",
            )
            .await
            .unwrap();
    });

    // --online is refused, naming what is supported; without --yes the steps and exit 2.
    let online = fleet.run(&["move", "team/app", "--to", "b", "--online", "--yes"]);
    assert_eq!(online.code, 1, "{}", online.stderr);
    assert!(online.stderr.contains("pg_dump"), "{}", online.stderr);
    let dry = fleet.run(&["move", "team/app", "--to", "b"]);
    assert_eq!(dry.code, 2, "{}\n{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("stop-writes") && dry.stdout.contains("pg_dump -Fc"),
        "{}",
        dry.stdout
    );
    assert_eq!(fleet.placed_on("team/app").0, "a", "nothing moved");

    // The move.
    let moved = fleet.run(&["move", "team/app", "--to", "b", "--yes", "--format", "json"]);
    assert_eq!(moved.code, 0, "{}\n{}", moved.stdout, moved.stderr);
    let json = moved.json();
    assert_eq!(json["moved"], true, "{json:#}");
    // The dump held the tenant's data: it is gone, and the directory it was in is private.
    let fleet_dir = fleet.clusters[0].state_path().join("fleet");
    assert_eq!(
        fleet.dumps(),
        Vec::<String>::new(),
        "dump files left behind"
    );
    let mode = std::fs::metadata(&fleet_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", fleet_dir.display());
    assert!(
        moved.stderr.contains("move team/app: verify"),
        "{}",
        moved.stderr
    );
    let after = fleet.credentials("team/app", "admin");
    assert_eq!(after["username"], before["username"]);
    assert_eq!(after["password"], before["password"]);
    assert_ne!(
        after["port"], before["port"],
        "the endpoint is b's: {after:#}"
    );
    let uri_b = after["uri"].as_str().unwrap().to_owned();
    rt.block_on(async {
        assert_eq!(count(&uri_b, "items").await, Ok(250));
        assert_eq!(count(&uri_b, "reporting.daily").await, Ok(1));
        // The admin can still write there (grants re-applied on the target).
        let admin = connect(&uri_b, None).await.unwrap();
        admin
            .batch_execute("INSERT INTO items (name) VALUES ('after the move')")
            .await
            .unwrap();
        // The source refuses the login.
        let refused = connect(&uri_a, None).await;
        assert!(refused.is_err(), "the source still lets the admin in");
    });
    let read = fleet.credentials("team/app", "read");
    rt.block_on(async {
        assert_eq!(count(read["uri"].as_str().unwrap(), "items").await, Ok(251));
    });
    // The fleet sees it on b only; the copy on a is a protected orphan that no plan drops.
    let apply = fleet.ok(&["apply"]);
    assert!(!apply.stdout.contains("DROP"), "{}", apply.stdout);
    assert_eq!(fleet.placed_on("team/app"), ("b".into(), 0));
    let kept = fleet.marker_of_team_app(0, &rt);
    assert!(
        kept.contains(r#""mode":"protected""#) && kept.contains(r#""moved_to":"b""#),
        "{kept}"
    );

    // A failure after the copy (injected after `verify`): the source stays authoritative.
    let uri_two = fleet.credentials("team/two", "admin")["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    rt.block_on(async {
        let admin = connect(&uri_two, None).await.unwrap();
        admin
            .batch_execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g")
            .await
            .unwrap();
    });
    let failed = fleet.run_with(
        &[("PGTENANT_TEST_MOVE_FAIL_AFTER", "record-placement")],
        &["move", "team/two", "--to", "a", "--yes"],
    );
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        failed.stderr.contains("failed at step record-placement"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        fleet.credentials("team/two", "admin")["uri"].as_str(),
        Some(uri_two.as_str()),
        "the stored endpoint still names the source"
    );
    rt.block_on(async {
        assert_eq!(count(&uri_two, "t").await, Ok(10), "the source serves");
    });
    fleet.ok(&["apply"]);
    assert_eq!(fleet.placed_on("team/two"), ("b".into(), 0));

    // --abort after the completed move: back on a with working credentials.
    let abort = fleet.run(&["move", "team/app", "--abort"]);
    assert_eq!(abort.code, 0, "{}\n{}", abort.stdout, abort.stderr);
    let back = fleet.credentials("team/app", "admin");
    assert_eq!(back["password"], before["password"]);
    assert_eq!(back["uri"].as_str(), Some(uri_a.as_str()));
    rt.block_on(async {
        assert_eq!(count(&uri_a, "items").await, Ok(250));
        assert!(
            connect(&uri_b, None).await.is_err(),
            "the target's copy stopped"
        );
    });
    fleet.ok(&["apply"]);
    assert_eq!(fleet.placed_on("team/app"), ("a".into(), 0));
    let again = fleet.run(&["move", "team/app", "--abort"]);
    assert_eq!(again.code, 1, "an aborted move cannot be aborted twice");
}

#[test]
fn a_move_killed_half_way_is_refused_until_aborted_and_abort_puts_the_source_back() {
    let fleet = Fleet::new();
    let rt = rt();
    fleet.clusters[0].write("team/app/values.yaml", &format!("{V1}  - name: app\n"));
    fleet.ok(&["apply"]);
    assert_eq!(fleet.placed_on("team/app"), ("a".into(), 0));
    let before = fleet.credentials("team/app", "admin");
    let uri = before["uri"].as_str().unwrap().to_owned();
    rt.block_on(async {
        let admin = connect(&uri, None).await.unwrap();
        admin
            .batch_execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 5) g")
            .await
            .unwrap();
    });

    // The move stops after its dump and is killed there (SIGKILL: no rollback runs).
    let mut child = fleet
        .command(
            &[("PGTENANT_TEST_MOVE_PAUSE_AFTER", "dump")],
            &["move", "team/app", "--to", "b", "--yes"],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("paused after dump") {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(read > 0, "the move ended before its dump:\n{seen}");
        seen.push_str(&line);
    }
    // While it runs, a second move of it is refused.
    let second = fleet.run(&["move", "team/app", "--to", "b", "--yes"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        second.stderr.contains("another `pgtenant move` is running"),
        "{}",
        second.stderr
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // What the crash left: the source's logins stopped and the tenant's data in a dump file.
    rt.block_on(async {
        assert!(connect(&uri, None).await.is_err(), "logins were stopped");
    });
    assert_eq!(fleet.dumps().len(), 1, "the dump of the interrupted move");
    let refused = fleet.run(&["move", "team/app", "--to", "b", "--yes"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("was interrupted")
            && refused.stderr.contains("last step done: dump")
            && refused.stderr.contains("--abort"),
        "{}",
        refused.stderr
    );

    let abort = fleet.run(&["move", "team/app", "--abort", "--format", "json"]);
    assert_eq!(abort.code, 0, "{}\n{}", abort.stdout, abort.stderr);
    let json = abort.json();
    assert_eq!(json["was"], "moving", "{json:#}");
    assert_eq!(json["cluster"], "a", "{json:#}");
    assert_eq!(fleet.dumps(), Vec::<String>::new(), "the dump is removed");
    let back = fleet.credentials("team/app", "admin");
    assert_eq!(back["uri"], before["uri"]);
    assert_eq!(back["password"], before["password"]);
    rt.block_on(async {
        assert_eq!(count(&uri, "t").await, Ok(5), "the source serves again");
    });
    // The copy on b is a protected orphan: nothing is dropped, the tenant is on a alone.
    let apply = fleet.ok(&["apply"]);
    assert!(!apply.stdout.contains("DROP"), "{}", apply.stdout);
    assert_eq!(fleet.placed_on("team/app"), ("a".into(), 0));
    let orphan = fleet.marker_of_team_app(1, &rt);
    assert!(
        orphan.contains(r#""mode":"protected""#) && orphan.contains(r#""moved_to":"a""#),
        "{orphan}"
    );
}
