//! The executor: runs a [`Plan`] against the cluster and the credential store.
//!
//! Tenants are independent: up to `parallelism` of them run at once, each worker on its own control
//! connection, and one tenant's failure stops only that tenant. Within a tenant the statements for one
//! connection are pipelined (sent together, each its own implicit transaction), so a tenant costs a
//! couple of round trips rather than one per statement. Drops of removed tenants run last.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use pgtenant_secrets::{generate_password, Credential, CredentialStore, SecretPath};
use pgtenant_spec::Environment;
use serde::Serialize;
use tokio_postgres::Client;
use tracing::Instrument as _;

use crate::connect::Connector;
use crate::ident::{quote_literal, Ident};
use crate::plan::{Action, Operation, Phase, Plan};
use crate::rotate::journal_path;
use crate::sessions::Pool;
use crate::sql::{self, PASSWORD_PLACEHOLDER};
use crate::EngineError;

#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    pub tenant: String,
    pub applied: usize,
    pub planned: usize,
    pub error: Option<OperationError>,
    /// What the run did besides statements, for the operator (a settled password change, the file
    /// a final backup went to).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationError {
    /// The statement (as shown in the plan) that failed.
    pub statement: String,
    pub message: String,
    pub sqlstate: Option<String>,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for OperationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(code) = &self.sqlstate {
            write!(f, " (SQLSTATE {code})")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "\n  detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        write!(f, "\n  while running: {}", self.statement)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyOutcome {
    pub tenants: Vec<TenantOutcome>,
}

impl ApplyOutcome {
    pub fn applied(&self) -> usize {
        self.tenants.iter().map(|t| t.applied).sum()
    }

    pub fn failed(&self) -> impl Iterator<Item = &TenantOutcome> {
        self.tenants.iter().filter(|t| t.error.is_some())
    }
}

/// Where the credentials written to the store say applications should connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// What a final backup is taken of, for [`FinalBackups::take`].
pub struct FinalBackupRequest<'a> {
    pub tenant: &'a str,
    pub database: &'a str,
    pub environment: Environment,
    /// Connects the dump as the control role (a member of every tenant role).
    pub connector: &'a Connector,
}

/// Takes the final backup of a database about to be dropped ([`Action::FinalBackup`]): provided
/// by the caller (the backup crate's trash), so the engine runs no client programs itself.
#[async_trait::async_trait]
pub trait FinalBackups: Send + Sync {
    /// Returns what to tell the operator (the file, its size); an error stops the tenant before
    /// its drop.
    async fn take(
        &self,
        request: FinalBackupRequest<'_>,
    ) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>>;
}

pub struct Executor {
    pub connector: Arc<Connector>,
    pub store: Arc<dyn CredentialStore>,
    pub endpoint: Endpoint,
    pub parallelism: usize,
    /// None: a plan with a final backup fails that tenant before its drop.
    pub final_backups: Option<Arc<dyn FinalBackups>>,
    /// The iteration count of every SCRAM verifier it sets (`passwords.scramIterations`).
    pub scram_iterations: u32,
}

/// Called once per finished tenant (a progress bar, one line per tenant).
pub type Progress = Arc<dyn Fn(&TenantOutcome) + Send + Sync>;

impl Executor {
    pub async fn apply(&self, plan: &Plan, progress: Progress) -> ApplyOutcome {
        self.apply_on(plan, progress, Arc::default()).await
    }

    /// [`Self::apply`], its workers taking their control connections from `pool` and giving them
    /// back when done.
    pub(crate) async fn apply_on(
        &self,
        plan: &Plan,
        progress: Progress,
        pool: Arc<Pool>,
    ) -> ApplyOutcome {
        let (drops, others): (Vec<_>, Vec<_>) = plan
            .by_tenant()
            .into_iter()
            .map(|(tenant, ops)| {
                (
                    tenant.to_string(),
                    ops.into_iter().cloned().collect::<Vec<_>>(),
                )
            })
            .partition(|(_, ops)| ops.iter().all(|op| op.phase.is_removal()));

        let mut outcome = ApplyOutcome {
            tenants: self
                .run_parallel_with(others, progress.clone(), self.parallelism, &pool)
                .await,
        };
        // Drops after everything else, one at a time: they are rare, destructive and worth a clear order.
        outcome
            .tenants
            .extend(self.run_parallel_with(drops, progress, 1, &pool).await);
        outcome.tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        outcome
    }

    async fn run_parallel_with(
        &self,
        work: Vec<(String, Vec<Operation>)>,
        progress: Progress,
        parallelism: usize,
        pool: &Arc<Pool>,
    ) -> Vec<TenantOutcome> {
        if work.is_empty() {
            return Vec::new();
        }
        let workers = parallelism.clamp(1, work.len());
        let queue = Arc::new(Mutex::new(VecDeque::from(work)));
        let handles = (0..workers).map(|_| {
            let queue = queue.clone();
            let progress = progress.clone();
            let worker = Worker {
                connector: self.connector.clone(),
                store: self.store.clone(),
                endpoint: self.endpoint.clone(),
                final_backups: self.final_backups.clone(),
                scram_iterations: self.scram_iterations,
                pool: pool.clone(),
                control: None,
                lent: Vec::new(),
                in_tenant: None,
            };
            tokio::spawn(worker.run(queue, progress))
        });
        join_all(handles)
            .await
            .into_iter()
            .flat_map(|joined| joined.expect("executor worker panicked"))
            .collect()
    }
}

struct Worker {
    connector: Arc<Connector>,
    store: Arc<dyn CredentialStore>,
    endpoint: Endpoint,
    final_backups: Option<Arc<dyn FinalBackups>>,
    scram_iterations: u32,
    /// Where the control connection comes from and goes back to.
    pool: Arc<Pool>,
    /// Taken on first use and kept for the next tenants this worker takes.
    control: Option<Client>,
    /// Roles lent to the control role, committed, for a final backup ([`Worker::lend_committed`]).
    lent: Vec<Ident>,
    /// The session in the current tenant's database, kept between its segments; given to the pool
    /// for the read-back when the tenant succeeded (never for a removal).
    in_tenant: Option<(String, Client)>,
}

type Queue = Arc<Mutex<VecDeque<(String, Vec<Operation>)>>>;

impl Worker {
    async fn run(mut self, queue: Queue, progress: Progress) -> Vec<TenantOutcome> {
        let mut outcomes = Vec::new();
        loop {
            let next = queue.lock().expect("queue lock").pop_front();
            let Some((tenant, ops)) = next else { break };
            let span = tracing::info_span!("tenant", tenant = %tenant, operations = ops.len());
            let outcome = self.tenant(tenant, &ops).instrument(span).await;
            progress(&outcome);
            outcomes.push(outcome);
        }
        if let Some(control) = self.control.take() {
            self.pool.give_back_admin(control);
        }
        outcomes
    }

    async fn tenant(&mut self, tenant: String, ops: &[Operation]) -> TenantOutcome {
        let mut outcome = TenantOutcome {
            tenant,
            applied: 0,
            planned: ops.len(),
            error: None,
            notes: Vec::new(),
        };
        // The logins a StopLogins took away, until the final backup after it has succeeded.
        let mut stopped: Vec<Ident> = Vec::new();
        for segment in segments(ops) {
            let phase = segment.phase();
            let span = tracing::debug_span!("phase", phase = phase.as_str());
            let (applied, error) = async {
                match segment {
                    Segment::Store(op) => match self.store_op(op).await {
                        Ok(()) => (1, None),
                        Err(error) => (0, Some(*error)),
                    },
                    Segment::Step(op) => {
                        let lent = match &op.action {
                            Action::StopLogins { roles, .. } => {
                                self.lend_committed(op, roles).await
                            }
                            _ => Ok(()),
                        };
                        let result = match lent {
                            Ok(()) => self.step(op, &mut stopped, &mut outcome.notes).await,
                            Err(error) => Err(error),
                        };
                        if matches!(op.action, Action::FinalBackup { .. }) {
                            self.take_back_committed().await;
                        }
                        match result {
                            Ok(()) => (1, None),
                            Err(error) => (0, Some(*error)),
                        }
                    }
                    Segment::Sql {
                        database,
                        run_as,
                        ops,
                    } => self.sql_segment(database, run_as, ops).await,
                }
            }
            .instrument(span)
            .await;
            outcome.applied += applied;
            if let Some(error) = error {
                tracing::warn!(tenant = %outcome.tenant, phase = phase.as_str(), error = %error.message, "tenant stopped");
                outcome.error = Some(error);
                break;
            }
        }
        self.take_back_committed().await;
        if let Some((database, session)) = self.in_tenant.take() {
            if outcome.error.is_none() && !ops.iter().any(|op| op.phase.is_removal()) {
                self.pool.give_back_tenant(&database, session);
            }
        }
        outcome
    }

    /// Before a removed database's logins stop and its final backup: the sessions to end and the
    /// dump (other backends, outside any transaction of ours) need the privileges of the tenant's
    /// roles, so the control role is granted them, committed, until [`Self::take_back_committed`]
    /// right after the backup. A run that dies in between leaves the memberships behind; the next
    /// plan revokes them as pgtenant's own.
    async fn lend_committed(
        &mut self,
        op: &Operation,
        roles: &[Ident],
    ) -> Result<(), Box<OperationError>> {
        if roles.is_empty() {
            return Ok(());
        }
        self.control()
            .await
            .map_err(|e| Box::new(engine_error(op, &e)))?;
        let client = self.control.as_ref().expect("a control connection");
        let grants: Vec<String> = roles.iter().map(|r| sql::lend(r, None)).collect();
        client
            .batch_execute(&grants.join(";\n"))
            .await
            .map_err(|e| Box::new(db_error(op, &e)))?;
        self.lent = roles.to_vec();
        Ok(())
    }

    /// Ends what [`Self::lend_committed`] granted; a failure is logged (the next plan revokes it).
    async fn take_back_committed(&mut self) {
        if self.lent.is_empty() {
            return;
        }
        let roles = std::mem::take(&mut self.lent);
        let revokes: Vec<String> = roles.iter().map(|r| sql::take_back(r, None)).collect();
        let result = match self.control().await {
            Ok(()) => self
                .control
                .as_ref()
                .expect("a control connection")
                .batch_execute(&revokes.join(";\n"))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "could not take back the control role's memberships for a final backup; the next plan revokes them");
        }
    }

    /// The operations that are neither SQL batches nor credential-store writes: settling an
    /// interrupted password change, stopping logins, the final backup (whose failure gives the
    /// logins back: the database is kept and can be used as before).
    async fn step(
        &self,
        op: &Operation,
        stopped: &mut Vec<Ident>,
        notes: &mut Vec<String>,
    ) -> Result<(), Box<OperationError>> {
        let failed = |message: String| {
            Box::new(OperationError {
                statement: op.display(),
                message,
                sqlstate: None,
                detail: None,
                hint: None,
            })
        };
        match &op.action {
            Action::FinishPasswordChange { secret_path, .. } => {
                let rotator = crate::rotate::Rotator {
                    connector: &self.connector,
                    store: self.store.as_ref(),
                };
                let recovered = rotator.recover_one(secret_path).await;
                notes.push(recovered.to_string());
                match recovered.unresolved {
                    None => Ok(()),
                    Some(_) => Err(failed(recovered.to_string())),
                }
            }
            Action::StopLogins { database, roles } => {
                *stopped = crate::quiesce::quiesce(&self.connector, database.as_str(), roles)
                    .await
                    .map_err(|e| Box::new(engine_error(op, &e)))?;
                Ok(())
            }
            Action::FinalBackup {
                database,
                environment,
                ..
            } => {
                let result = match &self.final_backups {
                    Some(backups) => {
                        backups
                            .take(FinalBackupRequest {
                                tenant: &op.tenant,
                                database: database.as_str(),
                                environment: *environment,
                                connector: &self.connector,
                            })
                            .await
                    }
                    None => Err("no final backup can be taken by this caller".into()),
                };
                match result {
                    Ok(said) => {
                        notes.extend(said);
                        stopped.clear();
                        Ok(())
                    }
                    Err(error) => {
                        // Compensation: the database stays, so its applications may log in again.
                        let resumed = crate::quiesce::resume(&self.connector, stopped).await;
                        let mut message = format!(
                            "the final backup before dropping it failed, so it is not dropped: {}",
                            crate::error_chain(error.as_ref())
                        );
                        if let Err(e) = resumed {
                            message.push_str(&format!(
                                "; giving the logins back failed too ({}): run `pgtenant apply` again",
                                crate::error_chain(&e)
                            ));
                        }
                        Err(failed(message))
                    }
                }
            }
            _ => unreachable!("segments() routes SQL and store operations elsewhere"),
        }
    }

    async fn store_op(&self, op: &Operation) -> Result<(), Box<OperationError>> {
        let result = match &op.action {
            Action::DeleteCredential { secret_path } => self.store.delete(secret_path).await,
            Action::StoreCredential {
                secret_path,
                dbname,
                pooler,
            } => match self.store.get(secret_path).await {
                Ok(Some(existing)) => {
                    self.store
                        .put(
                            secret_path,
                            &Credential {
                                endpoint: self.endpoint.host.clone(),
                                port: self.endpoint.port,
                                dbname: dbname.clone(),
                                pooler: pooler.clone(),
                                ..existing
                            },
                        )
                        .await
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            _ => unreachable!("segments() routes SQL and steps elsewhere"),
        };
        result.map_err(|e| Box::new(store_error(op, &e)))
    }

    /// The statement to send and, for a new password, the credential to promote once the server has
    /// accepted it. A new password goes to the journal first (see [`crate::rotate`]): if the process
    /// dies before the promotion, the next run logs in with it to learn whether the server has it.
    async fn prepare(&self, op: &Operation) -> Result<(String, Option<Pending>), OperationError> {
        match &op.action {
            Action::Sql { sql, .. } => Ok((sql.clone(), None)),
            Action::SetPassword {
                sql,
                role,
                secret_path,
                dbname,
                pooler,
            } => {
                let store_failed = |e: pgtenant_secrets::StoreError| store_error(op, &e);
                let (password, pending) =
                    match self.store.get(secret_path).await.map_err(store_failed)? {
                        // The stored password is reused only for this very login; credentials naming
                        // another one (a grace twin dropped by hand) are replaced like missing ones.
                        // Set again with the platform's iteration count, which the store then records.
                        Some(existing) if existing.username == role.as_str() => {
                            let password = existing.password.clone();
                            let recount = (existing.scram_iterations() != self.scram_iterations)
                                .then(|| Pending {
                                    secret_path: secret_path.clone(),
                                    journal: None,
                                    credential: existing
                                        .with_scram_iterations(self.scram_iterations),
                                });
                            (password, recount)
                        }
                        _ => {
                            let credential = Credential {
                                username: role.as_str().to_string(),
                                password: generate_password(),
                                endpoint: self.endpoint.host.clone(),
                                port: self.endpoint.port,
                                dbname: dbname.clone(),
                                pooler: pooler.clone(),
                                scram_iterations: None,
                            }
                            .with_scram_iterations(self.scram_iterations);
                            let journal = journal_path(secret_path);
                            self.store
                                .put(&journal, &credential)
                                .await
                                .map_err(store_failed)?;
                            let password = credential.password.clone();
                            (
                                password,
                                Some(Pending {
                                    secret_path: secret_path.clone(),
                                    journal: Some(journal),
                                    credential,
                                }),
                            )
                        }
                    };
                let verifier =
                    crate::pooler::scram_verifier(role.as_str(), &password, self.scram_iterations);
                Ok((
                    sql.replace(PASSWORD_PLACEHOLDER, &quote_literal(&verifier)),
                    pending,
                ))
            }
            _ => unreachable!("segments() routes store operations and steps elsewhere"),
        }
    }

    /// One connection's operations, in batches: consecutive transactional statements run as one
    /// transaction (one round trip, all or nothing); CREATE/DROP DATABASE run alone. The first failure
    /// stops the tenant. Returns how many operations took effect.
    async fn sql_segment(
        &mut self,
        database: Option<&Ident>,
        run_as: Option<&Ident>,
        ops: Vec<&Operation>,
    ) -> (usize, Option<OperationError>) {
        let session = match database {
            None => self.control().await.map(|()| None),
            Some(db) => match self.in_tenant.take() {
                Some((kept, session)) if kept == db.as_str() && !session.is_closed() => {
                    Ok(Some(session))
                }
                _ => self.connector.connect(Some(db.as_str())).await.map(Some),
            },
        };
        let session = match session {
            Ok(session) => session,
            Err(e) => return (0, Some(engine_error(ops[0], &e))),
        };
        let client = session
            .as_ref()
            .or(self.control.as_ref())
            .expect("a connection");
        // As `run_as`: the control role holds no standing membership in tenant roles, so each
        // transaction borrows it (granted after BEGIN, taken back before COMMIT: never committed,
        // and a failure rolls it back) and acts as it with SET LOCAL ROLE, which ends with the
        // transaction, so a kept control connection is the control role again afterwards.
        let (prefix, suffix) = match run_as {
            Some(role) => (
                vec![sql::lend(role, None), sql::set_local_role(role)],
                vec!["RESET ROLE".to_string(), sql::take_back(role, None)],
            ),
            None => (Vec::new(), Vec::new()),
        };
        let mut applied = 0;
        for batch in batches(&ops) {
            let mut statements = Vec::with_capacity(batch.len());
            let mut pending = Vec::new();
            for op in &batch {
                match self.prepare(op).await {
                    Ok((statement, promote)) => {
                        statements.push(statement);
                        pending.extend(promote);
                    }
                    Err(error) => return (applied, Some(error)),
                }
            }
            let transactional = batch.len() > 1
                || run_as.is_some()
                || !matches!(
                    batch[0].action,
                    Action::Sql {
                        transactional: false,
                        ..
                    }
                );
            let text = match transactional {
                true => {
                    let all: Vec<&str> = prefix
                        .iter()
                        .chain(&statements)
                        .chain(&suffix)
                        .map(String::as_str)
                        .collect();
                    format!("BEGIN;\n{};\nCOMMIT", all.join(";\n"))
                }
                false => statements[0].clone(),
            };
            let mut result = client.batch_execute(&text).await;
            for attempt in 0..RETRIES {
                // Retry only what the server reported as transient: the transaction was rolled back.
                match &result {
                    Err(e) if attempt + 1 < RETRIES && is_transient(e) => {
                        if transactional {
                            let _ = client.batch_execute("ROLLBACK").await;
                        }
                        backoff(attempt).await;
                        result = client.batch_execute(&text).await;
                    }
                    _ => break,
                }
            }
            match result {
                Ok(()) => {
                    crate::rotate::failpoint("apply:after-batch");
                    for promote in pending {
                        if let Err(e) = promote.apply(self.store.as_ref()).await {
                            return (applied, Some(store_error(batch[0], &e)));
                        }
                    }
                    applied += batch.len();
                }
                Err(error) => {
                    // A failed statement inside BEGIN skips the rest of the query, COMMIT included:
                    // the session sits in an aborted transaction until it is rolled back.
                    if transactional {
                        let _ = client.batch_execute("ROLLBACK").await;
                    }
                    if error.as_db_error().is_some() {
                        // Rolled back: the server never saw these passwords.
                        for journal in pending.iter().filter_map(|p| p.journal.as_ref()) {
                            let _ = self.store.delete(journal).await;
                        }
                    }
                    let failed = match (
                        transactional && batch.len() > 1,
                        error.as_db_error().is_some(),
                    ) {
                        (true, true) => {
                            self.failing_statement(client, &batch, &prefix, &statements)
                                .await
                        }
                        _ => batch[0],
                    };
                    return (applied, Some(db_error(failed, &error)));
                }
            }
        }
        if let (Some(db), Some(session)) = (database, session) {
            self.in_tenant = Some((db.as_str().to_string(), session));
        }
        (applied, None)
    }

    /// Which statement of a failed (and rolled back) batch fails: replayed one by one (after the
    /// batch's `prefix`) in a transaction that is rolled back, so the report names it.
    async fn failing_statement<'a>(
        &self,
        client: &Client,
        batch: &[&'a Operation],
        prefix: &[String],
        statements: &[String],
    ) -> &'a Operation {
        if client.batch_execute("BEGIN").await.is_err() {
            return batch[0];
        }
        for statement in prefix {
            if client.batch_execute(statement).await.is_err() {
                let _ = client.batch_execute("ROLLBACK").await;
                return batch[0];
            }
        }
        let mut failing = batch[0];
        for (op, statement) in batch.iter().zip(statements) {
            if client.batch_execute(statement).await.is_err() {
                failing = op;
                break;
            }
        }
        let _ = client.batch_execute("ROLLBACK").await;
        failing
    }

    /// Opens the worker's control connection unless it has a live one (in `self.control`).
    async fn control(&mut self) -> Result<(), EngineError> {
        if self.control.as_ref().is_none_or(|c| c.is_closed()) {
            self.control = Some(self.pool.admin(&self.connector).await?);
        }
        Ok(())
    }
}

/// What the store gets once the server has accepted a password: a new one, journalled until
/// then, or the stored one recording the iteration count its verifier now has (no journal: the
/// password did not change, and either count's verifier accepts it).
struct Pending {
    secret_path: SecretPath,
    journal: Option<SecretPath>,
    credential: Credential,
}

impl Pending {
    async fn apply(self, store: &dyn CredentialStore) -> Result<(), pgtenant_secrets::StoreError> {
        store.put(&self.secret_path, &self.credential).await?;
        match &self.journal {
            Some(journal) => store.delete(journal).await,
            None => Ok(()),
        }
    }
}

/// Consecutive transactional operations form one batch; a non-transactional one stands alone.
fn batches<'a>(ops: &[&'a Operation]) -> Vec<Vec<&'a Operation>> {
    let mut batches: Vec<Vec<&Operation>> = Vec::new();
    for op in ops {
        let alone = matches!(
            op.action,
            Action::Sql {
                transactional: false,
                ..
            }
        );
        match batches.last_mut() {
            Some(last)
                if !alone
                    && !matches!(
                        last[0].action,
                        Action::Sql {
                            transactional: false,
                            ..
                        }
                    ) =>
            {
                last.push(op)
            }
            _ => batches.push(vec![op]),
        }
    }
    batches
}

const RETRIES: usize = 3;

async fn backoff(attempt: usize) {
    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
}

/// Transient by SQLSTATE, never by message text, and only when the server itself reported it (so the
/// statement certainly did not take effect): serialization failures, deadlocks, lock timeouts.
/// A lost connection is not retried: a COMMIT may have happened; the next run re-reads the catalog.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    pgtenant_pg::sqlstate::is_transient(error)
}

enum Segment<'a> {
    Sql {
        database: Option<&'a Ident>,
        run_as: Option<&'a Ident>,
        ops: Vec<&'a Operation>,
    },
    Store(&'a Operation),
    /// An operation run on its own by [`Worker::step`].
    Step(&'a Operation),
}

impl Segment<'_> {
    fn phase(&self) -> Phase {
        match self {
            Segment::Sql { ops, .. } => ops[0].phase,
            Segment::Store(op) | Segment::Step(op) => op.phase,
        }
    }
}

/// Consecutive SQL operations for the same connection form one segment; credential-store
/// operations stand alone, so they run only when everything before them succeeded.
fn segments(ops: &[Operation]) -> Vec<Segment<'_>> {
    let mut segments: Vec<Segment<'_>> = Vec::new();
    for op in ops {
        match &op.action {
            Action::Sql { .. } | Action::SetPassword { .. } => {
                if let Some(Segment::Sql {
                    database,
                    run_as,
                    ops,
                }) = segments.last_mut()
                {
                    if *database == op.database.as_ref() && *run_as == op.run_as.as_ref() {
                        ops.push(op);
                        continue;
                    }
                }
                segments.push(Segment::Sql {
                    database: op.database.as_ref(),
                    run_as: op.run_as.as_ref(),
                    ops: vec![op],
                });
            }
            Action::StoreCredential { .. } | Action::DeleteCredential { .. } => {
                segments.push(Segment::Store(op))
            }
            Action::FinishPasswordChange { .. }
            | Action::StopLogins { .. }
            | Action::FinalBackup { .. } => segments.push(Segment::Step(op)),
        }
    }
    segments
}

fn db_error(op: &Operation, error: &tokio_postgres::Error) -> OperationError {
    let db = error.as_db_error();
    OperationError {
        statement: op.display(),
        message: db.map_or_else(|| crate::error_chain(error), |d| d.message().to_string()),
        sqlstate: error.code().map(|c| c.code().to_string()),
        detail: db.and_then(|d| d.detail().map(str::to_string)),
        hint: db.and_then(|d| d.hint().map(str::to_string)),
    }
}

fn engine_error(op: &Operation, error: &EngineError) -> OperationError {
    match error {
        EngineError::Connect { source, .. } => {
            let mut e = db_error(op, source);
            e.message = format!("{error}: {}", e.message);
            e
        }
        other => OperationError {
            statement: op.display(),
            message: crate::error_chain(other),
            sqlstate: None,
            detail: None,
            hint: None,
        },
    }
}

fn store_error(op: &Operation, error: &pgtenant_secrets::StoreError) -> OperationError {
    OperationError {
        statement: op.display(),
        message: format!("credential store: {error}"),
        sqlstate: None,
        detail: None,
        hint: None,
    }
}
