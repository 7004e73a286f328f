//! The seeds' other role models as presets, per-role settings, extra schemas and extensions: each
//! verified by logging in as each role and trying what it may and may not do.

mod common;

use common::{sqlstate, Env, INSUFFICIENT_PRIVILEGE};

fn v1(env: &Env, namespace: &str, folder: &str, entries: &str) {
    env.write(
        &format!("{namespace}/{folder}/values.yaml"),
        &format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n{entries}"),
    );
}

#[tokio::test]
async fn app_migrator_preset_separates_migrations_from_the_app() {
    let env = Env::new();
    v1(
        &env,
        "shop",
        "checkout",
        "  - name: checkout\n    preset: app-migrator\n    extensions: [pgcrypto]\n    roles:\n      app: {connectionLimit: 20, statementTimeout: 30s, logStatements: mod}\n",
    );
    // log_statement is a superuser setting: without the platform's grant the tenant fails with the reason.
    let refused = env.run(&["apply", "--format", "json"]);
    assert_eq!(refused.code, 1);
    let error = &refused.json()["tenants"][0]["error"];
    assert_eq!(error["sqlstate"], "42501", "{error:#}");
    assert!(error["statement"]
        .as_str()
        .unwrap()
        .contains("SET log_statement"));
    // What `pgtenant up` does for the embedded cluster and an RDS master user has: the right to set it.
    env.superuser(None)
        .await
        .batch_execute("GRANT SET ON PARAMETER log_statement TO pgtenant")
        .await
        .unwrap();
    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");
    assert_eq!(env.plan().code, 0);

    let migrator = env.connect_as("shop/checkout", "migrator").await;
    migrator
        .batch_execute(
            "CREATE TABLE app.orders (id bigserial PRIMARY KEY, token text DEFAULT encode(gen_random_bytes(8), 'hex'));
             INSERT INTO app.orders DEFAULT VALUES;",
        )
        .await
        .expect("the migrator owns schema app and runs DDL; pgcrypto is installed");
    let app = env.connect_as("shop/checkout", "app").await;
    app.batch_execute(
        "INSERT INTO app.orders DEFAULT VALUES; UPDATE app.orders SET token = 'x'; DELETE FROM app.orders WHERE id = 1;",
    )
    .await
    .expect("the app has all DML on the migrator's tables");
    assert_eq!(
        sqlstate(&app, "CREATE TABLE app.hack (id int)")
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        sqlstate(&app, "CREATE TABLE public.hack (id int)")
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        sqlstate(&app, "DROP TABLE app.orders").await.as_deref(),
        Some("42501")
    );
    let settings = app
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('log_statement')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (settings.get::<_, String>(0), settings.get::<_, String>(1)),
        ("30s".into(), "mod".into())
    );
    let limit: i32 = env
        .control()
        .await
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'shop-checkout-app'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 20);
    let no_admin = env.run(&["credentials", "shop/checkout", "--role", "admin"]);
    assert_eq!(no_admin.code, 1, "this preset has no admin role");
}

#[tokio::test]
async fn schema_owner_preset_gives_every_object_one_owner() {
    let env = Env::new();
    v1(
        &env,
        "notify",
        "api",
        "  - name: api\n    preset: schema-owner\n    schemas: [reporting]\n",
    );
    let applied = env.apply();
    assert_eq!(applied["failed"], 0, "{applied:#}");
    assert_eq!(env.plan().code, 0);

    let app = env.connect_as("notify/api", "app").await;
    let write = env.connect_as("notify/api", "write").await;
    app.batch_execute("CREATE TABLE jobs (id int); INSERT INTO jobs VALUES (1); CREATE TABLE reporting.daily (n int)")
        .await
        .unwrap();
    write
        .batch_execute("ALTER TABLE jobs ADD COLUMN note text; CREATE TABLE notes (id int)")
        .await
        .expect("write changes what app created: both act as the owner");
    let owners: Vec<String> = write
        .query("SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname IN ('public', 'reporting')", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, ["notify-api-owner"]);
    let read = env.connect_as("notify/api", "read").await;
    for table in ["jobs", "notes", "reporting.daily"] {
        assert_eq!(
            sqlstate(&read, &format!("SELECT * FROM {table}")).await,
            None,
            "{table}"
        );
    }
    assert_eq!(
        sqlstate(&read, "INSERT INTO jobs VALUES (2)")
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    let owner = env.run(&["credentials", "notify/api", "--role", "owner"]);
    assert_eq!(owner.code, 1, "the owner role does not log in");
}

#[tokio::test]
async fn an_unavailable_extension_fails_only_its_tenant() {
    let env = Env::new();
    v1(
        &env,
        "team",
        "broken",
        "  - name: broken\n    extensions: [no_such_extension]\n",
    );
    v1(
        &env,
        "team",
        "fine",
        "  - name: fine\n    extensions: [pgcrypto]\n",
    );
    let out = env.run(&["apply", "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let report = out.json();
    let blocked: Vec<&serde_json::Value> = report["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "blocked")
        .collect();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["tenant"], "team/broken");
    assert!(blocked[0]["reason"]
        .as_str()
        .unwrap()
        .contains("no_such_extension is not available"));
    let fine = env.connect_as("team/fine", "write").await;
    fine.batch_execute("SELECT gen_salt('bf')")
        .await
        .expect("the other tenant got its extension");
    env.connect_as("team/broken", "read").await;
}
