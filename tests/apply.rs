//! Provisioning through the real binary against a real cluster whose control role is not a superuser.

mod common;

use common::{sqlstate, Env, INSUFFICIENT_PRIVILEGE};

#[tokio::test]
async fn apply_creates_database_and_three_login_roles_then_converges() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);

    let plan = env.plan();
    assert_eq!(plan.code, 2, "changes pending:\n{}", plan.stderr);
    assert!(!plan.json()["operations"].as_array().unwrap().is_empty());

    let applied = env.apply();
    assert!(applied["applied"].as_u64().unwrap() > 0);
    assert_eq!(applied["failed"], 0);

    // The control role really is the Aurora/RDS kind: CREATEDB and CREATEROLE, not superuser.
    let control = env.control().await;
    let row = control
        .query_one("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2)
        ),
        (false, true, true)
    );

    let rows = control
        .query(
            "SELECT rolname::text, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls
               FROM pg_roles WHERE rolname LIKE 'idp-dev-my-db-%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        [
            "idp-dev-my-db-admin",
            "idp-dev-my-db-read",
            "idp-dev-my-db-write"
        ]
    );
    for row in &rows {
        assert!(row.get::<_, bool>(1), "login");
        for column in 2..7 {
            assert!(
                !row.get::<_, bool>(column),
                "{} must not have attribute #{column}",
                row.get::<_, String>(0)
            );
        }
    }
    let owner: String = control
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'idp-dev-my-db'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "idp-dev-my-db-admin");

    // Second run: nothing to change, nothing run.
    let again = env.apply();
    assert_eq!(again["applied"], 0, "{again:#}");
    assert!(again["operations"].as_array().unwrap().is_empty());
    let plan = env.plan();
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    assert_eq!(plan.json()["converged"], true);
}

#[tokio::test]
async fn credentials_have_the_platform_keys_and_log_in_over_ssl() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();

    let admin = env.credentials("idp-dev/my-db", "admin");
    for key in [
        "username", "password", "endpoint", "port", "dbname", "sslmode", "uri",
    ] {
        assert!(admin.get(key).is_some(), "missing key {key}: {admin:#}");
    }
    assert_eq!(admin["username"], "idp-dev-my-db-admin");
    assert_eq!(admin["dbname"], "idp-dev-my-db");
    assert_eq!(admin["sslmode"], "require");
    assert_eq!(admin["endpoint"], "127.0.0.1");
    assert_eq!(admin["port"], env.cluster.cluster.port().unwrap());
    let password = admin["password"].as_str().unwrap();
    assert!(password.len() >= 32 && password.chars().all(|c| c.is_ascii_alphanumeric()));

    for role in ["admin", "write", "read"] {
        let client = env.connect_as("idp-dev/my-db", role).await;
        let row = client
            .query_one(
                "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), format!("idp-dev-my-db-{role}"));
        assert!(row.get::<_, bool>(1), "{role} connected without SSL");
    }

    // A non-SSL login is refused, as the seeds' "Common errors" section describes.
    let uri = admin["uri"]
        .as_str()
        .unwrap()
        .replace("sslmode=require", "sslmode=disable");
    let refused = common::connect(&uri, None)
        .await
        .expect_err("non-SSL login must fail");
    assert!(refused.contains("no encryption"), "{refused}");

    // Passwords survive further applies.
    env.apply();
    assert_eq!(
        env.credentials("idp-dev/my-db", "admin")["password"],
        admin["password"]
    );

    // Other formats.
    let uri = env.run(&[
        "credentials",
        "idp-dev/my-db",
        "--role",
        "read",
        "--format",
        "uri",
    ]);
    assert!(uri
        .stdout
        .trim()
        .starts_with("postgresql://idp-dev-my-db-read:"));
    assert!(uri
        .stdout
        .trim()
        .ends_with("/idp-dev-my-db?sslmode=require"));
    let env_format = env.run(&[
        "credentials",
        "idp-dev/my-db",
        "--role",
        "read",
        "--format",
        "env",
    ]);
    for var in [
        "DB_NAME='idp-dev-my-db'",
        "DB_USER='idp-dev-my-db-read'",
        "DB_PASSWORD=",
        "DB_HOST=",
        "DB_PORT=",
    ] {
        assert!(
            env_format.stdout.contains(var),
            "{var} missing:\n{}",
            env_format.stdout
        );
    }
}

#[tokio::test]
async fn no_plaintext_password_reaches_the_server_log() {
    let env = Env::new();
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute("ALTER SYSTEM SET log_statement = 'all'")
        .await
        .unwrap();
    superuser
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    env.wait_for_setting("log_statement", "all").await;
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();

    let log = std::fs::read_to_string(env.cluster.cluster.log_file()).unwrap();
    assert!(
        log.contains("CREATE ROLE"),
        "log_statement=all must have logged the DDL"
    );
    assert!(
        log.contains("SCRAM-SHA-256$4096:"),
        "roles get verifiers, not passwords"
    );
    for role in ["admin", "write", "read"] {
        let password = env.credentials("idp-dev/my-db", role)["password"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            !log.contains(&password),
            "the {role} password appears in the server log"
        );
    }
}

#[tokio::test]
async fn tenant_roles_have_least_privilege() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let tenant = "idp-dev/my-db";

    let admin = env.connect_as(tenant, "admin").await;
    admin
        .batch_execute(
            "CREATE TABLE items (id bigserial PRIMARY KEY, name text);
             INSERT INTO items (name) VALUES ('first');
             CREATE SCHEMA reporting;
             CREATE TABLE reporting.daily (day date, total int);
             INSERT INTO reporting.daily VALUES ('2026-01-01', 3);",
        )
        .await
        .expect("admin owns the database and may create schemas and tables");

    let read = env.connect_as(tenant, "read").await;
    assert_eq!(
        read.query("SELECT * FROM items", &[]).await.unwrap().len(),
        1
    );
    // A table admin creates in a schema admin creates later: readable with no extra GRANT (seed 000's gap).
    assert_eq!(
        read.query("SELECT * FROM reporting.daily", &[])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        sqlstate(&read, "INSERT INTO items (name) VALUES ('x')")
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        sqlstate(&read, "UPDATE items SET name = 'x'")
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        sqlstate(&read, "CREATE TABLE r (id int)").await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );

    let write = env.connect_as(tenant, "write").await;
    write
        .batch_execute(
            "INSERT INTO items (name) VALUES ('second');
             UPDATE items SET name = 'renamed' WHERE name = 'first';
             DELETE FROM items WHERE name = 'renamed';
             INSERT INTO reporting.daily VALUES ('2026-01-02', 5);
             SELECT nextval('items_id_seq');",
        )
        .await
        .expect("write may change data, use sequences, also in later schemas");
    write
        .batch_execute("TRUNCATE reporting.daily")
        .await
        .expect("write may TRUNCATE");
    assert_eq!(
        sqlstate(&write, "CREATE TABLE w (id int)").await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        sqlstate(&write, "CREATE SCHEMA w").await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        sqlstate(&write, "DROP TABLE items").await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        sqlstate(&write, "CREATE TABLE reporting.w (id int)")
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );

    // Nothing that reaches past the database.
    assert_eq!(
        sqlstate(&admin, "CREATE DATABASE sneaky").await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        sqlstate(&admin, "CREATE ROLE sneaky").await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );

    // The objects created since the last apply need no new statements.
    let plan = env.plan();
    assert_eq!(plan.code, 0, "{}", plan.stdout);
}

#[tokio::test]
async fn tenants_cannot_reach_each_other() {
    let env = Env::new();
    env.declare("team-a", "app", &[("app", "standard")]);
    env.declare("team-b", "app", &[("app", "standard")]);
    env.apply();

    for role in ["admin", "write", "read"] {
        let uri = env.credentials("team-a/app", role)["uri"]
            .as_str()
            .unwrap()
            .to_string();
        let error = common::connect(&uri, Some("team-b-app"))
            .await
            .expect_err("A must not connect to B");
        assert!(
            error.contains("permission denied for database"),
            "{role}: {error}"
        );
        // Nor to the maintenance database, where PUBLIC would otherwise get in.
        let ok_elsewhere = common::connect(&uri, Some("team-a-app")).await;
        assert!(ok_elsewhere.is_ok());
    }
}

#[tokio::test]
async fn tables_created_before_the_grants_are_covered_by_the_next_apply() {
    let env = Env::new();
    // A database provisioned by hand (the old platform): roles, database, a table, no grants.
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(
            r#"CREATE ROLE "legacy-shop-admin" LOGIN; CREATE ROLE "legacy-shop-read" LOGIN;
               CREATE ROLE "legacy-shop-write" LOGIN;"#,
        )
        .await
        .unwrap();
    superuser
        .batch_execute(r#"CREATE DATABASE "legacy-shop" OWNER "legacy-shop-admin""#)
        .await
        .unwrap();
    let inside = env.superuser(Some("legacy-shop")).await;
    inside
        .batch_execute(
            r#"SET ROLE "legacy-shop-admin"; CREATE TABLE old_orders (id int); INSERT INTO old_orders VALUES (1), (2);"#,
        )
        .await
        .unwrap();

    env.declare("legacy", "shop", &[("shop", "protected")]);
    let applied = env.apply();
    let adopted = applied["operations"].as_array().unwrap();
    assert!(adopted.iter().any(|op| op["why"]
        .as_str()
        .unwrap()
        .contains("adopt the existing database")));

    let read = env.connect_as("legacy/shop", "read").await;
    let rows = read
        .query("SELECT id FROM old_orders ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "the data is intact and readable");
    assert_eq!(env.plan().code, 0);
}

#[tokio::test]
async fn one_tenant_failing_does_not_stop_the_others() {
    let env = Env::new();
    // A database of that name already exists and belongs to the superuser: a control role without
    // superuser cannot take it over, so this tenant must fail with PostgreSQL's own reason.
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(r#"CREATE DATABASE "team-taken""#)
        .await
        .unwrap();
    env.declare("team", "taken", &[("taken", "standard")]);
    env.declare("team", "fine", &[("fine", "standard")]);

    let out = env.run(&["apply", "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let report = out.json();
    let tenants = report["tenants"].as_array().unwrap();
    let taken = tenants
        .iter()
        .find(|t| t["tenant"] == "team/taken")
        .unwrap();
    let fine = tenants.iter().find(|t| t["tenant"] == "team/fine").unwrap();
    assert_eq!(
        taken["error"]["sqlstate"], INSUFFICIENT_PRIVILEGE,
        "{taken:#}"
    );
    assert!(taken["error"]["statement"]
        .as_str()
        .unwrap()
        .contains("team-taken"));
    assert!(fine["error"].is_null());
    env.connect_as("team/fine", "read").await;

    let text = env.run(&["apply"]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout.contains("FAILED  team/taken"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("SQLSTATE 42501"), "{}", text.stdout);
}
