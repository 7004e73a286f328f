//! Sessions a [`crate::Reconciler`] takes from and gives back to, so one reconcile does not open a
//! connection per stage (lock, observe, execute, read back): the control role's sessions in the
//! admin URL's database (the cluster-wide read, CREATE DATABASE and the other statements outside
//! tenant databases) and its session in the control database (the apply lock).
//!
//! [`Sessions::per_call`] (the default, the CLI: one call per process) lives for one call and closes
//! its sessions when the call ends; [`Sessions::kept`] (a daemon) keeps them between calls. A session
//! is taken by one user at a time (an advisory lock is re-entrant within a session: two reconciles
//! sharing one would not exclude each other) and checked with a round trip when taken again: one
//! the server ended (`pg_terminate_backend`, a restart) is dropped and a new one opened.

use std::sync::{Arc, Mutex};

use tokio_postgres::Client;

use crate::connect::Connector;
use crate::EngineError;

/// Idle admin sessions kept at most; the executor's other workers open their own.
const KEEP_ADMIN: usize = 2;
/// Idle sessions in tenant databases kept at most, within one call.
const KEEP_TENANT: usize = 4;

/// Where a [`crate::Reconciler`] gets its sessions from. Cloning shares the kept ones.
#[derive(Clone, Default)]
pub struct Sessions {
    kept: Option<Arc<Pool>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("kept", &self.kept.is_some())
            .finish()
    }
}

impl Sessions {
    /// Opened afresh by each call and closed when it ends.
    pub fn per_call() -> Self {
        Sessions::default()
    }

    /// Kept open between calls (and shared by clones).
    pub fn kept() -> Self {
        Sessions {
            kept: Some(Arc::new(Pool::default())),
        }
    }

    pub fn is_kept(&self) -> bool {
        self.kept.is_some()
    }

    /// The pool one call uses: the kept one, or a new one dropped with the call.
    pub(crate) fn for_call(&self) -> Arc<Pool> {
        self.kept.clone().unwrap_or_default()
    }
}

/// Idle sessions, taken and given back.
#[derive(Default)]
pub(crate) struct Pool {
    admin: Mutex<Vec<Client>>,
    control: Mutex<Option<Client>>,
    /// The executor's sessions in the databases of tenants it just changed, by database, for the
    /// read-back of the same call ([`Pool::close_tenant_sessions`] at its end: never kept between
    /// calls, a kept pool does not hold a session per tenant).
    tenant: Mutex<Vec<(String, Client)>>,
}

impl Pool {
    /// A live session in the admin URL's database: an idle one, or a new one.
    pub(crate) async fn admin(&self, connector: &Connector) -> Result<Client, EngineError> {
        loop {
            let idle = self.admin.lock().expect("session pool lock").pop();
            match idle {
                Some(client) if alive(&client).await => return Ok(client),
                Some(_) => continue,
                None => return connector.connect(None).await,
            }
        }
    }

    /// Keeps `client` for the next user unless enough are idle or it is closed. Its users end
    /// every transaction they begin (the executor rolls back a failed batch).
    /// An idle session in `database` given back in this call, if there is one.
    pub(crate) fn take_tenant(&self, database: &str) -> Option<Client> {
        let mut idle = self.tenant.lock().expect("session pool lock");
        let at = idle.iter().position(|(name, _)| name == database)?;
        let (_, client) = idle.swap_remove(at);
        (!client.is_closed()).then_some(client)
    }

    /// Keeps `client`, a session in `database` no transaction is open on, for this call's read-back.
    pub(crate) fn give_back_tenant(&self, database: &str, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self.tenant.lock().expect("session pool lock");
        if idle.len() < KEEP_TENANT {
            idle.push((database.to_string(), client));
        }
    }

    /// Closes the sessions in tenant databases: the call that opened them ends.
    pub(crate) fn close_tenant_sessions(&self) {
        self.tenant.lock().expect("session pool lock").clear();
    }

    pub(crate) fn give_back_admin(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self.admin.lock().expect("session pool lock");
        if idle.len() < KEEP_ADMIN {
            idle.push(client);
        }
    }

    /// The idle session in the control database, if it is still alive.
    pub(crate) async fn take_control(&self) -> Option<Client> {
        let idle = self.control.lock().expect("session pool lock").take();
        match idle {
            Some(client) if alive(&client).await => Some(client),
            _ => None,
        }
    }

    pub(crate) fn give_back_control(&self, client: Client) {
        if !client.is_closed() {
            *self.control.lock().expect("session pool lock") = Some(client);
        }
    }
}

/// One round trip (an empty query): the server still serves this session.
async fn alive(client: &Client) -> bool {
    !client.is_closed() && client.simple_query("").await.is_ok()
}
