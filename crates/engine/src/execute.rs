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
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::connect::Connector;
use crate::ident::{quote_literal, Ident};
use crate::plan::{Action, Operation, Phase, Plan};
use crate::sql::PASSWORD_PLACEHOLDER;
use crate::EngineError;

#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    pub tenant: String,
    pub applied: usize,
    pub planned: usize,
    pub error: Option<OperationError>,
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

pub struct Executor {
    pub connector: Arc<Connector>,
    pub store: Arc<dyn CredentialStore>,
    pub endpoint: Endpoint,
    pub parallelism: usize,
}

type Progress = Arc<dyn Fn(&TenantOutcome) + Send + Sync>;

impl Executor {
    pub async fn apply(&self, plan: &Plan, progress: Progress) -> ApplyOutcome {
        let (drops, others): (Vec<_>, Vec<_>) = plan
            .by_tenant()
            .into_iter()
            .map(|(tenant, ops)| {
                (
                    tenant.to_string(),
                    ops.into_iter().cloned().collect::<Vec<_>>(),
                )
            })
            .partition(|(_, ops)| ops.iter().all(|op| op.phase == Phase::Drop));

        let mut outcome = ApplyOutcome {
            tenants: self.run_parallel(others, progress.clone()).await,
        };
        // Drops after everything else, one at a time: they are rare, destructive and worth a clear order.
        outcome
            .tenants
            .extend(self.run_parallel_with(drops, progress, 1).await);
        outcome.tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        outcome
    }

    async fn run_parallel(
        &self,
        work: Vec<(String, Vec<Operation>)>,
        progress: Progress,
    ) -> Vec<TenantOutcome> {
        let parallelism = self.parallelism;
        self.run_parallel_with(work, progress, parallelism).await
    }

    async fn run_parallel_with(
        &self,
        work: Vec<(String, Vec<Operation>)>,
        progress: Progress,
        parallelism: usize,
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
                control: None,
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
    /// Opened on first use and kept for the next tenants this worker takes.
    control: Option<Client>,
}

type Queue = Arc<Mutex<VecDeque<(String, Vec<Operation>)>>>;

impl Worker {
    async fn run(mut self, queue: Queue, progress: Progress) -> Vec<TenantOutcome> {
        let mut outcomes = Vec::new();
        loop {
            let next = queue.lock().expect("queue lock").pop_front();
            let Some((tenant, ops)) = next else { break };
            let outcome = self.tenant(tenant, &ops).await;
            progress(&outcome);
            outcomes.push(outcome);
        }
        outcomes
    }

    async fn tenant(&mut self, tenant: String, ops: &[Operation]) -> TenantOutcome {
        let mut outcome = TenantOutcome {
            tenant,
            applied: 0,
            planned: ops.len(),
            error: None,
        };
        for segment in segments(ops) {
            let (applied, error) = match segment {
                Segment::Store(op) => match self.store_op(op) {
                    Ok(()) => (1, None),
                    Err(error) => (0, Some(*error)),
                },
                Segment::Sql {
                    database,
                    run_as,
                    ops,
                } => self.sql_segment(database, run_as, ops).await,
            };
            outcome.applied += applied;
            if error.is_some() {
                outcome.error = error;
                break;
            }
        }
        outcome
    }

    fn store_op(&self, op: &Operation) -> Result<(), Box<OperationError>> {
        let result = match &op.action {
            Action::DeleteCredential { secret_path } => self.store.delete(secret_path),
            Action::StoreCredential {
                secret_path,
                dbname,
            } => match self.store.get(secret_path) {
                Ok(Some(existing)) => self.store.put(
                    secret_path,
                    &Credential {
                        username: existing.username,
                        password: existing.password,
                        endpoint: self.endpoint.host.clone(),
                        port: self.endpoint.port,
                        dbname: dbname.clone(),
                    },
                ),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            Action::Sql { .. } | Action::SetPassword { .. } => {
                unreachable!("segments() routes SQL elsewhere")
            }
        };
        result.map_err(|e| Box::new(store_error(op, &e)))
    }

    /// The password the role should have: the stored one, or a new one stored before the server sees it,
    /// so there is never a moment when the server accepts a password the store does not hold.
    fn password_for(
        &self,
        role: &Ident,
        secret_path: &SecretPath,
        database: &str,
    ) -> Result<String, pgtenant_secrets::StoreError> {
        if let Some(existing) = self.store.get(secret_path)? {
            return Ok(existing.password);
        }
        let credential = Credential {
            username: role.as_str().to_string(),
            password: generate_password(),
            endpoint: self.endpoint.host.clone(),
            port: self.endpoint.port,
            dbname: database.to_string(),
        };
        self.store.put(secret_path, &credential)?;
        Ok(credential.password)
    }

    /// Statement text to send: password placeholders replaced by SCRAM verifiers computed here, so the
    /// plaintext never leaves this process (not even into the server log with `log_statement=all`).
    fn statement(&self, op: &Operation) -> Result<String, OperationError> {
        match &op.action {
            Action::Sql { sql, .. } => Ok(sql.clone()),
            Action::SetPassword {
                sql,
                role,
                secret_path,
                dbname,
            } => {
                let password = self
                    .password_for(role, secret_path, dbname)
                    .map_err(|e| store_error(op, &e))?;
                let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
                Ok(sql.replace(PASSWORD_PLACEHOLDER, &quote_literal(&verifier)))
            }
            Action::StoreCredential { .. } | Action::DeleteCredential { .. } => {
                unreachable!("segments() routes store operations elsewhere")
            }
        }
    }

    async fn sql_segment(
        &mut self,
        database: Option<&Ident>,
        run_as: Option<&Ident>,
        ops: Vec<&Operation>,
    ) -> (usize, Option<OperationError>) {
        let mut statements = Vec::with_capacity(ops.len());
        for op in &ops {
            match self.statement(op) {
                Ok(statement) => statements.push(statement),
                Err(error) => return (0, Some(error)),
            }
        }
        let mut pending: Vec<usize> = (0..ops.len()).collect();
        let mut applied = 0;
        for attempt in 0..RETRIES {
            let connected = match database {
                None => self.control().await,
                Some(db) => self.connector.connect(Some(db.as_str())).await.map(Some),
            };
            let session = match connected {
                Ok(session) => session,
                Err(e) if attempt + 1 < RETRIES && e.is_transient() => {
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return (applied, Some(engine_error(ops[pending[0]], &e))),
            };
            let client = session
                .as_ref()
                .or(self.control.as_ref())
                .expect("a connection");
            if let Some(role) = run_as {
                if let Err(e) = client
                    .batch_execute(&format!("SET ROLE {}", role.quote()))
                    .await
                {
                    return (applied, Some(db_error(ops[pending[0]], &e)));
                }
            }
            // Pipelined: all requests are queued before the first answer is awaited.
            let results = join_all(
                pending
                    .iter()
                    .map(|&i| client.batch_execute(&statements[i])),
            )
            .await;
            let mut failed = Vec::new();
            let mut first_error = None;
            for (&i, result) in pending.iter().zip(results) {
                match result {
                    Ok(()) => applied += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        failed.push(i);
                    }
                }
            }
            let Some(error) = first_error else {
                return (applied, None);
            };
            if error.is_closed() && database.is_none() {
                self.control = None;
            }
            if attempt + 1 < RETRIES && is_transient(&error) {
                pending = failed;
                backoff(attempt).await;
                continue;
            }
            return (applied, Some(db_error(ops[failed[0]], &error)));
        }
        unreachable!("the last attempt returns")
    }

    /// The worker's control connection, opened once. Returns None when it already exists (use `self.control`).
    async fn control(&mut self) -> Result<Option<Client>, EngineError> {
        if self.control.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(None);
        }
        self.control = Some(self.connector.connect(None).await?);
        Ok(None)
    }
}

const RETRIES: usize = 3;

async fn backoff(attempt: usize) {
    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
}

/// Transient by SQLSTATE class, never by message text: connection trouble, serialization failures,
/// deadlocks, lock timeouts, a server starting up or out of connection slots.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        None => error.is_closed(),
    }
}

impl EngineError {
    fn is_transient(&self) -> bool {
        match self {
            EngineError::Connect { source, .. } => {
                is_transient(source) || source.as_db_error().is_none()
            }
            _ => false,
        }
    }
}

enum Segment<'a> {
    Sql {
        database: Option<&'a Ident>,
        run_as: Option<&'a Ident>,
        ops: Vec<&'a Operation>,
    },
    Store(&'a Operation),
}

/// Consecutive SQL operations for the same connection form one pipelined segment; credential-store
/// operations stand alone, so they run only when everything before them succeeded.
fn segments(ops: &[Operation]) -> Vec<Segment<'_>> {
    let mut segments: Vec<Segment<'_>> = Vec::new();
    for op in ops {
        match &op.action {
            Action::Sql { .. } | Action::SetPassword { .. } => {
                if let Some(Segment::Sql { database, ops, .. }) = segments.last_mut() {
                    if *database == op.database.as_ref() {
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
        }
    }
    segments
}

fn db_error(op: &Operation, error: &tokio_postgres::Error) -> OperationError {
    let db = error.as_db_error();
    OperationError {
        statement: op.display(),
        message: db.map_or_else(|| error.to_string(), |d| d.message().to_string()),
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
            message: other.to_string(),
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
