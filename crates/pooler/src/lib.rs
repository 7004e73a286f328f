//! The pgbouncer pgtenant manages in front of a cluster.
//!
//! pgtenant renders pgbouncer's files from the declared tenants ([`render`]), writes them
//! atomically ([`files`]), keeps the verifiers of every tenant login it knows the server has
//! ([`state`]), and applies a change with the admin console's `RELOAD` ([`admin`]; SIGHUP when
//! the console does not answer). A local pgbouncer is started and stopped by [`process`].
//!
//! Authentication: clients log in to pgbouncer with SCRAM against the auth file, and pgbouncer
//! logs in to the server as the same role with the same SCRAM keys, which works only because the
//! auth file holds the server's very verifier ([`pgtenant_engine::scram_verifier`]). Only tenant
//! logins are in the file, so superusers, the control role and replication roles cannot log in
//! through the pooler at all; the server checks `CONNECT` on the tenant's own login, so tenant A
//! cannot reach tenant B's database through it either.

pub mod admin;
mod files;
pub mod process;
pub mod render;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use pgtenant_cluster::{ClusterError, ServerUser};
use pgtenant_engine::desired::alternate_name;
use pgtenant_engine::pooler::SyncScope;
use pgtenant_engine::rotate::journal_path;
use pgtenant_engine::{password_digest, scram_verifier, Connector, Desired, DesiredTenant, Ident};
use pgtenant_secrets::{CredentialStore, SecretPath, DEFAULT_SCRAM_ITERATIONS};
use serde::Serialize;
use tracing::Instrument as _;

pub use admin::Admin;
pub use process::Process;
pub use render::{Auth, Entry, ServerTls, Settings};
pub use state::State;

#[derive(Debug, thiserror::Error)]
pub enum PoolerError {
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("pgbouncer's admin console")]
    Console(#[source] tokio_postgres::Error),
    #[error("starting or stopping pgbouncer: {reason}")]
    Start { reason: String },
    #[error("pgbouncer is not running")]
    NotRunning,
    #[error("{0}")]
    Engine(String),
}

impl PoolerError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        PoolerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Who runs pgbouncer.
pub enum Runner {
    /// pgtenant does: started when needed, reloaded, stopped by `down`.
    Local(Process),
    /// Someone else (systemd, Kubernetes): pgtenant writes the files and RELOADs through the
    /// console at the listen address's port in `settings.dir` (a shared socket directory).
    Files,
}

/// One pooler: its settings, the account that reads its files, and who runs it.
pub struct Pooler {
    pub settings: Settings,
    /// Where pool entries point: the server as pgbouncer reaches it.
    pub server_host: String,
    pub server_port: u16,
    /// Owns the directory and the files pgbouncer reads (None: the invoking user).
    pub owner: Option<ServerUser>,
    pub runner: Runner,
    /// The primary entries point at instead of `server_host:server_port`, after
    /// [`Self::follow_primary`] (kept in the state file, so later syncs keep it).
    followed: RwLock<Option<(String, u16)>>,
    /// `auth: query`: where the lookup login's password is kept in the credential store.
    lookup_secret: Option<SecretPath>,
    /// The console session a sync's RELOAD goes through, kept open between syncs (a fresh one
    /// costs a connection and a SCRAM exchange on every apply), with the admin password it
    /// logged in with.
    console_session: tokio::sync::Mutex<Option<(String, tokio_postgres::Client)>>,
}

/// `status`'s view of the pooler.
#[derive(Debug, Clone, Serialize)]
pub struct PoolerStatus {
    /// "running", "stopped".
    pub state: &'static str,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

impl Pooler {
    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    pub fn admin(&self, state: &State) -> Admin {
        Admin {
            socket_dir: self.settings.dir.clone(),
            port: self.settings.listen_port,
            password: state.admin_password.clone(),
        }
    }

    /// The console, with the password from the state file.
    pub fn console(&self) -> Result<Admin, PoolerError> {
        Ok(self.admin(&State::load_or_create(self.dir())?))
    }

    pub fn status(&self) -> PoolerStatus {
        let pid = process::pid_in(self.dir());
        PoolerStatus {
            state: if pid.is_some() { "running" } else { "stopped" },
            port: self.settings.listen_port,
            pid,
        }
    }

    /// The entry for `tenant`'s database; None when it opted out or its name cannot stand in
    /// pgbouncer's files.
    pub fn entry(&self, tenant: &DesiredTenant) -> Option<Entry> {
        let database = tenant.database.as_str();
        if !render::is_plain_database(database) {
            tracing::warn!(
                database,
                "not pooled: the name cannot stand in pgbouncer.ini"
            );
            return None;
        }
        let (mode, size) = match tenant.pooling {
            Some(pgtenant_spec::Pooling::Off) => return None,
            Some(pgtenant_spec::Pooling::Pooled { mode, size }) => (
                mode.map_or(self.settings.default_pool_mode.clone(), |m| {
                    m.as_str().to_string()
                }),
                size.unwrap_or(self.settings.default_pool_size),
            ),
            None => (
                self.settings.default_pool_mode.clone(),
                self.settings.default_pool_size,
            ),
        };
        let (host, port) = self.target();
        Some(Entry {
            database: database.to_string(),
            host,
            port,
            pool_mode: mode,
            pool_size: size,
        })
    }

    /// Where pool entries point now: the followed primary, else the configured server.
    pub fn target(&self) -> (String, u16) {
        self.followed
            .read()
            .expect("not poisoned")
            .clone()
            .unwrap_or_else(|| (self.server_host.clone(), self.server_port))
    }

    /// Points every pool entry at the primary `host:port` (after a failover or switchover):
    /// rewrites the databases file, RELOADs, and sends `RECONNECT` for all pools, so each pooled
    /// session's next server connection goes to the new primary (a server connection in use is
    /// closed once its client releases it; nothing is cut). The primary is kept in the state
    /// file, so later syncs render it too, until the configuration names another server or the
    /// configured one is followed again. Returns whether anything changed (false: nothing was
    /// sent to pgbouncer).
    pub async fn follow_primary(&self, host: &str, port: u16) -> Result<bool, PoolerError> {
        if !render::is_plain(host) {
            return Err(PoolerError::Engine(format!(
                "primary host {host:?} cannot stand in pgbouncer's files"
            )));
        }
        files::ensure_dir(self.dir(), self.owner.as_ref())?;
        let mut state = State::load_or_create(self.dir())?;
        let configured = (self.server_host.as_str(), self.server_port) == (host, port);
        let followed = (!configured).then(|| state::Followed {
            configured: state::Followed::configured(&self.server_host, self.server_port),
            host: host.to_string(),
            port,
        });
        let mut changed = state.primary != followed;
        if changed {
            state.primary = followed;
            state.save(self.dir())?;
        }
        let before = self.target();
        *self.followed.write().expect("not poisoned") =
            (!configured).then(|| (host.to_string(), port));
        changed |= before != self.target();
        let path = self.dir().join(render::DATABASES_FILE);
        let entries: Vec<Entry> = self
            .written_entries()?
            .into_iter()
            .map(|entry| Entry {
                host: host.to_string(),
                port,
                ..entry
            })
            .collect();
        changed |= files::write_if_changed(
            &path,
            render::databases(&entries).as_bytes(),
            self.owner.as_ref(),
        )?;
        if !changed {
            return Ok(false);
        }
        let running = match &self.runner {
            Runner::Local(process) => process.pid().is_some(),
            Runner::Files => true,
        };
        if running {
            self.reload().await?;
            self.console()?.reconnect_all().await?;
        }
        Ok(true)
    }

    /// Writes `pgbouncer.ini` and, when missing, an empty databases file and an auth file with
    /// the admin login only: enough for pgbouncer to start before the first apply. Returns
    /// whether a file changed.
    pub fn write_base(&self) -> Result<(State, bool), PoolerError> {
        files::ensure_dir(self.dir(), self.owner.as_ref())?;
        let state = State::load_or_create(self.dir())?;
        let owner = self.owner.as_ref();
        let mut changed = files::write_if_changed(
            &self.dir().join(render::INI_FILE),
            render::ini(&self.settings).as_bytes(),
            owner,
        )?;
        if !self.dir().join(render::DATABASES_FILE).exists() {
            changed |= files::write_if_changed(
                &self.dir().join(render::DATABASES_FILE),
                render::databases(&[]).as_bytes(),
                owner,
            )?;
        }
        if let Auth::Query { user } = &self.settings.auth {
            changed |= files::write_if_changed(
                &self.dir().join(render::HBA_FILE),
                render::hba(user).as_bytes(),
                owner,
            )?;
        }
        changed |= files::write_if_changed(
            &self.dir().join(render::AUTH_FILE),
            self.auth_text(&state).as_bytes(),
            owner,
        )?;
        Ok((state, changed))
    }

    fn auth_text(&self, state: &State) -> String {
        let admin = admin_verifier(&state.admin_password);
        if let Auth::Query { user } = &self.settings.auth {
            // Tenant logins are looked up on the server (an auth file entry would win over it);
            // the lookup login needs its password itself to log in to the server.
            let lookup = state
                .lookup
                .as_ref()
                .map(|l| (user.as_str(), l.password.as_str()))
                .filter(|(_, password)| render::is_plain(password));
            return render::auth_file(
                std::iter::once((render::ADMIN_USER, admin.as_str())).chain(lookup),
            );
        }
        render::auth_file(
            std::iter::once((render::ADMIN_USER, admin.as_str())).chain(
                state
                    .verifiers
                    .iter()
                    .filter(|(user, verifier)| render::is_plain(user) && render::is_plain(verifier))
                    .map(|(u, v)| (u.as_str(), v.as_str())),
            ),
        )
    }

    /// Starts a local pgbouncer on freshly written files (nothing for [`Runner::Files`]).
    pub fn ensure_running(&self) -> Result<Option<i32>, PoolerError> {
        let (_, _) = self.write_base()?;
        match &self.runner {
            Runner::Local(process) => process.start().map(Some),
            Runner::Files => Ok(None),
        }
    }

    pub fn stop(&self) -> Result<(), PoolerError> {
        match &self.runner {
            Runner::Local(process) => process.stop(),
            Runner::Files => Ok(()),
        }
    }

    /// RELOAD through the console; SIGHUP to a local pgbouncer when the console does not answer.
    pub async fn reload(&self) -> Result<(), PoolerError> {
        let admin = self.console()?;
        match (admin.reload().await, &self.runner) {
            (Ok(()), _) => Ok(()),
            (Err(error), Runner::Local(process)) if process.pid().is_some() => {
                tracing::warn!(error = %pgtenant_engine::error_chain(&error), "RELOAD failed; sending SIGHUP");
                process.hangup()
            }
            (Err(error), _) => Err(error),
        }
    }

    /// `auth: query`: gives the lookup role its login, a generated password kept in the credential
    /// store (created the first time) and the [`scram_verifier`] of it, a small connection limit and
    /// no other attribute; the auth file gets the password (see [`render::hba`]). The server is
    /// asked (and repaired) when the stored password is new to the state, and on every full
    /// `sync` (`check_server`), so a role changed by hand is put back by the next apply.
    async fn ensure_lookup_login(
        &self,
        connector: &Connector,
        store: &dyn CredentialStore,
        state: &mut State,
        check_server: bool,
    ) -> Result<Vec<String>, PoolerError> {
        let (Auth::Query { user }, Some(path)) = (&self.settings.auth, &self.lookup_secret) else {
            return Ok(Vec::new());
        };
        let engine =
            |e: &dyn std::error::Error| PoolerError::Engine(pgtenant_engine::error_chain(e));
        let mut changes = Vec::new();
        let password = match store.get(path).await.map_err(|e| engine(&e))? {
            Some(credential) => credential.password,
            None => {
                let credential = self.new_lookup_credential(user);
                store.put(path, &credential).await.map_err(|e| engine(&e))?;
                changes.push(format!("password of {user} (new, in {path})"));
                credential.password
            }
        };
        let known = state
            .lookup
            .as_ref()
            .is_some_and(|l| l.password == password);
        if known && !check_server {
            return Ok(changes);
        }
        let verifier = scram_verifier(user, &password, DEFAULT_SCRAM_ITERATIONS);
        let control = connector.connect(None).await.map_err(|e| engine(&e))?;
        let row = control
            .query_opt(
                pgtenant_engine::sql::POOLER_LOOKUP_LOGIN_IS_SET,
                &[user, &LOOKUP_CONNECTION_LIMIT, &verifier],
            )
            .await
            .map_err(|e| engine(&e))?;
        if !row.is_some_and(|row| row.get::<_, bool>(0)) {
            let role = Ident::new(user.as_str());
            for statement in [
                pgtenant_engine::sql::pooler_lookup_role(),
                pgtenant_engine::sql::pooler_lookup_login(&role, LOOKUP_CONNECTION_LIMIT),
                pgtenant_engine::sql::set_password_to(&role, &verifier),
            ] {
                control
                    .batch_execute(&statement)
                    .await
                    .map_err(|e| engine(&e))?;
            }
            changes.push(format!("login of {user}"));
        }
        state.lookup = Some(state::Lookup { password, verifier });
        Ok(changes)
    }

    /// The lookup login's credential with a newly generated password, as the store keeps it.
    fn new_lookup_credential(&self, user: &str) -> pgtenant_secrets::Credential {
        pgtenant_secrets::Credential {
            username: user.to_string(),
            password: pgtenant_secrets::generate_password(),
            endpoint: self.server_host.clone(),
            port: self.server_port,
            dbname: "postgres".to_string(),
            pooler: None,
            scram_iterations: None,
        }
    }

    /// `rotate --pooler-lookup` (`auth: query`): a new generated password for the lookup login.
    /// In this order, so that an interruption anywhere is put right by the next sync: the new
    /// password goes into the credential store; the sync that follows finds it new to the state
    /// and sets its verifier on the server (from then on the old password is refused), writes it
    /// into the auth file and RELOADs. Server connections pgbouncer already holds as the lookup
    /// login, and every pooled client session, stay open; only lookup connections opened between
    /// the server's change and the RELOAD would fail (and be retried by pgbouncer).
    ///
    /// Returns the login and the store path of its password.
    pub async fn rotate_lookup(
        &self,
        connector: &Connector,
        store: &dyn CredentialStore,
    ) -> Result<(String, SecretPath), PoolerError> {
        let (Auth::Query { user }, Some(path)) = (&self.settings.auth, &self.lookup_secret) else {
            return Err(PoolerError::Engine(
                "this cluster's pooler has no lookup login: it uses `auth: file` (the lookup \
                 login exists with `pooler.auth: query` only)"
                    .to_string(),
            ));
        };
        let credential = self.new_lookup_credential(user);
        store
            .put(path, &credential)
            .await
            .map_err(|e| PoolerError::Engine(pgtenant_engine::error_chain(&e)))?;
        self.sync_logins(connector, store, &[], None).await?;
        Ok((user.clone(), path.clone()))
    }

    /// [`Self::reload`] with the state the caller has loaded, on the kept console session (opened
    /// again once when it is closed or fails). RELOAD answers once pgbouncer has read its files
    /// again, so a login the files now hold can log in when this returns.
    async fn reload_with(&self, state: &State) -> Result<(), PoolerError> {
        let mut kept = self.console_session.lock().await;
        if let Some((password, client)) = kept.as_ref() {
            if *password == state.admin_password
                && !client.is_closed()
                && client.simple_query("RELOAD").await.is_ok()
            {
                return Ok(());
            }
        }
        *kept = None;
        let admin = self.admin(state);
        let reloaded = match admin.connect().await {
            Ok(client) => match client.simple_query("RELOAD").await {
                Ok(_) => {
                    *kept = Some((state.admin_password.clone(), client));
                    Ok(())
                }
                Err(error) => Err(PoolerError::Console(error)),
            },
            Err(error) => Err(error),
        };
        match (reloaded, &self.runner) {
            (Ok(()), _) => Ok(()),
            (Err(error), Runner::Local(process)) if process.pid().is_some() => {
                tracing::warn!(error = %pgtenant_engine::error_chain(&error), "RELOAD failed; sending SIGHUP");
                process.hangup()
            }
            (Err(error), _) => Err(error),
        }
    }

    /// Every tenant login of `desired` with where its credentials are stored.
    pub fn logins_of(tenants: &[DesiredTenant]) -> Vec<(String, SecretPath)> {
        Self::logins_in(tenants.iter())
    }

    fn logins_in<'a>(
        tenants: impl Iterator<Item = &'a DesiredTenant>,
    ) -> Vec<(String, SecretPath)> {
        tenants
            .flat_map(|t| t.login_roles())
            .filter_map(|r| {
                r.secret_path
                    .clone()
                    .map(|p| (r.name.as_str().to_string(), p))
            })
            .collect()
    }

    /// The pool entries and the auth file for the whole fleet (after an apply): every declared
    /// tenant's entry, the verifiers of its logins, nothing else. See [`Self::sync_logins`].
    pub async fn sync_now(
        &self,
        connector: &Connector,
        desired: &Desired,
        store: &dyn CredentialStore,
    ) -> Result<Vec<String>, PoolerError> {
        self.sync_scoped(connector, desired, store, &SyncScope::default())
            .await
    }

    /// [`Self::sync_now`] after an apply that touched only `scope.tenants`. Of `desired`, only the
    /// tenants in scope are read, so it is correct whether `desired` holds the whole repo or only
    /// what a scoped load read: their pool entries are rendered again (an entry goes when its
    /// tenant opted out), their logins are read from the store and checked; every other entry of
    /// the databases file, and every other login's verifier, stays as pgtenant's files and state
    /// have them. A tenant in scope that `desired` does not declare was removed from the repo (the
    /// scoped load reads the whole repo then): its entry and the logins the state records for it
    /// go, as a full sync would remove them. A full sync, after an unscoped run, checks them all. The logins in
    /// `scope.set_by_apply` have just been given their stored password's verifier by the apply:
    /// it is recorded, not set again.
    pub async fn sync_scoped(
        &self,
        connector: &Connector,
        desired: &Desired,
        store: &dyn CredentialStore,
        scope: &SyncScope,
    ) -> Result<Vec<String>, PoolerError> {
        // Another process (or another Pooler of this process: the failover policy's) may have
        // followed a new primary since this one was made: the state file says where entries point.
        *self.followed.write().expect("not poisoned") =
            followed(self.dir(), &self.server_host, self.server_port)?;
        let tenants: Vec<&DesiredTenant> = match &scope.tenants {
            None => desired.tenants.iter().collect(),
            Some(scope) => desired
                .tenants
                .iter()
                .filter(|t| scope.contains(&t.id))
                .collect(),
        };
        let entries = match &scope.tenants {
            None => tenants.iter().filter_map(|t| self.entry(t)).collect(),
            Some(scope) => {
                // A tenant in scope that `desired` does not declare was removed (the scoped load
                // then read the whole repo): its entry goes, as in a full sync, unless another
                // tenant declares a database of the same name.
                let declared: BTreeSet<&str> = desired
                    .tenants
                    .iter()
                    .map(|t| t.database.as_str())
                    .collect();
                let removed: BTreeSet<String> = scope
                    .iter()
                    .filter(|id| !tenants.iter().any(|t| t.id == **id))
                    .filter_map(|id| pgtenant_spec::TenantId::parse(id).ok())
                    .map(|t| t.database())
                    .filter(|database| !declared.contains(database.as_str()))
                    .collect();
                self.entries_replacing(&tenants, &removed)?
            }
        };
        let logins = Self::logins_in(tenants.iter().copied());
        let owners: BTreeMap<String, String> = tenants
            .iter()
            .flat_map(|t| {
                t.login_roles()
                    .map(|r| (r.name.as_str().to_string(), t.id.clone()))
            })
            .collect();
        self.sync_with(
            connector,
            store,
            Sync {
                logins: &logins,
                entries: Some(&entries),
                scope: scope.tenants.as_ref(),
                owners: &owners,
                set_by_apply: &scope.set_by_apply,
            },
        )
        .await
    }

    /// The entries of the databases file pgtenant wrote last (none before the first).
    fn written_entries(&self) -> Result<Vec<Entry>, PoolerError> {
        let path = self.dir().join(render::DATABASES_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(render::parse_databases(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(PoolerError::io(&path, e)),
        }
    }

    /// The written entries, those of `tenants`' databases replaced by what they declare now (none
    /// for a tenant that opted out of pooling), those of `removed` gone; every other entry exactly
    /// as the file has it.
    fn entries_replacing(
        &self,
        tenants: &[&DesiredTenant],
        removed: &BTreeSet<String>,
    ) -> Result<Vec<Entry>, PoolerError> {
        let replaced: BTreeSet<&str> = tenants.iter().map(|t| t.database.as_str()).collect();
        let mut entries: Vec<Entry> = self
            .written_entries()?
            .into_iter()
            .filter(|e| !replaced.contains(e.database.as_str()) && !removed.contains(&e.database))
            .collect();
        entries.extend(tenants.iter().filter_map(|t| self.entry(t)));
        Ok(entries)
    }

    /// Brings the auth file in line with the stored credentials of `logins` (role, secret path)
    /// and, with `entries` (the whole fleet's), the databases file too, dropping every login not
    /// in `logins`; without (after a rotate), the other logins are left as they are. RELOADs when
    /// a file changed; a local pgbouncer that does not run is started.
    ///
    /// A login whose verifier pgtenant does not know the server has (a fleet from before the
    /// pooler, an adopted tenant, a password set by an older pgtenant) gets its own stored password
    /// set again, as the verifier [`scram_verifier`] computes: apps are unaffected (the password is
    /// the same), and from then on the auth file holds exactly the server's verifier. A login whose
    /// password change is still journalled keeps what the state has. The grace twin of a rotated
    /// login keeps its verifier as long as it exists and may log in.
    ///
    /// Returns what changed (empty: nothing, and pgbouncer was not reloaded).
    pub async fn sync_logins(
        &self,
        connector: &Connector,
        store: &dyn CredentialStore,
        logins: &[(String, SecretPath)],
        entries: Option<&[Entry]>,
    ) -> Result<Vec<String>, PoolerError> {
        self.sync_with(
            connector,
            store,
            Sync {
                logins,
                entries,
                scope: None,
                owners: &BTreeMap::new(),
                set_by_apply: &BTreeSet::new(),
            },
        )
        .await
    }

    async fn sync_with(
        &self,
        connector: &Connector,
        store: &dyn CredentialStore,
        sync: Sync<'_>,
    ) -> Result<Vec<String>, PoolerError> {
        let Sync {
            logins,
            entries,
            scope,
            owners,
            set_by_apply,
        } = sync;
        let engine =
            |e: &dyn std::error::Error| PoolerError::Engine(pgtenant_engine::error_chain(e));
        let (mut state, mut changed) =
            tracing::info_span!("pooler_base").in_scope(|| self.write_base())?;
        let mut changes = Vec::new();
        if changed {
            changes.push("pgbouncer.ini".to_string());
        }
        changes.extend(
            self.ensure_lookup_login(connector, store, &mut state, scope.is_none())
                .await?,
        );
        let (listed, stored) = if scope.is_some() {
            // Scoped: only these logins' credentials and journals, without listing the store.
            let paths: Vec<_> = logins
                .iter()
                .flat_map(|(_, p)| [p.clone(), journal_path(p)])
                .collect();
            let stored = store
                .get_many(&paths)
                .instrument(tracing::info_span!("pooler_store"))
                .await
                .map_err(|e| engine(&e))?;
            (stored.keys().cloned().collect::<BTreeSet<_>>(), stored)
        } else {
            let listed: BTreeSet<_> = store
                .list()
                .await
                .map_err(|e| engine(&e))?
                .into_iter()
                .collect();
            let wanted: Vec<_> = logins
                .iter()
                .map(|(_, p)| p.clone())
                .filter(|p| listed.contains(p))
                .collect();
            let stored = store.get_many(&wanted).await.map_err(|e| engine(&e))?;
            (listed, stored)
        };
        let mut keep = BTreeSet::new();
        if let Some(scope) = scope {
            // Every login that is not one of the tenants in scope keeps what the state has.
            let replaced: BTreeSet<String> = logins
                .iter()
                .flat_map(|(role, _)| [role.clone(), alternate_name(role)])
                .collect();
            let of_scope = |login: &String| {
                replaced.contains(login)
                    || state.tenants.get(login).is_some_and(|t| scope.contains(t))
            };
            keep.extend(state.verifiers.keys().filter(|l| !of_scope(l)).cloned());
        }
        let mut twins = BTreeSet::new();
        let mut to_set = Vec::new();
        for (role, path) in logins {
            let alternate = alternate_name(role);
            if let Some(tenant) = owners.get(role) {
                for name in [role, &alternate] {
                    state.tenants.insert(name.clone(), tenant.clone());
                }
            }
            if listed.contains(&journal_path(path)) {
                // A password change in flight: whatever the server has now, the state knew last.
                keep.insert(role.clone());
                keep.insert(alternate);
                continue;
            }
            let Some(credential) = stored.get(path) else {
                continue;
            };
            let login = credential.username.clone();
            let iterations = credential.scram_iterations();
            let digest =
                password_digest(&state.digest_key, &login, &credential.password, iterations);
            let known =
                state.digests.get(&login) == Some(&digest) && state.verifiers.contains_key(&login);
            if !known {
                let verifier = scram_verifier(&login, &credential.password, iterations);
                if state.verifiers.get(&login) == Some(&verifier) {
                    state.digests.insert(login.clone(), digest);
                } else if set_by_apply.contains(&login) {
                    // The apply set exactly this verifier: record it, do not set it again.
                    state.verifiers.insert(login.clone(), verifier);
                    state.digests.insert(login.clone(), digest);
                    changes.push(format!("verifier of {login} (set by the apply)"));
                } else {
                    to_set.push((login.clone(), verifier, digest));
                }
            }
            let twin = if login == alternate {
                role.clone()
            } else {
                alternate
            };
            if state.verifiers.contains_key(&twin) {
                twins.insert(twin);
            }
            keep.insert(login);
        }
        if !to_set.is_empty() || !twins.is_empty() {
            let control = connector.connect(None).await.map_err(|e| engine(&e))?;
            let candidates: Vec<String> = twins.into_iter().collect();
            let rows = control
                .query(
                    "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolcanlogin AND rolname = ANY($1)",
                    &[&candidates],
                )
                .await
                .map_err(|e| engine(&e))?;
            keep.extend(rows.iter().map(|row| row.get::<_, String>(0)));
            for (login, verifier, digest) in &to_set {
                control
                    .batch_execute(&pgtenant_engine::sql::set_password_to(
                        &Ident::new(login.as_str()),
                        verifier,
                    ))
                    .await
                    .map_err(|e| engine(&e))?;
                state.verifiers.insert(login.clone(), verifier.clone());
                state.digests.insert(login.clone(), digest.clone());
                changes.push(format!("verifier of {login}"));
            }
        }
        if entries.is_some() {
            let before = state.verifiers.len();
            state.verifiers.retain(|login, _| keep.contains(login));
            if state.verifiers.len() != before {
                changes.push(format!(
                    "{} logins left the auth file",
                    before - state.verifiers.len()
                ));
            }
        } else {
            // Twins that no longer log in leave even in a partial sync.
            for (role, _) in logins {
                for name in [role.clone(), alternate_name(role)] {
                    if !keep.contains(&name) && state.verifiers.remove(&name).is_some() {
                        changes.push(format!("{name} left the auth file"));
                    }
                }
            }
        }
        let State {
            verifiers,
            digests,
            tenants,
            ..
        } = &mut state;
        digests.retain(|login, _| verifiers.contains_key(login));
        tenants.retain(|login, _| verifiers.contains_key(login));
        {
            let _files = tracing::info_span!("pooler_files").entered();
            state.save(self.dir())?;
            let owner = self.owner.as_ref();
            // Both are rendered again from the state and the declaration by every sync: replaced
            // atomically, but not worth an fsync each on the change path.
            if files::write_derived_if_changed(
                &self.dir().join(render::AUTH_FILE),
                self.auth_text(&state).as_bytes(),
                owner,
            )? {
                changed = true;
                changes.push("auth file".to_string());
            }
            if let Some(entries) = entries {
                if files::write_derived_if_changed(
                    &self.dir().join(render::DATABASES_FILE),
                    render::databases(entries).as_bytes(),
                    owner,
                )? {
                    changed = true;
                    changes.push(format!("{} pool entries", entries.len()));
                }
            }
        }
        match &self.runner {
            Runner::Local(process) if process.pid().is_none() => {
                process.start()?;
                changes.push("pgbouncer started".to_string());
            }
            _ if changed => {
                self.reload_with(&state)
                    .instrument(tracing::info_span!("pooler_reload"))
                    .await?
            }
            _ => {}
        }
        Ok(changes)
    }
}

/// What one sync covers: `logins` are read from the store and checked; `entries` replace the
/// databases file, and then every login not in `logins` leaves the auth file, except, with
/// `scope` (the tenants of a scoped sync), every login the state does not record as one of
/// theirs. `owners`: the tenant of each role in `logins`, recorded in the state.
struct Sync<'a> {
    logins: &'a [(String, SecretPath)],
    entries: Option<&'a [Entry]>,
    scope: Option<&'a BTreeSet<String>>,
    owners: &'a BTreeMap<String, String>,
    set_by_apply: &'a BTreeSet<String>,
}

/// The admin login's verifier: the same for the same password, so it is computed once per
/// process rather than twice per sync (8,192 rounds each).
fn admin_verifier(password: &str) -> String {
    static LAST: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match last.as_ref() {
        Some((known, verifier)) if known == password => verifier.clone(),
        _ => {
            let verifier = scram_verifier(render::ADMIN_USER, password, DEFAULT_SCRAM_ITERATIONS);
            *last = Some((password.to_string(), verifier.clone()));
            verifier
        }
    }
}

#[async_trait::async_trait]
impl pgtenant_engine::PoolerSync for Pooler {
    async fn sync(
        &self,
        connector: &Connector,
        desired: &Desired,
        store: &dyn CredentialStore,
    ) -> Result<Vec<String>, String> {
        self.sync_now(connector, desired, store)
            .await
            .map_err(|e| pgtenant_engine::error_chain(&e))
    }

    async fn sync_scoped(
        &self,
        connector: &Connector,
        desired: &Desired,
        store: &dyn CredentialStore,
        scope: &SyncScope,
    ) -> Result<Vec<String>, String> {
        Pooler::sync_scoped(self, connector, desired, store, scope)
            .await
            .map_err(|e| pgtenant_engine::error_chain(&e))
    }

    async fn pool_stats(&self) -> Option<Result<Vec<pgtenant_engine::PoolStats>, String>> {
        Some(
            self.all_pools()
                .await
                .map_err(|e| pgtenant_engine::error_chain(&e)),
        )
    }
}

/// After a failover, every pool's next server connection goes to the new primary.
#[async_trait::async_trait]
impl pgtenant_engine::failover::FollowPrimary for Pooler {
    async fn follow_primary(&self, host: &str, port: u16) -> Result<bool, String> {
        Pooler::follow_primary(self, host, port)
            .await
            .map_err(|e| pgtenant_engine::error_chain(&e))
    }
}

/// Pool defaults when the platform config names none (P13b's `pooling:` defaults agree).
pub const DEFAULT_POOL_MODE: &str = "transaction";
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// Clients pgbouncer accepts in all; each costs a file descriptor, not a server connection.
pub const MAX_CLIENT_CONN: u32 = 2000;

/// The embedded cluster's pooler: pgbouncer on 127.0.0.1 at the port recorded in `cluster.json`,
/// presenting the server's own certificate (issued by the cluster's CA for 127.0.0.1 and
/// localhost), run as the server's OS account. None when pgbouncer is not installed.
///
/// With `server_socket` (`pooling.serverSocket`, the default) and a server that listens on its
/// Unix socket, the pool entries name the socket's directory, which the server's account (and
/// so pgbouncer) can enter: no TLS between them, and SCRAM still. Otherwise (or when the path
/// cannot stand in pgbouncer's files as is) they name 127.0.0.1 and pgbouncer verifies the
/// server's certificate with the cluster's CA.
pub fn for_embedded(
    cluster: &pgtenant_cluster::EmbeddedCluster,
    server_socket: bool,
) -> Result<Option<Pooler>, PoolerError> {
    let Some(program) = pgtenant_cluster::find_pgbouncer() else {
        return Ok(None);
    };
    let user = cluster.server_user()?;
    // Resolved, so pgbouncer (another OS account) needs to traverse only the cluster's own
    // directories, never a private state directory holding a link to them.
    let real = |path: PathBuf| std::fs::canonicalize(&path).unwrap_or(path);
    let base = real(cluster.dir().to_path_buf());
    let dir = base.join(cluster.pooler_dir().file_name().expect("a named directory"));
    let (cert, key) = cluster.pooler_tls();
    let (cert, key) = (real(cert), real(key));
    let socket = cluster.socket_dir().display().to_string();
    let server_host =
        match server_socket && cluster.listens_on_socket() && render::is_plain(&socket) {
            true => socket,
            false => "127.0.0.1".to_string(),
        };
    Ok(Some(Pooler {
        settings: Settings {
            dir: dir.clone(),
            listen_addr: "127.0.0.1".to_string(),
            listen_port: cluster.pooler_port()?,
            auth: Auth::File,
            client_tls_cert: cert,
            client_tls_key: key,
            server_tls: ServerTls {
                ca_file: Some(real(cluster.ca_cert_path())),
            },
            default_pool_mode: DEFAULT_POOL_MODE.to_string(),
            default_pool_size: DEFAULT_POOL_SIZE,
            max_client_conn: MAX_CLIENT_CONN,
        },
        followed: RwLock::new(followed(&dir, &server_host, cluster.port()?)?),
        server_host,
        server_port: cluster.port()?,
        owner: Some(user.clone()),
        console_session: Default::default(),
        runner: Runner::Local(Process { program, dir, user }),
        lookup_secret: None,
    }))
}

/// The primary a pooler in `dir` follows instead of the configured `host:port` (state file).
fn followed(dir: &Path, host: &str, port: u16) -> Result<Option<(String, u16)>, PoolerError> {
    Ok(State::load(dir)?
        .and_then(|state| state.primary)
        .filter(|p| p.configured == state::Followed::configured(host, port))
        .map(|p| (p.host, p.port)))
}

/// The lookup login of `auth: query`: the plan creates it (NOLOGIN) with its function in every
/// tenant database and gives it CONNECT there; the sync gives it its login and password.
pub const LOOKUP_USER: &str = pgtenant_engine::sql::POOLER_LOOKUP_ROLE;
/// Server connections the lookup login may hold at once: pgbouncer keeps one per database it
/// has looked a login up in, and closes them when idle.
pub const LOOKUP_CONNECTION_LIMIT: i32 = 4;

/// Where the lookup login's password of `cluster`'s pooler is kept in the credential store.
pub fn lookup_secret_path(cluster: &str) -> SecretPath {
    let segment: String = cluster
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    SecretPath::parse(&format!("pgtenant/pooler/{segment}-lookup"))
        .expect("a path of valid segments")
}

/// Where a configured cluster's server is, as pgbouncer reaches it.
pub struct Server {
    pub host: String,
    pub port: u16,
    /// The CA that issued the server's certificate: `verify-full`; None: `require`.
    pub ca_file: Option<PathBuf>,
}

/// The pooler of a cluster of the platform config (`clusters[].pooler`): files in `configDir`
/// (default `<state>/pooler/<cluster>/`), pgbouncer run by pgtenant (`run: local`, as the
/// server account when we are root) or by someone else (`run: files`: files and RELOAD only).
/// Clients must be shown a certificate for the pooler's host name: `tls` is required here.
pub fn for_config(
    config: &pgtenant_config::PoolerConfig,
    defaults: &pgtenant_config::PoolingDefaults,
    state_dir: &Path,
    cluster: &str,
    server: Server,
) -> Result<Pooler, PoolerError> {
    let dir = config
        .config_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("pooler").join(cluster));
    let tls = config.tls.as_ref().ok_or_else(|| PoolerError::State {
        path: dir.clone(),
        reason: format!(
            "cluster `{cluster}`: pooler.tls (certFile, keyFile) is required: clients verify the \
             pooler's certificate for {}",
            config.app_endpoint().host
        ),
    })?;
    let user = ServerUser::for_new_cluster()?;
    let runner = match config.run {
        pgtenant_config::PoolerRun::Local => Runner::Local(Process {
            program: pgtenant_cluster::find_pgbouncer().ok_or_else(|| PoolerError::Start {
                reason: "pgbouncer is not installed (apt-get install pgbouncer, or set \
                         PGTENANT_PGBOUNCER); or use pooler.run: files"
                    .to_string(),
            })?,
            dir: dir.clone(),
            user: user.clone(),
        }),
        pgtenant_config::PoolerRun::Files => Runner::Files,
    };
    let followed = RwLock::new(followed(&dir, &server.host, server.port)?);
    Ok(Pooler {
        followed,
        lookup_secret: (config.auth == pgtenant_config::PoolerAuth::Query)
            .then(|| lookup_secret_path(cluster)),
        console_session: Default::default(),
        settings: Settings {
            dir,
            listen_addr: config.listen.host.clone(),
            listen_port: config.listen.port,
            auth: match config.auth {
                pgtenant_config::PoolerAuth::File => Auth::File,
                pgtenant_config::PoolerAuth::Query => Auth::Query {
                    user: LOOKUP_USER.to_string(),
                },
            },
            client_tls_cert: tls.cert_file.clone(),
            client_tls_key: tls.key_file.clone(),
            server_tls: ServerTls {
                ca_file: server.ca_file,
            },
            default_pool_mode: defaults.mode.as_str().to_string(),
            default_pool_size: defaults.size,
            max_client_conn: MAX_CLIENT_CONN,
        },
        server_host: server.host,
        server_port: server.port,
        owner: match config.run {
            pgtenant_config::PoolerRun::Local => Some(user),
            pgtenant_config::PoolerRun::Files => None,
        },
        runner,
    })
}

/// One tenant's pool as `check` reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PoolReport {
    /// `ok`, `missing` (pgbouncer has no such database) or `stale` (it has one that differs
    /// from what the repo declares).
    pub entry: &'static str,
    /// What differs, for a stale entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differs: Option<String>,
    pub cl_active: i64,
    pub cl_waiting: i64,
    pub sv_active: i64,
    pub sv_idle: i64,
    /// SHOW POOLS `maxwait_us` and `maxwait` together: the longest a client waits now.
    pub maxwait_us: i64,
    /// SHOW STATS: average wait for a server connection and per transaction, in µs.
    pub avg_wait_us: i64,
    pub avg_xact_us: i64,
    pub total_xact_count: i64,
}

fn number(row: &admin::Row, column: &str) -> i64 {
    row.get(column).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `database`'s numbers from SHOW POOLS (summed over its users) and SHOW STATS.
fn numbers(report: &mut PoolReport, database: &str, pools: &[admin::Row], stats: &[admin::Row]) {
    for row in pools
        .iter()
        .filter(|r| r.get("database").map(String::as_str) == Some(database))
    {
        report.cl_active += number(row, "cl_active");
        report.cl_waiting += number(row, "cl_waiting");
        report.sv_active += number(row, "sv_active");
        report.sv_idle += number(row, "sv_idle");
        let wait = number(row, "maxwait") * 1_000_000 + number(row, "maxwait_us");
        report.maxwait_us = report.maxwait_us.max(wait);
    }
    if let Some(row) = stats
        .iter()
        .find(|r| r.get("database").map(String::as_str) == Some(database))
    {
        report.avg_wait_us = number(row, "avg_wait_time");
        report.avg_xact_us = number(row, "avg_xact_time");
        report.total_xact_count = number(row, "total_xact_count");
    }
}

impl Pooler {
    /// Every pool of pgbouncer but its own console's, by database (serve's `/metrics`).
    pub async fn all_pools(&self) -> Result<Vec<pgtenant_engine::PoolStats>, PoolerError> {
        let admin = self.console()?;
        let databases = admin.databases().await?;
        let pools = admin.pools().await?;
        let stats = admin.stats().await?;
        let seconds = |us: i64| us as f64 / 1e6;
        Ok(databases
            .iter()
            .filter_map(|row| row.get("name"))
            .filter(|name| name.as_str() != "pgbouncer")
            .map(|name| {
                let mut report = PoolReport::default();
                numbers(&mut report, name, &pools, &stats);
                pgtenant_engine::PoolStats {
                    database: name.clone(),
                    cl_active: report.cl_active,
                    cl_waiting: report.cl_waiting,
                    sv_active: report.sv_active,
                    sv_idle: report.sv_idle,
                    maxwait_seconds: seconds(report.maxwait_us),
                    avg_wait_seconds: seconds(report.avg_wait_us),
                    avg_xact_seconds: seconds(report.avg_xact_us),
                    total_xact_count: report.total_xact_count,
                }
            })
            .collect())
    }

    /// Each pooled tenant database of `desired` as pgbouncer sees it now (SHOW DATABASES, SHOW
    /// POOLS, SHOW STATS through the console). An error when the console does not answer.
    pub async fn report(
        &self,
        desired: &Desired,
    ) -> Result<BTreeMap<String, PoolReport>, PoolerError> {
        let admin = self.console()?;
        let databases = admin.databases().await?;
        let pools = admin.pools().await?;
        let stats = admin.stats().await?;
        let mut reports = BTreeMap::new();
        for entry in desired.tenants.iter().filter_map(|t| self.entry(t)) {
            let mut report = PoolReport::default();
            let name = entry.database.as_str();
            match databases
                .iter()
                .find(|row| row.get("name").map(String::as_str) == Some(name))
            {
                None => report.entry = "missing",
                Some(row) => {
                    let wanted = [
                        ("host", entry.host.clone()),
                        ("port", entry.port.to_string()),
                        ("database", entry.database.clone()),
                        ("pool_mode", entry.pool_mode.clone()),
                        ("pool_size", entry.pool_size.to_string()),
                    ];
                    let differs: Vec<String> = wanted
                        .iter()
                        .filter(|(column, value)| {
                            row.get(*column).is_some_and(|have| have != value)
                        })
                        .map(|(column, value)| {
                            format!("{column} {} (declared {value})", row[*column])
                        })
                        .collect();
                    if differs.is_empty() {
                        report.entry = "ok";
                    } else {
                        report.entry = "stale";
                        report.differs = Some(differs.join(", "));
                    }
                }
            }
            numbers(&mut report, name, &pools, &stats);
            reports.insert(name.to_string(), report);
        }
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tls: bool, run: pgtenant_config::PoolerRun) -> pgtenant_config::PoolerConfig {
        pgtenant_config::PoolerConfig {
            run,
            listen: pgtenant_config::HostPort {
                host: "10.0.0.5".into(),
                port: 6432,
            },
            endpoint: None,
            config_dir: None,
            auth: pgtenant_config::PoolerAuth::Query,
            tls: tls.then(|| pgtenant_config::TlsConfig {
                cert_file: "/etc/pooler/tls.crt".into(),
                key_file: "/etc/pooler/tls.key".into(),
            }),
        }
    }

    fn server() -> Server {
        Server {
            host: "db.internal".into(),
            port: 5432,
            ca_file: None,
        }
    }

    #[test]
    fn a_configured_pooler_needs_a_certificate_for_its_clients() {
        let defaults = pgtenant_config::PoolingDefaults::default();
        let err = for_config(
            &config(false, pgtenant_config::PoolerRun::Files),
            &defaults,
            Path::new("/state"),
            "prod",
            server(),
        )
        .err()
        .expect("no tls, no pooler");
        assert!(err.to_string().contains("pooler.tls"), "{err}");
    }

    #[test]
    fn a_files_pooler_lives_in_the_state_dir_and_uses_the_lookup_function() {
        let defaults = pgtenant_config::PoolingDefaults::default();
        let pooler = for_config(
            &config(true, pgtenant_config::PoolerRun::Files),
            &defaults,
            Path::new("/state"),
            "prod",
            server(),
        )
        .unwrap();
        assert_eq!(pooler.dir(), Path::new("/state/pooler/prod"));
        assert!(matches!(pooler.runner, Runner::Files));
        let ini = render::ini(&pooler.settings);
        assert!(ini.contains("listen_addr = 10.0.0.5\n"), "{ini}");
        assert!(
            ini.contains("auth_user = pgtenant_pooler_lookup\n"),
            "{ini}"
        );
        assert!(ini.contains("server_tls_sslmode = require\n"), "{ini}");
        assert!(
            ini.contains("client_tls_cert_file = /etc/pooler/tls.crt\n"),
            "{ini}"
        );
    }
}
