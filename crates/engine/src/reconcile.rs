//! The reconcile pipeline every front end calls — `plan`, `apply` and `check`, a restore re-applying
//! grants, `trash restore`, the coming daemon:
//!
//! ```text
//! lock ─▶ observe ─▶ plan ─▶ execute ─▶ read back and verify
//!          (interrupted password changes, final backups, stopped logins are operations of the plan)
//! ```
//!
//! [`Reconciler::plan`] stops after planning (no lock: `plan` and `check`). [`Reconciler::apply`]
//! holds the cluster-wide apply lock from before the catalog is read until the read-back is done,
//! and runs the operations of the plan, nothing else: when the plan settles interrupted password
//! changes, those run first and the rest is planned again from what the server then accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pgtenant_secrets::CredentialStore;
use pgtenant_spec::Environment;
use tracing::Instrument as _;

use crate::catalog::Only;
use crate::connect::Connector;
use crate::control::ApplyLock;
use crate::desired::Desired;
use crate::execute::{
    ApplyOutcome, Endpoint, Executor, FinalBackups, OperationError, Progress, TenantOutcome,
};
use crate::observed::Observed;
use crate::plan::{DropGuard, Phase, Plan, PlanContext};
use crate::sessions::{Pool, Sessions};
use crate::verified::Trust;
use crate::{DesiredTenant, EngineError};

/// What the pipeline works with: the cluster, the store, where apps connect, the platform's
/// settings, and who takes final backups.
#[derive(Clone)]
pub struct Reconciler {
    pub connector: Arc<Connector>,
    pub store: Arc<dyn CredentialStore>,
    /// Where the credentials written to the store say applications connect.
    pub endpoint: Endpoint,
    /// Where applications connect through the cluster's pooler; None: no pooler, and credentials
    /// carry no pooled endpoint.
    pub pooler_endpoint: Option<Endpoint>,
    /// The pooler authenticates with `auth_query` (`pooler.auth: query`): every tenant database
    /// gets the lookup function, and a control role that is not a superuser is refused.
    pub pooler_lookup: bool,
    /// Extensions that need superuser and that the platform allows.
    pub superuser_extensions: BTreeSet<String>,
    /// The iteration count of the SCRAM verifiers of tenant logins (`passwords.scramIterations`):
    /// a login whose stored credential records another count gets its password set again.
    pub scram_iterations: u32,
    /// The platform's tier: the retention of final backups of databases without a tier of their own.
    pub platform_environment: Option<Environment>,
    /// Takes the final backup before a standard database is dropped; None: such a tenant fails
    /// before its drop (the database is kept).
    pub final_backups: Option<Arc<dyn FinalBackups>>,
    /// The last verification of each tenant database, and for how long it is trusted: a database
    /// whose counters did not move since is not connected to ([`crate::verified`]).
    pub trust: Trust,
    /// Brought in line after every apply (its auth file and pool entries); None: no pooler.
    pub pooler: Option<Arc<dyn crate::PoolerSync>>,
    /// The control role's sessions: opened per call (the default), or kept between calls
    /// ([`Reconciler::keeping_sessions`]).
    pub sessions: Sessions,
}

/// What one run covers and may drop.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub guard: DropGuard,
    /// Tenants (`NS/DB`) to reconcile; empty: all. Only their databases are inspected.
    pub scope: BTreeSet<String>,
    /// Inspect every database in scope, trusting no earlier verification (`--full`).
    pub full: bool,
}

/// Observe and plan: what `plan` and `check` show.
pub struct Planned {
    pub observed: Observed,
    pub plan: Plan,
    pub context: PlanContext,
}

/// What `apply` ran: the plan (as executed, in order) and each tenant's outcome, verified.
pub struct Applied {
    pub plan: Plan,
    pub outcome: ApplyOutcome,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The apply lock (another apply is running), the control database.
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("reading the cluster")]
    Observe(#[source] EngineError),
    #[error("reading the cluster back after apply")]
    ReadBack(#[source] EngineError),
    #[error("--tenant {0}: no such tenant is declared in the repo or managed on the cluster")]
    UnknownTenant(String),
    #[error("{0} is not declared in the apps repo: declare it and run `pgtenant apply` first")]
    Undeclared(String),
}

impl Reconciler {
    /// This reconciler (and its clones) keeping its sessions with the cluster between calls, for
    /// a process that reconciles again and again (`serve`): a session the server ended is
    /// replaced on its next use.
    pub fn keeping_sessions(mut self) -> Self {
        self.sessions = Sessions::kept();
        self
    }

    /// Observe and plan, without the lock: what `apply` would do now.
    pub async fn plan(
        &self,
        desired: &Desired,
        request: &Request,
    ) -> Result<Planned, ReconcileError> {
        let pool = self.sessions.for_call();
        self.observe_and_plan(&pool, desired, request)
            .instrument(tracing::info_span!("plan", tenants = request.scope.len()))
            .await
    }

    /// The whole pipeline: lock, observe, plan, execute, read back and verify. `progress` is
    /// given the plan before anything runs (to size a progress bar) and returns what is called
    /// once per finished tenant.
    pub async fn apply(
        &self,
        desired: &Desired,
        request: &Request,
        progress: impl FnOnce(&Plan) -> Progress,
    ) -> Result<Applied, ReconcileError> {
        self.converge(desired, request, progress, |_| {})
            .instrument(tracing::info_span!("apply", tenants = request.scope.len()))
            .await
    }

    /// Converges one declared tenant only (its roles, ownership, grants, default privileges),
    /// leaving every other tenant alone and dropping nothing: for what changed that tenant's
    /// database behind the engine's back, such as a restore.
    pub async fn reconcile_tenant(
        &self,
        desired: &Desired,
        tenant: &str,
        progress: impl FnOnce(&Plan) -> Progress,
    ) -> Result<Applied, ReconcileError> {
        if !desired.tenants.iter().any(|t| t.id == tenant) {
            return Err(ReconcileError::Undeclared(tenant.to_string()));
        }
        let request = Request {
            guard: DropGuard::default(),
            scope: BTreeSet::from([tenant.to_string()]),
            full: false,
        };
        let only = tenant.to_string();
        self.converge(desired, &request, progress, move |plan| {
            plan.operations
                .retain(|op| op.tenant == only && !op.destructive && !op.phase.is_removal());
            plan.notices.clear();
        })
        .instrument(tracing::info_span!("reconcile_tenant", tenant))
        .await
    }

    async fn converge(
        &self,
        desired: &Desired,
        request: &Request,
        progress: impl FnOnce(&Plan) -> Progress,
        narrow: impl Fn(&mut Plan),
    ) -> Result<Applied, ReconcileError> {
        let pool = self.sessions.for_call();
        let lock = ApplyLock::acquire_kept(&self.connector, &pool).await?;
        let applied = self
            .converge_locked(&pool, desired, request, progress, narrow)
            .await;
        lock.release(&pool).await;
        pool.close_tenant_sessions();
        applied
    }

    async fn converge_locked(
        &self,
        pool: &Arc<Pool>,
        desired: &Desired,
        request: &Request,
        progress: impl FnOnce(&Plan) -> Progress,
        narrow: impl Fn(&mut Plan),
    ) -> Result<Applied, ReconcileError> {
        let mut planned = self.observe_and_plan(pool, desired, request).await?;
        narrow(&mut planned.plan);
        let progress = progress(&planned.plan);
        let mut outcome = ApplyOutcome::default();
        let mut recovery = planned.plan.clone();
        recovery
            .operations
            .retain(|op| op.phase == Phase::PasswordRecovery);
        recovery.notices.clear();
        if !recovery.operations.is_empty() {
            // The rest of the plan was made from credentials that may be stale: plan it again
            // from what the server accepts once these are settled.
            outcome = self
                .execute(pool, &planned, &recovery, progress.clone())
                .instrument(tracing::info_span!("phase", phase = "password-recovery"))
                .await;
            planned = self.observe_and_plan(pool, desired, request).await?;
            narrow(&mut planned.plan);
            let failed: BTreeSet<String> = outcome.failed().map(|t| t.tenant.clone()).collect();
            planned
                .plan
                .operations
                .retain(|op| !failed.contains(&op.tenant));
        }
        let rest = self.execute(pool, &planned, &planned.plan, progress).await;
        let plan = with_recovery(recovery, planned.plan.clone());
        let outcome = merge(outcome, rest);
        let outcome = self
            .verify(pool, desired, &planned, outcome, &narrow)
            .instrument(tracing::info_span!("verify"))
            .await;
        pool.close_tenant_sessions();
        let outcome = outcome?;
        if let Some(pooler) = &self.pooler {
            let scope = crate::pooler::SyncScope::after(request, &plan, &outcome);
            match pooler
                .sync_scoped(&self.connector, desired, self.store.as_ref(), &scope)
                .instrument(tracing::info_span!("pooler_sync"))
                .await
            {
                Ok(changes) if !changes.is_empty() => tracing::info!(?changes, "pooler updated"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "the pooler could not be updated"),
            }
        }
        Ok(Applied { plan, outcome })
    }

    async fn observe_and_plan(
        &self,
        pool: &Pool,
        desired: &Desired,
        request: &Request,
    ) -> Result<Planned, ReconcileError> {
        let scope = &request.scope;
        let in_scope = |tenant: &str| scope.is_empty() || scope.contains(tenant);
        let observed = self
            .observe(
                pool,
                only(desired, scope),
                desired,
                |tenant| in_scope(&tenant.id),
                request.full,
            )
            .instrument(tracing::info_span!("observe"))
            .await
            .map_err(ReconcileError::Observe)?;
        let known = |tenant: &String| {
            desired.tenants.iter().any(|t| &t.id == tenant)
                || observed
                    .databases
                    .values()
                    .any(|db| db.marker().is_some_and(|m| &m.tenant == tenant))
        };
        if let Some(unknown) = scope.iter().find(|t| !known(t)) {
            return Err(ReconcileError::UnknownTenant(unknown.clone()));
        }
        let context = PlanContext {
            endpoint_host: self.endpoint.host.clone(),
            endpoint_port: self.endpoint.port,
            pooler: self
                .pooler_endpoint
                .as_ref()
                .map(|e| pgtenant_secrets::PoolerAddress {
                    endpoint: e.host.clone(),
                    port: e.port,
                }),
            pooler_lookup: self.pooler_lookup,
            guard: request.guard.clone(),
            superuser_extensions: self.superuser_extensions.clone(),
            scram_iterations: self.scram_iterations,
            now: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            scope: scope.clone(),
            platform_environment: self.platform_environment,
        };
        let plan =
            tracing::info_span!("planning").in_scope(|| crate::plan(desired, &observed, &context));
        Ok(Planned {
            observed,
            plan,
            context,
        })
    }

    /// [`crate::observe_reusing`] with the last verifications, which it then updates: what it
    /// inspected is verified anew, what no longer holds is forgotten. A read of `only` some
    /// tenants' roles and databases inspects every database it selects and leaves the
    /// verifications alone: it does not see the rest of the cluster they are kept for (role
    /// renames, other databases).
    async fn observe(
        &self,
        pool: &Pool,
        only: Option<Only>,
        desired: &Desired,
        should_inspect: impl Fn(&DesiredTenant) -> bool,
        full: bool,
    ) -> Result<Observed, EngineError> {
        if only.is_some() {
            let observation = crate::observe_on(
                &self.connector,
                pool,
                only.as_ref(),
                desired,
                self.store.as_ref(),
                should_inspect,
                None,
            )
            .await?;
            return Ok(observation.observed);
        }
        let last = self.trust.store.load();
        let observation = crate::observe_on(
            &self.connector,
            pool,
            None,
            desired,
            self.store.as_ref(),
            should_inspect,
            Some(crate::Reuse {
                last: &last,
                trust_for: self.trust.trust_for,
                full,
            }),
        )
        .await?;
        let next = last.updated(
            &observation.observed.statistics,
            observation.fresh,
            observation.unverified,
        );
        if next != last {
            self.trust.store.save(&next);
        }
        Ok(observation.observed)
    }

    async fn execute(
        &self,
        pool: &Arc<Pool>,
        planned: &Planned,
        plan: &Plan,
        progress: Progress,
    ) -> ApplyOutcome {
        let executor = Executor {
            connector: self.connector.clone(),
            store: self.store.clone(),
            endpoint: self.endpoint.clone(),
            parallelism: planned.observed.server.parallelism(),
            final_backups: self.final_backups.clone(),
            scram_iterations: self.scram_iterations,
        };
        executor
            .apply_on(plan, progress, pool.clone())
            .instrument(tracing::info_span!(
                "execute",
                operations = plan.operations.len()
            ))
            .await
    }

    /// Reads back every tenant the apply changed and plans again: whatever is still pending had no
    /// effect although the server accepted it (PostgreSQL only warns, for instance, when a REVOKE
    /// finds no grant by the revoking role). Such a tenant is reported as failed, not converged.
    async fn verify(
        &self,
        pool: &Pool,
        desired: &Desired,
        planned: &Planned,
        mut outcome: ApplyOutcome,
        narrow: &impl Fn(&mut Plan),
    ) -> Result<ApplyOutcome, ReconcileError> {
        let touched: BTreeSet<String> = outcome
            .tenants
            .iter()
            .filter(|t| t.error.is_none() && t.applied > 0)
            .map(|t| t.tenant.clone())
            .collect();
        if touched.is_empty() {
            return Ok(outcome);
        }
        // Read back whatever the counters say: this run changed them.
        let observed = self
            .observe(
                pool,
                only(desired, &touched),
                desired,
                |tenant| touched.contains(&tenant.id),
                true,
            )
            .await
            .map_err(ReconcileError::ReadBack)?;
        let mut again = crate::plan(desired, &observed, &planned.context);
        narrow(&mut again);
        for tenant in outcome
            .tenants
            .iter_mut()
            .filter(|t| touched.contains(&t.tenant))
        {
            if let Some(op) = again
                .operations
                .iter()
                .find(|op| op.tenant == tenant.tenant)
            {
                tenant.error = Some(OperationError {
                    statement: op.display(),
                    message: format!(
                        "still pending after apply ({}): an earlier statement was accepted without effect; \
                         the server log has its warning",
                        op.why
                    ),
                    sqlstate: None,
                    detail: None,
                    hint: None,
                });
            }
        }
        Ok(outcome)
    }
}

/// Re-applies one tenant's ownership and grants from synchronous code (a restore, which changed
/// the tenant's database behind the engine's back): [`Reconciler::reconcile_tenant`] on
/// `runtime`, the process's runtime (called from outside it).
pub struct TenantReapply<'a> {
    pub reconciler: &'a Reconciler,
    pub desired: &'a Desired,
    pub runtime: tokio::runtime::Handle,
}

impl TenantReapply<'_> {
    pub fn run(&self, tenant: &str) -> Result<Applied, ReconcileError> {
        self.runtime.block_on(
            self.reconciler
                .reconcile_tenant(self.desired, tenant, |_| Arc::new(|_: &TenantOutcome| {})),
        )
    }
}

/// The roles (grace twins included) and databases of `tenants` when each of them is declared:
/// planning them needs only those rows of the cluster-wide catalog (the control role's own row
/// is always read). None, the whole cluster, for no tenants (everything is in scope) or when one
/// is not declared (a removed tenant, known only by the markers of what it left).
fn only(desired: &Desired, tenants: &BTreeSet<String>) -> Option<Only> {
    if tenants.is_empty() {
        return None;
    }
    let mut only = Only::default();
    for id in tenants {
        let tenant = desired.tenants.iter().find(|t| &t.id == id)?;
        only.databases.push(tenant.database.as_str().to_string());
        only.extensions |= !tenant.extensions.is_empty();
        for role in &tenant.roles {
            only.roles.push(role.name.as_str().to_string());
            only.roles.push(role.alternate.as_str().to_string());
        }
    }
    Some(only)
}

/// The plan as run: each tenant's settled password changes right before its other operations.
fn with_recovery(recovery: Plan, rest: Plan) -> Plan {
    if recovery.operations.is_empty() {
        return rest;
    }
    let mut pending: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for op in recovery.operations {
        pending.entry(op.tenant.clone()).or_default().push(op);
    }
    let mut operations = Vec::new();
    for (tenant, ops) in rest.by_tenant() {
        operations.extend(pending.remove(tenant).unwrap_or_default());
        operations.extend(ops.into_iter().cloned());
    }
    // Tenants with nothing else to do.
    let mut only: Vec<_> = pending.into_values().flatten().collect();
    only.extend(operations);
    Plan {
        operations: only,
        notices: rest.notices,
    }
}

/// One outcome per tenant over both stages of a run.
fn merge(first: ApplyOutcome, second: ApplyOutcome) -> ApplyOutcome {
    let mut tenants: BTreeMap<String, TenantOutcome> = BTreeMap::new();
    for outcome in first.tenants.into_iter().chain(second.tenants) {
        match tenants.get_mut(&outcome.tenant) {
            None => {
                tenants.insert(outcome.tenant.clone(), outcome);
            }
            Some(merged) => {
                merged.applied += outcome.applied;
                merged.planned += outcome.planned;
                merged.notes.extend(outcome.notes);
                if merged.error.is_none() {
                    merged.error = outcome.error;
                }
            }
        }
    }
    ApplyOutcome {
        tenants: tenants.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Operation};
    use crate::Ident;
    use pgtenant_secrets::SecretPath;

    fn op(tenant: &str, phase: Phase) -> Operation {
        Operation {
            tenant: tenant.into(),
            phase,
            database: None,
            run_as: None,
            action: match phase {
                Phase::PasswordRecovery => Action::FinishPasswordChange {
                    role: Ident::new(format!("{tenant}-read")),
                    secret_path: SecretPath::for_role("ns", "db", "read"),
                },
                _ => Action::Sql {
                    sql: format!("SELECT '{tenant}'"),
                    transactional: true,
                },
            },
            why: String::new(),
            destructive: false,
        }
    }

    #[test]
    fn settled_password_changes_come_first_in_their_tenant() {
        let recovery = Plan {
            operations: vec![
                op("a/x", Phase::PasswordRecovery),
                op("c/z", Phase::PasswordRecovery),
            ],
            notices: Vec::new(),
        };
        let rest = Plan {
            operations: vec![op("a/x", Phase::Roles), op("b/y", Phase::Roles)],
            notices: Vec::new(),
        };
        let order: Vec<(String, Phase)> = with_recovery(recovery, rest)
            .operations
            .into_iter()
            .map(|op| (op.tenant, op.phase))
            .collect();
        assert_eq!(
            order,
            [
                ("c/z".to_string(), Phase::PasswordRecovery),
                ("a/x".to_string(), Phase::PasswordRecovery),
                ("a/x".to_string(), Phase::Roles),
                ("b/y".to_string(), Phase::Roles),
            ]
        );
    }

    #[test]
    fn one_outcome_per_tenant_over_both_stages() {
        let outcome = |tenant: &str, applied, error: bool| TenantOutcome {
            tenant: tenant.into(),
            applied,
            planned: applied,
            error: error.then(|| OperationError {
                statement: String::new(),
                message: "failed".into(),
                sqlstate: None,
                detail: None,
                hint: None,
            }),
            notes: vec![format!("{tenant} {applied}")],
        };
        let merged = merge(
            ApplyOutcome {
                tenants: vec![outcome("b", 1, false)],
            },
            ApplyOutcome {
                tenants: vec![outcome("a", 2, true), outcome("b", 3, false)],
            },
        );
        assert_eq!(merged.tenants.len(), 2);
        assert_eq!(merged.tenants[0].tenant, "a");
        assert_eq!(merged.tenants[1].applied, 4);
        assert_eq!(merged.tenants[1].notes, ["b 1", "b 3"]);
    }
}
