//! The reconcile pipeline as a library (issue 10): every step apply takes is an operation of the
//! plan — the final backup before a drop included — and apply runs exactly those. Against a real
//! PostgreSQL cluster.

mod common;

use common::Env;
use serde_json::Value;

async fn logins(env: &Env) -> i64 {
    env.control()
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, 'shop-cart-') AND rolcanlogin",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// shop/cart (standard) and shop/other applied, then shop/cart removed from the repo.
fn removed_cart() -> Env {
    let env = Env::new();
    env.declare("shop", "cart", &[("cart", "standard")]);
    env.declare("shop", "other", &[("other", "standard")]);
    env.apply();
    env.remove("shop/cart/values.yaml");
    env
}

/// (tenant, phase, statement) of each operation, in order.
fn steps(json: &Value) -> Vec<(String, String, String)> {
    json["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            (
                op["tenant"].as_str().unwrap().to_string(),
                op["phase"].as_str().unwrap().to_string(),
                op["statement"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn plan_lists_the_final_backup_before_the_drop() {
    let env = removed_cart();
    let out = env.run(&["plan"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    let text = &out.stdout;
    let stop = text
        .find("[stop-logins] -- stop the logins of")
        .unwrap_or_else(|| panic!("{text}"));
    let backup = text
        .find("[final-backup] -- final backup of shop-cart to the trash, kept 7 days")
        .unwrap_or_else(|| panic!("{text}"));
    let drop = text
        .find(r#"[drop] DROP DATABASE "shop-cart""#)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(stop < backup && backup < drop, "{text}");

    let json = env.plan().json();
    let steps = steps(&json);
    let phases: Vec<&str> = steps
        .iter()
        .filter(|(tenant, _, _)| tenant == "shop/cart")
        .map(|(_, phase, _)| phase.as_str())
        .collect();
    assert_eq!(
        &phases[..3],
        ["stop-logins", "final-backup", "drop"],
        "{json}"
    );
    let backup = &json["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["phase"] == "final-backup")
        .unwrap();
    assert_eq!(
        backup["statement"],
        "-- final backup of shop-cart to the trash, kept 7 days"
    );
    assert_eq!(backup["destructive"], false);
    assert!(
        backup["why"].as_str().unwrap().contains("tier dev"),
        "{backup}"
    );
    // A non-superuser control role may drop only a database it owns: it takes the database over in
    // a transaction that borrows the owner (never a committed membership), then drops it.
    let drop_steps: Vec<&str> = steps[2..].iter().map(|(_, _, s)| s.as_str()).collect();
    assert_eq!(
        &drop_steps[..4],
        [
            r#"GRANT "shop-cart-admin" TO "pgtenant";"#,
            r#"ALTER DATABASE "shop-cart" OWNER TO "pgtenant";"#,
            r#"REVOKE "shop-cart-admin" FROM "pgtenant";"#,
            r#"DROP DATABASE "shop-cart" WITH (FORCE);"#,
        ],
        "{steps:?}"
    );
}

#[tokio::test]
async fn apply_runs_exactly_what_plan_showed() {
    let env = removed_cart();
    let planned = env.plan().json();
    let out = env.run(&["apply", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let applied = out.json();
    assert_eq!(planned["operations"], applied["operations"]);
    assert_eq!(
        applied["applied"].as_u64().unwrap() as usize,
        planned["operations"].as_array().unwrap().len(),
        "{applied}"
    );
    assert_eq!(applied["failed"], 0);
    assert!(!env.database_exists("shop-cart").await);
    let trash = env.run(&["trash", "list", "--format", "json"]).json();
    assert_eq!(trash[0]["tenant"], "shop/cart", "{trash}");
    assert_eq!(trash[0]["retention_days"], 7);
    assert!(
        out.stderr
            .contains("final backup of shop-cart before it is dropped"),
        "{}",
        out.stderr
    );
    assert_eq!(env.plan().code, 0);
}

/// The server's binaries, with a pg_dump that fails.
fn binaries_with_a_failing_pg_dump() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let real = pgtenant_cluster::find_binaries().unwrap().bin_dir;
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    // A copy, not a link: the binaries are found where pg_ctl really is.
    let pg_ctl = dir.path().join("pg_ctl");
    std::fs::remove_file(&pg_ctl).unwrap();
    std::fs::copy(real.join("pg_ctl"), &pg_ctl).unwrap();
    let pg_dump = dir.path().join("pg_dump");
    std::fs::remove_file(&pg_dump).unwrap();
    std::fs::write(
        &pg_dump,
        "#!/bin/sh\necho 'pg_dump: error: disk full (test)' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&pg_dump, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Traversable by the unprivileged server user too.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
async fn a_failed_final_backup_gives_the_logins_back_and_keeps_the_database() {
    let env = removed_cart();
    let read = env.credentials("shop/cart", "read")["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let before = logins(&env).await;
    assert_eq!(before, 3, "admin, write and read log in");
    let bin = binaries_with_a_failing_pg_dump();
    let output = env
        .cmd()
        .env("PGTENANT_PG_BIN", bin.path())
        .args(["apply"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("FAILED  shop/cart"), "{stdout}");
    assert!(
        stdout.contains("the final backup before dropping it failed, so it is not dropped"),
        "{stdout}"
    );
    assert!(stdout.contains("disk full (test)"), "{stdout}");
    assert!(env.database_exists("shop-cart").await);
    assert_eq!(logins(&env).await, before, "every login is given back");
    common::connect(&read, None)
        .await
        .expect("the application logs in again");
    let trash = env.run(&["trash", "list", "--format", "json"]).json();
    assert_eq!(trash, serde_json::json!([]));

    // With a working pg_dump the next apply takes the backup and drops it.
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!env.database_exists("shop-cart").await);
}
