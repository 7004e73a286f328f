//! One tenant must not be able to reach into another or into pgtenant's own sessions: grants to
//! another tenant's roles, session defaults on a database or a role in one database, objects that
//! escape the owner role, and dependencies that would keep a removed tenant's roles alive.

mod common;

use common::{connect, Env};
use serde_json::Value;

/// `check --format json`, which must report drift (exit 2): the tenant's drift items.
fn drift_of(env: &Env, tenant: &str) -> Vec<Value> {
    let check = env.run(&["check", "--format", "json"]);
    assert_eq!(
        check.code, 2,
        "drift must exit 2:\n{}\n{}",
        check.stdout, check.stderr
    );
    let report = check.json();
    let found = report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == tenant)
        .unwrap_or_else(|| panic!("{tenant} not in the report"))
        .clone();
    assert_eq!(found["status"], "drift", "{found:#}");
    found["drift"].as_array().unwrap().clone()
}

fn fixes(drift: &[Value]) -> Vec<&str> {
    drift.iter().map(|d| d["fix"].as_str().unwrap()).collect()
}

/// The item whose fix is `statement`, with a phase and a reason.
fn item<'a>(drift: &'a [Value], statement: &str) -> &'a Value {
    let found = drift
        .iter()
        .find(|d| d["fix"] == statement)
        .unwrap_or_else(|| panic!("no drift item {statement} in {drift:#?}"));
    assert!(found["phase"].as_str().is_some_and(|p| !p.is_empty()));
    assert!(found["what"].as_str().is_some_and(|w| !w.is_empty()));
    found
}

fn assert_in_sync(env: &Env) {
    let check = env.run(&["check", "--format", "json"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
}

async fn count(env: &Env, database: Option<&str>, sql: &str) -> i64 {
    env.superuser(database)
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// How many `ALTER DATABASE … SET` rows `database` has.
async fn database_settings(env: &Env, database: &str) -> i64 {
    env.control()
        .await
        .query_one(
            "SELECT count(*) FROM pg_db_role_setting
              WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = $1) AND setrole = 0",
            &[&database],
        )
        .await
        .unwrap()
        .get(0)
}

fn drop_statements(plan: &Value) -> Vec<(String, Option<String>, String)> {
    plan["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["phase"] == "drop")
        .map(|op| {
            (
                op["statement"].as_str().unwrap().to_string(),
                op["database"].as_str().map(str::to_string),
                op["why"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_grant_from_another_tenant_does_not_block_removal() {
    let env = Env::new();
    env.declare("team", "keep", &[("keep", "standard")]);
    env.declare("team", "a", &[("a", "protected")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();

    // Tenant a's admin lets tenant b's read role in. Tenant a is then removed from the repo and
    // retained (protected): no longer reconciled, so nothing revokes the grant on its side.
    let a_admin = env.connect_as("team/a", "admin").await;
    a_admin
        .batch_execute(r#"CREATE TABLE shared (id int); GRANT SELECT ON shared TO "team-b-read""#)
        .await
        .unwrap();
    env.remove("team/a/values.yaml");
    env.apply();

    env.remove("team/b/values.yaml");
    let plan = env.plan();
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    let drops = drop_statements(&plan.json());
    assert!(
        drops.iter().any(|(statement, database, why)| statement
            == r#"DROP OWNED BY "team-b-read";"#
            && database.as_deref() == Some("team-a")
            && why.contains("in database team-a")),
        "{drops:#?}"
    );
    let position = |prefix: &str| drops.iter().position(|(s, _, _)| s.starts_with(prefix));
    assert!(position("DROP OWNED") < position("DROP ROLE"), "{drops:#?}");

    let out = env.run(&["apply", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(env.roles_like("team-b-").await, 0, "the roles are gone");
    assert_eq!(
        count(&env, Some("team-a"), "SELECT count(*) FROM shared").await,
        0,
        "tenant a's table is kept (only the grant went)"
    );
    assert_eq!(env.plan().code, 0);
}

#[tokio::test]
async fn a_temp_table_in_postgres_does_not_block_removal() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();

    let uri = env.credentials("team/b", "write")["uri"]
        .as_str()
        .unwrap()
        .to_string();
    let session = connect(&uri, Some("postgres")).await.unwrap();
    session
        .batch_execute("CREATE TEMP TABLE scratch (id int)")
        .await
        .unwrap();

    env.remove("team/b/values.yaml");
    let plan = env.plan().json();
    let drops = drop_statements(&plan);
    assert!(
        drops.iter().any(|(statement, database, _)| statement
            .starts_with("SELECT pg_catalog.pg_terminate_backend")
            && statement.contains("'team-b-write'")
            && database.is_none()),
        "{drops:#?}"
    );
    assert!(
        drops.iter().any(
            |(statement, database, _)| statement.starts_with("DROP OWNED BY")
                && statement.contains(r#""team-b-write""#)
                && database.as_deref() == Some("postgres")
        ),
        "{drops:#?}"
    );

    let out = env.run(&["apply", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(env.roles_like("team-b-").await, 0);
    assert!(
        session.batch_execute("SELECT 1").await.is_err(),
        "the session in postgres was ended"
    );
}

#[tokio::test]
async fn grants_across_tenants_are_drift_and_revoked() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();

    let a_admin = env.connect_as("team/a", "admin").await;
    a_admin
        .batch_execute(
            r#"CREATE TABLE shared (id int);
               CREATE SEQUENCE counter;
               CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42';
               CREATE FUNCTION answer(x int) RETURNS int LANGUAGE sql AS 'SELECT x';
               GRANT SELECT ON shared TO "team-b-read";
               GRANT USAGE ON SEQUENCE counter TO "team-b-write";
               GRANT EXECUTE ON FUNCTION answer() TO "team-b-read";
               GRANT USAGE ON SCHEMA public TO "team-b-read";
               ALTER DEFAULT PRIVILEGES FOR ROLE "team-a-admin" GRANT SELECT ON TABLES TO "team-b-read";"#,
        )
        .await
        .unwrap();
    // A routine the tenant's roles have no privilege on at all, in the same schema: the revoke
    // names the granted overload only, so it does not trip over this one.
    env.superuser(Some("team-a"))
        .await
        .batch_execute(
            "CREATE FUNCTION public.dba_only() RETURNS int LANGUAGE sql AS 'SELECT 0';
             REVOKE ALL ON FUNCTION public.dba_only() FROM PUBLIC",
        )
        .await
        .unwrap();

    let drift = drift_of(&env, "team/a");
    for statement in [
        r#"REVOKE ALL ON TABLE "public"."shared" FROM "team-b-read" CASCADE;"#,
        r#"REVOKE ALL ON SEQUENCE "public"."counter" FROM "team-b-write" CASCADE;"#,
        r#"REVOKE ALL ON ROUTINE "public"."answer"() FROM "team-b-read" CASCADE;"#,
        r#"REVOKE ALL ON SCHEMA "public" FROM "team-b-read" CASCADE;"#,
        r#"ALTER DEFAULT PRIVILEGES FOR ROLE "team-a-admin" REVOKE ALL ON TABLES FROM "team-b-read" CASCADE;"#,
    ] {
        let found = item(&drift, statement);
        assert!(
            found["what"]
                .as_str()
                .unwrap()
                .contains("a role of tenant team/b"),
            "{found:#}"
        );
    }
    let report = env.run(&["check", "--format", "json"]).json();
    let b = report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "team/b")
        .unwrap();
    assert_eq!(b["status"], "in-sync", "the drift is tenant a's: {b:#}");

    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");
    assert_in_sync(&env);
    let left = count(
        &env,
        Some("team-a"),
        r#"SELECT count(*) FROM (
             SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relname IN ('shared', 'counter')
             UNION ALL SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE proname = 'answer'
             UNION ALL SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspname = 'public'
             UNION ALL SELECT (aclexplode(defaclacl)).grantee FROM pg_default_acl) g
           WHERE grantee IN (SELECT oid FROM pg_roles WHERE rolname LIKE 'team-b-%')"#,
    )
    .await;
    assert_eq!(
        left, 0,
        "no privilege of tenant b's roles is left in tenant a"
    );
}

#[tokio::test]
async fn database_level_role_setting_is_drift_and_removed() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();

    let a_admin = env.connect_as("team/a", "admin").await;
    a_admin
        .batch_execute(
            r#"ALTER DATABASE "team-a" SET role = 'team-b-admin';
               ALTER DATABASE "team-a" SET work_mem = '64kB'"#,
        )
        .await
        .unwrap();

    let drift = drift_of(&env, "team/a");
    let found = item(&drift, r#"ALTER DATABASE "team-a" RESET ALL;"#);
    assert_eq!(found["phase"], "database");
    assert!(
        found["what"]
            .as_str()
            .unwrap()
            .contains("role=team-b-admin"),
        "{found:#}"
    );

    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");
    assert_eq!(database_settings(&env, "team-a").await, 0);
    assert_in_sync(&env);
}

#[tokio::test]
async fn per_database_role_setting_is_drift_and_removed() {
    let env = Env::new();
    env.write(
        "team/a/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    roles:\n      write: {statementTimeout: 30s}\n",
    );
    env.apply();

    let write = env.connect_as("team/a", "write").await;
    write
        .batch_execute(
            r#"ALTER ROLE current_user IN DATABASE "team-a" SET statement_timeout = '1ms';
               ALTER ROLE current_user IN DATABASE postgres SET statement_timeout = '1ms'"#,
        )
        .await
        .unwrap();

    let drift = drift_of(&env, "team/a");
    let fixes = fixes(&drift);
    for statement in [
        r#"ALTER ROLE "team-a-write" IN DATABASE "team-a" RESET ALL;"#,
        r#"ALTER ROLE "team-a-write" IN DATABASE "postgres" RESET ALL;"#,
    ] {
        assert_eq!(item(&drift, statement)["phase"], "roles");
    }
    assert!(
        fixes.iter().all(|f| !f.contains("RESET statement_timeout")),
        "the spec's own setting (for every database) is kept: {fixes:#?}"
    );

    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");
    let settings: Vec<(i64, Vec<String>)> = env
        .superuser(None)
        .await
        .query(
            "SELECT setdatabase::int8, setconfig FROM pg_db_role_setting
              WHERE setrole = (SELECT oid FROM pg_roles WHERE rolname = 'team-a-write')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(settings, [(0, vec!["statement_timeout=30000".to_string()])]);
    assert_in_sync(&env);
}

#[tokio::test]
async fn control_sessions_ignore_a_hostile_database_role_default() {
    let env = Env::new();
    env.declare("team", "a", &[("a", "standard")]);
    env.declare("team", "b", &[("b", "standard")]);
    env.apply();

    // Tenant b's admin makes every session on its database act as tenant a's admin, which the
    // control role may become (it is a member of every tenant role).
    let b_admin = env.connect_as("team/b", "admin").await;
    b_admin
        .batch_execute(r#"ALTER DATABASE "team-b" SET role = 'team-a-admin'"#)
        .await
        .unwrap();

    let connector = pgtenant_engine::Connector::from_url(&env.admin_url()).unwrap();
    let control = connector.connect(Some("team-b")).await.unwrap();
    let row = control
        .query_one("SELECT current_user::text, session_user::text", &[])
        .await
        .unwrap();
    let (current, session): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        current, session,
        "a control session acts as itself, not as {current}"
    );
    assert_eq!(Some(session.as_str()), connector.user());

    // Reported and removed; what apply creates in the database has the right owner and grantor.
    let drift = drift_of(&env, "team/b");
    item(&drift, r#"ALTER DATABASE "team-b" RESET ALL;"#);
    env.write(
        "team/b/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: b\n    schemas: [audit]\n",
    );
    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");
    let superuser = env.superuser(Some("team-b")).await;
    let row = superuser
        .query_one(
            "SELECT pg_get_userbyid(nspowner)::text,
                    (SELECT string_agg(DISTINCT pg_get_userbyid(a.grantor)::text, ',')
                       FROM aclexplode(nspacl) a)
               FROM pg_namespace WHERE nspname = 'audit'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "team-b-admin");
    assert_eq!(row.get::<_, String>(1), "team-b-admin");
    assert_eq!(database_settings(&env, "team-b").await, 0);
    assert_in_sync(&env);
}

#[tokio::test]
async fn schema_owner_objects_not_owned_by_owner_are_reassigned() {
    let env = Env::new();
    env.write(
        "shop/cart/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: cart\n    preset: schema-owner\n",
    );
    env.apply();

    // The app login leaves the owner role and creates objects it owns itself.
    let app = env.connect_as("shop/cart", "app").await;
    app.batch_execute(
        "SET ROLE NONE;
         CREATE TABLE escape (id int); INSERT INTO escape VALUES (7);
         CREATE FUNCTION hidden() RETURNS int LANGUAGE sql AS 'SELECT 1';",
    )
    .await
    .unwrap();
    let read = env.connect_as("shop/cart", "read").await;
    assert!(
        read.query("SELECT * FROM escape", &[]).await.is_err(),
        "the read login cannot read the escaped table"
    );

    let drift = drift_of(&env, "shop/cart");
    let found = item(
        &drift,
        r#"REASSIGN OWNED BY "shop-cart-app" TO "shop-cart-owner";"#,
    );
    assert!(
        found["what"].as_str().unwrap().contains("public.escape"),
        "{found:#}"
    );

    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");
    let row = env
        .superuser(Some("shop-cart"))
        .await
        .query_one(
            "SELECT (SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE relname = 'escape'),
                    (SELECT pg_get_userbyid(proowner)::text FROM pg_proc WHERE proname = 'hidden'),
                    (SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'shop-cart')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "shop-cart-owner");
    assert_eq!(row.get::<_, String>(1), "shop-cart-owner");
    assert_eq!(row.get::<_, String>(2), "shop-cart-owner");
    let rows = read
        .query("SELECT id FROM escape", &[])
        .await
        .expect("the read login reads it once the owner role owns it");
    assert_eq!(rows.len(), 1);
    assert_in_sync(&env);
}
