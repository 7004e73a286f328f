//! A run scoped to declared tenants (`--tenant`) reads only their rows of the cluster-wide catalog
//! (their roles, the memberships either side of them, their databases and those their roles
//! own): it must plan and refuse exactly what an unscoped run plans and refuses for them.

mod common;

use common::Env;
use serde_json::Value;

/// The statements (and notices) planned for `tenant`, in order.
fn planned_for(plan: &Value, tenant: &str) -> (Vec<String>, Vec<String>) {
    let statements = plan["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["tenant"] == tenant)
        .map(|op| op["statement"].as_str().unwrap_or_default().to_string())
        .collect();
    let notices = plan["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["tenant"] == tenant)
        .map(|n| format!("{} {}", n["kind"], n["reason"]))
        .collect();
    (statements, notices)
}

#[tokio::test]
async fn a_scoped_plan_finds_the_drift_an_unscoped_plan_finds() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(
            r#"CREATE ROLE outsider LOGIN;
               GRANT "team-a-read" TO outsider;
               GRANT outsider TO "team-a-write";
               GRANT "team-b-read" TO "team-a-read";
               ALTER ROLE "team-a-read" SET work_mem = '64MB';
               ALTER ROLE "team-a-write" IN DATABASE "team-b" SET work_mem = '64MB';
               ALTER DATABASE "team-a" SET work_mem = '64MB';
               GRANT CONNECT ON DATABASE "team-a" TO outsider;
               ALTER ROLE "team-a-read" CREATEDB"#,
        )
        .await
        .unwrap();

    let full = env.plan();
    assert_eq!(full.code, 2, "{}", full.stderr);
    let expected = planned_for(&full.json(), "team/a");
    assert!(
        expected.0.len() >= 6,
        "the drift made by hand is planned away: {expected:?}"
    );
    let scoped = env.run(&["plan", "--tenant", "team/a", "--format", "json"]);
    assert_eq!(scoped.code, 2, "{}", scoped.stderr);
    assert_eq!(planned_for(&scoped.json(), "team/a"), expected);

    let out = env.run(&["apply", "--tenant", "team/a", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let after = env.run(&["plan", "--tenant", "team/a", "--format", "json"]);
    assert_eq!(after.code, 0, "{}", after.stdout);
    assert_eq!(
        planned_for(&env.plan().json(), "team/a"),
        (vec![], vec![]),
        "the unscoped plan agrees that team/a converged"
    );
}

#[tokio::test]
async fn a_scoped_apply_still_refuses_to_reassign_what_a_tenant_role_owns_elsewhere() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.apply();
    let superuser = env.superuser(None).await;
    // The write role owns another database, and a table inside its own tenant database: REASSIGN
    // OWNED would hand over that database too, so both plans refuse.
    superuser
        .batch_execute(r#"CREATE DATABASE elsewhere OWNER "team-a-write""#)
        .await
        .unwrap();
    env.superuser(Some("team-a"))
        .await
        .batch_execute(
            r#"CREATE TABLE public.t (id int); ALTER TABLE public.t OWNER TO "team-a-write""#,
        )
        .await
        .unwrap();

    let full = planned_for(&env.plan().json(), "team/a");
    let blocked = |notices: &[String]| {
        notices
            .iter()
            .any(|n| n.contains("blocked") && n.contains("also owns database(s) elsewhere"))
    };
    assert!(blocked(&full.1), "{full:?}");
    let scoped = env.run(&["plan", "--tenant", "team/a", "--format", "json"]);
    assert_eq!(planned_for(&scoped.json(), "team/a"), full);

    let out = env.run(&["apply", "--tenant", "team/a", "--format", "json"]);
    assert_eq!(
        out.code, 1,
        "a blocked tenant fails the run: {}",
        out.stdout
    );
    let owner: String = superuser
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'elsewhere'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "team-a-write", "nothing was reassigned");
}

#[tokio::test]
async fn a_scoped_apply_reads_only_the_files_that_can_declare_or_collide_with_its_tenant() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.apply();
    // Broken, in a namespace that can neither declare team/new nor make its database name.
    env.write(
        "other/app/values.yaml",
        "postgresqlDatabases:\n  - name: [oops\n",
    );
    env.declare("team", "new", &[("new", "standard")]);
    let out = env.run(&["apply", "--tenant", "team/new", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("read 2 of 3 values file(s)")
            && out.stderr.contains("the other 1 were not read"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("other/app"), "{}", out.stderr);
    assert!(env.database_exists("team-new").await);
    // A run without --tenant still reads it, reports it and holds every drop.
    let full = env.plan();
    assert_eq!(full.code, 1, "{}", full.stderr);
    assert!(
        full.stderr.contains("other/app/values.yaml"),
        "{}",
        full.stderr
    );

    // `team/x-y` and `team-x/y` both become the database `team-x-y`: the scoped run reads the
    // prefix namespace `team` and refuses both.
    env.declare("team-x", "y", &[("y", "standard")]);
    env.declare("team", "xy", &[("x-y", "standard")]);
    for command in ["plan", "apply"] {
        let out = env.run(&[command, "--tenant", "team-x/y", "--format", "json"]);
        assert_eq!(out.code, 1, "{command}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("team-x/y/values.yaml")
                && out.stderr.contains("collides with `team/x-y`"),
            "{command}: {}",
            out.stderr
        );
    }
    assert!(!env.database_exists("team-x-y").await);
    // The tenant applied before is untouched by all this, and so is its plan.
    let out = env.run(&["plan", "--tenant", "team/a", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
}
