//! `plan`, `apply` and `check`: spec → desired → observed → plan, then print, execute or report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use pgtenant_engine::execute::OperationError;
use pgtenant_engine::plan::DropGuard;
use pgtenant_engine::{check, ApplyOutcome, Desired, Executor, Phase, PlanContext};
use pgtenant_secrets::CredentialStore;

use crate::context::{self, Context};
use crate::render::{self, Format};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PENDING};

#[derive(clap::Args)]
pub struct RepoArgs {
    #[command(flatten)]
    pub common: ReconcileArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

/// What `plan`, `apply` and `check` share.
#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The apps repo [default: the current directory, if it holds values files].
    #[arg(env = "PGTENANT_REPO", hide_env_values = true)]
    pub repo: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Reconcile only this tenant, NAMESPACE/DATABASE (repeatable): only its database is inspected,
    /// so the cost does not grow with the number of tenants on the cluster. Without it, all of them.
    #[arg(long = "tenant", value_name = "NS/DB")]
    pub tenants: Vec<String>,
}

/// `check` drops nothing, so it shows no drop options; they are still accepted (and ignored) for
/// scripts that pass the same options to plan, apply and check.
#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: ReconcileArgs,
    #[arg(long, hide = true)]
    max_drops: Option<usize>,
    #[arg(long, hide = true)]
    allow_empty_repo: bool,
    #[arg(long, hide = true)]
    allow_namespace_removal: Vec<String>,
}

impl ReconcileArgs {
    fn load_and_plan(
        &self,
        context: &Context,
        runtime: &tokio::runtime::Runtime,
        guard: &DropGuard,
        exclusive: bool,
    ) -> Result<Planned> {
        load_and_plan(
            context,
            self.repo.as_deref(),
            guard,
            &self.scope()?,
            runtime,
            exclusive,
        )
    }

    fn scope(&self) -> Result<BTreeSet<String>> {
        for tenant in &self.tenants {
            crate::commands::parse_tenant(tenant)?;
        }
        Ok(self.tenants.iter().cloned().collect())
    }
}

/// What one run may drop; beyond it every drop is held and the plan says why.
#[derive(clap::Args, Clone)]
pub struct GuardArgs {
    /// Drop at most this many databases in one run.
    #[arg(long, default_value_t = 1)]
    pub max_drops: usize,
    /// Allow drops although the repo declares no database at all, or holds no values file (a
    /// directory that is otherwise refused as "not the apps repo").
    #[arg(long)]
    pub allow_empty_repo: bool,
    /// Allow every database of this namespace to be dropped (repeatable).
    #[arg(long, value_name = "NAMESPACE")]
    pub allow_namespace_removal: Vec<String>,
}

impl GuardArgs {
    fn drop_guard(&self) -> DropGuard {
        DropGuard {
            max_drops: self.max_drops,
            allow_empty_repo: self.allow_empty_repo,
            allow_namespace_removal: self.allow_namespace_removal.clone(),
        }
    }
}

/// Spec → desired → observed → plan: what plan, apply and check share.
struct Planned {
    repo: pgtenant_spec::LoadedRepo,
    desired: Desired,
    observed: pgtenant_engine::Observed,
    plan: pgtenant_engine::Plan,
    connected: context::Connected,
    plan_context: PlanContext,
    _lock: Option<pgtenant_engine::ApplyLock>,
}

/// `exclusive`: hold the cluster-wide apply lock from before the catalog is read until the
/// returned [`Planned`] is dropped, so two applies never plan against each other's half-done work.
/// `scope`: the tenants to reconcile, empty for all.
fn load_and_plan(
    context: &Context,
    repo: Option<&Path>,
    guard: &DropGuard,
    scope: &BTreeSet<String>,
    runtime: &tokio::runtime::Runtime,
    exclusive: bool,
) -> Result<Planned> {
    // The flag that allows dropping everything also accepts a directory without values files.
    let repo = context.load_repo(repo, guard.allow_empty_repo)?;
    let desired = Desired::from_repo(&repo);
    let connected = context.connect()?;
    let store = context.store()?;
    let lock = match exclusive {
        true => {
            let lock =
                runtime.block_on(pgtenant_engine::ApplyLock::acquire(&connected.connector))?;
            finish_interrupted_rotations(runtime, &connected, store.as_ref())?;
            Some(lock)
        }
        false => None,
    };
    let in_scope = |tenant: &str| scope.is_empty() || scope.contains(tenant);
    let observed = runtime
        .block_on(pgtenant_engine::observe_tenants(
            &connected.connector,
            &desired,
            store.as_ref(),
            |tenant| in_scope(&tenant.id),
        ))
        .context("reading the cluster")?;
    let plan_context = PlanContext {
        endpoint_host: connected.endpoint.host.clone(),
        endpoint_port: connected.endpoint.port,
        guard: guard.clone(),
        superuser_extensions: context.superuser_extensions().clone(),
        now: pgtenant_backup::Timestamp::now()
            .whole_seconds()
            .to_rfc3339(),
        scope: scope.clone(),
    };
    let known = |tenant: &String| {
        desired.tenants.iter().any(|t| &t.id == tenant)
            || observed
                .databases
                .values()
                .any(|db| db.marker().is_some_and(|m| &m.tenant == tenant))
    };
    if let Some(unknown) = scope.iter().find(|t| !known(t)) {
        anyhow::bail!(
            "--tenant {unknown}: no such tenant is declared in the repo or managed on the cluster"
        );
    }
    let mut plan = pgtenant_engine::plan(&desired, &observed, &plan_context);
    if !exclusive {
        // apply settles these under its lock before planning; plan and check can only say so.
        plan.notices
            .extend(pgtenant_engine::rotate::interrupted_changes(
                &desired,
                &observed,
                |t| plan_context.in_scope(t),
            ));
    }
    Ok(Planned {
        repo,
        desired,
        observed,
        plan,
        connected,
        plan_context,
        _lock: lock,
    })
}

/// A rotation killed midway left a journal entry: settle it before planning, so the plan (and the
/// credentials it writes) start from what the server really accepts.
fn finish_interrupted_rotations(
    runtime: &tokio::runtime::Runtime,
    connected: &context::Connected,
    store: &dyn CredentialStore,
) -> Result<()> {
    let rotator = pgtenant_engine::rotate::Rotator {
        connector: &connected.connector,
        store,
    };
    for recovered in runtime
        .block_on(rotator.recover_all())
        .context("finishing an interrupted password change")?
    {
        eprintln!("{recovered}");
    }
    Ok(())
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn plan(context: &Context, args: &RepoArgs) -> Result<u8> {
    let runtime = runtime()?;
    let planned = args
        .common
        .load_and_plan(context, &runtime, &args.guard.drop_guard(), false)?;
    render::plan(&planned.plan, &planned.repo, args.common.format)?;
    Ok(if planned.repo.has_errors() {
        EXIT_ERROR
    } else if planned.plan.is_converged() {
        EXIT_OK
    } else {
        EXIT_PENDING
    })
}

pub fn apply(context: &Context, args: &RepoArgs) -> Result<u8> {
    let runtime = runtime()?;
    let planned = args
        .common
        .load_and_plan(context, &runtime, &args.guard.drop_guard(), true)?;
    let progress = Some(args.common.format);
    // Everything but drops first; then each dropped database's final backup, taken with its
    // logins stopped; then the drops.
    let (mut drops, mut plan) = (planned.plan.clone(), planned.plan.clone());
    drops.operations.retain(|op| op.phase == Phase::Drop);
    drops.notices.clear();
    plan.operations.retain(|op| op.phase != Phase::Drop);
    let mut outcome = execute(context, &runtime, &planned, &plan, progress)?;
    if !drops.operations.is_empty() {
        crate::commands::trash::take_final_backups(
            context,
            &runtime,
            &planned.connected.connector,
            &planned.observed,
            &mut drops,
        )?;
        outcome
            .tenants
            .extend(execute(context, &runtime, &planned, &drops, progress)?.tenants);
        plan.operations.extend(drops.operations);
        plan.notices.extend(drops.notices);
        outcome.tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    }
    let outcome = verify(context, &runtime, &planned, outcome)?;
    render::apply(&plan, &outcome, &planned.repo, args.common.format)?;
    Ok(
        if planned.repo.has_errors() || outcome.failed().next().is_some() || plan.has_unresolved() {
            EXIT_ERROR
        } else {
            EXIT_OK
        },
    )
}

/// `progress`: None inside another command that shows its own.
fn execute(
    context: &Context,
    runtime: &tokio::runtime::Runtime,
    planned: &Planned,
    plan: &pgtenant_engine::Plan,
    progress: Option<Format>,
) -> Result<ApplyOutcome> {
    let store: Arc<dyn CredentialStore> = context.store()?;
    let executor = Executor {
        connector: planned.connected.connector.clone(),
        store,
        endpoint: planned.connected.endpoint.clone(),
        parallelism: planned.observed.server.parallelism(),
    };
    let progress = render::ApplyProgress::new(plan, progress);
    let outcome = runtime.block_on(executor.apply(plan, progress.callback()));
    progress.finish();
    Ok(outcome)
}

/// Reads back every tenant the apply changed and plans again: whatever is still pending had no
/// effect although the server accepted it (PostgreSQL only warns, for instance, when a REVOKE finds
/// no grant by the revoking role). Such a tenant is reported as failed instead of converged.
fn verify(
    context: &Context,
    runtime: &tokio::runtime::Runtime,
    planned: &Planned,
    mut outcome: ApplyOutcome,
) -> Result<ApplyOutcome> {
    let touched: BTreeSet<String> = outcome
        .tenants
        .iter()
        .filter(|t| t.error.is_none() && t.applied > 0)
        .map(|t| t.tenant.clone())
        .collect();
    if touched.is_empty() {
        return Ok(outcome);
    }
    let store = context.store()?;
    let observed = runtime
        .block_on(pgtenant_engine::observe_tenants(
            &planned.connected.connector,
            &planned.desired,
            store.as_ref(),
            |tenant| touched.contains(&tenant.id),
        ))
        .context("reading the cluster back after apply")?;
    let again = pgtenant_engine::plan(&planned.desired, &observed, &planned.plan_context);
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

/// Converges one declared tenant only (its roles, ownership, grants, default privileges), leaving
/// every other tenant alone and dropping nothing: for commands that changed that tenant's database
/// behind the engine's back, such as a restore.
pub fn reconcile_tenant(
    context: &Context,
    repo: Option<&Path>,
    tenant: &str,
) -> Result<ApplyOutcome> {
    let runtime = runtime()?;
    let planned = load_and_plan(
        context,
        repo,
        &DropGuard::default(),
        &BTreeSet::from([tenant.to_string()]),
        &runtime,
        true,
    )?;
    if !planned.desired.tenants.iter().any(|t| t.id == tenant) {
        anyhow::bail!(
            "{tenant} is not declared in the apps repo: declare it and run `pgtenant apply` first"
        );
    }
    let mut plan = planned.plan.clone();
    plan.operations
        .retain(|op| op.tenant == tenant && !op.destructive);
    plan.notices.clear();
    execute(context, &runtime, &planned, &plan, None)
}

pub fn check(context: &Context, args: &CheckArgs) -> Result<u8> {
    let runtime = runtime()?;
    let args = &args.common;
    let planned = args.load_and_plan(context, &runtime, &DropGuard::default(), false)?;
    let mut report = check::report(&planned.desired, &planned.observed, &planned.plan);
    // Tenants outside --tenant were not inspected: listing them as in sync would be a claim.
    report
        .tenants
        .retain(|t| planned.plan_context.in_scope(&t.tenant));
    render::check(&report, &planned.repo, args.format)?;
    Ok(if planned.repo.has_errors() {
        EXIT_ERROR
    } else if report.in_sync {
        EXIT_OK
    } else {
        EXIT_PENDING
    })
}
