//! pgtenant's own database on the managed cluster, [`CONTROL_DATABASE`]: it holds the apply lock
//! (and any bookkeeping pgtenant needs), whatever database the admin URL names.
//!
//! Tenants may connect to the databases every cluster has (`postgres`, `template1`: PUBLIC has
//! CONNECT there), so a lock taken there could be taken by any tenant login too, and a lock taken
//! in "the admin URL's database" would not serialise two runs whose URLs name different databases.
//! The control database is created on first use by the control role (which has CREATEDB), from
//! `template0` and with connections disallowed until `REVOKE ALL … FROM PUBLIC` has run, so no
//! other role ever gets in; every session re-checks that it is still the control role's alone.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::connect::Connector;
use crate::ident::Ident;
use crate::sessions::Pool;
use crate::EngineError;

/// The name of pgtenant's control database.
pub const CONTROL_DATABASE: &str = "pgtenant";

/// "pgtenant" in ASCII: the advisory lock key, in the control database.
const APPLY_LOCK_KEY: i64 = 0x7067_7465_6e61_6e74;

/// PostgreSQL truncates longer application names (NAMEDATALEN - 1).
const MAX_APPLICATION_NAME: i32 = 63;

fn control_ident() -> Ident {
    Ident::new(CONTROL_DATABASE)
}

fn control_error(what: &str, source: tokio_postgres::Error) -> EngineError {
    EngineError::ControlDatabase {
        what: what.to_string(),
        source: Some(source),
    }
}

/// Runs one of the idempotent statements that keep the control database private. Two first
/// runs (or two runs repairing grants) update the same pg_database row at once, and PostgreSQL
/// answers the loser with an internal error (XX000, "tuple concurrently updated") instead of
/// waiting: the statement is simply run again.
async fn privately(client: &Client, statement: &str, what: &str) -> Result<(), EngineError> {
    let mut attempt = 0;
    loop {
        match client.batch_execute(statement).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 5 && error.code() == Some(&SqlState::INTERNAL_ERROR) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
            }
            Err(error) => return Err(control_error(what, error)),
        }
    }
}

/// A session in the control database, as the control role; the database is created first if it
/// does not exist yet, and made private again if anyone was granted access to it.
pub async fn session(connector: &Connector) -> Result<Client, EngineError> {
    let client = match connector.connect(Some(CONTROL_DATABASE)).await {
        Ok(client) => client,
        Err(EngineError::Connect { source, .. })
            if source.code().is_some_and(|code| {
                // Missing, or created by a run that died before allowing connections.
                *code == SqlState::INVALID_CATALOG_NAME
                    || *code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
            }) =>
        {
            create(connector).await?;
            connector.connect(Some(CONTROL_DATABASE)).await?
        }
        Err(other) => return Err(other),
    };
    make_private(&client).await?;
    Ok(client)
}

/// Creates the control database with no way in for anyone but its owner. Two first runs may race:
/// the loser's CREATE fails (duplicate_database, or unique_violation on pg_database's name index
/// when both passed the existence check) and it goes on with the database the winner made.
async fn create(connector: &Connector) -> Result<(), EngineError> {
    let admin = connector.connect(None).await?;
    let database = control_ident().quote();
    let created = admin
        .batch_execute(&format!(
            "CREATE DATABASE {database} TEMPLATE template0 ALLOW_CONNECTIONS false"
        ))
        .await;
    match created {
        Ok(()) => {}
        Err(error)
            if error.code().is_some_and(|code| {
                *code == SqlState::DUPLICATE_DATABASE || *code == SqlState::UNIQUE_VIOLATION
            }) => {}
        Err(error) => {
            return Err(control_error(
                &format!(
                    "creating database `{CONTROL_DATABASE}` (the control role needs CREATEDB)"
                ),
                error,
            ))
        }
    }
    // One simple query: both or neither. Connections are allowed only once PUBLIC is out.
    privately(
        &admin,
        &format!(
            "REVOKE ALL ON DATABASE {database} FROM PUBLIC;\n\
             ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true"
        ),
        &format!(
            "making database `{CONTROL_DATABASE}` private (it must belong to the control role)"
        ),
    )
    .await
}

/// The control database must be the control role's (or the control role a superuser) and no
/// other role may have any privilege on it: grants found are revoked.
async fn make_private(client: &Client) -> Result<(), EngineError> {
    let row = client
        .query_one(
            "SELECT o.rolname::text, d.datdba = u.oid OR u.rolsuper, current_user::text,
                    EXISTS (SELECT 1 FROM pg_catalog.aclexplode(
                                COALESCE(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
                             WHERE a.grantee = 0),
                    ARRAY(SELECT DISTINCT r.rolname::text
                            FROM pg_catalog.aclexplode(
                                   COALESCE(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
                            JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
                           WHERE a.grantee <> d.datdba
                           ORDER BY 1)
               FROM pg_catalog.pg_database d
               JOIN pg_catalog.pg_roles o ON o.oid = d.datdba
               JOIN pg_catalog.pg_roles u ON u.rolname = current_user
              WHERE d.datname = pg_catalog.current_database()",
            &[],
        )
        .await
        .map_err(|e| control_error("reading its privileges", e))?;
    let (owner, usable, me): (String, bool, String) = (row.get(0), row.get(1), row.get(2));
    let public: bool = row.get(3);
    let grantees: Vec<String> = row.get(4);
    if !usable {
        return Err(EngineError::ControlDatabase {
            what: format!(
                "database `{CONTROL_DATABASE}` belongs to {owner}, not to the control role {me}: \
                 pgtenant keeps its apply lock there, so only the control role may own it; rename \
                 that database, or make {me} its owner"
            ),
            source: None,
        });
    }
    let mut revoke_from: Vec<String> = grantees
        .iter()
        .map(|r| Ident::new(r.as_str()).quote())
        .collect();
    if public {
        revoke_from.insert(0, "PUBLIC".to_string());
    }
    if revoke_from.is_empty() {
        return Ok(());
    }
    privately(
        client,
        &format!(
            "REVOKE ALL ON DATABASE {} FROM {}",
            control_ident().quote(),
            revoke_from.join(", ")
        ),
        "revoking the privileges others were granted on it",
    )
    .await
}

/// The session-level advisory lock in the control database: every pgtenant that changes the
/// cluster (apply, rotate, restore) takes it before reading the catalog. Released when dropped
/// (the connection closes), also if the process dies; [`ApplyLock::release`] unlocks and keeps the
/// session for the next lock.
pub struct ApplyLock {
    session: Option<Client>,
}

/// Who holds the apply lock (displayed without the pid), as far as the control role may see (`pg_stat_activity` shows
/// the client address of its own sessions and of roles it is a member of).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: i32,
    pub application_name: Option<String>,
    pub user: Option<String>,
    /// `host:port`, `local socket`, or None when not visible.
    pub client: Option<String>,
    pub since: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.application_name.as_deref() {
            Some(name) if !name.is_empty() => write!(f, "application_name `{name}`")?,
            _ => write!(f, "a session without application_name")?,
        }
        if let Some(user) = &self.user {
            write!(f, ", user {user}")?;
        }
        match &self.client {
            Some(client) => write!(f, ", client {client}")?,
            None => write!(f, ", client address not visible to the control role")?,
        }
        if let Some(since) = &self.since {
            write!(f, ", connected since {since}")?;
        }
        Ok(())
    }
}

impl ApplyLock {
    pub async fn acquire(connector: &Connector) -> Result<Self, EngineError> {
        let session = labelled_session(connector).await?;
        match try_lock(&session).await? {
            Ok(()) => Ok(ApplyLock {
                session: Some(session),
            }),
            Err(holder) => Err(EngineError::Busy { holder }),
        }
    }

    /// [`Self::acquire`] on the pool's idle session in the control database when it is still
    /// alive (checked private again), else on a new one. A busy lock gives the session back.
    pub(crate) async fn acquire_kept(
        connector: &Connector,
        pool: &Pool,
    ) -> Result<Self, EngineError> {
        let session = match pool.take_control().await {
            Some(session) => {
                make_private(&session).await?;
                session
            }
            None => labelled_session(connector).await?,
        };
        match try_lock(&session).await? {
            Ok(()) => Ok(ApplyLock {
                session: Some(session),
            }),
            Err(holder) => {
                pool.give_back_control(session);
                Err(EngineError::Busy { holder })
            }
        }
    }

    /// Unlocks and gives the session to `pool`; a session that cannot unlock is closed (which
    /// releases the lock just as well).
    pub(crate) async fn release(mut self, pool: &Pool) {
        let Some(session) = self.session.take() else {
            return;
        };
        let unlocked = session
            .query_one(
                "SELECT pg_catalog.pg_advisory_unlock($1)",
                &[&APPLY_LOCK_KEY],
            )
            .await
            .is_ok_and(|row| row.get::<_, bool>(0));
        if unlocked {
            pool.give_back_control(session);
        }
    }
}

/// A control-database session ([`session`]) that names itself in `pg_stat_activity` as holding
/// the apply lock: whoever finds the lock busy sees which process holds it (and from where: the
/// address).
async fn labelled_session(connector: &Connector) -> Result<Client, EngineError> {
    let session = session(connector).await?;
    session
        .execute(
            "SELECT pg_catalog.set_config('application_name',
                    pg_catalog.left(pg_catalog.current_setting('application_name') || $1, $2),
                    false)",
            &[&lock_label(), &MAX_APPLICATION_NAME],
        )
        .await
        .map_err(in_control_database)?;
    Ok(session)
}

/// Takes the apply lock on `session`, or says who holds it.
async fn try_lock(session: &Client) -> Result<Result<(), LockHolder>, EngineError> {
    // The holder may let go between the two queries: then try once more.
    let mut holder = None;
    for _ in 0..2 {
        let locked: bool = session
            .query_one(
                "SELECT pg_catalog.pg_try_advisory_lock($1)",
                &[&APPLY_LOCK_KEY],
            )
            .await
            .map_err(in_control_database)?
            .get(0);
        if locked {
            return Ok(Ok(()));
        }
        holder = lock_holder(session).await.map_err(in_control_database)?;
        if holder.is_some() {
            break;
        }
    }
    Ok(Err(holder.unwrap_or_default()))
}

/// "pgtenant" + 1: the advisory lock key of the active `pgtenant serve` of a cluster (the apply
/// lock stays free for its reconciles and for the CLI).
const LEADER_LOCK_KEY: i64 = APPLY_LOCK_KEY + 1;

/// The session-level lock that makes one `pgtenant serve` of a cluster the active one; the others
/// are standbys that try again on the same session. Held as long as its session lives: released
/// when dropped, when the process dies, or when the server ends the session.
pub struct LeaderLock {
    session: Client,
    held: bool,
}

impl LeaderLock {
    /// A session in the control database, named `label` in `pg_stat_activity`; not locked yet.
    pub async fn connect(connector: &Connector, label: &str) -> Result<Self, EngineError> {
        let session = session(connector).await?;
        session
            .execute(
                "SELECT pg_catalog.set_config('application_name', pg_catalog.left($1, $2), false)",
                &[&label, &MAX_APPLICATION_NAME],
            )
            .await
            .map_err(in_control_database)?;
        Ok(LeaderLock {
            session,
            held: false,
        })
    }

    /// Takes the lock if no other session holds it; true when this session holds it.
    pub async fn try_acquire(&mut self) -> Result<bool, EngineError> {
        if !self.held {
            self.held = self
                .session
                .query_one(
                    "SELECT pg_catalog.pg_try_advisory_lock($1)",
                    &[&LEADER_LOCK_KEY],
                )
                .await
                .map_err(in_control_database)?
                .get(0);
        }
        Ok(self.held)
    }

    /// Whether the session (and so a lock taken on it) is still there.
    pub async fn is_alive(&self) -> bool {
        !self.session.is_closed() && self.session.simple_query("SELECT 1").await.is_ok()
    }

    pub fn is_held(&self) -> bool {
        self.held
    }
}

fn in_control_database(source: tokio_postgres::Error) -> EngineError {
    EngineError::Catalog {
        database: Some(CONTROL_DATABASE.to_string()),
        source,
    }
}

/// ` apply lock (pid N)`, appended to the connection's application_name. Every role on the
/// cluster can read application names, so the machine is left to the client address, which
/// `pg_stat_activity` shows only to the control role (and superusers).
fn lock_label() -> String {
    format!(" apply lock (pid {})", std::process::id())
}

async fn lock_holder(session: &Client) -> Result<Option<LockHolder>, tokio_postgres::Error> {
    let row = session
        .query_opt(
            "SELECT l.pid, a.application_name, a.usename::text,
                    CASE WHEN a.client_addr IS NOT NULL
                              THEN pg_catalog.host(a.client_addr) || ':' || a.client_port
                         WHEN a.client_port = -1 THEN 'local socket' END,
                    pg_catalog.to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
               FROM pg_catalog.pg_locks l
               LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.database = (SELECT oid FROM pg_catalog.pg_database
                                   WHERE datname = pg_catalog.current_database())
                AND ((l.classid::int8 << 32) | l.objid::int8) = $1
              LIMIT 1",
            &[&APPLY_LOCK_KEY],
        )
        .await?;
    Ok(row.map(|row| LockHolder {
        pid: row.get(0),
        application_name: row.get(1),
        user: row.get(2),
        client: row.get(3),
        since: row.get(4),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_named_by_application_and_address() {
        let holder = LockHolder {
            pid: 42,
            application_name: Some("pgtenant apply lock (pid 7)".into()),
            user: Some("pgtenant".into()),
            client: Some("10.0.0.5:51234".into()),
            since: Some("2024-01-01T00:00:00Z".into()),
        };
        assert_eq!(
            holder.to_string(),
            "application_name `pgtenant apply lock (pid 7)`, user pgtenant, client 10.0.0.5:51234, \
             connected since 2024-01-01T00:00:00Z"
        );
        assert!(LockHolder::default()
            .to_string()
            .contains("client address not visible"));
    }

    #[test]
    fn the_lock_label_fits_an_application_name() {
        assert!(lock_label().starts_with(" apply lock (pid "));
    }
}
