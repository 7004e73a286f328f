//! pgtenant's control database: the apply lock lives in a database of its own that no tenant can
//! enter, so no tenant login can stall apply or rotate, and runs through admin URLs naming
//! different databases still exclude each other.

mod common;

use common::{connect, Env};
use pgtenant_engine::{ApplyLock, Connector, CONTROL_DATABASE};

/// The advisory lock key pgtenant used in the admin URL's database before it had its own.
const OLD_LOCK_KEY: i64 = 0x7067_7465_6e61_6e74;

fn uri(env: &Env, role: &str) -> String {
    env.credentials("idp-dev/my-db", role)["uri"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The admin URL with another database in its path.
fn admin_url_naming(env: &Env, database: &str) -> String {
    let url = env.admin_url();
    let (base, query) = url.split_once('?').unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{database}?{query}")
}

#[tokio::test]
async fn a_tenant_login_cannot_stall_apply() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let tenant = uri(&env, "write");

    // PUBLIC may connect to `postgres`: a tenant login takes the old key there, and the same key
    // (and another) in its own database.
    let in_postgres = connect(&tenant, Some("postgres")).await.unwrap();
    let in_own = connect(&tenant, None).await.unwrap();
    for client in [&in_postgres, &in_own] {
        client
            .query_one("SELECT pg_advisory_lock($1)", &[&OLD_LOCK_KEY])
            .await
            .unwrap();
        client
            .query_one("SELECT pg_advisory_lock(1)", &[])
            .await
            .unwrap();
    }

    env.declare("idp-dev", "other", &[("other", "standard")]);
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let out = env.run(&["rotate", "idp-dev/my-db", "--role", "read"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // And the control database itself is closed to it.
    let refused = connect(&tenant, Some(CONTROL_DATABASE))
        .await
        .expect_err("a tenant login cannot enter the control database");
    assert!(
        refused.contains("permission denied for database"),
        "{refused}"
    );
    drop((in_postgres, in_own));
}

#[tokio::test]
async fn two_admin_urls_naming_different_databases_are_serialised() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();

    // Another pgtenant, configured with an admin URL that names the tenant's database.
    let other_url = format!(
        "{}&application_name=ops-runner",
        admin_url_naming(&env, "idp-dev-my-db")
    );
    let other = Connector::from_url(&other_url).unwrap();
    // The embedded cluster's admin URL is its Unix socket when the server listens there.
    let holder_client = if other.on_socket() {
        "client local socket"
    } else {
        "client 127.0.0.1:"
    };
    let holder = ApplyLock::acquire(&other).await.expect("the lock is free");

    env.declare("idp-dev", "other", &[("other", "standard")]);
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("another `pgtenant apply` is running against this cluster"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("application_name `ops-runner apply lock (pid "),
        "the holder is named by its application_name: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(holder_client),
        "and by its client address ({holder_client}): {}",
        out.stderr
    );
    let out = env.run(&["rotate", "idp-dev/my-db", "--role", "read"]);
    assert_eq!(out.code, 1, "rotate waits its turn too: {}", out.stderr);
    assert!(out.stderr.contains("ops-runner"), "{}", out.stderr);

    drop(holder);
    env.wait_until_advisory_locks_are_released().await;
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
}

/// Privileges on the control database: (owner, PUBLIC may connect, other grantees).
async fn control_database_acl(env: &Env) -> (String, bool, Vec<String>) {
    let row = env
        .superuser(None)
        .await
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text,
                    has_database_privilege('public', datname, 'CONNECT'),
                    ARRAY(SELECT pg_get_userbyid(a.grantee)::text
                            FROM aclexplode(COALESCE(datacl, acldefault('d', datdba))) a
                           WHERE a.grantee NOT IN (0, datdba))
               FROM pg_database WHERE datname = $1",
            &[&CONTROL_DATABASE],
        )
        .await
        .expect("the control database exists after the first apply");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn the_control_database_is_private() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let control_role = pgtenant_cluster::CONTROL_ROLE.to_string();
    assert_eq!(
        control_database_acl(&env).await,
        (control_role.clone(), false, vec![])
    );
    let tenant = uri(&env, "admin");
    let refused = connect(&tenant, Some(CONTROL_DATABASE)).await.unwrap_err();
    assert!(
        refused.contains("permission denied for database"),
        "{refused}"
    );

    // Opened up by hand: the next run that takes the lock closes it again.
    env.superuser(None)
        .await
        .batch_execute(&format!(
            r#"GRANT CONNECT ON DATABASE {CONTROL_DATABASE} TO PUBLIC;
               GRANT ALL ON DATABASE {CONTROL_DATABASE} TO "idp-dev-my-db-read""#
        ))
        .await
        .unwrap();
    assert_eq!(env.run(&["apply"]).code, 0);
    assert_eq!(
        control_database_acl(&env).await,
        (control_role, false, vec![])
    );

    // A database of that name that is not the control role's is refused, not used.
    let superuser = env.superuser(None).await;
    for statement in ["DROP DATABASE", "CREATE DATABASE"] {
        superuser
            .batch_execute(&format!("{statement} {CONTROL_DATABASE}"))
            .await
            .unwrap();
    }
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("belongs to postgres, not to the control role"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn racing_first_runs_share_one_control_database() {
    let env = Env::new();
    let connector = Connector::from_url(&env.admin_url()).unwrap();
    let session = || pgtenant_engine::control::session(&connector);
    let sessions = tokio::join!(session(), session(), session(), session());
    for session in [sessions.0, sessions.1, sessions.2, sessions.3] {
        session.expect("a run that lost the race to create the database uses the winner's");
    }
    let (_, public, others) = control_database_acl(&env).await;
    assert!(!public && others.is_empty());

    // A tenant-like login (no membership, no CONNECT grant) cannot get in.
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute("CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw'")
        .await
        .unwrap();
    let url = env.admin_url();
    let (_, rest) = url.split_once('@').unwrap();
    let outsider = format!("postgresql://outsider:outsider-pw@{rest}");
    let refused = connect(&outsider, Some(CONTROL_DATABASE))
        .await
        .unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    assert_eq!(
        common::sqlstate(
            &connect(&outsider, Some("postgres")).await.unwrap(),
            "SELECT 1"
        )
        .await,
        None,
        "only the control database is closed to it"
    );
}
