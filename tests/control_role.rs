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
