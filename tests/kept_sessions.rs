//! A `Reconciler` that keeps its sessions between calls (what `pgtenant serve` runs): the sessions
//! are reused, one the server ended is replaced transparently, and the apply lock still excludes
//! any other apply while it reconciles and is free between its reconciles.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{poll_until, Env};
use pgtenant_engine::reconcile::{Reconciler, Request};
use pgtenant_engine::verified::Trust;
use pgtenant_engine::{ApplyLock, Connector, Desired, Endpoint, EngineError, ReconcileError};
use pgtenant_secrets::MemoryStore;

fn reconciler(env: &Env) -> Reconciler {
    let connector = Connector::from_url(&env.admin_url()).unwrap();
    let (host, port) = connector.endpoint();
    Reconciler {
        connector: Arc::new(connector),
        store: Arc::new(MemoryStore::default()),
        endpoint: Endpoint { host, port },
        superuser_extensions: BTreeSet::new(),
        scram_iterations: pgtenant_secrets::DEFAULT_SCRAM_ITERATIONS,
        platform_environment: None,
        final_backups: None,
        trust: Trust::none(),
        pooler_endpoint: None,
        pooler_lookup: false,
        pooler: None,
        sessions: Default::default(),
    }
    .keeping_sessions()
}

fn desired(env: &Env) -> Desired {
    Desired::from_repo(&pgtenant_spec::load_repo(env.repo_path()).unwrap())
}

async fn reconcile(
    reconciler: &Reconciler,
    env: &Env,
    tenant: &str,
) -> Result<usize, ReconcileError> {
    let request = Request {
        scope: BTreeSet::from([tenant.to_string()]),
        ..Request::default()
    };
    let applied = reconciler
        .apply(&desired(env), &request, |_| {
            Arc::new(|_: &pgtenant_engine::TenantOutcome| {})
        })
        .await?;
    let failed: Vec<_> = applied.outcome.failed().collect();
    assert!(failed.is_empty(), "tenants failed: {failed:?}");
    Ok(applied.outcome.applied())
}

/// The backends of the control role other than `superuser`'s own, with their database.
async fn control_backends(superuser: &tokio_postgres::Client, role: &str) -> Vec<(i32, String)> {
    superuser
        .query(
            "SELECT pid, datname::text FROM pg_stat_activity
              WHERE usename = $1 AND pid <> pg_backend_pid() ORDER BY pid",
            &[&role],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_the_server_ended_is_replaced_on_the_next_reconcile() {
    let env = Env::new();
    env.declare("team", "first", &[("orders", "standard")]);
    let reconciler = reconciler(&env);
    let role = reconciler.connector.user().unwrap().to_string();
    let superuser = env.superuser(None).await;

    assert!(reconcile(&reconciler, &env, "team/orders").await.unwrap() > 0);
    let kept = control_backends(&superuser, &role).await;
    assert!(
        kept.iter()
            .any(|(_, db)| db == pgtenant_engine::CONTROL_DATABASE),
        "the control-database session is kept between reconciles: {kept:?}"
    );
    // Kept, and reused: a second reconcile opens no other session outside tenant databases.
    assert_eq!(
        reconcile(&reconciler, &env, "team/orders").await.unwrap(),
        0
    );
    let outside = |backends: &[(i32, String)]| -> BTreeSet<i32> {
        backends
            .iter()
            .filter(|(_, db)| db != "team-orders")
            .map(|(pid, _)| *pid)
            .collect()
    };
    let again = control_backends(&superuser, &role).await;
    assert!(
        outside(&again).is_subset(&outside(&kept)),
        "the second reconcile reused the kept sessions: {kept:?} then {again:?}"
    );

    // The server ends every session of the control role.
    superuser
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&role],
        )
        .await
        .unwrap();
    poll_until("the control role's sessions ended", || async {
        control_backends(&superuser, &role).await.is_empty()
    })
    .await;

    // The next reconcile (of a new tenant) opens new sessions and succeeds.
    env.declare("team", "second", &[("billing", "standard")]);
    assert!(reconcile(&reconciler, &env, "team/billing").await.unwrap() > 0);
    assert!(env.database_exists("team-billing").await);

    // Between reconciles the apply lock is free: another apply (the CLI) takes it, and while it
    // holds it the kept reconciler is refused, as any other apply would be.
    let other = ApplyLock::acquire(&reconciler.connector).await.unwrap();
    match reconcile(&reconciler, &env, "team/billing").await {
        Err(ReconcileError::Engine(EngineError::Busy { .. })) => {}
        Err(other) => panic!("expected the apply lock to be busy, got {other:?}"),
        Ok(_) => panic!("a reconcile ran while another apply held the lock"),
    }
    drop(other);
    env.wait_until_advisory_locks_are_released().await;
    assert_eq!(
        reconcile(&reconciler, &env, "team/billing").await.unwrap(),
        0
    );
}
