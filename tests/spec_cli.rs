//! `pgtenant spec upgrade` and `pgtenant spec schema` through the binary. No cluster is needed:
//! these commands only read and write the apps repo.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `pgtenant --state-dir <tmp> args…` in `repo`'s parent, so paths in output are stable.
fn pgtenant(args: &[&str]) -> Run {
    let state = tempfile::tempdir().unwrap();
    let output = Command::cargo_bin("pgtenant")
        .unwrap()
        .arg("--state-dir")
        .arg(state.path())
        .args(args)
        .env_remove("PGTENANT_ADMIN_URL")
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn repo(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn read(dir: &TempDir, path: &str) -> String {
    fs::read_to_string(dir.path().join(path)).unwrap()
}

fn upgrade(dir: &TempDir, extra: &[&str]) -> Run {
    let root = dir.path().to_str().unwrap();
    let mut args = vec!["spec", "upgrade", root];
    args.extend_from_slice(extra);
    pgtenant(&args)
}

const LEGACY: &str = "\
# Orders service: chart values first, then its databases.
replicaCount: 2
image:
  repository: registry.example/orders   # pinned by CI

# Chart 0.5.0 wrote deletionProtection; 1.0.1 wrote mode.
postgresqlDatabases:
  - name: orders
    deletionProtection: true   # production data
  - {name: orders-archive, deletionProtection: false}
  - name: scratch
    mode: standard
ingress:
  enabled: true
";

const UPGRADED: &str = "\
# Orders service: chart values first, then its databases.
replicaCount: 2
image:
  repository: registry.example/orders   # pinned by CI

# Chart 0.5.0 wrote deletionProtection; 1.0.1 wrote mode.
apiVersion: pgtenant.io/v1
postgresqlDatabases:
  - name: orders
    mode: protected   # production data
  - {name: orders-archive, mode: standard}
  - name: scratch
    mode: standard
ingress:
  enabled: true
";

const V1: &str = "\
apiVersion: pgtenant.io/v1
postgresqlDatabases:
  - name: checkout
    preset: app-migrator   # already v1: left alone
";

const CHART_ONLY: &str = "image: web\nreplicaCount: 3\n";

#[test]
fn upgrade_rewrites_legacy_files_in_place_and_nothing_else() {
    let dir = repo(&[
        ("idp-dev/orders/values.yaml", LEGACY),
        ("shop/checkout/values.yaml", V1),
        ("shop/web/values.yaml", CHART_ONLY),
        (
            "shop/cart/values.yml",
            "postgresqlDatabases:\r\n  - name: cart\r\n",
        ),
    ]);
    let mode = fs::Permissions::from_mode(0o640);
    fs::set_permissions(dir.path().join("idp-dev/orders/values.yaml"), mode).unwrap();

    let run = upgrade(&dir, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "upgraded idp-dev/orders/values.yaml: apiVersion added; line 9: deletionProtection: true → mode: protected; line 10: deletionProtection: false → mode: standard\n\
         upgraded shop/cart/values.yml: apiVersion added\n"
    );
    assert!(
        run.stderr
            .contains("2 file(s) upgraded, 2 unchanged (v1 already, or no databases), 0 could not be upgraded."),
        "{}",
        run.stderr
    );
    assert_eq!(read(&dir, "idp-dev/orders/values.yaml"), UPGRADED);
    assert_eq!(
        read(&dir, "shop/cart/values.yml"),
        "apiVersion: pgtenant.io/v1\r\npostgresqlDatabases:\r\n  - name: cart\r\n"
    );
    assert_eq!(read(&dir, "shop/checkout/values.yaml"), V1);
    assert_eq!(read(&dir, "shop/web/values.yaml"), CHART_ONLY);
    let permissions = fs::metadata(dir.path().join("idp-dev/orders/values.yaml"))
        .unwrap()
        .permissions();
    assert_eq!(permissions.mode() & 0o777, 0o640);
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("idp-dev/orders"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["values.yaml"], "no temporary file is left");

    // Idempotent: a second run finds nothing to do.
    let again = upgrade(&dir, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout, "");
    assert_eq!(read(&dir, "idp-dev/orders/values.yaml"), UPGRADED);
    assert_eq!(upgrade(&dir, &["--check"]).code, 0);
}

#[test]
fn check_changes_nothing_and_exits_2_when_a_file_would_change() {
    let dir = repo(&[
        ("idp-dev/orders/values.yaml", LEGACY),
        ("shop/checkout/values.yaml", V1),
    ]);
    let run = upgrade(&dir, &["--check"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("would upgrade idp-dev/orders/values.yaml: apiVersion added; "),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1 file(s) would be upgraded"),
        "{}",
        run.stderr
    );
    assert_eq!(read(&dir, "idp-dev/orders/values.yaml"), LEGACY);

    let json = upgrade(&dir, &["--check", "--format", "json"]);
    assert_eq!(json.code, 2);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["check"], true);
    assert_eq!(
        report["summary"],
        serde_json::json!({"changed": 1, "unchanged": 1, "failed": 0})
    );
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[0]["file"], "idp-dev/orders/values.yaml");
    assert_eq!(files[0]["status"], "would-upgrade");
    assert_eq!(
        files[0]["changes"][1],
        serde_json::json!({"line": 9, "column": 5, "before": "deletionProtection: true", "after": "mode: protected"})
    );
    assert_eq!(files[1]["status"], "unchanged");
    assert_eq!(files[1]["reason"], "already-v1");
    assert_eq!(read(&dir, "idp-dev/orders/values.yaml"), LEGACY);

    // Only v1 and foreign files: nothing to do.
    let done = repo(&[
        ("shop/checkout/values.yaml", V1),
        ("a/b/values.yaml", CHART_ONLY),
    ]);
    assert_eq!(upgrade(&done, &["--check"]).code, 0);
}

#[test]
fn files_with_errors_are_reported_and_left_untouched() {
    let broken = "postgresqlDatabases:\n  - name: fine\n   mode: protected\n";
    let both = "postgresqlDatabases:\n  - name: both\n    mode: standard\n    deletionProtection: true  # which one?\n";
    let future = "apiVersion: pgtenant.io/v2\npostgresqlDatabases:\n  - name: future\n";
    let dir = repo(&[
        ("team/broken/values.yaml", broken),
        ("team/both/values.yaml", both),
        ("team/future/values.yaml", future),
        ("idp-dev/orders/values.yaml", LEGACY),
    ]);
    let run = upgrade(&dir, &["--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(read(&dir, "team/broken/values.yaml"), broken);
    assert_eq!(read(&dir, "team/both/values.yaml"), both);
    assert_eq!(read(&dir, "team/future/values.yaml"), future);
    // The others are still upgraded.
    assert_eq!(read(&dir, "idp-dev/orders/values.yaml"), UPGRADED);
    for expected in [
        "error: team/broken/values.yaml:3:4: invalid YAML",
        "error: team/both/values.yaml:4:5: postgresqlDatabases[0].deletionProtection: both `mode` and the legacy `deletionProtection` are set",
        "error: team/future/values.yaml:1:13: apiVersion: unknown apiVersion `pgtenant.io/v2`",
        "3 could not be upgraded",
    ] {
        assert!(run.stderr.contains(expected), "{expected}\n{}", run.stderr);
    }
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let statuses: Vec<(&str, &str)> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["file"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("idp-dev/orders/values.yaml", "upgraded"),
            ("team/both/values.yaml", "failed"),
            ("team/broken/values.yaml", "failed"),
            ("team/future/values.yaml", "failed"),
        ]
    );
    let diagnostic = &report["files"][1]["diagnostics"][0];
    assert_eq!(diagnostic["severity"], "error");
    assert_eq!(
        diagnostic["location"],
        serde_json::json!({"file": "team/both/values.yaml", "line": 4, "column": 5})
    );
}

#[test]
fn a_missing_repo_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let run = pgtenant(&["spec", "upgrade", missing.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
}

#[test]
fn schema_prints_the_committed_json_schema() {
    let run = pgtenant(&["spec", "schema"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let printed: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let committed_text =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pgtenant.schema.json"))
            .unwrap();
    let committed: Value = serde_json::from_str(&committed_text).unwrap();
    assert_eq!(
        printed, committed,
        "docs/pgtenant.schema.json is stale: `pgtenant spec schema > docs/pgtenant.schema.json`"
    );
    assert_eq!(run.stdout, committed_text);
    assert_eq!(
        printed["properties"]["apiVersion"]["enum"][0],
        "pgtenant.io/v1"
    );
    assert_eq!(printed["additionalProperties"], true);
    assert_eq!(
        printed["definitions"]["Database"]["additionalProperties"],
        false
    );
}

#[test]
fn a_bad_pooling_is_reported_with_file_line_and_field() {
    // A legacy file is read as v1 for the upgrade, so the values of its v1 fields are checked.
    let text = "postgresqlDatabases:\n  - name: jobs\n    pooling: {mode: sesion, size: 20}\n  - name: reports\n    pooling: nope\n";
    let dir = repo(&[("team/jobs/values.yaml", text)]);
    let run = upgrade(&dir, &["--check"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for expected in [
        "error: team/jobs/values.yaml:3:21: postgresqlDatabases[0].pooling.mode: unknown pool mode `sesion`: expected `transaction` or `session`\n  help: did you mean `session`?",
        "error: team/jobs/values.yaml:5:14: postgresqlDatabases[1].pooling: unknown pooling `nope`: expected `none` or the pool's settings\n  help: did you mean `none`?",
    ] {
        assert!(run.stderr.contains(expected), "{expected}\n{}", run.stderr);
    }
    assert_eq!(read(&dir, "team/jobs/values.yaml"), text);
}
