//! What the control role holds on tenant databases: a CONNECT of its own, so that a connection
//! does not depend on (nor walk) its memberships in the tenant's roles.

mod common;

use common::{connect, Env};
use pgtenant_cluster::CONTROL_ROLE;

/// The control role's privileges on `database`, granted to it directly (not through a membership).
async fn control_privileges(env: &Env, database: &str) -> Vec<String> {
    env.superuser(None)
        .await
        .query_one(
            "SELECT ARRAY(SELECT a.privilege_type::text
                            FROM pg_database d, aclexplode(d.datacl) a
                           WHERE d.datname = $1 AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $2)
                           ORDER BY 1)",
            &[&database, &CONTROL_ROLE],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_control_role_connects_to_tenant_databases_directly() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let database = "idp-dev-my-db";
    assert_eq!(control_privileges(&env, database).await, ["CONNECT"]);
    let plan = env.plan();
    assert_eq!(
        plan.code, 0,
        "its own CONNECT is not drift:\n{}",
        plan.stdout
    );

    // Without any membership in the tenant's roles, the control role still gets in.
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(&format!(
            r#"REVOKE "idp-dev-my-db-admin", "idp-dev-my-db-write", "idp-dev-my-db-read" FROM "{CONTROL_ROLE}""#
        ))
        .await
        .unwrap();
    connect(&env.admin_url(), Some(database))
        .await
        .expect("the control role connects through its own CONNECT");
    env.apply();

    // Taken away by hand, it is planned back, as pgtenant's own.
    superuser
        .batch_execute(&format!(
            r#"REVOKE CONNECT ON DATABASE "{database}" FROM "{CONTROL_ROLE}""#
        ))
        .await
        .unwrap();
    let plan = env.run(&["plan", "--format", "json"]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    let operations = plan.json()["operations"].as_array().unwrap().clone();
    let statements: Vec<&str> = operations
        .iter()
        .map(|op| op["statement"].as_str().unwrap())
        .collect();
    assert_eq!(
        statements,
        [format!(
            r#"GRANT CONNECT ON DATABASE "{database}" TO "{CONTROL_ROLE}";"#
        )]
    );
    assert!(operations[0]["why"]
        .as_str()
        .unwrap()
        .starts_with("pgtenant's own"));
    env.apply();
    assert_eq!(control_privileges(&env, database).await, ["CONNECT"]);
    assert_eq!(env.plan().code, 0);
}

/// A new database is set up on the control connection as its owner (in a transaction that borrows
/// the owner and SETs LOCAL ROLE to it): the owner's rights are checked at once. A worker keeps its
/// control connection for its next tenants: more new
/// tenants than workers (at most twice the cores) prove it is the control role again each time
/// (a tenant owner may not create roles), and the result is what it was: owned by the owner, its
/// grants made by the owner, the control role's own CONNECT.
#[tokio::test]
async fn new_databases_are_set_up_as_their_owners_and_the_control_connection_is_reset() {
    let env = Env::new();
    let names: Vec<String> = (0..2 * std::thread::available_parallelism().map_or(2, |n| n.get())
        + 2)
        .map(|i| format!("db{i}"))
        .collect();
    let entries: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "standard")).collect();
    env.declare("idp-dev", "many", &entries);
    let applied = env.run(&["apply", "--format", "json"]);
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    let superuser = env.superuser(None).await;
    for name in &names {
        let database = format!("idp-dev-{name}");
        let owner = format!("{database}-admin");
        let row = superuser
            .query_one(
                "SELECT pg_get_userbyid(d.datdba)::text,
                        ARRAY(SELECT DISTINCT pg_get_userbyid(a.grantor)::text FROM aclexplode(d.datacl) a)
                   FROM pg_database d WHERE d.datname = $1",
                &[&database],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), owner);
        assert_eq!(row.get::<_, Vec<String>>(1), std::slice::from_ref(&owner));
        assert_eq!(control_privileges(&env, &database).await, ["CONNECT"]);
    }
    let plan = env.plan();
    assert_eq!(plan.code, 0, "{}", plan.stdout);
}

/// Every role the control role is a member of (pg_auth_members, any grantor or option).
async fn control_memberships(env: &Env) -> Vec<String> {
    env.superuser(None)
        .await
        .query_one(
            "SELECT ARRAY(SELECT pg_get_userbyid(m.roleid)::text FROM pg_auth_members m
                           WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1)
                           ORDER BY 1)",
            &[&CONTROL_ROLE],
        )
        .await
        .unwrap()
        .get(0)
}

/// The control role holds no standing membership in any tenant role: it borrows a role inside
/// the transaction that needs it (GRANT after BEGIN, REVOKE before COMMIT). After an apply of
/// several tenants (three presets' worth of roles, a declared schema) it is a member of nothing,
/// and a second plan is clean. Memberships an earlier version left behind are revoked once, as
/// pgtenant's own, and then never planned again.
#[tokio::test]
async fn after_apply_the_control_role_is_a_member_of_no_tenant_role_and_a_second_plan_is_clean() {
    let env = Env::new();
    env.declare("idp-dev", "many", &[("a", "standard"), ("b", "protected")]);
    env.write(
        "shop/cart/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: cart\n    mode: standard\n    schemas: [orders]\n  \
         - name: checkout\n    mode: standard\n    preset: app-migrator\n    extensions: [pgcrypto]\n",
    );
    let applied = env.run(&["apply", "--format", "json"]);
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    assert_eq!(control_memberships(&env).await, Vec::<String>::new());
    let plan = env.plan();
    assert_eq!(plan.code, 0, "{}", plan.stdout);

    // An earlier version's standing memberships: revoked once, explained, then clean.
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(&format!(
            r#"GRANT "idp-dev-a-admin", "idp-dev-a-read" TO "{CONTROL_ROLE}""#
        ))
        .await
        .unwrap();
    let plan = env.run(&["plan", "--format", "json"]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    let operations = plan.json()["operations"].as_array().unwrap().clone();
    assert_eq!(operations.len(), 2, "{}", plan.stdout);
    for op in &operations {
        assert!(op["statement"]
            .as_str()
            .unwrap()
            .ends_with(&format!(r#" FROM "{CONTROL_ROLE}";"#)));
        assert!(op["why"].as_str().unwrap().starts_with("pgtenant's own"));
    }
    env.apply();
    assert_eq!(control_memberships(&env).await, Vec::<String>::new());
    assert_eq!(env.plan().code, 0);

    // A removal (final backup, DROP DATABASE, DROP OWNED, DROP ROLE) works without memberships
    // and leaves none.
    env.remove("shop/cart/values.yaml");
    let removed = env.run(&[
        "apply",
        "--max-drops",
        "2",
        "--allow-namespace-removal",
        "shop",
        "--format",
        "json",
    ]);
    assert_eq!(removed.code, 0, "{}\n{}", removed.stdout, removed.stderr);
    assert!(!env.database_exists("shop-cart").await);
    assert!(!env.database_exists("shop-checkout").await);
    assert_eq!(env.roles_like("shop-c").await, 0);
    assert_eq!(control_memberships(&env).await, Vec::<String>::new());
    assert_eq!(env.plan().code, 0);
}

/// A statement that fails after the borrowed GRANT rolls the GRANT back with it: the database was
/// given to a role pgtenant cannot act as, so handing it back to the owner fails inside the
/// borrowing transaction, and the control role is a member of nothing afterwards.
#[tokio::test]
async fn a_failure_after_the_borrowed_grant_leaves_no_membership() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let superuser = env.superuser(None).await;
    superuser
        .batch_execute(
            r#"CREATE ROLE "stranger" NOLOGIN;
               ALTER DATABASE "idp-dev-my-db" OWNER TO "stranger";"#,
        )
        .await
        .unwrap();
    let failed = env.run(&["apply", "--format", "json"]);
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        failed.stdout.contains("ALTER DATABASE") || failed.stderr.contains("ALTER DATABASE"),
        "{}\n{}",
        failed.stdout,
        failed.stderr
    );
    assert_eq!(control_memberships(&env).await, Vec::<String>::new());
    let owner: String = superuser
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'idp-dev-my-db'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        owner, "stranger",
        "nothing of the failed transaction was committed"
    );
}

/// The pids of the sessions `user` logged in with since `from` (a byte offset in the server log),
/// split by how they came: over the Unix socket, and over TCP (with whether TLS was on).
fn logins_in_log(env: &Env, from: usize, user: &str) -> (Vec<String>, Vec<(String, bool)>) {
    let log = std::fs::read_to_string(env.cluster.cluster.log_file()).unwrap();
    let pid = |line: &str| {
        let start = line.find('[').unwrap() + 1;
        line[start..start + line[start..].find(']').unwrap()].to_string()
    };
    let mut local = std::collections::BTreeSet::new();
    let (mut on_socket, mut on_tcp) = (Vec::new(), Vec::new());
    for line in log[from..].lines() {
        if line.contains("connection received: host=[local]") {
            local.insert(pid(line));
        } else if line.contains(&format!("connection authorized: user={user} ")) {
            match local.contains(&pid(line)) {
                true => on_socket.push(pid(line)),
                false => on_tcp.push((pid(line), line.contains("SSL enabled"))),
            }
        }
    }
    (on_socket, on_tcp)
}

#[tokio::test]
async fn the_control_role_comes_over_the_socket_and_credentials_name_the_tcp_address_with_tls() {
    let env = Env::new();
    let admin_url = env.admin_url();
    assert!(
        admin_url.contains("@/postgres?host=/") && admin_url.contains("sslmode=disable"),
        "the embedded cluster's control URL is its socket: {admin_url}"
    );
    let superuser = env.superuser(None).await;
    for sql in [
        "ALTER SYSTEM SET log_connections = on",
        "SELECT pg_reload_conf()",
    ] {
        superuser.batch_execute(sql).await.unwrap();
    }
    env.wait_for_setting("log_connections", "on").await;
    let from = std::fs::metadata(env.cluster.cluster.log_file())
        .unwrap()
        .len() as usize;

    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let full = env.run(&["plan", "--full"]);
    assert_eq!(full.code, 0, "{}\n{}", full.stdout, full.stderr);

    // Applications get 127.0.0.1 and the server's TCP port, and log in there with TLS.
    let port = env.cluster.cluster.port().unwrap();
    let credentials = env.credentials("idp-dev/my-db", "write");
    assert_eq!(credentials["endpoint"], "127.0.0.1", "{credentials:#}");
    assert_eq!(credentials["port"], port, "{credentials:#}");
    let uri = credentials["uri"].as_str().unwrap();
    assert!(uri.contains(&format!("@127.0.0.1:{port}/")), "{uri}");
    assert!(!uri.contains("socket"), "{uri}");
    let app = env.connect_as("idp-dev/my-db", "write").await;
    let row = app
        .query_one(
            "SELECT s.ssl, inet_client_addr() IS NOT NULL FROM pg_stat_ssl s \
             WHERE s.pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (true, true));

    // Every session pgtenant opened (the apply, the full plan's per-database inspection) came
    // over the socket; the application's over TCP with TLS.
    let (on_socket, on_tcp) = logins_in_log(&env, from, CONTROL_ROLE);
    assert!(
        on_socket.len() >= 2,
        "control sessions on the socket: {on_socket:?}"
    );
    assert_eq!(on_tcp, [], "control sessions over TCP");
    let (app_socket, app_tcp) = logins_in_log(&env, from, "idp-dev-my-db-write");
    assert_eq!(app_socket, Vec::<String>::new());
    assert!(
        !app_tcp.is_empty() && app_tcp.iter().all(|(_, tls)| *tls),
        "{app_tcp:?}"
    );
}
