//! `plan`, `apply` and `check`: spec → desired → observed → plan, then print, execute or report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use pgtenant_engine::{check, ApplyOutcome, Desired, Executor, PlanContext};
use pgtenant_secrets::CredentialStore;

use crate::context::{self, Context};
use crate::render::{self, Format};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PENDING};

#[derive(clap::Args)]
pub struct RepoArgs {
    /// The apps repo [default: the current directory].
    pub repo: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Spec → desired → observed → plan: what plan, apply and check share.
struct Planned {
    repo: pgtenant_spec::LoadedRepo,
    desired: Desired,
    observed: pgtenant_engine::Observed,
    plan: pgtenant_engine::Plan,
    connected: context::Connected,
    _lock: Option<pgtenant_engine::ApplyLock>,
}

/// `exclusive`: hold the cluster-wide apply lock from before the catalog is read until the
/// returned [`Planned`] is dropped, so two applies never plan against each other's half-done work.
fn load_and_plan(
    context: &Context,
    repo: Option<&Path>,
    runtime: &tokio::runtime::Runtime,
    exclusive: bool,
) -> Result<Planned> {
    let root = repo.unwrap_or(Path::new("."));
    let repo = pgtenant_spec::load_repo(root)
        .with_context(|| format!("reading the apps repo {}", root.display()))?;
    render::diagnostics(&repo);
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
    let observed = runtime
        .block_on(pgtenant_engine::observe(
            &connected.connector,
            &desired,
            store.as_ref(),
        ))
        .context("reading the cluster")?;
    let plan_context = PlanContext {
        endpoint_host: connected.endpoint.host.clone(),
        endpoint_port: connected.endpoint.port,
    };
    let plan = pgtenant_engine::plan(&desired, &observed, &plan_context);
    Ok(Planned {
        repo,
        desired,
        observed,
        plan,
        connected,
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
        .context("finishing an interrupted rotation")?
    {
        let what = if recovered.completed {
            "completed"
        } else {
            "rolled back (the server never had it)"
        };
        eprintln!(
            "an interrupted rotation of {} was {what}",
            recovered.secret_path
        );
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
    let planned = load_and_plan(context, args.repo.as_deref(), &runtime, false)?;
    render::plan(&planned.plan, &planned.repo, args.format)?;
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
    let planned = load_and_plan(context, args.repo.as_deref(), &runtime, true)?;
    let show_progress = args.format == Format::Text && std::io::stderr().is_terminal();
    let outcome = execute(context, &runtime, &planned, &planned.plan, show_progress)?;
    render::apply(&planned.plan, &outcome, &planned.repo, args.format)?;
    Ok(
        if planned.repo.has_errors() || outcome.failed().next().is_some() {
            EXIT_ERROR
        } else {
            EXIT_OK
        },
    )
}

fn execute(
    context: &Context,
    runtime: &tokio::runtime::Runtime,
    planned: &Planned,
    plan: &pgtenant_engine::Plan,
    show_progress: bool,
) -> Result<ApplyOutcome> {
    let store: Arc<dyn CredentialStore> = context.store()?;
    let executor = Executor {
        connector: planned.connected.connector.clone(),
        store,
        endpoint: planned.connected.endpoint.clone(),
        parallelism: planned.observed.server.parallelism(),
    };
    let progress = render::ApplyProgress::new(plan, show_progress);
    let outcome = runtime.block_on(executor.apply(plan, progress.callback()));
    progress.finish();
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
    let planned = load_and_plan(context, repo, &runtime, true)?;
    if !planned.desired.tenants.iter().any(|t| t.id == tenant) {
        anyhow::bail!(
            "{tenant} is not declared in the apps repo: declare it and run `pgtenant apply` first"
        );
    }
    let mut plan = planned.plan.clone();
    plan.operations
        .retain(|op| op.tenant == tenant && !op.destructive);
    plan.notices.clear();
    execute(context, &runtime, &planned, &plan, false)
}

pub fn check(context: &Context, args: &RepoArgs) -> Result<u8> {
    let runtime = runtime()?;
    let planned = load_and_plan(context, args.repo.as_deref(), &runtime, false)?;
    let report = check::report(&planned.desired, &planned.observed, &planned.plan);
    render::check(&report, &planned.repo, args.format)?;
    Ok(if planned.repo.has_errors() {
        EXIT_ERROR
    } else if report.in_sync {
        EXIT_OK
    } else {
        EXIT_PENDING
    })
}
