//! `plan`, `apply` and `check`: spec → desired → observed → plan, then print, execute or report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use pgtenant_engine::{check, Desired, Executor, PlanContext};
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
    args: &RepoArgs,
    runtime: &tokio::runtime::Runtime,
    exclusive: bool,
) -> Result<Planned> {
    let root = args.repo.clone().unwrap_or_else(|| PathBuf::from("."));
    let repo = pgtenant_spec::load_repo(&root)
        .with_context(|| format!("reading the apps repo {}", root.display()))?;
    render::diagnostics(&repo);
    let desired = Desired::from_repo(&repo);
    let connected = context.connect()?;
    let store = context.store()?;
    let lock = match exclusive {
        true => Some(runtime.block_on(pgtenant_engine::ApplyLock::acquire(&connected.connector))?),
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn plan(context: &Context, args: &RepoArgs) -> Result<u8> {
    let runtime = runtime()?;
    let planned = load_and_plan(context, args, &runtime, false)?;
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
    let planned = load_and_plan(context, args, &runtime, true)?;
    let store: Arc<dyn CredentialStore> = context.store()?;
    let executor = Executor {
        connector: planned.connected.connector,
        store,
        endpoint: planned.connected.endpoint,
        parallelism: planned.observed.server.parallelism(),
    };
    let show_progress = args.format == Format::Text && std::io::stderr().is_terminal();
    let progress = render::ApplyProgress::new(&planned.plan, show_progress);
    let outcome = runtime.block_on(executor.apply(&planned.plan, progress.callback()));
    progress.finish();
    render::apply(&planned.plan, &outcome, &planned.repo, args.format)?;
    Ok(
        if planned.repo.has_errors() || outcome.failed().next().is_some() {
            EXIT_ERROR
        } else {
            EXIT_OK
        },
    )
}

pub fn check(context: &Context, args: &RepoArgs) -> Result<u8> {
    let runtime = runtime()?;
    let planned = load_and_plan(context, args, &runtime, false)?;
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
