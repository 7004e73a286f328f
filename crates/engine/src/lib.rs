//! The engine of pgtenant: spec → [`Desired`] → ([`Observed`] catalog) → [`Plan`] → apply.
//!
//! [`desired`] and [`plan`] are pure; [`catalog`] (reading) and [`execute`] (writing) are the only I/O.
//! SQL text lives in [`sql`] (changes) and [`catalog`] (reads); identifiers are quoted only in [`ident`].

pub mod catalog;
pub mod check;
pub mod connect;
pub mod control;
pub mod desired;
pub mod execute;
pub mod failover;
pub mod fleet;
pub mod ident;
pub mod inventory;
pub mod observed;
pub mod plan;
pub mod pooler;
pub mod quiesce;
pub mod reconcile;
pub mod relocate;
pub mod rotate;
pub mod sessions;
pub mod sql;
pub mod verified;

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use pgtenant_secrets::{CredentialStore, StoreError};
use tokio::sync::Semaphore;

pub use connect::Connector;
pub use control::{ApplyLock, LeaderLock, LockHolder, CONTROL_DATABASE};
pub use desired::{Desired, DesiredTenant, RoleKind};
pub use execute::{
    ApplyOutcome, Endpoint, Executor, FinalBackupRequest, FinalBackups, TenantOutcome,
};
pub use ident::Ident;
pub use observed::Observed;
pub use plan::{plan, Operation, Phase, Plan, PlanContext};
pub use pooler::{password_digest, scram_verifier, PoolStats, PoolerSync};
pub use reconcile::{ReconcileError, Reconciler};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A connection string or its TLS set-up.
    #[error(transparent)]
    Postgres(pgtenant_pg::Error),
    #[error("cannot connect to {}", database.as_deref().map_or("the cluster".to_string(), |d| format!("database `{d}`")))]
    Connect {
        database: Option<String>,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("reading the catalog of {}", database.as_deref().map_or("the cluster".to_string(), |d| format!("database `{d}`")))]
    Catalog {
        database: Option<String>,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("credential store")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Rotation(String),
    #[error("PostgreSQL {} is not supported: pgtenant needs 15 or later (schema public owned by the database owner, DROP DATABASE … WITH (FORCE))", version_num / 10000)]
    UnsupportedServer { version_num: i32 },
    #[error("another `pgtenant apply` is running against this cluster (backend pid {}): held by {holder}; try again when it has finished", holder.pid)]
    Busy { holder: LockHolder },
    #[error("pgtenant's control database: {what}")]
    ControlDatabase {
        what: String,
        #[source]
        source: Option<tokio_postgres::Error>,
    },
}

/// PostgreSQL 15: the first release whose `public` schema belongs to the database owner.
const MIN_SERVER_VERSION: i32 = 150_000;

/// Reads everything the planner compares against: the cluster catalog, inside every declared database
/// that exists (in parallel tasks, so TLS and SCRAM work spreads over the cores, bounded by the
/// connections the server has free), and the credential store.
pub async fn observe(
    connector: &Arc<Connector>,
    desired: &Desired,
    store: &dyn CredentialStore,
) -> Result<Observed, EngineError> {
    observe_tenants(connector, desired, store, |_| true).await
}

/// [`observe`], looking inside only the declared databases of the tenants `inspect` selects (the
/// cluster-wide catalog is read whole either way): for re-checking what an apply changed.
pub async fn observe_tenants(
    connector: &Arc<Connector>,
    desired: &Desired,
    store: &dyn CredentialStore,
    should_inspect: impl Fn(&DesiredTenant) -> bool,
) -> Result<Observed, EngineError> {
    Ok(
        observe_reusing(connector, desired, store, should_inspect, None)
            .await?
            .observed,
    )
}

/// What [`observe_reusing`] may take from the last verifications instead of reading it again.
pub struct Reuse<'a> {
    pub last: &'a verified::Verifications,
    /// A verification older than this is done again.
    pub trust_for: std::time::Duration,
    /// Inspect every selected database whatever the counters say (and verify each again).
    pub full: bool,
}

/// What [`observe_reusing`] read, and the verifications it made.
pub struct Observation {
    pub observed: Observed,
    /// The databases inspected in this run with counters to trust them by next time.
    pub fresh: BTreeMap<String, verified::VerifiedDatabase>,
    /// The databases inspected in this run without such counters (their last verification no
    /// longer holds).
    pub unverified: BTreeSet<String>,
}

/// [`observe_tenants`], taking the catalog of a selected database from `reuse`'s last
/// verification when nothing can have changed inside it since (see [`verified`]): it is then not
/// connected to. Every database that is inspected is verified anew.
pub async fn observe_reusing(
    connector: &Arc<Connector>,
    desired: &Desired,
    store: &dyn CredentialStore,
    should_inspect: impl Fn(&DesiredTenant) -> bool,
    reuse: Option<Reuse<'_>>,
) -> Result<Observation, EngineError> {
    let pool = sessions::Pool::default();
    observe_on(
        connector,
        &pool,
        None,
        desired,
        store,
        should_inspect,
        reuse,
    )
    .await
}

/// [`observe_reusing`], reading the cluster-wide catalog on a session of `pool`, of only the
/// roles and databases `only` names when given ([`catalog::read_cluster_of`]).
pub(crate) async fn observe_on(
    connector: &Arc<Connector>,
    pool: &sessions::Pool,
    only: Option<&catalog::Only>,
    desired: &Desired,
    store: &dyn CredentialStore,
    should_inspect: impl Fn(&DesiredTenant) -> bool,
    reuse: Option<Reuse<'_>>,
) -> Result<Observation, EngineError> {
    let control = pool.admin(connector).await?;
    let cluster = catalog::read_cluster_of(&control, only).await;
    pool.give_back_admin(control);
    let cluster = cluster?;
    if cluster.server.version_num < MIN_SERVER_VERSION {
        return Err(EngineError::UnsupportedServer {
            version_num: cluster.server.version_num,
        });
    }

    let mut observed = Observed {
        server: cluster.server,
        roles: cluster.roles,
        databases: cluster.databases,
        available_extensions: cluster.available_extensions,
        role_dependencies: cluster.role_dependencies,
        statistics: cluster.statistics,
        ..Observed::default()
    };
    let wanted: BTreeSet<pgtenant_secrets::SecretPath> = desired
        .tenants
        .iter()
        .filter(|t| should_inspect(t))
        .flat_map(|t| t.login_roles().filter_map(|r| r.secret_path.clone()))
        .collect();
    (observed.stored_paths, observed.stored_credentials) = read_store(store, &wanted).await?;

    let existing: Vec<DesiredTenant> = desired
        .tenants
        .iter()
        .filter(|t| observed.databases.contains_key(t.database.as_str()) && should_inspect(t))
        .cloned()
        .collect();
    let now = std::time::SystemTime::now();
    let role_renamed = reuse.as_ref().is_some_and(|reuse| {
        verified::renamed(&reuse.last.role_names, &observed.statistics.role_names)
    });
    let mut inspected = Vec::new();
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    for tenant in existing {
        let name = tenant.database.as_str();
        let declaration = verified::declaration(&tenant);
        let last = reuse.as_ref().and_then(|r| r.last.databases.get(name));
        let facts = verified::Facts {
            full: reuse.as_ref().is_none_or(|r| r.full),
            counting: verified::counting(&observed.statistics, &observed.databases[name].settings),
            role_renamed,
            now,
            trust_for: reuse.as_ref().map_or(Default::default(), |r| r.trust_for),
            stats: observed.statistics.databases.get(name),
            declaration: &declaration,
        };
        match (verified::decide(&facts, last), last) {
            (verified::Decision::Trust, Some(last)) => {
                *reasons.entry("trusted").or_default() += 1;
                observed
                    .database_catalogs
                    .insert(name.to_string(), last.catalog.clone());
                observed.verifications.insert(
                    name.to_string(),
                    observed::Verification {
                        trusted: true,
                        at: last.verified_at,
                    },
                );
            }
            (decision, _) => {
                if let verified::Decision::Inspect(reason) = decision {
                    *reasons.entry(reason.as_str()).or_default() += 1;
                }
                inspected.push((tenant, declaration));
            }
        }
    }
    if reuse.is_some() {
        tracing::debug!(?reasons, "tenant databases trusted or inspected");
    }
    let limit = Arc::new(Semaphore::new(observed.server.parallelism()));
    let tasks: Vec<_> = inspected
        .into_iter()
        .map(|(tenant, declaration)| {
            let connector = connector.clone();
            let limit = limit.clone();
            // A read-back (no verification kept) may use the executor's session in the database.
            let session = reuse
                .is_none()
                .then(|| pool.take_tenant(tenant.database.as_str()))
                .flatten();
            tokio::spawn(async move {
                let _permit = limit
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed");
                let verified_at = std::time::SystemTime::now();
                let result = inspect(&connector, &tenant, session).await;
                (
                    tenant.database.as_str().to_string(),
                    declaration,
                    verified_at,
                    result,
                )
            })
        })
        .collect();
    let mut fresh = BTreeMap::new();
    let mut unverified = BTreeSet::new();
    for task in tasks {
        let (name, declaration, verified_at, result) =
            task.await.expect("inspection task panicked");
        match result {
            Ok((catalog, snapshot)) => {
                observed.verifications.insert(
                    name.clone(),
                    observed::Verification {
                        trusted: false,
                        at: verified_at,
                    },
                );
                match snapshot {
                    Some(stats) => {
                        fresh.insert(
                            name.clone(),
                            verified::VerifiedDatabase {
                                stats,
                                verified_at,
                                declaration,
                                catalog: catalog.clone(),
                            },
                        );
                    }
                    None => {
                        unverified.insert(name.clone());
                    }
                }
                observed.database_catalogs.insert(name, catalog);
            }
            Err(error) => {
                unverified.insert(name.clone());
                observed.uninspected.insert(name, error_chain(&error));
            }
        }
    }
    Ok(Observation {
        observed,
        fresh,
        unverified,
    })
}

/// The tenant's database catalog, and the database's counters read just before it
/// ([`verified::snapshot`]): None when they cannot be believed.
async fn inspect(
    connector: &Connector,
    tenant: &DesiredTenant,
    session: Option<tokio_postgres::Client>,
) -> Result<(observed::DatabaseCatalog, Option<observed::DatabaseStats>), EngineError> {
    let database = tenant.database.as_str();
    let client = match session {
        Some(session) => session,
        None => connector.connect(Some(database)).await?,
    };
    // Both go out at once (one round trip); the server runs them in order, the counters first.
    let (snapshot, catalog) = futures::future::join(
        verified::snapshot(&client),
        catalog::read_tenant_database(&client, tenant),
    )
    .await;
    Ok((catalog?, snapshot))
}

/// Which secrets the store holds (a directory listing), and the connection details of those in
/// `wanted` (decrypted: cost in proportion to the tenants looked at, not to the whole store). A
/// store that cannot be read (missing or wrong key, tampering) stops the run: treating its secrets
/// as absent would issue new passwords and lock apps out.
async fn read_store(
    store: &dyn CredentialStore,
    wanted: &BTreeSet<pgtenant_secrets::SecretPath>,
) -> Result<
    (
        BTreeSet<pgtenant_secrets::SecretPath>,
        BTreeMap<pgtenant_secrets::SecretPath, observed::StoredCredential>,
    ),
    EngineError,
> {
    let paths: BTreeSet<_> = store.list().await?.into_iter().collect();
    let mut stored = BTreeMap::new();
    let read: Vec<_> = paths.intersection(wanted).cloned().collect();
    for (path, credential) in store.get_many(&read).await? {
        stored.insert(
            path,
            observed::StoredCredential {
                scram_iterations: credential.scram_iterations(),
                username: credential.username,
                endpoint: credential.endpoint,
                port: credential.port,
                dbname: credential.dbname,
                pooler: credential.pooler,
            },
        );
    }
    Ok((paths, stored))
}

/// Every database on the cluster with its state (see [`inventory`]).
pub async fn list_databases(
    connector: &Connector,
) -> Result<Vec<inventory::ListedDatabase>, EngineError> {
    let control = connector.connect(None).await?;
    Ok(inventory::list(&catalog::read_cluster(&control).await?))
}

/// An error and its causes on one line, for reports that are not the binary's own error output.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
