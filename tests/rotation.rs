//! `pgtenant rotate`: new passwords with sessions open, crash safety between every step, and grace
//! rotation through a second login per role (including the owner role). Each test runs against the
//! file store and against AWS Secrets Manager (moto, see common/aws.rs): `NAME::file`, `NAME::aws`.

mod common;

use common::aws::{staged, Store};
use common::{connect, Env};

fn uri(env: &Env, role: &str) -> String {
    env.credentials("idp-dev/my-db", role)["uri"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn rotation_keeps_open_sessions_and_changes_new_logins(store: Store) {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let before = uri(&env, "write");
    let long_running = connect(&before, None).await.unwrap();

    let out = env.run(&[
        "rotate",
        "idp-dev/my-db",
        "--role",
        "write",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["rotated"][0]["username"], "idp-dev-my-db-write");

    let after = uri(&env, "write");
    assert_ne!(before, after);
    long_running
        .batch_execute("SELECT 1")
        .await
        .expect("an open session survives the rotation");
    let refused = connect(&before, None)
        .await
        .expect_err("the old password no longer logs in");
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    connect(&after, None)
        .await
        .expect("the new password logs in");
    assert_eq!(
        env.plan().code,
        0,
        "rotation leaves nothing for apply to do"
    );

    // --all, and the owner role too.
    let admin_before = uri(&env, "admin");
    assert_eq!(env.run(&["rotate", "idp-dev/my-db", "--all"]).code, 0);
    assert_ne!(uri(&env, "admin"), admin_before);
    for role in ["admin", "write", "read"] {
        connect(&uri(&env, role), None)
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
    }
}

async fn a_rotation_killed_between_any_two_steps_is_completed_by_the_next_run(store: Store) {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    for (step, next_run) in [
        ("rotate:after-journal", "apply"),
        ("rotate:after-server", "apply"),
        ("rotate:after-store", "rotate"),
        ("rotate:after-server", "rotate"),
    ] {
        let before = uri(&env, "read");
        let killed = env
            .cmd()
            .env("PGTENANT_FAILPOINT", step)
            .args(["rotate", "idp-dev/my-db", "--role", "read"])
            .output()
            .unwrap();
        assert_eq!(
            killed.status.code(),
            None,
            "{step}: the process must die by a signal"
        );
        if store == Store::Aws && step != "rotate:after-store" {
            assert!(
                staged(&env, "idp-dev/my-db-read", "AWSPENDING")
                    .await
                    .is_some(),
                "{step}: the new password waits as the AWSPENDING version"
            );
        }
        let out = match next_run {
            "apply" => env.run(&["apply"]),
            _ => env.run(&["rotate", "idp-dev/my-db", "--role", "read"]),
        };
        assert_eq!(
            out.code, 0,
            "{step} then {next_run}:\n{}\n{}",
            out.stdout, out.stderr
        );
        if step != "rotate:after-store" {
            assert!(
                out.stderr
                    .contains("an interrupted password change of customer/idp-dev/my-db-read was"),
                "{}",
                out.stderr
            );
        }
        let now = uri(&env, "read");
        connect(&now, None)
            .await
            .unwrap_or_else(|e| panic!("after {step} and {next_run}: {e}"));
        if step == "rotate:after-server" && next_run == "apply" {
            assert_ne!(
                now, before,
                "the server had the new password: the store must have it too"
            );
        }
        assert_eq!(env.plan().code, 0, "after {step} and {next_run}");
    }
}

async fn grace_rotation_keeps_the_previous_credentials_valid_for_one_period(store: Store) {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let admin = connect(&uri(&env, "admin"), None).await.unwrap();
    admin
        .batch_execute("CREATE TABLE orders (id int)")
        .await
        .unwrap();

    let first = uri(&env, "write");
    let out = env.run(&[
        "rotate",
        "idp-dev/my-db",
        "--role",
        "write",
        "--grace",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["rotated"][0]["username"],
        "idp-dev-my-db-write-alt"
    );
    let second = uri(&env, "write");
    if store == Store::Aws {
        // Secrets Manager keeps the previous period's credentials as AWSPREVIOUS.
        let previous = staged(&env, "idp-dev/my-db-write", "AWSPREVIOUS")
            .await
            .unwrap();
        assert_eq!(previous["uri"].as_str(), Some(first.as_str()));
        assert!(staged(&env, "idp-dev/my-db-write", "AWSPENDING")
            .await
            .is_none());
    }
    let old = connect(&first, None)
        .await
        .expect("apps holding the previous credentials keep connecting");
    let new = connect(&second, None)
        .await
        .expect("the new credentials log in");
    for client in [&old, &new] {
        client
            .batch_execute("INSERT INTO orders VALUES (1)")
            .await
            .expect("same privileges on both logins");
    }
    assert_eq!(
        env.plan().code,
        0,
        "the second login is part of the model, not drift"
    );

    // The next grace rotation switches back and retires the first credentials.
    assert_eq!(
        env.run(&["rotate", "idp-dev/my-db", "--role", "write", "--grace"])
            .code,
        0
    );
    let third = uri(&env, "write");
    assert!(third.starts_with("postgresql://idp-dev-my-db-write:"));
    connect(&second, None)
        .await
        .expect("the previous period's credentials still work");
    connect(&third, None).await.unwrap();
    assert!(
        connect(&first, None).await.is_err(),
        "credentials two rotations old are retired"
    );

    // The owner role rotates too, and objects keep one owner whichever login created them.
    assert_eq!(
        env.run(&["rotate", "idp-dev/my-db", "--role", "admin", "--grace"])
            .code,
        0
    );
    let admin_alt = connect(&uri(&env, "admin"), None).await.unwrap();
    admin_alt
        .batch_execute("CREATE TABLE invoices (id int)")
        .await
        .unwrap();
    let owner: String = admin_alt
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'invoices'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "idp-dev-my-db-admin");
    let read = connect(&uri(&env, "read"), None).await.unwrap();
    read.batch_execute("SELECT * FROM invoices")
        .await
        .expect("default privileges apply to the twin's tables");
    assert_eq!(env.plan().code, 0);

    // Removing the tenant removes the twins with it.
    env.remove("idp-dev/my-db/values.yaml");
    drop((admin, admin_alt, old, new, read));
    let out = env.run(&["apply", "--allow-empty-repo"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let left: i64 = env
        .control()
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, 'idp-dev-my-db')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

async fn an_apply_killed_after_creating_roles_is_completed_by_the_next_run(store: Store) {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    let killed = env
        .cmd()
        .env("PGTENANT_FAILPOINT", "apply:after-batch")
        .args(["apply"])
        .output()
        .unwrap();
    assert_eq!(
        killed.status.code(),
        None,
        "killed right after the roles were created"
    );
    // The roles have passwords only the journal knows, and the database does not exist yet: the
    // login check answers "no such database", which still proves the password.
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("was completed"), "{}", out.stderr);
    for role in ["admin", "write", "read"] {
        connect(&uri(&env, role), None)
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
    }
    assert_eq!(env.plan().code, 0);
}

async fn credentials_naming_a_twin_dropped_by_hand_are_replaced(store: Store) {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    assert_eq!(
        env.run(&["rotate", "idp-dev/my-db", "--role", "write", "--grace"])
            .code,
        0
    );
    env.superuser(None)
        .await
        .batch_execute(r#"DROP ROLE "idp-dev-my-db-write-alt""#)
        .await
        .unwrap();
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let now = uri(&env, "write");
    assert!(
        now.starts_with("postgresql://idp-dev-my-db-write:"),
        "{now}"
    );
    connect(&now, None)
        .await
        .expect("the replacement credentials log in");
    assert_eq!(env.plan().code, 0);
}

async fn an_interrupted_password_change_is_reported_and_its_credential_withheld(store: Store) {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    // The server has the new password, the store still the old one.
    let killed = env
        .cmd()
        .env("PGTENANT_FAILPOINT", "rotate:after-server")
        .args(["rotate", "idp-dev/my-db", "--role", "read"])
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None, "killed mid-rotation");
    let reported = "interrupted password change for idp-dev-my-db-read: run `pgtenant apply`";

    let plan = env.plan();
    assert_eq!(
        plan.code, 2,
        "not in sync:\n{}\n{}",
        plan.stdout, plan.stderr
    );
    assert_eq!(plan.json()["converged"], false);
    assert!(
        // An operation of the plan (before issue 10 a blocked notice).
        plan.json()["operations"].to_string().contains(reported),
        "{}",
        plan.stdout
    );
    let plan = env.run(&["plan"]);
    assert_eq!(plan.code, 2);
    assert!(plan.stdout.contains(reported), "{}", plan.stdout);
    assert!(!plan.stdout.contains("In sync"), "{}", plan.stdout);
    let check = env.run(&["check", "--format", "json"]);
    assert_eq!(check.code, 2, "{}\n{}", check.stdout, check.stderr);
    assert_eq!(check.json()["in_sync"], false);
    assert!(
        // A drift item of the tenant (before issue 10 a notice).
        check.json()["tenants"].to_string().contains(reported),
        "{}",
        check.stdout
    );
    let check = env.run(&["check"]);
    assert_eq!(check.code, 2);
    assert!(check.stdout.contains(reported), "{}", check.stdout);
    let scoped = env.run(&["plan", "--tenant", "idp-dev/my-db"]);
    assert_eq!(scoped.code, 2, "{}", scoped.stdout);

    // Nothing hands out (or uses) the credential that may be stale.
    let refusal = "interrupted password change for the read role of idp-dev/my-db";
    let out_dir = env.state_path().join("exported");
    let out_dir = out_dir.to_str().unwrap();
    for args in [
        vec!["credentials", "idp-dev/my-db", "--role", "read"],
        vec!["url", "idp-dev/my-db", "--role", "read"],
        vec![
            "psql",
            "idp-dev/my-db",
            "--role",
            "read",
            "--",
            "-c",
            "SELECT 1",
        ],
        vec!["doctor", "idp-dev/my-db", "--role", "read"],
        vec!["doctor", "idp-dev/my-db"],
        vec!["export", "--format", "env", "--out", out_dir],
    ] {
        let out = env.run(&args);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, 1, "{args:?}:\n{said}");
        assert!(said.contains(refusal), "{args:?}:\n{said}");
        assert!(said.contains("run `pgtenant apply`"), "{args:?}:\n{said}");
    }
    let exported: Vec<_> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        exported.len(),
        2,
        "the settled roles are exported: {exported:?}"
    );
    assert!(!exported.iter().any(|name| name.contains("read")));
    assert_eq!(
        env.run(&["credentials", "idp-dev/my-db", "--role", "write"])
            .code,
        0,
        "the other roles are not affected"
    );

    // apply settles it; then everything agrees again.
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("was completed"), "{}", out.stderr);
    assert_eq!(env.plan().code, 0);
    assert_eq!(env.run(&["check"]).code, 0);
    connect(&uri(&env, "read"), None)
        .await
        .expect("the settled credentials log in");
}

fn rotate_all_for_a_tenant_without_credentials_names_it(store: Store) {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let out = env.run(&["rotate", "idp-dev/unknown", "--all"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("idp-dev/unknown has no stored credentials, so --all has nothing to rotate"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("nothing rotated"), "{}", out.stderr);
    let help = env.run(&["rotate", "--help"]);
    for preset in [
        "idp: admin|write|read",
        "app-migrator: migrator|app",
        "schema-owner: app|write|read",
    ] {
        assert!(help.stdout.contains(preset), "{}", help.stdout);
    }
}

both_stores!(rotation_keeps_open_sessions_and_changes_new_logins);
both_stores!(a_rotation_killed_between_any_two_steps_is_completed_by_the_next_run);
both_stores!(grace_rotation_keeps_the_previous_credentials_valid_for_one_period);
both_stores!(an_apply_killed_after_creating_roles_is_completed_by_the_next_run);
both_stores!(credentials_naming_a_twin_dropped_by_hand_are_replaced);
both_stores!(an_interrupted_password_change_is_reported_and_its_credential_withheld);
both_stores_sync!(rotate_all_for_a_tenant_without_credentials_names_it);
