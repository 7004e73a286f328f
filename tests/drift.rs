//! Changes made by hand behind pgtenant's back: `plan` and `check` show them, `apply` repairs them.

mod common;

use common::{sqlstate, Env};

#[tokio::test]
async fn drift_is_reported_and_repaired() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.declare("idp-dev", "other", &[("other", "standard")]);
    env.apply();

    let admin = env.connect_as("idp-dev/my-db", "admin").await;
    admin
        .batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1)")
        .await
        .unwrap();
    // A grant revoked and a default privilege removed, by the tenant's own admin.
    admin
        .batch_execute(
            r#"REVOKE SELECT ON items FROM "idp-dev-my-db-read";
               ALTER DEFAULT PRIVILEGES FOR ROLE "idp-dev-my-db-admin" REVOKE SELECT ON TABLES FROM "idp-dev-my-db-read";"#,
        )
        .await
        .unwrap();
    // An owner changed, a role attribute altered, CONNECT granted to PUBLIC, by a DBA.
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(
            r#"ALTER DATABASE "idp-dev-my-db" OWNER TO "idp-dev-my-db-write";
               ALTER ROLE "idp-dev-my-db-read" CREATEDB;
               GRANT CONNECT ON DATABASE "idp-dev-my-db" TO PUBLIC;"#,
        )
        .await
        .unwrap();

    let check = env.run(&["check", "--format", "json"]);
    assert_eq!(
        check.code, 2,
        "drift must exit 2:\n{}\n{}",
        check.stdout, check.stderr
    );
    let report = check.json();
    assert_eq!(report["in_sync"], false);
    let tenants = report["tenants"].as_array().unwrap();
    let my_db = tenants
        .iter()
        .find(|t| t["tenant"] == "idp-dev/my-db")
        .unwrap();
    let other = tenants
        .iter()
        .find(|t| t["tenant"] == "idp-dev/other")
        .unwrap();
    assert_eq!(my_db["status"], "drift");
    assert_eq!(
        other["status"], "in-sync",
        "drift in one tenant is not reported for another"
    );
    assert_eq!(my_db["database_owner"], "idp-dev-my-db-write");
    for key in [
        "roles",
        "roles_with_groups",
        "database_acl",
        "schema_privileges",
        "default_privileges",
    ] {
        assert!(my_db.get(key).is_some(), "check report lacks {key}");
    }
    // ACLs as structured items, not the server's aclitem[] text.
    let public_connect = my_db["database_acl"]
        .as_array()
        .expect("database_acl is an array")
        .iter()
        .find(|item| item["grantee"] == "PUBLIC")
        .expect("the PUBLIC grant shows");
    assert_eq!(public_connect["privileges"], serde_json::json!(["CONNECT"]));
    assert_eq!(public_connect["grantor"], "idp-dev-my-db-write");
    let public_schema = my_db["schema_privileges"]["public"].as_array().unwrap();
    assert!(
        public_schema
            .iter()
            .any(|item| item["grantee"] == "idp-dev-my-db-write"
                && item["privileges"] == serde_json::json!(["USAGE"])
                && item["grantor"] == "idp-dev-my-db-admin"),
        "{public_schema:#?}"
    );
    let tables = my_db["default_privileges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["object"] == "tables")
        .unwrap();
    assert!(
        tables["acl"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["grantee"] != "idp-dev-my-db-read" && item["privileges"].is_array()),
        "{tables:#}"
    );
    let drift: Vec<String> = my_db["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["fix"].as_str().unwrap().to_string())
        .collect();
    let expected = [
        r#"ALTER ROLE "idp-dev-my-db-read" WITH NOCREATEDB;"#,
        r#"ALTER DATABASE "idp-dev-my-db" OWNER TO "idp-dev-my-db-admin";"#,
        r#"REVOKE ALL ON DATABASE "idp-dev-my-db" FROM PUBLIC CASCADE;"#,
        r#"GRANT SELECT ON TABLE "public"."items" TO "idp-dev-my-db-read";"#,
        r#"ALTER DEFAULT PRIVILEGES FOR ROLE "idp-dev-my-db-admin" GRANT SELECT ON TABLES TO "idp-dev-my-db-read";"#,
    ];
    for statement in expected {
        assert!(
            drift.iter().any(|d| d == statement),
            "missing fix {statement} in {drift:#?}"
        );
    }
    assert_eq!(env.plan().code, 2);

    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");

    // Repaired for real.
    let read = env.connect_as("idp-dev/my-db", "read").await;
    assert_eq!(
        read.query("SELECT * FROM items", &[]).await.unwrap().len(),
        1
    );
    admin
        .batch_execute("CREATE TABLE later (id int)")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(&read, "SELECT * FROM later").await,
        None,
        "default privilege restored"
    );
    let row = superuser
        .query_one(
            r#"SELECT (SELECT rolcreatedb FROM pg_roles WHERE rolname = 'idp-dev-my-db-read'),
                      (SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'idp-dev-my-db')"#,
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "idp-dev-my-db-admin");
    let other_uri = env.credentials("idp-dev/other", "read")["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = common::connect(&other_uri, Some("idp-dev-my-db"))
        .await
        .expect_err("PUBLIC CONNECT revoked again");
    assert!(
        refused.contains("permission denied for database"),
        "{refused}"
    );

    let check = env.run(&["check", "--format", "json"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert_eq!(env.plan().code, 0);
}

#[tokio::test]
async fn foreign_memberships_are_revoked() {
    let env = Env::new();
    env.declare("team-a", "app", &[("app", "standard")]);
    env.declare("team-b", "app", &[("app", "standard")]);
    env.apply();
    // Someone lets tenant B's read role act as tenant A's admin.
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(r#"GRANT "team-a-app-admin" TO "team-b-app-read""#)
        .await
        .unwrap();
    let b_read_uri = env.credentials("team-b/app", "read")["uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        common::connect(&b_read_uri, Some("team-a-app"))
            .await
            .is_ok(),
        "precondition: B got into A"
    );

    let plan = env.plan();
    assert_eq!(plan.code, 2);
    assert!(
        plan.stdout
            .contains(r#"REVOKE \"team-a-app-admin\" FROM \"team-b-app-read\""#),
        "{}",
        plan.stdout
    );
    env.apply();
    assert!(
        common::connect(&b_read_uri, Some("team-a-app"))
            .await
            .is_err(),
        "B is out of A again"
    );
}

#[tokio::test]
async fn a_grant_option_cannot_be_used_to_let_another_tenant_in() {
    let env = Env::new();
    env.declare("team-a", "app", &[("app", "standard")]);
    env.declare("team-b", "app", &[("app", "standard")]);
    env.apply();
    let a_admin = env.connect_as("team-a/app", "admin").await;
    a_admin
        .batch_execute(
            r#"GRANT CONNECT ON DATABASE "team-a-app" TO "team-a-app-write" WITH GRANT OPTION"#,
        )
        .await
        .unwrap();
    let a_write = env.connect_as("team-a/app", "write").await;
    a_write
        .batch_execute(r#"GRANT CONNECT ON DATABASE "team-a-app" TO "team-b-app-read""#)
        .await
        .unwrap();
    let b_read = env.credentials("team-b/app", "read")["uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        common::connect(&b_read, Some("team-a-app")).await.is_ok(),
        "precondition: B got into A"
    );

    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");
    assert!(
        common::connect(&b_read, Some("team-a-app")).await.is_err(),
        "B is out of A again"
    );
    assert_eq!(
        env.plan().code,
        0,
        "converged: nothing is planned again and again"
    );
}

#[tokio::test]
async fn disabled_connections_and_foreign_tables_do_not_wedge_a_tenant() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    // A DBA's table in the tenant's schema: admin cannot grant on it, and must not need to.
    let inside = env.superuser(Some("idp-dev-my-db")).await;
    inside
        .batch_execute("CREATE TABLE public.dba_audit (id int)")
        .await
        .unwrap();
    let admin = env.connect_as("idp-dev/my-db", "admin").await;
    admin
        .batch_execute("CREATE TABLE mine (id int)")
        .await
        .unwrap();
    admin
        .batch_execute(r#"REVOKE SELECT ON mine FROM "idp-dev-my-db-read""#)
        .await
        .unwrap();
    assert_eq!(env.apply()["failed"], 0);
    assert_eq!(env.plan().code, 0);

    // Connections switched off by a DBA: the database cannot be inspected this run.
    drop(admin);
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(r#"ALTER DATABASE "idp-dev-my-db" ALLOW_CONNECTIONS false"#)
        .await
        .unwrap();
    let check = env.run(&["check", "--format", "json"]);
    assert_eq!(check.code, 2, "{}", check.stdout);
    assert_eq!(check.json()["tenants"][0]["status"], "deferred");
    let first = env.run(&["apply", "--format", "json"]);
    assert_eq!(
        first.code, 1,
        "an apply that could not look inside a database has not converged:\n{}",
        first.stdout
    );
    assert_eq!(first.json()["ok"], false);
    let second = env.run(&["apply", "--format", "json"]);
    assert_eq!(
        second.code, 0,
        "connections are allowed again, the rest is checked:\n{}",
        second.stdout
    );
    assert_eq!(env.plan().code, 0);
}
