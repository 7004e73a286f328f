//! Databases removed from the repo: standard ones are dropped (sessions terminated), protected ones
//! kept and adopted again, and nothing is dropped while any spec file is broken.

mod common;

use common::Env;

#[tokio::test]
async fn standard_is_dropped_with_open_sessions_protected_is_kept_and_adopted_again() {
    let env = Env::new();
    env.declare("team", "keep", &[("keep", "standard")]);
    env.declare("team", "gone", &[("gone", "standard")]);
    env.declare("team", "safe", &[("safe", "protected")]);
    env.apply();

    let safe_admin = env.connect_as("team/safe", "admin").await;
    safe_admin
        .batch_execute("CREATE TABLE ledger (amount int); INSERT INTO ledger VALUES (42)")
        .await
        .unwrap();
    let safe_password = env.credentials("team/safe", "write")["password"].clone();
    let open_session = env.connect_as("team/gone", "write").await;
    open_session.batch_execute("SELECT 1").await.unwrap();

    env.remove("team/gone/values.yaml");
    env.remove("team/safe/values.yaml");
    let plan = env.plan();
    assert_eq!(plan.code, 2);
    let plan = plan.json();
    let destructive: Vec<&str> = plan["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["destructive"] == true)
        .map(|op| op["statement"].as_str().unwrap())
        .collect();
    assert_eq!(destructive[0], r#"DROP DATABASE "team-gone" WITH (FORCE);"#);
    assert!(
        destructive
            .iter()
            .all(|s| !s.contains("team-safe") && !s.contains("team-keep")),
        "{destructive:#?}"
    );
    let notices = plan["notices"].as_array().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n["kind"] == "retained" && n["tenant"] == "team/safe"),
        "{notices:#?}"
    );

    env.apply();
    assert!(!env.database_exists("team-gone").await);
    assert_eq!(env.roles_like("team-gone-").await, 0);
    let missing = env.run(&["credentials", "team/gone", "--role", "admin"]);
    assert_eq!(
        missing.code, 1,
        "credentials of a dropped database are deleted"
    );
    assert!(
        open_session.batch_execute("SELECT 1").await.is_err(),
        "the open session was terminated"
    );

    assert!(env.database_exists("team-safe").await);
    assert!(env.database_exists("team-keep").await);
    assert_eq!(env.roles_like("team-safe-").await, 3);
    assert_eq!(
        env.credentials("team/safe", "write")["password"],
        safe_password
    );
    assert_eq!(
        env.plan().code,
        0,
        "a retained database is not pending work"
    );

    // Declared again: adopted with its data and credentials.
    env.declare("team", "safe", &[("safe", "protected")]);
    env.apply();
    let write = env.connect_as("team/safe", "write").await;
    let amount: i32 = write
        .query_one("SELECT amount FROM ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount, 42);
    assert_eq!(
        env.credentials("team/safe", "write")["password"],
        safe_password
    );
}

#[tokio::test]
async fn a_broken_file_drops_nothing_and_other_tenants_go_on() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();

    env.write(
        "team/a/values.yaml",
        "postgresqlDatabases:\n  - name: a\n    mode: [standard\n",
    );
    env.remove("team/b/values.yaml");
    env.declare("team", "c", &[("c", "standard")]);

    let out = env.run(&["apply", "--format", "json"]);
    assert_eq!(
        out.code, 1,
        "spec errors make apply exit 1:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("team/a/values.yaml:"),
        "the error names the file and line:\n{}",
        out.stderr
    );
    let report = out.json();
    let notices = report["notices"].as_array().unwrap();
    assert!(notices
        .iter()
        .any(|n| n["kind"] == "held" && n["tenant"] == "team/b"));
    // The broken file's own tenant is kept because of the file, not "removed from the repo".
    let broken = notices
        .iter()
        .find(|n| n["tenant"] == "team/a")
        .expect("a notice for the broken file's tenant");
    assert_eq!(broken["kind"], "held");
    assert_eq!(
        broken["reason"],
        "kept: its values file team/a/values.yaml has errors (fix it; nothing is dropped while a file fails)"
    );
    assert!(
        !out.stdout.contains("removed from the repo"),
        "{}",
        out.stdout
    );
    assert!(
        env.database_exists("team-a").await,
        "the broken file's database is untouched"
    );
    assert!(
        env.database_exists("team-b").await,
        "no drop while any file is broken"
    );
    assert!(
        env.database_exists("team-c").await,
        "valid tenants are still reconciled"
    );

    env.declare("team", "a", &[("a", "standard")]);
    env.apply();
    assert!(env.database_exists("team-a").await);
    assert!(
        !env.database_exists("team-b").await,
        "once every file parses the removal goes ahead"
    );
}

#[tokio::test]
async fn apply_from_the_wrong_directory_or_with_the_wrong_store_changes_nothing() {
    let env = Env::new();
    env.declare("team", "one", &[("one", "standard")]);
    env.declare("team", "two", &[("two", "standard")]);
    env.apply();
    let before = env.credentials("team/one", "write")["uri"]
        .as_str()
        .unwrap()
        .to_string();

    // The wrong directory (no values files at all) is refused, not taken for an empty repo.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = env
        .cmd()
        .current_dir(elsewhere.path())
        .args(["apply", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is this the apps repo?"));
    assert!(env.database_exists("team-one").await && env.database_exists("team-two").await);

    // An apps repo that declares nothing (values files without databases): nothing dropped, and
    // the held drops are not success (exit 1).
    std::fs::create_dir_all(elsewhere.path().join("team/chart")).unwrap();
    std::fs::write(
        elsewhere.path().join("team/chart/values.yaml"),
        "replicas: 2\n",
    )
    .unwrap();
    let out = env
        .cmd()
        .current_dir(elsewhere.path())
        .args(["apply", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["notices"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("no database is declared"));
    assert!(env.database_exists("team-one").await && env.database_exists("team-two").await);

    // An empty credential store (another --state-dir): no password is replaced.
    let other_state = tempfile::tempdir().unwrap();
    let out = env
        .cmd()
        .env("PGTENANT_STATE_DIR", other_state.path())
        .args(["apply", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["notices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["kind"] == "blocked"));
    common::connect(&before, None)
        .await
        .expect("the stored passwords still work");

    // Two databases removed at once exceed the default --max-drops 1.
    env.remove("team/one/values.yaml");
    env.remove("team/two/values.yaml");
    env.declare("team", "three", &[("three", "standard")]);
    let held = env.run(&["apply"]);
    assert_eq!(held.code, 1, "held drops are not success: {}", held.stdout);
    assert!(held.stdout.contains("2 drop(s) held"), "{}", held.stdout);
    assert!(env.database_exists("team-one").await && env.database_exists("team-two").await);
    let out = env.run(&["apply", "--max-drops", "2", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!env.database_exists("team-one").await && !env.database_exists("team-two").await);
}

#[tokio::test]
async fn list_shows_managed_orphaned_and_unmanaged_databases() {
    let env = Env::new();
    env.declare("team", "keep", &[("keep", "standard")]);
    env.declare("team", "safe", &[("safe", "protected")]);
    env.apply();
    env.superuser(None)
        .await
        .batch_execute("CREATE DATABASE analytics")
        .await
        .unwrap();
    env.remove("team/safe/values.yaml");
    env.apply();

    let list = |env: &Env| {
        let out = env.run(&["list", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()
    };
    let listed = list(&env);
    let state = |listed: &serde_json::Value, db: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["database"] == db)
            .unwrap()
            .clone()
    };
    assert_eq!(state(&listed, "team-keep")["state"], "managed");
    assert_eq!(state(&listed, "analytics")["state"], "unmanaged");
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["database"] == "pgtenant"),
        "pgtenant's own control database is not listed: {listed:#}"
    );
    let safe = state(&listed, "team-safe");
    assert_eq!(safe["state"], "orphaned-protected");
    assert_eq!(safe["mode"], "protected");
    assert!(
        safe["orphaned_since"].as_str().unwrap().starts_with("20"),
        "{safe:#}"
    );
    assert_eq!(env.plan().code, 0, "recording the orphan is done once");

    env.declare("team", "safe", &[("safe", "protected")]);
    env.apply();
    assert_eq!(
        state(&list(&env), "team-safe")["state"],
        "managed",
        "adopted again"
    );
}

#[tokio::test]
async fn a_dropped_standard_database_leaves_a_final_backup_that_restores_once_declared_again() {
    let env = Env::new();
    // A v1 tenant with a declared schema: the restore must cope with what apply recreates.
    let cart =
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: cart\n    schemas: [audit]\n";
    env.write("shop/cart/values.yaml", cart);
    env.declare("shop", "other", &[("other", "standard")]);
    env.apply();
    let admin = env.connect_as("shop/cart", "admin").await;
    admin
        .batch_execute(
            "CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2), (3);
             CREATE TABLE audit.log (line text); INSERT INTO audit.log VALUES ('kept')",
        )
        .await
        .unwrap();
    drop(admin);

    env.remove("shop/cart/values.yaml");
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("final backup of shop-cart before it is dropped"),
        "{}",
        out.stderr
    );
    assert!(!env.database_exists("shop-cart").await);

    let listed = env.run(&["trash", "list", "--format", "json"]).json();
    let entry = &listed[0];
    assert_eq!(entry["tenant"], "shop/cart");
    assert_eq!(entry["retention_days"], 7, "dev tier by default");
    assert!(entry["size"].as_u64().unwrap() > 0);

    // Restoring before the database is declared again says what to do.
    let early = env.run(&["trash", "restore", "shop/cart"]);
    assert_eq!(early.code, 1);
    assert!(
        early.stderr.contains("declare it again"),
        "{}",
        early.stderr
    );

    env.write("shop/cart/values.yaml", cart);
    env.apply();
    let out = env.run(&["trash", "restore", "shop/cart"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read = env.connect_as("shop/cart", "read").await;
    let rows = read
        .query("SELECT id FROM items ORDER BY id", &[])
        .await
        .expect("grants re-applied after restore");
    assert_eq!(rows.len(), 3);
    let audit = read
        .query("SELECT line FROM audit.log", &[])
        .await
        .expect("the declared schema's data is back");
    assert_eq!(audit.len(), 1);
    let owner: String = read
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'items'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "shop-cart-admin");
}
