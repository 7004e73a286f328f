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

/// A new database is set up on the control connection as its owner (SET ROLE, then RESET ROLE):
/// the owner's rights are checked at once, where the control role's would walk its memberships of
/// every tenant role. A worker keeps its control connection for its next tenants: more new
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
